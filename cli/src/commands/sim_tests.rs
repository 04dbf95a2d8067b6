//! The simulator against a real manager in this process (single-node Raft,
//! served over mutual TLS on loopback): nodes join and show Ready, tasks
//! assigned to them through the store are reported RUNNING, stopping tasks
//! SHUTDOWN, and a restart reuses the saved identities.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rswarm_manager::bootstrap::{InitOptions, NewCluster, new_cluster};
use rswarm_manager::manager::action;
use rswarm_manager::{Manager, ManagerConfig, ManagerContext};
use rswarm_pki::CredentialsHandle;
use rswarm_proto::object::Kind;
use rswarm_proto::*;
use tokio_util::sync::CancellationToken;

use super::*;

struct TestCluster {
    manager: Manager,
    ctx: Arc<ManagerContext>,
    cluster: NewCluster,
    addr: String,
    cancel: CancellationToken,
    dir: PathBuf,
}

impl TestCluster {
    async fn start(name: &str) -> Self {
        rswarm_pki::install_crypto_provider();
        let dir = std::env::temp_dir().join(format!("rswarm-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let cluster = new_cluster(InitOptions {
            advertise_addr: addr.clone(),
            heartbeat_period: Duration::ZERO,
            node_cert_expiry: Duration::ZERO,
            description: NodeDescription::default(),
        })
        .unwrap();
        let creds = CredentialsHandle::new(cluster.credentials.clone()).unwrap();
        let config = ManagerConfig {
            raft_dir: dir.join("raft"),
            raft_id: cluster.raft_id,
            cluster_id: cluster.cluster_id.clone(),
            node_id: cluster.node_id.clone(),
            advertise_addr: addr.clone(),
            registry: Default::default(),
        };
        let manager = Manager::start(config, creds.clone()).await.unwrap();
        manager.bootstrap(&cluster).await.unwrap();
        let cancel = CancellationToken::new();
        let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
        let incoming =
            rswarm_pki::tls_incoming(listener, rswarm_pki::server_config(&creds).unwrap());
        let routes = manager.routes();
        let stop = cancel.clone();
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_routes(routes)
                .serve_with_incoming_shutdown(incoming, stop.cancelled())
                .await;
        });
        let ctx = manager.context();
        Self {
            manager,
            ctx,
            cluster,
            addr,
            cancel,
            dir,
        }
    }

    fn sim_config(&self, nodes: usize) -> SimConfig {
        SimConfig {
            nodes,
            token: self.cluster.tokens.worker.clone(),
            manager: self.addr.clone(),
            hostname_prefix: "simtest".into(),
            state_dir: self.dir.join("sim"),
        }
    }

    /// IDs of the simulated nodes in the store, and how many are Ready.
    fn sim_nodes(&self) -> (Vec<String>, usize) {
        self.ctx.store.read(|s| {
            let sims: Vec<&Node> = s
                .nodes()
                .filter(|n| {
                    n.description
                        .as_ref()
                        .is_some_and(|d| d.hostname.starts_with("simtest-"))
                })
                .collect();
            let ready = sims
                .iter()
                .filter(|n| n.status.as_ref().map(|st| st.state) == Some(NodeState::Ready as i32))
                .count();
            let ids = sims
                .iter()
                .filter_map(|n| n.meta.as_ref().map(|m| m.id.clone()))
                .collect();
            (ids, ready)
        })
    }

    /// Creates service "web" with `replicas` tasks; returns its ID.
    async fn create_service(&self, replicas: u64) -> String {
        let id = rswarm_manager::controlapi::new_object_id();
        let service = Service {
            meta: Some(Meta {
                id: id.clone(),
                ..Default::default()
            }),
            spec: Some(web_spec(replicas)),
            spec_version: 1,
            ..Default::default()
        };
        self.ctx
            .propose(vec![action(ActionKind::Create, Kind::Service(service))])
            .await
            .unwrap();
        id
    }

    /// Sets the replicas of service `id`.
    async fn scale(&self, id: &str, replicas: u64) {
        let mut service = self.ctx.store.read(|s| s.service(id).cloned()).unwrap();
        service.spec = Some(web_spec(replicas));
        self.ctx
            .propose(vec![action(ActionKind::Update, Kind::Service(service))])
            .await
            .unwrap();
    }

    fn count_tasks_in(&self, state: TaskState) -> usize {
        self.ctx.store.read(|s| {
            s.tasks()
                .filter(|t| t.status.as_ref().map(|st| st.state) == Some(state as i32))
                .count()
        })
    }

    async fn stop(self) {
        self.cancel.cancel();
        self.manager.shutdown().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

fn web_spec(replicas: u64) -> ServiceSpec {
    let spec = ServiceSpec {
        annotations: Some(Annotations {
            name: "web".into(),
            ..Default::default()
        }),
        task: Some(TaskSpec {
            driver: "process".into(),
            container: Some(ContainerSpec {
                args: vec!["/bin/true".into()],
                ..Default::default()
            }),
            ..Default::default()
        }),
        mode: Some(service_spec::Mode::Replicated(ReplicatedMode { replicas })),
        ..Default::default()
    };
    rswarm_manager::spec::normalize(spec, "web").unwrap()
}

/// Goal: simulated nodes are real nodes to the managers, and run what they
/// are assigned. Method: 20 simulated nodes against an in-process manager;
/// a service of 100 replicas placed on them; scaled down to 80 (the nodes
/// stop 20); then the simulator restarted on the same state directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_nodes_join_show_ready_and_run_their_tasks() {
    let c = TestCluster::start("sim-e2e").await;
    let n_nodes = 20;
    let sim = Simulator::new(c.sim_config(n_nodes)).unwrap();
    sim.launch().await.unwrap();
    wait_until("the nodes to be Ready", Duration::from_secs(30), || {
        c.sim_nodes().1 == n_nodes
    })
    .await;
    let (nodes, _) = c.sim_nodes();
    let hostnames = c.ctx.store.read(|s| {
        let mut names: Vec<String> = nodes
            .iter()
            .filter_map(|id| s.node(id)?.description.as_ref().map(|d| d.hostname.clone()))
            .collect();
        names.sort();
        names
    });
    assert_eq!(hostnames.first().map(String::as_str), Some("simtest-0001"));
    let resources = c.ctx.store.read(|s| {
        s.node(&nodes[0])
            .and_then(|n| n.description.as_ref()?.resources)
    });
    assert_eq!(
        resources.map(|r| r.nano_cpus),
        Some(rswarm_agent::sim::SIM_NANO_CPUS)
    );

    // A real service: the orchestrator makes the tasks, the scheduler
    // spreads them (5 per node), the simulated nodes report them running.
    let total = 5 * n_nodes;
    let service_id = c.create_service(total as u64).await;
    let took = wait_until("every task to run", Duration::from_secs(60), || {
        c.count_tasks_in(TaskState::Running) == total
    })
    .await;
    eprintln!("{total} tasks on {n_nodes} simulated nodes RUNNING after {took:?}");
    let counters = sim.counters();
    wait_until("the counters", Duration::from_secs(5), || {
        counters.running.load(Ordering::Relaxed) == total
    })
    .await;

    // Scaling down: the removed tasks are stopped by their nodes (which
    // report SHUTDOWN), then deleted by the reaper.
    let total = total - n_nodes;
    c.scale(&service_id, total as u64).await;
    wait_until(
        "the scaled-down tasks to go",
        Duration::from_secs(60),
        || {
            c.ctx.store.read(|s| s.task_count()) == total
                && c.count_tasks_in(TaskState::Running) == total
        },
    )
    .await;
    sim.stop().await;

    let again = Simulator::new(c.sim_config(n_nodes)).unwrap();
    again.launch().await.unwrap();
    assert_eq!(again.counters().started.load(Ordering::Relaxed), n_nodes);
    wait_until(
        "the restarted nodes to get their tasks",
        Duration::from_secs(30),
        || again.counters().tasks.load(Ordering::Relaxed) == total,
    )
    .await;
    assert_eq!(c.sim_nodes().0.len(), n_nodes, "no node joined twice");
    again.stop().await;
    c.stop().await;
}

#[test]
fn reads_the_open_file_limit() {
    let dir = std::env::temp_dir().join(format!("rswarm-limits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("limits");
    std::fs::write(
        &path,
        "Limit                     Soft Limit           Hard Limit           Units\n\
         Max open files            1024                 524288               files\n",
    )
    .unwrap();
    assert_eq!(open_files_limit(&path), Some(1024));
    assert_eq!(open_files_limit(&dir.join("missing")), None);
    let _ = std::fs::remove_dir_all(&dir);
}
