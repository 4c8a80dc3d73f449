//! Request forwarding on an HA standby: every request but the seal, health and HA
//! endpoints goes to the active node, as it came (method, path, query, headers, body), and
//! its answer comes back as it is. With `X-Vault-No-Request-Forwarding: true` the standby
//! answers 307 with the active node's address instead, as Vault does.
//!
//! The standby neither admits nor audits a forwarded request: the active node does both,
//! once. It adds `X-Forwarded-For` with the client's address.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{
    CONNECTION, CONTENT_LENGTH, HOST, HeaderName, HeaderValue, LOCATION, PROXY_AUTHORIZATION, TE,
    TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::edge::Charge;
use super::{Body, Edge, Peer, error_response, read_body};
use crate::core::Core;
use crate::pipeline::ApiError;

/// How long the active node has to answer a forwarded request.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections a standby keeps to the active node.
const MAX_IDLE_TO_ACTIVE: usize = 32;
/// Largest answer relayed from the active node (a CRL or a long list fits).
const MAX_FORWARDED_RESPONSE: usize = 64 << 20;

/// Marks a request a standby forwarded: it is never forwarded again (two nodes that each
/// still think the other is active must not pass a request back and forth).
const FORWARDED_MARK: &str = "x-coffer-forwarded";

/// Paths a standby serves itself (below `/v1/`).
fn served_locally(path: &str) -> bool {
    crate::pipeline::standby_local(path.trim_start_matches('/').trim_start_matches("v1/"))
}

/// Whether a standby forwarded this request (it carries the standby's mark).
pub fn was_forwarded<B>(request: &Request<B>) -> bool {
    request.headers().contains_key(FORWARDED_MARK)
}

/// Whether this request must go to the active node.
pub fn must_forward(core: &Core, request: &Request<Incoming>) -> bool {
    core.is_standby() && !served_locally(request.uri().path())
}

fn client() -> &'static Client<HttpConnector, Full<Bytes>> {
    static CLIENT: OnceLock<Client<HttpConnector, Full<Bytes>>> = OnceLock::new();
    CLIENT.get_or_init(|| {
        Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(MAX_IDLE_TO_ACTIVE)
            .pool_idle_timeout(Duration::from_secs(30))
            .build_http()
    })
}

/// Forwards `request` to the active node (or redirects to it).
pub async fn forward(core: &Core, edge: &Edge, request: Request<Incoming>) -> Response<Body> {
    let unavailable =
        |message: &str| error_response(&ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message));
    let leader = match core.ha.get() {
        Some(ha) => ha.find_leader().await,
        None => None,
    };
    let Some(leader) =
        leader.filter(|l| Some(l.identity.as_str()) != core.ha.get().map(|h| h.identity()))
    else {
        return unavailable(
            "this node is a standby and no active node holds the lock yet; retry shortly",
        );
    };
    if was_forwarded(&request) {
        return unavailable(
            "this node is a standby and the request was already forwarded once; retry",
        );
    }
    let (mut parts, body) = request.into_parts();
    let target = format!(
        "{}{}",
        leader.address.trim_end_matches('/'),
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let no_forwarding = parts
        .headers
        .get("x-vault-no-request-forwarding")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if no_forwarding || !target.starts_with("http://") {
        // Vault's answer to a client that asked not to be forwarded (and ours for an
        // active node on TLS, which this relay does not speak).
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::TEMPORARY_REDIRECT;
        if let Ok(location) = HeaderValue::from_str(&target) {
            response.headers_mut().insert(LOCATION, location);
        }
        return response;
    }
    // Without a token, only an unauthenticated path's small body: the active would refuse
    // anything else before reading it, and a standby must not buffer more for anyone.
    let has_token = parts.headers.contains_key("x-vault-token")
        || parts.headers.contains_key(hyper::header::AUTHORIZATION);
    let limit = if has_token {
        edge.limits.max_request_size
    } else {
        super::edge::MAX_PUBLIC_BODY.min(edge.limits.max_request_size)
    };
    let mut charge = Charge::default();
    let bytes = match read_body(edge, &mut charge, body, limit).await {
        Ok(bytes) => bytes,
        Err(error) => return error_response(&error),
    };
    let Ok(uri) = target.parse::<hyper::Uri>() else {
        return unavailable("the active node's address is not a URL");
    };
    parts.uri = uri;
    // Hop-by-hop headers stay here (the body is re-framed with its length: a client's
    // Transfer-Encoding next to it would let the request be read two ways).
    for hop in [
        HOST,
        CONNECTION,
        TRANSFER_ENCODING,
        CONTENT_LENGTH,
        TE,
        TRAILER,
        UPGRADE,
        PROXY_AUTHORIZATION,
    ] {
        parts.headers.remove(hop);
    }
    for name in ["keep-alive", "proxy-connection"] {
        parts.headers.remove(name);
    }
    parts.headers.insert(
        HeaderName::from_static(FORWARDED_MARK),
        HeaderValue::from_static("1"),
    );
    if let Some(Peer(address)) = parts.extensions.get::<Peer>().copied()
        && let Ok(value) = HeaderValue::from_str(&address.to_string())
    {
        parts
            .headers
            .insert(HeaderName::from_static("x-forwarded-for"), value);
    }
    let outgoing = Request::from_parts(parts, Full::new(bytes));
    let answer = tokio::time::timeout(FORWARD_TIMEOUT, client().request(outgoing)).await;
    let response = match answer {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => {
            tracing::warn!(active = %leader.address, %error, "forwarding to the active node failed");
            return error_response(&ApiError::new(
                StatusCode::BAD_GATEWAY,
                "the active node could not be reached from this standby; retry",
            ));
        }
        Err(_) => {
            return error_response(&ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "the active node did not answer in time",
            ));
        }
    };
    let (parts, body) = response.into_parts();
    match Limited::new(body, MAX_FORWARDED_RESPONSE).collect().await {
        Ok(collected) => Response::from_parts(parts, Full::new(collected.to_bytes())),
        Err(_) => error_response(&ApiError::new(
            StatusCode::BAD_GATEWAY,
            "the active node's answer could not be relayed",
        )),
    }
}
