//! Validation of a service's health check (`ContainerSpec.healthcheck`),
//! with Docker's rules: a test is `[]` (inherit the image's), `["NONE"]`
//! (no check, and then nothing else may be set), `["CMD", prog, args…]`
//! or `["CMD-SHELL", command]`; durations are 0 (the default) or more;
//! retries are bounded. Defaults are left for the agent to fill in, since
//! an image's own check may set them.

use rswarm_proto::HealthConfig;

use super::SpecError;

/// Longest interval, timeout or start period accepted. A day is far above
/// any real probe; a longer value is a unit mistake (ms read as s).
pub const HEALTH_DURATION_MS_MAX: u64 = 24 * 3600 * 1000;

/// Most consecutive failures a check may ask for before a task counts as
/// unhealthy; beyond this a task would never be replaced in practice.
pub const HEALTH_RETRIES_MAX: u32 = 1000;

/// Bytes of a check's test, all words together: a probe is one command
/// line, and the test travels in every task of the service.
pub const HEALTH_TEST_BYTES_MAX: usize = 8 * 1024;

/// Checks `check` (an absent one is fine).
pub fn check_healthcheck(check: Option<&HealthConfig>) -> Result<(), SpecError> {
    let Some(check) = check else {
        return Ok(());
    };
    check_test(&check.test)?;
    let durations = [
        ("--health-interval", check.interval_ms),
        ("--health-timeout", check.timeout_ms),
        ("--health-start-period", check.start_period_ms),
    ];
    let is_none = check.test.first().is_some_and(|kind| kind == "NONE");
    let tuned = durations.iter().any(|(_, ms)| ms.is_some()) || check.retries.is_some();
    if is_none && tuned {
        return Err(SpecError::new(
            "--no-healthcheck cannot be combined with other --health-* options: drop one of them",
        ));
    }
    for (flag, ms) in durations {
        if ms.is_some_and(|ms| ms > HEALTH_DURATION_MS_MAX) {
            return Err(SpecError::new(format!(
                "{flag} is longer than the limit of 24h: give a shorter duration, e.g. 30s"
            )));
        }
    }
    if check.retries.is_some_and(|n| n > HEALTH_RETRIES_MAX) {
        return Err(SpecError::new(format!(
            "--health-retries is above the limit of {HEALTH_RETRIES_MAX}"
        )));
    }
    Ok(())
}

fn check_test(test: &[String]) -> Result<(), SpecError> {
    let bytes: usize = test.iter().map(String::len).sum();
    if bytes > HEALTH_TEST_BYTES_MAX {
        return Err(SpecError::new(format!(
            "the health check command is {bytes} bytes, above the limit of \
             {HEALTH_TEST_BYTES_MAX}: run a script instead"
        )));
    }
    let Some((kind, rest)) = test.split_first() else {
        return Ok(());
    };
    let has_command = rest.first().is_some_and(|word| !word.trim().is_empty());
    match kind.as_str() {
        "NONE" if rest.is_empty() => Ok(()),
        "CMD" | "CMD-SHELL" if has_command => Ok(()),
        "NONE" => Err(SpecError::new(
            "a health check test [\"NONE\"] takes nothing after NONE",
        )),
        "CMD" | "CMD-SHELL" => Err(SpecError::new(
            "the health check command is empty: give one with --health-cmd",
        )),
        other => Err(SpecError::new(format!(
            "health check test kind {other:?} is unknown: use NONE, CMD or CMD-SHELL"
        ))),
    }
}

#[cfg(test)]
mod tests {
    //! Goal: what `service create/update` refuses in a health check.

    use super::*;

    fn check(test: &[&str]) -> HealthConfig {
        HealthConfig {
            test: test.iter().map(|s| s.to_string()).collect(),
            ..HealthConfig::default()
        }
    }

    #[test]
    fn good_checks_pass() {
        assert!(check_healthcheck(None).is_ok());
        for test in [
            &[][..],
            &["NONE"],
            &["CMD", "true"],
            &["CMD-SHELL", "curl -f x"],
        ] {
            assert!(check_healthcheck(Some(&check(test))).is_ok(), "{test:?}");
        }
        let tuned = HealthConfig {
            interval_ms: Some(1),
            timeout_ms: Some(0),
            retries: Some(5),
            start_period_ms: Some(60_000),
            ..check(&["CMD-SHELL", "true"])
        };
        assert!(check_healthcheck(Some(&tuned)).is_ok());
        let durations_only = HealthConfig {
            interval_ms: Some(5_000),
            ..check(&[])
        };
        assert!(
            check_healthcheck(Some(&durations_only)).is_ok(),
            "tunes the image's"
        );
    }

    #[test]
    fn bad_checks_are_refused_with_the_flag_named() {
        let refused = |c: HealthConfig| check_healthcheck(Some(&c)).unwrap_err().to_string();
        let none_tuned = HealthConfig {
            retries: Some(2),
            ..check(&["NONE"])
        };
        assert!(refused(none_tuned).contains("--no-healthcheck"));
        assert!(refused(check(&["CMD-SHELL", " "])).contains("--health-cmd"));
        assert!(refused(check(&["CMD"])).contains("empty"));
        assert!(refused(check(&["SHELL", "x"])).contains("NONE, CMD or CMD-SHELL"));
        assert!(refused(check(&["NONE", "x"])).contains("nothing after"));
        let long = HealthConfig {
            timeout_ms: Some(HEALTH_DURATION_MS_MAX + 1),
            ..check(&["CMD", "true"])
        };
        assert!(refused(long).contains("--health-timeout"));
        let many = HealthConfig {
            retries: Some(HEALTH_RETRIES_MAX + 1),
            ..check(&["CMD", "true"])
        };
        assert!(refused(many).contains("--health-retries"));
        let huge = "x".repeat(HEALTH_TEST_BYTES_MAX);
        assert!(refused(check(&["CMD-SHELL", &huge])).contains("limit"));
    }
}
