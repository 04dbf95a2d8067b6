//! The container fields of `service inspect`'s document, with Docker's
//! keys: ulimits, mounts, and the secret and config files (never their
//! data: the spec only references them).

use rswarm_proto::{ConfigReference, FileTarget, Mount, MountType, SecretReference, Ulimit};
use serde_json::{Value, json};

use super::object;

pub(super) fn ulimits(ulimits: &[Ulimit]) -> Value {
    ulimits
        .iter()
        .map(|u| json!({"Name": u.name, "Soft": u.soft, "Hard": u.hard}))
        .collect()
}

pub(super) fn mounts(mounts: &[Mount]) -> Value {
    mounts.iter().map(mount).collect()
}

fn mount(m: &Mount) -> Value {
    let kind = MountType::try_from(m.r#type).unwrap_or(MountType::Bind);
    let (kind_name, options) = match kind {
        MountType::Bind => ("bind", None),
        MountType::Volume => (
            "volume",
            Some((
                "VolumeOptions",
                object(vec![
                    ("NoCopy", json!(m.volume_nocopy)),
                    ("Labels", json!(m.volume_labels)),
                ]),
            )),
        ),
        MountType::Tmpfs => (
            "tmpfs",
            Some((
                "TmpfsOptions",
                object(vec![
                    ("SizeBytes", json!(m.tmpfs_size_bytes)),
                    ("Mode", json!(m.tmpfs_mode)),
                ]),
            )),
        ),
    };
    let mut entries = vec![
        ("Type", json!(kind_name)),
        ("Source", json!(m.source)),
        ("Target", json!(m.target)),
        ("ReadOnly", json!(m.read_only)),
    ];
    entries.extend(options);
    object(entries)
}

fn file(target: Option<&FileTarget>) -> Value {
    let target = target.cloned().unwrap_or_default();
    json!({"Name": target.name, "UID": target.uid, "GID": target.gid, "Mode": target.mode})
}

pub(super) fn secrets(secrets: &[SecretReference]) -> Value {
    secrets
        .iter()
        .map(|s| {
            json!({"File": file(s.file.as_ref()), "SecretID": s.secret_id, "SecretName": s.secret_name})
        })
        .collect()
}

pub(super) fn configs(configs: &[ConfigReference]) -> Value {
    configs
        .iter()
        .map(|c| {
            json!({"File": file(c.file.as_ref()), "ConfigID": c.config_id, "ConfigName": c.config_name})
        })
        .collect()
}
