//! Manifests and indexes (OCI and Docker v2), and choosing this node's
//! platform from an index.
//!
//! Owns: parsing manifest bytes into what the store needs. Docker schema 1
//! and non-container artifacts are refused with a clear error.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::ImageError;
use crate::limits::LAYERS_MAX;
use crate::reference::validate_digest;

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker v2 schema 2 manifest media type.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list media type.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image config media type.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker image config media type.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// OCI uncompressed layer media type.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI gzip layer media type.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Every manifest media type we ask registries for.
pub const ACCEPTED_MANIFESTS: [&str; 4] = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    /// The media type.
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    /// `sha256:…` of the content.
    pub digest: String,
    /// Size of the content in bytes.
    pub size: i64,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The platform (index entries only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

/// A platform of an index entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// `amd64`, `arm64`, …
    pub architecture: String,
    /// `linux`, …
    pub os: String,
    /// `v8`, … when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

#[derive(Deserialize)]
struct RawManifest {
    #[serde(rename = "schemaVersion", default)]
    schema_version: u32,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
}

/// A parsed manifest or index.
#[derive(Debug, Clone)]
pub enum Parsed {
    /// An image manifest: config and layers, bottom → top.
    Image {
        /// The config descriptor.
        config: Descriptor,
        /// Layers, bottom → top.
        layers: Vec<Descriptor>,
    },
    /// An index or manifest list.
    Index(Vec<Descriptor>),
}

/// Parses manifest bytes (OCI or Docker v2, image or index).
pub fn parse(bytes: &[u8]) -> Result<Parsed, ImageError> {
    let raw: RawManifest = serde_json::from_slice(bytes)
        .map_err(|e| ImageError::invalid(format!("manifest is not valid JSON: {e}")))?;
    if raw.schema_version == 1 {
        return Err(ImageError::Unsupported {
            what: "Docker image manifest schema 1 (push the image again with a current client)"
                .into(),
        });
    }
    if let Some(manifests) = raw.manifests {
        for entry in &manifests {
            check_digest(&entry.digest)?;
        }
        return Ok(Parsed::Index(manifests));
    }
    let (Some(config), Some(layers)) = (raw.config, raw.layers) else {
        return Err(ImageError::invalid(format!(
            "manifest of media type {} has neither layers nor manifests",
            raw.media_type.as_deref().unwrap_or("(none)")
        )));
    };
    if config.media_type != OCI_CONFIG && config.media_type != DOCKER_CONFIG {
        return Err(ImageError::Unsupported {
            what: format!(
                "an artifact with config media type {:?} (not a container image)",
                config.media_type
            ),
        });
    }
    check_digest(&config.digest)?;
    if layers.len() > LAYERS_MAX {
        return Err(ImageError::TooLarge {
            what: "image (layer count)".into(),
            size: layers.len() as u64,
            limit: LAYERS_MAX as u64,
        });
    }
    for layer in &layers {
        check_digest(&layer.digest)?;
        if !layer.media_type.contains("tar") {
            return Err(ImageError::Unsupported {
                what: format!(
                    "layer {} of media type {:?}",
                    layer.digest, layer.media_type
                ),
            });
        }
    }
    Ok(Parsed::Image { config, layers })
}

fn check_digest(digest: &str) -> Result<(), ImageError> {
    validate_digest(digest).map_err(ImageError::invalid)
}

/// This node's platform as OCI names it: `linux` and `amd64`, `arm64`, …
pub fn node_platform() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    };
    ("linux", arch)
}

/// Picks the index entry for this node's platform; entries without a
/// platform (attestations, nested indexes) match only when nothing else does.
pub fn choose_platform(entries: &[Descriptor]) -> Option<&Descriptor> {
    let (os, arch) = node_platform();
    entries
        .iter()
        .find(|entry| {
            entry
                .platform
                .as_ref()
                .is_some_and(|p| p.os == os && p.architecture == arch)
        })
        .or_else(|| {
            entries
                .iter()
                .find(|entry| entry.platform.is_none() && !is_attestation(entry))
        })
}

fn is_attestation(entry: &Descriptor) -> bool {
    entry
        .annotations
        .get("vnd.docker.reference.type")
        .is_some_and(|kind| kind == "attestation-manifest")
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn an_index_resolves_to_this_node() {
        let (_, arch) = node_platform();
        let other = if arch == "amd64" { "arm64" } else { "amd64" };
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[
              {{"mediaType":"{OCI_MANIFEST}","digest":"{D1}","size":1,"platform":{{"architecture":"{other}","os":"linux"}}}},
              {{"mediaType":"{OCI_MANIFEST}","digest":"{D2}","size":1,"platform":{{"architecture":"{arch}","os":"linux"}}}}]}}"#
        );
        let Ok(Parsed::Index(entries)) = parse(index.as_bytes()) else {
            panic!("an index parses as an index");
        };
        assert_eq!(
            choose_platform(&entries).map(|e| e.digest.as_str()),
            Some(D2)
        );
        assert!(choose_platform(&entries[..1]).is_none());
    }

    #[test]
    fn schema1_and_artifacts_are_refused() {
        let schema1 = br#"{"schemaVersion":1,"name":"x","fsLayers":[]}"#;
        assert!(parse(schema1).unwrap_err().to_string().contains("schema 1"));
        let artifact = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.cncf.helm.config.v1+json","digest":"{D1}","size":1}},"layers":[]}}"#
        );
        assert!(
            parse(artifact.as_bytes())
                .unwrap_err()
                .to_string()
                .contains("not a container image")
        );
    }
}
