//! A running manager: its Raft node, the gRPC services it offers other nodes,
//! and the leader loops (node liveness, Raft membership), all owned by one
//! supervisor and stopped together.
//!
//! **Invariant:** leader loops act only while this node leads; they run on
//! every manager and check leadership on each pass, so an election needs no
//! start/stop choreography.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rswarm_pki::CredentialsHandle;
use rswarm_proto::{
    ActionKind, Object, Proposal, StoreAction, ca_server::CaServer, control_server::ControlServer,
    dispatcher_server::DispatcherServer, raft_server::RaftServer,
    secrets_key_server::SecretsKeyServer,
};
use thiserror::Error;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::Status;
use tonic::service::Routes;
use tracing::info;

use crate::authz::Authorizer;
use crate::ca::CaService;
use crate::controlapi::ControlService;
use crate::dispatcher::{DispatcherService, DispatcherState, Liveness};
use crate::leader::status_from_raft;
use crate::limits::{API_MESSAGE_SIZE_MAX, CONFLICT_RETRIES_MAX, RAFT_MESSAGE_SIZE_MAX};
use crate::raft::network::{ChannelCache, RaftService};
use crate::raft::node::{RaftNode, RaftNodeError};
use crate::secrets_key::{KeyHolder, KeyService, SealError};
use crate::store::{Store, StoreError, StoreState};

/// What a manager needs to start.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// Where the Raft log, vote and snapshots live.
    pub raft_dir: PathBuf,
    /// This node's Raft ID.
    pub raft_id: u64,
    /// This node's cluster ID (from its certificate).
    pub cluster_id: String,
    /// This node's ID (from its certificate).
    pub node_id: String,
    /// host:port other nodes reach this manager on.
    pub advertise_addr: String,
    /// How this node reaches registries, to pin services' image digests.
    pub registry: rswarm_image::RegistryConfig,
}

/// Why a manager did not start.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ManagerError {
    /// The Raft node failed.
    #[error(transparent)]
    Raft(#[from] RaftNodeError),
    /// The TLS setup failed.
    #[error(transparent)]
    Pki(#[from] rswarm_pki::PkiError),
    /// The secrets key file cannot be read.
    #[error(transparent)]
    SecretsKey(#[from] SealError),
}

/// Everything the manager's services and loops share.
pub struct ManagerContext {
    /// This manager's Raft node.
    pub raft: RaftNode,
    /// The replicated store (read side).
    pub store: Store,
    /// Checks callers.
    pub authz: Authorizer,
    /// Channels to other managers.
    pub channels: ChannelCache,
    /// This node's credentials (the CA signs with the store's key, not these).
    pub creds: CredentialsHandle,
    /// Heartbeats seen by this manager while it leads.
    pub liveness: Liveness,
    /// Assignment streams and status updates in flight.
    pub dispatcher: DispatcherState,
    /// This node's ID.
    pub node_id: String,
    /// This cluster's ID.
    pub cluster_id: String,
    /// host:port this manager is reached on.
    pub advertise_addr: String,
    /// The key secrets are sealed with (see `secrets_key`).
    pub secrets_key: KeyHolder,
    /// How this node reaches registries, to pin services' image digests.
    pub registry: rswarm_image::RegistryConfig,
}

/// Milliseconds since the Unix epoch, for proposal timestamps.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// One store change for a proposal.
pub fn action(kind: ActionKind, object: rswarm_proto::object::Kind) -> StoreAction {
    StoreAction {
        kind: kind as i32,
        object: Some(Object { kind: Some(object) }),
    }
}

impl ManagerContext {
    /// Proposes a batch on this node (which must lead).
    pub async fn propose(&self, actions: Vec<StoreAction>) -> Result<u64, Status> {
        let proposal = Proposal {
            actions,
            timestamp_ms: now_ms(),
        };
        match self.raft.propose(proposal).await {
            Ok(version) => Ok(version),
            Err(e) => Err(self.status_from_raft(e).await),
        }
    }

    /// The status for a failed proposal or read; says how many managers are
    /// reachable when the trouble is a missing quorum or leader.
    pub async fn status_from_raft(&self, e: RaftNodeError) -> Status {
        match e {
            RaftNodeError::NoQuorum | RaftNodeError::NotLeader { leader_addr: None } => {
                self.no_leader_status().await
            }
            other => status_from_raft(other),
        }
    }

    /// Makes the local store reflect every write committed before the call.
    pub async fn ensure_current(&self) -> Result<(), Status> {
        match self.raft.linearizable_read().await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.status_from_raft(e).await),
        }
    }

    /// Makes the local store current (ReadIndex), then reads it.
    pub async fn read<R>(&self, f: impl FnOnce(&StoreState) -> R) -> Result<R, Status> {
        self.ensure_current().await?;
        Ok(self.store.read(f))
    }

    /// Read-modify-write with retries on conflicts: `plan` sees the current
    /// state and returns the actions to propose (none: nothing to do).
    pub async fn update_with_retry<F>(&self, mut plan: F) -> Result<Option<u64>, Status>
    where
        F: FnMut(&StoreState) -> Result<Vec<StoreAction>, Status>,
    {
        for _ in 0..CONFLICT_RETRIES_MAX {
            let actions = self.store.read(&mut plan)?;
            if actions.is_empty() {
                return Ok(None);
            }
            let proposal = Proposal {
                actions,
                timestamp_ms: now_ms(),
            };
            match self.raft.propose(proposal).await {
                Ok(v) => return Ok(Some(v)),
                Err(RaftNodeError::Rejected(StoreError::Conflict { .. })) => continue,
                Err(e) => return Err(status_from_raft(e)),
            }
        }
        Err(Status::aborted(
            "too many concurrent changes to the same object: retry later",
        ))
    }
}

/// A running manager.
pub struct Manager {
    ctx: Arc<ManagerContext>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl Manager {
    /// Opens the Raft data and starts the node and the leader loops.
    pub async fn start(
        config: ManagerConfig,
        creds: CredentialsHandle,
    ) -> Result<Manager, ManagerError> {
        Self::start_with(config, creds, true).await
    }

    /// Like [`Self::start`], without the orchestrators when
    /// `orchestrate` is false: for tests whose fixtures write tasks
    /// themselves and play the orchestrator's part.
    pub(crate) async fn start_with(
        config: ManagerConfig,
        creds: CredentialsHandle,
        orchestrate: bool,
    ) -> Result<Manager, ManagerError> {
        let secrets_key = KeyHolder::open(&config.raft_dir)?;
        let store = Store::default();
        let channels = ChannelCache::new(rswarm_pki::client_config(&creds)?);
        let raft = RaftNode::open(
            &config.raft_dir,
            config.raft_id,
            store.clone(),
            channels.clone(),
        )
        .await?;
        let ctx = Arc::new(ManagerContext {
            authz: Authorizer::new(config.cluster_id.clone(), store.clone()),
            raft,
            store,
            channels,
            creds,
            liveness: Liveness::default(),
            dispatcher: DispatcherState::default(),
            node_id: config.node_id,
            cluster_id: config.cluster_id,
            advertise_addr: config.advertise_addr,
            secrets_key,
            registry: config.registry,
        });
        let manager = Manager {
            ctx,
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
        };
        manager.spawn_loops(orchestrate);
        info!(raft_id = config.raft_id, "manager started");
        Ok(manager)
    }

    fn spawn_loops(&self, orchestrate: bool) {
        let (ctx, cancel) = (self.ctx.clone(), self.cancel.clone());
        self.tasks
            .spawn(crate::dispatcher::liveness_loop(ctx, cancel));
        let (ctx, cancel) = (self.ctx.clone(), self.cancel.clone());
        self.tasks
            .spawn(crate::membership::reconcile_loop(ctx, cancel));
        self.tasks
            .spawn(crate::scheduler::run(self.ctx.clone(), self.cancel.clone()));
        let (ctx, cancel) = (self.ctx.clone(), self.cancel.clone());
        self.tasks
            .spawn(crate::dispatcher::assignments::fan_out_loop(ctx, cancel));
        let (ctx, cancel) = (self.ctx.clone(), self.cancel.clone());
        self.tasks
            .spawn(crate::dispatcher::status::commit_loop(ctx, cancel));
        let (ctx, cancel) = (self.ctx.clone(), self.cancel.clone());
        self.tasks
            .spawn(crate::secrets_key::fetch_loop(ctx, cancel));
        if orchestrate {
            let (ctx, cancel) = (self.ctx.clone(), self.cancel.clone());
            self.tasks.spawn(crate::orchestrator::run(ctx, cancel));
        }
    }

    /// The state shared by the services and loops.
    pub fn context(&self) -> Arc<ManagerContext> {
        self.ctx.clone()
    }

    /// The gRPC services this manager offers other nodes over mutual TLS.
    pub fn routes(&self) -> Routes {
        let raft = RaftServer::new(RaftService::new(
            self.ctx.raft.raft().clone(),
            self.ctx.authz.clone(),
        ))
        .max_decoding_message_size(RAFT_MESSAGE_SIZE_MAX)
        .max_encoding_message_size(RAFT_MESSAGE_SIZE_MAX);
        let mut routes = Routes::new(raft);
        routes = routes.add_service(self.control_server());
        routes = routes.add_service(
            CaServer::new(CaService::new(self.ctx.clone()))
                .max_decoding_message_size(API_MESSAGE_SIZE_MAX),
        );
        routes = routes.add_service(SecretsKeyServer::new(KeyService::new(self.ctx.clone())));
        routes.add_service(
            DispatcherServer::new(DispatcherService::new(self.ctx.clone()))
                .max_decoding_message_size(API_MESSAGE_SIZE_MAX),
        )
    }

    /// The control API, also served on the daemon's local socket.
    pub fn control_server(&self) -> ControlServer<ControlService> {
        ControlServer::new(ControlService::new(self.ctx.clone()))
            .max_decoding_message_size(API_MESSAGE_SIZE_MAX)
            .max_encoding_message_size(crate::limits::RAFT_MESSAGE_SIZE_MAX)
    }

    /// Stops the loops and the Raft node; data stays on disk.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        self.ctx.raft.shutdown().await;
        info!("manager stopped");
    }
}
