//! One node: a `rswarm daemon` process, its data dir and run dir, and the
//! process faults a test injects into it (kill -9, with or without its
//! tasks; SIGSTOP/SIGCONT; restart from its data dir).
//!
//! A node listens either on 127.0.0.1 with a port of its own (loopback) or
//! on its host's underlay address (a network namespace, see
//! [`crate::hosts`]). Either way the CLI reaches it from the test process
//! through the unix socket in its run dir.
//!
//! Invariant: the daemon is a child of this process that the kernel kills
//! when the test process ends (`spawn`); dropping a node kills the daemon,
//! its task shims and their tasks.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::run::{kill9, signal};
use crate::spawn::{spawn_tied, tied_command};
use crate::{rswarm_bin, wait_until};

/// Where under its data dir a node's `oci` driver keeps runc's state
/// (`runc --root`).
pub const RUNC_ROOT: &str = "worker/runc";

/// How long a started daemon has to answer on its socket.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long the kernel has to show a SIGSTOP or SIGCONT in the process
/// state: delivery is asynchronous, and a machine under load is slow.
const SIGNAL_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a SIGTERM'd daemon has to exit before it gets SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Bound on one control API call from the test: above the manager's own 5 s
/// request bound, so a live manager answers first and says why; a paused
/// daemon, which accepts connections but never answers, fails the call
/// instead of hanging the test.
pub const CONTROL_CALL_TIMEOUT: Duration = Duration::from_secs(8);

/// One node: a daemon process and its directories.
pub struct Node {
    /// Its name (also its hostname).
    pub name: String,
    /// Its data dir.
    pub data_dir: PathBuf,
    /// Its run dir (socket).
    pub run_dir: PathBuf,
    /// The address it listens on and advertises.
    listen_addr: SocketAddr,
    /// The network namespace its daemon runs in; none on loopback.
    netns: Option<PathBuf>,
    child: Option<Child>,
    log: PathBuf,
    /// More `rswarm daemon` flags (e.g. `--insecure-registry`), from the
    /// next start on.
    daemon_args: Vec<String>,
}

impl Node {
    /// A node on loopback: 127.0.0.1 with a free port.
    pub(crate) fn on_loopback(root: &Path, name: &str) -> Self {
        let addr = SocketAddr::from(([127, 0, 0, 1], crate::free_port()));
        Self::new(root, name, addr, None)
    }

    /// A node on host `host`: its underlay address, the default port.
    pub(crate) fn on_host(root: &Path, host: &crate::Host) -> Self {
        let addr = SocketAddr::from((host.ip(), crate::hosts::CLUSTER_PORT));
        Self::new(root, host.name(), addr, Some(host.netns_path()))
    }

    fn new(root: &Path, name: &str, listen_addr: SocketAddr, netns: Option<PathBuf>) -> Self {
        let dir = root.join(name);
        Self {
            name: name.to_string(),
            data_dir: dir.join("data"),
            run_dir: dir.join("run"),
            listen_addr,
            netns,
            child: None,
            log: dir.join("daemon.log"),
            daemon_args: Vec::new(),
        }
    }

    /// host:port other nodes reach it on.
    pub fn addr(&self) -> String {
        self.listen_addr.to_string()
    }

    /// The IP other nodes reach it on: its host's underlay address, or
    /// 127.0.0.1 on loopback.
    pub fn ip(&self) -> std::net::IpAddr {
        self.listen_addr.ip()
    }

    /// Its socket, as an `RSWARM_HOST` value.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// The path of its local API socket.
    pub fn socket(&self) -> PathBuf {
        self.run_dir.join("rswarm.sock")
    }

    /// The network namespace its daemon runs in (none on loopback).
    pub fn netns(&self) -> Option<&Path> {
        self.netns.as_deref()
    }

    /// The `rswarm daemon` command for this node, in its namespace.
    fn daemon_command(&self) -> Command {
        let mut command = tied_command(self.netns.as_deref(), &rswarm_bin());
        command
            .args(["daemon", "--data-dir"])
            .arg(&self.data_dir)
            .arg("--run-dir")
            .arg(&self.run_dir)
            .args([
                "--listen-addr",
                &self.addr(),
                "--hostname",
                &self.name,
                "--log-level",
                "info,openraft=warn",
            ])
            .args(&self.daemon_args)
            .stdin(Stdio::null());
        command
    }

    /// Starts the daemon and waits for its socket. After a kill, this is a
    /// restart from the data dir.
    pub fn start(&mut self) -> Result<()> {
        std::fs::create_dir_all(&self.run_dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut command = self.daemon_command();
        command.stdout(log.try_clone()?).stderr(log);
        self.child = Some(spawn_tied(command).context("cannot start rswarm daemon")?);
        wait_until(START_TIMEOUT, || {
            Ok(self
                .rswarm(&["info"])
                .map(|o| o.status.success())
                .unwrap_or(false))
        })
        .with_context(|| {
            format!(
                "daemon {} did not come up; log:\n{}",
                self.name,
                self.log_tail()
            )
        })
    }

    /// Adds `rswarm daemon` flags, used from the next (re)start on.
    pub fn add_daemon_args(&mut self, args: &[&str]) {
        self.daemon_args
            .extend(args.iter().map(|a| (*a).to_string()));
    }

    /// Kills the daemon (if it runs) and starts it again from its data dir.
    pub fn restart(&mut self) -> Result<()> {
        self.kill9();
        self.start()
    }

    /// Starts the daemon and expects it to refuse: returns its exit code and log.
    pub fn start_expecting_refusal(&mut self) -> Result<(i32, String)> {
        std::fs::create_dir_all(&self.run_dir)?;
        let out = self
            .daemon_command()
            .output()
            .context("cannot start rswarm daemon")?;
        if out.status.success() {
            bail!(
                "daemon {} started and exited cleanly instead of refusing",
                self.name
            );
        }
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// SIGKILL, no cleanup: the crash a node must survive.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait: a clean stop.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), rustix::process::Signal::TERM);
            // A paused daemon only sees the SIGTERM once it runs again.
            signal(c.id(), rustix::process::Signal::CONT);
            let deadline = Instant::now() + STOP_TIMEOUT;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP: the daemon freezes (a stalled host or a long GC pause);
    /// its tasks keep running. Connections stay open and time out. Returns
    /// once the kernel shows the process stopped.
    pub fn pause(&self) -> Result<()> {
        let pid = self.pid().context("the daemon is not running")?;
        signal(pid, rustix::process::Signal::STOP);
        wait_until(SIGNAL_TIMEOUT, || Ok(is_stopped(pid)))
            .with_context(|| format!("daemon {} did not stop on SIGSTOP", self.name))
    }

    /// SIGCONT: a paused daemon runs again. Returns once the kernel shows
    /// the process no longer stopped.
    pub fn resume(&self) -> Result<()> {
        let pid = self.pid().context("the daemon is not running")?;
        signal(pid, rustix::process::Signal::CONT);
        wait_until(SIGNAL_TIMEOUT, || Ok(!is_stopped(pid)))
            .with_context(|| format!("daemon {} did not resume on SIGCONT", self.name))
    }

    /// Whether the daemon is paused (stopped by a signal).
    pub fn is_paused(&self) -> bool {
        self.pid().is_some_and(is_stopped)
    }

    /// The daemon's process ID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the daemon process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Runs `rswarm ARGS` against this node.
    pub fn rswarm(&self, args: &[&str]) -> Result<Output> {
        Command::new(rswarm_bin())
            .args(args)
            .env("RSWARM_HOST", self.host())
            .stdin(Stdio::null())
            .output()
            .context("cannot run rswarm")
    }

    /// Runs `rswarm ARGS` against this node, killing the CLI if it has not
    /// finished within `timeout`: a paused daemon accepts connections on its
    /// socket but never answers, and a failure report must not hang on it.
    pub fn rswarm_within(&self, args: &[&str], timeout: Duration) -> Result<Output> {
        let mut child = Command::new(rswarm_bin())
            .args(args)
            .env("RSWARM_HOST", self.host())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run rswarm")?;
        // Drain the pipes while waiting, so a large answer cannot block it.
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "'rswarm {}' on {} did not finish within {timeout:?}",
                    args.join(" "),
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Ok(Output {
            status,
            stdout: stdout.join().unwrap_or_default(),
            stderr: stderr.join().unwrap_or_default(),
        })
    }

    /// Runs `rswarm ARGS` and returns stdout; fails with stderr on error.
    pub fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self.rswarm(args)?;
        if !out.status.success() {
            bail!(
                "'rswarm {}' on {} failed ({}): {}",
                args.join(" "),
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `rswarm ARGS`, expects failure, and returns (exit code, stderr).
    pub fn fails(&self, args: &[&str]) -> Result<(i32, String)> {
        let out = self.rswarm(args)?;
        if out.status.success() {
            bail!(
                "'rswarm {}' on {} succeeded but should have failed: {}",
                args.join(" "),
                self.name,
                String::from_utf8_lossy(&out.stdout)
            );
        }
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// The daemon's log file (stdout and stderr of every start).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last lines of the daemon's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// `rswarm info` fields as key → value (first occurrence).
    pub fn info(&self) -> Result<std::collections::BTreeMap<String, String>> {
        let out = self.ok(&["info"])?;
        Ok(out
            .lines()
            .filter_map(|l| {
                l.trim()
                    .split_once(": ")
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect())
    }

    /// The daemon's own `info` through the local node API (no manager
    /// involved, so it answers without a leader), within
    /// [`CONTROL_CALL_TIMEOUT`].
    pub fn local_info(&self) -> Result<rswarm_proto::InfoResponse> {
        self.on_socket(|channel| async move {
            let mut client = rswarm_proto::local_node_client::LocalNodeClient::new(channel);
            match client.info(rswarm_proto::InfoRequest {}).await {
                Ok(resp) => Ok(resp.into_inner()),
                Err(s) => bail!("info on {}: {}", self.name, s.message()),
            }
        })
    }

    /// This node's ID (empty when not in a cluster).
    pub fn node_id(&self) -> Result<String> {
        Ok(self.info()?.get("NodeID").cloned().unwrap_or_default())
    }
}

impl Node {
    /// Runs `f` with a control API client on the local socket: the CLI's
    /// tables carry no PIDs or exact timestamps, which some tests need.
    /// Fails after [`CONTROL_CALL_TIMEOUT`].
    fn control<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnOnce(rswarm_proto::control_client::ControlClient<tonic::transport::Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        self.on_socket(|channel| f(rswarm_proto::control_client::ControlClient::new(channel)))
    }

    /// Runs `f` with a channel to the local socket, on a runtime of its
    /// own, within [`CONTROL_CALL_TIMEOUT`].
    fn on_socket<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnOnce(tonic::transport::Channel) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let socket = self.socket();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let call = f(rswarm_pki::unix_channel(socket));
            match tokio::time::timeout(CONTROL_CALL_TIMEOUT, call).await {
                Ok(result) => result,
                Err(_) => bail!(
                    "{} did not answer within {CONTROL_CALL_TIMEOUT:?}",
                    self.name
                ),
            }
        })
    }

    /// Every node as the leader lists it, through the control API: each
    /// with its manager status ("Leader", "Reachable", "Unreachable" or "").
    pub fn node_views(&self) -> Result<Vec<rswarm_proto::NodeView>> {
        self.control(|mut client| async move {
            Ok(client
                .list_nodes(rswarm_proto::ListNodesRequest::default())
                .await
                .map_err(|s| anyhow::anyhow!("list nodes: {}", s.message()))?
                .into_inner()
                .nodes)
        })
    }

    /// A service object (by name or ID) through the control API.
    pub fn service(&self, reference: &str) -> Result<rswarm_proto::Service> {
        self.control(|mut client| async move {
            client
                .get_service(rswarm_proto::GetServiceRequest {
                    reference: reference.to_owned(),
                })
                .await
                .map_err(|s| anyhow::anyhow!("get service: {}", s.message()))?
                .into_inner()
                .service
                .and_then(|v| v.service)
                .context("no service in the answer")
        })
    }

    /// Full task objects through the control API (`service` empty: every
    /// task).
    pub fn tasks(&self, service: &str) -> Result<Vec<rswarm_proto::Task>> {
        self.control(|mut client| async move {
            let tasks = client
                .list_tasks(rswarm_proto::ListTasksRequest {
                    service: service.to_owned(),
                    ..Default::default()
                })
                .await
                .map_err(|s| anyhow::anyhow!("list tasks: {}", s.message()))?
                .into_inner()
                .tasks;
            Ok(tasks)
        })
    }

    /// PIDs of the task shims this node's daemon started (they name their
    /// task directory, which lies under the node's data dir).
    pub fn shim_pids(&self) -> Vec<u32> {
        let data_dir = self.data_dir.display().to_string();
        processes()
            .into_iter()
            .filter(|(_, cmd)| cmd.contains(" shim ") && cmd.contains(&data_dir))
            .map(|(pid, _)| pid)
            .collect()
    }

    /// Kills the daemon, the task shims and their tasks (each task leads
    /// its own process group, a child of its shim): a host that died.
    pub fn kill9_with_tasks(&mut self) {
        self.kill9();
        let shims = self.shim_pids();
        let mut groups: Vec<u32> = shims.clone();
        groups.extend(shims.iter().flat_map(|shim| children(*shim)));
        for pid in groups {
            if let Some(group) = i32::try_from(pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw)
            {
                let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
            }
            kill9(pid);
        }
    }
}

/// A thread that reads `pipe` to its end.
fn drain(pipe: Option<impl std::io::Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut out);
        }
        out
    })
}

/// Whether process `pid` is stopped by a signal (state `T` in its stat).
fn is_stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
    })
}

/// The children of process `parent`.
fn children(parent: u32) -> Vec<u32> {
    each_process(|pid, dir| {
        let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
        // "pid (comm) state ppid ...": comm may hold spaces, so split after ')'.
        let ppid: u32 = stat
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        (ppid == parent).then_some(pid)
    })
}

/// `look(pid, /proc/<pid>)` for every process, keeping what it returns;
/// a process that ends meanwhile is skipped.
pub(crate) fn each_process<T>(mut look: impl FnMut(u32, &Path) -> Option<T>) -> Vec<T> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let e = e.ok()?;
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            look(pid, &e.path())
        })
        .collect()
}

/// A "Key:   N kB" line of `/proc/<pid><file>` (`/status`,
/// `/smaps_rollup`), in KiB: what the memory benchmarks read.
pub fn proc_kib(pid: u32, file: &str, key: &str) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}{file}"))?;
    let line = text
        .lines()
        .find(|l| l.starts_with(key))
        .with_context(|| format!("no {key} in /proc/{pid}{file}"))?;
    line.split_whitespace()
        .nth(1)
        .context("no value")?
        .parse()
        .context("not a number")
}

/// Every process as (pid, command line joined by spaces).
pub fn processes() -> Vec<(u32, String)> {
    each_process(|pid, dir| {
        let raw = std::fs::read(dir.join("cmdline")).ok()?;
        let cmd = raw
            .split(|b| *b == 0)
            .filter(|part| !part.is_empty())
            .map(|part| String::from_utf8_lossy(part).into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        Some((pid, cmd))
    })
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9_with_tasks();
        self.delete_containers();
    }
}

impl Node {
    /// Deletes what runc still records of the node's containers, whose
    /// processes are dead by now: a killed daemon never runs `runc delete`,
    /// and the containers' cgroups lie outside the run's directories.
    fn delete_containers(&self) {
        let root = self.data_dir.join(RUNC_ROOT);
        if !root.is_dir() {
            return;
        }
        let runc = || {
            let mut command = Command::new(runc_bin());
            command.arg("--root").arg(&root).stderr(Stdio::null());
            command
        };
        let Ok(listed) = runc().args(["list", "-q"]).output() else {
            return;
        };
        for id in String::from_utf8_lossy(&listed.stdout).lines() {
            let _ = runc().args(["delete", "--force", id]).status();
        }
    }
}

/// runc as the `oci` driver finds it: Debian's, else on `PATH`.
pub fn runc_bin() -> PathBuf {
    let debian = PathBuf::from("/usr/sbin/runc");
    if debian.exists() {
        debian
    } else {
        PathBuf::from("runc")
    }
}
