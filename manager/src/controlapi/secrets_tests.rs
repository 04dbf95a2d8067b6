//! Tests of the secret calls and the secrets key against real single-node
//! and two-node Raft managers: limits, names, sealing in the store, answers
//! without data, refusal to remove what services use, and a second
//! manager fetching the key (and a worker refused it).

use std::time::Duration;

use rswarm_proto::control_server::Control;
use rswarm_proto::secrets_key_server::SecretsKey as _;
use tonic::Request;

use super::*;
use crate::controlapi::ControlService;
use crate::dispatcher::test_support::{as_node, start_follower, start_leader};
use crate::secrets_key::KeyService;

const MARKER: &[u8] = b"plain-text-marker-4711";

fn spec(name: &str, data: &[u8]) -> SecretSpec {
    SecretSpec {
        annotations: Some(Annotations {
            name: name.into(),
            ..Default::default()
        }),
        data: data.to_vec(),
    }
}

async fn create(control: &ControlService, name: &str, data: &[u8]) -> Result<Secret, Status> {
    let req = Request::new(CreateSecretRequest {
        spec: Some(spec(name, data)),
    });
    Ok(control
        .create_secret(req)
        .await?
        .into_inner()
        .secret
        .unwrap())
}

fn id(secret: &Secret) -> String {
    secret.meta.as_ref().unwrap().id.clone()
}

/// A service named `name` whose task mounts secret `secret_id` and config
/// `config_id`, written straight to the store.
async fn service_using(ctx: &ManagerContext, name: &str, secret_id: &str, config_id: &str) {
    let service = Service {
        meta: Some(Meta {
            id: new_object_id(),
            ..Default::default()
        }),
        spec: Some(ServiceSpec {
            annotations: Some(Annotations {
                name: name.into(),
                ..Default::default()
            }),
            task: Some(TaskSpec {
                container: Some(ContainerSpec {
                    secrets: vec![SecretReference {
                        secret_id: secret_id.into(),
                        ..Default::default()
                    }],
                    configs: vec![ConfigReference {
                        config_id: config_id.into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    ctx.propose(vec![action(ActionKind::Create, Kind::Service(service))])
        .await
        .unwrap();
}

/// Goal: a created secret is stored sealed (not its plain text) under its
/// own ID, and create, get and list answer without its data.
#[tokio::test]
async fn secrets_are_sealed_in_the_store_and_never_returned() {
    let (leader, _cluster) = start_leader().await;
    let control = ControlService::new(leader.ctx.clone());
    let created = create(&control, "db-password", MARKER).await.unwrap();
    assert!(created.spec.as_ref().unwrap().data.is_empty());
    let secret_id = id(&created);

    let stored = leader
        .ctx
        .store
        .read(|s| s.secret(&secret_id).cloned())
        .unwrap();
    let sealed = stored.spec.unwrap().data;
    assert!(!sealed.windows(MARKER.len()).any(|w| w == MARKER));
    let key = leader.ctx.secrets_key.get().unwrap();
    assert_eq!(key.open(&secret_id, &sealed).unwrap(), MARKER);

    let got = control
        .get_secret(Request::new(GetSecretRequest {
            reference: "db-password".into(),
        }))
        .await
        .unwrap()
        .into_inner()
        .secret
        .unwrap();
    assert_eq!(id(&got), secret_id);
    assert!(got.spec.unwrap().data.is_empty());
    let listed = control
        .list_secrets(Request::new(ListSecretsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .secrets;
    assert_eq!(listed.len(), 1);
    assert!(listed[0].spec.as_ref().unwrap().data.is_empty());
    leader.stop().await;
}

/// Goal: names follow Docker's rules, data is 1 byte to 500 KiB, and a name
/// is unique among secrets; each refusal says what was wrong.
#[tokio::test]
async fn secret_names_and_sizes_are_checked() {
    let (leader, _cluster) = start_leader().await;
    let control = ControlService::new(leader.ctx.clone());
    for bad in ["", "-lead", "has space", "semi;colon", &"x".repeat(65)] {
        let e = create(&control, bad, b"x").await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad:?}");
        assert!(
            e.message().contains("invalid secret name"),
            "{}",
            e.message()
        );
    }
    create(&control, &"x".repeat(64), b"x").await.unwrap();
    create(&control, "a_b.c-d", b"x").await.unwrap();
    let e = create(&control, "big", &vec![0; OBJECT_DATA_BYTES_MAX + 1])
        .await
        .unwrap_err();
    assert!(e.message().contains("limit is 500 KiB"), "{}", e.message());
    create(&control, "max", &vec![7; OBJECT_DATA_BYTES_MAX])
        .await
        .unwrap();
    let e = create(&control, "empty", b"").await.unwrap_err();
    assert!(e.message().contains("empty"), "{}", e.message());
    let e = create(&control, "a_b.c-d", b"y").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists);
    leader.stop().await;
}

/// Goal: an update changes labels only; new data or a new name is refused.
#[tokio::test]
async fn secret_updates_change_labels_only() {
    let (leader, _cluster) = start_leader().await;
    let control = ControlService::new(leader.ctx.clone());
    let created = create(&control, "s1", MARKER).await.unwrap();
    let version = created.meta.as_ref().unwrap().version;
    let mut labelled = spec("s1", b"");
    labelled
        .annotations
        .as_mut()
        .unwrap()
        .labels
        .insert("env".into(), "prod".into());
    let updated = control
        .update_secret(Request::new(UpdateSecretRequest {
            secret_id: id(&created),
            version,
            spec: Some(labelled),
        }))
        .await
        .unwrap()
        .into_inner()
        .secret
        .unwrap();
    let annotations = updated.spec.as_ref().unwrap().annotations.as_ref().unwrap();
    assert_eq!(annotations.labels["env"], "prod");
    let stored = leader
        .ctx
        .store
        .read(|s| s.secret(&id(&created)).cloned())
        .unwrap();
    let key = leader.ctx.secrets_key.get().unwrap();
    assert_eq!(
        key.open(&id(&created), &stored.spec.unwrap().data).unwrap(),
        MARKER
    );

    let version = updated.meta.as_ref().unwrap().version;
    for (new, why) in [(spec("s1", b"new"), "labels"), (spec("s2", b""), "renamed")] {
        let e = control
            .update_secret(Request::new(UpdateSecretRequest {
                secret_id: id(&created),
                version,
                spec: Some(new),
            }))
            .await
            .unwrap_err();
        assert!(e.message().contains(why), "{}", e.message());
    }
    leader.stop().await;
}

/// Goal: a secret or config a service uses cannot be removed (the error
/// names the service), nor can such a config's data change; unused ones can.
#[tokio::test]
async fn secrets_and_configs_in_use_are_not_removed() {
    let (leader, _cluster) = start_leader().await;
    let control = ControlService::new(leader.ctx.clone());
    let secret = create(&control, "tls-key", MARKER).await.unwrap();
    let config = control
        .create_config(Request::new(CreateConfigRequest {
            spec: Some(ConfigSpec {
                annotations: Some(Annotations {
                    name: "nginx.conf".into(),
                    ..Default::default()
                }),
                data: b"worker_processes 1;".to_vec(),
            }),
        }))
        .await
        .unwrap()
        .into_inner()
        .config
        .unwrap();
    let config_id = config.meta.as_ref().unwrap().id.clone();
    service_using(&leader.ctx, "web", &id(&secret), &config_id).await;

    let e = control
        .remove_secret(Request::new(RemoveSecretRequest {
            reference: "tls-key".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(
        e.message()
            .contains("in use by the following service(s): web"),
        "{}",
        e.message()
    );
    let e = control
        .remove_config(Request::new(RemoveConfigRequest {
            reference: config_id.clone(),
        }))
        .await
        .unwrap_err();
    assert!(e.message().contains("web"), "{}", e.message());
    let mut changed = config.spec.clone().unwrap();
    changed.data = b"worker_processes 2;".to_vec();
    let e = control
        .update_config(Request::new(UpdateConfigRequest {
            config_id: config_id.clone(),
            version: config.meta.as_ref().unwrap().version,
            spec: Some(changed),
        }))
        .await
        .unwrap_err();
    assert!(e.message().contains("in use"), "{}", e.message());

    create(&control, "unused", b"x").await.unwrap();
    control
        .remove_secret(Request::new(RemoveSecretRequest {
            reference: "unused".into(),
        }))
        .await
        .unwrap();
    leader.stop().await;
}

/// Goal: a manager that joins later fetches the key from the leader and
/// opens what the leader sealed; a worker certificate is refused the key.
#[tokio::test]
async fn a_new_manager_fetches_the_key_and_workers_cannot() {
    let (leader, cluster) = start_leader().await;
    let control = ControlService::new(leader.ctx.clone());
    let secret = create(&control, "shared", MARKER).await.unwrap();
    let follower = start_follower(&leader, &cluster).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while follower.ctx.secrets_key.get().is_none() {
        assert!(tokio::time::Instant::now() < deadline, "no key within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let key_file = follower.ctx.secrets_key.get().unwrap();
    let sealed = leader
        .ctx
        .store
        .read(|s| s.secret(&id(&secret)).cloned())
        .unwrap()
        .spec
        .unwrap()
        .data;
    assert_eq!(key_file.open(&id(&secret), &sealed).unwrap(), MARKER);

    let service = KeyService::new(leader.ctx.clone());
    let e = service
        .get_secrets_key(as_node(
            &cluster.cluster_id,
            "worker1",
            GetSecretsKeyRequest {},
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    let e = service
        .get_secrets_key(as_node("other-cluster", "m9", GetSecretsKeyRequest {}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    let e = service
        .get_secrets_key(Request::new(GetSecretsKeyRequest {}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    follower.stop().await;
    leader.stop().await;
}
