//! Starting daemons so that they die with the test process, even when it
//! is killed with SIGKILL and no destructor runs.
//!
//! A daemon is started through `setpriv --pdeathsig KILL`, which asks the
//! kernel to kill it when its parent goes. The kernel means the parent
//! *thread*, and a test may start or restart daemons from short-lived
//! threads (a nemesis loop, say), so every such child is spawned by one
//! thread that lives as long as the process. On a host, `nsenter --net`
//! puts the daemon in the host's network namespace; unlike `ip netns
//! exec` it leaves the mounts alone, so the daemon still sees the cgroup
//! hierarchies under `/sys/fs/cgroup`.
//!
//! Invariant: every child spawned here is killed by the kernel when the
//! test process ends.

use std::path::Path;
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::sync::mpsc;

use anyhow::{Context, Result};

/// A spawn request: the command and where to send the child.
type Request = (Command, mpsc::Sender<std::io::Result<Child>>);

/// The spawning thread's queue; the thread lives as long as the process.
static SPAWNER: OnceLock<mpsc::Sender<Request>> = OnceLock::new();

/// A command that runs `program` in network namespace `netns` (none: the
/// caller's) and is killed when the test process ends, once spawned with
/// [`spawn_tied`].
pub(crate) fn tied_command(netns: Option<&Path>, program: &Path) -> Command {
    let mut command = Command::new("setpriv");
    command.args(["--pdeathsig", "KILL"]);
    if let Some(netns) = netns {
        command
            .arg("nsenter")
            .arg(format!("--net={}", netns.display()))
            .arg("--");
    }
    command.arg(program);
    command
}

/// Spawns `command` from the process-long spawning thread, so that the
/// parent-death signal fires only when the process ends.
pub(crate) fn spawn_tied(command: Command) -> Result<Child> {
    let spawner = SPAWNER.get_or_init(|| {
        let (requests, queue) = mpsc::channel::<Request>();
        let started = std::thread::Builder::new()
            .name("rswarm-spawner".into())
            .spawn(move || {
                for (mut command, reply) in queue {
                    let _ = reply.send(command.spawn());
                }
            });
        if let Err(e) = started {
            eprintln!("cannot start the spawning thread: {e}");
        }
        requests
    });
    let program = format!("{:?}", command.get_program());
    let (reply, answer) = mpsc::channel();
    spawner
        .send((command, reply))
        .map_err(|_| anyhow::anyhow!("the spawning thread is gone"))?;
    answer
        .recv()
        .context("the spawning thread is gone")?
        .with_context(|| {
            format!("cannot start {program}: is util-linux (setpriv, nsenter) installed?")
        })
}
