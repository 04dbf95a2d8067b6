//! The linearizability checker on hand-made and generated histories, then
//! on a real 3-manager cluster whose leader is killed mid-run.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use proptest::prelude::*;
use rswarm_integration::Cluster;
use rswarm_integration::linearizability::{
    CheckConfig, Endpoint, FailReason, History, KeyVerdict, Op, Operation, Outcome, Report,
    Workload, WorkloadConfig, check, classify_error,
};

/// A history written by hand: times in milliseconds.
#[derive(Default)]
struct Script(History);

impl Script {
    fn op(mut self, client: usize, op: Op, invoke: u64, complete: u64, outcome: Outcome) -> Self {
        self.0.push(Operation {
            client,
            key: "x".to_string(),
            op,
            invoke: Duration::from_millis(invoke),
            complete: Duration::from_millis(complete),
            outcome,
        });
        self
    }

    fn check(&self) -> Report {
        check(&self.0, &CheckConfig::default())
    }
}

fn ok() -> Outcome {
    Outcome::Ok { read: None }
}

fn read_ok(value: u64) -> Outcome {
    Outcome::Ok { read: Some(value) }
}

fn info() -> Outcome {
    Outcome::Info {
        reason: "no answer within 6s".to_string(),
    }
}

fn conflict() -> Outcome {
    Outcome::Fail(FailReason::Conflict)
}

fn cas(expected: u64, new: u64) -> Op {
    Op::Cas { expected, new }
}

fn verdict(report: &Report) -> &KeyVerdict {
    &report.keys[0].verdict
}

/// Goal: the checker catches a stale read, and shows only the operations
/// that prove it. Method: 20 sequential compare-and-sets, then a read that
/// returns the value before the last one although that write had completed
/// before the read began.
#[test]
fn stale_read_after_completed_write_is_caught() {
    let mut script = Script::default();
    for i in 0..20 {
        script = script.op(0, cas(i, i + 1), i * 10, i * 10 + 5, ok());
    }
    let stale_read = 20;
    let script = script.op(1, Op::Read, 300, 310, read_ok(19));
    let report = script.check();
    print!("{report}");
    assert_eq!(report.violations(), 1);
    let KeyVerdict::Violation(v) = verdict(&report) else {
        panic!("expected a violation: {report}");
    };
    assert_eq!(v.failing, Some(stale_read));
    // The proof needs the last write and the read, not the 19 before.
    assert_eq!(v.window, vec![19, stale_read], "{}", v.rendered);
    assert!(v.rendered.contains("cas 19 -> 20"), "{}", v.rendered);
    assert!(v.rendered.contains("first result that cannot be explained"));
    assert!(!report.is_clean());
}

/// Goal: a correct history whose operations overlap passes. Method: a
/// compare-and-set that takes effect somewhere inside a long call, reads
/// that pin down where, a refused compare-and-set, and a final read.
#[test]
fn correct_concurrent_history_passes() {
    let report = Script::default()
        .op(0, cas(0, 1), 0, 100, ok())
        .op(1, Op::Read, 10, 20, read_ok(0))
        .op(1, Op::Read, 30, 40, read_ok(1))
        .op(2, cas(1, 2), 35, 60, ok())
        .op(3, Op::Read, 50, 70, read_ok(2))
        .op(1, cas(1, 3), 80, 90, conflict())
        .op(3, Op::Read, 75, 95, read_ok(2))
        .op(2, Op::Read, 110, 120, read_ok(2))
        .check();
    print!("{report}");
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.counts.ok, 7);
    assert_eq!(report.counts.conflicts, 1);
}

/// Goal: an operation whose outcome is unknown may take effect late or not
/// at all, but not before it was invoked. Method: an unknown write seen by
/// a later read; one never seen; one "seen" before it was sent.
#[test]
fn indeterminate_operations_may_or_may_not_happen() {
    let seen_later = Script::default()
        .op(0, cas(0, 1), 0, 5, info())
        .op(1, Op::Read, 20, 30, read_ok(0))
        .op(1, Op::Read, 50, 60, read_ok(1))
        .check();
    assert!(seen_later.is_clean(), "{seen_later}");
    assert_eq!(seen_later.counts.info, 1);

    let never_seen = Script::default()
        .op(0, cas(0, 1), 0, 5, info())
        .op(1, Op::Read, 50, 60, read_ok(0))
        .op(1, cas(0, 2), 70, 80, ok())
        .op(1, Op::Read, 90, 95, read_ok(2))
        .check();
    assert!(never_seen.is_clean(), "{never_seen}");

    let seen_before_sent = Script::default()
        .op(1, Op::Read, 0, 5, read_ok(1))
        .op(0, cas(0, 1), 10, 15, info())
        .check();
    assert_eq!(seen_before_sent.violations(), 1, "{seen_before_sent}");
}

/// Goal: a refused compare-and-set is an observation: the store said the
/// register did not hold the expected value. Method: a conflict reported
/// while nothing else could have changed the register.
#[test]
fn conflict_without_a_competing_write_is_a_violation() {
    let report = Script::default()
        .op(0, cas(0, 1), 0, 10, conflict())
        .op(0, Op::Read, 20, 30, read_ok(0))
        .check();
    assert_eq!(report.violations(), 1, "{report}");
}

/// Goal: the search gives up with "unknown" instead of running long.
/// Method: 12 concurrent writes and a read of a value none wrote: proving
/// that no order explains it visits thousands of (set, state) pairs; a
/// limit of 100 stops it, the default finds the violation.
#[test]
fn search_limit_gives_unknown() {
    let mut script = Script::default();
    for value in 1..=12 {
        script = script.op(value as usize, Op::Write { value }, 0, 100, ok());
    }
    let script = script.op(0, Op::Read, 200, 210, read_ok(99));
    let limited = check(&script.0, &CheckConfig { states_max: 100 });
    assert_eq!(limited.unknown(), 1, "{limited}");
    assert_eq!(limited.violations(), 0);
    assert!(!limited.is_clean());
    assert!(limited.keys[0].states_explored > 100);
    let full = script.check();
    assert_eq!(full.violations(), 1, "{full}");
}

/// Goal: an acknowledged write that a final read does not reach is reported
/// as lost, one that a later compare-and-set replaced is not. Method: two
/// chains of writes, one broken.
#[test]
fn acknowledged_write_lost_is_reported() {
    let kept = Script::default()
        .op(0, cas(0, 1), 0, 10, ok())
        .op(1, cas(1, 2), 20, 30, ok())
        .op(2, cas(0, 3), 20, 30, conflict())
        .op(0, Op::Read, 40, 50, read_ok(2))
        .check();
    assert!(kept.lost_writes.is_empty(), "{kept}");
    assert!(kept.is_clean(), "{kept}");

    let lost = Script::default()
        .op(0, cas(0, 1), 0, 10, ok())
        .op(1, cas(1, 2), 20, 30, ok())
        .op(0, Op::Read, 40, 50, read_ok(1))
        .check();
    print!("{lost}");
    assert_eq!(lost.lost_writes.len(), 1, "{lost}");
    assert_eq!(lost.lost_writes[0].operation, 1);
    assert_eq!(lost.violations(), 1);
}

/// Goal: control API errors are classified so that only errors that prove
/// nothing happened count as failures. Method: the manager's statuses for
/// each case, and a real call to a socket nobody listens on.
#[test]
fn control_api_errors_are_classified_conservatively() {
    use tonic::Status;
    let conflict_status = Status::aborted(
        "update of config abc conflicts with a concurrent change (version 7 was read, the \
         store is at 9): read it again and retry",
    );
    assert_eq!(classify_error(&conflict_status), conflict());
    let refused =
        |s: &Status| matches!(classify_error(s), Outcome::Fail(FailReason::Refused { .. }));
    assert!(refused(&Status::unavailable(
        "leadership changed during the call: retry"
    )));
    assert!(refused(&Status::failed_precondition(
        "this node is not a cluster manager"
    )));
    assert!(refused(&Status::invalid_argument("bad spec")));
    assert!(refused(&Status::unavailable(
        "cluster has no leader: 1 of 3 managers reachable; a majority (2) must be up to elect one"
    )));
    assert!(refused(&Status::unavailable(
        "cannot connect to the leader at 192.0.2.1:4242 to forward the call: connection refused; \
         nothing was changed: retry"
    )));
    for unknown in [
        Status::unavailable(
            "the outcome of the write is unknown: leadership changed while it was in flight; \
             read the object again before retrying",
        ),
        Status::deadline_exceeded(
            "the call did not finish within 5s (cluster has no leader: 1 of 3 managers \
             reachable); a change it carried may or may not have been applied",
        ),
        Status::unavailable(
            "lost the connection to the leader at 192.0.2.1:4242 while forwarding the call: \
             broken pipe; a change it carried may or may not have been applied",
        ),
        Status::internal("raft: shutting down"),
        Status::unknown("transport error"),
        Status::cancelled("h2 protocol error"),
    ] {
        assert!(classify_error(&unknown).is_info(), "{unknown:?}");
    }
    // A daemon that is not running: the request is never sent.
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("rswarm.sock");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let status = runtime
        .block_on(async {
            let channel = rswarm_pki::unix_channel(socket);
            rswarm_proto::control_client::ControlClient::new(channel)
                .get_config(rswarm_proto::GetConfigRequest::default())
                .await
        })
        .expect_err("nobody listens");
    assert!(refused(&status), "{status:?}");
}

/// One generated operation: what it does and how its call went.
#[derive(Clone, Debug)]
struct Planned {
    key: usize,
    kind: u8,
    lead: u64,
    lag: u64,
    fate: u8,
}

fn planned() -> impl Strategy<Value = Planned> {
    (0..2usize, 0..4u8, 0..40u64, 0..40u64, 0..10u8).prop_map(|(key, kind, lead, lag, fate)| {
        Planned {
            key,
            kind,
            lead,
            lag,
            fate,
        }
    })
}

/// A history produced by running `plan` one operation at a time on two
/// registers (operation `i` takes effect at `10 i + 5` ms), with each call's
/// interval stretched around that instant by random amounts, so calls
/// overlap. Some calls end unknown: those whose fate says so either took
/// effect at their instant or never did.
fn generated_history(plan: &[Planned]) -> History {
    let mut history = History::new();
    let mut state = [0u64; 2];
    let mut last_point = 0;
    for (i, p) in plan.iter().enumerate() {
        let point = 10 * i as u64 + 5;
        last_point = point;
        let current = state[p.key];
        let fresh = 1000 + i as u64;
        let op = match p.kind {
            0 => Op::Read,
            1 => cas(current, fresh),
            2 => cas(current + 500_000, fresh),
            _ => Op::Write { value: fresh },
        };
        let unknown = p.fate < 2;
        let takes_effect = !(unknown && p.fate == 1);
        let mut outcome = match op {
            Op::Read => read_ok(current),
            Op::Cas { expected, new } if expected == current => {
                if takes_effect {
                    state[p.key] = new;
                }
                ok()
            }
            Op::Cas { .. } => conflict(),
            Op::Write { value } => {
                if takes_effect {
                    state[p.key] = value;
                }
                ok()
            }
        };
        if unknown {
            outcome = info();
        }
        history.push(Operation {
            client: i % 5,
            key: format!("k{}", p.key),
            op,
            invoke: Duration::from_millis(point.saturating_sub(p.lead)),
            complete: Duration::from_millis(point + p.lag),
            outcome,
        });
    }
    for (key, value) in state.iter().enumerate() {
        let at = last_point + 100;
        history.push(Operation {
            client: 9,
            key: format!("k{key}"),
            op: Op::Read,
            invoke: Duration::from_millis(at),
            complete: Duration::from_millis(at + 5),
            outcome: read_ok(*value),
        });
    }
    history
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Goal: no false alarms. Method: histories generated from a real
    /// sequential execution (see `generated_history`) always pass, with no
    /// acknowledged write lost.
    #[test]
    fn histories_of_sequential_executions_pass(plan in prop::collection::vec(planned(), 1..60)) {
        let history = generated_history(&plan);
        let report = check(&history, &CheckConfig::default());
        prop_assert!(report.is_clean(), "{}", report);
    }
}

/// How long the clients run against the real cluster.
const REAL_RUN: Duration = Duration::from_secs(10);
/// When the leader is killed, and when it is restarted.
const KILL_AT: Duration = Duration::from_secs(3);
const RESTART_AT: Duration = Duration::from_secs(6);

/// Goal: the control API is linearizable and loses no acknowledged write
/// across a leader crash. Method: 3 managers on loopback, 4 clients (two on
/// followers, so forwarding to the leader is exercised) running reads and
/// compare-and-sets on 3 configs for 10 s; the test kill -9s the leader at
/// 3 s and restarts it from its data dir at 6 s; then every register is read
/// back and the history checked.
#[test]
fn control_api_is_linearizable_across_a_leader_crash() -> Result<()> {
    let mut c = Cluster::form(3, 0)?;
    let leader = c.leader("m1")?;
    let endpoints: Vec<Endpoint> = c
        .nodes
        .iter()
        .map(|n| Endpoint {
            name: n.name.clone(),
            socket: n.run_dir.join("rswarm.sock"),
        })
        .collect();
    let workload = Workload::start(WorkloadConfig::new(endpoints))?;
    std::thread::sleep(KILL_AT.saturating_sub(workload.elapsed()));
    workload.record_fault(format!("kill -9 {leader} (the leader)"));
    c.node_mut(&leader).kill9();
    std::thread::sleep(RESTART_AT.saturating_sub(workload.elapsed()));
    workload.record_fault(format!("restart {leader} from its data dir"));
    c.node_mut(&leader)
        .start()
        .with_context(|| format!("restarting {leader}"))?;
    std::thread::sleep(REAL_RUN.saturating_sub(workload.elapsed()));
    let history = workload.stop()?;
    let report = check(&history, &CheckConfig::default());
    println!("{report}");
    ensure!(report.violations() == 0, "violations:\n{report}");
    ensure!(report.lost_writes.is_empty(), "lost writes:\n{report}");
    ensure!(report.is_clean(), "not clean:\n{report}");
    ensure!(report.faults == 2);
    ensure!(
        report.counts.ok >= 100,
        "too few operations succeeded to mean anything:\n{report}"
    );
    // Clients on followers got answers: forwarding to the leader works.
    let forwarded_ok = history
        .operations()
        .iter()
        .filter(|o| o.outcome.is_ok())
        .filter(|o| {
            let label = history.client_label(o.client);
            label.starts_with('c') && !label.ends_with(&format!("@{leader}"))
        })
        .count();
    ensure!(
        forwarded_ok > 0,
        "no operation through a follower succeeded"
    );
    ensure_stale_read_is_caught(history)
}

/// Plants a stale read in a real history: a read that began after a
/// compare-and-set completed now returns the value that write replaced.
/// The checker must flag it.
fn ensure_stale_read_is_caught(mut history: History) -> Result<()> {
    let ops = history.operations().to_vec();
    let (idx, expected) = ops
        .iter()
        .enumerate()
        .find_map(|(idx, read)| {
            let Outcome::Ok { read: Some(_) } = read.outcome else {
                return None;
            };
            ops.iter().find_map(|w| match w.op {
                Op::Cas { expected, .. }
                    if w.key == read.key && w.outcome.is_ok() && w.complete < read.invoke =>
                {
                    Some((idx, expected))
                }
                _ => None,
            })
        })
        .context("no read after an acknowledged write")?;
    history.operations_mut()[idx].outcome = read_ok(expected);
    let report = check(&history, &CheckConfig::default());
    ensure!(
        report.violations() == 1,
        "planted stale read not caught:\n{report}"
    );
    Ok(())
}

/// Operations in the long generated history: about a 10-minute soak of
/// this workload on one register.
const LONG_HISTORY_OPERATIONS: usize = 20_000;

/// Goal: the checker stays fast and small on long histories (a soak), where
/// a bitset per cached state would cost memory quadratic in the length.
/// Method: a generated 20,000-operation history with overlapping calls and
/// 2 % unknown outcomes must check clean in few states per operation.
#[test]
fn long_history_checks_quickly() {
    let plan: Vec<Planned> = (0..LONG_HISTORY_OPERATIONS)
        .map(|i| Planned {
            key: 0,
            kind: (i * 7 % 4) as u8,
            lead: (i * 13 % 40) as u64,
            lag: (i * 29 % 40) as u64,
            // About 2 % unknown outcomes, as in the real runs.
            fate: match i % 50 {
                0 => 0,
                25 => 1,
                _ => 5,
            },
        })
        .collect();
    let history = generated_history(&plan);
    let started = std::time::Instant::now();
    let report = check(&history, &CheckConfig::default());
    println!(
        "{report}checked {} operations in {:?}",
        plan.len(),
        started.elapsed()
    );
    assert!(report.is_clean(), "{report}");
    assert!(report.keys[0].states_explored < 10 * LONG_HISTORY_OPERATIONS as u64);
}

/// What an operation requires of the register and does to it, for the
/// brute-force checker: (required value, must differ, new value).
fn brute_step(o: &Operation, state: u64) -> Option<u64> {
    match (&o.op, &o.outcome) {
        (Op::Read, Outcome::Ok { read: Some(v) }) => (*v == state).then_some(state),
        (Op::Write { value }, _) => Some(*value),
        (Op::Cas { expected, .. }, Outcome::Fail(FailReason::Conflict)) => {
            (*expected != state).then_some(state)
        }
        (Op::Cas { expected, new }, _) => (*expected == state).then_some(*new),
        (Op::Read, _) => Some(state),
    }
}

/// Whether `ops` has a linearization, by trying every order: an operation
/// may go next once every operation that returned before it was invoked is
/// placed; unknown outcomes may be left out. Exponential: tiny histories.
fn brute_force_linearizable(ops: &[Operation], placed: &mut Vec<bool>, state: u64) -> bool {
    let relevant = |o: &Operation| match (&o.op, &o.outcome) {
        (Op::Read, Outcome::Ok { .. }) => true,
        (Op::Read, _) => false,
        (_, Outcome::Fail(FailReason::Refused { .. })) => false,
        _ => true,
    };
    let required = |o: &Operation| relevant(o) && !o.outcome.is_info();
    if ops
        .iter()
        .zip(placed.iter())
        .all(|(o, p)| *p || !required(o))
    {
        return true;
    }
    for (i, o) in ops.iter().enumerate() {
        if placed[i] || !relevant(o) {
            continue;
        }
        let blocked = ops
            .iter()
            .zip(placed.iter())
            .any(|(before, p)| !*p && required(before) && before.complete < o.invoke);
        if blocked {
            continue;
        }
        if let Some(next) = brute_step(o, state) {
            placed[i] = true;
            if brute_force_linearizable(ops, placed, next) {
                placed[i] = false;
                return true;
            }
            placed[i] = false;
        }
    }
    false
}

fn random_operation() -> impl Strategy<Value = Operation> {
    let op = prop_oneof![
        Just(Op::Read),
        (0..3u64).prop_map(|value| Op::Write { value }),
        (0..3u64, 0..3u64).prop_map(|(expected, new)| Op::Cas { expected, new }),
    ];
    let outcome = (0..4u8, 0..3u64).prop_map(|(kind, value)| match kind {
        0 => info(),
        1 => conflict(),
        _ => read_ok(value),
    });
    (op, outcome, 0..20u64, 0..10u64).prop_map(|(op, outcome, invoke, length)| {
        let outcome = match (&op, outcome) {
            (Op::Read, Outcome::Fail(_)) => info(),
            (Op::Read, o) => o,
            (Op::Cas { .. }, o @ Outcome::Fail(_)) => o,
            (_, Outcome::Ok { .. }) => ok(),
            (_, o @ Outcome::Info { .. }) => o,
            (_, Outcome::Fail(_)) => ok(),
        };
        Operation {
            client: 0,
            key: "x".to_string(),
            op,
            invoke: Duration::from_millis(invoke),
            complete: Duration::from_millis(invoke + length),
            outcome,
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Goal: the memoized search gives exactly the answer of trying every
    /// order, on arbitrary small histories with few values (so values
    /// repeat), unknown outcomes and conflicts, linearizable or not; and a
    /// violation's window contains the operation it blames. Method:
    /// differential test against a brute-force checker.
    #[test]
    fn search_agrees_with_brute_force(ops in prop::collection::vec(random_operation(), 1..7)) {
        let mut history = History::new();
        for op in &ops {
            history.push(op.clone());
        }
        let expected = brute_force_linearizable(&ops, &mut vec![false; ops.len()], 0);
        let report = check(&history, &CheckConfig::default());
        match &report.keys[0].verdict {
            KeyVerdict::Linearizable => prop_assert!(expected, "{}", report),
            KeyVerdict::Violation(v) => {
                prop_assert!(!expected, "{}", report);
                let failing = v.failing.expect("a window");
                prop_assert!(v.window.contains(&failing), "{}", report);
            }
            KeyVerdict::Unknown => prop_assert!(false, "unknown on a tiny history"),
        }
    }
}
