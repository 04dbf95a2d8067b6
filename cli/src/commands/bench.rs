//! `rswarm bench`: measurements for docs/benchmarks.md, against a live
//! cluster, in memory (`scheduler`), or with managers and simulated nodes
//! started in this process (`dispatch`). Not a test: it reports numbers, it
//! asserts nothing.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rswarm_proto::*;

use crate::client::Daemon;

#[path = "bench_dispatch.rs"]
mod dispatch;
#[path = "bench_e2e.rs"]
mod e2e;

/// Most concurrent clients `bench writes` runs.
const CLIENTS_MAX: usize = 1024;

/// Most nodes `bench scheduler` builds: ten times the largest cluster
/// anyone runs, and still a few MB of memory.
const BENCH_NODES_MAX: usize = 10_000;
/// Most tasks `bench scheduler` builds: about 1 KB each in memory, so
/// a million stays around a GB.
const BENCH_TASKS_MAX: usize = 1_000_000;
/// Most services the tasks of `bench scheduler` are spread over.
const BENCH_SERVICES_MAX: usize = 1_000;
/// Most timed runs of `bench scheduler`.
const BENCH_RUNS_MAX: usize = 100;

#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Replicated writes per second through the control API: each client
    /// updates its own config object in a loop, every write a Raft commit
    /// with fsync on a quorum.
    Writes {
        /// Concurrent clients.
        #[arg(long, default_value_t = 1)]
        clients: usize,
        /// How long to write.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
        duration: Duration,
    },
    /// Placement speed of the scheduler, in memory (no daemon needed):
    /// builds ready nodes in three zones and pending tasks of several
    /// services (half of them spread over zones, some with reservations or
    /// constraints), and times one scheduling pass over all of them.
    Scheduler {
        /// Nodes in the cluster.
        #[arg(long, default_value_t = 1_000)]
        nodes: usize,
        /// Pending tasks to place.
        #[arg(long, default_value_t = 100_000)]
        tasks: usize,
        /// Services the tasks belong to.
        #[arg(long, default_value_t = 10)]
        services: usize,
        /// Timed runs; the median is reported.
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// Task assignment and status reporting at scale, in this process:
    /// managers, simulated nodes, and tasks written already ASSIGNED; times
    /// until every task is RUNNING. Needs no daemon.
    Dispatch(dispatch::DispatchArgs),
    /// From `service create` to every replica RUNNING on a live cluster
    /// (run it on a manager), with simulated worker nodes run in this
    /// process.
    E2e(e2e::E2eArgs),
}

impl BenchCommand {
    /// Whether the benchmark runs managers or nodes in this process.
    pub fn runs_nodes(&self) -> bool {
        matches!(self, BenchCommand::Dispatch(_) | BenchCommand::E2e(_))
    }
}

pub async fn run(d: &Daemon, cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Writes { clients, duration } => {
            writes(d, clients.clamp(1, CLIENTS_MAX), duration).await
        }
        BenchCommand::Scheduler {
            nodes,
            tasks,
            services,
            runs,
        } => {
            scheduler::run(scheduler::Size {
                nodes: nodes.clamp(1, BENCH_NODES_MAX),
                tasks: tasks.min(BENCH_TASKS_MAX),
                services: services.clamp(1, BENCH_SERVICES_MAX),
                runs: runs.clamp(1, BENCH_RUNS_MAX),
            });
            Ok(())
        }
        BenchCommand::Dispatch(args) => dispatch::dispatch(args).await,
        BenchCommand::E2e(args) => e2e::e2e(d, args).await,
    }
}

fn spec(name: &str, n: u64) -> ConfigSpec {
    ConfigSpec {
        annotations: Some(Annotations {
            name: name.to_string(),
            ..Default::default()
        }),
        data: n.to_le_bytes().to_vec(),
    }
}

async fn one_client(d: Daemon, idx: usize, deadline: Instant) -> Result<(u64, Vec<Duration>)> {
    let name = format!("bench-{}-{idx}", std::process::id());
    let mut control = d.control();
    let created = control
        .create_config(CreateConfigRequest {
            spec: Some(spec(&name, 0)),
        })
        .await
        .map_err(|s| d.explain(s))?
        .into_inner()
        .config
        .context("no config returned")?;
    let id = created
        .meta
        .as_ref()
        .map(|m| m.id.clone())
        .unwrap_or_default();
    let mut version = created.meta.as_ref().map(|m| m.version).unwrap_or(0);
    let (mut n, mut latencies) = (0u64, Vec::new());
    while Instant::now() < deadline {
        let start = Instant::now();
        let req = UpdateConfigRequest {
            config_id: id.clone(),
            version,
            spec: Some(spec(&name, n + 1)),
        };
        let resp = control
            .update_config(req)
            .await
            .map_err(|s| d.explain(s))?
            .into_inner();
        latencies.push(start.elapsed());
        version = resp
            .config
            .and_then(|c| c.meta)
            .map(|m| m.version)
            .unwrap_or(version);
        n += 1;
    }
    let _ = control
        .remove_config(RemoveConfigRequest { reference: id })
        .await;
    Ok((n, latencies))
}

async fn writes(d: &Daemon, clients: usize, duration: Duration) -> Result<()> {
    let deadline = Instant::now() + duration;
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for idx in 0..clients {
        set.spawn(one_client(d.clone(), idx, deadline));
    }
    let (mut total, mut latencies) = (0u64, Vec::new());
    while let Some(res) = set.join_next().await {
        let (n, l) = res.context("a bench client panicked")??;
        total += n;
        latencies.extend(l);
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "clients={clients} writes={total} seconds={elapsed:.2} writes_per_sec={:.0} p50_ms={:.2} p99_ms={:.2}",
        total as f64 / elapsed,
        pct(0.5).as_secs_f64() * 1000.0,
        pct(0.99).as_secs_f64() * 1000.0
    );
    Ok(())
}

/// `bench scheduler`: the scheduler's pure core on a synthetic cluster.
mod scheduler {
    use std::time::{Duration, Instant};

    use rswarm_manager::scheduler::{Decision, Scheduler};
    use rswarm_proto::*;

    /// What to build.
    pub struct Size {
        pub nodes: usize,
        pub tasks: usize,
        pub services: usize,
        pub runs: usize,
    }

    const GIB: i64 = 1 << 30;
    const CPU: i64 = 1_000_000_000;
    const ZONES: usize = 3;

    fn node(idx: usize) -> Node {
        Node {
            meta: Some(Meta {
                id: format!("node{idx:05}"),
                version: 1,
                ..Default::default()
            }),
            spec: Some(NodeSpec {
                annotations: Some(Annotations {
                    name: format!("host{idx}"),
                    labels: [("zone".to_string(), format!("zone{}", idx % ZONES))].into(),
                }),
                availability: NodeAvailability::Active as i32,
                ..Default::default()
            }),
            description: Some(NodeDescription {
                hostname: format!("host{idx}"),
                platform: Some(Platform {
                    os: "linux".into(),
                    architecture: "x86_64".into(),
                }),
                resources: Some(Resources {
                    nano_cpus: 64 * CPU,
                    memory_bytes: 256 * GIB,
                }),
                drivers: vec!["process".into(), "oci".into()],
                ..Default::default()
            }),
            status: Some(NodeStatus {
                state: NodeState::Ready as i32,
                ..Default::default()
            }),
            role: if idx.is_multiple_of(10) {
                NodeRole::Manager as i32
            } else {
                NodeRole::Worker as i32
            },
            ..Default::default()
        }
    }

    /// Service `idx`'s spec: even services spread over zones, every third
    /// reserves CPU and memory, every fourth runs on workers only.
    fn spec(idx: usize) -> TaskSpec {
        let mut placement = Placement::default();
        if idx.is_multiple_of(2) {
            placement.preferences.push(PlacementPreference {
                spread: "node.labels.zone".into(),
            });
        }
        if idx % 4 == 1 {
            placement.constraints.push("node.role==worker".into());
        }
        let reservations = if idx.is_multiple_of(3) {
            Resources {
                nano_cpus: CPU / 10,
                memory_bytes: 128 << 20,
            }
        } else {
            Resources::default()
        };
        TaskSpec {
            container: Some(ContainerSpec {
                image: "registry.example/app:1".into(),
                ..Default::default()
            }),
            resources: Some(ResourceRequirements {
                reservations: Some(reservations),
                ..Default::default()
            }),
            placement: Some(placement),
            driver: "oci".into(),
            ..Default::default()
        }
    }

    fn tasks(size: &Size) -> Vec<Task> {
        let specs: Vec<TaskSpec> = (0..size.services).map(spec).collect();
        (0..size.tasks)
            .map(|i| {
                let service = i % size.services;
                let slot = (i / size.services + 1) as u64;
                Task {
                    meta: Some(Meta {
                        id: format!("task{i:07}"),
                        version: 1,
                        ..Default::default()
                    }),
                    service_id: format!("service{service:04}"),
                    slot,
                    desired_state: TaskState::Running as i32,
                    status: Some(TaskStatus {
                        state: TaskState::Pending as i32,
                        message: "pending task scheduling".into(),
                        ..Default::default()
                    }),
                    spec: Some(specs[service].clone()),
                    spec_version: 1,
                    service_name: format!("svc{service}"),
                    endpoint: None,
                    node_id: String::new(),
                }
            })
            .collect()
    }

    fn millis(d: Duration) -> f64 {
        d.as_secs_f64() * 1000.0
    }

    fn median(mut values: Vec<f64>) -> f64 {
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or(0.0)
    }

    /// The tasks as the decisions left them: placed ones ASSIGNED on their
    /// node, as the store holds them after the pass.
    fn assigned(pending: &[Task], decisions: &[Decision]) -> Vec<Task> {
        let nodes: std::collections::HashMap<&str, &str> = decisions
            .iter()
            .filter_map(|d| match d {
                Decision::Assign { task_id, node_id } => Some((task_id.as_str(), node_id.as_str())),
                Decision::Unplaceable { .. } => None,
            })
            .collect();
        pending
            .iter()
            .filter_map(|t| {
                let id = t.meta.as_ref().map(|m| m.id.as_str())?;
                let mut task = t.clone();
                task.node_id = nodes.get(id)?.to_string();
                task.status = Some(TaskStatus {
                    state: TaskState::Assigned as i32,
                    ..Default::default()
                });
                Some(task)
            })
            .collect()
    }

    /// Builds the cluster once, then times `runs` passes, each from a
    /// fresh scheduler (as the leader loop builds one per pass). Also times
    /// building the scheduler over the placed tasks: the fixed cost of every
    /// later pass in a cluster that size.
    pub fn run(size: Size) {
        let nodes: Vec<Node> = (0..size.nodes).map(node).collect();
        let pending = tasks(&size);
        let (mut schedule_ms, mut rebuild_ms) = (Vec::new(), Vec::new());
        for run in 1..=size.runs {
            let mut scheduler = Scheduler::new(&nodes, &[]);
            let start = Instant::now();
            let decisions = scheduler.schedule(&pending);
            let scheduled = start.elapsed();
            let placed = assigned(&pending, &decisions);
            let start = Instant::now();
            let rebuilt = Scheduler::new(&nodes, &placed);
            let rebuild = start.elapsed();
            println!(
                "run={run} nodes={} tasks={} services={} placed={} unplaceable={} schedule_ms={:.2} rebuild_ms={:.2}",
                size.nodes,
                size.tasks,
                size.services,
                placed.len(),
                decisions.len() - placed.len(),
                millis(scheduled),
                millis(rebuild),
            );
            drop(rebuilt);
            schedule_ms.push(millis(scheduled));
            rebuild_ms.push(millis(rebuild));
        }
        println!(
            "median over {} runs: schedule_ms={:.2} rebuild_ms={:.2}",
            size.runs,
            median(schedule_ms),
            median(rebuild_ms)
        );
    }
}
