//! The `LocalVolumes` API on the local socket: this node's named volumes
//! (the `oci` driver's), listed and removed for `rswarm volume`.
//!
//! It works on the driver's directories without starting the driver, so
//! volumes can be listed and removed whatever the state of the image
//! store; a node without runc, which cannot offer the driver at all,
//! answers every call with the reason. Filesystem work runs on the
//! blocking pool: removing a big volume can take a while.

use std::path::PathBuf;

use rswarm_agent::runtime::oci::volumes::{VolumeError, VolumeInfo, Volumes};
use rswarm_agent::runtime::oci::{detect_runc, volumes_in};
use rswarm_proto::local_volumes_server::LocalVolumes;
use rswarm_proto::{
    ListVolumesRequest, ListVolumesResponse, LocalVolume, RemoveVolumeRequest, RemoveVolumeResponse,
};
use tonic::{Request, Response, Status};

/// The only volume driver: volumes are directories on the node.
const VOLUME_DRIVER: &str = "local";

/// Serves the volumes of the `oci` driver whose state is in `state_dir`.
pub(super) struct LocalVolumesApi {
    state_dir: PathBuf,
    /// Why this node has no volumes (no usable runc), found once at start
    /// as the driver itself is, rather than by running runc on every call.
    unavailable: Option<String>,
}

impl LocalVolumesApi {
    /// The API over the volumes of the driver state in `state_dir`.
    pub(super) fn new(state_dir: PathBuf) -> Self {
        Self {
            state_dir,
            unavailable: detect_runc().err(),
        }
    }

    /// The node's volumes, or why this node has none.
    fn volumes(&self) -> Result<Volumes, Status> {
        match &self.unavailable {
            Some(reason) => Err(Status::failed_precondition(format!(
                "this node does not offer the oci driver, whose volumes these are: {reason}"
            ))),
            None => Ok(volumes_in(&self.state_dir)),
        }
    }
}

/// Runs `f` on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, VolumeError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("the volume call did not finish: {e}")))?
        .map_err(volume_status)
}

/// The status a volume error is answered with.
fn volume_status(error: VolumeError) -> Status {
    let message = error.to_string();
    match error {
        VolumeError::NotFound { .. } => Status::not_found(message),
        VolumeError::InUse { .. } => Status::failed_precondition(message),
        VolumeError::BadName(_) => Status::invalid_argument(message),
        _ => Status::internal(message),
    }
}

fn to_proto(info: VolumeInfo) -> LocalVolume {
    LocalVolume {
        mountpoint: info.mountpoint.display().to_string(),
        name: info.name,
        driver: VOLUME_DRIVER.to_string(),
        labels: info.labels,
        created_ns: info.created_ns,
        used_by: info.used_by,
    }
}

#[tonic::async_trait]
impl LocalVolumes for LocalVolumesApi {
    async fn list_volumes(
        &self,
        _req: Request<ListVolumesRequest>,
    ) -> Result<Response<ListVolumesResponse>, Status> {
        let volumes = self.volumes()?;
        let listed = blocking(move || volumes.list()).await?;
        Ok(Response::new(ListVolumesResponse {
            volumes: listed.into_iter().map(to_proto).collect(),
        }))
    }

    async fn remove_volume(
        &self,
        req: Request<RemoveVolumeRequest>,
    ) -> Result<Response<RemoveVolumeResponse>, Status> {
        let RemoveVolumeRequest { name, force } = req.into_inner();
        let volumes = self.volumes()?;
        blocking(move || volumes.remove(&name, force)).await?;
        Ok(Response::new(RemoveVolumeResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_errors_keep_their_meaning_on_the_wire() {
        let missing = volume_status(VolumeError::NotFound { name: "x".into() });
        assert_eq!(missing.code(), tonic::Code::NotFound);
        assert!(missing.message().contains("no such volume: x"));
        let in_use = volume_status(VolumeError::InUse {
            name: "data".into(),
            tasks: "t1".into(),
        });
        assert_eq!(in_use.code(), tonic::Code::FailedPrecondition);
        assert!(in_use.message().contains("t1") && in_use.message().contains("-f"));
        let bad = volume_status(VolumeError::BadName("bad name".into()));
        assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    }
}
