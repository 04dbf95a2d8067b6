//! [`StoreState`]: the whole cluster state at one version, and the only code
//! that changes it.
//!
//! Invariants:
//! - `version` is the Raft log index of the last applied entry; every stored
//!   object's `meta.version` is at most `version`.
//! - Objects are keyed by `meta.id`; the ID is never empty.
//! - Names of services, networks, secrets and configs are unique within their
//!   kind when not empty (the name index mirrors the objects exactly).
//! - There is at most one cluster object.
//! - [`StoreState::apply`] is deterministic: its result depends only on the
//!   state, the version and the proposal, and a batch applies all or nothing.

use std::collections::btree_map::Values;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use prost::Message;
use rswarm_proto::{
    ActionKind, Cluster, Config, Meta, Network, Node, Object, Proposal, Secret, Service,
    StoreAction, StoreEvent, StoreSnapshot, Task, object::Kind,
};

use super::error::{MatchBy, StoreError, WriteOp};
use super::limits::{OBJECT_SIZE_MAX, PROPOSAL_SIZE_MAX};
use super::object::{GROUP_INDEXES, ObjectKind, StoreObject, TASKS_BY_NODE, TASKS_BY_SERVICE};

/// group key → IDs of the objects in that group.
type GroupIndex = BTreeMap<String, BTreeSet<String>>;

/// The objects of one kind, by ID, with the index of unique names and the
/// kind's secondary indexes (see [`StoreObject::group_keys`]).
#[derive(Debug, Clone, PartialEq)]
struct Table<T> {
    items: BTreeMap<String, T>,
    /// name → ID, only for kinds whose names are unique.
    names: BTreeMap<String, String>,
    groups: [GroupIndex; GROUP_INDEXES],
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Self {
            items: BTreeMap::new(),
            names: BTreeMap::new(),
            groups: Default::default(),
        }
    }
}

impl<T: StoreObject> Table<T> {
    /// Whether a non-empty `name` belongs to an object other than `id`.
    fn name_taken(&self, name: &str, id: &str) -> bool {
        T::UNIQUE_NAME && !name.is_empty() && self.names.get(name).is_some_and(|owner| owner != id)
    }

    /// Stores `new` under `id` (`None` removes) and returns what was there,
    /// keeping the name index in step.
    fn put(&mut self, id: &str, new: Option<T>) -> Option<T> {
        let prev = match new {
            Some(object) => self.items.insert(id.to_owned(), object),
            None => self.items.remove(id),
        };
        self.regroup(id, prev.as_ref());
        if T::UNIQUE_NAME {
            if let Some(p) = &prev
                && self.names.get(p.name()).is_some_and(|owner| owner == id)
            {
                self.names.remove(p.name());
            }
            if let Some(n) = self.items.get(id)
                && !n.name().is_empty()
            {
                self.names.insert(n.name().to_owned(), id.to_owned());
            }
        }
        prev
    }

    /// Moves `id` from the groups of its previous version to those of its
    /// current one.
    fn regroup(&mut self, id: &str, prev: Option<&T>) {
        let new_keys = self.items.get(id).map(StoreObject::group_keys);
        for (i, group) in self.groups.iter_mut().enumerate() {
            let old = prev.map_or("", |p| p.group_keys()[i]);
            let new = new_keys.map_or("", |k| k[i]);
            if old == new {
                continue;
            }
            if !old.is_empty()
                && let Some(ids) = group.get_mut(old)
            {
                ids.remove(id);
                if ids.is_empty() {
                    group.remove(old);
                }
            }
            if !new.is_empty() {
                group
                    .entry(new.to_owned())
                    .or_default()
                    .insert(id.to_owned());
            }
        }
    }

    /// The objects grouped under `key` in secondary index `index`.
    fn grouped<'a>(&'a self, index: usize, key: &str) -> impl Iterator<Item = &'a T> + 'a {
        self.groups[index]
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|id| self.items.get(id))
    }

    /// The user lookup rule: exact ID, else exact name, else unique ID prefix.
    fn find(&self, reference: &str) -> Result<&T, StoreError> {
        let not_found = || StoreError::NotFoundByReference {
            kind: T::KIND,
            reference: reference.to_owned(),
        };
        if reference.is_empty() {
            return Err(not_found());
        }
        if let Some(object) = self.items.get(reference) {
            return Ok(object);
        }
        let named: Vec<&T> = if T::UNIQUE_NAME {
            self.names
                .get(reference)
                .and_then(|id| self.items.get(id))
                .into_iter()
                .collect()
        } else {
            self.items
                .values()
                .filter(|o| o.has_name(reference))
                .collect()
        };
        let ambiguous = |by, matches: Vec<&T>| StoreError::Ambiguous {
            kind: T::KIND,
            by,
            reference: reference.to_owned(),
            matches: matches.into_iter().map(|o| o.id().to_owned()).collect(),
        };
        match named.len() {
            0 => {}
            1 => return Ok(named[0]),
            _ => return Err(ambiguous(MatchBy::Name, named)),
        }
        let prefixed: Vec<&T> = self
            .items
            .range::<str, _>((Bound::Included(reference), Bound::Unbounded))
            .take_while(|(id, _)| id.starts_with(reference))
            .map(|(_, o)| o)
            .collect();
        match prefixed.len() {
            0 => Err(not_found()),
            1 => Ok(prefixed[0]),
            _ => Err(ambiguous(MatchBy::Prefix, prefixed)),
        }
    }
}

/// Where a kind's table lives in the state (used by undo closures).
type TableOf<T> = fn(&mut StoreState) -> &mut Table<T>;

/// Reverts one applied action of a failing batch.
type Undo = Box<dyn FnOnce(&mut StoreState)>;

/// What every action of one batch shares.
struct Batch {
    version: u64,
    timestamp_ms: i64,
}

/// The whole cluster state at one version. See the module doc for its
/// invariants.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreState {
    version: u64,
    clusters: Table<Cluster>,
    nodes: Table<Node>,
    services: Table<Service>,
    tasks: Table<Task>,
    networks: Table<Network>,
    secrets: Table<Secret>,
    configs: Table<Config>,
}

macro_rules! accessors {
    ($($field:ident: $ty:ident, $one:ident, $all:ident, $doc:literal;)*) => {
        impl StoreState {
            $(
                #[doc = concat!("The ", $doc, " with this exact ID.")]
                pub fn $one(&self, id: &str) -> Option<&$ty> {
                    self.$field.items.get(id)
                }
                #[doc = concat!("Every ", $doc, ", in ID order.")]
                pub fn $all(&self) -> Values<'_, String, $ty> {
                    self.$field.items.values()
                }
            )*
        }
    };
}

accessors! {
    nodes: Node, node, nodes, "node";
    services: Service, service, services, "service";
    tasks: Task, task, tasks, "task";
    networks: Network, network, networks, "network";
    secrets: Secret, secret, secrets, "secret";
    configs: Config, config, configs, "config";
}

impl StoreState {
    /// An empty store at version 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// The Raft log index of the last applied entry (0: nothing applied).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The cluster object, once created.
    pub fn cluster(&self) -> Option<&Cluster> {
        self.clusters.items.values().next()
    }

    /// Finds a node by ID, hostname or name, or unique ID prefix.
    pub fn find_node(&self, reference: &str) -> Result<&Node, StoreError> {
        self.nodes.find(reference)
    }

    /// Finds a service by ID, name, or unique ID prefix.
    pub fn find_service(&self, reference: &str) -> Result<&Service, StoreError> {
        self.services.find(reference)
    }

    /// The tasks of one service, in ID order.
    pub fn tasks_of_service<'a>(&'a self, service_id: &str) -> impl Iterator<Item = &'a Task> + 'a {
        self.tasks.grouped(TASKS_BY_SERVICE, service_id)
    }

    /// The tasks assigned to one node, in ID order.
    pub fn tasks_on_node<'a>(&'a self, node_id: &str) -> impl Iterator<Item = &'a Task> + 'a {
        self.tasks.grouped(TASKS_BY_NODE, node_id)
    }

    /// How many tasks the store holds.
    pub fn task_count(&self) -> usize {
        self.tasks.items.len()
    }

    /// Finds a task by ID or unique ID prefix.
    pub fn find_task(&self, reference: &str) -> Result<&Task, StoreError> {
        self.tasks.find(reference)
    }

    /// Finds a network by ID, name, or unique ID prefix.
    pub fn find_network(&self, reference: &str) -> Result<&Network, StoreError> {
        self.networks.find(reference)
    }

    /// Finds a secret by ID, name, or unique ID prefix.
    pub fn find_secret(&self, reference: &str) -> Result<&Secret, StoreError> {
        self.secrets.find(reference)
    }

    /// Finds a config by ID, name, or unique ID prefix.
    pub fn find_config(&self, reference: &str) -> Result<&Config, StoreError> {
        self.configs.find(reference)
    }

    /// A copy of the object of `kind` with this exact ID, wrapped.
    pub fn object(&self, kind: ObjectKind, id: &str) -> Option<Object> {
        fn wrap<T: StoreObject>(o: Option<&T>) -> Option<Object> {
            o.cloned().map(StoreObject::into_object)
        }
        match kind {
            ObjectKind::Cluster => wrap(self.clusters.items.get(id)),
            ObjectKind::Node => wrap(self.node(id)),
            ObjectKind::Service => wrap(self.service(id)),
            ObjectKind::Task => wrap(self.task(id)),
            ObjectKind::Network => wrap(self.network(id)),
            ObjectKind::Secret => wrap(self.secret(id)),
            ObjectKind::Config => wrap(self.config(id)),
        }
    }

    /// How many objects of all kinds the store holds.
    pub fn object_count(&self) -> usize {
        self.clusters.items.len()
            + self.nodes.items.len()
            + self.services.items.len()
            + self.tasks.items.len()
            + self.networks.items.len()
            + self.secrets.items.len()
            + self.configs.items.len()
    }

    /// Moves to `version` without changing any object: for Raft entries
    /// that carry no proposal (blank, membership) or whose batch was refused.
    ///
    /// # Panics
    /// If `version` is below the current version: applying the log out of
    /// order is a bug that must not go unnoticed.
    pub fn advance_to(&mut self, version: u64) {
        assert!(
            version >= self.version,
            "store version must not go back: at {}, asked for {version}",
            self.version
        );
        self.version = version;
    }

    /// Applies a batch at `version` (its Raft log index), all or nothing,
    /// and returns one event per action. On error nothing changes, not even
    /// the version (the caller decides whether the index is consumed: see
    /// [`Self::advance_to`]).
    ///
    /// # Panics
    /// If `version` is not above the current version (our bug: entries are
    /// applied once, in log order).
    pub fn apply(
        &mut self,
        version: u64,
        proposal: &Proposal,
    ) -> Result<Vec<StoreEvent>, StoreError> {
        assert!(
            version > self.version,
            "a batch must apply above the store version: at {}, asked for {version}",
            self.version
        );
        let size = proposal.encoded_len();
        if size > PROPOSAL_SIZE_MAX {
            return Err(too_large(
                "the proposal".to_owned(),
                size,
                PROPOSAL_SIZE_MAX,
            ));
        }
        let batch = Batch {
            version,
            timestamp_ms: proposal.timestamp_ms,
        };
        let mut undo: Vec<Undo> = Vec::new();
        let mut events = Vec::with_capacity(proposal.actions.len());
        for (index, action) in proposal.actions.iter().enumerate() {
            match self.apply_action(index, action, &batch, &mut undo) {
                Ok(event) => events.push(event),
                Err(e) => {
                    for revert in undo.into_iter().rev() {
                        revert(self);
                    }
                    return Err(e);
                }
            }
        }
        self.version = version;
        Ok(events)
    }

    fn apply_action(
        &mut self,
        index: usize,
        action: &StoreAction,
        batch: &Batch,
        undo: &mut Vec<Undo>,
    ) -> Result<StoreEvent, StoreError> {
        let invalid = |reason: String| Err(StoreError::Invalid { reason });
        let Ok(op) = ActionKind::try_from(action.kind) else {
            return invalid(format!(
                "action {index} has an unknown kind ({})",
                action.kind
            ));
        };
        let Some(kind) = action.object.as_ref().and_then(|o| o.kind.as_ref()) else {
            return invalid(format!("action {index} has no object"));
        };
        let size = action.object.as_ref().map_or(0, Message::encoded_len);
        let ctx = ActionCtx { index, op, size };
        match kind {
            Kind::Cluster(o) => self.apply_typed(|s| &mut s.clusters, o, &ctx, batch, undo),
            Kind::Node(o) => self.apply_typed(|s| &mut s.nodes, o, &ctx, batch, undo),
            Kind::Service(o) => self.apply_typed(|s| &mut s.services, o, &ctx, batch, undo),
            Kind::Task(o) => self.apply_typed(|s| &mut s.tasks, o, &ctx, batch, undo),
            Kind::Network(o) => self.apply_typed(|s| &mut s.networks, o, &ctx, batch, undo),
            Kind::Secret(o) => self.apply_typed(|s| &mut s.secrets, o, &ctx, batch, undo),
            Kind::Config(o) => self.apply_typed(|s| &mut s.configs, o, &ctx, batch, undo),
        }
    }

    fn apply_typed<T: StoreObject>(
        &mut self,
        table: TableOf<T>,
        object: &T,
        ctx: &ActionCtx,
        batch: &Batch,
        undo: &mut Vec<Undo>,
    ) -> Result<StoreEvent, StoreError> {
        let kind = T::KIND;
        let id = object.id().to_owned();
        if id.is_empty() {
            return Err(StoreError::Invalid {
                reason: format!("action {} has a {kind} without an id", ctx.index),
            });
        }
        if ctx.size > OBJECT_SIZE_MAX {
            return Err(too_large(format!("{kind} {id}"), ctx.size, OBJECT_SIZE_MAX));
        }
        let t = table(self);
        let current = t.items.get(&id);
        let stamp = |created_at_ms: i64| {
            let mut stored = object.clone();
            *stored.meta_mut() = Some(Meta {
                id: id.clone(),
                version: batch.version,
                created_at_ms,
                updated_at_ms: batch.timestamp_ms,
            });
            stored
        };
        let (stored, event_object) = match ctx.op {
            ActionKind::Create => {
                if current.is_some() {
                    return Err(StoreError::AlreadyExists { kind, id });
                }
                if let (ObjectKind::Cluster, Some(existing)) = (kind, t.items.keys().next()) {
                    return Err(StoreError::Invalid {
                        reason: format!(
                            "the cluster object already exists (id {existing}): update it instead of creating another"
                        ),
                    });
                }
                check_name(t, object, &id)?;
                let stored = stamp(batch.timestamp_ms);
                (Some(stored.clone()), stored.into_object())
            }
            ActionKind::Update => {
                let current = check_version(current, object, WriteOp::Update, &id)?;
                check_name(t, object, &id)?;
                let stored = stamp(
                    current
                        .meta()
                        .map_or(batch.timestamp_ms, |m| m.created_at_ms),
                );
                (Some(stored.clone()), stored.into_object())
            }
            ActionKind::Delete => {
                let current = check_version(current, object, WriteOp::Delete, &id)?;
                (None, current.clone().into_object())
            }
        };
        let prev = t.put(&id, stored);
        undo.push(Box::new(move |s: &mut StoreState| {
            table(s).put(&id, prev);
        }));
        Ok(StoreEvent {
            version: batch.version,
            kind: ctx.op as i32,
            object: Some(event_object),
        })
    }

    /// The whole state as a snapshot: objects by kind (in [`ObjectKind::ALL`]
    /// order), then by ID.
    pub fn to_snapshot(&self) -> StoreSnapshot {
        fn add<T: StoreObject>(out: &mut Vec<Object>, t: &Table<T>) {
            out.extend(t.items.values().cloned().map(StoreObject::into_object));
        }
        let mut objects = Vec::with_capacity(self.object_count());
        add(&mut objects, &self.clusters);
        add(&mut objects, &self.nodes);
        add(&mut objects, &self.services);
        add(&mut objects, &self.tasks);
        add(&mut objects, &self.networks);
        add(&mut objects, &self.secrets);
        add(&mut objects, &self.configs);
        StoreSnapshot {
            version: self.version,
            objects,
        }
    }

    /// Rebuilds a state from a snapshot, checking the invariants (IDs present
    /// and unique, names unique, versions not above the snapshot's).
    pub fn from_snapshot(snapshot: StoreSnapshot) -> Result<StoreState, StoreError> {
        let mut state = StoreState {
            version: snapshot.version,
            ..StoreState::default()
        };
        for (index, object) in snapshot.objects.into_iter().enumerate() {
            match object.kind {
                Some(Kind::Cluster(o)) => state.load(|s| &mut s.clusters, o)?,
                Some(Kind::Node(o)) => state.load(|s| &mut s.nodes, o)?,
                Some(Kind::Service(o)) => state.load(|s| &mut s.services, o)?,
                Some(Kind::Task(o)) => state.load(|s| &mut s.tasks, o)?,
                Some(Kind::Network(o)) => state.load(|s| &mut s.networks, o)?,
                Some(Kind::Secret(o)) => state.load(|s| &mut s.secrets, o)?,
                Some(Kind::Config(o)) => state.load(|s| &mut s.configs, o)?,
                None => {
                    return Err(StoreError::InvalidSnapshot {
                        reason: format!("object {index} has no kind"),
                    });
                }
            }
        }
        Ok(state)
    }

    fn load<T: StoreObject>(&mut self, table: TableOf<T>, object: T) -> Result<(), StoreError> {
        let kind = T::KIND;
        let version = self.version;
        let invalid = |reason: String| Err(StoreError::InvalidSnapshot { reason });
        let id = object.id().to_owned();
        if id.is_empty() {
            return invalid(format!("a {kind} has no id"));
        }
        if object.version() > version {
            return invalid(format!(
                "{kind} {id} has version {}, above the snapshot's {version}",
                object.version()
            ));
        }
        let t = table(self);
        if t.items.contains_key(&id) {
            return invalid(format!("{kind} {id} appears twice"));
        }
        if t.name_taken(object.name(), &id) {
            return invalid(format!(
                "two {} are named \"{}\"",
                kind.plural(),
                object.name()
            ));
        }
        if kind == ObjectKind::Cluster && !t.items.is_empty() {
            return invalid("it has more than one cluster object".to_owned());
        }
        t.put(&id, Some(object));
        Ok(())
    }
}

/// Per-action facts checked before the typed part.
struct ActionCtx {
    index: usize,
    op: ActionKind,
    size: usize,
}

fn too_large(what: String, size: usize, max: usize) -> StoreError {
    StoreError::TooLarge {
        what,
        size: size as u64,
        max: max as u64,
    }
}

fn check_name<T: StoreObject>(t: &Table<T>, object: &T, id: &str) -> Result<(), StoreError> {
    if t.name_taken(object.name(), id) {
        return Err(StoreError::NameConflict {
            kind: T::KIND,
            name: object.name().to_owned(),
        });
    }
    Ok(())
}

/// The stored object, if the writer read its current version.
fn check_version<'a, T: StoreObject>(
    current: Option<&'a T>,
    object: &T,
    op: WriteOp,
    id: &str,
) -> Result<&'a T, StoreError> {
    let Some(current) = current else {
        return Err(StoreError::NotFound {
            kind: T::KIND,
            id: id.to_owned(),
        });
    };
    if current.version() != object.version() {
        return Err(StoreError::Conflict {
            op,
            kind: T::KIND,
            id: id.to_owned(),
            expected: current.version(),
            got: object.version(),
        });
    }
    Ok(current)
}
