//! The shim's container mode: instead of forking the task itself, the shim
//! has runc create the container (its stdout and stderr are the shim's log
//! pipes, its stdin /dev/null), reads the container's init pid, and has
//! runc start it. The init re-parents to the shim, a child subreaper, when
//! `runc create` exits; from then on the shim watches it like any task.
//! After the end, the shim reads the container's OOM kill count (before
//! runc deletes the cgroup) and deletes the container.
//!
//! Invariants: runc is only ever run with the shim's own `--root`; a
//! container that was created but could not be started is deleted before
//! the shim reports the failed start.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{ChildStderr, ChildStdout, Command, Stdio};

use super::records::{ContainerStart, MemoryCgroup};
use super::supervisor::StartError;

/// The container's init pid, written by `runc create --pid-file`.
const PID_FILE: &str = "container.pid";
/// runc's own log (JSON lines), kept in the bundle for operators.
const RUNC_LOG_FILE: &str = "runc.log";
/// Bytes of runc's log read back for an error message: the last error is
/// near the end, and the log of one container is small.
const RUNC_LOG_BYTES_MAX: u64 = 64 * 1024;

/// A started container: its init and the read ends of its output pipes.
pub(super) struct Spawned {
    pub pid: u32,
    pub stdout: Option<ChildStdout>,
    pub stderr: Option<ChildStderr>,
}

/// `runc create`, then `runc start`.
pub(super) fn start(container: &ContainerStart) -> Result<Spawned, StartError> {
    let pid_file = container.bundle.join(PID_FILE);
    let mut create = runc(container);
    create
        .arg("create")
        .arg("--bundle")
        .arg(&container.bundle)
        .arg("--pid-file")
        .arg(&pid_file)
        .arg(&container.id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = create.spawn().map_err(|source| StartError::Spawn {
        program: container.runc.clone(),
        source,
    })?;
    let status = child.wait().map_err(|source| StartError::Spawn {
        program: container.runc.clone(),
        source,
    })?;
    if !status.success() {
        return Err(StartError::Runc {
            step: "create",
            message: last_runc_error(&container.bundle, &status.to_string()),
        });
    }
    let pid = read_pid(&pid_file).inspect_err(|_| delete(container))?;
    let started = runc(container)
        .arg("start")
        .arg(&container.id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match started {
        Ok(status) if status.success() => Ok(Spawned {
            pid,
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
        }),
        Ok(status) => {
            delete(container);
            Err(StartError::Runc {
                step: "start",
                message: last_runc_error(&container.bundle, &status.to_string()),
            })
        }
        Err(source) => {
            delete(container);
            Err(StartError::Spawn {
                program: container.runc.clone(),
                source,
            })
        }
    }
}

/// After the container's init ended: whether the OOM killer struck, then
/// `runc delete --force` (which also removes the cgroups).
pub(super) fn finish(container: &ContainerStart) -> bool {
    let oom_killed = container.memory_cgroup.as_ref().is_some_and(oom_killed);
    delete(container);
    oom_killed
}

fn runc(container: &ContainerStart) -> Command {
    let mut command = Command::new(&container.runc);
    command
        .arg("--root")
        .arg(&container.root)
        .arg("--log")
        .arg(container.bundle.join(RUNC_LOG_FILE))
        .arg("--log-format")
        .arg("json");
    command
}

fn delete(container: &ContainerStart) {
    let deleted = runc(container)
        .arg("delete")
        .arg("--force")
        .arg(&container.id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match deleted {
        Ok(status) if status.success() => {}
        Ok(status) => eprintln!("shim: runc delete {}: {status}", container.id),
        Err(e) => eprintln!("shim: cannot run runc delete {}: {e}", container.id),
    }
}

fn read_pid(path: &Path) -> Result<u32, StartError> {
    let text = std::fs::read_to_string(path).map_err(|source| StartError::Spec {
        path: path.to_path_buf(),
        source,
    })?;
    text.trim().parse().map_err(|_| StartError::Spec {
        path: path.to_path_buf(),
        source: io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not a pid: {:?}", text.trim()),
        ),
    })
}

/// The kernel's count of OOM kills in the container's memory cgroup.
fn oom_killed(cgroup: &MemoryCgroup) -> bool {
    let file: PathBuf = if cgroup.v2 {
        cgroup.dir.join("memory.events")
    } else {
        cgroup.dir.join("memory.oom_control")
    };
    match std::fs::read_to_string(&file) {
        Ok(text) => oom_kills(&text) > 0,
        Err(e) => {
            eprintln!("shim: cannot read {}: {e}", file.display());
            false
        }
    }
}

/// The `oom_kill N` line of `memory.events` (v2) or `memory.oom_control`
/// (v1); 0 when absent.
fn oom_kills(text: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// The last error runc logged, or a pointer to its log.
fn last_runc_error(bundle: &Path, status: &str) -> String {
    let path = bundle.join(RUNC_LOG_FILE);
    let mut text = String::new();
    let read = std::fs::File::open(&path)
        .and_then(|file| file.take(RUNC_LOG_BYTES_MAX).read_to_string(&mut text));
    let last_error = read.ok().and_then(|_| last_error_message(&text));
    match last_error {
        Some(message) => message,
        None => format!("runc {status}; see {}", path.display()),
    }
}

fn last_error_message(log: &str) -> Option<String> {
    log.lines().rev().find_map(|line| {
        let entry: serde_json::Value = serde_json::from_str(line).ok()?;
        (entry.get("level")?.as_str()? == "error")
            .then(|| entry.get("msg")?.as_str().map(str::to_string))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_kills_are_read_from_v1_and_v2_files() {
        assert_eq!(
            oom_kills("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"),
            2
        );
        assert_eq!(
            oom_kills("low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\noom_group_kill 0\n"),
            1
        );
        assert_eq!(oom_kills("oom_kill_disable 0\n"), 0);
    }

    #[test]
    fn the_last_logged_error_is_the_message() {
        let log = r#"{"level":"warning","msg":"w","time":"t"}
{"level":"error","msg":"first","time":"t"}
{"level":"error","msg":"exec: \"nope\": executable file not found in $PATH","time":"t"}
"#;
        assert_eq!(
            last_error_message(log).as_deref(),
            Some("exec: \"nope\": executable file not found in $PATH")
        );
        assert_eq!(last_error_message("garbage"), None);
    }
}
