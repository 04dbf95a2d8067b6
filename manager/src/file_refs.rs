//! A service's secret and config references and its registry credentials:
//! the spec checks (pure, called from `spec`), and binding them at create
//! and update (names resolved to IDs, credentials sealed), called once from
//! each service handler.
//!
//! **Invariants:** a stored reference names an existing object by ID and
//! has its file target filled in (name, uid, gid, mode), no two references
//! of a task share a target file; `sealed_registry_auth` is only ever
//! written here, sealed for the service's ID — what a client sends in that
//! field is discarded.

use prost::Message;
use rswarm_proto::*;
use tonic::Status;

use crate::manager::ManagerContext;
use crate::spec::{LIST_LEN_MAX, SpecError};
use crate::store::StoreState;

/// File mode of a secret or config file when the reference gives none
/// (Docker's).
const FILE_MODE_DEFAULT: u32 = 0o444;

/// Checks the references of a container spec that `driver` runs.
pub fn check_refs(c: &ContainerSpec, driver: &str) -> Result<(), SpecError> {
    if driver == "process" && !(c.secrets.is_empty() && c.configs.is_empty()) {
        return Err(SpecError::new(
            "the process driver does not mount secrets or configs; use the oci driver",
        ));
    }
    if c.secrets.len() + c.configs.len() > LIST_LEN_MAX {
        return Err(SpecError::new(format!(
            "{} secrets and configs are above the limit of {LIST_LEN_MAX}",
            c.secrets.len() + c.configs.len()
        )));
    }
    let targets = c
        .secrets
        .iter()
        .map(|r| (r.file.as_ref(), "secret"))
        .chain(c.configs.iter().map(|r| (r.file.as_ref(), "config")));
    for (file, noun) in targets {
        let Some(file) = file else { continue };
        if file.name.split('/').any(|part| part == "..") {
            return Err(SpecError::new(format!(
                "invalid {noun} target {:?}: it cannot contain '..'",
                file.name
            )));
        }
        if file.mode > 0o7777 {
            return Err(SpecError::new(format!(
                "invalid {noun} file mode {:o}: use an octal mode such as 0400",
                file.mode
            )));
        }
    }
    Ok(())
}

/// Resolves every reference of `spec` against the store, fills in its file
/// target, and stores `sealed_auth` (from [`seal_auth`]) in its task spec.
pub fn bind_refs(
    s: &StoreState,
    spec: &mut ServiceSpec,
    sealed_auth: Vec<u8>,
) -> Result<(), Status> {
    let task = spec.task.get_or_insert_with(Default::default);
    task.sealed_registry_auth = sealed_auth;
    let Some(c) = task.container.as_mut() else {
        return Ok(());
    };
    for r in &mut c.secrets {
        let wanted = if r.secret_id.is_empty() {
            &r.secret_name
        } else {
            &r.secret_id
        };
        let found = s
            .find_secret(wanted)
            .map_err(|_| not_found("secret", wanted))?;
        r.secret_id = found
            .meta
            .as_ref()
            .map(|m| m.id.clone())
            .unwrap_or_default();
        r.secret_name = annotated_name(found.spec.as_ref().and_then(|s| s.annotations.as_ref()));
        fill_target(r.file.get_or_insert_with(Default::default), &r.secret_name);
    }
    for r in &mut c.configs {
        let wanted = if r.config_id.is_empty() {
            &r.config_name
        } else {
            &r.config_id
        };
        let found = s
            .find_config(wanted)
            .map_err(|_| not_found("config", wanted))?;
        r.config_id = found
            .meta
            .as_ref()
            .map(|m| m.id.clone())
            .unwrap_or_default();
        r.config_name = annotated_name(found.spec.as_ref().and_then(|s| s.annotations.as_ref()));
        fill_target(r.file.get_or_insert_with(Default::default), &r.config_name);
    }
    refuse_shared_targets(c)
}

fn annotated_name(a: Option<&Annotations>) -> String {
    a.map(|a| a.name.clone()).unwrap_or_default()
}

fn not_found(noun: &str, name: &str) -> Status {
    Status::invalid_argument(format!(
        "{noun} not found: {name}; create it first with 'rswarm {noun} create {name} FILE'"
    ))
}

fn fill_target(file: &mut FileTarget, name: &str) {
    if file.name.is_empty() {
        file.name = name.to_owned();
    }
    if file.uid.is_empty() {
        file.uid = "0".into();
    }
    if file.gid.is_empty() {
        file.gid = "0".into();
    }
    if file.mode == 0 {
        file.mode = FILE_MODE_DEFAULT;
    }
}

fn refuse_shared_targets(c: &ContainerSpec) -> Result<(), Status> {
    let mut seen = std::collections::BTreeSet::new();
    let secrets = c.secrets.iter().map(|r| ("secret", r.file.as_ref()));
    let configs = c.configs.iter().map(|r| ("config", r.file.as_ref()));
    for (noun, file) in secrets.chain(configs) {
        let target = file.map_or("", |f| f.name.as_str());
        if !seen.insert((noun, target)) {
            return Err(Status::invalid_argument(format!(
                "two {noun}s use the target {target:?}: give each its own target=..."
            )));
        }
    }
    Ok(())
}

/// The sealed registry credentials a service stores: `auth` sealed for
/// `service_id` when given, else `kept` (the service's current ones).
pub fn seal_auth(
    ctx: &ManagerContext,
    service_id: &str,
    auth: Option<&RegistryAuth>,
    kept: &[u8],
) -> Result<Vec<u8>, Status> {
    let Some(auth) = auth else {
        return Ok(kept.to_vec());
    };
    if auth.server.is_empty() {
        return Err(Status::invalid_argument(
            "registry credentials need the registry's server name",
        ));
    }
    ctx.secrets_key
        .require()?
        .seal(service_id, &auth.encode_to_vec())
        .map_err(|e| Status::internal(e.to_string()))
}

/// Binds a new service's spec (see [`bind_refs`]).
pub async fn bind_create(
    ctx: &ManagerContext,
    spec: &mut ServiceSpec,
    service_id: &str,
    auth: Option<&RegistryAuth>,
) -> Result<(), Status> {
    let sealed = seal_auth(ctx, service_id, auth, &[])?;
    ctx.read(|s| bind_refs(s, spec, sealed)).await?
}

/// Binds the spec of an update request to `current` (see [`bind_refs`]); a
/// rollback keeps the previous spec as it was stored.
pub async fn bind_update(
    ctx: &ManagerContext,
    mut req: UpdateServiceRequest,
    current: &Service,
) -> Result<UpdateServiceRequest, Status> {
    let Some(spec) = req.spec.as_mut().filter(|_| !req.rollback) else {
        return Ok(req);
    };
    let id = current.meta.as_ref().map_or("", |m| m.id.as_str());
    let kept = current
        .spec
        .as_ref()
        .and_then(|s| s.task.as_ref())
        .map_or(&[][..], |t| t.sealed_registry_auth.as_slice());
    let sealed = seal_auth(ctx, id, req.registry_auth.as_ref(), kept)?;
    ctx.read(|s| bind_refs(s, spec, sealed)).await??;
    Ok(req)
}

/// Opens a task's sealed registry credentials (sealed for its service).
pub fn open_auth(
    key: &crate::secrets_key::SecretsKey,
    task: &Task,
) -> Option<Result<RegistryAuth, String>> {
    let sealed = task.spec.as_ref()?.sealed_registry_auth.as_slice();
    if sealed.is_empty() {
        return None;
    }
    Some(
        key.open(&task.service_id, sealed)
            .map_err(|e| e.to_string())
            .and_then(|plain| RegistryAuth::decode(plain.as_slice()).map_err(|e| e.to_string())),
    )
}

#[cfg(test)]
#[path = "file_refs_tests.rs"]
mod tests;
