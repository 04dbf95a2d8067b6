//! Test builders for nodes and tasks, and a compact rendering of decisions
//! that the data-driven tests compare with expected text.

use std::collections::BTreeMap;

use rswarm_proto::*;

use super::placement::{Decision, Scheduler};

/// One GiB, for reservations and capacities.
pub const GIB: i64 = 1 << 30;
/// One CPU, in nano-CPUs.
pub const CPU: i64 = 1_000_000_000;

/// A node: READY, ACTIVE, worker, linux/x86_64, 4 CPUs, 8 GiB, both drivers.
pub struct NodeBuilder(pub Node);

/// Starts a node with ID and hostname `id`.
pub fn node(id: &str) -> NodeBuilder {
    NodeBuilder(Node {
        meta: Some(Meta {
            id: id.into(),
            version: 1,
            ..Default::default()
        }),
        spec: Some(NodeSpec {
            annotations: Some(Annotations {
                name: id.into(),
                ..Default::default()
            }),
            availability: NodeAvailability::Active as i32,
            ..Default::default()
        }),
        description: Some(NodeDescription {
            hostname: id.into(),
            platform: Some(Platform {
                os: "linux".into(),
                architecture: "x86_64".into(),
            }),
            resources: Some(rswarm_proto::Resources {
                nano_cpus: 4 * CPU,
                memory_bytes: 8 * GIB,
            }),
            drivers: vec!["process".into(), "oci".into()],
            ..Default::default()
        }),
        status: Some(NodeStatus {
            state: NodeState::Ready as i32,
            ..Default::default()
        }),
        role: NodeRole::Worker as i32,
        ..Default::default()
    })
}

impl NodeBuilder {
    /// Adds a label.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        if let Some(a) = self.0.spec.as_mut().and_then(|s| s.annotations.as_mut()) {
            a.labels.insert(key.into(), value.into());
        }
        self
    }

    /// Sets the memory.
    pub fn memory(mut self, bytes: i64) -> Self {
        self.resources().memory_bytes = bytes;
        self
    }

    /// Sets the CPUs (in nano-CPUs).
    pub fn cpus(mut self, nano: i64) -> Self {
        self.resources().nano_cpus = nano;
        self
    }

    fn resources(&mut self) -> &mut rswarm_proto::Resources {
        self.0
            .description
            .get_or_insert_with(Default::default)
            .resources
            .get_or_insert_with(Default::default)
    }

    /// Sets the status.
    pub fn state(mut self, state: NodeState) -> Self {
        self.0.status.get_or_insert_with(Default::default).state = state as i32;
        self
    }

    /// Sets the availability.
    pub fn availability(mut self, availability: NodeAvailability) -> Self {
        self.0
            .spec
            .get_or_insert_with(Default::default)
            .availability = availability as i32;
        self
    }

    /// Makes it a manager.
    pub fn manager(mut self) -> Self {
        self.0.role = NodeRole::Manager as i32;
        self
    }

    /// Sets the drivers.
    pub fn drivers(mut self, drivers: &[&str]) -> Self {
        self.0
            .description
            .get_or_insert_with(Default::default)
            .drivers = drivers.iter().map(|d| d.to_string()).collect();
        self
    }

    /// Sets the architecture.
    pub fn arch(mut self, arch: &str) -> Self {
        if let Some(p) = self
            .0
            .description
            .as_mut()
            .and_then(|d| d.platform.as_mut())
        {
            p.architecture = arch.into();
        }
        self
    }

    /// The node.
    pub fn build(self) -> Node {
        self.0
    }
}

/// Tasks of one service: pending, desired RUNNING, driver "process".
#[derive(Clone)]
pub struct TaskBuilder {
    service: String,
    spec: TaskSpec,
    endpoint: EndpointSpec,
    spec_version: u64,
}

/// Starts tasks of service `service`.
pub fn service(service: &str) -> TaskBuilder {
    TaskBuilder {
        service: service.into(),
        spec: TaskSpec {
            driver: "process".into(),
            placement: Some(Placement::default()),
            resources: Some(ResourceRequirements {
                reservations: Some(rswarm_proto::Resources::default()),
                ..Default::default()
            }),
            ..Default::default()
        },
        endpoint: EndpointSpec::default(),
        spec_version: 1,
    }
}

impl TaskBuilder {
    fn placement(&mut self) -> &mut Placement {
        self.spec.placement.get_or_insert_with(Default::default)
    }

    fn reservations(&mut self) -> &mut rswarm_proto::Resources {
        self.spec
            .resources
            .get_or_insert_with(Default::default)
            .reservations
            .get_or_insert_with(Default::default)
    }

    /// Reserves memory.
    pub fn memory(mut self, bytes: i64) -> Self {
        self.reservations().memory_bytes = bytes;
        self
    }

    /// Reserves CPU (nano-CPUs).
    pub fn cpus(mut self, nano: i64) -> Self {
        self.reservations().nano_cpus = nano;
        self
    }

    /// Adds a constraint.
    pub fn constraint(mut self, c: &str) -> Self {
        self.placement().constraints.push(c.into());
        self
    }

    /// Adds a spread level.
    pub fn spread(mut self, key: &str) -> Self {
        self.placement()
            .preferences
            .push(PlacementPreference { spread: key.into() });
        self
    }

    /// Limits tasks per node.
    pub fn max_replicas(mut self, n: u64) -> Self {
        self.placement().max_replicas = n;
        self
    }

    /// Publishes a TCP port in host mode.
    pub fn host_port(mut self, port: u32) -> Self {
        self.endpoint.ports.push(PortConfig {
            published_port: port,
            target_port: port,
            publish_mode: PublishMode::Host as i32,
            ..Default::default()
        });
        self
    }

    /// Sets the driver.
    pub fn driver(mut self, driver: &str) -> Self {
        self.spec.driver = driver.into();
        self
    }

    /// Sets the spec version.
    pub fn spec_version(mut self, v: u64) -> Self {
        self.spec_version = v;
        self
    }

    fn task(&self, id: String, slot: u64, node: &str, state: TaskState) -> Task {
        Task {
            meta: Some(Meta {
                id,
                version: 1,
                ..Default::default()
            }),
            service_id: self.service.clone(),
            slot,
            node_id: node.into(),
            desired_state: TaskState::Running as i32,
            status: Some(TaskStatus {
                state: state as i32,
                message: "pending task scheduling".into(),
                ..Default::default()
            }),
            spec: Some(self.spec.clone()),
            spec_version: self.spec_version,
            service_name: self.service.clone(),
            endpoint: Some(self.endpoint.clone()),
        }
    }

    /// `n` pending replicated tasks, slots 1..=n, IDs `<service>.<slot>`.
    pub fn pending(&self, n: u64) -> Vec<Task> {
        (1..=n)
            .map(|slot| {
                let id = format!("{}.v{}.{slot}", self.service, self.spec_version);
                self.task(id, slot, "", TaskState::Pending)
            })
            .collect()
    }

    /// A pending global task for `node`.
    pub fn global_on(&self, node: &str) -> Task {
        self.task(
            format!("{}.{node}", self.service),
            0,
            node,
            TaskState::Pending,
        )
    }

    /// `n` tasks running on `node`.
    pub fn running_on(&self, node: &str, n: u64) -> Vec<Task> {
        (1..=n)
            .map(|i| {
                let id = format!("{}.running.{node}.{i}", self.service);
                self.task(id, 100 + i, node, TaskState::Running)
            })
            .collect()
    }
}

/// Runs one pass on `nodes` holding `existing` tasks, and renders the
/// decisions: `node=count` per node that got tasks (in ID order), then one
/// `pending N: reason` line per distinct reason.
pub fn check(nodes: &[Node], existing: &[Task], pending: &[Task]) -> String {
    let mut scheduler = Scheduler::new(nodes, existing);
    render(&scheduler.schedule(pending))
}

/// See [`check`].
pub fn render(decisions: &[Decision]) -> String {
    let mut placed: BTreeMap<&str, usize> = BTreeMap::new();
    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    for d in decisions {
        match d {
            Decision::Assign { node_id, .. } => *placed.entry(node_id).or_default() += 1,
            Decision::Unplaceable { reason, .. } => *reasons.entry(reason).or_default() += 1,
        }
    }
    let mut lines = Vec::new();
    if !placed.is_empty() {
        let counts: Vec<String> = placed.iter().map(|(n, c)| format!("{n}={c}")).collect();
        lines.push(counts.join(" "));
    }
    for (reason, count) in reasons {
        lines.push(format!("pending {count}: {reason}"));
    }
    lines.join("\n")
}

/// Nodes `prefix1..=prefixN`.
pub fn nodes(prefix: &str, n: usize) -> Vec<Node> {
    (1..=n)
        .map(|i| node(&format!("{prefix}{i}")).build())
        .collect()
}
