//! A one-manager cluster on a real Raft node for loop tests: the
//! orchestrators' loop runs against it, and a fake scheduler-and-agents loop
//! plays the rest of the cluster (places PENDING tasks on the least loaded
//! ready node, starts them, stops them, fails tasks of [`FAILING_IMAGE`]).

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use rswarm_proto::object::Kind;
use rswarm_proto::{
    ActionKind, Cluster, ClusterSpec, Node, NodeAvailability, NodeDescription, NodeSpec, NodeState,
    NodeStatus, Proposal, Service, ServiceSpec, StoreAction, Task, TaskState, TaskStatus,
};
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::world::{FAILING_IMAGE, image_of, meta};
use crate::manager::{action, now_ms};
use crate::orchestrator::leader_loop;
use crate::orchestrator::nodes::fit_of;
use crate::orchestrator::task::{is_runnable, observed, task_id};
use crate::raft::network::ChannelCache;
use crate::raft::node::RaftNode;
use crate::store::{Store, StoreState};

/// How often the fake agents take a step: each task moves one state per
/// tick, so orders of events are observable.
const AGENT_TICK: Duration = Duration::from_millis(20);

/// The longest a test waits for the cluster to get somewhere.
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);

/// A one-manager cluster with the orchestrators running.
pub struct TestCluster {
    pub raft: RaftNode,
    pub store: Store,
    orchestrators: Option<(CancellationToken, JoinHandle<()>)>,
    agents: CancellationToken,
    _dir: TempDir,
}

impl TestCluster {
    /// Starts Raft, the cluster object (history limit `history`), nodes
    /// `nodes`, the orchestrators and (if `agents`) the fake agents.
    pub async fn start(nodes: &[&str], history: u32, agents: bool) -> Self {
        rswarm_pki::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new();
        let channels = ChannelCache::new(rswarm_pki::bootstrap_client_config());
        let raft = RaftNode::open(dir.path(), 1, store.clone(), channels)
            .await
            .unwrap();
        raft.bootstrap("127.0.0.1:1".to_owned()).await.unwrap();
        let mut cluster = Self {
            raft,
            store,
            orchestrators: None,
            agents: CancellationToken::new(),
            _dir: dir,
        };
        let mut setup = vec![action(
            ActionKind::Create,
            Kind::Cluster(Cluster {
                meta: meta("cluster"),
                spec: Some(ClusterSpec {
                    task_history_limit: history,
                    ..ClusterSpec::default()
                }),
                ..Cluster::default()
            }),
        )];
        setup.extend(
            nodes
                .iter()
                .map(|n| action(ActionKind::Create, Kind::Node(ready_node(n)))),
        );
        cluster.propose(setup).await;
        cluster.start_orchestrators();
        if agents {
            tokio::spawn(fake_agents(
                cluster.store.clone(),
                cluster.raft.clone(),
                cluster.agents.clone(),
            ));
        }
        cluster
    }

    /// Starts the orchestrators' loop (with fresh memory: a new leader).
    pub fn start_orchestrators(&mut self) {
        let cancel = CancellationToken::new();
        let handle = tokio::spawn(leader_loop::run(self.raft.clone(), cancel.clone()));
        self.orchestrators = Some((cancel, handle));
    }

    /// Stops the orchestrators' loop, dropping its memory.
    pub async fn stop_orchestrators(&mut self) {
        if let Some((cancel, handle)) = self.orchestrators.take() {
            cancel.cancel();
            handle.await.unwrap();
        }
    }

    pub async fn propose(&self, actions: Vec<StoreAction>) {
        let proposal = Proposal {
            actions,
            timestamp_ms: now_ms(),
        };
        self.raft.propose(proposal).await.unwrap();
    }

    pub fn read<R>(&self, f: impl FnOnce(&StoreState) -> R) -> R {
        self.store.read(f)
    }

    /// Waits until `check` holds (checked on every store change and every
    /// 50 ms); fails the test with `what` after [`CONVERGE_TIMEOUT`].
    pub async fn wait_for(&self, what: &str, check: impl Fn(&StoreState) -> bool) {
        let deadline = tokio::time::Instant::now() + CONVERGE_TIMEOUT;
        let mut applied = self.store.subscribe_applied();
        loop {
            if self.store.read(&check) {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                let tasks: Vec<String> = self.store.read(|s| s.tasks().map(describe).collect());
                panic!(
                    "timed out waiting for: {what}\ntasks:\n{}",
                    tasks.join("\n")
                );
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), applied.changed()).await;
        }
    }

    pub fn service(&self, name: &str) -> Service {
        self.read(|s| s.service(name).cloned()).unwrap()
    }

    pub async fn create_service(&self, service: Service) {
        self.propose(vec![action(ActionKind::Create, Kind::Service(service))])
            .await;
    }

    /// Changes the service like the control API does.
    pub async fn update_service(&self, name: &str, change: impl FnOnce(&mut ServiceSpec)) {
        let mut service = self.service(name);
        service.previous_spec = service.spec.clone();
        if let Some(spec) = service.spec.as_mut() {
            change(spec);
        }
        service.spec_version += 1;
        service.update_status = None;
        self.propose(vec![action(ActionKind::Update, Kind::Service(service))])
            .await;
    }

    pub async fn set_node(&self, id: &str, state: NodeState, availability: NodeAvailability) {
        let mut node = self.read(|s| s.node(id).cloned()).unwrap();
        if let Some(s) = node.status.as_mut() {
            s.set_state(state);
        }
        if let Some(s) = node.spec.as_mut() {
            s.set_availability(availability);
        }
        self.propose(vec![action(ActionKind::Update, Kind::Node(node))])
            .await;
    }

    pub async fn shutdown(mut self) {
        self.agents.cancel();
        self.stop_orchestrators().await;
        self.raft.shutdown().await;
    }
}

/// Runs `f` with a timeout so a hung test fails instead of hanging CI.
pub async fn bounded<F: Future<Output = ()>>(f: F) {
    tokio::time::timeout(Duration::from_secs(120), f)
        .await
        .expect("test finished within two minutes");
}

pub fn ready_node(id: &str) -> Node {
    let mut status = NodeStatus::default();
    status.set_state(NodeState::Ready);
    Node {
        meta: meta(id),
        spec: Some(NodeSpec::default()),
        description: Some(NodeDescription {
            hostname: id.to_owned(),
            ..NodeDescription::default()
        }),
        status: Some(status),
        ..Node::default()
    }
}

/// One line per task, for failure messages.
pub fn describe(t: &Task) -> String {
    format!(
        "{} slot={} node={} image={} desired={:?} observed={:?} v={}",
        task_id(t),
        t.slot,
        t.node_id,
        image_of(t),
        t.desired_state(),
        observed(t),
        t.spec_version
    )
}

/// The fake scheduler and agents: every tick, each task takes one step.
async fn fake_agents(store: Store, raft: RaftNode, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(AGENT_TICK) => {}
        }
        let updates = store.read(agent_step);
        for batch in updates.chunks(1_000) {
            let proposal = Proposal {
                actions: batch.to_vec(),
                timestamp_ms: now_ms(),
            };
            // A conflict with the orchestrators: the next tick tries again.
            let _ = raft.propose(proposal).await;
        }
    }
}

/// One step of every task: place, start (or fail), hold at READY, stop.
fn agent_step(s: &StoreState) -> Vec<StoreAction> {
    let mut load: HashMap<String, usize> = HashMap::new();
    for task in s
        .tasks()
        .filter(|t| is_runnable(t) && !t.node_id.is_empty())
    {
        *load.entry(task.node_id.clone()).or_default() += 1;
    }
    let mut out = Vec::new();
    for task in s.tasks() {
        let node_down = s
            .node(&task.node_id)
            .is_none_or(|n| n.status.as_ref().map(|st| st.state()) == Some(NodeState::Down));
        let next = next_state(task, node_down);
        let mut task = task.clone();
        if observed(&task) == TaskState::Pending {
            if task.node_id.is_empty() {
                let Some(node) = least_loaded(s, &load) else {
                    continue;
                };
                *load.entry(node.clone()).or_default() += 1;
                task.node_id = node;
            } else if node_down {
                continue;
            }
        }
        let Some(next) = next else {
            continue;
        };
        let mut status = TaskStatus {
            timestamp_ms: now_ms(),
            message: format!("{next:?}").to_lowercase(),
            ..TaskStatus::default()
        };
        status.set_state(next);
        task.status = Some(status);
        out.push(action(ActionKind::Update, Kind::Task(task)));
    }
    out
}

/// The state a task moves to this tick, if any.
fn next_state(task: &Task, node_down: bool) -> Option<TaskState> {
    let state = observed(task);
    let desired = task.desired_state();
    if state == TaskState::Pending {
        return (desired <= TaskState::Running).then_some(TaskState::Assigned);
    }
    if node_down || state > TaskState::Running {
        return None;
    }
    if desired > TaskState::Running {
        return Some(TaskState::Shutdown);
    }
    if desired == TaskState::Ready {
        return (state < TaskState::Ready).then_some(TaskState::Ready);
    }
    if state < TaskState::Running {
        let failing = image_of(task) == FAILING_IMAGE;
        return Some(if failing {
            TaskState::Failed
        } else {
            TaskState::Running
        });
    }
    None
}

fn least_loaded(s: &StoreState, load: &HashMap<String, usize>) -> Option<String> {
    s.nodes()
        .filter(|n| fit_of(n).takes_tasks())
        .filter(|n| n.status.as_ref().map(|st| st.state()) == Some(NodeState::Ready))
        .filter_map(|n| n.meta.as_ref().map(|m| m.id.clone()))
        .min_by_key(|id| (load.get(id).copied().unwrap_or(0), id.clone()))
}
