//! Services on a cluster of 3 managers + 3 workers, each its own daemon
//! process, running real processes with the process driver: placement,
//! scaling, global services, node failures, restarts, rolling updates.
//!
//! Every test uses its own `sleep` duration as a marker, so the processes a
//! test started can be counted in /proc without confusing them with
//! anything else on the machine.
//!
//! Tests that depend on where nodes are reached (logs fetched from each
//! node's address, a node that is alive but unreachable) run on hosts, one
//! network namespace and address per node; the others run on loopback.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use rswarm_integration::{Cluster, Node, processes, wait_until};
use rswarm_proto::{Task, TaskState, UpdateState};

const CONVERGE: Duration = Duration::from_secs(60);

fn state(t: &Task) -> i32 {
    t.status.as_ref().map_or(0, |s| s.state)
}

fn is_running(t: &Task) -> bool {
    t.desired_state == TaskState::Running as i32 && state(t) == TaskState::Running as i32
}

fn running(node: &Node, service: &str) -> Result<Vec<Task>> {
    Ok(node
        .tasks(service)?
        .into_iter()
        .filter(is_running)
        .collect())
}

/// Waits until `service` has exactly `n` running tasks (and no other
/// runnable one), as seen through `node`.
fn wait_running(c: &Cluster, node: &str, service: &str, n: usize) -> Result<Vec<Task>> {
    let mut last = Vec::new();
    wait_until(CONVERGE, || {
        let tasks = c.node(node).tasks(service)?;
        let runnable = tasks
            .iter()
            .filter(|t| t.desired_state <= TaskState::Running as i32)
            .count();
        last = tasks.into_iter().filter(is_running).collect();
        Ok(last.len() == n && runnable == n)
    })
    .with_context(|| format!("{service} did not reach {n} running tasks\n{}", c.report()))?;
    Ok(last)
}

/// PIDs of processes whose command line is exactly `cmd`.
fn pids_of(cmd: &str) -> Vec<u32> {
    processes()
        .into_iter()
        .filter(|(_, c)| c == cmd)
        .map(|(pid, _)| pid)
        .collect()
}

fn wait_processes(cmd: &str, n: usize) -> Result<Vec<u32>> {
    let mut last = Vec::new();
    wait_until(CONVERGE, || {
        last = pids_of(cmd);
        Ok(last.len() == n)
    })
    .with_context(|| format!("expected {n} processes '{cmd}', found {}", last.len()))?;
    Ok(last)
}

/// Running tasks per node ID.
fn per_node(tasks: &[Task]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for t in tasks {
        *counts.entry(t.node_id.clone()).or_default() += 1;
    }
    counts
}

fn ids(c: &Cluster, names: &[&str]) -> Result<Vec<String>> {
    names.iter().map(|n| c.node(n).node_id()).collect()
}

/// Goal: a replicated service runs real processes spread over the workers,
/// scales up and down, and a global service follows the nodes.
/// Method: on hosts, 6 replicas constrained to workers → 6 `sleep`
/// processes, 2 per worker, each task's PID is one of them; scale to 9 (3
/// per worker) and 2; a global service runs once per node and once more on
/// a node that joins (on a new host).
#[test]
fn services_place_scale_and_follow_nodes() -> Result<()> {
    let mut c = Cluster::form_on_hosts(3, 3)?;
    let workers = ids(&c, &["w1", "w2", "w3"])?;
    let m1 = c.node("m1");
    let cmd = "/bin/sleep 61001";
    m1.ok(&[
        "service",
        "create",
        "--driver",
        "process",
        "--name",
        "sleepy",
        "--replicas",
        "6",
        "--constraint",
        "node.role==worker",
        "/bin/sleep",
        "61001",
    ])?;
    let tasks = wait_running(&c, "m1", "sleepy", 6)?;
    let counts = per_node(&tasks);
    ensure!(
        workers.iter().all(|w| counts.get(w) == Some(&2)),
        "not 2 per worker: {counts:?}"
    );
    let pids = wait_processes(cmd, 6)?;
    for t in &tasks {
        let pid = t.status.as_ref().map_or(0, |s| s.pid);
        ensure!(
            pids.contains(&pid),
            "task pid {pid} is not a running '{cmd}': {pids:?}"
        );
    }
    let ls = m1.ok(&["service", "ls"])?;
    ensure!(
        ls.contains("sleepy") && ls.contains("6/6"),
        "service ls:\n{ls}"
    );

    m1.ok(&["service", "scale", "sleepy=9"])?;
    let counts = per_node(&wait_running(&c, "m1", "sleepy", 9)?);
    ensure!(
        workers.iter().all(|w| counts.get(w) == Some(&3)),
        "not 3 per worker: {counts:?}"
    );
    wait_processes(cmd, 9)?;
    m1.ok(&["service", "scale", "sleepy=2"])?;
    wait_running(&c, "m1", "sleepy", 2)?;
    wait_processes(cmd, 2)?;

    m1.ok(&[
        "service",
        "create",
        "--driver",
        "process",
        "--mode",
        "global",
        "--name",
        "everywhere",
        "/bin/sleep",
        "61002",
    ])?;
    let tasks = wait_running(&c, "m1", "everywhere", 6)?;
    ensure!(per_node(&tasks).len() == 6, "not one per node: {tasks:?}");
    c.join_worker("w4", "m1")?;
    let tasks = wait_running(&c, "m1", "everywhere", 7)?;
    let w4 = c.node("w4").node_id()?;
    ensure!(
        tasks.iter().any(|t| t.node_id == w4),
        "the new node got no global task"
    );
    wait_processes("/bin/sleep 61002", 7)?;

    c.node("m1")
        .ok(&["service", "rm", "sleepy", "everywhere"])?;
    wait_processes(cmd, 0)?;
    wait_processes("/bin/sleep 61002", 0)?;

    logs_name_their_source_and_skip_unreachable_nodes(&c)
}

/// `service logs` from a follower: every task's line with its prefix,
/// fetched from each node's own address; then a node is cut off from the
/// network (alive, but its packets are dropped, so a connection times out
/// instead of being refused) and the command names it instead of hanging.
fn logs_name_their_source_and_skip_unreachable_nodes(c: &Cluster) -> Result<()> {
    // Logs come back from every node with the task prefix; a node that is
    // gone is named, not waited for.
    c.node("m1").ok(&[
        "service",
        "create",
        "--driver",
        "process",
        "--name",
        "talker",
        "--replicas",
        "3",
        "--constraint",
        "node.role==worker",
        "/bin/sh",
        "-c",
        "echo hello from the task; exec /bin/sleep 61007",
    ])?;
    wait_processes("/bin/sleep 61007", 3)?;
    let logs = c.node("m2").ok(&["service", "logs", "talker"])?;
    let lines: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("hello from the task"))
        .collect();
    ensure!(lines.len() == 3, "service logs:\n{logs}");
    ensure!(
        lines
            .iter()
            .all(|l| l.starts_with("talker.") && l.contains('@') && l.contains(" | ")),
        "no name.slot.task@node prefix:\n{logs}"
    );
    let talker = running(c.node("m1"), "talker")?;
    let victim = c
        .nodes
        .iter()
        .find(|n| {
            talker
                .iter()
                .any(|t| n.node_id().is_ok_and(|id| id == t.node_id))
        })
        .map(|n| n.name.clone())
        .context("no node runs talker")?;
    c.hosts()?.isolate(&victim)?;
    let started = std::time::Instant::now();
    let out = c.node("m1").rswarm(&["service", "logs", "talker"])?;
    ensure!(
        started.elapsed() < Duration::from_secs(15),
        "service logs hung on an unreachable node"
    );
    ensure!(out.status.success(), "service logs failed: {out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(err.contains(&victim), "the dead node is not named: {err}");
    c.node("m1").ok(&["service", "rm", "talker"])?;
    Ok(())
}

/// Goal: placement rules hold, and what cannot be placed says why.
/// Method: spread over a zone label (2 zone-a workers, 1 zone-b: b gets half),
/// max one replica per node with 4 replicas on 3 workers (one stays pending
/// and `create` exits 2 naming the reason), an unsatisfiable constraint,
/// and invalid specs refused with clear errors.
#[test]
fn placement_rules_and_clear_refusals() -> Result<()> {
    let c = Cluster::form(3, 3)?;
    let m1 = c.node("m1");
    for (w, zone) in [("w1", "a"), ("w2", "a"), ("w3", "b")] {
        m1.ok(&["node", "update", "--label-add", &format!("zone={zone}"), w])?;
    }
    let w3 = c.node("w3").node_id()?;
    m1.ok(&[
        "service",
        "create",
        "--driver",
        "process",
        "--name",
        "spread",
        "--replicas",
        "4",
        "--constraint",
        "node.role==worker",
        "--placement-pref",
        "spread=node.labels.zone",
        "/bin/sleep",
        "61003",
    ])?;
    let counts = per_node(&wait_running(&c, "m1", "spread", 4)?);
    ensure!(
        counts.get(&w3) == Some(&2),
        "zone b did not get half: {counts:?}"
    );

    let (code, err) = m1.fails(&[
        "service",
        "create",
        "--driver",
        "process",
        "--name",
        "capped",
        "--replicas",
        "4",
        "--max-replicas",
        "1",
        "--constraint",
        "node.role==worker",
        "/bin/sleep",
        "61004",
    ])?;
    ensure!(code == 2, "could-not-place exit code {code}: {err}");
    let tasks = m1.tasks("capped")?;
    let pending: Vec<&Task> = tasks
        .iter()
        .filter(|t| state(t) == TaskState::Pending as i32)
        .collect();
    ensure!(pending.len() == 1, "pending: {pending:?}");
    let reason = pending[0].status.as_ref().map_or("", |s| s.err.as_str());
    ensure!(
        reason.contains("no suitable node") && reason.contains("max replicas"),
        "reason: {reason}"
    );
    ensure!(running(m1, "capped")?.len() == 3, "max-per-node placement");

    let (code, err) = m1.fails(&[
        "service",
        "create",
        "--driver",
        "process",
        "--name",
        "nowhere",
        "--constraint",
        "node.labels.zone==mars",
        "/bin/sleep",
        "61005",
    ])?;
    ensure!(
        code == 2 && err.contains("no suitable node"),
        "{code}: {err}"
    );
    let ps = m1.ok(&["service", "ps", "--no-trunc", "nowhere"])?;
    ensure!(
        ps.contains("constraints"),
        "service ps does not say why:\n{ps}"
    );

    let refusals: [(&[&str], &str); 4] = [
        (&["--replicas", "-1"], "replicas"),
        (&["--constraint", "node.labels.zone=a"], "constraint"),
        (&["--mode", "global", "--replicas", "3"], "replicated mode"),
        (&["--driver", "nope"], "driver"),
    ];
    for (flags, word) in refusals {
        let mut args = vec!["service", "create", "--driver", "process", "--name", "bad"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["/bin/sleep", "61006"]);
        let (code, err) = m1.fails(&args)?;
        ensure!(
            code != 0 && err.to_lowercase().contains(word),
            "{flags:?}: exit {code}: {err}"
        );
    }
    ensure!(
        m1.fails(&["service", "inspect", "bad"]).is_ok(),
        "a refused spec created a service"
    );
    Ok(())
}

/// Goal: tasks leave drained and failed nodes, stale tasks stop when a node
/// returns, and a daemon restart keeps its processes.
/// Method: on hosts, drain w1 (its tasks move, its processes stop); cut w2
/// off the network (Down, its tasks replaced elsewhere while its own
/// processes keep running; once healed, they are stopped and nothing of
/// the service runs there); restart w3's daemon quickly: same task PIDs.
#[test]
fn tasks_survive_node_failures_and_daemon_restarts() -> Result<()> {
    let mut c = Cluster::form_on_hosts(3, 3)?;
    let [w1, w2, _w3] = <[String; 3]>::try_from(ids(&c, &["w1", "w2", "w3"])?)
        .map_err(|_| anyhow::anyhow!("three workers"))?;
    let cmd = "/bin/sleep 61010";
    c.node("m1").ok(&[
        "service",
        "create",
        "--driver",
        "process",
        "--name",
        "tough",
        "--replicas",
        "6",
        "--constraint",
        "node.role==worker",
        "/bin/sleep",
        "61010",
    ])?;
    wait_running(&c, "m1", "tough", 6)?;

    // The restart keeps the same processes: the shims hold them.
    let on_w3: BTreeMap<String, u32> = running(c.node("m1"), "tough")?
        .iter()
        .filter(|t| t.node_id == c.node("w3").node_id().unwrap_or_default())
        .map(|t| {
            (
                t.meta.clone().unwrap_or_default().id,
                t.status.clone().unwrap_or_default().pid,
            )
        })
        .collect();
    ensure!(on_w3.len() == 2, "w3 tasks: {on_w3:?}");
    c.node_mut("w3").kill9();
    c.node_mut("w3").start()?;
    std::thread::sleep(Duration::from_secs(3));
    let after: BTreeMap<String, u32> = running(c.node("m1"), "tough")?
        .iter()
        .filter(|t| on_w3.contains_key(&t.meta.clone().unwrap_or_default().id))
        .map(|t| {
            (
                t.meta.clone().unwrap_or_default().id,
                t.status.clone().unwrap_or_default().pid,
            )
        })
        .collect();
    ensure!(
        after == on_w3,
        "w3's tasks changed across a daemon restart: {on_w3:?} → {after:?}"
    );
    for pid in on_w3.values() {
        ensure!(
            std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} died across the daemon restart"
        );
    }

    c.node("m1")
        .ok(&["node", "update", "--availability", "drain", "w1"])?;
    wait_until(CONVERGE, || {
        let tasks = running(c.node("m1"), "tough")?;
        Ok(tasks.len() == 6 && tasks.iter().all(|t| t.node_id != w1))
    })
    .with_context(|| format!("tasks did not leave the drained node\n{}", c.report()))?;
    c.node("m1")
        .ok(&["node", "update", "--availability", "active", "w1"])?;
    wait_processes(cmd, 6)?;

    let on_w2 = || -> Result<usize> {
        let in_w2 = c.hosts()?.host("w2")?.pids();
        Ok(pids_of(cmd).iter().filter(|p| in_w2.contains(p)).count())
    };
    wait_until(CONVERGE, || Ok(on_w2()? > 0)).context("w2 runs no task")?;
    c.hosts()?.isolate("w2")?;
    wait_until(CONVERGE, || {
        let tasks = running(c.node("m1"), "tough")?;
        Ok(tasks.len() == 6 && tasks.iter().all(|t| t.node_id != w2))
    })
    .with_context(|| {
        format!(
            "tasks of the cut-off node were not replaced\n{}",
            c.report()
        )
    })?;
    // The cut-off node cannot know: its processes still run, beside the
    // replacements.
    let stale = on_w2()?;
    ensure!(stale > 0, "the cut-off node's tasks stopped on their own");
    wait_processes(cmd, 6 + stale)?;
    c.hosts()?.heal("w2")?;
    c.wait_ready(6)?;
    // Its old tasks are shut down, not restarted there.
    wait_until(CONVERGE, || {
        let tasks = c.node("m1").tasks("tough")?;
        Ok(tasks.iter().filter(|t| t.node_id == w2).all(|t| {
            t.desired_state > TaskState::Running as i32 && state(t) > TaskState::Running as i32
        }))
    })
    .with_context(|| format!("stale tasks on the returning node\n{}", c.report()))?;
    wait_processes(cmd, 6)?;
    Ok(())
}

fn status_ms(t: &Task) -> i64 {
    t.status.as_ref().map_or(0, |s| s.timestamp_ms)
}

fn update_state(node: &Node, service: &str) -> Result<UpdateState> {
    let state = node.service(service)?.update_status.map_or(0, |u| u.state);
    UpdateState::try_from(state).context("unknown update state")
}

/// Goal: restart policies, rolling updates with pause and rollback, update
/// order, and an update that outlives its leader.
/// Method: an on-failure task with max 2 attempts fails exactly 3 times;
/// an update to a failing command pauses, or rolls back by itself; start-first
/// starts the new task before the old one stops, stop-first the reverse; the
/// leader is killed mid-update and the new leader finishes it.
#[test]
fn restarts_and_rolling_updates() -> Result<()> {
    let mut c = Cluster::form(3, 3)?;
    let m1 = c.node("m1");
    m1.ok(&[
        "service",
        "create",
        "-d",
        "--driver",
        "process",
        "--name",
        "flaky",
        "--restart-condition",
        "on-failure",
        "--restart-max-attempts",
        "2",
        "--restart-delay",
        "100ms",
        "/bin/sh",
        "-c",
        "exit 3",
    ])?;
    let failed = |n: &Node| -> Result<Vec<Task>> {
        Ok(n.tasks("flaky")?
            .into_iter()
            .filter(|t| state(t) == TaskState::Failed as i32)
            .collect())
    };
    wait_until(CONVERGE, || Ok(failed(m1)?.len() == 3)).context("flaky did not fail 3 times")?;
    std::thread::sleep(Duration::from_secs(2));
    let tasks = m1.tasks("flaky")?;
    ensure!(
        tasks.len() == 3,
        "restarted beyond max attempts: {} tasks",
        tasks.len()
    );
    ensure!(
        tasks
            .iter()
            .all(|t| t.status.as_ref().and_then(|s| s.exit_code) == Some(3)),
        "exit codes not recorded: {tasks:?}"
    );

    failing_update_rolls_back(&c)?;
    failing_update_pauses(&c)?;
    update_order_is_observable(&c)?;
    update_outlives_its_leader(&mut c)
}

/// A failing update with failure action rollback rolls back by itself.
fn failing_update_rolls_back(c: &Cluster) -> Result<()> {
    let m1 = c.node("m1");
    // A failing update rolls back by itself.
    m1.ok(&[
        "service",
        "create",
        "--driver",
        "process",
        "--name",
        "web",
        "--replicas",
        "2",
        "--update-failure-action",
        "rollback",
        "--update-monitor",
        "2s",
        "--constraint",
        "node.role==worker",
        "/bin/sleep",
        "61020",
    ])?;
    wait_running(c, "m1", "web", 2)?;
    let (code, _) = m1.fails(&["service", "update", "--args", "/bin/false", "web"])?;
    ensure!(code == 1, "a rolled-back update exits 1, got {code}");
    wait_until(CONVERGE, || {
        Ok(update_state(m1, "web")? == UpdateState::RollbackCompleted)
    })
    .with_context(|| format!("no automatic rollback: {:?}", update_state(m1, "web")))?;
    wait_running(c, "m1", "web", 2)?;
    wait_processes("/bin/sleep 61020", 2)?;

    Ok(())
}

/// With pause, a failing update stops and says so.
fn failing_update_pauses(c: &Cluster) -> Result<()> {
    let m1 = c.node("m1");
    // With pause, the update stops and says so.
    m1.ok(&[
        "service",
        "create",
        "--driver",
        "process",
        "--name",
        "careful",
        "--update-failure-action",
        "pause",
        "--update-monitor",
        "2s",
        "/bin/sleep",
        "61021",
    ])?;
    let (code, err) = m1.fails(&["service", "update", "--args", "/bin/false", "careful"])?;
    ensure!(code == 1 && err.contains("paused"), "{code}: {err}");
    let state = update_state(m1, "careful")?;
    ensure!(state == UpdateState::Paused, "not paused: {state:?}");

    Ok(())
}

/// Update order, seen in the status timestamps of old and new tasks.
fn update_order_is_observable(c: &Cluster) -> Result<()> {
    let m1 = c.node("m1");
    // Update order, seen in the status timestamps of old and new tasks.
    for (order, name, marker) in [
        ("start-first", "sf", "61022"),
        ("stop-first", "tf", "61023"),
    ] {
        m1.ok(&[
            "service",
            "create",
            "--driver",
            "process",
            "--name",
            name,
            "--update-order",
            order,
            "/bin/sleep",
            marker,
        ])?;
        let old = wait_running(c, "m1", name, 1)?.remove(0);
        m1.ok(&["service", "update", "--args", "/bin/sleep 61024", name])?;
        let new = wait_running(c, "m1", name, 1)?.remove(0);
        let old_id = old.meta.clone().unwrap_or_default().id;
        let old = m1
            .tasks(name)?
            .into_iter()
            .find(|t| t.meta.as_ref().is_some_and(|m| m.id == old_id))
            .context("old task gone")?;
        let (stopped, started) = (status_ms(&old), status_ms(&new));
        match order {
            "start-first" => ensure!(
                started <= stopped,
                "start-first: new ran at {started}, old stopped at {stopped}"
            ),
            _ => ensure!(
                stopped <= started,
                "stop-first: old stopped at {stopped}, new ran at {started}"
            ),
        }
    }

    Ok(())
}

/// The leader dies mid-update; the next one finishes the update.
fn update_outlives_its_leader(c: &mut Cluster) -> Result<()> {
    let m1 = c.node("m1");
    // The leader dies mid-update; the next one finishes the update.
    m1.ok(&[
        "service",
        "create",
        "--driver",
        "process",
        "--name",
        "long",
        "--replicas",
        "6",
        "--update-delay",
        "1s",
        "--constraint",
        "node.role==worker",
        "/bin/sleep",
        "61025",
    ])?;
    wait_running(c, "m1", "long", 6)?;
    m1.ok(&[
        "service",
        "update",
        "-d",
        "--args",
        "/bin/sleep 61026",
        "long",
    ])?;
    std::thread::sleep(Duration::from_millis(1500));
    let leader = c.leader("m1")?;
    let survivor = if leader == "m2" { "m3" } else { "m2" };
    c.node_mut(&leader).kill9();
    wait_until(Duration::from_secs(90), || {
        Ok(pids_of("/bin/sleep 61026").len() == 6 && pids_of("/bin/sleep 61025").is_empty())
    })
    .with_context(|| {
        format!(
            "the update did not finish under the new leader\n{}",
            c.report()
        )
    })?;
    // COMPLETED comes once the last new task passed its monitor period.
    wait_until(CONVERGE, || {
        Ok(update_state(c.node(survivor), "long")? == UpdateState::Completed)
    })
    .with_context(|| {
        format!(
            "update state after failover: {:?}",
            update_state(c.node(survivor), "long")
        )
    })?;
    Ok(())
}
