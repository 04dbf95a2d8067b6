//! The rolling updater: when a service's tasks run an older spec than the
//! service (dirty slots), it replaces them a few at a time — `parallelism`
//! slots in flight, `delay` after each finished slot, start-first (new task
//! up, then the old one stopped) or stop-first (old one stopped, new one held
//! at READY until then) — watching each new task for `monitor`. Too many
//! failures pause it, or roll the service back to its previous spec; a
//! rollback that fails pauses and never rolls back again.
//!
//! Progress is read from the store each pass (which slots are dirty, which
//! are in flight, when new tasks started running), so a new leader carries
//! on an update it finds UPDATING. Only the failure count and the pacing
//! live in memory.
//!
//! **Invariants:** at most `parallelism` slots are in flight; a slot counts
//! as done only once its new task runs; `update_status` goes UPDATING →
//! COMPLETED | PAUSED, or ROLLBACK_STARTED → ROLLBACK_COMPLETED |
//! ROLLBACK_PAUSED; a PAUSED update stays paused until the spec changes.

use std::collections::{BTreeSet, HashMap, HashSet};

use rswarm_proto::{
    Node, Service, Task, TaskSpec, TaskState, UpdateConfig, UpdateFailureAction, UpdateOrder,
    UpdateState, UpdateStatus,
};

use super::constraint::node_satisfies;
use super::limits::{UPDATE_MONITOR_DEFAULT, UPDATE_PARALLELISM_DEFAULT, UPDATER_WAIT_RETRY};
use super::nodes::{constraints_of, fit};
use super::reconcile::{Ctx, ServiceMemory, Signals};
use super::task::{has_ended, is_running, new_task, observed_ms, service_name, task_id};
use super::work::{ServiceWork, SlotId, SlotKey};

/// An update (or rollback) config with its defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rollout {
    /// Slots in flight at once (0: all).
    pub parallelism: u64,
    /// Pause after each finished slot.
    pub delay_ms: i64,
    /// What too many failures do.
    pub failure_action: UpdateFailureAction,
    /// How long a new task is watched for failure.
    pub monitor_ms: i64,
    /// Failures tolerated, as a fraction of the slots to update.
    pub max_failure_ratio: f32,
    /// Start the new task before or after stopping the old one.
    pub order: UpdateOrder,
}

/// The rollout of a config, defaults filled in (SwarmKit's: parallelism 1,
/// monitor 5 s, and a monitor of at least the delay plus a second).
pub fn rollout_of(config: Option<&UpdateConfig>) -> Rollout {
    let config = config.cloned().unwrap_or_default();
    let delay_ms = i64::try_from(config.delay_ms).unwrap_or(i64::MAX);
    let mut monitor_ms = config
        .monitor_ms
        .map_or(UPDATE_MONITOR_DEFAULT.as_millis() as i64, |m| {
            i64::try_from(m).unwrap_or(i64::MAX)
        });
    if delay_ms > 0 && delay_ms >= monitor_ms {
        monitor_ms = delay_ms.saturating_add(1_000);
    }
    Rollout {
        parallelism: config.parallelism.unwrap_or(UPDATE_PARALLELISM_DEFAULT),
        delay_ms,
        failure_action: config.failure_action(),
        monitor_ms,
        max_failure_ratio: config.max_failure_ratio,
        order: config.order(),
    }
}

/// One running update, in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateRun {
    /// The spec version being rolled out.
    pub spec_version: u64,
    /// A rollback (uses the rollback config, pauses on failure).
    pub rollback: bool,
    /// Slots to update when the run began: the failure ratio's denominator.
    pub slots_total: usize,
    /// New tasks that failed within their monitor window.
    pub failures: BTreeSet<String>,
    /// Slots in flight at the last pass.
    pub in_flight: BTreeSet<SlotKey>,
    /// No slot starts before this time (the delay after a finished slot).
    pub next_start_ms: i64,
    /// When a slot last finished.
    pub last_done_ms: i64,
}

/// The service's `update_status.state`.
pub fn update_state(service: &Service) -> UpdateState {
    service
        .update_status
        .as_ref()
        .map_or(UpdateState::Unknown, |u| u.state())
}

/// Whether an update or a rollback is under way according to the store.
pub fn is_active(state: UpdateState) -> bool {
    matches!(state, UpdateState::Updating | UpdateState::RollbackStarted)
}

/// Whether a runnable task must be replaced to match the service: its spec
/// or endpoint differ. A change of placement alone does not count while the
/// task's node still satisfies the new constraints.
pub fn is_outdated(task: &Task, service: &Service, node: Option<&Node>) -> bool {
    // A task copies the spec at its version, and every spec change bumps
    // the version: same version, same spec (the cheap common case).
    if task.spec_version == service.spec_version {
        return false;
    }
    let spec = service.spec.as_ref();
    if task.endpoint.as_ref() != spec.and_then(|s| s.endpoint.as_ref()) {
        return true;
    }
    let wanted = spec.and_then(|s| s.task.as_ref());
    if task.spec.as_ref() == wanted {
        return false;
    }
    let strip = |s: Option<&TaskSpec>| {
        s.cloned().map(|mut s| {
            s.placement = None;
            s
        })
    };
    if strip(task.spec.as_ref()) != strip(wanted) {
        return true;
    }
    node.is_none_or(|n| !node_satisfies(n, constraints_of(service)))
}

/// Slots whose runnable tasks all run an outdated spec, in update order:
/// slots whose task is not running first (they serve nobody), then by key.
/// Global slots on nodes that take no new task (paused) are left alone.
pub fn dirty_slots(ctx: &Ctx<'_>, work: &ServiceWork<'_>, service: &Service) -> Vec<SlotId> {
    let mut dirty: Vec<(bool, &SlotKey, SlotId)> = Vec::new();
    for slot in work.slot_ids() {
        if let SlotKey::Node(node_id) = work.key(slot)
            && !fit(ctx.state, node_id).takes_tasks()
        {
            continue;
        }
        let mut runnable = work.runnable(slot).peekable();
        if runnable.peek().is_none() {
            continue;
        }
        let mut running = false;
        let mut all_outdated = true;
        for (_, task) in runnable {
            running |= is_running(task);
            all_outdated &= is_outdated(task, service, ctx.state.node(&task.node_id));
        }
        if all_outdated {
            dirty.push((running, work.key(slot), slot));
        }
    }
    dirty.sort();
    dirty.into_iter().map(|(_, _, slot)| slot).collect()
}

/// Ends start-first replacements: in a slot with several runnable tasks
/// whose newest one runs, the older ones are shut down.
pub fn finish_start_first(work: &mut ServiceWork<'_>) {
    for slot in work.slot_ids() {
        if work.runnable(slot).nth(1).is_none() {
            continue;
        }
        let Some((newest, task)) = work.newest_runnable(slot) else {
            continue;
        };
        if !is_running(task) {
            continue;
        }
        let older: Vec<usize> = work
            .runnable(slot)
            .map(|(i, _)| i)
            .filter(|i| *i != newest)
            .collect();
        for index in older {
            work.set_desired(slot, index, TaskState::Shutdown);
        }
    }
}

/// Replaces the runnable tasks of a slot with a new one of the current spec:
/// start-first creates it next to them, stop-first shuts them down and holds
/// the new one at READY until they stopped.
pub fn replace_slot(
    ctx: &Ctx<'_>,
    work: &mut ServiceWork<'_>,
    mem: &mut ServiceMemory,
    slot: SlotId,
    order: UpdateOrder,
) -> bool {
    let Some(service) = work.service().cloned() else {
        return false;
    };
    let key = work.key(slot).clone();
    let (number, node_id) = match &key {
        SlotKey::Replica(n) => (*n, String::new()),
        SlotKey::Node(id) => (0, id.clone()),
    };
    let old: Vec<usize> = work.runnable(slot).map(|(i, _)| i).collect();
    match order {
        UpdateOrder::StartFirst => {
            let task = new_task(&service, number, &node_id, TaskState::Running, ctx.now_ms);
            work.create(key, task)
        }
        UpdateOrder::StopFirst => {
            let task = new_task(&service, number, &node_id, TaskState::Ready, ctx.now_ms);
            let id = task_id(&task).to_owned();
            if !work.create(key, task) {
                return false;
            }
            mem.quick_start.insert(id);
            for index in old {
                work.set_desired(slot, index, TaskState::Shutdown);
            }
            true
        }
    }
}

/// A new task of the current spec that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The task.
    pub task_id: String,
    /// When it ended.
    pub ended_ms: i64,
}

/// Reads the store's tasks before this pass changes them: notes when tasks
/// of the current spec started running (for the monitor window) and returns
/// those that failed (runnable, ended). Call before the restart supervisor.
pub fn observe(ctx: &Ctx<'_>, work: &ServiceWork<'_>, mem: &mut ServiceMemory) -> Vec<Failure> {
    let Some(service) = work.service() else {
        return Vec::new();
    };
    if !is_active(update_state(service)) {
        mem.running_since.clear();
        return Vec::new();
    }
    let mut failures = Vec::new();
    for slot in work.slot_ids() {
        for (_, task) in work.runnable(slot) {
            if is_outdated(task, service, ctx.state.node(&task.node_id)) {
                continue;
            }
            if is_running(task) {
                mem.running_since
                    .entry(task_id(task).to_owned())
                    .or_insert_with(|| observed_ms(task));
            } else if has_ended(task) {
                failures.push(Failure {
                    task_id: task_id(task).to_owned(),
                    ended_ms: observed_ms(task),
                });
            }
        }
    }
    failures
}

/// One pass of the updater over a service. See the module doc.
pub fn step(
    ctx: &Ctx<'_>,
    work: &mut ServiceWork<'_>,
    mem: &mut ServiceMemory,
    failures: &[Failure],
    signals: &mut Signals,
) {
    finish_start_first(work);
    let Some(service) = work.service().cloned() else {
        return;
    };
    let dirty = dirty_slots(ctx, work, &service);
    let state = update_state(&service);
    if matches!(state, UpdateState::Paused | UpdateState::RollbackPaused) {
        let paused_at = *mem.paused_at.get_or_insert(service.spec_version);
        if paused_at == service.spec_version {
            mem.update = None;
            return;
        }
    }
    let run_matches = mem
        .update
        .as_ref()
        .is_some_and(|r| r.spec_version == service.spec_version);
    if !is_active(state) || !run_matches {
        if !is_active(state) && dirty.is_empty() {
            mem.update = None;
            return;
        }
        if !ctx.may_start_update && mem.update.is_none() {
            signals.wake(ctx.now_ms + UPDATER_WAIT_RETRY.as_millis() as i64);
            return;
        }
        begin(ctx, work, mem, &service, &dirty);
    }
    signals.attentive = true;
    advance(ctx, work, mem, failures, &dirty, signals);
}

/// Starts a run: a fresh update (UPDATING), a new spec arriving during one,
/// or a rollback the store announces (ROLLBACK_STARTED).
fn begin(
    ctx: &Ctx<'_>,
    work: &mut ServiceWork<'_>,
    mem: &mut ServiceMemory,
    service: &Service,
    dirty: &[SlotId],
) {
    let state = update_state(service);
    let rollback = state == UpdateState::RollbackStarted;
    let had_run = mem.update.is_some();
    let in_flight = in_flight_slots(work, dirty).len();
    mem.update = Some(UpdateRun {
        spec_version: service.spec_version,
        rollback,
        slots_total: dirty.len() + in_flight,
        failures: BTreeSet::new(),
        in_flight: BTreeSet::new(),
        next_start_ms: 0,
        last_done_ms: ctx.now_ms,
    });
    mem.paused_at = None;
    mem.running_since.clear();
    // A new leader carrying on an update leaves its status alone.
    let continuing = state == UpdateState::Updating && !had_run;
    if rollback || continuing {
        return;
    }
    tracing::info!(
        service = service_name(service),
        spec_version = service.spec_version,
        "rolling update started"
    );
    if let Some(s) = work.service_mut() {
        s.update_status = Some(status(
            UpdateState::Updating,
            ctx.now_ms,
            0,
            "update in progress",
        ));
    }
}

fn status(
    state: UpdateState,
    started_at_ms: i64,
    completed_at_ms: i64,
    message: &str,
) -> UpdateStatus {
    let mut status = UpdateStatus {
        started_at_ms,
        completed_at_ms,
        message: message.to_owned(),
        ..UpdateStatus::default()
    };
    status.set_state(state);
    status
}

/// Counts failures, then finishes, pauses, rolls back, or starts slots.
fn advance(
    ctx: &Ctx<'_>,
    work: &mut ServiceWork<'_>,
    mem: &mut ServiceMemory,
    failures: &[Failure],
    dirty: &[SlotId],
    signals: &mut Signals,
) {
    let Some(service) = work.service().cloned() else {
        return;
    };
    let Some(mut run) = mem.update.take() else {
        return;
    };
    let spec = service.spec.as_ref();
    let config = if run.rollback {
        spec.and_then(|s| s.rollback.as_ref())
    } else {
        spec.and_then(|s| s.update.as_ref())
    };
    let rollout = rollout_of(config);
    let failed = count_failures(&mut run, failures, &mem.running_since, rollout.monitor_ms);
    if let Some(task) = failed.filter(|_| too_many_failures(&run, &rollout)) {
        act_on_failure(ctx, work, mem, &run, &rollout, &task);
        return;
    }
    // A slot still waiting for its first (outdated) task is dirty, not in
    // flight: it is replaced, not waited for.
    let in_flight = in_flight_slots(work, dirty);
    if run.in_flight.iter().any(|k| !in_flight.contains(k)) {
        run.last_done_ms = ctx.now_ms;
        run.next_start_ms = ctx.now_ms.saturating_add(rollout.delay_ms);
    }
    run.in_flight = in_flight;
    if dirty.is_empty() && run.in_flight.is_empty() {
        let settled_ms = monitor_tail_ms(work, &service, &run).saturating_add(rollout.monitor_ms);
        if ctx.now_ms >= settled_ms {
            complete(ctx, work, mem, &run);
            return;
        }
        signals.wake(settled_ms);
        mem.update = Some(run);
        return;
    }
    start_slots(ctx, work, mem, &mut run, &rollout, dirty, signals);
    mem.update = Some(run);
}

/// Adds newly failed tasks to the run; returns the latest one counted.
fn count_failures(
    run: &mut UpdateRun,
    failures: &[Failure],
    running_since: &HashMap<String, i64>,
    monitor_ms: i64,
) -> Option<String> {
    let mut latest = None;
    for failure in failures {
        let within_monitor = running_since
            .get(&failure.task_id)
            .is_none_or(|since| failure.ended_ms.saturating_sub(*since) <= monitor_ms);
        if within_monitor && run.failures.insert(failure.task_id.clone()) {
            latest = Some(failure.task_id.clone());
        }
    }
    latest.or_else(|| run.failures.iter().next_back().cloned())
}

/// Whether the failures exceed the tolerated ratio (and matter at all).
pub fn too_many_failures(run: &UpdateRun, rollout: &Rollout) -> bool {
    if rollout.failure_action == UpdateFailureAction::Continue || run.failures.is_empty() {
        return false;
    }
    let total = run.slots_total.max(1) as f64;
    run.failures.len() as f64 / total > f64::from(rollout.max_failure_ratio)
}

/// What a run does when it has too many failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureResponse {
    /// UPDATE paused (or ROLLBACK_PAUSED during a rollback).
    Pause,
    /// Spec ← previous spec, ROLLBACK_STARTED.
    Rollback,
}

/// The response to too many failures: a rollback only from a normal update
/// of a service that has a previous spec; a rollback never rolls back.
pub fn failure_response(
    action: UpdateFailureAction,
    rollback_run: bool,
    has_previous: bool,
) -> FailureResponse {
    if action == UpdateFailureAction::Rollback && !rollback_run && has_previous {
        FailureResponse::Rollback
    } else {
        FailureResponse::Pause
    }
}

fn act_on_failure(
    ctx: &Ctx<'_>,
    work: &mut ServiceWork<'_>,
    mem: &mut ServiceMemory,
    run: &UpdateRun,
    rollout: &Rollout,
    task: &str,
) {
    let Some(service) = work.service_mut() else {
        return;
    };
    let started = service
        .update_status
        .as_ref()
        .map_or(ctx.now_ms, |u| u.started_at_ms);
    let response = failure_response(
        rollout.failure_action,
        run.rollback,
        service.previous_spec.is_some(),
    );
    match response {
        FailureResponse::Pause => {
            let (state, what) = if run.rollback {
                (UpdateState::RollbackPaused, "rollback")
            } else {
                (UpdateState::Paused, "update")
            };
            let message =
                format!("{what} paused due to failure or early termination of task {task}");
            tracing::warn!(%message);
            service.update_status = Some(status(state, started, 0, &message));
            mem.paused_at = Some(service.spec_version);
        }
        FailureResponse::Rollback => {
            let message =
                format!("update rolled back due to failure or early termination of task {task}");
            tracing::warn!(%message);
            let previous = service.previous_spec.take();
            service.previous_spec = service.spec.take();
            service.spec = previous;
            service.spec_version = service.spec_version.saturating_add(1);
            service.update_status = Some(status(
                UpdateState::RollbackStarted,
                ctx.now_ms,
                0,
                &message,
            ));
            mem.paused_at = None;
        }
    }
    mem.update = None;
    mem.running_since.clear();
}

/// The latest time a slot finished or a current task started running.
fn monitor_tail_ms(work: &ServiceWork<'_>, service: &Service, run: &UpdateRun) -> i64 {
    let mut latest = run.last_done_ms;
    for slot in work.slot_ids() {
        for (_, task) in work.runnable(slot) {
            if is_running(task) && task.spec_version == service.spec_version {
                latest = latest.max(observed_ms(task));
            }
        }
    }
    latest
}

fn complete(ctx: &Ctx<'_>, work: &mut ServiceWork<'_>, mem: &mut ServiceMemory, run: &UpdateRun) {
    let (state, message) = if run.rollback {
        (UpdateState::RollbackCompleted, "rollback completed")
    } else {
        (UpdateState::Completed, "update completed")
    };
    if let Some(service) = work.service_mut() {
        let started = service
            .update_status
            .as_ref()
            .map_or(ctx.now_ms, |u| u.started_at_ms);
        service.update_status = Some(status(state, started, ctx.now_ms, message));
        tracing::info!(spec_version = service.spec_version, "{message}");
    }
    mem.update = None;
    mem.running_since.clear();
}

/// Slots on their way to the new spec (a slot still waiting for its first,
/// outdated, task is dirty, not in flight: it is replaced, not waited for).
fn in_flight_slots(work: &ServiceWork<'_>, dirty: &[SlotId]) -> BTreeSet<SlotKey> {
    let dirty: HashSet<SlotId> = dirty.iter().copied().collect();
    work.slot_ids()
        .filter(|s| !dirty.contains(s) && work.is_in_progress(*s))
        .map(|s| work.key(s).clone())
        .collect()
}

/// Starts as many dirty slots as parallelism, delay and budget allow.
fn start_slots(
    ctx: &Ctx<'_>,
    work: &mut ServiceWork<'_>,
    mem: &mut ServiceMemory,
    run: &mut UpdateRun,
    rollout: &Rollout,
    dirty: &[SlotId],
    signals: &mut Signals,
) {
    if ctx.now_ms < run.next_start_ms {
        signals.wake(run.next_start_ms);
        return;
    }
    let capacity = if rollout.parallelism == 0 {
        dirty.len()
    } else {
        (rollout.parallelism as usize).saturating_sub(run.in_flight.len())
    };
    let next: Vec<SlotId> = dirty
        .iter()
        .copied()
        .filter(|s| !run.in_flight.contains(work.key(*s)))
        .take(capacity)
        .collect();
    for slot in next {
        if !replace_slot(ctx, work, mem, slot, rollout.order) {
            break;
        }
        run.in_flight.insert(work.key(slot).clone());
    }
}
