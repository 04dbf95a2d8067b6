//! The seven kinds of store objects and what the store needs to know about
//! each: where its `meta` is, which name identifies it, whether that name is
//! unique within the kind, and how it wraps into an [`Object`].

use rswarm_proto::{
    Cluster, Config, Meta, Network, Node, Object, Secret, Service, Task, object::Kind,
};
use serde::{Deserialize, Serialize};

/// A kind of store object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ObjectKind {
    /// The single cluster object.
    Cluster,
    /// A node.
    Node,
    /// A service.
    Service,
    /// A task.
    Task,
    /// A network.
    Network,
    /// A secret.
    Secret,
    /// A config.
    Config,
}

impl ObjectKind {
    /// Every kind, in the store's (and the snapshot's) order.
    pub const ALL: [ObjectKind; 7] = [
        ObjectKind::Cluster,
        ObjectKind::Node,
        ObjectKind::Service,
        ObjectKind::Task,
        ObjectKind::Network,
        ObjectKind::Secret,
        ObjectKind::Config,
    ];

    /// The kind's lower-case name, as users read it: "node".
    pub fn name(self) -> &'static str {
        match self {
            ObjectKind::Cluster => "cluster",
            ObjectKind::Node => "node",
            ObjectKind::Service => "service",
            ObjectKind::Task => "task",
            ObjectKind::Network => "network",
            ObjectKind::Secret => "secret",
            ObjectKind::Config => "config",
        }
    }

    /// The plural: "nodes".
    pub fn plural(self) -> &'static str {
        match self {
            ObjectKind::Cluster => "clusters",
            ObjectKind::Node => "nodes",
            ObjectKind::Service => "services",
            ObjectKind::Task => "tasks",
            ObjectKind::Network => "networks",
            ObjectKind::Secret => "secrets",
            ObjectKind::Config => "configs",
        }
    }

    /// The kind of a wrapped object, `None` if the oneof is unset.
    pub fn of(object: &Object) -> Option<ObjectKind> {
        Some(match object.kind.as_ref()? {
            Kind::Cluster(_) => ObjectKind::Cluster,
            Kind::Node(_) => ObjectKind::Node,
            Kind::Service(_) => ObjectKind::Service,
            Kind::Task(_) => ObjectKind::Task,
            Kind::Network(_) => ObjectKind::Network,
            Kind::Secret(_) => ObjectKind::Secret,
            Kind::Config(_) => ObjectKind::Config,
        })
    }
}

impl std::fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How many secondary indexes a kind may have (tasks have two).
pub const GROUP_INDEXES: usize = 2;

/// Which secondary index of tasks: the position in `group_keys`.
pub const TASKS_BY_SERVICE: usize = 0;
/// See [`TASKS_BY_SERVICE`].
pub const TASKS_BY_NODE: usize = 1;

/// A typed store object.
pub trait StoreObject: Clone + PartialEq + std::fmt::Debug + Send + Sync + 'static {
    /// Its kind.
    const KIND: ObjectKind;
    /// Whether `name()` is unique within the kind (when not empty).
    const UNIQUE_NAME: bool;
    /// The store-written metadata.
    fn meta(&self) -> Option<&Meta>;
    /// The metadata, for the store to stamp.
    fn meta_mut(&mut self) -> &mut Option<Meta>;
    /// The user-given name (`spec.annotations.name`), empty if none.
    fn name(&self) -> &str;
    /// Whether a user reference is exactly one of this object's names.
    fn has_name(&self, reference: &str) -> bool {
        !reference.is_empty() && self.name() == reference
    }
    /// Keys this object is grouped under in the kind's secondary indexes
    /// (tasks: by service, by node); an empty key is not indexed.
    fn group_keys(&self) -> [&str; GROUP_INDEXES] {
        [""; GROUP_INDEXES]
    }
    /// Wraps it into an [`Object`].
    fn into_object(self) -> Object;
    /// The ID, empty if there is no meta.
    fn id(&self) -> &str {
        self.meta().map_or("", |m| m.id.as_str())
    }
    /// The stored version, 0 if there is no meta.
    fn version(&self) -> u64 {
        self.meta().map_or(0, |m| m.version)
    }
}

macro_rules! store_object {
    ($ty:ident, $kind:ident, unique = $unique:expr, name = |$o:ident| $name:expr) => {
        impl StoreObject for $ty {
            const KIND: ObjectKind = ObjectKind::$kind;
            const UNIQUE_NAME: bool = $unique;
            fn meta(&self) -> Option<&Meta> {
                self.meta.as_ref()
            }
            fn meta_mut(&mut self) -> &mut Option<Meta> {
                &mut self.meta
            }
            fn name(&self) -> &str {
                let $o = self;
                $name
            }
            fn into_object(self) -> Object {
                Object {
                    kind: Some(Kind::$kind(self)),
                }
            }
        }
    };
}

macro_rules! annotated_name {
    ($o:ident) => {
        $o.spec
            .as_ref()
            .and_then(|s| s.annotations.as_ref())
            .map_or("", |a| a.name.as_str())
    };
}

store_object!(
    Cluster,
    Cluster,
    unique = false,
    name = |o| annotated_name!(o)
);
store_object!(
    Service,
    Service,
    unique = true,
    name = |o| annotated_name!(o)
);

impl StoreObject for Task {
    const KIND: ObjectKind = ObjectKind::Task;
    const UNIQUE_NAME: bool = false;
    fn meta(&self) -> Option<&Meta> {
        self.meta.as_ref()
    }
    fn meta_mut(&mut self) -> &mut Option<Meta> {
        &mut self.meta
    }
    fn name(&self) -> &str {
        ""
    }
    fn group_keys(&self) -> [&str; GROUP_INDEXES] {
        let mut keys = [""; GROUP_INDEXES];
        keys[TASKS_BY_SERVICE] = &self.service_id;
        keys[TASKS_BY_NODE] = &self.node_id;
        keys
    }
    fn into_object(self) -> Object {
        Object {
            kind: Some(Kind::Task(self)),
        }
    }
}
store_object!(
    Network,
    Network,
    unique = true,
    name = |o| annotated_name!(o)
);
store_object!(Secret, Secret, unique = true, name = |o| annotated_name!(o));
store_object!(Config, Config, unique = true, name = |o| annotated_name!(o));

impl StoreObject for Node {
    const KIND: ObjectKind = ObjectKind::Node;
    const UNIQUE_NAME: bool = false;
    fn meta(&self) -> Option<&Meta> {
        self.meta.as_ref()
    }
    fn meta_mut(&mut self) -> &mut Option<Meta> {
        &mut self.meta
    }
    fn name(&self) -> &str {
        annotated_name!(self)
    }
    /// A node answers to its hostname and to its user-given name.
    fn has_name(&self, reference: &str) -> bool {
        if reference.is_empty() {
            return false;
        }
        let hostname = self
            .description
            .as_ref()
            .map_or("", |d| d.hostname.as_str());
        hostname == reference || self.name() == reference
    }
    fn into_object(self) -> Object {
        Object {
            kind: Some(Kind::Node(self)),
        }
    }
}
