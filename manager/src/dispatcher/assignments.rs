//! `Dispatcher.Assignments`: each node's stream of the tasks it runs.
//!
//! One store watcher per manager (the fan-out, [`fan_out_loop`]) turns task
//! events into per-node changes with a [`Router`] and pushes them into one
//! bounded queue per connected node ([`AssignmentsHub`]). Each stream first
//! sends a COMPLETE set read from the store, then INCREMENTAL batches of the
//! changes in its queue ([`PendingBatch`]).
//!
//! What a node is shown: its tasks whose status reached ASSIGNED (the
//! scheduler placed them), as whole `Task` objects. A task is sent again only
//! when something other than its status and meta changed (desired state,
//! spec, …). Status changes are **not** echoed: past ASSIGNED the agent
//! itself writes the status, so it already knows it; the only other status
//! writer is ORPHANED for a node that is gone. (The one exception: a task's
//! first change after a new term started is sent whatever it is, since the
//! new fan-out does not know what the node was shown.) A task is listed in
//! `removed_task_ids` when it is deleted or stops being the node's (moved to
//! another node, or reset below ASSIGNED).
//!
//! Every message also carries the secrets, configs and registry
//! credentials its node's tasks need (`inputs.rs`).
//!
//! Invariants:
//! - No change is ever dropped silently. A node whose queue is full has its
//!   stream ended (it reconnects and gets a fresh COMPLETE); a watch that
//!   lags or is compacted ends every stream; so does losing the leadership.
//! - A stream never goes back in time: it skips queued changes at or below
//!   the store version its COMPLETE set was read at. Registering the queue
//!   before reading that set means every later change reaches the queue.
//! - A node has at most one stream: a new one replaces (and ends) the old;
//!   deleting the node ends it.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use openraft::async_runtime::WatchReceiver;
use prost::Message;
use rswarm_proto::object::Kind;
use rswarm_proto::{ActionKind, AssignmentsMessage, AssignmentsType, StoreEvent, Task, TaskState};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::{Instrument, debug, info, info_span, warn};

use super::inputs::NodeInputs;
use crate::leader::redirect;
use crate::limits::{
    ASSIGNMENT_STREAMS_MAX, ASSIGNMENTS_BATCH_BYTES_MAX, ASSIGNMENTS_BATCH_CHANGES_MAX,
    ASSIGNMENTS_BATCH_DELAY_MAX, ASSIGNMENTS_BATCH_GATHER, ASSIGNMENTS_BATCH_QUIET,
    ASSIGNMENTS_NODE_QUEUE_MAX, DISPATCHER_LEADERSHIP_CHECK_PERIOD, LEADER_WAIT_MAX,
};
use crate::manager::ManagerContext;
use crate::store::{StoreError, StoreState};

/// The response stream of `Dispatcher.Assignments`.
pub type AssignmentsStream =
    Pin<Box<dyn futures::Stream<Item = Result<AssignmentsMessage, Status>> + Send>>;

/// One change for one node.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A task the node must run (or stop, per its desired state): new, or
    /// changed in something the node needs.
    Upsert(Box<Task>),
    /// A task the node must stop and forget.
    Remove(String),
}

impl Change {
    fn task_id(&self) -> &str {
        match self {
            Change::Upsert(t) => t.meta.as_ref().map_or("", |m| m.id.as_str()),
            Change::Remove(id) => id,
        }
    }
}

/// A change and the store version it happened at.
#[derive(Debug, Clone, PartialEq)]
pub struct Routed {
    /// Store version of the event.
    pub version: u64,
    /// What changed.
    pub change: Change,
}

// ---------------------------------------------------------------------------
// Router: which node must hear about a store event (pure).

/// The ID of the node `event` deletes, if it deletes one: a removed node's
/// stream ends (its certificate is refused from then on).
fn deleted_node(event: &StoreEvent) -> Option<&str> {
    match event.object.as_ref().and_then(|o| o.kind.as_ref()) {
        Some(Kind::Node(node)) if event.kind == ActionKind::Delete as i32 => {
            node.meta.as_ref().map(|m| m.id.as_str())
        }
        _ => None,
    }
}

/// Whether a node is shown `task`: placed on a node and at least ASSIGNED.
pub fn is_assigned(task: &Task) -> bool {
    let state = task.status.as_ref().map_or(0, |s| s.state);
    !task.node_id.is_empty() && state >= TaskState::Assigned as i32
}

/// A digest of everything a node needs from a task: all of it except its
/// meta (version, timestamps) and status (which the node writes itself).
/// The encoding is deterministic (maps are `BTreeMap`s), so equal digests
/// mean nothing the node needs changed.
fn node_view_digest(task: &Task) -> u64 {
    let mut view = task.clone();
    view.meta = None;
    view.status = None;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    view.encode_to_vec().hash(&mut hasher);
    hasher.finish()
}

/// What a node was shown of one task.
#[derive(Debug, Clone)]
struct Shown {
    node_id: Arc<str>,
    /// `None` for tasks known from the snapshot a term started with: their
    /// next change is sent whatever it is (at most one redundant message per
    /// task), which keeps the store's read lock short at the start of a term.
    digest: Option<u64>,
}

/// Decides, event by event, which node hears about which task change. It
/// remembers which tasks each node was shown (and a digest of what), so it
/// can skip status-only updates and tell a node when a task stops being its.
#[derive(Debug, Default)]
pub struct Router {
    shown: HashMap<String, Shown>,
    /// Interned node IDs: 1,000 nodes × 100 tasks share 1,000 strings.
    node_ids: HashMap<String, Arc<str>>,
}

impl Router {
    /// A router that knows which node is shown each task in `s` (not yet
    /// what of it, so each task's next change is sent). Cheap: it runs under the store's
    /// read lock, which the Raft state machine waits for.
    pub fn from_state(s: &StoreState) -> Self {
        let mut router = Router::default();
        for task in s.tasks().filter(|t| is_assigned(t)) {
            let id = task.meta.as_ref().map_or("", |m| m.id.as_str());
            let shown = Shown {
                node_id: router.intern(&task.node_id),
                digest: None,
            };
            router.shown.insert(id.to_string(), shown);
        }
        router
    }

    /// How many tasks nodes are shown.
    pub fn len(&self) -> usize {
        self.shown.len()
    }

    /// Whether no node is shown any task.
    pub fn is_empty(&self) -> bool {
        self.shown.is_empty()
    }

    fn intern(&mut self, node_id: &str) -> Arc<str> {
        if let Some(id) = self.node_ids.get(node_id) {
            return id.clone();
        }
        let id: Arc<str> = Arc::from(node_id);
        self.node_ids.insert(node_id.to_string(), id.clone());
        id
    }

    /// The (node, change) pairs one store event causes; non-task events
    /// cause none.
    pub fn route(&mut self, event: &StoreEvent) -> Vec<(Arc<str>, Change)> {
        let Some(Kind::Task(task)) = event.object.as_ref().and_then(|o| o.kind.as_ref()) else {
            return Vec::new();
        };
        let id = task.meta.as_ref().map_or("", |m| m.id.as_str());
        if id.is_empty() {
            return Vec::new();
        }
        let deleted = event.kind == ActionKind::Delete as i32;
        if deleted || !is_assigned(task) {
            return self
                .shown
                .remove(id)
                .map(|old| vec![(old.node_id, Change::Remove(id.to_string()))])
                .unwrap_or_default();
        }
        let digest = node_view_digest(task);
        let mut out = Vec::new();
        match self.shown.get(id) {
            Some(old) if *old.node_id == *task.node_id && old.digest == Some(digest) => {
                return out;
            }
            Some(old) if *old.node_id != *task.node_id => {
                out.push((old.node_id.clone(), Change::Remove(id.to_string())));
            }
            _ => {}
        }
        let node_id = self.intern(&task.node_id);
        out.push((node_id.clone(), Change::Upsert(Box::new(task.clone()))));
        let digest = Some(digest);
        self.shown.insert(id.to_string(), Shown { node_id, digest });
        out
    }
}

// ---------------------------------------------------------------------------
// PendingBatch: one stream's changes waiting to be sent (pure).

/// The changes a stream collected since its last message: the last change
/// per task wins, so a task created and changed within one batch is sent
/// once. A batch opened on a quiet stream goes out after the short gather
/// window (a lone change is not held back); one opened while messages flow
/// waits for a quiet period, so bursts coalesce.
#[derive(Debug, Default)]
pub struct PendingBatch {
    changes: BTreeMap<String, (Change, usize)>,
    bytes: usize,
    first_at: Option<Instant>,
    last_at: Option<Instant>,
    /// When the last message went out.
    sent_at: Option<Instant>,
    /// The batch opened on a stream quiet for `ASSIGNMENTS_BATCH_QUIET`.
    eager: bool,
}

impl PendingBatch {
    /// Adds a change that arrived at `now`.
    pub fn add(&mut self, change: Change, now: Instant) {
        let size = match &change {
            Change::Upsert(t) => t.encoded_len(),
            Change::Remove(id) => id.len(),
        };
        self.bytes += size;
        if self.changes.is_empty() {
            self.eager = self
                .sent_at
                .is_none_or(|sent| now.saturating_duration_since(sent) >= ASSIGNMENTS_BATCH_QUIET);
        }
        let key = change.task_id().to_string();
        if let Some((_, old_size)) = self.changes.insert(key, (change, size)) {
            self.bytes -= old_size;
        }
        self.first_at.get_or_insert(now);
        self.last_at = Some(now);
    }

    /// How many tasks have a change waiting.
    pub fn len(&self) -> usize {
        self.changes.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Whether the batch must go out now, whatever the time.
    pub fn is_full(&self) -> bool {
        self.changes.len() >= ASSIGNMENTS_BATCH_CHANGES_MAX
            || self.bytes >= ASSIGNMENTS_BATCH_BYTES_MAX
    }

    /// When the batch must go out: after the gather window when it opened
    /// on a quiet stream; else after a quiet period, or once its oldest
    /// change waited long enough. `None` when empty.
    pub fn deadline(&self) -> Option<Instant> {
        let first = self.first_at?;
        if self.eager {
            return Some(first + ASSIGNMENTS_BATCH_GATHER);
        }
        let quiet = self.last_at? + ASSIGNMENTS_BATCH_QUIET;
        Some(quiet.min(first + ASSIGNMENTS_BATCH_DELAY_MAX))
    }

    /// The INCREMENTAL message of everything waiting, sent at `now`; the
    /// batch is empty after.
    pub fn take(&mut self, now: Instant) -> AssignmentsMessage {
        let mut message = AssignmentsMessage {
            r#type: AssignmentsType::Incremental as i32,
            ..AssignmentsMessage::default()
        };
        for (_, (change, _)) in std::mem::take(&mut self.changes) {
            match change {
                Change::Upsert(t) => message.tasks.push(*t),
                Change::Remove(id) => message.removed_task_ids.push(id),
            }
        }
        self.bytes = 0;
        self.first_at = None;
        self.last_at = None;
        self.sent_at = Some(now);
        self.eager = false;
        message
    }
}

// ---------------------------------------------------------------------------
// AssignmentsHub: the per-node queues.

/// One connected node's queue.
struct NodeQueue {
    /// Tells this stream apart from the node's earlier and later ones.
    session: u64,
    tx: mpsc::Sender<Routed>,
}

#[derive(Default)]
struct HubState {
    /// Whether the fan-out is running (this manager leads and watches).
    active: bool,
    next_session: u64,
    nodes: HashMap<String, NodeQueue>,
}

/// The connected nodes' queues, fed by the fan-out. See the module doc.
pub struct AssignmentsHub {
    state: Mutex<HubState>,
    /// Mirrors `HubState::active`, for calls waiting for the fan-out.
    active: watch::Sender<bool>,
    streams: Arc<Semaphore>,
}

impl Default for AssignmentsHub {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            active: watch::Sender::new(false),
            streams: Arc::new(Semaphore::new(ASSIGNMENT_STREAMS_MAX)),
        }
    }
}

/// Why a change could not be queued for a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Queued, or the node has no stream (it gets a COMPLETE set when it
    /// connects).
    Done,
    /// The node's queue was full: its stream was ended.
    Overflowed,
}

impl AssignmentsHub {
    fn lock(&self) -> MutexGuard<'_, HubState> {
        // Every critical section is a few map operations that cannot panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens the hub: the fan-out runs and will deliver every later change.
    pub fn activate(&self) {
        self.lock().active = true;
        self.active.send_replace(true);
    }

    /// Closes the hub and ends every stream (their queues are dropped).
    pub fn deactivate(&self) {
        let ended = {
            let mut state = self.lock();
            state.active = false;
            std::mem::take(&mut state.nodes)
        };
        self.active.send_replace(false);
        if !ended.is_empty() {
            info!(streams = ended.len(), "ended every assignments stream");
        }
    }

    /// How many nodes have a stream.
    pub fn connected(&self) -> usize {
        self.lock().nodes.len()
    }

    /// Queues `routed` for `node_id`. A full queue ends the node's stream.
    pub fn deliver(&self, node_id: &str, routed: Routed) -> Delivery {
        let mut state = self.lock();
        let Some(queue) = state.nodes.get(node_id) else {
            return Delivery::Done;
        };
        match queue.tx.try_send(routed) {
            Ok(()) => Delivery::Done,
            Err(mpsc::error::TrySendError::Closed(_)) => {
                state.nodes.remove(node_id);
                Delivery::Done
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                state.nodes.remove(node_id);
                Delivery::Overflowed
            }
        }
    }

    /// Waits (up to `LEADER_WAIT_MAX`) for the fan-out, then gives `node_id`
    /// a fresh queue, ending its previous stream if any.
    async fn register(&self, node_id: &str) -> Result<Registration, Status> {
        let permit = self.streams.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "this manager serves {ASSIGNMENT_STREAMS_MAX} assignment streams already: retry later"
            ))
        })?;
        let mut active = self.active.subscribe();
        let ready = tokio::time::timeout(LEADER_WAIT_MAX, active.wait_for(|a| *a)).await;
        if !matches!(ready, Ok(Ok(_))) {
            return Err(Status::unavailable(
                "the dispatcher is not ready (leadership is changing): retry",
            ));
        }
        let (tx, rx) = mpsc::channel(ASSIGNMENTS_NODE_QUEUE_MAX);
        let mut state = self.lock();
        if !state.active {
            return Err(Status::unavailable(
                "the dispatcher stopped (leadership changed): retry",
            ));
        }
        state.next_session += 1;
        let session = state.next_session;
        if state
            .nodes
            .insert(node_id.to_string(), NodeQueue { session, tx })
            .is_some()
        {
            debug!(node = %node_id, "a new assignments stream replaces the node's old one");
        }
        Ok(Registration {
            node_id: node_id.to_string(),
            session,
            rx,
            _permit: permit,
        })
    }

    /// Ends `node_id`'s stream, if it has one.
    pub fn end(&self, node_id: &str) {
        if self.lock().nodes.remove(node_id).is_some() {
            info!(node = %node_id, "the node was removed: its assignments stream ended");
        }
    }

    /// Forgets `node_id`'s queue if it still belongs to `session`; says
    /// whether it did (false: a newer stream of the node replaced it).
    fn unregister(&self, node_id: &str, session: u64) -> bool {
        let mut state = self.lock();
        let current = state
            .nodes
            .get(node_id)
            .is_some_and(|q| q.session == session);
        if current {
            state.nodes.remove(node_id);
        }
        current
    }
}

/// A node's place in the hub; holds a stream slot.
struct Registration {
    node_id: String,
    session: u64,
    rx: mpsc::Receiver<Routed>,
    _permit: OwnedSemaphorePermit,
}

// ---------------------------------------------------------------------------
// The stream.

/// The COMPLETE set of `node_id` in `s`: every task of the node the
/// scheduler placed, whatever its desired state.
pub fn complete_set(s: &StoreState, node_id: &str) -> AssignmentsMessage {
    AssignmentsMessage {
        r#type: AssignmentsType::Complete as i32,
        tasks: s
            .tasks_on_node(node_id)
            .filter(|t| is_assigned(t))
            .cloned()
            .collect(),
        ..AssignmentsMessage::default()
    }
}

/// Opens `node_id`'s stream: registers its queue, then reads its COMPLETE
/// set (in this order: see the module doc).
pub async fn open(ctx: Arc<ManagerContext>, node_id: String) -> Result<AssignmentsStream, Status> {
    let registration = ctx.dispatcher.assignments.register(&node_id).await?;
    let (version, complete) = ctx.store.read(|s| (s.version(), complete_set(s, &node_id)));
    debug!(node = %node_id, tasks = complete.tasks.len(), version, "assignments stream opened");
    let stream = NodeStream {
        span: info_span!("assignments", node = %node_id),
        ctx,
        registration,
        after_version: version,
        complete: Some(complete),
        batch: PendingBatch::default(),
        inputs: NodeInputs::default(),
        ended: false,
    };
    let stream = futures::stream::unfold(stream, |mut s| async move {
        let span = s.span.clone();
        let item = s.next_message().instrument(span).await?;
        Some((item, s))
    });
    Ok(Box::pin(stream))
}

/// One node's stream: its COMPLETE set, then batches of its queue.
struct NodeStream {
    span: tracing::Span,
    ctx: Arc<ManagerContext>,
    registration: Registration,
    /// Version of the COMPLETE set: queued changes at or below it are in it.
    after_version: u64,
    complete: Option<AssignmentsMessage>,
    batch: PendingBatch,
    /// What the node was sent besides tasks.
    inputs: NodeInputs,
    ended: bool,
}

impl Drop for NodeStream {
    fn drop(&mut self) {
        let r = &self.registration;
        let last_stream = self
            .ctx
            .dispatcher
            .assignments
            .unregister(&r.node_id, r.session);
        if last_stream && self.ctx.raft.is_leader() {
            self.ctx.liveness.disconnected(&r.node_id);
        }
    }
}

impl NodeStream {
    /// The next message, or the status that ends the stream, or `None`.
    async fn next_message(&mut self) -> Option<Result<AssignmentsMessage, Status>> {
        if let Some(complete) = self.complete.take() {
            return Some(Ok(self.with_inputs(complete)));
        }
        if self.ended {
            return None;
        }
        let mut received = Vec::with_capacity(ASSIGNMENTS_BATCH_CHANGES_MAX);
        loop {
            let now = Instant::now();
            let due = self.batch.deadline().filter(|d| *d <= now).is_some();
            if self.batch.is_full() || due {
                let batch = self.batch.take(now);
                return Some(Ok(self.with_inputs(batch)));
            }
            let deadline = self.batch.deadline();
            let room = ASSIGNMENTS_BATCH_CHANGES_MAX - self.batch.len();
            tokio::select! {
                n = self.registration.rx.recv_many(&mut received, room) => {
                    if n == 0 {
                        self.ended = true;
                        return Some(Err(self.end_status()));
                    }
                    let now = Instant::now();
                    for routed in received.drain(..) {
                        if routed.version > self.after_version {
                            self.batch.add(routed.change, now);
                        }
                    }
                }
                _ = sleep_until_some(deadline) => {}
            }
        }
    }

    /// `message` with the secrets, configs and credentials the node needs.
    fn with_inputs(&mut self, mut message: AssignmentsMessage) -> AssignmentsMessage {
        let node_id = &self.registration.node_id;
        let key = self.ctx.secrets_key.get();
        let inputs = &mut self.inputs;
        self.ctx
            .store
            .read(|s| inputs.attach(s, key, node_id, &mut message));
        message
    }

    /// Why the queue was closed, as the status the node reconnects on.
    fn end_status(&self) -> Status {
        if !self.ctx.raft.is_leader()
            && let Some((_, leader)) = self.ctx.raft.leader()
        {
            return redirect(&leader);
        }
        Status::unavailable(
            "the assignments stream was reset (the node fell behind or leadership changed): \
             reconnect for a complete set",
        )
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

// ---------------------------------------------------------------------------
// The fan-out loop.

/// The current term, if this manager leads.
fn leader_term(ctx: &ManagerContext) -> Option<u64> {
    let metrics = ctx.raft.raft().metrics();
    let m = metrics.borrow_watched();
    (m.state == openraft::ServerState::Leader).then_some(m.current_term)
}

/// Why one run of the fan-out ended.
#[derive(Debug)]
enum FanOutEnd {
    Cancelled,
    LostLeadership,
    Watch(StoreError),
    StoreClosed,
}

/// Runs the fan-out while this manager leads: one store watcher feeding
/// every node's queue. Each term starts from a fresh snapshot; leaving the
/// term (or a lagging watch) ends every stream.
pub async fn fan_out_loop(ctx: Arc<ManagerContext>, cancel: CancellationToken) {
    loop {
        let term = loop {
            if let Some(term) = leader_term(&ctx) {
                break term;
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(DISPATCHER_LEADERSHIP_CHECK_PERIOD) => {}
            }
        };
        let end = fan_out(&ctx, term, &cancel).await;
        ctx.dispatcher.assignments.deactivate();
        match end {
            FanOutEnd::Cancelled | FanOutEnd::StoreClosed => return,
            FanOutEnd::LostLeadership => info!(term, "assignments fan-out stopped: not leading"),
            FanOutEnd::Watch(e) => {
                warn!("assignments fan-out restarts, every node reconnects: {e}")
            }
        }
    }
}

async fn fan_out(ctx: &ManagerContext, term: u64, cancel: &CancellationToken) -> FanOutEnd {
    // Watch first, then read: a change between the two is in both, and the
    // version check below drops the copy.
    let mut watcher = match ctx.store.watch(0) {
        Ok(w) => w,
        Err(e) => return FanOutEnd::Watch(e),
    };
    let (version, mut router) = ctx.store.read(|s| (s.version(), Router::from_state(s)));
    let hub = &ctx.dispatcher.assignments;
    hub.activate();
    info!(term, tasks = router.len(), "assignments fan-out started");
    let mut check = tokio::time::interval(DISPATCHER_LEADERSHIP_CHECK_PERIOD);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return FanOutEnd::Cancelled,
            _ = check.tick() => {
                if leader_term(ctx) != Some(term) {
                    return FanOutEnd::LostLeadership;
                }
            }
            event = watcher.next() => match event {
                None => return FanOutEnd::StoreClosed,
                Some(Err(e)) => return FanOutEnd::Watch(e),
                Some(Ok(event)) if event.version <= version => {}
                Some(Ok(event)) => fan_out_event(hub, &mut router, &event),
            },
        }
    }
}

fn fan_out_event(hub: &AssignmentsHub, router: &mut Router, event: &StoreEvent) {
    if let Some(node_id) = deleted_node(event) {
        hub.end(node_id);
        return;
    }
    for (node_id, change) in router.route(event) {
        let routed = Routed {
            version: event.version,
            change,
        };
        if hub.deliver(&node_id, routed) == Delivery::Overflowed {
            warn!(
                node = %node_id,
                queue = ASSIGNMENTS_NODE_QUEUE_MAX,
                "node fell behind its assignments: stream ended, it reconnects for a complete set"
            );
        }
    }
}

#[cfg(test)]
#[path = "assignments_tests.rs"]
mod tests;
