//! The control API: what `rswarm node …`, `service …`, `join-token` and
//! `config …`, `secret …` call. Service calls live in `service.rs`, secrets
//! in `secrets.rs`, log gathering in `logs.rs`.
//!
//! Every call runs on the leader (followers forward it), reads through
//! ReadIndex so it never goes back in time, writes through Raft with the
//! version the caller read, and finishes within `REQUEST_TIMEOUT`.
//! `Watch` is the exception: any manager serves it from its own store.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use rand::Rng;
use rswarm_pki::{JoinToken, PeerInfo};
use rswarm_proto::control_client::ControlClient;
use rswarm_proto::object::Kind;
use rswarm_proto::*;
use tokio_stream::Stream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use tracing::{Instrument, info, info_span};

use crate::leader::{Route, forwarded as forwarded_req, is_forwarded, status_from_store};
use crate::manager::{ManagerContext, action};
use crate::raft::node::PeerHealth;
use crate::store::StoreState;

mod image_pin;
mod logs;
pub mod secrets;
mod service;

pub use logs::task_name;

/// The control API service.
#[derive(Clone)]
pub struct ControlService {
    ctx: Arc<ManagerContext>,
}

impl ControlService {
    /// Serves the control API of the manager behind `ctx`.
    pub fn new(ctx: Arc<ManagerContext>) -> Self {
        Self { ctx }
    }

    /// Authorizes, routes to the leader and bounds the call in time.
    async fn handle<Req, Resp, F, FF, L, LF>(
        &self,
        name: &'static str,
        req: Request<Req>,
        forward: F,
        local: L,
    ) -> Result<Response<Resp>, Status>
    where
        F: FnOnce(ControlClient<Channel>, Request<Req>) -> FF,
        FF: Future<Output = Result<Response<Resp>, Status>>,
        L: FnOnce(Arc<ManagerContext>, Req) -> LF,
        LF: Future<Output = Result<Resp, Status>>,
    {
        self.ctx
            .authz
            .require_manager(req.extensions().get::<PeerInfo>())?;
        let forwarded = is_forwarded(&req);
        let ctx = self.ctx.clone();
        let work = async move {
            match ctx.route(forwarded).await? {
                Route::Leader(leader) => {
                    let call = forward(
                        ControlClient::new(leader.channel.clone()),
                        forwarded_req(req),
                    );
                    ctx.forward(&leader, call).await
                }
                Route::Local => local(ctx, req.into_inner()).await.map(Response::new),
            }
        };
        self.ctx
            .bounded(work.instrument(info_span!("control", call = name)))
            .await
    }
}

fn node_view(node: &Node, health: &std::collections::BTreeMap<u64, PeerHealth>) -> NodeView {
    let raft_id = node.manager_status.as_ref().map(|m| m.raft_id).unwrap_or(0);
    let wants_manager =
        node.spec.as_ref().map(|s| s.desired_role) == Some(NodeRole::Manager as i32);
    let manager_status = match health.get(&raft_id) {
        Some(PeerHealth::Leader) => "Leader",
        Some(PeerHealth::Reachable) => "Reachable",
        Some(PeerHealth::Unreachable) => "Unreachable",
        // Promoted but not a Raft member yet.
        None if wants_manager => "Unreachable",
        None => "",
    };
    NodeView {
        node: Some(node.clone()),
        manager_status: manager_status.to_string(),
    }
}

async fn list_nodes(
    ctx: Arc<ManagerContext>,
    _req: ListNodesRequest,
) -> Result<ListNodesResponse, Status> {
    let nodes = ctx.read(|s| s.nodes().cloned().collect::<Vec<_>>()).await?;
    let health = ctx.raft.peer_health();
    Ok(ListNodesResponse {
        nodes: nodes.iter().map(|n| node_view(n, &health)).collect(),
    })
}

async fn get_node(
    ctx: Arc<ManagerContext>,
    req: GetNodeRequest,
) -> Result<GetNodeResponse, Status> {
    let node = ctx
        .read(|s| s.find_node(&req.reference).cloned())
        .await?
        .map_err(status_from_store)?;
    let health = ctx.raft.peer_health();
    Ok(GetNodeResponse {
        node: Some(node_view(&node, &health)),
    })
}

fn validate_node_spec(spec: &NodeSpec) -> Result<(), Status> {
    NodeRole::try_from(spec.desired_role)
        .map_err(|_| Status::invalid_argument(format!("unknown role {}", spec.desired_role)))?;
    NodeAvailability::try_from(spec.availability).map_err(|_| {
        Status::invalid_argument(format!("unknown availability {}", spec.availability))
    })?;
    if let Some(a) = &spec.annotations {
        for key in a.labels.keys() {
            if key.is_empty() || key.len() > 1024 {
                return Err(Status::invalid_argument(
                    "label keys must be 1 to 1024 characters long",
                ));
            }
        }
    }
    Ok(())
}

/// Refuses a demotion that would leave the remaining managers without a
/// reachable quorum (or without any manager at all).
fn check_demotion(ctx: &ManagerContext, node: &Node) -> Result<(), Status> {
    let raft_id = node.manager_status.as_ref().map(|m| m.raft_id).unwrap_or(0);
    let members = ctx.raft.members();
    if !members.voters.contains(&raft_id) {
        return Ok(());
    }
    let remaining: Vec<u64> = members
        .voters
        .iter()
        .copied()
        .filter(|v| *v != raft_id)
        .collect();
    if remaining.is_empty() {
        return Err(Status::failed_precondition(
            "cannot demote the last manager of the cluster: promote another node first",
        ));
    }
    let health = ctx.raft.peer_health();
    let reachable = remaining
        .iter()
        .filter(|id| {
            matches!(
                health.get(id),
                Some(PeerHealth::Leader | PeerHealth::Reachable)
            )
        })
        .count();
    let quorum = remaining.len() / 2 + 1;
    if reachable < quorum {
        return Err(Status::failed_precondition(format!(
            "demoting this manager would lose quorum: {reachable} of the {} remaining managers \
             are reachable and {quorum} are needed; bring the unreachable managers back or \
             demote them first",
            remaining.len()
        )));
    }
    Ok(())
}

async fn update_node(
    ctx: Arc<ManagerContext>,
    req: UpdateNodeRequest,
) -> Result<UpdateNodeResponse, Status> {
    let spec = req
        .spec
        .ok_or_else(|| Status::invalid_argument("update needs a node spec"))?;
    validate_node_spec(&spec)?;
    ctx.ensure_current().await?;
    let current = ctx
        .store
        .read(|s| s.node(&req.node_id).cloned())
        .ok_or_else(|| Status::not_found(format!("no such node: {}", req.node_id)))?;
    let mut node = current.clone();
    let was_manager =
        current.spec.as_ref().map(|s| s.desired_role) == Some(NodeRole::Manager as i32);
    if was_manager && spec.desired_role == NodeRole::Worker as i32 {
        check_demotion(&ctx, &current)?;
    }
    if !was_manager && spec.desired_role == NodeRole::Manager as i32 {
        let raft_id = node.manager_status.as_ref().map(|m| m.raft_id).unwrap_or(0);
        if raft_id == 0 {
            let addr = node
                .status
                .as_ref()
                .map(|s| s.addr.clone())
                .unwrap_or_default();
            node.manager_status = Some(ManagerStatus {
                raft_id: new_raft_id(),
                addr,
            });
        }
    }
    node.spec = Some(spec);
    if let Some(meta) = node.meta.as_mut() {
        meta.version = req.version;
    }
    let version = ctx
        .propose(vec![action(ActionKind::Update, Kind::Node(node.clone()))])
        .await?;
    info!(node = %req.node_id, version, "node updated");
    let node = ctx
        .store
        .read(|s| s.node(&req.node_id).cloned())
        .unwrap_or(node);
    Ok(UpdateNodeResponse { node: Some(node) })
}

/// A fresh Raft ID: random and non-zero, so it is never reused.
pub fn new_raft_id() -> u64 {
    rand::rng().random_range(1..u64::MAX)
}

async fn remove_node(
    ctx: Arc<ManagerContext>,
    req: RemoveNodeRequest,
) -> Result<RemoveNodeResponse, Status> {
    ctx.ensure_current().await?;
    let (node, cluster) = ctx
        .store
        .read(|s| {
            s.find_node(&req.reference)
                .cloned()
                .map(|n| (n, s.cluster().cloned()))
        })
        .map_err(status_from_store)?;
    let id = node.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default();
    let is_manager = node.spec.as_ref().map(|s| s.desired_role) == Some(NodeRole::Manager as i32)
        || node
            .manager_status
            .as_ref()
            .is_some_and(|m| ctx.raft.members().addrs.contains_key(&m.raft_id));
    if is_manager {
        return Err(Status::failed_precondition(format!(
            "node {id} is a cluster manager and is a member of the raft cluster: \
             demote it first with 'rswarm node demote {id}', then remove it"
        )));
    }
    let ready = node.status.as_ref().map(|s| s.state) == Some(NodeState::Ready as i32);
    if ready && !req.force {
        return Err(Status::failed_precondition(format!(
            "node {id} is not down and can't be removed: stop it, or use --force"
        )));
    }
    let mut cluster = cluster.ok_or_else(|| Status::internal("the store has no cluster object"))?;
    cluster.removed_nodes.push(RemovedNode {
        node_id: id.clone(),
        removed_at_ms: crate::manager::now_ms(),
    });
    ctx.propose(vec![
        action(ActionKind::Delete, Kind::Node(node)),
        action(ActionKind::Update, Kind::Cluster(cluster)),
    ])
    .await?;
    info!(node = %id, "node removed");
    Ok(RemoveNodeResponse {})
}

async fn get_cluster(
    ctx: Arc<ManagerContext>,
    _req: GetClusterRequest,
) -> Result<GetClusterResponse, Status> {
    let (cluster, version) = ctx.read(|s| (s.cluster().cloned(), s.version())).await?;
    let cluster = cluster.ok_or_else(|| Status::internal("the store has no cluster object"))?;
    let members = ctx.raft.members();
    let root = cluster.root_ca.clone().unwrap_or_default();
    Ok(GetClusterResponse {
        cluster_id: cluster
            .meta
            .as_ref()
            .map(|m| m.id.clone())
            .unwrap_or_default(),
        spec: cluster.spec.clone(),
        join_tokens: root.join_tokens.clone(),
        ca_digest: root.ca_digest.clone(),
        created_at_ms: cluster.meta.as_ref().map(|m| m.created_at_ms).unwrap_or(0),
        raft_leader_id: ctx.raft.id(),
        raft_voters: members.voters.clone(),
        raft_learners: members.learners.clone(),
        store_version: version,
        managers: manager_addrs(&ctx),
    })
}

/// Managers' addresses, the leader's first.
pub fn manager_addrs(ctx: &ManagerContext) -> Vec<String> {
    let members = ctx.raft.members();
    let leader = ctx.raft.leader().map(|(_, a)| a);
    let mut addrs: Vec<String> = leader.iter().cloned().collect();
    addrs.extend(
        members
            .addrs
            .values()
            .filter(|a| Some(*a) != leader.as_ref())
            .cloned(),
    );
    addrs
}

async fn rotate_join_token(
    ctx: Arc<ManagerContext>,
    req: RotateJoinTokenRequest,
) -> Result<RotateJoinTokenResponse, Status> {
    let role = NodeRole::try_from(req.role)
        .map_err(|_| Status::invalid_argument("role must be worker or manager"))?;
    ctx.ensure_current().await?;
    let mut tokens = None;
    ctx.update_with_retry(|s: &StoreState| {
        let mut cluster = s
            .cluster()
            .cloned()
            .ok_or_else(|| Status::internal("no cluster object"))?;
        let root = cluster.root_ca.get_or_insert_with(Default::default);
        let fresh = JoinToken::generate(&root.ca_digest).to_string();
        let t = root.join_tokens.get_or_insert_with(Default::default);
        match role {
            NodeRole::Worker => t.worker = fresh,
            NodeRole::Manager => t.manager = fresh,
        }
        tokens = Some(t.clone());
        Ok(vec![action(ActionKind::Update, Kind::Cluster(cluster))])
    })
    .await?;
    info!(role = role.as_str_name(), "join token rotated");
    Ok(RotateJoinTokenResponse {
        join_tokens: tokens,
    })
}

fn validate_config_spec(spec: &ConfigSpec) -> Result<(), Status> {
    let name = spec
        .annotations
        .as_ref()
        .map(|a| a.name.as_str())
        .unwrap_or("");
    secrets::check_file_object(secrets::FileKind::Config, name, spec.data.len())
}

/// A new object ID: 25 characters of base 36, like Docker's.
pub fn new_object_id() -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    (0..25)
        .map(|_| ALPHABET[rng.random_range(0..36)] as char)
        .collect()
}

async fn create_config(
    ctx: Arc<ManagerContext>,
    req: CreateConfigRequest,
) -> Result<CreateConfigResponse, Status> {
    let spec = req
        .spec
        .ok_or_else(|| Status::invalid_argument("create needs a config spec"))?;
    validate_config_spec(&spec)?;
    let id = new_object_id();
    let config = Config {
        meta: Some(Meta {
            id: id.clone(),
            ..Default::default()
        }),
        spec: Some(spec),
    };
    ctx.propose(vec![action(ActionKind::Create, Kind::Config(config))])
        .await?;
    let config = ctx.store.read(|s| s.config(&id).cloned());
    Ok(CreateConfigResponse { config })
}

async fn get_config(
    ctx: Arc<ManagerContext>,
    req: GetConfigRequest,
) -> Result<GetConfigResponse, Status> {
    let config = ctx
        .read(|s| s.find_config(&req.reference).cloned())
        .await?
        .map_err(status_from_store)?;
    Ok(GetConfigResponse {
        config: Some(config),
    })
}

async fn update_config(
    ctx: Arc<ManagerContext>,
    req: UpdateConfigRequest,
) -> Result<UpdateConfigResponse, Status> {
    let spec = req
        .spec
        .ok_or_else(|| Status::invalid_argument("update needs a config spec"))?;
    validate_config_spec(&spec)?;
    // Nodes keep a delivered config by ID: one services use keeps its data.
    // Checked on this node's own store, without a quorum round trip: the
    // proposal below fails unless this node leads, and its version check
    // refuses a config that changed since the caller read it. A service
    // taking the config into use between this check and the commit races it
    // just the same after a linearizable read.
    ctx.store.read(|s| match s.config(&req.config_id) {
        Some(c) if c.spec.as_ref().map(|cs| &cs.data) != Some(&spec.data) => {
            let name = c.spec.as_ref().and_then(|cs| cs.annotations.as_ref());
            let name = name.map_or("", |a| a.name.as_str());
            secrets::refuse_in_use(s, secrets::FileKind::Config, &req.config_id, name)
        }
        _ => Ok(()),
    })?;
    let config = Config {
        meta: Some(Meta {
            id: req.config_id.clone(),
            version: req.version,
            ..Default::default()
        }),
        spec: Some(spec),
    };
    ctx.propose(vec![action(ActionKind::Update, Kind::Config(config))])
        .await?;
    let config = ctx.store.read(|s| s.config(&req.config_id).cloned());
    Ok(UpdateConfigResponse { config })
}

async fn list_configs(
    ctx: Arc<ManagerContext>,
    _req: ListConfigsRequest,
) -> Result<ListConfigsResponse, Status> {
    let configs = ctx.read(|s| s.configs().cloned().collect()).await?;
    Ok(ListConfigsResponse { configs })
}

async fn remove_config(
    ctx: Arc<ManagerContext>,
    req: RemoveConfigRequest,
) -> Result<RemoveConfigResponse, Status> {
    let config = ctx
        .read(|s| {
            let config = s.find_config(&req.reference).map_err(status_from_store)?;
            let id = config.meta.as_ref().map_or("", |m| m.id.as_str());
            secrets::refuse_in_use(s, secrets::FileKind::Config, id, &req.reference)?;
            Ok::<_, Status>(config.clone())
        })
        .await??;
    ctx.propose(vec![action(ActionKind::Delete, Kind::Config(config))])
        .await?;
    Ok(RemoveConfigResponse {})
}

type EventStream = Pin<Box<dyn Stream<Item = Result<StoreEvent, Status>> + Send>>;

#[tonic::async_trait]
impl rswarm_proto::control_server::Control for ControlService {
    async fn list_nodes(
        &self,
        req: Request<ListNodesRequest>,
    ) -> Result<Response<ListNodesResponse>, Status> {
        self.handle(
            "list_nodes",
            req,
            |mut c, r| async move { c.list_nodes(r).await },
            list_nodes,
        )
        .await
    }

    async fn get_node(
        &self,
        req: Request<GetNodeRequest>,
    ) -> Result<Response<GetNodeResponse>, Status> {
        self.handle(
            "get_node",
            req,
            |mut c, r| async move { c.get_node(r).await },
            get_node,
        )
        .await
    }

    async fn update_node(
        &self,
        req: Request<UpdateNodeRequest>,
    ) -> Result<Response<UpdateNodeResponse>, Status> {
        self.handle(
            "update_node",
            req,
            |mut c, r| async move { c.update_node(r).await },
            update_node,
        )
        .await
    }

    async fn remove_node(
        &self,
        req: Request<RemoveNodeRequest>,
    ) -> Result<Response<RemoveNodeResponse>, Status> {
        self.handle(
            "remove_node",
            req,
            |mut c, r| async move { c.remove_node(r).await },
            remove_node,
        )
        .await
    }

    async fn get_cluster(
        &self,
        req: Request<GetClusterRequest>,
    ) -> Result<Response<GetClusterResponse>, Status> {
        self.handle(
            "get_cluster",
            req,
            |mut c, r| async move { c.get_cluster(r).await },
            get_cluster,
        )
        .await
    }

    async fn rotate_join_token(
        &self,
        req: Request<RotateJoinTokenRequest>,
    ) -> Result<Response<RotateJoinTokenResponse>, Status> {
        self.handle(
            "rotate_join_token",
            req,
            |mut c, r| async move { c.rotate_join_token(r).await },
            rotate_join_token,
        )
        .await
    }

    async fn create_config(
        &self,
        req: Request<CreateConfigRequest>,
    ) -> Result<Response<CreateConfigResponse>, Status> {
        self.handle(
            "create_config",
            req,
            |mut c, r| async move { c.create_config(r).await },
            create_config,
        )
        .await
    }

    async fn get_config(
        &self,
        req: Request<GetConfigRequest>,
    ) -> Result<Response<GetConfigResponse>, Status> {
        self.handle(
            "get_config",
            req,
            |mut c, r| async move { c.get_config(r).await },
            get_config,
        )
        .await
    }

    async fn update_config(
        &self,
        req: Request<UpdateConfigRequest>,
    ) -> Result<Response<UpdateConfigResponse>, Status> {
        self.handle(
            "update_config",
            req,
            |mut c, r| async move { c.update_config(r).await },
            update_config,
        )
        .await
    }

    async fn list_configs(
        &self,
        req: Request<ListConfigsRequest>,
    ) -> Result<Response<ListConfigsResponse>, Status> {
        self.handle(
            "list_configs",
            req,
            |mut c, r| async move { c.list_configs(r).await },
            list_configs,
        )
        .await
    }

    async fn remove_config(
        &self,
        req: Request<RemoveConfigRequest>,
    ) -> Result<Response<RemoveConfigResponse>, Status> {
        self.handle(
            "remove_config",
            req,
            |mut c, r| async move { c.remove_config(r).await },
            remove_config,
        )
        .await
    }

    async fn list_tasks(
        &self,
        req: Request<ListTasksRequest>,
    ) -> Result<Response<ListTasksResponse>, Status> {
        self.handle(
            "list_tasks",
            req,
            |mut c, r| async move { c.list_tasks(r).await },
            service::list_tasks,
        )
        .await
    }

    async fn create_service(
        &self,
        req: Request<CreateServiceRequest>,
    ) -> Result<Response<CreateServiceResponse>, Status> {
        self.handle(
            "create_service",
            req,
            |mut c, r| async move { c.create_service(r).await },
            service::create_service,
        )
        .await
    }

    async fn get_service(
        &self,
        req: Request<GetServiceRequest>,
    ) -> Result<Response<GetServiceResponse>, Status> {
        self.handle(
            "get_service",
            req,
            |mut c, r| async move { c.get_service(r).await },
            service::get_service,
        )
        .await
    }

    async fn update_service(
        &self,
        req: Request<UpdateServiceRequest>,
    ) -> Result<Response<UpdateServiceResponse>, Status> {
        self.handle(
            "update_service",
            req,
            |mut c, r| async move { c.update_service(r).await },
            service::update_service,
        )
        .await
    }

    async fn list_services(
        &self,
        req: Request<ListServicesRequest>,
    ) -> Result<Response<ListServicesResponse>, Status> {
        self.handle(
            "list_services",
            req,
            |mut c, r| async move { c.list_services(r).await },
            service::list_services,
        )
        .await
    }

    async fn remove_service(
        &self,
        req: Request<RemoveServiceRequest>,
    ) -> Result<Response<RemoveServiceResponse>, Status> {
        self.handle(
            "remove_service",
            req,
            |mut c, r| async move { c.remove_service(r).await },
            service::remove_service,
        )
        .await
    }

    async fn create_secret(
        &self,
        req: Request<CreateSecretRequest>,
    ) -> Result<Response<CreateSecretResponse>, Status> {
        self.handle(
            "create_secret",
            req,
            |mut c, r| async move { c.create_secret(r).await },
            secrets::create_secret,
        )
        .await
    }

    async fn get_secret(
        &self,
        req: Request<GetSecretRequest>,
    ) -> Result<Response<GetSecretResponse>, Status> {
        self.handle(
            "get_secret",
            req,
            |mut c, r| async move { c.get_secret(r).await },
            secrets::get_secret,
        )
        .await
    }

    async fn update_secret(
        &self,
        req: Request<UpdateSecretRequest>,
    ) -> Result<Response<UpdateSecretResponse>, Status> {
        self.handle(
            "update_secret",
            req,
            |mut c, r| async move { c.update_secret(r).await },
            secrets::update_secret,
        )
        .await
    }

    async fn list_secrets(
        &self,
        req: Request<ListSecretsRequest>,
    ) -> Result<Response<ListSecretsResponse>, Status> {
        self.handle(
            "list_secrets",
            req,
            |mut c, r| async move { c.list_secrets(r).await },
            secrets::list_secrets,
        )
        .await
    }

    async fn remove_secret(
        &self,
        req: Request<RemoveSecretRequest>,
    ) -> Result<Response<RemoveSecretResponse>, Status> {
        self.handle(
            "remove_secret",
            req,
            |mut c, r| async move { c.remove_secret(r).await },
            secrets::remove_secret,
        )
        .await
    }

    type ServiceLogsStream = logs::LogStream;

    async fn service_logs(
        &self,
        req: Request<ServiceLogsRequest>,
    ) -> Result<Response<logs::LogStream>, Status> {
        self.ctx
            .authz
            .require_manager(req.extensions().get::<PeerInfo>())?;
        logs::service_logs(self.ctx.clone(), req.into_inner())
            .await
            .map(Response::new)
    }

    type WatchStream = EventStream;

    async fn watch(&self, req: Request<WatchRequest>) -> Result<Response<EventStream>, Status> {
        self.ctx
            .authz
            .require_manager(req.extensions().get::<PeerInfo>())?;
        let watcher = self
            .ctx
            .store
            .watch(req.get_ref().since_version)
            .map_err(|e| Status::out_of_range(e.to_string()))?;
        let stream = futures::stream::unfold(watcher, |mut watcher| async move {
            let item = watcher.next().await?;
            Some((item.map_err(|e| Status::aborted(e.to_string())), watcher))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
