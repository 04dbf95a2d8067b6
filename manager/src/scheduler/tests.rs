//! Placement, data-driven: each test builds a cluster, runs one pass, and
//! compares the rendered decisions (`node=count ...`, then `pending N:
//! reason` lines) with what a user would expect to see.

use rswarm_proto::*;

use super::fixtures::*;
use super::{Decision, Scheduler, water_fill};

fn concat<T: Clone>(parts: &[Vec<T>]) -> Vec<T> {
    parts.concat()
}

#[test]
fn least_loaded_spreads_six_tasks_two_per_equal_node() {
    let out = check(&nodes("n", 3), &[], &service("web").pending(6));
    assert_eq!(out, "n1=2 n2=2 n3=2");
}

#[test]
fn least_loaded_counts_the_services_tasks_first_then_all_tasks() {
    // n1 already runs 2 web tasks; n2 runs 3 tasks of another service.
    let existing = concat(&[
        service("web").running_on("n1", 2),
        service("db").running_on("n2", 3),
    ]);
    // 4 new web tasks: n2 and n3 have no web task; n3 is less loaded.
    let out = check(&nodes("n", 3), &existing, &service("web").pending(4));
    assert_eq!(out, "n2=2 n3=2");
    let out = check(&nodes("n", 3), &existing, &service("web").pending(1));
    assert_eq!(
        out, "n3=1",
        "a tie on web tasks goes to the node with fewer tasks"
    );
}

#[test]
fn resources_are_consumed_as_tasks_are_placed() {
    let cluster = [node("n1").memory(4 * GIB).build()];
    let out = check(&cluster, &[], &service("web").memory(GIB).pending(10));
    assert_eq!(
        out,
        "n1=4\npending 6: no suitable node (insufficient memory on 1 node)"
    );
    let cluster = [node("n1").cpus(2 * CPU).build()];
    let out = check(&cluster, &[], &service("web").cpus(CPU / 2).pending(5));
    assert_eq!(
        out,
        "n1=4\npending 1: no suitable node (insufficient cpu on 1 node)"
    );
}

#[test]
fn existing_active_tasks_hold_resources_and_finished_ones_do_not() {
    let cluster = [node("n1").memory(4 * GIB).build()];
    let big = service("db").memory(3 * GIB);
    let mut finished = big.running_on("n1", 1);
    finished[0].status.as_mut().unwrap().state = TaskState::Complete as i32;
    let web = service("web").memory(2 * GIB).pending(1);
    assert_eq!(
        check(&cluster, &big.running_on("n1", 1), &web),
        "pending 1: no suitable node (insufficient memory on 1 node)"
    );
    assert_eq!(check(&cluster, &finished, &web), "n1=1");
    let mut stopping = big.running_on("n1", 1);
    stopping[0].desired_state = TaskState::Shutdown as i32;
    assert_eq!(check(&cluster, &stopping, &web), "n1=1");
}

#[test]
fn nodes_not_ready_or_not_active_take_nothing() {
    let cluster = [
        node("down").state(NodeState::Down).build(),
        node("unknown").state(NodeState::Unknown).build(),
        node("paused").availability(NodeAvailability::Pause).build(),
        node("drained")
            .availability(NodeAvailability::Drain)
            .build(),
        node("ok").build(),
    ];
    assert_eq!(check(&cluster, &[], &service("web").pending(3)), "ok=3");
    assert_eq!(
        check(&cluster[..4], &[], &service("web").pending(3)),
        "pending 3: no suitable node (4 nodes not available for new tasks)"
    );
}

#[test]
fn constraints_on_each_key() {
    let cluster = [
        node("m1").manager().label("zone", "a").build(),
        node("w1").label("zone", "b").label("disk", "ssd").build(),
        node("w2").arch("aarch64").build(),
    ];
    let cases = [
        ("node.role==manager", "m1=2"),
        ("node.role!=manager", "w1=1 w2=1"),
        ("node.id==w1", "w1=2"),
        ("node.hostname==w2", "w2=2"),
        ("node.labels.zone==a", "m1=2"),
        ("node.labels.zone!=a", "w1=1 w2=1"),
        ("NODE.LABELS.DISK==ssd", "w1=2"),
        (
            "node.labels.disk==SSD",
            "pending 2: no suitable node (scheduling constraints not satisfied on 3 nodes)",
        ),
        ("node.platform.arch==arm64", "w2=2"),
        ("node.platform.arch==amd64", "m1=1 w1=1"),
        ("node.platform.os==Linux", "m1=1 w1=1"),
        (
            "node.platform.os==windows",
            "pending 2: no suitable node (scheduling constraints not satisfied on 3 nodes)",
        ),
    ];
    for (constraint, expected) in cases {
        let tasks = service("web").constraint(constraint).pending(2);
        assert_eq!(check(&cluster, &[], &tasks), expected, "{constraint}");
    }
}

#[test]
fn the_driver_must_be_supported() {
    let cluster = [
        node("n1").drivers(&["process"]).build(),
        node("n2").drivers(&["process", "oci"]).build(),
    ];
    let tasks = service("web").driver("oci").pending(2);
    assert_eq!(check(&cluster, &[], &tasks), "n2=2");
    assert_eq!(
        check(&cluster[..1], &[], &tasks),
        "pending 2: no suitable node (task driver \"oci\" not supported on 1 node)"
    );
}

#[test]
fn host_ports_take_one_task_per_node() {
    let web = service("web").host_port(80);
    let out = check(&nodes("n", 3), &web.running_on("n1", 1), &web.pending(3));
    assert_eq!(
        out,
        "n2=1 n3=1\npending 1: no suitable node (host-mode port already in use on 3 nodes)"
    );
    // Another port, or the same port in ingress mode, does not conflict.
    let other = service("api").host_port(81);
    assert_eq!(
        check(&nodes("n", 1), &web.running_on("n1", 1), &other.pending(1)),
        "n1=1"
    );
    assert_eq!(
        check(
            &nodes("n", 1),
            &web.running_on("n1", 1),
            &service("x").pending(1)
        ),
        "n1=1"
    );
}

#[test]
fn max_replicas_per_node() {
    let web = service("web").max_replicas(2);
    assert_eq!(
        check(&nodes("n", 2), &[], &web.pending(5)),
        "n1=2 n2=2\npending 1: no suitable node (max replicas per node reached on 2 nodes)"
    );
    // Tasks already running count.
    assert_eq!(
        check(&nodes("n", 2), &web.running_on("n1", 2), &web.pending(3)),
        "n2=2\npending 1: no suitable node (max replicas per node reached on 2 nodes)"
    );
}

#[test]
fn each_node_counts_under_the_first_filter_that_rejects_it() {
    let cluster = [
        node("a").state(NodeState::Down).label("zone", "x").build(),
        node("b").memory(GIB).label("zone", "y").build(),
        node("c").memory(GIB).label("zone", "y").build(),
        node("d").memory(GIB).label("zone", "x").build(),
        node("e").label("zone", "y").build(),
        node("f").label("zone", "y").build(),
    ];
    let tasks = service("web")
        .memory(2 * GIB)
        .constraint("node.labels.zone==x")
        .pending(1);
    assert_eq!(
        check(&cluster, &[], &tasks),
        "pending 1: no suitable node (1 node not available for new tasks; \
         insufficient memory on 3 nodes; scheduling constraints not satisfied on 2 nodes)"
    );
}

#[test]
fn an_empty_cluster_says_so() {
    assert_eq!(
        check(&[], &[], &service("web").pending(1)),
        "pending 1: no suitable node (the cluster has no nodes)"
    );
}

#[test]
fn a_bad_constraint_in_a_stored_spec_is_the_error() {
    let tasks = service("web").constraint("node.labels.zone=a").pending(1);
    assert_eq!(
        check(&nodes("n", 1), &[], &tasks),
        "pending 1: invalid constraint \"node.labels.zone=a\": expected KEY==VALUE or KEY!=VALUE"
    );
}

#[test]
fn spread_over_zones_evens_counts_per_zone() {
    // Zone a has 3 nodes, b 1 node, c 2: still 3 tasks per zone.
    let cluster = [
        node("a1").label("zone", "a").build(),
        node("a2").label("zone", "a").build(),
        node("a3").label("zone", "a").build(),
        node("b1").label("zone", "b").build(),
        node("c1").label("zone", "c").build(),
        node("c2").label("zone", "c").build(),
    ];
    let web = service("web").spread("node.labels.zone");
    assert_eq!(
        check(&cluster, &[], &web.pending(9)),
        "a1=1 a2=1 a3=1 b1=3 c1=2 c2=1"
    );
}

#[test]
fn nodes_without_the_label_form_their_own_group() {
    let cluster = [
        node("a1").label("zone", "a").build(),
        node("b1").label("zone", "b").build(),
        node("u1").build(),
        node("u2").build(),
    ];
    let web = service("web").spread("node.labels.zone");
    assert_eq!(check(&cluster, &[], &web.pending(6)), "a1=2 b1=2 u1=1 u2=1");
}

#[test]
fn spread_counts_tasks_already_running_in_each_zone() {
    let cluster = [
        node("a1").label("zone", "a").build(),
        node("b1").label("zone", "b").build(),
        node("b2").label("zone", "b").build(),
    ];
    let web = service("web").spread("node.labels.zone");
    // Zone a already has 4: the 4 new tasks all go to zone b.
    let out = check(&cluster, &web.running_on("a1", 4), &web.pending(4));
    assert_eq!(out, "b1=2 b2=2");
    // 6 new: b catches up to 4, then 1 more each.
    let out = check(&cluster, &web.running_on("a1", 4), &web.pending(6));
    assert_eq!(out, "a1=1 b1=3 b2=2");
}

#[test]
fn a_full_zone_passes_its_share_to_the_others() {
    let cluster = [
        node("a1").label("zone", "a").memory(2 * GIB).build(),
        node("b1").label("zone", "b").build(),
        node("c1").label("zone", "c").build(),
    ];
    let web = service("web").memory(GIB).spread("node.labels.zone");
    assert_eq!(check(&cluster, &[], &web.pending(9)), "a1=2 b1=4 c1=3");
}

#[test]
fn spread_is_a_tree_level_by_level() {
    // Two regions; region r1 has zones a and b, region r2 has zone c only.
    let cluster = [
        node("a1").label("region", "r1").label("zone", "a").build(),
        node("b1").label("region", "r1").label("zone", "b").build(),
        node("c1").label("region", "r2").label("zone", "c").build(),
        node("c2").label("region", "r2").label("zone", "c").build(),
    ];
    let web = service("web")
        .spread("node.labels.region")
        .spread("node.labels.zone");
    // 8 tasks: 4 per region; r1 splits 2/2 over its zones, r2 2/2 over nodes.
    assert_eq!(check(&cluster, &[], &web.pending(8)), "a1=2 b1=2 c1=2 c2=2");
    // 4 tasks: 2 per region, so a1 and b1 get one each.
    assert_eq!(check(&cluster, &[], &web.pending(4)), "a1=1 b1=1 c1=1 c2=1");
}

#[test]
fn spread_accepts_the_command_line_form() {
    let cluster = [
        node("a1").label("zone", "a").build(),
        node("a2").label("zone", "a").build(),
        node("b1").label("zone", "b").build(),
    ];
    let web = service("web").spread("spread=node.labels.zone");
    assert_eq!(check(&cluster, &[], &web.pending(2)), "a1=1 b1=1");
}

#[test]
fn global_tasks_are_checked_against_their_node_only() {
    let cluster = [
        node("n1").build(),
        node("n2").availability(NodeAvailability::Drain).build(),
        node("n3").memory(GIB).build(),
    ];
    let agent = service("agent").memory(2 * GIB);
    let tasks = vec![
        agent.global_on("n1"),
        agent.global_on("n2"),
        agent.global_on("n3"),
        agent.global_on("gone"),
    ];
    let mut scheduler = Scheduler::new(&cluster, &[]);
    let decisions = scheduler.schedule(&tasks);
    assert_eq!(
        decisions,
        [
            Decision::Unplaceable {
                task_id: "agent.gone".into(),
                reason: "no suitable node (node gone is not in the cluster)".into()
            },
            Decision::Assign {
                task_id: "agent.n1".into(),
                node_id: "n1".into()
            },
            Decision::Unplaceable {
                task_id: "agent.n2".into(),
                reason: "no suitable node (1 node not available for new tasks)".into()
            },
            Decision::Unplaceable {
                task_id: "agent.n3".into(),
                reason: "no suitable node (insufficient memory on 1 node)".into()
            },
        ]
    );
    assert_eq!(
        scheduler.node("n1").unwrap().reserved().memory_bytes,
        2 * GIB
    );
}

#[test]
fn groups_of_one_pass_see_each_others_placements() {
    let cluster = [
        node("n1").memory(4 * GIB).build(),
        node("n2").memory(4 * GIB).build(),
    ];
    let tasks = concat(&[
        service("a").memory(3 * GIB).pending(2),
        service("b").memory(2 * GIB).pending(2),
    ]);
    assert_eq!(
        check(&cluster, &[], &tasks),
        "n1=1 n2=1\npending 2: no suitable node (insufficient memory on 2 nodes)"
    );
    // Two spec versions of one service are two groups, placed in one pass.
    let tasks = concat(&[
        service("a").spec_version(1).pending(2),
        service("a").spec_version(2).pending(2),
    ]);
    assert_eq!(check(&cluster, &[], &tasks), "n1=2 n2=2");
}

#[test]
fn tasks_that_are_not_pending_get_no_decision() {
    let mut tasks = service("web").pending(2);
    tasks[0].status.as_mut().unwrap().state = TaskState::Assigned as i32;
    tasks[1].desired_state = TaskState::Shutdown as i32;
    let mut scheduler = Scheduler::new(&nodes("n", 1), &[]);
    assert_eq!(scheduler.schedule(&tasks), []);
}

#[test]
fn decisions_are_the_same_on_every_run() {
    let cluster = nodes("n", 7);
    let tasks = service("web").spread("node.labels.zone").pending(30);
    let first = Scheduler::new(&cluster, &[]).schedule(&tasks);
    for _ in 0..3 {
        assert_eq!(Scheduler::new(&cluster, &[]).schedule(&tasks), first);
    }
}

#[test]
fn water_fill_levels_the_emptiest_first() {
    assert_eq!(water_fill(&[], 5), Vec::<u64>::new());
    assert_eq!(water_fill(&[0, 0, 0], 6), [2, 2, 2]);
    assert_eq!(water_fill(&[0, 0, 0], 7), [3, 2, 2]);
    assert_eq!(water_fill(&[4, 0, 0], 4), [0, 2, 2]);
    assert_eq!(water_fill(&[4, 0, 0], 6), [0, 3, 3]);
    assert_eq!(water_fill(&[4, 0, 0], 7), [0, 4, 3]);
    assert_eq!(water_fill(&[4, 0, 0], 9), [0, 5, 4]);
    assert_eq!(water_fill(&[4, 0, 0], 10), [0, 5, 5]);
    assert_eq!(water_fill(&[4, 0, 0], 11), [1, 5, 5]);
    assert_eq!(water_fill(&[4, 0, 1], 3), [0, 2, 1]);
    assert_eq!(water_fill(&[2, 2], 1), [1, 0]);
    assert_eq!(water_fill(&[5], 3), [3]);
}
