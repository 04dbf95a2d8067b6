//! The secret, config and registry-credential flags of `service create`
//! (`--secret`, `--config`, `--with-registry-auth`) and `service update`
//! (`--secret-add/--secret-rm`, `--config-add/--config-rm`,
//! `--with-registry-auth`), and what each does to the spec.
//!
//! The CLI sends names; the manager resolves them to IDs, fills in the file
//! defaults and refuses unknown ones.

use anyhow::{Result, bail};
use rswarm_proto::*;

use super::registry_auth;

/// A `--secret`/`--config` value: `NAME`, or
/// `source=NAME[,target=T][,uid=U][,gid=G][,mode=0400]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    /// The secret's or config's name.
    pub source: String,
    /// Where it appears in the task.
    pub file: FileTarget,
}

/// Parses a `--secret`/`--config` value.
pub fn file_ref(raw: &str) -> Result<FileRef, String> {
    if !raw.contains('=') {
        if raw.is_empty() || raw.contains(',') {
            return Err(format!(
                "invalid reference {raw:?}: use NAME or source=NAME,target=..."
            ));
        }
        return Ok(FileRef {
            source: raw.to_string(),
            file: FileTarget::default(),
        });
    }
    let mut source = String::new();
    let mut file = FileTarget::default();
    for field in raw.split(',') {
        let Some((key, value)) = field.split_once('=') else {
            return Err(format!("invalid field {field:?} in {raw:?}: use key=value"));
        };
        match key {
            "source" | "src" => source = value.to_string(),
            "target" | "dst" | "destination" => file.name = value.to_string(),
            "uid" => file.uid = value.to_string(),
            "gid" => file.gid = value.to_string(),
            "mode" => {
                file.mode = u32::from_str_radix(value, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .ok_or_else(|| format!("invalid mode {value:?}: use octal, e.g. 0400"))?;
            }
            other => {
                return Err(format!(
                    "unknown field {other:?} in {raw:?}: use source, target, uid, gid or mode"
                ));
            }
        }
    }
    if source.is_empty() {
        return Err(format!("{raw:?} names no source: add source=NAME"));
    }
    Ok(FileRef { source, file })
}

fn secret_ref(r: &FileRef) -> SecretReference {
    SecretReference {
        secret_id: String::new(),
        secret_name: r.source.clone(),
        file: Some(r.file.clone()),
    }
}

fn config_ref(r: &FileRef) -> ConfigReference {
    ConfigReference {
        config_id: String::new(),
        config_name: r.source.clone(),
        file: Some(r.file.clone()),
    }
}

fn container(spec: &mut ServiceSpec) -> &mut ContainerSpec {
    spec.task
        .get_or_insert_with(Default::default)
        .container
        .get_or_insert_with(Default::default)
}

/// `service create`'s flags of this kind.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CreateFileFlags {
    /// Give the tasks a secret as a file under /run/secrets/:
    /// NAME or source=NAME,target=T,uid=U,gid=G,mode=0400.
    #[arg(long = "secret", value_name = "SECRET", value_parser = file_ref)]
    pub secrets: Vec<FileRef>,
    /// Give the tasks a config as a file: NAME or
    /// source=NAME,target=/PATH,uid=U,gid=G,mode=0444.
    #[arg(long = "config", value_name = "CONFIG", value_parser = file_ref)]
    pub configs: Vec<FileRef>,
    #[command(flatten)]
    pub auth: AuthFlag,
}

impl CreateFileFlags {
    /// Adds the references to `spec`.
    pub fn apply(&self, spec: &mut ServiceSpec) {
        let c = container(spec);
        c.secrets.extend(self.secrets.iter().map(secret_ref));
        c.configs.extend(self.configs.iter().map(config_ref));
    }
}

/// `--with-registry-auth`, on both commands.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AuthFlag {
    /// Send the registry credentials of this machine's docker login
    /// ($DOCKER_CONFIG/config.json or ~/.docker/config.json) for the
    /// image's registry; the managers keep them encrypted.
    #[arg(long)]
    pub with_registry_auth: bool,
}

impl AuthFlag {
    /// The credentials to send for `spec`'s image, when asked for.
    pub fn registry_auth(&self, spec: &ServiceSpec) -> Result<Option<RegistryAuth>> {
        if !self.with_registry_auth {
            return Ok(None);
        }
        let image = spec
            .task
            .as_ref()
            .and_then(|t| t.container.as_ref())
            .map_or("", |c| c.image.as_str());
        if image.is_empty() {
            bail!("--with-registry-auth needs an image: the process driver pulls nothing");
        }
        registry_auth::from_docker_config(image).map(Some)
    }
}

/// `service update`'s flags of this kind.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct UpdateFileFlags {
    /// Add a secret (as --secret of create).
    #[arg(long = "secret-add", value_name = "SECRET", value_parser = file_ref)]
    pub secret_add: Vec<FileRef>,
    /// Remove a secret, by name.
    #[arg(long = "secret-rm", value_name = "NAME")]
    pub secret_rm: Vec<String>,
    /// Add a config (as --config of create).
    #[arg(long = "config-add", value_name = "CONFIG", value_parser = file_ref)]
    pub config_add: Vec<FileRef>,
    /// Remove a config, by name.
    #[arg(long = "config-rm", value_name = "NAME")]
    pub config_rm: Vec<String>,
    #[command(flatten)]
    pub auth: AuthFlag,
}

impl UpdateFileFlags {
    /// Removes, then adds, references in `spec` (as Docker).
    pub fn apply(&self, spec: &mut ServiceSpec) {
        let c = container(spec);
        c.secrets.retain(|r| {
            !self
                .secret_rm
                .iter()
                .any(|n| *n == r.secret_name || *n == r.secret_id)
        });
        c.configs.retain(|r| {
            !self
                .config_rm
                .iter()
                .any(|n| *n == r.config_name || *n == r.config_id)
        });
        c.secrets.extend(self.secret_add.iter().map(secret_ref));
        c.configs.extend(self.config_add.iter().map(config_ref));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: the short and long forms parse as Docker's; bad fields say
    /// which and how to fix them.
    #[test]
    fn references_parse_like_dockers() {
        let short = file_ref("db-pass").unwrap();
        assert_eq!(short.source, "db-pass");
        assert_eq!(short.file, FileTarget::default());
        let long = file_ref("source=db-pass,target=db.txt,uid=100,gid=101,mode=0400").unwrap();
        assert_eq!(long.source, "db-pass");
        assert_eq!(
            long.file,
            FileTarget {
                name: "db.txt".into(),
                uid: "100".into(),
                gid: "101".into(),
                mode: 0o400,
            }
        );
        assert!(
            file_ref("target=x")
                .unwrap_err()
                .contains("add source=NAME")
        );
        assert!(file_ref("source=x,mode=999").unwrap_err().contains("octal"));
        assert!(
            file_ref("source=x,color=red")
                .unwrap_err()
                .contains("unknown field")
        );
        assert!(file_ref("").is_err());
    }

    /// Goal: update removes by name and adds, keeping the rest.
    #[test]
    fn update_removes_then_adds() {
        let mut spec = ServiceSpec::default();
        CreateFileFlags {
            secrets: vec![file_ref("a").unwrap(), file_ref("b").unwrap()],
            configs: vec![file_ref("c").unwrap()],
            ..Default::default()
        }
        .apply(&mut spec);
        UpdateFileFlags {
            secret_rm: vec!["a".into()],
            secret_add: vec![file_ref("source=d,target=x").unwrap()],
            config_rm: vec!["c".into()],
            ..Default::default()
        }
        .apply(&mut spec);
        let c = spec.task.unwrap().container.unwrap();
        let names: Vec<&str> = c.secrets.iter().map(|r| r.secret_name.as_str()).collect();
        assert_eq!(names, ["b", "d"]);
        assert!(c.configs.is_empty());
    }
}
