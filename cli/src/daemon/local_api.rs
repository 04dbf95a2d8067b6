//! The local API on `<run-dir>/rswarm.sock` (mode 0600: root only): init,
//! join, leave and info for this host, and the control API of the local
//! manager. On a node that is not a manager, control calls fail with a
//! message that names the fix.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rswarm_manager::Manager;
use rswarm_manager::bootstrap::{InitOptions, new_cluster};
use rswarm_manager::controlapi::ControlService;
use rswarm_pki::{CredentialsHandle, Role};
use rswarm_proto::control_server::{Control, ControlServer};
use rswarm_proto::local_images_server::LocalImagesServer;
use rswarm_proto::local_node_server::{LocalNode, LocalNodeServer};
use rswarm_proto::local_volumes_server::LocalVolumesServer;
use rswarm_proto::*;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};
use tracing::info;

use super::state::NodeRecord;
use super::volumes::LocalVolumesApi;
use super::{Active, Daemon, MANAGER_JOIN_WAIT_MAX, Phase, deactivate};

/// Largest request on the local socket (the API's limit).
const LOCAL_MESSAGE_SIZE_MAX: usize = 4 * 1024 * 1024;

/// Binds the local socket, refusing to steal it from a running daemon.
pub async fn bind_socket(run_dir: &Path) -> Result<UnixListener> {
    std::fs::create_dir_all(run_dir)
        .with_context(|| format!("cannot create {}", run_dir.display()))?;
    let path = run_dir.join("rswarm.sock");
    if path.exists() {
        if tokio::net::UnixStream::connect(&path).await.is_ok() {
            bail!(
                "another rswarm daemon is already running on {}: stop it, or use another --run-dir",
                path.display()
            );
        }
        std::fs::remove_file(&path)
            .with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
    }
    let listener = UnixListener::bind(&path)
        .with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", path.display()))?;
    Ok(listener)
}

/// Serves the local API until `shutdown` completes.
pub async fn serve(
    daemon: Arc<Daemon>,
    listener: UnixListener,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    tonic::transport::Server::builder()
        .add_service(
            LocalNodeServer::new(LocalApi {
                daemon: daemon.clone(),
            })
            .max_decoding_message_size(LOCAL_MESSAGE_SIZE_MAX),
        )
        .add_service(LocalVolumesServer::new(LocalVolumesApi::new(
            daemon.data.worker_dir(),
        )))
        .add_service(LocalImagesServer::new(super::images_api::ImagesApi {
            store: daemon.images().clone(),
        }))
        .add_service(
            ControlServer::new(LocalControl { daemon })
                .max_decoding_message_size(LOCAL_MESSAGE_SIZE_MAX),
        )
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await
        .context("local API server failed")
}

struct LocalApi {
    daemon: Arc<Daemon>,
}

fn already_member() -> Status {
    Status::failed_precondition(
        "this node is already part of a cluster: run 'rswarm leave' first to leave it",
    )
}

/// The address to advertise: the flag, else the listen address when it is
/// specific, else the source address towards `peer` (or any route).
fn advertise_addr(requested: &str, daemon: &Daemon, peer: Option<&str>) -> Result<String, Status> {
    let port = daemon.config.listen_addr.port();
    let chosen = if !requested.is_empty() {
        requested.to_string()
    } else if let Some(a) = &daemon.config.advertise_addr {
        a.clone()
    } else if !daemon.config.listen_addr.ip().is_unspecified() {
        daemon.config.listen_addr.to_string()
    } else {
        let ip = source_ip_towards(peer.unwrap_or("192.0.2.1:7377")).ok_or_else(|| {
            Status::invalid_argument(
                "cannot pick an address to advertise: this host has no route; use --advertise-addr",
            )
        })?;
        SocketAddr::new(ip, port).to_string()
    };
    with_port(&chosen, port)
}

/// Accepts `ip` or `ip:port`/`host:port`; adds the listen port when absent.
fn with_port(addr: &str, port: u16) -> Result<String, Status> {
    if let Ok(ip) = addr.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port).to_string());
    }
    match addr.rsplit_once(':') {
        Some((host, p)) if !host.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0) => {
            Ok(addr.to_string())
        }
        _ => Err(Status::invalid_argument(format!(
            "invalid address {addr:?}: use ip, ip:port or host:port, e.g. 192.0.2.10:7377"
        ))),
    }
}

/// The local address the kernel would use to reach `peer` (a UDP connect
/// sends nothing).
fn source_ip_towards(peer: &str) -> Option<IpAddr> {
    use std::net::ToSocketAddrs;
    let target = peer.to_socket_addrs().ok()?.next()?;
    let bind: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse().ok()?
    } else {
        "[::]:0".parse().ok()?
    };
    let socket = std::net::UdpSocket::bind(bind).ok()?;
    socket.connect(target).ok()?;
    Some(socket.local_addr().ok()?.ip())
}

fn parse_duration_ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

impl LocalApi {
    async fn init(&self, req: InitRequest) -> Result<InitResponse, Status> {
        let daemon = &self.daemon;
        let mut phase = daemon.phase.lock().await;
        if matches!(*phase, Phase::Active(_)) {
            return Err(already_member());
        }
        let advertise = advertise_addr(&req.advertise_addr, daemon, None)?;
        let cluster = new_cluster(InitOptions {
            advertise_addr: advertise.clone(),
            heartbeat_period: parse_duration_ms(req.heartbeat_period_ms),
            node_cert_expiry: Duration::from_secs(req.node_cert_expiry_secs),
            description: daemon.description(&daemon.drivers()?),
        })
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let record = NodeRecord {
            node_id: cluster.node_id.clone(),
            cluster_id: cluster.cluster_id.clone(),
            advertise_addr: advertise.clone(),
            managers: vec![advertise.clone()],
            raft_id: cluster.raft_id,
        };
        daemon
            .data
            .save(&record, &cluster.credentials)
            .map_err(|e| Status::internal(format!("{e:#}")))?;
        let active = match self.bootstrap(record, &cluster).await {
            Ok(a) => a,
            Err(e) => {
                let _ = daemon.data.wipe();
                return Err(e);
            }
        };
        *phase = Phase::Active(Box::new(active));
        info!(node = %cluster.node_id, cluster = %cluster.cluster_id, "initialized a new cluster");
        Ok(InitResponse {
            node_id: cluster.node_id,
            cluster_id: cluster.cluster_id,
            worker_token: cluster.tokens.worker,
            manager_token: cluster.tokens.manager,
            advertise_addr: advertise,
        })
    }

    async fn bootstrap(
        &self,
        record: NodeRecord,
        cluster: &rswarm_manager::bootstrap::NewCluster,
    ) -> Result<Active, Status> {
        let active = self
            .daemon
            .activate(record, cluster.credentials.clone())
            .await?;
        let Some(manager) = &active.manager else {
            return Err(Status::internal("the first manager did not start"));
        };
        if let Err(e) = manager.bootstrap(cluster).await {
            deactivate(&self.daemon, active, true).await;
            return Err(e);
        }
        Ok(active)
    }

    async fn join(&self, req: JoinRequest) -> Result<JoinResponse, Status> {
        let daemon = &self.daemon;
        let mut phase = daemon.phase.lock().await;
        if matches!(*phase, Phase::Active(_)) {
            return Err(already_member());
        }
        let remote = with_port(req.remote_addr.trim(), 7377)?;
        let advertise = advertise_addr(&req.advertise_addr, daemon, Some(&remote))?;
        let description = daemon.description(&daemon.drivers()?);
        let joined = rswarm_agent::join(&remote, &req.token, &advertise, description)
            .await
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        let mut managers = joined.managers.clone();
        if managers.is_empty() {
            managers.push(remote.clone());
        }
        let record = NodeRecord {
            node_id: joined.node_id.clone(),
            cluster_id: joined.cluster_id.clone(),
            advertise_addr: advertise,
            managers,
            raft_id: joined.raft_id,
        };
        daemon
            .data
            .save(&record, &joined.credentials)
            .map_err(|e| Status::internal(format!("{e:#}")))?;
        let active = daemon.activate(record, joined.credentials.clone()).await?;
        let ctx = active.manager.as_ref().map(Manager::context);
        *phase = Phase::Active(Box::new(active));
        drop(phase);
        if let Some(ctx) = ctx {
            wait_for_voter(&ctx).await?;
        }
        let role = if joined.role == Role::Manager {
            NodeRole::Manager
        } else {
            NodeRole::Worker
        };
        Ok(JoinResponse {
            node_id: joined.node_id,
            role: role as i32,
        })
    }

    async fn leave(&self, req: LeaveRequest) -> Result<LeaveResponse, Status> {
        let daemon = &self.daemon;
        let mut phase = daemon.phase.lock().await;
        let Phase::Active(active) = &*phase else {
            return Err(Status::failed_precondition(
                "this node is not part of a cluster",
            ));
        };
        if active.manager.is_some() && !req.force {
            return Err(Status::failed_precondition(
                "this node is a manager: leaving would take a manager away without changing the \
                 raft membership and can cost the cluster its quorum. Demote it first with \
                 'rswarm node demote <node>', or use --force",
            ));
        }
        let Phase::Active(active) = std::mem::replace(&mut *phase, Phase::Inactive) else {
            return Err(Status::internal("phase changed under the lock"));
        };
        let node_id = active.record.node_id.clone();
        deactivate(daemon, *active, true).await;
        daemon
            .data
            .wipe()
            .map_err(|e| Status::internal(format!("{e:#}")))?;
        info!(node = %node_id, "left the cluster");
        Ok(LeaveResponse {})
    }

    async fn info(&self) -> Result<InfoResponse, Status> {
        let phase = self.daemon.phase.lock().await;
        let mut info = InfoResponse {
            local_node_state: "inactive".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            hostname: self.daemon.config.hostname.clone(),
            data_dir: self.daemon.data.root().display().to_string(),
            ..Default::default()
        };
        if let Phase::Active(active) = &*phase {
            fill_active_info(&mut info, active);
        }
        Ok(info)
    }
}

fn fill_active_info(info: &mut InfoResponse, active: &Active) {
    let status = active.agent.status().borrow().clone();
    info.local_node_state = if status.removed.is_some() {
        "removed"
    } else if status.connected {
        "active"
    } else {
        "pending"
    }
    .into();
    info.node_id = active.record.node_id.clone();
    info.cluster_id = active.record.cluster_id.clone();
    info.role = if status.role == Role::Manager {
        NodeRole::Manager as i32
    } else {
        NodeRole::Worker as i32
    };
    info.advertise_addr = active.record.advertise_addr.clone();
    info.managers = status.managers;
    info.cert_not_after_ms = cert_not_after_ms(&active.creds);
    if let Some(m) = &active.manager {
        let ctx = m.context();
        info.raft_state = ctx.raft.state_name().into();
        info.raft_id = ctx.raft.id();
        info.store_version = ctx.store.version();
    }
}

fn cert_not_after_ms(creds: &CredentialsHandle) -> i64 {
    rswarm_pki::parse_certificate(&creds.current().cert_pem)
        .ok()
        .and_then(|i| i.not_after.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Waits until this new manager votes, so `join` returns a working manager.
async fn wait_for_voter(ctx: &rswarm_manager::ManagerContext) -> Result<(), Status> {
    let deadline = tokio::time::Instant::now() + MANAGER_JOIN_WAIT_MAX;
    while tokio::time::Instant::now() < deadline {
        if ctx.raft.members().voters.contains(&ctx.raft.id()) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(Status::deadline_exceeded(format!(
        "this node joined as a manager but has not become a raft voter within {MANAGER_JOIN_WAIT_MAX:?}; \
         it keeps trying: check 'rswarm node ls' on another manager"
    )))
}

#[tonic::async_trait]
impl LocalNode for LocalApi {
    async fn init(&self, req: Request<InitRequest>) -> Result<Response<InitResponse>, Status> {
        self.init(req.into_inner()).await.map(Response::new)
    }

    async fn join(&self, req: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        self.join(req.into_inner()).await.map(Response::new)
    }

    async fn leave(&self, req: Request<LeaveRequest>) -> Result<Response<LeaveResponse>, Status> {
        self.leave(req.into_inner()).await.map(Response::new)
    }

    async fn info(&self, _req: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        self.info().await.map(Response::new)
    }
}

/// The control API on the local socket: the local manager's, if any.
struct LocalControl {
    daemon: Arc<Daemon>,
}

impl LocalControl {
    fn control(&self) -> Result<ControlService, Status> {
        self.daemon
            .manager()
            .map(ControlService::new)
            .ok_or_else(|| {
                Status::failed_precondition(
                    "this node is not a cluster manager: run the command on a manager, \
                 or make this node one with 'rswarm init' or 'rswarm join' with a manager token",
                )
            })
    }
}

/// Implements `Control` by handing every call to the local manager.
macro_rules! delegate_control {
    ($($method:ident($req:ty) -> $resp:ty;)*) => {
        #[tonic::async_trait]
        impl Control for LocalControl {
            $(
                async fn $method(&self, req: Request<$req>) -> Result<Response<$resp>, Status> {
                    self.control()?.$method(req).await
                }
            )*

            type WatchStream = <ControlService as Control>::WatchStream;
            type ServiceLogsStream = <ControlService as Control>::ServiceLogsStream;

            async fn service_logs(&self, req: Request<ServiceLogsRequest>) -> Result<Response<Self::ServiceLogsStream>, Status> {
                self.control()?.service_logs(req).await
            }

            async fn watch(&self, req: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
                self.control()?.watch(req).await
            }
        }
    };
}

delegate_control! {
    list_nodes(ListNodesRequest) -> ListNodesResponse;
    get_node(GetNodeRequest) -> GetNodeResponse;
    update_node(UpdateNodeRequest) -> UpdateNodeResponse;
    remove_node(RemoveNodeRequest) -> RemoveNodeResponse;
    get_cluster(GetClusterRequest) -> GetClusterResponse;
    rotate_join_token(RotateJoinTokenRequest) -> RotateJoinTokenResponse;
    create_config(CreateConfigRequest) -> CreateConfigResponse;
    create_service(CreateServiceRequest) -> CreateServiceResponse;
    get_service(GetServiceRequest) -> GetServiceResponse;
    update_service(UpdateServiceRequest) -> UpdateServiceResponse;
    list_services(ListServicesRequest) -> ListServicesResponse;
    remove_service(RemoveServiceRequest) -> RemoveServiceResponse;
    get_config(GetConfigRequest) -> GetConfigResponse;
    update_config(UpdateConfigRequest) -> UpdateConfigResponse;
    list_configs(ListConfigsRequest) -> ListConfigsResponse;
    remove_config(RemoveConfigRequest) -> RemoveConfigResponse;
    list_tasks(ListTasksRequest) -> ListTasksResponse;
    create_secret(CreateSecretRequest) -> CreateSecretResponse;
    get_secret(GetSecretRequest) -> GetSecretResponse;
    update_secret(UpdateSecretRequest) -> UpdateSecretResponse;
    list_secrets(ListSecretsRequest) -> ListSecretsResponse;
    remove_secret(RemoveSecretRequest) -> RemoveSecretResponse;
}
