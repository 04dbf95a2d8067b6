//! Health checks end to end, with real daemons and the process driver: a
//! probe that tests for a file the test controls.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use rswarm_integration::{Cluster, Node, wait_until};
use rswarm_proto::{ContainerHealth, Task, TaskState};
use serde_json::Value;

/// Long enough for a few probes, a stop and a restart on a busy machine.
const CONVERGE: Duration = Duration::from_secs(60);

fn status_of(task: &Task) -> (i32, i32, String) {
    let status = task.status.clone().unwrap_or_default();
    (status.state, status.health, status.err)
}

/// `service ps --format json`'s lines.
fn ps_json(node: &Node, service: &str) -> Result<Vec<Value>> {
    node.ok(&["service", "ps", "--format", "json", service])?
        .lines()
        .map(|line| serde_json::from_str(line).with_context(|| format!("not JSON: {line}")))
        .collect()
}

/// The running, healthy task of `service`, once there is one.
fn wait_healthy(c: &Cluster, service: &str, not: &[String]) -> Result<Task> {
    let mut found = None;
    wait_until(CONVERGE, || {
        let tasks = c.node("m1").tasks(service)?;
        found = tasks.into_iter().find(|t| {
            let (state, health, _) = status_of(t);
            let id = t.meta.as_ref().map_or("", |m| m.id.as_str());
            state == TaskState::Running as i32
                && health == ContainerHealth::Healthy as i32
                && !not.iter().any(|old| old == id)
        });
        Ok(found.is_some())
    })
    .with_context(|| format!("no healthy task of {service}\n{}", c.report()))?;
    found.context("no healthy task")
}

/// Goal: a task's health check decides its health as users see it, and an
/// unhealthy task is failed with the probe's output and replaced.
/// Method: a process service whose `--health-cmd` tests for a file; with
/// the file, `service create` waits for healthy and `service ps` shows
/// `(healthy)`; without it, the task turns unhealthy, is FAILED with
/// `unhealthy container: <output>` and its process stopped, and a
/// replacement runs; with the file back, the replacement becomes healthy,
/// and stays so (the same task, not restarted) across a restart of its
/// node's daemon.
#[test]
fn an_unhealthy_task_is_failed_and_replaced() -> Result<()> {
    let mut c = Cluster::form(1, 1)?;
    let m1 = c.node("m1");
    let ready = c.dir().join("ready");
    std::fs::write(&ready, b"")?;
    let probe = format!(
        "test -f {} || {{ echo no ready file; exit 1; }}",
        ready.display()
    );
    m1.ok(&[
        "service",
        "create",
        "--driver",
        "process",
        "--name",
        "checked",
        "--health-cmd",
        &probe,
        "--health-interval",
        "200ms",
        "--health-retries",
        "2",
        "--restart-delay",
        "1s",
        "--update-monitor",
        "1s",
        "--constraint",
        "node.role==worker",
        "/bin/sleep",
        "61801",
    ])?;
    let first = wait_healthy(&c, "checked", &[])?;
    let first_id = first.meta.clone().unwrap_or_default().id;
    let rows = ps_json(m1, "checked")?;
    ensure!(rows.len() == 1, "one task: {rows:?}");
    ensure!(rows[0]["Health"] == "healthy", "{rows:?}");
    let current = rows[0]["CurrentState"].as_str().unwrap_or("");
    ensure!(
        current.starts_with("Running") && current.ends_with("(healthy)"),
        "{current}"
    );

    std::fs::remove_file(&ready)?;
    let mut failed = None;
    wait_until(CONVERGE, || {
        let tasks = m1.tasks("checked")?;
        failed = tasks
            .into_iter()
            .find(|t| t.meta.as_ref().is_some_and(|m| m.id == first_id))
            .filter(|t| status_of(t).0 == TaskState::Failed as i32);
        Ok(failed.is_some())
    })
    .with_context(|| format!("the unhealthy task was not failed\n{}", c.report()))?;
    let (_, health, err) = status_of(&failed.context("failed task")?);
    ensure!(err == "unhealthy container: no ready file", "err: {err:?}");
    ensure!(
        health == ContainerHealth::Unhealthy as i32,
        "health {health}"
    );
    let table = m1.ok(&["service", "ps", "--no-trunc", "checked"])?;
    ensure!(
        table.contains("unhealthy container: no ready file"),
        "{table}"
    );

    std::fs::write(&ready, b"")?;
    let replacement = wait_healthy(&c, "checked", &[first_id])?;
    ensure!(replacement.slot == first.slot, "same slot");

    c.node_mut("w1").restart()?;
    // Ten probe periods: time enough to notice a lost verdict or a task
    // started again.
    std::thread::sleep(Duration::from_secs(2));
    let after = wait_healthy(&c, "checked", &[])?;
    ensure!(
        after.meta.map(|m| m.id) == replacement.meta.clone().map(|m| m.id)
            && after.status.map(|s| s.pid) == replacement.status.clone().map(|s| s.pid),
        "the healthy task was replaced or restarted by a daemon restart:\n{}",
        c.report()
    );
    c.node("m1").ok(&["service", "rm", "checked"])?;
    Ok(())
}
