//! The shim's control protocol: one request line, one answer line, over the
//! unix socket in the task directory. Text, so that an operator can talk to
//! a shim with `socat`.
//!
//! Requests: `status`, `wait` (answered when the task has ended and its exit
//! record is on disk), `signal <n>` (to the main process), `stop <n>
//! <grace ms>` (signal `n` now, SIGKILL to everything of the task after the
//! grace period; the shim does the escalation, so it happens even when the
//! daemon goes away). Answers: `running <pid>`, `exited`, `ok`,
//! `error <message>`. How the task ended is read from the exit record, never
//! from the socket.

/// A request to the shim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Status,
    Wait,
    Signal { signal: i32 },
    Stop { signal: i32, grace_ms: u64 },
}

/// A shim's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Running { pid: u32 },
    Exited,
    Ok,
    Error { message: String },
}

impl Request {
    /// The request as a line, with its newline.
    pub fn to_line(self) -> String {
        match self {
            Request::Status => "status\n".to_string(),
            Request::Wait => "wait\n".to_string(),
            Request::Signal { signal } => format!("signal {signal}\n"),
            Request::Stop { signal, grace_ms } => format!("stop {signal} {grace_ms}\n"),
        }
    }

    /// Parses a line (without its newline); `None` for anything else.
    pub fn parse(line: &str) -> Option<Self> {
        let mut words = line.split_ascii_whitespace();
        let request = match words.next()? {
            "status" => Request::Status,
            "wait" => Request::Wait,
            "signal" => Request::Signal {
                signal: words.next()?.parse().ok()?,
            },
            "stop" => Request::Stop {
                signal: words.next()?.parse().ok()?,
                grace_ms: words.next()?.parse().ok()?,
            },
            _ => return None,
        };
        words.next().is_none().then_some(request)
    }
}

impl Reply {
    /// The answer as a line, with its newline.
    pub fn to_line(&self) -> String {
        match self {
            Reply::Running { pid } => format!("running {pid}\n"),
            Reply::Exited => "exited\n".to_string(),
            Reply::Ok => "ok\n".to_string(),
            Reply::Error { message } => format!("error {}\n", message.replace('\n', " ")),
        }
    }

    /// Parses a line (without its newline); `None` for anything else.
    pub fn parse(line: &str) -> Option<Self> {
        let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
        match verb {
            "running" => Some(Reply::Running {
                pid: rest.trim().parse().ok()?,
            }),
            "exited" if rest.is_empty() => Some(Reply::Exited),
            "ok" if rest.is_empty() => Some(Reply::Ok),
            "error" => Some(Reply::Error {
                message: rest.to_string(),
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn request() -> impl Strategy<Value = Request> {
        prop_oneof![
            Just(Request::Status),
            Just(Request::Wait),
            any::<i32>().prop_map(|signal| Request::Signal { signal }),
            (any::<i32>(), any::<u64>())
                .prop_map(|(signal, grace_ms)| Request::Stop { signal, grace_ms }),
        ]
    }

    proptest! {
        #[test]
        fn requests_survive_the_wire(request in request()) {
            let line = request.to_line();
            prop_assert_eq!(Request::parse(line.trim_end_matches('\n')), Some(request));
        }

        #[test]
        fn replies_survive_the_wire(pid in any::<u32>(), message in "[^\n]*") {
            for reply in [Reply::Running { pid }, Reply::Exited, Reply::Ok, Reply::Error { message: message.clone() }] {
                let line = reply.to_line();
                prop_assert_eq!(Reply::parse(line.trim_end_matches('\n')), Some(reply));
            }
        }

        #[test]
        fn any_line_parses_to_nothing_or_a_request_that_round_trips(line in "\\PC*") {
            if let Some(request) = Request::parse(&line) {
                let again = request.to_line();
                prop_assert_eq!(Request::parse(again.trim_end_matches('\n')), Some(request));
            }
            let _ = Reply::parse(&line);
        }
    }

    #[test]
    fn malformed_requests_are_refused() {
        for line in [
            "",
            "stop",
            "stop 15",
            "stop x 10",
            "signal",
            "wait now",
            "kill 9",
        ] {
            assert_eq!(Request::parse(line), None, "{line:?}");
        }
    }
}
