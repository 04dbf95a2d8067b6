//! Manager-side checks of a service's container fields (hostname, caps,
//! ulimits, sysctls, mounts, network mode): what is wrong whatever the
//! node, refused when the service is created or updated, so a user hears
//! it at once rather than from rejected tasks. What depends on a node (a
//! bind source that exists there, runc) is the oci driver's to check.

use std::collections::HashSet;

use rswarm_proto::container::{SysctlScope, ULIMIT_NAMES, sysctl_scope};
use rswarm_proto::{ContainerSpec, MountType};

/// Most mounts a service may have.
const MOUNTS_MAX: usize = 100;
/// Most ulimits, sysctls and capability changes each.
const SETTINGS_MAX: usize = 64;
/// Longest hostname (a DNS label).
const HOSTNAME_BYTES_MAX: usize = 63;

/// Checks the container fields of `c`; the error says what to fix.
pub fn check(c: &ContainerSpec) -> Result<(), String> {
    check_hostname(&c.hostname)?;
    let host_network = match c.network_mode.as_str() {
        "" | "none" => false,
        "host" => true,
        other => {
            return Err(format!(
                "network mode {other:?} is not available: overlay networks are not available yet; use host or none"
            ));
        }
    };
    for (what, count) in [
        ("--cap-add", c.cap_add.len()),
        ("--cap-drop", c.cap_drop.len()),
        ("--ulimit", c.ulimits.len()),
        ("--sysctl", c.sysctls.len()),
    ] {
        if count > SETTINGS_MAX {
            return Err(format!("too many {what} ({count}); at most {SETTINGS_MAX}"));
        }
    }
    for cap in c.cap_add.iter().chain(&c.cap_drop) {
        check_capability(cap)?;
    }
    check_ulimits(c)?;
    check_sysctls(c, host_network)?;
    check_mounts(c)
}

fn check_hostname(hostname: &str) -> Result<(), String> {
    let valid = hostname.len() <= HOSTNAME_BYTES_MAX
        && !hostname.starts_with('-')
        && hostname
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "hostname {hostname:?} is not valid: use up to {HOSTNAME_BYTES_MAX} letters, digits, '-' or '.'"
        ))
    }
}

fn check_capability(name: &str) -> Result<(), String> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    let valid = !bare.is_empty() && bare.bytes().all(|b| b.is_ascii_uppercase() || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a capability name; give one such as NET_ADMIN or CAP_NET_ADMIN, or ALL"
        ))
    }
}

fn check_ulimits(c: &ContainerSpec) -> Result<(), String> {
    let mut seen = HashSet::new();
    for ulimit in &c.ulimits {
        if !ULIMIT_NAMES.contains(&ulimit.name.as_str()) {
            return Err(format!(
                "ulimit {:?} is not known; use one of {}",
                ulimit.name,
                ULIMIT_NAMES.join(", ")
            ));
        }
        if ulimit.soft < 0 || ulimit.soft > ulimit.hard {
            return Err(format!(
                "ulimit {}: the soft limit {} must be between 0 and the hard limit {}",
                ulimit.name, ulimit.soft, ulimit.hard
            ));
        }
        if !seen.insert(&ulimit.name) {
            return Err(format!(
                "ulimit {} is given twice; give it once",
                ulimit.name
            ));
        }
    }
    Ok(())
}

fn check_sysctls(c: &ContainerSpec, host_network: bool) -> Result<(), String> {
    for name in c.sysctls.keys() {
        let scope = sysctl_scope(name);
        if scope == SysctlScope::Network && host_network {
            return Err(format!(
                "sysctl {name} would change the node's network with --network host; drop one of them"
            ));
        } else if scope == SysctlScope::Node {
            return Err(format!(
                "sysctl {name} is not namespaced and would change whole nodes; only net.*, kernel.msg*, kernel.sem, kernel.shm* and fs.mqueue.* are allowed"
            ));
        }
    }
    Ok(())
}

fn check_mounts(c: &ContainerSpec) -> Result<(), String> {
    if c.mounts.len() > MOUNTS_MAX {
        return Err(format!(
            "too many mounts ({}); at most {MOUNTS_MAX}",
            c.mounts.len()
        ));
    }
    let mut targets = HashSet::new();
    for mount in &c.mounts {
        let target = mount.target.trim_end_matches('/');
        if !mount.target.starts_with('/') {
            return Err(format!(
                "mount target {:?} must be an absolute path",
                mount.target
            ));
        }
        if !targets.insert(target.to_string()) {
            return Err(format!(
                "two mounts have the target {target}; give each its own"
            ));
        }
        let kind = MountType::try_from(mount.r#type)
            .map_err(|_| format!("mount at {target}: unknown type {}", mount.r#type))?;
        if kind != MountType::Tmpfs && (mount.tmpfs_size_bytes != 0 || mount.tmpfs_mode != 0) {
            return Err(format!(
                "mount at {target}: tmpfs-size and tmpfs-mode are for tmpfs mounts"
            ));
        }
        match kind {
            MountType::Bind if !mount.source.starts_with('/') => {
                return Err(format!(
                    "mount at {target}: a bind source must be an absolute path on the nodes (got {:?})",
                    mount.source
                ));
            }
            MountType::Volume if !mount.source.is_empty() && !volume_name_ok(&mount.source) => {
                return Err(format!(
                    "mount at {target}: volume name {:?} is not valid; use letters, digits, '_', '.' or '-', starting with a letter or digit",
                    mount.source
                ));
            }
            MountType::Tmpfs if mount.tmpfs_size_bytes < 0 => {
                return Err(format!(
                    "mount at {target}: the tmpfs size must not be negative"
                ));
            }
            MountType::Tmpfs if !mount.source.is_empty() => {
                return Err(format!("mount at {target}: a tmpfs mount takes no source"));
            }
            _ => {}
        }
    }
    Ok(())
}

fn volume_name_ok(name: &str) -> bool {
    name.len() <= 64
        && name
            .as_bytes()
            .first()
            .is_some_and(u8::is_ascii_alphanumeric)
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rswarm_proto::{Mount, Ulimit};

    fn mount(kind: MountType, source: &str, target: &str) -> Mount {
        Mount {
            r#type: kind as i32,
            source: source.into(),
            target: target.into(),
            ..Mount::default()
        }
    }

    #[test]
    fn good_container_fields_pass() {
        let c = ContainerSpec {
            hostname: "web-1".into(),
            cap_add: vec!["NET_ADMIN".into(), "cap_sys_time".into()],
            cap_drop: vec!["ALL".into()],
            ulimits: vec![Ulimit {
                name: "nofile".into(),
                soft: 1024,
                hard: 2048,
            }],
            sysctls: [("net.core.somaxconn".to_string(), "1024".to_string())].into(),
            mounts: vec![
                mount(MountType::Bind, "/srv", "/data"),
                mount(MountType::Volume, "db", "/var/lib/db"),
                mount(MountType::Volume, "", "/cache"),
                mount(MountType::Tmpfs, "", "/tmp"),
            ],
            network_mode: "none".into(),
            ..ContainerSpec::default()
        };
        assert_eq!(check(&c), Ok(()));
    }

    #[test]
    fn bad_container_fields_are_refused_with_the_fix() {
        let base = ContainerSpec::default;
        let cases: Vec<(ContainerSpec, &str)> = vec![
            (
                ContainerSpec {
                    network_mode: "frontend".into(),
                    ..base()
                },
                "use host or none",
            ),
            (
                ContainerSpec {
                    hostname: "a b".into(),
                    ..base()
                },
                "hostname",
            ),
            (
                ContainerSpec {
                    cap_add: vec!["net admin".into()],
                    ..base()
                },
                "capability",
            ),
            (
                ContainerSpec {
                    ulimits: vec![Ulimit {
                        name: "files".into(),
                        soft: 1,
                        hard: 1,
                    }],
                    ..base()
                },
                "not known",
            ),
            (
                ContainerSpec {
                    ulimits: vec![Ulimit {
                        name: "nofile".into(),
                        soft: 9,
                        hard: 1,
                    }],
                    ..base()
                },
                "soft limit",
            ),
            (
                ContainerSpec {
                    sysctls: [("vm.swappiness".to_string(), "1".to_string())].into(),
                    ..base()
                },
                "not namespaced",
            ),
            (
                ContainerSpec {
                    sysctls: [("net.ipv4.ip_forward".to_string(), "1".to_string())].into(),
                    network_mode: "host".into(),
                    ..base()
                },
                "--network host",
            ),
            (
                ContainerSpec {
                    mounts: vec![mount(MountType::Tmpfs, "", "rel")],
                    ..base()
                },
                "absolute",
            ),
            (
                ContainerSpec {
                    mounts: vec![
                        mount(MountType::Tmpfs, "", "/a"),
                        mount(MountType::Volume, "", "/a/"),
                    ],
                    ..base()
                },
                "two mounts",
            ),
            (
                ContainerSpec {
                    mounts: vec![mount(MountType::Bind, "srv", "/a")],
                    ..base()
                },
                "absolute path on the nodes",
            ),
            (
                ContainerSpec {
                    mounts: vec![mount(MountType::Volume, "../x", "/a")],
                    ..base()
                },
                "volume name",
            ),
        ];
        for (c, expected) in cases {
            let err = check(&c).unwrap_err();
            assert!(err.contains(expected), "{c:?}: {err}");
        }
    }
}
