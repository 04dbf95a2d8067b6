//! openraft's `RaftStateMachine` over the in-memory [`Store`], with the
//! snapshot persisted in `<dir>/snapshot.bin`.
//!
//! Owns: applying committed entries to the store (in log order, once each),
//! the last applied log id and membership, and the snapshot file.
//!
//! The state itself is not persisted on apply: on restart [`StateMachine::open`]
//! loads the snapshot into the store, and openraft re-applies the committed
//! entries after it (the log store persists the committed log id).
//!
//! Invariants:
//! - The store's version is the index of the last applied entry.
//! - A refused batch (`Err(StoreError)`) is a normal outcome answered to the
//!   proposer, not a storage error; it still consumes its index.
//! - The snapshot file is replaced atomically (temp file, fsync, rename,
//!   fsync of the directory) and is never replaced by an older one except
//!   when the leader installs one. Its layout: magic `RSWSNAP\0`, format
//!   (u32 LE), length (u32 LE) and postcard bytes of openraft's
//!   `SnapshotMeta` (last applied log id and membership), length (u64 LE)
//!   and bytes of the prost-encoded `StoreSnapshot`, SHA-256 of all that.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use futures::{Stream, StreamExt};
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, Snapshot};
use prost::Message;
use rswarm_proto::StoreSnapshot;
use sha2::{Digest, Sha256};

use super::TypeConfig;
use crate::store::{ApplyOutcome, Store, StoreState};

type LogId = LogIdOf<TypeConfig>;
type SnapshotMeta = SnapshotMetaOf<TypeConfig>;
type StoredMembership = StoredMembershipOf<TypeConfig>;

/// A snapshot's data as openraft moves it: the prost-encoded
/// [`StoreSnapshot`]. The transport sends it after the `SnapshotMeta`.
pub type SnapshotData = Vec<u8>;

/// The bytes to send for a snapshot.
pub fn snapshot_bytes(data: &SnapshotData) -> &[u8] {
    data
}

/// A snapshot's data from received bytes (checked on install).
pub fn snapshot_from_bytes(bytes: Vec<u8>) -> SnapshotData {
    bytes
}

/// The snapshot's file name inside the manager's Raft directory.
pub const SNAPSHOT_FILE_NAME: &str = "snapshot.bin";
const SNAPSHOT_TMP_NAME: &str = "snapshot.bin.tmp";
const MAGIC: [u8; 8] = *b"RSWSNAP\0";
/// Layout version of the snapshot file; bump on any incompatible change.
const SNAPSHOT_FORMAT: u32 = 1;
const DIGEST_LEN: usize = 32;

/// Why the state machine could not be opened. Messages name the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateMachineError {
    /// The directory or the snapshot file cannot be read or written.
    #[error("cannot use the raft snapshot {}: {source}", .path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The snapshot file exists but is not a valid snapshot.
    #[error("the raft snapshot {} is damaged: {reason}; remove this manager from the cluster and join it again with an empty data directory", .path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The snapshot file and the meta of what it holds.
struct SnapshotFile {
    dir: PathBuf,
    path: PathBuf,
    /// `None` while there is no file; the lock also serializes writers.
    current: Mutex<Option<SnapshotMeta>>,
}

impl SnapshotFile {
    /// Persists a snapshot unless (for built ones) the file already holds
    /// one at least as new.
    fn save(&self, meta: &SnapshotMeta, data: &[u8], installing: bool) -> io::Result<()> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if !installing
            && let Some(on_disk) = current.as_ref()
            && on_disk.last_log_id >= meta.last_log_id
        {
            return Ok(());
        }
        write_snapshot(&self.dir, &self.path, meta, data)?;
        *current = Some(meta.clone());
        Ok(())
    }

    fn load(&self) -> io::Result<Option<(SnapshotMeta, Vec<u8>)>> {
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current.is_none() {
            return Ok(None);
        }
        read_snapshot(&self.path)
            .map(Some)
            .map_err(|reason| io::Error::new(io::ErrorKind::InvalidData, reason))
    }
}

fn write_snapshot(dir: &Path, path: &Path, meta: &SnapshotMeta, data: &[u8]) -> io::Result<()> {
    let context = |what: &str, e: io::Error| {
        io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
    };
    let meta_bytes = postcard::to_allocvec(meta).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("cannot encode the snapshot meta: {e}"),
        )
    })?;
    let meta_len = u32::try_from(meta_bytes.len()).map_err(|_| {
        io::Error::new(io::ErrorKind::InvalidData, "the snapshot meta is too large")
    })?;
    let tmp = dir.join(SNAPSHOT_TMP_NAME);
    let write = || -> io::Result<()> {
        let mut out = BufWriter::new(File::create(&tmp)?);
        let mut hasher = Sha256::new();
        let data_len = data.len() as u64;
        let parts: [&[u8]; 6] = [
            &MAGIC,
            &SNAPSHOT_FORMAT.to_le_bytes(),
            &meta_len.to_le_bytes(),
            &meta_bytes,
            &data_len.to_le_bytes(),
            data,
        ];
        for part in parts {
            hasher.update(part);
            out.write_all(part)?;
        }
        out.write_all(&hasher.finalize())?;
        let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.sync_all()
    };
    write().map_err(|e| context("cannot write the snapshot", e))?;
    std::fs::rename(&tmp, path).map_err(|e| context("cannot move the new snapshot to", e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| context("cannot sync the directory of", e))
}

/// Reads and checks a snapshot file; the error says what is wrong and names
/// the file.
fn read_snapshot(path: &Path) -> Result<(SnapshotMeta, Vec<u8>), String> {
    let mut bytes =
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let bad = |what: &str| format!("the snapshot {} is damaged: {what}", path.display());
    let header = MAGIC.len() + 8;
    if bytes.len() < header + 8 + DIGEST_LEN || bytes[..MAGIC.len()] != MAGIC {
        return Err(bad("it is not an rswarm snapshot"));
    }
    let body_len = bytes.len() - DIGEST_LEN;
    let (body, digest) = bytes.split_at(body_len);
    if Sha256::digest(body).as_slice() != digest {
        return Err(bad("its checksum does not match"));
    }
    let u32_at = |at: usize| {
        body.get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
    };
    let format = u32_at(MAGIC.len()).ok_or_else(|| bad("truncated header"))?;
    if format != SNAPSHOT_FORMAT {
        return Err(bad(&format!(
            "unknown format {format}; this rswarm reads format {SNAPSHOT_FORMAT}"
        )));
    }
    let meta_len = u32_at(MAGIC.len() + 4).ok_or_else(|| bad("truncated header"))? as usize;
    let meta_end = header + meta_len;
    let meta_bytes = body
        .get(header..meta_end)
        .ok_or_else(|| bad("truncated meta"))?;
    let meta: SnapshotMeta = postcard::from_bytes(meta_bytes)
        .map_err(|e| bad(&format!("its meta cannot be decoded: {e}")))?;
    let data_len = body
        .get(meta_end..meta_end + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| bad("truncated data length"))?;
    let data_start = meta_end + 8;
    if (body.len() - data_start) as u64 != data_len {
        return Err(bad("its data length does not match the file size"));
    }
    bytes.truncate(body_len);
    let data = bytes.split_off(data_start);
    Ok((meta, data))
}

/// Decodes a snapshot's data into a state at the meta's version.
fn decode_state(meta: &SnapshotMeta, data: &[u8]) -> Result<StoreState, String> {
    let snapshot = StoreSnapshot::decode(data)
        .map_err(|e| format!("its store data cannot be decoded: {e}"))?;
    let state = StoreState::from_snapshot(snapshot).map_err(|e| e.to_string())?;
    let expected = meta.last_log_id.as_ref().map_or(0, |l| l.index);
    if state.version() != expected {
        return Err(format!(
            "its store is at version {} but its meta says {expected}",
            state.version()
        ));
    }
    Ok(state)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(format!("snapshot task failed: {e}")))?
}

/// The Raft state machine. See the module doc.
pub struct StateMachine {
    store: Store,
    applied: Option<LogId>,
    membership: StoredMembership,
    file: Arc<SnapshotFile>,
}

impl std::fmt::Debug for StateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachine")
            .field("applied", &self.applied)
            .field("snapshot", &self.file.path)
            .finish()
    }
}

impl StateMachine {
    /// Opens the state machine of `dir` over `store`: loads
    /// `<dir>/snapshot.bin` into the store if there is one (else empties the
    /// store), and removes a half-written temp file.
    pub fn open(dir: &Path, store: Store) -> Result<StateMachine, StateMachineError> {
        let path = dir.join(SNAPSHOT_FILE_NAME);
        let io_err = |path: &Path, source| StateMachineError::Io {
            path: path.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let tmp = dir.join(SNAPSHOT_TMP_NAME);
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(&tmp, e)),
            _ => {}
        }
        let mut sm = StateMachine {
            store,
            applied: None,
            membership: StoredMembership::default(),
            file: Arc::new(SnapshotFile {
                dir: dir.to_owned(),
                path: path.clone(),
                current: Mutex::new(None),
            }),
        };
        match std::fs::metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if sm.store.version() != 0 {
                    sm.store.install(StoreState::new());
                }
                return Ok(sm);
            }
            Err(e) => return Err(io_err(&path, e)),
            Ok(_) => {}
        }
        let corrupt = |reason: String| StateMachineError::Corrupt {
            path: path.clone(),
            reason,
        };
        let (meta, data) = read_snapshot(&path).map_err(corrupt)?;
        let state = decode_state(&meta, &data).map_err(corrupt)?;
        sm.store.install(state);
        sm.applied = meta.last_log_id;
        sm.membership = meta.last_membership.clone();
        *sm.file
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(meta);
        Ok(sm)
    }

    /// The store this state machine writes.
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn apply_entry(
        &mut self,
        entry: openraft::alias::EntryOf<TypeConfig>,
    ) -> io::Result<ApplyOutcome> {
        let log_id = entry.log_id;
        let index = log_id.index;
        let floor = self.store.version();
        let in_order = match &entry.payload {
            EntryPayload::Normal(_) => index > floor,
            _ => index >= floor,
        } && self.applied.as_ref().is_none_or(|a| index > a.index);
        if !in_order {
            return Err(io::Error::other(format!(
                "entry {index} arrived out of order (applied: {:?}, store version {floor}): the state machine would diverge",
                self.applied
            )));
        }
        let outcome = match entry.payload {
            EntryPayload::Normal(proposal) => self.store.apply(index, &proposal),
            EntryPayload::Blank => {
                self.store.advance_to(index);
                Ok(index)
            }
            EntryPayload::Membership(membership) => {
                self.membership = StoredMembership::new(Some(log_id), membership);
                self.store.advance_to(index);
                Ok(index)
            }
        };
        self.applied = Some(log_id);
        Ok(outcome)
    }

    fn builder(&self) -> SnapshotBuilder {
        SnapshotBuilder {
            meta: SnapshotMeta {
                last_log_id: self.applied,
                last_membership: self.membership.clone(),
            },
            snapshot: Some(self.store.read(StoreState::to_snapshot)),
            file: self.file.clone(),
        }
    }
}

/// Builds and persists a snapshot of the state captured when it was made.
pub struct SnapshotBuilder {
    meta: SnapshotMeta,
    snapshot: Option<StoreSnapshot>,
    file: Arc<SnapshotFile>,
}

impl std::fmt::Debug for SnapshotBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotBuilder")
            .field("meta", &self.meta)
            .finish()
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TypeConfig, SnapshotData>, io::Error> {
        let meta = self.meta.clone();
        let snapshot = self
            .snapshot
            .take()
            .ok_or_else(|| io::Error::other("a snapshot builder builds once"))?;
        let file = self.file.clone();
        blocking(move || {
            let data = snapshot.encode_to_vec();
            file.save(&meta, &data, false)?;
            Ok(Snapshot {
                meta,
                snapshot: data,
            })
        })
        .await
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let outcome = self.apply_entry(entry)?;
            if let Some(responder) = responder {
                responder.send(outcome);
            }
        }
        Ok(())
    }

    async fn try_create_snapshot_builder(&mut self, _force: bool) -> Option<SnapshotBuilder> {
        Some(self.builder())
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        self.builder()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        let file = self.file.clone();
        let owned_meta = meta.clone();
        let state = blocking(move || {
            let state = decode_state(&owned_meta, &snapshot).map_err(|reason| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the snapshot to install is invalid: {reason}"),
                )
            })?;
            // Durable before the store changes: a crash in between restarts
            // from the new snapshot.
            file.save(&owned_meta, &snapshot, true)?;
            Ok(state)
        })
        .await?;
        self.store.install(state);
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<TypeConfig, SnapshotData>>, io::Error> {
        let file = self.file.clone();
        let loaded = blocking(move || file.load()).await?;
        Ok(loaded.map(|(meta, snapshot)| Snapshot { meta, snapshot }))
    }
}

#[cfg(test)]
#[path = "storage_tests.rs"]
mod tests;
