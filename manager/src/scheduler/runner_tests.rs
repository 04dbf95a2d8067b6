//! The leader loop through a real single-node Raft group (a whole manager,
//! as `rswarm init` starts one): pending tasks written to the store get
//! ASSIGNED; an unplaceable one gets its error once, is not rewritten while
//! nothing relevant changes, and is placed when a node gains capacity.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rswarm_pki::CredentialsHandle;
use rswarm_proto::object::Kind;
use rswarm_proto::*;

use super::fixtures::{GIB, node, service};
use super::writes::ASSIGNED_MESSAGE;
use crate::bootstrap::{InitOptions, new_cluster};
use crate::manager::action;
use crate::{Manager, ManagerConfig, ManagerContext};

/// How long a test waits for the loop to act: far above the debounce, low
/// enough to fail fast.
const WAIT_MAX: Duration = Duration::from_secs(10);

async fn start_manager(dir: &std::path::Path) -> Manager {
    let addr = "127.0.0.1:7377".to_string();
    let cluster = new_cluster(InitOptions {
        advertise_addr: addr.clone(),
        // Long heartbeats: the liveness loop must not mark test nodes down.
        heartbeat_period: Duration::from_secs(60),
        node_cert_expiry: Duration::ZERO,
        description: NodeDescription::default(),
    })
    .unwrap();
    let config = ManagerConfig {
        raft_dir: dir.join("raft"),
        raft_id: cluster.raft_id,
        cluster_id: cluster.cluster_id.clone(),
        node_id: cluster.node_id.clone(),
        advertise_addr: addr,
        registry: Default::default(),
    };
    let creds = CredentialsHandle::new(cluster.credentials.clone()).unwrap();
    let manager = Manager::start_with(config, creds, false).await.unwrap();
    manager.bootstrap(&cluster).await.unwrap();
    manager
}

fn create(objects: Vec<Kind>) -> Vec<StoreAction> {
    objects
        .into_iter()
        .map(|o| action(ActionKind::Create, o))
        .collect()
}

async fn wait_for_task(
    ctx: &Arc<ManagerContext>,
    id: &str,
    what: &str,
    done: impl Fn(&Task) -> bool,
) -> Task {
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        if let Some(task) = ctx.store.read(|s| s.task(id).cloned())
            && done(&task)
        {
            return task;
        }
        assert!(
            Instant::now() < deadline,
            "task {id}: {what} within {WAIT_MAX:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn update_node(ctx: &Arc<ManagerContext>, id: &str, change: impl Fn(&mut Node)) {
    let mut current = ctx.store.read(|s| s.node(id).cloned()).unwrap();
    change(&mut current);
    ctx.propose(vec![action(ActionKind::Update, Kind::Node(current))])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_task_gets_assigned_through_raft() {
    let dir = tempfile::tempdir().unwrap();
    let manager = start_manager(dir.path()).await;
    let ctx = manager.context();
    let task = service("web").pending(1).remove(0);
    let id = task.meta.as_ref().unwrap().id.clone();
    ctx.propose(create(vec![
        Kind::Node(node("w1").build()),
        Kind::Task(task),
    ]))
    .await
    .unwrap();

    let placed = wait_for_task(&ctx, &id, "assigned", |t| {
        t.status.as_ref().map(|s| s.state) == Some(TaskState::Assigned as i32)
    })
    .await;
    assert_eq!(placed.node_id, "w1");
    let status = placed.status.unwrap();
    assert_eq!(status.message, ASSIGNED_MESSAGE);
    assert_eq!(status.err, "");
    assert!(status.timestamp_ms > 0);
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unplaceable_task_waits_quietly_then_gets_placed() {
    let dir = tempfile::tempdir().unwrap();
    let manager = start_manager(dir.path()).await;
    let ctx = manager.context();
    let task = service("db").memory(2 * GIB).pending(1).remove(0);
    let id = task.meta.as_ref().unwrap().id.clone();
    ctx.propose(create(vec![
        Kind::Node(node("w1").memory(GIB).build()),
        Kind::Task(task),
    ]))
    .await
    .unwrap();

    // The first manager's own node has not reported yet: not available.
    let expected = "no suitable node (1 node not available for new tasks; \
                    insufficient memory on 1 node)";
    let waiting = wait_for_task(&ctx, &id, "explained", |t| {
        t.status.as_ref().is_some_and(|s| s.err == expected)
    })
    .await;
    assert_eq!(
        waiting.status.as_ref().unwrap().state,
        TaskState::Pending as i32
    );

    // A node change that frees nothing: the task is looked at again, but
    // its unchanged error is not rewritten.
    update_node(&ctx, "w1", |n| {
        if let Some(a) = n.spec.as_mut().and_then(|s| s.annotations.as_mut()) {
            a.labels.insert("rack".into(), "r1".into());
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let version = |t: &Task| t.meta.as_ref().map(|m| m.version);
    let now = ctx.store.read(|s| s.task(&id).cloned()).unwrap();
    assert_eq!(version(&now), version(&waiting), "no write storm");

    update_node(&ctx, "w1", |n| {
        if let Some(r) = n.description.as_mut().and_then(|d| d.resources.as_mut()) {
            r.memory_bytes = 4 * GIB;
        }
    })
    .await;
    let placed = wait_for_task(&ctx, &id, "assigned after the node grew", |t| {
        t.status.as_ref().map(|s| s.state) == Some(TaskState::Assigned as i32)
    })
    .await;
    assert_eq!(placed.node_id, "w1");
    assert_eq!(placed.status.unwrap().err, "");
    manager.shutdown().await;
}
