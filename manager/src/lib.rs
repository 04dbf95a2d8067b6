//! rswarm's manager: the replicated store on openraft and the services and
//! leader loops around it.
//!
//! - `store`: the in-memory cluster state, batched versioned writes, watches.
//! - `raft`: openraft node, durable log, state machine, transport.
//! - `manager`: a running manager (context shared by services and loops).
//! - `leader`: finding the leader, forwarding, "no leader" errors.
//! - `authz`: who may call what.
//! - `controlapi`: the control API (nodes, services, tasks, cluster, join
//!   tokens, configs, logs).
//! - `spec`: service spec validation and defaults; `container_spec` checks
//!   the container fields (mounts, caps, ulimits, sysctls, network mode).
//! - `file_refs`: a service's secret and config references and sealed
//!   registry credentials.
//! - `ca`: the cluster CA (join, renewal).
//! - `dispatcher`: node sessions and liveness.
//! - `membership`: Raft membership follows node roles.
//! - `scheduler`: places pending tasks on nodes (leader loop + pure core).
//! - `orchestrator`: services to tasks (replicated, global, restarts,
//!   rolling updates and rollbacks, rebalancing, task reaper).
//! - `bootstrap`: a new cluster's first objects.
//! - `secrets_key`: the key secrets are sealed with, kept outside the store.

pub mod authz;
pub mod bootstrap;
pub mod ca;
pub mod container_spec;
pub mod controlapi;
pub mod dispatcher;
pub mod file_refs;
pub mod leader;
pub mod limits;
pub mod manager;
pub mod membership;
pub mod orchestrator;
pub mod raft;
pub mod scheduler;
pub mod secrets_key;
pub mod spec;
pub mod store;

pub use manager::{Manager, ManagerConfig, ManagerContext};
