//! The chaos test: 5 managers and 3 workers, each on a host of its own, run
//! a replicated service while clients run the linearizability workload
//! through every manager's socket, and a nemesis breaks the cluster for a
//! fixed time, one fault at a time: it kills the leader or another manager
//! with SIGKILL and restarts it from its data dir, cuts a minority of
//! managers off, splits the cluster with the leader on the minority side,
//! cuts the leader off, pauses the leader or another manager with SIGSTOP,
//! and makes a manager's link lossy. Each fault is held a few seconds, then
//! healed, with a short quiet gap before the next.
//!
//! Afterwards the history must be linearizable with no acknowledged write
//! lost, the service must be back at its replicas (in the store and as
//! processes) within 10 s of the last heal — and of every heal before it —,
//! every node must be Ready again, every manager must apply the same last
//! index, no daemon may have panicked, and the run must leave nothing
//! behind.
//!
//! `RSWARM_CHAOS_SECS` sets how long faults are injected (CI: 60 s; a soak:
//! `RSWARM_CHAOS_SECS=600`). The nemesis's choices come from a seed that
//! is printed; `RSWARM_CHAOS_SEED` replays them (the cluster's own timing,
//! and so who leads when, still varies). `RSWARM_CHAOS_LOGS=<dir>` keeps
//! every daemon's log there (`<dir>/<node>.log`), since the cluster's
//! directory is removed with it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rswarm_integration::linearizability::{
    CheckConfig, Endpoint, Report, Workload, WorkloadConfig, check,
};
use rswarm_integration::{Cluster, leftovers, processes, wait_until};
use rswarm_proto::{Task, TaskState};

/// Managers: five, so that a minority of two can be cut off and the
/// majority of three still has a quorum.
const MANAGERS: usize = 5;

/// Workers: they run the service's tasks with the managers, and take a side
/// in every partition.
const WORKERS: usize = 3;

/// How long faults are injected unless `RSWARM_CHAOS_SECS` says otherwise:
/// about one minute, which CI can afford and which covers every kind of
/// fault at least once.
const FAULT_TIME_DEFAULT: Duration = Duration::from_secs(60);

/// The longest soak `RSWARM_CHAOS_SECS` may ask for: the workload stops
/// each client at its operation limit, and the check's cost grows with the
/// history.
const FAULT_TIME_MAX: Duration = Duration::from_secs(3_600);

/// Workload clients: one per manager, so every manager's forwarding is
/// exercised and every fault hits some client directly.
const CLIENTS: usize = MANAGERS;

/// The service the cluster keeps running through the faults.
const SERVICE: &str = "chaos";

/// Its replicas: fewer than the nodes, so the scheduler has a choice when
/// a node goes down.
const REPLICAS: usize = 6;

/// The argument of the service's `/bin/sleep`: a marker no other test uses,
/// so its processes can be counted on the machine.
const TASK_MARKER: &str = "61777";

/// How long a fault is held, at least and at most: long enough for an
/// election (and for a node's 3 missed heartbeats to mark it Down), short
/// enough for many faults in a run.
const HOLD_MIN: Duration = Duration::from_secs(2);
const HOLD_MAX: Duration = Duration::from_secs(5);

/// The quiet gap after a heal, at least and at most.
const QUIET_MIN: Duration = Duration::from_secs(1);
const QUIET_MAX: Duration = Duration::from_secs(2);

/// Packet loss on a manager's link, in percent, at least and at most:
/// enough to make TCP stall and retransmit, not enough to cut the link.
const LOSS_PERCENT_MIN: u8 = 20;
const LOSS_PERCENT_MAX: u8 = 40;

/// How long after a heal the cluster has to show a leader before the next
/// fault: far above an election, so running out means it did not recover.
const LEADER_WAIT: Duration = Duration::from_secs(30);

/// How long the managers have, once the clients stop, to all apply the
/// same last index: a restarted or cut-off manager must catch up.
const CATCH_UP_WAIT: Duration = Duration::from_secs(30);

/// How long the service has to start before the faults begin.
const SERVICE_START_WAIT: Duration = Duration::from_secs(60);

/// The promise checked: every service back at its replicas within this
/// long of the last heal.
const CONVERGE_MAX: Duration = Duration::from_secs(10);

/// How long the test keeps looking past `CONVERGE_MAX`, so that a slow
/// convergence is measured and reported rather than merely refused.
const CONVERGE_WATCH: Duration = Duration::from_secs(60);

/// Pause between convergence polls.
const CONVERGE_POLL: Duration = Duration::from_millis(100);

/// Fewer acknowledged operations than this and the run proves nothing.
const OK_OPERATIONS_MIN: usize = 100;

/// The faults the nemesis injects. It goes through all of them in a random
/// order, then again in another, so even a short run has each one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum FaultKind {
    /// SIGKILL the leader; restart it from its data dir after the hold.
    KillLeader,
    /// SIGKILL a random manager; restart it after the hold.
    KillManager,
    /// SIGSTOP the leader; SIGCONT after the hold.
    PauseLeader,
    /// SIGSTOP a random manager other than the leader; SIGCONT after.
    PauseManager,
    /// Two random managers cut off from the other three; every worker on
    /// a random side.
    MinorityPartition,
    /// The leader and one other manager cut off from the other three.
    LeaderInMinority,
    /// The leader's host cut off from every other host.
    IsolateLeader,
    /// Random packet loss on a random manager's link.
    LinkLoss,
}

const FAULT_KINDS: [FaultKind; 8] = [
    FaultKind::KillLeader,
    FaultKind::KillManager,
    FaultKind::PauseLeader,
    FaultKind::PauseManager,
    FaultKind::MinorityPartition,
    FaultKind::LeaderInMinority,
    FaultKind::IsolateLeader,
    FaultKind::LinkLoss,
];

/// What ends a fault.
enum Heal {
    /// Start the killed daemon again from its data dir.
    Restart(String),
    /// SIGCONT the paused daemon.
    Resume(String),
    /// Remove every network fault.
    Network,
}

/// Goal: the cluster keeps the promises a user relies on through leader
/// crashes, partitions on either side of the leader, pauses, restarts and
/// a lossy link: every acknowledged write survives, reads are never stale,
/// and the service comes back to its replicas soon after the last heal.
/// Method: 5 managers + 3 workers on hosts; a 6-replica process service;
/// 5 linearizability clients, one per manager; a seeded nemesis cycles
/// through the faults for `RSWARM_CHAOS_SECS` (60 s by default), timing the
/// service's return to its replicas after every heal; then heal
/// everything, time the service's convergence and every node's return to
/// Ready, stop the clients, wait for every manager to apply the same index,
/// check the history, scan the daemon logs for panics, drop the cluster
/// and look for leftovers.
#[test]
fn chaos_keeps_writes_linearizable_and_services_converging() -> Result<()> {
    let fault_time = fault_time()?;
    let seed = seed()?;
    println!(
        "chaos: {} s of faults, seed {seed} (replay with RSWARM_CHAOS_SEED={seed})",
        fault_time.as_secs()
    );
    let mut c = Cluster::form_on_hosts(MANAGERS, WORKERS)?;
    let prefix = c.hosts()?.prefix().to_string();
    let outcome = run_chaos(&mut c, fault_time, seed);
    keep_logs(&c)?;
    // A panic is the likelier cause of any other failure: say both.
    match (outcome, ensure_no_panics(&c)) {
        (Ok(()), panics) => panics?,
        (Err(e), Ok(())) => return Err(e),
        (Err(e), Err(panics)) => return Err(e.context(format!("{panics:#}"))),
    }
    drop(c);
    let left = leftovers(&prefix);
    ensure!(left.is_empty(), "the chaos run left behind: {left:#?}");
    Ok(())
}

/// The run on a formed cluster: service, clients, nemesis, then the
/// checks of what the cluster promised.
fn run_chaos(c: &mut Cluster, fault_time: Duration, seed: u64) -> Result<()> {
    start_service(c)?;
    let workload = Workload::start(WorkloadConfig {
        clients: CLIENTS,
        seed,
        ..WorkloadConfig::new(endpoints(c))
    })?;
    let mut nemesis = Nemesis::new(seed);
    nemesis.run(c, &workload, fault_time)?;
    let last_heal = heal_everything(c, &workload)?;
    let convergence = measure_convergence(c, last_heal, CONVERGE_WATCH);
    let ready = c
        .wait_ready(MANAGERS + WORKERS)
        .map(|()| last_heal.elapsed());
    let history = workload.stop()?;
    let caught_up = managers_caught_up(c);
    let report = check(&history, &CheckConfig::default());
    println!("{report}");
    println!("{}", nemesis.summary());
    println!("after the last heal: {convergence}");
    let ready = ready?;
    println!(
        "every node Ready {} ms after the last heal",
        ready.as_millis()
    );
    let (caught_up, version) = caught_up?;
    println!(
        "every manager applied index {version} {} ms after the clients stopped",
        caught_up.as_millis()
    );
    ensure_clean(&report)?;
    convergence.ensure_within(CONVERGE_MAX, c)?;
    let slow = nemesis.slow_recoveries();
    ensure!(
        slow.is_empty(),
        "the service was not back within {CONVERGE_MAX:?} of these heals:\n{}",
        slow.join("\n")
    );
    Ok(())
}

/// The fault time: `RSWARM_CHAOS_SECS`, or [`FAULT_TIME_DEFAULT`].
fn fault_time() -> Result<Duration> {
    let Ok(text) = std::env::var("RSWARM_CHAOS_SECS") else {
        return Ok(FAULT_TIME_DEFAULT);
    };
    let secs: u64 = text
        .parse()
        .with_context(|| format!("RSWARM_CHAOS_SECS={text:?} is not a number of seconds"))?;
    let time = Duration::from_secs(secs);
    ensure!(
        (1..=FAULT_TIME_MAX.as_secs()).contains(&secs),
        "RSWARM_CHAOS_SECS={secs} is out of range: use 1 to {}",
        FAULT_TIME_MAX.as_secs()
    );
    Ok(time)
}

/// The nemesis's seed: `RSWARM_CHAOS_SEED`, or a new one from the clock.
fn seed() -> Result<u64> {
    match std::env::var("RSWARM_CHAOS_SEED") {
        Ok(text) => text
            .parse()
            .with_context(|| format!("RSWARM_CHAOS_SEED={text:?} is not a number")),
        Err(_) => Ok(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default()
            % 1_000_000),
    }
}

/// One endpoint per manager socket.
fn endpoints(c: &Cluster) -> Vec<Endpoint> {
    c.manager_names()
        .into_iter()
        .map(|name| Endpoint {
            socket: c.node(&name).socket(),
            name,
        })
        .collect()
}

/// Creates the service and waits until its replicas run.
fn start_service(c: &Cluster) -> Result<()> {
    c.node("m1").ok(&[
        "service",
        "create",
        "-d",
        "--driver",
        "process",
        "--name",
        SERVICE,
        "--replicas",
        &REPLICAS.to_string(),
        "/bin/sleep",
        TASK_MARKER,
    ])?;
    wait_until(SERVICE_START_WAIT, || {
        Ok(service_converged(c)? && task_processes() == REPLICAS)
    })
    .with_context(|| format!("{SERVICE} did not start {REPLICAS} tasks\n{}", c.report()))
}

/// The nemesis: its random choices and what it did.
struct Nemesis {
    rng: StdRng,
    /// Faults left in the current round, taken from the back.
    round: Vec<FaultKind>,
    /// How many of each fault were injected.
    injected: BTreeMap<FaultKind, usize>,
    /// How long the faults were held in all.
    held: Duration,
    /// After each heal, how long the service took to converge again.
    recoveries: Vec<(FaultKind, Convergence)>,
}

impl Nemesis {
    fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            round: Vec::new(),
            injected: BTreeMap::new(),
            held: Duration::ZERO,
            recoveries: Vec::new(),
        }
    }

    /// Injects, holds and heals faults one after another until
    /// `fault_time` has passed. After each heal it times the service's
    /// return to its replicas (at most [`CONVERGE_MAX`]), and the quiet gap
    /// lasts at least that long.
    fn run(&mut self, c: &mut Cluster, workload: &Workload, fault_time: Duration) -> Result<()> {
        let started = Instant::now();
        while started.elapsed() < fault_time {
            let leader = wait_leader(c)?;
            let kind = self.next_kind();
            let heal = self.inject(c, workload, kind, &leader)?;
            let hold = self.between(HOLD_MIN, HOLD_MAX);
            std::thread::sleep(hold);
            self.held += hold;
            *self.injected.entry(kind).or_default() += 1;
            apply_heal(c, workload, heal)?;
            let healed = Instant::now();
            let quiet = self.between(QUIET_MIN, QUIET_MAX);
            self.recoveries
                .push((kind, measure_convergence(c, healed, CONVERGE_MAX)));
            std::thread::sleep(quiet.saturating_sub(healed.elapsed()));
        }
        Ok(())
    }

    /// Every heal after which the service was not back within
    /// [`CONVERGE_MAX`].
    fn slow_recoveries(&self) -> Vec<String> {
        self.recoveries
            .iter()
            .filter(|(_, r)| !r.within(CONVERGE_MAX))
            .map(|(kind, r)| format!("after {kind:?}: {r}"))
            .collect()
    }

    /// The next fault of the round; a new shuffled round when it is empty.
    fn next_kind(&mut self) -> FaultKind {
        if self.round.is_empty() {
            self.round = FAULT_KINDS.to_vec();
            self.round.shuffle(&mut self.rng);
        }
        self.round.pop().unwrap_or(FaultKind::KillLeader)
    }

    /// A duration in `[min, max]`, to the millisecond.
    fn between(&mut self, min: Duration, max: Duration) -> Duration {
        Duration::from_millis(
            self.rng
                .random_range(min.as_millis() as u64..=max.as_millis() as u64),
        )
    }

    /// The managers in a random order.
    fn shuffled_managers(&mut self, c: &Cluster) -> Vec<String> {
        let mut managers = c.manager_names();
        managers.shuffle(&mut self.rng);
        managers
    }

    /// A random manager other than `leader`.
    fn follower(&mut self, c: &Cluster, leader: &str) -> String {
        self.shuffled_managers(c)
            .into_iter()
            .find(|m| m != leader)
            .unwrap_or_default()
    }

    /// Injects one fault, records it on the history's clock, and says how
    /// to heal it.
    fn inject(
        &mut self,
        c: &mut Cluster,
        workload: &Workload,
        kind: FaultKind,
        leader: &str,
    ) -> Result<Heal> {
        let heal = match kind {
            FaultKind::KillLeader => kill(c, workload, leader, "the leader"),
            FaultKind::KillManager => {
                let victim = self.shuffled_managers(c).remove(0);
                let what = if victim == leader {
                    "a manager, the leader"
                } else {
                    "a manager"
                };
                kill(c, workload, &victim, what)
            }
            FaultKind::PauseLeader => pause(c, workload, leader, "the leader")?,
            FaultKind::PauseManager => {
                let victim = self.follower(c, leader);
                pause(c, workload, &victim, "a follower")?
            }
            FaultKind::MinorityPartition => {
                let managers = self.shuffled_managers(c);
                self.split(c, workload, &managers[..2], &managers[2..], leader)?
            }
            FaultKind::LeaderInMinority => {
                let minority = [leader.to_string(), self.follower(c, leader)];
                let majority: Vec<String> = c
                    .manager_names()
                    .into_iter()
                    .filter(|m| !minority.contains(m))
                    .collect();
                self.split(c, workload, &minority, &majority, leader)?
            }
            FaultKind::IsolateLeader => {
                workload.record_fault(format!("cut off {leader} (the leader)"));
                c.hosts()?.isolate(leader)?;
                Heal::Network
            }
            FaultKind::LinkLoss => {
                let victim = self.shuffled_managers(c).remove(0);
                let percent = self.rng.random_range(LOSS_PERCENT_MIN..=LOSS_PERCENT_MAX);
                workload.record_fault(format!(
                    "{percent} % packet loss on {victim}'s link (leader {leader})"
                ));
                c.hosts()?.set_loss(&victim, percent)?;
                Heal::Network
            }
        };
        println!("{:>8.3} s  {kind:?}", workload.elapsed().as_secs_f64());
        Ok(heal)
    }

    /// Partitions managers `a` from managers `b`, each worker joining a
    /// random side.
    fn split(
        &mut self,
        c: &Cluster,
        workload: &Workload,
        a: &[String],
        b: &[String],
        leader: &str,
    ) -> Result<Heal> {
        let (mut side_a, mut side_b) = (a.to_vec(), b.to_vec());
        for worker in c.nodes.iter().filter(|n| n.name.starts_with('w')) {
            if self.rng.random_bool(0.5) {
                side_a.push(worker.name.clone());
            } else {
                side_b.push(worker.name.clone());
            }
        }
        workload.record_fault(format!(
            "partition {} | {} (leader {leader})",
            side_a.join(" "),
            side_b.join(" ")
        ));
        let (side_a, side_b): (Vec<&str>, Vec<&str>) = (
            side_a.iter().map(String::as_str).collect(),
            side_b.iter().map(String::as_str).collect(),
        );
        c.hosts()?.partition(&side_a, &side_b)?;
        Ok(Heal::Network)
    }

    /// The faults injected, by kind, how long they were held, and how the
    /// service recovered after their heals.
    fn summary(&self) -> String {
        let total: usize = self.injected.values().sum();
        let kinds: Vec<String> = self
            .injected
            .iter()
            .map(|(kind, n)| format!("{n} × {kind:?}"))
            .collect();
        let mut back: Vec<Duration> = self
            .recoveries
            .iter()
            .filter(|(_, r)| r.disturbed)
            .filter_map(|(_, r)| r.both())
            .collect();
        back.sort();
        let disturbed: Vec<String> = self
            .recoveries
            .iter()
            .filter(|(_, r)| r.disturbed)
            .map(|(kind, r)| format!("{kind:?} {}", r.brief()))
            .collect();
        format!(
            "nemesis: {total} faults held {:.1} s in all: {}\n\
             service disturbed after {} of {} heals, back in median {} ms, max {} ms: {}",
            self.held.as_secs_f64(),
            kinds.join(", "),
            disturbed.len(),
            self.recoveries.len(),
            back.get(back.len() / 2).map_or(0, Duration::as_millis),
            back.last().map_or(0, Duration::as_millis),
            disturbed.join(", ")
        )
    }
}

/// SIGKILL `name` (`what` says which manager it is, for the history).
fn kill(c: &mut Cluster, workload: &Workload, name: &str, what: &str) -> Heal {
    workload.record_fault(format!("kill -9 {name} ({what})"));
    c.node_mut(name).kill9();
    Heal::Restart(name.to_string())
}

/// SIGSTOP `name`.
fn pause(c: &Cluster, workload: &Workload, name: &str, what: &str) -> Result<Heal> {
    workload.record_fault(format!("SIGSTOP {name} ({what})"));
    c.node(name).pause()?;
    Ok(Heal::Resume(name.to_string()))
}

/// Ends a fault and records that on the history's clock.
fn apply_heal(c: &mut Cluster, workload: &Workload, heal: Heal) -> Result<()> {
    match heal {
        Heal::Restart(name) => {
            workload.record_fault(format!("restart {name} from its data dir"));
            c.node_mut(&name)
                .start()
                .with_context(|| format!("restarting {name}\n{}", c.report()))
        }
        Heal::Resume(name) => {
            workload.record_fault(format!("SIGCONT {name}"));
            c.node(&name).resume()
        }
        Heal::Network => {
            workload.record_fault("heal the network");
            c.hosts()?.heal_all()
        }
    }
}

/// Makes sure no fault is left in force (every daemon running, none paused,
/// no network fault) and returns when that was so: the last heal.
fn heal_everything(c: &mut Cluster, workload: &Workload) -> Result<Instant> {
    c.hosts()?.heal_all()?;
    for node in &mut c.nodes {
        if !node.is_running() {
            node.start()?;
        } else if node.is_paused() {
            node.resume()?;
        }
    }
    workload.record_fault("everything healed");
    Ok(Instant::now())
}

/// The node that leads, as the leader lists it through any manager that
/// answers; waits up to [`LEADER_WAIT`] for one.
fn wait_leader(c: &Cluster) -> Result<String> {
    let mut leader = String::new();
    wait_until(LEADER_WAIT, || {
        for m in c.manager_names() {
            let Ok(views) = c.node(&m).node_views() else {
                continue;
            };
            let name = views
                .iter()
                .find(|v| v.manager_status == "Leader")
                .and_then(|v| v.node.as_ref()?.description.as_ref())
                .map(|d| d.hostname.clone());
            if let Some(name) = name {
                leader = name;
                return Ok(true);
            }
        }
        Ok(false)
    })
    .with_context(|| format!("no leader within {LEADER_WAIT:?}\n{}", c.report()))?;
    Ok(leader)
}

fn task_state(t: &Task) -> i32 {
    t.status.as_ref().map_or(0, |s| s.state)
}

/// Whether the service has exactly its replicas meant to run, all RUNNING,
/// as the first manager that answers says.
fn service_converged(c: &Cluster) -> Result<bool> {
    let mut last_error = None;
    for m in c.manager_names() {
        match c.node(&m).tasks(SERVICE) {
            Ok(tasks) => {
                let meant: Vec<&Task> = tasks
                    .iter()
                    .filter(|t| t.desired_state <= TaskState::Running as i32)
                    .collect();
                let running = meant
                    .iter()
                    .filter(|t| task_state(t) == TaskState::Running as i32)
                    .count();
                return Ok(meant.len() == REPLICAS && running == REPLICAS);
            }
            Err(e) => last_error = Some(e),
        }
    }
    match last_error {
        Some(e) => Err(e),
        None => bail!("no manager to ask"),
    }
}

/// The service's processes running on the machine.
fn task_processes() -> usize {
    let cmd = format!("/bin/sleep {TASK_MARKER}");
    processes().iter().filter(|(_, c)| *c == cmd).count()
}

/// How long after a heal the service converged, in the store and as
/// processes (`None`: not within the time watched).
struct Convergence {
    /// Whether the first look after the heal found it not converged.
    disturbed: bool,
    store: Option<Duration>,
    processes: Option<Duration>,
    /// How long it was watched.
    watched: Duration,
}

impl Convergence {
    /// When both had converged, if they did.
    fn both(&self) -> Option<Duration> {
        Some(self.store?.max(self.processes?))
    }

    fn within(&self, max: Duration) -> bool {
        self.both().is_some_and(|t| t <= max)
    }

    fn ensure_within(&self, max: Duration, c: &Cluster) -> Result<()> {
        ensure!(
            self.within(max),
            "the service was not back at {REPLICAS} running tasks within {max:?} of the last heal: \
             {self}\n{}",
            c.report()
        );
        Ok(())
    }

    /// "1234 ms", or "not back".
    fn brief(&self) -> String {
        match self.both() {
            Some(t) => format!("{} ms", t.as_millis()),
            None => "not back".to_string(),
        }
    }
}

impl std::fmt::Display for Convergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |t: Option<Duration>| match t {
            Some(t) => format!("{} ms", t.as_millis()),
            None => format!("not within {} ms", self.watched.as_millis()),
        };
        write!(
            f,
            "{REPLICAS} tasks RUNNING in the store in {}, exactly {REPLICAS} task processes in {}",
            show(self.store),
            show(self.processes)
        )
    }
}

/// Polls until the service has converged in the store and as processes,
/// or `watch` has passed since `since`.
fn measure_convergence(c: &Cluster, since: Instant, watch: Duration) -> Convergence {
    let mut result = Convergence {
        disturbed: false,
        store: None,
        processes: None,
        watched: watch,
    };
    let mut first = true;
    while since.elapsed() < watch {
        if result.store.is_none() && service_converged(c).unwrap_or(false) {
            result.store = Some(since.elapsed());
        }
        if result.processes.is_none() && task_processes() == REPLICAS {
            result.processes = Some(since.elapsed());
        }
        if result.both().is_some() {
            break;
        }
        result.disturbed |= first;
        first = false;
        std::thread::sleep(CONVERGE_POLL);
    }
    result.disturbed |= result.both().is_none();
    result
}

/// Waits until every manager has applied the same last index (the clients
/// have stopped, so only the cluster's own writes still come); returns how
/// long that took and the index.
fn managers_caught_up(c: &Cluster) -> Result<(Duration, u64)> {
    let started = Instant::now();
    let mut versions = BTreeMap::new();
    wait_until(CATCH_UP_WAIT, || {
        versions.clear();
        for m in c.manager_names() {
            let version = c.node(&m).local_info()?.store_version;
            versions.insert(m, version);
        }
        let first = versions.values().next().copied();
        Ok(versions.values().all(|v| Some(*v) == first))
    })
    .with_context(|| {
        format!(
            "the managers did not reach the same applied index within {CATCH_UP_WAIT:?}: \
             {versions:?}\n{}",
            c.report()
        )
    })?;
    let version = versions.values().next().copied().unwrap_or_default();
    Ok((started.elapsed(), version))
}

/// The history is linearizable, lost no acknowledged write, and has enough
/// acknowledged operations to mean something.
fn ensure_clean(report: &Report) -> Result<()> {
    ensure!(report.violations() == 0, "violations:\n{report}");
    ensure!(report.lost_writes.is_empty(), "lost writes:\n{report}");
    ensure!(report.is_clean(), "not clean:\n{report}");
    ensure!(
        report.counts.ok >= OK_OPERATIONS_MIN,
        "too few operations succeeded to mean anything:\n{report}"
    );
    Ok(())
}

/// Copies every daemon's log to `RSWARM_CHAOS_LOGS`, if set.
fn keep_logs(c: &Cluster) -> Result<()> {
    let Some(dir) = std::env::var_os("RSWARM_CHAOS_LOGS") else {
        return Ok(());
    };
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot make RSWARM_CHAOS_LOGS={}", dir.display()))?;
    for node in &c.nodes {
        let to = dir.join(format!("{}.log", node.name));
        std::fs::copy(node.log_path(), &to)
            .with_context(|| format!("cannot copy {}'s log to {}", node.name, to.display()))?;
    }
    println!("daemon logs kept in {}", dir.display());
    Ok(())
}

/// No daemon log holds a panic.
fn ensure_no_panics(c: &Cluster) -> Result<()> {
    let mut panics = Vec::new();
    for node in &c.nodes {
        let log = std::fs::read_to_string(node.log_path()).unwrap_or_default();
        panics.extend(
            log.lines()
                .filter(|l| l.contains("panicked at"))
                .map(|l| format!("{}: {l}", node.name)),
        );
    }
    ensure!(
        panics.is_empty(),
        "daemons panicked:\n{}",
        panics.join("\n")
    );
    Ok(())
}
