//! What an assignments message carries besides tasks: the secrets (opened)
//! and configs the node's tasks reference, their removal once no task of
//! the node needs them, and the opened registry credentials of the tasks
//! in the message.
//!
//! **Invariants:** a node is sent only the secrets and configs its own
//! assigned, not yet finished tasks reference (or a task of the same
//! message does), in the message that brings the task or an earlier one;
//! opened data only ever leaves in these messages (inside mutual TLS) and
//! is never logged — only IDs and counts are.

use std::collections::BTreeSet;

use rswarm_proto::{AssignmentsMessage, AssignmentsType, Task, TaskState};
use tracing::warn;

use super::assignments::is_assigned;
use crate::file_refs::open_auth;
use crate::secrets_key::SecretsKey;
use crate::store::StoreState;

/// The secrets and configs one node's stream has sent, by ID.
#[derive(Debug, Default)]
pub struct NodeInputs {
    secrets: BTreeSet<String>,
    configs: BTreeSet<String>,
}

/// Whether a task may still start or runs, so it needs its files.
fn needs_files(task: &Task) -> bool {
    let state = task.status.as_ref().map_or(0, |s| s.state);
    is_assigned(task)
        && task.desired_state <= TaskState::Running as i32
        && state <= TaskState::Running as i32
}

/// The secret and config IDs `tasks` reference.
fn referenced<'a>(tasks: impl Iterator<Item = &'a Task>) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut secrets = BTreeSet::new();
    let mut configs = BTreeSet::new();
    for task in tasks.filter(|t| needs_files(t)) {
        let Some(c) = task.spec.as_ref().and_then(|s| s.container.as_ref()) else {
            continue;
        };
        secrets.extend(c.secrets.iter().map(|r| r.secret_id.clone()));
        configs.extend(c.configs.iter().map(|r| r.config_id.clone()));
    }
    (secrets, configs)
}

impl NodeInputs {
    /// Adds to `message` (for `node_id`, as `s` now stands) what the node
    /// needs besides its tasks, and remembers what it was sent. A secret
    /// that cannot be opened now (no key yet) is left for a later message.
    pub fn attach(
        &mut self,
        s: &StoreState,
        key: Option<&SecretsKey>,
        node_id: &str,
        message: &mut AssignmentsMessage,
    ) {
        if self.may_need_files(s) {
            self.attach_files(s, key, node_id, message);
        }
        if let Some(key) = key {
            attach_auths(key, message);
        }
    }

    /// Whether there can be anything to send or take back: not when the
    /// node holds nothing and the cluster has no secret and no config. Then
    /// the walk over the node's tasks is skipped, which a large service's
    /// assignments would otherwise pay on every message to every node.
    fn may_need_files(&self, s: &StoreState) -> bool {
        !self.secrets.is_empty()
            || !self.configs.is_empty()
            || s.secrets().next().is_some()
            || s.configs().next().is_some()
    }

    fn attach_files(
        &mut self,
        s: &StoreState,
        key: Option<&SecretsKey>,
        node_id: &str,
        message: &mut AssignmentsMessage,
    ) {
        let on_node = s.tasks_on_node(node_id);
        let (secrets, configs) = referenced(on_node.chain(message.tasks.iter()));
        if message.r#type == AssignmentsType::Complete as i32 {
            self.secrets.clear();
            self.configs.clear();
        } else {
            message.removed_secret_ids = self.secrets.difference(&secrets).cloned().collect();
            message.removed_config_ids = self.configs.difference(&configs).cloned().collect();
            self.secrets.retain(|id| secrets.contains(id));
            self.configs.retain(|id| configs.contains(id));
        }
        for id in secrets.difference(&self.secrets.clone()) {
            if let Some(secret) = opened_secret(s, key, id) {
                message.secrets.push(secret);
                self.secrets.insert(id.clone());
            }
        }
        for id in configs.difference(&self.configs.clone()) {
            if let Some(config) = s.config(id) {
                message.configs.push(config.clone());
                self.configs.insert(id.clone());
            }
        }
    }
}

/// The stored secret `id` with its data opened, if it exists and opens.
fn opened_secret(
    s: &StoreState,
    key: Option<&SecretsKey>,
    id: &str,
) -> Option<rswarm_proto::Secret> {
    let mut secret = s.secret(id)?.clone();
    let key = key?;
    let spec = secret.spec.as_mut()?;
    match key.open(id, &spec.data) {
        Ok(plain) => {
            spec.data = plain;
            Some(secret)
        }
        Err(e) => {
            warn!(secret = %id, "cannot open a secret for a node: {e}");
            None
        }
    }
}

/// Opens the registry credentials of the message's tasks, by task ID.
fn attach_auths(key: &SecretsKey, message: &mut AssignmentsMessage) {
    for task in &message.tasks {
        let id = task.meta.as_ref().map_or("", |m| m.id.as_str());
        match open_auth(key, task) {
            None => {}
            Some(Ok(auth)) => {
                message.registry_auths.insert(id.to_owned(), auth);
            }
            Some(Err(e)) => {
                warn!(task = %id, service = %task.service_id, "cannot open registry credentials: {e}");
            }
        }
    }
}

#[cfg(test)]
#[path = "inputs_tests.rs"]
mod tests;
