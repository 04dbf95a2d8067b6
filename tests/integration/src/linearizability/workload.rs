//! Clients that drive registers through the real control API and record a
//! [`History`]: each register is a config object whose data is the value,
//! and whose `meta.version` (the Raft index of its last write) makes
//! `UpdateConfig` a compare-and-set.
//!
//! Operations, and why the model is exact:
//! - **read** = `GetConfig`: returns (value, version).
//! - **cas(expected, new)** = `UpdateConfig` with the version the client last
//!   saw together with `expected`. The store applies it iff the config is
//!   still at that version. Versions are Raft indexes, so each names exactly
//!   one write, and every write writes a fresh value, so "still at that
//!   version" is "still holds `expected`".
//!
//! There is no blind write in this API: a "write" is a read followed by a
//! cas of what was read, recorded as the two operations they are.
//!
//! Each client is bound to one manager's unix socket (client `i` to
//! endpoint `i mod n`), so clients on followers exercise forwarding to the
//! leader. Every call is bounded by `call_timeout`; a call that runs out is
//! `Info`. After `stop`, a final read of every register (through any
//! manager that answers) gives the lost-write check its final values.
//!
//! **Invariant:** the history records what the client knew, classified by
//! `classify_error`; a client forgets what it knew of a register after any
//! failed or unknown write to it, and reads it again before its next cas.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rswarm_proto::control_client::ControlClient;
use rswarm_proto::{
    Annotations, Config, ConfigSpec, CreateConfigRequest, GetConfigRequest, UpdateConfigRequest,
};
use tonic::transport::Channel;

use super::classify::classify_error;
use super::history::{
    Fault, History, Op, Operation, Outcome, UNREADABLE_VALUE, VALUE_CLIENT_STRIDE, Value,
};

/// Per-call timeout by default: just above the manager's own 5 s request
/// bound, so the manager usually answers first and says why.
pub const CALL_TIMEOUT_DEFAULT: Duration = Duration::from_secs(6);

/// Operations one client runs at most; keeps a long soak's history (and
/// the checker's work) bounded, and values below the client stride.
pub const OPERATIONS_PER_CLIENT_MAX: u64 = 200_000;
const _: () = assert!(OPERATIONS_PER_CLIENT_MAX < VALUE_CLIENT_STRIDE);

/// Pause after a failed or unknown call, so a client bound to a dead
/// manager does not spin on connection errors.
const ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// How long `start` keeps trying to create the registers, and `stop` to
/// read them back, through any manager (a cluster electing a leader, or
/// healing, answers well within this).
pub const SETUP_WAIT_MAX: Duration = Duration::from_secs(30);

/// Pause between setup or final-read attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Every register's value before the first operation.
pub const INITIAL_VALUE: Value = 0;

/// Worker threads of the workload's runtime: clients spend their time
/// waiting on the cluster, and the machine is shared.
const RUNTIME_THREADS: usize = 2;

/// One manager the clients can call: a daemon's unix socket.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// A name for reports ("m1").
    pub name: String,
    /// The daemon's socket (`<run dir>/rswarm.sock`).
    pub socket: PathBuf,
}

/// What a workload runs.
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    /// Managers; client `i` uses endpoint `i mod n`.
    pub endpoints: Vec<Endpoint>,
    /// Concurrent clients.
    pub clients: usize,
    /// Registers (config objects); few registers make more contention.
    pub registers: usize,
    /// Share of reads among operations, in percent (the rest are cas).
    pub read_percent: u32,
    /// Bound on every call.
    pub call_timeout: Duration,
    /// Seed of the clients' choices (keys, reads or writes).
    pub seed: u64,
}

impl WorkloadConfig {
    /// 4 clients on 3 registers, half reads, over `endpoints`.
    pub fn new(endpoints: Vec<Endpoint>) -> Self {
        Self {
            endpoints,
            clients: 4,
            registers: 3,
            read_percent: 50,
            call_timeout: CALL_TIMEOUT_DEFAULT,
            seed: 1,
        }
    }
}

/// A register: a config's name and ID.
#[derive(Clone, Debug)]
struct Register {
    name: String,
    id: String,
}

/// What every client shares.
struct Shared {
    start: Instant,
    stop: AtomicBool,
    registers: Vec<Register>,
    call_timeout: Duration,
    read_percent: u32,
}

impl Shared {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }
}

/// A running workload. Drive it from synchronous test code: it owns a
/// tokio runtime (so it must not be created or dropped inside one).
pub struct Workload {
    runtime: tokio::runtime::Runtime,
    shared: Arc<Shared>,
    clients: Vec<tokio::task::JoinHandle<Vec<Operation>>>,
    history: History,
    faults: Mutex<Vec<Fault>>,
    endpoints: Vec<Endpoint>,
}

impl Workload {
    /// Creates the registers (value [`INITIAL_VALUE`]) through the first
    /// manager that answers, then starts the clients.
    pub fn start(config: WorkloadConfig) -> Result<Self> {
        if config.endpoints.is_empty() || config.clients == 0 || config.registers == 0 {
            bail!("a workload needs at least one endpoint, one client and one register");
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(RUNTIME_THREADS)
            .enable_all()
            .build()?;
        let start = Instant::now();
        let mut rng = StdRng::seed_from_u64(config.seed);
        let run = run_id();
        let registers = runtime.block_on(create_registers(&config, run, start))?;
        let mut history = History::new();
        for r in &registers {
            history.set_initial(r.name.clone(), INITIAL_VALUE);
        }
        let shared = Arc::new(Shared {
            start,
            stop: AtomicBool::new(false),
            registers,
            call_timeout: config.call_timeout,
            read_percent: config.read_percent.min(100),
        });
        let mut clients = Vec::with_capacity(config.clients);
        for idx in 0..config.clients {
            let endpoint = &config.endpoints[idx % config.endpoints.len()];
            let label = format!("c{idx}@{}", endpoint.name);
            let client_idx = history.add_client(label);
            let (socket, shared, seed) = (endpoint.socket.clone(), shared.clone(), rng.random());
            // The channel needs the runtime, so the client is made inside it.
            clients.push(
                runtime.spawn(
                    async move { Client::new(client_idx, &socket, shared, seed).run().await },
                ),
            );
        }
        Ok(Self {
            runtime,
            shared,
            clients,
            history,
            faults: Mutex::new(Vec::new()),
            endpoints: config.endpoints,
        })
    }

    /// Time since the workload started, on the history's clock.
    pub fn elapsed(&self) -> Duration {
        self.shared.now()
    }

    /// Records a fault (or a heal) the test injected, now.
    pub fn record_fault(&self, what: impl Into<String>) {
        let fault = Fault {
            at: self.shared.now(),
            what: what.into(),
        };
        if let Ok(mut faults) = self.faults.lock() {
            faults.push(fault);
        }
    }

    /// Stops the clients (each finishes its call in flight, within the call
    /// timeout), reads every register back through any manager that answers
    /// within [`SETUP_WAIT_MAX`], and returns the history.
    pub fn stop(mut self) -> Result<History> {
        self.shared.stop.store(true, Ordering::SeqCst);
        let clients = std::mem::take(&mut self.clients);
        let per_client = self.runtime.block_on(join_clients(clients))?;
        for op in per_client.into_iter().flatten() {
            self.history.push(op);
        }
        let final_client = self.history.add_client("final");
        let finals = self.runtime.block_on(final_reads(
            self.shared.clone(),
            self.endpoints.clone(),
            final_client,
        ));
        for op in finals {
            self.history.push(op);
        }
        if let Ok(faults) = self.faults.lock() {
            for fault in faults.iter() {
                self.history.add_fault(fault.clone());
            }
        }
        self.history.sort_by_invoke();
        Ok(std::mem::take(&mut self.history))
    }
}

/// Names this run's registers apart from any earlier run's on the same
/// cluster (the seed only drives the clients' choices).
fn run_id() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    nanos ^ std::process::id().rotate_left(16)
}

/// Each client's operations, once it has finished.
async fn join_clients(
    clients: Vec<tokio::task::JoinHandle<Vec<Operation>>>,
) -> Result<Vec<Vec<Operation>>> {
    let mut out = Vec::with_capacity(clients.len());
    for client in clients {
        out.push(client.await.context("a workload client panicked")?);
    }
    Ok(out)
}

fn control(socket: &std::path::Path) -> ControlClient<Channel> {
    ControlClient::new(rswarm_pki::unix_channel(socket.to_path_buf()))
}

fn spec(name: &str, value: Value) -> ConfigSpec {
    ConfigSpec {
        annotations: Some(Annotations {
            name: name.to_string(),
            ..Default::default()
        }),
        data: value.to_string().into_bytes(),
    }
}

/// The value and version a config holds.
fn observed(config: Option<&Config>) -> Option<(Value, u64)> {
    let config = config?;
    let version = config.meta.as_ref()?.version;
    let value = config
        .spec
        .as_ref()
        .and_then(|s| std::str::from_utf8(&s.data).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(UNREADABLE_VALUE);
    Some((value, version))
}

/// Why a call gave no answer.
enum CallError {
    Status(tonic::Status),
    Timeout(Duration),
}

impl CallError {
    fn outcome(&self) -> Outcome {
        match self {
            CallError::Status(status) => classify_error(status),
            CallError::Timeout(after) => Outcome::Info {
                reason: format!("no answer within {after:?}"),
            },
        }
    }
}

async fn bounded<T>(
    timeout: Duration,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(resp)) => Ok(resp.into_inner()),
        Ok(Err(status)) => Err(CallError::Status(status)),
        Err(_) => Err(CallError::Timeout(timeout)),
    }
}

async fn create_registers(
    config: &WorkloadConfig,
    run: u32,
    start: Instant,
) -> Result<Vec<Register>> {
    let deadline = start + SETUP_WAIT_MAX;
    let mut out = Vec::with_capacity(config.registers);
    for idx in 0..config.registers {
        let name = format!("lin-{run:08x}-{idx}");
        let id = create_register(config, &name, deadline).await?;
        out.push(Register { name, id });
    }
    Ok(out)
}

/// Creates config `name` holding [`INITIAL_VALUE`], trying each endpoint in
/// turn; a create whose outcome was unknown and that did happen shows up as
/// "already exists" on the retry, and is then found by name.
async fn create_register(config: &WorkloadConfig, name: &str, deadline: Instant) -> Result<String> {
    let mut last_error = String::new();
    for attempt in 0usize.. {
        if Instant::now() >= deadline {
            bail!("cannot create register {name} within {SETUP_WAIT_MAX:?}: {last_error}");
        }
        let endpoint = &config.endpoints[attempt % config.endpoints.len()];
        let mut client = control(&endpoint.socket);
        let request = CreateConfigRequest {
            spec: Some(spec(name, INITIAL_VALUE)),
        };
        match bounded(config.call_timeout, client.create_config(request)).await {
            Ok(resp) => {
                if let Some(id) = resp.config.and_then(|c| c.meta).map(|m| m.id) {
                    return Ok(id);
                }
                last_error = "the answer had no config".to_string();
            }
            Err(CallError::Status(s)) if s.code() == tonic::Code::AlreadyExists => {
                let get = GetConfigRequest {
                    reference: name.to_string(),
                };
                if let Ok(resp) = bounded(config.call_timeout, client.get_config(get)).await
                    && let Some(config) = resp.config
                {
                    if observed(Some(&config)).map(|(v, _)| v) != Some(INITIAL_VALUE) {
                        bail!("register {name} already exists with another value");
                    }
                    return Ok(config.meta.map(|m| m.id).unwrap_or_default());
                }
                last_error = s.message().to_string();
            }
            Err(CallError::Status(s)) => last_error = s.message().to_string(),
            Err(CallError::Timeout(t)) => last_error = format!("no answer within {t:?}"),
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
    bail!("cannot create register {name}")
}

/// Reads every register once, through the first endpoint that answers.
async fn final_reads(
    shared: Arc<Shared>,
    endpoints: Vec<Endpoint>,
    client: usize,
) -> Vec<Operation> {
    let deadline = Instant::now() + SETUP_WAIT_MAX;
    let mut ops = Vec::new();
    for register in &shared.registers {
        for attempt in 0usize.. {
            let endpoint = &endpoints[attempt % endpoints.len()];
            let mut control = control(&endpoint.socket);
            let (op, _) = read(&shared, &mut control, client, register).await;
            let ok = op.outcome.is_ok();
            ops.push(op);
            if ok || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
    ops
}

/// One `GetConfig`, recorded.
async fn read(
    shared: &Shared,
    control: &mut ControlClient<Channel>,
    client: usize,
    register: &Register,
) -> (Operation, Option<(Value, u64)>) {
    let invoke = shared.now();
    let request = GetConfigRequest {
        reference: register.id.clone(),
    };
    let result = bounded(shared.call_timeout, control.get_config(request)).await;
    let complete = shared.now();
    let (outcome, seen) = match result {
        Ok(resp) => match observed(resp.config.as_ref()) {
            Some((value, version)) => (Outcome::Ok { read: Some(value) }, Some((value, version))),
            None => (
                Outcome::Info {
                    reason: "the answer had no config".to_string(),
                },
                None,
            ),
        },
        Err(e) => (e.outcome(), None),
    };
    let op = Operation {
        client,
        key: register.name.clone(),
        op: Op::Read,
        invoke,
        complete,
        outcome,
    };
    (op, seen)
}

/// What a client last saw of a register: its value and that value's
/// version.
#[derive(Clone, Copy)]
struct Known {
    value: Value,
    version: u64,
}

struct Client {
    idx: usize,
    control: ControlClient<Channel>,
    shared: Arc<Shared>,
    rng: StdRng,
    known: Vec<Option<Known>>,
    written: u64,
    ops: Vec<Operation>,
}

impl Client {
    fn new(idx: usize, socket: &std::path::Path, shared: Arc<Shared>, seed: u64) -> Self {
        let registers = shared.registers.len();
        Self {
            idx,
            control: control(socket),
            shared,
            rng: StdRng::seed_from_u64(seed),
            known: vec![None; registers],
            written: 0,
            ops: Vec::new(),
        }
    }

    async fn run(mut self) -> Vec<Operation> {
        while !self.shared.stop.load(Ordering::SeqCst)
            && (self.ops.len() as u64) < OPERATIONS_PER_CLIENT_MAX
        {
            let register = self.rng.random_range(0..self.shared.registers.len());
            let reads = self.rng.random_range(0..100) < self.shared.read_percent;
            let op = match self.known[register] {
                Some(known) if !reads => self.cas(register, known).await,
                _ => self.read(register).await,
            };
            let ok = op.outcome.is_ok();
            self.ops.push(op);
            if !ok {
                tokio::time::sleep(ERROR_BACKOFF).await;
            }
        }
        self.ops
    }

    async fn read(&mut self, register: usize) -> Operation {
        let r = &self.shared.registers[register];
        let (op, seen) = read(&self.shared, &mut self.control, self.idx, r).await;
        self.known[register] = seen.map(|(value, version)| Known { value, version });
        op
    }

    /// A fresh value no other write writes.
    fn fresh_value(&mut self) -> Value {
        self.written += 1;
        (self.idx as Value + 1) * VALUE_CLIENT_STRIDE + self.written
    }

    async fn cas(&mut self, register: usize, known: Known) -> Operation {
        let new = self.fresh_value();
        let r = self.shared.registers[register].clone();
        let request = UpdateConfigRequest {
            config_id: r.id.clone(),
            version: known.version,
            spec: Some(spec(&r.name, new)),
        };
        let invoke = self.shared.now();
        let result = bounded(
            self.shared.call_timeout,
            self.control.update_config(request),
        )
        .await;
        let complete = self.shared.now();
        let outcome = match result {
            Ok(resp) => {
                // The answer is the config as the leader holds it after the
                // write, possibly already overwritten: a consistent (value,
                // version) pair to base the next cas on either way.
                self.known[register] =
                    observed(resp.config.as_ref()).map(|(value, version)| Known { value, version });
                Outcome::Ok { read: None }
            }
            Err(e) => {
                self.known[register] = None;
                e.outcome()
            }
        };
        Operation {
            client: self.idx,
            key: r.name,
            op: Op::Cas {
                expected: known.value,
                new,
            },
            invoke,
            complete,
            outcome,
        }
    }
}
