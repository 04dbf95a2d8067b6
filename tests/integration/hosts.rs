//! The multi-host harness itself: hosts made of network namespaces reach
//! each other, the network faults do exactly what they say, and nothing a
//! run creates outlives it — after a drop, an interrupt or a SIGKILL.
//!
//! These tests need root, iproute2, nftables and util-linux; without them
//! they fail with a message that names what is missing.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use rswarm_integration::{Cluster, Hosts, leftovers, processes, sweep_dead_runs, wait_until};

/// How long a connection attempt across a blocked path waits.
const BLOCKED_CONNECT: Duration = Duration::from_millis(300);

/// Every ordered pair of distinct names.
fn all_pairs(names: &[&str]) -> BTreeSet<(String, String)> {
    let mut pairs = BTreeSet::new();
    for a in names {
        for b in names.iter().filter(|b| *b != a) {
            pairs.insert((a.to_string(), b.to_string()));
        }
    }
    pairs
}

fn without(
    mut pairs: BTreeSet<(String, String)>,
    cut: &[(&str, &str)],
) -> BTreeSet<(String, String)> {
    for (a, b) in cut {
        pairs.remove(&(a.to_string(), b.to_string()));
    }
    pairs
}

/// Goal: every host reaches every other host over TCP on its own address,
/// and each host has just its loopback and its one underlay link.
/// Method: a listener on each of 3 hosts; connect from every other host.
#[test]
fn hosts_reach_each_other() -> Result<()> {
    let hosts = Hosts::new(&["a", "b", "c"])?;
    let ips: BTreeSet<_> = hosts.all().iter().map(|h| h.ip()).collect();
    ensure!(ips.len() == 3, "addresses not distinct: {ips:?}");
    for to in hosts.all() {
        let listener = hosts.tcp_listener(to.name())?;
        let addr = listener.local_addr()?;
        ensure!(addr.ip() == to.ip(), "listener on {addr}, not {}", to.ip());
        for from in hosts.all().iter().filter(|h| h.name() != to.name()) {
            ensure!(
                hosts.tcp_connects(from.name(), addr, Duration::from_secs(5))?,
                "{} cannot connect to {} at {addr}",
                from.name(),
                to.name()
            );
        }
        let links = Command::new("ip")
            .args(["-n", to.netns_name(), "-o", "link", "show"])
            .output()?;
        let links = String::from_utf8_lossy(&links.stdout);
        ensure!(
            links.lines().count() == 2 && links.contains(" lo:") && links.contains(" eth0@"),
            "host {} has links:\n{links}",
            to.name()
        );
    }
    Ok(())
}

/// Goal: a partition blocks exactly the pairs named, both ways or one way;
/// a cut-off host reaches no one; healing restores every path.
/// Method: 4 hosts; after each change, probe all 12 ordered pairs with UDP
/// at once and compare with the expected set; also check TCP across a
/// symmetric partition.
#[test]
fn partitions_block_exactly_the_pairs_named_and_heal() -> Result<()> {
    let names = ["a", "b", "c", "d"];
    let hosts = Hosts::new(&names)?;
    let all = all_pairs(&names);
    let check = |expected: &BTreeSet<(String, String)>, what: &str| -> Result<()> {
        let reached = hosts.reachability()?;
        ensure!(
            &reached == expected,
            "{what} ({}): unexpected {:?}, missing {:?}",
            hosts.describe_faults(),
            reached.difference(expected).collect::<Vec<_>>(),
            expected.difference(&reached).collect::<Vec<_>>()
        );
        Ok(())
    };
    check(&all, "no faults")?;

    hosts.partition(&["a"], &["b", "c"])?;
    let split = without(
        all.clone(),
        &[("a", "b"), ("b", "a"), ("a", "c"), ("c", "a")],
    );
    check(&split, "a | b c")?;
    let b = SocketAddr::from((hosts.host("b")?.ip(), 9));
    let listener_d = hosts.tcp_listener("d")?;
    ensure!(
        !hosts.tcp_connects("a", b, BLOCKED_CONNECT)?,
        "TCP crossed the partition"
    );
    ensure!(
        hosts.tcp_connects("a", listener_d.local_addr()?, Duration::from_secs(5))?,
        "TCP to a host outside the partition failed"
    );
    hosts.heal_all()?;
    check(&all, "healed")?;

    hosts.partition_one_way(&["a"], &["b"])?;
    check(&without(all.clone(), &[("a", "b")]), "a -> b only")?;
    hosts.heal_all()?;

    hosts.partition(&["a"], &["b"])?;
    hosts.isolate("c")?;
    let c_pairs: Vec<(&str, &str)> = names
        .iter()
        .filter(|n| **n != "c")
        .flat_map(|n| [(*n, "c"), ("c", *n)])
        .collect();
    let mut expected = without(all.clone(), &c_pairs);
    expected = without(expected, &[("a", "b"), ("b", "a")]);
    check(&expected, "a | b, c cut off")?;
    hosts.heal("c")?;
    check(
        &without(all.clone(), &[("a", "b"), ("b", "a")]),
        "c healed, a | b kept",
    )?;
    hosts.heal_all()?;
    check(&all, "all healed")
}

/// Goal: loss on a host's link drops about the share asked, and only while
/// it is set.
/// Method: 2,000 UDP datagrams a → b with no loss (all arrive), with 30 %
/// loss on a's link (70 % ± 6 % arrive: the binomial's standard deviation
/// is 1 %), and after the loss is removed.
#[test]
fn packet_loss_drops_roughly_the_share_asked() -> Result<()> {
    const SENT: usize = 2_000;
    let hosts = Hosts::new(&["a", "b"])?;
    let share = |hosts: &Hosts| -> Result<f64> {
        Ok(hosts.udp_delivered("a", "b", SENT)? as f64 / SENT as f64)
    };
    let clean = share(&hosts)?;
    ensure!(clean >= 0.98, "{clean:.3} delivered without loss");
    hosts.set_loss("a", 30)?;
    let lossy = share(&hosts)?;
    ensure!(
        (0.64..=0.76).contains(&lossy),
        "{lossy:.3} delivered with 30 % loss"
    );
    hosts.set_loss("a", 0)?;
    let healed = share(&hosts)?;
    ensure!(
        healed >= 0.98,
        "{healed:.3} delivered after the loss was removed"
    );
    Ok(())
}

/// The root namespace's links, by name.
fn root_links() -> Result<BTreeSet<String>> {
    let out = Command::new("ip").args(["-o", "link", "show"]).output()?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_string())
        .collect())
}

/// Whether `pid` is a live process (zombies are dead).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

/// Goal: dropping a cluster on hosts removes every namespace, link, mount,
/// process and directory it made, and leaves the root namespace's links as
/// they were.
/// Method: list them before, while a 1-manager 1-worker cluster runs a task,
/// and after the drop.
#[test]
fn cleanup_leaves_nothing_behind() -> Result<()> {
    let links_before = root_links()?;
    let c = Cluster::form_on_hosts(1, 1)?;
    let prefix = c.hosts()?.prefix().to_string();
    c.node("m1").ok(&[
        "service",
        "create",
        "-d",
        "--driver",
        "process",
        "--name",
        "idle",
        "--constraint",
        "node.role==worker",
        "/bin/sleep",
        "61101",
    ])?;
    let tasks = || -> Vec<u32> {
        processes()
            .into_iter()
            .filter(|(_, cmd)| cmd == "/bin/sleep 61101")
            .map(|(pid, _)| pid)
            .collect()
    };
    wait_until(Duration::from_secs(30), || Ok(tasks().len() == 1))
        .with_context(|| format!("task processes: {:?}", tasks()))?;
    let task_pids = tasks();
    let mut pids: Vec<u32> = c.nodes.iter().filter_map(|n| n.pid()).collect();
    pids.extend(c.node("w1").shim_pids());
    pids.extend(&task_pids);
    let during = leftovers(&prefix);
    for kind in ["namespace", "mount", "process", "directory"] {
        ensure!(
            during.iter().any(|l| l.starts_with(kind)),
            "no {kind} of the run found while it runs, so the check would prove nothing: {during:#?}"
        );
    }
    // The task runs in the worker's namespace, not the root one.
    let w1_netns = c.hosts()?.host("w1")?.netns_path();
    let task_netns = std::fs::read_link(format!("/proc/{}/ns/net", task_pids[0]))?;
    let w1_netns_id = std::fs::metadata(&w1_netns).map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.ino()
    })?;
    ensure!(
        task_netns
            .to_string_lossy()
            .contains(&w1_netns_id.to_string()),
        "task in {task_netns:?}, not in w1's namespace {w1_netns_id}"
    );
    drop(c);
    let after = leftovers(&prefix);
    ensure!(after.is_empty(), "left behind: {after:#?}");
    let alive: Vec<u32> = pids.into_iter().filter(|p| alive(*p)).collect();
    ensure!(alive.is_empty(), "still running: {alive:?}");
    let links_after = root_links()?;
    ensure!(
        links_after == links_before,
        "the root namespace's links changed: {links_before:?} -> {links_after:?}"
    );
    Ok(())
}

/// A running `rswarm-hosts` holder: its process and its run prefix. It
/// holds the holder's stdin open: at its end, the holder would exit by
/// itself.
struct Holder {
    child: std::process::Child,
    _stdin: std::process::ChildStdin,
    prefix: String,
}

/// Starts `rswarm-hosts` (one manager on a host) and waits until it is ready.
fn start_holder() -> Result<Holder> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rswarm-hosts"))
        .env("RSWARM_BIN", rswarm_integration::rswarm_bin())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start rswarm-hosts")?;
    let stdin = child.stdin.take().context("no stdin")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut prefix = None;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(p) = line.strip_prefix("prefix ") {
            prefix = Some(p.to_string());
        }
        if line == "ready" {
            break;
        }
    }
    let prefix = prefix.context("rswarm-hosts printed no prefix")?;
    Ok(Holder {
        child,
        _stdin: stdin,
        prefix,
    })
}

/// Goal: a run that is interrupted removes what it made; a run killed with
/// SIGKILL loses its daemons at once and the next run sweeps the rest.
/// Method: `rswarm-hosts` holds a 1-manager cluster on hosts; send it
/// SIGINT and check nothing is left; start another, SIGKILL it, check its
/// daemon died and its namespaces stayed, then sweep and check again.
#[test]
fn interrupted_and_killed_runs_leave_nothing_behind() -> Result<()> {
    let mut holder = start_holder()?;
    ensure!(
        !leftovers(&holder.prefix).is_empty(),
        "the holder's run is not visible"
    );
    let status = Command::new("kill")
        .args(["-INT", &holder.child.id().to_string()])
        .status()?;
    ensure!(status.success(), "kill -INT failed");
    let exit = holder.child.wait()?;
    ensure!(exit.code() == Some(130), "interrupted holder exited {exit}");
    let left = leftovers(&holder.prefix);
    ensure!(left.is_empty(), "an interrupt left: {left:#?}");

    let mut holder = start_holder()?;
    holder.child.kill()?;
    holder.child.wait()?;
    let prefix = holder.prefix.clone();
    let daemons = |prefix: &str| -> Vec<(u32, String)> {
        processes()
            .into_iter()
            .filter(|(_, cmd)| cmd.contains(" daemon ") && cmd.contains(prefix))
            .collect()
    };
    wait_until(Duration::from_secs(5), || Ok(daemons(&prefix).is_empty()))
        .with_context(|| format!("daemons outlived their killed test: {:?}", daemons(&prefix)))?;
    ensure!(
        leftovers(&prefix)
            .iter()
            .any(|l| l.starts_with("namespace")),
        "a SIGKILL'd run left no namespace, so the sweep is not exercised"
    );
    let swept = sweep_dead_runs();
    ensure!(swept.contains(&prefix), "sweep removed {swept:?}");
    let left = leftovers(&prefix);
    ensure!(left.is_empty(), "the sweep left: {left:#?}");
    Ok(())
}
