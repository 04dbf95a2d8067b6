//! Properties of placement on random clusters: whatever the nodes, tasks
//! and rules, a pass never over-commits a node, never exceeds max replicas,
//! never double-books a host port, never places on a node that is not ready
//! or fails a constraint (checked against an independent reading of the
//! generated cluster), and never leaves a task pending while some node
//! could take it. On equal nodes, counts differ by at most one.

use std::collections::HashMap;

use proptest::prelude::*;
use rswarm_proto::{NodeState, Task};

use super::filter::first_rejection;
use super::fixtures::*;
use super::{Constraint, Decision, Requirements, Scheduler, water_fill};

/// Constraints the generator picks from, with an oracle for each.
const CONSTRAINTS: [&str; 4] = [
    "node.labels.zone==z0",
    "node.labels.zone!=z1",
    "node.role==worker",
    "node.role==manager",
];

#[derive(Debug, Clone)]
struct NodeGen {
    memory_gib: i64,
    cpus: i64,
    zone: Option<u8>,
    ready: bool,
    manager: bool,
}

impl NodeGen {
    fn satisfies(&self, constraint: usize) -> bool {
        match constraint {
            0 => self.zone == Some(0),
            1 => self.zone != Some(1),
            2 => !self.manager,
            _ => self.manager,
        }
    }
}

#[derive(Debug, Clone)]
struct ServiceGen {
    memory_gib: i64,
    half_cpus: i64,
    constraint: Option<usize>,
    max_replicas: u64,
    host_port: Option<u32>,
    spread: bool,
    tasks: u64,
}

fn node_gen() -> impl Strategy<Value = NodeGen> {
    (
        0i64..8,
        0i64..4,
        proptest::option::of(0u8..3),
        proptest::bool::weighted(0.8),
        proptest::bool::weighted(0.3),
    )
        .prop_map(|(memory_gib, cpus, zone, ready, manager)| NodeGen {
            memory_gib,
            cpus,
            zone,
            ready,
            manager,
        })
}

fn service_gen() -> impl Strategy<Value = ServiceGen> {
    (
        0i64..3,
        0i64..3,
        proptest::option::of(0..CONSTRAINTS.len()),
        0u64..4,
        proptest::option::of(80u32..82),
        any::<bool>(),
        0u64..25,
    )
        .prop_map(
            |(memory_gib, half_cpus, constraint, max_replicas, host_port, spread, tasks)| {
                ServiceGen {
                    memory_gib,
                    half_cpus,
                    constraint,
                    max_replicas,
                    host_port,
                    spread,
                    tasks,
                }
            },
        )
}

fn node_id(idx: usize) -> String {
    format!("n{idx:02}")
}

fn service_name(idx: usize) -> String {
    format!("s{idx}")
}

fn build_node(idx: usize, g: &NodeGen) -> rswarm_proto::Node {
    let mut b = node(&node_id(idx))
        .memory(g.memory_gib * GIB)
        .cpus(g.cpus * CPU);
    if let Some(z) = g.zone {
        b = b.label("zone", &format!("z{z}"));
    }
    if !g.ready {
        b = b.state(NodeState::Down);
    }
    if g.manager {
        b = b.manager();
    }
    b.build()
}

fn builder(idx: usize, g: &ServiceGen) -> TaskBuilder {
    let mut b = service(&service_name(idx))
        .memory(g.memory_gib * GIB)
        .cpus(g.half_cpus * CPU / 2)
        .max_replicas(g.max_replicas);
    if let Some(c) = g.constraint {
        b = b.constraint(CONSTRAINTS[c]);
    }
    if let Some(p) = g.host_port {
        b = b.host_port(p);
    }
    if g.spread {
        b = b.spread("node.labels.zone");
    }
    b
}

/// A random cluster: nodes, services, and tasks already running.
fn cluster() -> impl Strategy<Value = (Vec<NodeGen>, Vec<ServiceGen>, Vec<(usize, usize)>)> {
    (
        proptest::collection::vec(node_gen(), 0..10),
        proptest::collection::vec(service_gen(), 1..4),
    )
        .prop_flat_map(|(nodes, services)| {
            let (n_nodes, n_services) = (nodes.len().max(1), services.len());
            let existing = proptest::collection::vec((0..n_services, 0..n_nodes), 0..12);
            (Just(nodes), Just(services), existing)
        })
}

/// Per (node, service): tasks running before the pass.
type Running = HashMap<(usize, usize), u64>;

fn running_tasks(
    nodes: &[NodeGen],
    services: &[ServiceGen],
    existing: &[(usize, usize)],
) -> (Vec<Task>, Running) {
    let mut tasks = Vec::new();
    let mut running: Running = HashMap::new();
    for (i, &(s, n)) in existing.iter().enumerate() {
        if n >= nodes.len() {
            continue;
        }
        let mut task = builder(s, &services[s])
            .running_on(&node_id(n), 1)
            .remove(0);
        if let Some(meta) = task.meta.as_mut() {
            meta.id = format!("running-{i}");
        }
        tasks.push(task);
        *running.entry((n, s)).or_default() += 1;
    }
    (tasks, running)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn placement_respects_every_filter(
        (node_gens, service_gens, existing) in cluster()
    ) {
        let nodes: Vec<_> = node_gens.iter().enumerate().map(|(i, g)| build_node(i, g)).collect();
        let (running, running_count) = running_tasks(&node_gens, &service_gens, &existing);
        let pending: Vec<Task> = service_gens
            .iter()
            .enumerate()
            .flat_map(|(i, g)| builder(i, g).pending(g.tasks))
            .collect();
        let mut scheduler = Scheduler::new(&nodes, &running);
        let decisions = scheduler.schedule(&pending);
        prop_assert_eq!(decisions.len(), pending.len());

        // Per (node, service): tasks placed by this pass.
        let mut placed: HashMap<(usize, usize), u64> = HashMap::new();
        let mut unplaced_services = Vec::new();
        for d in &decisions {
            let service = d.task_id()[1..].split('.').next().unwrap().parse::<usize>().unwrap();
            match d {
                Decision::Assign { node_id, .. } => {
                    let n = node_id[1..].parse::<usize>().unwrap();
                    *placed.entry((n, service)).or_default() += 1;
                }
                Decision::Unplaceable { .. } => unplaced_services.push(service),
            }
        }
        for (n, g) in node_gens.iter().enumerate() {
            let mut memory = 0;
            let mut cpu = 0;
            let mut ports: HashMap<u32, u64> = HashMap::new();
            for (s, sg) in service_gens.iter().enumerate() {
                let new = placed.get(&(n, s)).copied().unwrap_or(0);
                let before = running_count.get(&(n, s)).copied().unwrap_or(0);
                if new == 0 {
                    continue;
                }
                prop_assert!(g.ready, "placed on a node that is down");
                if let Some(c) = sg.constraint {
                    prop_assert!(g.satisfies(c), "{} broken on {:?}", CONSTRAINTS[c], g);
                }
                if sg.max_replicas > 0 {
                    prop_assert!(before + new <= sg.max_replicas, "max replicas exceeded");
                }
                if let Some(p) = sg.host_port {
                    *ports.entry(p).or_default() += new;
                }
                memory += new as i64 * sg.memory_gib * GIB;
                cpu += new as i64 * sg.half_cpus * CPU / 2;
            }
            // What running tasks already held.
            let mut held_memory = 0;
            let mut held_cpu = 0;
            for (s, sg) in service_gens.iter().enumerate() {
                let before = running_count.get(&(n, s)).copied().unwrap_or(0) as i64;
                held_memory += before * sg.memory_gib * GIB;
                held_cpu += before * sg.half_cpus * CPU / 2;
                if let Some(p) = sg.host_port
                    && let Some(count) = ports.get_mut(&p)
                {
                    *count += before as u64;
                }
            }
            if memory > 0 {
                prop_assert!(held_memory + memory <= g.memory_gib * GIB, "memory over-committed");
            }
            if cpu > 0 {
                prop_assert!(held_cpu + cpu <= g.cpus * CPU, "cpu over-committed");
            }
            for (port, count) in ports {
                prop_assert!(count <= 1, "host port {} booked {} times on n{}", port, count, n);
            }
        }
        // A task left pending means no node could take one more.
        for s in unplaced_services {
            let task = &builder(s, &service_gens[s]).pending(1)[0];
            let req = Requirements::of(task).unwrap();
            for info in scheduler.nodes() {
                prop_assert!(
                    first_rejection(info, &req).is_some(),
                    "s{} left pending while {} could take it", s, info.id()
                );
            }
        }
    }

    #[test]
    fn equal_nodes_get_counts_within_one(n_nodes in 1usize..30, n_tasks in 0u64..300) {
        let nodes = nodes("n", n_nodes);
        let decisions = Scheduler::new(&nodes, &[]).schedule(&service("web").pending(n_tasks));
        let mut counts: HashMap<String, u64> = nodes
            .iter()
            .map(|n| (n.meta.as_ref().unwrap().id.clone(), 0))
            .collect();
        for d in decisions {
            match d {
                Decision::Assign { node_id, .. } => *counts.get_mut(&node_id).unwrap() += 1,
                Decision::Unplaceable { reason, .. } => prop_assert!(false, "unplaced: {}", reason),
            }
        }
        let max = counts.values().max().copied().unwrap_or(0);
        let min = counts.values().min().copied().unwrap_or(0);
        prop_assert!(max - min <= 1, "counts {:?}", counts);
    }

    #[test]
    fn spread_gives_zones_counts_within_one(
        nodes_per_zone in proptest::collection::vec(1usize..5, 1..6),
        n_tasks in 0u64..200,
    ) {
        let mut cluster = Vec::new();
        for (z, count) in nodes_per_zone.iter().enumerate() {
            for i in 0..*count {
                cluster.push(node(&format!("z{z}-{i}")).label("zone", &format!("z{z}")).build());
            }
        }
        let tasks = service("web").spread("node.labels.zone").pending(n_tasks);
        let decisions = Scheduler::new(&cluster, &[]).schedule(&tasks);
        let mut per_zone = vec![0u64; nodes_per_zone.len()];
        for d in decisions {
            let Decision::Assign { node_id, .. } = d else {
                return Err(TestCaseError::fail("a task was left pending"));
            };
            let zone: usize = node_id[1..].split('-').next().unwrap().parse().unwrap();
            per_zone[zone] += 1;
        }
        let max = per_zone.iter().max().copied().unwrap_or(0);
        let min = per_zone.iter().min().copied().unwrap_or(0);
        prop_assert!(max - min <= 1, "per zone {:?}", per_zone);
    }

    #[test]
    fn water_fill_is_as_even_as_possible(
        counts in proptest::collection::vec(0u64..50, 0..8),
        n in 0u64..200,
    ) {
        let quotas = water_fill(&counts, n);
        prop_assert_eq!(quotas.len(), counts.len());
        if counts.is_empty() {
            return Ok(());
        }
        prop_assert_eq!(quotas.iter().sum::<u64>(), n);
        let after: Vec<u64> = counts.iter().zip(&quotas).map(|(c, q)| c + q).collect();
        let lowest = after.iter().min().copied().unwrap_or(0);
        for (i, q) in quotas.iter().enumerate() {
            if *q > 0 {
                prop_assert!(after[i] <= lowest + 1, "{:?} + {:?}", counts, quotas);
            }
        }
    }

    #[test]
    fn constraint_parsing_never_panics(text in ".{0,40}") {
        let _ = Constraint::parse(&text);
        let _ = super::parse_spread(&text);
    }

    #[test]
    fn label_constraints_round_trip(
        name in "[a-zA-Z][a-zA-Z0-9_.-]{0,10}",
        value in "[a-zA-Z0-9][a-zA-Z0-9 _.-]{0,10}[a-zA-Z0-9]|[a-zA-Z0-9]",
        equal in any::<bool>(),
    ) {
        let op = if equal { "==" } else { "!=" };
        let c = Constraint::parse(&format!("node.labels.{name}{op}{value}")).unwrap();
        prop_assert_eq!(c.attribute().to_string(), format!("node.labels.{name}"));
        prop_assert_eq!(c.holds_for(Some(value.as_str())), equal);
        prop_assert_eq!(c.holds_for(None), !equal);
    }
}
