//! The shim's one loop: start the task, then `poll` over the control
//! socket, its clients, the task's output pipes and its pidfd until the task
//! has ended and its output is drained; then record the exit.
//!
//! Invariants: the main process is signalled only while it is unreaped (its
//! pid cannot be reused until then); after it ended, the rest of its
//! process group and cgroups is killed before the exit is recorded; waiting
//! clients hear `exited` only after the record is on disk.

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStderr, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use rswarm_proto::LogStream;
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::process::{Pid, PidfdFlags, Signal, WaitOptions, WaitStatus};

use super::container::{self, Spawned};
use super::protocol::{Reply, Request};
use super::records::{
    self, CgroupPlacement, ExitRecord, Outcome, ShimSpec, TaskPid, read_json, write_json,
    write_json_durably,
};
use crate::logs::{LineSplitter, LogWriter, now_ns};
use crate::runtime::limits::{
    SHIM_CLIENTS_MAX, SHIM_DRAIN_TIMEOUT, SHIM_LINE_BYTES_MAX, SHIM_READ_BYTES, SHIM_REAP_INTERVAL,
};

/// Without a pidfd (kernels before 5.3) the shim polls for the exit.
const EXIT_POLL_WITHOUT_PIDFD: Duration = Duration::from_millis(100);

/// Why the shim could not start the task.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    #[error("cannot read the task spec {path}: {source}")]
    Spec { path: PathBuf, source: io::Error },
    #[error("no task spec at {path}")]
    NoSpec { path: PathBuf },
    #[error("cannot listen on {path}: {source}")]
    Socket { path: PathBuf, source: io::Error },
    #[error("cannot open the task's log in {path}: {source}")]
    Log { path: PathBuf, source: io::Error },
    #[error("cannot put the task into cgroup {path}: {source}")]
    Cgroup { path: PathBuf, source: io::Error },
    #[error("cannot start {program}: {source}")]
    Spawn { program: PathBuf, source: io::Error },
    #[error("runc {step} failed: {message}")]
    Runc { step: &'static str, message: String },
}

/// A connected control client.
struct Client {
    stream: UnixStream,
    input: Vec<u8>,
    waiting: bool,
}

/// The running shim.
pub(super) struct Supervisor {
    dir: PathBuf,
    spec: ShimSpec,
    listener: UnixListener,
    clients: Vec<Client>,
    main_pid: Pid,
    pidfd: Option<OwnedFd>,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    stdout_lines: LineSplitter,
    stderr_lines: LineSplitter,
    log: LogWriter,
    log_failed: bool,
    main_status: Option<WaitStatus>,
    rest_killed: bool,
    kill_at: Option<Instant>,
    drain_until: Option<Instant>,
    buffer: Vec<u8>,
}

/// Which descriptors `poll` found ready.
#[derive(Default)]
struct Ready {
    listener: bool,
    main_exited: bool,
    stdout: bool,
    stderr: bool,
    clients: Vec<bool>,
}

impl Supervisor {
    /// Reads the spec in `dir`, listens, and starts the task.
    pub(super) fn start(dir: &Path) -> Result<Self, StartError> {
        let spec_path = dir.join(records::SPEC_FILE);
        let spec: ShimSpec = read_json(&spec_path)
            .map_err(|source| StartError::Spec {
                path: spec_path.clone(),
                source,
            })?
            .ok_or(StartError::NoSpec { path: spec_path })?;
        let listener = listen(&dir.join(records::SOCKET_FILE))?;
        let log = LogWriter::open(dir, spec.log_rotation).map_err(|source| StartError::Log {
            path: dir.to_path_buf(),
            source,
        })?;
        let spawned = match &spec.container {
            Some(container) => container::start(container)?,
            None => {
                let mut child = spawn_task(&spec)?;
                Spawned {
                    pid: child.id(),
                    stdout: child.stdout.take(),
                    stderr: child.stderr.take(),
                }
            }
        };
        let main_pid = i32::try_from(spawned.pid)
            .ok()
            .and_then(Pid::from_raw)
            .ok_or_else(|| StartError::Spawn {
                program: spec.program.clone(),
                source: io::Error::other(format!("bad pid {}", spawned.pid)),
            })?;
        let pidfd = rustix::process::pidfd_open(main_pid, PidfdFlags::empty())
            .inspect_err(|e| eprintln!("shim: no pidfd ({e}); polling for the exit"))
            .ok();
        record_pids(dir, spawned.pid);
        Ok(Self {
            dir: dir.to_path_buf(),
            spec,
            listener,
            clients: Vec::new(),
            main_pid,
            pidfd,
            stdout: spawned.stdout,
            stderr: spawned.stderr,
            stdout_lines: LineSplitter::default(),
            stderr_lines: LineSplitter::default(),
            log,
            log_failed: false,
            main_status: None,
            rest_killed: false,
            kill_at: None,
            drain_until: None,
            buffer: vec![0; SHIM_READ_BYTES],
        })
    }

    /// The task's main process.
    pub(super) fn main_pid(&self) -> i32 {
        self.main_pid.as_raw_nonzero().get()
    }

    /// Serves until the task ended and its output is drained, then records
    /// the exit and answers the waiting clients.
    pub(super) fn supervise(&mut self) {
        loop {
            let ready = self.wait_for_events();
            if ready.main_exited {
                // Killed while the main process is an unreaped zombie, so its
                // process group id cannot have been reused.
                self.kill_rest();
            }
            self.reap();
            self.handle_output(&ready);
            self.handle_clients(&ready);
            self.after_exit();
            self.escalate_if_due();
            if self.is_done() {
                break;
            }
        }
        self.finish();
    }

    fn wait_for_events(&mut self) -> Ready {
        let timeout = to_timespec(self.next_timeout());
        let mut fds = Vec::with_capacity(4 + self.clients.len());
        fds.push(PollFd::new(&self.listener, PollFlags::IN));
        let pidfd_index = self
            .pidfd
            .as_ref()
            .filter(|_| self.main_status.is_none())
            .map(|fd| {
                fds.push(PollFd::new(fd, PollFlags::IN));
                fds.len() - 1
            });
        let stdout_index = self.stdout.as_ref().map(|fd| {
            fds.push(PollFd::new(fd, PollFlags::IN));
            fds.len() - 1
        });
        let stderr_index = self.stderr.as_ref().map(|fd| {
            fds.push(PollFd::new(fd, PollFlags::IN));
            fds.len() - 1
        });
        let clients_start = fds.len();
        for client in &self.clients {
            fds.push(PollFd::new(&client.stream, PollFlags::IN));
        }
        if let Err(e) = poll(&mut fds, Some(&timeout)) {
            if e != rustix::io::Errno::INTR {
                eprintln!("shim: poll: {e}");
                std::thread::sleep(EXIT_POLL_WITHOUT_PIDFD);
            }
            return Ready {
                clients: vec![false; self.clients.len()],
                ..Ready::default()
            };
        }
        let is_ready = |index: Option<usize>| index.is_some_and(|i| !fds[i].revents().is_empty());
        Ready {
            listener: !fds[0].revents().is_empty(),
            main_exited: is_ready(pidfd_index),
            stdout: is_ready(stdout_index),
            stderr: is_ready(stderr_index),
            clients: fds[clients_start..]
                .iter()
                .map(|fd| !fd.revents().is_empty())
                .collect(),
        }
    }

    /// Until the next thing to do without an event: a kill, the end of the
    /// drain, or a round of reaping orphans.
    fn next_timeout(&self) -> Duration {
        let now = Instant::now();
        let mut timeout = if self.pidfd.is_some() {
            SHIM_REAP_INTERVAL
        } else {
            EXIT_POLL_WITHOUT_PIDFD
        };
        for deadline in [self.kill_at, self.drain_until].into_iter().flatten() {
            timeout = timeout.min(deadline.saturating_duration_since(now));
        }
        timeout
    }

    /// Reaps every exited child: the main process (keeping its status) and
    /// orphans adopted as subreaper.
    fn reap(&mut self) {
        loop {
            match rustix::process::wait(WaitOptions::NOHANG) {
                Ok(Some((pid, status))) => {
                    if pid == self.main_pid {
                        self.main_status = Some(status);
                    }
                }
                Ok(None) | Err(_) => return,
            }
        }
    }

    fn handle_output(&mut self, ready: &Ready) {
        if ready.stdout {
            self.pump(LogStream::Stdout);
        }
        if ready.stderr {
            self.pump(LogStream::Stderr);
        }
    }

    /// Moves what one read gives from an output pipe into the log.
    fn pump(&mut self, stream: LogStream) {
        let (pipe, lines): (&mut dyn Read, &mut LineSplitter) = match stream {
            LogStream::Stdout => match self.stdout.as_mut() {
                Some(pipe) => (pipe, &mut self.stdout_lines),
                None => return,
            },
            LogStream::Stderr => match self.stderr.as_mut() {
                Some(pipe) => (pipe, &mut self.stderr_lines),
                None => return,
            },
        };
        let read = pipe.read(&mut self.buffer);
        let log = &mut self.log;
        let mut write = |line: &[u8]| log.write_line(now_ns(), stream, line);
        let written = match read {
            Ok(0) | Err(_) => {
                let result = lines.finish(&mut write);
                match stream {
                    LogStream::Stdout => self.stdout = None,
                    LogStream::Stderr => self.stderr = None,
                }
                result
            }
            Ok(n) => lines.push(&self.buffer[..n], &mut write),
        };
        let flushed = written.and_then(|()| self.log.flush());
        self.note_log_result(flushed);
    }

    /// A full disk must not stop the supervision: complain once, go on.
    fn note_log_result(&mut self, result: io::Result<()>) {
        match result {
            Ok(()) => self.log_failed = false,
            Err(e) if !self.log_failed => {
                eprintln!("shim: cannot write the task's log, dropping lines: {e}");
                self.log_failed = true;
            }
            Err(_) => {}
        }
    }

    fn handle_clients(&mut self, ready: &Ready) {
        let mut index = self.clients.len();
        while index > 0 {
            index -= 1;
            if ready.clients.get(index).copied().unwrap_or(false) && !self.serve_client(index) {
                self.clients.swap_remove(index);
            }
        }
        if ready.listener {
            self.accept_clients();
        }
    }

    fn accept_clients(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if self.clients.len() >= SHIM_CLIENTS_MAX {
                        eprintln!("shim: refusing a client: {SHIM_CLIENTS_MAX} already connected");
                        continue;
                    }
                    if stream.set_nonblocking(true).is_ok() {
                        self.clients.push(Client {
                            stream,
                            input: Vec::new(),
                            waiting: false,
                        });
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    eprintln!("shim: accept: {e}");
                    return;
                }
            }
        }
    }

    /// Reads and answers what client `index` sent; `false` to drop it.
    fn serve_client(&mut self, index: usize) -> bool {
        let mut chunk = [0u8; SHIM_LINE_BYTES_MAX];
        let client = &mut self.clients[index];
        let n = match client.stream.read(&mut chunk) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        };
        client.input.extend_from_slice(&chunk[..n]);
        while let Some(newline) = self.clients[index].input.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.clients[index].input.drain(..=newline).collect();
            let request = std::str::from_utf8(&line[..newline])
                .ok()
                .and_then(Request::parse);
            let reply = match request {
                Some(request) => self.answer(index, request),
                None => Some(Reply::Error {
                    message: "unknown request".to_string(),
                }),
            };
            if let Some(reply) = reply
                && send(&mut self.clients[index].stream, &reply).is_err()
            {
                return false;
            }
        }
        self.clients[index].input.len() <= SHIM_LINE_BYTES_MAX
    }

    /// The answer to `request`, or `None` when it comes later (`wait`).
    fn answer(&mut self, client: usize, request: Request) -> Option<Reply> {
        match request {
            Request::Status => Some(Reply::Running {
                pid: self.main_pid().unsigned_abs(),
            }),
            Request::Wait => {
                self.clients[client].waiting = true;
                None
            }
            Request::Signal { signal } => Some(self.signal_main(signal)),
            Request::Stop { signal, grace_ms } => {
                let reply = self.signal_main(signal);
                if reply == Reply::Ok {
                    let deadline = Instant::now() + Duration::from_millis(grace_ms);
                    self.kill_at = Some(self.kill_at.map_or(deadline, |at| at.min(deadline)));
                }
                Some(reply)
            }
        }
    }

    fn signal_main(&self, signal: i32) -> Reply {
        let Some(signal) = Signal::from_named_raw(signal) else {
            return Reply::Error {
                message: format!("unknown signal {signal}"),
            };
        };
        if self.main_status.is_some() {
            return Reply::Ok;
        }
        match rustix::process::kill_process(self.main_pid, signal) {
            Ok(()) => Reply::Ok,
            Err(e) => Reply::Error {
                message: format!("cannot signal the task: {e}"),
            },
        }
    }

    /// Once the main process ended: kill what is left, drain the pipes for
    /// a bounded time.
    fn after_exit(&mut self) {
        if self.main_status.is_none() {
            return;
        }
        if !self.rest_killed {
            self.kill_rest();
        }
        if self.drain_until.is_none() {
            self.drain_until = Some(Instant::now() + SHIM_DRAIN_TIMEOUT);
        }
        self.kill_at = None;
    }

    fn escalate_if_due(&mut self) {
        if self.kill_at.is_some_and(|at| at <= Instant::now()) {
            self.kill_at = None;
            if let Err(e) = rustix::process::kill_process(self.main_pid, Signal::KILL) {
                eprintln!("shim: cannot kill the task: {e}");
            }
            self.kill_rest();
        }
    }

    /// SIGKILL to the task's process group and to everything in its cgroups.
    fn kill_rest(&mut self) {
        self.rest_killed = true;
        // ESRCH just means nothing is left.
        let _ = rustix::process::kill_process_group(self.main_pid, Signal::KILL);
        for cgroup in &self.spec.cgroups {
            kill_cgroup(&cgroup.dir);
        }
    }

    fn is_done(&self) -> bool {
        let drained = self.stdout.is_none() && self.stderr.is_none();
        let drain_over = self.drain_until.is_some_and(|at| at <= Instant::now());
        self.main_status.is_some() && (drained || drain_over)
    }

    /// Records the exit, then tells the waiting clients.
    fn finish(&mut self) {
        let log = &mut self.log;
        let result = self
            .stdout_lines
            .finish(&mut |line: &[u8]| log.write_line(now_ns(), LogStream::Stdout, line))
            .and_then(|()| {
                self.stderr_lines
                    .finish(&mut |line: &[u8]| log.write_line(now_ns(), LogStream::Stderr, line))
            })
            .and_then(|()| log.flush());
        self.note_log_result(result);
        let oom_killed = self.spec.container.as_ref().is_some_and(container::finish);
        let record = ExitRecord {
            outcome: outcome_of(self.main_status),
            finished_ns: now_ns(),
            oom_killed,
        };
        if let Err(e) = write_json_durably(&self.dir.join(records::EXIT_FILE), &record) {
            eprintln!("shim: cannot record the exit {record:?}: {e}");
        }
        let _ = std::fs::remove_file(self.dir.join(records::SOCKET_FILE));
        for client in self.clients.iter_mut().filter(|c| c.waiting) {
            let _ = send(&mut client.stream, &Reply::Exited);
        }
    }
}

fn outcome_of(status: Option<WaitStatus>) -> Outcome {
    match status {
        Some(status) => match (status.exit_status(), status.terminating_signal()) {
            (Some(code), _) => Outcome::Exited { code },
            (None, Some(signal)) => Outcome::Killed { signal },
            (None, None) => Outcome::StartFailed {
                error: format!("task ended with an unknown wait status {status:?}"),
            },
        },
        None => Outcome::StartFailed {
            error: "task ended without an exit status".to_string(),
        },
    }
}

fn send(stream: &mut UnixStream, reply: &Reply) -> io::Result<()> {
    stream.write_all(reply.to_line().as_bytes())
}

fn to_timespec(duration: Duration) -> Timespec {
    Timespec {
        tv_sec: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(duration.subsec_nanos()),
    }
}

fn listen(path: &Path) -> Result<UnixListener, StartError> {
    let error = |source| StartError::Socket {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(error(e)),
    }
    let listener = UnixListener::bind(path).map_err(error)?;
    listener.set_nonblocking(true).map_err(error)?;
    Ok(listener)
}

/// Starts the task inside its cgroups without a window in which it runs
/// outside them: the shim joins the cgroups, forks the task (which inherits
/// them) and goes back to where it was.
fn spawn_task(spec: &ShimSpec) -> Result<std::process::Child, StartError> {
    let origins = join_cgroups(&spec.cgroups)?;
    let spawned = task_command(spec).spawn();
    for origin in &origins {
        if let Err(e) = move_self_into(origin) {
            eprintln!(
                "shim: cannot leave the task's cgroup for {}: {e}",
                origin.display()
            );
        }
    }
    spawned.map_err(|source| StartError::Spawn {
        program: spec.program.clone(),
        source,
    })
}

fn task_command(spec: &ShimSpec) -> Command {
    let mut command = Command::new(&spec.program);
    command
        .arg0(&spec.arg0)
        .args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().filter_map(|entry| entry.split_once('=')))
        .current_dir(&spec.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, so that the whole task can be killed at once.
        .process_group(0);
    if let Some(credentials) = spec.credentials {
        // std also drops the supplementary groups when it changes the uid.
        command.uid(credentials.uid).gid(credentials.gid);
    }
    command
}

/// Moves the shim into each task cgroup; returns the cgroups it came from.
fn join_cgroups(cgroups: &[CgroupPlacement]) -> Result<Vec<PathBuf>, StartError> {
    if cgroups.is_empty() {
        return Ok(Vec::new());
    }
    let own =
        std::fs::read_to_string("/proc/self/cgroup").map_err(|source| StartError::Cgroup {
            path: PathBuf::from("/proc/self/cgroup"),
            source,
        })?;
    let mut origins = Vec::with_capacity(cgroups.len());
    for cgroup in cgroups {
        if let Some(origin) = origin_of(&own, cgroup) {
            origins.push(origin);
        }
        move_self_into(&cgroup.dir).map_err(|source| StartError::Cgroup {
            path: cgroup.dir.clone(),
            source,
        })?;
    }
    Ok(origins)
}

/// The shim's current cgroup in the hierarchy of `cgroup`, from the text of
/// `/proc/self/cgroup` (`<id>:<controllers>:<path>` lines).
fn origin_of(proc_self_cgroup: &str, cgroup: &CgroupPlacement) -> Option<PathBuf> {
    proc_self_cgroup.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let _id = fields.next()?;
        let hierarchy = fields.next()?;
        let path = fields.next()?;
        same_hierarchy(hierarchy, &cgroup.hierarchy)
            .then(|| cgroup.mount.join(path.trim_start_matches('/')))
    })
}

/// Whether two controller lists (`cpu,cpuacct`) name the same hierarchy,
/// in whatever order.
fn same_hierarchy(a: &str, b: &str) -> bool {
    fn sorted(text: &str) -> Vec<&str> {
        let mut names: Vec<&str> = text.split(',').collect();
        names.sort_unstable();
        names
    }
    sorted(a) == sorted(b)
}

fn move_self_into(cgroup: &Path) -> io::Result<()> {
    let mut procs = OpenOptions::new()
        .write(true)
        .open(cgroup.join("cgroup.procs"))?;
    procs.write_all(std::process::id().to_string().as_bytes())
}

/// SIGKILL to every process of a cgroup (`cgroup.kill` where the kernel has
/// it, else one by one), never to the shim itself.
fn kill_cgroup(dir: &Path) {
    if std::fs::write(dir.join("cgroup.kill"), b"1").is_ok() {
        return;
    }
    let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) else {
        return;
    };
    let own = std::process::id();
    for pid in procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
        if pid == own {
            continue;
        }
        if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
            let _ = rustix::process::kill_process(pid, Signal::KILL);
        }
    }
}

/// Writes the shim's and the task's pids into the task directory (for
/// operators, and for the runtime to find a task whose shim died).
fn record_pids(dir: &Path, task_pid: u32) {
    let task = TaskPid {
        pid: task_pid,
        start_time: records::process_start_time(task_pid).unwrap_or(0),
    };
    if let Err(e) = write_json(&dir.join(records::TASK_PID_FILE), &task) {
        eprintln!("shim: cannot record the task's pid: {e}");
    }
    let shim_pid = std::process::id().to_string();
    if let Err(e) =
        records::write_atomically(&dir.join(records::SHIM_PID_FILE), shim_pid.as_bytes())
    {
        eprintln!("shim: cannot record its pid: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement(mount: &str, hierarchy: &str) -> CgroupPlacement {
        CgroupPlacement {
            dir: PathBuf::from(mount).join("rswarm/t1"),
            mount: PathBuf::from(mount),
            hierarchy: hierarchy.to_string(),
        }
    }

    #[test]
    fn origin_is_found_per_hierarchy() {
        let v1 = "9:name=systemd:/\n4:memory:/session/abc\n1:cpu,cpuacct:/\n0::/\n";
        assert_eq!(
            origin_of(v1, &placement("/sys/fs/cgroup/memory", "memory")),
            Some(PathBuf::from("/sys/fs/cgroup/memory/session/abc"))
        );
        assert_eq!(
            origin_of(v1, &placement("/sys/fs/cgroup/cpu,cpuacct", "cpuacct,cpu")),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/"))
        );
        assert_eq!(
            origin_of(v1, &placement("/sys/fs/cgroup/pids", "pids")),
            None
        );
        let v2 = "0::/system.slice/rswarm.service\n";
        assert_eq!(
            origin_of(v2, &placement("/sys/fs/cgroup", "")),
            Some(PathBuf::from("/sys/fs/cgroup/system.slice/rswarm.service"))
        );
    }

    #[test]
    fn exit_statuses_become_outcomes() {
        assert!(matches!(outcome_of(None), Outcome::StartFailed { .. }));
    }
}
