//! `coffer:host/http`: outbound HTTPS to the endpoints an operator granted a mount.
//!
//! Grants follow the `sql` capability's model: an `https-url` field in an authenticated
//! write names a destination (an [`Origin`]: host and port, the scheme is always https).
//! During that write it is reachable ([`stage`], [`allow_for_this_call`]), so the engine
//! can verify it; it lasts, under `sys/grants/<mount-uuid>/https-config/<path>`, only once
//! the engine accepted the write ([`settle`]). A rewrite replaces the config's grant, a
//! delete withdraws it, and disabling the mount removes them all ([`revoke_grants`]).
//!
//! A guest's `send` is checked against the mount's grants before any socket is opened.
//! Requests are HTTPS only, with the server's certificate verified against the request's
//! `ca-pem` (or the system roots) and its name checked; redirects are returned, never
//! followed; request and response are bounded ([`MAX_REQUEST_BODY`],
//! [`MAX_RESPONSE_BODY`], [`MAX_HEADER_BYTES`]) and so is time ([`REQUEST_TIMEOUT`] and
//! the call's deadline).
//!
//! What it must never do: reach a destination the operator did not write, or put request
//! headers or bodies (bearer tokens, reviewed JWTs) into an error or a log line.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::Uri;
use hyper_util::rt::TokioIo;
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use openssl::x509::X509;
use openssl::x509::store::X509StoreBuilder;
use serde::{Deserialize, Serialize};

use crate::barrier::{Barrier, BarrierError};
use crate::runtime::bindings::coffer::host::http;
use crate::runtime::bindings::coffer::host::types::HostError;
use crate::runtime::{CallContext, CallState};

/// Largest request body a guest may send (a TokenReview is a few KiB).
pub const MAX_REQUEST_BODY: usize = 1 << 20;
/// Largest response body handed to a guest; reading stops beyond it. It is copied into
/// the guest's memory, and the APIs engines call answer in kilobytes.
pub const MAX_RESPONSE_BODY: usize = 1 << 20;
/// Most header bytes (names and values) of a request, and of a response.
pub const MAX_HEADER_BYTES: usize = 16 << 10;
/// Longest one request may take, connecting and reading included (the call's own
/// deadline may cut it shorter).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest URL accepted.
const MAX_URL_BYTES: usize = 8 << 10;
/// Configs (each with its grant) one mount may hold.
const MAX_GRANTS: usize = 256;
/// The read buffer of a connection: a response head larger than this is refused, so a
/// server cannot make the host buffer more than a little over [`MAX_HEADER_BYTES`].
const READ_BUFFER_BYTES: usize = 32 << 10;
/// Methods a guest may use.
const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];
/// Request headers the host sets itself.
const HOST_HEADERS: [&str; 5] = [
    "host",
    "content-length",
    "connection",
    "transfer-encoding",
    "upgrade",
];

/// Where a grant lets a mount connect: `https://<host>:<port>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Origin {
    /// Host name (lower-cased) or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "https://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "https://{}:{}", self.host, self.port)
        }
    }
}

/// An `https://` URL taken apart: where it goes and what it asks there.
#[derive(Debug)]
struct Target {
    origin: Origin,
    /// Path and query, `/` when the URL has none.
    path_and_query: String,
    /// The `Host` header value, as the URL spelled its authority.
    authority: String,
}

/// Why a URL is refused.
#[derive(Debug, PartialEq, Eq)]
enum UrlRefusal {
    /// It parses, but names something never reachable: another scheme, credentials.
    NotAllowed(String),
    /// It is not an absolute URL.
    Malformed(String),
}

impl UrlRefusal {
    fn message(self) -> String {
        match self {
            Self::NotAllowed(m) | Self::Malformed(m) => m,
        }
    }
}

impl From<UrlRefusal> for HostError {
    fn from(refusal: UrlRefusal) -> Self {
        match refusal {
            UrlRefusal::NotAllowed(m) => HostError::Denied(m),
            UrlRefusal::Malformed(m) => HostError::Invalid(m),
        }
    }
}

impl Target {
    /// Parses `url`, refusing anything but an absolute `https://` URL without
    /// credentials. The messages never repeat the URL (it may hold credentials).
    fn parse(url: &str) -> Result<Self, UrlRefusal> {
        if url.len() > MAX_URL_BYTES {
            return Err(UrlRefusal::Malformed(format!(
                "the URL is longer than {MAX_URL_BYTES} bytes"
            )));
        }
        let uri: Uri = url
            .parse()
            .map_err(|_| UrlRefusal::Malformed("not a valid absolute URL".to_string()))?;
        match uri.scheme_str() {
            Some(scheme) if scheme.eq_ignore_ascii_case("https") => {}
            Some(_) => {
                return Err(UrlRefusal::NotAllowed(
                    "only https:// URLs are allowed".to_string(),
                ));
            }
            None => {
                return Err(UrlRefusal::Malformed(
                    "not an absolute URL (expected https://host[:port])".to_string(),
                ));
            }
        }
        let authority = uri
            .authority()
            .ok_or_else(|| UrlRefusal::Malformed("the URL names no host".to_string()))?;
        if authority.as_str().contains('@') {
            return Err(UrlRefusal::NotAllowed(
                "credentials in the URL are not allowed".to_string(),
            ));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        if host.is_empty() {
            return Err(UrlRefusal::Malformed("the URL names no host".to_string()));
        }
        let port = match authority.port() {
            Some(port) => port.as_u16(),
            None => 443,
        };
        Ok(Self {
            origin: Origin { host, port },
            path_and_query: uri
                .path_and_query()
                .map_or_else(|| "/".to_string(), |p| p.as_str().to_string()),
            authority: authority.as_str().to_string(),
        })
    }
}

/// The destination an operator-written `https-url` field grants. An empty value grants
/// nothing (the engine decides whether it is acceptable).
pub fn origin_of(url: &str) -> Result<Option<Origin>, String> {
    if url.trim().is_empty() {
        return Ok(None);
    }
    Target::parse(url.trim())
        .map(|target| Some(target.origin))
        .map_err(UrlRefusal::message)
}

fn grants_prefix(mount_uuid: &str) -> String {
    format!("sys/grants/{mount_uuid}/https-config/")
}

/// A config's destination, staged by an operator's request: reachable during that request
/// only, lasting once [`settle`]d.
#[derive(Debug)]
pub struct StagedGrant {
    origin: Option<Origin>,
}

/// Stages the grant of the `https-url` an authenticated operator request writes to the
/// config at `path`. Refused when the URL is not an https URL without credentials, or
/// when the mount already holds [`MAX_GRANTS`] other configs.
pub fn stage(
    barrier: &Barrier,
    mount_uuid: &str,
    path: &str,
    url: &str,
) -> Result<StagedGrant, String> {
    let origin = origin_of(url)?;
    super::check_grant_room(
        barrier,
        &grants_prefix(mount_uuid),
        path,
        MAX_GRANTS,
        "configs naming HTTPS endpoints",
    )?;
    Ok(StagedGrant { origin })
}

/// Lets the call in `context` reach what `staged` grants (and nothing lasting).
pub fn allow_for_this_call(context: &mut CallContext, staged: Option<&StagedGrant>) {
    if let (Some(http), Some(Some(origin))) = (
        context.http.as_mut(),
        staged.map(|staged| staged.origin.as_ref()),
    ) {
        http.this_call.push(origin.clone());
    }
}

/// After the engine accepted a write or delete of the config at `path`: records the
/// staged grant (replacing the config's previous one), or withdraws the config's grant
/// when `deleted`. A write that did not supply the field keeps the grant it had.
pub fn settle(
    barrier: &Barrier,
    mount_uuid: &str,
    path: &str,
    deleted: bool,
    staged: Option<StagedGrant>,
) -> Result<(), BarrierError> {
    let key = format!("{}{path}", grants_prefix(mount_uuid));
    if deleted {
        return barrier.delete(&key);
    }
    match staged {
        None => Ok(()),
        Some(StagedGrant { origin: None }) => barrier.delete(&key),
        Some(StagedGrant {
            origin: Some(origin),
        }) => {
            let value = serde_json::to_vec(&origin)
                .map_err(|e| BarrierError::Invalid(format!("grant encoding: {e}")))?;
            barrier.put(&key, &value)
        }
    }
}

/// The destinations the mount's stored configs grant it.
pub fn granted(barrier: &Barrier, mount_uuid: &str) -> Result<Vec<Origin>, BarrierError> {
    let mut origins = Vec::new();
    for key in barrier.scan(&grants_prefix(mount_uuid), None, MAX_GRANTS)? {
        let Some(bytes) = barrier.get(&key)? else {
            continue;
        };
        match serde_json::from_slice::<Origin>(&bytes) {
            Ok(origin) => origins.push(origin),
            Err(error) => tracing::warn!(%key, %error, "unreadable HTTPS grant ignored"),
        }
    }
    Ok(origins)
}

/// Deletes a mount's HTTPS grants (on disable).
pub fn revoke_grants(barrier: &Barrier, mount_uuid: &str) -> Result<(), BarrierError> {
    for key in barrier.scan(&grants_prefix(mount_uuid), None, MAX_GRANTS * 2)? {
        barrier.delete(&key)?;
    }
    Ok(())
}

/// Per-call HTTPS state: where the mount's grants are kept, what this call alone may
/// reach, and when the call must be over.
pub struct HttpState {
    barrier: Arc<Barrier>,
    mount_uuid: String,
    this_call: Vec<Origin>,
    deadline: Instant,
}

impl HttpState {
    /// State for one call of the mount `mount_uuid`, which must be over within
    /// `call_timeout`. Grants are read when the guest sends, so calls that send nothing
    /// pay nothing for them.
    pub fn new(barrier: Arc<Barrier>, mount_uuid: String, call_timeout: Duration) -> Self {
        Self {
            barrier,
            mount_uuid,
            this_call: Vec::new(),
            deadline: Instant::now() + call_timeout,
        }
    }
}

/// Links `coffer:host/http`.
pub(crate) fn add_to_linker(
    linker: &mut wasmtime::component::Linker<CallState>,
) -> wasmtime::Result<()> {
    http::add_to_linker::<CallState, wasmtime::component::HasSelf<CallState>>(linker, |s| s)
}

impl http::Host for CallState {
    async fn send(&mut self, req: http::Request) -> Result<http::Response, HostError> {
        let mount = self.caps.mount().to_string();
        let state = self.caps.http.as_ref().ok_or_else(|| {
            HostError::Denied("no outbound HTTPS destination is granted to this mount".to_string())
        })?;
        let target = Target::parse(&req.url)?;
        let mut allowed =
            granted(&state.barrier, &state.mount_uuid).map_err(crate::runtime::barrier_to_host)?;
        allowed.extend(state.this_call.iter().cloned());
        let left = state.deadline.saturating_duration_since(Instant::now());
        let outcome = send(&allowed, &target, req, left).await;
        match &outcome {
            Ok(response) => {
                tracing::debug!(mount, origin = %target.origin, status = response.status, "https request")
            }
            Err(HostError::Denied(_)) => {
                tracing::warn!(mount, origin = %target.origin, "https request refused: not granted")
            }
            Err(error) => {
                tracing::debug!(mount, origin = %target.origin, ?error, "https request failed")
            }
        }
        outcome
    }
}

/// Sends `req` to `target` if `allowed` names its origin, within `left` (and at most
/// [`REQUEST_TIMEOUT`]).
async fn send(
    allowed: &[Origin],
    target: &Target,
    req: http::Request,
    left: Duration,
) -> Result<http::Response, HostError> {
    if !allowed.contains(&target.origin) {
        return Err(HostError::Denied(format!(
            "{} is not granted to this mount; an operator must write a config naming it",
            target.origin
        )));
    }
    let request = build_request(target, req.method, req.headers, req.body)?;
    if left.is_zero() {
        return Err(HostError::Unavailable(
            "the call's time limit was reached before the HTTPS request".to_string(),
        ));
    }
    let limit = left.min(REQUEST_TIMEOUT);
    match tokio::time::timeout(limit, exchange(target, &req.ca_pem, request)).await {
        Ok(outcome) => outcome,
        Err(_) if limit < REQUEST_TIMEOUT => Err(HostError::Unavailable(format!(
            "{}: the call's time limit was reached during the HTTPS request",
            target.origin
        ))),
        Err(_) => Err(HostError::Unavailable(format!(
            "{}: no response within {REQUEST_TIMEOUT:?}",
            target.origin
        ))),
    }
}

/// The hyper request for a guest's method, headers and body, within the bounds.
fn build_request(
    target: &Target,
    method: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
) -> Result<hyper::Request<Full<Bytes>>, HostError> {
    if !METHODS.contains(&method.as_str()) {
        return Err(HostError::Invalid(format!(
            "method {method:?} is not one of {}",
            METHODS.join(", ")
        )));
    }
    if body.len() > MAX_REQUEST_BODY {
        return Err(HostError::Invalid(format!(
            "the request body is {} bytes; the limit is {MAX_REQUEST_BODY}",
            body.len()
        )));
    }
    let header_bytes: usize = headers
        .iter()
        .map(|(name, value)| name.len().saturating_add(value.len()))
        .fold(0, usize::saturating_add);
    if header_bytes > MAX_HEADER_BYTES {
        return Err(HostError::Invalid(format!(
            "the request headers are {header_bytes} bytes; the limit is {MAX_HEADER_BYTES}"
        )));
    }
    let mut builder = hyper::Request::builder()
        .method(method.as_str())
        .uri(target.path_and_query.as_str())
        .header(hyper::header::HOST, target.authority.as_str());
    for (name, value) in headers {
        if HOST_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            continue;
        }
        let name = hyper::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| HostError::Invalid(format!("invalid header name {name:?}")))?;
        // The value may be a credential: the message names the header, never its value.
        let value = hyper::header::HeaderValue::from_str(&value)
            .map_err(|_| HostError::Invalid(format!("invalid value for header {name}")))?;
        builder = builder.header(name, value);
    }
    builder
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| HostError::Invalid(format!("invalid request: {e}")))
}

/// Connects, verifies the server, sends `request` and reads the bounded response.
async fn exchange(
    target: &Target,
    ca_pem: &str,
    request: hyper::Request<Full<Bytes>>,
) -> Result<http::Response, HostError> {
    let origin = &target.origin;
    let unavailable = |what: &str, error: &dyn std::fmt::Display| {
        HostError::Unavailable(format!("{origin}: {what}: {error}"))
    };
    let ssl = tls(&origin.host, ca_pem)?;
    let tcp = tokio::net::TcpStream::connect((origin.host.as_str(), origin.port))
        .await
        .map_err(|e| unavailable("cannot connect", &e))?;
    let mut stream =
        tokio_openssl::SslStream::new(ssl, tcp).map_err(|e| unavailable("TLS setup", &e))?;
    std::pin::Pin::new(&mut stream)
        .connect()
        .await
        .map_err(|e| {
            let verify = stream.ssl().verify_result();
            if verify == openssl::x509::X509VerifyResult::OK {
                unavailable("TLS handshake failed", &e)
            } else {
                unavailable(
                    "TLS handshake failed: the server's certificate was not accepted",
                    &verify,
                )
            }
        })?;
    let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(READ_BUFFER_BYTES)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unavailable("HTTP handshake", &e))?;
    // The connection is driven until this request is done; dropping it (a bound hit, the
    // timeout) closes the socket.
    let driver = tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "https connection ended");
        }
    });
    let result = read_response(origin, sender.send_request(request).await).await;
    driver.abort();
    result
}

/// Reads the response head and at most [`MAX_RESPONSE_BODY`] bytes of body.
async fn read_response(
    origin: &Origin,
    response: Result<hyper::Response<hyper::body::Incoming>, hyper::Error>,
) -> Result<http::Response, HostError> {
    let response = response.map_err(|e| {
        if e.is_parse_too_large() {
            HostError::Invalid(format!(
                "{origin}: the response headers exceed {MAX_HEADER_BYTES} bytes"
            ))
        } else {
            HostError::Unavailable(format!("{origin}: {e}"))
        }
    })?;
    let status = response.status().as_u16();
    let mut headers = Vec::with_capacity(response.headers().len());
    let mut header_bytes = 0usize;
    for (name, value) in response.headers() {
        header_bytes = header_bytes
            .saturating_add(name.as_str().len())
            .saturating_add(value.len());
        headers.push((
            name.as_str().to_string(),
            String::from_utf8_lossy(value.as_bytes()).into_owned(),
        ));
    }
    if header_bytes > MAX_HEADER_BYTES {
        return Err(HostError::Invalid(format!(
            "{origin}: the response headers are {header_bytes} bytes; the limit is {MAX_HEADER_BYTES}"
        )));
    }
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| HostError::Unavailable(format!("{origin}: {e}")))?;
        if let Some(data) = frame.data_ref() {
            if bytes.len().saturating_add(data.len()) > MAX_RESPONSE_BODY {
                return Err(HostError::Invalid(format!(
                    "{origin}: the response body exceeds {MAX_RESPONSE_BODY} bytes"
                )));
            }
            bytes.extend_from_slice(data);
        }
    }
    Ok(http::Response {
        status,
        headers,
        body: bytes,
    })
}

/// The TLS session for `host`: verified against `ca_pem` alone when given (else the
/// system roots), with the certificate required to name `host`.
fn tls(host: &str, ca_pem: &str) -> Result<openssl::ssl::Ssl, HostError> {
    let internal = |e: openssl::error::ErrorStack| HostError::Internal(format!("TLS setup: {e}"));
    let mut builder = SslConnector::builder(SslMethod::tls_client()).map_err(internal)?;
    builder.set_verify(SslVerifyMode::PEER);
    builder.set_alpn_protos(b"\x08http/1.1").map_err(internal)?;
    if !ca_pem.trim().is_empty() {
        let certificates = X509::stack_from_pem(ca_pem.as_bytes()).map_err(|_| {
            HostError::Invalid("ca-pem holds no readable PEM certificate".to_string())
        })?;
        if certificates.is_empty() {
            return Err(HostError::Invalid(
                "ca-pem holds no readable PEM certificate".to_string(),
            ));
        }
        let mut store = X509StoreBuilder::new().map_err(internal)?;
        for certificate in certificates {
            store.add_cert(certificate).map_err(internal)?;
        }
        builder.set_cert_store(store.build());
    }
    // `into_ssl` sets SNI for a name and checks the certificate names the host (a DNS
    // name, or an IP address SAN for an address).
    builder
        .build()
        .configure()
        .and_then(|config| config.into_ssl(host))
        .map_err(internal)
}

#[cfg(test)]
mod tests;
