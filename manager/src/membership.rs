//! The role manager: keeps the Raft membership in step with the roles the
//! store asks for. A node that should be a manager is added as a learner,
//! and promoted to voter once it has caught up; a manager being demoted (or
//! removed) leaves the voters — after leadership moves away, if it leads.
//!
//! **Invariants:** one membership change at a time (openraft refuses
//! overlapping ones); a quorum check happens when the demotion is requested
//! (`controlapi`), not here, so this loop never second-guesses an accepted
//! demotion; node IDs are never reused.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::{BasicNode, ChangeMembers};
use rswarm_proto::{NodeRole, NodeState};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::limits::MEMBERSHIP_RECONCILE_PERIOD;
use crate::manager::ManagerContext;
use crate::raft::node::{Members, PeerHealth};
use crate::store::StoreState;

/// One step towards the wanted membership.
#[derive(Debug, PartialEq, Eq)]
pub enum MembershipStep {
    /// Add this node as a learner and wait for it to catch up.
    AddLearner(u64, String),
    /// Make these learners voters.
    Promote(BTreeSet<u64>),
    /// Hand leadership to this voter before this leader leaves.
    TransferLeadership(u64),
    /// Remove these members.
    Remove(BTreeSet<u64>),
}

/// The next step, given the store, the membership and who leads (pure).
pub fn next_step(
    s: &StoreState,
    members: &Members,
    me: u64,
    health: &BTreeMap<u64, PeerHealth>,
) -> Option<MembershipStep> {
    let mut wanted: BTreeMap<u64, (String, bool)> = BTreeMap::new();
    for node in s.nodes() {
        let Some(ms) = node.manager_status.as_ref().filter(|m| m.raft_id != 0) else {
            continue;
        };
        let want = node.spec.as_ref().map(|sp| sp.desired_role) == Some(NodeRole::Manager as i32);
        let ready = node.status.as_ref().map(|st| st.state) == Some(NodeState::Ready as i32);
        wanted.insert(ms.raft_id, (ms.addr.clone(), want && ready));
    }
    let is_member = |id: &u64| members.addrs.contains_key(id);
    // Leaving: members whose node no longer wants to manage, or is gone.
    let leaving: BTreeSet<u64> = members
        .addrs
        .keys()
        .copied()
        .filter(|id| {
            match s.nodes().find_map(|n| {
                n.manager_status
                    .as_ref()
                    .filter(|m| m.raft_id == *id)
                    .map(|_| n)
            }) {
                Some(n) => {
                    n.spec.as_ref().map(|sp| sp.desired_role) != Some(NodeRole::Manager as i32)
                }
                None => s.cluster().is_some(),
            }
        })
        .collect();
    if leaving.contains(&me) {
        let target = members.voters.iter().copied().find(|v| {
            *v != me && !leaving.contains(v) && matches!(health.get(v), Some(PeerHealth::Reachable))
        })?;
        return Some(MembershipStep::TransferLeadership(target));
    }
    if !leaving.is_empty() {
        return Some(MembershipStep::Remove(leaving));
    }
    let learners: BTreeSet<u64> = members
        .learners
        .iter()
        .copied()
        .filter(|id| wanted.get(id).is_some_and(|(_, w)| *w))
        .collect();
    if !learners.is_empty() {
        return Some(MembershipStep::Promote(learners));
    }
    wanted
        .into_iter()
        .find(|(id, (addr, want))| *want && !addr.is_empty() && !is_member(id))
        .map(|(id, (addr, _))| MembershipStep::AddLearner(id, addr))
}

async fn apply_step(ctx: &ManagerContext, step: MembershipStep) -> Result<(), String> {
    let raft = ctx.raft.raft();
    match step {
        MembershipStep::AddLearner(id, addr) => {
            info!(raft_id = id, %addr, "adding manager as learner");
            let add = raft.add_learner(id, BasicNode { addr }, true);
            tokio::time::timeout(Duration::from_secs(30), add)
                .await
                .map_err(|_| format!("learner {id} did not catch up within 30s"))?
                .map_err(|e| e.to_string())?;
        }
        MembershipStep::Promote(ids) => {
            info!(?ids, "promoting learners to voters");
            raft.change_membership(ChangeMembers::AddVoterIds(ids), false)
                .await
                .map_err(|e| e.to_string())?;
        }
        MembershipStep::TransferLeadership(to) => {
            info!(to, "transferring leadership before leaving the managers");
            raft.trigger()
                .transfer_leader(to)
                .await
                .map_err(|e| e.to_string())?;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        MembershipStep::Remove(ids) => {
            info!(?ids, "removing managers from raft");
            let voters: BTreeSet<u64> = ids
                .iter()
                .copied()
                .filter(|id| ctx.raft.members().voters.contains(id))
                .collect();
            if !voters.is_empty() {
                raft.change_membership(ChangeMembers::RemoveVoters(voters), false)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            raft.change_membership(ChangeMembers::RemoveNodes(ids.clone()), false)
                .await
                .map_err(|e| e.to_string())?;
            forget_raft_ids(ctx, &ids).await?;
        }
    }
    Ok(())
}

/// Clears the Raft ID of nodes that left the membership, so that a later
/// promotion gets a fresh one: a removed ID is never reused.
async fn forget_raft_ids(ctx: &ManagerContext, ids: &BTreeSet<u64>) -> Result<(), String> {
    ctx.update_with_retry(|s| {
        Ok(s.nodes()
            .filter(|n| {
                n.manager_status
                    .as_ref()
                    .is_some_and(|m| ids.contains(&m.raft_id))
            })
            .filter(|n| n.spec.as_ref().map(|sp| sp.desired_role) != Some(NodeRole::Manager as i32))
            .map(|n| {
                let mut n = n.clone();
                n.manager_status = None;
                crate::manager::action(
                    rswarm_proto::ActionKind::Update,
                    rswarm_proto::object::Kind::Node(n),
                )
            })
            .collect())
    })
    .await
    .map(|_| ())
    .map_err(|s| s.message().to_string())
}

/// Reconciles Raft membership with the store; runs on every manager and acts
/// only while it leads.
pub async fn reconcile_loop(ctx: Arc<ManagerContext>, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(MEMBERSHIP_RECONCILE_PERIOD) => {}
        }
        if !ctx.raft.is_leader() {
            continue;
        }
        let members = ctx.raft.members();
        let health = ctx.raft.peer_health();
        let step = ctx
            .store
            .read(|s| next_step(s, &members, ctx.raft.id(), &health));
        if let Some(step) = step
            && let Err(e) = apply_step(&ctx, step).await
        {
            warn!("membership change failed, will retry: {e}");
        }
    }
}
