//! Errors of the PKI crate: [`PkiError`] for certificates, keys, files and
//! TLS set-up, [`TokenError`] for join tokens. Messages are lower-case and
//! say what to do, because the CLI and the daemons show them as-is. They
//! never contain key material or a token's secret.

use std::path::PathBuf;
use std::time::Duration;

/// Shorthand for results whose error is [`PkiError`].
pub type Result<T, E = PkiError> = std::result::Result<T, E>;

/// What went wrong with a certificate, key, credential file or TLS set-up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// Generating a key, certificate or CSR failed inside rcgen.
    #[error("could not {action}: {source}")]
    Generate {
        /// What was being generated, e.g. "generate the CA key".
        action: &'static str,
        /// The underlying rcgen error.
        source: rcgen::Error,
    },

    /// A certificate signing request could not be parsed or its signature is wrong.
    #[error(
        "the certificate signing request is invalid ({source}); generate a new key and CSR and retry"
    )]
    InvalidCsr {
        /// The underlying rcgen error.
        source: rcgen::Error,
    },

    /// A requested certificate validity is outside the allowed range.
    #[error(
        "certificate validity of {requested:?} is not allowed; choose between {min:?} and {max:?}"
    )]
    InvalidValidity {
        /// What was asked for.
        requested: Duration,
        /// The shortest allowed validity.
        min: Duration,
        /// The longest allowed validity.
        max: Duration,
    },

    /// A node id cannot be written into a certificate.
    #[error(
        "node id {node_id:?} cannot go into a certificate; it must be 1-63 ascii letters, digits or '-'"
    )]
    InvalidNodeId {
        /// The rejected node id.
        node_id: String,
    },

    /// A cluster id cannot be written into a certificate.
    #[error(
        "cluster id {cluster_id:?} cannot go into a certificate; it must be 1-64 printable ascii characters"
    )]
    InvalidClusterId {
        /// The rejected cluster id.
        cluster_id: String,
    },

    /// Text that should hold a PEM block of the given kind does not.
    #[error("the {what} is not valid PEM ({reason}); check that the right file or field was used")]
    InvalidPem {
        /// What the PEM should contain, e.g. "CA certificate".
        what: &'static str,
        /// Why it was rejected.
        reason: String,
    },

    /// A DER certificate could not be parsed.
    #[error(
        "the certificate cannot be parsed ({reason}); it may be truncated or not a certificate"
    )]
    InvalidCertificate {
        /// Why it was rejected.
        reason: String,
    },

    /// A certificate lacks an identity field that rswarm certificates carry.
    #[error(
        "the certificate has no usable {field}; it was not issued by an rswarm CA, so rejoin the node"
    )]
    MissingIdentityField {
        /// Which field: "common name (node id)", "organizational unit (role)", ...
        field: &'static str,
    },

    /// A certificate names a role rswarm does not know.
    #[error(
        "the certificate names an unknown role {ou:?} (expected rswarm-worker or rswarm-manager); rejoin the node"
    )]
    UnknownRole {
        /// The organizational unit found.
        ou: String,
    },

    /// The CA certificate is not a CA (no `CA:true` basic constraint).
    #[error(
        "the CA certificate is not a certificate authority; check that the CA file is the cluster's root CA"
    )]
    NotACa,

    /// The CA key does not belong to the CA certificate.
    #[error(
        "the CA key does not match the CA certificate; check that both come from the same cluster"
    )]
    CaKeyMismatch,

    /// A node certificate was not signed by the CA it is stored with.
    #[error(
        "the node certificate was not signed by the cluster CA; the node's credentials are from another cluster, so rejoin the node"
    )]
    NotSignedByCa,

    /// rustls rejected a key, certificate or configuration.
    #[error("tls set-up failed ({0}); check the node's key and certificate, or rejoin the node")]
    Tls(#[from] rustls::Error),

    /// rustls could not build a certificate verifier from the CA.
    #[error(
        "could not build a certificate verifier from the cluster CA ({0}); check the CA certificate"
    )]
    Verifier(#[from] rustls::server::VerifierBuilderError),

    /// A TLS server name is not a valid DNS name.
    #[error("{name:?} is not a valid tls server name; use a dns name such as rswarm-manager")]
    InvalidServerName {
        /// The rejected name.
        name: String,
    },

    /// An address could not be turned into a gRPC endpoint.
    #[error("{addr:?} is not a valid address ({source}); use host:port, e.g. 10.0.0.1:4242")]
    InvalidAddress {
        /// The rejected address.
        addr: String,
        /// tonic's reason.
        source: tonic::transport::Error,
    },

    /// A file or directory operation failed.
    #[error("could not {action} {path} ({source}); check the path and its permissions")]
    Io {
        /// What was being done, e.g. "write".
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },

    /// A credential file exists but its content is unusable.
    #[error("{path} is corrupt: {source}; restore it or remove the node's credentials and rejoin")]
    CorruptFile {
        /// The corrupt file.
        path: PathBuf,
        /// What was wrong with it.
        source: Box<PkiError>,
    },

    /// Only some of the credential files exist.
    #[error(
        "{path} is missing while other node credentials exist next to it; remove the node's credentials directory and rejoin"
    )]
    IncompleteCredentials {
        /// The missing file.
        path: PathBuf,
    },
}

/// Why a join token was rejected. Shown to users as-is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The token does not start with `RSWTKN-`.
    #[error(
        "invalid join token: it must start with RSWTKN-; copy it again from 'rswarm join-token worker' (or manager) on a manager"
    )]
    MissingPrefix,

    /// The token's version is not one this build understands.
    #[error(
        "unsupported join token version: this rswarm understands RSWTKN-1 tokens only; get a token from a manager running the same rswarm version"
    )]
    UnsupportedVersion,

    /// The token does not have exactly four `-`-separated parts.
    #[error(
        "invalid join token: it must look like RSWTKN-1-<50 characters>-<25 characters>; copy it again from 'rswarm join-token worker' on a manager"
    )]
    WrongPartCount,

    /// The CA digest part has the wrong length.
    #[error(
        "invalid join token: the CA digest part has {found} characters instead of 50; copy the whole token again from a manager"
    )]
    DigestLength {
        /// Length found.
        found: usize,
    },

    /// The CA digest part is not lowercase base 36.
    #[error(
        "invalid join token: the CA digest part may only contain 0-9 and a-z; copy the token again from a manager"
    )]
    DigestNotBase36,

    /// The secret part has the wrong length.
    #[error(
        "invalid join token: the secret part has {found} characters instead of 25; copy the whole token again from a manager"
    )]
    SecretLength {
        /// Length found.
        found: usize,
    },

    /// The secret part is not lowercase base 36.
    #[error(
        "invalid join token: the secret part may only contain 0-9 and a-z; copy the token again from a manager"
    )]
    SecretNotBase36,
}
