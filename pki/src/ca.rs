//! The cluster's root CA: generating it, loading it, its digest, and
//! signing node certificates from CSRs. Also node key + CSR generation.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::base36;
use crate::error::{PkiError, Result};
use crate::identity::{NodeSubject, cert_der_from_pem, parse_der};
use crate::limits::{
    CLOCK_SKEW_BACKDATE, NODE_CERT_VALIDITY_MAX, NODE_CERT_VALIDITY_MIN, ROOT_CA_VALIDITY,
};

/// Common name of every rswarm root CA.
const CA_COMMON_NAME: &str = "rswarm-ca";

/// Common name put in node CSRs; the CA ignores it.
const CSR_COMMON_NAME: &str = "rswarm-node";

/// Length of a CA digest in base 36 characters (256 bits need 50).
pub(crate) const CA_DIGEST_LEN: usize = 50;

/// Bytes of randomness in a certificate serial number.
const SERIAL_LEN: usize = 16;

/// The cluster's root certificate authority: its certificate, its key, and
/// the ability to sign node certificates.
///
/// Cheap to clone. `Debug` shows only the digest, never the key.
#[derive(Clone)]
pub struct RootCa {
    cert_pem: String,
    key_pem: String,
    digest: String,
    issuer: Arc<Issuer<'static, KeyPair>>,
}

impl RootCa {
    /// Creates a new root CA: ECDSA P-256, CN `rswarm-ca`, valid 20 years
    /// (backdated 1 h), `CA:true`, key usages certificate and CRL signing.
    pub fn generate() -> Result<RootCa> {
        let key = new_p256_key("generate the CA key")?;
        let params = ca_params();
        let cert = params
            .self_signed(&key)
            .map_err(|source| PkiError::Generate {
                action: "self-sign the CA certificate",
                source,
            })?;
        RootCa::from_pem(&cert.pem(), &key.serialize_pem())
    }

    /// Loads a root CA from its PEM certificate and PEM (PKCS#8) key.
    /// Checks that the certificate is a CA and that the key is its key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<RootCa> {
        let der = cert_der_from_pem(cert_pem, "CA certificate")?;
        let cert = parse_der(der.as_ref())?;
        if !cert.is_ca() {
            return Err(PkiError::NotACa);
        }
        let key = KeyPair::from_pem(key_pem).map_err(|e| PkiError::InvalidPem {
            what: "CA key",
            reason: e.to_string(),
        })?;
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(PkiError::CaKeyMismatch);
        }
        let issuer = Issuer::from_ca_cert_der(&der, key).map_err(|source| PkiError::Generate {
            action: "use the CA certificate as issuer",
            source,
        })?;
        Ok(RootCa {
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            digest: digest_of_der(der.as_ref()),
            issuer: Arc::new(issuer),
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PEM (PKCS#8). Secret: store it only in the
    /// managers' encrypted store and never log it.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The CA digest (see [`ca_digest`]) that join tokens carry.
    pub fn digest(&self) -> String {
        self.digest.clone()
    }

    /// Signs a node certificate for the key in `csr_pem`.
    ///
    /// Verifies the CSR's signature (proof the requester holds the key) but
    /// ignores the CSR's own subject and SANs: the identity is `subject`,
    /// which the manager decides. The certificate is valid from 1 h ago to
    /// `validity` from now, has a random serial, key usages digital
    /// signature + key agreement and extended key usages server + client
    /// auth. `validity` must be between 1 h and 10 years.
    pub fn sign_node_csr(
        &self,
        csr_pem: &str,
        subject: &NodeSubject,
        validity: Duration,
    ) -> Result<String> {
        check_validity(validity)?;
        subject.validate()?;
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|source| PkiError::InvalidCsr { source })?;
        let params = node_params(subject, validity)?;
        let cert = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(|source| PkiError::Generate {
                action: "sign the node certificate",
                source,
            })?;
        Ok(cert.pem())
    }
}

impl fmt::Debug for RootCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RootCa")
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

/// The digest of a CA certificate that join tokens carry: SHA-256 of the
/// certificate's DER, in lowercase base 36, left-padded with `'0'` to 50
/// characters (SwarmKit's format).
pub fn ca_digest(ca_cert_pem: &str) -> Result<String> {
    let der = cert_der_from_pem(ca_cert_pem, "CA certificate")?;
    Ok(digest_of_der(der.as_ref()))
}

/// Generates a node key (ECDSA P-256) and a CSR for it. Returns
/// `(key PEM, CSR PEM)`. The CSR's subject is a placeholder (CN
/// `rswarm-node`); the CA decides the identity.
pub fn generate_key_and_csr() -> Result<(String, String)> {
    let key = new_p256_key("generate the node key")?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, CSR_COMMON_NAME);
    let csr = params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(|source| PkiError::Generate {
            action: "create the certificate signing request",
            source,
        })?;
    Ok((key.serialize_pem(), csr))
}

fn digest_of_der(der: &[u8]) -> String {
    base36::encode_padded(&Sha256::digest(der), CA_DIGEST_LEN)
}

fn new_p256_key(action: &'static str) -> Result<KeyPair> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|source| PkiError::Generate { action, source })
}

fn ca_params() -> CertificateParams {
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, CA_COMMON_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = now - CLOCK_SKEW_BACKDATE;
    params.not_after = now + ROOT_CA_VALIDITY;
    params.serial_number = Some(random_serial());
    params
}

fn node_params(subject: &NodeSubject, validity: Duration) -> Result<CertificateParams> {
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, subject.node_id.as_str());
    name.push(DnType::OrganizationalUnitName, subject.role.server_name());
    name.push(DnType::OrganizationName, subject.cluster_id.as_str());
    params.distinguished_name = name;
    params.subject_alt_names = vec![
        dns_san(subject.role.server_name())?,
        dns_san(&subject.node_id)?,
    ];
    params.not_before = now - CLOCK_SKEW_BACKDATE;
    params.not_after = now + validity;
    params.serial_number = Some(random_serial());
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyAgreement,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn dns_san(name: &str) -> Result<SanType> {
    let ia5 = name.try_into().map_err(|source| PkiError::Generate {
        action: "encode a subject alternative name",
        source,
    })?;
    Ok(SanType::DnsName(ia5))
}

fn check_validity(validity: Duration) -> Result<()> {
    if (NODE_CERT_VALIDITY_MIN..=NODE_CERT_VALIDITY_MAX).contains(&validity) {
        return Ok(());
    }
    Err(PkiError::InvalidValidity {
        requested: validity,
        min: NODE_CERT_VALIDITY_MIN,
        max: NODE_CERT_VALIDITY_MAX,
    })
}

/// A random, positive, fixed-length serial number.
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; SERIAL_LEN];
    rand::rng().fill_bytes(&mut bytes);
    // Clear the sign bit (DER integers are signed) and set the next one so
    // the serial never shrinks to fewer bytes.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from(bytes.to_vec())
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use rustls::pki_types::CertificateSigningRequestDer;
    use rustls::pki_types::pem::PemObject;
    use x509_parser::extensions::GeneralName;

    use super::*;
    use crate::identity::{Role, parse_certificate};

    const DAY: Duration = Duration::from_secs(24 * 60 * 60);

    fn worker(node_id: &str) -> NodeSubject {
        NodeSubject {
            node_id: node_id.into(),
            role: Role::Worker,
            cluster_id: "cluster1".into(),
        }
    }

    /// Minimal PEM writer, so tests can re-encode tampered DER.
    fn to_pem(label: &str, der: &[u8]) -> String {
        const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut text = String::new();
        for chunk in der.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    text.push(char::from(B64[((n >> (18 - 6 * i)) & 63) as usize]));
                } else {
                    text.push('=');
                }
            }
        }
        let lines: Vec<&str> = text
            .as_bytes()
            .chunks(64)
            .map(|l| std::str::from_utf8(l).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    }

    fn within(actual: SystemTime, expected: SystemTime, slack: Duration) -> bool {
        let diff = actual
            .duration_since(expected)
            .or_else(|_| expected.duration_since(actual))
            .unwrap();
        diff <= slack
    }

    #[test]
    fn digest_is_50_base36_and_stable() {
        let ca = RootCa::generate().unwrap();
        let digest = ca.digest();
        assert_eq!(digest.len(), 50);
        assert!(base36::is_base36(&digest));
        let reloaded = RootCa::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        assert_eq!(reloaded.digest(), digest);
        assert_eq!(ca_digest(ca.cert_pem()).unwrap(), digest);
        assert_ne!(RootCa::generate().unwrap().digest(), digest);
        assert!(!format!("{ca:?}").contains("PRIVATE"));
    }

    #[test]
    fn ca_certificate_is_a_long_lived_ca() {
        let ca = RootCa::generate().unwrap();
        let der = cert_der_from_pem(ca.cert_pem(), "CA certificate").unwrap();
        let cert = parse_der(der.as_ref()).unwrap();
        assert!(cert.is_ca());
        let cn = cert.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), CA_COMMON_NAME);
        let lifetime =
            cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
        assert_eq!(
            lifetime,
            (ROOT_CA_VALIDITY + CLOCK_SKEW_BACKDATE).as_secs() as i64
        );
    }

    #[test]
    fn from_pem_rejects_wrong_key_and_non_ca() {
        let ca = RootCa::generate().unwrap();
        let other = RootCa::generate().unwrap();
        assert!(matches!(
            RootCa::from_pem(ca.cert_pem(), other.key_pem()),
            Err(PkiError::CaKeyMismatch)
        ));
        let (key, csr) = generate_key_and_csr().unwrap();
        let leaf = ca.sign_node_csr(&csr, &worker("n1"), DAY).unwrap();
        assert!(matches!(
            RootCa::from_pem(&leaf, &key),
            Err(PkiError::NotACa)
        ));
        assert!(matches!(
            RootCa::from_pem("garbage", ca.key_pem()),
            Err(PkiError::InvalidPem { .. })
        ));
    }

    #[test]
    fn signs_the_requested_identity_and_window() {
        let ca = RootCa::generate().unwrap();
        let (_key, csr) = generate_key_and_csr().unwrap();
        let subject = NodeSubject {
            node_id: "node7".into(),
            role: Role::Manager,
            cluster_id: "c-42".into(),
        };
        let validity = 90 * DAY;
        let now = SystemTime::now();
        let pem = ca.sign_node_csr(&csr, &subject, validity).unwrap();
        let info = parse_certificate(&pem).unwrap();
        assert_eq!(info.subject, subject);
        assert_eq!(info.serial_hex.len(), 2 * SERIAL_LEN);
        let slack = Duration::from_secs(60);
        assert!(within(info.not_before, now - CLOCK_SKEW_BACKDATE, slack));
        assert!(within(info.not_after, now + validity, slack));
        let second = parse_certificate(&ca.sign_node_csr(&csr, &subject, validity).unwrap());
        assert_ne!(second.unwrap().serial_hex, info.serial_hex);
    }

    #[test]
    fn ignores_csr_subject_and_sans() {
        let ca = RootCa::generate().unwrap();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(vec!["rswarm-manager".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, "rswarm-manager");
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();
        let pem = ca.sign_node_csr(&csr, &worker("w1"), DAY).unwrap();
        let der = cert_der_from_pem(&pem, "node certificate").unwrap();
        let cert = parse_der(der.as_ref()).unwrap();
        let sans: Vec<String> = cert
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::DNSName(d) => (*d).to_owned(),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(sans, ["rswarm-worker", "w1"]);
        assert_eq!(parse_certificate(&pem).unwrap().subject.role, Role::Worker);
    }

    #[test]
    fn refuses_tampered_csr() {
        let ca = RootCa::generate().unwrap();
        let (_key, csr) = generate_key_and_csr().unwrap();
        let mut der = CertificateSigningRequestDer::from_pem_slice(csr.as_bytes())
            .unwrap()
            .as_ref()
            .to_vec();
        // Sanity: re-encoding untouched DER still signs.
        assert!(
            ca.sign_node_csr(&to_pem("CERTIFICATE REQUEST", &der), &worker("n1"), DAY)
                .is_ok()
        );
        // The last byte is inside the ECDSA signature's s value.
        let last = der.len() - 1;
        der[last] ^= 0x01;
        let err = ca
            .sign_node_csr(&to_pem("CERTIFICATE REQUEST", &der), &worker("n1"), DAY)
            .unwrap_err();
        assert!(
            matches!(
                err,
                PkiError::InvalidCsr {
                    source: rcgen::Error::InvalidCertificationRequestSignature
                }
            ),
            "{err:?}"
        );
        assert!(ca.sign_node_csr("not a csr", &worker("n1"), DAY).is_err());
    }

    #[test]
    fn enforces_validity_bounds() {
        let ca = RootCa::generate().unwrap();
        let (_key, csr) = generate_key_and_csr().unwrap();
        let sign = |v: Duration| ca.sign_node_csr(&csr, &worker("n1"), v);
        let one_second = Duration::from_secs(1);
        assert!(matches!(
            sign(NODE_CERT_VALIDITY_MIN - one_second),
            Err(PkiError::InvalidValidity { .. })
        ));
        assert!(matches!(
            sign(NODE_CERT_VALIDITY_MAX + one_second),
            Err(PkiError::InvalidValidity { .. })
        ));
        assert!(sign(NODE_CERT_VALIDITY_MIN).is_ok());
        assert!(sign(NODE_CERT_VALIDITY_MAX).is_ok());
    }

    #[test]
    fn rejects_unencodable_identity() {
        let ca = RootCa::generate().unwrap();
        let (_key, csr) = generate_key_and_csr().unwrap();
        assert!(matches!(
            ca.sign_node_csr(&csr, &worker("bad id"), DAY),
            Err(PkiError::InvalidNodeId { .. })
        ));
    }
}
