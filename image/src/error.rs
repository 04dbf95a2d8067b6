//! The one error type of the image crate.
//!
//! Owns: how every failure of pull, load, store and unpack is told to a user.
//! Invariants: registry failures keep the registry's own reason text; an error
//! is transient exactly when trying again later may succeed (unreachable
//! registry, 5xx, timeouts), which is what callers retry on.

use std::path::PathBuf;

/// Everything that can go wrong with images on a node.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The reference does not parse as `[registry/]repository[:tag][@digest]`.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference {
        /// What the user gave.
        reference: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The registry says the image or tag does not exist.
    #[error("image {reference} not found: {reason}")]
    NotFound {
        /// The canonical reference asked for.
        reference: String,
        /// The registry's own words.
        reason: String,
    },
    /// The registry refused the credentials (or their absence).
    #[error("access to {reference} denied: {reason} (pass credentials with --with-registry-auth)")]
    Unauthorized {
        /// The canonical reference asked for.
        reference: String,
        /// The registry's own words.
        reason: String,
    },
    /// The registry could not be reached (DNS, connect, TLS, reset).
    #[error("registry {registry} unreachable: {reason}")]
    Unreachable {
        /// host[:port] of the registry.
        registry: String,
        /// What the network said.
        reason: String,
    },
    /// The registry answered with an error status that is not one of the above.
    #[error("registry error for {reference} (HTTP {status}): {reason}")]
    Registry {
        /// The canonical reference asked for.
        reference: String,
        /// The HTTP status, 0 when the registry sent none we could read.
        status: u16,
        /// The registry's own words.
        reason: String,
    },
    /// A request to the registry took longer than its limit.
    #[error("timed out after {seconds} s while {what}")]
    Timeout {
        /// What was being done.
        what: String,
        /// The limit that ran out.
        seconds: u64,
    },
    /// Content whose sha256 is not the digest it is addressed by.
    #[error(
        "blob {expected} is corrupt: its content hashes to {actual}; remove the image and pull or load it again"
    )]
    DigestMismatch {
        /// The digest it should have.
        expected: String,
        /// The digest of what was read.
        actual: String,
    },
    /// Something is larger than this node accepts.
    #[error("{what} is too large: {size} bytes, the limit is {limit}")]
    TooLarge {
        /// What was too large.
        what: String,
        /// Its size (or the size reached when reading stopped).
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A format or media type rswarm does not handle.
    #[error("{what} is not supported")]
    Unsupported {
        /// What, with its media type or format.
        what: String,
    },
    /// No manifest in an index matches this node's platform.
    #[error("image {reference} has no variant for {platform}")]
    NoMatchingPlatform {
        /// The canonical reference asked for.
        reference: String,
        /// This node's `os/arch`.
        platform: String,
    },
    /// A manifest, config or archive is malformed.
    #[error("invalid image: {reason}")]
    InvalidImage {
        /// What is malformed.
        reason: String,
    },
    /// A layer entry tries to write outside its layer directory.
    #[error("layer {layer} is unsafe: entry {entry:?} {reason}")]
    UnsafePath {
        /// The layer's digest.
        layer: String,
        /// The entry's path in the tar.
        entry: String,
        /// Why it is refused.
        reason: String,
    },
    /// No local image matches the reference.
    #[error("no such image: {reference}")]
    NoSuchImage {
        /// What was asked for.
        reference: String,
    },
    /// A reference matches more than one local image.
    #[error(
        "image reference {reference} is ambiguous: it matches {count} images; give more of the ID"
    )]
    Ambiguous {
        /// What was asked for.
        reference: String,
        /// How many images matched.
        count: usize,
    },
    /// The image is used by tasks on this node.
    #[error("image {image} is in use by task(s) {}; stop them first or use --force", tasks.join(", "))]
    InUse {
        /// The image (reference or ID).
        image: String,
        /// The tasks that hold it.
        tasks: Vec<String>,
    },
    /// Removing an image by ID that several tags point to needs `--force`.
    #[error("image {image} is referenced by several tags ({}); remove them by tag or use --force", tags.join(", "))]
    MultipleTags {
        /// The image ID.
        image: String,
        /// Its tags.
        tags: Vec<String>,
    },
    /// A task ID that cannot name a hold file.
    #[error("invalid task id {task_id:?}: use 1-128 letters, digits, '-', '_' or '.'")]
    InvalidTaskId {
        /// What was given.
        task_id: String,
    },
    /// A filesystem operation in the store failed.
    #[error("{context} ({path}): {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl ImageError {
    /// True when trying again later may succeed: the registry could not be
    /// reached, answered 5xx or 429, or did not answer in time.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::Timeout { .. } => true,
            Self::Registry { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }

    /// Wraps an I/O error with what was being done and on which path.
    pub(crate) fn io(
        context: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            context,
            path: path.into(),
            source,
        }
    }

    /// An image that is malformed, with the reason.
    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        Self::InvalidImage {
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_network_trouble_is_transient() {
        let unreachable = ImageError::Unreachable {
            registry: "r:5000".into(),
            reason: "connection refused".into(),
        };
        assert!(unreachable.is_transient());
        let server = ImageError::Registry {
            reference: "r".into(),
            status: 503,
            reason: "busy".into(),
        };
        assert!(server.is_transient());
        let client = ImageError::Registry {
            reference: "r".into(),
            status: 400,
            reason: "bad".into(),
        };
        assert!(!client.is_transient());
        let missing = ImageError::NotFound {
            reference: "r".into(),
            reason: "manifest unknown".into(),
        };
        assert!(!missing.is_transient());
    }
}
