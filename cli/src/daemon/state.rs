//! What a node remembers about its cluster membership across restarts:
//! `<data-dir>/node.json` (IDs, addresses), `<data-dir>/certs/` (key and
//! certificates) and `<data-dir>/raft/` (managers only).
//!
//! **Invariant:** the cluster ID in `node.json`, in the certificate and in
//! `raft/cluster-id` agree; a daemon finding otherwise refuses to start and
//! names the file.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rswarm_pki::NodeCredentials;
use serde::{Deserialize, Serialize};

/// The node's membership record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeRecord {
    /// This node's ID.
    pub node_id: String,
    /// The cluster's ID.
    pub cluster_id: String,
    /// host:port this node advertises.
    pub advertise_addr: String,
    /// Managers' addresses last known, leader first.
    pub managers: Vec<String>,
    /// Raft ID, when the node is or was a manager.
    #[serde(default)]
    pub raft_id: u64,
}

/// Paths under the data dir.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// The data dir at `root`.
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    /// The data dir itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `node.json`.
    pub fn record_path(&self) -> PathBuf {
        self.root.join("node.json")
    }

    /// The certificates directory.
    pub fn certs_dir(&self) -> PathBuf {
        self.root.join("certs")
    }

    /// The Raft directory.
    pub fn raft_dir(&self) -> PathBuf {
        self.root.join("raft")
    }

    /// The worker's directory: its assignment records and the process
    /// driver's task directories (state, logs).
    pub fn worker_dir(&self) -> PathBuf {
        self.root.join("worker")
    }

    /// Loads the membership record and credentials, or None on a node that
    /// is not part of a cluster.
    pub fn load(&self) -> Result<Option<(NodeRecord, NodeCredentials)>> {
        let path = self.record_path();
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let record: NodeRecord = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is corrupted; restore it or run 'rswarm leave --force'",
                path.display()
            )
        })?;
        let creds = NodeCredentials::load(&self.certs_dir())
            .with_context(|| {
                format!(
                    "cannot load the node certificates in {}",
                    self.certs_dir().display()
                )
            })?
            .with_context(|| {
                format!(
                    "{} names cluster {} but {} holds no certificates",
                    path.display(),
                    record.cluster_id,
                    self.certs_dir().display()
                )
            })?;
        let subject = creds.info()?.subject;
        if subject.cluster_id != record.cluster_id || subject.node_id != record.node_id {
            bail!(
                "{} belongs to node {} of cluster {}, but the certificate in {} is for node {} of cluster {}: \
                 this data dir mixes two clusters; use another --data-dir or remove it",
                path.display(),
                record.node_id,
                record.cluster_id,
                self.certs_dir().display(),
                subject.node_id,
                subject.cluster_id
            );
        }
        self.check_raft_cluster(&record.cluster_id)?;
        Ok(Some((record, creds)))
    }

    /// Refuses Raft data written by another cluster.
    pub fn check_raft_cluster(&self, cluster_id: &str) -> Result<()> {
        let path = self.raft_dir().join("cluster-id");
        match fs::read_to_string(&path) {
            Ok(found) if found.trim() != cluster_id => bail!(
                "{} says this raft data belongs to cluster {}, not {cluster_id}: \
                 the data dir is from another cluster; use another --data-dir or remove it",
                path.display(),
                found.trim()
            ),
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Marks the Raft directory as this cluster's.
    pub fn stamp_raft_cluster(&self, cluster_id: &str) -> Result<()> {
        fs::create_dir_all(self.raft_dir())?;
        write_atomic(&self.raft_dir().join("cluster-id"), cluster_id.as_bytes())
    }

    /// Saves the membership record and credentials.
    pub fn save(&self, record: &NodeRecord, creds: &NodeCredentials) -> Result<()> {
        fs::create_dir_all(&self.root)
            .with_context(|| format!("cannot create {}", self.root.display()))?;
        creds.save(&self.certs_dir())?;
        self.save_record(record)
    }

    /// Saves the membership record.
    pub fn save_record(&self, record: &NodeRecord) -> Result<()> {
        let text = serde_json::to_vec_pretty(record)?;
        write_atomic(&self.record_path(), &text)
    }

    /// Forgets the cluster: removes the record, certificates, Raft data and
    /// what the worker left.
    pub fn wipe(&self) -> Result<()> {
        for dir in [self.raft_dir(), self.certs_dir(), self.worker_dir()] {
            match fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot remove {}", dir.display()));
                }
            }
        }
        match fs::remove_file(self.record_path()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => {
                Err(e).with_context(|| format!("cannot remove {}", self.record_path().display()))
            }
        }
    }

    /// Removes the Raft data (after this node stopped being a manager).
    pub fn wipe_raft(&self) -> Result<()> {
        match fs::remove_dir_all(self.raft_dir()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => {
                Err(e).with_context(|| format!("cannot remove {}", self.raft_dir().display()))
            }
        }
    }
}

/// Writes a file so that a crash leaves either the old or the new content.
fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f =
            fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(data)?;
        f.sync_all()
            .with_context(|| format!("cannot sync {}", tmp.display()))?;
    }
    fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    if let Some(d) = path.parent().and_then(|dir| fs::File::open(dir).ok()) {
        let _ = d.sync_all();
    }
    Ok(())
}
