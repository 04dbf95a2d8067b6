//! Tests of the write-ahead log's format: recovery, torn tails, damage,
//! segment rolling and deletion, locking, and a model check.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::*;

fn entry(index: u64) -> Vec<u8> {
    format!("entry {index}").into_bytes()
}

fn append(wal: &mut Wal, range: std::ops::RangeInclusive<u64>) {
    let bytes: Vec<(u64, Vec<u8>)> = range.map(|i| (i, entry(i))).collect();
    let records: Vec<Record<'_>> = bytes
        .iter()
        .map(|(index, bytes)| Record::Entry {
            index: *index,
            bytes,
        })
        .collect();
    wal.write(&records).unwrap();
}

/// The live entries, read back through their locations.
fn entries(recovered: &Recovered) -> BTreeMap<u64, Vec<u8>> {
    let index = &recovered.entries;
    (0..index.len() as u64)
        .map(|i| index.first + i)
        .map(|i| (i, index.get(i).unwrap().read().unwrap()))
        .collect()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    out.sort();
    out
}

fn expected(range: std::ops::RangeInclusive<u64>) -> BTreeMap<u64, Vec<u8>> {
    range.map(|i| (i, entry(i))).collect()
}

#[test]
fn entries_and_metadata_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut wal, recovered) = Wal::open(dir.path()).unwrap();
        assert!(recovered.entries.is_empty());
        append(&mut wal, 1..=10);
        wal.write(&[
            Record::Vote(b"vote"),
            Record::Committed(Some(b"c8")),
            Record::Truncate { from: 9 },
            Record::Purge {
                upto: 3,
                bytes: b"p3",
            },
        ])
        .unwrap();
    }
    let (_wal, recovered) = Wal::open(dir.path()).unwrap();
    assert_eq!(entries(&recovered), expected(4..=8));
    assert_eq!(recovered.meta.vote.as_deref(), Some(&b"vote"[..]));
    assert_eq!(recovered.meta.committed.as_deref(), Some(&b"c8"[..]));
    assert_eq!(recovered.meta.purged, Some((3, b"p3".to_vec())));
}

#[test]
fn committed_ids_alone_wait_for_the_next_sync() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut wal, _) = Wal::open(dir.path()).unwrap();
        append(&mut wal, 1..=1);
        assert_eq!(wal.syncs(), 1);
        wal.write(&[Record::Committed(Some(b"c1"))]).unwrap();
        assert_eq!(wal.syncs(), 1, "a committed id alone must not sync");
        append(&mut wal, 2..=2);
        assert_eq!(wal.syncs(), 2);
    }
    // Written all the same: it is read back after a clean close.
    let (_wal, recovered) = Wal::open(dir.path()).unwrap();
    assert_eq!(recovered.meta.committed.as_deref(), Some(&b"c1"[..]));
    assert_eq!(entries(&recovered), expected(1..=2));
}

#[test]
fn a_committed_id_can_be_cleared() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut wal, _) = Wal::open(dir.path()).unwrap();
        wal.write(&[Record::Committed(Some(b"c")), Record::Committed(None)])
            .unwrap();
    }
    let (_wal, recovered) = Wal::open(dir.path()).unwrap();
    assert_eq!(recovered.meta.committed, None);
}

/// The length of what was written to a segment: its file without the zeros
/// allocated ahead of the writes.
fn written_len(path: &Path) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1) as u64
}

/// Writes `bytes` where the log's next record would go, over the zeros
/// allocated ahead, as a write cut short by a crash would.
fn write_at_the_end(path: &Path, bytes: &[u8]) {
    let end = written_len(path);
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .write_all_at(bytes, end)
        .unwrap();
}

/// Appends `bytes` past the end of the file.
fn append_bytes(path: &Path, bytes: &[u8]) {
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

#[test]
fn a_torn_record_at_the_end_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut wal, _) = Wal::open(dir.path()).unwrap();
        append(&mut wal, 1..=3);
    }
    let segment = segments(dir.path()).pop().unwrap();
    let good_len = written_len(&segment);
    // A record header promising 100 bytes, and only 10 of them.
    let mut torn = 100u32.to_le_bytes().to_vec();
    torn.extend_from_slice(&[7; 14]);
    write_at_the_end(&segment, &torn);
    {
        let (mut wal, recovered) = Wal::open(dir.path()).unwrap();
        assert_eq!(entries(&recovered), expected(1..=3));
        assert_eq!(std::fs::metadata(&segment).unwrap().len(), good_len);
        append(&mut wal, 4..=4);
    }
    let (_wal, recovered) = Wal::open(dir.path()).unwrap();
    assert_eq!(entries(&recovered), expected(1..=4));
}

#[test]
fn zeros_after_the_last_record_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut wal, _) = Wal::open(dir.path()).unwrap();
        append(&mut wal, 1..=3);
    }
    let segment = segments(dir.path()).pop().unwrap();
    append_bytes(&segment, &[0; 4096]);
    let (_wal, recovered) = Wal::open(dir.path()).unwrap();
    assert_eq!(entries(&recovered), expected(1..=3));
}

/// Flips one byte `back` bytes before the end of what was written.
fn flip_from_end(path: &Path, back: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    let at = (written_len(path) - back) as usize;
    bytes[at] ^= 0xff;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn writes_land_in_space_allocated_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let segment;
    {
        let (mut wal, _) = Wal::open(dir.path()).unwrap();
        append(&mut wal, 1..=3);
        segment = segments(dir.path()).pop().unwrap();
        assert_eq!(wal.allocated(), PREALLOCATE_BYTES);
        assert_eq!(
            std::fs::metadata(&segment).unwrap().len(),
            PREALLOCATE_BYTES
        );
        assert!(written_len(&segment) < PREALLOCATE_BYTES);
        // A batch past the allocated space allocates the next stretch.
        let big = vec![1u8; PREALLOCATE_BYTES as usize];
        wal.write(&[Record::Entry {
            index: 4,
            bytes: &big,
        }])
        .unwrap();
        assert_eq!(wal.allocated(), 2 * PREALLOCATE_BYTES);
        append(&mut wal, 5..=5);
    }
    // Reopened, the zeros are the end of the log, and are given back.
    let (_wal, recovered) = Wal::open(dir.path()).unwrap();
    assert_eq!(recovered.entries.len(), 5);
    assert_eq!(recovered.entries.get(5).unwrap().read().unwrap(), entry(5));
    assert_eq!(
        std::fs::metadata(&segment).unwrap().len(),
        written_len(&segment)
    );
}

/// A log of entries 1 to `last`, one or two per segment; and its segments.
fn entries_in_small_segments(last: u64) -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut wal, _) = Wal::open(dir.path()).unwrap();
        wal.set_segment_target(100);
        for i in 1..=last {
            append(&mut wal, i..=i);
        }
    }
    let all = segments(dir.path());
    assert!(all.len() > 2, "{} segments", all.len());
    (dir, all)
}

#[test]
fn an_older_segment_may_end_in_allocated_zeros() {
    let (dir, all) = entries_in_small_segments(10);
    // A roll gives the space back without a sync: after a crash the older
    // segment may still have it.
    append_bytes(&all[0], &[0; 4096]);
    let (_wal, recovered) = Wal::open(dir.path()).unwrap();
    assert_eq!(entries(&recovered), expected(1..=10));
}

#[test]
fn damage_before_the_last_record_is_refused_by_path() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut wal, _) = Wal::open(dir.path()).unwrap();
        append(&mut wal, 1..=3);
    }
    let segment = segments(dir.path()).pop().unwrap();
    // Entry 3's record is the last 8 + 1 + 8 + 7 bytes; hit entry 2's payload.
    let record_len = (8 + 1 + 8 + entry(3).len()) as u64;
    flip_from_end(&segment, record_len + 2);
    let err = Wal::open(dir.path()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, WalError::Corrupt { .. }), "{msg}");
    assert!(msg.contains(&segment.display().to_string()), "{msg}");
    assert!(msg.contains("checksum"), "{msg}");
}

#[test]
fn a_segment_with_another_magic_is_refused_by_path() {
    let dir = tempfile::tempdir().unwrap();
    drop(Wal::open(dir.path()).unwrap());
    let segment = segments(dir.path()).pop().unwrap();
    std::fs::write(&segment, b"SQLite format 3\0 and more").unwrap();
    let msg = Wal::open(dir.path()).unwrap_err().to_string();
    assert!(msg.contains(&segment.display().to_string()), "{msg}");
    assert!(msg.contains("magic"), "{msg}");
}

#[test]
fn a_location_read_checks_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path()).unwrap();
    let payload = entry(1);
    let written = wal
        .write(&[Record::Entry {
            index: 1,
            bytes: &payload,
        }])
        .unwrap();
    let segment = segments(dir.path()).pop().unwrap();
    flip_from_end(&segment, 1);
    let err = written[0].1.read().unwrap_err();
    assert!(err.to_string().contains("damaged"), "{err}");
}

#[test]
fn segments_roll_and_purged_ones_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut wal, _) = Wal::open(dir.path()).unwrap();
        wal.set_segment_target(100);
        wal.write(&[Record::Vote(b"v1")]).unwrap();
        for i in 1..=40 {
            append(&mut wal, i..=i);
        }
        let before = wal.segment_count();
        assert!(before > 5, "{before} segments");
        wal.write(&[Record::Purge {
            upto: 30,
            bytes: b"p30",
        }])
        .unwrap();
        assert!(wal.segment_count() < before / 2, "{}", wal.segment_count());
    }
    // The vote lived in the first segment, which is gone: later segments
    // restated it.
    let (_wal, recovered) = Wal::open(dir.path()).unwrap();
    assert_eq!(recovered.meta.vote.as_deref(), Some(&b"v1"[..]));
    assert_eq!(recovered.meta.purged, Some((30, b"p30".to_vec())));
    assert_eq!(entries(&recovered), expected(31..=40));
}

#[test]
fn damage_inside_an_older_segment_is_refused() {
    let (dir, all) = entries_in_small_segments(10);
    let older = &all[0];
    let len = std::fs::metadata(older).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(older)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let msg = Wal::open(dir.path()).unwrap_err().to_string();
    assert!(msg.contains(&older.display().to_string()), "{msg}");
}

#[test]
fn the_log_is_locked_while_open() {
    let dir = tempfile::tempdir().unwrap();
    let first = Wal::open(dir.path()).unwrap();
    let msg = Wal::open(dir.path()).unwrap_err().to_string();
    assert!(msg.contains("already running"), "{msg}");
    drop(first);
    Wal::open(dir.path()).unwrap();
}

#[test]
fn a_segment_made_just_before_a_crash_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut wal, _) = Wal::open(dir.path()).unwrap();
        append(&mut wal, 1..=2);
    }
    // The next segment exists but its magic never reached the disk.
    std::fs::write(dir.path().join(format!("{:020}.wal", 2)), b"").unwrap();
    let (mut wal, recovered) = Wal::open(dir.path()).unwrap();
    assert_eq!(entries(&recovered), expected(1..=2));
    append(&mut wal, 3..=3);
    drop(wal);
    let (_wal, recovered) = Wal::open(dir.path()).unwrap();
    assert_eq!(entries(&recovered), expected(1..=3));
}

/// One step of the model check.
#[derive(Debug, Clone)]
enum Op {
    Append(u64),
    Truncate(u64),
    Purge(u64),
    Vote(u8),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u64..5).prop_map(Op::Append),
        1 => (0u64..100).prop_map(Op::Truncate),
        1 => (0u64..100).prop_map(Op::Purge),
        1 => any::<u8>().prop_map(Op::Vote),
        1 => Just(Op::Reopen),
    ]
}

/// The log as a sorted map, with openraft's rules: appends follow the end,
/// truncation stays above the purged index, purge stays within the log.
#[derive(Default)]
struct Model {
    entries: BTreeMap<u64, Vec<u8>>,
    purged: Option<u64>,
    vote: Option<Vec<u8>>,
    /// Bumped on each truncation so rewritten indexes get new bytes.
    generation: u64,
}

impl Model {
    fn next(&self) -> u64 {
        self.entries
            .keys()
            .next_back()
            .map_or(self.purged.map_or(1, |p| p + 1), |l| l + 1)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn recovery_always_matches_the_model(ops in prop::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let mut model = Model::default();
        let (mut wal, _) = Wal::open(dir.path()).unwrap();
        wal.set_segment_target(256);
        for op in ops {
            match op {
                Op::Append(n) => {
                    let start = model.next();
                    let bytes: Vec<(u64, Vec<u8>)> = (start..start + n)
                        .map(|i| (i, format!("{i}/{}", model.generation).into_bytes()))
                        .collect();
                    let records: Vec<Record<'_>> = bytes
                        .iter()
                        .map(|(index, bytes)| Record::Entry { index: *index, bytes })
                        .collect();
                    wal.write(&records).unwrap();
                    model.entries.extend(bytes);
                }
                Op::Truncate(at) => {
                    let floor = model.purged.map_or(1, |p| p + 1);
                    let from = floor + at % (model.next() - floor + 1);
                    wal.write(&[Record::Truncate { from }]).unwrap();
                    model.entries.split_off(&from);
                    model.generation += 1;
                }
                Op::Purge(at) => {
                    let Some(last) = model.entries.keys().next_back().copied() else {
                        continue;
                    };
                    let upto = model.purged.unwrap_or(0).max(at % (last + 1));
                    wal.write(&[Record::Purge { upto, bytes: b"p" }]).unwrap();
                    model.entries = model.entries.split_off(&(upto + 1));
                    model.purged = Some(upto);
                }
                Op::Vote(v) => {
                    wal.write(&[Record::Vote(&[v])]).unwrap();
                    model.vote = Some(vec![v]);
                }
                Op::Reopen => {
                    drop(wal);
                    let (reopened, recovered) = Wal::open(dir.path()).unwrap();
                    wal = reopened;
                    wal.set_segment_target(256);
                    prop_assert_eq!(&entries(&recovered), &model.entries);
                    prop_assert_eq!(&recovered.meta.vote, &model.vote);
                    prop_assert_eq!(recovered.meta.purged.map(|(u, _)| u), model.purged);
                }
            }
        }
        drop(wal);
        let (_wal, recovered) = Wal::open(dir.path()).unwrap();
        prop_assert_eq!(&entries(&recovered), &model.entries);
        prop_assert_eq!(&recovered.meta.vote, &model.vote);
    }
}
