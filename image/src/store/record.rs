//! Image records: what the store knows about one image, on disk as JSON.

use serde::{Deserialize, Serialize};

/// One stored image, keyed by its manifest digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ImageRecord {
    /// `sha256:` of the platform manifest.
    pub(crate) digest: String,
    /// `sha256:` of the index the manifest was chosen from, when pulled
    /// through one (a reference pinned to it finds this image).
    #[serde(default)]
    pub(crate) index_digest: Option<String>,
    /// Canonical `registry/repository:tag`s pointing here.
    #[serde(default)]
    pub(crate) repo_tags: Vec<String>,
    /// Canonical `registry/repository@sha256:…` it was pulled as.
    #[serde(default)]
    pub(crate) repo_digests: Vec<String>,
    /// `sha256:` of the config blob (Docker's image ID).
    pub(crate) config_digest: String,
    /// Layers bottom → top.
    pub(crate) layers: Vec<LayerRecord>,
    /// Bytes of file content of all layers.
    pub(crate) size: u64,
    /// The config's `created`, RFC 3339.
    #[serde(default)]
    pub(crate) created: String,
    /// When this node stored it, seconds since the epoch.
    pub(crate) stored_unix: u64,
}

/// One layer of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LayerRecord {
    /// The blob (compressed tar) digest.
    pub(crate) blob: String,
    /// The uncompressed tar digest: the unpacked directory's key.
    pub(crate) diff_id: String,
}

impl ImageRecord {
    /// True when a reference pinned to `digest` means this image.
    pub(crate) fn has_digest(&self, digest: &str) -> bool {
        self.digest == digest || self.index_digest.as_deref() == Some(digest)
    }
}
