//! `service logs`: the logs of a service's tasks (or of one task) from the
//! `ServiceLogs` stream, each line prefixed `web.2.qa8f1c2d3e4f@worker1 |`
//! with the prefixes padded to a common width, stderr lines on stderr, and
//! the manager's warnings (nodes it could not reach) on stderr too.
//!
//! Owns: the flags, `--since` parsing, and the line format. Does not own:
//! gathering the lines from the nodes (the manager does it).
//!
//! **Invariant:** a warning never fails the command: whatever could be
//! read is printed and the exit code is 0, as the help says.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use rswarm_proto::{LogLine, LogSource, LogStream, LogsOptions, ServiceLogsRequest};

use crate::client::Daemon;

use super::calls::explain_service_error;
use super::text::shown_id;

/// What separates the prefix from the line (Docker's).
const PREFIX_SEPARATOR: &str = "    | ";

/// `service logs` flags.
#[derive(Debug, clap::Args)]
#[command(after_help = "Nodes whose logs cannot be read are named on stderr; \
    the lines that could be read are still printed, and the exit code is 0.")]
pub struct LogsArgs {
    /// Keep printing new lines as they come.
    #[arg(short, long)]
    follow: bool,
    /// Lines from the end of each task's log: a number, or all.
    #[arg(short = 'n', long, value_name = "N", default_value = "all", value_parser = tail_lines)]
    tail: i64,
    /// Only lines since this time: RFC 3339 (2026-01-02T15:04:05Z), Unix
    /// seconds (1767225600), or a duration back from now (42m).
    #[arg(long, value_name = "TIME", value_parser = since_now, allow_hyphen_values = true)]
    since: Option<i64>,
    /// Show each line's time (RFC 3339, nanoseconds).
    #[arg(short, long)]
    timestamps: bool,
    /// Leave task IDs out of the prefixes.
    #[arg(long)]
    no_task_ids: bool,
    /// Show full task IDs in the prefixes.
    #[arg(long)]
    no_trunc: bool,
    /// A service or a task: name, ID or ID prefix.
    #[arg(value_name = "SERVICE|TASK")]
    target: String,
}

/// `--tail`: `all` (-1 on the wire) or a count.
fn tail_lines(raw: &str) -> Result<i64, String> {
    if raw == "all" {
        return Ok(-1);
    }
    raw.parse::<u32>()
        .map(i64::from)
        .map_err(|_| format!("invalid line count {raw:?}: use a number of lines, or all"))
}

/// `--since`, read against the clock now.
fn since_now(raw: &str) -> Result<i64, String> {
    parse_since(raw, SystemTime::now())
}

/// `--since` as ms since the epoch: RFC 3339 (with `Z`, an offset, or
/// neither meaning UTC), a date, Unix seconds (with a fraction), or a
/// duration back from `now`.
pub fn parse_since(raw: &str, now: SystemTime) -> Result<i64, String> {
    let text = raw.trim();
    let usage = || {
        format!(
            "invalid time {raw:?}: use RFC 3339 (2026-01-02T15:04:05Z), Unix seconds, or a duration back from now (42m)"
        )
    };
    let time = if let Ok(back) = humantime::parse_duration(text) {
        now.checked_sub(back).unwrap_or(UNIX_EPOCH)
    } else if text.chars().next().is_some_and(|c| c.is_ascii_digit())
        && text.chars().all(|c| c.is_ascii_digit() || c == '.')
    {
        unix_seconds(text).ok_or_else(usage)?
    } else {
        rfc3339(text).ok_or_else(usage)?
    };
    let ms = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    i64::try_from(ms).map_err(|_| usage())
}

fn unix_seconds(text: &str) -> Option<SystemTime> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let seconds: u64 = whole.parse().ok()?;
    let digits = &fraction[..fraction.len().min(9)];
    let nanos: u32 = if digits.is_empty() {
        0
    } else {
        format!("{digits:0<9}").parse().ok()?
    };
    UNIX_EPOCH.checked_add(Duration::new(seconds, nanos))
}

/// RFC 3339 with an offset (`+01:00`), `Z`, or no zone (UTC); or a date.
fn rfc3339(text: &str) -> Option<SystemTime> {
    if text.len() == 10 {
        return humantime::parse_rfc3339_weak(&format!("{text}T00:00:00Z")).ok();
    }
    let (local, offset) = split_offset(text);
    let time = humantime::parse_rfc3339_weak(local).ok()?;
    if offset >= 0 {
        time.checked_sub(Duration::from_secs(offset.unsigned_abs()))
    } else {
        time.checked_add(Duration::from_secs(offset.unsigned_abs()))
    }
}

/// Splits a trailing `+HH:MM`/`-HH:MM` off a date-time; the offset in seconds.
fn split_offset(text: &str) -> (&str, i64) {
    let Some(idx) = text
        .len()
        .checked_sub(6)
        .filter(|i| text.is_char_boundary(*i))
    else {
        return (text, 0);
    };
    let (local, zone) = text.split_at(idx);
    let bytes = zone.as_bytes();
    let sign = match bytes[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return (text, 0),
    };
    let digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    let has_time = local.contains('T') || local.contains(' ');
    if !has_time || bytes[3] != b':' || !digits(&bytes[1..3]) || !digits(&bytes[4..6]) {
        return (text, 0);
    }
    let hours = i64::from((bytes[1] - b'0') * 10 + (bytes[2] - b'0'));
    let minutes = i64::from((bytes[4] - b'0') * 10 + (bytes[5] - b'0'));
    (local, sign * (hours * 3600 + minutes * 60))
}

/// The prefix of a source's lines: `web.2.qa8f1c2d3e4f@worker1`.
pub fn prefix(source: &LogSource, task_ids: bool, no_trunc: bool) -> String {
    let mut text = source.task_name.clone();
    if task_ids {
        text.push('.');
        text.push_str(&shown_id(&source.task_id, no_trunc));
    }
    if !source.node_name.is_empty() {
        text.push('@');
        text.push_str(&source.node_name);
    }
    text
}

/// The prefixes of the sources seen so far, padded to the widest.
#[derive(Debug, Default)]
pub struct Prefixes {
    by_task: BTreeMap<String, String>,
    width: usize,
    task_ids: bool,
    no_trunc: bool,
}

impl Prefixes {
    /// Prefixes with or without task IDs, short or full.
    pub fn new(task_ids: bool, no_trunc: bool) -> Self {
        Self {
            task_ids,
            no_trunc,
            ..Default::default()
        }
    }

    /// Adds new sources.
    pub fn learn(&mut self, sources: &[LogSource]) {
        for source in sources {
            let text = prefix(source, self.task_ids, self.no_trunc);
            self.width = self.width.max(text.chars().count());
            self.by_task.insert(source.task_id.clone(), text);
        }
    }

    /// One output line: `[time ]prefix    | data\n`.
    pub fn format(&self, line: &LogLine, timestamps: bool) -> Vec<u8> {
        let prefix = self
            .by_task
            .get(&line.task_id)
            .cloned()
            .unwrap_or_else(|| shown_id(&line.task_id, self.no_trunc));
        let mut head = String::new();
        if timestamps {
            let nanos = u64::try_from(line.timestamp_ns).unwrap_or(0);
            let time = UNIX_EPOCH + Duration::from_nanos(nanos);
            head.push_str(&humantime::format_rfc3339_nanos(time).to_string());
            head.push(' ');
        }
        head.push_str(&format!(
            "{prefix:<width$}{PREFIX_SEPARATOR}",
            width = self.width
        ));
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&line.data);
        bytes.push(b'\n');
        bytes
    }
}

/// `service logs`.
pub async fn run(d: &Daemon, args: LogsArgs) -> Result<()> {
    let request = ServiceLogsRequest {
        reference: args.target.clone(),
        options: Some(LogsOptions {
            follow: args.follow,
            tail: args.tail,
            since_ms: args.since.unwrap_or(0),
        }),
    };
    let mut stream = d
        .control()
        .service_logs(request)
        .await
        .map_err(|s| explain_service_error(d, &args.target, s))?
        .into_inner();
    let mut prefixes = Prefixes::new(!args.no_task_ids, args.no_trunc);
    while let Some(batch) = stream.message().await.map_err(|s| d.explain(s))? {
        for warning in &batch.warnings {
            eprintln!("warning: {warning}");
        }
        prefixes.learn(&batch.sources);
        if !write_lines(&prefixes, &batch.lines, args.timestamps) {
            // The reader went away (`| head`): nothing more to do.
            return Ok(());
        }
    }
    Ok(())
}

/// Writes lines to stdout (stderr lines to stderr); false once stdout is closed.
fn write_lines(prefixes: &Prefixes, lines: &[LogLine], timestamps: bool) -> bool {
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    for line in lines {
        let bytes = prefixes.format(line, timestamps);
        if line.stream == LogStream::Stderr as i32 {
            let _ = stderr.write_all(&bytes);
        } else if stdout.write_all(&bytes).is_err() {
            return false;
        }
    }
    stdout.flush().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(task_id: &str, task_name: &str, node: &str) -> LogSource {
        LogSource {
            task_id: task_id.into(),
            task_name: task_name.into(),
            node_name: node.into(),
        }
    }

    fn line(task_id: &str, data: &str) -> LogLine {
        LogLine {
            task_id: task_id.into(),
            timestamp_ns: 1_767_225_600_123_456_789,
            stream: LogStream::Stdout as i32,
            data: data.as_bytes().to_vec(),
        }
    }

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn prefixes_name_the_task_its_id_and_its_node_padded_to_one_width() {
        let mut prefixes = Prefixes::new(true, false);
        prefixes.learn(&[
            source("qa8f1c2d3e4f5a6b7c8d9e0f1", "web.2", "worker1"),
            source("zz8f1c2d3e4f5a6b7c8d9e0f1", "web.10", "w2"),
        ]);
        assert_eq!(
            text(prefixes.format(&line("qa8f1c2d3e4f5a6b7c8d9e0f1", "GET / 200"), false)),
            "web.2.qa8f1c2d3e4f@worker1    | GET / 200\n"
        );
        assert_eq!(
            text(prefixes.format(&line("zz8f1c2d3e4f5a6b7c8d9e0f1", "hello"), false)),
            "web.10.zz8f1c2d3e4f@w2        | hello\n"
        );
    }

    #[test]
    fn prefixes_follow_the_flags() {
        let s = source("qa8f1c2d3e4f5a6b7c8d9e0f1", "web.2", "worker1");
        assert_eq!(prefix(&s, false, false), "web.2@worker1");
        assert_eq!(
            prefix(&s, true, true),
            "web.2.qa8f1c2d3e4f5a6b7c8d9e0f1@worker1"
        );
        let mut prefixes = Prefixes::new(true, false);
        prefixes.learn(&[s]);
        assert_eq!(
            text(prefixes.format(&line("qa8f1c2d3e4f5a6b7c8d9e0f1", "x"), true)),
            "2026-01-01T00:00:00.123456789Z web.2.qa8f1c2d3e4f@worker1    | x\n"
        );
        assert_eq!(
            text(prefixes.format(&line("unknown0123456789", "y"), false)),
            "unknown01234                  | y\n"
        );
    }

    #[test]
    fn since_takes_rfc3339_unix_seconds_or_a_duration_back() {
        let now = UNIX_EPOCH + Duration::from_secs(1_767_225_600);
        let cases: &[(&str, i64)] = &[
            ("2026-01-01T00:00:00Z", 1_767_225_600_000),
            ("2026-01-01T00:00:00.250Z", 1_767_225_600_250),
            ("2026-01-01T01:00:00+01:00", 1_767_225_600_000),
            ("2025-12-31T23:30:00-00:30", 1_767_225_600_000),
            ("2026-01-01T00:00:00", 1_767_225_600_000),
            ("2026-01-01", 1_767_225_600_000),
            ("1767225600", 1_767_225_600_000),
            ("1767225600.5", 1_767_225_600_500),
            ("42m", 1_767_225_600_000 - 42 * 60_000),
            ("1h30m", 1_767_225_600_000 - 5_400_000),
        ];
        for (raw, want) in cases {
            assert_eq!(parse_since(raw, now), Ok(*want), "{raw}");
        }
        for raw in ["yesterday", "", "2026-13-01T00:00:00Z", "-5m", "1.2.3"] {
            let err = parse_since(raw, now).expect_err(raw);
            assert!(err.contains("use RFC 3339"), "{raw}: {err}");
        }
    }

    #[test]
    fn tail_takes_all_or_a_count() {
        assert_eq!(tail_lines("all"), Ok(-1));
        assert_eq!(tail_lines("20"), Ok(20));
        assert!(tail_lines("-3").is_err());
        assert!(tail_lines("some").is_err());
    }
}
