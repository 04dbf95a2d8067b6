//! `rswarm volume ls|inspect|rm` against a real daemon, on volumes that
//! real containers made and use.
//!
//! The containers are run by the test itself with the `oci` driver on the
//! daemon's own state directory (busybox image built from the node's
//! busybox-static, no registry), so the test needs root, runc, overlayfs
//! and busybox-static; it fails with a message naming what is missing.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, ensure};
use rswarm_agent::runtime::oci::detect_runc;
use rswarm_agent::runtime::oci::test_support::BusyboxImage;
use rswarm_agent::runtime::{OciRuntime, OciRuntimeConfig, Runtime, ShimCommand, TaskInputs};
use rswarm_integration::{Cluster, rswarm_bin};
use rswarm_proto::{ContainerSpec, Meta, Mount, MountType, Task, TaskSpec};
use serde_json::Value;

/// The driver on a daemon's state directory, and the containers the test
/// started there, all removed on drop (also when the test fails).
struct Containers {
    runtime: OciRuntime,
    async_runtime: tokio::runtime::Runtime,
    cgroup_parent: String,
    started: Vec<String>,
}

impl Containers {
    fn on(state_dir: &Path, image_dir: &Path) -> Result<Self> {
        ensure!(
            rustix::process::geteuid().is_root(),
            "this test needs root (runc, overlay mounts, cgroups): run it as root"
        );
        let runc =
            detect_runc().map_err(|reason| anyhow::anyhow!("this test needs runc: {reason}"))?;
        let image = BusyboxImage::build(image_dir).context("cannot build the test image")?;
        let shim = ShimCommand::new(rswarm_bin(), vec!["shim".into()]);
        let mut config =
            OciRuntimeConfig::new(state_dir.to_path_buf(), shim, runc, Arc::new(image));
        let cgroup_parent = format!("rswarm-it-volumes-{}", std::process::id());
        config.cgroup_parent = cgroup_parent.clone();
        Ok(Self {
            runtime: OciRuntime::new(config)?,
            async_runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
            cgroup_parent,
            started: Vec::new(),
        })
    }

    /// Starts task `id`, which writes into volume `volume` and exits; the
    /// task keeps the volume in use until it is removed.
    fn start_using(&mut self, id: &str, volume: &str) -> Result<()> {
        let task = Task {
            meta: Some(Meta {
                id: id.into(),
                ..Meta::default()
            }),
            spec: Some(TaskSpec {
                driver: "oci".into(),
                container: Some(ContainerSpec {
                    image: "busybox:test".into(),
                    command: vec!["sh".into(), "-c".into(), "echo kept > /data/file".into()],
                    mounts: vec![Mount {
                        r#type: MountType::Volume as i32,
                        source: volume.into(),
                        target: "/data".into(),
                        volume_labels: [("made-by".to_string(), "test".to_string())].into(),
                        ..Mount::default()
                    }],
                    ..ContainerSpec::default()
                }),
                ..TaskSpec::default()
            }),
            ..Task::default()
        };
        self.started.push(id.to_string());
        let inputs = TaskInputs::default();
        self.async_runtime.block_on(async {
            self.runtime.prepare(&task, &inputs).await?;
            self.runtime.start(&task, &inputs).await?;
            self.runtime.wait(id).await
        })?;
        Ok(())
    }

    fn remove(&self, id: &str) -> Result<()> {
        Ok(self.async_runtime.block_on(self.runtime.remove(id))?)
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        for id in &self.started {
            let _ = self.async_runtime.block_on(self.runtime.remove(id));
        }
        for hierarchy in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = std::fs::remove_dir(hierarchy.path().join(&self.cgroup_parent));
        }
    }
}

/// Goal: a node's volumes are listed, shown and removed as in Docker, and
/// a volume a task uses is kept unless forced, with an error naming the
/// task and the flag.
/// Method: one daemon after `init`; two containers (run on the daemon's
/// state directory by the driver) make and use volumes `data` and
/// `forced`; the CLI lists them, refuses to remove them, removes `forced`
/// with `-f` and `data` once its task is gone.
#[test]
fn volumes_are_listed_and_kept_while_in_use() -> Result<()> {
    let c = Cluster::form(1, 0)?;
    let m1 = c.node("m1");
    let mut containers = Containers::on(&m1.data_dir.join("worker"), &c.dir().join("image"))?;
    let (user, forcer) = ("volume-user-task", "volume-forced-task");
    containers.start_using(user, "data")?;
    containers.start_using(forcer, "forced")?;

    let table = m1.ok(&["volume", "ls"])?;
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    ensure!(
        rows == [
            vec!["DRIVER", "VOLUME", "NAME"],
            vec!["local", "data"],
            vec!["local", "forced"]
        ],
        "{table}"
    );
    ensure!(m1.ok(&["volume", "ls", "-q", "-f", "name=forc"])? == "forced\n");
    let line = m1.ok(&["volume", "ls", "--format", "json", "-f", "name=data"])?;
    let json: Value = serde_json::from_str(line.trim()).context(line.clone())?;
    let mountpoint = m1.data_dir.join("worker/volumes/data/_data");
    ensure!(
        json["Name"] == "data" && json["Driver"] == "local",
        "{json}"
    );
    ensure!(
        json["Mountpoint"] == mountpoint.display().to_string(),
        "{json}"
    );
    ensure!(json["Labels"] == "made-by=test", "{json}");
    ensure!(std::fs::read_to_string(mountpoint.join("file"))? == "kept\n");
    let inspect: Value = serde_json::from_str(&m1.ok(&["volume", "inspect", "data"])?)?;
    ensure!(
        inspect[0]["UsedBy"] == serde_json::json!([user]),
        "{inspect}"
    );

    let (code, err) = m1.fails(&["volume", "rm", "data"])?;
    ensure!(
        code == 1 && err.contains(user) && err.contains("-f"),
        "{code}: {err}"
    );
    let (code, err) = m1.fails(&["volume", "rm", "nosuch"])?;
    ensure!(
        code == 1 && err.contains("no such volume: nosuch"),
        "{code}: {err}"
    );
    let (code, err) = m1.fails(&["volume", "inspect", "nosuch"])?;
    ensure!(
        code == 1 && err.contains("no such volume: nosuch"),
        "{code}: {err}"
    );
    ensure!(m1.ok(&["volume", "rm", "-f", "forced"])? == "forced\n");

    containers.remove(user)?;
    ensure!(m1.ok(&["volume", "ls", "-q", "-f", "dangling=true"])? == "data\n");
    ensure!(m1.ok(&["volume", "rm", "data"])? == "data\n");
    ensure!(m1.ok(&["volume", "ls", "-q"])?.is_empty());
    ensure!(!mountpoint.exists(), "the data went with the volume");
    Ok(())
}
