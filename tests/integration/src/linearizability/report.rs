//! Checking a whole history and reporting on it: operation counts, one
//! verdict per register (P-compositionality: a history is linearizable iff
//! each register's sub-history is, so each is searched on its own), the
//! smallest failing window of each violation, and acknowledged writes lost.

use std::fmt;
use std::time::Duration;

use super::history::{FailReason, History, Op, Operation, Outcome, show_value};
use super::lost::lost_writes;
use super::search::{SearchOp, Step, Verdict as SearchVerdict, search};
use super::window::{Window, failing_window};

/// (set, state) pairs the search of one register may cache before it gives
/// up with "unknown". Each costs a few dozen bytes, so the default bounds a
/// register's search to some hundred MB and a few seconds; histories of
/// this workload need a few thousand.
pub const STATES_MAX_DEFAULT: u64 = 2_000_000;

/// Values listed as possible at a window's start.
const START_VALUES_SHOWN_MAX: usize = 8;

/// Distinct failure reasons a printed report lists.
const REASONS_SHOWN_MAX: usize = 10;

/// How hard the checker tries.
#[derive(Clone, Debug)]
pub struct CheckConfig {
    /// Search limit per register (and per search while looking for the
    /// smallest failing window).
    pub states_max: u64,
}

impl Default for CheckConfig {
    fn default() -> Self {
        Self {
            states_max: STATES_MAX_DEFAULT,
        }
    }
}

/// Operations by outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutcomeCounts {
    /// Took effect.
    pub ok: usize,
    /// Certainly did not take effect (conflicts included).
    pub fail: usize,
    /// Of those, refused compare-and-sets.
    pub conflicts: usize,
    /// Unknown outcome.
    pub info: usize,
}

impl OutcomeCounts {
    fn add(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Ok { .. } => self.ok += 1,
            Outcome::Fail(reason) => {
                self.fail += 1;
                self.conflicts += usize::from(*reason == FailReason::Conflict);
            }
            Outcome::Info { .. } => self.info += 1,
        }
    }

    /// All operations.
    pub fn total(&self) -> usize {
        self.ok + self.fail + self.info
    }
}

/// The verdict on one register.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyVerdict {
    /// A linearization exists.
    Linearizable,
    /// None exists.
    Violation(Violation),
    /// The search hit its limit.
    Unknown,
}

/// A violation: the smallest window of the history that proves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Indexes into [`History::operations`] of the window's operations,
    /// in time order (empty if the window search hit its limit).
    pub window: Vec<usize>,
    /// The operation whose result first cannot be explained.
    pub failing: Option<usize>,
    /// The window, printed for people.
    pub rendered: String,
}

/// What the checker found on one register.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyReport {
    /// The register.
    pub key: String,
    /// Its operations.
    pub counts: OutcomeCounts,
    /// Whether its history is linearizable.
    pub verdict: KeyVerdict,
    /// (set, state) pairs the search cached.
    pub states_explored: u64,
    /// Why acknowledged writes could not be checked (`None`: checked).
    pub lost_check_skipped: Option<String>,
}

/// An acknowledged write that is neither the final value nor replaced by a
/// later compare-and-set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostWrite {
    /// Index into [`History::operations`].
    pub operation: usize,
    /// The register.
    pub key: String,
    /// The operation, printed.
    pub rendered: String,
}

/// The result of checking a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// All operations by outcome.
    pub counts: OutcomeCounts,
    /// Per register.
    pub keys: Vec<KeyReport>,
    /// Acknowledged writes lost.
    pub lost_writes: Vec<LostWrite>,
    /// Why operations failed or ended unknown: (outcome as printed, count),
    /// most frequent first.
    pub reasons: Vec<(String, usize)>,
    /// Faults injected during the run.
    pub faults: usize,
    /// How long the check took.
    pub check_time: Duration,
}

impl Report {
    /// Registers whose history is not linearizable.
    pub fn violations(&self) -> usize {
        self.keys
            .iter()
            .filter(|k| matches!(k.verdict, KeyVerdict::Violation(_)))
            .count()
    }

    /// Registers the search gave up on.
    pub fn unknown(&self) -> usize {
        self.keys
            .iter()
            .filter(|k| k.verdict == KeyVerdict::Unknown)
            .count()
    }

    /// No violation, no unknown verdict, no lost write, and every register's
    /// writes checked against a final read.
    pub fn is_clean(&self) -> bool {
        self.violations() == 0
            && self.unknown() == 0
            && self.lost_writes.is_empty()
            && self.keys.iter().all(|k| k.lost_check_skipped.is_none())
    }
}

/// Checks `history` against a register per key.
pub fn check(history: &History, config: &CheckConfig) -> Report {
    let started = std::time::Instant::now();
    let mut report = Report {
        counts: OutcomeCounts::default(),
        keys: Vec::new(),
        lost_writes: Vec::new(),
        reasons: reasons(history),
        faults: history.faults().len(),
        check_time: Duration::ZERO,
    };
    for op in history.operations() {
        report.counts.add(&op.outcome);
    }
    for key in history.keys() {
        let ops: Vec<(usize, &Operation)> = history
            .operations()
            .iter()
            .enumerate()
            .filter(|(_, o)| o.key == key)
            .collect();
        let (key_report, lost) = check_key(history, &key, &ops, config);
        report.keys.push(key_report);
        report.lost_writes.extend(lost);
    }
    report.check_time = started.elapsed();
    report
}

/// Failed and unknown outcomes by text, most frequent first.
fn reasons(history: &History) -> Vec<(String, usize)> {
    let mut by_text: std::collections::BTreeMap<String, usize> = Default::default();
    for op in history.operations() {
        if !op.outcome.is_ok() {
            *by_text.entry(op.outcome.to_string()).or_default() += 1;
        }
    }
    let mut out: Vec<(String, usize)> = by_text.into_iter().collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out
}

fn check_key(
    history: &History,
    key: &str,
    ops: &[(usize, &Operation)],
    config: &CheckConfig,
) -> (KeyReport, Vec<LostWrite>) {
    let initial = history.initial(key);
    let mut counts = OutcomeCounts::default();
    for (_, op) in ops {
        counts.add(&op.outcome);
    }
    let (search_ops, origin): (Vec<SearchOp>, Vec<usize>) = ops
        .iter()
        .filter_map(|(idx, op)| search_op(op).map(|s| (s, *idx)))
        .unzip();
    let result = search(&search_ops, initial, config.states_max);
    let verdict = match result.verdict {
        SearchVerdict::Linearizable => KeyVerdict::Linearizable,
        SearchVerdict::Unknown => KeyVerdict::Unknown,
        SearchVerdict::NotLinearizable => {
            let window = failing_window(&search_ops, initial, config.states_max);
            KeyVerdict::Violation(violation(history, key, window.as_ref(), &origin))
        }
    };
    let (lost, skipped) = match lost_writes(ops, initial) {
        Ok(lost) => (lost, None),
        Err(why) => (Vec::new(), Some(why)),
    };
    let lost = lost
        .into_iter()
        .map(|idx| LostWrite {
            operation: idx,
            key: key.to_string(),
            rendered: render_op(history, idx),
        })
        .collect();
    let report = KeyReport {
        key: key.to_string(),
        counts,
        verdict,
        states_explored: result.states_explored,
        lost_check_skipped: skipped,
    };
    (report, lost)
}

/// What an operation means to the register model; `None`: nothing (no
/// effect and no observation).
fn search_op(op: &Operation) -> Option<SearchOp> {
    let step = match (&op.op, &op.outcome) {
        (Op::Read, Outcome::Ok { read: Some(v) }) => Step::Read(*v),
        (Op::Read, _) => return None,
        (Op::Write { value }, Outcome::Ok { .. } | Outcome::Info { .. }) => Step::Write(*value),
        (Op::Cas { expected, new }, Outcome::Ok { .. } | Outcome::Info { .. }) => Step::Cas {
            expected: *expected,
            new: *new,
        },
        (Op::Cas { expected, .. }, Outcome::Fail(FailReason::Conflict)) => Step::Refused {
            expected: *expected,
        },
        (_, Outcome::Fail(_)) => return None,
    };
    Some(SearchOp {
        step,
        call: op.invoke,
        ret: (!op.outcome.is_info()).then_some(op.complete),
    })
}

fn violation(history: &History, key: &str, window: Option<&Window>, origin: &[usize]) -> Violation {
    let Some(window) = window else {
        return Violation {
            window: Vec::new(),
            failing: None,
            rendered: format!(
                "register {key} is not linearizable; the search for the smallest failing \
                 window hit its limit (raise states_max to see it)\n"
            ),
        };
    };
    let members: Vec<usize> = window.ops.iter().map(|i| origin[*i]).collect();
    let failing = origin[window.failing];
    let mut out = format!(
        "register {key} is not linearizable: no order of these {} operations explains their \
         results, whatever the register held at {} s ({})\n",
        members.len(),
        secs(window.start),
        start_values(&window.start_values),
    );
    out.push_str("      #  client          invoke  complete  operation               outcome\n");
    for idx in &members {
        out.push_str(&render_op(history, *idx));
        if *idx == failing {
            out.push_str("   <- first result that cannot be explained");
        }
        out.push('\n');
    }
    for fault in history.faults() {
        if fault.at >= window.start && fault.at <= window.end {
            out.push_str(&format!(
                "         fault at {}: {}\n",
                secs(fault.at),
                fault.what
            ));
        }
    }
    Violation {
        window: members,
        failing: Some(failing),
        rendered: out,
    }
}

/// The values a window may start from, for people; a long list is cut.
fn start_values(values: &[u64]) -> String {
    let shown: Vec<String> = values
        .iter()
        .take(START_VALUES_SHOWN_MAX)
        .map(|v| show_value(*v))
        .collect();
    let more = if values.len() > START_VALUES_SHOWN_MAX {
        ", …"
    } else {
        ""
    };
    format!("one of {}{more}", shown.join(", "))
}

/// One operation on one line: index, client, times, operation, outcome.
fn render_op(history: &History, idx: usize) -> String {
    let Some(op) = history.operations().get(idx) else {
        return format!("{idx:>7}  (no such operation)");
    };
    let complete = if op.outcome.is_info() {
        "open".to_string()
    } else {
        secs(op.complete)
    };
    format!(
        "{idx:>7}  {:<14} {:>7}  {:>8}  {:<22}  {}",
        history.client_label(op.client),
        secs(op.invoke),
        complete,
        op.op.to_string(),
        op.outcome
    )
}

/// Seconds since the start of the run, to the millisecond.
fn secs(at: Duration) -> String {
    format!("{:.3}", at.as_secs_f64())
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counts;
        writeln!(
            f,
            "linearizability: {} operations ({} ok, {} fail of which {} conflicts, {} info) \
             on {} registers, {} faults; checked in {} ms",
            c.total(),
            c.ok,
            c.fail,
            c.conflicts,
            c.info,
            self.keys.len(),
            self.faults,
            self.check_time.as_millis()
        )?;
        writeln!(
            f,
            "  violations: {}   unknown: {}   acknowledged writes lost: {}",
            self.violations(),
            self.unknown(),
            self.lost_writes.len()
        )?;
        for (text, count) in self.reasons.iter().take(REASONS_SHOWN_MAX) {
            writeln!(f, "  {count:>6} × {text}")?;
        }
        for k in &self.keys {
            let verdict = match &k.verdict {
                KeyVerdict::Linearizable => "linearizable",
                KeyVerdict::Violation(_) => "NOT LINEARIZABLE",
                KeyVerdict::Unknown => "unknown (search limit hit)",
            };
            writeln!(
                f,
                "  {}: {} ops ({} ok, {} fail, {} info), {verdict}, {} states",
                k.key,
                k.counts.total(),
                k.counts.ok,
                k.counts.fail,
                k.counts.info,
                k.states_explored
            )?;
            if let Some(why) = &k.lost_check_skipped {
                writeln!(f, "    acknowledged writes not checked: {why}")?;
            }
        }
        for k in &self.keys {
            if let KeyVerdict::Violation(v) = &k.verdict {
                write!(f, "\n{}", v.rendered)?;
            }
        }
        if !self.lost_writes.is_empty() {
            writeln!(f, "\nacknowledged writes lost:")?;
            for lost in &self.lost_writes {
                writeln!(f, "{}   (register {})", lost.rendered, lost.key)?;
            }
        }
        Ok(())
    }
}
