//! The `oci` driver: runs a task's image as a container with runc, under
//! the same shim as the `process` driver (exit codes, logs, survival across
//! a daemon restart), with Docker's defaults.
//!
//! - `image` — the `ImageSource` trait the node's image store implements.
//! - `bundle` — the runtime spec from the task and its image (pure).
//! - `capabilities`, `seccomp` — the security defaults.
//! - `rootfs` — overlay mount, reading the image's files, the user.
//! - `mounts` — bind, volume and tmpfs mounts, secrets and configs.
//! - `runc` — finding runc, `runc exec`.
//! - `test_support` — a busybox image for tests without a registry.
//!
//! A task directory `<state dir>/containers/<task id>/` is the bundle:
//! `config.json`, `rootfs/` (the overlay mount, with `upper/` and `work/`),
//! `files/` (a tmpfs with its secrets and configs), `etc/`, anonymous
//! volumes in `volumes/`, `image.json` (the image's digest and config, so
//! that a restarted daemon still knows the image's health check), and the
//! shim's files (`shim::records`). runc keeps its state in
//! `<state dir>/runc`, named volumes live in `<state dir>/volumes`.
//!
//! Invariants: the driver holds no state of its own (a new `OciRuntime` on
//! the same directory finds every container again); a task directory's
//! mounts are undone before it is deleted, and a directory whose mounts
//! cannot be undone is not deleted; the image is held from start to
//! remove.

mod bundle;
mod capabilities;
mod error;
mod image;
mod mounts;
mod rootfs;
mod runc;
mod runtime_spec;
mod seccomp;
pub mod test_support;
pub mod volumes;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rswarm_proto::{ContainerSpec, HealthConfig, LogsOptions, Task};
use serde::{Deserialize, Serialize};

pub use self::bundle::INIT_TARGET;
pub use self::capabilities::{ALL_CAPABILITIES, DEFAULT_CAPABILITIES};
pub use self::error::OciError;
pub use self::image::{ImageRootfs, ImageRuntimeConfig, ImageSource, ImageSourceError};
pub use self::runc::detect as detect_runc;

use self::bundle::{BundlePlan, ContainerUser};
use self::mounts::MountSources;
use self::rootfs::OverlayDirs;
use self::runtime_spec::{Mount, RuntimeSpec};
use super::cgroup::{Cgroups, TaskLimits};
use super::limits::{Backoff, IMAGE_BACKOFF};
use super::task_dirs::{
    TaskDirs, check_socket_path, check_task_id, fresh_task_dir, task_dir_error, task_id_of,
};
use super::{
    Attached, ExecOutcome, ExitStatus, LogLineStream, Runtime, RuntimeError, ShimCommand, Started,
    StopRequest, TaskInputs,
};
use crate::logs::LogRotation;
use crate::shim::records::{self, ContainerStart, MemoryCgroup, ShimSpec, read_json, write_json};

/// The driver's name in `TaskSpec.driver`.
pub const DRIVER: &str = "oci";

/// Where Debian's tini package puts the static tini `--init` uses.
pub const INIT_BINARY_DEFAULT: &str = "/usr/bin/tini-static";

/// The image a task runs, as stored in its directory.
const IMAGE_FILE: &str = "image.json";
/// The runtime spec in the bundle.
const CONFIG_FILE: &str = "config.json";
/// The per-task tmpfs with secret and config files.
const FILES_DIR: &str = "files";
/// The task directories, under the state directory.
const CONTAINERS_DIR: &str = "containers";
/// The named volumes, under the state directory.
const VOLUMES_DIR: &str = "volumes";

/// How an `OciRuntime` is set up.
#[derive(Debug, Clone)]
pub struct OciRuntimeConfig {
    /// The agent's state directory: `containers/`, `runc/` and `volumes/`
    /// go under it.
    pub state_dir: PathBuf,
    pub shim: ShimCommand,
    /// The runc binary (see `detect_runc`).
    pub runc: PathBuf,
    pub images: Arc<dyn ImageSource>,
    pub log_rotation: LogRotation,
    /// The cgroup under which container cgroups are made.
    pub cgroup_parent: String,
    /// The static init `--init` mounts at `/sbin/docker-init`.
    pub init_binary: PathBuf,
    /// Retries of transient image failures.
    pub image_backoff: Backoff,
}

impl OciRuntimeConfig {
    /// The defaults: 3 log files of 10 MiB, cgroups under `rswarm`, tini
    /// from Debian's package.
    pub fn new(
        state_dir: PathBuf,
        shim: ShimCommand,
        runc: PathBuf,
        images: Arc<dyn ImageSource>,
    ) -> Self {
        Self {
            state_dir,
            shim,
            runc,
            images,
            log_rotation: LogRotation::DEFAULT,
            cgroup_parent: "rswarm".to_string(),
            init_binary: PathBuf::from(INIT_BINARY_DEFAULT),
            image_backoff: IMAGE_BACKOFF,
        }
    }
}

/// The image of a started task, kept in its directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredImage {
    digest: String,
    config: ImageRuntimeConfig,
    /// The image's stop signal when the spec names none (Docker's rule):
    /// the controller's stop request only knows the spec, and this must
    /// survive a daemon restart. `None` for records of older daemons.
    #[serde(default)]
    stop_signal: Option<String>,
}

/// The `oci` driver.
#[derive(Debug)]
pub struct OciRuntime {
    tasks: TaskDirs,
    runc: PathBuf,
    runc_root: PathBuf,
    volumes_dir: PathBuf,
    images: Arc<dyn ImageSource>,
    log_rotation: LogRotation,
    cgroups: Cgroups,
    init_binary: PathBuf,
    image_backoff: Backoff,
}

impl OciRuntime {
    /// A runtime keeping its containers under `config.state_dir`.
    pub fn new(config: OciRuntimeConfig) -> Result<Self, RuntimeError> {
        let tasks = TaskDirs::new(config.state_dir.join(CONTAINERS_DIR), config.shim, DRIVER)?;
        let runc_root = config.state_dir.join("runc");
        let volumes_dir = config.state_dir.join(VOLUMES_DIR);
        for dir in [&runc_root, &volumes_dir] {
            std::fs::create_dir_all(dir).map_err(|e| task_dir_error(dir, e))?;
        }
        Ok(Self {
            tasks,
            runc: config.runc,
            runc_root,
            volumes_dir,
            images: config.images,
            log_rotation: config.log_rotation,
            cgroups: Cgroups::detect(&config.cgroup_parent),
            init_binary: config.init_binary,
            image_backoff: config.image_backoff,
        })
    }

    /// Where task `task_id` keeps its bundle, state and logs.
    pub fn task_dir(&self, task_id: &str) -> PathBuf {
        self.tasks.task_dir(task_id)
    }

    /// The named volumes of this node (`volumes` module).
    pub fn volumes(&self) -> volumes::Volumes {
        volumes::Volumes::new(
            self.volumes_dir.clone(),
            self.tasks.tasks_dir().to_path_buf(),
        )
    }

    /// The task's image, pulled if needed; failures retried while they are
    /// transient.
    async fn image(&self, task: &Task, inputs: &TaskInputs) -> Result<ImageRootfs, OciError> {
        let reference = &container_of(task)?.image;
        if reference.is_empty() {
            return Err(OciError::NoImage);
        }
        image::ensure_with_retries(
            self.images.as_ref(),
            reference,
            inputs.registry_auth.as_ref(),
            self.image_backoff,
        )
        .await
        .map_err(|e| OciError::Image {
            reference: reference.clone(),
            reason: e.reason,
            transient: e.transient,
        })
    }

    /// The runtime spec of `task` on `image`, with `mounts` (those made at
    /// start; none when only checking the spec in `prepare`).
    fn runtime_spec(
        &self,
        task: &Task,
        image: &ImageRootfs,
        mounts: Vec<Mount>,
    ) -> Result<RuntimeSpec, RuntimeError> {
        let task_id = task_id_of(task);
        let container = container_of(task)?;
        let limits = TaskLimits::of_task(task)?;
        self.cgroups.check(&limits)?;
        let user_spec = first_set(&container.user, &image.config.user);
        let user: ContainerUser = rootfs::resolve_container_user(user_spec, &image.layers)?;
        if container.init && !self.init_binary.is_file() {
            return Err(OciError::InitMissing {
                path: self.init_binary.clone(),
            }
            .into());
        }
        mounts::validate(&container.mounts)?;
        let plan = BundlePlan {
            task_id,
            container,
            image: &image.config,
            user,
            limits,
            rootfs: OverlayDirs::in_task_dir(&self.task_dir(task_id))
                .rootfs
                .to_string_lossy()
                .into_owned(),
            mounts,
            cgroups_path: format!("/{}/{task_id}", self.cgroups.parent()),
            arch: std::env::consts::ARCH,
        };
        Ok(bundle::build(&plan)?)
    }

    /// Makes the container's root, mounts and files in `dir`; returns its
    /// own mounts for the runtime spec.
    fn make_container_dir(
        &self,
        dir: &Path,
        task: &Task,
        image: &ImageRootfs,
        inputs: &TaskInputs,
    ) -> Result<Vec<Mount>, RuntimeError> {
        let container = container_of(task)?;
        let stored = StoredImage {
            digest: image.digest.clone(),
            config: image.config.clone(),
            stop_signal: image_stop_signal(container, &image.config),
        };
        write_json(&dir.join(IMAGE_FILE), &stored).map_err(|e| task_dir_error(dir, e))?;
        let overlay = OverlayDirs::in_task_dir(dir);
        rootfs::mount_overlay(&image.layers, &overlay)?;
        let sources = MountSources {
            volumes_dir: &self.volumes_dir,
            task_dir: dir,
            rootfs: &overlay.rootfs,
        };
        let (mut own, named) = mounts::prepare(sources, &container.mounts, &image.config.volumes)?;
        write_json(&dir.join(mounts::TASK_VOLUMES_FILE), &named)
            .map_err(|e| task_dir_error(dir, e))?;
        let host_network = bundle::host_network(&container.network_mode)?;
        let hostname = bundle::hostname(container, task_id_of(task));
        own.extend(mounts::etc_files(dir, &hostname, host_network)?);
        own.extend(mounts::prepare_task_files(
            &dir.join(FILES_DIR),
            &inputs.secrets,
            &inputs.configs,
        )?);
        if container.init {
            own.push(Mount {
                destination: INIT_TARGET.to_string(),
                kind: "bind".to_string(),
                source: self.init_binary.to_string_lossy().into_owned(),
                options: vec!["bind".into(), "ro".into(), "rprivate".into()],
            });
        }
        mounts::sort_for_mounting(&mut own);
        Ok(own)
    }

    fn shim_spec(&self, task_id: &str, dir: &Path) -> ShimSpec {
        ShimSpec {
            task_id: task_id.to_string(),
            program: self.runc.clone(),
            arg0: String::new(),
            args: Vec::new(),
            env: Vec::new(),
            dir: PathBuf::from("/"),
            credentials: None,
            cgroups: Vec::new(),
            log_rotation: self.log_rotation,
            container: Some(ContainerStart {
                runc: self.runc.clone(),
                root: self.runc_root.clone(),
                bundle: dir.to_path_buf(),
                id: task_id.to_string(),
                memory_cgroup: self
                    .cgroups
                    .memory_dir(task_id)
                    .map(|(dir, v2)| MemoryCgroup { dir, v2 }),
            }),
        }
    }

    /// Writes the bundle into the fresh task directory and starts the shim.
    async fn create_and_start(
        &self,
        task: &Task,
        image: &ImageRootfs,
        inputs: &TaskInputs,
    ) -> Result<Started, RuntimeError> {
        let task_id = task_id_of(task);
        let dir = self.task_dir(task_id);
        let own_mounts = self.make_container_dir(&dir, task, image, inputs)?;
        let spec = self.runtime_spec(task, image, own_mounts)?;
        write_json(&dir.join(CONFIG_FILE), &spec).map_err(|e| task_dir_error(&dir, e))?;
        write_json(
            &dir.join(records::SPEC_FILE),
            &self.shim_spec(task_id, &dir),
        )
        .map_err(|e| task_dir_error(&dir, e))?;
        self.tasks.spawn_shim(&dir).await
    }

    /// Undoes the task directory's mounts; the directory stays.
    fn unmount_task_dir(&self, dir: &Path) -> Result<(), RuntimeError> {
        rootfs::unmount_if_mounted(&dir.join(FILES_DIR))?;
        rootfs::unmount_if_mounted(&OverlayDirs::in_task_dir(dir).rootfs)?;
        Ok(())
    }

    /// `runc delete --force`, for a container whose shim could not do it
    /// (it died); nothing to delete is fine.
    async fn delete_container(&self, task_id: &str) {
        let deleted = tokio::process::Command::new(&self.runc)
            .arg("--root")
            .arg(&self.runc_root)
            .arg("delete")
            .arg("--force")
            .arg(task_id)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .await;
        if let Err(e) = deleted {
            tracing::warn!(task = task_id, "cannot run runc delete: {e}");
        }
    }

    /// `stop` with the image's stop signal when the spec named none; as
    /// asked when the task has no such record, and always for SIGKILL
    /// (removal), so that stopping is always possible.
    fn with_image_stop_signal(&self, task_id: &str, stop: StopRequest) -> StopRequest {
        if stop.signal == StopRequest::KILL.signal {
            return stop;
        }
        let stored = self
            .tasks
            .existing_dir(task_id)
            .and_then(|dir| self.stored_image(&dir));
        let Ok(Some(StoredImage {
            stop_signal: Some(name),
            ..
        })) = stored
        else {
            return stop;
        };
        match super::signal::parse_signal(&name) {
            Some(signal) => StopRequest { signal, ..stop },
            None => {
                tracing::warn!(
                    task = task_id,
                    "the image's stop signal {name:?} is not a signal: using {}",
                    stop.signal
                );
                stop
            }
        }
    }

    /// The stored image of a started task.
    fn stored_image(&self, dir: &Path) -> Result<Option<StoredImage>, RuntimeError> {
        read_json(&dir.join(IMAGE_FILE)).map_err(|e| task_dir_error(dir, e))
    }
}

/// The named volumes of the `oci` driver whose state directory is
/// `state_dir`, without starting the driver: the daemon's `rswarm volume`
/// API lists and removes them whatever the state of the image store.
pub fn volumes_in(state_dir: &Path) -> volumes::Volumes {
    volumes::Volumes::new(state_dir.join(VOLUMES_DIR), state_dir.join(CONTAINERS_DIR))
}

fn container_of(task: &Task) -> Result<&ContainerSpec, OciError> {
    task.spec
        .as_ref()
        .and_then(|s| s.container.as_ref())
        .ok_or(OciError::NoImage)
}

/// The image's stop signal, when the spec names none.
fn image_stop_signal(container: &ContainerSpec, image: &ImageRuntimeConfig) -> Option<String> {
    let spec_names_one = !container.stop_signal.trim().is_empty();
    let image_has_one = !image.stop_signal.trim().is_empty();
    (!spec_names_one && image_has_one).then(|| image.stop_signal.trim().to_string())
}

fn first_set<'a>(first: &'a str, second: &'a str) -> &'a str {
    if first.is_empty() { second } else { first }
}

#[async_trait]
impl Runtime for OciRuntime {
    fn driver(&self) -> &'static str {
        DRIVER
    }

    async fn prepare(&self, task: &Task, inputs: &TaskInputs) -> Result<(), RuntimeError> {
        let task_id = task_id_of(task);
        check_task_id(task_id)?;
        check_socket_path(&self.task_dir(task_id))?;
        let image = self.image(task, inputs).await?;
        self.runtime_spec(task, &image, Vec::new())?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(task = task_id_of(task)))]
    async fn start(&self, task: &Task, inputs: &TaskInputs) -> Result<Started, RuntimeError> {
        let task_id = task_id_of(task);
        check_task_id(task_id)?;
        if let Some(started) = self.tasks.check_not_started(task_id).await? {
            return Ok(started);
        }
        let image = self.image(task, inputs).await?;
        self.runtime_spec(task, &image, Vec::new())?;
        let dir = self.task_dir(task_id);
        check_socket_path(&dir)?;
        // A directory left by an earlier attempt may still hold mounts.
        if dir.is_dir() {
            self.unmount_task_dir(&dir)?;
        }
        fresh_task_dir(&dir)?;
        self.images
            .hold(task_id, &image.digest)
            .map_err(|e| OciError::Image {
                reference: image.digest.clone(),
                reason: e.reason,
                transient: e.transient,
            })?;
        let started = self.create_and_start(task, &image, inputs).await;
        if started.is_err() {
            // Leave no secret on a tmpfs and no overlay behind a failed
            // start; the directory (with the shim's log) stays until remove.
            let _ = self.unmount_task_dir(&dir);
        }
        let started = started?;
        tracing::debug!(
            pid = started.pid,
            digest = image.digest,
            "container started"
        );
        Ok(started)
    }

    async fn healthcheck(&self, task: &Task) -> Result<Option<HealthConfig>, RuntimeError> {
        if let Some(choice) = super::spec_health_choice(task) {
            return Ok(choice);
        }
        let dir = self.tasks.existing_dir(task_id_of(task))?;
        let image_health = self
            .stored_image(&dir)?
            .and_then(|stored| stored.config.healthcheck)
            .filter(|h| !matches!(h.test.first().map(String::as_str), None | Some("NONE")));
        Ok(image_health)
    }

    async fn exec(
        &self,
        task_id: &str,
        argv: &[String],
        timeout: Duration,
    ) -> Result<ExecOutcome, RuntimeError> {
        let dir = self.tasks.existing_dir(task_id)?;
        Ok(runc::exec(&self.runc, &self.runc_root, &dir, task_id, argv, timeout).await?)
    }

    async fn attach(&self, task_id: &str) -> Result<Attached, RuntimeError> {
        self.tasks.attach(task_id).await
    }

    async fn image_digest(&self, task_id: &str) -> Result<Option<String>, RuntimeError> {
        let dir = self.tasks.existing_dir(task_id)?;
        Ok(self.stored_image(&dir)?.map(|stored| stored.digest))
    }

    async fn wait(&self, task_id: &str) -> Result<ExitStatus, RuntimeError> {
        self.tasks.wait(task_id).await
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn stop(&self, task_id: &str, stop: StopRequest) -> Result<ExitStatus, RuntimeError> {
        let stop = self.with_image_stop_signal(task_id, stop);
        self.tasks.stop(task_id, stop).await
    }

    async fn remove(&self, task_id: &str) -> Result<(), RuntimeError> {
        self.tasks.kill_for_removal(task_id).await?;
        let dir = self.task_dir(task_id);
        if dir.is_dir() {
            self.delete_container(task_id).await;
            self.unmount_task_dir(&dir)?;
        }
        self.cgroups.remove(task_id).await?;
        self.tasks.delete_dir(task_id).await?;
        if let Err(e) = self.images.release(task_id) {
            tracing::warn!(task = task_id, "cannot release the image: {e}");
        }
        Ok(())
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
