//! The convergence display of `create`, `update`, `scale` and `rollback`,
//! as a pure state machine: each poll's (service, tasks, nodes, elapsed)
//! goes in, the lines to show and, once decided, the outcome come out.
//!
//! What it shows is Docker's (`overall progress: N out of M tasks`, a bar
//! per slot up to 20 replicas or a line per node for global services, an
//! error in place of a bar, `verify: Waiting N seconds to verify that
//! tasks are stable...`, `verify: Service <id> converged`, `verify:
//! Detected task failure`, `rollback: <reason>`).
//!
//! What it decides goes further than Docker, so that the command always
//! ends: a paused update, a finished rollback, a task that failed and will
//! not be restarted, or tasks that cannot be placed and show no progress
//! for `PLACEMENT_WAIT` end the wait with their exit code.
//!
//! **Invariants:** a slot counts as done only when its task runs the
//! service's current spec (its spec version, or an equal task spec), so an
//! update is not "converged" before it started, and, when it has a health
//! check, is healthy (Docker waits for that too); an update status that was
//! already there when the wait began (`baseline`) is not taken for the
//! outcome of this change.

use std::collections::BTreeMap;
use std::time::Duration;

use rswarm_proto::service_spec::Mode;
use rswarm_proto::*;

use super::health::holds_convergence;
use super::text::{ellipsize, service_id, service_name, short_id, state_word, task_id};

/// Slots shown with a bar each; above this only the totals (Docker's 20).
pub const SLOT_LINES_MAX: u64 = 20;

/// How long tasks may wait for a node, with no progress at all, before the
/// wait ends with exit code 2. The scheduler retries pending tasks within
/// a second when nodes change, so 3 s of the same "no suitable node" means
/// the cluster, as it is, cannot place them; the service stays and starts
/// when a node fits.
pub const PLACEMENT_WAIT: Duration = Duration::from_secs(3);

/// How long a slot may stay without a live task after its task failed
/// before the wait says the restart policy gave up. The restart supervisor
/// creates the replacement (held back by the restart delay) in the same
/// commit that records the failure, so 5 s only covers a slow or changing
/// leader.
pub const FAILED_SLOT_GRACE: Duration = Duration::from_secs(5);

/// How long tasks are watched after converging when the update policy
/// leaves `monitor` unset (the manager's default too).
pub const MONITOR_DEFAULT: Duration = Duration::from_secs(5);

/// Width of a progress bar, in `=` signs (Docker's 50).
const BAR_WIDTH: usize = 50;

/// Characters of an error shown in place of a bar.
const ERROR_CHARS_MAX: usize = 70;

/// Distinct errors summarised when there are too many slots for bars.
const ERROR_SUMMARIES_MAX: usize = 3;

/// What the wait is for; it decides whether a completed rollback is the
/// goal or a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `service create`.
    Create,
    /// `service update` or `service scale`.
    Update,
    /// `service rollback` or `service update --rollback`.
    Rollback,
}

/// How a wait ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every task runs the current spec and stayed up for the monitor period.
    Converged,
    /// The change failed, paused or was rolled back: exit code 1.
    Failed(String),
    /// Tasks cannot be placed on any node: exit code 2.
    Unplaceable(String),
}

impl Outcome {
    /// The command's exit code: 0 converged, 1 failed, 2 could not place.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Converged => 0,
            Self::Failed(_) => 1,
            Self::Unplaceable(_) => 2,
        }
    }
}

/// One line of the display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgressLine {
    /// What the line is about: `overall progress`, `1/3`, a hostname, `verify`.
    pub id: String,
    /// The line as drawn on a terminal.
    pub text: String,
    /// The line as logged off a terminal, without bar or countdown: it is
    /// printed whenever it differs from the last one with the same `id`.
    pub plain: String,
}

impl ProgressLine {
    fn new(id: &str, text: String) -> Self {
        Self {
            id: id.to_string(),
            plain: text.clone(),
            text,
        }
    }
}

/// What one poll produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The whole display, top to bottom.
    pub lines: Vec<ProgressLine>,
    /// Set once the wait is over.
    pub outcome: Option<Outcome>,
}

/// One poll's view of the cluster.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    /// The service and its task counts.
    pub view: &'a ServiceView,
    /// All tasks of the service, old ones included.
    pub tasks: &'a [Task],
    /// All nodes.
    pub nodes: &'a [Node],
}

/// Where a task belongs: a slot of a replicated service, or a node of a
/// global one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum SlotKey {
    Slot(u64),
    Node(String),
}

/// What is known of one slot in this poll.
#[derive(Debug, Clone)]
struct SlotView<'a> {
    /// The task that speaks for the slot, if it has a live one.
    live: Option<&'a Task>,
    /// The slot's newest task, live or not.
    newest: &'a Task,
}

/// The progress state machine; one per wait.
#[derive(Debug)]
pub struct Tracker {
    purpose: Purpose,
    baseline: Option<UpdateStatus>,
    converged_at: Option<Duration>,
    failure_detected: bool,
    rolling_back: bool,
    rollback_message: String,
    stuck: Option<(Vec<(SlotKey, i32)>, Duration)>,
    dead_since: BTreeMap<SlotKey, Duration>,
}

impl Tracker {
    /// A tracker for a wait with `purpose`; `baseline` is the service's
    /// update status right after the change was made.
    pub fn new(purpose: Purpose, baseline: Option<UpdateStatus>) -> Self {
        Self {
            purpose,
            baseline,
            converged_at: None,
            failure_detected: false,
            rolling_back: purpose == Purpose::Rollback,
            rollback_message: String::new(),
            stuck: None,
            dead_since: BTreeMap::new(),
        }
    }

    /// Takes one poll, `elapsed` after the wait began.
    pub fn observe(&mut self, observation: Observation<'_>, elapsed: Duration) -> Frame {
        let service = observation.view.service.clone().unwrap_or_default();
        let status_outcome = self.read_update_status(&service);
        let slots = slots(&service, observation.tasks, observation.nodes);
        let desired = desired_count(&service, observation.view);
        let done = slots
            .values()
            .filter_map(|s| s.live)
            .filter(|t| is_done(&service, t))
            .count() as u64;
        let live = slots.values().filter(|s| s.live.is_some()).count() as u64;
        let converged = done == desired && live == desired;

        let mut lines = Vec::new();
        if self.rolling_back && !self.rollback_message.is_empty() {
            lines.push(ProgressLine::new(
                "rollback",
                format!("rollback: {}", self.rollback_message),
            ));
        }
        lines.push(self.overall_line(done, desired));
        lines.extend(slot_lines(&service, &slots, desired, observation.nodes));

        let outcome = status_outcome
            .or_else(|| self.placement_outcome(&service, &slots, elapsed))
            .or_else(|| self.dead_slot_outcome(&slots, live, desired, elapsed));
        if outcome.is_some() {
            return Frame { lines, outcome };
        }
        let (verify, outcome) = self.verify(&service, converged, elapsed);
        lines.extend(verify);
        Frame { lines, outcome }
    }

    /// Reads the service's update status; a pause or a rollback (when this
    /// wait is not for one) ends the wait.
    fn read_update_status(&mut self, service: &Service) -> Option<Outcome> {
        let status = service.update_status.clone()?;
        let state = UpdateState::try_from(status.state).unwrap_or(UpdateState::Unknown);
        let inherited = self.baseline.as_ref() == Some(&status);
        match state {
            UpdateState::RollbackStarted => {
                self.rolling_back = true;
                self.rollback_message.clone_from(&status.message);
                None
            }
            _ if inherited => None,
            UpdateState::Paused => Some(Outcome::Failed(format!(
                "service update paused: {}",
                status.message
            ))),
            UpdateState::RollbackPaused => Some(Outcome::Failed(format!(
                "service rollback paused: {}",
                status.message
            ))),
            UpdateState::RollbackCompleted if self.purpose != Purpose::Rollback => Some(
                Outcome::Failed(format!("service rolled back: {}", status.message)),
            ),
            _ => None,
        }
    }

    fn overall_line(&self, done: u64, desired: u64) -> ProgressLine {
        let rolling = if self.rolling_back {
            "rolling back update: "
        } else {
            ""
        };
        ProgressLine::new(
            "overall progress",
            format!("overall progress: {rolling}{done} out of {desired} tasks"),
        )
    }

    /// Exit 2 when some tasks wait for a node and nothing moved for
    /// `PLACEMENT_WAIT`.
    fn placement_outcome(
        &mut self,
        service: &Service,
        slots: &BTreeMap<SlotKey, SlotView<'_>>,
        elapsed: Duration,
    ) -> Option<Outcome> {
        let unplaced: Vec<&Task> = slots
            .values()
            .filter_map(|s| s.live)
            .filter(|t| is_unplaceable(t))
            .collect();
        if unplaced.is_empty() {
            self.stuck = None;
            return None;
        }
        let signature: Vec<(SlotKey, i32)> = slots
            .iter()
            .map(|(key, s)| (key.clone(), s.live.map_or(-1, task_state)))
            .collect();
        let since = match &self.stuck {
            Some((previous, since)) if *previous == signature => *since,
            _ => elapsed,
        };
        self.stuck = Some((signature, since));
        if elapsed.saturating_sub(since) < PLACEMENT_WAIT {
            return None;
        }
        let reason = unplaced[0]
            .status
            .as_ref()
            .map_or("", |s| first_line(&s.err));
        let count = unplaced.len();
        Some(Outcome::Unplaceable(format!(
            "{count} task{} cannot be placed: {reason}\nthe service stays and its tasks start when a \
             node fits: check the constraints and resources, then `rswarm service ps {}`",
            if count == 1 { "" } else { "s" },
            display_name(service)
        )))
    }

    /// Exit 1 when a slot lost its task to a failure and no replacement
    /// came within `FAILED_SLOT_GRACE`: the restart policy gave up.
    fn dead_slot_outcome(
        &mut self,
        slots: &BTreeMap<SlotKey, SlotView<'_>>,
        live: u64,
        desired: u64,
        elapsed: Duration,
    ) -> Option<Outcome> {
        let dead: Vec<(&SlotKey, &Task)> = if live < desired {
            slots
                .iter()
                .filter(|(_, s)| s.live.is_none() && has_failed(s.newest))
                .map(|(key, s)| (key, s.newest))
                .collect()
        } else {
            Vec::new()
        };
        self.dead_since
            .retain(|key, _| dead.iter().any(|(dead_key, _)| *dead_key == key));
        for (key, task) in dead {
            let since = *self.dead_since.entry(key.clone()).or_insert(elapsed);
            if elapsed.saturating_sub(since) >= FAILED_SLOT_GRACE {
                let status = task.status.clone().unwrap_or_default();
                return Some(Outcome::Failed(format!(
                    "task {} ({}) {} and its restart policy does not restart it: {}",
                    super::text::task_name(task),
                    short_id(task_id(task)),
                    state_word(status.state),
                    first_line(&status.err)
                )));
            }
        }
        None
    }

    /// The verify phase: once converged, wait the monitor period; a task
    /// that fails meanwhile starts it over.
    fn verify(
        &mut self,
        service: &Service,
        converged: bool,
        elapsed: Duration,
    ) -> (Vec<ProgressLine>, Option<Outcome>) {
        if !converged {
            if self.converged_at.take().is_some() {
                self.failure_detected = true;
            }
            let lines = if self.failure_detected {
                vec![ProgressLine::new(
                    "verify",
                    "verify: Detected task failure".into(),
                )]
            } else {
                Vec::new()
            };
            return (lines, None);
        }
        self.failure_detected = false;
        let since = *self.converged_at.get_or_insert(elapsed);
        let monitor = self.monitor(service);
        let stable_for = elapsed.saturating_sub(since);
        if stable_for >= monitor {
            let line = ProgressLine::new(
                "verify",
                format!("verify: Service {} converged", service_id(service)),
            );
            // Converged back on the old spec: the change itself failed.
            let outcome = if self.rolling_back && self.purpose != Purpose::Rollback {
                Outcome::Failed(format!("service rolled back: {}", self.rollback_message))
            } else {
                Outcome::Converged
            };
            return (vec![line], Some(outcome));
        }
        let left = (monitor - stable_for).as_secs_f64().ceil().max(1.0) as u64;
        let line = ProgressLine {
            id: "verify".into(),
            text: format!("verify: Waiting {left} seconds to verify that tasks are stable..."),
            plain: format!(
                "verify: Waiting {} seconds to verify that tasks are stable...",
                monitor.as_secs_f64().ceil() as u64
            ),
        };
        (vec![line], None)
    }

    fn monitor(&self, service: &Service) -> Duration {
        let spec = service.spec.clone().unwrap_or_default();
        let policy = if self.rolling_back {
            spec.rollback
        } else {
            spec.update
        };
        policy
            .and_then(|p| p.monitor_ms)
            .map_or(MONITOR_DEFAULT, Duration::from_millis)
    }
}

fn task_state(task: &Task) -> i32 {
    task.status.as_ref().map_or(0, |s| s.state)
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

fn display_name(service: &Service) -> &str {
    match service_name(service) {
        "" => service_id(service),
        name => name,
    }
}

/// A state up to RUNNING: a task in it (desired or observed) is live.
fn is_live_state(state: i32) -> bool {
    (TaskState::New as i32..=TaskState::Running as i32).contains(&state)
}

fn has_failed(task: &Task) -> bool {
    let state = task_state(task);
    (state == TaskState::Failed as i32 || state == TaskState::Rejected as i32)
        && task.desired_state != TaskState::Remove as i32
}

fn is_unplaceable(task: &Task) -> bool {
    let status = task.status.clone().unwrap_or_default();
    status.state <= TaskState::Pending as i32 && !status.err.is_empty()
}

/// Whether the task runs the service's current spec and is up.
fn is_done(service: &Service, task: &Task) -> bool {
    let current = task.spec_version == service.spec_version
        || task.spec == service.spec.as_ref().and_then(|s| s.task.clone());
    current
        && task.desired_state == TaskState::Running as i32
        && task_state(task) == TaskState::Running as i32
        && !task.status.as_ref().is_some_and(holds_convergence)
}

fn is_global(service: &Service) -> bool {
    matches!(
        service.spec.as_ref().and_then(|s| s.mode.as_ref()),
        Some(Mode::Global(_))
    )
}

fn desired_count(service: &Service, view: &ServiceView) -> u64 {
    match service.spec.as_ref().and_then(|s| s.mode.as_ref()) {
        Some(Mode::Replicated(r)) => r.replicas,
        _ => view.desired_tasks,
    }
}

/// Nodes whose tasks count: every listed node that is not down.
fn active_nodes(nodes: &[Node]) -> BTreeMap<&str, &Node> {
    nodes
        .iter()
        .filter(|n| n.status.as_ref().map_or(0, |s| s.state) != NodeState::Down as i32)
        .filter_map(|n| Some((n.meta.as_ref()?.id.as_str(), n)))
        .collect()
}

/// Groups the tasks by slot (node for global services) and picks, per
/// slot, the live task with the lowest desired state, then the lowest
/// observed state (a start-first update shows its new task), as Docker
/// does. Tasks on down or unknown nodes are left out.
fn slots<'a>(
    service: &Service,
    tasks: &'a [Task],
    nodes: &[Node],
) -> BTreeMap<SlotKey, SlotView<'a>> {
    let active = active_nodes(nodes);
    let global = is_global(service);
    let created = |t: &Task| {
        (
            t.meta.as_ref().map_or(0, |m| m.created_at_ms),
            task_id(t).to_string(),
        )
    };
    let mut slots: BTreeMap<SlotKey, SlotView<'a>> = BTreeMap::new();
    for task in tasks {
        let key = if global {
            SlotKey::Node(task.node_id.clone())
        } else {
            SlotKey::Slot(task.slot)
        };
        let live = is_live_state(task.desired_state)
            && is_live_state(task_state(task))
            && (task.node_id.is_empty() || active.contains_key(task.node_id.as_str()));
        let entry = slots.entry(key).or_insert(SlotView {
            live: None,
            newest: task,
        });
        if created(task) > created(entry.newest) {
            entry.newest = task;
        }
        if live
            && entry
                .live
                .is_none_or(|current| speaks_before(task, current))
        {
            entry.live = Some(task);
        }
    }
    slots
}

/// Whether `candidate` should speak for its slot instead of `current`.
fn speaks_before(candidate: &Task, current: &Task) -> bool {
    (candidate.desired_state, task_state(candidate)) < (current.desired_state, task_state(current))
}

/// One line per slot (up to `SLOT_LINES_MAX`) or per node, else a summary
/// of the errors.
fn slot_lines(
    service: &Service,
    slots: &BTreeMap<SlotKey, SlotView<'_>>,
    desired: u64,
    nodes: &[Node],
) -> Vec<ProgressLine> {
    let live: Vec<(&SlotKey, &Task)> = slots
        .iter()
        .filter_map(|(key, s)| s.live.map(|t| (key, t)))
        .collect();
    if is_global(service) {
        let mut lines: Vec<ProgressLine> = live
            .iter()
            .map(|(_, task)| task_line(&node_label(&task.node_id, nodes), task))
            .collect();
        lines.sort_by(|a, b| a.id.cmp(&b.id));
        return lines;
    }
    if desired > SLOT_LINES_MAX {
        return error_summary(live.iter().map(|(_, t)| *t));
    }
    live.iter()
        .enumerate()
        .map(|(idx, (_, task))| task_line(&format!("{}/{desired}", idx + 1), task))
        .collect()
}

fn node_label(node_id: &str, nodes: &[Node]) -> String {
    nodes
        .iter()
        .find(|n| n.meta.as_ref().is_some_and(|m| m.id == node_id))
        .and_then(|n| n.description.as_ref())
        .map(|d| d.hostname.clone())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| short_id(node_id).to_string())
}

/// `1/3: running   [=====>     ]`, or `1/3: <error>`.
fn task_line(id: &str, task: &Task) -> ProgressLine {
    let status = task.status.clone().unwrap_or_default();
    if !status.err.is_empty() {
        let err = ellipsize(first_line(&status.err), ERROR_CHARS_MAX);
        return ProgressLine::new(id, format!("{id}: {err}"));
    }
    let word = state_word(status.state);
    let rank = (status.state.clamp(0, TaskState::Running as i32) + 1) as usize;
    let steps = TaskState::Running as usize + 1;
    ProgressLine {
        id: id.to_string(),
        text: format!("{id}: {word:<9} {}", bar(rank, steps)),
        plain: format!("{id}: {word}"),
    }
}

/// Docker's bar: `[` + `=` for each 2 % done + `>` + blanks + `]`.
fn bar(rank: usize, steps: usize) -> String {
    let filled = (rank * 100 / steps.max(1) / 2).min(BAR_WIDTH);
    format!(
        "[{}>{}]",
        "=".repeat(filled),
        " ".repeat(BAR_WIDTH - filled)
    )
}

/// `3 tasks: no suitable node (...)`, for the most common errors.
fn error_summary<'a>(tasks: impl Iterator<Item = &'a Task>) -> Vec<ProgressLine> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for task in tasks {
        let err = task.status.as_ref().map_or("", |s| first_line(&s.err));
        if !err.is_empty() {
            *counts.entry(ellipsize(err, ERROR_CHARS_MAX)).or_default() += 1;
        }
    }
    let mut by_count: Vec<(String, usize)> = counts.into_iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    by_count
        .into_iter()
        .take(ERROR_SUMMARIES_MAX)
        .map(|(err, count)| {
            let tasks = if count == 1 { "task" } else { "tasks" };
            ProgressLine::new(&format!("error {err}"), format!("{count} {tasks}: {err}"))
        })
        .collect()
}

#[cfg(test)]
mod tests;
