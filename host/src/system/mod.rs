//! The native `sys/` backend: seal and health, mounts and their tuning, policies and
//! capabilities, leases, audit devices. Served through the pipeline like any backend; the ACL decided
//! before anything here runs (sudo paths included), so handlers only check what the ACL
//! cannot express.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;

use hyper::StatusCode;
use serde_json::{Map, Value, json};

use crate::core::{Core, CoreError};
use crate::fields;
use crate::lease::LeaseError;
use crate::logical::{ApiError, Call, Envelope, LogicalBackend, Op, Reply, authenticate};
use crate::tokens::TokenEntry;
use crate::tokens::{random_base62, unix_now};

mod audit;
mod auth;
mod ha;
mod leases;
mod mounts;
pub(crate) mod openapi;
mod policies;

pub(crate) use leases::lease_id_from;
use leases::leases;
pub(crate) use mounts::string_map;
use mounts::{mount_json, mounts, tune};
use policies::{capabilities, policy, policy_list};

/// The `sys/` backend.
pub struct System;

impl LogicalBackend for System {
    async fn handle(&self, core: &Arc<Core>, call: &Call, rest: &str) -> Result<Reply, ApiError> {
        match rest {
            "health" => return Ok(health(core, call)),
            "seal-status" => return Ok(Reply::Bare(StatusCode::OK, seal_status(core)?)),
            "leader" => return Ok(Reply::Bare(StatusCode::OK, ha::leader(core))),
            "metrics" if core.options.unauthenticated_metrics_access => {
                return metrics(core, call);
            }
            "init" => return init(core, call),
            "unseal" => return unseal(core, call).await,
            _ => {}
        }
        let token = authenticate(call)?;
        system(core, call, token).await
    }
}

/// `sys/metrics?format=prometheus`: this node's counters in Prometheus' text format.
fn metrics(core: &Core, call: &Call) -> Result<Reply, ApiError> {
    let format = call
        .query
        .iter()
        .find(|(k, _)| k == "format")
        .map(|(_, v)| v.as_str());
    if format != Some("prometheus") {
        return Err(ApiError::bad(
            "sys/metrics serves format=prometheus (Prometheus' text format)",
        ));
    }
    Ok(Reply::Raw(
        "text/plain; version=0.0.4".to_string(),
        crate::metrics::global().prometheus(core).into_bytes(),
    ))
}

/// Version reported by health and seal status.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub(crate) fn health(core: &Core, call: &Call) -> Reply {
    let initialized = core.barrier.seal_config().ok().flatten().is_some();
    let sealed = core.barrier.is_sealed();
    let code = |name: &str, default: u16| {
        call.query
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.parse::<u16>().ok())
            .unwrap_or(default)
    };
    let standby = !sealed && !core.is_active();
    let standby_ok = call
        .query
        .iter()
        .any(|(k, v)| k == "standbyok" && fields::parse_bool(v) == Some(true));
    let status = if !initialized {
        code("uninitcode", 501)
    } else if sealed {
        code("sealedcode", 503)
    } else if standby && !standby_ok {
        // Vault's answer for a standby, so a load balancer sends clients to the active.
        code("standbycode", 429)
    } else {
        code("activecode", 200)
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    if call.op == Op::Head {
        return Reply::Empty(status);
    }
    Reply::Bare(
        status,
        json!({
            "initialized": initialized,
            "sealed": sealed,
            "standby": standby,
            "performance_standby": false,
            "replication_performance_mode": "disabled",
            "replication_dr_mode": "disabled",
            "server_time_utc": unix_now(),
            "version": VERSION,
            "cluster_name": core.options.cluster_name,
            "cluster_id": core.cluster_id,
        }),
    )
}

pub(crate) fn seal_status(core: &Core) -> Result<Value, ApiError> {
    let status = core.barrier.status()?;
    let mut body = json!({
        "type": "shamir",
        "initialized": status.initialized,
        "sealed": status.sealed,
        "t": status.threshold,
        "n": status.shares,
        "progress": status.progress,
        "nonce": status.nonce,
        "version": VERSION,
        "build_date": "",
        "migration": false,
        "recovery_seal": false,
        "storage_type": "coffer",
    });
    if !status.sealed
        && let Some(object) = body.as_object_mut()
    {
        object.insert("cluster_name".to_string(), json!(core.options.cluster_name));
        object.insert("cluster_id".to_string(), json!(core.cluster_id));
    }
    Ok(body)
}

pub(crate) fn init(core: &Arc<Core>, call: &Call) -> Result<Reply, ApiError> {
    match call.op {
        Op::Read => {
            let initialized = core.barrier.seal_config()?.is_some();
            Ok(Reply::Bare(
                StatusCode::OK,
                json!({ "initialized": initialized }),
            ))
        }
        Op::Write => {
            let count = |name: &str| -> Result<u8, ApiError> {
                match call.input.get(name).filter(|v| !v.is_null()) {
                    None => Err(ApiError::bad(format!("missing required field {name}"))),
                    Some(value) => {
                        let n = fields::int(value)
                            .map_err(|e| ApiError::bad(format!("{name}: {e}")))?;
                        u8::try_from(n).map_err(|_| {
                            ApiError::bad(format!(
                                "{name} must be between 1 and {}",
                                crate::barrier::MAX_KEY_SHARES
                            ))
                        })
                    }
                }
            };
            let (shares, threshold) = (count("secret_shares")?, count("secret_threshold")?);
            let result = core.barrier.initialize(shares, threshold)?;
            // Unseal briefly with the new shares to create the root token, then seal again.
            for share in result.shares.iter().take(usize::from(threshold)) {
                core.barrier.submit_share(share)?;
            }
            let root = create_root_token(core, None);
            core.seal();
            let root = root?;
            let hex_keys: Vec<String> = result
                .shares
                .iter()
                .map(|s| hex::encode(s.as_slice()))
                .collect();
            let base64_keys: Vec<String> = result
                .shares
                .iter()
                .map(|s| base64::engine::general_purpose::STANDARD.encode(s.as_slice()))
                .collect();
            Ok(Reply::Bare(
                StatusCode::OK,
                json!({ "keys": hex_keys, "keys_base64": base64_keys, "root_token": root }),
            ))
        }
        _ => Err(ApiError::unsupported_operation()),
    }
}

/// Creates a root token (at init, or with a fixed id in dev mode).
pub fn create_root_token(core: &Core, id: Option<&str>) -> Result<String, ApiError> {
    let entry = TokenEntry {
        accessor: random_base62(24),
        policies: vec!["root".to_string()],
        meta: BTreeMap::new(),
        display_name: "root".to_string(),
        creation_time: unix_now(),
        creation_ttl: 0,
        expire_time: None,
        explicit_max_ttl: 0,
        renewable: false,
        orphan: true,
        path: "auth/token/root".to_string(),
        parent: None,
        num_uses: 0,
        uses_spent: false,
        period: 0,
        ..TokenEntry::default()
    };
    Ok(core.tokens.create(entry, id, &[])?)
}

pub(crate) async fn unseal(core: &Arc<Core>, call: &Call) -> Result<Reply, ApiError> {
    if call.op != Op::Write {
        return Err(ApiError::unsupported_operation());
    }
    let reset = call
        .input
        .get("reset")
        .map(fields::boolean)
        .transpose()
        .map_err(ApiError::bad)?;
    if reset == Some(true) {
        core.barrier.reset_unseal()?;
        return Ok(Reply::Bare(StatusCode::OK, seal_status(core)?));
    }
    let key = match call.input.get("key") {
        Some(Value::String(key)) if !key.trim().is_empty() => key.trim().to_string(),
        _ => return Err(ApiError::bad("missing required input: key")),
    };
    let share = hex::decode(&key)
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(&key))
        .map_err(|_| ApiError::bad("the unseal key must be hex or base64"))?;
    let was_sealed = core.barrier.is_sealed();
    core.barrier.submit_share(&share)?;
    if was_sealed && !core.barrier.is_sealed() && core.ha.get().is_none() {
        // On an HA cluster the node loads when it becomes active (`crate::ha`).
        let core_for_load = core.clone();
        tokio::task::spawn_blocking(move || core_for_load.post_unseal())
            .await
            .map_err(|e| ApiError::internal(e.to_string()))??;
    }
    Ok(Reply::Bare(StatusCode::OK, seal_status(core)?))
}

/// Vault's old lease paths (`sys/renew`, `sys/revoke`, `sys/revoke-prefix/...`,
/// `sys/revoke-force/...`, with or without a lease id in the URL) as their `sys/leases/`
/// path, relative to `sys/`.
pub(crate) fn lease_alias(rest: &str) -> Option<String> {
    ["renew", "revoke", "revoke-prefix", "revoke-force"]
        .iter()
        .find(|action| {
            rest == **action
                || rest
                    .strip_prefix(**action)
                    .is_some_and(|tail| tail.starts_with('/'))
        })
        .map(|_| format!("leases/{rest}"))
}

pub(crate) async fn system(
    core: &Arc<Core>,
    call: &Call,
    token: &(String, TokenEntry),
) -> Result<Reply, ApiError> {
    let path = call.path.as_str();
    let rest = path.strip_prefix("sys/").unwrap_or_default();
    match (call.op, rest) {
        (Op::Write, "seal") => {
            core.seal();
            Ok(Reply::Empty(StatusCode::NO_CONTENT))
        }
        (Op::Write, "step-down") => ha::step_down(core),
        (Op::Read, "metrics") => metrics(core, call),
        (Op::Read, "ha-status") => ha::ha_status(core),
        (Op::Read, "mounts") => {
            let mut data = Map::new();
            for mount in core.secret_mounts() {
                data.insert(mount.entry.path.clone(), mount_json(&mount));
            }
            Ok(Reply::Envelope(Envelope::sys(Value::Object(data))))
        }
        (_, rest) if rest.starts_with("mounts/") => {
            let target = rest.strip_prefix("mounts/").unwrap_or_default();
            match target.strip_suffix("/tune") {
                // As Vault: `sys/mounts/auth/<path>/tune` (what `bao auth tune` sends)
                // tunes the auth mount.
                Some(mount_path) => match mount_path.strip_prefix("auth/") {
                    Some(auth_path) => auth::auth_tune(core, call, auth_path),
                    None => tune(core, call, mount_path),
                },
                None => mounts(core, call, target).await,
            }
        }
        (Op::Read, "audit") => Ok(audit::audit_list(core)),
        (_, rest) if rest.starts_with("audit/") => {
            audit::audit(core, call, rest.strip_prefix("audit/").unwrap_or_default())
        }
        (_, rest) if rest.starts_with("audit-hash/") => audit::audit_hash(
            core,
            call,
            rest.strip_prefix("audit-hash/").unwrap_or_default(),
        ),
        (Op::Read, "auth") => Ok(auth::auth_list(core)),
        (_, rest) if rest.starts_with("auth/") => {
            auth::auth(core, call, rest.strip_prefix("auth/").unwrap_or_default()).await
        }
        (Op::Read, "internal/ui/resultant-acl") => {
            let acl = core.policies.acl(&token.1.policies)?;
            Ok(Reply::Envelope(Envelope::sys(acl.resultant())))
        }
        (Op::Read, rest) if rest.starts_with("internal/ui/mounts/") => {
            let target = rest.strip_prefix("internal/ui/mounts/").unwrap_or_default();
            let (mount, _) = core.route(target).ok_or_else(ApiError::not_found)?;
            let mut data = mount_json(&mount);
            if let Some(object) = data.as_object_mut() {
                object.insert("path".to_string(), json!(mount.entry.path));
            }
            Ok(Reply::Envelope(Envelope::sys(data)))
        }
        (_, rest) if rest == "policy" || rest == "policies/acl" || rest == "policies/acl/" => {
            policy_list(core, call.op, rest == "policy")
        }
        (_, rest) if rest.starts_with("policies/acl/") || rest.starts_with("policy/") => {
            let (name, legacy) = match rest.strip_prefix("policy/") {
                Some(name) => (name, true),
                None => (
                    rest.strip_prefix("policies/acl/").unwrap_or_default(),
                    false,
                ),
            };
            policy(core, call, name, legacy)
        }
        (Op::Write, "capabilities-self") => capabilities(core, call, &token.1),
        (Op::Write, "capabilities") => {
            let target = match call.input.get("token") {
                Some(Value::String(t)) if !t.is_empty() => t.clone(),
                _ => return Err(ApiError::bad("missing token")),
            };
            let entry = core
                .tokens
                .lookup(&target)?
                .ok_or_else(|| ApiError::bad("invalid token"))?;
            capabilities(core, call, &entry)
        }
        (Op::Write, "capabilities-accessor") => policies::capabilities_accessor(core, call),
        (Op::Read, "internal/specs/openapi") => {
            let acl = core.policies.acl(&token.1.policies)?;
            Ok(Reply::Bare(StatusCode::OK, openapi::document(core, &acl)))
        }
        (Op::Read, "plugins/catalog") => {
            let names: Vec<&str> = core.catalog.entries().map(|(n, _)| n).collect();
            let auth = core.catalog.auth_names();
            Ok(Reply::Envelope(Envelope::sys(
                json!({ "secret": names, "auth": auth }),
            )))
        }
        (_, rest) if rest == "leases" || rest.starts_with("leases/") => {
            leases(core, call, rest).await
        }
        (_, rest) if lease_alias(rest).is_some() => {
            let canonical = lease_alias(rest).unwrap_or_default();
            leases(core, call, &canonical).await
        }
        _ => Err(ApiError::new(StatusCode::NOT_FOUND, "unsupported path")),
    }
}
