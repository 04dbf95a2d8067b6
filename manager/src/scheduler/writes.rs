//! Decisions turned into store writes: an assignment moves the task to
//! ASSIGNED on its node; an unplaceable task gets its error, only when the
//! error changed (so a cluster that cannot place a task is not rewritten on
//! every pass). Writes are cut into proposals of bounded count and size.
//!
//! **Invariant:** every update is the task as read (same `meta.version`)
//! with only `node_id` and `status` changed, so a task that changed since
//! the read fails the proposal with a conflict instead of being overwritten.

use std::collections::HashMap;

use prost::Message;
use rswarm_proto::{ActionKind, StoreAction, Task, TaskState, TaskStatus, object::Kind};

use super::limits::{PROPOSAL_BYTES_MAX, TASKS_PER_PROPOSAL_MAX};
use super::placement::Decision;
use crate::manager::action;

/// The status message of a task the scheduler placed.
pub const ASSIGNED_MESSAGE: &str = "scheduler assigned task to node";

/// One task's update, ready to propose.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskWrite {
    /// The task.
    pub task_id: String,
    /// The update action.
    pub action: StoreAction,
}

/// The writes the decisions need, assignments first (they start work; an
/// error message can wait). `pending` are the tasks as read.
pub fn task_writes(pending: &[Task], decisions: &[Decision], now_ms: i64) -> Vec<TaskWrite> {
    let by_id: HashMap<&str, &Task> = pending
        .iter()
        .filter_map(|t| t.meta.as_ref().map(|m| (m.id.as_str(), t)))
        .collect();
    let mut assignments = Vec::new();
    let mut errors = Vec::new();
    for decision in decisions {
        let Some(task) = by_id.get(decision.task_id()) else {
            continue;
        };
        match decision {
            Decision::Assign { task_id, node_id } => assignments.push(TaskWrite {
                task_id: task_id.clone(),
                action: update(assigned(task, node_id, now_ms)),
            }),
            Decision::Unplaceable { task_id, reason } => {
                if let Some(task) = with_error(task, reason) {
                    errors.push(TaskWrite {
                        task_id: task_id.clone(),
                        action: update(task),
                    });
                }
            }
        }
    }
    assignments.extend(errors);
    assignments
}

fn update(task: Task) -> StoreAction {
    action(ActionKind::Update, Kind::Task(task))
}

/// The task placed on `node_id`, as of `now_ms`.
fn assigned(task: &Task, node_id: &str, now_ms: i64) -> Task {
    let mut task = task.clone();
    task.node_id = node_id.to_owned();
    let previous = task.status.take().unwrap_or_default();
    task.status = Some(TaskStatus {
        state: TaskState::Assigned as i32,
        message: ASSIGNED_MESSAGE.to_owned(),
        err: String::new(),
        timestamp_ms: now_ms,
        ..previous
    });
    task
}

/// The task with `reason` as its error, or `None` when it already says so.
/// The state and its timestamp stay: the task is still pending since then.
fn with_error(task: &Task, reason: &str) -> Option<Task> {
    if task.status.as_ref().is_some_and(|s| s.err == reason) {
        return None;
    }
    let mut task = task.clone();
    task.status.get_or_insert_with(TaskStatus::default).err = reason.to_owned();
    Some(task)
}

/// Cuts writes into proposals of at most [`TASKS_PER_PROPOSAL_MAX`] tasks
/// and [`PROPOSAL_BYTES_MAX`] bytes, in order.
pub fn into_batches(writes: Vec<TaskWrite>) -> Vec<Vec<TaskWrite>> {
    let mut batches = Vec::new();
    let mut batch: Vec<TaskWrite> = Vec::new();
    let mut bytes = 0;
    for write in writes {
        // Field tag and length prefix of the repeated action.
        let size = write.action.encoded_len() + 8;
        if !batch.is_empty()
            && (batch.len() >= TASKS_PER_PROPOSAL_MAX || bytes + size > PROPOSAL_BYTES_MAX)
        {
            batches.push(std::mem::take(&mut batch));
            bytes = 0;
        }
        bytes += size;
        batch.push(write);
    }
    if !batch.is_empty() {
        batches.push(batch);
    }
    batches
}

#[cfg(test)]
mod tests {
    use rswarm_proto::*;

    use super::*;

    fn pending(id: &str, err: &str) -> Task {
        Task {
            meta: Some(Meta {
                id: id.into(),
                version: 7,
                ..Default::default()
            }),
            desired_state: TaskState::Running as i32,
            status: Some(TaskStatus {
                state: TaskState::Pending as i32,
                message: "pending task scheduling".into(),
                err: err.into(),
                timestamp_ms: 5,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn written_task(w: &TaskWrite) -> &Task {
        match w.action.object.as_ref().and_then(|o| o.kind.as_ref()) {
            Some(Kind::Task(t)) => t,
            other => panic!("not a task: {other:?}"),
        }
    }

    #[test]
    fn an_assignment_sets_node_and_state_and_keeps_the_version() {
        let tasks = [pending("a", "no suitable node (x)")];
        let decisions = [Decision::Assign {
            task_id: "a".into(),
            node_id: "n1".into(),
        }];
        let writes = task_writes(&tasks, &decisions, 42);
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].action.kind, ActionKind::Update as i32);
        let t = written_task(&writes[0]);
        assert_eq!(t.node_id, "n1");
        assert_eq!(t.meta.as_ref().unwrap().version, 7);
        let status = t.status.as_ref().unwrap();
        assert_eq!(status.state, TaskState::Assigned as i32);
        assert_eq!(status.message, ASSIGNED_MESSAGE);
        assert_eq!(status.err, "");
        assert_eq!(status.timestamp_ms, 42);
    }

    #[test]
    fn an_error_is_written_only_when_it_changed() {
        let tasks = [pending("a", ""), pending("b", "no suitable node (y)")];
        let decisions = [
            Decision::Unplaceable {
                task_id: "a".into(),
                reason: "no suitable node (y)".into(),
            },
            Decision::Unplaceable {
                task_id: "b".into(),
                reason: "no suitable node (y)".into(),
            },
        ];
        let writes = task_writes(&tasks, &decisions, 42);
        assert_eq!(writes.len(), 1, "b already says so");
        let t = written_task(&writes[0]);
        let status = t.status.as_ref().unwrap();
        assert_eq!(status.err, "no suitable node (y)");
        assert_eq!(status.state, TaskState::Pending as i32);
        assert_eq!(status.timestamp_ms, 5, "still pending since then");
    }

    #[test]
    fn assignments_come_first() {
        let tasks = [pending("a", ""), pending("b", "")];
        let decisions = [
            Decision::Unplaceable {
                task_id: "a".into(),
                reason: "r".into(),
            },
            Decision::Assign {
                task_id: "b".into(),
                node_id: "n".into(),
            },
        ];
        let ids: Vec<_> = task_writes(&tasks, &decisions, 0)
            .into_iter()
            .map(|w| w.task_id)
            .collect();
        assert_eq!(ids, ["b", "a"]);
    }

    #[test]
    fn batches_respect_count_and_size() {
        let tasks: Vec<Task> = (0..2_500).map(|i| pending(&format!("t{i}"), "")).collect();
        let decisions: Vec<Decision> = tasks
            .iter()
            .map(|t| Decision::Assign {
                task_id: t.meta.as_ref().unwrap().id.clone(),
                node_id: "n".into(),
            })
            .collect();
        let batches = into_batches(task_writes(&tasks, &decisions, 0));
        let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
        assert_eq!(sizes, [1_000, 1_000, 500]);

        // Big tasks (600 KiB of env each) are cut by size first.
        let mut big = pending("big", "");
        big.spec = Some(TaskSpec {
            container: Some(ContainerSpec {
                env: vec!["X".repeat(600 * 1024)],
                ..Default::default()
            }),
            ..Default::default()
        });
        let writes: Vec<TaskWrite> = (0..12)
            .map(|_| TaskWrite {
                task_id: "big".into(),
                action: update(big.clone()),
            })
            .collect();
        let batches = into_batches(writes);
        for batch in &batches {
            let proposal = Proposal {
                actions: batch.iter().map(|w| w.action.clone()).collect(),
                timestamp_ms: i64::MAX,
            };
            assert!(proposal.encoded_len() <= crate::store::limits::PROPOSAL_SIZE_MAX);
        }
        assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), 12);
        assert!(batches.len() >= 3);
    }
}
