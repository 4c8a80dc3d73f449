//! `sys/policies/acl`, legacy `sys/policy`, and `sys/capabilities[-self|-accessor]`.

use serde_json::{Map, Value, json};

use super::*;

/// `LIST sys/policies/acl` (names plus `root`), or legacy `GET sys/policy`.
pub(crate) fn policy_list(core: &Core, op: Op, legacy: bool) -> Result<Reply, ApiError> {
    let mut names = core.policies.list()?;
    names.push("root".to_string());
    names.sort();
    match (op, legacy) {
        (Op::List, false) => Ok(Reply::Envelope(Envelope::sys(json!({ "keys": names })))),
        (Op::Read | Op::List, true) => Ok(Reply::Envelope(Envelope::sys(
            json!({ "keys": names, "policies": names }),
        ))),
        _ => Err(ApiError::unsupported_operation()),
    }
}

/// `sys/policies/acl/<name>` and legacy `sys/policy/<name>`: read, write (`policy`, or
/// `rules` on the legacy path; a JSON object is taken as a JSON policy), delete.
pub(crate) fn policy(
    core: &Core,
    call: &Call,
    name: &str,
    legacy: bool,
) -> Result<Reply, ApiError> {
    let name = crate::policies::normalize(name);
    if name.is_empty() || name.contains('/') {
        return Err(ApiError::bad("a policy name is one path segment"));
    }
    match call.op {
        Op::Read => {
            let text = core.policies.text(&name)?.ok_or_else(ApiError::not_found)?;
            let field = if legacy { "rules" } else { "policy" };
            Ok(Reply::Envelope(Envelope::sys(
                json!({ "name": name, field: text }),
            )))
        }
        Op::Write => {
            let text = match call.input.get("policy").or_else(|| call.input.get("rules")) {
                Some(Value::String(text)) => text.clone(),
                Some(object @ Value::Object(_)) => object.to_string(),
                _ => return Err(ApiError::bad("missing required field \"policy\"")),
            };
            core.policies.put(&name, &text)?;
            Ok(Reply::Empty(StatusCode::NO_CONTENT))
        }
        Op::Delete => {
            core.policies.delete(&name)?;
            Ok(Reply::Empty(StatusCode::NO_CONTENT))
        }
        _ => Err(ApiError::unsupported_operation()),
    }
}

/// `sys/capabilities-self` / `sys/capabilities`: what `token`'s policies allow on each of
/// `paths` (or `path`), with `capabilities` as well when one path was asked.
pub(crate) fn capabilities(
    core: &Core,
    call: &Call,
    token: &TokenEntry,
) -> Result<Reply, ApiError> {
    let paths = match call.input.get("paths").or_else(|| call.input.get("path")) {
        Some(value) => {
            fields::strings(value, true).map_err(|e| ApiError::bad(format!("paths: {e}")))?
        }
        None => return Err(ApiError::bad("missing required field \"paths\"")),
    };
    if paths.len() > MAX_CAPABILITY_PATHS {
        return Err(ApiError::bad(format!(
            "at most {MAX_CAPABILITY_PATHS} paths per request"
        )));
    }
    let acl = core.policies.acl(&token.policies)?;
    let mut data = Map::new();
    for path in &paths {
        data.insert(path.clone(), json!(acl.capabilities(path).names()));
    }
    if let [only] = paths.as_slice() {
        data.insert(
            "capabilities".to_string(),
            json!(acl.capabilities(only).names()),
        );
    }
    Ok(Reply::Envelope(Envelope::sys(Value::Object(data))))
}

/// `sys/capabilities-accessor`: [`capabilities`] of the live token with `accessor`.
pub(crate) fn capabilities_accessor(core: &Core, call: &Call) -> Result<Reply, ApiError> {
    let accessor = match call.input.get("accessor") {
        Some(Value::String(accessor)) if !accessor.is_empty() => accessor,
        _ => return Err(ApiError::bad("missing accessor")),
    };
    let (_, entry) = core
        .tokens
        .live_by_accessor(accessor)?
        .ok_or_else(|| ApiError::bad("invalid accessor"))?;
    capabilities(core, call, &entry)
}

/// Paths one capabilities request may ask about.
pub(crate) const MAX_CAPABILITY_PATHS: usize = 1024;
