//! `service ps` and the task table it shares with `node ps`: columns
//! `ID NAME IMAGE NODE DESIRED STATE CURRENT STATE ERROR PORTS`, a slot's
//! older tasks under its newest one as ` \_ web.1`, ages like `Running 8
//! seconds ago`, nodes by hostname, `-q`, `--no-trunc`, `-f` and
//! `--format json` with Docker's keys.
//!
//! **Invariant:** the rows are a pure function of (tasks, hostnames,
//! options, now), so the layout is pinned by snapshot tests.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use rswarm_proto::{Task, TaskState};
use serde_json::{Value, json};

use crate::client::Daemon;
use crate::output::{Filters, ListFormat, ago_at, format_table, now_ms, print_json_lines};

use super::calls;
use super::health::{health_suffix, health_word};
use super::text::{
    ellipsize, image_text, ports_text, shown_id, state_name, state_word, task_id, task_name,
};

/// Characters of an error shown unless `--no-trunc` (Docker's 30).
const ERROR_CHARS_MAX: usize = 30;

/// The task table's headers.
pub const TASK_HEADERS: [&str; 8] = [
    "ID",
    "NAME",
    "IMAGE",
    "NODE",
    "DESIRED STATE",
    "CURRENT STATE",
    "ERROR",
    "PORTS",
];

/// Keys `-f` accepts on task lists.
pub const TASK_FILTER_KEYS: [&str; 4] = ["id", "name", "node", "desired-state"];

/// How the task table is drawn.
#[derive(Debug, Clone, Copy)]
pub struct TaskTableOptions {
    /// Full IDs, images and errors.
    pub no_trunc: bool,
    /// The time ages are counted to (ms since the epoch).
    pub now_ms: i64,
}

/// One line of the task table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRow {
    /// Task ID, short unless `--no-trunc`.
    pub id: String,
    /// `web.1`.
    pub name: String,
    /// An older task of the same slot (shown as ` \_ web.1`).
    pub history: bool,
    /// Image, or the command of a process task.
    pub image: String,
    /// The digest of the image the task runs (`sha256:…`), once its node
    /// reported it running; empty before, or for a process task.
    pub image_digest: String,
    /// Hostname of the task's node; empty until placed.
    pub node: String,
    /// `Running`, `Shutdown`, ...
    pub desired: String,
    /// `Running 8 seconds ago`, `Running 8 seconds ago (healthy)`.
    pub current: String,
    /// A running task's health: `starting`, `healthy`, `unhealthy`, or
    /// empty without a check.
    pub health: String,
    /// Why the task failed or waits, cut unless `--no-trunc`.
    pub error: String,
    /// `*:8080->80/tcp`.
    pub ports: String,
}

impl TaskRow {
    fn cells(&self) -> Vec<String> {
        let name = if self.history {
            format!(" \\_ {}", self.name)
        } else {
            self.name.clone()
        };
        let error = if self.error.is_empty() {
            String::new()
        } else {
            format!("\"{}\"", self.error)
        };
        vec![
            self.id.clone(),
            name,
            self.image.clone(),
            self.node.clone(),
            self.desired.clone(),
            self.current.clone(),
            error,
            self.ports.clone(),
        ]
    }

    /// The `--format json` object, with Docker's keys.
    pub fn json(&self) -> Value {
        json!({
            "ID": self.id,
            "Name": self.name,
            "Image": self.image,
            "ImageDigest": self.image_digest,
            "Node": self.node,
            "DesiredState": self.desired,
            "CurrentState": self.current,
            "Health": self.health,
            "Error": self.error,
            "Ports": self.ports,
        })
    }
}

/// Sort key: the slot's group (service, slot, node of a global task),
/// then newest first.
fn row_order(a: &Task, b: &Task) -> std::cmp::Ordering {
    let group = |t: &Task| {
        let node = if t.slot == 0 {
            t.node_id.clone()
        } else {
            String::new()
        };
        (t.service_name.clone(), t.service_id.clone(), t.slot, node)
    };
    let created = |t: &Task| t.meta.as_ref().map_or(0, |m| m.created_at_ms);
    group(a)
        .cmp(&group(b))
        .then_with(|| created(b).cmp(&created(a)))
        .then_with(|| task_id(a).cmp(task_id(b)))
}

/// The table rows of `tasks`: grouped by slot (by node for global tasks),
/// newest first, older tasks of a slot marked as history.
pub fn task_rows(
    tasks: &[Task],
    hostnames: &BTreeMap<String, String>,
    options: TaskTableOptions,
) -> Vec<TaskRow> {
    let mut sorted: Vec<&Task> = tasks.iter().collect();
    sorted.sort_by(|a, b| row_order(a, b));
    let mut previous_name = String::new();
    sorted
        .into_iter()
        .map(|task| {
            let name = task_name(task);
            let history = name == previous_name;
            previous_name.clone_from(&name);
            task_row(task, name, history, hostnames, options)
        })
        .collect()
}

fn task_row(
    task: &Task,
    name: String,
    history: bool,
    hostnames: &BTreeMap<String, String>,
    options: TaskTableOptions,
) -> TaskRow {
    let status = task.status.clone().unwrap_or_default();
    let node = hostnames
        .get(&task.node_id)
        .cloned()
        .unwrap_or_else(|| task.node_id.clone());
    let error = if options.no_trunc {
        status.err.clone()
    } else {
        ellipsize(&status.err, ERROR_CHARS_MAX)
    };
    TaskRow {
        id: shown_id(task_id(task), options.no_trunc),
        name,
        history,
        image: task
            .spec
            .as_ref()
            .map(|s| image_text(s, options.no_trunc))
            .unwrap_or_default(),
        image_digest: status.image_digest.clone(),
        node,
        desired: state_name(task.desired_state),
        current: format!(
            "{} {}{}",
            state_name(status.state),
            ago_at(status.timestamp_ms, options.now_ms),
            health_suffix(&status)
        ),
        health: health_word(&status).to_string(),
        error,
        ports: task
            .endpoint
            .as_ref()
            .map(|e| ports_text(&e.ports))
            .unwrap_or_default(),
    }
}

/// The task table as text.
pub fn task_table(rows: &[TaskRow]) -> String {
    let cells: Vec<Vec<String>> = rows.iter().map(TaskRow::cells).collect();
    format_table(&TASK_HEADERS, &cells)
}

/// Prints rows as `-q`, `--format json` or the table ask.
pub fn print_task_rows(rows: &[TaskRow], quiet: bool, format: ListFormat) -> Result<()> {
    if quiet {
        for row in rows {
            println!("{}", row.id);
        }
        return Ok(());
    }
    match format {
        ListFormat::Json => print_json_lines(&rows.iter().map(TaskRow::json).collect::<Vec<_>>()),
        ListFormat::Table => {
            print!("{}", task_table(rows));
            Ok(())
        }
    }
}

/// Parses task filters, refusing a desired state that does not exist.
pub fn task_filters(raw: &[String]) -> Result<Filters> {
    for f in raw {
        if let Some(state) = f.strip_prefix("desired-state=")
            && !is_state_word(state)
        {
            bail!(
                "invalid desired-state filter {state:?}: use a task state such as running, shutdown, ready or accepted"
            );
        }
    }
    Filters::parse(raw, &TASK_FILTER_KEYS)
}

fn is_state_word(word: &str) -> bool {
    (TaskState::New as i32..=TaskState::Orphaned as i32).any(|s| state_word(s) == word)
}

/// Whether `task` passes one `-f key=value` filter.
pub fn task_matches(
    task: &Task,
    hostnames: &BTreeMap<String, String>,
    key: &str,
    value: &str,
) -> bool {
    match key {
        "id" => task_id(task).starts_with(value),
        "name" => task_name(task).starts_with(value),
        "node" => {
            let hostname = hostnames.get(&task.node_id).map_or("", String::as_str);
            hostname == value || (!value.is_empty() && task.node_id.starts_with(value))
        }
        "desired-state" => state_word(task.desired_state) == value,
        _ => false,
    }
}

/// `service ps` flags.
#[derive(Debug, clap::Args)]
pub struct PsArgs {
    /// Show full IDs, images and errors.
    #[arg(long)]
    no_trunc: bool,
    /// Only task IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Filter: id, name, node, desired-state (key=value; the same key
    /// given twice matches either).
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    filter: Vec<String>,
    /// table, or json (one object per line).
    #[arg(long)]
    format: Option<String>,
    /// Services, by name, ID or ID prefix.
    #[arg(required = true, value_name = "SERVICE")]
    services: Vec<String>,
}

/// `service ps`: the tasks of the services; a service that cannot be found
/// is reported after the others are shown.
pub async fn run(d: &Daemon, args: PsArgs) -> Result<()> {
    let format = ListFormat::parse(args.format.as_deref())?;
    let filters = task_filters(&args.filter)?;
    let hostnames = calls::hostnames(&calls::list_nodes(d).await?);
    let mut tasks = Vec::new();
    let mut errors = Vec::new();
    for reference in &args.services {
        match service_tasks(d, reference).await {
            Ok(found) => tasks.extend(found),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    let all_failed = errors.len() == args.services.len();
    tasks.retain(|t| filters.matches(|k, v| task_matches(t, &hostnames, k, v)));
    let options = TaskTableOptions {
        no_trunc: args.no_trunc,
        now_ms: now_ms(),
    };
    let rows = task_rows(&tasks, &hostnames, options);
    if !all_failed {
        print_task_rows(&rows, args.quiet, format)?;
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("\n"));
    }
    Ok(())
}

async fn service_tasks(d: &Daemon, reference: &str) -> Result<Vec<Task>> {
    let view = calls::get_service(d, reference).await?;
    let service = calls::service_of(&view)?;
    calls::service_tasks(d, super::text::service_id(service)).await
}

#[cfg(test)]
mod tests;
