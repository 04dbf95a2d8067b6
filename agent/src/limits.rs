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

/// Largest task record the worker reads back from disk. A record holds one
/// task (at most 1 MiB in the store) and its status.
pub const TASK_RECORD_SIZE_MAX: u64 = 2 * 1024 * 1024;

/// Assignment messages queued between the stream and the worker; the stream
/// waits when the worker is behind, so nothing is dropped.
pub const ASSIGNMENTS_QUEUE_MAX: usize = 16;

/// Status changes queued from the task controllers to the worker. A
/// controller waits when it is full: back-pressure, not loss.
pub const STATUS_UPDATES_QUEUE_MAX: usize = 1024;

/// Log lines per `TaskLogs` message: big enough to amortise the framing,
/// small enough to keep messages far under the gRPC size limit.
pub const LOG_BATCH_LINES_MAX: usize = 256;

/// Tasks one `TaskLogs` call may ask for (a service's tasks on one node).
pub const LOG_REQUEST_TASKS_MAX: usize = 10_000;
