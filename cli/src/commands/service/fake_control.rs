//! A scripted control API on a unix socket, for testing the commands'
//! calls, retries and waits end to end without a cluster. It holds one
//! service; `ListTasks` plays a script, one step per call (the last step
//! repeats); failures can be queued per call.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rswarm_proto::control_server::{Control, ControlServer};
use rswarm_proto::*;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

use crate::client::Daemon;

/// What the fake holds and what it was asked.
#[derive(Debug, Default)]
pub struct FakeState {
    /// The one service, once created (or preset).
    pub service: Option<Service>,
    /// `ServiceView.desired_tasks`.
    pub desired_tasks: u64,
    /// What successive `ListTasks` calls answer.
    pub task_script: Vec<Vec<Task>>,
    /// `ListTasks` calls so far.
    pub list_tasks_calls: usize,
    /// What `ListNodes` answers.
    pub nodes: Vec<Node>,
    /// `GetService` calls that fail with Unavailable before one succeeds.
    pub get_service_failures: u32,
    /// Answer NotFound to `GetService` from this call on (1-based).
    pub service_gone_after_calls: Option<usize>,
    /// `GetService` calls so far.
    pub get_service_calls: usize,
    /// `UpdateService` calls that fail with Aborted (a version conflict).
    pub update_conflicts: u32,
    /// Every `UpdateService` request, in order.
    pub updates: Vec<UpdateServiceRequest>,
    /// References `RemoveService` removed.
    pub removed: Vec<String>,
    /// What `ServiceLogs` streams for the service.
    pub log_batches: Vec<ServiceLogsResponse>,
    /// The last `ServiceLogs` request.
    pub logs_request: Option<ServiceLogsRequest>,
}

/// The fake's handle, shared with the test.
#[derive(Debug, Clone, Default)]
pub struct FakeControl(pub Arc<Mutex<FakeState>>);

impl FakeControl {
    /// The state, for setting up and checking.
    pub fn state(&self) -> MutexGuard<'_, FakeState> {
        match self.0.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn matches(service: &Service, reference: &str) -> bool {
        let id = service.meta.as_ref().map_or("", |m| m.id.as_str());
        let name = service
            .spec
            .as_ref()
            .and_then(|s| s.annotations.as_ref())
            .map_or("", |a| a.name.as_str());
        !reference.is_empty() && (id.starts_with(reference) || name == reference)
    }

    fn find(&self, reference: &str) -> Result<Service, Status> {
        self.state()
            .service
            .clone()
            .filter(|s| Self::matches(s, reference))
            .ok_or_else(|| Status::not_found(format!("no service matches \"{reference}\"")))
    }
}

/// A socket path no other test uses; removed with its directory on drop.
pub struct TestSocket(PathBuf);

impl TestSocket {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "rswarm-cli-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::create_dir_all(&dir);
        Self(dir)
    }

    fn path(&self) -> PathBuf {
        self.0.join("control.sock")
    }
}

impl Drop for TestSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Serves `fake` on a fresh socket; the server stops when the runtime does.
pub fn serve(fake: &FakeControl) -> (Daemon, TestSocket) {
    let socket = TestSocket::new();
    let listener = match UnixListener::bind(socket.path()) {
        Ok(listener) => listener,
        Err(e) => panic!("cannot bind the test socket: {e}"),
    };
    let server = tonic::transport::Server::builder()
        .add_service(ControlServer::new(fake.clone()))
        .serve_with_incoming(UnixListenerStream::new(listener));
    tokio::spawn(server);
    let daemon = match Daemon::connect(&format!("unix://{}", socket.path().display())) {
        Ok(daemon) => daemon,
        Err(e) => panic!("cannot connect to the test socket: {e}"),
    };
    (daemon, socket)
}

fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("not part of the fake"))
}

#[tonic::async_trait]
impl Control for FakeControl {
    type ServiceLogsStream =
        tokio_stream::Iter<std::vec::IntoIter<Result<ServiceLogsResponse, Status>>>;
    type WatchStream = tokio_stream::Empty<Result<StoreEvent, Status>>;

    async fn create_service(
        &self,
        request: Request<CreateServiceRequest>,
    ) -> Result<Response<CreateServiceResponse>, Status> {
        let service = Service {
            meta: Some(Meta {
                id: "svc0123456789abcdefghijk".into(),
                version: 1,
                ..Default::default()
            }),
            spec: request.into_inner().spec,
            spec_version: 1,
            ..Default::default()
        };
        self.state().service = Some(service.clone());
        Ok(Response::new(CreateServiceResponse {
            service: Some(service),
            warnings: Vec::new(),
        }))
    }

    async fn get_service(
        &self,
        request: Request<GetServiceRequest>,
    ) -> Result<Response<GetServiceResponse>, Status> {
        let desired_tasks = {
            let mut state = self.state();
            state.get_service_calls += 1;
            if state.get_service_failures > 0 {
                state.get_service_failures -= 1;
                return Err(Status::unavailable("the cluster is electing a leader"));
            }
            if state
                .service_gone_after_calls
                .is_some_and(|n| state.get_service_calls >= n)
            {
                return Err(Status::not_found("no service matches"));
            }
            state.desired_tasks
        };
        let service = self.find(&request.into_inner().reference)?;
        Ok(Response::new(GetServiceResponse {
            service: Some(ServiceView {
                service: Some(service),
                running_tasks: 0,
                desired_tasks,
            }),
        }))
    }

    async fn update_service(
        &self,
        request: Request<UpdateServiceRequest>,
    ) -> Result<Response<UpdateServiceResponse>, Status> {
        let request = request.into_inner();
        let mut state = self.state();
        state.updates.push(request.clone());
        if state.update_conflicts > 0 {
            state.update_conflicts -= 1;
            if let Some(meta) = state.service.as_mut().and_then(|s| s.meta.as_mut()) {
                meta.version += 1;
            }
            return Err(Status::aborted(
                "update of service conflicts with a concurrent change",
            ));
        }
        let Some(service) = state.service.as_mut() else {
            return Err(Status::not_found("no such service"));
        };
        if let Some(meta) = service.meta.as_mut() {
            if meta.version != request.version {
                return Err(Status::aborted("stale version"));
            }
            meta.version += 1;
        }
        if let Some(spec) = request.spec {
            service.spec = Some(spec);
            service.spec_version += 1;
        }
        Ok(Response::new(UpdateServiceResponse {
            service: Some(service.clone()),
            warnings: Vec::new(),
        }))
    }

    async fn list_tasks(
        &self,
        _request: Request<ListTasksRequest>,
    ) -> Result<Response<ListTasksResponse>, Status> {
        let mut state = self.state();
        let step = state
            .list_tasks_calls
            .min(state.task_script.len().saturating_sub(1));
        state.list_tasks_calls += 1;
        let tasks = state.task_script.get(step).cloned().unwrap_or_default();
        Ok(Response::new(ListTasksResponse { tasks }))
    }

    async fn list_nodes(
        &self,
        _request: Request<ListNodesRequest>,
    ) -> Result<Response<ListNodesResponse>, Status> {
        let nodes = self
            .state()
            .nodes
            .iter()
            .map(|n| NodeView {
                node: Some(n.clone()),
                manager_status: String::new(),
            })
            .collect();
        Ok(Response::new(ListNodesResponse { nodes }))
    }

    async fn remove_service(
        &self,
        request: Request<RemoveServiceRequest>,
    ) -> Result<Response<RemoveServiceResponse>, Status> {
        let reference = request.into_inner().reference;
        self.find(&reference)?;
        self.state().removed.push(reference);
        Ok(Response::new(RemoveServiceResponse {}))
    }

    async fn list_services(
        &self,
        _request: Request<ListServicesRequest>,
    ) -> Result<Response<ListServicesResponse>, Status> {
        unimplemented()
    }

    async fn service_logs(
        &self,
        request: Request<ServiceLogsRequest>,
    ) -> Result<Response<Self::ServiceLogsStream>, Status> {
        let request = request.into_inner();
        self.find(&request.reference)?;
        let mut state = self.state();
        state.logs_request = Some(request);
        let batches: Vec<_> = state.log_batches.iter().cloned().map(Ok).collect();
        Ok(Response::new(tokio_stream::iter(batches)))
    }

    async fn get_node(
        &self,
        _request: Request<GetNodeRequest>,
    ) -> Result<Response<GetNodeResponse>, Status> {
        unimplemented()
    }

    async fn update_node(
        &self,
        _request: Request<UpdateNodeRequest>,
    ) -> Result<Response<UpdateNodeResponse>, Status> {
        unimplemented()
    }

    async fn remove_node(
        &self,
        _request: Request<RemoveNodeRequest>,
    ) -> Result<Response<RemoveNodeResponse>, Status> {
        unimplemented()
    }

    async fn get_cluster(
        &self,
        _request: Request<GetClusterRequest>,
    ) -> Result<Response<GetClusterResponse>, Status> {
        unimplemented()
    }

    async fn rotate_join_token(
        &self,
        _request: Request<RotateJoinTokenRequest>,
    ) -> Result<Response<RotateJoinTokenResponse>, Status> {
        unimplemented()
    }

    async fn create_config(
        &self,
        _request: Request<CreateConfigRequest>,
    ) -> Result<Response<CreateConfigResponse>, Status> {
        unimplemented()
    }

    async fn get_config(
        &self,
        _request: Request<GetConfigRequest>,
    ) -> Result<Response<GetConfigResponse>, Status> {
        unimplemented()
    }

    async fn update_config(
        &self,
        _request: Request<UpdateConfigRequest>,
    ) -> Result<Response<UpdateConfigResponse>, Status> {
        unimplemented()
    }

    async fn list_configs(
        &self,
        _request: Request<ListConfigsRequest>,
    ) -> Result<Response<ListConfigsResponse>, Status> {
        unimplemented()
    }

    async fn remove_config(
        &self,
        _request: Request<RemoveConfigRequest>,
    ) -> Result<Response<RemoveConfigResponse>, Status> {
        unimplemented()
    }

    async fn create_secret(
        &self,
        _request: Request<CreateSecretRequest>,
    ) -> Result<Response<CreateSecretResponse>, Status> {
        unimplemented()
    }

    async fn get_secret(
        &self,
        _request: Request<GetSecretRequest>,
    ) -> Result<Response<GetSecretResponse>, Status> {
        unimplemented()
    }

    async fn update_secret(
        &self,
        _request: Request<UpdateSecretRequest>,
    ) -> Result<Response<UpdateSecretResponse>, Status> {
        unimplemented()
    }

    async fn list_secrets(
        &self,
        _request: Request<ListSecretsRequest>,
    ) -> Result<Response<ListSecretsResponse>, Status> {
        unimplemented()
    }

    async fn remove_secret(
        &self,
        _request: Request<RemoveSecretRequest>,
    ) -> Result<Response<RemoveSecretResponse>, Status> {
        unimplemented()
    }

    async fn watch(
        &self,
        _request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        unimplemented()
    }
}
