//! The benchmarks on a real node: one daemon after `init` (it manages and
//! runs tasks), the busybox test image loaded with `rswarm image load` and
//! named by digest (`bb:bench@sha256:…`, what the manager pins a tag to),
//! so that starting a task needs no registry.
//!
//! Times come from the task status timestamps the store holds, watched
//! through the control API: ASSIGNED is stamped by the manager's scheduler,
//! ACCEPTED and RUNNING by the agent (one machine, one clock).
//!
//! Cleanup: the service is removed and its shims awaited; then any mount
//! and runc container left under the cluster's directory is removed before
//! the cluster (daemon, directories) is dropped.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow};
use rswarm_integration::images::{busybox, write_oci_layout};
use rswarm_integration::{Cluster, wait_until};
use rswarm_proto::{TaskState, WatchRequest, control_client::ControlClient, object};

use crate::memory;
use crate::stats::summary;

/// Longest wait for one task to run in `latency`: a start takes well under
/// a second; this only bounds a broken run.
const ONE_START_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for all tasks of `many` to run.
const ALL_START_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest wait for removed tasks' shims to exit (a SIGKILL stop).
const REMOVAL_TIMEOUT: Duration = Duration::from_secs(120);
/// Pause before reading memory, so the shims and the daemon settle.
const SETTLE: Duration = Duration::from_secs(3);

/// `n` tasks started one after another, ASSIGNED → RUNNING each.
pub fn latency(n: usize) -> Result<()> {
    let node = BenchNode::start()?;
    let result = node.latency(n);
    node.clean_up("lat");
    result
}

/// `service create --replicas n`: time to all RUNNING, then memory.
pub fn many(n: usize) -> Result<()> {
    let node = BenchNode::start()?;
    let result = node.many(n);
    node.clean_up("many");
    result
}

/// One daemon with the image loaded, and a watch of its task statuses.
struct BenchNode {
    cluster: Cluster,
    image: String,
    clock: StatusClock,
}

impl BenchNode {
    fn start() -> Result<Self> {
        let cluster = Cluster::form(1, 0)?;
        let test_image = busybox("bench")?;
        let archive = cluster.dir().join("bb.tar");
        write_oci_layout(&test_image, "bb:bench", &archive).map_err(|e| anyhow!("{e}"))?;
        let m1 = cluster.node("m1");
        m1.ok(&["image", "load", "-i", archive.to_str().context("path")?])?;
        let clock = StatusClock::watch(&m1.socket())?;
        Ok(Self {
            image: format!("bb:bench@{}", test_image.manifest_digest),
            cluster,
            clock,
        })
    }

    fn create(&self, name: &str, replicas: usize) -> Result<()> {
        self.cluster.node("m1").ok(&[
            "service",
            "create",
            "-d",
            "--name",
            name,
            "--no-resolve-image",
            // The cleanup should not wait out `sleep`'s ignored SIGTERM.
            "--stop-signal",
            "SIGKILL",
            "--replicas",
            &replicas.to_string(),
            &self.image,
            "sleep",
            "86400",
        ])?;
        Ok(())
    }

    fn service_id(&self, name: &str) -> Result<String> {
        let service = self.cluster.node("m1").service(name)?;
        Ok(service.meta.map(|m| m.id).unwrap_or_default())
    }

    fn latency(&self, n: usize) -> Result<()> {
        let (mut assigned, mut accepted, mut requested) = (vec![], vec![], vec![]);
        // Tasks already measured: each step starts exactly one new task.
        let mut counted = std::collections::HashSet::new();
        for k in 1..=n {
            let asked_ms = now_ms();
            if k == 1 {
                self.create("lat", 1)?;
            } else {
                self.cluster.node("m1").ok(&[
                    "service",
                    "update",
                    "-d",
                    "--replicas",
                    &k.to_string(),
                    "lat",
                ])?;
            }
            let service_id = self.service_id("lat")?;
            wait_until(ONE_START_TIMEOUT, || {
                Ok(self.clock.running(&service_id).len() >= k)
            })
            .with_context(|| format!("task {k} did not run"))?;
            let newest = self
                .clock
                .running(&service_id)
                .into_iter()
                .find(|t| counted.insert(t.task_id.clone()))
                .context("no newly running task")?;
            let running = newest.running_ms.context("no RUNNING time")?;
            let since = |from: Option<i64>| from.map(|f| ms_duration(running - f));
            assigned.extend(since(newest.assigned_ms));
            accepted.extend(since(newest.accepted_ms));
            requested.push(ms_duration(running - asked_ms));
        }
        summary(
            "cluster: ASSIGNED -> RUNNING (status timestamps)",
            &mut assigned,
        );
        if accepted.is_empty() {
            println!(
                "cluster: ACCEPTED -> RUNNING: not measurable, the store kept no ACCEPTED status"
            );
        } else {
            summary(
                "cluster: ACCEPTED -> RUNNING (the agent's part)",
                &mut accepted,
            );
        }
        summary("cluster: CLI update sent -> RUNNING", &mut requested);
        Ok(())
    }

    fn many(&self, n: usize) -> Result<()> {
        let m1 = self.cluster.node("m1");
        let daemon = m1.pid().context("the daemon is not running")?;
        let idle_kib = rswarm_integration::proc_kib(daemon, "/status", "VmRSS:")?;
        let started = Instant::now();
        let asked_ms = now_ms();
        self.create("many", n)?;
        let service_id = self.service_id("many")?;
        wait_until(ALL_START_TIMEOUT, || {
            Ok(self.clock.running(&service_id).len() >= n)
        })
        .context("not every task ran")?;
        let seen = started.elapsed();
        let running = self.clock.running(&service_id);
        let last_ms = running
            .iter()
            .filter_map(|t| t.running_ms)
            .max()
            .unwrap_or(asked_ms);
        let first_assigned = running.iter().filter_map(|t| t.assigned_ms).min();
        println!(
            "{n} containers: create sent -> last RUNNING {} ms (seen by polling after {} ms); \
             first ASSIGNED -> last RUNNING {} ms",
            last_ms - asked_ms,
            seen.as_millis(),
            first_assigned.map_or(-1, |a| last_ms - a),
        );
        std::thread::sleep(SETTLE);
        let busy_kib = rswarm_integration::proc_kib(daemon, "/status", "VmRSS:")?;
        println!("daemon RSS: {idle_kib} KiB before, {busy_kib} KiB with {n} containers");
        memory::report_shims(&m1.shim_pids(), n)
    }

    /// Removes the service, waits for its shims to go, then sweeps what is
    /// left under the cluster's directory. Failures are printed: the
    /// benchmark's result stands, the sweep still runs.
    fn clean_up(&self, service: &str) {
        let m1 = self.cluster.node("m1");
        if let Err(e) = m1.ok(&["service", "rm", service]) {
            eprintln!("cleanup: service rm {service}: {e}");
        }
        if let Err(e) = wait_until(REMOVAL_TIMEOUT, || Ok(m1.shim_pids().is_empty())) {
            eprintln!("cleanup: shims still running: {e}");
        }
        // The agent unmounts a task's root when the manager deletes the task.
        if let Err(e) = wait_until(REMOVAL_TIMEOUT, || {
            Ok(mounts_under(self.cluster.dir()).is_empty())
        }) {
            eprintln!("cleanup: container roots still mounted: {e}");
        }
        sweep(self.cluster.dir());
    }
}

/// Deletes runc containers and undoes mounts left under `dir` (a run that
/// failed half-way): nothing may outlive the cluster's directory.
fn sweep(dir: &Path) {
    let runc = rswarm_agent::runtime::oci::detect_runc().ok();
    for root in find_dirs_named(dir, "runc", 6) {
        let Some(runc) = &runc else { break };
        let listed = std::process::Command::new(runc)
            .arg("--root")
            .arg(&root)
            .args(["list", "-q"])
            .output();
        for id in listed
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
            .lines()
        {
            eprintln!("cleanup: deleting leftover container {id}");
            let _ = std::process::Command::new(runc)
                .arg("--root")
                .arg(&root)
                .args(["delete", "--force", id.trim()])
                .status();
        }
    }
    let mut mounts = mounts_under(dir);
    // Deepest first, so no mount hides another.
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for mount in mounts {
        eprintln!("cleanup: unmounting leftover {mount}");
        let _ = rustix::mount::unmount(mount.as_str(), rustix::mount::UnmountFlags::DETACH);
    }
}

/// Mount points under `dir`.
fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
        .filter(|m| m.starts_with(&prefix))
        .collect()
}

fn find_dirs_named(dir: &Path, name: &str, depth: usize) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if entry.file_name() == name {
            found.push(path);
        } else if depth > 0 {
            found.extend(find_dirs_named(&path, name, depth - 1));
        }
    }
    found
}

/// When a task first reached each state, by the status timestamps.
#[derive(Debug, Clone, Default)]
struct TaskTimes {
    task_id: String,
    service_id: String,
    assigned_ms: Option<i64>,
    accepted_ms: Option<i64>,
    running_ms: Option<i64>,
}

/// The control API's watch of task changes, on a thread of its own.
struct StatusClock {
    times: Arc<Mutex<HashMap<String, TaskTimes>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StatusClock {
    /// Watches from now on; returns once the watch is established.
    fn watch(socket: &Path) -> Result<Self> {
        let times = Arc::new(Mutex::new(HashMap::new()));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let channel_path = socket.to_path_buf();
        let recorded = Arc::clone(&times);
        let thread = std::thread::spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    let _ = ready_tx.send(Err(anyhow!("runtime: {e}")));
                    return;
                }
            };
            runtime.block_on(async move {
                let mut client = ControlClient::new(rswarm_pki::unix_channel(channel_path));
                let stream = client.watch(WatchRequest { since_version: 0 }).await;
                let mut stream = match stream {
                    Ok(s) => s.into_inner(),
                    Err(e) => {
                        let _ = ready_tx.send(Err(anyhow!("watch: {}", e.message())));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                tokio::select! {
                    _ = stopped => {}
                    _ = async {
                        while let Ok(Some(event)) = stream.message().await {
                            if let Some(object::Kind::Task(task)) =
                                event.object.and_then(|o| o.kind)
                            {
                                record(&recorded, &task);
                            }
                        }
                    } => {}
                }
            });
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| anyhow!("the watch did not start"))??;
        Ok(Self {
            times,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The tasks of `service_id` that reached RUNNING.
    fn running(&self, service_id: &str) -> Vec<TaskTimes> {
        lock(&self.times)
            .values()
            .filter(|t| t.service_id == service_id && t.running_ms.is_some())
            .cloned()
            .collect()
    }
}

impl Drop for StatusClock {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn record(times: &Mutex<HashMap<String, TaskTimes>>, task: &rswarm_proto::Task) {
    let (Some(meta), Some(status)) = (&task.meta, &task.status) else {
        return;
    };
    let mut times = lock(times);
    let entry = times.entry(meta.id.clone()).or_insert_with(|| TaskTimes {
        task_id: meta.id.clone(),
        ..TaskTimes::default()
    });
    entry.service_id.clone_from(&task.service_id);
    let at = Some(status.timestamp_ms);
    match TaskState::try_from(status.state) {
        Ok(TaskState::Assigned) => entry.assigned_ms = entry.assigned_ms.or(at),
        Ok(TaskState::Accepted) => entry.accepted_ms = entry.accepted_ms.or(at),
        Ok(TaskState::Running) => entry.running_ms = entry.running_ms.or(at),
        _ => {}
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A non-negative millisecond difference as a duration (clock steps: 0).
fn ms_duration(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}
