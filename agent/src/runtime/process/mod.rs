//! The `process` driver: runs a task's command on the host, each under its
//! own shim (`crate::shim`), with its env, working directory, user and
//! cgroup limits.
//!
//! State lives in `<state dir>/tasks/<task id>/`, handled as for every
//! shim-watched driver by `runtime::task_dirs`; this type holds none, so a
//! new `ProcessRuntime` on the same directory — a restarted daemon — finds
//! every task again.

mod exec;
mod resolve;

use std::path::PathBuf;

use async_trait::async_trait;
use rswarm_proto::{HealthConfig, LogsOptions, Task};
use std::time::Duration;

use self::resolve::{HostFiles, ResolvedTask, resolve};
use super::cgroup::Cgroups;
use super::task_dirs::{TaskDirs, check_socket_path, fresh_task_dir, task_dir_error, task_id_of};
use super::{
    Attached, ExecOutcome, ExitStatus, LogLineStream, Runtime, RuntimeError, ShimCommand, Started,
    StopRequest, TaskInputs,
};
use crate::logs::LogRotation;
use crate::shim::records::{self, ShimSpec, write_json};

/// The driver's name in `TaskSpec.driver`.
pub const DRIVER: &str = "process";

/// How a `ProcessRuntime` is set up.
#[derive(Debug, Clone)]
pub struct ProcessRuntimeConfig {
    /// The agent's state directory; tasks go in `tasks/` under it.
    pub state_dir: PathBuf,
    pub shim: ShimCommand,
    pub log_rotation: LogRotation,
    /// The cgroup under which task cgroups are made, in each hierarchy.
    pub cgroup_parent: String,
}

impl ProcessRuntimeConfig {
    /// The defaults: 3 log files of 10 MiB, cgroups under `rswarm`.
    pub fn new(state_dir: PathBuf, shim: ShimCommand) -> Self {
        Self {
            state_dir,
            shim,
            log_rotation: LogRotation::DEFAULT,
            cgroup_parent: "rswarm".to_string(),
        }
    }
}

/// The process driver.
#[derive(Debug)]
pub struct ProcessRuntime {
    tasks: TaskDirs,
    log_rotation: LogRotation,
    cgroups: Cgroups,
}

impl ProcessRuntime {
    /// A runtime keeping its tasks under `config.state_dir`; finds the
    /// host's cgroup hierarchies.
    pub fn new(config: ProcessRuntimeConfig) -> Result<Self, RuntimeError> {
        Ok(Self {
            tasks: TaskDirs::new(config.state_dir.join("tasks"), config.shim, DRIVER)?,
            log_rotation: config.log_rotation,
            cgroups: Cgroups::detect(&config.cgroup_parent),
        })
    }

    /// Where task `task_id` keeps its state and logs.
    pub fn task_dir(&self, task_id: &str) -> PathBuf {
        self.tasks.task_dir(task_id)
    }

    fn shim_spec(&self, task_id: &str, resolved: ResolvedTask) -> Result<ShimSpec, RuntimeError> {
        let cgroups = self.cgroups.create(task_id, &resolved.limits)?;
        Ok(ShimSpec {
            task_id: task_id.to_string(),
            program: resolved.program,
            arg0: resolved.arg0,
            args: resolved.args,
            env: resolved.env,
            dir: resolved.dir,
            credentials: resolved.credentials,
            cgroups,
            log_rotation: self.log_rotation,
            container: None,
        })
    }
}

#[async_trait]
impl Runtime for ProcessRuntime {
    fn driver(&self) -> &'static str {
        DRIVER
    }

    async fn prepare(&self, task: &Task, _inputs: &TaskInputs) -> Result<(), RuntimeError> {
        resolve(task, &self.cgroups, HostFiles::system())?;
        check_socket_path(&self.task_dir(task_id_of(task)))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(task = task_id_of(task)))]
    async fn start(&self, task: &Task, _inputs: &TaskInputs) -> Result<Started, RuntimeError> {
        let resolved = resolve(task, &self.cgroups, HostFiles::system())?;
        let task_id = task_id_of(task);
        if let Some(started) = self.tasks.check_not_started(task_id).await? {
            return Ok(started);
        }
        let dir = self.task_dir(task_id);
        check_socket_path(&dir)?;
        fresh_task_dir(&dir)?;
        let spec = self.shim_spec(task_id, resolved)?;
        write_json(&dir.join(records::SPEC_FILE), &spec).map_err(|e| task_dir_error(&dir, e))?;
        let started = self.tasks.spawn_shim(&dir).await?;
        tracing::debug!(pid = started.pid, "task started");
        Ok(started)
    }

    async fn healthcheck(&self, task: &Task) -> Result<Option<HealthConfig>, RuntimeError> {
        Ok(super::spec_healthcheck(task))
    }

    /// Runs `argv` on the host as the task runs (user, env, working
    /// directory, cgroups), while the task runs.
    async fn exec(
        &self,
        task_id: &str,
        argv: &[String],
        timeout: Duration,
    ) -> Result<ExecOutcome, RuntimeError> {
        let dir = self.tasks.existing_dir(task_id)?;
        let ended = || RuntimeError::AlreadyEnded {
            task_id: task_id.to_string(),
        };
        if self
            .tasks
            .recorded_exit(&dir)
            .map_err(|_| ended())?
            .is_some()
        {
            return Err(ended());
        }
        let spec = exec::read_spec(&dir)?.ok_or_else(|| RuntimeError::UnknownTask {
            task_id: task_id.to_string(),
            driver: DRIVER,
        })?;
        exec::exec_beside(&spec, argv, timeout).await
    }

    async fn attach(&self, task_id: &str) -> Result<Attached, RuntimeError> {
        self.tasks.attach(task_id).await
    }

    async fn wait(&self, task_id: &str) -> Result<ExitStatus, RuntimeError> {
        self.tasks.wait(task_id).await
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn stop(&self, task_id: &str, stop: StopRequest) -> Result<ExitStatus, RuntimeError> {
        self.tasks.stop(task_id, stop).await
    }

    async fn remove(&self, task_id: &str) -> Result<(), RuntimeError> {
        self.tasks.kill_for_removal(task_id).await?;
        self.cgroups.remove(task_id).await?;
        self.tasks.delete_dir(task_id).await
    }

    async fn task_ids(&self) -> Result<Vec<String>, RuntimeError> {
        self.tasks.task_ids()
    }

    async fn logs(
        &self,
        task_id: &str,
        options: LogsOptions,
    ) -> Result<LogLineStream, RuntimeError> {
        self.tasks.logs(task_id, options)
    }
}
