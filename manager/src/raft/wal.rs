//! The Raft log's file format: an append-only write-ahead log of records in
//! segment files, `<raft dir>/wal/<seq>.wal`, written by one thread.
//!
//! Owns: the bytes on disk (record framing, checksums, segment files), the
//! recovery scan, and where each live entry's record is ([`EntryIndex`]). It
//! knows nothing of openraft's types: payloads are opaque bytes that
//! [`super::log_store`] encodes.
//!
//! Layout: a segment starts with [`MAGIC`], then records
//! `len: u32 LE | crc32: u32 LE | kind: u8 | payload`, where `len` counts
//! `kind` and `payload` and the CRC covers them. Kinds: an entry (its index,
//! then its bytes), the vote, the committed log id, a truncation, a purge.
//!
//! Invariants:
//! - A batch is written with one `pwrite` and made durable with one
//!   `fdatasync` before [`Wal::write`] returns: group commit. The one
//!   exception is a batch of nothing but committed ids: it skips its own
//!   `fdatasync` and becomes durable with the next batch that syncs. Losing
//!   it in a crash only means re-applying entries the log holds, and
//!   syncing it would put an extra `fdatasync` between every two writes.
//! - Every segment after the first starts with the vote, committed id and
//!   purged id current when it was made, so an old segment holds nothing
//!   that a newer one does not supersede except entries. Only a prefix of
//!   segments is ever deleted, and only once every live entry in it is
//!   purged.
//! - The active segment is grown ahead of its writes ([`PREALLOCATE_BYTES`]
//!   at a time), so a segment may end in zeros: space allocated but not yet
//!   written. Zeros never start a record (a record's length is at least 1).
//! - Recovery replays every record in order, up to the end of the file or
//!   to a tail of zeros. Only the last segment may end in a torn record (a
//!   crash in the middle of a write: the record runs past the end of the
//!   file, or nothing but zeros follows it); it is cut off. Any other damage
//!   is an error that names the file.
//! - The directory is locked while open: two processes never share a log.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use thiserror::Error;

/// The log's directory inside the manager's Raft directory.
pub const WAL_DIR_NAME: &str = "wal";
/// First bytes of every segment: the format and its version.
pub const MAGIC: [u8; 8] = *b"RSWWAL1\n";
const LOCK_FILE_NAME: &str = "LOCK";
const SEGMENT_SUFFIX: &str = ".wal";
/// `len` and `crc`.
const RECORD_HEADER_LEN: usize = 8;

/// A segment is closed and a new one begun once it grows past this: small
/// enough that purged entries free their space soon after a snapshot, large
/// enough that rolling (a file and a directory fsync) is rare.
pub const SEGMENT_BYTES_TARGET: u64 = 64 * 1024 * 1024;
/// How far ahead of its writes the active segment is allocated. Appends
/// then land in blocks the file system already holds for the file, so the
/// `fdatasync` of a batch has no new file size or extent to commit to the
/// file system's journal: on ext4, 130 µs instead of 190–240 µs, and one
/// sleep fewer per write. One allocation per 4 MiB of log.
pub const PREALLOCATE_BYTES: u64 = 4 * 1024 * 1024;
/// Largest record the log accepts or reads back: a proposal is at most
/// `PROPOSAL_SIZE_MAX` (3 MiB) and a membership entry is small, so anything
/// bigger is damage, not data.
pub const RECORD_BYTES_MAX: usize = 8 * 1024 * 1024;
const _: () = assert!(crate::store::limits::PROPOSAL_SIZE_MAX + 1024 < RECORD_BYTES_MAX);

const KIND_ENTRY: u8 = 1;
const KIND_VOTE: u8 = 2;
const KIND_COMMITTED: u8 = 3;
const KIND_TRUNCATE: u8 = 4;
const KIND_PURGE: u8 = 5;

/// Why the log could not be opened. Messages name the file.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum WalError {
    /// A file or the directory cannot be created, read or locked.
    #[error("cannot open the raft log {}: {reason}", .path.display())]
    Open {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A segment's contents are not a valid log.
    #[error("the raft log {} is damaged: {reason}; remove this manager from the cluster and join it again with an empty data directory", .path.display())]
    Corrupt {
        /// The damaged segment.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// One change to the log, as [`Wal::write`] takes it.
#[derive(Debug, Clone, Copy)]
pub enum Record<'a> {
    /// Log entry `index`, encoded.
    Entry {
        /// Its log index.
        index: u64,
        /// Its encoding.
        bytes: &'a [u8],
    },
    /// The vote, encoded.
    Vote(&'a [u8]),
    /// The committed log id, encoded, or none.
    Committed(Option<&'a [u8]>),
    /// Entries from this index on are gone.
    Truncate {
        /// The first removed index.
        from: u64,
    },
    /// Entries up to this index are gone; `bytes` encodes the purged log id.
    Purge {
        /// The last removed index.
        upto: u64,
        /// The purged log id, encoded.
        bytes: &'a [u8],
    },
}

/// Where one entry's record is. Cheap to clone; keeps its segment file open
/// while a reader uses it, even if the segment is deleted meanwhile.
#[derive(Debug, Clone)]
pub struct Location {
    file: Arc<SegmentFile>,
    offset: u64,
    len: u32,
}

#[derive(Debug)]
struct SegmentFile {
    seq: u64,
    path: PathBuf,
    file: File,
}

impl Location {
    /// The entry's bytes, checked against the record's checksum.
    pub fn read(&self) -> io::Result<Vec<u8>> {
        let mut record = vec![0u8; self.len as usize];
        self.file.file.read_exact_at(&mut record, self.offset)?;
        let path = &self.file.path;
        match parse_record(&record) {
            Parsed::Record {
                kind: KIND_ENTRY,
                payload,
                ..
            } if payload.len() >= 8 => Ok(payload[8..].to_vec()),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "raft log {}: the entry record at offset {} is damaged",
                    path.display(),
                    self.offset
                ),
            )),
        }
    }
}

/// The live entries' locations: a contiguous run of indexes.
#[derive(Debug, Default, Clone)]
pub struct EntryIndex {
    /// Index of `locs[0]`.
    first: u64,
    locs: VecDeque<Location>,
}

impl EntryIndex {
    /// The index after the last entry, if there is any entry.
    fn next(&self) -> Option<u64> {
        (!self.locs.is_empty()).then(|| self.first + self.locs.len() as u64)
    }

    /// The location of entry `index`.
    pub fn get(&self, index: u64) -> Option<&Location> {
        let offset = index.checked_sub(self.first)?;
        self.locs.get(usize::try_from(offset).ok()?)
    }

    /// The last entry's index and location.
    pub fn last(&self) -> Option<(u64, &Location)> {
        let loc = self.locs.back()?;
        Some((self.first + self.locs.len() as u64 - 1, loc))
    }

    /// How many entries are live.
    pub fn len(&self) -> usize {
        self.locs.len()
    }

    /// Whether no entry is live.
    pub fn is_empty(&self) -> bool {
        self.locs.is_empty()
    }

    /// Records entry `index`; it must follow the last one (or start an
    /// empty index). Returns false, changing nothing, if it would leave a
    /// hole.
    fn push(&mut self, index: u64, loc: Location) -> bool {
        match self.next() {
            None => {}
            Some(next) if next == index => {}
            Some(next) if index < next => self.truncate(index),
            Some(_) => return false,
        }
        if self.locs.is_empty() {
            self.first = index;
        }
        self.locs.push_back(loc);
        true
    }

    /// Forgets entries from `from` on.
    fn truncate(&mut self, from: u64) {
        let keep = from.saturating_sub(self.first);
        self.locs
            .truncate(usize::try_from(keep).unwrap_or(usize::MAX));
    }

    /// Forgets entries up to `upto`.
    fn purge(&mut self, upto: u64) {
        while !self.locs.is_empty() && self.first <= upto {
            self.locs.pop_front();
            self.first += 1;
        }
        if self.locs.is_empty() {
            self.first = upto.saturating_add(1);
        }
    }

    /// Applies a durable batch, given the locations [`Wal::write`] returned.
    pub fn publish(&mut self, records: &[Record<'_>], written: &[(u64, Location)]) {
        let mut locs = written.iter();
        for record in records {
            let loc = match record {
                Record::Entry { .. } => locs.next().map(|(_, l)| l.clone()),
                _ => None,
            };
            self.apply(record, loc);
        }
    }

    /// Applies the effect of `record` written at `loc` (for entries).
    fn apply(&mut self, record: &Record<'_>, loc: Option<Location>) -> bool {
        match (record, loc) {
            (Record::Entry { index, .. }, Some(loc)) => self.push(*index, loc),
            (Record::Truncate { from }, _) => {
                self.truncate(*from);
                true
            }
            (Record::Purge { upto, .. }, _) => {
                self.purge(*upto);
                true
            }
            _ => true,
        }
    }
}

/// The metadata records, as last written (their payloads).
#[derive(Debug, Default, Clone)]
pub struct Meta {
    /// The vote.
    pub vote: Option<Vec<u8>>,
    /// The committed log id.
    pub committed: Option<Vec<u8>>,
    /// The last purged index and its log id.
    pub purged: Option<(u64, Vec<u8>)>,
}

impl Meta {
    fn apply(&mut self, record: &Record<'_>) {
        match record {
            Record::Vote(b) => self.vote = Some(b.to_vec()),
            Record::Committed(b) => self.committed = b.map(<[u8]>::to_vec),
            Record::Purge { upto, bytes } => self.purged = Some((*upto, bytes.to_vec())),
            Record::Entry { .. } | Record::Truncate { .. } => {}
        }
    }

    /// The records that restate this metadata at the start of a segment.
    fn records(&self) -> Vec<Record<'_>> {
        let mut out = Vec::new();
        if let Some(v) = &self.vote {
            out.push(Record::Vote(v));
        }
        // Even when cleared: older segments may still say otherwise.
        out.push(Record::Committed(self.committed.as_deref()));
        if let Some((upto, bytes)) = &self.purged {
            out.push(Record::Purge { upto: *upto, bytes });
        }
        out
    }
}

/// What recovery found.
#[derive(Debug)]
pub struct Recovered {
    /// Vote, committed and purged ids.
    pub meta: Meta,
    /// The live entries.
    pub entries: EntryIndex,
}

/// One segment as the writer tracks it.
#[derive(Debug)]
struct Segment {
    file: Arc<SegmentFile>,
    /// The highest live entry index in it, if any.
    max_index: Option<u64>,
}

/// The open log: owned by its writer thread.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    /// Oldest first; the last one is written to.
    segments: VecDeque<Segment>,
    /// Bytes in the last segment.
    active_len: u64,
    /// The last segment's file length: `active_len` plus the zeros
    /// allocated ahead of it.
    allocated: u64,
    /// Cleared when the file system cannot allocate ahead (no `fallocate`):
    /// appends then grow the file as they go.
    preallocate: bool,
    meta: Meta,
    /// Roll to a new segment past this many bytes.
    segment_target: u64,
    /// `fdatasync`s of batches so far.
    syncs: u64,
    _lock: File,
}

fn open_err(path: &Path, e: impl std::fmt::Display) -> WalError {
    WalError::Open {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}{SEGMENT_SUFFIX}"))
}

/// The sequence numbers of the segments in `dir`, oldest first.
fn list_segments(dir: &Path) -> Result<Vec<u64>, WalError> {
    let mut seqs = Vec::new();
    for item in std::fs::read_dir(dir).map_err(|e| open_err(dir, e))? {
        let name = item.map_err(|e| open_err(dir, e))?.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(SEGMENT_SUFFIX)) else {
            continue;
        };
        match stem.parse::<u64>() {
            Ok(seq) => seqs.push(seq),
            Err(_) => {
                return Err(WalError::Corrupt {
                    path: dir.join(&name),
                    reason: "a segment name must be a number".to_owned(),
                });
            }
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Encodes one record onto `buf`.
fn encode_record(buf: &mut Vec<u8>, record: &Record<'_>) {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; 8]);
    match record {
        Record::Entry { index, bytes } => {
            buf.push(KIND_ENTRY);
            buf.extend_from_slice(&index.to_le_bytes());
            buf.extend_from_slice(bytes);
        }
        Record::Vote(bytes) => {
            buf.push(KIND_VOTE);
            buf.extend_from_slice(bytes);
        }
        Record::Committed(bytes) => {
            buf.push(KIND_COMMITTED);
            if let Some(bytes) = bytes {
                buf.push(1);
                buf.extend_from_slice(bytes);
            } else {
                buf.push(0);
            }
        }
        Record::Truncate { from } => {
            buf.push(KIND_TRUNCATE);
            buf.extend_from_slice(&from.to_le_bytes());
        }
        Record::Purge { upto, bytes } => {
            buf.push(KIND_PURGE);
            buf.extend_from_slice(&upto.to_le_bytes());
            buf.extend_from_slice(bytes);
        }
    }
    let body = &buf[start + 8..];
    // Bounded by `RECORD_BYTES_MAX`, which the caller checks.
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    let crc = crc32fast::hash(body);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

enum Parsed<'a> {
    /// A whole, intact record of `total` bytes.
    Record {
        kind: u8,
        payload: &'a [u8],
        total: usize,
    },
    /// The bytes end inside the record.
    Incomplete,
    /// The record is whole but its length or checksum is wrong.
    Bad(String),
}

fn parse_record(bytes: &[u8]) -> Parsed<'_> {
    let Some(header) = bytes.get(..8) else {
        return Parsed::Incomplete;
    };
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len == 0 || len > RECORD_BYTES_MAX {
        return Parsed::Bad(format!("a record claims {len} bytes"));
    }
    let Some(body) = bytes.get(8..8 + len) else {
        return Parsed::Incomplete;
    };
    if crc32fast::hash(body) != crc {
        return Parsed::Bad("a record's checksum does not match".to_owned());
    }
    Parsed::Record {
        kind: body[0],
        payload: &body[1..],
        total: 8 + len,
    }
}

/// A record's payload as a [`Record`], if it is well formed.
fn decode_record(kind: u8, payload: &[u8]) -> Option<Record<'_>> {
    let u64_at = |b: &[u8]| {
        b.get(..8)
            .and_then(|s| s.try_into().ok())
            .map(u64::from_le_bytes)
    };
    Some(match kind {
        KIND_ENTRY => Record::Entry {
            index: u64_at(payload)?,
            bytes: &payload[8..],
        },
        KIND_VOTE => Record::Vote(payload),
        KIND_COMMITTED => match payload.first()? {
            0 => Record::Committed(None),
            1 => Record::Committed(Some(&payload[1..])),
            _ => return None,
        },
        KIND_TRUNCATE => Record::Truncate {
            from: u64_at(payload)?,
        },
        KIND_PURGE => Record::Purge {
            upto: u64_at(payload)?,
            bytes: &payload[8..],
        },
        _ => return None,
    })
}

/// Replays one segment into `meta` and `entries`. Returns the length of its
/// valid prefix, which is shorter than the file only for a torn tail of the
/// last segment.
fn replay_segment(
    segment: &Segment,
    is_last: bool,
    meta: &mut Meta,
    entries: &mut EntryIndex,
) -> Result<u64, WalError> {
    let path = &segment.file.path;
    let corrupt = |reason: String| WalError::Corrupt {
        path: path.clone(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| open_err(path, e))?;
    if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
        // A segment made just before a crash may not have its magic yet.
        if is_last && bytes.len() <= MAGIC.len() && bytes.iter().all(|b| *b == 0) {
            return Ok(0);
        }
        return Err(corrupt(
            "it is not an rswarm raft log segment (wrong magic)".to_owned(),
        ));
    }
    let mut offset = MAGIC.len();
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        if is_unwritten(rest) {
            break;
        }
        match parse_record(rest) {
            Parsed::Record {
                kind,
                payload,
                total,
            } => {
                let record = decode_record(kind, payload).ok_or_else(|| {
                    corrupt(format!("the record at offset {offset} is malformed"))
                })?;
                let loc = matches!(record, Record::Entry { .. }).then(|| Location {
                    file: segment.file.clone(),
                    offset: offset as u64,
                    len: total as u32,
                });
                if !entries.apply(&record, loc) {
                    return Err(corrupt(format!(
                        "the entry at offset {offset} leaves a hole in the log"
                    )));
                }
                meta.apply(&record);
                offset += total;
            }
            torn if is_last && is_torn_tail(&torn, rest) => {
                tracing::warn!(
                    path = %path.display(),
                    offset,
                    dropped_bytes = rest.len(),
                    "cutting off a torn write at the end of the raft log"
                );
                return Ok(offset as u64);
            }
            Parsed::Incomplete => {
                return Err(corrupt(format!(
                    "the record at offset {offset} is cut short"
                )));
            }
            Parsed::Bad(reason) => return Err(corrupt(format!("at offset {offset}: {reason}"))),
        }
    }
    Ok(offset as u64)
}

/// Space allocated ahead of the writes and never written: nothing but zeros.
/// A record starts with its non-zero length, so only the first four bytes
/// decide whether the whole rest must be looked at.
fn is_unwritten(rest: &[u8]) -> bool {
    rest.iter().take(4).all(|b| *b == 0) && rest.iter().all(|b| *b == 0)
}

/// A bad record is a torn write when the file ends inside it, or when
/// nothing but zeros follows its start (space the file system allocated but
/// never wrote).
fn is_torn_tail(parsed: &Parsed<'_>, rest: &[u8]) -> bool {
    match parsed {
        Parsed::Incomplete => true,
        Parsed::Bad(_) => {
            let len = rest
                .get(..4)
                .map_or(0, |h| u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize);
            let end = RECORD_HEADER_LEN.saturating_add(len).min(rest.len());
            let after = if (1..=RECORD_BYTES_MAX).contains(&len) {
                &rest[end..]
            } else {
                &rest[RECORD_HEADER_LEN.min(rest.len())..]
            };
            after.iter().all(|b| *b == 0)
        }
        Parsed::Record { .. } => false,
    }
}

/// Allocates `file` from `allocated` up to past `end`, in whole
/// [`PREALLOCATE_BYTES`]; returns the new length. The new space reads as
/// zeros, and the next `fdatasync` makes the new length durable.
fn allocate_ahead(file: &File, allocated: u64, end: u64) -> rustix::io::Result<u64> {
    let target = end.next_multiple_of(PREALLOCATE_BYTES);
    rustix::fs::fallocate(
        file,
        rustix::fs::FallocateFlags::empty(),
        allocated,
        target - allocated,
    )?;
    Ok(target)
}

impl Wal {
    /// Opens (creating if needed) the log in `dir`, locks it, and replays it.
    pub fn open(dir: &Path) -> Result<(Wal, Recovered), WalError> {
        std::fs::create_dir_all(dir).map_err(|e| open_err(dir, e))?;
        let lock_path = dir.join(LOCK_FILE_NAME);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| open_err(&lock_path, e))?;
        lock.try_lock().map_err(|_| {
            open_err(
                dir,
                "another process has it open: is a daemon with this data dir already running?",
            )
        })?;
        let mut meta = Meta::default();
        let mut entries = EntryIndex::default();
        let mut segments = VecDeque::new();
        let seqs = list_segments(dir)?;
        let mut active_len = 0;
        for (i, seq) in seqs.iter().enumerate() {
            let path = segment_path(dir, *seq);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| open_err(&path, e))?;
            let segment = Segment {
                file: Arc::new(SegmentFile {
                    seq: *seq,
                    path,
                    file,
                }),
                max_index: None,
            };
            let is_last = i + 1 == seqs.len();
            let valid = replay_segment(&segment, is_last, &mut meta, &mut entries)?;
            if is_last {
                active_len = valid;
            }
            segments.push_back(segment);
        }
        // What each segment still holds, from the entries that survived
        // (in log order, so the last one seen per segment is its highest).
        let mut max_by_seq = std::collections::HashMap::new();
        for (i, loc) in entries.locs.iter().enumerate() {
            max_by_seq.insert(loc.file.seq, entries.first + i as u64);
        }
        for segment in segments.iter_mut() {
            segment.max_index = max_by_seq.get(&segment.file.seq).copied();
        }
        let mut wal = Wal {
            dir: dir.to_owned(),
            segments,
            active_len,
            allocated: active_len,
            preallocate: true,
            meta: meta.clone(),
            segment_target: SEGMENT_BYTES_TARGET,
            syncs: 0,
            _lock: lock,
        };
        wal.check_start(&meta, &entries)?;
        wal.finish_recovery()?;
        Ok((wal, Recovered { meta, entries }))
    }

    /// The live entries must start right after the purged id.
    fn check_start(&self, meta: &Meta, entries: &EntryIndex) -> Result<(), WalError> {
        if let (Some((upto, _)), false) = (&meta.purged, entries.is_empty())
            && entries.first != upto + 1
        {
            let path = self
                .segments
                .front()
                .map_or_else(|| self.dir.clone(), |s| s.file.path.clone());
            return Err(WalError::Corrupt {
                path,
                reason: format!(
                    "entries {} to {} are missing",
                    upto + 1,
                    entries.first.saturating_sub(1)
                ),
            });
        }
        Ok(())
    }

    /// Cuts a torn tail off, or starts the first segment.
    fn finish_recovery(&mut self) -> Result<(), WalError> {
        match self.segments.back() {
            None => self.start_segment(1).map_err(|e| open_err(&self.dir, e)),
            Some(last) => {
                let path = last.file.path.clone();
                let len = last
                    .file
                    .file
                    .metadata()
                    .map_err(|e| open_err(&path, e))?
                    .len();
                if self.active_len == 0 {
                    // Made just before a crash, before its magic was written.
                    let seq = last.file.seq;
                    self.segments.pop_back();
                    std::fs::remove_file(&path).map_err(|e| open_err(&path, e))?;
                    return self.start_segment(seq).map_err(|e| open_err(&self.dir, e));
                }
                if len > self.active_len {
                    let file = &last.file.file;
                    file.set_len(self.active_len)
                        .and_then(|()| file.sync_all())
                        .map_err(|e| open_err(&path, e))?;
                }
                Ok(())
            }
        }
    }

    /// Creates segment `seq`, starting with the magic and the metadata.
    fn start_segment(&mut self, seq: u64) -> io::Result<()> {
        let path = segment_path(&self.dir, seq);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        let mut buf = MAGIC.to_vec();
        for record in self.meta.records() {
            encode_record(&mut buf, &record);
        }
        file.write_all_at(&buf, 0)?;
        file.sync_data()?;
        sync_dir(&self.dir)?;
        self.active_len = buf.len() as u64;
        self.allocated = self.active_len;
        self.segments.push_back(Segment {
            file: Arc::new(SegmentFile { seq, path, file }),
            max_index: None,
        });
        Ok(())
    }

    /// Writes `records` durably (see the module's invariants for committed
    /// ids), in order. Returns the location of every entry written, in
    /// order. On error nothing may be assumed about what reached the disk:
    /// the caller must stop writing.
    pub fn write(&mut self, records: &[Record<'_>]) -> io::Result<Vec<(u64, Location)>> {
        if self.active_len >= self.segment_target {
            self.roll()?;
        }
        let segment = self
            .segments
            .back_mut()
            .ok_or_else(|| io::Error::other("the raft log has no open segment"))?;
        let mut buf = Vec::new();
        let mut written = Vec::new();
        for record in records {
            let start = buf.len();
            encode_record(&mut buf, record);
            let total = buf.len() - start;
            if total - RECORD_HEADER_LEN > RECORD_BYTES_MAX {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "a raft log record of {total} bytes is over the {RECORD_BYTES_MAX} byte limit"
                    ),
                ));
            }
            if let Record::Entry { index, .. } = record {
                let loc = Location {
                    file: segment.file.clone(),
                    offset: self.active_len + start as u64,
                    len: total as u32,
                };
                written.push((*index, loc));
            }
        }
        let end = self.active_len + buf.len() as u64;
        if self.preallocate && end > self.allocated {
            use rustix::io::Errno;
            match allocate_ahead(&segment.file.file, self.allocated, end) {
                Ok(allocated) => self.allocated = allocated,
                Err(e) if e == Errno::OPNOTSUPP || e == Errno::NOSYS => {
                    tracing::info!(path = %segment.file.path.display(), error = %e,
                        "the file system cannot allocate the raft log ahead of its writes; each write grows the file");
                    self.preallocate = false;
                }
                // A full disk, say: the write itself fails if it cannot fit.
                Err(_) => {}
            }
        }
        segment.file.file.write_all_at(&buf, self.active_len)?;
        self.allocated = self.allocated.max(end);
        if records.iter().any(|r| !matches!(r, Record::Committed(_))) {
            segment.file.file.sync_data()?;
            self.syncs += 1;
        }
        self.active_len += buf.len() as u64;
        for record in records {
            self.meta.apply(record);
            self.track_max_index(record);
        }
        self.delete_purged_segments();
        Ok(written)
    }

    /// Keeps each segment's highest live index current.
    fn track_max_index(&mut self, record: &Record<'_>) {
        match record {
            Record::Entry { index, .. } => {
                if let Some(last) = self.segments.back_mut() {
                    last.max_index = Some(*index);
                }
            }
            // Entries at `from` and above are dead wherever they are; what
            // a segment held below `from` is not known here, so keep a bound
            // that can only delay its deletion.
            Record::Truncate { from } => {
                for s in self.segments.iter_mut() {
                    s.max_index = s.max_index.map(|m| m.min(from.saturating_sub(1)));
                }
            }
            _ => {}
        }
    }

    /// Begins the next segment, after giving back the space the current
    /// one was allocated ahead (recovery reads a tail of zeros as the end
    /// all the same, so this needs no sync).
    fn roll(&mut self) -> io::Result<()> {
        let Some(current) = self.segments.back() else {
            return self.start_segment(1);
        };
        if self.allocated > self.active_len {
            current.file.file.set_len(self.active_len)?;
        }
        let next = current.file.seq + 1;
        self.start_segment(next)
    }

    /// Deletes the oldest segments while everything they hold is purged.
    fn delete_purged_segments(&mut self) {
        let purged = self.meta.purged.as_ref().map(|(upto, _)| *upto);
        while self.segments.len() > 1 {
            let Some(oldest) = self.segments.front() else {
                break;
            };
            let dead = match oldest.max_index {
                None => true,
                Some(max) => purged.is_some_and(|p| max <= p),
            };
            if !dead {
                break;
            }
            if let Err(e) = std::fs::remove_file(&oldest.file.path) {
                // Harmless: recovery replays it and its purge record wins.
                tracing::warn!(path = %oldest.file.path.display(), error = %e, "cannot delete a purged raft log segment");
                break;
            }
            self.segments.pop_front();
        }
    }

    /// The active segment's file length, zeros allocated ahead included.
    #[cfg(test)]
    pub(crate) fn allocated(&self) -> u64 {
        self.allocated
    }

    /// How many batches were made durable with an `fdatasync`.
    pub fn syncs(&self) -> u64 {
        self.syncs
    }

    /// How many segment files the log has.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Rolls segments past `bytes` instead of [`SEGMENT_BYTES_TARGET`], so
    /// tests can make many small segments.
    #[cfg(test)]
    pub(crate) fn set_segment_target(&mut self, bytes: u64) {
        self.segment_target = bytes;
    }
}

#[cfg(test)]
#[path = "wal_tests.rs"]
mod tests;
