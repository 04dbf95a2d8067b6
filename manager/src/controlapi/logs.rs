//! `ServiceLogs`: gathers a service's (or one task's) logs from the nodes
//! that ran its tasks. Any manager serves it from its own store (fresh
//! through ReadIndex on the leader, at most a heartbeat behind elsewhere); it dials each node's agent over mutual TLS, verifying the node's
//! own identity, and merges the streams.
//!
//! A node that cannot be reached becomes a warning in the stream, never a
//! hang: connecting and the first answer are bounded by
//! `LOG_NODE_CONNECT_TIMEOUT`. With `follow`, tasks that start later are
//! picked up as the store shows them.

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::sync::Arc;

use rswarm_proto::agent_client::AgentClient;
use rswarm_proto::*;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::{Instrument, debug, info_span};

use crate::leader::status_from_store;
use crate::limits::{LOG_FOLLOW_POLL, LOG_NODE_CONNECT_TIMEOUT, LOG_STREAM_QUEUE_MAX};
use crate::manager::ManagerContext;
use crate::store::{StoreError, StoreObject, StoreState};

/// The response stream of `ServiceLogs`.
pub type LogStream = Pin<Box<dyn Stream<Item = Result<ServiceLogsResponse, Status>> + Send>>;

/// Which tasks a reference names.
enum Target {
    Service(String),
    Task(String),
}

fn resolve(s: &StoreState, reference: &str) -> Result<Target, Status> {
    match s.find_service(reference) {
        Ok(service) => return Ok(Target::Service(service.id().to_owned())),
        Err(StoreError::NotFoundByReference { .. }) => {}
        Err(e) => return Err(status_from_store(e)),
    }
    match s.find_task(reference) {
        Ok(task) => Ok(Target::Task(task.id().to_owned())),
        Err(StoreError::NotFoundByReference { .. }) => Err(Status::not_found(format!(
            "no such service or task: {reference}"
        ))),
        Err(e) => Err(status_from_store(e)),
    }
}

/// One node's share of the work: its address and the tasks to read.
struct NodeLogs {
    node_id: String,
    node_name: String,
    addr: String,
    down: bool,
    sources: Vec<LogSource>,
}

/// The tasks of `target` that ran somewhere and are not in `seen`, grouped
/// by node.
fn pending_nodes(s: &StoreState, target: &Target, seen: &BTreeSet<String>) -> Vec<NodeLogs> {
    let tasks: Vec<&Task> = match target {
        Target::Service(id) => s.tasks_of_service(id).collect(),
        Target::Task(id) => s.task(id).into_iter().collect(),
    };
    let mut by_node: BTreeMap<&str, NodeLogs> = BTreeMap::new();
    for t in tasks {
        if t.node_id.is_empty() || seen.contains(t.id()) {
            continue;
        }
        // Only tasks the agent got to start have logs.
        let started = t.status.as_ref().map_or(0, |st| st.state) >= TaskState::Starting as i32;
        if !started {
            continue;
        }
        let entry = by_node.entry(&t.node_id).or_insert_with(|| {
            let node = s.node(&t.node_id);
            NodeLogs {
                node_id: t.node_id.clone(),
                node_name: node
                    .and_then(|n| n.description.as_ref())
                    .map_or_else(|| t.node_id.clone(), |d| d.hostname.clone()),
                addr: node
                    .and_then(|n| n.status.as_ref())
                    .map(|st| st.addr.clone())
                    .unwrap_or_default(),
                down: node
                    .and_then(|n| n.status.as_ref())
                    .is_none_or(|st| st.state == NodeState::Down as i32),
                sources: Vec::new(),
            }
        });
        entry.sources.push(LogSource {
            task_id: t.id().to_owned(),
            task_name: task_name(t),
            node_name: entry.node_name.clone(),
        });
    }
    by_node.into_values().collect()
}

/// `web.2`, or `web.<node id>` for a global task.
pub fn task_name(t: &Task) -> String {
    if t.slot == 0 {
        format!("{}.{}", t.service_name, t.node_id)
    } else {
        format!("{}.{}", t.service_name, t.slot)
    }
}

/// Starts gathering; the stream ends when every node's stream has ended
/// (never, with `follow`, until the client goes away).
pub async fn service_logs(
    ctx: Arc<ManagerContext>,
    req: ServiceLogsRequest,
) -> Result<LogStream, Status> {
    // A follower serves from its own store: logs need no linearizable read,
    // and a log call must work on any manager.
    if ctx.raft.is_leader() {
        ctx.ensure_current().await?;
    }
    let target = ctx.store.read(|s| resolve(s, &req.reference))?;
    let options = req.options.unwrap_or_default();
    let (tx, rx) = mpsc::channel(LOG_STREAM_QUEUE_MAX);
    let span = info_span!("service_logs", reference = %req.reference, follow = options.follow);
    tokio::spawn(gather(ctx, target, options, tx).instrument(span));
    Ok(Box::pin(ReceiverStream::new(rx)))
}

type Sender = mpsc::Sender<Result<ServiceLogsResponse, Status>>;

async fn gather(ctx: Arc<ManagerContext>, target: Target, options: LogsOptions, tx: Sender) {
    let mut seen = BTreeSet::new();
    let mut readers = tokio::task::JoinSet::new();
    loop {
        let nodes = ctx.store.read(|s| pending_nodes(s, &target, &seen));
        for node in nodes {
            seen.extend(node.sources.iter().map(|src| src.task_id.clone()));
            readers.spawn(read_node(ctx.clone(), node, options, tx.clone()));
        }
        if !options.follow {
            break;
        }
        tokio::select! {
            () = tx.closed() => break,
            () = tokio::time::sleep(LOG_FOLLOW_POLL) => {}
        }
    }
    if options.follow {
        // The client went away: stop reading from the nodes.
        readers.abort_all();
    }
    while readers.join_next().await.is_some() {}
}

fn warning(text: String) -> ServiceLogsResponse {
    ServiceLogsResponse {
        warnings: vec![text],
        ..Default::default()
    }
}

async fn read_node(ctx: Arc<ManagerContext>, node: NodeLogs, options: LogsOptions, tx: Sender) {
    let who = format!("node {} ({})", node.node_name, node.node_id);
    if node.down || node.addr.is_empty() {
        let _ = tx
            .send(Ok(warning(format!(
                "{who} is down: logs of its {} task(s) are not available",
                node.sources.len()
            ))))
            .await;
        return;
    }
    let request = TaskLogsRequest {
        task_ids: node.sources.iter().map(|s| s.task_id.clone()).collect(),
        options: Some(options),
    };
    let opened = tokio::time::timeout(LOG_NODE_CONNECT_TIMEOUT, async {
        let tls = rswarm_pki::client_config(&ctx.creds).map_err(|e| e.to_string())?;
        let channel =
            rswarm_pki::tls_channel(&node.addr, tls, &node.node_id).map_err(|e| e.to_string())?;
        AgentClient::new(channel)
            .task_logs(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| s.message().to_owned())
    })
    .await
    .unwrap_or_else(|_| Err(format!("no answer within {LOG_NODE_CONNECT_TIMEOUT:?}")));
    let mut stream = match opened {
        Ok(stream) => stream,
        Err(e) => {
            let _ = tx
                .send(Ok(warning(format!(
                    "{who} at {}: cannot read logs: {e}",
                    node.addr
                ))))
                .await;
            return;
        }
    };
    let mut sources = Some(node.sources);
    loop {
        let batch = match stream.message().await {
            Ok(Some(batch)) => batch,
            Ok(None) => return,
            Err(e) => {
                let _ = tx
                    .send(Ok(warning(format!(
                        "{who}: log stream broke: {}",
                        e.message()
                    ))))
                    .await;
                return;
            }
        };
        let response = ServiceLogsResponse {
            sources: sources.take().unwrap_or_default(),
            lines: batch.lines,
            warnings: Vec::new(),
        };
        if tx.send(Ok(response)).await.is_err() {
            debug!("log client went away");
            return;
        }
    }
}
