//! Task directories watched by shims: what every shim-based driver (the
//! `process` and `oci` drivers) does the same way — making a task
//! directory, starting its shim and reading the handshake, talking to the
//! shim (status, wait, stop), reading the exit record, listing tasks and
//! reading their logs.
//!
//! State lives in `<tasks dir>/<task id>/` (see `shim::records`); this type
//! holds none, so a new one on the same directory — a restarted daemon —
//! finds every task again. The shim is started as a child of the daemon and
//! detaches; the daemon drops its handle at once (tokio reaps the shim when
//! it exits), so shims never hold the daemon up and outlive it.
//!
//! Invariants: a task directory has at most one shim; the exit record is
//! the only source of a task's exit status; a task whose shim vanished
//! without a record is reported `ShimGone` and killed, never left running
//! unwatched.

mod client;

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use rswarm_proto::{LogsOptions, Task};
use tokio::io::{AsyncBufReadExt, BufReader};

use self::client::CallError;
use super::limits::{
    KILL_WAIT_MAX, SHIM_CALL_TIMEOUT, SHIM_START_TIMEOUT, UNIX_SOCKET_PATH_BYTES_MAX,
};
use super::{Attached, ExitStatus, LogLineStream, RuntimeError, Started, StopRequest};
use crate::logs::read_logs;
use crate::shim::protocol::{Reply, Request};
use crate::shim::records::{self, ExitRecord, Outcome, TaskPid, process_start_time, read_json};

/// Longest task id accepted (it names a directory and a cgroup).
const TASK_ID_BYTES_MAX: usize = 64;

/// How to run a shim: a program and leading arguments, to which the task
/// directory is appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimCommand {
    program: PathBuf,
    args: Vec<OsString>,
}

impl ShimCommand {
    /// `program args… <task dir>`.
    pub fn new(program: impl Into<PathBuf>, args: Vec<OsString>) -> Self {
        Self {
            program: program.into(),
            args,
        }
    }

    /// `<this executable> shim <task dir>`: what the daemon uses.
    pub fn current_exe() -> io::Result<Self> {
        Ok(Self::new(std::env::current_exe()?, vec!["shim".into()]))
    }
}

/// The task directories of one driver.
#[derive(Debug)]
pub(crate) struct TaskDirs {
    tasks_dir: PathBuf,
    shim: ShimCommand,
    driver: &'static str,
}

impl TaskDirs {
    /// The tasks of `driver` under `tasks_dir` (made, private to root).
    pub(crate) fn new(
        tasks_dir: PathBuf,
        shim: ShimCommand,
        driver: &'static str,
    ) -> Result<Self, RuntimeError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&tasks_dir)
            .map_err(|source| task_dir_error(&tasks_dir, source))?;
        Ok(Self {
            tasks_dir,
            shim,
            driver,
        })
    }

    /// The directory holding the task directories.
    pub(crate) fn tasks_dir(&self) -> &Path {
        &self.tasks_dir
    }

    /// Where task `task_id` keeps its state and logs.
    pub(crate) fn task_dir(&self, task_id: &str) -> PathBuf {
        self.tasks_dir.join(task_id)
    }

    /// The task's directory, after checking its id.
    pub(crate) fn existing_dir(&self, task_id: &str) -> Result<PathBuf, RuntimeError> {
        check_task_id(task_id)?;
        let dir = self.task_dir(task_id);
        if dir.is_dir() {
            Ok(dir)
        } else {
            Err(RuntimeError::UnknownTask {
                task_id: task_id.to_string(),
                driver: self.driver,
            })
        }
    }

    /// The recorded exit, if the task ended.
    pub(crate) fn recorded_exit(&self, dir: &Path) -> Result<Option<ExitStatus>, RuntimeError> {
        let record: Option<ExitRecord> = read_json(&dir.join(records::EXIT_FILE))
            .map_err(|source| task_dir_error(dir, source))?;
        let Some(record) = record else {
            return Ok(None);
        };
        match record.outcome {
            Outcome::Exited { .. } | Outcome::Killed { .. } if record.oom_killed => {
                Ok(Some(ExitStatus::OomKilled))
            }
            Outcome::Exited { code } => Ok(Some(ExitStatus::Code(code))),
            Outcome::Killed { signal } => Ok(Some(ExitStatus::Signal(signal))),
            Outcome::StartFailed { error } => Err(RuntimeError::StartFailed { message: error }),
        }
    }

    /// After a failed call: the exit if it is recorded by now; else the
    /// shim is still there (a passing fault) or gone.
    fn after_failed_call(&self, dir: &Path, error: CallError) -> Result<ExitStatus, RuntimeError> {
        if let Some(status) = self.recorded_exit(dir)? {
            return Ok(status);
        }
        match error {
            CallError::Timeout => Err(RuntimeError::ShimTimeout {
                timeout: SHIM_CALL_TIMEOUT,
                log: dir.join(records::SHIM_LOG_FILE),
            }),
            CallError::BadReply(message) => Err(RuntimeError::ShimRefused { message }),
            CallError::Unreachable(source) | CallError::Io(source) => {
                if shim_alive(dir) {
                    Err(RuntimeError::ShimIo { source })
                } else {
                    kill_unwatched_task(dir);
                    Err(RuntimeError::ShimGone)
                }
            }
        }
    }

    /// Runs the shim on `dir` (whose spec is written) and waits for its
    /// handshake line.
    pub(crate) async fn spawn_shim(&self, dir: &Path) -> Result<Started, RuntimeError> {
        let shim_log = dir.join(records::SHIM_LOG_FILE);
        let stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&shim_log)
            .map_err(|source| task_dir_error(dir, source))?;
        let spawn_error = |source| RuntimeError::ShimSpawn {
            program: self.shim.program.clone(),
            source,
        };
        let mut child = tokio::process::Command::new(&self.shim.program)
            .args(&self.shim.args)
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(false)
            .spawn()
            .map_err(spawn_error)?;
        let Some(stdout) = child.stdout.take() else {
            return Err(spawn_error(io::Error::other("the shim has no stdout")));
        };
        let mut line = String::new();
        let handshake = tokio::time::timeout(
            SHIM_START_TIMEOUT,
            BufReader::new(stdout).read_line(&mut line),
        )
        .await;
        if handshake.is_err() {
            // A shim that cannot say whether it started is not trusted to
            // watch the task.
            let _ = child.start_kill();
            return Err(RuntimeError::ShimTimeout {
                timeout: SHIM_START_TIMEOUT,
                log: shim_log,
            });
        }
        // The shim outlives this handle; tokio reaps it when it exits.
        drop(child);
        parse_handshake(line.trim_end(), &shim_log)
    }

    /// `Runtime::attach` of a shim-watched task.
    pub(crate) async fn attach(&self, task_id: &str) -> Result<Attached, RuntimeError> {
        check_task_id(task_id)?;
        let dir = self.task_dir(task_id);
        if !dir.is_dir() {
            return Ok(Attached::Unknown);
        }
        if let Some(status) = self.recorded_exit(&dir)? {
            return Ok(Attached::Exited(status));
        }
        if !dir.join(records::SHIM_PID_FILE).exists() {
            // Prepared, but no shim got as far as starting the task (the
            // daemon stopped in between): it never ran.
            return Ok(Attached::Unknown);
        }
        match client::call(&dir.join(records::SOCKET_FILE), Request::Status).await {
            Ok(Reply::Running { pid }) => Ok(Attached::Running { pid }),
            Ok(Reply::Exited) => self
                .recorded_exit(&dir)?
                .map(Attached::Exited)
                .ok_or(RuntimeError::ShimGone),
            Ok(other) => Err(RuntimeError::ShimRefused {
                message: format!("{other:?}"),
            }),
            Err(e) => self.after_failed_call(&dir, e).map(Attached::Exited),
        }
    }

    /// Whether `start` may go ahead: `Some` when the task already runs
    /// (the answer to a repeated start), an error when it ran and ended.
    pub(crate) async fn check_not_started(
        &self,
        task_id: &str,
    ) -> Result<Option<Started>, RuntimeError> {
        match self.attach(task_id).await {
            Ok(Attached::Running { pid }) => Ok(Some(Started { pid })),
            Ok(Attached::Exited(_)) | Err(RuntimeError::StartFailed { .. }) => {
                Err(RuntimeError::AlreadyEnded {
                    task_id: task_id.to_string(),
                })
            }
            Ok(Attached::Unknown) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `Runtime::wait`.
    pub(crate) async fn wait(&self, task_id: &str) -> Result<ExitStatus, RuntimeError> {
        let dir = self.existing_dir(task_id)?;
        if let Some(status) = self.recorded_exit(&dir)? {
            return Ok(status);
        }
        match client::wait_for_exit(&dir.join(records::SOCKET_FILE)).await {
            Ok(()) => self.recorded_exit(&dir)?.ok_or(RuntimeError::ShimGone),
            Err(e) => self.after_failed_call(&dir, e),
        }
    }

    /// `Runtime::stop`.
    pub(crate) async fn stop(
        &self,
        task_id: &str,
        stop: StopRequest,
    ) -> Result<ExitStatus, RuntimeError> {
        let dir = self.existing_dir(task_id)?;
        if let Some(status) = self.recorded_exit(&dir)? {
            return Ok(status);
        }
        let request = Request::Stop {
            signal: stop.signal,
            grace_ms: u64::try_from(stop.grace.as_millis()).unwrap_or(u64::MAX),
        };
        match client::call(&dir.join(records::SOCKET_FILE), request).await {
            Ok(Reply::Ok) => {}
            Ok(Reply::Error { message }) => return Err(RuntimeError::ShimRefused { message }),
            Ok(other) => {
                return Err(RuntimeError::ShimRefused {
                    message: format!("{other:?}"),
                });
            }
            Err(e) => return self.after_failed_call(&dir, e),
        }
        let waited = stop.grace + KILL_WAIT_MAX;
        tokio::time::timeout(waited, self.wait(task_id))
            .await
            .map_err(|_| RuntimeError::StopTimeout { waited })?
    }

    /// The first half of `Runtime::remove`: kills the task if it still
    /// runs and waits for its shim to record the end.
    pub(crate) async fn kill_for_removal(&self, task_id: &str) -> Result<(), RuntimeError> {
        check_task_id(task_id)?;
        if !self.task_dir(task_id).is_dir() {
            return Ok(());
        }
        match self.stop(task_id, StopRequest::KILL).await {
            Ok(_) | Err(RuntimeError::ShimGone) | Err(RuntimeError::StartFailed { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes the task's directory (gone already is fine).
    pub(crate) async fn delete_dir(&self, task_id: &str) -> Result<(), RuntimeError> {
        check_task_id(task_id)?;
        let dir = self.task_dir(task_id);
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(task_dir_error(&dir, e)),
        }
    }

    /// `Runtime::task_ids`.
    pub(crate) fn task_ids(&self) -> Result<Vec<String>, RuntimeError> {
        let listing_error = |source| task_dir_error(&self.tasks_dir, source);
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&self.tasks_dir).map_err(listing_error)? {
            let name = entry.map_err(listing_error)?.file_name();
            if let Some(id) = name.to_str().filter(|id| check_task_id(id).is_ok()) {
                ids.push(id.to_string());
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// `Runtime::logs`.
    pub(crate) fn logs(
        &self,
        task_id: &str,
        options: LogsOptions,
    ) -> Result<LogLineStream, RuntimeError> {
        let dir = self.existing_dir(task_id)?;
        let exit_marker = dir.join(records::EXIT_FILE);
        Ok(read_logs(dir, task_id.to_string(), options, exit_marker))
    }
}

/// The error of a failed file operation in a task directory.
pub(crate) fn task_dir_error(dir: &Path, source: io::Error) -> RuntimeError {
    RuntimeError::TaskDir {
        path: dir.to_path_buf(),
        source,
    }
}

/// Checks a task id before it becomes a path.
pub(crate) fn check_task_id(id: &str) -> Result<(), RuntimeError> {
    let valid = !id.is_empty()
        && id.len() <= TASK_ID_BYTES_MAX
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(RuntimeError::BadTaskId { id: id.to_string() })
    }
}

/// The task's id ("" when it has none; `check_task_id` refuses that).
pub(crate) fn task_id_of(task: &Task) -> &str {
    task.meta.as_ref().map_or("", |m| m.id.as_str())
}

fn parse_handshake(line: &str, shim_log: &Path) -> Result<Started, RuntimeError> {
    if let Some(pid) = line.strip_prefix("started ")
        && let Ok(pid) = pid.parse()
    {
        return Ok(Started { pid });
    }
    let message = match line.strip_prefix("failed ") {
        Some(message) => message.to_string(),
        None => format!(
            "the shim ended without starting the task (it said {line:?}); see {}",
            shim_log.display()
        ),
    };
    Err(RuntimeError::StartFailed { message })
}

/// Empties (or makes) a task directory, private to root.
pub(crate) fn fresh_task_dir(dir: &Path) -> Result<(), RuntimeError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(task_dir_error(dir, e)),
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(|e| task_dir_error(dir, e))
}

/// Checks that the shim's socket in `dir` fits a unix socket address.
pub(crate) fn check_socket_path(dir: &Path) -> Result<(), RuntimeError> {
    let socket = dir.join(records::SOCKET_FILE);
    let len = socket.as_os_str().len();
    if len > UNIX_SOCKET_PATH_BYTES_MAX {
        return Err(RuntimeError::PathTooLong { path: socket, len });
    }
    Ok(())
}

/// Whether the shim of `dir` still runs (a zombie does not count).
fn shim_alive(dir: &Path) -> bool {
    let Ok(pid) = std::fs::read_to_string(dir.join(records::SHIM_PID_FILE)) else {
        return false;
    };
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())) else {
        return false;
    };
    // The state is the first field after the parenthesised command name.
    let state = stat
        .rfind(')')
        .and_then(|end| stat[end + 1..].split_whitespace().next());
    !matches!(state, None | Some("Z") | Some("X"))
}

/// The shim died without recording an exit: kill its task (nothing reads
/// its output any more, and the orchestrator will replace it), if the pid
/// still belongs to it.
fn kill_unwatched_task(dir: &Path) {
    let Ok(Some(task)) = read_json::<TaskPid>(&dir.join(records::TASK_PID_FILE)) else {
        return;
    };
    if task.start_time == 0 || process_start_time(task.pid) != Some(task.start_time) {
        return;
    }
    let Some(pid) = i32::try_from(task.pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    tracing::warn!(pid = task.pid, dir = %dir.display(), "killing a task whose shim is gone");
    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshakes_are_understood() {
        let log = Path::new("/x/shim.log");
        assert_eq!(
            parse_handshake("started 42", log).unwrap(),
            Started { pid: 42 }
        );
        let err = parse_handshake("failed cannot start /bin/x: denied", log).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the task could not be started: cannot start /bin/x: denied"
        );
        let err = parse_handshake("", log).unwrap_err();
        assert!(err.to_string().contains("/x/shim.log"), "{err}");
    }

    #[test]
    fn socket_paths_must_fit_a_sockaddr() {
        assert!(check_socket_path(Path::new("/var/lib/rswarm/tasks/abc")).is_ok());
        let long = PathBuf::from("/").join("d".repeat(120));
        let err = check_socket_path(&long).unwrap_err();
        assert!(
            err.rejects_task() && err.to_string().contains("--data-dir"),
            "{err}"
        );
    }

    #[test]
    fn task_ids_must_be_safe_path_names() {
        for id in ["abc", "a.b-c_d", "x"] {
            assert!(check_task_id(id).is_ok(), "{id}");
        }
        for id in ["", ".", "..", "a/b", "a b", &"x".repeat(65)] {
            assert!(check_task_id(id).is_err(), "{id}");
        }
    }
}
