//! Rebalancing (beyond SwarmKit, which never moves a healthy task): when a
//! replicated service's `rebalance_requested` differs from `rebalanced`,
//! tasks on over-full nodes are moved — each replaced by a new task in the
//! same slot, which the scheduler puts on the least loaded node — with the
//! service's update policy (parallelism, delay, order). Then `rebalanced`
//! is set to the request. `service update --rebalance` bumps the request;
//! so does this orchestrator when a node joins or returns and the cluster's
//! `auto_rebalance` or the service's `spec.rebalance` is set.
//!
//! **Invariants:** a rebalance waits for a running update; moves are planned
//! once, from a settled placement (no slot in flight), and only take tasks
//! from nodes above their even share (`floor` or `ceil` of tasks / eligible
//! nodes); tasks on paused nodes stay where they are and do not count.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rswarm_proto::{Service, TaskState};

use super::constraint::node_satisfies;
use super::nodes::{constraints_of, is_usable};
use super::reconcile::{Ctx, ServiceMemory, Signals};
use super::task::{is_global, is_running, observed, task_id};
use super::update::{dirty_slots, is_active, replace_slot, rollout_of, update_state};
use super::work::{ServiceWork, SlotKey};
use crate::store::StoreState;

/// A rebalance under way, in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct RebalanceRun {
    /// The `rebalance_requested` value it answers.
    pub requested: u64,
    /// Tasks still to move, by slot, in order.
    pub moves: VecDeque<(SlotKey, String)>,
    /// Slots in flight at the last pass.
    pub in_flight: BTreeSet<SlotKey>,
    /// No move starts before this time (the delay after a finished one).
    pub next_start_ms: i64,
}

/// A placed task that could move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// Its node.
    pub node_id: String,
    /// Its slot.
    pub slot: u64,
    /// The task.
    pub task_id: String,
    /// Observed RUNNING.
    pub running: bool,
}

/// The tasks to move so that the eligible nodes end up with even shares:
/// each gets `floor(total / nodes)` tasks, and the `total % nodes` nodes that
/// hold the most keep one more (fewest moves). From each node above its
/// share, its non-running tasks move first, then the highest slots. Tasks on
/// nodes that are not eligible are neither counted nor moved.
pub fn plan_moves(placed: &[Placed], eligible: &BTreeSet<String>) -> Vec<(u64, String)> {
    if eligible.is_empty() {
        return Vec::new();
    }
    let mut by_node: BTreeMap<&str, Vec<&Placed>> =
        eligible.iter().map(|n| (n.as_str(), Vec::new())).collect();
    for task in placed {
        if let Some(tasks) = by_node.get_mut(task.node_id.as_str()) {
            tasks.push(task);
        }
    }
    let total: usize = by_node.values().map(Vec::len).sum();
    let floor = total / eligible.len();
    let remainder = total % eligible.len();
    let mut nodes: Vec<(&str, Vec<&Placed>)> = by_node.into_iter().collect();
    // Busiest first; ties by node ID so the plan is deterministic.
    nodes.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(b.0)));
    let mut moves = Vec::new();
    for (rank, (_, tasks)) in nodes.iter_mut().enumerate() {
        let share = floor + usize::from(rank < remainder);
        if tasks.len() <= share {
            continue;
        }
        tasks.sort_by_key(|t| (t.running, std::cmp::Reverse(t.slot)));
        let excess = tasks.len() - share;
        moves.extend(
            tasks
                .iter()
                .take(excess)
                .map(|t| (t.slot, t.task_id.clone())),
        );
    }
    moves
}

/// Nodes a move may land on: ready, active, constraints satisfied.
fn eligible_nodes(state: &StoreState, service: &Service) -> BTreeSet<String> {
    state
        .nodes()
        .filter(|n| is_usable(n) && node_satisfies(n, constraints_of(service)))
        .filter_map(|n| n.meta.as_ref().map(|m| m.id.clone()))
        .collect()
}

/// Placed tasks of the work: one runnable task per slot, assigned or later,
/// not ended.
fn placed_tasks(work: &ServiceWork<'_>) -> Vec<Placed> {
    let mut placed = Vec::new();
    for id in work.slot_ids() {
        let SlotKey::Replica(slot) = *work.key(id) else {
            continue;
        };
        let mut runnable = work.runnable(id);
        let (Some((_, task)), None) = (runnable.next(), runnable.next()) else {
            continue;
        };
        let state = observed(task);
        if task.node_id.is_empty() || state < TaskState::Assigned || state > TaskState::Running {
            continue;
        }
        placed.push(Placed {
            node_id: task.node_id.clone(),
            slot,
            task_id: task_id(task).to_owned(),
            running: is_running(task),
        });
    }
    placed
}

/// One pass of the rebalancer over a service.
pub fn step(
    ctx: &Ctx<'_>,
    work: &mut ServiceWork<'_>,
    mem: &mut ServiceMemory,
    signals: &mut Signals,
) {
    let Some(service) = work.service().cloned() else {
        return;
    };
    if service.rebalance_requested == service.rebalanced {
        mem.rebalance = None;
        return;
    }
    let updating = mem.update.is_some()
        || is_active(update_state(&service))
        || !dirty_slots(ctx, work, &service).is_empty();
    if is_global(&service) {
        mark_done(work, service.rebalance_requested);
        return;
    }
    if updating {
        return;
    }
    signals.attentive = true;
    let in_flight: BTreeSet<SlotKey> = work
        .slot_ids()
        .filter(|s| work.is_in_progress(*s))
        .map(|s| work.key(s).clone())
        .collect();
    let current = mem
        .rebalance
        .take()
        .filter(|r| r.requested == service.rebalance_requested);
    let mut run = match current {
        Some(run) => run,
        // Plan from a settled placement only.
        None if !in_flight.is_empty() => return,
        None if !ctx.may_start_update => {
            signals.wake(ctx.now_ms + super::limits::UPDATER_WAIT_RETRY.as_millis() as i64);
            return;
        }
        None => begin(ctx, work, &service),
    };
    advance(ctx, work, mem, &mut run, in_flight, signals);
    if run.moves.is_empty() && run.in_flight.is_empty() {
        tracing::info!(service = %task_id_free_name(&service), "rebalance done");
        mark_done(work, run.requested);
        return;
    }
    mem.rebalance = Some(run);
}

fn task_id_free_name(service: &Service) -> String {
    super::task::service_name(service).to_owned()
}

fn begin(ctx: &Ctx<'_>, work: &ServiceWork<'_>, service: &Service) -> RebalanceRun {
    let eligible = eligible_nodes(ctx.state, service);
    let moves = plan_moves(&placed_tasks(work), &eligible);
    tracing::info!(
        service = super::task::service_name(service),
        moves = moves.len(),
        nodes = eligible.len(),
        "rebalance started"
    );
    RebalanceRun {
        requested: service.rebalance_requested,
        moves: moves
            .into_iter()
            .map(|(slot, id)| (SlotKey::Replica(slot), id))
            .collect(),
        in_flight: BTreeSet::new(),
        next_start_ms: 0,
    }
}

fn advance(
    ctx: &Ctx<'_>,
    work: &mut ServiceWork<'_>,
    mem: &mut ServiceMemory,
    run: &mut RebalanceRun,
    in_flight: BTreeSet<SlotKey>,
    signals: &mut Signals,
) {
    let Some(service) = work.service().cloned() else {
        return;
    };
    let rollout = rollout_of(service.spec.as_ref().and_then(|s| s.update.as_ref()));
    if run.in_flight.iter().any(|k| !in_flight.contains(k)) {
        run.next_start_ms = ctx.now_ms.saturating_add(rollout.delay_ms);
    }
    run.in_flight = in_flight;
    if ctx.now_ms < run.next_start_ms {
        signals.wake(run.next_start_ms);
        return;
    }
    let capacity = if rollout.parallelism == 0 {
        usize::MAX
    } else {
        (rollout.parallelism as usize).saturating_sub(run.in_flight.len())
    };
    let mut started = 0;
    while started < capacity && work.has_budget() {
        let Some((key, id)) = run.moves.pop_front() else {
            break;
        };
        // The task may have ended or moved on its own since the plan.
        let Some(slot) = work.find(&key) else {
            continue;
        };
        let still_there = !run.in_flight.contains(&key)
            && work.runnable(slot).count() == 1
            && work.runnable(slot).any(|(_, t)| task_id(t) == id);
        if still_there && replace_slot(ctx, work, mem, slot, rollout.order) {
            run.in_flight.insert(key);
            started += 1;
        }
    }
}

fn mark_done(work: &mut ServiceWork<'_>, requested: u64) {
    if let Some(service) = work.service_mut() {
        service.rebalanced = requested;
    }
}

/// Services to rebalance because a node became usable: replicated ones
/// with `spec.rebalance`, or all replicated ones with the cluster's
/// `auto_rebalance`, that have no rebalance pending. Their request is bumped.
pub fn auto_rebalance(state: &StoreState) -> Vec<Service> {
    let cluster_wide = state
        .cluster()
        .and_then(|c| c.spec.as_ref())
        .is_some_and(|s| s.auto_rebalance);
    state
        .services()
        .filter(|s| !is_global(s))
        .filter(|s| cluster_wide || s.spec.as_ref().is_some_and(|spec| spec.rebalance))
        .filter(|s| s.rebalance_requested == s.rebalanced)
        .map(|s| {
            let mut s = s.clone();
            s.rebalance_requested = s.rebalance_requested.saturating_add(1);
            s
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placed(node: &str, slot: u64, running: bool) -> Placed {
        Placed {
            node_id: node.to_owned(),
            slot,
            task_id: format!("t{slot}"),
            running,
        }
    }

    fn nodes(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn all_on_one_node_spreads_to_the_even_share() {
        let tasks: Vec<Placed> = (1..=6).map(|s| placed("a", s, true)).collect();
        let moves = plan_moves(&tasks, &nodes(&["a", "b", "c"]));
        let slots: Vec<u64> = moves.iter().map(|(s, _)| *s).collect();
        assert_eq!(
            slots,
            vec![6, 5, 4, 3],
            "6 tasks on 3 nodes: keep 2, highest slots move"
        );
    }

    #[test]
    fn an_even_spread_moves_nothing() {
        let tasks = vec![
            placed("a", 1, true),
            placed("a", 2, true),
            placed("a", 3, true),
            placed("b", 4, true),
            placed("b", 5, true),
            placed("b", 6, true),
            placed("c", 7, true),
            placed("c", 8, true),
        ];
        assert!(
            plan_moves(&tasks, &nodes(&["a", "b", "c"])).is_empty(),
            "3/3/2 is even"
        );
    }

    #[test]
    fn two_full_nodes_and_an_empty_one_give_one_task_away() {
        let tasks = vec![
            placed("a", 1, true),
            placed("a", 2, true),
            placed("b", 3, true),
            placed("b", 4, true),
        ];
        let moves = plan_moves(&tasks, &nodes(&["a", "b", "c"]));
        assert_eq!(moves, vec![(4, "t4".to_owned())], "2/2/0 becomes 2/1/1");
    }

    #[test]
    fn non_running_tasks_move_first() {
        let tasks = vec![
            placed("a", 1, false),
            placed("a", 2, true),
            placed("a", 3, true),
            placed("a", 4, true),
        ];
        let moves = plan_moves(&tasks, &nodes(&["a", "b"]));
        let slots: Vec<u64> = moves.iter().map(|(s, _)| *s).collect();
        assert_eq!(slots, vec![1, 4]);
    }

    #[test]
    fn tasks_on_ineligible_nodes_neither_count_nor_move() {
        let tasks = vec![
            placed("paused", 1, true),
            placed("paused", 2, true),
            placed("paused", 3, true),
            placed("a", 4, true),
            placed("a", 5, true),
        ];
        let moves = plan_moves(&tasks, &nodes(&["a", "b"]));
        assert_eq!(moves, vec![(5, "t5".to_owned())]);
        assert!(plan_moves(&tasks, &BTreeSet::new()).is_empty());
    }

    proptest::proptest! {
        /// After the planned moves land on the least loaded nodes, no node is
        /// above the even share and the total is unchanged.
        #[test]
        fn moves_reach_an_even_spread(counts in proptest::collection::vec(0usize..20, 1..8)) {
            let names: Vec<String> = (0..counts.len()).map(|i| format!("n{i}")).collect();
            let mut tasks = Vec::new();
            let mut slot = 0;
            for (node, count) in names.iter().zip(&counts) {
                for _ in 0..*count {
                    slot += 1;
                    tasks.push(placed(node, slot, true));
                }
            }
            let eligible: BTreeSet<String> = names.iter().cloned().collect();
            let moves = plan_moves(&tasks, &eligible);
            let mut load: BTreeMap<String, usize> = names.iter().map(|n| (n.clone(), 0)).collect();
            for t in &tasks {
                if !moves.iter().any(|(s, _)| *s == t.slot) {
                    *load.entry(t.node_id.clone()).or_default() += 1;
                }
            }
            for _ in &moves {
                let least = load.iter().min_by_key(|(_, c)| **c).map(|(n, _)| n.clone()).unwrap();
                *load.entry(least).or_default() += 1;
            }
            let total: usize = counts.iter().sum();
            let optimal: usize = {
                let floor = total / names.len();
                let mut sorted = counts.clone();
                sorted.sort_unstable_by(|a, b| b.cmp(a));
                sorted
                    .iter()
                    .enumerate()
                    .map(|(rank, c)| c.saturating_sub(floor + usize::from(rank < total % names.len())))
                    .sum()
            };
            proptest::prop_assert_eq!(moves.len(), optimal, "no needless moves");
            proptest::prop_assert_eq!(load.values().sum::<usize>(), total);
            let min = load.values().min().copied().unwrap_or(0);
            let max = load.values().max().copied().unwrap_or(0);
            proptest::prop_assert!(max - min <= 1, "even spread: {:?}", load);
        }
    }
}
