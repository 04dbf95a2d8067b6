//! Joining a cluster: download the root CA from any manager, check it
//! against the digest in the join token **before trusting it**, then send a
//! certificate request with the token over TLS verified by that CA. The
//! token decides the role; the manager decides the identity.

use rswarm_pki::{
    JoinToken, MANAGER_SERVER_NAME, NodeCredentials, Role, anonymous_client_config,
    bootstrap_client_config, ca_digest, generate_key_and_csr, tls_channel,
};
use rswarm_proto::ca_client::CaClient;
use rswarm_proto::{
    GetRootCaCertificateRequest, IssueNodeCertificateRequest, NodeDescription, NodeRole,
};
use thiserror::Error;
use tracing::{info, warn};

use crate::limits::{CA_DOWNLOAD_ATTEMPTS, CALL_TIMEOUT};

/// What a successful join gives the node.
#[derive(Debug, Clone)]
pub struct Joined {
    /// Its key, certificate and the cluster's CA.
    pub credentials: NodeCredentials,
    /// Its node ID.
    pub node_id: String,
    /// The cluster's ID.
    pub cluster_id: String,
    /// Its role.
    pub role: Role,
    /// Its Raft ID, when it joined as a manager.
    pub raft_id: u64,
    /// Managers' addresses, leader first.
    pub managers: Vec<String>,
}

/// Why a join failed. Messages are shown to users as-is.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum JoinError {
    /// The token is malformed.
    #[error(transparent)]
    Token(#[from] rswarm_pki::TokenError),
    /// The manager could not be reached.
    #[error("cannot reach a manager at {addr}: {reason}; check the address and that port is open")]
    Unreachable {
        /// The address tried.
        addr: String,
        /// What failed.
        reason: String,
    },
    /// The CA the manager served does not match the token.
    #[error(
        "the CA certificate served by {addr} does not match the join token: the token is for \
         another cluster (or something is intercepting the connection); check the token and address"
    )]
    CaMismatch {
        /// The address tried.
        addr: String,
    },
    /// The manager refused the token or the request.
    #[error("{0}")]
    Refused(String),
    /// Keys or certificates could not be made.
    #[error(transparent)]
    Pki(#[from] rswarm_pki::PkiError),
}

/// Joins the cluster whose manager listens at `remote` (host:port).
pub async fn join(
    remote: &str,
    token: &str,
    advertise_addr: &str,
    description: NodeDescription,
) -> Result<Joined, JoinError> {
    let parsed: JoinToken = token.trim().parse()?;
    let ca_pem = download_ca(remote).await?;
    if ca_digest(&ca_pem)? != parsed.ca_digest {
        return Err(JoinError::CaMismatch {
            addr: remote.to_string(),
        });
    }
    let (key_pem, csr_pem) = generate_key_and_csr()?;
    let channel = tls_channel(
        remote,
        anonymous_client_config(&ca_pem)?,
        MANAGER_SERVER_NAME,
    )?;
    let request = IssueNodeCertificateRequest {
        token: token.trim().to_string(),
        csr_pem,
        advertise_addr: advertise_addr.to_string(),
        description: Some(description),
    };
    let mut client = CaClient::new(channel);
    let call = client.issue_node_certificate(request);
    let resp = tokio::time::timeout(CALL_TIMEOUT * 3, call)
        .await
        .map_err(|_| JoinError::Unreachable {
            addr: remote.into(),
            reason: "the manager did not answer in time".into(),
        })?
        .map_err(|s| match s.code() {
            tonic::Code::Unavailable if s.message().contains("no leader") => {
                JoinError::Refused(s.message().to_string())
            }
            tonic::Code::Unavailable => JoinError::Unreachable {
                addr: remote.into(),
                reason: s.message().into(),
            },
            _ => JoinError::Refused(s.message().to_string()),
        })?
        .into_inner();
    let role = if resp.role == NodeRole::Manager as i32 {
        Role::Manager
    } else {
        Role::Worker
    };
    info!(node = %resp.node_id, role = role.as_str(), "joined the cluster");
    Ok(Joined {
        credentials: NodeCredentials {
            ca_cert_pem: ca_pem,
            cert_pem: resp.cert_pem,
            key_pem,
        },
        node_id: resp.node_id,
        cluster_id: resp.cluster_id,
        role,
        raft_id: resp.raft_id,
        managers: resp.managers,
    })
}

/// Fetches the root CA without verifying the server: the caller checks it
/// against the token's digest before using it.
async fn download_ca(remote: &str) -> Result<String, JoinError> {
    let mut last = String::new();
    for attempt in 1..=CA_DOWNLOAD_ATTEMPTS {
        let channel = tls_channel(remote, bootstrap_client_config(), MANAGER_SERVER_NAME)?;
        let mut client = CaClient::new(channel);
        let call = client.get_root_ca_certificate(GetRootCaCertificateRequest {});
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(resp)) => return Ok(resp.into_inner().ca_cert_pem),
            Ok(Err(status)) => last = status.message().to_string(),
            Err(_) => last = "timed out".to_string(),
        }
        warn!(attempt, "cannot download the root CA from {remote}: {last}");
        if attempt < CA_DOWNLOAD_ATTEMPTS {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }
    Err(JoinError::Unreachable {
        addr: remote.to_string(),
        reason: last,
    })
}
