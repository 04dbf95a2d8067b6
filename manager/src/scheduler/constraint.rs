//! Placement rules as users write them: constraints (`node.labels.zone==a`),
//! spread preferences (`node.labels.zone`) and their validation.
//!
//! Owns: the syntax and meaning of constraint expressions and spread keys,
//! and the error text a user sees for a bad one. Does not own: which nodes
//! exist or how tasks are spread (see `placement`).
//!
//! Rules (Docker's, with SwarmKit's operators):
//! - A constraint is `KEY==VALUE` or `KEY!=VALUE`; spaces around the key and
//!   the value are ignored.
//! - Keys are case-insensitive: `node.id`, `node.hostname`, `node.role`,
//!   `node.platform.os`, `node.platform.arch`, `node.labels.<label>`. A label
//!   name matches the node's label of exactly that name, or else one that
//!   differs only in case.
//! - Values are case-sensitive, except for `node.role` (`manager` or
//!   `worker`), `node.platform.os` and `node.platform.arch`; the architecture
//!   also accepts Docker's names for Rust's (`amd64` for `x86_64`, `arm64` for
//!   `aarch64`).
//! - `!=` holds on a node that lacks the label; `==` does not.
//!
//! **Invariant:** a parsed [`Constraint`] or [`NodeAttribute`] is valid:
//! code that matches nodes never meets a malformed one.

use std::fmt;

use rswarm_proto::Placement;
use thiserror::Error;

use super::limits::{CONSTRAINTS_MAX, SPREAD_PREFERENCES_MAX};

/// The keys a user can write, for error messages.
const KNOWN_KEYS: &str = "node.id, node.hostname, node.role, node.platform.os, \
                          node.platform.arch, node.labels.<label>";

/// The prefix of label keys, lower-case.
const LABEL_PREFIX: &str = "node.labels.";

/// A node attribute that constraints test and spread preferences group by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NodeAttribute {
    /// The node's ID.
    Id,
    /// The hostname the node's agent reported.
    Hostname,
    /// `manager` or `worker`: the role of the node's certificate.
    Role,
    /// The operating system the node's agent reported, lower-case.
    PlatformOs,
    /// The CPU architecture the node's agent reported, normalised with
    /// [`normalize_arch`].
    PlatformArch,
    /// A label of the node's spec, by name as written by the user.
    Label(String),
}

impl NodeAttribute {
    /// Parses a key such as `node.labels.zone`, ignoring the case of the
    /// fixed part. `None` when the key is unknown or the label name empty.
    pub fn parse(key: &str) -> Option<NodeAttribute> {
        let lower = key.to_ascii_lowercase();
        let attribute = match lower.as_str() {
            "node.id" => NodeAttribute::Id,
            "node.hostname" => NodeAttribute::Hostname,
            "node.role" => NodeAttribute::Role,
            "node.platform.os" => NodeAttribute::PlatformOs,
            "node.platform.arch" => NodeAttribute::PlatformArch,
            _ if lower.starts_with(LABEL_PREFIX) && lower.len() > LABEL_PREFIX.len() => {
                // The prefix is ASCII, so this byte offset is a char boundary.
                NodeAttribute::Label(key[LABEL_PREFIX.len()..].to_owned())
            }
            _ => return None,
        };
        Some(attribute)
    }

    /// Puts a value of this attribute in the form nodes' values are kept in
    /// (see [`crate::scheduler::NodeInfo`]), so that matching is plain
    /// string equality.
    fn normalize_value(&self, value: &str) -> String {
        match self {
            NodeAttribute::Role | NodeAttribute::PlatformOs => value.to_ascii_lowercase(),
            NodeAttribute::PlatformArch => normalize_arch(value),
            NodeAttribute::Id | NodeAttribute::Hostname | NodeAttribute::Label(_) => {
                value.to_owned()
            }
        }
    }
}

impl fmt::Display for NodeAttribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeAttribute::Id => f.write_str("node.id"),
            NodeAttribute::Hostname => f.write_str("node.hostname"),
            NodeAttribute::Role => f.write_str("node.role"),
            NodeAttribute::PlatformOs => f.write_str("node.platform.os"),
            NodeAttribute::PlatformArch => f.write_str("node.platform.arch"),
            NodeAttribute::Label(name) => write!(f, "{LABEL_PREFIX}{name}"),
        }
    }
}

/// One CPU architecture name per architecture: lower-case, with Docker's
/// names (`amd64`, `arm64`) for the ones Rust and `uname` spell otherwise.
pub fn normalize_arch(arch: &str) -> String {
    let lower = arch.to_ascii_lowercase();
    match lower.as_str() {
        "x86_64" | "x86-64" => "amd64".to_owned(),
        "aarch64" => "arm64".to_owned(),
        _ => lower,
    }
}

/// How a constraint compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    /// `==`: the node has the attribute with this value.
    Equal,
    /// `!=`: the node does not have the attribute with this value.
    NotEqual,
}

/// A parsed, valid constraint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Constraint {
    attribute: NodeAttribute,
    operator: Operator,
    /// Normalised for the attribute (see [`NodeAttribute::normalize_value`]).
    value: String,
}

/// Why a constraint was refused. Messages name the constraint and the fix.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ConstraintError {
    /// No operator, or nothing on one side of it.
    #[error("invalid constraint {constraint:?}: expected KEY==VALUE or KEY!=VALUE")]
    Syntax {
        /// The constraint as written.
        constraint: String,
    },
    /// The key names no node attribute.
    #[error("invalid constraint {constraint:?}: unknown key {key:?}; known keys: {KNOWN_KEYS}")]
    UnknownKey {
        /// The constraint as written.
        constraint: String,
        /// The key as written.
        key: String,
    },
    /// `node.role` compared with something other than a role.
    #[error(
        "invalid constraint {constraint:?}: node.role is \"manager\" or \"worker\", not {value:?}"
    )]
    InvalidRole {
        /// The constraint as written.
        constraint: String,
        /// The value as written.
        value: String,
    },
}

impl Constraint {
    /// Parses `KEY==VALUE` or `KEY!=VALUE` (see the module doc for keys).
    pub fn parse(text: &str) -> Result<Constraint, ConstraintError> {
        let syntax = || ConstraintError::Syntax {
            constraint: text.to_owned(),
        };
        let (key, operator, value) = split_operator(text).ok_or_else(syntax)?;
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() || value.is_empty() {
            return Err(syntax());
        }
        let attribute = NodeAttribute::parse(key).ok_or_else(|| ConstraintError::UnknownKey {
            constraint: text.to_owned(),
            key: key.to_owned(),
        })?;
        let normalized = attribute.normalize_value(value);
        if attribute == NodeAttribute::Role && normalized != "manager" && normalized != "worker" {
            return Err(ConstraintError::InvalidRole {
                constraint: text.to_owned(),
                value: value.to_owned(),
            });
        }
        Ok(Constraint {
            attribute,
            operator,
            value: normalized,
        })
    }

    /// The attribute this constraint tests.
    pub fn attribute(&self) -> &NodeAttribute {
        &self.attribute
    }

    /// Whether a node whose value of the attribute is `actual` (`None`: the
    /// node lacks it) satisfies the constraint. `actual` must be in the
    /// node's normal form (as `NodeInfo` keeps it).
    pub fn holds_for(&self, actual: Option<&str>) -> bool {
        let equal = actual == Some(self.value.as_str());
        match self.operator {
            Operator::Equal => equal,
            Operator::NotEqual => !equal,
        }
    }
}

/// Splits at the first `==` or `!=`.
fn split_operator(text: &str) -> Option<(&str, Operator, &str)> {
    let equal = text.find("==").map(|at| (at, Operator::Equal));
    let not_equal = text.find("!=").map(|at| (at, Operator::NotEqual));
    let (at, operator) = match (equal, not_equal) {
        (Some(e), Some(n)) => {
            if e.0 < n.0 {
                e
            } else {
                n
            }
        }
        (Some(found), None) | (None, Some(found)) => found,
        (None, None) => return None,
    };
    Some((&text[..at], operator, &text[at + 2..]))
}

/// Why a placement was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PlacementError {
    /// A constraint is malformed.
    #[error(transparent)]
    Constraint(#[from] ConstraintError),
    /// A spread preference names no node attribute.
    #[error(
        "invalid placement preference {preference:?}: expected spread=<node attribute>, e.g. spread=node.labels.zone; known attributes: {KNOWN_KEYS}"
    )]
    Preference {
        /// The preference as written.
        preference: String,
    },
    /// More constraints than the scheduler evaluates.
    #[error("too many placement constraints ({count}): at most {CONSTRAINTS_MAX} are allowed")]
    TooManyConstraints {
        /// How many were given.
        count: usize,
    },
    /// More spread levels than the scheduler builds.
    #[error(
        "too many placement preferences ({count}): at most {SPREAD_PREFERENCES_MAX} are allowed"
    )]
    TooManyPreferences {
        /// How many were given.
        count: usize,
    },
}

/// A spread preference's attribute. Accepts the attribute alone (as the
/// proto stores it, `node.labels.zone`) or as written on the command line
/// (`spread=node.labels.zone`).
pub fn parse_spread(preference: &str) -> Result<NodeAttribute, PlacementError> {
    let trimmed = preference.trim();
    let key = match trimmed.split_once('=') {
        Some((kind, key)) if kind.trim().eq_ignore_ascii_case("spread") => key.trim(),
        Some(_) => "",
        None => trimmed,
    };
    NodeAttribute::parse(key).ok_or_else(|| PlacementError::Preference {
        preference: preference.to_owned(),
    })
}

/// A service's placement, parsed: what the scheduler works with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlacementRules {
    /// Every constraint must hold on a node.
    pub constraints: Vec<Constraint>,
    /// Spread levels, outermost first.
    pub spread: Vec<NodeAttribute>,
    /// Most active tasks of the service on one node; 0: no limit.
    pub max_replicas: u64,
}

impl PlacementRules {
    /// Parses and checks a placement (`None`: no placement rules).
    pub fn parse(placement: Option<&Placement>) -> Result<PlacementRules, PlacementError> {
        let Some(placement) = placement else {
            return Ok(PlacementRules::default());
        };
        if placement.constraints.len() > CONSTRAINTS_MAX {
            return Err(PlacementError::TooManyConstraints {
                count: placement.constraints.len(),
            });
        }
        if placement.preferences.len() > SPREAD_PREFERENCES_MAX {
            return Err(PlacementError::TooManyPreferences {
                count: placement.preferences.len(),
            });
        }
        let constraints = placement
            .constraints
            .iter()
            .map(|c| Constraint::parse(c))
            .collect::<Result<Vec<_>, _>>()?;
        let spread = placement
            .preferences
            .iter()
            .map(|p| parse_spread(&p.spread))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PlacementRules {
            constraints,
            spread,
            max_replicas: placement.max_replicas,
        })
    }
}

/// Checks a service's placement before it is stored, so that a bad
/// constraint or preference is refused with its reason instead of leaving
/// tasks pending. The control API calls this on create and update.
pub fn validate_placement(placement: &Placement) -> Result<(), PlacementError> {
    PlacementRules::parse(Some(placement)).map(|_| ())
}

#[cfg(test)]
mod tests {
    use rswarm_proto::PlacementPreference;

    use super::*;

    fn parse(text: &str) -> Constraint {
        Constraint::parse(text).unwrap()
    }

    #[test]
    fn each_key_parses_case_insensitively() {
        let cases = [
            ("node.id==abc", NodeAttribute::Id),
            ("NODE.ID==abc", NodeAttribute::Id),
            ("node.hostname==web1", NodeAttribute::Hostname),
            ("Node.HostName==web1", NodeAttribute::Hostname),
            ("node.role==manager", NodeAttribute::Role),
            ("node.platform.os==linux", NodeAttribute::PlatformOs),
            ("node.Platform.Arch==amd64", NodeAttribute::PlatformArch),
            ("node.labels.zone==a", NodeAttribute::Label("zone".into())),
            ("NODE.LABELS.Zone==a", NodeAttribute::Label("Zone".into())),
        ];
        for (text, attribute) in cases {
            assert_eq!(parse(text).attribute(), &attribute, "{text}");
        }
    }

    #[test]
    fn operators_compare_as_written() {
        let equal = parse("node.labels.zone==a");
        assert!(equal.holds_for(Some("a")));
        assert!(!equal.holds_for(Some("b")));
        assert!(!equal.holds_for(None), "== needs the label");
        let not_equal = parse("node.labels.zone!=a");
        assert!(!not_equal.holds_for(Some("a")));
        assert!(not_equal.holds_for(Some("b")));
        assert!(not_equal.holds_for(None), "!= holds without the label");
    }

    #[test]
    fn spaces_around_key_and_value_are_ignored() {
        let c = parse("  node.labels.zone  ==  a ");
        assert_eq!(c, parse("node.labels.zone==a"));
        assert_eq!(parse("node.labels.owner==ops team").value, "ops team");
    }

    #[test]
    fn label_values_and_hostnames_are_case_sensitive() {
        assert!(!parse("node.labels.zone==A").holds_for(Some("a")));
        assert!(!parse("node.hostname==Web1").holds_for(Some("web1")));
        assert!(!parse("node.id==ABC").holds_for(Some("abc")));
    }

    #[test]
    fn role_os_and_arch_values_ignore_case_and_arch_aliases() {
        assert!(parse("node.role==MANAGER").holds_for(Some("manager")));
        assert!(parse("node.platform.os==Linux").holds_for(Some("linux")));
        let node_arch = normalize_arch("x86_64");
        assert!(parse("node.platform.arch==amd64").holds_for(Some(&node_arch)));
        assert!(parse("node.platform.arch==X86_64").holds_for(Some(&node_arch)));
        assert!(parse("node.platform.arch==arm64").holds_for(Some(&normalize_arch("aarch64"))));
        assert!(!parse("node.platform.arch==arm64").holds_for(Some(&node_arch)));
    }

    #[test]
    fn bad_syntax_says_what_is_expected() {
        for text in [
            "node.labels.zone=a",
            "node.labels.zone",
            "==a",
            "node.labels.zone==",
            "node.labels.zone!=  ",
            "",
        ] {
            let err = Constraint::parse(text).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("invalid constraint {text:?}: expected KEY==VALUE or KEY!=VALUE")
            );
        }
        assert_eq!(
            Constraint::parse("node.labels.zone=a")
                .unwrap_err()
                .to_string(),
            r#"invalid constraint "node.labels.zone=a": expected KEY==VALUE or KEY!=VALUE"#
        );
    }

    #[test]
    fn unknown_keys_list_the_known_ones() {
        for text in ["node.ip==10.0.0.1", "engine.labels.x==y", "node.labels.==a"] {
            let err = Constraint::parse(text).unwrap_err();
            assert!(
                matches!(err, ConstraintError::UnknownKey { .. }),
                "{text}: {err}"
            );
            let message = err.to_string();
            assert!(message.contains("unknown key"), "{message}");
            assert!(message.contains("node.labels.<label>"), "{message}");
            assert!(message.contains("node.hostname"), "{message}");
        }
    }

    #[test]
    fn a_role_must_be_manager_or_worker() {
        let err = Constraint::parse("node.role==boss").unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"invalid constraint "node.role==boss": node.role is "manager" or "worker", not "boss""#
        );
        assert!(Constraint::parse("node.role!=worker").is_ok());
    }

    #[test]
    fn the_first_operator_splits() {
        let c = parse("node.labels.expr==a!=b");
        assert_eq!(c.value, "a!=b");
        assert_eq!(c.operator, Operator::Equal);
        let c = parse("node.labels.expr!=a==b");
        assert_eq!(c.operator, Operator::NotEqual);
        assert_eq!(c.value, "a==b");
    }

    #[test]
    fn spread_takes_an_attribute_with_or_without_the_prefix() {
        let zone = NodeAttribute::Label("zone".into());
        assert_eq!(parse_spread("node.labels.zone").unwrap(), zone);
        assert_eq!(parse_spread("spread=node.labels.zone").unwrap(), zone);
        assert_eq!(parse_spread("SPREAD = node.labels.zone").unwrap(), zone);
        assert_eq!(
            parse_spread("node.platform.arch").unwrap(),
            NodeAttribute::PlatformArch
        );
        for bad in ["binpack=node.labels.zone", "node.labels.", "zone", ""] {
            let err = parse_spread(bad).unwrap_err();
            assert!(
                err.to_string().starts_with(&format!(
                    "invalid placement preference {bad:?}: expected spread=<node attribute>"
                )),
                "{err}"
            );
        }
    }

    #[test]
    fn validate_placement_refuses_any_bad_part() {
        let good = Placement {
            constraints: vec!["node.role==worker".into(), "node.labels.disk!=hdd".into()],
            preferences: vec![PlacementPreference {
                spread: "node.labels.zone".into(),
            }],
            max_replicas: 2,
        };
        assert_eq!(validate_placement(&good), Ok(()));
        let mut bad_constraint = good.clone();
        bad_constraint.constraints.push("node.labels.zone=a".into());
        assert!(matches!(
            validate_placement(&bad_constraint),
            Err(PlacementError::Constraint(ConstraintError::Syntax { .. }))
        ));
        let mut bad_preference = good.clone();
        bad_preference.preferences.push(PlacementPreference {
            spread: "random".into(),
        });
        assert!(matches!(
            validate_placement(&bad_preference),
            Err(PlacementError::Preference { .. })
        ));
        let mut too_many = good;
        too_many.constraints = vec!["node.role==worker".into(); CONSTRAINTS_MAX + 1];
        assert!(matches!(
            validate_placement(&too_many),
            Err(PlacementError::TooManyConstraints { .. })
        ));
    }

    #[test]
    fn attributes_display_as_keys() {
        for key in [
            "node.id",
            "node.hostname",
            "node.role",
            "node.platform.os",
            "node.platform.arch",
            "node.labels.Zone",
        ] {
            assert_eq!(NodeAttribute::parse(key).unwrap().to_string(), key);
        }
    }
}
