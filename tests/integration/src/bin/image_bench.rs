//! Image store benchmark: the busybox test image (2 layers, ~1.2 MB
//! compressed) from a docker-registry on loopback into a fresh store (cold
//! pull: manifest, config, 2 layers downloaded, verified and unpacked), the
//! same reference again (warm: one manifest request), and `load` of the same
//! image as a `docker save` archive into a fresh store. Prints the median of
//! each over the trials. Needs root (unpacking makes device nodes).
//!
//! Run: `cargo build --release -p rswarm-integration`, then
//! `target/release/rswarm-image-bench [trials]`.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use rswarm_image::{ImageStore, RegistryConfig};
use rswarm_integration::images::{busybox, local_registry, push_blocking, write_docker_save};
use rswarm_integration::print_median;

fn main() -> Result<()> {
    let trials: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(20);
    let registry = local_registry()?;
    let reference = format!("{}/bb:latest", registry.host());
    let image = busybox("bench")?;
    push_blocking(&image, &reference, &RegistryConfig::default())?;
    let scratch = tempfile::tempdir()?;
    let archive = scratch.path().join("save.tar");
    write_docker_save(&image, &["bb:bench"], &archive).map_err(|e| anyhow!("{e}"))?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (mut cold, mut warm, mut load) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..trials {
        let dir = tempfile::tempdir()?;
        let store = ImageStore::open(dir.path().join("images"), RegistryConfig::default())?;
        cold.push(timed(|| {
            runtime.block_on(store.ensure(&reference, None)).map(drop)
        })?);
        warm.push(timed(|| {
            runtime.block_on(store.ensure(&reference, None)).map(drop)
        })?);
        let dir = tempfile::tempdir()?;
        let store = ImageStore::open(dir.path().join("images"), RegistryConfig::default())?;
        load.push(timed(|| {
            runtime.block_on(store.load_archive(&archive)).map(drop)
        })?);
    }
    print!("cold pull: ");
    print_median(&mut cold);
    print!("warm ensure (tag re-checked): ");
    print_median(&mut warm);
    print!("load docker save archive: ");
    print_median(&mut load);
    Ok(())
}

fn timed(f: impl FnOnce() -> Result<(), rswarm_image::ImageError>) -> Result<Duration> {
    let start = Instant::now();
    f()?;
    Ok(start.elapsed())
}
