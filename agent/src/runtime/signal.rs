//! Stop signals as users write them: `SIGTERM`, `TERM`, `term` or `15`.
//!
//! Invariant: a parsed signal is one the kernel names (no real-time
//! signals), so the shim can always send it.

use rustix::process::Signal;

/// The signal names accepted, without their `SIG` prefix.
const NAMED: &[(&str, Signal)] = &[
    ("HUP", Signal::HUP),
    ("INT", Signal::INT),
    ("QUIT", Signal::QUIT),
    ("ILL", Signal::ILL),
    ("TRAP", Signal::TRAP),
    ("ABRT", Signal::ABORT),
    ("IOT", Signal::ABORT),
    ("BUS", Signal::BUS),
    ("FPE", Signal::FPE),
    ("KILL", Signal::KILL),
    ("USR1", Signal::USR1),
    ("SEGV", Signal::SEGV),
    ("USR2", Signal::USR2),
    ("PIPE", Signal::PIPE),
    ("ALRM", Signal::ALARM),
    ("TERM", Signal::TERM),
    ("STKFLT", Signal::STKFLT),
    ("CHLD", Signal::CHILD),
    ("CONT", Signal::CONT),
    ("STOP", Signal::STOP),
    ("TSTP", Signal::TSTP),
    ("TTIN", Signal::TTIN),
    ("TTOU", Signal::TTOU),
    ("URG", Signal::URG),
    ("XCPU", Signal::XCPU),
    ("XFSZ", Signal::XFSZ),
    ("VTALRM", Signal::VTALARM),
    ("PROF", Signal::PROF),
    ("WINCH", Signal::WINCH),
    ("IO", Signal::IO),
    ("POLL", Signal::IO),
    ("PWR", Signal::POWER),
    ("SYS", Signal::SYS),
];

/// The signal `text` names, or `None`. Empty text is not a signal (the
/// caller picks the default).
pub fn parse_signal(text: &str) -> Option<i32> {
    let text = text.trim();
    if let Ok(number) = text.parse::<i32>() {
        return Signal::from_named_raw(number).map(Signal::as_raw);
    }
    let upper = text.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    NAMED
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, signal)| signal.as_raw())
}

/// The name of signal `number` for messages (`SIGTERM`), or its number.
pub fn signal_name(number: i32) -> String {
    NAMED
        .iter()
        .find(|(_, signal)| signal.as_raw() == number)
        .map_or_else(|| number.to_string(), |(name, _)| format!("SIG{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_a_signal_parses() {
        for text in ["SIGTERM", "TERM", "term", "SigTerm", " 15 "] {
            assert_eq!(parse_signal(text), Some(15), "{text:?}");
        }
        assert_eq!(parse_signal("SIGKILL"), Some(9));
        assert_eq!(parse_signal("USR1"), Some(Signal::USR1.as_raw()));
        assert_eq!(parse_signal("POLL"), parse_signal("SIGIO"));
    }

    #[test]
    fn unknown_signals_are_refused() {
        for text in ["", "SIG", "TERMINATE", "0", "-9", "65", "SIGRTMIN+1"] {
            assert_eq!(parse_signal(text), None, "{text:?}");
        }
    }

    #[test]
    fn names_round_trip() {
        for (name, signal) in NAMED {
            let number = signal.as_raw();
            assert_eq!(parse_signal(name), Some(number));
            assert_eq!(parse_signal(&signal_name(number)), Some(number));
        }
        assert_eq!(signal_name(15), "SIGTERM");
    }
}
