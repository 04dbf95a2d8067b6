//! Cluster tests: every node is a real `rswarm daemon` process with its own
//! data dir, talking mutual TLS over loopback. One test binary, one module
//! per area.

mod bad_input;
mod foundation;
mod linearizability;
mod services;
