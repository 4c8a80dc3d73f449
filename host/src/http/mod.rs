//! The HTTP API, in Vault's wire format (`shared/design/vault-api.md`).
//!
//! [`route`] is the whole API as one async function from a request with a collected body
//! to a response, so tests can drive it without a socket; [`serve`] puts it on a listener.
//! It only translates the wire format: admission (token resolved once, limits, before any
//! body is read), parsing, the envelope and status codes. What a request may do and who
//! serves it is [`crate::pipeline`]'s.
//!
//! What it must never do: echo a request body, a token or an engine's internal data into
//! an error or a log line; return anything but `{"errors": [...]}` with
//! `Content-Type: application/json` on failure.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;

pub mod edge;
mod forward;

use edge::{Charge, Refusal};
pub use edge::{Edge, EdgeLimits};

use crate::core::Core;
use crate::fields;
use crate::pipeline::{self, ApiError, Call, Op, Reply};
pub use crate::system::VERSION;
pub use crate::system::create_root_token;
use crate::tokens::TokenEntry;

/// A response body.
pub type Body = Full<Bytes>;

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
    /// The connection's peer address, when the request came over a socket.
    remote: Option<std::net::IpAddr>,
}

/// The peer address of the connection a request came on (a request extension).
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub std::net::IpAddr);

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
        let (stream, peer) = match accepted {
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
            let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
                // An IPv4 client of a dual-stack listener is `::ffff:a.b.c.d`: compared
                // with CIDR blocks as the IPv4 address it is.
                request
                    .extensions_mut()
                    .insert(Peer(peer.ip().to_canonical()));
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
    if forward::must_forward(&core, &request) {
        return Ok(forward::forward(&core, &edge, request).await);
    }
    let mut request = request;
    if forward::was_forwarded(&request) {
        // The connection is a standby's, not the client's, and nothing here can verify
        // the client address the standby reports: the request has no known address, so
        // a CIDR-bound token or login fails closed (such clients talk to the active).
        request.extensions_mut().remove::<Peer>();
    }
    let (parts, body) = request.into_parts();
    let started = std::time::Instant::now();
    let response = match admit(&core, &parts) {
        Err(error) => {
            discard_body(body).await;
            error_response(&audit_refusal(&core, &parts, error))
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
    let path = parts.uri.path().trim_start_matches("/v1/");
    let listing = parts.method.as_str() == "LIST"
        || parts
            .uri
            .query()
            .is_some_and(|q| q.split('&').any(|p| p == "list=true"));
    let operation = match parts.method {
        _ if listing => "list",
        Method::GET | Method::HEAD => "read",
        Method::DELETE => "delete",
        _ => "write",
    };
    crate::metrics::global().request(
        &metrics_mount(&core, path),
        operation,
        response.status().as_u16(),
        started.elapsed(),
    );
    Ok(response)
}

/// The whole API for a request whose body is already collected (tests drive it without a
/// socket): the same admission, size limit and budget as [`handle`].
pub async fn route(core: &Arc<Core>, edge: &Edge, request: Request<Bytes>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let head = match admit(core, &parts) {
        Ok(head) => head,
        Err(error) => return error_response(&audit_refusal(core, &parts, error)),
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

/// Audits a request admission refused for its token (none, invalid, expired, used from
/// outside its CIDR blocks), as Vault logs failed authentications: the request entry with
/// its error. With a device enabled and none able to write it, the refusal becomes a 500
/// (nothing is answered without its entry). Other refusals (sealed, malformed) pass as
/// they are.
fn audit_refusal(core: &Core, parts: &hyper::http::request::Parts, error: ApiError) -> ApiError {
    if error.status != StatusCode::FORBIDDEN || !core.audit.is_active() {
        return error;
    }
    let Ok(head) = parse_head(parts) else {
        return error;
    };
    let call = Call {
        op: head.op,
        path: head.path,
        query: head.query,
        input: serde_json::Map::new(),
        creates: false,
        caller: None,
        remote: head.remote,
    };
    match pipeline::audit_refused(core, &call, &error) {
        Ok(()) => error,
        Err(unaudited) => unaudited,
    }
}

/// The mount a request path falls under, as the metrics label it (`sys/`, `auth/token/`,
/// a mount's path, or `unrouted`): never the path below the mount.
fn metrics_mount(core: &Core, path: &str) -> String {
    if path.starts_with("sys/") || path == "sys" {
        return "sys/".to_string();
    }
    if path.starts_with("auth/token/") {
        return "auth/token/".to_string();
    }
    core.route(path).map_or_else(
        || "unrouted".to_string(),
        |(mount, _)| mount.entry.path.clone(),
    )
}

/// The paths served before the barrier is unsealed, without a token.
fn always_public(path: &str) -> bool {
    matches!(
        path,
        "sys/health" | "sys/seal-status" | "sys/init" | "sys/unseal" | "sys/leader"
    )
}

/// Decides from the request line and headers whether the caller may go on: a public path
/// (read-only unless it is one of the seal endpoints) or a valid token. Each use of a
/// token is counted here, once per request.
fn admit(core: &Core, parts: &hyper::http::request::Parts) -> Result<Head, ApiError> {
    let mut head = parse_head(parts)?;
    if always_public(&head.path)
        || (head.path == "sys/metrics" && core.options.unauthenticated_metrics_access)
    {
        head.public = true;
        return Ok(head);
    }
    if core.barrier.is_sealed() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Vault is sealed",
        ));
    }
    let read = matches!(head.op, Op::Read | Op::List | Op::Head);
    let Some(login) = public_route(core, &head.path, read) else {
        return resolve_caller(core, head);
    };
    head.public = true;
    if login {
        // A login path of an auth engine: the caller is who the login says, so a token
        // sent along is neither used nor counted.
        head.token = None;
    }
    resolve_caller(core, head)
}

/// The rest of admission: the caller's token, required unless the path is public.
fn resolve_caller(core: &Core, mut head: Head) -> Result<Head, ApiError> {
    let remote = head.remote;
    // A token bound to CIDR blocks is invalid from anywhere else, and not used up there.
    let used = |token: &str| {
        core.tokens
            .use_token(token, |entry| entry.allows_address(remote))
    };
    head.caller = match (head.token.as_deref(), head.public) {
        (None, true) => None,
        (None, false) => return Err(ApiError::forbidden()),
        // An invalid token on a public path is ignored, as Vault does.
        (Some(token), true) => match used(token).ok().flatten() {
            Some(used) => {
                head.last_use = used.last;
                Some((token.to_string(), used.entry))
            }
            None => None,
        },
        (Some(token), false) => match used(token)? {
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

/// Whether `path` is served without a token (see [`crate::core::Mount::is_public`]):
/// `None` if not, `Some(true)` for an auth engine's login path, `Some(false)` for a public
/// read.
fn public_route(core: &Core, path: &str, read: bool) -> Option<bool> {
    let (mount, rest) = core.route(path)?;
    mount.is_public(&rest, read).then(|| mount.is_auth())
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
    let call = Call {
        op: head.op,
        path: head.path,
        query: head.query,
        input,
        caller: head.caller,
        creates: false,
        remote: head.remote,
    };
    let outcome = pipeline::run(core, call, head.public, head.last_use).await;
    match outcome {
        Ok(reply) => render(reply),
        Err(error) => error_response(&error),
    }
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
        remote: parts.extensions.get::<Peer>().map(|peer| peer.0),
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
            let request_id = if envelope.request_id.is_empty() {
                uuid::Uuid::new_v4().to_string()
            } else {
                envelope.request_id.clone()
            };
            let mut body = json!({
                "request_id": request_id,
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

#[cfg(test)]
mod tests;
