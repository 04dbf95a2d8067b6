//! Registry access through oci-client: which protocol, which credentials,
//! bounded and retried requests, and registry errors told in the registry's
//! own words.
//!
//! Owns: every request to a registry. Invariants: HTTPS unless the registry
//! is loopback or listed as insecure; credentials are sent only to the
//! registry they name and never logged; each request has a timeout and
//! transient failures are retried a bounded number of times with back-off.

use std::future::Future;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use oci_client::Client;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::OciDescriptor;
use rswarm_proto::RegistryAuth;
use sha2::{Digest as _, Sha256};

use crate::error::ImageError;
use crate::limits::{
    BLOB_TIMEOUT, CONNECT_TIMEOUT, MANIFEST_BYTES_MAX, READ_IDLE_TIMEOUT, REQUEST_ATTEMPTS_MAX,
    REQUEST_TIMEOUT, RETRY_BACKOFF_FIRST,
};
use crate::manifest::{ACCEPTED_MANIFESTS, Descriptor};
use crate::reference::ImageRef;

/// How this node reaches registries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryConfig {
    /// Registries spoken to over plain HTTP, as `host` (any port) or
    /// `host:port`, like dockerd's `--insecure-registry`. Loopback registries
    /// are always allowed plain HTTP.
    pub insecure: Vec<String>,
}

impl RegistryConfig {
    /// True when `registry` (host[:port]) is spoken to over plain HTTP.
    pub fn is_insecure(&self, registry: &str) -> bool {
        let host = host_of(registry);
        is_loopback(host)
            || self
                .insecure
                .iter()
                .any(|entry| entry == registry || (host_of(entry) == entry && entry == host))
    }
}

/// The host part of `host[:port]` (IPv6 in brackets).
fn host_of(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    registry.split(':').next().unwrap_or(registry)
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Makes sure ring is the process's rustls provider (the only one allowed in
/// the project) before a client is built; "already installed" is fine.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// One image's registry: a client for its protocol and the credentials for it.
pub(crate) struct RegistrySession {
    client: Client,
    reference: ImageRef,
    auth: oci_client::secrets::RegistryAuth,
}

impl RegistrySession {
    pub(crate) fn new(
        reference: &ImageRef,
        auth: Option<&RegistryAuth>,
        config: &RegistryConfig,
    ) -> Self {
        install_crypto_provider();
        let protocol = if config.is_insecure(reference.registry()) {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        };
        let client = Client::new(ClientConfig {
            protocol,
            read_timeout: Some(READ_IDLE_TIMEOUT),
            connect_timeout: Some(CONNECT_TIMEOUT),
            // Indexes are resolved by the store, so every path shares one rule.
            platform_resolver: None,
            ..Default::default()
        });
        Self {
            client,
            reference: reference.clone(),
            auth: credentials_for(reference.registry(), auth),
        }
    }

    /// The digest the registry has for the reference (HEAD; for a
    /// multi-platform image, the index's digest, as Docker records).
    pub(crate) async fn digest(&self) -> Result<String, ImageError> {
        let oci = self.reference.to_oci();
        let what = format!("resolving {}", self.reference);
        retry(&what, REQUEST_TIMEOUT, || async {
            self.client
                .fetch_manifest_digest(&oci, &self.auth)
                .await
                .map_err(|e| self.map_error(e))
        })
        .await
    }

    /// The manifest (or index) `reference` points to, as bytes, and its
    /// verified digest.
    pub(crate) async fn manifest(
        &self,
        reference: &ImageRef,
    ) -> Result<(Vec<u8>, String), ImageError> {
        let oci = reference.to_oci();
        let what = format!("fetching the manifest of {reference}");
        let (bytes, _) = retry(&what, REQUEST_TIMEOUT, || async {
            self.client
                .pull_manifest_raw(&oci, &self.auth, &ACCEPTED_MANIFESTS)
                .await
                .map_err(|e| self.map_error(e))
        })
        .await?;
        if bytes.len() as u64 > MANIFEST_BYTES_MAX {
            return Err(ImageError::TooLarge {
                what: format!("manifest of {reference}"),
                size: bytes.len() as u64,
                limit: MANIFEST_BYTES_MAX,
            });
        }
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        if let Some(expected) = reference.digest()
            && expected != digest
        {
            return Err(ImageError::DigestMismatch {
                expected: expected.to_string(),
                actual: digest,
            });
        }
        Ok((bytes.to_vec(), digest))
    }

    /// Downloads one blob into `dest` (created or truncated). The caller
    /// verifies the digest of the file before using it.
    pub(crate) async fn blob_to_file(
        &self,
        descriptor: &Descriptor,
        dest: &Path,
    ) -> Result<(), ImageError> {
        let oci = self.reference.to_oci();
        let oci_descriptor = OciDescriptor {
            media_type: descriptor.media_type.clone(),
            digest: descriptor.digest.clone(),
            size: descriptor.size,
            urls: None,
            annotations: None,
            artifact_type: None,
        };
        let what = format!("downloading blob {}", descriptor.digest);
        retry(&what, BLOB_TIMEOUT, || async {
            let file = tokio::fs::File::create(dest)
                .await
                .map_err(|e| ImageError::io("create download file", dest, e))?;
            self.client
                .pull_blob(&oci, &oci_descriptor, file)
                .await
                .map_err(|e| self.map_error(e))
        })
        .await
    }

    /// Pushes a fixture image with its exact manifest bytes, so the digest
    /// in the registry is the fixture's.
    #[cfg(feature = "test-fixtures")]
    pub(crate) async fn push_raw(
        &self,
        image: &crate::fixtures::TestImage,
    ) -> Result<(), ImageError> {
        let oci = self.reference.to_oci();
        for layer in &image.layers {
            self.client
                .push_blob(&oci, layer.gzip.clone(), &layer.digest)
                .await
                .map_err(|e| self.map_error(e))?;
        }
        self.client
            .push_blob(&oci, image.config.clone(), &image.config_digest)
            .await
            .map_err(|e| self.map_error(e))?;
        let content_type = crate::manifest::OCI_MANIFEST
            .parse()
            .map_err(|_| ImageError::invalid("bad manifest content type"))?;
        self.client
            .push_manifest_raw(&oci, image.manifest.clone(), content_type)
            .await
            .map_err(|e| self.map_error(e))?;
        Ok(())
    }

    /// Turns oci-client's error into ours, keeping the registry's reason.
    fn map_error(&self, error: OciDistributionError) -> ImageError {
        let reference = self.reference.to_string();
        match error {
            OciDistributionError::ImageManifestNotFoundError(reason) => {
                ImageError::NotFound { reference, reason }
            }
            OciDistributionError::UnauthorizedError { .. } => ImageError::Unauthorized {
                reference,
                reason: "the registry answered 401 Unauthorized".into(),
            },
            OciDistributionError::AuthenticationFailure(reason) => {
                ImageError::Unauthorized { reference, reason }
            }
            OciDistributionError::RegistryError { envelope, .. } => {
                let reason = envelope
                    .errors
                    .iter()
                    .map(|e| format!("{:?}: {}", e.code, e.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                let code = envelope.errors.first().map(|e| &e.code);
                match code {
                    Some(
                        OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                        | OciErrorCode::BlobUnknown,
                    ) => ImageError::NotFound { reference, reason },
                    Some(OciErrorCode::Unauthorized | OciErrorCode::Denied) => {
                        ImageError::Unauthorized { reference, reason }
                    }
                    Some(OciErrorCode::Toomanyrequests) => ImageError::Registry {
                        reference,
                        status: 429,
                        reason,
                    },
                    _ => ImageError::Registry {
                        reference,
                        status: 400,
                        reason,
                    },
                }
            }
            OciDistributionError::ServerError { code, message, .. } => match code {
                404 => ImageError::NotFound {
                    reference,
                    reason: message,
                },
                401 | 403 => ImageError::Unauthorized {
                    reference,
                    reason: message,
                },
                status => ImageError::Registry {
                    reference,
                    status,
                    reason: message,
                },
            },
            OciDistributionError::RequestError(error) => {
                let reason = error_chain(&error);
                if error.is_timeout() {
                    ImageError::Timeout {
                        what: format!("talking to {}: {reason}", self.reference.registry()),
                        seconds: READ_IDLE_TIMEOUT.as_secs(),
                    }
                } else {
                    ImageError::Unreachable {
                        registry: self.reference.registry().to_string(),
                        reason,
                    }
                }
            }
            OciDistributionError::DigestError(
                oci_client::errors::DigestError::VerificationError { expected, actual },
            ) => ImageError::DigestMismatch { expected, actual },
            OciDistributionError::IoError(error) => {
                ImageError::io("write download", "(download)", error)
            }
            other => ImageError::Registry {
                reference,
                status: 0,
                reason: error_chain(&other),
            },
        }
    }
}

/// Credentials go only to the registry they were given for (an empty
/// server means "the image's registry").
fn credentials_for(
    registry: &str,
    auth: Option<&RegistryAuth>,
) -> oci_client::secrets::RegistryAuth {
    use oci_client::secrets::RegistryAuth as Oci;
    let Some(auth) = auth else {
        return Oci::Anonymous;
    };
    let server = auth
        .server
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let matches = server.is_empty()
        || server == registry
        || (registry == crate::reference::DEFAULT_REGISTRY && server.ends_with("docker.io"))
        || server.ends_with("docker.io/v1") && registry == crate::reference::DEFAULT_REGISTRY;
    if !matches {
        tracing::warn!(
            registry,
            "registry credentials are for another registry; pulling anonymously"
        );
        return Oci::Anonymous;
    }
    if !auth.identity_token.is_empty() {
        Oci::Bearer(auth.identity_token.clone())
    } else if !auth.username.is_empty() {
        Oci::Basic(auth.username.clone(), auth.password.clone())
    } else {
        Oci::Anonymous
    }
}

/// The error and its sources, joined: reqwest's top message alone says
/// little ("error sending request").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Runs `attempt` with a timeout, retrying transient failures with
/// exponential back-off, at most `REQUEST_ATTEMPTS_MAX` times.
async fn retry<T, F, Fut>(what: &str, timeout: Duration, mut attempt: F) -> Result<T, ImageError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ImageError>>,
{
    let mut backoff = RETRY_BACKOFF_FIRST;
    let mut tries = 0;
    loop {
        tries += 1;
        let result = match tokio::time::timeout(timeout, attempt()).await {
            Ok(result) => result,
            Err(_) => Err(ImageError::Timeout {
                what: what.to_string(),
                seconds: timeout.as_secs(),
            }),
        };
        match result {
            Err(error) if error.is_transient() && tries < REQUEST_ATTEMPTS_MAX => {
                tracing::warn!(%error, attempt = tries, "{what} failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            other => return other,
        }
    }
}

/// Resolves a reference to `registry/repository:tag@sha256:…` by asking its
/// registry, as the manager does when a service is created or updated so
/// that every node runs the same image. A reference that already has a
/// digest is returned as is (normalised).
pub async fn resolve_digest(
    reference: &str,
    auth: Option<&RegistryAuth>,
    registry: &RegistryConfig,
) -> Result<String, ImageError> {
    let parsed = ImageRef::parse(reference)?;
    if parsed.digest().is_some() {
        return Ok(parsed.to_string());
    }
    let digest = RegistrySession::new(&parsed, auth, registry)
        .digest()
        .await?;
    crate::reference::validate_digest(&digest).map_err(ImageError::invalid)?;
    Ok(parsed.with_digest(&digest).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_for_loopback_and_listed_registries() {
        let config = RegistryConfig {
            insecure: vec!["reg.local:5000".into(), "plain.example".into()],
        };
        assert!(config.is_insecure("127.0.0.1:5000"));
        assert!(config.is_insecure("localhost:5000"));
        assert!(config.is_insecure("[::1]:5000"));
        assert!(config.is_insecure("reg.local:5000"));
        assert!(!config.is_insecure("reg.local:6000"));
        assert!(config.is_insecure("plain.example:443"));
        assert!(!config.is_insecure("docker.io"));
        assert!(!config.is_insecure("192.0.2.1:5000"));
    }

    #[test]
    fn credentials_stay_with_their_registry() {
        use oci_client::secrets::RegistryAuth as Oci;
        let auth = RegistryAuth {
            server: "reg.local:5000".into(),
            username: "u".into(),
            password: "p".into(),
            identity_token: String::new(),
        };
        assert!(matches!(
            credentials_for("reg.local:5000", Some(&auth)),
            Oci::Basic(..)
        ));
        assert!(matches!(
            credentials_for("other:5000", Some(&auth)),
            Oci::Anonymous
        ));
    }
}
