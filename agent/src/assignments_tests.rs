//! Tests of the task protocol's client side: the status queue's rules, and
//! both clients against scripted dispatchers served over real mutual TLS
//! (one may redirect to the other, or refuse, or fail).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use rswarm_pki::{
    NodeCredentials, NodeSubject, PeerInfo, Role, RootCa, generate_key_and_csr, server_config,
    tls_incoming,
};
use rswarm_proto::dispatcher_server::{Dispatcher, DispatcherServer};
use rswarm_proto::*;
use tokio::net::TcpListener;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response};

use super::*;

const DAY: Duration = Duration::from_secs(24 * 3600);

// ---- StatusQueue (pure) -----------------------------------------------------

fn st(state: TaskState) -> TaskStatus {
    TaskStatus {
        state: state as i32,
        ..Default::default()
    }
}

/// Goal: one entry per task holding the furthest state; an acknowledgement
/// removes only what was sent, not a newer status queued meanwhile.
#[test]
fn queue_coalesces_per_task_and_keeps_newer_updates() {
    let mut q = StatusQueue::default();
    q.push("a".into(), st(TaskState::Accepted));
    q.push("b".into(), st(TaskState::Running));
    q.push("a".into(), st(TaskState::Running));
    q.push("a".into(), st(TaskState::Preparing));
    assert_eq!(q.len(), 2);
    let batch = q.peek_batch();
    let states: Vec<(String, i32)> = batch
        .iter()
        .map(|(id, _, s)| (id.clone(), s.state))
        .collect();
    assert_eq!(
        states,
        [
            ("a".to_string(), TaskState::Running as i32),
            ("b".to_string(), TaskState::Running as i32)
        ],
        "oldest first, furthest state"
    );
    q.push("b".into(), st(TaskState::Complete));
    q.acknowledge(&batch);
    assert_eq!(q.len(), 1);
    assert_eq!(q.peek_batch()[0].2.state, TaskState::Complete as i32);
}

/// Goal: a RUNNING status with a new health (same state) replaces the
/// queued one and leaves as a new update even after the first was sent,
/// so a health change is never coalesced away.
#[test]
fn queue_takes_a_health_change_of_the_same_state() {
    let mut q = StatusQueue::default();
    q.push("a".into(), st(TaskState::Running));
    let sent = q.peek_batch();
    let healthy = TaskStatus {
        health: ContainerHealth::Healthy as i32,
        ..st(TaskState::Running)
    };
    q.push("a".into(), healthy.clone());
    q.acknowledge(&sent);
    assert_eq!(q.len(), 1, "the health change is still to send");
    assert_eq!(q.peek_batch()[0].2, healthy);
}

/// Goal: a batch holds at most `STATUS_BATCH_MAX` updates, and the queue
/// refuses new tasks beyond its bound (but still updates queued ones).
#[test]
fn queue_is_bounded() {
    let mut q = StatusQueue::default();
    for i in 0..STATUS_QUEUE_TASKS_MAX {
        q.push(i.to_string(), st(TaskState::Running));
    }
    assert_eq!(q.peek_batch().len(), STATUS_BATCH_MAX);
    assert!(!q.has_room_for("new"));
    assert!(q.has_room_for("0"));
}

#[test]
fn classify_follows_redirects_and_drops_refusals() {
    let mut redirect = Status::unavailable("not the leader");
    redirect
        .metadata_mut()
        .insert(LEADER_KEY, "10.0.0.2:7377".parse().unwrap());
    assert_eq!(
        classify("10.0.0.1:7377", &redirect),
        Failure::Redirect("10.0.0.2:7377".into())
    );
    assert!(matches!(
        classify("10.0.0.2:7377", &redirect),
        Failure::Retry(_)
    ));
    assert!(matches!(
        classify("a", &Status::permission_denied("x")),
        Failure::Refused(_)
    ));
    assert!(matches!(
        classify("a", &Status::aborted("x")),
        Failure::Retry(_)
    ));
}

// ---- Scripted dispatchers over mutual TLS -----------------------------------

type StreamTx = mpsc::Sender<Result<AssignmentsMessage, Status>>;

/// A dispatcher whose behaviour the test scripts.
#[derive(Clone)]
struct Scripted {
    /// Redirect every call to this address.
    redirect_to: Option<String>,
    /// Each Assignments call hands the test the stream's sender.
    streams: mpsc::Sender<(String, StreamTx)>,
    /// Status calls received (node, updates).
    reports: mpsc::Sender<(String, Vec<TaskStatusUpdate>)>,
    /// Answers to the next status calls (OK once empty).
    status_errors: Arc<Mutex<VecDeque<Status>>>,
}

fn caller(req: &Request<impl Sized>) -> String {
    req.extensions()
        .get::<PeerInfo>()
        .and_then(|p| p.identity.as_ref())
        .map(|s| s.node_id.clone())
        .unwrap_or_default()
}

#[tonic::async_trait]
impl Dispatcher for Scripted {
    async fn heartbeat(
        &self,
        _req: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    type AssignmentsStream = ReceiverStream<Result<AssignmentsMessage, Status>>;

    async fn assignments(
        &self,
        req: Request<AssignmentsRequest>,
    ) -> Result<Response<Self::AssignmentsStream>, Status> {
        if let Some(leader) = &self.redirect_to {
            return Err(redirect(leader));
        }
        let (tx, rx) = mpsc::channel(16);
        let _ = self.streams.send((caller(&req), tx)).await;
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn update_task_status(
        &self,
        req: Request<UpdateTaskStatusRequest>,
    ) -> Result<Response<UpdateTaskStatusResponse>, Status> {
        if let Some(leader) = &self.redirect_to {
            return Err(redirect(leader));
        }
        let node = caller(&req);
        let _ = self.reports.send((node, req.into_inner().updates)).await;
        match self.status_errors.lock().unwrap().pop_front() {
            Some(status) => Err(status),
            None => Ok(Response::new(UpdateTaskStatusResponse {})),
        }
    }
}

fn redirect(leader: &str) -> Status {
    let mut status = Status::unavailable("this manager is not the leader: ask the leader");
    status
        .metadata_mut()
        .insert(LEADER_KEY, leader.parse().unwrap());
    status
}

fn credentials(ca: &RootCa, node_id: &str, role: Role) -> CredentialsHandle {
    let (key_pem, csr) = generate_key_and_csr().unwrap();
    let subject = NodeSubject {
        node_id: node_id.into(),
        role,
        cluster_id: "c1".into(),
    };
    CredentialsHandle::new(NodeCredentials {
        ca_cert_pem: ca.cert_pem().to_owned(),
        cert_pem: ca.sign_node_csr(&csr, &subject, DAY).unwrap(),
        key_pem,
    })
    .unwrap()
}

struct Fixture {
    ca: RootCa,
    streams: mpsc::Receiver<(String, StreamTx)>,
    reports: mpsc::Receiver<(String, Vec<TaskStatusUpdate>)>,
    status_errors: Arc<Mutex<VecDeque<Status>>>,
    streams_tx: mpsc::Sender<(String, StreamTx)>,
    reports_tx: mpsc::Sender<(String, Vec<TaskStatusUpdate>)>,
}

impl Fixture {
    fn new() -> Self {
        let (streams_tx, streams) = mpsc::channel(16);
        let (reports_tx, reports) = mpsc::channel(64);
        Self {
            ca: RootCa::generate().unwrap(),
            streams,
            reports,
            status_errors: Arc::default(),
            streams_tx,
            reports_tx,
        }
    }

    /// Serves a scripted dispatcher (redirecting to `redirect_to` if set).
    async fn serve(&self, redirect_to: Option<String>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let creds = credentials(&self.ca, "manager1", Role::Manager);
        let incoming = tls_incoming(listener, server_config(&creds).unwrap());
        let service = Scripted {
            redirect_to,
            streams: self.streams_tx.clone(),
            reports: self.reports_tx.clone(),
            status_errors: self.status_errors.clone(),
        };
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(DispatcherServer::new(service))
                .serve_with_incoming(incoming),
        );
        addr
    }

    /// A link for node `node_id` whose session knows `managers`.
    fn link(&self, node_id: &str, managers: Vec<String>) -> ManagerLink {
        let (_tx, rx) = watch::channel(AgentStatus {
            role: Role::Worker,
            raft_id: 0,
            managers,
            connected: true,
            removed: None,
        });
        ManagerLink::new(credentials(&self.ca, node_id, Role::Worker), rx)
    }
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

fn message(kind: AssignmentsType, task_ids: &[&str]) -> AssignmentsMessage {
    AssignmentsMessage {
        r#type: kind as i32,
        tasks: task_ids
            .iter()
            .map(|id| Task {
                meta: Some(Meta {
                    id: id.to_string(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect(),
        ..AssignmentsMessage::default()
    }
}

/// Goal: the client follows a redirect to the leader, forwards messages in
/// order, and reconnects by itself when the stream ends (getting a new
/// COMPLETE set).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_follows_redirects_forwards_in_order_and_reconnects() {
    let mut f = Fixture::new();
    let leader = f.serve(None).await;
    let follower = f.serve(Some(leader.to_string())).await;
    let (tx, mut rx) = mpsc::channel(8);
    let client = AssignmentsClient::start(f.link("node1", vec![follower.to_string()]), tx);

    let (node, stream) = within("a stream on the leader", f.streams.recv())
        .await
        .unwrap();
    assert_eq!(node, "node1", "the caller is identified by its certificate");
    stream
        .send(Ok(message(AssignmentsType::Complete, &["t1"])))
        .await
        .unwrap();
    stream
        .send(Ok(message(AssignmentsType::Incremental, &["t2"])))
        .await
        .unwrap();
    let first = within("complete", rx.recv()).await.unwrap();
    let second = within("incremental", rx.recv()).await.unwrap();
    assert_eq!(first.r#type, AssignmentsType::Complete as i32);
    assert_eq!(second.tasks[0].meta.as_ref().unwrap().id, "t2");

    // The manager ends the stream (e.g. the node fell behind).
    stream
        .send(Err(Status::unavailable("reset: reconnect")))
        .await
        .unwrap();
    drop(stream);
    let (_, again) = within("a new stream", f.streams.recv()).await.unwrap();
    again
        .send(Ok(message(AssignmentsType::Complete, &["t1", "t2"])))
        .await
        .unwrap();
    let third = within("complete again", rx.recv()).await.unwrap();
    assert_eq!(third.r#type, AssignmentsType::Complete as i32);
    assert_eq!(third.tasks.len(), 2);
    client.stop().await;
}

/// Goal: an unreachable manager is skipped for the next one in the list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_fails_over_to_the_next_manager() {
    let mut f = Fixture::new();
    let alive = f.serve(None).await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (tx, _rx) = mpsc::channel(8);
    let link = f.link("node1", vec![dead.to_string(), alive.to_string()]);
    let client = AssignmentsClient::start(link, tx);
    let (node, _stream) = within("a stream on the live manager", f.streams.recv())
        .await
        .unwrap();
    assert_eq!(node, "node1");
    client.stop().await;
}

fn update(id: &str, state: TaskState) -> TaskStatusUpdate {
    TaskStatusUpdate {
        task_id: id.into(),
        status: Some(st(state)),
    }
}

async fn wait_pending(reporter: &StatusReporter, n: usize) {
    within("the queue to drain", async {
        while reporter.pending() != n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// Goal: updates reach the leader in one batch through a redirect; a failed
/// call keeps them queued and they are sent again; a refused batch is
/// dropped so later updates are not blocked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reporter_batches_retries_and_drops_refused_updates() {
    let mut f = Fixture::new();
    let leader = f.serve(None).await;
    let follower = f.serve(Some(leader.to_string())).await;
    let reporter = StatusReporter::start(f.link("node1", vec![follower.to_string()]));

    f.status_errors
        .lock()
        .unwrap()
        .push_back(Status::unavailable(
            "leadership changed during the call: retry",
        ));
    reporter
        .report_all(vec![
            update("a", TaskState::Running),
            update("b", TaskState::Running),
        ])
        .await;
    let (node, first) = within("a first call", f.reports.recv()).await.unwrap();
    assert_eq!(node, "node1");
    assert_eq!(first.len(), 2, "one call for both");
    let (_, retried) = within("the retry", f.reports.recv()).await.unwrap();
    assert_eq!(retried, first, "nothing lost after a failed call");
    wait_pending(&reporter, 0).await;

    f.status_errors
        .lock()
        .unwrap()
        .push_back(Status::permission_denied(
            "task x is not assigned to node node1",
        ));
    reporter.report("x".into(), st(TaskState::Running)).await;
    let (_, refused) = within("the refused call", f.reports.recv()).await.unwrap();
    assert_eq!(refused[0].task_id, "x");
    wait_pending(&reporter, 0).await;
    reporter.report("c".into(), st(TaskState::Running)).await;
    let (_, later) = within("a later call", f.reports.recv()).await.unwrap();
    assert_eq!(later[0].task_id, "c");
    reporter.stop().await;
}

#[test]
fn jitter_stays_within_its_bound_and_varies() {
    let max = Duration::from_millis(1000);
    let samples: Vec<Duration> = (0..64).map(|_| jitter(max)).collect();
    assert!(samples.iter().all(|d| *d <= max));
    let distinct: std::collections::BTreeSet<Duration> = samples.into_iter().collect();
    assert!(
        distinct.len() > 32,
        "{} distinct values of 64",
        distinct.len()
    );
}
