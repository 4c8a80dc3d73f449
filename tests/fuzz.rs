//! Fuzz targets: random mutations of valid inputs thrown at the parsers an attacker
//! reaches, each run for a time budget. Not coverage-guided (cargo-fuzz needs a nightly
//! toolchain this project does not use); each target checks a property, not just "no
//! panic", where one exists.
//!
//! `scripts/fuzz [target] [seconds]` runs them for longer; the test suite runs each for
//! `COFFER_FUZZ_SECS` (default 2) as a smoke. A failure prints the seed; rerun with
//! `COFFER_FUZZ_SEED=<seed>` to reproduce.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use coffer_host::fields;
use coffer_host::runtime::FieldKind;
use coffer_tests::{Coffer, Value, json};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Runs `case` with fresh random generators until the time budget is spent.
fn fuzz(name: &str, mut case: impl FnMut(&mut StdRng)) {
    let secs: u64 = std::env::var("COFFER_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let fixed: Option<u64> = std::env::var("COFFER_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok());
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut cases = 0u64;
    loop {
        let seed = fixed.unwrap_or_else(rand::random);
        let mut rng = StdRng::seed_from_u64(seed);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case(&mut rng)));
        if let Err(panic) = outcome {
            panic!("fuzz target {name} failed with COFFER_FUZZ_SEED={seed}: {panic:?}");
        }
        cases += 1;
        if fixed.is_some() || Instant::now() >= deadline {
            break;
        }
    }
    println!("fuzz {name}: {cases} cases clean in {secs}s");
}

/// Byte strings that break parsers more often than random bytes do.
const TOKENS: &[&[u8]] = &[
    b"%",
    b"%F4%8F%BF%BF",
    b"\xF4\x8F\xBF\xBF",
    b"\xFF",
    b"\0",
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b"\\",
    b",",
    b":",
    b"/",
    b"/../",
    b"+",
    b"*",
    b"-",
    b".",
    b"e999",
    b"1e20",
    b"99999999999999999999",
    b"-9223372036854775808",
    b"h",
    b"d",
    b"ms",
    b"\xC2\xB5s",
    b"=",
    b"&",
    b"?",
    b"'",
    b"$$",
    b"@",
    b"hostaddr=",
    b"host=",
    b"\r\n",
    b"-----BEGIN ",
    b"-----END ",
];

/// `input` with one to eight random mutations.
fn mutate(rng: &mut StdRng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..rng.gen_range(1..=8) {
        let at = if out.is_empty() {
            0
        } else {
            rng.gen_range(0..=out.len())
        };
        match rng.gen_range(0..7) {
            0 if at < out.len() => out[at] ^= 1 << rng.gen_range(0..8),
            1 if at < out.len() => out[at] = rng.r#gen(),
            2 => {
                let token = TOKENS[rng.gen_range(0..TOKENS.len())];
                out.splice(at..at, token.iter().copied());
            }
            3 if at < out.len() => {
                let end = rng.gen_range(at..=out.len().min(at + 64));
                out.drain(at..end);
            }
            4 if at < out.len() => {
                let end = rng.gen_range(at..=out.len().min(at + 64));
                let copy = out[at..end].to_vec();
                out.splice(at..at, copy);
            }
            5 => out.truncate(at),
            _ => {
                let random: Vec<u8> = (0..rng.gen_range(1..16)).map(|_| rng.r#gen()).collect();
                out.splice(at..at, random);
            }
        }
    }
    out
}

fn mutated_text(rng: &mut StdRng, seeds: &[&str]) -> String {
    let seed = seeds[rng.gen_range(0..seeds.len())];
    String::from_utf8_lossy(&mutate(rng, seed.as_bytes())).into_owned()
}

#[test]
fn fuzz_durations() {
    let seeds = [
        "3600",
        "1h30m",
        "2160h0m0s",
        "7d",
        "1.5h",
        "300ms",
        "10µs",
        "+5s",
        "",
    ];
    fuzz("durations", |rng| {
        let text = mutated_text(rng, &seeds);
        if let Ok(secs) = fields::parse_duration(&text) {
            assert!(secs <= fields::MAX_DURATION_SECS, "{text:?} → {secs}");
        }
        let number = json!(rng.r#gen::<f64>() * 10f64.powi(rng.gen_range(0..40)));
        if let Ok(secs) = fields::duration(&number) {
            assert!(secs <= fields::MAX_DURATION_SECS, "{number} → {secs}");
        }
    });
}

/// A JSON value built from mutated text (or a random shape when the text does not parse).
fn random_value(rng: &mut StdRng) -> Value {
    let seeds = [
        r#"{"a": [1, "x", true, null], "b": {"c": "d=e,f=g"}}"#,
        r#"["a", "b,c", 3]"#,
        r#""k1=v1,k2=v2""#,
        "1e20",
        "-1",
        r#""1h""#,
        "true",
    ];
    serde_json::from_str(&mutated_text(rng, &seeds)).unwrap_or_else(|_| json!(rng.r#gen::<i64>()))
}

#[test]
fn fuzz_field_typing() {
    let kinds = [
        FieldKind::String,
        FieldKind::Lowercase,
        FieldKind::Int,
        FieldKind::Bool,
        FieldKind::Duration,
        FieldKind::Strings,
        FieldKind::CommaStrings,
        FieldKind::KeyValues,
        FieldKind::SqlDsn,
        FieldKind::HttpsUrl,
    ];
    fuzz("field typing", |rng| {
        let value = random_value(rng);
        for kind in kinds {
            let _ = fields::typed(kind, &value);
        }
    });
}

/// Values (and object keys) serde builds for `value`.
fn count_values(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(count_values).sum::<usize>(),
        Value::Object(map) => 1 + map.values().map(|v| 1 + count_values(v)).sum::<usize>(),
        _ => 1,
    }
}

#[test]
fn fuzz_request_bodies_never_outgrow_their_charge() {
    let seeds = [
        r#"{"a": [0, 0, 0, {"b": "c,d:[e"}], "k\"ey": {"x": [[], {}]}}"#,
        r#"{"common_name": "a.example.com", "ttl": "1h", "alt_names": "b,c"}"#,
        "[0,0,0,0,0,0,0,0]",
    ];
    fuzz("request bodies", |rng| {
        let body = mutated_text(rng, &seeds).into_bytes();
        if let Ok(parsed) = serde_json::from_slice::<Value>(&body) {
            let charged = coffer_host::http::edge::json_values(&body);
            assert!(
                charged >= count_values(&parsed),
                "{:?}: charged for {charged} values, parses to {}",
                String::from_utf8_lossy(&body),
                count_values(&parsed)
            );
        }
    });
}

/// The obvious reading of Vault's public-path syntax, as a regex.
fn public_model(pattern: &str, path: &str) -> bool {
    let path = path.strip_suffix('/').unwrap_or(path);
    let (stem, prefix) = match pattern.strip_suffix('*') {
        Some(stem) => (stem, true),
        None => (pattern, false),
    };
    let body: Vec<String> = stem
        .split('/')
        .map(|s| {
            if s == "+" {
                "[^/]+".to_string()
            } else {
                regex_escape(s)
            }
        })
        .collect();
    let tail = if prefix { ".*" } else { "" };
    let regex = format!("(?s)^{}{tail}$", body.join("/"));
    regex::Regex::new(&regex).is_ok_and(|r| r.is_match(path))
}

fn regex_escape(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c.to_string()
            } else {
                format!("\\x{{{:x}}}", c as u32)
            }
        })
        .collect()
}

#[test]
fn fuzz_public_path_matching_agrees_with_the_model() {
    let patterns = [
        "ca",
        "cert/+",
        "issuer/+/pem",
        "issuer/+/crl*",
        "issuers",
        "+",
        "a/+/+/b*",
    ];
    let paths = [
        "ca",
        "cert/ab:cd",
        "issuer/r/pem",
        "issuer/r/crl/delta",
        "issuers/",
        "x/y",
        "a/1/2/bc",
    ];
    fuzz("public paths", |rng| {
        let pattern = mutated_text(rng, &patterns).replace('*', "");
        let pattern = if rng.gen_bool(0.5) {
            format!("{pattern}*")
        } else {
            pattern
        };
        let path = mutated_text(rng, &paths);
        assert_eq!(
            coffer_host::core::public_match(&pattern, &path),
            public_model(&pattern, &path),
            "pattern {pattern:?} path {path:?}"
        );
    });
}

#[test]
fn fuzz_dsns() {
    let seeds = [
        "postgresql://{{username}}:{{password}}@127.0.0.1:5432/db?sslmode=require",
        "host=127.0.0.1 port=5432 user={{username}} password='{{password}}' dbname=db",
        "postgres://u:p@[::1]:5432,127.0.0.1:5433/db?hostaddr=127.0.0.2&sslrootcert=/etc/x",
    ];
    fuzz("dsns", |rng| {
        let dsn = mutated_text(rng, &seeds);
        if let Ok(endpoints) = coffer_host::caps::sql::endpoints_of_template(&dsn) {
            assert!(!endpoints.is_empty(), "{dsn:?} parsed to no endpoint");
        }
    });
}

/// Raw HTTP requests, mutated at the byte level, against a dev server: every one gets a
/// well-formed answer (or a closed connection), never a 5xx, and the server lives on.
#[test]
fn fuzz_http_requests() {
    let coffer = Coffer::dev();
    let host = coffer.addr.trim_start_matches("http://").to_string();
    let seeds = [
        "GET /v1/secret/app HTTP/1.1\r\nHost: h\r\nX-Vault-Token: root\r\nConnection: close\r\n\r\n",
        "PUT /v1/secret/a%2Fb?x=1 HTTP/1.1\r\nHost: h\r\nX-Vault-Token: root\r\nContent-Length: 9\r\nConnection: close\r\n\r\n{\"v\":\"1\"}",
        "LIST /v1/secret/ HTTP/1.1\r\nHost: h\r\nX-Vault-Token: root\r\nConnection: close\r\n\r\n",
        "POST /v1/auth/token/create HTTP/1.1\r\nHost: h\r\nX-Vault-Token: root\r\nContent-Length: 26\r\nConnection: close\r\n\r\n{\"ttl\":\"1h\",\"num_uses\":2}",
        "POST /v1/pki/roles/web HTTP/1.1\r\nHost: h\r\nX-Vault-Token: root\r\nContent-Length: 31\r\nConnection: close\r\n\r\n{\"allowed_domains\":\"a.com,b.c\"}",
        "GET /v1/sys/internal/specs/openapi HTTP/1.1\r\nHost: h\r\nX-Vault-Token: root\r\nConnection: close\r\n\r\n",
        "GET /v1/pki/issue/web?help=1 HTTP/1.1\r\nHost: h\r\nX-Vault-Token: root\r\nConnection: close\r\n\r\n",
        "POST /v1/sys/mounts/a/b/tune?help=1&list=true HTTP/1.1\r\nHost: h\r\nX-Vault-Token: root\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    ];
    fuzz("http requests", |rng| {
        let seed = seeds[rng.gen_range(0..seeds.len())];
        let request = mutate(rng, seed.as_bytes());
        let mut stream = std::net::TcpStream::connect(&host).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        let _ = stream.write_all(&request);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        let text = String::from_utf8_lossy(&response);
        if let Some(status) = text.split_whitespace().nth(1) {
            assert!(
                !status.starts_with('5') || status == "503",
                "{:?} → {}",
                String::from_utf8_lossy(&request),
                text.lines().last().unwrap_or_default()
            );
        }
    });
    assert_eq!(coffer.call("GET", "sys/health", None).status, 200);
}

/// CSRs and certificates, mutated, sent to every PKI input: answers are 2xx or 4xx.
#[test]
fn fuzz_pki_inputs() {
    let coffer = Coffer::dev();
    let root = coffer.call(
        "POST",
        "pki/root/generate/internal",
        Some(json!({"common_name": "example.com", "ttl": "87600h", "issuer_name": "root"})),
    );
    assert_eq!(root.status, 200, "{}", root.text);
    let certificate = root.data()["certificate"].as_str().unwrap().to_string();
    let role = coffer.call(
        "POST",
        "pki/roles/web",
        Some(
            json!({"allowed_domains": "example.com", "allow_subdomains": true, "key_type": "any"}),
        ),
    );
    assert!(role.status < 300, "{}", role.text);
    let csr = coffer.call(
        "POST",
        "pki/intermediate/generate/internal",
        Some(json!({"common_name": "int.example.com"})),
    );
    let csr = csr.data()["csr"].as_str().unwrap().to_string();
    let seeds = [certificate.as_str(), csr.as_str()];
    let targets = [
        ("pki/sign/web", "csr"),
        ("pki/root/sign-intermediate", "csr"),
        ("pki/sign-verbatim", "csr"),
        ("pki/intermediate/set-signed", "certificate"),
        ("pki/config/ca", "pem_bundle"),
        ("pki/revoke", "certificate"),
    ];
    fuzz("pki inputs", |rng| {
        let pem = mutated_text(rng, &seeds);
        let (path, field) = targets[rng.gen_range(0..targets.len())];
        let reply = coffer.call(
            "POST",
            path,
            Some(json!({ field: pem, "common_name": "a.example.com", "ttl": "1h" })),
        );
        assert!(
            reply.status < 500,
            "{path} with a mutated {field}: {} {}",
            reply.status,
            reply.text
        );
    });
    assert_eq!(coffer.call("GET", "pki/ca/pem", None).status, 200);
}
