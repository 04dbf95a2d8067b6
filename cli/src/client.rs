//! Reaching the daemon the CLI talks to: `-H/--host` or `RSWARM_HOST`,
//! `unix:///path/rswarm.sock` (default `unix:///run/rswarm/rswarm.sock`).

use std::path::PathBuf;

use anyhow::{Result, bail};
use rswarm_proto::control_client::ControlClient;
use rswarm_proto::local_node_client::LocalNodeClient;
use rswarm_proto::local_volumes_client::LocalVolumesClient;
use tonic::transport::Channel;

/// The default daemon address.
pub const DEFAULT_HOST: &str = "unix:///run/rswarm/rswarm.sock";

/// Largest answer the CLI accepts (a node list of a big cluster).
const RESPONSE_SIZE_MAX: usize = 64 * 1024 * 1024;

/// A connection to one daemon.
#[derive(Clone)]
pub struct Daemon {
    host: String,
    channel: Channel,
}

impl Daemon {
    /// Parses `host` and prepares a (lazy) connection.
    pub fn connect(host: &str) -> Result<Self> {
        let Some(path) = host.strip_prefix("unix://") else {
            bail!("unsupported host {host:?}: use unix:///path/to/rswarm.sock");
        };
        if path.is_empty() {
            bail!("invalid host {host:?}: the socket path is empty");
        }
        Ok(Self {
            host: host.to_string(),
            channel: rswarm_pki::unix_channel(PathBuf::from(path)),
        })
    }

    /// The local node API.
    pub fn node(&self) -> LocalNodeClient<Channel> {
        LocalNodeClient::new(self.channel.clone()).max_decoding_message_size(RESPONSE_SIZE_MAX)
    }

    /// The node's volumes.
    pub fn volumes(&self) -> LocalVolumesClient<Channel> {
        LocalVolumesClient::new(self.channel.clone()).max_decoding_message_size(RESPONSE_SIZE_MAX)
    }

    /// The raw channel, for APIs with their own client.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The control API.
    pub fn control(&self) -> ControlClient<Channel> {
        ControlClient::new(self.channel.clone()).max_decoding_message_size(RESPONSE_SIZE_MAX)
    }

    /// The daemon's `info`: this node's state, IDs and addresses.
    pub async fn info(&self) -> Result<rswarm_proto::InfoResponse> {
        self.node()
            .info(rswarm_proto::InfoRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| self.explain(s))
    }

    /// Turns a failed call into the message a user should see.
    pub fn explain(&self, status: tonic::Status) -> anyhow::Error {
        // Only a status raised by this side's transport carries a source;
        // a daemon's own answer, whatever it says, is passed on as it is.
        if rswarm_pki::never_connected(&status) {
            anyhow::anyhow!(
                "cannot connect to the rswarm daemon at {}: is it running? start it with 'rswarm daemon' \
                 (or point -H/RSWARM_HOST at its socket)",
                self.host
            )
        } else if std::error::Error::source(&status).is_some() {
            anyhow::anyhow!(
                "lost the connection to the rswarm daemon at {}: {}",
                self.host,
                status.message()
            )
        } else {
            anyhow::anyhow!("{}", status.message())
        }
    }
}
