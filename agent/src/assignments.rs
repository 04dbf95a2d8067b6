//! The agent's side of the dispatcher's task protocol, shared by the real
//! worker and the node simulator:
//!
//! - [`ManagerLink`]: which manager to call (the session's leader-first list,
//!   redirects, rotation after failures) and one lazily dialed mutual-TLS
//!   channel per manager, shared by the two clients below.
//! - [`AssignmentsClient`]: keeps the node's `Assignments` stream open on the
//!   leader and hands every message, in order, to the caller's channel.
//!   After every (re)connection the first message is a COMPLETE set: the
//!   caller replaces what it knows with it (tasks not listed are stopped and
//!   forgotten), then applies INCREMENTAL messages on top.
//! - [`StatusReporter`]: a bounded queue of task status updates, coalesced
//!   per task, sent in batches with retries. An update leaves the queue only
//!   once a manager acknowledged it (the manager answers after the Raft
//!   commit), so a leader change loses nothing.
//!
//! Both retry with backoff from `SESSION_BACKOFF_MIN` to
//! `SESSION_BACKOFF_MAX`, follow `rswarm-leader` redirects, and never give
//! up while they run: a node keeps running its tasks when no manager is
//! reachable and catches up when one is.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rswarm_pki::{CredentialsHandle, MANAGER_SERVER_NAME, tls_channel};
use rswarm_proto::dispatcher_client::DispatcherClient;
use rswarm_proto::{
    AssignmentsMessage, AssignmentsRequest, AssignmentsType, TaskStatus, TaskStatusUpdate,
    UpdateTaskStatusRequest,
};
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::limits::{
    ASSIGNMENTS_MESSAGE_SIZE_MAX, ASSIGNMENTS_RECONNECT_SPREAD, CALL_TIMEOUT, REDIRECTS_MAX,
    SESSION_BACKOFF_MAX, SESSION_BACKOFF_MIN, STATUS_BATCH_MAX, STATUS_QUEUE_TASKS_MAX,
};
use crate::session::AgentStatus;

/// Metadata key a follower puts the leader's address under.
const LEADER_KEY: &str = "rswarm-leader";

// ---------------------------------------------------------------------------
// ManagerLink

/// Which manager to call next, and the channels to them. Cheap to clone;
/// clones share everything.
#[derive(Clone)]
pub struct ManagerLink {
    inner: Arc<LinkInner>,
}

struct LinkInner {
    creds: CredentialsHandle,
    /// The session's view: managers, leader first.
    managers: watch::Receiver<AgentStatus>,
    state: Mutex<LinkState>,
}

#[derive(Default)]
struct LinkState {
    /// The leader a manager redirected us to, tried first.
    leader_hint: Option<String>,
    /// Failures in a row: the next call tries the manager this far down the list.
    failures: usize,
    channels: HashMap<String, Channel>,
    /// The certificate the channels present; a renewal rebuilds them.
    cert_pem: String,
}

impl ManagerLink {
    /// A link for the node holding `creds`, following the manager list of
    /// its session (`Agent::status()`).
    pub fn new(creds: CredentialsHandle, managers: watch::Receiver<AgentStatus>) -> Self {
        Self {
            inner: Arc::new(LinkInner {
                creds,
                managers,
                state: Mutex::new(LinkState::default()),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, LinkState> {
        // Critical sections are map operations that cannot panic.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The session's current leader (first of its list).
    fn session_leader(&self) -> Option<String> {
        self.inner.managers.borrow().managers.first().cloned()
    }

    /// The manager to call now: a redirect's target, else the session's list
    /// starting from its leader and moving down one entry per failure.
    fn target(&self) -> Option<String> {
        let state = self.lock();
        if let Some(hint) = &state.leader_hint {
            return Some(hint.clone());
        }
        let status = self.inner.managers.borrow();
        let managers = &status.managers;
        if managers.is_empty() {
            return None;
        }
        Some(managers[state.failures % managers.len()].clone())
    }

    /// A channel to `addr`, dialed on first use.
    fn channel(&self, addr: &str) -> Result<Channel, String> {
        let cert_pem = self.inner.creds.current().cert_pem;
        let mut state = self.lock();
        if state.cert_pem != cert_pem {
            // New connections must present the renewed certificate.
            state.channels.clear();
            state.cert_pem = cert_pem;
        }
        if let Some(channel) = state.channels.get(addr) {
            return Ok(channel.clone());
        }
        let tls = rswarm_pki::client_config(&self.inner.creds).map_err(|e| e.to_string())?;
        let channel = tls_channel(addr, tls, MANAGER_SERVER_NAME).map_err(|e| e.to_string())?;
        state.channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    /// A client for `addr`, accepting messages up to the assignments limit.
    fn client(&self, addr: &str) -> Result<DispatcherClient<Channel>, String> {
        Ok(DispatcherClient::new(self.channel(addr)?)
            .max_decoding_message_size(ASSIGNMENTS_MESSAGE_SIZE_MAX))
    }

    fn redirected(&self, leader: &str) {
        self.lock().leader_hint = Some(leader.to_string());
    }

    fn failed(&self, addr: &str) {
        let mut state = self.lock();
        if state.leader_hint.as_deref() == Some(addr) {
            state.leader_hint = None;
        }
        state.failures = state.failures.wrapping_add(1);
        // A broken connection is re-dialed next time.
        state.channels.remove(addr);
    }

    fn succeeded(&self) {
        self.lock().failures = 0;
    }
}

/// What to do after a failed call.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    /// Call the leader at this address.
    Redirect(String),
    /// Try again later (maybe on another manager).
    Retry(String),
    /// The manager refused the request itself: sending it again cannot help.
    Refused(String),
}

fn classify(addr: &str, status: &Status) -> Failure {
    let leader = status
        .metadata()
        .get(LEADER_KEY)
        .and_then(|v| v.to_str().ok())
        .filter(|leader| *leader != addr);
    match (status.code(), leader) {
        (Code::Unavailable, Some(leader)) => Failure::Redirect(leader.to_string()),
        (Code::PermissionDenied | Code::InvalidArgument, _) => {
            Failure::Refused(format!("{addr}: {}", status.message()))
        }
        _ => Failure::Retry(format!("{addr}: {}", status.message())),
    }
}

/// Exponential backoff between `SESSION_BACKOFF_MIN` and `SESSION_BACKOFF_MAX`.
#[derive(Debug)]
struct Backoff {
    next: Duration,
    redirects: u32,
}

impl Backoff {
    fn new() -> Self {
        Self {
            next: SESSION_BACKOFF_MIN,
            redirects: 0,
        }
    }

    fn reset(&mut self) {
        *self = Self::new();
    }

    /// The wait before the next attempt after a failure.
    fn failure(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(SESSION_BACKOFF_MAX);
        self.redirects = 0;
        wait
    }

    /// The wait before following a redirect: none, unless redirects go round
    /// in circles (leadership is moving), then backoff.
    fn redirect(&mut self) -> Duration {
        self.redirects += 1;
        if self.redirects <= REDIRECTS_MAX {
            Duration::ZERO
        } else {
            let wait = self.next;
            self.next = (self.next * 2).min(SESSION_BACKOFF_MAX);
            wait
        }
    }
}

// ---------------------------------------------------------------------------
// AssignmentsClient

/// Keeps the node's `Assignments` stream open; see the module doc.
pub struct AssignmentsClient {
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl AssignmentsClient {
    /// Starts streaming. Every message goes to `tx` in order (the client
    /// waits while `tx` is full); the first after each (re)connection is a
    /// COMPLETE set. Stops when `tx` is closed or [`Self::stop`] is called.
    pub fn start(link: ManagerLink, tx: mpsc::Sender<AssignmentsMessage>) -> Self {
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let span = info_span!("assignments");
        tasks.spawn(stream_loop(link, tx, cancel.clone()).instrument(span));
        tasks.close();
        Self { cancel, tasks }
    }

    /// Stops streaming and waits for the client to finish.
    pub async fn stop(&self) {
        self.cancel.cancel();
        self.tasks.wait().await;
    }
}

/// How one stream ended.
enum StreamEnd {
    /// The caller is gone: stop.
    Closed,
    /// Reconnect after this long.
    Reconnect(Duration),
}

async fn stream_loop(
    link: ManagerLink,
    tx: mpsc::Sender<AssignmentsMessage>,
    cancel: CancellationToken,
) {
    let mut backoff = Backoff::new();
    loop {
        let wait = match link.target() {
            None => backoff.failure(),
            Some(addr) => {
                let end = tokio::select! {
                    _ = cancel.cancelled() => return,
                    end = stream_once(&link, &addr, &tx, &mut backoff) => end,
                };
                match end {
                    StreamEnd::Closed => return,
                    StreamEnd::Reconnect(wait) => wait,
                }
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tx.closed() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Opens one stream on `addr` and forwards it until it ends.
async fn stream_once(
    link: &ManagerLink,
    addr: &str,
    tx: &mpsc::Sender<AssignmentsMessage>,
    backoff: &mut Backoff,
) -> StreamEnd {
    let mut client = match link.client(addr) {
        Ok(c) => c,
        Err(e) => return failed(link, addr, backoff, &e),
    };
    let opened = tokio::time::timeout(CALL_TIMEOUT, client.assignments(AssignmentsRequest {}));
    let mut stream = match opened.await {
        Err(_) => return failed(link, addr, backoff, "did not answer in time"),
        Ok(Err(status)) => return after_error(link, addr, backoff, &status),
        Ok(Ok(resp)) => resp.into_inner(),
    };
    let mut established = false;
    let end = forward(link, addr, tx, backoff, &mut stream, &mut established).await;
    match end {
        // Every node loses its stream at once when the leader changes: spread
        // their reconnections (and the COMPLETE sets they cost the new
        // leader) instead of landing on it together.
        StreamEnd::Reconnect(wait) if established => {
            StreamEnd::Reconnect(wait + jitter(ASSIGNMENTS_RECONNECT_SPREAD))
        }
        end => end,
    }
}

/// Forwards `stream`'s messages until it ends; sets `established` once a
/// COMPLETE set arrived.
async fn forward(
    link: &ManagerLink,
    addr: &str,
    tx: &mpsc::Sender<AssignmentsMessage>,
    backoff: &mut Backoff,
    stream: &mut tonic::Streaming<AssignmentsMessage>,
    established: &mut bool,
) -> StreamEnd {
    let mut session = link.inner.managers.clone();
    // The session may end (node removed) while this stream goes on.
    let mut session_alive = true;
    loop {
        let message = tokio::select! {
            m = stream.message() => m,
            _ = tx.closed() => return StreamEnd::Closed,
            changed = session.changed(), if session_alive => {
                session_alive = changed.is_ok();
                if session_alive && leader_moved(link, addr) {
                    return StreamEnd::Reconnect(Duration::ZERO);
                }
                continue;
            }
        };
        match message {
            Ok(Some(message)) => {
                if message.r#type == AssignmentsType::Complete as i32 {
                    debug!(%addr, tasks = message.tasks.len(), "complete set received");
                    link.succeeded();
                    backoff.reset();
                    *established = true;
                }
                if tx.send(message).await.is_err() {
                    return StreamEnd::Closed;
                }
            }
            Ok(None) => {
                debug!(%addr, "assignments stream ended: reconnecting");
                return StreamEnd::Reconnect(backoff.failure());
            }
            Err(status) => return after_error(link, addr, backoff, &status),
        }
    }
}

/// A random duration in `[0, max]` (no RNG crate: the std hasher's keys are
/// random per process and per hasher).
fn jitter(max: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    hasher.write_u32(nanos);
    let fraction = (hasher.finish() % 1_000_000) as f64 / 1_000_000.0;
    max.mul_f64(fraction)
}

/// Whether the session now names another leader than `addr`; if so, the
/// next stream goes there.
fn leader_moved(link: &ManagerLink, addr: &str) -> bool {
    let connected = link.inner.managers.borrow().connected;
    match link.session_leader() {
        Some(leader) if connected && leader != addr => {
            info!(from = %addr, to = %leader, "the leader changed: moving the assignments stream");
            link.redirected(&leader);
            true
        }
        _ => false,
    }
}

fn failed(link: &ManagerLink, addr: &str, backoff: &mut Backoff, reason: &str) -> StreamEnd {
    debug!(%addr, "assignments stream failed: {reason}");
    link.failed(addr);
    StreamEnd::Reconnect(backoff.failure())
}

fn after_error(
    link: &ManagerLink,
    addr: &str,
    backoff: &mut Backoff,
    status: &Status,
) -> StreamEnd {
    match classify(addr, status) {
        Failure::Redirect(leader) => {
            link.redirected(&leader);
            StreamEnd::Reconnect(backoff.redirect())
        }
        Failure::Retry(reason) | Failure::Refused(reason) => failed(link, addr, backoff, &reason),
    }
}

// ---------------------------------------------------------------------------
// StatusReporter

/// One task's newest status waiting to be sent.
#[derive(Debug, Clone)]
struct Queued {
    status: TaskStatus,
    /// Position in the send order (oldest first).
    order: u64,
    /// Bumped on every change, so an acknowledgement of an older copy does
    /// not remove a newer one.
    generation: u64,
}

/// The queue of status updates (pure): one entry per task, oldest first.
#[derive(Debug, Default)]
struct StatusQueue {
    entries: HashMap<String, Queued>,
    order: BTreeMap<u64, String>,
    next: u64,
}

/// A batch taken from the queue: what was sent, to acknowledge.
type Batch = Vec<(String, u64, TaskStatus)>;

impl StatusQueue {
    fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether `task_id` can be queued without exceeding the bound.
    fn has_room_for(&self, task_id: &str) -> bool {
        self.entries.len() < STATUS_QUEUE_TASKS_MAX || self.entries.contains_key(task_id)
    }

    /// Queues `status` for `task_id`, unless a queued status is further
    /// along (states only move forward; the same state takes the newer
    /// report, which may fill in an exit code).
    fn push(&mut self, task_id: String, status: TaskStatus) {
        self.next += 1;
        let generation = self.next;
        match self.entries.get_mut(&task_id) {
            Some(queued) if status.state < queued.status.state => {}
            Some(queued) => {
                queued.status = status;
                queued.generation = generation;
            }
            None => {
                self.order.insert(generation, task_id.clone());
                let queued = Queued {
                    status,
                    order: generation,
                    generation,
                };
                self.entries.insert(task_id, queued);
            }
        }
    }

    /// The oldest `STATUS_BATCH_MAX` entries, left in the queue.
    fn peek_batch(&self) -> Batch {
        self.order
            .values()
            .take(STATUS_BATCH_MAX)
            .filter_map(|id| {
                let q = self.entries.get(id)?;
                Some((id.clone(), q.generation, q.status.clone()))
            })
            .collect()
    }

    /// Removes what `batch` sent, unless it changed since.
    fn acknowledge(&mut self, batch: &Batch) {
        for (id, generation, _) in batch {
            if let Some(q) = self.entries.get(id)
                && q.generation == *generation
            {
                self.order.remove(&q.order);
                self.entries.remove(id);
            }
        }
    }
}

struct ReporterShared {
    queue: Mutex<StatusQueue>,
    /// Signals the sender that something was queued.
    queued: Notify,
    /// Signals waiting reporters that the queue shrank.
    drained: Notify,
}

impl ReporterShared {
    fn lock(&self) -> MutexGuard<'_, StatusQueue> {
        // Critical sections are map operations that cannot panic.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Sends task status updates to the leader; see the module doc. Cheap to
/// clone; clones share the queue.
#[derive(Clone)]
pub struct StatusReporter {
    shared: Arc<ReporterShared>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl StatusReporter {
    /// Starts the sender.
    pub fn start(link: ManagerLink) -> Self {
        let shared = Arc::new(ReporterShared {
            queue: Mutex::new(StatusQueue::default()),
            queued: Notify::new(),
            drained: Notify::new(),
        });
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let span = info_span!("status");
        tasks.spawn(send_loop(link, shared.clone(), cancel.clone()).instrument(span));
        tasks.close();
        Self {
            shared,
            cancel,
            tasks,
        }
    }

    /// Queues the status of one task, replacing an older queued one. Waits
    /// while the queue holds `STATUS_QUEUE_TASKS_MAX` other tasks.
    pub async fn report(&self, task_id: String, status: TaskStatus) {
        self.report_all(vec![TaskStatusUpdate {
            task_id,
            status: Some(status),
        }])
        .await;
    }

    /// Queues several statuses at once (they tend to leave in one call).
    /// Updates without a status are ignored.
    pub async fn report_all(&self, updates: Vec<TaskStatusUpdate>) {
        let mut updates = updates.into_iter().peekable();
        while updates.peek().is_some() {
            let drained = self.shared.drained.notified();
            {
                let mut queue = self.shared.lock();
                while let Some(u) = updates.next_if(|u| queue.has_room_for(&u.task_id)) {
                    if let Some(status) = u.status {
                        queue.push(u.task_id, status);
                    }
                }
            }
            self.shared.queued.notify_one();
            if updates.peek().is_some() {
                drained.await;
            }
        }
    }

    /// How many tasks have an update not yet acknowledged.
    pub fn pending(&self) -> usize {
        self.shared.lock().len()
    }

    /// Stops sending; updates not yet acknowledged are dropped (the worker
    /// reports its tasks' states again when it restarts).
    pub async fn stop(&self) {
        self.cancel.cancel();
        self.tasks.wait().await;
    }
}

async fn send_loop(link: ManagerLink, shared: Arc<ReporterShared>, cancel: CancellationToken) {
    let mut backoff = Backoff::new();
    loop {
        let queued = shared.queued.notified();
        let batch = shared.lock().peek_batch();
        if batch.is_empty() {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = queued => continue,
            }
        }
        let sent = tokio::select! {
            _ = cancel.cancelled() => return,
            sent = send_batch(&link, &batch) => sent,
        };
        let (done, wait) = match sent {
            Ok(()) => {
                backoff.reset();
                link.succeeded();
                (true, Duration::ZERO)
            }
            Err((addr, Failure::Redirect(leader))) => {
                debug!(from = %addr, to = %leader, "status updates redirected");
                link.redirected(&leader);
                (false, backoff.redirect())
            }
            Err((addr, Failure::Retry(reason))) => {
                debug!(
                    updates = batch.len(),
                    "status updates not sent, will retry: {reason}"
                );
                link.failed(&addr);
                (false, backoff.failure())
            }
            Err((_, Failure::Refused(reason))) => {
                // Sending them again would be refused again and block every
                // later update behind them.
                warn!(
                    updates = batch.len(),
                    "the manager refused status updates, dropped: {reason}"
                );
                (true, Duration::ZERO)
            }
        };
        if done {
            shared.lock().acknowledge(&batch);
            shared.drained.notify_waiters();
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Sends one batch to the current target; the error says where and why.
async fn send_batch(link: &ManagerLink, batch: &Batch) -> Result<(), (String, Failure)> {
    let addr = link.target().ok_or_else(|| {
        (
            String::new(),
            Failure::Retry("no manager address known".into()),
        )
    })?;
    let mut client = link
        .client(&addr)
        .map_err(|e| (addr.clone(), Failure::Retry(e)))?;
    let updates = batch
        .iter()
        .map(|(id, _, status)| TaskStatusUpdate {
            task_id: id.clone(),
            status: Some(status.clone()),
        })
        .collect();
    let call = client.update_task_status(UpdateTaskStatusRequest { updates });
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Err(_) => Err((
            addr.clone(),
            Failure::Retry(format!("{addr} did not answer within {CALL_TIMEOUT:?}")),
        )),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(status)) => Err((addr.clone(), classify(&addr, &status))),
    }
}

#[cfg(test)]
#[path = "assignments_tests.rs"]
mod tests;
