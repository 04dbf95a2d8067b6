//! The convergence display and its decisions. Goal: what users see at each
//! step (bars, errors in place, verify countdown) and when the wait ends
//! with which exit code. Method: feed the tracker fixed polls at chosen
//! elapsed times and compare the frames.

use std::time::Duration;

use expect_test::expect;
use rswarm_proto::*;

use super::*;
use crate::commands::service::fixtures::{TaskBuilder, global, node, replicated};

fn nodes() -> Vec<Node> {
    vec![node("n1", "worker1"), node("n2", "worker2")]
}

fn view(service: &Service, desired: u64) -> ServiceView {
    ServiceView {
        service: Some(service.clone()),
        running_tasks: 0,
        desired_tasks: desired,
    }
}

fn at(tracker: &mut Tracker, service: &Service, tasks: &[Task], secs: f64) -> Frame {
    let view = view(service, 2);
    let nodes = nodes();
    tracker.observe(
        Observation {
            view: &view,
            tasks,
            nodes: &nodes,
        },
        Duration::from_secs_f64(secs),
    )
}

fn text(frame: &Frame) -> String {
    frame
        .lines
        .iter()
        .map(|l| l.text.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

fn task(id: &str, slot: u64, state: TaskState) -> TaskBuilder {
    TaskBuilder::new(id, "web", slot).node("n1").state(state, 1)
}

#[test]
fn bars_fill_with_the_state_and_errors_take_their_place() {
    let service = replicated("web", 3);
    let tasks = [
        task("a", 1, TaskState::Running).build(),
        task("b", 2, TaskState::Preparing).build(),
        TaskBuilder::new("c", "web", 3)
            .state(TaskState::Pending, 1)
            .err("no suitable node (scheduling constraints not satisfied on 2 nodes)")
            .build(),
    ];
    let mut tracker = Tracker::new(Purpose::Create, None);
    let frame = at(&mut tracker, &service, &tasks, 0.2);
    expect![[r#"
        overall progress: 1 out of 3 tasks
        1/3: running   [==================================================>]
        2/3: preparing [===============================>                   ]
        3/3: no suitable node (scheduling constraints not satisfied on 2 nodes)"#]]
    .assert_eq(&text(&frame));
    assert_eq!(frame.outcome, None);
    let plain: Vec<&str> = frame.lines.iter().map(|l| l.plain.as_str()).collect();
    assert_eq!(plain[1], "1/3: running");
}

#[test]
fn a_converged_service_is_verified_for_the_monitor_period() {
    let service = replicated("web", 2);
    let tasks = [
        task("a", 1, TaskState::Running).build(),
        task("b", 2, TaskState::Running).build(),
    ];
    let mut tracker = Tracker::new(Purpose::Create, None);
    let first = at(&mut tracker, &service, &tasks, 1.0);
    expect![[r#"
        overall progress: 2 out of 2 tasks
        1/2: running   [==================================================>]
        2/2: running   [==================================================>]
        verify: Waiting 5 seconds to verify that tasks are stable..."#]]
    .assert_eq(&text(&first));
    assert_eq!(first.outcome, None);
    assert_eq!(
        first.lines[3].plain,
        "verify: Waiting 5 seconds to verify that tasks are stable..."
    );
    let later = at(&mut tracker, &service, &tasks, 3.5);
    assert_eq!(
        later.lines[3].text,
        "verify: Waiting 3 seconds to verify that tasks are stable..."
    );
    assert_eq!(
        later.lines[3].plain, first.lines[3].plain,
        "no change off a TTY"
    );
    let done = at(&mut tracker, &service, &tasks, 6.0);
    assert_eq!(
        done.lines[3].text,
        "verify: Service web-id-0123456789abcdef converged"
    );
    assert_eq!(done.outcome, Some(Outcome::Converged));
    assert_eq!(Outcome::Converged.exit_code(), 0);
}

#[test]
fn the_monitor_period_comes_from_the_update_policy() {
    let mut service = replicated("web", 1);
    service.spec.as_mut().unwrap().update = Some(UpdateConfig {
        monitor_ms: Some(0),
        ..Default::default()
    });
    let tasks = [task("a", 1, TaskState::Running).build()];
    let mut tracker = Tracker::new(Purpose::Update, None);
    let frame = at(&mut tracker, &service, &tasks, 0.2);
    assert_eq!(frame.outcome, Some(Outcome::Converged));
}

#[test]
fn a_failure_while_verifying_starts_the_verification_over() {
    let service = replicated("web", 1);
    let running = [task("a", 1, TaskState::Running).build()];
    let mut tracker = Tracker::new(Purpose::Create, None);
    at(&mut tracker, &service, &running, 1.0);
    let replaced = [
        task("a", 1, TaskState::Failed)
            .desired(TaskState::Shutdown)
            .err("task: non-zero exit (1)")
            .build(),
        task("b", 1, TaskState::Pending).created(1).build(),
    ];
    let failed = at(&mut tracker, &service, &replaced, 2.0);
    expect![[r#"
        overall progress: 0 out of 1 tasks
        1/1: pending   [============>                                      ]
        verify: Detected task failure"#]]
    .assert_eq(&text(&failed));
    assert_eq!(failed.outcome, None);
    let still = at(&mut tracker, &service, &replaced, 2.2);
    assert_eq!(
        still.lines.last().unwrap().text,
        "verify: Detected task failure"
    );
    let back = [task("b", 1, TaskState::Running).created(1).build()];
    let again = at(&mut tracker, &service, &back, 3.0);
    assert_eq!(
        again.lines.last().unwrap().text,
        "verify: Waiting 5 seconds to verify that tasks are stable..."
    );
    assert_eq!(at(&mut tracker, &service, &back, 7.9).outcome, None);
    assert_eq!(
        at(&mut tracker, &service, &back, 8.0).outcome,
        Some(Outcome::Converged)
    );
}

#[test]
fn tasks_of_the_old_spec_do_not_count_as_updated() {
    let mut service = replicated("web", 2);
    service.spec_version = 2;
    if let Some(container) = service
        .spec
        .as_mut()
        .and_then(|s| s.task.as_mut())
        .and_then(|t| t.container.as_mut())
    {
        container.image = "nginx:1.28".into();
    }
    let old = [
        task("a", 1, TaskState::Running).build(),
        task("b", 2, TaskState::Running).build(),
    ];
    let mut tracker = Tracker::new(Purpose::Update, None);
    let frame = at(&mut tracker, &service, &old, 0.2);
    assert_eq!(frame.lines[0].text, "overall progress: 0 out of 2 tasks");
    assert_eq!(frame.outcome, None);
    let half = [
        task("a", 1, TaskState::Shutdown)
            .desired(TaskState::Shutdown)
            .build(),
        task("c", 1, TaskState::Running)
            .spec_version(2)
            .created(1)
            .build(),
        task("b", 2, TaskState::Running).build(),
    ];
    let frame = at(&mut tracker, &service, &half, 1.0);
    assert_eq!(frame.lines[0].text, "overall progress: 1 out of 2 tasks");
}

#[test]
fn a_scale_counts_tasks_whose_spec_did_not_change() {
    let mut service = replicated("web", 1);
    service.spec_version = 5;
    let tasks = [task("a", 1, TaskState::Running).build()];
    let mut tracker = Tracker::new(Purpose::Update, None);
    let frame = at(&mut tracker, &service, &tasks, 0.2);
    assert_eq!(frame.lines[0].text, "overall progress: 1 out of 1 tasks");
}

#[test]
fn a_scale_down_waits_for_the_extra_tasks_to_go() {
    let service = replicated("web", 1);
    let two = [
        task("a", 1, TaskState::Running).build(),
        task("b", 2, TaskState::Running).build(),
    ];
    let mut tracker = Tracker::new(Purpose::Update, None);
    let frame = at(&mut tracker, &service, &two, 0.2);
    assert_eq!(frame.lines.len(), 3, "no verify line yet: {frame:?}");
    let going = [
        task("a", 1, TaskState::Running).build(),
        task("b", 2, TaskState::Running)
            .desired(TaskState::Remove)
            .build(),
    ];
    let frame = at(&mut tracker, &service, &going, 0.4);
    expect![[r#"
        overall progress: 1 out of 1 tasks
        1/1: running   [==================================================>]
        verify: Waiting 5 seconds to verify that tasks are stable..."#]]
    .assert_eq(&text(&frame));
}

#[test]
fn tasks_that_cannot_be_placed_end_the_wait_with_exit_code_2() {
    let service = replicated("web", 2);
    let err = "no suitable node (insufficient resources on 2 nodes)";
    let pending = [
        TaskBuilder::new("a", "web", 1)
            .state(TaskState::Pending, 1)
            .err(err)
            .build(),
        TaskBuilder::new("b", "web", 2)
            .state(TaskState::Pending, 1)
            .err(err)
            .build(),
    ];
    let mut tracker = Tracker::new(Purpose::Create, None);
    assert_eq!(at(&mut tracker, &service, &pending, 0.2).outcome, None);
    assert_eq!(at(&mut tracker, &service, &pending, 3.0).outcome, None);
    let frame = at(&mut tracker, &service, &pending, 3.2);
    let Some(outcome) = frame.outcome else {
        panic!("no outcome after {PLACEMENT_WAIT:?} without progress");
    };
    assert_eq!(outcome.exit_code(), 2);
    expect![[r#"Unplaceable("2 tasks cannot be placed: no suitable node (insufficient resources on 2 nodes)\nthe service stays and its tasks start when a node fits: check the constraints and resources, then `rswarm service ps web`")"#]]
    .assert_eq(&format!("{outcome:?}"));
}

#[test]
fn progress_restarts_the_placement_wait() {
    let service = replicated("web", 2);
    let err = "no suitable node (insufficient resources on 2 nodes)";
    let stuck = TaskBuilder::new("b", "web", 2)
        .state(TaskState::Pending, 1)
        .err(err)
        .build();
    let mut tracker = Tracker::new(Purpose::Create, None);
    let step = |state| [task("a", 1, state).build(), stuck.clone()];
    at(&mut tracker, &service, &step(TaskState::Assigned), 0.0);
    at(&mut tracker, &service, &step(TaskState::Preparing), 2.0);
    at(&mut tracker, &service, &step(TaskState::Running), 4.0);
    assert_eq!(
        at(&mut tracker, &service, &step(TaskState::Running), 6.9).outcome,
        None
    );
    assert_eq!(
        at(&mut tracker, &service, &step(TaskState::Running), 7.0)
            .outcome
            .map(|o| o.exit_code()),
        Some(2)
    );
}

#[test]
fn a_paused_update_ends_the_wait_with_its_message() {
    let mut service = replicated("web", 1);
    let tasks = [task("a", 1, TaskState::Running).build()];
    let paused = UpdateStatus {
        state: UpdateState::Paused as i32,
        started_at_ms: 1,
        message: "update paused due to failure or early termination of task x".into(),
        ..Default::default()
    };
    let mut tracker = Tracker::new(Purpose::Update, None);
    service.update_status = Some(paused.clone());
    let frame = at(&mut tracker, &service, &tasks, 0.2);
    assert_eq!(
        frame.outcome,
        Some(Outcome::Failed(
            "service update paused: update paused due to failure or early termination of task x"
                .into()
        ))
    );

    let mut tracker = Tracker::new(Purpose::Update, Some(paused));
    let frame = at(&mut tracker, &service, &tasks, 0.2);
    assert_eq!(
        frame.outcome, None,
        "a pause from before this update is not its outcome"
    );
}

#[test]
fn an_automatic_rollback_is_shown_and_fails_the_update() {
    let mut service = replicated("web", 1);
    let tasks = [task("a", 1, TaskState::Running).build()];
    service.update_status = Some(UpdateStatus {
        state: UpdateState::RollbackStarted as i32,
        started_at_ms: 5,
        message: "update rolled back due to failure or early termination of task y".into(),
        ..Default::default()
    });
    let mut tracker = Tracker::new(Purpose::Update, None);
    let frame = at(&mut tracker, &service, &tasks, 0.2);
    expect![[r#"
        rollback: update rolled back due to failure or early termination of task y
        overall progress: rolling back update: 1 out of 1 tasks
        1/1: running   [==================================================>]
        verify: Waiting 5 seconds to verify that tasks are stable..."#]]
    .assert_eq(&text(&frame));
    service.update_status = Some(UpdateStatus {
        state: UpdateState::RollbackCompleted as i32,
        started_at_ms: 5,
        completed_at_ms: 9,
        message: "rollback completed".into(),
    });
    let frame = at(&mut tracker, &service, &tasks, 0.4);
    assert_eq!(
        frame.outcome,
        Some(Outcome::Failed(
            "service rolled back: rollback completed".into()
        ))
    );
}

#[test]
fn an_update_that_converges_while_rolling_back_has_failed() {
    let mut service = replicated("web", 1);
    service.update_status = Some(UpdateStatus {
        state: UpdateState::RollbackStarted as i32,
        started_at_ms: 5,
        message: "update rolled back due to failure or early termination of task y".into(),
        ..Default::default()
    });
    let tasks = [task("a", 1, TaskState::Running).build()];
    let mut tracker = Tracker::new(Purpose::Update, None);
    at(&mut tracker, &service, &tasks, 0.2);
    assert_eq!(
        at(&mut tracker, &service, &tasks, 5.2).outcome,
        Some(Outcome::Failed(
            "service rolled back: update rolled back due to failure or early termination of task y"
                .into()
        ))
    );
}

#[test]
fn a_requested_rollback_converges_like_a_change() {
    let mut service = replicated("web", 1);
    service.update_status = Some(UpdateStatus {
        state: UpdateState::RollbackCompleted as i32,
        started_at_ms: 5,
        completed_at_ms: 9,
        message: "rollback completed".into(),
    });
    service.spec.as_mut().unwrap().rollback = Some(UpdateConfig {
        monitor_ms: Some(1_000),
        ..Default::default()
    });
    let tasks = [task("a", 1, TaskState::Running).build()];
    let mut tracker = Tracker::new(Purpose::Rollback, None);
    assert_eq!(at(&mut tracker, &service, &tasks, 0.2).outcome, None);
    assert_eq!(
        at(&mut tracker, &service, &tasks, 1.2).outcome,
        Some(Outcome::Converged)
    );
}

#[test]
fn a_task_the_restart_policy_gives_up_on_fails_the_wait() {
    let service = replicated("web", 2);
    let tasks = [
        task("a", 1, TaskState::Running).build(),
        task("b", 2, TaskState::Failed)
            .desired(TaskState::Shutdown)
            .err("task: non-zero exit (2)")
            .build(),
    ];
    let mut tracker = Tracker::new(Purpose::Create, None);
    assert_eq!(at(&mut tracker, &service, &tasks, 1.0).outcome, None);
    assert_eq!(at(&mut tracker, &service, &tasks, 5.9).outcome, None);
    let frame = at(&mut tracker, &service, &tasks, 6.0);
    assert_eq!(
        frame.outcome,
        Some(Outcome::Failed(
            "task web.2 (b) failed and its restart policy does not restart it: task: non-zero exit (2)"
                .into()
        ))
    );
}

#[test]
fn tasks_on_down_nodes_are_left_out() {
    let service = replicated("web", 1);
    let tasks = [task("a", 1, TaskState::Running).node("n3").build()];
    let mut down = node("n3", "worker3");
    down.status = Some(NodeStatus {
        state: NodeState::Down as i32,
        ..Default::default()
    });
    let view = view(&service, 1);
    let nodes = vec![down];
    let mut tracker = Tracker::new(Purpose::Create, None);
    let frame = tracker.observe(
        Observation {
            view: &view,
            tasks: &tasks,
            nodes: &nodes,
        },
        Duration::from_secs(1),
    );
    assert_eq!(frame.lines[0].text, "overall progress: 0 out of 1 tasks");
    assert_eq!(frame.lines.len(), 1);
}

#[test]
fn global_services_show_a_line_per_node() {
    let service = global("agent");
    let tasks = [
        TaskBuilder::new("g2", "agent", 0)
            .node("n2")
            .state(TaskState::Starting, 1)
            .build(),
        TaskBuilder::new("g1", "agent", 0).node("n1").build(),
    ];
    let mut tracker = Tracker::new(Purpose::Create, None);
    let frame = at(&mut tracker, &service, &tasks, 0.2);
    expect![[r#"
        overall progress: 1 out of 2 tasks
        worker1: running   [==================================================>]
        worker2: starting  [===========================================>       ]"#]]
    .assert_eq(&text(&frame));
}

#[test]
fn many_replicas_show_totals_and_the_common_errors() {
    let service = replicated("web", 30);
    let mut tasks: Vec<Task> = (1..=25)
        .map(|slot| task(&format!("t{slot}"), slot, TaskState::Running).build())
        .collect();
    tasks.extend((26..=30).map(|slot| {
        TaskBuilder::new(&format!("t{slot}"), "web", slot)
            .state(TaskState::Pending, 1)
            .err("no suitable node (max replicas per node limit exceeded)")
            .build()
    }));
    let mut tracker = Tracker::new(Purpose::Create, None);
    let frame = at(&mut tracker, &service, &tasks, 0.2);
    expect![[r#"
        overall progress: 25 out of 30 tasks
        5 tasks: no suitable node (max replicas per node limit exceeded)"#]]
    .assert_eq(&text(&frame));
}

#[test]
fn zero_replicas_converge_at_once() {
    let service = replicated("web", 0);
    let mut tracker = Tracker::new(Purpose::Create, None);
    let first = at(&mut tracker, &service, &[], 0.2);
    assert_eq!(first.lines[0].text, "overall progress: 0 out of 0 tasks");
    assert_eq!(
        at(&mut tracker, &service, &[], 5.2).outcome,
        Some(Outcome::Converged)
    );
}

#[test]
fn bars_follow_dockers_arithmetic() {
    assert_eq!(bar(8, 8), format!("[{}>]", "=".repeat(50)));
    assert_eq!(bar(1, 8), format!("[{}>{}]", "=".repeat(6), " ".repeat(44)));
    assert_eq!(
        bar(5, 8),
        format!("[{}>{}]", "=".repeat(31), " ".repeat(19))
    );
}

/// Goal: a task whose health check has not passed yet (or failed) does not
/// count as converged; once healthy it does, as Docker waits for healthy.
#[test]
fn a_task_still_starting_its_health_check_is_not_converged() {
    let service = replicated("web", 1);
    let starting = [task("a", 1, TaskState::Running)
        .health(ContainerHealth::Starting)
        .build()];
    let mut tracker = Tracker::new(Purpose::Create, None);
    let frame = at(&mut tracker, &service, &starting, 10.0);
    assert!(
        text(&frame).starts_with("overall progress: 0 out of 1 tasks"),
        "{}",
        text(&frame)
    );
    let frame = at(&mut tracker, &service, &starting, 60.0);
    assert_eq!(frame.outcome, None, "still waiting for the check");
    let unhealthy = [task("a", 1, TaskState::Running)
        .health(ContainerHealth::Unhealthy)
        .build()];
    let frame = at(&mut tracker, &service, &unhealthy, 61.0);
    assert!(text(&frame).starts_with("overall progress: 0 out of 1 tasks"));
    let healthy = [task("a", 1, TaskState::Running)
        .health(ContainerHealth::Healthy)
        .build()];
    let frame = at(&mut tracker, &service, &healthy, 62.0);
    assert!(text(&frame).starts_with("overall progress: 1 out of 1 tasks"));
    let frame = at(&mut tracker, &service, &healthy, 70.0);
    assert_eq!(frame.outcome, Some(Outcome::Converged));
}
