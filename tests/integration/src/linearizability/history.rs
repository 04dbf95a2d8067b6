//! The history a linearizability check reads: every operation a client ran
//! against a register (one config object per key), with the time it was
//! invoked, the time the client stopped waiting, and what came back.
//!
//! **Invariant:** an operation's outcome says exactly what the client knows.
//! `Ok` took effect (a read returns what it saw); `Fail` certainly did not
//! take effect; `Info` may or may not have taken effect, now or at any later
//! time, so the checker keeps it open until the end of the history. Getting
//! this wrong in the `Fail` direction makes the checker report violations
//! that did not happen; in the `Info` direction it only weakens the check.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// A register value. Every write of a run writes a value no other write
/// writes, so a read names the write it saw.
pub type Value = u64;

/// What a read returns when the stored data is not a value any client
/// writes (corrupt or foreign data): no write ever writes it, so such a read
/// can never be linearized and shows up as a violation.
pub const UNREADABLE_VALUE: Value = Value::MAX;

/// What a client asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Read the register.
    Read,
    /// Set the register to `value`, whatever it holds.
    Write {
        /// The value written.
        value: Value,
    },
    /// Set the register to `new` if it holds `expected`.
    Cas {
        /// The value the register must hold.
        expected: Value,
        /// The value it gets.
        new: Value,
    },
}

impl Op {
    /// The value this operation writes, if it writes.
    pub fn written(&self) -> Option<Value> {
        match self {
            Op::Read => None,
            Op::Write { value } => Some(*value),
            Op::Cas { new, .. } => Some(*new),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Read => write!(f, "read"),
            Op::Write { value } => write!(f, "write {}", show_value(*value)),
            Op::Cas { expected, new } => {
                write!(f, "cas {} -> {}", show_value(*expected), show_value(*new))
            }
        }
    }
}

/// Why an operation certainly did not take effect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailReason {
    /// A compare-and-set was applied and refused because the register did
    /// not hold the expected value at that moment. This is an observation
    /// the checker uses, not only an absence of effect.
    Conflict,
    /// Refused before anything was proposed (no connection, not a manager,
    /// no leader at the time of proposing, invalid request): no effect and
    /// nothing observed.
    Refused {
        /// What the server or the transport said.
        reason: String,
    },
}

/// What came back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Took effect. A read carries the value it saw.
    Ok {
        /// The value read (reads only).
        read: Option<Value>,
    },
    /// Certainly did not take effect.
    Fail(FailReason),
    /// May or may not have taken effect (timeout, connection lost in flight,
    /// leadership changed while the write was in flight, ...).
    Info {
        /// What the server or the client said.
        reason: String,
    },
}

impl Outcome {
    /// Whether the operation took effect for certain.
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok { .. })
    }

    /// Whether the outcome is unknown.
    pub fn is_info(&self) -> bool {
        matches!(self, Outcome::Info { .. })
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok { read: Some(v) } => write!(f, "ok {}", show_value(*v)),
            Outcome::Ok { read: None } => write!(f, "ok"),
            Outcome::Fail(FailReason::Conflict) => write!(f, "fail (conflict)"),
            Outcome::Fail(FailReason::Refused { reason }) => {
                write!(f, "fail ({})", shorten(reason))
            }
            Outcome::Info { reason } => write!(f, "info ({})", shorten(reason)),
        }
    }
}

/// One operation of one client on one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// Which client ran it (an index into [`History::clients`]).
    pub client: usize,
    /// The register (config name).
    pub key: String,
    /// What was asked.
    pub op: Op,
    /// When the client sent it, since the start of the run.
    pub invoke: Duration,
    /// When the client got an answer or gave up. For an `Info` outcome this
    /// is not when the operation ended: it may take effect later.
    pub complete: Duration,
    /// What came back.
    pub outcome: Outcome,
}

/// Something the test did to the cluster (a fault or a heal), on the same
/// clock as the operations, so a report can show it next to them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// When, since the start of the run.
    pub at: Duration,
    /// What, in words ("kill -9 m1 (the leader)").
    pub what: String,
}

/// Operations of a run, the registers' initial values, and the faults.
#[derive(Clone, Debug, Default)]
pub struct History {
    operations: Vec<Operation>,
    initial: BTreeMap<String, Value>,
    clients: Vec<String>,
    faults: Vec<Fault>,
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares register `key` with its value before the first operation.
    /// A key never declared starts at 0.
    pub fn set_initial(&mut self, key: impl Into<String>, value: Value) {
        self.initial.insert(key.into(), value);
    }

    /// Adds a client and returns its index; `label` says where it sent its
    /// calls (shown in reports).
    pub fn add_client(&mut self, label: impl Into<String>) -> usize {
        self.clients.push(label.into());
        self.clients.len() - 1
    }

    /// Adds an operation.
    pub fn push(&mut self, operation: Operation) {
        self.operations.push(operation);
    }

    /// Adds a fault.
    pub fn add_fault(&mut self, fault: Fault) {
        self.faults.push(fault);
    }

    /// Every operation, in the order added.
    pub fn operations(&self) -> &[Operation] {
        &self.operations
    }

    /// Every operation, to edit (tests plant anomalies in real histories).
    pub fn operations_mut(&mut self) -> &mut [Operation] {
        &mut self.operations
    }

    /// The initial value of `key`.
    pub fn initial(&self, key: &str) -> Value {
        self.initial.get(key).copied().unwrap_or(0)
    }

    /// Every key declared or used, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.initial.keys().cloned().collect();
        keys.extend(self.operations.iter().map(|o| o.key.clone()));
        keys.sort();
        keys.dedup();
        keys
    }

    /// The label of client `idx` ("c3" when it has none).
    pub fn client_label(&self, idx: usize) -> String {
        self.clients
            .get(idx)
            .cloned()
            .unwrap_or_else(|| format!("c{idx}"))
    }

    /// Client labels, by index.
    pub fn clients(&self) -> &[String] {
        &self.clients
    }

    /// The faults, in the order added.
    pub fn faults(&self) -> &[Fault] {
        &self.faults
    }

    /// Sorts operations by invocation time, so indexes read in time order.
    pub fn sort_by_invoke(&mut self) {
        self.operations
            .sort_by_key(|o| (o.invoke, o.complete, o.client));
        self.faults.sort_by_key(|f| f.at);
    }
}

/// A value as a report shows it: a value below [`VALUE_CLIENT_STRIDE`] as a
/// number, a client's value as `c<client>.<sequence>`.
pub fn show_value(value: Value) -> String {
    if value == UNREADABLE_VALUE {
        return "unreadable".to_string();
    }
    if value < VALUE_CLIENT_STRIDE {
        return value.to_string();
    }
    format!(
        "c{}.{}",
        value / VALUE_CLIENT_STRIDE - 1,
        value % VALUE_CLIENT_STRIDE
    )
}

/// Values written by one client are `(client + 1) * VALUE_CLIENT_STRIDE +
/// sequence`, so a value names its writer and never collides with the
/// initial values below the stride.
pub const VALUE_CLIENT_STRIDE: Value = 1_000_000;

/// Longest error text kept in a one-line rendering; the rest is cut, since
/// a report line should fit a terminal.
const REASON_CHARS_MAX: usize = 60;

fn shorten(reason: &str) -> String {
    if reason.chars().count() <= REASON_CHARS_MAX {
        return reason.to_string();
    }
    let cut: String = reason.chars().take(REASON_CHARS_MAX).collect();
    format!("{cut}…")
}
