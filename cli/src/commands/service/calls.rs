//! The control API calls the service commands make, with failures turned
//! into the messages users see (`no such service: web`).
//!
//! Owns: one function per call and the error wording. Does not own:
//! retries (the callers decide; `update` retries a version conflict).

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use rswarm_proto::*;
use tonic::Code;

use crate::client::Daemon;

use super::text::task_id;

/// Turns a failed service call into a message: `no such service: <ref>`
/// for an unknown reference, the daemon's own explanation otherwise.
pub fn explain_service_error(d: &Daemon, reference: &str, status: tonic::Status) -> anyhow::Error {
    if status.code() == Code::NotFound {
        anyhow::anyhow!("no such service: {reference}")
    } else {
        d.explain(status)
    }
}

/// A service by ID, unique ID prefix or name, with its task counts.
pub async fn get_service(d: &Daemon, reference: &str) -> Result<ServiceView> {
    d.control()
        .get_service(GetServiceRequest {
            reference: reference.to_string(),
        })
        .await
        .map_err(|s| explain_service_error(d, reference, s))?
        .into_inner()
        .service
        .context("the manager answered without the service")
}

/// The service inside a view, which the manager always sends.
pub fn service_of(view: &ServiceView) -> Result<&Service> {
    view.service
        .as_ref()
        .context("the manager answered without the service")
}

/// Every service, with its task counts.
pub async fn list_services(d: &Daemon) -> Result<Vec<ServiceView>> {
    Ok(d.control()
        .list_services(ListServicesRequest {})
        .await
        .map_err(|s| d.explain(s))?
        .into_inner()
        .services)
}

/// The tasks of one service (by ID), old ones included.
pub async fn service_tasks(d: &Daemon, service_id: &str) -> Result<Vec<Task>> {
    list_tasks(
        d,
        ListTasksRequest {
            service: service_id.to_string(),
            ..Default::default()
        },
    )
    .await
}

/// Tasks, as `request` selects them.
pub async fn list_tasks(d: &Daemon, request: ListTasksRequest) -> Result<Vec<Task>> {
    let mut tasks = d
        .control()
        .list_tasks(request)
        .await
        .map_err(|s| d.explain(s))?
        .into_inner()
        .tasks;
    tasks.sort_by(|a, b| task_id(a).cmp(task_id(b)));
    Ok(tasks)
}

/// Every node, with its manager status as the leader sees it.
pub async fn node_views(d: &Daemon) -> Result<Vec<NodeView>> {
    Ok(d.control()
        .list_nodes(ListNodesRequest {})
        .await
        .map_err(|s| d.explain(s))?
        .into_inner()
        .nodes)
}

/// Every node.
pub async fn list_nodes(d: &Daemon) -> Result<Vec<Node>> {
    Ok(node_views(d)
        .await?
        .into_iter()
        .filter_map(|v| v.node)
        .collect())
}

/// Node ID → hostname, for NODE columns.
pub fn hostnames(nodes: &[Node]) -> BTreeMap<String, String> {
    nodes
        .iter()
        .filter_map(|n| {
            let id = n.meta.as_ref()?.id.clone();
            let hostname = n.description.as_ref()?.hostname.clone();
            Some((id, hostname))
        })
        .collect()
}
