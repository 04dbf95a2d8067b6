//! The scheduler's leader loop: follows the store, and while this manager
//! leads, places pending tasks and writes the decisions through Raft.
//!
//! Shape (the same as every leader loop): on becoming leader, a full scan
//! finds every pending task; then store events keep the pending set
//! current (see `queue`). When there is work, the loop waits a short
//! debounce for more, reads the store once, runs the pure
//! [`Scheduler`](super::Scheduler), and proposes the updates in bounded
//! batches. A batch that meets a conflict (a task changed meanwhile) is
//! re-read and retried in the next pass; any other failure ends the term's
//! state and starts again from a full scan.
//!
//! **Invariants:** acts only while leading, and re-checks leadership (and
//! its term) before each pass; never proposes a task it did not read in the
//! same pass; its own writes never wake it (no write storms).

use std::collections::BTreeSet;
use std::sync::Arc;

use openraft::ServerState;
use openraft::async_runtime::WatchReceiver;
use rswarm_proto::{Proposal, Task};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, field, info, info_span, warn};

use super::limits::{DEBOUNCE, LEADERSHIP_POLL_PERIOD, RETRY_PERIOD};
use super::nodeinfo::is_pending;
use super::placement::{Decision, Scheduler};
use super::queue::PendingQueue;
use super::writes::{TaskWrite, into_batches, task_writes};
use crate::manager::{ManagerContext, now_ms};
use crate::raft::node::RaftNodeError;
use crate::store::{StoreError, Watcher};

/// Runs the scheduler on this manager until `cancel`; it places tasks only
/// while this manager leads.
pub async fn run(ctx: Arc<ManagerContext>, cancel: CancellationToken) {
    loop {
        let Some(term) = wait_for_leadership(&ctx, &cancel).await else {
            return;
        };
        info!(term, "scheduler: leading, placing pending tasks");
        let ended = match Term::start(&ctx, term) {
            Ok(leading) => leading.lead(&cancel).await,
            Err(end) => end,
        };
        match ended {
            TermEnd::Cancelled => return,
            TermEnd::LostLeadership => info!(term, "scheduler: no longer leading"),
            TermEnd::Failed => {
                // Start over from a full scan, after a pause so that a
                // failure that repeats does not spin.
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(LEADERSHIP_POLL_PERIOD) => {}
                }
            }
        }
    }
}

/// This manager's term while it leads, else `None`.
fn leader_term(ctx: &ManagerContext) -> Option<u64> {
    let metrics = ctx.raft.raft().metrics();
    let m = metrics.borrow_watched();
    (m.state == ServerState::Leader).then_some(m.current_term)
}

/// Returns the term once this manager leads; `None` when cancelled.
async fn wait_for_leadership(ctx: &ManagerContext, cancel: &CancellationToken) -> Option<u64> {
    loop {
        if let Some(term) = leader_term(ctx) {
            return Some(term);
        }
        tokio::select! {
            _ = cancel.cancelled() => return None,
            _ = tokio::time::sleep(LEADERSHIP_POLL_PERIOD) => {}
        }
    }
}

/// Why leading stopped.
enum TermEnd {
    /// The manager is stopping.
    Cancelled,
    /// Another manager leads, or this one was re-elected (a new term).
    LostLeadership,
    /// A write or the watch failed: start again from a full scan.
    Failed,
}

/// What the loop keeps while it leads.
struct Term<'a> {
    ctx: &'a ManagerContext,
    term: u64,
    watcher: Watcher,
    queue: PendingQueue,
}

impl<'a> Term<'a> {
    /// Watches first, then scans: an event racing the scan is seen twice,
    /// which the queue tolerates, rather than not at all.
    fn start(ctx: &'a ManagerContext, term: u64) -> Result<Term<'a>, TermEnd> {
        let watcher = live_watch(ctx)?;
        let queue = ctx.store.read(PendingQueue::rescan);
        Ok(Term {
            ctx,
            term,
            watcher,
            queue,
        })
    }

    fn still_leading(&self) -> bool {
        leader_term(self.ctx) == Some(self.term)
    }

    async fn lead(mut self, cancel: &CancellationToken) -> TermEnd {
        let mut retry = tokio::time::interval_at(Instant::now() + RETRY_PERIOD, RETRY_PERIOD);
        retry.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut leadership = tokio::time::interval(LEADERSHIP_POLL_PERIOD);
        leadership.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            if self.queue.has_fresh() {
                if let Err(end) = self.debounce(cancel).await {
                    return end;
                }
                if !self.still_leading() {
                    return TermEnd::LostLeadership;
                }
                let pass = self.pass();
                let outcome = tokio::select! {
                    _ = cancel.cancelled() => return TermEnd::Cancelled,
                    outcome = pass => outcome,
                };
                if let Err(end) = outcome {
                    return end;
                }
                continue;
            }
            tokio::select! {
                _ = cancel.cancelled() => return TermEnd::Cancelled,
                followed = self.follow_one() => {
                    if let Err(end) = followed {
                        return end;
                    }
                }
                _ = retry.tick() => self.queue.unpark_all(),
                _ = leadership.tick() => {
                    if !self.still_leading() {
                        return TermEnd::LostLeadership;
                    }
                }
            }
        }
    }

    /// Keeps following events for [`DEBOUNCE`], so that a burst of new
    /// tasks is placed in one pass.
    async fn debounce(&mut self, cancel: &CancellationToken) -> Result<(), TermEnd> {
        let deadline = Instant::now() + DEBOUNCE;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Err(TermEnd::Cancelled),
                _ = tokio::time::sleep_until(deadline) => return Ok(()),
                followed = self.follow_one() => followed?,
            }
        }
    }

    /// Applies the next store event to the queue; on a watch that fell
    /// behind, starts a new one and rescans. Cancel-safe: it only awaits the
    /// watcher.
    async fn follow_one(&mut self) -> Result<(), TermEnd> {
        match self.watcher.next().await {
            Some(Ok(event)) => self.queue.observe(&event),
            Some(Err(e)) => {
                debug!("scheduler: watch ended ({e}); rescanning the store");
                self.watcher = live_watch(self.ctx)?;
                self.queue = self.ctx.store.read(PendingQueue::rescan);
            }
            // The store is gone: the manager is stopping.
            None => return Err(TermEnd::Cancelled),
        }
        Ok(())
    }

    /// One pass: read, decide, write. `Err` when the term must end.
    async fn pass(&mut self) -> Result<(), TermEnd> {
        let ids = self.queue.take_fresh();
        let span = info_span!(
            "scheduler_pass",
            term = self.term,
            candidates = ids.len(),
            pending = field::Empty,
            assigned = field::Empty,
            unplaceable = field::Empty,
            written = field::Empty,
            waiting = field::Empty,
        );
        self.pass_inner(ids).instrument(span).await
    }

    async fn pass_inner(&mut self, ids: BTreeSet<String>) -> Result<(), TermEnd> {
        let started = std::time::Instant::now();
        let (pending, mut scheduler) = self.ctx.store.read(|s| {
            let pending: Vec<Task> = ids
                .iter()
                .filter_map(|id| s.task(id))
                .filter(|t| is_pending(t))
                .cloned()
                .collect();
            (pending, Scheduler::from_store(s))
        });
        let decisions = scheduler.schedule(&pending);
        let assigned = decisions
            .iter()
            .filter(|d| matches!(d, Decision::Assign { .. }))
            .count();
        for decision in &decisions {
            if let Decision::Unplaceable { task_id, .. } = decision {
                self.queue.park(task_id.clone());
            }
        }
        let span = tracing::Span::current();
        span.record("pending", pending.len());
        span.record("assigned", assigned);
        span.record("unplaceable", decisions.len() - assigned);
        let writes = task_writes(&pending, &decisions, now_ms());
        let written = self.propose_all(writes).await?;
        span.record("written", written);
        span.record("waiting", self.queue.len());
        if assigned > 0 {
            info!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "scheduler: placed {assigned} of {} pending tasks",
                pending.len()
            );
        }
        Ok(())
    }

    /// Proposes the writes batch by batch; returns how many were written.
    /// See [`BatchOutcome`] for what happens to a batch that fails.
    async fn propose_all(&mut self, writes: Vec<TaskWrite>) -> Result<usize, TermEnd> {
        let mut written = 0;
        for batch in into_batches(writes) {
            let proposal = Proposal {
                actions: batch.iter().map(|w| w.action.clone()).collect(),
                timestamp_ms: now_ms(),
            };
            let result = self.ctx.raft.propose(proposal).await;
            match BatchOutcome::of(&result) {
                BatchOutcome::Written => written += batch.len(),
                BatchOutcome::Retry => {
                    debug!(
                        tasks = batch.len(),
                        "scheduler: a task changed while being placed; retrying next pass"
                    );
                    for write in batch {
                        self.queue.retry(write.task_id);
                    }
                }
                BatchOutcome::Park => {
                    if let Err(e) = result {
                        warn!(
                            tasks = batch.len(),
                            "scheduler: the store refused task updates: {e}"
                        );
                    }
                    for write in batch {
                        self.queue.park(write.task_id);
                    }
                }
                BatchOutcome::EndTerm => {
                    if let Err(e) = result {
                        warn!("scheduler: cannot write task updates: {e}");
                    }
                    return Err(TermEnd::Failed);
                }
            }
        }
        Ok(written)
    }
}

/// What becomes of a batch of task updates after its proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BatchOutcome {
    /// Committed.
    Written,
    /// A task changed or was deleted since the read: re-read the batch's
    /// tasks in the next pass (a deleted one is then dropped). The change
    /// that caused it is an event, so the next pass is at most a debounce
    /// away, never a busy loop.
    Retry,
    /// Refused for a reason a retry will not fix soon (a bug or a size
    /// limit): the tasks wait for a capacity change or the retry period.
    Park,
    /// No leader, no quorum, an unknown outcome, or a stopping node: the
    /// term's state is dropped and rebuilt from a full scan.
    EndTerm,
}

impl BatchOutcome {
    fn of(result: &Result<u64, RaftNodeError>) -> BatchOutcome {
        match result {
            Ok(_) => BatchOutcome::Written,
            Err(RaftNodeError::Rejected(
                StoreError::Conflict { .. } | StoreError::NotFound { .. },
            )) => BatchOutcome::Retry,
            Err(RaftNodeError::Rejected(_)) => BatchOutcome::Park,
            Err(_) => BatchOutcome::EndTerm,
        }
    }
}

/// A watch of the changes from now on.
fn live_watch(ctx: &ManagerContext) -> Result<Watcher, TermEnd> {
    ctx.store.watch(0).map_err(|e| {
        warn!("scheduler: cannot watch the store: {e}");
        TermEnd::Failed
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ObjectKind, WriteOp};

    #[test]
    fn failed_batches_are_retried_parked_or_end_the_term() {
        let conflict = StoreError::Conflict {
            op: WriteOp::Update,
            kind: ObjectKind::Task,
            id: "t".into(),
            expected: 2,
            got: 1,
        };
        let not_found = StoreError::NotFound {
            kind: ObjectKind::Task,
            id: "t".into(),
        };
        let invalid = StoreError::Invalid { reason: "x".into() };
        let cases = [
            (Ok(3), BatchOutcome::Written),
            (Err(RaftNodeError::Rejected(conflict)), BatchOutcome::Retry),
            (Err(RaftNodeError::Rejected(not_found)), BatchOutcome::Retry),
            (Err(RaftNodeError::Rejected(invalid)), BatchOutcome::Park),
            (Err(RaftNodeError::NoQuorum), BatchOutcome::EndTerm),
            (Err(RaftNodeError::Indeterminate), BatchOutcome::EndTerm),
            (
                Err(RaftNodeError::NotLeader { leader_addr: None }),
                BatchOutcome::EndTerm,
            ),
        ];
        for (result, expected) in cases {
            assert_eq!(BatchOutcome::of(&result), expected, "{result:?}");
        }
    }
}
