//! `rswarm bench e2e`: a service's tasks from `service create` to RUNNING on
//! a live cluster. The local daemon must be a manager. The benchmark runs
//! `--nodes` simulated workers in this process (`rswarm_agent::sim`: real
//! identities and sessions, tasks reported RUNNING without running them),
//! creates a service of `--tasks` replicas placed on workers only, and times
//! until the control API counts every replica RUNNING; then removes the
//! service and times until its tasks are gone.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rswarm_agent::sim::{SimConfig, Simulator};
use rswarm_proto::*;

use crate::client::Daemon;

/// How long each phase may take before the benchmark gives up.
const PHASE_TIMEOUT: Duration = Duration::from_secs(900);
/// How often the control API is polled for progress.
const POLL_PERIOD: Duration = Duration::from_millis(200);
/// Most replicas the benchmark asks for.
const TASKS_MAX: u64 = 1_000_000;
/// Simulated nodes are named `<prefix>-0001`…
const HOSTNAME_PREFIX: &str = "e2e";

#[derive(Debug, clap::Args)]
pub struct E2eArgs {
    /// Simulated worker nodes to run in this process.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Replicas of the benchmark service.
    #[arg(long, default_value_t = 100_000)]
    tasks: u64,
    /// Where the simulated nodes keep their credentials; reusing it across
    /// runs reuses the nodes instead of joining new ones.
    #[arg(long, default_value = "rswarm-bench-e2e")]
    state_dir: PathBuf,
}

pub async fn e2e(d: &Daemon, args: E2eArgs) -> Result<()> {
    if args.tasks == 0 || args.tasks > TASKS_MAX {
        bail!(
            "--tasks {} is out of range: use 1 to {TASKS_MAX}",
            args.tasks
        );
    }
    rswarm_pki::install_crypto_provider();
    let (token, manager) = cluster_access(d).await?;
    let sim = Simulator::new(SimConfig {
        nodes: args.nodes,
        token,
        manager,
        hostname_prefix: HOSTNAME_PREFIX.into(),
        state_dir: args.state_dir.clone(),
    })?;
    let outcome = measure(d, &args, &sim).await;
    sim.stop().await;
    outcome
}

/// The worker join token and a manager's address, from the local manager.
async fn cluster_access(d: &Daemon) -> Result<(String, String)> {
    let info = d.info().await?;
    if info.role != NodeRole::Manager as i32 {
        bail!("this node is not a manager: run the benchmark on a manager");
    }
    let tokens = d
        .control()
        .get_cluster(GetClusterRequest {})
        .await
        .map_err(|s| d.explain(s))?
        .into_inner()
        .join_tokens
        .context("the cluster has no join tokens")?;
    let manager = info
        .managers
        .first()
        .cloned()
        .unwrap_or(info.advertise_addr);
    Ok((tokens.worker, manager))
}

async fn measure(d: &Daemon, args: &E2eArgs, sim: &Simulator) -> Result<()> {
    let joining = Instant::now();
    sim.launch().await?;
    wait_for("the simulated nodes to be Ready", || async {
        Ok(ready_sim_nodes(d).await? >= args.nodes)
    })
    .await?;
    println!(
        "nodes={} ready_s={:.2}",
        args.nodes,
        joining.elapsed().as_secs_f64()
    );
    let name = format!("bench-e2e-{}", std::process::id());
    let creating = Instant::now();
    let created = d
        .control()
        .create_service(CreateServiceRequest {
            spec: Some(service_spec(&name, args.tasks)),
            ..CreateServiceRequest::default()
        })
        .await
        .map_err(|s| d.explain(s))?;
    let accepted = creating.elapsed();
    let id = created
        .into_inner()
        .service
        .and_then(|s| s.meta)
        .map(|m| m.id)
        .context("the manager returned no service")?;
    let outcome = converge_and_remove(d, args, sim, &id, creating, accepted).await;
    if outcome.is_err() {
        // Leave no 100,000-replica service behind on a failed run.
        let _ = d
            .control()
            .remove_service(RemoveServiceRequest { reference: id })
            .await;
    }
    outcome
}

async fn converge_and_remove(
    d: &Daemon,
    args: &E2eArgs,
    sim: &Simulator,
    id: &str,
    creating: Instant,
    accepted: Duration,
) -> Result<()> {
    let unanswered = AtomicU32::new(0);
    wait_for("every replica to be RUNNING", || async {
        Ok(running_tasks(d, id, &unanswered).await >= args.tasks)
    })
    .await?;
    let converged = creating.elapsed();
    let counters = sim.counters();
    println!(
        "tasks={} create_call_s={:.2} all_running_s={:.2} tasks_per_s={:.0} unanswered_polls={}",
        args.tasks,
        accepted.as_secs_f64(),
        converged.as_secs_f64(),
        args.tasks as f64 / converged.as_secs_f64(),
        unanswered.load(Ordering::Relaxed),
    );
    let removing = Instant::now();
    d.control()
        .remove_service(RemoveServiceRequest {
            reference: id.to_string(),
        })
        .await
        .map_err(|s| d.explain(s))?;
    wait_for("the simulated nodes to stop every task", || async {
        Ok(counters.running.load(Ordering::Relaxed) == 0)
    })
    .await?;
    println!(
        "remove_all_stopped_s={:.2}",
        removing.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A service of `replicas` tasks that only workers run (the managers' own
/// agents would really start them).
fn service_spec(name: &str, replicas: u64) -> ServiceSpec {
    ServiceSpec {
        annotations: Some(Annotations {
            name: name.to_string(),
            ..Default::default()
        }),
        task: Some(TaskSpec {
            driver: "process".into(),
            container: Some(ContainerSpec {
                args: vec!["/bin/true".into()],
                ..Default::default()
            }),
            placement: Some(Placement {
                constraints: vec!["node.role==worker".into()],
                ..Default::default()
            }),
            ..Default::default()
        }),
        mode: Some(service_spec::Mode::Replicated(ReplicatedMode { replicas })),
        ..Default::default()
    }
}

async fn ready_sim_nodes(d: &Daemon) -> Result<usize> {
    let nodes = crate::commands::service::calls::list_nodes(d).await?;
    let prefix = format!("{HOSTNAME_PREFIX}-");
    Ok(nodes
        .iter()
        .filter(|n| {
            n.description
                .as_ref()
                .is_some_and(|desc| desc.hostname.starts_with(&prefix))
        })
        .filter(|n| n.status.as_ref().map(|s| s.state) == Some(NodeState::Ready as i32))
        .count())
}

/// Replicas RUNNING, as the control API counts them; a call that fails
/// (e.g. while leadership moves) counts as none yet and is tallied in
/// `unanswered`, as a user watching `service ls` would just look again.
async fn running_tasks(d: &Daemon, id: &str, unanswered: &AtomicU32) -> u64 {
    let view = d
        .control()
        .get_service(GetServiceRequest {
            reference: id.to_string(),
        })
        .await;
    match view {
        Ok(view) => view.into_inner().service.map_or(0, |v| v.running_tasks),
        Err(_) => {
            unanswered.fetch_add(1, Ordering::Relaxed);
            0
        }
    }
}

async fn wait_for<F, Fut>(what: &str, mut done: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let start = Instant::now();
    while !done().await? {
        if start.elapsed() > PHASE_TIMEOUT {
            bail!("gave up waiting for {what} after {PHASE_TIMEOUT:?}");
        }
        tokio::time::sleep(POLL_PERIOD).await;
    }
    Ok(())
}
