//! The scheduler: decides which node runs each pending task.
//!
//! Layout:
//! - `constraint`: placement constraints and spread preferences as users
//!   write them, and [`validate_placement`] for the control API.
//! - `nodeinfo`: one node as the scheduler sees it (attributes, capacity,
//!   what its active tasks hold).
//! - `filter`: the filters a node must pass, in order, and the error text.
//! - `placement`: the pure core, [`Scheduler::schedule`]: groups, spread
//!   tree, least-loaded heap.
//! - `queue`: which pending tasks the leader loop should look at.
//! - `writes`: decisions turned into task updates, in proposals of bounded
//!   size.
//! - `runner`: the leader loop, [`run`].
//! - `limits`: batch sizes and timings, with why.
//!
//! **Invariants:** only the leader writes; the scheduler moves a task from
//! PENDING to ASSIGNED (setting its node) and never moves an assigned task;
//! it never places a task on a node that fails a filter as of the state it
//! read; every write carries the version it read, so a task changed
//! meanwhile is re-read, never overwritten.

mod constraint;
mod filter;
pub mod limits;
mod nodeinfo;
mod placement;
mod queue;
mod runner;
mod writes;

pub use constraint::{
    Constraint, ConstraintError, NodeAttribute, Operator, PlacementError, PlacementRules,
    normalize_arch, parse_spread, validate_placement,
};
pub use filter::{Filter, Rejections, Requirements};
pub use nodeinfo::{CpuMemory, HostPort, NodeInfo, is_active, is_pending};
pub use placement::{Decision, Scheduler, water_fill};
pub use runner::run;

#[cfg(test)]
mod fixtures;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod runner_tests;
