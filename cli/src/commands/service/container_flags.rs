//! The container flags of `service create` and `service update`: hostname,
//! read-only root, capabilities, `--init`, ulimits, sysctls, mounts and the
//! network mode, with Docker's spellings (and its `-add`/`-rm` forms on
//! update).
//!
//! Owns: parsing those values and writing them into a `ContainerSpec`.
//! Does not own: whether they can run on a node (the manager checks the
//! spec, the oci driver the node).

use std::collections::BTreeMap;

use rswarm_proto::{ContainerSpec, Mount, MountType, Ulimit};

use super::values::{ValueResult, memory_bytes};

/// Container flags of `service create`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ContainerFlags {
    /// The containers' hostname (default: the task's short ID).
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,
    /// Mount the containers' root filesystem read-only.
    #[arg(long)]
    pub read_only: bool,
    /// Add a Linux capability to Docker's default set (NET_ADMIN, ALL…).
    #[arg(long = "cap-add", value_name = "CAP")]
    pub cap_add: Vec<String>,
    /// Drop a Linux capability from the default set (NET_RAW, ALL…).
    #[arg(long = "cap-drop", value_name = "CAP")]
    pub cap_drop: Vec<String>,
    /// Run an init (tini) as PID 1 that forwards signals and reaps zombies.
    #[arg(long)]
    pub init: bool,
    /// A resource limit, NAME=SOFT[:HARD], e.g. nofile=1024:2048.
    #[arg(long = "ulimit", value_name = "ULIMIT", value_parser = ulimit)]
    pub ulimits: Vec<Ulimit>,
    /// A namespaced kernel parameter, KEY=VALUE, e.g. net.core.somaxconn=1024.
    #[arg(long = "sysctl", value_name = "KEY=VALUE", value_parser = sysctl)]
    pub sysctls: Vec<(String, String)>,
    /// A mount: type=bind|volume|tmpfs,source=…,target=…[,readonly]
    /// [,tmpfs-size=64m][,tmpfs-mode=1770][,volume-nocopy][,volume-label=k=v].
    #[arg(long = "mount", value_name = "MOUNT", value_parser = mount)]
    pub mounts: Vec<Mount>,
    /// The network: host (the node's) or none (own namespace, loopback only).
    #[arg(long, value_name = "MODE", value_parser = network_mode)]
    pub network: Option<String>,
}

impl ContainerFlags {
    /// Writes the flags into a new service's container spec.
    pub fn apply(&self, container: &mut ContainerSpec) {
        if let Some(hostname) = &self.hostname {
            container.hostname.clone_from(hostname);
        }
        container.read_only = self.read_only;
        container.cap_add.clone_from(&self.cap_add);
        container.cap_drop.clone_from(&self.cap_drop);
        container.init = self.init;
        container.ulimits.clone_from(&self.ulimits);
        container.sysctls = self.sysctls.iter().cloned().collect();
        container.mounts.clone_from(&self.mounts);
        if let Some(network) = &self.network {
            container.network_mode.clone_from(network);
        }
    }
}

/// Container flags of `service update`: `-add`/`-rm` forms for lists.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ContainerUpdateFlags {
    /// Change the containers' hostname ("" for the task's short ID).
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,
    /// Mount the root filesystem read-only (true) or writable (false).
    #[arg(long, value_name = "BOOL")]
    pub read_only: Option<bool>,
    /// Add capabilities to the added set.
    #[arg(long = "cap-add", value_name = "CAP")]
    pub cap_add: Vec<String>,
    /// Add capabilities to the dropped set.
    #[arg(long = "cap-drop", value_name = "CAP")]
    pub cap_drop: Vec<String>,
    /// Run an init as PID 1 (true) or not (false).
    #[arg(long, value_name = "BOOL")]
    pub init: Option<bool>,
    /// Add or replace a ulimit, NAME=SOFT[:HARD].
    #[arg(long = "ulimit-add", value_name = "ULIMIT", value_parser = ulimit)]
    pub ulimit_add: Vec<Ulimit>,
    /// Remove a ulimit by name.
    #[arg(long = "ulimit-rm", value_name = "NAME")]
    pub ulimit_rm: Vec<String>,
    /// Add or replace a sysctl, KEY=VALUE.
    #[arg(long = "sysctl-add", value_name = "KEY=VALUE", value_parser = sysctl)]
    pub sysctl_add: Vec<(String, String)>,
    /// Remove a sysctl by key.
    #[arg(long = "sysctl-rm", value_name = "KEY")]
    pub sysctl_rm: Vec<String>,
    /// Add or replace (by target) a mount, as --mount of service create.
    #[arg(long = "mount-add", value_name = "MOUNT", value_parser = mount)]
    pub mount_add: Vec<Mount>,
    /// Remove the mount at this target.
    #[arg(long = "mount-rm", value_name = "TARGET")]
    pub mount_rm: Vec<String>,
    /// Change the network mode: host or none.
    #[arg(long, value_name = "MODE", value_parser = network_mode)]
    pub network: Option<String>,
}

impl ContainerUpdateFlags {
    /// Applies the changes (removals before additions, as Docker does).
    pub fn apply(&self, container: &mut ContainerSpec) {
        if let Some(hostname) = &self.hostname {
            container.hostname.clone_from(hostname);
        }
        if let Some(read_only) = self.read_only {
            container.read_only = read_only;
        }
        if let Some(init) = self.init {
            container.init = init;
        }
        add_unique(&mut container.cap_add, &self.cap_add);
        add_unique(&mut container.cap_drop, &self.cap_drop);
        container.ulimits.retain(|u| {
            !self.ulimit_rm.contains(&u.name) && !self.ulimit_add.iter().any(|a| a.name == u.name)
        });
        container.ulimits.extend(self.ulimit_add.iter().cloned());
        for key in &self.sysctl_rm {
            container.sysctls.remove(key);
        }
        container.sysctls.extend(self.sysctl_add.iter().cloned());
        container.mounts.retain(|m| {
            !self.mount_rm.contains(&m.target)
                && !self.mount_add.iter().any(|a| a.target == m.target)
        });
        container.mounts.extend(self.mount_add.iter().cloned());
        if let Some(network) = &self.network {
            container.network_mode.clone_from(network);
        }
    }
}

fn add_unique(list: &mut Vec<String>, added: &[String]) {
    for item in added {
        if !list.contains(item) {
            list.push(item.clone());
        }
    }
}

/// `NAME=SOFT[:HARD]` (HARD defaults to SOFT), as Docker's `--ulimit`.
pub fn ulimit(raw: &str) -> ValueResult<Ulimit> {
    let usage = || format!("expected NAME=SOFT[:HARD], e.g. nofile=1024:2048, got {raw:?}");
    let (name, limits) = raw.split_once('=').ok_or_else(usage)?;
    let (soft, hard) = limits.split_once(':').unwrap_or((limits, limits));
    let soft: i64 = soft.trim().parse().map_err(|_| usage())?;
    let hard: i64 = hard.trim().parse().map_err(|_| usage())?;
    if name.trim().is_empty() || soft < 0 || soft > hard {
        return Err(usage());
    }
    Ok(Ulimit {
        name: name.trim().to_ascii_lowercase(),
        soft,
        hard,
    })
}

/// `KEY=VALUE`.
pub fn sysctl(raw: &str) -> ValueResult<(String, String)> {
    match raw.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_string(), value.to_string()))
        }
        _ => Err(format!(
            "expected KEY=VALUE, e.g. net.core.somaxconn=1024, got {raw:?}"
        )),
    }
}

/// `host` or `none`; overlay networks are not available yet.
pub fn network_mode(raw: &str) -> ValueResult<String> {
    match raw {
        "host" | "none" => Ok(raw.to_string()),
        _ => Err(format!(
            "overlay networks are not available yet; use host or none (got {raw:?})"
        )),
    }
}

/// Docker's `--mount` syntax: comma-separated `key=value` (or bare flag)
/// fields.
pub fn mount(raw: &str) -> ValueResult<Mount> {
    let mut mount = Mount {
        r#type: MountType::Volume as i32,
        ..Mount::default()
    };
    let mut labels = BTreeMap::new();
    for field in raw.split(',').filter(|f| !f.is_empty()) {
        let (key, value) = match field.split_once('=') {
            Some((key, value)) => (key.trim(), Some(value)),
            None => (field.trim(), None),
        };
        let flag = |value: Option<&str>| -> ValueResult<bool> {
            match value {
                None | Some("true") | Some("1") => Ok(true),
                Some("false") | Some("0") => Ok(false),
                Some(other) => Err(format!("{key}={other:?} is not true or false")),
            }
        };
        let text = || {
            value
                .map(str::to_string)
                .ok_or_else(|| format!("{key} needs a value, {key}=…"))
        };
        match key {
            "type" => {
                mount.r#type = match value {
                    Some("bind") => MountType::Bind,
                    Some("volume") => MountType::Volume,
                    Some("tmpfs") => MountType::Tmpfs,
                    _ => return Err(format!("mount type {value:?} is not bind, volume or tmpfs")),
                } as i32;
            }
            "source" | "src" => mount.source = text()?,
            "target" | "destination" | "dst" => mount.target = text()?,
            "readonly" | "ro" => mount.read_only = flag(value)?,
            "volume-nocopy" => mount.volume_nocopy = flag(value)?,
            "tmpfs-size" => mount.tmpfs_size_bytes = memory_bytes(&text()?)?,
            "tmpfs-mode" => {
                mount.tmpfs_mode = u32::from_str_radix(&text()?, 8).map_err(|_| {
                    format!("tmpfs-mode {value:?} is not an octal mode such as 1777")
                })?;
            }
            "volume-label" => {
                let label = text()?;
                let (k, v) = label.split_once('=').unwrap_or((&label, ""));
                labels.insert(k.to_string(), v.to_string());
            }
            other => {
                return Err(format!(
                    "unknown mount field {other:?}; use type, source, target, readonly, tmpfs-size, tmpfs-mode, volume-nocopy or volume-label"
                ));
            }
        }
    }
    if mount.target.is_empty() {
        return Err("a mount needs a target, target=/path".to_string());
    }
    mount.volume_labels = labels;
    Ok(mount)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_parse_dockers_syntax() {
        let m = mount("type=bind,source=/srv,target=/data,readonly").unwrap();
        assert_eq!(m.r#type, MountType::Bind as i32);
        assert_eq!(
            (m.source.as_str(), m.target.as_str(), m.read_only),
            ("/srv", "/data", true)
        );
        let m = mount("type=tmpfs,dst=/scratch,tmpfs-size=64m,tmpfs-mode=1770").unwrap();
        assert_eq!((m.tmpfs_size_bytes, m.tmpfs_mode), (64 << 20, 0o1770));
        let m = mount("src=db,target=/var/lib/db,volume-nocopy,volume-label=tier=data").unwrap();
        assert_eq!(
            m.r#type,
            MountType::Volume as i32,
            "volume is the default type"
        );
        assert!(m.volume_nocopy);
        assert_eq!(
            m.volume_labels.get("tier").map(String::as_str),
            Some("data")
        );
        for bad in [
            "type=nfs,target=/x",
            "source=/x",
            "type=bind,target=/x,color=red",
            "target=/x,ro=maybe",
        ] {
            assert!(mount(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ulimits_sysctls_and_networks() {
        assert_eq!(
            ulimit("nofile=1024:2048").unwrap(),
            Ulimit {
                name: "nofile".into(),
                soft: 1024,
                hard: 2048
            }
        );
        assert_eq!(ulimit("core=0").unwrap().hard, 0);
        assert!(ulimit("nofile=10:5").is_err());
        assert!(ulimit("nofile").is_err());
        assert_eq!(sysctl("net.core.somaxconn=1024").unwrap().1, "1024");
        assert!(sysctl("=1").is_err());
        assert!(network_mode("host").is_ok());
        assert!(
            network_mode("frontend")
                .unwrap_err()
                .contains("use host or none")
        );
    }

    #[test]
    fn update_flags_add_and_remove() {
        let mut container = ContainerSpec::default();
        ContainerFlags {
            cap_add: vec!["NET_ADMIN".into()],
            mounts: vec![
                mount("type=tmpfs,target=/a").unwrap(),
                mount("type=tmpfs,target=/b").unwrap(),
            ],
            sysctls: vec![("kernel.shmmax".into(), "1".into())],
            ..ContainerFlags::default()
        }
        .apply(&mut container);
        ContainerUpdateFlags {
            cap_add: vec!["NET_ADMIN".into(), "SYS_TIME".into()],
            mount_rm: vec!["/a".into()],
            mount_add: vec![mount("type=tmpfs,target=/b,readonly").unwrap()],
            sysctl_rm: vec!["kernel.shmmax".into()],
            read_only: Some(true),
            ..ContainerUpdateFlags::default()
        }
        .apply(&mut container);
        assert_eq!(container.cap_add, ["NET_ADMIN", "SYS_TIME"]);
        assert_eq!(container.mounts.len(), 1);
        assert!(container.mounts[0].read_only);
        assert!(container.sysctls.is_empty());
        assert!(container.read_only);
    }
}
