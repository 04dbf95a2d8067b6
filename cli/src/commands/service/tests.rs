//! The commands end to end against a scripted control API: the calls they
//! make, their retries, and how their waits end (exit codes included).
//! Method: parse a command line as a user types it, run it against the
//! fake on a unix socket, check the exit code and what the fake was asked.

use std::time::{Duration, Instant};

use clap::{CommandFactory, Parser};
use rswarm_proto::*;

use super::fake_control::{FakeControl, serve};
use super::fixtures::{TaskBuilder, node, replicated};
use super::{ServiceCommand, run};

#[derive(Debug, Parser)]
struct TestCli {
    #[command(subcommand)]
    command: ServiceCommand,
}

fn command(args: &[&str]) -> ServiceCommand {
    match TestCli::try_parse_from(std::iter::once("service").chain(args.iter().copied())) {
        Ok(cli) => cli.command,
        Err(e) => panic!("{args:?}: {e}"),
    }
}

fn fake() -> FakeControl {
    let fake = FakeControl::default();
    fake.state().nodes = vec![node("n1", "worker1")];
    fake
}

/// A task of the fake's service ("web", ID svc…), spec version 1.
fn web_task(id: &str, slot: u64, state: TaskState) -> Task {
    TaskBuilder::new(id, "web", slot)
        .node("n1")
        .state(state, 1)
        .build()
}

#[tokio::test]
async fn create_waits_until_the_tasks_run() {
    let fake = fake();
    fake.state().task_script = vec![
        vec![],
        vec![web_task("a", 1, TaskState::Pending)],
        vec![web_task("a", 1, TaskState::Preparing)],
        vec![web_task("a", 1, TaskState::Running)],
    ];
    let (d, _socket) = serve(&fake);
    let cmd = command(&[
        "create",
        "-q",
        "--update-monitor",
        "0s",
        "--name",
        "web",
        "nginx",
    ]);
    let code = run(&d, cmd).await.unwrap();
    assert_eq!(code, 0);
    let state = fake.state();
    assert_eq!(
        state.list_tasks_calls, 4,
        "one poll per script step, then done"
    );
    let spec = state.service.clone().unwrap().spec.unwrap();
    assert_eq!(spec.task.unwrap().container.unwrap().image, "nginx");
}

#[tokio::test]
async fn tasks_that_cannot_be_placed_exit_2_after_the_placement_wait() {
    let fake = fake();
    fake.state().task_script = vec![vec![
        TaskBuilder::new("a", "web", 1)
            .state(TaskState::Pending, 1)
            .err("no suitable node (scheduling constraints not satisfied on 1 node)")
            .build(),
    ]];
    let (d, _socket) = serve(&fake);
    let started = Instant::now();
    let code = run(&d, command(&["create", "-q", "--name", "web", "nginx"]))
        .await
        .unwrap();
    assert_eq!(code, 2);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(3) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
}

#[tokio::test]
async fn polls_survive_a_short_leader_election() {
    let fake = fake();
    {
        let mut state = fake.state();
        state.task_script = vec![vec![web_task("a", 1, TaskState::Running)]];
        state.get_service_failures = 3;
    }
    let (d, _socket) = serve(&fake);
    let cmd = command(&[
        "create",
        "-q",
        "--update-monitor",
        "0s",
        "--name",
        "web",
        "nginx",
    ]);
    assert_eq!(run(&d, cmd).await.unwrap(), 0);
    assert_eq!(fake.state().get_service_calls, 4);
}

#[tokio::test]
async fn a_service_removed_while_waiting_ends_the_wait() {
    let fake = fake();
    {
        let mut state = fake.state();
        state.task_script = vec![vec![web_task("a", 1, TaskState::Pending)]];
        state.service_gone_after_calls = Some(2);
    }
    let (d, _socket) = serve(&fake);
    let err = run(&d, command(&["create", "-q", "--name", "web", "nginx"]))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("was removed while waiting for it"),
        "{err:#}"
    );
}

#[tokio::test]
async fn the_wait_gives_up_at_the_timeout() {
    let fake = fake();
    fake.state().task_script = vec![vec![web_task("a", 1, TaskState::Preparing)]];
    let (d, _socket) = serve(&fake);
    let cmd = command(&["create", "-q", "--timeout", "1s", "--name", "web", "nginx"]);
    let err = run(&d, cmd).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "gave up waiting after 1s: 0 out of 1 tasks; the change goes on in the background: \
         check it with `rswarm service ps web`"
    );
}

#[tokio::test]
async fn update_retries_a_version_conflict_from_a_fresh_read() {
    let fake = fake();
    {
        let mut state = fake.state();
        state.service = Some(replicated("web", 2));
        state.update_conflicts = 1;
    }
    let (d, _socket) = serve(&fake);
    let cmd = command(&["update", "-d", "--image", "nginx:1.28", "web"]);
    assert_eq!(run(&d, cmd).await.unwrap(), 0);
    let state = fake.state();
    let versions: Vec<u64> = state.updates.iter().map(|u| u.version).collect();
    assert_eq!(
        versions,
        [10, 11],
        "the retry carries the version it read again"
    );
    let spec = state.service.clone().unwrap().spec.unwrap();
    assert_eq!(spec.task.unwrap().container.unwrap().image, "nginx:1.28");
}

#[tokio::test]
async fn scale_refuses_a_global_service_and_a_missing_one() {
    let fake = fake();
    fake.state().service = Some(super::fixtures::global("web"));
    let (d, _socket) = serve(&fake);
    let code = run(&d, command(&["scale", "-d", "web=3", "nope=2"]))
        .await
        .unwrap();
    assert_eq!(code, 1);
    assert!(fake.state().updates.is_empty());
}

#[tokio::test]
async fn scale_sets_the_count_and_waits() {
    let fake = fake();
    {
        let mut state = fake.state();
        let mut service = replicated("web", 1);
        if let Some(spec) = service.spec.as_mut() {
            spec.update = Some(UpdateConfig {
                monitor_ms: Some(0),
                ..Default::default()
            });
        }
        state.service = Some(service);
        state.task_script = vec![vec![
            web_task("a", 1, TaskState::Running),
            web_task("b", 2, TaskState::Running),
        ]];
    }
    let (d, _socket) = serve(&fake);
    assert_eq!(
        run(&d, command(&["scale", "-q", "web=2"])).await.unwrap(),
        0
    );
    let update = fake.state().updates[0].clone();
    assert_eq!(
        update.spec.unwrap().mode,
        Some(service_spec::Mode::Replicated(ReplicatedMode {
            replicas: 2
        }))
    );
}

#[tokio::test]
async fn rollback_asks_for_the_previous_spec() {
    let fake = fake();
    fake.state().service = Some(replicated("web", 1));
    let (d, _socket) = serve(&fake);
    assert_eq!(
        run(&d, command(&["rollback", "-d", "web"])).await.unwrap(),
        0
    );
    let update = fake.state().updates[0].clone();
    assert!(update.rollback);
    assert_eq!(update.spec, None);
}

#[tokio::test]
async fn rm_tries_every_service_and_names_the_unknown_ones() {
    let fake = fake();
    fake.state().service = Some(replicated("web", 1));
    let (d, _socket) = serve(&fake);
    let err = run(&d, command(&["rm", "nope", "web"])).await.unwrap_err();
    assert_eq!(err.to_string(), "no such service: nope");
    assert_eq!(fake.state().removed, ["web"]);
}

#[test]
fn the_command_tree_is_consistent() {
    // Duplicate short flags, bad defaults or conflicting names panic here
    // rather than when a user runs the one subcommand that has them.
    TestCli::command().debug_assert();
}

#[tokio::test]
async fn logs_warn_about_unreachable_nodes_and_still_succeed() {
    let fake = fake();
    {
        let mut state = fake.state();
        state.service = Some(replicated("web", 1));
        state.log_batches = vec![
            ServiceLogsResponse {
                warnings: vec!["node worker2 could not be reached: connection refused".into()],
                ..Default::default()
            },
            ServiceLogsResponse {
                sources: vec![LogSource {
                    task_id: "a".into(),
                    task_name: "web.1".into(),
                    node_name: "worker1".into(),
                }],
                ..Default::default()
            },
        ];
    }
    let (d, _socket) = serve(&fake);
    let cmd = command(&["logs", "--tail", "5", "--since", "1767225600", "web"]);
    assert_eq!(run(&d, cmd).await.unwrap(), 0);
    let options = fake.state().logs_request.clone().unwrap().options.unwrap();
    assert_eq!(options.tail, 5);
    assert_eq!(options.since_ms, 1_767_225_600_000);
    assert!(!options.follow);

    let err = run(&d, command(&["logs", "nope"])).await.unwrap_err();
    assert_eq!(err.to_string(), "no such service: nope");
}
