//! Health checks in the CLI: the `--health-*` flags of `service create`
//! and `service update` (merged into the spec's check as Docker does), and
//! how a check and a task's health are shown (`inspect`, `ps`).
//!
//! **Invariant:** pure functions of the flags and proto values; a flag not
//! given leaves its field as it was, and unset fields are filled in by the
//! agent (from the image's check, then Docker's defaults).

use std::time::Duration;

use anyhow::Result;
use rswarm_proto::{ContainerHealth, ContainerSpec, HealthConfig, TaskState, TaskStatus};
use serde_json::{Value, json};

use super::values;

/// Nanoseconds per millisecond: the proto keeps ms, Docker's JSON ns.
const NANOS_PER_MILLI: u64 = 1_000_000;

/// The health check flags, shared by `create` and `update`.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct HealthFlags {
    /// Command to run to check health, with /bin/sh -c inside the task.
    #[arg(long, value_name = "CMD")]
    pub health_cmd: Option<String>,
    /// Time between running the check (e.g. 30s, 1m30s; 0: the default).
    #[arg(long, value_name = "DURATION", value_parser = health_duration_ms)]
    pub health_interval: Option<u64>,
    /// Longest a check may run before it counts as failed (0: the default).
    #[arg(long, value_name = "DURATION", value_parser = health_duration_ms)]
    pub health_timeout: Option<u64>,
    /// Consecutive failures needed to report unhealthy (0: the default, 3).
    #[arg(long, value_name = "N", value_parser = health_retries)]
    pub health_retries: Option<u32>,
    /// Time the task gets to start before failed checks count (e.g. 1m).
    #[arg(long, value_name = "DURATION", value_parser = health_duration_ms)]
    pub health_start_period: Option<u64>,
    /// Disable any health check, the image's included.
    #[arg(long, conflicts_with_all = [
        "health_cmd", "health_interval", "health_timeout", "health_retries", "health_start_period",
    ])]
    pub no_healthcheck: bool,
}

impl HealthFlags {
    fn is_empty(&self) -> bool {
        self.health_cmd.is_none()
            && self.health_interval.is_none()
            && self.health_timeout.is_none()
            && self.health_retries.is_none()
            && self.health_start_period.is_none()
            && !self.no_healthcheck
    }

    /// Merges the given flags into `container`'s check, as Docker's
    /// `service update` does: `--no-healthcheck` replaces the check with
    /// `["NONE"]`; any other flag turns a `NONE` check back into one that
    /// runs (the image's test unless `--health-cmd` gives one) and sets
    /// its own field only.
    pub fn apply(&self, container: &mut ContainerSpec) -> Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        if self.no_healthcheck {
            container.healthcheck = Some(HealthConfig {
                test: vec!["NONE".to_string()],
                ..HealthConfig::default()
            });
            return Ok(());
        }
        let check = container.healthcheck.get_or_insert_with(Default::default);
        if check.test.first().is_some_and(|kind| kind == "NONE") {
            check.test.clear();
        }
        if let Some(cmd) = &self.health_cmd {
            check.test = if cmd.trim().is_empty() {
                Vec::new()
            } else {
                vec!["CMD-SHELL".to_string(), cmd.clone()]
            };
        }
        let fields = [
            (self.health_interval, &mut check.interval_ms),
            (self.health_timeout, &mut check.timeout_ms),
            (self.health_start_period, &mut check.start_period_ms),
        ];
        for (flag, field) in fields {
            if let Some(ms) = flag {
                *field = Some(ms);
            }
        }
        if let Some(retries) = self.health_retries {
            check.retries = Some(retries);
        }
        Ok(())
    }
}

/// A health duration: 0 (the default) or at least 1 ms, the unit the spec
/// keeps (a shorter one would silently become the default).
fn health_duration_ms(raw: &str) -> values::ValueResult<u64> {
    let duration = values::duration(raw)?;
    if !duration.is_zero() && duration < Duration::from_millis(1) {
        return Err(format!(
            "duration {raw:?} is shorter than 1ms: give 0 for the default or at least 1ms"
        ));
    }
    values::duration_ms(raw)
}

fn health_retries(raw: &str) -> values::ValueResult<u32> {
    let n = values::count(raw, "retry count")?;
    u32::try_from(n).map_err(|_| format!("retry count {raw:?} is too large"))
}

/// `service inspect`'s `Healthcheck` object (Docker's keys, durations in
/// ns), or null when the spec has no check of its own.
pub fn healthcheck_document(container: &ContainerSpec) -> Value {
    let Some(check) = &container.healthcheck else {
        return Value::Null;
    };
    let mut doc = serde_json::Map::new();
    doc.insert("Test".into(), json!(check.test));
    let durations = [
        ("Interval", check.interval_ms),
        ("Timeout", check.timeout_ms),
        ("StartPeriod", check.start_period_ms),
    ];
    for (key, ms) in durations {
        if let Some(ms) = ms.filter(|ms| *ms > 0) {
            doc.insert(key.into(), json!(ms.saturating_mul(NANOS_PER_MILLI)));
        }
    }
    if let Some(retries) = check.retries.filter(|n| *n > 0) {
        doc.insert("Retries".into(), json!(retries));
    }
    Value::Object(doc)
}

/// `service inspect --pretty`'s lines for the check (none without one).
pub fn pretty_healthcheck(container: &ContainerSpec) -> Vec<String> {
    let Some(check) = &container.healthcheck else {
        return Vec::new();
    };
    if check.test.first().is_some_and(|kind| kind == "NONE") {
        return vec![" Healthcheck:\tdisabled".to_string()];
    }
    let test = if check.test.is_empty() {
        "(the image's)".to_string()
    } else {
        check.test.join(" ")
    };
    let mut out = vec![" Healthcheck:".to_string(), format!("  Test:\t\t{test}")];
    let durations = [
        ("Interval", check.interval_ms),
        ("Timeout", check.timeout_ms),
        ("Start Period", check.start_period_ms),
    ];
    for (label, ms) in durations {
        if let Some(ms) = ms.filter(|ms| *ms > 0) {
            let text = humantime::format_duration(Duration::from_millis(ms));
            out.push(format!("  {label}:\t{text}"));
        }
    }
    if let Some(retries) = check.retries.filter(|n| *n > 0) {
        out.push(format!("  Retries:\t{retries}"));
    }
    out
}

/// The health of a running task as a word (`starting`, `healthy`,
/// `unhealthy`), or "" when it has no check or does not run.
pub fn health_word(status: &TaskStatus) -> &'static str {
    if status.state != TaskState::Running as i32 {
        return "";
    }
    match ContainerHealth::try_from(status.health) {
        Ok(ContainerHealth::Starting) => "starting",
        Ok(ContainerHealth::Healthy) => "healthy",
        Ok(ContainerHealth::Unhealthy) => "unhealthy",
        _ => "",
    }
}

/// What `docker ps` adds to a status: ` (healthy)`, ` (unhealthy)`,
/// ` (health: starting)`, or nothing.
pub fn health_suffix(status: &TaskStatus) -> String {
    match health_word(status) {
        "" => String::new(),
        "starting" => " (health: starting)".to_string(),
        word => format!(" ({word})"),
    }
}

/// Whether a running task's health keeps it from counting as converged:
/// still starting (Docker waits for healthy) or unhealthy (about to fail).
pub fn holds_convergence(status: &TaskStatus) -> bool {
    matches!(health_word(status), "starting" | "unhealthy")
}

#[cfg(test)]
mod tests {
    //! Goal: the flags build and merge checks as Docker's do, and health
    //! reads as `docker ps` and `docker inspect` show it.

    use clap::Parser;

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        health: HealthFlags,
    }

    fn flags(args: &[&str]) -> Result<HealthFlags, clap::Error> {
        Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied())).map(|c| c.health)
    }

    fn applied(container: &ContainerSpec, args: &[&str]) -> Option<HealthConfig> {
        let mut container = container.clone();
        flags(args).unwrap().apply(&mut container).unwrap();
        container.healthcheck
    }

    #[test]
    fn create_flags_build_a_check() {
        let check = applied(
            &ContainerSpec::default(),
            &[
                "--health-cmd",
                "test -f /ready",
                "--health-interval",
                "1m30s",
                "--health-timeout",
                "5s",
                "--health-retries",
                "4",
                "--health-start-period",
                "250ms",
            ],
        )
        .unwrap();
        assert_eq!(check.test, ["CMD-SHELL", "test -f /ready"]);
        assert_eq!(check.interval_ms, Some(90_000));
        assert_eq!(check.timeout_ms, Some(5_000));
        assert_eq!(check.retries, Some(4));
        assert_eq!(check.start_period_ms, Some(250));
        assert_eq!(
            applied(&ContainerSpec::default(), &[]),
            None,
            "no flag, no check"
        );
    }

    #[test]
    fn no_healthcheck_disables_and_excludes_the_others() {
        let check = applied(&ContainerSpec::default(), &["--no-healthcheck"]).unwrap();
        assert_eq!(
            check,
            HealthConfig {
                test: vec!["NONE".into()],
                ..HealthConfig::default()
            }
        );
        let err = flags(&["--no-healthcheck", "--health-retries", "2"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn update_merges_into_the_existing_check() {
        let existing = ContainerSpec {
            healthcheck: Some(HealthConfig {
                test: vec!["CMD".into(), "true".into()],
                interval_ms: Some(1_000),
                retries: Some(2),
                ..HealthConfig::default()
            }),
            ..ContainerSpec::default()
        };
        let check = applied(&existing, &["--health-timeout", "3s"]).unwrap();
        assert_eq!(check.test, ["CMD", "true"], "kept");
        assert_eq!((check.interval_ms, check.retries), (Some(1_000), Some(2)));
        assert_eq!(check.timeout_ms, Some(3_000));

        let disabled = ContainerSpec {
            healthcheck: Some(HealthConfig {
                test: vec!["NONE".into()],
                ..HealthConfig::default()
            }),
            ..ContainerSpec::default()
        };
        let check = applied(&disabled, &["--health-interval", "10s"]).unwrap();
        assert!(check.test.is_empty(), "back to the image's test");
        assert_eq!(check.interval_ms, Some(10_000));
    }

    #[test]
    fn durations_under_a_millisecond_are_refused() {
        assert!(flags(&["--health-interval", "500us"]).is_err());
        assert_eq!(
            flags(&["--health-interval", "0s"]).unwrap().health_interval,
            Some(0)
        );
        assert!(flags(&["--health-retries", "-1"]).is_err());
    }

    #[test]
    fn inspect_shows_dockers_keys_in_nanoseconds_and_people_units() {
        let container = ContainerSpec {
            healthcheck: Some(HealthConfig {
                test: vec!["CMD-SHELL".into(), "test -f /ready".into()],
                interval_ms: Some(5_000),
                timeout_ms: Some(2_000),
                retries: Some(3),
                start_period_ms: Some(60_000),
            }),
            ..ContainerSpec::default()
        };
        assert_eq!(
            healthcheck_document(&container),
            json!({
                "Test": ["CMD-SHELL", "test -f /ready"],
                "Interval": 5_000_000_000u64,
                "Timeout": 2_000_000_000u64,
                "StartPeriod": 60_000_000_000u64,
                "Retries": 3,
            })
        );
        assert_eq!(
            pretty_healthcheck(&container),
            [
                " Healthcheck:",
                "  Test:\t\tCMD-SHELL test -f /ready",
                "  Interval:\t5s",
                "  Timeout:\t2s",
                "  Start Period:\t1m",
                "  Retries:\t3",
            ]
        );
        assert_eq!(healthcheck_document(&ContainerSpec::default()), Value::Null);
    }

    #[test]
    fn health_reads_like_docker_ps() {
        let status = |state: TaskState, health: ContainerHealth| TaskStatus {
            state: state as i32,
            health: health as i32,
            ..TaskStatus::default()
        };
        use ContainerHealth as H;
        assert_eq!(
            health_suffix(&status(TaskState::Running, H::Healthy)),
            " (healthy)"
        );
        assert_eq!(
            health_suffix(&status(TaskState::Running, H::Unhealthy)),
            " (unhealthy)"
        );
        assert_eq!(
            health_suffix(&status(TaskState::Running, H::Starting)),
            " (health: starting)"
        );
        assert_eq!(health_suffix(&status(TaskState::Running, H::None)), "");
        assert_eq!(health_suffix(&status(TaskState::Failed, H::Unhealthy)), "");
        assert!(holds_convergence(&status(TaskState::Running, H::Starting)));
        assert!(holds_convergence(&status(TaskState::Running, H::Unhealthy)));
        assert!(!holds_convergence(&status(TaskState::Running, H::Healthy)));
        assert!(!holds_convergence(&status(TaskState::Running, H::None)));
    }
}
