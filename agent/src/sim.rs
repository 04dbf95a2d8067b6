//! Simulated nodes, for scale tests: many agents in one process, each with
//! its own real identity (joined with the worker token, credentials kept on
//! disk so a restart reuses them) and its own real session with the managers
//! — heartbeats, the Assignments stream and status reports — but no tasks are
//! run: the simulated driver accepts every task and reports it RUNNING (or
//! READY when held back), and SHUTDOWN once its desired state says stop.
//!
//! Light by design: all nodes share the caller's tokio runtime, joins run a
//! few at a time, starts are staggered so managers do not face thousands of
//! TLS handshakes at once, and each node reports its statuses in batches.
//!
//! Does not own: the protocol (see `session` and `assignments`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rswarm_pki::{CredentialsHandle, JoinToken, NodeCredentials};
use rswarm_proto::{
    AssignmentsMessage, AssignmentsType, NodeDescription, Platform, Resources, Task, TaskState,
    TaskStatus, TaskStatusUpdate,
};
use thiserror::Error;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::assignments::{AssignmentsClient, ManagerLink, StatusReporter};
use crate::join::{JoinError, join};
use crate::limits::{
    SESSION_BACKOFF_MAX, SESSION_BACKOFF_MIN, SIM_ADVERTISE_PORT_BASE, SIM_ASSIGNMENTS_QUEUE_MAX,
    SIM_JOIN_ATTEMPTS, SIM_JOINS_IN_FLIGHT_MAX, SIM_NODES_MAX, SIM_START_INTERVAL,
};
use crate::session::{Agent, AgentConfig};

/// The task drivers a simulated node claims.
pub const SIM_DRIVERS: &[&str] = &["process", "oci"];
/// CPUs a simulated node claims.
pub const SIM_NANO_CPUS: i64 = 4_000_000_000;
/// Memory a simulated node claims.
pub const SIM_MEMORY_BYTES: i64 = 8 * 1024 * 1024 * 1024;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// How many nodes.
    pub nodes: usize,
    /// The worker join token.
    pub token: String,
    /// A manager's address, host:port.
    pub manager: String,
    /// Nodes are named `<prefix>-0001`, `<prefix>-0002`, …
    pub hostname_prefix: String,
    /// Where each node keeps its credentials (one directory per node).
    pub state_dir: PathBuf,
}

/// Why the simulation could not start.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SimError {
    /// A setting is out of range.
    #[error("{0}")]
    Invalid(String),
    /// The join token is malformed.
    #[error(transparent)]
    Token(#[from] rswarm_pki::TokenError),
    /// Saved credentials belong to another cluster.
    #[error(
        "{dir} holds the credentials of another cluster (its CA does not match the token): \
         delete it or pick another --state-dir"
    )]
    OtherCluster {
        /// The node's state directory.
        dir: PathBuf,
    },
    /// Saved credentials could not be read or written.
    #[error("credentials in {dir}: {source}")]
    Credentials {
        /// The node's state directory.
        dir: PathBuf,
        /// What failed.
        source: rswarm_pki::PkiError,
    },
    /// A node could not join.
    #[error("{hostname} could not join: {source}")]
    Join {
        /// The node's hostname.
        hostname: String,
        /// Why.
        source: JoinError,
    },
}

/// Counters over every simulated node, updated as things happen.
#[derive(Debug, Default)]
pub struct SimCounters {
    /// Nodes that have credentials and run a session.
    pub started: AtomicUsize,
    /// Tasks the nodes were assigned and still hold.
    pub tasks: AtomicUsize,
    /// Of those, tasks reported (or seen) RUNNING.
    pub running: AtomicUsize,
}

/// One simulated node while it runs.
struct SimNode {
    agent: Agent,
    assignments: AssignmentsClient,
    reporter: StatusReporter,
}

/// A running simulation. See the module doc.
pub struct Simulator {
    config: SimConfig,
    digest: String,
    counters: Arc<SimCounters>,
    nodes: tokio::sync::Mutex<Vec<SimNode>>,
    drivers: TaskTracker,
    cancel: CancellationToken,
}

impl Simulator {
    /// Checks `config`; nothing starts yet.
    pub fn new(config: SimConfig) -> Result<Self, SimError> {
        if config.nodes == 0 || config.nodes > SIM_NODES_MAX {
            return Err(SimError::Invalid(format!(
                "--nodes {} is out of range: simulate 1 to {SIM_NODES_MAX} nodes",
                config.nodes
            )));
        }
        let token: JoinToken = config.token.trim().parse()?;
        Ok(Self {
            digest: token.ca_digest,
            config,
            counters: Arc::default(),
            nodes: tokio::sync::Mutex::new(Vec::new()),
            drivers: TaskTracker::new(),
            cancel: CancellationToken::new(),
        })
    }

    /// The counters, to watch progress.
    pub fn counters(&self) -> Arc<SimCounters> {
        self.counters.clone()
    }

    /// Joins (or reloads) and starts every node; returns once all run, or
    /// with the first node that cannot join (the others keep running until
    /// [`Self::stop`]).
    pub async fn launch(&self) -> Result<(), SimError> {
        let joins = Arc::new(Semaphore::new(SIM_JOINS_IN_FLIGHT_MAX));
        let mut pending = tokio::task::JoinSet::new();
        for index in 1..=self.config.nodes {
            let permit = joins.clone().acquire_owned().await;
            if permit.is_err() || self.cancel.is_cancelled() {
                break;
            }
            let identity = NodeIdentity::new(&self.config, index);
            let (manager, token, digest) = (
                self.config.manager.clone(),
                self.config.token.clone(),
                self.digest.clone(),
            );
            pending.spawn(async move {
                let result = identity.credentials(&manager, &token, &digest).await;
                drop(permit);
                (identity, result)
            });
            while let Some(done) = pending.try_join_next() {
                self.start_joined(done).await?;
            }
        }
        while let Some(done) = pending.join_next().await {
            self.start_joined(done).await?;
        }
        Ok(())
    }

    async fn start_joined(
        &self,
        done: Result<(NodeIdentity, Result<Loaded, SimError>), tokio::task::JoinError>,
    ) -> Result<(), SimError> {
        let (identity, loaded) = match done {
            Ok(done) => done,
            // Joining panicked: a bug, reported like a refused join.
            Err(e) => return Err(SimError::Invalid(format!("a join failed: {e}"))),
        };
        let loaded = loaded?;
        let node = self.start_node(identity, loaded);
        self.nodes.lock().await.push(node);
        self.counters.started.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(SIM_START_INTERVAL).await;
        Ok(())
    }

    fn start_node(&self, identity: NodeIdentity, loaded: Loaded) -> SimNode {
        let config = AgentConfig {
            advertise_addr: identity.advertise_addr.clone(),
            description: sim_description(&identity.hostname),
            managers: loaded.managers,
            certs_dir: identity.dir.clone(),
        };
        let agent = Agent::start(config, loaded.creds.clone());
        let link = ManagerLink::new(loaded.creds, agent.status());
        let reporter = StatusReporter::start(link.clone());
        let (tx, rx) = mpsc::channel(SIM_ASSIGNMENTS_QUEUE_MAX);
        let assignments = AssignmentsClient::start(link, tx);
        let driver = Driver {
            reporter: reporter.clone(),
            counters: self.counters.clone(),
            tasks: HashMap::new(),
        };
        let span = info_span!("sim", node = %identity.hostname);
        self.drivers.spawn(driver.run(rx).instrument(span));
        SimNode {
            agent,
            assignments,
            reporter,
        }
    }

    /// Stops every node (their managers see them go Down later).
    pub async fn stop(&self) {
        self.cancel.cancel();
        let nodes = std::mem::take(&mut *self.nodes.lock().await);
        let mut stops = tokio::task::JoinSet::new();
        for node in nodes {
            stops.spawn(async move {
                node.assignments.stop().await;
                node.reporter.stop().await;
                node.agent.stop().await;
            });
        }
        while stops.join_next().await.is_some() {}
        self.drivers.close();
        self.drivers.wait().await;
    }
}

/// The description a simulated node sends.
pub fn sim_description(hostname: &str) -> NodeDescription {
    NodeDescription {
        hostname: hostname.to_string(),
        platform: Some(Platform {
            os: std::env::consts::OS.to_string(),
            architecture: std::env::consts::ARCH.to_string(),
        }),
        resources: Some(Resources {
            nano_cpus: SIM_NANO_CPUS,
            memory_bytes: SIM_MEMORY_BYTES,
        }),
        engine_version: env!("CARGO_PKG_VERSION").to_string(),
        drivers: SIM_DRIVERS.iter().map(|d| d.to_string()).collect(),
        unavailable_drivers: Vec::new(),
    }
}

// ---------------------------------------------------------------------------
// Identities.

/// Who one simulated node is, before it has credentials.
struct NodeIdentity {
    hostname: String,
    advertise_addr: String,
    dir: PathBuf,
}

/// A node's credentials and where to find the managers.
struct Loaded {
    creds: CredentialsHandle,
    managers: Vec<String>,
}

impl NodeIdentity {
    fn new(config: &SimConfig, index: usize) -> Self {
        let hostname = format!("{}-{index:04}", config.hostname_prefix);
        // Nothing listens there: the address only has to be well-formed and
        // tell the simulated nodes apart.
        let port = SIM_ADVERTISE_PORT_BASE + index;
        Self {
            advertise_addr: format!("127.0.0.1:{port}"),
            dir: config.state_dir.join(&hostname),
            hostname,
        }
    }

    /// The saved credentials (checked against the token's CA digest), or
    /// new ones from joining.
    async fn credentials(
        &self,
        manager: &str,
        token: &str,
        digest: &str,
    ) -> Result<Loaded, SimError> {
        let creds_err = |source| SimError::Credentials {
            dir: self.dir.clone(),
            source,
        };
        if let Some(saved) = load_blocking(&self.dir).await.map_err(creds_err)? {
            if rswarm_pki::ca_digest(&saved.ca_cert_pem).map_err(creds_err)? != digest {
                return Err(SimError::OtherCluster {
                    dir: self.dir.clone(),
                });
            }
            debug!(node = %self.hostname, "reusing saved credentials");
            let creds = CredentialsHandle::new(saved).map_err(creds_err)?;
            return Ok(Loaded {
                creds,
                managers: vec![manager.to_string()],
            });
        }
        let joined = self.join_with_retries(manager, token).await?;
        save_blocking(&joined.credentials, &self.dir)
            .await
            .map_err(creds_err)?;
        let creds = CredentialsHandle::new(joined.credentials).map_err(creds_err)?;
        let mut managers = joined.managers;
        if managers.is_empty() {
            managers.push(manager.to_string());
        }
        Ok(Loaded { creds, managers })
    }

    /// Joins, retrying while the manager is unreachable or has no leader;
    /// a refusal (bad token) fails at once.
    async fn join_with_retries(
        &self,
        manager: &str,
        token: &str,
    ) -> Result<crate::join::Joined, SimError> {
        let mut backoff = SESSION_BACKOFF_MIN;
        let mut attempt = 1;
        loop {
            let description = sim_description(&self.hostname);
            match join(manager, token, &self.advertise_addr, description).await {
                Ok(joined) => return Ok(joined),
                Err(e) if attempt < SIM_JOIN_ATTEMPTS && is_transient(&e) => {
                    warn!(node = %self.hostname, attempt, "join failed, will retry: {e}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(SESSION_BACKOFF_MAX);
                    attempt += 1;
                }
                Err(source) => {
                    return Err(SimError::Join {
                        hostname: self.hostname.clone(),
                        source,
                    });
                }
            }
        }
    }
}

fn is_transient(e: &JoinError) -> bool {
    match e {
        JoinError::Unreachable { .. } => true,
        JoinError::Refused(message) => message.contains("no leader"),
        _ => false,
    }
}

async fn load_blocking(dir: &Path) -> Result<Option<NodeCredentials>, rswarm_pki::PkiError> {
    let path = dir.to_path_buf();
    tokio::task::spawn_blocking(move || NodeCredentials::load(&path))
        .await
        .unwrap_or_else(|e| Err(background_failed("read", dir, e)))
}

async fn save_blocking(creds: &NodeCredentials, dir: &Path) -> Result<(), rswarm_pki::PkiError> {
    let (creds, path) = (creds.clone(), dir.to_path_buf());
    tokio::task::spawn_blocking(move || creds.save(&path))
        .await
        .unwrap_or_else(|e| Err(background_failed("write", dir, e)))
}

/// A blocking file task that did not finish (the runtime is shutting down).
fn background_failed(
    action: &'static str,
    dir: &Path,
    e: tokio::task::JoinError,
) -> rswarm_pki::PkiError {
    rswarm_pki::PkiError::Io {
        action,
        path: dir.to_path_buf(),
        source: std::io::Error::other(e),
    }
}

// ---------------------------------------------------------------------------
// The simulated driver.

/// The state a simulated node reports next for a task it was told about
/// (`desired`) and has seen at `observed`, if any: it steps straight to
/// the desired state (RUNNING, or READY when held back), or to SHUTDOWN
/// once told to stop, and leaves finished tasks alone.
pub fn next_state(desired: i32, observed: i32) -> Option<TaskState> {
    let complete = TaskState::Complete as i32;
    let target = if observed >= complete {
        return None;
    } else if desired == complete {
        TaskState::Complete
    } else if desired > TaskState::Running as i32 {
        TaskState::Shutdown
    } else if desired >= TaskState::Ready as i32 {
        TaskState::try_from(desired).unwrap_or(TaskState::Running)
    } else {
        TaskState::Accepted
    };
    (target as i32 > observed).then_some(target)
}

fn status_for(state: TaskState) -> TaskStatus {
    let message = match state {
        TaskState::Running => "started (simulated)",
        TaskState::Ready => "ready (simulated)",
        TaskState::Complete => "finished (simulated)",
        TaskState::Shutdown => "shutdown (simulated)",
        _ => "accepted (simulated)",
    };
    TaskStatus {
        state: state as i32,
        message: message.to_string(),
        err: String::new(),
        timestamp_ms: now_ms(),
        exit_code: (state == TaskState::Complete).then_some(0),
        ..TaskStatus::default()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// One node's simulated task driver.
struct Driver {
    reporter: StatusReporter,
    counters: Arc<SimCounters>,
    /// Task ID → furthest state seen or reported.
    tasks: HashMap<String, i32>,
}

impl Driver {
    async fn run(mut self, mut rx: mpsc::Receiver<AssignmentsMessage>) {
        while let Some(message) = rx.recv().await {
            let updates = self.apply(message);
            if !updates.is_empty() {
                self.reporter.report_all(updates).await;
            }
        }
        self.forget_all();
    }

    /// Applies one message; returns the statuses to report.
    fn apply(&mut self, message: AssignmentsMessage) -> Vec<TaskStatusUpdate> {
        let (before_tasks, before_running) = (self.tasks.len(), self.running());
        if message.r#type == AssignmentsType::Complete as i32 {
            let listed: std::collections::HashSet<&str> = message
                .tasks
                .iter()
                .filter_map(|t| t.meta.as_ref().map(|m| m.id.as_str()))
                .collect();
            self.tasks.retain(|id, _| listed.contains(id.as_str()));
        }
        for id in &message.removed_task_ids {
            self.tasks.remove(id);
        }
        let updates = message
            .tasks
            .iter()
            .filter_map(|task| self.step(task))
            .collect();
        self.count(before_tasks, before_running);
        updates
    }

    fn step(&mut self, task: &Task) -> Option<TaskStatusUpdate> {
        let id = task.meta.as_ref().map(|m| m.id.clone())?;
        let stored = task.status.as_ref().map_or(0, |s| s.state);
        let observed = (*self.tasks.get(&id).unwrap_or(&0)).max(stored);
        let next = next_state(task.desired_state, observed);
        let state = next.map_or(observed, |s| s as i32);
        self.tasks.insert(id.clone(), state);
        next.map(|s| TaskStatusUpdate {
            task_id: id,
            status: Some(status_for(s)),
        })
    }

    fn running(&self) -> usize {
        let running = TaskState::Running as i32;
        self.tasks.values().filter(|s| **s == running).count()
    }

    fn count(&self, before_tasks: usize, before_running: usize) {
        adjust(&self.counters.tasks, before_tasks, self.tasks.len());
        adjust(&self.counters.running, before_running, self.running());
    }

    fn forget_all(&mut self) {
        let (tasks, running) = (self.tasks.len(), self.running());
        self.tasks.clear();
        self.count(tasks, running);
        info!("driver stopped");
    }
}

fn adjust(counter: &AtomicUsize, before: usize, after: usize) {
    if after > before {
        counter.fetch_add(after - before, Ordering::Relaxed);
    } else {
        counter.fetch_sub(before - after, Ordering::Relaxed);
    }
}

#[cfg(test)]
#[path = "sim_tests.rs"]
mod tests;
