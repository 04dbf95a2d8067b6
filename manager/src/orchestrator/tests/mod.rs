//! Tests of the orchestrators.

mod global;
mod replicated;
mod update;
mod world;
