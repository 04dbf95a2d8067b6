//! Bad input gets a clear error and the right exit code, and loses nothing:
//! malformed flags, unknown references, invalid addresses, oversized
//! requests, a data dir of another cluster, a corrupted Raft log.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use rswarm_integration::{Cluster, wait_until};

/// Goal: usage errors exit 125, other errors exit 1, each with a message
/// that says what was wrong.
/// Method: run malformed commands against a one-manager cluster.
#[test]
fn cli_errors_are_clear() -> Result<()> {
    let c = Cluster::form(1, 0)?;
    let m1 = c.node("m1");
    let (code, err) = m1.fails(&["node", "ls", "--bogus"])?;
    ensure!(code == 125 && err.contains("--bogus"), "{code}: {err}");
    let (code, _) = m1.fails(&["join", "127.0.0.1:1"])?;
    ensure!(code == 125, "missing --token gave {code}");
    let (code, err) = m1.fails(&["node", "update", "--availability", "sleepy", "m1"])?;
    ensure!(code == 125 && err.contains("sleepy"), "{code}: {err}");
    let (code, err) = m1.fails(&["node", "inspect", "nosuchnode"])?;
    ensure!(
        code == 1 && err.contains("no node matches \"nosuchnode\""),
        "{code}: {err}"
    );
    let (code, err) = m1.fails(&["node", "ls", "-f", "colour=red"])?;
    ensure!(code == 1 && err.contains("invalid filter"), "{code}: {err}");
    let (code, err) = m1.fails(&["node", "update", "--label-rm", "nope", "m1"])?;
    ensure!(code == 1 && err.contains("doesn't exist"), "{code}: {err}");
    // A second init on a member is refused; the cluster is untouched.
    let (code, err) = m1.fails(&["init"])?;
    ensure!(
        code == 1 && err.contains("already part of a cluster"),
        "{code}: {err}"
    );
    ensure!(c.node_ls("m1")?.len() == 1, "node list changed");
    // A daemon that is not running is named, with the fix.
    let out = std::process::Command::new(rswarm_integration::rswarm_bin())
        .args(["-H", "unix:///nonexistent/rswarm.sock", "info"])
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.code() == Some(1) && err.contains("cannot connect to the rswarm daemon"),
        "{err}"
    );
    Ok(())
}

/// Goal: invalid addresses are refused before anything changes.
/// Method: join with a malformed manager address and advertise address.
#[test]
fn invalid_addresses_are_refused() -> Result<()> {
    let c = Cluster::form(1, 0)?;
    let joiner = Cluster::start(&["x1"])?;
    let token = c
        .node("m1")
        .ok(&["join-token", "-q", "worker"])?
        .trim()
        .to_string();
    let x1 = joiner.node("x1");
    let (code, err) = x1.fails(&["join", "--token", &token, "not an address:x"])?;
    ensure!(
        code == 1 && err.contains("invalid address"),
        "{code}: {err}"
    );
    let (code, err) = x1.fails(&[
        "join",
        "--token",
        &token,
        "--advertise-addr",
        "10.0.0.1:99999",
        &c.node("m1").addr(),
    ])?;
    ensure!(
        code == 1 && err.contains("invalid address"),
        "{code}: {err}"
    );
    ensure!(c.node_ls("m1")?.len() == 1, "a refused join added a node");
    ensure!(
        x1.info()?.get("Cluster").is_some_and(|s| s == "inactive"),
        "x1 changed state"
    );
    Ok(())
}

/// Goal: a request over 4 MiB is refused with a clear error and the
/// manager keeps serving.
/// Method: send a 5 MiB config through the local socket's control API.
#[test]
fn oversized_requests_are_refused() -> Result<()> {
    let c = Cluster::form(1, 0)?;
    let socket = c.node("m1").run_dir.join("rswarm.sock");
    let rt = tokio::runtime::Runtime::new()?;
    let status = rt.block_on(async {
        let mut control =
            rswarm_proto::control_client::ControlClient::new(rswarm_pki::unix_channel(socket))
                .max_encoding_message_size(16 * 1024 * 1024);
        let spec = rswarm_proto::ConfigSpec {
            annotations: Some(rswarm_proto::Annotations {
                name: "big".into(),
                ..Default::default()
            }),
            data: vec![7u8; 5 * 1024 * 1024],
        };
        control
            .create_config(rswarm_proto::CreateConfigRequest { spec: Some(spec) })
            .await
    });
    let status = status.err().context("a 5 MiB request was accepted")?;
    ensure!(
        status.code() == tonic::Code::OutOfRange || status.code() == tonic::Code::ResourceExhausted,
        "{status:?}"
    );
    ensure!(
        status.message().contains("4194304") || status.message().contains("too large"),
        "{}",
        status.message()
    );
    ensure!(c.node_ls("m1")?.len() == 1, "manager stopped serving");
    Ok(())
}

/// Goal: a daemon refuses a data dir of another cluster, and a corrupted
/// Raft log, naming the file; the data stays as it was.
/// Method: swap m1's Raft dir for another cluster's; then overwrite its
/// log with garbage.
#[test]
fn foreign_or_corrupted_data_is_refused() -> Result<()> {
    let mut a = Cluster::form(1, 0)?;
    let mut b = Cluster::form(1, 0)?;
    a.node_mut("m1").stop();
    b.node_mut("m1").stop();
    let a_raft = a.node("m1").data_dir.join("raft");
    let b_raft = b.node("m1").data_dir.join("raft");
    let saved = a.dir().join("raft-saved");
    std::fs::rename(&a_raft, &saved)?;
    copy_dir(&b_raft, &a_raft)?;
    let (code, err) = a.node_mut("m1").start_expecting_refusal()?;
    ensure!(
        code == 1 && err.contains("raft/cluster-id") && err.contains("another cluster"),
        "{code}: {err}"
    );

    std::fs::remove_dir_all(&a_raft)?;
    std::fs::rename(&saved, &a_raft)?;
    // The first segment of the write-ahead log.
    let log = a_raft.join("wal").join(format!("{:020}.wal", 1));
    let original = std::fs::read(&log)?;
    std::fs::write(&log, vec![0xA5u8; original.len()])?;
    let (code, err) = a.node_mut("m1").start_expecting_refusal()?;
    ensure!(
        code == 1 && err.contains(&log.display().to_string()) && err.contains("damaged"),
        "{code}: {err}"
    );

    // Put the log back: the node starts and its state is intact.
    std::fs::write(&log, &original)?;
    a.node_mut("m1").start()?;
    wait_until(Duration::from_secs(20), || {
        Ok(a.node_ls("m1").is_ok_and(|n| n.len() == 1))
    })?;
    Ok(())
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}
