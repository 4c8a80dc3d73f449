//! `sys/audit` (list), `sys/audit/<path>` (enable, disable) and `sys/audit-hash/<path>`:
//! the audit device table, served from [`crate::audit::Broker`]. The ACL has already
//! required sudo on `sys/audit` and `sys/audit/*` (not on `sys/audit-hash/*`, as Vault).

use super::*;
use crate::audit::{DeviceEntry, EnableRequest};

/// One device in Vault's `sys/audit` shape (options as given; never the salt).
fn device_json(entry: &DeviceEntry) -> Value {
    json!({
        "type": entry.kind,
        "description": entry.description,
        "options": entry.options,
        "local": false,
        "path": entry.path,
    })
}

/// `GET sys/audit`: the enabled devices, by path.
pub(crate) fn audit_list(core: &Core) -> Reply {
    let data: Map<String, Value> = core
        .audit
        .list()
        .iter()
        .map(|entry| (entry.path.clone(), device_json(entry)))
        .collect();
    Reply::Envelope(Envelope::sys(Value::Object(data)))
}

/// `PUT sys/audit/<path>` (enable: `type`, `description`, `options`) and `DELETE`.
pub(crate) fn audit(core: &Core, call: &Call, target: &str) -> Result<Reply, ApiError> {
    match call.op {
        Op::Write => {
            let kind = match call.input.get("type") {
                Some(Value::String(kind)) if !kind.is_empty() => kind.clone(),
                _ => return Err(ApiError::bad("audit type must be specified")),
            };
            if call
                .input
                .get("local")
                .map(fields::boolean)
                .transpose()
                .map_err(ApiError::bad)?
                == Some(true)
            {
                return Err(ApiError::bad(
                    "local audit devices need replication, which Coffer does not have",
                ));
            }
            let description = match call.input.get("description") {
                None | Some(Value::Null) => String::new(),
                Some(value) => {
                    fields::string(value).map_err(|e| ApiError::bad(format!("description: {e}")))?
                }
            };
            core.audit.enable(EnableRequest {
                path: target.to_string(),
                kind,
                description,
                options: string_map(call.input.get("options"), "options")?,
                from_api: true,
            })?;
            Ok(Reply::Empty(StatusCode::NO_CONTENT))
        }
        Op::Delete => {
            core.audit.disable(target)?;
            Ok(Reply::Empty(StatusCode::NO_CONTENT))
        }
        _ => Err(ApiError::unsupported_operation()),
    }
}

/// `POST sys/audit-hash/<path>`: `input` as the device at `path` logs it.
pub(crate) fn audit_hash(core: &Core, call: &Call, target: &str) -> Result<Reply, ApiError> {
    if call.op != Op::Write {
        return Err(ApiError::unsupported_operation());
    }
    let input = match call.input.get("input") {
        Some(Value::String(input)) => input,
        _ => return Err(ApiError::bad("the field input is required (a string)")),
    };
    let hash = core.audit.hash(target, input)?;
    Ok(Reply::Envelope(Envelope::sys(json!({ "hash": hash }))))
}
