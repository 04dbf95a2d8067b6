//! A harness for multi-process cluster tests: every node is a real
//! `rswarm daemon` process with its own data dir, run dir and port on
//! loopback, driven through the real `rswarm` CLI.
//!
//! Everything a cluster starts is killed when it is dropped, also when a
//! test panics. The `rswarm` binary is found next to the test binary
//! (`target/<profile>/rswarm`) or through `RSWARM_BIN`; build it first.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

pub mod linearizability;

/// The `rswarm` binary under test.
pub fn rswarm_bin() -> PathBuf {
    if let Ok(p) = std::env::var("RSWARM_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> → target/<profile>/rswarm
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("rswarm");
    assert!(
        bin.exists(),
        "{} not found: run 'cargo build -p rswarm' first (or set RSWARM_BIN)",
        bin.display()
    );
    bin
}

/// A free TCP port on 127.0.0.1 (bind to 0, read, close).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// One node: a daemon process and its directories.
pub struct Node {
    /// Its name (also its hostname).
    pub name: String,
    /// Its data dir.
    pub data_dir: PathBuf,
    /// Its run dir (socket).
    pub run_dir: PathBuf,
    /// Its cluster port on 127.0.0.1.
    pub port: u16,
    child: Option<Child>,
    log: PathBuf,
}

impl Node {
    fn new(root: &Path, name: &str) -> Self {
        let dir = root.join(name);
        Self {
            name: name.to_string(),
            data_dir: dir.join("data"),
            run_dir: dir.join("run"),
            port: free_port(),
            child: None,
            log: dir.join("daemon.log"),
        }
    }

    /// host:port other nodes reach it on.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Its socket, as an `RSWARM_HOST` value.
    pub fn host(&self) -> String {
        format!("unix://{}", self.run_dir.join("rswarm.sock").display())
    }

    /// Starts the daemon and waits for its socket.
    pub fn start(&mut self) -> Result<()> {
        std::fs::create_dir_all(&self.run_dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(rswarm_bin())
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
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start rswarm daemon")?;
        self.child = Some(child);
        wait_until(Duration::from_secs(20), || {
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

    /// Starts the daemon and expects it to refuse: returns its exit code and log.
    pub fn start_expecting_refusal(&mut self) -> Result<(i32, String)> {
        std::fs::create_dir_all(&self.run_dir)?;
        let out = Command::new(rswarm_bin())
            .args(["daemon", "--data-dir"])
            .arg(&self.data_dir)
            .arg("--run-dir")
            .arg(&self.run_dir)
            .args(["--listen-addr", &self.addr(), "--hostname", &self.name])
            .stdin(Stdio::null())
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
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
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

    /// This node's ID (empty when not in a cluster).
    pub fn node_id(&self) -> Result<String> {
        Ok(self.info()?.get("NodeID").cloned().unwrap_or_default())
    }
}

impl Node {
    /// Runs `f` with a control API client on the local socket: the CLI's
    /// tables carry no PIDs or exact timestamps, which some tests need.
    fn control<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnOnce(rswarm_proto::control_client::ControlClient<tonic::transport::Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let socket = self.run_dir.join("rswarm.sock");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let channel = rswarm_pki::unix_channel(socket);
            f(rswarm_proto::control_client::ControlClient::new(channel)).await
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
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
        }
    }
}

/// The children of process `parent`.
fn children(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let e = e.ok()?;
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
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
        .collect()
}

/// Every process as (pid, command line joined by spaces).
pub fn processes() -> Vec<(u32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let e = e.ok()?;
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let raw = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = raw
                .split(|b| *b == 0)
                .filter(|part| !part.is_empty())
                .map(|part| String::from_utf8_lossy(part).into_owned())
                .collect::<Vec<_>>()
                .join(" ");
            Some((pid, cmd))
        })
        .collect()
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9_with_tasks();
    }
}

/// Nodes of one test, under one temporary directory.
pub struct Cluster {
    /// The nodes, in creation order.
    pub nodes: Vec<Node>,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `n` daemons that are not part of any cluster yet.
    pub fn start(names: &[&str]) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("rswarm-it-").tempdir()?;
        let mut nodes: Vec<Node> = names.iter().map(|n| Node::new(dir.path(), n)).collect();
        for n in &mut nodes {
            n.start()?;
        }
        Ok(Self { nodes, dir })
    }

    /// A cluster of `managers` managers and `workers` workers, formed
    /// through `init` and `join` with tokens. Node names are m1.., w1...
    pub fn form(managers: usize, workers: usize) -> Result<Self> {
        let names: Vec<String> = (1..=managers)
            .map(|i| format!("m{i}"))
            .chain((1..=workers).map(|i| format!("w{i}")))
            .collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let c = Self::start(&refs)?;
        let first = &c.nodes[0];
        first.ok(&["init", "--advertise-addr", &first.addr()])?;
        let manager_token = first
            .ok(&["join-token", "-q", "manager"])?
            .trim()
            .to_string();
        let worker_token = first
            .ok(&["join-token", "-q", "worker"])?
            .trim()
            .to_string();
        for (i, n) in c.nodes.iter().enumerate().skip(1) {
            let token = if i < managers {
                &manager_token
            } else {
                &worker_token
            };
            n.ok(&[
                "join",
                "--token",
                token,
                "--advertise-addr",
                &n.addr(),
                &first.addr(),
            ])?;
        }
        c.wait_ready(managers + workers)?;
        Ok(c)
    }

    /// Starts a new daemon `name` and joins it to the cluster as a worker
    /// through `via`.
    pub fn join_worker(&mut self, name: &str, via: &str) -> Result<()> {
        let token = self.node(via).ok(&["join-token", "-q", "worker"])?;
        let manager = self.node(via).addr();
        let mut node = Node::new(self.dir.path(), name);
        node.start()?;
        node.ok(&[
            "join",
            "--token",
            token.trim(),
            "--advertise-addr",
            &node.addr(),
            &manager,
        ])?;
        self.nodes.push(node);
        Ok(())
    }

    /// The node named `name`.
    pub fn node(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .expect("no such node")
    }

    /// The node named `name`, mutably.
    pub fn node_mut(&mut self, name: &str) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.name == name)
            .expect("no such node")
    }

    /// The test's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `node ls --format json` through `via`.
    pub fn node_ls(&self, via: &str) -> Result<Vec<Value>> {
        let out = self.node(via).ok(&["node", "ls", "--format", "json"])?;
        out.lines()
            .map(|l| serde_json::from_str(l).context("bad json line"))
            .collect()
    }

    /// Waits until some manager lists `n` Ready nodes with exactly one Leader.
    pub fn wait_ready(&self, n: usize) -> Result<()> {
        let managers: Vec<String> = self
            .nodes
            .iter()
            .filter(|x| x.name.starts_with('m'))
            .map(|x| x.name.clone())
            .collect();
        wait_until(Duration::from_secs(60), || {
            for m in &managers {
                if let Ok(nodes) = self.node_ls(m) {
                    let ready = nodes.iter().filter(|v| v["Status"] == "Ready").count();
                    let leaders = nodes
                        .iter()
                        .filter(|v| v["ManagerStatus"] == "Leader")
                        .count();
                    if ready == n && nodes.len() == n && leaders == 1 {
                        return Ok(true);
                    }
                }
            }
            Ok(false)
        })
        .with_context(|| {
            format!(
                "cluster did not reach {n} Ready nodes with one leader\n{}",
                self.report()
            )
        })
    }

    /// What every node says and logged last, for failure messages.
    pub fn report(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            let ls = n.rswarm(&["node", "ls"]).map(|o| {
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )
            });
            out.push_str(&format!(
                "--- {} node ls:\n{}\n--- {} log:\n{}\n",
                n.name,
                ls.unwrap_or_default(),
                n.name,
                n.log_tail()
            ));
        }
        out
    }

    /// The name of the node that currently leads, asked through `via`.
    pub fn leader(&self, via: &str) -> Result<String> {
        let nodes = self.node_ls(via)?;
        let leader = nodes
            .iter()
            .find(|v| v["ManagerStatus"] == "Leader")
            .context("no leader listed")?;
        Ok(leader["Hostname"].as_str().unwrap_or_default().to_string())
    }
}

/// Polls `f` every 100 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last_err = None;
    while Instant::now() < deadline {
        match f() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last_err = Some(e),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    match last_err {
        Some(e) => Err(e.context(format!("timed out after {timeout:?}"))),
        None => bail!("timed out after {timeout:?}"),
    }
}

/// Prints the median, minimum and maximum of benchmark trials (none: nothing).
pub fn print_median(samples: &mut [Duration]) {
    samples.sort();
    let (Some(min), Some(max)) = (samples.first(), samples.last()) else {
        return;
    };
    println!(
        "median {} ms over {} trials (min {} ms, max {} ms)",
        samples[samples.len() / 2].as_millis(),
        samples.len(),
        min.as_millis(),
        max.as_millis()
    );
}
