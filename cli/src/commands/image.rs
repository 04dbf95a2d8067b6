//! `rswarm image …`: this node's images — list, remove, pull, load, prune —
//! through the daemon's `LocalImages` API, printed as Docker prints them.

use std::io::{BufRead, Read};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use rswarm_image::ImageRef;
use rswarm_proto::local_images_client::LocalImagesClient;
use rswarm_proto::*;
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::client::Daemon;
use crate::output::{ListFormat, ago_at, now_ms, print_json_lines, print_table};

/// Bytes per chunk of an uploaded archive: well under the API's 4 MiB
/// message limit.
const LOAD_CHUNK_BYTES: usize = 1024 * 1024;
/// Chunks queued between the file reader and the upload.
const LOAD_QUEUE_MAX: usize = 4;
/// Hex digits of an image ID in tables, as Docker shows.
const SHORT_ID_LEN: usize = 12;

#[derive(Debug, clap::Subcommand)]
pub enum ImageCommand {
    /// List this node's images.
    #[command(alias = "list")]
    Ls {
        /// Only image IDs.
        #[arg(short, long)]
        quiet: bool,
        /// table or json.
        #[arg(long)]
        format: Option<String>,
    },
    /// Remove images (a tag, or an image and all its tags).
    #[command(alias = "remove")]
    Rm {
        /// Remove even when several tags name it, and untag it even when a
        /// task uses it.
        #[arg(short, long)]
        force: bool,
        /// Images: name[:tag], name@digest, or an ID (prefix).
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Pull an image from its registry onto this node.
    Pull {
        /// Print only the reference pulled.
        #[arg(short, long)]
        quiet: bool,
        /// name[:tag] or name@digest.
        reference: String,
    },
    /// Load images from an OCI layout or `docker save` tar archive.
    Load {
        /// The archive (default: standard input).
        #[arg(short, long)]
        input: Option<PathBuf>,
    },
    /// Remove unused images.
    Prune {
        /// Every image no task uses, not only untagged ones.
        #[arg(short, long)]
        all: bool,
        /// Do not ask for confirmation.
        #[arg(short, long)]
        force: bool,
    },
}

/// Runs an image command.
pub async fn run(d: &Daemon, cmd: ImageCommand) -> Result<u8> {
    let client = LocalImagesClient::new(d.channel());
    match cmd {
        ImageCommand::Ls { quiet, format } => {
            ls(d, client, quiet, format.as_deref()).await.map(|()| 0)
        }
        ImageCommand::Rm { force, images } => rm(d, client, force, &images).await,
        ImageCommand::Pull { quiet, reference } => {
            pull(d, client, quiet, &reference).await.map(|()| 0)
        }
        ImageCommand::Load { input } => load(d, client, input).await.map(|()| 0),
        ImageCommand::Prune { all, force } => prune(d, client, all, force).await.map(|()| 0),
    }
}

/// One row of `image ls`: an image under one of its tags.
struct Row<'a> {
    image: &'a ImageView,
    repository: String,
    tag: String,
}

fn rows(images: &[ImageView]) -> Vec<Row<'_>> {
    let mut rows = Vec::new();
    for image in images {
        if image.repo_tags.is_empty() {
            // Pulled by digest: Docker shows the repository with no tag.
            let repository = image
                .repo_digests
                .first()
                .map_or_else(|| "<none>".into(), |d| familiar(d).0);
            rows.push(Row {
                image,
                repository,
                tag: "<none>".into(),
            });
        }
        for tag in &image.repo_tags {
            let (repository, tag) = familiar(tag);
            rows.push(Row {
                image,
                repository,
                tag,
            });
        }
    }
    rows
}

/// `docker.io/library/busybox:latest` → (`busybox`, `latest`).
fn familiar(reference: &str) -> (String, String) {
    match ImageRef::parse(reference) {
        Ok(parsed) => (
            parsed.familiar_name(),
            parsed.tag().unwrap_or("<none>").to_string(),
        ),
        Err(_) => (reference.to_string(), "<none>".into()),
    }
}

fn short_id(id: &str) -> String {
    id.trim_start_matches("sha256:")
        .chars()
        .take(SHORT_ID_LEN)
        .collect()
}

/// Docker's sizes: decimal units, about 3 significant digits ("4.26MB").
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    let digits = if value >= 100.0 || unit == 0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    let text = format!("{value:.digits$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    };
    format!("{text}{}", UNITS[unit])
}

/// The image's creation time in Unix ms (0 when it has none we can read).
fn created_ms(image: &ImageView) -> i64 {
    humantime::parse_rfc3339_weak(&image.created)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

async fn ls(
    d: &Daemon,
    mut client: LocalImagesClient<Channel>,
    quiet: bool,
    format: Option<&str>,
) -> Result<()> {
    let format = ListFormat::parse(format)?;
    let images = client
        .list_images(ListImagesRequest {})
        .await
        .map_err(|s| d.explain(s))?
        .into_inner()
        .images;
    if quiet {
        let mut seen = std::collections::BTreeSet::new();
        for image in &images {
            if seen.insert(&image.id) {
                println!("{}", short_id(&image.id));
            }
        }
        return Ok(());
    }
    let now = now_ms();
    let rows = rows(&images);
    match format {
        ListFormat::Json => {
            print_json_lines(&rows.iter().map(|r| row_json(r, now)).collect::<Vec<_>>())
        }
        ListFormat::Table => {
            let table: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    vec![
                        r.repository.clone(),
                        r.tag.clone(),
                        short_id(&r.image.id),
                        created_text(r.image, now),
                        human_size(r.image.size),
                    ]
                })
                .collect();
            print_table(
                &["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"],
                &table,
            );
            Ok(())
        }
    }
}

fn created_text(image: &ImageView, now: i64) -> String {
    match created_ms(image) {
        0 => "N/A".into(),
        ms => ago_at(ms, now),
    }
}

/// Docker's JSON keys for `image ls --format json`.
fn row_json(row: &Row<'_>, now: i64) -> Value {
    let digest = row
        .image
        .repo_digests
        .first()
        .and_then(|d| d.rsplit_once('@'))
        .map_or("<none>", |(_, digest)| digest);
    json!({
        "Containers": row.image.holders.len().to_string(),
        "CreatedAt": row.image.created,
        "CreatedSince": created_text(row.image, now),
        "Digest": digest,
        "ID": short_id(&row.image.id),
        "Repository": row.repository,
        "Size": human_size(row.image.size),
        "Tag": row.tag,
    })
}

async fn rm(
    d: &Daemon,
    mut client: LocalImagesClient<Channel>,
    force: bool,
    images: &[String],
) -> Result<u8> {
    let mut failed = false;
    for image in images {
        let request = RemoveImageRequest {
            reference: image.clone(),
            force,
        };
        match client.remove_image(request).await {
            Ok(response) => {
                let response = response.into_inner();
                for tag in &response.untagged {
                    let (repository, tag) = familiar(tag);
                    println!("Untagged: {repository}:{tag}");
                }
                for id in &response.deleted {
                    println!("Deleted: {id}");
                }
            }
            Err(status) => {
                eprintln!("Error: {}", d.explain(status));
                failed = true;
            }
        }
    }
    Ok(u8::from(failed))
}

async fn pull(
    d: &Daemon,
    mut client: LocalImagesClient<Channel>,
    quiet: bool,
    reference: &str,
) -> Result<()> {
    let parsed = ImageRef::parse(reference)?;
    if !quiet && parsed.digest().is_none() && !reference.contains(':') {
        println!("Using default tag: latest");
    }
    let response = client
        .pull_image(PullImageRequest {
            reference: reference.to_string(),
            auth: None,
        })
        .await
        .map_err(|s| d.explain(s))?
        .into_inner();
    if !quiet {
        println!("Digest: {}", response.digest);
        println!(
            "Status: Image is up to date for {}",
            parsed.familiar_name() + &tag_suffix(&parsed)
        );
    }
    println!("{}", response.reference);
    Ok(())
}

fn tag_suffix(parsed: &ImageRef) -> String {
    match (parsed.tag(), parsed.digest()) {
        (_, Some(digest)) => format!("@{digest}"),
        (Some(tag), None) => format!(":{tag}"),
        (None, None) => String::new(),
    }
}

async fn load(
    d: &Daemon,
    mut client: LocalImagesClient<Channel>,
    input: Option<PathBuf>,
) -> Result<()> {
    let mut reader: Box<dyn Read + Send> = match &input {
        Some(path) => Box::new(
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
        ),
        None => {
            if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                bail!(
                    "requested load from stdin, but stdin is a terminal: pass the archive with -i FILE or pipe it in"
                );
            }
            Box::new(std::io::stdin())
        }
    };
    let (sender, receiver) = tokio::sync::mpsc::channel::<LoadImageChunk>(LOAD_QUEUE_MAX);
    // Reading is blocking I/O: it runs on its own thread and feeds the
    // upload through a small queue (bounded memory whatever the size).
    let reading = tokio::task::spawn_blocking(move || -> Result<()> {
        loop {
            let mut data = vec![0u8; LOAD_CHUNK_BYTES];
            let n = read_full(&mut reader, &mut data).context("cannot read the archive")?;
            if n == 0 {
                return Ok(());
            }
            data.truncate(n);
            if sender.blocking_send(LoadImageChunk { data }).is_err() {
                return Ok(()); // the upload ended early; its error says why
            }
        }
    });
    let upload = client
        .load_image(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await;
    reading.await.context("the archive reader stopped")??;
    let response = upload.map_err(|s| d.explain(s))?.into_inner();
    for image in &response.images {
        if image.repo_tags.is_empty() {
            println!("Loaded image ID: {}", image.id);
        }
        for tag in &image.repo_tags {
            let (repository, tag) = familiar(tag);
            println!("Loaded image: {repository}:{tag}");
        }
    }
    Ok(())
}

/// Reads until `buf` is full or the input ends.
fn read_full(reader: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

async fn prune(
    d: &Daemon,
    mut client: LocalImagesClient<Channel>,
    all: bool,
    force: bool,
) -> Result<()> {
    if !force {
        let what = if all {
            "all images without at least one task using them"
        } else {
            "all dangling images"
        };
        eprint!("WARNING! This will remove {what}.\nAre you sure you want to continue? [y/N] ");
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .context("cannot read the answer")?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Ok(());
        }
    }
    let report = client
        .prune_images(PruneImagesRequest { all })
        .await
        .map_err(|s| d.explain(s))?
        .into_inner();
    if !report.deleted.is_empty() {
        println!("Deleted Images:");
        for tag in &report.untagged {
            let (repository, tag) = familiar(tag);
            println!("untagged: {repository}:{tag}");
        }
        for id in &report.deleted {
            println!("deleted: {id}");
        }
        println!();
    }
    println!(
        "Total reclaimed space: {}",
        human_size(report.space_reclaimed)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_docker() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1_240), "1.24kB");
        assert_eq!(human_size(4_261_000), "4.26MB");
        assert_eq!(human_size(12_300_000), "12.3MB");
        assert_eq!(human_size(187_000_000), "187MB");
    }

    #[test]
    fn tags_show_familiar_names() {
        assert_eq!(
            familiar("docker.io/library/busybox:latest"),
            ("busybox".into(), "latest".into())
        );
        assert_eq!(
            familiar("127.0.0.1:5000/bb:v1"),
            ("127.0.0.1:5000/bb".into(), "v1".into())
        );
    }

    /// Goal: an image pulled by digest (every pinned service task) is
    /// listed under its repository with no tag, as Docker lists it.
    #[test]
    fn an_untagged_image_shows_its_repository() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let pulled = ImageView {
            repo_digests: vec![format!("192.0.2.254:5000/rswarm/busybox@{digest}")],
            ..ImageView::default()
        };
        let orphan = ImageView::default();
        let images = [pulled, orphan];
        let shown: Vec<_> = rows(&images)
            .into_iter()
            .map(|r| (r.repository, r.tag))
            .collect();
        assert_eq!(
            shown,
            [
                ("192.0.2.254:5000/rswarm/busybox".into(), "<none>".into()),
                ("<none>".into(), "<none>".into())
            ]
        );
    }
}
