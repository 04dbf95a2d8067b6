//! A harness for multi-process cluster tests: every node is a real
//! `rswarm daemon` process with its own data dir and run dir, driven
//! through the real `rswarm` CLI on its unix socket.
//!
//! # Layout
//! - `node` — one daemon process: start, stop, kill -9, pause, restart, CLI.
//! - `cluster` — the nodes of one test, formed with join tokens, either on
//!   loopback (every node on 127.0.0.1 with its own port) or on [`hosts`].
//! - [`hosts`] — hosts made of network namespaces on a bridged underlay,
//!   and the network faults between them (partitions, loss, cut-off).
//! - `run` — the per-run names everything carries, and the removal of what
//!   a run left behind (on drop, on interrupt, and for runs that died).
//! - `spawn` — starting daemons so that they die with the test process.
//! - [`images`] — test images (busybox from the host's busybox-static) as
//!   archives or pushed to a `docker-registry` on loopback or on a host.
//!
//! Everything a cluster starts is removed when it is dropped, also when a
//! test panics. The `rswarm` binary is found next to the test binary
//! (`target/<profile>/rswarm`) or through `RSWARM_BIN`; build it first.

mod cluster;
pub mod hosts;
pub mod images;
mod node;
mod run;
mod spawn;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

pub use cluster::{Cluster, REGISTRY_HOST};
pub use hosts::{Host, Hosts};
pub use node::{CONTROL_CALL_TIMEOUT, Node, RUNC_ROOT, proc_kib, processes, runc_bin};
pub use run::{leftovers, sweep_dead_runs};

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
    let bin = if bin.exists() {
        bin
    } else {
        // A binary of this crate runs from target/<profile>/ itself.
        exe.parent().expect("target dir").join("rswarm")
    };
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
