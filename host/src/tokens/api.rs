//! The native `auth/token/` backend: create (orphans, roles' rules, child limits), lookup,
//! renew and revoke of tokens, by id or by accessor, the accessor list and token roles,
//! Vault's wire shapes for them. The store itself (hashing, the parent tree, revocation,
//! role storage) is [`crate::tokens`]; this module only speaks the API.

use std::sync::Arc;

use hyper::StatusCode;
use serde_json::{Value, json};

use crate::core::Core;
use crate::fields;
use crate::lease;
use crate::logical::{ApiError, Call, Envelope, LogicalBackend, Op, Reply, authenticate};
use crate::tokens::roles::{TokenRole, valid_role_name};
use crate::tokens::{MAX_LISTED_ACCESSORS, TokenEntry, random_base62, unix_now};

/// The `auth/token/` backend.
pub struct TokenAuth;

impl LogicalBackend for TokenAuth {
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

/// Vault's lookup shape; `token` is empty for lookups by accessor (Vault blanks `id`).
pub(crate) fn token_data(token: &str, entry: &TokenEntry) -> Value {
    let now = unix_now();
    let mut data = json!({
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
    });
    if let (Some(role), Some(object)) = (entry.role(), data.as_object_mut()) {
        object.insert("role".to_string(), json!(role));
    }
    data
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
            create_token(core, call, &entry, rest == "create-orphan", None).await
        }
        (Op::Write, rest) if rest.starts_with("create/") => {
            let name = rest.strip_prefix("create/").unwrap_or_default();
            valid_role_name(name).map_err(ApiError::bad)?;
            let role = core
                .tokens
                .role(name)?
                .ok_or_else(|| ApiError::bad(format!("unknown role {name}")))?;
            create_token(core, call, &entry, false, Some(&role)).await
        }
        (Op::Write, "lookup-accessor") => {
            let accessor = accessor_field(input)?;
            let (_, found) = core
                .tokens
                .live_by_accessor(&accessor)?
                .ok_or_else(|| ApiError::bad("invalid accessor"))?;
            Ok(Reply::Envelope(Envelope {
                data: Some(token_data("", &found)),
                mount_type: "token".to_string(),
                ..Envelope::default()
            }))
        }
        (Op::Write, "renew-accessor") => {
            let accessor = accessor_field(input)?;
            let increment = increment_field(input)?;
            if let Some((_, target)) = core.tokens.live_by_accessor(&accessor)? {
                super::login::approve_renewal(core, &target, increment).await?;
            }
            let renewed = core.tokens.renew_by_accessor(
                &accessor,
                increment,
                core.token_ttls().1,
                lease::token_expiry_key,
            )?;
            // Vault blanks the token itself: the accessor's holder may not learn it.
            Ok(auth_reply("", &renewed))
        }
        (Op::Write, "revoke-accessor") => {
            let accessor = accessor_field(input)?;
            if !core.tokens.present(&accessor)? {
                return Ok(Reply::Envelope(Envelope {
                    warnings: vec!["No token found with this accessor".to_string()],
                    mount_type: "token".to_string(),
                    ..Envelope::default()
                }));
            }
            revoke_accessor(core, accessor, false).await?;
            Ok(Reply::Empty(StatusCode::NO_CONTENT))
        }
        (Op::List, "accessors" | "accessors/") => {
            let (keys, truncated) = core.tokens.accessors(MAX_LISTED_ACCESSORS)?;
            let warnings = if truncated {
                vec![format!(
                    "only the first {MAX_LISTED_ACCESSORS} stored accessors were listed (live ones among them)"
                )]
            } else {
                Vec::new()
            };
            Ok(Reply::Envelope(Envelope {
                data: Some(json!({ "keys": keys })),
                warnings,
                mount_type: "token".to_string(),
                ..Envelope::default()
            }))
        }
        (Op::List, "roles" | "roles/") => {
            let names = core.tokens.role_names()?;
            if names.is_empty() {
                return Err(ApiError::not_found());
            }
            Ok(Reply::Envelope(Envelope {
                data: Some(json!({ "keys": names })),
                mount_type: "token".to_string(),
                ..Envelope::default()
            }))
        }
        (_, rest) if rest.starts_with("roles/") => {
            role_api(core, call, rest.strip_prefix("roles/").unwrap_or_default())
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
            let increment = increment_field(input)?;
            if let Some(found) = core.tokens.lookup(&target)? {
                super::login::approve_renewal(core, &found, increment).await?;
            }
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

/// The `accessor` field, required.
fn accessor_field(input: &serde_json::Map<String, Value>) -> Result<String, ApiError> {
    match input.get("accessor") {
        Some(Value::String(accessor)) if !accessor.is_empty() => Ok(accessor.clone()),
        None | Some(Value::Null) => Err(ApiError::bad("missing accessor")),
        Some(Value::String(_)) => Err(ApiError::bad("missing accessor")),
        Some(_) => Err(ApiError::bad("accessor: expected a string")),
    }
}

/// The `increment` field of a renewal, seconds (0 when absent).
fn increment_field(input: &serde_json::Map<String, Value>) -> Result<u64, ApiError> {
    match input.get("increment") {
        None | Some(Value::Null) => Ok(0),
        Some(value) => {
            fields::duration(value).map_err(|e| ApiError::bad(format!("increment: {e}")))
        }
    }
}

/// `auth/token/roles/<name>`: read, create or update, delete.
fn role_api(core: &Arc<Core>, call: &Call, name: &str) -> Result<Reply, ApiError> {
    valid_role_name(name).map_err(ApiError::bad)?;
    match call.op {
        Op::Read => {
            let role = core.tokens.role(name)?.ok_or_else(ApiError::not_found)?;
            Ok(Reply::Envelope(Envelope {
                data: Some(role.to_json()),
                mount_type: "token".to_string(),
                ..Envelope::default()
            }))
        }
        Op::Write => {
            let warnings = core.tokens.write_role(name, &call.input)?;
            if warnings.is_empty() {
                return Ok(Reply::Empty(StatusCode::NO_CONTENT));
            }
            Ok(Reply::Envelope(Envelope {
                warnings,
                mount_type: "token".to_string(),
                ..Envelope::default()
            }))
        }
        Op::Delete => {
            core.tokens.delete_role(name)?;
            Ok(Reply::Empty(StatusCode::NO_CONTENT))
        }
        _ => Err(ApiError::unsupported_operation()),
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
    revoke_accessor(core, accessor, orphan_children).await
}

/// [`revoke_token`] of the token with `accessor`.
pub(crate) async fn revoke_accessor(
    core: &Arc<Core>,
    accessor: String,
    orphan_children: bool,
) -> Result<(), ApiError> {
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

/// `auth/token/create`, `create-orphan` (`orphan`) and `create/<role>` (`role`): Vault's
/// `handleCreateCommon`. Where Vault asks for root or sudo (periods, `no_parent`, ids,
/// policies outside the parent's), Coffer asks for a root token.
pub(crate) async fn create_token(
    core: &Arc<Core>,
    call: &Call,
    parent: &TokenEntry,
    orphan: bool,
    role: Option<&TokenRole>,
) -> Result<Reply, ApiError> {
    let input = &call.input;
    // Vault's `isSudo`: root, or a policy granting `sudo` on this create path.
    let is_sudo = parent.is_root()
        || core
            .policies
            .acl(&parent.policies)?
            .capabilities(&call.path)
            .contains(crate::acl::Capability::Sudo);
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
    if parent.num_uses > 0 || parent.uses_spent {
        return Err(ApiError::bad(
            "restricted use token cannot generate child tokens",
        ));
    }
    if input
        .get("entity_alias")
        .is_some_and(|alias| !alias.is_null() && alias.as_str() != Some(""))
    {
        return Err(ApiError::bad(
            "entity_alias is not supported: Coffer has no identity store yet",
        ));
    }
    let requested: Option<Vec<String>> = match input.get("policies") {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            fields::strings(value, true).map_err(|e| ApiError::bad(format!("policies: {e}")))?,
        ),
    };
    if requested
        .as_ref()
        .is_some_and(|p| p.len() > crate::tokens::MAX_POLICIES)
    {
        return Err(ApiError::bad("too many policies"));
    }
    let no_default_policy = flag("no_default_policy", false)?;
    let mut policies = match role.filter(|role| role.restricts_policies()) {
        // The role decides: its allowed and disallowed policies, not the parent's.
        Some(role) => role
            .resolve_policies(
                requested.as_deref().unwrap_or_default(),
                no_default_policy,
                &parent.policies,
            )
            .map_err(ApiError::bad)?,
        None => parent_bound_policies(parent, requested, no_default_policy, is_sudo)?,
    };
    policies.sort();
    policies.dedup();
    if policies.len() > crate::tokens::MAX_POLICIES {
        return Err(ApiError::bad("too many policies"));
    }
    if policies.iter().any(|p| p == "root") && !parent.is_root() {
        return Err(ApiError::bad(
            "root tokens may not be created without parent token being root",
        ));
    }
    // A role's `orphan` makes orphans without sudo; `no_parent` is ignored with a role;
    // `create-orphan` is decided by the ACL on its path; `no_parent` needs sudo (Vault).
    let asks_no_parent = role.is_none() && flag("no_parent", false)?;
    let no_parent = match role {
        Some(role) => role.orphan,
        None => orphan || asks_no_parent,
    };
    if asks_no_parent && !is_sudo {
        return Err(ApiError::bad(
            "root or sudo privileges required to create orphan token",
        ));
    }
    let mut period = duration("period")?;
    if period > 0 && !is_sudo {
        // Tokens renewable forever are an operator's to make.
        return Err(ApiError::bad(
            "root or sudo privileges required to create periodic token",
        ));
    }
    let mut warnings = Vec::new();
    let mut explicit_max_ttl = duration("explicit_max_ttl")?;
    if let Some(role) = role {
        // The lesser of the request's and the role's, as Vault merges them.
        if role.token_explicit_max_ttl > 0 {
            if explicit_max_ttl > 0 {
                warnings.push(format!("Explicit max TTL specified both during creation call and in role; using the lesser value of {} seconds", explicit_max_ttl.min(role.token_explicit_max_ttl)));
            }
            explicit_max_ttl = match explicit_max_ttl {
                0 => role.token_explicit_max_ttl,
                asked => asked.min(role.token_explicit_max_ttl),
            };
        }
        if role.token_period > 0 {
            if period > 0 {
                warnings.push(format!("Period specified both during creation call and in role; using the lesser value of {} seconds", period.min(role.token_period)));
            }
            period = match period {
                0 => role.token_period,
                asked => asked.min(role.token_period),
            };
        }
    }
    let forced_service = role.is_some_and(|role| role.token_type == "service");
    if !forced_service
        && let Some(kind) = input.get("type").and_then(Value::as_str)
        && kind != "service"
        && kind != "default"
        && !kind.is_empty()
    {
        return Err(ApiError::bad(format!(
            "token type {kind:?} is not supported; Coffer issues service tokens"
        )));
    }
    let mut num_uses = match input.get("num_uses") {
        None | Some(Value::Null) => 0,
        Some(value) => {
            let uses = fields::int(value).map_err(|e| ApiError::bad(format!("num_uses: {e}")))?;
            u64::try_from(uses).map_err(|_| ApiError::bad("num_uses cannot be negative"))?
        }
    };
    // The role's use limit, unless the request asks for fewer (0 is unlimited).
    if let Some(limit) = role.map(|role| role.token_num_uses).filter(|l| *l > 0)
        && (num_uses == 0 || limit < num_uses)
    {
        num_uses = limit;
    }
    let now = unix_now();
    let limits = TokenLimits {
        ttl: duration("ttl")?,
        explicit_max_ttl,
        period,
        root: policies.iter().any(|p| p == "root"),
        mount_ttls: core.token_ttls(),
        parent_deadline: if no_parent { None } else { parent.deadline() },
    };
    let (ttl, explicit_max_ttl, cap_warnings) = limits.resolve(now)?;
    warnings.extend(cap_warnings);
    let display_name = match input.get("display_name") {
        Some(Value::String(name)) if !name.is_empty() && name != "token" => format!("token-{name}"),
        _ => "token".to_string(),
    };
    let meta = crate::system::string_map(input.get("meta"), "meta")?;
    let id = match input.get("id") {
        Some(Value::String(id)) if !id.is_empty() => {
            if !is_sudo {
                return Err(ApiError::bad(
                    "root or sudo privileges required to specify token id",
                ));
            }
            Some(id.clone())
        }
        _ => None,
    };
    let path = match role {
        // The role is recorded in the path (`lookup` shows it as `role`), so tokens of a
        // role, or of one revision of it, can be revoked by prefix.
        Some(role) if !role.path_suffix.is_empty() => {
            format!("auth/token/create/{}/{}", role.name, role.path_suffix)
        }
        Some(role) => format!("auth/token/create/{}", role.name),
        None if orphan => "auth/token/create-orphan".to_string(),
        None => "auth/token/create".to_string(),
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
        renewable: flag("renewable", true)? && role.is_none_or(|role| role.renewable),
        orphan: no_parent,
        path,
        parent: (!no_parent).then(|| parent.accessor.clone()),
        num_uses,
        uses_spent: false,
        period,
        ..TokenEntry::default()
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

/// The policies of a token made without a role that restricts them: the requested ones
/// (or the parent's), plus `default` unless `no_default_policy`; a parent that is not
/// root may only hand out policies it holds.
fn parent_bound_policies(
    parent: &TokenEntry,
    requested: Option<Vec<String>>,
    no_default_policy: bool,
    is_sudo: bool,
) -> Result<Vec<String>, ApiError> {
    let mut policies: Vec<String> = match requested {
        None => parent
            .policies
            .iter()
            .filter(|p| *p != "root" || parent.is_root())
            .cloned()
            .collect(),
        Some(requested) => requested,
    };
    if !no_default_policy && !policies.iter().any(|p| p == "default" || p == "root") {
        policies.push("default".to_string());
    }
    if !is_sudo
        && policies
            .iter()
            .any(|p| p != "default" && !parent.policies.contains(p))
    {
        return Err(ApiError::bad("child policies must be subset of parent"));
    }
    Ok(policies)
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
