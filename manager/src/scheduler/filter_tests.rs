//! Each filter on one node, and the explanation text, without placement.

use rswarm_proto::*;

use super::*;
use crate::scheduler::constraint::Constraint;
use crate::scheduler::nodeinfo::NodeInfo;

const GIB: i64 = 1 << 30;

fn ready_node() -> Node {
    Node {
        meta: Some(Meta {
            id: "n1".into(),
            ..Default::default()
        }),
        spec: Some(NodeSpec {
            annotations: Some(Annotations {
                labels: [("zone".to_string(), "a".to_string())].into(),
                ..Default::default()
            }),
            availability: NodeAvailability::Active as i32,
            ..Default::default()
        }),
        description: Some(NodeDescription {
            hostname: "web1".into(),
            resources: Some(rswarm_proto::Resources {
                nano_cpus: 2_000_000_000,
                memory_bytes: 4 * GIB,
            }),
            drivers: vec!["process".into()],
            ..Default::default()
        }),
        status: Some(NodeStatus {
            state: NodeState::Ready as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn requirements() -> Requirements {
    Requirements {
        service_id: "s".into(),
        reservation: CpuMemory::default(),
        driver: "process".into(),
        host_ports: vec![],
        rules: PlacementRules::default(),
    }
}

fn rejection(node: &Node, req: &Requirements) -> Option<Filter> {
    first_rejection(&NodeInfo::new(node), req)
}

#[test]
fn filter_order_matches_the_counting_slots() {
    for (slot, filter) in Filter::ALL.into_iter().enumerate() {
        assert_eq!(filter as usize, slot);
    }
}

#[test]
fn a_ready_active_node_passes_everything() {
    assert_eq!(rejection(&ready_node(), &requirements()), None);
}

#[test]
fn ready_rejects_down_unknown_paused_and_drained_nodes() {
    let mut down = ready_node();
    down.status.as_mut().unwrap().state = NodeState::Down as i32;
    let mut unknown = ready_node();
    unknown.status = None;
    let mut paused = ready_node();
    paused.spec.as_mut().unwrap().availability = NodeAvailability::Pause as i32;
    let mut drained = ready_node();
    drained.spec.as_mut().unwrap().availability = NodeAvailability::Drain as i32;
    for node in [down, unknown, paused, drained] {
        assert_eq!(rejection(&node, &requirements()), Some(Filter::Ready));
    }
}

#[test]
fn resources_compare_the_reservation_with_what_is_left() {
    let mut req = requirements();
    req.reservation.memory_bytes = 4 * GIB;
    assert_eq!(rejection(&ready_node(), &req), None, "exactly fits");
    req.reservation.memory_bytes = 4 * GIB + 1;
    assert_eq!(rejection(&ready_node(), &req), Some(Filter::Memory));
    let mut req = requirements();
    req.reservation.nano_cpus = 3_000_000_000;
    req.reservation.memory_bytes = 8 * GIB;
    assert_eq!(
        rejection(&ready_node(), &req),
        Some(Filter::Cpu),
        "cpu is checked before memory"
    );
    let mut info = NodeInfo::new(&ready_node());
    info.add_task(
        "other",
        CpuMemory {
            nano_cpus: 0,
            memory_bytes: 3 * GIB,
        },
        &[],
    );
    let mut req = requirements();
    req.reservation.memory_bytes = 2 * GIB;
    assert_eq!(first_rejection(&info, &req), Some(Filter::Memory));
}

#[test]
fn a_task_without_reservations_fits_an_overcommitted_node() {
    let mut info = NodeInfo::new(&ready_node());
    info.add_task(
        "other",
        CpuMemory {
            nano_cpus: 0,
            memory_bytes: 5 * GIB,
        },
        &[],
    );
    assert_eq!(first_rejection(&info, &requirements()), None);
}

#[test]
fn constraints_must_all_hold() {
    let mut req = requirements();
    req.rules.constraints = vec![
        Constraint::parse("node.labels.zone==a").unwrap(),
        Constraint::parse("node.hostname!=web1").unwrap(),
    ];
    assert_eq!(rejection(&ready_node(), &req), Some(Filter::Constraints));
    req.rules.constraints.pop();
    assert_eq!(rejection(&ready_node(), &req), None);
}

#[test]
fn the_driver_must_be_one_the_node_runs() {
    let mut req = requirements();
    req.driver = "oci".into();
    assert_eq!(rejection(&ready_node(), &req), Some(Filter::Driver));
    req.driver = String::new();
    assert_eq!(rejection(&ready_node(), &req), None, "no driver: any node");
}

#[test]
fn host_ports_conflict_only_on_the_same_port_and_protocol() {
    let tcp80 = HostPort {
        protocol: PortProtocol::Tcp as i32,
        port: 80,
    };
    let udp80 = HostPort {
        protocol: PortProtocol::Udp as i32,
        port: 80,
    };
    let mut info = NodeInfo::new(&ready_node());
    info.add_task("other", CpuMemory::default(), &[tcp80]);
    let mut req = requirements();
    req.host_ports = vec![udp80];
    assert_eq!(first_rejection(&info, &req), None);
    req.host_ports.push(tcp80);
    assert_eq!(first_rejection(&info, &req), Some(Filter::HostPorts));
}

#[test]
fn max_replicas_counts_the_services_tasks_on_the_node() {
    let mut info = NodeInfo::new(&ready_node());
    let mut req = requirements();
    req.rules.max_replicas = 2;
    info.add_task("other", CpuMemory::default(), &[]);
    info.add_task("s", CpuMemory::default(), &[]);
    assert_eq!(first_rejection(&info, &req), None);
    info.add_task("s", CpuMemory::default(), &[]);
    assert_eq!(first_rejection(&info, &req), Some(Filter::MaxReplicas));
}

#[test]
fn the_first_failing_filter_is_the_one_counted() {
    let mut node = ready_node();
    node.spec.as_mut().unwrap().availability = NodeAvailability::Drain as i32;
    let mut req = requirements();
    req.reservation.memory_bytes = 100 * GIB;
    req.rules.constraints = vec![Constraint::parse("node.labels.zone==b").unwrap()];
    assert_eq!(rejection(&node, &req), Some(Filter::Ready));
    assert_eq!(rejection(&ready_node(), &req), Some(Filter::Memory));
}

#[test]
fn explanations_count_in_pipeline_order_with_plurals() {
    let mut req = requirements();
    req.driver = "oci".into();
    let mut rejections = Rejections::default();
    for filter in [
        Filter::Constraints,
        Filter::Memory,
        Filter::Constraints,
        Filter::Memory,
        Filter::Memory,
    ] {
        rejections.add(filter);
    }
    assert_eq!(
        rejections.explain(&req),
        "no suitable node (insufficient memory on 3 nodes; scheduling constraints not satisfied on 2 nodes)"
    );
    let one_each: Vec<String> = Filter::ALL
        .into_iter()
        .map(|f| {
            let mut r = Rejections::default();
            r.add(f);
            r.explain(&req)
        })
        .collect();
    assert_eq!(
        one_each,
        [
            "no suitable node (1 node not available for new tasks)",
            "no suitable node (insufficient cpu on 1 node)",
            "no suitable node (insufficient memory on 1 node)",
            "no suitable node (scheduling constraints not satisfied on 1 node)",
            "no suitable node (task driver \"oci\" not supported on 1 node)",
            "no suitable node (host-mode port already in use on 1 node)",
            "no suitable node (max replicas per node reached on 1 node)",
        ]
    );
    let mut two = Rejections::default();
    two.add(Filter::Ready);
    two.add(Filter::Ready);
    assert_eq!(
        two.explain(&req),
        "no suitable node (2 nodes not available for new tasks)"
    );
}
