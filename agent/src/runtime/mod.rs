//! Task runtimes: the `Runtime` trait every driver implements, the drivers
//! a node has (`Drivers`), and the first driver, `process`.
//!
//! A runtime knows tasks by id only and keeps its truth outside the daemon
//! (the process driver in task directories and shims), so that a restarted
//! daemon finds its tasks again with `attach`. It decides nothing about
//! task states: the controller (`crate::controller`) does, from what the
//! runtime reports and from the error class (`RuntimeError::rejects_task`).
//!
//! - `process` — `ProcessRuntime`: a command on the host, watched by a shim.
//! - `oci` — `OciRuntime`: an image run as a container by runc, watched by
//!   the same shim.
//! - `task_dirs` — what both do alike: task directories, starting shims and
//!   talking to them.
//! - `cgroup` — limits through cgroup v1 or v2.
//! - `user`, `signal` — resolving `ContainerSpec.user` and stop signals.
//! - `limits` — every limit and timeout of task execution.

pub mod cgroup;
pub mod limits;
pub mod oci;
pub mod process;
pub mod signal;
mod task_dirs;
pub mod user;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rswarm_proto::{ContainerSpec, LogsOptions, Task};

pub use crate::logs::LogLineStream;
pub use oci::{OciRuntime, OciRuntimeConfig};
pub use process::{ProcessRuntime, ProcessRuntimeConfig};
pub use task_dirs::ShimCommand;

/// The driver a task runs with when its spec names none (the image runtime,
/// as in Docker).
pub const DEFAULT_DRIVER: &str = "oci";

/// A started task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Started {
    /// The task's main process.
    pub pid: u32,
}

/// What `attach` found of a task after a daemon restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attached {
    /// Still running, watched by its shim.
    Running { pid: u32 },
    /// It ended (maybe while the daemon was away).
    Exited(ExitStatus),
    /// The runtime never started it (or it was removed).
    Unknown,
}

/// How a task's main process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// This signal killed it.
    Signal(i32),
    /// The kernel's OOM killer killed it (or a process of it): the task
    /// used more memory than its limit.
    OomKilled,
}

impl ExitStatus {
    /// Whether it exited with 0.
    pub fn success(self) -> bool {
        self == ExitStatus::Code(0)
    }

    /// The exit code as a shell reports it: 128 + the signal for a kill.
    pub fn exit_code(self) -> i32 {
        match self {
            ExitStatus::Code(code) => code,
            ExitStatus::Signal(signal) => 128 + signal,
            ExitStatus::OomKilled => 128 + 9,
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(0) => write!(f, "task: exited (0)"),
            ExitStatus::Code(code) => write!(f, "task: non-zero exit ({code})"),
            ExitStatus::Signal(signal) => write!(
                f,
                "task: non-zero exit ({}): killed by signal {signal}",
                self.exit_code()
            ),
            ExitStatus::OomKilled => write!(
                f,
                "task: non-zero exit ({}): OOM killed; raise its memory limit",
                self.exit_code()
            ),
        }
    }
}

/// How to stop a task: this signal first, SIGKILL after the grace period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopRequest {
    pub signal: i32,
    pub grace: Duration,
}

impl StopRequest {
    /// SIGKILL at once (removing a task).
    pub const KILL: StopRequest = StopRequest {
        signal: 9,
        grace: Duration::ZERO,
    };

    /// The stop the task's spec asks for: `stop_signal` (default SIGTERM)
    /// and `stop_grace_period_ms` (default 10 s).
    pub fn for_spec(container: Option<&ContainerSpec>) -> Result<Self, RuntimeError> {
        let stop_signal = container.map_or("", |c| c.stop_signal.as_str());
        let signal = if stop_signal.trim().is_empty() {
            rustix::process::Signal::TERM.as_raw()
        } else {
            signal::parse_signal(stop_signal).ok_or_else(|| RuntimeError::BadStopSignal {
                signal: stop_signal.to_string(),
            })?
        };
        let grace = container
            .and_then(|c| c.stop_grace_period_ms)
            .map_or(limits::STOP_GRACE_DEFAULT, Duration::from_millis);
        if grace > limits::STOP_GRACE_MAX {
            return Err(RuntimeError::StopGraceTooLong { grace });
        }
        Ok(Self { signal, grace })
    }

    /// The stop of `task`, falling back to the defaults for a spec that
    /// was refused earlier (stopping must always be possible).
    pub fn for_task(task: &Task) -> Self {
        let container = task.spec.as_ref().and_then(|s| s.container.as_ref());
        Self::for_spec(container).unwrap_or(Self {
            signal: rustix::process::Signal::TERM.as_raw(),
            grace: limits::STOP_GRACE_DEFAULT,
        })
    }
}

/// Why a runtime call failed. `rejects_task` tells a task that can never
/// run as specified (REJECTED) from a failure while running it (FAILED).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    #[error(
        "task driver {driver:?} is not available on this node (it has: {available}); use one of those or run the task elsewhere"
    )]
    UnknownDriver { driver: String, available: String },
    #[error(
        "task id {id:?} cannot name a task directory; ids are 1 to 64 letters, digits, '-', '_' or '.'"
    )]
    BadTaskId { id: String },
    #[error("the task has no container spec; give the command to run")]
    NoContainerSpec,
    #[error("the process driver needs a command: give the program and its arguments")]
    NoCommand,
    #[error(
        "the process driver runs commands on the host, not images (got image {image:?}); drop the image or use the oci driver"
    )]
    ImageGiven { image: String },
    #[error(
        "command {command:?} is not found in PATH ({path}); give an absolute path or install it on the node"
    )]
    CommandNotFound { command: String, path: String },
    #[error("{path} is not an executable file; check the command")]
    NotExecutable { path: PathBuf },
    #[error("working directory {dir:?} {reason}; give an existing absolute directory")]
    BadWorkdir { dir: String, reason: &'static str },
    #[error("environment entry {entry:?} is not KEY=VALUE")]
    BadEnv { entry: String },
    #[error(transparent)]
    User(#[from] user::UserError),
    #[error("stop signal {signal:?} is not a signal name or number (e.g. SIGTERM, TERM, 15)")]
    BadStopSignal { signal: String },
    #[error("stop grace period {grace:?} is longer than the limit of {max:?}; give a shorter one", max = limits::STOP_GRACE_MAX)]
    StopGraceTooLong { grace: Duration },
    #[error("resource limit {limit} = {value} is negative; give 0 (no limit) or more")]
    NegativeLimit { limit: &'static str, value: i64 },
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
    #[error("the task directory {path} is too long for a unix socket ({len} > {max} bytes); use a shorter --data-dir", max = limits::UNIX_SOCKET_PATH_BYTES_MAX)]
    PathTooLong { path: PathBuf, len: usize },
    #[error("cannot prepare the task directory {path}: {source}")]
    TaskDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot run the shim {program}: {source}")]
    ShimSpawn {
        program: PathBuf,
        source: std::io::Error,
    },
    #[error("the task could not be started: {message}")]
    StartFailed { message: String },
    #[error("the task's shim did not answer within {timeout:?}; see {log}")]
    ShimTimeout { timeout: Duration, log: PathBuf },
    #[error(
        "the task's shim is gone and left no exit record; the task was killed if still there, its exit status is unknown"
    )]
    ShimGone,
    #[error("cannot talk to the task's shim: {source}")]
    ShimIo { source: std::io::Error },
    #[error("the task's shim refused: {message}")]
    ShimRefused { message: String },
    #[error("task {task_id} is not known to the {driver} driver on this node")]
    UnknownTask {
        task_id: String,
        driver: &'static str,
    },
    #[error("task {task_id} was started already and has ended; a task runs once")]
    AlreadyEnded { task_id: String },
    #[error(
        "the task did not end within {waited:?} of being stopped (a process stuck in the kernel?)"
    )]
    StopTimeout { waited: Duration },
    #[error("cannot read the task's log: {source}")]
    Logs { source: std::io::Error },
    #[error("the {driver} driver cannot run commands inside its tasks")]
    ExecUnsupported { driver: &'static str },
    #[error("cannot run {program} inside the task: {source}")]
    ExecSpawn {
        program: PathBuf,
        source: std::io::Error,
    },
    #[error("the command did not finish within {timeout:?} and was killed")]
    ExecTimeout { timeout: Duration },
    #[error(transparent)]
    Oci(#[from] oci::OciError),
}

impl RuntimeError {
    /// Whether the task can never run as specified on this node (the
    /// controller reports REJECTED), rather than having failed while it
    /// was being run (FAILED).
    pub fn rejects_task(&self) -> bool {
        matches!(
            self,
            RuntimeError::UnknownDriver { .. }
                | RuntimeError::BadTaskId { .. }
                | RuntimeError::NoContainerSpec
                | RuntimeError::NoCommand
                | RuntimeError::ImageGiven { .. }
                | RuntimeError::CommandNotFound { .. }
                | RuntimeError::NotExecutable { .. }
                | RuntimeError::BadWorkdir { .. }
                | RuntimeError::BadEnv { .. }
                | RuntimeError::User(_)
                | RuntimeError::BadStopSignal { .. }
                | RuntimeError::StopGraceTooLong { .. }
                | RuntimeError::NegativeLimit { .. }
                | RuntimeError::Cgroup(cgroup::CgroupError::MissingController { .. })
                | RuntimeError::PathTooLong { .. }
        ) || matches!(self, RuntimeError::Oci(e) if e.rejects_task())
    }
}

/// What a task needs besides its spec, delivered by the managers with its
/// assignment: secret and config files and registry credentials. Held in
/// memory only; `Debug` never shows the data.
#[derive(Clone, Default)]
pub struct TaskInputs {
    pub secrets: Vec<FileInput>,
    pub configs: Vec<FileInput>,
    pub registry_auth: Option<rswarm_proto::RegistryAuth>,
}

impl fmt::Debug for TaskInputs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskInputs")
            .field("secrets", &self.secrets)
            .field("configs", &self.configs)
            .field(
                "registry_auth",
                &self.registry_auth.as_ref().map(|a| &a.server),
            )
            .finish()
    }
}

/// One secret or config file of a task.
#[derive(Clone)]
pub struct FileInput {
    /// The secret's or config's name, for messages.
    pub name: String,
    /// Where the file appears, as the reference's `FileTarget` says.
    pub target: rswarm_proto::FileTarget,
    pub data: Arc<[u8]>,
}

impl fmt::Debug for FileInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileInput")
            .field("name", &self.name)
            .field("target", &self.target)
            .field("bytes", &self.data.len())
            .finish()
    }
}

/// How a command run inside a task (a health check) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    pub exit: ExitStatus,
    /// Its stdout and stderr, cut at `limits::EXEC_OUTPUT_BYTES_MAX`.
    pub output: String,
}

/// A task driver. Object safe: the agent holds `Arc<dyn Runtime>`.
///
/// Every call is idempotent enough to be retried after a daemon restart:
/// `start` of a running task answers with its pid, `stop` of an ended task
/// with its exit, `remove` of an unknown task does nothing.
#[async_trait]
pub trait Runtime: Send + Sync + fmt::Debug {
    /// The name tasks ask for in `TaskSpec.driver`.
    fn driver(&self) -> &'static str;

    /// Checks that `task` can run here (command, user, directory, limits);
    /// an error means REJECTED (the oci driver also pulls the image here).
    async fn prepare(&self, task: &Task, inputs: &TaskInputs) -> Result<(), RuntimeError>;

    /// Starts `task`; returns once its main process runs.
    async fn start(&self, task: &Task, inputs: &TaskInputs) -> Result<Started, RuntimeError>;

    /// The health check `task` runs under: its spec's, else its image's;
    /// `None` for no check.
    async fn healthcheck(
        &self,
        task: &Task,
    ) -> Result<Option<rswarm_proto::HealthConfig>, RuntimeError>;

    /// Runs `argv` inside the running task (its namespaces, user, env),
    /// killed after `timeout`.
    async fn exec(
        &self,
        task_id: &str,
        argv: &[String],
        timeout: Duration,
    ) -> Result<ExecOutcome, RuntimeError>;

    /// Finds a task started before (by this or an earlier daemon).
    async fn attach(&self, task_id: &str) -> Result<Attached, RuntimeError>;

    /// The digest of the image a started task runs (`sha256:…`), for its
    /// RUNNING status; `None` for a driver without images.
    async fn image_digest(&self, _task_id: &str) -> Result<Option<String>, RuntimeError> {
        Ok(None)
    }

    /// Waits until the task has ended. Cancel safe: dropping the future
    /// leaves the task alone.
    async fn wait(&self, task_id: &str) -> Result<ExitStatus, RuntimeError>;

    /// Sends the stop signal, SIGKILL after the grace period, and waits
    /// for the end (bounded by the grace period and `KILL_WAIT_MAX`).
    async fn stop(&self, task_id: &str, stop: StopRequest) -> Result<ExitStatus, RuntimeError>;

    /// Kills the task if it still runs and deletes all it left (state,
    /// cgroups, logs).
    async fn remove(&self, task_id: &str) -> Result<(), RuntimeError>;

    /// The tasks this runtime has anything of on the node (running, ended
    /// or not yet removed), sorted: lets a restarted agent remove what is
    /// no longer assigned to it.
    async fn task_ids(&self) -> Result<Vec<String>, RuntimeError>;

    /// The task's log lines, as `options` ask (tail, since, follow).
    async fn logs(
        &self,
        task_id: &str,
        options: LogsOptions,
    ) -> Result<LogLineStream, RuntimeError>;
}

/// What a task's spec says about health checks: `None` inherits the
/// image's, `Some(None)` disables them (`["NONE"]`), `Some(Some(check))` is
/// the spec's own.
pub fn spec_health_choice(task: &Task) -> Option<Option<rswarm_proto::HealthConfig>> {
    let health = task
        .spec
        .as_ref()?
        .container
        .as_ref()?
        .healthcheck
        .as_ref()?;
    match health.test.first().map(String::as_str) {
        None => None,
        Some("NONE") => Some(None),
        Some(_) => Some(Some(health.clone())),
    }
}

/// The health check a task's spec asks for: `None` when it names none
/// (inherit) or disables it with `["NONE"]`.
pub fn spec_healthcheck(task: &Task) -> Option<rswarm_proto::HealthConfig> {
    spec_health_choice(task).flatten()
}

/// The drivers of this node, by name.
#[derive(Debug, Clone, Default)]
pub struct Drivers {
    by_name: BTreeMap<&'static str, Arc<dyn Runtime>>,
    /// Drivers this node cannot offer, and why (for `node inspect`).
    unavailable: Vec<rswarm_proto::UnavailableDriver>,
}

impl Drivers {
    /// A node with these runtimes.
    pub fn new(runtimes: impl IntoIterator<Item = Arc<dyn Runtime>>) -> Self {
        Self {
            by_name: runtimes.into_iter().map(|r| (r.driver(), r)).collect(),
            unavailable: Vec::new(),
        }
    }

    /// Records that `driver` is not offered here, and why.
    pub fn unavailable(mut self, driver: &str, reason: impl Into<String>) -> Self {
        self.unavailable.push(rswarm_proto::UnavailableDriver {
            driver: driver.to_string(),
            reason: reason.into(),
        });
        self
    }

    /// The drivers this node lacks, with the reasons.
    pub fn unavailable_drivers(&self) -> &[rswarm_proto::UnavailableDriver] {
        &self.unavailable
    }

    /// The driver names, for the node description.
    pub fn names(&self) -> Vec<&'static str> {
        self.by_name.keys().copied().collect()
    }

    /// The runtime `task` asks for (`DEFAULT_DRIVER` when it names none);
    /// a driver this node lacks rejects the task.
    pub fn for_task(&self, task: &Task) -> Result<Arc<dyn Runtime>, RuntimeError> {
        let asked = task.spec.as_ref().map_or("", |s| s.driver.as_str());
        let driver = if asked.is_empty() {
            DEFAULT_DRIVER
        } else {
            asked
        };
        self.by_name
            .get(driver)
            .cloned()
            .ok_or_else(|| RuntimeError::UnknownDriver {
                driver: driver.to_string(),
                available: self.names().join(", "),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_read_like_a_shell() {
        assert!(ExitStatus::Code(0).success());
        assert_eq!(ExitStatus::Code(3).to_string(), "task: non-zero exit (3)");
        assert_eq!(
            ExitStatus::Signal(9).to_string(),
            "task: non-zero exit (137): killed by signal 9"
        );
        assert!(ExitStatus::OomKilled.to_string().contains("OOM killed"));
        assert_eq!(ExitStatus::OomKilled.exit_code(), 137);
        assert_eq!(ExitStatus::Signal(9).exit_code(), 137);
        assert!(!ExitStatus::Signal(15).success());
    }

    #[test]
    fn stop_defaults_to_sigterm_and_ten_seconds() {
        assert_eq!(
            StopRequest::for_spec(None).unwrap(),
            StopRequest {
                signal: 15,
                grace: Duration::from_secs(10)
            }
        );
        let spec = ContainerSpec {
            stop_signal: "SIGINT".into(),
            stop_grace_period_ms: Some(250),
            ..ContainerSpec::default()
        };
        assert_eq!(
            StopRequest::for_spec(Some(&spec)).unwrap(),
            StopRequest {
                signal: 2,
                grace: Duration::from_millis(250)
            }
        );
    }

    #[test]
    fn bad_stop_settings_reject_the_task() {
        let spec = ContainerSpec {
            stop_signal: "SIGNOPE".into(),
            ..ContainerSpec::default()
        };
        let err = StopRequest::for_spec(Some(&spec)).unwrap_err();
        assert!(err.rejects_task(), "{err}");
        let spec = ContainerSpec {
            stop_grace_period_ms: Some(u64::MAX),
            ..ContainerSpec::default()
        };
        assert!(
            StopRequest::for_spec(Some(&spec))
                .unwrap_err()
                .rejects_task()
        );
    }

    #[test]
    fn runtime_failures_fail_rather_than_reject() {
        assert!(!RuntimeError::ShimGone.rejects_task());
        assert!(
            !RuntimeError::StartFailed {
                message: "x".into()
            }
            .rejects_task()
        );
    }
}
