//! The command tree. Each submodule owns one group of commands; they all
//! talk to the daemon through `client::Daemon`.

mod bench;
mod cluster;
mod files;
mod image;
mod node;
mod service;
mod sim;
mod volume;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::client::{DEFAULT_HOST, Daemon};

/// rswarm: a container orchestrator in the spirit of Docker swarm mode.
#[derive(Debug, Parser)]
#[command(name = "rswarm", version, about, disable_help_subcommand = true)]
pub struct Cli {
    /// Daemon socket to talk to.
    #[arg(short = 'H', long = "host", env = "RSWARM_HOST", default_value = DEFAULT_HOST, global = true)]
    host: String,
    #[command(subcommand)]
    command: Command,
}

impl Cli {
    /// Whether this invocation runs nodes in this process (the daemon, the
    /// simulator, in-process benchmarks) rather than being one client.
    pub fn runs_nodes(&self) -> bool {
        match &self.command {
            Command::Daemon(_) | Command::Sim(_) => true,
            Command::Bench(bench) => bench.runs_nodes(),
            _ => false,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the node daemon (agent, network, and manager when this node is one).
    Daemon(DaemonArgs),
    /// Create a new cluster with this node as its first manager.
    Init(cluster::InitArgs),
    /// Join a cluster as a worker or a manager, as the token says.
    Join(cluster::JoinArgs),
    /// Show or rotate the join tokens.
    JoinToken(cluster::JoinTokenArgs),
    /// Leave the cluster.
    Leave(cluster::LeaveArgs),
    /// Show this node's and the cluster's state.
    Info,
    /// Show the client's and the daemon's versions.
    Version,
    /// Manage nodes.
    #[command(subcommand)]
    Node(node::NodeCommand),
    /// Manage services.
    #[command(subcommand)]
    Service(service::ServiceCommand),
    /// Manage secrets (files mounted into containers, encrypted at rest).
    #[command(subcommand)]
    Secret(files::FileCommand),
    /// Manage configs (files mounted into containers).
    #[command(subcommand)]
    Config(files::FileCommand),
    /// Manage this node's volumes.
    #[command(subcommand)]
    Volume(volume::VolumeCommand),
    /// Manage this node's images.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Measure the cluster (writes per second, leader failover).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Watch one task (started by the daemon's process driver, not by hand).
    #[command(hide = true)]
    Shim {
        /// The task's directory under the daemon's data dir.
        task_dir: PathBuf,
    },
    /// Simulate many nodes in this process, for scale tests: each joins
    /// with the worker token and reports its tasks running without running
    /// them.
    Sim(sim::SimArgs),
}

#[derive(Debug, clap::Args)]
struct DaemonArgs {
    /// Where the node keeps its state.
    #[arg(long, default_value = "/var/lib/rswarm")]
    data_dir: PathBuf,
    /// Where the node puts its sockets.
    #[arg(long, default_value = "/run/rswarm")]
    run_dir: PathBuf,
    /// Address for cluster traffic (managers only).
    #[arg(long, default_value = "0.0.0.0:7377")]
    listen_addr: SocketAddr,
    /// Address other nodes reach this node on (ip or ip:port).
    #[arg(long)]
    advertise_addr: Option<String>,
    /// Node name (default: the host's name).
    #[arg(long)]
    hostname: Option<String>,
    /// Log level: error, warn, info, debug, trace (or a tracing filter).
    /// openraft's own chatter is kept to warnings unless asked for.
    #[arg(long, default_value = "info,openraft=warn")]
    log_level: String,
    /// Log format.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// A registry (HOST or HOST:PORT) spoken to over plain HTTP, like
    /// dockerd's option; repeatable. Loopback registries always are.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    insecure_registries: Vec<String>,
}

/// Runs a parsed command; returns the exit code.
pub async fn run(cli: Cli) -> Result<u8> {
    let host = cli.host;
    let connect = || Daemon::connect(&host);
    match cli.command {
        Command::Daemon(args) => return run_daemon(args).await,
        Command::Service(cmd) => return service::run(&connect()?, cmd).await,
        Command::Image(cmd) => return image::run(&connect()?, cmd).await,
        Command::Sim(args) => sim::run(args).await,
        Command::Init(args) => cluster::init(&connect()?, args).await,
        Command::Join(args) => cluster::join(&connect()?, args).await,
        Command::JoinToken(args) => cluster::join_token(&connect()?, args).await,
        Command::Leave(args) => cluster::leave(&connect()?, args).await,
        Command::Info => cluster::info(&connect()?).await,
        Command::Version => cluster::version(&host).await,
        Command::Node(cmd) => node::run(&connect()?, cmd).await,
        Command::Secret(cmd) => files::run(&connect()?, files::FileKind::Secret, cmd).await,
        Command::Config(cmd) => files::run(&connect()?, files::FileKind::Config, cmd).await,
        Command::Volume(cmd) => volume::run(&connect()?, cmd).await,
        Command::Bench(cmd) => bench::run(&connect()?, cmd).await,
        // `main` runs shims before parsing; this arm serves odd spellings
        // such as `rswarm -H x shim DIR`.
        Command::Shim { task_dir } => return Ok(rswarm_agent::shim::run(&task_dir)),
    }
    .map(|()| 0)
}

fn init_logging(level: &str, format: &str) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .map_err(|e| anyhow::anyhow!("invalid --log-level {level:?}: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(())
}

fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

async fn run_daemon(args: DaemonArgs) -> Result<u8> {
    init_logging(&args.log_level, &args.log_format)?;
    let config = crate::daemon::DaemonConfig {
        data_dir: args.data_dir,
        run_dir: args.run_dir,
        listen_addr: args.listen_addr,
        advertise_addr: args.advertise_addr,
        hostname: args.hostname.unwrap_or_else(system_hostname),
        registry: rswarm_image::RegistryConfig {
            insecure: args.insecure_registries,
        },
    };
    crate::daemon::run(config).await?;
    Ok(0)
}
