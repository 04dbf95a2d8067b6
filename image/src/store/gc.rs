//! Removing images and collecting what nothing uses.
//!
//! Invariants: runs under the store's GC write lock, so no import is
//! writing; a held image is never deleted; blobs and layers are deleted only
//! when no remaining image record references them.

use std::collections::BTreeSet;
use std::fs;

use super::import::layer_size;
use super::layout::hex_of;
use super::{ImageStore, RemoveAction, holders_of};
use crate::error::ImageError;

/// What `prune` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// IDs (config digests) of the images deleted.
    pub deleted: Vec<String>,
    /// Tags removed with them.
    pub untagged: Vec<String>,
    /// Bytes freed on disk (blobs and unpacked layers).
    pub space_reclaimed: u64,
}

impl ImageStore {
    /// Removes a tag, or an image with all its tags (Docker's `rmi`). An
    /// image tasks run is refused unless `force`, and even then only
    /// untagged: its layers stay until the tasks release it.
    pub async fn remove(
        &self,
        reference: &str,
        force: bool,
    ) -> Result<Vec<RemoveAction>, ImageError> {
        let _gc = self.inner.gc.write().await;
        let (record, by_tag) = self.find_local(reference)?;
        let layout = &self.inner.layout;
        let mut state = self.state();
        let Some(current) = state.records.get_mut(&record.digest) else {
            return Err(ImageError::NoSuchImage {
                reference: reference.to_string(),
            });
        };
        // A tag of an image with other tags: just that tag goes.
        if let Some(tag) = &by_tag
            && current.repo_tags.len() > 1
        {
            current.repo_tags.retain(|t| t != tag);
            layout.write_atomic(&layout.record(&current.digest), &super::to_json(current)?)?;
            return Ok(vec![RemoveAction::Untagged(tag.clone())]);
        }
        if by_tag.is_none() && current.repo_tags.len() > 1 && !force {
            return Err(ImageError::MultipleTags {
                image: current.config_digest.clone(),
                tags: current.repo_tags.clone(),
            });
        }
        let current = current.clone();
        let holders = holders_of(&state, &current);
        let mut actions: Vec<RemoveAction> = current
            .repo_tags
            .iter()
            .cloned()
            .map(RemoveAction::Untagged)
            .collect();
        if !holders.is_empty() {
            if !force {
                return Err(ImageError::InUse {
                    image: reference.to_string(),
                    tasks: holders,
                });
            }
            if let Some(held) = state.records.get_mut(&current.digest) {
                held.repo_tags.clear();
                layout.write_atomic(&layout.record(&held.digest), &super::to_json(held)?)?;
            }
            return Ok(actions);
        }
        let path = layout.record(&current.digest);
        fs::remove_file(&path).map_err(|e| ImageError::io("remove image record", &path, e))?;
        state.records.remove(&current.digest);
        actions.push(RemoveAction::Deleted(current.config_digest.clone()));
        drop(state);
        self.sweep()?;
        Ok(actions)
    }

    /// Removes images no task runs — untagged ones only, or every one with
    /// `all` — then every blob and layer no image references.
    pub async fn prune(&self, all: bool) -> Result<PruneReport, ImageError> {
        let _gc = self.inner.gc.write().await;
        let layout = &self.inner.layout;
        let mut report = PruneReport::default();
        {
            let mut state = self.state();
            let victims: Vec<String> = state
                .records
                .values()
                .filter(|r| (all || r.repo_tags.is_empty()) && holders_of(&state, r).is_empty())
                .map(|r| r.digest.clone())
                .collect();
            for digest in victims {
                let path = layout.record(&digest);
                fs::remove_file(&path)
                    .map_err(|e| ImageError::io("remove image record", &path, e))?;
                if let Some(record) = state.records.remove(&digest) {
                    report.untagged.extend(record.repo_tags);
                    report.deleted.push(record.config_digest);
                }
            }
        }
        report.space_reclaimed = self.sweep()?;
        tracing::info!(
            images = report.deleted.len(),
            bytes = report.space_reclaimed,
            "images pruned"
        );
        Ok(report)
    }

    /// Deletes blobs, layers and links that no record references; returns
    /// the bytes freed. The caller holds the GC write lock.
    fn sweep(&self) -> Result<u64, ImageError> {
        let layout = &self.inner.layout;
        let (blobs, layers) = {
            let state = self.state();
            let mut blobs = BTreeSet::new();
            let mut layers = BTreeSet::new();
            for record in state.records.values() {
                blobs.insert(hex_of(&record.digest).to_string());
                blobs.insert(hex_of(&record.config_digest).to_string());
                for layer in &record.layers {
                    blobs.insert(hex_of(&layer.blob).to_string());
                    layers.insert(hex_of(&layer.diff_id).to_string());
                }
            }
            (blobs, layers)
        };
        let mut freed = 0;
        let blobs_dir = layout.blobs_dir();
        for entry in
            fs::read_dir(&blobs_dir).map_err(|e| ImageError::io("list blobs", &blobs_dir, e))?
        {
            let entry = entry.map_err(|e| ImageError::io("list blobs", &blobs_dir, e))?;
            if !blobs.contains(&*entry.file_name().to_string_lossy()) {
                freed += entry.metadata().map_or(0, |m| m.len());
                fs::remove_file(entry.path())
                    .map_err(|e| ImageError::io("remove blob", entry.path(), e))?;
            }
        }
        let layers_dir = layout.layers_dir();
        for entry in
            fs::read_dir(&layers_dir).map_err(|e| ImageError::io("list layers", &layers_dir, e))?
        {
            let entry = entry.map_err(|e| ImageError::io("list layers", &layers_dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !layers.contains(&name) {
                freed += layer_size(layout, &format!("sha256:{name}"));
                fs::remove_dir_all(entry.path())
                    .map_err(|e| ImageError::io("remove layer", entry.path(), e))?;
            }
        }
        let links_dir = layout.links_dir();
        for entry in fs::read_dir(&links_dir)
            .map_err(|e| ImageError::io("list layer links", &links_dir, e))?
        {
            let entry = entry.map_err(|e| ImageError::io("list layer links", &links_dir, e))?;
            // A link whose layer is gone dangles: metadata follows it and fails.
            if fs::metadata(entry.path()).is_err() {
                fs::remove_file(entry.path())
                    .map_err(|e| ImageError::io("remove layer link", entry.path(), e))?;
            }
        }
        Ok(freed)
    }
}
