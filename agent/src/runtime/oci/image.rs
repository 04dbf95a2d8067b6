//! How the `oci` driver gets images: the `ImageSource` trait (the node's
//! image store implements it; tests use `test_support::BusyboxImage`), what
//! an image gives a container (`ImageRootfs`), and the bounded retry of
//! transient failures.
//!
//! Invariants: the driver never reads registries or blobs itself; a layer
//! directory handed over is unpacked in overlayfs format (whiteouts as
//! `c 0 0` devices, opaque directories marked) and never changes while a
//! task holds the image.

use std::fmt;
use std::path::PathBuf;

use async_trait::async_trait;
use rswarm_proto::{HealthConfig, RegistryAuth};
use serde::{Deserialize, Serialize};

use crate::runtime::limits::Backoff;

/// An image ready to be a container's root: its layers and its config.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRootfs {
    /// The manifest digest (`sha256:…`), reported in the task status.
    pub digest: String,
    /// Layer directories in overlayfs format, bottom to top.
    pub layers: Vec<PathBuf>,
    pub config: ImageRuntimeConfig,
}

/// What the image's config says about running it (Docker's `config`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageRuntimeConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=VALUE` entries.
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    pub stop_signal: String,
    #[serde(with = "stored_health")]
    pub healthcheck: Option<HealthConfig>,
    /// Paths the image declares as volumes (`VOLUME`).
    pub volumes: Vec<String>,
}

/// Why an image could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct ImageSourceError {
    /// The reason, as the registry or the store gave it.
    pub reason: String,
    /// Whether trying again may help (registry unreachable, a timeout),
    /// rather than never (not found, unauthorized, a corrupt blob).
    pub transient: bool,
}

/// Where the driver gets images. The node's image store implements it.
#[async_trait]
pub trait ImageSource: Send + Sync + fmt::Debug {
    /// The image `reference` names, pulled if it is not on the node yet.
    async fn ensure(
        &self,
        reference: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<ImageRootfs, ImageSourceError>;

    /// Marks the image `digest` as used by `task_id` (garbage collection
    /// keeps it until `release`).
    fn hold(&self, task_id: &str, digest: &str) -> Result<(), ImageSourceError>;

    /// Drops the hold of `task_id` (none is fine).
    fn release(&self, task_id: &str) -> Result<(), ImageSourceError>;
}

/// `ensure`, retrying transient failures as `backoff` says; the error
/// carries the last reason.
pub(super) async fn ensure_with_retries(
    source: &dyn ImageSource,
    reference: &str,
    auth: Option<&RegistryAuth>,
    backoff: Backoff,
) -> Result<ImageRootfs, ImageSourceError> {
    let mut delay = backoff.delay_min;
    let mut attempt = 1;
    loop {
        match source.ensure(reference, auth).await {
            Ok(image) => return Ok(image),
            Err(e) if !e.transient || attempt >= backoff.attempts_max => return Err(e),
            Err(e) => {
                tracing::info!(attempt, reference, "image not available yet: {e}; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(backoff.delay_max);
                attempt += 1;
            }
        }
    }
}

/// `HealthConfig` is a wire type without serde; the driver keeps the
/// image's health check on disk (so it survives a daemon restart) in this
/// twin.
mod stored_health {
    use rswarm_proto::HealthConfig;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Stored {
        test: Vec<String>,
        interval_ms: Option<u64>,
        timeout_ms: Option<u64>,
        retries: Option<u32>,
        start_period_ms: Option<u64>,
    }

    pub(super) fn serialize<S: Serializer>(
        value: &Option<HealthConfig>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        value
            .as_ref()
            .map(|h| Stored {
                test: h.test.clone(),
                interval_ms: h.interval_ms,
                timeout_ms: h.timeout_ms,
                retries: h.retries,
                start_period_ms: h.start_period_ms,
            })
            .serialize(serializer)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<HealthConfig>, D::Error> {
        Ok(
            Option::<Stored>::deserialize(deserializer)?.map(|s| HealthConfig {
                test: s.test,
                interval_ms: s.interval_ms,
                timeout_ms: s.timeout_ms,
                retries: s.retries,
                start_period_ms: s.start_period_ms,
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Debug)]
    struct Flaky {
        failures: Mutex<Vec<ImageSourceError>>,
    }

    #[async_trait]
    impl ImageSource for Flaky {
        async fn ensure(
            &self,
            _reference: &str,
            _auth: Option<&RegistryAuth>,
        ) -> Result<ImageRootfs, ImageSourceError> {
            match self.failures.lock().unwrap().pop() {
                Some(e) => Err(e),
                None => Ok(ImageRootfs {
                    digest: "sha256:x".into(),
                    layers: Vec::new(),
                    config: ImageRuntimeConfig::default(),
                }),
            }
        }
        fn hold(&self, _: &str, _: &str) -> Result<(), ImageSourceError> {
            Ok(())
        }
        fn release(&self, _: &str) -> Result<(), ImageSourceError> {
            Ok(())
        }
    }

    fn error(reason: &str, transient: bool) -> ImageSourceError {
        ImageSourceError {
            reason: reason.into(),
            transient,
        }
    }

    const QUICK: Backoff = Backoff {
        attempts_max: 4,
        delay_min: std::time::Duration::from_millis(1),
        delay_max: std::time::Duration::from_millis(2),
    };

    #[tokio::test]
    async fn transient_failures_are_retried_and_permanent_ones_are_not() {
        let source = Flaky {
            failures: Mutex::new(vec![error("unreachable", true), error("timeout", true)]),
        };
        assert!(ensure_with_retries(&source, "x", None, QUICK).await.is_ok());
        let source = Flaky {
            failures: Mutex::new(vec![error("unreachable", true), error("not found", false)]),
        };
        let err = ensure_with_retries(&source, "x", None, QUICK)
            .await
            .unwrap_err();
        assert_eq!(err.reason, "not found");
        assert_eq!(
            source.failures.lock().unwrap().len(),
            1,
            "no retry after it"
        );
    }

    #[tokio::test]
    async fn retries_are_bounded_and_keep_the_last_reason() {
        let failures = (0..QUICK.attempts_max + 2)
            .map(|n| error(&format!("unreachable {n}"), true))
            .collect();
        let source = Flaky {
            failures: Mutex::new(failures),
        };
        let err = ensure_with_retries(&source, "x", None, QUICK)
            .await
            .unwrap_err();
        assert!(err.transient);
        assert_eq!(source.failures.lock().unwrap().len(), 2);
    }

    #[test]
    fn the_image_health_check_survives_the_disk() {
        let config = ImageRuntimeConfig {
            healthcheck: Some(HealthConfig {
                test: vec!["CMD".into(), "true".into()],
                interval_ms: Some(500),
                ..HealthConfig::default()
            }),
            ..ImageRuntimeConfig::default()
        };
        let json = serde_json::to_string(&config).unwrap();
        assert_eq!(
            serde_json::from_str::<ImageRuntimeConfig>(&json).unwrap(),
            config
        );
    }
}
