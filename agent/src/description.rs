//! The node's description: hostname, platform and resources, as the
//! managers see it in `node inspect`.

use rswarm_proto::{NodeDescription, Platform, Resources};

use crate::runtime::Drivers;

/// Describes this host, under `hostname`, whose agent runs tasks with `drivers`.
pub fn describe(hostname: &str, drivers: &Drivers) -> NodeDescription {
    NodeDescription {
        hostname: hostname.to_string(),
        platform: Some(Platform {
            os: std::env::consts::OS.to_string(),
            architecture: std::env::consts::ARCH.to_string(),
        }),
        resources: Some(Resources {
            nano_cpus: std::thread::available_parallelism()
                .map(|n| n.get() as i64 * 1_000_000_000)
                .unwrap_or(0),
            memory_bytes: total_memory_bytes().unwrap_or(0),
        }),
        engine_version: env!("CARGO_PKG_VERSION").to_string(),
        drivers: drivers.names().iter().map(|d| d.to_string()).collect(),
        unavailable_drivers: drivers.unavailable_drivers().to_vec(),
    }
}

/// `MemTotal` from /proc/meminfo.
fn total_memory_bytes() -> Option<i64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
