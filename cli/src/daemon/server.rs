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

/// A running cluster listener.
pub struct ClusterServer {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl ClusterServer {
    /// Binds `listen` and serves `routes` on it.
    pub async fn start(
        listen: SocketAddr,
        creds: &CredentialsHandle,
        routes: Routes,
    ) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| {
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
