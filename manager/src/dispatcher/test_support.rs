//! Test fixtures for the dispatcher: a real single-node Raft manager in
//! process (and, when a test needs a follower, a second manager added as a
//! learner over real mutual TLS), worker nodes and tasks written through
//! Raft, and requests carrying a node's certificate identity.

use std::sync::Arc;
use std::time::Duration;

use rswarm_pki::{CredentialsHandle, NodeCredentials, NodeSubject, PeerInfo, Role, RootCa};
use rswarm_proto::object::Kind;
use rswarm_proto::*;
use tokio_util::sync::CancellationToken;
use tonic::Request;

use crate::bootstrap::{InitOptions, NewCluster, new_cluster};
use crate::ca::{new_node, new_ready_manager};
use crate::controlapi::new_object_id;
use crate::manager::{Manager, ManagerConfig, ManagerContext, action};

/// A running manager, its data dir and (optionally) its TLS listener.
pub struct TestManager {
    pub manager: Manager,
    pub ctx: Arc<ManagerContext>,
    pub addr: String,
    cancel: CancellationToken,
    _dir: tempfile::TempDir,
}

impl TestManager {
    /// Stops the listener and the manager.
    pub async fn stop(self) {
        self.cancel.cancel();
        self.manager.shutdown().await;
    }
}

/// A free loopback address (bound then released).
fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// Serves `manager`'s routes on `addr` over mutual TLS until `cancel`.
async fn serve(
    manager: &Manager,
    addr: &str,
    creds: &CredentialsHandle,
    cancel: CancellationToken,
) {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let incoming = rswarm_pki::tls_incoming(listener, rswarm_pki::server_config(creds).unwrap());
    let routes = manager.routes();
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, cancel.cancelled())
            .await;
    });
}

/// A new cluster whose first manager leads and serves on loopback.
pub async fn start_leader() -> (TestManager, NewCluster) {
    let addr = free_addr();
    let cluster = new_cluster(InitOptions {
        advertise_addr: addr.clone(),
        heartbeat_period: Duration::ZERO,
        node_cert_expiry: Duration::ZERO,
        description: NodeDescription::default(),
    })
    .unwrap();
    let creds = CredentialsHandle::new(cluster.credentials.clone()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = ManagerConfig {
        raft_dir: dir.path().join("raft"),
        raft_id: cluster.raft_id,
        cluster_id: cluster.cluster_id.clone(),
        node_id: cluster.node_id.clone(),
        advertise_addr: addr.clone(),
        registry: Default::default(),
    };
    let manager = Manager::start_with(config, creds.clone(), false)
        .await
        .unwrap();
    manager.bootstrap(&cluster).await.unwrap();
    let cancel = CancellationToken::new();
    serve(&manager, &addr, &creds, cancel.clone()).await;
    let ctx = manager.context();
    (
        TestManager {
            manager,
            ctx,
            addr,
            cancel,
            _dir: dir,
        },
        cluster,
    )
}

/// The cluster's root CA (with its key), from the first objects.
fn root_ca(cluster: &NewCluster) -> RootCa {
    let c = cluster
        .objects
        .iter()
        .find_map(|a| match a.object.as_ref()?.kind.as_ref()? {
            Kind::Cluster(c) => c.root_ca.clone(),
            _ => None,
        })
        .unwrap();
    RootCa::from_pem(&c.ca_cert_pem, &c.ca_key_pem).unwrap()
}

/// A second manager, admitted through the store and added to Raft as a
/// learner by the leader's membership loop; returns once it knows the leader.
pub async fn start_follower(leader: &TestManager, cluster: &NewCluster) -> TestManager {
    let addr = free_addr();
    let node_id = new_object_id();
    let subject = NodeSubject {
        node_id: node_id.clone(),
        role: Role::Manager,
        cluster_id: cluster.cluster_id.clone(),
    };
    let (key_pem, csr_pem) = rswarm_pki::generate_key_and_csr().unwrap();
    let cert_pem = root_ca(cluster)
        .sign_node_csr(&csr_pem, &subject, Duration::from_secs(3600 * 24))
        .unwrap();
    let creds = CredentialsHandle::new(NodeCredentials {
        ca_cert_pem: cluster.credentials.ca_cert_pem.clone(),
        cert_pem,
        key_pem,
    })
    .unwrap();
    let (node, raft_id) = new_ready_manager(&node_id, &addr);
    leader
        .ctx
        .propose(vec![action(ActionKind::Create, Kind::Node(node))])
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = ManagerConfig {
        raft_dir: dir.path().join("raft"),
        raft_id,
        cluster_id: cluster.cluster_id.clone(),
        node_id,
        advertise_addr: addr.clone(),
        registry: Default::default(),
    };
    let manager = Manager::start_with(config, creds.clone(), false)
        .await
        .unwrap();
    let cancel = CancellationToken::new();
    serve(&manager, &addr, &creds, cancel.clone()).await;
    let ctx = manager.context();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while ctx.raft.leader().is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "follower never learned the leader"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    TestManager {
        manager,
        ctx,
        addr,
        cancel,
        _dir: dir,
    }
}

/// Creates a worker node; returns its ID.
pub async fn add_worker(ctx: &ManagerContext, hostname: &str) -> String {
    let id = new_object_id();
    let description = NodeDescription {
        hostname: hostname.to_string(),
        ..Default::default()
    };
    let node = new_node(&id, Role::Worker, "127.0.0.1:1", Some(description));
    ctx.propose(vec![action(ActionKind::Create, Kind::Node(node))])
        .await
        .unwrap();
    id
}

/// A task of service "web" in `slot` on `node_id` with status `state`.
pub fn task(node_id: &str, slot: u64, state: TaskState) -> Task {
    Task {
        meta: Some(Meta {
            id: new_object_id(),
            ..Default::default()
        }),
        service_id: "svc".into(),
        slot,
        node_id: node_id.to_string(),
        desired_state: TaskState::Running as i32,
        status: Some(TaskStatus {
            state: state as i32,
            message: "scheduled".into(),
            ..Default::default()
        }),
        spec: Some(TaskSpec::default()),
        spec_version: 1,
        service_name: "web".into(),
        endpoint: None,
    }
}

/// Creates `tasks` through Raft (in proposals of ≤1,000); returns them as stored.
pub async fn create_tasks(ctx: &ManagerContext, tasks: Vec<Task>) -> Vec<Task> {
    let ids: Vec<String> = tasks.iter().map(task_id).collect();
    for chunk in tasks.chunks(1000) {
        let actions = chunk
            .iter()
            .map(|t| action(ActionKind::Create, Kind::Task(t.clone())))
            .collect();
        ctx.propose(actions).await.unwrap();
    }
    ctx.store
        .read(|s| ids.iter().map(|id| s.task(id).unwrap().clone()).collect())
}

/// Writes `change` to the stored task `id`; returns it as stored.
pub async fn update_task(ctx: &ManagerContext, id: &str, change: impl Fn(&mut Task)) -> Task {
    let mut t = ctx.store.read(|s| s.task(id).unwrap().clone());
    change(&mut t);
    ctx.propose(vec![action(ActionKind::Update, Kind::Task(t))])
        .await
        .unwrap();
    ctx.store.read(|s| s.task(id).unwrap().clone())
}

/// Deletes the stored task `id`.
pub async fn delete_task(ctx: &ManagerContext, id: &str) {
    let t = ctx.store.read(|s| s.task(id).unwrap().clone());
    ctx.propose(vec![action(ActionKind::Delete, Kind::Task(t))])
        .await
        .unwrap();
}

/// The ID of a task.
pub fn task_id(t: &Task) -> String {
    t.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default()
}

/// `message` as sent by worker `node_id` of `cluster_id` over mutual TLS.
pub fn as_node<T>(cluster_id: &str, node_id: &str, message: T) -> Request<T> {
    let mut req = Request::new(message);
    req.extensions_mut().insert(PeerInfo {
        remote_addr: "127.0.0.1:9".parse().unwrap(),
        identity: Some(NodeSubject {
            node_id: node_id.to_string(),
            role: Role::Worker,
            cluster_id: cluster_id.to_string(),
        }),
        cert_serial_hex: None,
    });
    req
}
