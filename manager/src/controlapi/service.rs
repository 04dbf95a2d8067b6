//! The service calls of the control API: create, inspect, list, update
//! (including rollback and rebalance) and remove. They only write the
//! service object; the orchestrators turn it into tasks.

use std::sync::Arc;

use rswarm_proto::object::Kind;
use rswarm_proto::service_spec::Mode;
use rswarm_proto::*;
use tonic::Status;
use tracing::info;

use super::new_object_id;
use crate::leader::status_from_store;
use crate::manager::{ManagerContext, action, now_ms};
use crate::spec;
use crate::store::{StoreObject, StoreState};

/// Tasks a service wants running, and how many of those run.
fn service_view(s: &StoreState, service: &Service) -> ServiceView {
    let id = service.id();
    let mut running = 0;
    let mut runnable = 0;
    for t in s.tasks_of_service(id) {
        if t.desired_state <= TaskState::Running as i32 {
            runnable += 1;
            if t.status.as_ref().map(|st| st.state) == Some(TaskState::Running as i32) {
                running += 1;
            }
        }
    }
    let desired = match service.spec.as_ref().and_then(|s| s.mode.as_ref()) {
        Some(Mode::Replicated(r)) => r.replicas,
        // A global service wants one task per eligible node; the orchestrator
        // keeps exactly those runnable.
        _ => runnable,
    };
    ServiceView {
        service: Some(service.clone()),
        running_tasks: running,
        desired_tasks: desired,
    }
}

pub(super) async fn create_service(
    ctx: Arc<ManagerContext>,
    req: CreateServiceRequest,
) -> Result<CreateServiceResponse, Status> {
    let spec = req
        .spec
        .ok_or_else(|| Status::invalid_argument("create needs a service spec"))?;
    let id = new_object_id();
    let mut spec = spec::normalize(spec, &format!("svc-{}", &id[..12]))?;
    crate::file_refs::bind_create(&ctx, &mut spec, &id, req.registry_auth.as_ref()).await?;
    let warnings = super::image_pin::pin_image(
        &mut spec,
        req.registry_auth.as_ref(),
        req.no_resolve_image,
        &ctx.registry,
    )
    .await?;
    let name = spec
        .annotations
        .as_ref()
        .map(|a| a.name.clone())
        .unwrap_or_default();
    let service = Service {
        meta: Some(Meta {
            id: id.clone(),
            ..Default::default()
        }),
        spec: Some(spec),
        spec_version: 1,
        ..Default::default()
    };
    ctx.propose(vec![action(ActionKind::Create, Kind::Service(service))])
        .await?;
    info!(service = %id, %name, "service created");
    let service = ctx.store.read(|s| s.service(&id).cloned());
    Ok(CreateServiceResponse { service, warnings })
}

pub(super) async fn get_service(
    ctx: Arc<ManagerContext>,
    req: GetServiceRequest,
) -> Result<GetServiceResponse, Status> {
    let view = ctx
        .read(|s| {
            s.find_service(&req.reference)
                .map(|service| service_view(s, service))
        })
        .await?
        .map_err(status_from_store)?;
    Ok(GetServiceResponse {
        service: Some(view),
    })
}

pub(super) async fn list_services(
    ctx: Arc<ManagerContext>,
    _req: ListServicesRequest,
) -> Result<ListServicesResponse, Status> {
    let services = ctx
        .read(|s| s.services().map(|svc| service_view(s, svc)).collect())
        .await?;
    Ok(ListServicesResponse { services })
}

/// The service after an update request, or why the request is refused.
fn updated_service(current: &Service, req: &UpdateServiceRequest) -> Result<Service, Status> {
    let mut service = current.clone();
    if let Some(meta) = service.meta.as_mut() {
        meta.version = req.version;
    }
    let old = current.spec.clone().unwrap_or_default();
    let new = if req.rollback {
        current.previous_spec.clone().ok_or_else(|| {
            Status::failed_precondition(format!(
                "service {} has no previous spec to roll back to",
                old.annotations.as_ref().map_or("", |a| a.name.as_str())
            ))
        })?
    } else {
        let spec = req
            .spec
            .clone()
            .ok_or_else(|| Status::invalid_argument("update needs a service spec"))?;
        spec::normalize(spec, current.name())?
    };
    spec::check_update(&old, &new)?;
    if new.annotations.as_ref().map(|a| &a.name) != old.annotations.as_ref().map(|a| &a.name) {
        return Err(Status::invalid_argument(
            "a service cannot be renamed: create a new service instead",
        ));
    }
    if req.rebalance {
        service.rebalance_requested += 1;
    }
    if new != old {
        service.previous_spec = Some(old);
        service.spec = Some(new);
        service.spec_version += 1;
        let state = if req.rollback {
            UpdateState::RollbackStarted
        } else {
            UpdateState::Updating
        };
        service.update_status = Some(UpdateStatus {
            state: state as i32,
            started_at_ms: now_ms(),
            completed_at_ms: 0,
            message: if req.rollback {
                "manually requested rollback".to_owned()
            } else {
                "update in progress".to_owned()
            },
        });
    }
    Ok(service)
}

pub(super) async fn update_service(
    ctx: Arc<ManagerContext>,
    req: UpdateServiceRequest,
) -> Result<UpdateServiceResponse, Status> {
    ctx.ensure_current().await?;
    let current = ctx
        .store
        .read(|s| s.service(&req.service_id).cloned())
        .ok_or_else(|| Status::not_found(format!("no such service: {}", req.service_id)))?;
    let req = crate::file_refs::bind_update(&ctx, req, &current).await?;
    let mut service = updated_service(&current, &req)?;
    let spec_changed = service.spec != current.spec;
    let warnings = match service.spec.as_mut() {
        Some(spec) if !req.rollback && spec_changed => {
            super::image_pin::pin_image(
                spec,
                req.registry_auth.as_ref(),
                req.no_resolve_image,
                &ctx.registry,
            )
            .await?
        }
        _ => Vec::new(),
    };
    if service == current_with_version(&current, req.version) {
        return Ok(UpdateServiceResponse {
            service: Some(current),
            warnings: Vec::new(),
        });
    }
    let version = ctx
        .propose(vec![action(ActionKind::Update, Kind::Service(service))])
        .await?;
    info!(service = %req.service_id, version, rollback = req.rollback, "service updated");
    let service = ctx.store.read(|s| s.service(&req.service_id).cloned());
    Ok(UpdateServiceResponse { service, warnings })
}

/// `current` as a writer at `version` would send it back unchanged.
fn current_with_version(current: &Service, version: u64) -> Service {
    let mut s = current.clone();
    if let Some(meta) = s.meta.as_mut() {
        meta.version = version;
    }
    s
}

pub(super) async fn remove_service(
    ctx: Arc<ManagerContext>,
    req: RemoveServiceRequest,
) -> Result<RemoveServiceResponse, Status> {
    let service = ctx
        .read(|s| s.find_service(&req.reference).cloned())
        .await?
        .map_err(status_from_store)?;
    let id = service.id().to_owned();
    ctx.propose(vec![action(ActionKind::Delete, Kind::Service(service))])
        .await?;
    info!(service = %id, "service removed");
    Ok(RemoveServiceResponse {})
}

pub(super) async fn list_tasks(
    ctx: Arc<ManagerContext>,
    req: ListTasksRequest,
) -> Result<ListTasksResponse, Status> {
    let tasks = ctx
        .read(|s| -> Result<Vec<Task>, crate::store::StoreError> {
            let node = (!req.node.is_empty())
                .then(|| s.find_node(&req.node).map(|n| n.id().to_owned()))
                .transpose()?;
            let service = (!req.service.is_empty())
                .then(|| s.find_service(&req.service).map(|n| n.id().to_owned()))
                .transpose()?;
            let tasks: Vec<Task> = match (&node, &service) {
                (_, Some(svc)) => s
                    .tasks_of_service(svc)
                    .filter(|t| node.as_ref().is_none_or(|n| &t.node_id == n))
                    .cloned()
                    .collect(),
                (Some(n), None) => s.tasks_on_node(n).cloned().collect(),
                (None, None) => s.tasks().cloned().collect(),
            };
            Ok(tasks)
        })
        .await?
        .map_err(status_from_store)?;
    Ok(ListTasksResponse { tasks })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(spec: ServiceSpec) -> Service {
        Service {
            meta: Some(Meta {
                id: "s1".into(),
                version: 7,
                ..Default::default()
            }),
            spec: Some(spec::normalize(spec, "x").unwrap()),
            spec_version: 1,
            ..Default::default()
        }
    }

    fn process(name: &str, args: &[&str]) -> ServiceSpec {
        ServiceSpec {
            annotations: Some(Annotations {
                name: name.into(),
                ..Default::default()
            }),
            task: Some(TaskSpec {
                driver: "process".into(),
                container: Some(ContainerSpec {
                    args: args.iter().map(|a| a.to_string()).collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn update(spec: Option<ServiceSpec>, rollback: bool) -> UpdateServiceRequest {
        UpdateServiceRequest {
            service_id: "s1".into(),
            version: 7,
            spec,
            rollback,
            ..UpdateServiceRequest::default()
        }
    }

    #[test]
    fn an_update_keeps_the_old_spec_for_rollback_and_bumps_the_spec_version() {
        let current = stored(process("web", &["/bin/sleep", "1"]));
        let new = process("web", &["/bin/sleep", "2"]);
        let updated = updated_service(&current, &update(Some(new), false)).unwrap();
        assert_eq!(updated.spec_version, 2);
        assert_eq!(updated.previous_spec, current.spec);
        assert_eq!(
            updated.update_status.as_ref().unwrap().state,
            UpdateState::Updating as i32
        );

        let rolled = updated_service(&updated, &update(None, true)).unwrap();
        assert_eq!(rolled.spec, current.spec);
        assert_eq!(rolled.spec_version, 3);
        assert_eq!(
            rolled.update_status.unwrap().state,
            UpdateState::RollbackStarted as i32
        );
    }

    #[test]
    fn an_unchanged_spec_changes_nothing() {
        let current = stored(process("web", &["/bin/true"]));
        let same = updated_service(&current, &update(current.spec.clone(), false)).unwrap();
        assert_eq!(same, current);
    }

    #[test]
    fn refused_updates_say_why() {
        let current = stored(process("web", &["/bin/true"]));
        let e = updated_service(&current, &update(None, true)).unwrap_err();
        assert!(e.message().contains("no previous spec"), "{}", e.message());
        let renamed = process("api", &["/bin/true"]);
        let e = updated_service(&current, &update(Some(renamed), false)).unwrap_err();
        assert!(e.message().contains("cannot be renamed"));
    }
}
