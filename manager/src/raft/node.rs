//! One manager's Raft node: opens the durable log and the state machine,
//! starts openraft with the cluster's tuning, and offers the three things the
//! rest of the manager needs — propose a batch, make a read linearizable, and
//! say who leads.
//!
//! **Invariant:** the store is written only by the state machine applying
//! committed entries; everything else proposes.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::{BasicNode, Config, ReadPolicy, ServerState, SnapshotPolicy};
use rswarm_proto::Proposal;
use thiserror::Error;
use tracing::info;

use super::TypeConfig;
use super::log_store::LogStore;
use super::network::{ChannelCache, NetworkFactory};
use super::state_machine::StateMachine;
use crate::limits::{
    ELECTION_TIMEOUT_MAX, ELECTION_TIMEOUT_MIN, LOG_KEPT_AFTER_SNAPSHOT, MANAGER_UNREACHABLE_AFTER,
    RAFT_HEARTBEAT_INTERVAL, SNAPSHOT_EVERY_ENTRIES,
};
use crate::store::{Store, StoreError};

/// A Raft node ID: random, never reused.
pub type NodeId = u64;

/// The openraft handle of a manager.
pub type ManagerRaft = openraft::Raft<TypeConfig, StateMachine>;

/// Why a proposal or a read did not happen.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RaftNodeError {
    /// Another manager leads (or none does, yet): ask it instead.
    #[error("this manager is not the leader")]
    NotLeader {
        /// The leader's Raft address, when known.
        leader_addr: Option<String>,
    },
    /// The store refused the batch (conflict, missing object, …).
    #[error(transparent)]
    Rejected(#[from] StoreError),
    /// This node leads but cannot reach a quorum.
    #[error("this manager cannot reach a quorum of managers")]
    NoQuorum,
    /// The batch may or may not have been committed (leadership changed
    /// while it was in flight).
    #[error(
        "the outcome of the write is unknown: leadership changed while it was in flight; read the object again before retrying"
    )]
    Indeterminate,
    /// Storage failed or the node is shutting down.
    #[error("raft: {0}")]
    Fatal(String),
    /// The log or state machine could not be opened.
    #[error("cannot open the raft data in {dir}: {reason}")]
    Open {
        /// Which directory.
        dir: String,
        /// What went wrong.
        reason: String,
    },
}

/// What a manager knows about another manager, as seen from the leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerHealth {
    /// This node leads.
    Leader,
    /// Acknowledged the leader recently.
    Reachable,
    /// Has not acknowledged the leader recently.
    Unreachable,
}

/// A started Raft node.
#[derive(Clone)]
pub struct RaftNode {
    raft: ManagerRaft,
    id: NodeId,
    store: Store,
}

fn raft_config() -> Result<Config, String> {
    let config = Config {
        cluster_name: "rswarm".to_string(),
        heartbeat_interval: RAFT_HEARTBEAT_INTERVAL.as_millis() as u64,
        election_timeout_min: ELECTION_TIMEOUT_MIN.as_millis() as u64,
        election_timeout_max: ELECTION_TIMEOUT_MAX.as_millis() as u64,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(SNAPSHOT_EVERY_ENTRIES),
        max_in_snapshot_log_to_keep: LOG_KEPT_AFTER_SNAPSHOT,
        // Snapshots of a large store take more than openraft's 200 ms default.
        install_snapshot_timeout: 30_000,
        enable_pre_vote: Some(true),
        // Replicate entries as soon as they are appended, so the leader's
        // fsync and the followers' overlap instead of running back to back.
        broadcast_submitted_on_append: Some(true),
        ..Config::default()
    };
    config.validate().map_err(|e| e.to_string())
}

impl RaftNode {
    /// Opens (or creates) the Raft data in `dir` and starts the node. A node
    /// whose log is empty waits to be bootstrapped or added by a leader.
    pub async fn open(
        dir: &Path,
        id: NodeId,
        store: Store,
        channels: ChannelCache,
    ) -> Result<Self, RaftNodeError> {
        let open_err = |reason: String| RaftNodeError::Open {
            dir: dir.display().to_string(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
        let log = LogStore::open(dir).map_err(|e| open_err(e.to_string()))?;
        let sm = StateMachine::open(dir, store.clone()).map_err(|e| open_err(e.to_string()))?;
        let config = Arc::new(raft_config().map_err(open_err)?);
        let raft = openraft::Raft::new(id, config, NetworkFactory::new(channels), log, sm)
            .await
            .map_err(|e| open_err(e.to_string()))?;
        Ok(Self { raft, id, store })
    }

    /// Makes this node the single voter of a new cluster and waits until it
    /// leads and its first entry is applied.
    pub async fn bootstrap(&self, addr: String) -> Result<(), RaftNodeError> {
        let members = BTreeMap::from([(self.id, BasicNode { addr })]);
        self.raft
            .initialize(members)
            .await
            .map_err(|e| RaftNodeError::Fatal(e.to_string()))?;
        self.raft
            .wait(Some(Duration::from_secs(10)))
            .state(ServerState::Leader, "bootstrap leader")
            .await
            .map_err(|e| RaftNodeError::Fatal(e.to_string()))?;
        // The initial membership must commit before anything else happens.
        self.raft
            .write_blank()
            .await
            .map_err(|e| RaftNodeError::Fatal(e.to_string()))?;
        info!(raft_id = self.id, "bootstrapped a new raft group");
        Ok(())
    }

    /// The openraft handle.
    pub fn raft(&self) -> &ManagerRaft {
        &self.raft
    }

    /// This node's Raft ID.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The store this node applies to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Proposes a batch on this node, which must lead. Returns the store
    /// version the batch was applied at.
    pub async fn propose(&self, proposal: Proposal) -> Result<u64, RaftNodeError> {
        use openraft::error::ClientWriteError;
        match self.raft.client_write(proposal).await {
            Ok(resp) => resp.data.map_err(RaftNodeError::Rejected),
            Err(e) => match e.api_error() {
                Some(ClientWriteError::ForwardToLeader(f)) => Err(RaftNodeError::NotLeader {
                    leader_addr: f.leader_node.as_ref().map(|n| n.addr.clone()),
                }),
                Some(_) => Err(RaftNodeError::Indeterminate),
                None => Err(RaftNodeError::Fatal(e.to_string())),
            },
        }
    }

    /// Returns once the local store reflects every write committed before the
    /// call (ReadIndex through the leader's quorum).
    pub async fn linearizable_read(&self) -> Result<(), RaftNodeError> {
        use openraft::error::LinearizableReadError;
        match self.raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
            Ok(_) => Ok(()),
            Err(e) => match e.api_error() {
                Some(LinearizableReadError::ForwardToLeader(f)) => Err(RaftNodeError::NotLeader {
                    leader_addr: f.leader_node.as_ref().map(|n| n.addr.clone()),
                }),
                Some(LinearizableReadError::QuorumNotEnough(_)) => Err(RaftNodeError::NoQuorum),
                None => Err(RaftNodeError::Fatal(e.to_string())),
            },
        }
    }

    /// A copy of the current metrics (never hold openraft's borrow across
    /// an await: it can deadlock the Raft core).
    fn metrics(&self) -> openraft::RaftMetrics<TypeConfig> {
        use openraft::async_runtime::WatchReceiver;
        self.raft.metrics().borrow_watched().clone()
    }

    /// Whether this node currently leads.
    pub fn is_leader(&self) -> bool {
        let m = self.metrics();
        m.state == ServerState::Leader
    }

    /// The current leader's ID and Raft address, as this node knows them.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let m = self.metrics();
        let id = m.current_leader?;
        let addr = m.membership_config.get_node(&id)?.addr.clone();
        Some((id, addr))
    }

    /// Raft state of this node: "leader", "follower", "candidate", "learner".
    pub fn state_name(&self) -> &'static str {
        match self.metrics().state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        }
    }

    /// Voters and learners of the current membership, with their addresses.
    pub fn members(&self) -> Members {
        let m = self.metrics();
        let membership = m.membership_config.membership();
        Members {
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            addrs: membership
                .nodes()
                .map(|(id, n)| (*id, n.addr.clone()))
                .collect(),
        }
    }

    /// How each member looks from here; meaningful on the leader only.
    pub fn peer_health(&self) -> BTreeMap<NodeId, PeerHealth> {
        let m = self.metrics();
        let mut out = BTreeMap::new();
        for (id, _) in m.membership_config.nodes() {
            let health = if *id == self.id && m.state == ServerState::Leader {
                PeerHealth::Leader
            } else {
                let acked = m
                    .heartbeat
                    .as_ref()
                    .and_then(|h| h.get(id).cloned().flatten())
                    .map(|t| openraft::Instant::elapsed(&t.into_inner()));
                match acked {
                    Some(age) if age < MANAGER_UNREACHABLE_AFTER => PeerHealth::Reachable,
                    _ => PeerHealth::Unreachable,
                }
            };
            out.insert(*id, health);
        }
        out
    }

    /// Stops the node; its data stays on disk.
    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }
}

/// The Raft membership at one moment.
#[derive(Debug, Clone, Default)]
pub struct Members {
    /// Voting members.
    pub voters: Vec<NodeId>,
    /// Non-voting members catching up.
    pub learners: Vec<NodeId>,
    /// Every member's Raft address.
    pub addrs: BTreeMap<NodeId, String>,
}
