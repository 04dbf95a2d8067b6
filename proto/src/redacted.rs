//! `Debug` for the wire types that carry secret data or keys: they print
//! what identifies them (names, servers, sizes), never the data, so a
//! `tracing` call or a panic message cannot leak a secret.

use std::fmt;

use crate::v1::{GetSecretsKeyResponse, RegistryAuth, SecretSpec};

impl fmt::Debug for SecretSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretSpec")
            .field("annotations", &self.annotations)
            .field(
                "data",
                &format_args!("<{} bytes redacted>", self.data.len()),
            )
            .finish()
    }
}

impl fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("identity_token", &"<redacted>")
            .finish()
    }
}

impl fmt::Debug for GetSecretsKeyResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GetSecretsKeyResponse")
            .field("key", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{AssignmentsMessage, Secret};

    /// Goal: no `Debug` output of a message holding secret data shows it,
    /// even nested in an assignments message.
    #[test]
    fn debug_output_never_shows_secret_data() {
        let marker = "hunter2-marker";
        let message = AssignmentsMessage {
            secrets: vec![Secret {
                meta: None,
                spec: Some(SecretSpec {
                    annotations: None,
                    data: marker.as_bytes().to_vec(),
                }),
            }],
            registry_auths: [(
                "t1".to_string(),
                RegistryAuth {
                    server: "registry.example".into(),
                    username: "me".into(),
                    password: marker.into(),
                    identity_token: marker.into(),
                },
            )]
            .into(),
            ..Default::default()
        };
        let key = GetSecretsKeyResponse {
            key: marker.as_bytes().to_vec(),
        };
        for text in [format!("{message:?}"), format!("{key:?}")] {
            assert!(!text.contains(marker), "{text}");
            assert!(
                !text.contains(&format!("{:?}", marker.as_bytes())),
                "{text}"
            );
        }
        assert!(format!("{message:?}").contains("14 bytes redacted"));
    }
}
