//! The HTTP API, in Vault's wire format (`shared/design/vault-api.md`).
//!
//! [`route`] is the whole API as one async function from a request with a collected body
//! to a response, so tests can drive it without a socket; [`serve`] puts it on a listener.
//! Handlers stay light: parse at the edge, call `core`, `lease` or an engine, shape the
//! envelope.
//!
//! What it must never do: echo a request body, a token or an engine's internal data into
//! an error or a log line; return anything but `{"errors": [...]}` with
//! `Content-Type: application/json` on failure.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;

pub mod edge;
mod openapi;

use edge::{Charge, Refusal};
pub use edge::{Edge, EdgeLimits};

use crate::acl::{self, AclRequest};
use crate::core::{Core, CoreError, Mount, MountRequest, MountTune};
use crate::fields;
use crate::lease::{self, LeaseError};
use crate::runtime::{
    EngineError, FieldKind, FieldValue, Operation, Request as EngineRequest, RuntimeError,
};
use crate::tokens::{SYSTEM_MAX_TTL, TokenEntry, random_base62, unix_now};

/// Most leases listed by one irrevocable-lease query.
const MAX_IRREVOCABLE_LISTED: usize = 10_000;
/// Version reported by health and seal status.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A response body.
pub type Body = Full<Bytes>;

/// An API failure: a status and the messages for `errors`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    errors: Vec<String>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            errors: vec![message.into()],
        }
    }
    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    fn forbidden() -> Self {
        Self::new(StatusCode::FORBIDDEN, "permission denied")
    }
    fn not_found() -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            errors: Vec::new(),
        }
    }
    fn unsupported_operation() -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "unsupported operation")
    }
    fn internal(message: impl Into<String>) -> Self {
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
enum Reply {
    /// The standard envelope.
    Envelope(Envelope),
    /// No body (204), or 202 for queued work.
    Empty(StatusCode),
    /// A bare JSON object (unauthenticated sys endpoints).
    Bare(StatusCode, Value),
    /// A raw, non-JSON body.
    Raw(String, Vec<u8>),
}

#[derive(Default)]
struct Envelope {
    data: Option<Value>,
    warnings: Vec<String>,
    lease_id: String,
    lease_duration: u64,
    renewable: bool,
    auth: Option<Value>,
    mount_type: String,
    /// Copy `data`'s keys to the top level (Vault does this for `sys/*`).
    sys: bool,
}

impl Envelope {
    fn sys(data: Value) -> Self {
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
enum Op {
    Read,
    List,
    Write,
    Delete,
    Head,
}

/// A parsed API request.
struct Call {
    op: Op,
    path: String,
    query: Vec<(String, String)>,
    input: Map<String, Value>,
    /// The caller's token, resolved once at admission; `None` when none was sent, or when
    /// an invalid one was sent to a public path.
    caller: Option<(String, TokenEntry)>,
}

/// A request as admission sees it: the request line and headers, before any body.
struct Head {
    op: Op,
    path: String,
    query: Vec<(String, String)>,
    token: Option<String>,
    /// Served without a token (its body is bounded by [`edge::MAX_PUBLIC_BODY`]).
    public: bool,
    caller: Option<(String, TokenEntry)>,
    /// The caller's token has no uses left after this request: revoke it once it is done.
    last_use: bool,
}

/// Serves the API on `listener` until `shutdown` resolves; over TLS when `tls` is given.
/// Every connection holds one of the edge's connection slots until it closes.
pub async fn serve(
    core: Arc<Core>,
    edge: Arc<Edge>,
    listener: TcpListener,
    tls: Option<openssl::ssl::SslAcceptor>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let tls = tls.map(Arc::new);
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = edge.connection_slot() => slot,
            () = &mut shutdown => return,
        };
        let Some(slot) = slot else { return };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => return,
        };
        let (stream, _) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // EMFILE and its kin persist until something closes: wait, don't spin.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(edge::ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let (core, edge, tls) = (core.clone(), edge.clone(), tls.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let limits = edge.limits.clone();
            let service = hyper::service::service_fn(move |request| {
                handle(core.clone(), edge.clone(), request)
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let outcome = match tls {
                None => {
                    builder
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await
                }
                Some(acceptor) => {
                    let Ok(ssl) = openssl::ssl::Ssl::new(acceptor.context()) else {
                        return;
                    };
                    let Ok(mut stream) = tokio_openssl::SslStream::new(ssl, stream) else {
                        return;
                    };
                    let handshake = std::pin::Pin::new(&mut stream).accept();
                    match tokio::time::timeout(limits.tls_handshake_timeout, handshake).await {
                        Ok(Ok(())) => {}
                        Ok(Err(error)) => {
                            tracing::debug!(%error, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!("TLS handshake timed out");
                            return;
                        }
                    }
                    builder
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await
                }
            };
            if let Err(error) = outcome {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
}

/// Admits the request from its head alone, then reads its body (bounded and charged to the
/// edge's budget) and routes it. A refused request's body is never buffered.
pub async fn handle(
    core: Arc<Core>,
    edge: Arc<Edge>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let (parts, body) = request.into_parts();
    let started = std::time::Instant::now();
    let response = match admit(&core, &parts) {
        Err(error) => {
            discard_body(body).await;
            error_response(&error)
        }
        Ok(head) => {
            let limit = body_limit(&edge, &head);
            let mut charge = Charge::default();
            match read_body(&edge, &mut charge, body, limit).await {
                Ok(bytes) => respond(&core, &edge, &mut charge, head, &bytes).await,
                Err(error) => error_response(&error),
            }
        }
    };
    tracing::debug!(method = %parts.method, path = %parts.uri.path(), status = response.status().as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "request");
    Ok(response)
}

/// The whole API for a request whose body is already collected (tests drive it without a
/// socket): the same admission, size limit and budget as [`handle`].
pub async fn route(core: &Arc<Core>, edge: &Edge, request: Request<Bytes>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let head = match admit(core, &parts) {
        Ok(head) => head,
        Err(error) => return error_response(&error),
    };
    if body.len() > body_limit(edge, &head) {
        return error_response(&too_large(body_limit(edge, &head)));
    }
    let mut charge = Charge::default();
    if let Err(refusal) = edge.charge_body(&mut charge, 0, body.len()) {
        return error_response(&ApiError::from(refusal));
    }
    respond(core, edge, &mut charge, head, &body).await
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::TooLarge(message) => Self::new(StatusCode::PAYLOAD_TOO_LARGE, message),
            Refusal::Busy => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is holding as many request bodies as it may; retry shortly",
            ),
        }
    }
}

fn body_limit(edge: &Edge, head: &Head) -> usize {
    if head.public {
        edge::MAX_PUBLIC_BODY.min(edge.limits.max_request_size)
    } else {
        edge.limits.max_request_size
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body is larger than the {limit}-byte limit"),
    )
}

/// The paths served before the barrier is unsealed, without a token.
fn always_public(path: &str) -> bool {
    matches!(
        path,
        "sys/health" | "sys/seal-status" | "sys/init" | "sys/unseal"
    )
}

/// Decides from the request line and headers whether the caller may go on: a public path
/// (read-only unless it is one of the seal endpoints) or a valid token. Each use of a
/// token is counted here, once per request.
fn admit(core: &Core, parts: &hyper::http::request::Parts) -> Result<Head, ApiError> {
    let mut head = parse_head(parts)?;
    if always_public(&head.path) {
        head.public = true;
        return Ok(head);
    }
    if core.barrier.is_sealed() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Vault is sealed",
        ));
    }
    head.public =
        matches!(head.op, Op::Read | Op::List | Op::Head) && engine_public(core, &head.path);
    head.caller = match (head.token.as_deref(), head.public) {
        (None, true) => None,
        (None, false) => return Err(ApiError::forbidden()),
        // An invalid token on a public path is ignored, as Vault does.
        (Some(token), true) => match core.tokens.use_token(token).ok().flatten() {
            Some(used) => {
                head.last_use = used.last;
                Some((token.to_string(), used.entry))
            }
            None => None,
        },
        (Some(token), false) => match core.tokens.use_token(token)? {
            Some(used) => {
                head.last_use = used.last;
                Some((token.to_string(), used.entry))
            }
            None => {
                return Err(ApiError {
                    status: StatusCode::FORBIDDEN,
                    errors: vec!["permission denied".to_string(), "invalid token".to_string()],
                });
            }
        },
    };
    Ok(head)
}

/// Whether `path` falls under one of its engine's public patterns.
fn engine_public(core: &Core, path: &str) -> bool {
    let Some((mount, rest)) = core.route(path) else {
        return false;
    };
    mount.engine.as_ref().is_ok_and(|loaded| {
        loaded
            .unauthenticated
            .iter()
            .any(|p| public_match(p, &rest))
    })
}

/// Vault's matching of an engine's unauthenticated paths: segments compare exactly, `+`
/// stands for any one segment, and a `*` (only ever the last character) makes the rest a
/// prefix match. A trailing `/` on the path (a LIST) is ignored.
pub fn public_match(pattern: &str, path: &str) -> bool {
    let path = path.strip_suffix('/').unwrap_or(path);
    let (stem, prefix) = match pattern.strip_suffix('*') {
        Some(stem) => (stem, true),
        None => (pattern, false),
    };
    let wanted: Vec<&str> = stem.split('/').collect();
    // The last piece holds the rest of the path, slashes included.
    let given: Vec<&str> = path.splitn(wanted.len(), '/').collect();
    if given.len() != wanted.len() {
        return false;
    }
    let last = wanted.len().saturating_sub(1);
    wanted
        .iter()
        .zip(&given)
        .enumerate()
        .all(|(index, (want, segment))| match (index == last, *want) {
            (true, "+") if prefix => !segment.is_empty() && !segment.starts_with('/'),
            (true, want) if prefix => segment.starts_with(want),
            (true, "+") => !segment.is_empty() && !segment.contains('/'),
            (false, "+") => !segment.is_empty(),
            (_, want) => *segment == want,
        })
}

/// Reads a body of at most `limit` bytes within the body timeout, charging what it keeps
/// to the edge's budget. An oversized body is discarded (bounded, not kept) so the client
/// reads the 413 instead of a reset.
async fn read_body(
    edge: &Edge,
    charge: &mut Charge,
    mut body: Incoming,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let declared =
        usize::try_from(hyper::body::Body::size_hint(&body).lower()).unwrap_or(usize::MAX);
    let read = async {
        // Sized by what arrives, never by what the client declares it will send.
        let mut collected =
            bytes::BytesMut::with_capacity(declared.min(limit).min(edge::UNCHARGED_BODY));
        let mut charged = collected.capacity();
        edge.charge_body(charge, 0, charged)?;
        let mut seen = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| ApiError::bad("could not read the request body"))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            seen = seen.saturating_add(data.len());
            if seen > limit {
                collected = bytes::BytesMut::new();
                if seen > limit.saturating_mul(2) {
                    break;
                }
                continue;
            }
            let held = collected.len() + data.len();
            if held > charged {
                // A growing buffer may hold up to twice its contents: charge for that.
                let target = held.saturating_mul(2).min(limit);
                edge.charge_body(charge, charged, target)?;
                charged = target;
            }
            collected.extend_from_slice(&data);
        }
        if seen > limit {
            return Err(too_large(limit));
        }
        Ok(collected.freeze())
    };
    match tokio::time::timeout(edge.limits.body_timeout, read).await {
        Ok(outcome) => outcome,
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {} seconds",
                edge.limits.body_timeout.as_secs()
            ),
        )),
    }
}

/// How much of a refused request's body is read and dropped so that a client still
/// sending it can read the refusal, and for how long.
const DISCARDED_ON_REFUSAL: usize = edge::MAX_PUBLIC_BODY;
const DISCARD_TIME: std::time::Duration = std::time::Duration::from_secs(1);

async fn discard_body(mut body: Incoming) {
    let discard = async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            seen = seen.saturating_add(frame.data_ref().map_or(0, Bytes::len));
            if seen > DISCARDED_ON_REFUSAL {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(DISCARD_TIME, discard).await;
}

/// Parses the admitted request's body (after charging what its JSON will take) and routes it.
async fn respond(
    core: &Arc<Core>,
    edge: &Edge,
    charge: &mut Charge,
    head: Head,
    body: &[u8],
) -> Response<Body> {
    if let Err(refusal) = edge.charge_parse(charge, body) {
        return error_response(&ApiError::from(refusal));
    }
    let mut input = match parse_body(body) {
        Ok(input) => input,
        Err(error) => return error_response(&error),
    };
    if matches!(head.op, Op::Read | Op::List) {
        for (key, value) in &head.query {
            if key != "list" {
                input
                    .entry(key.clone())
                    .or_insert(Value::String(value.clone()));
            }
        }
    }
    let spent = head
        .caller
        .as_ref()
        .filter(|_| head.last_use)
        .map(|(token, _)| token.clone());
    let public = head.public;
    let call = Call {
        op: head.op,
        path: head.path,
        query: head.query,
        input,
        caller: head.caller,
    };
    // Armed before the request runs: the used-up token is revoked once it is over, even if
    // the client hangs up and this future is dropped.
    let _revoke_after = RevokeAfterLastUse {
        core: core.clone(),
        token: spent,
    };
    let outcome = match authorize(core, &call, public) {
        Ok(()) => dispatch(core, call).await,
        Err(error) => Err(error),
    };
    match outcome {
        Ok(reply) => render(reply),
        Err(error) => error_response(&error),
    }
}

/// Revokes a token whose last use a request took, when that request is over.
struct RevokeAfterLastUse {
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
            if let Err(error) = revoke_token(&core, &token, false).await {
                tracing::warn!(error = ?error.errors, "revoking a used-up token failed; the scheduler retries");
            }
        });
    }
}

/// The ACL check: a caller that is not root may do what its policies allow on this path,
/// decided before any backend runs. Public reads and the seal endpoints need no policy.
/// A refusal is Vault's 403 whether or not the path exists.
fn authorize(core: &Core, call: &Call, public: bool) -> Result<(), ApiError> {
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

/// Whether a write is a create or an update for the ACL. Engines whose path table offers
/// only `create` on the path are asked for `create`; everything else is an update (Vault
/// does the same for paths without an existence check; Coffer's tables have none yet).
fn write_operation(core: &Core, path: &str) -> acl::Operation {
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
fn operator_setting(core: &Core, call: &Call) -> bool {
    let tunes_limits = call.op == Op::Write
        && call.path.starts_with("sys/mounts/")
        && call.path.ends_with("/tune")
        && ["engine_call_timeout", "engine_memory_limit"]
            .iter()
            .any(|k| call.input.get(*k).is_some_and(|v| !v.is_null()));
    tunes_limits
        || core.route(&call.path).is_some_and(|(mount, rest)| {
            mount.engine_type() == "pki" && acl::special_path_matches(acl::PKI_SUDO_PATHS, &rest)
        })
}

async fn dispatch(core: &Arc<Core>, call: Call) -> Result<Reply, ApiError> {
    match call.path.as_str() {
        "sys/health" => return Ok(health(core, &call)),
        "sys/seal-status" => return Ok(Reply::Bare(StatusCode::OK, seal_status(core)?)),
        "sys/init" => return init(core, &call),
        "sys/unseal" => return unseal(core, &call).await,
        _ => {}
    }
    let path = call.path.clone();
    if path == "sys" || path.starts_with("sys/") {
        let token = authenticate(&call)?;
        return system(core, &call, token).await;
    }
    if let Some(rest) = path.strip_prefix("auth/token/") {
        return token_api(core, &call, rest).await;
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
    engine(core, &call, mount, rest).await
}

fn parse_head(parts: &hyper::http::request::Parts) -> Result<Head, ApiError> {
    let raw_path = parts.uri.path();
    let Some(rest) = raw_path.strip_prefix("/v1/") else {
        return Err(ApiError::not_found());
    };
    let decoded = percent_decode(rest);
    let segments: Vec<&str> = decoded.split('/').filter(|s| !s.is_empty()).collect();
    if segments.iter().any(|s| *s == "." || *s == "..") {
        return Err(ApiError::bad(
            "path segments \".\" and \"..\" are not allowed",
        ));
    }
    let path = segments.join("/");
    let trailing_slash = rest.ends_with('/');
    let query: Vec<(String, String)> = parts
        .uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (
                percent_decode(&k.replace('+', " ")),
                percent_decode(&v.replace('+', " ")),
            )
        })
        .collect();
    let list_query = query
        .iter()
        .any(|(k, v)| k == "list" && fields::parse_bool(v).unwrap_or(false));
    let op = match parts.method {
        Method::GET if list_query => Op::List,
        Method::GET => Op::Read,
        Method::POST | Method::PUT => Op::Write,
        Method::DELETE => Op::Delete,
        Method::HEAD => Op::Head,
        ref other if other.as_str() == "LIST" => Op::List,
        _ => return Err(ApiError::unsupported_operation()),
    };
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    if header("x-vault-wrap-ttl").is_some() {
        return Err(ApiError::bad(
            "response wrapping (X-Vault-Wrap-TTL) is not supported by Coffer",
        ));
    }
    if header("x-vault-namespace").is_some_and(|ns| ns != "root" && ns != "/") {
        return Err(ApiError::bad(
            "namespaces (X-Vault-Namespace) are not supported by Coffer",
        ));
    }
    let token = header("x-vault-token").map(str::to_string).or_else(|| {
        parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
    });
    let path = if op == Op::List && trailing_slash && !path.is_empty() {
        format!("{path}/")
    } else {
        path
    };
    Ok(Head {
        op,
        path,
        query,
        token,
        public: false,
        caller: None,
        last_use: false,
    })
}

fn parse_body(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(Value::Null) => Ok(Map::new()),
        Ok(_) => Err(ApiError::bad("the request body must be a JSON object")),
        Err(error) => Err(ApiError::bad(format!(
            "failed to parse JSON input: {error}"
        ))),
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        if byte == b'%' {
            let hex = bytes
                .get(index + 1..index + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            if let Some(decoded) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(decoded);
                index += 3;
                continue;
            }
        }
        out.push(byte);
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn render(reply: Reply) -> Response<Body> {
    match reply {
        Reply::Envelope(envelope) => {
            let mut body = json!({
                "request_id": uuid::Uuid::new_v4().to_string(),
                "lease_id": envelope.lease_id,
                "renewable": envelope.renewable,
                "lease_duration": envelope.lease_duration,
                "data": envelope.data,
                "wrap_info": null,
                "warnings": if envelope.warnings.is_empty() { Value::Null } else { json!(envelope.warnings) },
                "auth": envelope.auth,
                "mount_type": envelope.mount_type,
            });
            if envelope.sys
                && let (Some(Value::Object(data)), Some(top)) =
                    (envelope.data.as_ref(), body.as_object_mut())
            {
                for (key, value) in data {
                    top.entry(key.clone()).or_insert_with(|| value.clone());
                }
            }
            json_response(StatusCode::OK, &body)
        }
        Reply::Empty(status) => {
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = status;
            response
        }
        Reply::Bare(status, value) => json_response(status, &value),
        Reply::Raw(content_type, body) => {
            let status = if body.is_empty() {
                StatusCode::NO_CONTENT
            } else {
                StatusCode::OK
            };
            let mut response = Response::new(Full::new(Bytes::from(body)));
            *response.status_mut() = status;
            if let Ok(value) = HeaderValue::from_str(&content_type) {
                response.headers_mut().insert(CONTENT_TYPE, value);
            }
            response
        }
    }
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn error_response(error: &ApiError) -> Response<Body> {
    json_response(error.status, &json!({ "errors": error.errors }))
}

// ---------------------------------------------------------------------------------------
// Unauthenticated sys endpoints.

fn health(core: &Core, call: &Call) -> Reply {
    let initialized = core.barrier.seal_config().ok().flatten().is_some();
    let sealed = core.barrier.is_sealed();
    let code = |name: &str, default: u16| {
        call.query
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.parse::<u16>().ok())
            .unwrap_or(default)
    };
    let status = if !initialized {
        code("uninitcode", 501)
    } else if sealed {
        code("sealedcode", 503)
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
            "standby": false,
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

fn seal_status(core: &Core) -> Result<Value, ApiError> {
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

fn init(core: &Arc<Core>, call: &Call) -> Result<Reply, ApiError> {
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
    };
    Ok(core.tokens.create(entry, id, &[])?)
}

async fn unseal(core: &Arc<Core>, call: &Call) -> Result<Reply, ApiError> {
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
    if was_sealed && !core.barrier.is_sealed() {
        let core_for_load = core.clone();
        tokio::task::spawn_blocking(move || core_for_load.post_unseal())
            .await
            .map_err(|e| ApiError::internal(e.to_string()))??;
    }
    Ok(Reply::Bare(StatusCode::OK, seal_status(core)?))
}

// ---------------------------------------------------------------------------------------
// Authentication.

/// The caller admission resolved, or 403 (admission already refused a missing or invalid
/// token everywhere but on public paths).
fn authenticate(call: &Call) -> Result<&(String, TokenEntry), ApiError> {
    call.caller.as_ref().ok_or_else(ApiError::forbidden)
}

fn require_root(token: &TokenEntry) -> Result<(), ApiError> {
    if token.is_root() {
        Ok(())
    } else {
        Err(ApiError::forbidden())
    }
}

// ---------------------------------------------------------------------------------------
// Authenticated sys endpoints.

async fn system(
    core: &Arc<Core>,
    call: &Call,
    token: &(String, TokenEntry),
) -> Result<Reply, ApiError> {
    let path = call.path.as_str();
    let rest = path.strip_prefix("sys/").unwrap_or_default();
    match (call.op, rest) {
        (Op::Write, "seal") => {
            require_root(&token.1)?;
            core.seal();
            Ok(Reply::Empty(StatusCode::NO_CONTENT))
        }
        (Op::Read, "mounts") => {
            let mut data = Map::new();
            for mount in core.mounts() {
                data.insert(mount.entry.path.clone(), mount_json(&mount));
            }
            Ok(Reply::Envelope(Envelope::sys(Value::Object(data))))
        }
        (_, rest) if rest.starts_with("mounts/") => {
            let target = rest.strip_prefix("mounts/").unwrap_or_default();
            match target.strip_suffix("/tune") {
                Some(mount_path) => tune(core, call, mount_path),
                None => mounts(core, call, target).await,
            }
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
        (Op::Read, "internal/specs/openapi") => {
            Ok(Reply::Bare(StatusCode::OK, openapi::document(core)))
        }
        (Op::Read, "plugins/catalog") => {
            let names: Vec<&str> = core.catalog.entries().map(|(n, _)| n).collect();
            Ok(Reply::Envelope(Envelope::sys(json!({ "secret": names }))))
        }
        (_, rest) if rest == "leases" || rest.starts_with("leases/") => {
            leases(core, call, &token.1, rest).await
        }
        _ => Err(ApiError::new(StatusCode::NOT_FOUND, "unsupported path")),
    }
}

/// `LIST sys/policies/acl` (names plus `root`), or legacy `GET sys/policy`.
fn policy_list(core: &Core, op: Op, legacy: bool) -> Result<Reply, ApiError> {
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
fn policy(core: &Core, call: &Call, name: &str, legacy: bool) -> Result<Reply, ApiError> {
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
fn capabilities(core: &Core, call: &Call, token: &TokenEntry) -> Result<Reply, ApiError> {
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

/// Paths one capabilities request may ask about.
const MAX_CAPABILITY_PATHS: usize = 1024;

fn mount_json(mount: &Mount) -> Value {
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
fn sys_duration(input: &Map<String, Value>, name: &str) -> Result<Option<u64>, ApiError> {
    match input.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s == "system" => Ok(Some(0)),
        Some(value) => fields::duration(value)
            .map(Some)
            .map_err(|e| ApiError::bad(format!("{name}: {e}"))),
    }
}

fn tune_from(input: &Map<String, Value>, mut tune: MountTune) -> Result<MountTune, ApiError> {
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

fn string_map(value: Option<&Value>, name: &str) -> Result<BTreeMap<String, String>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(value) => fields::key_values(value)
            .map(|pairs| pairs.into_iter().collect())
            .map_err(|e| ApiError::bad(format!("{name}: {e}"))),
    }
}

async fn mounts(core: &Arc<Core>, call: &Call, target: &str) -> Result<Reply, ApiError> {
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
            let config = match call.input.get("config") {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(config)) => config.clone(),
                Some(_) => return Err(ApiError::bad("config must be an object")),
            };
            let description = match call.input.get("description") {
                None | Some(Value::Null) => String::new(),
                Some(value) => {
                    fields::string(value).map_err(|e| ApiError::bad(format!("description: {e}")))?
                }
            };
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

fn tune(core: &Arc<Core>, call: &Call, target: &str) -> Result<Reply, ApiError> {
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

fn rfc3339(unix: u64) -> String {
    let secs = i64::try_from(unix).unwrap_or(i64::MAX);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn lease_id_from(call: &Call, suffix: &str) -> Option<String> {
    match call.input.get("lease_id") {
        Some(Value::String(id)) if !id.is_empty() => Some(id.trim_start_matches('/').to_string()),
        _ if !suffix.is_empty() => Some(suffix.to_string()),
        _ => None,
    }
}

async fn leases(
    core: &Arc<Core>,
    call: &Call,
    token: &TokenEntry,
    rest: &str,
) -> Result<Reply, ApiError> {
    let (action, suffix) = match rest.strip_prefix("leases/") {
        Some(tail) => tail.split_once('/').unwrap_or((tail, "")),
        None => ("", ""),
    };
    match (call.op, action) {
        (Op::Read, "") => {
            let kind = call
                .query
                .iter()
                .find(|(k, _)| k == "type")
                .map(|(_, v)| v.as_str());
            if kind != Some("irrevocable") {
                return Err(ApiError::bad("only type=irrevocable is supported here"));
            }
            require_root(token)?;
            let entries = lease::irrevocable(core, MAX_IRREVOCABLE_LISTED)?;
            let leases: Vec<Value> = entries
                .iter()
                .map(|e| {
                    json!({
                        "lease_id": e.id,
                        "mount_id": e.mount,
                        "error": e.last_error,
                        "revoke_attempts": e.revoke_attempts,
                        "expire_time": rfc3339(e.expire_ms / 1000),
                    })
                })
                .collect();
            Ok(Reply::Envelope(Envelope::sys(
                json!({ "lease_count": leases.len(), "leases": leases }),
            )))
        }
        (Op::Write, "renew") => {
            let id = lease_id_from(call, suffix)
                .ok_or_else(|| ApiError::bad("lease_id must be specified"))?;
            let increment = match call.input.get("increment") {
                None | Some(Value::Null) => 0,
                Some(value) => {
                    fields::duration(value).map_err(|e| ApiError::bad(format!("increment: {e}")))?
                }
            };
            let (entry, warnings) = lease::renew(core, &id, increment).await?;
            Ok(Reply::Envelope(Envelope {
                lease_id: entry.id.clone(),
                lease_duration: entry.ttl(),
                renewable: entry.renewable,
                warnings,
                mount_type: "system".to_string(),
                ..Envelope::default()
            }))
        }
        (Op::Write, "revoke") => {
            let id = lease_id_from(call, suffix)
                .ok_or_else(|| ApiError::bad("lease_id must be specified"))?;
            lease::revoke(core, &id, false).await?;
            Ok(Reply::Empty(StatusCode::NO_CONTENT))
        }
        (Op::Write, "revoke-prefix") | (Op::Write, "revoke-force") => {
            require_root(token)?;
            if suffix.is_empty() {
                return Err(ApiError::bad(
                    "a prefix is required, e.g. sys/leases/revoke-prefix/database/creds/role",
                ));
            }
            let prefix = if call.path.ends_with('/') {
                format!("{suffix}/")
            } else {
                suffix.to_string()
            };
            lease::revoke_prefix(core, &prefix, action == "revoke-force").await?;
            Ok(Reply::Empty(StatusCode::NO_CONTENT))
        }
        (Op::Write, "lookup") => {
            let id =
                lease_id_from(call, suffix).ok_or_else(|| ApiError::bad("missing lease id"))?;
            let entry = lease::lookup(core, &id)?.ok_or_else(|| ApiError::bad("invalid lease"))?;
            Ok(Reply::Envelope(Envelope::sys(json!({
                "id": entry.id,
                "issue_time": rfc3339(entry.issue_time),
                "expire_time": rfc3339(entry.expire_ms / 1000),
                "last_renewal": entry.last_renewal.map(rfc3339),
                "renewable": entry.renewable,
                "ttl": entry.ttl(),
                "irrevocable": entry.irrevocable,
            }))))
        }
        (Op::List, "lookup") => {
            require_root(token)?;
            let keys = lease::list(core, suffix)?;
            if keys.is_empty() {
                return Err(ApiError::not_found());
            }
            Ok(Reply::Envelope(Envelope::sys(json!({ "keys": keys }))))
        }
        _ => Err(ApiError::new(StatusCode::NOT_FOUND, "unsupported path")),
    }
}

// ---------------------------------------------------------------------------------------
// Token auth.

fn auth_json(token: &str, entry: &TokenEntry) -> Value {
    let now = unix_now();
    let token_policies: Vec<&String> = entry.policies.iter().collect();
    json!({
        "client_token": token,
        "accessor": entry.accessor,
        "policies": entry.policies,
        "token_policies": token_policies,
        "identity_policies": [],
        "metadata": if entry.meta.is_empty() { Value::Null } else { json!(entry.meta) },
        "lease_duration": entry.ttl(now),
        "renewable": entry.renewable && entry.expire_time.is_some(),
        "entity_id": "",
        "token_type": "service",
        "orphan": entry.orphan,
        "mfa_requirement": null,
        "num_uses": entry.num_uses,
    })
}

fn token_data(token: &str, entry: &TokenEntry) -> Value {
    let now = unix_now();
    json!({
        "accessor": entry.accessor,
        "creation_time": entry.creation_time,
        "creation_ttl": entry.creation_ttl,
        "display_name": entry.display_name,
        "entity_id": "",
        "expire_time": entry.expire_time.map(rfc3339),
        "explicit_max_ttl": entry.explicit_max_ttl,
        "id": token,
        "issue_time": rfc3339(entry.creation_time),
        "meta": if entry.meta.is_empty() { Value::Null } else { json!(entry.meta) },
        "num_uses": entry.num_uses,
        "period": (entry.period > 0).then_some(entry.period),
        "orphan": entry.orphan,
        "path": entry.path,
        "policies": entry.policies,
        "renewable": entry.renewable && entry.expire_time.is_some(),
        "ttl": entry.ttl(now),
        "type": "service",
    })
}

fn auth_reply(token: &str, entry: &TokenEntry) -> Reply {
    Reply::Envelope(auth_envelope(token, entry))
}

fn auth_envelope(token: &str, entry: &TokenEntry) -> Envelope {
    Envelope {
        auth: Some(auth_json(token, entry)),
        mount_type: "token".to_string(),
        ..Envelope::default()
    }
}

async fn token_api(core: &Arc<Core>, call: &Call, rest: &str) -> Result<Reply, ApiError> {
    let (token, entry) = authenticate(call)?;
    let (token, entry) = (token.clone(), entry.clone());
    let input = &call.input;
    let string_field = |name: &str| -> Result<Option<String>, ApiError> {
        match input.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => fields::string(value)
                .map(Some)
                .map_err(|e| ApiError::bad(format!("{name}: {e}"))),
        }
    };
    match (call.op, rest) {
        (Op::Write, "create") | (Op::Write, "create-orphan") => {
            create_token(core, call, &entry, rest == "create-orphan").await
        }
        (Op::Read, "lookup-self") => Ok(Reply::Envelope(Envelope {
            data: Some(token_data(&token, &entry)),
            mount_type: "token".to_string(),
            ..Envelope::default()
        })),
        (Op::Write, "lookup") | (Op::Read, "lookup") => {
            let target = string_field("token")?.ok_or_else(|| ApiError::bad("missing token"))?;
            let found = core
                .tokens
                .lookup(&target)?
                .ok_or_else(|| ApiError::bad("bad token"))?;
            Ok(Reply::Envelope(Envelope {
                data: Some(token_data(&target, &found)),
                mount_type: "token".to_string(),
                ..Envelope::default()
            }))
        }
        (Op::Write, "renew-self") | (Op::Write, "renew") => {
            let target = if rest == "renew" {
                string_field("token")?.ok_or_else(|| ApiError::bad("missing token"))?
            } else {
                token.clone()
            };
            let increment = match input.get("increment") {
                None | Some(Value::Null) => 0,
                Some(value) => {
                    fields::duration(value).map_err(|e| ApiError::bad(format!("increment: {e}")))?
                }
            };
            let renewed = core
                .tokens
                .renew(&target, increment, lease::token_expiry_key)?;
            Ok(auth_reply(&target, &renewed))
        }
        (Op::Write, "revoke-self") => {
            revoke_token(core, &token, false).await?;
            Ok(Reply::Empty(StatusCode::NO_CONTENT))
        }
        (Op::Write, "revoke") => {
            let target = string_field("token")?.ok_or_else(|| ApiError::bad("missing token"))?;
            revoke_token(core, &target, false).await?;
            Ok(Reply::Empty(StatusCode::NO_CONTENT))
        }
        (Op::Write, "revoke-orphan") => {
            require_root(&entry)?;
            let target = string_field("token")?.ok_or_else(|| ApiError::bad("missing token"))?;
            revoke_token(core, &target, true).await?;
            Ok(Reply::Empty(StatusCode::NO_CONTENT))
        }
        _ => Err(ApiError::new(StatusCode::NOT_FOUND, "unsupported path")),
    }
}

/// Revokes `token` and (unless `orphan_children`) its whole subtree, with their leases. The
/// work runs as its own task, so a client that goes away does not cut it short.
async fn revoke_token(
    core: &Arc<Core>,
    token: &str,
    orphan_children: bool,
) -> Result<(), ApiError> {
    let Some(accessor) = core.tokens.accessor_of(token)? else {
        return Ok(());
    };
    let core = core.clone();
    let task = tokio::spawn(async move {
        if orphan_children {
            core.tokens
                .remove_orphaning(&accessor, lease::token_expiry_key)?;
            lease::finish_token_revocations(&core, &[accessor], lease::Leases::Now).await
        } else {
            lease::revoke_token_tree(&core, &accessor, lease::Leases::Now).await
        }
    });
    task.await
        .map_err(|e| ApiError::internal(format!("token revocation failed: {e}")))??;
    Ok(())
}

async fn create_token(
    core: &Arc<Core>,
    call: &Call,
    parent: &TokenEntry,
    orphan: bool,
) -> Result<Reply, ApiError> {
    let input = &call.input;
    let flag = |name: &str, default: bool| -> Result<bool, ApiError> {
        match input.get(name) {
            None | Some(Value::Null) => Ok(default),
            Some(value) => {
                fields::boolean(value).map_err(|e| ApiError::bad(format!("{name}: {e}")))
            }
        }
    };
    let duration = |name: &str| -> Result<u64, ApiError> {
        match input.get(name) {
            None | Some(Value::Null) => Ok(0),
            Some(value) => {
                fields::duration(value).map_err(|e| ApiError::bad(format!("{name}: {e}")))
            }
        }
    };
    let mut policies: Vec<String> = match input.get("policies") {
        None | Some(Value::Null) => parent
            .policies
            .iter()
            .filter(|p| *p != "root" || parent.is_root())
            .cloned()
            .collect(),
        Some(value) => {
            fields::strings(value, true).map_err(|e| ApiError::bad(format!("policies: {e}")))?
        }
    };
    if !flag("no_default_policy", false)? && !policies.iter().any(|p| p == "default" || p == "root")
    {
        policies.push("default".to_string());
    }
    policies.sort();
    policies.dedup();
    if policies.len() > crate::tokens::MAX_POLICIES {
        return Err(ApiError::bad("too many policies"));
    }
    if !parent.is_root()
        && policies
            .iter()
            .any(|p| p != "default" && !parent.policies.contains(p))
    {
        return Err(ApiError::bad("child policies must be subset of parent"));
    }
    if parent.num_uses > 0 || parent.uses_spent {
        return Err(ApiError::bad(
            "restricted use token cannot generate child tokens",
        ));
    }
    let no_parent = orphan || flag("no_parent", false)?;
    let period = duration("period")?;
    if no_parent || period > 0 {
        // Tokens outside the tree, or renewable forever, are an operator's to make.
        require_root(parent)?;
    }
    if let Some(kind) = input.get("type").and_then(Value::as_str)
        && kind != "service"
        && kind != "default"
    {
        return Err(ApiError::bad(format!(
            "token type {kind:?} is not supported; Coffer issues service tokens"
        )));
    }
    let num_uses = match input.get("num_uses") {
        None | Some(Value::Null) => 0,
        Some(value) => {
            let uses = fields::int(value).map_err(|e| ApiError::bad(format!("num_uses: {e}")))?;
            u64::try_from(uses).map_err(|_| ApiError::bad("num_uses cannot be negative"))?
        }
    };
    let now = unix_now();
    let limits = TokenLimits {
        ttl: duration("ttl")?,
        explicit_max_ttl: duration("explicit_max_ttl")?,
        period,
        root: policies.iter().any(|p| p == "root"),
        parent_deadline: if no_parent { None } else { parent.deadline() },
    };
    let (ttl, explicit_max_ttl, warnings) = limits.resolve(now)?;
    let display_name = match input.get("display_name") {
        Some(Value::String(name)) if !name.is_empty() && name != "token" => format!("token-{name}"),
        _ => "token".to_string(),
    };
    let meta = string_map(input.get("meta"), "meta")?;
    let id = match input.get("id") {
        Some(Value::String(id)) if !id.is_empty() => {
            require_root(parent)?;
            Some(id.clone())
        }
        _ => None,
    };
    let entry = TokenEntry {
        accessor: random_base62(24),
        policies,
        meta,
        display_name,
        creation_time: now,
        creation_ttl: ttl,
        expire_time: (ttl > 0).then(|| now.saturating_add(ttl)),
        explicit_max_ttl,
        renewable: flag("renewable", true)?,
        orphan: no_parent,
        path: if orphan {
            "auth/token/create-orphan"
        } else {
            "auth/token/create"
        }
        .to_string(),
        parent: (!no_parent).then(|| parent.accessor.clone()),
        num_uses,
        uses_spent: false,
        period,
    };
    let expiry: Vec<String> = entry
        .expire_time
        .map(|expire| lease::token_expiry_key(&entry.accessor, expire))
        .into_iter()
        .collect();
    let token = core.tokens.create(entry.clone(), id.as_deref(), &expiry)?;
    let mut reply = auth_envelope(&token, &entry);
    reply.warnings = warnings;
    Ok(Reply::Envelope(reply))
}

/// What bounds a new token's lifetime.
struct TokenLimits {
    ttl: u64,
    explicit_max_ttl: u64,
    period: u64,
    root: bool,
    /// Unix time the parent can live to at most (none: an orphan, or an immortal parent).
    parent_deadline: Option<u64>,
}

impl TokenLimits {
    /// The (TTL, explicit max TTL) to store, and warnings for every cap applied: the
    /// system max bounds all but periodic tokens, an explicit max bounds the TTL, and a
    /// child's whole life fits inside its parent's.
    fn resolve(self, now: u64) -> Result<(u64, u64, Vec<String>), ApiError> {
        let mut warnings = Vec::new();
        let mut capped = |what: &str, value: u64, cap: u64, why: &str| {
            if value > cap {
                warnings.push(format!(
                    "{what} of {value}s is above {why}; capped to {cap}s"
                ));
                cap
            } else {
                value
            }
        };
        let mut explicit = capped(
            "explicit_max_ttl",
            self.explicit_max_ttl,
            SYSTEM_MAX_TTL,
            "the system max TTL",
        );
        let mut ttl = match (self.ttl, self.period, self.root) {
            (_, period, _) if period > 0 => period,
            (0, _, true) => 0,
            (0, _, false) => SYSTEM_MAX_TTL,
            (ttl, _, _) => capped("ttl", ttl, SYSTEM_MAX_TTL, "the system max TTL"),
        };
        if explicit > 0 {
            ttl = if ttl == 0 {
                explicit
            } else {
                capped("ttl", ttl, explicit, "explicit_max_ttl")
            };
        }
        if let Some(deadline) = self.parent_deadline {
            let left = deadline.saturating_sub(now);
            if left == 0 {
                return Err(ApiError::bad("the parent token is at the end of its life"));
            }
            ttl = if ttl == 0 {
                left
            } else {
                capped("ttl", ttl, left, "the parent token's remaining life")
            };
            explicit = if explicit == 0 {
                left
            } else {
                explicit.min(left)
            };
        }
        Ok((ttl, explicit, warnings))
    }
}

// ---------------------------------------------------------------------------------------
// Engines.

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
    let (compiled, captures) = loaded
        .paths
        .iter()
        .find_map(|p| p.regex.captures(&rest).map(|c| (p, c)))
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "unsupported path"))?;
    let spec = loaded
        .spec
        .paths
        .get(usize::try_from(compiled.index).unwrap_or(usize::MAX))
        .ok_or_else(|| ApiError::internal("path table index out of range"))?;
    let supports = |op: Operation| spec.operations.iter().any(|o| *o as u8 == op as u8);
    let operation = match call.op {
        Op::Read => Operation::Read,
        Op::List => Operation::List,
        Op::Delete => Operation::Delete,
        Op::Write if supports(Operation::Update) => Operation::Update,
        Op::Write => Operation::Create,
        Op::Head => return Err(ApiError::unsupported_operation()),
    };
    if !supports(operation) {
        return Err(ApiError::unsupported_operation());
    }
    let public = matches!(call.op, Op::Read | Op::List)
        && loaded
            .unauthenticated
            .iter()
            .any(|p| public_match(p, &rest));
    let token = match (call.caller.as_ref(), public) {
        (Some(caller), _) => Some(caller),
        (None, true) => None,
        (None, false) => return Err(ApiError::forbidden()),
    };
    let mut typed = Vec::with_capacity(spec.fields.len());
    let mut sql_grant = None;
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
    };
    let runtime = core.runtime.clone();
    let plugin = loaded.plugin.clone();
    let mut context = core.context(&mount);
    crate::caps::sql::allow_for_this_call(&mut context, sql_grant.as_ref());
    // The guest runs on a fiber on this worker, yielding every epoch tick.
    let outcome = runtime.handle(&plugin, context, &request).await;
    let response = match outcome {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => return Err(engine_error(error)),
        Err(error) => return Err(runtime_error(&mount, error)),
    };
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
    if let Some(raw) = response.raw {
        return Ok(Reply::Raw(raw.content_type, raw.body));
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
            Op::Read | Op::List => Err(ApiError::not_found()),
            _ => Ok(Reply::Empty(StatusCode::NO_CONTENT)),
        };
    }
    Ok(Reply::Envelope(envelope))
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
        EngineError::NotFound => ApiError::not_found(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_755_871_391), "2025-08-22T14:03:11Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn percent_decoding_and_globs() {
        assert_eq!(percent_decode("a%2Fb%20c"), "a/b c");
        assert_eq!(percent_decode("bad%zz"), "bad%zz");
    }

    #[test]
    fn public_patterns_match_as_vaults_do() {
        let cases = [
            ("ca", "ca", true),
            ("ca", "ca/pem", false),
            ("ca", "cab", false),
            ("issuers", "issuers/", true),
            ("cert/+", "cert/ab:cd", true),
            ("cert/+", "cert/", false),
            ("cert/+", "cert/a/b", false),
            ("issuer/+/pem", "issuer/root/pem", true),
            ("issuer/+/pem", "issuer/root/sign-intermediate", false),
            ("issuer/+/pem", "issuer//pem", false),
            ("issuer/+/crl*", "issuer/root/crl", true),
            ("issuer/+/crl*", "issuer/root/crl/delta/pem", true),
            ("issuer/+/crl*", "issuer/root/json", false),
            ("issuer/*", "issuer/r2/sign-intermediate", true),
            ("+", "anything", true),
            ("+", "", false),
        ];
        for (pattern, path, expected) in cases {
            assert_eq!(public_match(pattern, path), expected, "{pattern} vs {path}");
        }
    }
}
