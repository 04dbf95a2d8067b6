//! Containers end to end: services of the default `oci` driver on real
//! daemons, each node on a host of its own, running a busybox image (built
//! from the machine's busybox-static) that comes from a registry on a host
//! of its own or from `rswarm image load`.
//!
//! What users rely on, and these tests check through the CLI: each task is
//! an isolated container (own PID and mount namespaces, its memory limit
//! enforced and an OOM kill reported), every node runs the digest the
//! manager pinned even after the tag moves, a missing image or a corrupted
//! archive is refused with the reason, and health checks, secrets, configs,
//! mounts and a daemon restart behave as in Docker.
//!
//! Needs root, runc, overlayfs and busybox-static, as `deploy/test.sh`
//! installs; without them a test fails naming what is missing.
//!
//! Every service's command prints `key=value` lines that the tests read back
//! with `service logs`.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, ensure};
use rswarm_integration::images::{
    Registry, RegistryConfig, TestImage, busybox, push_from_host, write_docker_save,
    write_oci_layout,
};
use rswarm_integration::{
    Cluster, Node, REGISTRY_HOST, RUNC_ROOT, rswarm_bin, runc_bin, wait_until,
};
use serde_json::Value;

/// Long enough for an image pull, a container start and a few health
/// probes on a busy, shared machine.
const CONVERGE: Duration = Duration::from_secs(90);

/// How long a restarted daemon is given before its task is checked: a few
/// health probe periods, to notice a lost container or a lost verdict.
const RESTART_SETTLE: Duration = Duration::from_secs(3);

/// A marker no daemon writes unless it leaks the secret.
const SECRET_MARKER: &str = "container-secret-5d81e0c2";

/// Ends a container's script: waits for a stop. The shell is PID 1 in its
/// namespace, where SIGTERM without a handler is ignored, so it traps it.
const IDLE: &str = "trap 'exit 0' TERM; sleep 3600 & wait";

/// Pushes `image` as `reference` to the cluster's registry, from the
/// registry's host (the root namespace does not reach the hosts).
fn push(c: &Cluster, registry: &Registry, image: &TestImage, reference: &str) -> Result<()> {
    let host = c.hosts()?.host(REGISTRY_HOST)?;
    let insecure = RegistryConfig {
        insecure: vec![registry.host()],
    };
    push_from_host(host, image, reference, &insecure)?;
    Ok(())
}

/// `service ps --format json` lines of `service`.
fn ps_json(node: &Node, service: &str) -> Result<Vec<Value>> {
    node.ok(&["service", "ps", "--no-trunc", "--format", "json", service])?
        .lines()
        .map(|line| serde_json::from_str(line).with_context(|| format!("not JSON: {line}")))
        .collect()
}

/// The rows of `service ps` that should run and do (healthy or not).
fn running_rows(node: &Node, service: &str) -> Result<Vec<Value>> {
    Ok(ps_json(node, service)?
        .into_iter()
        .filter(|r| {
            r["DesiredState"] == "Running"
                && r["CurrentState"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("Running"))
        })
        .collect())
}

/// Waits until `service` has `n` running tasks, all `healthy` when asked;
/// returns their `service ps` rows.
fn wait_running(c: &Cluster, service: &str, n: usize, healthy: bool) -> Result<Vec<Value>> {
    let mut rows = Vec::new();
    wait_until(CONVERGE, || {
        rows = running_rows(c.node("m1"), service)?;
        Ok(rows.len() == n && (!healthy || rows.iter().all(|r| r["Health"] == "healthy")))
    })
    .with_context(|| {
        format!(
            "{service} did not reach {n} running{} tasks: {:?}\n{}",
            if healthy { " healthy" } else { "" },
            c.node("m1").ok(&["service", "ps", "--no-trunc", service]),
            c.report()
        )
    })?;
    Ok(rows)
}

/// The values of `key=` lines in `service logs SERVICE`, one per line that
/// has it, paired with the node the line came from (`name.slot.id@node`).
fn logged(node: &Node, service: &str, key: &str) -> Result<Vec<(String, String)>> {
    let out = node.ok(&["service", "logs", service])?;
    let wanted = format!("{key}=");
    Ok(out
        .lines()
        .filter_map(|line| {
            let (prefix, text) = line.split_once('|')?;
            let value = text.trim().strip_prefix(&wanted)?;
            let from = prefix.trim().rsplit_once('@')?.1;
            Some((from.to_string(), value.to_string()))
        })
        .collect())
}

/// Waits until `service logs` has `n` lines with `key=`; returns their values.
fn wait_logged(node: &Node, service: &str, key: &str, n: usize) -> Result<Vec<(String, String)>> {
    let mut found = Vec::new();
    wait_until(CONVERGE, || {
        found = logged(node, service, key)?;
        Ok(found.len() >= n)
    })
    .with_context(|| {
        format!(
            "{service}'s logs have no {n} '{key}=' lines: {:?}",
            node.ok(&["service", "logs", service])
        )
    })?;
    Ok(found)
}

/// `Spec.TaskTemplate.ContainerSpec.Image` of `service inspect`.
fn inspected_image(node: &Node, service: &str) -> Result<String> {
    let doc: Value = serde_json::from_str(&node.ok(&["service", "inspect", service])?)?;
    doc[0]["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("no image in the inspect document: {doc}"))
}

/// `rswarm ARGS` on `node` with `input` on stdin; fails with stderr.
fn with_stdin(node: &Node, args: &[&str], input: &[u8]) -> Result<String> {
    let mut child = Command::new(rswarm_bin())
        .args(args)
        .env("RSWARM_HOST", node.host())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child.stdin.take().context("stdin")?.write_all(input)?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "'rswarm {}' failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The host PID of task `id` of `service`, through the control API (the
/// CLI's tables carry no PIDs).
fn task_pid(node: &Node, service: &str, id: &str) -> Result<u32> {
    node.tasks(service)?
        .iter()
        .find(|t| t.meta.as_ref().is_some_and(|m| m.id == id))
        .and_then(|t| t.status.as_ref().map(|s| s.pid))
        .filter(|pid| *pid > 0)
        .with_context(|| format!("no pid for task {id}"))
}

/// Whether process `pid` exists.
fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Goal: each replica of a service is a real container: its process is PID
/// 1 of its own PID namespace, its root is the image's, its memory limit is
/// the one asked for; a process that allocates past its limit is OOM-killed
/// and reported so; and every node runs the digest the manager pinned.
/// Method: 1 manager + 2 workers on hosts, a registry on a fourth host; a
/// 3-replica service, at most one per node, whose command prints what it
/// sees (read back with `service logs`); a memory hog service; `service ps`
/// JSON and `service inspect` for the digests.
#[test]
fn replicas_on_three_hosts_are_isolated_containers() -> Result<()> {
    let (c, registry) = Cluster::form_on_hosts_with_registry(1, 2)?;
    let m1 = c.node("m1");
    let image = busybox("one")?;
    let reference = format!("{}/busybox:latest", registry.host());
    push(&c, &registry, &image, &reference)?;

    let script = format!(
        "echo pid=$$; \
         echo processes=$(ls /proc | grep -c '^[0-9]'); \
         test -e /etc/os-release && echo os-release=present || echo os-release=absent; \
         test -x /bin/busybox && echo busybox=present; \
         echo variant=$(cat /etc/variant); \
         echo memory=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null \
             || cat /sys/fs/cgroup/memory.max); \
         {IDLE}"
    );
    m1.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "web",
        "--replicas",
        "3",
        "--replicas-max-per-node",
        "1",
        "--limit-memory",
        "32m",
        &reference,
        "sh",
        "-c",
        &script,
    ])?;
    let pinned = format!("{reference}@{}", image.manifest_digest);
    let inspected = inspected_image(m1, "web")?;
    ensure!(
        inspected == pinned,
        "service inspect shows {inspected}, not the pinned {pinned}"
    );

    let rows = wait_running(&c, "web", 3, false)?;
    let nodes: BTreeSet<&str> = rows.iter().filter_map(|r| r["Node"].as_str()).collect();
    ensure!(nodes.len() == 3, "one task per node: {rows:?}");
    for row in &rows {
        ensure!(
            row["ImageDigest"] == image.manifest_digest.as_str(),
            "a task runs another digest than the pinned {}: {row}",
            image.manifest_digest
        );
    }

    let every_task = |key: &str, expected: &str| -> Result<()> {
        let values = wait_logged(m1, "web", key, 3)?;
        let from: BTreeSet<&str> = values.iter().map(|(node, _)| node.as_str()).collect();
        ensure!(
            from.len() == 3 && values.iter().all(|(_, v)| v == expected),
            "every task should log {key}={expected}: {values:?}"
        );
        Ok(())
    };
    every_task("pid", "1")?;
    every_task("os-release", "absent")?;
    every_task("busybox", "present")?;
    every_task("variant", "one")?;
    every_task("memory", &(32u64 << 20).to_string())?;
    for (node, count) in logged(m1, "web", "processes")? {
        let count: u32 = count.parse().context("process count")?;
        ensure!(
            count < 10,
            "the task on {node} sees {count} processes: not its own PID namespace"
        );
    }

    m1.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "hog",
        "--limit-memory",
        "16m",
        "--restart-condition",
        "none",
        &reference,
        "sh",
        "-c",
        "head -c 64m /dev/zero | tail",
    ])?;
    let mut table = String::new();
    wait_until(CONVERGE, || {
        table = m1.ok(&["service", "ps", "--no-trunc", "hog"])?;
        Ok(table.contains("OOM killed"))
    })
    .with_context(|| format!("the memory hog was not reported OOM killed:\n{table}"))?;
    let row = table
        .lines()
        .find(|l| l.contains("OOM killed"))
        .unwrap_or_default();
    ensure!(row.contains("Failed"), "an OOM kill fails the task: {row}");

    m1.ok(&["service", "rm", "web", "hog"])?;
    Ok(())
}

/// Goal: the manager pins a tag to the digest the registry has when a
/// service is created, so a tag moved between two creates gives each
/// service its own image on every node; an image the registry does not
/// have is REJECTED with the registry's reason; an archive with a corrupted
/// blob is refused naming the blob, and adds nothing.
/// Method: 1 manager + 1 worker on hosts, a registry on a third host; push
/// variant one, create `first` (2 replicas, one per node), push variant two
/// under the same tag, create `second`; compare `service ps` digests and
/// what the containers print; create a service of a missing repository;
/// `image load` archives whose layer bytes were altered.
#[test]
fn a_moved_tag_and_a_bad_image_are_handled() -> Result<()> {
    let (c, registry) = Cluster::form_on_hosts_with_registry(1, 1)?;
    let m1 = c.node("m1");
    let reference = format!("{}/bb:moving", registry.host());
    let (one, two) = (busybox("one")?, busybox("two")?);
    let script = format!("echo variant=$(cat /etc/variant); {IDLE}");
    let create = |name: &str| {
        m1.ok(&[
            "service",
            "create",
            "-d",
            "--name",
            name,
            "--replicas",
            "2",
            "--replicas-max-per-node",
            "1",
            &reference,
            "sh",
            "-c",
            &script,
        ])
    };
    push(&c, &registry, &one, &reference)?;
    create("first")?;
    push(&c, &registry, &two, &reference)?;
    create("second")?;

    for (service, image, variant) in [("first", &one, "one"), ("second", &two, "two")] {
        let rows = wait_running(&c, service, 2, false)?;
        ensure!(
            rows.iter()
                .all(|r| r["ImageDigest"] == image.manifest_digest.as_str()),
            "every task of {service} should run {}: {rows:?}",
            image.manifest_digest
        );
        ensure!(
            inspected_image(m1, service)? == format!("{reference}@{}", image.manifest_digest),
            "{service} is pinned to its create's digest"
        );
        let printed = wait_logged(m1, service, "variant", 2)?;
        ensure!(
            printed.iter().all(|(_, v)| v == variant),
            "{service} runs variant {variant}: {printed:?}"
        );
    }

    let missing = format!("{}/nope:latest", registry.host());
    let out = m1.rswarm(&["service", "create", "-d", "--name", "missing", &missing])?;
    ensure!(
        out.status.success(),
        "a missing image is the node's to reject: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rejected = wait_error(m1, "missing", None, "Rejected")?;
    // The node's words, then docker-registry's own.
    ensure!(
        rejected.contains(&format!("{missing} not found")) && rejected.contains("manifest unknown"),
        "the rejection should carry the registry's reason: {rejected}"
    );

    corrupted_archives_are_refused(m1, c.dir())?;
    m1.ok(&["service", "rm", "first", "second", "missing"])?;
    Ok(())
}

/// Waits until a task of `service` (task `id` if given) is in a state that
/// `service ps` shows as `state…`; returns its error.
fn wait_error(node: &Node, service: &str, id: Option<&str>, state: &str) -> Result<String> {
    let mut error = None;
    wait_until(CONVERGE, || {
        error = ps_json(node, service)?
            .iter()
            .filter(|r| id.is_none_or(|id| r["ID"] == id))
            .find(|r| {
                r["CurrentState"]
                    .as_str()
                    .is_some_and(|s| s.starts_with(state))
            })
            .map(|r| r["Error"].as_str().unwrap_or_default().to_string());
        Ok(error.is_some())
    })
    .with_context(|| {
        format!(
            "no task of {service} reached {state}: {:?}",
            node.ok(&["service", "ps", "--no-trunc", service])
        )
    })?;
    error.context("no error")
}

/// `image load` of an OCI layout whose layer blob was altered, and of a
/// `docker save` archive whose layer tar was, fails naming the digest that
/// does not match, and adds no image.
fn corrupted_archives_are_refused(node: &Node, dir: &Path) -> Result<()> {
    let images_before = node.ok(&["image", "ls", "--format", "json"])?;
    let mut bad = busybox("corrupt")?;
    let top = bad.layers.last_mut().context("a layer")?;
    let middle = top.gzip.len() / 2;
    top.gzip[middle] ^= 0xff;
    // In the tar, a byte of a file's content: the tar still reads, only
    // its digest is wrong.
    let content = top
        .tar
        .windows(b"corrupt\n".len())
        .position(|w| w == b"corrupt\n")
        .context("the variant file in the top layer")?;
    top.tar[content] = b'C';
    let (digest, diff_id) = (top.digest.clone(), top.diff_id.clone());
    let oci = dir.join("corrupt-oci.tar");
    let save = dir.join("corrupt-save.tar");
    write_oci_layout(&bad, "registry.test/corrupt:oci", &oci).map_err(|e| anyhow!("{e}"))?;
    write_docker_save(&bad, &["corrupt:save"], &save).map_err(|e| anyhow!("{e}"))?;
    for (archive, blob) in [(&oci, &digest), (&save, &diff_id)] {
        let path = archive.to_str().context("path")?;
        let (code, err) = node.fails(&["image", "load", "-i", path])?;
        ensure!(
            code == 1 && err.contains(blob.as_str()),
            "loading {path} should fail naming {blob}: {code}: {err}"
        );
    }
    let images_after = node.ok(&["image", "ls", "--format", "json"])?;
    ensure!(
        images_after == images_before,
        "a refused archive added images:\n{images_before}\n→\n{images_after}"
    );
    Ok(())
}

/// Goal: inside a container, a health check, secrets, configs and the
/// three kinds of mounts work as in Docker: an unhealthy container is
/// failed with the probe's output and replaced; a secret is readable at
/// `/run/secrets/<name>` but never logged by a daemon; a config sits at its
/// absolute target; a bind mount shows the host's files, a named volume
/// keeps what one task wrote for the next (a replacement, then a forced
/// update), a tmpfs is a tmpfs; a killed and
/// restarted daemon leaves its container running and re-attached; `service
/// rm` leaves no container behind.
/// Method: 1 manager + 1 worker on hosts, the image loaded from a `docker
/// save` archive on the worker; one service on the worker whose command
/// prints what it sees and whose health check tests for a file in the bind
/// mount, which the test removes and restores.
#[test]
fn health_secrets_mounts_and_restart_in_a_container() -> Result<()> {
    let mut c = Cluster::form_on_hosts(1, 1)?;
    let archive = c.dir().join("busybox.tar");
    write_docker_save(&busybox("one")?, &["busybox:latest"], &archive)
        .map_err(|e| anyhow!("{e}"))?;
    let loaded = c
        .node("w1")
        .ok(&["image", "load", "-i", archive.to_str().context("path")?])?;
    ensure!(loaded.contains("Loaded image: busybox:latest"), "{loaded}");

    let shared = c.dir().join("shared");
    std::fs::create_dir(&shared)?;
    std::fs::write(shared.join("file"), "from-the-host")?;
    let healthy = shared.join("healthy");
    std::fs::write(&healthy, "")?;
    create_box(&c, &shared)?;
    let first = wait_running(&c, "box", 1, true)?;
    let first_id = first[0]["ID"].as_str().unwrap_or_default().to_string();
    the_box_sees_its_inputs(c.node("m1"))?;

    // A daemon killed and restarted finds its container and keeps it.
    let pid = task_pid(c.node("m1"), "box", &first_id)?;
    ensure!(alive(pid), "the container's process {pid} is not running");
    c.node_mut("w1").restart()?;
    ensure!(alive(pid), "the container died with its daemon");
    // Time for the restarted daemon to report and to probe a few times.
    std::thread::sleep(RESTART_SETTLE);
    let rows = wait_running(&c, "box", 1, true)?;
    ensure!(
        rows[0]["ID"] == first_id.as_str()
            && task_pid(c.node("m1"), "box", &first_id)? == pid
            && alive(pid),
        "the container was replaced or restarted, not re-attached: {rows:?}\n{}",
        c.report()
    );

    // Unhealthy: failed with the probe's output (which the restarted daemon
    // ran in the container), stopped, replaced on the same node.
    let m1 = c.node("m1");
    std::fs::remove_file(&healthy)?;
    let failed = wait_error(m1, "box", Some(&first_id), "Failed")?;
    ensure!(
        failed == "unhealthy container: no healthy file",
        "err: {failed:?}"
    );
    wait_until(CONVERGE, || Ok(!alive(pid)))
        .context("the unhealthy container's process was not stopped")?;
    std::fs::write(&healthy, "")?;
    let second = wait_replaced(&c, &first_id)?;
    // Each task read what the one before it wrote in the volume: the
    // replacement, then the task of a forced update.
    m1.ok(&["service", "update", "-d", "--force", "box"])?;
    wait_replaced(&c, &second)?;
    let volume = wait_logged(m1, "box", "volume", 3)?;
    for previous in [&first_id, &second] {
        ensure!(
            volume
                .iter()
                .any(|(_, v)| v.len() == 12 && previous.starts_with(v.as_str())),
            "a task should read {previous}'s hostname from the volume: {volume:?}"
        );
    }

    for node in &c.nodes {
        let log = std::fs::read_to_string(node.log_path()).unwrap_or_default();
        ensure!(
            !log.contains(SECRET_MARKER),
            "{}'s log shows the secret",
            node.name
        );
    }
    m1.ok(&["service", "rm", "box"])?;
    no_container_is_left(c.node("w1"))
}

/// Waits until `box`'s one running task is a healthy one other than
/// `previous`; returns its ID.
fn wait_replaced(c: &Cluster, previous: &str) -> Result<String> {
    let mut id = String::new();
    wait_until(CONVERGE, || {
        let rows = running_rows(c.node("m1"), "box")?;
        if let [row] = rows.as_slice()
            && row["ID"] != previous
            && row["Health"] == "healthy"
        {
            id = row["ID"].as_str().unwrap_or_default().to_string();
        }
        Ok(!id.is_empty())
    })
    .with_context(|| format!("no healthy replacement of {previous}\n{}", c.report()))?;
    Ok(id)
}

/// Creates secret `pw` (from stdin), config `app` and service `box` on the
/// worker: the secret at `/run/secrets/pw`, the config at `/etc/app.conf`,
/// `shared` bound at `/shared`, volume `data` at `/data`, a tmpfs at
/// `/scratch`, healthy while `/shared/healthy` exists. Its command prints
/// `key=value` lines of what it sees and writes its hostname to the volume.
fn create_box(c: &Cluster, shared: &Path) -> Result<()> {
    let m1 = c.node("m1");
    with_stdin(
        m1,
        &["secret", "create", "pw", "-"],
        SECRET_MARKER.as_bytes(),
    )?;
    let conf = c.dir().join("app.conf");
    std::fs::write(&conf, "listen=8080")?;
    m1.ok(&["config", "create", "app", conf.to_str().context("path")?])?;
    let script = format!(
        "echo secret=$(busybox sha256sum < /run/secrets/pw); \
         echo config=$(cat /etc/app.conf); \
         echo bind=$(cat /shared/file); \
         echo tmpfs=$(mount | grep ' /scratch ' | grep -c tmpfs); \
         echo volume=$(cat /data/written-by 2>/dev/null || echo nothing); \
         hostname > /data/written-by; \
         {IDLE}"
    );
    m1.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "box",
        "--constraint",
        "node.role==worker",
        "--no-resolve-image",
        "--secret",
        "pw",
        "--config",
        "source=app,target=/etc/app.conf",
        "--mount",
        &format!("type=bind,source={},target=/shared", shared.display()),
        "--mount",
        "type=volume,source=data,target=/data",
        "--mount",
        "type=tmpfs,target=/scratch",
        "--health-cmd",
        "test -f /shared/healthy || { echo no healthy file; exit 1; }",
        "--health-interval",
        "300ms",
        "--health-retries",
        "2",
        "--restart-delay",
        "1s",
        "busybox:latest",
        "sh",
        "-c",
        &script,
    ])?;
    Ok(())
}

/// What the first task of `box` printed: the secret (by its hash), the
/// config, the bound file, a tmpfs, an empty new volume.
fn the_box_sees_its_inputs(m1: &Node) -> Result<()> {
    let secret_hash = sha256_hex(SECRET_MARKER.as_bytes())?;
    let secret = wait_logged(m1, "box", "secret", 1)?;
    ensure!(
        secret[0].1.starts_with(&secret_hash),
        "the container should read the secret: {secret:?}, want {secret_hash}"
    );
    let expected = [
        ("config", "listen=8080"),
        ("bind", "from-the-host"),
        ("tmpfs", "1"),
        ("volume", "nothing"),
    ];
    for (key, value) in expected {
        let printed = wait_logged(m1, "box", key, 1)?;
        ensure!(
            printed[0].1 == value,
            "the container should print {key}={value}: {printed:?}"
        );
    }
    Ok(())
}

/// Waits until `node` has no task shim and runc lists no container under
/// its data dir.
fn no_container_is_left(node: &Node) -> Result<()> {
    let runc_root = node.data_dir.join(RUNC_ROOT);
    wait_until(CONVERGE, || {
        Ok(node.shim_pids().is_empty() && runc_containers(&runc_root)?.is_empty())
    })
    .with_context(|| {
        format!(
            "containers left on {} after service rm: {:?}",
            node.name,
            runc_containers(&runc_root)
        )
    })
}

/// The container IDs runc lists under `root` (none when it has none).
fn runc_containers(root: &Path) -> Result<Vec<String>> {
    if !root.exists() {
        return Ok(Vec::new());
    }
    let out = Command::new(runc_bin())
        .arg("--root")
        .arg(root)
        .args(["list", "-q"])
        .output()
        .context("cannot run runc: apt-get install runc")?;
    ensure!(
        out.status.success(),
        "runc list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect())
}

/// The hex sha256 of `data`, by coreutils' `sha256sum`.
fn sha256_hex(data: &[u8]) -> Result<String> {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run sha256sum (coreutils)")?;
    child.stdin.take().context("stdin")?.write_all(data)?;
    let out = child.wait_with_output()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .map(str::to_string)
        .context("no sha256sum output")
}
