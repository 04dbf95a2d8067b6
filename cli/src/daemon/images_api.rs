//! `LocalImages` on the local socket: this node's image store for
//! `rswarm image ls|rm|prune|pull|load`.
//!
//! Invariant: an uploaded archive is spooled to the store's own temporary
//! directory, bounded by `ARCHIVE_BYTES_MAX`, and removed once loaded or
//! refused.

use rswarm_image::{ImageError, ImageStore, ImageSummary, RemoveAction};
use rswarm_proto::local_images_server::LocalImages;
use rswarm_proto::*;
use tokio::io::AsyncWriteExt;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

/// Serves the image store.
pub struct ImagesApi {
    pub store: ImageStore,
}

/// The status a user sees for an image error.
fn status(error: ImageError) -> Status {
    let message = error.to_string();
    match error {
        ImageError::NoSuchImage { .. } | ImageError::NotFound { .. } => Status::not_found(message),
        ImageError::InUse { .. }
        | ImageError::MultipleTags { .. }
        | ImageError::Ambiguous { .. } => Status::failed_precondition(message),
        ImageError::Unauthorized { .. } => Status::permission_denied(message),
        ImageError::Io { .. } => Status::internal(message),
        e if e.is_transient() => Status::unavailable(message),
        _ => Status::invalid_argument(message),
    }
}

fn view(image: ImageSummary) -> ImageView {
    ImageView {
        id: image.id,
        digest: image.digest,
        repo_tags: image.repo_tags,
        repo_digests: image.repo_digests,
        size: image.size,
        created: image.created,
        stored_unix: image.stored_unix,
        holders: image.holders,
    }
}

#[tonic::async_trait]
impl LocalImages for ImagesApi {
    async fn list_images(
        &self,
        _req: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        let images = self.store.list().into_iter().map(view).collect();
        Ok(Response::new(ListImagesResponse { images }))
    }

    async fn remove_image(
        &self,
        req: Request<RemoveImageRequest>,
    ) -> Result<Response<RemoveImageResponse>, Status> {
        let req = req.into_inner();
        let actions = self
            .store
            .remove(&req.reference, req.force)
            .await
            .map_err(status)?;
        let mut response = RemoveImageResponse::default();
        for action in actions {
            match action {
                RemoveAction::Untagged(tag) => response.untagged.push(tag),
                RemoveAction::Deleted(id) => response.deleted.push(id),
            }
        }
        Ok(Response::new(response))
    }

    async fn prune_images(
        &self,
        req: Request<PruneImagesRequest>,
    ) -> Result<Response<PruneImagesResponse>, Status> {
        let report = self
            .store
            .prune(req.into_inner().all)
            .await
            .map_err(status)?;
        Ok(Response::new(PruneImagesResponse {
            deleted: report.deleted,
            untagged: report.untagged,
            space_reclaimed: report.space_reclaimed,
        }))
    }

    async fn pull_image(
        &self,
        req: Request<PullImageRequest>,
    ) -> Result<Response<PullImageResponse>, Status> {
        let req = req.into_inner();
        let image = self
            .store
            .pull(&req.reference, req.auth.as_ref())
            .await
            .map_err(status)?;
        Ok(Response::new(PullImageResponse {
            reference: image.reference,
            digest: image.digest,
        }))
    }

    async fn load_image(
        &self,
        req: Request<Streaming<LoadImageChunk>>,
    ) -> Result<Response<LoadImageResponse>, Status> {
        let path = self.store.scratch_path();
        let result = self.spool_and_load(req.into_inner(), &path).await;
        let _ = tokio::fs::remove_file(&path).await;
        let loaded = result?;
        Ok(Response::new(LoadImageResponse {
            images: loaded
                .into_iter()
                .map(|image| LoadedImage {
                    id: image.id,
                    digest: image.digest,
                    repo_tags: image.repo_tags,
                })
                .collect(),
        }))
    }
}

impl ImagesApi {
    async fn spool_and_load(
        &self,
        mut chunks: Streaming<LoadImageChunk>,
        path: &std::path::Path,
    ) -> Result<Vec<rswarm_image::LoadedImage>, Status> {
        let limit = rswarm_image::limits::ARCHIVE_BYTES_MAX;
        let internal =
            |e: std::io::Error| Status::internal(format!("cannot spool the archive: {e}"));
        let mut file = tokio::fs::File::create(path).await.map_err(internal)?;
        let mut size = 0u64;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            size += chunk.data.len() as u64;
            if size > limit {
                return Err(Status::invalid_argument(format!(
                    "the archive is larger than the limit of {limit} bytes"
                )));
            }
            file.write_all(&chunk.data).await.map_err(internal)?;
        }
        file.flush().await.map_err(internal)?;
        drop(file);
        if size == 0 {
            return Err(Status::invalid_argument(
                "the archive is empty: pass a file with -i or pipe one to stdin",
            ));
        }
        self.store.load_archive(path).await.map_err(status)
    }
}
