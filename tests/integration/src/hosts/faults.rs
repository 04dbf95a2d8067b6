//! The network faults in force on a fabric, and the nftables rules that
//! make them. Pure: no I/O, so the rules can be checked without root.
//!
//! Every fault is a drop rule in one chain of the fabric namespace's bridge
//! table, on the `forward` hook: it sees every frame that crosses the
//! bridge from one host's port to another's, and nothing of the root
//! namespace. The whole chain is rewritten in one `nft -f` transaction per
//! change, so a reader never sees half a partition.
//!
//! Invariants: ARP always passes, so a one-way partition stays one-way (the
//! open direction can still resolve addresses) and loss hits only IP
//! traffic; a host index names a bridge port that exists.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

/// The nftables table (bridge family) that holds the faults.
pub(crate) const TABLE: &str = "rswarm_faults";

/// Its chain on the bridge's forward hook.
pub(crate) const CHAIN: &str = "forward";

/// The faults between the hosts of one fabric, by host index.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct FaultSet {
    /// (from, to): IP traffic from `from` to `to` is dropped.
    blocked: BTreeSet<(usize, usize)>,
    /// Hosts whose IP traffic is dropped both ways, whatever the peer.
    cut: BTreeSet<usize>,
    /// Hosts whose link drops this percentage of IP packets, each way.
    loss_percent: BTreeMap<usize, u8>,
}

impl FaultSet {
    /// Drops traffic from every host of `from` to every host of `to`.
    pub(crate) fn block(&mut self, from: &[usize], to: &[usize]) {
        for &f in from {
            for &t in to.iter().filter(|&&t| t != f) {
                self.blocked.insert((f, t));
            }
        }
    }

    /// Cuts `host` off from every other host.
    pub(crate) fn cut(&mut self, host: usize) {
        self.cut.insert(host);
    }

    /// Sets the loss on `host`'s link; 0 removes it.
    pub(crate) fn set_loss(&mut self, host: usize, percent: u8) {
        if percent == 0 {
            self.loss_percent.remove(&host);
        } else {
            self.loss_percent.insert(host, percent.min(100));
        }
    }

    /// Removes every fault that involves `host`.
    pub(crate) fn heal(&mut self, host: usize) {
        self.blocked.retain(|&(f, t)| f != host && t != host);
        self.cut.remove(&host);
        self.loss_percent.remove(&host);
    }

    /// Whether no fault is in force.
    pub(crate) fn is_empty(&self) -> bool {
        self.blocked.is_empty() && self.cut.is_empty() && self.loss_percent.is_empty()
    }

    /// The `nft -f` script that replaces the chain's rules with these
    /// faults; `port(i)` names host `i`'s bridge port.
    pub(crate) fn render(&self, port: impl Fn(usize) -> String) -> String {
        let mut script = format!("flush chain bridge {TABLE} {CHAIN}\n");
        let mut rule = |body: String| {
            let _ = writeln!(script, "add rule bridge {TABLE} {CHAIN} {body}");
        };
        if self.is_empty() {
            return script;
        }
        rule("ether type arp accept".to_string());
        for &host in &self.cut {
            rule(format!("iifname \"{}\" drop", port(host)));
            rule(format!("oifname \"{}\" drop", port(host)));
        }
        for &(from, to) in &self.blocked {
            rule(format!(
                "iifname \"{}\" oifname \"{}\" drop",
                port(from),
                port(to)
            ));
        }
        for (&host, &percent) in &self.loss_percent {
            for direction in ["iifname", "oifname"] {
                rule(format!(
                    "{direction} \"{}\" numgen random mod 100 < {percent} drop",
                    port(host)
                ));
            }
        }
        script
    }

    /// A one-line account for failure messages and logs.
    pub(crate) fn describe(&self, name: impl Fn(usize) -> String) -> String {
        if self.is_empty() {
            return "no faults".to_string();
        }
        let mut parts = Vec::new();
        for &host in &self.cut {
            parts.push(format!("{} cut off", name(host)));
        }
        for &(from, to) in &self.blocked {
            parts.push(format!("{} -/-> {}", name(from), name(to)));
        }
        for (&host, &percent) in &self.loss_percent {
            parts.push(format!("{} loses {percent}%", name(host)));
        }
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(i: usize) -> String {
        format!("p-h{i}")
    }

    #[test]
    fn no_faults_is_an_empty_chain() {
        let faults = FaultSet::default();
        assert_eq!(
            faults.render(port),
            "flush chain bridge rswarm_faults forward\n"
        );
    }

    #[test]
    fn a_partition_blocks_both_directions_of_every_pair_named_and_no_other() {
        let mut faults = FaultSet::default();
        faults.block(&[0], &[1, 2]);
        faults.block(&[1, 2], &[0]);
        let script = faults.render(port);
        for (from, to) in [(0, 1), (0, 2), (1, 0), (2, 0)] {
            let rule = format!("iifname \"p-h{from}\" oifname \"p-h{to}\" drop");
            assert!(script.contains(&rule), "{rule} missing:\n{script}");
        }
        assert!(!script.contains("iifname \"p-h1\" oifname \"p-h2\""));
        assert!(script.contains("ether type arp accept"));
    }

    #[test]
    fn a_host_is_never_blocked_from_itself() {
        let mut faults = FaultSet::default();
        faults.block(&[0, 1], &[1]);
        assert_eq!(faults.describe(|i| format!("h{i}")), "h0 -/-> h1");
    }

    #[test]
    fn loss_applies_both_ways_and_zero_removes_it() {
        let mut faults = FaultSet::default();
        faults.set_loss(3, 20);
        let script = faults.render(port);
        assert!(script.contains("iifname \"p-h3\" numgen random mod 100 < 20 drop"));
        assert!(script.contains("oifname \"p-h3\" numgen random mod 100 < 20 drop"));
        faults.set_loss(3, 0);
        assert!(faults.is_empty());
    }

    #[test]
    fn healing_a_host_removes_only_its_faults() {
        let mut faults = FaultSet::default();
        faults.block(&[0], &[1]);
        faults.block(&[2], &[3]);
        faults.cut(1);
        faults.set_loss(1, 5);
        faults.heal(1);
        assert_eq!(faults.describe(|i| format!("h{i}")), "h2 -/-> h3");
    }
}
