//! Tests of task status updates: the forward-only rule, the checks on a
//! call, the batch plan, and whole calls against a real single-node manager.

use std::time::Duration;

use proptest::prelude::*;
use rswarm_proto::dispatcher_server::Dispatcher;
use rswarm_proto::*;

use super::*;
use crate::dispatcher::DispatcherService;
use crate::dispatcher::test_support::*;

fn status(state: TaskState) -> TaskStatus {
    TaskStatus {
        state: state as i32,
        message: format!("{state:?}").to_lowercase(),
        timestamp_ms: 7,
        ..Default::default()
    }
}

fn update(id: &str, state: TaskState) -> TaskStatusUpdate {
    TaskStatusUpdate {
        task_id: id.to_string(),
        status: Some(status(state)),
    }
}

// ---- merge_status -----------------------------------------------------------

/// Goal: forward moves replace the status, backward ones are ignored, the
/// same state only fills a missing exit code or pid.
#[test]
fn merge_moves_forward_only_and_fills_exit_code_and_pid() {
    let running = TaskStatus {
        pid: 42,
        ..status(TaskState::Running)
    };
    assert_eq!(
        merge_status(Some(&status(TaskState::Assigned)), &running, 1),
        Some(running.clone())
    );
    assert_eq!(
        merge_status(Some(&running), &status(TaskState::Starting), 1),
        None
    );
    assert_eq!(
        merge_status(Some(&running), &running, 1),
        None,
        "idempotent"
    );

    let pid_only = TaskStatus {
        pid: 43,
        ..status(TaskState::Running)
    };
    let no_pid = status(TaskState::Running);
    assert_eq!(
        merge_status(Some(&no_pid), &pid_only, 1).map(|s| s.pid),
        Some(43)
    );
    assert_eq!(
        merge_status(Some(&running), &pid_only, 1),
        None,
        "pid is kept"
    );

    // A forward move without a pid keeps the running pid; an exit keeps the
    // exit code once known; a missing timestamp is filled.
    let mut starting = status(TaskState::Starting);
    starting.pid = 5;
    let mut later = status(TaskState::Running);
    later.timestamp_ms = 0;
    let merged = merge_status(Some(&starting), &later, 99).unwrap();
    assert_eq!((merged.pid, merged.timestamp_ms), (5, 99));
    let failed = TaskStatus {
        exit_code: Some(3),
        ..status(TaskState::Failed)
    };
    let merged = merge_status(Some(&running), &failed, 1).unwrap();
    assert_eq!((merged.exit_code, merged.pid), (Some(3), 0));
}

/// Goal: a RUNNING task's change of health is written (with the probe's
/// output, keeping the time it started running), the same health again is
/// not, and a health change never carries a state backwards.
#[test]
fn merge_takes_a_health_change_while_running() {
    let running = TaskStatus {
        pid: 42,
        ..status(TaskState::Running)
    };
    let healthy = TaskStatus {
        health: ContainerHealth::Healthy as i32,
        health_output: "ok".into(),
        timestamp_ms: 50,
        pid: 42,
        ..status(TaskState::Running)
    };
    let merged = merge_status(Some(&running), &healthy, 99).unwrap();
    assert_eq!(merged.health, ContainerHealth::Healthy as i32);
    assert_eq!(merged.health_output, "ok");
    assert_eq!(merged.timestamp_ms, running.timestamp_ms);
    assert_eq!(
        merge_status(Some(&merged), &healthy, 99),
        None,
        "no change, no write"
    );

    let failed = TaskStatus {
        exit_code: Some(143),
        ..status(TaskState::Failed)
    };
    let unhealthy_running = TaskStatus {
        health: ContainerHealth::Unhealthy as i32,
        ..status(TaskState::Running)
    };
    assert_eq!(
        merge_status(Some(&failed), &unhealthy_running, 1),
        None,
        "still never backwards"
    );
    let failed_healthy = TaskStatus {
        health: ContainerHealth::Healthy as i32,
        ..failed.clone()
    };
    assert_eq!(
        merge_status(Some(&failed), &failed_healthy, 1),
        None,
        "health is a running task's"
    );
}

fn any_status() -> impl Strategy<Value = TaskStatus> {
    (0i32..=13, any::<Option<i8>>(), 0u32..3, 0i32..4).prop_map(|(state, exit, pid, health)| {
        TaskStatus {
            state,
            message: String::new(),
            err: String::new(),
            timestamp_ms: 1,
            exit_code: exit.map(i32::from),
            pid,
            health,
            ..TaskStatus::default()
        }
    })
}

proptest! {
    /// Whatever arrives in whatever order, the state never decreases, a
    /// known exit code or pid is never lost while running, and applying the
    /// result again changes nothing.
    #[test]
    fn merge_never_goes_back(start in any_status(), updates in prop::collection::vec(any_status(), 0..12)) {
        let mut current = start;
        for u in &updates {
            if let Some(next) = merge_status(Some(&current), u, 1) {
                prop_assert!(next.state >= current.state);
                if current.exit_code.is_some() {
                    prop_assert!(next.exit_code.is_some());
                }
                if next.state <= TaskState::Running as i32 && current.pid != 0 {
                    prop_assert!(next.pid != 0);
                }
                prop_assert_eq!(merge_status(Some(&next), u, 1), None);
                current = next;
            }
        }
    }
}

// ---- check_updates and plan -------------------------------------------------

fn state_with(tasks: &[Task]) -> StoreState {
    let mut s = StoreState::new();
    let proposal = Proposal {
        actions: tasks
            .iter()
            .map(|t| crate::manager::action(ActionKind::Create, Kind::Task(t.clone())))
            .collect(),
        timestamp_ms: 1,
    };
    s.apply(1, &proposal).unwrap();
    s
}

/// Goal: a call naming another node's task is refused as a whole; unknown
/// tasks are skipped; manager-only states are refused; long texts clipped.
#[test]
fn check_refuses_foreign_tasks_and_manager_states() {
    let mine = task("n1", 1, TaskState::Assigned);
    let theirs = task("n2", 2, TaskState::Assigned);
    let s = state_with(&[mine.clone(), theirs.clone()]);
    let err = check_updates(
        &s,
        "n1",
        vec![
            update(&task_id(&mine), TaskState::Running),
            update(&task_id(&theirs), TaskState::Running),
        ],
    )
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(err.message().contains(&task_id(&theirs)));

    let kept = check_updates(
        &s,
        "n1",
        vec![
            update("gone", TaskState::Running),
            update(&task_id(&mine), TaskState::Running),
        ],
    )
    .unwrap();
    assert_eq!(kept.len(), 1);

    for state in [TaskState::Assigned, TaskState::Remove, TaskState::Orphaned] {
        let err = check_updates(&s, "n1", vec![update(&task_id(&mine), state)]).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{state:?}");
    }

    let mut long = update(&task_id(&mine), TaskState::Failed);
    long.status.as_mut().unwrap().err = "é".repeat(STATUS_TEXT_BYTES_MAX);
    let kept = check_updates(&s, "n1", vec![long]).unwrap();
    let err = &kept[0].status.as_ref().unwrap().err;
    assert!(err.len() <= STATUS_TEXT_BYTES_MAX && !err.is_empty());
}

/// Goal: a batch folds several updates of one task into one write that
/// keeps the read version and the desired state.
#[test]
fn plan_folds_updates_and_keeps_desired_state() {
    let mut t = task("n1", 1, TaskState::Assigned);
    t.desired_state = TaskState::Shutdown as i32;
    let s = state_with(std::slice::from_ref(&t));
    let id = task_id(&t);
    let first = [
        update(&id, TaskState::Accepted),
        update(&id, TaskState::Running),
    ];
    let second = [update(&id, TaskState::Starting)];
    let planned = plan(&s, &[("n1", &first), ("n1", &second)], None, 1);
    assert_eq!(planned.len(), 1);
    let written = &planned[0];
    assert_eq!(
        written.status.as_ref().unwrap().state,
        TaskState::Running as i32
    );
    assert_eq!(written.desired_state, TaskState::Shutdown as i32);
    assert_eq!(
        written.meta.as_ref().unwrap().version,
        1,
        "the version read"
    );
    assert!(
        plan(&s, &[("n2", &first)], None, 1).is_empty(),
        "another node's task"
    );
    let elsewhere: HashSet<String> = ["other".to_string()].into();
    assert!(
        plan(&s, &[("n1", &first)], Some(&elsewhere), 1).is_empty(),
        "only the chunk's tasks"
    );
}

/// Goal: proposals stay within the task-count and byte limits, and every
/// task lands in exactly one of them.
#[test]
fn chunks_respect_the_limits() {
    let tasks: Vec<Task> = (0..STATUS_PROPOSAL_TASKS_MAX + 5)
        .map(|i| task("n1", i as u64, TaskState::Running))
        .collect();
    let sizes: Vec<usize> = chunks(tasks).iter().map(Vec::len).collect();
    assert_eq!(sizes, [STATUS_PROPOSAL_TASKS_MAX, 5]);
    let mut big = task("n1", 1, TaskState::Running);
    big.service_name = "x".repeat(STATUS_PROPOSAL_BYTES_MAX / 3);
    let sizes: Vec<usize> = chunks(vec![big.clone(), big.clone(), big.clone(), big])
        .iter()
        .map(Vec::len)
        .collect();
    assert_eq!(sizes, [2, 2]);
}

// ---- Calls on a real manager --------------------------------------------------

async fn report(
    m: &TestManager,
    cluster_id: &str,
    node: &str,
    updates: Vec<TaskStatusUpdate>,
) -> Result<(), tonic::Status> {
    let service = DispatcherService::new(m.ctx.clone());
    service
        .update_task_status(as_node(
            cluster_id,
            node,
            UpdateTaskStatusRequest { updates },
        ))
        .await
        .map(|_| ())
}

fn stored_state(m: &TestManager, id: &str) -> i32 {
    m.ctx
        .store
        .read(|s| {
            s.task(id)
                .and_then(|t| t.status.as_ref())
                .map(|st| st.state)
        })
        .unwrap_or_default()
}

/// Goal: an update is committed when the call returns and moves the task
/// forward; a backward one is ignored; another node's task is refused and
/// left as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_commit_forward_moves_and_refuse_foreign_tasks() {
    let (m, cluster) = start_leader().await;
    let (n1, n2) = (
        add_worker(&m.ctx, "w1").await,
        add_worker(&m.ctx, "w2").await,
    );
    let tasks = create_tasks(
        &m.ctx,
        vec![
            task(&n1, 1, TaskState::Assigned),
            task(&n2, 2, TaskState::Assigned),
        ],
    )
    .await;
    let (mine, theirs) = (task_id(&tasks[0]), task_id(&tasks[1]));
    let c = &cluster.cluster_id;

    report(&m, c, &n1, vec![update(&mine, TaskState::Running)])
        .await
        .unwrap();
    assert_eq!(
        stored_state(&m, &mine),
        TaskState::Running as i32,
        "durable on return"
    );
    let desired = m.ctx.store.read(|s| s.task(&mine).unwrap().desired_state);
    assert_eq!(desired, TaskState::Running as i32);

    report(&m, c, &n1, vec![update(&mine, TaskState::Preparing)])
        .await
        .unwrap();
    assert_eq!(
        stored_state(&m, &mine),
        TaskState::Running as i32,
        "no going back"
    );

    let err = report(&m, c, &n1, vec![update(&theirs, TaskState::Failed)])
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert_eq!(stored_state(&m, &theirs), TaskState::Assigned as i32);

    let too_many = (0..=STATUS_UPDATES_PER_CALL_MAX)
        .map(|_| update(&mine, TaskState::Complete))
        .collect();
    let err = report(&m, c, &n1, too_many).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    m.stop().await;
}

/// Goal: many nodes reporting at once share few Raft writes.
/// Method: 100 concurrent calls of 10 updates each; count the distinct
/// store versions the tasks were written at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reports_are_batched_into_few_writes() {
    let (m, cluster) = start_leader().await;
    let n_nodes = 100;
    let mut nodes = Vec::new();
    let mut all = Vec::new();
    for i in 0..n_nodes {
        let node = add_worker(&m.ctx, &format!("w{i}")).await;
        all.extend((0..10).map(|slot| task(&node, slot, TaskState::Assigned)));
        nodes.push(node);
    }
    let tasks = create_tasks(&m.ctx, all).await;
    let m = Arc::new(m);
    let calls = nodes.iter().map(|node| {
        let updates = tasks
            .iter()
            .filter(|t| &t.node_id == node)
            .map(|t| update(&task_id(t), TaskState::Running))
            .collect();
        let (m, node, cluster_id) = (m.clone(), node.clone(), cluster.cluster_id.clone());
        tokio::spawn(async move { report(&m, &cluster_id, &node, updates).await })
    });
    let started = tokio::time::Instant::now();
    for call in futures::future::join_all(calls).await {
        call.unwrap().unwrap();
    }
    let elapsed = started.elapsed();
    let versions: std::collections::BTreeSet<u64> = m.ctx.store.read(|s| {
        tasks
            .iter()
            .map(|t| {
                let stored = s.task(&task_id(t)).unwrap();
                assert_eq!(
                    stored.status.as_ref().unwrap().state,
                    TaskState::Running as i32
                );
                stored.meta.as_ref().unwrap().version
            })
            .collect()
    });
    assert!(
        versions.len() <= 5,
        "{} writes for 100 calls",
        versions.len()
    );
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    if let Ok(m) = Arc::try_unwrap(m) {
        m.stop().await;
    }
}
