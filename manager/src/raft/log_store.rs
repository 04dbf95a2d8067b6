//! The durable Raft log and vote: openraft's `RaftLogStorage` on one redb
//! file, `<dir>/raft-log.redb`.
//!
//! Owns: the log entries (table `log`: index → postcard-encoded `Entry`),
//! the vote, the committed log id and the last purged log id (table `meta`).
//!
//! Invariants (openraft's storage contract):
//! - Every write — append, vote, committed pointer, truncate, purge — goes
//!   through one writer thread, in call order, so vote and log I/O are never
//!   reordered. The writer commits everything queued in one redb transaction
//!   with `Durability::Immediate` (one fsync: group commit), then answers
//!   every request in it. A transaction is all or nothing.
//! - `append` makes entries readable before it returns (they sit in the
//!   in-memory `pending` tail until their transaction commits); its
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
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};

use super::TypeConfig;
use crate::store::limits::LOG_WRITE_QUEUE_MAX;

type Entry = EntryOf<TypeConfig>;
type LogId = LogIdOf<TypeConfig>;
type Vote = VoteOf<TypeConfig>;

/// The log's file name inside the manager's Raft directory.
pub const LOG_FILE_NAME: &str = "raft-log.redb";

const LOG_TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META_TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const KEY_FORMAT: &str = "format";
const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_PURGED: &str = "last_purged";
/// On-disk format of the tables; bump on any incompatible change.
const FORMAT_VERSION: u32 = 1;

/// Why the log could not be opened. Messages name the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogStoreError {
    /// The file cannot be created or is not a redb database.
    #[error("cannot open the raft log {}: {reason}", .path.display())]
    Open {
        /// The log file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The file is a database, but its contents are not a valid log.
    #[error("the raft log {} is damaged: {reason}; remove this manager from the cluster and join it again with an empty data directory", .path.display())]
    Corrupt {
        /// The log file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// What readers see: the durable log plus the not-yet-durable tail.
#[derive(Default)]
struct View {
    vote: Option<Vote>,
    committed: Option<LogId>,
    last_purged: Option<LogId>,
    /// The last entry's id, or `last_purged` when the log is empty.
    last_log: Option<LogId>,
    /// Appended entries whose transaction has not committed yet: always a
    /// contiguous suffix of the log.
    pending: BTreeMap<u64, Entry>,
    /// Set by the first write error; everything fails afterwards.
    failed: Option<String>,
}

impl View {
    fn check(&self) -> io::Result<()> {
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
    /// `None` once the [`LogStore`] is dropped: the file closes with it, even
    /// if a reader handle outlives it (its reads then fail).
    db: RwLock<Option<Database>>,
    view: RwLock<View>,
}

impl Shared {
    fn view(&self) -> RwLockReadGuard<'_, View> {
        self.view.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn view_mut(&self) -> RwLockWriteGuard<'_, View> {
        self.view.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the open database.
    fn with_db<T>(&self, f: impl FnOnce(&Database) -> T) -> Result<T, String> {
        let db = self.db.read().unwrap_or_else(PoisonError::into_inner);
        db.as_ref()
            .map(f)
            .ok_or_else(|| "the raft log is closed".to_owned())
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
        let (lo, hi, tail, txn) = {
            let view = self.view();
            view.check()?;
            let lo = start.max(view.last_purged.as_ref().map_or(0, |p| p.index + 1));
            let hi = end.min(view.last_log.as_ref().map_or(0, |l| l.index + 1));
            if lo >= hi {
                return Ok(Vec::new());
            }
            let tail: Vec<Entry> = view.pending.range(lo..hi).map(|(_, e)| e.clone()).collect();
            // Begun under the lock: every entry that left `pending` before
            // this point is in this read transaction.
            let txn = self
                .with_db(|db| db.begin_read().map_err(|e| e.to_string()))
                .and_then(|r| r)
                .map_err(|e| self.io_error("cannot read", e))?;
            (lo, hi, tail, txn)
        };
        let disk_hi = tail.first().map_or(hi, |e| e.log_id.index);
        let mut out: Vec<Entry> = Vec::new();
        if lo < disk_hi {
            let table = txn
                .open_table(LOG_TABLE)
                .map_err(|e| self.io_error("cannot read", e))?;
            let range = table
                .range(lo..disk_hi)
                .map_err(|e| self.io_error("cannot read", e))?;
            for item in range {
                let (key, value) = item.map_err(|e| self.io_error("cannot read", e))?;
                let index = key.value();
                let entry: Entry = postcard::from_bytes(value.value())
                    .map_err(|e| self.io_error(&format!("entry {index} cannot be decoded"), e))?;
                if let Some(prev) = out.last()
                    && prev.log_id.index + 1 != index
                {
                    let missing = prev.log_id.index + 1;
                    return Err(
                        self.io_error("hole in the log", format!("entry {missing} is missing"))
                    );
                }
                out.push(entry);
            }
            // Only a prefix may be missing: what was found must reach the
            // tail (or the end of the range).
            if let Some(reached) = out.last().map(|e| e.log_id.index + 1)
                && reached != disk_hi
            {
                return Err(self.io_error("hole in the log", format!("entry {reached} is missing")));
            }
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

/// Writes everything in `batch` in one transaction, durably.
fn commit(db: &Database, batch: &[LogWrite]) -> Result<(), redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    {
        let mut log = txn.open_table(LOG_TABLE)?;
        let mut meta = txn.open_table(META_TABLE)?;
        for op in batch {
            match op {
                LogWrite::Append { entries, .. } => {
                    for (id, bytes) in entries {
                        log.insert(id.index, bytes.as_slice())?;
                    }
                }
                LogWrite::Vote { bytes, .. } => {
                    meta.insert(KEY_VOTE, bytes.as_slice())?;
                }
                LogWrite::Committed { bytes: Some(bytes) } => {
                    meta.insert(KEY_COMMITTED, bytes.as_slice())?;
                }
                LogWrite::Committed { bytes: None } => {
                    meta.remove(KEY_COMMITTED)?;
                }
                LogWrite::Truncate { from, .. } => log.retain_in(*from.., |_, _| false)?,
                LogWrite::Purge { upto, bytes, .. } => {
                    log.retain_in(..=*upto, |_, _| false)?;
                    meta.insert(KEY_PURGED, bytes.as_slice())?;
                }
            }
        }
    }
    txn.commit()?;
    Ok(())
}

/// The writer thread: group-commits whatever is queued, then answers.
fn run_writer(shared: Arc<Shared>, mut queue: mpsc::Receiver<LogWrite>) {
    while let Some(first) = queue.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < LOG_WRITE_QUEUE_MAX {
            match queue.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let earlier_failure = shared.view().failed.clone();
        let result = match earlier_failure {
            Some(reason) => Err(reason),
            None => shared
                .with_db(|db| commit(db, &batch).map_err(|e| e.to_string()))
                .and_then(|r| r),
        };
        {
            let mut view = shared.view_mut();
            match &result {
                Ok(()) => {
                    for op in &batch {
                        if let LogWrite::Append { entries, .. } = op {
                            for (id, _) in entries {
                                if view.pending.get(&id.index).is_some_and(|e| e.log_id == *id) {
                                    view.pending.remove(&id.index);
                                }
                            }
                        }
                    }
                }
                Err(reason) => {
                    tracing::error!(path = %shared.path.display(), %reason, "raft log write failed");
                    view.failed.get_or_insert_with(|| reason.clone());
                }
            }
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

/// Creates the tables on first use and checks the format.
fn init_tables(db: &Database, path: &Path) -> Result<(), LogStoreError> {
    let err = |e: redb::Error| LogStoreError::Open {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let txn = db.begin_write().map_err(|e| err(e.into()))?;
    {
        let mut meta = txn.open_table(META_TABLE).map_err(|e| err(e.into()))?;
        let format = meta
            .get(KEY_FORMAT)
            .map_err(|e| err(e.into()))?
            .map(|v| v.value().to_vec());
        match format {
            None => {
                meta.insert(KEY_FORMAT, FORMAT_VERSION.to_le_bytes().as_slice())
                    .map_err(|e| err(e.into()))?;
            }
            Some(found) if found == FORMAT_VERSION.to_le_bytes() => {}
            Some(found) => {
                return Err(LogStoreError::Corrupt {
                    path: path.to_owned(),
                    reason: format!(
                        "unknown format {found:?}; this rswarm reads format {FORMAT_VERSION}"
                    ),
                });
            }
        }
        txn.open_table(LOG_TABLE).map_err(|e| err(e.into()))?;
    }
    txn.commit().map_err(|e| err(e.into()))
}

/// Reads the meta table and checks every entry.
fn load(db: &Database, path: &Path) -> Result<View, LogStoreError> {
    let corrupt = |reason: String| LogStoreError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let read_err = |e: redb::Error| corrupt(format!("cannot read it: {e}"));
    let txn = db.begin_read().map_err(|e| read_err(e.into()))?;
    let meta = txn.open_table(META_TABLE).map_err(|e| read_err(e.into()))?;
    let get = |key: &str| -> Result<Option<Vec<u8>>, LogStoreError> {
        let value = meta.get(key).map_err(|e| read_err(e.into()))?;
        Ok(value.map(|v| v.value().to_vec()))
    };
    fn decode<T: DeserializeOwned>(
        bytes: Option<Vec<u8>>,
        what: &str,
        corrupt: &dyn Fn(String) -> LogStoreError,
    ) -> Result<Option<T>, LogStoreError> {
        bytes
            .map(|b| {
                postcard::from_bytes(&b)
                    .map_err(|e| corrupt(format!("the {what} cannot be decoded: {e}")))
            })
            .transpose()
    }
    let vote: Option<Vote> = decode(get(KEY_VOTE)?, "vote", &corrupt)?;
    let committed: Option<LogId> = decode(get(KEY_COMMITTED)?, "committed log id", &corrupt)?;
    let last_purged: Option<LogId> = decode(get(KEY_PURGED)?, "purged log id", &corrupt)?;
    let log = txn.open_table(LOG_TABLE).map_err(|e| read_err(e.into()))?;
    let mut last: Option<LogId> = None;
    for item in log.iter().map_err(|e| read_err(e.into()))? {
        let (key, value) = item.map_err(|e| read_err(e.into()))?;
        let index = key.value();
        let entry: Entry = postcard::from_bytes(value.value())
            .map_err(|e| corrupt(format!("entry {index} cannot be decoded: {e}")))?;
        if entry.log_id.index != index {
            return Err(corrupt(format!(
                "entry {index} holds the entry of index {}",
                entry.log_id.index
            )));
        }
        if let Some(p) = &last_purged
            && index <= p.index
        {
            return Err(corrupt(format!(
                "entry {index} is at or below the purged index {}",
                p.index
            )));
        }
        if let Some(prev) = &last
            && prev.index + 1 != index
        {
            return Err(corrupt(format!(
                "entries {} to {} are missing",
                prev.index + 1,
                index - 1
            )));
        }
        last = Some(entry.log_id);
    }
    let last_log = last.or(last_purged);
    Ok(View {
        vote,
        committed,
        last_purged,
        last_log,
        pending: BTreeMap::new(),
        failed: None,
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
    /// Opens (creating if needed) `<dir>/raft-log.redb`, checks every entry,
    /// and starts the writer thread. Errors name the file.
    pub fn open(dir: &Path) -> Result<LogStore, LogStoreError> {
        let path = dir.join(LOG_FILE_NAME);
        let open_err = |reason: String| LogStoreError::Open {
            path: path.clone(),
            reason,
        };
        std::fs::create_dir_all(dir)
            .map_err(|e| open_err(format!("cannot create its directory: {e}")))?;
        // The integrity check turns a damaged file into an error instead of
        // a panic; it reads the whole file, which compaction keeps small.
        let db = redb::Builder::new()
            .set_check_integrity_on_open(true)
            .create(&path)
            .map_err(|e| open_err(e.to_string()))?;
        init_tables(&db, &path)?;
        let view = load(&db, &path)?;
        let shared = Arc::new(Shared {
            path: path.clone(),
            db: RwLock::new(Some(db)),
            view: RwLock::new(view),
        });
        let (queue, rx) = mpsc::channel(LOG_WRITE_QUEUE_MAX);
        let writer_shared = shared.clone();
        let writer = std::thread::Builder::new()
            .name("raft-log-writer".to_owned())
            .spawn(move || run_writer(writer_shared, rx))
            .map_err(|e| open_err(format!("cannot start its writer thread: {e}")))?;
        Ok(LogStore {
            shared,
            queue: Some(queue),
            writer: Some(writer),
        })
    }

    /// The log file.
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
        // Closing the queue ends the writer once it has drained it.
        self.queue.take();
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::error!(path = %self.shared.path.display(), "the raft log writer panicked");
        }
        // Close the file now, not when the last reader handle goes.
        let db = self
            .shared
            .db
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(db);
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
