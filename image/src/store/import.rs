//! Bringing an image into the store from a registry or an unpacked archive:
//! manifest, config, then each layer in manifest order (bottom → top), each
//! verified, stored, and unpacked once.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use super::ImageStore;
use super::layout::hex_of;
use super::record::{ImageRecord, LayerRecord};
use crate::config::parse_config;
use crate::error::ImageError;
use crate::limits::{CONFIG_BYTES_MAX, IMAGE_BYTES_MAX};
use crate::manifest::{self, Descriptor, Parsed, node_platform};
use crate::reference::ImageRef;
use crate::registry::RegistrySession;
use crate::unpack::unpack_layer;

/// Where the blobs of an image come from.
pub(crate) enum BlobSource<'a> {
    /// Downloaded from a registry.
    Registry(&'a RegistrySession),
    /// Files of an archive spooled to disk, by digest.
    Files(&'a BTreeMap<String, PathBuf>),
}

/// What to call an imported image.
#[derive(Default)]
pub(crate) struct Naming {
    pub(crate) index_digest: Option<String>,
    pub(crate) repo_tags: Vec<String>,
    pub(crate) repo_digests: Vec<String>,
}

/// Pulls `reference`: its manifest (an index resolved to this node's
/// platform), then what is missing of it.
pub(crate) async fn pull(
    store: &ImageStore,
    session: &RegistrySession,
    reference: &ImageRef,
) -> Result<ImageRecord, ImageError> {
    let (bytes, digest) = session.manifest(reference).await?;
    let (bytes, digest, index_digest) = match manifest::parse(&bytes)? {
        Parsed::Image { .. } => (bytes, digest, None),
        Parsed::Index(entries) => {
            let entry = manifest::choose_platform(&entries).ok_or_else(|| {
                ImageError::NoMatchingPlatform {
                    reference: reference.to_string(),
                    platform: format!("{}/{}", node_platform().0, node_platform().1),
                }
            })?;
            let (bytes, platform_digest) = session
                .manifest(&reference.with_digest(&entry.digest))
                .await?;
            (bytes, platform_digest, Some(digest))
        }
    };
    let pinned = index_digest.as_deref().unwrap_or(&digest);
    let naming = Naming {
        index_digest: index_digest.clone(),
        // A pull by digest tags nothing (as in Docker): a tag pinned in a
        // service spec may have moved since, and must not move back here.
        repo_tags: if reference.digest().is_none() {
            reference.name_tag().into_iter().collect()
        } else {
            Vec::new()
        },
        repo_digests: vec![format!("{}@{pinned}", reference.name())],
    };
    import_manifest(
        store,
        &bytes,
        &digest,
        naming,
        &BlobSource::Registry(session),
    )
    .await
}

/// Stores one image manifest and everything it references, then records it.
pub(crate) async fn import_manifest(
    store: &ImageStore,
    bytes: &[u8],
    digest: &str,
    naming: Naming,
    source: &BlobSource<'_>,
) -> Result<ImageRecord, ImageError> {
    let Parsed::Image { config, layers } = manifest::parse(bytes)? else {
        return Err(ImageError::invalid(format!(
            "{digest} is an index where an image manifest was expected"
        )));
    };
    check_sizes(&config, &layers)?;
    let layout = &store.inner.layout;
    layout.put_blob_bytes(digest, bytes)?;
    ensure_blob(store, &config, source).await?;
    let parsed = parse_config(&layout.read_blob(&config.digest, CONFIG_BYTES_MAX)?)?;
    check_platform(&parsed.os, &parsed.architecture, digest)?;
    if parsed.diff_ids.len() != layers.len() {
        return Err(ImageError::invalid(format!(
            "image {digest} lists {} layers but its config has {} diff IDs",
            layers.len(),
            parsed.diff_ids.len()
        )));
    }
    let mut size = 0;
    let mut layer_records = Vec::with_capacity(layers.len());
    for (layer, diff_id) in layers.iter().zip(&parsed.diff_ids) {
        size += ensure_layer(store, layer, diff_id, source).await?;
        layer_records.push(LayerRecord {
            blob: layer.digest.clone(),
            diff_id: diff_id.clone(),
        });
    }
    let record = ImageRecord {
        digest: digest.to_string(),
        index_digest: naming.index_digest,
        repo_tags: naming.repo_tags,
        repo_digests: naming.repo_digests,
        config_digest: config.digest.clone(),
        layers: layer_records,
        size,
        created: parsed.created,
        stored_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    store.commit_record(record)
}

fn check_sizes(config: &Descriptor, layers: &[Descriptor]) -> Result<(), ImageError> {
    if config.size < 0 || config.size as u64 > CONFIG_BYTES_MAX {
        return Err(ImageError::TooLarge {
            what: format!("config {}", config.digest),
            size: config.size.max(0) as u64,
            limit: CONFIG_BYTES_MAX,
        });
    }
    let total: u64 = layers.iter().map(|l| l.size.max(0) as u64).sum();
    if total > IMAGE_BYTES_MAX {
        return Err(ImageError::TooLarge {
            what: "image (layers)".into(),
            size: total,
            limit: IMAGE_BYTES_MAX,
        });
    }
    Ok(())
}

/// Images for another OS cannot run; another architecture might (binfmt),
/// so it is only a warning, as in Docker.
fn check_platform(os: &str, architecture: &str, digest: &str) -> Result<(), ImageError> {
    let (node_os, node_arch) = node_platform();
    if !os.is_empty() && os != node_os {
        return Err(ImageError::NoMatchingPlatform {
            reference: digest.to_string(),
            platform: format!("{node_os}/{node_arch} (the image is for {os}/{architecture})"),
        });
    }
    if !architecture.is_empty() && architecture != node_arch {
        tracing::warn!(
            image = digest,
            architecture,
            node = node_arch,
            "image is for another architecture"
        );
    }
    Ok(())
}

/// Makes sure blob `descriptor` is stored, fetching it when missing.
async fn ensure_blob(
    store: &ImageStore,
    descriptor: &Descriptor,
    source: &BlobSource<'_>,
) -> Result<(), ImageError> {
    let _fetching = store.key_lock(&format!("blob:{}", descriptor.digest)).await;
    let layout = store.inner.layout.clone();
    if layout.blob(&descriptor.digest).exists() {
        return Ok(());
    }
    let file = match source {
        BlobSource::Registry(session) => {
            let tmp = layout.tmp_path("blob");
            if let Err(error) = session.blob_to_file(descriptor, &tmp).await {
                let _ = fs::remove_file(&tmp);
                return Err(error);
            }
            tmp
        }
        BlobSource::Files(files) => files.get(&descriptor.digest).cloned().ok_or_else(|| {
            ImageError::invalid(format!("the archive lacks blob {}", descriptor.digest))
        })?,
    };
    let digest = descriptor.digest.clone();
    // Verified here as well as by the client: a blob is stored only once we
    // have hashed it ourselves.
    tokio::task::spawn_blocking(move || layout.put_blob_file(&digest, &file))
        .await
        .map_err(|e| ImageError::invalid(format!("blob check stopped: {e}")))??;
    Ok(())
}

/// Makes sure the layer `diff_id` is unpacked (fetching its blob first when
/// needed); returns its size.
async fn ensure_layer(
    store: &ImageStore,
    layer: &Descriptor,
    diff_id: &str,
    source: &BlobSource<'_>,
) -> Result<u64, ImageError> {
    crate::reference::validate_digest(diff_id).map_err(ImageError::invalid)?;
    let _unpacking = store.key_lock(&format!("layer:{diff_id}")).await;
    let layout = store.inner.layout.clone();
    let dir = layout.layer(diff_id);
    if !dir.join("diff").is_dir() {
        ensure_blob(store, layer, source).await?;
        let work = layout.tmp_path("layer");
        let (blob_digest, diff) = (layer.digest.clone(), work.join("diff"));
        fs::create_dir_all(&diff)
            .map_err(|e| ImageError::io("create layer directory", &diff, e))?;
        let blob = layout.blob(&blob_digest);
        let unpacked =
            tokio::task::spawn_blocking(move || unpack_layer(&blob, &blob_digest, &diff))
                .await
                .map_err(|e| ImageError::invalid(format!("layer unpack stopped: {e}")))?;
        let unpacked = match unpacked {
            Ok(unpacked) if unpacked.diff_id == diff_id => unpacked,
            Ok(unpacked) => {
                let _ = fs::remove_dir_all(&work);
                return Err(ImageError::DigestMismatch {
                    expected: diff_id.to_string(),
                    actual: unpacked.diff_id,
                });
            }
            Err(error) => {
                let _ = fs::remove_dir_all(&work);
                return Err(error);
            }
        };
        let size_file = work.join("size");
        fs::write(&size_file, unpacked.size.to_string())
            .map_err(|e| ImageError::io("write layer size", &size_file, e))?;
        fs::rename(&work, &dir).map_err(|e| ImageError::io("store layer", &dir, e))?;
        super::layout::sync_parent(&dir)?;
        tracing::debug!(layer = diff_id, size = unpacked.size, "layer unpacked");
    }
    link_layer(&store.inner.layout, diff_id)?;
    Ok(layer_size(&store.inner.layout, diff_id))
}

/// Makes the short `l/<id>` link of a layer (kept across restarts).
fn link_layer(layout: &super::layout::Layout, diff_id: &str) -> Result<(), ImageError> {
    let link = layout.short_link(diff_id);
    let target = PathBuf::from("..")
        .join("layers")
        .join(hex_of(diff_id))
        .join("diff");
    match fs::read_link(&link) {
        Ok(existing) if existing == target => Ok(()),
        Ok(existing) => Err(ImageError::invalid(format!(
            "short layer link {} points at {} instead of layer {diff_id}",
            link.display(),
            existing.display()
        ))),
        Err(_) => std::os::unix::fs::symlink(&target, &link)
            .map_err(|e| ImageError::io("link layer", &link, e)),
    }
}

/// The size recorded when the layer was unpacked (0 when unreadable: it
/// only feeds `image ls`).
pub(crate) fn layer_size(layout: &super::layout::Layout, diff_id: &str) -> u64 {
    fs::read_to_string(layout.layer(diff_id).join("size"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}
