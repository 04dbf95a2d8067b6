//! A container's root filesystem: the overlay mount of its image's layers
//! (read-only lowers, an upper and a work directory in the task directory),
//! files read from the image without mounting it, and the user resolved
//! against the image's own `/etc/passwd` and `/etc/group`.
//!
//! Invariants: image files are read only when they are regular files in a
//! real (not symlinked) directory of a layer, so an image cannot make the
//! node read its own files; a whiteout in a higher layer hides the file.

use std::ffi::CString;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustix::mount::{MountFlags, UnmountFlags};

use super::bundle::ContainerUser;
use super::error::OciError;
use crate::runtime::limits::OVERLAY_MOUNT_DATA_BYTES_MAX;
use crate::runtime::user::{resolve_user, supplementary_gids};

/// Longest image file read from a layer (`/etc/passwd`, `/etc/group`).
const IMAGE_FILE_BYTES_MAX: u64 = 1024 * 1024;

/// The directories of a task's overlay, in its task directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayDirs {
    pub rootfs: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
}

impl OverlayDirs {
    /// The overlay directories under `task_dir`.
    pub fn in_task_dir(task_dir: &Path) -> Self {
        Self {
            rootfs: task_dir.join("rootfs"),
            upper: task_dir.join("upper"),
            work: task_dir.join("work"),
        }
    }
}

/// The overlayfs options for `layers` (bottom to top).
pub fn overlay_options(layers: &[PathBuf], dirs: &OverlayDirs) -> Result<String, OciError> {
    // overlayfs lists lower directories top first.
    let lower: Vec<String> = layers
        .iter()
        .rev()
        .map(|l| escape_overlay_path(&l.to_string_lossy()))
        .collect();
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        escape_overlay_path(&dirs.upper.to_string_lossy()),
        escape_overlay_path(&dirs.work.to_string_lossy())
    );
    if options.len() > OVERLAY_MOUNT_DATA_BYTES_MAX {
        return Err(OciError::TooManyLayers {
            layers: layers.len(),
        });
    }
    Ok(options)
}

/// overlayfs splits its options at `,` and lower dirs at `:`.
fn escape_overlay_path(path: &str) -> String {
    path.replace('\\', "\\\\")
        .replace(':', "\\:")
        .replace(',', "\\,")
}

/// Mounts the overlay of `layers` at `dirs.rootfs` (made here). An image
/// without layers gets an empty root (a tmpfs would not outlive nothing).
pub fn mount_overlay(layers: &[PathBuf], dirs: &OverlayDirs) -> Result<(), OciError> {
    for dir in [&dirs.rootfs, &dirs.upper, &dirs.work] {
        std::fs::create_dir_all(dir).map_err(OciError::io("create", dir))?;
    }
    if layers.is_empty() {
        return Ok(());
    }
    let options = overlay_options(layers, dirs)?;
    let data = CString::new(options).map_err(|e| OciError::Io {
        action: "mount the overlay at",
        path: dirs.rootfs.clone(),
        source: io::Error::new(io::ErrorKind::InvalidInput, e),
    })?;
    rustix::mount::mount(
        "overlay",
        &dirs.rootfs,
        "overlay",
        MountFlags::empty(),
        data.as_c_str(),
    )
    .map_err(|e| OciError::Io {
        action: "mount the overlay at",
        path: dirs.rootfs.clone(),
        source: e.into(),
    })
}

/// Unmounts `path` if something is mounted there (lazily, so that a
/// process still holding it cannot block the task's removal).
pub fn unmount_if_mounted(path: &Path) -> Result<(), OciError> {
    match rustix::mount::unmount(path, UnmountFlags::DETACH) {
        Ok(()) => Ok(()),
        // EINVAL: not a mount point; ENOENT: not there.
        Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(OciError::Io {
            action: "unmount",
            path: path.to_path_buf(),
            source: e.into(),
        }),
    }
}

/// The content of `relative` (e.g. `etc/passwd`) in the image: from the
/// highest layer that has it; `None` when no layer has it as a regular
/// file or a whiteout hides it.
pub fn read_image_file(layers: &[PathBuf], relative: &str) -> Option<String> {
    for layer in layers.iter().rev() {
        let path = layer.join(relative);
        if !parents_are_real_dirs(layer, relative) {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.file_type().is_char_device() && meta.rdev() == 0 {
            return None;
        }
        if !meta.is_file() || meta.len() > IMAGE_FILE_BYTES_MAX {
            return None;
        }
        return std::fs::read_to_string(&path).ok();
    }
    None
}

fn parents_are_real_dirs(layer: &Path, relative: &str) -> bool {
    let mut dir = layer.to_path_buf();
    let components: Vec<&str> = relative.split('/').filter(|c| !c.is_empty()).collect();
    for component in components.iter().take(components.len().saturating_sub(1)) {
        if *component == ".." {
            return false;
        }
        dir.push(component);
        match std::fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => {}
            _ => return false,
        }
    }
    true
}

/// The user `spec` names (empty: root), resolved against the image's
/// `/etc/passwd` and `/etc/group`, with the groups that list it.
pub fn resolve_container_user(spec: &str, layers: &[PathBuf]) -> Result<ContainerUser, OciError> {
    if spec.is_empty() {
        return Ok(ContainerUser::root());
    }
    let passwd = read_image_file(layers, "etc/passwd").unwrap_or_default();
    let group = read_image_file(layers, "etc/group").unwrap_or_default();
    let user = resolve_user(spec, &passwd, &group)?;
    let mut additional_gids = supplementary_gids(user.uid, &passwd, &group);
    additional_gids.retain(|gid| *gid != user.gid);
    Ok(ContainerUser {
        uid: user.uid,
        gid: user.gid,
        additional_gids,
        home: user.home.to_string_lossy().into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_dirs_go_top_first_and_are_escaped() {
        let dirs = OverlayDirs::in_task_dir(Path::new("/t"));
        let layers = vec![PathBuf::from("/l/bottom"), PathBuf::from("/l/a:b,c")];
        assert_eq!(
            overlay_options(&layers, &dirs).unwrap(),
            "lowerdir=/l/a\\:b\\,c:/l/bottom,upperdir=/t/upper,workdir=/t/work"
        );
        let many = vec![PathBuf::from("/".to_string() + &"x".repeat(100)); 50];
        assert!(matches!(
            overlay_options(&many, &dirs),
            Err(OciError::TooManyLayers { layers: 50 })
        ));
    }

    #[test]
    fn image_files_come_from_the_top_layer_and_never_through_symlinks() {
        let root = tempfile::tempdir().unwrap();
        let bottom = root.path().join("bottom");
        let top = root.path().join("top");
        std::fs::create_dir_all(bottom.join("etc")).unwrap();
        std::fs::create_dir_all(&top).unwrap();
        std::fs::write(bottom.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        let layers = vec![bottom.clone(), top.clone()];
        assert!(
            read_image_file(&layers, "etc/passwd")
                .unwrap()
                .starts_with("root")
        );
        // A top layer whose etc is a symlink to the node's /etc is ignored.
        std::os::unix::fs::symlink("/etc", top.join("etc")).unwrap();
        assert!(
            read_image_file(&layers, "etc/passwd")
                .unwrap()
                .starts_with("root:x:0:0::")
        );
        std::fs::remove_file(top.join("etc")).unwrap();
        std::fs::create_dir(top.join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc/shadow", top.join("etc/passwd")).unwrap();
        assert_eq!(read_image_file(&layers, "etc/passwd"), None);
    }

    #[test]
    fn users_resolve_in_the_image_with_supplementary_groups() {
        let root = tempfile::tempdir().unwrap();
        let layer = root.path().to_path_buf();
        std::fs::create_dir_all(layer.join("etc")).unwrap();
        std::fs::write(
            layer.join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            layer.join("etc/group"),
            "root:x:0:\napp:x:1000:\nwheel:x:10:root,app\naudio:x:29:app\n",
        )
        .unwrap();
        let layers = vec![layer];
        let user = resolve_container_user("app", &layers).unwrap();
        assert_eq!((user.uid, user.gid), (1000, 1000));
        assert_eq!(user.additional_gids, [10, 29]);
        assert_eq!(user.home, "/home/app");
        assert_eq!(
            resolve_container_user("", &layers).unwrap(),
            ContainerUser::root()
        );
        assert!(
            resolve_container_user("ghost", &layers)
                .unwrap_err()
                .rejects_task()
        );
        assert_eq!(
            resolve_container_user("5000:5000", &layers).unwrap().uid,
            5000
        );
    }
}
