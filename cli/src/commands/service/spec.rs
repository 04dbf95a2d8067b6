//! From flags to a `ServiceSpec`: `service create` builds one, `service
//! update` changes the one it read.
//!
//! Owns: the clap structs of both commands' spec flags, the mapping of each
//! flag to its proto field, the `--*-add`/`--*-rm` list edits, and the checks
//! that need more than one flag (`--mode global` with `--replicas`,
//! reservations above limits, a port published twice).
//! Does not own: parsing one value (`values.rs`) or defaults: a flag not
//! given leaves its field unset and the manager fills it in.
//!
//! **Invariant:** building and editing are pure functions of the flags and
//! the spec read, so `update` can be retried on a version conflict by
//! applying the same flags to a fresh read.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Result, bail};
use rswarm_proto::service_spec::Mode;
use rswarm_proto::*;

use super::values;

/// Which runtime runs the tasks (`TaskSpec.driver`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DriverFlag {
    /// An OCI container from IMAGE.
    Oci,
    /// A plain process on the host; no image.
    Process,
}

impl DriverFlag {
    /// The name the proto and the agents use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Oci => "oci",
            Self::Process => "process",
        }
    }
}

/// `--mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeFlag {
    /// A fixed number of tasks (`--replicas`).
    Replicated,
    /// One task on every eligible node.
    Global,
}

/// `--restart-condition`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RestartConditionFlag {
    /// Never restart.
    None,
    /// Restart when the task exits with an error.
    OnFailure,
    /// Restart whenever the task stops.
    Any,
}

/// `--update-failure-action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FailureActionFlag {
    /// Stop the update and wait for a person.
    Pause,
    /// Go on with the next tasks.
    Continue,
    /// Go back to the previous spec.
    Rollback,
}

/// `--rollback-failure-action`: a rollback cannot roll back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RollbackFailureActionFlag {
    /// Stop the rollback and wait for a person.
    Pause,
    /// Go on with the next tasks.
    Continue,
}

/// `--update-order`/`--rollback-order`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OrderFlag {
    /// Stop the old task before its replacement starts.
    StopFirst,
    /// Start the replacement, then stop the old task.
    StartFirst,
}

/// Flags that set one field each, shared by `create` and `update`.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct FieldFlags {
    /// Number of tasks (replicated mode only).
    #[arg(long, value_parser = values::replicas, allow_hyphen_values = true)]
    pub replicas: Option<u64>,
    /// Most tasks of this service on one node (0: no limit).
    #[arg(long, visible_alias = "replicas-max-per-node", value_parser = values::max_replicas, allow_hyphen_values = true)]
    pub max_replicas: Option<u64>,
    /// Even out the spread of this service's tasks, with its update
    /// policy, whenever a node joins or returns (swarm never does).
    #[arg(long, value_name = "BOOL")]
    pub rebalance_on_join: Option<bool>,
    /// CPUs the scheduler sets aside for each task, e.g. 0.5.
    #[arg(long, value_name = "CPUS", value_parser = values::nano_cpus, allow_hyphen_values = true)]
    pub reserve_cpu: Option<i64>,
    /// Memory the scheduler sets aside for each task, e.g. 512M.
    #[arg(long, value_name = "BYTES", value_parser = values::memory_bytes, allow_hyphen_values = true)]
    pub reserve_memory: Option<i64>,
    /// Most CPUs a task may use, e.g. 1.5.
    #[arg(long, value_name = "CPUS", value_parser = values::nano_cpus, allow_hyphen_values = true)]
    pub limit_cpu: Option<i64>,
    /// Most memory a task may use, e.g. 1G.
    #[arg(long, value_name = "BYTES", value_parser = values::memory_bytes, allow_hyphen_values = true)]
    pub limit_memory: Option<i64>,
    /// Most processes a task may run (0: no limit).
    #[arg(long, value_name = "N", value_parser = values::pids_limit, allow_hyphen_values = true)]
    pub limit_pids: Option<i64>,
    /// Working directory of the command.
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    /// User to run as: name or uid, optionally :group or :gid.
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// When to restart a task that stopped: none, on-failure or any.
    #[arg(long, value_enum)]
    pub restart_condition: Option<RestartConditionFlag>,
    /// Wait between a task stopping and its replacement starting (e.g. 5s).
    #[arg(long, value_name = "DURATION", value_parser = values::duration_ms, allow_hyphen_values = true)]
    pub restart_delay: Option<u64>,
    /// Restarts before giving up (0: no limit), per slot.
    #[arg(long, value_name = "N", value_parser = values::max_attempts, allow_hyphen_values = true)]
    pub restart_max_attempts: Option<u64>,
    /// Window the restarts are counted in (e.g. 2m; 0: the slot's life).
    #[arg(long, value_name = "DURATION", value_parser = values::duration_ms, allow_hyphen_values = true)]
    pub restart_window: Option<u64>,
    /// Tasks updated at once (0: all at once).
    #[arg(long, value_name = "N", value_parser = values::parallelism, allow_hyphen_values = true)]
    pub update_parallelism: Option<u64>,
    /// Pause between update batches (e.g. 10s).
    #[arg(long, value_name = "DURATION", value_parser = values::duration_ms, allow_hyphen_values = true)]
    pub update_delay: Option<u64>,
    /// What to do when an updated task fails: pause, continue or rollback.
    #[arg(long, value_enum)]
    pub update_failure_action: Option<FailureActionFlag>,
    /// How long each updated task is watched for failure (e.g. 5s).
    #[arg(long, value_name = "DURATION", value_parser = values::duration_ms, allow_hyphen_values = true)]
    pub update_monitor: Option<u64>,
    /// Fraction of updated tasks that may fail before the failure action.
    #[arg(long, value_name = "RATIO", value_parser = values::failure_ratio, allow_hyphen_values = true)]
    pub update_max_failure_ratio: Option<f32>,
    /// stop-first or start-first.
    #[arg(long, value_enum)]
    pub update_order: Option<OrderFlag>,
    /// Tasks rolled back at once (0: all at once).
    #[arg(long, value_name = "N", value_parser = values::parallelism, allow_hyphen_values = true)]
    pub rollback_parallelism: Option<u64>,
    /// Pause between rollback batches.
    #[arg(long, value_name = "DURATION", value_parser = values::duration_ms, allow_hyphen_values = true)]
    pub rollback_delay: Option<u64>,
    /// What to do when a rolled-back task fails: pause or continue.
    #[arg(long, value_enum)]
    pub rollback_failure_action: Option<RollbackFailureActionFlag>,
    /// How long each rolled-back task is watched for failure.
    #[arg(long, value_name = "DURATION", value_parser = values::duration_ms, allow_hyphen_values = true)]
    pub rollback_monitor: Option<u64>,
    /// Fraction of rolled-back tasks that may fail before the failure action.
    #[arg(long, value_name = "RATIO", value_parser = values::failure_ratio, allow_hyphen_values = true)]
    pub rollback_max_failure_ratio: Option<f32>,
    /// stop-first or start-first.
    #[arg(long, value_enum)]
    pub rollback_order: Option<OrderFlag>,
    /// Signal that asks a task to stop (e.g. SIGTERM, SIGINT, 15).
    #[arg(long, value_name = "SIGNAL", value_parser = values::stop_signal)]
    pub stop_signal: Option<String>,
    /// Wait between the stop signal and SIGKILL (e.g. 10s).
    #[arg(long, value_name = "DURATION", value_parser = values::duration_ms, allow_hyphen_values = true)]
    pub stop_grace_period: Option<u64>,
    #[command(flatten)]
    pub health: super::health::HealthFlags,
}

/// The six flags of one update policy (`--update-*` or `--rollback-*`).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct PolicyFlags {
    parallelism: Option<u64>,
    delay_ms: Option<u64>,
    failure_action: Option<UpdateFailureAction>,
    monitor_ms: Option<u64>,
    max_failure_ratio: Option<f32>,
    order: Option<OrderFlag>,
}

impl PolicyFlags {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Writes the given flags into `config`, creating it when needed.
    fn apply(&self, config: &mut Option<UpdateConfig>) {
        if self.is_empty() {
            return;
        }
        let config = config.get_or_insert_with(Default::default);
        if let Some(n) = self.parallelism {
            config.parallelism = Some(n);
        }
        if let Some(ms) = self.delay_ms {
            config.delay_ms = ms;
        }
        if let Some(action) = self.failure_action {
            config.failure_action = action as i32;
        }
        if let Some(ms) = self.monitor_ms {
            config.monitor_ms = Some(ms);
        }
        if let Some(ratio) = self.max_failure_ratio {
            config.max_failure_ratio = ratio;
        }
        if let Some(order) = self.order {
            config.order = match order {
                OrderFlag::StopFirst => UpdateOrder::StopFirst,
                OrderFlag::StartFirst => UpdateOrder::StartFirst,
            } as i32;
        }
    }
}

impl FieldFlags {
    /// Writes every given flag into `spec`; flags not given leave their
    /// fields as they are.
    pub fn apply(&self, spec: &mut ServiceSpec) -> Result<()> {
        if let Some(n) = self.replicas {
            set_replicas(spec, n)?;
        }
        let task = spec.task.get_or_insert_with(Default::default);
        self.apply_container(task.container.get_or_insert_with(Default::default));
        self.health
            .apply(task.container.get_or_insert_with(Default::default))?;
        self.apply_resources(task);
        self.apply_restart(task);
        if let Some(n) = self.max_replicas {
            task.placement
                .get_or_insert_with(Default::default)
                .max_replicas = n;
        }
        if let Some(on) = self.rebalance_on_join {
            spec.rebalance = on;
        }
        self.update_policy().apply(&mut spec.update);
        self.rollback_policy().apply(&mut spec.rollback);
        Ok(())
    }

    fn apply_container(&self, container: &mut ContainerSpec) {
        if let Some(dir) = &self.workdir {
            container.dir.clone_from(dir);
        }
        if let Some(user) = &self.user {
            container.user.clone_from(user);
        }
        if let Some(signal) = &self.stop_signal {
            container.stop_signal.clone_from(signal);
        }
        if let Some(ms) = self.stop_grace_period {
            container.stop_grace_period_ms = Some(ms);
        }
    }

    fn apply_resources(&self, task: &mut TaskSpec) {
        let reserve = (self.reserve_cpu, self.reserve_memory);
        let limit = (self.limit_cpu, self.limit_memory);
        if reserve == (None, None) && limit == (None, None) && self.limit_pids.is_none() {
            return;
        }
        let resources = task.resources.get_or_insert_with(Default::default);
        set_resources(&mut resources.reservations, reserve);
        set_resources(&mut resources.limits, limit);
        if let Some(pids) = self.limit_pids {
            resources.pids_limit = pids;
        }
    }

    fn apply_restart(&self, task: &mut TaskSpec) {
        let given = self.restart_condition.is_some()
            || self.restart_delay.is_some()
            || self.restart_max_attempts.is_some()
            || self.restart_window.is_some();
        if !given {
            return;
        }
        let restart = task.restart.get_or_insert_with(Default::default);
        if let Some(condition) = self.restart_condition {
            restart.condition = match condition {
                RestartConditionFlag::None => RestartCondition::None,
                RestartConditionFlag::OnFailure => RestartCondition::OnFailure,
                RestartConditionFlag::Any => RestartCondition::Any,
            } as i32;
        }
        if let Some(ms) = self.restart_delay {
            restart.delay_ms = Some(ms);
        }
        if let Some(n) = self.restart_max_attempts {
            restart.max_attempts = n;
        }
        if let Some(ms) = self.restart_window {
            restart.window_ms = ms;
        }
    }

    fn update_policy(&self) -> PolicyFlags {
        PolicyFlags {
            parallelism: self.update_parallelism,
            delay_ms: self.update_delay,
            failure_action: self.update_failure_action.map(|a| match a {
                FailureActionFlag::Pause => UpdateFailureAction::Pause,
                FailureActionFlag::Continue => UpdateFailureAction::Continue,
                FailureActionFlag::Rollback => UpdateFailureAction::Rollback,
            }),
            monitor_ms: self.update_monitor,
            max_failure_ratio: self.update_max_failure_ratio,
            order: self.update_order,
        }
    }

    fn rollback_policy(&self) -> PolicyFlags {
        PolicyFlags {
            parallelism: self.rollback_parallelism,
            delay_ms: self.rollback_delay,
            failure_action: self.rollback_failure_action.map(|a| match a {
                RollbackFailureActionFlag::Pause => UpdateFailureAction::Pause,
                RollbackFailureActionFlag::Continue => UpdateFailureAction::Continue,
            }),
            monitor_ms: self.rollback_monitor,
            max_failure_ratio: self.rollback_max_failure_ratio,
            order: self.rollback_order,
        }
    }
}

fn set_resources(target: &mut Option<Resources>, (cpus, memory): (Option<i64>, Option<i64>)) {
    if cpus.is_none() && memory.is_none() {
        return;
    }
    let resources = target.get_or_insert_with(Default::default);
    if let Some(nanos) = cpus {
        resources.nano_cpus = nanos;
    }
    if let Some(bytes) = memory {
        resources.memory_bytes = bytes;
    }
}

/// Sets the replica count; refused for a global service.
pub fn set_replicas(spec: &mut ServiceSpec, replicas: u64) -> Result<()> {
    match &mut spec.mode {
        Some(Mode::Replicated(mode)) => mode.replicas = replicas,
        Some(Mode::Global(_)) => bail!("replicas can only be used with replicated mode"),
        None => spec.mode = Some(Mode::Replicated(ReplicatedMode { replicas })),
    }
    Ok(())
}

/// Flags of `service create` beyond the shared ones.
#[derive(Debug, Clone, clap::Args)]
pub struct CreateFlags {
    /// Service name.
    #[arg(long)]
    pub name: Option<String>,
    /// replicated (a fixed number of tasks) or global (one per eligible node).
    #[arg(long, value_enum, default_value_t = ModeFlag::Replicated)]
    pub mode: ModeFlag,
    /// What runs the tasks: container (IMAGE, then its command) or process
    /// (no image: the arguments are the command and its arguments).
    #[arg(long, value_enum, default_value_t = DriverFlag::Oci)]
    pub driver: DriverFlag,
    /// Environment variable, KEY=VALUE, or KEY to pass on this shell's value.
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE", value_parser = values::env_entry)]
    pub env: Vec<String>,
    /// Service label, key=value.
    #[arg(short = 'l', long = "label", value_name = "KEY=VALUE", value_parser = values::label)]
    pub labels: Vec<(String, String)>,
    /// Placement constraint, e.g. node.labels.zone==a (all must hold).
    #[arg(long = "constraint", value_name = "EXPR", value_parser = values::constraint)]
    pub constraints: Vec<String>,
    /// Placement preference, spread=<attribute>, e.g. spread=node.labels.zone.
    #[arg(long = "placement-pref", value_name = "PREF", value_parser = values::placement_pref)]
    pub placement_prefs: Vec<String>,
    /// Publish a port: published=8080,target=80[,protocol=tcp][,mode=host],
    /// or 8080:80[/udp]. Ports are published in host mode (on the nodes
    /// the tasks run on): the routing mesh (mode=ingress) is not available yet.
    #[arg(short = 'p', long = "publish", value_name = "PORT", value_parser = values::port)]
    pub publish: Vec<PortConfig>,
    #[command(flatten)]
    pub fields: FieldFlags,
    #[command(flatten)]
    pub container: super::container_flags::ContainerFlags,
    #[command(flatten)]
    pub files: super::files_flags::CreateFileFlags,
    #[command(flatten)]
    pub resolve: super::image_resolve::ResolveFlags,
    /// IMAGE [COMMAND] [ARG...], or with --driver process: COMMAND [ARG...].
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "IMAGE"
    )]
    pub image_and_command: Vec<String>,
}

/// The spec `service create` sends.
pub fn create_spec(flags: &CreateFlags) -> Result<ServiceSpec> {
    let (image, args) = match flags.driver {
        DriverFlag::Oci => {
            let (image, rest) = flags
                .image_and_command
                .split_first()
                .ok_or_else(|| anyhow::anyhow!("an image is required"))?;
            (image.clone(), rest.to_vec())
        }
        DriverFlag::Process => (String::new(), flags.image_and_command.clone()),
    };
    let mut env = Vec::new();
    merge_env(&mut env, &[], &flags.env);
    let mut spec = ServiceSpec {
        annotations: Some(Annotations {
            name: flags.name.clone().unwrap_or_default(),
            labels: flags.labels.iter().cloned().collect(),
        }),
        task: Some(TaskSpec {
            container: Some(ContainerSpec {
                image,
                args,
                env,
                ..Default::default()
            }),
            driver: flags.driver.name().to_string(),
            ..Default::default()
        }),
        mode: Some(match flags.mode {
            ModeFlag::Replicated => Mode::Replicated(ReplicatedMode { replicas: 1 }),
            ModeFlag::Global => Mode::Global(GlobalMode {}),
        }),
        ..Default::default()
    };
    edit_placement(
        &mut spec,
        &[],
        &flags.constraints,
        &[],
        &flags.placement_prefs,
    );
    if !flags.publish.is_empty() {
        // As given: two ports on one published port are refused below,
        // not merged the way `--publish-add` replaces one.
        spec.endpoint = Some(EndpointSpec {
            ports: flags.publish.clone(),
        });
    }
    flags.fields.apply(&mut spec)?;
    flags.container.apply(container_mut(&mut spec));
    flags.files.apply(&mut spec);
    validate(&spec)?;
    Ok(spec)
}

/// `--args` value: a command line split like a shell would.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine(pub Vec<String>);

fn command_line(raw: &str) -> values::ValueResult<CommandLine> {
    values::shell_words(raw).map(CommandLine)
}

/// Flags of `service update` beyond the shared ones.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct UpdateFlags {
    /// New image (oci driver).
    #[arg(long)]
    pub image: Option<String>,
    /// New command arguments, one string split like a shell would:
    /// --args "sleep 600". With --driver process, the command itself.
    #[arg(long, value_name = "COMMAND", value_parser = command_line, allow_hyphen_values = true)]
    pub args: Option<CommandLine>,
    /// Add or change an environment variable (KEY=VALUE, or KEY from this shell).
    #[arg(long = "env-add", value_name = "KEY=VALUE", value_parser = values::env_entry)]
    pub env_add: Vec<String>,
    /// Remove an environment variable.
    #[arg(long = "env-rm", value_name = "KEY", value_parser = values::env_key)]
    pub env_rm: Vec<String>,
    /// Add or change a service label (key=value).
    #[arg(long = "label-add", value_name = "KEY=VALUE", value_parser = values::label)]
    pub label_add: Vec<(String, String)>,
    /// Remove a service label.
    #[arg(long = "label-rm", value_name = "KEY")]
    pub label_rm: Vec<String>,
    /// Add a placement constraint.
    #[arg(long = "constraint-add", value_name = "EXPR", value_parser = values::constraint)]
    pub constraint_add: Vec<String>,
    /// Remove a placement constraint (as it was written).
    #[arg(long = "constraint-rm", value_name = "EXPR", value_parser = values::constraint)]
    pub constraint_rm: Vec<String>,
    /// Add a placement preference (spread=<attribute>).
    #[arg(long = "placement-pref-add", value_name = "PREF", value_parser = values::placement_pref)]
    pub placement_pref_add: Vec<String>,
    /// Remove a placement preference.
    #[arg(long = "placement-pref-rm", value_name = "PREF", value_parser = values::placement_pref)]
    pub placement_pref_rm: Vec<String>,
    /// Publish a port (as --publish of create; host mode only for now).
    #[arg(long = "publish-add", value_name = "PORT", value_parser = values::port)]
    pub publish_add: Vec<PortConfig>,
    /// Stop publishing a port: TARGET[/PROTOCOL] or PUBLISHED:TARGET.
    #[arg(long = "publish-rm", value_name = "PORT", value_parser = values::port_to_remove)]
    pub publish_rm: Vec<PortConfig>,
    /// Replace the tasks even if nothing changed.
    #[arg(long)]
    pub force: bool,
    /// Even out the spread of the tasks over the nodes, with the update policy.
    #[arg(long)]
    pub rebalance: bool,
    /// Go back to the spec before the last update (no other change allowed).
    #[arg(long)]
    pub rollback: bool,
    #[command(flatten)]
    pub fields: FieldFlags,
    #[command(flatten)]
    pub container: super::container_flags::ContainerUpdateFlags,
    #[command(flatten)]
    pub files: super::files_flags::UpdateFileFlags,
    #[command(flatten)]
    pub resolve: super::image_resolve::ResolveFlags,
}

impl UpdateFlags {
    /// Applies every change to `spec` (removals before additions, as Docker does).
    pub fn apply(&self, spec: &mut ServiceSpec) -> Result<()> {
        self.fields.apply(spec)?;
        let driver = spec
            .task
            .as_ref()
            .map(|t| t.driver.clone())
            .unwrap_or_default();
        let container = container_mut(spec);
        if let Some(image) = &self.image {
            if driver == DriverFlag::Process.name() {
                bail!(
                    "--image cannot be used with the process driver: set the command with --args"
                );
            }
            if image.trim().is_empty() {
                bail!("the image cannot be empty");
            }
            container.image.clone_from(image);
        }
        if let Some(CommandLine(args)) = &self.args {
            container.args.clone_from(args);
        }
        merge_env(&mut container.env, &self.env_rm, &self.env_add);
        self.container.apply(container);
        let labels = &mut spec.annotations.get_or_insert_with(Default::default).labels;
        for key in &self.label_rm {
            labels.remove(key);
        }
        labels.extend(self.label_add.iter().cloned());
        edit_placement(
            spec,
            &self.constraint_rm,
            &self.constraint_add,
            &self.placement_pref_rm,
            &self.placement_pref_add,
        );
        edit_ports(spec, &self.publish_rm, &self.publish_add);
        self.files.apply(spec);
        if self.force {
            let task = spec.task.get_or_insert_with(Default::default);
            task.force_update = task.force_update.wrapping_add(1);
        }
        validate(spec)
    }

    /// The request that updates `service` (read at its current version).
    pub fn request(&self, service: &Service) -> Result<UpdateServiceRequest> {
        let meta = service.meta.clone().unwrap_or_default();
        let current = service.spec.clone().unwrap_or_default();
        let mut spec = current.clone();
        self.apply(&mut spec)?;
        if self.rollback {
            if spec != current {
                bail!(
                    "--rollback cannot be combined with other changes: roll back first, then update"
                );
            }
            return Ok(UpdateServiceRequest {
                service_id: meta.id,
                version: meta.version,
                spec: None,
                rollback: true,
                rebalance: self.rebalance,
                ..UpdateServiceRequest::default()
            });
        }
        Ok(UpdateServiceRequest {
            service_id: meta.id,
            version: meta.version,
            registry_auth: self.files.auth.registry_auth(&spec)?,
            spec: Some(spec),
            rebalance: self.rebalance,
            no_resolve_image: self.resolve.no_resolve_image,
            ..UpdateServiceRequest::default()
        })
    }
}

fn container_mut(spec: &mut ServiceSpec) -> &mut ContainerSpec {
    spec.task
        .get_or_insert_with(Default::default)
        .container
        .get_or_insert_with(Default::default)
}

fn env_key(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(key, _)| key)
}

/// Removes the `remove` keys, then sets each of `add`, replacing an entry
/// with the same key in place (so the order people wrote stays).
fn merge_env(env: &mut Vec<String>, remove: &[String], add: &[String]) {
    env.retain(|entry| !remove.iter().any(|key| key == env_key(entry)));
    for entry in add {
        match env.iter_mut().find(|e| env_key(e) == env_key(entry)) {
            Some(existing) => existing.clone_from(entry),
            None => env.push(entry.clone()),
        }
    }
}

fn edit_placement(
    spec: &mut ServiceSpec,
    constraint_rm: &[String],
    constraint_add: &[String],
    pref_rm: &[String],
    pref_add: &[String],
) {
    let given = [constraint_rm, constraint_add, pref_rm, pref_add]
        .iter()
        .any(|list| !list.is_empty());
    if !given {
        return;
    }
    let task = spec.task.get_or_insert_with(Default::default);
    let placement = task.placement.get_or_insert_with(Default::default);
    placement.constraints.retain(|c| !constraint_rm.contains(c));
    for c in constraint_add {
        if !placement.constraints.contains(c) {
            placement.constraints.push(c.clone());
        }
    }
    placement
        .preferences
        .retain(|p| !pref_rm.contains(&p.spread));
    for spread in pref_add {
        placement.preferences.push(PlacementPreference {
            spread: spread.clone(),
        });
    }
}

/// Whether `port` is the one `removed` names: same target and protocol, and
/// the same published port when `removed` gives one.
fn port_matches(port: &PortConfig, removed: &PortConfig) -> bool {
    port.target_port == removed.target_port
        && port.protocol == removed.protocol
        && (removed.published_port == 0 || port.published_port == removed.published_port)
}

/// Removes ports, then adds ports; an added port replaces one with the same
/// published port and protocol (or the same target, when unpublished).
fn edit_ports(spec: &mut ServiceSpec, remove: &[PortConfig], add: &[PortConfig]) {
    if remove.is_empty() && add.is_empty() {
        return;
    }
    let ports = &mut spec.endpoint.get_or_insert_with(Default::default).ports;
    ports.retain(|p| !remove.iter().any(|r| port_matches(p, r)));
    for new in add {
        ports.retain(|p| {
            let same_published = new.published_port != 0
                && p.published_port == new.published_port
                && p.protocol == new.protocol;
            !same_published && p != new
        });
        ports.push(new.clone());
    }
}

/// Checks that need the whole spec.
pub fn validate(spec: &ServiceSpec) -> Result<()> {
    let task = spec.task.clone().unwrap_or_default();
    let container = task.container.clone().unwrap_or_default();
    if task.driver == DriverFlag::Process.name() && container.args.is_empty() {
        bail!(
            "the process driver needs a command: rswarm service create --driver process [OPTIONS] COMMAND [ARG...]"
        );
    }
    if let Some(resources) = &task.resources {
        check_reservation(resources)?;
    }
    let mut published = BTreeSet::new();
    for port in spec.endpoint.iter().flat_map(|e| &e.ports) {
        if port.published_port == 0 {
            continue;
        }
        if !published.insert((port.published_port, port.protocol)) {
            bail!(
                "port {}/{} is published twice: publish each port once",
                port.published_port,
                protocol_name(port.protocol)
            );
        }
    }
    Ok(())
}

fn check_reservation(resources: &ResourceRequirements) -> Result<()> {
    let reserved = resources.reservations.unwrap_or_default();
    let limit = resources.limits.unwrap_or_default();
    if limit.nano_cpus > 0 && reserved.nano_cpus > limit.nano_cpus {
        bail!(
            "the CPU reservation ({}) is more than the CPU limit ({}): lower --reserve-cpu or raise --limit-cpu",
            values::format_cpus(reserved.nano_cpus),
            values::format_cpus(limit.nano_cpus)
        );
    }
    if limit.memory_bytes > 0 && reserved.memory_bytes > limit.memory_bytes {
        bail!(
            "the memory reservation ({}) is more than the memory limit ({}): lower --reserve-memory or raise --limit-memory",
            values::format_bytes(reserved.memory_bytes),
            values::format_bytes(limit.memory_bytes)
        );
    }
    Ok(())
}

/// "tcp", "udp", "sctp".
pub fn protocol_name(protocol: i32) -> &'static str {
    match PortProtocol::try_from(protocol) {
        Ok(PortProtocol::Udp) => "udp",
        Ok(PortProtocol::Sctp) => "sctp",
        _ => "tcp",
    }
}

/// The wait after a change: `--detach`, `--quiet`, `--timeout`.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct WaitFlags {
    /// Return at once, without waiting for the tasks to converge.
    #[arg(short, long)]
    pub detach: bool,
    /// Wait without showing progress.
    #[arg(short, long)]
    pub quiet: bool,
    /// Stop waiting after this long (the change goes on in the background).
    #[arg(long, value_name = "DURATION", value_parser = values::duration, default_value = "5m")]
    pub timeout: Duration,
}

#[cfg(test)]
mod tests;
