//! Limits of the replicated store and of its durable Raft log. Each value
//! says why it is what it is; the relations between them are checked at
//! compile time.

/// Largest object (one `Object`, protobuf-encoded) the store accepts. Configs
/// and secrets carry user data: Docker caps them at 500 KiB of payload, so
/// 1 MiB leaves room for labels and metadata while keeping one object far
/// below a Raft message and a snapshot chunk.
pub const OBJECT_SIZE_MAX: usize = 1024 * 1024;

/// Largest proposal (one Raft log entry, protobuf-encoded). It must fit in one
/// control-API request (4 MiB) with room for the envelope, and several of
/// them must fit in one Raft AppendEntries message.
pub const PROPOSAL_SIZE_MAX: usize = 3 * 1024 * 1024;

/// Events kept for watchers that resume from an older version (SwarmKit keeps
/// a similar window). A watcher further behind lists again: cheaper than
/// keeping history forever.
pub const WATCH_HISTORY_MAX: usize = 10_000;

/// Bytes of events kept for resuming watchers, whatever their count: 10,000
/// events of 1 MiB would otherwise pin 10 GiB. 64 MiB holds the full event
/// count for ordinary (kilobyte-sized) objects.
pub const WATCH_HISTORY_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Applied batches queued for each live watcher. One slot holds a whole
/// batch, so a large proposal never overflows it by itself; a watcher more
/// than this many batches behind is ended with `Lagged` rather than silently
/// skipping changes.
pub const WATCH_QUEUE_MAX: usize = 4096;

/// At most this many IDs are listed in an "ambiguous reference" message; the
/// count is always exact. Enough to pick the right one, short enough to read.
pub const AMBIGUOUS_LIST_MAX: usize = 10;

/// Write requests (appends, vote and commit-pointer saves, truncations,
/// purges) queued for the Raft log's writer thread. Everything queued is
/// committed in one transaction and one fsync (group commit); a full queue
/// makes openraft wait, which is the backpressure a slow disk needs.
pub const LOG_WRITE_QUEUE_MAX: usize = 256;

const _: () = assert!(OBJECT_SIZE_MAX < PROPOSAL_SIZE_MAX);
const _: () = assert!(PROPOSAL_SIZE_MAX < crate::limits::API_MESSAGE_SIZE_MAX);
const _: () = assert!(PROPOSAL_SIZE_MAX < crate::limits::RAFT_MESSAGE_SIZE_MAX);
