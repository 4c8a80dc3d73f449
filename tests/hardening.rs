//! What an attacker without a token (or with a bogus one) tries first: every write the
//! mounted engines declare, and the HTTP edge itself (slow headers, idle connections,
//! floods of large bodies, connection exhaustion). Each test drives the real binary.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use coffer_tests::{Coffer, Value, fixtures_config, json, temp_dir};

/// Everything an unauthorised write could change, as root sees it.
fn snapshot(coffer: &Coffer) -> Value {
    let mut state = serde_json::Map::new();
    for path in [
        "secret/",
        "pki/certs/",
        "pki/issuers/",
        "pki/keys/",
        "pki/roles/",
        "database/config/",
        "database/roles/",
        "database/static-roles/",
        "auth/approle/role/",
        "auth/kubernetes/role/",
    ] {
        let reply = coffer.call("LIST", path, None);
        state.insert(
            path.to_string(),
            json!([reply.status, reply.data()["keys"]]),
        );
    }
    for path in [
        "secret/app",
        "pki/config/urls",
        "pki/config/issuers",
        "pki/ca/pem",
        "auth/approle/role/web/role-id",
        "auth/kubernetes/config",
    ] {
        let reply = coffer.call("GET", path, None);
        state.insert(
            path.to_string(),
            json!([
                reply.status,
                if reply.json.is_null() {
                    json!(reply.text)
                } else {
                    reply.data().clone()
                }
            ]),
        );
    }
    Value::Object(state)
}

/// The value a path parameter gets: a real name where the dev server has one, so that a
/// write let through would actually change something.
fn parameter(name: &str) -> &'static str {
    match name {
        "issuer_ref" => "root-ca",
        "role" | "name" | "role_name" => "web",
        "path" => "app",
        "exported" => "internal",
        "serial" => "ca",
        "fetch" => "pem",
        _ => "x",
    }
}

fn concrete(template: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').unwrap() + open;
        out.push_str(parameter(&rest[open + 1..close]));
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out.trim_start_matches('/').to_string()
}

#[test]
fn no_engine_write_works_without_a_valid_token() {
    let coffer = Coffer::dev();
    let dir = temp_dir("evil");
    let root = coffer.call(
        "POST",
        "pki/root/generate/internal",
        Some(json!({"common_name": "example.com", "ttl": "8760h", "issuer_name": "root-ca"})),
    );
    assert_eq!(root.status, 200, "{}", root.text);
    let role = coffer.call(
        "POST",
        "pki/roles/web",
        Some(json!({"allowed_domains": "example.com", "allow_subdomains": true})),
    );
    assert!(role.status == 200 || role.status == 204, "{}", role.text);
    assert_eq!(
        coffer
            .call("POST", "secret/app", Some(json!({"v": "1"})))
            .status,
        204
    );
    let csr = coffer_tests::ec_csr(&dir, "e", "/CN=evil-ca");
    let body = json!({
        "csr": csr, "common_name": "evil.example.com", "ttl": "8760h", "v": "1",
        "certificate": csr, "pem_bundle": csr, "key_name": "k", "issuer_name": "evil",
        "db_name": "x", "connection_url": "postgresql://127.0.0.1:1/x", "plugin_name": "postgresql-database-plugin",
        "creation_statements": "SELECT 1", "username": "u", "password": "p",
    })
    .to_string();

    // The repro from the report, first.
    let signed = coffer.raw(
        "POST",
        "pki/issuer/root-ca/sign-intermediate",
        None,
        Some(&body),
        &[],
    );
    assert_eq!(signed.status, 403, "{}", signed.text);
    let deleted = coffer.raw("DELETE", "pki/issuer/default", None, None, &[]);
    assert_eq!(deleted.status, 403, "{}", deleted.text);

    // Auth engines too: only their login paths may be written without a token.
    for method in ["approle", "kubernetes"] {
        let enabled = coffer.call(
            "POST",
            &format!("sys/auth/{method}"),
            Some(json!({"type": method})),
        );
        assert_eq!(enabled.status, 204, "{}", enabled.text);
    }
    let approle = coffer.call(
        "POST",
        "auth/approle/role/web",
        Some(json!({"token_policies": "default"})),
    );
    assert_eq!(approle.status, 204, "{}", approle.text);

    let before = snapshot(&coffer);
    let spec = coffer.call("GET", "sys/internal/specs/openapi", None);
    assert_eq!(spec.status, 200, "{}", spec.text);
    let paths = spec.json["paths"].as_object().unwrap();
    let mut walked = std::collections::BTreeMap::<String, usize>::new();
    for (template, item) in paths {
        if template.starts_with("/sys/") || template.starts_with("/auth/token/") {
            // The native paths, among them the seal endpoints every client may write.
            continue;
        }
        if template.starts_with("/auth/") && item.get("x-vault-unauthenticated").is_some() {
            // An auth engine's login path (checked to be exactly `login` below).
            continue;
        }
        let methods: Vec<&str> = ["post", "delete"]
            .into_iter()
            .filter(|m| item.get(*m).is_some())
            .collect();
        if methods.is_empty() {
            continue;
        }
        let path = concrete(template);
        let mount = match path.strip_prefix("auth/") {
            Some(rest) => format!("auth/{}", rest.split('/').next().unwrap()),
            None => path.split('/').next().unwrap().to_string(),
        };
        *walked.entry(mount).or_default() += 1;
        for method in methods {
            let methods = if method == "post" {
                vec!["POST", "PUT"]
            } else {
                vec!["DELETE"]
            };
            for method in methods {
                for token in [None, Some("cvs.bogusbogusbogusbogusbogusbogus12"), Some("")] {
                    let reply = coffer.raw(method, &path, token, Some(&body), &[]);
                    assert_eq!(
                        reply.status, 403,
                        "{method} {path} with token {token:?} got through: {}",
                        reply.text
                    );
                    assert!(
                        reply.errors().contains("permission denied"),
                        "{}",
                        reply.text
                    );
                }
            }
        }
    }
    // A certificate that would end before it begins is refused.
    let backwards = coffer.call(
        "POST",
        "pki/issue/web",
        Some(json!({"common_name": "a.example.com", "not_after": "1969-12-31T23:59:59Z"})),
    );
    assert_eq!(backwards.status, 400, "{}", backwards.text);
    // The spec names paths as clients send them, and marks Vault's public PKI reads.
    assert!(
        paths.keys().all(|p| !p.contains("//")),
        "{:?}",
        paths.keys()
    );
    assert_eq!(paths["/pki/ca/pem"]["x-vault-unauthenticated"], json!(true));
    assert!(
        paths["/pki/issuer/{issuer_ref}/sign-intermediate"]
            .get("x-vault-unauthenticated")
            .is_none()
    );
    // An auth engine's only public paths are its logins.
    let public_auth: Vec<&String> = paths
        .iter()
        .filter(|(t, item)| {
            t.starts_with("/auth/") && item.get("x-vault-unauthenticated").is_some()
        })
        .map(|(t, _)| t)
        .collect();
    assert_eq!(
        public_auth,
        ["/auth/approle/login", "/auth/kubernetes/login"],
        "public auth paths"
    );
    // The walk covered every engine's table, not a lucky subset.
    assert!(
        walked.get("auth/approle").copied().unwrap_or(0) >= 8,
        "{walked:?}"
    );
    assert!(
        walked.get("auth/kubernetes").copied().unwrap_or(0) >= 2,
        "{walked:?}"
    );
    assert!(walked.get("pki").copied().unwrap_or(0) >= 15, "{walked:?}");
    assert!(
        walked.get("database").copied().unwrap_or(0) >= 5,
        "{walked:?}"
    );
    assert!(
        walked.get("secret").copied().unwrap_or(0) >= 1,
        "{walked:?}"
    );
    assert_eq!(
        snapshot(&coffer),
        before,
        "an unauthenticated write changed state"
    );

    // Vault's public PKI reads still work without a token; other reads do not.
    for public in [
        "pki/ca/pem",
        "pki/cert/ca",
        "pki/issuer/root-ca/pem",
        "pki/issuer/root-ca/json",
        "pki/crl/pem",
    ] {
        let reply = coffer.raw("GET", public, None, None, &[]);
        assert_eq!(reply.status, 200, "{public}: {}", reply.text);
    }
    let listed = coffer.raw("LIST", "pki/issuers", None, None, &[]);
    assert_eq!(listed.status, 200, "{}", listed.text);
    for private in [
        "pki/issuer/root-ca",
        "pki/roles/web",
        "pki/certs/",
        "secret/app",
        "pki/crl/rotate",
    ] {
        let reply = coffer.raw("GET", private, None, None, &[]);
        assert_eq!(reply.status, 403, "{private}: {}", reply.text);
    }
    // And the spec itself needs a token.
    assert_eq!(
        coffer
            .raw("GET", "sys/internal/specs/openapi", None, None, &[])
            .status,
        403
    );
}

/// A config-file server with a small request limit and a short header timeout, plus
/// whatever `listener` lines the test adds.
fn edge_server(listener: &str) -> Coffer {
    let config = fixtures_config().replace(
        "address = \"{addr}\"",
        &format!("address = \"{{addr}}\"\n{listener}"),
    );
    let mut coffer = Coffer::with_config(&temp_dir("edge"), &config);
    coffer.init_and_unseal(1, 1);
    coffer
}

fn host(coffer: &Coffer) -> String {
    coffer.addr.trim_start_matches("http://").to_string()
}

/// Bytes read until the peer closes (or a 10 s read timeout), and how long that took.
fn read_until_closed(stream: &mut TcpStream) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
        }
    }
    (received, started.elapsed())
}

#[test]
fn slow_headers_and_idle_connections_are_cut() {
    let coffer = edge_server("http_read_header_timeout = \"2s\"");
    // Half a request header, then silence.
    let mut slow = TcpStream::connect(host(&coffer)).unwrap();
    write!(slow, "GET /v1/sys/health HTTP/1.1\r\nHost: x\r\n").unwrap();
    let (_, waited) = read_until_closed(&mut slow);
    assert!(
        waited < Duration::from_secs(5),
        "a half-sent header held its connection for {waited:?}"
    );
    // A kept-alive connection that goes quiet after one request.
    let mut idle = TcpStream::connect(host(&coffer)).unwrap();
    write!(idle, "GET /v1/sys/health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let (received, waited) = read_until_closed(&mut idle);
    assert!(String::from_utf8_lossy(&received).starts_with("HTTP/1.1 200"));
    assert!(
        waited < Duration::from_secs(5),
        "an idle keep-alive connection stayed open for {waited:?}"
    );
}

#[test]
fn the_connection_cap_holds_and_frees_as_slow_clients_are_cut() {
    let coffer = edge_server("http_read_header_timeout = \"2s\"\nmax_connections = 4");
    let hogs: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(host(&coffer)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let reply = coffer.raw("GET", "sys/health", None, None, &[]);
    let waited = started.elapsed();
    assert_eq!(reply.status, 200);
    assert!(
        waited >= Duration::from_millis(1200),
        "a fifth connection was served at once ({waited:?}): no cap"
    );
    assert!(
        waited < Duration::from_secs(6),
        "the cap never freed: {waited:?}"
    );
    drop(hogs);
}

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

/// Sends a `size`-byte JSON body of zeros to `path` in 64 KiB writes; returns the status
/// line's code (0 when the server closed the connection before answering) and how many
/// bytes it managed to send.
fn flood(host: &str, path: &str, token: Option<&str>, size: usize) -> (u16, usize) {
    let mut stream = TcpStream::connect(host).unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let auth = token
        .map(|t| format!("X-Vault-Token: {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "PUT /v1/{path} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Type: application/json\r\nContent-Length: {size}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut sent = 0;
    let opening = b"{\"a\":[";
    let chunk = "0,".repeat(32 << 10);
    if stream.write_all(opening).is_ok() {
        sent += opening.len();
        while sent < size {
            let left = size - sent;
            let piece = if left <= chunk.len() + 2 {
                format!("{}0]}}", &chunk[..left.saturating_sub(3)])
            } else {
                chunk.clone()
            };
            if stream.write_all(piece.as_bytes()).is_err() {
                break;
            }
            sent += piece.len();
        }
    }
    let (received, _) = read_until_closed(&mut stream);
    let text = String::from_utf8_lossy(&received);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, sent)
}

#[test]
fn floods_of_large_bodies_leave_memory_bounded_and_honest_clients_served() {
    const SIZE: usize = 4 << 20;
    let coffer = edge_server("max_request_size = 4194304");
    let pid = coffer.pid().unwrap();
    assert_eq!(
        coffer
            .call("PUT", "secret/app", Some(json!({"v": "1"})))
            .status,
        204
    );
    let before = rss(pid);
    let peak = std::sync::atomic::AtomicU64::new(before);
    let done = std::sync::atomic::AtomicBool::new(false);
    let host = host(&coffer);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak.fetch_max(rss(pid), std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let honest = scope.spawn(|| {
            let mut served = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let reply = coffer.call("GET", "secret/app", None);
                assert_eq!(
                    reply.status, 200,
                    "an honest client was refused: {}",
                    reply.text
                );
                served += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            served
        });
        let attackers: Vec<_> = (0..24)
            .map(|i| {
                let host = host.clone();
                let token = coffer.token.clone();
                scope.spawn(move || match i % 3 {
                    // No token, and a bogus one: refused before the body is read.
                    0 => ("none", flood(&host, "secret/flood", None, SIZE)),
                    1 => (
                        "bogus",
                        flood(&host, "secret/flood", Some("cvs.nope"), SIZE),
                    ),
                    // A valid token: the body is read, but its parsed form would not fit.
                    _ => ("valid", flood(&host, "secret/flood", Some(&token), SIZE)),
                })
            })
            .collect();
        for attacker in attackers {
            let (kind, (status, sent)) = attacker.join().unwrap();
            match kind {
                "valid" => assert!(
                    status == 413 || status == 503,
                    "a valid-token flood got {status}"
                ),
                _ => {
                    assert!(status == 403 || status == 0, "{kind}: {status}");
                    assert!(
                        status == 403 || sent < SIZE,
                        "{kind}: the whole body was taken without an answer"
                    );
                }
            }
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(honest.join().unwrap() > 0);
    });
    let grown = peak
        .load(std::sync::atomic::Ordering::Relaxed)
        .saturating_sub(before);
    // The bound: the in-flight budget (8 maximal requests, 32 MiB here) plus slack for
    // connection buffers; today's main grew by over 500 MiB under the same flood.
    assert!(
        grown < 96 << 20,
        "RSS grew by {} MiB under the flood",
        grown >> 20
    );
    assert_eq!(coffer.call("GET", "secret/flood", None).status, 404);
    // A body refused for its size (no token needed to see it on a public path).
    let public = flood(&host, "sys/unseal", None, 1 << 20);
    assert!(public.0 == 413 || public.0 == 0, "{public:?}");
    // An honest large write still works (kv keeps entries up to 512 KiB).
    let big = json!({"blob": "x".repeat(400 << 10)});
    let stored = coffer.call("PUT", "secret/big", Some(big));
    assert_eq!(stored.status, 204, "{}", stored.text);
}

#[test]
fn declared_lengths_reserve_nothing_and_a_hung_up_disable_still_finishes() {
    let coffer = edge_server("max_request_size = 1048576");
    let host = host(&coffer);
    // Twelve valid-token requests that announce a megabyte each and send one byte.
    let stalls: Vec<TcpStream> = (0..12)
        .map(|_| {
            let mut stream = TcpStream::connect(&host).unwrap();
            write!(
                stream,
                "PUT /v1/secret/stall HTTP/1.1\r\nHost: {host}\r\nX-Vault-Token: {}\r\nContent-Length: 1048000\r\n\r\n{{",
                coffer.token
            )
            .unwrap();
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let honest = coffer.call(
        "PUT",
        "secret/honest",
        Some(json!({"blob": "x".repeat(60_000)})),
    );
    assert_eq!(honest.status, 204, "{}", honest.text);
    drop(stalls);

    // A disable whose client hangs up while the mount drains still completes.
    std::thread::scope(|scope| {
        let running = scope.spawn(|| coffer.call("GET", "hostile/loop", None));
        std::thread::sleep(Duration::from_millis(300));
        let mut impatient = TcpStream::connect(&host).unwrap();
        write!(
            impatient,
            "DELETE /v1/sys/mounts/hostile HTTP/1.1\r\nHost: {host}\r\nX-Vault-Token: {}\r\n\r\n",
            coffer.token
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        drop(impatient);
        running.join().unwrap();
    });
    assert!(
        coffer_tests::eventually(Duration::from_secs(10), || {
            coffer.call("GET", "sys/mounts/hostile", None).status == 404
        }),
        "the mount stayed fenced after its disabling client hung up"
    );
    let again = coffer.call(
        "POST",
        "sys/mounts/hostile",
        Some(json!({"type": "hostile"})),
    );
    assert_eq!(again.status, 204, "{}", again.text);
}
