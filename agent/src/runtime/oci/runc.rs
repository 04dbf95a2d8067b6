//! Talking to runc from the daemon: finding it (whether the node offers
//! the `oci` driver) and `runc exec` into a running container. Creating,
//! starting and deleting containers is the shim's job (`shim::container`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};

use super::error::OciError;
use crate::runtime::limits::{EXEC_OUTPUT_BYTES_MAX, RUNC_PROBE_TIMEOUT};
use crate::runtime::{ExecOutcome, ExitStatus};

/// Where Debian's runc package puts it, for a daemon whose PATH lacks
/// `/usr/sbin`.
const RUNC_FALLBACK: &str = "/usr/sbin/runc";
/// How often the probe looks whether `runc --version` ended.
const PROBE_POLL: Duration = Duration::from_millis(10);

/// Finds runc on PATH or at `/usr/sbin/runc` and checks that `runc
/// --version` works; the error is the reason for `node inspect`.
pub fn detect() -> Result<PathBuf, String> {
    let on_path = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("runc"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let Some(runc) = on_path
        .into_iter()
        .chain([PathBuf::from(RUNC_FALLBACK)])
        .find(|candidate| candidate.is_file())
    else {
        return Err("runc is not installed: apt-get install runc".to_string());
    };
    probe(&runc)?;
    Ok(runc)
}

/// Runs `runc --version`, bounded by `RUNC_PROBE_TIMEOUT`.
fn probe(runc: &Path) -> Result<(), String> {
    let mut child = std::process::Command::new(runc)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", runc.display()))?;
    let deadline = Instant::now() + RUNC_PROBE_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                return Err(format!("{} --version failed ({status})", runc.display()));
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(PROBE_POLL),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} --version did not answer within {RUNC_PROBE_TIMEOUT:?}",
                    runc.display()
                ));
            }
            Err(e) => return Err(format!("cannot wait for {}: {e}", runc.display())),
        }
    }
}

/// Tells concurrent execs' pid files apart.
static EXEC_COUNTER: AtomicU64 = AtomicU64::new(0);

/// `runc exec` of `argv` in container `id` (with the container's user,
/// env and working directory, which runc takes from its config), output
/// captured up to `EXEC_OUTPUT_BYTES_MAX`, killed at `timeout`.
pub async fn exec(
    runc: &Path,
    root: &Path,
    task_dir: &Path,
    id: &str,
    argv: &[String],
    timeout: Duration,
) -> Result<ExecOutcome, OciError> {
    let pid_file = task_dir.join(format!(
        "exec-{}.pid",
        EXEC_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let mut child = tokio::process::Command::new(runc)
        .arg("--root")
        .arg(root)
        .arg("exec")
        .arg("--pid-file")
        .arg(&pid_file)
        .arg(id)
        .args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| OciError::Exec {
            message: format!("cannot run {}: {e}", runc.display()),
        })?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(OciError::Exec {
            message: "runc exec has no output pipes".to_string(),
        });
    };
    let run = async {
        let (out, err, status) =
            tokio::join!(read_bounded(stdout), read_bounded(stderr), child.wait());
        (out, err, status)
    };
    let outcome = match tokio::time::timeout(timeout, run).await {
        Ok((out, err, status)) => {
            let status = status.map_err(|e| OciError::Exec {
                message: format!("cannot wait for runc exec: {e}"),
            })?;
            let mut output = out;
            output.extend_from_slice(&err);
            output.truncate(EXEC_OUTPUT_BYTES_MAX);
            ExecOutcome {
                exit: ExitStatus::Code(status.code().unwrap_or(-1)),
                output: String::from_utf8_lossy(&output).into_owned(),
            }
        }
        Err(_) => {
            kill_exec(&pid_file);
            let _ = child.start_kill();
            ExecOutcome {
                exit: ExitStatus::Signal(9),
                output: format!("the command did not finish within {timeout:?} and was killed"),
            }
        }
    };
    let _ = std::fs::remove_file(&pid_file);
    Ok(outcome)
}

/// Kills the process `runc exec` started (killing runc alone would leave
/// it running in the container).
fn kill_exec(pid_file: &Path) {
    let pid = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|text| text.trim().parse::<i32>().ok())
        .and_then(rustix::process::Pid::from_raw);
    if let Some(pid) = pid {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

/// Reads `reader` to its end, keeping the first `EXEC_OUTPUT_BYTES_MAX`
/// bytes (the rest is read and dropped so the writer never blocks).
async fn read_bounded(mut reader: impl AsyncRead + Unpin) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match reader.read(&mut buffer).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = EXEC_OUTPUT_BYTES_MAX.saturating_sub(kept.len());
                kept.extend_from_slice(&buffer[..n.min(room)]);
            }
        }
    }
}
