//! `sys/mounts`: enable, disable, read and tune secret engine mounts.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::core::{Mount, MountRequest, MountTune};

pub(crate) fn mount_json(mount: &Mount) -> Value {
    let entry = &mount.entry;
    json!({
        "accessor": entry.accessor,
        "config": {
            "default_lease_ttl": entry.tune.default_lease_ttl,
            "max_lease_ttl": entry.tune.max_lease_ttl,
            "force_no_cache": false,
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
        "running_sha256": mount.engine.as_ref().map(|e| e.plugin.sha256.clone()).unwrap_or_default(),
        "deprecation_status": "supported",
    })
}

/// A duration field of a sys request: `"system"`, `0` and absent mean inherit (0).
pub(crate) fn sys_duration(
    input: &Map<String, Value>,
    name: &str,
) -> Result<Option<u64>, ApiError> {
    match input.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s == "system" => Ok(Some(0)),
        Some(value) => fields::duration(value)
            .map(Some)
            .map_err(|e| ApiError::bad(format!("{name}: {e}"))),
    }
}

pub(crate) fn tune_from(
    input: &Map<String, Value>,
    mut tune: MountTune,
) -> Result<MountTune, ApiError> {
    if let Some(ttl) = sys_duration(input, "default_lease_ttl")? {
        tune.default_lease_ttl = ttl;
    }
    if let Some(ttl) = sys_duration(input, "max_lease_ttl")? {
        tune.max_lease_ttl = ttl;
    }
    if let Some(timeout) = sys_duration(input, "engine_call_timeout")? {
        tune.engine_call_timeout_ms = timeout.saturating_mul(1000);
    }
    if let Some(value) = input.get("engine_memory_limit").filter(|v| !v.is_null()) {
        let bytes =
            fields::int(value).map_err(|e| ApiError::bad(format!("engine_memory_limit: {e}")))?;
        tune.engine_memory_bytes = u64::try_from(bytes)
            .map_err(|_| ApiError::bad("engine_memory_limit cannot be negative"))?;
    }
    Ok(tune)
}

pub(crate) fn string_map(
    value: Option<&Value>,
    name: &str,
) -> Result<BTreeMap<String, String>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(value) => fields::key_values(value)
            .map(|pairs| pairs.into_iter().collect())
            .map_err(|e| ApiError::bad(format!("{name}: {e}"))),
    }
}

pub(crate) async fn mounts(core: &Arc<Core>, call: &Call, target: &str) -> Result<Reply, ApiError> {
    let path = crate::core::normalize_mount_path(target)?;
    match call.op {
        Op::Read => {
            let mount = core.mount_at(&path).ok_or_else(ApiError::not_found)?;
            Ok(Reply::Envelope(Envelope::sys(mount_json(&mount))))
        }
        Op::Write => {
            let path_for_reply = path.clone();
            let engine = match (call.input.get("type"), call.input.get("plugin_name")) {
                (Some(Value::String(t)), _) | (_, Some(Value::String(t))) if !t.is_empty() => {
                    t.clone()
                }
                _ => {
                    return Err(ApiError::bad(
                        "missing required field type (the engine to mount, e.g. kv)",
                    ));
                }
            };
            let (config, description) = mount_settings(&call.input)?;
            let request = MountRequest {
                path,
                engine,
                description,
                tune: tune_from(&config, MountTune::default())?,
                options: string_map(call.input.get("options"), "options")?,
            };
            let (engine, shown) = (request.engine.clone(), path_for_reply);
            let core = core.clone();
            let created = tokio::task::spawn_blocking(move || core.enable(request))
                .await
                .map_err(|e| ApiError::internal(e.to_string()))??;
            if created {
                return Ok(Reply::Empty(StatusCode::NO_CONTENT));
            }
            Ok(Reply::Envelope(Envelope {
                warnings: vec![format!(
                    "a {engine} engine is already mounted at {shown}; it was left unchanged"
                )],
                mount_type: "system".to_string(),
                ..Envelope::default()
            }))
        }
        Op::Delete => {
            // Its own task: a client that hangs up must not leave the mount fenced.
            let (task_core, task_path) = (core.clone(), path.clone());
            let disabled = tokio::spawn(async move { task_core.disable(&task_path).await })
                .await
                .map_err(|e| ApiError::internal(format!("disabling {path} failed: {e}")))?;
            disabled.map_err(|error| match error {
                CoreError::Lease(LeaseError::Barrier(e)) => ApiError::from(e),
                CoreError::Lease(e) => ApiError::bad(format!("cannot disable {path}: {e}")),
                other => ApiError::from(other),
            })?;
            Ok(Reply::Empty(StatusCode::NO_CONTENT))
        }
        _ => Err(ApiError::unsupported_operation()),
    }
}

pub(crate) fn tune(core: &Arc<Core>, call: &Call, target: &str) -> Result<Reply, ApiError> {
    let path = crate::core::normalize_mount_path(target)?;
    let mount = core
        .mount_at(&path)
        .ok_or_else(|| ApiError::bad(format!("no mount at {path}")))?;
    match call.op {
        Op::Read => {
            let (default, max) = mount.ttls();
            Ok(Reply::Envelope(Envelope::sys(json!({
                "description": mount.entry.description,
                "default_lease_ttl": default,
                "max_lease_ttl": max,
                "force_no_cache": false,
                "options": mount.entry.options,
            }))))
        }
        Op::Write => {
            let tune = tune_from(&call.input, mount.entry.tune.clone())?;
            let description = match call.input.get("description") {
                None | Some(Value::Null) => None,
                Some(value) => Some(
                    fields::string(value)
                        .map_err(|e| ApiError::bad(format!("description: {e}")))?,
                ),
            };
            core.tune(&path, Some(tune), description)?;
            Ok(Reply::Empty(StatusCode::NO_CONTENT))
        }
        _ => Err(ApiError::unsupported_operation()),
    }
}

/// The `config` object and `description` of a mount request (`sys/mounts/<path>`,
/// `sys/auth/<path>`); both optional.
pub(super) fn mount_settings(
    input: &Map<String, Value>,
) -> Result<(Map<String, Value>, String), ApiError> {
    let config = match input.get("config") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(config)) => config.clone(),
        Some(_) => return Err(ApiError::bad("config must be an object")),
    };
    let description = match input.get("description") {
        None | Some(Value::Null) => String::new(),
        Some(value) => {
            fields::string(value).map_err(|e| ApiError::bad(format!("description: {e}")))?
        }
    };
    Ok((config, description))
}
