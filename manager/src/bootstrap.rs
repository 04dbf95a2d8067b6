//! `rswarm init`: everything a new cluster starts with — its ID, root CA,
//! join tokens, settings, and the first manager's identity and Node object.

use std::time::Duration;

use rswarm_pki::{JoinToken, NodeCredentials, NodeSubject, Role, RootCa};
use rswarm_proto::object::Kind;
use rswarm_proto::*;
use thiserror::Error;

use crate::ca::new_node;
use crate::controlapi::new_object_id;
use crate::limits::{
    HEARTBEAT_PERIOD_DEFAULT, HEARTBEAT_PERIOD_MAX, HEARTBEAT_PERIOD_MIN, NODE_CERT_EXPIRY_DEFAULT,
    NODE_CERT_EXPIRY_MIN, TASK_HISTORY_DEFAULT,
};
use crate::manager::{Manager, action};

/// Settings chosen at `init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// host:port other nodes reach the first manager on.
    pub advertise_addr: String,
    /// Agent heartbeat period (0: the default).
    pub heartbeat_period: Duration,
    /// Node certificate lifetime (0: the default).
    pub node_cert_expiry: Duration,
    /// The first node's description.
    pub description: NodeDescription,
}

/// Why `init` refused.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum InitError {
    /// A setting is out of range.
    #[error("{0}")]
    Invalid(String),
    /// Making keys or certificates failed.
    #[error(transparent)]
    Pki(#[from] rswarm_pki::PkiError),
}

/// A new cluster, before its first manager starts.
pub struct NewCluster {
    /// The first manager's credentials.
    pub credentials: NodeCredentials,
    /// The first manager's node ID.
    pub node_id: String,
    /// The cluster ID.
    pub cluster_id: String,
    /// The first manager's Raft ID.
    pub raft_id: u64,
    /// The objects the store starts with.
    pub objects: Vec<StoreAction>,
    /// The join tokens.
    pub tokens: JoinTokens,
}

fn or_default(d: Duration, default: Duration) -> Duration {
    if d.is_zero() { default } else { d }
}

/// Makes a new cluster's identity and initial objects.
pub fn new_cluster(opts: InitOptions) -> Result<NewCluster, InitError> {
    let period = or_default(opts.heartbeat_period, HEARTBEAT_PERIOD_DEFAULT);
    if !(HEARTBEAT_PERIOD_MIN..=HEARTBEAT_PERIOD_MAX).contains(&period) {
        return Err(InitError::Invalid(format!(
            "heartbeat period {period:?} is out of range: use {HEARTBEAT_PERIOD_MIN:?} to {HEARTBEAT_PERIOD_MAX:?}"
        )));
    }
    let expiry = or_default(opts.node_cert_expiry, NODE_CERT_EXPIRY_DEFAULT);
    if expiry < NODE_CERT_EXPIRY_MIN {
        return Err(InitError::Invalid(format!(
            "certificate expiry {expiry:?} is too short: the minimum is {NODE_CERT_EXPIRY_MIN:?}"
        )));
    }
    let ca = RootCa::generate()?;
    let digest = ca.digest();
    let tokens = JoinTokens {
        worker: JoinToken::generate(&digest).to_string(),
        manager: JoinToken::generate(&digest).to_string(),
    };
    let cluster_id = new_object_id();
    let node_id = new_object_id();
    let (key_pem, csr_pem) = rswarm_pki::generate_key_and_csr()?;
    let subject = NodeSubject {
        node_id: node_id.clone(),
        role: Role::Manager,
        cluster_id: cluster_id.clone(),
    };
    let cert_pem = ca.sign_node_csr(&csr_pem, &subject, expiry)?;
    let credentials = NodeCredentials {
        ca_cert_pem: ca.cert_pem().to_string(),
        cert_pem,
        key_pem,
    };
    let cluster = Cluster {
        meta: Some(Meta {
            id: cluster_id.clone(),
            ..Default::default()
        }),
        spec: Some(ClusterSpec {
            annotations: Some(Annotations {
                name: "default".into(),
                ..Default::default()
            }),
            heartbeat_period_ms: period.as_millis() as u64,
            node_cert_expiry_secs: expiry.as_secs(),
            task_history_limit: TASK_HISTORY_DEFAULT,
            auto_rebalance: false,
        }),
        root_ca: Some(RootCa_ {
            ca_cert_pem: ca.cert_pem().to_string(),
            ca_key_pem: ca.key_pem().to_string(),
            ca_digest: digest,
            join_tokens: Some(tokens.clone()),
        }),
        removed_nodes: vec![],
    };
    let mut node = new_node(
        &node_id,
        Role::Manager,
        &opts.advertise_addr,
        Some(opts.description),
    );
    let raft_id = node.manager_status.as_ref().map(|m| m.raft_id).unwrap_or(0);
    node.status = Some(NodeStatus {
        state: NodeState::Unknown as i32,
        message: "initializing".into(),
        addr: opts.advertise_addr.clone(),
    });
    Ok(NewCluster {
        credentials,
        node_id,
        cluster_id,
        raft_id,
        objects: vec![
            action(ActionKind::Create, Kind::Cluster(cluster)),
            action(ActionKind::Create, Kind::Node(node)),
        ],
        tokens,
    })
}

use rswarm_proto::RootCa as RootCa_;

impl Manager {
    /// Starts the Raft group of a new cluster on this (pristine) manager and
    /// writes the cluster's first objects.
    pub async fn bootstrap(&self, cluster: &NewCluster) -> Result<(), tonic::Status> {
        let ctx = self.context();
        ctx.secrets_key
            .create()
            .map_err(|e| tonic::Status::internal(format!("cannot make the secrets key: {e}")))?;
        ctx.raft
            .bootstrap(ctx.advertise_addr.clone())
            .await
            .map_err(crate::leader::status_from_raft)?;
        ctx.propose(cluster.objects.clone()).await?;
        Ok(())
    }
}
