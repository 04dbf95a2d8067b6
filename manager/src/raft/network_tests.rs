//! The transport against a peer that cannot be reached: replication must
//! wait out openraft's backoff between attempts, not dial in a loop.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use openraft::BasicNode;

use super::*;
use crate::raft::node::RaftNode;
use crate::store::Store;

/// How long the dials are counted.
const WATCH: Duration = Duration::from_secs(2);

/// Dials allowed while watching: heartbeats dial once per 50 ms interval
/// (40 in 2 s) and replication once per backoff (starting at 200 ms and
/// doubling: a handful); a retry loop dials thousands of times.
const DIALS_MAX: usize = 100;

/// A listener that accepts every connection and closes it at once, so that
/// every dial fails (the TLS handshake sees the connection end) and is
/// counted.
async fn dead_peer() -> (String, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let dials = Arc::new(AtomicUsize::new(0));
    let counter = dials.clone();
    let acceptor = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (addr, dials, acceptor)
}

/// Goal: a leader whose peer is down dials it about as often as the
/// backoff allows. The chaos test found a leader dialing a killed manager
/// about 1,000 times a second (two warnings each), because the backoff is
/// applied when the first request of a stream is made, and the transport
/// dialed before asking for it.
/// Method: a one-node leader adds a learner whose address accepts and closes
/// every connection; count the connections in 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_to_an_unreachable_peer_backs_off() {
    let (dead, dials, acceptor) = dead_peer().await;
    let dir = tempfile::tempdir().unwrap();
    let channels = ChannelCache::new(rswarm_pki::bootstrap_client_config());
    let node = RaftNode::open(dir.path(), 1, Store::new(), channels)
        .await
        .unwrap();
    node.bootstrap("127.0.0.1:9".to_string()).await.unwrap();
    node.raft()
        .add_learner(2, BasicNode { addr: dead }, false)
        .await
        .unwrap();
    let before = dials.load(Ordering::SeqCst);
    tokio::time::sleep(WATCH).await;
    let dialed = dials.load(Ordering::SeqCst) - before;
    acceptor.abort();
    node.shutdown().await;
    println!("{dialed} dials of an unreachable peer in {WATCH:?}");
    assert!(
        dialed <= DIALS_MAX,
        "{dialed} dials of an unreachable peer in {WATCH:?}: replication does not back off"
    );
    assert!(
        dialed > 0,
        "the peer was never dialed: the test proves nothing"
    );
}
