//! The node's session with the leader: heartbeats at the period the cluster
//! asks for, follows redirects to the leader, fails over between managers
//! with bounded backoff, renews the node certificate at 50–80 % of its life
//! and as soon as the cluster wants the node in another role.
//!
//! The session publishes what it learns as an [`AgentStatus`]; the daemon
//! reacts to role changes (starting or stopping its manager) and removal.
//! Losing every manager stops nothing on the node.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use rswarm_pki::{CredentialsHandle, MANAGER_SERVER_NAME, NodeCredentials, Role, tls_channel};
use rswarm_proto::ca_client::CaClient;
use rswarm_proto::dispatcher_client::DispatcherClient;
use rswarm_proto::{
    HeartbeatRequest, HeartbeatResponse, NodeDescription, NodeRole, RenewNodeCertificateRequest,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::limits::{
    CALL_TIMEOUT, MANAGERS_MAX, REDIRECTS_MAX, SESSION_BACKOFF_MAX, SESSION_BACKOFF_MIN,
};

/// Metadata key a follower puts the leader's address under.
const LEADER_KEY: &str = "rswarm-leader";

/// What the agent needs to run.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// host:port this node advertises.
    pub advertise_addr: String,
    /// What the node tells the managers about itself.
    pub description: NodeDescription,
    /// Managers to try first.
    pub managers: Vec<String>,
    /// Where renewed credentials are saved.
    pub certs_dir: PathBuf,
}

/// What the session knows, published to the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentStatus {
    /// The role of the node's current certificate.
    pub role: Role,
    /// Raft ID the node uses as a manager (0: none yet).
    pub raft_id: u64,
    /// Managers' addresses, leader first.
    pub managers: Vec<String>,
    /// Whether the last heartbeat succeeded.
    pub connected: bool,
    /// Set when the cluster refused this node's certificate for good.
    pub removed: Option<String>,
}

/// A running session.
pub struct Agent {
    status: watch::Receiver<AgentStatus>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl Agent {
    /// Starts the session.
    pub fn start(config: AgentConfig, creds: CredentialsHandle) -> Agent {
        let subject = creds.subject();
        let (tx, rx) = watch::channel(AgentStatus {
            role: subject.role,
            raft_id: 0,
            managers: config.managers.clone(),
            connected: false,
            removed: None,
        });
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let session = Session {
            config,
            creds,
            status: tx,
            channels: HashMap::new(),
            period: Duration::from_secs(1),
            renew_at: tokio::time::Instant::now(),
        };
        let span = info_span!("session", node = %subject.node_id);
        tasks.spawn(session.run(cancel.clone()).instrument(span));
        tasks.close();
        Agent {
            status: rx,
            cancel,
            tasks,
        }
    }

    /// Follows the session's status.
    pub fn status(&self) -> watch::Receiver<AgentStatus> {
        self.status.clone()
    }

    /// Stops the session.
    pub async fn stop(&self) {
        self.cancel.cancel();
        self.tasks.wait().await;
    }
}

struct Session {
    config: AgentConfig,
    creds: CredentialsHandle,
    status: watch::Sender<AgentStatus>,
    channels: HashMap<String, Channel>,
    period: Duration,
    renew_at: tokio::time::Instant,
}

enum Beat {
    Ok(HeartbeatResponse),
    Redirect(String),
    Removed(String),
    Failed(String),
}

impl Session {
    async fn run(mut self, cancel: CancellationToken) {
        let mut backoff = SESSION_BACKOFF_MIN;
        let mut redirects = 0;
        self.renew_at = self.next_renewal();
        loop {
            let wait = match self.beat_once().await {
                Beat::Ok(resp) => {
                    backoff = SESSION_BACKOFF_MIN;
                    redirects = 0;
                    self.apply(resp).await;
                    self.period
                }
                Beat::Redirect(leader) => {
                    redirects += 1;
                    self.put_first(leader);
                    if redirects <= REDIRECTS_MAX {
                        Duration::ZERO
                    } else {
                        self.backoff(&mut backoff)
                    }
                }
                Beat::Removed(reason) => {
                    warn!("this node was removed from the cluster: {reason}");
                    self.status.send_modify(|s| {
                        s.removed = Some(reason);
                        s.connected = false
                    });
                    return;
                }
                Beat::Failed(reason) => {
                    debug!("heartbeat failed: {reason}");
                    self.status.send_modify(|s| s.connected = false);
                    self.rotate_managers();
                    self.backoff(&mut backoff)
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    fn backoff(&self, backoff: &mut Duration) -> Duration {
        let wait = *backoff;
        *backoff = (*backoff * 2).min(SESSION_BACKOFF_MAX);
        wait
    }

    fn managers(&self) -> Vec<String> {
        self.status.borrow().managers.clone()
    }

    fn put_first(&mut self, leader: String) {
        self.status.send_modify(|s| {
            s.managers.retain(|m| m != &leader);
            s.managers.insert(0, leader);
            s.managers.truncate(MANAGERS_MAX);
        });
    }

    fn rotate_managers(&mut self) {
        self.status.send_modify(|s| {
            if !s.managers.is_empty() {
                s.managers.rotate_left(1);
            }
        });
    }

    fn channel(&mut self, addr: &str) -> Result<Channel, String> {
        if let Some(c) = self.channels.get(addr) {
            return Ok(c.clone());
        }
        let tls = rswarm_pki::client_config(&self.creds).map_err(|e| e.to_string())?;
        let channel = tls_channel(addr, tls, MANAGER_SERVER_NAME).map_err(|e| e.to_string())?;
        self.channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    async fn beat_once(&mut self) -> Beat {
        let Some(addr) = self.managers().first().cloned() else {
            return Beat::Failed("no manager address known".into());
        };
        let channel = match self.channel(&addr) {
            Ok(c) => c,
            Err(e) => return Beat::Failed(e),
        };
        let req = HeartbeatRequest {
            description: Some(self.config.description.clone()),
            advertise_addr: self.config.advertise_addr.clone(),
        };
        let mut client = DispatcherClient::new(channel);
        let call = client.heartbeat(req);
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Err(_) => Beat::Failed(format!("{addr} did not answer within {CALL_TIMEOUT:?}")),
            Ok(Ok(resp)) => Beat::Ok(resp.into_inner()),
            Ok(Err(status)) => classify(&addr, status),
        }
    }

    /// Applies a heartbeat answer, renewing the certificate when the role
    /// must change or the renewal time has come.
    async fn apply(&mut self, resp: HeartbeatResponse) {
        self.period = Duration::from_millis(resp.period_ms.max(100));
        let mut managers = resp.managers.clone();
        managers.truncate(MANAGERS_MAX);
        let was_connected = self.status.borrow().connected;
        self.status.send_modify(|s| {
            if !managers.is_empty() {
                s.managers = managers;
            }
            s.connected = true;
            if resp.raft_id != 0 {
                s.raft_id = resp.raft_id;
            }
        });
        if !was_connected {
            info!("connected to the cluster");
        }
        let desired = if resp.desired_role == NodeRole::Manager as i32 {
            Role::Manager
        } else {
            Role::Worker
        };
        let due = tokio::time::Instant::now() >= self.renew_at;
        if desired != self.creds.subject().role || due {
            match self.renew().await {
                Ok(()) => self.renew_at = self.next_renewal(),
                Err(e) => warn!("certificate renewal failed, will retry: {e}"),
            }
        }
    }

    /// When to renew the current certificate: at a random 50–80 % of its life.
    fn next_renewal(&self) -> tokio::time::Instant {
        let delay = rswarm_pki::parse_certificate(&self.creds.current().cert_pem)
            .map(|info| rswarm_pki::renewal_delay(&info, SystemTime::now()))
            .unwrap_or(Duration::from_secs(3600));
        tokio::time::Instant::now() + delay
    }

    async fn renew(&mut self) -> Result<(), String> {
        let addr = self
            .managers()
            .first()
            .cloned()
            .ok_or("no manager address known")?;
        let channel = self.channel(&addr)?;
        let (key_pem, csr_pem) = rswarm_pki::generate_key_and_csr().map_err(|e| e.to_string())?;
        let mut client = CaClient::new(channel);
        let call = client.renew_node_certificate(RenewNodeCertificateRequest { csr_pem });
        let resp = tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .map_err(|_| format!("{addr} did not answer in time"))?
            .map_err(|s| s.message().to_string())?
            .into_inner();
        let current = self.creds.current();
        let creds = NodeCredentials {
            ca_cert_pem: current.ca_cert_pem,
            cert_pem: resp.cert_pem,
            key_pem,
        };
        creds
            .save(&self.config.certs_dir)
            .map_err(|e| e.to_string())?;
        self.creds.replace(creds).map_err(|e| e.to_string())?;
        // New connections must present the new certificate.
        self.channels.clear();
        let role = self.creds.subject().role;
        info!(role = role.as_str(), "node certificate renewed");
        self.status.send_modify(|s| s.role = role);
        Ok(())
    }
}

fn classify(addr: &str, status: Status) -> Beat {
    match status.code() {
        Code::Unavailable => match status
            .metadata()
            .get(LEADER_KEY)
            .and_then(|v| v.to_str().ok())
        {
            Some(leader) if leader != addr => Beat::Redirect(leader.to_string()),
            _ => Beat::Failed(format!("{addr}: {}", status.message())),
        },
        Code::PermissionDenied => Beat::Removed(status.message().to_string()),
        _ => Beat::Failed(format!("{addr}: {}", status.message())),
    }
}
