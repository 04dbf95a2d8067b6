//! Cluster tests: every node is a real `rswarm daemon` process with its own
//! data dir, talking mutual TLS over loopback or between hosts made of
//! network namespaces. One test binary, one module per area.

mod bad_input;
mod chaos;
mod containers;
mod foundation;
mod health;
mod hosts;
mod images;
mod linearizability;
mod secrets;
mod services;
mod volumes;
