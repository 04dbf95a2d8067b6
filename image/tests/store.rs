//! The store with archives: both archive formats load with their tags,
//! layers are shared between images (unpacked once), corrupt blobs are
//! refused on load and on read-back, holds block removal, and GC removes
//! only what nothing references.

mod common;

use common::{busybox, count, in_mount_namespace, open_store, require_root};
use rswarm_image::fixtures::{write_docker_save, write_oci_layout};
use rswarm_image::{ImageError, RemoveAction};

#[tokio::test]
async fn both_archive_formats_load_with_their_tags_and_share_layers() {
    require_root();
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = open_store(tmp.path());
    let image = busybox("one");
    let oci = tmp.path().join("oci.tar");
    let save = tmp.path().join("save.tar");
    write_oci_layout(&image, "registry.test/bb:oci", &oci).expect("write oci layout");
    write_docker_save(&image, &["bb:save"], &save).expect("write docker save");

    let loaded = store.load_archive(&oci).await.expect("load the OCI layout");
    assert_eq!(loaded.len(), 1);
    assert_eq!(
        loaded[0].digest, image.manifest_digest,
        "an OCI layout keeps its manifest digest"
    );
    assert_eq!(loaded[0].repo_tags, ["registry.test/bb:oci"]);
    let loaded = store
        .load_archive(&save)
        .await
        .expect("load the docker save archive");
    assert_eq!(
        loaded[0].id, image.config_digest,
        "the image ID is the config digest"
    );
    assert_eq!(loaded[0].repo_tags, ["docker.io/library/bb:save"]);

    // Two manifests (gzip and plain layers) of the same content: the
    // unpacked layers are keyed by diff ID and shared.
    assert_eq!(store.list().len(), 2);
    assert_eq!(
        count(&tmp.path().join("images/layers")),
        2,
        "each layer unpacked once"
    );

    let local = store.inspect("bb:save").expect("inspect by tag");
    assert_eq!(local.layers.len(), 2);
    assert!(
        local
            .layers
            .iter()
            .all(|l| l.join("bin").exists() || l.join("etc").exists())
    );
    assert_eq!(local.config.cmd, ["/bin/sh"]);
    // The short layer links work as overlay lowerdirs (top first).
    let lowerdir = local
        .layers
        .iter()
        .rev()
        .map(|l| l.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let view = in_mount_namespace(&format!(
        "mkdir -p {t}/m && mount -t overlay overlay -o ro,lowerdir={lowerdir} {t}/m && ls {t}/m/etc/keep && cat {t}/m/etc/variant",
        t = tmp.path().display()
    ));
    assert_eq!(
        view, "c\none\n",
        "the image's root through its short layer paths"
    );
    // A pinned reference that is present is used without a registry
    // (registry.test does not resolve).
    let pinned = format!("registry.test/bb:oci@{}", image.manifest_digest);
    let ensured = store.ensure(&pinned, None).await.expect("local by digest");
    assert_eq!(ensured.digest, image.manifest_digest);
}

#[tokio::test]
async fn a_corrupt_blob_is_refused_on_load_and_on_read_back() {
    require_root();
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = open_store(tmp.path());
    let mut image = busybox("one");
    let good = image.clone();
    // Same name, different content: what a damaged download looks like.
    image.layers[1].gzip[20] ^= 0xff;
    let oci = tmp.path().join("bad.tar");
    write_oci_layout(&image, "registry.test/bb:bad", &oci).expect("write");
    let error = store
        .load_archive(&oci)
        .await
        .expect_err("a corrupt blob is refused");
    assert!(
        matches!(error, ImageError::DigestMismatch { .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains(&good.layers[1].digest),
        "names the blob: {error}"
    );
    assert!(
        store.list().is_empty(),
        "nothing is recorded from a refused archive"
    );

    let oci = tmp.path().join("good.tar");
    write_oci_layout(&good, "registry.test/bb:good", &oci).expect("write");
    store
        .load_archive(&oci)
        .await
        .expect("load the good archive");
    let config = tmp
        .path()
        .join("images/blobs/sha256")
        .join(good.config_digest.trim_start_matches("sha256:"));
    std::fs::write(&config, b"{\"tampered\": true}").expect("damage the stored config");
    let error = store
        .inspect("registry.test/bb:good")
        .expect_err("read-back is verified");
    assert!(
        matches!(error, ImageError::DigestMismatch { .. }),
        "{error}"
    );
}

#[tokio::test]
async fn gc_removes_only_unreferenced_content_and_holds_block_removal() {
    require_root();
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = open_store(tmp.path());
    let (one, two) = (busybox("one"), busybox("two"));
    for (image, name) in [
        (&one, "registry.test/bb:one"),
        (&two, "registry.test/bb:two"),
    ] {
        let path = tmp.path().join("a.tar");
        write_oci_layout(image, name, &path).expect("write");
        store.load_archive(&path).await.expect("load");
    }
    let layers = tmp.path().join("images/layers");
    assert_eq!(
        count(&layers),
        3,
        "the base layer is shared: 1 base + 2 tops"
    );

    store.hold("task-1", &one.manifest_digest).expect("hold");
    let error = store
        .remove("registry.test/bb:one", false)
        .await
        .expect_err("held image");
    assert!(matches!(error, ImageError::InUse { .. }), "{error}");
    assert!(
        error.to_string().contains("task-1"),
        "names the task: {error}"
    );

    // The hold survives a reopen (it is on disk).
    drop(store);
    let store = open_store(tmp.path());
    assert!(
        store.remove("registry.test/bb:one", false).await.is_err(),
        "still held after reopen"
    );
    store.release("task-1").expect("release");

    let actions = store
        .remove("registry.test/bb:one", false)
        .await
        .expect("remove");
    assert_eq!(
        actions,
        [
            RemoveAction::Untagged("registry.test/bb:one".into()),
            RemoveAction::Deleted(one.config_digest.clone()),
        ]
    );
    assert_eq!(
        count(&layers),
        2,
        "the removed image's top layer goes, the shared base stays"
    );
    assert!(
        store.inspect("registry.test/bb:two").is_ok(),
        "the other image is intact"
    );

    // prune: untagged only, then everything unused.
    store.hold("task-2", &two.manifest_digest).expect("hold");
    assert!(
        store.prune(true).await.expect("prune").deleted.is_empty(),
        "held images stay"
    );
    store.release("task-2").expect("release");
    assert!(
        store.prune(false).await.expect("prune").deleted.is_empty(),
        "tagged images stay without -a"
    );
    let report = store.prune(true).await.expect("prune -a");
    assert_eq!(report.deleted, std::slice::from_ref(&two.config_digest));
    assert!(report.space_reclaimed > 0);
    assert_eq!(count(&layers), 0);
    assert_eq!(count(&tmp.path().join("images/blobs/sha256")), 0);
    assert_eq!(count(&tmp.path().join("images/l")), 0);
}

#[tokio::test]
async fn a_moved_tag_leaves_the_old_image_untagged() {
    require_root();
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = open_store(tmp.path());
    for variant in ["one", "two"] {
        let path = tmp.path().join("a.tar");
        write_oci_layout(&busybox(variant), "registry.test/bb:latest", &path).expect("write");
        store.load_archive(&path).await.expect("load");
    }
    let images = store.list();
    assert_eq!(images.len(), 2);
    assert_eq!(
        images.iter().filter(|i| i.repo_tags.is_empty()).count(),
        1,
        "{images:?}"
    );
    let report = store.prune(false).await.expect("prune");
    assert_eq!(report.deleted.len(), 1, "the dangling image is pruned");
}
