//! A container's own mounts: the spec's bind, volume and tmpfs mounts,
//! anonymous volumes for the image's `VOLUME`s, the secret and config files
//! (on a per-task tmpfs), and the generated `/etc/hostname` and
//! `/etc/hosts`.
//!
//! Layout: named volumes live in `<state dir>/volumes/<name>/_data` and
//! outlive tasks; anonymous volumes in `<task dir>/volumes/<n>` go with
//! the task; secret and config files in `<task dir>/files`, a tmpfs, so
//! their data never reaches a disk.
//!
//! Invariants: targets are absolute and unique; a new volume is filled
//! from the image once, when it is made (unless `volume_nocopy`); the
//! names of the named volumes a task uses are recorded in its directory
//! (`volumes.json`) so that `volume rm` can refuse a volume in use.

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rswarm_proto::{Mount as SpecMount, MountType};
use rustix::mount::MountFlags;
use serde::{Deserialize, Serialize};

use super::error::OciError;
use super::runtime_spec::Mount;
use crate::runtime::FileInput;
use crate::runtime::limits::{TASK_FILES_TMPFS_BYTES, VOLUME_COPY_ENTRIES_MAX};

/// Where secrets with a relative target appear.
pub const SECRETS_DIR: &str = "/run/secrets";
/// The named volumes a task uses, in its task directory.
pub const TASK_VOLUMES_FILE: &str = "volumes.json";
/// A named volume's record, beside its `_data`.
pub const VOLUME_RECORD_FILE: &str = "volume.json";
/// Longest volume name.
const VOLUME_NAME_BYTES_MAX: usize = 64;

/// A named volume's record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub name: String,
    pub labels: std::collections::BTreeMap<String, String>,
    /// Nanoseconds since the epoch.
    pub created_ns: i64,
}

/// Where a task's mounts come from.
#[derive(Debug, Clone, Copy)]
pub struct MountSources<'a> {
    /// `<state dir>/volumes`.
    pub volumes_dir: &'a Path,
    pub task_dir: &'a Path,
    /// The mounted root filesystem, for copying image content into new
    /// volumes.
    pub rootfs: &'a Path,
}

/// Checks the spec's mounts without touching the node: absolute unique
/// targets, absolute bind sources that exist, valid volume names.
pub fn validate(mounts: &[SpecMount]) -> Result<(), OciError> {
    let mut targets = HashSet::new();
    for mount in mounts {
        let refuse = |reason: String| OciError::Mount {
            target: mount.target.clone(),
            reason,
        };
        if !mount.target.starts_with('/') {
            return Err(refuse("the target must be an absolute path".into()));
        }
        if !targets.insert(normalize_target(&mount.target)) {
            return Err(refuse(
                "two mounts have this target; give each its own".into(),
            ));
        }
        match MountType::try_from(mount.r#type) {
            Ok(MountType::Bind) => {
                if !mount.source.starts_with('/') {
                    return Err(refuse(format!(
                        "bind source {:?} must be an absolute path on the node",
                        mount.source
                    )));
                }
                if !Path::new(&mount.source).exists() {
                    return Err(refuse(format!(
                        "bind source {} does not exist on this node; create it or use a volume",
                        mount.source
                    )));
                }
            }
            Ok(MountType::Volume) => {
                if !mount.source.is_empty() {
                    check_volume_name(&mount.source).map_err(refuse)?;
                }
            }
            Ok(MountType::Tmpfs) => {
                if mount.tmpfs_size_bytes < 0 {
                    return Err(refuse("the tmpfs size must not be negative".into()));
                }
            }
            Err(_) => return Err(refuse(format!("unknown mount type {}", mount.r#type))),
        }
    }
    Ok(())
}

fn normalize_target(target: &str) -> String {
    let trimmed = target.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_string()
    } else {
        trimmed.to_string()
    }
}

/// Checks a volume name: letters, digits, `_`, `.`, `-`, starting with a
/// letter or digit (Docker's rule), so it is a safe directory name.
pub fn check_volume_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= VOLUME_NAME_BYTES_MAX
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "volume name {name:?} is not valid; use letters, digits, '_', '.' or '-', starting with a letter or digit"
        ))
    }
}

/// The spec's mounts and the image's volumes as runtime-spec mounts,
/// making volumes as needed; also returns the named volumes used.
pub fn prepare(
    sources: MountSources<'_>,
    mounts: &[SpecMount],
    image_volumes: &[String],
) -> Result<(Vec<Mount>, Vec<String>), OciError> {
    let mut resolved = Vec::new();
    let mut named = Vec::new();
    let mut anonymous = 0usize;
    for mount in mounts {
        let entry = match MountType::try_from(mount.r#type) {
            Ok(MountType::Bind) => bind(&mount.source, &mount.target, mount.read_only),
            Ok(MountType::Tmpfs) => tmpfs(mount),
            Ok(MountType::Volume) if mount.source.is_empty() => {
                anonymous += 1;
                let dir =
                    anonymous_volume(sources, anonymous, &mount.target, !mount.volume_nocopy)?;
                bind(&dir.to_string_lossy(), &mount.target, mount.read_only)
            }
            Ok(MountType::Volume) => {
                let dir = named_volume(sources, mount)?;
                named.push(mount.source.clone());
                bind(&dir.to_string_lossy(), &mount.target, mount.read_only)
            }
            Err(_) => {
                return Err(OciError::Mount {
                    target: mount.target.clone(),
                    reason: format!("unknown mount type {}", mount.r#type),
                });
            }
        };
        resolved.push(entry);
    }
    let taken: HashSet<String> = mounts.iter().map(|m| normalize_target(&m.target)).collect();
    for target in image_volumes {
        if target.starts_with('/') && !taken.contains(&normalize_target(target)) {
            anonymous += 1;
            let dir = anonymous_volume(sources, anonymous, target, true)?;
            resolved.push(bind(&dir.to_string_lossy(), target, false));
        }
    }
    Ok((resolved, named))
}

fn bind(source: &str, target: &str, read_only: bool) -> Mount {
    let mut options = vec!["rbind".to_string(), "rprivate".to_string()];
    if read_only {
        options.push("ro".to_string());
    }
    Mount {
        destination: target.to_string(),
        kind: "bind".to_string(),
        source: source.to_string(),
        options,
    }
}

fn tmpfs(mount: &SpecMount) -> Mount {
    let mode = if mount.tmpfs_mode == 0 {
        0o1777
    } else {
        mount.tmpfs_mode
    };
    let mut options = vec![
        "nosuid".to_string(),
        "nodev".to_string(),
        format!("mode={mode:o}"),
    ];
    if mount.tmpfs_size_bytes > 0 {
        options.push(format!("size={}", mount.tmpfs_size_bytes));
    }
    if mount.read_only {
        options.push("ro".to_string());
    }
    Mount {
        destination: mount.target.clone(),
        kind: "tmpfs".to_string(),
        source: "tmpfs".to_string(),
        options,
    }
}

fn anonymous_volume(
    sources: MountSources<'_>,
    index: usize,
    target: &str,
    copy: bool,
) -> Result<PathBuf, OciError> {
    let dir = sources.task_dir.join("volumes").join(index.to_string());
    std::fs::create_dir_all(&dir).map_err(OciError::io("create", &dir))?;
    if copy {
        copy_image_content(sources.rootfs, target, &dir)?;
    }
    Ok(dir)
}

/// The `_data` directory of the named volume, made (and filled from the
/// image) on first use.
fn named_volume(sources: MountSources<'_>, mount: &SpecMount) -> Result<PathBuf, OciError> {
    let volume = sources.volumes_dir.join(&mount.source);
    let data = volume.join("_data");
    if data.is_dir() {
        return Ok(data);
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&data)
        .map_err(OciError::io("create the volume", &data))?;
    let record = VolumeRecord {
        name: mount.source.clone(),
        labels: mount
            .volume_labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        created_ns: crate::logs::now_ns(),
    };
    let record_path = volume.join(VOLUME_RECORD_FILE);
    crate::shim::records::write_json(&record_path, &record)
        .map_err(OciError::io("write", &record_path))?;
    if !mount.volume_nocopy {
        copy_image_content(sources.rootfs, &mount.target, &data)?;
    }
    Ok(data)
}

/// Copies what the image has at `target` into the new volume `dir`.
fn copy_image_content(rootfs: &Path, target: &str, dir: &Path) -> Result<(), OciError> {
    let source = rootfs.join(target.trim_start_matches('/'));
    // Only a real directory of the image (a symlink could point anywhere
    // on the node, the image being untrusted).
    match std::fs::symlink_metadata(&source) {
        Ok(meta) if meta.is_dir() => {}
        _ => return Ok(()),
    }
    let mut budget = VOLUME_COPY_ENTRIES_MAX;
    copy_tree(&source, dir, &mut budget).map_err(OciError::io("copy the image's files into", dir))
}

/// Copies directories, regular files and symlinks with their modes and
/// owners; other entries (devices, sockets) are left out.
fn copy_tree(from: &Path, to: &Path, budget: &mut usize) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(from)?;
    std::fs::set_permissions(to, meta.permissions())?;
    std::os::unix::fs::lchown(to, Some(meta_uid(&meta)), Some(meta_gid(&meta)))?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if *budget == 0 {
            return Err(std::io::Error::other(format!(
                "more than {VOLUME_COPY_ENTRIES_MAX} entries"
            )));
        }
        *budget -= 1;
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        let meta = std::fs::symlink_metadata(&source)?;
        let kind = meta.file_type();
        if kind.is_dir() {
            std::fs::create_dir(&target)?;
            copy_tree(&source, &target, budget)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&source)?, &target)?;
        } else if kind.is_file() {
            std::fs::copy(&source, &target)?;
        } else {
            continue;
        }
        std::os::unix::fs::lchown(&target, Some(meta_uid(&meta)), Some(meta_gid(&meta)))?;
    }
    Ok(())
}

fn meta_uid(meta: &std::fs::Metadata) -> u32 {
    std::os::unix::fs::MetadataExt::uid(meta)
}

fn meta_gid(meta: &std::fs::Metadata) -> u32 {
    std::os::unix::fs::MetadataExt::gid(meta)
}

/// Mounts the task's private tmpfs for secret and config files at `dir`
/// (mode 0700, size-limited) and writes `files` into it; returns their
/// read-only bind mounts. The data never touches a disk.
pub fn prepare_task_files(
    dir: &Path,
    secrets: &[FileInput],
    configs: &[FileInput],
) -> Result<Vec<Mount>, OciError> {
    if secrets.is_empty() && configs.is_empty() {
        return Ok(Vec::new());
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(OciError::io("create", dir))?;
    let options = format!("size={TASK_FILES_TMPFS_BYTES},mode=0700");
    let data = std::ffi::CString::new(options).map_err(|e| OciError::Io {
        action: "mount a tmpfs at",
        path: dir.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
    })?;
    rustix::mount::mount(
        "tmpfs",
        dir,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        data.as_c_str(),
    )
    .map_err(|e| OciError::Io {
        action: "mount a tmpfs at",
        path: dir.to_path_buf(),
        source: e.into(),
    })?;
    let mut mounts = Vec::new();
    let inputs = secrets
        .iter()
        .map(|s| (s, true))
        .chain(configs.iter().map(|c| (c, false)));
    for (index, (input, is_secret)) in inputs.enumerate() {
        let file = dir.join(format!(
            "{}-{index}",
            if is_secret { "secret" } else { "config" }
        ));
        write_task_file(&file, input)?;
        mounts.push(bind(
            &file.to_string_lossy(),
            &file_target(input, is_secret),
            true,
        ));
    }
    Ok(mounts)
}

/// Where a secret or config appears: a relative secret target goes under
/// `/run/secrets/`, a relative config target under `/`; empty: the name.
pub fn file_target(input: &FileInput, is_secret: bool) -> String {
    let name = if input.target.name.is_empty() {
        &input.name
    } else {
        &input.target.name
    };
    if name.starts_with('/') {
        name.clone()
    } else if is_secret {
        format!("{SECRETS_DIR}/{name}")
    } else {
        format!("/{name}")
    }
}

fn write_task_file(path: &Path, input: &FileInput) -> Result<(), OciError> {
    let mode = if input.target.mode == 0 {
        0o444
    } else {
        input.target.mode & 0o7777
    };
    let parse_id = |text: &str, what: &str| -> Result<u32, OciError> {
        if text.is_empty() {
            return Ok(0);
        }
        text.parse().map_err(|_| OciError::Mount {
            target: input.name.clone(),
            reason: format!("{what} {text:?} of the file is not a number; give a numeric id"),
        })
    };
    let uid = parse_id(&input.target.uid, "uid")?;
    let gid = parse_id(&input.target.gid, "gid")?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(OciError::io("create", path))?;
    file.write_all(&input.data)
        .map_err(OciError::io("write", path))?;
    std::os::unix::fs::fchown(&file, Some(uid), Some(gid)).map_err(OciError::io("chown", path))?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(OciError::io("chmod", path))
}

/// Writes `/etc/hostname` and `/etc/hosts` for the container into
/// `<task dir>/etc` and returns their bind mounts.
pub fn etc_files(
    task_dir: &Path,
    hostname: &str,
    host_network: bool,
) -> Result<Vec<Mount>, OciError> {
    let dir = task_dir.join("etc");
    std::fs::create_dir_all(&dir).map_err(OciError::io("create", &dir))?;
    let mut files = vec![
        ("hostname", format!("{hostname}\n")),
        (
            "hosts",
            format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n"),
        ),
    ];
    if host_network && let Ok(resolv) = std::fs::read_to_string("/etc/resolv.conf") {
        files.push(("resolv.conf", resolv));
    }
    let mut mounts = Vec::new();
    for (name, content) in files {
        let path = dir.join(name);
        std::fs::write(&path, content).map_err(OciError::io("write", &path))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
            .map_err(OciError::io("chmod", &path))?;
        mounts.push(bind(
            &path.to_string_lossy(),
            &format!("/etc/{name}"),
            false,
        ));
    }
    Ok(mounts)
}

/// Sorts mounts so that a parent is mounted before what is inside it.
pub fn sort_for_mounting(mounts: &mut [Mount]) {
    mounts.sort_by_key(|m| Path::new(&m.destination).components().count());
}

/// The named volumes task directory `task_dir` records as used.
pub fn volumes_used_by(task_dir: &Path) -> Vec<String> {
    crate::shim::records::read_json::<Vec<String>>(&task_dir.join(TASK_VOLUMES_FILE))
        .ok()
        .flatten()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_mount(kind: MountType, source: &str, target: &str) -> SpecMount {
        SpecMount {
            r#type: kind as i32,
            source: source.into(),
            target: target.into(),
            ..SpecMount::default()
        }
    }

    #[test]
    fn mounts_are_checked_before_anything_is_made() {
        assert!(validate(&[spec_mount(MountType::Bind, "/tmp", "/data")]).is_ok());
        let cases = [
            (
                vec![spec_mount(MountType::Tmpfs, "", "relative")],
                "absolute",
            ),
            (
                vec![
                    spec_mount(MountType::Tmpfs, "", "/a"),
                    spec_mount(MountType::Tmpfs, "", "/a/"),
                ],
                "two mounts",
            ),
            (
                vec![spec_mount(MountType::Bind, "/no/such/dir/here", "/a")],
                "does not exist",
            ),
            (
                vec![spec_mount(MountType::Bind, "tmp", "/a")],
                "absolute path on the node",
            ),
            (
                vec![spec_mount(MountType::Volume, "../etc", "/a")],
                "not valid",
            ),
        ];
        for (mounts, expected) in cases {
            let err = validate(&mounts).unwrap_err();
            assert!(
                err.rejects_task() && err.to_string().contains(expected),
                "{err}"
            );
        }
    }

    #[test]
    fn tmpfs_and_bind_options() {
        let mut mount = spec_mount(MountType::Tmpfs, "", "/scratch");
        mount.tmpfs_size_bytes = 1 << 20;
        mount.tmpfs_mode = 0o700;
        let tmpfs = tmpfs(&mount);
        assert_eq!(
            tmpfs.options,
            ["nosuid", "nodev", "mode=700", "size=1048576"]
        );
        assert_eq!(bind("/a", "/b", true).options, ["rbind", "rprivate", "ro"]);
    }

    #[test]
    fn file_targets_follow_docker() {
        let input = |name: &str, target: &str| FileInput {
            name: name.into(),
            target: rswarm_proto::FileTarget {
                name: target.into(),
                ..rswarm_proto::FileTarget::default()
            },
            data: std::sync::Arc::from(&b"x"[..]),
        };
        assert_eq!(
            file_target(&input("db-pass", ""), true),
            "/run/secrets/db-pass"
        );
        assert_eq!(
            file_target(&input("db-pass", "pw"), true),
            "/run/secrets/pw"
        );
        assert_eq!(file_target(&input("s", "/etc/pw"), true), "/etc/pw");
        assert_eq!(file_target(&input("app.conf", ""), false), "/app.conf");
        assert_eq!(
            file_target(&input("c", "/etc/app.conf"), false),
            "/etc/app.conf"
        );
    }

    #[test]
    fn new_volumes_get_the_image_content_once() {
        let root = tempfile::tempdir().unwrap();
        let rootfs = root.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("data/sub")).unwrap();
        std::fs::write(rootfs.join("data/sub/seed"), "from the image").unwrap();
        std::os::unix::fs::symlink("sub/seed", rootfs.join("data/link")).unwrap();
        let task_dir = root.path().join("task");
        std::fs::create_dir_all(&task_dir).unwrap();
        let volumes_dir = root.path().join("volumes");
        let sources = MountSources {
            volumes_dir: &volumes_dir,
            task_dir: &task_dir,
            rootfs: &rootfs,
        };
        let mounts = [spec_mount(MountType::Volume, "keep", "/data")];
        let (resolved, named) =
            prepare(sources, &mounts, &["/cache".into(), "/data".into()]).unwrap();
        assert_eq!(named, ["keep"]);
        assert_eq!(
            resolved.len(),
            2,
            "the image's /data volume is the named one"
        );
        let data = volumes_dir.join("keep/_data");
        assert_eq!(
            std::fs::read_to_string(data.join("sub/seed")).unwrap(),
            "from the image"
        );
        assert_eq!(
            std::fs::read_link(data.join("link")).unwrap(),
            Path::new("sub/seed")
        );
        std::fs::write(data.join("sub/seed"), "changed by a task").unwrap();
        prepare(sources, &mounts, &[]).unwrap();
        assert_eq!(
            std::fs::read_to_string(data.join("sub/seed")).unwrap(),
            "changed by a task",
            "an existing volume is not filled again"
        );
        assert!(
            task_dir.join("volumes/1").is_dir(),
            "anonymous volume for /cache"
        );
    }
}
