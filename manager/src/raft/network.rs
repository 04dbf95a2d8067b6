//! Raft transport between managers: openraft's `RaftNetworkV2` on the client
//! side and the `Raft` gRPC service on the server side.
//!
//! Payloads are openraft's own types, postcard-encoded inside `Blob`, so the
//! proto file does not have to follow openraft's alpha API. One channel per
//! peer address is cached: openraft asks for a new client on every vote
//! broadcast and replication restart, and reconnecting each time slows
//! failover. Only "cannot connect" maps to `Unreachable` (which backs off);
//! everything else is a `NetworkError` retried at once.

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

/// One lazily-connected TLS channel per peer address.
#[derive(Clone)]
pub struct ChannelCache {
    tls: Arc<rustls::ClientConfig>,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl ChannelCache {
    /// A cache whose channels present this node's certificate.
    pub fn new(tls: Arc<rustls::ClientConfig>) -> Self {
        Self {
            tls,
            channels: Arc::default(),
        }
    }

    /// The channel to `addr`, made on first use.
    pub fn get(&self, addr: &str) -> Result<Channel, rswarm_pki::PkiError> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let channel =
            rswarm_pki::tls_channel(addr, self.tls.clone(), rswarm_pki::MANAGER_SERVER_NAME)?;
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }
}

impl NetworkFactory {
    /// A factory whose channels come from `channels`.
    pub fn new(channels: ChannelCache) -> Self {
        Self { channels }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        let client = self
            .channels
            .get(&node.addr)
            .map(|c| {
                RaftClient::new(c)
                    .max_decoding_message_size(RAFT_MESSAGE_SIZE_MAX)
                    .max_encoding_message_size(RAFT_MESSAGE_SIZE_MAX)
            })
            .map_err(|e| e.to_string());
        PeerClient { target, client }
    }
}

/// The client side of one peer.
pub struct PeerClient {
    target: NodeId,
    client: Result<RaftClient<Channel>, String>,
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

impl PeerClient {
    fn client(&self) -> Result<RaftClient<Channel>, RPCError<TypeConfig>> {
        self.client
            .clone()
            .map_err(|e| RPCError::Unreachable(Unreachable::from_string(e)))
    }

    /// One unary call bounded by the RPC's soft TTL.
    async fn unary<Req, Resp, F, Fut>(
        &self,
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
        let fut = call(self.client()?, encode(req)?);
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
        self.unary(&rpc, &option, |mut c, b| async move {
            c.append_entries(b).await
        })
        .await
    }

    /// Pipelined replication: many AppendEntries in flight on one
    /// bidirectional stream instead of one round trip at a time.
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
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
            let mut client = self.client()?;
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
        self.unary(&rpc, &option, |mut c, b| async move { c.vote(b).await })
            .await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary(&rpc, &option, |mut c, b| async move { c.pre_vote(b).await })
            .await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary(&req, &option, |mut c, b| async move {
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
        let mut client = self.client().map_err(rpc_to_streaming)?;
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
