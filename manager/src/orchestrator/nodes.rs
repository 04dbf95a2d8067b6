//! What the orchestrators need to know about a node: may it keep its tasks,
//! may it take new ones.
//!
//! **Invariants:** a node that is Down, drained or removed keeps no
//! runnable task (its tasks are replaced elsewhere, or shut down for a
//! global service); a paused node keeps its tasks but takes no new ones;
//! a node in state Unknown or Disconnected (a new leader's grace period, a
//! broken session) is given the benefit of the doubt.

use rswarm_proto::{Node, NodeAvailability, NodeState, Service};

use super::constraint::node_satisfies;
use crate::store::StoreState;

/// A node's standing, as far as tasks are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeFit {
    /// The node object is gone (`node rm`).
    Gone,
    /// Its heartbeats stopped.
    Down,
    /// `availability drain`: move its tasks off.
    Drained,
    /// `availability pause`: keep its tasks, no new ones.
    Paused,
    /// Active and not Down.
    Active,
}

impl NodeFit {
    /// The node may keep the tasks it has.
    pub fn keeps_tasks(self) -> bool {
        matches!(self, NodeFit::Paused | NodeFit::Active)
    }

    /// The node may receive new tasks.
    pub fn takes_tasks(self) -> bool {
        self == NodeFit::Active
    }

    /// Its agent will not report on its tasks any more (or not soon): a task
    /// there counts as stopped.
    pub fn is_lost(self) -> bool {
        matches!(self, NodeFit::Gone | NodeFit::Down)
    }
}

/// The standing of a node object.
pub fn fit_of(node: &Node) -> NodeFit {
    let state = node
        .status
        .as_ref()
        .map_or(NodeState::Unknown, |s| s.state());
    if state == NodeState::Down {
        return NodeFit::Down;
    }
    match node
        .spec
        .as_ref()
        .map_or(NodeAvailability::Active, |s| s.availability())
    {
        NodeAvailability::Drain => NodeFit::Drained,
        NodeAvailability::Pause => NodeFit::Paused,
        NodeAvailability::Active => NodeFit::Active,
    }
}

/// The standing of the node with this ID (an empty ID: not placed yet, so
/// nothing to hold against it).
pub fn fit(state: &StoreState, node_id: &str) -> NodeFit {
    if node_id.is_empty() {
        return NodeFit::Active;
    }
    state.node(node_id).map_or(NodeFit::Gone, fit_of)
}

/// Whether the node is ready and active: what makes a node count for a
/// rebalance and for an automatic rebalance when it joins or returns.
pub fn is_usable(node: &Node) -> bool {
    let ready = node.status.as_ref().map(|s| s.state()) == Some(NodeState::Ready);
    ready && fit_of(node) == NodeFit::Active
}

/// The service's placement constraints.
pub fn constraints_of(service: &Service) -> &[String] {
    service
        .spec
        .as_ref()
        .and_then(|s| s.task.as_ref())
        .and_then(|t| t.placement.as_ref())
        .map_or(&[], |p| p.constraints.as_slice())
}

/// A node the global service should run on: not Down, active, constraints
/// satisfied.
pub fn global_takes(node: &Node, service: &Service) -> bool {
    fit_of(node).takes_tasks() && node_satisfies(node, constraints_of(service))
}

/// A node on which the global service's task may stay: not Down, not
/// drained, constraints still satisfied.
pub fn global_keeps(node: &Node, service: &Service) -> bool {
    fit_of(node).keeps_tasks() && node_satisfies(node, constraints_of(service))
}

#[cfg(test)]
mod tests {
    use rswarm_proto::{Meta, NodeSpec, NodeStatus};

    use super::*;

    fn node(state: NodeState, availability: NodeAvailability) -> Node {
        let mut status = NodeStatus::default();
        status.set_state(state);
        let mut spec = NodeSpec::default();
        spec.set_availability(availability);
        Node {
            meta: Some(Meta {
                id: "n1".to_owned(),
                ..Meta::default()
            }),
            spec: Some(spec),
            status: Some(status),
            ..Node::default()
        }
    }

    #[test]
    fn down_wins_over_availability() {
        use NodeAvailability as A;
        use NodeState as S;
        let cases = [
            (S::Ready, A::Active, NodeFit::Active),
            (S::Unknown, A::Active, NodeFit::Active),
            (S::Disconnected, A::Active, NodeFit::Active),
            (S::Ready, A::Pause, NodeFit::Paused),
            (S::Ready, A::Drain, NodeFit::Drained),
            (S::Down, A::Active, NodeFit::Down),
            (S::Down, A::Pause, NodeFit::Down),
        ];
        for (state, availability, want) in cases {
            assert_eq!(
                fit_of(&node(state, availability)),
                want,
                "{state:?} {availability:?}"
            );
        }
    }

    #[test]
    fn paused_keeps_but_does_not_take() {
        assert!(NodeFit::Paused.keeps_tasks());
        assert!(!NodeFit::Paused.takes_tasks());
        assert!(!NodeFit::Drained.keeps_tasks());
        assert!(!NodeFit::Down.keeps_tasks());
        assert!(NodeFit::Gone.is_lost());
        assert!(!NodeFit::Drained.is_lost());
    }

    #[test]
    fn only_ready_active_nodes_are_usable() {
        assert!(is_usable(&node(NodeState::Ready, NodeAvailability::Active)));
        assert!(!is_usable(&node(
            NodeState::Unknown,
            NodeAvailability::Active
        )));
        assert!(!is_usable(&node(NodeState::Ready, NodeAvailability::Pause)));
    }
}
