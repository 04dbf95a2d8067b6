//! Unpacking one layer into a directory in overlayfs format.
//!
//! Owns: turning a layer blob (gzip or plain tar) into a directory that can be
//! a `lowerdir` of an overlay mount. Whiteouts become what overlayfs reads:
//! `.wh.NAME` → a 0/0 character device `NAME`, `.wh..wh..opq` → the xattr
//! `trusted.overlay.opaque=y` on its directory.
//!
//! Invariants: nothing is written outside the destination. Every entry is
//! created relative to a directory file descriptor reached from the
//! destination one component at a time with `O_NOFOLLOW`, so neither `..`
//! nor a symlink planted by an earlier entry can lead out; `..` components
//! are refused outright. The blob's sha256 is checked while it is read, and
//! the uncompressed stream's sha256 is the layer's diff ID.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;
use sha2::{Digest as _, Sha256};

use crate::error::ImageError;
use crate::limits::{ENTRIES_MAX, LAYER_UNPACKED_BYTES_MAX};

/// Prefix of a whiteout entry's name in a layer tar (OCI image spec).
const WHITEOUT_PREFIX: &str = ".wh.";
/// Name of the entry that makes its directory opaque (OCI image spec).
const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// The xattr overlayfs reads to treat a directory as opaque.
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// gzip's magic bytes.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// zstd's magic bytes.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// What unpacking a layer found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackedLayer {
    /// `sha256:` of the uncompressed tar: the layer's diff ID.
    pub diff_id: String,
    /// Bytes of regular-file content written.
    pub size: u64,
}

/// Unpacks the layer blob at `blob` (addressed by `blob_digest`) into the
/// existing empty directory `dest`, in overlay format.
///
/// Fails with `DigestMismatch` when the blob does not hash to its digest, and
/// with `UnsafePath` on an entry that would leave `dest`.
pub fn unpack_layer(
    blob: &Path,
    blob_digest: &str,
    dest: &Path,
) -> Result<UnpackedLayer, ImageError> {
    let file = File::open(blob).map_err(|e| ImageError::io("open layer blob", blob, e))?;
    let mut compressed = HashingReader::new(file);
    let (diff_id, size) = {
        let mut buffered = BufReader::new(&mut compressed);
        let magic = buffered
            .fill_buf()
            .map_err(|e| ImageError::io("read layer blob", blob, e))?
            .to_vec();
        if magic.starts_with(&ZSTD_MAGIC) {
            return Err(ImageError::Unsupported {
                what: format!("layer {blob_digest}: zstd compression"),
            });
        }
        let decoded: Box<dyn Read + '_> = if magic.starts_with(&GZIP_MAGIC) {
            Box::new(flate2::read::MultiGzDecoder::new(buffered))
        } else {
            Box::new(buffered)
        };
        let mut uncompressed = HashingReader::new(decoded);
        let size = unpack_tar(&mut uncompressed, blob_digest, dest)?;
        // The tar ends with zero blocks the reader may not have consumed;
        // the diff ID covers the whole stream.
        io::copy(&mut uncompressed, &mut io::sink())
            .map_err(|e| ImageError::io("read layer blob", blob, e))?;
        (uncompressed.digest(), size)
    };
    io::copy(&mut compressed, &mut io::sink())
        .map_err(|e| ImageError::io("read layer blob", blob, e))?;
    let actual = compressed.digest();
    if actual != blob_digest {
        return Err(ImageError::DigestMismatch {
            expected: blob_digest.to_string(),
            actual,
        });
    }
    Ok(UnpackedLayer { diff_id, size })
}

/// A reader that hashes what passes through it.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// `sha256:<hex>` of everything read so far.
    pub(crate) fn digest(&self) -> String {
        format!("sha256:{}", hex::encode(self.hasher.clone().finalize()))
    }

    /// Bytes read so far.
    pub(crate) fn bytes_read(&self) -> u64 {
        self.bytes
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

fn unpack_tar(reader: &mut dyn Read, layer: &str, dest: &Path) -> Result<u64, ImageError> {
    let root = rustix::fs::open(
        dest,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ImageError::io("open layer directory", dest, e.into()))?;
    let writer = LayerWriter {
        root,
        layer,
        chown: rustix::process::geteuid().is_root(),
    };
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|e| ImageError::invalid(format!("layer {layer} is not a tar: {e}")))?;
    let mut written = 0u64;
    for (count, entry) in entries.enumerate() {
        if count as u64 >= ENTRIES_MAX {
            return Err(ImageError::TooLarge {
                what: format!("layer {layer} (entries)"),
                size: count as u64,
                limit: ENTRIES_MAX,
            });
        }
        let mut entry =
            entry.map_err(|e| ImageError::invalid(format!("layer {layer}: bad tar entry: {e}")))?;
        written += entry.header().entry_size().unwrap_or(0);
        if written > LAYER_UNPACKED_BYTES_MAX {
            return Err(ImageError::TooLarge {
                what: format!("layer {layer} unpacked"),
                size: written,
                limit: LAYER_UNPACKED_BYTES_MAX,
            });
        }
        writer.write_entry(&mut entry)?;
    }
    Ok(written)
}

/// Writes tar entries below one directory fd.
struct LayerWriter<'a> {
    root: OwnedFd,
    layer: &'a str,
    /// Ownership is applied only when running as root (tests may not be).
    chown: bool,
}

/// A checked entry path: the parent's components and the final name.
struct EntryPath<'p> {
    parents: Vec<&'p OsStr>,
    name: &'p OsStr,
}

impl LayerWriter<'_> {
    fn write_entry<R: Read>(&self, entry: &mut tar::Entry<'_, R>) -> Result<(), ImageError> {
        let raw_path = entry
            .path()
            .map_err(|e| ImageError::invalid(format!("layer {}: bad entry path: {e}", self.layer)))?
            .into_owned();
        let Some(path) = self.check_path(&raw_path)? else {
            return Ok(()); // the layer root itself
        };
        let parent = self.open_parent(&path, &raw_path, true)?;
        let name = path.name.to_string_lossy();
        if name == OPAQUE_MARKER {
            return rustix::fs::fsetxattr(&parent, OVERLAY_OPAQUE_XATTR, b"y", XattrFlags::empty())
                .map_err(|e| self.os_error("mark directory opaque", &raw_path, e));
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.starts_with(WHITEOUT_PREFIX) {
                return Ok(()); // aufs metadata (.wh..wh.plnk and the like): no meaning in overlay
            }
            self.remove_existing(&parent, OsStr::new(hidden), &raw_path)?;
            let device = rustix::fs::makedev(0, 0);
            return rustix::fs::mknodat(
                &parent,
                hidden,
                FileType::CharacterDevice,
                Mode::empty(),
                device,
            )
            .map_err(|e| self.os_error("create whiteout", &raw_path, e));
        }
        self.write_node(entry, &parent, path.name, &raw_path)
    }

    /// Refuses `..` and turns the path into components; `None` for the root.
    fn check_path<'p>(&self, path: &'p Path) -> Result<Option<EntryPath<'p>>, ImageError> {
        let mut parts = Vec::new();
        for component in path.components() {
            match component {
                Component::Normal(part) => parts.push(part),
                Component::CurDir | Component::RootDir => {}
                Component::ParentDir | Component::Prefix(_) => {
                    return Err(self.unsafe_path(path, "goes up with `..`"));
                }
            }
        }
        Ok(parts.pop().map(|name| EntryPath {
            parents: parts,
            name,
        }))
    }

    /// Opens the entry's parent directory, one component at a time without
    /// following symlinks; `create` makes missing directories (tar may omit
    /// them).
    fn open_parent(
        &self,
        path: &EntryPath<'_>,
        raw: &Path,
        create: bool,
    ) -> Result<OwnedFd, ImageError> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut current = rustix::fs::openat(&self.root, ".", flags, Mode::empty())
            .map_err(|e| self.os_error("open layer directory", raw, e))?;
        for part in &path.parents {
            let next = match rustix::fs::openat(&current, *part, flags, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::NOENT) if create => {
                    rustix::fs::mkdirat(&current, *part, Mode::from_raw_mode(0o755))
                        .map_err(|e| self.os_error("create directory", raw, e))?;
                    rustix::fs::openat(&current, *part, flags, Mode::empty())
                        .map_err(|e| self.os_error("open directory", raw, e))?
                }
                Err(Errno::LOOP | Errno::NOTDIR) => {
                    return Err(
                        self.unsafe_path(raw, "passes through a symlink or a non-directory")
                    );
                }
                Err(e) => return Err(self.os_error("open directory", raw, e)),
            };
            current = next;
        }
        Ok(current)
    }

    fn write_node<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        parent: &OwnedFd,
        name: &OsStr,
        raw: &Path,
    ) -> Result<(), ImageError> {
        let header = entry.header();
        let mode = Mode::from_raw_mode(header.mode().unwrap_or(0o644) & 0o7777);
        let owner = (header.uid().unwrap_or(0), header.gid().unwrap_or(0));
        let mtime = header.mtime().unwrap_or(0);
        let kind = header.entry_type();
        match kind {
            tar::EntryType::Directory => {
                self.write_directory(entry, parent, name, raw, mode, owner)
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                self.write_file(entry, parent, name, raw, mode, owner, mtime)
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| {
                        ImageError::invalid(format!("layer {}: bad symlink: {e}", self.layer))
                    })?
                    .ok_or_else(|| self.unsafe_path(raw, "is a symlink with no target"))?
                    .into_owned();
                self.remove_existing(parent, name, raw)?;
                // The target is stored as is: it is resolved inside the
                // container's root, never by this writer.
                rustix::fs::symlinkat(target.as_os_str(), parent, name)
                    .map_err(|e| self.os_error("create symlink", raw, e))?;
                self.chown_at(parent, name, owner, raw)?;
                self.set_mtime_at(parent, name, mtime, raw)
            }
            tar::EntryType::Link => self.write_hardlink(entry, parent, name, raw),
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let file_type = match kind {
                    tar::EntryType::Char => FileType::CharacterDevice,
                    tar::EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                let device = rustix::fs::makedev(
                    header.device_major().ok().flatten().unwrap_or(0),
                    header.device_minor().ok().flatten().unwrap_or(0),
                );
                self.remove_existing(parent, name, raw)?;
                rustix::fs::mknodat(parent, name, file_type, mode, device)
                    .map_err(|e| self.os_error("create device node", raw, e))?;
                self.chown_at(parent, name, owner, raw)
            }
            // PAX and GNU long-name headers are folded into the next entry by
            // the tar reader; anything else (sparse, volume labels) carries
            // nothing a container root needs.
            _ => Ok(()),
        }
    }

    fn write_directory<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        parent: &OwnedFd,
        name: &OsStr,
        raw: &Path,
        mode: Mode,
        owner: (u64, u64),
    ) -> Result<(), ImageError> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let create = || -> Result<OwnedFd, ImageError> {
            rustix::fs::mkdirat(parent, name, mode)
                .map_err(|e| self.os_error("create directory", raw, e))?;
            rustix::fs::openat(parent, name, flags, Mode::empty())
                .map_err(|e| self.os_error("open directory", raw, e))
        };
        let dir = match rustix::fs::openat(parent, name, flags, Mode::empty()) {
            Ok(dir) => dir,
            Err(Errno::NOENT) => create()?,
            // A symlink or file where the layer has a directory: replace it.
            Err(Errno::LOOP | Errno::NOTDIR) => {
                self.remove_existing(parent, name, raw)?;
                create()?
            }
            Err(e) => return Err(self.os_error("open directory", raw, e)),
        };
        self.chown_fd(&dir, owner, raw)?;
        rustix::fs::fchmod(&dir, mode).map_err(|e| self.os_error("set mode", raw, e))?;
        self.set_xattrs(entry, &dir, raw)
    }

    #[allow(clippy::too_many_arguments)]
    fn write_file<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        parent: &OwnedFd,
        name: &OsStr,
        raw: &Path,
        mode: Mode,
        owner: (u64, u64),
        mtime: u64,
    ) -> Result<(), ImageError> {
        self.remove_existing(parent, name, raw)?;
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(parent, name, flags, Mode::from_raw_mode(0o600))
            .map_err(|e| self.os_error("create file", raw, e))?;
        let mut file = File::from(fd);
        io::copy(entry, &mut file).map_err(|e| ImageError::io("write layer file", raw, e))?;
        file.flush()
            .map_err(|e| ImageError::io("write layer file", raw, e))?;
        // chown clears set-id bits, so the mode comes after it.
        self.chown_fd(&file, owner, raw)?;
        rustix::fs::fchmod(&file, mode).map_err(|e| self.os_error("set mode", raw, e))?;
        self.set_xattrs(entry, &file, raw)?;
        let times = timestamps(mtime);
        rustix::fs::futimens(&file, &times).map_err(|e| self.os_error("set mtime", raw, e))
    }

    fn write_hardlink<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        parent: &OwnedFd,
        name: &OsStr,
        raw: &Path,
    ) -> Result<(), ImageError> {
        let target = entry
            .link_name()
            .map_err(|e| ImageError::invalid(format!("layer {}: bad hard link: {e}", self.layer)))?
            .ok_or_else(|| self.unsafe_path(raw, "is a hard link with no target"))?
            .into_owned();
        let target_path = self
            .check_path(&target)?
            .ok_or_else(|| self.unsafe_path(raw, "is a hard link to the layer root"))?;
        let target_parent = self.open_parent(&target_path, raw, false)?;
        self.remove_existing(parent, name, raw)?;
        // Flags 0: a symlink as the target is linked itself, never followed.
        rustix::fs::linkat(
            &target_parent,
            target_path.name,
            parent,
            name,
            AtFlags::empty(),
        )
        .map_err(|e| self.os_error("create hard link", raw, e))
    }

    /// Removes whatever an earlier entry left at `name` (a later entry of a
    /// tar replaces an earlier one); a non-empty directory is left for the
    /// caller's create to fail on.
    fn remove_existing(
        &self,
        parent: &OwnedFd,
        name: &OsStr,
        raw: &Path,
    ) -> Result<(), ImageError> {
        match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(self.os_error("inspect existing entry", raw, e)),
            Ok(stat) => {
                let flags = if FileType::from_raw_mode(stat.st_mode) == FileType::Directory {
                    AtFlags::REMOVEDIR
                } else {
                    AtFlags::empty()
                };
                rustix::fs::unlinkat(parent, name, flags)
                    .map_err(|e| self.os_error("replace existing entry", raw, e))
            }
        }
    }

    fn set_xattrs<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        fd: impl AsFd,
        raw: &Path,
    ) -> Result<(), ImageError> {
        let Ok(Some(extensions)) = entry.pax_extensions() else {
            return Ok(());
        };
        for extension in extensions.flatten() {
            let Ok(key) = extension.key() else { continue };
            let Some(xattr) = key.strip_prefix("SCHILY.xattr.") else {
                continue;
            };
            // overlayfs' own attributes would let an image forge whiteouts
            // or redirects; only the whiteout entries may set them.
            if xattr.starts_with("trusted.overlay.") {
                continue;
            }
            rustix::fs::fsetxattr(&fd, xattr, extension.value_bytes(), XattrFlags::empty())
                .map_err(|e| self.os_error("set extended attribute", raw, e))?;
        }
        Ok(())
    }

    fn chown_fd(&self, fd: impl AsFd, owner: (u64, u64), raw: &Path) -> Result<(), ImageError> {
        if !self.chown {
            return Ok(());
        }
        let (uid, gid) = self.ids(owner, raw)?;
        rustix::fs::fchown(fd, Some(uid), Some(gid)).map_err(|e| self.os_error("set owner", raw, e))
    }

    fn chown_at(
        &self,
        parent: &OwnedFd,
        name: &OsStr,
        owner: (u64, u64),
        raw: &Path,
    ) -> Result<(), ImageError> {
        if !self.chown {
            return Ok(());
        }
        let (uid, gid) = self.ids(owner, raw)?;
        rustix::fs::chownat(
            parent,
            name,
            Some(uid),
            Some(gid),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| self.os_error("set owner", raw, e))
    }

    fn set_mtime_at(
        &self,
        parent: &OwnedFd,
        name: &OsStr,
        mtime: u64,
        raw: &Path,
    ) -> Result<(), ImageError> {
        rustix::fs::utimensat(parent, name, &timestamps(mtime), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| self.os_error("set mtime", raw, e))
    }

    fn ids(
        &self,
        (uid, gid): (u64, u64),
        raw: &Path,
    ) -> Result<(rustix::fs::Uid, rustix::fs::Gid), ImageError> {
        // -1 means "unchanged" to chown; refuse it and anything above.
        let check = |id: u64| u32::try_from(id).ok().filter(|id| *id != u32::MAX);
        match (check(uid), check(gid)) {
            (Some(uid), Some(gid)) => Ok((
                rustix::fs::Uid::from_raw_unchecked(uid),
                rustix::fs::Gid::from_raw_unchecked(gid),
            )),
            _ => Err(self.unsafe_path(raw, "has an owner id out of range")),
        }
    }

    fn unsafe_path(&self, path: &Path, reason: &str) -> ImageError {
        ImageError::UnsafePath {
            layer: self.layer.to_string(),
            entry: path.display().to_string(),
            reason: reason.to_string(),
        }
    }

    fn os_error(&self, context: &'static str, path: &Path, errno: Errno) -> ImageError {
        ImageError::io(context, path, errno.into())
    }
}

fn timestamps(mtime: u64) -> Timestamps {
    let time = Timespec {
        tv_sec: i64::try_from(mtime).unwrap_or(i64::MAX),
        tv_nsec: 0,
    };
    Timestamps {
        last_access: time,
        last_modification: time,
    }
}
