//! rswarm's manager.
pub mod raft;
