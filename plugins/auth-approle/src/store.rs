//! Storage layout and the entries kept in it. Owns every storage key this engine uses.
//! A secret ID is never stored in clear, only as its HMAC under the role's key. Role IDs
//! and accessors are read back (`role-id`, `LIST secret-id`), so they are values; in keys
//! they appear only as their SHA-256.
//!
//! - `role/<name>`: a [`Role`];
//! - `role_id/<sha256(role_id)>`: a [`RoleIdIndex`], naming the role that owns a role ID;
//! - `secret_id/<hmac(role key, name)>/<hmac(role key, secret_id)>`: a [`SecretIdEntry`];
//! - `accessor/<sha256(accessor)>`: an [`AccessorEntry`], pointing at its secret ID's key;
//! - `tidy/last-periodic`: unix seconds of the last automatic tidy.
//!
//! A secret ID entry and its accessor are created in one commit and removed in one
//! commit conditional on the secret ID entry ([`remove_secret_id`]), so an accessor can be
//! left without its secret ID only by a crash, which `tidy` repairs.

use std::collections::BTreeMap;

use coffer_sdk::auth::TokenParams;
use coffer_sdk::prelude::*;
use coffer_sdk::storage::Batch;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Roles.
pub const ROLE_PREFIX: &str = "role/";
/// The role-ID index.
pub const ROLE_ID_PREFIX: &str = "role_id/";
/// Secret IDs, one folder per role (and per role key).
pub const SECRET_ID_PREFIX: &str = "secret_id/";
/// Secret ID accessors.
pub const ACCESSOR_PREFIX: &str = "accessor/";
/// When the last automatic tidy ran.
pub const LAST_TIDY: &str = "tidy/last-periodic";
/// Bytes of a role's random HMAC key.
const ROLE_KEY_BYTES: usize = 32;
/// Attempts at one conditional update before giving up: each lost race means another
/// call changed the entry in between (a login took a use), so the caller may retry.
pub const MAX_SWAP_ATTEMPTS: usize = 32;

/// A role, as stored.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Role {
    /// The role ID that logs in as this role.
    pub role_id: String,
    /// Hex of the random key secret IDs of this role are HMACed with.
    pub hmac_key: String,
    /// Whether a login must present a secret ID.
    pub bind_secret_id: bool,
    /// CIDR blocks a login (with any secret ID) must come from.
    pub secret_id_bound_cidrs: Vec<String>,
    /// Uses of each new secret ID; 0 = unlimited.
    pub secret_id_num_uses: u64,
    /// Lifetime of each new secret ID, seconds; 0 = no expiry.
    pub secret_id_ttl: u64,
    /// Accepted and reported for Vault compatibility; Coffer has no replication.
    pub local_secret_ids: bool,
    /// The `token_*` parameters of the tokens this role's logins get.
    #[serde(flatten)]
    pub token: TokenParams,
}

/// Which role owns a role ID.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RoleIdIndex {
    /// The role's name.
    pub name: String,
}

/// A secret ID, as stored (under the HMAC of the secret ID itself).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SecretIdEntry {
    /// Its accessor: an identifier that can look it up and destroy it, but not log in.
    pub secret_id_accessor: String,
    /// Uses left; 0 = unlimited.
    pub secret_id_num_uses: u64,
    /// Its lifetime when issued, seconds; 0 = no expiry.
    pub secret_id_ttl: u64,
    /// Unix seconds when issued.
    pub creation_time: u64,
    /// Unix seconds when it stops working; 0 = never.
    pub expiration_time: u64,
    /// Unix seconds of the last change (a use counted down).
    pub last_updated_time: u64,
    /// Metadata attached to tokens logged in with it.
    pub metadata: BTreeMap<String, String>,
    /// CIDR blocks a login with it must come from.
    pub cidr_list: Vec<String>,
    /// CIDR blocks its tokens are bound to (overrides the role's).
    pub token_bound_cidrs: Vec<String>,
}

impl SecretIdEntry {
    /// Whether it has expired at unix time `now`.
    pub fn expired(&self, now: u64) -> bool {
        self.expiration_time != 0 && now >= self.expiration_time
    }
}

/// Where a secret ID lives, found from its accessor.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AccessorEntry {
    /// The storage key of the secret ID entry.
    pub secret_id_key: String,
}

/// Hex SHA-256 of `text`: an identifier safe to use as a storage key segment.
pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

impl Role {
    /// A new role with Vault's defaults, a random HMAC key and no role ID yet.
    pub fn new() -> Result<Self, EngineError> {
        Ok(Self {
            hmac_key: hex::encode(random::bytes(ROLE_KEY_BYTES)?),
            bind_secret_id: true,
            ..Self::default()
        })
    }

    /// Hex HMAC-SHA-256 of `text` under this role's key.
    fn hmac(&self, text: &str) -> Result<String, EngineError> {
        let key = hex::decode(&self.hmac_key).map_err(|_| corrupt("role HMAC key"))?;
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key)
            .map_err(|_| corrupt("role HMAC key"))?;
        mac.update(text.as_bytes());
        Ok(hex::encode(mac.finalize().into_bytes()))
    }

    /// The folder holding the secret IDs of this role (named `name`).
    pub fn secret_id_folder(&self, name: &str) -> Result<String, EngineError> {
        Ok(format!("{SECRET_ID_PREFIX}{}/", self.hmac(name)?))
    }

    /// The storage key of `secret_id` of this role (named `name`).
    pub fn secret_id_key(&self, name: &str, secret_id: &str) -> Result<String, EngineError> {
        Ok(format!(
            "{}{}",
            self.secret_id_folder(name)?,
            self.hmac(secret_id)?
        ))
    }
}

fn corrupt(what: &str) -> EngineError {
    log::error(&format!("approle: a stored {what} is corrupt"));
    EngineError::Internal("a stored entry is corrupt (details in the server log)".to_string())
}

/// The storage key of role `name`.
pub fn role_key(name: &str) -> String {
    format!("{ROLE_PREFIX}{name}")
}

/// The storage key of the index entry of `role_id`.
pub fn role_id_key(role_id: &str) -> String {
    format!("{ROLE_ID_PREFIX}{}", sha256_hex(role_id))
}

/// The storage key of the accessor entry of `accessor`.
pub fn accessor_key(accessor: &str) -> String {
    format!("{ACCESSOR_PREFIX}{}", sha256_hex(accessor))
}

/// Role `name`, if it exists.
pub fn role(name: &str) -> Result<Option<Role>, EngineError> {
    storage::get_json(&role_key(name))
}

/// Role `name`, or a 404 naming it.
pub fn existing_role(name: &str) -> Result<Role, EngineError> {
    role(name)?.ok_or_else(|| EngineError::NotFound(format!("role {name:?} does not exist")))
}

/// The role that owns `role_id`, with its name; `None` if no role does.
pub fn role_by_id(role_id: &str) -> Result<Option<(String, Role)>, EngineError> {
    let Some(index) = storage::get_json::<RoleIdIndex>(&role_id_key(role_id))? else {
        return Ok(None);
    };
    // The index and the role are written in one commit; a role whose ID has since
    // changed does not answer to the old one.
    Ok(role(&index.name)?
        .filter(|role| role.role_id == role_id)
        .map(|role| (index.name, role)))
}

/// A secret ID entry as stored: its raw bytes (the expectation of a conditional write)
/// and its decoded value.
pub fn secret_id_entry(key: &str) -> Result<Option<(Vec<u8>, SecretIdEntry)>, EngineError> {
    let Some(raw) = storage::get(key)? else {
        return Ok(None);
    };
    let entry = serde_json::from_slice(&raw).map_err(|_| corrupt("secret ID entry"))?;
    Ok(Some((raw, entry)))
}

/// Removes the secret ID at `key` and its accessor in one commit, whatever logins do
/// meanwhile; `false` if it was already gone.
pub fn remove_secret_id(key: &str) -> Result<bool, EngineError> {
    for _ in 0..MAX_SWAP_ATTEMPTS {
        let Some((raw, entry)) = secret_id_entry(key)? else {
            return Ok(false);
        };
        let mut batch = Batch::new();
        batch
            .delete(key)
            .delete(&accessor_key(&entry.secret_id_accessor));
        if batch.commit_if(key, Some(&raw))? {
            return Ok(true);
        }
    }
    Err(busy())
}

/// The error for a conditional update that kept losing races.
pub fn busy() -> EngineError {
    EngineError::Upstream(
        "the secret ID is being changed by many requests at once; retry".to_string(),
    )
}

/// A random identifier in UUID v4 form (secret IDs, accessors, role IDs), as Vault's.
pub fn random_uuid() -> Result<String, EngineError> {
    let mut bytes = random::bytes(16)?;
    if let Some(version) = bytes.get_mut(6) {
        *version = (*version & 0x0f) | 0x40;
    }
    if let Some(variant) = bytes.get_mut(8) {
        *variant = (*variant & 0x3f) | 0x80;
    }
    let hex = hex::encode(&bytes);
    let part = |range: std::ops::Range<usize>| hex.get(range).unwrap_or_default().to_string();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        part(0..8),
        part(8..12),
        part(12..16),
        part(16..20),
        part(20..32)
    ))
}
