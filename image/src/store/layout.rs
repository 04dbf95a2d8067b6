//! Where things live under the store's directory, and the file operations
//! every part shares (atomic writes, verified blob reads).
//!
//! ```text
//! <dir>/blobs/sha256/<hex>      content-addressed blobs: manifests, configs, layer tars
//! <dir>/layers/<hex>/diff/      one layer unpacked in overlay format, <hex> = its diff ID
//! <dir>/layers/<hex>/size       bytes of file content in it
//! <dir>/l/<16 hex>              short symlink → ../layers/<hex>/diff (for lowerdir=)
//! <dir>/images/<hex>.json       one image record per manifest digest
//! <dir>/holds/<task id>         the manifest digest a task runs
//! <dir>/tmp/                    downloads and unpacks in progress; emptied at open
//! ```
//!
//! Invariant: a blob file's sha256 is its name, a layer directory under
//! `layers/` is complete (it is renamed there only once unpacked), and every
//! record and hold is replaced atomically (write, fsync, rename).

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::ImageError;
use crate::unpack::HashingReader;

/// Length of the short layer link names: 64 bits of the diff ID, so that
/// 64 lowerdirs fit in one page of mount options.
const SHORT_LINK_LEN: usize = 16;

/// The store's paths.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    root: PathBuf,
}

impl Layout {
    pub(crate) fn new(root: PathBuf) -> Self {
        Self { root }
    }

    pub(crate) fn create_dirs(&self) -> Result<(), ImageError> {
        for dir in [
            self.blobs_dir(),
            self.layers_dir(),
            self.links_dir(),
            self.records_dir(),
            self.holds_dir(),
            self.tmp_dir(),
        ] {
            fs::create_dir_all(&dir)
                .map_err(|e| ImageError::io("create store directory", &dir, e))?;
        }
        Ok(())
    }

    pub(crate) fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }
    pub(crate) fn blob(&self, digest: &str) -> PathBuf {
        self.blobs_dir().join(hex_of(digest))
    }
    pub(crate) fn layers_dir(&self) -> PathBuf {
        self.root.join("layers")
    }
    pub(crate) fn layer(&self, diff_id: &str) -> PathBuf {
        self.layers_dir().join(hex_of(diff_id))
    }
    pub(crate) fn links_dir(&self) -> PathBuf {
        self.root.join("l")
    }
    /// The short path a container's overlay mount uses for a layer.
    pub(crate) fn short_link(&self, diff_id: &str) -> PathBuf {
        let hex = hex_of(diff_id);
        self.links_dir().join(&hex[..SHORT_LINK_LEN.min(hex.len())])
    }
    pub(crate) fn records_dir(&self) -> PathBuf {
        self.root.join("images")
    }
    pub(crate) fn record(&self, digest: &str) -> PathBuf {
        self.records_dir().join(format!("{}.json", hex_of(digest)))
    }
    pub(crate) fn holds_dir(&self) -> PathBuf {
        self.root.join("holds")
    }
    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// A fresh path under `tmp/` for work in progress.
    pub(crate) fn tmp_path(&self, purpose: &str) -> PathBuf {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        self.tmp_dir()
            .join(format!("{purpose}-{}-{n}", std::process::id()))
    }

    /// Writes `bytes` to `path` so that readers see the old or the new
    /// content, never a mix, even across a crash.
    pub(crate) fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
        let tmp = self.tmp_path("write");
        let mut file =
            File::create(&tmp).map_err(|e| ImageError::io("create temporary file", &tmp, e))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| ImageError::io("write temporary file", &tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| ImageError::io("replace file", path, e))?;
        sync_parent(path)
    }

    /// Stores `bytes` as the blob `digest`, refusing them when they do not
    /// hash to it.
    pub(crate) fn put_blob_bytes(&self, digest: &str, bytes: &[u8]) -> Result<(), ImageError> {
        let actual = sha256_of(bytes);
        if actual != digest {
            return Err(ImageError::DigestMismatch {
                expected: digest.to_string(),
                actual,
            });
        }
        let path = self.blob(digest);
        if path.exists() {
            return Ok(());
        }
        self.write_atomic(&path, bytes)
    }

    /// Moves the file `tmp` into the store as blob `digest` once its content
    /// is checked; removes it when it does not match.
    pub(crate) fn put_blob_file(&self, digest: &str, tmp: &Path) -> Result<u64, ImageError> {
        let size = match verify_file(tmp, digest) {
            Ok(size) => size,
            Err(error) => {
                let _ = fs::remove_file(tmp);
                return Err(error);
            }
        };
        let path = self.blob(digest);
        fs::rename(tmp, &path).map_err(|e| ImageError::io("store blob", &path, e))?;
        sync_parent(&path)?;
        Ok(size)
    }

    /// Reads a stored blob of at most `limit` bytes, checking its digest: a
    /// blob damaged on disk is refused, never used.
    pub(crate) fn read_blob(&self, digest: &str, limit: u64) -> Result<Vec<u8>, ImageError> {
        let path = self.blob(digest);
        let file = File::open(&path).map_err(|e| ImageError::io("open blob", &path, e))?;
        let mut bytes = Vec::new();
        file.take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| ImageError::io("read blob", &path, e))?;
        if bytes.len() as u64 > limit {
            return Err(ImageError::TooLarge {
                what: format!("blob {digest}"),
                size: bytes.len() as u64,
                limit,
            });
        }
        let actual = sha256_of(&bytes);
        if actual != digest {
            return Err(ImageError::DigestMismatch {
                expected: digest.to_string(),
                actual,
            });
        }
        Ok(bytes)
    }
}

/// `sha256:<hex>` of `bytes`.
pub(crate) fn sha256_of(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// Hashes a file and compares with `digest`; returns its size.
pub(crate) fn verify_file(path: &Path, digest: &str) -> Result<u64, ImageError> {
    let file = File::open(path).map_err(|e| ImageError::io("open blob", path, e))?;
    let mut reader = HashingReader::new(file);
    io::copy(&mut reader, &mut io::sink()).map_err(|e| ImageError::io("read blob", path, e))?;
    let actual = reader.digest();
    if actual != digest {
        return Err(ImageError::DigestMismatch {
            expected: digest.to_string(),
            actual,
        });
    }
    Ok(reader.bytes_read())
}

/// The hex part of `sha256:<hex>` (digests are validated where they enter).
pub(crate) fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// fsyncs the directory holding `path`, so a rename survives a crash.
pub(crate) fn sync_parent(path: &Path) -> Result<(), ImageError> {
    let Some(parent) = path.parent() else {
        return Ok(());
    };
    File::open(parent)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| ImageError::io("sync directory", parent, e))
}
