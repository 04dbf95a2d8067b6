//! Bundle generation as data: Docker's combination rules and defaults.

use super::*;

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn image() -> ImageRuntimeConfig {
    ImageRuntimeConfig {
        entrypoint: strings(&["/entry"]),
        cmd: strings(&["serve", "--port", "80"]),
        env: strings(&["PATH=/image/bin", "MODE=image"]),
        ..ImageRuntimeConfig::default()
    }
}

fn plan<'a>(container: &'a ContainerSpec, image: &'a ImageRuntimeConfig) -> BundlePlan<'a> {
    BundlePlan {
        task_id: "abcdefghijklmnopqrstuvwxy",
        container,
        image,
        user: ContainerUser::root(),
        limits: TaskLimits::default(),
        rootfs: "/tasks/t/rootfs".into(),
        mounts: Vec::new(),
        cgroups_path: "/rswarm/t".into(),
        arch: "x86_64",
    }
}

#[test]
fn args_combine_entrypoint_and_cmd_as_docker() {
    let image = image();
    let spec = |command: &[&str], args: &[&str]| ContainerSpec {
        command: strings(command),
        args: strings(args),
        ..ContainerSpec::default()
    };
    let cases: Vec<(ContainerSpec, &[&str])> = vec![
        (spec(&[], &[]), &["/entry", "serve", "--port", "80"]),
        (spec(&[], &["other"]), &["/entry", "other"]),
        (spec(&["/bin/sh"], &[]), &["/bin/sh"]),
        (spec(&["/bin/sh"], &["-c", "x"]), &["/bin/sh", "-c", "x"]),
    ];
    for (container, expected) in cases {
        assert_eq!(
            process_args(&container, &image).unwrap(),
            expected,
            "{container:?}"
        );
    }
    let init = ContainerSpec {
        init: true,
        ..spec(&[], &[])
    };
    assert_eq!(
        process_args(&init, &image).unwrap()[..3],
        strings(&[INIT_TARGET, "--", "/entry"])
    );
    let err = process_args(&ContainerSpec::default(), &ImageRuntimeConfig::default()).unwrap_err();
    assert!(
        err.rejects_task() && err.to_string().contains("give one"),
        "{err}"
    );
}

#[test]
fn env_merges_defaults_image_and_spec_in_that_order() {
    let env = process_env(
        &strings(&["PATH=/image/bin", "MODE=image", "KEEP=1"]),
        &strings(&["MODE=spec", "NEW=x=y"]),
        "web-1",
        "/root",
    )
    .unwrap();
    assert_eq!(
        env,
        strings(&[
            "PATH=/image/bin",
            "HOSTNAME=web-1",
            "HOME=/root",
            "MODE=spec",
            "KEEP=1",
            "NEW=x=y"
        ])
    );
    assert!(process_env(&[], &strings(&["NOEQUALS"]), "h", "/").is_err());
}

#[test]
fn workdir_and_hostname_fall_back_like_docker() {
    let mut image = image();
    let container = ContainerSpec::default();
    assert_eq!(working_dir(&container, &image).unwrap(), "/");
    image.working_dir = "/srv".into();
    assert_eq!(working_dir(&container, &image).unwrap(), "/srv");
    let relative = ContainerSpec {
        dir: "srv".into(),
        ..ContainerSpec::default()
    };
    assert!(working_dir(&relative, &image).unwrap_err().rejects_task());
    assert_eq!(hostname(&container, "abcdefghijklmnop"), "abcdefghijkl");
    let named = ContainerSpec {
        hostname: "db".into(),
        ..ContainerSpec::default()
    };
    assert_eq!(hostname(&named, "abcdefghijklmnop"), "db");
}

#[test]
fn the_bundle_has_dockers_security_defaults() {
    let container = ContainerSpec::default();
    let image = image();
    let spec = build(&plan(&container, &image)).unwrap();
    assert!(spec.process.no_new_privileges);
    assert!(!spec.process.terminal);
    assert_eq!(spec.process.capabilities.bounding.len(), 14);
    assert_eq!(spec.linux.seccomp["defaultAction"], "SCMP_ACT_ERRNO");
    assert!(spec.linux.masked_paths.contains(&"/proc/kcore".to_string()));
    assert!(spec.linux.readonly_paths.contains(&"/proc/sys".to_string()));
    let kinds: Vec<&str> = spec
        .linux
        .namespaces
        .iter()
        .map(|n| n.kind.as_str())
        .collect();
    assert_eq!(kinds, ["pid", "ipc", "uts", "mount", "network"]);
    assert_eq!(spec.hostname, "abcdefghijkl");
    assert_eq!(spec.linux.cgroups_path, "/rswarm/t");
    let shm = spec
        .mounts
        .iter()
        .find(|m| m.destination == "/dev/shm")
        .unwrap();
    assert!(shm.options.contains(&"size=67108864".to_string()));
    let json = serde_json::to_value(&spec).unwrap();
    assert_eq!(json["process"]["noNewPrivileges"], true);
    assert_eq!(json["linux"]["cgroupsPath"], "/rswarm/t");
    assert_eq!(json["ociVersion"], OCI_VERSION);
}

#[test]
fn host_network_shares_the_netns_and_binds_sys() {
    let container = ContainerSpec {
        network_mode: "host".into(),
        ..ContainerSpec::default()
    };
    let image = image();
    let spec = build(&plan(&container, &image)).unwrap();
    assert!(!spec.linux.namespaces.iter().any(|n| n.kind == "network"));
    let sys = spec
        .mounts
        .iter()
        .find(|m| m.destination == "/sys")
        .unwrap();
    assert_eq!(sys.kind, "bind");
    let overlay = ContainerSpec {
        network_mode: "web-net".into(),
        ..ContainerSpec::default()
    };
    let err = build(&plan(&overlay, &image)).unwrap_err();
    assert!(err.to_string().contains("use host or none"), "{err}");
}

#[test]
fn limits_become_resources() {
    let limits = TaskLimits {
        nano_cpus: 500_000_000,
        memory_bytes: 64 << 20,
        pids: 32,
    };
    let resources = resources(&limits);
    assert_eq!(resources.memory, Some(Memory { limit: 64 << 20 }));
    assert_eq!(
        resources.cpu,
        Some(Cpu {
            quota: 50_000,
            period: 100_000
        })
    );
    assert_eq!(resources.pids, Some(Pids { limit: 32 }));
    let none = super::resources(&TaskLimits::default());
    assert_eq!((none.memory, none.cpu, none.pids), (None, None, None));
    assert!(
        !none.devices[0].allow,
        "devices are denied but runc's defaults"
    );
}

#[test]
fn ulimits_become_rlimits_and_bad_ones_are_refused() {
    let ulimit = |name: &str, soft, hard| Ulimit {
        name: name.into(),
        soft,
        hard,
    };
    assert_eq!(
        rlimits(&[ulimit("nofile", 1024, 2048)]).unwrap(),
        [Rlimit {
            kind: "RLIMIT_NOFILE".into(),
            soft: 1024,
            hard: 2048
        }]
    );
    assert!(
        rlimits(&[ulimit("files", 1, 1)])
            .unwrap_err()
            .rejects_task()
    );
    assert!(rlimits(&[ulimit("nofile", 10, 5)]).is_err());
    assert!(rlimits(&[ulimit("nofile", -1, 5)]).is_err());
}

#[test]
fn only_namespaced_sysctls_pass() {
    let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let ok = sysctls(
        &map(&[
            ("net.core.somaxconn", "1024"),
            ("kernel.shmmax", "1"),
            ("fs.mqueue.msg_max", "5"),
        ]),
        false,
    )
    .unwrap();
    assert_eq!(ok.len(), 3);
    let err = sysctls(&map(&[("net.core.somaxconn", "1")]), true).unwrap_err();
    assert!(err.to_string().contains("--network host"), "{err}");
    let err = sysctls(&map(&[("vm.swappiness", "1")]), false).unwrap_err();
    assert!(
        err.rejects_task() && err.to_string().contains("not namespaced"),
        "{err}"
    );
}

#[test]
fn cap_changes_reach_the_bundle_and_the_filter() {
    let container = ContainerSpec {
        cap_add: strings(&["SYS_ADMIN"]),
        cap_drop: strings(&["NET_RAW"]),
        ..ContainerSpec::default()
    };
    let image = image();
    let spec = build(&plan(&container, &image)).unwrap();
    let caps = &spec.process.capabilities.effective;
    assert!(caps.contains(&"CAP_SYS_ADMIN".to_string()));
    assert!(!caps.contains(&"CAP_NET_RAW".to_string()));
    let mount_allowed = spec.linux.seccomp["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["names"].as_array().unwrap().iter().any(|n| n == "mount"));
    assert!(mount_allowed, "CAP_SYS_ADMIN opens mount in the filter");
}
