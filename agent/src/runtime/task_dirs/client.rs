//! The runtime's side of the shim protocol (`shim::protocol`): one
//! connection per call, a line out, a line back.

use std::io;
use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::runtime::limits::{SHIM_CALL_TIMEOUT, SHIM_LINE_BYTES_MAX};
use crate::shim::protocol::{Reply, Request};

/// Why a call to a shim failed.
#[derive(Debug)]
pub(super) enum CallError {
    /// Nobody listens on the socket: the shim is not running.
    Unreachable(io::Error),
    /// The connection broke or closed before the answer.
    Io(io::Error),
    /// No answer within `SHIM_CALL_TIMEOUT`.
    Timeout,
    /// An answer that is not in the protocol.
    BadReply(String),
}

/// Sends `request` and returns the answer, within `SHIM_CALL_TIMEOUT`.
pub(super) async fn call(socket: &Path, request: Request) -> Result<Reply, CallError> {
    let exchange = async {
        let mut stream = connect(socket).await?;
        send(&mut stream, request).await?;
        read_reply(&mut stream).await
    };
    tokio::time::timeout(SHIM_CALL_TIMEOUT, exchange)
        .await
        .unwrap_or(Err(CallError::Timeout))
}

/// Returns once the shim says the task ended (its exit record is then on
/// disk). Unbounded in time: the task may run for months. Cancel safe.
pub(super) async fn wait_for_exit(socket: &Path) -> Result<(), CallError> {
    let mut stream = tokio::time::timeout(SHIM_CALL_TIMEOUT, connect(socket))
        .await
        .unwrap_or(Err(CallError::Timeout))?;
    send(&mut stream, Request::Wait).await?;
    match read_reply(&mut stream).await? {
        Reply::Exited => Ok(()),
        other => Err(CallError::BadReply(format!("{other:?}"))),
    }
}

async fn connect(socket: &Path) -> Result<UnixStream, CallError> {
    UnixStream::connect(socket)
        .await
        .map_err(CallError::Unreachable)
}

async fn send(stream: &mut UnixStream, request: Request) -> Result<(), CallError> {
    stream
        .write_all(request.to_line().as_bytes())
        .await
        .map_err(CallError::Io)
}

/// Reads one answer line of at most `SHIM_LINE_BYTES_MAX` bytes.
async fn read_reply(stream: &mut UnixStream) -> Result<Reply, CallError> {
    let mut line = Vec::with_capacity(32);
    let mut byte = [0u8; 64];
    loop {
        let n = stream.read(&mut byte).await.map_err(CallError::Io)?;
        if n == 0 {
            return Err(CallError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the shim closed the connection without an answer",
            )));
        }
        line.extend_from_slice(&byte[..n]);
        if let Some(newline) = line.iter().position(|&b| b == b'\n') {
            let text = String::from_utf8_lossy(&line[..newline]);
            return Reply::parse(&text).ok_or_else(|| CallError::BadReply(text.into_owned()));
        }
        if line.len() > SHIM_LINE_BYTES_MAX {
            return Err(CallError::BadReply(
                String::from_utf8_lossy(&line).into_owned(),
            ));
        }
    }
}
