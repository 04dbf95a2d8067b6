//! Node identity in certificates: [`Role`], [`NodeSubject`], and reading
//! them (plus serial and validity) back out of a certificate.
//!
//! Encoding, as in SwarmKit: subject CN = node id, OU = `rswarm-worker` or
//! `rswarm-manager`, O = cluster id; SANs are DNS `rswarm-manager` (or
//! `rswarm-worker`) plus DNS = node id.

use std::fmt;
use std::time::{Duration, SystemTime};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use x509_parser::prelude::{ASN1Time, X509Certificate};

use crate::error::{PkiError, Result};

/// TLS server name (and SAN) carried by every manager certificate. Clients
/// dialing a manager verify this name, so a worker certificate can never
/// impersonate a manager server.
pub const MANAGER_SERVER_NAME: &str = "rswarm-manager";

/// TLS server name (and SAN) carried by every worker certificate.
pub const WORKER_SERVER_NAME: &str = "rswarm-worker";

/// Longest node id accepted (one DNS label, since it is also a SAN).
const NODE_ID_LEN_MAX: usize = 63;

/// Longest cluster id accepted (the X.520 upper bound for O).
const CLUSTER_ID_LEN_MAX: usize = 64;

/// What a node may do in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Runs tasks; talks to managers only as a client.
    Worker,
    /// Runs the control plane and the CA; serves cluster gRPC.
    Manager,
}

impl Role {
    /// `"worker"` or `"manager"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Worker => "worker",
            Role::Manager => "manager",
        }
    }

    /// The certificate OU and DNS SAN for this role: `rswarm-worker` or
    /// `rswarm-manager` (also the TLS server name to dial it with).
    pub fn server_name(self) -> &'static str {
        match self {
            Role::Worker => WORKER_SERVER_NAME,
            Role::Manager => MANAGER_SERVER_NAME,
        }
    }

    /// Parses a certificate OU (`rswarm-worker` / `rswarm-manager`).
    fn from_organizational_unit(ou: &str) -> Result<Role> {
        match ou {
            WORKER_SERVER_NAME => Ok(Role::Worker),
            MANAGER_SERVER_NAME => Ok(Role::Manager),
            other => Err(PkiError::UnknownRole {
                ou: other.to_owned(),
            }),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a certificate belongs to: the identity a manager grants a node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeSubject {
    /// The node's id (certificate CN and a DNS SAN).
    pub node_id: String,
    /// The node's role (certificate OU).
    pub role: Role,
    /// The cluster's id (certificate O).
    pub cluster_id: String,
}

impl NodeSubject {
    /// Checks that the ids can be written into a certificate: the node id
    /// must be a DNS label (1-63 ASCII letters, digits or `-`, not starting
    /// or ending with `-`), the cluster id 1-64 printable ASCII characters.
    pub fn validate(&self) -> Result<()> {
        let id = &self.node_id;
        let label_ok = !id.is_empty()
            && id.len() <= NODE_ID_LEN_MAX
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !id.starts_with('-')
            && !id.ends_with('-');
        if !label_ok {
            return Err(PkiError::InvalidNodeId {
                node_id: id.clone(),
            });
        }
        let cid = &self.cluster_id;
        let cluster_ok = !cid.is_empty()
            && cid.len() <= CLUSTER_ID_LEN_MAX
            && cid.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
        if !cluster_ok {
            return Err(PkiError::InvalidClusterId {
                cluster_id: cid.clone(),
            });
        }
        Ok(())
    }
}

/// What rswarm needs to know about a node certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// Whose certificate it is.
    pub subject: NodeSubject,
    /// Serial number, lowercase hex without separators.
    pub serial_hex: String,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
}

/// Parses a PEM node certificate (the first `CERTIFICATE` block).
pub fn parse_certificate(cert_pem: &str) -> Result<CertificateInfo> {
    let der = cert_der_from_pem(cert_pem, "node certificate")?;
    certificate_info_from_der(der.as_ref())
}

/// Reads the node identity out of a DER certificate, e.g. a TLS peer's.
/// Does not verify the certificate: only call it on certificates rustls has
/// already verified against the cluster CA.
pub fn subject_from_der(der: &[u8]) -> Result<NodeSubject> {
    let cert = parse_der(der)?;
    subject_of(&cert)
}

/// Parses a DER certificate into [`CertificateInfo`].
pub(crate) fn certificate_info_from_der(der: &[u8]) -> Result<CertificateInfo> {
    let cert = parse_der(der)?;
    Ok(CertificateInfo {
        subject: subject_of(&cert)?,
        serial_hex: hex_lower(cert.raw_serial()),
        not_before: to_system_time(cert.validity().not_before),
        not_after: to_system_time(cert.validity().not_after),
    })
}

/// Lowercase hex serial of a DER certificate.
pub(crate) fn serial_hex_from_der(der: &[u8]) -> Result<String> {
    Ok(hex_lower(parse_der(der)?.raw_serial()))
}

/// Decodes the first `CERTIFICATE` PEM block of `pem`; `what` names it in
/// the error.
pub(crate) fn cert_der_from_pem(pem: &str, what: &'static str) -> Result<CertificateDer<'static>> {
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| PkiError::InvalidPem {
        what,
        reason: e.to_string(),
    })
}

/// Parses DER into an x509-parser certificate, rejecting trailing bytes.
pub(crate) fn parse_der(der: &[u8]) -> Result<X509Certificate<'_>> {
    let (rest, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| PkiError::InvalidCertificate {
            reason: e.to_string(),
        })?;
    if !rest.is_empty() {
        return Err(PkiError::InvalidCertificate {
            reason: format!("{} unexpected bytes after the certificate", rest.len()),
        });
    }
    Ok(cert)
}

fn subject_of(cert: &X509Certificate<'_>) -> Result<NodeSubject> {
    let name = cert.subject();
    let node_id = first_attribute(name.iter_common_name(), "common name (node id)")?;
    let ou = first_attribute(
        name.iter_organizational_unit(),
        "organizational unit (role)",
    )?;
    let cluster_id = first_attribute(name.iter_organization(), "organization (cluster id)")?;
    Ok(NodeSubject {
        node_id,
        role: Role::from_organizational_unit(&ou)?,
        cluster_id,
    })
}

fn first_attribute<'a, 'b: 'a>(
    mut values: impl Iterator<Item = &'a x509_parser::x509::AttributeTypeAndValue<'b>>,
    field: &'static str,
) -> Result<String> {
    values
        .next()
        .and_then(|v| v.as_str().ok())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .ok_or(PkiError::MissingIdentityField { field })
}

fn to_system_time(t: ASN1Time) -> SystemTime {
    let secs = t.timestamp();
    let magnitude = Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 {
        SystemTime::UNIX_EPOCH + magnitude
    } else {
        SystemTime::UNIX_EPOCH - magnitude
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(node_id: &str, cluster_id: &str) -> NodeSubject {
        NodeSubject {
            node_id: node_id.into(),
            role: Role::Worker,
            cluster_id: cluster_id.into(),
        }
    }

    #[test]
    fn role_strings() {
        assert_eq!(Role::Worker.as_str(), "worker");
        assert_eq!(Role::Manager.as_str(), "manager");
        assert_eq!(Role::Manager.server_name(), MANAGER_SERVER_NAME);
        assert_eq!(
            Role::from_organizational_unit("rswarm-worker").ok(),
            Some(Role::Worker)
        );
        assert!(Role::from_organizational_unit("worker").is_err());
    }

    #[test]
    fn validates_ids() {
        assert!(subject("abc123", "c1").validate().is_ok());
        assert!(subject("", "c1").validate().is_err());
        assert!(subject("-a", "c1").validate().is_err());
        assert!(subject("a.b", "c1").validate().is_err());
        assert!(subject(&"a".repeat(64), "c1").validate().is_err());
        assert!(subject("a", "").validate().is_err());
        assert!(subject("a", "x\n").validate().is_err());
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_certificate("not pem").is_err());
        assert!(subject_from_der(b"\x30\x03\x02\x01\x01").is_err());
    }
}
