//! From a task's container spec and its image's config to the OCI runtime
//! spec (`config.json`) runc runs: pure functions, no I/O, so that every
//! Docker default and combination rule is tested without a container.
//!
//! What Docker does and rswarm copies: the command replaces the image's
//! entrypoint (and drops its cmd), the args replace its cmd; the spec's env
//! wins over the image's; the default capability set, seccomp filter,
//! masked and read-only /proc paths and default mounts; no new privileges.

use std::collections::BTreeMap;

use rswarm_proto::container::{SysctlScope, ULIMIT_NAMES, sysctl_scope};
use rswarm_proto::{ContainerSpec, Ulimit};

use super::error::OciError;
use super::image::ImageRuntimeConfig;
use super::runtime_spec::{
    Capabilities, Cpu, DeviceRule, Linux, Memory, Mount, Namespace, OCI_VERSION, Pids, Process,
    Resources, Rlimit, Root, RuntimeSpec, User,
};
use crate::runtime::cgroup::{CPU_PERIOD_US, TaskLimits};
use crate::runtime::limits::{CONTAINER_SHM_BYTES, DEFAULT_PATH};

/// Where `--init` puts tini inside the container (Docker's path).
pub const INIT_TARGET: &str = "/sbin/docker-init";

/// Length of a hostname made from a task id (Docker's short id).
const HOSTNAME_FROM_ID_CHARS: usize = 12;

/// Docker's masked /proc and /sys paths.
const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Docker's read-only /proc paths.
const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The user a container runs as, resolved against its root filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub home: String,
}

impl ContainerUser {
    /// root, with /root as home.
    pub fn root() -> Self {
        Self {
            uid: 0,
            gid: 0,
            additional_gids: Vec::new(),
            home: "/root".to_string(),
        }
    }
}

/// Everything `build` needs, resolved by the driver.
#[derive(Debug, Clone)]
pub struct BundlePlan<'a> {
    pub task_id: &'a str,
    pub container: &'a ContainerSpec,
    pub image: &'a ImageRuntimeConfig,
    pub user: ContainerUser,
    pub limits: TaskLimits,
    /// The root filesystem (the overlay mount), absolute.
    pub rootfs: String,
    /// Mounts the driver resolved (spec mounts, volumes, secrets, /etc
    /// files), added after the default ones.
    pub mounts: Vec<Mount>,
    pub cgroups_path: String,
    /// `std::env::consts::ARCH`, for the seccomp filter.
    pub arch: &'a str,
}

/// The runtime spec of the container `plan` describes.
pub fn build(plan: &BundlePlan<'_>) -> Result<RuntimeSpec, OciError> {
    let container = plan.container;
    let host_network = host_network(&container.network_mode)?;
    let hostname = hostname(container, plan.task_id);
    let capabilities = super::capabilities::effective(&container.cap_add, &container.cap_drop)?;
    let seccomp = super::seccomp::default_filter(plan.arch, &capabilities)?;
    let mut mounts = default_mounts(host_network);
    mounts.extend(plan.mounts.iter().cloned());
    Ok(RuntimeSpec {
        oci_version: OCI_VERSION.to_string(),
        process: Process {
            terminal: false,
            user: User {
                uid: plan.user.uid,
                gid: plan.user.gid,
                additional_gids: plan.user.additional_gids.clone(),
            },
            args: process_args(container, plan.image)?,
            env: process_env(&plan.image.env, &container.env, &hostname, &plan.user.home)?,
            cwd: working_dir(container, plan.image)?,
            capabilities: Capabilities {
                bounding: capabilities.clone(),
                effective: capabilities.clone(),
                permitted: capabilities,
            },
            rlimits: rlimits(&container.ulimits)?,
            no_new_privileges: true,
        },
        root: Root {
            path: plan.rootfs.clone(),
            readonly: container.read_only,
        },
        hostname,
        mounts,
        linux: Linux {
            namespaces: namespaces(host_network),
            resources: resources(&plan.limits),
            cgroups_path: plan.cgroups_path.clone(),
            sysctl: sysctls(&container.sysctls, host_network)?,
            seccomp,
            masked_paths: MASKED_PATHS.iter().map(|p| p.to_string()).collect(),
            readonly_paths: READONLY_PATHS.iter().map(|p| p.to_string()).collect(),
        },
    })
}

/// The command line, as Docker combines the image's entrypoint and cmd
/// with the spec's command (replaces the entrypoint and drops the image's
/// cmd) and args (replace the cmd); `--init` puts tini in front.
pub fn process_args(
    container: &ContainerSpec,
    image: &ImageRuntimeConfig,
) -> Result<Vec<String>, OciError> {
    let (entrypoint, cmd): (&[String], &[String]) =
        match (container.command.is_empty(), container.args.is_empty()) {
            (true, true) => (&image.entrypoint, &image.cmd),
            (true, false) => (&image.entrypoint, &container.args),
            (false, _) => (&container.command, &container.args),
        };
    let mut args: Vec<String> = entrypoint.iter().chain(cmd).cloned().collect();
    if args.first().is_none_or(String::is_empty) {
        return Err(OciError::NoCommand);
    }
    if container.init {
        args.splice(0..0, [INIT_TARGET.to_string(), "--".to_string()]);
    }
    Ok(args)
}

/// The environment: PATH (Docker's default unless set), HOSTNAME, HOME
/// (the user's, unless set), the image's entries, then the spec's; a later
/// entry replaces an earlier one with the same key, in its place.
pub fn process_env(
    image_env: &[String],
    spec_env: &[String],
    hostname: &str,
    home: &str,
) -> Result<Vec<String>, OciError> {
    let mut env: Vec<String> = vec![
        format!("PATH={DEFAULT_PATH}"),
        format!("HOSTNAME={hostname}"),
        format!("HOME={home}"),
    ];
    for entry in image_env.iter().chain(spec_env) {
        let key = match entry.split_once('=') {
            Some((key, _)) if !key.is_empty() && !entry.contains('\0') => key,
            _ => {
                return Err(OciError::BadEnv {
                    entry: entry.clone(),
                });
            }
        };
        let prefix = format!("{key}=");
        match env
            .iter_mut()
            .find(|existing| existing.starts_with(&prefix))
        {
            Some(existing) => existing.clone_from(entry),
            None => env.push(entry.clone()),
        }
    }
    Ok(env)
}

/// The spec's working directory, else the image's, else `/`.
pub fn working_dir(
    container: &ContainerSpec,
    image: &ImageRuntimeConfig,
) -> Result<String, OciError> {
    let dir = [&container.dir, &image.working_dir]
        .into_iter()
        .find(|d| !d.is_empty())
        .map_or("/", String::as_str);
    if dir.starts_with('/') {
        Ok(dir.to_string())
    } else {
        Err(OciError::BadWorkdir {
            dir: dir.to_string(),
        })
    }
}

/// The spec's hostname, else the task id's first 12 characters.
pub fn hostname(container: &ContainerSpec, task_id: &str) -> String {
    if container.hostname.is_empty() {
        task_id.chars().take(HOSTNAME_FROM_ID_CHARS).collect()
    } else {
        container.hostname.clone()
    }
}

/// Whether the container uses the node's network namespace; anything but
/// host and none is refused until overlay networks exist.
pub fn host_network(mode: &str) -> Result<bool, OciError> {
    match mode {
        "" | "none" => Ok(false),
        "host" => Ok(true),
        other => Err(OciError::NetworkMode {
            mode: other.to_string(),
        }),
    }
}

/// `RLIMIT_*` entries from the spec's ulimits.
pub fn rlimits(ulimits: &[Ulimit]) -> Result<Vec<Rlimit>, OciError> {
    ulimits
        .iter()
        .map(|ulimit| {
            let name = ulimit.name.to_ascii_lowercase();
            if !ULIMIT_NAMES.contains(&name.as_str()) {
                return Err(OciError::UnknownUlimit {
                    name: ulimit.name.clone(),
                    known: ULIMIT_NAMES.join(", "),
                });
            }
            let bad = || OciError::BadUlimit {
                name: name.clone(),
                soft: ulimit.soft,
                hard: ulimit.hard,
            };
            let soft = u64::try_from(ulimit.soft).map_err(|_| bad())?;
            let hard = u64::try_from(ulimit.hard).map_err(|_| bad())?;
            if soft > hard {
                return Err(bad());
            }
            Ok(Rlimit {
                kind: format!("RLIMIT_{}", name.to_ascii_uppercase()),
                hard,
                soft,
            })
        })
        .collect()
}

/// The spec's sysctls, each checked to be namespaced (and a `net.*` one
/// only with the container's own network namespace).
pub fn sysctls(
    requested: &BTreeMap<String, String>,
    host_network: bool,
) -> Result<BTreeMap<String, String>, OciError> {
    let mut checked = BTreeMap::new();
    for (name, value) in requested {
        let refuse = |reason| OciError::Sysctl {
            name: name.clone(),
            reason,
        };
        let scope = sysctl_scope(name);
        if scope == SysctlScope::Network && host_network {
            return Err(refuse(
                "net.* sysctls would change the node's network namespace; drop --network host",
            ));
        } else if scope == SysctlScope::Node {
            return Err(refuse(
                "it is not namespaced, so it would change the whole node; only net.*, kernel.msg*, kernel.sem, kernel.shm* and fs.mqueue.* are allowed",
            ));
        }
        checked.insert(name.clone(), value.clone());
    }
    Ok(checked)
}

/// The namespaces: pid, ipc, uts, mount, and network unless the node's.
fn namespaces(host_network: bool) -> Vec<Namespace> {
    let mut kinds = vec!["pid", "ipc", "uts", "mount"];
    if !host_network {
        kinds.push("network");
    }
    kinds
        .into_iter()
        .map(|kind| Namespace {
            kind: kind.to_string(),
        })
        .collect()
}

/// `linux.resources`: all devices denied but runc's standard ones, and the
/// task's limits.
pub fn resources(limits: &TaskLimits) -> Resources {
    Resources {
        devices: vec![DeviceRule {
            allow: false,
            access: "rwm".to_string(),
        }],
        memory: (limits.memory_bytes > 0).then_some(Memory {
            limit: limits.memory_bytes,
        }),
        cpu: (limits.nano_cpus > 0).then(|| Cpu {
            quota: limits.cpu_quota_us(),
            period: CPU_PERIOD_US.unsigned_abs(),
        }),
        pids: (limits.pids > 0).then_some(Pids { limit: limits.pids }),
    }
}

fn mount(destination: &str, kind: &str, source: &str, options: &[&str]) -> Mount {
    Mount {
        destination: destination.to_string(),
        kind: kind.to_string(),
        source: source.to_string(),
        options: options.iter().map(|o| o.to_string()).collect(),
    }
}

/// Docker's default mounts. With the node's network namespace, /sys is a
/// read-only bind of the node's (a new sysfs needs an own one).
pub fn default_mounts(host_network: bool) -> Vec<Mount> {
    let shm_size = format!("size={CONTAINER_SHM_BYTES}");
    let sys = if host_network {
        mount(
            "/sys",
            "bind",
            "/sys",
            &["rbind", "nosuid", "noexec", "nodev", "ro"],
        )
    } else {
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )
    };
    vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        sys,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", &shm_size],
        ),
    ]
}

#[cfg(test)]
mod tests;
