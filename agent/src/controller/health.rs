//! Health checks of a running task, with Docker's rules.
//!
//! Two parts: [`HealthMachine`], the pure rules (what a probe result does
//! to the task's health), tested without processes; and [`HealthMonitor`],
//! which the controller holds while the task runs: when the next probe is
//! due, the probe itself (through `Runtime::exec`) and its output.
//!
//! Rules: health starts STARTING; any passing probe makes it HEALTHY and
//! resets the failure streak; `retries` failures in a row make it
//! UNHEALTHY; while the task is STARTING and within its `start_period`,
//! failures do not count (a pass ends the start period). The first probe
//! runs `interval` after the start, each next one `interval` after the
//! previous ended; a probe is killed after `timeout`.
//!
//! Invariants: probes of one task never overlap; the interval is never
//! below `HEALTH_INTERVAL_MIN`; the output kept is at most
//! `EXEC_OUTPUT_BYTES_MAX` bytes.

use std::sync::Arc;
use std::time::Duration;

use rswarm_proto::{ContainerHealth, HealthConfig};
use tokio::time::Instant;

use crate::runtime::Runtime;
use crate::runtime::limits::{
    EXEC_OUTPUT_BYTES_MAX, HEALTH_INTERVAL_DEFAULT, HEALTH_INTERVAL_MIN, HEALTH_PROBE_SLACK,
    HEALTH_RETRIES_DEFAULT, HEALTH_TIMEOUT_DEFAULT,
};

/// A health check with every default filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthRules {
    /// The probe's command line.
    pub argv: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub start_period: Duration,
}

impl HealthRules {
    /// The rules of `config`; `None` when it runs nothing (`["NONE"]`, an
    /// empty test, or a test that names no command).
    pub fn from_config(config: &HealthConfig) -> Option<Self> {
        let argv = probe_argv(&config.test)?;
        let interval = config
            .interval_ms
            .filter(|ms| *ms > 0)
            .map_or(HEALTH_INTERVAL_DEFAULT, Duration::from_millis)
            .max(HEALTH_INTERVAL_MIN);
        let timeout = config
            .timeout_ms
            .filter(|ms| *ms > 0)
            .map_or(HEALTH_TIMEOUT_DEFAULT, Duration::from_millis);
        let retries = config
            .retries
            .filter(|n| *n > 0)
            .unwrap_or(HEALTH_RETRIES_DEFAULT);
        let start_period = Duration::from_millis(config.start_period_ms.unwrap_or(0));
        Some(Self {
            argv,
            interval,
            timeout,
            retries,
            start_period,
        })
    }
}

/// The command a check's `test` runs: `["CMD", prog, args…]` runs them as
/// they are, `["CMD-SHELL", cmd]` runs `/bin/sh -c cmd`.
pub fn probe_argv(test: &[String]) -> Option<Vec<String>> {
    let (kind, rest) = test.split_first()?;
    match kind.as_str() {
        "CMD" if rest.first().is_some_and(|prog| !prog.is_empty()) => Some(rest.to_vec()),
        "CMD-SHELL" if !rest.is_empty() => Some(vec![
            "/bin/sh".to_string(),
            "-c".to_string(),
            rest.join(" "),
        ]),
        _ => None,
    }
}

/// The health rules as a pure state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthMachine {
    retries: u32,
    start_period: Duration,
    health: ContainerHealth,
    /// Failed probes in a row that counted.
    failures: u32,
}

impl HealthMachine {
    /// A task that just started: STARTING.
    pub fn new(retries: u32, start_period: Duration) -> Self {
        Self::resumed(retries, start_period, ContainerHealth::Starting)
    }

    /// A task found running after a daemon restart, last reported `health`
    /// (NONE counts as STARTING).
    pub fn resumed(retries: u32, start_period: Duration, health: ContainerHealth) -> Self {
        let health = match health {
            ContainerHealth::None => ContainerHealth::Starting,
            other => other,
        };
        Self {
            retries: retries.max(1),
            start_period,
            health,
            failures: 0,
        }
    }

    /// The current verdict.
    pub fn health(&self) -> ContainerHealth {
        self.health
    }

    /// Takes one probe's result, `since_start` after the task started;
    /// returns the new health when it changed.
    pub fn record(&mut self, passed: bool, since_start: Duration) -> Option<ContainerHealth> {
        let before = self.health;
        if passed {
            self.failures = 0;
            self.health = ContainerHealth::Healthy;
        } else if self.health == ContainerHealth::Starting && since_start < self.start_period {
            // Still starting up: failures do not count yet.
        } else {
            self.failures = self.failures.saturating_add(1);
            if self.failures >= self.retries {
                self.health = ContainerHealth::Unhealthy;
            }
        }
        (self.health != before).then_some(self.health)
    }
}

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    pub passed: bool,
    /// Its output (or why it could not run), bounded.
    pub output: String,
}

/// The health check of one running task, held by its controller.
#[derive(Debug)]
pub struct HealthMonitor {
    rules: HealthRules,
    machine: HealthMachine,
    started_at: Instant,
    next_probe_at: Instant,
    /// Output of the last probe.
    last_output: String,
}

impl HealthMonitor {
    /// Monitors a task that started at `started_at` (now, or a daemon
    /// restart), with `health` as last reported; `None` when the check
    /// runs nothing.
    pub fn new(
        config: &HealthConfig,
        health: ContainerHealth,
        started_at: Instant,
    ) -> Option<Self> {
        let rules = HealthRules::from_config(config)?;
        let machine = HealthMachine::resumed(rules.retries, rules.start_period, health);
        Some(Self {
            next_probe_at: started_at + rules.interval,
            machine,
            rules,
            started_at,
            last_output: String::new(),
        })
    }

    /// The current verdict.
    pub fn health(&self) -> ContainerHealth {
        self.machine.health()
    }

    /// The last probe's output.
    pub fn last_output(&self) -> &str {
        &self.last_output
    }

    /// The next probe: waits until it is due, then runs it. Owns what it
    /// needs, so the controller can drop it (a probe is then run again).
    pub fn next_probe(
        &self,
        runtime: Arc<dyn Runtime>,
        task_id: String,
    ) -> impl Future<Output = ProbeResult> + Send + 'static {
        let argv = self.rules.argv.clone();
        let timeout = self.rules.timeout;
        let due = self.next_probe_at;
        async move {
            tokio::time::sleep_until(due).await;
            run_probe(runtime.as_ref(), &task_id, &argv, timeout).await
        }
    }

    /// Takes a probe's result, schedules the next probe; returns the new
    /// health when it changed.
    pub fn record(&mut self, probe: ProbeResult, now: Instant) -> Option<ContainerHealth> {
        self.last_output = probe.output;
        self.next_probe_at = now + self.rules.interval;
        self.machine
            .record(probe.passed, now.saturating_duration_since(self.started_at))
    }
}

/// Runs one probe inside the task; an error of the runtime, or a runtime
/// that does not answer within the timeout and `HEALTH_PROBE_SLACK`, is a
/// failed probe.
async fn run_probe(
    runtime: &dyn Runtime,
    task_id: &str,
    argv: &[String],
    timeout: Duration,
) -> ProbeResult {
    let exec = runtime.exec(task_id, argv, timeout);
    match tokio::time::timeout(timeout + HEALTH_PROBE_SLACK, exec).await {
        Ok(Ok(outcome)) => {
            let passed = outcome.exit.success();
            let output = if outcome.output.trim().is_empty() && !passed {
                format!("health check exited with code {}", outcome.exit.exit_code())
            } else {
                outcome.output
            };
            ProbeResult {
                passed,
                output: bounded(output),
            }
        }
        Ok(Err(e)) => ProbeResult {
            passed: false,
            output: bounded(e.to_string()),
        },
        Err(_) => ProbeResult {
            passed: false,
            output: format!("health check exceeded timeout ({timeout:?})"),
        },
    }
}

/// `text` cut to `EXEC_OUTPUT_BYTES_MAX` bytes on a char boundary.
pub fn bounded(mut text: String) -> String {
    if text.len() > EXEC_OUTPUT_BYTES_MAX {
        let mut end = EXEC_OUTPUT_BYTES_MAX;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    //! The rules, fed probe results by hand. Goal: Docker's semantics for
    //! defaults, the start period, retries and recovery.

    use super::*;

    fn config(test: &[&str]) -> HealthConfig {
        HealthConfig {
            test: test.iter().map(|s| s.to_string()).collect(),
            ..HealthConfig::default()
        }
    }

    #[test]
    fn defaults_are_dockers() {
        let rules = HealthRules::from_config(&config(&["CMD-SHELL", "test -f /ok"])).unwrap();
        assert_eq!(rules.argv, ["/bin/sh", "-c", "test -f /ok"]);
        assert_eq!(rules.interval, Duration::from_secs(30));
        assert_eq!(rules.timeout, Duration::from_secs(30));
        assert_eq!(rules.retries, 3);
        assert_eq!(rules.start_period, Duration::ZERO);
        let zeros = HealthConfig {
            retries: Some(0),
            interval_ms: Some(0),
            ..config(&["CMD", "true"])
        };
        let rules = HealthRules::from_config(&zeros).unwrap();
        assert_eq!(
            (rules.retries, rules.interval),
            (3, Duration::from_secs(30))
        );
        assert_eq!(rules.argv, ["true"]);
    }

    #[test]
    fn tests_that_run_nothing_give_no_check() {
        for test in [
            &[][..],
            &["NONE"],
            &["CMD"],
            &["CMD", ""],
            &["CMD-SHELL"],
            &["WHAT", "x"],
        ] {
            assert_eq!(HealthRules::from_config(&config(test)), None, "{test:?}");
        }
    }

    #[test]
    fn the_interval_has_a_floor() {
        let fast = HealthConfig {
            interval_ms: Some(1),
            ..config(&["CMD", "true"])
        };
        let rules = HealthRules::from_config(&fast).unwrap();
        assert_eq!(rules.interval, HEALTH_INTERVAL_MIN);
    }

    #[test]
    fn retries_failures_in_a_row_make_it_unhealthy() {
        let mut machine = HealthMachine::new(3, Duration::ZERO);
        assert_eq!(machine.health(), ContainerHealth::Starting);
        let t = Duration::from_secs(60);
        assert_eq!(machine.record(false, t), None);
        assert_eq!(machine.record(false, t), None);
        assert_eq!(machine.record(false, t), Some(ContainerHealth::Unhealthy));
        assert_eq!(machine.record(false, t), None, "only changes are reported");
    }

    #[test]
    fn a_pass_resets_the_streak_and_recovers() {
        let mut machine = HealthMachine::new(2, Duration::ZERO);
        let t = Duration::from_secs(60);
        assert_eq!(machine.record(true, t), Some(ContainerHealth::Healthy));
        assert_eq!(machine.record(true, t), None);
        assert_eq!(machine.record(false, t), None);
        assert_eq!(machine.record(true, t), None, "the streak starts over");
        assert_eq!(machine.record(false, t), None);
        assert_eq!(machine.record(false, t), Some(ContainerHealth::Unhealthy));
        assert_eq!(machine.record(true, t), Some(ContainerHealth::Healthy));
    }

    #[test]
    fn failures_in_the_start_period_do_not_count() {
        let mut machine = HealthMachine::new(1, Duration::from_secs(10));
        for second in 0..10 {
            assert_eq!(machine.record(false, Duration::from_secs(second)), None);
        }
        assert_eq!(machine.health(), ContainerHealth::Starting);
        assert_eq!(
            machine.record(false, Duration::from_secs(10)),
            Some(ContainerHealth::Unhealthy),
            "the period is over"
        );
    }

    #[test]
    fn a_pass_ends_the_start_period() {
        let mut machine = HealthMachine::new(1, Duration::from_secs(10));
        assert_eq!(
            machine.record(true, Duration::from_secs(1)),
            Some(ContainerHealth::Healthy)
        );
        assert_eq!(
            machine.record(false, Duration::from_secs(2)),
            Some(ContainerHealth::Unhealthy),
            "after a pass, failures count even within the period"
        );
    }

    #[test]
    fn a_resumed_task_keeps_its_verdict() {
        let machine = HealthMachine::resumed(3, Duration::ZERO, ContainerHealth::Healthy);
        assert_eq!(machine.health(), ContainerHealth::Healthy);
        let fresh = HealthMachine::resumed(3, Duration::ZERO, ContainerHealth::None);
        assert_eq!(fresh.health(), ContainerHealth::Starting);
    }

    #[test]
    fn output_is_bounded_on_a_char_boundary() {
        let long = "é".repeat(EXEC_OUTPUT_BYTES_MAX);
        let cut = bounded(long);
        assert!(cut.len() <= EXEC_OUTPUT_BYTES_MAX && cut.len() >= EXEC_OUTPUT_BYTES_MAX - 1);
    }
}
