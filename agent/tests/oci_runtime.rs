//! The oci driver with real containers: runc runs a busybox image (built
//! from the node's busybox-static, no registry) under real shims. Checks
//! what a user relies on: own PID and mount namespaces, hostname, exit
//! codes, stop with grace, logs, OOM kills, limits, a read-only root,
//! bind/volume/tmpfs mounts, secrets, `--init`, exec, and re-attaching
//! after a daemon restart.
//!
//! These tests need root, runc (Debian's runc), overlayfs and busybox-static;
//! each fails with a message naming what is missing.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rswarm_agent::runtime::oci::test_support::{BUSYBOX_DIGEST, BusyboxImage};
use rswarm_agent::runtime::oci::{ImageRuntimeConfig, ImageSourceError, detect_runc};
use rswarm_agent::runtime::{
    Attached, ExitStatus, FileInput, OciRuntime, OciRuntimeConfig, Runtime, ShimCommand,
    StopRequest, TaskInputs,
};
use rswarm_proto::{
    ContainerSpec, FileTarget, HealthConfig, LogsOptions, Meta, Mount, MountType,
    ResourceRequirements, Resources, Task, TaskSpec, Ulimit,
};

struct Fixture {
    state: tempfile::TempDir,
    image: Arc<BusyboxImage>,
    runtime: OciRuntime,
    cgroup_parent: String,
    tasks: std::sync::Mutex<Vec<String>>,
}

fn config(state: &Path, image: Arc<BusyboxImage>, cgroup_parent: &str) -> OciRuntimeConfig {
    let runc = detect_runc().unwrap_or_else(|reason| panic!("these tests need runc: {reason}"));
    let shim = ShimCommand::new(env!("CARGO_BIN_EXE_rswarm-test-shim"), Vec::new());
    let mut config = OciRuntimeConfig::new(state.to_path_buf(), shim, runc, image);
    config.cgroup_parent = cgroup_parent.to_string();
    config
}

impl Fixture {
    fn new(name: &str) -> Self {
        assert!(
            rustix::process::geteuid().is_root(),
            "the oci driver tests need root (runc, overlay mounts, cgroups); run them as root"
        );
        let state = tempfile::tempdir().unwrap();
        let image = Arc::new(
            BusyboxImage::build(&state.path().join("image"))
                .unwrap_or_else(|e| panic!("cannot build the test image: {e}")),
        );
        let cgroup_parent = format!("rswarm-oci-test-{}-{name}", std::process::id());
        let runtime = OciRuntime::new(config(state.path(), image.clone(), &cgroup_parent)).unwrap();
        Self {
            state,
            image,
            runtime,
            cgroup_parent,
            tasks: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn restarted(&self) -> OciRuntime {
        OciRuntime::new(config(
            self.state.path(),
            self.image.clone(),
            &self.cgroup_parent,
        ))
        .unwrap()
    }

    async fn start(&self, task: &Task, inputs: &TaskInputs) -> u32 {
        self.tasks.lock().unwrap().push(id_of(task).to_string());
        self.runtime.prepare(task, inputs).await.unwrap();
        self.runtime.start(task, inputs).await.unwrap().pid
    }

    /// Runs `script` with `sh -c` to its end; returns its exit and output.
    async fn run(&self, task: Task) -> (ExitStatus, String) {
        self.start(&task, &TaskInputs::default()).await;
        let exit = tokio::time::timeout(Duration::from_secs(30), self.runtime.wait(id_of(&task)))
            .await
            .expect("the container ends within 30 s")
            .unwrap();
        let output = self.output(id_of(&task)).await;
        (exit, output)
    }

    /// Stops the task with SIGTERM and `grace` before SIGKILL.
    async fn terminate(&self, task_id: &str, grace: Duration) -> ExitStatus {
        self.runtime
            .stop(task_id, StopRequest { signal: 15, grace })
            .await
            .unwrap()
    }

    async fn output(&self, task_id: &str) -> String {
        let lines: Vec<_> = self
            .runtime
            .logs(
                task_id,
                LogsOptions {
                    follow: false,
                    tail: -1,
                    since_ms: 0,
                },
            )
            .await
            .unwrap()
            .collect()
            .await;
        lines
            .into_iter()
            .map(|l| String::from_utf8_lossy(&l.unwrap().data).into_owned() + "\n")
            .collect()
    }
}

/// Removes every container of the test (kills, unmounts, deletes) even
/// when it failed half-way.
impl Drop for Fixture {
    fn drop(&mut self) {
        let tasks = self.tasks.lock().unwrap().clone();
        // A thread of its own: the test's runtime may still be on this one.
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                for task in tasks {
                    let _ = rt.block_on(self.runtime.remove(&task));
                }
            });
        });
        // runc removes each container's cgroup, not the test's parent.
        for hierarchy in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = std::fs::remove_dir(hierarchy.path().join(&self.cgroup_parent));
        }
    }
}

fn id_of(task: &Task) -> &str {
    &task.meta.as_ref().unwrap().id
}

fn task(id: &str, container: ContainerSpec) -> Task {
    Task {
        meta: Some(Meta {
            id: id.into(),
            ..Meta::default()
        }),
        spec: Some(TaskSpec {
            container: Some(ContainerSpec {
                image: "busybox:test".into(),
                ..container
            }),
            driver: "oci".into(),
            ..TaskSpec::default()
        }),
        ..Task::default()
    }
}

fn shell(script: &str) -> ContainerSpec {
    ContainerSpec {
        command: vec!["sh".into(), "-c".into(), script.into()],
        ..ContainerSpec::default()
    }
}

fn unique(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

#[tokio::test]
async fn a_container_has_its_own_pid_and_mount_namespace_and_exit_code() {
    let fx = Fixture::new("ns");
    let id = unique("nsaaaaaaaaaaaaaaa");
    let (exit, output) = fx
        .run(task(
            &id,
            shell("echo pid=$$; hostname; cat /proc/self/mountinfo | wc -l; test -e /etc/debian_version || echo no-host-files; exit 3"),
        ))
        .await;
    assert_eq!(exit, ExitStatus::Code(3), "{output}");
    assert_eq!(exit.to_string(), "task: non-zero exit (3)");
    assert!(output.contains("pid=1\n"), "PID 1 inside: {output}");
    assert!(
        output.contains(&format!("{}\n", &id[..12])),
        "hostname is the short task id: {output}"
    );
    assert!(
        output.contains("no-host-files"),
        "the root is the image's: {output}"
    );
    assert_eq!(
        fx.image.holds().get(&id).map(String::as_str),
        Some(BUSYBOX_DIGEST)
    );
    assert_eq!(
        fx.runtime.image_digest(&id).await.unwrap().as_deref(),
        Some(BUSYBOX_DIGEST),
        "the status names the image digest"
    );
    fx.runtime.remove(&id).await.unwrap();
    assert!(fx.image.holds().is_empty(), "remove releases the image");
    assert!(!fx.runtime.task_dir(&id).exists());
}

#[tokio::test]
async fn stop_sends_the_signal_then_kills_after_the_grace() {
    let fx = Fixture::new("stop");
    let id = unique("stop");
    let pid = fx
        .start(
            &task(
                &id,
                shell("trap 'echo got-term; exit 7' TERM; while true; do sleep 0.1; done"),
            ),
            &TaskInputs::default(),
        )
        .await;
    assert!(pid > 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let exit = fx.terminate(&id, Duration::from_secs(5)).await;
    assert_eq!(exit, ExitStatus::Code(7));
    assert!(fx.output(&id).await.contains("got-term"));

    // PID 1 ignores SIGTERM without a handler: SIGKILL after the grace.
    let id = unique("stopkill");
    fx.start(&task(&id, shell("sleep 100")), &TaskInputs::default())
        .await;
    let exit = fx.terminate(&id, Duration::from_millis(300)).await;
    assert_eq!(exit, ExitStatus::Signal(9));
}

/// Goal: as in Docker, the image's `StopSignal` stops the task when the
/// spec names none, also after a daemon restart, and the spec's wins.
/// Method: an image with `StopSignal` SIGUSR1 and a shell that exits 10 on
/// USR1 and 15 on TERM; stop with the spec's request (SIGTERM by default).
#[tokio::test]
async fn the_images_stop_signal_applies_when_the_spec_names_none() {
    let fx = Fixture::new("stopsig");
    fx.image.set_config(ImageRuntimeConfig {
        cmd: vec!["sh".into()],
        stop_signal: "SIGUSR1".into(),
        ..ImageRuntimeConfig::default()
    });
    let script = "trap 'exit 10' USR1; trap 'exit 15' TERM; while true; do sleep 0.1; done";
    let from_spec = |spec: &ContainerSpec| StopRequest::for_spec(Some(spec)).unwrap();

    let id = unique("stopsigimage");
    let unset = shell(script);
    fx.start(&task(&id, unset.clone()), &TaskInputs::default())
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let exit = fx.restarted().stop(&id, from_spec(&unset)).await.unwrap();
    assert_eq!(
        exit,
        ExitStatus::Code(10),
        "the image's SIGUSR1, after a restart"
    );

    let id = unique("stopsigspec");
    let set = ContainerSpec {
        stop_signal: "SIGTERM".into(),
        ..shell(script)
    };
    fx.start(&task(&id, set.clone()), &TaskInputs::default())
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let exit = fx.runtime.stop(&id, from_spec(&set)).await.unwrap();
    assert_eq!(exit, ExitStatus::Code(15), "the spec's SIGTERM wins");
}

#[tokio::test]
async fn a_memory_hog_is_oom_killed_and_reported() {
    let fx = Fixture::new("oom");
    let id = unique("oom");
    let mut hog = task(
        &id,
        shell(
            "echo start; x=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa; while true; do x=$x$x; done",
        ),
    );
    hog.spec.as_mut().unwrap().resources = Some(ResourceRequirements {
        limits: Some(Resources {
            nano_cpus: 0,
            memory_bytes: 32 << 20,
        }),
        reservations: None,
        pids_limit: 0,
    });
    let (exit, output) = fx.run(hog).await;
    assert_eq!(exit, ExitStatus::OomKilled, "{output}");
    assert!(exit.to_string().contains("OOM killed"), "{exit}");
}

#[tokio::test]
async fn limits_read_only_root_and_ulimits_are_applied() {
    let fx = Fixture::new("limits");
    let id = unique("limits");
    let mut spec = shell(
        "cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max; \
         ulimit -n; touch /x 2>&1 || echo read-only; touch /tmp/y 2>&1 || echo tmp-read-only",
    );
    spec.read_only = true;
    spec.ulimits = vec![Ulimit {
        name: "nofile".into(),
        soft: 512,
        hard: 1024,
    }];
    let mut limited = task(&id, spec);
    limited.spec.as_mut().unwrap().resources = Some(ResourceRequirements {
        limits: None,
        reservations: None,
        pids_limit: 20,
    });
    let (exit, output) = fx.run(limited).await;
    assert!(exit.success(), "{exit}: {output}");
    assert!(output.contains("20\n"), "pids limit visible: {output}");
    assert!(output.contains("512\n"), "nofile soft limit: {output}");
    assert!(output.contains("read-only"), "read-only root: {output}");
    assert!(
        output.contains("tmp-read-only"),
        "the whole root is read-only: {output}"
    );
}

#[tokio::test]
async fn bind_volume_and_tmpfs_mounts_work_and_volumes_keep_data() {
    let fx = Fixture::new("mounts");
    let host_dir = fx.state.path().join("host-data");
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::write(host_dir.join("hello"), "from the host").unwrap();
    let volume = unique("vol");
    let mounts = |id: &str| {
        vec![
            Mount {
                r#type: MountType::Bind as i32,
                source: host_dir.to_string_lossy().into_owned(),
                target: "/host".into(),
                read_only: true,
                ..Mount::default()
            },
            Mount {
                r#type: MountType::Volume as i32,
                source: volume.clone(),
                target: "/data".into(),
                ..Mount::default()
            },
            Mount {
                r#type: MountType::Tmpfs as i32,
                target: format!("/scratch-{id}"),
                tmpfs_size_bytes: 1 << 20,
                ..Mount::default()
            },
        ]
    };
    let first = unique("mountsa");
    let mut spec = shell(
        "cat /host/hello; echo; touch /host/x 2>/dev/null || echo bind-ro; \
         echo kept > /data/file; grep -c tmpfs /proc/mounts >/dev/null && mount | grep scratch",
    );
    spec.mounts = mounts(&first);
    let (exit, output) = fx.run(task(&first, spec)).await;
    assert!(exit.success(), "{exit}: {output}");
    assert!(output.contains("from the host"), "{output}");
    assert!(output.contains("bind-ro"), "{output}");
    assert!(output.contains("tmpfs"), "{output}");
    let volumes = fx.runtime.volumes().list().unwrap();
    assert_eq!(volumes[0].used_by, std::slice::from_ref(&first));
    fx.runtime.remove(&first).await.unwrap();

    let second = unique("mountsb");
    let mut spec = shell("cat /data/file");
    spec.mounts = mounts(&second);
    let (exit, output) = fx.run(task(&second, spec)).await;
    assert!(exit.success(), "{exit}: {output}");
    assert_eq!(output, "kept\n", "the named volume outlives its first task");
}

#[tokio::test]
async fn secrets_are_visible_with_their_mode_and_never_on_disk() {
    let fx = Fixture::new("secrets");
    let id = unique("secrets");
    let inputs = TaskInputs {
        secrets: vec![FileInput {
            name: "db-password".into(),
            target: FileTarget {
                name: "db-password".into(),
                uid: "1000".into(),
                gid: "1000".into(),
                mode: 0o400,
            },
            data: Arc::from(&b"s3cr3t-value"[..]),
        }],
        configs: vec![FileInput {
            name: "app.conf".into(),
            target: FileTarget {
                name: "/etc/app.conf".into(),
                ..FileTarget::default()
            },
            data: Arc::from(&b"level=debug"[..]),
        }],
        registry_auth: None,
    };
    fx.start(
        &task(
            &id,
            shell("stat -c '%a %u' /run/secrets/db-password; cat /etc/app.conf; echo; sleep 30"),
        ),
        &inputs,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let output = fx.output(&id).await;
    assert!(output.contains("400 1000"), "{output}");
    assert!(output.contains("level=debug"), "{output}");
    // Nothing under the task directory but the tmpfs holds the secret.
    let dir = fx.runtime.task_dir(&id);
    let found = std::process::Command::new("grep")
        .args([
            "-rl",
            "--exclude-dir=files",
            "--exclude-dir=rootfs",
            "s3cr3t-value",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        found.stdout.is_empty(),
        "secret on disk: {:?}",
        String::from_utf8_lossy(&found.stdout)
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let files = dir.join("files");
    assert!(
        mounts
            .lines()
            .any(|l| l.contains(&*files.to_string_lossy()) && l.contains("tmpfs")),
        "the secrets live on a tmpfs"
    );
    fx.runtime.remove(&id).await.unwrap();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&*dir.to_string_lossy()),
        "remove unmounts everything"
    );
}

#[tokio::test]
async fn init_is_pid_one_and_exec_runs_inside_and_times_out() {
    let fx = Fixture::new("init");
    let id = unique("init");
    let mut spec = shell("sleep 60");
    spec.init = true;
    fx.start(&task(&id, spec), &TaskInputs::default()).await;
    let argv = |s: &str| vec!["sh".to_string(), "-c".to_string(), s.to_string()];
    let outcome = fx
        .runtime
        .exec(
            &id,
            &argv("cat /proc/1/cmdline | tr '\\0' ' '; echo; id -u; exit 4"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(outcome.exit, ExitStatus::Code(4), "{}", outcome.output);
    assert!(
        outcome
            .output
            .starts_with("/sbin/docker-init -- sh -c sleep 60"),
        "{}",
        outcome.output
    );
    let outcome = fx
        .runtime
        .exec(&id, &argv("sleep 30"), Duration::from_millis(500))
        .await
        .unwrap();
    assert_eq!(outcome.exit, ExitStatus::Signal(9));
    let exit = fx.terminate(&id, Duration::from_secs(5)).await;
    assert_eq!(
        exit,
        ExitStatus::Code(143),
        "tini forwards SIGTERM to sh, which dies of it"
    );
}

#[tokio::test]
async fn a_restarted_daemon_reattaches_and_gets_the_exit_code() {
    let fx = Fixture::new("restart");
    let id = unique("restart");
    fx.image.set_config(ImageRuntimeConfig {
        cmd: vec!["sh".into()],
        healthcheck: Some(HealthConfig {
            test: vec!["CMD".into(), "true".into()],
            ..HealthConfig::default()
        }),
        ..ImageRuntimeConfig::default()
    });
    let running = task(&id, shell("sleep 1; exit 5"));
    let pid = fx.start(&running, &TaskInputs::default()).await;
    let restarted = fx.restarted();
    assert_eq!(
        restarted.attach(&id).await.unwrap(),
        Attached::Running { pid }
    );
    assert_eq!(
        restarted.task_ids().await.unwrap(),
        std::slice::from_ref(&id)
    );
    let health = restarted.healthcheck(&running).await.unwrap();
    assert_eq!(
        health.unwrap().test,
        ["CMD", "true"],
        "the image's check survives"
    );
    assert_eq!(restarted.wait(&id).await.unwrap(), ExitStatus::Code(5));
}

#[tokio::test]
async fn impossible_specs_and_missing_images_are_rejected_with_the_reason() {
    let fx = Fixture::new("reject");
    let cases: Vec<(ContainerSpec, &str)> = vec![
        (
            ContainerSpec {
                network_mode: "frontend".into(),
                ..shell("true")
            },
            "use host or none",
        ),
        (
            ContainerSpec {
                cap_add: vec!["FLY".into()],
                ..shell("true")
            },
            "not a Linux capability",
        ),
        (
            ContainerSpec {
                user: "ghost".into(),
                ..shell("true")
            },
            "ghost",
        ),
        (
            ContainerSpec {
                sysctls: [("vm.swappiness".to_string(), "1".to_string())].into(),
                ..shell("true")
            },
            "not namespaced",
        ),
    ];
    for (index, (spec, expected)) in cases.into_iter().enumerate() {
        let t = task(&format!("reject{index}"), spec);
        let err = fx
            .runtime
            .prepare(&t, &TaskInputs::default())
            .await
            .unwrap_err();
        assert!(
            err.rejects_task() && err.to_string().contains(expected),
            "{err}"
        );
    }
    fx.image.fail_with(Some(ImageSourceError {
        reason: "manifest unknown: busybox:nope".into(),
        transient: false,
    }));
    let err = fx
        .runtime
        .prepare(&task("rejectimage", shell("true")), &TaskInputs::default())
        .await
        .unwrap_err();
    assert!(err.rejects_task(), "{err}");
    assert!(err.to_string().contains("manifest unknown"), "{err}");
}
