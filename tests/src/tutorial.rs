//! The tutorial's PKI, shared by the tests that need a working CA: the root on `pki/`,
//! the intermediate on `pki_int/`, the `grade-api-tls` role; and `openssl` to check what
//! it issues.

use std::path::Path;
use std::process::{Command, Output};

use crate::{Coffer, json, stdout};

/// The tutorial role's `allowed_domains`.
pub const ROLE_DOMAINS: &str = "grade-api.svc.cluster.local,grade-api.grade-api.svc.cluster.local";

/// Runs the real `openssl` in `dir`.
pub fn openssl(dir: &Path, args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

/// [`openssl`], failing the test unless it succeeds; its standard output.
pub fn openssl_ok(dir: &Path, args: &[&str]) -> String {
    stdout(&openssl(dir, args))
}

/// The tutorial's setup over HTTP: root on pki/, intermediate on pki_int/, the role.
pub fn tutorial_ca(coffer: &Coffer, dir: &Path) {
    let ok = |status: u16, text: &str| assert!(status == 200 || status == 204, "{text}");
    let r = coffer.call("POST", "sys/mounts/pki_int", Some(json!({"type": "pki"})));
    ok(r.status, &r.text);
    let r = coffer.call(
        "POST",
        "sys/mounts/pki/tune",
        Some(json!({"max_lease_ttl": "87600h"})),
    );
    ok(r.status, &r.text);
    let root = coffer.call("POST", "pki/root/generate/internal", Some(json!({"common_name": "grade-api-root-ca", "issuer_name": "root-2026", "ttl": "87600h"})));
    assert_eq!(root.status, 200, "{}", root.text);
    std::fs::write(
        dir.join("root-ca.crt"),
        root.data()["certificate"].as_str().unwrap(),
    )
    .unwrap();
    for mount in ["pki", "pki_int"] {
        let urls = coffer.call(
            "POST",
            &format!("{mount}/config/urls"),
            Some(json!({
                "issuing_certificates": format!("https://coffer.example:8200/v1/{mount}/ca"),
                "crl_distribution_points": format!("https://coffer.example:8200/v1/{mount}/crl"),
            })),
        );
        ok(urls.status, &urls.text);
    }
    let csr = coffer.call("POST", "pki_int/intermediate/generate/internal", Some(json!({"common_name": "grade-api-intermediate-ca", "issuer_name": "grade-api-intermediate"})));
    assert_eq!(csr.status, 200, "{}", csr.text);
    let signed = coffer.call("POST", "pki/root/sign-intermediate", Some(json!({"issuer_ref": "root-2026", "csr": csr.data()["csr"], "format": "pem_bundle", "ttl": "43800h"})));
    assert_eq!(signed.status, 200, "{}", signed.text);
    let bundle = signed.data()["certificate"].as_str().unwrap();
    std::fs::write(dir.join("intermediate.cert.pem"), bundle).unwrap();
    let set = coffer.call(
        "POST",
        "pki_int/intermediate/set-signed",
        Some(json!({"certificate": bundle})),
    );
    assert_eq!(set.status, 200, "{}", set.text);
    let role = coffer.call("POST", "pki_int/roles/grade-api-tls", Some(json!({
        "issuer_ref": "grade-api-intermediate", "allowed_domains": ROLE_DOMAINS, "allow_subdomains": true,
        "allow_localhost": false, "max_ttl": "720h", "key_type": "rsa", "key_bits": 2048, "require_cn": false,
        "server_flag": true, "client_flag": true,
    })));
    assert_eq!(role.status, 200, "{}", role.text);
}

/// `openssl verify` of `leaf` (in `dir`) against the tutorial's root (`root-ca.crt`) with
/// the intermediate (`intermediate.cert.pem`) as untrusted chain.
pub fn verify(dir: &Path, leaf: &str) -> Output {
    openssl(
        dir,
        &[
            "verify",
            "-CAfile",
            "root-ca.crt",
            "-untrusted",
            "intermediate.cert.pem",
            leaf,
        ],
    )
}
