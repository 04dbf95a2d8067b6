//! The reference: runc alone on a plain bundle whose root is the busybox
//! test image's layer (read-only, as `runc spec` writes it), without a
//! shim, an overlay or a daemon. Times `runc run` of `/bin/true` (create,
//! start, wait, delete), and `runc create` and `runc start` of `sleep`
//! separately (the two steps the shim runs). Also times an overlay mount of
//! that layer, the one root-filesystem step the `oci` driver adds.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rswarm_agent::runtime::oci::detect_runc;
use rswarm_agent::runtime::oci::test_support::BusyboxImage;
use serde_json::{Value, json};

use crate::stats::summary;

/// The scratch directory, runc's state and the cgroup parent of one run.
struct Scratch {
    dir: tempfile::TempDir,
    runc: PathBuf,
    cgroup_parent: String,
}

pub fn run(n: usize) -> Result<()> {
    let runc = detect_runc().map_err(|reason| anyhow::anyhow!("runc is needed: {reason}"))?;
    let scratch = Scratch {
        dir: tempfile::tempdir()?,
        runc,
        cgroup_parent: format!("rswarm-bench-runc-{}", std::process::id()),
    };
    let result = measure(&scratch, n);
    scratch.clean_up();
    result
}

fn measure(scratch: &Scratch, n: usize) -> Result<()> {
    let image = BusyboxImage::build(&scratch.dir.path().join("image"))?;
    let root = image.layer();
    let true_bundle = scratch.bundle("true", root, &["/bin/true"])?;
    let sleep_bundle = scratch.bundle("sleep", root, &["/bin/sleep", "86400"])?;
    let (mut run, mut create, mut start, mut both) = (vec![], vec![], vec![], vec![]);
    for i in 0..n {
        let id = format!("bench-true-{i}");
        run.push(timed(|| {
            scratch.runc_ok(&["run", "--bundle", path(&true_bundle)?, &id])
        })?);
        let id = format!("bench-sleep-{i}");
        let pid_file = scratch.dir.path().join("sleep.pid");
        let created = timed(|| {
            scratch.runc_ok(&[
                "create",
                "--bundle",
                path(&sleep_bundle)?,
                "--pid-file",
                path(&pid_file)?,
                &id,
            ])
        })?;
        let started = timed(|| scratch.runc_ok(&["start", &id]))?;
        scratch.runc_ok(&["delete", "--force", &id])?;
        create.push(created);
        start.push(started);
        both.push(created + started);
    }
    summary("runc run /bin/true (plain bundle, no shim)", &mut run);
    summary("runc create (sleep)", &mut create);
    summary("runc start (sleep)", &mut start);
    summary("runc create + start", &mut both);
    let mut overlay = overlay_mounts(scratch.dir.path(), root, n)?;
    summary("overlay mount + unmount of the image layer", &mut overlay);
    Ok(())
}

impl Scratch {
    /// A bundle from `runc spec`, its root the image layer, running `args`.
    fn bundle(&self, name: &str, root: &Path, args: &[&str]) -> Result<PathBuf> {
        let bundle = self.dir.path().join(name);
        std::fs::create_dir_all(&bundle)?;
        self.runc_ok(&["spec", "--bundle", path(&bundle)?])?;
        let config_path = bundle.join("config.json");
        let mut config: Value = serde_json::from_slice(&std::fs::read(&config_path)?)?;
        config["process"]["terminal"] = json!(false);
        config["process"]["args"] = json!(args);
        config["root"]["path"] = json!(root);
        // Explicit, so that the cleanup knows where runc put the cgroups.
        config["linux"]["cgroupsPath"] = json!(format!("/{}/{name}", self.cgroup_parent));
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config)?)?;
        Ok(bundle)
    }

    /// Runs runc with `args`. Its stdio are inherited by the container (a
    /// created one holds them until it ends), so they are /dev/null; the
    /// error comes from runc's log file.
    fn runc_ok(&self, args: &[&str]) -> Result<()> {
        let log = self.dir.path().join("runc.log");
        let status = Command::new(&self.runc)
            .arg("--root")
            .arg(self.dir.path().join("runc"))
            .arg("--log")
            .arg(&log)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .with_context(|| format!("cannot run {}", self.runc.display()))?;
        if !status.success() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let last = text.lines().last().unwrap_or("no log");
            bail!("runc {}: {status}: {last}", args.join(" "));
        }
        Ok(())
    }

    /// Deletes every container left (a run that failed half-way) and the
    /// cgroup parent in every hierarchy.
    fn clean_up(&self) {
        let root = self.dir.path().join("runc");
        let listed = Command::new(&self.runc)
            .arg("--root")
            .arg(&root)
            .args(["list", "-q"])
            .stderr(Stdio::null())
            .output();
        for id in listed
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
            .lines()
        {
            let _ = self.runc_ok(&["delete", "--force", id.trim()]);
        }
        for hierarchy in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            for name in ["true", "sleep"] {
                let _ = std::fs::remove_dir(hierarchy.path().join(&self.cgroup_parent).join(name));
            }
            let _ = std::fs::remove_dir(hierarchy.path().join(&self.cgroup_parent));
        }
    }
}

/// `n` overlay mounts of `layer` (lower) with a fresh upper and work
/// directory each, each unmounted at once; the time of mount + unmount.
fn overlay_mounts(scratch: &Path, layer: &Path, n: usize) -> Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let dir = scratch.join(format!("overlay-{i}"));
        let (upper, work, target) = (dir.join("upper"), dir.join("work"), dir.join("rootfs"));
        for d in [&upper, &work, &target] {
            std::fs::create_dir_all(d)?;
        }
        let options = std::ffi::CString::new(format!(
            "lowerdir={},upperdir={},workdir={}",
            layer.display(),
            upper.display(),
            work.display()
        ))?;
        let start = Instant::now();
        rustix::mount::mount(
            "overlay",
            &target,
            "overlay",
            rustix::mount::MountFlags::empty(),
            Some(options.as_c_str()),
        )
        .context("overlay mount (needs root and overlayfs)")?;
        rustix::mount::unmount(&target, rustix::mount::UnmountFlags::empty())?;
        samples.push(start.elapsed());
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(samples)
}

fn timed(f: impl FnOnce() -> Result<()>) -> Result<Duration> {
    let start = Instant::now();
    f()?;
    Ok(start.elapsed())
}

fn path(p: &Path) -> Result<&str> {
    p.to_str().context("a scratch path is not UTF-8")
}
