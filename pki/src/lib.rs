//! rswarm's cluster PKI and mutual-TLS plumbing.
//!
//! Owns: the root CA and certificate signing ([`RootCa`]), join tokens
//! ([`JoinToken`]), how a node's identity is written into and read out of a
//! certificate ([`NodeSubject`]), the node's key and certificate on disk and
//! in memory ([`NodeCredentials`], [`CredentialsHandle`]), the rustls
//! configurations ([`server_config`], [`client_config`], ...) and the glue
//! that runs tonic over tokio-rustls ([`tls_incoming`], [`tls_channel`],
//! [`unix_channel`]).
//!
//! Does not own: deciding *who* gets a certificate or which role (the
//! manager's CA service does that), storing the CA in the cluster store, or
//! authorising RPCs (handlers read [`PeerInfo`] from request extensions).
//!
//! All cryptography uses rustls' **ring** provider; call
//! [`install_crypto_provider`] once at start-up in every binary.

#![warn(missing_docs)]

mod base36;
mod ca;
mod credentials;
mod error;
mod identity;
pub mod limits;
mod tls;
mod token;
mod transport;

pub use ca::{RootCa, ca_digest, generate_key_and_csr};
pub use credentials::{CredentialsHandle, NodeCredentials, renewal_delay};
pub use error::{PkiError, Result, TokenError};
pub use identity::{
    CertificateInfo, MANAGER_SERVER_NAME, NodeSubject, Role, WORKER_SERVER_NAME, parse_certificate,
    subject_from_der,
};
pub use tls::{
    anonymous_client_config, bootstrap_client_config, client_config, install_crypto_provider,
    server_config,
};
pub use token::{JoinToken, tokens_match};
pub use transport::{
    PeerInfo, TlsConn, never_connected, tls_channel, tls_incoming, tls_reachable, unix_channel,
};
