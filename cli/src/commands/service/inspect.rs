//! `service inspect`: a JSON array of Docker-shaped service documents
//! (durations in nanoseconds, Docker's key names; fields left unset are
//! left out), or with `--pretty` a summary for people like Docker's.
//!
//! Pure functions from a `ServiceView` to the document and to the summary.

use anyhow::{Result, bail};
use rswarm_proto::service_spec::Mode;
use rswarm_proto::*;
use serde_json::{Map, Value, json};

use crate::client::Daemon;
use crate::output::rfc3339;

use super::calls;

mod container_fields;
use super::ls::mode_name;
use super::spec::protocol_name;
use super::values::{format_bytes, format_cpus};

/// Nanoseconds per millisecond: the proto keeps ms, Docker's JSON ns.
const NANOS_PER_MILLI: u64 = 1_000_000;

/// Monitor period an update uses when its spec leaves it unset.
const MONITOR_MS_DEFAULT: u64 = 5_000;

/// `service inspect` flags.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// A summary for people instead of JSON.
    #[arg(long)]
    pretty: bool,
    /// Services, by name, ID or ID prefix.
    #[arg(required = true, value_name = "SERVICE")]
    services: Vec<String>,
}

/// `service inspect`: every service found is shown; the ones not found are
/// reported afterwards and make the exit code 1.
pub async fn run(d: &Daemon, args: InspectArgs) -> Result<()> {
    let mut views = Vec::new();
    let mut errors = Vec::new();
    for reference in &args.services {
        match calls::get_service(d, reference).await {
            Ok(view) => views.push(view),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    if args.pretty {
        for view in &views {
            println!("{}", pretty(view));
        }
    } else {
        let docs: Vec<Value> = views.iter().map(document).collect();
        println!("{}", serde_json::to_string_pretty(&docs)?);
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("\n"));
    }
    Ok(())
}

fn nanos(ms: u64) -> u64 {
    ms.saturating_mul(NANOS_PER_MILLI)
}

/// Inserts `key` only when `value` is not its zero value (Go's omitempty).
fn put(map: &mut Map<String, Value>, key: &str, value: Value) {
    let empty = match &value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Bool(b) => !b,
    };
    if !empty {
        map.insert(key.to_string(), value);
    }
}

fn object(entries: Vec<(&str, Value)>) -> Value {
    let mut map = Map::new();
    for (key, value) in entries {
        put(&mut map, key, value);
    }
    Value::Object(map)
}

/// The Docker-shaped document of one service.
pub fn document(view: &ServiceView) -> Value {
    let service = view.service.clone().unwrap_or_default();
    let meta = service.meta.clone().unwrap_or_default();
    let mut doc = Map::new();
    doc.insert("ID".into(), json!(meta.id));
    doc.insert("Version".into(), json!({ "Index": meta.version }));
    doc.insert("CreatedAt".into(), json!(rfc3339(meta.created_at_ms)));
    doc.insert("UpdatedAt".into(), json!(rfc3339(meta.updated_at_ms)));
    let spec = service.spec.clone().unwrap_or_default();
    doc.insert("Spec".into(), spec_document(&spec));
    if let Some(previous) = &service.previous_spec {
        doc.insert("PreviousSpec".into(), spec_document(previous));
    }
    put(&mut doc, "SpecVersion", json!(service.spec_version));
    if let Some(status) = &service.update_status {
        doc.insert("UpdateStatus".into(), update_status_document(status));
    }
    doc.insert(
        "ServiceStatus".into(),
        json!({"RunningTasks": view.running_tasks, "DesiredTasks": view.desired_tasks}),
    );
    Value::Object(doc)
}

fn update_status_document(status: &UpdateStatus) -> Value {
    let state = UpdateState::try_from(status.state)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("UPDATE_STATE_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| "unknown".into());
    let mut doc = Map::new();
    doc.insert("State".into(), json!(state));
    if status.started_at_ms > 0 {
        doc.insert("StartedAt".into(), json!(rfc3339(status.started_at_ms)));
    }
    if status.completed_at_ms > 0 {
        doc.insert("CompletedAt".into(), json!(rfc3339(status.completed_at_ms)));
    }
    put(&mut doc, "Message", json!(status.message));
    Value::Object(doc)
}

fn spec_document(spec: &ServiceSpec) -> Value {
    let annotations = spec.annotations.clone().unwrap_or_default();
    let task = spec.task.clone().unwrap_or_default();
    let mode = match &spec.mode {
        Some(Mode::Global(_)) => json!({"Global": {}}),
        Some(Mode::Replicated(r)) => json!({"Replicated": {"Replicas": r.replicas}}),
        None => json!({}),
    };
    let mut doc = Map::new();
    doc.insert("Name".into(), json!(annotations.name));
    doc.insert("Labels".into(), json!(annotations.labels));
    doc.insert("TaskTemplate".into(), task_document(&task));
    doc.insert("Mode".into(), mode);
    if let Some(update) = &spec.update {
        doc.insert("UpdateConfig".into(), update_config_document(update));
    }
    if let Some(rollback) = &spec.rollback {
        doc.insert("RollbackConfig".into(), update_config_document(rollback));
    }
    let ports: Vec<Value> = spec
        .endpoint
        .iter()
        .flat_map(|e| &e.ports)
        .map(port_document)
        .collect();
    doc.insert(
        "EndpointSpec".into(),
        json!({"Mode": "vip", "Ports": ports}),
    );
    put(&mut doc, "Rebalance", json!(spec.rebalance));
    Value::Object(doc)
}

fn task_document(task: &TaskSpec) -> Value {
    let c = task.container.clone().unwrap_or_default();
    let container = object(vec![
        ("Image", json!(c.image)),
        ("Command", json!(c.command)),
        ("Args", json!(c.args)),
        ("Env", json!(c.env)),
        ("Dir", json!(c.dir)),
        ("User", json!(c.user)),
        ("Labels", json!(c.labels)),
        ("StopSignal", json!(c.stop_signal)),
        ("StopGracePeriod", json!(c.stop_grace_period_ms.map(nanos))),
        ("Healthcheck", super::health::healthcheck_document(&c)),
        ("Hostname", json!(c.hostname)),
        ("ReadOnly", json!(c.read_only)),
        ("CapabilityAdd", json!(c.cap_add)),
        ("CapabilityDrop", json!(c.cap_drop)),
        ("Init", json!(c.init)),
        ("Ulimits", container_fields::ulimits(&c.ulimits)),
        ("Sysctls", json!(c.sysctls)),
        ("Mounts", container_fields::mounts(&c.mounts)),
        ("Secrets", container_fields::secrets(&c.secrets)),
        ("Configs", container_fields::configs(&c.configs)),
    ]);
    let resources = task.resources.unwrap_or_default();
    let amounts = |r: Option<Resources>, pids: i64| {
        let r = r.unwrap_or_default();
        object(vec![
            ("NanoCPUs", json!(r.nano_cpus)),
            ("MemoryBytes", json!(r.memory_bytes)),
            ("Pids", json!(pids)),
        ])
    };
    let restart = task.restart.map(|r| {
        object(vec![
            ("Condition", json!(restart_condition_name(r.condition))),
            ("Delay", json!(r.delay_ms.map(nanos))),
            ("MaxAttempts", json!(r.max_attempts)),
            ("Window", json!(nanos(r.window_ms))),
        ])
    });
    let placement = task.placement.clone().unwrap_or_default();
    let preferences: Vec<Value> = placement
        .preferences
        .iter()
        .map(|p| json!({"Spread": {"SpreadDescriptor": p.spread}}))
        .collect();
    object(vec![
        ("ContainerSpec", container),
        (
            "Resources",
            object(vec![
                ("Limits", amounts(resources.limits, resources.pids_limit)),
                ("Reservations", amounts(resources.reservations, 0)),
            ]),
        ),
        ("RestartPolicy", json!(restart)),
        (
            "Placement",
            object(vec![
                ("Constraints", json!(placement.constraints)),
                ("Preferences", json!(preferences)),
                ("MaxReplicas", json!(placement.max_replicas)),
            ]),
        ),
        ("ForceUpdate", json!(task.force_update)),
        ("Runtime", json!(task.driver)),
    ])
}

fn update_config_document(config: &UpdateConfig) -> Value {
    object(vec![
        ("Parallelism", json!(config.parallelism)),
        ("Delay", json!(nanos(config.delay_ms))),
        (
            "FailureAction",
            json!(failure_action_name(config.failure_action)),
        ),
        ("Monitor", json!(config.monitor_ms.map(nanos))),
        ("MaxFailureRatio", json!(config.max_failure_ratio)),
        ("Order", json!(order_name(config.order))),
    ])
}

fn port_document(port: &PortConfig) -> Value {
    object(vec![
        ("Name", json!(port.name)),
        ("Protocol", json!(protocol_name(port.protocol))),
        ("TargetPort", json!(port.target_port)),
        ("PublishedPort", json!(port.published_port)),
        ("PublishMode", json!(publish_mode_name(port.publish_mode))),
    ])
}

fn restart_condition_name(condition: i32) -> &'static str {
    match RestartCondition::try_from(condition) {
        Ok(RestartCondition::OnFailure) => "on-failure",
        Ok(RestartCondition::None) => "none",
        _ => "any",
    }
}

fn failure_action_name(action: i32) -> &'static str {
    match UpdateFailureAction::try_from(action) {
        Ok(UpdateFailureAction::Continue) => "continue",
        Ok(UpdateFailureAction::Rollback) => "rollback",
        _ => "pause",
    }
}

fn order_name(order: i32) -> &'static str {
    match UpdateOrder::try_from(order) {
        Ok(UpdateOrder::StartFirst) => "start-first",
        _ => "stop-first",
    }
}

fn publish_mode_name(mode: i32) -> &'static str {
    match PublishMode::try_from(mode) {
        Ok(PublishMode::Host) => "host",
        _ => "ingress",
    }
}

/// "10s", "1m 30s", "500ms".
fn duration_text(ms: u64) -> String {
    humantime::format_duration(std::time::Duration::from_millis(ms)).to_string()
}

/// Docker's `inspect --pretty` summary of one service.
pub fn pretty(view: &ServiceView) -> String {
    let service = view.service.clone().unwrap_or_default();
    let spec = service.spec.clone().unwrap_or_default();
    let annotations = spec.annotations.clone().unwrap_or_default();
    let task = spec.task.clone().unwrap_or_default();
    let mut out = Vec::new();
    let meta = service.meta.clone().unwrap_or_default();
    out.push(format!("ID:\t\t{}", meta.id));
    out.push(format!("Name:\t\t{}", annotations.name));
    if !annotations.labels.is_empty() {
        out.push("Labels:".into());
        out.extend(annotations.labels.iter().map(|(k, v)| format!(" {k}={v}")));
    }
    out.push(format!(
        "Service Mode:\t{}",
        capitalized(mode_name(spec.mode.as_ref()))
    ));
    if let Some(Mode::Replicated(r)) = &spec.mode {
        out.push(format!(" Replicas:\t{}", r.replicas));
    }
    out.push(format!(
        " Tasks:\t\t{} running of {} desired",
        view.running_tasks, view.desired_tasks
    ));
    if let Some(status) = &service.update_status {
        out.extend(pretty_update_status(status));
    }
    out.extend(pretty_placement(&task));
    out.extend(pretty_update_config(
        "UpdateConfig",
        "Update order",
        spec.update.as_ref(),
    ));
    out.extend(pretty_update_config(
        "RollbackConfig",
        "Rollback order",
        spec.rollback.as_ref(),
    ));
    out.extend(pretty_container(&task));
    out.extend(pretty_resources(&task));
    out.extend(pretty_ports(&spec));
    out.join("\n")
}

fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().collect::<String>() + chars.as_str())
        .unwrap_or_default()
}

fn pretty_update_status(status: &UpdateStatus) -> Vec<String> {
    let state = update_status_document(status);
    let mut out = vec![
        "UpdateStatus:".to_string(),
        format!(" State:\t\t{}", state["State"].as_str().unwrap_or("")),
    ];
    if status.started_at_ms > 0 {
        out.push(format!(" Started:\t{}", rfc3339(status.started_at_ms)));
    }
    if status.completed_at_ms > 0 {
        out.push(format!(" Completed:\t{}", rfc3339(status.completed_at_ms)));
    }
    if !status.message.is_empty() {
        out.push(format!(" Message:\t{}", status.message));
    }
    out
}

fn pretty_placement(task: &TaskSpec) -> Vec<String> {
    let placement = task.placement.clone().unwrap_or_default();
    let mut out = vec!["Placement:".to_string()];
    if !placement.constraints.is_empty() {
        out.push(format!(
            " Constraints:\t[{}]",
            placement.constraints.join(" ")
        ));
    }
    for preference in &placement.preferences {
        out.push(format!(" Preferences:\tspread={}", preference.spread));
    }
    if placement.max_replicas > 0 {
        out.push(format!(
            " Max Replicas Per Node:\t{}",
            placement.max_replicas
        ));
    }
    out
}

fn pretty_update_config(
    title: &str,
    order_label: &str,
    config: Option<&UpdateConfig>,
) -> Vec<String> {
    let config = config.cloned().unwrap_or_default();
    let mut out = vec![
        format!("{title}:"),
        format!(" Parallelism:\t{}", config.parallelism.unwrap_or(1)),
    ];
    if config.delay_ms > 0 {
        out.push(format!(" Delay:\t\t{}", duration_text(config.delay_ms)));
    }
    out.push(format!(
        " On failure:\t{}",
        failure_action_name(config.failure_action)
    ));
    out.push(format!(
        " Monitoring Period: {}",
        duration_text(config.monitor_ms.unwrap_or(MONITOR_MS_DEFAULT))
    ));
    out.push(format!(" Max failure ratio: {}", config.max_failure_ratio));
    out.push(format!(" {order_label}:    {}", order_name(config.order)));
    out
}

fn pretty_container(task: &TaskSpec) -> Vec<String> {
    let c = task.container.clone().unwrap_or_default();
    let mut out = vec!["ContainerSpec:".to_string()];
    out.push(format!(" Driver:\t{}", task.driver));
    if !c.image.is_empty() {
        out.push(format!(" Image:\t\t{}", c.image));
    }
    if !c.command.is_empty() {
        out.push(format!(" Command:\t{}", c.command.join(" ")));
    }
    if !c.args.is_empty() {
        out.push(format!(" Args:\t\t{}", c.args.join(" ")));
    }
    if !c.env.is_empty() {
        out.push(format!(" Env:\t\t{}", c.env.join(" ")));
    }
    if !c.dir.is_empty() {
        out.push(format!(" Dir:\t\t{}", c.dir));
    }
    if !c.user.is_empty() {
        out.push(format!(" User:\t\t{}", c.user));
    }
    if !c.stop_signal.is_empty() {
        out.push(format!(" StopSignal:\t{}", c.stop_signal));
    }
    if let Some(ms) = c.stop_grace_period_ms {
        out.push(format!(" StopGracePeriod: {}", duration_text(ms)));
    }
    out.extend(super::health::pretty_healthcheck(&c));
    out
}

fn pretty_resources(task: &TaskSpec) -> Vec<String> {
    let Some(resources) = &task.resources else {
        return Vec::new();
    };
    let mut out = vec!["Resources:".to_string()];
    let sections = [
        (
            "Reservations",
            resources.reservations.unwrap_or_default(),
            0,
        ),
        (
            "Limits",
            resources.limits.unwrap_or_default(),
            resources.pids_limit,
        ),
    ];
    for (title, amounts, pids) in sections {
        let mut lines = Vec::new();
        if amounts.nano_cpus > 0 {
            lines.push(format!("  CPU:\t\t{}", format_cpus(amounts.nano_cpus)));
        }
        if amounts.memory_bytes > 0 {
            lines.push(format!("  Memory:\t{}", format_bytes(amounts.memory_bytes)));
        }
        if pids > 0 {
            lines.push(format!("  PIDs:\t\t{pids}"));
        }
        if !lines.is_empty() {
            out.push(format!(" {title}:"));
            out.extend(lines);
        }
    }
    out
}

fn pretty_ports(spec: &ServiceSpec) -> Vec<String> {
    let ports: Vec<&PortConfig> = spec.endpoint.iter().flat_map(|e| &e.ports).collect();
    if ports.is_empty() {
        return Vec::new();
    }
    let mut out = vec!["Endpoint Mode:\tvip".to_string(), "Ports:".to_string()];
    for port in ports {
        out.push(format!(" PublishedPort = {}", port.published_port));
        out.push(format!("  Protocol = {}", protocol_name(port.protocol)));
        out.push(format!("  TargetPort = {}", port.target_port));
        out.push(format!(
            "  PublishMode = {}",
            publish_mode_name(port.publish_mode)
        ));
    }
    out
}

#[cfg(test)]
mod tests;
