//! Memory footprint benchmark: 1 manager + 1 worker on loopback; the worker
//! runs 100 process tasks (`sleep`). Prints the worker daemon's RSS before
//! and with the tasks, and the shims' RSS, PSS and private memory (median).
//!
//! Run: `cargo build --release -p rswarm -p rswarm-integration`, then
//! `RSWARM_BIN=$PWD/target/release/rswarm target/release/rswarm-footprint-bench [tasks]`.

use std::time::Duration;

use anyhow::{Context, Result};
use rswarm_integration::{Cluster, proc_kib, wait_until};
use rswarm_proto::TaskState;

fn main() -> Result<()> {
    let tasks: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(100);
    let c = Cluster::form(1, 1)?;
    let worker = c.node("w1");
    let pid = worker.pid().context("worker not running")?;
    std::thread::sleep(Duration::from_secs(2));
    let idle = proc_kib(pid, "/status", "VmRSS:")?;
    c.node("m1").ok(&[
        "service",
        "create",
        "-d",
        "--driver",
        "process",
        "--name",
        "footprint",
        "--replicas",
        &tasks.to_string(),
        "--constraint",
        "node.role==worker",
        "/bin/sleep",
        "86400",
    ])?;
    wait_until(Duration::from_secs(120), || {
        Ok(c.node("m1")
            .tasks("footprint")?
            .iter()
            .filter(|t| t.status.as_ref().map(|s| s.state) == Some(TaskState::Running as i32))
            .count()
            == tasks)
    })
    .context("tasks did not all run")?;
    std::thread::sleep(Duration::from_secs(3));
    let busy = proc_kib(pid, "/status", "VmRSS:")?;
    println!(
        "worker daemon RSS: {} KiB idle, {} KiB with {tasks} tasks",
        idle, busy
    );
    let mut rss = Vec::new();
    let mut pss = Vec::new();
    let mut private = Vec::new();
    for shim in worker.shim_pids() {
        rss.push(proc_kib(shim, "/status", "VmRSS:")?);
        pss.push(proc_kib(shim, "/smaps_rollup", "Pss:")?);
        let clean = proc_kib(shim, "/smaps_rollup", "Private_Clean:")?;
        private.push(clean + proc_kib(shim, "/smaps_rollup", "Private_Dirty:")?);
    }
    println!(
        "shims ({}): RSS median {} KiB, PSS median {} KiB, private median {} KiB",
        rss.len(),
        median(&mut rss),
        median(&mut pss),
        median(&mut private)
    );
    Ok(())
}

fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}
