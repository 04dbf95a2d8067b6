//! Leader failover benchmark: 3 managers on loopback; kill -9 the leader and
//! time until a survivor accepts a write (a node label update). Prints every
//! trial and the median. Run: `cargo run --release -p rswarm-integration --bin
//! rswarm-failover-bench -- [trials]` after `cargo build --release -p rswarm`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rswarm_integration::Cluster;

fn main() -> Result<()> {
    let trials: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(10);
    let mut c = Cluster::form(3, 0)?;
    let mut samples = Vec::new();
    for trial in 1..=trials {
        let leader = c.leader("m1").or_else(|_| c.leader("m2"))?;
        let survivor = if leader == "m1" { "m2" } else { "m1" };
        let killed_at = Instant::now();
        c.node_mut(&leader).kill9();
        let value = format!("t{trial}");
        loop {
            let label = format!("bench={value}");
            let out =
                c.node(survivor)
                    .rswarm(&["node", "update", "--label-add", &label, survivor])?;
            if out.status.success() {
                break;
            }
            if killed_at.elapsed() > Duration::from_secs(30) {
                anyhow::bail!("no write accepted 30 s after the leader died");
            }
        }
        let took = killed_at.elapsed();
        println!(
            "trial {trial}: leader {leader} killed, first write accepted after {} ms",
            took.as_millis()
        );
        samples.push(took);
        c.node_mut(&leader)
            .start()
            .context("restart the old leader")?;
        c.wait_ready(3)?;
    }
    rswarm_integration::print_median(&mut samples);
    Ok(())
}
