//! The PKI engine through the real server and CLI, checked with the real `openssl`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use coffer_tests::tutorial::{ROLE_DOMAINS, openssl, openssl_ok, tutorial_ca, verify};
use coffer_tests::{Coffer, DEV_TOKEN, Value, free_port, json, stdout, temp_dir};

fn issue(coffer: &Coffer, body: Value) -> Value {
    let reply = coffer.call("POST", "pki_int/issue/grade-api-tls", Some(body));
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json
}

fn revoke(coffer: &Coffer, serial: &str) -> Value {
    let reply = coffer.call(
        "POST",
        "pki_int/revoke",
        Some(json!({"serial_number": serial})),
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json
}

fn write_leaf(dir: &Path, name: &str, issued: &Value) {
    std::fs::write(
        dir.join(format!("{name}.pem")),
        issued["data"]["certificate"].as_str().unwrap(),
    )
    .unwrap();
    if let Some(key) = issued["data"]["private_key"].as_str() {
        std::fs::write(dir.join(format!("{name}.key")), key).unwrap();
    }
}

#[test]
fn tutorial_walkthrough_through_the_cli() {
    tutorial_walkthrough(&Coffer::dev());
}

/// The same walkthrough by an operator whose token has only the operator policy (PKI's
/// root paths are sudo paths; the policy grants sudo under the PKI mounts); without sudo
/// deleting the root or cross-signing is refused.
#[test]
fn tutorial_walkthrough_as_an_operator_with_an_operator_policy() {
    let mut coffer = Coffer::dev();
    coffer.become_operator();
    tutorial_walkthrough(&coffer);
    coffer.token = DEV_TOKEN.to_string();
    coffer.policy(
        "no-sudo",
        r#"path "pki/*" { capabilities = ["create", "read", "update", "delete", "list"] }"#,
    );
    let created = coffer.call(
        "POST",
        "auth/token/create",
        Some(json!({"policies": ["no-sudo"], "ttl": "1h"})),
    );
    let issuers_before = coffer.list("pki/issuers");
    coffer.token = created.json["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_string();
    // Vault's PKI root paths, exactly: `root` (DELETE removes every issuer and key) and
    // `root/sign-self-issued`; `root/generate/*` is not one of them.
    for (method, path) in [
        ("DELETE", "pki/root"),
        ("POST", "pki/root/sign-self-issued"),
    ] {
        let reply = coffer.call(method, path, Some(json!({"certificate": "x"})));
        assert_eq!(reply.status, 403, "{method} {path}: {}", reply.text);
    }
    assert_eq!(
        coffer.call("GET", "pki/roles/none", None).status,
        404,
        "the policy does reach the mount"
    );
    coffer.token = DEV_TOKEN.to_string();
    assert_eq!(coffer.list("pki/issuers"), issuers_before);
}

fn tutorial_walkthrough(coffer: &Coffer) {
    let dir = temp_dir("pki-cli");
    let cli = |args: &[&str]| stdout(&coffer.cli(args));
    cli(&["secrets", "enable", "-path=pki", "pki"]);
    cli(&["secrets", "enable", "-path=pki_int", "pki"]);
    cli(&["secrets", "tune", "-max-lease-ttl=87600h", "pki"]);
    let root = cli(&[
        "write",
        "-field=certificate",
        "pki/root/generate/internal",
        "common_name=grade-api-root-ca",
        "issuer_name=root-2026",
        "ttl=87600h",
    ]);
    std::fs::write(dir.join("root-ca.crt"), format!("{root}\n")).unwrap();
    cli(&[
        "write",
        "pki/config/urls",
        "issuing_certificates=https://coffer.example:8200/v1/pki/ca",
        "crl_distribution_points=https://coffer.example:8200/v1/pki/crl",
    ]);
    let generated: Value = serde_json::from_str(&cli(&[
        "write",
        "-format=json",
        "pki_int/intermediate/generate/internal",
        "common_name=grade-api-intermediate-ca",
        "issuer_name=grade-api-intermediate",
    ]))
    .unwrap();
    std::fs::write(
        dir.join("intermediate.csr"),
        generated["data"]["csr"].as_str().unwrap(),
    )
    .unwrap();
    let csr_arg = format!("csr=@{}", dir.join("intermediate.csr").display());
    let signed: Value = serde_json::from_str(&cli(&[
        "write",
        "-format=json",
        "pki/root/sign-intermediate",
        "issuer_ref=root-2026",
        &csr_arg,
        "format=pem_bundle",
        "ttl=43800h",
    ]))
    .unwrap();
    std::fs::write(
        dir.join("intermediate.cert.pem"),
        signed["data"]["certificate"].as_str().unwrap(),
    )
    .unwrap();
    cli(&[
        "write",
        "pki_int/intermediate/set-signed",
        &format!(
            "certificate=@{}",
            dir.join("intermediate.cert.pem").display()
        ),
    ]);
    cli(&[
        "write",
        "pki_int/roles/grade-api-tls",
        "issuer_ref=grade-api-intermediate",
        &format!("allowed_domains={ROLE_DOMAINS}"),
        "allow_subdomains=true",
        "allow_localhost=false",
        "max_ttl=720h",
        "key_type=rsa",
        "key_bits=2048",
        "require_cn=false",
        "server_flag=true",
        "client_flag=true",
    ]);
    // Beyond the tutorial: the intermediate mount's own URLs, so its leaves carry AIA and CRL points.
    cli(&[
        "write",
        "pki_int/config/urls",
        "issuing_certificates=https://coffer.example:8200/v1/pki_int/ca",
        "crl_distribution_points=https://coffer.example:8200/v1/pki_int/crl",
    ]);
    let leaf: Value = serde_json::from_str(&cli(&[
        "write",
        "-format=json",
        "pki_int/issue/grade-api-tls",
        "common_name=grade-api.grade-api.svc.cluster.local",
        "alt_names=grade-api.grade-api.svc.cluster.local,grade-api.svc.cluster.local",
        "ttl=24h",
    ]))
    .unwrap();
    write_leaf(&dir, "leaf", &leaf);
    assert_eq!(stdout(&verify(&dir, "leaf.pem")), "leaf.pem: OK");

    let text = openssl_ok(&dir, &["x509", "-in", "leaf.pem", "-noout", "-text"]);
    assert!(
        text.contains("DNS:grade-api.grade-api.svc.cluster.local, DNS:grade-api.svc.cluster.local"),
        "{text}"
    );
    assert!(
        text.contains("TLS Web Server Authentication, TLS Web Client Authentication"),
        "{text}"
    );
    assert!(
        text.contains("CA Issuers - URI:https://coffer.example:8200/v1/pki_int/ca"),
        "{text}"
    );
    assert!(
        text.contains("URI:https://coffer.example:8200/v1/pki_int/crl"),
        "{text}"
    );
    let intermediate = openssl_ok(
        &dir,
        &["x509", "-in", "intermediate.cert.pem", "-noout", "-text"],
    );
    assert!(
        intermediate.contains("CA Issuers - URI:https://coffer.example:8200/v1/pki/ca"),
        "the tutorial's URLs land on the intermediate"
    );
    let dates = openssl_ok(
        &dir,
        &[
            "x509",
            "-in",
            "leaf.pem",
            "-noout",
            "-startdate",
            "-enddate",
        ],
    );
    let expiration = leaf["data"]["expiration"].as_i64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (expiration - now - 24 * 3600).abs() < 60,
        "24h validity: {dates}"
    );
    assert_eq!(leaf["data"]["private_key_type"], json!("rsa"));
    assert!(
        leaf["data"]["private_key"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN RSA PRIVATE KEY-----")
    );
    assert_eq!(
        leaf["data"]["ca_chain"].as_array().unwrap().len(),
        2,
        "ca_chain reaches the root"
    );
    assert!(
        leaf["data"]["serial_number"]
            .as_str()
            .unwrap()
            .contains(':')
    );
    // The key matches the certificate.
    let cert_key = openssl_ok(&dir, &["x509", "-in", "leaf.pem", "-noout", "-pubkey"]);
    let private_key = openssl_ok(&dir, &["pkey", "-in", "leaf.key", "-pubout"]);
    assert_eq!(cert_key, private_key);
}

#[test]
fn short_lived_certificates_expire_and_can_be_reissued() {
    let coffer = Coffer::dev();
    let dir = temp_dir("pki-short");
    tutorial_ca(&coffer, &dir);
    write_leaf(
        &dir,
        "short",
        &issue(
            &coffer,
            json!({"common_name": "test.grade-api.svc.cluster.local", "ttl": "3s"}),
        ),
    );
    assert!(verify(&dir, "short.pem").status.success());
    std::thread::sleep(Duration::from_secs(5));
    let expired = verify(&dir, "short.pem");
    assert!(!expired.status.success());
    assert!(
        String::from_utf8_lossy(&expired.stdout).contains("certificate has expired")
            || String::from_utf8_lossy(&expired.stderr).contains("certificate has expired")
    );
    write_leaf(
        &dir,
        "again",
        &issue(
            &coffer,
            json!({"common_name": "test.grade-api.svc.cluster.local", "ttl": "1h"}),
        ),
    );
    assert!(verify(&dir, "again.pem").status.success());
}

#[test]
fn mutual_tls_handshake_with_issued_certificates() {
    let coffer = Coffer::dev();
    let dir = temp_dir("pki-mtls");
    tutorial_ca(&coffer, &dir);
    write_leaf(
        &dir,
        "server",
        &issue(
            &coffer,
            json!({"common_name": "grade-api.svc.cluster.local", "ttl": "1h"}),
        ),
    );
    write_leaf(
        &dir,
        "client",
        &issue(
            &coffer,
            json!({"common_name": "client.grade-api.svc.cluster.local", "ttl": "1h"}),
        ),
    );
    let chain = format!(
        "{}\n{}",
        std::fs::read_to_string(dir.join("intermediate.cert.pem")).unwrap(),
        std::fs::read_to_string(dir.join("root-ca.crt")).unwrap()
    );
    std::fs::write(dir.join("chain.pem"), chain).unwrap();
    let port = free_port().to_string();
    let mut server = Command::new("openssl")
        .args([
            "s_server",
            "-accept",
            &port,
            "-cert",
            "server.pem",
            "-key",
            "server.key",
            "-CAfile",
            "chain.pem",
            "-Verify",
            "2",
            "-verify_return_error",
            "-naccept",
            "1",
            "-quiet",
        ])
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // s_server ends the connection when its own stdin closes: keep it open meanwhile.
    let server_stdin = server.stdin.take();
    std::thread::sleep(Duration::from_millis(500));
    let client = Command::new("sh")
        .arg("-c")
        .arg(format!("echo ping | openssl s_client -connect 127.0.0.1:{port} -cert client.pem -key client.key -CAfile chain.pem -verify_return_error -servername grade-api.svc.cluster.local -verify_hostname grade-api.svc.cluster.local"))
        .current_dir(&dir)
        .output()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(server_stdin);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while server.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = server.kill();
    let server_output = server.wait_with_output().unwrap();
    let client_text = String::from_utf8_lossy(&client.stdout);
    assert!(
        client_text.contains("Verification: OK")
            || client_text.contains("Verify return code: 0 (ok)"),
        "client did not verify the server:\n{client_text}\n{}",
        String::from_utf8_lossy(&client.stderr)
    );
    assert!(
        !String::from_utf8_lossy(&server_output.stderr).contains("verify error"),
        "server rejected the client: {}",
        String::from_utf8_lossy(&server_output.stderr)
    );
    assert!(
        String::from_utf8_lossy(&server_output.stdout).contains("ping"),
        "no data crossed the mutual TLS connection: {}",
        String::from_utf8_lossy(&server_output.stderr)
    );
}

#[test]
fn sign_an_openssl_csr_and_the_cert_manager_request() {
    let coffer = Coffer::dev();
    let dir = temp_dir("pki-sign");
    tutorial_ca(&coffer, &dir);
    openssl_ok(
        &dir,
        &[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "app.key",
            "-out",
            "app.csr",
            "-subj",
            "/CN=app.grade-api.svc.cluster.local",
            "-addext",
            "subjectAltName=DNS:app.grade-api.svc.cluster.local",
        ],
    );
    let csr = std::fs::read_to_string(dir.join("app.csr")).unwrap();
    // Exactly what cert-manager's Vault issuer sends: every field a string.
    let request = json!({
        "common_name": "app.grade-api.svc.cluster.local", "alt_names": "app.grade-api.svc.cluster.local",
        "ip_sans": "", "uri_sans": "", "ttl": "24h0m0s", "csr": csr, "exclude_cn_from_sans": "true",
    });
    let signed = coffer.call("POST", "pki_int/sign/grade-api-tls", Some(request));
    assert_eq!(signed.status, 200, "{}", signed.text);
    assert!(signed.data().get("private_key").is_none());
    std::fs::write(
        dir.join("app.pem"),
        signed.data()["certificate"].as_str().unwrap(),
    )
    .unwrap();
    assert!(verify(&dir, "app.pem").status.success());
    let chain = signed.data()["ca_chain"].as_array().unwrap();
    let root = std::fs::read_to_string(dir.join("root-ca.crt")).unwrap();
    assert_eq!(
        chain.last().unwrap().as_str().unwrap().trim(),
        root.trim(),
        "ca_chain must reach the root for cert-manager"
    );
    let text = openssl_ok(&dir, &["x509", "-in", "app.pem", "-noout", "-text"]);
    assert!(text.contains("DNS:app.grade-api.svc.cluster.local"));
    let ec_csr = coffer_tests::ec_csr(&dir, "ec", "/CN=ec.grade-api.svc.cluster.local");
    let wrong_type = coffer.call(
        "POST",
        "pki_int/sign/grade-api-tls",
        Some(json!({ "csr": ec_csr })),
    );
    assert_eq!(wrong_type.status, 400);
    assert_eq!(wrong_type.errors(), "role requires keys of type rsa");
    let verbatim = coffer.call(
        "POST",
        "pki_int/sign-verbatim",
        Some(json!({"csr": csr, "ttl": "1h"})),
    );
    assert_eq!(verbatim.status, 200, "{}", verbatim.text);
}

#[test]
fn revoked_certificates_appear_in_the_crl_and_fail_crl_checks() {
    let coffer = Coffer::dev();
    let dir = temp_dir("pki-crl");
    tutorial_ca(&coffer, &dir);
    let leaf = issue(
        &coffer,
        json!({"common_name": "gone.grade-api.svc.cluster.local", "ttl": "1h"}),
    );
    let kept = issue(
        &coffer,
        json!({"common_name": "kept.grade-api.svc.cluster.local", "ttl": "1h"}),
    );
    write_leaf(&dir, "gone", &leaf);
    write_leaf(&dir, "kept", &kept);
    let serial = leaf["data"]["serial_number"].as_str().unwrap();
    assert_eq!(revoke(&coffer, serial)["data"]["state"], json!("revoked"));
    assert_eq!(
        coffer
            .call(
                "POST",
                "pki_int/revoke",
                Some(json!({"serial_number": serial}))
            )
            .status,
        200,
        "idempotent"
    );
    let crl = coffer.raw("GET", "pki_int/crl/pem", None, None, &[]);
    assert_eq!(crl.status, 200);
    assert_eq!(crl.content_type, "application/x-pem-file");
    std::fs::write(dir.join("crl.pem"), &crl.text).unwrap();
    let crl_text = openssl_ok(&dir, &["crl", "-in", "crl.pem", "-noout", "-text"]);
    let hex = serial.replace(':', "").to_uppercase();
    assert!(
        crl_text.contains(&hex),
        "serial {hex} missing from the CRL:\n{crl_text}"
    );
    let chain = format!(
        "{}\n{}",
        std::fs::read_to_string(dir.join("root-ca.crt")).unwrap(),
        std::fs::read_to_string(dir.join("intermediate.cert.pem")).unwrap()
    );
    std::fs::write(dir.join("chain.pem"), chain).unwrap();
    let rejected = openssl(
        &dir,
        &[
            "verify",
            "-crl_check",
            "-CAfile",
            "chain.pem",
            "-CRLfile",
            "crl.pem",
            "gone.pem",
        ],
    );
    assert!(!rejected.status.success());
    assert!(
        String::from_utf8_lossy(&rejected.stdout).contains("certificate revoked")
            || String::from_utf8_lossy(&rejected.stderr).contains("certificate revoked")
    );
    assert!(
        openssl(
            &dir,
            &[
                "verify",
                "-crl_check",
                "-CAfile",
                "chain.pem",
                "-CRLfile",
                "crl.pem",
                "kept.pem"
            ]
        )
        .status
        .success()
    );
    let der = coffer.raw("GET", "pki_int/crl", None, None, &[]);
    assert_eq!(der.content_type, "application/pkix-crl");
    let read = coffer.call("GET", &format!("pki_int/cert/{serial}"), None);
    assert!(read.data()["revocation_time"].as_i64().unwrap() > 0);
    let unknown = coffer.call(
        "POST",
        "pki_int/revoke",
        Some(json!({"serial_number": "01:02:03"})),
    );
    assert_eq!(unknown.status, 400);
    assert_eq!(
        unknown.errors(),
        "certificate with serial 01:02:03 not found."
    );
    assert_eq!(
        coffer.call("GET", "pki_int/crl/rotate", None).data()["success"],
        json!(true)
    );
    for _ in 0..20 {
        let extra = issue(
            &coffer,
            json!({"common_name": "bulk.grade-api.svc.cluster.local", "ttl": "1h"}),
        );
        coffer.call(
            "POST",
            "pki_int/revoke",
            Some(json!({"serial_number": extra["data"]["serial_number"]})),
        );
    }
    std::fs::write(
        dir.join("crl2.pem"),
        coffer.raw("GET", "pki_int/crl/pem", None, None, &[]).text,
    )
    .unwrap();
    let count = openssl_ok(&dir, &["crl", "-in", "crl2.pem", "-noout", "-text"])
        .matches("Serial Number:")
        .count();
    assert_eq!(count, 21);
}

/// The CRL's text dump (`openssl crl -text`) as served now.
fn crl_text(coffer: &Coffer, dir: &Path) -> String {
    let crl = coffer.raw("GET", "pki_int/crl/pem", None, None, &[]);
    assert_eq!(crl.status, 200, "{}", crl.text);
    std::fs::write(dir.join("current.crl.pem"), &crl.text).unwrap();
    openssl_ok(dir, &["crl", "-in", "current.crl.pem", "-noout", "-text"])
}

fn crl_number(text: &str) -> String {
    let at = text.find("CRL Number:").expect("CRL Number extension");
    text[at..]
        .lines()
        .nth(1)
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn revocations_racing_crl_fetches_all_reach_the_crl() {
    let coffer = Coffer::dev();
    let dir = temp_dir("pki-crl-race");
    tutorial_ca(&coffer, &dir);
    // More revocations than one storage commit can clear, so the rebuild's cleanup spans
    // several commits.
    let serials: Vec<String> = (0..300)
        .map(|i| {
            let leaf = issue(
                &coffer,
                json!({"common_name": format!("r{i}.grade-api.svc.cluster.local"), "ttl": "1h"}),
            );
            leaf["data"]["serial_number"].as_str().unwrap().to_string()
        })
        .collect();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let fetcher = scope.spawn(|| {
            let mut fetches = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let crl = coffer.raw("GET", "pki_int/crl", None, None, &[]);
                assert_eq!(crl.status, 200, "{}", crl.text);
                fetches += 1;
            }
            fetches
        });
        let revokers: Vec<_> = serials
            .chunks(75)
            .map(|group| {
                let coffer = &coffer;
                scope.spawn(move || {
                    for serial in group {
                        revoke(coffer, serial);
                    }
                })
            })
            .collect();
        for revoker in revokers {
            revoker.join().unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(fetcher.join().unwrap() > 0, "the CRL was fetched meanwhile");
    });
    let text = crl_text(&coffer, &dir);
    for serial in &serials {
        let hex = serial.replace(':', "").to_uppercase();
        assert!(
            text.contains(&hex),
            "revoked serial {hex} missing from the CRL"
        );
    }
    // Nothing revoked since: the next fetch serves the same CRL instead of rebuilding.
    let number = crl_number(&text);
    assert_eq!(crl_number(&crl_text(&coffer, &dir)), number);
    let another = issue(
        &coffer,
        json!({"common_name": "late.grade-api.svc.cluster.local", "ttl": "1h"}),
    );
    let late = another["data"]["serial_number"].as_str().unwrap();
    revoke(&coffer, late);
    let after = crl_text(&coffer, &dir);
    assert_ne!(
        crl_number(&after),
        number,
        "a new revocation rebuilds the CRL"
    );
    assert!(after.contains(&late.replace(':', "").to_uppercase()));
}

#[test]
fn internal_ca_keys_are_never_returned() {
    let coffer = Coffer::dev();
    let dir = temp_dir("pki-keys");
    tutorial_ca(&coffer, &dir);
    let mut seen = String::new();
    for path in [
        "pki/issuer/default",
        "pki_int/issuer/default",
        "pki/issuer/root-2026/json",
        "pki/cert/ca",
        "pki/cert/ca_chain",
    ] {
        seen.push_str(&coffer.call("GET", path, None).text);
    }
    for path in ["pki/ca/pem", "pki_int/ca_chain", "pki/crl/pem"] {
        seen.push_str(&coffer.raw("GET", path, None, None, &[]).text);
    }
    let keys = coffer.call("LIST", "pki_int/keys", None);
    for id in keys.data()["keys"].as_array().unwrap() {
        seen.push_str(
            &coffer
                .call(
                    "GET",
                    &format!("pki_int/key/{}", id.as_str().unwrap()),
                    None,
                )
                .text,
        );
    }
    seen.push_str(
        &coffer
            .call(
                "POST",
                "pki/root/generate/internal",
                Some(json!({"common_name": "second-root"})),
            )
            .text,
    );
    assert!(
        !seen.contains("PRIVATE KEY"),
        "an internal key leaked: {seen}"
    );
    let exported = coffer.call(
        "POST",
        "pki/root/generate/exported",
        Some(json!({"common_name": "exported-root", "key_type": "ec"})),
    );
    assert_eq!(exported.status, 200, "{}", exported.text);
    assert_eq!(exported.data()["private_key_type"], json!("ec"));
    std::fs::write(
        dir.join("exported.pem"),
        exported.data()["certificate"].as_str().unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("exported.key"),
        exported.data()["private_key"].as_str().unwrap(),
    )
    .unwrap();
    assert_eq!(
        openssl_ok(&dir, &["x509", "-in", "exported.pem", "-noout", "-pubkey"]),
        openssl_ok(&dir, &["pkey", "-in", "exported.key", "-pubout"])
    );
    // The engine's own storage cannot reach the host's key store either.
    assert_eq!(coffer.call("GET", "pki/ca/pem", None).status, 200);
}

#[test]
fn policy_violations_are_4xx_and_issue_nothing() {
    let coffer = Coffer::dev();
    let dir = temp_dir("pki-policy");
    tutorial_ca(&coffer, &dir);
    let count = |c: &Coffer| {
        c.call("LIST", "pki_int/certs", None).data()["keys"]
            .as_array()
            .map_or(0, Vec::len)
    };
    let before = count(&coffer);
    let cases = [
        (
            json!({"common_name": "evil.example.com"}),
            "common name evil.example.com not allowed by this role",
        ),
        (
            json!({"common_name": "grade-api.svc.cluster.local", "alt_names": "localhost"}),
            "subject alternate name localhost not allowed by this role",
        ),
        (
            json!({"common_name": "localhost"}),
            "common name localhost not allowed by this role",
        ),
        (
            json!({"common_name": "grade-api.svc.cluster.local", "not_after": "2099-01-01T00:00:00Z"}),
            "beyond the expiration of the CA certificate",
        ),
        (
            json!({"common_name": "grade-api.svc.cluster.local", "ttl": "1h", "not_after": "2099-01-01T00:00:00Z"}),
            "Both should not be provided",
        ),
        (
            json!({"common_name": "grade-api.svc.cluster.local", "ip_sans": "not-an-ip"}),
            "is not an IP address",
        ),
    ];
    for (body, message) in cases {
        let reply = coffer.call("POST", "pki_int/issue/grade-api-tls", Some(body.clone()));
        assert_eq!(reply.status, 400, "{body}: {}", reply.text);
        assert!(reply.errors().contains(message), "{body}: {}", reply.text);
    }
    let capped = coffer.call(
        "POST",
        "pki_int/issue/grade-api-tls",
        Some(json!({"common_name": "grade-api.svc.cluster.local", "ttl": "2000h"})),
    );
    assert_eq!(capped.status, 200);
    assert!(
        capped.json["warnings"][0]
            .as_str()
            .unwrap()
            .contains("is longer than permitted maxTTL"),
        "{}",
        capped.text
    );
    assert_eq!(
        count(&coffer),
        before + 1,
        "only the capped request issued a certificate"
    );
    let no_ips = coffer.call("POST", "pki_int/roles/no-ips", Some(json!({"allowed_domains": ROLE_DOMAINS, "allow_ip_sans": false, "issuer_ref": "grade-api-intermediate"})));
    assert_eq!(no_ips.status, 200);
    let ip = coffer.call(
        "POST",
        "pki_int/issue/no-ips",
        Some(json!({"common_name": "grade-api.svc.cluster.local", "ip_sans": "10.0.0.1"})),
    );
    assert_eq!(ip.status, 400);
    assert!(
        ip.errors()
            .contains("IP Subject Alternative Names are not allowed in this role")
    );
    let small = coffer.call(
        "POST",
        "pki_int/roles/small",
        Some(json!({"allowed_domains": ROLE_DOMAINS, "key_type": "rsa", "key_bits": 1024})),
    );
    assert_eq!(small.status, 400);
    assert_eq!(
        small.errors(),
        "RSA keys < 2048 bits are unsafe and not supported"
    );
    openssl_ok(
        &dir,
        &[
            "req",
            "-new",
            "-newkey",
            "rsa:1024",
            "-nodes",
            "-keyout",
            "small.key",
            "-out",
            "small.csr",
            "-subj",
            "/CN=grade-api.svc.cluster.local",
        ],
    );
    let weak = coffer.call(
        "POST",
        "pki_int/sign/grade-api-tls",
        Some(json!({"csr": std::fs::read_to_string(dir.join("small.csr")).unwrap()})),
    );
    assert_eq!(weak.status, 400);
    assert!(
        weak.errors().contains("minimum of a 2048-bit key"),
        "{}",
        weak.text
    );
    let bare_off = coffer.call("POST", "pki_int/roles/vaultish", Some(json!({"allowed_domains": ROLE_DOMAINS, "allow_bare_domains": false, "allow_subdomains": true, "issuer_ref": "grade-api-intermediate"})));
    assert_eq!(bare_off.data()["allow_bare_domains"], json!(false));
    let bare = coffer.call(
        "POST",
        "pki_int/issue/vaultish",
        Some(json!({"common_name": "grade-api.svc.cluster.local"})),
    );
    assert_eq!(
        bare.status, 400,
        "explicit allow_bare_domains=false gets Vault's behaviour"
    );
    assert_eq!(
        coffer
            .call(
                "POST",
                "pki_int/issue/no-such-role",
                Some(json!({"common_name": "x"}))
            )
            .errors(),
        "unknown role: no-such-role"
    );
}

#[test]
fn malformed_pem_and_csr_inputs_are_4xx() {
    let coffer = Coffer::dev();
    let dir = temp_dir("pki-bad");
    tutorial_ca(&coffer, &dir);
    openssl_ok(
        &dir,
        &[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "t.key",
            "-out",
            "t.csr",
            "-subj",
            "/CN=t.grade-api.svc.cluster.local",
        ],
    );
    let good = std::fs::read_to_string(dir.join("t.csr")).unwrap();
    let tampered = {
        let lines: Vec<&str> = good.lines().collect();
        let mut body = lines[1].to_string();
        let replacement = if body.starts_with('A') { "B" } else { "A" };
        body.replace_range(10..11, replacement);
        let mut out = vec![lines[0].to_string(), body];
        out.extend(lines[2..].iter().map(|l| l.to_string()));
        out.join("\n")
    };
    let inputs = [
        ("pki_int/sign/grade-api-tls", json!({"csr": "not a csr"})),
        (
            "pki_int/sign/grade-api-tls",
            json!({"csr": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----"}),
        ),
        ("pki_int/sign/grade-api-tls", json!({"csr": tampered})),
        ("pki_int/sign/grade-api-tls", json!({})),
        (
            "pki_int/intermediate/set-signed",
            json!({"certificate": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"}),
        ),
        (
            "pki_int/intermediate/set-signed",
            json!({"certificate": std::fs::read_to_string(dir.join("root-ca.crt")).unwrap()}),
        ),
        ("pki_int/revoke", json!({"certificate": "garbage"})),
        ("pki_int/revoke", json!({"serial_number": "../../etc"})),
        (
            "pki/root/sign-intermediate",
            json!({"csr": "x".repeat(300_000)}),
        ),
        ("pki/root/generate/kms", json!({"common_name": "x"})),
        (
            "pki/config/urls",
            json!({"issuing_certificates": "not a url"}),
        ),
    ];
    for (path, body) in inputs {
        let reply = coffer.call("POST", path, Some(body.clone()));
        assert!(
            (400..500).contains(&reply.status),
            "{path} {body}: {} {}",
            reply.status,
            reply.text
        );
        assert!(!reply.errors().is_empty(), "{path}: no message");
    }
    assert_eq!(
        coffer.call("GET", "sys/health", None).status,
        200,
        "the server survived"
    );
}

#[test]
fn unauthenticated_fetch_paths_and_raw_bodies() {
    let coffer = Coffer::dev();
    assert_eq!(
        coffer.raw("GET", "pki/ca/pem", None, None, &[]).status,
        204,
        "no CA yet: empty 204"
    );
    let dir = temp_dir("pki-raw");
    tutorial_ca(&coffer, &dir);
    let pem = coffer.raw("GET", "pki/ca/pem", None, None, &[]);
    assert_eq!(pem.status, 200);
    assert_eq!(pem.content_type, "application/pem-certificate-chain");
    assert!(pem.text.starts_with("-----BEGIN CERTIFICATE-----") && !pem.text.ends_with('\n'));
    let chain = coffer.raw("GET", "pki_int/ca_chain", None, None, &[]);
    assert_eq!(chain.text.matches("BEGIN CERTIFICATE").count(), 2);
    assert_eq!(
        coffer
            .raw("LIST", "pki_int/issuers", None, None, &[])
            .status,
        200
    );
    assert_eq!(
        coffer
            .raw("GET", "pki_int/roles/grade-api-tls", None, None, &[])
            .status,
        403,
        "roles need a token"
    );
    let issuers = coffer.call("LIST", "pki_int/issuers", None);
    let info = issuers.data()["key_info"].as_object().unwrap();
    assert!(
        info.values()
            .any(|v| v["issuer_name"] == json!("grade-api-intermediate")
                && v["is_default"] == json!(true)),
        "{}",
        issuers.text
    );
}

#[test]
fn sign_self_issued_cross_signs_a_new_root() {
    let coffer = Coffer::dev();
    let dir = temp_dir("pki-self");
    tutorial_ca(&coffer, &dir);
    // A new root made elsewhere (self-signed, so self-issued), as during root rotation.
    openssl_ok(
        &dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=next-root",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            "next.key",
            "-out",
            "next.crt",
        ],
    );
    let next = std::fs::read_to_string(dir.join("next.crt")).unwrap();
    let reply = coffer.call(
        "POST",
        "pki/root/sign-self-issued",
        Some(json!({"certificate": next})),
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
    std::fs::write(
        dir.join("cross.pem"),
        reply.data()["certificate"].as_str().unwrap(),
    )
    .unwrap();
    let names = openssl_ok(
        &dir,
        &["x509", "-in", "cross.pem", "-noout", "-subject", "-issuer"],
    );
    assert!(
        names.contains("subject=CN = next-root") && names.contains("issuer=CN = grade-api-root-ca"),
        "{names}"
    );
    assert_eq!(
        openssl_ok(&dir, &["verify", "-CAfile", "root-ca.crt", "cross.pem"]),
        "cross.pem: OK"
    );
    // A leaf from the new root's key chains to the old root through the cross-signed cert.
    openssl_ok(
        &dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=leaf.next",
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
        ],
    );
    openssl_ok(
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "next.crt",
            "-CAkey",
            "next.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-out",
            "leaf.pem",
        ],
    );
    assert_eq!(
        openssl_ok(
            &dir,
            &[
                "verify",
                "-CAfile",
                "root-ca.crt",
                "-untrusted",
                "cross.pem",
                "leaf.pem"
            ]
        ),
        "leaf.pem: OK"
    );
    // Not self-issued: refused.
    let leaf = issue(
        &coffer,
        json!({"common_name": "x.grade-api.svc.cluster.local", "ttl": "1h"}),
    );
    let refused = coffer.call(
        "POST",
        "pki/root/sign-self-issued",
        Some(json!({"certificate": leaf["data"]["certificate"]})),
    );
    assert_eq!(refused.status, 400);
    assert!(
        refused.errors().contains("not self-issued"),
        "{}",
        refused.text
    );
}
