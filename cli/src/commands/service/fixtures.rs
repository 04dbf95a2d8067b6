//! Test builders for services, tasks and nodes, so each test states only
//! what matters to it.

use rswarm_proto::service_spec::Mode;
use rswarm_proto::*;

/// 2026-01-01T00:00:00Z, the "now" of the rendering tests.
pub const NOW_MS: i64 = 1_767_225_600_000;

/// A task of `service` ("web") in `slot` on `node`, created `created_s`
/// seconds before `NOW_MS`, last changed `changed_s` seconds before it.
pub struct TaskBuilder(pub Task);

impl TaskBuilder {
    pub fn new(id: &str, service: &str, slot: u64) -> Self {
        Self(Task {
            meta: Some(Meta {
                id: id.to_string(),
                version: 1,
                created_at_ms: NOW_MS - 60_000,
                updated_at_ms: NOW_MS - 60_000,
            }),
            service_id: format!("{service}-id-0123456789abcdef"),
            service_name: service.to_string(),
            slot,
            desired_state: TaskState::Running as i32,
            status: Some(TaskStatus {
                state: TaskState::Running as i32,
                timestamp_ms: NOW_MS - 8_000,
                ..Default::default()
            }),
            spec: Some(TaskSpec {
                container: Some(ContainerSpec {
                    image: "nginx:1.27".into(),
                    ..Default::default()
                }),
                driver: "oci".into(),
                ..Default::default()
            }),
            spec_version: 1,
            ..Default::default()
        })
    }

    pub fn node(mut self, node: &str) -> Self {
        self.0.node_id = node.to_string();
        self
    }

    pub fn desired(mut self, state: TaskState) -> Self {
        self.0.desired_state = state as i32;
        self
    }

    pub fn state(mut self, state: TaskState, changed_s: i64) -> Self {
        let status = self.0.status.get_or_insert_with(Default::default);
        status.state = state as i32;
        status.timestamp_ms = NOW_MS - changed_s * 1000;
        self
    }

    /// A running task's health.
    pub fn health(mut self, health: ContainerHealth) -> Self {
        self.0.status.get_or_insert_with(Default::default).health = health as i32;
        self
    }

    /// The digest of the image the task runs, as its node reported it.
    pub fn image_digest(mut self, digest: &str) -> Self {
        self.0
            .status
            .get_or_insert_with(Default::default)
            .image_digest = digest.to_string();
        self
    }

    pub fn err(mut self, err: &str) -> Self {
        self.0.status.get_or_insert_with(Default::default).err = err.to_string();
        self
    }

    pub fn created(mut self, seconds_ago: i64) -> Self {
        if let Some(meta) = self.0.meta.as_mut() {
            meta.created_at_ms = NOW_MS - seconds_ago * 1000;
        }
        self
    }

    pub fn spec_version(mut self, version: u64) -> Self {
        self.0.spec_version = version;
        self
    }

    pub fn image(mut self, image: &str) -> Self {
        if let Some(container) = self.0.spec.as_mut().and_then(|s| s.container.as_mut()) {
            container.image = image.to_string();
        }
        self
    }

    pub fn ports(mut self, ports: Vec<PortConfig>) -> Self {
        self.0.endpoint = Some(EndpointSpec { ports });
        self
    }

    pub fn build(self) -> Task {
        self.0
    }
}

/// A replicated service "web" running nginx:1.27, spec version 1.
pub fn replicated(name: &str, replicas: u64) -> Service {
    Service {
        meta: Some(Meta {
            id: format!("{name}-id-0123456789abcdef"),
            version: 10,
            created_at_ms: NOW_MS - 3_600_000,
            updated_at_ms: NOW_MS - 60_000,
        }),
        spec: Some(ServiceSpec {
            annotations: Some(Annotations {
                name: name.to_string(),
                ..Default::default()
            }),
            task: TaskBuilder::new("x", name, 1).0.spec,
            mode: Some(Mode::Replicated(ReplicatedMode { replicas })),
            ..Default::default()
        }),
        spec_version: 1,
        ..Default::default()
    }
}

/// A global service.
pub fn global(name: &str) -> Service {
    let mut service = replicated(name, 0);
    if let Some(spec) = service.spec.as_mut() {
        spec.mode = Some(Mode::Global(GlobalMode {}));
    }
    service
}

/// A ready node.
pub fn node(id: &str, hostname: &str) -> Node {
    Node {
        meta: Some(Meta {
            id: id.to_string(),
            ..Default::default()
        }),
        description: Some(NodeDescription {
            hostname: hostname.to_string(),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            state: NodeState::Ready as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}
