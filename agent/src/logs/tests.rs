//! Tests of the log format, the writer's rotation and the reader's tail,
//! since and follow, on real files.

use super::*;
use futures::StreamExt;
use proptest::prelude::*;
use std::time::Duration;

fn rotation(file_bytes_max: u64, files_max: u32) -> LogRotation {
    LogRotation::try_new(file_bytes_max, files_max).unwrap()
}

fn options(tail: i64, since_ms: i64, follow: bool) -> LogsOptions {
    LogsOptions {
        follow,
        tail,
        since_ms,
    }
}

/// All lines `read_logs` gives for `options` (not following).
async fn read_all(dir: &Path, options: LogsOptions) -> Vec<LogLine> {
    read_logs(
        dir.to_path_buf(),
        "t1".into(),
        options,
        dir.join("exit.json"),
    )
    .map(|line| line.unwrap())
    .collect()
    .await
}

fn texts(lines: &[LogLine]) -> Vec<String> {
    lines
        .iter()
        .map(|l| String::from_utf8(l.data.clone()).unwrap())
        .collect()
}

fn split_all(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut splitter = LineSplitter::default();
    let mut lines = Vec::new();
    let mut emit = |line: &[u8]| {
        lines.push(line.to_vec());
        Ok(())
    };
    for chunk in chunks {
        splitter.push(chunk, &mut emit).unwrap();
    }
    splitter.finish(&mut emit).unwrap();
    lines
}

#[test]
fn lines_are_split_at_newlines_across_chunks() {
    let lines = split_all(&[b"one\ntw", b"o\n\nthr", b"ee"]);
    assert_eq!(lines, [&b"one"[..], b"two", b"", b"three"]);
}

#[test]
fn very_long_lines_are_cut_into_records_of_the_limit() {
    let long = vec![b'x'; LOG_LINE_BYTES_MAX * 2 + 10];
    let mut input = long.clone();
    input.push(b'\n');
    let lines = split_all(&[&input]);
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0].len(), LOG_LINE_BYTES_MAX);
    assert_eq!(lines[2].len(), 10);
    assert_eq!(lines.concat(), long);
}

proptest! {
    #[test]
    fn records_round_trip(t in any::<i64>(), err in any::<bool>(), line in "\\PC*") {
        let stream = if err { LogStream::Stderr } else { LogStream::Stdout };
        let mut out = Vec::new();
        encode_record(&mut out, t, stream, line.as_bytes());
        prop_assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1, "one record, one line");
        let back = decode_record(&out).unwrap();
        prop_assert_eq!(back, DecodedRecord { timestamp_ns: t, stream, line: line.into_bytes() });
    }

    #[test]
    fn any_bytes_make_one_valid_record(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut out = Vec::new();
        encode_record(&mut out, 1, LogStream::Stdout, &bytes);
        let back = decode_record(&out).unwrap();
        prop_assert_eq!(back.line, String::from_utf8_lossy(&bytes).into_owned().into_bytes());
    }

    #[test]
    fn splitting_keeps_every_byte_but_newlines(
        chunks in proptest::collection::vec(proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'a')], 0..50), 0..10)
    ) {
        let chunk_refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        let lines = split_all(&chunk_refs);
        let input: Vec<u8> = chunks.concat();
        let expected: Vec<u8> = input.iter().copied().filter(|&b| b != b'\n').collect();
        prop_assert_eq!(lines.concat(), expected);
        prop_assert!(lines.iter().all(|l| l.len() <= LOG_LINE_BYTES_MAX));
    }
}

#[test]
fn rotation_settings_are_checked() {
    assert!(LogRotation::try_new(LOG_FILE_BYTES_MIN - 1, 3).is_err());
    assert!(LogRotation::try_new(LOG_FILE_BYTES_MIN, 0).is_err());
    assert!(LogRotation::try_new(LOG_FILE_BYTES_MIN, LOG_FILES_MAX + 1).is_err());
    assert_eq!(
        LogRotation::DEFAULT,
        rotation(LOG_FILE_BYTES_DEFAULT, LOG_FILES_DEFAULT)
    );
}

#[tokio::test]
async fn the_writer_rotates_and_keeps_at_most_n_files() {
    // Goal: a chatty task's log stays within files × size, and the newest
    // lines survive. Method: write 4 KiB files' worth of 100-byte lines.
    let dir = tempfile::tempdir().unwrap();
    let mut writer = LogWriter::open(dir.path(), rotation(4096, 3)).unwrap();
    let line = [b'x'; 60];
    for i in 0..1000 {
        writer
            .write_line(
                i,
                LogStream::Stdout,
                &[&line[..], format!("{i:04}").as_bytes()].concat(),
            )
            .unwrap();
    }
    writer.flush().unwrap();
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["log.json", "log.json.1", "log.json.2"]);
    for name in &names {
        let size = std::fs::metadata(dir.path().join(name)).unwrap().len();
        assert!(size <= 4096, "{name} is {size} bytes");
    }
    let lines = read_all(dir.path(), options(-1, 0, false)).await;
    let texts = texts(&lines);
    assert!(texts.last().unwrap().ends_with("0999"), "newest line kept");
    let numbers: Vec<i64> = lines.iter().map(|l| l.timestamp_ns).collect();
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "oldest first, none lost inside the kept files"
    );
}

#[tokio::test]
async fn tail_and_since_pick_the_last_lines_and_the_recent_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = LogWriter::open(dir.path(), rotation(4096, 5)).unwrap();
    for i in 0..200i64 {
        let stream = if i % 2 == 0 {
            LogStream::Stdout
        } else {
            LogStream::Stderr
        };
        writer
            .write_line(i * 1_000_000, stream, format!("line {i}").as_bytes())
            .unwrap();
    }
    writer.flush().unwrap();
    assert!(
        dir.path().join("log.json.1").exists(),
        "the lines span files"
    );

    let all = read_all(dir.path(), options(-1, 0, false)).await;
    assert_eq!(all.len(), 200);
    assert_eq!(all[1].stream, LogStream::Stderr as i32);
    assert_eq!(all[0].task_id, "t1");

    let last = read_all(dir.path(), options(3, 0, false)).await;
    assert_eq!(texts(&last), ["line 197", "line 198", "line 199"]);

    let none = read_all(dir.path(), options(0, 0, false)).await;
    assert!(none.is_empty());

    let recent = read_all(dir.path(), options(-1, 190, false)).await;
    assert_eq!(recent.len(), 10);
    assert_eq!(texts(&recent)[0], "line 190");

    let recent_tail = read_all(dir.path(), options(2, 190, false)).await;
    assert_eq!(texts(&recent_tail), ["line 198", "line 199"]);
}

#[tokio::test]
async fn following_reads_new_lines_across_a_rotation_and_ends_with_the_task() {
    // Goal: `logs -f` sees lines written after it started, also when the
    // file rotates under it, and ends once the task's exit is recorded.
    let dir = tempfile::tempdir().unwrap();
    let mut writer = LogWriter::open(dir.path(), rotation(4096, 3)).unwrap();
    writer.write_line(1, LogStream::Stdout, b"before").unwrap();
    writer.flush().unwrap();
    let mut stream = read_logs(
        dir.path().to_path_buf(),
        "t1".into(),
        options(-1, 0, true),
        dir.path().join("exit.json"),
    );
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.data, b"before");

    let write_more = tokio::task::spawn_blocking(move || {
        for i in 0..100 {
            writer
                .write_line(2 + i, LogStream::Stdout, &[b'y'; 80])
                .unwrap();
            writer.flush().unwrap();
        }
        writer.write_line(200, LogStream::Stderr, b"last").unwrap();
        writer.flush().unwrap();
    });
    write_more.await.unwrap();
    std::fs::write(dir.path().join("exit.json"), b"{}").unwrap();

    let rest: Vec<LogLine> = tokio::time::timeout(
        Duration::from_secs(10),
        stream.map(|l| l.unwrap()).collect(),
    )
    .await
    .expect("the follower ends after the exit record appears");
    assert_eq!(rest.last().unwrap().data, b"last");
    let stamps: Vec<i64> = rest.iter().map(|l| l.timestamp_ns).collect();
    assert!(
        stamps.windows(2).all(|w| w[0] < w[1]),
        "in order, no repeats"
    );
    assert_eq!(stamps.len(), 101, "no line lost to the rotation");
}

#[tokio::test]
async fn damaged_records_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let mut good = Vec::new();
    encode_record(&mut good, 5, LogStream::Stdout, b"ok");
    let mut content = b"not json\n{\"t\":1}\n".to_vec();
    content.extend_from_slice(&good);
    content.extend_from_slice(b"{\"t\":9,\"s\":\"out\",\"l\":\"trunc");
    std::fs::write(dir.path().join(LOG_FILE_NAME), content).unwrap();
    let lines = read_all(dir.path(), options(-1, 0, false)).await;
    assert_eq!(texts(&lines), ["ok"]);
}
