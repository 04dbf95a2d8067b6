//! Image references, normalised the way Docker does.
//!
//! Owns: parsing `[registry/]repository[:tag][@sha256:hex]` and its canonical
//! form. Invariants: a parsed reference always has a registry and a
//! repository; it has a tag, a digest or both (a bare name gets `latest`);
//! Docker Hub's official images live under `library/`.

use std::fmt;

use crate::error::ImageError;

/// The registry of references that name none, as in Docker.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The tag of references that give neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";
/// Longest reference accepted, as Docker's distribution library does.
const REFERENCE_LEN_MAX: usize = 255;
/// Longest tag accepted (Docker's rule).
const TAG_LEN_MAX: usize = 128;

/// A parsed, normalised image reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl ImageRef {
    /// Parses and normalises a reference: `busybox` →
    /// `docker.io/library/busybox:latest`.
    pub fn parse(input: &str) -> Result<Self, ImageError> {
        let fail = |reason: &str| ImageError::InvalidReference {
            reference: input.to_string(),
            reason: reason.to_string(),
        };
        if input.is_empty() {
            return Err(fail("it is empty"));
        }
        if input.len() > REFERENCE_LEN_MAX {
            return Err(fail("it is longer than 255 characters"));
        }
        let (name_tag, digest) = match input.split_once('@') {
            Some((name_tag, digest)) => {
                validate_digest(digest).map_err(|reason| fail(&reason))?;
                (name_tag, Some(digest.to_string()))
            }
            None => (input, None),
        };
        let (name, tag) = split_tag(name_tag);
        if let Some(tag) = tag {
            validate_tag(tag).map_err(|reason| fail(&reason))?;
        }
        let (registry, repository) = split_registry(name);
        validate_repository(&repository).map_err(|reason| fail(&reason))?;
        let tag = match (tag, &digest) {
            (Some(tag), _) => Some(tag.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TAG.to_string()),
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// host[:port] of the registry.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path inside the registry (`library/busybox`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, when the reference has one.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest (`sha256:…`), when the reference has one.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// `registry/repository`, the name without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// `registry/repository:tag`, when there is a tag.
    pub fn name_tag(&self) -> Option<String> {
        self.tag
            .as_ref()
            .map(|tag| format!("{}:{tag}", self.name()))
    }

    /// The same reference pinned to `digest`, keeping the tag (Docker stores
    /// `name:tag@digest` in a service spec).
    pub fn with_digest(&self, digest: &str) -> Self {
        Self {
            digest: Some(digest.to_string()),
            ..self.clone()
        }
    }

    /// The same reference without its digest.
    pub fn without_digest(&self) -> Self {
        Self {
            digest: None,
            tag: Some(self.tag.clone().unwrap_or_else(|| DEFAULT_TAG.into())),
            ..self.clone()
        }
    }

    /// The name as Docker shows it: `busybox` for official Hub images,
    /// `user/app` for other Hub images, the full name elsewhere.
    pub fn familiar_name(&self) -> String {
        if self.registry != DEFAULT_REGISTRY {
            return self.name();
        }
        match self.repository.strip_prefix("library/") {
            Some(official) if !official.contains('/') => official.to_string(),
            _ => self.repository.clone(),
        }
    }

    /// The reference for oci-client: the registry, repository, and the digest
    /// when there is one (a digest wins over a tag, as in Docker).
    pub(crate) fn to_oci(&self) -> oci_client::Reference {
        match &self.digest {
            Some(digest) => oci_client::Reference::with_digest(
                self.registry.clone(),
                self.repository.clone(),
                digest.clone(),
            ),
            None => oci_client::Reference::with_tag(
                self.registry.clone(),
                self.repository.clone(),
                self.tag.clone().unwrap_or_else(|| DEFAULT_TAG.into()),
            ),
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Splits `name:tag`; a colon before the last `/` is a registry port.
fn split_tag(name_tag: &str) -> (&str, Option<&str>) {
    match name_tag.rfind(':') {
        Some(colon) if !name_tag[colon..].contains('/') => {
            (&name_tag[..colon], Some(&name_tag[colon + 1..]))
        }
        _ => (name_tag, None),
    }
}

/// The first component is a registry when it looks like a host: it has a dot
/// or a port, or is `localhost` (Docker's rule).
fn split_registry(name: &str) -> (String, String) {
    let (first, rest) = match name.split_once('/') {
        Some((first, rest)) => (first, Some(rest)),
        None => (name, None),
    };
    match rest {
        Some(rest) if first.contains('.') || first.contains(':') || first == "localhost" => {
            let registry = if first == "index.docker.io" {
                DEFAULT_REGISTRY
            } else {
                first
            };
            let repository = if registry == DEFAULT_REGISTRY && !rest.contains('/') {
                format!("library/{rest}")
            } else {
                rest.to_string()
            };
            (registry.to_string(), repository)
        }
        Some(_) => (DEFAULT_REGISTRY.to_string(), name.to_string()),
        None => (DEFAULT_REGISTRY.to_string(), format!("library/{name}")),
    }
}

fn validate_repository(repository: &str) -> Result<(), String> {
    for component in repository.split('/') {
        if component.is_empty() {
            return Err("the repository has an empty path component".into());
        }
        let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c);
        if !component.chars().all(allowed) {
            return Err(format!(
                "repository component {component:?} may only hold lower-case letters, digits and . _ -"
            ));
        }
        let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
        if !edge_ok(component.chars().next()) || !edge_ok(component.chars().last()) {
            return Err(format!(
                "repository component {component:?} must start and end with a letter or digit"
            ));
        }
    }
    Ok(())
}

fn validate_tag(tag: &str) -> Result<(), String> {
    let mut chars = tag.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    if !first_ok || tag.len() > TAG_LEN_MAX {
        return Err(format!(
            "tag {tag:?} must start with a letter, digit or _ and be at most 128 characters"
        ));
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
        return Err(format!(
            "tag {tag:?} may only hold letters, digits and _ . -"
        ));
    }
    Ok(())
}

/// Accepts `sha256:` followed by 64 lower-case hex digits, the only digest
/// algorithm rswarm verifies.
pub(crate) fn validate_digest(digest: &str) -> Result<(), String> {
    let Some(hex) = digest.strip_prefix("sha256:") else {
        return Err(format!("digest {digest:?} must be sha256:<64 hex digits>"));
    };
    if hex.len() != 64
        || !hex
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    {
        return Err(format!("digest {digest:?} must be sha256:<64 hex digits>"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn canonical(input: &str) -> String {
        match ImageRef::parse(input) {
            Ok(parsed) => parsed.to_string(),
            Err(error) => format!("error: {error}"),
        }
    }

    #[test]
    fn normalises_like_docker() {
        assert_eq!(canonical("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(canonical("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(canonical("user/app"), "docker.io/user/app:latest");
        assert_eq!(
            canonical("index.docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(canonical("localhost/app"), "localhost/app:latest");
        assert_eq!(canonical("host:5000/x/y:tag"), "host:5000/x/y:tag");
        assert_eq!(
            canonical(&format!("host:5000/x:tag@{DIGEST}")),
            format!("host:5000/x:tag@{DIGEST}")
        );
        assert_eq!(
            canonical(&format!("busybox@{DIGEST}")),
            format!("docker.io/library/busybox@{DIGEST}")
        );
    }

    #[test]
    fn refuses_malformed_references_with_the_reason() {
        assert!(canonical("").contains("empty"));
        assert!(canonical("BusyBox").contains("lower-case"));
        assert!(canonical("busybox:-x").contains("tag"));
        assert!(canonical("busybox@sha256:abc").contains("64 hex"));
        assert!(canonical("busybox@md5:abc").contains("sha256"));
        assert!(canonical("a//b").contains("empty path component"));
    }

    #[test]
    fn familiar_names_follow_docker() {
        let parse = |s: &str| ImageRef::parse(s).map(|r| r.familiar_name()).ok();
        assert_eq!(parse("busybox").as_deref(), Some("busybox"));
        assert_eq!(parse("user/app").as_deref(), Some("user/app"));
        assert_eq!(
            parse("127.0.0.1:5000/bb").as_deref(),
            Some("127.0.0.1:5000/bb")
        );
    }
}
