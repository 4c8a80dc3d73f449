//! Tokens for logins: an auth engine vouches for an identity with an `auth-response`, and
//! the host — never the engine — mints the token, indexes it under its auth mount (so
//! disabling the mount revokes it) and schedules its expiry like a lease. When such a
//! token is renewed, the engine is asked first (`leases.renew` with secret type `token`
//! and the login's internal data), so it can refuse a token whose role is gone.
//!
//! A login token is an orphan (Vault: a login has no parent token), with the auth mount's
//! TTL tuning as its bounds unless the engine asks for less.

use std::collections::BTreeMap;
use std::sync::Arc;

use hyper::StatusCode;

use crate::core::{Core, Mount};
use crate::lease;
use crate::logical::{ApiError, Envelope};
use crate::runtime::{AuthResponse, LeaseRef};
use crate::tokens::roles::sanitize_policies;
use crate::tokens::{MAX_POLICIES, SYSTEM_MAX_TTL, TokenEntry, unix_now};

/// The secret type an auth engine's `leases.renew` sees for a token it vouched for.
pub const TOKEN_SECRET_TYPE: &str = "token";
/// Most CIDR blocks one token may be bound to.
const MAX_BOUND_CIDRS: usize = 64;
/// Most metadata pairs one login may attach.
const MAX_METADATA: usize = 64;
/// Longest engine-private data kept with a token.
const MAX_INTERNAL_DATA: usize = 4096;
/// Longest metadata key or value, display name, alias or policy name an engine may set.
const MAX_FIELD: usize = 512;

/// Mints the token for a login that `mount`'s engine answered with `auth`, at `path` (the
/// login's path, recorded as the token's); returns Vault's `auth` envelope.
pub(crate) fn mint(
    core: &Core,
    mount: &Mount,
    path: &str,
    auth: AuthResponse,
) -> Result<Envelope, ApiError> {
    let engine_fault = |why: String| {
        tracing::warn!(mount = %mount.entry.path, %why, "auth engine returned an unusable login");
        ApiError::internal(format!(
            "the auth method at {} returned an unusable login: {why}",
            mount.entry.path
        ))
    };
    let policies = sanitize_policies(&auth.policies, !auth.no_default_policy);
    if policies.iter().any(|p| p == "root") {
        return Err(ApiError::bad(
            "an auth method cannot grant the root policy; change the role's token_policies",
        ));
    }
    if policies.len() > MAX_POLICIES {
        return Err(engine_fault(format!("more than {MAX_POLICIES} policies")));
    }
    if auth.bound_cidrs.len() > MAX_BOUND_CIDRS
        || auth.bound_cidrs.iter().any(|cidr| !valid_cidr(cidr))
    {
        return Err(engine_fault("invalid token_bound_cidrs".to_string()));
    }
    if !within_bounds(&auth) {
        return Err(engine_fault(format!(
            "a name, alias, policy or metadata entry is longer than {MAX_FIELD} bytes"
        )));
    }
    if auth.metadata.len() > MAX_METADATA || auth.internal_data.len() > MAX_INTERNAL_DATA {
        return Err(engine_fault(
            "metadata or internal data too large".to_string(),
        ));
    }
    let (mount_default, mount_max) = mount.ttls();
    let max = match auth.max_ttl {
        0 => mount_max,
        wanted => wanted.min(mount_max),
    }
    .min(SYSTEM_MAX_TTL);
    // A period is bounded by the mount's (and role's) max TTL as Vault bounds it, so a
    // role cannot hand out tokens that outlive what the operator tuned, renewals included.
    let period = auth.period.min(max);
    let mut ttl = match (period, auth.ttl) {
        (period, _) if period > 0 => period,
        (_, 0) => mount_default,
        (_, ttl) => ttl,
    }
    .min(max);
    if auth.explicit_max_ttl > 0 {
        ttl = ttl.min(auth.explicit_max_ttl);
    }
    let now = unix_now();
    let stem = mount
        .entry
        .path
        .strip_prefix(crate::core::AUTH_MOUNT_PREFIX)
        .unwrap_or(&mount.entry.path)
        .trim_end_matches('/')
        .replace('/', "-");
    let display_name = match auth.display_name.trim() {
        "" => stem,
        name => format!("{stem}-{name}"),
    };
    let entry = TokenEntry {
        accessor: crate::tokens::random_base62(24),
        policies,
        meta: auth.metadata.into_iter().collect::<BTreeMap<_, _>>(),
        display_name,
        creation_time: now,
        creation_ttl: ttl,
        expire_time: Some(now.saturating_add(ttl)),
        explicit_max_ttl: auth.explicit_max_ttl,
        renewable: auth.renewable,
        orphan: true,
        path: path.to_string(),
        parent: None,
        num_uses: auth.num_uses,
        uses_spent: false,
        period,
        max_ttl: max,
        bound_cidrs: auth.bound_cidrs,
        mount_accessor: Some(mount.entry.accessor.clone()),
        auth_internal: (!auth.internal_data.is_empty()).then_some(auth.internal_data),
    };
    let expiry: Vec<String> = entry
        .expire_time
        .map(|expire| lease::token_expiry_key(&entry.accessor, expire))
        .into_iter()
        .collect();
    let token = core.tokens.create(entry.clone(), None, &expiry)?;
    let mut auth_block = super::api::auth_json(&token, &entry);
    if let Some(object) = auth_block.as_object_mut() {
        object.insert(
            "mount_accessor".to_string(),
            serde_json::json!(mount.entry.accessor),
        );
        if !auth.alias_name.is_empty() {
            object.insert(
                "entity_alias".to_string(),
                serde_json::json!({ "name": auth.alias_name, "mount_accessor": mount.entry.accessor }),
            );
        }
    }
    Ok(Envelope {
        auth: Some(auth_block),
        mount_type: mount.engine_type().to_string(),
        ..Envelope::default()
    })
}

/// Asks the auth engine that vouched for `entry` whether it may be renewed for `ttl`
/// seconds (Vault re-checks the role on renewal). Tokens not minted by a login pass.
pub(crate) async fn approve_renewal(
    core: &Arc<Core>,
    entry: &TokenEntry,
    ttl: u64,
) -> Result<(), ApiError> {
    let Some(mount_accessor) = &entry.mount_accessor else {
        return Ok(());
    };
    let mount = core
        .mounts()
        .into_iter()
        .find(|mount| mount.entry.accessor == *mount_accessor && !mount.fenced())
        .ok_or_else(|| {
            ApiError::bad("the auth method that issued this token is no longer enabled")
        })?;
    let lease_ref = LeaseRef {
        id: format!("{}/{}", entry.path, entry.accessor),
        secret_type: TOKEN_SECRET_TYPE.to_string(),
        internal_data: entry.auth_internal.clone().unwrap_or_default(),
        issue_time: entry.creation_time,
        ttl,
    };
    lease::call_engine(core, &mount, async move |runtime, plugin, context| {
        runtime.renew(plugin, context, &lease_ref).await
    })
    .await
    .map_err(|error| match error {
        lease::LeaseError::Engine(message) => ApiError::new(StatusCode::FORBIDDEN, message),
        other => ApiError::from(other),
    })
}

/// Whether every string an engine put in `auth` fits [`MAX_FIELD`]: each ends up in the
/// stored token and in every lookup of it.
fn within_bounds(auth: &AuthResponse) -> bool {
    [&auth.display_name, &auth.alias_name]
        .into_iter()
        .chain(&auth.policies)
        .chain(auth.metadata.iter().flat_map(|(k, v)| [k, v]))
        .all(|text| text.len() <= MAX_FIELD)
}

fn valid_cidr(cidr: &str) -> bool {
    let cidr = cidr.trim();
    cidr.parse::<ipnet::IpNet>().is_ok() || cidr.parse::<std::net::IpAddr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::cidr_contains;

    #[test]
    fn every_string_an_engine_sets_is_bounded() {
        let auth = AuthResponse {
            policies: vec!["app".to_string()],
            no_default_policy: false,
            ttl: 0,
            max_ttl: 0,
            explicit_max_ttl: 0,
            period: 0,
            num_uses: 0,
            renewable: true,
            bound_cidrs: Vec::new(),
            metadata: vec![("role".to_string(), "web".to_string())],
            display_name: "web".to_string(),
            alias_name: "uid".to_string(),
            internal_data: String::new(),
        };
        assert!(within_bounds(&auth));
        let long = "x".repeat(MAX_FIELD + 1);
        for changed in [
            AuthResponse {
                display_name: long.clone(),
                ..auth.clone()
            },
            AuthResponse {
                alias_name: long.clone(),
                ..auth.clone()
            },
            AuthResponse {
                policies: vec![long.clone()],
                ..auth.clone()
            },
            AuthResponse {
                metadata: vec![("k".to_string(), long.clone())],
                ..auth.clone()
            },
            AuthResponse {
                metadata: vec![(long.clone(), "v".to_string())],
                ..auth.clone()
            },
        ] {
            assert!(!within_bounds(&changed));
        }
    }

    #[test]
    fn cidr_blocks_parse_as_vault_writes_them() {
        assert!(valid_cidr("10.0.0.0/8"));
        assert!(valid_cidr("127.0.0.1"));
        assert!(valid_cidr("::1/128"));
        assert!(!valid_cidr("10.0.0.0/33"));
        assert!(!valid_cidr("localhost"));
        let local: std::net::IpAddr = [127, 0, 0, 1].into();
        assert!(cidr_contains("127.0.0.0/8", local));
        assert!(!cidr_contains("10.0.0.0/8", local));
        assert!(cidr_contains("127.0.0.1", local));
        assert!(!cidr_contains("nonsense", local));
    }
}
