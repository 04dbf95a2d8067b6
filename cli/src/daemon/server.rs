//! The node's cluster listener: gRPC over mutual TLS on `--listen-addr`.
//! Every node serves its agent's API there (managers read task logs from
//! it); a manager also serves Raft, the control API, the CA and the
//! dispatcher. The routes are fixed per listener, so a role change restarts
//! the listener with the new set.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use rswarm_pki::CredentialsHandle;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tracing::{error, info};

/// Concurrent streams one peer may open on one connection.
const STREAMS_PER_CONNECTION_MAX: u32 = 1024;

/// Open streams (watches, log follows) may hold the server this long on
/// stop before they are cut.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// After this daemon stopped its own listener, how long a new one retries
/// a port still in use: the old listener closes when its accept task next
/// runs, which may be just after the stop returns.
pub const REBIND_WAIT: Duration = Duration::from_secs(3);
/// Pause between such retries.
const REBIND_PAUSE: Duration = Duration::from_millis(50);

/// A running cluster listener.
pub struct ClusterServer {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl ClusterServer {
    /// Binds `listen` and serves `routes` on it. A port in use is retried
    /// for `wait_in_use` (zero: not at all).
    pub async fn start(
        listen: SocketAddr,
        creds: &CredentialsHandle,
        routes: Routes,
        wait_in_use: Duration,
    ) -> Result<Self> {
        let listener = bind(listen, wait_in_use).await.with_context(|| {
            format!("cannot listen on {listen}: is another daemon using it? pick another with --listen-addr")
        })?;
        let tls = rswarm_pki::server_config(creds)?;
        let incoming = rswarm_pki::tls_incoming(listener, tls);
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        let task = tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .http2_keepalive_interval(Some(Duration::from_secs(10)))
                .http2_keepalive_timeout(Some(Duration::from_secs(20)))
                .max_concurrent_streams(Some(STREAMS_PER_CONNECTION_MAX))
                .add_routes(routes)
                .serve_with_incoming_shutdown(incoming, stop.cancelled())
                .await;
            if let Err(e) = served {
                error!("cluster listener failed: {e}");
            }
        });
        info!(%listen, "cluster listener started");
        Ok(Self { cancel, task })
    }

    /// Stops the listener.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        if tokio::time::timeout(STOP_GRACE, &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }
}

/// Binds `listen`, retrying "address in use" for `wait`.
async fn bind(listen: SocketAddr, wait: Duration) -> std::io::Result<tokio::net::TcpListener> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::net::TcpListener::bind(listen).await {
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(REBIND_PAUSE).await;
            }
            result => return result,
        }
    }
}
