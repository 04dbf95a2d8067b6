//! Flags → spec, through clap as a user types them. Goal: every flag lands
//! in its proto field and nowhere else, list edits of `update` do what
//! Docker's do, and bad combinations are refused with their message.
//! Method: parse a command line, build or edit a spec, and compare it with
//! a base spec changed by hand.

use clap::Parser;
use rswarm_proto::service_spec::Mode;
use rswarm_proto::*;

use super::*;

#[derive(Debug, Parser)]
struct CreateCli {
    #[command(flatten)]
    flags: CreateFlags,
}

#[derive(Debug, Parser)]
struct UpdateCli {
    #[command(flatten)]
    flags: UpdateFlags,
}

fn create(args: &[&str]) -> anyhow::Result<ServiceSpec> {
    let cli = CreateCli::try_parse_from(std::iter::once("create").chain(args.iter().copied()))?;
    create_spec(&cli.flags)
}

fn update_flags(args: &[&str]) -> UpdateFlags {
    match UpdateCli::try_parse_from(std::iter::once("update").chain(args.iter().copied())) {
        Ok(cli) => cli.flags,
        Err(e) => panic!("{args:?}: {e}"),
    }
}

fn update(spec: &ServiceSpec, args: &[&str]) -> anyhow::Result<ServiceSpec> {
    let mut spec = spec.clone();
    update_flags(args).apply(&mut spec)?;
    Ok(spec)
}

/// The spec of `service create nginx`.
fn base() -> ServiceSpec {
    ServiceSpec {
        annotations: Some(Annotations::default()),
        task: Some(TaskSpec {
            container: Some(ContainerSpec {
                image: "nginx".into(),
                ..Default::default()
            }),
            driver: "oci".into(),
            ..Default::default()
        }),
        mode: Some(Mode::Replicated(ReplicatedMode { replicas: 1 })),
        ..Default::default()
    }
}

fn task(s: &mut ServiceSpec) -> &mut TaskSpec {
    s.task.get_or_insert_with(Default::default)
}

fn container(s: &mut ServiceSpec) -> &mut ContainerSpec {
    task(s).container.get_or_insert_with(Default::default)
}

fn resources(s: &mut ServiceSpec) -> &mut ResourceRequirements {
    task(s).resources.get_or_insert_with(Default::default)
}

fn restart(s: &mut ServiceSpec) -> &mut RestartPolicy {
    task(s).restart.get_or_insert_with(Default::default)
}

fn placement(s: &mut ServiceSpec) -> &mut Placement {
    task(s).placement.get_or_insert_with(Default::default)
}

fn update_config(s: &mut ServiceSpec) -> &mut UpdateConfig {
    s.update.get_or_insert_with(Default::default)
}

fn rollback_config(s: &mut ServiceSpec) -> &mut UpdateConfig {
    s.rollback.get_or_insert_with(Default::default)
}

fn host_port(published: u32, target: u32) -> PortConfig {
    PortConfig {
        target_port: target,
        published_port: published,
        publish_mode: PublishMode::Host as i32,
        ..Default::default()
    }
}

type Edit = fn(&mut ServiceSpec);

/// One row per create flag: the flags before the image, and what they
/// change in the base spec.
const CREATE_CASES: &[(&[&str], Edit)] = &[
    (&[], |_| {}),
    (&["--name", "web"], |s| {
        s.annotations.get_or_insert_with(Default::default).name = "web".into()
    }),
    (&["--replicas", "3"], |s| {
        s.mode = Some(Mode::Replicated(ReplicatedMode { replicas: 3 }))
    }),
    (&["--replicas", "0"], |s| {
        s.mode = Some(Mode::Replicated(ReplicatedMode { replicas: 0 }))
    }),
    (&["--mode", "global"], |s| {
        s.mode = Some(Mode::Global(GlobalMode {}))
    }),
    (&["--mode", "replicated"], |_| {}),
    (
        &[
            "--constraint",
            "node.role==manager",
            "--constraint",
            "node.labels.zone!=a",
        ],
        |s| {
            placement(s).constraints =
                vec!["node.role==manager".into(), "node.labels.zone!=a".into()]
        },
    ),
    (&["--placement-pref", "spread=node.labels.zone"], |s| {
        placement(s).preferences = vec![PlacementPreference {
            spread: "node.labels.zone".into(),
        }]
    }),
    (&["--max-replicas", "2"], |s| placement(s).max_replicas = 2),
    (&["--rebalance-on-join", "true"], |s| s.rebalance = true),
    (&["--replicas-max-per-node", "2"], |s| {
        placement(s).max_replicas = 2
    }),
    (&["--reserve-cpu", "0.5"], |s| {
        resources(s).reservations = Some(Resources {
            nano_cpus: 500_000_000,
            memory_bytes: 0,
        })
    }),
    (&["--reserve-memory", "512M"], |s| {
        resources(s).reservations = Some(Resources {
            nano_cpus: 0,
            memory_bytes: 512 << 20,
        })
    }),
    (&["--limit-cpu", "1.5"], |s| {
        resources(s).limits = Some(Resources {
            nano_cpus: 1_500_000_000,
            memory_bytes: 0,
        })
    }),
    (&["--limit-memory", "1.5g"], |s| {
        resources(s).limits = Some(Resources {
            nano_cpus: 0,
            memory_bytes: 3 << 29,
        })
    }),
    (&["--limit-pids", "100"], |s| resources(s).pids_limit = 100),
    (&["-e", "A=1", "--env", "B=2", "--env", "A=3"], |s| {
        container(s).env = vec!["A=3".into(), "B=2".into()]
    }),
    (&["-w", "/srv"], |s| container(s).dir = "/srv".into()),
    (&["--workdir", "/srv"], |s| container(s).dir = "/srv".into()),
    (&["-u", "1000:1000"], |s| {
        container(s).user = "1000:1000".into()
    }),
    (&["--user", "www"], |s| container(s).user = "www".into()),
    (&["--restart-condition", "on-failure"], |s| {
        restart(s).condition = RestartCondition::OnFailure as i32
    }),
    (&["--restart-condition", "none"], |s| {
        restart(s).condition = RestartCondition::None as i32
    }),
    (&["--restart-condition", "any"], |s| {
        restart(s).condition = RestartCondition::Any as i32
    }),
    (&["--restart-delay", "10s"], |s| {
        restart(s).delay_ms = Some(10_000)
    }),
    (&["--restart-max-attempts", "3"], |s| {
        restart(s).max_attempts = 3
    }),
    (&["--restart-window", "2m"], |s| {
        restart(s).window_ms = 120_000
    }),
    (&["--update-parallelism", "2"], |s| {
        update_config(s).parallelism = Some(2)
    }),
    (&["--update-parallelism", "0"], |s| {
        update_config(s).parallelism = Some(0)
    }),
    (&["--update-delay", "1m30s"], |s| {
        update_config(s).delay_ms = 90_000
    }),
    (&["--update-failure-action", "rollback"], |s| {
        update_config(s).failure_action = UpdateFailureAction::Rollback as i32
    }),
    (&["--update-failure-action", "continue"], |s| {
        update_config(s).failure_action = UpdateFailureAction::Continue as i32
    }),
    (&["--update-failure-action", "pause"], |s| {
        update_config(s).failure_action = UpdateFailureAction::Pause as i32
    }),
    (&["--update-monitor", "30s"], |s| {
        update_config(s).monitor_ms = Some(30_000)
    }),
    (&["--update-max-failure-ratio", "0.25"], |s| {
        update_config(s).max_failure_ratio = 0.25
    }),
    (&["--update-order", "start-first"], |s| {
        update_config(s).order = UpdateOrder::StartFirst as i32
    }),
    (&["--rollback-parallelism", "3"], |s| {
        rollback_config(s).parallelism = Some(3)
    }),
    (&["--rollback-delay", "5s"], |s| {
        rollback_config(s).delay_ms = 5_000
    }),
    (&["--rollback-failure-action", "continue"], |s| {
        rollback_config(s).failure_action = UpdateFailureAction::Continue as i32
    }),
    (&["--rollback-monitor", "1s"], |s| {
        rollback_config(s).monitor_ms = Some(1_000)
    }),
    (&["--rollback-max-failure-ratio", "1"], |s| {
        rollback_config(s).max_failure_ratio = 1.0
    }),
    (&["--rollback-order", "stop-first"], |s| {
        rollback_config(s).order = UpdateOrder::StopFirst as i32
    }),
    (&["--stop-signal", "SIGINT"], |s| {
        container(s).stop_signal = "SIGINT".into()
    }),
    (&["--stop-grace-period", "30s"], |s| {
        container(s).stop_grace_period_ms = Some(30_000)
    }),
    (&["-l", "tier=web", "--label", "flag"], |s| {
        let labels = &mut s.annotations.get_or_insert_with(Default::default).labels;
        labels.insert("tier".into(), "web".into());
        labels.insert("flag".into(), String::new());
    }),
    (&["--driver", "oci"], |_| {}),
    (&["-p", "8080:80"], |s| {
        s.endpoint = Some(EndpointSpec {
            ports: vec![host_port(8080, 80)],
        })
    }),
    (
        &[
            "--publish",
            "published=53,target=53,protocol=udp,mode=host",
            "-p",
            "53:53",
        ],
        |s| {
            let mut udp = host_port(53, 53);
            udp.protocol = PortProtocol::Udp as i32;
            s.endpoint = Some(EndpointSpec {
                ports: vec![udp, host_port(53, 53)],
            })
        },
    ),
    (&["-d", "-q", "--timeout", "1m"], |_| {}),
];

#[test]
fn every_create_flag_sets_its_field() {
    for (flags, edit) in CREATE_CASES {
        let mut args: Vec<&str> = flags.to_vec();
        args.push("nginx");
        let got = match create_with_wait(&args) {
            Ok(spec) => spec,
            Err(e) => panic!("{flags:?}: {e}"),
        };
        let mut want = base();
        edit(&mut want);
        assert_eq!(got, want, "{flags:?}");
    }
}

/// Parses create flags plus the wait flags, as `service create` does.
fn create_with_wait(args: &[&str]) -> anyhow::Result<ServiceSpec> {
    #[derive(Debug, Parser)]
    struct Full {
        #[command(flatten)]
        flags: CreateFlags,
        #[command(flatten)]
        wait: WaitFlags,
    }
    let cli = Full::try_parse_from(std::iter::once("create").chain(args.iter().copied()))?;
    create_spec(&cli.flags)
}

#[test]
fn the_command_after_the_image_becomes_the_args() {
    let spec = create(&["--name", "p", "alpine", "ping", "-c", "3", "example.org"]).unwrap();
    let container = spec.task.unwrap().container.unwrap();
    assert_eq!(container.image, "alpine");
    assert_eq!(container.args, ["ping", "-c", "3", "example.org"]);
    assert!(container.command.is_empty());
}

#[test]
fn the_process_driver_takes_the_command_without_an_image() {
    let spec = create(&[
        "--driver",
        "process",
        "--name",
        "t",
        "--replicas",
        "3",
        "/bin/sleep",
        "600",
    ])
    .unwrap();
    let task = spec.task.unwrap();
    assert_eq!(task.driver, "process");
    let container = task.container.unwrap();
    assert_eq!(container.image, "");
    assert_eq!(container.args, ["/bin/sleep", "600"]);
    assert_eq!(
        spec.mode,
        Some(Mode::Replicated(ReplicatedMode { replicas: 3 }))
    );
}

#[test]
fn flags_after_the_image_belong_to_the_command() {
    let spec = create(&["nginx", "--replicas", "3"]).unwrap();
    assert_eq!(
        spec.task.unwrap().container.unwrap().args,
        ["--replicas", "3"]
    );
    assert_eq!(
        spec.mode,
        Some(Mode::Replicated(ReplicatedMode { replicas: 1 }))
    );
}

#[test]
fn create_refuses_bad_combinations_with_their_message() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--mode", "global", "--replicas", "2", "nginx"],
            "replicas can only be used with replicated mode",
        ),
        (
            &["--reserve-memory", "1G", "--limit-memory", "512M", "nginx"],
            "the memory reservation (1GiB) is more than the memory limit (512MiB): lower --reserve-memory or raise --limit-memory",
        ),
        (
            &["--reserve-cpu", "2", "--limit-cpu", "1", "nginx"],
            "the CPU reservation (2) is more than the CPU limit (1): lower --reserve-cpu or raise --limit-cpu",
        ),
        (
            &["-p", "8080:80", "-p", "8080:81", "nginx"],
            "port 8080/tcp is published twice: publish each port once",
        ),
    ];
    for (args, want) in cases {
        let err = create(args).expect_err(&format!("{args:?}"));
        assert_eq!(err.to_string(), *want, "{args:?}");
    }
}

#[test]
fn clap_refuses_bad_values_naming_the_flag() {
    let cases: &[(&[&str], &str)] = &[
        (&["--replicas", "-1", "nginx"], "it cannot be negative"),
        (&["--limit-memory", "lots", "nginx"], "invalid memory size"),
        (&["--reserve-cpu", "-0.5", "nginx"], "invalid CPU count"),
        (&["--restart-delay", "5", "nginx"], "invalid duration"),
        (&["--update-delay", "-1s", "nginx"], "invalid duration"),
        (
            &["--mode", "batch", "nginx"],
            "invalid value 'batch' for '--mode <MODE>'",
        ),
        (&["--driver", "vm", "nginx"], "invalid value 'vm'"),
        (
            &["--restart-condition", "always", "nginx"],
            "[possible values: none, on-failure, any]",
        ),
        (
            &["--rollback-failure-action", "rollback", "nginx"],
            "[possible values: pause, continue]",
        ),
        (
            &["--update-order", "random", "nginx"],
            "[possible values: stop-first, start-first]",
        ),
        (
            &["-p", "published=80,target=80,mode=ingress", "nginx"],
            "routing mesh is not available yet",
        ),
        (&["-e", "=x", "nginx"], "invalid environment variable"),
        (&["--constraint", "zone=a", "nginx"], "invalid constraint"),
        (
            &["--placement-pref", "binpack=x", "nginx"],
            "only spread is supported",
        ),
        (
            &["--stop-signal", "KILLME!", "nginx"],
            "invalid stop signal",
        ),
        (
            &["--update-max-failure-ratio", "2", "nginx"],
            "between 0 and 1",
        ),
        (&["--name", "web"], "required arguments were not provided"),
    ];
    for (args, want) in cases {
        let err = CreateCli::try_parse_from(std::iter::once("create").chain(args.iter().copied()))
            .expect_err(&format!("{args:?}"));
        let text = err.to_string();
        assert!(text.contains(want), "{args:?}: {text}");
    }
}

/// A running service's spec for the update tests.
fn deployed() -> ServiceSpec {
    create(&[
        "--name",
        "web",
        "--replicas",
        "2",
        "-e",
        "A=1",
        "-e",
        "B=2",
        "-l",
        "tier=web",
        "--constraint",
        "node.role==worker",
        "--placement-pref",
        "spread=node.labels.zone",
        "-p",
        "8080:80",
        "-p",
        "9090:90/udp",
        "nginx:1.25",
        "nginx",
        "-g",
        "daemon off;",
    ])
    .unwrap()
}

/// One row per update flag that is not also a create flag: the flags, and
/// what they change in `deployed()`.
const UPDATE_CASES: &[(&[&str], Edit)] = &[
    (&[], |_| {}),
    (&["--image", "nginx:1.27"], |s| {
        container(s).image = "nginx:1.27".into()
    }),
    (
        &["--args", "nginx -g 'daemon off; worker_processes 2;'"],
        |s| {
            container(s).args = vec![
                "nginx".into(),
                "-g".into(),
                "daemon off; worker_processes 2;".into(),
            ]
        },
    ),
    (&["--args", ""], |s| container(s).args = vec![]),
    (&["--env-add", "C=3", "--env-add", "A=9"], |s| {
        container(s).env = vec!["A=9".into(), "B=2".into(), "C=3".into()]
    }),
    (&["--env-rm", "A"], |s| {
        container(s).env = vec!["B=2".into()]
    }),
    (&["--env-rm", "A", "--env-add", "A=5"], |s| {
        container(s).env = vec!["B=2".into(), "A=5".into()]
    }),
    (&["--env-rm", "MISSING"], |_| {}),
    (&["--label-add", "team=a", "--label-rm", "tier"], |s| {
        let labels = &mut s.annotations.get_or_insert_with(Default::default).labels;
        labels.remove("tier");
        labels.insert("team".into(), "a".into());
    }),
    (&["--constraint-add", "node.labels.ssd==true"], |s| {
        placement(s)
            .constraints
            .push("node.labels.ssd==true".into())
    }),
    (&["--constraint-add", "node.role==worker"], |_| {}),
    (&["--constraint-rm", "node.role==worker"], |s| {
        placement(s).constraints.clear()
    }),
    (&["--placement-pref-rm", "spread=node.labels.zone"], |s| {
        placement(s).preferences.clear()
    }),
    (&["--placement-pref-add", "spread=node.labels.rack"], |s| {
        placement(s).preferences.push(PlacementPreference {
            spread: "node.labels.rack".into(),
        })
    }),
    (&["--publish-rm", "80"], |s| {
        s.endpoint
            .get_or_insert_with(Default::default)
            .ports
            .remove(0);
    }),
    (&["--publish-rm", "90/udp"], |s| {
        s.endpoint
            .get_or_insert_with(Default::default)
            .ports
            .remove(1);
    }),
    (&["--publish-rm", "90"], |_| {}),
    (&["--publish-rm", "7070:80"], |_| {}),
    (&["--publish-add", "8443:443"], |s| {
        s.endpoint
            .get_or_insert_with(Default::default)
            .ports
            .push(host_port(8443, 443))
    }),
    (&["--publish-add", "8080:8000"], |s| {
        let ports = &mut s.endpoint.get_or_insert_with(Default::default).ports;
        ports.remove(0);
        ports.push(host_port(8080, 8000));
    }),
    (&["--force"], |s| task(s).force_update = 1),
    (&["--replicas", "5"], |s| {
        s.mode = Some(Mode::Replicated(ReplicatedMode { replicas: 5 }))
    }),
    (&["--limit-memory", "256m", "--limit-cpu", "0.25"], |s| {
        resources(s).limits = Some(Resources {
            nano_cpus: 250_000_000,
            memory_bytes: 256 << 20,
        })
    }),
    (
        &["--update-delay", "10s", "--update-order", "start-first"],
        |s| {
            let config = update_config(s);
            config.delay_ms = 10_000;
            config.order = UpdateOrder::StartFirst as i32;
        },
    ),
    (&["--rebalance"], |_| {}),
];

#[test]
fn every_update_flag_edits_its_field() {
    for (flags, edit) in UPDATE_CASES {
        let got = match update(&deployed(), flags) {
            Ok(spec) => spec,
            Err(e) => panic!("{flags:?}: {e}"),
        };
        let mut want = deployed();
        edit(&mut want);
        assert_eq!(got, want, "{flags:?}");
    }
}

#[test]
fn update_keeps_fields_it_was_not_told_to_change() {
    let mut spec = deployed();
    update_config(&mut spec).delay_ms = 7_000;
    restart(&mut spec).max_attempts = 4;
    let got = update(&spec, &["--update-parallelism", "3"]).unwrap();
    let config = got.update.unwrap();
    assert_eq!(config.delay_ms, 7_000);
    assert_eq!(config.parallelism, Some(3));
    assert_eq!(got.task.unwrap().restart.unwrap().max_attempts, 4);
}

#[test]
fn force_bumps_the_counter_each_time() {
    let once = update(&deployed(), &["--force"]).unwrap();
    let twice = update(&once, &["--force"]).unwrap();
    assert_eq!(twice.task.unwrap().force_update, 2);
}

#[test]
fn update_refuses_what_the_service_cannot_take() {
    let global = create(&["--mode", "global", "nginx"]).unwrap();
    let err = update(&global, &["--replicas", "3"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "replicas can only be used with replicated mode"
    );

    let process = create(&["--driver", "process", "/bin/true"]).unwrap();
    let err = update(&process, &["--image", "nginx"]).unwrap_err();
    assert!(
        err.to_string()
            .contains("--image cannot be used with the process driver")
    );
    let err = update(&process, &["--args", ""]).unwrap_err();
    assert!(
        err.to_string()
            .contains("the process driver needs a command")
    );

    let err = update(&deployed(), &["--image", " "]).unwrap_err();
    assert_eq!(err.to_string(), "the image cannot be empty");
}

fn service(spec: ServiceSpec) -> Service {
    Service {
        meta: Some(Meta {
            id: "svc1".into(),
            version: 42,
            ..Default::default()
        }),
        spec: Some(spec),
        ..Default::default()
    }
}

#[test]
fn the_request_carries_the_version_read_and_the_new_spec() {
    let req = update_flags(&["--replicas", "4", "--rebalance"])
        .request(&service(deployed()))
        .unwrap();
    assert_eq!(req.service_id, "svc1");
    assert_eq!(req.version, 42);
    assert!(req.rebalance);
    assert!(!req.rollback);
    assert_eq!(
        req.spec.unwrap().mode,
        Some(Mode::Replicated(ReplicatedMode { replicas: 4 }))
    );
}

#[test]
fn rollback_sends_no_spec_and_takes_no_other_change() {
    let req = update_flags(&["--rollback"])
        .request(&service(deployed()))
        .unwrap();
    assert!(req.rollback);
    assert_eq!(req.spec, None);
    assert_eq!(req.version, 42);

    let err = update_flags(&["--rollback", "--image", "nginx:2"])
        .request(&service(deployed()))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "--rollback cannot be combined with other changes: roll back first, then update"
    );
    let err = update_flags(&["--rollback", "--force"])
        .request(&service(deployed()))
        .unwrap_err();
    assert!(err.to_string().starts_with("--rollback cannot be combined"));
}
