//! Placement constraints as far as the orchestrators need them: whether a
//! node satisfies a service's `placement.constraints` (a global service runs
//! only on nodes that do; an update or rebalance moves tasks off nodes that
//! no longer do). The language is the scheduler's: same parser, same
//! attribute values, so the two never disagree about a node.
//!
//! **Invariant:** a constraint that does not parse, or names an attribute we
//! do not know, is not satisfied: a typo must not place tasks everywhere.

use rswarm_proto::Node;
#[cfg(test)]
use rswarm_proto::NodeRole;

use crate::scheduler::{Constraint, NodeInfo};

/// Whether `node` satisfies every constraint (none: always).
pub fn node_satisfies(node: &Node, constraints: &[String]) -> bool {
    if constraints.is_empty() {
        return true;
    }
    let info = NodeInfo::new(node);
    constraints.iter().all(|text| {
        Constraint::parse(text).is_ok_and(|c| c.holds_for(info.attribute(c.attribute())))
    })
}

#[cfg(test)]
mod tests {
    use rswarm_proto::{Annotations, Meta, NodeDescription, NodeSpec, Platform};

    use super::*;

    fn node() -> Node {
        let mut node = Node {
            meta: Some(Meta {
                id: "abc123".to_owned(),
                ..Meta::default()
            }),
            spec: Some(NodeSpec {
                annotations: Some(Annotations {
                    labels: [("zone".to_owned(), "East".to_owned())].into(),
                    ..Annotations::default()
                }),
                ..NodeSpec::default()
            }),
            description: Some(NodeDescription {
                hostname: "web1".to_owned(),
                platform: Some(Platform {
                    os: "linux".to_owned(),
                    architecture: "x86_64".to_owned(),
                }),
                ..NodeDescription::default()
            }),
            ..Node::default()
        };
        node.set_role(NodeRole::Manager);
        node
    }

    fn check(constraints: &[&str]) -> bool {
        let owned: Vec<String> = constraints.iter().map(|c| (*c).to_owned()).collect();
        node_satisfies(&node(), &owned)
    }

    #[test]
    fn each_attribute_matches_with_either_operator() {
        assert!(check(&[]));
        assert!(check(&["node.id==abc123"]));
        assert!(check(&["node.hostname == WEB1"]), "values ignore case");
        assert!(check(&["Node.Role==manager"]), "keys ignore case");
        assert!(check(&["node.role!=worker"]));
        assert!(check(&[
            "node.platform.os==linux",
            "node.platform.arch==x86_64"
        ]));
        assert!(check(&["node.labels.zone==East"]));
        assert!(
            !check(&["node.labels.zone==east"]),
            "label values are exact"
        );
        assert!(
            check(&["node.labels.rack!=r1"]),
            "a missing label is unequal"
        );
        assert!(!check(&["node.labels.rack==r1"]));
        assert!(!check(&["node.hostname==web2"]));
    }

    #[test]
    fn a_constraint_that_does_not_parse_is_not_satisfied() {
        for bad in [
            "node.hostname",
            "node.hostname=web1",
            "==web1",
            "node.hostname==",
            "engine.labels.x==y",
            "node.labels.==y",
            "node.flavour==vanilla",
        ] {
            assert!(!check(&[bad]), "{bad}");
        }
    }
}
