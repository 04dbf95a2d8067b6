//! The default seccomp filter of containers: `profile.json` (Docker's
//! default policy in rswarm's grouped form, embedded in the binary) turned
//! into the runtime-spec form for this machine's architecture and the
//! container's capabilities, as Docker does when it creates a container.
//!
//! Invariant: a rule is kept only when the container has every capability
//! in its `caps`, none in its `not_caps`, and the architecture matches; a
//! syscall that no kept rule allows fails with EPERM (`default_errno`).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};

/// The profile, in the grouped form below.
const PROFILE_JSON: &str = include_str!("profile.json");

#[derive(Debug, Deserialize)]
struct Profile {
    default_errno: u32,
    /// Rust's `std::env::consts::ARCH` → the seccomp architectures a
    /// process of that machine may use.
    architectures: BTreeMap<String, Vec<String>>,
    rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
struct Rule {
    names: Vec<String>,
    #[serde(default)]
    args: Vec<Arg>,
    /// Kept only if the container has all of these.
    #[serde(default)]
    caps: Vec<String>,
    /// Kept only if the container has none of these.
    #[serde(default)]
    not_caps: Vec<String>,
    /// Kept only on these machines (empty: all).
    #[serde(default)]
    arches: Vec<String>,
    #[serde(default)]
    not_arches: Vec<String>,
    /// Fail with this errno instead of allowing.
    errno: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct Arg {
    index: u32,
    value: u64,
    #[serde(default)]
    value_two: u64,
    op: String,
}

/// Why the embedded profile could not be used (a build defect).
#[derive(Debug, thiserror::Error)]
#[error("the built-in seccomp profile is damaged: {0}")]
pub struct ProfileError(#[from] serde_json::Error);

/// The filter for a container on machine `arch` holding `capabilities`
/// (`CAP_…` names), in runtime-spec form (`linux.seccomp`).
pub fn default_filter(arch: &str, capabilities: &[String]) -> Result<Value, ProfileError> {
    let profile: Profile = serde_json::from_str(PROFILE_JSON)?;
    let has = |cap: &String| capabilities.contains(cap);
    let syscalls: Vec<Value> = profile
        .rules
        .iter()
        .filter(|rule| rule.caps.iter().all(has) && !rule.not_caps.iter().any(has))
        .filter(|rule| rule.arches.is_empty() || rule.arches.iter().any(|a| a == arch))
        .filter(|rule| !rule.not_arches.iter().any(|a| a == arch))
        .map(to_spec)
        .collect();
    let architectures = profile.architectures.get(arch).cloned().unwrap_or_default();
    Ok(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": profile.default_errno,
        "architectures": architectures,
        "syscalls": syscalls,
    }))
}

fn to_spec(rule: &Rule) -> Value {
    let mut syscall = json!({ "names": rule.names });
    match rule.errno {
        Some(errno) => {
            syscall["action"] = json!("SCMP_ACT_ERRNO");
            syscall["errnoRet"] = json!(errno);
        }
        None => syscall["action"] = json!("SCMP_ACT_ALLOW"),
    }
    if !rule.args.is_empty() {
        let args: Vec<Value> = rule
            .args
            .iter()
            .map(|a| json!({ "index": a.index, "value": a.value, "valueTwo": a.value_two, "op": a.op }))
            .collect();
        syscall["args"] = json!(args);
    }
    syscall
}

#[cfg(test)]
mod tests;
