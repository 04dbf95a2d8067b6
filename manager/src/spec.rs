//! Service specs as users write them: validation and defaults.
//!
//! Owns: the rules a [`ServiceSpec`] must follow before it enters the store,
//! and the defaults that make every stored spec explicit (restart delay,
//! update parallelism and monitor, stop grace period). Does not own:
//! placement syntax (`crate::scheduler::constraint` checks constraints and
//! preferences) or what the agent does with a spec.
//!
//! **Invariant:** a spec that passed [`normalize`] has every optional field
//! that has a default set, so the orchestrators and agents never guess.

mod health;

use std::time::Duration;

use rswarm_proto::{
    ContainerSpec, EndpointSpec, PublishMode, ReplicatedMode, ResourceRequirements,
    RestartCondition, RestartPolicy, ServiceSpec, TaskSpec, UpdateConfig, UpdateFailureAction,
    UpdateOrder, service_spec::Mode,
};
use thiserror::Error;

/// Drivers an agent may offer. A spec naming another one is refused at once
/// rather than left pending forever.
pub const DRIVERS: &[&str] = &["oci", "process"];

/// The driver of a spec that names none: containers, as with Docker.
pub const DRIVER_DEFAULT: &str = "oci";

/// Replicas of one service. The store is sized for clusters of about
/// 100,000 tasks; a typo such as `--replicas 10000000` must not try to
/// create ten million tasks.
pub const REPLICAS_MAX: u64 = 200_000;

/// Restart delay when the spec says none (SwarmKit's default).
pub const RESTART_DELAY_DEFAULT: Duration = Duration::from_secs(5);

/// Tasks updated at once when the spec says nothing (SwarmKit's default).
pub const UPDATE_PARALLELISM_DEFAULT: u64 = 1;

/// How long an updated task is watched for failure by default (SwarmKit's).
pub const UPDATE_MONITOR_DEFAULT: Duration = Duration::from_secs(5);

/// Time between the stop signal and SIGKILL by default (Docker's).
pub const STOP_GRACE_DEFAULT: Duration = Duration::from_secs(10);

/// Longest service name: one DNS label, since it becomes a DNS name.
pub const NAME_LEN_MAX: usize = 63;

/// The smallest memory limit that lets a process start at all (Docker
/// refuses limits under 6 MiB too).
pub const MEMORY_LIMIT_MIN: i64 = 6 * 1024 * 1024;

/// Entries in list fields (env, args, labels, constraints, ports): far
/// above real use, low enough that a spec stays small.
pub const LIST_LEN_MAX: usize = 1024;

/// Why a spec was refused. Every message names the field and the fix.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{0}")]
pub struct SpecError(String);

impl SpecError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl From<SpecError> for tonic::Status {
    fn from(e: SpecError) -> Self {
        tonic::Status::invalid_argument(e.0)
    }
}

/// Checks `spec` and fills its defaults. `name_fallback` names a service
/// created without a name.
pub fn normalize(mut spec: ServiceSpec, name_fallback: &str) -> Result<ServiceSpec, SpecError> {
    let annotations = spec.annotations.get_or_insert_with(Default::default);
    if annotations.name.is_empty() {
        annotations.name = name_fallback.to_owned();
    }
    check_name(&annotations.name)?;
    check_labels(&annotations.labels, "service label")?;
    match spec
        .mode
        .get_or_insert(Mode::Replicated(ReplicatedMode { replicas: 1 }))
    {
        Mode::Replicated(r) if r.replicas > REPLICAS_MAX => {
            return Err(SpecError::new(format!(
                "--replicas {} is above the limit of {REPLICAS_MAX}",
                r.replicas
            )));
        }
        _ => {}
    }
    let task = spec.task.get_or_insert_with(Default::default);
    normalize_task(task)?;
    normalize_update(spec.update.get_or_insert_with(Default::default), "update")?;
    let rollback = spec.rollback.get_or_insert_with(Default::default);
    normalize_update(rollback, "rollback")?;
    if rollback.failure_action == UpdateFailureAction::Rollback as i32 {
        return Err(SpecError::new(
            "--rollback-failure-action cannot be rollback: use pause or continue",
        ));
    }
    check_endpoint(spec.endpoint.get_or_insert_with(Default::default))?;
    Ok(spec)
}

/// Checks what may change between two versions of a service's spec.
pub fn check_update(old: &ServiceSpec, new: &ServiceSpec) -> Result<(), SpecError> {
    let global = |s: &ServiceSpec| matches!(s.mode, Some(Mode::Global(_)));
    if global(old) != global(new) {
        return Err(SpecError::new(
            "a service's mode cannot change between replicated and global: \
             remove the service and create it again",
        ));
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), SpecError> {
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    let starts_well = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    if name.len() > NAME_LEN_MAX || !valid_chars || !starts_well {
        return Err(SpecError::new(format!(
            "invalid service name {name:?}: use 1 to {NAME_LEN_MAX} letters, digits, '-' or '_', \
             starting with a letter or digit"
        )));
    }
    Ok(())
}

fn check_labels(
    labels: &std::collections::BTreeMap<String, String>,
    what: &str,
) -> Result<(), SpecError> {
    check_len(labels.len(), what)?;
    if labels.keys().any(|k| k.is_empty() || k.len() > 1024) {
        return Err(SpecError::new(format!(
            "{what} keys must be 1 to 1024 characters long"
        )));
    }
    Ok(())
}

fn check_len(len: usize, what: &str) -> Result<(), SpecError> {
    if len > LIST_LEN_MAX {
        return Err(SpecError::new(format!(
            "{len} {what} entries are above the limit of {LIST_LEN_MAX}"
        )));
    }
    Ok(())
}

fn normalize_task(task: &mut TaskSpec) -> Result<(), SpecError> {
    if task.driver.is_empty() {
        task.driver = DRIVER_DEFAULT.to_owned();
    }
    if !DRIVERS.contains(&task.driver.as_str()) {
        return Err(SpecError::new(format!(
            "unknown driver {:?}: use {}",
            task.driver,
            DRIVERS.join(" or ")
        )));
    }
    let container = task.container.get_or_insert_with(Default::default);
    check_container(container, &task.driver)?;
    check_resources(task.resources.get_or_insert_with(Default::default))?;
    normalize_restart(task.restart.get_or_insert_with(Default::default))?;
    let placement = task.placement.get_or_insert_with(Default::default);
    check_len(placement.constraints.len(), "constraint")?;
    check_len(placement.preferences.len(), "placement preference")?;
    crate::scheduler::validate_placement(placement).map_err(|e| SpecError::new(e.to_string()))?;
    Ok(())
}

fn check_container(c: &mut ContainerSpec, driver: &str) -> Result<(), SpecError> {
    match driver {
        "process" if !c.image.is_empty() => {
            return Err(SpecError::new(format!(
                "the process driver runs a command on the host and takes no image (got {:?}): \
                 give the command and its arguments instead",
                c.image
            )));
        }
        "process" if c.command.is_empty() && c.args.is_empty() => {
            return Err(SpecError::new(
                "the process driver needs a command: rswarm service create --driver process \
                 --name NAME COMMAND [ARG...]",
            ));
        }
        "oci" if c.image.is_empty() => {
            return Err(SpecError::new(
                "a container service needs an image: rswarm service create [OPTIONS] IMAGE \
                 [COMMAND] [ARG...]",
            ));
        }
        _ => {}
    }
    check_len(c.args.len() + c.command.len(), "argument")?;
    check_len(c.env.len(), "env")?;
    for entry in &c.env {
        match entry.split_once('=') {
            Some((key, _)) if !key.is_empty() => {}
            _ => {
                return Err(SpecError::new(format!(
                    "invalid env entry {entry:?}: use KEY=VALUE"
                )));
            }
        }
    }
    check_labels(&c.labels, "container label")?;
    health::check_healthcheck(c.healthcheck.as_ref())?;
    crate::container_spec::check(c).map_err(SpecError::new)?;
    crate::file_refs::check_refs(c, driver)?;
    if !c.stop_signal.is_empty() && signal_number(&c.stop_signal).is_none() {
        return Err(SpecError::new(format!(
            "invalid stop signal {:?}: use a name such as SIGTERM or SIGINT, or a number",
            c.stop_signal
        )));
    }
    c.stop_grace_period_ms
        .get_or_insert(STOP_GRACE_DEFAULT.as_millis() as u64);
    Ok(())
}

/// The number of a signal given as `SIGTERM`, `TERM` or `15`.
pub fn signal_number(signal: &str) -> Option<i32> {
    const NAMES: [(&str, i32); 20] = [
        ("HUP", 1),
        ("INT", 2),
        ("QUIT", 3),
        ("ILL", 4),
        ("TRAP", 5),
        ("ABRT", 6),
        ("BUS", 7),
        ("FPE", 8),
        ("KILL", 9),
        ("USR1", 10),
        ("SEGV", 11),
        ("USR2", 12),
        ("PIPE", 13),
        ("ALRM", 14),
        ("TERM", 15),
        ("CHLD", 17),
        ("CONT", 18),
        ("STOP", 19),
        ("TSTP", 20),
        ("WINCH", 28),
    ];
    if let Ok(n) = signal.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let upper = signal.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    NAMES.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

fn check_resources(r: &mut ResourceRequirements) -> Result<(), SpecError> {
    let limits = r.limits.get_or_insert_with(Default::default);
    let reservations = r.reservations.get_or_insert_with(Default::default);
    if limits.nano_cpus < 0 || reservations.nano_cpus < 0 {
        return Err(SpecError::new(
            "CPU limits and reservations cannot be negative",
        ));
    }
    if limits.memory_bytes < 0 || reservations.memory_bytes < 0 || r.pids_limit < 0 {
        return Err(SpecError::new(
            "memory and pids limits and reservations cannot be negative",
        ));
    }
    if limits.memory_bytes != 0 && limits.memory_bytes < MEMORY_LIMIT_MIN {
        return Err(SpecError::new(format!(
            "--limit-memory {} is below the minimum of 6 MiB",
            limits.memory_bytes
        )));
    }
    if limits.memory_bytes != 0 && reservations.memory_bytes > limits.memory_bytes {
        return Err(SpecError::new(
            "--reserve-memory cannot be above --limit-memory",
        ));
    }
    if limits.nano_cpus != 0 && reservations.nano_cpus > limits.nano_cpus {
        return Err(SpecError::new("--reserve-cpu cannot be above --limit-cpu"));
    }
    Ok(())
}

fn normalize_restart(r: &mut RestartPolicy) -> Result<(), SpecError> {
    RestartCondition::try_from(r.condition)
        .map_err(|_| SpecError::new("unknown --restart-condition: use any, on-failure or none"))?;
    r.delay_ms
        .get_or_insert(RESTART_DELAY_DEFAULT.as_millis() as u64);
    Ok(())
}

fn normalize_update(u: &mut UpdateConfig, flag: &str) -> Result<(), SpecError> {
    UpdateFailureAction::try_from(u.failure_action).map_err(|_| {
        SpecError::new(format!(
            "unknown --{flag}-failure-action: use pause, continue or rollback"
        ))
    })?;
    UpdateOrder::try_from(u.order).map_err(|_| {
        SpecError::new(format!(
            "unknown --{flag}-order: use stop-first or start-first"
        ))
    })?;
    if !(0.0..=1.0).contains(&u.max_failure_ratio) {
        return Err(SpecError::new(format!(
            "--{flag}-max-failure-ratio must be between 0 and 1"
        )));
    }
    u.parallelism.get_or_insert(UPDATE_PARALLELISM_DEFAULT);
    u.monitor_ms
        .get_or_insert(UPDATE_MONITOR_DEFAULT.as_millis() as u64);
    Ok(())
}

fn check_endpoint(e: &EndpointSpec) -> Result<(), SpecError> {
    check_len(e.ports.len(), "port")?;
    let mut seen = std::collections::BTreeSet::new();
    for p in &e.ports {
        if p.target_port == 0 || p.target_port > 65535 || p.published_port > 65535 {
            return Err(SpecError::new(format!(
                "invalid port {}:{}: ports are 1 to 65535",
                p.published_port, p.target_port
            )));
        }
        if p.publish_mode != PublishMode::Host as i32 {
            return Err(SpecError::new(
                "ports published in ingress mode need the routing mesh, which this version \
                 does not have yet: publish with mode=host",
            ));
        }
        if p.published_port == 0 {
            return Err(SpecError::new(format!(
                "port {} is published in host mode without a published port: say which, \
                 e.g. published=8080,target={},mode=host",
                p.target_port, p.target_port
            )));
        }
        if !seen.insert((p.published_port, p.protocol)) {
            return Err(SpecError::new(format!(
                "port {} is published twice",
                p.published_port
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rswarm_proto::{Annotations, GlobalMode, PortConfig, Resources};

    fn process_spec(name: &str) -> ServiceSpec {
        ServiceSpec {
            annotations: Some(Annotations {
                name: name.into(),
                ..Default::default()
            }),
            task: Some(TaskSpec {
                driver: "process".into(),
                container: Some(ContainerSpec {
                    args: vec!["/bin/sleep".into(), "600".into()],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn err(spec: ServiceSpec) -> String {
        normalize(spec, "fallback").unwrap_err().to_string()
    }

    #[test]
    fn defaults_are_filled() {
        let spec = normalize(process_spec("web"), "x").unwrap();
        assert_eq!(
            spec.mode,
            Some(Mode::Replicated(ReplicatedMode { replicas: 1 }))
        );
        let task = spec.task.unwrap();
        assert_eq!(task.restart.unwrap().delay_ms, Some(5000));
        assert_eq!(task.container.unwrap().stop_grace_period_ms, Some(10_000));
        let update = spec.update.unwrap();
        assert_eq!(update.parallelism, Some(1));
        assert_eq!(update.monitor_ms, Some(5000));
        // Explicit values are kept, including zero.
        let mut s = process_spec("web");
        s.update = Some(UpdateConfig {
            parallelism: Some(0),
            ..Default::default()
        });
        assert_eq!(
            normalize(s, "x").unwrap().update.unwrap().parallelism,
            Some(0)
        );
    }

    #[test]
    fn a_nameless_service_gets_the_fallback_name() {
        let spec = normalize(process_spec(""), "svc-abc").unwrap();
        assert_eq!(spec.annotations.unwrap().name, "svc-abc");
    }

    #[test]
    fn bad_specs_say_what_to_fix() {
        assert!(err(process_spec("bad name")).contains("invalid service name"));
        let mut s = process_spec("a");
        s.task.as_mut().unwrap().driver = "docker".into();
        assert_eq!(err(s), "unknown driver \"docker\": use oci or process");
        let mut s = process_spec("a");
        s.task.as_mut().unwrap().container = Some(ContainerSpec::default());
        assert!(err(s).contains("process driver needs a command"));
        let mut s = process_spec("a");
        s.task.as_mut().unwrap().driver = "oci".into();
        assert!(err(s).contains("needs an image"));
        let mut s = process_spec("a");
        s.mode = Some(Mode::Replicated(ReplicatedMode {
            replicas: REPLICAS_MAX + 1,
        }));
        assert!(err(s).contains("above the limit"));
        let mut s = process_spec("a");
        s.task.as_mut().unwrap().container.as_mut().unwrap().env = vec!["=x".into()];
        assert!(err(s).contains("invalid env entry"));
        let mut s = process_spec("a");
        s.task
            .as_mut()
            .unwrap()
            .container
            .as_mut()
            .unwrap()
            .stop_signal = "SIGNOPE".into();
        assert!(err(s).contains("invalid stop signal"));
        let mut s = process_spec("a");
        s.task.as_mut().unwrap().resources = Some(ResourceRequirements {
            limits: Some(Resources {
                memory_bytes: 1024,
                ..Default::default()
            }),
            ..Default::default()
        });
        assert!(err(s).contains("below the minimum"));
        let mut s = process_spec("a");
        s.rollback = Some(UpdateConfig {
            failure_action: UpdateFailureAction::Rollback as i32,
            ..Default::default()
        });
        assert!(err(s).contains("cannot be rollback"));
        let mut s = process_spec("a");
        s.update = Some(UpdateConfig {
            max_failure_ratio: 1.5,
            ..Default::default()
        });
        assert!(err(s).contains("between 0 and 1"));
    }

    #[test]
    fn ports_are_host_mode_and_unique() {
        let port = |published, mode: PublishMode| PortConfig {
            target_port: 80,
            published_port: published,
            publish_mode: mode as i32,
            ..Default::default()
        };
        let with_ports = |ports| {
            let mut s = process_spec("a");
            s.endpoint = Some(EndpointSpec { ports });
            s
        };
        assert!(normalize(with_ports(vec![port(8080, PublishMode::Host)]), "x").is_ok());
        assert!(err(with_ports(vec![port(8080, PublishMode::Ingress)])).contains("routing mesh"));
        assert!(err(with_ports(vec![port(0, PublishMode::Host)])).contains("without a published"));
        assert!(
            err(with_ports(vec![
                port(8080, PublishMode::Host),
                port(8080, PublishMode::Host)
            ]))
            .contains("published twice")
        );
    }

    #[test]
    fn the_mode_cannot_change() {
        let replicated = normalize(process_spec("a"), "x").unwrap();
        let mut global = replicated.clone();
        global.mode = Some(Mode::Global(GlobalMode {}));
        assert!(check_update(&replicated, &global).is_err());
        assert!(check_update(&replicated, &replicated).is_ok());
    }

    #[test]
    fn signals_parse_by_name_and_number() {
        assert_eq!(signal_number("SIGTERM"), Some(15));
        assert_eq!(signal_number("int"), Some(2));
        assert_eq!(signal_number("9"), Some(9));
        assert_eq!(signal_number("0"), None);
        assert_eq!(signal_number("SIGFOO"), None);
    }
}
