//! The replicated cluster store, in memory.
//!
//! Owns: the object model's rules ([`StoreState::apply`]: all-or-nothing
//! batches, optimistic concurrency on `meta.version`, unique names, size
//! limits), the user lookup rule (ID, name, unique ID prefix), snapshots of
//! the whole state, and the shared [`Store`] handle with its watch history.
//!
//! Does not own: durability or replication. The Raft state machine
//! (`crate::raft::state_machine`) is the only writer; it applies committed
//! log entries in order and persists snapshots.
//!
//! Invariant: the state at a version is a pure function of the log up to that
//! version, so every manager holds the same state at the same version.

mod error;
mod handle;
pub mod limits;
mod object;
mod state;

#[cfg(test)]
mod tests;

pub use error::{MatchBy, StoreError, WriteOp};
pub use handle::{ApplyOutcome, Store, Watcher};
pub use object::{ObjectKind, StoreObject};
pub use state::StoreState;
