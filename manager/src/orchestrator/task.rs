//! Making tasks and reading their state: the vocabulary every orchestrator
//! decision is written in.
//!
//! **Invariants:** a new task starts PENDING ("pending task scheduling") with
//! a copy of its service's task spec and endpoint at the service's
//! `spec_version`; replicated tasks have a slot ≥ 1 and no node, global tasks
//! slot 0 and their node preset. Only managers write `desired_state`.

use rswarm_proto::{Meta, Service, Task, TaskState, TaskStatus, service_spec::Mode};

use crate::controlapi::new_object_id;

/// What a new task's status says until the scheduler places it.
pub const PENDING_MESSAGE: &str = "pending task scheduling";

/// The task's ID (empty without meta).
pub fn task_id(task: &Task) -> &str {
    task.meta.as_ref().map_or("", |m| m.id.as_str())
}

/// When the task was created (store clock, ms since the epoch).
pub fn created_ms(task: &Task) -> i64 {
    task.meta.as_ref().map_or(0, |m| m.created_at_ms)
}

/// The observed state.
pub fn observed(task: &Task) -> TaskState {
    task.status.as_ref().map_or(TaskState::New, |s| s.state())
}

/// When the observed state last changed (ms since the epoch).
pub fn observed_ms(task: &Task) -> i64 {
    task.status.as_ref().map_or(0, |s| s.timestamp_ms)
}

/// A task is runnable while managers want it up: desired ≤ RUNNING (READY is
/// "up, but held back").
pub fn is_runnable(task: &Task) -> bool {
    task.desired_state() <= TaskState::Running
}

/// The task's process is over (COMPLETE, SHUTDOWN, FAILED, ...).
pub fn has_ended(task: &Task) -> bool {
    observed(task) > TaskState::Running
}

/// The scheduler placed it at some point, so an agent may hold it.
pub fn was_assigned(task: &Task) -> bool {
    observed(task) >= TaskState::Assigned
}

/// The task runs (observed RUNNING, not yet ended).
pub fn is_running(task: &Task) -> bool {
    observed(task) == TaskState::Running
}

/// Whether the service runs one task per node.
pub fn is_global(service: &Service) -> bool {
    matches!(
        service.spec.as_ref().and_then(|s| s.mode.as_ref()),
        Some(Mode::Global(_))
    )
}

/// The replica count of a replicated service (0 for a global one).
pub fn replicas(service: &Service) -> u64 {
    match service.spec.as_ref().and_then(|s| s.mode.as_ref()) {
        Some(Mode::Replicated(r)) => r.replicas,
        _ => 0,
    }
}

/// The service's ID.
pub fn service_id(service: &Service) -> &str {
    service.meta.as_ref().map_or("", |m| m.id.as_str())
}

/// The service's name.
pub fn service_name(service: &Service) -> &str {
    service
        .spec
        .as_ref()
        .and_then(|s| s.annotations.as_ref())
        .map_or("", |a| a.name.as_str())
}

/// A new task of `service` in `slot` (replicated) or on `node_id` (global,
/// slot 0), made from the service's current spec.
pub fn new_task(
    service: &Service,
    slot: u64,
    node_id: &str,
    desired: TaskState,
    now_ms: i64,
) -> Task {
    debug_assert!(desired <= TaskState::Running, "a new task is runnable");
    let spec = service.spec.as_ref();
    let mut task = Task {
        meta: Some(Meta {
            id: new_object_id(),
            ..Meta::default()
        }),
        service_id: service_id(service).to_owned(),
        slot,
        node_id: node_id.to_owned(),
        status: Some(TaskStatus {
            message: PENDING_MESSAGE.to_owned(),
            timestamp_ms: now_ms,
            ..TaskStatus::default()
        }),
        spec: spec.and_then(|s| s.task.clone()),
        spec_version: service.spec_version,
        service_name: service_name(service).to_owned(),
        endpoint: spec.and_then(|s| s.endpoint.clone()),
        ..Task::default()
    };
    task.set_desired_state(desired);
    if let Some(status) = task.status.as_mut() {
        status.set_state(TaskState::Pending);
    }
    task
}

/// The name people see: `<service>.<slot>`, or `<service>.<node id>` for a
/// global task.
pub fn task_name(task: &Task) -> String {
    if task.slot == 0 && !task.node_id.is_empty() {
        format!("{}.{}", task.service_name, task.node_id)
    } else {
        format!("{}.{}", task.service_name, task.slot)
    }
}

#[cfg(test)]
mod tests {
    use rswarm_proto::{
        Annotations, ContainerSpec, GlobalMode, ReplicatedMode, ServiceSpec, TaskSpec,
    };

    use super::*;

    fn service(mode: Mode) -> Service {
        Service {
            meta: Some(Meta {
                id: "svc1".to_owned(),
                version: 4,
                ..Meta::default()
            }),
            spec: Some(ServiceSpec {
                annotations: Some(Annotations {
                    name: "web".to_owned(),
                    ..Annotations::default()
                }),
                task: Some(TaskSpec {
                    container: Some(ContainerSpec {
                        image: "nginx".to_owned(),
                        ..ContainerSpec::default()
                    }),
                    ..TaskSpec::default()
                }),
                mode: Some(mode),
                ..ServiceSpec::default()
            }),
            spec_version: 7,
            ..Service::default()
        }
    }

    #[test]
    fn a_new_replicated_task_is_pending_with_the_service_spec() {
        let svc = service(Mode::Replicated(ReplicatedMode { replicas: 3 }));
        let task = new_task(&svc, 2, "", TaskState::Running, 1_234);
        assert_eq!(task.service_id, "svc1");
        assert_eq!(task.slot, 2);
        assert!(task.node_id.is_empty());
        assert_eq!(task.spec_version, 7);
        assert_eq!(task.spec, svc.spec.as_ref().and_then(|s| s.task.clone()));
        assert_eq!(task.desired_state(), TaskState::Running);
        assert_eq!(observed(&task), TaskState::Pending);
        let status = task.status.as_ref().unwrap();
        assert_eq!(status.message, PENDING_MESSAGE);
        assert_eq!(status.timestamp_ms, 1_234);
        assert_eq!(task_id(&task).len(), 25);
        assert_eq!(task_name(&task), "web.2");
        assert!(is_runnable(&task));
        assert!(!was_assigned(&task));
    }

    #[test]
    fn a_new_global_task_is_named_after_its_node() {
        let svc = service(Mode::Global(GlobalMode {}));
        let task = new_task(&svc, 0, "node9", TaskState::Ready, 0);
        assert_eq!(task.node_id, "node9");
        assert_eq!(task_name(&task), "web.node9");
        assert!(is_global(&svc));
        assert_eq!(replicas(&svc), 0);
        assert!(is_runnable(&task), "READY is held back, still runnable");
    }

    #[test]
    fn ended_means_past_running() {
        let mut task = Task::default();
        for (state, ended) in [
            (TaskState::Running, false),
            (TaskState::Complete, true),
            (TaskState::Shutdown, true),
            (TaskState::Failed, true),
            (TaskState::Rejected, true),
        ] {
            task.status = Some(TaskStatus {
                state: state as i32,
                ..TaskStatus::default()
            });
            assert_eq!(has_ended(&task), ended, "{state:?}");
        }
    }
}
