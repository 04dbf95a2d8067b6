//! Waiting for a service to converge: polls `GetService` + `ListTasks`
//! every `POLL_PERIOD`, feeds the progress tracker, and draws its frames —
//! redrawn in place on a terminal, only the lines that changed otherwise
//! (no ANSI codes), nothing with `--quiet`.
//!
//! Owns: the poll loop, its bounds (`--timeout`, consecutive failed polls),
//! Ctrl-C (the change goes on; exit 0), and the terminal drawing.
//! Does not own: what the frames say or when the wait is over
//! (`progress.rs`).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use rswarm_proto::{GetServiceRequest, ListTasksRequest, Node, ServiceView, Task, UpdateStatus};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tonic::Code;

use crate::client::Daemon;

use super::calls;
use super::progress::{Frame, Observation, Outcome, ProgressLine, Purpose, Tracker};
use super::spec::WaitFlags;

/// Time between polls (Docker's 200 ms): fast enough that a bar moves with
/// each state, light enough for the leader (two reads per poll).
const POLL_PERIOD: Duration = Duration::from_millis(200);

/// Polls between two node listings: hostnames and node health change far
/// less often than tasks.
const POLLS_PER_NODE_LISTING: u32 = 10;

/// Polls in a row that may fail (a leader election answers Unavailable for
/// a few seconds) before the wait gives up: 25 × 200 ms = 5 s.
const POLL_FAILURES_MAX: u32 = 25;

/// Columns a terminal line is cut to when `COLUMNS` does not say: a line
/// that wraps would break the redraw.
const TERMINAL_COLUMNS_DEFAULT: usize = 80;

/// The service a wait is about, and what the change left behind.
#[derive(Debug, Clone)]
pub struct WaitTarget {
    /// Full service ID.
    pub service_id: String,
    /// The name people know it by, for the hints.
    pub name: String,
    /// What the wait is for.
    pub purpose: Purpose,
    /// The update status right after the change (see `Tracker::new`).
    pub baseline: Option<UpdateStatus>,
}

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waited {
    /// 0 converged (or detached, or interrupted), 1 failed, 2 not placed.
    pub exit_code: u8,
    /// Ctrl-C: the user wants the command back; later waits are skipped.
    pub interrupted: bool,
}

/// Waits as `flags` say; the outcome's message goes to stderr.
/// `--detach` returns at once.
pub async fn wait(d: &Daemon, target: &WaitTarget, flags: WaitFlags) -> Result<Waited> {
    let mut waited = Waited {
        exit_code: 0,
        interrupted: false,
    };
    if flags.detach {
        return Ok(waited);
    }
    let mut display = Display::new(flags.quiet);
    let result = poll_until_done(d, target, flags.timeout, &mut display).await;
    display.finish();
    match result? {
        Ended::Outcome(outcome) => waited.exit_code = report(&outcome),
        Ended::Interrupted => {
            display.say("Operation continuing in background.");
            display.say(&format!(
                "Use `rswarm service ps {}` to check progress.",
                target.name
            ));
            waited.interrupted = true;
        }
        Ended::TimedOut(summary) => bail!(
            "gave up waiting after {}: {summary}; the change goes on in the background: \
             check it with `rswarm service ps {}`",
            humantime::format_duration(flags.timeout),
            target.name
        ),
    }
    Ok(waited)
}

/// Completes on SIGINT; never, when the handler could not be installed.
async fn interrupted(signal: &mut Option<Signal>) {
    if let Some(signal) = signal
        && signal.recv().await.is_some()
    {
        return;
    }
    std::future::pending::<()>().await;
}

/// Prints an outcome's message to stderr; returns its exit code.
fn report(outcome: &Outcome) -> u8 {
    match outcome {
        Outcome::Converged => {}
        Outcome::Failed(message) | Outcome::Unplaceable(message) => eprintln!("error: {message}"),
    }
    outcome.exit_code()
}

enum Ended {
    Outcome(Outcome),
    Interrupted,
    TimedOut(String),
}

async fn poll_until_done(
    d: &Daemon,
    target: &WaitTarget,
    timeout: Duration,
    display: &mut Display,
) -> Result<Ended> {
    let started = Instant::now();
    let mut tracker = Tracker::new(target.purpose, target.baseline.clone());
    let mut nodes: Vec<Node> = Vec::new();
    let mut failures = 0;
    let mut last_overall = String::new();
    // Installed before the first poll, so Ctrl-C never kills the command
    // mid-wait; without a handler the wait just cannot be interrupted.
    let mut interrupt = signal(SignalKind::interrupt()).ok();
    let mut poll: u32 = 0;
    loop {
        if poll.is_multiple_of(POLLS_PER_NODE_LISTING) {
            nodes = calls::list_nodes(d).await.unwrap_or(nodes);
        }
        match observe(d, &target.service_id).await {
            Ok((view, tasks)) => {
                failures = 0;
                let observation = Observation {
                    view: &view,
                    tasks: &tasks,
                    nodes: &nodes,
                };
                let frame = tracker.observe(observation, started.elapsed());
                display.show(&frame);
                last_overall = overall_text(&frame);
                if let Some(outcome) = frame.outcome {
                    return Ok(Ended::Outcome(outcome));
                }
            }
            Err(PollError::Gone(e)) => return Err(e),
            Err(PollError::Transient(e)) => {
                failures += 1;
                if failures >= POLL_FAILURES_MAX {
                    return Err(e.context("lost contact with the cluster while waiting"));
                }
            }
        }
        if started.elapsed() >= timeout {
            return Ok(Ended::TimedOut(last_overall));
        }
        tokio::select! {
            () = tokio::time::sleep(POLL_PERIOD) => {}
            () = interrupted(&mut interrupt) => return Ok(Ended::Interrupted),
        }
        poll = poll.wrapping_add(1);
    }
}

fn overall_text(frame: &Frame) -> String {
    frame
        .lines
        .iter()
        .find(|l| l.id == "overall progress")
        .map(|l| l.plain.trim_start_matches("overall progress: ").to_string())
        .unwrap_or_default()
}

enum PollError {
    /// The service is gone: waiting longer cannot help.
    Gone(anyhow::Error),
    /// Worth another poll.
    Transient(anyhow::Error),
}

async fn observe(d: &Daemon, service_id: &str) -> Result<(ServiceView, Vec<Task>), PollError> {
    let view = d
        .control()
        .get_service(GetServiceRequest {
            reference: service_id.to_string(),
        })
        .await
        .map_err(|s| match s.code() {
            Code::NotFound => PollError::Gone(anyhow::anyhow!(
                "service {service_id} was removed while waiting for it"
            )),
            _ => PollError::Transient(d.explain(s)),
        })?
        .into_inner()
        .service
        .ok_or_else(|| {
            PollError::Transient(anyhow::anyhow!("the manager answered without the service"))
        })?;
    let request = ListTasksRequest {
        service: service_id.to_string(),
        ..Default::default()
    };
    let tasks = calls::list_tasks(d, request)
        .await
        .map_err(PollError::Transient)?;
    Ok((view, tasks))
}

/// Where frames go.
enum Display {
    /// `--quiet`: nowhere.
    Quiet,
    /// A terminal: the block is redrawn in place.
    Terminal { drawn: usize, columns: usize },
    /// A pipe or file: each line when its plain text changes.
    Plain { printed: BTreeMap<String, String> },
}

impl Display {
    fn new(quiet: bool) -> Self {
        if quiet {
            Self::Quiet
        } else if std::io::stdout().is_terminal() {
            let columns = std::env::var("COLUMNS")
                .ok()
                .and_then(|c| c.parse().ok())
                .unwrap_or(TERMINAL_COLUMNS_DEFAULT);
            Self::Terminal { drawn: 0, columns }
        } else {
            Self::Plain {
                printed: BTreeMap::new(),
            }
        }
    }

    fn show(&mut self, frame: &Frame) {
        let mut out = std::io::stdout().lock();
        let written = match self {
            Self::Quiet => Ok(()),
            Self::Terminal { drawn, columns } => {
                let text = redraw(*drawn, &frame.lines, *columns);
                *drawn = frame.lines.len();
                out.write_all(text.as_bytes())
            }
            Self::Plain { printed } => {
                let text = changed_lines(printed, &frame.lines);
                out.write_all(text.as_bytes())
            }
        };
        // A closed stdout (`| head`) must not stop the wait: the outcome
        // and exit code still matter.
        let _ = written.and_then(|()| out.flush());
    }

    /// Leaves the drawn block as it is; later output goes below it.
    fn finish(&mut self) {
        if let Self::Terminal { drawn, .. } = self {
            *drawn = 0;
        }
    }

    /// A message for people: stdout, or stderr when progress is quiet.
    fn say(&self, message: &str) {
        match self {
            Self::Quiet => eprintln!("{message}"),
            _ => println!("{message}"),
        }
    }
}

/// The bytes that replace the `drawn` lines of the last frame with
/// `lines`: cursor up, each line cleared and rewritten (cut to `columns`
/// so none wraps), and leftover lines of a taller frame cleared.
fn redraw(drawn: usize, lines: &[ProgressLine], columns: usize) -> String {
    let mut text = String::new();
    if drawn > 0 {
        text.push_str(&format!("\x1b[{drawn}A"));
    }
    for line in lines {
        let cut: String = line.text.chars().take(columns.saturating_sub(1)).collect();
        text.push_str(&format!("\x1b[2K{cut}\n"));
    }
    let leftover = drawn.saturating_sub(lines.len());
    if leftover > 0 {
        text.push_str(&"\x1b[2K\n".repeat(leftover));
        text.push_str(&format!("\x1b[{leftover}A"));
    }
    text
}

/// The plain lines that changed since they were last printed.
fn changed_lines(printed: &mut BTreeMap<String, String>, lines: &[ProgressLine]) -> String {
    let mut text = String::new();
    for line in lines {
        if printed.get(&line.id) != Some(&line.plain) {
            text.push_str(&line.plain);
            text.push('\n');
            printed.insert(line.id.clone(), line.plain.clone());
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: &str, text: &str, plain: &str) -> ProgressLine {
        ProgressLine {
            id: id.into(),
            text: text.into(),
            plain: plain.into(),
        }
    }

    #[test]
    fn a_terminal_redraws_the_block_in_place() {
        let first = [line("a", "a: one", "a"), line("b", "b: two", "b")];
        assert_eq!(redraw(0, &first, 80), "\x1b[2Ka: one\n\x1b[2Kb: two\n");
        let shorter = [line("a", "a: three", "a")];
        assert_eq!(
            redraw(2, &shorter, 80),
            "\x1b[2A\x1b[2Ka: three\n\x1b[2K\n\x1b[1A"
        );
        assert_eq!(redraw(0, &[line("a", "abcdef", "a")], 4), "\x1b[2Kabc\n");
    }

    #[test]
    fn off_a_terminal_only_changes_are_printed() {
        let mut printed = BTreeMap::new();
        let frame = [
            line(
                "overall progress",
                "overall progress: 0 out of 1 tasks",
                "overall progress: 0 out of 1 tasks",
            ),
            line("1/1", "1/1: pending [==>   ]", "1/1: pending"),
        ];
        assert_eq!(
            changed_lines(&mut printed, &frame),
            "overall progress: 0 out of 1 tasks\n1/1: pending\n"
        );
        let same_state = [
            frame[0].clone(),
            line("1/1", "1/1: pending [===>  ]", "1/1: pending"),
        ];
        assert_eq!(changed_lines(&mut printed, &same_state), "");
        let running = [
            line("overall progress", "", "overall progress: 1 out of 1 tasks"),
            line("1/1", "", "1/1: running"),
        ];
        assert_eq!(
            changed_lines(&mut printed, &running),
            "overall progress: 1 out of 1 tasks\n1/1: running\n"
        );
        assert!(!changed_lines(&mut printed, &running).contains('\x1b'));
    }
}
