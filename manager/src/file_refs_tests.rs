//! Tests of reference checks and binding on an in-memory store.

use prost::Message;
use rswarm_proto::object::Kind;

use super::*;
use crate::manager::action;
use crate::secrets_key::SecretsKey;

fn store_with(secret: (&str, &str), config: (&str, &str)) -> StoreState {
    let annotations = |name: &str| {
        Some(Annotations {
            name: name.into(),
            ..Default::default()
        })
    };
    let meta = |id: &str| {
        Some(Meta {
            id: id.into(),
            ..Default::default()
        })
    };
    let mut s = StoreState::new();
    let proposal = Proposal {
        actions: vec![
            action(
                ActionKind::Create,
                Kind::Secret(Secret {
                    meta: meta(secret.0),
                    spec: Some(SecretSpec {
                        annotations: annotations(secret.1),
                        data: vec![1],
                    }),
                }),
            ),
            action(
                ActionKind::Create,
                Kind::Config(Config {
                    meta: meta(config.0),
                    spec: Some(ConfigSpec {
                        annotations: annotations(config.1),
                        data: vec![2],
                    }),
                }),
            ),
        ],
        timestamp_ms: 1,
    };
    s.apply(1, &proposal).unwrap();
    s
}

fn spec_with(secrets: Vec<SecretReference>, configs: Vec<ConfigReference>) -> ServiceSpec {
    ServiceSpec {
        task: Some(TaskSpec {
            driver: "oci".into(),
            container: Some(ContainerSpec {
                image: "busybox".into(),
                secrets,
                configs,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn by_name(name: &str) -> SecretReference {
    SecretReference {
        secret_name: name.into(),
        ..Default::default()
    }
}

/// Goal: names resolve to IDs, targets get Docker's defaults, and the
/// sealed credentials given replace whatever the client sent.
#[test]
fn references_resolve_to_ids_with_default_targets() {
    let s = store_with(("sid1", "db-pass"), ("cid1", "app.conf"));
    let config = ConfigReference {
        config_name: "app.conf".into(),
        file: Some(FileTarget {
            name: "/etc/app.conf".into(),
            mode: 0o440,
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut spec = spec_with(vec![by_name("db-pass")], vec![config]);
    spec.task.as_mut().unwrap().sealed_registry_auth = b"forged".to_vec();
    bind_refs(&s, &mut spec, b"sealed".to_vec()).unwrap();
    let task = spec.task.unwrap();
    assert_eq!(task.sealed_registry_auth, b"sealed");
    let c = task.container.unwrap();
    assert_eq!(c.secrets[0].secret_id, "sid1");
    let file = c.secrets[0].file.clone().unwrap();
    assert_eq!(
        (
            file.name.as_str(),
            file.uid.as_str(),
            file.gid.as_str(),
            file.mode
        ),
        ("db-pass", "0", "0", 0o444)
    );
    assert_eq!(c.configs[0].config_id, "cid1");
    let file = c.configs[0].file.clone().unwrap();
    assert_eq!((file.name.as_str(), file.mode), ("/etc/app.conf", 0o440));
}

/// Goal: an unknown name and two files on one target are refused with a
/// message that names them and the fix.
#[test]
fn unknown_names_and_shared_targets_are_refused() {
    let s = store_with(("sid1", "db-pass"), ("cid1", "app.conf"));
    let mut spec = spec_with(vec![by_name("nope")], vec![]);
    let e = bind_refs(&s, &mut spec, vec![]).unwrap_err();
    assert!(
        e.message().contains("secret not found: nope"),
        "{}",
        e.message()
    );
    assert!(
        e.message().contains("rswarm secret create nope"),
        "{}",
        e.message()
    );
    let mut spec = spec_with(vec![by_name("db-pass"), by_name("sid1")], vec![]);
    let e = bind_refs(&s, &mut spec, vec![]).unwrap_err();
    assert!(
        e.message().contains("target \"db-pass\""),
        "{}",
        e.message()
    );
}

/// Goal: the process driver refuses secrets and configs, naming the oci
/// driver; bad targets and modes are refused before anything is stored.
#[test]
fn spec_checks_refuse_what_cannot_be_mounted() {
    let c = ContainerSpec {
        secrets: vec![by_name("x")],
        ..Default::default()
    };
    let e = check_refs(&c, "process").unwrap_err();
    assert!(e.to_string().contains("use the oci driver"), "{e}");
    assert!(check_refs(&c, "oci").is_ok());
    let mut bad = by_name("x");
    bad.file = Some(FileTarget {
        name: "../../etc/passwd".into(),
        ..Default::default()
    });
    let c = ContainerSpec {
        secrets: vec![bad],
        ..Default::default()
    };
    assert!(
        check_refs(&c, "oci")
            .unwrap_err()
            .to_string()
            .contains("..")
    );
}

/// Goal: sealed credentials open only for the service they were sealed
/// for; a task without any has none.
#[test]
fn registry_auth_opens_for_its_service_only() {
    let key = SecretsKey::generate().unwrap();
    let auth = RegistryAuth {
        server: "registry.example:5000".into(),
        username: "me".into(),
        password: "pw".into(),
        identity_token: String::new(),
    };
    let mut task = Task {
        service_id: "svc1".into(),
        spec: Some(TaskSpec {
            sealed_registry_auth: key.seal("svc1", &auth.encode_to_vec()).unwrap(),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(open_auth(&key, &task).unwrap().unwrap(), auth);
    task.service_id = "svc2".into();
    assert!(open_auth(&key, &task).unwrap().is_err());
    task.spec.as_mut().unwrap().sealed_registry_auth.clear();
    assert!(open_auth(&key, &task).is_none());
}
