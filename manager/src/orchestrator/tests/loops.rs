//! Loop tests: the orchestrators' loop on a real one-node Raft, with fake
//! scheduler and agents moving tasks. Each test drives the cluster the way
//! a user would (create, scale, update a service; a node fails) and waits
//! for what the user would then see.

use std::collections::BTreeMap;
use std::time::Duration;

use rswarm_proto::object::Kind;
use rswarm_proto::{
    ActionKind, NodeAvailability, NodeState, ReplicatedMode, RestartCondition, RestartPolicy,
    ServiceSpec, StoreEvent, TaskState, UpdateConfig, UpdateFailureAction, UpdateOrder,
    UpdateState, service_spec::Mode,
};

use super::harness::{TestCluster, bounded, ready_node};
use super::world::{FAILING_IMAGE, image_of, replicated};
use crate::orchestrator::task::{is_runnable, is_running, observed, task_id};
use crate::store::StoreState;

fn running(s: &StoreState, service: &str) -> usize {
    s.tasks_of_service(service)
        .filter(|t| is_runnable(t) && is_running(t))
        .count()
}

fn set_replicas(n: u64) -> impl FnOnce(&mut ServiceSpec) {
    move |spec| spec.mode = Some(Mode::Replicated(ReplicatedMode { replicas: n }))
}

fn set_image(image: &'static str) -> impl FnOnce(&mut ServiceSpec) {
    move |spec| {
        if let Some(c) = spec.task.as_mut().and_then(|t| t.container.as_mut()) {
            c.image = image.to_owned();
        }
    }
}

fn update_state(s: &StoreState) -> UpdateState {
    s.service("web")
        .and_then(|svc| svc.update_status.as_ref())
        .map_or(UpdateState::Unknown, |u| u.state())
}

/// Goal: create, scale up, scale down. Method: a service of 3 on two nodes;
/// then 5; then 2 — the removed tasks are stopped and deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_of_three_scales_to_five_then_two() {
    bounded(async {
        let cluster = TestCluster::start(&["n1", "n2"], 5, true).await;
        cluster.create_service(replicated("web", 3, "v1")).await;
        cluster
            .wait_for("3 running", |s| running(s, "web") == 3)
            .await;
        let slots: Vec<u64> = cluster.read(|s| s.tasks_of_service("web").map(|t| t.slot).collect());
        assert_eq!(sorted(slots), vec![1, 2, 3]);
        cluster.update_service("web", set_replicas(5)).await;
        cluster
            .wait_for("5 running", |s| running(s, "web") == 5)
            .await;
        cluster.update_service("web", set_replicas(2)).await;
        cluster
            .wait_for("2 tasks left, the rest reaped", |s| {
                running(s, "web") == 2 && s.tasks_of_service("web").count() == 2
            })
            .await;
        cluster.shutdown().await;
    })
    .await;
}

/// Goal: a Down node's tasks are replaced elsewhere in the same slots.
/// Method: 4 replicas over two nodes; mark one Down; wait for 4 running on
/// the other; the old tasks are desired SHUTDOWN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_node_has_its_tasks_replaced_on_other_nodes() {
    bounded(async {
        let cluster = TestCluster::start(&["n1", "n2"], 5, true).await;
        cluster.create_service(replicated("web", 4, "v1")).await;
        cluster
            .wait_for("4 running", |s| running(s, "web") == 4)
            .await;
        let on_n1: Vec<(String, u64)> = cluster.read(|s| {
            s.tasks_on_node("n1")
                .map(|t| (task_id(t).to_owned(), t.slot))
                .collect()
        });
        assert!(!on_n1.is_empty(), "the spread put tasks on n1");
        cluster
            .set_node("n1", NodeState::Down, NodeAvailability::Active)
            .await;
        cluster
            .wait_for("4 running on n2", |s| {
                s.tasks_of_service("web")
                    .filter(|t| is_runnable(t) && is_running(t) && t.node_id == "n2")
                    .count()
                    == 4
            })
            .await;
        cluster.read(|s| {
            for (id, slot) in &on_n1 {
                let old = s.task(id).unwrap();
                assert_eq!(old.desired_state(), TaskState::Shutdown);
                let replacement = s
                    .tasks_of_service("web")
                    .find(|t| is_runnable(t) && t.slot == *slot);
                assert!(replacement.is_some(), "slot {slot} refilled");
            }
        });
        cluster.shutdown().await;
    })
    .await;
}

/// Goal: on-failure with max 2 attempts stops after two restarts. Method: a
/// failing image; wait until three tasks failed; check that nothing more
/// happens for a while.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_task_with_two_attempts_is_restarted_twice() {
    bounded(async {
        let cluster = TestCluster::start(&["n1"], 5, true).await;
        let mut service = replicated("web", 1, FAILING_IMAGE);
        if let Some(task) = service.spec.as_mut().and_then(|s| s.task.as_mut()) {
            task.restart = Some(RestartPolicy {
                condition: RestartCondition::OnFailure as i32,
                delay_ms: Some(50),
                max_attempts: 2,
                window_ms: 0,
            });
        }
        cluster.create_service(service).await;
        let failed = |s: &StoreState| {
            s.tasks_of_service("web")
                .filter(|t| observed(t) == TaskState::Failed)
                .count()
        };
        cluster.wait_for("3 failed", |s| failed(s) == 3).await;
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        cluster.read(|s| {
            assert_eq!(s.tasks_of_service("web").count(), 3, "no fourth attempt");
            assert!(s.tasks_of_service("web").all(|t| !is_runnable(t)));
        });
        cluster.shutdown().await;
    })
    .await;
}

/// The versions at which tasks reached a state, per task.
type Timeline = BTreeMap<String, Vec<(u64, TaskState)>>;

/// Records every task's observed-state changes from the store watch.
fn record(cluster: &TestCluster) -> tokio::task::JoinHandle<Timeline> {
    let mut watcher = cluster.store.watch(0).unwrap();
    let store = cluster.store.clone();
    tokio::spawn(async move {
        let mut timeline = Timeline::new();
        let stop = tokio::time::sleep(Duration::from_secs(60));
        tokio::pin!(stop);
        loop {
            let event: StoreEvent = tokio::select! {
                _ = &mut stop => return timeline,
                e = watcher.next() => match e {
                    Some(Ok(e)) => e,
                    _ => return timeline,
                },
            };
            if let Some(Kind::Task(t)) = event.object.and_then(|o| o.kind) {
                let states = timeline.entry(task_id(&t).to_owned()).or_default();
                if states.last().map(|(_, s)| *s) != Some(observed(&t)) {
                    states.push((event.version, observed(&t)));
                }
            }
            // Done once the update completed and every old task stopped.
            let done = store.read(|s| {
                update_state(s) == UpdateState::Completed
                    && s.tasks_of_service("web")
                        .all(|t| is_runnable(t) || observed(t) > TaskState::Running)
            });
            if done {
                return timeline;
            }
        }
    })
}

fn reached(timeline: &Timeline, task: &str, state: TaskState) -> u64 {
    timeline
        .get(task)
        .and_then(|v| v.iter().find(|(_, s)| *s == state))
        .map(|(v, _)| *v)
        .unwrap_or_else(|| panic!("task {task} never reached {state:?}: {timeline:?}"))
}

/// Runs a v1 → v2 update of 2 replicas in `order` and returns, per slot,
/// (version the old task stopped, version the new task ran).
async fn update_in_order(order: UpdateOrder) -> Vec<(u64, u64)> {
    let cluster = TestCluster::start(&["n1"], 5, true).await;
    let mut service = replicated("web", 2, "v1");
    let mut config = UpdateConfig {
        parallelism: Some(1),
        monitor_ms: Some(0),
        ..UpdateConfig::default()
    };
    config.set_order(order);
    service.spec.as_mut().unwrap().update = Some(config);
    cluster.create_service(service).await;
    cluster
        .wait_for("2 running", |s| running(s, "web") == 2)
        .await;
    let old: BTreeMap<u64, String> = cluster.read(|s| {
        s.tasks_of_service("web")
            .map(|t| (t.slot, task_id(t).to_owned()))
            .collect()
    });
    let recorder = record(&cluster);
    cluster.update_service("web", set_image("v2")).await;
    cluster
        .wait_for("update completed", |s| {
            update_state(s) == UpdateState::Completed
        })
        .await;
    let timeline = recorder.await.unwrap();
    let new: BTreeMap<u64, String> = cluster.read(|s| {
        s.tasks_of_service("web")
            .filter(|t| is_runnable(t))
            .map(|t| {
                assert_eq!(image_of(t), "v2");
                (t.slot, task_id(t).to_owned())
            })
            .collect()
    });
    cluster.shutdown().await;
    old.iter()
        .map(|(slot, old_id)| {
            let stopped = reached(&timeline, old_id, TaskState::Shutdown);
            let ran = reached(&timeline, &new[slot], TaskState::Running);
            (stopped, ran)
        })
        .collect()
}

/// Goal: stop-first stops the old task before the new one runs; start-first
/// runs the new one first. Method: record the store versions at which the
/// old task of each slot reached SHUTDOWN and its replacement RUNNING.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_order_is_observable_in_task_states() {
    bounded(async {
        for (stopped, ran) in update_in_order(UpdateOrder::StopFirst).await {
            assert!(
                stopped < ran,
                "stop-first: old stopped at {stopped}, new ran at {ran}"
            );
        }
        for (stopped, ran) in update_in_order(UpdateOrder::StartFirst).await {
            assert!(
                ran < stopped,
                "start-first: new ran at {ran}, old stopped at {stopped}"
            );
        }
    })
    .await;
}

/// Goal: a failing update with failure action rollback ends with the old
/// spec back and ROLLBACK_COMPLETED. Method: update to an image whose tasks
/// fail; wait for ROLLBACK_COMPLETED; all runnable tasks run v1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_update_rolls_back() {
    bounded(async {
        let cluster = TestCluster::start(&["n1", "n2"], 5, true).await;
        let mut service = replicated("web", 3, "v1");
        let mut config = UpdateConfig {
            parallelism: Some(1),
            monitor_ms: Some(1_000),
            ..UpdateConfig::default()
        };
        config.set_failure_action(UpdateFailureAction::Rollback);
        let spec = service.spec.as_mut().unwrap();
        spec.update = Some(config);
        spec.rollback = Some(UpdateConfig {
            parallelism: Some(0),
            monitor_ms: Some(0),
            ..UpdateConfig::default()
        });
        cluster.create_service(service).await;
        cluster
            .wait_for("3 running", |s| running(s, "web") == 3)
            .await;
        cluster
            .update_service("web", set_image(FAILING_IMAGE))
            .await;
        cluster
            .wait_for("rollback completed", |s| {
                update_state(s) == UpdateState::RollbackCompleted
            })
            .await;
        let service = cluster.service("web");
        let image = service
            .spec
            .as_ref()
            .and_then(|s| s.task.as_ref())
            .and_then(|t| t.container.as_ref())
            .map(|c| c.image.clone());
        assert_eq!(image.as_deref(), Some("v1"), "the spec is back");
        cluster
            .wait_for("3 v1 tasks running", |s| {
                s.tasks_of_service("web")
                    .filter(|t| is_runnable(t) && is_running(t) && image_of(t) == "v1")
                    .count()
                    == 3
            })
            .await;
        cluster.shutdown().await;
    })
    .await;
}

/// Goal: history stays within the cluster's limit while a task crash-loops.
/// Method: limit 2, restart delay 0, a failing image: after ten restarts the
/// slot holds at most one runnable task and two old ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loop_keeps_only_the_history_limit() {
    bounded(async {
        let cluster = TestCluster::start(&["n1"], 2, true).await;
        cluster
            .create_service(replicated("web", 1, FAILING_IMAGE))
            .await;
        let recorder = record(&cluster);
        let mut seen = std::collections::BTreeSet::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while seen.len() < 10 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "ten restarts in 30 s"
            );
            cluster.read(|s| {
                seen.extend(s.tasks_of_service("web").map(|t| task_id(t).to_owned()));
                assert!(
                    s.tasks_of_service("web").count() <= 3,
                    "limit 2 + the current one"
                );
            });
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        recorder.abort();
        cluster.shutdown().await;
    })
    .await;
}

/// Goal: a new leader carries on an update it finds under way. Method: stop
/// the orchestrators (their memory is lost) in the middle of a slow update,
/// start them again, and wait for COMPLETED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_survives_a_restart_of_the_orchestrators() {
    bounded(async {
        let mut cluster = TestCluster::start(&["n1"], 5, true).await;
        let mut service = replicated("web", 4, "v1");
        service.spec.as_mut().unwrap().update = Some(UpdateConfig {
            parallelism: Some(1),
            delay_ms: 300,
            monitor_ms: Some(400),
            ..UpdateConfig::default()
        });
        cluster.create_service(service).await;
        cluster
            .wait_for("4 running", |s| running(s, "web") == 4)
            .await;
        cluster.update_service("web", set_image("v2")).await;
        cluster
            .wait_for("one slot updated", |s| {
                s.tasks_of_service("web")
                    .any(|t| is_runnable(t) && is_running(t) && image_of(t) == "v2")
            })
            .await;
        cluster.stop_orchestrators().await;
        let started = cluster.service("web").update_status.unwrap().started_at_ms;
        cluster.start_orchestrators();
        cluster
            .wait_for("update completed", |s| {
                update_state(s) == UpdateState::Completed
            })
            .await;
        assert_eq!(
            cluster.service("web").update_status.unwrap().started_at_ms,
            started
        );
        cluster.read(|s| {
            let runnable: Vec<_> = s
                .tasks_of_service("web")
                .filter(|t| is_runnable(t))
                .collect();
            assert_eq!(runnable.len(), 4);
            assert!(runnable.iter().all(|t| image_of(t) == "v2"));
        });
        cluster.shutdown().await;
    })
    .await;
}

/// Goal: deleting a service stops and deletes its tasks. Method: delete
/// the service object; wait until no task of it is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_service_leaves_no_task() {
    bounded(async {
        let cluster = TestCluster::start(&["n1"], 5, true).await;
        cluster.create_service(replicated("web", 3, "v1")).await;
        cluster
            .wait_for("3 running", |s| running(s, "web") == 3)
            .await;
        let service = cluster.service("web");
        cluster
            .propose(vec![crate::manager::action(
                ActionKind::Delete,
                Kind::Service(service),
            )])
            .await;
        cluster
            .wait_for("no task left", |s| s.tasks_of_service("web").count() == 0)
            .await;
        cluster.shutdown().await;
    })
    .await;
}

fn sorted(mut v: Vec<u64>) -> Vec<u64> {
    v.sort_unstable();
    v
}

/// Goal: creating a service of 100,000 replicas creates its tasks in
/// seconds. Method: no agents; time from the service create to the
/// 100,000th task in the store (they go in batches of 1,000).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_replicas_are_created_in_seconds() {
    bounded(async {
        let cluster = TestCluster::start(&["n1"], 5, false).await;
        let started = std::time::Instant::now();
        cluster
            .create_service(replicated("web", 100_000, "v1"))
            .await;
        cluster
            .wait_for("100,000 tasks", |s| s.task_count() == 100_000)
            .await;
        let elapsed = started.elapsed();
        eprintln!("100,000 tasks created in {elapsed:?}");
        let slots: std::collections::BTreeSet<u64> =
            cluster.read(|s| s.tasks().map(|t| t.slot).collect());
        assert_eq!(slots.len(), 100_000, "one task per slot");
        assert_eq!(slots.last().copied(), Some(100_000));
        cluster.shutdown().await;
    })
    .await;
}

/// Goal: with `rebalance` set, a service spreads out when nodes join.
/// Method: 6 replicas on the only node; two nodes join; wait for 2/2/2 and
/// for the automatic request to be recorded as answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_nodes_get_a_share_of_an_opted_in_service() {
    bounded(async {
        let cluster = TestCluster::start(&["n1"], 5, true).await;
        let mut service = replicated("web", 6, "v1");
        let spec = service.spec.as_mut().unwrap();
        spec.rebalance = true;
        spec.update = Some(UpdateConfig {
            parallelism: Some(2),
            monitor_ms: Some(0),
            order: UpdateOrder::StartFirst as i32,
            ..UpdateConfig::default()
        });
        cluster.create_service(service).await;
        cluster
            .wait_for("6 running", |s| running(s, "web") == 6)
            .await;
        cluster
            .propose(vec![
                crate::manager::action(ActionKind::Create, Kind::Node(ready_node("n2"))),
                crate::manager::action(ActionKind::Create, Kind::Node(ready_node("n3"))),
            ])
            .await;
        cluster
            .wait_for("2 running on each node, request answered", |s| {
                let on = |n: &str| {
                    s.tasks_on_node(n)
                        .filter(|t| is_runnable(t) && is_running(t))
                        .count()
                };
                let svc = s.service("web").unwrap();
                on("n1") == 2
                    && on("n2") == 2
                    && on("n3") == 2
                    && svc.rebalance_requested >= 1
                    && svc.rebalanced == svc.rebalance_requested
            })
            .await;
        cluster.shutdown().await;
    })
    .await;
}

/// Goal: changes made while no orchestrator ran are reconciled by the next
/// leader. Method: stop the orchestrators; create a service and take a node
/// down; start them again; the service gets its tasks, off the Down node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_reconciles_what_happened_before_it() {
    bounded(async {
        let mut cluster = TestCluster::start(&["n1", "n2"], 5, true).await;
        cluster.create_service(replicated("old", 2, "v1")).await;
        cluster
            .wait_for("2 running", |s| running(s, "old") == 2)
            .await;
        cluster.stop_orchestrators().await;
        cluster.create_service(replicated("web", 3, "v1")).await;
        cluster
            .set_node("n1", NodeState::Down, NodeAvailability::Active)
            .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(cluster.read(|s| s.tasks_of_service("web").count()), 0);
        cluster.start_orchestrators();
        cluster
            .wait_for("both services running on n2", |s| {
                let on_n2 = |svc: &str| {
                    s.tasks_of_service(svc)
                        .filter(|t| is_runnable(t) && is_running(t) && t.node_id == "n2")
                        .count()
                };
                on_n2("web") == 3 && on_n2("old") == 2
            })
            .await;
        cluster.shutdown().await;
    })
    .await;
}
