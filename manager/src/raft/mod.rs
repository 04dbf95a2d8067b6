//! The manager's Raft group, on openraft.

openraft::declare_raft_types!(
    /// openraft's type configuration for the manager store.
    pub TypeConfig:
        D = rswarm_proto::Proposal,
        R = u64,
        Node = openraft::BasicNode,
);
