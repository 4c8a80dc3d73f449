//! `sys/auth`: the auth mount table. List, enable, read, disable and tune auth methods.
//! The token store is always at `token/`; its TTL tuning bounds the tokens it creates.

use super::*;
use crate::core::{MountEntry, MountRequest, MountTune, effective_ttls};
use mounts::{mount_settings, string_map, tune_from};
use std::sync::Arc;

/// One auth mount in Vault's `sys/auth` shape.
pub(crate) fn auth_json(entry: &MountEntry) -> Value {
    json!({
        "accessor": entry.accessor,
        "config": {
            "default_lease_ttl": entry.tune.default_lease_ttl,
            "max_lease_ttl": entry.tune.max_lease_ttl,
            "force_no_cache": false,
            "token_type": "default-service",
        },
        "description": entry.description,
        "external_entropy_access": false,
        "local": false,
        "options": entry.options,
        "seal_wrap": false,
        "type": entry.engine,
        "uuid": entry.uuid,
        "plugin_version": "",
        "running_plugin_version": "",
        "running_sha256": "",
        "deprecation_status": "supported",
    })
}

/// `GET sys/auth`.
pub(crate) fn auth_list(core: &Core) -> Reply {
    let mut data = Map::new();
    for entry in core.auth_mounts() {
        data.insert(entry.path.clone(), auth_json(&entry));
    }
    Reply::Envelope(Envelope::sys(Value::Object(data)))
}

/// `sys/auth/<path>` (read, enable, disable) and `sys/auth/<path>/tune`.
pub(crate) async fn auth(core: &Arc<Core>, call: &Call, target: &str) -> Result<Reply, ApiError> {
    if let Some(path) = target.strip_suffix("/tune") {
        return auth_tune(core, call, path);
    }
    let path = crate::core::normalize_path(target)?;
    match call.op {
        Op::Read => {
            let entry = core
                .auth_mount_at(&path)
                .ok_or_else(|| ApiError::bad(format!("no auth engine at auth/{path}")))?;
            Ok(Reply::Envelope(Envelope::sys(auth_json(&entry))))
        }
        Op::Write => {
            let kind = match (call.input.get("type"), call.input.get("plugin_name")) {
                (Some(Value::String(t)), _) | (_, Some(Value::String(t)))
                    if !t.is_empty() && t != "plugin" =>
                {
                    t.clone()
                }
                _ => {
                    return Err(ApiError::bad(
                        "backend type must be specified as a string (the auth method to enable)",
                    ));
                }
            };
            // As Vault: the token store is a singleton, whatever the path.
            if kind == "token" {
                return Err(ApiError::bad(
                    "token credential backend cannot be instantiated",
                ));
            }
            let (config, description) = mount_settings(&call.input)?;
            core.enable_auth(MountRequest {
                path,
                engine: kind,
                description,
                tune: tune_from(&config, MountTune::default())?,
                options: string_map(call.input.get("options"), "options")?,
            })?;
            Ok(Reply::Empty(StatusCode::NO_CONTENT))
        }
        Op::Delete => {
            core.disable_auth(&path).await?;
            Ok(Reply::Empty(StatusCode::NO_CONTENT))
        }
        _ => Err(ApiError::unsupported_operation()),
    }
}

/// `sys/auth/<path>/tune`: the TTL bounds and description of an auth mount.
pub(crate) fn auth_tune(core: &Core, call: &Call, target: &str) -> Result<Reply, ApiError> {
    let path = crate::core::normalize_path(target)?;
    let entry = core
        .auth_mount_at(&path)
        .ok_or_else(|| ApiError::bad(format!("cannot fetch sysview for path \"auth/{path}\"")))?;
    match call.op {
        Op::Read => {
            let (default, max) = effective_ttls(&entry.tune);
            Ok(Reply::Envelope(Envelope::sys(json!({
                "description": entry.description,
                "default_lease_ttl": default,
                "max_lease_ttl": max,
                "force_no_cache": false,
                "token_type": "default-service",
                "options": entry.options,
            }))))
        }
        Op::Write => {
            let limits = ["engine_call_timeout", "engine_memory_limit"];
            if let Some(name) = limits
                .iter()
                .find(|k| call.input.get(**k).is_some_and(|v| !v.is_null()))
            {
                return Err(ApiError::bad(format!(
                    "{name} applies to engine mounts (sys/mounts/<path>/tune), not to auth mounts"
                )));
            }
            let tune = tune_from(&call.input, entry.tune.clone())?;
            let description = match call.input.get("description") {
                None | Some(Value::Null) => None,
                Some(value) => Some(
                    fields::string(value)
                        .map_err(|e| ApiError::bad(format!("description: {e}")))?,
                ),
            };
            core.tune_auth(&path, Some(tune), description)?;
            Ok(Reply::Empty(StatusCode::NO_CONTENT))
        }
        _ => Err(ApiError::unsupported_operation()),
    }
}
