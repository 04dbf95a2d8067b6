//! Task controllers: one per task assigned to this node, driving it from
//! ASSIGNED to its desired state with a `Runtime`, and reporting every new
//! observed state.
//!
//! A controller is one tokio task (no thread) holding the task, its last
//! reported status and a runtime handle: a few KB. What to do next is a pure
//! function of (observed state, desired state, removal asked) — `next_step`
//! — and the async shell only carries it out, so the state machine is
//! tested without processes.
//!
//! While a task runs, its health check (`health`) is probed alongside the
//! wait for its exit; a change of health is reported as a RUNNING status
//! with the new `health`, and an UNHEALTHY task is stopped and reported
//! FAILED, for the orchestrator to replace.
//!
//! Invariants: a reported state is always greater than the one before (the
//! store refuses backwards moves; the controller never tries), except that
//! a RUNNING task reports RUNNING again when its health changed; a task is
//! started at most once per controller; after a daemon restart
//! (`TaskController::resume`) a running task is re-attached, never started
//! again; a task whose desired state is READY is prepared and held there.
//! A task is prepared and started with the secrets and configs the worker
//! hands it (`Desired::inputs`); while one has not arrived the controller
//! waits, at most `TASK_INPUTS_WAIT_MAX`, then rejects the task naming it.
//! Owns no persistence: the worker stores assignments and statuses and
//! decides when to spawn, update, remove or shut controllers down.

pub mod health;

use std::sync::Arc;

use rswarm_proto::{ContainerHealth, Task, TaskState, TaskStatus, TaskStatusUpdate};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::limits::TASK_INPUTS_WAIT_MAX;
use crate::runtime::limits::{CONTROLLER_RETRIES_MAX, CONTROLLER_RETRY_DELAY};
use crate::runtime::{Attached, ExitStatus, Runtime, RuntimeError, StopRequest, TaskInputs};
use crate::worker::inputs::MissingInputs;
use health::{HealthMonitor, ProbeResult};

/// A task's secrets, configs and credentials, or what it still waits for.
pub type InputsState = Result<TaskInputs, MissingInputs>;

/// What the worker wants of a task: its latest version (desired state,
/// spec) and whether to remove it from the node.
#[derive(Debug, Clone)]
struct Desired {
    task: Task,
    remove: bool,
    inputs: InputsState,
}

/// The next thing a controller does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Report ACCEPTED.
    Accept,
    /// Check the task can run here (PREPARING → READY).
    Prepare,
    /// Start it (STARTING → RUNNING).
    Start,
    /// Wait for it to end, or for a new desired state.
    Watch,
    /// Stop it with its grace period (→ SHUTDOWN).
    Stop,
    /// Desired ≥ SHUTDOWN before it started: report SHUTDOWN.
    ShutdownUnstarted,
    /// Stop if needed, delete what it left, end the controller.
    Remove,
    /// Nothing to do until the desired state changes.
    Idle,
}

/// The state machine: what to do with a task observed in `observed` that
/// should be in `desired`.
pub fn next_step(observed: TaskState, desired: TaskState, remove: bool) -> Step {
    use TaskState as S;
    if remove {
        return Step::Remove;
    }
    if observed >= S::Complete {
        return Step::Idle;
    }
    if desired >= S::Shutdown {
        return if observed >= S::Starting {
            Step::Stop
        } else {
            Step::ShutdownUnstarted
        };
    }
    // A task is driven up to its desired state; below RUNNING it then
    // waits there (READY: held back by a restart delay or an update).
    if desired < S::Running && observed >= desired {
        return Step::Idle;
    }
    match observed {
        S::New | S::Pending | S::Assigned => Step::Accept,
        S::Accepted | S::Preparing => Step::Prepare,
        S::Ready | S::Starting if desired >= S::Running => Step::Start,
        S::Ready | S::Starting => Step::Idle,
        _ => Step::Watch,
    }
}

/// Handle on a running controller, owned by the worker. Dropping it cancels
/// the controller (the task itself is left as it is).
#[derive(Debug)]
pub struct ControllerHandle {
    task_id: String,
    desired: watch::Sender<Desired>,
    cancel: CancellationToken,
    join: Option<JoinHandle<()>>,
}

impl ControllerHandle {
    /// The task this controller drives.
    pub fn task_id(&self) -> &str {
        &self.task_id
    }

    /// A new version of the task (its desired state changed).
    pub fn update(&self, task: Task) {
        self.desired.send_modify(|desired| desired.task = task);
    }

    /// The task's inputs changed (a secret it waited for arrived).
    pub fn set_inputs(&self, inputs: InputsState) {
        self.desired.send_modify(|desired| desired.inputs = inputs);
    }

    /// Whether the controller has ended (after `remove`, or when the
    /// status channel closed).
    pub fn is_finished(&self) -> bool {
        self.join.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stops the task if it runs (with its grace period), deletes what it
    /// left on the node (state, cgroups, logs) and waits for the controller
    /// to end. For a task no longer assigned to this node.
    pub async fn remove(mut self) {
        self.desired.send_modify(|desired| desired.remove = true);
        self.join_controller().await;
    }

    /// Ends the controller and leaves the task as it is (it keeps running
    /// under its shim): for a daemon shutting down.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        self.join_controller().await;
    }

    async fn join_controller(&mut self) {
        if let Some(join) = self.join.take()
            && let Err(e) = join.await
            && e.is_panic()
        {
            tracing::error!(task = %self.task_id, "task controller panicked: {e}");
        }
    }
}

impl Drop for ControllerHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Builds controllers.
pub struct TaskController;

impl TaskController {
    /// Starts driving a newly assigned `task` (observed state as in
    /// `task.status`, normally ASSIGNED). Status changes go to `updates`.
    pub fn spawn(
        task: Task,
        runtime: Arc<dyn Runtime>,
        updates: mpsc::Sender<TaskStatusUpdate>,
    ) -> ControllerHandle {
        Self::spawn_with_inputs(task, Ok(TaskInputs::default()), runtime, updates)
    }

    /// [`Self::spawn`] for a task with secrets, configs or credentials.
    pub fn spawn_with_inputs(
        task: Task,
        inputs: InputsState,
        runtime: Arc<dyn Runtime>,
        updates: mpsc::Sender<TaskStatusUpdate>,
    ) -> ControllerHandle {
        let status = task.status.clone().unwrap_or_default();
        launch(task, inputs, status, runtime, updates, false)
    }

    /// Resumes a task this node drove before a daemon restart, from the
    /// last status it reported: re-attaches to it if it runs, reports its
    /// end if it ended meanwhile, carries on otherwise.
    pub fn resume(
        task: Task,
        last_status: TaskStatus,
        runtime: Arc<dyn Runtime>,
        updates: mpsc::Sender<TaskStatusUpdate>,
    ) -> ControllerHandle {
        Self::resume_with_inputs(
            task,
            Ok(TaskInputs::default()),
            last_status,
            runtime,
            updates,
        )
    }

    /// [`Self::resume`] for a task with secrets, configs or credentials.
    pub fn resume_with_inputs(
        task: Task,
        inputs: InputsState,
        last_status: TaskStatus,
        runtime: Arc<dyn Runtime>,
        updates: mpsc::Sender<TaskStatusUpdate>,
    ) -> ControllerHandle {
        launch(task, inputs, last_status, runtime, updates, true)
    }
}

/// The REJECTED status of a task no controller can drive on this node
/// (its driver is missing here, see `runtime::Drivers::for_task`).
pub fn rejection(task_id: &str, error: &RuntimeError) -> TaskStatusUpdate {
    TaskStatusUpdate {
        task_id: task_id.to_string(),
        status: Some(TaskStatus {
            state: TaskState::Rejected as i32,
            message: "rejected".to_string(),
            err: error.to_string(),
            timestamp_ms: now_ms(),
            ..TaskStatus::default()
        }),
    }
}

fn launch(
    task: Task,
    inputs: InputsState,
    status: TaskStatus,
    runtime: Arc<dyn Runtime>,
    updates: mpsc::Sender<TaskStatusUpdate>,
    attach_first: bool,
) -> ControllerHandle {
    let task_id = task.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default();
    let (desired_tx, desired_rx) = watch::channel(Desired {
        task,
        remove: false,
        inputs,
    });
    let cancel = CancellationToken::new();
    let controller = Controller {
        task_id: task_id.clone(),
        runtime,
        updates,
        desired: desired_rx,
        status,
        cancel: cancel.clone(),
        health: None,
        health_loaded: false,
    };
    let span = tracing::info_span!("task", id = %task_id);
    let join = tokio::spawn(controller.run(attach_first).instrument(span));
    ControllerHandle {
        task_id,
        desired: desired_tx,
        cancel,
        join: Some(join),
    }
}

/// A controller's loop ends: removed, or nobody listens for statuses any
/// more (cancellation drops the loop instead).
struct End;

/// The controller's state (owned by its tokio task).
struct Controller {
    task_id: String,
    runtime: Arc<dyn Runtime>,
    updates: mpsc::Sender<TaskStatusUpdate>,
    desired: watch::Receiver<Desired>,
    /// The last status reported.
    status: TaskStatus,
    cancel: CancellationToken,
    /// The running task's health check, if it has one.
    health: Option<HealthMonitor>,
    /// Whether the runtime was asked for the check already.
    health_loaded: bool,
}

impl Controller {
    async fn run(mut self, attach_first: bool) {
        let cancel = self.cancel.clone();
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = self.drive(attach_first) => {}
        }
    }

    async fn drive(&mut self, attach_first: bool) -> Result<(), End> {
        if attach_first && self.observed() < TaskState::Complete {
            self.reattach().await?;
        }
        loop {
            let (desired, remove) = {
                let desired = self.desired.borrow_and_update();
                (desired_state(&desired.task), desired.remove)
            };
            let step = next_step(self.observed(), desired, remove);
            tracing::trace!(?step, observed = ?self.observed(), ?desired, "controller step");
            match step {
                Step::Accept => self.report(TaskState::Accepted, "accepted", None).await?,
                Step::Prepare => self.prepare().await?,
                Step::Start => self.start().await?,
                Step::Watch => self.watch().await?,
                Step::Stop => self.stop().await?,
                Step::ShutdownUnstarted => {
                    self.report(TaskState::Shutdown, "shut down before it started", None)
                        .await?;
                }
                Step::Remove => {
                    self.remove().await;
                    return Err(End);
                }
                Step::Idle => self.desired.changed().await.map_err(|_| End)?,
            }
        }
    }

    fn observed(&self) -> TaskState {
        TaskState::try_from(self.status.state).unwrap_or(TaskState::New)
    }

    fn task(&self) -> Task {
        self.desired.borrow().task.clone()
    }

    /// After a daemon restart: what became of the task meanwhile.
    async fn reattach(&mut self) -> Result<(), End> {
        let observed = self.observed();
        match self.runtime.attach(&self.task_id).await {
            Ok(Attached::Running { pid }) if observed < TaskState::Running => {
                self.report_running(pid).await
            }
            Ok(Attached::Running { .. }) => Ok(()),
            Ok(Attached::Exited(exit)) => self.finish(exit).await,
            Ok(Attached::Unknown) if observed == TaskState::Running => {
                let err = "the task's process is gone: this node has no record of it".to_string();
                self.report_error(TaskState::Failed, err).await
            }
            Ok(Attached::Unknown) => Ok(()),
            Err(e) if is_transient(&e) => {
                tracing::warn!("cannot re-attach yet: {e}");
                Ok(())
            }
            Err(e) => self.fail(e).await,
        }
    }

    async fn prepare(&mut self) -> Result<(), End> {
        if self.observed() < TaskState::Preparing {
            self.report(TaskState::Preparing, "preparing", None).await?;
        }
        let Some(inputs) = self.inputs().await? else {
            return Ok(());
        };
        match self.runtime.prepare(&self.task(), &inputs).await {
            Ok(()) => self.report(TaskState::Ready, "prepared", None).await,
            Err(e) => self.fail(e).await,
        }
    }

    async fn start(&mut self) -> Result<(), End> {
        if self.observed() < TaskState::Starting {
            self.report(TaskState::Starting, "starting", None).await?;
        }
        let Some(inputs) = self.inputs().await? else {
            return Ok(());
        };
        match self.runtime.start(&self.task(), &inputs).await {
            Ok(started) => self.report_running(started.pid).await,
            Err(e) => self.fail(e).await,
        }
    }

    /// The task's inputs, once all have arrived. `None`: back to the loop,
    /// as the task is no longer wanted or was rejected after waiting
    /// `TASK_INPUTS_WAIT_MAX` for a missing secret or config.
    async fn inputs(&mut self) -> Result<Option<TaskInputs>, End> {
        let deadline = tokio::time::Instant::now() + TASK_INPUTS_WAIT_MAX;
        loop {
            let (inputs, unwanted) = {
                let desired = self.desired.borrow();
                let unwanted =
                    desired.remove || desired_state(&desired.task) >= TaskState::Shutdown;
                (desired.inputs.clone(), unwanted)
            };
            let missing = match inputs {
                Ok(inputs) => return Ok(Some(inputs)),
                Err(_) if unwanted => return Ok(None),
                Err(missing) => missing,
            };
            if tokio::time::Instant::now() >= deadline {
                self.report_error(TaskState::Rejected, missing.to_string())
                    .await?;
                return Ok(None);
            }
            tracing::debug!("waiting for {missing}");
            if let Ok(Err(_)) = tokio::time::timeout_at(deadline, self.desired.changed()).await {
                return Err(End);
            }
        }
    }

    /// Waits for the task's end or a change of what is desired, whichever
    /// comes first; retries a shim that does not answer, a bounded number
    /// of times.
    async fn watch(&mut self) -> Result<(), End> {
        if !self.health_loaded {
            let health = ContainerHealth::try_from(self.status.health).unwrap_or_default();
            self.load_health(health).await;
        }
        let mut failures = 0;
        loop {
            let runtime = Arc::clone(&self.runtime);
            let probe = self
                .health
                .as_ref()
                .map(|h| h.next_probe(Arc::clone(&runtime), self.task_id.clone()));
            let probed = async move {
                match probe {
                    Some(probe) => probe.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                probe = probed => {
                    if self.probed(probe).await? == ContainerHealth::Unhealthy {
                        return self.stop_unhealthy().await;
                    }
                }
                exit = runtime.wait(&self.task_id) => match exit {
                    Ok(exit) => return self.finish(exit).await,
                    Err(e) if is_transient(&e) && failures < CONTROLLER_RETRIES_MAX => {
                        failures += 1;
                        tracing::warn!(failures, "waiting for the task failed, retrying: {e}");
                        tokio::time::sleep(CONTROLLER_RETRY_DELAY).await;
                    }
                    Err(e) => return self.fail(e).await,
                },
                changed = self.desired.changed() => {
                    return changed.map_err(|_| End);
                }
            }
        }
    }

    /// Asks the runtime for the task's health check; `health` is the one
    /// last reported (a resumed task keeps its verdict).
    async fn load_health(&mut self, health: ContainerHealth) {
        self.health_loaded = true;
        let config = match self.runtime.healthcheck(&self.task()).await {
            Ok(config) => config,
            Err(e) => {
                tracing::warn!("cannot read the task's health check, running without: {e}");
                None
            }
        };
        let now = tokio::time::Instant::now();
        self.health = config.and_then(|c| HealthMonitor::new(&c, health, now));
    }

    /// Takes a probe's result; reports a change of health. Returns the
    /// health after it.
    async fn probed(&mut self, probe: ProbeResult) -> Result<ContainerHealth, End> {
        let Some(monitor) = self.health.as_mut() else {
            return Ok(ContainerHealth::None);
        };
        let now = tokio::time::Instant::now();
        let Some(health) = monitor.record(probe, now) else {
            return Ok(monitor.health());
        };
        let output = monitor.last_output().to_string();
        tracing::info!(?health, "task health changed");
        let status = TaskStatus {
            health: health as i32,
            health_output: output,
            ..self.status.clone()
        };
        self.send(status).await?;
        Ok(health)
    }

    /// The task turned unhealthy: stop it with its stop signal and grace,
    /// and report it FAILED with the last probe's output.
    async fn stop_unhealthy(&mut self) -> Result<(), End> {
        let output = self
            .health
            .as_ref()
            .map(|h| h.last_output().trim().to_string())
            .unwrap_or_default();
        let err = format!("unhealthy container: {output}");
        let stop = StopRequest::for_task(&self.task());
        match self.runtime.stop(&self.task_id, stop).await {
            Ok(exit) => {
                self.report_exit(TaskState::Failed, "unhealthy", Some(err), exit)
                    .await
            }
            Err(e) => self.fail(e).await,
        }
    }

    async fn stop(&mut self) -> Result<(), End> {
        let stop = StopRequest::for_task(&self.task());
        match self.runtime.stop(&self.task_id, stop).await {
            Ok(exit) => {
                self.report_exit(TaskState::Shutdown, "shutdown", None, exit)
                    .await
            }
            Err(e) => self.fail(e).await,
        }
    }

    async fn remove(&mut self) {
        if self.observed() < TaskState::Complete && self.observed() >= TaskState::Starting {
            let _ = self.stop().await;
        }
        for attempt in 1..=CONTROLLER_RETRIES_MAX {
            match self.runtime.remove(&self.task_id).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(attempt, "cannot remove the task: {e}");
                    tokio::time::sleep(CONTROLLER_RETRY_DELAY).await;
                }
            }
        }
        tracing::error!("giving up removing the task; its directory is left on the node");
    }

    /// The task ended: COMPLETE, FAILED, or SHUTDOWN when it was asked to.
    async fn finish(&mut self, exit: ExitStatus) -> Result<(), End> {
        let desired = desired_state(&self.desired.borrow().task);
        if desired >= TaskState::Shutdown {
            self.report_exit(TaskState::Shutdown, "shutdown", None, exit)
                .await
        } else if exit.success() {
            self.report_exit(TaskState::Complete, "finished", None, exit)
                .await
        } else {
            self.report_exit(TaskState::Failed, "failed", Some(exit.to_string()), exit)
                .await
        }
    }

    /// A runtime error: REJECTED before the start or when the spec cannot
    /// run here, FAILED otherwise.
    async fn fail(&mut self, error: RuntimeError) -> Result<(), End> {
        let state = if error.rejects_task() && self.observed() < TaskState::Running {
            TaskState::Rejected
        } else {
            TaskState::Failed
        };
        tracing::info!(?state, "task failed: {error}");
        self.report_error(state, error.to_string()).await
    }

    /// Reports RUNNING, with health STARTING when the task has a check.
    async fn report_running(&mut self, pid: u32) -> Result<(), End> {
        self.load_health(ContainerHealth::Starting).await;
        let health = self
            .health
            .as_ref()
            .map_or(ContainerHealth::None, HealthMonitor::health);
        let status = self.next_status(TaskState::Running, "started", None);
        let image_digest = self.image_digest().await.unwrap_or(status.image_digest);
        self.send(TaskStatus {
            pid,
            health: health as i32,
            image_digest,
            ..status
        })
        .await
    }

    /// The digest of the image the task runs, if its driver has images;
    /// a failure to tell is logged, never fatal to the task.
    async fn image_digest(&self) -> Option<String> {
        match self.runtime.image_digest(&self.task_id).await {
            Ok(digest) => digest,
            Err(e) => {
                tracing::warn!("cannot tell the image digest of the task: {e}");
                None
            }
        }
    }

    async fn report_exit(
        &mut self,
        state: TaskState,
        message: &str,
        err: Option<String>,
        exit: ExitStatus,
    ) -> Result<(), End> {
        let status = self.next_status(state, message, err);
        self.send(TaskStatus {
            exit_code: Some(exit.exit_code()),
            pid: 0,
            ..status
        })
        .await
    }

    async fn report_error(&mut self, state: TaskState, err: String) -> Result<(), End> {
        let message = if state == TaskState::Rejected {
            "rejected"
        } else {
            "failed"
        };
        let status = self.next_status(state, message, Some(err));
        self.send(TaskStatus { pid: 0, ..status }).await
    }

    async fn report(
        &mut self,
        state: TaskState,
        message: &str,
        err: Option<String>,
    ) -> Result<(), End> {
        let status = self.next_status(state, message, err);
        self.send(status).await
    }

    /// A status in `state`, carrying over the pid while the task runs.
    fn next_status(&self, state: TaskState, message: &str, err: Option<String>) -> TaskStatus {
        TaskStatus {
            state: state as i32,
            message: message.to_string(),
            err: err.unwrap_or_default(),
            timestamp_ms: now_ms(),
            exit_code: self.status.exit_code,
            pid: self.status.pid,
            health: self.status.health,
            health_output: self.status.health_output.clone(),
            image_digest: self.status.image_digest.clone(),
        }
    }

    /// Records and reports `status`; a status that would not move forward
    /// is dropped (a bug, caught in tests).
    async fn send(&mut self, status: TaskStatus) -> Result<(), End> {
        let state = TaskState::try_from(status.state).unwrap_or(TaskState::New);
        if !moves_forward(&self.status, &status) {
            debug_assert!(false, "state {state:?} after {:?}", self.observed());
            return Ok(());
        }
        tracing::debug!(?state, message = %status.message, err = %status.err, "task status");
        self.status = status.clone();
        let update = TaskStatusUpdate {
            task_id: self.task_id.clone(),
            status: Some(status),
        };
        self.updates.send(update).await.map_err(|_| End)
    }
}

/// Whether `next` may follow `last`: a later state, or RUNNING again with
/// another health.
pub fn moves_forward(last: &TaskStatus, next: &TaskStatus) -> bool {
    next.state > last.state
        || (next.state == last.state
            && next.state == TaskState::Running as i32
            && next.health != last.health)
}

/// Errors that may pass: the shim is busy or briefly unreachable.
fn is_transient(error: &RuntimeError) -> bool {
    matches!(
        error,
        RuntimeError::ShimIo { .. } | RuntimeError::ShimTimeout { .. }
    )
}

fn desired_state(task: &Task) -> TaskState {
    TaskState::try_from(task.desired_state).unwrap_or(TaskState::New)
}

/// Milliseconds since the Unix epoch, the unit of status timestamps.
pub fn now_ms() -> i64 {
    crate::logs::now_ns() / 1_000_000
}

#[cfg(test)]
mod tests;
