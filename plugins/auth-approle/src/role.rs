//! Roles: `role/<name>` (create, read, update, delete), `LIST role`, and the role's role
//! ID at `role/<name>/role-id`. A role ID is unique across roles: the index entry that
//! maps it to its role is claimed with a conditional write, so two roles racing for one
//! custom role ID cannot both get it.

use coffer_sdk::auth::valid_cidr;
use coffer_sdk::prelude::*;
use coffer_sdk::storage::Batch;

use crate::store::{
    MAX_SWAP_ATTEMPTS, Role, RoleIdIndex, accessor_key, busy, existing_role, random_uuid, role,
    role_by_id, role_id_key, role_key, secret_id_entry,
};

/// Longest role name: names are storage key segments and appear in token metadata.
const MAX_ROLE_NAME_BYTES: usize = 256;
/// Longest custom role ID (it is hashed for storage; this bounds the work and memory).
const MAX_ROLE_ID_BYTES: usize = 4096;
/// Most CIDR blocks in one list (the host's bound on a token's `bound_cidrs`).
pub const MAX_CIDRS: usize = 64;
/// Secret IDs removed per commit when a role is deleted (two changes each, within the
/// host's 256 changes per `write-all`).
const DELETE_BATCH: usize = 128;

/// The fields of `role/<name>`: AppRole's own, then the shared `token_*` set.
pub fn fields() -> Vec<FieldSchema> {
    let mut fields = vec![
        Field::string(
            "role_id",
            "A custom role ID for the role (default: a random UUID).",
        ),
        Field::bool(
            "bind_secret_id",
            "Whether a login must present a secret ID (default true).",
        ),
        Field::comma_strings(
            "secret_id_bound_cidrs",
            "CIDR blocks a login with any secret ID of this role must come from.",
        ),
        Field::comma_strings("bound_cidr_list", "Deprecated: use secret_id_bound_cidrs."),
        Field::int(
            "secret_id_num_uses",
            "Uses of each secret ID issued for this role (0 = unlimited).",
        ),
        Field::duration(
            "secret_id_ttl",
            "Lifetime of each secret ID issued for this role (0 = no expiry).",
        ),
        Field::bool(
            "local_secret_ids",
            "Accepted for Vault compatibility; Coffer does not replicate.",
        ),
    ];
    fields.extend(coffer_sdk::auth::token_fields());
    fields
}

/// `LIST role`.
pub fn list(_req: &Request) -> Result<Response, EngineError> {
    respond::list(storage::list(crate::store::ROLE_PREFIX)?)
}

/// `GET role/<name>`: Vault's fields, without the role ID (that has its own path).
pub fn read(req: &Request) -> Result<Response, EngineError> {
    let name = req.require_string("role_name")?;
    let Some(role) = role(name)? else {
        return Err(EngineError::NotFound(String::new()));
    };
    let mut data = role.token.to_json();
    for (key, value) in [
        ("bind_secret_id", json!(role.bind_secret_id)),
        ("secret_id_bound_cidrs", json!(role.secret_id_bound_cidrs)),
        ("secret_id_num_uses", json!(role.secret_id_num_uses)),
        ("secret_id_ttl", json!(role.secret_id_ttl)),
        ("local_secret_ids", json!(role.local_secret_ids)),
    ] {
        data.insert(key.to_string(), value);
    }
    Ok(respond::data(Value::Object(data)))
}

/// `POST role/<name>`: creates the role or updates the fields the request supplies.
pub fn write(req: &Request) -> Result<Response, EngineError> {
    let name = req.require_string("role_name")?;
    if name.len() > MAX_ROLE_NAME_BYTES {
        return Err(invalid(format!(
            "role name is longer than {MAX_ROLE_NAME_BYTES} bytes"
        )));
    }
    let custom_id = custom_role_id(req)?;
    for _ in 0..MAX_SWAP_ATTEMPTS {
        let stored = storage::get(&role_key(name))?;
        let mut role = match &stored {
            Some(raw) => serde_json::from_slice(raw)
                .map_err(|_| EngineError::Internal("a stored role is corrupt".to_string()))?,
            None => Role::new()?,
        };
        let old_role_id = role.role_id.clone();
        apply(&mut role, req)?;
        role.role_id = match (&custom_id, role.role_id.is_empty()) {
            (Some(id), _) => id.clone(),
            (None, true) => random_uuid()?,
            (None, false) => role.role_id,
        };
        if commit(name, stored.as_deref(), &old_role_id, &role)? {
            return Ok(respond::empty());
        }
    }
    Err(busy())
}

/// `DELETE role/<name>`: the role, its role ID and every secret ID issued for it.
pub fn delete(req: &Request) -> Result<Response, EngineError> {
    let name = req.require_string("role_name")?;
    let Some(role) = role(name)? else {
        return Ok(respond::empty());
    };
    let mut batch = Batch::new();
    batch.delete(&role_key(name));
    if role_by_id(&role.role_id)?.is_some_and(|(owner, _)| owner == name) {
        batch.delete(&role_id_key(&role.role_id));
    }
    batch.commit()?;
    // The role is gone, so no login can use these any more: a login that took a use just
    // before may write its entry back, but under a folder no role's key reaches.
    let folder = role.secret_id_folder(name)?;
    loop {
        let names = storage::list(&folder)?;
        if names.is_empty() {
            break;
        }
        for chunk in names.chunks(DELETE_BATCH) {
            let mut batch = Batch::new();
            for leaf in chunk {
                let key = format!("{folder}{leaf}");
                if let Some((_, entry)) = secret_id_entry(&key)? {
                    batch.delete(&accessor_key(&entry.secret_id_accessor));
                }
                batch.delete(&key);
            }
            batch.commit()?;
        }
    }
    Ok(respond::empty())
}

/// `GET role/<name>/role-id`.
pub fn read_role_id(req: &Request) -> Result<Response, EngineError> {
    let role = existing_role(req.require_string("role_name")?)?;
    Ok(respond::data(json!({ "role_id": role.role_id })))
}

/// `POST role/<name>/role-id`: sets a custom role ID, unique across roles.
pub fn write_role_id(req: &Request) -> Result<Response, EngineError> {
    let name = req.require_string("role_name")?;
    let Some(role_id) = custom_role_id(req)? else {
        return Err(invalid("missing role_id".to_string()));
    };
    for _ in 0..MAX_SWAP_ATTEMPTS {
        let Some(stored) = storage::get(&role_key(name))? else {
            return Err(EngineError::NotFound(format!(
                "role {name:?} does not exist"
            )));
        };
        let mut role: Role = serde_json::from_slice(&stored)
            .map_err(|_| EngineError::Internal("a stored role is corrupt".to_string()))?;
        let old_role_id = std::mem::replace(&mut role.role_id, role_id.clone());
        if commit(name, Some(&stored), &old_role_id, &role)? {
            return Ok(respond::empty());
        }
    }
    Err(busy())
}

/// The request's `role_id`, trimmed and bounded; `None` when not given.
fn custom_role_id(req: &Request) -> Result<Option<String>, EngineError> {
    match req.string("role_id").map(str::trim) {
        None | Some("") => Ok(None),
        Some(id) if id.len() > MAX_ROLE_ID_BYTES => Err(invalid(format!(
            "role_id is longer than {MAX_ROLE_ID_BYTES} bytes"
        ))),
        Some(id) => Ok(Some(id.to_string())),
    }
}

/// Applies the supplied role fields to `role`, refusing bad input before anything is
/// stored.
fn apply(role: &mut Role, req: &Request) -> Result<(), EngineError> {
    if let Some(bind) = req.bool("bind_secret_id") {
        role.bind_secret_id = bind;
    }
    if let Some(cidrs) = req
        .strings("secret_id_bound_cidrs")
        .or_else(|| req.strings("bound_cidr_list"))
    {
        role.secret_id_bound_cidrs = cidr_list("secret_id_bound_cidrs", cidrs)?;
    }
    if let Some(uses) = req.int("secret_id_num_uses") {
        role.secret_id_num_uses = u64::try_from(uses)
            .map_err(|_| invalid("secret_id_num_uses cannot be negative".to_string()))?;
    }
    if let Some(ttl) = req.duration("secret_id_ttl") {
        role.secret_id_ttl = ttl;
    }
    if let Some(local) = req.bool("local_secret_ids") {
        role.local_secret_ids = local;
    }
    role.token.update(req)?;
    if role.token.token_bound_cidrs.len() > MAX_CIDRS {
        return Err(invalid(format!(
            "token_bound_cidrs: more than {MAX_CIDRS} blocks"
        )));
    }
    if !role.bind_secret_id
        && role.secret_id_bound_cidrs.is_empty()
        && role.token.token_bound_cidrs.is_empty()
    {
        return Err(invalid(
            "at least one constraint should be enabled on the role".to_string(),
        ));
    }
    Ok(())
}

/// Parses a list of CIDR blocks named `field`: trimmed, empty entries dropped, each a
/// block or an address, at most [`MAX_CIDRS`].
pub fn cidr_list(field: &str, cidrs: &[String]) -> Result<Vec<String>, EngineError> {
    let cidrs: Vec<String> = cidrs
        .iter()
        .map(|cidr| cidr.trim().to_string())
        .filter(|cidr| !cidr.is_empty())
        .collect();
    if cidrs.len() > MAX_CIDRS {
        return Err(invalid(format!("{field}: more than {MAX_CIDRS} blocks")));
    }
    if let Some(bad) = cidrs.iter().find(|cidr| !valid_cidr(cidr)) {
        return Err(invalid(format!(
            "{field}: {bad:?} is not a CIDR block or an IP address"
        )));
    }
    Ok(cidrs)
}

/// Stores `role` (named `name`), which was `stored` before, in one commit with its role
/// ID index. When the role ID changes, the commit is conditional on the new ID's index
/// entry (unclaimed, or left behind by a role that no longer uses it), which makes role
/// IDs unique; otherwise on the role entry, so concurrent updates of the role do not
/// lose each other. `false`: the condition failed, read again and retry.
fn commit(
    name: &str,
    stored: Option<&[u8]>,
    old_role_id: &str,
    role: &Role,
) -> Result<bool, EngineError> {
    let mut batch = Batch::new();
    batch.put_json(&role_key(name), role)?;
    if role.role_id == old_role_id {
        return batch.commit_if(&role_key(name), stored);
    }
    if role_by_id(&role.role_id)?.is_some() {
        return Err(invalid("role_id already in use".to_string()));
    }
    let index_key = role_id_key(&role.role_id);
    let current = storage::get(&index_key)?;
    batch.put_json(
        &index_key,
        &RoleIdIndex {
            name: name.to_string(),
        },
    )?;
    if !old_role_id.is_empty() {
        batch.delete(&role_id_key(old_role_id));
    }
    batch.commit_if(&index_key, current.as_deref())
}

fn invalid(message: String) -> EngineError {
    EngineError::InvalidRequest(message)
}
