//! What 100 running tasks cost the agent: RSS and threads per controller
//! (each waiting on its real shim), and the RSS of a shim. A test binary of
//! its own, so that nothing else runs while it measures. Needs root.
//!
//! The numbers are printed (`cargo test -p rswarm-agent --test footprint --
//! --nocapture`); the test fails when a controller costs more than
//! `RSS_PER_TASK_BYTES_MAX` or the agent grows a thread per task.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rswarm_agent::controller::{ControllerHandle, TaskController};
use rswarm_agent::runtime::{
    ProcessRuntime, ProcessRuntimeConfig, Runtime, ShimCommand, StopRequest, TaskInputs,
};
use rswarm_proto::{ContainerSpec, Meta, Task, TaskSpec, TaskState, TaskStatus};

const TASKS: usize = 100;

/// A controller waiting on a running task holds its task, its last status,
/// a connection to the shim and a tokio task: a few KB. RSS moves in pages
/// and allocator chunks, so the bound leaves room for that noise (100 tasks
/// within 25 MB is the goal; this is 3.2 MB).
const RSS_PER_TASK_BYTES_MAX: u64 = 32 * 1024;

/// Threads the agent may add for 100 tasks (tokio's blocking pool grows a
/// little for file work); a thread per task would add 100.
const THREADS_ADDED_MAX: u64 = 16;

/// A number field of `/proc/<pid>/status` (`VmRSS` in KiB, `Threads`).
fn status_field(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn sleeper(index: usize) -> Task {
    Task {
        meta: Some(Meta {
            id: format!("sleeper{index}"),
            ..Meta::default()
        }),
        desired_state: TaskState::Running as i32,
        status: Some(TaskStatus {
            state: TaskState::Assigned as i32,
            ..TaskStatus::default()
        }),
        spec: Some(TaskSpec {
            container: Some(ContainerSpec {
                command: vec!["sleep".into(), "120".into()],
                ..ContainerSpec::default()
            }),
            driver: "process".into(),
            ..TaskSpec::default()
        }),
        ..Task::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_running_tasks_cost_a_few_kb_each() {
    assert!(
        rustix::process::geteuid().is_root(),
        "the footprint test starts real tasks; run it as root"
    );
    let state = tempfile::tempdir().unwrap();
    let shim = ShimCommand::new(env!("CARGO_BIN_EXE_rswarm-test-shim"), Vec::new());
    let config = ProcessRuntimeConfig::new(state.path().to_path_buf(), shim);
    let runtime: Arc<dyn Runtime> = Arc::new(ProcessRuntime::new(config).unwrap());
    let (tx, mut rx) = tokio::sync::mpsc::channel(TASKS * 8);
    // Warm up tokio's and the runtime's lazily made structures.
    let warm = TaskController::spawn(sleeper(TASKS), runtime.clone(), tx.clone());
    wait_running(&mut rx, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    print_latencies(runtime.as_ref()).await;

    let me = std::process::id();
    let rss_before = status_field(me, "VmRSS");
    let threads_before = status_field(me, "Threads");
    let started = Instant::now();
    let handles: Vec<ControllerHandle> = (0..TASKS)
        .map(|index| TaskController::spawn(sleeper(index), runtime.clone(), tx.clone()))
        .collect();
    wait_running(&mut rx, TASKS).await;
    let start_time = started.elapsed();
    // Every controller is now parked on its shim's socket.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = status_field(me, "VmRSS");
    let threads_after = status_field(me, "Threads");
    let rss_per_task = rss_after.saturating_sub(rss_before) * 1024 / TASKS as u64;
    let shim_pid = std::fs::read_to_string(state.path().join("tasks/sleeper0/shim.pid")).unwrap();
    let shim_rss = status_field(shim_pid.trim().parse().unwrap(), "VmRSS");
    println!(
        "{TASKS} tasks started in {start_time:?}; agent RSS {rss_before} -> {rss_after} KiB \
         ({rss_per_task} B per task), threads {threads_before} -> {threads_after}; \
         one shim (this build of the test shim): {shim_rss} KiB"
    );
    for handle in handles {
        handle.remove().await;
    }
    warm.remove().await;
    assert!(
        rss_per_task <= RSS_PER_TASK_BYTES_MAX,
        "a running task costs the agent {rss_per_task} B of RSS; the budget is {RSS_PER_TASK_BYTES_MAX} B"
    );
    assert!(
        threads_after <= threads_before + THREADS_ADDED_MAX,
        "the agent went from {threads_before} to {threads_after} threads for {TASKS} tasks"
    );
}

/// Sequential start (until the shim reports the task running) and stop
/// (SIGTERM until the exit is recorded) of a `sleep`, as medians.
async fn print_latencies(runtime: &dyn Runtime) {
    const ROUNDS: usize = 11;
    let mut starts = Vec::with_capacity(ROUNDS);
    let mut stops = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        let task = sleeper(1000 + round);
        let id = task.meta.as_ref().unwrap().id.clone();
        let began = Instant::now();
        runtime.start(&task, &TaskInputs::default()).await.unwrap();
        starts.push(began.elapsed());
        let began = Instant::now();
        runtime
            .stop(&id, StopRequest::for_task(&task))
            .await
            .unwrap();
        stops.push(began.elapsed());
        runtime.remove(&id).await.unwrap();
    }
    starts.sort();
    stops.sort();
    println!(
        "one task: start median {:?} (min {:?}), stop median {:?} (min {:?}), {ROUNDS} rounds",
        starts[ROUNDS / 2],
        starts[0],
        stops[ROUNDS / 2],
        stops[0]
    );
}

async fn wait_running(
    rx: &mut tokio::sync::mpsc::Receiver<rswarm_proto::TaskStatusUpdate>,
    count: usize,
) {
    let mut running = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while running < count {
        let update = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("tasks start within 2 minutes")
            .unwrap();
        let state = update.status.unwrap().state;
        assert!(
            state <= TaskState::Running as i32,
            "a sleeper ended early: {state}"
        );
        if state == TaskState::Running as i32 {
            running += 1;
        }
    }
}
