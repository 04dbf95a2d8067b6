//! Limits, timeouts and defaults of task execution: the runtime, the shim,
//! task logs and the task controllers. Each one says why it has its value.

use std::time::Duration;

/// PATH of a task that sets none (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Stop grace period when `ContainerSpec.stop_grace_period_ms` is unset
/// (Docker's and SwarmKit's default).
pub const STOP_GRACE_DEFAULT: Duration = Duration::from_secs(10);

/// Longest stop grace period a task may ask for. A longer one would keep a
/// node's slot busy for longer than any rolling update waits.
pub const STOP_GRACE_MAX: Duration = Duration::from_secs(3600);

/// How long a task may take to die after SIGKILL before `stop` gives up
/// waiting (a process stuck in uninterruptible sleep, e.g. on a dead NFS
/// mount, cannot be killed sooner).
pub const KILL_WAIT_MAX: Duration = Duration::from_secs(10);

/// How long the runtime waits for a new shim to say it started the task.
/// Starting is an exec and a fork; seconds mean the node is overloaded.
pub const SHIM_START_TIMEOUT: Duration = Duration::from_secs(10);

/// One request to a running shim (connect, send, short answer) takes at most
/// this long; waiting for the task's exit is not bounded by it.
pub const SHIM_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest request or answer line on the shim's socket. Requests are a verb
/// and two numbers; anything longer is a confused client.
pub const SHIM_LINE_BYTES_MAX: usize = 256;

/// Clients a shim serves at once (the daemon needs one or two; the rest are
/// refused so that a misbehaving client cannot make a shim grow).
pub const SHIM_CLIENTS_MAX: usize = 16;

/// How often an idle shim wakes up to reap orphaned grandchildren it has
/// adopted as child subreaper (its own child's exit wakes it at once).
pub const SHIM_REAP_INTERVAL: Duration = Duration::from_secs(2);

/// After the task's main process exited, the shim reads what is left in its
/// output pipes for at most this long (a descendant that escaped the kill
/// may hold them open forever).
pub const SHIM_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Bytes read from a task's output pipe at once by the shim.
pub const SHIM_READ_BYTES: usize = 16 * 1024;

/// The longest path a unix socket address holds (`sun_path`, with its NUL).
pub const UNIX_SOCKET_PATH_BYTES_MAX: usize = 107;

/// Longest log line kept as one record; longer lines are split into records
/// of this size (Docker splits at 16 KiB too).
pub const LOG_LINE_BYTES_MAX: usize = 16 * 1024;

/// A task's log file is rotated at this size by default (Docker json-file's
/// common setting); with `LOG_FILES_DEFAULT` files a task keeps ≤ 30 MiB.
pub const LOG_FILE_BYTES_DEFAULT: u64 = 10 * 1024 * 1024;

/// Log files kept per task by default: the current one and two rotated.
pub const LOG_FILES_DEFAULT: u32 = 3;

/// Smallest rotation size accepted: below it, one long line would rotate
/// on every write.
pub const LOG_FILE_BYTES_MIN: u64 = 4 * 1024;

/// Most log files kept per task.
pub const LOG_FILES_MAX: u32 = 100;

/// How often a log follower looks for new lines. Short enough for
/// `service logs -f` to feel live, long enough to cost nothing.
pub const LOG_FOLLOW_POLL: Duration = Duration::from_millis(200);

/// Read buffer of a log reader.
pub const LOG_READ_BUFFER_BYTES: usize = 64 * 1024;

/// How long the controller waits between attempts to reach a task's shim
/// after a failed call (the shim may be busy starting or shutting down).
pub const CONTROLLER_RETRY_DELAY: Duration = Duration::from_secs(1);

/// Failed calls to a running task's shim before its controller gives up and
/// reports the task FAILED.
pub const CONTROLLER_RETRIES_MAX: u32 = 5;

/// A log record is a line escaped as JSON (at most 6 bytes per byte, for
/// `\u00XX`) plus its timestamp and stream; a reader refuses longer records
/// as damaged.
pub const LOG_RECORD_BYTES_MAX: usize = 6 * LOG_LINE_BYTES_MAX + 128;

/// Output of a command run inside a task (a health check probe) that is
/// kept: stdout, then stderr, cut here. Docker keeps 4 KiB of a probe's
/// output too; more would only bloat the task status it is reported in.
pub const EXEC_OUTPUT_BYTES_MAX: usize = 4096;

/// Health check interval and timeout when the check leaves them unset
/// (Docker's defaults).
pub const HEALTH_INTERVAL_DEFAULT: Duration = Duration::from_secs(30);

/// See `HEALTH_INTERVAL_DEFAULT`.
pub const HEALTH_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);

/// Consecutive failed probes that make a task unhealthy when the check
/// leaves it unset, or sets 0 (Docker's default).
pub const HEALTH_RETRIES_DEFAULT: u32 = 3;

/// Shortest wait between two probes of one task, whatever the check asks:
/// a probe is a fork and an exec, and a node runs hundreds of tasks.
pub const HEALTH_INTERVAL_MIN: Duration = Duration::from_millis(100);

/// How long the controller waits past a probe's own timeout for the
/// runtime to report it killed, before it counts the probe as failed and
/// moves on (a runtime that hangs must not stop the monitor).
pub const HEALTH_PROBE_SLACK: Duration = Duration::from_secs(5);

/// A bounded exponential backoff: attempts, first and longest delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub attempts_max: u32,
    pub delay_min: Duration,
    pub delay_max: Duration,
}

/// Getting an image that failed for a passing reason (registry
/// unreachable, a timeout): 5 attempts over about 15 s, then the task fails
/// with the last reason and the orchestrator's restart policy takes over
/// (which retries longer, on any node).
pub const IMAGE_BACKOFF: Backoff = Backoff {
    attempts_max: 5,
    delay_min: Duration::from_secs(1),
    delay_max: Duration::from_secs(8),
};

/// How long `runc --version` may take when the node looks for runc.
pub const RUNC_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Size of the per-task tmpfs holding its secrets and configs: far above
/// what a task needs (Docker caps one secret at 500 KiB), small enough that
/// a task cannot eat the node's memory through it.
pub const TASK_FILES_TMPFS_BYTES: u64 = 16 * 1024 * 1024;

/// Bytes of `/dev/shm` in a container (Docker's default).
pub const CONTAINER_SHM_BYTES: u64 = 64 * 1024 * 1024;

/// Longest overlayfs mount option string: the kernel takes one page of
/// mount data. Images with more layers than fit are refused.
pub const OVERLAY_MOUNT_DATA_BYTES_MAX: usize = 4095;

/// Entries copied from an image into a new volume at most (a bound on a
/// directory tree the node does not control).
pub const VOLUME_COPY_ENTRIES_MAX: usize = 100_000;

const _: () = assert!(IMAGE_BACKOFF.attempts_max >= 1);
const _: () = assert!(LOG_FILE_BYTES_DEFAULT >= LOG_FILE_BYTES_MIN);
const _: () = assert!(LOG_FILES_DEFAULT >= 1 && LOG_FILES_DEFAULT <= LOG_FILES_MAX);
const _: () = assert!(SHIM_CLIENTS_MAX >= 2);
const _: () = assert!(STOP_GRACE_DEFAULT.as_secs() <= STOP_GRACE_MAX.as_secs());
const _: () = assert!(HEALTH_INTERVAL_MIN.as_millis() <= HEALTH_INTERVAL_DEFAULT.as_millis());
