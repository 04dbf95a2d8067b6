//! `rswarm daemon`: the process every host runs. It serves the local API on
//! `<run-dir>/rswarm.sock`, and once the node is part of a cluster it runs
//! the agent session and — while the node's certificate says manager — a
//! manager with its mutual-TLS listener.
//!
//! **Invariants:** one phase at a time (`Inactive` or `Active`), changed only
//! under the phase lock; the manager runs exactly while the certificate's
//! role is manager; nothing on disk is removed except by `leave` or after
//! this node left the Raft membership.

mod images_api;
mod local_api;
mod oci;
mod server;
pub mod state;
mod volumes;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Result;
use rswarm_agent::runtime::{Drivers, ProcessRuntime, ProcessRuntimeConfig, Runtime, ShimCommand};
use rswarm_agent::worker::{Worker, WorkerConfig};
use rswarm_agent::{Agent, AgentConfig};
use rswarm_manager::{Manager, ManagerConfig, ManagerContext};
use rswarm_pki::{CredentialsHandle, NodeCredentials, Role};
use rswarm_proto::agent_server::AgentServer;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tonic::Status;
use tracing::{error, info, warn};

use server::ClusterServer;
use state::{DataDir, NodeRecord};

/// How the daemon was started.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Where state lives.
    pub data_dir: PathBuf,
    /// Where sockets live.
    pub run_dir: PathBuf,
    /// The cluster port's listen address.
    pub listen_addr: SocketAddr,
    /// host:port to advertise, if set on the command line.
    pub advertise_addr: Option<String>,
    /// This node's hostname.
    pub hostname: String,
    /// How this node reaches registries (`--insecure-registry`).
    pub registry: rswarm_image::RegistryConfig,
}

/// A node that is part of a cluster.
struct Active {
    record: NodeRecord,
    creds: CredentialsHandle,
    agent: Agent,
    worker: Worker,
    manager: Option<Manager>,
    /// The cluster listener, serving what this node's role offers.
    server: Option<ClusterServer>,
    watcher: JoinHandle<()>,
}

enum Phase {
    Inactive,
    Active(Box<Active>),
}

/// The daemon's state, shared by the local API and the role watcher.
pub struct Daemon {
    config: DaemonConfig,
    data: DataDir,
    phase: Mutex<Phase>,
    /// The running manager, for the local control API (read without the phase lock).
    manager_ctx: RwLock<Option<Arc<ManagerContext>>>,
    /// This node's images, under `<data-dir>/images`.
    images: rswarm_image::ImageStore,
}

/// Runs the daemon until SIGINT or SIGTERM.
pub async fn run(config: DaemonConfig) -> Result<()> {
    rswarm_pki::install_crypto_provider();
    let listener = local_api::bind_socket(&config.run_dir).await?;
    let images =
        rswarm_image::ImageStore::open(config.data_dir.join("images"), config.registry.clone())
            .map_err(|e| anyhow::anyhow!("cannot open the image store: {e}"))?;
    let daemon = Arc::new(Daemon {
        data: DataDir::new(config.data_dir.clone()),
        config,
        phase: Mutex::new(Phase::Inactive),
        manager_ctx: RwLock::new(None),
        images,
    });
    daemon.resume().await?;
    info!(socket = %daemon.config.run_dir.join("rswarm.sock").display(), "daemon ready");
    local_api::serve(daemon.clone(), listener, shutdown_signal()).await?;
    daemon.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            error!("cannot listen for SIGTERM: {e}");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    info!("shutting down");
}

impl Daemon {
    /// Picks up a cluster membership left on disk.
    async fn resume(self: &Arc<Self>) -> Result<()> {
        let Some((record, creds)) = self.data.load()? else {
            info!("not part of a cluster: waiting for 'rswarm init' or 'rswarm join'");
            return Ok(());
        };
        info!(node = %record.node_id, cluster = %record.cluster_id, "resuming cluster membership");
        let active = self
            .activate(record, creds)
            .await
            .map_err(|s| anyhow::anyhow!(s.message().to_string()))?;
        *self.phase.lock().await = Phase::Active(Box::new(active));
        Ok(())
    }

    /// Starts the agent (and the manager, for a manager certificate).
    async fn activate(
        self: &Arc<Self>,
        record: NodeRecord,
        creds: NodeCredentials,
    ) -> Result<Active, Status> {
        let creds = CredentialsHandle::new(creds).map_err(|e| Status::internal(e.to_string()))?;
        let manager = if creds.subject().role == Role::Manager {
            Some(self.start_manager(&record, &creds).await?)
        } else {
            None
        };
        let drivers = self.drivers()?;
        let agent = Agent::start(
            AgentConfig {
                advertise_addr: record.advertise_addr.clone(),
                description: self.description(&drivers),
                managers: record.managers.clone(),
                certs_dir: self.data.certs_dir(),
            },
            creds.clone(),
        );
        let worker = Worker::start(WorkerConfig {
            state_dir: self.data.worker_dir(),
            creds: creds.clone(),
            session: agent.status(),
            drivers,
        })
        .map_err(|e| {
            Status::internal(format!(
                "cannot open the worker's state in {}: {e}",
                self.data.worker_dir().display()
            ))
        })?;
        let watcher = tokio::spawn(watch_role(self.clone(), agent.status()));
        let mut active = Active {
            record,
            creds,
            agent,
            worker,
            manager,
            server: None,
            watcher,
        };
        self.restart_server(&mut active).await?;
        Ok(active)
    }

    /// (Re)starts the cluster listener with the routes of the node's
    /// current role.
    async fn restart_server(&self, active: &mut Active) -> Result<(), Status> {
        let mut wait_in_use = Duration::ZERO;
        if let Some(old) = active.server.take() {
            old.stop().await;
            wait_in_use = server::REBIND_WAIT;
        }
        let agent = AgentServer::new(active.worker.service())
            .max_decoding_message_size(rswarm_manager::limits::API_MESSAGE_SIZE_MAX);
        let routes = match &active.manager {
            Some(manager) => manager.routes().add_service(agent),
            None => tonic::service::Routes::new(agent),
        };
        let server =
            ClusterServer::start(self.config.listen_addr, &active.creds, routes, wait_in_use)
                .await
                .map_err(|e| Status::internal(format!("{e:#}")))?;
        active.server = Some(server);
        Ok(())
    }

    /// The task runtimes this node offers.
    fn drivers(&self) -> Result<Drivers, Status> {
        let shim = ShimCommand::current_exe().map_err(|e| {
            Status::internal(format!("cannot find this executable to run shims: {e}"))
        })?;
        let process = ProcessRuntime::new(ProcessRuntimeConfig::new(
            self.data.worker_dir(),
            shim.clone(),
        ))
        .map_err(|e| Status::internal(format!("cannot start the process driver: {e}")))?;
        let images: Arc<dyn rswarm_agent::runtime::oci::ImageSource> =
            Arc::new(oci::NodeImages(self.images.clone()));
        match oci::oci_driver(&self.data.worker_dir(), shim, images) {
            Ok(oci) => Ok(Drivers::new([Arc::new(process) as Arc<dyn Runtime>, oci])),
            Err(reason) => {
                warn!("this node does not offer the oci driver: {reason}");
                Ok(
                    Drivers::new([Arc::new(process) as Arc<dyn Runtime>])
                        .unavailable("oci", reason),
                )
            }
        }
    }

    /// What this node tells the managers about itself.
    fn description(&self, drivers: &Drivers) -> rswarm_proto::NodeDescription {
        rswarm_agent::description::describe(&self.config.hostname, drivers)
    }

    async fn start_manager(
        &self,
        record: &NodeRecord,
        creds: &CredentialsHandle,
    ) -> Result<Manager, Status> {
        let internal = |e: anyhow::Error| Status::internal(format!("{e:#}"));
        self.data
            .check_raft_cluster(&record.cluster_id)
            .map_err(internal)?;
        self.data
            .stamp_raft_cluster(&record.cluster_id)
            .map_err(internal)?;
        let config = ManagerConfig {
            raft_dir: self.data.raft_dir(),
            raft_id: record.raft_id,
            cluster_id: record.cluster_id.clone(),
            node_id: record.node_id.clone(),
            advertise_addr: record.advertise_addr.clone(),
            registry: self.config.registry.clone(),
        };
        let manager = Manager::start(config, creds.clone())
            .await
            .map_err(|e| Status::internal(format!("cannot start the manager: {e}")))?;
        *self.manager_ctx.write().unwrap_or_else(|e| e.into_inner()) = Some(manager.context());
        Ok(manager)
    }

    async fn stop_manager(&self, manager: Manager) {
        *self.manager_ctx.write().unwrap_or_else(|e| e.into_inner()) = None;
        manager.shutdown().await;
    }

    /// This node's image store (what the `oci` driver runs images from).
    pub fn images(&self) -> &rswarm_image::ImageStore {
        &self.images
    }

    /// The running manager, if any.
    pub fn manager(&self) -> Option<Arc<ManagerContext>> {
        self.manager_ctx
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Follows the certificate's role: starts or stops the manager.
    async fn reconcile_role(&self, status: &rswarm_agent::AgentStatus) {
        let mut phase = self.phase.lock().await;
        let Phase::Active(active) = &mut *phase else {
            return;
        };
        if status.raft_id != 0
            && status.raft_id != active.record.raft_id
            && active.manager.is_none()
        {
            active.record.raft_id = status.raft_id;
        }
        if !status.managers.is_empty() && status.managers != active.record.managers {
            active.record.managers = status.managers.clone();
        }
        if let Err(e) = self.data.save_record(&active.record) {
            warn!("cannot save the node record: {e:#}");
        }
        match (status.role, active.manager.is_some()) {
            (Role::Manager, false) => {
                info!(
                    raft_id = active.record.raft_id,
                    "promoted: starting the manager"
                );
                match self.start_manager(&active.record, &active.creds).await {
                    Ok(m) => active.manager = Some(m),
                    Err(e) => error!("cannot start the manager: {}", e.message()),
                }
                if let Err(e) = self.restart_server(active).await {
                    error!("cannot serve the manager: {}", e.message());
                }
            }
            (Role::Worker, true) => {
                info!("demoted: stopping the manager");
                if let Some(m) = active.manager.take() {
                    if let Some(server) = active.server.take() {
                        server.stop().await;
                    }
                    self.stop_manager(m).await;
                }
                if let Err(e) = self.restart_server(active).await {
                    error!("cannot restart the cluster listener: {}", e.message());
                }
                if let Err(e) = self.data.wipe_raft() {
                    warn!("cannot remove the old raft data: {e:#}");
                }
            }
            _ => {}
        }
    }

    async fn shutdown(&self) {
        let mut phase = self.phase.lock().await;
        if let Phase::Active(active) = std::mem::replace(&mut *phase, Phase::Inactive) {
            deactivate(self, *active, false).await;
        }
    }
}

/// Stops the node's cluster work. Its tasks keep running under their shims
/// unless the node `leaving` the cluster, which stops and removes them.
async fn deactivate(daemon: &Daemon, active: Active, leaving: bool) {
    active.watcher.abort();
    if leaving {
        active.worker.remove_all().await;
    } else {
        active.worker.stop().await;
    }
    active.agent.stop().await;
    if let Some(server) = active.server {
        server.stop().await;
    }
    if let Some(m) = active.manager {
        daemon.stop_manager(m).await;
    }
}

async fn watch_role(
    daemon: Arc<Daemon>,
    mut status: tokio::sync::watch::Receiver<rswarm_agent::AgentStatus>,
) {
    let mut last = status.borrow().clone();
    loop {
        if status.changed().await.is_err() {
            return;
        }
        let now = status.borrow_and_update().clone();
        if now.role != last.role || now.managers != last.managers || now.raft_id != last.raft_id {
            daemon.reconcile_role(&now).await;
        }
        if now.removed.is_some() && last.removed.is_none() {
            warn!("this node was removed from the cluster; run 'rswarm leave --force' to reset it");
        }
        last = now;
    }
}

/// How long `join` waits for a new manager to become a Raft voter.
const MANAGER_JOIN_WAIT_MAX: Duration = Duration::from_secs(60);
