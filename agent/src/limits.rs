//! The agent's limits and timeouts.

use std::time::Duration;

/// One heartbeat or CA call waits at most this long.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// First retry delay after a failed heartbeat; doubles up to
/// `SESSION_BACKOFF_MAX` (SwarmKit: 100 ms doubling to 8 s). Short, so a
/// node finds a new leader within a second of an election.
pub const SESSION_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest wait between session attempts.
pub const SESSION_BACKOFF_MAX: Duration = Duration::from_secs(8);

/// Redirects followed in a row before the agent backs off (a follower points
/// at the leader; two hops mean the leadership is moving).
pub const REDIRECTS_MAX: u32 = 3;

/// Attempts to download the root CA while joining.
pub const CA_DOWNLOAD_ATTEMPTS: u32 = 3;

/// Managers remembered from heartbeat answers.
pub const MANAGERS_MAX: usize = 16;

/// Largest Assignments message the agent accepts. A COMPLETE set lists every
/// task of the node in one message: 64 MiB holds thousands of tasks with
/// large specs, and stays a bound a broken manager cannot exceed.
pub const ASSIGNMENTS_MESSAGE_SIZE_MAX: usize = 64 * 1024 * 1024;

/// Most status updates in one `UpdateTaskStatus` call: under the managers'
/// per-call limit (1,024), and large enough that a node starting a hundred
/// tasks reports them in one call.
pub const STATUS_BATCH_MAX: usize = 1000;

/// Tasks with a status update waiting to be sent. Updates of one task are
/// coalesced, so this bounds the number of tasks, not of updates: far above
/// what one node runs. Reporting more waits until the queue drains.
pub const STATUS_QUEUE_TASKS_MAX: usize = 16_384;
