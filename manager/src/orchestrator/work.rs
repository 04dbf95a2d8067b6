//! [`ServiceWork`]: one service's tasks, grouped by slot, as this pass is
//! about to leave them. Decisions read it and change it (create a task, move
//! a desired state, delete a task); at the end it turns into store actions,
//! grouped by slot so that a slot's changes always land in one proposal.
//!
//! **Invariants:** stored tasks are borrowed until changed; desired states
//! only move forward; a task is never both created and deleted in the
//! output; indices into a slot stay valid for the whole pass (nothing is
//! removed from a slot's list, only marked).

use std::borrow::Cow;
use std::collections::HashMap;

use rswarm_proto::object::Kind;
use rswarm_proto::{ActionKind, Service, StoreAction, Task, TaskState};

use super::task::{created_ms, is_runnable, observed, task_id};
use crate::manager::action;
use crate::store::StoreState;

/// Where a task sits in its service: a replica number, or a node for a
/// global service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SlotKey {
    /// Slot of a replicated service (1-based).
    Replica(u64),
    /// The node of a global service's task.
    Node(String),
}

impl SlotKey {
    /// The key of a task of a global (`global`) or replicated service.
    pub fn of(task: &Task, global: bool) -> SlotKey {
        if global {
            SlotKey::Node(task.node_id.clone())
        } else {
            SlotKey::Replica(task.slot)
        }
    }
}

/// What this pass does with a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// In the store, untouched.
    Stored,
    /// In the store, updated by this pass.
    Changed,
    /// New in this pass.
    Created,
    /// New in this pass, then dropped again (never written).
    Dropped,
    /// In the store, deleted by this pass.
    Deleted,
}

/// One task in the work model.
#[derive(Debug)]
struct WorkTask<'a> {
    task: Cow<'a, Task>,
    origin: Origin,
}

impl WorkTask<'_> {
    fn is_live(&self) -> bool {
        !matches!(self.origin, Origin::Dropped | Origin::Deleted)
    }
}

/// Store actions of one pass over one service.
#[derive(Debug, Default)]
pub struct Changes {
    /// Task actions, one group per slot; a group is never split.
    pub slot_groups: Vec<Vec<StoreAction>>,
    /// The service write, if any; proposed after the slot groups.
    pub service: Option<StoreAction>,
}

impl Changes {
    /// Number of actions.
    pub fn len(&self) -> usize {
        self.slot_groups.iter().map(Vec::len).sum::<usize>() + usize::from(self.service.is_some())
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A slot's position in the work of one pass (stable for the pass).
pub type SlotId = usize;

/// One slot: its key and its tasks.
#[derive(Debug)]
struct Slot<'a> {
    key: SlotKey,
    tasks: Vec<WorkTask<'a>>,
}

/// One service's tasks for one pass. See the module doc.
#[derive(Debug)]
pub struct ServiceWork<'a> {
    /// Slots in key order, then slots made by this pass in creation order.
    slots: Vec<Slot<'a>>,
    /// How many of `slots` came from the store (sorted by key).
    stored_slots: usize,
    /// Slots made by this pass, by key.
    new_slots: HashMap<SlotKey, SlotId>,
    service: Option<Cow<'a, Service>>,
    service_changed: bool,
    actions: usize,
    budget: usize,
}

impl<'a> ServiceWork<'a> {
    /// The tasks of `service_id` in `state`, grouped by slot; `budget` caps
    /// the number of actions this pass may plan for the service.
    pub fn new(state: &'a StoreState, service_id: &str, budget: usize) -> Self {
        let service = state.service(service_id);
        let global = service.is_some_and(super::task::is_global);
        let mut tasks: Vec<(SlotKey, &'a Task)> = state
            .tasks_of_service(service_id)
            .map(|t| (SlotKey::of(t, global), t))
            .collect();
        tasks.sort_by(|a, b| a.0.cmp(&b.0));
        let mut slots: Vec<Slot<'a>> = Vec::new();
        for (key, task) in tasks {
            let work = WorkTask {
                task: Cow::Borrowed(task),
                origin: Origin::Stored,
            };
            match slots.last_mut() {
                Some(last) if last.key == key => last.tasks.push(work),
                _ => slots.push(Slot {
                    key,
                    tasks: vec![work],
                }),
            }
        }
        Self {
            stored_slots: slots.len(),
            slots,
            new_slots: HashMap::new(),
            service: service.map(Cow::Borrowed),
            service_changed: false,
            actions: 0,
            budget,
        }
    }

    /// The service as this pass leaves it (`None`: it was deleted).
    pub fn service(&self) -> Option<&Service> {
        self.service.as_deref()
    }

    /// The service, to change it (written once, after the slots).
    pub fn service_mut(&mut self) -> Option<&mut Service> {
        if !self.service_changed && self.service.is_some() {
            self.service_changed = true;
            self.actions += 1;
        }
        self.service.as_mut().map(Cow::to_mut)
    }

    /// Whether the pass may still plan more actions for this service.
    pub fn has_budget(&self) -> bool {
        self.actions < self.budget
    }

    /// Actions planned so far.
    pub fn actions(&self) -> usize {
        self.actions
    }

    /// Every slot, including those made so far in this pass.
    pub fn slot_ids(&self) -> std::ops::Range<SlotId> {
        0..self.slots.len()
    }

    /// The key of a slot.
    pub fn key(&self, slot: SlotId) -> &SlotKey {
        &self.slots[slot].key
    }

    /// The slot with this key, if the service has one.
    pub fn find(&self, key: &SlotKey) -> Option<SlotId> {
        self.slots[..self.stored_slots]
            .binary_search_by(|s| s.key.cmp(key))
            .ok()
            .or_else(|| self.new_slots.get(key).copied())
    }

    /// Whether the service has tasks in the slot with this key.
    pub fn has_slot(&self, key: &SlotKey) -> bool {
        self.find(key).is_some()
    }

    fn slot_tasks(&self, slot: SlotId) -> &[WorkTask<'a>] {
        self.slots.get(slot).map_or(&[], |s| s.tasks.as_slice())
    }

    /// The live tasks of a slot with their indices.
    pub fn tasks(&self, slot: SlotId) -> impl Iterator<Item = (usize, &Task)> + '_ {
        self.slot_tasks(slot)
            .iter()
            .enumerate()
            .filter(|(_, w)| w.is_live())
            .map(|(i, w)| (i, w.task.as_ref()))
    }

    /// The runnable tasks of a slot.
    pub fn runnable(&self, slot: SlotId) -> impl Iterator<Item = (usize, &Task)> + '_ {
        self.tasks(slot).filter(|(_, t)| is_runnable(t))
    }

    /// Whether the slot has a runnable task.
    pub fn is_occupied(&self, slot: SlotId) -> bool {
        self.runnable(slot).next().is_some()
    }

    /// Whether the task at `index` was made by this pass.
    pub fn is_new(&self, slot: SlotId, index: usize) -> bool {
        self.slot_tasks(slot)
            .get(index)
            .is_some_and(|w| w.origin == Origin::Created)
    }

    /// The newest runnable task of the slot.
    pub fn newest_runnable(&self, slot: SlotId) -> Option<(usize, &Task)> {
        self.runnable(slot)
            .max_by_key(|(i, t)| self.age_rank(slot, *i, t))
    }

    /// The newest live task of the slot, runnable or not.
    pub fn newest(&self, slot: SlotId) -> Option<(usize, &Task)> {
        self.tasks(slot)
            .max_by_key(|(i, t)| self.age_rank(slot, *i, t))
    }

    /// Orders a slot's tasks oldest to newest: made by this pass, then by
    /// spec version, creation time and ID (two tasks of one slot are rarely
    /// made in the same millisecond, and then the later spec wins).
    fn age_rank<'t>(
        &self,
        slot: SlotId,
        index: usize,
        task: &'t Task,
    ) -> (bool, u64, i64, &'t str) {
        (
            self.is_new(slot, index),
            task.spec_version,
            created_ms(task),
            task_id(task),
        )
    }

    /// Whether the slot is on its way to a new task: it has more than one
    /// runnable task (a start-first replacement), or its one runnable task
    /// has not started running yet (placed, pulling, held back).
    pub fn is_in_progress(&self, slot: SlotId) -> bool {
        let mut runnable = self.runnable(slot);
        match (runnable.next(), runnable.next()) {
            (Some(_), Some(_)) => true,
            (Some((_, t)), None) => observed(t) < TaskState::Running,
            _ => false,
        }
    }

    /// The task at a position (live or not).
    pub fn task(&self, slot: SlotId, index: usize) -> Option<&Task> {
        self.slot_tasks(slot).get(index).map(|w| w.task.as_ref())
    }

    /// Adds a new task to the slot with this key (made if new); refused
    /// (false) when the budget is spent.
    pub fn create(&mut self, key: SlotKey, task: Task) -> bool {
        if !self.has_budget() {
            return false;
        }
        self.actions += 1;
        let slot = match self.find(&key) {
            Some(slot) => slot,
            None => {
                self.slots.push(Slot {
                    key: key.clone(),
                    tasks: Vec::new(),
                });
                self.new_slots.insert(key, self.slots.len() - 1);
                self.slots.len() - 1
            }
        };
        self.slots[slot].tasks.push(WorkTask {
            task: Cow::Owned(task),
            origin: Origin::Created,
        });
        true
    }

    fn work_task_mut(&mut self, slot: SlotId, index: usize) -> Option<&mut WorkTask<'a>> {
        self.slots
            .get_mut(slot)
            .and_then(|s| s.tasks.get_mut(index))
    }

    /// Moves a task's desired state forward (never back); false when the
    /// budget is spent or the state would not move forward.
    pub fn set_desired(&mut self, slot: SlotId, index: usize, desired: TaskState) -> bool {
        let has_budget = self.has_budget();
        let Some(work) = self.work_task_mut(slot, index) else {
            return false;
        };
        if !work.is_live() || work.task.desired_state() >= desired {
            return false;
        }
        let counts = work.origin == Origin::Stored;
        if counts && !has_budget {
            return false;
        }
        work.task.to_mut().set_desired_state(desired);
        if counts {
            work.origin = Origin::Changed;
            self.actions += 1;
        }
        true
    }

    /// Deletes a task (a task made by this pass is simply not written).
    pub fn delete(&mut self, slot: SlotId, index: usize) -> bool {
        let has_budget = self.has_budget();
        let Some(work) = self.work_task_mut(slot, index) else {
            return false;
        };
        match work.origin {
            Origin::Created => {
                work.origin = Origin::Dropped;
                self.actions -= 1;
            }
            Origin::Changed => work.origin = Origin::Deleted,
            Origin::Stored if has_budget => {
                work.origin = Origin::Deleted;
                self.actions += 1;
            }
            Origin::Stored | Origin::Dropped | Origin::Deleted => return false,
        }
        true
    }

    /// The store actions, grouped by slot, and the service write.
    pub fn into_changes(self) -> Changes {
        let mut changes = Changes::default();
        for slot in self.slots {
            let group: Vec<StoreAction> = slot.tasks.into_iter().filter_map(to_action).collect();
            if !group.is_empty() {
                changes.slot_groups.push(group);
            }
        }
        if self.service_changed
            && let Some(service) = self.service
        {
            changes.service = Some(action(
                ActionKind::Update,
                Kind::Service(service.into_owned()),
            ));
        }
        changes
    }
}

fn to_action(work: WorkTask<'_>) -> Option<StoreAction> {
    let kind = match work.origin {
        Origin::Stored | Origin::Dropped => return None,
        Origin::Changed => ActionKind::Update,
        Origin::Created => ActionKind::Create,
        Origin::Deleted => ActionKind::Delete,
    };
    Some(action(kind, Kind::Task(work.task.into_owned())))
}
