//! What the scheduler knows about one node: its attributes in the form
//! constraints compare against, its capacity, and what its active tasks
//! already hold (reservations, host ports, task counts per service).
//!
//! Owns: the definitions of an *active* task (one that holds a node's
//! resources) and a *pending* one (one waiting for the scheduler).
//!
//! **Invariant:** `reserved`, `tasks_total`, `tasks_by_service` and
//! `host_ports` are exactly the sums over the active tasks added with
//! [`NodeInfo::add_task`]; placing a task adds it, so capacity is consumed as
//! tasks are placed within one pass.

use std::collections::{HashMap, HashSet};

use rswarm_proto::{
    Node, NodeAvailability, NodeRole, NodeState, PublishMode, Task, TaskSpec, TaskState,
};

use super::constraint::{NodeAttribute, normalize_arch};

/// Amounts of CPU and memory, as reserved or offered. Never negative.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuMemory {
    /// Billionths of a CPU.
    pub nano_cpus: i64,
    /// Bytes of memory.
    pub memory_bytes: i64,
}

impl CpuMemory {
    /// From the wire type; negative values (a bad spec or description) count
    /// as 0.
    pub fn from_proto(r: Option<&rswarm_proto::Resources>) -> CpuMemory {
        r.map_or_else(CpuMemory::default, |r| CpuMemory {
            nano_cpus: r.nano_cpus.max(0),
            memory_bytes: r.memory_bytes.max(0),
        })
    }

    /// What a task's spec reserves.
    pub fn reserved_by(spec: Option<&TaskSpec>) -> CpuMemory {
        CpuMemory::from_proto(
            spec.and_then(|s| s.resources.as_ref())
                .and_then(|r| r.reservations.as_ref()),
        )
    }

    fn saturating_add(self, other: CpuMemory) -> CpuMemory {
        CpuMemory {
            nano_cpus: self.nano_cpus.saturating_add(other.nano_cpus),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
        }
    }
}

/// A port a task publishes on its node's own address (`mode=host`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// `PortProtocol` as its wire number.
    pub protocol: i32,
    /// The port on the node.
    pub port: u32,
}

/// The host-mode ports a task publishes. Port 0 asks the node for any free
/// port, so it never conflicts.
pub fn host_ports(task: &Task) -> Vec<HostPort> {
    task.endpoint
        .iter()
        .flat_map(|e| e.ports.iter())
        .filter(|p| p.publish_mode == PublishMode::Host as i32 && p.published_port != 0)
        .map(|p| HostPort {
            protocol: p.protocol,
            port: p.published_port,
        })
        .collect()
}

fn task_state(task: &Task) -> i32 {
    task.status
        .as_ref()
        .map_or(TaskState::New as i32, |s| s.state)
}

/// A task that holds its node's resources: placed (ASSIGNED or later), not
/// past RUNNING, and meant to run (desired ≤ RUNNING).
pub fn is_active(task: &Task) -> bool {
    let state = task_state(task);
    !task.node_id.is_empty()
        && task.desired_state <= TaskState::Running as i32
        && (TaskState::Assigned as i32..=TaskState::Running as i32).contains(&state)
}

/// A task waiting to be placed: PENDING and meant to run (desired ≤ RUNNING,
/// READY included: a task held back still gets its node).
pub fn is_pending(task: &Task) -> bool {
    task_state(task) == TaskState::Pending as i32 && task.desired_state <= TaskState::Running as i32
}

/// One node, as the filters and the placement see it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeInfo {
    id: String,
    hostname: String,
    /// "manager" or "worker".
    role: &'static str,
    /// Lower-case.
    os: String,
    /// Normalised with [`normalize_arch`].
    arch: String,
    labels: HashMap<String, String>,
    drivers: Vec<String>,
    /// Status READY and availability ACTIVE.
    available: bool,
    capacity: CpuMemory,
    reserved: CpuMemory,
    tasks_total: u64,
    tasks_by_service: HashMap<String, u64>,
    host_ports: HashSet<HostPort>,
}

impl NodeInfo {
    /// A node with no tasks yet.
    pub fn new(node: &Node) -> NodeInfo {
        let description = node.description.as_ref();
        let platform = description.and_then(|d| d.platform.as_ref());
        let state = node.status.as_ref().map(|s| s.state);
        let availability = node.spec.as_ref().map(|s| s.availability);
        NodeInfo {
            id: node.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default(),
            hostname: description.map(|d| d.hostname.clone()).unwrap_or_default(),
            role: if node.role == NodeRole::Manager as i32 {
                "manager"
            } else {
                "worker"
            },
            os: platform
                .map(|p| p.os.to_ascii_lowercase())
                .unwrap_or_default(),
            arch: platform
                .map(|p| normalize_arch(&p.architecture))
                .unwrap_or_default(),
            labels: node
                .spec
                .as_ref()
                .and_then(|s| s.annotations.as_ref())
                .map(|a| a.labels.clone().into_iter().collect())
                .unwrap_or_default(),
            drivers: description.map(|d| d.drivers.clone()).unwrap_or_default(),
            available: state == Some(NodeState::Ready as i32)
                && availability == Some(NodeAvailability::Active as i32),
            capacity: CpuMemory::from_proto(description.and_then(|d| d.resources.as_ref())),
            reserved: CpuMemory::default(),
            tasks_total: 0,
            tasks_by_service: HashMap::new(),
            host_ports: HashSet::new(),
        }
    }

    /// Counts a task as active on this node: its reservation, its host
    /// ports, and one more task of its service.
    pub fn add_task(&mut self, service_id: &str, reservation: CpuMemory, ports: &[HostPort]) {
        self.reserved = self.reserved.saturating_add(reservation);
        self.tasks_total += 1;
        match self.tasks_by_service.get_mut(service_id) {
            Some(count) => *count += 1,
            None => {
                self.tasks_by_service.insert(service_id.to_owned(), 1);
            }
        }
        self.host_ports.extend(ports.iter().copied());
    }

    /// The node's ID.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether the node takes new tasks (READY and ACTIVE).
    pub fn is_available(&self) -> bool {
        self.available
    }

    /// What the node offers in total.
    pub fn capacity(&self) -> CpuMemory {
        self.capacity
    }

    /// What its active tasks reserve.
    pub fn reserved(&self) -> CpuMemory {
        self.reserved
    }

    /// What is left: capacity minus reservations (negative when the node
    /// shrank under its tasks).
    pub fn free(&self) -> CpuMemory {
        CpuMemory {
            nano_cpus: self
                .capacity
                .nano_cpus
                .saturating_sub(self.reserved.nano_cpus),
            memory_bytes: self
                .capacity
                .memory_bytes
                .saturating_sub(self.reserved.memory_bytes),
        }
    }

    /// Active tasks on the node.
    pub fn tasks_total(&self) -> u64 {
        self.tasks_total
    }

    /// Active tasks of one service on the node.
    pub fn tasks_of_service(&self, service_id: &str) -> u64 {
        self.tasks_by_service.get(service_id).copied().unwrap_or(0)
    }

    /// Whether an active task already publishes this port in host mode.
    pub fn port_in_use(&self, port: HostPort) -> bool {
        self.host_ports.contains(&port)
    }

    /// Whether the node's agent runs tasks with this driver.
    pub fn supports_driver(&self, driver: &str) -> bool {
        self.drivers.iter().any(|d| d == driver)
    }

    /// The node's value of an attribute, in the normal form constraints
    /// compare with; `None` when it lacks the label.
    pub fn attribute(&self, attribute: &NodeAttribute) -> Option<&str> {
        match attribute {
            NodeAttribute::Id => Some(&self.id),
            NodeAttribute::Hostname => Some(&self.hostname),
            NodeAttribute::Role => Some(self.role),
            NodeAttribute::PlatformOs => Some(&self.os),
            NodeAttribute::PlatformArch => Some(&self.arch),
            NodeAttribute::Label(name) => self.label(name),
        }
    }

    /// The label of exactly this name, or else one differing only in case
    /// (label keys are case-insensitive; an exact match wins a tie).
    fn label(&self, name: &str) -> Option<&str> {
        if let Some(value) = self.labels.get(name) {
            return Some(value);
        }
        self.labels
            .iter()
            .filter(|(key, _)| key.eq_ignore_ascii_case(name))
            .min_by(|a, b| a.0.cmp(b.0))
            .map(|(_, value)| value.as_str())
    }
}

#[cfg(test)]
mod tests {
    use rswarm_proto::*;

    use super::*;

    fn task(state: TaskState, desired: TaskState, node: &str) -> Task {
        Task {
            node_id: node.into(),
            desired_state: desired as i32,
            status: Some(TaskStatus {
                state: state as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn active_means_placed_and_not_past_running() {
        use TaskState::*;
        assert!(is_active(&task(Assigned, Running, "n")));
        assert!(is_active(&task(Running, Running, "n")));
        assert!(is_active(&task(Preparing, Ready, "n")));
        assert!(!is_active(&task(Pending, Running, "n")), "not placed yet");
        assert!(!is_active(&task(Running, Shutdown, "n")), "being stopped");
        assert!(!is_active(&task(Complete, Running, "n")));
        assert!(!is_active(&task(Failed, Running, "n")));
        assert!(!is_active(&task(Assigned, Running, "")), "no node");
    }

    #[test]
    fn pending_means_waiting_and_meant_to_run() {
        use TaskState::*;
        assert!(is_pending(&task(Pending, Running, "")));
        assert!(is_pending(&task(Pending, Ready, "")));
        assert!(is_pending(&task(Pending, Running, "global-node")));
        assert!(!is_pending(&task(Pending, Shutdown, "")));
        assert!(!is_pending(&task(Assigned, Running, "n")));
        assert!(!is_pending(&task(New, Running, "")));
    }

    #[test]
    fn only_host_mode_ports_with_a_number_count() {
        let t = Task {
            endpoint: Some(EndpointSpec {
                ports: vec![
                    PortConfig {
                        published_port: 80,
                        publish_mode: PublishMode::Host as i32,
                        ..Default::default()
                    },
                    PortConfig {
                        published_port: 53,
                        protocol: PortProtocol::Udp as i32,
                        publish_mode: PublishMode::Host as i32,
                        ..Default::default()
                    },
                    PortConfig {
                        published_port: 0,
                        publish_mode: PublishMode::Host as i32,
                        ..Default::default()
                    },
                    PortConfig {
                        published_port: 8080,
                        publish_mode: PublishMode::Ingress as i32,
                        ..Default::default()
                    },
                ],
            }),
            ..Default::default()
        };
        assert_eq!(
            host_ports(&t),
            vec![
                HostPort {
                    protocol: PortProtocol::Tcp as i32,
                    port: 80
                },
                HostPort {
                    protocol: PortProtocol::Udp as i32,
                    port: 53
                }
            ]
        );
    }

    #[test]
    fn labels_match_exactly_first_then_ignoring_case() {
        let node = Node {
            spec: Some(NodeSpec {
                annotations: Some(Annotations {
                    labels: [("Zone".to_string(), "a".to_string())].into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut info = NodeInfo::new(&node);
        let zone = |name: &str| NodeAttribute::Label(name.into());
        assert_eq!(info.attribute(&zone("zone")), Some("a"));
        assert_eq!(info.attribute(&zone("ZONE")), Some("a"));
        assert_eq!(info.attribute(&zone("rack")), None);
        info.labels.insert("zone".into(), "b".into());
        assert_eq!(info.attribute(&zone("zone")), Some("b"));
        assert_eq!(info.attribute(&zone("Zone")), Some("a"));
    }

    #[test]
    fn negative_resources_count_as_zero() {
        let r = CpuMemory::from_proto(Some(&rswarm_proto::Resources {
            nano_cpus: -5,
            memory_bytes: -1,
        }));
        assert_eq!(r, CpuMemory::default());
    }
}
