//! The node's named volumes, for `rswarm volume ls|rm`: listing them with
//! the tasks that use them, and removing one that no task uses (or, when
//! forced, one that tasks do).
//!
//! Invariant: a volume is "used" while a container directory records it
//! (`mounts::TASK_VOLUMES_FILE`), i.e. from the task's start until its
//! removal, running or not — as Docker keeps a stopped container's volumes.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;

use super::mounts::{self, VOLUME_RECORD_FILE, VolumeRecord};
use crate::shim::records::read_json;

/// A named volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    pub name: String,
    /// Its data directory on the node.
    pub mountpoint: PathBuf,
    pub labels: BTreeMap<String, String>,
    pub created_ns: i64,
    /// Tasks of this node that use it, sorted.
    pub used_by: Vec<String>,
}

/// Why a volume could not be removed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VolumeError {
    #[error("{0}")]
    BadName(String),
    #[error("no such volume: {name}")]
    NotFound { name: String },
    #[error(
        "volume {name} is in use by task(s) {tasks}; remove those tasks (or their service) first, or force with -f"
    )]
    InUse { name: String, tasks: String },
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

/// The named volumes of one node.
#[derive(Debug, Clone)]
pub struct Volumes {
    volumes_dir: PathBuf,
    containers_dir: PathBuf,
}

impl Volumes {
    /// Volumes in `volumes_dir`, used by the containers in
    /// `containers_dir`.
    pub fn new(volumes_dir: PathBuf, containers_dir: PathBuf) -> Self {
        Self {
            volumes_dir,
            containers_dir,
        }
    }

    /// Every volume, sorted by name.
    pub fn list(&self) -> Result<Vec<VolumeInfo>, VolumeError> {
        let users = self.users()?;
        let mut volumes = Vec::new();
        for entry in read_dir(&self.volumes_dir)? {
            let Some(name) = entry.to_str().map(str::to_string) else {
                continue;
            };
            if mounts::check_volume_name(&name).is_err() {
                continue;
            }
            let dir = self.volumes_dir.join(&name);
            let record: VolumeRecord = read_json(&dir.join(VOLUME_RECORD_FILE))
                .ok()
                .flatten()
                .unwrap_or_default();
            volumes.push(VolumeInfo {
                used_by: users.get(&name).cloned().unwrap_or_default(),
                mountpoint: dir.join("_data"),
                labels: record.labels,
                created_ns: record.created_ns,
                name,
            });
        }
        volumes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(volumes)
    }

    /// Removes volume `name` and its data; refuses one in use unless
    /// `force`.
    pub fn remove(&self, name: &str, force: bool) -> Result<(), VolumeError> {
        mounts::check_volume_name(name).map_err(VolumeError::BadName)?;
        let dir = self.volumes_dir.join(name);
        if !dir.is_dir() {
            return Err(VolumeError::NotFound {
                name: name.to_string(),
            });
        }
        if !force && let Some(tasks) = self.users()?.get(name) {
            return Err(VolumeError::InUse {
                name: name.to_string(),
                tasks: tasks.join(", "),
            });
        }
        std::fs::remove_dir_all(&dir).map_err(|source| VolumeError::Io {
            action: "remove",
            path: dir,
            source,
        })
    }

    /// Volume name → the tasks using it.
    fn users(&self) -> Result<BTreeMap<String, Vec<String>>, VolumeError> {
        let mut users: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for task in read_dir(&self.containers_dir)? {
            let Some(task) = task.to_str() else { continue };
            for volume in mounts::volumes_used_by(&self.containers_dir.join(task)) {
                users.entry(volume).or_default().push(task.to_string());
            }
        }
        for tasks in users.values_mut() {
            tasks.sort();
        }
        Ok(users)
    }
}

/// The names in `dir`; none when it does not exist.
fn read_dir(dir: &std::path::Path) -> Result<Vec<std::ffi::OsString>, VolumeError> {
    let error = |source| VolumeError::Io {
        action: "list",
        path: dir.to_path_buf(),
        source,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(error(e)),
    };
    entries
        .map(|entry| entry.map(|e| e.file_name()).map_err(error))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_in_use_are_kept_unless_forced() {
        let root = tempfile::tempdir().unwrap();
        let volumes = Volumes::new(root.path().join("volumes"), root.path().join("containers"));
        assert!(volumes.list().unwrap().is_empty());
        std::fs::create_dir_all(root.path().join("volumes/data/_data")).unwrap();
        std::fs::create_dir_all(root.path().join("volumes/free/_data")).unwrap();
        let task = root.path().join("containers/t1");
        std::fs::create_dir_all(&task).unwrap();
        std::fs::write(task.join(mounts::TASK_VOLUMES_FILE), r#"["data"]"#).unwrap();
        let listed = volumes.list().unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].name, "data");
        assert_eq!(listed[0].used_by, ["t1"]);
        let err = volumes.remove("data", false).unwrap_err();
        assert!(err.to_string().contains("in use by task(s) t1"), "{err}");
        volumes.remove("free", false).unwrap();
        volumes.remove("data", true).unwrap();
        assert!(volumes.list().unwrap().is_empty());
        assert!(matches!(
            volumes.remove("data", false),
            Err(VolumeError::NotFound { .. })
        ));
        assert!(matches!(
            volumes.remove("../x", false),
            Err(VolumeError::BadName(_))
        ));
    }
}
