//! `rswarm bench dispatch`: the dispatcher and the agents' side of the task
//! protocol at scale, in this process. It starts real managers (Raft on disk,
//! mutual TLS on loopback) and simulated nodes (`rswarm_agent::sim`), writes
//! tasks already ASSIGNED to the nodes through Raft — standing in for the
//! orchestrator and the scheduler — and times how long until every task is
//! RUNNING in the store: the Assignments fan-out, the nodes' reports and the
//! batched status writes, end to end.
//!
//! Everything shares one process and one machine, so the figures are an
//! upper bound for the same work spread over real hosts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use rswarm_agent::sim::{SimConfig, Simulator};
use rswarm_manager::bootstrap::{InitOptions, NewCluster, new_cluster};
use rswarm_manager::ca::new_ready_manager;
use rswarm_manager::controlapi::new_object_id;
use rswarm_manager::manager::action;
use rswarm_manager::raft::node::RaftNodeError;
use rswarm_manager::{Manager, ManagerConfig, ManagerContext};
use rswarm_pki::{CredentialsHandle, NodeCredentials, NodeSubject, Role, RootCa};
use rswarm_proto::object::Kind;
use rswarm_proto::*;
use tokio_util::sync::CancellationToken;

/// Most managers the benchmark starts (Raft groups are 3, 5 or 7).
const MANAGERS_MAX: usize = 7;
/// Most tasks it writes (100 per node on 10,000 nodes).
const TASKS_MAX: usize = 1_000_000;
/// Most tasks per proposal: the store's chunk size for big batches.
const TASKS_PER_PROPOSAL_MAX: usize = 1000;
/// How long the cluster may take to form, the nodes to become Ready, and
/// the tasks to run before the benchmark gives up.
const PHASE_TIMEOUT: Duration = Duration::from_secs(600);
/// How often the store is polled for progress.
const POLL_PERIOD: Duration = Duration::from_millis(50);
/// How long a write waits for the leader's lease to come back.
const LEASE_WAIT_MAX: Duration = Duration::from_secs(10);
/// Pause between two attempts while the lease has lapsed.
const LEASE_RETRY_PERIOD: Duration = Duration::from_millis(50);
/// How long steady-state CPU is measured once every task runs.
const IDLE_MEASURE: Duration = Duration::from_secs(10);

#[derive(Debug, clap::Args)]
pub struct DispatchArgs {
    /// Simulated nodes.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Tasks, spread evenly over the nodes.
    #[arg(long, default_value_t = 100_000)]
    tasks: usize,
    /// Managers (one leads, the others replicate).
    #[arg(long, default_value_t = 3)]
    managers: usize,
    /// Tasks written per proposal (the scheduler's batch).
    #[arg(long, default_value_t = TASKS_PER_PROPOSAL_MAX)]
    batch: usize,
    /// Working directory (Raft data, node credentials); removed afterwards.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Log level of the managers and nodes (a tracing filter).
    #[arg(long, default_value = "warn")]
    log_level: String,
}

pub async fn dispatch(args: DispatchArgs) -> Result<()> {
    if !(1..=MANAGERS_MAX).contains(&args.managers) {
        bail!(
            "--managers {} is out of range: use 1 to {MANAGERS_MAX}",
            args.managers
        );
    }
    if !(1..=TASKS_PER_PROPOSAL_MAX).contains(&args.batch) {
        bail!(
            "--batch {} is out of range: use 1 to {TASKS_PER_PROPOSAL_MAX}",
            args.batch
        );
    }
    if args.tasks > TASKS_MAX {
        bail!("--tasks {} is too many: at most {TASKS_MAX}", args.tasks);
    }
    crate::commands::init_logging(&args.log_level, "text")?;
    rswarm_pki::install_crypto_provider();
    let dir = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("rswarm-bench-dispatch-{}", std::process::id()))
    });
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let outcome = run(&args, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}

async fn run(args: &DispatchArgs, dir: &Path) -> Result<()> {
    let started = Instant::now();
    let cluster = InProcessCluster::start(dir, args.managers).await?;
    println!(
        "managers={} formed_s={:.2}",
        args.managers,
        started.elapsed().as_secs_f64()
    );
    let sim = Simulator::new(SimConfig {
        nodes: args.nodes,
        token: cluster.first.tokens.worker.clone(),
        manager: cluster.leader_addr(),
        hostname_prefix: "bench".into(),
        state_dir: dir.join("sim"),
    })?;
    let outcome = measure(args, &cluster, &sim).await;
    sim.stop().await;
    cluster.stop().await;
    outcome
}

async fn measure(args: &DispatchArgs, cluster: &InProcessCluster, sim: &Simulator) -> Result<()> {
    let joining = Instant::now();
    sim.launch().await?;
    let joined = joining.elapsed();
    let leader = cluster.leader();
    wait_for("every node to be Ready", || {
        ready_nodes(&leader.store) >= args.nodes
    })
    .await?;
    println!(
        "nodes={} joined_s={:.2} ready_s={:.2}",
        args.nodes,
        joined.as_secs_f64(),
        joining.elapsed().as_secs_f64()
    );
    let nodes = node_ids(&leader.store);
    let cpu_before = cpu_seconds();
    let writing = Instant::now();
    write_assigned_tasks(&leader, &nodes, args.tasks, args.batch).await?;
    let written = writing.elapsed();
    wait_for("every task to be RUNNING", || {
        running_tasks(&leader.store) >= args.tasks
    })
    .await?;
    let all_running = writing.elapsed();
    let cpu_run = cpu_seconds() - cpu_before;
    println!(
        "tasks={} write_s={:.2} all_running_s={:.2} cpu_s={:.1} tasks_per_s={:.0}",
        args.tasks,
        written.as_secs_f64(),
        all_running.as_secs_f64(),
        cpu_run,
        args.tasks as f64 / all_running.as_secs_f64()
    );
    let cpu_idle_before = cpu_seconds();
    tokio::time::sleep(IDLE_MEASURE).await;
    let idle = (cpu_seconds() - cpu_idle_before) / IDLE_MEASURE.as_secs_f64();
    println!(
        "steady_cpu_cores={idle:.2} rss_mib={} (managers, nodes and their tasks in one process)",
        rss_mib()
    );
    Ok(())
}

/// Writes `count` tasks ASSIGNED to `nodes` (round robin), as the scheduler
/// would, `batch` per proposal.
async fn write_assigned_tasks(
    ctx: &ManagerContext,
    nodes: &[String],
    count: usize,
    batch: usize,
) -> Result<()> {
    if nodes.is_empty() {
        bail!("no node to assign tasks to");
    }
    let service_id = new_object_id();
    let tasks: Vec<Task> = (0..count)
        .map(|i| assigned_task(&service_id, &nodes[i % nodes.len()], i as u64 + 1))
        .collect();
    let mut lease_waits = 0;
    for chunk in tasks.chunks(batch) {
        lease_waits += propose_chunk(ctx, chunk).await?;
    }
    if lease_waits > 0 {
        println!("lease_waits={lease_waits} (writes refused while the leader's lease had lapsed)");
    }
    Ok(())
}

/// Proposes `chunk`, waiting while the leader's lease has lapsed (its
/// followers acknowledged nothing lately) as a patient client would;
/// returns how many times it waited.
async fn propose_chunk(ctx: &ManagerContext, chunk: &[Task]) -> Result<u32> {
    let deadline = Instant::now() + LEASE_WAIT_MAX;
    let mut waits = 0;
    loop {
        let proposal = Proposal {
            actions: chunk
                .iter()
                .map(|t| action(ActionKind::Create, Kind::Task(t.clone())))
                .collect(),
            timestamp_ms: rswarm_manager::manager::now_ms(),
        };
        match ctx.raft.propose(proposal).await {
            Ok(_) => return Ok(waits),
            Err(RaftNodeError::NotLeader { leader_addr: None })
                if ctx.raft.is_leader() && Instant::now() < deadline =>
            {
                waits += 1;
                tokio::time::sleep(LEASE_RETRY_PERIOD).await;
            }
            Err(e) => bail!("writing tasks failed: {e}"),
        }
    }
}

fn assigned_task(service_id: &str, node_id: &str, slot: u64) -> Task {
    Task {
        meta: Some(Meta {
            id: new_object_id(),
            ..Default::default()
        }),
        service_id: service_id.to_string(),
        slot,
        node_id: node_id.to_string(),
        desired_state: TaskState::Running as i32,
        status: Some(TaskStatus {
            state: TaskState::Assigned as i32,
            message: "scheduled (bench)".into(),
            ..Default::default()
        }),
        spec: Some(TaskSpec {
            container: Some(ContainerSpec {
                image: "docker.io/library/nginx:1.27".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        spec_version: 1,
        service_name: "bench".into(),
        endpoint: None,
    }
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > PHASE_TIMEOUT {
            bail!("gave up waiting for {what} after {PHASE_TIMEOUT:?}");
        }
        tokio::time::sleep(POLL_PERIOD).await;
    }
    Ok(())
}

fn is_bench_node(n: &Node) -> bool {
    n.description
        .as_ref()
        .is_some_and(|d| d.hostname.starts_with("bench-"))
}

fn ready_nodes(store: &rswarm_manager::store::Store) -> usize {
    store.read(|s| {
        s.nodes()
            .filter(|n| is_bench_node(n))
            .filter(|n| n.status.as_ref().map(|st| st.state) == Some(NodeState::Ready as i32))
            .count()
    })
}

fn node_ids(store: &rswarm_manager::store::Store) -> Vec<String> {
    store.read(|s| {
        s.nodes()
            .filter(|n| is_bench_node(n))
            .filter_map(|n| n.meta.as_ref().map(|m| m.id.clone()))
            .collect()
    })
}

fn running_tasks(store: &rswarm_manager::store::Store) -> usize {
    store.read(|s| {
        s.tasks()
            .filter(|t| t.status.as_ref().map(|st| st.state) == Some(TaskState::Running as i32))
            .count()
    })
}

/// CPU time (user + system) this process used, in seconds.
fn cpu_seconds() -> f64 {
    // Fields 14 and 15 of /proc/self/stat, in clock ticks (100 per second
    // on Linux), after the command name in parentheses.
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Resident memory of this process, in MiB.
fn rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?.to_string();
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib / 1024)
}

// ---------------------------------------------------------------------------
// Managers in this process.

struct RunningManager {
    manager: Manager,
    addr: String,
}

/// Managers in this process, each serving mutual TLS on loopback.
struct InProcessCluster {
    first: NewCluster,
    managers: Vec<RunningManager>,
    cancel: CancellationToken,
}

fn free_addr() -> Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.to_string())
}

async fn serve(
    manager: &Manager,
    addr: &str,
    creds: &CredentialsHandle,
    cancel: CancellationToken,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let incoming = rswarm_pki::tls_incoming(listener, rswarm_pki::server_config(creds)?);
    let routes = manager.routes();
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, cancel.cancelled())
            .await;
    });
    Ok(())
}

impl InProcessCluster {
    async fn start(dir: &Path, count: usize) -> Result<Self> {
        let addr = free_addr()?;
        let first = new_cluster(InitOptions {
            advertise_addr: addr.clone(),
            heartbeat_period: Duration::ZERO,
            node_cert_expiry: Duration::ZERO,
            description: NodeDescription::default(),
        })?;
        let creds = CredentialsHandle::new(first.credentials.clone())?;
        let config = ManagerConfig {
            raft_dir: dir.join("manager-1"),
            raft_id: first.raft_id,
            cluster_id: first.cluster_id.clone(),
            node_id: first.node_id.clone(),
            advertise_addr: addr.clone(),
            registry: Default::default(),
        };
        let manager = Manager::start(config, creds.clone()).await?;
        manager
            .bootstrap(&first)
            .await
            .map_err(|s| anyhow!("bootstrap failed: {}", s.message()))?;
        let cancel = CancellationToken::new();
        serve(&manager, &addr, &creds, cancel.clone()).await?;
        let mut cluster = Self {
            first,
            managers: vec![RunningManager { manager, addr }],
            cancel,
        };
        for index in 2..=count {
            cluster.add_manager(dir, index).await?;
        }
        let leader = cluster.leader();
        wait_for("the managers to become voters", || {
            leader.raft.members().voters.len() >= count
        })
        .await?;
        Ok(cluster)
    }

    fn leader(&self) -> Arc<ManagerContext> {
        self.managers[0].manager.context()
    }

    fn leader_addr(&self) -> String {
        self.managers[0].addr.clone()
    }

    /// Admits another manager through the store (as `join` would), starts
    /// it, and lets the leader's role manager add it to Raft.
    async fn add_manager(&mut self, dir: &Path, index: usize) -> Result<()> {
        let addr = free_addr()?;
        let node_id = new_object_id();
        let creds = self.manager_credentials(&node_id)?;
        let (node, raft_id) = new_ready_manager(&node_id, &addr);
        self.leader()
            .propose(vec![action(ActionKind::Create, Kind::Node(node))])
            .await
            .map_err(|s| anyhow!("admitting manager {index} failed: {}", s.message()))?;
        let config = ManagerConfig {
            raft_dir: dir.join(format!("manager-{index}")),
            raft_id,
            cluster_id: self.first.cluster_id.clone(),
            node_id,
            advertise_addr: addr.clone(),
            registry: Default::default(),
        };
        let manager = Manager::start(config, creds.clone()).await?;
        serve(&manager, &addr, &creds, self.cancel.clone()).await?;
        self.managers.push(RunningManager { manager, addr });
        Ok(())
    }

    fn manager_credentials(&self, node_id: &str) -> Result<CredentialsHandle> {
        let root = self
            .first
            .objects
            .iter()
            .find_map(|a| match a.object.as_ref()?.kind.as_ref()? {
                Kind::Cluster(c) => c.root_ca.clone(),
                _ => None,
            })
            .context("the new cluster has no root CA")?;
        let ca = RootCa::from_pem(&root.ca_cert_pem, &root.ca_key_pem)?;
        let (key_pem, csr_pem) = rswarm_pki::generate_key_and_csr()?;
        let subject = NodeSubject {
            node_id: node_id.to_string(),
            role: Role::Manager,
            cluster_id: self.first.cluster_id.clone(),
        };
        let cert_pem = ca.sign_node_csr(&csr_pem, &subject, Duration::from_secs(24 * 3600))?;
        Ok(CredentialsHandle::new(NodeCredentials {
            ca_cert_pem: root.ca_cert_pem,
            cert_pem,
            key_pem,
        })?)
    }

    async fn stop(self) {
        self.cancel.cancel();
        for m in &self.managers {
            m.manager.shutdown().await;
        }
    }
}
