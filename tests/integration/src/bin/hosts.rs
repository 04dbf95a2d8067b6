//! A cluster on hosts made of network namespaces, held until stdin closes:
//! `rswarm-hosts [--managers M] [--workers W]` (default 1 and 0).
//!
//! Prints `prefix <run prefix>`, one line `node <name> <ip> <netns> <socket>`
//! per node, then `ready`; removes everything when stdin reaches its end
//! (or on SIGINT/SIGTERM). The harness's own tests use it to check that an
//! interrupted or killed run leaves nothing behind; it is also a quick way
//! to get a few hosts to try things on.

use anyhow::{Context, Result, bail};
use rswarm_integration::Cluster;

fn main() -> Result<()> {
    let (managers, workers) = parse_args()?;
    let cluster = Cluster::form_on_hosts(managers, workers)?;
    let hosts = cluster.hosts()?;
    println!("prefix {}", hosts.prefix());
    for node in &cluster.nodes {
        let netns = hosts.host(&node.name)?.netns_name().to_string();
        println!(
            "node {} {} {netns} {}",
            node.name,
            node.ip(),
            node.socket().display()
        );
    }
    println!("ready");
    // Hold until stdin closes.
    let mut line = String::new();
    while std::io::stdin().read_line(&mut line)? > 0 {
        line.clear();
    }
    drop(cluster);
    Ok(())
}

fn parse_args() -> Result<(usize, usize)> {
    let (mut managers, mut workers) = (1, 0);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value: usize = args
            .next()
            .with_context(|| format!("{flag} needs a number"))?
            .parse()
            .with_context(|| format!("{flag} needs a number"))?;
        match flag.as_str() {
            "--managers" => managers = value,
            "--workers" => workers = value,
            _ => bail!("usage: rswarm-hosts [--managers M] [--workers W]"),
        }
    }
    if managers == 0 {
        bail!("--managers must be at least 1");
    }
    Ok((managers, workers))
}
