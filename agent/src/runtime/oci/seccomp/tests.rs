//! What the default seccomp filter decides, pinned: the syscalls and
//! arguments Docker's default policy denies stay denied, those it allows
//! (alone or with a capability) stay allowed. A small evaluator applies the
//! filter as the kernel does (a rule matches when all its argument checks
//! hold; an allowing rule wins; else the errno rule; else the default).

use serde_json::Value;

use super::*;

fn allowed(filter: &Value, name: &str) -> bool {
    filter["syscalls"].as_array().unwrap().iter().any(|s| {
        s["action"] == "SCMP_ACT_ALLOW"
            && s["names"].as_array().unwrap().iter().any(|n| n == name)
            && s.get("args").is_none()
    })
}

#[test]
fn the_profile_denies_by_default_and_allows_ordinary_syscalls() {
    let caps = vec!["CAP_CHOWN".to_string()];
    let filter = default_filter("x86_64", &caps).unwrap();
    assert_eq!(filter["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(filter["defaultErrnoRet"], 1);
    assert_eq!(filter["architectures"][0], "SCMP_ARCH_X86_64");
    for name in ["read", "execve", "openat", "arch_prctl"] {
        assert!(allowed(&filter, name), "{name}");
    }
    for name in [
        "mount",
        "unshare",
        "reboot",
        "bpf",
        "arm_fadvise64_64",
        "chroot",
    ] {
        assert!(!allowed(&filter, name), "{name}");
    }
}

#[test]
fn capabilities_open_their_syscalls() {
    let caps: Vec<String> = ["CAP_SYS_ADMIN", "CAP_SYS_CHROOT"]
        .iter()
        .map(|c| c.to_string())
        .collect();
    let filter = default_filter("x86_64", &caps).unwrap();
    assert!(allowed(&filter, "mount") && allowed(&filter, "chroot"));
    assert!(
        allowed(&filter, "clone"),
        "unconditional clone with SYS_ADMIN"
    );
    let without = default_filter("x86_64", &[]).unwrap();
    let clone3 = without["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["names"][0] == "clone3")
        .unwrap();
    assert_eq!(clone3["errnoRet"], 38);
}

/// What the filter does with a call.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    Allow,
    Errno(u64),
}

fn arg_holds(check: &Value, args: &[u64]) -> bool {
    let index = check["index"].as_u64().unwrap() as usize;
    let actual = args.get(index).copied().unwrap_or(0);
    let value = check["value"].as_u64().unwrap();
    match check["op"].as_str().unwrap() {
        "SCMP_CMP_EQ" => actual == value,
        "SCMP_CMP_NE" => actual != value,
        "SCMP_CMP_LT" => actual < value,
        "SCMP_CMP_GT" => actual > value,
        "SCMP_CMP_MASKED_EQ" => actual & value == check["valueTwo"].as_u64().unwrap(),
        op => panic!("the evaluator does not know {op}"),
    }
}

fn decide(filter: &Value, name: &str, args: &[u64]) -> Decision {
    let mut errno = None;
    for rule in filter["syscalls"].as_array().unwrap() {
        let named = rule["names"].as_array().unwrap().iter().any(|n| n == name);
        let checks = rule["args"].as_array().cloned().unwrap_or_default();
        if !named || !checks.iter().all(|c| arg_holds(c, args)) {
            continue;
        }
        match rule["action"].as_str().unwrap() {
            "SCMP_ACT_ALLOW" => return Decision::Allow,
            _ => errno = rule["errnoRet"].as_u64(),
        }
    }
    Decision::Errno(errno.unwrap_or_else(|| filter["defaultErrnoRet"].as_u64().unwrap()))
}

fn docker_defaults_with(extra: &[&str]) -> Vec<String> {
    crate::runtime::oci::DEFAULT_CAPABILITIES
        .iter()
        .chain(extra)
        .map(|c| c.to_string())
        .collect()
}

const EPERM: Decision = Decision::Errno(1);
const ENOSYS: Decision = Decision::Errno(38);
/// The namespace flags of clone(2) Docker's policy refuses without
/// CAP_SYS_ADMIN, and a thread's ordinary flags.
const CLONE_NEWUSER: u64 = 0x1000_0000;
const CLONE_NEWNS: u64 = 0x0002_0000;
const CLONE_THREAD_FLAGS: u64 = 0x003d_0f00;
const AF_INET: u64 = 2;
const AF_ALG: u64 = 38;
const AF_NFC: u64 = 39;
const AF_VSOCK: u64 = 40;
const AF_XDP: u64 = 44;

#[test]
fn the_default_container_gets_dockers_decisions() {
    let filter = default_filter("x86_64", &docker_defaults_with(&[])).unwrap();
    let decide = |name: &str, args: &[u64]| decide(&filter, name, args);
    for name in [
        "read",
        "write",
        "openat",
        "execve",
        "futex",
        "statx",
        "chroot",
        "ptrace",
        "process_vm_readv",
        "name_to_handle_at",
        "arch_prctl",
        "mseal",
    ] {
        assert_eq!(decide(name, &[]), Decision::Allow, "{name} is allowed");
    }
    for name in [
        "mount",
        "umount2",
        "unshare",
        "setns",
        "kexec_load",
        "bpf",
        "reboot",
        "init_module",
        "open_by_handle_at",
        "clock_settime",
        "settimeofday",
        "perf_event_open",
        "syslog",
        "acct",
        "iopl",
        "io_uring_setup",
        "userfaultfd",
        "keyctl",
        "add_key",
        "lsm_set_self_attr",
        "kcmp",
        "pidfd_getfd",
        "vhangup",
        "mbind",
    ] {
        assert_eq!(decide(name, &[]), EPERM, "{name} is denied");
    }
    assert_eq!(decide("clone", &[CLONE_THREAD_FLAGS]), Decision::Allow);
    assert_eq!(
        decide("clone", &[CLONE_NEWUSER]),
        EPERM,
        "no new user namespace"
    );
    assert_eq!(decide("clone", &[CLONE_NEWNS | CLONE_THREAD_FLAGS]), EPERM);
    assert_eq!(decide("clone3", &[]), ENOSYS, "libc falls back to clone");
    for family in [AF_INET, AF_NFC, AF_XDP] {
        assert_eq!(
            decide("socket", &[family]),
            Decision::Allow,
            "family {family}"
        );
    }
    for family in [AF_ALG, AF_VSOCK] {
        assert_eq!(decide("socket", &[family]), EPERM, "family {family}");
    }
    for persona in [0, 8, 0x2_0000, 0x2_0008, 0xffff_ffff] {
        assert_eq!(
            decide("personality", &[persona]),
            Decision::Allow,
            "{persona:#x}"
        );
    }
    assert_eq!(
        decide("personality", &[0x0040_0000]),
        EPERM,
        "READ_IMPLIES_EXEC"
    );
}

#[test]
fn capabilities_open_the_syscalls_docker_gates_on_them() {
    let with = |cap: &str| default_filter("x86_64", &docker_defaults_with(&[cap])).unwrap();
    let cases: [(&str, &[&str]); 8] = [
        (
            "CAP_SYS_TIME",
            &["clock_settime", "settimeofday", "clock_settime64"],
        ),
        (
            "CAP_SYS_PTRACE",
            &["kcmp", "pidfd_getfd", "process_madvise"],
        ),
        (
            "CAP_SYS_MODULE",
            &["init_module", "finit_module", "delete_module"],
        ),
        ("CAP_SYS_BOOT", &["reboot"]),
        ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
        ("CAP_BPF", &["bpf"]),
        ("CAP_PERFMON", &["perf_event_open"]),
        ("CAP_SYS_NICE", &["mbind", "set_mempolicy"]),
    ];
    for (cap, names) in cases {
        let filter = with(cap);
        for name in names {
            assert_eq!(
                decide(&filter, name, &[]),
                Decision::Allow,
                "{name} with {cap}"
            );
        }
    }
    let admin = with("CAP_SYS_ADMIN");
    for name in [
        "mount",
        "unshare",
        "setns",
        "bpf",
        "lsm_set_self_attr",
        "clone3",
    ] {
        assert_eq!(
            decide(&admin, name, &[]),
            Decision::Allow,
            "{name} with CAP_SYS_ADMIN"
        );
    }
    assert_eq!(decide(&admin, "clone", &[CLONE_NEWUSER]), Decision::Allow);
    assert_eq!(decide(&admin, "kexec_load", &[]), EPERM, "never allowed");
}
