//! Who may call what. Every RPC that arrives over TCP carries the caller's
//! verified certificate (`PeerInfo`); calls on the local unix socket carry
//! none and come from root on this host.
//!
//! **Invariant:** a certificate is honoured only if it belongs to this
//! cluster and its node has not been removed; the role comes from the
//! certificate, which the CA issues from the store.

use rswarm_pki::{NodeSubject, PeerInfo, Role};
use tonic::Status;

use crate::store::Store;

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Caller {
    /// Root on this host, through the local unix socket.
    Local,
    /// A node of this cluster, identified by its certificate.
    Node(NodeSubject),
}

/// Checks callers against this cluster's identity and the store's list of
/// removed nodes.
#[derive(Clone)]
pub struct Authorizer {
    cluster_id: String,
    store: Store,
}

impl Authorizer {
    /// An authorizer for `cluster_id` that consults `store` for removed nodes.
    pub fn new(cluster_id: String, store: Store) -> Self {
        Self { cluster_id, store }
    }

    /// The caller, if it is local or a current node of this cluster.
    pub fn caller(&self, peer: Option<&PeerInfo>) -> Result<Caller, Status> {
        let Some(peer) = peer else {
            return Ok(Caller::Local);
        };
        let Some(subject) = &peer.identity else {
            return Err(Status::unauthenticated(
                "this call needs a node certificate: join the cluster first",
            ));
        };
        if subject.cluster_id != self.cluster_id {
            return Err(Status::permission_denied(format!(
                "certificate of cluster {} is not valid in cluster {}",
                subject.cluster_id, self.cluster_id
            )));
        }
        if self.is_removed(&subject.node_id) {
            return Err(Status::permission_denied(format!(
                "node {} was removed from the cluster: its certificate is refused; \
                 run 'rswarm leave --force' on it and join again with a token",
                subject.node_id
            )));
        }
        Ok(Caller::Node(subject.clone()))
    }

    /// The caller, if it is local or a manager of this cluster.
    pub fn require_manager(&self, peer: Option<&PeerInfo>) -> Result<Caller, Status> {
        let caller = self.caller(peer)?;
        match &caller {
            Caller::Node(subject) if subject.role != Role::Manager => {
                Err(Status::permission_denied(format!(
                    "node {} is a worker: this call needs a manager certificate; \
                     run it on a manager",
                    subject.node_id
                )))
            }
            _ => Ok(caller),
        }
    }

    /// The calling node; local callers are refused (they have no node identity).
    pub fn require_node(&self, peer: Option<&PeerInfo>) -> Result<NodeSubject, Status> {
        match self.caller(peer)? {
            Caller::Node(subject) => Ok(subject),
            Caller::Local => Err(Status::unauthenticated(
                "this call needs a node certificate",
            )),
        }
    }

    fn is_removed(&self, node_id: &str) -> bool {
        self.store.read(|s| {
            s.cluster()
                .is_some_and(|c| c.removed_nodes.iter().any(|r| r.node_id == node_id))
        })
    }
}
