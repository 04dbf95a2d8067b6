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

/// Largest Assignments message the agent accepts. A COMPLETE set lists every
/// task of the node in one message: 64 MiB holds thousands of tasks with
/// large specs, and stays a bound a broken manager cannot exceed.
pub const ASSIGNMENTS_MESSAGE_SIZE_MAX: usize = 64 * 1024 * 1024;

/// A node that lost an established Assignments stream reconnects after a
/// random pause of up to this long. When the leader changes every node loses
/// its stream at once, and each reconnection costs the new leader a COMPLETE
/// set: 1,000 nodes spread over a second instead of arriving together (an
/// election already takes about that long).
pub const ASSIGNMENTS_RECONNECT_SPREAD: Duration = Duration::from_secs(1);

/// Most status updates in one `UpdateTaskStatus` call: under the managers'
/// per-call limit (1,024), and large enough that a node starting a hundred
/// tasks reports them in one call.
pub const STATUS_BATCH_MAX: usize = 1000;

/// Tasks with a status update waiting to be sent. Updates of one task are
/// coalesced, so this bounds the number of tasks, not of updates: far above
/// what one node runs. Reporting more waits until the queue drains.
pub const STATUS_QUEUE_TASKS_MAX: usize = 16_384;

/// Most nodes one simulator runs: each holds two connections to the leader,
/// so 10,000 already needs a raised open-file limit on both sides; and the
/// advertised ports (`SIM_ADVERTISE_PORT_BASE` + index) must stay valid.
pub const SIM_NODES_MAX: usize = 10_000;

/// Simulated nodes advertise `127.0.0.1:<base + index>`: nothing listens
/// there, the address only tells them apart. 40,000 + 10,000 < 65,536.
pub const SIM_ADVERTISE_PORT_BASE: usize = 40_000;

/// Simulated joins in flight. Each join is a CA download, a signature and
/// a Raft write on the leader; a few at a time keep the managers responsive
/// while 1,000 nodes join within a minute.
pub const SIM_JOINS_IN_FLIGHT_MAX: usize = 8;

/// Pause between starting two simulated nodes, so their first heartbeats and
/// TLS handshakes reach the leader spread over seconds, not all at once
/// (1,000 nodes start in 5 s).
pub const SIM_START_INTERVAL: Duration = Duration::from_millis(5);

/// Attempts to join one simulated node while the manager is unreachable or
/// has no leader; a refusal (wrong token) fails at once.
pub const SIM_JOIN_ATTEMPTS: u32 = 5;

/// Assignments messages waiting for a simulated node's driver. The driver
/// only updates a map per message, so a handful is plenty; a full queue
/// makes the stream wait, which is the backpressure the manager expects.
pub const SIM_ASSIGNMENTS_QUEUE_MAX: usize = 16;

const _: () = assert!(SIM_ADVERTISE_PORT_BASE + SIM_NODES_MAX <= u16::MAX as usize);

/// How long a task waits for a secret or config the managers have not
/// delivered before it is REJECTED naming it. They come with (or before)
/// the task, so a wait means a manager is still fetching the secrets key
/// after an election: seconds, far less than this.
pub const TASK_INPUTS_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(60);
