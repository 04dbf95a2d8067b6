//! The manager's limits, timeouts and defaults, in one place. Each value says
//! why it is what it is; relations between them are checked at compile time.

use std::time::Duration;

/// Largest Raft message (AppendEntries batch, vote) between managers. A
/// proposal is at most a few MiB and openraft batches up to
/// `max_payload_entries` of them, so the transport allows more than the
/// user-facing 4 MiB API limit.
pub const RAFT_MESSAGE_SIZE_MAX: usize = 64 * 1024 * 1024;

/// Largest snapshot a manager accepts from its leader. The store holds
/// cluster metadata (nodes, services, tasks), not data: 1 GiB is far above
/// any real cluster and stops a broken peer from exhausting memory.
pub const SNAPSHOT_SIZE_MAX: usize = 1024 * 1024 * 1024;

/// Snapshots travel in chunks of this size, under the gRPC message limit.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;

/// Largest request the control API and the CA accept (Docker's limit).
pub const API_MESSAGE_SIZE_MAX: usize = 4 * 1024 * 1024;

/// Every API call answers within this time, or fails saying why (usually:
/// no leader). A user never waits on a cluster that lost its quorum.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a "no leader" answer waits for each other manager's TLS
/// handshake when it counts the managers that answer; the probes run at
/// once, so the answer takes at most this long.
pub const MANAGER_PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// How long a call waits for an election to finish before it reports that
/// the cluster has no leader. Elections take well under a second.
pub const LEADER_WAIT_MAX: Duration = Duration::from_secs(3);

/// Raft heartbeat: a follower notices a dead leader after about
/// `ELECTION_TIMEOUT_MAX + U(MIN, MAX)`, 0.6–0.8 s with these values, with
/// headroom for fsync stalls on loaded hosts.
pub const RAFT_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(50);
/// Lower bound of the randomized election timeout.
pub const ELECTION_TIMEOUT_MIN: Duration = Duration::from_millis(200);
/// Upper bound of the randomized election timeout.
pub const ELECTION_TIMEOUT_MAX: Duration = Duration::from_millis(400);

const _: () = assert!(RAFT_HEARTBEAT_INTERVAL.as_millis() * 2 < ELECTION_TIMEOUT_MIN.as_millis());
const _: () = assert!(ELECTION_TIMEOUT_MAX.as_millis() < LEADER_WAIT_MAX.as_millis());
const _: () = assert!(LEADER_WAIT_MAX.as_millis() < REQUEST_TIMEOUT.as_millis());

/// Take a snapshot (and allow the log before it to be purged) every this many
/// entries: SwarmKit uses 10,000; a snapshot of a small store is cheap.
pub const SNAPSHOT_EVERY_ENTRIES: u64 = 10_000;

/// Entries kept behind a snapshot so a briefly slow follower can catch up
/// from the log instead of a full snapshot (SwarmKit keeps 500).
pub const LOG_KEPT_AFTER_SNAPSHOT: u64 = 1_000;

/// A manager whose last Raft acknowledgement is older than this shows as
/// Unreachable: several election timeouts without an answer.
pub const MANAGER_UNREACHABLE_AFTER: Duration = Duration::from_secs(2);

/// Default agent heartbeat period (a cluster setting, chosen at init).
pub const HEARTBEAT_PERIOD_DEFAULT: Duration = Duration::from_secs(1);
/// The shortest heartbeat period `init` accepts.
pub const HEARTBEAT_PERIOD_MIN: Duration = Duration::from_millis(100);
/// The longest heartbeat period `init` accepts.
pub const HEARTBEAT_PERIOD_MAX: Duration = Duration::from_secs(60);
/// A node is Down after this many missed heartbeats.
pub const HEARTBEATS_MISSED_MAX: u32 = 3;

/// A node whose assignments stream broke is Down unless it heartbeats within
/// this many periods: a live node beats within one period whatever happened
/// to its stream, and a restarted daemon within a second or so, while a dead
/// host is noticed in two periods instead of three (a network partition,
/// which closes nothing, still takes three).
pub const DISCONNECTED_BEATS_MAX: f64 = 2.0;

/// Default lifetime of node certificates (SwarmKit's default).
pub const NODE_CERT_EXPIRY_DEFAULT: Duration = Duration::from_secs(90 * 24 * 3600);
/// Shortest node certificate lifetime (SwarmKit's minimum).
pub const NODE_CERT_EXPIRY_MIN: Duration = Duration::from_secs(3600);

/// Old tasks kept per slot (SwarmKit's default).
pub const TASK_HISTORY_DEFAULT: u32 = 5;

/// How often the leader reconciles Raft membership with the nodes' roles.
pub const MEMBERSHIP_RECONCILE_PERIOD: Duration = Duration::from_millis(500);

/// Retries of an internal read-modify-write that met a concurrent change.
pub const CONFLICT_RETRIES_MAX: u32 = 8;

/// `service logs` waits this long for a node to connect and answer before it
/// reports the node as unreachable and goes on without it: the command must
/// never hang on a dead node (a long-standing swarm complaint).
pub const LOG_NODE_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// With `service logs -f`, the store is checked this often for tasks that
/// started after the command did.
pub const LOG_FOLLOW_POLL: Duration = Duration::from_secs(1);

/// Log batches queued for one `service logs` client; a slow client slows the
/// node streams instead of growing memory.
pub const LOG_STREAM_QUEUE_MAX: usize = 256;

// ---- Dispatcher: assignments ----

/// Assignment streams one manager serves at once. The design target is 1,000
/// nodes; each node holds at most one stream (a new one replaces the old), so
/// 10× headroom only matters against misbehaving clients. An idle stream
/// costs a few KiB; its queue is bounded by `ASSIGNMENTS_NODE_QUEUE_MAX`.
pub const ASSIGNMENT_STREAMS_MAX: usize = 10_000;

/// Changes queued for one node's stream between the fan-out and the stream.
/// A node gets about 100 changes when a large service is created or removed,
/// so this is 10× that burst. A node whose queue is full (its connection
/// stalls) has its stream ended: it reconnects and gets a fresh COMPLETE
/// set, so no change is ever dropped silently, and a slow node cannot hold
/// more than this many tasks of the leader's memory.
pub const ASSIGNMENTS_NODE_QUEUE_MAX: usize = 1024;

/// An INCREMENTAL message goes out once no change arrived for this long
/// (SwarmKit's `batchingWaitTime`): a scheduler batch lands in one message
/// instead of one message per task.
pub const ASSIGNMENTS_BATCH_QUIET: Duration = Duration::from_millis(100);

/// A change to a stream that sent nothing for `ASSIGNMENTS_BATCH_QUIET`
/// goes out after this long instead: enough to gather the rest of the Raft
/// entry it came in (a scheduler pass's changes arrive together), short
/// enough that a lone new task does not wait the quiet period (it was most
/// of a container's start latency).
pub const ASSIGNMENTS_BATCH_GATHER: Duration = Duration::from_millis(5);

/// Longest a change waits in a batch while changes keep arriving, so a
/// steady trickle cannot postpone a message forever.
pub const ASSIGNMENTS_BATCH_DELAY_MAX: Duration = Duration::from_millis(500);

/// Most tasks and removals in one INCREMENTAL message. SwarmKit uses 100;
/// a node receiving a 100-task service gets it in one message, and the agent
/// handles each change cheaply, so 500 keeps messages few without making
/// any one large.
pub const ASSIGNMENTS_BATCH_CHANGES_MAX: usize = 500;

/// An INCREMENTAL message is sent once its tasks reach this many encoded
/// bytes, whatever their count: tasks with large specs stay far below the
/// agent's decoding limit.
pub const ASSIGNMENTS_BATCH_BYTES_MAX: usize = 1024 * 1024;

/// How often the fan-out checks it still leads in the same term; on a change
/// every stream ends so nodes follow the new leader. A tenth of a second is
/// negligible next to an election.
pub const DISPATCHER_LEADERSHIP_CHECK_PERIOD: Duration = Duration::from_millis(100);

const _: () =
    assert!(ASSIGNMENTS_BATCH_QUIET.as_millis() < ASSIGNMENTS_BATCH_DELAY_MAX.as_millis());
const _: () = assert!(ASSIGNMENTS_BATCH_GATHER.as_millis() < ASSIGNMENTS_BATCH_QUIET.as_millis());
const _: () = assert!(ASSIGNMENTS_BATCH_CHANGES_MAX < ASSIGNMENTS_NODE_QUEUE_MAX);

// ---- Dispatcher: task status ----

/// Most status updates in one `UpdateTaskStatus` call (SwarmKit's agent
/// sends at most 1,024). Larger calls are refused so one call always fits
/// one Raft proposal's worth of work.
pub const STATUS_UPDATES_PER_CALL_MAX: usize = 1024;

/// Calls waiting for their batch to be committed. A full queue makes new
/// calls wait (backpressure on the agents) within `REQUEST_TIMEOUT`; at
/// ≤1,024 small updates per call this bounds the queue to a few tens of MiB.
pub const STATUS_QUEUE_MAX: usize = 1024;

/// A status update waits at most this long for others to join its batch
/// (SwarmKit's dispatcher flushes every 100 ms): thousands of nodes' reports
/// become a handful of Raft writes per second.
pub const STATUS_FLUSH_DELAY: Duration = Duration::from_millis(100);

/// A batch is committed at once when it holds this many updates (SwarmKit:
/// 10,000), without waiting for `STATUS_FLUSH_DELAY`.
pub const STATUS_BATCH_UPDATES_MAX: usize = 10_000;

/// Most tasks written by one status proposal. A task with its spec is a few
/// KiB at most, so 1,000 stay under `PROPOSAL_SIZE_MAX` (3 MiB) together
/// with `STATUS_PROPOSAL_BYTES_MAX`.
pub const STATUS_PROPOSAL_TASKS_MAX: usize = 1000;

/// A status proposal is cut once its tasks reach this many encoded bytes,
/// well under `PROPOSAL_SIZE_MAX` whatever the size of the task specs.
pub const STATUS_PROPOSAL_BYTES_MAX: usize = 2 * 1024 * 1024;

/// Longest status message or error text stored: agents report runtime errors
/// verbatim (image pulls can be long), and a task must stay far below
/// `OBJECT_SIZE_MAX` so one report can never make a whole batch fail.
pub const STATUS_TEXT_BYTES_MAX: usize = 2048;

/// How long a status write refused because the leader's lease lapsed is
/// retried. The lease lapses when followers acknowledge nothing for an
/// election timeout (busy with a burst of large entries on a loaded host);
/// it usually returns within a few heartbeats, and the calls waiting on the
/// write have `REQUEST_TIMEOUT` in all.
pub const STATUS_LEASE_WAIT_MAX: Duration = Duration::from_secs(2);

/// Pause between two attempts while the leader's lease has lapsed: a
/// heartbeat round trip.
pub const STATUS_LEASE_RETRY_PERIOD: Duration = Duration::from_millis(50);

const _: () = assert!(STATUS_UPDATES_PER_CALL_MAX <= STATUS_BATCH_UPDATES_MAX);
const _: () = assert!(
    STATUS_FLUSH_DELAY.as_millis() + STATUS_LEASE_WAIT_MAX.as_millis()
        < REQUEST_TIMEOUT.as_millis()
);
const _: () = assert!(STATUS_PROPOSAL_BYTES_MAX < crate::store::limits::PROPOSAL_SIZE_MAX);
const _: () = assert!(STATUS_FLUSH_DELAY.as_millis() < REQUEST_TIMEOUT.as_millis());

/// Largest secret or config payload (Docker's limit): these are small files
/// (keys, certificates, settings), and every manager holds all of them in
/// memory and every node that needs one receives it whole.
pub const OBJECT_DATA_BYTES_MAX: usize = 500 * 1024;

const _: () = assert!(OBJECT_DATA_BYTES_MAX * 2 < crate::store::limits::OBJECT_SIZE_MAX);
