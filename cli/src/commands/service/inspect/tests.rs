//! `service inspect` output. Goal: Docker's keys and units (nanosecond
//! durations), unset fields left out, and a readable `--pretty`. Method:
//! build a spec through the create flags and snapshot both renderings.

use expect_test::expect;
use rswarm_proto::*;

use super::*;
use crate::commands::service::fixtures::replicated;

fn view() -> ServiceView {
    let mut service = replicated("web", 3);
    let spec = service.spec.get_or_insert_with(Default::default);
    spec.annotations.get_or_insert_with(Default::default).labels =
        [("tier".to_string(), "front".to_string())].into();
    let task = spec.task.get_or_insert_with(Default::default);
    let container = task.container.get_or_insert_with(Default::default);
    container.env = vec!["A=1".into()];
    container.args = vec!["nginx".into(), "-g".into(), "daemon off;".into()];
    container.stop_grace_period_ms = Some(30_000);
    task.resources = Some(ResourceRequirements {
        limits: Some(Resources {
            nano_cpus: 500_000_000,
            memory_bytes: 512 << 20,
        }),
        reservations: None,
        pids_limit: 100,
    });
    task.restart = Some(RestartPolicy {
        condition: RestartCondition::OnFailure as i32,
        delay_ms: Some(5_000),
        max_attempts: 3,
        window_ms: 0,
    });
    task.placement = Some(Placement {
        constraints: vec!["node.role==worker".into()],
        preferences: vec![PlacementPreference {
            spread: "node.labels.zone".into(),
        }],
        max_replicas: 2,
    });
    spec.update = Some(UpdateConfig {
        parallelism: Some(2),
        delay_ms: 10_000,
        failure_action: UpdateFailureAction::Rollback as i32,
        monitor_ms: None,
        max_failure_ratio: 0.0,
        order: UpdateOrder::StartFirst as i32,
    });
    spec.endpoint = Some(EndpointSpec {
        ports: vec![PortConfig {
            published_port: 8080,
            target_port: 80,
            publish_mode: PublishMode::Host as i32,
            ..Default::default()
        }],
    });
    service.update_status = Some(UpdateStatus {
        state: UpdateState::Completed as i32,
        started_at_ms: 1_767_225_000_000,
        completed_at_ms: 1_767_225_060_000,
        message: "update completed".into(),
    });
    ServiceView {
        service: Some(service),
        running_tasks: 3,
        desired_tasks: 3,
    }
}

#[test]
fn the_document_uses_dockers_keys_and_units() {
    let text = serde_json::to_string_pretty(&document(&view())).unwrap();
    expect![[r#"
        {
          "CreatedAt": "2025-12-31T23:00:00.000Z",
          "ID": "web-id-0123456789abcdef",
          "ServiceStatus": {
            "DesiredTasks": 3,
            "RunningTasks": 3
          },
          "Spec": {
            "EndpointSpec": {
              "Mode": "vip",
              "Ports": [
                {
                  "Protocol": "tcp",
                  "PublishMode": "host",
                  "PublishedPort": 8080,
                  "TargetPort": 80
                }
              ]
            },
            "Labels": {
              "tier": "front"
            },
            "Mode": {
              "Replicated": {
                "Replicas": 3
              }
            },
            "Name": "web",
            "TaskTemplate": {
              "ContainerSpec": {
                "Args": [
                  "nginx",
                  "-g",
                  "daemon off;"
                ],
                "Env": [
                  "A=1"
                ],
                "Image": "nginx:1.27",
                "StopGracePeriod": 30000000000
              },
              "Placement": {
                "Constraints": [
                  "node.role==worker"
                ],
                "MaxReplicas": 2,
                "Preferences": [
                  {
                    "Spread": {
                      "SpreadDescriptor": "node.labels.zone"
                    }
                  }
                ]
              },
              "Resources": {
                "Limits": {
                  "MemoryBytes": 536870912,
                  "NanoCPUs": 500000000,
                  "Pids": 100
                }
              },
              "RestartPolicy": {
                "Condition": "on-failure",
                "Delay": 5000000000,
                "MaxAttempts": 3
              },
              "Runtime": "oci"
            },
            "UpdateConfig": {
              "Delay": 10000000000,
              "FailureAction": "rollback",
              "Order": "start-first",
              "Parallelism": 2
            }
          },
          "SpecVersion": 1,
          "UpdateStatus": {
            "CompletedAt": "2025-12-31T23:51:00.000Z",
            "Message": "update completed",
            "StartedAt": "2025-12-31T23:50:00.000Z",
            "State": "completed"
          },
          "UpdatedAt": "2025-12-31T23:59:00.000Z",
          "Version": {
            "Index": 10
          }
        }"#]]
    .assert_eq(&text);
}

#[test]
fn pretty_summarises_like_docker() {
    expect![[r#"
        ID:		web-id-0123456789abcdef
        Name:		web
        Labels:
         tier=front
        Service Mode:	Replicated
         Replicas:	3
         Tasks:		3 running of 3 desired
        UpdateStatus:
         State:		completed
         Started:	2025-12-31T23:50:00.000Z
         Completed:	2025-12-31T23:51:00.000Z
         Message:	update completed
        Placement:
         Constraints:	[node.role==worker]
         Preferences:	spread=node.labels.zone
         Max Replicas Per Node:	2
        UpdateConfig:
         Parallelism:	2
         Delay:		10s
         On failure:	rollback
         Monitoring Period: 5s
         Max failure ratio: 0
         Update order:    start-first
        RollbackConfig:
         Parallelism:	1
         On failure:	pause
         Monitoring Period: 5s
         Max failure ratio: 0
         Rollback order:    stop-first
        ContainerSpec:
         Driver:	oci
         Image:		nginx:1.27
         Args:		nginx -g daemon off;
         Env:		A=1
         StopGracePeriod: 30s
        Resources:
         Limits:
          CPU:		0.5
          Memory:	512MiB
          PIDs:		100
        Endpoint Mode:	vip
        Ports:
         PublishedPort = 8080
          Protocol = tcp
          TargetPort = 80
          PublishMode = host"#]]
    .assert_eq(&pretty(&view()));
}

/// Goal: the spec's check shows under `ContainerSpec.Healthcheck` in the
/// document and in the summary.
#[test]
fn the_health_check_shows_in_the_document_and_the_summary() {
    let mut view = view();
    let container = view
        .service
        .as_mut()
        .and_then(|s| s.spec.as_mut())
        .and_then(|s| s.task.as_mut())
        .and_then(|t| t.container.as_mut())
        .unwrap();
    container.healthcheck = Some(HealthConfig {
        test: vec!["CMD-SHELL".into(), "test -f /ready".into()],
        interval_ms: Some(2_000),
        ..HealthConfig::default()
    });
    let doc = document(&view);
    assert_eq!(
        doc["Spec"]["TaskTemplate"]["ContainerSpec"]["Healthcheck"],
        serde_json::json!({"Test": ["CMD-SHELL", "test -f /ready"], "Interval": 2_000_000_000u64})
    );
    let summary = pretty(&view);
    assert!(
        summary.contains(" Healthcheck:\n  Test:\t\tCMD-SHELL test -f /ready\n  Interval:\t2s"),
        "{summary}"
    );
}

/// Goal: `service inspect` never shows registry credentials, not even
/// sealed, in either form.
#[test]
fn registry_credentials_are_never_shown() {
    let mut v = view();
    let service = v.service.as_mut().unwrap();
    let task = service.spec.as_mut().unwrap().task.as_mut().unwrap();
    task.sealed_registry_auth = b"SEALED-MARKER".to_vec();
    let json = serde_json::to_string(&document(&v)).unwrap();
    assert!(
        !json.contains("SEALED") && !json.to_lowercase().contains("registry_auth"),
        "{json}"
    );
    let bytes: Vec<String> = b"SEALED".iter().map(|b| b.to_string()).collect();
    assert!(!json.contains(&bytes.join(",")), "{json}");
    assert!(!pretty(&v).contains("SEALED"));
}

/// Goal: the container options, mounts and secret and config files show
/// under Docker's keys, and a secret shows as a reference only.
#[test]
fn container_options_mounts_and_files_show_with_dockers_keys() {
    let mut view = view();
    let container = view
        .service
        .as_mut()
        .and_then(|s| s.spec.as_mut())
        .and_then(|s| s.task.as_mut())
        .and_then(|t| t.container.as_mut())
        .unwrap();
    container.read_only = true;
    container.cap_add = vec!["NET_ADMIN".into()];
    container.mounts = vec![Mount {
        r#type: MountType::Tmpfs as i32,
        target: "/scratch".into(),
        tmpfs_size_bytes: 1 << 20,
        ..Mount::default()
    }];
    container.secrets = vec![SecretReference {
        secret_id: "s1".into(),
        secret_name: "db-pass".into(),
        file: Some(FileTarget {
            name: "db-pass".into(),
            uid: "0".into(),
            gid: "0".into(),
            mode: 0o400,
        }),
    }];
    let doc = document(&view);
    let spec = &doc["Spec"]["TaskTemplate"]["ContainerSpec"];
    assert_eq!(spec["ReadOnly"], true);
    assert_eq!(spec["CapabilityAdd"], serde_json::json!(["NET_ADMIN"]));
    assert_eq!(
        spec["Mounts"],
        serde_json::json!([{"Type": "tmpfs", "Target": "/scratch", "TmpfsOptions": {"SizeBytes": 1_048_576}}])
    );
    assert_eq!(
        spec["Secrets"],
        serde_json::json!([{"File": {"Name": "db-pass", "UID": "0", "GID": "0", "Mode": 256},
            "SecretID": "s1", "SecretName": "db-pass"}])
    );
    assert!(spec.get("Init").is_none(), "unset options stay out: {spec}");
}
