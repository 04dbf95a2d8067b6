//! Images for cluster tests: the image crate's fixtures (a busybox image
//! built from Debian's busybox-static, OCI layout and `docker save`
//! archives, push) and a `docker-registry` process on loopback or inside a
//! harness host, listening on that host's address.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Result, anyhow};

pub use rswarm_image::RegistryConfig;
pub use rswarm_image::fixtures::{
    BusyboxOptions, Registry, TestImage, busybox_image, push, write_docker_save, write_oci_layout,
};

use crate::hosts::Host;

/// The port registries listen on inside hosts (each host has its own address).
pub const HOST_REGISTRY_PORT: u16 = 5000;

/// The busybox test image of `variant` (different variants differ in their
/// top layer, so a tag can be moved between them).
pub fn busybox(variant: &str) -> Result<TestImage> {
    busybox_image(&BusyboxOptions {
        variant: variant.into(),
        ..Default::default()
    })
    .map_err(|e| anyhow!("{e}"))
}

/// A registry on 127.0.0.1 with a free port.
pub fn local_registry() -> Result<Registry> {
    Registry::start_local().map_err(|e| anyhow!("{e}"))
}

/// A registry inside `host`, on its address and port 5000: nodes on other
/// hosts reach it over the underlay (they need `--insecure-registry`).
pub fn registry_on_host(host: &Host) -> Result<Registry> {
    let addr = SocketAddr::from((host.ip(), HOST_REGISTRY_PORT));
    let probe_host = host.clone();
    Registry::start(host.command("docker-registry"), addr, move || {
        // bash's /dev/tcp connects from inside the host.
        probe_host
            .command("bash")
            .args(["-c", &format!(": > /dev/tcp/{}/{}", addr.ip(), addr.port())])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
    .map_err(|e| anyhow!("{e}"))
}

/// Pushes `image` to `reference` from this process (the registry must be
/// reachable from the root namespace: use [`local_registry`], or push from a
/// host with the CLI).
pub fn push_blocking(
    image: &TestImage,
    reference: &str,
    registry: &RegistryConfig,
) -> Result<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(60), push(image, reference, registry)).await
        })
        .map_err(|_| anyhow!("push of {reference} timed out"))?
        .map_err(|e| anyhow!("push of {reference}: {e}"))
}

/// Pushes `image` to `reference` from inside `host`'s network namespace
/// (a thread of this process moves there), so a registry on a host that the
/// root namespace cannot reach gets the image. `registry` must list the
/// registry as insecure when it is not on loopback.
pub fn push_from_host(
    host: &Host,
    image: &TestImage,
    reference: &str,
    registry: &RegistryConfig,
) -> Result<String> {
    let netns = std::fs::File::open(host.netns_path())?;
    let (image, reference, registry) = (image.clone(), reference.to_string(), registry.clone());
    std::thread::spawn(move || -> Result<String> {
        use std::os::fd::AsFd;
        rustix::thread::move_into_link_name_space(
            netns.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .map_err(|e| anyhow!("cannot enter the host's network namespace (needs root): {e}"))?;
        push_blocking(&image, &reference, &registry)
    })
    .join()
    .map_err(|_| anyhow!("the push thread panicked"))?
}
