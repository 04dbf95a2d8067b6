//! The linearizability search for one register: Wing & Gong's algorithm
//! with Lowe's memoization, in the list-based form of Horn & Kroening
//! ("Faster linearizability checking via P-compositionality", 2015).
//!
//! The history is a doubly linked list of call and return entries in time
//! order. Walking from the head, the search linearizes the first call it can
//! (the model accepts it and the pair (set of linearized operations, state)
//! is new), lifts it and its return out of the list, and starts again from
//! the head. Reaching a return entry means that operation should have been
//! linearized before this point: backtrack. The cache of (set, state) pairs
//! already seen is what keeps the search polynomial on typical histories.
//!
//! Operations whose outcome is unknown have no return entry: the search may
//! linearize them anywhere after their call, or never.
//!
//! **Invariant:** the search never claims a history linearizable or not
//! without having finished; past `states_max` cached pairs it says
//! `Unknown`.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use super::history::Value;

/// The effect and observation of one operation on the register model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Saw this value: the register must hold it.
    Read(Value),
    /// Set the register.
    Write(Value),
    /// If the register holds `expected`, set `new`; linearizable only then
    /// (a compare-and-set that would fail has no effect, which is the same
    /// as not linearizing it, and a failed one was reported as `Refused`).
    Cas {
        /// The value the register must hold.
        expected: Value,
        /// The value it gets.
        new: Value,
    },
    /// A compare-and-set that was refused: the register did not hold
    /// `expected`.
    Refused {
        /// The value the register did not hold.
        expected: Value,
    },
}

impl Step {
    /// The register after this step from `state`, or `None` when the step
    /// cannot happen in that state.
    pub(crate) fn apply(self, state: Value) -> Option<Value> {
        match self {
            Step::Read(v) => (v == state).then_some(state),
            Step::Write(v) => Some(v),
            Step::Cas { expected, new } => (expected == state).then_some(new),
            Step::Refused { expected } => (expected != state).then_some(state),
        }
    }
}

/// One operation as the search sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SearchOp {
    /// What it does to the register.
    pub(crate) step: Step,
    /// When it was invoked.
    pub(crate) call: Duration,
    /// When it returned; `None`: it may take effect at any time after its
    /// call, or never.
    pub(crate) ret: Option<Duration>,
}

/// The answer of one search.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A linearization exists.
    Linearizable,
    /// None exists.
    NotLinearizable,
    /// The search hit its limit first.
    Unknown,
}

/// A verdict and the work it took.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SearchResult {
    /// The answer.
    pub(crate) verdict: Verdict,
    /// (set, state) pairs cached.
    pub(crate) states_explored: u64,
}

const NIL: usize = usize::MAX;
const HEAD: usize = 0;

#[derive(Clone, Copy)]
enum Entry {
    Head,
    Call { op: usize, ret: Option<usize> },
    Return,
}

#[derive(Clone, Copy)]
struct Node {
    prev: usize,
    next: usize,
    entry: Entry,
}

/// The entry list, with O(1) lift and unlift ("dancing links"): unlifting
/// in the reverse order of lifting restores the list exactly.
struct EntryList {
    nodes: Vec<Node>,
}

impl EntryList {
    fn new(ops: &[SearchOp]) -> Self {
        // (time, calls before returns at equal times, op): an operation
        // that returns exactly when another is invoked counts as concurrent
        // with it, the permissive reading of equal timestamps.
        let mut events: Vec<(Duration, u8, usize)> = Vec::with_capacity(ops.len() * 2);
        for (idx, op) in ops.iter().enumerate() {
            events.push((op.call, 0, idx));
            if let Some(ret) = op.ret {
                events.push((ret.max(op.call), 1, idx));
            }
        }
        events.sort_unstable();
        let mut nodes = Vec::with_capacity(events.len() + 1);
        nodes.push(Node {
            prev: NIL,
            next: NIL,
            entry: Entry::Head,
        });
        let mut ret_node = vec![None; ops.len()];
        for (pos, &(_, kind, op)) in events.iter().enumerate() {
            if kind == 1 {
                ret_node[op] = Some(pos + 1);
            }
        }
        for (pos, &(_, kind, op)) in events.iter().enumerate() {
            let entry = if kind == 0 {
                Entry::Call {
                    op,
                    ret: ret_node[op],
                }
            } else {
                Entry::Return
            };
            nodes.push(Node {
                prev: pos,
                next: NIL,
                entry,
            });
            nodes[pos].next = pos + 1;
        }
        Self { nodes }
    }

    fn unlink(&mut self, x: usize) {
        let Node { prev, next, .. } = self.nodes[x];
        self.nodes[prev].next = next;
        if next != NIL {
            self.nodes[next].prev = prev;
        }
    }

    fn relink(&mut self, x: usize) {
        let Node { prev, next, .. } = self.nodes[x];
        self.nodes[prev].next = x;
        if next != NIL {
            self.nodes[next].prev = x;
        }
    }

    fn lift(&mut self, call: usize) {
        self.unlink(call);
        if let Entry::Call { ret: Some(ret), .. } = self.nodes[call].entry {
            self.unlink(ret);
        }
    }

    fn unlift(&mut self, call: usize) {
        if let Entry::Call { ret: Some(ret), .. } = self.nodes[call].entry {
            self.relink(ret);
        }
        self.relink(call);
    }
}

/// The set of linearized operations, kept so that its cache key stays small
/// on long histories: required operations are numbered in call order, and
/// the search linearizes them roughly in that order, so the set is "all
/// below `low`" plus a few above it. Operations with unknown outcome (which
/// may never be linearized, and would pin `low`) are kept apart.
#[derive(Default)]
struct Linearized {
    /// Every required operation numbered below this is linearized.
    low: u32,
    /// Linearized required operations numbered above `low`.
    above_low: BTreeSet<u32>,
    /// Linearized optional operations.
    optional: BTreeSet<u32>,
}

/// A (linearized set, state) pair as the cache stores it.
type CacheKey = (u32, Box<[u32]>, Box<[u32]>, Value);

/// An operation's number within its class (required or optional).
#[derive(Clone, Copy)]
enum Rank {
    Required(u32),
    Optional(u32),
}

impl Linearized {
    fn insert(&mut self, rank: Rank) {
        match rank {
            Rank::Optional(i) => {
                self.optional.insert(i);
            }
            Rank::Required(i) if i == self.low => {
                self.low += 1;
                while self.above_low.remove(&self.low) {
                    self.low += 1;
                }
            }
            Rank::Required(i) => {
                self.above_low.insert(i);
            }
        }
    }

    fn remove(&mut self, rank: Rank) {
        match rank {
            Rank::Optional(i) => {
                self.optional.remove(&i);
            }
            Rank::Required(i) if i >= self.low => {
                self.above_low.remove(&i);
            }
            Rank::Required(i) => {
                self.above_low.extend(i + 1..self.low);
                self.low = i;
            }
        }
    }

    fn key(&self, state: Value) -> CacheKey {
        (
            self.low,
            self.above_low.iter().copied().collect(),
            self.optional.iter().copied().collect(),
            state,
        )
    }
}

/// Each operation's rank: required ones in call order, then optional ones
/// in call order.
fn ranks(ops: &[SearchOp]) -> Vec<Rank> {
    let mut order: Vec<usize> = (0..ops.len()).collect();
    order.sort_by_key(|i| (ops[*i].call, *i));
    let mut ranks = vec![Rank::Required(0); ops.len()];
    let (mut required, mut optional) = (0u32, 0u32);
    for i in order {
        ranks[i] = if ops[i].ret.is_some() {
            required += 1;
            Rank::Required(required - 1)
        } else {
            optional += 1;
            Rank::Optional(optional - 1)
        };
    }
    ranks
}

struct Frame {
    call: usize,
    state_before: Value,
}

/// Whether `ops`, starting from `initial`, can be linearized; gives up with
/// `Unknown` once more than `states_max` (set, state) pairs are cached.
pub(crate) fn search(ops: &[SearchOp], initial: Value, states_max: u64) -> SearchResult {
    let mut list = EntryList::new(ops);
    let ranks = ranks(ops);
    let required_total = ops.iter().filter(|o| o.ret.is_some()).count();
    let mut required_done = 0;
    let mut cache: HashSet<CacheKey> = HashSet::new();
    let mut linearized = Linearized::default();
    let mut stack: Vec<Frame> = Vec::new();
    let mut state = initial;
    let mut entry = list.nodes[HEAD].next;
    let result = |verdict, cache: &HashSet<CacheKey>| SearchResult {
        verdict,
        states_explored: cache.len() as u64,
    };
    loop {
        if required_done == required_total {
            return result(Verdict::Linearizable, &cache);
        }
        if entry == NIL {
            // Unreachable while a return entry remains: the walk from the
            // head stops at the first one. Answer the safe way regardless.
            return result(Verdict::Unknown, &cache);
        }
        match list.nodes[entry].entry {
            Entry::Head => entry = list.nodes[entry].next,
            Entry::Call { op, ret } => {
                let mut lifted = false;
                if let Some(next_state) = ops[op].step.apply(state) {
                    linearized.insert(ranks[op]);
                    if cache.insert(linearized.key(next_state)) {
                        if cache.len() as u64 > states_max {
                            return result(Verdict::Unknown, &cache);
                        }
                        stack.push(Frame {
                            call: entry,
                            state_before: state,
                        });
                        state = next_state;
                        list.lift(entry);
                        required_done += usize::from(ret.is_some());
                        lifted = true;
                    } else {
                        linearized.remove(ranks[op]);
                    }
                }
                entry = if lifted {
                    list.nodes[HEAD].next
                } else {
                    list.nodes[entry].next
                };
            }
            Entry::Return => {
                let Some(frame) = stack.pop() else {
                    return result(Verdict::NotLinearizable, &cache);
                };
                let Entry::Call { op, ret } = list.nodes[frame.call].entry else {
                    return result(Verdict::Unknown, &cache);
                };
                linearized.remove(ranks[op]);
                state = frame.state_before;
                list.unlift(frame.call);
                required_done -= usize::from(ret.is_some());
                entry = list.nodes[frame.call].next;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn op(step: Step, call: u64, ret: Option<u64>) -> SearchOp {
        SearchOp {
            step,
            call: ms(call),
            ret: ret.map(ms),
        }
    }

    /// Goal: the list restores itself exactly after lifts are undone in
    /// reverse order, which the backtracking relies on.
    #[test]
    fn lift_and_unlift_restore_the_list() {
        let ops = [
            op(Step::Write(1), 0, Some(10)),
            op(Step::Read(1), 5, Some(20)),
            op(Step::Write(2), 6, None),
        ];
        let mut list = EntryList::new(&ops);
        let walk = |list: &EntryList| {
            let mut out = Vec::new();
            let mut x = list.nodes[HEAD].next;
            while x != NIL {
                out.push(x);
                x = list.nodes[x].next;
            }
            out
        };
        let before = walk(&list);
        assert_eq!(before.len(), 5);
        let first = before[0];
        let second = before[1];
        list.lift(first);
        list.lift(second);
        assert_eq!(walk(&list).len(), 1);
        list.unlift(second);
        list.unlift(first);
        assert_eq!(walk(&list), before);
    }

    /// Goal: a read may not see a write that began after the read returned.
    #[test]
    fn read_from_the_future_is_not_linearizable() {
        let ops = [
            op(Step::Read(1), 0, Some(10)),
            op(Step::Write(1), 20, Some(30)),
        ];
        assert_eq!(search(&ops, 0, 1000).verdict, Verdict::NotLinearizable);
    }

    /// Goal: the compact set is the set it stands for, whatever the order
    /// of inserts and (last-in, first-out) removals.
    #[test]
    fn linearized_set_keys_are_canonical() {
        let mut a = Linearized::default();
        for i in [2, 0, 1, 5] {
            a.insert(Rank::Required(i));
        }
        a.insert(Rank::Optional(3));
        let mut b = Linearized::default();
        for i in [0, 5, 1, 7, 2] {
            b.insert(Rank::Required(i));
        }
        b.insert(Rank::Optional(3));
        b.remove(Rank::Required(7));
        assert!(a.key(9) == b.key(9));
        assert_eq!(a.low, 3);
        b.remove(Rank::Required(2));
        b.remove(Rank::Required(1));
        assert_eq!(b.low, 1);
        assert!(b.key(9) != a.key(9));
        b.insert(Rank::Required(1));
        b.insert(Rank::Required(2));
        assert!(a.key(9) == b.key(9));
    }

    /// Goal: an open write may be linearized late, or never.
    #[test]
    fn open_writes_are_optional() {
        let seen = [
            op(Step::Write(1), 0, None),
            op(Step::Read(0), 5, Some(10)),
            op(Step::Read(1), 20, Some(30)),
        ];
        assert_eq!(search(&seen, 0, 1000).verdict, Verdict::Linearizable);
        let unseen = [op(Step::Write(1), 0, None), op(Step::Read(0), 20, Some(30))];
        assert_eq!(search(&unseen, 0, 1000).verdict, Verdict::Linearizable);
    }
}
