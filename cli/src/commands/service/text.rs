//! How services and tasks read for people, the way Docker writes them:
//! 12-character IDs, task names `<service>.<slot>` (`<service>.<node id>`
//! for global tasks), state names, `*:8080->80/tcp` ports, and the image
//! (or, for the process driver, the command) a task runs.
//!
//! Pure functions over proto values; every command that shows a service or
//! a task goes through them, so `ls`, `ps`, `node ps`, `logs` and the
//! progress display agree.

use rswarm_proto::{PortConfig, Service, ServiceSpec, Task, TaskSpec, TaskState};

use super::spec::{DriverFlag, protocol_name};

/// Characters of an ID shown unless `--no-trunc`, as Docker does.
pub const ID_CHARS_SHORT: usize = 12;

/// Characters of a process command shown in an IMAGE column: enough for
/// `/usr/bin/python3 -m http.server`, short enough to keep the table on
/// one line of an 80-column terminal.
pub const COMMAND_CHARS_MAX: usize = 30;

/// The first 12 characters of an ID.
pub fn short_id(id: &str) -> &str {
    cut_at_char(id, ID_CHARS_SHORT)
}

/// The ID as shown: short unless `no_trunc`.
pub fn shown_id(id: &str, no_trunc: bool) -> String {
    if no_trunc {
        id.to_string()
    } else {
        short_id(id).to_string()
    }
}

/// The longest prefix of `text` with at most `chars` characters.
fn cut_at_char(text: &str, chars: usize) -> &str {
    match text.char_indices().nth(chars) {
        Some((idx, _)) => &text[..idx],
        None => text,
    }
}

/// `text` cut to `chars` characters, the last one an ellipsis when cut.
pub fn ellipsize(text: &str, chars: usize) -> String {
    if text.chars().count() <= chars {
        return text.to_string();
    }
    let kept = cut_at_char(text, chars.saturating_sub(1));
    format!("{kept}…")
}

/// The ID of a service (empty when the manager sent none).
pub fn service_id(service: &Service) -> &str {
    service.meta.as_ref().map_or("", |m| m.id.as_str())
}

/// The name of a service.
pub fn service_name(service: &Service) -> &str {
    service
        .spec
        .as_ref()
        .and_then(|s| s.annotations.as_ref())
        .map_or("", |a| a.name.as_str())
}

/// The ID of a task.
pub fn task_id(task: &Task) -> &str {
    task.meta.as_ref().map_or("", |m| m.id.as_str())
}

/// `web.2`, or `web.<node id>` for a global task (slot 0). A task whose
/// service name is unknown is named after its service's short ID.
pub fn task_name(task: &Task) -> String {
    let service = if task.service_name.is_empty() {
        short_id(&task.service_id)
    } else {
        task.service_name.as_str()
    };
    if task.slot == 0 && !task.node_id.is_empty() {
        format!("{service}.{}", task.node_id)
    } else {
        format!("{service}.{}", task.slot)
    }
}

/// "running", "pending", ...: a state as the progress display words it.
pub fn state_word(state: i32) -> String {
    TaskState::try_from(state)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("TASK_STATE_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| "unknown".to_string())
}

/// "Running", "Pending", ...: a state as tables word it.
pub fn state_name(state: i32) -> String {
    let word = state_word(state);
    let mut chars = word.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().collect::<String>() + chars.as_str())
        .unwrap_or_default()
}

/// `*:8080->80/tcp`, or `80/tcp` for a port without a published port;
/// comma-joined.
pub fn ports_text(ports: &[PortConfig]) -> String {
    ports
        .iter()
        .map(|p| {
            let proto = protocol_name(p.protocol);
            if p.published_port == 0 {
                format!("{}/{proto}", p.target_port)
            } else {
                format!("*:{}->{}/{proto}", p.published_port, p.target_port)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The published ports of a service spec.
pub fn spec_ports(spec: &ServiceSpec) -> &[PortConfig] {
    spec.endpoint.as_ref().map_or(&[], |e| e.ports.as_slice())
}

/// What a task spec runs, for an IMAGE column: the image without its
/// digest (`nginx:1.27`), or for the process driver the command line
/// (`/bin/sleep 600`) cut to `COMMAND_CHARS_MAX`. `no_trunc` shows all.
pub fn image_text(task: &TaskSpec, no_trunc: bool) -> String {
    let container = task.container.clone().unwrap_or_default();
    if task.driver == DriverFlag::Process.name() {
        let command = container
            .command
            .iter()
            .chain(&container.args)
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(" ");
        return if no_trunc {
            command
        } else {
            ellipsize(&command, COMMAND_CHARS_MAX)
        };
    }
    if no_trunc {
        return container.image;
    }
    match container.image.split_once("@sha256:") {
        Some((name, _)) => name.to_string(),
        None => container.image,
    }
}

#[cfg(test)]
mod tests {
    use rswarm_proto::{ContainerSpec, PortProtocol};

    use super::*;

    #[test]
    fn task_names_use_the_slot_or_the_node() {
        let mut task = Task {
            service_id: "abcdefghijklmnop".into(),
            service_name: "web".into(),
            slot: 2,
            ..Default::default()
        };
        assert_eq!(task_name(&task), "web.2");
        task.slot = 0;
        task.node_id = "node7".into();
        assert_eq!(task_name(&task), "web.node7");
        task.service_name.clear();
        assert_eq!(task_name(&task), "abcdefghijkl.node7");
    }

    #[test]
    fn states_read_like_docker() {
        assert_eq!(state_name(TaskState::Running as i32), "Running");
        assert_eq!(state_name(TaskState::Shutdown as i32), "Shutdown");
        assert_eq!(state_word(TaskState::Preparing as i32), "preparing");
        assert_eq!(state_word(999), "unknown");
    }

    #[test]
    fn ports_read_like_docker() {
        let ports = [
            PortConfig {
                published_port: 8080,
                target_port: 80,
                ..Default::default()
            },
            PortConfig {
                target_port: 53,
                protocol: PortProtocol::Udp as i32,
                ..Default::default()
            },
        ];
        assert_eq!(ports_text(&ports), "*:8080->80/tcp, 53/udp");
        assert_eq!(ports_text(&[]), "");
    }

    #[test]
    fn images_lose_their_digest_and_commands_are_cut() {
        let mut task = TaskSpec {
            container: Some(ContainerSpec {
                image: "nginx:1.27@sha256:0123abcd".into(),
                ..Default::default()
            }),
            driver: "oci".into(),
            ..Default::default()
        };
        assert_eq!(image_text(&task, false), "nginx:1.27");
        assert_eq!(image_text(&task, true), "nginx:1.27@sha256:0123abcd");
        task.driver = "process".into();
        task.container = Some(ContainerSpec {
            args: vec!["/bin/sleep".into(), "600".into()],
            ..Default::default()
        });
        assert_eq!(image_text(&task, false), "/bin/sleep 600");
        task.container = Some(ContainerSpec {
            args: vec![
                "/usr/bin/python3".into(),
                "-m".into(),
                "http.server".into(),
                "8000".into(),
            ],
            ..Default::default()
        });
        assert_eq!(image_text(&task, false), "/usr/bin/python3 -m http.serv…");
        assert_eq!(image_text(&task, false).chars().count(), COMMAND_CHARS_MAX);
        assert_eq!(
            image_text(&task, true),
            "/usr/bin/python3 -m http.server 8000"
        );
    }

    #[test]
    fn ids_are_cut_on_characters() {
        assert_eq!(short_id("0123456789abcdef"), "0123456789ab");
        assert_eq!(short_id("abc"), "abc");
        assert_eq!(ellipsize("ééééé", 3), "éé…");
        assert_eq!(ellipsize("abc", 3), "abc");
    }
}
