//! The replicated orchestrator: a replicated service has `replicas` slots,
//! each with one runnable task. It fills missing slots, removes extra ones,
//! and replaces tasks whose node is Down, drained or removed.
//!
//! **Invariants:** a slot has at most one runnable task except while an
//! update or a move replaces it start-first; new slots take the lowest free
//! numbers; scaling down removes (desired REMOVE) the slots whose loss hurts
//! least: non-running first, then those on the nodes with the most tasks of
//! the service, then the highest slot numbers.

use std::collections::{HashMap, HashSet};

use rswarm_proto::{Task, TaskState};

use super::nodes::fit;
use super::reconcile::{Ctx, ServiceMemory};
use super::restart::is_held_empty;
use super::task::{is_running, new_task, replicas};
use super::work::{ServiceWork, SlotId, SlotKey};

/// Shuts down runnable tasks on nodes that may not keep them (Down,
/// drained, removed) and puts a new task in each slot so emptied.
pub fn replace_on_lost_nodes(ctx: &Ctx<'_>, work: &mut ServiceWork<'_>) {
    let Some(service) = work.service().cloned() else {
        return;
    };
    for slot in work.slot_ids() {
        let SlotKey::Replica(number) = *work.key(slot) else {
            continue;
        };
        let lost: Vec<usize> = work
            .runnable(slot)
            .filter(|(_, t)| !fit(ctx.state, &t.node_id).keeps_tasks())
            .map(|(i, _)| i)
            .collect();
        if lost.is_empty() || !work.has_budget() {
            continue;
        }
        for index in lost {
            work.set_desired(slot, index, TaskState::Shutdown);
        }
        if !work.is_occupied(slot) {
            let task = new_task(&service, number, "", TaskState::Running, ctx.now_ms);
            work.create(SlotKey::Replica(number), task);
        }
    }
}

/// Adds or removes slots until the service has `replicas` of them. A slot
/// held empty by its restart policy counts as present.
pub fn scale(ctx: &Ctx<'_>, work: &mut ServiceWork<'_>, mem: &ServiceMemory) {
    let Some(service) = work.service().cloned() else {
        return;
    };
    let wanted = replicas(&service) as usize;
    let mut occupied: Vec<SlotId> = Vec::new();
    let mut held: Vec<SlotId> = Vec::new();
    for slot in work.slot_ids() {
        if work.is_occupied(slot) {
            occupied.push(slot);
        } else if is_held_empty(work, mem, slot) {
            held.push(slot);
        }
    }
    let present = occupied.len() + held.len();
    if present < wanted {
        let taken: HashSet<u64> = occupied
            .iter()
            .chain(&held)
            .filter_map(|s| match work.key(*s) {
                SlotKey::Replica(n) => Some(*n),
                SlotKey::Node(_) => None,
            })
            .collect();
        for number in free_slots(|n| taken.contains(&n), wanted - present) {
            let task = new_task(&service, number, "", TaskState::Running, ctx.now_ms);
            if !work.create(SlotKey::Replica(number), task) {
                return;
            }
        }
    } else if present > wanted {
        let doomed = slots_to_remove(work, &occupied, &held, present - wanted);
        for slot in doomed {
            remove_slot(work, slot);
        }
    }
}

/// The `count` lowest slot numbers (from 1) not taken.
pub fn free_slots(taken: impl Fn(u64) -> bool, count: usize) -> Vec<u64> {
    (1..).filter(|n| !taken(*n)).take(count).collect()
}

/// What makes a slot cheap to remove, most removable first when sorted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RemovalRank {
    /// Running slots go last.
    pub running: bool,
    /// Slots on busier nodes go first.
    pub node_load: std::cmp::Reverse<usize>,
    /// Higher slots go first.
    pub slot: std::cmp::Reverse<u64>,
}

/// The `count` slots to remove: held-empty ones first (highest first), then
/// occupied ones by [`RemovalRank`].
pub fn slots_to_remove(
    work: &ServiceWork<'_>,
    occupied: &[SlotId],
    held: &[SlotId],
    count: usize,
) -> Vec<SlotId> {
    let number = |slot: SlotId| match work.key(slot) {
        SlotKey::Replica(n) => *n,
        SlotKey::Node(_) => 0,
    };
    let mut held: Vec<SlotId> = held.to_vec();
    held.sort_by_key(|s| std::cmp::Reverse(number(*s)));
    let load = node_load(work, occupied);
    let mut ranked: Vec<(RemovalRank, SlotId)> = occupied
        .iter()
        .map(|slot| {
            let newest = work.newest_runnable(*slot).map(|(_, t)| t);
            let rank = RemovalRank {
                running: newest.is_some_and(is_running),
                node_load: std::cmp::Reverse(newest.map_or(0, |t| node_count(&load, t))),
                slot: std::cmp::Reverse(number(*slot)),
            };
            (rank, *slot)
        })
        .collect();
    ranked.sort();
    held.into_iter()
        .chain(ranked.into_iter().map(|(_, s)| s))
        .take(count)
        .collect()
}

/// Runnable tasks of the service per node.
fn node_load(work: &ServiceWork<'_>, occupied: &[SlotId]) -> HashMap<String, usize> {
    let mut load = HashMap::new();
    for slot in occupied {
        for (_, task) in work.runnable(*slot) {
            if !task.node_id.is_empty() {
                *load.entry(task.node_id.clone()).or_insert(0) += 1;
            }
        }
    }
    load
}

fn node_count(load: &HashMap<String, usize>, task: &Task) -> usize {
    load.get(&task.node_id).copied().unwrap_or(0)
}

/// Marks every task of the slot that is not already going away REMOVE.
fn remove_slot(work: &mut ServiceWork<'_>, slot: SlotId) {
    let live: Vec<usize> = work.tasks(slot).map(|(i, _)| i).collect();
    for index in live {
        work.set_desired(slot, index, TaskState::Remove);
    }
}
