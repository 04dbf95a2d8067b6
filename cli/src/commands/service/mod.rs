//! `rswarm service …`: create, list, inspect, change, scale, roll back,
//! remove services, list their tasks and read their logs, as Docker's
//! `service` commands do.
//!
//! Layout:
//! - `values.rs` parses one flag value; `spec.rs` turns the flags into a
//!   `ServiceSpec` (create) or edits the one read (update); the secret,
//!   config and `--with-registry-auth` flags live in `files_flags.rs`, the
//!   docker config reader in `registry_auth.rs`.
//! - `change.rs` runs create, update, scale, rollback and rm;
//!   `watch.rs` then polls until the change converges, and `progress.rs`
//!   decides what that looks like and how it ended (exit 0, 1, or 2 when
//!   tasks cannot be placed).
//! - `ls.rs`, `ps.rs` (the task table `node ps` shares), `inspect.rs` and
//!   `logs.rs` read.
//! - `text.rs` words IDs, task names, states, ports and images the same
//!   way everywhere; `calls.rs` makes the control API calls.
//!
//! **Invariant:** everything that decides or renders is a pure function of
//! proto values (and a given "now"), tested without a cluster; only
//! `change.rs`, `watch.rs` and the `run` functions talk to the daemon.

pub(super) mod calls;
mod change;
mod container_flags;
mod files_flags;
mod health;
mod image_resolve;
mod inspect;
mod logs;
mod ls;
mod progress;
pub(super) mod ps;
mod registry_auth;
mod spec;
mod text;
mod values;
mod watch;

#[cfg(test)]
mod fake_control;
#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod tests;

use anyhow::Result;

use crate::client::Daemon;

/// The `service` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ServiceCommand {
    /// Create a service and wait for its tasks to run.
    ///
    /// Waits until the tasks run and stay up for the update monitor
    /// period. Exit codes: 0 converged, 1 failed, 2 tasks cannot be placed
    /// (the service stays and starts when a node fits).
    #[command(
        override_usage = "rswarm service create [OPTIONS] IMAGE [COMMAND] [ARG...]\n       \
        rswarm service create --driver process [OPTIONS] COMMAND [ARG...]"
    )]
    Create(Box<change::CreateArgs>),
    /// List services.
    #[command(alias = "list")]
    Ls(ls::LsArgs),
    /// List the tasks of services, older ones of each slot under the newest.
    Ps(ps::PsArgs),
    /// Show services in detail (a JSON array, or --pretty).
    Inspect(inspect::InspectArgs),
    /// Change a service and wait for its tasks to be replaced.
    ///
    /// Exit codes: 0 converged, 1 failed, paused or rolled back, 2 tasks
    /// cannot be placed.
    Update(Box<change::UpdateArgs>),
    /// Set the replica counts of services: rswarm service scale web=3 api=5.
    Scale(change::ScaleArgs),
    /// Remove services.
    #[command(alias = "remove")]
    Rm(change::RmArgs),
    /// Go back to a service's spec before its last update.
    Rollback(change::RollbackArgs),
    /// Show the logs of a service's tasks, or of one task.
    Logs(logs::LogsArgs),
}

/// Runs a `service` subcommand; returns the exit code.
pub async fn run(d: &Daemon, command: ServiceCommand) -> Result<u8> {
    match command {
        ServiceCommand::Create(args) => change::create(d, *args).await,
        ServiceCommand::Update(args) => change::update(d, *args).await,
        ServiceCommand::Scale(args) => change::scale(d, args).await,
        ServiceCommand::Rollback(args) => change::rollback(d, args).await,
        ServiceCommand::Rm(args) => change::rm(d, args).await,
        ServiceCommand::Ls(args) => ls::run(d, args).await.map(|()| 0),
        ServiceCommand::Ps(args) => ps::run(d, args).await.map(|()| 0),
        ServiceCommand::Inspect(args) => inspect::run(d, args).await.map(|()| 0),
        ServiceCommand::Logs(args) => logs::run(d, args).await.map(|()| 0),
    }
}
