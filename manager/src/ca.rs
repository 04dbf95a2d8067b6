//! The cluster CA: hands out the root certificate, admits joining nodes that
//! present a valid join token, and renews node certificates.
//!
//! **Invariants:** the role in a certificate comes from the store, never from
//! the request; a token is compared in constant time with both current
//! tokens; a manager certificate is issued only to a node the store wants as
//! a manager, and a worker certificate only once the node has left Raft.

use std::sync::Arc;
use std::time::Duration;

use rswarm_pki::{JoinToken, NodeSubject, PeerInfo, Role, RootCa, tokens_match};
use rswarm_proto::object::Kind;
use rswarm_proto::*;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::controlapi::{manager_addrs, new_object_id, new_raft_id};
use crate::leader::{Route, forwarded as forwarded_req, is_forwarded};
use crate::manager::{ManagerContext, action};

/// The CA service.
pub struct CaService {
    ctx: Arc<ManagerContext>,
}

impl CaService {
    /// Serves the CA of the manager behind `ctx`.
    pub fn new(ctx: Arc<ManagerContext>) -> Self {
        Self { ctx }
    }
}

/// Signs a certificate for `subject` with the store's root CA.
fn sign(cluster: &Cluster, csr_pem: &str, subject: &NodeSubject) -> Result<String, Status> {
    let root = cluster
        .root_ca
        .as_ref()
        .ok_or_else(|| Status::internal("the cluster has no root CA"))?;
    let ca = RootCa::from_pem(&root.ca_cert_pem, &root.ca_key_pem)
        .map_err(|e| Status::internal(format!("the cluster's root CA is unusable: {e}")))?;
    let expiry = cluster
        .spec
        .as_ref()
        .map(|s| Duration::from_secs(s.node_cert_expiry_secs))
        .filter(|d| !d.is_zero())
        .unwrap_or(crate::limits::NODE_CERT_EXPIRY_DEFAULT);
    ca.sign_node_csr(csr_pem, subject, expiry)
        .map_err(|e| Status::invalid_argument(format!("cannot sign the certificate request: {e}")))
}

/// Which role a token grants, or why it grants none.
pub fn role_for_token(cluster: &Cluster, token: &str) -> Result<Role, Status> {
    let parsed: JoinToken = token
        .parse()
        .map_err(|e: rswarm_pki::TokenError| Status::invalid_argument(e.to_string()))?;
    let root = cluster
        .root_ca
        .as_ref()
        .ok_or_else(|| Status::internal("the cluster has no root CA"))?;
    if parsed.ca_digest != root.ca_digest {
        return Err(Status::permission_denied(
            "the join token belongs to another cluster: its CA digest does not match this \
             cluster's; get a token from this cluster with 'rswarm join-token worker'",
        ));
    }
    let tokens = root.join_tokens.clone().unwrap_or_default();
    if tokens_match(token, &tokens.manager) {
        return Ok(Role::Manager);
    }
    if tokens_match(token, &tokens.worker) {
        return Ok(Role::Worker);
    }
    Err(Status::permission_denied(
        "the join token is not valid in this cluster (it may have been rotated): get the \
         current one with 'rswarm join-token worker' or 'rswarm join-token manager' on a manager",
    ))
}

fn proto_role(role: Role) -> NodeRole {
    match role {
        Role::Worker => NodeRole::Worker,
        Role::Manager => NodeRole::Manager,
    }
}

/// The Node object a newly admitted node starts as.
pub fn new_node(id: &str, role: Role, addr: &str, description: Option<NodeDescription>) -> Node {
    let hostname = description
        .as_ref()
        .map(|d| d.hostname.clone())
        .unwrap_or_default();
    let manager_status = (role == Role::Manager).then(|| ManagerStatus {
        raft_id: new_raft_id(),
        addr: addr.to_string(),
    });
    Node {
        meta: Some(Meta {
            id: id.to_string(),
            ..Default::default()
        }),
        spec: Some(NodeSpec {
            annotations: Some(Annotations {
                name: hostname,
                ..Default::default()
            }),
            desired_role: proto_role(role) as i32,
            availability: NodeAvailability::Active as i32,
        }),
        description,
        status: Some(NodeStatus {
            state: NodeState::Unknown as i32,
            message: "joined, waiting for its first heartbeat".to_string(),
            addr: addr.to_string(),
        }),
        manager_status,
        role: proto_role(role) as i32,
    }
}

/// A manager admitted straight through the store, already Ready (the role
/// manager adds only Ready managers to Raft), and its Raft ID: for
/// benchmarks and fixtures that skip the join.
pub fn new_ready_manager(id: &str, addr: &str) -> (Node, u64) {
    let mut node = new_node(id, Role::Manager, addr, None);
    node.status = Some(NodeStatus {
        state: NodeState::Ready as i32,
        message: String::new(),
        addr: addr.to_string(),
    });
    let raft_id = node.manager_status.as_ref().map_or(0, |m| m.raft_id);
    (node, raft_id)
}

fn validate_addr(addr: &str) -> Result<(), Status> {
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0) => {
            Ok(())
        }
        _ => Err(Status::invalid_argument(format!(
            "invalid advertise address {addr:?}: use host:port, e.g. 192.0.2.10:7377"
        ))),
    }
}

async fn issue(
    ctx: Arc<ManagerContext>,
    req: IssueNodeCertificateRequest,
) -> Result<IssueNodeCertificateResponse, Status> {
    validate_addr(&req.advertise_addr)?;
    let cluster = ctx
        .read(|s| s.cluster().cloned())
        .await?
        .ok_or_else(|| Status::internal("the store has no cluster object"))?;
    let role = role_for_token(&cluster, &req.token)?;
    let node_id = new_object_id();
    let subject = NodeSubject {
        node_id: node_id.clone(),
        role,
        cluster_id: ctx.cluster_id.clone(),
    };
    let cert_pem = sign(&cluster, &req.csr_pem, &subject)?;
    let node = new_node(&node_id, role, &req.advertise_addr, req.description);
    let raft_id = node.manager_status.as_ref().map(|m| m.raft_id).unwrap_or(0);
    ctx.propose(vec![action(ActionKind::Create, Kind::Node(node))])
        .await?;
    info!(node = %node_id, role = role.as_str(), addr = %req.advertise_addr, "node joined");
    Ok(IssueNodeCertificateResponse {
        node_id,
        cluster_id: ctx.cluster_id.clone(),
        role: proto_role(role) as i32,
        cert_pem,
        managers: manager_addrs(&ctx),
        raft_id,
    })
}

/// The role a node's renewed certificate carries: manager as soon as the
/// store wants one; worker only once the node is out of the Raft membership,
/// so a manager never loses its certificate while it still votes.
fn renewed_role(ctx: &ManagerContext, node: &Node) -> Role {
    let desired = node
        .spec
        .as_ref()
        .map(|s| s.desired_role)
        .unwrap_or_default();
    if desired == NodeRole::Manager as i32 {
        return Role::Manager;
    }
    let raft_id = node.manager_status.as_ref().map(|m| m.raft_id).unwrap_or(0);
    if raft_id != 0 && ctx.raft.members().addrs.contains_key(&raft_id) {
        Role::Manager
    } else {
        Role::Worker
    }
}

async fn renew(
    ctx: Arc<ManagerContext>,
    subject: NodeSubject,
    req: RenewNodeCertificateRequest,
) -> Result<RenewNodeCertificateResponse, Status> {
    ctx.ensure_current().await?;
    let (node, cluster) = ctx
        .store
        .read(|s| (s.node(&subject.node_id).cloned(), s.cluster().cloned()));
    let node = node.ok_or_else(|| {
        Status::permission_denied(format!(
            "node {} is not part of the cluster",
            subject.node_id
        ))
    })?;
    let cluster = cluster.ok_or_else(|| Status::internal("the store has no cluster object"))?;
    let role = renewed_role(&ctx, &node);
    let new_subject = NodeSubject {
        role,
        ..subject.clone()
    };
    let cert_pem = sign(&cluster, &req.csr_pem, &new_subject)?;
    if node.role != proto_role(role) as i32 {
        let id = subject.node_id.clone();
        ctx.update_with_retry(|s| {
            let Some(mut n) = s.node(&id).cloned() else {
                return Ok(vec![]);
            };
            n.role = proto_role(role) as i32;
            Ok(vec![action(ActionKind::Update, Kind::Node(n))])
        })
        .await?;
    }
    info!(node = %subject.node_id, role = role.as_str(), "certificate renewed");
    Ok(RenewNodeCertificateResponse {
        role: proto_role(role) as i32,
        cert_pem,
    })
}

#[tonic::async_trait]
impl rswarm_proto::ca_server::Ca for CaService {
    async fn get_root_ca_certificate(
        &self,
        _req: Request<GetRootCaCertificateRequest>,
    ) -> Result<Response<GetRootCaCertificateResponse>, Status> {
        let pem = self
            .ctx
            .store
            .read(|s| {
                s.cluster()
                    .and_then(|c| c.root_ca.as_ref())
                    .map(|r| r.ca_cert_pem.clone())
            })
            .ok_or_else(|| {
                Status::unavailable("this manager has not caught up with the cluster yet: retry")
            })?;
        Ok(Response::new(GetRootCaCertificateResponse {
            ca_cert_pem: pem,
        }))
    }

    async fn issue_node_certificate(
        &self,
        req: Request<IssueNodeCertificateRequest>,
    ) -> Result<Response<IssueNodeCertificateResponse>, Status> {
        let forwarded = is_forwarded(&req);
        let ctx = self.ctx.clone();
        let work = async move {
            match ctx.route(forwarded).await? {
                Route::Leader(leader) => {
                    let mut ca = rswarm_proto::ca_client::CaClient::new(leader.channel.clone());
                    ctx.forward(&leader, ca.issue_node_certificate(forwarded_req(req)))
                        .await
                }
                Route::Local => issue(ctx, req.into_inner()).await.map(Response::new),
            }
        };
        self.ctx
            .bounded(work)
            .await
            .inspect_err(|s| warn!(code = ?s.code(), "join refused: {}", s.message()))
    }

    async fn renew_node_certificate(
        &self,
        req: Request<RenewNodeCertificateRequest>,
    ) -> Result<Response<RenewNodeCertificateResponse>, Status> {
        let subject = self
            .ctx
            .authz
            .require_node(req.extensions().get::<PeerInfo>())?;
        self.ctx
            .on_leader_as_caller(renew(self.ctx.clone(), subject, req.into_inner()))
            .await
    }
}
