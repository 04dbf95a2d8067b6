//! The restart supervisor: a runnable task whose process ended (COMPLETE,
//! FAILED, REJECTED, or SHUTDOWN nobody asked for) is shut down and, if its
//! restart policy allows, replaced in the same slot (on the same node for a
//! global service) by a task held at READY until the restart delay has
//! passed and its predecessor has stopped.
//!
//! Owns the restart history (attempts per slot, in memory, forgotten on a
//! leader change like SwarmKit's, reset when the service's spec version
//! changes) and the rule that releases held tasks ([`release_held`]).
//!
//! **Invariants:** a task is restarted at most once (its own desired state
//! moves to SHUTDOWN in the same write as its replacement is created, and the
//! write carries its version); recording an attempt is idempotent per ended
//! task, so a plan that fails to commit and is made again counts once.

use std::collections::{HashMap, VecDeque};

use rswarm_proto::{RestartCondition, RestartPolicy, Service, Task, TaskSpec, TaskState};

use super::limits::{RESTART_ATTEMPTS_KEPT_MAX, RESTART_DELAY_DEFAULT, STOP_WAIT_MAX};
use super::nodes::{fit, global_takes};
use super::reconcile::{Ctx, ServiceMemory, Signals};
use super::task::{created_ms, has_ended, is_global, new_task, observed, task_id, was_assigned};
use super::work::{ServiceWork, SlotId, SlotKey};

/// A restart policy with its defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// When to restart.
    pub condition: RestartCondition,
    /// How long a replacement is held back.
    pub delay_ms: i64,
    /// Attempts allowed (0: no limit).
    pub max_attempts: u64,
    /// Attempts counted within this window (0: the slot's whole life).
    pub window_ms: i64,
}

/// The policy of a task spec, defaults filled in.
pub fn policy_of(spec: Option<&TaskSpec>) -> Policy {
    let restart = spec
        .and_then(|s| s.restart.as_ref())
        .cloned()
        .unwrap_or_else(RestartPolicy::default);
    Policy {
        condition: restart.condition(),
        delay_ms: restart
            .delay_ms
            .map_or(RESTART_DELAY_DEFAULT.as_millis() as i64, saturating_i64),
        max_attempts: restart.max_attempts,
        window_ms: saturating_i64(restart.window_ms),
    }
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Whether the policy's condition restarts a task that ended in `ended`.
pub fn condition_allows(policy: &Policy, ended: TaskState) -> bool {
    match policy.condition {
        RestartCondition::None => false,
        RestartCondition::OnFailure => ended != TaskState::Complete,
        RestartCondition::Any => true,
    }
}

/// Whether another attempt is allowed after `attempts` within the window.
pub fn attempts_allow(policy: &Policy, attempts: usize) -> bool {
    policy.max_attempts == 0 || (attempts as u64) < policy.max_attempts
}

/// Whether a task that ended in `ended` may be replaced, given the attempts
/// already made for its slot within the policy's window.
pub fn restart_allowed(policy: &Policy, ended: TaskState, attempts: usize) -> bool {
    condition_allows(policy, ended) && attempts_allow(policy, attempts)
}

/// Restart attempts of one slot under one spec version.
#[derive(Debug, Default)]
struct SlotAttempts {
    spec_version: u64,
    /// (ended task, when it was restarted), oldest first.
    attempts: VecDeque<(String, i64)>,
    /// The attempts ran out: the slot stays empty (until the spec changes).
    given_up: bool,
}

/// Restart attempts per slot, in memory.
#[derive(Debug, Default)]
pub struct RestartHistory {
    slots: HashMap<SlotKey, SlotAttempts>,
}

impl RestartHistory {
    /// Attempts for the slot under `spec_version` within the window ending
    /// at `now_ms` (`window_ms` 0: all).
    pub fn attempts(&self, key: &SlotKey, spec_version: u64, window_ms: i64, now_ms: i64) -> usize {
        let Some(slot) = self
            .slots
            .get(key)
            .filter(|s| s.spec_version == spec_version)
        else {
            return 0;
        };
        slot.attempts
            .iter()
            .filter(|(_, at)| window_ms == 0 || *at >= now_ms.saturating_sub(window_ms))
            .count()
    }

    /// The slot's attempts under `spec_version`, started afresh when the
    /// spec version changed.
    fn slot_mut(&mut self, key: &SlotKey, spec_version: u64) -> &mut SlotAttempts {
        let slot = self.slots.entry(key.clone()).or_default();
        if slot.spec_version != spec_version {
            *slot = SlotAttempts {
                spec_version,
                ..SlotAttempts::default()
            };
        }
        slot
    }

    /// Records that the slot ran out of attempts.
    pub fn give_up(&mut self, key: &SlotKey, spec_version: u64) {
        self.slot_mut(key, spec_version).given_up = true;
    }

    /// Whether the slot ran out of attempts under `spec_version`.
    pub fn has_given_up(&self, key: &SlotKey, spec_version: u64) -> bool {
        self.slots
            .get(key)
            .is_some_and(|s| s.spec_version == spec_version && s.given_up)
    }

    /// Records that `ended_task` was restarted (again: no double count).
    pub fn record(&mut self, key: &SlotKey, spec_version: u64, ended_task: &str, now_ms: i64) {
        let slot = self.slot_mut(key, spec_version);
        if slot.attempts.iter().any(|(id, _)| id == ended_task) {
            return;
        }
        slot.attempts.push_back((ended_task.to_owned(), now_ms));
        while slot.attempts.len() > RESTART_ATTEMPTS_KEPT_MAX {
            slot.attempts.pop_front();
        }
    }

    /// Forgets slots that no longer exist.
    pub fn retain(&mut self, mut keep: impl FnMut(&SlotKey) -> bool) {
        self.slots.retain(|k, _| keep(k));
    }
}

/// Shuts down every runnable task whose process ended and replaces it where
/// the policy allows.
pub fn supervise(ctx: &Ctx<'_>, work: &mut ServiceWork<'_>, mem: &mut ServiceMemory) {
    let Some(service) = work.service().cloned() else {
        return;
    };
    for slot in work.slot_ids() {
        let ended: Vec<usize> = work
            .runnable(slot)
            .filter(|(_, t)| has_ended(t))
            .map(|(i, _)| i)
            .collect();
        for index in ended {
            if !work.has_budget() {
                return;
            }
            restart_one(ctx, work, mem, &service, slot, index);
        }
    }
}

fn restart_one(
    ctx: &Ctx<'_>,
    work: &mut ServiceWork<'_>,
    mem: &mut ServiceMemory,
    service: &Service,
    slot: SlotId,
    index: usize,
) {
    let Some(ended) = work.task(slot, index).cloned() else {
        return;
    };
    let key = work.key(slot).clone();
    let key = &key;
    let policy = policy_of(ended.spec.as_ref());
    let attempts = mem
        .restarts
        .attempts(key, service.spec_version, policy.window_ms, ctx.now_ms);
    let condition = condition_allows(&policy, observed(&ended));
    let attempts_left = attempts_allow(&policy, attempts);
    let allowed = condition
        && attempts_left
        && replacement_fits(ctx, service, &ended)
        && work.runnable(slot).count() == 1;
    work.set_desired(slot, index, TaskState::Shutdown);
    if condition && !attempts_left {
        mem.restarts.give_up(key, service.spec_version);
    }
    if !allowed {
        tracing::info!(
            task = task_id(&ended),
            "task ended; its restart policy allows no replacement"
        );
        return;
    }
    let delay = policy_of(service.spec.as_ref().and_then(|s| s.task.as_ref())).delay_ms;
    let desired = if delay > 0 {
        TaskState::Ready
    } else {
        TaskState::Running
    };
    let replacement = new_task(
        service,
        ended.slot,
        replacement_node(service, &ended),
        desired,
        ctx.now_ms,
    );
    if work.create(key.clone(), replacement) {
        mem.restarts
            .record(key, service.spec_version, task_id(&ended), ctx.now_ms);
    }
}

/// Where a replacement goes: a global task stays on its node, a replicated
/// one is placed again by the scheduler.
fn replacement_node<'t>(service: &Service, ended: &'t Task) -> &'t str {
    if is_global(service) {
        &ended.node_id
    } else {
        ""
    }
}

/// A global task is replaced only on a node that still takes the service.
fn replacement_fits(ctx: &Ctx<'_>, service: &Service, ended: &Task) -> bool {
    if !is_global(service) {
        return true;
    }
    ctx.state
        .node(&ended.node_id)
        .is_some_and(|n| global_takes(n, service))
}

/// A slot without runnable tasks whose last task ended and may not be
/// restarted (condition, attempts): it stays empty, and scaling does not
/// fill it again until the spec changes.
pub fn is_held_empty(work: &ServiceWork<'_>, mem: &ServiceMemory, slot: SlotId) -> bool {
    let Some(service) = work.service() else {
        return false;
    };
    if work.is_occupied(slot) {
        return false;
    }
    let Some((_, newest)) = work.newest(slot) else {
        return false;
    };
    if newest.desired_state() != TaskState::Shutdown
        || !has_ended(newest)
        || newest.spec_version != service.spec_version
    {
        return false;
    }
    let policy = policy_of(newest.spec.as_ref());
    !condition_allows(&policy, observed(newest))
        || mem
            .restarts
            .has_given_up(work.key(slot), service.spec_version)
}

/// Raises held (READY) tasks to RUNNING once their hold is over: the delay
/// has passed (none for an update's stop-first replacement) and every other
/// task of the slot has stopped — or waited [`STOP_WAIT_MAX`] for it.
pub fn release_held(
    ctx: &Ctx<'_>,
    work: &mut ServiceWork<'_>,
    mem: &ServiceMemory,
    signals: &mut Signals,
) {
    for slot in work.slot_ids() {
        let held: Vec<usize> = work
            .runnable(slot)
            .filter(|(_, t)| t.desired_state() == TaskState::Ready)
            .map(|(i, _)| i)
            .collect();
        for index in held {
            signals.attentive = true;
            match hold_ends_ms(ctx, work, mem, slot, index) {
                Some(at) if at > ctx.now_ms => signals.wake(at),
                Some(_) => {
                    work.set_desired(slot, index, TaskState::Running);
                }
                None => {}
            }
        }
    }
}

/// When the hold of the READY task at `index` ends (≤ now: released; `None`:
/// it waits for an event, not for time).
fn hold_ends_ms(
    ctx: &Ctx<'_>,
    work: &ServiceWork<'_>,
    mem: &ServiceMemory,
    slot: SlotId,
    index: usize,
) -> Option<i64> {
    let task = work.task(slot, index)?;
    let created = if work.is_new(slot, index) {
        ctx.now_ms
    } else {
        created_ms(task)
    };
    let delay = if mem.quick_start.contains(task_id(task)) {
        0
    } else {
        policy_of(task.spec.as_ref()).delay_ms
    };
    let delay_over = created.saturating_add(delay);
    let others_stopped = work
        .tasks(slot)
        .filter(|(i, _)| *i != index)
        .all(|(_, t)| has_ended(t) || !was_assigned(t) || fit(ctx.state, &t.node_id).is_lost());
    let give_up = created.saturating_add(STOP_WAIT_MAX.as_millis() as i64);
    if others_stopped || give_up <= ctx.now_ms {
        Some(delay_over)
    } else {
        // An event (the stop) may release it sooner.
        Some(give_up)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(condition: RestartCondition, max_attempts: u64) -> Policy {
        Policy {
            condition,
            delay_ms: 0,
            max_attempts,
            window_ms: 0,
        }
    }

    #[test]
    fn conditions_decide_by_how_the_task_ended() {
        use RestartCondition as C;
        use TaskState as S;
        let cases = [
            (C::Any, S::Complete, true),
            (C::Any, S::Failed, true),
            (C::OnFailure, S::Complete, false),
            (C::OnFailure, S::Failed, true),
            (C::OnFailure, S::Rejected, true),
            (C::OnFailure, S::Shutdown, true),
            (C::None, S::Failed, false),
            (C::None, S::Complete, false),
        ];
        for (condition, ended, want) in cases {
            assert_eq!(
                restart_allowed(&policy(condition, 0), ended, 100),
                want,
                "{condition:?} {ended:?}"
            );
        }
    }

    #[test]
    fn max_attempts_counts_within_the_window() {
        let p = Policy {
            window_ms: 10_000,
            ..policy(RestartCondition::Any, 2)
        };
        let key = SlotKey::Replica(1);
        let mut history = RestartHistory::default();
        history.record(&key, 3, "t1", 1_000);
        history.record(&key, 3, "t1", 1_500);
        assert_eq!(
            history.attempts(&key, 3, p.window_ms, 2_000),
            1,
            "same task counts once"
        );
        history.record(&key, 3, "t2", 5_000);
        let attempts = history.attempts(&key, 3, p.window_ms, 6_000);
        assert!(
            !restart_allowed(&p, TaskState::Failed, attempts),
            "2 of 2 used"
        );
        let later = history.attempts(&key, 3, p.window_ms, 12_000);
        assert_eq!(later, 1, "the first attempt left the window");
        assert!(restart_allowed(&p, TaskState::Failed, later));
        assert_eq!(
            history.attempts(&key, 3, 0, 100_000),
            2,
            "no window: lifetime"
        );
    }

    #[test]
    fn a_new_spec_version_resets_the_history() {
        let key = SlotKey::Node("n1".to_owned());
        let mut history = RestartHistory::default();
        history.record(&key, 1, "t1", 0);
        history.record(&key, 1, "t2", 0);
        assert_eq!(history.attempts(&key, 2, 0, 0), 0);
        history.record(&key, 2, "t3", 0);
        assert_eq!(history.attempts(&key, 2, 0, 0), 1);
        assert_eq!(history.attempts(&key, 1, 0, 0), 0, "old version forgotten");
    }

    #[test]
    fn unset_delay_means_five_seconds() {
        let p = policy_of(None);
        assert_eq!(p.delay_ms, 5_000);
        assert_eq!(p.condition, RestartCondition::Any);
        let spec = TaskSpec {
            restart: Some(RestartPolicy {
                delay_ms: Some(0),
                ..RestartPolicy::default()
            }),
            ..TaskSpec::default()
        };
        assert_eq!(policy_of(Some(&spec)).delay_ms, 0);
    }
}
