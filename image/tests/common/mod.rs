//! Helpers shared by the image crate's tests.
// Each test file uses a different subset of these helpers.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use rswarm_image::fixtures::{BusyboxOptions, TestImage, busybox_image};
use rswarm_image::{ImageStore, RegistryConfig};

/// Fails (never skips) when not root: unpacking makes whiteout device nodes
/// and trusted.* xattrs, and the overlay checks mount.
pub fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root (CAP_MKNOD for whiteouts, CAP_SYS_ADMIN for trusted.* xattrs and overlay mounts)"
    );
}

pub fn busybox(variant: &str) -> TestImage {
    busybox_image(&BusyboxOptions {
        variant: variant.into(),
        ..Default::default()
    })
    .expect("build the busybox test image")
}

pub fn open_store(dir: &Path) -> ImageStore {
    ImageStore::open(dir.join("images"), RegistryConfig::default()).expect("open the store")
}

/// Runs `script` with /bin/sh in a private mount namespace (mounts vanish
/// with it) and returns stdout; panics with stderr on failure.
pub fn in_mount_namespace(script: &str) -> String {
    let output = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", script])
        .output()
        .expect("run unshare (util-linux)");
    assert!(
        output.status.success(),
        "script failed: {script}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Number of entries in a directory.
pub fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}
