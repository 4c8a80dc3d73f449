//! The request pipeline: every API call, whatever its path, goes through [`run`].
//!
//! 1. The caller's token was resolved once, at admission (`http::admit`), before any body
//!    was read; here it is the [`Call`]'s `caller`.
//! 2. [`authorize`]: a token that is not root may do only what its policies allow on the
//!    path (Vault's ACL: winning rule, capability, parameter rules, sudo paths), decided
//!    before any backend runs; one lease's renew, revoke or lookup is its creator's, or
//!    decided on the lease-qualified path.
//! 3. Route to the [`LogicalBackend`] that serves the path: `sys/` ([`crate::system`]),
//!    `auth/token/` ([`crate::tokens::api`]), or a mounted engine ([`engine`]) (auth
//!    engines under `auth/<path>/` will be routed here through [`Core::auth_route`]).
//! 4. The backend's typed [`Reply`]; leases and tokens it asks for are registered by the
//!    backend through `lease` and `tokens` before the reply leaves.
//!
//! `http` only translates the wire format around this. What this module must never do:
//! let a request reach a backend before the ACL decided, or tell a caller that may not see
//! a path whether it exists (a refusal is 403 either way).

use std::sync::Arc;

use hyper::StatusCode;
use serde_json::{Map, Value};

use crate::acl::{self, AclRequest};
use crate::core::{Core, CoreError};
use crate::lease::LeaseError;
use crate::runtime::Operation;
use crate::tokens::TokenEntry;

pub mod engine;

/// An API failure: a status and the messages for `errors`.
#[derive(Debug)]
pub struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) errors: Vec<String>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            errors: vec![message.into()],
        }
    }
    pub(crate) fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub(crate) fn forbidden() -> Self {
        Self::new(StatusCode::FORBIDDEN, "permission denied")
    }
    pub(crate) fn not_found() -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            errors: Vec::new(),
        }
    }
    pub(crate) fn unsupported_operation() -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "unsupported operation")
    }
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl From<CoreError> for ApiError {
    fn from(error: CoreError) -> Self {
        match error {
            CoreError::Invalid(m) => Self::bad(m),
            CoreError::Barrier(crate::barrier::BarrierError::Sealed) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "Vault is sealed")
            }
            other => Self::internal(other.to_string()),
        }
    }
}

impl From<LeaseError> for ApiError {
    fn from(error: LeaseError) -> Self {
        match error {
            LeaseError::Invalid(m) | LeaseError::Engine(m) => Self::bad(m),
            LeaseError::OwnerRevoked => {
                Self::new(StatusCode::FORBIDDEN, LeaseError::OwnerRevoked.to_string())
            }
            LeaseError::Barrier(e) => Self::from(CoreError::Barrier(e)),
        }
    }
}

impl From<crate::tokens::TokenError> for ApiError {
    fn from(error: crate::tokens::TokenError) -> Self {
        match error {
            crate::tokens::TokenError::Invalid(m) => Self::bad(m),
            crate::tokens::TokenError::ParentRevoked => Self::forbidden(),
            crate::tokens::TokenError::Barrier(e) => Self::from(CoreError::Barrier(e)),
        }
    }
}

impl From<crate::policies::PolicyError> for ApiError {
    fn from(error: crate::policies::PolicyError) -> Self {
        match error {
            crate::policies::PolicyError::Invalid(m) => Self::bad(m),
            crate::policies::PolicyError::Barrier(e) => Self::from(CoreError::Barrier(e)),
        }
    }
}

impl From<crate::barrier::BarrierError> for ApiError {
    fn from(error: crate::barrier::BarrierError) -> Self {
        match error {
            crate::barrier::BarrierError::Invalid(m) => Self::bad(m),
            crate::barrier::BarrierError::AlreadyInitialized => {
                Self::bad("Vault is already initialized")
            }
            crate::barrier::BarrierError::NotInitialized => Self::bad("Vault is not initialized"),
            other => Self::from(CoreError::Barrier(other)),
        }
    }
}

/// What a handler produces.
pub enum Reply {
    /// The standard envelope.
    Envelope(Envelope),
    /// No body (204), or 202 for queued work.
    Empty(StatusCode),
    /// A bare JSON object (unauthenticated sys endpoints).
    Bare(StatusCode, Value),
    /// A raw, non-JSON body.
    Raw(String, Vec<u8>),
}

/// Vault's response envelope, before it is serialized.
#[derive(Default)]
pub struct Envelope {
    /// `data`.
    pub data: Option<Value>,
    /// `warnings`.
    pub warnings: Vec<String>,
    /// `lease_id` (empty when the reply holds no secret).
    pub lease_id: String,
    /// `lease_duration`, seconds.
    pub lease_duration: u64,
    /// `renewable`.
    pub renewable: bool,
    /// `auth`, for replies that mint a token.
    pub auth: Option<Value>,
    /// `mount_type`.
    pub mount_type: String,
    /// Copy `data`'s keys to the top level (Vault does this for `sys/*`).
    pub sys: bool,
}

impl Envelope {
    pub(crate) fn sys(data: Value) -> Self {
        Self {
            data: Some(data),
            sys: true,
            mount_type: "system".to_string(),
            ..Self::default()
        }
    }
}

/// The operation a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// GET.
    Read,
    /// LIST, or GET with `?list=true`.
    List,
    /// POST or PUT.
    Write,
    /// DELETE.
    Delete,
    /// HEAD.
    Head,
}

/// A parsed API request.
pub struct Call {
    /// What the call asks for.
    pub op: Op,
    /// The logical path, after `/v1/`, percent-decoded.
    pub path: String,
    /// The query string's pairs.
    pub query: Vec<(String, String)>,
    /// The JSON body's fields (and, for reads and lists, the query's).
    pub input: Map<String, Value>,
    /// The caller's token, resolved once at admission; `None` when none was sent, or when
    /// an invalid one was sent to a public path.
    pub caller: Option<(String, TokenEntry)>,
}

/// Runs one API call through the pipeline: ACL, then the backend that serves the path.
/// `public` is a declared unauthenticated read; `last_use` says the caller's token has no
/// uses left after this call, so it is revoked once the call is over (even if the client
/// hangs up and the future is dropped).
pub async fn run(
    core: &Arc<Core>,
    call: Call,
    public: bool,
    last_use: bool,
) -> Result<Reply, ApiError> {
    let spent = call
        .caller
        .as_ref()
        .filter(|_| last_use)
        .map(|(token, _)| token.clone());
    let _revoke_after = RevokeAfterLastUse {
        core: core.clone(),
        token: spent,
    };
    authorize(core, &call, public)?;
    dispatch(core, call).await
}

/// What serves a part of the path space: `sys/`, the token store, or a mounted engine.
/// A backend never sees a policy: the pipeline has decided before it is called.
pub trait LogicalBackend {
    /// Serves `call`; `rest` is the path below the backend's mount point.
    fn handle(
        &self,
        core: &Arc<Core>,
        call: &Call,
        rest: &str,
    ) -> impl std::future::Future<Output = Result<Reply, ApiError>> + Send;
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
        Op::Write => write_operation(core, &call.path),
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

/// Whether a write is a create or an update for the ACL. Engines whose path table offers
/// only `create` on the path are asked for `create`; everything else is an update (Vault
/// does the same for paths without an existence check; Coffer's tables have none yet).
pub(crate) fn write_operation(core: &Core, path: &str) -> acl::Operation {
    let create_only = core.route(path).is_some_and(|(mount, rest)| {
        mount.engine.as_ref().is_ok_and(|loaded| {
            loaded
                .paths
                .iter()
                .find(|p| p.regex.is_match(&rest))
                .and_then(|p| {
                    loaded
                        .spec
                        .paths
                        .get(usize::try_from(p.index).unwrap_or(usize::MAX))
                })
                .is_some_and(|spec| {
                    let has = |op: Operation| spec.operations.iter().any(|o| *o as u8 == op as u8);
                    has(Operation::Create) && !has(Operation::Update)
                })
        })
    });
    if create_only {
        acl::Operation::Create
    } else {
        acl::Operation::Update
    }
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

/// Routes a call the ACL admitted to the backend that serves its path.
pub(crate) async fn dispatch(core: &Arc<Core>, call: Call) -> Result<Reply, ApiError> {
    let path = call.path.clone();
    if let Some(rest) = path.strip_prefix("sys/").or((path == "sys").then_some("")) {
        return crate::system::System.handle(core, &call, rest).await;
    }
    if let Some(rest) = path.strip_prefix("auth/token/") {
        return crate::tokens::api::TokenStore
            .handle(core, &call, rest)
            .await;
    }
    if let Some((entry, _rest)) = core.auth_route(&path) {
        // Where auth engines will be served; the catalog has none yet, so no such mount
        // can have been enabled.
        return Err(ApiError::internal(format!(
            "auth method type {:?} at auth/{} is not available",
            entry.engine, entry.path
        )));
    }
    let Some((mount, rest)) = core.route(&path) else {
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

// ---------------------------------------------------------------------------------------
// Authentication.

/// The caller admission resolved, or 403 (admission already refused a missing or invalid
/// token everywhere but on public paths).
pub(crate) fn authenticate(call: &Call) -> Result<&(String, TokenEntry), ApiError> {
    call.caller.as_ref().ok_or_else(ApiError::forbidden)
}

pub(crate) fn require_root(token: &TokenEntry) -> Result<(), ApiError> {
    if token.is_root() {
        Ok(())
    } else {
        Err(ApiError::forbidden())
    }
}
