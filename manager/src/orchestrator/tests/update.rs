//! Decision tests of the rolling updater: which slots are dirty, in which
//! order and how many at once they are replaced, stop-first vs start-first,
//! failure handling (pause, rollback, a failing rollback), completion, and
//! carrying on after a leader change.

use rswarm_proto::{
    EndpointSpec, NodeAvailability, NodeState, Placement, PortConfig, ReplicatedMode, Service,
    ServiceSpec, TaskState, UpdateConfig, UpdateFailureAction, UpdateOrder, UpdateState,
    service_spec::Mode,
};

use super::world::{FAILING_IMAGE, World, image_of, replicated};
use crate::orchestrator::reconcile::ServiceMemory;
use crate::orchestrator::task::{is_running, observed, task_id};
use crate::orchestrator::update::{
    FailureResponse, Rollout, UpdateRun, failure_response, is_outdated, rollout_of,
    too_many_failures,
};

fn set_image(spec: &mut ServiceSpec, image: &str) {
    if let Some(c) = spec.task.as_mut().and_then(|t| t.container.as_mut()) {
        c.image = image.to_owned();
    }
}

fn set_update(world: &mut World, config: UpdateConfig, rollback: Option<UpdateConfig>) {
    let mut service = world.service("web");
    if let Some(spec) = service.spec.as_mut() {
        spec.update = Some(config);
        spec.rollback = rollback;
    }
    world.write_service(service);
}

fn update_config(
    parallelism: u64,
    order: UpdateOrder,
    action: UpdateFailureAction,
) -> UpdateConfig {
    let mut config = UpdateConfig {
        parallelism: Some(parallelism),
        monitor_ms: Some(0),
        ..UpdateConfig::default()
    };
    config.set_order(order);
    config.set_failure_action(action);
    config
}

fn state(world: &World) -> UpdateState {
    world
        .service("web")
        .update_status
        .as_ref()
        .map_or(UpdateState::Unknown, |u| u.state())
}

/// A running service of `replicas` tasks of image v1 on n1.
fn running_service(replicas: u64) -> World {
    let mut world = World::new();
    world.add_node("n1");
    world.create_service(replicated("web", replicas, "v1"));
    world.settle("web");
    world.converge_tasks("web", "n1");
    world
}

/// Alternates passes and agent steps until the update leaves UPDATING (or
/// ROLLBACK_STARTED), recording each pass's runnable images per slot.
fn drive(world: &mut World, steps: usize) -> Vec<Vec<(u64, String, TaskState)>> {
    let mut seen = Vec::new();
    for _ in 0..steps {
        world.pass("web");
        seen.push(
            world
                .runnable("web")
                .iter()
                .map(|t| (t.slot, image_of(t).to_owned(), t.desired_state()))
                .collect(),
        );
        world.converge_tasks("web", "n1");
        world.now_ms += 100;
        if !matches!(
            state(world),
            UpdateState::Updating | UpdateState::RollbackStarted
        ) {
            world.pass("web");
            break;
        }
    }
    seen
}

#[test]
fn a_task_is_dirty_when_its_spec_or_endpoint_differs_not_its_replica_count() {
    let mut world = running_service(1);
    let task = world.runnable("web")[0].clone();
    let node = world.node("n1");
    let mut service = world.service("web");
    assert!(!is_outdated(&task, &service, Some(&node)));
    // Every spec change bumps the version.
    service.spec_version += 1;
    service.spec.as_mut().unwrap().mode = Some(Mode::Replicated(ReplicatedMode { replicas: 9 }));
    assert!(
        !is_outdated(&task, &service, Some(&node)),
        "scaling is no update"
    );
    let mut placed = service.clone();
    placed
        .spec
        .as_mut()
        .unwrap()
        .task
        .as_mut()
        .unwrap()
        .placement = Some(Placement {
        constraints: vec!["node.hostname==n1".to_owned()],
        ..Placement::default()
    });
    assert!(
        !is_outdated(&task, &placed, Some(&node)),
        "its node still fits"
    );
    placed
        .spec
        .as_mut()
        .unwrap()
        .task
        .as_mut()
        .unwrap()
        .placement = Some(Placement {
        constraints: vec!["node.hostname==n2".to_owned()],
        ..Placement::default()
    });
    assert!(
        is_outdated(&task, &placed, Some(&node)),
        "its node no longer fits"
    );
    let mut ported = service.clone();
    ported.spec.as_mut().unwrap().endpoint = Some(EndpointSpec {
        ports: vec![PortConfig {
            target_port: 80,
            ..PortConfig::default()
        }],
    });
    assert!(is_outdated(&task, &ported, Some(&node)));
    set_image(service.spec.as_mut().unwrap(), "v2");
    assert!(is_outdated(&task, &service, Some(&node)));
    // Scaling bumps the spec version but starts no update.
    world.update_service("web", |spec| {
        spec.mode = Some(Mode::Replicated(ReplicatedMode { replicas: 1 }));
    });
    assert!(world.plan("web").changes.is_empty());
}

#[test]
fn stop_first_stops_the_old_task_before_the_new_one_may_run() {
    let mut world = running_service(3);
    world.update_service("web", |spec| set_image(spec, "v2"));
    world.pass("web");
    assert_eq!(state(&world), UpdateState::Updating);
    let slot1: Vec<_> = world
        .tasks("web")
        .into_iter()
        .filter(|t| t.slot == 1)
        .collect();
    let old = slot1.iter().find(|t| image_of(t) == "v1").unwrap();
    let new = slot1.iter().find(|t| image_of(t) == "v2").unwrap();
    assert_eq!(old.desired_state(), TaskState::Shutdown);
    assert_eq!(
        new.desired_state(),
        TaskState::Ready,
        "held until the old one stops"
    );
    assert_eq!(world.runnable_slots("web"), vec![1, 2, 3]);
    let v2_slots = |w: &World| {
        w.runnable("web")
            .iter()
            .filter(|t| image_of(t) == "v2")
            .count()
    };
    assert_eq!(v2_slots(&world), 1, "parallelism 1");
    // Still held while the old task runs.
    world.pass("web");
    let held = world.state.task(task_id(new)).unwrap();
    assert_eq!(held.desired_state(), TaskState::Ready);
    world.converge_tasks("web", "n1");
    world.pass("web");
    let released = world.state.task(task_id(new)).unwrap();
    assert_eq!(
        released.desired_state(),
        TaskState::Running,
        "old stopped: go"
    );
    drive(&mut world, 30);
    assert_eq!(state(&world), UpdateState::Completed);
    assert!(world.runnable("web").iter().all(|t| image_of(t) == "v2"));
    let status = world.service("web").update_status.unwrap();
    assert!(status.completed_at_ms >= status.started_at_ms);
}

#[test]
fn start_first_runs_the_new_task_next_to_the_old_one() {
    let mut world = running_service(2);
    set_update(
        &mut world,
        update_config(1, UpdateOrder::StartFirst, UpdateFailureAction::Pause),
        None,
    );
    world.update_service("web", |spec| set_image(spec, "v2"));
    world.pass("web");
    let slot1: Vec<_> = world
        .runnable("web")
        .into_iter()
        .filter(|t| t.slot == 1)
        .collect();
    assert_eq!(slot1.len(), 2, "old and new both wanted up");
    let old = slot1.iter().find(|t| image_of(t) == "v1").unwrap().clone();
    assert!(is_running(&old));
    let new = slot1.iter().find(|t| image_of(t) == "v2").unwrap().clone();
    assert_eq!(new.desired_state(), TaskState::Running);
    world.pass("web");
    assert_eq!(
        world.state.task(task_id(&old)).unwrap().desired_state(),
        TaskState::Running,
        "the old task stays until the new one runs"
    );
    world.converge_tasks("web", "n1");
    world.pass("web");
    assert_eq!(
        world.state.task(task_id(&old)).unwrap().desired_state(),
        TaskState::Shutdown
    );
    drive(&mut world, 30);
    assert_eq!(state(&world), UpdateState::Completed);
}

#[test]
fn parallelism_bounds_slots_in_flight_and_idle_slots_go_first() {
    let mut world = World::new();
    world.add_node("n1");
    world.create_service(replicated("web", 5, "v1"));
    world.settle("web");
    // Slots 1, 2, 3 run; 4 and 5 are still pending.
    for task in world.tasks("web").into_iter().filter(|t| t.slot <= 3) {
        world.set_state(task_id(&task), TaskState::Running, Some("n1"));
    }
    set_update(
        &mut world,
        update_config(2, UpdateOrder::StopFirst, UpdateFailureAction::Pause),
        None,
    );
    world.update_service("web", |spec| set_image(spec, "v2"));
    world.pass("web");
    let mut updated: Vec<u64> = world
        .runnable("web")
        .iter()
        .filter(|t| image_of(t) == "v2")
        .map(|t| t.slot)
        .collect();
    updated.sort_unstable();
    assert_eq!(
        updated,
        vec![4, 5],
        "slots not serving anyone first, two at once"
    );
    let seen = drive(&mut world, 40);
    for pass in &seen {
        let in_flight = pass
            .iter()
            .filter(|(_, image, desired)| image == "v2" && *desired == TaskState::Ready)
            .count();
        assert!(in_flight <= 2, "at most two held at once: {pass:?}");
    }
    assert_eq!(state(&world), UpdateState::Completed);
}

#[test]
fn the_delay_spaces_the_slots() {
    let mut world = running_service(2);
    let mut config = update_config(1, UpdateOrder::StartFirst, UpdateFailureAction::Pause);
    config.delay_ms = 10_000;
    set_update(&mut world, config, None);
    world.update_service("web", |spec| set_image(spec, "v2"));
    world.pass("web");
    world.converge_tasks("web", "n1");
    let outcome = world.pass("web");
    assert_eq!(outcome.signals.wake_at_ms, Some(world.now_ms + 10_000));
    let v2 = |w: &World| {
        w.runnable("web")
            .iter()
            .filter(|t| image_of(t) == "v2")
            .count()
    };
    assert_eq!(v2(&world), 1);
    world.now_ms += 9_000;
    world.pass("web");
    assert_eq!(v2(&world), 1, "still waiting");
    world.now_ms += 1_000;
    world.pass("web");
    assert_eq!(v2(&world), 2);
}

#[test]
fn a_failing_update_pauses_and_stays_paused_until_a_new_spec() {
    let mut world = running_service(3);
    world.update_service("web", |spec| set_image(spec, FAILING_IMAGE));
    drive(&mut world, 30);
    assert_eq!(state(&world), UpdateState::Paused);
    let status = world.service("web").update_status.unwrap();
    assert!(
        status
            .message
            .starts_with("update paused due to failure or early termination of task "),
        "{}",
        status.message
    );
    let v1_left = world
        .runnable("web")
        .iter()
        .filter(|t| image_of(t) == "v1")
        .count();
    assert_eq!(v1_left, 2, "only the first slot was tried");
    // Paused: more passes change nothing about the other slots.
    world.pass("web");
    world.memory = ServiceMemory::default();
    world.pass("web");
    assert_eq!(
        state(&world),
        UpdateState::Paused,
        "a new leader keeps it paused"
    );
    // A new spec resumes.
    world.update_service("web", |spec| set_image(spec, "v3"));
    drive(&mut world, 40);
    assert_eq!(state(&world), UpdateState::Completed);
    assert!(world.runnable("web").iter().all(|t| image_of(t) == "v3"));
}

#[test]
fn a_failing_update_with_rollback_returns_to_the_previous_spec() {
    let mut world = running_service(3);
    set_update(
        &mut world,
        update_config(1, UpdateOrder::StopFirst, UpdateFailureAction::Rollback),
        Some(update_config(
            0,
            UpdateOrder::StopFirst,
            UpdateFailureAction::Pause,
        )),
    );
    let before: Service = world.service("web");
    world.update_service("web", |spec| set_image(spec, FAILING_IMAGE));
    let version_of_update = world.service("web").spec_version;
    drive(&mut world, 10);
    let service = world.service("web");
    assert!(
        matches!(
            state(&world),
            UpdateState::RollbackStarted | UpdateState::RollbackCompleted
        ),
        "{:?}",
        state(&world)
    );
    assert_eq!(service.spec_version, version_of_update + 1);
    assert_eq!(
        service.spec.as_ref().map(|s| &s.task),
        before.spec.as_ref().map(|s| &s.task)
    );
    drive(&mut world, 40);
    assert_eq!(state(&world), UpdateState::RollbackCompleted);
    assert!(world.runnable("web").iter().all(|t| image_of(t) == "v1"));
    assert_eq!(world.runnable_slots("web"), vec![1, 2, 3]);
}

#[test]
fn a_failing_rollback_pauses_and_never_rolls_back_again() {
    let mut world = running_service(2);
    world.update_service("web", |spec| set_image(spec, "v2"));
    drive(&mut world, 40);
    assert_eq!(state(&world), UpdateState::Completed);
    // The previous spec now fails too (the image went bad): roll back to it.
    let mut service = world.service("web");
    if let Some(prev) = service.previous_spec.as_mut() {
        set_image(prev, FAILING_IMAGE);
    }
    let rollback = update_config(1, UpdateOrder::StopFirst, UpdateFailureAction::Rollback);
    if let Some(prev) = service.previous_spec.as_mut() {
        prev.rollback = Some(rollback);
    }
    // What the control API does for `service rollback`.
    let previous = service.previous_spec.take();
    service.previous_spec = service.spec.take();
    service.spec = previous;
    service.spec_version += 1;
    let mut status = rswarm_proto::UpdateStatus::default();
    status.set_state(UpdateState::RollbackStarted);
    service.update_status = Some(status);
    world.write_service(service);
    drive(&mut world, 40);
    assert_eq!(state(&world), UpdateState::RollbackPaused);
    let message = world.service("web").update_status.unwrap().message;
    assert!(
        message.starts_with("rollback paused due to failure"),
        "{message}"
    );
}

#[test]
fn continue_ignores_failures() {
    let mut world = running_service(2);
    set_update(
        &mut world,
        update_config(0, UpdateOrder::StopFirst, UpdateFailureAction::Continue),
        None,
    );
    world.update_service("web", |spec| set_image(spec, FAILING_IMAGE));
    world.pass("web");
    assert_eq!(state(&world), UpdateState::Updating);
    let fresh = world
        .runnable("web")
        .iter()
        .filter(|t| image_of(t) == FAILING_IMAGE)
        .count();
    assert_eq!(fresh, 2, "parallelism 0 updates every slot at once");
    for _ in 0..5 {
        world.converge_tasks("web", "n1");
        world.pass("web");
    }
    assert_eq!(state(&world), UpdateState::Updating, "never paused");
}

#[test]
fn a_new_leader_carries_on_an_update_it_finds_updating() {
    let mut world = running_service(3);
    world.update_service("web", |spec| set_image(spec, "v2"));
    world.pass("web");
    world.converge_tasks("web", "n1");
    let started = world.service("web").update_status.unwrap().started_at_ms;
    world.memory = ServiceMemory::default();
    world.now_ms += 5_000;
    drive(&mut world, 40);
    assert_eq!(state(&world), UpdateState::Completed);
    assert_eq!(
        world.service("web").update_status.unwrap().started_at_ms,
        started,
        "the same update, not a new one"
    );
    assert!(world.runnable("web").iter().all(|t| image_of(t) == "v2"));
}

#[test]
fn completion_waits_for_the_monitor_window() {
    let mut world = running_service(1);
    let mut config = update_config(1, UpdateOrder::StopFirst, UpdateFailureAction::Pause);
    config.monitor_ms = Some(3_000);
    set_update(&mut world, config, None);
    world.update_service("web", |spec| set_image(spec, "v2"));
    for _ in 0..4 {
        world.pass("web");
        world.converge_tasks("web", "n1");
    }
    let outcome = world.pass("web");
    assert_eq!(state(&world), UpdateState::Updating);
    assert_eq!(outcome.signals.wake_at_ms, Some(world.now_ms + 3_000));
    world.now_ms += 3_000;
    world.pass("web");
    assert_eq!(state(&world), UpdateState::Completed);
}

#[test]
fn an_update_skips_no_slot_on_a_drained_node() {
    let mut world = World::new();
    world.add_node("n1");
    world.add_node("n2");
    world.create_service(replicated("web", 2, "v1"));
    world.settle("web");
    let tasks = world.tasks("web");
    world.set_state(task_id(&tasks[0]), TaskState::Running, Some("n1"));
    world.set_state(task_id(&tasks[1]), TaskState::Running, Some("n2"));
    world.set_node("n2", NodeState::Ready, NodeAvailability::Drain);
    world.update_service("web", |spec| set_image(spec, "v2"));
    drive(&mut world, 40);
    assert_eq!(state(&world), UpdateState::Completed);
    let runnable = world.runnable("web");
    assert_eq!(runnable.len(), 2);
    assert!(
        runnable
            .iter()
            .all(|t| image_of(t) == "v2" && t.node_id == "n1")
    );
    assert!(runnable.iter().all(|t| observed(t) == TaskState::Running));
}

#[test]
fn rollout_defaults_follow_swarmkit() {
    let r = rollout_of(None);
    assert_eq!(r.parallelism, 1);
    assert_eq!(r.delay_ms, 0);
    assert_eq!(r.monitor_ms, 5_000);
    assert_eq!(r.order, UpdateOrder::StopFirst);
    assert_eq!(r.failure_action, UpdateFailureAction::Pause);
    let slow = rollout_of(Some(&UpdateConfig {
        delay_ms: 10_000,
        ..UpdateConfig::default()
    }));
    assert_eq!(slow.monitor_ms, 11_000, "monitor outlasts the delay");
}

#[test]
fn the_failure_ratio_and_action_decide_the_response() {
    let rollout = |ratio: f32, action| Rollout {
        max_failure_ratio: ratio,
        failure_action: action,
        ..rollout_of(None)
    };
    let run = |failures: usize| UpdateRun {
        spec_version: 2,
        rollback: false,
        slots_total: 10,
        failures: (0..failures).map(|i| format!("t{i}")).collect(),
        in_flight: Default::default(),
        next_start_ms: 0,
        last_done_ms: 0,
    };
    let pause = UpdateFailureAction::Pause;
    assert!(!too_many_failures(&run(0), &rollout(0.0, pause)));
    assert!(too_many_failures(&run(1), &rollout(0.0, pause)));
    assert!(
        !too_many_failures(&run(2), &rollout(0.2, pause)),
        "2/10 is not above 0.2"
    );
    assert!(too_many_failures(&run(3), &rollout(0.2, pause)));
    let cont = UpdateFailureAction::Continue;
    assert!(!too_many_failures(&run(10), &rollout(0.0, cont)));
    use FailureResponse::{Pause, Rollback};
    let rb = UpdateFailureAction::Rollback;
    assert_eq!(failure_response(rb, false, true), Rollback);
    assert_eq!(
        failure_response(rb, true, true),
        Pause,
        "a rollback never rolls back"
    );
    assert_eq!(
        failure_response(rb, false, false),
        Pause,
        "nothing to return to"
    );
    assert_eq!(failure_response(pause, false, true), Pause);
}
