//! The HTTPS capability against a real TLS server on loopback: what is granted works,
//! everything else is refused before a socket opens or fails the way the WIT says.

use std::sync::atomic::{AtomicUsize, Ordering};

use http_body_util::Full;
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{Ssl, SslAcceptor};
use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
use openssl::x509::{X509Builder, X509NameBuilder};

use super::*;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn key() -> Result<PKey<Private>, openssl::error::ErrorStack> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    PKey::from_ec_key(EcKey::generate(&group)?)
}

/// A certificate for `subject` signed by `issuer` (self-signed when `None`); a CA when
/// `sans` is empty, else a server certificate naming them (`IP:` prefix for addresses).
fn certificate(
    subject: &str,
    key: &PKey<Private>,
    issuer: Option<(&X509, &PKey<Private>)>,
    sans: &[&str],
) -> Result<X509, openssl::error::ErrorStack> {
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_nid(Nid::COMMONNAME, subject)?;
    let name = name.build();
    let mut builder = X509Builder::new()?;
    builder.set_version(2)?;
    let mut serial = BigNum::new()?;
    serial.rand(64, MsbOption::MAYBE_ZERO, false)?;
    let serial = serial.to_asn1_integer()?;
    builder.set_serial_number(&serial)?;
    builder.set_subject_name(&name)?;
    builder.set_issuer_name(issuer.map_or(&name, |(cert, _)| cert.subject_name()))?;
    builder.set_pubkey(key)?;
    let (not_before, not_after) = (Asn1Time::days_from_now(0)?, Asn1Time::days_from_now(1)?);
    builder.set_not_before(&not_before)?;
    builder.set_not_after(&not_after)?;
    if sans.is_empty() {
        builder.append_extension(BasicConstraints::new().critical().ca().build()?)?;
    } else {
        let mut alt = SubjectAlternativeName::new();
        for san in sans {
            match san.strip_prefix("IP:") {
                Some(ip) => alt.ip(ip),
                None => alt.dns(san),
            };
        }
        let extension = alt.build(&builder.x509v3_context(issuer.map(|(c, _)| &**c), None))?;
        builder.append_extension(extension)?;
    }
    builder.sign(issuer.map_or(key, |(_, k)| k), MessageDigest::sha256())?;
    Ok(builder.build())
}

/// A TLS server on 127.0.0.1 with a certificate for `localhost` and `127.0.0.1` from its
/// own CA. Counts the connections it accepts.
struct Server {
    port: u16,
    ca_pem: String,
    connections: Arc<AtomicUsize>,
    /// Connections accepted and not yet closed.
    open: Arc<AtomicUsize>,
}

/// Counts a connection as open until it is dropped.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn server() -> Result<Server, Box<dyn std::error::Error>> {
    server_for(&["localhost", "IP:127.0.0.1"]).await
}

/// A TLS server on 127.0.0.1 whose certificate names `sans`.
async fn server_for(sans: &[&str]) -> Result<Server, Box<dyn std::error::Error>> {
    let ca_key = key()?;
    let ca = certificate("test CA", &ca_key, None, &[])?;
    let leaf_key = key()?;
    let leaf = certificate("localhost", &leaf_key, Some((&ca, &ca_key)), sans)?;
    let mut acceptor = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
    acceptor.set_private_key(&leaf_key)?;
    acceptor.set_certificate(&leaf)?;
    let acceptor = Arc::new(acceptor.build());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let connections = Arc::new(AtomicUsize::new(0));
    let open = Arc::new(AtomicUsize::new(0));
    let (counter, open_counter) = (connections.clone(), open.clone());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            open_counter.fetch_add(1, Ordering::SeqCst);
            let still_open = Open(open_counter.clone());
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _still_open = still_open;
                let Ok(ssl) = Ssl::new(acceptor.context()) else {
                    return;
                };
                let Ok(mut stream) = tokio_openssl::SslStream::new(ssl, tcp) else {
                    return;
                };
                if std::pin::Pin::new(&mut stream).accept().await.is_err() {
                    return;
                }
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), hyper::service::service_fn(answer))
                    .await;
            });
        }
    });
    Ok(Server {
        port,
        ca_pem: String::from_utf8(ca.to_pem()?)?,
        connections,
        open,
    })
}

/// The test server's routes.
async fn answer(
    request: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, hyper::http::Error> {
    let reply = hyper::Response::builder();
    match request.uri().path() {
        "/echo" => {
            let method = request.method().to_string();
            let auth = request
                .headers()
                .get("authorization")
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_default();
            let body = request
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            reply
                .header("x-method", method)
                .header("x-auth", auth)
                .body(Full::new(body))
        }
        "/redirect" => reply
            .status(302)
            .header("location", "https://elsewhere.example/")
            .body(Full::new(Bytes::new())),
        "/big" => reply.body(Full::new(Bytes::from(vec![b'x'; MAX_RESPONSE_BODY + 1]))),
        "/big-headers" => reply
            .header("x-filler", "y".repeat(MAX_HEADER_BYTES + 1))
            .body(Full::new(Bytes::new())),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            reply.body(Full::new(Bytes::new()))
        }
        _ => reply.status(404).body(Full::new(Bytes::new())),
    }
}

fn request(url: &str, ca_pem: &str) -> http::Request {
    http::Request {
        method: "POST".to_string(),
        url: url.to_string(),
        headers: vec![("Authorization".to_string(), "Bearer reviewer".to_string())],
        body: b"{\"spec\":{}}".to_vec(),
        ca_pem: ca_pem.to_string(),
    }
}

async fn send_to(
    allowed: &[Origin],
    req: http::Request,
    left: Duration,
) -> Result<http::Response, HostError> {
    let target = Target::parse(&req.url)?;
    send(allowed, &target, req, left).await
}

fn origin(host: &str, port: u16) -> Origin {
    Origin {
        host: host.to_string(),
        port,
    }
}

const LEFT: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_not_granted_is_refused_before_a_socket_opens() -> TestResult {
    let server = server().await?;
    let port = server.port;
    let granted = [origin("127.0.0.1", port)];
    for (url, why) in [
        (format!("https://localhost:{port}/echo"), "another host"),
        (
            format!("https://127.0.0.1:{}/echo", port.wrapping_add(1)),
            "another port",
        ),
        (format!("http://127.0.0.1:{port}/echo"), "plain http"),
        (
            format!("https://user:secret@127.0.0.1:{port}/echo"),
            "credentials",
        ),
    ] {
        let refused = send_to(&granted, request(&url, &server.ca_pem), LEFT).await;
        assert!(
            matches!(&refused, Err(HostError::Denied(m)) if !m.contains("secret")),
            "{why}: expected denied, got {refused:?}"
        );
    }
    // Nothing granted at all.
    let url = format!("https://127.0.0.1:{port}/echo");
    let refused = send_to(&[], request(&url, &server.ca_pem), LEFT).await;
    assert!(matches!(refused, Err(HostError::Denied(_))), "{refused:?}");
    assert_eq!(server.connections.load(Ordering::SeqCst), 0);
    // Malformed is invalid, not denied.
    let malformed = send_to(&granted, request("not a url", ""), LEFT).await;
    assert!(
        matches!(malformed, Err(HostError::Invalid(_))),
        "{malformed:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_host_is_reached_with_the_callers_method_headers_and_body() -> TestResult {
    let server = server().await?;
    for host in ["127.0.0.1", "localhost"] {
        let granted = [origin(host, server.port)];
        let url = format!("https://{host}:{}/echo", server.port);
        let response = send_to(&granted, request(&url, &server.ca_pem), LEFT).await?;
        assert_eq!(response.status, 200);
        assert_eq!(response.body, b"{\"spec\":{}}");
        let header = |name: &str| {
            response
                .headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(header("x-method").as_deref(), Some("POST"));
        assert_eq!(header("x-auth").as_deref(), Some("Bearer reviewer"));
    }
    assert_eq!(server.connections.load(Ordering::SeqCst), 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_returned_not_followed() -> TestResult {
    let server = server().await?;
    let granted = [origin("127.0.0.1", server.port)];
    let url = format!("https://127.0.0.1:{}/redirect", server.port);
    let response = send_to(&granted, request(&url, &server.ca_pem), LEFT).await?;
    assert_eq!(response.status, 302);
    assert!(
        response
            .headers
            .iter()
            .any(|(n, v)| n == "location" && v == "https://elsewhere.example/")
    );
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_and_responses_are_invalid() -> TestResult {
    let server = server().await?;
    let granted = [origin("127.0.0.1", server.port)];
    let base = format!("https://127.0.0.1:{}", server.port);
    let big = send_to(
        &granted,
        request(&format!("{base}/big"), &server.ca_pem),
        LEFT,
    )
    .await;
    assert!(
        matches!(&big, Err(HostError::Invalid(m)) if m.contains("response body exceeds")),
        "{big:?}"
    );
    let headers = send_to(
        &granted,
        request(&format!("{base}/big-headers"), &server.ca_pem),
        LEFT,
    )
    .await;
    assert!(
        matches!(&headers, Err(HostError::Invalid(m)) if m.contains("headers")),
        "{headers:?}"
    );
    let mut upload = request(&format!("{base}/echo"), &server.ca_pem);
    upload.body = vec![0; MAX_REQUEST_BODY + 1];
    let upload = send_to(&granted, upload, LEFT).await;
    assert!(
        matches!(&upload, Err(HostError::Invalid(m)) if m.contains("request body")),
        "{upload:?}"
    );
    let mut method = request(&format!("{base}/echo"), &server.ca_pem);
    method.method = "CONNECT".to_string();
    let method = send_to(&granted, method, LEFT).await;
    assert!(matches!(method, Err(HostError::Invalid(_))), "{method:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_or_for_another_name_is_unavailable() -> TestResult {
    let server = server().await?;
    let other_key = key()?;
    let other_ca = String::from_utf8(certificate("other CA", &other_key, None, &[])?.to_pem()?)?;
    let url = format!("https://127.0.0.1:{}/echo", server.port);
    let granted = [origin("127.0.0.1", server.port)];
    let wrong_ca = send_to(&granted, request(&url, &other_ca), LEFT).await;
    assert!(
        matches!(&wrong_ca, Err(HostError::Unavailable(m)) if m.contains("certificate")),
        "{wrong_ca:?}"
    );
    // No ca-pem: the system roots, which do not know the test CA.
    let system = send_to(&granted, request(&url, ""), LEFT).await;
    assert!(
        matches!(&system, Err(HostError::Unavailable(m)) if m.contains("certificate")),
        "{system:?}"
    );
    // The right CA, but a certificate for another name.
    let elsewhere = server_for(&["other.example"]).await?;
    let misnamed = send_to(
        &[origin("127.0.0.1", elsewhere.port)],
        request(
            &format!("https://127.0.0.1:{}/echo", elsewhere.port),
            &elsewhere.ca_pem,
        ),
        LEFT,
    )
    .await;
    assert!(
        matches!(&misnamed, Err(HostError::Unavailable(m)) if m.contains("certificate")),
        "{misnamed:?}"
    );
    assert_eq!(elsewhere.connections.load(Ordering::SeqCst), 1);
    let garbage = send_to(&granted, request(&url, "not a certificate"), LEFT).await;
    assert!(matches!(garbage, Err(HostError::Invalid(_))), "{garbage:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_calls_deadline_bounds_a_request() -> TestResult {
    let server = server().await?;
    let granted = [origin("127.0.0.1", server.port)];
    let url = format!("https://127.0.0.1:{}/slow", server.port);
    let started = Instant::now();
    let slow = send_to(
        &granted,
        request(&url, &server.ca_pem),
        Duration::from_millis(300),
    )
    .await;
    assert!(
        matches!(&slow, Err(HostError::Unavailable(m)) if m.contains("time limit")),
        "{slow:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    // The timed-out request's connection is closed with it, not left open behind a task
    // nobody owns (the server counts it open until it sees the close).
    let closed = async {
        while server.open.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    assert!(
        tokio::time::timeout(Duration::from_secs(10), closed)
            .await
            .is_ok(),
        "the timed-out connection is still open"
    );
    let spent = send_to(&granted, request(&url, &server.ca_pem), Duration::ZERO).await;
    assert!(matches!(spent, Err(HostError::Unavailable(_))), "{spent:?}");
    Ok(())
}

#[test]
fn grants_follow_accepted_configs() -> Result<(), BarrierError> {
    let barrier = Barrier::new(Arc::new(crate::backend::MemoryBackend::default()));
    let init = barrier.initialize(1, 1)?;
    barrier.submit_share(init.shares.first().ok_or(BarrierError::NotInitialized)?)?;
    let stage =
        |path: &str, url: &str| stage(&barrier, "m", path, url).map_err(BarrierError::Invalid);
    // Staged but never accepted: nothing lasts.
    stage("config", "https://10.0.0.1:6443")?;
    assert!(granted(&barrier, "m")?.is_empty());
    let first = stage("config", "https://kube.example:6443/")?;
    settle(&barrier, "m", "config", false, Some(first))?;
    assert_eq!(granted(&barrier, "m")?, vec![origin("kube.example", 6443)]);
    // A write without the field keeps it; a rewrite replaces it; a delete withdraws it.
    settle(&barrier, "m", "config", false, None)?;
    assert_eq!(granted(&barrier, "m")?, vec![origin("kube.example", 6443)]);
    let moved = stage("config", "https://KUBE2.example")?;
    settle(&barrier, "m", "config", false, Some(moved))?;
    assert_eq!(granted(&barrier, "m")?, vec![origin("kube2.example", 443)]);
    assert!(granted(&barrier, "other")?.is_empty());
    settle(&barrier, "m", "config", true, None)?;
    assert!(granted(&barrier, "m")?.is_empty());
    // Disable removes every grant of the mount.
    let again = stage("config", "https://[::1]:8443")?;
    settle(&barrier, "m", "config", false, Some(again))?;
    assert_eq!(granted(&barrier, "m")?, vec![origin("::1", 8443)]);
    revoke_grants(&barrier, "m")?;
    assert!(granted(&barrier, "m")?.is_empty());
    // What an operator may not write at all.
    for bad in [
        "http://kube.example",
        "https://user:pw@kube.example",
        "kube.example:6443",
        "ftp://kube.example",
    ] {
        assert!(stage("config", bad).is_err(), "{bad}");
    }
    Ok(())
}
