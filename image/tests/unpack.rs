//! Layer unpacking: the overlay view of the busybox fixture's two layers
//! (whiteout and opaque directory) seen through a real overlay mount, and
//! layers that try to write outside their directory are refused.

mod common;

use std::os::unix::fs::FileTypeExt;

use common::{busybox, in_mount_namespace, require_root};
use rswarm_image::ImageError;
use rswarm_image::fixtures::{BusyboxOptions, TarWriter, image_from_tars};
use rswarm_image::unpack::unpack_layer;

fn unpack_bytes(
    gzip_or_tar: &[u8],
    digest: &str,
    dest: &std::path::Path,
) -> Result<String, ImageError> {
    std::fs::create_dir_all(dest).expect("create layer dir");
    let blob = dest.with_extension("blob");
    std::fs::write(&blob, gzip_or_tar).expect("write blob");
    unpack_layer(&blob, digest, dest).map(|u| u.diff_id)
}

#[test]
fn whiteouts_and_opaque_dirs_give_the_right_overlay_view() {
    require_root();
    let image = busybox("one");
    let tmp = tempfile::tempdir().expect("tempdir");
    let (lower, upper) = (tmp.path().join("l1"), tmp.path().join("l2"));
    let [base, delta] = &image.layers[..] else {
        panic!("two layers")
    };
    assert_eq!(
        unpack_bytes(&base.gzip, &base.digest, &lower).expect("unpack base"),
        base.diff_id
    );
    assert_eq!(
        unpack_bytes(&delta.gzip, &delta.digest, &upper).expect("unpack delta"),
        delta.diff_id
    );

    // Overlay format on disk: a 0/0 char device and an opaque xattr.
    let whiteout = std::fs::symlink_metadata(upper.join("bin/vi")).expect("whiteout exists");
    assert!(
        whiteout.file_type().is_char_device(),
        "bin/.wh.vi must become a character device"
    );
    let mut value = [0u8; 4];
    let len = rustix::fs::getxattr(
        upper.join("etc/keep"),
        "trusted.overlay.opaque",
        &mut value[..],
    )
    .expect("etc/keep carries the opaque xattr");
    assert_eq!(&value[..len], b"y");

    let view = in_mount_namespace(&format!(
        "mkdir -p {t}/m {t}/u {t}/w && mount -t overlay overlay -o lowerdir={u}:{l},upperdir={t}/u,workdir={t}/w {t}/m && \
         ls -a {t}/m/etc/keep; echo --; ls {t}/m/opt; echo --; test -e {t}/m/bin/vi && echo vi-present; \
         cat {t}/m/etc/variant; readlink {t}/m/bin/sh",
        t = tmp.path().display(),
        u = upper.display(),
        l = lower.display()
    ));
    let sections: Vec<&str> = view.split("--\n").collect();
    let keep: Vec<&str> = sections[0]
        .split_whitespace()
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert_eq!(
        keep,
        ["c"],
        "the opaque /etc/keep shows only the top layer's file: {view}"
    );
    assert!(
        !sections[1].contains("old"),
        "/opt/old was whited out: {view}"
    );
    assert!(
        !view.contains("vi-present"),
        "/bin/vi was whited out: {view}"
    );
    assert!(
        view.contains("one\n"),
        "/etc/variant comes from the top layer: {view}"
    );
    assert!(
        view.contains("busybox"),
        "applet symlinks point at busybox: {view}"
    );
}

fn hostile_layer(build: impl FnOnce(&mut TarWriter)) -> (Vec<u8>, String) {
    let mut tar = TarWriter::new();
    build(&mut tar);
    let bytes = tar.finish().expect("tar");
    let image = image_from_tars(vec![bytes], &BusyboxOptions::default()).expect("image");
    let layer = image.layers[0].clone();
    (layer.gzip, layer.digest)
}

#[test]
fn path_escapes_are_refused() {
    require_root();
    let tmp = tempfile::tempdir().expect("tempdir");
    let outside = tmp.path().join("outside");
    let cases: Vec<(&str, (Vec<u8>, String))> = vec![
        (
            "dot-dot",
            hostile_layer(|t| {
                t.raw_file(b"../outside", b"x").expect("entry");
            }),
        ),
        (
            "symlink then write through it",
            hostile_layer(|t| {
                t.symlink("evil", tmp.path().to_str().expect("utf-8 path"))
                    .expect("entry");
                t.file("evil/outside", 0o644, b"x").expect("entry");
            }),
        ),
        (
            "relative symlink up",
            hostile_layer(|t| {
                t.symlink("up", "..").expect("entry");
                t.file("up/outside", 0o644, b"x").expect("entry");
            }),
        ),
        (
            "hard link to outside",
            hostile_layer(|t| {
                t.hardlink("link", "../outside").expect("entry");
            }),
        ),
    ];
    for (name, (blob, digest)) in cases {
        let dest = tmp.path().join(name.replace(' ', "-"));
        let result = unpack_bytes(&blob, &digest, &dest.join("layer"));
        assert!(
            matches!(result, Err(ImageError::UnsafePath { .. })),
            "{name}: expected UnsafePath, got {result:?}"
        );
        assert!(
            !outside.exists(),
            "{name}: a file was written outside the layer"
        );
    }
}

#[test]
fn a_corrupt_layer_blob_is_refused_naming_it() {
    require_root();
    let image = busybox("one");
    let tmp = tempfile::tempdir().expect("tempdir");
    // An uncompressed layer with one byte of file content changed: the tar
    // still parses, only the digest tells.
    let layer = &image.layers[1];
    let mut corrupt = layer.tar.clone();
    let content = corrupt
        .windows(4)
        .position(|w| w == b"one\n")
        .expect("variant content");
    corrupt[content] = b'X';
    let error =
        unpack_bytes(&corrupt, &layer.diff_id, &tmp.path().join("l")).expect_err("corrupt blob");
    assert!(
        matches!(error, ImageError::DigestMismatch { .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains(&layer.diff_id),
        "the error names the blob: {error}"
    );
}

#[test]
fn zstd_layers_say_they_are_not_supported() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let blob = [0x28u8, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0];
    let error = unpack_bytes(&blob, "sha256:00", &tmp.path().join("l")).expect_err("zstd");
    assert!(
        error
            .to_string()
            .contains("zstd compression is not supported"),
        "{error}"
    );
}
