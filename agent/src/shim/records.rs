//! The files of a task directory, `<state dir>/tasks/<task id>/`, which the
//! runtime and the shim share: what to run, the pids, the exit record.
//!
//! Invariants: every record is written atomically (temporary file, then
//! rename), so a reader sees a whole record or none, and the exit record
//! also durably (fsync of the file and the directory); the exit record is written once, after the task's last log line,
//! and is the single source of truth about how the task ended.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::logs::LogRotation;

/// What the shim runs (written by the runtime before it starts the shim).
pub const SPEC_FILE: &str = "spec.json";
/// The shim's own pid.
pub const SHIM_PID_FILE: &str = "shim.pid";
/// The task's main process: pid and start time.
pub const TASK_PID_FILE: &str = "task.json";
/// How the task ended (written by the shim once).
pub const EXIT_FILE: &str = "exit.json";
/// The shim's control socket.
pub const SOCKET_FILE: &str = "shim.sock";
/// The shim's own diagnostics (its stderr).
pub const SHIM_LOG_FILE: &str = "shim.log";

/// The user and group the task runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
}

/// A cgroup the task is put into, and how the shim finds its way back out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupPlacement {
    /// The task's cgroup directory.
    pub dir: PathBuf,
    /// Where the hierarchy is mounted.
    pub mount: PathBuf,
    /// The hierarchy's name in `/proc/self/cgroup` (second field): its
    /// controllers on cgroup v1, empty on cgroup v2.
    pub hierarchy: String,
}

/// Everything the shim needs to start the task; names are resolved by the
/// runtime, so the shim does no lookups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShimSpec {
    pub task_id: String,
    /// Absolute path of the program.
    pub program: PathBuf,
    /// `argv[0]`: the command as the user wrote it.
    pub arg0: String,
    pub args: Vec<String>,
    /// The whole environment, `KEY=VALUE`.
    pub env: Vec<String>,
    /// Working directory (absolute).
    pub dir: PathBuf,
    /// `None`: keep the shim's (root).
    pub credentials: Option<Credentials>,
    pub cgroups: Vec<CgroupPlacement>,
    pub log_rotation: LogRotation,
    /// Set for a container: the shim has runc create and start it instead
    /// of running `program` itself (which is then unused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerStart>,
}

/// How the shim starts a container with runc, and what it needs after the
/// container's end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStart {
    /// The runc binary.
    pub runc: PathBuf,
    /// runc's state directory (`runc --root`).
    pub root: PathBuf,
    /// The bundle: `config.json` and the root filesystem.
    pub bundle: PathBuf,
    /// The container's id for runc.
    pub id: String,
    /// The container's memory cgroup, read for OOM kills before runc
    /// deletes it; `None` on a node without the memory controller.
    pub memory_cgroup: Option<MemoryCgroup>,
}

/// Where the kernel counts a cgroup's OOM kills.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryCgroup {
    pub dir: PathBuf,
    /// cgroup v2 (`memory.events`) rather than v1 (`memory.oom_control`).
    pub v2: bool,
}

/// The task's main process, recorded once it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskPid {
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat`: tells this process from a later one
    /// that got the same pid.
    pub start_time: u64,
}

/// How the task ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It exited with this code.
    Exited { code: i32 },
    /// A signal ended it.
    Killed { signal: i32 },
    /// It never ran.
    StartFailed { error: String },
}

/// The exit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    pub outcome: Outcome,
    /// Nanoseconds since the epoch.
    pub finished_ns: i64,
    /// The kernel's OOM killer killed a process of the task (containers
    /// only; absent in records written before it existed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub oom_killed: bool,
}

/// Writes `bytes` to `path` so that readers see the old content or the new,
/// never a part, also across a power loss (fsync of the file and of the
/// directory). For the exit record.
pub fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no directory"))?;
    write_and_rename(path, bytes, true)?;
    File::open(dir)?.sync_all()
}

/// Writes `bytes` to `path` so that readers see the old content or the new,
/// never a part; without fsync, for records that mean nothing after a
/// reboot (pids, the spec of a task about to start).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_and_rename(path, bytes, false)
}

fn write_and_rename(path: &Path, bytes: &[u8], sync: bool) -> io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let mut file = File::create(&temporary)?;
    file.write_all(bytes)?;
    if sync {
        file.sync_all()?;
    }
    std::fs::rename(&temporary, path)
}

/// Serializes `value` as JSON into `path`, atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let bytes = serde_json::to_vec(value).map_err(io::Error::other)?;
    write_atomically(path, &bytes)
}

/// Serializes `value` as JSON into `path`, atomically and durably.
pub fn write_json_durably<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let bytes = serde_json::to_vec(value).map_err(io::Error::other)?;
    write_durably(path, &bytes)
}

/// Reads a JSON record; `Ok(None)` when the file does not exist.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The start time of process `pid` (field 22 of its stat file), `None` when
/// there is no such process.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces:
    // count fields after its closing parenthesis (field 3 is the first).
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_replace_the_whole_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(EXIT_FILE);
        assert_eq!(read_json::<ExitRecord>(&path).unwrap(), None);
        let first = ExitRecord {
            outcome: Outcome::Exited { code: 3 },
            finished_ns: 1,
            oom_killed: false,
        };
        write_json(&path, &first).unwrap();
        let second = ExitRecord {
            outcome: Outcome::Killed { signal: 9 },
            finished_ns: 2,
            oom_killed: true,
        };
        write_json_durably(&path, &second).unwrap();
        assert_eq!(read_json::<ExitRecord>(&path).unwrap(), Some(second));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn records_without_the_oom_flag_are_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(EXIT_FILE);
        std::fs::write(
            &path,
            br#"{"outcome":{"exited":{"code":3}},"finished_ns":5}"#,
        )
        .unwrap();
        let record = read_json::<ExitRecord>(&path).unwrap().unwrap();
        assert_eq!(record.outcome, Outcome::Exited { code: 3 });
        assert!(!record.oom_killed);
    }

    #[test]
    fn a_damaged_record_is_an_error_not_a_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(EXIT_FILE);
        std::fs::write(&path, b"{\"outcome\":").unwrap();
        let err = read_json::<ExitRecord>(&path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn start_time_of_this_process_is_found_and_stable() {
        let pid = std::process::id();
        let first = process_start_time(pid).expect("this process has a stat file");
        assert_eq!(process_start_time(pid), Some(first));
        assert_eq!(process_start_time(u32::MAX), None);
    }
}
