//! Container benchmarks (the containers issue): task start latency with
//! the `oci` driver and a local image, 100 containers on one node, and the
//! shims' memory; plain `runc` beside them as the reference.
//!
//! Modes (`rswarm-container-bench MODE [N]`):
//! - `latency` — one daemon (`init`), the busybox test image loaded with
//!   `rswarm image load`; N tasks started one after the other (the service
//!   scaled up by one each time). Per task: ASSIGNED → RUNNING from the
//!   status timestamps the store holds (manager and agent clocks, one
//!   machine), seen through the control API's watch.
//! - `direct` — the same image and spec through `OciRuntime::prepare` +
//!   `start` in this process (no manager, no dispatcher): the node's part.
//! - `runc` — a plain runc bundle of the busybox root: `runc run` of
//!   `/bin/true`, and `runc create` + `runc start` of `sleep` (what the shim
//!   does), N times each.
//! - `many` — one daemon, `service create --replicas N`: time to all
//!   RUNNING; then the shims' VmRSS, PSS and private memory (medians), the
//!   daemon's RSS, and whether any runc process stayed resident.
//! - `all` — `runc`, `direct`, `latency`, `many` in that order.
//!
//! Needs root, runc, overlayfs and busybox-static. Everything a run starts
//! (daemons, containers, mounts, cgroups) is removed before it ends.
//!
//! Run: `cargo build --release -p rswarm -p rswarm-integration`, then
//! `RSWARM_BIN=$PWD/target/release/rswarm target/release/rswarm-container-bench all 100`.

mod daemon;
mod direct;
mod memory;
mod runc_alone;
mod stats;

use anyhow::{Result, bail};

/// Starts per mode when none is given: the "median/p99 of 100".
const STARTS_DEFAULT: usize = 100;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "all".to_string());
    let n: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(STARTS_DEFAULT);
    if !rustix::process::geteuid().is_root() {
        bail!("the container benchmarks need root (runc, overlay mounts, cgroups)");
    }
    println!("load average at start: {}", stats::load_average());
    match mode.as_str() {
        "latency" => daemon::latency(n)?,
        "direct" => direct::run(n)?,
        "runc" => runc_alone::run(n)?,
        "many" => daemon::many(n)?,
        "all" => {
            runc_alone::run(n)?;
            direct::run(n)?;
            daemon::latency(n)?;
            daemon::many(n)?;
        }
        other => bail!("unknown mode {other:?}: use latency, direct, runc, many or all"),
    }
    println!("load average at end: {}", stats::load_average());
    Ok(())
}
