//! The node's part of a start, without manager or dispatcher: the `oci`
//! driver's `prepare` + `start` in this process, as the agent's controller
//! calls them, on the busybox test image (already on disk: a local image),
//! under real shims (`rswarm shim`). Times each call and their sum per
//! task; the containers run `sleep` until all are started, then are
//! removed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use rswarm_agent::runtime::oci::detect_runc;
use rswarm_agent::runtime::oci::test_support::BusyboxImage;
use rswarm_agent::runtime::{OciRuntime, OciRuntimeConfig, Runtime, ShimCommand, TaskInputs};
use rswarm_integration::rswarm_bin;
use rswarm_proto::{ContainerSpec, Meta, Task, TaskSpec};

use crate::stats::summary;

pub fn run(n: usize) -> Result<()> {
    let state = tempfile::tempdir()?;
    let image = Arc::new(BusyboxImage::build(&state.path().join("image"))?);
    let runc = detect_runc().map_err(|reason| anyhow!("runc is needed: {reason}"))?;
    let shim = ShimCommand::new(rswarm_bin(), vec!["shim".into()]);
    let mut config = OciRuntimeConfig::new(state.path().to_path_buf(), shim, runc, image);
    let cgroup_parent = format!("rswarm-bench-direct-{}", std::process::id());
    config.cgroup_parent = cgroup_parent.clone();
    let runtime = OciRuntime::new(config)?;
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let tasks: Vec<Task> = (0..n)
        .map(|i| sleep_task(&format!("bench-direct-{}-{i}", std::process::id())))
        .collect();
    let measured = tokio.block_on(start_all(&runtime, &tasks));
    let removal = tokio.block_on(remove_all(&runtime, &tasks));
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let _ = std::fs::remove_dir(hierarchy.path().join(&cgroup_parent));
    }
    let (mut prepare, mut start, mut both) = measured?;
    removal?;
    summary("OciRuntime::prepare", &mut prepare);
    summary(
        "OciRuntime::start (overlay, bundle, shim, runc create + start)",
        &mut start,
    );
    summary("OciRuntime::prepare + start", &mut both);
    Ok(())
}

type Samples = (Vec<Duration>, Vec<Duration>, Vec<Duration>);

async fn start_all(runtime: &OciRuntime, tasks: &[Task]) -> Result<Samples> {
    let (mut prepare, mut start, mut both) = (vec![], vec![], vec![]);
    let inputs = TaskInputs::default();
    for task in tasks {
        let t0 = Instant::now();
        runtime.prepare(task, &inputs).await?;
        let t1 = Instant::now();
        runtime.start(task, &inputs).await?;
        let t2 = Instant::now();
        prepare.push(t1 - t0);
        start.push(t2 - t1);
        both.push(t2 - t0);
    }
    Ok((prepare, start, both))
}

/// Removes every task (killed, unmounted, deleted), also those never
/// started; the first failure is returned after trying all.
async fn remove_all(runtime: &OciRuntime, tasks: &[Task]) -> Result<()> {
    let mut first_error = None;
    for task in tasks {
        let id = task
            .meta
            .as_ref()
            .map(|m| m.id.as_str())
            .unwrap_or_default();
        if let Err(e) = runtime.remove(id).await {
            first_error.get_or_insert(anyhow!("cannot remove {id}: {e}"));
        }
    }
    first_error.map_or(Ok(()), Err).context("cleaning up")
}

fn sleep_task(id: &str) -> Task {
    Task {
        meta: Some(Meta {
            id: id.into(),
            ..Meta::default()
        }),
        spec: Some(TaskSpec {
            container: Some(ContainerSpec {
                image: "busybox:bench".into(),
                command: vec!["sleep".into(), "86400".into()],
                ..ContainerSpec::default()
            }),
            driver: "oci".into(),
            ..TaskSpec::default()
        }),
        ..Task::default()
    }
}
