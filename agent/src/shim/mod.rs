//! The shim: a small process per task (`rswarm shim <task dir>`) that is the
//! task's parent for its whole life, so that the task outlives the daemon.
//!
//! It detaches (own session and process group, so a kill of the daemon or
//! its process group leaves it be), becomes a child subreaper, starts the
//! task as the runtime described it in the task directory (inside its
//! cgroups, as its user), writes the task's stdout and stderr into the log
//! files, answers the runtime on a unix socket (status, wait, signal, stop
//! with escalation to SIGKILL), records the exit atomically and then exits.
//!
//! Invariants: the shim stays small — std and a few raw syscalls, no async
//! runtime, no tracing subscriber, one thread; its diagnostics go to its
//! stderr, which the runtime points at `shim.log`. Exactly one exit record
//! is written per start, after the task's last log line. When the task's
//! main process ends, whatever else is left in its process group and
//! cgroups is killed (a task ends as a container does).
//!
//! For a container (`ShimSpec.container`), runc creates and starts the
//! task and the shim adopts the container's init (see `container`).
//!
//! Start handshake: the shim prints one line on stdout, `started <pid>` or
//! `failed <message>`, and then lets go of stdout, so the runtime knows the
//! outcome of the start without polling.

mod container;
pub mod protocol;
pub mod records;
mod supervisor;

use std::io::Write;
use std::path::Path;

use records::{ExitRecord, Outcome, write_json_durably};

/// Runs the shim for the task directory `task_dir` until the task has
/// ended; returns the shim's exit code (0 when the task ran, whatever its
/// own exit code; 1 when it could not be started).
pub fn run(task_dir: &Path) -> u8 {
    detach();
    let task_dir = match std::fs::canonicalize(task_dir) {
        Ok(dir) => dir,
        Err(e) => {
            report(&format!(
                "failed task directory {}: {e}",
                task_dir.display()
            ));
            return 1;
        }
    };
    // Hold no mount busy: everything below uses absolute paths.
    if let Err(e) = std::env::set_current_dir("/") {
        eprintln!("shim: cannot change to /: {e}");
    }
    match supervisor::Supervisor::start(&task_dir) {
        Ok(mut supervisor) => {
            report(&format!("started {}", supervisor.main_pid()));
            supervisor.supervise();
            0
        }
        Err(e) => {
            let message = e.to_string();
            eprintln!("shim: {message}");
            let record = ExitRecord {
                outcome: Outcome::StartFailed {
                    error: message.clone(),
                },
                finished_ns: crate::logs::now_ns(),
                oom_killed: false,
            };
            if let Err(e) = write_json_durably(&task_dir.join(records::EXIT_FILE), &record) {
                eprintln!("shim: cannot record the failed start: {e}");
            }
            report(&format!("failed {}", message.replace('\n', " ")));
            1
        }
    }
}

/// New session (no controlling terminal, own process group) and child
/// subreaper (orphans of the task come to the shim, not to PID 1).
fn detach() {
    if let Err(e) = rustix::process::setsid() {
        // Already a session leader: nothing to leave.
        eprintln!("shim: setsid: {e}");
    }
    if let Err(e) = rustix::process::set_child_subreaper(Some(rustix::process::getpid())) {
        eprintln!("shim: cannot become a child subreaper: {e}");
    }
}

/// Prints the handshake line, then points stdout at /dev/null so that the
/// runtime's end of the pipe sees the end and nothing else ever goes there.
fn report(line: &str) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        // The runtime went away before the handshake; it re-attaches later.
        eprintln!("shim: cannot report {line:?}: {e}");
    }
    drop(stdout);
    match std::fs::File::open("/dev/null") {
        Ok(null) => {
            if let Err(e) = rustix::stdio::dup2_stdout(&null) {
                eprintln!("shim: cannot close stdout: {e}");
            }
        }
        Err(e) => eprintln!("shim: cannot open /dev/null: {e}"),
    }
}
