//! `service ls`: columns `ID NAME MODE REPLICAS IMAGE PORTS`, `-q`,
//! `-f id|name|mode|label`, `--format json` with Docker's keys.
//!
//! **Invariant:** rows are a pure function of the service views, sorted by
//! name, so the layout is pinned by snapshot tests.

use anyhow::Result;
use rswarm_proto::ServiceView;
use rswarm_proto::service_spec::Mode;
use serde_json::{Value, json};

use crate::client::Daemon;
use crate::output::{Filters, ListFormat, format_table, print_json_lines};

use super::calls;
use super::text::{image_text, ports_text, service_id, service_name, short_id, spec_ports};

/// The service table's headers.
const SERVICE_HEADERS: [&str; 6] = ["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"];

/// Keys `-f` accepts.
const SERVICE_FILTER_KEYS: [&str; 4] = ["id", "name", "mode", "label"];

/// One line of `service ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRow {
    /// Full service ID (cut when shown).
    pub id: String,
    /// Service name.
    pub name: String,
    /// `replicated` or `global`.
    pub mode: String,
    /// `running/desired`.
    pub replicas: String,
    /// Image, or the command of a process service.
    pub image: String,
    /// `*:8080->80/tcp`.
    pub ports: String,
}

impl ServiceRow {
    fn cells(&self) -> Vec<String> {
        vec![
            short_id(&self.id).to_string(),
            self.name.clone(),
            self.mode.clone(),
            self.replicas.clone(),
            self.image.clone(),
            self.ports.clone(),
        ]
    }

    /// The `--format json` object, with Docker's keys.
    pub fn json(&self) -> Value {
        json!({
            "ID": short_id(&self.id),
            "Name": self.name,
            "Mode": self.mode,
            "Replicas": self.replicas,
            "Image": self.image,
            "Ports": self.ports,
        })
    }
}

/// `replicated` or `global`.
pub fn mode_name(mode: Option<&Mode>) -> &'static str {
    match mode {
        Some(Mode::Global(_)) => "global",
        _ => "replicated",
    }
}

/// The row of one service view.
pub fn service_row(view: &ServiceView) -> ServiceRow {
    let service = view.service.clone().unwrap_or_default();
    let spec = service.spec.clone().unwrap_or_default();
    ServiceRow {
        id: service_id(&service).to_string(),
        name: service_name(&service).to_string(),
        mode: mode_name(spec.mode.as_ref()).to_string(),
        replicas: format!("{}/{}", view.running_tasks, view.desired_tasks),
        image: spec
            .task
            .as_ref()
            .map(|t| image_text(t, false))
            .unwrap_or_default(),
        ports: ports_text(spec_ports(&spec)),
    }
}

/// Rows of every view that passes `filters`, sorted by name.
pub fn service_rows(views: &[ServiceView], filters: &Filters) -> Vec<ServiceRow> {
    let mut rows: Vec<ServiceRow> = views
        .iter()
        .filter(|v| filters.matches(|k, val| service_matches(v, k, val)))
        .map(service_row)
        .collect();
    rows.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
    rows
}

fn service_matches(view: &ServiceView, key: &str, value: &str) -> bool {
    let service = view.service.clone().unwrap_or_default();
    let spec = service.spec.clone().unwrap_or_default();
    match key {
        "id" => service_id(&service).starts_with(value),
        "name" => service_name(&service).starts_with(value),
        "mode" => mode_name(spec.mode.as_ref()) == value,
        "label" => {
            let labels = spec.annotations.unwrap_or_default().labels;
            match value.split_once('=') {
                Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
                None => labels.contains_key(value),
            }
        }
        _ => false,
    }
}

/// The service table as text.
pub fn service_table(rows: &[ServiceRow]) -> String {
    let cells: Vec<Vec<String>> = rows.iter().map(ServiceRow::cells).collect();
    format_table(&SERVICE_HEADERS, &cells)
}

/// `service ls` flags.
#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// Only IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Filter: id, name, mode, label (key or key=value).
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    filter: Vec<String>,
    /// table, or json (one object per line).
    #[arg(long)]
    format: Option<String>,
}

/// `service ls`.
pub async fn run(d: &Daemon, args: LsArgs) -> Result<()> {
    let format = ListFormat::parse(args.format.as_deref())?;
    let filters = Filters::parse(&args.filter, &SERVICE_FILTER_KEYS)?;
    let rows = service_rows(&calls::list_services(d).await?, &filters);
    if args.quiet {
        for row in &rows {
            println!("{}", short_id(&row.id));
        }
        return Ok(());
    }
    match format {
        ListFormat::Json => {
            print_json_lines(&rows.iter().map(ServiceRow::json).collect::<Vec<_>>())
        }
        ListFormat::Table => {
            print!("{}", service_table(&rows));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use expect_test::expect;
    use rswarm_proto::{
        ContainerSpec, EndpointSpec, PortConfig, PortProtocol, ServiceView, TaskSpec,
    };

    use super::*;
    use crate::commands::service::fixtures::{global, replicated};

    fn views() -> Vec<ServiceView> {
        let mut web = replicated("web", 3);
        if let Some(spec) = web.spec.as_mut() {
            spec.endpoint = Some(EndpointSpec {
                ports: vec![
                    PortConfig {
                        published_port: 8080,
                        target_port: 80,
                        ..Default::default()
                    },
                    PortConfig {
                        published_port: 5353,
                        target_port: 53,
                        protocol: PortProtocol::Udp as i32,
                        ..Default::default()
                    },
                ],
            });
            spec.annotations.get_or_insert_with(Default::default).labels =
                [("tier".to_string(), "front".to_string())].into();
        }
        let mut sleeper = replicated("sleeper", 3);
        if let Some(spec) = sleeper.spec.as_mut() {
            spec.task = Some(TaskSpec {
                container: Some(ContainerSpec {
                    args: vec![
                        "/bin/sh".into(),
                        "-c".into(),
                        "while true; do sleep 1; done".into(),
                    ],
                    ..Default::default()
                }),
                driver: "process".into(),
                ..Default::default()
            });
        }
        vec![
            ServiceView {
                service: Some(web),
                running_tasks: 2,
                desired_tasks: 3,
            },
            ServiceView {
                service: Some(global("agent")),
                running_tasks: 5,
                desired_tasks: 5,
            },
            ServiceView {
                service: Some(sleeper),
                running_tasks: 0,
                desired_tasks: 3,
            },
        ]
    }

    #[test]
    fn rows_read_like_docker_and_sort_by_name() {
        let rows = service_rows(&views(), &Filters::default());
        expect![[r#"
            ID             NAME      MODE         REPLICAS   IMAGE                            PORTS
            agent-id-012   agent     global       5/5        nginx:1.27
            sleeper-id-0   sleeper   replicated   0/3        /bin/sh -c while true; do sle…
            web-id-01234   web       replicated   2/3        nginx:1.27                       *:8080->80/tcp, *:5353->53/udp
        "#]]
        .assert_eq(&service_table(&rows));
    }

    #[test]
    fn json_lines_use_dockers_keys() {
        let rows = service_rows(&views(), &Filters::default());
        expect![[r#"{"ID":"web-id-01234","Image":"nginx:1.27","Mode":"replicated","Name":"web","Ports":"*:8080->80/tcp, *:5353->53/udp","Replicas":"2/3"}"#]]
            .assert_eq(&rows[2].json().to_string());
    }

    #[test]
    fn filters_select_by_id_name_mode_and_label() {
        let names = |raw: &[&str]| -> Vec<String> {
            let raw: Vec<String> = raw.iter().map(|s| s.to_string()).collect();
            let filters = Filters::parse(&raw, &SERVICE_FILTER_KEYS).unwrap();
            service_rows(&views(), &filters)
                .into_iter()
                .map(|r| r.name)
                .collect()
        };
        assert_eq!(names(&["mode=global"]), ["agent"]);
        assert_eq!(names(&["mode=replicated"]), ["sleeper", "web"]);
        assert_eq!(names(&["name=s"]), ["sleeper"]);
        assert_eq!(names(&["id=web-"]), ["web"]);
        assert_eq!(names(&["label=tier"]), ["web"]);
        assert_eq!(names(&["label=tier=back"]), Vec::<String>::new());
        assert_eq!(names(&["name=web", "name=agent"]), ["agent", "web"]);
    }
}
