//! The process driver with real processes and real shims: exit codes, logs,
//! stop and kill, env/workdir/user, cgroup limits, log rotation and
//! following, and re-attaching after the runtime (the daemon) went away.
//!
//! The shims are the `rswarm-test-shim` binary of this crate, which runs the
//! same entry point as `rswarm shim`. These tests need root (they switch
//! users and write cgroups) and fail with a message saying so otherwise.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rswarm_agent::controller::TaskController;
use rswarm_agent::logs::LogRotation;
use rswarm_agent::runtime::{
    Attached, ExitStatus, ProcessRuntime, ProcessRuntimeConfig, Runtime, RuntimeError, ShimCommand,
    StopRequest, TaskInputs,
};
use rswarm_agent::shim::records::{TaskPid, process_start_time, read_json};
use rswarm_proto::{
    ContainerSpec, LogLine, LogStream, LogsOptions, Meta, ResourceRequirements, Resources, Task,
    TaskSpec, TaskState, TaskStatus,
};

/// A runtime on a fresh state directory, with its own cgroup parent.
struct Fixture {
    state: tempfile::TempDir,
    cgroup_parent: String,
    runtime: ProcessRuntime,
}

fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "the process driver tests need root (they switch users and write cgroups); run them as root"
    );
}

fn config(state_dir: &Path, cgroup_parent: &str) -> ProcessRuntimeConfig {
    let shim = ShimCommand::new(env!("CARGO_BIN_EXE_rswarm-test-shim"), Vec::new());
    let mut config = ProcessRuntimeConfig::new(state_dir.to_path_buf(), shim);
    config.cgroup_parent = cgroup_parent.to_string();
    config
}

impl Fixture {
    fn new(name: &str) -> Self {
        require_root();
        let state = tempfile::tempdir().unwrap();
        let cgroup_parent = format!("rswarm-test-{}-{name}", std::process::id());
        let runtime = ProcessRuntime::new(config(state.path(), &cgroup_parent)).unwrap();
        Self {
            state,
            cgroup_parent,
            runtime,
        }
    }

    /// A second runtime on the same directory: the daemon after a restart.
    fn restarted(&self) -> ProcessRuntime {
        ProcessRuntime::new(config(self.state.path(), &self.cgroup_parent)).unwrap()
    }

    async fn log_lines(&self, task_id: &str, options: LogsOptions) -> Vec<LogLine> {
        let stream = self.runtime.logs(task_id, options).await.unwrap();
        stream.map(|line| line.unwrap()).collect().await
    }
}

/// A failed test leaves nothing running and no cgroup behind: kills every
/// task's process group (its shim then exits) and removes the cgroups.
impl Drop for Fixture {
    fn drop(&mut self) {
        let tasks = std::fs::read_dir(self.state.path().join("tasks"))
            .into_iter()
            .flatten();
        for task_dir in tasks.flatten() {
            // Only a task that still runs: its pid has the recorded start time
            // (an old pid may belong to someone else's process by now).
            let record: Option<TaskPid> =
                read_json(&task_dir.path().join("task.json")).ok().flatten();
            let running = record.filter(|t| process_start_time(t.pid) == Some(t.start_time));
            let pid = running
                .and_then(|t| i32::try_from(t.pid).ok())
                .and_then(rustix::process::Pid::from_raw);
            if let Some(pid) = pid {
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            }
        }
        let roots = ["memory", "pids", "cpu", ""].map(|c| Path::new("/sys/fs/cgroup").join(c));
        for parent in roots.iter().map(|root| root.join(&self.cgroup_parent)) {
            for cgroup in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
                if cgroup.path().is_dir() {
                    remove_cgroup(&cgroup.path());
                }
            }
            let _ = std::fs::remove_dir(&parent);
        }
    }
}

fn remove_cgroup(dir: &Path) {
    for _ in 0..50 {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs
            .lines()
            .filter_map(|p| p.parse().ok())
            .filter_map(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
        if std::fs::remove_dir(dir).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn task(id: &str, argv: &[&str]) -> Task {
    Task {
        meta: Some(Meta {
            id: id.to_string(),
            ..Meta::default()
        }),
        desired_state: TaskState::Running as i32,
        status: Some(TaskStatus {
            state: TaskState::Assigned as i32,
            ..TaskStatus::default()
        }),
        spec: Some(TaskSpec {
            container: Some(ContainerSpec {
                command: argv.iter().map(|s| s.to_string()).collect(),
                ..ContainerSpec::default()
            }),
            driver: "process".into(),
            ..TaskSpec::default()
        }),
        ..Task::default()
    }
}

fn sh(id: &str, script: &str) -> Task {
    task(id, &["/bin/sh", "-c", script])
}

fn container(task: &mut Task) -> &mut ContainerSpec {
    task.spec.as_mut().unwrap().container.as_mut().unwrap()
}

fn all_lines() -> LogsOptions {
    LogsOptions {
        follow: false,
        tail: -1,
        since_ms: 0,
    }
}

fn text(line: &LogLine) -> &str {
    std::str::from_utf8(&line.data).unwrap()
}

/// Waits (bounded) until `task_id`'s log has a line `wanted`.
async fn wait_for_line(fixture: &Fixture, task_id: &str, wanted: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let lines = fixture.log_lines(task_id, all_lines()).await;
        if lines.iter().any(|l| text(l) == wanted) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("task {task_id} never logged {wanted:?}");
}

fn now_ns() -> i64 {
    rswarm_agent::logs::now_ns()
}

#[tokio::test]
async fn exit_code_and_both_streams_are_recorded_with_timestamps() {
    let fixture = Fixture::new("exit");
    let before = now_ns();
    let task = sh("exit3", "echo hi; echo err >&2; exit 3");
    fixture
        .runtime
        .prepare(&task, &TaskInputs::default())
        .await
        .unwrap();
    let started = fixture
        .runtime
        .start(&task, &TaskInputs::default())
        .await
        .unwrap();
    assert!(started.pid > 0);
    let exit = fixture.runtime.wait("exit3").await.unwrap();
    assert_eq!(exit, ExitStatus::Code(3));
    assert_eq!(exit.to_string(), "task: non-zero exit (3)");

    let lines = fixture.log_lines("exit3", all_lines()).await;
    let mut seen: Vec<(&str, i32)> = lines.iter().map(|l| (text(l), l.stream)).collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("err", LogStream::Stderr as i32),
            ("hi", LogStream::Stdout as i32)
        ]
    );
    for line in &lines {
        assert!(
            line.timestamp_ns >= before && line.timestamp_ns <= now_ns(),
            "{line:?}"
        );
        assert_eq!(line.task_id, "exit3");
    }
    // Asking again gives the same answer, from the record.
    assert_eq!(
        fixture.runtime.wait("exit3").await.unwrap(),
        ExitStatus::Code(3)
    );
    assert_eq!(
        fixture.runtime.attach("exit3").await.unwrap(),
        Attached::Exited(ExitStatus::Code(3))
    );
}

#[tokio::test]
async fn a_stopped_task_ends_within_its_grace_period() {
    let fixture = Fixture::new("stop");
    fixture
        .runtime
        .start(&task("sleeper", &["sleep", "60"]), &TaskInputs::default())
        .await
        .unwrap();
    let began = Instant::now();
    let stop = StopRequest {
        signal: 15,
        grace: Duration::from_secs(5),
    };
    let exit = fixture.runtime.stop("sleeper", stop).await.unwrap();
    assert_eq!(exit, ExitStatus::Signal(15));
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "took {:?}",
        began.elapsed()
    );
}

#[tokio::test]
async fn a_task_ignoring_sigterm_is_killed_after_the_grace_period() {
    let fixture = Fixture::new("kill");
    let script = "trap '' TERM; echo ready; while :; do sleep 0.1; done";
    fixture
        .runtime
        .start(&sh("stubborn", script), &TaskInputs::default())
        .await
        .unwrap();
    wait_for_line(&fixture, "stubborn", "ready").await;
    let began = Instant::now();
    let stop = StopRequest {
        signal: 15,
        grace: Duration::from_millis(500),
    };
    let exit = fixture.runtime.stop("stubborn", stop).await.unwrap();
    let took = began.elapsed();
    assert_eq!(exit, ExitStatus::Signal(9));
    assert!(
        took >= Duration::from_millis(500),
        "killed before the grace ended: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[tokio::test]
async fn the_stop_signal_of_the_spec_is_sent() {
    let fixture = Fixture::new("usr1");
    let mut task = sh(
        "graceful",
        "trap 'echo got usr1; exit 0' USR1; echo ready; while :; do sleep 0.1; done",
    );
    container(&mut task).stop_signal = "SIGUSR1".into();
    fixture
        .runtime
        .start(&task, &TaskInputs::default())
        .await
        .unwrap();
    wait_for_line(&fixture, "graceful", "ready").await;
    let exit = fixture
        .runtime
        .stop("graceful", StopRequest::for_task(&task))
        .await
        .unwrap();
    assert_eq!(exit, ExitStatus::Code(0));
    let lines = fixture.log_lines("graceful", all_lines()).await;
    assert!(lines.iter().any(|l| text(l) == "got usr1"), "{lines:?}");
}

#[tokio::test]
async fn env_workdir_and_user_apply_to_the_task() {
    let fixture = Fixture::new("user");
    let nobody = std::fs::read_to_string("/etc/passwd").unwrap();
    assert!(
        nobody.contains("\nnobody:"),
        "this test needs the user nobody in /etc/passwd"
    );
    let mut task = sh(
        "who",
        "echo $GREETING; pwd; id -u; id -g; id -G; echo $HOME",
    );
    let spec = container(&mut task);
    spec.env = vec!["GREETING=hello there".into()];
    spec.dir = "/tmp".into();
    spec.user = "nobody".into();
    fixture
        .runtime
        .start(&task, &TaskInputs::default())
        .await
        .unwrap();
    assert_eq!(
        fixture.runtime.wait("who").await.unwrap(),
        ExitStatus::Code(0)
    );
    let lines = fixture.log_lines("who", all_lines()).await;
    let texts: Vec<&str> = lines.iter().map(text).collect();
    assert_eq!(
        texts,
        [
            "hello there",
            "/tmp",
            "65534",
            "65534",
            "65534",
            "/nonexistent"
        ]
    );
}

#[tokio::test]
async fn specs_that_cannot_run_are_rejected_before_anything_starts() {
    let fixture = Fixture::new("reject");
    let err = fixture
        .runtime
        .prepare(
            &task("nope", &["no-such-program-anywhere"]),
            &TaskInputs::default(),
        )
        .await
        .unwrap_err();
    assert!(err.rejects_task(), "{err}");
    let err = fixture
        .runtime
        .start(
            &task("nope", &["no-such-program-anywhere"]),
            &TaskInputs::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::CommandNotFound { .. }), "{err}");
    assert!(
        !fixture.runtime.task_dir("nope").exists(),
        "nothing left behind"
    );
    assert!(fixture.runtime.task_ids().await.unwrap().is_empty());
}

fn cgroup_file(fixture: &Fixture, controller: &str, task_id: &str, file: &str) -> String {
    let v1 = Path::new("/sys/fs/cgroup").join(controller);
    let base = if v1.join("cgroup.procs").exists() {
        v1
    } else {
        PathBuf::from("/sys/fs/cgroup")
    };
    let path = base.join(&fixture.cgroup_parent).join(task_id).join(file);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| {
            panic!(
                "cannot read {}: {e} (does this host have the {controller} cgroup controller?)",
                path.display()
            )
        })
        .trim()
        .to_string()
}

fn limited(id: &str, script: &str, memory_bytes: i64, nano_cpus: i64, pids: i64) -> Task {
    let mut task = sh(id, script);
    task.spec.as_mut().unwrap().resources = Some(ResourceRequirements {
        limits: Some(Resources {
            nano_cpus,
            memory_bytes,
        }),
        reservations: None,
        pids_limit: pids,
    });
    task
}

#[tokio::test]
async fn memory_cpu_and_pids_limits_land_in_the_tasks_cgroups() {
    let fixture = Fixture::new("limits");
    let task = limited("limited", "echo ready; sleep 60", 64 << 20, 500_000_000, 20);
    let started = fixture
        .runtime
        .start(&task, &TaskInputs::default())
        .await
        .unwrap();
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    if v2 {
        assert_eq!(
            cgroup_file(&fixture, "memory", "limited", "memory.max"),
            "67108864"
        );
        assert_eq!(
            cgroup_file(&fixture, "cpu", "limited", "cpu.max"),
            "50000 100000"
        );
    } else {
        assert_eq!(
            cgroup_file(&fixture, "memory", "limited", "memory.limit_in_bytes"),
            "67108864"
        );
        assert_eq!(
            cgroup_file(&fixture, "cpu", "limited", "cpu.cfs_quota_us"),
            "50000"
        );
    }
    assert_eq!(cgroup_file(&fixture, "pids", "limited", "pids.max"), "20");
    let procs = cgroup_file(&fixture, "pids", "limited", "cgroup.procs");
    assert!(
        procs.lines().any(|p| p == started.pid.to_string()),
        "the task is in its cgroup: {procs}"
    );
    let shim_pid =
        std::fs::read_to_string(fixture.runtime.task_dir("limited").join("shim.pid")).unwrap();
    assert!(
        !procs.lines().any(|p| p == shim_pid.trim()),
        "the shim left the task's cgroup"
    );

    assert_eq!(fixture.runtime.task_ids().await.unwrap(), ["limited"]);
    fixture.runtime.remove("limited").await.unwrap();
    assert!(!fixture.runtime.task_dir("limited").exists());
    assert!(fixture.runtime.task_ids().await.unwrap().is_empty());
    let cgroup = Path::new("/sys/fs/cgroup/pids")
        .join(&fixture.cgroup_parent)
        .join("limited");
    assert!(!cgroup.exists(), "remove deletes the cgroups");
}

#[tokio::test]
async fn a_fork_bomb_is_contained_by_the_pids_limit() {
    // Goal: a task cannot make more processes than its pids limit. Method:
    // a shell forks 40 sleepers under a limit of 8; the shell's fork fails
    // (dash then gives up) and the task ends early.
    let fixture = Fixture::new("forkbomb");
    let script = "i=0; while [ $i -lt 40 ]; do sleep 30 & i=$((i+1)); done; echo spawned; wait";
    let task = limited("bomb", script, 0, 0, 8);
    fixture
        .runtime
        .start(&task, &TaskInputs::default())
        .await
        .unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(20), fixture.runtime.wait("bomb"))
        .await
        .expect("the bomb ends once it cannot fork")
        .unwrap();
    assert!(!exit.success(), "{exit}");
    let lines = fixture.log_lines("bomb", all_lines()).await;
    assert!(
        !lines.iter().any(|l| text(l) == "spawned"),
        "40 forks went through: {lines:?}"
    );
    let fork_failed = lines
        .iter()
        .any(|l| l.stream == LogStream::Stderr as i32 && text(l).to_lowercase().contains("fork"));
    assert!(fork_failed, "the shell says a fork failed: {lines:?}");
    fixture.runtime.remove("bomb").await.unwrap();
}

#[tokio::test]
async fn logs_rotate_and_tail_since_follow_work_on_a_real_task() {
    require_root();
    let state = tempfile::tempdir().unwrap();
    let mut config = config(state.path(), "rswarm-test-unused");
    config.log_rotation = LogRotation::try_new(4096, 2).unwrap();
    let runtime = ProcessRuntime::new(config).unwrap();
    let script =
        "i=0; while [ $i -lt 500 ]; do echo \"line $i of the chatty task\"; i=$((i+1)); done";
    runtime
        .start(&sh("chatty", script), &TaskInputs::default())
        .await
        .unwrap();
    assert_eq!(runtime.wait("chatty").await.unwrap(), ExitStatus::Code(0));
    let dir = runtime.task_dir("chatty");
    assert!(dir.join("log.json.1").exists() && !dir.join("log.json.2").exists());
    for file in ["log.json", "log.json.1"] {
        assert!(std::fs::metadata(dir.join(file)).unwrap().len() <= 4096);
    }
    let options = LogsOptions {
        follow: false,
        tail: 2,
        since_ms: 0,
    };
    let tail: Vec<LogLine> = runtime
        .logs("chatty", options)
        .await
        .unwrap()
        .map(|l| l.unwrap())
        .collect()
        .await;
    assert_eq!(
        tail.iter().map(text).collect::<Vec<_>>(),
        ["line 498 of the chatty task", "line 499 of the chatty task"]
    );

    let future = LogsOptions {
        follow: false,
        tail: -1,
        since_ms: now_ns() / 1_000_000 + 60_000,
    };
    assert_eq!(
        runtime.logs("chatty", future).await.unwrap().count().await,
        0
    );

    // Following a running task: every line, then the end with the task.
    let script = "for i in 1 2 3 4 5; do echo tick $i; sleep 0.1; done";
    runtime
        .start(&sh("ticker", script), &TaskInputs::default())
        .await
        .unwrap();
    let follow = LogsOptions {
        follow: true,
        tail: -1,
        since_ms: 0,
    };
    let stream = runtime.logs("ticker", follow).await.unwrap();
    let lines: Vec<LogLine> = tokio::time::timeout(
        Duration::from_secs(10),
        stream.map(|l| l.unwrap()).collect(),
    )
    .await
    .expect("following ends when the task ends");
    assert_eq!(
        lines.iter().map(text).collect::<Vec<_>>(),
        ["tick 1", "tick 2", "tick 3", "tick 4", "tick 5"]
    );
}

/// Field `index` (1-based, after the command name) of `/proc/<pid>/stat`.
fn stat_field(pid: u32, index: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name
        .split_whitespace()
        .nth(index - 3)
        .map(str::to_string)
}

#[tokio::test]
async fn a_restarted_runtime_reattaches_to_a_running_task_and_gets_its_exit() {
    // Goal: a daemon restart neither restarts nor loses a task. Method:
    // start a task, drop the runtime, build a new one on the same directory.
    let fixture = Fixture::new("reattach");
    let started = fixture
        .runtime
        .start(
            &sh("survivor", "echo up; sleep 1; exit 7"),
            &TaskInputs::default(),
        )
        .await
        .unwrap();
    let shim_pid: u32 =
        std::fs::read_to_string(fixture.runtime.task_dir("survivor").join("shim.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
    assert_eq!(
        stat_field(shim_pid, 6),
        Some(shim_pid.to_string()),
        "the shim leads its own session"
    );
    assert_eq!(
        stat_field(started.pid, 4),
        Some(shim_pid.to_string()),
        "the shim is the task's parent"
    );

    let restarted = fixture.restarted();
    assert_eq!(
        restarted.attach("survivor").await.unwrap(),
        Attached::Running { pid: started.pid }
    );
    assert_eq!(
        restarted.wait("survivor").await.unwrap(),
        ExitStatus::Code(7)
    );
}

#[tokio::test]
async fn an_exit_while_the_daemon_was_away_is_reported_from_the_record() {
    let fixture = Fixture::new("away");
    fixture
        .runtime
        .start(&sh("brief", "exit 5"), &TaskInputs::default())
        .await
        .unwrap();
    let exit_record = fixture.runtime.task_dir("brief").join("exit.json");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !exit_record.exists() {
        assert!(
            Instant::now() < deadline,
            "the shim never recorded the exit"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let restarted = fixture.restarted();
    assert_eq!(
        restarted.attach("brief").await.unwrap(),
        Attached::Exited(ExitStatus::Code(5))
    );
    assert_eq!(restarted.wait("brief").await.unwrap(), ExitStatus::Code(5));
}

#[tokio::test]
async fn a_task_whose_shim_was_killed_is_reported_and_killed() {
    let fixture = Fixture::new("shimgone");
    let started = fixture
        .runtime
        .start(&task("orphan", &["sleep", "60"]), &TaskInputs::default())
        .await
        .unwrap();
    let dir = fixture.runtime.task_dir("orphan");
    let shim_pid: i32 = std::fs::read_to_string(dir.join("shim.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let shim = rustix::process::Pid::from_raw(shim_pid).unwrap();
    rustix::process::kill_process(shim, rustix::process::Signal::KILL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let err = loop {
        match fixture.runtime.wait("orphan").await {
            Err(RuntimeError::ShimGone) => break RuntimeError::ShimGone,
            Err(RuntimeError::ShimIo { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("expected the shim to be gone, got {other:?}"),
        }
    };
    assert!(!err.rejects_task());
    let deadline = Instant::now() + Duration::from_secs(5);
    while stat_field(started.pid, 3).is_some_and(|state| state != "Z") {
        assert!(Instant::now() < deadline, "the unwatched task still runs");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_controller_drives_a_real_task_to_failed_and_another_to_shutdown() {
    let fixture = Fixture::new("controller");
    let runtime: Arc<dyn Runtime> = Arc::new(fixture.restarted());
    let (tx, mut rx) = tokio::sync::mpsc::channel(32);
    let _failing = TaskController::spawn(sh("fails", "exit 3"), runtime.clone(), tx.clone());
    let mut stopped_task = task("stops", &["sleep", "60"]);
    let stopping = TaskController::spawn(stopped_task.clone(), runtime, tx);
    let mut finals = std::collections::BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while finals.len() < 2 {
        let update = tokio::time::timeout_at(deadline.into(), rx.recv())
            .await
            .unwrap()
            .unwrap();
        let status = update.status.unwrap();
        let state = TaskState::try_from(status.state).unwrap();
        if state == TaskState::Running && update.task_id == "stops" {
            assert!(status.pid > 0);
            stopped_task.desired_state = TaskState::Shutdown as i32;
            stopping.update(stopped_task.clone());
        }
        if state >= TaskState::Complete {
            finals.insert(update.task_id, status);
        }
    }
    let failed = &finals["fails"];
    assert_eq!(failed.state, TaskState::Failed as i32);
    assert_eq!(failed.exit_code, Some(3));
    assert_eq!(failed.err, "task: non-zero exit (3)");
    assert_eq!(finals["stops"].state, TaskState::Shutdown as i32);
}

#[tokio::test]
async fn the_shim_answers_its_socket_and_refuses_garbage() {
    // Goal: an operator (or a confused client) can talk to a shim without
    // harming the task. Method: raw lines on the control socket.
    use std::io::{BufRead, BufReader, Write};
    let fixture = Fixture::new("socket");
    let started = fixture
        .runtime
        .start(&task("talker", &["sleep", "60"]), &TaskInputs::default())
        .await
        .unwrap();
    let socket = fixture.runtime.task_dir("talker").join("shim.sock");
    let ask = |line: &str| {
        let mut stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        stream.write_all(line.as_bytes()).unwrap();
        let mut answer = String::new();
        BufReader::new(stream).read_line(&mut answer).unwrap();
        answer
    };
    assert_eq!(ask("status\n"), format!("running {}\n", started.pid));
    assert_eq!(ask("bogus request\n"), "error unknown request\n");
    assert_eq!(ask("signal 0\n"), "error unknown signal 0\n");
    assert_eq!(
        fixture.runtime.attach("talker").await.unwrap(),
        Attached::Running { pid: started.pid },
        "the task is untouched"
    );
    let exit = fixture
        .runtime
        .stop("talker", StopRequest::KILL)
        .await
        .unwrap();
    assert_eq!(exit, ExitStatus::Signal(9));
}
