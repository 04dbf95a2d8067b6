//! The manager's Raft group, on openraft: type configuration, node
//! configuration, the transport (`network`), the durable log (`log_store`)
//! and the state machine that applies entries to the store (`state_machine`).
//!
//! openraft is an alpha crate pinned exactly; nothing outside this module
//! names its types except through the aliases below.

pub mod log_store;
pub mod network;
pub mod node;
pub mod state_machine;
pub mod wal;

openraft::declare_raft_types!(
    /// openraft's type configuration for the manager store.
    pub TypeConfig:
        D = rswarm_proto::Proposal,
        R = crate::store::ApplyOutcome,
        Node = openraft::BasicNode,
);
