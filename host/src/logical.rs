//! The logical request and response every backend speaks (Vault's `logical` package):
//! [`Call`] in, [`Reply`] or [`ApiError`] out, and the [`LogicalBackend`] trait that the
//! native `sys/` and `auth/token/` backends and mounted engines implement.
//!
//! It sits below both the pipeline (which routes calls) and the backends (which serve
//! them), so neither depends on the other's module. What it must never hold: a secret in
//! an error message; errors say what the caller can fix, internal faults are 500s.

use std::sync::Arc;

use hyper::StatusCode;
use serde_json::{Map, Value};

use crate::core::{Core, CoreError};
use crate::lease::LeaseError;
use crate::tokens::TokenEntry;

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
            // The key names storage layout (a token's hashed id, a mount's id): logged only.
            CoreError::Barrier(crate::barrier::BarrierError::Integrity(key)) => {
                tracing::error!(%key, "storage integrity check failed");
                Self::internal(
                    "a stored entry failed its integrity check (details in the server log)",
                )
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
    /// `request_id`: the audit entries' request id when the request was audited; empty
    /// makes a fresh one when the reply is written.
    pub request_id: String,
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
    /// For a write: whether it creates what was not there (Vault's existence check, see
    /// [`engine::write_kind`]); otherwise it is an update. Set by [`run`].
    pub creates: bool,
    /// The caller's token, resolved once at admission; `None` when none was sent, when
    /// an invalid one was sent to a public path, and always on a login path.
    pub caller: Option<(String, TokenEntry)>,
    /// The connection's peer address; `None` when the call did not come over a socket.
    pub remote: Option<std::net::IpAddr>,
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

// ---------------------------------------------------------------------------------------
// Authentication.

/// The caller admission resolved, or 403 (admission already refused a missing or invalid
/// token everywhere but on public paths).
pub(crate) fn authenticate(call: &Call) -> Result<&(String, TokenEntry), ApiError> {
    call.caller.as_ref().ok_or_else(ApiError::forbidden)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_integrity_failure_is_a_500_without_the_storage_key() {
        let key = "sys/token/id/0123456789abcdef";
        let error = ApiError::from(CoreError::Barrier(crate::barrier::BarrierError::Integrity(
            key.to_string(),
        )));
        assert_eq!(error.status, StatusCode::INTERNAL_SERVER_ERROR);
        let text = error.errors.join(" ");
        assert!(text.contains("integrity"), "{text}");
        assert!(!text.contains("0123456789abcdef"), "{text}");
    }
}
