//! `exec` for the process driver: runs a command (a health check probe)
//! beside a running task, as the task runs: its user, environment, working
//! directory and cgroups, read from the spec its shim was given.
//!
//! The command gets its own process group, so that a timeout kills it and
//! everything it started; dropping the call kills them too. Output is
//! stdout then stderr, at most `EXEC_OUTPUT_BYTES_MAX` bytes in all; the
//! rest is read and thrown away so that the command never blocks on a
//! full pipe.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::resolve::{find_program, path_of};
use crate::runtime::limits::{EXEC_OUTPUT_BYTES_MAX, SHIM_READ_BYTES};
use crate::runtime::{ExecOutcome, ExitStatus, RuntimeError};
use crate::shim::records::{CgroupPlacement, ShimSpec};

/// Runs `argv` as the task of `spec` runs, killed after `timeout`.
pub(super) async fn exec_beside(
    spec: &ShimSpec,
    argv: &[String],
    timeout: Duration,
) -> Result<ExecOutcome, RuntimeError> {
    let (arg0, args) = argv.split_first().ok_or(RuntimeError::NoCommand)?;
    let program = find_program(arg0, &spec.dir, path_of(&spec.env))?;
    let mut command = tokio::process::Command::new(&program);
    command
        .arg0(arg0)
        .args(args)
        .env_clear()
        .envs(spec.env.iter().filter_map(|entry| entry.split_once('=')))
        .current_dir(&spec.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(credentials) = spec.credentials {
        command.uid(credentials.uid).gid(credentials.gid);
    }
    let mut child = command.spawn().map_err(|source| RuntimeError::ExecSpawn {
        program: program.clone(),
        source,
    })?;
    let group = GroupKiller(child.id());
    if let Some(pid) = child.id() {
        join_cgroups(pid, &spec.cgroups);
    }
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(RuntimeError::ExecSpawn {
            program,
            source: std::io::Error::other("the command has no output pipes"),
        });
    };
    let run = async {
        tokio::join!(
            child.wait(),
            read_bounded(stdout, EXEC_OUTPUT_BYTES_MAX),
            read_bounded(stderr, EXEC_OUTPUT_BYTES_MAX),
        )
    };
    let Ok((status, mut output, errors)) = tokio::time::timeout(timeout, run).await else {
        drop(group);
        return Err(RuntimeError::ExecTimeout { timeout });
    };
    drop(group);
    let status = status.map_err(|source| RuntimeError::ExecSpawn { program, source })?;
    output.extend_from_slice(&errors);
    output.truncate(EXEC_OUTPUT_BYTES_MAX);
    Ok(ExecOutcome {
        exit: exit_of(status),
        output: String::from_utf8_lossy(&output).into_owned(),
    })
}

fn exit_of(status: std::process::ExitStatus) -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitStatus::Code(code),
        (None, Some(signal)) => ExitStatus::Signal(signal),
        // Neither exited nor killed cannot happen for a reaped child;
        // count it as a failure rather than a pass.
        (None, None) => ExitStatus::Code(-1),
    }
}

/// Moves `pid` into the task's cgroups, so that the task's limits cover
/// its probes. Best effort: a probe outside them still tells health.
fn join_cgroups(pid: u32, cgroups: &[CgroupPlacement]) {
    for cgroup in cgroups {
        let procs = cgroup.dir.join("cgroup.procs");
        if let Err(e) = std::fs::write(&procs, pid.to_string()) {
            tracing::debug!(path = %procs.display(), "exec outside the task's cgroup: {e}");
        }
    }
}

/// Kills a command's process group when dropped (at the end of the call,
/// on a timeout, or when the caller gives up).
struct GroupKiller(Option<u32>);

impl Drop for GroupKiller {
    fn drop(&mut self) {
        let pid = self
            .0
            .and_then(|pid| i32::try_from(pid).ok())
            .and_then(rustix::process::Pid::from_raw);
        if let Some(pid) = pid {
            // The group may be gone already; nothing to do then.
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

/// Reads `reader` to its end, keeping the first `max` bytes.
async fn read_bounded(mut reader: impl AsyncRead + Unpin, max: usize) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut chunk = vec![0u8; SHIM_READ_BYTES];
    loop {
        match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = max.saturating_sub(kept.len());
                kept.extend_from_slice(&chunk[..n.min(room)]);
            }
        }
    }
}

/// The shim spec of a task directory, if the task was started.
pub(super) fn read_spec(dir: &Path) -> Result<Option<ShimSpec>, RuntimeError> {
    crate::shim::records::read_json(&dir.join(crate::shim::records::SPEC_FILE)).map_err(|source| {
        RuntimeError::TaskDir {
            path: dir.to_path_buf(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    //! Goal: what a health check relies on — the exit code, the task's
    //! environment and directory, bounded output and a kill at the
    //! timeout. Method: run real commands beside a made-up task spec.

    use std::path::PathBuf;

    use super::*;
    use crate::logs::LogRotation;

    fn spec(dir: &str, env: &[&str]) -> ShimSpec {
        ShimSpec {
            task_id: "t1".into(),
            program: PathBuf::from("/bin/sleep"),
            arg0: "sleep".into(),
            args: vec!["600".into()],
            env: env.iter().map(|s| s.to_string()).collect(),
            dir: PathBuf::from(dir),
            credentials: None,
            cgroups: Vec::new(),
            log_rotation: LogRotation::DEFAULT,
            container: None,
        }
    }

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|s| s.to_string()).collect()
    }

    const PATH: &str = "PATH=/usr/bin:/bin";

    #[tokio::test]
    async fn exit_code_and_output_come_back() {
        let spec = spec("/tmp", &[PATH, "WHO=probe"]);
        let cmd = argv(&["sh", "-c", "echo $WHO in $(pwd); echo oops >&2; exit 3"]);
        let outcome = exec_beside(&spec, &cmd, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(outcome.exit, ExitStatus::Code(3));
        assert_eq!(outcome.output, "probe in /tmp\noops\n");
        let ok = exec_beside(&spec, &argv(&["true"]), Duration::from_secs(10))
            .await
            .unwrap();
        assert!(ok.exit.success());
    }

    #[tokio::test]
    async fn output_is_bounded() {
        let spec = spec("/", &[PATH]);
        let cmd = argv(&[
            "sh",
            "-c",
            "head -c 1000000 /dev/zero | tr '\\0' x; echo tail >&2",
        ]);
        let outcome = exec_beside(&spec, &cmd, Duration::from_secs(10))
            .await
            .unwrap();
        assert!(outcome.exit.success());
        assert_eq!(outcome.output.len(), EXEC_OUTPUT_BYTES_MAX);
        assert!(outcome.output.bytes().all(|b| b == b'x'));
    }

    #[tokio::test]
    async fn a_slow_command_and_its_children_are_killed_at_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("child-alive");
        let spec = spec("/", &[PATH]);
        // The child writes the marker only if it survives the kill.
        let script = format!("(sleep 1; touch {}) & sleep 30", marker.display());
        let started = std::time::Instant::now();
        let err = exec_beside(
            &spec,
            &argv(&["sh", "-c", &script]),
            Duration::from_millis(200),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, RuntimeError::ExecTimeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!marker.exists(), "the probe's child outlived the timeout");
    }

    #[tokio::test]
    async fn a_missing_command_is_an_error_not_a_pass() {
        let spec = spec("/", &[PATH]);
        let err = exec_beside(&spec, &argv(&["no-such-probe"]), Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(err, RuntimeError::CommandNotFound { .. }), "{err}");
        let err = exec_beside(&spec, &[], Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(err, RuntimeError::NoCommand), "{err}");
    }
}
