//! The `oci` driver's errors, and which of them reject a task (it can
//! never run as specified) rather than fail it.

use std::io;
use std::path::PathBuf;

use super::capabilities::UnknownCapability;
use super::seccomp::ProfileError;
use crate::runtime::user::UserError;

/// Why the `oci` driver could not prepare, start or exec into a task.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OciError {
    #[error("the oci driver runs images: give the service an image")]
    NoImage,
    #[error("image {reference}: {reason}")]
    Image {
        reference: String,
        reason: String,
        transient: bool,
    },
    #[error(
        "neither the image nor the service gives a command to run; give one (service create IMAGE COMMAND)"
    )]
    NoCommand,
    #[error("environment entry {entry:?} is not KEY=VALUE")]
    BadEnv { entry: String },
    #[error("working directory {dir:?} is not an absolute path; give one that starts with /")]
    BadWorkdir { dir: String },
    #[error(transparent)]
    User(#[from] UserError),
    #[error(transparent)]
    Capability(#[from] UnknownCapability),
    #[error("ulimit {name:?} is not known; use one of {known}")]
    UnknownUlimit { name: String, known: String },
    #[error("ulimit {name}: soft limit {soft} is above the hard limit {hard} or negative")]
    BadUlimit { name: String, soft: i64, hard: i64 },
    #[error("sysctl {name:?} cannot be set in a container: {reason}")]
    Sysctl { name: String, reason: &'static str },
    #[error(
        "network mode {mode:?} is not available: overlay networks are not available yet; use host or none"
    )]
    NetworkMode { mode: String },
    #[error("mount at {target:?}: {reason}")]
    Mount { target: String, reason: String },
    #[error(
        "--init needs {path} on the node, which is missing; install it (apt-get install tini) or drop --init"
    )]
    InitMissing { path: PathBuf },
    #[error(
        "the image has {layers} layers, too many for one overlay mount on this node; flatten the image"
    )]
    TooManyLayers { layers: usize },
    #[error(transparent)]
    Seccomp(#[from] ProfileError),
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("runc exec failed: {message}")]
    Exec { message: String },
}

impl OciError {
    /// Whether the task can never run as specified on this node.
    pub fn rejects_task(&self) -> bool {
        match self {
            OciError::Image { transient, .. } => !transient,
            OciError::Seccomp(_) | OciError::Io { .. } | OciError::Exec { .. } => false,
            _ => true,
        }
    }

    /// An I/O error while doing `action` on `path`.
    pub(super) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| OciError::Io {
            action,
            path,
            source,
        }
    }
}
