//! The filters a node must pass to receive a task, in the order they run,
//! and the text that explains a rejection to the user.
//!
//! Owns: what a group of tasks needs from a node ([`Requirements`]) and the
//! pipeline order: ready and active → CPU → memory → constraints → driver →
//! host ports → max replicas per node. A node that fails is counted under
//! the *first* filter that rejects it, and the counts make the task's error,
//! e.g. `no suitable node (insufficient memory on 3 nodes; scheduling
//! constraints not satisfied on 2 nodes)`.
//!
//! **Invariant:** a static filter's verdict on a node does not change while
//! tasks are placed in one pass; a dynamic filter's verdict can only go from
//! pass to fail (placing tasks consumes resources, ports and per-node
//! replicas, and never frees them).

use rswarm_proto::Task;

use super::constraint::{PlacementError, PlacementRules};
use super::nodeinfo::{CpuMemory, HostPort, NodeInfo, host_ports};

/// What every task of one group (same service and spec version) needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirements {
    /// The tasks' service: max replicas and spreading count its tasks.
    pub service_id: String,
    /// CPU and memory each task reserves.
    pub reservation: CpuMemory,
    /// The driver each task runs with; empty: any node's agent will do.
    pub driver: String,
    /// Ports each task publishes in host mode.
    pub host_ports: Vec<HostPort>,
    /// Constraints, spread levels, max replicas.
    pub rules: PlacementRules,
}

impl Requirements {
    /// The requirements of `task` (and of every task of its group). Fails
    /// when its placement does not parse.
    pub fn of(task: &Task) -> Result<Requirements, PlacementError> {
        let spec = task.spec.as_ref();
        Ok(Requirements {
            service_id: task.service_id.clone(),
            reservation: CpuMemory::reserved_by(spec),
            driver: spec.map(|s| s.driver.clone()).unwrap_or_default(),
            host_ports: host_ports(task),
            rules: PlacementRules::parse(spec.and_then(|s| s.placement.as_ref()))?,
        })
    }
}

/// One filter of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Filter {
    /// The node is READY and its availability ACTIVE.
    Ready,
    /// The node has the CPU the task reserves left.
    Cpu,
    /// The node has the memory the task reserves left.
    Memory,
    /// Every placement constraint holds on the node.
    Constraints,
    /// The node's agent runs the task's driver.
    Driver,
    /// No active task on the node publishes one of the task's host ports.
    HostPorts,
    /// The node runs fewer active tasks of the service than the maximum.
    MaxReplicas,
}

impl Filter {
    /// Every filter, in pipeline order.
    pub const ALL: [Filter; 7] = [
        Filter::Ready,
        Filter::Cpu,
        Filter::Memory,
        Filter::Constraints,
        Filter::Driver,
        Filter::HostPorts,
        Filter::MaxReplicas,
    ];

    /// Whether the verdict can change as tasks are placed (see the module
    /// doc's invariant).
    pub fn is_dynamic(self) -> bool {
        matches!(
            self,
            Filter::Cpu | Filter::Memory | Filter::HostPorts | Filter::MaxReplicas
        )
    }

    /// Whether `node` passes this filter for a task with `req`.
    pub fn passes(self, node: &NodeInfo, req: &Requirements) -> bool {
        match self {
            Filter::Ready => node.is_available(),
            Filter::Cpu => fits(req.reservation.nano_cpus, node.free().nano_cpus),
            Filter::Memory => fits(req.reservation.memory_bytes, node.free().memory_bytes),
            Filter::Constraints => req
                .rules
                .constraints
                .iter()
                .all(|c| c.holds_for(node.attribute(c.attribute()))),
            Filter::Driver => req.driver.is_empty() || node.supports_driver(&req.driver),
            Filter::HostPorts => req.host_ports.iter().all(|p| !node.port_in_use(*p)),
            Filter::MaxReplicas => {
                req.rules.max_replicas == 0
                    || node.tasks_of_service(&req.service_id) < req.rules.max_replicas
            }
        }
    }

    /// Why `nodes` nodes were rejected, for the task's error.
    fn explain(self, nodes: usize, req: &Requirements) -> String {
        let on = if nodes == 1 {
            "on 1 node".to_owned()
        } else {
            format!("on {nodes} nodes")
        };
        match self {
            Filter::Ready if nodes == 1 => "1 node not available for new tasks".to_owned(),
            Filter::Ready => format!("{nodes} nodes not available for new tasks"),
            Filter::Cpu => format!("insufficient cpu {on}"),
            Filter::Memory => format!("insufficient memory {on}"),
            Filter::Constraints => format!("scheduling constraints not satisfied {on}"),
            Filter::Driver => format!("task driver {:?} not supported {on}", req.driver),
            Filter::HostPorts => format!("host-mode port already in use {on}"),
            Filter::MaxReplicas => format!("max replicas per node reached {on}"),
        }
    }
}

/// A reservation of 0 fits anywhere, even on a node already over-committed
/// (one whose capacity shrank under its tasks).
fn fits(reserved: i64, free: i64) -> bool {
    reserved == 0 || reserved <= free
}

/// The first filter that rejects `node` for `req`, if any.
pub fn first_rejection(node: &NodeInfo, req: &Requirements) -> Option<Filter> {
    Filter::ALL.into_iter().find(|f| !f.passes(node, req))
}

/// Whether `node` passes the filters whose verdict cannot change in a pass.
pub fn passes_static(node: &NodeInfo, req: &Requirements) -> bool {
    Filter::ALL
        .into_iter()
        .filter(|f| !f.is_dynamic())
        .all(|f| f.passes(node, req))
}

/// Whether `node` passes the filters that placing tasks can change.
pub fn passes_dynamic(node: &NodeInfo, req: &Requirements) -> bool {
    Filter::ALL
        .into_iter()
        .filter(|f| f.is_dynamic())
        .all(|f| f.passes(node, req))
}

/// How many nodes each filter rejected first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rejections {
    counts: [usize; Filter::ALL.len()],
}

impl Rejections {
    /// Counts every node of `nodes` under the first filter that rejects it.
    pub fn of<'a>(nodes: impl IntoIterator<Item = &'a NodeInfo>, req: &Requirements) -> Self {
        let mut rejections = Rejections::default();
        for node in nodes {
            if let Some(filter) = first_rejection(node, req) {
                rejections.add(filter);
            }
        }
        rejections
    }

    /// Counts one node under `filter`.
    pub fn add(&mut self, filter: Filter) {
        self.counts[filter as usize] += 1;
    }

    /// How many nodes `filter` rejected first.
    pub fn count(&self, filter: Filter) -> usize {
        self.counts[filter as usize]
    }

    /// The task's error: `no suitable node (<filter> on N nodes; ...)`, in
    /// pipeline order.
    pub fn explain(&self, req: &Requirements) -> String {
        let parts: Vec<String> = Filter::ALL
            .into_iter()
            .filter(|f| self.count(*f) > 0)
            .map(|f| f.explain(self.count(f), req))
            .collect();
        if parts.is_empty() {
            "no suitable node".to_owned()
        } else {
            format!("no suitable node ({})", parts.join("; "))
        }
    }
}

#[cfg(test)]
#[path = "filter_tests.rs"]
mod tests;
