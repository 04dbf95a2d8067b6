//! Output conventions copied from Docker: tables with upper-case headers and
//! three spaces between columns, `--format json` with one object per line,
//! `-q` for IDs only, `-f key=value` filters (same key OR-ed, keys AND-ed).

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use comfy_table::{CellAlignment, ColumnConstraint, Table, presets};

/// How a list is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListFormat {
    /// An aligned table.
    Table,
    /// One JSON object per line.
    Json,
}

impl ListFormat {
    /// Parses `--format`.
    pub fn parse(format: Option<&str>) -> Result<Self> {
        match format {
            None | Some("table") => Ok(Self::Table),
            Some("json") => Ok(Self::Json),
            Some(other) => bail!("unsupported format {other:?}: use 'table' or 'json'"),
        }
    }
}

/// Prints rows as a Docker-style table.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    print!("{}", format_table(headers, rows));
}

/// Renders rows as a Docker-style table: upper-case headers, columns
/// padded to their widest cell and three spaces apart, no trailing blanks.
/// Each line ends with a newline.
pub fn format_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut table = Table::new();
    table.load_preset(presets::NOTHING);
    table.set_header(headers.iter().copied());
    for row in rows {
        table.add_row(row.iter().map(String::as_str));
    }
    let last = headers.len().saturating_sub(1);
    for (idx, column) in table.column_iter_mut().enumerate() {
        column.set_padding((0, if idx == last { 0 } else { 3 }));
        column.set_cell_alignment(CellAlignment::Left);
        column.set_constraint(ColumnConstraint::ContentWidth);
    }
    let mut text = String::new();
    for line in table.lines() {
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// Prints one JSON object per line.
pub fn print_json_lines(rows: &[serde_json::Value]) -> Result<()> {
    for row in rows {
        println!("{}", serde_json::to_string(row)?);
    }
    Ok(())
}

/// `-f key=value` filters, grouped by key.
#[derive(Debug, Default)]
pub struct Filters {
    by_key: BTreeMap<String, Vec<String>>,
}

impl Filters {
    /// Parses filters, accepting only `allowed` keys.
    pub fn parse(raw: &[String], allowed: &[&str]) -> Result<Self> {
        let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for f in raw {
            let Some((key, value)) = f.split_once('=') else {
                bail!("bad format of filter {f:?}: use key=value");
            };
            if !allowed.contains(&key) {
                bail!("invalid filter {key:?}: use one of {}", allowed.join(", "));
            }
            by_key
                .entry(key.to_string())
                .or_default()
                .push(value.to_string());
        }
        Ok(Self { by_key })
    }

    /// True when every key has a value that `matches` accepts.
    pub fn matches(&self, mut matches: impl FnMut(&str, &str) -> bool) -> bool {
        self.by_key
            .iter()
            .all(|(key, values)| values.iter().any(|v| matches(key, v)))
    }
}

/// Milliseconds since the Unix epoch, now (0 if the clock is before 1970).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// How long before `now_ms` the time `ms` was, in Docker's words:
/// "3 seconds ago", "2 minutes ago".
pub fn ago_at(ms: i64, now_ms: i64) -> String {
    let secs = (now_ms.saturating_sub(ms) / 1000).max(0);
    let (n, unit) = match secs {
        0 => return "Less than a second ago".into(),
        s if s < 60 => (s, "second"),
        s if s < 3600 => (s / 60, "minute"),
        s if s < 86_400 => (s / 3600, "hour"),
        s => (s / 86_400, "day"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

/// RFC 3339 UTC time of a Unix-milliseconds timestamp.
pub fn rfc3339(ms: i64) -> String {
    humantime::format_rfc3339_millis(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64),
    )
    .to_string()
}
