//! The nodes of one test, formed into a cluster with join tokens exactly as
//! on separate machines, on one of two layouts:
//! - loopback (`form`, `start`): every node on 127.0.0.1 with a port of its
//!   own. Cheap; enough when no test looks at addresses or the network.
//! - hosts (`form_on_hosts`, `start_on_hosts`): every node on its own
//!   [`Host`](crate::Host), a network namespace with its own underlay
//!   address, all on port 7377. Nodes show distinct addresses, and the
//!   network between them can be partitioned, made lossy or cut
//!   ([`Cluster::hosts`]).
//!
//! Node names say the role: `m1..` managers, `w1..` workers.
//!
//! Invariant: dropping the cluster removes everything it made — daemons,
//! task shims and tasks, namespaces and links, directories — also when a
//! test panics; see `run` for interrupts and killed runs.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::images::{Registry, registry_on_host};
use crate::run::{RunId, remove_run};
use crate::{Hosts, Node, wait_until};

/// The name of the host [`Cluster::form_on_hosts_with_registry`] runs its
/// registry on.
pub const REGISTRY_HOST: &str = "registry";

/// How long a new cluster has to show every node Ready with one leader.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a failure report waits for each node's `node ls`: a paused or
/// leaderless node must not hang the report (a manager gives up on a call
/// after 5 s).
const REPORT_CALL_TIMEOUT: Duration = Duration::from_secs(7);

/// Nodes of one test, under one temporary directory.
pub struct Cluster {
    /// The nodes, in creation order.
    pub nodes: Vec<Node>,
    /// The hosts the nodes run on; none on loopback.
    hosts: Option<Hosts>,
    dir: tempfile::TempDir,
    run: Arc<RunId>,
}

impl Cluster {
    /// Starts daemons on loopback that are not part of any cluster yet.
    pub fn start(names: &[&str]) -> Result<Self> {
        let run = Arc::new(RunId::new());
        let dir = run.tempdir()?;
        let nodes = names
            .iter()
            .map(|n| Node::on_loopback(dir.path(), n))
            .collect();
        Self::launch(run, dir, nodes, None)
    }

    /// Starts daemons on hosts of their own (one network namespace per
    /// node) that are not part of any cluster yet.
    pub fn start_on_hosts(names: &[&str]) -> Result<Self> {
        let run = Arc::new(RunId::new());
        let dir = run.tempdir()?;
        let hosts = Hosts::create(Arc::clone(&run), names)?;
        let nodes = hosts
            .all()
            .iter()
            .map(|h| Node::on_host(dir.path(), h))
            .collect();
        Self::launch(run, dir, nodes, Some(hosts))
    }

    fn launch(
        run: Arc<RunId>,
        dir: tempfile::TempDir,
        nodes: Vec<Node>,
        hosts: Option<Hosts>,
    ) -> Result<Self> {
        let mut c = Self {
            nodes,
            hosts,
            dir,
            run,
        };
        for n in &mut c.nodes {
            n.start()?;
        }
        Ok(c)
    }

    /// A cluster of `managers` managers and `workers` workers on loopback,
    /// formed through `init` and `join` with tokens. Node names are m1..,
    /// w1...
    pub fn form(managers: usize, workers: usize) -> Result<Self> {
        Self::start(&Self::names(managers, workers).each_ref())?.formed(managers, workers)
    }

    /// As [`Cluster::form`], with every node on a host of its own.
    pub fn form_on_hosts(managers: usize, workers: usize) -> Result<Self> {
        Self::start_on_hosts(&Self::names(managers, workers).each_ref())?.formed(managers, workers)
    }

    /// As [`Cluster::form_on_hosts`], plus a host [`REGISTRY_HOST`] of its
    /// own (no daemon) running an empty registry that every daemon reaches
    /// over plain HTTP (started with `--insecure-registry`), as real hosts
    /// reach a private registry.
    pub fn form_on_hosts_with_registry(
        managers: usize,
        workers: usize,
    ) -> Result<(Self, Registry)> {
        let run = Arc::new(RunId::new());
        let dir = run.tempdir()?;
        let names = Self::names(managers, workers);
        let mut hosts = Hosts::create(Arc::clone(&run), &names.each_ref())?;
        let registry = registry_on_host(hosts.add(REGISTRY_HOST)?)?;
        let insecure = registry.host();
        let nodes = hosts
            .all()
            .iter()
            .filter(|h| h.name() != REGISTRY_HOST)
            .map(|h| {
                let mut node = Node::on_host(dir.path(), h);
                node.add_daemon_args(&["--insecure-registry", &insecure]);
                node
            })
            .collect();
        let cluster = Self::launch(run, dir, nodes, Some(hosts))?.formed(managers, workers)?;
        Ok((cluster, registry))
    }

    fn names(managers: usize, workers: usize) -> Names {
        Names(
            (1..=managers)
                .map(|i| format!("m{i}"))
                .chain((1..=workers).map(|i| format!("w{i}")))
                .collect(),
        )
    }

    /// Inits the first node and joins the others: the first `managers` as
    /// managers, the rest as workers; waits until all are Ready.
    fn formed(self, managers: usize, workers: usize) -> Result<Self> {
        let first = self.nodes.first().context("a cluster needs a node")?;
        first.ok(&["init", "--advertise-addr", &first.addr()])?;
        let manager_token = first
            .ok(&["join-token", "-q", "manager"])?
            .trim()
            .to_string();
        let worker_token = first
            .ok(&["join-token", "-q", "worker"])?
            .trim()
            .to_string();
        for (i, n) in self.nodes.iter().enumerate().skip(1) {
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
        self.wait_ready(managers + workers)?;
        Ok(self)
    }

    /// Starts a new daemon `name` (on a new host when the cluster runs on
    /// hosts) and joins it to the cluster as a worker through `via`.
    pub fn join_worker(&mut self, name: &str, via: &str) -> Result<()> {
        let token = self.node(via).ok(&["join-token", "-q", "worker"])?;
        let manager = self.node(via).addr();
        let mut node = match &mut self.hosts {
            Some(hosts) => Node::on_host(self.dir.path(), hosts.add(name)?),
            None => Node::on_loopback(self.dir.path(), name),
        };
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

    /// The hosts the nodes run on, to inject network faults (host names are
    /// node names). Fails on a loopback cluster.
    pub fn hosts(&self) -> Result<&Hosts> {
        match &self.hosts {
            Some(hosts) => Ok(hosts),
            None => bail!(
                "this cluster runs on loopback, which has no network to break: \
                 build it with Cluster::form_on_hosts"
            ),
        }
    }

    /// The hosts, to add one (a registry host, say) to the same fabric.
    pub fn hosts_mut(&mut self) -> Result<&mut Hosts> {
        self.hosts
            .as_mut()
            .context("this cluster runs on loopback: build it with Cluster::start_on_hosts")
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

    /// The names of the managers (nodes named m…), in creation order.
    pub fn manager_names(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|x| x.name.starts_with('m'))
            .map(|x| x.name.clone())
            .collect()
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

    /// `node inspect NODE` through `via`, the first (only) document.
    pub fn node_inspect(&self, via: &str, node: &str) -> Result<Value> {
        let out = self.node(via).ok(&["node", "inspect", node])?;
        let mut docs: Value = serde_json::from_str(&out).context("bad inspect json")?;
        Ok(docs[0].take())
    }

    /// Waits until some manager lists `n` Ready nodes with exactly one Leader.
    pub fn wait_ready(&self, n: usize) -> Result<()> {
        let managers = self.manager_names();
        wait_until(READY_TIMEOUT, || {
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

    /// What every node says and logged last, and the network faults in
    /// force, for failure messages.
    pub fn report(&self) -> String {
        let mut out = String::new();
        if let Some(hosts) = &self.hosts {
            out.push_str(&format!("--- network: {}\n", hosts.describe_faults()));
        }
        for n in &self.nodes {
            let ls = n
                .rswarm_within(&["node", "ls"], REPORT_CALL_TIMEOUT)
                .map(|o| {
                    format!(
                        "{}{}",
                        String::from_utf8_lossy(&o.stdout),
                        String::from_utf8_lossy(&o.stderr)
                    )
                });
            out.push_str(&format!(
                "--- {} node ls:\n{}\n--- {} log:\n{}\n",
                n.name,
                ls.unwrap_or_else(|e| format!("{e:#}")),
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

impl Drop for Cluster {
    fn drop(&mut self) {
        // Daemons and tasks first, then their namespaces, then whatever a
        // task left behind that names the run.
        self.nodes.clear();
        self.hosts = None;
        remove_run(self.run.prefix());
    }
}

/// Owned node names, lent as `&str`s.
struct Names(Vec<String>);

impl Names {
    fn each_ref(&self) -> Vec<&str> {
        self.0.iter().map(String::as_str).collect()
    }
}
