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
