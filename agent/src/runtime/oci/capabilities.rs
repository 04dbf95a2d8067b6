//! A container's capabilities: Docker's default set, with `--cap-add` and
//! `--cap-drop` applied as Docker applies them (names with or without
//! `CAP_`, any case; `ALL` in either list).

/// Docker's default capability set.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability Linux defines (to 5.9), which `ALL` stands for.
pub const ALL_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// A capability name that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{name:?} is not a Linux capability; give a name such as NET_ADMIN or CAP_NET_ADMIN, or ALL"
)]
pub struct UnknownCapability {
    pub name: String,
}

/// `CAP_NAME` for `name`, `NAME`, `cap_name`…; `ALL` stays `ALL`.
pub fn normalize(name: &str) -> Result<String, UnknownCapability> {
    let upper = name.trim().to_ascii_uppercase();
    if upper == "ALL" {
        return Ok(upper);
    }
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    if ALL_CAPABILITIES.contains(&full.as_str()) {
        Ok(full)
    } else {
        Err(UnknownCapability {
            name: name.to_string(),
        })
    }
}

/// The container's capabilities: without `ALL` in `drop`, the default set
/// plus `add` minus `drop`; with it, `add` alone (as Docker).
pub fn effective(add: &[String], drop: &[String]) -> Result<Vec<String>, UnknownCapability> {
    let add = add
        .iter()
        .map(|n| normalize(n))
        .collect::<Result<Vec<_>, _>>()?;
    let drop = drop
        .iter()
        .map(|n| normalize(n))
        .collect::<Result<Vec<_>, _>>()?;
    let all = |list: &[String]| list.iter().any(|n| n == "ALL");
    let mut caps: Vec<String> = if all(&drop) {
        Vec::new()
    } else {
        DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect()
    };
    if all(&add) {
        caps = ALL_CAPABILITIES.iter().map(|c| c.to_string()).collect();
    } else {
        for cap in add {
            if !caps.contains(&cap) {
                caps.push(cap);
            }
        }
    }
    if !all(&drop) {
        caps.retain(|cap| !drop.contains(cap));
    }
    caps.sort();
    Ok(caps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn the_default_set_is_dockers() {
        let caps = effective(&[], &[]).unwrap();
        assert_eq!(caps.len(), 14);
        assert!(caps.contains(&"CAP_NET_BIND_SERVICE".to_string()));
        assert!(!caps.contains(&"CAP_SYS_ADMIN".to_string()));
    }

    #[test]
    fn adds_and_drops_take_any_spelling() {
        let caps = effective(&strings(&["net_admin"]), &strings(&["CAP_CHOWN", "kill"])).unwrap();
        assert!(caps.contains(&"CAP_NET_ADMIN".to_string()));
        assert!(!caps.contains(&"CAP_CHOWN".to_string()));
        assert!(!caps.contains(&"CAP_KILL".to_string()));
        assert_eq!(caps.len(), 13);
    }

    #[test]
    fn all_works_in_both_lists() {
        assert_eq!(
            effective(&strings(&["NET_ADMIN"]), &strings(&["ALL"])).unwrap(),
            ["CAP_NET_ADMIN"]
        );
        assert_eq!(
            effective(&strings(&["ALL"]), &[]).unwrap().len(),
            ALL_CAPABILITIES.len()
        );
        assert!(effective(&[], &strings(&["all"])).unwrap().is_empty());
    }

    #[test]
    fn unknown_names_are_refused_with_the_name() {
        let err = effective(&strings(&["FLY"]), &[]).unwrap_err();
        assert!(err.to_string().contains("\"FLY\""), "{err}");
    }
}
