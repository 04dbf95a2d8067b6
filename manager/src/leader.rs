//! Reaching the leader. Every control call runs on the leader: a follower
//! forwards it (once: a forwarded call that finds no leader fails instead of
//! bouncing), and a call that finds no leader within `LEADER_WAIT_MAX` fails
//! with how many managers this one can reach — never a hang.

use std::future::Future;
use std::time::Duration;

use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::limits::{LEADER_WAIT_MAX, MANAGER_PROBE_TIMEOUT, REQUEST_TIMEOUT};
use crate::manager::ManagerContext;
use crate::raft::node::RaftNodeError;
use crate::store::StoreError;

/// Metadata key marking a call a follower forwarded to the leader.
pub const FORWARDED_KEY: &str = "rswarm-forwarded";
/// Metadata key on a redirect: the leader's address.
pub const LEADER_KEY: &str = "rswarm-leader";

/// Where a call runs.
pub enum Route {
    /// Here: this manager leads.
    Local,
    /// On the leader, through this channel.
    Leader(LeaderChannel),
}

/// A channel to the leader, with its address for error messages.
pub struct LeaderChannel {
    /// The leader's address.
    pub addr: String,
    /// The channel to it.
    pub channel: Channel,
}

/// What a failure message says when the call certainly changed nothing.
pub const NOTHING_CHANGED: &str = "nothing was changed";

impl ManagerContext {
    /// Runs a call forwarded to `leader`; when it fails on this side's
    /// transport rather than on the leader, says which leader could not be
    /// reached, how many managers answer, and whether the call may have
    /// reached it: a bare "connection refused" reads as if this manager
    /// were down, and a client must know whether to re-read before
    /// retrying.
    pub async fn forward<T>(
        &self,
        leader: &LeaderChannel,
        call: impl Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        let status = match call.await {
            Ok(answer) => return Ok(answer),
            Err(status) => status,
        };
        if std::error::Error::source(&status).is_none() {
            return Err(status);
        }
        let addr = &leader.addr;
        let why = status.message();
        Err(if rswarm_pki::never_connected(&status) {
            let reachable = self.managers_reachable().await;
            Status::unavailable(format!(
                "cannot connect to the leader at {addr} to forward the call ({why}): \
                 {reachable}; {NOTHING_CHANGED}: retry"
            ))
        } else {
            Status::unavailable(format!(
                "lost the connection to the leader at {addr} while forwarding the call: {why}; \
                 a change it carried may or may not have been applied: read the object again \
                 before retrying"
            ))
        })
    }

    /// Where a call should run; waits briefly for an election in progress.
    pub async fn route(&self, forwarded: bool) -> Result<Route, Status> {
        let deadline = tokio::time::Instant::now() + LEADER_WAIT_MAX;
        loop {
            if self.raft.is_leader() {
                return Ok(Route::Local);
            }
            if let Some((id, addr)) = self.raft.leader()
                && id != self.raft.id()
                && !forwarded
            {
                let channel = self.channels.get(&addr).map_err(|e| {
                    Status::unavailable(format!("cannot reach the leader at {addr}: {e}"))
                })?;
                return Ok(Route::Leader(LeaderChannel { addr, channel }));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(self.no_leader_status().await);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The leader's address (`None`: this manager leads), for calls that
    /// redirect instead of forwarding; waits briefly for an election in
    /// progress. A known leader elsewhere is answered at once: a redirect
    /// must not wait out `LEADER_WAIT_MAX`, or nodes miss heartbeats.
    pub async fn leader_addr(&self) -> Result<Option<String>, Status> {
        let deadline = tokio::time::Instant::now() + LEADER_WAIT_MAX;
        loop {
            if self.raft.is_leader() {
                return Ok(None);
            }
            if let Some((id, addr)) = self.raft.leader()
                && id != self.raft.id()
            {
                return Ok(Some(addr));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(self.no_leader_status().await);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// "cluster has no leader: 1 of 3 managers reachable; …".
    pub async fn no_leader_status(&self) -> Status {
        let reachable = self.managers_reachable().await;
        Status::unavailable(format!("cluster has no leader: {reachable}"))
    }

    /// "1 of 3 managers reachable; a majority (2) must be up to elect one",
    /// counting this manager and every other voter that completes a TLS
    /// handshake (a paused daemon's kernel still accepts TCP connections).
    async fn managers_reachable(&self) -> String {
        let members = self.raft.members();
        let others: Vec<String> = members
            .voters
            .iter()
            .filter(|id| **id != self.raft.id())
            .filter_map(|id| members.addrs.get(id).cloned())
            .collect();
        let probes = others
            .iter()
            .map(|addr| self.channels.answers(addr, MANAGER_PROBE_TIMEOUT));
        let reachable = futures::future::join_all(probes)
            .await
            .into_iter()
            .filter(|ok| *ok)
            .count();
        let total = members.voters.len().max(1);
        let me = usize::from(members.voters.contains(&self.raft.id()));
        format!(
            "{} of {total} managers reachable; a majority ({}) must be up to elect one",
            reachable + me,
            total / 2 + 1
        )
    }
}

impl ManagerContext {
    /// Runs `work` within `REQUEST_TIMEOUT`; a call that runs out of time
    /// reports why (usually: no leader) instead of hanging, and that a change
    /// it carried may have been applied: it may have been proposed already.
    pub async fn bounded<T>(
        &self,
        work: impl Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        match tokio::time::timeout(REQUEST_TIMEOUT, work).await {
            Ok(result) => result,
            Err(_) => {
                let why = self.no_leader_status().await;
                Err(Status::deadline_exceeded(format!(
                    "the call did not finish within {}s ({}); a change it carried may or may not \
                     have been applied: read the object again before retrying",
                    REQUEST_TIMEOUT.as_secs(),
                    why.message()
                )))
            }
        }
    }

    /// Runs a call that identifies its caller by certificate: on the leader
    /// it runs `work`; elsewhere it redirects, since forwarding would lose
    /// the caller's identity.
    pub async fn on_leader_as_caller<T>(
        &self,
        work: impl Future<Output = Result<T, Status>>,
    ) -> Result<Response<T>, Status> {
        if let Some(leader) = self.leader_addr().await? {
            return Err(redirect(&leader));
        }
        self.bounded(work).await.map(Response::new)
    }
}

/// A copy of `req` marked as forwarded, for the leader.
pub fn forwarded<T>(req: Request<T>) -> Request<T> {
    let mut fwd = Request::new(req.into_inner());
    fwd.metadata_mut()
        .insert(FORWARDED_KEY, MetadataValue::from_static("1"));
    fwd
}

/// Whether a follower already forwarded `req`.
pub fn is_forwarded<T>(req: &Request<T>) -> bool {
    req.metadata().contains_key(FORWARDED_KEY)
}

/// A redirect to the leader at `leader`.
pub fn redirect(leader: &str) -> Status {
    let mut status = Status::unavailable("this manager is not the leader: ask the leader");
    if let Ok(v) = leader.parse() {
        status.metadata_mut().insert(LEADER_KEY, v);
    }
    status
}

/// The status a failed proposal or read gives the caller.
pub fn status_from_raft(e: RaftNodeError) -> Status {
    match e {
        RaftNodeError::NotLeader { .. } => {
            Status::unavailable("leadership changed during the call: retry")
        }
        RaftNodeError::Rejected(e) => status_from_store(e),
        RaftNodeError::Indeterminate => Status::unavailable(e.to_string()),
        other => Status::internal(other.to_string()),
    }
}

/// The status a store error gives the caller.
pub fn status_from_store(e: StoreError) -> Status {
    let msg = e.to_string();
    match e {
        StoreError::Conflict { .. } => Status::aborted(msg),
        StoreError::NotFound { .. } | StoreError::NotFoundByReference { .. } => {
            Status::not_found(msg)
        }
        StoreError::AlreadyExists { .. } | StoreError::NameConflict { .. } => {
            Status::already_exists(msg)
        }
        StoreError::Ambiguous { .. } => Status::failed_precondition(msg),
        _ => Status::invalid_argument(msg),
    }
}
