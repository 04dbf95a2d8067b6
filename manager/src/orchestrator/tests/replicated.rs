//! Decision tests of the replicated orchestrator, restart supervisor and
//! reaper, on a store without Raft: each test builds a cluster, runs passes
//! over one service, plays scheduler and agents by hand, and checks the
//! tasks a user would see.

use rswarm_proto::object::Kind;
use rswarm_proto::{
    ActionKind, NodeAvailability, NodeState, ReplicatedMode, RestartCondition, RestartPolicy,
    TaskState, service_spec::Mode,
};

use super::world::{World, replicated};
use crate::manager::action;
use crate::orchestrator::replicated::free_slots;
use crate::orchestrator::task::{PENDING_MESSAGE, observed, task_id};

fn set_replicas(world: &mut World, n: u64) {
    world.update_service("web", |spec| {
        spec.mode = Some(Mode::Replicated(ReplicatedMode { replicas: n }));
    });
}

fn set_restart(world: &mut World, policy: RestartPolicy) {
    let mut service = world.service("web");
    if let Some(task) = service.spec.as_mut().and_then(|s| s.task.as_mut()) {
        task.restart = Some(policy);
    }
    world.write_service(service);
}

/// Fails the service's runnable task(s) after they ran, `times` times,
/// `spacing_ms` apart, letting the orchestrator react each time.
fn crash_loop(world: &mut World, times: usize, spacing_ms: i64) -> Vec<String> {
    let mut crashed = Vec::new();
    for _ in 0..times {
        world.converge_tasks("web", "n1");
        for task in world.runnable("web") {
            let id = task_id(&task).to_owned();
            world.set_state(&id, TaskState::Failed, None);
            crashed.push(id);
        }
        world.now_ms += spacing_ms;
        world.settle("web");
    }
    crashed
}

#[test]
fn a_new_service_of_three_gets_three_pending_tasks_in_slots_one_to_three() {
    let mut world = World::new();
    world.create_service(replicated("web", 3, "nginx"));
    world.pass("web");
    let tasks = world.tasks("web");
    assert_eq!(
        tasks.iter().map(|t| t.slot).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    for task in &tasks {
        assert_eq!(task.desired_state(), TaskState::Running);
        assert_eq!(observed(task), TaskState::Pending);
        assert_eq!(task.status.as_ref().unwrap().message, PENDING_MESSAGE);
        assert!(task.node_id.is_empty());
        assert_eq!(task.spec_version, 1);
        assert_eq!(task.service_name, "web");
    }
    let again = world.plan("web");
    assert!(again.changes.is_empty(), "a settled service needs nothing");
}

#[test]
fn scaling_up_fills_free_slots_and_down_removes_the_highest() {
    let mut world = World::new();
    world.add_node("n1");
    world.create_service(replicated("web", 3, "nginx"));
    world.settle("web");
    world.converge_tasks("web", "n1");
    set_replicas(&mut world, 5);
    world.settle("web");
    assert_eq!(world.runnable_slots("web"), vec![1, 2, 3, 4, 5]);
    world.converge_tasks("web", "n1");
    set_replicas(&mut world, 2);
    world.pass("web");
    assert_eq!(world.runnable_slots("web"), vec![1, 2]);
    let removed: Vec<u64> = world
        .tasks("web")
        .iter()
        .filter(|t| t.desired_state() == TaskState::Remove)
        .map(|t| t.slot)
        .collect();
    assert_eq!(removed, vec![3, 4, 5]);
    // The agent stops them; the reaper deletes them.
    world.converge_tasks("web", "n1");
    world.settle("web");
    assert_eq!(
        world.tasks("web").len(),
        2,
        "removed tasks are deleted once stopped"
    );
}

#[test]
fn scaling_down_prefers_tasks_not_running_then_busy_nodes() {
    let mut world = World::new();
    world.add_node("n1");
    world.add_node("n2");
    world.create_service(replicated("web", 4, "nginx"));
    world.settle("web");
    let tasks = world.tasks("web");
    let id = |slot: usize| task_id(&tasks[slot - 1]).to_owned();
    world.set_state(&id(1), TaskState::Running, Some("n1"));
    world.set_state(&id(2), TaskState::Running, Some("n1"));
    world.set_state(&id(3), TaskState::Running, Some("n2"));
    // Slot 4 is still pending.
    set_replicas(&mut world, 2);
    world.pass("web");
    assert_eq!(
        world.runnable_slots("web"),
        vec![1, 3],
        "slot 4 (not running) goes first, then slot 2 (n1 has two)"
    );
}

#[test]
fn free_slots_are_the_lowest_numbers_not_taken() {
    let taken = [2u64, 3, 7];
    assert_eq!(free_slots(|n| taken.contains(&n), 4), vec![1, 4, 5, 6]);
    assert!(free_slots(|_| false, 0).is_empty());
}

#[test]
fn tasks_of_a_down_or_drained_node_are_replaced_in_the_same_slot() {
    for (state, availability) in [
        (NodeState::Down, NodeAvailability::Active),
        (NodeState::Ready, NodeAvailability::Drain),
    ] {
        let mut world = World::new();
        world.add_node("n1");
        world.add_node("n2");
        world.create_service(replicated("web", 2, "nginx"));
        world.settle("web");
        let tasks = world.tasks("web");
        world.set_state(task_id(&tasks[0]), TaskState::Running, Some("n1"));
        world.set_state(task_id(&tasks[1]), TaskState::Running, Some("n2"));
        world.set_node("n1", state, availability);
        world.pass("web");
        let slot1: Vec<_> = world
            .tasks("web")
            .into_iter()
            .filter(|t| t.slot == 1)
            .collect();
        assert_eq!(
            slot1.len(),
            2,
            "{state:?}/{availability:?}: old + replacement"
        );
        let old = slot1.iter().find(|t| t.node_id == "n1").unwrap();
        let new = slot1.iter().find(|t| t.node_id.is_empty()).unwrap();
        assert_eq!(old.desired_state(), TaskState::Shutdown);
        assert_eq!(new.desired_state(), TaskState::Running);
        assert_eq!(observed(new), TaskState::Pending);
        assert_eq!(world.runnable_slots("web"), vec![1, 2], "slot 2 untouched");
    }
}

#[test]
fn a_paused_node_keeps_its_tasks() {
    let mut world = World::new();
    world.add_node("n1");
    world.create_service(replicated("web", 1, "nginx"));
    world.settle("web");
    world.converge_tasks("web", "n1");
    world.set_node("n1", NodeState::Ready, NodeAvailability::Pause);
    assert!(world.plan("web").changes.is_empty());
}

#[test]
fn a_removed_node_counts_as_down() {
    let mut world = World::new();
    world.add_node("n1");
    world.create_service(replicated("web", 1, "nginx"));
    world.settle("web");
    world.converge_tasks("web", "n1");
    let node = world.node("n1");
    world.apply(vec![action(ActionKind::Delete, Kind::Node(node))]);
    world.pass("web");
    let runnable = world.runnable("web");
    assert_eq!(runnable.len(), 1);
    assert!(
        runnable[0].node_id.is_empty(),
        "a replacement waits to be placed"
    );
}

#[test]
fn on_failure_with_max_two_attempts_stops_after_two_restarts() {
    let mut world = World::new();
    world.add_node("n1");
    world.create_service(replicated("web", 1, "crash"));
    set_restart(
        &mut world,
        RestartPolicy {
            condition: RestartCondition::OnFailure as i32,
            delay_ms: Some(0),
            max_attempts: 2,
            window_ms: 0,
        },
    );
    world.settle("web");
    let crashed = crash_loop(&mut world, 5, 1_000);
    assert_eq!(crashed.len(), 3, "the first run and two restarts");
    let tasks = world.tasks("web");
    assert_eq!(tasks.len(), 3);
    assert!(tasks.iter().all(|t| observed(t) == TaskState::Failed));
    assert!(world.runnable("web").is_empty(), "the slot stays empty");
    world.now_ms += 60_000;
    assert!(
        world.plan("web").changes.is_empty(),
        "scaling does not refill a held slot"
    );
    // A new spec gives the slot new attempts.
    world.update_service("web", |spec| {
        if let Some(c) = spec.task.as_mut().and_then(|t| t.container.as_mut()) {
            c.image = "fixed".to_owned();
        }
    });
    world.pass("web");
    assert_eq!(world.runnable_slots("web"), vec![1]);
}

#[test]
fn restart_attempts_outside_the_window_do_not_count() {
    let mut world = World::new();
    world.add_node("n1");
    world.create_service(replicated("web", 1, "crash"));
    set_restart(
        &mut world,
        RestartPolicy {
            delay_ms: Some(0),
            max_attempts: 1,
            window_ms: 1_500,
            ..RestartPolicy::default()
        },
    );
    world.settle("web");
    let slow = crash_loop(&mut world, 3, 2_000);
    assert_eq!(
        slow.len(),
        3,
        "crashes further apart than the window: restarted each time"
    );
    assert_eq!(world.runnable_slots("web"), vec![1]);
    let fast = crash_loop(&mut world, 3, 500);
    assert_eq!(fast.len(), 1, "the second crash within the window gives up");
    world.now_ms += 10_000;
    world.settle("web");
    assert!(
        world.runnable("web").is_empty(),
        "giving up is final, also once the window has passed"
    );
}

#[test]
fn on_failure_does_not_restart_a_task_that_completed() {
    let mut world = World::new();
    world.add_node("n1");
    world.create_service(replicated("web", 1, "job"));
    set_restart(
        &mut world,
        RestartPolicy {
            condition: RestartCondition::OnFailure as i32,
            delay_ms: Some(0),
            ..RestartPolicy::default()
        },
    );
    world.settle("web");
    world.converge_tasks("web", "n1");
    let id = task_id(&world.runnable("web")[0]).to_owned();
    world.set_state(&id, TaskState::Complete, None);
    world.settle("web");
    assert!(world.runnable("web").is_empty());
    let task = world.state.task(&id).unwrap();
    assert_eq!(task.desired_state(), TaskState::Shutdown);
}

#[test]
fn a_restart_is_held_ready_until_the_delay_has_passed() {
    let mut world = World::new();
    world.add_node("n1");
    world.create_service(replicated("web", 1, "crash"));
    set_restart(
        &mut world,
        RestartPolicy {
            delay_ms: Some(5_000),
            ..RestartPolicy::default()
        },
    );
    world.settle("web");
    world.converge_tasks("web", "n1");
    let id = task_id(&world.runnable("web")[0]).to_owned();
    world.set_state(&id, TaskState::Failed, None);
    let outcome = world.pass("web");
    let replacement = world.runnable("web")[0].clone();
    assert_eq!(replacement.desired_state(), TaskState::Ready);
    assert_eq!(replacement.slot, 1);
    assert!(outcome.signals.attentive);
    assert_eq!(outcome.signals.wake_at_ms, Some(world.now_ms + 5_000));
    world.now_ms += 4_000;
    assert!(world.plan("web").changes.is_empty(), "still held");
    world.now_ms += 1_000;
    world.pass("web");
    let released = world.state.task(task_id(&replacement)).unwrap();
    assert_eq!(released.desired_state(), TaskState::Running);
}

#[test]
fn history_keeps_the_newest_tasks_of_each_slot() {
    let mut world = World::new();
    world.history_limit = 2;
    world.add_node("n1");
    world.create_service(replicated("web", 1, "crash"));
    world.settle("web");
    let crashed = crash_loop(&mut world, 5, 1_000);
    let tasks = world.tasks("web");
    assert_eq!(tasks.len(), 3, "one runnable task and two old ones");
    let kept: Vec<&str> = tasks
        .iter()
        .filter(|t| t.desired_state() == TaskState::Shutdown)
        .map(task_id)
        .collect();
    assert_eq!(kept, vec![crashed[3].as_str(), crashed[4].as_str()]);
}

#[test]
fn history_limit_zero_keeps_none() {
    let mut world = World::new();
    world.history_limit = 0;
    world.add_node("n1");
    world.create_service(replicated("web", 1, "crash"));
    world.settle("web");
    crash_loop(&mut world, 3, 1_000);
    assert_eq!(world.tasks("web").len(), 1);
}

#[test]
fn a_deleted_service_has_its_tasks_removed_then_reaped() {
    let mut world = World::new();
    world.add_node("n1");
    world.create_service(replicated("web", 2, "nginx"));
    world.settle("web");
    world.converge_tasks("web", "n1");
    let service = world.service("web");
    world.apply(vec![action(ActionKind::Delete, Kind::Service(service))]);
    world.pass("web");
    let tasks = world.tasks("web");
    assert_eq!(tasks.len(), 2, "running tasks wait for their agent");
    assert!(tasks.iter().all(|t| t.desired_state() == TaskState::Remove));
    world.converge_tasks("web", "n1");
    world.pass("web");
    assert!(world.tasks("web").is_empty());
}

#[test]
fn removed_tasks_on_a_down_node_are_reaped_at_once() {
    let mut world = World::new();
    world.add_node("n1");
    world.create_service(replicated("web", 1, "nginx"));
    world.settle("web");
    world.converge_tasks("web", "n1");
    set_replicas(&mut world, 0);
    world.pass("web");
    assert_eq!(world.tasks("web").len(), 1, "waits for the agent");
    world.set_node("n1", NodeState::Down, NodeAvailability::Active);
    world.pass("web");
    assert!(world.tasks("web").is_empty());
}
