//! Acknowledged writes lost: a check simpler than linearizability and
//! independent of its search, so it answers even when the search gives up.
//!
//! Every compare-and-set names the value it replaces, and every write
//! writes a value of its own, so the values a register held form a chain
//! from the last value read back to the initial value. An acknowledged write
//! must be on that chain: either it is the final value, or a later
//! compare-and-set saw it and replaced it. A write that is not on it was
//! acknowledged and then vanished.
//!
//! A blind write ends the chain (it names no predecessor); every write
//! that could have taken effect before it (invoked before it completed; any
//! write at all if its own outcome is unknown) counts as overwritten by it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::history::{Op, Operation, Value, show_value};

/// What the chain was built from.
enum Predecessor {
    /// A compare-and-set replaced this value.
    Value(Value),
    /// A blind write that completed at this time (`None`: its outcome is
    /// unknown, so it may have taken effect at any time).
    Blind(Option<Duration>),
}

/// The indexes (into `ops`) of acknowledged writes on one register that
/// are neither its final value nor replaced by a later compare-and-set; or
/// why the check could not run.
pub(crate) fn lost_writes(
    ops: &[(usize, &Operation)],
    initial: Value,
) -> Result<Vec<usize>, String> {
    let acknowledged: Vec<(usize, &Operation)> = ops
        .iter()
        .copied()
        .filter(|(_, o)| o.op.written().is_some() && o.outcome.is_ok())
        .collect();
    if acknowledged.is_empty() {
        return Ok(Vec::new());
    }
    let final_value = final_read(ops, &acknowledged)?;
    let predecessors = predecessors(ops);
    let (chain, blind_cut) = chain(final_value, initial, &predecessors)?;
    Ok(acknowledged
        .iter()
        .filter(|(_, o)| {
            let value = o.op.written().unwrap_or(initial);
            let overwritten_blindly = match blind_cut {
                Some(Some(blind_complete)) => o.invoke < blind_complete,
                Some(None) => true,
                None => false,
            };
            !chain.contains(&value) && !overwritten_blindly
        })
        .map(|(idx, _)| *idx)
        .collect())
}

/// The value of the last successful read invoked after every acknowledged
/// write completed.
fn final_read(
    ops: &[(usize, &Operation)],
    acknowledged: &[(usize, &Operation)],
) -> Result<Value, String> {
    let last_ack = acknowledged
        .iter()
        .map(|(_, o)| o.complete)
        .max()
        .unwrap_or_default();
    ops.iter()
        .filter(|(_, o)| o.op == Op::Read && o.invoke >= last_ack)
        .filter_map(|(_, o)| match o.outcome {
            super::history::Outcome::Ok { read: Some(v) } => Some((o.invoke, v)),
            _ => None,
        })
        .max()
        .map(|(_, v)| v)
        .ok_or_else(|| "no successful read after the last acknowledged write".to_string())
}

/// For each value written by a write that may have happened (acknowledged
/// or unknown), what it replaced.
fn predecessors(ops: &[(usize, &Operation)]) -> BTreeMap<Value, Predecessor> {
    let mut out = BTreeMap::new();
    for (_, o) in ops {
        if !(o.outcome.is_ok() || o.outcome.is_info()) {
            continue;
        }
        match o.op {
            Op::Cas { expected, new } => {
                out.entry(new).or_insert(Predecessor::Value(expected));
            }
            Op::Write { value } => {
                let complete = (!o.outcome.is_info()).then_some(o.complete);
                out.entry(value).or_insert(Predecessor::Blind(complete));
            }
            Op::Read => {}
        }
    }
    out
}

/// The values from `final_value` back to `initial`, or back to a blind
/// write (then also `Some` of its completion time).
fn chain(
    final_value: Value,
    initial: Value,
    predecessors: &BTreeMap<Value, Predecessor>,
) -> Result<(BTreeSet<Value>, Option<Option<Duration>>), String> {
    let mut chain = BTreeSet::new();
    let mut value = final_value;
    // Each step adds a new value, so the walk ends within one step per write.
    for _ in 0..=predecessors.len() {
        if !chain.insert(value) {
            return Err(format!("the values form a cycle at {}", show_value(value)));
        }
        if value == initial {
            return Ok((chain, None));
        }
        match predecessors.get(&value) {
            Some(Predecessor::Value(previous)) => value = *previous,
            Some(Predecessor::Blind(complete)) => return Ok((chain, Some(*complete))),
            None => {
                return Err(format!(
                    "the register holds {}, which no write wrote",
                    show_value(value)
                ));
            }
        }
    }
    Err("the chain of values is longer than the number of writes".to_string())
}
