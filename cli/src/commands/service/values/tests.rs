//! Every flag value a user may type, accepted or refused, with the message
//! a refusal shows. Method: table-driven calls of the pure parsers.

use std::time::Duration;

use proptest::prelude::*;
use rswarm_proto::{PortConfig, PortProtocol, PublishMode};

use super::*;

#[test]
fn memory_sizes_use_binary_units_like_docker() {
    let cases: &[(&str, i64)] = &[
        ("100", 100),
        ("0", 0),
        ("100b", 100),
        ("512M", 512 << 20),
        ("512m", 512 << 20),
        ("512MB", 512 << 20),
        ("512MiB", 512 << 20),
        ("1G", 1 << 30),
        ("1g", 1 << 30),
        ("1.5g", 3 << 29),
        ("1.5G", 1_610_612_736),
        ("100k", 100 << 10),
        ("2t", 2 << 40),
        ("1 g", 1 << 30),
        (".5k", 512),
    ];
    for (raw, want) in cases {
        assert_eq!(memory_bytes(raw), Ok(*want), "{raw}");
    }
}

#[test]
fn bad_memory_sizes_are_refused_with_an_example() {
    for raw in ["", "-1G", "1x", "G", "1.2.3g", "1e9", "abc", "1gg", "."] {
        let err = memory_bytes(raw).expect_err(raw);
        assert!(
            err.contains("invalid memory size") && err.contains("e.g. 512M"),
            "{raw}: {err}"
        );
    }
    let err = memory_bytes("99999999999p").expect_err("too large");
    assert!(err.contains("too large"), "{err}");
}

#[test]
fn cpus_become_nano_cpus_exactly() {
    let cases: &[(&str, i64)] = &[
        ("0.5", 500_000_000),
        ("2", 2_000_000_000),
        ("0", 0),
        (".25", 250_000_000),
        ("1.000000001", 1_000_000_001),
        ("0.001", 1_000_000),
        ("16", 16_000_000_000),
    ];
    for (raw, want) in cases {
        assert_eq!(nano_cpus(raw), Ok(*want), "{raw}");
    }
}

#[test]
fn bad_cpus_are_refused() {
    for raw in ["", "-1", "half", "1,5", "0x10", "1e3", "NaN"] {
        let err = nano_cpus(raw).expect_err(raw);
        assert!(err.contains("invalid CPU count"), "{raw}: {err}");
    }
    let err = nano_cpus("0.0000000001").expect_err("too precise");
    assert!(err.contains("too precise"), "{err}");
    let err = nano_cpus("99999999999").expect_err("too large");
    assert!(err.contains("too large"), "{err}");
}

#[test]
fn durations_read_like_docker_and_refuse_the_rest() {
    assert_eq!(duration("10s"), Ok(Duration::from_secs(10)));
    assert_eq!(duration("1m30s"), Ok(Duration::from_secs(90)));
    assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(duration("1.5s"), Ok(Duration::from_millis(1500)));
    assert_eq!(duration("0"), Ok(Duration::ZERO));
    assert_eq!(duration_ms("2h"), Ok(7_200_000));
    for raw in ["", "-5s", "5", "ten seconds", "10S"] {
        let err = duration(raw).expect_err(raw);
        assert_eq!(
            err,
            format!("invalid duration {raw:?}: use a number with a unit, e.g. 10s, 1m30s, 500ms")
        );
    }
}

#[test]
fn counts_refuse_negative_values_with_their_name() {
    assert_eq!(replicas("3"), Ok(3));
    assert_eq!(replicas("0"), Ok(0));
    assert_eq!(
        replicas("-1"),
        Err("invalid replica count \"-1\": it cannot be negative".to_string())
    );
    assert_eq!(
        replicas("three"),
        Err("invalid replica count \"three\": use a whole number, e.g. 3".to_string())
    );
    assert_eq!(pids_limit("100"), Ok(100));
    assert!(pids_limit("-2").is_err());
    assert!(max_attempts("1.5").is_err());
    assert_eq!(parallelism("0"), Ok(0));
    assert_eq!(max_replicas("2"), Ok(2));
}

#[test]
fn failure_ratios_are_fractions() {
    assert_eq!(failure_ratio("0.2"), Ok(0.2));
    assert_eq!(failure_ratio("1"), Ok(1.0));
    assert_eq!(failure_ratio("0"), Ok(0.0));
    for raw in ["1.5", "-0.1", "NaN", "x"] {
        assert!(failure_ratio(raw).is_err(), "{raw}");
    }
}

#[test]
fn labels_take_key_value_or_key() {
    assert_eq!(label("a=b"), Ok(("a".into(), "b".into())));
    assert_eq!(label("a=b=c"), Ok(("a".into(), "b=c".into())));
    assert_eq!(label("flag"), Ok(("flag".into(), String::new())));
    assert_eq!(
        label("=x"),
        Err("invalid label \"=x\": use key=value".to_string())
    );
}

#[test]
fn env_entries_take_key_value_or_a_key_from_this_shell() {
    let lookup = |key: &str| (key == "HOME").then(|| "/root".to_string());
    assert_eq!(env_entry_with("A=1", lookup), Ok("A=1".into()));
    assert_eq!(env_entry_with("A=", lookup), Ok("A=".into()));
    assert_eq!(env_entry_with("A=x=y", lookup), Ok("A=x=y".into()));
    assert_eq!(env_entry_with("HOME", lookup), Ok("HOME=/root".into()));
    assert_eq!(
        env_entry_with("UNSET_HERE", lookup),
        Err(
            "environment variable UNSET_HERE is not set here: give its value with UNSET_HERE=VALUE"
                .into()
        )
    );
    for raw in ["=1", "", "A B=1"] {
        let err = env_entry_with(raw, lookup).expect_err(raw);
        assert!(err.starts_with("invalid environment variable"), "{err}");
    }
    assert_eq!(env_key("A"), Ok("A".into()));
    assert_eq!(env_key("A=1"), Ok("A".into()));
    assert!(env_key("").is_err());
}

#[test]
fn constraints_need_an_operator_and_both_sides() {
    assert_eq!(
        constraint("node.hostname==web1"),
        Ok("node.hostname==web1".into())
    );
    assert_eq!(
        constraint("node.labels.zone!=a"),
        Ok("node.labels.zone!=a".into())
    );
    for raw in ["node.hostname=web1", "==web1", "node.role==", "x"] {
        let err = constraint(raw).expect_err(raw);
        assert!(err.contains("e.g. node.hostname==web1"), "{raw}: {err}");
    }
}

#[test]
fn placement_preferences_only_spread() {
    assert_eq!(
        placement_pref("spread=node.labels.zone"),
        Ok("node.labels.zone".into())
    );
    assert_eq!(
        placement_pref("pack=node.labels.zone"),
        Err("unsupported placement preference strategy \"pack\": only spread is supported".into())
    );
    assert!(placement_pref("spread=").is_err());
    assert!(placement_pref("node.labels.zone").is_err());
}

#[test]
fn stop_signals_are_names_or_numbers() {
    for raw in ["SIGTERM", "TERM", "SIGRTMIN+3", "9", "64"] {
        assert_eq!(stop_signal(raw), Ok(raw.to_string()), "{raw}");
    }
    for raw in ["", "0", "65", "sigterm", "SIG TERM", "-9"] {
        assert!(stop_signal(raw).is_err(), "{raw}");
    }
}

fn host(published: u32, target: u32, protocol: PortProtocol) -> PortConfig {
    PortConfig {
        name: String::new(),
        protocol: protocol as i32,
        target_port: target,
        published_port: published,
        publish_mode: PublishMode::Host as i32,
    }
}

#[test]
fn ports_in_long_and_short_form() {
    let cases: &[(&str, PortConfig)] = &[
        (
            "published=8080,target=80",
            host(8080, 80, PortProtocol::Tcp),
        ),
        (
            "published=53,target=53,protocol=udp,mode=host",
            host(53, 53, PortProtocol::Udp),
        ),
        ("target=80", host(0, 80, PortProtocol::Tcp)),
        ("8080:80", host(8080, 80, PortProtocol::Tcp)),
        ("8080:80/udp", host(8080, 80, PortProtocol::Udp)),
        ("9000:9000/sctp", host(9000, 9000, PortProtocol::Sctp)),
        ("80", host(0, 80, PortProtocol::Tcp)),
    ];
    for (raw, want) in cases {
        assert_eq!(port(raw).as_ref(), Ok(want), "{raw}");
    }
}

#[test]
fn ingress_ports_are_refused_until_the_routing_mesh_exists() {
    let err = port("published=8080,target=80,mode=ingress").expect_err("ingress");
    assert!(
        err.contains("routing mesh is not available yet") && err.contains("mode=host"),
        "{err}"
    );
}

#[test]
fn bad_ports_are_refused_with_the_reason() {
    let cases: &[(&str, &str)] = &[
        ("published=8080", "the target port is missing"),
        ("8080:99999", "use a number from 1 to 65535"),
        ("8080:80/icmp", "use tcp, udp or sctp"),
        (
            "published=8080,target=80,color=red",
            "unknown field \"color\"",
        ),
        ("published=8080,target", "invalid field \"target\""),
        ("8080-8081:80-81", "port ranges are not supported"),
        ("published=1,target=2,mode=bridge", "invalid publish mode"),
        ("x:80", "invalid port number \"x\""),
        ("", "invalid port number"),
    ];
    for (raw, want) in cases {
        let err = port(raw).expect_err(raw);
        assert!(err.contains(want), "{raw}: {err}");
    }
}

#[test]
fn ports_to_remove_may_name_only_the_target() {
    assert_eq!(port_to_remove("80"), Ok(host(0, 80, PortProtocol::Tcp)));
    assert_eq!(port_to_remove("53/udp"), Ok(host(0, 53, PortProtocol::Udp)));
    assert_eq!(
        port_to_remove("8080:80"),
        Ok(host(8080, 80, PortProtocol::Tcp))
    );
    assert!(port_to_remove("0").is_err());
    assert!(port_to_remove("web").is_err());
}

#[test]
fn shell_words_split_like_a_shell() {
    let cases: &[(&str, &[&str])] = &[
        ("", &[]),
        ("  a  b ", &["a", "b"]),
        (
            "sh -c 'echo hi; sleep 1'",
            &["sh", "-c", "echo hi; sleep 1"],
        ),
        (r#"echo "a \"b\"" c"#, &["echo", "a \"b\"", "c"]),
        (r"a\ b", &["a b"]),
        ("x''", &["x"]),
        ("''", &[""]),
    ];
    for (raw, want) in cases {
        assert_eq!(
            shell_words(raw),
            Ok(want.iter().map(|s| s.to_string()).collect()),
            "{raw}"
        );
    }
    assert!(shell_words("'open").is_err());
    assert!(shell_words("\"open").is_err());
    assert!(shell_words("trailing\\").is_err());
}

#[test]
fn sizes_and_cpus_print_for_people() {
    assert_eq!(format_bytes(512 << 20), "512MiB");
    assert_eq!(format_bytes(3 << 29), "1.5GiB");
    assert_eq!(format_bytes(100), "100B");
    assert_eq!(format_cpus(500_000_000), "0.5");
    assert_eq!(format_cpus(2_000_000_000), "2");
    assert_eq!(format_cpus(1_250_000_000), "1.25");
}

#[test]
fn oversized_values_are_refused() {
    let huge = "x".repeat(FLAG_VALUE_BYTES_MAX + 1);
    assert!(label(&huge).unwrap_err().contains("over the limit"));
    assert!(shell_words(&huge).unwrap_err().contains("over the limit"));
}

proptest! {
    /// Any whole number of MiB reads back exactly, in every spelling.
    #[test]
    fn whole_mebibytes_round_trip(n in 0i64..1_000_000) {
        prop_assert_eq!(memory_bytes(&format!("{n}M")), Ok(n << 20));
        prop_assert_eq!(memory_bytes(&format!("{n}mib")), Ok(n << 20));
    }

    /// Nano-CPUs printed for people parse back to the same value.
    #[test]
    fn cpus_round_trip(nanos in 0i64..1_000_000_000_000) {
        prop_assert_eq!(nano_cpus(&format_cpus(nanos)), Ok(nanos));
    }

    /// No input makes a parser panic.
    #[test]
    fn parsers_never_panic(raw in ".{0,40}") {
        let _ = memory_bytes(&raw);
        let _ = nano_cpus(&raw);
        let _ = duration(&raw);
        let _ = port(&raw);
        let _ = port_to_remove(&raw);
        let _ = shell_words(&raw);
        let _ = stop_signal(&raw);
        let _ = constraint(&raw);
    }
}
