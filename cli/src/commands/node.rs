//! `rswarm node …`: list, inspect, update, promote, demote, remove nodes,
//! and list a node's tasks.

use anyhow::{Context, Result, bail};
use rswarm_proto::*;
use serde_json::{Value, json};
use tonic::Code;

use super::service::calls;
use super::service::ps::{
    TaskTableOptions, print_task_rows, task_filters, task_matches, task_rows,
};
use crate::client::Daemon;
use crate::output::{Filters, ListFormat, now_ms, print_json_lines, print_table, rfc3339};

/// Read-modify-write attempts when another client changed the node meanwhile.
const UPDATE_ATTEMPTS_MAX: u32 = 5;

#[derive(Debug, clap::Subcommand)]
pub enum NodeCommand {
    /// List nodes.
    #[command(alias = "list")]
    Ls {
        /// Only IDs.
        #[arg(short, long)]
        quiet: bool,
        /// Filter: id, name, role, membership, label, node.label (key or key=value).
        #[arg(short, long = "filter")]
        filter: Vec<String>,
        /// table or json.
        #[arg(long)]
        format: Option<String>,
    },
    /// Show nodes in detail.
    Inspect {
        /// Human-readable output.
        #[arg(long)]
        pretty: bool,
        /// json: one object per line (default: a JSON array).
        #[arg(long)]
        format: Option<String>,
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Make nodes managers.
    Promote {
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Make managers workers.
    Demote {
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Remove nodes from the cluster.
    #[command(aliases = ["remove"])]
    Rm {
        /// Remove even a node that is not down.
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// List the tasks of nodes (default: this node).
    Ps(PsArgs),
    /// Change a node's availability, labels or role.
    Update {
        /// active, pause or drain.
        #[arg(long, value_parser = ["active", "pause", "drain"])]
        availability: Option<String>,
        /// Add or change a label (key=value).
        #[arg(long = "label-add")]
        label_add: Vec<String>,
        /// Remove a label.
        #[arg(long = "label-rm")]
        label_rm: Vec<String>,
        /// worker or manager.
        #[arg(long, value_parser = ["worker", "manager"])]
        role: Option<String>,
        node: String,
    },
}

/// `node ps` flags.
#[derive(Debug, clap::Args)]
pub struct PsArgs {
    /// Show full IDs, images and errors.
    #[arg(long)]
    no_trunc: bool,
    /// Only task IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Filter: id, name, node, desired-state (key=value).
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    filter: Vec<String>,
    /// table, or json (one object per line).
    #[arg(long)]
    format: Option<String>,
    /// Nodes: IDs, ID prefixes or hostnames.
    nodes: Vec<String>,
}

pub async fn run(d: &Daemon, cmd: NodeCommand) -> Result<()> {
    match cmd {
        NodeCommand::Ls {
            quiet,
            filter,
            format,
        } => ls(d, quiet, &filter, format.as_deref()).await,
        NodeCommand::Inspect {
            pretty,
            format,
            nodes,
        } => inspect(d, pretty, format.as_deref(), &nodes).await,
        NodeCommand::Promote { nodes } => set_role_all(d, &nodes, NodeRole::Manager).await,
        NodeCommand::Demote { nodes } => set_role_all(d, &nodes, NodeRole::Worker).await,
        NodeCommand::Rm { force, nodes } => rm(d, force, &nodes).await,
        NodeCommand::Ps(args) => ps(d, args).await,
        NodeCommand::Update {
            availability,
            label_add,
            label_rm,
            role,
            node,
        } => {
            let change = SpecChange::parse(availability, label_add, label_rm, role)?;
            update(d, &node, &change).await?;
            println!("{node}");
            Ok(())
        }
    }
}

fn node_id(n: &Node) -> &str {
    n.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("")
}

fn hostname(n: &Node) -> &str {
    n.description
        .as_ref()
        .map(|d| d.hostname.as_str())
        .unwrap_or("")
}

fn status_name(n: &Node) -> &'static str {
    match NodeState::try_from(n.status.as_ref().map(|s| s.state).unwrap_or(0)) {
        Ok(NodeState::Ready) => "Ready",
        Ok(NodeState::Down) => "Down",
        Ok(NodeState::Disconnected) => "Disconnected",
        _ => "Unknown",
    }
}

fn availability_name(n: &Node) -> &'static str {
    match NodeAvailability::try_from(n.spec.as_ref().map(|s| s.availability).unwrap_or(0)) {
        Ok(NodeAvailability::Pause) => "Pause",
        Ok(NodeAvailability::Drain) => "Drain",
        _ => "Active",
    }
}

fn role_name(role: i32) -> &'static str {
    if role == NodeRole::Manager as i32 {
        "manager"
    } else {
        "worker"
    }
}

fn labels(n: &Node) -> std::collections::BTreeMap<String, String> {
    n.spec
        .as_ref()
        .and_then(|s| s.annotations.as_ref())
        .map(|a| a.labels.clone())
        .unwrap_or_default()
}

async fn self_id(d: &Daemon) -> Result<String> {
    Ok(d.info().await?.node_id)
}

fn node_matches(view: &NodeView, key: &str, value: &str) -> bool {
    let Some(n) = view.node.as_ref() else {
        return false;
    };
    let label_match =
        |labels: std::collections::BTreeMap<String, String>| match value.split_once('=') {
            Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
            None => labels.contains_key(value),
        };
    match key {
        "id" => node_id(n).starts_with(value),
        "name" => hostname(n).starts_with(value),
        "role" => role_name(n.spec.as_ref().map(|s| s.desired_role).unwrap_or(0)) == value,
        "membership" => value == "accepted",
        "label" | "node.label" => label_match(labels(n)),
        _ => false,
    }
}

async fn ls(d: &Daemon, quiet: bool, filter: &[String], format: Option<&str>) -> Result<()> {
    let format = ListFormat::parse(format)?;
    let filters = Filters::parse(
        filter,
        &["id", "name", "role", "membership", "label", "node.label"],
    )?;
    let me = self_id(d).await?;
    let mut nodes = calls::node_views(d).await?;
    nodes.retain(|v| filters.matches(|k, val| node_matches(v, k, val)));
    nodes.sort_by(|a, b| {
        let key = |v: &NodeView| {
            v.node
                .as_ref()
                .map(|n| (hostname(n).to_string(), node_id(n).to_string()))
        };
        key(a).cmp(&key(b))
    });
    if quiet {
        for v in &nodes {
            println!("{}", v.node.as_ref().map(node_id).unwrap_or(""));
        }
        return Ok(());
    }
    match format {
        ListFormat::Json => {
            print_json_lines(&nodes.iter().map(|v| node_json(v, &me)).collect::<Vec<_>>())
        }
        ListFormat::Table => {
            let rows: Vec<Vec<String>> = nodes
                .iter()
                .filter_map(|v| v.node.as_ref().map(|n| (n, v)))
                .map(|(n, v)| {
                    let star = if node_id(n) == me { " *" } else { "" };
                    vec![
                        format!("{}{star}", node_id(n)),
                        hostname(n).to_string(),
                        status_name(n).to_string(),
                        availability_name(n).to_string(),
                        v.manager_status.clone(),
                    ]
                })
                .collect();
            print_table(
                &["ID", "HOSTNAME", "STATUS", "AVAILABILITY", "MANAGER STATUS"],
                &rows,
            );
            Ok(())
        }
    }
}

fn node_json(v: &NodeView, me: &str) -> Value {
    let n = v.node.clone().unwrap_or_default();
    json!({
        "ID": node_id(&n),
        "Self": node_id(&n) == me,
        "Hostname": hostname(&n),
        "Status": status_name(&n),
        "Availability": availability_name(&n),
        "ManagerStatus": v.manager_status,
        "EngineVersion": n.description.as_ref().map(|d| d.engine_version.clone()).unwrap_or_default(),
        "TLSStatus": "Ready",
    })
}

/// The Docker-shaped inspect document of a node.
fn inspect_json(v: &NodeView) -> Value {
    let n = v.node.clone().unwrap_or_default();
    let meta = n.meta.clone().unwrap_or_default();
    let spec = n.spec.clone().unwrap_or_default();
    let desc = n.description.clone().unwrap_or_default();
    let status = n.status.clone().unwrap_or_default();
    let platform = desc.platform.clone().unwrap_or_default();
    let resources = desc.resources.unwrap_or_default();
    let mut doc = json!({
        "ID": meta.id,
        "Version": {"Index": meta.version},
        "CreatedAt": rfc3339(meta.created_at_ms),
        "UpdatedAt": rfc3339(meta.updated_at_ms),
        "Spec": {
            "Labels": labels(&n),
            "Role": role_name(spec.desired_role),
            "Availability": availability_name(&n).to_lowercase(),
        },
        "Description": {
            "Hostname": desc.hostname,
            "Platform": {"Architecture": platform.architecture, "OS": platform.os},
            "Resources": {"NanoCPUs": resources.nano_cpus, "MemoryBytes": resources.memory_bytes},
            "Engine": {"EngineVersion": desc.engine_version},
            "Drivers": desc.drivers,
            "UnavailableDrivers": desc.unavailable_drivers.iter()
                .map(|u| json!({"Driver": u.driver, "Reason": u.reason}))
                .collect::<Vec<_>>(),
        },
        "Status": {"State": status_name(&n).to_lowercase(), "Message": status.message, "Addr": status.addr},
    });
    if let Some(ms) = &n.manager_status {
        doc["ManagerStatus"] = json!({
            "Leader": v.manager_status == "Leader",
            "Reachability": if v.manager_status == "Unreachable" { "unreachable" } else { "reachable" },
            "Addr": ms.addr,
            "RaftID": ms.raft_id,
        });
    }
    doc
}

async fn get_node(d: &Daemon, reference: &str) -> Result<NodeView> {
    d.control()
        .get_node(GetNodeRequest {
            reference: reference.to_string(),
        })
        .await
        .map_err(|s| d.explain(s))?
        .into_inner()
        .node
        .context("the manager returned no node")
}

async fn inspect(d: &Daemon, pretty: bool, format: Option<&str>, refs: &[String]) -> Result<()> {
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for r in refs {
        match get_node(d, r).await {
            Ok(v) => docs.push(v),
            Err(e) => errors.push(format!("{e}")),
        }
    }
    if pretty {
        for v in &docs {
            print_pretty(v);
        }
    } else if format == Some("json") {
        print_json_lines(&docs.iter().map(inspect_json).collect::<Vec<_>>())?;
    } else if let Some(other) = format {
        bail!("unsupported format {other:?}: use 'json' or --pretty");
    } else {
        println!(
            "{}",
            serde_json::to_string_pretty(&docs.iter().map(inspect_json).collect::<Vec<_>>())?
        );
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("\n"));
    }
    Ok(())
}

fn print_pretty(v: &NodeView) {
    let doc = inspect_json(v);
    let s = |p: &str| {
        doc.pointer(p)
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| x.to_string())
            })
            .unwrap_or_default()
    };
    println!("ID:\t\t\t{}", s("/ID"));
    println!("Hostname:\t\t{}", s("/Description/Hostname"));
    println!("Joined at:\t\t{}", s("/CreatedAt"));
    println!(
        "Status:\n State:\t\t\t{}\n Availability:\t\t{}\n Address:\t\t{}",
        s("/Status/State"),
        s("/Spec/Availability"),
        s("/Status/Addr")
    );
    if doc.get("ManagerStatus").is_some() {
        println!(
            "Manager Status:\n Address:\t\t{}\n Raft Status:\t\t{}\n Leader:\t\t{}",
            s("/ManagerStatus/Addr"),
            s("/ManagerStatus/Reachability"),
            if s("/ManagerStatus/Leader") == "true" {
                "Yes"
            } else {
                "No"
            }
        );
    }
    println!(
        "Platform:\n Operating System:\t{}\n Architecture:\t\t{}",
        s("/Description/Platform/OS"),
        s("/Description/Platform/Architecture")
    );
    println!(
        "Resources:\n CPUs:\t\t\t{}\n Memory:\t\t{}",
        s("/Description/Resources/NanoCPUs"),
        s("/Description/Resources/MemoryBytes")
    );
    println!(
        "Engine Version:\t\t{}",
        s("/Description/Engine/EngineVersion")
    );
    print_drivers(&doc);
    let labels = labels(v.node.as_ref().unwrap_or(&Node::default()));
    if !labels.is_empty() {
        println!("Labels:");
        for (k, val) in labels {
            println!(" - {k}={val}");
        }
    }
    println!();
}

/// The task drivers of a node, and those it lacks with the reason.
fn print_drivers(doc: &serde_json::Value) {
    let names: Vec<&str> = doc
        .pointer("/Description/Drivers")
        .and_then(|d| d.as_array())
        .map(|d| d.iter().filter_map(|n| n.as_str()).collect())
        .unwrap_or_default();
    println!("Drivers:\t\t{}", names.join(", "));
    let unavailable = doc
        .pointer("/Description/UnavailableDrivers")
        .and_then(|d| d.as_array())
        .cloned()
        .unwrap_or_default();
    for driver in unavailable {
        println!(
            " Unavailable {}:\t{}",
            driver["Driver"].as_str().unwrap_or_default(),
            driver["Reason"].as_str().unwrap_or_default()
        );
    }
}

/// What `node update` (and promote/demote) change in a spec.
#[derive(Debug, Default)]
struct SpecChange {
    availability: Option<NodeAvailability>,
    label_add: Vec<(String, String)>,
    label_rm: Vec<String>,
    role: Option<NodeRole>,
}

impl SpecChange {
    fn parse(
        availability: Option<String>,
        label_add: Vec<String>,
        label_rm: Vec<String>,
        role: Option<String>,
    ) -> Result<Self> {
        let availability = availability.map(|a| match a.as_str() {
            "pause" => NodeAvailability::Pause,
            "drain" => NodeAvailability::Drain,
            _ => NodeAvailability::Active,
        });
        let label_add = label_add
            .into_iter()
            .map(|l| match l.split_once('=') {
                Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
                None if !l.is_empty() => Ok((l, String::new())),
                _ => bail!("invalid label {l:?}: use key=value"),
            })
            .collect::<Result<Vec<_>>>()?;
        let role = role.map(|r| {
            if r == "manager" {
                NodeRole::Manager
            } else {
                NodeRole::Worker
            }
        });
        Ok(Self {
            availability,
            label_add,
            label_rm,
            role,
        })
    }

    fn apply(&self, spec: &mut NodeSpec) -> Result<()> {
        if let Some(a) = self.availability {
            spec.availability = a as i32;
        }
        if let Some(r) = self.role {
            spec.desired_role = r as i32;
        }
        let annotations = spec.annotations.get_or_insert_with(Default::default);
        for key in &self.label_rm {
            if annotations.labels.remove(key).is_none() {
                bail!("key {key} doesn't exist in node's labels");
            }
        }
        for (k, v) in &self.label_add {
            annotations.labels.insert(k.clone(), v.clone());
        }
        Ok(())
    }
}

/// Reads the node, applies `change` and writes it back with the version it
/// read; retries when another client changed the node in between.
async fn update(d: &Daemon, reference: &str, change: &SpecChange) -> Result<Node> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let view = get_node(d, reference).await?;
        let node = view.node.context("the manager returned no node")?;
        let meta = node.meta.clone().unwrap_or_default();
        let mut spec = node.spec.clone().unwrap_or_default();
        change.apply(&mut spec)?;
        let req = UpdateNodeRequest {
            node_id: meta.id,
            version: meta.version,
            spec: Some(spec),
        };
        match d.control().update_node(req).await {
            Ok(resp) => {
                return resp
                    .into_inner()
                    .node
                    .context("the manager returned no node");
            }
            Err(s) if s.code() == Code::Aborted && attempt < UPDATE_ATTEMPTS_MAX => continue,
            Err(s) => return Err(d.explain(s)),
        }
    }
}

async fn set_role_all(d: &Daemon, refs: &[String], role: NodeRole) -> Result<()> {
    let mut errors = Vec::new();
    for r in refs {
        let change = SpecChange {
            role: Some(role),
            ..Default::default()
        };
        match update(d, r, &change).await {
            Ok(n) if role == NodeRole::Manager => {
                println!("Node {} promoted to a manager in the cluster.", node_id(&n))
            }
            Ok(n) => println!("Manager {} demoted in the cluster.", node_id(&n)),
            Err(e) => errors.push(format!("{e}")),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        bail!("{}", errors.join("\n"))
    }
}

async fn rm(d: &Daemon, force: bool, refs: &[String]) -> Result<()> {
    let mut errors = Vec::new();
    for r in refs {
        match d
            .control()
            .remove_node(RemoveNodeRequest {
                reference: r.clone(),
                force,
            })
            .await
        {
            Ok(_) => println!("{r}"),
            Err(s) => errors.push(format!("{}", d.explain(s))),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        bail!("{}", errors.join("\n"))
    }
}

/// `node ps`: the tasks on the nodes (this node by default), in the task
/// table `service ps` uses.
async fn ps(d: &Daemon, args: PsArgs) -> Result<()> {
    let format = ListFormat::parse(args.format.as_deref())?;
    let filters = task_filters(&args.filter)?;
    let refs: Vec<String> = if args.nodes.is_empty() {
        vec![self_id(d).await?]
    } else {
        args.nodes
    };
    let hostnames = calls::hostnames(&calls::list_nodes(d).await?);
    let mut tasks = Vec::new();
    for r in &refs {
        let view = get_node(d, r).await?;
        let id = view.node.as_ref().map(node_id).unwrap_or(r).to_string();
        let request = ListTasksRequest {
            node: id,
            ..Default::default()
        };
        tasks.extend(calls::list_tasks(d, request).await?);
    }
    tasks.retain(|t| filters.matches(|k, v| task_matches(t, &hostnames, k, v)));
    let options = TaskTableOptions {
        no_trunc: args.no_trunc,
        now_ms: now_ms(),
    };
    print_task_rows(&task_rows(&tasks, &hostnames, options), args.quiet, format)
}
