//! Tests of the store: the apply rules, lookups, snapshots, the watch, and
//! property tests of conflict detection, determinism, snapshot round trips
//! and atomicity.

use proptest::prelude::*;
use rswarm_proto::{
    ActionKind, Annotations, Config, ConfigSpec, Meta, Node, NodeDescription, NodeSpec, Object,
    Proposal, Service, ServiceSpec, StoreAction, StoreSnapshot, Task, object::Kind,
};

use super::limits::{OBJECT_SIZE_MAX, WATCH_HISTORY_MAX, WATCH_QUEUE_MAX};
use super::*;

fn meta(id: &str, version: u64) -> Option<Meta> {
    Some(Meta {
        id: id.to_owned(),
        version,
        ..Meta::default()
    })
}

fn annotations(name: &str) -> Option<Annotations> {
    Some(Annotations {
        name: name.to_owned(),
        ..Annotations::default()
    })
}

fn node(id: &str, hostname: &str, version: u64) -> Object {
    Node {
        meta: meta(id, version),
        description: Some(NodeDescription {
            hostname: hostname.to_owned(),
            ..NodeDescription::default()
        }),
        spec: Some(NodeSpec::default()),
        ..Node::default()
    }
    .into_object()
}

fn named_node(id: &str, name: &str) -> Object {
    Node {
        meta: meta(id, 0),
        spec: Some(NodeSpec {
            annotations: annotations(name),
            ..NodeSpec::default()
        }),
        ..Node::default()
    }
    .into_object()
}

fn service(id: &str, name: &str, version: u64) -> Object {
    Service {
        meta: meta(id, version),
        spec: Some(ServiceSpec {
            annotations: annotations(name),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
    .into_object()
}

fn config(id: &str, name: &str, version: u64, data: Vec<u8>) -> Object {
    Config {
        meta: meta(id, version),
        spec: Some(ConfigSpec {
            annotations: annotations(name),
            data,
        }),
    }
    .into_object()
}

fn act(kind: ActionKind, object: Object) -> StoreAction {
    StoreAction {
        kind: kind as i32,
        object: Some(object),
    }
}

fn create(object: Object) -> StoreAction {
    act(ActionKind::Create, object)
}

fn update(object: Object) -> StoreAction {
    act(ActionKind::Update, object)
}

fn delete(object: Object) -> StoreAction {
    act(ActionKind::Delete, object)
}

fn batch(actions: Vec<StoreAction>) -> Proposal {
    Proposal {
        actions,
        timestamp_ms: 1_000,
    }
}

fn at(timestamp_ms: i64, actions: Vec<StoreAction>) -> Proposal {
    Proposal {
        actions,
        timestamp_ms,
    }
}

#[test]
fn create_update_delete_stamp_meta_and_emit_events() {
    let mut s = StoreState::new();
    let events = s
        .apply(3, &at(100, vec![create(node("n1", "host1", 0))]))
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].version, 3);
    assert_eq!(events[0].kind, ActionKind::Create as i32);
    let m = s.node("n1").unwrap().meta.clone().unwrap();
    assert_eq!((m.version, m.created_at_ms, m.updated_at_ms), (3, 100, 100));
    assert_eq!(s.version(), 3);

    s.apply(5, &at(200, vec![update(node("n1", "host2", 3))]))
        .unwrap();
    let n = s.node("n1").unwrap();
    let m = n.meta.clone().unwrap();
    assert_eq!((m.version, m.created_at_ms, m.updated_at_ms), (5, 100, 200));
    assert_eq!(n.description.as_ref().unwrap().hostname, "host2");

    let events = s
        .apply(6, &at(300, vec![delete(node("n1", "", 5))]))
        .unwrap();
    assert!(s.node("n1").is_none());
    // A delete event carries the object as it was.
    let Some(Kind::Node(gone)) = events[0].object.clone().unwrap().kind else {
        panic!("not a node")
    };
    assert_eq!(gone.description.unwrap().hostname, "host2");
    assert_eq!(events[0].kind, ActionKind::Delete as i32);
}

#[test]
fn stale_update_conflicts_with_a_message_that_says_what_to_do() {
    let mut s = StoreState::new();
    s.apply(7, &batch(vec![create(node("abc", "h", 0))]))
        .unwrap();
    s.apply(9, &batch(vec![update(node("abc", "h2", 7))]))
        .unwrap();
    let err = s
        .apply(10, &batch(vec![update(node("abc", "h3", 7))]))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "update of node abc conflicts with a concurrent change (version 7 was read, the store is at 9): read it again and retry"
    );
    let err = s
        .apply(10, &batch(vec![delete(node("abc", "", 7))]))
        .unwrap_err();
    assert!(matches!(
        err,
        StoreError::Conflict {
            op: WriteOp::Delete,
            expected: 9,
            got: 7,
            ..
        }
    ));
    let err = s
        .apply(10, &batch(vec![update(node("zzz", "", 7))]))
        .unwrap_err();
    assert!(matches!(
        err,
        StoreError::NotFound {
            kind: ObjectKind::Node,
            ..
        }
    ));
}

#[test]
fn create_of_an_existing_id_fails() {
    let mut s = StoreState::new();
    s.apply(1, &batch(vec![create(node("a", "h", 0))])).unwrap();
    let err = s
        .apply(2, &batch(vec![create(node("a", "h", 0))]))
        .unwrap_err();
    assert_eq!(
        err,
        StoreError::AlreadyExists {
            kind: ObjectKind::Node,
            id: "a".into()
        }
    );
}

#[test]
fn names_are_unique_per_kind_including_renames() {
    let mut s = StoreState::new();
    s.apply(
        1,
        &batch(vec![
            create(service("s1", "web", 0)),
            create(service("s2", "db", 0)),
        ]),
    )
    .unwrap();
    // Same name, other kind: fine.
    s.apply(2, &batch(vec![create(config("c1", "web", 0, vec![]))]))
        .unwrap();
    let err = s
        .apply(3, &batch(vec![create(service("s3", "web", 0))]))
        .unwrap_err();
    assert_eq!(
        err,
        StoreError::NameConflict {
            kind: ObjectKind::Service,
            name: "web".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "a service named \"web\" already exists: pick another name, or rename or remove the other service"
    );
    let err = s
        .apply(3, &batch(vec![update(service("s2", "web", 1))]))
        .unwrap_err();
    assert!(matches!(err, StoreError::NameConflict { .. }));
    // Renaming frees the old name; keeping one's own name is no conflict.
    s.apply(
        4,
        &batch(vec![
            update(service("s1", "www", 1)),
            update(service("s2", "db", 1)),
        ]),
    )
    .unwrap();
    s.apply(5, &batch(vec![create(service("s3", "web", 0))]))
        .unwrap();
    assert_eq!(
        s.find_service("web").unwrap().meta.as_ref().unwrap().id,
        "s3"
    );
    // Empty names are not unique.
    s.apply(
        6,
        &batch(vec![
            create(service("e1", "", 0)),
            create(service("e2", "", 0)),
        ]),
    )
    .unwrap();
}

fn task(id: &str, service_id: &str, node_id: &str, version: u64) -> Object {
    Task {
        meta: meta(id, version),
        service_id: service_id.to_owned(),
        node_id: node_id.to_owned(),
        ..Task::default()
    }
    .into_object()
}

fn ids<'a>(tasks: impl Iterator<Item = &'a Task>) -> Vec<String> {
    tasks.map(|t| t.id().to_owned()).collect()
}

#[test]
fn task_indexes_follow_service_and_node_through_every_write() {
    let mut s = StoreState::new();
    s.apply(
        1,
        &batch(vec![
            create(task("t1", "s1", "", 0)),
            create(task("t2", "s1", "n1", 0)),
            create(task("t3", "s2", "n1", 0)),
        ]),
    )
    .unwrap();
    assert_eq!(ids(s.tasks_of_service("s1")), ["t1", "t2"]);
    assert_eq!(ids(s.tasks_on_node("n1")), ["t2", "t3"]);
    assert!(
        s.tasks_on_node("").next().is_none(),
        "unassigned tasks are not indexed"
    );

    // Placing t1 and moving t3 between nodes updates the node index.
    s.apply(
        2,
        &batch(vec![
            update(task("t1", "s1", "n2", 1)),
            update(task("t3", "s2", "n2", 1)),
        ]),
    )
    .unwrap();
    assert_eq!(ids(s.tasks_on_node("n1")), ["t2"]);
    assert_eq!(ids(s.tasks_on_node("n2")), ["t1", "t3"]);

    // A failed batch reverts the index with the objects.
    let failing = batch(vec![
        delete(task("t2", "s1", "n1", 1)),
        update(task("t3", "s2", "n1", 99)),
    ]);
    assert!(s.apply(3, &failing).is_err());
    assert_eq!(ids(s.tasks_on_node("n1")), ["t2"]);

    s.apply(4, &batch(vec![delete(task("t2", "s1", "n1", 1))]))
        .unwrap();
    assert!(s.tasks_on_node("n1").next().is_none());
    assert_eq!(ids(s.tasks_of_service("s1")), ["t1"]);

    // A snapshot rebuilds the same indexes.
    let restored = StoreState::from_snapshot(s.to_snapshot()).unwrap();
    assert_eq!(restored, s);
    assert_eq!(ids(restored.tasks_on_node("n2")), ["t1", "t3"]);
}

#[test]
fn a_failed_batch_changes_nothing() {
    let mut s = StoreState::new();
    s.apply(1, &batch(vec![create(service("s1", "web", 0))]))
        .unwrap();
    let before = s.clone();
    let bad = batch(vec![
        update(service("s1", "renamed", 1)),
        create(service("s2", "web", 0)),
        delete(service("s1", "", 99)),
    ]);
    assert!(s.apply(2, &bad).is_err());
    assert_eq!(s, before);
    // The name index was restored too: "renamed" is free, "web" is taken.
    s.apply(3, &batch(vec![create(service("s3", "renamed", 0))]))
        .unwrap();
    assert!(
        s.apply(4, &batch(vec![create(service("s4", "web", 0))]))
            .is_err()
    );
}

#[test]
fn actions_on_one_id_apply_in_order() {
    let mut s = StoreState::new();
    // Create then delete: the delete sees the created object at this version.
    s.apply(
        4,
        &batch(vec![create(node("a", "h", 0)), delete(node("a", "", 4))]),
    )
    .unwrap();
    assert!(s.node("a").is_none());
    // Delete then create again.
    s.apply(5, &batch(vec![create(node("b", "h", 0))])).unwrap();
    s.apply(
        6,
        &batch(vec![delete(node("b", "", 5)), create(node("b", "h2", 0))]),
    )
    .unwrap();
    assert_eq!(s.node("b").unwrap().meta.as_ref().unwrap().version, 6);
    // A second update must name the version the first one wrote.
    let err = s
        .apply(
            7,
            &batch(vec![update(node("b", "x", 6)), update(node("b", "y", 6))]),
        )
        .unwrap_err();
    assert!(matches!(
        err,
        StoreError::Conflict {
            expected: 7,
            got: 6,
            ..
        }
    ));
}

#[test]
fn malformed_actions_are_invalid() {
    let mut s = StoreState::new();
    let no_meta = Node::default().into_object();
    let empty_id = node("", "h", 0);
    let unknown = StoreAction {
        kind: 42,
        object: Some(node("a", "h", 0)),
    };
    let no_object = StoreAction {
        kind: 0,
        object: None,
    };
    let empty_object = StoreAction {
        kind: 0,
        object: Some(Object::default()),
    };
    for action in [
        create(no_meta),
        create(empty_id),
        unknown,
        no_object,
        empty_object,
    ] {
        let err = s.apply(1, &batch(vec![action])).unwrap_err();
        assert!(matches!(err, StoreError::Invalid { .. }), "{err}");
        assert_eq!(s.version(), 0);
    }
}

#[test]
fn there_is_one_cluster_object() {
    let mut s = StoreState::new();
    let cluster = |id: &str| {
        rswarm_proto::Cluster {
            meta: meta(id, 0),
            ..Default::default()
        }
        .into_object()
    };
    s.apply(1, &batch(vec![create(cluster("c1"))])).unwrap();
    assert_eq!(s.cluster().unwrap().meta.as_ref().unwrap().id, "c1");
    let err = s.apply(2, &batch(vec![create(cluster("c2"))])).unwrap_err();
    assert!(matches!(err, StoreError::Invalid { .. }));
}

#[test]
fn sizes_are_limited() {
    let mut s = StoreState::new();
    let big = config("c1", "big", 0, vec![0; OBJECT_SIZE_MAX]);
    let err = s.apply(1, &batch(vec![create(big)])).unwrap_err();
    assert!(
        matches!(err, StoreError::TooLarge { ref what, .. } if what == "config c1"),
        "{err}"
    );
    let parts: Vec<_> = (0..4)
        .map(|i| {
            create(config(
                &format!("c{i}"),
                &format!("n{i}"),
                0,
                vec![0; OBJECT_SIZE_MAX - 100],
            ))
        })
        .collect();
    let err = s.apply(1, &batch(parts)).unwrap_err();
    assert!(
        matches!(err, StoreError::TooLarge { ref what, .. } if what == "the proposal"),
        "{err}"
    );
}

#[test]
fn lookup_by_id_name_and_prefix() {
    let mut s = StoreState::new();
    s.apply(
        1,
        &batch(vec![
            create(node("abc1", "alpha", 0)),
            create(node("abd2", "beta", 0)),
            create(node("abe3", "gamma", 0)),
            create(named_node("xyz", "worker-1")),
            create(node("q1", "dup", 0)),
            create(node("q2", "dup", 0)),
        ]),
    )
    .unwrap();
    let id = |n: &Node| n.meta.as_ref().unwrap().id.clone();
    assert_eq!(id(s.find_node("abc1").unwrap()), "abc1");
    assert_eq!(id(s.find_node("beta").unwrap()), "abd2");
    assert_eq!(id(s.find_node("worker-1").unwrap()), "xyz");
    assert_eq!(id(s.find_node("abe").unwrap()), "abe3");
    assert_eq!(id(s.find_node("x").unwrap()), "xyz");
    let err = s.find_node("ab").unwrap_err();
    assert_eq!(
        err.to_string(),
        "ambiguous: prefix \"ab\" matches 3 nodes: abc1, abd2, abe3"
    );
    let err = s.find_node("dup").unwrap_err();
    assert_eq!(
        err.to_string(),
        "ambiguous: name \"dup\" matches 2 nodes: q1, q2"
    );
    let err = s.find_node("nope").unwrap_err();
    assert_eq!(
        err,
        StoreError::NotFoundByReference {
            kind: ObjectKind::Node,
            reference: "nope".into()
        }
    );
    assert!(s.find_node("").is_err());

    s.apply(
        2,
        &batch(vec![
            create(config("cfg1", "app", 0, vec![1])),
            create(config("cfg2", "cfg1x", 0, vec![])),
        ]),
    )
    .unwrap();
    assert_eq!(
        s.find_config("app").unwrap().meta.as_ref().unwrap().id,
        "cfg1"
    );
    // An exact ID wins over a name, a name over a prefix.
    assert_eq!(
        s.find_config("cfg1").unwrap().meta.as_ref().unwrap().id,
        "cfg1"
    );
    assert_eq!(
        s.find_config("cfg1x").unwrap().meta.as_ref().unwrap().id,
        "cfg2"
    );
    assert_eq!(s.configs().count(), 2);
}

#[test]
fn ambiguous_lists_are_capped() {
    let mut s = StoreState::new();
    let actions = (0..15)
        .map(|i| create(node(&format!("id{i:02}"), "", 0)))
        .collect();
    s.apply(1, &batch(actions)).unwrap();
    let msg = s.find_node("id").unwrap_err().to_string();
    assert!(
        msg.starts_with("ambiguous: prefix \"id\" matches 15 nodes: id00, id01"),
        "{msg}"
    );
    assert!(msg.ends_with("id09 and 5 more"), "{msg}");
}

#[test]
fn snapshot_round_trip_and_validation() {
    let mut s = StoreState::new();
    s.apply(
        2,
        &batch(vec![
            create(node("n", "h", 0)),
            create(service("s", "web", 0)),
        ]),
    )
    .unwrap();
    s.advance_to(4);
    let snap = s.to_snapshot();
    assert_eq!(snap.version, 4);
    let back = StoreState::from_snapshot(snap.clone()).unwrap();
    assert_eq!(back, s);
    let bytes = prost::Message::encode_to_vec(&snap);
    let decoded: StoreSnapshot = prost::Message::decode(bytes.as_slice()).unwrap();
    assert_eq!(StoreState::from_snapshot(decoded).unwrap(), s);

    let mut dup = snap.clone();
    dup.objects.push(service("s", "other", 0));
    assert!(matches!(
        StoreState::from_snapshot(dup),
        Err(StoreError::InvalidSnapshot { .. })
    ));
    let mut same_name = snap.clone();
    same_name.objects.push(service("s2", "web", 0));
    assert!(StoreState::from_snapshot(same_name).is_err());
    let mut future = snap.clone();
    future.objects.push(node("m", "h", 5));
    assert!(StoreState::from_snapshot(future).is_err());
    let mut kindless = snap;
    kindless.objects.push(Object::default());
    assert!(StoreState::from_snapshot(kindless).is_err());
}

#[test]
#[should_panic(expected = "above the store version")]
fn applying_at_an_old_version_is_a_bug() {
    let mut s = StoreState::new();
    s.apply(3, &batch(vec![])).unwrap();
    let _ = s.apply(3, &batch(vec![]));
}

// ---- Store handle and watch ----

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn next_version(w: &mut Watcher) -> u64 {
    w.next().await.unwrap().unwrap().version
}

#[test]
fn refused_batches_still_consume_their_version() {
    let store = Store::new();
    let rx = store.subscribe_applied();
    assert_eq!(
        store.apply(1, &batch(vec![create(node("a", "h", 0))])),
        Ok(1)
    );
    assert!(
        store
            .apply(2, &batch(vec![create(node("a", "h", 0))]))
            .is_err()
    );
    assert_eq!(store.version(), 2);
    assert_eq!(*rx.borrow(), 2);
    store.advance_to(3);
    assert_eq!(*rx.borrow(), 3);
    assert_eq!(store.read(|s| s.object_count()), 1);
}

#[test]
fn watch_replays_history_then_live_without_gaps() {
    rt().block_on(async {
        let store = Store::new();
        for v in 1..=5 {
            store
                .apply(v, &batch(vec![create(node(&format!("n{v}"), "h", 0))]))
                .unwrap();
        }
        let mut from_two = store.watch(2).unwrap();
        let mut only_new = store.watch(0).unwrap();
        store.advance_to(6);
        store
            .apply(
                7,
                &batch(vec![create(node("a", "h", 0)), create(node("b", "h", 0))]),
            )
            .unwrap();
        // Refused batches publish nothing.
        let _ = store.apply(8, &batch(vec![create(node("a", "h", 0))]));
        store
            .apply(9, &batch(vec![create(node("c", "h", 0))]))
            .unwrap();
        let mut seen = Vec::new();
        for _ in 0..6 {
            seen.push(next_version(&mut from_two).await);
        }
        assert_eq!(seen, vec![3, 4, 5, 7, 7, 9]);
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(next_version(&mut only_new).await);
        }
        assert_eq!(seen, vec![7, 7, 9]);
        // A watch from a version not yet reached waits for it.
        let mut future = store.watch(20).unwrap();
        store
            .apply(21, &batch(vec![create(node("d", "h", 0))]))
            .unwrap();
        assert_eq!(next_version(&mut future).await, 21);
    });
}

#[test]
fn watch_history_is_bounded() {
    let store = Store::new();
    let per_batch = 100;
    let batches = WATCH_HISTORY_MAX / per_batch + 2;
    for v in 1..=batches as u64 {
        let actions = (0..per_batch)
            .map(|i| create(node(&format!("{v}-{i}"), "", 0)))
            .collect();
        store.apply(v, &batch(actions)).unwrap();
    }
    let err = store.watch(1).unwrap_err();
    assert_eq!(err, StoreError::Compacted { oldest: 2 });
    assert_eq!(
        err.to_string(),
        "watch history starts at version 2: list again and watch from the listed version"
    );
    assert!(store.watch(2).is_ok());
}

#[test]
fn a_lagging_watcher_is_ended_not_skipped() {
    rt().block_on(async {
        let store = Store::new();
        let mut w = store.watch(0).unwrap();
        for v in 1..=(WATCH_QUEUE_MAX as u64 + 1) {
            store
                .apply(v, &batch(vec![create(node(&format!("n{v}"), "", 0))]))
                .unwrap();
        }
        assert_eq!(w.next().await, Some(Err(StoreError::Lagged)));
        assert_eq!(w.next().await, None);
    });
}

#[test]
fn installing_a_snapshot_resets_watchers() {
    rt().block_on(async {
        let store = Store::new();
        store
            .apply(1, &batch(vec![create(node("a", "h", 0))]))
            .unwrap();
        let mut w = store.watch(0).unwrap();
        let mut other = StoreState::new();
        other
            .apply(50, &batch(vec![create(node("z", "h", 0))]))
            .unwrap();
        store.install(other.clone());
        assert_eq!(
            w.next().await,
            Some(Err(StoreError::Compacted { oldest: 50 }))
        );
        assert_eq!(w.next().await, None);
        assert!(matches!(
            store.watch(10),
            Err(StoreError::Compacted { oldest: 50 })
        ));
        assert!(store.watch(50).is_ok());
        assert_eq!(store.read(|s| s.clone()), other);
        store.wait_applied(50).await;
    });
}

#[test]
fn watcher_ends_when_the_store_is_dropped() {
    rt().block_on(async {
        let store = Store::new();
        let mut w = store.watch(0).unwrap();
        drop(store);
        assert_eq!(w.next().await, None);
    });
}

// ---- Property tests ----

/// One generated action, resolved against the state when it is built so that
/// many of them succeed.
#[derive(Debug, Clone)]
struct ActionSpec {
    op: u8,
    kind: u8,
    id: u8,
    name: u8,
    /// 0: the stored version, 1: 0, 2+: stored version + this.
    version: u8,
}

fn action_spec() -> impl Strategy<Value = ActionSpec> {
    (0u8..3, 0u8..3, 0u8..4, 0u8..3, 0u8..4).prop_map(|(op, kind, id, name, version)| ActionSpec {
        op,
        kind,
        id,
        name,
        version,
    })
}

fn proposal_specs() -> impl Strategy<Value = Vec<(Vec<ActionSpec>, i64)>> {
    prop::collection::vec(
        (prop::collection::vec(action_spec(), 0..4), 0i64..1_000_000),
        1..12,
    )
}

fn build_action(state: &StoreState, spec: &ActionSpec) -> StoreAction {
    let id = ["a", "b", "ab", "c"][spec.id as usize];
    let name = ["x", "y", ""][spec.name as usize];
    let stored = match spec.kind {
        0 => state.node(id).and_then(|o| o.meta.clone()),
        1 => state.service(id).and_then(|o| o.meta.clone()),
        _ => state.config(id).and_then(|o| o.meta.clone()),
    }
    .map_or(0, |m| m.version);
    let version = match spec.version {
        0 => stored,
        1 => 0,
        n => stored + u64::from(n),
    };
    let object = match spec.kind {
        0 => node(id, name, version),
        1 => service(id, name, version),
        _ => config(id, name, version, name.as_bytes().to_vec()),
    };
    let op = [ActionKind::Create, ActionKind::Update, ActionKind::Delete][spec.op as usize];
    act(op, object)
}

fn build_proposal(state: &StoreState, specs: &[ActionSpec], timestamp_ms: i64) -> Proposal {
    at(
        timestamp_ms,
        specs.iter().map(|s| build_action(state, s)).collect(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Two updates built from the same read: whichever goes first wins, the
    /// other conflicts.
    #[test]
    fn concurrent_updates_from_one_read_conflict(
        setup in proposal_specs(),
        kind in 0u8..3,
        id in 0u8..4,
        names in (0u8..3, 0u8..3),
        first_wins_order in any::<bool>(),
    ) {
        let mut s = StoreState::new();
        let mut v = 0;
        for (specs, ts) in &setup {
            v += 1;
            let p = build_proposal(&s, specs, *ts);
            let _ = s.apply(v, &p);
            s.advance_to(v);
        }
        // Make sure the object exists.
        let create_spec = ActionSpec { op: 0, kind, id, name: 2, version: 0 };
        v += 1;
        let _ = s.apply(v, &batch(vec![build_action(&s, &create_spec)]));
        s.advance_to(v);
        let spec = |name| ActionSpec { op: 1, kind, id, name, version: 0 };
        let u1 = batch(vec![build_action(&s, &spec(names.0))]);
        let u2 = batch(vec![build_action(&s, &spec(names.1))]);
        let (p1, p2) = if first_wins_order { (u1, u2) } else { (u2, u1) };
        let r1 = s.apply(v + 1, &p1);
        let r2 = s.apply(v + 2, &p2);
        // A name clash with a third object may refuse the first too; the
        // second must never succeed after the first did.
        prop_assert!(!(r1.is_ok() && r2.is_ok()));
        if r1.is_ok() {
            let is_conflict = matches!(r2, Err(StoreError::Conflict { .. }));
            prop_assert!(is_conflict);
        }
        let clash = |r: &Result<_, StoreError>| matches!(r, Err(StoreError::NameConflict { .. }));
        if !clash(&r1) && !clash(&r2) {
            prop_assert!(r1.is_ok() || r2.is_ok());
        }
    }

    /// The same proposals on two fresh stores give equal states and results.
    #[test]
    fn apply_is_deterministic(specs in proposal_specs()) {
        let (mut a, mut b) = (StoreState::new(), StoreState::new());
        for (i, (actions, ts)) in specs.iter().enumerate() {
            let p = build_proposal(&a, actions, *ts);
            let v = i as u64 + 1;
            let ra = a.apply(v, &p);
            let rb = b.apply(v, &p);
            prop_assert_eq!(&ra, &rb);
            if ra.is_err() {
                a.advance_to(v);
                b.advance_to(v);
            }
            prop_assert_eq!(&a, &b);
        }
    }

    /// A snapshot restores an equal state that then evolves identically.
    #[test]
    fn snapshot_round_trip(before in proposal_specs(), after in proposal_specs()) {
        let mut a = StoreState::new();
        let mut v = 0;
        for (actions, ts) in &before {
            v += 1;
            let p = build_proposal(&a, actions, *ts);
            if a.apply(v, &p).is_err() {
                a.advance_to(v);
            }
        }
        let bytes = prost::Message::encode_to_vec(&a.to_snapshot());
        let snap: StoreSnapshot = prost::Message::decode(bytes.as_slice()).unwrap();
        let mut b = StoreState::from_snapshot(snap).unwrap();
        prop_assert_eq!(&a, &b);
        for (actions, ts) in &after {
            v += 1;
            let p = build_proposal(&a, actions, *ts);
            prop_assert_eq!(a.apply(v, &p), b.apply(v, &p));
            a.advance_to(v);
            b.advance_to(v);
            prop_assert_eq!(&a, &b);
        }
    }

    /// A refused batch leaves the state exactly as it was.
    #[test]
    fn failed_batches_change_nothing(specs in proposal_specs()) {
        let mut s = StoreState::new();
        for (i, (actions, ts)) in specs.iter().enumerate() {
            let v = i as u64 + 1;
            let p = build_proposal(&s, actions, *ts);
            let before = s.clone();
            if s.apply(v, &p).is_err() {
                prop_assert_eq!(&s, &before);
                s.advance_to(v);
            }
        }
    }
}
