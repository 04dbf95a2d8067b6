//! Tests of the orchestrators.

mod global;
mod harness;
mod loops;
mod rebalance;
mod replicated;
mod update;
mod world;
