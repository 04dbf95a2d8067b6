//! Every timeout, capacity and validity bound of the PKI and transport,
//! with the reason for its value.

use std::time::Duration;

/// How long dialing a peer (TCP connect, and separately the whole connect
/// including TLS) may take. Cluster peers are on a LAN or a nearby WAN, so
/// a healthy one answers in milliseconds; 3 s fails over to another manager
/// quickly while tolerating a busy peer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a server waits for a client to finish the TLS handshake. Stops
/// half-open or malicious connections from holding a handshake slot for
/// long, while leaving ample time for a slow but honest peer.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// At most this many server-side TLS handshakes run (or wait to be handed
/// to tonic) at once. Beyond it the accept loop stops accepting, so a flood
/// of connections costs bounded memory and CPU. 256 is far above what a
/// cluster of a few hundred nodes reconnecting at once needs.
pub const HANDSHAKES_IN_FLIGHT_MAX: usize = 256;

/// Capacity of the queue between the handshake tasks and tonic. tonic
/// drains it as fast as it can spawn connection tasks, so a small queue
/// suffices; when full, handshake tasks wait (holding their slot).
pub const ACCEPTED_QUEUE_MAX: usize = 128;

/// After a resource-exhaustion accept error (too many open files, no
/// buffers) the accept loop pauses this long before trying again, instead
/// of spinning.
pub const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Interval of HTTP/2 pings on client channels. Detects a dead manager
/// (crashed host, cut network) within seconds even when no RPC is running,
/// so agents fail over promptly.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// How long a client waits for a ping's answer before closing the
/// connection. Twice the interval tolerates one slow answer.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Shortest node certificate validity the CA signs. Shorter certificates
/// would need renewing faster than a renewal round trip can be relied on.
pub const NODE_CERT_VALIDITY_MIN: Duration = Duration::from_secs(60 * 60);

/// Longest node certificate validity the CA signs (10 years of 365 days).
/// Longer certificates would outlive any sensible rotation policy.
pub const NODE_CERT_VALIDITY_MAX: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

/// Validity of a new root CA (20 years of 365 days). The CA cannot be
/// renewed without re-joining every node, so it must outlive the cluster.
pub const ROOT_CA_VALIDITY: Duration = Duration::from_secs(20 * 365 * 24 * 60 * 60);

/// How far certificates are backdated, so a peer whose clock is somewhat
/// behind ours still accepts a freshly issued certificate.
pub const CLOCK_SKEW_BACKDATE: Duration = Duration::from_secs(60 * 60);
