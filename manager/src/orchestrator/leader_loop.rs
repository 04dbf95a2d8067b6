//! The orchestrators' loop: runs on every manager, acts only while this
//! manager leads. On becoming leader it reconciles every service, then
//! follows the store's watch: changes mark services (and nodes) dirty, a
//! short debounce gathers a burst, and one pass plans every dirty service
//! ([`reconcile_service`]) and proposes the changes in batches. Timers
//! (restart delays, update delays, monitor windows) mark services dirty when
//! they are due.
//!
//! **Invariants:** nothing is written unless this manager leads (proposals
//! fail otherwise, and a lost leadership drops all memory); a watch that
//! ends (lagged, compacted) is replaced and followed by a full
//! reconciliation, so no change is missed; the work of an event is bounded
//! by the tasks of the services it touches, never by all tasks.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use rswarm_proto::object::Kind;
use rswarm_proto::{ActionKind, ClusterSpec, Proposal, StoreEvent, Task, TaskState};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::limits::{
    DEBOUNCE_MAX, DEBOUNCE_QUIET, FAILED_PASS_BACKOFF, LEADERSHIP_POLL, PASS_ACTIONS_MAX,
    PROPOSAL_ACTIONS_MAX, PROPOSALS_IN_FLIGHT_MAX, UPDATERS_MAX,
};
use super::nodes::is_usable;
use super::plan::{Chunk, ServiceChanges, into_chunks, split_service_writes};
use super::rebalance::auto_rebalance;
use super::reconcile::{Ctx, ServiceMemory, Signals, reconcile_service};
use super::task::{has_ended, is_global, is_runnable, service_id};
use super::work::Changes;
use crate::limits::TASK_HISTORY_DEFAULT;
use crate::manager::{action, now_ms};
use crate::raft::node::{RaftNode, RaftNodeError};
use crate::store::{Store, StoreError, StoreState, Watcher};

/// Runs the orchestrators until `cancel` fires.
pub async fn run(raft: RaftNode, cancel: CancellationToken) {
    loop {
        while !raft.is_leader() {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(LEADERSHIP_POLL) => {}
            }
        }
        info!("orchestrators: leading, reconciling every service");
        let mut term = Term::new(raft.clone());
        match term.lead(&cancel).await {
            TermEnd::Cancelled => return,
            TermEnd::LostLeadership => info!("orchestrators: no longer leading"),
        }
    }
}

/// Why a term ended.
enum TermEnd {
    Cancelled,
    LostLeadership,
}

/// A write failed because this manager no longer leads.
struct NotLeading;

/// What is waiting to be looked at.
#[derive(Debug, Default)]
struct Dirty {
    /// Reconcile everything (leader start, lost watch, cluster change).
    all: bool,
    services: BTreeSet<String>,
    nodes: BTreeSet<String>,
    /// A node became usable: bump the requests of auto-rebalancing services.
    node_joined: bool,
}

/// Pending wake-ups, one per service.
#[derive(Debug, Default)]
struct Timers {
    by_service: HashMap<String, i64>,
    queue: BTreeSet<(i64, String)>,
}

impl Timers {
    fn set(&mut self, service: &str, at_ms: Option<i64>) {
        if let Some(old) = self.by_service.remove(service) {
            self.queue.remove(&(old, service.to_owned()));
        }
        if let Some(at) = at_ms {
            self.by_service.insert(service.to_owned(), at);
            self.queue.insert((at, service.to_owned()));
        }
    }

    fn next_ms(&self) -> Option<i64> {
        self.queue.first().map(|(at, _)| *at)
    }

    fn take_due(&mut self, now_ms: i64) -> Vec<String> {
        let mut due = Vec::new();
        while let Some((at, _)) = self.queue.first() {
            if *at > now_ms {
                break;
            }
            if let Some((_, service)) = self.queue.pop_first() {
                self.by_service.remove(&service);
                due.push(service);
            }
        }
        due
    }
}

/// One leadership term: the memory that dies with it.
struct Term {
    raft: RaftNode,
    store: Store,
    memory: HashMap<String, ServiceMemory>,
    dirty: Dirty,
    /// Services whose every task event matters (update, move, held task).
    attentive: HashSet<String>,
    timers: Timers,
    /// Last seen "ready and active" of each node, to spot joins and returns.
    node_usable: HashMap<String, bool>,
    /// The watch ended; make a new one before the next pass.
    watch_lost: bool,
    /// The cluster settings the last full pass used.
    settings: Option<ClusterSettings>,
}

/// The cluster settings the orchestrators read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ClusterSettings {
    task_history_limit: u32,
    auto_rebalance: bool,
}

impl ClusterSettings {
    fn of(spec: Option<&ClusterSpec>) -> Self {
        Self {
            task_history_limit: spec.map_or(TASK_HISTORY_DEFAULT, |s| s.task_history_limit),
            auto_rebalance: spec.is_some_and(|s| s.auto_rebalance),
        }
    }
}

/// Old tasks kept per slot: the cluster setting (5 when there is no
/// cluster object yet).
fn history_limit_of(s: &StoreState) -> usize {
    ClusterSettings::of(s.cluster().and_then(|c| c.spec.as_ref())).task_history_limit as usize
}

impl Term {
    fn new(raft: RaftNode) -> Self {
        let store = raft.store().clone();
        Self {
            raft,
            store,
            memory: HashMap::new(),
            dirty: Dirty {
                all: true,
                ..Dirty::default()
            },
            attentive: HashSet::new(),
            timers: Timers::default(),
            node_usable: HashMap::new(),
            watch_lost: false,
            settings: None,
        }
    }

    async fn lead(&mut self, cancel: &CancellationToken) -> TermEnd {
        let Ok(mut watcher) = self.store.watch(0) else {
            return TermEnd::LostLeadership;
        };
        // Everything committed before this term must be in the store first.
        if let Err(e) = self.raft.linearizable_read().await {
            debug!("orchestrators: cannot read as leader yet: {e}");
            return TermEnd::LostLeadership;
        }
        self.remember_nodes();
        loop {
            if !self.raft.is_leader() {
                return TermEnd::LostLeadership;
            }
            if std::mem::take(&mut self.watch_lost) {
                let Ok(fresh) = self.store.watch(0) else {
                    return TermEnd::LostLeadership;
                };
                watcher = fresh;
            }
            let more = match self.pass().await {
                Ok(more) => more,
                Err(NotLeading) => return TermEnd::LostLeadership,
            };
            let wait = if more {
                Duration::ZERO
            } else {
                self.until_next_timer()
            };
            tokio::select! {
                _ = cancel.cancelled() => return TermEnd::Cancelled,
                event = watcher.next() => {
                    self.take(event);
                    self.debounce(&mut watcher).await;
                }
                _ = tokio::time::sleep(wait) => self.drain_ready(&mut watcher),
            }
            for service in self.timers.take_due(now_ms()) {
                self.dirty.services.insert(service);
            }
        }
    }

    fn until_next_timer(&self) -> Duration {
        let Some(at) = self.timers.next_ms() else {
            return LEADERSHIP_POLL;
        };
        let ms = at.saturating_sub(now_ms()).max(0) as u64;
        Duration::from_millis(ms).min(LEADERSHIP_POLL)
    }

    /// Gathers the rest of a burst of events.
    async fn debounce(&mut self, watcher: &mut Watcher) {
        let deadline = Instant::now() + DEBOUNCE_MAX;
        loop {
            let quiet = DEBOUNCE_QUIET.min(deadline.saturating_duration_since(Instant::now()));
            if quiet.is_zero() {
                return;
            }
            if self.watch_lost {
                return;
            }
            match tokio::time::timeout(quiet, watcher.next()).await {
                Ok(event) => self.take(event),
                Err(_) => return,
            }
        }
    }

    /// Takes the events already waiting, without waiting for more.
    fn drain_ready(&mut self, watcher: &mut Watcher) {
        while !self.watch_lost
            && let Some(event) = watcher.next().now_or_never()
        {
            self.take(event);
        }
    }

    /// Notes one watch event; a watch that ended is replaced before the
    /// next pass, which then reconciles everything.
    fn take(&mut self, event: Option<Result<StoreEvent, StoreError>>) {
        match event {
            Some(Ok(event)) => self.note(&event),
            Some(Err(e)) => {
                warn!("orchestrators: the store watch ended ({e}); reconciling everything");
                self.watch_lost = true;
                self.dirty.all = true;
            }
            None => {
                self.watch_lost = true;
                self.dirty.all = true;
            }
        }
    }

    /// Marks what an event makes dirty. Cheap: no store access.
    fn note(&mut self, event: &StoreEvent) {
        let deleted = event.kind == ActionKind::Delete as i32;
        match event.object.as_ref().and_then(|o| o.kind.as_ref()) {
            Some(Kind::Service(s)) => {
                self.dirty.services.insert(service_id(s).to_owned());
            }
            Some(Kind::Task(t)) if self.task_matters(t, deleted) => {
                self.dirty.services.insert(t.service_id.clone());
            }
            Some(Kind::Node(n)) => {
                let id = n.meta.as_ref().map_or("", |m| m.id.as_str()).to_owned();
                let usable = !deleted && is_usable(n);
                let was = if deleted {
                    self.node_usable.remove(&id)
                } else {
                    self.node_usable.insert(id.clone(), usable)
                };
                if usable && was != Some(true) {
                    self.dirty.node_joined = true;
                }
                self.dirty.nodes.insert(id);
            }
            Some(Kind::Cluster(c)) => {
                // Only the settings the orchestrators read call for a full pass.
                let settings = ClusterSettings::of(c.spec.as_ref());
                if self.settings != Some(settings) {
                    self.settings = Some(settings);
                    self.dirty.all = true;
                }
            }
            _ => {}
        }
    }

    fn task_matters(&self, task: &Task, deleted: bool) -> bool {
        task_matters(task, deleted, self.attentive.contains(&task.service_id))
    }

    /// Starts a term knowing the nodes and cluster settings, so that only
    /// later changes count as joins or setting changes.
    fn remember_nodes(&mut self) {
        let (nodes, settings) = self.store.read(|s| {
            let nodes = s
                .nodes()
                .filter_map(|n| Some((n.meta.as_ref()?.id.clone(), is_usable(n))))
                .collect();
            let settings = ClusterSettings::of(s.cluster().and_then(|c| c.spec.as_ref()));
            (nodes, settings)
        });
        self.node_usable = nodes;
        self.settings = Some(settings);
    }

    /// Plans every dirty service and proposes the changes. Returns whether
    /// work is left over for an immediate next pass.
    async fn pass(&mut self) -> Result<bool, NotLeading> {
        if std::mem::take(&mut self.dirty.node_joined) {
            self.request_auto_rebalance().await?;
        }
        let planning = Instant::now();
        let (plans, more) = self.plan(now_ms());
        let planned = planning.elapsed();
        if plans.is_empty() {
            return Ok(more);
        }
        let actions: usize = plans.iter().map(|(_, c)| c.len()).sum();
        let proposing = Instant::now();
        self.propose(plans).await?;
        debug!(
            actions,
            plan_ms = planned.as_millis() as u64,
            propose_ms = proposing.elapsed().as_millis() as u64,
            "orchestrators: pass"
        );
        Ok(more)
    }

    /// The pure part of a pass: plans each dirty service on a snapshot of
    /// the store (the read lock is taken per service, so the state machine
    /// is never held back by more than one service's planning).
    fn plan(&mut self, now: i64) -> (ServiceChanges, bool) {
        let store = self.store.clone();
        let history_limit = store.read(|s| {
            self.expand_dirty(s);
            history_limit_of(s)
        });
        let mut updaters = self.memory.values().filter(|m| m.is_updating()).count();
        let mut budget = PASS_ACTIONS_MAX;
        let mut plans = Vec::new();
        let mut more = false;
        for id in std::mem::take(&mut self.dirty.services) {
            if budget == 0 {
                self.dirty.services.insert(id);
                more = true;
                continue;
            }
            let mem = self.memory.entry(id.clone()).or_default();
            let was_updating = mem.is_updating();
            let (outcome, gone) = store.read(|s| {
                let ctx = Ctx {
                    state: s,
                    now_ms: now,
                    history_limit,
                    may_start_update: updaters < UPDATERS_MAX,
                };
                let outcome = reconcile_service(&ctx, &id, mem, budget);
                let gone = s.service(&id).is_none() && s.tasks_of_service(&id).next().is_none();
                (outcome, gone)
            });
            match (was_updating, mem.is_updating()) {
                (false, true) => updaters += 1,
                (true, false) => updaters = updaters.saturating_sub(1),
                _ => {}
            }
            budget = budget.saturating_sub(outcome.changes.len());
            if outcome.more {
                self.dirty.services.insert(id.clone());
                more = true;
            }
            self.follow(&id, &outcome.signals, gone);
            if !outcome.changes.is_empty() {
                plans.push((id, outcome.changes));
            }
        }
        (plans, more)
    }

    /// Turns "everything" and dirty nodes into dirty services.
    fn expand_dirty(&mut self, s: &StoreState) {
        if std::mem::take(&mut self.dirty.all) {
            self.dirty.nodes.clear();
            self.dirty
                .services
                .extend(s.services().map(|svc| service_id(svc).to_owned()));
            // Tasks whose service is gone: a full scan, once per term.
            let orphaned: BTreeSet<String> = s
                .tasks()
                .filter(|t| s.service(&t.service_id).is_none())
                .map(|t| t.service_id.clone())
                .collect();
            self.dirty.services.extend(orphaned);
        }
        let nodes = std::mem::take(&mut self.dirty.nodes);
        if nodes.is_empty() {
            return;
        }
        for node in &nodes {
            self.dirty
                .services
                .extend(s.tasks_on_node(node).map(|t| t.service_id.clone()));
        }
        self.dirty.services.extend(
            s.services()
                .filter(|svc| is_global(svc))
                .map(|svc| service_id(svc).to_owned()),
        );
    }

    /// Keeps the attention set, timers and memory in step with a pass.
    fn follow(&mut self, id: &str, signals: &Signals, gone: bool) {
        if signals.attentive {
            self.attentive.insert(id.to_owned());
        } else {
            self.attentive.remove(id);
        }
        self.timers.set(id, signals.wake_at_ms);
        if gone {
            self.memory.remove(id);
            self.attentive.remove(id);
            self.timers.set(id, None);
        }
    }

    /// Bumps `rebalance_requested` of the services that rebalance when a
    /// node joins or returns (tried again next pass if the write fails).
    async fn request_auto_rebalance(&mut self) -> Result<(), NotLeading> {
        let services = self.store.read(auto_rebalance);
        if services.is_empty() {
            return Ok(());
        }
        info!(
            services = services.len(),
            "a node joined or returned: rebalancing"
        );
        for batch in services.chunks(PROPOSAL_ACTIONS_MAX) {
            let proposal = Proposal {
                actions: batch
                    .iter()
                    .map(|s| action(ActionKind::Update, Kind::Service(s.clone())))
                    .collect(),
                timestamp_ms: now_ms(),
            };
            match self.raft.propose(proposal).await {
                Ok(_) => {}
                Err(RaftNodeError::NotLeader { .. }) => return Err(NotLeading),
                Err(e) => {
                    debug!("orchestrators: rebalance request not written, trying again: {e}");
                    self.dirty.node_joined = true;
                }
            }
        }
        Ok(())
    }

    /// Proposes the changes: first every task change, in batches, a few in
    /// flight at once; then the service writes of the services whose task
    /// changes all landed (a service's status never runs ahead of its
    /// tasks). A refused batch (a concurrent change) marks its services
    /// dirty, to be planned again from the new state.
    async fn propose(&mut self, plans: Vec<(String, Changes)>) -> Result<(), NotLeading> {
        let (task_changes, service_writes) = split_service_writes(plans);
        let mut outcome = propose_chunks(&self.raft, into_chunks(task_changes)).await?;
        let writes: Vec<(String, Changes)> = service_writes
            .into_iter()
            .filter(|(id, _)| !outcome.failed.contains(id))
            .collect();
        let second = propose_chunks(&self.raft, into_chunks(writes)).await?;
        outcome.failed.extend(second.failed);
        if !outcome.failed.is_empty() {
            self.dirty.services.extend(outcome.failed);
        }
        if outcome.sick || second.sick {
            tokio::time::sleep(FAILED_PASS_BACKOFF).await;
        }
        Ok(())
    }
}

/// Whether a task event can call for a decision: a runnable task deleted,
/// a task that ended, a held task, or any task of a service under update
/// (`attentive`). The common case — a task moving towards RUNNING in a
/// service nobody updates — does not.
fn task_matters(task: &Task, deleted: bool, attentive: bool) -> bool {
    if deleted {
        return is_runnable(task);
    }
    has_ended(task) || task.desired_state() == TaskState::Ready || attentive
}

/// What became of a set of proposals.
#[derive(Debug, Default)]
struct Proposed {
    /// Services with a refused or lost batch.
    failed: HashSet<String>,
    /// A batch failed for a reason other than a conflict.
    sick: bool,
}

/// Proposes the chunks, [`PROPOSALS_IN_FLIGHT_MAX`] at a time.
async fn propose_chunks(raft: &RaftNode, chunks: Vec<Chunk>) -> Result<Proposed, NotLeading> {
    let mut results = futures::stream::iter(chunks.into_iter().map(|chunk| {
        let raft = raft.clone();
        async move {
            let proposal = Proposal {
                actions: chunk.actions,
                timestamp_ms: now_ms(),
            };
            (chunk.services, raft.propose(proposal).await)
        }
    }))
    .buffered(PROPOSALS_IN_FLIGHT_MAX);
    let mut outcome = Proposed::default();
    while let Some((services, result)) = results.next().await {
        match result {
            Ok(_) => {}
            Err(RaftNodeError::NotLeader { .. }) => return Err(NotLeading),
            Err(RaftNodeError::Rejected(e @ StoreError::Conflict { .. })) => {
                debug!("orchestrators: batch met a concurrent change, planning again: {e}");
                outcome.failed.extend(services);
            }
            Err(RaftNodeError::Rejected(e)) => {
                // Not a race: a plan the store refuses is our bug; say so
                // and slow down rather than propose it in a tight loop.
                warn!("orchestrators: the store refused a batch, planning again: {e}");
                outcome.failed.extend(services);
                outcome.sick = true;
            }
            Err(e) => {
                warn!("orchestrators: batch not written, planning again: {e}");
                outcome.failed.extend(services);
                outcome.sick = true;
            }
        }
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use rswarm_proto::TaskStatus;

    use super::*;

    fn task(desired: TaskState, observed: TaskState) -> Task {
        let mut status = TaskStatus::default();
        status.set_state(observed);
        let mut task = Task {
            status: Some(status),
            ..Task::default()
        };
        task.set_desired_state(desired);
        task
    }

    #[test]
    fn only_events_that_can_call_for_a_decision_matter() {
        use TaskState as S;
        assert!(
            !task_matters(&task(S::Running, S::Assigned), false, false),
            "progress"
        );
        assert!(!task_matters(&task(S::Running, S::Running), false, false));
        assert!(
            task_matters(&task(S::Running, S::Running), false, true),
            "under update"
        );
        assert!(
            task_matters(&task(S::Running, S::Failed), false, false),
            "ended"
        );
        assert!(
            task_matters(&task(S::Shutdown, S::Shutdown), false, false),
            "history"
        );
        assert!(
            task_matters(&task(S::Ready, S::Pending), false, false),
            "held"
        );
        assert!(
            task_matters(&task(S::Running, S::Running), true, false),
            "lost a slot"
        );
        assert!(
            !task_matters(&task(S::Shutdown, S::Shutdown), true, false),
            "reaped"
        );
    }

    #[test]
    fn timers_keep_one_wake_up_per_service_and_hand_out_due_ones() {
        let mut timers = Timers::default();
        timers.set("a", Some(300));
        timers.set("b", Some(100));
        timers.set("a", Some(200));
        assert_eq!(timers.next_ms(), Some(100));
        assert_eq!(timers.take_due(150), vec!["b".to_owned()]);
        assert_eq!(timers.take_due(150), Vec::<String>::new());
        timers.set("a", None);
        assert_eq!(timers.next_ms(), None);
        assert!(timers.by_service.is_empty());
    }
}
