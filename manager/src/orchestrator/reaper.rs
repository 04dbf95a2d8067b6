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
use super::work::{ServiceWork, SlotKey};

/// Whether no agent runs the task any more, so deleting it loses nothing.
pub fn is_reapable(ctx: &Ctx<'_>, task: &Task) -> bool {
    has_ended(task) || !was_assigned(task) || fit(ctx.state, &task.node_id).is_lost()
}

/// Marks a deleted service's tasks REMOVE, deletes REMOVE tasks that
/// stopped, and trims each slot's history.
pub fn reap(ctx: &Ctx<'_>, work: &mut ServiceWork<'_>) {
    let service_gone = work.service().is_none();
    for key in work.keys() {
        if service_gone {
            remove_all(work, &key);
        }
        delete_removed(ctx, work, &key);
        trim_history(ctx, work, &key);
        if !work.has_budget() {
            return;
        }
    }
}

fn remove_all(work: &mut ServiceWork<'_>, key: &SlotKey) {
    let live: Vec<usize> = work.tasks(key).map(|(i, _)| i).collect();
    for index in live {
        work.set_desired(key, index, TaskState::Remove);
    }
}

fn delete_removed(ctx: &Ctx<'_>, work: &mut ServiceWork<'_>, key: &SlotKey) {
    let doomed: Vec<usize> = work
        .tasks(key)
        .filter(|(_, t)| t.desired_state() >= TaskState::Remove && is_reapable(ctx, t))
        .map(|(i, _)| i)
        .collect();
    for index in doomed {
        work.delete(key, index);
    }
}

/// Deletes the oldest stopped tasks of the slot beyond the history limit
/// (all of them for a global slot whose node is gone).
fn trim_history(ctx: &Ctx<'_>, work: &mut ServiceWork<'_>, key: &SlotKey) {
    let node_gone = matches!(key, SlotKey::Node(id) if ctx.state.node(id).is_none());
    let limit = if node_gone { 0 } else { ctx.history_limit };
    let keep_newest = !node_gone && !work.is_occupied(key);
    let newest = work.newest(key).map(|(i, _)| i);
    let mut old: Vec<(i64, String, usize, bool)> = work
        .tasks(key)
        .filter(|(_, t)| !is_runnable(t) && t.desired_state() < TaskState::Remove)
        .map(|(i, t)| (created_ms(t), task_id(t).to_owned(), i, is_reapable(ctx, t)))
        .collect();
    if old.len() <= limit {
        return;
    }
    old.sort();
    let mut excess = old.len() - limit;
    for (_, _, index, reapable) in old {
        if excess == 0 {
            break;
        }
        if !reapable || (keep_newest && Some(index) == newest) {
            continue;
        }
        if work.delete(key, index) {
            excess -= 1;
        }
    }
}
