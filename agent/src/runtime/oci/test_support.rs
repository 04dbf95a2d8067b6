//! A test image for the `oci` driver without a registry: `BusyboxImage`
//! builds a one-layer busybox root filesystem from the node's
//! `/usr/bin/busybox` (Debian's busybox-static) and serves it as every
//! reference. For tests of this crate and of others (the integration
//! harness); not used by the daemon.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use rswarm_proto::RegistryAuth;

use super::image::{ImageRootfs, ImageRuntimeConfig, ImageSource, ImageSourceError};

/// Where Debian's busybox-static installs the static busybox.
pub const BUSYBOX: &str = "/usr/bin/busybox";

/// The fake digest of the busybox image.
pub const BUSYBOX_DIGEST: &str =
    "sha256:0000000000000000000000000000000000000000000000000000000000b05yb0";

/// Users of the test image besides root: `app` (1000:1000, also in group
/// `staff` 50) and `nobody`.
const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
app:x:1000:1000:app:/home/app:/bin/sh\n\
nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\nstaff:x:50:app\napp:x:1000:\nnogroup:x:65534:\n";

/// A busybox image served for every reference.
#[derive(Debug)]
pub struct BusyboxImage {
    layer: PathBuf,
    config: Mutex<ImageRuntimeConfig>,
    failure: Mutex<Option<ImageSourceError>>,
    holds: Mutex<BTreeMap<String, String>>,
}

impl BusyboxImage {
    /// Builds the root filesystem in `dir/layer` (made here). Fails with a
    /// message naming the package when busybox is missing.
    pub fn build(dir: &Path) -> io::Result<Self> {
        let layer = dir.join("layer");
        make_rootfs(&layer)?;
        Ok(Self {
            layer,
            config: Mutex::new(ImageRuntimeConfig {
                cmd: vec!["sh".to_string()],
                env: vec![
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
                ],
                ..ImageRuntimeConfig::default()
            }),
            failure: Mutex::new(None),
            holds: Mutex::new(BTreeMap::new()),
        })
    }

    /// The layer directory.
    pub fn layer(&self) -> &Path {
        &self.layer
    }

    /// Changes the image config served from now on.
    pub fn set_config(&self, config: ImageRuntimeConfig) {
        *lock(&self.config) = config;
    }

    /// Makes `ensure` fail with `error` from now on (`None`: succeed).
    pub fn fail_with(&self, error: Option<ImageSourceError>) {
        *lock(&self.failure) = error;
    }

    /// The holds: task id → digest.
    pub fn holds(&self) -> BTreeMap<String, String> {
        lock(&self.holds).clone()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[async_trait]
impl ImageSource for BusyboxImage {
    async fn ensure(
        &self,
        _reference: &str,
        _auth: Option<&RegistryAuth>,
    ) -> Result<ImageRootfs, ImageSourceError> {
        if let Some(error) = lock(&self.failure).clone() {
            return Err(error);
        }
        Ok(ImageRootfs {
            digest: BUSYBOX_DIGEST.to_string(),
            layers: vec![self.layer.clone()],
            config: lock(&self.config).clone(),
        })
    }

    fn hold(&self, task_id: &str, digest: &str) -> Result<(), ImageSourceError> {
        lock(&self.holds).insert(task_id.to_string(), digest.to_string());
        Ok(())
    }

    fn release(&self, task_id: &str) -> Result<(), ImageSourceError> {
        lock(&self.holds).remove(task_id);
        Ok(())
    }
}

/// busybox, its applets as symlinks, the usual directories, and users.
fn make_rootfs(root: &Path) -> io::Result<()> {
    if !Path::new(BUSYBOX).is_file() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{BUSYBOX} is missing: apt-get install busybox-static"),
        ));
    }
    for dir in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "root", "run", "var",
        "home/app", "tmp",
    ] {
        std::fs::create_dir_all(root.join(dir))?;
    }
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777))?;
    std::os::unix::fs::chown(root.join("home/app"), Some(1000), Some(1000))?;
    std::fs::copy(BUSYBOX, root.join("bin/busybox"))?;
    let list = std::process::Command::new(BUSYBOX).arg("--list").output()?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim();
        if applet.is_empty() || applet == "busybox" || applet.contains('/') {
            continue;
        }
        let link = root.join("bin").join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", link)?;
        }
    }
    std::fs::write(root.join("etc/passwd"), PASSWD)?;
    std::fs::write(root.join("etc/group"), GROUP)?;
    Ok(())
}
