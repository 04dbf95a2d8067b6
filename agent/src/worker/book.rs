//! The worker's record of its assignments on disk: for each task assigned
//! to this node, the task as the managers last sent it and the status this
//! node last observed. A restarted daemon resumes its tasks from it before
//! any manager answers.
//!
//! One JSON file per task, written to a temporary file, synced and renamed
//! into place, so a crash leaves either the old or the new record, never a
//! torn one. A record that cannot be read is reported and skipped: the next
//! COMPLETE assignment set from the managers repairs it.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use rswarm_proto::{Task, TaskStatus};
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::limits::TASK_RECORD_SIZE_MAX;

/// What the worker remembers of one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The task as last assigned.
    pub task: Task,
    /// The status this node last observed (and reported).
    pub status: TaskStatus,
}

/// The records of one node, in `<state dir>/assignments/`.
#[derive(Debug)]
pub struct TaskBook {
    dir: PathBuf,
}

impl TaskBook {
    /// Opens (creating) the record directory under `state_dir`.
    pub fn open(state_dir: &Path) -> std::io::Result<Self> {
        let dir = state_dir.join("assignments");
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    fn path(&self, task_id: &str) -> Option<PathBuf> {
        // Task IDs come from the managers; never let one name another path.
        let safe = !task_id.is_empty()
            && task_id.len() <= 64
            && task_id.chars().all(|c| c.is_ascii_alphanumeric());
        safe.then(|| self.dir.join(format!("{task_id}.json")))
    }

    /// Every readable record, by task ID.
    pub fn load(&self) -> BTreeMap<String, TaskRecord> {
        let mut records = BTreeMap::new();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return records;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            match read_record(&path) {
                Ok(record) => {
                    let id = record.task.meta.as_ref().map(|m| m.id.clone());
                    if let Some(id) = id.filter(|id| self.path(id).as_deref() == Some(&path)) {
                        records.insert(id, record);
                    }
                }
                Err(e) => warn!(path = %path.display(), "skipping unreadable task record: {e}"),
            }
        }
        records
    }

    /// Saves `record` under its task's ID.
    pub fn save(&self, record: &TaskRecord) -> std::io::Result<()> {
        let id = record.task.meta.as_ref().map_or("", |m| m.id.as_str());
        let path = self.path(id).ok_or_else(|| invalid_id(id))?;
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)
    }

    /// Forgets a task.
    pub fn remove(&self, task_id: &str) -> std::io::Result<()> {
        let path = self.path(task_id).ok_or_else(|| invalid_id(task_id))?;
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

fn invalid_id(id: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("invalid task id {id:?}"),
    )
}

fn read_record(path: &Path) -> std::io::Result<TaskRecord> {
    let len = std::fs::metadata(path)?.len();
    if len > TASK_RECORD_SIZE_MAX {
        return Err(std::io::Error::other(format!(
            "{len} bytes is above the {TASK_RECORD_SIZE_MAX}-byte limit"
        )));
    }
    let bytes = std::fs::read(path)?;
    serde_json::from_slice(&bytes).map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rswarm_proto::{Meta, TaskState};

    fn record(id: &str, state: TaskState) -> TaskRecord {
        TaskRecord {
            task: Task {
                meta: Some(Meta {
                    id: id.into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            status: TaskStatus {
                state: state as i32,
                pid: 42,
                ..Default::default()
            },
        }
    }

    #[test]
    fn records_survive_a_reopen_and_can_be_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let book = TaskBook::open(dir.path()).unwrap();
        book.save(&record("t1", TaskState::Running)).unwrap();
        book.save(&record("t2", TaskState::Assigned)).unwrap();
        book.save(&record("t1", TaskState::Complete)).unwrap();
        let loaded = TaskBook::open(dir.path()).unwrap().load();
        assert_eq!(loaded.len(), 2);
        assert_eq!(loaded["t1"], record("t1", TaskState::Complete));
        book.remove("t2").unwrap();
        book.remove("t2").unwrap();
        assert_eq!(book.load().keys().collect::<Vec<_>>(), ["t1"]);
    }

    /// Goal: a restarted daemon resumes a task with the health it last
    /// reported (so it neither flips back to starting nor loses output).
    #[test]
    fn health_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let book = TaskBook::open(dir.path()).unwrap();
        let mut unhealthy = record("t1", TaskState::Running);
        unhealthy.status.health = rswarm_proto::ContainerHealth::Unhealthy as i32;
        unhealthy.status.health_output = "no /ready".into();
        book.save(&unhealthy).unwrap();
        let loaded = TaskBook::open(dir.path()).unwrap().load();
        assert_eq!(loaded["t1"], unhealthy);
    }

    #[test]
    fn bad_ids_and_bad_files_are_refused_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let book = TaskBook::open(dir.path()).unwrap();
        assert!(book.save(&record("../escape", TaskState::New)).is_err());
        assert!(book.remove("a/b").is_err());
        std::fs::write(dir.path().join("assignments/junk.json"), b"{not json").unwrap();
        book.save(&record("ok", TaskState::New)).unwrap();
        assert_eq!(book.load().len(), 1);
    }
}
