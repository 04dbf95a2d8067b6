//! The scheduler's limits and timings, each with why it has its value.
//! Relations between them are checked at compile time.

use std::time::Duration;

use crate::store::limits::{OBJECT_SIZE_MAX, PROPOSAL_SIZE_MAX};

/// Most task updates in one proposal. SwarmKit commits at most 200 changes
/// per transaction; larger batches amortise the Raft round trip and fsync,
/// and 1,000 ordinary tasks (a few hundred bytes each) stay far below the
/// proposal size limit. A size budget below guards against large specs.
pub const TASKS_PER_PROPOSAL_MAX: usize = 1_000;

/// Most encoded bytes of task updates in one proposal: the store's limit
/// minus room for the proposal envelope (timestamp, field tags).
pub const PROPOSAL_BYTES_MAX: usize = PROPOSAL_SIZE_MAX - 64 * 1024;

/// After the first store change that brings work, wait this long for more
/// before placing: a service create or scale commits its tasks in batches
/// of up to a thousand within a few milliseconds, and placing them together
/// spreads them in one pass. SwarmKit waits 50 ms; 30 ms keeps the added
/// latency of a single task small.
pub const DEBOUNCE: Duration = Duration::from_millis(30);

/// Unplaceable tasks are tried again whenever a node or the set of active
/// tasks changes; this period is the safety net for a change the scheduler
/// could not see (a watch that lagged is rebuilt from a full scan anyway),
/// rare enough to cost nothing on a quiet cluster.
pub const RETRY_PERIOD: Duration = Duration::from_secs(10);

/// A follower checks this often whether it has become the leader, so a new
/// leader starts placing tasks within this delay after its election.
pub const LEADERSHIP_POLL_PERIOD: Duration = Duration::from_millis(200);

/// Most constraints in one placement. Real services use a handful; the
/// bound keeps the per-node filter cost (every constraint on every node, for
/// every group of tasks) predictable.
pub const CONSTRAINTS_MAX: usize = 64;

/// Most spread levels in one placement. Each level splits the nodes again;
/// more than a few levels (region, zone, rack) have no use.
pub const SPREAD_PREFERENCES_MAX: usize = 8;

const _: () = assert!(OBJECT_SIZE_MAX < PROPOSAL_BYTES_MAX);
const _: () = assert!(DEBOUNCE.as_millis() < LEADERSHIP_POLL_PERIOD.as_millis());
const _: () = assert!(LEADERSHIP_POLL_PERIOD.as_millis() < RETRY_PERIOD.as_millis());
