//! Node failure benchmark: 1 manager + 3 workers on loopback running a
//! 6-replica process service on the workers. Each trial kills a worker
//! daemon together with its tasks (a host that died) and times until every
//! slot has a RUNNING task again on the surviving workers; then the worker
//! comes back for the next trial. Prints every trial and the median.
//!
//! Run: `cargo build --release -p rswarm -p rswarm-integration`, then
//! `RSWARM_BIN=$PWD/target/release/rswarm target/release/rswarm-task-failover-bench [trials]`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rswarm_integration::Cluster;
use rswarm_proto::TaskState;

const REPLICAS: usize = 6;
const SERVICE: &str = "bench";

fn main() -> Result<()> {
    let trials: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(10);
    let mut c = Cluster::form(1, 3)?;
    c.node("m1").ok(&[
        "service",
        "create",
        "--driver",
        "process",
        "--name",
        SERVICE,
        "--replicas",
        &REPLICAS.to_string(),
        "--constraint",
        "node.role==worker",
        "--restart-delay",
        "0s",
        "/bin/sleep",
        "86400",
    ])?;
    let mut samples = Vec::new();
    for trial in 1..=trials {
        let victim = worker_with_tasks(&c)?;
        let victim_id = c.node(&victim).node_id()?;
        let killed_at = Instant::now();
        c.node_mut(&victim).kill9_with_tasks();
        loop {
            let tasks = c.node("m1").tasks(SERVICE)?;
            let running = tasks
                .iter()
                .filter(|t| {
                    t.desired_state == TaskState::Running as i32
                        && t.status.as_ref().map(|s| s.state) == Some(TaskState::Running as i32)
                        && t.node_id != victim_id
                })
                .count();
            if running == REPLICAS {
                break;
            }
            if killed_at.elapsed() > Duration::from_secs(60) {
                bail!("slots not running again 60 s after {victim} died");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let took = killed_at.elapsed();
        println!(
            "trial {trial}: {victim} killed, all {REPLICAS} slots running elsewhere after {} ms",
            took.as_millis()
        );
        samples.push(took);
        c.node_mut(&victim).start().context("restart the worker")?;
        c.wait_ready(4)?;
        // Spread the tasks over the returning node again, so every trial
        // starts from 2 tasks per worker.
        c.node("m1")
            .ok(&["service", "update", "--rebalance", SERVICE])?;
    }
    rswarm_integration::print_median(&mut samples);
    Ok(())
}

/// A worker that runs at least one task of the service.
fn worker_with_tasks(c: &Cluster) -> Result<String> {
    let tasks = c.node("m1").tasks(SERVICE)?;
    for name in ["w1", "w2", "w3"] {
        let id = c.node(name).node_id()?;
        if tasks.iter().any(|t| {
            t.node_id == id && t.status.as_ref().map(|s| s.state) == Some(TaskState::Running as i32)
        }) {
            return Ok(name.to_owned());
        }
    }
    bail!("no worker runs a task of {SERVICE}")
}
