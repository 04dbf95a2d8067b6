//! The manager's cluster listener: gRPC over mutual TLS on `--listen-addr`,
//! carrying Raft, the control API, the CA and the dispatcher.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use rswarm_manager::Manager;
use rswarm_pki::CredentialsHandle;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// Concurrent streams one peer may open on one connection.
const STREAMS_PER_CONNECTION_MAX: u32 = 1024;

/// A manager and the listener serving it.
pub struct ManagerServer {
    manager: Manager,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl ManagerServer {
    /// Binds `listen` and serves `manager` on it.
    pub async fn start(
        manager: Manager,
        listen: SocketAddr,
        creds: &CredentialsHandle,
    ) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| {
            format!("cannot listen on {listen}: is another daemon using it? pick another with --listen-addr")
        })?;
        let tls = rswarm_pki::server_config(creds)?;
        let incoming = rswarm_pki::tls_incoming(listener, tls);
        let cancel = CancellationToken::new();
        let routes = manager.routes();
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
        Ok(Self {
            manager,
            cancel,
            task,
        })
    }

    /// The manager served.
    pub fn manager(&self) -> &Manager {
        &self.manager
    }

    /// Stops the listener, then the manager.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        // Open streams (watches) may hold the server: do not wait forever.
        if tokio::time::timeout(Duration::from_secs(2), &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
        self.manager.shutdown().await;
    }
}
