//! rustls configurations for cluster traffic, all on the ring provider
//! with ALPN `h2`: the server side (optional client certificates, verified
//! against the cluster CA), the mutual-TLS client, the anonymous client used
//! while joining, and the bootstrap client that fetches the root CA.
//!
//! Session resumption is disabled everywhere: a resumed session would
//! carry the identity of the certificate used when it was created, so after
//! a renewal or role change the peer would still see the old identity.

use std::fmt;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, Resumption, WebPkiServerVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, ring};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::{
    ClientHello, NoServerSessionStorage, ResolvesServerCert, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, DigitallySignedStruct, Error as TlsError, RootCertStore, ServerConfig,
    SignatureScheme,
};

use crate::credentials::CredentialsHandle;
use crate::error::Result;
use crate::identity::cert_der_from_pem;

/// The only application protocol spoken: HTTP/2 (gRPC).
const ALPN_H2: &[u8] = b"h2";

/// Installs rustls' ring provider as the process-wide default. Call once
/// at start-up; calling again (or after another provider was installed)
/// does nothing. This crate's own configurations name ring explicitly, so
/// this only matters for other rustls users in the process.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is fine.
    let _already_installed = ring::default_provider().install_default();
}

/// The ring provider, built once.
pub(crate) fn ring_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(ring::default_provider())))
}

/// Server configuration for a node serving cluster gRPC.
///
/// The server certificate is read from `handle` at every handshake, so
/// [`CredentialsHandle::replace`] takes effect for new connections at once.
/// Client certificates are optional — a joining node has none yet and must
/// reach the CA service — but a presented one must chain to the cluster CA
/// (as held by `handle` now; rebuild the config if the CA changes).
/// Handlers check the caller's identity per RPC via [`crate::PeerInfo`].
pub fn server_config(handle: &CredentialsHandle) -> Result<Arc<ServerConfig>> {
    let verifier = WebPkiClientVerifier::builder_with_provider(handle.roots(), ring_provider())
        .allow_unauthenticated()
        .build()?;
    let mut config = ServerConfig::builder_with_provider(ring_provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(LiveCert(handle.clone())));
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// Client configuration for mutual TLS: presents the node certificate
/// (read from `handle` at every handshake) and verifies the server chain
/// against the cluster CA held by `handle` now. The server name to verify
/// is chosen when dialing (see [`crate::tls_channel`]).
pub fn client_config(handle: &CredentialsHandle) -> Result<Arc<ClientConfig>> {
    let verifier =
        WebPkiServerVerifier::builder_with_provider(handle.roots(), ring_provider()).build()?;
    let mut config = ClientConfig::builder_with_provider(ring_provider())
        .with_safe_default_protocol_versions()?
        .with_webpki_verifier(verifier)
        .with_client_cert_resolver(Arc::new(LiveCert(handle.clone())));
    finish_client(&mut config);
    Ok(Arc::new(config))
}

/// Client configuration without a client certificate that verifies the
/// server against `ca_cert_pem`. Used by a joining node to call
/// `IssueNodeCertificate` once it has checked the CA against its token.
pub fn anonymous_client_config(ca_cert_pem: &str) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    roots.add(cert_der_from_pem(ca_cert_pem, "CA certificate")?)?;
    let verifier =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), ring_provider()).build()?;
    let mut config = ClientConfig::builder_with_provider(ring_provider())
        .with_safe_default_protocol_versions()?
        .with_webpki_verifier(verifier)
        .with_no_client_auth();
    finish_client(&mut config);
    Ok(Arc::new(config))
}

/// Client configuration that accepts **any** server certificate: it checks
/// the handshake signature (so the server holds the key of the certificate
/// it shows) but not the chain or the name.
///
/// Use it ONLY to download the root CA while joining, and then check the
/// downloaded CA against the join token's digest before trusting anything
/// from that connection. Never use it for any other RPC.
pub fn bootstrap_client_config() -> Arc<ClientConfig> {
    let provider = ring_provider();
    let verifier = Arc::new(AcceptAnyServerCert {
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        // The ring provider always supports the default protocol versions.
        .expect("ring supports the default TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    finish_client(&mut config);
    Arc::new(config)
}

fn finish_client(config: &mut ClientConfig) {
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.resumption = Resumption::disabled();
}

/// Serves the handle's current certificate on both sides of a handshake.
struct LiveCert(CredentialsHandle);

impl fmt::Debug for LiveCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("LiveCert").field(&self.0).finish()
    }
}

impl ResolvesServerCert for LiveCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.certified_key())
    }
}

impl ResolvesClientCert for LiveCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.certified_key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// See [`bootstrap_client_config`].
#[derive(Debug)]
struct AcceptAnyServerCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
