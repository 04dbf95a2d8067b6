//! Limits, timeouts and defaults of the orchestrators. Each value says why it
//! is what it is; relations between them are checked at compile time.

use std::time::Duration;

use crate::store::limits::PROPOSAL_SIZE_MAX;

/// Store changes in one proposal. A task is a few hundred bytes, so 1,000 of
/// them stay far below the proposal size limit, and a batch that size
/// amortises one fsync over many tasks (100,000 tasks = 100 proposals).
pub const PROPOSAL_ACTIONS_MAX: usize = 1_000;

/// Encoded bytes of one proposal we build: two thirds of the store's limit,
/// so a batch of unusually large tasks (long env lists) is split before the
/// store would refuse it.
pub const PROPOSAL_BYTES_MAX: usize = PROPOSAL_SIZE_MAX / 3 * 2;

/// Proposals of one pass in flight at once. The Raft log commits queued
/// writes with one fsync, so a few in flight cut the fsyncs of a large
/// batch (100,000 new tasks) several times; more gain little and queue
/// ahead of other writers (agents' status reports).
pub const PROPOSALS_IN_FLIGHT_MAX: usize = 4;

/// Store changes planned in one pass over all dirty services. Bounds how long
/// a pass holds the store's read lock and lets other services make progress
/// while a 100,000-replica service is being created (the rest follows in the
/// next pass, at once).
pub const PASS_ACTIONS_MAX: usize = 10_000;

/// After a store change, wait this long for more before acting: a control-API
/// write or a status batch from an agent arrives as a burst of events.
pub const DEBOUNCE_QUIET: Duration = Duration::from_millis(20);

/// Act at the latest this long after the first change of a burst, so a
/// steady stream of events (a large scheduling wave) cannot starve a pass.
pub const DEBOUNCE_MAX: Duration = Duration::from_millis(200);

/// How often a follower checks whether it became leader, and a leader
/// whether it still is (proposals also fail at once on a lost leadership).
/// Elections take well under a second; a quarter second is quick enough.
pub const LEADERSHIP_POLL: Duration = Duration::from_millis(250);

/// Pause after a pass whose writes failed for a reason other than a conflict
/// (no quorum, storage error), so a sick cluster is not hammered.
pub const FAILED_PASS_BACKOFF: Duration = Duration::from_millis(500);

/// Restart delay when the policy leaves it unset (SwarmKit's default).
pub const RESTART_DELAY_DEFAULT: Duration = Duration::from_secs(5);

/// A replacement held back until its predecessor stopped starts anyway after
/// this long (SwarmKit's value): a node that never reports the stop must not
/// block the slot forever.
pub const STOP_WAIT_MAX: Duration = Duration::from_secs(60);

/// Restart attempts remembered per slot whatever the policy says, so a
/// crash-looping task without `max_attempts` does not grow memory forever.
pub const RESTART_ATTEMPTS_KEPT_MAX: usize = 64;

/// Tasks updated at once when the update config leaves it unset (SwarmKit).
pub const UPDATE_PARALLELISM_DEFAULT: u64 = 1;

/// How long an updated task is watched for failure when unset (SwarmKit).
pub const UPDATE_MONITOR_DEFAULT: Duration = Duration::from_secs(5);

/// Services updating (or rebalancing) at the same time. Each one keeps a
/// little memory and is re-planned on every event of its tasks; further
/// services wait until one finishes.
pub const UPDATERS_MAX: usize = 64;

/// A service waiting for a free updater slot looks again after this long.
pub const UPDATER_WAIT_RETRY: Duration = Duration::from_secs(1);

const _: () = assert!(PROPOSAL_BYTES_MAX < PROPOSAL_SIZE_MAX);
const _: () = assert!(PROPOSAL_ACTIONS_MAX <= PASS_ACTIONS_MAX);
const _: () = assert!(DEBOUNCE_QUIET.as_millis() < DEBOUNCE_MAX.as_millis());
const _: () = assert!(RESTART_DELAY_DEFAULT.as_millis() < STOP_WAIT_MAX.as_millis());
