//! Placement constraints as far as the orchestrators need them: whether a
//! node satisfies a service's `placement.constraints` (a global service runs
//! only on nodes that do).
//!
//! The scheduler owns the full constraint language and its "why not" text;
//! this is a small private matcher behind one function, [`node_satisfies`],
//! so it can later call the scheduler's parser instead.
//!
//! **Invariant:** a constraint that does not parse, or names an attribute we
//! do not know, is not satisfied: a typo must not place tasks everywhere.

use rswarm_proto::{Node, NodeRole};

/// Whether `node` satisfies every constraint (none: always).
pub fn node_satisfies(node: &Node, constraints: &[String]) -> bool {
    constraints
        .iter()
        .all(|c| Constraint::parse(c).is_some_and(|c| c.matches(node)))
}

/// `==` or `!=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    Equal,
    NotEqual,
}

/// One parsed `key==value` / `key!=value` expression.
#[derive(Debug, PartialEq, Eq)]
struct Constraint<'a> {
    key: String,
    operator: Operator,
    value: &'a str,
}

impl<'a> Constraint<'a> {
    fn parse(text: &'a str) -> Option<Constraint<'a>> {
        let (key, operator, value) = if let Some((k, v)) = text.split_once("==") {
            (k, Operator::Equal, v)
        } else {
            let (k, v) = text.split_once("!=")?;
            (k, Operator::NotEqual, v)
        };
        let key = key.trim();
        let value = value.trim();
        if key.is_empty() || value.is_empty() {
            return None;
        }
        Some(Constraint {
            key: key.to_owned(),
            operator,
            value,
        })
    }

    /// Keys are case-insensitive; label values compare exactly, other values
    /// ignore case (as in SwarmKit).
    fn matches(&self, node: &Node) -> bool {
        let key = self.key.to_ascii_lowercase();
        let (actual, exact) = match key.as_str() {
            "node.id" => (node.meta.as_ref().map(|m| m.id.clone()), false),
            "node.hostname" => (node.description.as_ref().map(|d| d.hostname.clone()), false),
            "node.role" => (Some(role_name(node.role()).to_owned()), false),
            "node.platform.os" => (platform(node, |p| p.os.clone()), false),
            "node.platform.arch" => (platform(node, |p| p.architecture.clone()), false),
            _ => match label_key(&self.key) {
                Some(label) => (node_label(node, label), true),
                None => return false,
            },
        };
        let equal = actual.is_some_and(|a| {
            if exact {
                a == self.value
            } else {
                a.eq_ignore_ascii_case(self.value)
            }
        });
        match self.operator {
            Operator::Equal => equal,
            Operator::NotEqual => !equal,
        }
    }
}

fn role_name(role: NodeRole) -> &'static str {
    match role {
        NodeRole::Manager => "manager",
        NodeRole::Worker => "worker",
    }
}

fn platform(node: &Node, field: impl Fn(&rswarm_proto::Platform) -> String) -> Option<String> {
    node.description
        .as_ref()
        .and_then(|d| d.platform.as_ref())
        .map(field)
}

/// The label name in `node.labels.<name>` (the prefix in any case).
fn label_key(key: &str) -> Option<&str> {
    const PREFIX: &str = "node.labels.";
    let head = key.get(..PREFIX.len())?;
    let label = &key[PREFIX.len()..];
    (head.eq_ignore_ascii_case(PREFIX) && !label.is_empty()).then_some(label)
}

fn node_label(node: &Node, label: &str) -> Option<String> {
    node.spec
        .as_ref()
        .and_then(|s| s.annotations.as_ref())
        .and_then(|a| a.labels.get(label).cloned())
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
