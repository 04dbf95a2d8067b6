//! The image config: what a container of the image runs, and its layers'
//! diff IDs.
//!
//! Owns: reading OCI and Docker image config JSON into [`ImageConfig`].
//! Docker's `Healthcheck` durations are nanoseconds; [`HealthConfig`] holds
//! milliseconds.

use std::collections::BTreeMap;

use rswarm_proto::HealthConfig;
use serde::{Deserialize, Serialize};

use crate::error::ImageError;

/// What the image says a container should run, as the `oci` driver needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// `ENTRYPOINT`.
    pub entrypoint: Vec<String>,
    /// `CMD`.
    pub cmd: Vec<String>,
    /// `ENV`, as `KEY=value`.
    pub env: Vec<String>,
    /// `WORKDIR`; empty means `/`.
    pub working_dir: String,
    /// `USER` (`name`, `uid`, `uid:gid`); empty means root.
    pub user: String,
    /// `STOPSIGNAL`; empty means SIGTERM.
    pub stop_signal: String,
    /// `HEALTHCHECK`, durations in ms; `None` when the image has none.
    pub healthcheck: Option<HealthConfig>,
    /// `VOLUME` paths.
    pub volumes: Vec<String>,
    /// `LABEL`s.
    pub labels: BTreeMap<String, String>,
}

/// A parsed config blob.
#[derive(Debug, Clone)]
pub(crate) struct ParsedConfig {
    pub(crate) config: ImageConfig,
    /// Diff IDs of the layers, bottom → top.
    pub(crate) diff_ids: Vec<String>,
    /// `created`, RFC 3339, empty when absent.
    pub(crate) created: String,
    pub(crate) os: String,
    pub(crate) architecture: String,
}

#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    created: Option<String>,
    #[serde(default)]
    config: Option<RunConfig>,
    rootfs: RootFs,
}

#[derive(Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RunConfig {
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    env: Option<Vec<String>>,
    working_dir: Option<String>,
    user: Option<String>,
    stop_signal: Option<String>,
    healthcheck: Option<DockerHealthcheck>,
    volumes: Option<BTreeMap<String, serde_json::Value>>,
    labels: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerHealthcheck {
    test: Option<Vec<String>>,
    interval: Option<u64>,
    timeout: Option<u64>,
    retries: Option<u32>,
    start_period: Option<u64>,
}

const NANOS_PER_MILLI: u64 = 1_000_000;

/// Parses a config blob.
pub(crate) fn parse_config(bytes: &[u8]) -> Result<ParsedConfig, ImageError> {
    let file: ConfigFile = serde_json::from_slice(bytes)
        .map_err(|e| ImageError::invalid(format!("image config is not valid JSON: {e}")))?;
    let run = file.config.unwrap_or_default();
    let config = ImageConfig {
        entrypoint: run.entrypoint.unwrap_or_default(),
        cmd: run.cmd.unwrap_or_default(),
        env: run.env.unwrap_or_default(),
        working_dir: run.working_dir.unwrap_or_default(),
        user: run.user.unwrap_or_default(),
        stop_signal: run.stop_signal.unwrap_or_default(),
        healthcheck: run.healthcheck.map(health_config),
        volumes: run
            .volumes
            .map(|v| v.into_keys().collect())
            .unwrap_or_default(),
        labels: run.labels.unwrap_or_default(),
    };
    Ok(ParsedConfig {
        config,
        diff_ids: file.rootfs.diff_ids,
        created: file.created.unwrap_or_default(),
        os: file.os,
        architecture: file.architecture,
    })
}

/// Docker's nanoseconds → our milliseconds; 0 means "inherit the default".
fn health_config(check: DockerHealthcheck) -> HealthConfig {
    let millis = |nanos: Option<u64>| nanos.filter(|n| *n > 0).map(|n| n / NANOS_PER_MILLI);
    HealthConfig {
        test: check.test.unwrap_or_default(),
        interval_ms: millis(check.interval),
        timeout_ms: millis(check.timeout),
        retries: check.retries.filter(|r| *r > 0),
        start_period_ms: millis(check.start_period),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_docker_config_with_healthcheck_in_milliseconds() {
        let json = br#"{
            "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
            "config": {
                "Entrypoint": ["/bin/sh"], "Cmd": ["-c", "sleep 1"], "Env": ["PATH=/bin"],
                "WorkingDir": "/srv", "User": "1000:1000", "StopSignal": "SIGINT",
                "Healthcheck": {"Test": ["CMD-SHELL", "true"], "Interval": 5000000000,
                                "Timeout": 2000000000, "Retries": 4, "StartPeriod": 0},
                "Volumes": {"/data": {}}, "Labels": {"a": "b"}
            },
            "rootfs": {"type": "layers", "diff_ids": ["sha256:aa"]}
        }"#;
        let parsed = parse_config(json).expect("valid config");
        assert_eq!(parsed.config.entrypoint, ["/bin/sh"]);
        assert_eq!(parsed.config.cmd, ["-c", "sleep 1"]);
        assert_eq!(parsed.config.working_dir, "/srv");
        assert_eq!(parsed.config.user, "1000:1000");
        assert_eq!(parsed.config.stop_signal, "SIGINT");
        assert_eq!(parsed.config.volumes, ["/data"]);
        let health = parsed.config.healthcheck.expect("healthcheck");
        assert_eq!(health.test, ["CMD-SHELL", "true"]);
        assert_eq!(health.interval_ms, Some(5000));
        assert_eq!(health.timeout_ms, Some(2000));
        assert_eq!(health.retries, Some(4));
        assert_eq!(health.start_period_ms, None);
        assert_eq!(parsed.diff_ids, ["sha256:aa"]);
    }

    #[test]
    fn a_config_without_rootfs_is_refused() {
        assert!(parse_config(br#"{"config": {}}"#).is_err());
    }
}
