//! Secret IDs: issuing them (`role/<name>/secret-id`, `custom-secret-id`), listing their
//! accessors, looking them up and destroying them by secret ID or by accessor, and
//! `tidy/secret-id`. A secret ID is returned once, in the answer that issues it; every
//! later answer names it by its accessor.

use std::collections::BTreeMap;

use coffer_sdk::auth::cidr_contains;
use coffer_sdk::prelude::*;
use coffer_sdk::storage::Batch;

use crate::role::cidr_list;
use crate::store::{
    ACCESSOR_PREFIX, AccessorEntry, LAST_TIDY, Role, SECRET_ID_PREFIX, SecretIdEntry, accessor_key,
    existing_role, random_uuid, remove_secret_id, secret_id_entry,
};

/// Most metadata pairs on one secret ID: the host takes 64 per login, and the login adds
/// `role_name`.
const MAX_METADATA_PAIRS: usize = 63;
/// Longest metadata key (Vault's bound).
const MAX_METADATA_KEY_BYTES: usize = 128;
/// Longest metadata value (Vault's bound).
const MAX_METADATA_VALUE_BYTES: usize = 512;
/// Longest custom secret ID (it is HMACed for storage; this bounds the work).
const MAX_SECRET_ID_BYTES: usize = 4096;
/// Seconds between automatic tidies (Vault tidies secret IDs once a minute too).
const PERIODIC_TIDY_SECONDS: u64 = 60;
/// How Vault shows "never" for a secret ID without expiry (Go's zero time).
const NEVER: &str = "0001-01-01T00:00:00Z";

/// The fields of an issuing write (`metadata` is read from the body as it comes: a JSON
/// object, or a string holding one, as Vault takes it).
pub fn issue_fields() -> Vec<FieldSchema> {
    vec![
        Field::comma_strings(
            "cidr_list",
            "CIDR blocks a login with this secret ID must come from (within the role's).",
        ),
        Field::comma_strings(
            "token_bound_cidrs",
            "CIDR blocks its tokens may be used from (within the role's).",
        ),
        Field::duration(
            "ttl",
            "Lifetime of the secret ID (at most the role's secret_id_ttl).",
        ),
        Field::int(
            "num_uses",
            "Uses of the secret ID (at most the role's secret_id_num_uses).",
        ),
    ]
}

/// `POST role/<name>/secret-id`: issues a random secret ID.
pub fn generate(req: &Request) -> Result<Response, EngineError> {
    issue(req, &random_uuid()?)
}

/// `POST role/<name>/custom-secret-id`: registers the caller's secret ID.
pub fn custom(req: &Request) -> Result<Response, EngineError> {
    let secret_id = req.require_string("secret_id")?.trim().to_string();
    if secret_id.is_empty() {
        return Err(invalid("missing secret_id".to_string()));
    }
    if secret_id.len() > MAX_SECRET_ID_BYTES {
        return Err(invalid(format!(
            "secret_id is longer than {MAX_SECRET_ID_BYTES} bytes"
        )));
    }
    issue(req, &secret_id)
}

/// Stores `secret_id` for the request's role with the request's limits (each within the
/// role's), and answers with it and its accessor.
fn issue(req: &Request, secret_id: &str) -> Result<Response, EngineError> {
    let name = req.require_string("role_name")?;
    let role = existing_role(name)?;
    if !role.bind_secret_id {
        return Err(invalid("bind_secret_id is not set on the role".to_string()));
    }
    let cidrs = cidr_list("cidr_list", req.strings("cidr_list").unwrap_or_default())?;
    within(
        "cidr_list",
        &cidrs,
        "secret_id_bound_cidrs",
        &role.secret_id_bound_cidrs,
    )?;
    let token_cidrs = cidr_list(
        "token_bound_cidrs",
        req.strings("token_bound_cidrs").unwrap_or_default(),
    )?;
    within(
        "token_bound_cidrs",
        &token_cidrs,
        "token_bound_cidrs",
        &role.token.token_bound_cidrs,
    )?;
    let num_uses = num_uses(req, &role)?;
    let ttl = ttl(req, &role)?;
    let metadata = metadata(&req.raw_body)?;
    let now = time::unix_now()?;
    let entry = SecretIdEntry {
        secret_id_accessor: random_uuid()?,
        secret_id_num_uses: num_uses,
        secret_id_ttl: ttl,
        creation_time: now,
        expiration_time: if ttl == 0 { 0 } else { now.saturating_add(ttl) },
        last_updated_time: now,
        metadata,
        cidr_list: cidrs,
        token_bound_cidrs: token_cidrs,
    };
    let key = role.secret_id_key(name, secret_id)?;
    let mut batch = Batch::new();
    batch.put_json(&key, &entry)?.put_json(
        &accessor_key(&entry.secret_id_accessor),
        &AccessorEntry {
            secret_id_key: key.clone(),
        },
    )?;
    if !batch.commit_if(&key, None)? {
        return Err(invalid("secret_id is already registered".to_string()));
    }
    Ok(respond::data(json!({
        "secret_id": secret_id,
        "secret_id_accessor": entry.secret_id_accessor,
        "secret_id_ttl": entry.secret_id_ttl,
        "secret_id_num_uses": entry.secret_id_num_uses,
    })))
}

/// `LIST role/<name>/secret-id`: the accessors of the role's secret IDs.
pub fn list(req: &Request) -> Result<Response, EngineError> {
    let name = req.require_string("role_name")?;
    let folder = existing_role(name)?.secret_id_folder(name)?;
    let mut accessors = Vec::new();
    for leaf in storage::list(&folder)? {
        if let Some((_, entry)) = secret_id_entry(&format!("{folder}{leaf}"))? {
            accessors.push(entry.secret_id_accessor);
        }
    }
    respond::list(accessors)
}

/// `POST role/<name>/secret-id/lookup`: a secret ID's properties; no data (204) when the
/// role has no such secret ID, as Vault answers.
pub fn lookup(req: &Request) -> Result<Response, EngineError> {
    let key = key_of_secret_id(req)?;
    Ok(match secret_id_entry(&key)? {
        Some((_, entry)) => respond::data(describe(&entry)),
        None => respond::empty(),
    })
}

/// `POST role/<name>/secret-id/destroy`: removes a secret ID (succeeds if it is gone).
pub fn destroy(req: &Request) -> Result<Response, EngineError> {
    remove_secret_id(&key_of_secret_id(req)?)?;
    Ok(respond::empty())
}

/// `POST role/<name>/secret-id-accessor/lookup`.
pub fn lookup_accessor(req: &Request) -> Result<Response, EngineError> {
    let (_, secret_id_key) = by_accessor(req)?;
    match secret_id_entry(&secret_id_key)? {
        Some((_, entry)) => Ok(respond::data(describe(&entry))),
        None => Err(no_accessor(req)),
    }
}

/// `POST role/<name>/secret-id-accessor/destroy`.
pub fn destroy_accessor(req: &Request) -> Result<Response, EngineError> {
    let (accessor_key, secret_id_key) = by_accessor(req)?;
    if !remove_secret_id(&secret_id_key)? {
        // An accessor whose secret ID is gone (a crash between the two): remove it too.
        storage::delete(&accessor_key)?;
    }
    Ok(respond::empty())
}

/// `POST tidy/secret-id`: removes expired secret IDs, and accessors whose secret ID is
/// gone; answers with how many of each.
pub fn tidy_request(_req: &Request) -> Result<Response, EngineError> {
    let (secret_ids, accessors) = tidy()?;
    Ok(respond::data(json!({
        "secret_ids_removed": secret_ids,
        "accessors_removed": accessors,
    })))
}

/// [`tidy`] from the host's periodic maintenance (every few seconds), once per
/// [`PERIODIC_TIDY_SECONDS`], the first time that long after the mount's first call: a
/// tidy reads every secret ID entry.
pub fn periodic_tidy() -> Result<(), EngineError> {
    let now = time::unix_now()?;
    let last: Option<u64> = storage::get_json(LAST_TIDY)?;
    let due = last.is_some_and(|last| now >= last.saturating_add(PERIODIC_TIDY_SECONDS));
    if last.is_some() && !due {
        return Ok(());
    }
    storage::put_json(LAST_TIDY, &now)?;
    if due { tidy().map(|_| ()) } else { Ok(()) }
}

/// Removes expired secret IDs (with their accessors) and orphaned accessors; returns how
/// many of each.
pub fn tidy() -> Result<(usize, usize), EngineError> {
    let now = time::unix_now()?;
    let mut secret_ids = 0;
    for folder in storage::list(SECRET_ID_PREFIX)? {
        let folder = format!("{SECRET_ID_PREFIX}{folder}");
        if !folder.ends_with('/') {
            continue;
        }
        for leaf in storage::list(&folder)? {
            let key = format!("{folder}{leaf}");
            let expired = secret_id_entry(&key)?.is_some_and(|(_, entry)| entry.expired(now));
            if expired && remove_secret_id(&key)? {
                secret_ids += 1;
            }
        }
    }
    // An accessor and its secret ID are written in one commit, so an accessor seen here
    // whose secret ID is missing was left by a crash or is being destroyed right now.
    let mut accessors = 0;
    for leaf in storage::list(ACCESSOR_PREFIX)? {
        let key = format!("{ACCESSOR_PREFIX}{leaf}");
        if let Some(entry) = storage::get_json::<AccessorEntry>(&key)?
            && storage::get(&entry.secret_id_key)?.is_none()
        {
            storage::delete(&key)?;
            accessors += 1;
        }
    }
    Ok((secret_ids, accessors))
}

/// A secret ID entry as Vault's lookups show it.
fn describe(entry: &SecretIdEntry) -> Value {
    let expiration = match entry.expiration_time {
        0 => NEVER.to_string(),
        at => time::rfc3339(at),
    };
    json!({
        "cidr_list": entry.cidr_list,
        "creation_time": time::rfc3339(entry.creation_time),
        "expiration_time": expiration,
        "last_updated_time": time::rfc3339(entry.last_updated_time),
        "metadata": entry.metadata,
        "secret_id_accessor": entry.secret_id_accessor,
        "secret_id_num_uses": entry.secret_id_num_uses,
        "secret_id_ttl": entry.secret_id_ttl,
        "token_bound_cidrs": entry.token_bound_cidrs,
    })
}

/// The storage key of the request's `secret_id` under its role.
fn key_of_secret_id(req: &Request) -> Result<String, EngineError> {
    let name = req.require_string("role_name")?;
    let secret_id = req.require_string("secret_id")?.trim();
    existing_role(name)?.secret_id_key(name, secret_id)
}

/// The accessor entry's key and the secret ID key it points at, for the request's
/// `secret_id_accessor`, if it belongs to the request's role.
fn by_accessor(req: &Request) -> Result<(String, String), EngineError> {
    let name = req.require_string("role_name")?;
    let accessor = req.require_string("secret_id_accessor")?.trim();
    let folder = existing_role(name)?.secret_id_folder(name)?;
    let key = accessor_key(accessor);
    match storage::get_json::<AccessorEntry>(&key)? {
        Some(entry) if entry.secret_id_key.starts_with(&folder) => Ok((key, entry.secret_id_key)),
        _ => Err(no_accessor(req)),
    }
}

fn no_accessor(req: &Request) -> EngineError {
    EngineError::NotFound(format!(
        "failed to find accessor entry for secret_id_accessor: {:?}",
        req.string("secret_id_accessor").unwrap_or_default()
    ))
}

/// The secret ID's uses: the request's `num_uses`, at most the role's limit (a role
/// limit forbids unlimited), or the role's.
fn num_uses(req: &Request, role: &Role) -> Result<u64, EngineError> {
    let Some(wanted) = req.int("num_uses") else {
        return Ok(role.secret_id_num_uses);
    };
    let wanted =
        u64::try_from(wanted).map_err(|_| invalid("num_uses cannot be negative".to_string()))?;
    if role.secret_id_num_uses > 0 && (wanted == 0 || wanted > role.secret_id_num_uses) {
        return Err(invalid(
            "num_uses cannot be higher than the role's secret_id_num_uses".to_string(),
        ));
    }
    Ok(wanted)
}

/// The secret ID's lifetime: the request's `ttl`, at most the role's, or the role's.
fn ttl(req: &Request, role: &Role) -> Result<u64, EngineError> {
    match req.duration("ttl") {
        None | Some(0) => Ok(role.secret_id_ttl),
        Some(wanted) if role.secret_id_ttl > 0 && wanted > role.secret_id_ttl => Err(invalid(
            "ttl cannot be longer than the role's secret_id_ttl".to_string(),
        )),
        Some(wanted) => Ok(wanted),
    }
}

/// Refuses a block of `cidrs` (field `field`) that lies outside every block of the role's
/// `bounds` (field `bound_field`), when the role has any.
fn within(
    field: &str,
    cidrs: &[String],
    bound_field: &str,
    bounds: &[String],
) -> Result<(), EngineError> {
    if bounds.is_empty() {
        return Ok(());
    }
    match cidrs
        .iter()
        .find(|cidr| !bounds.iter().any(|bound| cidr_within(cidr, bound)))
    {
        Some(outside) => Err(invalid(format!(
            "{field}: {outside:?} is not within the role's {bound_field}"
        ))),
        None => Ok(()),
    }
}

/// Whether every address of block `inner` lies in block `outer`: `outer` contains
/// `inner`'s base address and is at most as long a prefix.
fn cidr_within(inner: &str, outer: &str) -> bool {
    let (base, _) = inner.split_once('/').unwrap_or((inner, ""));
    cidr_contains(outer, base) && prefix_len(outer) <= prefix_len(inner)
}

/// The prefix length of a block (an address alone is a full-length prefix).
fn prefix_len(cidr: &str) -> u32 {
    match cidr.split_once('/') {
        Some((_, bits)) => bits.trim().parse().unwrap_or(u32::MAX),
        None if cidr.contains(':') => 128,
        None => 32,
    }
}

/// The `metadata` of the request body: absent, a JSON object of strings, or a string
/// holding one (hvac and the CLI send it that way), bounded like Vault's.
fn metadata(raw_body: &str) -> Result<BTreeMap<String, String>, EngineError> {
    let bad =
        || invalid("failed to parse metadata: expected a JSON object of string values".to_string());
    let body: Value = serde_json::from_str(raw_body).map_err(|_| bad())?;
    let metadata: BTreeMap<String, String> = match body.get("metadata") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::String(text)) if text.trim().is_empty() => BTreeMap::new(),
        Some(Value::String(text)) => serde_json::from_str(text).map_err(|_| bad())?,
        Some(object @ Value::Object(_)) => {
            serde_json::from_value(object.clone()).map_err(|_| bad())?
        }
        Some(_) => return Err(bad()),
    };
    if metadata.len() > MAX_METADATA_PAIRS {
        return Err(invalid(format!(
            "metadata: more than {MAX_METADATA_PAIRS} pairs"
        )));
    }
    if let Some((key, _)) = metadata.iter().find(|(key, value)| {
        key.is_empty()
            || key.len() > MAX_METADATA_KEY_BYTES
            || value.len() > MAX_METADATA_VALUE_BYTES
    }) {
        return Err(invalid(format!(
            "metadata: key {key:?} is empty, longer than {MAX_METADATA_KEY_BYTES} bytes, or its value is longer than {MAX_METADATA_VALUE_BYTES}"
        )));
    }
    Ok(metadata)
}

fn invalid(message: String) -> EngineError {
    EngineError::InvalidRequest(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_within_blocks() {
        assert!(cidr_within("10.1.0.0/16", "10.0.0.0/8"));
        assert!(cidr_within("10.1.2.3", "10.0.0.0/8"));
        assert!(!cidr_within("10.0.0.0/8", "10.1.0.0/16"));
        assert!(!cidr_within("192.168.0.0/16", "10.0.0.0/8"));
        assert!(cidr_within("::1", "::1/128"));
    }

    #[test]
    fn metadata_as_string_or_object_and_bounded() -> Result<(), EngineError> {
        let from_string = metadata(r#"{"metadata": "{\"team\": \"web\"}"}"#)?;
        let from_object = metadata(r#"{"metadata": {"team": "web"}}"#)?;
        assert_eq!(from_string, from_object);
        assert_eq!(from_object.get("team").map(String::as_str), Some("web"));
        assert!(metadata("{}")?.is_empty());
        assert!(metadata(r#"{"metadata": {"n": 1}}"#).is_err());
        assert!(metadata(r#"{"metadata": "not json"}"#).is_err());
        let many: serde_json::Map<String, Value> =
            (0..64).map(|i| (format!("k{i}"), json!("v"))).collect();
        assert!(metadata(&json!({ "metadata": many }).to_string()).is_err());
        Ok(())
    }
}
