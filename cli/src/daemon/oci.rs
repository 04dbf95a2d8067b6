//! Setting up the `oci` driver of this node: offered when runc works and
//! an image source is there; otherwise `node inspect` says why not.

use std::path::Path;
use std::sync::Arc;

use rswarm_agent::runtime::oci::{ImageSource, detect_runc};
use rswarm_agent::runtime::{OciRuntime, OciRuntimeConfig, Runtime, ShimCommand};

/// The `oci` driver on `state_dir`, or the reason the node cannot offer it.
pub(super) fn oci_driver(
    state_dir: &Path,
    shim: ShimCommand,
    images: Option<Arc<dyn ImageSource>>,
) -> Result<Arc<dyn Runtime>, String> {
    let runc = detect_runc()?;
    let images = images.ok_or_else(|| {
        "this node has no image store; images can be neither pulled nor loaded".to_string()
    })?;
    let config = OciRuntimeConfig::new(state_dir.to_path_buf(), shim, runc, images);
    let runtime = OciRuntime::new(config).map_err(|e| format!("cannot start the driver: {e}"))?;
    Ok(Arc::new(runtime))
}
