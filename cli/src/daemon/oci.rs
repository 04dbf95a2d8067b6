//! Setting up the `oci` driver of this node: offered when runc works;
//! otherwise `node inspect` says why not. Its images come from the node's
//! image store (`NodeImages`).

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use rswarm_agent::runtime::oci::{
    ImageRootfs, ImageRuntimeConfig, ImageSource, ImageSourceError, detect_runc,
};
use rswarm_agent::runtime::{OciRuntime, OciRuntimeConfig, Runtime, ShimCommand};
use rswarm_image::{ImageError, ImageStore, LocalImage};
use rswarm_proto::RegistryAuth;

/// The `oci` driver on `state_dir`, or the reason the node cannot offer it.
pub(super) fn oci_driver(
    state_dir: &Path,
    shim: ShimCommand,
    images: Arc<dyn ImageSource>,
) -> Result<Arc<dyn Runtime>, String> {
    let runc = detect_runc()?;
    let config = OciRuntimeConfig::new(state_dir.to_path_buf(), shim, runc, images);
    let runtime = OciRuntime::new(config).map_err(|e| format!("cannot start the driver: {e}"))?;
    Ok(Arc::new(runtime))
}

/// The node's image store as the driver's image source.
#[derive(Clone)]
pub(super) struct NodeImages(pub(super) ImageStore);

impl std::fmt::Debug for NodeImages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeImages")
    }
}

#[async_trait]
impl ImageSource for NodeImages {
    async fn ensure(
        &self,
        reference: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<ImageRootfs, ImageSourceError> {
        let image = self.0.ensure(reference, auth).await.map_err(source_error)?;
        Ok(rootfs(image))
    }

    fn hold(&self, task_id: &str, digest: &str) -> Result<(), ImageSourceError> {
        self.0.hold(task_id, digest).map_err(source_error)
    }

    fn release(&self, task_id: &str) -> Result<(), ImageSourceError> {
        self.0.release(task_id).map_err(source_error)
    }
}

fn rootfs(image: LocalImage) -> ImageRootfs {
    let config = image.config;
    ImageRootfs {
        digest: image.digest,
        layers: image.layers,
        config: ImageRuntimeConfig {
            entrypoint: config.entrypoint,
            cmd: config.cmd,
            env: config.env,
            working_dir: config.working_dir,
            user: config.user,
            stop_signal: config.stop_signal,
            healthcheck: config.healthcheck,
            volumes: config.volumes,
        },
    }
}

fn source_error(error: ImageError) -> ImageSourceError {
    ImageSourceError {
        transient: error.is_transient(),
        reason: error.to_string(),
    }
}
