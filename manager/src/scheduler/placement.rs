//! The pure scheduling core: given the nodes and the tasks they hold, decide
//! where pending tasks go. No I/O, no clock: the leader loop, the tests and
//! the benchmark all call [`Scheduler::schedule`] directly.
//!
//! How a pass works:
//! 1. Pending tasks are grouped by service and spec version; a group shares
//!    its requirements, so the static filters run once per node per group.
//! 2. The nodes that pass them form a tree, one level per spread preference
//!    (nodes lacking the attribute form their own branch). At each level the
//!    group's tasks are split to even out the service's task counts across
//!    branches (water-filling); a branch that runs out of room is closed and
//!    its share goes to the others.
//! 3. In a leaf, a heap keyed by (tasks of the service on the node, active
//!    tasks on the node) hands each task to the least-loaded node that still
//!    passes the dynamic filters (resources, host ports, max replicas).
//!    Placing a task consumes the node's capacity at once.
//! 4. Tasks left over get the filters' explanation as their error.
//!
//! Global tasks arrive with their node chosen: they are only checked
//! against it. Decisions are final: a placed task is never moved.
//!
//! Cost: O(groups × nodes × filters + tasks × log nodes).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use rswarm_proto::{Node, Task};

use super::constraint::NodeAttribute;
use super::filter::{Rejections, Requirements, first_rejection, passes_dynamic, passes_static};
use super::nodeinfo::{CpuMemory, NodeInfo, host_ports, is_active, is_pending};
use crate::store::StoreState;

/// What the scheduler decided for one pending task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Run the task on this node.
    Assign {
        /// The task.
        task_id: String,
        /// The node chosen.
        node_id: String,
    },
    /// No node can take the task now; it stays pending with this error.
    Unplaceable {
        /// The task.
        task_id: String,
        /// Why, for people (`no suitable node (...)`).
        reason: String,
    },
}

impl Decision {
    /// The task the decision is about.
    pub fn task_id(&self) -> &str {
        match self {
            Decision::Assign { task_id, .. } | Decision::Unplaceable { task_id, .. } => task_id,
        }
    }
}

/// Tasks that share requirements: one service at one spec version. Tasks
/// without a service never share a group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct GroupKey {
    service_id: String,
    spec_version: u64,
    /// The task's ID when it has no service, else empty.
    standalone_task: String,
}

impl GroupKey {
    fn of(task: &Task) -> GroupKey {
        let id = task
            .meta
            .as_ref()
            .map(|m| m.id.as_str())
            .unwrap_or_default();
        GroupKey {
            service_id: task.service_id.clone(),
            spec_version: task.spec_version,
            standalone_task: if task.service_id.is_empty() {
                id.to_owned()
            } else {
                String::new()
            },
        }
    }
}

fn task_id(task: &Task) -> &str {
    task.meta
        .as_ref()
        .map(|m| m.id.as_str())
        .unwrap_or_default()
}

/// The nodes and what their active tasks hold; see the module doc.
#[derive(Debug, Clone)]
pub struct Scheduler {
    /// In node ID order, so ties are broken the same way on every manager.
    nodes: Vec<NodeInfo>,
    by_id: HashMap<String, usize>,
}

impl Scheduler {
    /// Builds the per-node view from every node and the tasks that hold
    /// node resources (non-active tasks in `tasks` are ignored).
    pub fn new<'a>(
        nodes: impl IntoIterator<Item = &'a Node>,
        tasks: impl IntoIterator<Item = &'a Task>,
    ) -> Scheduler {
        let mut infos: Vec<NodeInfo> = nodes.into_iter().map(NodeInfo::new).collect();
        infos.sort_by(|a, b| a.id().cmp(b.id()));
        infos.dedup_by(|a, b| a.id() == b.id());
        let by_id = infos
            .iter()
            .enumerate()
            .map(|(idx, n)| (n.id().to_owned(), idx))
            .collect();
        let mut scheduler = Scheduler {
            nodes: infos,
            by_id,
        };
        for task in tasks.into_iter().filter(|t| is_active(t)) {
            if let Some(&idx) = scheduler.by_id.get(&task.node_id) {
                let reservation = CpuMemory::reserved_by(task.spec.as_ref());
                scheduler.nodes[idx].add_task(&task.service_id, reservation, &host_ports(task));
            }
        }
        scheduler
    }

    /// The view of the whole store.
    pub fn from_store(state: &StoreState) -> Scheduler {
        Scheduler::new(state.nodes(), state.tasks())
    }

    /// Every node, in ID order, as placement left it.
    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }

    /// One node, as placement left it.
    pub fn node(&self, id: &str) -> Option<&NodeInfo> {
        self.by_id.get(id).map(|&idx| &self.nodes[idx])
    }

    /// Places `pending` tasks and returns one decision per pending task
    /// (tasks that are not pending are skipped). Later calls see the
    /// capacity earlier ones consumed.
    pub fn schedule(&mut self, pending: &[Task]) -> Vec<Decision> {
        let mut groups: BTreeMap<GroupKey, Vec<&Task>> = BTreeMap::new();
        for task in pending.iter().filter(|t| is_pending(t)) {
            groups.entry(GroupKey::of(task)).or_default().push(task);
        }
        let mut decisions = Vec::with_capacity(pending.len());
        for (_, mut tasks) in groups {
            tasks.sort_by(|a, b| (a.slot, task_id(a)).cmp(&(b.slot, task_id(b))));
            self.schedule_group(&tasks, &mut decisions);
        }
        decisions
    }

    fn schedule_group(&mut self, tasks: &[&Task], decisions: &mut Vec<Decision>) {
        let Some(first) = tasks.first() else {
            return;
        };
        let req = match Requirements::of(first) {
            Ok(req) => req,
            Err(e) => {
                let reason = e.to_string();
                decisions.extend(tasks.iter().map(|t| Decision::Unplaceable {
                    task_id: task_id(t).to_owned(),
                    reason: reason.clone(),
                }));
                return;
            }
        };
        let (preset, free): (Vec<&Task>, Vec<&Task>) =
            tasks.iter().partition(|t| !t.node_id.is_empty());
        for task in preset {
            decisions.push(self.place_on_preset_node(task, &req));
        }
        self.place_free(&free, &req, decisions);
    }

    /// A global task: its node either takes it or it stays pending.
    fn place_on_preset_node(&mut self, task: &Task, req: &Requirements) -> Decision {
        let id = task_id(task).to_owned();
        let Some(&idx) = self.by_id.get(&task.node_id) else {
            return Decision::Unplaceable {
                task_id: id,
                reason: format!(
                    "no suitable node (node {} is not in the cluster)",
                    task.node_id
                ),
            };
        };
        if let Some(filter) = first_rejection(&self.nodes[idx], req) {
            let mut rejections = Rejections::default();
            rejections.add(filter);
            return Decision::Unplaceable {
                task_id: id,
                reason: rejections.explain(req),
            };
        }
        self.take(idx, req);
        Decision::Assign {
            task_id: id,
            node_id: task.node_id.clone(),
        }
    }

    /// Tasks the scheduler chooses nodes for.
    fn place_free(&mut self, tasks: &[&Task], req: &Requirements, decisions: &mut Vec<Decision>) {
        if tasks.is_empty() {
            return;
        }
        let eligible: Vec<usize> = (0..self.nodes.len())
            .filter(|&idx| passes_static(&self.nodes[idx], req))
            .collect();
        let mut tree = Branch::build(&self.nodes, eligible, &req.rules.spread, &req.service_id);
        let mut chosen = Vec::with_capacity(tasks.len());
        self.place_in_branch(&mut tree, tasks.len() as u64, req, &mut chosen);
        let mut chosen = chosen.into_iter();
        let mut reason: Option<String> = None;
        for task in tasks {
            let decision = match chosen.next() {
                Some(idx) => Decision::Assign {
                    task_id: task_id(task).to_owned(),
                    node_id: self.nodes[idx].id().to_owned(),
                },
                None => Decision::Unplaceable {
                    task_id: task_id(task).to_owned(),
                    reason: reason.get_or_insert_with(|| self.explain(req)).clone(),
                },
            };
            decisions.push(decision);
        }
    }

    /// Why no node can take one more task of `req` now.
    fn explain(&self, req: &Requirements) -> String {
        if self.nodes.is_empty() {
            return "no suitable node (the cluster has no nodes)".to_owned();
        }
        Rejections::of(&self.nodes, req).explain(req)
    }

    /// Places up to `n` tasks in `branch`, evening out the service's task
    /// counts across its children; returns how many it placed.
    fn place_in_branch(
        &mut self,
        branch: &mut Branch,
        n: u64,
        req: &Requirements,
        chosen: &mut Vec<usize>,
    ) -> u64 {
        if branch.children.is_empty() {
            let placed = self.place_on_nodes(&branch.nodes, n, req, chosen);
            branch.tasks += placed;
            return placed;
        }
        let mut open: Vec<usize> = (0..branch.children.len()).collect();
        let mut remaining = n;
        // Each round either places everything or closes a child, so there
        // are at most children + 1 rounds.
        while remaining > 0 && !open.is_empty() {
            let counts: Vec<u64> = open.iter().map(|&c| branch.children[c].tasks).collect();
            let quotas = water_fill(&counts, remaining);
            let mut still_open = Vec::with_capacity(open.len());
            for (&child, quota) in open.iter().zip(quotas) {
                let placed = if quota > 0 {
                    self.place_in_branch(&mut branch.children[child], quota, req, chosen)
                } else {
                    0
                };
                remaining -= placed;
                if placed == quota {
                    still_open.push(child);
                }
            }
            open = still_open;
        }
        let placed = n - remaining;
        branch.tasks += placed;
        placed
    }

    /// Places up to `n` tasks on the least-loaded of `nodes` that pass the
    /// dynamic filters; returns how many it placed.
    fn place_on_nodes(
        &mut self,
        nodes: &[usize],
        n: u64,
        req: &Requirements,
        chosen: &mut Vec<usize>,
    ) -> u64 {
        let load = |node: &NodeInfo, idx: usize| {
            Reverse((
                node.tasks_of_service(&req.service_id),
                node.tasks_total(),
                idx,
            ))
        };
        let mut heap: BinaryHeap<_> = nodes
            .iter()
            .map(|&idx| load(&self.nodes[idx], idx))
            .collect();
        let mut placed = 0;
        while placed < n {
            let Some(Reverse((_, _, idx))) = heap.pop() else {
                break;
            };
            // A node that fails now fails for the rest of the pass (see the
            // filter module's invariant): it leaves the heap for good.
            if !passes_dynamic(&self.nodes[idx], req) {
                continue;
            }
            self.take(idx, req);
            chosen.push(idx);
            placed += 1;
            heap.push(load(&self.nodes[idx], idx));
        }
        placed
    }

    /// Counts one more task of `req` on node `idx`.
    fn take(&mut self, idx: usize, req: &Requirements) {
        self.nodes[idx].add_task(&req.service_id, req.reservation, &req.host_ports);
    }
}

/// A level of the spread tree: a leaf holds nodes, an inner branch holds
/// one child per value of the level's attribute.
#[derive(Debug)]
struct Branch {
    /// Leaf only: indices into `Scheduler::nodes`.
    nodes: Vec<usize>,
    /// One per attribute value (and one for nodes without it), in value
    /// order with the valueless branch first.
    children: Vec<Branch>,
    /// Active tasks of the service on the branch's nodes.
    tasks: u64,
}

impl Branch {
    fn build(
        infos: &[NodeInfo],
        nodes: Vec<usize>,
        levels: &[NodeAttribute],
        service_id: &str,
    ) -> Branch {
        let tasks = nodes
            .iter()
            .map(|&idx| infos[idx].tasks_of_service(service_id))
            .sum();
        let Some((attribute, deeper)) = levels.split_first() else {
            return Branch {
                nodes,
                children: Vec::new(),
                tasks,
            };
        };
        let mut by_value: BTreeMap<Option<&str>, Vec<usize>> = BTreeMap::new();
        for idx in nodes {
            by_value
                .entry(infos[idx].attribute(attribute))
                .or_default()
                .push(idx);
        }
        let children = by_value
            .into_values()
            .map(|group| Branch::build(infos, group, deeper, service_id))
            .collect();
        Branch {
            nodes: Vec::new(),
            children,
            tasks,
        }
    }
}

/// Splits `n` tasks over branches holding `counts` tasks so that the counts
/// end as even as possible: the emptiest branches are filled first, up to a
/// common level; what does not divide evenly goes to the first branches
/// (fewest tasks, then lowest position). Returns each branch's share.
pub fn water_fill(counts: &[u64], n: u64) -> Vec<u64> {
    let mut order: Vec<usize> = (0..counts.len()).collect();
    order.sort_by_key(|&i| (counts[i], i));
    let sorted: Vec<u64> = order.iter().map(|&i| counts[i]).collect();
    let mut quotas = vec![0; counts.len()];
    if sorted.is_empty() {
        return quotas;
    }
    // Find how many branches the tasks reach: the smallest m such that
    // raising the m emptiest to the next one's count would take all n.
    let (mut m, mut below) = (1usize, sorted[0]);
    while m < sorted.len() {
        let cost = (m as u64).saturating_mul(sorted[m]).saturating_sub(below);
        if cost >= n {
            break;
        }
        below += sorted[m];
        m += 1;
    }
    let total = n + below;
    let (level, extra) = (total / m as u64, total % m as u64);
    for (rank, &branch) in order.iter().take(m).enumerate() {
        let target = level + u64::from((rank as u64) < extra);
        quotas[branch] = target - counts[branch];
    }
    quotas
}
