//! `rswarm bench`: measurements against a live cluster (or, for
//! `dispatch`, one started in this process), for docs/benchmarks.md. Not a
//! test: it reports numbers, it asserts nothing.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rswarm_proto::*;

use crate::client::Daemon;

#[path = "bench_dispatch.rs"]
mod dispatch;

/// Most concurrent clients `bench writes` runs.
const CLIENTS_MAX: usize = 1024;

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
    /// Task assignment and status reporting at scale, in this process:
    /// managers, simulated nodes, and tasks written already ASSIGNED; times
    /// until every task is RUNNING. Needs no daemon.
    Dispatch(dispatch::DispatchArgs),
}

pub async fn run(d: &Daemon, cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Writes { clients, duration } => {
            writes(d, clients.clamp(1, CLIENTS_MAX), duration).await
        }
        BenchCommand::Dispatch(args) => dispatch::dispatch(args).await,
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
