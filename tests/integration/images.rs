//! `rswarm image …` against a real daemon, and the manager pinning a
//! service's image to the digest its registry has for the tag.

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, ensure};
use rswarm_integration::images::{
    RegistryConfig, busybox, local_registry, push_blocking, push_from_host, registry_on_host,
    write_docker_save, write_oci_layout,
};
use rswarm_integration::{Cluster, rswarm_bin};

/// Goal: load (file and stdin, both archive formats), ls, pull, rm and prune
/// work as in Docker and agree with each other.
/// Method: one daemon (no cluster needed), a registry on loopback.
#[test]
fn image_commands_work_against_a_daemon() -> Result<()> {
    let c = Cluster::start(&["n1"])?;
    let n1 = c.node("n1");
    let one = busybox("one")?;
    let save = c.dir().join("save.tar");
    let oci = c.dir().join("oci.tar");
    write_docker_save(&one, &["bb:save"], &save).map_err(|e| anyhow::anyhow!("{e}"))?;
    write_oci_layout(&one, "registry.test/bb:oci", &oci).map_err(|e| anyhow::anyhow!("{e}"))?;

    let out = n1.ok(&["image", "load", "-i", save.to_str().context("path")?])?;
    ensure!(out.contains("Loaded image: bb:save"), "{out}");
    let out = load_from_stdin(&n1.socket(), &std::fs::read(&oci)?)?;
    ensure!(out.contains("Loaded image: registry.test/bb:oci"), "{out}");

    let table = n1.ok(&["image", "ls"])?;
    let header = table.lines().next().unwrap_or_default();
    ensure!(
        header.split_whitespace().collect::<Vec<_>>()
            == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"],
        "{table}"
    );
    let id = &one.config_digest["sha256:".len()..][..12];
    ensure!(
        table
            .lines()
            .any(|l| l.starts_with("bb ") && l.contains("save") && l.contains(id)),
        "{table}"
    );
    let quiet = n1.ok(&["image", "ls", "-q"])?;
    ensure!(quiet.trim() == id, "one ID for the same config: {quiet}");
    let json = n1.ok(&["image", "ls", "--format", "json"])?;
    let rows: Vec<serde_json::Value> = json
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    ensure!(
        rows.len() == 2
            && rows
                .iter()
                .all(|r| r["ID"] == id && r["Size"].as_str().is_some_and(|s| s.ends_with("MB"))),
        "{json}"
    );

    let registry = local_registry()?;
    let reference = format!("{}/bb:latest", registry.host());
    let two = busybox("two")?;
    push_blocking(&two, &reference, &RegistryConfig::default())?;
    let out = n1.ok(&["image", "pull", &reference])?;
    ensure!(out.contains(&two.manifest_digest), "{out}");
    let (code, err) = n1.fails(&[
        "image",
        "pull",
        &format!("{}/missing:latest", registry.host()),
    ])?;
    ensure!(code == 1 && err.contains("not found"), "{code}: {err}");

    let out = n1.ok(&["image", "rm", "bb:save"])?;
    ensure!(
        out.contains("Untagged: bb:save")
            && out.contains(&format!("Deleted: {}", one.config_digest)),
        "{out}"
    );
    let (code, err) = n1.fails(&["image", "rm", "nosuch:tag"])?;
    ensure!(code == 1 && err.contains("no such image"), "{code}: {err}");

    let out = n1.ok(&["image", "prune", "-a", "-f"])?;
    ensure!(
        out.contains("Total reclaimed space") && out.contains("deleted:"),
        "{out}"
    );
    let table = n1.ok(&["image", "ls"])?;
    ensure!(table.lines().count() == 1, "everything pruned: {table}");
    Ok(())
}

fn load_from_stdin(socket: &std::path::Path, archive: &[u8]) -> Result<String> {
    let mut child = Command::new(rswarm_bin())
        .args([
            "-H",
            &format!("unix://{}", socket.display()),
            "image",
            "load",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child.stdin.take().context("stdin")?.write_all(archive)?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "image load failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn service_image(c: &Cluster, name: &str) -> Result<String> {
    let service = c.node("m1").service(name)?;
    Ok(service
        .spec
        .and_then(|s| s.task)
        .and_then(|t| t.container)
        .map(|c| c.image)
        .unwrap_or_default())
}

/// Goal: the manager stores `name:tag@digest` so every node runs the same
/// image; a moved tag is re-resolved on update; an unreachable registry
/// keeps the tag with Docker's warning; --no-resolve-image opts out.
/// Method: one manager, a registry on loopback, services created detached
/// (nothing needs to run: the spec is what is checked).
#[test]
fn the_manager_pins_image_digests() -> Result<()> {
    let c = Cluster::form(1, 0)?;
    let m1 = c.node("m1");
    let registry = local_registry()?;
    let reference = format!("{}/bb:latest", registry.host());
    let (one, two) = (busybox("one")?, busybox("two")?);
    push_blocking(&one, &reference, &RegistryConfig::default())?;

    m1.ok(&["service", "create", "-d", "--name", "pinned", &reference])?;
    ensure!(
        service_image(&c, "pinned")? == format!("{reference}@{}", one.manifest_digest),
        "{}",
        service_image(&c, "pinned")?
    );

    push_blocking(&two, &reference, &RegistryConfig::default())?;
    m1.ok(&["service", "update", "-d", "--image", &reference, "pinned"])?;
    ensure!(
        service_image(&c, "pinned")? == format!("{reference}@{}", two.manifest_digest),
        "the moved tag is followed"
    );

    m1.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "asis",
        "--no-resolve-image",
        &reference,
    ])?;
    ensure!(
        service_image(&c, "asis")? == reference,
        "opted out: {}",
        service_image(&c, "asis")?
    );

    let gone = "127.0.0.1:1/bb:latest";
    let out = m1.rswarm(&["service", "create", "-d", "--name", "unresolved", gone])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "{stderr}");
    ensure!(
        stderr.contains(&format!(
            "image {gone} could not be accessed on a registry to record its digest"
        )),
        "{stderr}"
    );
    ensure!(service_image(&c, "unresolved")? == gone, "the tag is kept");
    Ok(())
}

/// Goal: a registry that is not on loopback is spoken to over HTTPS unless
/// the daemon lists it with --insecure-registry (as dockerd does).
/// Method: a registry on a host of its own, a daemon on another host; pull
/// before and after restarting the daemon with the flag.
#[test]
fn a_plain_http_registry_needs_insecure_registry() -> Result<()> {
    let mut c = Cluster::start_on_hosts(&["n1"])?;
    let registry_host = c.hosts_mut()?.add("registry")?.clone();
    let registry = registry_on_host(&registry_host)?;
    let host = registry.host();
    let reference = format!("{host}/bb:latest");
    let one = busybox("one")?;
    let insecure = RegistryConfig {
        insecure: vec![host.clone()],
    };
    push_from_host(&registry_host, &one, &reference, &insecure)?;

    let (code, err) = c.node("n1").fails(&["image", "pull", &reference])?;
    ensure!(
        code == 1 && err.contains(&host),
        "HTTPS to a plain registry fails, naming it: {code}: {err}"
    );

    let n1 = c.node_mut("n1");
    n1.add_daemon_args(&["--insecure-registry", &host]);
    n1.restart()?;
    let out = n1.ok(&["image", "pull", &reference])?;
    ensure!(out.contains(&one.manifest_digest), "{out}");
    Ok(())
}
