//! The worker: runs the tasks the dispatcher assigns to this node.
//!
//! It owns one [`TaskController`] per assigned task, the record of its
//! assignments on disk ([`book`]), the `Assignments` stream and the status
//! reporter ([`crate::assignments`]), the secrets, configs and registry
//! credentials delivered with the tasks, in memory only ([`inputs`]), and
//! the agent's gRPC API that managers read task logs through ([`logs`]).
//!
//! Invariants:
//! - A task runs here only while it is in the node's assignment set; a
//!   COMPLETE set replaces everything known, so a task missing from it is
//!   stopped and forgotten (its state, cgroups and logs removed).
//! - Every status a controller observes is written to disk before it is
//!   reported, so a restarted daemon resumes from what it last said.
//! - Stopping the worker leaves the tasks running under their shims;
//!   only [`Worker::remove_all`] (leaving the cluster) stops them.

pub mod book;
pub mod inputs;
pub mod logs;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use rswarm_pki::CredentialsHandle;
use rswarm_proto::{AssignmentsMessage, AssignmentsType, Task, TaskState, TaskStatusUpdate};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::assignments::{AssignmentsClient, ManagerLink, StatusReporter};
use crate::controller::{ControllerHandle, TaskController};
use crate::limits::{ASSIGNMENTS_QUEUE_MAX, STATUS_UPDATES_QUEUE_MAX};
use crate::runtime::Drivers;
use crate::session::AgentStatus;
use book::{TaskBook, TaskRecord};
use inputs::DeliveredInputs;

/// What the worker needs to start.
pub struct WorkerConfig {
    /// Where the worker keeps its records.
    pub state_dir: PathBuf,
    /// This node's credentials (for the dispatcher).
    pub creds: CredentialsHandle,
    /// The session's view of the managers.
    pub session: watch::Receiver<AgentStatus>,
    /// The runtimes this node offers.
    pub drivers: Drivers,
}

/// A running worker; see the module doc.
pub struct Worker {
    shared: Arc<Shared>,
    cluster_id: String,
    assignments: AssignmentsClient,
    reporter: StatusReporter,
    cancel: CancellationToken,
    loops: TaskTracker,
}

/// What the worker's loop and its log service share.
struct Shared {
    drivers: Drivers,
    book: TaskBook,
    /// The tasks assigned here, by ID (the task as last assigned).
    tasks: std::sync::Mutex<HashMap<String, Task>>,
}

impl Shared {
    fn assigned(&self, task_id: &str) -> Option<Task> {
        self.tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(task_id)
            .cloned()
    }

    fn set_assigned(&self, task_id: &str, task: Option<Task>) {
        let mut tasks = self
            .tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match task {
            Some(t) => tasks.insert(task_id.to_owned(), t),
            None => tasks.remove(task_id),
        };
    }
}

impl Worker {
    /// Resumes the tasks recorded on disk, then follows the dispatcher.
    pub fn start(config: WorkerConfig) -> std::io::Result<Worker> {
        let book = TaskBook::open(&config.state_dir)?;
        let cluster_id = config.creds.subject().cluster_id.clone();
        let records = book.load();
        let shared = Arc::new(Shared {
            drivers: config.drivers,
            book,
            tasks: std::sync::Mutex::new(HashMap::new()),
        });
        let link = ManagerLink::new(config.creds, config.session);
        let reporter = StatusReporter::start(link.clone());
        let (assign_tx, assign_rx) = mpsc::channel(ASSIGNMENTS_QUEUE_MAX);
        let assignments = AssignmentsClient::start(link, assign_tx);
        let cancel = CancellationToken::new();
        let loops = TaskTracker::new();
        let state = WorkerLoop::new(shared.clone(), reporter.clone(), loops.clone());
        info!(tasks = records.len(), "worker starting");
        loops.spawn(
            state
                .run(records, assign_rx, cancel.clone())
                .instrument(info_span!("worker")),
        );
        Ok(Worker {
            shared,
            cluster_id,
            assignments,
            reporter,
            cancel,
            loops,
        })
    }

    /// The agent API managers call on this node (task logs).
    pub fn service(&self) -> logs::AgentService {
        logs::AgentService::new(self.shared.clone(), self.cluster_id.clone())
    }

    /// Stops following the dispatcher; the tasks keep running under their
    /// shims and are resumed by the next start.
    pub async fn stop(&self) {
        self.assignments.stop().await;
        self.cancel.cancel();
        self.loops.close();
        self.loops.wait().await;
        self.reporter.stop().await;
    }

    /// Stops every task and forgets it: the node leaves the cluster.
    pub async fn remove_all(&self) {
        self.assignments.stop().await;
        self.cancel.cancel();
        self.loops.close();
        self.loops.wait().await;
        self.reporter.stop().await;
        for (id, record) in self.shared.book.load() {
            if let Ok(runtime) = self.shared.drivers.for_task(&record.task)
                && let Err(e) = runtime.remove(&id).await
            {
                warn!(task = %id, "cannot remove task: {e}");
            }
            if let Err(e) = self.shared.book.remove(&id) {
                warn!(task = %id, "cannot forget task: {e}");
            }
        }
    }
}

/// The worker's loop state: controllers by task ID.
struct WorkerLoop {
    shared: Arc<Shared>,
    reporter: StatusReporter,
    controllers: HashMap<String, ControllerHandle>,
    /// Last observed status per task, as recorded.
    records: HashMap<String, TaskRecord>,
    updates_tx: mpsc::Sender<TaskStatusUpdate>,
    updates_rx: Option<mpsc::Receiver<TaskStatusUpdate>>,
    /// Removals in flight (a stop can take the grace period).
    removals: TaskTracker,
    /// Secrets, configs and credentials the managers delivered.
    delivered: DeliveredInputs,
    /// Tasks whose controller waits for a secret or config.
    waiting: std::collections::HashSet<String>,
}

impl WorkerLoop {
    fn new(shared: Arc<Shared>, reporter: StatusReporter, removals: TaskTracker) -> Self {
        let (updates_tx, updates_rx) = mpsc::channel(STATUS_UPDATES_QUEUE_MAX);
        Self {
            shared,
            reporter,
            controllers: HashMap::new(),
            records: HashMap::new(),
            updates_tx,
            updates_rx: Some(updates_rx),
            removals,
            delivered: DeliveredInputs::default(),
            waiting: std::collections::HashSet::new(),
        }
    }

    async fn run(
        mut self,
        records: std::collections::BTreeMap<String, TaskRecord>,
        mut assignments: mpsc::Receiver<AssignmentsMessage>,
        cancel: CancellationToken,
    ) {
        let Some(mut updates) = self.updates_rx.take() else {
            return;
        };
        self.resume(records).await;
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                Some(message) = assignments.recv() => self.apply(message),
                Some(update) = updates.recv() => self.observed(update).await,
            }
        }
        // Leave the tasks to their shims; the next daemon resumes them.
        for (_, handle) in self.controllers.drain() {
            handle.shutdown().await;
        }
    }

    /// Picks up the tasks of a previous daemon before any manager answers,
    /// and reports their last statuses again (the reporter may have lost
    /// unacknowledged ones when the daemon stopped).
    async fn resume(&mut self, records: std::collections::BTreeMap<String, TaskRecord>) {
        let mut again = Vec::new();
        for (id, record) in records {
            again.push(TaskStatusUpdate {
                task_id: id.clone(),
                status: Some(record.status.clone()),
            });
            self.shared.set_assigned(&id, Some(record.task.clone()));
            if let Some(handle) = self.controller_for(&record.task, Some(record.status.clone())) {
                self.controllers.insert(id.clone(), handle);
            }
            self.records.insert(id, record);
        }
        debug!(tasks = again.len(), "resumed tasks");
        self.reporter.report_all(again).await;
    }

    /// Starts a controller, or reports the task REJECTED when this node
    /// cannot run it.
    fn controller_for(
        &mut self,
        task: &Task,
        last: Option<rswarm_proto::TaskStatus>,
    ) -> Option<ControllerHandle> {
        let runtime = match self.shared.drivers.for_task(task) {
            Ok(runtime) => runtime,
            Err(e) => {
                let id = task.meta.as_ref().map_or("", |m| m.id.as_str());
                let update = crate::controller::rejection(id, &e);
                let tx = self.updates_tx.clone();
                tokio::spawn(async move {
                    let _ = tx.send(update).await;
                });
                return None;
            }
        };
        let updates = self.updates_tx.clone();
        let inputs = self.delivered.for_task(task);
        if inputs.is_err()
            && let Some(meta) = task.meta.as_ref()
        {
            self.waiting.insert(meta.id.clone());
        }
        Some(match last {
            Some(status) => {
                TaskController::resume_with_inputs(task.clone(), inputs, status, runtime, updates)
            }
            None => TaskController::spawn_with_inputs(task.clone(), inputs, runtime, updates),
        })
    }

    fn apply(&mut self, mut message: AssignmentsMessage) {
        self.delivered.apply(&mut message);
        let complete = message.r#type == AssignmentsType::Complete as i32;
        if complete {
            let listed: std::collections::HashSet<&str> = message
                .tasks
                .iter()
                .filter_map(|t| t.meta.as_ref().map(|m| m.id.as_str()))
                .collect();
            let gone: Vec<String> = self
                .records
                .keys()
                .filter(|id| !listed.contains(id.as_str()))
                .cloned()
                .collect();
            for id in gone {
                self.forget(&id);
            }
        }
        for id in &message.removed_task_ids {
            self.forget(id);
        }
        for task in message.tasks {
            self.assign(task);
        }
        self.hand_over_arrived_inputs();
    }

    /// Gives the controllers waiting for secrets or configs what arrived.
    fn hand_over_arrived_inputs(&mut self) {
        let waiting: Vec<String> = self.waiting.iter().cloned().collect();
        for id in waiting {
            let (Some(handle), Some(record)) = (self.controllers.get(&id), self.records.get(&id))
            else {
                self.waiting.remove(&id);
                continue;
            };
            if let Ok(inputs) = self.delivered.for_task(&record.task) {
                handle.set_inputs(Ok(inputs));
                self.waiting.remove(&id);
            }
        }
    }

    /// A task assigned here, new or changed.
    fn assign(&mut self, task: Task) {
        let Some(id) = task.meta.as_ref().map(|m| m.id.clone()) else {
            return;
        };
        self.shared.set_assigned(&id, Some(task.clone()));
        if let Some(handle) = self.controllers.get(&id) {
            let inputs = self.delivered.for_task(&task);
            if inputs.is_err() {
                self.waiting.insert(id.clone());
            }
            handle.set_inputs(inputs);
            handle.update(task.clone());
            if let Some(record) = self.records.get_mut(&id) {
                record.task = task;
                save(&self.shared.book, record);
            }
            return;
        }
        // A task that ended before we knew it (history kept by the
        // managers) needs no controller; one known from disk does.
        let status = task.status.clone().unwrap_or_default();
        let known = self.records.get(&id).map(|r| r.status.clone());
        if known.is_none() && status.state > TaskState::Running as i32 {
            return;
        }
        let record = TaskRecord {
            task: task.clone(),
            status: known.clone().unwrap_or(status),
        };
        save(&self.shared.book, &record);
        self.records.insert(id.clone(), record);
        if let Some(handle) = self.controller_for(&task, known) {
            self.controllers.insert(id, handle);
        }
    }

    /// A task no longer assigned here: stop it and remove what it left.
    fn forget(&mut self, task_id: &str) {
        self.shared.set_assigned(task_id, None);
        self.delivered.forget_task(task_id);
        self.waiting.remove(task_id);
        let record = self.records.remove(task_id);
        if let Err(e) = self.shared.book.remove(task_id) {
            warn!(task = %task_id, "cannot forget task: {e}");
        }
        match self.controllers.remove(task_id) {
            Some(handle) => {
                self.removals.spawn(handle.remove());
            }
            None => {
                // No controller (it ended before this daemon knew it, or its
                // driver is missing): its runtime may still hold its logs.
                let Some(record) = record else { return };
                let Ok(runtime) = self.shared.drivers.for_task(&record.task) else {
                    return;
                };
                let id = task_id.to_owned();
                self.removals.spawn(async move {
                    if let Err(e) = runtime.remove(&id).await {
                        warn!(task = %id, "cannot remove task: {e}");
                    }
                });
            }
        }
    }

    /// A controller observed a new status: record it, then report it.
    async fn observed(&mut self, update: TaskStatusUpdate) {
        let Some(status) = update.status.clone() else {
            return;
        };
        if let Some(record) = self.records.get_mut(&update.task_id) {
            record.status = status.clone();
            save(&self.shared.book, record);
        }
        self.reporter.report(update.task_id, status).await;
    }
}

fn save(book: &TaskBook, record: &TaskRecord) {
    if let Err(e) = book.save(record) {
        let id = record.task.meta.as_ref().map_or("", |m| m.id.as_str());
        warn!(task = %id, "cannot record task state on disk: {e}");
    }
}
