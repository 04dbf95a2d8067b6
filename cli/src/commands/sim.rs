//! `rswarm sim`: runs many simulated nodes in this process against a real
//! cluster, for scale tests (see `rswarm_agent::sim`). Each node joins with
//! the worker token, heartbeats, receives its assignments and reports every
//! task RUNNING without running anything. Runs until Ctrl-C or SIGTERM.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result};
use rswarm_agent::sim::{SimConfig, SimCounters, Simulator};

/// How often progress is printed.
const PROGRESS_PERIOD: Duration = Duration::from_secs(2);

/// Open files each simulated node holds: two TLS connections to the
/// managers (session, tasks) and headroom for joining.
const FILES_PER_NODE: u64 = 3;

#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// How many nodes to simulate.
    #[arg(long)]
    nodes: usize,
    /// The worker join token ('rswarm join-token worker -q').
    #[arg(long)]
    token: String,
    /// A manager's address, host:port.
    #[arg(long)]
    manager: String,
    /// Nodes are named <prefix>-0001, <prefix>-0002, …
    #[arg(long, default_value = "sim")]
    hostname_prefix: String,
    /// Where the nodes keep their credentials; a restart with the same
    /// directory reuses them instead of joining again.
    #[arg(long, default_value = "rswarm-sim")]
    state_dir: PathBuf,
    /// Log level: error, warn, info, debug, trace (or a tracing filter).
    #[arg(long, default_value = "warn")]
    log_level: String,
}

/// Runs the simulation until Ctrl-C or SIGTERM.
pub async fn run(args: SimArgs) -> Result<()> {
    super::init_logging(&args.log_level, "text")?;
    rswarm_pki::install_crypto_provider();
    check_open_files(args.nodes);
    let config = SimConfig {
        nodes: args.nodes,
        token: args.token,
        manager: args.manager,
        hostname_prefix: args.hostname_prefix,
        state_dir: args.state_dir,
    };
    let state_dir = config.state_dir.clone();
    let sim = Simulator::new(config)?;
    let counters = sim.counters();
    let progress = tokio::spawn(print_progress(counters.clone(), args.nodes));
    let launched = tokio::select! {
        launched = sim.launch() => launched,
        _ = stop_signal() => Ok(()),
    };
    let outcome = match launched {
        Ok(()) => {
            println!(
                "{} simulated nodes run (credentials in {}); Ctrl-C stops them",
                counters.started.load(Ordering::Relaxed),
                state_dir.display()
            );
            stop_signal().await;
            Ok(())
        }
        Err(e) => Err(e).context("the simulation stopped"),
    };
    progress.abort();
    sim.stop().await;
    outcome
}

/// Prints how far the simulation got, every `PROGRESS_PERIOD`.
async fn print_progress(counters: std::sync::Arc<SimCounters>, nodes: usize) {
    let mut tick = tokio::time::interval(PROGRESS_PERIOD);
    tick.tick().await;
    loop {
        tick.tick().await;
        println!(
            "{}/{nodes} nodes started, {} tasks, {} running",
            counters.started.load(Ordering::Relaxed),
            counters.tasks.load(Ordering::Relaxed),
            counters.running.load(Ordering::Relaxed),
        );
    }
}

async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Warns when the open-file limit is too low for `nodes` nodes.
fn check_open_files(nodes: usize) {
    let needed = nodes as u64 * FILES_PER_NODE + 64;
    if let Some(limit) = open_files_limit(Path::new("/proc/self/limits"))
        && limit < needed
    {
        eprintln!(
            "warning: the open-file limit is {limit}; {nodes} simulated nodes need about {needed}: \
             raise it with 'ulimit -n {needed}' (the managers need as many)"
        );
    }
}

/// The soft "Max open files" limit from a `/proc/<pid>/limits` file.
fn open_files_limit(path: &Path) -> Option<u64> {
    let limits = std::fs::read_to_string(path).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
#[path = "sim_tests.rs"]
mod tests;
