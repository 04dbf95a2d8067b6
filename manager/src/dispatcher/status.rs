//! `Dispatcher.UpdateTaskStatus`: the status agents observe, written to the
//! store in batches.
//!
//! A call is checked against the store (every task it names must be the
//! caller's), then queued ([`StatusQueue`], bounded: a full queue makes calls
//! wait). One loop per manager ([`commit_loop`]) takes everything queued —
//! waiting up to `STATUS_FLUSH_DELAY` for more, or less when the batch is
//! full — and commits it in few proposals. A call returns once its updates
//! are committed, so an agent that got OK knows they are durable.
//!
//! Decisions:
//! - A task that no longer exists is skipped (debug log): it was deleted
//!   while the agent still reported it, which is normal.
//! - A task of **another** node fails the whole call with PermissionDenied
//!   and nothing of it is applied: tasks never move between nodes, so this is
//!   an agent bug or a forged report, never a race, and it must be visible.
//!
//! Invariants: only `status` is written, never `desired_state`; a status
//! only moves forward ([`merge_status`]); a batch is planned from the store
//! as a whole, once, and a proposal that meets a conflict is re-planned
//! from a fresh read as a whole, never task by task.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use prost::Message;
use rswarm_proto::object::Kind;
use rswarm_proto::{
    ActionKind, Proposal, Task, TaskState, TaskStatus, TaskStatusUpdate, UpdateTaskStatusRequest,
    UpdateTaskStatusResponse,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::{debug, warn};

use crate::limits::{
    CONFLICT_RETRIES_MAX, STATUS_BATCH_UPDATES_MAX, STATUS_FLUSH_DELAY, STATUS_LEASE_RETRY_PERIOD,
    STATUS_LEASE_WAIT_MAX, STATUS_PROPOSAL_BYTES_MAX, STATUS_PROPOSAL_TASKS_MAX, STATUS_QUEUE_MAX,
    STATUS_TEXT_BYTES_MAX, STATUS_UPDATES_PER_CALL_MAX,
};
use crate::manager::{ManagerContext, action, now_ms};
use crate::raft::node::RaftNodeError;
use crate::store::{StoreError, StoreState};

/// One call's checked updates, waiting for their Raft write.
#[derive(Debug)]
pub struct StatusRequest {
    node_id: String,
    updates: Vec<TaskStatusUpdate>,
    queued_at: Instant,
    done: oneshot::Sender<Result<(), Status>>,
}

/// The calls waiting for their batch, shared by the RPC and [`commit_loop`].
pub struct StatusQueue {
    tx: mpsc::Sender<StatusRequest>,
    /// Taken once by the commit loop.
    rx: Mutex<Option<mpsc::Receiver<StatusRequest>>>,
}

impl Default for StatusQueue {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(STATUS_QUEUE_MAX);
        Self {
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }
}

impl StatusQueue {
    fn take_receiver(&self) -> Option<mpsc::Receiver<StatusRequest>> {
        self.rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

// ---------------------------------------------------------------------------
// Rules (pure).

/// Whether an agent may report `state`: the states past ASSIGNED it reaches
/// itself. PENDING/ASSIGNED belong to managers, REMOVE is a desired state
/// only and ORPHANED is the dispatcher's.
fn agent_may_report(state: i32) -> bool {
    (TaskState::Accepted as i32..=TaskState::Rejected as i32).contains(&state)
}

/// The status after applying `update` to `current`, or `None` when nothing
/// changes. A higher state replaces the status (empty exit code, pid and
/// timestamp are carried over or filled); the same state only fills a
/// missing exit code or pid, or changes the health (with the output of the
/// probe that changed it; the timestamp stays the state's); a lower state
/// is ignored.
pub fn merge_status(
    current: Option<&TaskStatus>,
    update: &TaskStatus,
    now_ms: i64,
) -> Option<TaskStatus> {
    let empty = TaskStatus::default();
    let current = current.unwrap_or(&empty);
    if update.state > current.state {
        let mut next = update.clone();
        if next.exit_code.is_none() {
            next.exit_code = current.exit_code;
        }
        if next.pid == 0 && next.state <= TaskState::Running as i32 {
            next.pid = current.pid;
        }
        if next.timestamp_ms == 0 {
            next.timestamp_ms = now_ms;
        }
        return Some(next);
    }
    if update.state < current.state {
        return None;
    }
    let mut next = current.clone();
    if next.exit_code.is_none() && update.exit_code.is_some() {
        next.exit_code = update.exit_code;
    }
    if next.pid == 0 && update.pid != 0 {
        next.pid = update.pid;
    }
    if update.health != current.health && update.state == TaskState::Running as i32 {
        next.health = update.health;
        next.health_output.clone_from(&update.health_output);
    }
    (next != *current).then_some(next)
}

/// `text` cut to at most `STATUS_TEXT_BYTES_MAX` bytes on a char boundary.
fn clip(text: &mut String) {
    if text.len() <= STATUS_TEXT_BYTES_MAX {
        return;
    }
    let mut end = STATUS_TEXT_BYTES_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
}

/// The updates of `node_id`'s call that apply to the store: unknown tasks
/// are skipped; a task of another node or a state the agent may not report
/// refuses the whole call. Texts are clipped.
pub fn check_updates(
    s: &StoreState,
    node_id: &str,
    updates: Vec<TaskStatusUpdate>,
) -> Result<Vec<TaskStatusUpdate>, Status> {
    let mut kept = Vec::with_capacity(updates.len());
    for mut update in updates {
        let Some(status) = update.status.as_mut() else {
            return Err(Status::invalid_argument(format!(
                "the update of task {} has no status",
                update.task_id
            )));
        };
        if !agent_may_report(status.state) {
            return Err(Status::invalid_argument(format!(
                "task {}: a node may not report state {} (only accepted..rejected)",
                update.task_id, status.state
            )));
        }
        clip(&mut status.message);
        clip(&mut status.err);
        clip(&mut status.health_output);
        let Some(task) = s.task(&update.task_id) else {
            debug!(task = %update.task_id, "status of a task that no longer exists: skipped");
            continue;
        };
        if task.node_id != node_id {
            return Err(Status::permission_denied(format!(
                "task {} is not assigned to node {node_id}: a node reports only its own tasks",
                update.task_id
            )));
        }
        kept.push(update);
    }
    Ok(kept)
}

/// The tasks `batch` changes in `s`, with the versions read (several updates
/// of one task fold into one write); only the tasks in `only` when given.
pub fn plan(
    s: &StoreState,
    batch: &[(&str, &[TaskStatusUpdate])],
    only: Option<&HashSet<String>>,
    now_ms: i64,
) -> Vec<Task> {
    let mut changed: BTreeMap<&str, Task> = BTreeMap::new();
    for (node_id, updates) in batch {
        for update in *updates {
            let Some(status) = update.status.as_ref() else {
                continue;
            };
            let id = update.task_id.as_str();
            if only.is_some_and(|only| !only.contains(id)) {
                continue;
            }
            let Some(current) = changed.get(id).or_else(|| s.task(id)) else {
                continue;
            };
            if current.node_id != *node_id {
                continue;
            }
            if let Some(next) = merge_status(current.status.as_ref(), status, now_ms) {
                let mut task = current.clone();
                task.status = Some(next);
                changed.insert(id, task);
            }
        }
    }
    changed.into_values().collect()
}

/// `tasks` cut into proposals of at most `STATUS_PROPOSAL_TASKS_MAX` tasks
/// and `STATUS_PROPOSAL_BYTES_MAX` bytes (a task alone always fits).
fn chunks(tasks: Vec<Task>) -> Vec<Vec<Task>> {
    let mut chunks = Vec::new();
    let mut current: Vec<Task> = Vec::new();
    let mut bytes = 0;
    for task in tasks {
        let size = task.encoded_len();
        let full = current.len() >= STATUS_PROPOSAL_TASKS_MAX
            || (!current.is_empty() && bytes + size > STATUS_PROPOSAL_BYTES_MAX);
        if full {
            chunks.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += size;
        current.push(task);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

// ---------------------------------------------------------------------------
// The call.

/// Serves one `UpdateTaskStatus` call of `node_id` (on the leader): checks
/// it, queues it and returns once it is committed.
pub async fn update_task_status(
    ctx: Arc<ManagerContext>,
    node_id: String,
    req: UpdateTaskStatusRequest,
) -> Result<UpdateTaskStatusResponse, Status> {
    if req.updates.len() > STATUS_UPDATES_PER_CALL_MAX {
        return Err(Status::invalid_argument(format!(
            "{} status updates in one call: send at most {STATUS_UPDATES_PER_CALL_MAX}",
            req.updates.len()
        )));
    }
    let updates = ctx
        .store
        .read(|s| check_updates(s, &node_id, req.updates))?;
    if updates.is_empty() {
        return Ok(UpdateTaskStatusResponse {});
    }
    let (done, committed) = oneshot::channel();
    let request = StatusRequest {
        node_id,
        updates,
        queued_at: Instant::now(),
        done,
    };
    let stopped = || Status::unavailable("the manager is stopping: retry on another");
    ctx.dispatcher
        .status
        .tx
        .send(request)
        .await
        .map_err(|_| stopped())?;
    committed.await.map_err(|_| stopped())??;
    Ok(UpdateTaskStatusResponse {})
}

// ---------------------------------------------------------------------------
// The commit loop.

/// Commits queued status updates in batches; runs on every manager (only
/// the leader's queue fills).
pub async fn commit_loop(ctx: Arc<ManagerContext>, cancel: CancellationToken) {
    let Some(mut rx) = ctx.dispatcher.status.take_receiver() else {
        warn!("the status commit loop runs already");
        return;
    };
    loop {
        let batch = tokio::select! {
            _ = cancel.cancelled() => return,
            batch = collect(&mut rx) => batch,
        };
        let Some(batch) = batch else { return };
        let result = commit(&ctx, &batch).await;
        if let Err(e) = &result {
            debug!(calls = batch.len(), "status batch failed: {}", e.message());
        }
        for request in batch {
            // The caller may have given up (timeout): nothing to tell.
            let _ = request.done.send(result.clone());
        }
    }
}

/// The next batch: everything queued, waiting until `STATUS_FLUSH_DELAY`
/// after the oldest call was queued unless the batch fills first.
async fn collect(rx: &mut mpsc::Receiver<StatusRequest>) -> Option<Vec<StatusRequest>> {
    let first = rx.recv().await?;
    let deadline = first.queued_at + STATUS_FLUSH_DELAY;
    let mut n_updates = first.updates.len();
    let mut batch = vec![first];
    while n_updates < STATUS_BATCH_UPDATES_MAX {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(request)) => {
                n_updates += request.updates.len();
                batch.push(request);
            }
            Ok(None) | Err(_) => break,
        }
    }
    Some(batch)
}

/// Writes `batch`: planned once from the store, then one proposal per chunk.
async fn commit(ctx: &ManagerContext, batch: &[StatusRequest]) -> Result<(), Status> {
    let views: Vec<(&str, &[TaskStatusUpdate])> = batch
        .iter()
        .map(|r| (r.node_id.as_str(), r.updates.as_slice()))
        .collect();
    let tasks = ctx.store.read(|s| plan(s, &views, None, now_ms()));
    for chunk in chunks(tasks) {
        commit_chunk(ctx, &views, chunk).await?;
    }
    Ok(())
}

/// Proposes one chunk; after a conflict, re-plans just its tasks from a
/// fresh read. A write refused because the leader's lease lapsed (its
/// followers acknowledged nothing lately, e.g. busy with a burst of large
/// entries) is retried for a while: the lease usually comes back within a
/// heartbeat or two, and failing would make every node send again.
async fn commit_chunk(
    ctx: &ManagerContext,
    views: &[(&str, &[TaskStatusUpdate])],
    mut chunk: Vec<Task>,
) -> Result<(), Status> {
    let ids: HashSet<String> = chunk
        .iter()
        .filter_map(|t| t.meta.as_ref().map(|m| m.id.clone()))
        .collect();
    let lease_deadline = Instant::now() + STATUS_LEASE_WAIT_MAX;
    let mut conflicts = 0;
    while !chunk.is_empty() {
        let proposal = Proposal {
            actions: chunk
                .into_iter()
                .map(|t| action(ActionKind::Update, Kind::Task(t)))
                .collect(),
            timestamp_ms: now_ms(),
        };
        match ctx.raft.propose(proposal).await {
            Ok(_) => return Ok(()),
            Err(RaftNodeError::Rejected(StoreError::Conflict { .. })) => {
                conflicts += 1;
                if conflicts >= CONFLICT_RETRIES_MAX {
                    return Err(Status::aborted(
                        "task status kept conflicting with other changes: retry",
                    ));
                }
            }
            Err(RaftNodeError::NotLeader { leader_addr: None })
                if ctx.raft.is_leader() && Instant::now() < lease_deadline =>
            {
                tokio::time::sleep(STATUS_LEASE_RETRY_PERIOD).await;
            }
            Err(e) => return Err(ctx.status_from_raft(e).await),
        }
        chunk = ctx.store.read(|s| plan(s, views, Some(&ids), now_ms()));
    }
    Ok(())
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
