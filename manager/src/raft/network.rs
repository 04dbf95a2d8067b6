//! Raft transport between managers: openraft's `RaftNetworkV2` on the client
//! side and the `Raft` gRPC service on the server side.
//!
//! Payloads are openraft's own types, postcard-encoded inside `Blob`, so the
//! proto file does not have to follow openraft's alpha API. One channel per
//! peer address and [`Lane`] is cached: openraft asks for a new client on
//! every vote broadcast and replication restart, and reconnecting each time
//! slows failover; and votes and heartbeats get their own connection, apart
//! from replication and snapshots. Only "cannot connect" maps to
//! `Unreachable` (which backs off); everything else is a `NetworkError`
//! retried at once.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use openraft::base::{BoxFuture, BoxStream};
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult,
    TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Snapshot};
use rswarm_pki::PeerInfo;
use rswarm_proto::Blob;
use rswarm_proto::raft_client::RaftClient;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};
use tracing::debug;

use super::TypeConfig;
use super::node::{ManagerRaft, NodeId};
use super::state_machine::SnapshotData;
use crate::authz::Authorizer;
use crate::limits::{RAFT_MESSAGE_SIZE_MAX, SNAPSHOT_CHUNK_BYTES, SNAPSHOT_SIZE_MAX};

type Vote = openraft::alias::VoteOf<TypeConfig>;

/// Dials other managers; shared by every openraft client it makes.
#[derive(Clone)]
pub struct NetworkFactory {
    channels: ChannelCache,
}

/// Which connection to a peer a call travels on. Each lane is its own TCP
/// connection, so a vote or a heartbeat never waits behind megabytes of log
/// entries or a snapshot in the same socket buffer (head-of-line blocking
/// under load is what turns a busy cluster into one that cannot elect).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Control calls a follower forwards to the leader.
    Forward,
    /// Votes, pre-votes, heartbeats, leader transfer: small and urgent.
    RaftControl,
    /// Log replication.
    Replication,
    /// Snapshot transfer.
    Snapshot,
}

/// One lazily-connected TLS channel per peer address and [`Lane`].
#[derive(Clone)]
pub struct ChannelCache {
    tls: Arc<rustls::ClientConfig>,
    channels: Arc<Mutex<HashMap<(String, Lane), Channel>>>,
}

impl ChannelCache {
    /// A cache whose channels present this node's certificate.
    pub fn new(tls: Arc<rustls::ClientConfig>) -> Self {
        Self {
            tls,
            channels: Arc::default(),
        }
    }

    /// Whether the manager at `addr` completes a TLS handshake within
    /// `within`: the daemon itself answers, not only its kernel.
    pub async fn answers(&self, addr: &str, within: std::time::Duration) -> bool {
        rswarm_pki::tls_reachable(
            addr,
            self.tls.clone(),
            rswarm_pki::MANAGER_SERVER_NAME,
            within,
        )
        .await
    }

    /// The channel for forwarded control calls to `addr`, made on first use.
    pub fn get(&self, addr: &str) -> Result<Channel, rswarm_pki::PkiError> {
        self.lane(addr, Lane::Forward)
    }

    /// The channel to `addr` on `lane`, made on first use.
    pub fn lane(&self, addr: &str, lane: Lane) -> Result<Channel, rswarm_pki::PkiError> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        let key = (addr.to_string(), lane);
        if let Some(channel) = channels.get(&key) {
            return Ok(channel.clone());
        }
        let channel =
            rswarm_pki::tls_channel(addr, self.tls.clone(), rswarm_pki::MANAGER_SERVER_NAME)?;
        channels.insert(key, channel.clone());
        Ok(channel)
    }
}

impl NetworkFactory {
    /// A factory whose channels come from `channels`.
    pub fn new(channels: ChannelCache) -> Self {
        Self { channels }
    }

    fn client(&self, addr: &str, lane: Lane) -> Result<RaftClient<Channel>, String> {
        self.channels
            .lane(addr, lane)
            .map(|c| {
                RaftClient::new(c)
                    .max_decoding_message_size(RAFT_MESSAGE_SIZE_MAX)
                    .max_encoding_message_size(RAFT_MESSAGE_SIZE_MAX)
            })
            .map_err(|e| e.to_string())
    }

    /// A peer client whose appends travel on `append_lane`; votes always
    /// travel on the control lane.
    fn peer(&self, target: NodeId, node: &BasicNode, append_lane: Lane) -> PeerClient {
        PeerClient {
            target,
            control: self.client(&node.addr, Lane::RaftControl),
            append: self.client(&node.addr, append_lane),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    /// For replication and votes.
    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        self.peer(target, node, Lane::Replication)
    }

    /// Heartbeats (empty appends) share the votes' lane.
    async fn new_heartbeat_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        self.peer(target, node, Lane::RaftControl)
    }

    async fn new_snapshot_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        self.peer(target, node, Lane::Snapshot)
    }
}

/// The client side of one peer.
pub struct PeerClient {
    target: NodeId,
    /// Votes and leader transfer.
    control: Result<RaftClient<Channel>, String>,
    /// Appends (and snapshots, for a snapshot client).
    append: Result<RaftClient<Channel>, String>,
}

fn encode<T: Serialize>(value: &T) -> Result<Blob, RPCError<TypeConfig>> {
    postcard::to_allocvec(value)
        .map(|data| Blob { data })
        .map_err(|e| RPCError::Network(NetworkError::new(&e)))
}

fn decode<T: DeserializeOwned>(blob: &Blob) -> Result<T, RPCError<TypeConfig>> {
    postcard::from_bytes(&blob.data).map_err(|e| RPCError::Network(NetworkError::new(&e)))
}

fn status_to_rpc_error(status: &Status) -> RPCError<TypeConfig> {
    if status.code() == tonic::Code::Unavailable {
        RPCError::Unreachable(Unreachable::from_string(status.message()))
    } else {
        RPCError::Network(NetworkError::from_string(format!(
            "{:?}: {}",
            status.code(),
            status.message()
        )))
    }
}

fn ready(
    client: &Result<RaftClient<Channel>, String>,
) -> Result<RaftClient<Channel>, RPCError<TypeConfig>> {
    client
        .clone()
        .map_err(|e| RPCError::Unreachable(Unreachable::from_string(e)))
}

impl PeerClient {
    /// One unary call on `client`, bounded by the RPC's soft TTL.
    async fn unary<Req, Resp, F, Fut>(
        &self,
        client: &Result<RaftClient<Channel>, String>,
        req: &Req,
        option: &RPCOption,
        call: F,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        F: FnOnce(RaftClient<Channel>, Blob) -> Fut,
        Fut: Future<Output = Result<Response<Blob>, Status>>,
    {
        let ttl = option.soft_ttl();
        let fut = call(ready(client)?, encode(req)?);
        match tokio::time::timeout(ttl, fut).await {
            Err(_) => Err(RPCError::Network(NetworkError::from_string(format!(
                "raft rpc to {} timed out after {ttl:?}",
                self.target
            )))),
            Ok(Err(status)) => Err(status_to_rpc_error(&status)),
            Ok(Ok(resp)) => decode(resp.get_ref()),
        }
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary(&self.append, &rpc, &option, |mut c, b| async move {
            c.append_entries(b).await
        })
        .await
    }

    /// Pipelined replication: many AppendEntries in flight on one
    /// bidirectional stream instead of one round trip at a time.
    ///
    /// The first request is taken from `input` before the peer is dialed:
    /// openraft waits out its backoff after a failed attempt while it makes
    /// that request, so dialing first would retry an unreachable peer in a
    /// tight loop (the chaos test saw about 1,000 dials a second to a killed
    /// manager, each logging two warnings).
    fn stream_append<'s, S>(
        &'s mut self,
        mut input: S,
        _option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<
            BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>,
            RPCError<TypeConfig>,
        >,
    >
    where
        S: futures::Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
    {
        use futures::StreamExt;
        Box::pin(async move {
            let mut client = ready(&self.append)?;
            let Some(first) = input.next().await else {
                // Nothing to send: no stream, and no reason to dial.
                return Ok(Box::pin(futures::stream::empty()) as BoxStream<'s, _>);
            };
            let input = futures::stream::once(std::future::ready(first)).chain(input);
            // An unencodable request becomes an empty blob, which the peer
            // refuses: the stream ends with an error rather than a gap.
            let requests = input.map(|req| Blob {
                data: postcard::to_allocvec(&req).unwrap_or_default(),
            });
            let responses = client
                .stream_append(requests)
                .await
                .map_err(|status| status_to_rpc_error(&status))?
                .into_inner();
            let results = responses.map(|item| match item {
                Ok(blob) => decode::<StreamAppendResult<TypeConfig>>(&blob),
                Err(status) => Err(status_to_rpc_error(&status)),
            });
            Ok(Box::pin(results) as BoxStream<'s, _>)
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary(&self.control, &rpc, &option, |mut c, b| async move {
            c.vote(b).await
        })
        .await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary(&self.control, &rpc, &option, |mut c, b| async move {
            c.pre_vote(b).await
        })
        .await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary(&self.control, &req, &option, |mut c, b| async move {
            c.transfer_leader(b).await
        })
        .await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: openraft::alias::SnapshotOf<TypeConfig, SnapshotData>,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let mut client = ready(&self.append).map_err(rpc_to_streaming)?;
        let head = encode(&(vote, snapshot.meta.clone())).map_err(rpc_to_streaming)?;
        let data = super::state_machine::snapshot_bytes(&snapshot.snapshot);
        let mut blobs = vec![head];
        blobs.extend(
            data.chunks(SNAPSHOT_CHUNK_BYTES)
                .map(|c| Blob { data: c.to_vec() }),
        );
        let ttl = option.hard_ttl();
        let send = client.install_snapshot(tokio_stream::iter(blobs));
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            res = tokio::time::timeout(ttl, send) => match res {
                Err(_) => Err(StreamingError::Network(NetworkError::from_string(format!(
                    "snapshot to {} timed out after {ttl:?}", self.target)))),
                Ok(Err(status)) => Err(rpc_to_streaming(status_to_rpc_error(&status))),
                Ok(Ok(resp)) => decode(resp.get_ref()).map_err(rpc_to_streaming),
            }
        }
    }
}

fn rpc_to_streaming(e: RPCError<TypeConfig>) -> StreamingError<TypeConfig> {
    match e {
        RPCError::Unreachable(u) => StreamingError::Unreachable(u),
        RPCError::Network(n) => StreamingError::Network(n),
        RPCError::Timeout(t) => StreamingError::Timeout(t),
        RPCError::RemoteError(r) => {
            StreamingError::Network(NetworkError::from_string(r.to_string()))
        }
    }
}

/// A stream of encoded Raft responses.
pub type BlobStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<Blob, Status>> + Send>>;

/// The server side: hands peers' Raft messages to the local openraft node.
/// Only manager certificates of this cluster may call it.
pub struct RaftService {
    raft: ManagerRaft,
    authz: Authorizer,
}

impl RaftService {
    /// Serves `raft`, admitting callers that `authz` accepts as managers.
    pub fn new(raft: ManagerRaft, authz: Authorizer) -> Self {
        Self { raft, authz }
    }

    fn check<T>(&self, req: &Request<T>) -> Result<(), Status> {
        self.authz
            .require_manager(req.extensions().get::<PeerInfo>())
            .map(|_| ())
    }
}

fn decode_request<T: DeserializeOwned>(blob: &Blob) -> Result<T, Status> {
    postcard::from_bytes(&blob.data)
        .map_err(|e| Status::invalid_argument(format!("undecodable raft message: {e}")))
}

fn encode_response<T: Serialize>(value: &T) -> Result<Response<Blob>, Status> {
    postcard::to_allocvec(value)
        .map(|data| Response::new(Blob { data }))
        .map_err(|e| Status::internal(format!("cannot encode raft response: {e}")))
}

fn raft_status(e: impl std::fmt::Display) -> Status {
    Status::internal(format!("raft: {e}"))
}

#[tonic::async_trait]
impl rswarm_proto::raft_server::Raft for RaftService {
    async fn append_entries(&self, req: Request<Blob>) -> Result<Response<Blob>, Status> {
        self.check(&req)?;
        let rpc: AppendEntriesRequest<TypeConfig> = decode_request(req.get_ref())?;
        let resp = self.raft.append_entries(rpc).await.map_err(raft_status)?;
        encode_response(&resp)
    }

    type StreamAppendStream = BlobStream;

    async fn stream_append(
        &self,
        req: Request<Streaming<Blob>>,
    ) -> Result<Response<BlobStream>, Status> {
        use futures::StreamExt;
        use std::future::ready;
        self.check(&req)?;
        // Stop at the first undecodable request: skipping it would leave a
        // gap the leader does not expect.
        let requests = req
            .into_inner()
            .map(|item| {
                item.ok().and_then(|b| {
                    postcard::from_bytes::<AppendEntriesRequest<TypeConfig>>(&b.data).ok()
                })
            })
            .take_while(|r| ready(r.is_some()))
            .filter_map(ready);
        let results = self
            .raft
            .stream_append(requests)
            .map(|result| match result {
                Ok(r) => postcard::to_allocvec(&r)
                    .map(|data| Blob { data })
                    .map_err(|e| Status::internal(format!("cannot encode raft response: {e}"))),
                Err(fatal) => Err(raft_status(fatal)),
            });
        Ok(Response::new(Box::pin(results)))
    }

    async fn vote(&self, req: Request<Blob>) -> Result<Response<Blob>, Status> {
        self.check(&req)?;
        let rpc: VoteRequest<TypeConfig> = decode_request(req.get_ref())?;
        let resp = self.raft.vote(rpc).await.map_err(raft_status)?;
        encode_response(&resp)
    }

    async fn pre_vote(&self, req: Request<Blob>) -> Result<Response<Blob>, Status> {
        self.check(&req)?;
        let rpc: VoteRequest<TypeConfig> = decode_request(req.get_ref())?;
        let resp = self.raft.pre_vote(rpc).await.map_err(raft_status)?;
        encode_response(&resp)
    }

    async fn transfer_leader(&self, req: Request<Blob>) -> Result<Response<Blob>, Status> {
        self.check(&req)?;
        let rpc: TransferLeaderRequest<TypeConfig> = decode_request(req.get_ref())?;
        let resp = self
            .raft
            .handle_transfer_leader(rpc)
            .await
            .map_err(raft_status)?;
        encode_response(&resp)
    }

    async fn install_snapshot(
        &self,
        req: Request<Streaming<Blob>>,
    ) -> Result<Response<Blob>, Status> {
        self.check(&req)?;
        let mut stream = req.into_inner();
        let head = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        let (vote, meta): (Vote, openraft::alias::SnapshotMetaOf<TypeConfig>) =
            decode_request(&head)?;
        let mut data = Vec::new();
        while let Some(chunk) = stream.message().await? {
            if data.len() + chunk.data.len() > SNAPSHOT_SIZE_MAX {
                return Err(Status::resource_exhausted(format!(
                    "snapshot larger than {SNAPSHOT_SIZE_MAX} bytes"
                )));
            }
            data.extend_from_slice(&chunk.data);
        }
        debug!(bytes = data.len(), "received snapshot");
        let snapshot = Snapshot {
            meta,
            snapshot: super::state_machine::snapshot_from_bytes(data),
        };
        let resp = self
            .raft
            .install_full_snapshot(vote, snapshot)
            .await
            .map_err(raft_status)?;
        encode_response(&resp)
    }
}

#[cfg(test)]
#[path = "network_tests.rs"]
mod tests;
