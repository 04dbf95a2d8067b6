//! Decision tests of the global orchestrator: one task per node that takes
//! the service, following nodes as they join, drain, fail and leave.

use rswarm_proto::object::Kind;
use rswarm_proto::{
    ActionKind, Annotations, GlobalMode, NodeAvailability, NodeState, Placement, TaskState,
    service_spec::Mode,
};

use super::world::{World, replicated};
use crate::manager::action;
use crate::orchestrator::task::{observed, task_id, task_name};

fn global_service(world: &mut World, constraints: &[&str]) {
    let mut service = replicated("agent", 0, "monitor");
    if let Some(spec) = service.spec.as_mut() {
        spec.mode = Some(Mode::Global(GlobalMode {}));
        if let Some(task) = spec.task.as_mut() {
            task.placement = Some(Placement {
                constraints: constraints.iter().map(|c| (*c).to_owned()).collect(),
                ..Placement::default()
            });
        }
    }
    world.create_service(service);
}

fn nodes_running(world: &World) -> Vec<String> {
    let mut nodes: Vec<String> = world
        .runnable("agent")
        .iter()
        .map(|t| t.node_id.clone())
        .collect();
    nodes.sort();
    nodes
}

#[test]
fn one_task_per_node_with_the_node_preset_and_slot_zero() {
    let mut world = World::new();
    world.add_node("n1");
    world.add_node("n2");
    global_service(&mut world, &[]);
    world.pass("agent");
    let tasks = world.runnable("agent");
    assert_eq!(nodes_running(&world), vec!["n1", "n2"]);
    for task in &tasks {
        assert_eq!(task.slot, 0);
        assert_eq!(observed(task), TaskState::Pending);
        assert_eq!(task_name(task), format!("agent.{}", task.node_id));
    }
    assert!(world.plan("agent").changes.is_empty());
}

#[test]
fn a_joining_node_gets_a_task_and_a_drained_or_down_one_loses_it() {
    let mut world = World::new();
    world.add_node("n1");
    global_service(&mut world, &[]);
    world.settle("agent");
    world.converge_tasks("agent", "");
    world.add_node("n2");
    world.pass("agent");
    assert_eq!(nodes_running(&world), vec!["n1", "n2"]);
    world.converge_tasks("agent", "");
    world.set_node("n1", NodeState::Ready, NodeAvailability::Drain);
    world.pass("agent");
    assert_eq!(
        nodes_running(&world),
        vec!["n2"],
        "no replacement elsewhere"
    );
    world.set_node("n2", NodeState::Down, NodeAvailability::Active);
    world.pass("agent");
    assert!(nodes_running(&world).is_empty());
    // The node comes back: a new task; its old one stays shut down.
    world.set_node("n2", NodeState::Ready, NodeAvailability::Active);
    world.pass("agent");
    assert_eq!(nodes_running(&world), vec!["n2"]);
    let on_n2 = world
        .tasks("agent")
        .into_iter()
        .filter(|t| t.node_id == "n2")
        .count();
    assert_eq!(on_n2, 2);
}

#[test]
fn a_paused_node_keeps_its_task_but_a_new_paused_node_gets_none() {
    let mut world = World::new();
    world.add_node("n1");
    global_service(&mut world, &[]);
    world.settle("agent");
    world.set_node("n1", NodeState::Ready, NodeAvailability::Pause);
    assert!(world.plan("agent").changes.is_empty());
    world.add_node("n2");
    world.set_node("n2", NodeState::Ready, NodeAvailability::Pause);
    assert!(world.plan("agent").changes.is_empty());
}

#[test]
fn constraints_pick_the_nodes_and_a_label_change_follows() {
    let mut world = World::new();
    world.add_node("n1");
    world.add_node("n2");
    let mut n1 = world.node("n1");
    if let Some(spec) = n1.spec.as_mut() {
        spec.annotations = Some(Annotations {
            labels: [("gpu".to_owned(), "yes".to_owned())].into(),
            ..Annotations::default()
        });
    }
    world.apply(vec![action(ActionKind::Update, Kind::Node(n1.clone()))]);
    global_service(&mut world, &["node.labels.gpu==yes"]);
    world.pass("agent");
    assert_eq!(nodes_running(&world), vec!["n1"]);
    let mut n1 = world.node("n1");
    if let Some(a) = n1.spec.as_mut().and_then(|s| s.annotations.as_mut()) {
        a.labels.clear();
    }
    world.apply(vec![action(ActionKind::Update, Kind::Node(n1))]);
    world.pass("agent");
    assert!(
        nodes_running(&world).is_empty(),
        "the label went, so did the task"
    );
}

#[test]
fn a_removed_node_loses_its_task_and_its_history() {
    let mut world = World::new();
    world.add_node("n1");
    world.add_node("n2");
    global_service(&mut world, &[]);
    world.settle("agent");
    world.converge_tasks("agent", "");
    let node = world.node("n2");
    world.apply(vec![action(ActionKind::Delete, Kind::Node(node))]);
    world.pass("agent");
    let on_n2: Vec<_> = world
        .tasks("agent")
        .into_iter()
        .filter(|t| t.node_id == "n2")
        .collect();
    assert!(
        on_n2.is_empty(),
        "a gone node's tasks are deleted: {on_n2:?}"
    );
    assert_eq!(nodes_running(&world), vec!["n1"]);
}

#[test]
fn a_failed_global_task_restarts_on_its_node() {
    let mut world = World::new();
    world.add_node("n1");
    global_service(&mut world, &[]);
    world.settle("agent");
    world.converge_tasks("agent", "");
    let id = task_id(&world.runnable("agent")[0]).to_owned();
    world.set_state(&id, TaskState::Failed, None);
    world.pass("agent");
    let runnable = world.runnable("agent");
    assert_eq!(runnable.len(), 1);
    assert_eq!(runnable[0].node_id, "n1");
    assert_ne!(task_id(&runnable[0]), id);
}
