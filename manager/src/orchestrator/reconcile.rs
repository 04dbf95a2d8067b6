//! One pass over one service: every orchestrator decision, in order, on one
//! snapshot of the store, as a pure function of (store state, time, this
//! leader's memory of the service). The result is the store changes to
//! propose, when to look again, and whether the service's task events need
//! attention.
//!
//! Order of decisions (each sees the previous ones' changes):
//! 1. note failures for the updater (before anything changes the tasks);
//! 2. replace tasks on lost nodes (replicated) / shut down tasks on unfit
//!    nodes (global);
//! 3. restart ended tasks;
//! 4. scale (replicated) / fill nodes (global);
//! 5. roll out a new spec (update, rollback);
//! 6. rebalance;
//! 7. release held tasks;
//! 8. reap removed tasks and trim history.

use std::collections::{HashMap, HashSet};

use super::rebalance::RebalanceRun;
use super::restart::RestartHistory;
use super::task::{is_global, task_id};
use super::update::UpdateRun;
use super::work::{Changes, ServiceWork};
use super::{global, reaper, rebalance, replicated, restart, update};
use crate::store::StoreState;

/// What every decision of a pass shares.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    /// The store snapshot.
    pub state: &'a StoreState,
    /// The time of the pass (ms since the epoch, the store's clock).
    pub now_ms: i64,
    /// Old tasks kept per slot.
    pub history_limit: usize,
    /// Whether a new update or rebalance may start (the concurrent-updater
    /// limit is not reached).
    pub may_start_update: bool,
}

/// What this leader remembers about a service between passes. Lost on a
/// leader change; everything else is read from the store.
#[derive(Debug, Default)]
pub struct ServiceMemory {
    /// Restart attempts per slot.
    pub restarts: RestartHistory,
    /// The update under way.
    pub update: Option<UpdateRun>,
    /// The spec version a PAUSED update stopped at.
    pub paused_at: Option<u64>,
    /// The rebalance under way.
    pub rebalance: Option<RebalanceRun>,
    /// Held (READY) tasks made by an update's stop-first step: they wait for
    /// their predecessor to stop, not for a restart delay.
    pub quick_start: HashSet<String>,
    /// When tasks of the spec being rolled out were first seen running.
    pub running_since: HashMap<String, i64>,
}

impl ServiceMemory {
    /// Whether the service holds one of the concurrent-updater places.
    pub fn is_updating(&self) -> bool {
        self.update.is_some() || self.rebalance.is_some()
    }

    /// Whether there is nothing worth keeping.
    pub fn is_empty(&self) -> bool {
        !self.is_updating() && self.paused_at.is_none() && self.quick_start.is_empty()
    }
}

/// Things a pass learns besides the changes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Signals {
    /// Look at the service again at this time (ms since the epoch).
    pub wake_at_ms: Option<i64>,
    /// Any event of the service's tasks may call for action (an update or
    /// a move is under way, a task is held).
    pub attentive: bool,
}

impl Signals {
    /// Asks for a pass at `at_ms` (the earliest request wins).
    pub fn wake(&mut self, at_ms: i64) {
        self.wake_at_ms = Some(self.wake_at_ms.map_or(at_ms, |w| w.min(at_ms)));
    }
}

/// The result of one pass over one service.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Store changes to propose.
    pub changes: Changes,
    /// When to look again, and whether task events matter.
    pub signals: Signals,
    /// The budget ran out: pass again at once.
    pub more: bool,
}

/// Plans one pass over the service `service_id` (which may be gone), using
/// at most `budget` actions.
pub fn reconcile_service(
    ctx: &Ctx<'_>,
    service_id: &str,
    mem: &mut ServiceMemory,
    budget: usize,
) -> Outcome {
    let mut work = ServiceWork::new(ctx.state, service_id, budget);
    let mut signals = Signals::default();
    match work.service().map(is_global) {
        None => {}
        Some(false) => reconcile_replicated(ctx, &mut work, mem, &mut signals),
        Some(true) => reconcile_global(ctx, &mut work, mem, &mut signals),
    }
    reaper::reap(ctx, &mut work);
    forget_stale(&work, mem);
    let more = !work.has_budget();
    Outcome {
        changes: work.into_changes(),
        signals,
        more,
    }
}

fn reconcile_replicated(
    ctx: &Ctx<'_>,
    work: &mut ServiceWork<'_>,
    mem: &mut ServiceMemory,
    signals: &mut Signals,
) {
    let failures = update::observe(ctx, work, mem);
    replicated::replace_on_lost_nodes(ctx, work);
    restart::supervise(ctx, work, mem);
    replicated::scale(ctx, work, mem);
    update::step(ctx, work, mem, &failures, signals);
    rebalance::step(ctx, work, mem, signals);
    restart::release_held(ctx, work, mem, signals);
}

fn reconcile_global(
    ctx: &Ctx<'_>,
    work: &mut ServiceWork<'_>,
    mem: &mut ServiceMemory,
    signals: &mut Signals,
) {
    let failures = update::observe(ctx, work, mem);
    global::shut_down_on_unfit_nodes(ctx, work);
    restart::supervise(ctx, work, mem);
    global::fill_nodes(ctx, work, mem);
    update::step(ctx, work, mem, &failures, signals);
    rebalance::step(ctx, work, mem, signals);
    restart::release_held(ctx, work, mem, signals);
}

/// Drops memory about tasks and slots that are gone or done.
fn forget_stale(work: &ServiceWork<'_>, mem: &mut ServiceMemory) {
    mem.restarts.retain(|k| work.has_slot(k));
    if mem.quick_start.is_empty() {
        return;
    }
    let held: HashSet<&str> = work
        .slot_ids()
        .flat_map(|s| work.runnable(s))
        .filter(|(_, t)| t.desired_state() == rswarm_proto::TaskState::Ready)
        .map(|(_, t)| task_id(t))
        .collect();
    mem.quick_start.retain(|id| held.contains(id.as_str()));
}
