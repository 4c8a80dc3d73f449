//! The security barrier: every value is sealed with AES-256-GCM before it reaches the
//! backend, and nothing can be read or written while Coffer is sealed.
//!
//! Key hierarchy (as in Vault): a random 256-bit *unseal key* is split with Shamir's scheme
//! into the shares returned by `operator init`; it encrypts the *keyring*, which holds the
//! data-encryption key. The unseal key and its shares are never stored. Each ciphertext is
//! bound to its storage key through AES-GCM's associated data, so an attacker with write
//! access to the file cannot move one entry into another's place.
//!
//! A [`View`] is a chroot into the barrier: a mount's storage sees only its own prefix.

use std::ops::Bound;
use std::sync::{Arc, Mutex, RwLock};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::backend::{Backend, BackendError};

/// Where the (plaintext, non-secret) seal configuration lives.
const SEAL_CONFIG_KEY: &str = "core/seal-config";
/// Where the keyring, encrypted under the unseal key, lives.
const KEYRING_KEY: &str = "core/keyring";
/// Format byte of a sealed value: version 1 = term(u32 BE) ‖ nonce(12) ‖ ciphertext+tag.
const FORMAT_V1: u8 = 1;
/// AES-GCM nonce length.
const NONCE_LEN: usize = 12;
/// Most key shares an init may ask for (Vault's limit too): GF(256) has 255 non-zero points.
pub const MAX_KEY_SHARES: u8 = 255;
/// How many keys a single `list` may return; callers page with `after`.
pub const MAX_LIST_ENTRIES: usize = 100_000;
/// Batch size when scanning the backend.
const SCAN_BATCH: usize = 512;
/// Locks that serialize conditional writes ([`Barrier::write_all_if_async`]); a key uses
/// the one its hash picks. Enough that unrelated keys rarely wait on each other, few
/// enough to allocate once.
const CONDITIONAL_WRITE_LOCKS: usize = 64;

/// Barrier failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BarrierError {
    /// Coffer is sealed; nothing can be read or written.
    #[error("Vault is sealed")]
    Sealed,
    /// `operator init` has not been run.
    #[error("Vault is not initialized")]
    NotInitialized,
    /// `operator init` was already run.
    #[error("Vault is already initialized")]
    AlreadyInitialized,
    /// The request to init or unseal is malformed.
    #[error("{0}")]
    Invalid(String),
    /// A stored value failed authentication: corrupted or tampered with.
    #[error("stored entry {0} failed integrity check")]
    Integrity(String),
    /// The storage medium failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Share counts chosen at init; stored in clear so `seal-status` can report them.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct SealConfig {
    /// Number of key shares handed out.
    pub secret_shares: u8,
    /// Number of shares needed to unseal.
    pub secret_threshold: u8,
}

/// What `init` hands back, exactly once.
pub struct InitResult {
    /// The unseal key shares, each as raw bytes.
    pub shares: Vec<Zeroizing<Vec<u8>>>,
}

/// Unseal progress, as `sys/seal-status` reports it.
#[derive(Clone, Debug)]
pub struct SealStatus {
    /// Whether init has run.
    pub initialized: bool,
    /// Whether the barrier is sealed.
    pub sealed: bool,
    /// Shares needed.
    pub threshold: u8,
    /// Shares handed out.
    pub shares: u8,
    /// Shares submitted so far.
    pub progress: u8,
    /// Identifies the current unseal attempt.
    pub nonce: String,
}

#[derive(Serialize, Deserialize)]
struct KeyringEntry {
    term: u32,
    key: Vec<u8>,
}

struct Keyring {
    term: u32,
    cipher: Aes256Gcm,
}

#[derive(Default)]
struct UnsealProgress {
    shares: Vec<Zeroizing<Vec<u8>>>,
    nonce: String,
}

/// The encrypting layer over a [`Backend`].
pub struct Barrier {
    backend: Arc<dyn Backend>,
    keyring: RwLock<Option<Keyring>>,
    progress: Mutex<UnsealProgress>,
    /// Held from the read to the commit of a conditional write (by key hash).
    conditional_locks: Vec<tokio::sync::Mutex<()>>,
}

impl Barrier {
    /// Wraps a backend. The barrier starts sealed.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self {
            backend,
            keyring: RwLock::new(None),
            progress: Mutex::new(UnsealProgress::default()),
            conditional_locks: (0..CONDITIONAL_WRITE_LOCKS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }

    /// The seal configuration, if init has run.
    pub fn seal_config(&self) -> Result<Option<SealConfig>, BarrierError> {
        match self.backend.get(SEAL_CONFIG_KEY)? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|_| BarrierError::Integrity(SEAL_CONFIG_KEY.to_string())),
        }
    }

    /// Whether the barrier currently holds its key.
    pub fn is_sealed(&self) -> bool {
        self.keyring.read().map(|k| k.is_none()).unwrap_or(true)
    }

    /// Creates the keyring and splits a fresh unseal key into `shares` shares, any
    /// `threshold` of which unseal. The barrier stays sealed.
    pub fn initialize(&self, shares: u8, threshold: u8) -> Result<InitResult, BarrierError> {
        if self.seal_config()?.is_some() {
            return Err(BarrierError::AlreadyInitialized);
        }
        if shares == 0 || threshold == 0 || threshold > shares {
            return Err(BarrierError::Invalid(format!(
                "invalid seal configuration: secret_threshold ({threshold}) must be between 1 and secret_shares ({shares})"
            )));
        }
        if shares > 1 && threshold == 1 {
            return Err(BarrierError::Invalid(
                "invalid seal configuration: threshold must be greater than one for multiple shares".to_string(),
            ));
        }
        let unseal_key = random_key();
        let data_key = random_key();
        let keyring = serde_json::to_vec(&KeyringEntry {
            term: 1,
            key: data_key.to_vec(),
        })
        .map(Zeroizing::new)
        .map_err(|e| BarrierError::Invalid(e.to_string()))?;
        let sealed_keyring = seal_with(&cipher(&unseal_key[..]), 0, KEYRING_KEY, &keyring)?;
        self.backend.put(KEYRING_KEY, &sealed_keyring)?;
        let config = SealConfig {
            secret_shares: shares,
            secret_threshold: threshold,
        };
        let config_bytes =
            serde_json::to_vec(&config).map_err(|e| BarrierError::Invalid(e.to_string()))?;
        self.backend.put(SEAL_CONFIG_KEY, &config_bytes)?;
        let shares = if shares == 1 {
            vec![Zeroizing::new(unseal_key.to_vec())]
        } else {
            blahaj::Sharks(threshold)
                .dealer(&unseal_key[..])
                .take(usize::from(shares))
                .map(|share| Zeroizing::new(Vec::from(&share)))
                .collect()
        };
        Ok(InitResult { shares })
    }

    /// Submits one unseal key share. Returns the status after it; the barrier unseals when
    /// the threshold is reached and the shares decrypt the keyring.
    pub fn submit_share(&self, share: &[u8]) -> Result<SealStatus, BarrierError> {
        let config = self.seal_config()?.ok_or(BarrierError::NotInitialized)?;
        if !self.is_sealed() {
            return self.status();
        }
        let ready = {
            let mut progress = self.lock_progress()?;
            if progress.nonce.is_empty() {
                progress.nonce = uuid::Uuid::new_v4().to_string();
            }
            if progress.shares.iter().any(|s| s.as_slice() == share) {
                return Err(BarrierError::Invalid(
                    "this unseal key share was already submitted".to_string(),
                ));
            }
            progress.shares.push(Zeroizing::new(share.to_vec()));
            if progress.shares.len() < usize::from(config.secret_threshold) {
                None
            } else {
                Some(std::mem::take(&mut *progress))
            }
        };
        if let Some(progress) = ready {
            let unseal_key = recover_key(&config, &progress.shares)?;
            self.open_keyring(&unseal_key)?;
        }
        self.status()
    }

    /// Discards submitted shares.
    pub fn reset_unseal(&self) -> Result<(), BarrierError> {
        *self.lock_progress()? = UnsealProgress::default();
        Ok(())
    }

    /// Drops the key from memory.
    pub fn seal(&self) {
        if let Ok(mut keyring) = self.keyring.write() {
            *keyring = None;
        }
    }

    /// Current seal status.
    pub fn status(&self) -> Result<SealStatus, BarrierError> {
        let config = self.seal_config()?;
        let progress = self.lock_progress()?;
        Ok(SealStatus {
            initialized: config.is_some(),
            sealed: self.is_sealed(),
            threshold: config.map_or(0, |c| c.secret_threshold),
            shares: config.map_or(0, |c| c.secret_shares),
            progress: u8::try_from(progress.shares.len()).unwrap_or(u8::MAX),
            nonce: progress.nonce.clone(),
        })
    }

    /// Reads and decrypts `key`.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BarrierError> {
        let keyring = self.keyring.read().map_err(|_| BarrierError::Sealed)?;
        let keyring = keyring.as_ref().ok_or(BarrierError::Sealed)?;
        match self.backend.get(key)? {
            None => Ok(None),
            Some(sealed) => open_with(&keyring.cipher, key, &sealed).map(Some),
        }
    }

    /// Encrypts and writes `key`.
    pub fn put(&self, key: &str, value: &[u8]) -> Result<(), BarrierError> {
        Ok(self.backend.put(key, &self.seal_value(key, value)?)?)
    }

    /// Deletes `key`.
    pub fn delete(&self, key: &str) -> Result<(), BarrierError> {
        self.require_unsealed()?;
        Ok(self.backend.delete(key)?)
    }

    /// Applies every write at once, in one durable commit: after a crash either all of
    /// them are there or none is. `Some` encrypts and stores, `None` deletes.
    pub fn write_all(&self, writes: &[(&str, Option<&[u8]>)]) -> Result<(), BarrierError> {
        Ok(self.backend.write_batch(self.seal_changes(writes)?)?)
    }

    /// [`Barrier::write_all`] for async callers: the thread is not held while the commit
    /// is flushed.
    pub async fn write_all_async(
        &self,
        writes: &[(&str, Option<&[u8]>)],
    ) -> Result<(), BarrierError> {
        let changes = self.seal_changes(writes)?;
        Ok(self.backend.write_batch_async(changes).await?)
    }

    /// Applies `writes` as [`Barrier::write_all_async`] does, but only if the value stored
    /// at `key` is now `expected` (`None`: absent); returns whether it did. Serialized
    /// against every other conditional write of `key` (the check and the commit happen
    /// under one lock), so concurrent read-modify-writes of one key cannot both win.
    /// Plain writes of `key` are not ordered against it.
    pub async fn write_all_if_async(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        writes: &[(&str, Option<&[u8]>)],
    ) -> Result<bool, BarrierError> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut hasher);
        let stripe =
            usize::try_from(hasher.finish() % CONDITIONAL_WRITE_LOCKS as u64).unwrap_or_default();
        let Some(lock) = self.conditional_locks.get(stripe) else {
            return Err(BarrierError::Invalid(
                "conditional write lock out of range".to_string(),
            ));
        };
        let _held = lock.lock().await;
        if self.get(key)?.as_deref() != expected {
            return Ok(false);
        }
        self.write_all_async(writes).await?;
        Ok(true)
    }

    /// [`Barrier::put`] for async callers.
    pub async fn put_async(&self, key: &str, value: &[u8]) -> Result<(), BarrierError> {
        self.write_all_async(&[(key, Some(value))]).await
    }

    /// [`Barrier::delete`] for async callers.
    pub async fn delete_async(&self, key: &str) -> Result<(), BarrierError> {
        self.write_all_async(&[(key, None)]).await
    }

    /// Encrypts the values of `writes` (deletes stay `None`); refuses while sealed.
    fn seal_changes(
        &self,
        writes: &[(&str, Option<&[u8]>)],
    ) -> Result<crate::backend::Changes, BarrierError> {
        self.require_unsealed()?;
        writes
            .iter()
            .map(|(key, value)| {
                let sealed = value.map(|v| self.seal_value(key, v)).transpose()?;
                Ok((key.to_string(), sealed))
            })
            .collect()
    }

    fn seal_value(&self, key: &str, value: &[u8]) -> Result<Vec<u8>, BarrierError> {
        let keyring = self.keyring.read().map_err(|_| BarrierError::Sealed)?;
        let keyring = keyring.as_ref().ok_or(BarrierError::Sealed)?;
        seal_with(&keyring.cipher, keyring.term, key, value)
    }

    /// Up to `limit` full keys under `prefix`, after `after`, in order.
    pub fn scan(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, BarrierError> {
        self.require_unsealed()?;
        Ok(self.backend.scan(prefix, after, limit)?)
    }

    /// One level below `prefix`: leaf names and folders (with a trailing `/`), skipping
    /// over each folder's contents instead of reading them.
    pub fn list(&self, prefix: &str) -> Result<Vec<String>, BarrierError> {
        self.require_unsealed()?;
        let mut names = Vec::new();
        let mut start: Bound<String> = Bound::Unbounded;
        loop {
            let keys =
                self.backend
                    .scan_from(prefix, start.as_ref().map(String::as_str), SCAN_BATCH)?;
            let full_batch = keys.len() == SCAN_BATCH;
            let mut skipped_folder = false;
            for key in &keys {
                let rest = key.get(prefix.len()..).unwrap_or_default();
                match rest.find('/') {
                    Some(slash) => {
                        let folder = rest.get(..=slash).unwrap_or(rest);
                        names.push(folder.to_string());
                        start = Bound::Included(past_folder(&format!("{prefix}{folder}")));
                        skipped_folder = true;
                        break;
                    }
                    None => {
                        names.push(rest.to_string());
                        start = Bound::Excluded(key.clone());
                    }
                }
            }
            if names.len() >= MAX_LIST_ENTRIES || !(skipped_folder || full_batch) {
                break;
            }
        }
        names.truncate(MAX_LIST_ENTRIES);
        Ok(names)
    }

    fn require_unsealed(&self) -> Result<(), BarrierError> {
        if self.is_sealed() {
            Err(BarrierError::Sealed)
        } else {
            Ok(())
        }
    }

    fn lock_progress(&self) -> Result<std::sync::MutexGuard<'_, UnsealProgress>, BarrierError> {
        self.progress
            .lock()
            .map_err(|_| BarrierError::Invalid("unseal state poisoned".to_string()))
    }

    fn open_keyring(&self, unseal_key: &[u8]) -> Result<(), BarrierError> {
        let sealed = self
            .backend
            .get(KEYRING_KEY)?
            .ok_or(BarrierError::NotInitialized)?;
        let plain = open_with(&cipher(unseal_key), KEYRING_KEY, &sealed).map_err(|_| {
            BarrierError::Invalid(
                "unseal failed: the key shares do not decrypt the keyring (wrong or mixed shares); progress was reset".to_string(),
            )
        })?;
        let plain = Zeroizing::new(plain);
        let entry: KeyringEntry = serde_json::from_slice(&plain)
            .map_err(|_| BarrierError::Integrity(KEYRING_KEY.to_string()))?;
        let key = Zeroizing::new(entry.key);
        let mut keyring = self.keyring.write().map_err(|_| BarrierError::Sealed)?;
        *keyring = Some(Keyring {
            term: entry.term,
            cipher: cipher(&key),
        });
        Ok(())
    }
}

/// The first key after every key inside `folder` (which ends in `/`): the folder with its
/// slash raised to `0`, the next character. No key inside the folder can sort past it,
/// whatever characters follow the slash (a "largest" suffix does not exist).
fn past_folder(folder: &str) -> String {
    let mut next = folder.strip_suffix('/').unwrap_or(folder).to_string();
    next.push(char::from(b'/' + 1));
    next
}

fn random_key() -> Zeroizing<[u8; 32]> {
    let mut key = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(&mut key[..]);
    key
}

fn cipher(key: &[u8]) -> Aes256Gcm {
    let key = aes_gcm::Key::<Aes256Gcm>::from_slice(key);
    Aes256Gcm::new(key)
}

fn recover_key(
    config: &SealConfig,
    shares: &[Zeroizing<Vec<u8>>],
) -> Result<Zeroizing<Vec<u8>>, BarrierError> {
    let invalid = |_| BarrierError::Invalid("unseal failed: a key share is malformed".to_string());
    if config.secret_shares == 1 {
        return shares
            .first()
            .filter(|s| s.len() == 32)
            .cloned()
            .ok_or(BarrierError::Invalid(
                "unseal failed: the key must be 32 bytes".to_string(),
            ));
    }
    let parsed = shares
        .iter()
        .map(|s| blahaj::Share::try_from(s.as_slice()).map_err(invalid))
        .collect::<Result<Vec<_>, _>>()?;
    blahaj::Sharks(config.secret_threshold)
        .recover(&parsed)
        .map(Zeroizing::new)
        .map_err(|e| BarrierError::Invalid(format!("unseal failed: {e}")))
}

fn seal_with(
    cipher: &Aes256Gcm,
    term: u32,
    key: &str,
    plain: &[u8],
) -> Result<Vec<u8>, BarrierError> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let ciphertext = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plain,
                aad: key.as_bytes(),
            },
        )
        .map_err(|_| BarrierError::Integrity(key.to_string()))?;
    let mut out = Vec::with_capacity(1 + 4 + NONCE_LEN + ciphertext.len());
    out.push(FORMAT_V1);
    out.extend_from_slice(&term.to_be_bytes());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ciphertext);
    Ok(out)
}

fn open_with(cipher: &Aes256Gcm, key: &str, sealed: &[u8]) -> Result<Vec<u8>, BarrierError> {
    let integrity = || BarrierError::Integrity(key.to_string());
    let (format, rest) = sealed.split_first().ok_or_else(integrity)?;
    if *format != FORMAT_V1 || rest.len() < 4 + NONCE_LEN {
        return Err(integrity());
    }
    let (_term, rest) = rest.split_at(4);
    let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
    cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad: key.as_bytes(),
            },
        )
        .map_err(|_| integrity())
}

/// A prefix-scoped window onto the barrier (a "chroot"), handed to one mount.
#[derive(Clone)]
pub struct View {
    barrier: Arc<Barrier>,
    prefix: String,
}

impl View {
    /// A view of everything under `prefix` (which should end in `/`).
    pub fn new(barrier: Arc<Barrier>, prefix: impl Into<String>) -> Self {
        Self {
            barrier,
            prefix: prefix.into(),
        }
    }

    /// The barrier key for a view-relative key.
    pub fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Reads a view-relative key.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BarrierError> {
        self.barrier.get(&self.full(key))
    }

    /// Writes a view-relative key.
    pub fn put(&self, key: &str, value: &[u8]) -> Result<(), BarrierError> {
        self.barrier.put(&self.full(key), value)
    }

    /// Deletes a view-relative key.
    pub fn delete(&self, key: &str) -> Result<(), BarrierError> {
        self.barrier.delete(&self.full(key))
    }

    /// Writes a view-relative key without holding the thread while it is flushed.
    pub async fn put_async(&self, key: &str, value: &[u8]) -> Result<(), BarrierError> {
        self.barrier.put_async(&self.full(key), value).await
    }

    /// Deletes a view-relative key without holding the thread while it is flushed.
    pub async fn delete_async(&self, key: &str) -> Result<(), BarrierError> {
        self.barrier.delete_async(&self.full(key)).await
    }

    /// Applies view-relative writes in one durable commit (see [`Barrier::write_all`])
    /// without holding the thread while it is flushed.
    pub async fn write_all_async(
        &self,
        writes: &[(&str, Option<&[u8]>)],
    ) -> Result<(), BarrierError> {
        let keys: Vec<String> = writes.iter().map(|(key, _)| self.full(key)).collect();
        let full: Vec<(&str, Option<&[u8]>)> = keys
            .iter()
            .zip(writes)
            .map(|(key, (_, value))| (key.as_str(), *value))
            .collect();
        self.barrier.write_all_async(&full).await
    }

    /// [`Barrier::write_all_if_async`] with view-relative keys.
    pub async fn write_all_if_async(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        writes: &[(&str, Option<&[u8]>)],
    ) -> Result<bool, BarrierError> {
        let keys: Vec<String> = writes.iter().map(|(key, _)| self.full(key)).collect();
        let full: Vec<(&str, Option<&[u8]>)> = keys
            .iter()
            .zip(writes)
            .map(|(key, (_, value))| (key.as_str(), *value))
            .collect();
        self.barrier
            .write_all_if_async(&self.full(key), expected, &full)
            .await
    }

    /// Lists one level below a view-relative prefix.
    pub fn list(&self, prefix: &str) -> Result<Vec<String>, BarrierError> {
        self.barrier.list(&self.full(prefix))
    }

    /// Scans full keys (view-relative) below a view-relative prefix.
    pub fn scan(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, BarrierError> {
        let after = after.map(|a| self.full(a));
        let keys = self
            .barrier
            .scan(&self.full(prefix), after.as_deref(), limit)?;
        Ok(keys
            .into_iter()
            .filter_map(|k| k.get(self.prefix.len()..).map(str::to_string))
            .collect())
    }

    /// Deletes everything in the view (used when a mount is disabled).
    pub fn clear(&self) -> Result<(), BarrierError> {
        loop {
            let keys = self.barrier.scan(&self.prefix, None, SCAN_BATCH)?;
            if keys.is_empty() {
                return Ok(());
            }
            for key in keys {
                self.barrier.delete(&key)?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemoryBackend;

    fn barrier() -> (Arc<MemoryBackend>, Barrier) {
        let backend = Arc::new(MemoryBackend::default());
        let barrier = Barrier::new(backend.clone());
        (backend, barrier)
    }

    #[test]
    fn sealed_barrier_refuses_reads_and_writes() {
        let (_, barrier) = barrier();
        assert!(matches!(barrier.get("x"), Err(BarrierError::Sealed)));
        assert!(matches!(barrier.put("x", b"y"), Err(BarrierError::Sealed)));
    }

    #[test]
    fn shamir_unseal_needs_threshold_and_values_are_encrypted() -> Result<(), BarrierError> {
        let (backend, barrier) = barrier();
        let init = barrier.initialize(5, 3)?;
        assert_eq!(init.shares.len(), 5);
        let first = init.shares.first().ok_or(BarrierError::NotInitialized)?;
        let status = barrier.submit_share(first)?;
        assert!(status.sealed);
        assert_eq!(status.progress, 1);
        for share in init.shares.iter().skip(2).take(2) {
            barrier.submit_share(share)?;
        }
        assert!(!barrier.is_sealed());
        barrier.put("logical/x", b"plaintext-marker")?;
        let raw = backend.get("logical/x")?.unwrap_or_default();
        assert!(!raw.windows(16).any(|w| w == b"plaintext-marker"));
        assert_eq!(
            barrier.get("logical/x")?.as_deref(),
            Some(&b"plaintext-marker"[..])
        );
        Ok(())
    }

    #[test]
    fn write_all_applies_every_put_and_delete_encrypted_and_nothing_when_sealed()
    -> Result<(), BarrierError> {
        let (backend, barrier) = barrier();
        let init = barrier.initialize(1, 1)?;
        barrier.submit_share(init.shares.first().ok_or(BarrierError::NotInitialized)?)?;
        barrier.put("old", b"x")?;
        barrier.write_all(&[
            ("a", Some(b"plaintext-marker-a")),
            ("b", Some(b"")),
            ("old", None),
        ])?;
        assert_eq!(
            barrier.get("a")?.as_deref(),
            Some(&b"plaintext-marker-a"[..])
        );
        assert_eq!(barrier.get("b")?.as_deref(), Some(&b""[..]));
        assert_eq!(barrier.get("old")?, None);
        let raw = backend.get("a")?.unwrap_or_default();
        assert!(!raw.windows(16).any(|w| w == b"plaintext-marker"));
        barrier.seal();
        let sealed = barrier.write_all(&[("c", Some(b"y")), ("a", None)]);
        assert!(matches!(sealed, Err(BarrierError::Sealed)));
        assert_eq!(backend.get("c")?, None);
        assert!(backend.get("a")?.is_some(), "nothing deleted while sealed");
        Ok(())
    }

    #[test]
    fn wrong_shares_do_not_unseal_and_reset_progress() -> Result<(), BarrierError> {
        let (_, barrier) = barrier();
        barrier.initialize(1, 1)?;
        let result = barrier.submit_share(&[7u8; 32]);
        assert!(matches!(result, Err(BarrierError::Invalid(_))));
        assert!(barrier.is_sealed());
        assert_eq!(barrier.status()?.progress, 0);
        Ok(())
    }

    #[test]
    fn moved_ciphertext_fails_integrity() -> Result<(), BarrierError> {
        let (backend, barrier) = barrier();
        let init = barrier.initialize(1, 1)?;
        barrier.submit_share(init.shares.first().ok_or(BarrierError::NotInitialized)?)?;
        barrier.put("a", b"secret")?;
        let raw = backend.get("a")?.unwrap_or_default();
        backend.put("b", &raw)?;
        assert!(matches!(barrier.get("b"), Err(BarrierError::Integrity(_))));
        Ok(())
    }

    /// Sixteen tasks race read-decrement-write on one counter through the conditional
    /// write, on a multi-threaded runtime: every winning swap is counted exactly once, a
    /// stale expectation never wins, and a missing key is matched by `None` only.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn conditional_writes_of_one_key_do_not_lose_updates() -> Result<(), BarrierError> {
        let (_, barrier) = barrier();
        let init = barrier.initialize(1, 1)?;
        barrier.submit_share(init.shares.first().ok_or(BarrierError::NotInitialized)?)?;
        let barrier = Arc::new(barrier);
        assert!(
            !barrier
                .write_all_if_async("uses", Some(b"0"), &[("uses", Some(b"9"))])
                .await?
        );
        assert_eq!(
            barrier.get("uses")?,
            None,
            "a failed condition wrote nothing"
        );
        assert!(
            barrier
                .write_all_if_async("uses", None, &[("uses", Some(b"10"))])
                .await?
        );
        assert!(
            !barrier
                .write_all_if_async("uses", None, &[("uses", Some(b"99"))])
                .await?
        );
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    loop {
                        let current = barrier.get("uses")?.unwrap_or_default();
                        let left: u32 = String::from_utf8_lossy(&current).parse().unwrap_or(0);
                        if left == 0 {
                            return Ok::<bool, BarrierError>(false);
                        }
                        let next = (left - 1).to_string();
                        let writes = [("uses", Some(next.as_bytes())), ("log", Some(&b"x"[..]))];
                        if barrier
                            .write_all_if_async("uses", Some(&current), &writes)
                            .await?
                        {
                            return Ok(true);
                        }
                    }
                })
            })
            .collect();
        let mut won = 0;
        for task in tasks {
            if task
                .await
                .map_err(|e| BarrierError::Invalid(e.to_string()))??
            {
                won += 1;
            }
        }
        assert_eq!(won, 10, "exactly as many uses were taken as there were");
        assert_eq!(barrier.get("uses")?.as_deref(), Some(&b"0"[..]));
        assert_eq!(barrier.get("log")?.as_deref(), Some(&b"x"[..]));
        Ok(())
    }

    #[test]
    fn list_returns_one_level() -> Result<(), BarrierError> {
        let (_, barrier) = barrier();
        let init = barrier.initialize(1, 1)?;
        barrier.submit_share(init.shares.first().ok_or(BarrierError::NotInitialized)?)?;
        for key in ["p/a", "p/b/1", "p/b/2", "p/c", "p/d/x/y", "q/z"] {
            barrier.put(key, b"v")?;
        }
        assert_eq!(barrier.list("p/")?, vec!["a", "b/", "c", "d/"]);
        Ok(())
    }

    #[test]
    fn list_skips_a_folder_whose_keys_use_the_highest_code_point() -> Result<(), BarrierError> {
        let (_, barrier) = barrier();
        let init = barrier.initialize(1, 1)?;
        barrier.submit_share(init.shares.first().ok_or(BarrierError::NotInitialized)?)?;
        barrier.put("p/a/\u{10FFFF}z", b"v")?;
        barrier.put("p/b", b"v")?;
        assert_eq!(barrier.list("p/")?, vec!["a/", "b"]);
        Ok(())
    }

    /// Characters keys are built from: the folder separator, its neighbours in code point
    /// order (`.` below it, `0` right above it), and the highest code points of each
    /// UTF-8 length, where a "skip past the folder" bound is easiest to get wrong.
    const KEY_ALPHABET: [char; 10] = [
        '/',
        '.',
        '0',
        'a',
        'b',
        '\u{7F}',
        '\u{7FF}',
        '\u{FFFF}',
        '\u{10FFFE}',
        '\u{10FFFF}',
    ];

    fn random_storage_key(rng: &mut impl rand::Rng) -> String {
        let length = rng.gen_range(1..8);
        (0..length)
            .map(|_| {
                let index = rng.gen_range(0..KEY_ALPHABET.len());
                KEY_ALPHABET.get(index).copied().unwrap_or('a')
            })
            .collect()
    }

    /// What `list(prefix)` must return: the first segment below `prefix` of every key
    /// under it (with its slash, for folders), once each, in order.
    fn model_list(keys: &std::collections::BTreeSet<String>, prefix: &str) -> Vec<String> {
        let names: std::collections::BTreeSet<String> = keys
            .iter()
            .filter_map(|key| key.strip_prefix(prefix))
            .map(|rest| match rest.find('/') {
                Some(slash) => rest.get(..=slash).unwrap_or(rest).to_string(),
                None => rest.to_string(),
            })
            .collect();
        names.into_iter().collect()
    }

    #[test]
    fn list_matches_a_naive_model_over_random_keys() -> Result<(), BarrierError> {
        use rand::{Rng, SeedableRng};
        // Below the barrier's own keys (`core/...`), which the model does not know.
        const ROOT: &str = "data/";
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x00C0_FFEE);
        for case in 0..300 {
            let (_, barrier) = barrier();
            let init = barrier.initialize(1, 1)?;
            barrier.submit_share(init.shares.first().ok_or(BarrierError::NotInitialized)?)?;
            // Now and then more keys than one scan batch, so paging is exercised too.
            let count = if case % 25 == 0 {
                SCAN_BATCH * 3
            } else {
                rng.gen_range(0..40)
            };
            let mut keys = std::collections::BTreeSet::new();
            for _ in 0..count {
                let key = random_storage_key(&mut rng);
                barrier.put(&format!("{ROOT}{key}"), b"")?;
                keys.insert(key);
            }
            let mut prefixes = vec![String::new()];
            for key in keys.iter().take(5) {
                if let Some(slash) = key.rfind('/') {
                    prefixes.push(key.get(..=slash).unwrap_or_default().to_string());
                }
            }
            for prefix in &prefixes {
                let listed = barrier.list(&format!("{ROOT}{prefix}"))?;
                let expected = model_list(&keys, prefix);
                let first_difference = listed
                    .iter()
                    .zip(&expected)
                    .position(|(l, e)| l != e)
                    .unwrap_or(listed.len().min(expected.len()));
                assert_eq!(
                    listed,
                    expected,
                    "case {case}, prefix {prefix:?}: {} listed, {} expected, first difference at {first_difference}: {:?} vs {:?}",
                    listed.len(),
                    expected.len(),
                    listed.get(first_difference),
                    expected.get(first_difference),
                );
            }
        }
        Ok(())
    }
}
