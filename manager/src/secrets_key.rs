//! The secrets key: the 256-bit key every manager seals secret data and
//! registry credentials with before they enter the store, and opens them
//! with when a node needs them.
//!
//! The store (Raft log and snapshots) is what the key protects, so the key
//! is **not** in the store. `init` makes it; each manager keeps it in
//! `<raft dir>/secrets.key` (mode 0600, written atomically) and in memory
//! ([`KeyHolder`]). A manager that lacks it (joined or promoted later) asks
//! the other managers with `SecretsKey.GetSecretsKey` ([`fetch_loop`],
//! retried with backoff until it has it); only a manager certificate of this
//! cluster gets an answer.
//!
//! Sealed bytes are `version (1) ‖ nonce (12) ‖ AES-256-GCM ciphertext and
//! tag`, with a random nonce per seal and the owning object's ID as
//! associated data, so sealed bytes moved to another object do not open.
//!
//! **Invariants:** the key is never logged (its `Debug` is redacted) and
//! never written anywhere but its file; a holder's key never changes once
//! set.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use rswarm_pki::PeerInfo;
use rswarm_proto::secrets_key_client::SecretsKeyClient;
use rswarm_proto::{GetSecretsKeyRequest, GetSecretsKeyResponse};
use thiserror::Error;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::{debug, info, warn};

use crate::authz::Caller;
use crate::manager::ManagerContext;

/// The key file's name in the Raft directory: removed with the Raft data
/// when the node stops being a manager or leaves.
pub const SECRETS_KEY_FILE: &str = "secrets.key";

/// Key length: AES-256.
const KEY_LEN: usize = 32;

/// The first byte of sealed bytes: the format, so a later format (another
/// cipher, key rotation) can be told apart.
const SEAL_VERSION: u8 = 1;

/// First pause between attempts to fetch the key from other managers.
const FETCH_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest pause between attempts: a new manager gets the key within this
/// long of another manager answering again.
const FETCH_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// One `GetSecretsKey` call: a TLS handshake and one small answer.
const FETCH_CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// Why sealing, opening or loading failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SealError {
    /// The bytes were not sealed by this key for this object, or were
    /// changed since.
    #[error(
        "sealed data does not open with this cluster's secrets key (wrong key, wrong object, or damaged)"
    )]
    Open,
    /// The bytes are too short or of an unknown format.
    #[error("sealed data has an unknown format (version {version}, {len} bytes)")]
    Format {
        /// The first byte found.
        version: u8,
        /// How many bytes there were.
        len: usize,
    },
    /// The system's random generator or the cipher failed.
    #[error("the cipher failed: {0}")]
    Crypto(&'static str),
    /// A key of the wrong length.
    #[error("a secrets key must be {KEY_LEN} bytes, not {0}")]
    KeyLength(usize),
    /// The key file cannot be read or written.
    #[error("secrets key file {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

/// The cluster's secrets key. `Debug` never shows it.
#[derive(Clone)]
pub struct SecretsKey([u8; KEY_LEN]);

impl fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretsKey(<redacted>)")
    }
}

impl SecretsKey {
    /// A fresh random key.
    pub fn generate() -> Result<Self, SealError> {
        let mut key = [0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut key)
            .map_err(|_| SealError::Crypto("no random bytes"))?;
        Ok(Self(key))
    }

    /// A key from its bytes (as sent by another manager).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        let key: [u8; KEY_LEN] = bytes
            .try_into()
            .map_err(|_| SealError::KeyLength(bytes.len()))?;
        Ok(Self(key))
    }

    fn cipher(&self) -> Result<LessSafeKey, SealError> {
        let key =
            UnboundKey::new(&AES_256_GCM, &self.0).map_err(|_| SealError::Crypto("bad key"))?;
        Ok(LessSafeKey::new(key))
    }

    /// Seals `plaintext` for the object `object_id`.
    pub fn seal(&self, object_id: &str, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SealError::Crypto("no random bytes"))?;
        let mut body = plaintext.to_vec();
        self.cipher()?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(object_id.as_bytes()),
                &mut body,
            )
            .map_err(|_| SealError::Crypto("seal failed"))?;
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + body.len());
        sealed.push(SEAL_VERSION);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&body);
        Ok(sealed)
    }

    /// Opens bytes sealed for `object_id`.
    pub fn open(&self, object_id: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        let tag_len = AES_256_GCM.tag_len();
        let version = sealed.first().copied().unwrap_or(0);
        if version != SEAL_VERSION || sealed.len() < 1 + NONCE_LEN + tag_len {
            return Err(SealError::Format {
                version,
                len: sealed.len(),
            });
        }
        let (nonce, body) = sealed[1..].split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Open)?;
        let mut body = body.to_vec();
        let plain = self
            .cipher()?
            .open_in_place(nonce, Aad::from(object_id.as_bytes()), &mut body)
            .map_err(|_| SealError::Open)?;
        Ok(plain.to_vec())
    }

    /// Reads the key file; `None` when there is none.
    pub fn load(path: &Path) -> Result<Option<Self>, SealError> {
        match std::fs::read(path) {
            Ok(bytes) => Self::from_bytes(&bytes).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(SealError::File {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Writes the key file (mode 0600) so that a crash leaves either no
    /// file or the whole key.
    pub fn save(&self, path: &Path) -> Result<(), SealError> {
        let file_error = |source| SealError::File {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(file_error)?;
        }
        let tmp = path.with_extension("tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(file_error)?;
        file.write_all(&self.0).map_err(file_error)?;
        file.sync_all().map_err(file_error)?;
        std::fs::rename(&tmp, path).map_err(file_error)?;
        if let Some(dir) = path.parent().and_then(|d| std::fs::File::open(d).ok()) {
            // The rename is durable once the directory is: best effort, as
            // the key can be fetched again from another manager.
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

/// The running manager's copy of the key: empty until loaded, made or
/// fetched, then fixed.
#[derive(Debug)]
pub struct KeyHolder {
    path: PathBuf,
    key: OnceLock<SecretsKey>,
}

impl KeyHolder {
    /// A holder for the key file in `raft_dir`, loaded if it exists.
    pub fn open(raft_dir: &Path) -> Result<Self, SealError> {
        let path = raft_dir.join(SECRETS_KEY_FILE);
        let holder = Self {
            key: OnceLock::new(),
            path,
        };
        if let Some(key) = SecretsKey::load(&holder.path)? {
            let _ = holder.key.set(key);
        }
        Ok(holder)
    }

    /// A holder that already has `key` and no file (tests).
    pub fn with_key(key: SecretsKey) -> Self {
        let holder = Self {
            path: PathBuf::new(),
            key: OnceLock::new(),
        };
        let _ = holder.key.set(key);
        holder
    }

    /// The key, if this manager has it.
    pub fn get(&self) -> Option<&SecretsKey> {
        self.key.get()
    }

    /// The key, or the status to answer a call that needs it.
    pub fn require(&self) -> Result<&SecretsKey, Status> {
        self.get().ok_or_else(|| {
            Status::unavailable(
                "this manager has not received the cluster's secrets key yet: \
                 retry in a few seconds (it fetches it from the other managers)",
            )
        })
    }

    /// Makes a new key for a new cluster, saved before it is used.
    pub fn create(&self) -> Result<(), SealError> {
        if self.get().is_some() {
            return Ok(());
        }
        let key = SecretsKey::generate()?;
        self.install(key)
    }

    /// Saves `key` and holds it (a key already held wins).
    fn install(&self, key: SecretsKey) -> Result<(), SealError> {
        if self.get().is_some() {
            return Ok(());
        }
        key.save(&self.path)?;
        let _ = self.key.set(key);
        Ok(())
    }
}

/// `SecretsKey.GetSecretsKey`: hands the key to other managers.
#[derive(Clone)]
pub struct KeyService {
    ctx: Arc<ManagerContext>,
}

impl KeyService {
    /// Serves the key of the manager behind `ctx`.
    pub fn new(ctx: Arc<ManagerContext>) -> Self {
        Self { ctx }
    }
}

#[tonic::async_trait]
impl rswarm_proto::secrets_key_server::SecretsKey for KeyService {
    async fn get_secrets_key(
        &self,
        req: Request<GetSecretsKeyRequest>,
    ) -> Result<Response<GetSecretsKeyResponse>, Status> {
        let caller = self
            .ctx
            .authz
            .require_manager(req.extensions().get::<PeerInfo>())?;
        let Caller::Node(subject) = caller else {
            return Err(Status::unauthenticated(
                "the secrets key is only given to managers, over mutual TLS",
            ));
        };
        let key = self.ctx.secrets_key.require()?;
        info!(node = %subject.node_id, "secrets key sent to a manager");
        Ok(Response::new(GetSecretsKeyResponse {
            key: key.0.to_vec(),
        }))
    }
}

/// Until this manager holds the key, asks the other managers for it (the
/// leader first), with backoff. Returns at once when the key is held.
pub async fn fetch_loop(ctx: Arc<ManagerContext>, cancel: CancellationToken) {
    let mut backoff = FETCH_BACKOFF_MIN;
    let mut attempts: u64 = 0;
    while ctx.secrets_key.get().is_none() {
        for addr in key_sources(&ctx) {
            match fetch_from(&ctx, &addr).await {
                Ok(key) => match ctx.secrets_key.install(key) {
                    Ok(()) => {
                        info!(from = %addr, "received the cluster's secrets key");
                        return;
                    }
                    Err(e) => warn!("cannot keep the secrets key: {e}"),
                },
                Err(e) => debug!(from = %addr, "no secrets key: {}", e.message()),
            }
        }
        attempts += 1;
        if attempts.is_multiple_of(20) {
            warn!(
                attempts,
                "still waiting for the cluster's secrets key from another manager"
            );
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(FETCH_BACKOFF_MAX);
    }
}

/// The other managers' addresses, the leader's first.
fn key_sources(ctx: &ManagerContext) -> Vec<String> {
    crate::controlapi::manager_addrs(ctx)
        .into_iter()
        .filter(|a| *a != ctx.advertise_addr)
        .collect()
}

async fn fetch_from(ctx: &ManagerContext, addr: &str) -> Result<SecretsKey, Status> {
    let channel = ctx
        .channels
        .get(addr)
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let mut client = SecretsKeyClient::new(channel);
    let call = client.get_secrets_key(GetSecretsKeyRequest {});
    let resp = tokio::time::timeout(FETCH_CALL_TIMEOUT, call)
        .await
        .map_err(|_| Status::deadline_exceeded("no answer"))??;
    SecretsKey::from_bytes(&resp.into_inner().key).map_err(|e| Status::internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: what is sealed opens again with the same key and object ID,
    /// and the sealed bytes do not contain the plain text.
    #[test]
    fn seal_round_trip() {
        let key = SecretsKey::generate().unwrap();
        let sealed = key.seal("obj1", b"top secret marker").unwrap();
        assert_eq!(sealed[0], SEAL_VERSION);
        assert!(!sealed.windows(6).any(|w| w == b"marker"));
        assert_eq!(key.open("obj1", &sealed).unwrap(), b"top secret marker");
        let again = key.seal("obj1", b"top secret marker").unwrap();
        assert_ne!(sealed, again, "every seal uses a fresh nonce");
    }

    /// Goal: a wrong key, another object's ID, changed bytes, a cut tail and
    /// an unknown version are all refused.
    #[test]
    fn wrong_key_object_or_bytes_are_refused() {
        let key = SecretsKey::generate().unwrap();
        let other = SecretsKey::generate().unwrap();
        let sealed = key.seal("obj1", b"data").unwrap();
        assert!(matches!(other.open("obj1", &sealed), Err(SealError::Open)));
        assert!(matches!(key.open("obj2", &sealed), Err(SealError::Open)));
        for i in 1..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[i] ^= 0x01;
            assert!(key.open("obj1", &tampered).is_err(), "byte {i} flipped");
        }
        assert!(key.open("obj1", &sealed[..sealed.len() - 1]).is_err());
        let mut versioned = sealed.clone();
        versioned[0] = 2;
        assert!(matches!(
            key.open("obj1", &versioned),
            Err(SealError::Format { version: 2, .. })
        ));
        assert!(matches!(
            key.open("obj1", &[]),
            Err(SealError::Format { .. })
        ));
    }

    /// Goal: the key file is private to root, survives a reload, and a
    /// holder keeps the first key it got.
    #[test]
    fn key_file_is_private_and_reloads() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let holder = KeyHolder::open(dir.path()).unwrap();
        assert!(holder.get().is_none());
        assert!(holder.require().is_err());
        holder.create().unwrap();
        let sealed = holder.get().unwrap().seal("x", b"v").unwrap();
        let path = dir.path().join(SECRETS_KEY_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let reloaded = KeyHolder::open(dir.path()).unwrap();
        assert_eq!(reloaded.get().unwrap().open("x", &sealed).unwrap(), b"v");
        holder.install(SecretsKey::generate().unwrap()).unwrap();
        assert_eq!(holder.get().unwrap().open("x", &sealed).unwrap(), b"v");
        assert_eq!(
            format!("{:?}", holder.get().unwrap()),
            "SecretsKey(<redacted>)"
        );
        std::fs::write(&path, b"short").unwrap();
        assert!(matches!(
            KeyHolder::open(dir.path()),
            Err(SealError::KeyLength(5))
        ));
    }
}
