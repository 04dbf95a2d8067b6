//! Every limit of the image crate, with why.

use std::time::Duration;

/// Largest manifest or index accepted: real ones are a few KiB; the
/// distribution spec lets registries refuse above 4 MiB.
pub const MANIFEST_BYTES_MAX: u64 = 4 * 1024 * 1024;
/// Largest image config accepted: real ones are a few KiB (history included).
pub const CONFIG_BYTES_MAX: u64 = 8 * 1024 * 1024;
/// Most layers an image may have. Docker allows 127; with 38-byte short
/// lowerdir paths 64 layers keep the overlay mount options inside one page.
pub const LAYERS_MAX: usize = 64;
/// Largest total of (compressed) layer bytes one image may have.
pub const IMAGE_BYTES_MAX: u64 = 16 * 1024 * 1024 * 1024;
/// Largest unpacked size of one layer: a bound on a decompression bomb.
pub const LAYER_UNPACKED_BYTES_MAX: u64 = 32 * 1024 * 1024 * 1024;
/// Largest archive `image load` accepts (it is spooled to disk first).
pub const ARCHIVE_BYTES_MAX: u64 = 16 * 1024 * 1024 * 1024;
/// Most entries in one archive or layer: a bound on inode exhaustion.
pub const ENTRIES_MAX: u64 = 2_000_000;
/// Time for one manifest or config request, connect included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Time for one layer download: generous for large layers on slow links, but
/// finite so a stalled pull fails and is retried.
pub const BLOB_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Time for a TCP connect to a registry.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time with no byte read before a request is given up.
pub const READ_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts of one registry request on transient errors (unreachable, 5xx).
pub const REQUEST_ATTEMPTS_MAX: u32 = 3;
/// First back-off between attempts; doubled after each.
pub const RETRY_BACKOFF_FIRST: Duration = Duration::from_millis(250);
