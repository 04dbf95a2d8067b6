//! Registry credentials for `--with-registry-auth`, read from the Docker
//! client's config (`$DOCKER_CONFIG/config.json`, else
//! `~/.docker/config.json`): `auths.<server>.auth` (base64 `user:pass`) or
//! `identitytoken`. Credential helpers (`credsStore`, `credHelpers`) are not
//! run: they are refused with a message naming the fix.
//!
//! The credentials go to the managers in the request only; they are never
//! printed.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use base64::Engine;
use rswarm_proto::RegistryAuth;
use serde_json::Value;

/// Largest config.json read: a login file is a few KiB.
const DOCKER_CONFIG_BYTES_MAX: u64 = 1024 * 1024;

/// The key Docker's config uses for Docker Hub.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// The registry host an image reference pulls from ("docker.io" when it
/// names none), as Docker decides: the first path component is a registry
/// when it has a '.' or a ':' or is "localhost".
pub fn registry_of(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => "docker.io",
    }
}

fn config_path() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Ok(PathBuf::from(dir).join("config.json"));
    }
    let home = std::env::var_os("HOME")
        .context("cannot find the docker config: set DOCKER_CONFIG or HOME")?;
    Ok(PathBuf::from(home).join(".docker").join("config.json"))
}

/// The credentials for `image`'s registry from this user's docker config.
pub fn from_docker_config(image: &str) -> Result<RegistryAuth> {
    use std::io::Read;
    let path = config_path()?;
    let mut text = String::new();
    std::fs::File::open(&path)
        .and_then(|f| f.take(DOCKER_CONFIG_BYTES_MAX).read_to_string(&mut text))
        .with_context(|| {
            format!(
                "--with-registry-auth: cannot read {}: log in with 'docker login {}' first",
                path.display(),
                registry_of(image)
            )
        })?;
    credentials_for(&text, image, &path.display().to_string())
}

/// The keys an `auths` entry for `server` may have.
fn candidate_keys(server: &str) -> Vec<String> {
    let mut keys = vec![
        server.to_string(),
        format!("https://{server}"),
        format!("http://{server}"),
        format!("https://{server}/v1/"),
        format!("https://{server}/v2/"),
    ];
    if server == "docker.io" {
        keys.extend(
            [DOCKER_HUB_KEY, "index.docker.io", "registry-1.docker.io"].map(str::to_string),
        );
    }
    keys
}

/// The credentials for `image` in the docker config `text` (read from
/// `shown_path`, for messages).
pub fn credentials_for(text: &str, image: &str, shown_path: &str) -> Result<RegistryAuth> {
    let server = registry_of(image);
    let config: Value =
        serde_json::from_str(text).with_context(|| format!("{shown_path} is not valid JSON"))?;
    if config["credHelpers"].get(server).is_some() {
        bail!(
            "{shown_path} keeps the credentials for {server} in a credential helper, which is \
             not supported: use docker login with a plain config (no credHelpers entry)"
        );
    }
    let entry = candidate_keys(server)
        .iter()
        .find_map(|k| config["auths"].get(k.as_str()))
        .filter(|e| e.get("auth").is_some() || e.get("identitytoken").is_some());
    let Some(entry) = entry else {
        if config.get("credsStore").is_some() {
            bail!(
                "{shown_path} keeps credentials in a credential store ('credsStore'), which is \
                 not supported: use docker login with a plain config (no credsStore)"
            );
        }
        bail!("{shown_path} has no credentials for {server}: run 'docker login {server}' first");
    };
    let mut auth = RegistryAuth {
        server: server.to_string(),
        ..RegistryAuth::default()
    };
    if let Some(encoded) = entry["auth"].as_str().filter(|s| !s.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .with_context(|| {
                format!("the auth entry for {server} in {shown_path} is not base64")
            })?;
        let Some((user, password)) = decoded.split_once(':') else {
            bail!("the auth entry for {server} in {shown_path} is not user:password");
        };
        auth.username = user.to_string();
        auth.password = password.to_string();
    }
    if let Some(token) = entry["identitytoken"].as_str() {
        auth.identity_token = token.to_string();
    }
    Ok(auth)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: the registry is taken from the image as Docker does.
    #[test]
    fn registries_are_found_as_docker_finds_them() {
        assert_eq!(registry_of("busybox"), "docker.io");
        assert_eq!(registry_of("library/busybox:1"), "docker.io");
        assert_eq!(registry_of("127.0.0.1:5000/busybox"), "127.0.0.1:5000");
        assert_eq!(registry_of("localhost/app"), "localhost");
        assert_eq!(registry_of("ghcr.io/org/app@sha256:ab"), "ghcr.io");
    }

    /// Goal: user:password and identity tokens are read for the right
    /// server, Docker Hub under its legacy key.
    #[test]
    fn credentials_are_read_from_auths() {
        let text = r#"{"auths": {
            "127.0.0.1:5000": {"auth": "dXNlcjpwYTpzcw=="},
            "https://index.docker.io/v1/": {"auth": "aHViOnB3"},
            "ghcr.io": {"identitytoken": "tok"}
        }}"#;
        let a = credentials_for(text, "127.0.0.1:5000/app", "cfg").unwrap();
        assert_eq!(
            (a.server.as_str(), a.username.as_str(), a.password.as_str()),
            ("127.0.0.1:5000", "user", "pa:ss")
        );
        let hub = credentials_for(text, "busybox", "cfg").unwrap();
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("hub", "pw")
        );
        let token = credentials_for(text, "ghcr.io/org/app", "cfg").unwrap();
        assert_eq!(token.identity_token, "tok");
        assert!(
            !format!("{a:?}").contains("pa:ss"),
            "Debug never shows the password"
        );
    }

    /// Goal: helpers, a missing entry and a broken entry each get a clear
    /// error that names the fix.
    #[test]
    fn unsupported_and_missing_credentials_are_explained() {
        let helper = r#"{"credHelpers": {"ghcr.io": "gh"}, "auths": {}}"#;
        let e = credentials_for(helper, "ghcr.io/x", "cfg")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not supported") && e.contains("docker login"),
            "{e}"
        );
        let store = r#"{"credsStore": "desktop", "auths": {"ghcr.io": {}}}"#;
        let e = credentials_for(store, "ghcr.io/x", "cfg")
            .unwrap_err()
            .to_string();
        assert!(e.contains("credsStore"), "{e}");
        let e = credentials_for(r#"{"auths": {}}"#, "reg:5000/x", "cfg")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no credentials for reg:5000") && e.contains("docker login reg:5000"),
            "{e}"
        );
        let bad = r#"{"auths": {"reg:5000": {"auth": "!!"}}}"#;
        assert!(credentials_for(bad, "reg:5000/x", "cfg").is_err());
    }
}
