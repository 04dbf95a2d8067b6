//! The dispatcher: every node's session with the leader. Nodes heartbeat;
//! the leader keeps the last heartbeat of each node **in memory** and writes
//! to Raft only when a node's status changes (Ready on the first beat after
//! a gap, Down after `HEARTBEATS_MISSED_MAX` missed beats, or after
//! `DISCONNECTED_BEATS_MAX` periods when its assignments stream broke and no
//! beat followed). A follower redirects the node to the leader.
//!
//! - `assignments`: the `Assignments` stream, one store watcher fanned out
//!   to one bounded queue per connected node.
//! - `inputs`: the secrets, configs and registry credentials sent with a
//!   node's tasks, and their removal.
//! - `status`: `UpdateTaskStatus`, every node's reports batched into few
//!   Raft writes; a call returns once its updates are committed.
//!
//! **Invariant:** a new leader gives every node a full grace period before it
//! marks any of them Down, since it has not seen their heartbeats yet.

pub mod assignments;
pub mod inputs;
pub mod status;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rswarm_pki::PeerInfo;
use rswarm_proto::object::Kind;
use rswarm_proto::*;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::{debug, info, warn};

use crate::controlapi::manager_addrs;
use crate::limits::{DISCONNECTED_BEATS_MAX, HEARTBEAT_PERIOD_DEFAULT, HEARTBEATS_MISSED_MAX};
use crate::manager::{ManagerContext, action};
use crate::store::StoreState;

/// What this manager saw of each node while it leads: the last heartbeat,
/// and when the node's assignments stream last broke.
#[derive(Default)]
pub struct Liveness {
    seen: Mutex<HashMap<String, Seen>>,
}

#[derive(Clone, Copy, Default)]
struct Seen {
    beat: Option<Instant>,
    disconnected: Option<Instant>,
}

impl Liveness {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Seen>> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn beat(&self, node_id: &str) {
        let mut seen = self.lock();
        let entry = seen.entry(node_id.to_string()).or_default();
        entry.beat = Some(Instant::now());
        entry.disconnected = None;
    }

    /// The node's assignments stream ended on the node's side (its
    /// connection closed): a dead process closes its sockets at once, so
    /// the node is given one short deadline instead of three periods.
    pub fn disconnected(&self, node_id: &str) {
        self.lock()
            .entry(node_id.to_string())
            .or_default()
            .disconnected = Some(Instant::now());
    }

    fn get(&self, node_id: &str) -> Seen {
        self.lock().get(node_id).copied().unwrap_or_default()
    }

    fn clear(&self) {
        self.lock().clear();
    }
}

/// The cluster's heartbeat period.
pub fn heartbeat_period(s: &StoreState) -> Duration {
    s.cluster()
        .and_then(|c| c.spec.as_ref())
        .map(|spec| Duration::from_millis(spec.heartbeat_period_ms))
        .filter(|d| !d.is_zero())
        .unwrap_or(HEARTBEAT_PERIOD_DEFAULT)
}

/// The dispatcher service.
pub struct DispatcherService {
    ctx: Arc<ManagerContext>,
}

impl DispatcherService {
    /// Serves the dispatcher of the manager behind `ctx`.
    pub fn new(ctx: Arc<ManagerContext>) -> Self {
        Self { ctx }
    }
}

/// The node as it should be after this heartbeat, if that differs from the store.
fn node_after_beat(node: &Node, req: &HeartbeatRequest) -> Option<Node> {
    let ready = NodeStatus {
        state: NodeState::Ready as i32,
        message: String::new(),
        addr: req.advertise_addr.clone(),
    };
    let unchanged = node.status.as_ref() == Some(&ready) && node.description == req.description;
    if unchanged {
        return None;
    }
    let mut updated = node.clone();
    updated.status = Some(ready);
    if req.description.is_some() {
        updated.description = req.description.clone();
    }
    if let Some(m) = updated
        .manager_status
        .as_mut()
        .filter(|m| m.addr.is_empty())
    {
        m.addr = req.advertise_addr.clone();
    }
    Some(updated)
}

async fn heartbeat(
    ctx: Arc<ManagerContext>,
    node_id: String,
    req: HeartbeatRequest,
) -> Result<HeartbeatResponse, Status> {
    let node = ctx
        .store
        .read(|s| s.node(&node_id).cloned())
        // Not removed (authz checked that) but unknown: the store has not
        // caught up with the node's admission yet, so the node retries.
        .ok_or_else(|| Status::not_found(format!("node {node_id} is not known yet: retry")))?;
    ctx.liveness.beat(&node_id);
    if node_after_beat(&node, &req).is_some() {
        ctx.update_with_retry(|s| {
            let Some(current) = s.node(&node_id) else {
                return Ok(vec![]);
            };
            Ok(node_after_beat(current, &req)
                .map(|n| vec![action(ActionKind::Update, Kind::Node(n))])
                .unwrap_or_default())
        })
        .await?;
        info!(node = %node_id, "node is ready");
    }
    let (period, current) = ctx
        .store
        .read(|s| (heartbeat_period(s), s.node(&node_id).cloned()));
    let node = current.unwrap_or(node);
    Ok(HeartbeatResponse {
        period_ms: period.as_millis() as u64,
        managers: manager_addrs(&ctx),
        desired_role: node
            .spec
            .as_ref()
            .map(|s| s.desired_role)
            .unwrap_or_default(),
        raft_id: node.manager_status.as_ref().map(|m| m.raft_id).unwrap_or(0),
    })
}

#[tonic::async_trait]
impl rswarm_proto::dispatcher_server::Dispatcher for DispatcherService {
    async fn heartbeat(
        &self,
        req: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let subject = self
            .ctx
            .authz
            .require_node(req.extensions().get::<PeerInfo>())?;
        self.ctx
            .on_leader_as_caller(heartbeat(
                self.ctx.clone(),
                subject.node_id,
                req.into_inner(),
            ))
            .await
    }

    type AssignmentsStream = assignments::AssignmentsStream;

    async fn assignments(
        &self,
        req: Request<AssignmentsRequest>,
    ) -> Result<Response<Self::AssignmentsStream>, Status> {
        let subject = self
            .ctx
            .authz
            .require_node(req.extensions().get::<PeerInfo>())?;
        self.ctx
            .on_leader_as_caller(assignments::open(self.ctx.clone(), subject.node_id))
            .await
    }

    async fn update_task_status(
        &self,
        req: Request<UpdateTaskStatusRequest>,
    ) -> Result<Response<UpdateTaskStatusResponse>, Status> {
        let subject = self
            .ctx
            .authz
            .require_node(req.extensions().get::<PeerInfo>())?;
        self.ctx
            .on_leader_as_caller(status::update_task_status(
                self.ctx.clone(),
                subject.node_id,
                req.into_inner(),
            ))
            .await
    }
}

/// What the dispatcher's calls and loops share on one manager: the
/// per-node assignment queues and the queue of status updates to commit.
#[derive(Default)]
pub struct DispatcherState {
    /// Connected nodes' assignment queues.
    pub assignments: assignments::AssignmentsHub,
    /// Status updates waiting for their Raft write.
    pub status: status::StatusQueue,
}

/// Nodes that missed too many heartbeats, given when this manager started leading.
fn overdue_nodes(
    ctx: &ManagerContext,
    s: &StoreState,
    leading_since: Instant,
    now: Instant,
) -> Vec<Node> {
    let period = heartbeat_period(s);
    let grace = period * HEARTBEATS_MISSED_MAX;
    let disconnected_grace = period.mul_f64(DISCONNECTED_BEATS_MAX);
    s.nodes()
        .filter(|n| {
            let state = n.status.as_ref().map(|st| st.state).unwrap_or_default();
            state != NodeState::Down as i32
        })
        .filter(|n| {
            let id = n.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("");
            let seen = ctx.liveness.get(id);
            let last = seen.beat.unwrap_or(leading_since).max(leading_since);
            let silent = now.saturating_duration_since(last) > grace;
            let gone = seen
                .disconnected
                .is_some_and(|at| now.saturating_duration_since(at) > disconnected_grace);
            silent || gone
        })
        .cloned()
        .collect()
}

fn mark_down(mut node: Node) -> Node {
    let status = node.status.get_or_insert_with(Default::default);
    status.state = NodeState::Down as i32;
    status.message = "heartbeat failure".to_string();
    node
}

/// Liveness is checked this many times per heartbeat period: a Down node is
/// noticed within a quarter period of its deadline, for a scan of the node
/// table (microseconds at 1,000 nodes).
const LIVENESS_CHECKS_PER_PERIOD: u32 = 4;

/// Marks nodes Down when their heartbeats stop (or their connection broke
/// and no heartbeat followed); runs on every manager and acts only while it
/// leads.
pub async fn liveness_loop(ctx: Arc<ManagerContext>, cancel: CancellationToken) {
    let mut leading_since: Option<Instant> = None;
    loop {
        let period = ctx.store.read(heartbeat_period);
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(period / LIVENESS_CHECKS_PER_PERIOD) => {}
        }
        if !ctx.raft.is_leader() {
            if leading_since.take().is_some() {
                ctx.liveness.clear();
            }
            continue;
        }
        let since = *leading_since.get_or_insert_with(Instant::now);
        let now = Instant::now();
        let overdue = ctx.store.read(|s| overdue_nodes(&ctx, s, since, now));
        for node in overdue {
            let id = node.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default();
            let result = ctx
                .update_with_retry(|s| {
                    let Some(current) = s.node(&id).cloned() else {
                        return Ok(vec![]);
                    };
                    if overdue_nodes(&ctx, s, since, Instant::now())
                        .iter()
                        .all(|n| n.meta != current.meta)
                    {
                        return Ok(vec![]);
                    }
                    Ok(vec![action(
                        ActionKind::Update,
                        Kind::Node(mark_down(current)),
                    )])
                })
                .await;
            match result {
                Ok(Some(_)) => warn!(node = %id, "node is down: heartbeat failure"),
                Ok(None) => debug!(node = %id, "node came back before it was marked down"),
                Err(e) => debug!(node = %id, "could not mark node down: {}", e.message()),
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod test_support;
