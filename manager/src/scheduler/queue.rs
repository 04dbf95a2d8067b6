//! Which pending tasks the leader loop should try to place, kept from the
//! store's watch events so that a pass never scans every task.
//!
//! A pending task is either *fresh* (try it in the next pass) or *parked*
//! (it could not be placed; try again once capacity may have changed: a node
//! changed, or a task stopped holding a node's resources). Parking is what
//! keeps a cluster with unplaceable tasks quiet: the scheduler's own writes
//! (an assignment, an error message) never make work for it.
//!
//! **Invariant:** a task ID is in at most one of the two sets, and every
//! pending task seen by a rescan or an event since is in one of them until
//! an event shows it is no longer pending.

use std::collections::BTreeSet;

use rswarm_proto::{ActionKind, StoreEvent, object::Kind};

use super::nodeinfo::{is_active, is_pending};
use crate::store::StoreState;

/// See the module doc.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PendingQueue {
    fresh: BTreeSet<String>,
    parked: BTreeSet<String>,
}

impl PendingQueue {
    /// Every pending task of the store, fresh: the start of a term, or the
    /// recovery from a watch that fell behind.
    pub fn rescan(state: &StoreState) -> PendingQueue {
        let fresh = state
            .tasks()
            .filter(|t| is_pending(t))
            .filter_map(|t| t.meta.as_ref().map(|m| m.id.clone()))
            .collect();
        PendingQueue {
            fresh,
            parked: BTreeSet::new(),
        }
    }

    /// Follows one store change.
    pub fn observe(&mut self, event: &StoreEvent) {
        let Some(kind) = event.object.as_ref().and_then(|o| o.kind.as_ref()) else {
            return;
        };
        match kind {
            Kind::Node(_) => self.unpark_all(),
            Kind::Task(task) => {
                let Some(id) = task.meta.as_ref().map(|m| m.id.as_str()) else {
                    return;
                };
                let deleted = event.kind == ActionKind::Delete as i32;
                if !deleted && is_pending(task) {
                    if !self.parked.contains(id) {
                        self.fresh.insert(id.to_owned());
                    }
                    return;
                }
                self.fresh.remove(id);
                self.parked.remove(id);
                // A deleted active task, or a placed one that stopped being
                // active, gave its node's resources back.
                let freed = if deleted {
                    is_active(task)
                } else {
                    !task.node_id.is_empty() && !is_active(task)
                };
                if freed {
                    self.unpark_all();
                }
            }
            _ => {}
        }
    }

    /// Makes every parked task fresh: capacity may have changed.
    pub fn unpark_all(&mut self) {
        if self.fresh.is_empty() {
            std::mem::swap(&mut self.fresh, &mut self.parked);
        } else {
            self.fresh.append(&mut self.parked);
        }
    }

    /// Whether a pass has work.
    pub fn has_fresh(&self) -> bool {
        !self.fresh.is_empty()
    }

    /// The fresh tasks, for a pass; they leave the queue.
    pub fn take_fresh(&mut self) -> BTreeSet<String> {
        std::mem::take(&mut self.fresh)
    }

    /// A task the pass could not place: wait for a capacity change.
    pub fn park(&mut self, id: String) {
        self.fresh.remove(&id);
        self.parked.insert(id);
    }

    /// A task whose write did not happen: try it in the next pass.
    pub fn retry(&mut self, id: String) {
        self.parked.remove(&id);
        self.fresh.insert(id);
    }

    /// How many tasks wait to be placed, fresh or parked.
    pub fn len(&self) -> usize {
        self.fresh.len() + self.parked.len()
    }
}

#[cfg(test)]
mod tests {
    use rswarm_proto::*;

    use super::*;

    fn task(id: &str, state: TaskState, desired: TaskState, node: &str) -> Task {
        Task {
            meta: Some(Meta {
                id: id.into(),
                ..Default::default()
            }),
            node_id: node.into(),
            desired_state: desired as i32,
            status: Some(TaskStatus {
                state: state as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn event(kind: ActionKind, object: Kind) -> StoreEvent {
        StoreEvent {
            version: 1,
            kind: kind as i32,
            object: Some(Object { kind: Some(object) }),
        }
    }

    fn update(t: Task) -> StoreEvent {
        event(ActionKind::Update, Kind::Task(t))
    }

    #[test]
    fn new_pending_tasks_are_fresh_and_placed_ones_leave() {
        let mut q = PendingQueue::default();
        q.observe(&update(task(
            "a",
            TaskState::Pending,
            TaskState::Running,
            "",
        )));
        assert_eq!(q.take_fresh(), BTreeSet::from(["a".to_owned()]));
        q.observe(&update(task(
            "a",
            TaskState::Pending,
            TaskState::Running,
            "",
        )));
        q.observe(&update(task(
            "a",
            TaskState::Assigned,
            TaskState::Running,
            "n",
        )));
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn the_schedulers_own_writes_make_no_work() {
        let mut q = PendingQueue::default();
        q.park("a".into());
        // Its error was written: still pending, still parked.
        q.observe(&update(task(
            "a",
            TaskState::Pending,
            TaskState::Running,
            "",
        )));
        assert!(!q.has_fresh());
        // Another task was assigned: active, frees nothing.
        q.observe(&update(task(
            "b",
            TaskState::Assigned,
            TaskState::Running,
            "n",
        )));
        assert!(!q.has_fresh());
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn capacity_changes_unpark() {
        let mut q = PendingQueue::default();
        q.park("a".into());
        q.observe(&update(task(
            "b",
            TaskState::Complete,
            TaskState::Running,
            "n",
        )));
        assert_eq!(q.take_fresh(), BTreeSet::from(["a".to_owned()]));

        q.park("a".into());
        q.observe(&event(
            ActionKind::Delete,
            Kind::Task(task("b", TaskState::Running, TaskState::Running, "n")),
        ));
        assert!(q.has_fresh(), "a deleted running task freed its node");

        q.park("a".into());
        q.observe(&event(ActionKind::Update, Kind::Node(Node::default())));
        assert!(q.has_fresh(), "a node changed");
    }

    #[test]
    fn a_deleted_pending_task_leaves_without_unparking() {
        let mut q = PendingQueue::default();
        q.park("a".into());
        q.retry("b".into());
        q.observe(&event(
            ActionKind::Delete,
            Kind::Task(task("b", TaskState::Pending, TaskState::Running, "")),
        ));
        assert!(!q.has_fresh());
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn rescan_finds_every_pending_task() {
        let mut state = StoreState::new();
        let actions = [
            task("a", TaskState::Pending, TaskState::Running, ""),
            task("b", TaskState::Running, TaskState::Running, "n"),
            task("c", TaskState::Pending, TaskState::Ready, ""),
            task("d", TaskState::Pending, TaskState::Shutdown, ""),
        ]
        .into_iter()
        .map(|t| crate::manager::action(ActionKind::Create, Kind::Task(t)))
        .collect();
        state
            .apply(
                1,
                &Proposal {
                    actions,
                    timestamp_ms: 0,
                },
            )
            .unwrap();
        let mut q = PendingQueue::rescan(&state);
        assert_eq!(
            q.take_fresh(),
            BTreeSet::from(["a".to_owned(), "c".to_owned()])
        );
    }
}
