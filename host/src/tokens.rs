//! The token store: client tokens, kept hashed.
//!
//! A token is looked up by the SHA-256 of its id, so the storage file (even after the
//! barrier) never holds a usable token. Accessors are the only handle to a token that may
//! be shown to others. Policies are recorded now and enforced by the ACL layer later.

use std::collections::BTreeMap;
use std::sync::Arc;

use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::barrier::{Barrier, BarrierError};

/// Token ids look like `cvs.` + this many base62 characters (~190 bits).
const TOKEN_RANDOM_CHARS: usize = 32;
/// Prefix of service tokens, so leaked tokens are recognisable by secret scanners.
const TOKEN_PREFIX: &str = "cvs.";
/// System-wide default and maximum token TTL (Vault's 768h).
pub const SYSTEM_MAX_TTL: u64 = 768 * 3600;
/// Longest token id a client may choose (`-dev-root-token-id`, `id` on create).
const MAX_CUSTOM_ID: usize = 256;
/// Most policies one token may carry.
pub const MAX_POLICIES: usize = 256;

/// A stored token.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TokenEntry {
    /// Public handle.
    pub accessor: String,
    /// Policy names, sorted.
    pub policies: Vec<String>,
    /// Free-form metadata.
    pub meta: BTreeMap<String, String>,
    /// Shown in usernames made for this token (`token`, `root`, ...).
    pub display_name: String,
    /// Unix seconds.
    pub creation_time: u64,
    /// TTL at creation, seconds; 0 = never expires.
    pub creation_ttl: u64,
    /// Unix seconds, or none for non-expiring tokens.
    pub expire_time: Option<u64>,
    /// Hard cap over renewals, seconds; 0 = system max.
    pub explicit_max_ttl: u64,
    /// Whether renew-self may extend it.
    pub renewable: bool,
    /// Whether it has no parent.
    pub orphan: bool,
    /// Creating path.
    pub path: String,
    /// Accessor of the parent token.
    pub parent: Option<String>,
}

impl TokenEntry {
    /// Seconds left, 0 for non-expiring tokens.
    pub fn ttl(&self, now: u64) -> u64 {
        self.expire_time.map_or(0, |e| e.saturating_sub(now))
    }

    /// Whether this is a root token.
    pub fn is_root(&self) -> bool {
        self.policies.iter().any(|p| p == "root")
    }
}

/// Token store failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Storage failed.
    #[error(transparent)]
    Barrier(#[from] BarrierError),
    /// The request is invalid.
    #[error("{0}")]
    Invalid(String),
}

/// The token store over the barrier.
pub struct TokenStore {
    barrier: Arc<Barrier>,
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `n` random base62 characters.
pub fn random_base62(n: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rngs::OsRng;
    (0..n)
        .map(|_| {
            let index = rng.gen_range(0..ALPHABET.len());
            char::from(ALPHABET.get(index).copied().unwrap_or(b'A'))
        })
        .collect()
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn id_key(token: &str) -> String {
    format!("sys/token/id/{}", hash(token))
}

fn accessor_key(accessor: &str) -> String {
    format!("sys/token/accessor/{accessor}")
}

impl TokenStore {
    /// A store over `barrier`.
    pub fn new(barrier: Arc<Barrier>) -> Self {
        Self { barrier }
    }

    /// Stores a new token; `id` is used when given (dev root token, `id` on create).
    /// `index` keys (its expiry in the lease scheduler's due index) are written, empty, in
    /// the same commit.
    pub fn create(
        &self,
        entry: TokenEntry,
        id: Option<&str>,
        index: &[String],
    ) -> Result<String, TokenError> {
        let token = match id {
            Some(id)
                if id.is_empty()
                    || id.len() > MAX_CUSTOM_ID
                    || id.chars().any(char::is_whitespace) =>
            {
                return Err(TokenError::Invalid(format!(
                    "a token id must be 1 to {MAX_CUSTOM_ID} characters without spaces"
                )));
            }
            Some(id) => id.to_string(),
            None => format!("{TOKEN_PREFIX}{}", random_base62(TOKEN_RANDOM_CHARS)),
        };
        if self.barrier.get(&id_key(&token))?.is_some() {
            return Err(TokenError::Invalid(
                "a token with that id already exists".to_string(),
            ));
        }
        let bytes = serde_json::to_vec(&entry).map_err(|e| TokenError::Invalid(e.to_string()))?;
        let (id, accessor, hashed) = (id_key(&token), accessor_key(&entry.accessor), hash(&token));
        let mut writes = vec![
            (id.as_str(), Some(bytes.as_slice())),
            (&accessor, Some(hashed.as_bytes())),
        ];
        writes.extend(index.iter().map(|key| (key.as_str(), Some(&[][..]))));
        self.barrier.write_all(&writes)?;
        Ok(token)
    }

    /// The live entry for `token`; expired tokens are deleted and reported as absent.
    pub fn lookup(&self, token: &str) -> Result<Option<TokenEntry>, TokenError> {
        let Some(bytes) = self.barrier.get(&id_key(token))? else {
            return Ok(None);
        };
        let entry: TokenEntry = serde_json::from_slice(&bytes)
            .map_err(|_| TokenError::Invalid("corrupt token entry".to_string()))?;
        if entry.expire_time.is_some_and(|e| e <= unix_now()) {
            self.revoke(token)?;
            return Ok(None);
        }
        Ok(Some(entry))
    }

    /// Deletes `token` (revoking a missing token succeeds).
    pub fn revoke(&self, token: &str) -> Result<Option<TokenEntry>, TokenError> {
        let key = id_key(token);
        let entry = match self.barrier.get(&key)? {
            Some(bytes) => serde_json::from_slice::<TokenEntry>(&bytes).ok(),
            None => None,
        };
        let accessor = entry.as_ref().map(|e| accessor_key(&e.accessor));
        let mut deletes = vec![(key.as_str(), None)];
        deletes.extend(accessor.as_deref().map(|a| (a, None)));
        self.barrier.write_all(&deletes)?;
        Ok(entry)
    }

    /// Extends `token` by `increment` seconds from now (or its creation TTL), capped by
    /// its explicit max TTL and the system max measured from creation.
    /// The entry and its expiry-index key (`expiry_key(accessor, unix expiry)`, moved from
    /// the old expiry to the new one) change in one commit.
    pub fn renew(
        &self,
        token: &str,
        increment: u64,
        expiry_key: impl Fn(&str, u64) -> String,
    ) -> Result<TokenEntry, TokenError> {
        let mut entry = self
            .lookup(token)?
            .ok_or_else(|| TokenError::Invalid("token not found".to_string()))?;
        if entry.expire_time.is_none() {
            return Err(TokenError::Invalid(
                "this token does not expire, so there is nothing to renew".to_string(),
            ));
        }
        if !entry.renewable {
            return Err(TokenError::Invalid("token is not renewable".to_string()));
        }
        let now = unix_now();
        let wanted = if increment > 0 {
            increment
        } else {
            entry.creation_ttl
        };
        let max = if entry.explicit_max_ttl > 0 {
            entry.explicit_max_ttl.min(SYSTEM_MAX_TTL)
        } else {
            SYSTEM_MAX_TTL
        };
        let limit = entry.creation_time.saturating_add(max);
        let previous = entry.expire_time;
        let expire = now.saturating_add(wanted).min(limit);
        entry.expire_time = Some(expire);
        let bytes = serde_json::to_vec(&entry).map_err(|e| TokenError::Invalid(e.to_string()))?;
        let (id, index) = (id_key(token), expiry_key(&entry.accessor, expire));
        let stale = previous
            .filter(|p| *p != expire)
            .map(|p| expiry_key(&entry.accessor, p));
        let mut writes = vec![(id.as_str(), Some(bytes.as_slice())), (&index, Some(&[]))];
        writes.extend(stale.as_deref().map(|key| (key, None)));
        self.barrier.write_all(&writes)?;
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemoryBackend;

    fn store() -> Result<(Arc<Barrier>, TokenStore), BarrierError> {
        let barrier = Arc::new(Barrier::new(Arc::new(MemoryBackend::default())));
        let init = barrier.initialize(1, 1)?;
        barrier.submit_share(init.shares.first().ok_or(BarrierError::NotInitialized)?)?;
        Ok((barrier.clone(), TokenStore::new(barrier)))
    }

    fn entry(ttl: u64) -> TokenEntry {
        let now = unix_now();
        TokenEntry {
            accessor: random_base62(24),
            policies: vec!["default".to_string()],
            meta: BTreeMap::new(),
            display_name: "token".to_string(),
            creation_time: now,
            creation_ttl: ttl,
            expire_time: (ttl > 0).then_some(now + ttl),
            explicit_max_ttl: 0,
            renewable: true,
            orphan: false,
            path: "auth/token/create".to_string(),
            parent: None,
        }
    }

    #[test]
    fn tokens_are_stored_hashed_and_revocable() -> Result<(), Box<dyn std::error::Error>> {
        let (barrier, store) = store()?;
        let token = store.create(entry(60), None, &[])?;
        assert!(token.starts_with(TOKEN_PREFIX));
        assert!(
            barrier
                .scan("sys/token/id/", None, 10)?
                .iter()
                .all(|k| !k.contains(&token))
        );
        assert!(store.lookup(&token)?.is_some());
        store.revoke(&token)?;
        assert!(store.lookup(&token)?.is_none());
        Ok(())
    }

    #[test]
    fn expired_tokens_are_gone() -> Result<(), Box<dyn std::error::Error>> {
        let (_, store) = store()?;
        let mut expired = entry(60);
        expired.expire_time = Some(unix_now() - 1);
        let token = store.create(expired, None, &[])?;
        assert!(store.lookup(&token)?.is_none());
        Ok(())
    }
}
