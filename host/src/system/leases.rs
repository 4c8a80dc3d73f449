//! `sys/leases/*`: lookup, renew, revoke (one, by prefix, forced), the irrevocable list.

use std::sync::Arc;

use super::*;
use crate::lease::{self};

/// Most leases listed by one irrevocable-lease query.
pub(crate) const MAX_IRREVOCABLE_LISTED: usize = 10_000;

pub(crate) fn lease_id_from(call: &Call, suffix: &str) -> Option<String> {
    match call.input.get("lease_id") {
        Some(Value::String(id)) if !id.is_empty() => Some(id.trim_start_matches('/').to_string()),
        _ if !suffix.is_empty() => Some(suffix.to_string()),
        _ => None,
    }
}

pub(crate) async fn leases(core: &Arc<Core>, call: &Call, rest: &str) -> Result<Reply, ApiError> {
    let (action, suffix) = match rest.strip_prefix("leases/") {
        Some(tail) => tail.split_once('/').unwrap_or((tail, "")),
        None => ("", ""),
    };
    match (call.op, action) {
        (Op::Read, "") => {
            let kind = call
                .query
                .iter()
                .find(|(k, _)| k == "type")
                .map(|(_, v)| v.as_str());
            if kind != Some("irrevocable") {
                return Err(ApiError::bad("only type=irrevocable is supported here"));
            }
            let entries = lease::irrevocable(core, MAX_IRREVOCABLE_LISTED)?;
            let leases: Vec<Value> = entries
                .iter()
                .map(|e| {
                    json!({
                        "lease_id": e.id,
                        "mount_id": e.mount,
                        "error": e.last_error,
                        "revoke_attempts": e.revoke_attempts,
                        "expire_time": fields::rfc3339(e.expire_ms / 1000),
                    })
                })
                .collect();
            Ok(Reply::Envelope(Envelope::sys(
                json!({ "lease_count": leases.len(), "leases": leases }),
            )))
        }
        (Op::Write, "renew") => {
            let id = lease_id_from(call, suffix)
                .ok_or_else(|| ApiError::bad("lease_id must be specified"))?;
            let increment = match call.input.get("increment") {
                None | Some(Value::Null) => 0,
                Some(value) => {
                    fields::duration(value).map_err(|e| ApiError::bad(format!("increment: {e}")))?
                }
            };
            let (entry, warnings) = lease::renew(core, &id, increment).await?;
            Ok(Reply::Envelope(Envelope {
                lease_id: entry.id.clone(),
                lease_duration: entry.ttl(),
                renewable: entry.renewable,
                warnings,
                mount_type: "system".to_string(),
                ..Envelope::default()
            }))
        }
        (Op::Write, "revoke") => {
            let id = lease_id_from(call, suffix)
                .ok_or_else(|| ApiError::bad("lease_id must be specified"))?;
            lease::revoke(core, &id, false).await?;
            Ok(Reply::Empty(StatusCode::NO_CONTENT))
        }
        (Op::Write, "revoke-prefix") | (Op::Write, "revoke-force") => {
            if suffix.is_empty() {
                return Err(ApiError::bad(
                    "a prefix is required, e.g. sys/leases/revoke-prefix/database/creds/role",
                ));
            }
            let prefix = if call.path.ends_with('/') {
                format!("{suffix}/")
            } else {
                suffix.to_string()
            };
            lease::revoke_prefix(core, &prefix, action == "revoke-force").await?;
            // Login tokens are tracked as tokens, not lease entries: revoked here too.
            lease::revoke_login_tokens(core, &prefix).await?;
            Ok(Reply::Empty(StatusCode::NO_CONTENT))
        }
        (Op::Write, "lookup") => {
            let id =
                lease_id_from(call, suffix).ok_or_else(|| ApiError::bad("missing lease id"))?;
            let entry = lease::lookup(core, &id)?.ok_or_else(|| ApiError::bad("invalid lease"))?;
            Ok(Reply::Envelope(Envelope::sys(json!({
                "id": entry.id,
                "issue_time": fields::rfc3339(entry.issue_time),
                "expire_time": fields::rfc3339(entry.expire_ms / 1000),
                "last_renewal": entry.last_renewal.map(fields::rfc3339),
                "renewable": entry.renewable,
                "ttl": entry.ttl(),
                "irrevocable": entry.irrevocable,
            }))))
        }
        (Op::List, "lookup") => {
            let keys = lease::list(core, suffix)?;
            if keys.is_empty() {
                return Err(ApiError::not_found());
            }
            Ok(Reply::Envelope(Envelope::sys(json!({ "keys": keys }))))
        }
        _ => Err(ApiError::new(StatusCode::NOT_FOUND, "unsupported path")),
    }
}
