//! The foundation: forming a cluster from tokens, leader failover, restart
//! from disk, token and certificate security, membership changes.
//!
//! Tests that look at node addresses or break the network run on hosts
//! (one network namespace and address per node); the others run on
//! loopback, which is cheaper and tests the same code.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use rswarm_integration::{Cluster, wait_until};

/// Goal: 3 managers + 2 workers, each on a host of its own, form a cluster
/// from join tokens, and every node shows its own address.
/// Method: init m1, join the others with the tokens it prints, then check
/// `node ls` from every manager: 5 Ready nodes, exactly one Leader, `*` on
/// self; `node inspect` gives each node its host's address.
#[test]
fn cluster_forms_from_tokens() -> Result<()> {
    let c = Cluster::form_on_hosts(3, 2)?;
    nodes_show_their_own_addresses(&c)?;
    for m in ["m1", "m2", "m3"] {
        let nodes = c.node_ls(m)?;
        ensure!(nodes.len() == 5, "{m} lists {} nodes", nodes.len());
        ensure!(
            nodes.iter().all(|n| n["Status"] == "Ready"),
            "not all Ready: {nodes:?}"
        );
        let leaders = nodes
            .iter()
            .filter(|n| n["ManagerStatus"] == "Leader")
            .count();
        ensure!(leaders == 1, "{leaders} leaders listed by {m}");
        let managers = nodes.iter().filter(|n| n["ManagerStatus"] != "").count();
        ensure!(managers == 3, "{managers} managers listed by {m}");
        let me = nodes.iter().filter(|n| n["Self"] == true).count();
        ensure!(me == 1, "Self is set on {me} nodes");
    }
    // The table marks the local node with '*' and shows Docker's columns.
    let table = c.node("m2").ok(&["node", "ls"])?;
    let header = table.lines().next().unwrap_or_default();
    for col in ["ID", "HOSTNAME", "STATUS", "AVAILABILITY", "MANAGER STATUS"] {
        ensure!(header.contains(col), "missing column {col}: {header}");
    }
    let m2_line = table
        .lines()
        .find(|l| l.contains(" m2 "))
        .context("m2 missing")?;
    ensure!(m2_line.contains(" * "), "local node not starred: {m2_line}");
    // A worker is not a manager: control commands say what to do.
    let (code, err) = c.node("w1").fails(&["node", "ls"])?;
    ensure!(
        code == 1 && err.contains("not a cluster manager"),
        "{code}: {err}"
    );
    Ok(())
}

/// Goal: the cluster survives the loss of its leader and loses no write.
/// Method: on hosts, kill -9 the leader, write a label through a survivor,
/// restart the old leader from its data dir and check it catches up; then
/// restart all managers at once and check the state is intact.
#[test]
fn leader_failover_and_restart_from_disk() -> Result<()> {
    let mut c = Cluster::form_on_hosts(3, 1)?;
    let leader = c.leader("m1")?;
    let survivor = if leader == "m1" { "m2" } else { "m1" };
    c.node_mut(&leader).kill9();
    wait_until(Duration::from_secs(15), || {
        Ok(c.leader(survivor).is_ok_and(|l| l != leader))
    })
    .context("no new leader after the old one was killed")?;
    c.node(survivor)
        .ok(&["node", "update", "--label-add", "zone=a", "w1"])?;
    let nodes = c.node_ls(survivor)?;
    let old = nodes
        .iter()
        .find(|n| n["Hostname"] == leader.as_str())
        .context("old leader not listed")?;
    ensure!(
        old["ManagerStatus"] == "Unreachable",
        "dead leader shows {}",
        old["ManagerStatus"]
    );
    // The old leader comes back and catches up with the committed write.
    c.node_mut(&leader).start()?;
    let w1 = c.node(survivor).ok(&["node", "inspect", "w1"])?;
    let version: u64 = serde_json::from_str::<serde_json::Value>(&w1)?[0]["Version"]["Index"]
        .as_u64()
        .context("no version")?;
    wait_until(Duration::from_secs(20), || {
        let out = c.node(&leader).ok(&["info"])?;
        Ok(out.lines().any(|l| l.trim().starts_with("Raft: follower"))
            && store_version(&c, &leader)? >= version)
    })
    .context("the restarted leader did not catch up")?;
    // Restart every manager at once: the state is intact.
    for m in ["m1", "m2", "m3"] {
        c.node_mut(m).kill9();
    }
    for m in ["m1", "m2", "m3"] {
        c.node_mut(m).start()?;
    }
    c.wait_ready(4)?;
    let w1 = c.node("m3").ok(&["node", "inspect", "w1"])?;
    let doc: serde_json::Value = serde_json::from_str(&w1)?;
    ensure!(doc[0]["Spec"]["Labels"]["zone"] == "a", "label lost: {doc}");
    Ok(())
}

/// Every node's `node inspect` shows its own host's address, and the
/// managers' Raft addresses are theirs too: all distinct.
fn nodes_show_their_own_addresses(c: &Cluster) -> Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for n in &c.nodes {
        let doc = c.node_inspect("m2", &n.name)?;
        let addr = doc["Status"]["Addr"].as_str().unwrap_or_default();
        ensure!(
            addr == n.addr() && addr.starts_with(&format!("{}:", n.ip())),
            "{} shows address {addr:?}, its host is {}",
            n.name,
            n.addr()
        );
        ensure!(seen.insert(addr.to_string()), "{addr} shown twice");
        if n.name.starts_with('m') {
            let raft = doc["ManagerStatus"]["Addr"].as_str().unwrap_or_default();
            ensure!(raft == n.addr(), "{} manager address {raft:?}", n.name);
        }
    }
    Ok(())
}

fn store_version(c: &Cluster, node: &str) -> Result<u64> {
    let out = c.node(node).ok(&["info"])?;
    let line = out
        .lines()
        .find(|l| l.trim().starts_with("Store Version:"))
        .context("no store version")?;
    Ok(line
        .trim()
        .trim_start_matches("Store Version:")
        .trim()
        .parse()?)
}

/// Goal: bad tokens are refused, each with its own message, and add no node.
/// Method: a wrong secret, a rotated-away token, a token of another cluster
/// and a malformed token, tried by a fresh daemon; `node ls` stays at 1.
#[test]
fn bad_tokens_are_refused_clearly() -> Result<()> {
    let c = Cluster::form(1, 0)?;
    let other = Cluster::form(1, 0)?;
    let joiner = Cluster::start(&["x1"])?;
    let m1 = c.node("m1");
    let x1 = joiner.node("x1");
    let good = m1.ok(&["join-token", "-q", "worker"])?.trim().to_string();
    let wrong_secret = format!("{}{}", &good[..good.len() - 25], "0".repeat(25));
    let try_join = |token: &str| {
        x1.fails(&[
            "join",
            "--token",
            token,
            "--advertise-addr",
            &x1.addr(),
            &m1.addr(),
        ])
    };

    let (code, err) = try_join(&wrong_secret)?;
    ensure!(
        code == 1 && err.contains("not valid in this cluster"),
        "wrong secret: {err}"
    );

    m1.ok(&["join-token", "--rotate", "worker"])?;
    let (_, err) = try_join(&good)?;
    ensure!(
        err.contains("may have been rotated"),
        "rotated token: {err}"
    );

    let foreign = other
        .node("m1")
        .ok(&["join-token", "-q", "worker"])?
        .trim()
        .to_string();
    let (_, err) = try_join(&foreign)?;
    ensure!(
        err.contains("does not match the join token"),
        "other cluster: {err}"
    );

    let (_, err) = try_join("SWMTKN-1-abc")?;
    ensure!(err.contains("invalid join token"), "malformed: {err}");

    ensure!(c.node_ls("m1")?.len() == 1, "a refused join added a node");
    // The current token still works.
    let current = m1.ok(&["join-token", "-q", "worker"])?.trim().to_string();
    x1.ok(&[
        "join",
        "--token",
        &current,
        "--advertise-addr",
        &x1.addr(),
        &m1.addr(),
    ])?;
    wait_until(Duration::from_secs(10), || Ok(c.node_ls("m1")?.len() == 2))?;
    Ok(())
}

/// Goal: roles are enforced with certificates, and a removed node is shut out.
/// Method: call the control API over mutual TLS with a worker's own
/// certificate (PermissionDenied); remove the worker and check its
/// heartbeats and its certificate are refused.
#[test]
fn certificates_enforce_roles_and_removal() -> Result<()> {
    let mut c = Cluster::form(1, 1)?;
    let manager_addr = c.node("m1").addr();
    let w1_certs = c.node("w1").data_dir.join("certs");
    let rt = tokio::runtime::Runtime::new()?;
    let code = rt.block_on(call_list_nodes(&w1_certs, &manager_addr))?;
    ensure!(
        code == tonic::Code::PermissionDenied,
        "worker cert got {code:?}"
    );
    let m1_certs = c.node("m1").data_dir.join("certs");
    let code = rt.block_on(call_list_nodes(&m1_certs, &manager_addr))?;
    ensure!(code == tonic::Code::Ok, "manager cert got {code:?}");

    // A live node cannot be removed without --force.
    let (_, err) = c.node("m1").fails(&["node", "rm", "w1"])?;
    ensure!(err.contains("--force"), "{err}");
    c.node_mut("w1").kill9();
    c.node("m1").ok(&["node", "rm", "--force", "w1"])?;
    ensure!(c.node_ls("m1")?.len() == 1, "w1 still listed");
    c.node_mut("w1").start()?;
    wait_until(Duration::from_secs(10), || {
        Ok(c.node("w1")
            .info()?
            .get("Cluster")
            .is_some_and(|s| s == "removed"))
    })
    .context("the removed node was not told")?;
    let code = rt.block_on(call_list_nodes(&w1_certs, &manager_addr))?;
    ensure!(
        code == tonic::Code::PermissionDenied,
        "removed node got {code:?}"
    );
    ensure!(c.node_ls("m1")?.len() == 1, "the removed node came back");
    Ok(())
}

/// ListNodes over mutual TLS with the certificates in `certs`.
async fn call_list_nodes(certs: &std::path::Path, addr: &str) -> Result<tonic::Code> {
    rswarm_pki::install_crypto_provider();
    let creds = rswarm_pki::NodeCredentials::load(certs)?.context("no certificates")?;
    let handle = rswarm_pki::CredentialsHandle::new(creds)?;
    let tls = rswarm_pki::client_config(&handle)?;
    let channel = rswarm_pki::tls_channel(addr, tls, rswarm_pki::MANAGER_SERVER_NAME)?;
    let mut client = rswarm_proto::control_client::ControlClient::new(channel);
    Ok(
        match client.list_nodes(rswarm_proto::ListNodesRequest {}).await {
            Ok(_) => tonic::Code::Ok,
            Err(s) => s.code(),
        },
    )
}

/// Goal: demote and promote change Raft membership without losing quorum,
/// and a demotion that would lose quorum is refused.
/// Method: demote m3 (2 managers left), promote it back (3), then stop m2
/// and try to demote m3: refused with the reason.
#[test]
fn demote_and_promote_keep_quorum() -> Result<()> {
    let mut c = Cluster::form(3, 0)?;
    let managers = |c: &Cluster| -> Result<usize> {
        Ok(c.node_ls("m1")?
            .iter()
            .filter(|n| n["ManagerStatus"] != "")
            .count())
    };
    c.node("m1").ok(&["node", "demote", "m3"])?;
    wait_until(Duration::from_secs(20), || {
        Ok(managers(&c)? == 2
            && c.node("m3")
                .info()?
                .get("Is Manager")
                .is_some_and(|v| v == "false"))
    })
    .context("m3 was not demoted")?;
    c.node("m1").ok(&["node", "promote", "m3"])?;
    wait_until(Duration::from_secs(30), || {
        Ok(managers(&c)? == 3
            && c.node("m3")
                .info()?
                .get("Raft")
                .is_some_and(|v| v.starts_with("follower") || v.starts_with("leader")))
    })
    .with_context(|| format!("m3 was not promoted\n{}", c.report()))?;
    // Make sure m1 leads, so that stopping m2 leaves a leader.
    let leader = c.leader("m1")?;
    let (keep, stop) = if leader == "m2" {
        ("m2", "m1")
    } else {
        (leader.as_str(), if leader == "m1" { "m2" } else { "m1" })
    };
    let keep = keep.to_string();
    c.node_mut(stop).kill9();
    std::thread::sleep(Duration::from_secs(3));
    let (_, err) = c.node(&keep).fails(&["node", "demote", "m3"])?;
    ensure!(err.contains("lose quorum"), "{err}");
    ensure!(managers(&c)? == 3, "membership changed");
    Ok(())
}

/// Goal: without a quorum, calls fail within 5 s saying why — never hang;
/// a node that stops heartbeating is marked Down; paused managers are not
/// counted as reachable.
/// Method: 3 managers + 1 worker; kill the worker (Down within a few
/// heartbeats); pause two managers and read the count `node ls` gives on
/// the third (their kernels still accept TCP); resume them; kill them and
/// time `node ls` on the survivor.
#[test]
fn no_quorum_fails_fast_and_dead_nodes_go_down() -> Result<()> {
    let mut c = Cluster::form(3, 1)?;
    c.node_mut("w1").kill9();
    wait_until(Duration::from_secs(10), || {
        Ok(c.node_ls("m1")?
            .iter()
            .any(|n| n["Hostname"] == "w1" && n["Status"] == "Down"))
    })
    .context("w1 was not marked Down")?;
    c.node("m2").pause()?;
    c.node("m3").pause()?;
    std::thread::sleep(Duration::from_secs(1));
    let paused = c.node("m1").fails(&["node", "ls"]);
    c.node("m2").resume()?;
    c.node("m3").resume()?;
    let (code, err) = paused?;
    ensure!(
        code == 1 && err.contains("1 of 3 managers reachable"),
        "{err}"
    );
    wait_until(Duration::from_secs(20), || Ok(c.node_ls("m1").is_ok()))
        .context("the managers did not recover from the pause")?;
    c.node_mut("m2").kill9();
    c.node_mut("m3").kill9();
    std::thread::sleep(Duration::from_secs(1));
    let started = std::time::Instant::now();
    let (code, err) = c.node("m1").fails(&["node", "ls"])?;
    let took = started.elapsed();
    ensure!(took < Duration::from_secs(6), "took {took:?}");
    // m1 may still know the dead leader (a failed pre-vote leaves its
    // vote as it was): then the call says it cannot reach it, with the same
    // count.
    ensure!(
        code == 1 && err.contains("1 of 3 managers reachable"),
        "{err}"
    );
    Ok(())
}

/// Goal: a client can follow the store's applied changes and resume from a
/// version without missing one.
/// Method: watch from the current version on a follower, update a label
/// through the leader, and receive that change; then resume from just
/// before it and receive it again.
#[test]
fn watch_streams_applied_changes_and_resumes() -> Result<()> {
    let c = Cluster::form(3, 0)?;
    let follower = if c.leader("m1")? == "m2" { "m3" } else { "m2" };
    let socket = c.node(follower).run_dir.join("rswarm.sock");
    let start = store_version(&c, follower)?;
    let rt = tokio::runtime::Runtime::new()?;
    let _runtime = rt.enter();
    let mut control =
        rswarm_proto::control_client::ControlClient::new(rswarm_pki::unix_channel(socket));
    let mut stream = rt
        .block_on(control.watch(rswarm_proto::WatchRequest {
            since_version: start,
        }))?
        .into_inner();
    c.node("m1")
        .ok(&["node", "update", "--label-add", "watched=yes", "m1"])?;
    let labelled =
        |e: &rswarm_proto::StoreEvent| match e.object.as_ref().and_then(|o| o.kind.as_ref()) {
            Some(rswarm_proto::object::Kind::Node(n)) => n
                .spec
                .as_ref()
                .and_then(|s| s.annotations.as_ref())
                .is_some_and(|a| a.labels.get("watched").is_some_and(|v| v == "yes")),
            _ => false,
        };
    let event = rt.block_on(async {
        loop {
            let next = tokio::time::timeout(Duration::from_secs(10), stream.message()).await;
            match next {
                Ok(Ok(Some(e))) if labelled(&e) => return Ok(e),
                Ok(Ok(Some(_))) => continue,
                other => anyhow::bail!("no labelled event: {other:?}"),
            }
        }
    })?;
    ensure!(
        event.version > start,
        "event version {} not after {start}",
        event.version
    );
    let mut again = rt
        .block_on(control.watch(rswarm_proto::WatchRequest {
            since_version: event.version - 1,
        }))?
        .into_inner();
    let first = rt
        .block_on(again.message())?
        .context("resumed watch ended")?;
    ensure!(
        first.version == event.version && labelled(&first),
        "resumed at {}",
        first.version
    );
    Ok(())
}

/// Goal: demoting the leader hands leadership over first, so the cluster
/// keeps a leader throughout and ends with the other two managers.
/// Method: demote the current leader through a follower; wait until it is a
/// worker, another manager leads, and writes still work.
#[test]
fn demoting_the_leader_transfers_leadership() -> Result<()> {
    let c = Cluster::form(3, 0)?;
    let leader = c.leader("m1")?;
    let via = if leader == "m1" { "m2" } else { "m1" };
    c.node(via).ok(&["node", "demote", &leader])?;
    wait_until(Duration::from_secs(30), || {
        let nodes = c.node_ls(via)?;
        let managers = nodes.iter().filter(|n| n["ManagerStatus"] != "").count();
        let new_leader = nodes
            .iter()
            .find(|n| n["ManagerStatus"] == "Leader")
            .and_then(|n| n["Hostname"].as_str())
            .map(str::to_string);
        let demoted = c
            .node(&leader)
            .info()?
            .get("Is Manager")
            .is_some_and(|v| v == "false");
        Ok(managers == 2 && demoted && new_leader.is_some_and(|l| l != leader))
    })
    .context("the leader was not demoted with a handover")?;
    c.node(via)
        .ok(&["node", "update", "--label-add", "after=demotion", via])?;
    Ok(())
}

/// Goal: a leader cut off from the network is replaced, cannot serve on its
/// own, and rejoins as a follower with every write it missed.
/// Method: 3 managers on hosts; cut the leader off; the other two elect a
/// new leader and take a write; the old leader's `node ls` fails within 6 s
/// saying there is no leader; heal; it follows and shows the write.
#[test]
fn an_isolated_leader_is_replaced_and_catches_up() -> Result<()> {
    let c = Cluster::form_on_hosts(3, 0)?;
    let old = c.leader("m1")?;
    let survivor = if old == "m1" { "m2" } else { "m1" };
    c.hosts()?.isolate(&old)?;
    wait_until(Duration::from_secs(20), || {
        Ok(c.leader(survivor).is_ok_and(|l| l != old))
    })
    .with_context(|| {
        format!(
            "no new leader after the old one was cut off\n{}",
            c.report()
        )
    })?;
    c.node(survivor).ok(&[
        "node",
        "update",
        "--label-add",
        "during=partition",
        survivor,
    ])?;
    let started = std::time::Instant::now();
    let (code, err) = c.node(&old).fails(&["node", "ls"])?;
    ensure!(
        started.elapsed() < Duration::from_secs(6),
        "the cut-off leader took {:?} to answer",
        started.elapsed()
    );
    ensure!(
        code == 1 && err.contains("cluster has no leader"),
        "{code}: {err}"
    );
    c.hosts()?.heal(&old)?;
    wait_until(Duration::from_secs(20), || {
        let doc = c.node_inspect(&old, survivor)?;
        Ok(doc["Spec"]["Labels"]["during"] == "partition")
    })
    .with_context(|| format!("the old leader did not catch up\n{}", c.report()))?;
    let leader = c.leader(&old)?;
    ensure!(leader != old, "the healed old leader took over again");
    Ok(())
}

/// Goal: a leader that freezes (SIGSTOP) is replaced, and follows the new
/// leader once it runs again.
/// Method: 3 managers; pause the leader (its process is stopped); the
/// others elect a new leader and take a write; resume; the old leader
/// reports itself a follower with the write applied.
#[test]
fn a_paused_leader_is_replaced_and_follows_on_resume() -> Result<()> {
    let c = Cluster::form(3, 0)?;
    let old = c.leader("m1")?;
    let survivor = if old == "m1" { "m2" } else { "m1" };
    c.node(&old).pause()?;
    ensure!(c.node(&old).is_paused(), "the daemon is not stopped");
    wait_until(Duration::from_secs(20), || {
        Ok(c.leader(survivor).is_ok_and(|l| l != old))
    })
    .with_context(|| format!("no new leader while the old one was paused\n{}", c.report()))?;
    c.node(survivor)
        .ok(&["node", "update", "--label-add", "during=pause", survivor])?;
    let version = store_version(&c, survivor)?;
    c.node(&old).resume()?;
    wait_until(Duration::from_secs(20), || {
        let raft = c
            .node(&old)
            .info()?
            .get("Raft")
            .cloned()
            .unwrap_or_default();
        Ok(raft.starts_with("follower") && store_version(&c, &old)? >= version)
    })
    .with_context(|| format!("the resumed leader did not follow\n{}", c.report()))?;
    Ok(())
}
