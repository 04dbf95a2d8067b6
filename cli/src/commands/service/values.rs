//! Parsers for the values of `service create`/`update` flags: memory sizes,
//! CPUs, durations, replicas, labels, environment entries, constraints,
//! placement preferences, published ports, stop signals and `--args`.
//!
//! Owns: turning one flag value into the proto field it sets, and refusing a
//! bad value with a message that says what is wrong and shows a good value.
//! Does not own: how the values combine into a spec (`spec.rs`) or the
//! defaults (the manager fills those).
//!
//! Every parser is pure (the environment lookup for `--env KEY` is passed
//! in), so each accepted and refused value is pinned by a unit test. The
//! parsers return `String` errors because clap wraps them into its own
//! usage error (exit 125) that names the flag.

use std::time::Duration;

use rswarm_proto::{PortConfig, PortProtocol, PublishMode};

/// The flag value parsers' error: the message after clap's
/// "invalid value 'x' for '--flag <VALUE>': ".
pub type ValueResult<T> = Result<T, String>;

/// Longest `--args`/`--env`/label value accepted, so that a pasted file
/// cannot make a spec the manager refuses for its size anyway.
const FLAG_VALUE_BYTES_MAX: usize = 64 * 1024;

/// Nanoseconds in one CPU: `--limit-cpu 0.5` is 500_000_000 nano-CPUs.
const NANO_CPUS_PER_CPU: i64 = 1_000_000_000;

/// Digits after the point a CPU count may have: nano-CPUs are integers.
const CPU_FRACTION_DIGITS_MAX: usize = 9;

/// Signal numbers Linux knows (1..=64, the real-time ones included).
const SIGNAL_NUMBER_MAX: u32 = 64;

/// A memory size: bytes, or a number with a binary unit (`512M`, `1G`,
/// `1.5g`, `100k`, `2GiB`, `64mb`), as Docker reads `--limit-memory`.
pub fn memory_bytes(raw: &str) -> ValueResult<i64> {
    let usage = || {
        format!(
            "invalid memory size {raw:?}: use bytes or a number with a unit, e.g. 512M, 1G, 1.5g"
        )
    };
    let text = raw.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let multiplier: u64 = match unit.trim_start().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        "p" | "pb" | "pib" => 1 << 50,
        _ => return Err(usage()),
    };
    let (whole, fraction) = decimal_parts(number).ok_or_else(usage)?;
    let whole_bytes = whole.checked_mul(multiplier);
    let fraction_bytes = fraction_of(fraction, multiplier);
    let total = whole_bytes
        .and_then(|w| w.checked_add(fraction_bytes))
        .and_then(|t| i64::try_from(t).ok())
        .ok_or_else(|| format!("memory size {raw:?} is too large"))?;
    Ok(total)
}

/// A CPU count as nano-CPUs: `0.5` → 500_000_000, `2` → 2_000_000_000.
pub fn nano_cpus(raw: &str) -> ValueResult<i64> {
    let usage = || format!("invalid CPU count {raw:?}: use a number of CPUs, e.g. 0.5 or 2");
    let (whole, fraction) = decimal_parts(raw.trim()).ok_or_else(usage)?;
    if fraction.len() > CPU_FRACTION_DIGITS_MAX {
        return Err(format!(
            "CPU count {raw:?} is too precise: use at most {CPU_FRACTION_DIGITS_MAX} digits after the point"
        ));
    }
    let whole_nanos = i64::try_from(whole)
        .ok()
        .and_then(|w| w.checked_mul(NANO_CPUS_PER_CPU));
    let fraction_nanos = i64::try_from(fraction_of(fraction, NANO_CPUS_PER_CPU as u64)).ok();
    whole_nanos
        .zip(fraction_nanos)
        .and_then(|(w, f)| w.checked_add(f))
        .ok_or_else(|| format!("CPU count {raw:?} is too large"))
}

/// Splits an unsigned decimal (`12`, `1.5`, `.5`) into its whole part and
/// its fraction digits. `None` for anything else (signs, exponents, empty).
fn decimal_parts(number: &str) -> Option<(u64, &str)> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if !digits(whole) || !digits(fraction) {
        return None;
    }
    let whole = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    Some((whole, fraction))
}

/// `0.<fraction>` × `multiplier`, rounded down, exactly (no floats).
fn fraction_of(fraction: &str, multiplier: u64) -> u64 {
    // 18 digits keep 10^digits × multiplier (≤ 2^50) inside u128 by far.
    let digits = &fraction[..fraction.len().min(18)];
    if digits.is_empty() {
        return 0;
    }
    let numerator: u128 = digits.parse().unwrap_or(0);
    let denominator = 10u128.pow(digits.len() as u32);
    u64::try_from(numerator * u128::from(multiplier) / denominator).unwrap_or(u64::MAX)
}

/// A duration like Docker's: `10s`, `1m30s`, `500ms`, `1.5s`, `0`.
pub fn duration(raw: &str) -> ValueResult<Duration> {
    humantime::parse_duration(raw.trim()).map_err(|_| {
        format!("invalid duration {raw:?}: use a number with a unit, e.g. 10s, 1m30s, 500ms")
    })
}

/// A duration in whole milliseconds, as the proto stores it.
pub fn duration_ms(raw: &str) -> ValueResult<u64> {
    let d = duration(raw)?;
    u64::try_from(d.as_millis()).map_err(|_| format!("duration {raw:?} is too long"))
}

/// A replica count: 0 or more.
pub fn replicas(raw: &str) -> ValueResult<u64> {
    count(raw, "replica count")
}

/// A non-negative whole number; `what` names it in the message.
pub fn count(raw: &str, what: &str) -> ValueResult<u64> {
    let text = raw.trim();
    if text.starts_with('-') {
        return Err(format!("invalid {what} {raw:?}: it cannot be negative"));
    }
    text.parse()
        .map_err(|_| format!("invalid {what} {raw:?}: use a whole number, e.g. 3"))
}

/// `--limit-pids`: 0 (no limit) or more.
pub fn pids_limit(raw: &str) -> ValueResult<i64> {
    let n = count(raw, "process limit")?;
    i64::try_from(n).map_err(|_| format!("process limit {raw:?} is too large"))
}

/// `--restart-max-attempts`: 0 (no limit) or more.
pub fn max_attempts(raw: &str) -> ValueResult<u64> {
    count(raw, "attempt count")
}

/// `--max-replicas`: tasks per node, 0 (no limit) or more.
pub fn max_replicas(raw: &str) -> ValueResult<u64> {
    count(raw, "replicas-per-node limit")
}

/// `--update-parallelism`: tasks at once, 0 meaning all.
pub fn parallelism(raw: &str) -> ValueResult<u64> {
    count(raw, "parallelism")
}

/// `--update-max-failure-ratio`: a fraction between 0 and 1.
pub fn failure_ratio(raw: &str) -> ValueResult<f32> {
    let ratio: f32 = raw.trim().parse().map_err(|_| {
        format!("invalid failure ratio {raw:?}: use a fraction between 0 and 1, e.g. 0.2")
    })?;
    if !(0.0..=1.0).contains(&ratio) {
        return Err(format!(
            "invalid failure ratio {raw:?}: it must be between 0 and 1"
        ));
    }
    Ok(ratio)
}

/// A label, `key=value` or `key` (empty value).
pub fn label(raw: &str) -> ValueResult<(String, String)> {
    check_size(raw, "label")?;
    let (key, value) = raw.split_once('=').unwrap_or((raw, ""));
    if key.trim().is_empty() {
        return Err(format!("invalid label {raw:?}: use key=value"));
    }
    Ok((key.to_string(), value.to_string()))
}

/// An environment entry: `KEY=VALUE`, or `KEY` alone, which takes the value
/// `KEY` has in this command's environment (as Docker does). `lookup` reads
/// that environment.
pub fn env_entry_with(raw: &str, lookup: impl Fn(&str) -> Option<String>) -> ValueResult<String> {
    check_size(raw, "environment variable")?;
    let (key, value) = match raw.split_once('=') {
        Some((key, value)) => (key, Some(value)),
        None => (raw, None),
    };
    if key.is_empty() || key.chars().any(char::is_whitespace) {
        return Err(format!(
            "invalid environment variable {raw:?}: use KEY=VALUE, or KEY to pass on this shell's value"
        ));
    }
    match value {
        Some(_) => Ok(raw.to_string()),
        None => lookup(key).map(|v| format!("{key}={v}")).ok_or_else(|| {
            format!("environment variable {key} is not set here: give its value with {key}=VALUE")
        }),
    }
}

/// `env_entry_with` reading this process's environment.
pub fn env_entry(raw: &str) -> ValueResult<String> {
    env_entry_with(raw, |key| std::env::var(key).ok())
}

/// An environment variable name, for `--env-rm`.
pub fn env_key(raw: &str) -> ValueResult<String> {
    let key = raw.split_once('=').map_or(raw, |(k, _)| k);
    if key.is_empty() || key.chars().any(char::is_whitespace) {
        return Err(format!("invalid environment variable name {raw:?}"));
    }
    Ok(key.to_string())
}

/// A placement constraint: `<attribute>==<value>` or `<attribute>!=<value>`.
pub fn constraint(raw: &str) -> ValueResult<String> {
    check_size(raw, "constraint")?;
    let usage = || {
        format!(
            "invalid constraint {raw:?}: use <attribute>==<value> or <attribute>!=<value>, \
             e.g. node.hostname==web1 or node.labels.zone!=a"
        )
    };
    let (attribute, value) = raw
        .split_once("==")
        .or_else(|| raw.split_once("!="))
        .ok_or_else(usage)?;
    if attribute.trim().is_empty() || value.trim().is_empty() {
        return Err(usage());
    }
    Ok(raw.trim().to_string())
}

/// A placement preference, `spread=<attribute>`; returns the attribute.
pub fn placement_pref(raw: &str) -> ValueResult<String> {
    let Some((strategy, attribute)) = raw.split_once('=') else {
        return Err(format!(
            "invalid placement preference {raw:?}: use spread=<attribute>, e.g. spread=node.labels.zone"
        ));
    };
    if strategy != "spread" {
        return Err(format!(
            "unsupported placement preference strategy {strategy:?}: only spread is supported"
        ));
    }
    if attribute.trim().is_empty() {
        return Err(format!(
            "invalid placement preference {raw:?}: name the attribute to spread over, e.g. spread=node.labels.zone"
        ));
    }
    Ok(attribute.trim().to_string())
}

/// A stop signal: a name (`SIGTERM`, `TERM`, `SIGRTMIN+3`) or a number.
pub fn stop_signal(raw: &str) -> ValueResult<String> {
    let usage = || format!("invalid stop signal {raw:?}: use a name like SIGTERM or a number");
    if let Ok(n) = raw.parse::<u32>() {
        return if (1..=SIGNAL_NUMBER_MAX).contains(&n) {
            Ok(raw.to_string())
        } else {
            Err(usage())
        };
    }
    let name = raw.strip_prefix("SIG").unwrap_or(raw);
    let valid = name.starts_with(|c: char| c.is_ascii_uppercase())
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '+' || c == '-');
    if valid {
        Ok(raw.to_string())
    } else {
        Err(usage())
    }
}

/// A published port: `published=8080,target=80,protocol=tcp,mode=host`, or
/// the short forms `8080:80`, `8080:80/udp`, `80`.
///
/// `mode=ingress` is refused: the routing mesh is not available yet. A port
/// without a mode is published in host mode (on the nodes its tasks run on).
pub fn port(raw: &str) -> ValueResult<PortConfig> {
    let port = if raw.contains('=') {
        long_port(raw)?
    } else {
        short_port(raw)?
    };
    if port.target_port == 0 {
        return Err(format!(
            "invalid port {raw:?}: the target port is missing; use e.g. published=8080,target=80"
        ));
    }
    Ok(port)
}

fn host_port() -> PortConfig {
    PortConfig {
        publish_mode: PublishMode::Host as i32,
        ..Default::default()
    }
}

fn long_port(raw: &str) -> ValueResult<PortConfig> {
    let mut port = host_port();
    for field in raw.split(',') {
        let Some((key, value)) = field.split_once('=') else {
            return Err(format!(
                "invalid field {field:?} in port {raw:?}: use key=value with published, target, protocol, mode"
            ));
        };
        match key.trim() {
            "published" => port.published_port = port_number(value, raw)?,
            "target" => port.target_port = port_number(value, raw)?,
            "protocol" => port.protocol = protocol(value)? as i32,
            "mode" => port.publish_mode = publish_mode(value)? as i32,
            other => {
                return Err(format!(
                    "unknown field {other:?} in port {raw:?}: use published, target, protocol, mode"
                ));
            }
        }
    }
    Ok(port)
}

fn short_port(raw: &str) -> ValueResult<PortConfig> {
    let mut port = host_port();
    let (ports, proto) = raw.split_once('/').unwrap_or((raw, "tcp"));
    port.protocol = protocol(proto)? as i32;
    if ports.contains('-') {
        return Err(format!(
            "port ranges are not supported ({raw:?}): publish each port with its own --publish"
        ));
    }
    match ports.split_once(':') {
        Some((published, target)) => {
            port.published_port = port_number(published, raw)?;
            port.target_port = port_number(target, raw)?;
        }
        None => port.target_port = port_number(ports, raw)?,
    }
    Ok(port)
}

fn port_number(value: &str, raw: &str) -> ValueResult<u32> {
    match value.trim().parse::<u16>() {
        Ok(n) => Ok(u32::from(n)),
        Err(_) => Err(format!(
            "invalid port number {value:?} in {raw:?}: use a number from 1 to 65535"
        )),
    }
}

fn protocol(value: &str) -> ValueResult<PortProtocol> {
    match value.trim().to_ascii_lowercase().as_str() {
        "tcp" => Ok(PortProtocol::Tcp),
        "udp" => Ok(PortProtocol::Udp),
        "sctp" => Ok(PortProtocol::Sctp),
        _ => Err(format!("invalid protocol {value:?}: use tcp, udp or sctp")),
    }
}

fn publish_mode(value: &str) -> ValueResult<PublishMode> {
    match value.trim() {
        "host" => Ok(PublishMode::Host),
        "ingress" => Err(
            "the routing mesh is not available yet, so mode=ingress cannot be used: \
             publish with mode=host (the port opens on the nodes the tasks run on)"
                .to_string(),
        ),
        other => Err(format!("invalid publish mode {other:?}: use mode=host")),
    }
}

/// A port to remove with `--publish-rm`: `TARGET[/PROTOCOL]`, or any form
/// `--publish` takes. A published port of 0 matches any published port.
pub fn port_to_remove(raw: &str) -> ValueResult<PortConfig> {
    if raw.contains(':') || raw.contains('=') {
        return port(raw);
    }
    let removed = short_port(raw)?;
    if removed.target_port == 0 {
        return Err(format!(
            "invalid port {raw:?}: name the target port, e.g. 80/tcp"
        ));
    }
    Ok(removed)
}

/// `--args "cmd arg 'two words'"`: splits like a shell would, with single
/// quotes, double quotes and backslash escapes (no expansion).
pub fn shell_words(raw: &str) -> ValueResult<Vec<String>> {
    check_size(raw, "argument list")?;
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => words.extend(word.take()),
            '\'' => {
                let quoted = take_until(&mut chars, '\'', false)
                    .ok_or_else(|| format!("unterminated ' quote in {raw:?}"))?;
                word.get_or_insert_with(String::new).push_str(&quoted);
            }
            '"' => {
                let quoted = take_until(&mut chars, '"', true)
                    .ok_or_else(|| format!("unterminated \" quote in {raw:?}"))?;
                word.get_or_insert_with(String::new).push_str(&quoted);
            }
            '\\' => {
                let escaped = chars
                    .next()
                    .ok_or_else(|| format!("a trailing backslash in {raw:?} escapes nothing"))?;
                word.get_or_insert_with(String::new).push(escaped);
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Ok(words)
}

/// The text up to `end` (consumed); `None` when `end` never comes.
fn take_until(chars: &mut std::str::Chars<'_>, end: char, escapes: bool) -> Option<String> {
    let mut text = String::new();
    while let Some(c) = chars.next() {
        match c {
            c if c == end => return Some(text),
            '\\' if escapes => text.push(chars.next()?),
            c => text.push(c),
        }
    }
    None
}

fn check_size(raw: &str, what: &str) -> ValueResult<()> {
    if raw.len() > FLAG_VALUE_BYTES_MAX {
        return Err(format!(
            "the {what} is {} bytes, over the limit of {FLAG_VALUE_BYTES_MAX} bytes",
            raw.len()
        ));
    }
    Ok(())
}

/// "512MiB", "1.5GiB", "100B": a memory size for people (`inspect --pretty`).
pub fn format_bytes(bytes: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    let text = format!("{value:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}{}", UNITS[unit])
}

/// "0.5", "2": a CPU count for people, from nano-CPUs.
pub fn format_cpus(nano_cpus: i64) -> String {
    let whole = nano_cpus / NANO_CPUS_PER_CPU;
    let fraction = nano_cpus % NANO_CPUS_PER_CPU;
    if fraction == 0 {
        return whole.to_string();
    }
    let digits = format!("{fraction:09}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests;
