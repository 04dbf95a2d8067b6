//! The orchestrators: they turn services into tasks and keep them so.
//!
//! - `replicated`: a replicated service has `replicas` slots, one runnable
//!   task each; tasks on Down, drained or removed nodes are replaced.
//! - `global`: one task on every node that takes the service.
//! - `restart`: the restart supervisor (condition, delay, attempts, window).
//! - `update`: the rolling updater, rollback and automatic rollback.
//! - `rebalance`: opt-in moves towards an even spread.
//! - `reaper`: deletes removed tasks and trims each slot's history.
//! - `reconcile`: one pass over one service, every decision in order, as a
//!   pure function of (store state, time, this leader's memory).
//! - `leader_loop`: the loop that runs passes while this manager leads.
//! - `work`, `plan`, `task`, `nodes`, `constraint`, `limits`: the model a
//!   pass edits, batching into proposals, task and node vocabulary,
//!   placement constraints, limits.
//!
//! Owns: tasks' creation, their `desired_state`, their deletion, and the
//! service fields `update_status`, `spec`/`previous_spec`/`spec_version` (on
//! an automatic rollback only) and `rebalanced`/`rebalance_requested`.
//! Does not own: placement (the scheduler moves PENDING → ASSIGNED and picks
//! the node) or observed state after ASSIGNED (agents, via the dispatcher),
//! or spec defaults (the control API fills them; unset values are read with
//! SwarmKit's defaults here too).
//!
//! **Invariants:** the orchestrators act only on the leader and write only
//! through Raft with the version they read; every decision can be made
//! again from the store after a leader change (memory holds restart
//! attempts, update failure counts and pacing, nothing that loses a task).

pub mod constraint;
pub mod global;
pub mod leader_loop;
pub mod limits;
pub mod nodes;
pub mod plan;
pub mod reaper;
pub mod rebalance;
pub mod reconcile;
pub mod replicated;
pub mod restart;
pub mod task;
pub mod update;
pub mod work;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::manager::ManagerContext;

/// Runs the orchestrators of this manager until `cancel` fires: they act
/// while it leads and wait otherwise.
pub async fn run(ctx: Arc<ManagerContext>, cancel: CancellationToken) {
    leader_loop::run(ctx.raft.clone(), cancel).await;
}
