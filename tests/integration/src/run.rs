//! The names a test run gives to what it creates, and the removal of it.
//!
//! Every namespace and directory a run makes starts with its prefix,
//! `rswarm-t<owner pid>-<sequence>`, so two test processes never collide
//! and whatever a run leaves behind says which process owned it. What is
//! removed, and when:
//! - on drop, by the owner ([`crate::Hosts`], [`crate::Cluster`]);
//! - on SIGINT, SIGTERM or SIGHUP, by a handler thread that removes every
//!   run of this process and exits (installed with the first run);
//! - at the start of the first run of a process, every run whose owner is
//!   dead (killed with SIGKILL, say) is swept: its processes killed, its
//!   namespaces deleted, its directories removed.
//!
//! Invariant: a sweep only touches names that parse as `rswarm-t<pid>-<seq>`
//! and whose owner is dead, or is this process on interrupt; it never
//! touches the root namespace's links, routes or firewall.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, Once};

use anyhow::{Context, Result};

/// Where `ip netns add` puts the namespaces it names.
pub(crate) const NETNS_DIR: &str = "/run/netns";

/// What every run's names start with.
const PREFIX: &str = "rswarm-t";

/// The next run's sequence number in this process.
static NEXT_SEQUENCE: AtomicU32 = AtomicU32::new(1);

/// The prefixes of this process's runs that are alive, for the interrupt
/// handler.
static LIVE_RUNS: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// One run: the prefix of everything it creates. Registered while alive.
#[derive(Debug)]
pub(crate) struct RunId {
    prefix: String,
}

impl RunId {
    /// A new run of this process. The first one also sweeps dead runs and
    /// installs the interrupt handler.
    pub(crate) fn new() -> Self {
        static FIRST: Once = Once::new();
        FIRST.call_once(|| {
            sweep_dead_runs();
            install_interrupt_cleanup();
        });
        let sequence = NEXT_SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("{PREFIX}{}-{sequence}", std::process::id());
        live_runs().insert(prefix.clone());
        Self { prefix }
    }

    /// The prefix, `rswarm-t<pid>-<seq>`.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A name of this run: `<prefix>-<what>`.
    pub(crate) fn name(&self, what: &str) -> String {
        format!("{}-{what}", self.prefix)
    }

    /// A new temporary directory of this run.
    pub(crate) fn tempdir(&self) -> Result<tempfile::TempDir> {
        tempfile::Builder::new()
            .prefix(&format!("{}-", self.prefix))
            .tempdir()
            .context("cannot make the test's directory")
    }
}

impl Drop for RunId {
    fn drop(&mut self) {
        live_runs().remove(&self.prefix);
    }
}

fn live_runs() -> std::sync::MutexGuard<'static, BTreeSet<String>> {
    LIVE_RUNS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The owner PID of a name of some run (`rswarm-t<pid>-<seq>...`).
pub(crate) fn owner_of(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, rest) = rest.split_once('-')?;
    let sequence = rest.split('-').next()?;
    sequence.parse::<u32>().ok()?;
    pid.parse().ok()
}

/// The prefix (`rswarm-t<pid>-<seq>`) of a name of some run.
fn prefix_of(name: &str) -> Option<String> {
    owner_of(name)?;
    let mut parts = name.splitn(3, '-');
    let (first, second, third) = (parts.next()?, parts.next()?, parts.next()?);
    let sequence = third.split('-').next()?;
    Some(format!("{first}-{second}-{sequence}"))
}

/// Whether process `pid` is alive (a zombie counts as dead).
pub(crate) fn is_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(|s| s != "Z"))
        })
        .unwrap_or(false)
}

/// What run `prefix` left on the machine: namespaces, mounts, processes
/// and directories that carry its prefix, one line each (empty: nothing).
/// Tests call it after dropping a cluster to prove that nothing outlives it.
pub fn leftovers(prefix: &str) -> Vec<String> {
    let mut found = Vec::new();
    found.extend(
        netns_names()
            .into_iter()
            .filter(|name| name.starts_with(prefix))
            .map(|name| format!("namespace {name}")),
    );
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    found.extend(
        mounts
            .lines()
            .filter(|l| l.contains(prefix))
            .map(|l| format!("mount {l}")),
    );
    found.extend(
        crate::processes()
            .into_iter()
            .filter(|(_, cmd)| cmd.contains(prefix))
            .map(|(pid, cmd)| format!("process {pid}: {cmd}")),
    );
    found.extend(
        tempdir_names()
            .into_iter()
            .filter(|name| name.starts_with(prefix))
            .map(|name| format!("directory {name}")),
    );
    found
}

/// Removes what runs of dead processes left behind: processes in their
/// namespaces or started from their directories, the namespaces, the
/// directories. Returns the prefixes it removed.
pub fn sweep_dead_runs() -> Vec<String> {
    sweep(|owner| !is_alive(owner))
}

/// Removes everything of the runs whose owner `pick` selects.
fn sweep(pick: impl Fn(u32) -> bool) -> Vec<String> {
    let names = netns_names()
        .into_iter()
        .chain(tempdir_names())
        .filter(|name| owner_of(name).is_some_and(&pick));
    let prefixes: BTreeSet<String> = names.filter_map(|name| prefix_of(&name)).collect();
    for prefix in &prefixes {
        remove_run(prefix);
    }
    prefixes.into_iter().collect()
}

/// Removes every namespace, process and directory of run `prefix`.
pub(crate) fn remove_run(prefix: &str) {
    let mine = |name: &str| prefix_of(name).is_some_and(|p| p == prefix);
    for name in netns_names().into_iter().filter(|n| mine(n)) {
        remove_netns(&name);
    }
    let marker = format!("/{prefix}-");
    for (pid, cmd) in crate::processes() {
        if cmd.contains(&marker) {
            kill9(pid);
        }
    }
    unmount_under(&marker);
    for name in tempdir_names().into_iter().filter(|n| mine(n)) {
        let _ = std::fs::remove_dir_all(std::env::temp_dir().join(name));
    }
}

/// Detaches every mount whose path names the run, deepest first: the
/// overlay roots and tmpfs of containers whose node was killed stay mounted
/// (only the driver's `remove` undoes them), and would keep the run's
/// directories from being removed.
fn unmount_under(marker: &str) {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|point| point.contains(marker))
        .collect();
    for point in points.into_iter().rev() {
        let _ = std::process::Command::new("umount")
            .args(["--lazy", point])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Kills every process in network namespace `name`, then deletes it.
pub(crate) fn remove_netns(name: &str) {
    let path = Path::new(NETNS_DIR).join(name);
    for pid in pids_in_netns(&path) {
        kill9(pid);
    }
    let _ = std::process::Command::new("ip")
        .args(["netns", "delete", name])
        .stderr(std::process::Stdio::null())
        .status();
}

/// The processes whose network namespace is the one bound at `path`
/// (what `ip netns pids` prints).
pub(crate) fn pids_in_netns(path: &Path) -> Vec<u32> {
    let Ok(target) = std::fs::metadata(path) else {
        return Vec::new();
    };
    crate::node::each_process(|pid, dir| {
        let ns = std::fs::metadata(dir.join("ns/net")).ok()?;
        (ns.ino() == target.ino() && ns.dev() == target.dev()).then_some(pid)
    })
}

/// SIGKILL to `pid`, ignoring a process that is already gone.
pub(crate) fn kill9(pid: u32) {
    signal(pid, rustix::process::Signal::KILL);
}

/// Sends `signal` to `pid`, ignoring a process that is already gone.
pub(crate) fn signal(pid: u32, signal: rustix::process::Signal) {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    let _ = rustix::process::kill_process(pid, signal);
}

/// Names in the named-namespace directory that belong to some run.
fn netns_names() -> Vec<String> {
    dir_names(Path::new(NETNS_DIR))
}

/// Names in the temporary directory that belong to some run.
fn tempdir_names() -> Vec<String> {
    dir_names(&std::env::temp_dir())
}

fn dir_names(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with(PREFIX))
        .collect()
}

/// On SIGINT, SIGTERM or SIGHUP: remove every run of this process, then
/// exit with 128 + the signal, as the default action would have.
fn install_interrupt_cleanup() {
    let spawned = std::thread::Builder::new()
        .name("rswarm-interrupt-cleanup".into())
        .spawn(|| {
            let Some(code) = wait_for_interrupt() else {
                return;
            };
            let runs: Vec<String> = live_runs().iter().cloned().collect();
            eprintln!("interrupted: removing test hosts and nodes of {runs:?}");
            for prefix in runs {
                remove_run(&prefix);
            }
            std::process::exit(code);
        });
    if let Err(e) = spawned {
        eprintln!(
            "cannot start the interrupt handler ({e}): an interrupted run leaves its hosts for the next run to sweep"
        );
    }
}

/// Blocks until SIGINT, SIGTERM or SIGHUP; returns the exit code it means.
fn wait_for_interrupt() -> Option<i32> {
    use tokio::signal::unix::{SignalKind, signal};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    runtime.block_on(async {
        let mut interrupt = signal(SignalKind::interrupt()).ok()?;
        let mut terminate = signal(SignalKind::terminate()).ok()?;
        let mut hangup = signal(SignalKind::hangup()).ok()?;
        tokio::select! {
            _ = interrupt.recv() => Some(130),
            _ = terminate.recv() => Some(143),
            _ = hangup.recv() => Some(129),
        }
    })
}

/// The path of named network namespace `name`.
pub(crate) fn netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_runs_parse_and_others_do_not() {
        assert_eq!(owner_of("rswarm-t123-4-fabric"), Some(123));
        assert_eq!(owner_of("rswarm-t123-4-AbCdEf"), Some(123));
        assert_eq!(
            prefix_of("rswarm-t123-4-m1").as_deref(),
            Some("rswarm-t123-4")
        );
        assert_eq!(
            prefix_of("rswarm-t123-4-AbCdEf").as_deref(),
            Some("rswarm-t123-4")
        );
        assert_eq!(owner_of("rswarm-local-fabric"), None);
        assert_eq!(owner_of("rswarm-it-abc"), None);
        assert_eq!(owner_of("rswarm-tx-1-m1"), None);
    }
}
