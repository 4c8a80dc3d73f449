//! Calls into a mounted engine: match the path table, type the fields, call the
//! component, and turn what it returns into a reply — registering the leases it asks for
//! (behind write-ahead entries, so a crash between the side effect and the lease rolls the
//! side effect back) and granting the SQL and HTTPS endpoints its accepted config names.

use std::sync::Arc;

use hyper::StatusCode;
use serde_json::Value;

use crate::core::{Core, Mount};
use crate::fields;
use crate::lease;
use crate::logical::{ApiError, Call, Envelope, LogicalBackend, Op, Reply};
use crate::runtime::{
    EngineError, FieldKind, FieldValue, Operation, Request as EngineRequest, RuntimeError,
};

/// A mounted engine, as the backend for the paths under its mount point.
pub struct Engine(pub Arc<Mount>);

impl LogicalBackend for Engine {
    async fn handle(&self, core: &Arc<Core>, call: &Call, rest: &str) -> Result<Reply, ApiError> {
        engine(core, call, self.0.clone(), rest.to_string()).await
    }
}

/// How a write to an engine path is told apart as a create or an update (Vault's
/// existence check), from the path table: a path offering `create`, `update` and `read`
/// is existence-checked (the engine reads it first: found is an update, not found a
/// create); one offering `create` but not `update` is a create; anything else an update.
pub(crate) enum WriteKind {
    /// Always a create.
    Create,
    /// Always an update (and anything that is not an engine path).
    Update,
    /// Decided by [`exists`] on this mount and path below it.
    Checked(Arc<Mount>, String),
}

/// The [`WriteKind`] of a write to `path`.
pub(crate) fn write_kind(core: &Core, path: &str) -> WriteKind {
    let Some((mount, rest)) = core.route(path) else {
        return WriteKind::Update;
    };
    let Ok(loaded) = mount.engine.as_ref() else {
        return WriteKind::Update;
    };
    let Ok((_, _, spec)) = matched(loaded, &rest) else {
        return WriteKind::Update;
    };
    let has = |op| supports(spec, op);
    match (
        has(Operation::Create),
        has(Operation::Update),
        has(Operation::Read),
    ) {
        (true, true, true) => WriteKind::Checked(mount.clone(), rest),
        (true, false, _) => WriteKind::Create,
        _ => WriteKind::Update,
    }
}

/// Vault's existence check: whether the engine finds something at `rest` when it reads
/// it with the path's captured fields only (never the write's body). A read the engine
/// answers is "exists", its not-found is "does not"; any other failure is the write's.
pub(crate) async fn exists(
    core: &Arc<Core>,
    call: &Call,
    mount: Arc<Mount>,
    rest: &str,
) -> Result<bool, ApiError> {
    let loaded = mount.engine.as_ref().map_err(|reason| {
        ApiError::internal(format!(
            "mount {} is unavailable: {reason}",
            mount.entry.path
        ))
    })?;
    let (compiled, captures, spec) = matched(loaded, rest)?;
    let mut typed = Vec::new();
    for field in &spec.fields {
        if let Some(captured) = captures.name(&field.name) {
            let value = fields::typed(field.kind, &Value::String(captured.as_str().to_string()))
                .map_err(|e| ApiError::bad(format!("field {:?}: {e}", field.name)))?;
            if let Some(value) = value {
                typed.push((field.name.clone(), value));
            }
        }
    }
    let (mount_default_ttl, mount_max_ttl) = mount.ttls();
    let request = EngineRequest {
        path_index: compiled.index,
        path: rest.to_string(),
        operation: Operation::Read,
        fields: typed,
        raw_body: "{}".to_string(),
        display_name: call
            .caller
            .as_ref()
            .map(|(_, e)| e.display_name.clone())
            .unwrap_or_default(),
        mount_default_ttl,
        mount_max_ttl,
        remote_address: remote_address(call),
    };
    let context = core.context(&mount);
    match core.runtime.handle(&loaded.plugin, context, &request).await {
        Ok(Ok(_)) => Ok(true),
        Ok(Err(EngineError::NotFound(_))) => Ok(false),
        Ok(Err(error)) => Err(engine_error(error)),
        Err(error) => Err(runtime_error(&mount, error)),
    }
}

/// An engine's `audit-facts`: a JSON object of at most [`crate::audit::MAX_FACTS_BYTES`].
/// Anything else is the engine's bug, but the call has already taken effect (a
/// certificate issued and stored): the request still succeeds, and the entry says the
/// facts were dropped and why instead of carrying them.
fn audit_facts(mount: &Mount, facts: &str) -> serde_json::Map<String, Value> {
    let why = if facts.len() > crate::audit::MAX_FACTS_BYTES {
        format!(
            "{} bytes, over the {}-byte limit",
            facts.len(),
            crate::audit::MAX_FACTS_BYTES
        )
    } else {
        match serde_json::from_str::<Value>(facts) {
            Ok(Value::Object(object)) => return object,
            _ => "not a JSON object".to_string(),
        }
    };
    tracing::warn!(mount = %mount.entry.path, %why, "engine returned unusable audit facts; dropped");
    serde_json::Map::from_iter([("facts_dropped".to_string(), Value::String(why))])
}

/// The first entry of the mount's path table matching `rest`: its compiled pattern, the
/// captures, and its spec.
pub(crate) fn matched<'a>(
    loaded: &'a crate::core::LoadedEngine,
    rest: &'a str,
) -> Result<
    (
        &'a crate::core::CompiledPath,
        regex::Captures<'a>,
        &'a crate::runtime::PathSpec,
    ),
    ApiError,
> {
    let (compiled, captures) = loaded
        .paths
        .iter()
        .find_map(|p| p.regex.captures(rest).map(|c| (p, c)))
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "unsupported path"))?;
    let spec = loaded
        .spec
        .paths
        .get(usize::try_from(compiled.index).unwrap_or(usize::MAX))
        .ok_or_else(|| ApiError::internal("path table index out of range"))?;
    Ok((compiled, captures, spec))
}

/// Whether the path table entry offers `operation`.
fn supports(spec: &crate::runtime::PathSpec, operation: Operation) -> bool {
    spec.operations.iter().any(|o| *o as u8 == operation as u8)
}

async fn engine(
    core: &Arc<Core>,
    call: &Call,
    mount: Arc<Mount>,
    rest: String,
) -> Result<Reply, ApiError> {
    let loaded = mount.engine.as_ref().map_err(|reason| {
        ApiError::internal(format!(
            "mount {} is unavailable: {reason}",
            mount.entry.path
        ))
    })?;
    let (compiled, captures, spec) = matched(loaded, &rest)?;
    let supports = |op: Operation| supports(spec, op);
    let operation = match call.op {
        Op::Read => Operation::Read,
        Op::List => Operation::List,
        Op::Delete => Operation::Delete,
        Op::Write if call.creates && supports(Operation::Create) => Operation::Create,
        Op::Write if supports(Operation::Update) => Operation::Update,
        Op::Write => Operation::Create,
        Op::Head => return Err(ApiError::unsupported_operation()),
    };
    if !supports(operation) {
        return Err(ApiError::unsupported_operation());
    }
    let public = mount.is_public(&rest, matches!(call.op, Op::Read | Op::List));
    let token = match (call.caller.as_ref(), public) {
        (Some(caller), _) => Some(caller),
        (None, true) => None,
        (None, false) => return Err(ApiError::forbidden()),
    };
    let mut typed = Vec::with_capacity(spec.fields.len());
    let mut sql_grant = None;
    let mut https_grant = None;
    for field in &spec.fields {
        let captured = captures
            .name(&field.name)
            .map(|m| Value::String(m.as_str().to_string()));
        let supplied = captured.as_ref().or_else(|| call.input.get(&field.name));
        let value = match supplied {
            Some(value) => fields::typed(field.kind, value)
                .map_err(|e| ApiError::bad(format!("field {:?}: {e}", field.name)))?,
            None => None,
        };
        if let (Some(FieldValue::String(dsn)), Some(_), FieldKind::SqlDsn) =
            (&value, &token, field.kind)
        {
            // The operator's authenticated request is what grants SQL access, never the
            // guest: dialable during this call, lasting once the engine accepts the config.
            sql_grant = Some(
                crate::caps::sql::stage(&core.barrier, &mount.entry.uuid, &rest, dsn)
                    .map_err(|e| ApiError::bad(format!("field {:?}: {e}", field.name)))?,
            );
        }
        if let (Some(FieldValue::String(url)), Some(_), FieldKind::HttpsUrl) =
            (&value, &token, field.kind)
        {
            // Likewise for outbound HTTPS: the operator's write names the destination.
            https_grant = Some(
                crate::caps::http::stage(&core.barrier, &mount.entry.uuid, &rest, url)
                    .map_err(|e| ApiError::bad(format!("field {:?}: {e}", field.name)))?,
            );
        }
        match value.or_else(|| field.default.clone()) {
            Some(value) => typed.push((field.name.clone(), value)),
            None if field.required => {
                return Err(ApiError::bad(format!(
                    "missing required field {:?}",
                    field.name
                )));
            }
            None => {}
        }
    }
    let (mount_default_ttl, mount_max_ttl) = mount.ttls();
    let request = EngineRequest {
        path_index: compiled.index,
        path: rest.clone(),
        operation,
        fields: typed,
        raw_body: Value::Object(call.input.clone()).to_string(),
        display_name: token
            .as_ref()
            .map(|(_, e)| e.display_name.clone())
            .unwrap_or_default(),
        mount_default_ttl,
        mount_max_ttl,
        remote_address: remote_address(call),
    };
    let runtime = core.runtime.clone();
    let plugin = loaded.plugin.clone();
    let mut context = core.context(&mount);
    crate::caps::sql::allow_for_this_call(&mut context, sql_grant.as_ref());
    crate::caps::http::allow_for_this_call(&mut context, https_grant.as_ref());
    let transcript = context.sql.as_ref().map(|sql| sql.transcript());
    // The guest runs on a fiber on this worker, yielding every epoch tick.
    let started = std::time::Instant::now();
    let outcome = runtime.handle(&plugin, context, &request).await;
    crate::metrics::global().engine_call(&mount.entry.path, started.elapsed());
    if let Some(transcript) = &transcript {
        // What the engine ran in the database goes into the response entry, whatever the
        // outcome: a failed creation's statements matter as much as a good one's.
        crate::audit::note_sql(transcript);
    }
    let mut response = match outcome {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => return Err(engine_error(error)),
        Err(error) => return Err(runtime_error(&mount, error)),
    };
    if let Some(facts) = response.audit_facts.take() {
        crate::audit::note_facts(audit_facts(&mount, &facts));
    }
    if matches!(call.op, Op::Write | Op::Delete)
        && spec
            .fields
            .iter()
            .any(|f| matches!(f.kind, FieldKind::SqlDsn))
    {
        // The engine accepted a connection config: its grant follows it.
        let deleted = matches!(call.op, Op::Delete);
        crate::caps::sql::settle(
            &core.barrier,
            &core.sql_pools,
            &mount.entry.uuid,
            &rest,
            deleted,
            sql_grant,
        )
        .map_err(|e| ApiError::internal(format!("recording the SQL grant: {e}")))?;
    }
    if matches!(call.op, Op::Write | Op::Delete)
        && spec
            .fields
            .iter()
            .any(|f| matches!(f.kind, FieldKind::HttpsUrl))
    {
        // The engine accepted a config naming an HTTPS endpoint: its grant follows it.
        crate::caps::http::settle(
            &core.barrier,
            &mount.entry.uuid,
            &rest,
            matches!(call.op, Op::Delete),
            https_grant,
        )
        .map_err(|e| ApiError::internal(format!("recording the HTTPS grant: {e}")))?;
    }
    if let Some(raw) = response.raw {
        return Ok(Reply::Raw(raw.content_type, raw.body));
    }
    if let Some(auth) = response.auth {
        if !mount.is_auth() {
            return Err(ApiError::internal(format!(
                "engine at {} answered with a login, but only auth engines may",
                mount.entry.path
            )));
        }
        let mut envelope = crate::tokens::login::mint(core, &mount, &call.path, auth)?;
        envelope.warnings = response.warnings;
        return Ok(Reply::Envelope(envelope));
    }
    let data = match response.data {
        None => None,
        Some(text) => match serde_json::from_str::<Value>(&text) {
            Ok(value @ Value::Object(_)) => Some(value),
            _ => {
                return Err(ApiError::internal(format!(
                    "engine at {} returned malformed data",
                    mount.entry.path
                )));
            }
        },
    };
    let mut envelope = Envelope {
        data,
        warnings: response.warnings,
        mount_type: mount.engine_type().to_string(),
        ..Envelope::default()
    };
    if response.release_wal.len() > MAX_RELEASED_WAL {
        // Its side effects stay covered by their write-ahead entries and are rolled back.
        return Err(ApiError::internal(format!(
            "engine at {} released {} write-ahead entries in one response; the limit is {MAX_RELEASED_WAL}",
            mount.entry.path,
            response.release_wal.len()
        )));
    }
    let release = wal_keys(&mount, &response.release_wal);
    if let Some(lease_request) = response.lease {
        if !loaded
            .spec
            .secrets
            .iter()
            .any(|s| s.name == lease_request.secret_type)
        {
            return Err(ApiError::internal(format!(
                "engine at {} asked for a lease of undeclared secret type {:?}",
                mount.entry.path, lease_request.secret_type
            )));
        }
        let owner = token.as_ref().map(|(_, e)| e);
        crash_before_lease_store(&call.path);
        // The lease takes over the side effects from their write-ahead entries, in the
        // same commit that stores it.
        let (entry, warnings) =
            lease::create(core, &mount, &call.path, &lease_request, owner, &release)?;
        envelope.lease_id = entry.id.clone();
        envelope.lease_duration = entry.ttl();
        envelope.renewable = entry.renewable;
        envelope.warnings.extend(warnings);
    } else {
        for key in &release {
            if let Err(error) = core.barrier.delete(key) {
                tracing::warn!(mount = %mount.entry.path, %error, "could not release a write-ahead entry; it will be rolled back later");
            }
        }
    }
    if envelope.data.is_none() && envelope.warnings.is_empty() && envelope.lease_id.is_empty() {
        return match call.op {
            // An engine that answers a read with `respond::empty()` gets a 404 that says
            // so (Vault's status for a read with no response), not a silent one.
            Op::Read | Op::List => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "the engine returned no data for this read",
            )),
            _ => Ok(Reply::Empty(StatusCode::NO_CONTENT)),
        };
    }
    Ok(Reply::Envelope(envelope))
}

/// The caller's address as the engine sees it (empty when the call had no socket).
fn remote_address(call: &Call) -> String {
    call.remote.map(|ip| ip.to_string()).unwrap_or_default()
}

/// Write-ahead entries one response may hand over to its lease (one commit).
const MAX_RELEASED_WAL: usize = 256;

/// The barrier keys of the write-ahead entries an engine asked to release; ids that are
/// not ones the host issued (UUIDs) are ignored.
fn wal_keys(mount: &Mount, ids: &[String]) -> Vec<String> {
    ids.iter()
        .filter_map(|id| crate::caps::wal_key(id))
        .map(|key| mount.view.full(&key))
        .collect()
}

/// Fault injection for crash-safety tests, compiled into debug builds only: when
/// `COFFER_FAILPOINT_CRASH_BEFORE_LEASE` is a substring of the request path, the process
/// aborts after the engine's side effect and before its lease is stored.
fn crash_before_lease_store(path: &str) {
    #[cfg(debug_assertions)]
    if let Ok(pattern) = std::env::var("COFFER_FAILPOINT_CRASH_BEFORE_LEASE")
        && !pattern.is_empty()
        && path.contains(&pattern)
    {
        tracing::error!(path, "failpoint: aborting before the lease is stored");
        std::process::abort();
    }
    #[cfg(not(debug_assertions))]
    let _ = path;
}

fn engine_error(error: EngineError) -> ApiError {
    match error {
        EngineError::InvalidRequest(m) => ApiError::bad(m),
        EngineError::NotFound(m) if m.is_empty() => ApiError::not_found(),
        EngineError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, m),
        EngineError::PermissionDenied(m) => ApiError::new(StatusCode::FORBIDDEN, m),
        EngineError::Unsupported => ApiError::unsupported_operation(),
        EngineError::Upstream(m) => ApiError::new(StatusCode::BAD_GATEWAY, m),
        EngineError::Internal(m) => ApiError::internal(m),
    }
}

fn runtime_error(mount: &Mount, error: RuntimeError) -> ApiError {
    tracing::warn!(mount = %mount.entry.path, %error, "engine call failed");
    ApiError::internal(format!("{}: {error}", mount.entry.path))
}
