//! [`Store`]: the shared handle on the cluster state that the Raft state
//! machine writes and everything else reads and watches.
//!
//! Invariants:
//! - Only the state machine calls the writing methods (`apply`,
//!   `advance_to`, `install`), one at a time, in log order.
//! - A change becomes visible to readers, to the watch history and to live
//!   watchers under one write lock, so a watcher created at any moment sees
//!   every later change exactly once: retained events first, then live ones,
//!   in version order, with no gap and no duplicate.
//! - The lock is a std `RwLock` held only for in-memory work, never across
//!   an `.await`.

use std::collections::VecDeque;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use prost::Message;
use rswarm_proto::{Proposal, StoreEvent};
use tokio::sync::{broadcast, watch};

use super::error::StoreError;
use super::limits::{WATCH_HISTORY_BYTES_MAX, WATCH_HISTORY_MAX, WATCH_QUEUE_MAX};
use super::state::StoreState;

/// What applying one Raft entry answered: the version it applied at, or why
/// the batch was refused. This is the Raft response type (`TypeConfig::R`).
pub type ApplyOutcome = Result<u64, StoreError>;

/// The events of one applied batch; all share one version.
type EventBatch = Arc<[StoreEvent]>;

/// What live watchers receive.
#[derive(Clone)]
enum Published {
    /// One applied batch.
    Events(EventBatch),
    /// The state was replaced by a snapshot at this version: history is gone.
    Reset { version: u64 },
}

/// The retained events, oldest first.
struct History {
    batches: VecDeque<(EventBatch, usize)>,
    events: usize,
    bytes: usize,
    /// The oldest version a watch may start from.
    start: u64,
}

impl History {
    fn new(start: u64) -> Self {
        Self {
            batches: VecDeque::new(),
            events: 0,
            bytes: 0,
            start,
        }
    }

    fn push(&mut self, batch: EventBatch, bytes: usize) {
        self.events += batch.len();
        self.bytes += bytes;
        self.batches.push_back((batch, bytes));
        while self.events > WATCH_HISTORY_MAX || self.bytes > WATCH_HISTORY_BYTES_MAX {
            let Some((old, old_bytes)) = self.batches.pop_front() else {
                break;
            };
            self.events -= old.len();
            self.bytes -= old_bytes;
            if let Some(first) = old.first() {
                self.start = self.start.max(first.version);
            }
        }
    }

    /// The retained batches above `since`; 0 means "only new events".
    fn since(&self, since: u64) -> Result<VecDeque<EventBatch>, StoreError> {
        if since == 0 {
            return Ok(VecDeque::new());
        }
        if since < self.start {
            return Err(StoreError::Compacted { oldest: self.start });
        }
        Ok(self
            .batches
            .iter()
            .filter(|(b, _)| b.first().is_some_and(|e| e.version > since))
            .map(|(b, _)| b.clone())
            .collect())
    }
}

struct Inner {
    state: StoreState,
    history: History,
}

struct Shared {
    inner: RwLock<Inner>,
    live: broadcast::Sender<Published>,
    applied: watch::Sender<u64>,
}

/// The shared, cloneable handle on the store. See the module doc.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("version", &self.version())
            .finish()
    }
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    /// An empty store at version 0.
    pub fn new() -> Self {
        Self::with_state(StoreState::new())
    }

    /// A store holding `state`; watch history starts at its version.
    pub fn with_state(state: StoreState) -> Self {
        let version = state.version();
        let (live, _) = broadcast::channel(WATCH_QUEUE_MAX);
        let (applied, _) = watch::channel(version);
        Self {
            shared: Arc::new(Shared {
                inner: RwLock::new(Inner {
                    state,
                    history: History::new(version),
                }),
                live,
                applied,
            }),
        }
    }

    fn read_lock(&self) -> RwLockReadGuard<'_, Inner> {
        // A panic while writing is a bug that already took the node down.
        self.shared
            .inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write_lock(&self) -> RwLockWriteGuard<'_, Inner> {
        self.shared
            .inner
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the current state. Keep `f` short: writers wait for it.
    pub fn read<R>(&self, f: impl FnOnce(&StoreState) -> R) -> R {
        f(&self.read_lock().state)
    }

    /// The version of the last applied Raft entry.
    pub fn version(&self) -> u64 {
        self.read_lock().state.version()
    }

    /// Applies the batch of Raft entry `version`, publishes its events, and
    /// moves to `version` even when the batch is refused (the log index is
    /// consumed either way). For the state machine only.
    ///
    /// # Panics
    /// If `version` is not above the current version.
    pub fn apply(&self, version: u64, proposal: &Proposal) -> ApplyOutcome {
        let mut inner = self.write_lock();
        let result = inner.state.apply(version, proposal);
        match result {
            Ok(events) => {
                if !events.is_empty() {
                    let batch: EventBatch = events.into();
                    inner.history.push(batch.clone(), proposal.encoded_len());
                    // No receiver is not an error: nobody watches.
                    let _ = self.shared.live.send(Published::Events(batch));
                }
            }
            Err(e) => {
                inner.state.advance_to(version);
                self.shared.applied.send_replace(version);
                return Err(e);
            }
        }
        self.shared.applied.send_replace(version);
        Ok(version)
    }

    /// Moves to `version` without changes (blank and membership entries).
    /// For the state machine only.
    ///
    /// # Panics
    /// If `version` is below the current version.
    pub fn advance_to(&self, version: u64) {
        let mut inner = self.write_lock();
        inner.state.advance_to(version);
        self.shared.applied.send_replace(version);
    }

    /// Replaces the whole state (a snapshot was installed or loaded). The
    /// watch history restarts at the new version; live watchers end with
    /// [`StoreError::Compacted`]. For the state machine only.
    pub fn install(&self, state: StoreState) {
        let mut inner = self.write_lock();
        let version = state.version();
        inner.state = state;
        inner.history = History::new(version);
        let _ = self.shared.live.send(Published::Reset { version });
        self.shared.applied.send_replace(version);
    }

    /// Watches changes: first the retained events with a version above
    /// `since_version`, then live ones, in order, without gaps or
    /// duplicates. `since_version` 0 means only changes from now on. Fails
    /// with [`StoreError::Compacted`] when the history no longer reaches back
    /// to `since_version`.
    pub fn watch(&self, since_version: u64) -> Result<Watcher, StoreError> {
        let inner = self.read_lock();
        let backlog = inner.history.since(since_version)?;
        // Subscribed under the lock: nothing is published in between.
        let live = self.shared.live.subscribe();
        drop(inner);
        Ok(Watcher {
            since: since_version,
            current: None,
            backlog,
            live,
            ended: false,
        })
    }

    /// The latest applied version, as a `watch` channel: wait for
    /// "applied ≥ N" with `rx.wait_for(|v| *v >= n)`.
    pub fn subscribe_applied(&self) -> watch::Receiver<u64> {
        self.shared.applied.subscribe()
    }

    /// Returns once the store has applied `version` (at once if it has).
    pub async fn wait_applied(&self, version: u64) {
        let mut rx = self.subscribe_applied();
        // The sender lives in `self`, so the channel cannot close here.
        let _ = rx.wait_for(|v| *v >= version).await;
    }
}

/// A stream of store events; see [`Store::watch`]. It ends (`None`) when the
/// store is dropped, and after yielding an error.
pub struct Watcher {
    since: u64,
    current: Option<(EventBatch, usize)>,
    backlog: VecDeque<EventBatch>,
    live: broadcast::Receiver<Published>,
    ended: bool,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("since", &self.since)
            .field("ended", &self.ended)
            .finish()
    }
}

impl Watcher {
    /// The next event; `Some(Err(..))` once if the watch is ended by the
    /// store ([`StoreError::Lagged`], [`StoreError::Compacted`]), then `None`.
    /// Cancel-safe: dropping the future loses no event (use it in `select!`).
    pub async fn next(&mut self) -> Option<Result<StoreEvent, StoreError>> {
        loop {
            if self.ended {
                return None;
            }
            if let Some((batch, pos)) = &mut self.current {
                if let Some(event) = batch.get(*pos) {
                    *pos += 1;
                    return Some(Ok(event.clone()));
                }
                self.current = None;
            }
            if let Some(batch) = self.backlog.pop_front() {
                self.current = Some((batch, 0));
                continue;
            }
            match self.live.recv().await {
                Ok(Published::Events(batch)) => {
                    if batch.first().is_some_and(|e| e.version > self.since) {
                        self.current = Some((batch, 0));
                    }
                }
                Ok(Published::Reset { version }) => {
                    self.ended = true;
                    return Some(Err(StoreError::Compacted { oldest: version }));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.ended = true;
                    return Some(Err(StoreError::Lagged));
                }
                Err(broadcast::error::RecvError::Closed) => {
                    self.ended = true;
                    return None;
                }
            }
        }
    }

    /// The watcher as a `Stream`, for gRPC responses.
    pub fn into_stream(self) -> impl futures::Stream<Item = Result<StoreEvent, StoreError>> + Send {
        futures::stream::unfold(
            self,
            |mut w| async move { w.next().await.map(|item| (item, w)) },
        )
    }
}
