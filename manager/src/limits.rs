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
