//! Pinning a service's image to a digest when it is created or updated, as
//! Docker does, so that every node runs the same image even if the tag moves.
//!
//! Only `oci` specs whose image has no digest are resolved, and not when the
//! request says `no_resolve_image`. A registry that cannot be asked in time
//! leaves the tag as given and returns Docker's warning instead of failing
//! the call.

use std::time::Duration;

use rswarm_image::{ImageRef, RegistryConfig, resolve_digest};
use rswarm_proto::{RegistryAuth, ServiceSpec};
use tonic::Status;
use tracing::{info, warn};

use crate::limits::REQUEST_TIMEOUT;

/// How long resolution may take: well inside the call's own limit, leaving
/// time for the proposal.
pub const IMAGE_RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);
const _: () = assert!(IMAGE_RESOLVE_TIMEOUT.as_millis() * 2 <= REQUEST_TIMEOUT.as_millis());

/// The driver whose specs name images.
const IMAGE_DRIVER: &str = "oci";

/// Rewrites the spec's image to `name:tag@sha256:…` when it should and can;
/// returns the warnings for the user.
pub async fn pin_image(
    spec: &mut ServiceSpec,
    auth: Option<&RegistryAuth>,
    no_resolve: bool,
    registry: &RegistryConfig,
) -> Result<Vec<String>, Status> {
    let Some(task) = spec.task.as_mut() else {
        return Ok(Vec::new());
    };
    if no_resolve || task.driver != IMAGE_DRIVER {
        return Ok(Vec::new());
    }
    let Some(container) = task.container.as_mut().filter(|c| !c.image.is_empty()) else {
        return Ok(Vec::new());
    };
    let parsed =
        ImageRef::parse(&container.image).map_err(|e| Status::invalid_argument(e.to_string()))?;
    if parsed.digest().is_some() {
        return Ok(Vec::new());
    }
    let outcome = tokio::time::timeout(
        IMAGE_RESOLVE_TIMEOUT,
        resolve_digest(&container.image, auth, registry),
    )
    .await;
    let pinned = match outcome {
        Ok(Ok(pinned)) => pinned,
        Ok(Err(error)) => return Ok(vec![unresolved(&container.image, &error.to_string())]),
        Err(_) => {
            return Ok(vec![unresolved(
                &container.image,
                "the registry did not answer in time",
            )]);
        }
    };
    let digest = pinned
        .rsplit_once('@')
        .map(|(_, digest)| digest.to_string())
        .unwrap_or_default();
    let familiar = format!(
        "{}:{}@{digest}",
        parsed.familiar_name(),
        parsed.tag().unwrap_or(rswarm_image::reference::DEFAULT_TAG)
    );
    info!(image = %container.image, pinned = %familiar, "image pinned to its digest");
    container.image = familiar;
    Ok(Vec::new())
}

/// Docker's warning, word for word; the reason goes to the log only (it may
/// name the registry's internals).
fn unresolved(image: &str, reason: &str) -> String {
    warn!(image, reason, "cannot resolve the image's digest");
    format!(
        "image {image} could not be accessed on a registry to record its digest. Each node will access \
         {image} independently, possibly leading to different nodes running different versions of the image."
    )
}

#[cfg(test)]
mod tests {
    use rswarm_proto::{ContainerSpec, TaskSpec};

    use super::*;

    fn spec(driver: &str, image: &str) -> ServiceSpec {
        ServiceSpec {
            task: Some(TaskSpec {
                driver: driver.into(),
                container: Some(ContainerSpec {
                    image: image.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn image(spec: &ServiceSpec) -> &str {
        spec.task
            .as_ref()
            .and_then(|t| t.container.as_ref())
            .map_or("", |c| c.image.as_str())
    }

    #[tokio::test]
    async fn unreachable_registry_keeps_the_tag_and_warns_like_docker() {
        // Nothing listens on port 1 of loopback: refused at once.
        let mut s = spec("oci", "127.0.0.1:1/bb:latest");
        let warnings = pin_image(&mut s, None, false, &RegistryConfig::default())
            .await
            .expect("no error");
        assert_eq!(image(&s), "127.0.0.1:1/bb:latest");
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0]
                .starts_with("image 127.0.0.1:1/bb:latest could not be accessed on a registry")
        );
    }

    #[tokio::test]
    async fn pinned_process_and_opted_out_specs_are_left_alone() {
        let digest = format!("sha256:{}", "a".repeat(64));
        for (mut s, no_resolve) in [
            (spec("oci", &format!("127.0.0.1:1/bb@{digest}")), false),
            (spec("process", "127.0.0.1:1/bb"), false),
            (spec("oci", "127.0.0.1:1/bb"), true),
        ] {
            let before = s.clone();
            let warnings = pin_image(&mut s, None, no_resolve, &RegistryConfig::default())
                .await
                .expect("ok");
            assert!(warnings.is_empty());
            assert_eq!(s, before);
        }
    }

    #[tokio::test]
    async fn a_malformed_image_is_refused() {
        let mut s = spec("oci", "Bad/Name");
        let error = pin_image(&mut s, None, false, &RegistryConfig::default())
            .await
            .expect_err("invalid");
        assert_eq!(error.code(), tonic::Code::InvalidArgument);
    }
}
