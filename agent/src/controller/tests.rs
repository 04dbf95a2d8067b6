//! Tests of the controller: the pure state machine over every pair of
//! states, and the async shell against a scripted runtime.

use super::*;
use crate::logs::LogLineStream;
use crate::runtime::{ExecOutcome, Started};
use async_trait::async_trait;
use rswarm_proto::{ContainerSpec, HealthConfig, LogsOptions, Meta, TaskSpec};
use std::sync::Mutex;
use std::time::Duration;

const ALL_STATES: [TaskState; 14] = [
    TaskState::New,
    TaskState::Pending,
    TaskState::Assigned,
    TaskState::Accepted,
    TaskState::Preparing,
    TaskState::Ready,
    TaskState::Starting,
    TaskState::Running,
    TaskState::Complete,
    TaskState::Shutdown,
    TaskState::Failed,
    TaskState::Rejected,
    TaskState::Remove,
    TaskState::Orphaned,
];

#[test]
fn the_state_machine_never_starts_what_should_not_run() {
    for observed in ALL_STATES {
        for desired in ALL_STATES {
            let step = next_step(observed, desired, false);
            if observed >= TaskState::Complete {
                assert_eq!(step, Step::Idle, "{observed:?} is final ({desired:?})");
            }
            if desired >= TaskState::Shutdown || desired <= TaskState::Ready {
                assert_ne!(step, Step::Start, "{observed:?} → {desired:?}");
            }
            if step == Step::Stop {
                assert!(observed >= TaskState::Starting && observed < TaskState::Complete);
            }
            assert_eq!(next_step(observed, desired, true), Step::Remove);
        }
    }
}

#[test]
fn the_state_machine_steps_forward_to_running() {
    use TaskState as S;
    let run = S::Running;
    assert_eq!(next_step(S::Assigned, run, false), Step::Accept);
    assert_eq!(next_step(S::Accepted, run, false), Step::Prepare);
    assert_eq!(next_step(S::Preparing, run, false), Step::Prepare);
    assert_eq!(next_step(S::Ready, run, false), Step::Start);
    assert_eq!(next_step(S::Starting, run, false), Step::Start);
    assert_eq!(next_step(S::Running, run, false), Step::Watch);
    assert_eq!(
        next_step(S::Ready, S::Ready, false),
        Step::Idle,
        "held at READY"
    );
    assert_eq!(
        next_step(S::Ready, S::Complete, false),
        Step::Start,
        "jobs run too"
    );
    assert_eq!(next_step(S::Running, S::Shutdown, false), Step::Stop);
    assert_eq!(next_step(S::Running, S::Remove, false), Step::Stop);
    assert_eq!(
        next_step(S::Accepted, S::Shutdown, false),
        Step::ShutdownUnstarted
    );
}

/// A runtime that does what the test scripted and records the calls.
#[derive(Debug)]
struct ScriptedRuntime {
    calls: Mutex<Vec<String>>,
    prepare: fn() -> Result<(), RuntimeError>,
    start: fn() -> Result<Started, RuntimeError>,
    attach: Mutex<Option<Result<Attached, RuntimeError>>>,
    exit: watch::Sender<Option<ExitStatus>>,
    stop_exit: ExitStatus,
    /// Whether health probes pass.
    probes_pass: std::sync::atomic::AtomicBool,
    probes: std::sync::atomic::AtomicUsize,
}

impl ScriptedRuntime {
    fn new() -> Self {
        Self {
            calls: Mutex::new(Vec::new()),
            prepare: || Ok(()),
            start: || Ok(Started { pid: 42 }),
            attach: Mutex::new(None),
            exit: watch::channel(None).0,
            stop_exit: ExitStatus::Signal(15),
            probes_pass: std::sync::atomic::AtomicBool::new(true),
            probes: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    fn set_probes_pass(&self, pass: bool) {
        self.probes_pass
            .store(pass, std::sync::atomic::Ordering::SeqCst);
    }

    fn exit_with(&self, status: ExitStatus) {
        self.exit.send_replace(Some(status));
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn record(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }
}

/// The image digest the scripted runtime's tasks run.
const SCRIPTED_DIGEST: &str = "sha256:5c817ed";

#[async_trait]
impl Runtime for ScriptedRuntime {
    fn driver(&self) -> &'static str {
        "scripted"
    }
    async fn prepare(&self, _task: &Task, _inputs: &TaskInputs) -> Result<(), RuntimeError> {
        self.record("prepare".into());
        (self.prepare)()
    }
    async fn start(&self, _task: &Task, _inputs: &TaskInputs) -> Result<Started, RuntimeError> {
        self.record("start".into());
        (self.start)()
    }
    async fn healthcheck(&self, task: &Task) -> Result<Option<HealthConfig>, RuntimeError> {
        Ok(crate::runtime::spec_healthcheck(task))
    }
    async fn exec(
        &self,
        _task_id: &str,
        argv: &[String],
        _timeout: Duration,
    ) -> Result<ExecOutcome, RuntimeError> {
        assert_eq!(argv, ["/bin/sh", "-c", "test -f /ready"]);
        self.probes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(
            if self.probes_pass.load(std::sync::atomic::Ordering::SeqCst) {
                ExecOutcome {
                    exit: ExitStatus::Code(0),
                    output: String::new(),
                }
            } else {
                ExecOutcome {
                    exit: ExitStatus::Code(1),
                    output: "  /ready is missing\n".into(),
                }
            },
        )
    }
    async fn attach(&self, _task_id: &str) -> Result<Attached, RuntimeError> {
        self.record("attach".into());
        self.attach
            .lock()
            .unwrap()
            .take()
            .unwrap_or(Ok(Attached::Unknown))
    }
    async fn image_digest(&self, _task_id: &str) -> Result<Option<String>, RuntimeError> {
        Ok(Some(SCRIPTED_DIGEST.into()))
    }
    async fn wait(&self, _task_id: &str) -> Result<ExitStatus, RuntimeError> {
        let mut exit = self.exit.subscribe();
        let status = exit.wait_for(Option::is_some).await.unwrap();
        Ok(status.unwrap_or(ExitStatus::Code(0)))
    }
    async fn stop(&self, _task_id: &str, stop: StopRequest) -> Result<ExitStatus, RuntimeError> {
        self.record(format!("stop {} {:?}", stop.signal, stop.grace));
        self.exit_with(self.stop_exit);
        Ok(self.stop_exit)
    }
    async fn remove(&self, _task_id: &str) -> Result<(), RuntimeError> {
        self.record("remove".into());
        Ok(())
    }
    async fn task_ids(&self) -> Result<Vec<String>, RuntimeError> {
        Ok(vec!["task1".into()])
    }
    async fn logs(&self, _: &str, _: LogsOptions) -> Result<LogLineStream, RuntimeError> {
        Ok(Box::pin(futures::stream::empty()))
    }
}

fn task(desired: TaskState) -> Task {
    Task {
        meta: Some(Meta {
            id: "task1".into(),
            ..Meta::default()
        }),
        desired_state: desired as i32,
        status: Some(TaskStatus {
            state: TaskState::Assigned as i32,
            ..TaskStatus::default()
        }),
        spec: Some(TaskSpec {
            container: Some(ContainerSpec {
                command: vec!["sleep".into()],
                stop_signal: "SIGINT".into(),
                stop_grace_period_ms: Some(1500),
                ..ContainerSpec::default()
            }),
            driver: "scripted".into(),
            ..TaskSpec::default()
        }),
        ..Task::default()
    }
}

fn status(state: TaskState) -> TaskStatus {
    TaskStatus {
        state: state as i32,
        pid: if state == TaskState::Running { 42 } else { 0 },
        ..TaskStatus::default()
    }
}

/// Receives statuses until one in `until` (or fails after 5 s).
async fn statuses_until(
    rx: &mut mpsc::Receiver<TaskStatusUpdate>,
    until: TaskState,
) -> Vec<TaskStatus> {
    let mut seen = Vec::new();
    loop {
        let update = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no {until:?} after {seen:?}"))
            .expect("controller alive");
        assert_eq!(update.task_id, "task1");
        let status = update.status.unwrap();
        let state = TaskState::try_from(status.state).unwrap();
        seen.push(status);
        if state == until {
            return seen;
        }
    }
}

fn states(statuses: &[TaskStatus]) -> Vec<TaskState> {
    statuses
        .iter()
        .map(|s| TaskState::try_from(s.state).unwrap())
        .collect()
}

async fn assert_quiet(rx: &mut mpsc::Receiver<TaskStatusUpdate>) {
    let extra = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await;
    assert!(extra.is_err(), "unexpected status {extra:?}");
}

fn start(
    runtime: &Arc<ScriptedRuntime>,
    task: Task,
) -> (ControllerHandle, mpsc::Receiver<TaskStatusUpdate>) {
    let (tx, rx) = mpsc::channel(16);
    let runtime: Arc<dyn Runtime> = runtime.clone();
    (TaskController::spawn(task, runtime, tx), rx)
}

#[tokio::test]
async fn a_task_runs_to_completion_through_every_state() {
    let runtime = Arc::new(ScriptedRuntime::new());
    let (_handle, mut rx) = start(&runtime, task(TaskState::Running));
    let seen = statuses_until(&mut rx, TaskState::Running).await;
    assert_eq!(
        states(&seen),
        [
            TaskState::Accepted,
            TaskState::Preparing,
            TaskState::Ready,
            TaskState::Starting,
            TaskState::Running
        ]
    );
    assert_eq!(seen[4].pid, 42);
    assert_eq!(seen[4].message, "started");
    assert_eq!(
        seen[4].image_digest, SCRIPTED_DIGEST,
        "RUNNING names the image digest"
    );
    runtime.exit_with(ExitStatus::Code(0));
    let done = statuses_until(&mut rx, TaskState::Complete).await;
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].exit_code, Some(0));
    assert_eq!(done[0].pid, 0);
    assert!(done[0].err.is_empty());
    assert_eq!(done[0].image_digest, SCRIPTED_DIGEST, "the end keeps it");
    assert_eq!(runtime.calls(), ["prepare", "start"]);
    assert_quiet(&mut rx).await;
}

#[tokio::test]
async fn a_non_zero_exit_or_a_signal_fails_the_task_with_the_reason() {
    for (exit, err, code) in [
        (ExitStatus::Code(3), "task: non-zero exit (3)", 3),
        (
            ExitStatus::Signal(9),
            "task: non-zero exit (137): killed by signal 9",
            137,
        ),
    ] {
        let runtime = Arc::new(ScriptedRuntime::new());
        let (_handle, mut rx) = start(&runtime, task(TaskState::Running));
        statuses_until(&mut rx, TaskState::Running).await;
        runtime.exit_with(exit);
        let failed = statuses_until(&mut rx, TaskState::Failed).await;
        assert_eq!(failed[0].err, err);
        assert_eq!(failed[0].exit_code, Some(code));
    }
}

#[tokio::test]
async fn a_task_desired_ready_is_held_there_until_asked_to_run() {
    let runtime = Arc::new(ScriptedRuntime::new());
    let (handle, mut rx) = start(&runtime, task(TaskState::Ready));
    statuses_until(&mut rx, TaskState::Ready).await;
    assert_quiet(&mut rx).await;
    assert_eq!(runtime.calls(), ["prepare"]);
    handle.update(task(TaskState::Running));
    let seen = statuses_until(&mut rx, TaskState::Running).await;
    assert_eq!(states(&seen), [TaskState::Starting, TaskState::Running]);
}

#[tokio::test]
async fn desired_shutdown_stops_with_the_specs_signal_and_grace() {
    let runtime = Arc::new(ScriptedRuntime::new());
    let (handle, mut rx) = start(&runtime, task(TaskState::Running));
    statuses_until(&mut rx, TaskState::Running).await;
    handle.update(task(TaskState::Shutdown));
    let seen = statuses_until(&mut rx, TaskState::Shutdown).await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].exit_code, Some(128 + 15));
    assert!(seen[0].err.is_empty(), "a requested stop is no failure");
    assert_eq!(runtime.calls(), ["prepare", "start", "stop 2 1.5s"]);
}

#[tokio::test]
async fn shutdown_before_the_start_starts_nothing() {
    let runtime = Arc::new(ScriptedRuntime::new());
    let (_handle, mut rx) = start(&runtime, task(TaskState::Shutdown));
    let seen = statuses_until(&mut rx, TaskState::Shutdown).await;
    assert_eq!(states(&seen), [TaskState::Shutdown]);
    assert!(runtime.calls().is_empty());
}

#[tokio::test]
async fn a_spec_that_cannot_run_is_rejected_and_not_started() {
    let mut scripted = ScriptedRuntime::new();
    scripted.prepare = || Err(RuntimeError::NoCommand);
    let runtime = Arc::new(scripted);
    let (_handle, mut rx) = start(&runtime, task(TaskState::Running));
    let seen = statuses_until(&mut rx, TaskState::Rejected).await;
    assert_eq!(
        states(&seen),
        [
            TaskState::Accepted,
            TaskState::Preparing,
            TaskState::Rejected
        ]
    );
    assert!(seen[2].err.contains("needs a command"), "{:?}", seen[2]);
    assert_eq!(runtime.calls(), ["prepare"]);
}

#[tokio::test]
async fn a_failed_start_fails_the_task() {
    let mut scripted = ScriptedRuntime::new();
    scripted.start = || {
        Err(RuntimeError::StartFailed {
            message: "permission denied".into(),
        })
    };
    let runtime = Arc::new(scripted);
    let (_handle, mut rx) = start(&runtime, task(TaskState::Running));
    let seen = statuses_until(&mut rx, TaskState::Failed).await;
    assert!(seen.last().unwrap().err.contains("permission denied"));
}

fn resume(
    runtime: &Arc<ScriptedRuntime>,
    last: TaskState,
    attach: Result<Attached, RuntimeError>,
) -> (ControllerHandle, mpsc::Receiver<TaskStatusUpdate>) {
    *runtime.attach.lock().unwrap() = Some(attach);
    let (tx, rx) = mpsc::channel(16);
    let dyn_runtime: Arc<dyn Runtime> = runtime.clone();
    let handle = TaskController::resume(task(TaskState::Running), status(last), dyn_runtime, tx);
    (handle, rx)
}

#[tokio::test]
async fn resuming_a_running_task_reattaches_without_restarting_it() {
    let runtime = Arc::new(ScriptedRuntime::new());
    let (_handle, mut rx) = resume(
        &runtime,
        TaskState::Running,
        Ok(Attached::Running { pid: 42 }),
    );
    assert_quiet(&mut rx).await;
    runtime.exit_with(ExitStatus::Code(0));
    statuses_until(&mut rx, TaskState::Complete).await;
    assert_eq!(runtime.calls(), ["attach"], "never started again");
}

#[tokio::test]
async fn resuming_reports_an_exit_that_happened_while_the_daemon_was_away() {
    let runtime = Arc::new(ScriptedRuntime::new());
    let (_handle, mut rx) = resume(
        &runtime,
        TaskState::Running,
        Ok(Attached::Exited(ExitStatus::Code(2))),
    );
    let seen = statuses_until(&mut rx, TaskState::Failed).await;
    assert_eq!(seen[0].exit_code, Some(2));
    assert_eq!(seen[0].err, "task: non-zero exit (2)");
}

#[tokio::test]
async fn resuming_a_task_caught_while_starting_reports_it_running() {
    let runtime = Arc::new(ScriptedRuntime::new());
    let (_handle, mut rx) = resume(
        &runtime,
        TaskState::Starting,
        Ok(Attached::Running { pid: 7 }),
    );
    let seen = statuses_until(&mut rx, TaskState::Running).await;
    assert_eq!(seen[0].pid, 7);
    assert_eq!(seen[0].image_digest, SCRIPTED_DIGEST);
    assert_eq!(runtime.calls(), ["attach"]);
}

#[tokio::test]
async fn resuming_a_running_task_the_node_lost_fails_it() {
    let runtime = Arc::new(ScriptedRuntime::new());
    let (_handle, mut rx) = resume(&runtime, TaskState::Running, Ok(Attached::Unknown));
    let seen = statuses_until(&mut rx, TaskState::Failed).await;
    assert!(seen[0].err.contains("gone"), "{:?}", seen[0]);
    let (_handle, mut rx) = resume(&runtime, TaskState::Running, Err(RuntimeError::ShimGone));
    statuses_until(&mut rx, TaskState::Failed).await;
}

#[tokio::test]
async fn removing_stops_the_task_then_deletes_it() {
    let runtime = Arc::new(ScriptedRuntime::new());
    let (handle, mut rx) = start(&runtime, task(TaskState::Running));
    statuses_until(&mut rx, TaskState::Running).await;
    tokio::time::timeout(Duration::from_secs(5), handle.remove())
        .await
        .expect("remove returns");
    statuses_until(&mut rx, TaskState::Shutdown).await;
    assert_eq!(
        runtime.calls(),
        ["prepare", "start", "stop 2 1.5s", "remove"]
    );
}

#[tokio::test]
async fn shutting_the_controller_down_leaves_the_task_running() {
    let runtime = Arc::new(ScriptedRuntime::new());
    let (handle, mut rx) = start(&runtime, task(TaskState::Running));
    statuses_until(&mut rx, TaskState::Running).await;
    tokio::time::timeout(Duration::from_secs(5), handle.shutdown())
        .await
        .expect("shutdown returns");
    assert_eq!(runtime.calls(), ["prepare", "start"]);
    assert!(
        rx.recv().await.is_none(),
        "the controller dropped its sender"
    );
}

#[test]
fn a_task_without_a_driver_is_rejected_with_the_reason() {
    let error = RuntimeError::UnknownDriver {
        driver: "oci".into(),
        available: "process".into(),
    };
    let update = rejection("task1", &error);
    let status = update.status.unwrap();
    assert_eq!(status.state, TaskState::Rejected as i32);
    assert!(
        status.err.contains("driver \"oci\" is not available"),
        "{}",
        status.err
    );
}

/// A task whose check probes every 100 ms and fails after 2 failures.
fn checked_task(desired: TaskState) -> Task {
    let mut task = task(desired);
    if let Some(container) = task.spec.as_mut().and_then(|s| s.container.as_mut()) {
        container.healthcheck = Some(HealthConfig {
            test: vec!["CMD-SHELL".into(), "test -f /ready".into()],
            interval_ms: Some(100),
            timeout_ms: Some(1000),
            retries: Some(2),
            start_period_ms: None,
        });
    }
    task
}

fn health_of(status: &TaskStatus) -> ContainerHealth {
    ContainerHealth::try_from(status.health).unwrap()
}

/// Receives the next status (fails after 5 s).
async fn next_status(rx: &mut mpsc::Receiver<TaskStatusUpdate>) -> TaskStatus {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a status within 5 s")
        .expect("controller alive")
        .status
        .unwrap()
}

#[tokio::test]
async fn a_task_without_a_check_has_no_health() {
    let runtime = Arc::new(ScriptedRuntime::new());
    let (_handle, mut rx) = start(&runtime, task(TaskState::Running));
    let seen = statuses_until(&mut rx, TaskState::Running).await;
    assert_eq!(health_of(seen.last().unwrap()), ContainerHealth::None);
    assert_quiet(&mut rx).await;
    assert_eq!(runtime.probes.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_unhealthy_task_is_stopped_and_failed_with_the_probe_output() {
    let runtime = Arc::new(ScriptedRuntime::new());
    let (_handle, mut rx) = start(&runtime, checked_task(TaskState::Running));
    let running = statuses_until(&mut rx, TaskState::Running).await;
    let running = running.last().unwrap().clone();
    assert_eq!(health_of(&running), ContainerHealth::Starting);

    let healthy = next_status(&mut rx).await;
    assert_eq!(
        healthy.state,
        TaskState::Running as i32,
        "same state, new health"
    );
    assert_eq!(health_of(&healthy), ContainerHealth::Healthy);
    assert_eq!(healthy.pid, 42);
    assert_eq!(
        healthy.timestamp_ms, running.timestamp_ms,
        "running since the start, not since the health change"
    );
    assert_quiet(&mut rx).await;

    runtime.set_probes_pass(false);
    let unhealthy = next_status(&mut rx).await;
    assert_eq!(unhealthy.state, TaskState::Running as i32);
    assert_eq!(health_of(&unhealthy), ContainerHealth::Unhealthy);
    assert_eq!(unhealthy.health_output, "  /ready is missing\n");

    let failed = next_status(&mut rx).await;
    assert_eq!(failed.state, TaskState::Failed as i32);
    assert_eq!(failed.err, "unhealthy container: /ready is missing");
    assert_eq!(failed.exit_code, Some(128 + 15));
    assert_eq!(runtime.calls(), ["prepare", "start", "stop 2 1.5s"]);
    assert_quiet(&mut rx).await;
}

#[tokio::test]
async fn a_resumed_healthy_task_reports_nothing_new_while_healthy() {
    let runtime = Arc::new(ScriptedRuntime::new());
    *runtime.attach.lock().unwrap() = Some(Ok(Attached::Running { pid: 42 }));
    let (tx, mut rx) = mpsc::channel(16);
    let last = TaskStatus {
        health: ContainerHealth::Healthy as i32,
        ..status(TaskState::Running)
    };
    let dyn_runtime: Arc<dyn Runtime> = runtime.clone();
    let _handle = TaskController::resume(checked_task(TaskState::Running), last, dyn_runtime, tx);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(runtime.probes.load(std::sync::atomic::Ordering::SeqCst) >= 2);
    assert_quiet(&mut rx).await;
    runtime.set_probes_pass(false);
    let unhealthy = next_status(&mut rx).await;
    assert_eq!(health_of(&unhealthy), ContainerHealth::Unhealthy);
}

#[test]
fn only_a_later_state_or_a_new_health_moves_forward() {
    let running = status(TaskState::Running);
    let healthy = TaskStatus {
        health: ContainerHealth::Healthy as i32,
        ..running.clone()
    };
    assert!(moves_forward(&running, &healthy));
    assert!(!moves_forward(&healthy, &healthy));
    assert!(!moves_forward(&running, &status(TaskState::Starting)));
    assert!(moves_forward(&healthy, &status(TaskState::Failed)));
    let ready = status(TaskState::Ready);
    let ready_healthy = TaskStatus {
        health: ContainerHealth::Healthy as i32,
        ..ready.clone()
    };
    assert!(
        !moves_forward(&ready, &ready_healthy),
        "health only while running"
    );
}

// ---- secrets and configs ------------------------------------------------

fn missing_secret() -> InputsState {
    Err(MissingInputs {
        missing: vec!["secret db-pass".into()],
    })
}

fn start_waiting(
    runtime: &Arc<ScriptedRuntime>,
    task: Task,
) -> (ControllerHandle, mpsc::Receiver<TaskStatusUpdate>) {
    let (tx, rx) = mpsc::channel(16);
    let runtime: Arc<dyn Runtime> = runtime.clone();
    let handle = TaskController::spawn_with_inputs(task, missing_secret(), runtime, tx);
    (handle, rx)
}

/// Goal: a task whose secret has not arrived is held in PREPARING without
/// touching the runtime, and runs as soon as the secret arrives.
#[tokio::test]
async fn a_task_waits_for_its_secret_then_runs() {
    let runtime = Arc::new(ScriptedRuntime::new());
    let (handle, mut rx) = start_waiting(&runtime, task(TaskState::Running));
    statuses_until(&mut rx, TaskState::Preparing).await;
    assert_quiet(&mut rx).await;
    assert!(runtime.calls().is_empty(), "{:?}", runtime.calls());
    handle.set_inputs(Ok(TaskInputs::default()));
    statuses_until(&mut rx, TaskState::Running).await;
    assert_eq!(runtime.calls(), ["prepare", "start"]);
}

/// Goal: a secret that never arrives rejects the task after the bounded
/// wait, with a message naming the secret.
#[tokio::test(start_paused = true)]
async fn a_secret_that_never_arrives_rejects_the_task_naming_it() {
    let runtime = Arc::new(ScriptedRuntime::new());
    let (_handle, mut rx) = start_waiting(&runtime, task(TaskState::Running));
    statuses_until(&mut rx, TaskState::Preparing).await;
    let before = tokio::time::Instant::now();
    let rejected = tokio::time::timeout(TASK_INPUTS_WAIT_MAX * 2, rx.recv())
        .await
        .expect("rejected within twice the wait")
        .unwrap()
        .status
        .unwrap();
    assert_eq!(rejected.state, TaskState::Rejected as i32);
    assert!(before.elapsed() >= TASK_INPUTS_WAIT_MAX);
    assert!(rejected.err.contains("secret db-pass"), "{}", rejected.err);
    assert!(runtime.calls().is_empty(), "{:?}", runtime.calls());
}

/// Goal: a waiting task that is no longer wanted shuts down unstarted.
#[tokio::test]
async fn a_waiting_task_can_be_shut_down() {
    let runtime = Arc::new(ScriptedRuntime::new());
    let (handle, mut rx) = start_waiting(&runtime, task(TaskState::Running));
    statuses_until(&mut rx, TaskState::Preparing).await;
    handle.update(task(TaskState::Shutdown));
    statuses_until(&mut rx, TaskState::Shutdown).await;
    assert!(runtime.calls().is_empty());
}
