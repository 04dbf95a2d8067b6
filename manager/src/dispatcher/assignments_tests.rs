//! Tests of the assignments fan-out: the pure router and batch, the hub's
//! queues, and whole streams against a real single-node Raft manager.

use std::time::Duration;

use futures::StreamExt;
use rswarm_proto::dispatcher_server::Dispatcher;
use rswarm_proto::*;
use tokio::time::Instant;

use super::*;
use crate::dispatcher::DispatcherService;
use crate::dispatcher::test_support::*;

fn event(version: u64, kind: ActionKind, task: &Task) -> StoreEvent {
    StoreEvent {
        version,
        kind: kind as i32,
        object: Some(rswarm_proto::Object {
            kind: Some(Kind::Task(task.clone())),
        }),
    }
}

fn ids(changes: &[(Arc<str>, Change)]) -> Vec<(String, String)> {
    changes
        .iter()
        .map(|(node, change)| {
            let what = match change {
                Change::Upsert(t) => format!("upsert {}", task_id(t)),
                Change::Remove(id) => format!("remove {id}"),
            };
            (node.to_string(), what)
        })
        .collect()
}

// ---- Router -----------------------------------------------------------------

/// Goal: a node hears about a task once it is assigned, and again only when
/// something it needs changed — never for its own status reports.
#[test]
fn router_sends_assigned_tasks_and_skips_status_only_changes() {
    let mut router = Router::default();
    let mut t = task("n1", 1, TaskState::Pending);
    let id = task_id(&t);
    assert!(
        router.route(&event(1, ActionKind::Create, &t)).is_empty(),
        "a pending task is nobody's yet"
    );
    t.status.as_mut().unwrap().state = TaskState::Assigned as i32;
    let out = router.route(&event(2, ActionKind::Update, &t));
    assert_eq!(ids(&out), [("n1".into(), format!("upsert {id}"))]);
    t.status.as_mut().unwrap().state = TaskState::Running as i32;
    t.status.as_mut().unwrap().message = "started".into();
    t.meta.as_mut().unwrap().version = 9;
    assert!(
        router.route(&event(3, ActionKind::Update, &t)).is_empty(),
        "the agent wrote this status: no echo"
    );
    t.desired_state = TaskState::Shutdown as i32;
    let out = router.route(&event(4, ActionKind::Update, &t));
    assert_eq!(ids(&out), [("n1".into(), format!("upsert {id}"))]);
    assert_eq!(router.len(), 1);
}

/// Goal: a deleted task, a task reset below ASSIGNED and a task moved away
/// are removed from the node that had it (the new node gets the task).
#[test]
fn router_removes_deleted_reset_and_moved_tasks() {
    let mut router = Router::default();
    let a = task("n1", 1, TaskState::Assigned);
    let mut b = task("n1", 2, TaskState::Assigned);
    let mut c = task("n1", 3, TaskState::Assigned);
    for t in [&a, &b, &c] {
        router.route(&event(1, ActionKind::Create, t));
    }
    let out = router.route(&event(2, ActionKind::Delete, &a));
    assert_eq!(
        ids(&out),
        [("n1".into(), format!("remove {}", task_id(&a)))]
    );
    b.status.as_mut().unwrap().state = TaskState::Pending as i32;
    let out = router.route(&event(3, ActionKind::Update, &b));
    assert_eq!(
        ids(&out),
        [("n1".into(), format!("remove {}", task_id(&b)))]
    );
    c.node_id = "n2".into();
    let out = router.route(&event(4, ActionKind::Update, &c));
    assert_eq!(
        ids(&out),
        [
            ("n1".into(), format!("remove {}", task_id(&c))),
            ("n2".into(), format!("upsert {}", task_id(&c))),
        ]
    );
    assert!(router.route(&event(5, ActionKind::Delete, &a)).is_empty());
    assert_eq!(router.len(), 1);
}

/// Goal: a router built from a snapshot knows which node has which task: a
/// task's first change after a leader change is sent once (the router does
/// not know what the node saw), later status-only changes are not, and a
/// deletion reaches the right node.
#[test]
fn router_from_state_knows_assigned_tasks() {
    let mut s = StoreState::new();
    let assigned = task("n1", 1, TaskState::Running);
    let pending = task("", 2, TaskState::Pending);
    let proposal = Proposal {
        actions: [&assigned, &pending]
            .into_iter()
            .map(|t| crate::manager::action(ActionKind::Create, Kind::Task(t.clone())))
            .collect(),
        timestamp_ms: 1,
    };
    s.apply(1, &proposal).unwrap();
    let mut router = Router::from_state(&s);
    assert_eq!(router.len(), 1);
    let mut done = assigned.clone();
    done.status.as_mut().unwrap().state = TaskState::Complete as i32;
    let out = router.route(&event(2, ActionKind::Update, &done));
    assert_eq!(
        ids(&out),
        [("n1".into(), format!("upsert {}", task_id(&done)))]
    );
    done.status.as_mut().unwrap().message = "exited".into();
    assert!(
        router
            .route(&event(3, ActionKind::Update, &done))
            .is_empty()
    );
    let out = router.route(&event(4, ActionKind::Delete, &done));
    assert_eq!(
        ids(&out),
        [("n1".into(), format!("remove {}", task_id(&done)))]
    );
}

// ---- PendingBatch -------------------------------------------------------------

/// Goal: a lone change to a quiet stream goes out after the short gather
/// window, not the quiet period (a new task starts without waiting).
#[test]
fn a_change_to_a_quiet_stream_goes_out_at_once() {
    let t0 = Instant::now();
    let mut batch = PendingBatch::default();
    let t = task("n1", 1, TaskState::Assigned);
    batch.add(Change::Upsert(Box::new(t.clone())), t0);
    batch.add(
        Change::Remove("other".into()),
        t0 + Duration::from_millis(1),
    );
    assert_eq!(batch.deadline(), Some(t0 + ASSIGNMENTS_BATCH_GATHER));
    let sent = t0 + ASSIGNMENTS_BATCH_GATHER;
    assert_eq!(batch.take(sent).removed_task_ids.len(), 1);
    let later = sent + ASSIGNMENTS_BATCH_QUIET;
    batch.add(Change::Upsert(Box::new(t)), later);
    assert_eq!(
        batch.deadline(),
        Some(later + ASSIGNMENTS_BATCH_GATHER),
        "quiet again after a quiet period"
    );
}

/// Goal: while messages flow, a batch keeps one change per task (the
/// last), goes out after a quiet period or its maximum delay, and empties
/// when taken.
#[test]
fn batch_coalesces_per_task_and_times_out() {
    let mut batch = PendingBatch::default();
    assert_eq!(batch.deadline(), None);
    let before = Instant::now();
    batch.add(Change::Remove("first".into()), before);
    batch.take(before);
    let t0 = before + Duration::from_millis(10);
    let t = task("n1", 1, TaskState::Assigned);
    batch.add(Change::Upsert(Box::new(t.clone())), t0);
    assert_eq!(batch.deadline(), Some(t0 + ASSIGNMENTS_BATCH_QUIET));
    batch.add(Change::Remove(task_id(&t)), t0 + Duration::from_millis(50));
    assert_eq!(batch.len(), 1, "one change per task");
    // Changes every 90 ms keep the batch open, but only up to the max delay.
    for i in 1..10 {
        batch.add(
            Change::Remove(format!("other{i}")),
            t0 + Duration::from_millis(90 * i),
        );
    }
    assert_eq!(batch.deadline(), Some(t0 + ASSIGNMENTS_BATCH_DELAY_MAX));
    let message = batch.take(t0 + ASSIGNMENTS_BATCH_DELAY_MAX);
    assert_eq!(message.r#type, AssignmentsType::Incremental as i32);
    assert!(message.tasks.is_empty());
    assert!(message.removed_task_ids.contains(&task_id(&t)));
    assert_eq!(message.removed_task_ids.len(), 10);
    assert!(batch.is_empty());
    assert_eq!(batch.deadline(), None);
}

/// Goal: a batch is full at `ASSIGNMENTS_BATCH_CHANGES_MAX` changes or
/// `ASSIGNMENTS_BATCH_BYTES_MAX` bytes.
#[test]
fn batch_is_full_by_count_or_bytes() {
    let now = Instant::now();
    let mut batch = PendingBatch::default();
    for i in 0..ASSIGNMENTS_BATCH_CHANGES_MAX {
        assert!(!batch.is_full());
        batch.add(Change::Remove(format!("t{i}")), now);
    }
    assert!(batch.is_full());
    let mut batch = PendingBatch::default();
    let mut big = task("n1", 1, TaskState::Assigned);
    big.service_name = "x".repeat(ASSIGNMENTS_BATCH_BYTES_MAX / 2);
    batch.add(Change::Upsert(Box::new(big.clone())), now);
    assert!(!batch.is_full());
    // Replacing a task's change does not count its bytes twice.
    batch.add(Change::Upsert(Box::new(big.clone())), now);
    assert!(!batch.is_full());
    big.meta.as_mut().unwrap().id = "another".into();
    batch.add(Change::Upsert(Box::new(big)), now);
    assert!(batch.is_full());
}

// ---- Hub --------------------------------------------------------------------

fn routed(version: u64, id: &str) -> Routed {
    Routed {
        version,
        change: Change::Remove(id.into()),
    }
}

/// Goal: a node's full queue ends its stream (never a silent drop), a new
/// stream replaces the old, and deactivating ends every stream.
#[tokio::test]
async fn hub_overflow_replacement_and_deactivation_end_streams() {
    let hub = AssignmentsHub::default();
    assert!(hub.register("n1").await.is_err(), "inactive hub refuses");
    hub.activate();
    assert_eq!(hub.deliver("nobody", routed(1, "t")), Delivery::Done);

    let mut first = hub.register("n1").await.unwrap();
    let mut second = hub.register("n1").await.unwrap();
    assert!(first.rx.recv().await.is_none(), "replaced stream ends");
    hub.unregister("n1", first.session);
    assert_eq!(
        hub.connected(),
        1,
        "the old stream cannot unregister the new"
    );

    for i in 0..ASSIGNMENTS_NODE_QUEUE_MAX {
        assert_eq!(hub.deliver("n1", routed(1, &i.to_string())), Delivery::Done);
    }
    assert_eq!(hub.deliver("n1", routed(1, "x")), Delivery::Overflowed);
    assert_eq!(hub.connected(), 0);
    let mut drained = 0;
    while second.rx.recv().await.is_some() {
        drained += 1;
    }
    assert_eq!(
        drained, ASSIGNMENTS_NODE_QUEUE_MAX,
        "the queue closes after its content"
    );

    let mut third = hub.register("n2").await.unwrap();
    hub.deactivate();
    assert!(third.rx.recv().await.is_none());
    assert!(hub.register("n2").await.is_err());
}

// ---- Streams on a real manager ----------------------------------------------

async fn open_stream(m: &TestManager, cluster_id: &str, node: &str) -> AssignmentsStream {
    let service = DispatcherService::new(m.ctx.clone());
    service
        .assignments(as_node(cluster_id, node, AssignmentsRequest {}))
        .await
        .unwrap()
        .into_inner()
}

async fn next(stream: &mut AssignmentsStream) -> AssignmentsMessage {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a message within 10 s")
        .expect("the stream goes on")
        .expect("a message, not an error")
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Goal: the first message is the node's COMPLETE set (its assigned tasks
/// only), then INCREMENTAL batches carry new tasks, desired-state changes
/// and removals, and nothing for the node's own status reports.
/// Method: a real single-node manager; tasks written through Raft.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_sends_complete_then_incremental_changes() {
    let (m, cluster) = start_leader().await;
    let (n1, n2) = (
        add_worker(&m.ctx, "w1").await,
        add_worker(&m.ctx, "w2").await,
    );
    let before = create_tasks(
        &m.ctx,
        vec![
            task(&n1, 1, TaskState::Assigned),
            task(&n1, 2, TaskState::Running),
            task(&n1, 3, TaskState::Pending),
            task(&n2, 4, TaskState::Assigned),
        ],
    )
    .await;
    let mut stream = open_stream(&m, &cluster.cluster_id, &n1).await;
    let complete = next(&mut stream).await;
    assert_eq!(complete.r#type, AssignmentsType::Complete as i32);
    assert_eq!(
        sorted(complete.tasks.iter().map(task_id).collect()),
        sorted(vec![task_id(&before[0]), task_id(&before[1])]),
        "assigned tasks of this node only"
    );

    // A new task, a status report, a desired-state change and a deletion.
    let new = create_tasks(&m.ctx, vec![task(&n1, 5, TaskState::Assigned)]).await;
    update_task(&m.ctx, &task_id(&before[0]), |t| {
        t.status.as_mut().unwrap().state = TaskState::Running as i32;
    })
    .await;
    let stopped = update_task(&m.ctx, &task_id(&before[1]), |t| {
        t.desired_state = TaskState::Shutdown as i32;
    })
    .await;
    delete_task(&m.ctx, &task_id(&before[0])).await;
    create_tasks(&m.ctx, vec![task(&n2, 6, TaskState::Assigned)]).await;

    let mut tasks = Vec::new();
    let mut removed = Vec::new();
    while tasks.len() < 2 || removed.is_empty() {
        let message = next(&mut stream).await;
        assert_eq!(message.r#type, AssignmentsType::Incremental as i32);
        tasks.extend(message.tasks);
        removed.extend(message.removed_task_ids);
    }
    assert_eq!(
        sorted(tasks.iter().map(task_id).collect()),
        sorted(vec![task_id(&new[0]), task_id(&stopped)])
    );
    let sent_stopped = tasks.iter().find(|t| task_id(t) == task_id(&stopped));
    assert_eq!(
        sent_stopped.map(|t| t.desired_state),
        Some(TaskState::Shutdown as i32)
    );
    assert_eq!(removed, vec![task_id(&before[0])]);
    // Nothing else is pending: another node's task never shows up.
    let quiet = tokio::time::timeout(Duration::from_millis(700), stream.next()).await;
    assert!(quiet.is_err(), "unexpected message: {quiet:?}");
    m.stop().await;
}

/// Goal: a node whose queue overflows (it does not read its stream) has the
/// stream ended with Unavailable, and a new stream starts with a COMPLETE
/// set holding everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overflow_ends_the_stream_and_reconnecting_gets_everything() {
    let (m, cluster) = start_leader().await;
    let n1 = add_worker(&m.ctx, "w1").await;
    let mut stream = open_stream(&m, &cluster.cluster_id, &n1).await;
    assert!(next(&mut stream).await.tasks.is_empty());
    let count = ASSIGNMENTS_NODE_QUEUE_MAX + 100;
    let tasks = (0..count)
        .map(|i| task(&n1, i as u64 + 1, TaskState::Assigned))
        .collect();
    create_tasks(&m.ctx, tasks).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while m.ctx.dispatcher.assignments.connected() != 0 {
        assert!(Instant::now() < deadline, "overflow did not end the stream");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ended = loop {
        let item = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("the stream ends")
            .expect("with a status");
        if let Err(status) = item {
            break status;
        }
    };
    assert_eq!(ended.code(), tonic::Code::Unavailable);
    assert!(ended.message().contains("reconnect"), "{}", ended.message());
    let mut again = open_stream(&m, &cluster.cluster_id, &n1).await;
    assert_eq!(next(&mut again).await.tasks.len(), count);
    m.stop().await;
}

/// Goal: a follower sends a node to the leader (Unavailable with the
/// leader's address in `rswarm-leader`), the way Heartbeat does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_redirects_the_stream_to_the_leader() {
    let (leader, cluster) = start_leader().await;
    let n1 = add_worker(&leader.ctx, "w1").await;
    let follower = start_follower(&leader, &cluster).await;
    let service = DispatcherService::new(follower.ctx.clone());
    let Err(status) = service
        .assignments(as_node(&cluster.cluster_id, &n1, AssignmentsRequest {}))
        .await
    else {
        panic!("a follower must not serve assignments");
    };
    assert_eq!(status.code(), tonic::Code::Unavailable);
    let target = status
        .metadata()
        .get(crate::leader::LEADER_KEY)
        .and_then(|v| v.to_str().ok());
    assert_eq!(target, Some(leader.addr.as_str()));
    follower.stop().await;
    leader.stop().await;
}

/// Goal: a caller without a node certificate is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_caller_is_refused() {
    let (m, _cluster) = start_leader().await;
    let service = DispatcherService::new(m.ctx.clone());
    let Err(status) = service
        .assignments(tonic::Request::new(AssignmentsRequest {}))
        .await
    else {
        panic!("no identity, no assignments");
    };
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    m.stop().await;
}

/// Reads `stream` until it ends with a status; changes before the end are
/// allowed (they were queued before the reset).
async fn ended(stream: &mut AssignmentsStream) -> tonic::Status {
    loop {
        let item = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("the stream ends within 10 s")
            .expect("with a status, not silently");
        if let Err(status) = item {
            return status;
        }
    }
}

/// Goal: when the watch history is lost (here: a snapshot installed over
/// the store), every stream ends instead of missing changes, and the
/// fan-out starts again so a reconnecting node gets a COMPLETE set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_watch_ends_every_stream_and_the_fan_out_restarts() {
    let (m, cluster) = start_leader().await;
    let n1 = add_worker(&m.ctx, "w1").await;
    let made = create_tasks(&m.ctx, vec![task(&n1, 1, TaskState::Assigned)]).await;
    let mut stream = open_stream(&m, &cluster.cluster_id, &n1).await;
    assert_eq!(next(&mut stream).await.tasks.len(), 1);
    let state = m.ctx.store.read(|s| s.clone());
    m.ctx.store.install(state);
    assert_eq!(ended(&mut stream).await.code(), tonic::Code::Unavailable);

    let mut again = open_stream(&m, &cluster.cluster_id, &n1).await;
    assert_eq!(next(&mut again).await.tasks.len(), 1);
    update_task(&m.ctx, &task_id(&made[0]), |t| {
        t.desired_state = TaskState::Shutdown as i32;
    })
    .await;
    let change = next(&mut again).await;
    assert_eq!(change.tasks[0].desired_state, TaskState::Shutdown as i32);
    m.stop().await;
}

/// Goal: streams end when the manager stops leading (here: its Raft node
/// stops), so nodes go and find the new leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_leadership_ends_every_stream() {
    let (m, cluster) = start_leader().await;
    let n1 = add_worker(&m.ctx, "w1").await;
    let mut stream = open_stream(&m, &cluster.cluster_id, &n1).await;
    next(&mut stream).await;
    m.ctx.raft.shutdown().await;
    assert_eq!(ended(&mut stream).await.code(), tonic::Code::Unavailable);
    assert_eq!(m.ctx.dispatcher.assignments.connected(), 0);
    m.stop().await;
}

/// Goal: removing a node ends its stream at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_node_ends_its_stream() {
    let (m, cluster) = start_leader().await;
    let n1 = add_worker(&m.ctx, "w1").await;
    let mut stream = open_stream(&m, &cluster.cluster_id, &n1).await;
    next(&mut stream).await;
    let node = m.ctx.store.read(|s| s.node(&n1).cloned()).unwrap();
    m.ctx
        .propose(vec![crate::manager::action(
            ActionKind::Delete,
            Kind::Node(node),
        )])
        .await
        .unwrap();
    assert_eq!(ended(&mut stream).await.code(), tonic::Code::Unavailable);
    m.stop().await;
}
