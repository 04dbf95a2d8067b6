//! The agent's gRPC API on the node's cluster listener: `TaskLogs`, which a
//! manager calls to read the logs of tasks that ran here.
//!
//! Only managers of this node's own cluster may call it (their certificate
//! says so); a task this node does not know is reported in the stream's
//! error instead of being silently skipped.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use rswarm_pki::{PeerInfo, Role};
use rswarm_proto::{LogLine, TaskLogsRequest, TaskLogsResponse};
use tonic::{Request, Response, Status};

use super::Shared;
use crate::limits::{LOG_BATCH_LINES_MAX, LOG_REQUEST_TASKS_MAX};

/// The `Agent` gRPC service; see the module doc.
#[derive(Clone)]
pub struct AgentService {
    shared: Arc<Shared>,
    cluster_id: String,
}

impl AgentService {
    pub(super) fn new(shared: Arc<Shared>, cluster_id: String) -> Self {
        Self { shared, cluster_id }
    }

    fn authorize(&self, peer: Option<&PeerInfo>) -> Result<(), Status> {
        let subject = peer
            .and_then(|p| p.identity.as_ref())
            .ok_or_else(|| Status::unauthenticated("a manager certificate is required"))?;
        if subject.cluster_id != self.cluster_id || subject.role != Role::Manager {
            return Err(Status::permission_denied(
                "only managers of this node's cluster may read its task logs",
            ));
        }
        Ok(())
    }
}

type LogStream = Pin<Box<dyn Stream<Item = Result<TaskLogsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl rswarm_proto::agent_server::Agent for AgentService {
    type TaskLogsStream = LogStream;

    async fn task_logs(
        &self,
        req: Request<TaskLogsRequest>,
    ) -> Result<Response<LogStream>, Status> {
        self.authorize(req.extensions().get::<PeerInfo>())?;
        let req = req.into_inner();
        if req.task_ids.len() > LOG_REQUEST_TASKS_MAX {
            return Err(Status::invalid_argument(format!(
                "{} tasks asked at once; the limit is {LOG_REQUEST_TASKS_MAX}",
                req.task_ids.len()
            )));
        }
        let options = req.options.unwrap_or_default();
        let mut streams = Vec::with_capacity(req.task_ids.len());
        for id in &req.task_ids {
            let task = self.shared.assigned(id).ok_or_else(|| {
                Status::not_found(format!("task {id} is not assigned to this node"))
            })?;
            let runtime = self
                .shared
                .drivers
                .for_task(&task)
                .map_err(|e| Status::failed_precondition(e.to_string()))?;
            let lines = runtime
                .logs(id, options)
                .await
                .map_err(|e| Status::unavailable(format!("logs of task {id}: {e}")))?;
            let id = id.clone();
            streams.push(lines.map(move |line| {
                line.map_err(|e| Status::internal(format!("reading the log of task {id}: {e}")))
            }));
        }
        let merged = futures::stream::select_all(streams)
            .ready_chunks(LOG_BATCH_LINES_MAX)
            .map(|chunk: Vec<Result<LogLine, Status>>| {
                let lines = chunk.into_iter().collect::<Result<Vec<_>, _>>()?;
                Ok(TaskLogsResponse { lines })
            });
        Ok(Response::new(Box::pin(merged)))
    }
}
