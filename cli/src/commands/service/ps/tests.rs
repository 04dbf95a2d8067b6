//! The task table as users see it. Goal: Docker's layout (history rows
//! under ` \_ `, ages, hostnames, quoted and cut errors, ports) and JSON
//! keys. Method: render fixed tasks at a fixed "now" and compare snapshots.

use std::collections::BTreeMap;

use expect_test::expect;
use rswarm_proto::{ContainerHealth, PortConfig, TaskState};

use super::*;
use crate::commands::service::fixtures::{NOW_MS, TaskBuilder};

fn hostnames() -> BTreeMap<String, String> {
    [("n1", "worker1"), ("n2", "worker2")]
        .into_iter()
        .map(|(id, host)| (id.to_string(), host.to_string()))
        .collect()
}

fn options(no_trunc: bool) -> TaskTableOptions {
    TaskTableOptions {
        no_trunc,
        now_ms: NOW_MS,
    }
}

fn web_tasks() -> Vec<Task> {
    vec![
        TaskBuilder::new("t2aaaaaaaaaaaaaaaaaaaaaaa", "web", 2)
            .node("n2")
            .health(ContainerHealth::Healthy)
            .image_digest("sha256:9a1b")
            .ports(vec![PortConfig {
                published_port: 8080,
                target_port: 80,
                ..Default::default()
            }])
            .build(),
        TaskBuilder::new("t1oldaaaaaaaaaaaaaaaaaaaa", "web", 1)
            .node("n1")
            .created(300)
            .desired(TaskState::Shutdown)
            .state(TaskState::Failed, 125)
            .err("task: non-zero exit (137): the process was killed")
            .build(),
        TaskBuilder::new("t1newaaaaaaaaaaaaaaaaaaaa", "web", 1)
            .node("n2")
            .created(120)
            .state(TaskState::Running, 8)
            .build(),
        TaskBuilder::new("t10aaaaaaaaaaaaaaaaaaaaaa", "web", 10)
            .state(TaskState::Pending, 3)
            .err("no suitable node (1 node not available for new tasks)")
            .build(),
        TaskBuilder::new("t1midaaaaaaaaaaaaaaaaaaaa", "web", 1)
            .node("gone")
            .created(200)
            .desired(TaskState::Shutdown)
            .state(TaskState::Shutdown, 7_300)
            .image("nginx:1.25@sha256:abcdef")
            .build(),
    ]
}

#[test]
fn older_tasks_of_a_slot_sit_under_the_newest() {
    let rows = task_rows(&web_tasks(), &hostnames(), options(false));
    expect![[r#"
        ID             NAME        IMAGE        NODE      DESIRED STATE   CURRENT STATE                     ERROR                              PORTS
        t1newaaaaaaa   web.1       nginx:1.27   worker2   Running         Running 8 seconds ago
        t1midaaaaaaa    \_ web.1   nginx:1.25   gone      Shutdown        Shutdown 2 hours ago
        t1oldaaaaaaa    \_ web.1   nginx:1.27   worker1   Shutdown        Failed 2 minutes ago              "task: non-zero exit (137): th…"
        t2aaaaaaaaaa   web.2       nginx:1.27   worker2   Running         Running 8 seconds ago (healthy)                                      *:8080->80/tcp
        t10aaaaaaaaa   web.10      nginx:1.27             Running         Pending 3 seconds ago             "no suitable node (1 node not …"
    "#]]
    .assert_eq(&task_table(&rows));
}

#[test]
fn no_trunc_shows_full_ids_errors_and_digests() {
    let tasks: Vec<Task> = web_tasks().into_iter().filter(|t| t.slot == 1).collect();
    let rows = task_rows(&tasks, &hostnames(), options(true));
    expect![[r#"
        ID                          NAME        IMAGE                      NODE      DESIRED STATE   CURRENT STATE           ERROR                                                 PORTS
        t1newaaaaaaaaaaaaaaaaaaaa   web.1       nginx:1.27                 worker2   Running         Running 8 seconds ago
        t1midaaaaaaaaaaaaaaaaaaaa    \_ web.1   nginx:1.25@sha256:abcdef   gone      Shutdown        Shutdown 2 hours ago
        t1oldaaaaaaaaaaaaaaaaaaaa    \_ web.1   nginx:1.27                 worker1   Shutdown        Failed 2 minutes ago    "task: non-zero exit (137): the process was killed"
    "#]]
    .assert_eq(&task_table(&rows));
}

#[test]
fn global_tasks_are_named_and_grouped_by_node() {
    let tasks = vec![
        TaskBuilder::new("g2aaaaaaaaaaaa", "agent", 0)
            .node("n2")
            .build(),
        TaskBuilder::new("g1newaaaaaaaaa", "agent", 0)
            .node("n1")
            .created(10)
            .build(),
        TaskBuilder::new("g1oldaaaaaaaaa", "agent", 0)
            .node("n1")
            .created(100)
            .desired(TaskState::Shutdown)
            .state(TaskState::Complete, 50)
            .build(),
    ];
    let rows = task_rows(&tasks, &hostnames(), options(false));
    let names: Vec<String> = rows.iter().map(|r| r.cells()[1].clone()).collect();
    assert_eq!(names, ["agent.n1", " \\_ agent.n1", "agent.n2"]);
}

#[test]
fn json_lines_use_dockers_keys() {
    let rows = task_rows(&web_tasks()[..2], &hostnames(), options(false));
    let lines: Vec<String> = rows.iter().map(|r| r.json().to_string()).collect();
    expect![[r#"
        {"CurrentState":"Failed 2 minutes ago","DesiredState":"Shutdown","Error":"task: non-zero exit (137): th…","Health":"","ID":"t1oldaaaaaaa","Image":"nginx:1.27","ImageDigest":"","Name":"web.1","Node":"worker1","Ports":""}
        {"CurrentState":"Running 8 seconds ago (healthy)","DesiredState":"Running","Error":"","Health":"healthy","ID":"t2aaaaaaaaaa","Image":"nginx:1.27","ImageDigest":"sha256:9a1b","Name":"web.2","Node":"worker2","Ports":"*:8080->80/tcp"}"#]]
    .assert_eq(&lines.join("\n"));
}

#[test]
fn filters_select_by_id_name_node_and_desired_state() {
    let tasks = web_tasks();
    let select = |raw: &[&str]| -> Vec<String> {
        let raw: Vec<String> = raw.iter().map(|s| s.to_string()).collect();
        let filters = task_filters(&raw).unwrap();
        tasks
            .iter()
            .filter(|t| filters.matches(|k, v| task_matches(t, &hostnames(), k, v)))
            .map(|t| task_id(t)[..5].to_string())
            .collect()
    };
    assert_eq!(
        select(&["desired-state=running"]),
        ["t2aaa", "t1new", "t10aa"]
    );
    assert_eq!(select(&["node=worker1"]), ["t1old"]);
    assert_eq!(select(&["node=n2"]), ["t2aaa", "t1new"]);
    assert_eq!(
        select(&["name=web.1"]),
        ["t1old", "t1new", "t10aa", "t1mid"]
    );
    assert_eq!(
        select(&["id=t1", "desired-state=shutdown"]),
        ["t1old", "t1mid"]
    );
    assert_eq!(select(&["node=worker1", "node=worker2"]).len(), 3);
    let err = task_filters(&["desired-state=sleeping".to_string()]).unwrap_err();
    assert!(
        err.to_string()
            .contains("invalid desired-state filter \"sleeping\"")
    );
    let err = task_filters(&["color=red".to_string()]).unwrap_err();
    assert!(
        err.to_string()
            .contains("use one of id, name, node, desired-state")
    );
}
