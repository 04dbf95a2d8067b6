//! Memory of the shims of running containers (VmRSS, PSS, private from
//! `/proc/<pid>/smaps_rollup`), and what else stays resident per
//! container: whether any runc process is left once containers run, and
//! whether each container's init is a child of its shim.

use std::collections::BTreeSet;

use anyhow::{Result, ensure};
use rswarm_integration::proc_kib;

/// Prints the medians over `shims` and the residency checks; fails when
/// the count of shims is not `expected`.
pub fn report_shims(shims: &[u32], expected: usize) -> Result<()> {
    ensure!(
        shims.len() == expected,
        "{} shims running, {expected} expected",
        shims.len()
    );
    let (mut rss, mut pss, mut private) = (vec![], vec![], vec![]);
    for &shim in shims {
        rss.push(proc_kib(shim, "/status", "VmRSS:")?);
        pss.push(proc_kib(shim, "/smaps_rollup", "Pss:")?);
        let clean = proc_kib(shim, "/smaps_rollup", "Private_Clean:")?;
        private.push(clean + proc_kib(shim, "/smaps_rollup", "Private_Dirty:")?);
    }
    println!(
        "shims ({}): VmRSS median {} KiB, PSS median {} KiB, private median {} KiB",
        shims.len(),
        median(&mut rss),
        median(&mut pss),
        median(&mut private)
    );
    let shim_set: BTreeSet<u32> = shims.iter().copied().collect();
    let (mut runc, mut inits_under_shims) = (0, 0);
    for (pid, ppid, comm) in process_table() {
        if comm.starts_with("runc") {
            runc += 1;
            println!("resident runc process: {pid} ({comm}), parent {ppid}");
        }
        if shim_set.contains(&ppid) {
            inits_under_shims += 1;
        }
    }
    println!(
        "runc processes resident: {runc}; container inits whose parent is their shim: \
         {inits_under_shims} of {}",
        shims.len()
    );
    Ok(())
}

fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    crate::stats::quantile(v, 0.5).unwrap_or(0)
}

/// (pid, parent pid, command name) of every process; those that end
/// while being read are skipped.
fn process_table() -> Vec<(u32, u32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // "pid (comm) state ppid ...": comm may hold spaces and ')'.
            let (head, rest) = stat.rsplit_once(')')?;
            let comm = head.split_once('(')?.1.to_string();
            let ppid = rest.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, ppid, comm))
        })
        .collect()
}
