//! rswarm's agent: what every node runs to be part of a cluster.
//!
//! - `join`: turning a join token into a certificate (CA download, digest
//!   check, CSR).
//! - `session`: the heartbeat session with the leader, certificate renewal
//!   and role changes.
//! - `description`: what the node tells the managers about itself.
//! - `assignments`: the task protocol's client side — the Assignments
//!   stream and batched task status reports — shared by the worker and the
//!   simulator.
//! - `sim`: simulated nodes (real identities and sessions, no tasks run),
//!   for scale tests.
//!
//! Task execution arrives with the orchestration work; the session already
//! keeps running when no manager is reachable.

pub mod assignments;
pub mod description;
pub mod join;
pub mod limits;
pub mod session;
pub mod sim;

pub use join::{JoinError, Joined, join};
pub use session::{Agent, AgentConfig, AgentStatus};
