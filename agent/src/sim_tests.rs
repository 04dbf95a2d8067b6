//! Tests of the simulated driver: what it reports for each task, and how it
//! follows COMPLETE and INCREMENTAL messages.

use rswarm_proto::{Meta, TaskStatusUpdate};

use std::time::Duration;

use super::*;

fn task(id: &str, desired: TaskState, state: TaskState) -> Task {
    Task {
        meta: Some(Meta {
            id: id.into(),
            ..Default::default()
        }),
        desired_state: desired as i32,
        status: Some(TaskStatus {
            state: state as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn message(kind: AssignmentsType, tasks: Vec<Task>, removed: &[&str]) -> AssignmentsMessage {
    AssignmentsMessage {
        r#type: kind as i32,
        tasks,
        removed_task_ids: removed.iter().map(|s| s.to_string()).collect(),
        ..AssignmentsMessage::default()
    }
}

fn reported(updates: &[TaskStatusUpdate]) -> Vec<(String, i32)> {
    updates
        .iter()
        .map(|u| (u.task_id.clone(), u.status.as_ref().map_or(0, |s| s.state)))
        .collect()
}

#[test]
fn next_state_steps_to_desired_then_stops() {
    use TaskState::*;
    let cases = [
        (Running, Assigned, Some(Running)),
        (Running, Running, None),
        (Ready, Assigned, Some(Ready)),
        (Running, Ready, Some(Running)),
        (Shutdown, Running, Some(Shutdown)),
        (Remove, Assigned, Some(Shutdown)),
        (Shutdown, Shutdown, None),
        (Complete, Running, Some(Complete)),
        (Shutdown, Failed, None),
        (Running, Complete, None),
    ];
    for (desired, observed, expected) in cases {
        assert_eq!(
            next_state(desired as i32, observed as i32),
            expected,
            "desired {desired:?}, observed {observed:?}"
        );
    }
}

fn driver(counters: Arc<SimCounters>) -> Driver {
    let (_tx, rx) = tokio::sync::watch::channel(crate::session::AgentStatus {
        role: rswarm_pki::Role::Worker,
        raft_id: 0,
        managers: vec![],
        connected: false,
        removed: None,
    });
    let ca = rswarm_pki::RootCa::generate().unwrap();
    let (key_pem, csr) = rswarm_pki::generate_key_and_csr().unwrap();
    let subject = rswarm_pki::NodeSubject {
        node_id: "n1".into(),
        role: rswarm_pki::Role::Worker,
        cluster_id: "c1".into(),
    };
    let creds = CredentialsHandle::new(NodeCredentials {
        ca_cert_pem: ca.cert_pem().into(),
        cert_pem: ca
            .sign_node_csr(&csr, &subject, Duration::from_secs(3600))
            .unwrap(),
        key_pem,
    })
    .unwrap();
    Driver {
        reporter: StatusReporter::start(ManagerLink::new(creds, rx)),
        counters,
        tasks: HashMap::new(),
    }
}

/// Goal: a COMPLETE set is reported RUNNING once, stopping tasks are
/// reported SHUTDOWN, and tasks missing from a later COMPLETE set or removed
/// are forgotten (the counters follow).
#[tokio::test]
async fn driver_reports_each_step_once_and_forgets_removed_tasks() {
    use TaskState::*;
    let counters = Arc::new(SimCounters::default());
    let mut d = driver(counters.clone());
    let first = d.apply(message(
        AssignmentsType::Complete,
        vec![
            task("a", Running, Assigned),
            task("b", Running, Assigned),
            task("c", Shutdown, Running),
        ],
        &[],
    ));
    assert_eq!(
        reported(&first),
        [
            ("a".into(), Running as i32),
            ("b".into(), Running as i32),
            ("c".into(), Shutdown as i32)
        ]
    );
    assert_eq!(counters.tasks.load(Ordering::Relaxed), 3);
    assert_eq!(counters.running.load(Ordering::Relaxed), 2);

    // The manager's copy still says ASSIGNED (our report is in flight).
    let again = d.apply(message(
        AssignmentsType::Incremental,
        vec![task("a", Running, Assigned)],
        &["b"],
    ));
    assert!(again.is_empty(), "no second report: {again:?}");
    assert_eq!(counters.running.load(Ordering::Relaxed), 1);

    let complete = d.apply(message(
        AssignmentsType::Complete,
        vec![task("d", Running, Assigned)],
        &[],
    ));
    assert_eq!(reported(&complete), [("d".into(), Running as i32)]);
    assert_eq!(counters.tasks.load(Ordering::Relaxed), 1);
    assert_eq!(counters.running.load(Ordering::Relaxed), 1);
    d.forget_all();
    assert_eq!(counters.tasks.load(Ordering::Relaxed), 0);
    d.reporter.stop().await;
}
