//! Test fixtures: a small busybox image built from the host's busybox-static
//! (Debian's `/usr/bin/busybox`), written as an OCI layout or `docker save`
//! archive, pushed to a registry, and a local `docker-registry` process.
//!
//! Images are deterministic: fixed mtimes, owners and gzip headers, so the
//! same options give the same digests; a different `variant` gives a
//! different top layer, for moving a tag in a test.
//!
//! Layer 1: busybox, its applet symlinks, `/etc/passwd`, `/etc/group`,
//! `/etc/keep/{a,b}`, `/opt/old/file` and the usual directories. Layer 2: a
//! delta that deletes `/bin/vi` and `/opt/old` (whiteouts), makes
//! `/etc/keep` opaque with one file `c`, and writes `/etc/variant`.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flate2::Compression;
use flate2::write::GzEncoder;

use crate::manifest::{OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, node_platform};
use crate::reference::ImageRef;
use crate::registry::{RegistryConfig, RegistrySession};
use crate::store::layout::sha256_of;

/// Errors of the fixtures (test code).
pub type FixtureError = Box<dyn std::error::Error + Send + Sync>;

/// Where Debian's busybox-static puts the binary.
pub const BUSYBOX: &str = "/usr/bin/busybox";
/// The mtime of every entry, so digests depend on content only.
const FIXED_MTIME: u64 = 1_700_000_000;
/// Applets linked in `/bin`: enough for shells, health checks and tests.
const APPLETS: &[&str] = &[
    "sh", "ash", "cat", "echo", "env", "false", "grep", "head", "hostname", "id", "kill", "ls",
    "mkdir", "mount", "ps", "pwd", "rm", "sleep", "stat", "tail", "test", "touch", "true", "vi",
    "wc", "wget", "whoami", "dd", "sync", "date", "nc", "httpd", "ip", "ifconfig", "readlink",
    "uname", "seq", "yes",
];
/// Time for a test registry to start answering.
const REGISTRY_START_TIMEOUT: Duration = Duration::from_secs(10);

/// What to build.
#[derive(Debug, Clone)]
pub struct BusyboxOptions {
    /// Written to `/etc/variant` in the top layer.
    pub variant: String,
    /// The image's `CMD`.
    pub cmd: Vec<String>,
    /// The image's `HEALTHCHECK` test (`["CMD-SHELL", "…"]`), 1 s interval.
    pub healthcheck: Option<Vec<String>>,
}

impl Default for BusyboxOptions {
    fn default() -> Self {
        Self {
            variant: "one".into(),
            cmd: vec!["/bin/sh".into()],
            healthcheck: None,
        }
    }
}

/// One layer in both forms.
#[derive(Debug, Clone)]
pub struct TestLayer {
    /// The uncompressed tar.
    pub tar: Vec<u8>,
    /// The gzip of it (what registries and OCI layouts hold).
    pub gzip: Vec<u8>,
    /// `sha256:` of `gzip`.
    pub digest: String,
    /// `sha256:` of `tar`.
    pub diff_id: String,
}

/// A whole image.
#[derive(Debug, Clone)]
pub struct TestImage {
    /// Layers, bottom → top.
    pub layers: Vec<TestLayer>,
    /// The config JSON.
    pub config: Vec<u8>,
    /// `sha256:` of the config (Docker's image ID).
    pub config_digest: String,
    /// The OCI manifest JSON.
    pub manifest: Vec<u8>,
    /// `sha256:` of the manifest.
    pub manifest_digest: String,
}

/// Builds the busybox image.
pub fn busybox_image(options: &BusyboxOptions) -> Result<TestImage, FixtureError> {
    let busybox = std::fs::read(BUSYBOX).map_err(|e| {
        format!(
            "{BUSYBOX} is needed to build the test image ({e}); install Debian's busybox-static"
        )
    })?;
    let base = layer(base_tar(&busybox)?)?;
    let delta = layer(delta_tar(&options.variant)?)?;
    image_from_layers(vec![base, delta], options)
}

/// Builds an image from the given uncompressed layer tars (for unusual
/// layers in tests), with the options' config.
pub fn image_from_tars(
    tars: Vec<Vec<u8>>,
    options: &BusyboxOptions,
) -> Result<TestImage, FixtureError> {
    let layers = tars.into_iter().map(layer).collect::<Result<Vec<_>, _>>()?;
    image_from_layers(layers, options)
}

fn image_from_layers(
    layers: Vec<TestLayer>,
    options: &BusyboxOptions,
) -> Result<TestImage, FixtureError> {
    let (_, arch) = node_platform();
    let mut run = serde_json::json!({
        "Cmd": options.cmd,
        "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
        "WorkingDir": "/",
    });
    if let Some(test) = &options.healthcheck {
        run["Healthcheck"] = serde_json::json!({"Test": test, "Interval": 1_000_000_000u64,
            "Timeout": 1_000_000_000u64, "Retries": 2});
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": arch, "os": "linux", "created": "2024-01-01T00:00:00Z",
        "config": run,
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()},
    }))?;
    let config_digest = sha256_of(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": layers.iter().map(|l| serde_json::json!({
            "mediaType": OCI_LAYER_GZIP, "digest": l.digest, "size": l.gzip.len()})).collect::<Vec<_>>(),
    }))?;
    Ok(TestImage {
        manifest_digest: sha256_of(&manifest),
        manifest,
        config_digest,
        config,
        layers,
    })
}

fn layer(tar: Vec<u8>) -> Result<TestLayer, FixtureError> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(&tar)?;
    let gzip = encoder.finish()?;
    Ok(TestLayer {
        digest: sha256_of(&gzip),
        diff_id: sha256_of(&tar),
        tar,
        gzip,
    })
}

/// A deterministic tar writer.
pub struct TarWriter {
    builder: tar::Builder<Vec<u8>>,
}

impl Default for TarWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl TarWriter {
    /// An empty tar.
    pub fn new() -> Self {
        Self {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(size);
        header.set_mtime(FIXED_MTIME);
        header.set_uid(0);
        header.set_gid(0);
        header
    }

    /// A directory.
    pub fn dir(&mut self, path: &str, mode: u32) -> Result<&mut Self, FixtureError> {
        let mut header = Self::header(tar::EntryType::Directory, mode, 0);
        self.builder
            .append_data(&mut header, path, std::io::empty())?;
        Ok(self)
    }

    /// A regular file.
    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<&mut Self, FixtureError> {
        let mut header = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        self.builder.append_data(&mut header, path, data)?;
        Ok(self)
    }

    /// A symlink.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<&mut Self, FixtureError> {
        let mut header = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.builder.append_link(&mut header, path, target)?;
        Ok(self)
    }

    /// A hard link to an earlier entry.
    pub fn hardlink(&mut self, path: &str, target: &str) -> Result<&mut Self, FixtureError> {
        let mut header = Self::header(tar::EntryType::Link, 0o644, 0);
        self.builder.append_link(&mut header, path, target)?;
        Ok(self)
    }

    /// An entry with a raw name, bypassing the tar crate's path checks (to
    /// build hostile layers).
    pub fn raw_file(&mut self, name: &[u8], data: &[u8]) -> Result<&mut Self, FixtureError> {
        let mut header = Self::header(tar::EntryType::Regular, 0o644, data.len() as u64);
        let field = &mut header.as_old_mut().name;
        if name.len() > field.len() {
            return Err("raw name too long".into());
        }
        field[..name.len()].copy_from_slice(name);
        header.set_cksum();
        self.builder.append(&header, data)?;
        Ok(self)
    }

    /// The finished tar.
    pub fn finish(self) -> Result<Vec<u8>, FixtureError> {
        Ok(self.builder.into_inner()?)
    }
}

fn base_tar(busybox: &[u8]) -> Result<Vec<u8>, FixtureError> {
    let mut tar = TarWriter::new();
    for dir in [
        "bin", "dev", "etc", "etc/keep", "home", "opt", "opt/old", "proc", "root", "run", "sys",
        "usr", "var",
    ] {
        tar.dir(dir, 0o755)?;
    }
    tar.dir("tmp", 0o1777)?;
    tar.file("bin/busybox", 0o755, busybox)?;
    for applet in APPLETS {
        tar.symlink(&format!("bin/{applet}"), "busybox")?;
    }
    tar.file(
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    tar.file("etc/group", 0o644, b"root:x:0:\nnogroup:x:65534:\n")?;
    tar.file("etc/keep/a", 0o644, b"a\n")?;
    tar.file("etc/keep/b", 0o644, b"b\n")?;
    tar.file("opt/old/file", 0o644, b"old\n")?;
    tar.finish()
}

fn delta_tar(variant: &str) -> Result<Vec<u8>, FixtureError> {
    let mut tar = TarWriter::new();
    tar.dir("bin", 0o755)?.file("bin/.wh.vi", 0o644, b"")?;
    tar.dir("opt", 0o755)?.file("opt/.wh.old", 0o644, b"")?;
    tar.dir("etc", 0o755)?.dir("etc/keep", 0o755)?;
    tar.file("etc/keep/.wh..wh..opq", 0o644, b"")?;
    tar.file("etc/keep/c", 0o644, b"c\n")?;
    tar.file("etc/variant", 0o644, format!("{variant}\n").as_bytes())?;
    tar.finish()
}

/// Writes `image` as an OCI image layout tar, named `name` (a full
/// reference; its tag also goes in `org.opencontainers.image.ref.name`).
pub fn write_oci_layout(image: &TestImage, name: &str, path: &Path) -> Result<(), FixtureError> {
    let tag = ImageRef::parse(name)?.tag().unwrap_or("latest").to_string();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": crate::manifest::OCI_INDEX,
        "manifests": [{
            "mediaType": OCI_MANIFEST, "digest": image.manifest_digest, "size": image.manifest.len(),
            "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": tag},
        }],
    }))?;
    let mut tar = TarWriter::new();
    tar.file("oci-layout", 0o644, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    tar.file("index.json", 0o644, &index)?;
    tar.dir("blobs", 0o755)?.dir("blobs/sha256", 0o755)?;
    let blob = |digest: &str| format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
    tar.file(&blob(&image.manifest_digest), 0o644, &image.manifest)?;
    tar.file(&blob(&image.config_digest), 0o644, &image.config)?;
    for layer in &image.layers {
        tar.file(&blob(&layer.digest), 0o644, &layer.gzip)?;
    }
    std::fs::write(path, tar.finish()?)?;
    Ok(())
}

/// Writes `image` as a `docker save` tar (uncompressed layers, as Docker
/// writes them) with `repo_tags` (familiar names like `busybox:latest`).
pub fn write_docker_save(
    image: &TestImage,
    repo_tags: &[&str],
    path: &Path,
) -> Result<(), FixtureError> {
    let config_name = format!("{}.json", image.config_digest.trim_start_matches("sha256:"));
    let layer_names: Vec<String> = image
        .layers
        .iter()
        .map(|l| format!("{}/layer.tar", l.diff_id.trim_start_matches("sha256:")))
        .collect();
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": config_name, "RepoTags": repo_tags, "Layers": layer_names,
    }]))?;
    let mut tar = TarWriter::new();
    tar.file("manifest.json", 0o644, &manifest)?;
    tar.file(&config_name, 0o644, &image.config)?;
    for (layer, name) in image.layers.iter().zip(&layer_names) {
        if let Some((dir, _)) = name.split_once('/') {
            tar.dir(dir, 0o755)?;
        }
        tar.file(name, 0o644, &layer.tar)?;
    }
    tar.file("repositories", 0o644, b"{}")?;
    std::fs::write(path, tar.finish()?)?;
    Ok(())
}

/// Pushes `image` to `reference` (a registry reached over plain HTTP when
/// loopback or listed in `registry`); returns the manifest digest.
pub async fn push(
    image: &TestImage,
    reference: &str,
    registry: &RegistryConfig,
) -> Result<String, FixtureError> {
    let parsed = ImageRef::parse(reference)?;
    let session = RegistrySession::new(&parsed, None, registry);
    session.push_raw(image).await?;
    Ok(image.manifest_digest.clone())
}

/// A `docker-registry` process serving a directory, killed on drop.
pub struct Registry {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry on 127.0.0.1 on a free port, storing under a fresh
    /// temporary directory.
    pub fn start_local() -> Result<Self, FixtureError> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        Self::start(Command::new("docker-registry"), addr, move || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
        })
    }

    /// Starts a registry with `command` (`docker-registry`, perhaps entered
    /// into a network namespace) listening on `addr`; `ready` says when it
    /// answers (from wherever it can be reached).
    pub fn start(
        mut command: Command,
        addr: SocketAddr,
        ready: impl Fn() -> bool,
    ) -> Result<Self, FixtureError> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("config.yml");
        std::fs::write(&config, registry_config(&dir.path().join("data"), addr))?;
        let log = std::fs::File::create(dir.path().join("registry.log"))?;
        let child = command
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                format!("docker-registry could not start ({e}); install Debian's docker-registry")
            })?;
        let mut registry = Self { child, addr, dir };
        registry.wait_ready(ready)?;
        Ok(registry)
    }

    /// `host:port` for references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The registry's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    fn wait_ready(&mut self, ready: impl Fn() -> bool) -> Result<(), FixtureError> {
        let deadline = Instant::now() + REGISTRY_START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Err(format!("docker-registry exited with {status}: {}", self.log()).into());
            }
            if ready() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "docker-registry did not listen on {} within 10 s: {}",
            self.addr,
            self.log()
        )
        .into())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn registry_config(data: &Path, addr: SocketAddr) -> String {
    format!(
        "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
        data.display()
    )
}

/// A path inside a fresh temporary directory (kept alive by the returned guard).
pub fn temp_file(name: &str) -> Result<(tempfile::TempDir, PathBuf), FixtureError> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join(name);
    Ok((dir, path))
}
