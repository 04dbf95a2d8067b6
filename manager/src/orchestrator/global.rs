//! The global orchestrator: one runnable task of the service on every node
//! that takes it (not Down, active, placement constraints satisfied). It
//! follows nodes as they join, drain, fail, return, change labels or leave.
//!
//! **Invariants:** a global task's slot is 0 and its node is preset; a node
//! that may not keep the service (Down, drained, removed, constraints no
//! longer met) keeps no runnable task of it, and no replacement is made
//! elsewhere; a paused node keeps its task but gets no new one.

use rswarm_proto::TaskState;

use super::nodes::{global_keeps, global_takes};
use super::reconcile::{Ctx, ServiceMemory};
use super::restart::is_held_empty;
use super::task::{new_task, service_id};
use super::work::{ServiceWork, SlotKey};

/// Shuts down the service's runnable tasks on nodes that may not keep it.
pub fn shut_down_on_unfit_nodes(ctx: &Ctx<'_>, work: &mut ServiceWork<'_>) {
    let Some(service) = work.service().cloned() else {
        return;
    };
    for slot in work.slot_ids() {
        let SlotKey::Node(node_id) = work.key(slot) else {
            continue;
        };
        let keeps = ctx
            .state
            .node(node_id)
            .is_some_and(|n| global_keeps(n, &service));
        if keeps {
            continue;
        }
        let runnable: Vec<usize> = work.runnable(slot).map(|(i, _)| i).collect();
        for index in runnable {
            work.set_desired(slot, index, TaskState::Shutdown);
        }
    }
}

/// Starts a task on every node that takes the service and has none (unless
/// the restart policy holds that node's slot empty).
pub fn fill_nodes(ctx: &Ctx<'_>, work: &mut ServiceWork<'_>, mem: &ServiceMemory) {
    let Some(service) = work.service().cloned() else {
        return;
    };
    for node in ctx.state.nodes() {
        if !global_takes(node, &service) {
            continue;
        }
        let node_id = node.meta.as_ref().map_or("", |m| m.id.as_str());
        let key = SlotKey::Node(node_id.to_owned());
        if let Some(slot) = work.find(&key)
            && (work.is_occupied(slot) || is_held_empty(work, mem, slot))
        {
            continue;
        }
        let task = new_task(&service, 0, node_id, TaskState::Running, ctx.now_ms);
        if !work.create(key, task) {
            tracing::debug!(service = service_id(&service), "pass budget spent");
            return;
        }
    }
}
