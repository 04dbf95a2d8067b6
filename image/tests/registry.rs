//! Pulls from a real registry (Debian's docker-registry on loopback): by tag
//! and by digest, a moved tag resolves and pulls the new digest, a missing
//! image is NotFound with the registry's reason, an unreachable registry is
//! a transient error (and `ensure` falls back to a local image with the tag).

mod common;

use common::{busybox, count, open_store, require_root};
use rswarm_image::fixtures::{Registry, push};
use rswarm_image::{ImageError, RegistryConfig, resolve_digest};

#[tokio::test]
async fn pull_by_tag_and_digest_and_follow_a_moved_tag() {
    require_root();
    let registry = Registry::start_local().expect("start docker-registry");
    let config = RegistryConfig::default();
    let reference = format!("{}/bb:latest", registry.host());
    let one = busybox("one");
    push(&one, &reference, &config).await.expect("push");

    let tmp = tempfile::tempdir().expect("tempdir");
    let store = open_store(tmp.path());
    let pulled = store.pull(&reference, None).await.expect("pull by tag");
    assert_eq!(pulled.digest, one.manifest_digest);
    assert_eq!(pulled.layers.len(), 2);
    let by_digest = format!("{}/bb@{}", registry.host(), one.manifest_digest);
    assert_eq!(
        store
            .ensure(&by_digest, None)
            .await
            .expect("by digest")
            .digest,
        one.manifest_digest
    );

    let resolved = resolve_digest(&reference, None, &config)
        .await
        .expect("resolve");
    assert_eq!(resolved, format!("{reference}@{}", one.manifest_digest));

    // Move the tag: the manager's resolution and a node's ensure both see it.
    let two = busybox("two");
    push(&two, &reference, &config)
        .await
        .expect("push the moved tag");
    let resolved = resolve_digest(&reference, None, &config)
        .await
        .expect("resolve again");
    assert_eq!(resolved, format!("{reference}@{}", two.manifest_digest));
    let ensured = store
        .ensure(&reference, None)
        .await
        .expect("ensure follows the tag");
    assert_eq!(ensured.digest, two.manifest_digest);
    assert_eq!(
        count(&tmp.path().join("images/layers")),
        3,
        "only the new top layer was added"
    );

    // A pull pinned to the old digest gets the old image and tags nothing:
    // the tag has moved on.
    let fresh = tempfile::tempdir().expect("tempdir");
    let pinned_store = open_store(fresh.path());
    let pinned = format!("{reference}@{}", one.manifest_digest);
    let old = pinned_store
        .ensure(&pinned, None)
        .await
        .expect("pull by digest");
    assert_eq!(old.digest, one.manifest_digest);
    assert!(
        pinned_store.list()[0].repo_tags.is_empty(),
        "a digest pull does not tag"
    );
    drop(registry);
}

#[tokio::test]
async fn concurrent_pulls_of_one_image_download_each_layer_once() {
    require_root();
    let registry = Registry::start_local().expect("start docker-registry");
    let reference = format!("{}/bb:latest", registry.host());
    let image = busybox("one");
    push(&image, &reference, &RegistryConfig::default())
        .await
        .expect("push");
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = open_store(tmp.path());
    let (a, b) = tokio::join!(
        store.ensure(&reference, None),
        store.ensure(&reference, None)
    );
    assert_eq!(a.expect("first").digest, b.expect("second").digest);
    assert_eq!(count(&tmp.path().join("images/layers")), 2);
    assert_eq!(store.list().len(), 1);
    // The registry's access log: each layer blob was fetched once.
    let log = registry.log();
    for layer in &image.layers {
        let fetches = log
            .lines()
            .filter(|l| l.contains(&format!("\"GET /v2/bb/blobs/{}", layer.digest)))
            .count();
        assert_eq!(
            fetches, 1,
            "layer {} fetched {fetches} times:\n{log}",
            layer.digest
        );
    }
}

#[tokio::test]
async fn a_missing_image_is_not_found_with_the_registry_reason() {
    require_root();
    let registry = Registry::start_local().expect("start docker-registry");
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = open_store(tmp.path());
    let error = store
        .ensure(&format!("{}/nothing:here", registry.host()), None)
        .await
        .expect_err("missing image");
    assert!(matches!(error, ImageError::NotFound { .. }), "{error:?}");
    assert!(!error.is_transient());
    let text = error.to_string();
    assert!(
        text.contains("unknown"),
        "carries the registry's reason: {text}"
    );
}

#[tokio::test]
async fn an_unreachable_registry_is_transient_and_a_local_tag_is_used() {
    require_root();
    let registry = Registry::start_local().expect("start docker-registry");
    let host = registry.host();
    let reference = format!("{host}/bb:latest");
    let one = busybox("one");
    push(&one, &reference, &RegistryConfig::default())
        .await
        .expect("push");
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = open_store(tmp.path());
    store.pull(&reference, None).await.expect("pull");
    drop(registry);

    let error = resolve_digest(&reference, None, &RegistryConfig::default())
        .await
        .expect_err("registry is gone");
    assert!(error.is_transient(), "{error:?}");
    assert!(matches!(error, ImageError::Unreachable { .. }), "{error:?}");
    let local = store
        .ensure(&reference, None)
        .await
        .expect("falls back to the local tag");
    assert_eq!(local.digest, one.manifest_digest);
    let missing = store
        .ensure(&format!("{host}/other:latest"), None)
        .await
        .expect_err("no local copy");
    assert!(missing.is_transient(), "{missing:?}");
}
