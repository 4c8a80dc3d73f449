//! The request pipeline: every API call, whatever its path, goes through [`run`].
//!
//! 1. The caller's token was resolved once, at admission (`http::admit`), before any body
//!    was read; here it is the [`Call`]'s `caller`. A help request (`?help=1`, Vault's
//!    help operation) is answered here by the `help` module from the path table, with its
//!    own authorization; no backend runs.
//! 2. [`authorize`]: a token that is not root may do only what its policies allow on the
//!    path (Vault's ACL: winning rule, capability, parameter rules, sudo paths), decided
//!    before any backend runs; one lease's renew, revoke or lookup is its creator's, or
//!    decided on the lease-qualified path.
//! 3. Route to the [`LogicalBackend`] that serves the path: `sys/` ([`crate::system`]),
//!    `auth/token/` ([`crate::tokens::api`]), or a mounted engine ([`engine`]): secrets
//!    engines, and auth engines at `auth/<path>/` (whose logins mint tokens,
//!    [`crate::tokens::login`]).
//! 4. The backend's typed [`Reply`]; leases and tokens it asks for are registered by the
//!    backend through `lease` and `tokens` before the reply leaves.
//!
//! With an audit device enabled ([`crate::audit`]), the request entry is written between
//! 2 and 3 (a refused request's too, with its error) and the response entry after 4; a
//! request whose entry no device could write never reaches a backend.
//!
//! `http` only translates the wire format around this. What this module must never do:
//! let a request reach a backend before the ACL decided, or tell a caller that may not see
//! a path whether it exists (a refusal is 403 either way).

use std::sync::Arc;

use hyper::StatusCode;

use crate::acl::{self, AclRequest};
use crate::audit;
use crate::core::Core;
use crate::tokens::TokenEntry;

pub mod engine;
pub(crate) mod help;

pub use crate::logical::{ApiError, Call, Envelope, LogicalBackend, Op, Reply};

/// Runs one API call through the pipeline: ACL, then the backend that serves the path.
/// `public` is a declared unauthenticated read; `last_use` says the caller's token has no
/// uses left after this call, so it is revoked once the call is over (even if the client
/// hangs up and the future is dropped).
pub async fn run(
    core: &Arc<Core>,
    mut call: Call,
    public: bool,
    last_use: bool,
) -> Result<Reply, ApiError> {
    if core.is_standby() && !help::requested(&call.query) && !standby_local(&call.path) {
        return Err(not_active());
    }
    let spent = call
        .caller
        .as_ref()
        .filter(|_| last_use)
        .map(|(token, _)| token.clone());
    let _revoke_after = RevokeAfterLastUse {
        core: core.clone(),
        token: spent,
    };
    if help::requested(&call.query) {
        // Vault's help operation: the path table answers, no backend runs.
        return help::help(core, &call, public);
    }
    if call.op == Op::Write
        && let Some(role) = call.path.strip_prefix("auth/token/roles/")
    {
        // Vault's existence check on token roles: a new role needs `create`, an existing
        // one `update`.
        call.creates = core.tokens.role(role).ok().flatten().is_none();
    } else if call.op == Op::Write {
        call.creates = match engine::write_kind(core, &call.path) {
            engine::WriteKind::Create => true,
            engine::WriteKind::Update => false,
            engine::WriteKind::Checked(mount, rest) => {
                // The guest's existence read runs only for a caller that may create or
                // update here; one that may do neither is refused without it.
                if authorize_as(core, &call, public, true).is_err() {
                    authorize_as(core, &call, public, false)?;
                }
                !engine::exists(core, &call, mount, &rest).await?
            }
        };
    }
    let audited = audited(core, &call);
    if let Err(denied) = authorize(core, &call, public) {
        if audited {
            // As Vault: a refused request is logged, with its error, and never answered
            // without its entry.
            let record = audit::Record::new(&call, mount_info(core, &call.path));
            core.audit
                .log_request(&record, Some(&denied.errors.join("; ")))?;
        }
        return Err(denied);
    }
    if !audited {
        return dispatch(core, call).await;
    }
    audited_dispatch(core, call).await
}

/// Writes the request entry of a call refused before the pipeline (at admission, for its
/// token) with its error; fails when no device could write it.
pub(crate) fn audit_refused(core: &Core, call: &Call, error: &ApiError) -> Result<(), ApiError> {
    let record = audit::Record::new(call, mount_info(core, &call.path));
    core.audit
        .log_request(&record, Some(&error.errors.join("; ")))?;
    Ok(())
}

/// Whether `call` is audited: with a device enabled, every call but the unauthenticated
/// `sys/` endpoints (health, seal status, init, unseal: Vault does not audit them, and
/// they answer while sealed, when no device is loaded).
fn audited(core: &Core, call: &Call) -> bool {
    core.audit.is_active() && !(call.caller.is_none() && call.path.starts_with("sys/"))
}

/// The audit hook: the request entry is written before the backend runs, and if no
/// device could write it the request fails with 500 and has no effect. The response entry
/// is written after; if no device can write it the caller gets 500 too (as Vault), but
/// the request has taken effect: its side effects (a credential issued, a secret
/// written) stand, and the server log says which request it was.
async fn audited_dispatch(core: &Arc<Core>, call: Call) -> Result<Reply, ApiError> {
    let record = audit::Record::new(&call, mount_info(core, &call.path));
    let devices = core.audit.log_request(&record, None)?;
    let (mut outcome, notes) = audit::collect(&record.id, dispatch(core, call)).await;
    if let Ok(Reply::Envelope(envelope)) = &mut outcome {
        envelope.request_id = record.id.clone();
    }
    if let Err(error) = devices.log_response(&record, &audit::Response::of(&outcome, notes)) {
        tracing::error!(request_id = %record.id, %error,
            "the response of a request that has taken effect could not be audited; the caller gets 500");
        return Err(error.into());
    }
    outcome
}

/// The mount a path is routed to, as the audit entries name it, with the fields its
/// engine's path table declares not sensitive.
fn mount_info(core: &Core, path: &str) -> audit::MountInfo {
    if path == "sys" || path.starts_with("sys/") {
        return audit::MountInfo {
            point: "sys/".to_string(),
            kind: "system".to_string(),
            ..audit::MountInfo::default()
        };
    }
    if path.starts_with("auth/token/") {
        return audit::MountInfo {
            point: "auth/token/".to_string(),
            kind: "token".to_string(),
            accessor: core
                .auth_mount_at(crate::core::TOKEN_AUTH_PATH)
                .map(|entry| entry.accessor)
                .unwrap_or_default(),
            ..audit::MountInfo::default()
        };
    }
    let Some((mount, rest)) = core.route(path) else {
        return audit::MountInfo::default();
    };
    let (clear_request, clear_response) = mount
        .engine
        .as_ref()
        .ok()
        .and_then(|loaded| engine::matched(loaded, &rest).ok())
        .map(|(_, _, spec)| {
            let fields = spec.fields.iter().filter(|f| f.audit_clear);
            (
                fields.map(|f| f.name.clone()).collect(),
                spec.audit_clear_response.clone(),
            )
        })
        .unwrap_or_default();
    audit::MountInfo {
        point: mount.entry.path.clone(),
        kind: mount.entry.engine.clone(),
        accessor: mount.entry.accessor.clone(),
        clear_request,
        clear_response,
    }
}

/// Revokes a token whose last use a request took, when that request is over.
pub(crate) struct RevokeAfterLastUse {
    core: Arc<Core>,
    token: Option<String>,
}

impl Drop for RevokeAfterLastUse {
    fn drop(&mut self) {
        let (Some(token), Ok(runtime)) = (self.token.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let core = self.core.clone();
        runtime.spawn(async move {
            if let Err(error) = crate::tokens::api::revoke_token(&core, &token, false).await {
                tracing::warn!(error = ?error.errors, "revoking a used-up token failed; the scheduler retries");
            }
        });
    }
}

/// The ACL check: a caller that is not root may do what its policies allow on this path,
/// decided before any backend runs. Public reads and the seal endpoints need no policy.
/// A refusal is Vault's 403 whether or not the path exists.
pub(crate) fn authorize(core: &Core, call: &Call, public: bool) -> Result<(), ApiError> {
    authorize_as(core, call, public, call.creates)
}

/// [`authorize`], with a write taken as a create (`creates`) or an update.
fn authorize_as(core: &Core, call: &Call, public: bool, creates: bool) -> Result<(), ApiError> {
    let Some((_, token)) = &call.caller else {
        return Ok(());
    };
    if public || token.is_root() {
        return Ok(());
    }
    // Mount metadata for CLIs' kv preflight (`bao kv get` asks before every call): any
    // valid token may read it, as every Vault token effectively can for mounts it uses.
    if call.op == Op::Read && call.path.starts_with("sys/internal/ui/mounts/") {
        return Ok(());
    }
    let acl = core.policies.acl(&token.policies)?;
    if let Some(decided) = authorize_lease_call(core, call, token, &acl) {
        return decided;
    }
    let path = match call.op {
        Op::List if !call.path.ends_with('/') => format!("{}/", call.path),
        _ => call.path.clone(),
    };
    let operation = match call.op {
        Op::Read | Op::Head => acl::Operation::Read,
        Op::List => acl::Operation::List,
        Op::Delete => acl::Operation::Delete,
        Op::Write if creates => acl::Operation::Create,
        Op::Write => acl::Operation::Update,
    };
    let request = AclRequest::new(&path, operation).with_parameters(&call.input);
    let request = AclRequest {
        needs_sudo: request.needs_sudo || operator_setting(core, call),
        ..request
    };
    acl.allowed(&request).map_err(|denial| {
        tracing::debug!(path = %call.path, %denial, "denied by policy");
        ApiError::forbidden()
    })
}

/// Lease ownership: a renew, revoke or lookup of one lease (`sys/leases/{renew,revoke,
/// lookup}`, the `sys/renew` and `sys/revoke` aliases, the lease id in the body or the URL)
/// is allowed outright for the token that created the lease. For any other lease, or an
/// id that names none, the ACL decides on the lease-qualified path
/// `sys/leases/<op>/<lease_id>` (update; no sudo), so `default`'s exact grants on
/// `sys/leases/renew` and `sys/leases/lookup` reach only the caller's own leases, and an
/// operator's `sys/leases/revoke/database/creds/*` reaches every database lease. A caller
/// without permission gets 403 whether or not the lease exists. `None`: not such a call
/// (or no lease id given), decided as any other path.
fn authorize_lease_call(
    core: &Core,
    call: &Call,
    token: &TokenEntry,
    acl: &acl::Acl,
) -> Option<Result<(), ApiError>> {
    if call.op != Op::Write {
        return None;
    }
    let rest = call.path.strip_prefix("sys/")?;
    let canonical = match rest.strip_prefix("leases/") {
        Some(tail) => tail.to_string(),
        None => crate::system::lease_alias(rest)?
            .strip_prefix("leases/")?
            .to_string(),
    };
    let (action, suffix) = canonical
        .split_once('/')
        .unwrap_or((canonical.as_str(), ""));
    if !matches!(action, "renew" | "revoke" | "lookup") {
        return None;
    }
    let id = crate::system::lease_id_from(call, suffix)?;
    let owned = match crate::lease::lookup(core, &id) {
        Ok(entry) => entry
            .is_some_and(|entry| entry.token_accessor.as_deref() == Some(token.accessor.as_str())),
        Err(error) => return Some(Err(ApiError::from(error))),
    };
    if owned {
        return Some(Ok(()));
    }
    let qualified = format!("sys/leases/{action}/{id}");
    let request = AclRequest {
        needs_sudo: false,
        ..AclRequest::new(&qualified, acl::Operation::Update).with_parameters(&call.input)
    };
    Some(acl.allowed(&request).map_err(|denial| {
        tracing::debug!(path = %call.path, lease = %id, %denial, "lease call denied by policy");
        ApiError::forbidden()
    }))
}

/// Requests that are an operator's to make beyond Vault's sudo paths: an engine's root
/// paths (PKI's `root`, `root/sign-self-issued`), and tuning a mount's sandbox limits.
pub(crate) fn operator_setting(core: &Core, call: &Call) -> bool {
    let tunes_limits = call.op == Op::Write
        && call.path.starts_with("sys/mounts/")
        && call.path.ends_with("/tune")
        && ["engine_call_timeout", "engine_memory_limit"]
            .iter()
            .any(|k| call.input.get(*k).is_some_and(|v| !v.is_null()));
    // Vault's token store checks sudo on revoke-orphan in its handler (its root-path
    // pattern, `revoke-orphan/*`, does not cover the bare path).
    let revokes_orphan = call.op == Op::Write && call.path == "auth/token/revoke-orphan";
    tunes_limits
        || revokes_orphan
        || core.route(&call.path).is_some_and(|(mount, rest)| {
            mount.engine_type() == "pki" && acl::special_path_matches(acl::PKI_SUDO_PATHS, &rest)
        })
}

/// What an HA standby answers itself (everything else was forwarded to the active).
pub(crate) fn standby_local(path: &str) -> bool {
    matches!(
        path,
        "sys/health" | "sys/seal-status" | "sys/init" | "sys/unseal" | "sys/leader" | "sys/metrics"
    )
}

/// The refusal of a request that reached an HA node as it stepped down.
fn not_active() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "this node stopped being the active node while serving the request; retry",
    )
}

/// Routes a call the ACL admitted to the backend that serves its path.
pub(crate) async fn dispatch(core: &Arc<Core>, call: Call) -> Result<Reply, ApiError> {
    let path = call.path.clone();
    if let Some(rest) = path.strip_prefix("sys/").or((path == "sys").then_some("")) {
        return crate::system::System.handle(core, &call, rest).await;
    }
    if let Some(rest) = path.strip_prefix("auth/token/") {
        return crate::tokens::api::TokenAuth
            .handle(core, &call, rest)
            .await;
    }
    let Some((mount, rest)) = core.route(&path) else {
        if core.is_standby() {
            // An HA node that stepped down while this request was on its way: its mounts
            // are gone, the request is not answered as if the path did not exist.
            return Err(not_active());
        }
        let disabling = core
            .mount_path_of(&path)
            .and_then(|at| core.mount_at(&at))
            .filter(|mount| mount.fenced());
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            match disabling {
                Some(mount) => format!(
                    "no handler for route {path:?}: the mount at {} is being disabled",
                    mount.entry.path
                ),
                None => format!("no handler for route {path:?}. route entry not found."),
            },
        ));
    };
    engine::Engine(mount).handle(core, &call, &rest).await
}

#[cfg(test)]
mod tests;
