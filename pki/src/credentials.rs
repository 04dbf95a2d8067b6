//! A node's credentials: the cluster CA certificate, the node certificate
//! and the node key — on disk ([`NodeCredentials::save`] / `load`), in
//! memory as a live, swappable handle for TLS ([`CredentialsHandle`]), and
//! when to renew them ([`renewal_delay`]).

use std::fmt;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use rand::Rng;
use rustls::RootCertStore;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use rustls::sign::CertifiedKey;

use crate::error::{PkiError, Result};
use crate::identity::{
    CertificateInfo, NodeSubject, cert_der_from_pem, certificate_info_from_der, parse_certificate,
    parse_der,
};
use crate::tls::ring_provider;

/// File holding the cluster's root CA certificate.
const CA_FILE: &str = "ca.pem";
/// File holding the node certificate.
const CERT_FILE: &str = "node.pem";
/// File holding the node's private key (mode 0600).
const KEY_FILE: &str = "node-key.pem";

/// Mode of the credentials directory: only the owner may list or enter it.
const DIR_MODE: u32 = 0o700;
/// Mode of the private key file.
const KEY_MODE: u32 = 0o600;
/// Mode of the certificate files (public data).
const CERT_MODE: u32 = 0o644;

/// Renewal happens at a random point between these fractions of a
/// certificate's lifetime, so nodes issued together do not renew together.
const RENEW_AT_MIN: f64 = 0.5;
/// See [`RENEW_AT_MIN`].
const RENEW_AT_MAX: f64 = 0.8;

/// A node's key material, all PEM. `Debug` hides the key.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeCredentials {
    /// The cluster's root CA certificate.
    pub ca_cert_pem: String,
    /// The node certificate, signed by that CA.
    pub cert_pem: String,
    /// The node's private key (PKCS#8). Secret.
    pub key_pem: String,
}

impl fmt::Debug for NodeCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeCredentials")
            .field("ca_cert_pem", &self.ca_cert_pem)
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl NodeCredentials {
    /// Identity, serial and validity of the node certificate.
    pub fn info(&self) -> Result<CertificateInfo> {
        parse_certificate(&self.cert_pem)
    }

    /// Writes `ca.pem`, `node.pem` and `node-key.pem` into `dir` (created
    /// if needed; its mode is set to 0700 either way). Each file is written to a temporary file,
    /// fsynced and renamed into place; the key file has mode 0600. Blocks:
    /// call it from `spawn_blocking` in async code if that matters.
    pub fn save(&self, dir: &Path) -> Result<()> {
        create_private_dir(dir)?;
        let files = [
            (CA_FILE, &self.ca_cert_pem, CERT_MODE),
            (CERT_FILE, &self.cert_pem, CERT_MODE),
            (KEY_FILE, &self.key_pem, KEY_MODE),
        ];
        for (name, content, mode) in files {
            write_atomically(dir, name, content.as_bytes(), mode)?;
        }
        sync_dir(dir)
    }

    /// Reads the credentials [`save`](Self::save) wrote. `Ok(None)` when
    /// none of the files exist; an error naming the file when one is
    /// missing or unparsable. Only parses each file; [`CredentialsHandle::new`]
    /// checks that they belong together.
    pub fn load(dir: &Path) -> Result<Option<NodeCredentials>> {
        let ca_path = dir.join(CA_FILE);
        let cert_path = dir.join(CERT_FILE);
        let key_path = dir.join(KEY_FILE);
        let (ca, cert, key) = (
            read_optional(&ca_path)?,
            read_optional(&cert_path)?,
            read_optional(&key_path)?,
        );
        let (ca_cert_pem, cert_pem, key_pem) = match (ca, cert, key) {
            (None, None, None) => return Ok(None),
            (Some(ca), Some(cert), Some(key)) => (ca, cert, key),
            (ca, cert, _) => {
                let path = match (ca, cert) {
                    (None, _) => ca_path,
                    (_, None) => cert_path,
                    _ => key_path,
                };
                return Err(PkiError::IncompleteCredentials { path });
            }
        };
        check_file(&ca_path, || {
            let der = cert_der_from_pem(&ca_cert_pem, "CA certificate")?;
            parse_der(der.as_ref()).map(drop)
        })?;
        check_file(&cert_path, || parse_certificate(&cert_pem).map(drop))?;
        check_file(&key_path, || parse_key(&key_pem).map(drop))?;
        Ok(Some(NodeCredentials {
            ca_cert_pem,
            cert_pem,
            key_pem,
        }))
    }
}

/// How long to wait before renewing the certificate described by `info`:
/// until a random point between 50 % and 80 % of its lifetime (counted from
/// `not_before`), minus the time already elapsed at `now`; zero if that
/// point has passed.
pub fn renewal_delay(info: &CertificateInfo, now: SystemTime) -> Duration {
    let lifetime = info
        .not_after
        .duration_since(info.not_before)
        .unwrap_or(Duration::ZERO);
    let fraction = rand::rng().random_range(RENEW_AT_MIN..=RENEW_AT_MAX);
    let renew_at = info.not_before + lifetime.mul_f64(fraction);
    renew_at.duration_since(now).unwrap_or(Duration::ZERO)
}

/// The node's current credentials, shared by every TLS configuration built
/// from it. Cheap to clone (all clones see the same state).
///
/// [`replace`](Self::replace) swaps in renewed credentials: new TLS
/// handshakes present the new certificate at once, while established
/// connections carry on with the old one.
#[derive(Clone)]
pub struct CredentialsHandle {
    live: Arc<RwLock<Arc<Live>>>,
}

/// Everything derived from one set of credentials, built once.
struct Live {
    creds: NodeCredentials,
    subject: NodeSubject,
    certified_key: Arc<CertifiedKey>,
    roots: Arc<RootCertStore>,
}

impl CredentialsHandle {
    /// Checks `creds` (the key matches the certificate, the certificate
    /// was signed by the CA and names an rswarm node) and wraps them.
    pub fn new(creds: NodeCredentials) -> Result<CredentialsHandle> {
        Ok(CredentialsHandle {
            live: Arc::new(RwLock::new(Arc::new(Live::build(creds)?))),
        })
    }

    /// Swaps in new credentials (after renewal or a role change), checked
    /// like [`new`](Self::new). On error the old credentials stay.
    pub fn replace(&self, creds: NodeCredentials) -> Result<()> {
        let live = Arc::new(Live::build(creds)?);
        *self.live.write().unwrap_or_else(PoisonError::into_inner) = live;
        Ok(())
    }

    /// A copy of the current credentials.
    pub fn current(&self) -> NodeCredentials {
        self.snapshot().creds.clone()
    }

    /// The identity in the current certificate.
    pub fn subject(&self) -> NodeSubject {
        self.snapshot().subject.clone()
    }

    /// The current certificate and key in rustls form.
    pub(crate) fn certified_key(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.snapshot().certified_key)
    }

    /// The current cluster CA as a rustls root store.
    pub(crate) fn roots(&self) -> Arc<RootCertStore> {
        Arc::clone(&self.snapshot().roots)
    }

    fn snapshot(&self) -> Arc<Live> {
        Arc::clone(&self.live.read().unwrap_or_else(PoisonError::into_inner))
    }
}

impl fmt::Debug for CredentialsHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialsHandle")
            .field("subject", &self.snapshot().subject)
            .finish_non_exhaustive()
    }
}

impl Live {
    fn build(creds: NodeCredentials) -> Result<Live> {
        let ca_der = cert_der_from_pem(&creds.ca_cert_pem, "CA certificate")?;
        let cert_der = cert_der_from_pem(&creds.cert_pem, "node certificate")?;
        check_signed_by(cert_der.as_ref(), ca_der.as_ref())?;
        let info = certificate_info_from_der(cert_der.as_ref())?;
        let key = parse_key(&creds.key_pem)?;
        let certified_key = CertifiedKey::from_der(vec![cert_der], key, &ring_provider())?;
        let mut roots = RootCertStore::empty();
        roots.add(ca_der)?;
        Ok(Live {
            creds,
            subject: info.subject,
            certified_key: Arc::new(certified_key),
            roots: Arc::new(roots),
        })
    }
}

fn check_signed_by(cert_der: &[u8], ca_der: &[u8]) -> Result<()> {
    let cert = parse_der(cert_der)?;
    let ca = parse_der(ca_der)?;
    cert.verify_signature(Some(ca.public_key()))
        .map_err(|_| PkiError::NotSignedByCa)
}

fn parse_key(key_pem: &str) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| PkiError::InvalidPem {
        what: "node key",
        reason: e.to_string(),
    })
}

fn check_file(path: &Path, check: impl FnOnce() -> Result<()>) -> Result<()> {
    check().map_err(|source| PkiError::CorruptFile {
        path: path.to_owned(),
        source: Box::new(source),
    })
}

fn read_optional(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(io_error("read", path, source)),
    }
}

fn create_private_dir(dir: &Path) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| io_error("create directory", dir, e))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))
        .map_err(|e| io_error("set permissions of", dir, e))
}

fn write_atomically(dir: &Path, name: &str, content: &[u8], mode: u32) -> Result<()> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(io_error("remove stale", &tmp, e));
        }
        _ => {}
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| io_error("create", &tmp, e))?;
    file.write_all(content)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error("write", &tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| io_error("rename into place", &path, e))
}

fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("sync directory", dir, e))
}

fn io_error(action: &'static str, path: &Path, source: io::Error) -> PkiError {
    PkiError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::{RootCa, generate_key_and_csr};
    use crate::identity::Role;

    const DAY: Duration = Duration::from_secs(24 * 60 * 60);

    fn issue(ca: &RootCa, node_id: &str, role: Role) -> NodeCredentials {
        let (key_pem, csr) = generate_key_and_csr().unwrap();
        let subject = NodeSubject {
            node_id: node_id.into(),
            role,
            cluster_id: "cluster1".into(),
        };
        NodeCredentials {
            ca_cert_pem: ca.cert_pem().to_owned(),
            cert_pem: ca.sign_node_csr(&csr, &subject, DAY).unwrap(),
            key_pem,
        }
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn save_load_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("certs");
        let creds = issue(&RootCa::generate().unwrap(), "n1", Role::Worker);
        assert_eq!(NodeCredentials::load(&dir).unwrap(), None);
        creds.save(&dir).unwrap();
        assert_eq!(NodeCredentials::load(&dir).unwrap(), Some(creds.clone()));
        assert_eq!(mode(&dir.join(KEY_FILE)), 0o600);
        assert_eq!(mode(&dir), 0o700);
        // Saving again replaces the files and leaves no temporaries.
        creds.save(&dir).unwrap();
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(!format!("{creds:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn corrupt_file_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let creds = issue(&RootCa::generate().unwrap(), "n1", Role::Worker);
        creds.save(tmp.path()).unwrap();
        for name in [CA_FILE, CERT_FILE, KEY_FILE] {
            let path = tmp.path().join(name);
            let good = fs::read(&path).unwrap();
            fs::write(
                &path,
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            )
            .unwrap();
            let err = NodeCredentials::load(tmp.path()).unwrap_err();
            assert!(matches!(err, PkiError::CorruptFile { .. }), "{err:?}");
            assert!(err.to_string().contains(name), "{err}");
            fs::write(&path, good).unwrap();
        }
        fs::remove_file(tmp.path().join(CERT_FILE)).unwrap();
        let err = NodeCredentials::load(tmp.path()).unwrap_err();
        assert!(
            matches!(err, PkiError::IncompleteCredentials { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains(CERT_FILE), "{err}");
    }

    #[test]
    fn handle_checks_and_replaces() {
        let ca = RootCa::generate().unwrap();
        let worker = issue(&ca, "n1", Role::Worker);
        let handle = CredentialsHandle::new(worker.clone()).unwrap();
        assert_eq!(handle.subject().role, Role::Worker);
        let manager = issue(&ca, "n1", Role::Manager);
        let clone = handle.clone();
        clone.replace(manager.clone()).unwrap();
        assert_eq!(handle.subject().role, Role::Manager);
        assert_eq!(handle.current(), manager);

        let mismatched = NodeCredentials {
            key_pem: worker.key_pem.clone(),
            ..manager.clone()
        };
        assert!(matches!(handle.replace(mismatched), Err(PkiError::Tls(_))));
        let foreign = NodeCredentials {
            ca_cert_pem: RootCa::generate().unwrap().cert_pem().to_owned(),
            ..worker
        };
        assert!(matches!(
            CredentialsHandle::new(foreign),
            Err(PkiError::NotSignedByCa)
        ));
        // Failed replacements keep the previous credentials.
        assert_eq!(handle.current(), manager);
    }

    #[test]
    fn renewal_between_half_and_four_fifths() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let hour = Duration::from_secs(3600);
        let info = CertificateInfo {
            subject: NodeSubject {
                node_id: "n1".into(),
                role: Role::Worker,
                cluster_id: "c".into(),
            },
            serial_hex: "01".into(),
            not_before: start,
            not_after: start + 100 * hour,
        };
        for _ in 0..200 {
            let d = renewal_delay(&info, start);
            assert!((50 * hour..=80 * hour).contains(&d), "{d:?}");
            let d = renewal_delay(&info, start + 40 * hour);
            assert!((10 * hour..=40 * hour).contains(&d), "{d:?}");
            let d = renewal_delay(&info, start + 65 * hour);
            assert!(d <= 15 * hour, "{d:?}");
            assert_eq!(renewal_delay(&info, start + 90 * hour), Duration::ZERO);
        }
    }
}
