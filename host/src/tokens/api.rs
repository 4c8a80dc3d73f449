//! The native `auth/token/` backend: create (orphans, roles' rules, child limits), lookup,
//! renew and revoke of tokens, Vault's wire shapes for them. The store itself (hashing,
//! the parent tree, revocation) is [`crate::tokens`]; this module only speaks the API.

use std::sync::Arc;

use hyper::StatusCode;
use serde_json::{Value, json};

use crate::core::Core;
use crate::fields;
use crate::lease;
use crate::pipeline::{
    ApiError, Call, Envelope, LogicalBackend, Op, Reply, authenticate, require_root,
};
use crate::tokens::{TokenEntry, random_base62, unix_now};

/// The `auth/token/` backend.
pub struct TokenStore;

impl LogicalBackend for TokenStore {
    async fn handle(&self, core: &Arc<Core>, call: &Call, rest: &str) -> Result<Reply, ApiError> {
        token_api(core, call, rest).await
    }
}

pub(crate) fn auth_json(token: &str, entry: &TokenEntry) -> Value {
    let now = unix_now();
    let token_policies: Vec<&String> = entry.policies.iter().collect();
    json!({
        "client_token": token,
        "accessor": entry.accessor,
        "policies": entry.policies,
        "token_policies": token_policies,
        "identity_policies": [],
        "metadata": if entry.meta.is_empty() { Value::Null } else { json!(entry.meta) },
        "lease_duration": entry.ttl(now),
        "renewable": entry.renewable && entry.expire_time.is_some(),
        "entity_id": "",
        "token_type": "service",
        "orphan": entry.orphan,
        "mfa_requirement": null,
        "num_uses": entry.num_uses,
    })
}

pub(crate) fn token_data(token: &str, entry: &TokenEntry) -> Value {
    let now = unix_now();
    json!({
        "accessor": entry.accessor,
        "creation_time": entry.creation_time,
        "creation_ttl": entry.creation_ttl,
        "display_name": entry.display_name,
        "entity_id": "",
        "expire_time": entry.expire_time.map(fields::rfc3339),
        "explicit_max_ttl": entry.explicit_max_ttl,
        "id": token,
        "issue_time": fields::rfc3339(entry.creation_time),
        "meta": if entry.meta.is_empty() { Value::Null } else { json!(entry.meta) },
        "num_uses": entry.num_uses,
        "period": (entry.period > 0).then_some(entry.period),
        "orphan": entry.orphan,
        "path": entry.path,
        "policies": entry.policies,
        "renewable": entry.renewable && entry.expire_time.is_some(),
        "ttl": entry.ttl(now),
        "type": "service",
    })
}

pub(crate) fn auth_reply(token: &str, entry: &TokenEntry) -> Reply {
    Reply::Envelope(auth_envelope(token, entry))
}

pub(crate) fn auth_envelope(token: &str, entry: &TokenEntry) -> Envelope {
    Envelope {
        auth: Some(auth_json(token, entry)),
        mount_type: "token".to_string(),
        ..Envelope::default()
    }
}

pub(crate) async fn token_api(
    core: &Arc<Core>,
    call: &Call,
    rest: &str,
) -> Result<Reply, ApiError> {
    let (token, entry) = authenticate(call)?;
    let (token, entry) = (token.clone(), entry.clone());
    let input = &call.input;
    let string_field = |name: &str| -> Result<Option<String>, ApiError> {
        match input.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => fields::string(value)
                .map(Some)
                .map_err(|e| ApiError::bad(format!("{name}: {e}"))),
        }
    };
    match (call.op, rest) {
        (Op::Write, "create") | (Op::Write, "create-orphan") => {
            create_token(core, call, &entry, rest == "create-orphan").await
        }
        (Op::Read, "lookup-self") => Ok(Reply::Envelope(Envelope {
            data: Some(token_data(&token, &entry)),
            mount_type: "token".to_string(),
            ..Envelope::default()
        })),
        (Op::Write, "lookup") | (Op::Read, "lookup") => {
            let target = string_field("token")?.ok_or_else(|| ApiError::bad("missing token"))?;
            let found = core
                .tokens
                .lookup(&target)?
                .ok_or_else(|| ApiError::bad("bad token"))?;
            Ok(Reply::Envelope(Envelope {
                data: Some(token_data(&target, &found)),
                mount_type: "token".to_string(),
                ..Envelope::default()
            }))
        }
        (Op::Write, "renew-self") | (Op::Write, "renew") => {
            let target = if rest == "renew" {
                string_field("token")?.ok_or_else(|| ApiError::bad("missing token"))?
            } else {
                token.clone()
            };
            let increment = match input.get("increment") {
                None | Some(Value::Null) => 0,
                Some(value) => {
                    fields::duration(value).map_err(|e| ApiError::bad(format!("increment: {e}")))?
                }
            };
            let renewed = core.tokens.renew(
                &target,
                increment,
                core.token_ttls().1,
                lease::token_expiry_key,
            )?;
            Ok(auth_reply(&target, &renewed))
        }
        (Op::Write, "revoke-self") => {
            revoke_token(core, &token, false).await?;
            Ok(Reply::Empty(StatusCode::NO_CONTENT))
        }
        (Op::Write, "revoke") => {
            let target = string_field("token")?.ok_or_else(|| ApiError::bad("missing token"))?;
            revoke_token(core, &target, false).await?;
            Ok(Reply::Empty(StatusCode::NO_CONTENT))
        }
        (Op::Write, "revoke-orphan") => {
            let target = string_field("token")?.ok_or_else(|| ApiError::bad("missing token"))?;
            revoke_token(core, &target, true).await?;
            Ok(Reply::Empty(StatusCode::NO_CONTENT))
        }
        _ => Err(ApiError::new(StatusCode::NOT_FOUND, "unsupported path")),
    }
}

/// Revokes `token` and (unless `orphan_children`) its whole subtree, with their leases. The
/// work runs as its own task, so a client that goes away does not cut it short.
pub(crate) async fn revoke_token(
    core: &Arc<Core>,
    token: &str,
    orphan_children: bool,
) -> Result<(), ApiError> {
    let Some(accessor) = core.tokens.accessor_of(token)? else {
        return Ok(());
    };
    let core = core.clone();
    let task = tokio::spawn(async move {
        if orphan_children {
            core.tokens
                .remove_orphaning(&accessor, lease::token_expiry_key)?;
            lease::finish_token_revocations(&core, &[accessor], lease::Leases::Now).await
        } else {
            lease::revoke_token_tree(&core, &accessor, lease::Leases::Now).await
        }
    });
    task.await
        .map_err(|e| ApiError::internal(format!("token revocation failed: {e}")))??;
    Ok(())
}

pub(crate) async fn create_token(
    core: &Arc<Core>,
    call: &Call,
    parent: &TokenEntry,
    orphan: bool,
) -> Result<Reply, ApiError> {
    let input = &call.input;
    let flag = |name: &str, default: bool| -> Result<bool, ApiError> {
        match input.get(name) {
            None | Some(Value::Null) => Ok(default),
            Some(value) => {
                fields::boolean(value).map_err(|e| ApiError::bad(format!("{name}: {e}")))
            }
        }
    };
    let duration = |name: &str| -> Result<u64, ApiError> {
        match input.get(name) {
            None | Some(Value::Null) => Ok(0),
            Some(value) => {
                fields::duration(value).map_err(|e| ApiError::bad(format!("{name}: {e}")))
            }
        }
    };
    let mut policies: Vec<String> = match input.get("policies") {
        None | Some(Value::Null) => parent
            .policies
            .iter()
            .filter(|p| *p != "root" || parent.is_root())
            .cloned()
            .collect(),
        Some(value) => {
            fields::strings(value, true).map_err(|e| ApiError::bad(format!("policies: {e}")))?
        }
    };
    if !flag("no_default_policy", false)? && !policies.iter().any(|p| p == "default" || p == "root")
    {
        policies.push("default".to_string());
    }
    policies.sort();
    policies.dedup();
    if policies.len() > crate::tokens::MAX_POLICIES {
        return Err(ApiError::bad("too many policies"));
    }
    if !parent.is_root()
        && policies
            .iter()
            .any(|p| p != "default" && !parent.policies.contains(p))
    {
        return Err(ApiError::bad("child policies must be subset of parent"));
    }
    if parent.num_uses > 0 || parent.uses_spent {
        return Err(ApiError::bad(
            "restricted use token cannot generate child tokens",
        ));
    }
    let no_parent = orphan || flag("no_parent", false)?;
    let period = duration("period")?;
    if no_parent || period > 0 {
        // Tokens outside the tree, or renewable forever, are an operator's to make.
        require_root(parent)?;
    }
    if let Some(kind) = input.get("type").and_then(Value::as_str)
        && kind != "service"
        && kind != "default"
    {
        return Err(ApiError::bad(format!(
            "token type {kind:?} is not supported; Coffer issues service tokens"
        )));
    }
    let num_uses = match input.get("num_uses") {
        None | Some(Value::Null) => 0,
        Some(value) => {
            let uses = fields::int(value).map_err(|e| ApiError::bad(format!("num_uses: {e}")))?;
            u64::try_from(uses).map_err(|_| ApiError::bad("num_uses cannot be negative"))?
        }
    };
    let now = unix_now();
    let limits = TokenLimits {
        ttl: duration("ttl")?,
        explicit_max_ttl: duration("explicit_max_ttl")?,
        period,
        root: policies.iter().any(|p| p == "root"),
        mount_ttls: core.token_ttls(),
        parent_deadline: if no_parent { None } else { parent.deadline() },
    };
    let (ttl, explicit_max_ttl, warnings) = limits.resolve(now)?;
    let display_name = match input.get("display_name") {
        Some(Value::String(name)) if !name.is_empty() && name != "token" => format!("token-{name}"),
        _ => "token".to_string(),
    };
    let meta = crate::system::string_map(input.get("meta"), "meta")?;
    let id = match input.get("id") {
        Some(Value::String(id)) if !id.is_empty() => {
            require_root(parent)?;
            Some(id.clone())
        }
        _ => None,
    };
    let entry = TokenEntry {
        accessor: random_base62(24),
        policies,
        meta,
        display_name,
        creation_time: now,
        creation_ttl: ttl,
        expire_time: (ttl > 0).then(|| now.saturating_add(ttl)),
        explicit_max_ttl,
        renewable: flag("renewable", true)?,
        orphan: no_parent,
        path: if orphan {
            "auth/token/create-orphan"
        } else {
            "auth/token/create"
        }
        .to_string(),
        parent: (!no_parent).then(|| parent.accessor.clone()),
        num_uses,
        uses_spent: false,
        period,
    };
    let expiry: Vec<String> = entry
        .expire_time
        .map(|expire| lease::token_expiry_key(&entry.accessor, expire))
        .into_iter()
        .collect();
    let token = core.tokens.create(entry.clone(), id.as_deref(), &expiry)?;
    let mut reply = auth_envelope(&token, &entry);
    reply.warnings = warnings;
    Ok(Reply::Envelope(reply))
}

/// What bounds a new token's lifetime.
pub(crate) struct TokenLimits {
    ttl: u64,
    explicit_max_ttl: u64,
    period: u64,
    root: bool,
    /// The token store's (default, max) TTL: its `sys/auth/token/tune`, else the system's.
    mount_ttls: (u64, u64),
    /// Unix time the parent can live to at most (none: an orphan, or an immortal parent).
    parent_deadline: Option<u64>,
}

impl TokenLimits {
    /// The (TTL, explicit max TTL) to store, and warnings for every cap applied: the
    /// token store's max TTL (tuned, else the system's) bounds all but periodic tokens and
    /// its default TTL is the TTL of a token that asks for none, an explicit max bounds the TTL, and a
    /// child's whole life fits inside its parent's.
    fn resolve(self, now: u64) -> Result<(u64, u64, Vec<String>), ApiError> {
        let mut warnings = Vec::new();
        let mut capped = |what: &str, value: u64, cap: u64, why: &str| {
            if value > cap {
                warnings.push(format!(
                    "{what} of {value}s is above {why}; capped to {cap}s"
                ));
                cap
            } else {
                value
            }
        };
        let (default_ttl, max_ttl) = self.mount_ttls;
        let mut explicit = capped(
            "explicit_max_ttl",
            self.explicit_max_ttl,
            max_ttl,
            "the token store's max TTL",
        );
        let mut ttl = match (self.ttl, self.period, self.root) {
            (_, period, _) if period > 0 => period,
            (0, _, true) => 0,
            (0, _, false) => default_ttl,
            (ttl, _, _) => capped("ttl", ttl, max_ttl, "the token store's max TTL"),
        };
        if explicit > 0 {
            ttl = if ttl == 0 {
                explicit
            } else {
                capped("ttl", ttl, explicit, "explicit_max_ttl")
            };
        }
        if let Some(deadline) = self.parent_deadline {
            let left = deadline.saturating_sub(now);
            if left == 0 {
                return Err(ApiError::bad("the parent token is at the end of its life"));
            }
            ttl = if ttl == 0 {
                left
            } else {
                capped("ttl", ttl, left, "the parent token's remaining life")
            };
            explicit = if explicit == 0 {
                left
            } else {
                explicit.min(left)
            };
        }
        Ok((ttl, explicit, warnings))
    }
}
