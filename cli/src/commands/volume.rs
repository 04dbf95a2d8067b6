//! `rswarm volume ls|inspect|rm`: the named volumes of the node the CLI
//! talks to (local volumes, as in Docker: each node has its own), through
//! the daemon's `LocalVolumes` API.
//!
//! Output follows Docker's: `ls` prints `DRIVER` and `VOLUME NAME`, `-q`
//! names only, `--format json` one object per line; `inspect` a JSON array;
//! `rm` the name of each removed volume, and an error for each one it could
//! not remove (missing, or in use without `-f`), exiting 1.

use anyhow::{Result, bail};
use rswarm_proto::{ListVolumesRequest, LocalVolume, RemoveVolumeRequest};
use serde_json::{Value, json};

use crate::client::Daemon;
use crate::output::{Filters, ListFormat, print_json_lines, print_table};

/// The filters `volume ls` accepts.
const LS_FILTER_KEYS: &[&str] = &["name", "driver", "label", "dangling"];

#[derive(Debug, clap::Subcommand)]
pub enum VolumeCommand {
    /// List the node's volumes.
    #[command(alias = "list")]
    Ls {
        /// Only names.
        #[arg(short, long)]
        quiet: bool,
        /// Filter: name (part of it), driver, label (key or key=value),
        /// dangling (true: used by no task).
        #[arg(short, long = "filter", value_name = "KEY=VALUE")]
        filter: Vec<String>,
        /// table, or json (one object per line).
        #[arg(long)]
        format: Option<String>,
    },
    /// Show volumes in detail (a JSON array).
    Inspect {
        /// json: one object per line (default: a JSON array).
        #[arg(long)]
        format: Option<String>,
        #[arg(required = true)]
        volumes: Vec<String>,
    },
    /// Remove volumes and their data.
    #[command(alias = "remove")]
    Rm {
        /// Remove even volumes that tasks use.
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        volumes: Vec<String>,
    },
}

pub async fn run(d: &Daemon, cmd: VolumeCommand) -> Result<()> {
    match cmd {
        VolumeCommand::Ls {
            quiet,
            filter,
            format,
        } => ls(d, quiet, &filter, format.as_deref()).await,
        VolumeCommand::Inspect { format, volumes } => inspect(d, format.as_deref(), &volumes).await,
        VolumeCommand::Rm { force, volumes } => rm(d, force, &volumes).await,
    }
}

async fn list(d: &Daemon) -> Result<Vec<LocalVolume>> {
    let response = d
        .volumes()
        .list_volumes(ListVolumesRequest {})
        .await
        .map_err(|s| d.explain(s))?;
    Ok(response.into_inner().volumes)
}

async fn ls(d: &Daemon, quiet: bool, filter: &[String], format: Option<&str>) -> Result<()> {
    let format = ListFormat::parse(format)?;
    let filters = Filters::parse(filter, LS_FILTER_KEYS)?;
    let volumes: Vec<LocalVolume> = list(d)
        .await?
        .into_iter()
        .filter(|v| filters.matches(|key, value| volume_matches(v, key, value)))
        .collect();
    if quiet {
        for v in &volumes {
            println!("{}", v.name);
        }
        return Ok(());
    }
    match format {
        ListFormat::Json => print_json_lines(&volumes.iter().map(ls_json).collect::<Vec<_>>()),
        ListFormat::Table => {
            print_table(&["DRIVER", "VOLUME NAME"], &table_rows(&volumes));
            Ok(())
        }
    }
}

fn table_rows(volumes: &[LocalVolume]) -> Vec<Vec<String>> {
    volumes
        .iter()
        .map(|v| vec![v.driver.clone(), v.name.clone()])
        .collect()
}

/// Docker's filters: `name` matches a part of the name, `label` a key or
/// key=value, `dangling=true` volumes no task uses.
fn volume_matches(v: &LocalVolume, key: &str, value: &str) -> bool {
    match key {
        "name" => v.name.contains(value),
        "driver" => v.driver == value,
        "label" => match value.split_once('=') {
            Some((k, expected)) => v.labels.get(k).is_some_and(|x| x == expected),
            None => v.labels.contains_key(value),
        },
        "dangling" => match value {
            "true" | "1" => v.used_by.is_empty(),
            "false" | "0" => !v.used_by.is_empty(),
            _ => false,
        },
        _ => false,
    }
}

/// `volume ls --format json`: Docker's keys (labels as `k=v,k=v`).
fn ls_json(v: &LocalVolume) -> Value {
    let labels: Vec<String> = v.labels.iter().map(|(k, x)| format!("{k}={x}")).collect();
    json!({
        "Driver": v.driver,
        "Name": v.name,
        "Mountpoint": v.mountpoint,
        "Labels": labels.join(","),
        "CreatedAt": created_at(v),
        "Scope": "local",
    })
}

/// `volume inspect`: Docker's document (labels as an object, `null` when
/// none), plus the tasks that use it.
fn inspect_json(v: &LocalVolume) -> Value {
    json!({
        "CreatedAt": created_at(v),
        "Driver": v.driver,
        "Labels": if v.labels.is_empty() { Value::Null } else { json!(v.labels) },
        "Mountpoint": v.mountpoint,
        "Name": v.name,
        "Options": Value::Null,
        "Scope": "local",
        "UsedBy": v.used_by,
    })
}

/// RFC 3339 time the volume was made; empty when unknown.
fn created_at(v: &LocalVolume) -> String {
    if v.created_ns <= 0 {
        return String::new();
    }
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_nanos(v.created_ns.unsigned_abs()),
    )
    .to_string()
}

async fn inspect(d: &Daemon, format: Option<&str>, names: &[String]) -> Result<()> {
    let json_lines = match format {
        None => false,
        Some("json") => true,
        Some(other) => bail!("unsupported format {other:?}: use 'json'"),
    };
    let volumes = list(d).await?;
    let (found, missing) = pick(&volumes, names);
    let docs: Vec<Value> = found.into_iter().map(inspect_json).collect();
    if json_lines {
        print_json_lines(&docs)?;
    } else {
        println!("{}", serde_json::to_string_pretty(&docs)?);
    }
    if !missing.is_empty() {
        let errors: Vec<String> = missing
            .iter()
            .map(|name| format!("no such volume: {name}"))
            .collect();
        bail!("{}", errors.join("\n"));
    }
    Ok(())
}

/// The volumes named, in the order asked, and the names not found.
fn pick<'a>(
    volumes: &'a [LocalVolume],
    names: &'a [String],
) -> (Vec<&'a LocalVolume>, Vec<&'a str>) {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for name in names {
        match volumes.iter().find(|v| &v.name == name) {
            Some(v) => found.push(v),
            None => missing.push(name.as_str()),
        }
    }
    (found, missing)
}

async fn rm(d: &Daemon, force: bool, names: &[String]) -> Result<()> {
    let mut errors = Vec::new();
    for name in names {
        let request = RemoveVolumeRequest {
            name: name.clone(),
            force,
        };
        match d.volumes().remove_volume(request).await {
            Ok(_) => println!("{name}"),
            Err(s) => errors.push(format!("{}", d.explain(s))),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        bail!("{}", errors.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::commands::{Cli, Command};
    use crate::output::format_table;

    fn volume(name: &str, labels: &[(&str, &str)], used_by: &[&str]) -> LocalVolume {
        LocalVolume {
            name: name.into(),
            driver: "local".into(),
            mountpoint: format!("/var/lib/rswarm/worker/volumes/{name}/_data"),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            created_ns: 1_700_000_000_000_000_000,
            used_by: used_by.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn parse(args: &[&str]) -> Result<VolumeCommand, clap::Error> {
        let cli = Cli::try_parse_from(["rswarm", "volume"].iter().chain(args))?;
        match cli.command {
            Command::Volume(cmd) => Ok(cmd),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn the_commands_parse_as_in_docker() {
        let VolumeCommand::Rm { force, volumes } = parse(&["rm", "-f", "a", "b"]).unwrap() else {
            panic!("not rm");
        };
        assert!(force);
        assert_eq!(volumes, ["a", "b"]);
        let VolumeCommand::Ls {
            quiet,
            filter,
            format,
        } = parse(&["ls", "-q", "-f", "name=db", "--format", "json"]).unwrap()
        else {
            panic!("not ls");
        };
        assert!(quiet);
        assert_eq!(filter, ["name=db"]);
        assert_eq!(format.as_deref(), Some("json"));
        assert!(parse(&["rm"]).is_err(), "rm needs a name");
        assert!(parse(&["inspect"]).is_err(), "inspect needs a name");
    }

    #[test]
    fn ls_prints_docker_columns() {
        let volumes = [volume("data", &[], &["t1"]), volume("logs", &[], &[])];
        expect_test::expect![[r#"
            DRIVER   VOLUME NAME
            local    data
            local    logs
        "#]]
        .assert_eq(&format_table(
            &["DRIVER", "VOLUME NAME"],
            &table_rows(&volumes),
        ));
    }

    #[test]
    fn json_has_docker_keys() {
        let v = volume("data", &[("a", "1"), ("b", "2")], &["t1"]);
        let line = ls_json(&v);
        assert_eq!(line["Driver"], "local");
        assert_eq!(line["Name"], "data");
        assert_eq!(
            line["Mountpoint"],
            "/var/lib/rswarm/worker/volumes/data/_data"
        );
        assert_eq!(line["Labels"], "a=1,b=2");
        assert_eq!(line["CreatedAt"], "2023-11-14T22:13:20Z");
        let doc = inspect_json(&v);
        assert_eq!(doc["Labels"], json!({"a": "1", "b": "2"}));
        assert_eq!(doc["UsedBy"], json!(["t1"]));
        assert_eq!(inspect_json(&volume("x", &[], &[]))["Labels"], Value::Null);
    }

    #[test]
    fn filters_match_as_in_docker() {
        let used = volume("app-data", &[("env", "prod")], &["t1"]);
        let free = volume("cache", &[], &[]);
        let matches = |v: &LocalVolume, raw: &[&str]| {
            let raw: Vec<String> = raw.iter().map(|s| s.to_string()).collect();
            let filters = Filters::parse(&raw, LS_FILTER_KEYS).unwrap();
            filters.matches(|key, value| volume_matches(v, key, value))
        };
        assert!(matches(&used, &["name=data"]), "a part of the name matches");
        assert!(!matches(&free, &["name=data"]));
        assert!(matches(&used, &["label=env"]) && matches(&used, &["label=env=prod"]));
        assert!(!matches(&used, &["label=env=dev"]));
        assert!(matches(&free, &["dangling=true"]) && !matches(&used, &["dangling=true"]));
        assert!(matches(&used, &["dangling=false"]));
        assert!(matches(&used, &["driver=local"]));
        assert!(Filters::parse(&["size=1".to_string()], LS_FILTER_KEYS).is_err());
    }

    #[test]
    fn inspect_reports_the_missing_names() {
        let volumes = [volume("a", &[], &[]), volume("b", &[], &[])];
        let names = ["b".to_string(), "zz".to_string(), "a".to_string()];
        let (found, missing) = pick(&volumes, &names);
        let found: Vec<&str> = found.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(found, ["b", "a"]);
        assert_eq!(missing, ["zz"]);
    }
}
