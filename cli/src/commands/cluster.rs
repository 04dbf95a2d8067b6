//! Cluster membership commands: `init`, `join`, `join-token`, `leave`,
//! `info`, `version`.

use std::time::Duration;

use anyhow::Result;
use rswarm_proto::*;

use crate::client::Daemon;

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Address other nodes reach this manager on (ip or ip:port).
    #[arg(long)]
    advertise_addr: Option<String>,
    /// How often nodes heartbeat; a node is Down after three missed beats.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    heartbeat_period: Duration,
    /// Lifetime of node certificates.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2160h")]
    cert_expiry: Duration,
}

#[derive(Debug, clap::Args)]
pub struct JoinArgs {
    /// The join token (from 'rswarm join-token worker|manager').
    #[arg(long)]
    token: String,
    /// Address this node is reached on (ip or ip:port).
    #[arg(long)]
    advertise_addr: Option<String>,
    /// A manager's address, host:port.
    remote: String,
}

#[derive(Debug, clap::Args)]
pub struct JoinTokenArgs {
    /// Print the token only.
    #[arg(short, long)]
    quiet: bool,
    /// Replace the token; nodes already joined are not affected.
    #[arg(long)]
    rotate: bool,
    /// Which token.
    #[arg(value_parser = ["worker", "manager"])]
    role: String,
}

#[derive(Debug, clap::Args)]
pub struct LeaveArgs {
    /// Leave even as a manager (can cost the cluster its quorum).
    #[arg(short, long)]
    force: bool,
}

pub async fn init(d: &Daemon, args: InitArgs) -> Result<()> {
    let req = InitRequest {
        advertise_addr: args.advertise_addr.unwrap_or_default(),
        heartbeat_period_ms: args.heartbeat_period.as_millis() as u64,
        node_cert_expiry_secs: args.cert_expiry.as_secs(),
    };
    let resp = d
        .node()
        .init(req)
        .await
        .map_err(|s| d.explain(s))?
        .into_inner();
    println!(
        "Cluster initialized: current node ({}) is now a manager.\n",
        resp.node_id
    );
    println!("To add a worker to this cluster, run the following command:\n");
    println!(
        "    rswarm join --token {} {}\n",
        resp.worker_token, resp.advertise_addr
    );
    println!(
        "To add a manager to this cluster, run 'rswarm join-token manager' and follow the instructions."
    );
    Ok(())
}

pub async fn join(d: &Daemon, args: JoinArgs) -> Result<()> {
    let req = JoinRequest {
        token: args.token,
        remote_addr: args.remote,
        advertise_addr: args.advertise_addr.unwrap_or_default(),
    };
    let resp = d
        .node()
        .join(req)
        .await
        .map_err(|s| d.explain(s))?
        .into_inner();
    let role = if resp.role == NodeRole::Manager as i32 {
        "manager"
    } else {
        "worker"
    };
    println!("This node joined a cluster as a {role}.");
    Ok(())
}

pub async fn join_token(d: &Daemon, args: JoinTokenArgs) -> Result<()> {
    let role = if args.role == "manager" {
        NodeRole::Manager
    } else {
        NodeRole::Worker
    };
    let mut control = d.control();
    let tokens = if args.rotate {
        let resp = control
            .rotate_join_token(RotateJoinTokenRequest { role: role as i32 })
            .await
            .map_err(|s| d.explain(s))?
            .into_inner();
        if !args.quiet {
            println!("Successfully rotated {} join token.\n", args.role);
        }
        resp.join_tokens
    } else {
        control
            .get_cluster(GetClusterRequest {})
            .await
            .map_err(|s| d.explain(s))?
            .into_inner()
            .join_tokens
    };
    let tokens = tokens.unwrap_or_default();
    let token = if role == NodeRole::Manager {
        tokens.manager
    } else {
        tokens.worker
    };
    if args.quiet {
        println!("{token}");
        return Ok(());
    }
    let info = d.info().await?;
    println!(
        "To add a {} to this cluster, run the following command:\n",
        args.role
    );
    println!("    rswarm join --token {token} {}\n", info.advertise_addr);
    Ok(())
}

pub async fn leave(d: &Daemon, args: LeaveArgs) -> Result<()> {
    d.node()
        .leave(LeaveRequest { force: args.force })
        .await
        .map_err(|s| d.explain(s))?;
    println!("Node left the cluster.");
    Ok(())
}

pub async fn info(d: &Daemon) -> Result<()> {
    let info = d.info().await?;
    println!("Server Version: {}", info.version);
    println!("Name: {}", info.hostname);
    println!("Data Dir: {}", info.data_dir);
    println!("Cluster: {}", info.local_node_state);
    if info.node_id.is_empty() {
        return Ok(());
    }
    let is_manager = info.role == NodeRole::Manager as i32;
    println!(" NodeID: {}", info.node_id);
    println!(" Is Manager: {is_manager}");
    println!(" ClusterID: {}", info.cluster_id);
    if is_manager {
        match d.control().list_nodes(ListNodesRequest {}).await {
            Ok(resp) => {
                let nodes = resp.into_inner().nodes;
                let managers = nodes
                    .iter()
                    .filter(|n| !n.manager_status.is_empty())
                    .count();
                println!(" Managers: {managers}");
                println!(" Nodes: {}", nodes.len());
            }
            Err(s) => println!(" Managers: unknown ({})", s.message()),
        }
        println!(" Raft: {} (id {})", info.raft_state, info.raft_id);
        println!(" Store Version: {}", info.store_version);
    }
    println!(" Node Address: {}", info.advertise_addr);
    println!(" Manager Addresses:");
    for m in &info.managers {
        println!("  {m}");
    }
    if info.cert_not_after_ms > 0 {
        println!(
            " Certificate Expires: {}",
            crate::output::rfc3339(info.cert_not_after_ms)
        );
    }
    Ok(())
}

pub async fn version(host: &str) -> Result<()> {
    println!("Client:\n Version: {}", env!("CARGO_PKG_VERSION"));
    let info = Daemon::connect(host)?.info().await?;
    println!("\nServer:\n Version: {}", info.version);
    Ok(())
}
