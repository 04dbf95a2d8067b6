//! Tests of the log store beyond openraft's suite: restart, damaged
//! files, group commit and read-your-append visibility.

use std::path::Path;

use openraft::alias::{EntryOf, LogIdOf, VoteOf};
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogReader, RaftLogStorage};
use openraft::testing::log_id;
use openraft::type_config::TypeConfigExt;
use rswarm_proto::Proposal;

use super::*;

type Entry = EntryOf<TypeConfig>;

fn lid(term: u64, index: u64) -> LogIdOf<TypeConfig> {
    log_id::<TypeConfig>(term, 1, index)
}

fn normal(term: u64, index: u64) -> Entry {
    Entry::new_normal(
        lid(term, index),
        Proposal {
            actions: vec![],
            timestamp_ms: index as i64,
        },
    )
}

/// Appends and waits until durable.
async fn append_durably(store: &mut LogStore, entries: Vec<Entry>) {
    let (tx, rx) = TypeConfig::oneshot();
    store.append(entries, IOFlushed::signal(tx)).await.unwrap();
    rx.await.unwrap().unwrap();
}

async fn all_entries(store: &mut LogStore) -> Vec<Entry> {
    store.try_get_log_entries(..).await.unwrap()
}

#[tokio::test]
async fn everything_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let vote = VoteOf::<TypeConfig>::new(3, 1);
    let entries: Vec<Entry> = (1..=10).map(|i| normal(2, i)).collect();
    {
        let mut store = LogStore::open(dir.path()).unwrap();
        store.save_vote(&vote).await.unwrap();
        append_durably(&mut store, entries.clone()).await;
        store.save_committed(Some(lid(2, 8))).await.unwrap();
        store.purge(lid(2, 3)).await.unwrap();
        store.truncate_after(Some(lid(2, 9))).await.unwrap();
    }
    let mut store = LogStore::open(dir.path()).unwrap();
    assert_eq!(store.read_vote().await.unwrap(), Some(vote));
    assert_eq!(store.read_committed().await.unwrap(), Some(lid(2, 8)));
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(lid(2, 3)));
    assert_eq!(state.last_log_id, Some(lid(2, 9)));
    assert_eq!(all_entries(&mut store).await, entries[3..9].to_vec());
    // And it keeps working after the restart.
    append_durably(&mut store, vec![normal(3, 10)]).await;
    assert_eq!(
        store.try_get_log_entries(10..11).await.unwrap(),
        vec![normal(3, 10)]
    );
}

/// The first segment of the log in `dir`.
fn first_segment(dir: &Path) -> std::path::PathBuf {
    dir.join(LOG_DIR_NAME).join(format!("{:020}.wal", 1))
}

#[tokio::test]
async fn a_file_that_is_not_a_log_is_refused_by_path() {
    let dir = tempfile::tempdir().unwrap();
    drop(LogStore::open(dir.path()).unwrap());
    let path = first_segment(dir.path());
    std::fs::write(&path, vec![0x5a; 64 * 1024]).unwrap();
    let err = LogStore::open(dir.path()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(matches!(err, LogStoreError::Corrupt { .. }), "{msg}");
}

/// Writes raw records behind the log store's back.
fn put_raw(dir: &Path, records: &[super::super::wal::Record<'_>]) {
    let (mut wal, _) = Wal::open(&dir.join(LOG_DIR_NAME)).unwrap();
    wal.write(records).unwrap();
}

#[tokio::test]
async fn undecodable_or_missing_entries_are_refused_by_path() {
    use super::super::wal::Record;
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = LogStore::open(dir.path()).unwrap();
        append_durably(&mut store, (1..=3).map(|i| normal(1, i)).collect()).await;
    }
    put_raw(
        dir.path(),
        &[Record::Entry {
            index: 4,
            bytes: &[0xff, 0xff, 0xff],
        }],
    );
    let err = LogStore::open(dir.path()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, LogStoreError::Corrupt { .. }), "{msg}");
    assert!(
        msg.contains(&dir.path().join(LOG_DIR_NAME).display().to_string()),
        "{msg}"
    );
    assert!(msg.contains("entry 4"), "{msg}");

    // A hole: entry 6 after 4, without 5.
    let encoded = postcard::to_allocvec(&normal(1, 6)).unwrap();
    put_raw(
        dir.path(),
        &[Record::Entry {
            index: 6,
            bytes: &encoded,
        }],
    );
    let msg = LogStore::open(dir.path()).unwrap_err().to_string();
    assert!(msg.contains("hole"), "{msg}");
    assert!(
        msg.contains(&first_segment(dir.path()).display().to_string()),
        "{msg}"
    );
}

#[tokio::test]
async fn a_log_of_the_old_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("raft-log.redb");
    std::fs::write(&old, b"redb").unwrap();
    let msg = LogStore::open(dir.path()).unwrap_err().to_string();
    assert!(msg.contains(&old.display().to_string()), "{msg}");
    assert!(msg.contains("older rswarm"), "{msg}");
}

#[tokio::test]
async fn the_same_file_cannot_be_opened_twice() {
    let dir = tempfile::tempdir().unwrap();
    let _first = LogStore::open(dir.path()).unwrap();
    let msg = LogStore::open(dir.path()).unwrap_err().to_string();
    assert!(msg.contains(LOG_DIR_NAME), "{msg}");
    assert!(msg.contains("already running"), "{msg}");
}

#[tokio::test]
async fn appends_are_readable_at_once_and_flushed_in_groups() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = LogStore::open(dir.path()).unwrap();
    let mut reader = store.get_log_reader().await;
    let mut flushed = Vec::new();
    for i in 0..500 {
        let (tx, rx) = TypeConfig::oneshot();
        store
            .append([normal(1, i)], IOFlushed::signal(tx))
            .await
            .unwrap();
        // Readable before its callback, through another handle.
        assert_eq!(
            reader.try_get_log_entries(i..=i).await.unwrap(),
            vec![normal(1, i)]
        );
        flushed.push(rx);
    }
    for rx in flushed {
        rx.await.unwrap().unwrap();
    }
    assert_eq!(all_entries(&mut store).await.len(), 500);
    assert!(store.shared.view().pending.is_empty());
    // Reads across the durable part and the pending tail.
    store
        .append([normal(1, 500)], IOFlushed::noop())
        .await
        .unwrap();
    let got = reader.try_get_log_entries(498..).await.unwrap();
    assert_eq!(got, vec![normal(1, 498), normal(1, 499), normal(1, 500)]);
}

#[tokio::test]
async fn appends_must_not_leave_holes() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = LogStore::open(dir.path()).unwrap();
    append_durably(&mut store, vec![normal(1, 1)]).await;
    let err = store
        .append([normal(1, 3)], IOFlushed::noop())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    // Nothing was taken in.
    assert_eq!(
        store.get_log_state().await.unwrap().last_log_id,
        Some(lid(1, 1))
    );
}

#[tokio::test]
async fn truncate_then_append_replaces_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = LogStore::open(dir.path()).unwrap();
    append_durably(&mut store, (1..=5).map(|i| normal(1, i)).collect()).await;
    store.truncate_after(Some(lid(1, 2))).await.unwrap();
    append_durably(&mut store, vec![normal(2, 3)]).await;
    let got = all_entries(&mut store).await;
    assert_eq!(got, vec![normal(1, 1), normal(1, 2), normal(2, 3)]);
    drop(store);
    let mut store = LogStore::open(dir.path()).unwrap();
    assert_eq!(all_entries(&mut store).await, got);
}

#[tokio::test]
async fn purge_beyond_the_log_moves_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = LogStore::open(dir.path()).unwrap();
    append_durably(&mut store, (1..=3).map(|i| normal(1, i)).collect()).await;
    store.purge(lid(4, 20)).await.unwrap();
    let state = store.get_log_state().await.unwrap();
    assert_eq!(
        (state.last_purged_log_id, state.last_log_id),
        (Some(lid(4, 20)), Some(lid(4, 20)))
    );
    assert!(all_entries(&mut store).await.is_empty());
    append_durably(&mut store, vec![normal(4, 21)]).await;
    drop(store);
    let mut store = LogStore::open(dir.path()).unwrap();
    assert_eq!(all_entries(&mut store).await, vec![normal(4, 21)]);
    assert_eq!(
        store.get_log_state().await.unwrap().last_purged_log_id,
        Some(lid(4, 20))
    );
}

#[tokio::test]
async fn a_write_error_fails_the_callback_and_everything_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = LogStore::open(dir.path()).unwrap();
    append_durably(&mut store, vec![normal(1, 1)]).await;
    // Simulate a dead disk: the writer's next batch fails.
    store
        .shared
        .fail_writes
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (tx, rx) = TypeConfig::oneshot();
    store
        .append([normal(1, 2)], IOFlushed::signal(tx))
        .await
        .unwrap();
    let err = rx.await.unwrap().unwrap_err();
    assert!(err.to_string().contains("write failed"), "{err}");
    let err = store
        .save_vote(&VoteOf::<TypeConfig>::new(2, 1))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unusable"), "{err}");
    assert!(store.get_log_state().await.is_err());
    assert!(
        store
            .append([normal(1, 3)], IOFlushed::noop())
            .await
            .is_err()
    );
}
