//! The smallest failing window of a register's history that is not
//! linearizable, so a report shows a handful of operations instead of
//! thousands.
//!
//! Two cuts, each found by binary search:
//! - **End:** the shortest prefix that fails. The prefix at time `T` holds
//!   the operations invoked by `T`; those still running at `T` become open
//!   (they may or may not have happened). Any linearization of the whole
//!   history gives one of every prefix, so a failing prefix proves the
//!   violation, and prefixes fail monotonically.
//! - **Start:** the latest time `S` such that the operations still running
//!   at or after `S` fail from *every* value the register could hold at `S`
//!   (its initial value or one written by an operation invoked before `S`).
//!   Operations that completed before `S` are left out; those running
//!   across `S` become optional. A linearization of the prefix would give
//!   one of this window from the register's value at `S`, so a window that
//!   fails from every such value proves the violation on its own.
//!
//! **Invariant:** a cut is only moved when a search proved it fails; a
//! search that hits its limit keeps the wider window, never a wrong one.

use std::collections::BTreeSet;
use std::time::Duration;

use super::search::{SearchOp, Verdict, search};

/// Values the register may hold at a window's start that are each tried;
/// past this many the start is not moved (each is one search).
const WINDOW_START_VALUES_MAX: usize = 4096;

/// The operations of a register's history, as indexes into the caller's
/// slice, that alone prove it is not linearizable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Window {
    /// Operations in the window, in the caller's order.
    pub(crate) ops: Vec<usize>,
    /// The operation whose completion first makes the history fail.
    pub(crate) failing: usize,
    /// The window's start (operations completed before it are left out).
    pub(crate) start: Duration,
    /// Its end: the failing operation's completion.
    pub(crate) end: Duration,
    /// The values the register may hold at the start.
    pub(crate) start_values: Vec<u64>,
}

/// The smallest failing window of `ops` (not linearizable from `initial`),
/// or `None` if the prefix search could not prove any prefix fails within
/// `states_max` per search.
pub(crate) fn failing_window(ops: &[SearchOp], initial: u64, states_max: u64) -> Option<Window> {
    let mut returns: Vec<(Duration, usize)> = ops
        .iter()
        .enumerate()
        .filter_map(|(idx, op)| op.ret.map(|r| (r, idx)))
        .collect();
    returns.sort_unstable();
    let prefix_fails = |k: usize| {
        let cut = returns[k].0;
        search(&prefix(ops, cut), initial, states_max).verdict == Verdict::NotLinearizable
    };
    let end_idx = first_true(returns.len(), prefix_fails)?;
    let (end, failing) = returns[end_idx];
    let prefix_ops = prefix(ops, end);
    let starts: Vec<Duration> = {
        let set: BTreeSet<Duration> = ops
            .iter()
            .filter(|o| o.call <= end)
            .map(|o| o.call)
            .collect();
        set.into_iter().collect()
    };
    let window_fails = |k: usize| {
        let (window, _) = window_at(&prefix_ops, starts[k]);
        let values = start_values(ops, initial, starts[k]);
        values.len() <= WINDOW_START_VALUES_MAX
            && values
                .iter()
                .all(|v| search(&window, *v, states_max).verdict == Verdict::NotLinearizable)
    };
    // The latest start that still fails: the first start that does not
    // fail, minus one (the earliest start always fails: it is the prefix
    // from the initial value).
    let start_idx = first_true(starts.len(), |k| !window_fails(k))
        .map_or(starts.len().saturating_sub(1), |k| k.saturating_sub(1));
    let start = starts[start_idx];
    let (_, members) = window_at(&prefix_ops, start);
    Some(Window {
        ops: members,
        failing,
        start,
        end,
        start_values: start_values(ops, initial, start),
    })
}

/// The history as of time `cut`: operations invoked by then; those that
/// returned later become open.
fn prefix(ops: &[SearchOp], cut: Duration) -> Vec<SearchOp> {
    ops.iter()
        .map(|op| SearchOp {
            ret: op.ret.filter(|r| *r <= cut),
            ..*op
        })
        .map(|op| {
            if op.call <= cut {
                op
            } else {
                // Invoked after the cut: an operation that may never happen.
                SearchOp {
                    call: Duration::MAX,
                    ret: None,
                    ..op
                }
            }
        })
        .collect()
}

/// The window of `prefix_ops` starting at `start`, and the indexes it keeps:
/// operations that returned before `start` are dropped, those running
/// across it become optional.
fn window_at(prefix_ops: &[SearchOp], start: Duration) -> (Vec<SearchOp>, Vec<usize>) {
    let mut window = Vec::new();
    let mut members = Vec::new();
    for (idx, op) in prefix_ops.iter().enumerate() {
        if op.call == Duration::MAX || op.ret.is_some_and(|r| r < start) {
            continue;
        }
        let optional = op.call < start;
        window.push(SearchOp {
            ret: if optional { None } else { op.ret },
            ..*op
        });
        members.push(idx);
    }
    (window, members)
}

/// The values the register may hold at `start`: its initial value, or one
/// written by an operation invoked before `start`.
fn start_values(ops: &[SearchOp], initial: u64, start: Duration) -> Vec<u64> {
    let mut values: BTreeSet<u64> = ops
        .iter()
        .filter(|o| o.call < start)
        .filter_map(|o| match o.step {
            super::search::Step::Write(v) => Some(v),
            super::search::Step::Cas { new, .. } => Some(new),
            _ => None,
        })
        .collect();
    values.insert(initial);
    values.into_iter().collect()
}

/// The first index in `0..len` where the monotone `pred` holds.
fn first_true(len: usize, mut pred: impl FnMut(usize) -> bool) -> Option<usize> {
    let (mut lo, mut hi) = (0, len);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    (lo < len).then_some(lo)
}
