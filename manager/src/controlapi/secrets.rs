//! The secret calls of the control API (create, inspect, list, update
//! labels, remove) and the rules secrets and configs share: Docker's names
//! and size limit, and no removal while a service uses one.
//!
//! **Invariants:** a secret's data enters the store only sealed with the
//! secrets key (associated data: the secret's ID), and no answer ever
//! carries it, sealed or not; a secret's data never changes after create
//! (as Docker: only its labels do).

use std::sync::Arc;

use rswarm_proto::object::Kind;
use rswarm_proto::*;
use tonic::Status;
use tracing::info;

use super::new_object_id;
use crate::leader::status_from_store;
use crate::limits::OBJECT_DATA_BYTES_MAX;
use crate::manager::{ManagerContext, action};
use crate::store::StoreState;

/// Longest secret or config name (Docker's).
pub const OBJECT_NAME_LEN_MAX: usize = 64;

/// Which of the two kinds of file objects a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A secret.
    Secret,
    /// A config.
    Config,
}

impl FileKind {
    /// The word for it in messages and commands.
    pub fn noun(self) -> &'static str {
        match self {
            FileKind::Secret => "secret",
            FileKind::Config => "config",
        }
    }
}

/// Checks a secret's or config's name (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most
/// 64 characters, as Docker) and data size (at most 500 KiB, as Docker).
pub fn check_file_object(kind: FileKind, name: &str, data_len: usize) -> Result<(), Status> {
    let noun = kind.noun();
    let starts_well = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if name.len() > OBJECT_NAME_LEN_MAX || !starts_well || !valid_chars {
        return Err(Status::invalid_argument(format!(
            "invalid {noun} name {name:?}: use 1 to {OBJECT_NAME_LEN_MAX} letters, digits, \
             '_', '.' or '-', starting with a letter or digit"
        )));
    }
    if data_len > OBJECT_DATA_BYTES_MAX {
        return Err(Status::invalid_argument(format!(
            "{noun} data is {data_len} bytes; the limit is {} KiB (Docker's)",
            OBJECT_DATA_BYTES_MAX / 1024
        )));
    }
    Ok(())
}

/// Names of the services whose current spec references the secret or
/// config `id`.
pub fn services_using(s: &StoreState, kind: FileKind, id: &str) -> Vec<String> {
    s.services()
        .filter(|svc| {
            let container = svc
                .spec
                .as_ref()
                .and_then(|spec| spec.task.as_ref())
                .and_then(|t| t.container.as_ref());
            container.is_some_and(|c| match kind {
                FileKind::Secret => c.secrets.iter().any(|r| r.secret_id == id),
                FileKind::Config => c.configs.iter().any(|r| r.config_id == id),
            })
        })
        .map(|svc| {
            svc.spec
                .as_ref()
                .and_then(|spec| spec.annotations.as_ref())
                .map(|a| a.name.clone())
                .unwrap_or_default()
        })
        .collect()
}

/// Refuses to remove (or change the data of) an object services use.
pub fn refuse_in_use(s: &StoreState, kind: FileKind, id: &str, name: &str) -> Result<(), Status> {
    let users = services_using(s, kind, id);
    if users.is_empty() {
        return Ok(());
    }
    Err(Status::failed_precondition(format!(
        "{} {name} is in use by the following service(s): {}; remove it from them first \
         (rswarm service update --{}-rm {name} SERVICE)",
        kind.noun(),
        users.join(", "),
        kind.noun()
    )))
}

/// The secret as answers show it: everything but its data.
pub fn without_data(mut secret: Secret) -> Secret {
    if let Some(spec) = secret.spec.as_mut() {
        spec.data = Vec::new();
    }
    secret
}

fn secret_name(spec: &SecretSpec) -> &str {
    spec.annotations.as_ref().map_or("", |a| a.name.as_str())
}

pub(super) async fn create_secret(
    ctx: Arc<ManagerContext>,
    req: CreateSecretRequest,
) -> Result<CreateSecretResponse, Status> {
    let mut spec = req
        .spec
        .ok_or_else(|| Status::invalid_argument("create needs a secret spec"))?;
    check_file_object(FileKind::Secret, secret_name(&spec), spec.data.len())?;
    if spec.data.is_empty() {
        return Err(Status::invalid_argument(
            "secret data is empty: give a file or stdin with at least one byte",
        ));
    }
    let id = new_object_id();
    spec.data = ctx
        .secrets_key
        .require()?
        .seal(&id, &spec.data)
        .map_err(|e| Status::internal(e.to_string()))?;
    let name = secret_name(&spec).to_owned();
    let secret = Secret {
        meta: Some(Meta {
            id: id.clone(),
            ..Default::default()
        }),
        spec: Some(spec),
    };
    ctx.propose(vec![action(ActionKind::Create, Kind::Secret(secret))])
        .await?;
    info!(secret = %id, %name, "secret created");
    let secret = ctx.store.read(|s| s.secret(&id).cloned()).map(without_data);
    Ok(CreateSecretResponse { secret })
}

pub(super) async fn get_secret(
    ctx: Arc<ManagerContext>,
    req: GetSecretRequest,
) -> Result<GetSecretResponse, Status> {
    let secret = ctx
        .read(|s| s.find_secret(&req.reference).cloned())
        .await?
        .map_err(status_from_store)?;
    Ok(GetSecretResponse {
        secret: Some(without_data(secret)),
    })
}

pub(super) async fn list_secrets(
    ctx: Arc<ManagerContext>,
    _req: ListSecretsRequest,
) -> Result<ListSecretsResponse, Status> {
    let secrets = ctx
        .read(|s| s.secrets().cloned().map(without_data).collect())
        .await?;
    Ok(ListSecretsResponse { secrets })
}

/// The stored secret with `spec`'s labels: only labels may change.
fn relabelled(current: &Secret, spec: SecretSpec, version: u64) -> Result<Secret, Status> {
    let old = current.spec.clone().unwrap_or_default();
    if !spec.data.is_empty() {
        return Err(Status::invalid_argument(
            "only a secret's labels can change: create a new secret for new data",
        ));
    }
    if secret_name(&spec) != secret_name(&old) {
        return Err(Status::invalid_argument(
            "only a secret's labels can change: it cannot be renamed",
        ));
    }
    let mut secret = current.clone();
    let labels = spec.annotations.map(|a| a.labels).unwrap_or_default();
    if let Some(a) = secret
        .spec
        .as_mut()
        .map(|s| s.annotations.get_or_insert_with(Default::default))
    {
        a.labels = labels;
    }
    if let Some(meta) = secret.meta.as_mut() {
        meta.version = version;
    }
    Ok(secret)
}

pub(super) async fn update_secret(
    ctx: Arc<ManagerContext>,
    req: UpdateSecretRequest,
) -> Result<UpdateSecretResponse, Status> {
    let spec = req
        .spec
        .ok_or_else(|| Status::invalid_argument("update needs a secret spec"))?;
    let current = ctx
        .read(|s| s.secret(&req.secret_id).cloned())
        .await?
        .ok_or_else(|| Status::not_found(format!("no such secret: {}", req.secret_id)))?;
    let secret = relabelled(&current, spec, req.version)?;
    ctx.propose(vec![action(ActionKind::Update, Kind::Secret(secret))])
        .await?;
    let secret = ctx
        .store
        .read(|s| s.secret(&req.secret_id).cloned())
        .map(without_data);
    Ok(UpdateSecretResponse { secret })
}

pub(super) async fn remove_secret(
    ctx: Arc<ManagerContext>,
    req: RemoveSecretRequest,
) -> Result<RemoveSecretResponse, Status> {
    let secret = ctx
        .read(|s| {
            let secret = s.find_secret(&req.reference).map_err(status_from_store)?;
            let id = secret.meta.as_ref().map_or("", |m| m.id.as_str());
            refuse_in_use(s, FileKind::Secret, id, &req.reference)?;
            Ok::<_, Status>(secret.clone())
        })
        .await??;
    let id = secret
        .meta
        .as_ref()
        .map(|m| m.id.clone())
        .unwrap_or_default();
    ctx.propose(vec![action(ActionKind::Delete, Kind::Secret(secret))])
        .await?;
    info!(secret = %id, "secret removed");
    Ok(RemoveSecretResponse {})
}

#[cfg(test)]
#[path = "secrets_tests.rs"]
mod tests;
