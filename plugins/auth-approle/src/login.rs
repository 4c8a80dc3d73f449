//! `POST login` and the renewal check of the tokens it vouched for.
//!
//! A wrong role ID, a wrong or expired secret ID and a secret ID of another role all get
//! the same answer, [`INVALID_CREDENTIALS`]. A secret ID with limited uses is counted
//! down with a conditional write on its entry, retried while other logins win the race,
//! so a secret ID with `n` uses logs in at most `n` times however many logins run at once.

use coffer_sdk::auth::cidr_contains;
use coffer_sdk::prelude::*;
use coffer_sdk::storage::Batch;
use serde::{Deserialize, Serialize};

use crate::INVALID_CREDENTIALS;
use crate::store::{
    MAX_SWAP_ATTEMPTS, Role, SecretIdEntry, accessor_key, busy, remove_secret_id, role, role_by_id,
    secret_id_entry,
};

/// What a login's token carries back to [`renew`].
#[derive(Serialize, Deserialize)]
struct LoginData {
    role_name: String,
    role_id: String,
}

/// `POST login` with `role_id` and `secret_id`.
pub fn login(req: &Request) -> Result<Response, EngineError> {
    let role_id = req.string("role_id").unwrap_or_default().trim();
    if role_id.is_empty() {
        return Err(invalid("missing role_id"));
    }
    let Some((name, role)) = role_by_id(role_id)? else {
        return Err(invalid(INVALID_CREDENTIALS));
    };
    let secret = if role.bind_secret_id {
        let secret_id = req.string("secret_id").unwrap_or_default().trim();
        if secret_id.is_empty() {
            return Err(invalid("missing secret_id"));
        }
        Some(use_secret_id(&role, &name, secret_id, &req.remote_address)?)
    } else {
        None
    };
    if !role.secret_id_bound_cidrs.is_empty()
        && !from_any(&req.remote_address, &role.secret_id_bound_cidrs)
    {
        return Err(EngineError::InvalidRequest(format!(
            "source address {:?} unauthorized by CIDR restrictions on the role",
            req.remote_address
        )));
    }
    let mut auth = role.token.auth();
    let mut metadata = secret
        .as_ref()
        .map(|entry| entry.metadata.clone())
        .unwrap_or_default();
    metadata.insert("role_name".to_string(), name.clone());
    auth.metadata = metadata.into_iter().collect();
    if let Some(entry) = secret.filter(|entry| !entry.token_bound_cidrs.is_empty()) {
        auth.bound_cidrs = entry.token_bound_cidrs;
    }
    auth.alias_name = role.role_id.clone();
    auth.internal_data = serde_json::to_string(&LoginData {
        role_name: name,
        role_id: role.role_id,
    })
    .map_err(|e| EngineError::Internal(e.to_string()))?;
    Ok(respond::login(auth))
}

/// Checks `secret_id` of role `name` for a login from `remote` and takes one of its
/// uses; returns the entry as it was before. An expired secret ID is removed.
fn use_secret_id(
    role: &Role,
    name: &str,
    secret_id: &str,
    remote: &str,
) -> Result<SecretIdEntry, EngineError> {
    let key = role.secret_id_key(name, secret_id)?;
    let now = time::unix_now()?;
    for _ in 0..MAX_SWAP_ATTEMPTS {
        let Some((raw, entry)) = secret_id_entry(&key)? else {
            return Err(invalid(INVALID_CREDENTIALS));
        };
        if entry.expired(now) {
            remove_secret_id(&key)?;
            return Err(invalid(INVALID_CREDENTIALS));
        }
        // Checked before a use is taken: a refused login does not spend one.
        if !entry.cidr_list.is_empty() && !from_any(remote, &entry.cidr_list) {
            return Err(EngineError::InvalidRequest(format!(
                "source address {remote:?} unauthorized by CIDR restrictions on the secret ID"
            )));
        }
        let mut batch = Batch::new();
        match entry.secret_id_num_uses {
            0 => return Ok(entry),
            1 => {
                batch
                    .delete(&key)
                    .delete(&accessor_key(&entry.secret_id_accessor));
            }
            left => {
                let next = SecretIdEntry {
                    secret_id_num_uses: left - 1,
                    last_updated_time: now,
                    ..entry.clone()
                };
                batch.put_json(&key, &next)?;
            }
        }
        if batch.commit_if(&key, Some(&raw))? {
            return Ok(entry);
        }
    }
    Err(busy())
}

/// Whether `remote` lies in one of `cidrs`; an unknown address lies in none.
fn from_any(remote: &str, cidrs: &[String]) -> bool {
    cidrs.iter().any(|cidr| cidr_contains(cidr, remote))
}

/// The renewal check of a login's token: its role must still exist with the role ID it
/// logged in with (Vault refuses the renewal of a deleted role's tokens).
pub fn renew(lease: &LeaseRef) -> Result<(), EngineError> {
    let login: LoginData = serde_json::from_str(&lease.internal_data).map_err(|_| {
        EngineError::PermissionDenied("this token was not issued by an AppRole login".to_string())
    })?;
    match role(&login.role_name)? {
        None => Err(EngineError::PermissionDenied(format!(
            "role {:?} does not exist during renewal",
            login.role_name
        ))),
        Some(role) if role.role_id != login.role_id => Err(EngineError::PermissionDenied(format!(
            "the role ID of role {:?} changed since this token logged in",
            login.role_name
        ))),
        Some(_) => Ok(()),
    }
}

fn invalid(message: &str) -> EngineError {
    EngineError::InvalidRequest(message.to_string())
}
