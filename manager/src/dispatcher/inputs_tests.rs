//! Tests of what a node's messages carry besides tasks, on an in-memory
//! store: only what its own tasks reference, opened; removal once unused;
//! nothing before the key is there; credentials by task.

use prost::Message;
use rswarm_proto::object::Kind;
use rswarm_proto::*;

use super::*;
use crate::manager::action;

const MARKER: &[u8] = b"secret-marker";

struct Fixture {
    state: StoreState,
    key: SecretsKey,
    index: u64,
}

impl Fixture {
    fn new() -> Self {
        Self {
            state: StoreState::new(),
            key: SecretsKey::generate().unwrap(),
            index: 0,
        }
    }

    fn apply(&mut self, kind: ActionKind, object: Kind) {
        self.index += 1;
        let proposal = Proposal {
            actions: vec![action(kind, object)],
            timestamp_ms: 1,
        };
        self.state.apply(self.index, &proposal).unwrap();
    }

    fn add_secret(&mut self, id: &str) {
        let secret = Secret {
            meta: Some(Meta {
                id: id.into(),
                ..Default::default()
            }),
            spec: Some(SecretSpec {
                annotations: Some(Annotations {
                    name: format!("name-{id}"),
                    ..Default::default()
                }),
                data: self.key.seal(id, MARKER).unwrap(),
            }),
        };
        self.apply(ActionKind::Create, Kind::Secret(secret));
    }

    fn add_config(&mut self, id: &str) {
        let config = Config {
            meta: Some(Meta {
                id: id.into(),
                ..Default::default()
            }),
            spec: Some(ConfigSpec {
                annotations: Some(Annotations {
                    name: format!("name-{id}"),
                    ..Default::default()
                }),
                data: b"conf".to_vec(),
            }),
        };
        self.apply(ActionKind::Create, Kind::Config(config));
    }

    /// Creates a RUNNING task on `node` using `secret` and `config`.
    fn add_task(&mut self, id: &str, node: &str, secret: &str, config: &str) -> Task {
        let task = Task {
            meta: Some(Meta {
                id: id.into(),
                ..Default::default()
            }),
            service_id: "svc".into(),
            node_id: node.into(),
            desired_state: TaskState::Running as i32,
            status: Some(TaskStatus {
                state: TaskState::Running as i32,
                ..Default::default()
            }),
            spec: Some(TaskSpec {
                container: Some(ContainerSpec {
                    secrets: vec![SecretReference {
                        secret_id: secret.into(),
                        ..Default::default()
                    }],
                    configs: vec![ConfigReference {
                        config_id: config.into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.apply(ActionKind::Create, Kind::Task(task.clone()));
        task
    }

    fn message(
        &self,
        inputs: &mut NodeInputs,
        node: &str,
        kind: AssignmentsType,
        with_key: bool,
    ) -> AssignmentsMessage {
        let mut message = AssignmentsMessage {
            r#type: kind as i32,
            ..Default::default()
        };
        let key = with_key.then_some(&self.key);
        inputs.attach(&self.state, key, node, &mut message);
        message
    }
}

fn secret_ids(m: &AssignmentsMessage) -> Vec<&str> {
    m.secrets
        .iter()
        .map(|s| s.meta.as_ref().unwrap().id.as_str())
        .collect()
}

fn config_ids(m: &AssignmentsMessage) -> Vec<&str> {
    m.configs
        .iter()
        .map(|c| c.meta.as_ref().unwrap().id.as_str())
        .collect()
}

/// Goal: a node gets exactly the secrets and configs its own tasks
/// reference, the secret's data opened, once; another node's are not sent.
#[test]
fn a_node_gets_only_what_its_tasks_reference() {
    let mut f = Fixture::new();
    for id in ["s1", "s2"] {
        f.add_secret(id);
    }
    for id in ["c1", "c2"] {
        f.add_config(id);
    }
    f.add_task("t1", "n1", "s1", "c1");
    f.add_task("t2", "n2", "s2", "c2");
    let mut inputs = NodeInputs::default();
    let complete = f.message(&mut inputs, "n1", AssignmentsType::Complete, true);
    assert_eq!(secret_ids(&complete), ["s1"]);
    assert_eq!(config_ids(&complete), ["c1"]);
    assert_eq!(complete.secrets[0].spec.as_ref().unwrap().data, MARKER);
    let next = f.message(&mut inputs, "n1", AssignmentsType::Incremental, true);
    assert!(
        next.secrets.is_empty() && next.configs.is_empty(),
        "sent once"
    );
    assert!(next.removed_secret_ids.is_empty());
}

/// Goal: a cluster without secrets or configs sends none, and the first
/// ones created still reach the nodes whose tasks reference them.
#[test]
fn the_first_secret_and_config_still_reach_the_node() {
    let mut f = Fixture::new();
    f.add_task("t0", "n1", "missing", "missing");
    let mut inputs = NodeInputs::default();
    let m = f.message(&mut inputs, "n1", AssignmentsType::Complete, true);
    assert!(m.secrets.is_empty() && m.configs.is_empty());
    f.add_secret("s1");
    f.add_config("c1");
    f.add_task("t1", "n1", "s1", "c1");
    let m = f.message(&mut inputs, "n1", AssignmentsType::Incremental, true);
    assert_eq!(secret_ids(&m), ["s1"]);
    assert_eq!(config_ids(&m), ["c1"]);
}

/// Goal: once no task of the node references a secret or config (its task
/// was deleted or finished), the next message tells the node to forget it.
#[test]
fn unreferenced_secrets_and_configs_are_removed() {
    let mut f = Fixture::new();
    f.add_secret("s1");
    f.add_config("c1");
    let task = f.add_task("t1", "n1", "s1", "c1");
    let mut inputs = NodeInputs::default();
    f.message(&mut inputs, "n1", AssignmentsType::Complete, true);
    let mut done = f.state.task("t1").unwrap().clone();
    done.status.as_mut().unwrap().state = TaskState::Complete as i32;
    f.apply(ActionKind::Update, Kind::Task(done));
    let m = f.message(&mut inputs, "n1", AssignmentsType::Incremental, true);
    assert_eq!(m.removed_secret_ids, ["s1"]);
    assert_eq!(m.removed_config_ids, ["c1"]);
    let m = f.message(&mut inputs, "n1", AssignmentsType::Incremental, true);
    assert!(m.removed_secret_ids.is_empty(), "removed once");
    drop(task);
}

/// Goal: a task in the message itself gets its secret in the same message,
/// even when the store moved on; without the key a secret is held back
/// and sent with a later message.
#[test]
fn secrets_come_with_their_task_and_wait_for_the_key() {
    let mut f = Fixture::new();
    f.add_secret("s1");
    f.add_config("c1");
    let task = f.add_task("t1", "n1", "s1", "c1");
    let mut inputs = NodeInputs::default();
    let m = f.message(&mut inputs, "n1", AssignmentsType::Incremental, false);
    assert!(m.secrets.is_empty(), "no key: nothing can be opened");
    assert_eq!(config_ids(&m), ["c1"]);
    let m = f.message(&mut inputs, "n1", AssignmentsType::Incremental, true);
    assert_eq!(secret_ids(&m), ["s1"]);

    let mut other = NodeInputs::default();
    let mut gone = f.state.task("t1").unwrap().clone();
    gone.meta.as_mut().unwrap().version = f.index;
    f.apply(ActionKind::Delete, Kind::Task(gone));
    let mut message = AssignmentsMessage {
        r#type: AssignmentsType::Incremental as i32,
        tasks: vec![task],
        ..Default::default()
    };
    other.attach(&f.state, Some(&f.key), "n1", &mut message);
    assert_eq!(secret_ids(&message), ["s1"]);
}

/// Goal: the message carries each of its tasks' registry credentials,
/// opened, keyed by task ID.
#[test]
fn registry_credentials_are_opened_per_task() {
    let f = Fixture::new();
    let auth = RegistryAuth {
        server: "reg:5000".into(),
        username: "u".into(),
        password: "p".into(),
        identity_token: String::new(),
    };
    let task = Task {
        meta: Some(Meta {
            id: "t9".into(),
            ..Default::default()
        }),
        service_id: "svc".into(),
        spec: Some(TaskSpec {
            sealed_registry_auth: f.key.seal("svc", &auth.encode_to_vec()).unwrap(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut message = AssignmentsMessage {
        tasks: vec![task],
        ..Default::default()
    };
    NodeInputs::default().attach(&f.state, Some(&f.key), "n1", &mut message);
    assert_eq!(message.registry_auths["t9"], auth);
}
