//! The durable Raft log and vote: openraft's `RaftLogStorage` on the
//! segment-file write-ahead log in `<dir>/wal/` ([`super::wal`]).
//!
//! Owns: the log entries, the vote, the committed log id and the last purged
//! log id as openraft sees them, and the writer thread.
//!
//! Invariants (openraft's storage contract):
//! - Every write — append, vote, committed pointer, truncate, purge — goes
//!   through one writer thread, in call order, so vote and log I/O are never
//!   reordered. The writer writes everything queued as one batch with one
//!   `fdatasync` (group commit), then answers every request in it.
//! - `append` makes entries readable before it returns (they sit in the
//!   in-memory `pending` tail until their batch is durable); its
//!   `IOFlushed` callback fires only once they are on disk, never on error.
//! - `save_vote`, `truncate_after` and `purge` return once durable.
//! - The log is contiguous: appends must follow the last entry, truncation
//!   cuts the tail, purge cuts the head.
//! - After a write error every later operation fails: openraft treats a
//!   storage error as fatal and the node must be restarted.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;

use openraft::OptionalSend;
use openraft::alias::{EntryOf, LogIdOf, VoteOf};
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};

use super::TypeConfig;
use super::wal::{EntryIndex, Location, Record, Recovered, WAL_DIR_NAME, Wal, WalError};
use crate::store::limits::LOG_WRITE_QUEUE_MAX;

type Entry = EntryOf<TypeConfig>;
type LogId = LogIdOf<TypeConfig>;
type Vote = VoteOf<TypeConfig>;

/// The log's directory inside the manager's Raft directory.
pub const LOG_DIR_NAME: &str = WAL_DIR_NAME;
/// Where releases before the write-ahead log kept the log (a redb file).
const OLD_LOG_FILE_NAME: &str = "raft-log.redb";

/// Why the log could not be opened. Messages name the file.
pub type LogStoreError = WalError;

/// What readers see: the durable log plus the not-yet-durable tail.
#[derive(Default)]
struct View {
    vote: Option<Vote>,
    committed: Option<LogId>,
    last_purged: Option<LogId>,
    /// The last entry's id, or `last_purged` when the log is empty.
    last_log: Option<LogId>,
    /// Appended entries whose batch is not durable yet: always a
    /// contiguous suffix of the log.
    pending: BTreeMap<u64, Entry>,
    /// Where the durable entries are on disk.
    disk: EntryIndex,
    /// Set by the first write error; everything fails afterwards.
    failed: Option<String>,
    /// Set when the [`LogStore`] is dropped: reader handles that outlive it
    /// fail instead of reading a closed log.
    closed: bool,
}

impl View {
    fn check(&self) -> io::Result<()> {
        if self.closed {
            return Err(io::Error::other("the raft log is closed"));
        }
        match &self.failed {
            None => Ok(()),
            Some(reason) => Err(io::Error::other(format!(
                "the raft log is unusable after a write error ({reason}): restart the manager"
            ))),
        }
    }
}

struct Shared {
    path: PathBuf,
    view: RwLock<View>,
    /// Makes the writer fail its next batch, as a dead disk would.
    #[cfg(test)]
    fail_writes: std::sync::atomic::AtomicBool,
}

impl Shared {
    fn view(&self) -> RwLockReadGuard<'_, View> {
        self.view.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn view_mut(&self) -> RwLockWriteGuard<'_, View> {
        self.view.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn io_error(&self, what: &str, e: impl std::fmt::Display) -> io::Error {
        io::Error::other(format!("raft log {}: {what}: {e}", self.path.display()))
    }

    /// The entries in `range` that the log contains; only a prefix (purged
    /// or never written) or a suffix (not appended yet) may be missing.
    fn read_entries<RB: RangeBounds<u64>>(&self, range: RB) -> io::Result<Vec<Entry>> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e.saturating_add(1),
            Bound::Excluded(&e) => e,
            Bound::Unbounded => u64::MAX,
        };
        let (tail, on_disk) = {
            let view = self.view();
            view.check()?;
            let lo = start.max(view.last_purged.as_ref().map_or(0, |p| p.index + 1));
            let hi = end.min(view.last_log.as_ref().map_or(0, |l| l.index + 1));
            if lo >= hi {
                return Ok(Vec::new());
            }
            let tail: Vec<Entry> = view.pending.range(lo..hi).map(|(_, e)| e.clone()).collect();
            let disk_hi = tail.first().map_or(hi, |e| e.log_id.index);
            let mut on_disk: Vec<(u64, Location)> = Vec::new();
            for index in lo..disk_hi {
                match view.disk.get(index) {
                    Some(loc) => on_disk.push((index, loc.clone())),
                    // Only a prefix may be missing.
                    None if on_disk.is_empty() => continue,
                    None => {
                        return Err(
                            self.io_error("hole in the log", format!("entry {index} is missing"))
                        );
                    }
                }
            }
            if let Some((last, _)) = on_disk.last()
                && last + 1 != disk_hi
            {
                let missing = last + 1;
                return Err(self.io_error("hole in the log", format!("entry {missing} is missing")));
            }
            (tail, on_disk)
        };
        let mut out = Vec::with_capacity(on_disk.len() + tail.len());
        for (index, loc) in on_disk {
            let bytes = loc.read().map_err(|e| self.io_error("cannot read", e))?;
            let entry: Entry = postcard::from_bytes(&bytes)
                .map_err(|e| self.io_error(&format!("entry {index} cannot be decoded"), e))?;
            out.push(entry);
        }
        out.extend(tail);
        Ok(out)
    }
}

/// One request to the writer thread.
enum LogWrite {
    Append {
        entries: Vec<(LogId, Vec<u8>)>,
        done: IOFlushed<TypeConfig>,
    },
    Vote {
        bytes: Vec<u8>,
        done: oneshot::Sender<io::Result<()>>,
    },
    Committed {
        bytes: Option<Vec<u8>>,
    },
    Truncate {
        from: u64,
        done: oneshot::Sender<io::Result<()>>,
    },
    Purge {
        upto: u64,
        bytes: Vec<u8>,
        done: oneshot::Sender<io::Result<()>>,
    },
}

/// The records that make `batch` durable, in order.
fn records(batch: &[LogWrite]) -> Vec<Record<'_>> {
    let mut out = Vec::new();
    for op in batch {
        match op {
            LogWrite::Append { entries, .. } => {
                out.extend(entries.iter().map(|(id, bytes)| Record::Entry {
                    index: id.index,
                    bytes,
                }));
            }
            LogWrite::Vote { bytes, .. } => out.push(Record::Vote(bytes)),
            LogWrite::Committed { bytes } => out.push(Record::Committed(bytes.as_deref())),
            LogWrite::Truncate { from, .. } => out.push(Record::Truncate { from: *from }),
            LogWrite::Purge { upto, bytes, .. } => out.push(Record::Purge { upto: *upto, bytes }),
        }
    }
    out
}

/// Writes `batch` durably and makes it visible to readers.
fn commit(shared: &Shared, wal: &mut Wal, batch: &[LogWrite]) -> Result<(), String> {
    if let Some(reason) = shared.view().failed.clone() {
        return Err(reason);
    }
    #[cfg(test)]
    if shared.fail_writes.load(std::sync::atomic::Ordering::SeqCst) {
        return Err("injected write failure".to_owned());
    }
    let records = records(batch);
    let written = wal.write(&records).map_err(|e| e.to_string())?;
    let mut view = shared.view_mut();
    view.disk.publish(&records, &written);
    for op in batch {
        if let LogWrite::Append { entries, .. } = op {
            for (id, _) in entries {
                // A later truncate may have replaced the pending entry.
                if view.pending.get(&id.index).is_some_and(|e| e.log_id == *id) {
                    view.pending.remove(&id.index);
                }
            }
        }
    }
    Ok(())
}

/// The writer thread: group-commits whatever is queued, then answers.
fn run_writer(shared: Arc<Shared>, mut wal: Wal, mut queue: mpsc::Receiver<LogWrite>) {
    while let Some(first) = queue.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < LOG_WRITE_QUEUE_MAX {
            match queue.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let result = commit(&shared, &mut wal, &batch);
        if let Err(reason) = &result {
            tracing::error!(path = %shared.path.display(), %reason, "raft log write failed");
            shared
                .view_mut()
                .failed
                .get_or_insert_with(|| reason.clone());
        }
        let answer = || {
            result.clone().map_err(|reason| {
                io::Error::other(format!(
                    "raft log {}: write failed: {reason}",
                    shared.path.display()
                ))
            })
        };
        for op in batch {
            match op {
                LogWrite::Append { done, .. } => done.io_completed(answer()),
                LogWrite::Vote { done, .. }
                | LogWrite::Truncate { done, .. }
                | LogWrite::Purge { done, .. } => {
                    // The requester may have given up; nothing to tell then.
                    let _ = done.send(answer());
                }
                LogWrite::Committed { .. } => {}
            }
        }
    }
}

fn encode<T: Serialize>(what: &str, value: &T) -> io::Result<Vec<u8>> {
    postcard::to_allocvec(value).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("cannot encode the {what}: {e}"),
        )
    })
}

/// The view of a recovered log: decodes the metadata and the last entry.
fn load(recovered: Recovered, path: &Path) -> Result<View, LogStoreError> {
    let corrupt = |reason: String| WalError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    fn decode<T: DeserializeOwned>(
        bytes: Option<&[u8]>,
        what: &str,
        corrupt: &dyn Fn(String) -> WalError,
    ) -> Result<Option<T>, WalError> {
        bytes
            .map(|b| {
                postcard::from_bytes(b)
                    .map_err(|e| corrupt(format!("the {what} cannot be decoded: {e}")))
            })
            .transpose()
    }
    let Recovered { meta, entries } = recovered;
    let vote: Option<Vote> = decode(meta.vote.as_deref(), "vote", &corrupt)?;
    let committed: Option<LogId> = decode(meta.committed.as_deref(), "committed log id", &corrupt)?;
    let last_purged: Option<LogId> = decode(
        meta.purged.as_ref().map(|(_, b)| b.as_slice()),
        "purged log id",
        &corrupt,
    )?;
    let last_entry = match entries.last() {
        None => None,
        Some((index, loc)) => {
            let bytes = loc
                .read()
                .map_err(|e| corrupt(format!("cannot read entry {index}: {e}")))?;
            let entry: Entry = postcard::from_bytes(&bytes)
                .map_err(|e| corrupt(format!("entry {index} cannot be decoded: {e}")))?;
            if entry.log_id.index != index {
                return Err(corrupt(format!(
                    "entry {index} holds the entry of index {}",
                    entry.log_id.index
                )));
            }
            Some(entry.log_id)
        }
    };
    Ok(View {
        vote,
        committed,
        last_purged,
        last_log: last_entry.or(last_purged),
        pending: BTreeMap::new(),
        disk: entries,
        failed: None,
        closed: false,
    })
}

/// The Raft log store. Not `Clone`: openraft owns it; readers get a
/// [`LogReader`]. Dropping it waits for the writer thread to finish what is
/// queued, then closes the database file (reader handles that outlive it
/// get errors), so the directory can be opened again at once.
pub struct LogStore {
    shared: Arc<Shared>,
    queue: Option<mpsc::Sender<LogWrite>>,
    writer: Option<JoinHandle<()>>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("path", &self.shared.path)
            .finish()
    }
}

/// A read handle on the log, for openraft's replication tasks.
#[derive(Clone)]
pub struct LogReader {
    shared: Arc<Shared>,
}

impl Debug for LogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogReader")
            .field("path", &self.shared.path)
            .finish()
    }
}

impl LogStore {
    /// Opens (creating if needed) the log in `<dir>/wal/`, replays it, and
    /// starts the writer thread. Errors name the file.
    pub fn open(dir: &Path) -> Result<LogStore, LogStoreError> {
        let path = dir.join(LOG_DIR_NAME);
        let old = dir.join(OLD_LOG_FILE_NAME);
        if old.exists() {
            return Err(WalError::Open {
                path: old,
                reason: "this raft log was written by an older rswarm in a format this release \
                         does not read; remove this manager from the cluster and join it again \
                         with an empty data directory"
                    .to_owned(),
            });
        }
        let (wal, recovered) = Wal::open(&path)?;
        let view = load(recovered, &path)?;
        let shared = Arc::new(Shared {
            path: path.clone(),
            view: RwLock::new(view),
            #[cfg(test)]
            fail_writes: Default::default(),
        });
        let (queue, rx) = mpsc::channel(LOG_WRITE_QUEUE_MAX);
        let writer_shared = shared.clone();
        let writer = std::thread::Builder::new()
            .name("raft-log-writer".to_owned())
            .spawn(move || run_writer(writer_shared, wal, rx))
            .map_err(|e| WalError::Open {
                path: path.clone(),
                reason: format!("cannot start its writer thread: {e}"),
            })?;
        Ok(LogStore {
            shared,
            queue: Some(queue),
            writer: Some(writer),
        })
    }

    /// The log directory.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    async fn send(&self, op: LogWrite) -> io::Result<()> {
        let stopped = || io::Error::other("the raft log writer has stopped");
        let queue = self.queue.as_ref().ok_or_else(stopped)?;
        queue.send(op).await.map_err(|_| stopped())
    }

    /// Queues a write and waits until it is durable.
    async fn send_and_wait(
        &self,
        make: impl FnOnce(oneshot::Sender<io::Result<()>>) -> LogWrite,
    ) -> io::Result<()> {
        let (done, result) = oneshot::channel();
        self.send(make(done)).await?;
        result
            .await
            .map_err(|_| io::Error::other("the raft log writer stopped before answering"))?
    }

    fn reader(&self) -> LogReader {
        LogReader {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for LogStore {
    fn drop(&mut self) {
        // Closing the queue ends the writer once it has drained it; the
        // writer owns the log and unlocks it as it ends.
        self.queue.take();
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::error!(path = %self.shared.path.display(), "the raft log writer panicked");
        }
        // Close the files now, not when the last reader handle goes.
        let mut view = self.shared.view_mut();
        view.closed = true;
        view.disk = EntryIndex::default();
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        self.shared.read_entries(range)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        let view = self.shared.view();
        view.check()?;
        Ok(view.vote)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        self.shared.read_entries(range)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.reader().read_vote().await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let view = self.shared.view();
        view.check()?;
        Ok(LogState {
            last_purged_log_id: view.last_purged,
            last_log_id: view.last_log,
        })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        self.reader()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.shared.view().check()?;
        let bytes = encode("vote", vote)?;
        self.send_and_wait(|done| LogWrite::Vote { bytes, done })
            .await?;
        self.shared.view_mut().vote = Some(*vote);
        Ok(())
    }

    /// Queued behind earlier writes and made durable with the next group
    /// commit; not waited for: losing it in a crash only means re-applying
    /// fewer entries at startup.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        let bytes = committed
            .as_ref()
            .map(|c| encode("committed log id", c))
            .transpose()?;
        {
            let mut view = self.shared.view_mut();
            view.check()?;
            view.committed = committed;
        }
        self.send(LogWrite::Committed { bytes }).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        let view = self.shared.view();
        view.check()?;
        Ok(view.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let mut encoded = Vec::with_capacity(entries.len());
        for entry in &entries {
            encoded.push((entry.log_id, encode("log entry", entry)?));
        }
        {
            let mut view = self.shared.view_mut();
            view.check()?;
            let mut next = view.last_log.as_ref().map(|l| l.index + 1);
            for entry in &entries {
                if let Some(expected) = next
                    && entry.log_id.index != expected
                {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "append of entry {} would leave a hole: the log ends before {expected}",
                            entry.log_id.index
                        ),
                    ));
                }
                next = Some(entry.log_id.index + 1);
            }
            for entry in entries {
                view.last_log = Some(entry.log_id);
                view.pending.insert(entry.log_id.index, entry);
            }
        }
        self.send(LogWrite::Append {
            entries: encoded,
            done: callback,
        })
        .await
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.as_ref().map_or(0, |l| l.index + 1);
        {
            let mut view = self.shared.view_mut();
            view.check()?;
            if from >= view.last_log.as_ref().map_or(0, |l| l.index + 1) {
                return Ok(());
            }
            view.pending.split_off(&from);
            view.last_log = std::cmp::max(last_log_id, view.last_purged);
        }
        self.send_and_wait(|done| LogWrite::Truncate { from, done })
            .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let bytes = encode("purged log id", &log_id)?;
        let upto = log_id.index;
        {
            let mut view = self.shared.view_mut();
            view.check()?;
            if view.last_purged.as_ref().is_some_and(|p| *p >= log_id) {
                return Ok(());
            }
            view.pending = view.pending.split_off(&(upto + 1));
            if view.last_log < Some(log_id) {
                view.last_log = Some(log_id);
            }
            view.last_purged = Some(log_id);
        }
        self.send_and_wait(|done| LogWrite::Purge { upto, bytes, done })
            .await
    }
}

#[cfg(test)]
#[path = "log_store_tests.rs"]
mod tests;
