//! The token store: client tokens, kept hashed.
//!
//! A token is looked up by the SHA-256 of its id, so the storage file (even after the
//! barrier) never holds a usable token. Accessors are the only handle to a token that may
//! be shown to others. The policies a token names are enforced by `pipeline::authorize`
//! through the policy store.
//!
//! Tokens form a tree: a child's accessor is indexed under its parent's
//! (`sys/token/parent/<parent>/<child>`), and revoking a token removes its whole subtree.
//! Removal writes a marker per removed token (`sys/token/revoking/<accessor>`) in the same
//! commit; the lease scheduler revokes that token's leases and then clears the marker, so a
//! crash midway is finished after the restart.

pub mod api;
pub mod login;
pub mod roles;

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
/// Children (or markers) read per page while walking a token tree.
const TREE_PAGE: usize = 256;

const ID_PREFIX: &str = "sys/token/id/";
/// One key per live token (also read by the metrics' token gauge).
pub(crate) const ACCESSOR_PREFIX: &str = "sys/token/accessor/";
const PARENT_PREFIX: &str = "sys/token/parent/";
/// Tokens minted by an auth mount's logins: `sys/token/mount/<mount accessor>/<accessor>`.
const MOUNT_PREFIX: &str = "sys/token/mount/";
/// Accessors one `LIST auth/token/accessors` returns at most: the reply is built in memory
/// and each listed accessor costs two decrypting reads to check that its token is live.
pub const MAX_LISTED_ACCESSORS: usize = 10_000;

/// Tokens removed whose leases (and, after a crash, subtrees) are still to be revoked.
pub const REVOKING_PREFIX: &str = "sys/token/revoking/";

/// A stored token.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TokenEntry {
    /// Public handle.
    pub accessor: String,
    /// Policy names, sorted.
    pub policies: Vec<String>,
    /// Free-form metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
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
    #[serde(default, skip_serializing_if = "is_zero")]
    pub explicit_max_ttl: u64,
    /// Whether renew-self may extend it.
    pub renewable: bool,
    /// Whether it has no parent.
    pub orphan: bool,
    /// Creating path.
    pub path: String,
    /// Accessor of the parent token; none for orphans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Uses left (0 = unlimited); the token is revoked after its last one.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub num_uses: u64,
    /// Whether the last use has been taken (the token is then revoked after that request).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub uses_spent: bool,
    /// For a periodic token, the TTL every renewal sets, seconds; 0 = not periodic.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub period: u64,
    /// Ceiling for renewals from creation, seconds, below the token store's (a login's
    /// `max-ttl`); 0 = the token store's.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_ttl: u64,
    /// CIDR blocks the token may be used from; empty = anywhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bound_cidrs: Vec<String>,
    /// For a token minted by an auth engine's login: the accessor of its auth mount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_accessor: Option<String>,
    /// For a token minted by an auth engine's login: the engine's private data, handed
    /// back to it when the token is renewed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_internal: Option<String>,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

impl TokenEntry {
    /// Seconds left, 0 for non-expiring tokens.
    pub fn ttl(&self, now: u64) -> u64 {
        self.expire_time.map_or(0, |e| e.saturating_sub(now))
    }

    /// The last unix second this token can live to, renewals included; none when it can
    /// live forever (a root token without TTL, a periodic token without explicit max).
    pub fn deadline(&self) -> Option<u64> {
        self.expire_time?;
        let max = match (self.explicit_max_ttl, self.period) {
            (0, period) if period > 0 => return None,
            (0, _) => SYSTEM_MAX_TTL,
            (explicit, _) => explicit.min(SYSTEM_MAX_TTL),
        };
        Some(self.creation_time.saturating_add(max))
    }

    /// Whether the token may be used from `remote` (its CIDR bindings; a request that came
    /// without a socket address passes only an unbound token).
    pub fn allows_address(&self, remote: Option<std::net::IpAddr>) -> bool {
        self.bound_cidrs.is_empty()
            || remote.is_some_and(|ip| self.bound_cidrs.iter().any(|cidr| cidr_contains(cidr, ip)))
    }

    /// Whether this is a root token.
    pub fn is_root(&self) -> bool {
        self.policies.iter().any(|p| p == "root")
    }

    /// The token role that made this token: tokens made with `auth/token/create/<role>`
    /// carry that path (role names have no `/`), so the role is read from it.
    pub fn role(&self) -> Option<&str> {
        self.path
            .strip_prefix("auth/token/create/")
            .and_then(|rest| rest.split('/').next())
            .filter(|role| !role.is_empty())
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
    /// The parent was revoked while the request to create its child ran (403).
    #[error("the parent token was revoked")]
    ParentRevoked,
}

/// The token store over the barrier.
pub struct TokenStore {
    barrier: Arc<Barrier>,
    /// Serialises every read-modify-write of a token entry (use counting, renewal) with
    /// removal, so neither can write back an entry a revocation just deleted.
    updating: std::sync::Mutex<()>,
    /// Serialises role writes (the role count bound, field-by-field updates).
    roles: std::sync::Mutex<()>,
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Whether `cidr` (`10.0.0.0/8`, `::1/128`, or a bare address) contains `ip`. An
/// unparseable block contains nothing.
pub fn cidr_contains(cidr: &str, ip: std::net::IpAddr) -> bool {
    let cidr = cidr.trim();
    if let Ok(net) = cidr.parse::<ipnet::IpNet>() {
        return net.contains(&ip);
    }
    cidr.parse::<std::net::IpAddr>()
        .is_ok_and(|single| single == ip)
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

fn poisoned() -> TokenError {
    TokenError::Invalid("the token store is unavailable after an internal failure".to_string())
}

/// Whether a stored entry still works: not expired, uses not spent.
fn is_live(entry: &TokenEntry, now: u64) -> bool {
    entry.expire_time.is_none_or(|e| e > now) && !entry.uses_spent
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn id_key(token: &str) -> String {
    format!("{ID_PREFIX}{}", hash(token))
}

fn accessor_key(accessor: &str) -> String {
    format!("{ACCESSOR_PREFIX}{accessor}")
}

fn parent_key(parent: &str, child: &str) -> String {
    format!("{PARENT_PREFIX}{parent}/{child}")
}

fn mount_key(mount_accessor: &str, accessor: &str) -> String {
    format!("{MOUNT_PREFIX}{mount_accessor}/{accessor}")
}

fn revoking_key(accessor: &str) -> String {
    format!("{REVOKING_PREFIX}{accessor}")
}

/// What one use of a token found.
pub struct Use {
    /// The token's entry as of this use.
    pub entry: TokenEntry,
    /// This was its last permitted use: revoke it once the request is done.
    pub last: bool,
}

impl TokenStore {
    /// A store over `barrier`.
    pub fn new(barrier: Arc<Barrier>) -> Self {
        Self {
            barrier,
            updating: std::sync::Mutex::new(()),
            roles: std::sync::Mutex::new(()),
        }
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

        let parent = entry
            .parent
            .as_ref()
            .map(|parent| parent_key(parent, &entry.accessor));
        let mount = entry
            .mount_accessor
            .as_ref()
            .map(|mount| mount_key(mount, &entry.accessor));
        let mut writes = vec![
            (id.as_str(), Some(bytes.as_slice())),
            (&accessor, Some(hashed.as_bytes())),
        ];
        writes.extend(parent.as_deref().map(|key| (key, Some(&[][..]))));
        writes.extend(mount.as_deref().map(|key| (key, Some(&[][..]))));
        writes.extend(index.iter().map(|key| (key.as_str(), Some(&[][..]))));
        self.barrier.write_all(&writes)?;
        // Written first, checked after: a revocation of the parent removes the parent and
        // then lists its children, so either it lists this one, or this check sees the
        // parent gone and takes the child back itself.
        if let Some(parent) = &entry.parent
            && !self.present(parent)?
        {
            let undo: Vec<(&str, Option<&[u8]>)> =
                writes.iter().map(|(key, _)| (*key, None)).collect();
            self.barrier.write_all(&undo)?;
            return Err(TokenError::ParentRevoked);
        }
        crate::metrics::global()
            .tokens_created
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(token)
    }

    /// The live entry for `token`; expired and used-up tokens are reported as absent (the
    /// scheduler removes them at their due time, or the request that used them up does).
    pub fn lookup(&self, token: &str) -> Result<Option<TokenEntry>, TokenError> {
        let Some(bytes) = self.barrier.get(&id_key(token))? else {
            return Ok(None);
        };
        let entry: TokenEntry = serde_json::from_slice(&bytes)
            .map_err(|_| TokenError::Invalid("corrupt token entry".to_string()))?;
        Ok(is_live(&entry, unix_now()).then_some(entry))
    }

    /// Looks `token` up for one request, counting the use against `num_uses`; a token
    /// that `admits` refuses (used from outside its CIDR blocks) is reported as absent
    /// and its use is not counted.
    pub fn use_token(
        &self,
        token: &str,
        admits: impl Fn(&TokenEntry) -> bool,
    ) -> Result<Option<Use>, TokenError> {
        let Some(entry) = self.lookup(token)?.filter(|entry| admits(entry)) else {
            return Ok(None);
        };
        if entry.num_uses == 0 {
            return Ok(Some(Use { entry, last: false }));
        }
        // Uses are counted one at a time, so two requests never both take the last one.
        let _updating = self.updating.lock().map_err(|_| poisoned())?;
        let Some(mut entry) = self.lookup(token)? else {
            return Ok(None);
        };
        let last = entry.num_uses <= 1;
        entry.num_uses = entry.num_uses.saturating_sub(1);
        entry.uses_spent = last;
        let bytes = serde_json::to_vec(&entry).map_err(|e| TokenError::Invalid(e.to_string()))?;
        self.barrier.put(&id_key(token), &bytes)?;
        Ok(Some(Use { entry, last }))
    }

    /// The entry of the token with `accessor`, expired or not.
    pub fn by_accessor(&self, accessor: &str) -> Result<Option<(String, TokenEntry)>, TokenError> {
        let Some(hashed) = self.barrier.get(&accessor_key(accessor))? else {
            return Ok(None);
        };
        let key = format!("{ID_PREFIX}{}", String::from_utf8_lossy(&hashed));
        let Some(bytes) = self.barrier.get(&key)? else {
            return Ok(None);
        };
        let entry = serde_json::from_slice(&bytes)
            .map_err(|_| TokenError::Invalid("corrupt token entry".to_string()))?;
        Ok(Some((key, entry)))
    }

    /// The entry of the live token with `accessor`: expired and used-up tokens are absent,
    /// as [`TokenStore::lookup`] has them.
    pub fn live_by_accessor(
        &self,
        accessor: &str,
    ) -> Result<Option<(String, TokenEntry)>, TokenError> {
        Ok(self
            .by_accessor(accessor)?
            .filter(|(_, entry)| is_live(entry, unix_now())))
    }

    /// Accessors of live tokens, in order, at most `limit`; `true` when more tokens are
    /// stored than were looked at (the list is then incomplete).
    pub fn accessors(&self, limit: usize) -> Result<(Vec<String>, bool), TokenError> {
        let keys = self
            .barrier
            .scan(ACCESSOR_PREFIX, None, limit.saturating_add(1))?;
        let truncated = keys.len() > limit;
        let mut live = Vec::new();
        for key in keys.iter().take(limit) {
            let Some(accessor) = key.get(ACCESSOR_PREFIX.len()..) else {
                continue;
            };
            if self.live_by_accessor(accessor)?.is_some() {
                live.push(accessor.to_string());
            }
        }
        Ok((live, truncated))
    }

    /// Whether the token with `accessor` is still stored (revocation removes it first).
    pub fn present(&self, accessor: &str) -> Result<bool, TokenError> {
        Ok(self.barrier.get(&accessor_key(accessor))?.is_some())
    }

    /// The accessor of `token`, if it is stored (live or not).
    pub fn accessor_of(&self, token: &str) -> Result<Option<String>, TokenError> {
        let Some(bytes) = self.barrier.get(&id_key(token))? else {
            return Ok(None);
        };
        let entry: TokenEntry = serde_json::from_slice(&bytes)
            .map_err(|_| TokenError::Invalid("corrupt token entry".to_string()))?;
        Ok(Some(entry.accessor))
    }

    /// Removes the token with `accessor` and every token below it, top down, each in one
    /// commit with its revocation marker (so descendants stop working as soon as they are
    /// reached, and a crash leaves markers to finish from). Returns the removed accessors,
    /// `accessor` first; it is included even when its entry was already gone.
    pub fn remove_tree(
        &self,
        accessor: &str,
        expiry_key: impl Fn(&str, u64) -> String,
    ) -> Result<Vec<String>, TokenError> {
        let mut removed = Vec::new();
        let mut pending = vec![accessor.to_string()];
        while let Some(current) = pending.pop() {
            self.remove_one(&current, &expiry_key)?;
            let prefix = format!("{PARENT_PREFIX}{current}/");
            let mut after: Option<String> = None;
            loop {
                let keys = self.barrier.scan(&prefix, after.as_deref(), TREE_PAGE)?;
                let Some(last) = keys.last().cloned() else {
                    break;
                };
                pending.extend(
                    keys.iter()
                        .filter_map(|k| k.get(prefix.len()..))
                        .map(str::to_string),
                );
                after = Some(last);
            }
            removed.push(current);
        }
        Ok(removed)
    }

    /// Removes one token and its own index keys, writing its revocation marker.
    fn remove_one(
        &self,
        accessor: &str,
        expiry_key: &impl Fn(&str, u64) -> String,
    ) -> Result<(), TokenError> {
        let _updating = self.updating.lock().map_err(|_| poisoned())?;
        let found = self.by_accessor(accessor)?;
        let marker = revoking_key(accessor);
        let access = accessor_key(accessor);
        let mut keys: Vec<String> = Vec::new();
        if let Some((id, entry)) = &found {
            keys.push(id.clone());
            keys.extend(entry.parent.as_ref().map(|p| parent_key(p, accessor)));
            keys.extend(
                entry
                    .mount_accessor
                    .as_ref()
                    .map(|m| mount_key(m, accessor)),
            );
            keys.extend(entry.expire_time.map(|e| expiry_key(accessor, e)));
        }
        let mut writes: Vec<(&str, Option<&[u8]>)> =
            vec![(marker.as_str(), Some(&[])), (access.as_str(), None)];
        writes.extend(keys.iter().map(|k| (k.as_str(), None)));
        self.barrier.write_all(&writes)?;
        Ok(())
    }

    /// Accessors of tokens minted by the auth mount with `mount_accessor`, at most `limit`,
    /// in order, after the accessor `after`.
    pub fn minted_by(
        &self,
        mount_accessor: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, TokenError> {
        let prefix = format!("{MOUNT_PREFIX}{mount_accessor}/");
        let after = after.map(|accessor| format!("{prefix}{accessor}"));
        Ok(self
            .barrier
            .scan(&prefix, after.as_deref(), limit)?
            .iter()
            .filter_map(|key| key.get(prefix.len()..))
            .map(str::to_string)
            .collect())
    }

    /// Removes the index entry of a token minted by an auth mount that is already gone.
    pub fn forget_minted(&self, mount_accessor: &str, accessor: &str) -> Result<(), TokenError> {
        Ok(self.barrier.delete(&mount_key(mount_accessor, accessor))?)
    }

    /// Removes only the token with `accessor` (with its marker); its children become
    /// orphans (`revoke-orphan`).
    pub fn remove_orphaning(
        &self,
        accessor: &str,
        expiry_key: impl Fn(&str, u64) -> String,
    ) -> Result<(), TokenError> {
        let prefix = format!("{PARENT_PREFIX}{accessor}/");
        loop {
            let keys = self.barrier.scan(&prefix, None, TREE_PAGE)?;
            if keys.is_empty() {
                break;
            }
            for key in keys {
                let child = key.get(prefix.len()..).unwrap_or_default();
                let _updating = self.updating.lock().map_err(|_| poisoned())?;
                let mut writes: Vec<(String, Option<Vec<u8>>)> = vec![(key.clone(), None)];
                if let Some((id, mut entry)) = self.by_accessor(child)? {
                    entry.parent = None;
                    entry.orphan = true;
                    let bytes = serde_json::to_vec(&entry)
                        .map_err(|e| TokenError::Invalid(e.to_string()))?;
                    writes.push((id, Some(bytes)));
                }
                let writes: Vec<(&str, Option<&[u8]>)> = writes
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_deref()))
                    .collect();
                self.barrier.write_all(&writes)?;
            }
        }
        self.remove_one(accessor, &expiry_key)
    }

    /// Accessors whose revocation is not finished, at most `limit`.
    pub fn pending_revocations(&self, limit: usize) -> Result<Vec<String>, TokenError> {
        Ok(self
            .barrier
            .scan(REVOKING_PREFIX, None, limit)?
            .iter()
            .filter_map(|k| k.get(REVOKING_PREFIX.len()..))
            .map(str::to_string)
            .collect())
    }

    /// Clears the revocation marker of `accessor` once its leases are revoked.
    pub fn finish_revocation(&self, accessor: &str) -> Result<(), TokenError> {
        Ok(self.barrier.delete(&revoking_key(accessor))?)
    }

    /// Extends `token` by `increment` seconds from now (or its creation TTL), capped by
    /// its explicit max TTL and `max_ttl` (the token store's tuned max, else the system
    /// max) measured from creation.
    /// The entry and its expiry-index key (`expiry_key(accessor, unix expiry)`, moved from
    /// the old expiry to the new one) change in one commit.
    pub fn renew(
        &self,
        token: &str,
        increment: u64,
        max_ttl: u64,
        expiry_key: impl Fn(&str, u64) -> String,
    ) -> Result<TokenEntry, TokenError> {
        let _updating = self.updating.lock().map_err(|_| poisoned())?;
        let entry = self
            .lookup(token)?
            .ok_or_else(|| TokenError::Invalid("token not found".to_string()))?;
        self.renew_entry(id_key(token), entry, increment, max_ttl, expiry_key)
    }

    /// [`TokenStore::renew`] of the token with `accessor` (`renew-accessor`).
    pub fn renew_by_accessor(
        &self,
        accessor: &str,
        increment: u64,
        max_ttl: u64,
        expiry_key: impl Fn(&str, u64) -> String,
    ) -> Result<TokenEntry, TokenError> {
        let _updating = self.updating.lock().map_err(|_| poisoned())?;
        let (key, entry) = self
            .live_by_accessor(accessor)?
            .ok_or_else(|| TokenError::Invalid("invalid accessor".to_string()))?;
        self.renew_entry(key, entry, increment, max_ttl, expiry_key)
    }

    /// Renews `entry`, stored at `key`; the caller holds `updating` and read `entry` under it.
    fn renew_entry(
        &self,
        key: String,
        mut entry: TokenEntry,
        increment: u64,
        max_ttl: u64,
        expiry_key: impl Fn(&str, u64) -> String,
    ) -> Result<TokenEntry, TokenError> {
        if entry.expire_time.is_none() {
            return Err(TokenError::Invalid(
                "this token does not expire, so there is nothing to renew".to_string(),
            ));
        }
        if !entry.renewable {
            return Err(TokenError::Invalid("token is not renewable".to_string()));
        }
        let now = unix_now();
        // A login's token is bounded by its auth mount's (or role's) max TTL instead.
        let max_ttl = if entry.max_ttl > 0 {
            entry.max_ttl
        } else {
            max_ttl
        };
        // A periodic token always renews to its period, with no ceiling but an explicit
        // max TTL; any other token toward the increment, within its max TTL.
        let wanted = match (entry.period, increment) {
            (period, _) if period > 0 => period,
            (_, 0) => entry.creation_ttl,
            (_, increment) => increment,
        };
        let max = match (entry.explicit_max_ttl, entry.period) {
            (0, period) if period > 0 => u64::MAX,
            (0, _) => max_ttl,
            (explicit, _) => explicit.min(max_ttl),
        };
        let limit = entry.creation_time.saturating_add(max);
        let previous = entry.expire_time;
        let expire = now.saturating_add(wanted).min(limit);
        entry.expire_time = Some(expire);
        let bytes = serde_json::to_vec(&entry).map_err(|e| TokenError::Invalid(e.to_string()))?;
        let (id, index) = (key, expiry_key(&entry.accessor, expire));
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
            num_uses: 0,
            uses_spent: false,
            period: 0,
            ..TokenEntry::default()
        }
    }

    /// A stored 10-minute token under `parent`: (token, accessor).
    fn stored(store: &TokenStore, parent: Option<&str>) -> Result<(String, String), TokenError> {
        let mut token = entry(600);
        token.parent = parent.map(str::to_string);
        let accessor = token.accessor.clone();
        Ok((store.create(token, None, &[])?, accessor))
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
        let accessor = store
            .accessor_of(&token)?
            .ok_or(BarrierError::NotInitialized)?;
        assert_eq!(
            store.remove_tree(&accessor, |a, e| format!("x/{a}/{e}"))?,
            vec![accessor.clone()]
        );
        assert!(store.lookup(&token)?.is_none());
        assert_eq!(store.pending_revocations(10)?, vec![accessor.clone()]);
        store.finish_revocation(&accessor)?;
        assert!(store.pending_revocations(10)?.is_empty());
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

    #[test]
    fn removing_a_token_removes_its_subtree_but_not_orphans()
    -> Result<(), Box<dyn std::error::Error>> {
        let (_, store) = store()?;
        let (parent, parent_accessor) = stored(&store, None)?;
        let (child, child_accessor) = stored(&store, Some(&parent_accessor))?;
        let (grandchild, _) = stored(&store, Some(&child_accessor))?;
        let (orphan, _) = stored(&store, None)?;
        let removed = store.remove_tree(&parent_accessor, |a, e| format!("x/{a}/{e}"))?;
        assert_eq!(removed.len(), 3);
        for gone in [&parent, &child, &grandchild] {
            assert!(store.lookup(gone)?.is_none());
        }
        assert!(store.lookup(&orphan)?.is_some());
        Ok(())
    }

    #[test]
    fn revoke_orphan_keeps_the_children_as_orphans() -> Result<(), Box<dyn std::error::Error>> {
        let (_, store) = store()?;
        let (parent, parent_accessor) = stored(&store, None)?;
        let (child, _) = stored(&store, Some(&parent_accessor))?;
        store.remove_orphaning(&parent_accessor, |a, e| format!("x/{a}/{e}"))?;
        assert!(store.lookup(&parent)?.is_none());
        let kept = store.lookup(&child)?.ok_or(BarrierError::NotInitialized)?;
        assert!(kept.orphan && kept.parent.is_none());
        Ok(())
    }

    #[test]
    fn a_token_with_num_uses_works_that_many_times() -> Result<(), Box<dyn std::error::Error>> {
        let (_, store) = store()?;
        let mut limited = entry(600);
        limited.num_uses = 2;
        let token = store.create(limited, None, &[])?;
        let first = store
            .use_token(&token, |_| true)?
            .ok_or(BarrierError::NotInitialized)?;
        assert!(!first.last);
        let second = store
            .use_token(&token, |_| true)?
            .ok_or(BarrierError::NotInitialized)?;
        assert!(second.last);
        assert!(store.use_token(&token, |_| true)?.is_none());
        Ok(())
    }

    /// What a Kubernetes login's token costs in storage, keys and encrypted values summed
    /// over everything its commit wrote (entry, accessor, mount index, expiry index): the
    /// issue's bound is 1 KiB per login.
    #[test]
    fn a_login_token_costs_under_a_kibibyte_of_storage() -> Result<(), Box<dyn std::error::Error>> {
        use crate::backend::Backend;
        let backend = Arc::new(MemoryBackend::default());
        let barrier = Arc::new(Barrier::new(backend.clone()));
        let init = barrier.initialize(1, 1)?;
        barrier.submit_share(init.shares.first().ok_or("no share")?)?;
        let bytes = |backend: &MemoryBackend| -> Result<usize, Box<dyn std::error::Error>> {
            let mut total = 0;
            for key in backend.scan("", None, usize::MAX)? {
                total += key.len() + backend.get(&key)?.map_or(0, |v| v.len());
            }
            Ok(total)
        };
        let store = TokenStore::new(barrier);
        let before = bytes(&backend)?;
        let mut login = entry(86_400);
        login.policies = vec!["default".to_string(), "grade-api-pki".to_string()];
        login.path = "auth/kubernetes/login".to_string();
        login.display_name = "kubernetes-grade-api-grade-api-sa".to_string();
        login.meta = [
            ("role", "grade-api"),
            ("service_account_name", "grade-api-sa"),
            ("service_account_namespace", "grade-api"),
            (
                "service_account_uid",
                "0b4c5e8f-6a0e-4f3a-9d55-5e1b7c3a2f10",
            ),
            ("service_account_secret_name", ""),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        login.orphan = true;
        login.max_ttl = 86_400;
        login.mount_accessor = Some("auth_kubernetes_0123abcd".to_string());
        // Vault's Kubernetes method keeps the role name for renewals.
        login.auth_internal = Some(r#"{"role":"grade-api"}"#.to_string());
        let expiry = crate::lease::token_expiry_key(&login.accessor, unix_now() + 86_400);
        store.create(login, None, &[expiry])?;
        let cost = bytes(&backend)? - before;

        assert!(cost < 1024, "a login token costs {cost} bytes of storage");
        Ok(())
    }
}
