//! A store without Raft for decision tests: build nodes, services and tasks,
//! run a pass over a service, commit its changes, play agent and scheduler.

use rswarm_proto::object::Kind;
use rswarm_proto::{
    ActionKind, Annotations, Cluster, ClusterSpec, ContainerSpec, Meta, Node, NodeAvailability,
    NodeDescription, NodeSpec, NodeState, NodeStatus, Proposal, ReplicatedMode, RestartPolicy,
    Service, ServiceSpec, StoreAction, Task, TaskSpec, TaskState, TaskStatus, UpdateConfig,
    service_spec::Mode,
};

use crate::manager::action;
use crate::orchestrator::reconcile::{Ctx, Outcome, ServiceMemory, reconcile_service};
use crate::orchestrator::task::{is_runnable, observed, task_id};
use crate::store::StoreState;

/// Tasks of this image fail as soon as they start.
pub const FAILING_IMAGE: &str = "bad";

/// The image a task runs.
pub fn image_of(task: &Task) -> &str {
    task.spec
        .as_ref()
        .and_then(|s| s.container.as_ref())
        .map_or("", |c| c.image.as_str())
}

/// The store, its clock, and one service's orchestrator memory.
pub struct World {
    pub state: StoreState,
    pub now_ms: i64,
    pub memory: ServiceMemory,
    pub history_limit: usize,
}

pub fn meta(id: &str) -> Option<Meta> {
    Some(Meta {
        id: id.to_owned(),
        ..Meta::default()
    })
}

/// A replicated service spec running `image`, with a restart policy that
/// restarts at once (tests set delays explicitly).
pub fn replicated(name: &str, replicas: u64, image: &str) -> Service {
    Service {
        meta: meta(name),
        spec: Some(ServiceSpec {
            annotations: Some(Annotations {
                name: name.to_owned(),
                ..Annotations::default()
            }),
            task: Some(TaskSpec {
                container: Some(ContainerSpec {
                    image: image.to_owned(),
                    ..ContainerSpec::default()
                }),
                restart: Some(RestartPolicy {
                    delay_ms: Some(0),
                    ..RestartPolicy::default()
                }),
                ..TaskSpec::default()
            }),
            mode: Some(Mode::Replicated(ReplicatedMode { replicas })),
            update: Some(UpdateConfig {
                monitor_ms: Some(0),
                ..UpdateConfig::default()
            }),
            ..ServiceSpec::default()
        }),
        spec_version: 1,
        ..Service::default()
    }
}

impl World {
    pub fn new() -> Self {
        let mut world = Self {
            state: StoreState::new(),
            now_ms: 1_000_000,
            memory: ServiceMemory::default(),
            history_limit: 5,
        };
        world.apply(vec![action(
            ActionKind::Create,
            Kind::Cluster(Cluster {
                meta: meta("cluster"),
                spec: Some(ClusterSpec {
                    task_history_limit: 5,
                    ..ClusterSpec::default()
                }),
                ..Cluster::default()
            }),
        )]);
        world
    }

    /// Applies a batch at the next version, stamped with the world's clock.
    pub fn apply(&mut self, actions: Vec<StoreAction>) {
        let version = self.state.version() + 1;
        let proposal = Proposal {
            actions,
            timestamp_ms: self.now_ms,
        };
        self.state.apply(version, &proposal).expect("batch applies");
    }

    pub fn add_node(&mut self, id: &str) {
        let mut status = NodeStatus::default();
        status.set_state(NodeState::Ready);
        let node = Node {
            meta: meta(id),
            spec: Some(NodeSpec::default()),
            description: Some(NodeDescription {
                hostname: id.to_owned(),
                ..NodeDescription::default()
            }),
            status: Some(status),
            ..Node::default()
        };
        self.apply(vec![action(ActionKind::Create, Kind::Node(node))]);
    }

    pub fn node(&self, id: &str) -> Node {
        self.state.node(id).cloned().expect("node exists")
    }

    pub fn set_node(&mut self, id: &str, state: NodeState, availability: NodeAvailability) {
        let mut node = self.node(id);
        if let Some(s) = node.status.as_mut() {
            s.set_state(state);
        }
        if let Some(s) = node.spec.as_mut() {
            s.set_availability(availability);
        }
        self.apply(vec![action(ActionKind::Update, Kind::Node(node))]);
    }

    pub fn create_service(&mut self, service: Service) {
        self.apply(vec![action(ActionKind::Create, Kind::Service(service))]);
    }

    pub fn service(&self, id: &str) -> Service {
        self.state.service(id).cloned().expect("service exists")
    }

    /// Changes the service like the control API: previous spec kept, spec
    /// version bumped, update status reset.
    pub fn update_service(&mut self, id: &str, change: impl FnOnce(&mut ServiceSpec)) {
        let mut service = self.service(id);
        service.previous_spec = service.spec.clone();
        if let Some(spec) = service.spec.as_mut() {
            change(spec);
        }
        service.spec_version += 1;
        service.update_status = None;
        self.apply(vec![action(ActionKind::Update, Kind::Service(service))]);
    }

    pub fn write_service(&mut self, service: Service) {
        self.apply(vec![action(ActionKind::Update, Kind::Service(service))]);
    }

    /// One pass over the service, without committing it.
    pub fn plan(&mut self, service_id: &str) -> Outcome {
        let ctx = Ctx {
            state: &self.state,
            now_ms: self.now_ms,
            history_limit: self.history_limit,
            may_start_update: true,
        };
        reconcile_service(&ctx, service_id, &mut self.memory, usize::MAX)
    }

    /// One pass over the service, committed; returns the outcome.
    pub fn pass(&mut self, service_id: &str) -> Outcome {
        let mut outcome = self.plan(service_id);
        let changes = std::mem::take(&mut outcome.changes);
        let mut actions: Vec<StoreAction> = changes.slot_groups.into_iter().flatten().collect();
        actions.extend(changes.service);
        if !actions.is_empty() {
            self.apply(actions);
        }
        outcome
    }

    /// Passes until nothing changes (at most 20).
    pub fn settle(&mut self, service_id: &str) {
        for _ in 0..20 {
            let version = self.state.version();
            self.pass(service_id);
            if self.state.version() == version {
                return;
            }
        }
        panic!("service {service_id} did not settle in 20 passes");
    }

    pub fn tasks(&self, service_id: &str) -> Vec<Task> {
        let mut tasks: Vec<Task> = self.state.tasks_of_service(service_id).cloned().collect();
        tasks.sort_by_key(|t| {
            (
                t.slot,
                t.node_id.clone(),
                t.meta.as_ref().map(|m| m.version),
            )
        });
        tasks
    }

    pub fn runnable(&self, service_id: &str) -> Vec<Task> {
        self.tasks(service_id)
            .into_iter()
            .filter(is_runnable)
            .collect()
    }

    /// Slots of the runnable tasks, sorted.
    pub fn runnable_slots(&self, service_id: &str) -> Vec<u64> {
        let mut slots: Vec<u64> = self.runnable(service_id).iter().map(|t| t.slot).collect();
        slots.sort_unstable();
        slots
    }

    /// Sets a task's observed state, as the scheduler or an agent would.
    pub fn set_state(&mut self, id: &str, state: TaskState, node_id: Option<&str>) {
        let mut task = self.state.task(id).cloned().expect("task exists");
        if let Some(node) = node_id {
            task.node_id = node.to_owned();
        }
        let mut status = TaskStatus {
            timestamp_ms: self.now_ms,
            message: format!("{state:?}").to_lowercase(),
            ..TaskStatus::default()
        };
        status.set_state(state);
        task.status = Some(status);
        self.apply(vec![action(ActionKind::Update, Kind::Task(task))]);
    }

    /// Plays scheduler and agents: runnable PENDING tasks go to `node`
    /// (global ones to their own), desired RUNNING tasks run (or fail, when
    /// their image is [`FAILING_IMAGE`]), tasks asked to stop stop.
    pub fn converge_tasks(&mut self, service_id: &str, node: &str) {
        for task in self.tasks(service_id) {
            let id = task_id(&task).to_owned();
            let state = observed(&task);
            let desired = task.desired_state();
            if desired > TaskState::Running && state <= TaskState::Running {
                self.set_state(&id, TaskState::Shutdown, None);
            } else if desired == TaskState::Running && state < TaskState::Running {
                let target = (task.node_id.is_empty() && !node.is_empty()).then_some(node);
                let outcome = if image_of(&task) == FAILING_IMAGE {
                    TaskState::Failed
                } else {
                    TaskState::Running
                };
                self.set_state(&id, outcome, target);
            }
        }
    }

    /// Like [`Self::converge_tasks`], but places each pending task on the
    /// ready, active node with the fewest runnable tasks of the service.
    pub fn converge_spread(&mut self, service_id: &str) {
        for task in self.tasks(service_id) {
            if !task.node_id.is_empty() || observed(&task) != TaskState::Pending {
                continue;
            }
            if !is_runnable(&task) {
                continue;
            }
            let node = self.least_loaded(service_id);
            let id = task_id(&task).to_owned();
            self.set_state(&id, TaskState::Assigned, Some(&node));
        }
        self.converge_tasks(service_id, "");
    }

    fn least_loaded(&self, service_id: &str) -> String {
        let runnable = self.runnable(service_id);
        self.state
            .nodes()
            .filter(|n| crate::orchestrator::nodes::is_usable(n))
            .filter_map(|n| n.meta.as_ref().map(|m| m.id.clone()))
            .min_by_key(|id| {
                let load = runnable.iter().filter(|t| &t.node_id == id).count();
                (load, id.clone())
            })
            .expect("a usable node")
    }
}
