//! The task reaper: deletes tasks nobody needs any more. A task with desired
//! REMOVE (scaled away, or its service deleted) goes once it has stopped;
//! of the old tasks of a slot (per node for a global service), only the
//! newest `task_history_limit` stay (the cluster setting, 5 by default; 0
//! keeps none). A deleted service's tasks are all marked REMOVE first.
//!
//! **Invariants:** a task is deleted only once no agent runs it: it ended,
//! was never assigned, or its node is Down or gone. The newest task of an
//! empty slot is kept whatever the limit: it is what `service ps` shows for
//! a slot the restart policy left empty, and what keeps it empty.

use rswarm_proto::{Task, TaskState};

use super::nodes::fit;
use super::reconcile::Ctx;
use super::task::{created_ms, has_ended, is_runnable, task_id, was_assigned};
use super::work::{ServiceWork, SlotId, SlotKey};

/// Whether no agent runs the task any more, so deleting it loses nothing.
pub fn is_reapable(ctx: &Ctx<'_>, task: &Task) -> bool {
    has_ended(task) || !was_assigned(task) || fit(ctx.state, &task.node_id).is_lost()
}

/// Marks a deleted service's tasks REMOVE, deletes REMOVE tasks that
/// stopped, and trims each slot's history.
pub fn reap(ctx: &Ctx<'_>, work: &mut ServiceWork<'_>) {
    let service_gone = work.service().is_none();
    for slot in work.slot_ids() {
        if service_gone {
            remove_all(work, slot);
        }
        delete_removed(ctx, work, slot);
        trim_history(ctx, work, slot);
        if !work.has_budget() {
            return;
        }
    }
}

fn remove_all(work: &mut ServiceWork<'_>, slot: SlotId) {
    let live: Vec<usize> = work.tasks(slot).map(|(i, _)| i).collect();
    for index in live {
        work.set_desired(slot, index, TaskState::Remove);
    }
}

fn delete_removed(ctx: &Ctx<'_>, work: &mut ServiceWork<'_>, slot: SlotId) {
    let doomed: Vec<usize> = work
        .tasks(slot)
        .filter(|(_, t)| t.desired_state() >= TaskState::Remove && is_reapable(ctx, t))
        .map(|(i, _)| i)
        .collect();
    for index in doomed {
        work.delete(slot, index);
    }
}

/// Deletes the oldest stopped tasks of the slot beyond the history limit
/// (all of them for a global slot whose node is gone).
fn trim_history(ctx: &Ctx<'_>, work: &mut ServiceWork<'_>, slot: SlotId) {
    let node_gone = matches!(work.key(slot), SlotKey::Node(id) if ctx.state.node(id).is_none());
    let limit = if node_gone { 0 } else { ctx.history_limit };
    let is_old = |t: &Task| !is_runnable(t) && t.desired_state() < TaskState::Remove;
    // The common case, cheaply: nothing beyond the limit.
    if work.tasks(slot).filter(|(_, t)| is_old(t)).count() <= limit {
        return;
    }
    let keep_newest = !node_gone && !work.is_occupied(slot);
    let newest = work.newest(slot).map(|(i, _)| i);
    let mut old: Vec<(i64, String, usize, bool)> = work
        .tasks(slot)
        .filter(|(_, t)| is_old(t))
        .map(|(i, t)| (created_ms(t), task_id(t).to_owned(), i, is_reapable(ctx, t)))
        .collect();
    old.sort();
    let mut excess = old.len() - limit;
    for (_, _, index, reapable) in old {
        if excess == 0 {
            break;
        }
        if !reapable || (keep_newest && Some(index) == newest) {
            continue;
        }
        if work.delete(slot, index) {
            excess -= 1;
        }
    }
}
