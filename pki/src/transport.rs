//! tonic over tokio-rustls: a TLS incoming stream for
//! `Server::serve_with_incoming` that exposes each caller's identity to
//! handlers ([`PeerInfo`]), a lazy mutual-TLS [`tonic::transport::Channel`]
//! to a peer, and a lazy channel over a Unix socket for the local daemon.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::{TlsAcceptor, TlsConnector, client, server};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint, Uri};
use tracing::debug;

use crate::error::{PkiError, Result};
use crate::identity::{NodeSubject, serial_hex_from_der, subject_from_der};
use crate::limits::{
    ACCEPT_ERROR_BACKOFF, ACCEPTED_QUEUE_MAX, CONNECT_TIMEOUT, HANDSHAKE_TIMEOUT,
    HANDSHAKES_IN_FLIGHT_MAX, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT,
};

/// Who is on the other end of a server connection. tonic puts it into
/// every request's extensions: `req.extensions().get::<PeerInfo>()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The caller's TCP address.
    pub remote_addr: SocketAddr,
    /// The caller's identity from its verified client certificate; `None`
    /// when it presented none (e.g. a node still joining).
    pub identity: Option<NodeSubject>,
    /// Serial (lowercase hex) of the caller's certificate, if any.
    pub cert_serial_hex: Option<String>,
}

impl PeerInfo {
    fn from_tls(remote_addr: SocketAddr, stream: &server::TlsStream<TcpStream>) -> PeerInfo {
        let leaf = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|certs| certs.first());
        let Some(leaf) = leaf else {
            return PeerInfo {
                remote_addr,
                identity: None,
                cert_serial_hex: None,
            };
        };
        // rustls verified the chain; a CA-signed certificate rswarm cannot
        // read is treated as anonymous.
        let identity = subject_from_der(leaf.as_ref())
            .inspect_err(
                |e| debug!(%remote_addr, error = %e, "peer certificate has no rswarm identity"),
            )
            .ok();
        PeerInfo {
            remote_addr,
            identity,
            cert_serial_hex: serial_hex_from_der(leaf.as_ref()).ok(),
        }
    }
}

/// A server-side TLS connection accepted by [`tls_incoming`], carrying its
/// [`PeerInfo`] for tonic.
pub struct TlsConn {
    inner: server::TlsStream<TcpStream>,
    peer: PeerInfo,
}

impl TlsConn {
    /// Who is on the other end.
    pub fn peer(&self) -> &PeerInfo {
        &self.peer
    }
}

impl std::fmt::Debug for TlsConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConn")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl Connected for TlsConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Accepts TCP connections on `listener` and completes TLS handshakes with
/// `config`, yielding finished connections for
/// `tonic::transport::Server::serve_with_incoming`.
///
/// Each handshake runs in its own task with a [`HANDSHAKE_TIMEOUT`]; at
/// most [`HANDSHAKES_IN_FLIGHT_MAX`] run at once. Failed handshakes are
/// logged at debug level and dropped. The stream yields an error and ends
/// when the listener fails fatally. Dropping the stream stops the accept
/// task and closes the listener. Must be called inside a tokio runtime.
///
/// [`HANDSHAKE_TIMEOUT`]: crate::limits::HANDSHAKE_TIMEOUT
/// [`HANDSHAKES_IN_FLIGHT_MAX`]: crate::limits::HANDSHAKES_IN_FLIGHT_MAX
pub fn tls_incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
) -> impl Stream<Item = io::Result<TlsConn>> {
    let (tx, rx) = mpsc::channel(ACCEPTED_QUEUE_MAX);
    tokio::spawn(accept_loop(listener, TlsAcceptor::from(config), tx));
    ReceiverStream::new(rx)
}

type AcceptedTx = mpsc::Sender<io::Result<TlsConn>>;

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, tx: AcceptedTx) {
    let slots = Arc::new(Semaphore::new(HANDSHAKES_IN_FLIGHT_MAX));
    loop {
        let accepted = tokio::select! {
            () = tx.closed() => return,
            accepted = next_connection(&listener, &slots) => accepted,
        };
        match accepted {
            Ok((tcp, remote_addr, slot)) => {
                tokio::spawn(handshake(
                    tcp,
                    remote_addr,
                    acceptor.clone(),
                    tx.clone(),
                    slot,
                ));
            }
            Err(e) => {
                debug!(error = %e, "tls listener failed; no longer accepting connections");
                // Best effort: the receiver may be gone already.
                let _receiver_gone = tx.send(Err(e)).await;
                return;
            }
        }
    }
}

/// Waits for a free handshake slot, then for a connection. Retries
/// per-connection and resource-exhaustion errors; returns fatal ones.
async fn next_connection(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> io::Result<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
    // The semaphore is never closed, so acquiring only fails if it were.
    let slot = Arc::clone(slots)
        .acquire_owned()
        .await
        .map_err(|_| io::Error::other("handshake limiter closed"))?;
    loop {
        match listener.accept().await {
            Ok((tcp, addr)) => return Ok((tcp, addr, slot)),
            Err(e) if is_connection_error(&e) => {
                debug!(error = %e, "accepting a connection failed; continuing");
            }
            Err(e) if is_resource_error(&e) => {
                debug!(error = %e, "out of resources accepting a connection; backing off");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn handshake(
    tcp: TcpStream,
    remote_addr: SocketAddr,
    acceptor: TlsAcceptor,
    tx: AcceptedTx,
    _slot: OwnedSemaphorePermit,
) {
    if let Err(e) = tcp.set_nodelay(true) {
        debug!(%remote_addr, error = %e, "could not set TCP_NODELAY");
    }
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            debug!(%remote_addr, error = %e, "tls handshake failed");
            return;
        }
        Err(_elapsed) => {
            debug!(%remote_addr, "tls handshake timed out");
            return;
        }
    };
    let peer = PeerInfo::from_tls(remote_addr, &stream);
    // The slot is held until tonic takes the connection, so a stalled
    // consumer stops the accept loop instead of piling up tasks.
    if tx
        .send(Ok(TlsConn {
            inner: stream,
            peer,
        }))
        .await
        .is_err()
    {
        debug!(%remote_addr, "server stopped; dropping accepted connection");
    }
}

/// Errors that concern one connection only (the peer went away early).
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
    )
}

/// Errors from temporary resource exhaustion (EMFILE, ENFILE, ENOBUFS, ENOMEM).
fn is_resource_error(e: &io::Error) -> bool {
    const EMFILE: i32 = 24;
    const ENFILE: i32 = 23;
    const ENOBUFS: i32 = 105;
    const ENOMEM: i32 = 12;
    matches!(e.raw_os_error(), Some(EMFILE | ENFILE | ENOBUFS | ENOMEM))
        || e.kind() == io::ErrorKind::OutOfMemory
}

/// A lazy mutual-TLS channel to `addr` (`host:port`). Nothing is dialed
/// until the first RPC; each (re)connect dials TCP (with
/// [`CONNECT_TIMEOUT`], TCP_NODELAY), then does the TLS handshake with
/// `config`, verifying the server as `server_name` (usually
/// [`crate::MANAGER_SERVER_NAME`]; a node's ID to reach that very node,
/// since every node certificate names its node). HTTP/2 keep-alive pings detect dead
/// peers.
///
/// [`CONNECT_TIMEOUT`]: crate::limits::CONNECT_TIMEOUT
pub fn tls_channel(addr: &str, config: Arc<ClientConfig>, server_name: &str) -> Result<Channel> {
    let name =
        ServerName::try_from(server_name.to_owned()).map_err(|_| PkiError::InvalidServerName {
            name: server_name.to_owned(),
        })?;
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|source| PkiError::InvalidAddress {
            addr: addr.to_owned(),
            source,
        })?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    let connector = TlsConnector::from(config);
    let addr = addr.to_owned();
    Ok(
        endpoint.connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
            dial_tls(addr.clone(), connector.clone(), name.clone())
        })),
    )
}

async fn dial_tls(
    addr: String,
    connector: TlsConnector,
    name: ServerName<'static>,
) -> io::Result<TokioIo<client::TlsStream<TcpStream>>> {
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr.as_str()))
        .await
        .map_err(|_| timed_out("connecting", &addr))??;
    tcp.set_nodelay(true)?;
    let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, tcp))
        .await
        .map_err(|_| timed_out("tls handshake with", &addr))??;
    Ok(TokioIo::new(tls))
}

/// Whether a TLS handshake with `addr`, verifying it as `server_name`,
/// completes within `within`. A stopped or hung process still has its
/// listening socket accept TCP in the kernel, so only a handshake shows that
/// the daemon itself answers.
pub async fn tls_reachable(
    addr: &str,
    config: Arc<ClientConfig>,
    server_name: &str,
    within: std::time::Duration,
) -> bool {
    let Ok(name) = ServerName::try_from(server_name.to_owned()) else {
        return false;
    };
    let handshake = async {
        let tcp = TcpStream::connect(addr).await?;
        TlsConnector::from(config).connect(name, tcp).await
    };
    matches!(tokio::time::timeout(within, handshake).await, Ok(Ok(_)))
}

fn timed_out(what: &str, addr: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("{what} {addr} timed out"))
}

/// A lazy channel to the local daemon's Unix socket at `path` (no TLS: the
/// socket's file permissions guard it). Nothing is dialed until the first
/// RPC.
pub fn unix_channel(path: PathBuf) -> Channel {
    Endpoint::from_static("http://localhost").connect_with_connector_lazy(tower::service_fn(
        move |_: Uri| {
            let path = path.clone();
            async move { UnixStream::connect(path).await.map(TokioIo::new) }
        },
    ))
}

/// Longest error source chain [`never_connected`] follows; it is short in
/// practice (status, hyper, connect, io), the bound only guards a cycle.
const SOURCE_CHAIN_MAX: usize = 16;

/// Whether a call on a channel from this module failed while connecting,
/// before any byte of the request was sent: then the peer saw nothing.
pub fn never_connected(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    for _ in 0..SOURCE_CHAIN_MAX {
        let Some(err) = source else {
            return false;
        };
        if err.downcast_ref::<tonic::ConnectError>().is_some() {
            return true;
        }
        source = err.source();
    }
    false
}
