//! Task log files: their format, the writer the shim uses and the reader
//! the agent serves `TaskLogs` from.
//!
//! A task's output lives in its task directory as `log.json` (being
//! written) and `log.json.1` … `log.json.<n-1>` (rotated, `.1` newest). Each
//! line of a file is one record, a JSON object
//! `{"t":<ns since the epoch>,"s":"out"|"err","l":"<the line>"}`; the line
//! has no newline, is at most `LOG_LINE_BYTES_MAX` bytes (longer output
//! lines are split) and invalid UTF-8 is replaced (like Docker's json-file).
//!
//! Invariants: the writer rotates only between records, after flushing; a
//! reader may catch a record half written and then waits for the rest; the
//! timestamps never go backwards within a stream (one writer stamps them as
//! it reads). A follower keeps its open file across a rotation and then
//! reads every file written after it, so it loses lines only when a whole
//! file is written and rotated out between two of its looks
//! (`LOG_FOLLOW_POLL`). Owns no task state: the shim decides when to write,
//! the runtime where the directory is.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use futures::stream::BoxStream;
use rswarm_proto::{LogLine, LogStream, LogsOptions};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncSeekExt, BufReader};

use crate::runtime::limits::{
    LOG_FILE_BYTES_DEFAULT, LOG_FILE_BYTES_MIN, LOG_FILES_DEFAULT, LOG_FILES_MAX, LOG_FOLLOW_POLL,
    LOG_LINE_BYTES_MAX, LOG_READ_BUFFER_BYTES, LOG_RECORD_BYTES_MAX,
};

/// The log file being written, in a task directory.
pub const LOG_FILE_NAME: &str = "log.json";

/// Where a task's log file number `index` is: 0 is the current file, 1 the
/// newest rotated one.
pub fn log_file_path(dir: &Path, index: u32) -> PathBuf {
    if index == 0 {
        dir.join(LOG_FILE_NAME)
    } else {
        dir.join(format!("{LOG_FILE_NAME}.{index}"))
    }
}

/// Nanoseconds since the Unix epoch, now.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// How big a task's log may grow: files of `file_bytes_max`, `files_max` of
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogRotation {
    file_bytes_max: u64,
    files_max: u32,
}

/// A rotation setting outside the accepted range.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogRotationError {
    /// The file size is below `LOG_FILE_BYTES_MIN`.
    #[error("log file size {bytes} is below the minimum of {min} bytes; give a larger size")]
    FileTooSmall { bytes: u64, min: u64 },
    /// The file count is 0 or above `LOG_FILES_MAX`.
    #[error("log file count {files} is outside 1..={max}; give a count in that range")]
    FileCount { files: u32, max: u32 },
}

impl LogRotation {
    /// `LOG_FILES_DEFAULT` files of `LOG_FILE_BYTES_DEFAULT` (checked
    /// against the limits at compile time in `runtime::limits`).
    pub const DEFAULT: LogRotation = LogRotation {
        file_bytes_max: LOG_FILE_BYTES_DEFAULT,
        files_max: LOG_FILES_DEFAULT,
    };

    /// A rotation of `files_max` files of `file_bytes_max` bytes each.
    pub fn try_new(file_bytes_max: u64, files_max: u32) -> Result<Self, LogRotationError> {
        if file_bytes_max < LOG_FILE_BYTES_MIN {
            return Err(LogRotationError::FileTooSmall {
                bytes: file_bytes_max,
                min: LOG_FILE_BYTES_MIN,
            });
        }
        if files_max == 0 || files_max > LOG_FILES_MAX {
            return Err(LogRotationError::FileCount {
                files: files_max,
                max: LOG_FILES_MAX,
            });
        }
        Ok(Self {
            file_bytes_max,
            files_max,
        })
    }

    /// The size at which the current file is rotated.
    pub fn file_bytes_max(&self) -> u64 {
        self.file_bytes_max
    }

    /// How many files are kept, the current one included.
    pub fn files_max(&self) -> u32 {
        self.files_max
    }
}

/// Appends `line` as one record to `out`.
pub fn encode_record(out: &mut Vec<u8>, timestamp_ns: i64, stream: LogStream, line: &[u8]) {
    let stream = match stream {
        LogStream::Stdout => "out",
        LogStream::Stderr => "err",
    };
    out.extend_from_slice(format!("{{\"t\":{timestamp_ns},\"s\":\"{stream}\",\"l\":\"").as_bytes());
    escape_json_into(out, &String::from_utf8_lossy(line));
    out.extend_from_slice(b"\"}\n");
}

/// JSON string escaping: quotes, backslashes and control characters.
fn escape_json_into(out: &mut Vec<u8>, text: &str) {
    for c in text.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 => {
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes());
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}

#[derive(Deserialize)]
struct Record {
    t: i64,
    s: String,
    l: String,
}

/// One record read back: when, which stream, the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedRecord {
    pub timestamp_ns: i64,
    pub stream: LogStream,
    pub line: Vec<u8>,
}

/// Parses one record (with or without its newline); `None` when damaged.
pub fn decode_record(bytes: &[u8]) -> Option<DecodedRecord> {
    let record: Record = serde_json::from_slice(bytes).ok()?;
    let stream = match record.s.as_str() {
        "out" => LogStream::Stdout,
        "err" => LogStream::Stderr,
        _ => return None,
    };
    Some(DecodedRecord {
        timestamp_ns: record.t,
        stream,
        line: record.l.into_bytes(),
    })
}

/// Cuts a byte stream into lines of at most `LOG_LINE_BYTES_MAX` bytes,
/// holding back an unfinished last line until more bytes or the end come.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// Feeds `bytes`; calls `emit` for each complete (or full-size) line.
    pub fn push(
        &mut self,
        mut bytes: &[u8],
        emit: &mut impl FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        while !bytes.is_empty() {
            let room = LOG_LINE_BYTES_MAX - self.partial.len();
            let window = &bytes[..bytes.len().min(room)];
            match window.iter().position(|&b| b == b'\n') {
                Some(newline) => {
                    self.partial.extend_from_slice(&window[..newline]);
                    bytes = &bytes[newline + 1..];
                    self.emit_partial(emit)?;
                }
                None => {
                    self.partial.extend_from_slice(window);
                    bytes = &bytes[window.len()..];
                    if self.partial.len() == LOG_LINE_BYTES_MAX {
                        self.emit_partial(emit)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The stream ended: emits an unfinished last line, if any.
    pub fn finish(&mut self, emit: &mut impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        if self.partial.is_empty() {
            return Ok(());
        }
        self.emit_partial(emit)
    }

    fn emit_partial(&mut self, emit: &mut impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        let result = emit(&self.partial);
        self.partial.clear();
        result
    }
}

/// Writes records into a task's log files and rotates them. Used by the
/// shim, so it is synchronous and allocates little.
#[derive(Debug)]
pub struct LogWriter {
    dir: PathBuf,
    rotation: LogRotation,
    file: BufWriter<File>,
    size_bytes: u64,
    record: Vec<u8>,
}

impl LogWriter {
    /// Opens (appending to) the current log file in `dir`.
    pub fn open(dir: &Path, rotation: LogRotation) -> io::Result<Self> {
        let file = open_append(&log_file_path(dir, 0))?;
        let size_bytes = file.metadata()?.len();
        Ok(Self {
            dir: dir.to_path_buf(),
            rotation,
            file: BufWriter::with_capacity(LOG_READ_BUFFER_BYTES, file),
            size_bytes,
            record: Vec::with_capacity(256),
        })
    }

    /// Writes one line of `stream`, stamped `timestamp_ns`; rotates first if
    /// the record would make the file outgrow its limit.
    pub fn write_line(
        &mut self,
        timestamp_ns: i64,
        stream: LogStream,
        line: &[u8],
    ) -> io::Result<()> {
        self.record.clear();
        encode_record(&mut self.record, timestamp_ns, stream, line);
        let record_bytes = self.record.len() as u64;
        if self.size_bytes > 0 && self.size_bytes + record_bytes > self.rotation.file_bytes_max {
            self.rotate()?;
        }
        self.file.write_all(&self.record)?;
        self.size_bytes += record_bytes;
        Ok(())
    }

    /// Pushes buffered records to the file.
    pub fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }

    /// `log.json.k` → `log.json.k+1` from the oldest kept down, then
    /// `log.json` → `log.json.1` and a fresh `log.json`.
    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        let files_max = self.rotation.files_max;
        if files_max == 1 {
            self.file = BufWriter::with_capacity(
                LOG_READ_BUFFER_BYTES,
                File::create(log_file_path(&self.dir, 0))?,
            );
            self.size_bytes = 0;
            return Ok(());
        }
        for index in (1..files_max - 1).rev() {
            let from = log_file_path(&self.dir, index);
            if from.exists() {
                std::fs::rename(&from, log_file_path(&self.dir, index + 1))?;
            }
        }
        std::fs::rename(log_file_path(&self.dir, 0), log_file_path(&self.dir, 1))?;
        self.file = BufWriter::with_capacity(
            LOG_READ_BUFFER_BYTES,
            open_append(&log_file_path(&self.dir, 0))?,
        );
        self.size_bytes = 0;
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// What a reader yields: a task's log lines, oldest first.
pub type LogLineStream = BoxStream<'static, io::Result<LogLine>>;

/// Reads the log of task `task_id` from `dir`, as `options` ask (tail,
/// since, follow). A follower ends once `exit_marker` exists and every line
/// before it was read (the shim writes the marker after its last line).
pub fn read_logs(
    dir: PathBuf,
    task_id: String,
    options: LogsOptions,
    exit_marker: PathBuf,
) -> LogLineStream {
    let reader = LogReader {
        dir,
        task_id,
        since_ns: options.since_ms.max(0).saturating_mul(1_000_000),
        tail: u64::try_from(options.tail).ok(),
        follow: options.follow,
        exit_marker,
        files: VecDeque::new(),
        current: None,
        pending: Vec::new(),
        skip: 0,
        started: false,
        exit_seen: false,
    };
    Box::pin(futures::stream::unfold(reader, |mut reader| async move {
        match reader.next_line().await {
            Ok(Some(line)) => Some((Ok(line), reader)),
            Ok(None) => None,
            Err(e) => {
                reader.files.clear();
                reader.current = None;
                reader.follow = false;
                Some((Err(e), reader))
            }
        }
    }))
}

/// An open log file: its reader and inode (to notice rotation).
struct OpenLog {
    reader: BufReader<tokio::fs::File>,
    inode: u64,
}

/// The reader's state between lines.
struct LogReader {
    dir: PathBuf,
    task_id: String,
    since_ns: i64,
    tail: Option<u64>,
    follow: bool,
    exit_marker: PathBuf,
    /// Files still to read after `current`, oldest first.
    files: VecDeque<OpenLog>,
    current: Option<OpenLog>,
    /// The bytes of a record read so far.
    pending: Vec<u8>,
    /// Matching records still to skip to honour `tail`.
    skip: u64,
    started: bool,
    exit_seen: bool,
}

/// What reading one record gave.
enum RecordRead {
    /// A whole record is in `pending`.
    Record,
    /// End of the file; `pending` may hold a partial record.
    End,
}

impl LogReader {
    async fn next_line(&mut self) -> io::Result<Option<LogLine>> {
        if !self.started {
            self.start().await?;
        }
        loop {
            let Some(current) = self.current.as_mut() else {
                return Ok(None);
            };
            match read_record(&mut current.reader, &mut self.pending).await? {
                RecordRead::Record => {
                    if let Some(line) = self.take_record() {
                        return Ok(Some(line));
                    }
                }
                RecordRead::End => {
                    if !self.at_end_of_file().await? {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Opens the files oldest first and, for `tail`, counts the records.
    async fn start(&mut self) -> io::Result<()> {
        self.started = true;
        self.files = open_all(&self.dir).await?;
        if let Some(tail) = self.tail {
            let matching = self.count_matching().await?;
            self.skip = matching.saturating_sub(tail);
        }
        self.current = self.files.pop_front();
        if self.current.is_none() && self.follow {
            self.current = self.wait_for_file().await?;
        }
        Ok(())
    }

    async fn count_matching(&mut self) -> io::Result<u64> {
        let mut count = 0;
        let mut record = Vec::new();
        for log in &mut self.files {
            loop {
                record.clear();
                match read_record(&mut log.reader, &mut record).await? {
                    RecordRead::Record => {}
                    RecordRead::End if record.is_empty() => break,
                    RecordRead::End => {}
                }
                if decode_record(&record).is_some_and(|r| r.timestamp_ns >= self.since_ns) {
                    count += 1;
                }
            }
            log.reader.rewind().await?;
        }
        Ok(count)
    }

    /// The record in `pending` as a line, unless filtered or skipped.
    fn take_record(&mut self) -> Option<LogLine> {
        let record = decode_record(&self.pending);
        self.pending.clear();
        let record = record.filter(|r| r.timestamp_ns >= self.since_ns)?;
        if self.skip > 0 {
            self.skip -= 1;
            return None;
        }
        Some(LogLine {
            task_id: self.task_id.clone(),
            timestamp_ns: record.timestamp_ns,
            stream: record.stream as i32,
            data: record.line,
        })
    }

    /// At the end of the current file: moves on to the next file, waits for
    /// more (following), or says the log is over (`false`).
    async fn at_end_of_file(&mut self) -> io::Result<bool> {
        if self.files.is_empty() && self.follow {
            self.files = self.newer_files().await?;
        }
        if let Some(next) = self.files.pop_front() {
            self.pending.clear();
            self.current = Some(next);
            return Ok(true);
        }
        if !self.follow || self.exit_seen {
            return Ok(false);
        }
        // The shim writes the exit marker after the last line: one more
        // pass over the file after seeing it reads everything.
        self.exit_seen = tokio::fs::try_exists(&self.exit_marker).await?;
        if !self.exit_seen {
            tokio::time::sleep(LOG_FOLLOW_POLL).await;
        }
        Ok(true)
    }

    /// The files written after the one being read, when it was rotated
    /// away: those after it in the current list, or all of them when it
    /// was rotated out of the list altogether.
    async fn newer_files(&mut self) -> io::Result<VecDeque<OpenLog>> {
        let Some(current) = &self.current else {
            return Ok(VecDeque::new());
        };
        match tokio::fs::metadata(log_file_path(&self.dir, 0)).await {
            Ok(meta) if inode_of(&meta) == current.inode => return Ok(VecDeque::new()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(VecDeque::new()),
            Err(e) => return Err(e),
        }
        let mut all = open_all(&self.dir).await?;
        if let Some(position) = all.iter().position(|log| log.inode == current.inode) {
            all.drain(..=position);
        }
        Ok(all)
    }

    /// Following a task that has not written its log yet.
    async fn wait_for_file(&mut self) -> io::Result<Option<OpenLog>> {
        let path = log_file_path(&self.dir, 0);
        loop {
            if let Some(log) = open_log(&path).await? {
                return Ok(Some(log));
            }
            if tokio::fs::try_exists(&self.exit_marker).await? {
                return Ok(None);
            }
            tokio::time::sleep(LOG_FOLLOW_POLL).await;
        }
    }
}

/// Opens every log file in `dir`, oldest first.
async fn open_all(dir: &Path) -> io::Result<VecDeque<OpenLog>> {
    let mut files = VecDeque::new();
    for index in (0..LOG_FILES_MAX).rev() {
        if let Some(log) = open_log(&log_file_path(dir, index)).await? {
            files.push_back(log);
        }
    }
    Ok(files)
}

fn inode_of(meta: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    meta.ino()
}

async fn open_log(path: &Path) -> io::Result<Option<OpenLog>> {
    match tokio::fs::File::open(path).await {
        Ok(file) => {
            let inode = inode_of(&file.metadata().await?);
            Ok(Some(OpenLog {
                reader: BufReader::with_capacity(LOG_READ_BUFFER_BYTES, file),
                inode,
            }))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads up to and including the next newline into `record`. A record
/// longer than `LOG_RECORD_BYTES_MAX` is damage: it is dropped up to its
/// newline and reading goes on.
async fn read_record(
    reader: &mut BufReader<tokio::fs::File>,
    record: &mut Vec<u8>,
) -> io::Result<RecordRead> {
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(RecordRead::End);
        }
        let (taken, complete) = match available.iter().position(|&b| b == b'\n') {
            Some(newline) => (newline + 1, true),
            None => (available.len(), false),
        };
        if record.len() + taken <= LOG_RECORD_BYTES_MAX {
            record.extend_from_slice(&available[..taken]);
        } else {
            // Too long to be a record: keep a marker that never decodes, so
            // the rest of it up to its newline is dropped with it.
            tracing::warn!(
                "dropping a damaged log record longer than {LOG_RECORD_BYTES_MAX} bytes"
            );
            record.clear();
            record.push(b'!');
        }
        reader.consume(taken);
        if complete {
            return Ok(RecordRead::Record);
        }
    }
}

#[cfg(test)]
mod tests;
