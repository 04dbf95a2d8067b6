//! `rswarm secret …` and `rswarm config …`: create from a file or stdin,
//! ls, inspect, rm, with Docker's columns and JSON keys. The two share one
//! implementation; a secret's data is never shown (the managers never
//! return it), a config's is (`Data`, base64, as Docker; `--pretty` prints
//! it as text).

use std::collections::BTreeMap;
use std::io::Read;

use anyhow::{Context, Result, bail};
use base64::Engine;
use rswarm_proto::*;
use serde_json::{Value, json};

pub use rswarm_manager::controlapi::secrets::FileKind;
use rswarm_manager::limits::OBJECT_DATA_BYTES_MAX;

use crate::client::Daemon;
use crate::output::{Filters, ListFormat, ago_at, now_ms, print_json_lines, print_table, rfc3339};

/// The commands of `rswarm secret` and `rswarm config`.
#[derive(Debug, clap::Subcommand)]
pub enum FileCommand {
    /// Create one from a file, or from stdin with "-".
    Create {
        /// A label, key=value (repeatable).
        #[arg(short, long = "label", value_name = "KEY=VALUE")]
        label: Vec<String>,
        /// Its name.
        name: String,
        /// The file holding its data, or "-" for stdin.
        file: String,
    },
    /// List them.
    #[command(alias = "list")]
    Ls {
        /// Only print IDs.
        #[arg(short, long)]
        quiet: bool,
        /// Filter: id=, name=, label=KEY or label=KEY=VALUE.
        #[arg(short, long = "filter", value_name = "KEY=VALUE")]
        filter: Vec<String>,
        /// "table" (default) or "json".
        #[arg(long)]
        format: Option<String>,
    },
    /// Show one or more in detail.
    Inspect {
        /// Human-readable output.
        #[arg(long)]
        pretty: bool,
        /// "json": one object per line.
        #[arg(long)]
        format: Option<String>,
        /// Names or IDs.
        #[arg(required = true)]
        references: Vec<String>,
    },
    /// Remove one or more.
    #[command(alias = "remove")]
    Rm {
        /// Names or IDs.
        #[arg(required = true)]
        references: Vec<String>,
    },
}

/// A secret or config as the CLI shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct FileObject {
    id: String,
    version: u64,
    created_ms: i64,
    updated_ms: i64,
    name: String,
    labels: BTreeMap<String, String>,
    /// Configs only.
    data: Option<Vec<u8>>,
}

impl FileObject {
    fn new(meta: Option<Meta>, annotations: Option<Annotations>, data: Option<Vec<u8>>) -> Self {
        let meta = meta.unwrap_or_default();
        let annotations = annotations.unwrap_or_default();
        Self {
            id: meta.id,
            version: meta.version,
            created_ms: meta.created_at_ms,
            updated_ms: meta.updated_at_ms,
            name: annotations.name,
            labels: annotations.labels,
            data,
        }
    }

    fn from_secret(s: Secret) -> Self {
        let spec = s.spec.unwrap_or_default();
        Self::new(s.meta, spec.annotations, None)
    }

    fn from_config(c: Config) -> Self {
        let spec = c.spec.unwrap_or_default();
        Self::new(c.meta, spec.annotations, Some(spec.data))
    }

    /// Docker's `inspect` document.
    pub fn inspect_json(&self) -> Value {
        let mut spec = json!({ "Name": self.name, "Labels": self.labels });
        if let Some(data) = &self.data {
            spec["Data"] = json!(base64::engine::general_purpose::STANDARD.encode(data));
        }
        json!({
            "ID": self.id,
            "Version": { "Index": self.version },
            "CreatedAt": rfc3339(self.created_ms),
            "UpdatedAt": rfc3339(self.updated_ms),
            "Spec": spec,
        })
    }

    /// Docker's `ls --format json` object.
    pub fn ls_json(&self) -> Value {
        json!({
            "ID": self.id,
            "Name": self.name,
            "CreatedAt": rfc3339(self.created_ms),
            "UpdatedAt": rfc3339(self.updated_ms),
            "Labels": self.labels,
        })
    }

    /// The `ID NAME CREATED UPDATED` row.
    pub fn row(&self, now_ms: i64) -> Vec<String> {
        vec![
            self.id.clone(),
            self.name.clone(),
            ago_at(self.created_ms, now_ms),
            ago_at(self.updated_ms, now_ms),
        ]
    }

    /// `inspect --pretty`.
    pub fn pretty(&self) -> String {
        let mut text = format!(
            "ID:              {}\nName:            {}\n",
            self.id, self.name
        );
        if !self.labels.is_empty() {
            text.push_str("Labels:\n");
            for (k, v) in &self.labels {
                text.push_str(&format!(" - {k}={v}\n"));
            }
        }
        text.push_str(&format!(
            "Created at:      {}\nUpdated at:      {}\n",
            rfc3339(self.created_ms),
            rfc3339(self.updated_ms)
        ));
        if let Some(data) = &self.data {
            text.push_str(&format!("Data:\n{}\n", String::from_utf8_lossy(data)));
        }
        text
    }

    fn matches(&self, key: &str, value: &str) -> bool {
        match key {
            "id" => self.id.starts_with(value),
            "name" => self.name.contains(value),
            "label" => match value.split_once('=') {
                Some((k, v)) => self.labels.get(k).is_some_and(|x| x == v),
                None => self.labels.contains_key(value),
            },
            _ => false,
        }
    }
}

/// Parses `--label key=value` options.
pub fn parse_labels(raw: &[String]) -> Result<BTreeMap<String, String>> {
    raw.iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            None if !l.is_empty() => Ok((l.clone(), String::new())),
            _ => bail!("invalid label {l:?}: use key=value"),
        })
        .collect()
}

/// Reads at most `OBJECT_DATA_BYTES_MAX` bytes from `source` ("-": stdin).
fn read_data(kind: FileKind, source: &str) -> Result<Vec<u8>> {
    let mut data = Vec::new();
    let limit = OBJECT_DATA_BYTES_MAX as u64 + 1;
    if source == "-" {
        std::io::stdin()
            .take(limit)
            .read_to_end(&mut data)
            .context("cannot read stdin")?;
    } else {
        std::fs::File::open(source)
            .and_then(|f| f.take(limit).read_to_end(&mut data))
            .with_context(|| format!("cannot read {source}"))?;
    }
    if data.len() > OBJECT_DATA_BYTES_MAX {
        bail!(
            "{source} is larger than {} KiB, the largest {} allowed",
            OBJECT_DATA_BYTES_MAX / 1024,
            kind.noun()
        );
    }
    Ok(data)
}

/// Runs `rswarm secret …` or `rswarm config …`.
pub async fn run(d: &Daemon, kind: FileKind, cmd: FileCommand) -> Result<()> {
    match cmd {
        FileCommand::Create { label, name, file } => {
            let data = read_data(kind, &file)?;
            let id = create(d, kind, &name, parse_labels(&label)?, data).await?;
            println!("{id}");
            Ok(())
        }
        FileCommand::Ls {
            quiet,
            filter,
            format,
        } => ls(d, kind, quiet, &filter, format.as_deref()).await,
        FileCommand::Inspect {
            pretty,
            format,
            references,
        } => inspect(d, kind, pretty, format.as_deref(), &references).await,
        FileCommand::Rm { references } => rm(d, kind, &references).await,
    }
}

async fn create(
    d: &Daemon,
    kind: FileKind,
    name: &str,
    labels: BTreeMap<String, String>,
    data: Vec<u8>,
) -> Result<String> {
    let annotations = Some(Annotations {
        name: name.to_string(),
        labels,
    });
    let meta = match kind {
        FileKind::Secret => d
            .control()
            .create_secret(CreateSecretRequest {
                spec: Some(SecretSpec { annotations, data }),
            })
            .await
            .map_err(|s| d.explain(s))?
            .into_inner()
            .secret
            .and_then(|s| s.meta),
        FileKind::Config => d
            .control()
            .create_config(CreateConfigRequest {
                spec: Some(ConfigSpec { annotations, data }),
            })
            .await
            .map_err(|s| d.explain(s))?
            .into_inner()
            .config
            .and_then(|c| c.meta),
    };
    meta.map(|m| m.id)
        .context("the manager answered without the new object")
}

async fn list(d: &Daemon, kind: FileKind) -> Result<Vec<FileObject>> {
    Ok(match kind {
        FileKind::Secret => d
            .control()
            .list_secrets(ListSecretsRequest {})
            .await
            .map_err(|s| d.explain(s))?
            .into_inner()
            .secrets
            .into_iter()
            .map(FileObject::from_secret)
            .collect(),
        FileKind::Config => d
            .control()
            .list_configs(ListConfigsRequest {})
            .await
            .map_err(|s| d.explain(s))?
            .into_inner()
            .configs
            .into_iter()
            .map(FileObject::from_config)
            .collect(),
    })
}

async fn ls(
    d: &Daemon,
    kind: FileKind,
    quiet: bool,
    filter: &[String],
    format: Option<&str>,
) -> Result<()> {
    let format = ListFormat::parse(format)?;
    let filters = Filters::parse(filter, &["id", "name", "label"])?;
    let mut objects = list(d, kind).await?;
    objects.retain(|o| filters.matches(|k, v| o.matches(k, v)));
    objects.sort_by(|a, b| a.name.cmp(&b.name));
    if quiet {
        for o in &objects {
            println!("{}", o.id);
        }
        return Ok(());
    }
    match format {
        ListFormat::Json => {
            print_json_lines(&objects.iter().map(FileObject::ls_json).collect::<Vec<_>>())
        }
        ListFormat::Table => {
            let now = now_ms();
            let rows: Vec<Vec<String>> = objects.iter().map(|o| o.row(now)).collect();
            print_table(&["ID", "NAME", "CREATED", "UPDATED"], &rows);
            Ok(())
        }
    }
}

async fn get(d: &Daemon, kind: FileKind, reference: &str) -> Result<FileObject> {
    let reference = reference.to_string();
    match kind {
        FileKind::Secret => d
            .control()
            .get_secret(GetSecretRequest { reference })
            .await
            .map_err(|s| d.explain(s))?
            .into_inner()
            .secret
            .map(FileObject::from_secret),
        FileKind::Config => d
            .control()
            .get_config(GetConfigRequest { reference })
            .await
            .map_err(|s| d.explain(s))?
            .into_inner()
            .config
            .map(FileObject::from_config),
    }
    .context("the manager answered without the object")
}

async fn inspect(
    d: &Daemon,
    kind: FileKind,
    pretty: bool,
    format: Option<&str>,
    refs: &[String],
) -> Result<()> {
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for r in refs {
        match get(d, kind, r).await {
            Ok(o) => docs.push(o),
            Err(e) => errors.push(format!("{e}")),
        }
    }
    if pretty {
        for o in &docs {
            print!("{}", o.pretty());
        }
    } else if format == Some("json") {
        print_json_lines(
            &docs
                .iter()
                .map(FileObject::inspect_json)
                .collect::<Vec<_>>(),
        )?;
    } else if let Some(other) = format {
        bail!("unsupported format {other:?}: use 'json' or --pretty");
    } else {
        let all: Vec<Value> = docs.iter().map(FileObject::inspect_json).collect();
        println!("{}", serde_json::to_string_pretty(&all)?);
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("\n"));
    }
    Ok(())
}

async fn rm(d: &Daemon, kind: FileKind, refs: &[String]) -> Result<()> {
    let mut errors = Vec::new();
    for r in refs {
        let reference = r.clone();
        let result = match kind {
            FileKind::Secret => d
                .control()
                .remove_secret(RemoveSecretRequest { reference })
                .await
                .map(|_| ()),
            FileKind::Config => d
                .control()
                .remove_config(RemoveConfigRequest { reference })
                .await
                .map(|_| ()),
        };
        match result {
            Ok(()) => println!("{r}"),
            Err(s) => errors.push(format!("{}", d.explain(s))),
        }
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("\n"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> FileObject {
        FileObject::from_config(Config {
            meta: Some(Meta {
                id: "abc123".into(),
                version: 7,
                created_at_ms: 1_000,
                updated_at_ms: 61_000,
            }),
            spec: Some(ConfigSpec {
                annotations: Some(Annotations {
                    name: "app.conf".into(),
                    labels: [("env".to_string(), "prod".to_string())].into(),
                }),
                data: b"port=80".to_vec(),
            }),
        })
    }

    /// Goal: `config inspect` shows Docker's keys with the data in base64;
    /// a secret's document has no `Data` at all.
    #[test]
    fn inspect_documents_use_dockers_keys() {
        let doc = config().inspect_json();
        assert_eq!(doc["ID"], "abc123");
        assert_eq!(doc["Version"]["Index"], 7);
        assert_eq!(doc["Spec"]["Name"], "app.conf");
        assert_eq!(doc["Spec"]["Labels"]["env"], "prod");
        assert_eq!(doc["Spec"]["Data"], "cG9ydD04MA==");
        assert_eq!(doc["CreatedAt"], "1970-01-01T00:00:01.000Z");
        let secret = FileObject::from_secret(Secret {
            meta: None,
            spec: Some(SecretSpec {
                annotations: None,
                data: b"leak".to_vec(),
            }),
        });
        assert!(secret.inspect_json()["Spec"].get("Data").is_none());
        assert!(!secret.pretty().contains("leak"));
        assert!(config().pretty().contains("Data:\nport=80"));
    }

    /// Goal: the ls row is `ID NAME CREATED UPDATED`; filters work as
    /// Docker's (id prefix, name substring, label key or key=value).
    #[test]
    fn ls_rows_and_filters() {
        let c = config();
        assert_eq!(
            c.row(121_000),
            ["abc123", "app.conf", "2 minutes ago", "1 minute ago"]
        );
        assert!(c.matches("id", "abc"));
        assert!(c.matches("name", "app"));
        assert!(c.matches("label", "env"));
        assert!(c.matches("label", "env=prod"));
        assert!(!c.matches("label", "env=dev"));
        assert_eq!(c.ls_json()["Name"], "app.conf");
    }

    /// Goal: labels parse as key=value (a bare key has an empty value);
    /// data over 500 KiB is refused before any call.
    #[test]
    fn labels_and_data_limits() {
        let labels = parse_labels(&["a=1".into(), "b".into()]).unwrap();
        assert_eq!(labels["a"], "1");
        assert_eq!(labels["b"], "");
        assert!(parse_labels(&["=x".into()]).is_err());
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        std::fs::write(&big, vec![0u8; OBJECT_DATA_BYTES_MAX + 1]).unwrap();
        let e = read_data(FileKind::Secret, big.to_str().unwrap()).unwrap_err();
        assert!(e.to_string().contains("larger than 500 KiB"), "{e}");
        let ok = dir.path().join("ok");
        std::fs::write(&ok, vec![1u8; OBJECT_DATA_BYTES_MAX]).unwrap();
        assert_eq!(
            read_data(FileKind::Config, ok.to_str().unwrap())
                .unwrap()
                .len(),
            OBJECT_DATA_BYTES_MAX
        );
    }
}
