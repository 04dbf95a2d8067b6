//! The secrets, configs and registry credentials the managers delivered to
//! this node, kept in memory only, and each task's [`TaskInputs`] built
//! from them.
//!
//! **Invariants:** nothing here is written to disk or logged (only IDs and
//! names are); a COMPLETE assignments set replaces everything, so what the
//! managers no longer send is forgotten.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use rswarm_proto::{AssignmentsMessage, AssignmentsType, FileTarget, RegistryAuth, Task};

use crate::runtime::{FileInput, TaskInputs};

/// A secret or config as kept on the node: its name and data.
#[derive(Clone)]
struct Delivered {
    name: String,
    data: Arc<[u8]>,
}

/// What the managers delivered, by ID (credentials by task ID).
#[derive(Default)]
pub struct DeliveredInputs {
    secrets: HashMap<String, Delivered>,
    configs: HashMap<String, Delivered>,
    registry_auths: HashMap<String, RegistryAuth>,
}

impl fmt::Debug for DeliveredInputs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeliveredInputs")
            .field("secrets", &self.secrets.len())
            .field("configs", &self.configs.len())
            .field("registry_auths", &self.registry_auths.len())
            .finish()
    }
}

/// The files a task needs that have not arrived yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingInputs {
    /// "secret db-pass", "config app.conf".
    pub missing: Vec<String>,
}

impl fmt::Display for MissingInputs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} not delivered to this node by the managers",
            self.missing.join(", ")
        )
    }
}

impl DeliveredInputs {
    /// Takes in what an assignments message delivers or withdraws.
    pub fn apply(&mut self, message: &mut AssignmentsMessage) {
        if message.r#type == AssignmentsType::Complete as i32 {
            self.secrets.clear();
            self.configs.clear();
            self.registry_auths.clear();
        }
        for id in &message.removed_secret_ids {
            self.secrets.remove(id);
        }
        for id in &message.removed_config_ids {
            self.configs.remove(id);
        }
        for id in &message.removed_task_ids {
            self.registry_auths.remove(id);
        }
        for secret in std::mem::take(&mut message.secrets) {
            let Some(id) = secret.meta.map(|m| m.id) else {
                continue;
            };
            let spec = secret.spec.unwrap_or_default();
            let name = spec.annotations.map(|a| a.name).unwrap_or_default();
            let data = Arc::from(spec.data);
            self.secrets.insert(id, Delivered { name, data });
        }
        for config in std::mem::take(&mut message.configs) {
            let Some(id) = config.meta.map(|m| m.id) else {
                continue;
            };
            let spec = config.spec.unwrap_or_default();
            let name = spec.annotations.map(|a| a.name).unwrap_or_default();
            let data = Arc::from(spec.data);
            self.configs.insert(id, Delivered { name, data });
        }
        self.registry_auths
            .extend(std::mem::take(&mut message.registry_auths));
    }

    /// Forgets a task's credentials (the task left the node).
    pub fn forget_task(&mut self, task_id: &str) {
        self.registry_auths.remove(task_id);
    }

    /// The inputs `task` runs with, or what it still waits for.
    pub fn for_task(&self, task: &Task) -> Result<TaskInputs, MissingInputs> {
        let id = task.meta.as_ref().map_or("", |m| m.id.as_str());
        let container = task.spec.as_ref().and_then(|s| s.container.as_ref());
        let mut inputs = TaskInputs {
            registry_auth: self.registry_auths.get(id).cloned(),
            ..TaskInputs::default()
        };
        let mut missing = Vec::new();
        let Some(c) = container else {
            return Ok(inputs);
        };
        for r in &c.secrets {
            match self.secrets.get(&r.secret_id) {
                Some(d) => inputs.secrets.push(file_input(d, r.file.as_ref())),
                None => missing.push(format!("secret {}", shown(&r.secret_name, &r.secret_id))),
            }
        }
        for r in &c.configs {
            match self.configs.get(&r.config_id) {
                Some(d) => inputs.configs.push(file_input(d, r.file.as_ref())),
                None => missing.push(format!("config {}", shown(&r.config_name, &r.config_id))),
            }
        }
        if missing.is_empty() {
            Ok(inputs)
        } else {
            Err(MissingInputs { missing })
        }
    }
}

fn shown<'a>(name: &'a str, id: &'a str) -> &'a str {
    if name.is_empty() { id } else { name }
}

fn file_input(d: &Delivered, target: Option<&FileTarget>) -> FileInput {
    FileInput {
        name: d.name.clone(),
        target: target.cloned().unwrap_or_default(),
        data: d.data.clone(),
    }
}

#[cfg(test)]
mod tests {
    use rswarm_proto::*;

    use super::*;

    fn secret(id: &str, name: &str, data: &[u8]) -> Secret {
        Secret {
            meta: Some(Meta {
                id: id.into(),
                ..Default::default()
            }),
            spec: Some(SecretSpec {
                annotations: Some(Annotations {
                    name: name.into(),
                    ..Default::default()
                }),
                data: data.to_vec(),
            }),
        }
    }

    fn task_using(secret_id: &str, target: &str) -> Task {
        Task {
            meta: Some(Meta {
                id: "t1".into(),
                ..Default::default()
            }),
            spec: Some(TaskSpec {
                container: Some(ContainerSpec {
                    secrets: vec![SecretReference {
                        secret_id: secret_id.into(),
                        secret_name: "db-pass".into(),
                        file: Some(FileTarget {
                            name: target.into(),
                            mode: 0o400,
                            ..Default::default()
                        }),
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Goal: a task's inputs carry the delivered data at the reference's
    /// target, and its registry credentials; `Debug` shows neither.
    #[test]
    fn task_inputs_come_from_the_references() {
        let mut delivered = DeliveredInputs::default();
        let mut message = AssignmentsMessage {
            r#type: AssignmentsType::Incremental as i32,
            secrets: vec![secret("s1", "db-pass", b"pw-marker")],
            registry_auths: [(
                "t1".to_string(),
                RegistryAuth {
                    server: "reg".into(),
                    password: "pw-marker".into(),
                    ..Default::default()
                },
            )]
            .into(),
            ..Default::default()
        };
        delivered.apply(&mut message);
        let inputs = delivered.for_task(&task_using("s1", "db.txt")).unwrap();
        assert_eq!(inputs.secrets.len(), 1);
        assert_eq!(&*inputs.secrets[0].data, b"pw-marker");
        assert_eq!(inputs.secrets[0].name, "db-pass");
        assert_eq!(inputs.secrets[0].target.name, "db.txt");
        assert_eq!(inputs.secrets[0].target.mode, 0o400);
        assert_eq!(inputs.registry_auth.as_ref().unwrap().server, "reg");
        assert!(!format!("{inputs:?} {delivered:?}").contains("pw-marker"));
    }

    /// Goal: a secret that has not arrived is named; a removal and a
    /// COMPLETE set without it make it missing again.
    #[test]
    fn missing_and_withdrawn_secrets_are_named() {
        let mut delivered = DeliveredInputs::default();
        let task = task_using("s1", "");
        let missing = delivered.for_task(&task).unwrap_err();
        assert_eq!(
            missing.to_string(),
            "secret db-pass not delivered to this node by the managers"
        );
        delivered.apply(&mut AssignmentsMessage {
            secrets: vec![secret("s1", "db-pass", b"x")],
            r#type: AssignmentsType::Incremental as i32,
            ..Default::default()
        });
        assert!(delivered.for_task(&task).is_ok());
        delivered.apply(&mut AssignmentsMessage {
            removed_secret_ids: vec!["s1".into()],
            r#type: AssignmentsType::Incremental as i32,
            ..Default::default()
        });
        assert!(delivered.for_task(&task).is_err());
        delivered.apply(&mut AssignmentsMessage {
            secrets: vec![secret("s1", "db-pass", b"x")],
            r#type: AssignmentsType::Incremental as i32,
            ..Default::default()
        });
        delivered.apply(&mut AssignmentsMessage::default());
        assert!(
            delivered.for_task(&task).is_err(),
            "a COMPLETE set replaces all"
        );
    }
}
