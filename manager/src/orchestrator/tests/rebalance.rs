//! Decision tests of rebalancing: a service piled on one node spreads out
//! over nodes that joined, with its update policy, then records that the
//! request was answered.

use std::collections::BTreeMap;

use rswarm_proto::object::Kind;
use rswarm_proto::{ActionKind, Cluster, ClusterSpec, TaskState, UpdateConfig, UpdateOrder};

use super::world::{World, replicated};
use crate::manager::action;
use crate::orchestrator::rebalance::auto_rebalance;
use crate::orchestrator::task::{is_running, observed};

fn spread(world: &World) -> BTreeMap<String, usize> {
    let mut load = BTreeMap::new();
    for task in world.runnable("web") {
        *load.entry(task.node_id.clone()).or_insert(0) += 1;
    }
    load
}

/// Six tasks on n1, then n2 and n3 join.
fn piled_up(order: UpdateOrder, parallelism: u64) -> World {
    let mut world = World::new();
    world.add_node("n1");
    let mut service = replicated("web", 6, "v1");
    let mut config = UpdateConfig {
        parallelism: Some(parallelism),
        monitor_ms: Some(0),
        ..UpdateConfig::default()
    };
    config.set_order(order);
    service.spec.as_mut().unwrap().update = Some(config);
    world.create_service(service);
    world.settle("web");
    world.converge_tasks("web", "n1");
    world.add_node("n2");
    world.add_node("n3");
    // Replacements are made later than the tasks they replace.
    world.now_ms += 1_000;
    world
}

fn request(world: &mut World) {
    let mut service = world.service("web");
    service.rebalance_requested += 1;
    world.write_service(service);
}

#[test]
fn a_requested_rebalance_moves_tasks_to_the_new_nodes_and_is_recorded() {
    let mut world = piled_up(UpdateOrder::StartFirst, 2);
    assert!(world.plan("web").changes.is_empty(), "no request, no move");
    request(&mut world);
    for _ in 0..30 {
        world.pass("web");
        let in_flight = world
            .runnable("web")
            .iter()
            .filter(|t| !is_running(t))
            .count();
        assert!(in_flight <= 2, "parallelism 2");
        assert_eq!(
            world
                .runnable("web")
                .iter()
                .filter(|t| is_running(t))
                .count()
                + in_flight,
            6 + in_flight,
            "start-first: every running task keeps running until its replacement runs"
        );
        world.converge_spread("web");
        world.now_ms += 100;
    }
    let service = world.service("web");
    assert_eq!(service.rebalanced, service.rebalance_requested);
    assert_eq!(
        spread(&world),
        BTreeMap::from([("n1".into(), 2), ("n2".into(), 2), ("n3".into(), 2)])
    );
    let slots = world.runnable_slots("web");
    assert_eq!(slots, vec![1, 2, 3, 4, 5, 6], "moves keep their slots");
}

#[test]
fn stop_first_moves_stop_the_old_task_first() {
    let mut world = piled_up(UpdateOrder::StopFirst, 1);
    request(&mut world);
    world.pass("web");
    let held: Vec<_> = world
        .runnable("web")
        .into_iter()
        .filter(|t| t.desired_state() == TaskState::Ready)
        .collect();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].slot, 6, "the highest slot moves first");
    let old_stopping = world
        .tasks("web")
        .into_iter()
        .filter(|t| t.slot == 6 && t.desired_state() == TaskState::Shutdown)
        .count();
    assert_eq!(old_stopping, 1);
    for _ in 0..40 {
        world.converge_spread("web");
        world.pass("web");
        world.now_ms += 100;
    }
    assert_eq!(
        spread(&world).values().copied().collect::<Vec<_>>(),
        vec![2, 2, 2]
    );
    let service = world.service("web");
    assert_eq!(service.rebalanced, service.rebalance_requested);
}

#[test]
fn an_even_service_just_records_the_request() {
    let mut world = World::new();
    world.add_node("n1");
    world.create_service(replicated("web", 1, "v1"));
    world.settle("web");
    world.converge_tasks("web", "n1");
    request(&mut world);
    world.pass("web");
    let service = world.service("web");
    assert_eq!(service.rebalanced, 1);
    assert!(
        world
            .runnable("web")
            .iter()
            .all(|t| observed(t) == TaskState::Running)
    );
}

#[test]
fn auto_rebalance_picks_opted_in_services_without_a_pending_request() {
    let mut world = World::new();
    let mut opted = replicated("opted", 1, "v1");
    opted.spec.as_mut().unwrap().rebalance = true;
    world.create_service(opted);
    world.create_service(replicated("plain", 1, "v1"));
    let picked: Vec<String> = auto_rebalance(&world.state)
        .iter()
        .map(|s| s.meta.as_ref().unwrap().id.clone())
        .collect();
    assert_eq!(picked, vec!["opted"]);
    assert_eq!(auto_rebalance(&world.state)[0].rebalance_requested, 1);
    let mut cluster: Cluster = world.state.cluster().cloned().unwrap();
    cluster.spec = Some(ClusterSpec {
        auto_rebalance: true,
        ..cluster.spec.unwrap_or_default()
    });
    world.apply(vec![action(ActionKind::Update, Kind::Cluster(cluster))]);
    assert_eq!(
        auto_rebalance(&world.state).len(),
        2,
        "the cluster setting covers all"
    );
    let mut pending = world.service("opted");
    pending.rebalance_requested = 5;
    world.write_service(pending);
    assert_eq!(
        auto_rebalance(&world.state).len(),
        1,
        "one request at a time"
    );
}
