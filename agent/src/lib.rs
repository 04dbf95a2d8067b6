//! rswarm's agent: what every node runs to be part of a cluster.
//!
//! - `join`: turning a join token into a certificate (CA download, digest
//!   check, CSR).
//! - `session`: the heartbeat session with the leader, certificate renewal
//!   and role changes.
//! - `description`: what the node tells the managers about itself.
//! - `runtime`: the `Runtime` trait task drivers implement, the drivers of
//!   the node, and the `process` driver (a command on the host).
//! - `shim`: the per-task process (`rswarm shim`) that is a task's parent,
//!   keeps its exit status and writes its logs, so tasks outlive the daemon.
//! - `logs`: the task log files (format, rotation) and their reader.
//! - `controller`: one controller per task, driving it from ASSIGNED to its
//!   desired state and reporting its status.
//! - `assignments`: the task protocol's client side — the Assignments
//!   stream and batched task status reports — shared by the worker and the
//!   simulator.
//! - `sim`: simulated nodes (real identities and sessions, no tasks run),
//!   for scale tests.
//!
//! The session keeps running when no manager is reachable, and so do the
//! tasks, which are watched by their shims and not by the daemon.

pub mod assignments;
pub mod controller;
pub mod description;
pub mod join;
pub mod limits;
pub mod logs;
pub mod runtime;
pub mod session;
pub mod shim;
pub mod sim;
pub mod worker;

pub use join::{JoinError, Joined, join};
pub use session::{Agent, AgentConfig, AgentStatus};
