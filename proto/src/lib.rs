//! rswarm's wire types, generated from `proto/*.proto`.
//!
//! Owns: every message that crosses the network or the disk, and the gRPC
//! service stubs, and the tables of values some fields may take
//! (`container`). Does not own: behaviour. Conversions and validation live
//! in the crates that use these types.

#![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]

/// Version 1 of the rswarm API.
pub mod v1 {
    tonic::include_proto!("rswarm.v1");
}

pub use v1::*;

pub mod container;
mod redacted;

impl std::fmt::Display for v1::Proposal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "proposal of {} action(s)", self.actions.len())
    }
}
