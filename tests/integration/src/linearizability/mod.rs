//! Linearizability checking of the control API: clients run reads and
//! compare-and-sets on config objects through the managers' sockets and
//! record a history ([`workload`]); the checker verifies it against a
//! register per config ([`check`]) and looks for acknowledged writes that
//! vanished. See "Linearizability check" in `docs/reliability.md`.
//!
//! # Layout
//! - `history.rs` — operations, outcomes (ok / fail / info), faults.
//! - `classify.rs` — which control API errors are definite failures.
//! - `workload.rs` — the clients.
//! - `search.rs` — Wing & Gong search with Lowe's memoization, per register.
//! - `window.rs` — the smallest failing window of a violation.
//! - `lost.rs` — acknowledged writes lost.
//! - `report.rs` — `check` and the report.
//!
//! # Use
//! ```no_run
//! use rswarm_integration::linearizability::{CheckConfig, Endpoint, Workload, WorkloadConfig, check};
//! # fn run(endpoints: Vec<Endpoint>) -> anyhow::Result<()> {
//! let workload = Workload::start(WorkloadConfig::new(endpoints))?;
//! std::thread::sleep(std::time::Duration::from_secs(10));
//! workload.record_fault("kill -9 m1");
//! let history = workload.stop()?;
//! let report = check(&history, &CheckConfig::default());
//! println!("{report}");
//! assert!(report.is_clean());
//! # Ok(()) }
//! ```

mod classify;
mod history;
mod lost;
mod report;
mod search;
mod window;
mod workload;

pub use classify::classify_error;
pub use history::{
    FailReason, Fault, History, Op, Operation, Outcome, UNREADABLE_VALUE, VALUE_CLIENT_STRIDE,
    Value, show_value,
};
pub use report::{
    CheckConfig, KeyReport, KeyVerdict, LostWrite, OutcomeCounts, Report, STATES_MAX_DEFAULT,
    Violation, check,
};
pub use workload::{
    CALL_TIMEOUT_DEFAULT, Endpoint, INITIAL_VALUE, OPERATIONS_PER_CLIENT_MAX, SETUP_WAIT_MAX,
    Workload, WorkloadConfig,
};
