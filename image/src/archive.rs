//! `image load`: OCI image layouts and `docker save` archives (plain tar or
//! gzip), as files on disk.
//!
//! Owns: reading an archive into the store. The archive is unpacked into a
//! scratch directory first (regular files only, no `..`, bounded in size and
//! entries), then each image is imported like a pull whose blobs come from
//! those files; every blob is verified against its digest on the way in.
//! Names come from `io.containerd.image.name` or a full
//! `org.opencontainers.image.ref.name` (OCI), or `RepoTags` (docker save).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use crate::error::ImageError;
use crate::limits::{ARCHIVE_BYTES_MAX, ENTRIES_MAX, MANIFEST_BYTES_MAX};
use crate::manifest::{self, DOCKER_CONFIG, DOCKER_MANIFEST, Descriptor, Parsed};
use crate::reference::ImageRef;
use crate::store::ImageStore;
use crate::store::layout::{sha256_of, verify_file};
use crate::unpack::HashingReader;

/// Annotation containerd and Docker put the full image name in.
const CONTAINERD_NAME: &str = "io.containerd.image.name";
/// The OCI annotation for a reference name (often only a tag).
const OCI_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Docker's media type for an uncompressed layer.
const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// Docker's media type for a gzip layer.
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// One image an archive held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedImage {
    /// `sha256:` of the manifest.
    pub digest: String,
    /// Docker's image ID (`sha256:` of the config).
    pub id: String,
    /// Canonical tags given to it.
    pub repo_tags: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerSaveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

impl ImageStore {
    /// A fresh path on the store's file system for spooling an upload.
    pub fn scratch_path(&self) -> PathBuf {
        self.inner.layout.tmp_path("upload")
    }

    /// Loads every image of the archive at `archive`.
    pub async fn load_archive(&self, archive: &Path) -> Result<Vec<LoadedImage>, ImageError> {
        let _gc = self.inner.gc.read().await;
        let spool = self.inner.layout.tmp_path("load");
        let result = self.load_spooled(archive, &spool).await;
        let _ = fs::remove_dir_all(&spool);
        result
    }

    async fn load_spooled(
        &self,
        archive: &Path,
        spool: &Path,
    ) -> Result<Vec<LoadedImage>, ImageError> {
        let (archive, spool_dir) = (archive.to_path_buf(), spool.to_path_buf());
        tokio::task::spawn_blocking(move || spool_archive(&archive, &spool_dir))
            .await
            .map_err(|e| ImageError::invalid(format!("archive read stopped: {e}")))??;
        if spool.join("index.json").is_file() {
            self.load_oci_layout(spool).await
        } else if spool.join("manifest.json").is_file() {
            self.load_docker_save(spool).await
        } else {
            Err(ImageError::invalid(
                "the archive is neither an OCI image layout (index.json) nor a docker save archive (manifest.json)",
            ))
        }
    }

    async fn load_oci_layout(&self, spool: &Path) -> Result<Vec<LoadedImage>, ImageError> {
        let files = blob_files(spool)?;
        let index = read_small(&spool.join("index.json"))?;
        let Parsed::Index(entries) = manifest::parse(&index)? else {
            return Err(ImageError::invalid("index.json is not an image index"));
        };
        let mut loaded = Vec::new();
        for entry in &entries {
            let tags = oci_names(entry);
            let (bytes, digest) = resolve_entry(&files, entry)?;
            loaded.push(self.import_loaded(&bytes, &digest, tags, &files).await?);
        }
        Ok(loaded)
    }

    async fn load_docker_save(&self, spool: &Path) -> Result<Vec<LoadedImage>, ImageError> {
        let entries: Vec<DockerSaveEntry> =
            serde_json::from_slice(&read_small(&spool.join("manifest.json"))?).map_err(|e| {
                ImageError::invalid(format!("manifest.json of the archive is malformed: {e}"))
            })?;
        let mut loaded = Vec::new();
        for entry in entries {
            let mut files = BTreeMap::new();
            let config_path = spooled(spool, &entry.config)?;
            let config_bytes = read_small(&config_path)?;
            let config = Descriptor {
                media_type: DOCKER_CONFIG.into(),
                digest: sha256_of(&config_bytes),
                size: config_bytes.len() as i64,
                annotations: BTreeMap::new(),
                platform: None,
            };
            files.insert(config.digest.clone(), config_path);
            let mut layers = Vec::with_capacity(entry.layers.len());
            for layer in &entry.layers {
                let path = spooled(spool, layer)?;
                let descriptor = describe_layer(&path)?;
                files.insert(descriptor.digest.clone(), path);
                layers.push(descriptor);
            }
            let manifest = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": DOCKER_MANIFEST,
                "config": config,
                "layers": layers,
            });
            let bytes = serde_json::to_vec(&manifest)
                .map_err(|e| ImageError::invalid(format!("cannot encode a manifest: {e}")))?;
            let digest = sha256_of(&bytes);
            let tags = normalise_tags(entry.repo_tags.unwrap_or_default())?;
            loaded.push(self.import_loaded(&bytes, &digest, tags, &files).await?);
        }
        Ok(loaded)
    }

    /// Imports one manifest of an archive whose blobs are the spooled
    /// `files`, tagged `tags`.
    async fn import_loaded(
        &self,
        manifest: &[u8],
        digest: &str,
        tags: Vec<String>,
        files: &BTreeMap<String, PathBuf>,
    ) -> Result<LoadedImage, ImageError> {
        let naming = crate::store::import::Naming {
            repo_tags: tags.clone(),
            ..Default::default()
        };
        let source = crate::store::import::BlobSource::Files(files);
        let record =
            crate::store::import::import_manifest(self, manifest, digest, naming, &source).await?;
        Ok(LoadedImage {
            digest: record.digest,
            id: record.config_digest,
            repo_tags: tags,
        })
    }
}

/// Unpacks the archive's regular files under `spool`.
fn spool_archive(archive: &Path, spool: &Path) -> Result<(), ImageError> {
    fs::create_dir_all(spool).map_err(|e| ImageError::io("create load directory", spool, e))?;
    let file = File::open(archive).map_err(|e| ImageError::io("open archive", archive, e))?;
    let mut buffered = BufReader::new(file);
    let magic = buffered
        .fill_buf()
        .map_err(|e| ImageError::io("read archive", archive, e))?
        .to_vec();
    let reader: Box<dyn Read> = if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(buffered))
    } else {
        Box::new(buffered)
    };
    let mut tar = tar::Archive::new(reader.take(ARCHIVE_BYTES_MAX + 1));
    let entries = tar
        .entries()
        .map_err(|e| ImageError::invalid(format!("the archive is not a tar: {e}")))?;
    for (count, entry) in entries.enumerate() {
        if count as u64 >= ENTRIES_MAX {
            return Err(ImageError::TooLarge {
                what: "archive (entries)".into(),
                size: count as u64,
                limit: ENTRIES_MAX,
            });
        }
        let mut entry =
            entry.map_err(|e| ImageError::invalid(format!("the archive has a bad entry: {e}")))?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue; // directories are implied; links are not needed by either format
        }
        let path = entry
            .path()
            .map_err(|e| ImageError::invalid(format!("the archive has a bad path: {e}")))?
            .into_owned();
        let dest = spooled(spool, &path.to_string_lossy())?;
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| ImageError::io("create load directory", parent, e))?;
        }
        let mut out =
            File::create(&dest).map_err(|e| ImageError::io("spool archive file", &dest, e))?;
        io::copy(&mut entry, &mut out)
            .map_err(|e| ImageError::io("spool archive file", &dest, e))?;
    }
    Ok(())
}

/// `relative` under `spool`, refusing anything that would leave it.
fn spooled(spool: &Path, relative: &str) -> Result<PathBuf, ImageError> {
    let mut path = spool.to_path_buf();
    for component in Path::new(relative).components() {
        match component {
            Component::Normal(part) => path.push(part),
            Component::CurDir => {}
            _ => {
                return Err(ImageError::invalid(format!(
                    "the archive names {relative:?}, which leaves the archive"
                )));
            }
        }
    }
    Ok(path)
}

/// `blobs/sha256/<hex>` files of an OCI layout, by digest.
fn blob_files(spool: &Path) -> Result<BTreeMap<String, PathBuf>, ImageError> {
    let dir = spool.join("blobs").join("sha256");
    let mut files = BTreeMap::new();
    let Ok(entries) = fs::read_dir(&dir) else {
        return Ok(files);
    };
    for entry in entries {
        let entry = entry.map_err(|e| ImageError::io("list archive blobs", &dir, e))?;
        let digest = format!("sha256:{}", entry.file_name().to_string_lossy());
        files.insert(digest, entry.path());
    }
    Ok(files)
}

/// The platform manifest an index entry stands for, and its digest.
fn resolve_entry(
    files: &BTreeMap<String, PathBuf>,
    entry: &Descriptor,
) -> Result<(Vec<u8>, String), ImageError> {
    let mut descriptor = entry.clone();
    // Nested indexes are bounded: an index of an index of a manifest is the
    // deepest real layouts go.
    for _ in 0..4 {
        let bytes = read_blob_file(files, &descriptor.digest)?;
        match manifest::parse(&bytes)? {
            Parsed::Image { .. } => return Ok((bytes, descriptor.digest)),
            Parsed::Index(entries) => {
                descriptor = manifest::choose_platform(&entries)
                    .ok_or_else(|| ImageError::NoMatchingPlatform {
                        reference: entry.digest.clone(),
                        platform: format!(
                            "{}/{}",
                            manifest::node_platform().0,
                            manifest::node_platform().1
                        ),
                    })?
                    .clone();
            }
        }
    }
    Err(ImageError::invalid(format!(
        "index {} nests too deeply",
        entry.digest
    )))
}

fn read_blob_file(files: &BTreeMap<String, PathBuf>, digest: &str) -> Result<Vec<u8>, ImageError> {
    let path = files
        .get(digest)
        .ok_or_else(|| ImageError::invalid(format!("the archive lacks blob {digest}")))?;
    let bytes = read_small(path)?;
    let actual = sha256_of(&bytes);
    if actual != digest {
        return Err(ImageError::DigestMismatch {
            expected: digest.to_string(),
            actual,
        });
    }
    Ok(bytes)
}

fn read_small(path: &Path) -> Result<Vec<u8>, ImageError> {
    let file = File::open(path).map_err(|e| ImageError::io("open archive file", path, e))?;
    let mut bytes = Vec::new();
    file.take(MANIFEST_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ImageError::io("read archive file", path, e))?;
    if bytes.len() as u64 > MANIFEST_BYTES_MAX {
        return Err(ImageError::TooLarge {
            what: path.display().to_string(),
            size: bytes.len() as u64,
            limit: MANIFEST_BYTES_MAX,
        });
    }
    Ok(bytes)
}

/// A layer file of a docker save archive as a descriptor (its digest is
/// computed; its media type follows its compression).
fn describe_layer(path: &Path) -> Result<Descriptor, ImageError> {
    let mut file = File::open(path).map_err(|e| ImageError::io("open archive layer", path, e))?;
    let mut magic = [0u8; 2];
    let gzip = file.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
    let digest = {
        let mut reader = HashingReader::new(
            File::open(path).map_err(|e| ImageError::io("open archive layer", path, e))?,
        );
        io::copy(&mut reader, &mut io::sink())
            .map_err(|e| ImageError::io("read archive layer", path, e))?;
        reader.digest()
    };
    let size = verify_file(path, &digest)?;
    Ok(Descriptor {
        media_type: if gzip {
            DOCKER_LAYER_GZIP
        } else {
            DOCKER_LAYER_TAR
        }
        .into(),
        digest,
        size: i64::try_from(size).unwrap_or(i64::MAX),
        annotations: BTreeMap::new(),
        platform: None,
    })
}

/// Names of an OCI index entry: the containerd name, or a reference name
/// that is a full reference (a bare tag names nothing on its own).
fn oci_names(entry: &Descriptor) -> Vec<String> {
    let name = entry.annotations.get(CONTAINERD_NAME).or_else(|| {
        entry
            .annotations
            .get(OCI_REF_NAME)
            .filter(|name| name.contains('/') || name.contains(':'))
    });
    name.and_then(|name| ImageRef::parse(name).ok())
        .and_then(|r| r.name_tag())
        .into_iter()
        .collect()
}

fn normalise_tags(tags: Vec<String>) -> Result<Vec<String>, ImageError> {
    tags.iter()
        .map(|tag| ImageRef::parse(tag).map(|r| r.name_tag().unwrap_or_else(|| r.to_string())))
        .collect()
}
