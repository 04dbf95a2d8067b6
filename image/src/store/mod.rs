//! The node's image store: images by manifest digest, their blobs, their
//! layers unpacked once in overlay format and shared, and which task runs
//! which image.
//!
//! Owns: everything under `<data-dir>/images` (layout in [`layout`]).
//! Invariants: an image record is written only after all its blobs are
//! stored and its layers unpacked, so a recorded image is complete; a tag
//! points at one image at most (pulling a moved tag moves it); removal and
//! garbage collection take the store's GC lock for writing, pulls and loads
//! take it for reading, so GC never deletes what an import is writing; a
//! held image (a task runs it) is never deleted, only untagged by a forced
//! `remove`; two imports of the same blob or layer at once do the work once.

mod gc;
pub(crate) mod import;
pub(crate) mod layout;
pub(crate) mod record;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rswarm_proto::RegistryAuth;
use serde::{Deserialize, Serialize};

use crate::config::{ImageConfig, parse_config};
use crate::error::ImageError;
use crate::limits::CONFIG_BYTES_MAX;
use crate::reference::ImageRef;
use crate::registry::{RegistryConfig, RegistrySession};

pub use gc::PruneReport;
use layout::{Layout, hex_of};
use record::ImageRecord;

/// Longest task ID a hold file may be named by.
const TASK_ID_LEN_MAX: usize = 128;

/// An image ready to run: what the `oci` driver needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalImage {
    /// `sha256:` of the manifest (the digest a task runs).
    pub digest: String,
    /// The canonical reference it was asked for by.
    pub reference: String,
    /// What the image says to run.
    pub config: ImageConfig,
    /// The layers' directories in overlay format, bottom → top (short
    /// paths, so a mount's `lowerdir=` stays within one page).
    pub layers: Vec<PathBuf>,
}

/// One image as `image ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSummary {
    /// Docker's image ID: `sha256:` of the config.
    pub id: String,
    /// `sha256:` of the manifest.
    pub digest: String,
    /// Canonical `registry/repository:tag`s.
    pub repo_tags: Vec<String>,
    /// Canonical `registry/repository@sha256:…`s.
    pub repo_digests: Vec<String>,
    /// Bytes of file content of its layers.
    pub size: u64,
    /// The image's own creation time, RFC 3339 (may be empty).
    pub created: String,
    /// When this node stored it, seconds since the epoch.
    pub stored_unix: u64,
    /// Tasks on this node that run it.
    pub holders: Vec<String>,
}

/// What `remove` did, in Docker's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoveAction {
    /// A tag was removed (`Untagged: busybox:latest`).
    Untagged(String),
    /// An image was deleted (`Deleted: sha256:…`).
    Deleted(String),
}

/// The node's image store. Cheap to clone; all clones share one state.
#[derive(Clone)]
pub struct ImageStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) layout: Layout,
    registry: RegistryConfig,
    state: Mutex<State>,
    /// Pulls and loads read, removal and GC write (see the module doc).
    pub(crate) gc: tokio::sync::RwLock<()>,
    /// One lock per blob or layer being fetched, so concurrent imports of
    /// the same content do it once.
    in_flight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

#[derive(Default)]
struct State {
    records: BTreeMap<String, ImageRecord>,
    /// task ID → manifest digest.
    holds: BTreeMap<String, String>,
}

impl ImageStore {
    /// Opens (creating if needed) the store in `dir`; work left in `tmp/` by
    /// a crash is discarded.
    pub fn open(dir: PathBuf, registry: RegistryConfig) -> Result<Self, ImageError> {
        let layout = Layout::new(dir);
        let tmp = layout.tmp_dir();
        if tmp.exists() {
            fs::remove_dir_all(&tmp)
                .map_err(|e| ImageError::io("clear temporary files", &tmp, e))?;
        }
        layout.create_dirs()?;
        let state = State {
            records: load_records(&layout)?,
            holds: load_holds(&layout)?,
        };
        tracing::debug!(
            images = state.records.len(),
            holds = state.holds.len(),
            "image store opened"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                layout,
                registry,
                state: Mutex::new(state),
                gc: tokio::sync::RwLock::new(()),
                in_flight: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The registry settings this store pulls with.
    pub fn registry_config(&self) -> &RegistryConfig {
        &self.inner.registry
    }

    /// Local when the reference has a digest that is present; otherwise pull
    /// (a tag is re-resolved and pulled if it moved); if the registry is
    /// unreachable and a local image has the tag, use it.
    pub async fn ensure(
        &self,
        reference: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<LocalImage, ImageError> {
        let parsed = ImageRef::parse(reference)?;
        if let Some(digest) = parsed.digest()
            && let Some(record) = self.find_by_digest(digest)
        {
            return self.local_image(&record, &parsed);
        }
        match self.pull(reference, auth).await {
            Err(error) if error.is_transient() && parsed.digest().is_none() => {
                let Some(record) = self.find_by_tag(&parsed) else {
                    return Err(error);
                };
                tracing::warn!(%error, image = %parsed, "registry unreachable; using the local image");
                self.local_image(&record, &parsed)
            }
            other => other,
        }
    }

    /// Pulls `reference` from its registry (only the blobs and layers not
    /// already here are downloaded) and tags it.
    pub async fn pull(
        &self,
        reference: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<LocalImage, ImageError> {
        let parsed = ImageRef::parse(reference)?;
        let _gc = self.inner.gc.read().await;
        let session = RegistrySession::new(&parsed, auth, &self.inner.registry);
        let record = import::pull(self, &session, &parsed).await?;
        tracing::info!(image = %parsed, digest = %record.digest, "image pulled");
        self.local_image(&record, &parsed)
    }

    /// The local image a reference (tag, digest or ID prefix) names.
    pub fn inspect(&self, reference: &str) -> Result<LocalImage, ImageError> {
        let (record, _) = self.find_local(reference)?;
        let shown = record
            .repo_tags
            .first()
            .and_then(|tag| ImageRef::parse(tag).ok())
            .map_or_else(|| record.digest.clone(), |r| r.to_string());
        let mut image = self.local_image_unchecked(&record)?;
        image.reference = shown;
        Ok(image)
    }

    /// Records that `task_id` runs the image `digest`, so it is not removed
    /// under it. Survives a daemon restart.
    pub fn hold(&self, task_id: &str, digest: &str) -> Result<(), ImageError> {
        validate_task_id(task_id)?;
        let mut state = self.state();
        if !state.records.values().any(|r| r.has_digest(digest)) {
            return Err(ImageError::NoSuchImage {
                reference: digest.to_string(),
            });
        }
        let path = self.inner.layout.holds_dir().join(task_id);
        self.inner.layout.write_atomic(&path, digest.as_bytes())?;
        state.holds.insert(task_id.to_string(), digest.to_string());
        Ok(())
    }

    /// Forgets what `task_id` held; nothing to forget is fine.
    pub fn release(&self, task_id: &str) -> Result<(), ImageError> {
        validate_task_id(task_id)?;
        let mut state = self.state();
        let path = self.inner.layout.holds_dir().join(task_id);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ImageError::io("remove hold", &path, e)),
        }
        state.holds.remove(task_id);
        Ok(())
    }

    /// Every image, newest first.
    pub fn list(&self) -> Vec<ImageSummary> {
        let state = self.state();
        let mut images: Vec<ImageSummary> = state
            .records
            .values()
            .map(|record| ImageSummary {
                id: record.config_digest.clone(),
                digest: record.digest.clone(),
                repo_tags: record.repo_tags.clone(),
                repo_digests: record.repo_digests.clone(),
                size: record.size,
                created: record.created.clone(),
                stored_unix: record.stored_unix,
                holders: holders_of(&state, record),
            })
            .collect();
        images.sort_by(|a, b| b.stored_unix.cmp(&a.stored_unix).then(a.id.cmp(&b.id)));
        images
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data, still consistent
        // with what is on disk for every completed write.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn find_by_digest(&self, digest: &str) -> Option<ImageRecord> {
        self.state()
            .records
            .values()
            .find(|r| r.has_digest(digest))
            .cloned()
    }

    fn find_by_tag(&self, reference: &ImageRef) -> Option<ImageRecord> {
        let tag = reference.name_tag()?;
        self.state()
            .records
            .values()
            .find(|r| r.repo_tags.contains(&tag))
            .cloned()
    }

    /// Finds a local image by tag, digest or ID (prefix), and says which
    /// tag named it when it was a tag.
    fn find_local(&self, reference: &str) -> Result<(ImageRecord, Option<String>), ImageError> {
        let no_such = || ImageError::NoSuchImage {
            reference: reference.to_string(),
        };
        if let Some(prefix) = id_prefix(reference) {
            let state = self.state();
            let matches: Vec<&ImageRecord> = state
                .records
                .values()
                .filter(|r| {
                    hex_of(&r.config_digest).starts_with(prefix)
                        || hex_of(&r.digest).starts_with(prefix)
                })
                .collect();
            let distinct: std::collections::BTreeSet<&str> =
                matches.iter().map(|r| r.digest.as_str()).collect();
            match (matches.first(), distinct.len()) {
                (Some(record), 1) => return Ok(((*record).clone(), None)),
                (_, 0) => {}
                (_, count) => {
                    return Err(ImageError::Ambiguous {
                        reference: reference.to_string(),
                        count,
                    });
                }
            }
        }
        let parsed = ImageRef::parse(reference).map_err(|_| no_such())?;
        if let Some(digest) = parsed.digest() {
            return self
                .find_by_digest(digest)
                .map(|r| (r, None))
                .ok_or_else(no_such);
        }
        let record = self.find_by_tag(&parsed).ok_or_else(no_such)?;
        Ok((record, parsed.name_tag()))
    }

    /// A record as a [`LocalImage`], checking its config and layers are there.
    fn local_image(
        &self,
        record: &ImageRecord,
        asked: &ImageRef,
    ) -> Result<LocalImage, ImageError> {
        let mut image = self.local_image_unchecked(record)?;
        image.reference = asked.to_string();
        Ok(image)
    }

    fn local_image_unchecked(&self, record: &ImageRecord) -> Result<LocalImage, ImageError> {
        let layout = &self.inner.layout;
        let config = parse_config(&layout.read_blob(&record.config_digest, CONFIG_BYTES_MAX)?)?;
        let mut layers = Vec::with_capacity(record.layers.len());
        for layer in &record.layers {
            let link = layout.short_link(&layer.diff_id);
            if !link.join(".").is_dir() {
                return Err(ImageError::invalid(format!(
                    "image {} is incomplete: layer {} is missing; remove it and pull or load it again",
                    record.digest, layer.diff_id
                )));
            }
            layers.push(link);
        }
        Ok(LocalImage {
            digest: record.digest.clone(),
            reference: record.digest.clone(),
            config: config.config,
            layers,
        })
    }

    /// The lock for one blob or layer key; held while it is fetched.
    async fn key_lock(&self, key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut map = self
                .inner
                .in_flight
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            // Drop locks nobody waits on, so the map stays as small as the
            // work in progress.
            map.retain(|_, lock| Arc::strong_count(lock) > 1);
            map.entry(key.to_string()).or_default().clone()
        };
        lock.lock_owned().await
    }

    /// Writes a record and moves its tags away from any other image.
    fn commit_record(&self, record: ImageRecord) -> Result<ImageRecord, ImageError> {
        let layout = &self.inner.layout;
        let mut state = self.state();
        let mut merged = state
            .records
            .get(&record.digest)
            .cloned()
            .unwrap_or_else(|| record.clone());
        for tag in &record.repo_tags {
            if !merged.repo_tags.contains(tag) {
                merged.repo_tags.push(tag.clone());
            }
        }
        for repo_digest in &record.repo_digests {
            if !merged.repo_digests.contains(repo_digest) {
                merged.repo_digests.push(repo_digest.clone());
            }
        }
        if merged.index_digest.is_none() {
            merged.index_digest.clone_from(&record.index_digest);
        }
        let others: Vec<String> = state
            .records
            .values()
            .filter(|r| {
                r.digest != merged.digest
                    && r.repo_tags.iter().any(|t| merged.repo_tags.contains(t))
            })
            .map(|r| r.digest.clone())
            .collect();
        for digest in others {
            if let Some(other) = state.records.get_mut(&digest) {
                other.repo_tags.retain(|t| !merged.repo_tags.contains(t));
                layout.write_atomic(&layout.record(&other.digest), &to_json(other)?)?;
            }
        }
        layout.write_atomic(&layout.record(&merged.digest), &to_json(&merged)?)?;
        state.records.insert(merged.digest.clone(), merged.clone());
        Ok(merged)
    }
}

fn to_json(record: &ImageRecord) -> Result<Vec<u8>, ImageError> {
    serde_json::to_vec_pretty(record)
        .map_err(|e| ImageError::invalid(format!("cannot encode image record: {e}")))
}

fn holders_of(state: &State, record: &ImageRecord) -> Vec<String> {
    state
        .holds
        .iter()
        .filter(|(_, digest)| record.has_digest(digest))
        .map(|(task, _)| task.clone())
        .collect()
}

/// The hex digits of an ID or ID prefix (`3f2a…`, `sha256:3f2a…`), when the
/// input is one; at least 4 digits, as short prefixes match too much.
fn id_prefix(input: &str) -> Option<&str> {
    let hex = input.strip_prefix("sha256:").unwrap_or(input);
    let is_hex = hex.len() >= 4
        && hex.len() <= 64
        && hex
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase());
    is_hex.then_some(hex)
}

fn validate_task_id(task_id: &str) -> Result<(), ImageError> {
    let valid = !task_id.is_empty()
        && task_id.len() <= TASK_ID_LEN_MAX
        && !task_id.starts_with('.')
        && task_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if valid {
        Ok(())
    } else {
        Err(ImageError::InvalidTaskId {
            task_id: task_id.to_string(),
        })
    }
}

fn load_records(layout: &Layout) -> Result<BTreeMap<String, ImageRecord>, ImageError> {
    let dir = layout.records_dir();
    let mut records = BTreeMap::new();
    for entry in fs::read_dir(&dir).map_err(|e| ImageError::io("list image records", &dir, e))? {
        let path = entry
            .map_err(|e| ImageError::io("list image records", &dir, e))?
            .path();
        let parsed = fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                serde_json::from_slice::<ImageRecord>(&bytes).map_err(|e| e.to_string())
            });
        match parsed {
            Ok(record) => {
                records.insert(record.digest.clone(), record);
            }
            // One damaged record must not stop the node; the image is
            // pulled again when a task needs it.
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "ignoring an unreadable image record")
            }
        }
    }
    Ok(records)
}

fn load_holds(layout: &Layout) -> Result<BTreeMap<String, String>, ImageError> {
    let dir = layout.holds_dir();
    let mut holds = BTreeMap::new();
    for entry in fs::read_dir(&dir).map_err(|e| ImageError::io("list holds", &dir, e))? {
        let entry = entry.map_err(|e| ImageError::io("list holds", &dir, e))?;
        let digest = fs::read_to_string(entry.path())
            .map_err(|e| ImageError::io("read hold", entry.path(), e))?;
        holds.insert(
            entry.file_name().to_string_lossy().into_owned(),
            digest.trim().to_string(),
        );
    }
    Ok(holds)
}
