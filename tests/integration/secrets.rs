//! Secrets and configs through real daemons: what users rely on is that a
//! secret's plain text is in no manager's Raft data and no daemon's log,
//! that managers which joined after `init` hold the key and keep serving
//! secrets when the first leader dies, and that the commands and service
//! flags behave as Docker's.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use rswarm_integration::{Cluster, wait_until};
use serde_json::Value;

/// A marker no daemon writes unless it leaks the secret.
const MARKER: &str = "s3cr3t-plain-text-9f2c41";

/// Every file under `dir` (recursively) whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path)
                && bytes.windows(needle.len()).any(|w| w == needle)
            {
                found.push(path.display().to_string());
            }
        }
    }
    Ok(found)
}

/// Goal: a secret is stored sealed (its plain text appears in no manager's
/// Raft log or snapshot, nor in any daemon's log), is never shown by
/// `ls`/`inspect`, and configs show their data as Docker does.
/// Method: three managers on loopback; create a secret and a config from
/// files; grep every data dir and log for the marker.
#[test]
fn secrets_are_sealed_at_rest_and_never_shown_or_logged() -> Result<()> {
    let c = Cluster::form(3, 0)?;
    let m1 = c.node("m1");
    let secret_file = c.dir().join("secret.txt");
    std::fs::write(&secret_file, MARKER)?;
    let id = m1.ok(&[
        "secret",
        "create",
        "--label",
        "env=prod",
        "db-pass",
        &secret_file.display().to_string(),
    ])?;
    ensure!(id.trim().len() == 25, "create printed {id:?}");
    let conf_file = c.dir().join("app.conf");
    std::fs::write(&conf_file, "port=80")?;
    m1.ok(&[
        "config",
        "create",
        "app.conf",
        &conf_file.display().to_string(),
    ])?;

    let ls = m1.ok(&["secret", "ls"])?;
    ensure!(
        ls.starts_with("ID")
            && ls.contains("NAME")
            && ls.contains("CREATED")
            && ls.contains("UPDATED"),
        "{ls}"
    );
    ensure!(ls.contains("db-pass") && !ls.contains(MARKER), "{ls}");
    let q = m1.ok(&["secret", "ls", "-q", "-f", "label=env=prod"])?;
    ensure!(q.trim() == id.trim(), "{q}");
    let inspect: Value = serde_json::from_str(&m1.ok(&["secret", "inspect", "db-pass"])?)?;
    ensure!(inspect[0]["Spec"]["Name"] == "db-pass", "{inspect}");
    ensure!(inspect[0]["Spec"].get("Data").is_none(), "{inspect}");
    let pretty = m1.ok(&["secret", "inspect", "--pretty", "db-pass"])?;
    ensure!(!pretty.contains(MARKER), "{pretty}");
    let conf: Value = serde_json::from_str(&m1.ok(&["config", "inspect", "app.conf"])?)?;
    ensure!(conf[0]["Spec"]["Data"] == "cG9ydD04MA==", "{conf}");

    // Every manager has applied the write (the others joined after init).
    for name in ["m1", "m2", "m3"] {
        let node = c.node(name);
        wait_until(Duration::from_secs(10), || {
            Ok(node.ok(&["secret", "ls", "-q"])?.contains(id.trim()))
        })?;
        let raft = node.data_dir.join("raft");
        ensure!(
            raft.is_dir(),
            "{name} has no raft dir at {}",
            raft.display()
        );
        // The secret's name is stored in clear: seeing it proves the grep
        // reads the log that holds the secret.
        let holders = files_containing(&raft, b"db-pass")?;
        ensure!(
            !holders.is_empty(),
            "{name}'s raft data does not hold the secret at all"
        );
        let leaked = files_containing(&raft, MARKER.as_bytes())?;
        ensure!(
            leaked.is_empty(),
            "plain text in {name}'s raft data: {leaked:?}"
        );
        let log = std::fs::read_to_string(node.log_path()).unwrap_or_default();
        ensure!(!log.contains(MARKER), "{name}'s log shows the secret");
    }
    Ok(())
}

/// Goal: managers that joined after `init` hold the secrets key, so the
/// cluster keeps creating secrets after the first leader is killed.
/// Method: three managers; kill -9 the one that ran `init`; create and
/// remove a secret through a survivor.
#[test]
fn joined_managers_serve_secrets_after_the_first_leader_dies() -> Result<()> {
    let mut c = Cluster::form(3, 0)?;
    let before = c.dir().join("before.txt");
    std::fs::write(&before, "before")?;
    c.node("m1")
        .ok(&["secret", "create", "before", &before.display().to_string()])?;
    for name in ["m2", "m3"] {
        let key = c.node(name).data_dir.join("raft").join("secrets.key");
        wait_until(Duration::from_secs(20), || Ok(key.exists()))
            .with_context(|| format!("{name} never received the secrets key"))?;
    }
    c.node_mut("m1").kill9();
    let m2 = c.node("m2");
    let after = c.dir().join("after.txt");
    std::fs::write(&after, MARKER)?;
    wait_until(Duration::from_secs(30), || {
        Ok(m2
            .rswarm(&["secret", "create", "after", &after.display().to_string()])?
            .status
            .success())
    })
    .context("no surviving manager could create a secret")?;
    let ls = m2.ok(&["secret", "ls"])?;
    ensure!(ls.contains("before") && ls.contains("after"), "{ls}");
    m2.ok(&["secret", "rm", "after"])?;
    for name in ["m2", "m3"] {
        let log = std::fs::read_to_string(c.node(name).log_path()).unwrap_or_default();
        ensure!(!log.contains(MARKER), "{name}'s log shows the secret");
    }
    Ok(())
}

/// Goal: service flags resolve names, refuse unknown ones and the process
/// driver clearly, and a secret a service uses cannot be removed.
/// Method: one manager; create services with --secret and try `secret rm`.
#[test]
fn services_reference_secrets_by_name() -> Result<()> {
    let c = Cluster::form(1, 0)?;
    let m1 = c.node("m1");
    let file = c.dir().join("pw.txt");
    std::fs::write(&file, "pw")?;
    m1.ok(&["secret", "create", "pw", &file.display().to_string()])?;
    let (code, err) = m1.fails(&[
        "service",
        "create",
        "-d",
        "--driver",
        "process",
        "--secret",
        "pw",
        "--name",
        "p",
        "/bin/true",
    ])?;
    ensure!(
        code == 1 && err.contains("use the oci driver"),
        "{code}: {err}"
    );
    let (code, err) = m1.fails(&[
        "service", "create", "-d", "--secret", "nope", "--name", "x", "busybox",
    ])?;
    ensure!(
        code == 1 && err.contains("secret not found: nope"),
        "{code}: {err}"
    );
    m1.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "web",
        "--secret",
        "source=pw,target=db.txt,mode=0400",
        "busybox",
    ])?;
    let service = m1.service("web")?;
    let refs = &service
        .spec
        .unwrap()
        .task
        .unwrap()
        .container
        .unwrap()
        .secrets;
    ensure!(
        refs.len() == 1 && refs[0].secret_name == "pw" && refs[0].secret_id.len() == 25,
        "{refs:?}"
    );
    let target = refs[0].file.clone().unwrap_or_default();
    ensure!(
        target.name == "db.txt" && target.mode == 0o400 && target.uid == "0",
        "{target:?}"
    );
    let (code, err) = m1.fails(&["secret", "rm", "pw"])?;
    ensure!(
        code == 1 && err.contains("in use by the following service(s): web"),
        "{code}: {err}"
    );
    m1.ok(&["service", "update", "-d", "--secret-rm", "pw", "web"])?;
    m1.ok(&["secret", "rm", "pw"])?;
    Ok(())
}
