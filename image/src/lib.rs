//! rswarm's node image store.
//!
//! # Layout
//! - [`reference`]: Docker-style image references (`busybox` →
//!   `docker.io/library/busybox:latest`).
//! - [`registry`]: registry access through oci-client ([`RegistryConfig`],
//!   [`resolve_digest`]).
//! - [`manifest`], [`config`]: OCI and Docker v2 manifests, indexes and
//!   image configs.
//! - [`unpack`]: one layer into an overlay-format directory.
//! - [`store`]: the store itself ([`ImageStore`]): blobs, layers, records,
//!   holds and garbage collection.
//! - [`archive`]: `image load` of OCI layouts and `docker save` archives.
//! - `fixtures` (feature `test-fixtures`): test images and a local registry.
//!
//! **Boundary:** depends on `rswarm-proto` only among rswarm's crates; knows
//! nothing about tasks beyond their IDs (holds), nor about containers.

pub mod archive;
pub mod config;
pub mod error;
pub mod limits;
pub mod manifest;
pub mod reference;
pub mod registry;
pub mod store;
pub mod unpack;

#[cfg(feature = "test-fixtures")]
pub mod fixtures;

pub use archive::LoadedImage;
pub use config::ImageConfig;
pub use error::ImageError;
pub use reference::ImageRef;
pub use registry::{RegistryConfig, resolve_digest};
pub use store::{ImageStore, ImageSummary, LocalImage, PruneReport, RemoveAction};
