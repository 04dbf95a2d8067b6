//! rswarm's agent: what every node runs to be part of a cluster.
//!
//! - `join`: turning a join token into a certificate (CA download, digest
//!   check, CSR).
//! - `session`: the heartbeat session with the leader, certificate renewal
//!   and role changes.
//! - `description`: what the node tells the managers about itself.
//!
//! Task execution arrives with the orchestration work; the session already
//! keeps running when no manager is reachable.

pub mod description;
pub mod join;
pub mod limits;
pub mod session;
pub mod worker;

pub use join::{JoinError, Joined, join};
pub use session::{Agent, AgentConfig, AgentStatus};
