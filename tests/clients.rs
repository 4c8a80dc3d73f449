//! Clients nobody here wrote, against the hardened server: the OpenBao CLI (`bao`) and
//! Python's `hvac`, installed by `scripts/test` into `target/clients-venv` (or the venv
//! named by `COFFER_CLIENTS_VENV`). They see the token tree, use limits, periodic tokens and
//! the public PKI paths the way a Vault user would.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

use std::path::PathBuf;
use std::process::{Command, Output};

use coffer_tests::{Coffer, Value, json, temp_dir, workspace};

fn venv() -> PathBuf {
    let venv = std::env::var_os("COFFER_CLIENTS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/clients-venv"));
    assert!(
        venv.join("bin/bao").exists() && venv.join("bin/python").exists(),
        "the client venv is missing at {}: run ./scripts/test, which creates it",
        venv.display()
    );
    venv
}

/// `bao <args>` against `coffer` with `token` (none: no token at all).
fn bao(coffer: &Coffer, token: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(venv().join("bin/bao"));
    command
        .args(args)
        .env("VAULT_ADDR", &coffer.addr)
        .env("HOME", temp_dir("bao-home"))
        .env_remove("VAULT_TOKEN");
    if let Some(token) = token {
        command.env("VAULT_TOKEN", token);
    }
    command.output().unwrap()
}

fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "bao failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn denied(output: &Output) -> bool {
    !output.status.success()
        && String::from_utf8_lossy(&output.stderr).contains("permission denied")
}

fn created_token(coffer: &Coffer, token: &str, flags: &[&str]) -> Value {
    let mut args = vec!["token", "create", "-format=json"];
    args.extend_from_slice(flags);
    let text = ok(&bao(coffer, Some(token), &args));
    serde_json::from_str::<Value>(&text).unwrap()["auth"].clone()
}

#[test]
fn the_bao_cli_sees_the_token_tree_limits_and_periods() {
    let coffer = Coffer::dev();
    coffer.policy("tree", coffer_tests::TREE_POLICY);
    let parent = created_token(&coffer, "root", &["-policy=tree", "-ttl=1h"]);
    let parent = parent["client_token"].as_str().unwrap().to_string();
    let child = created_token(&coffer, &parent, &["-ttl=30m"]);
    let child = child["client_token"].as_str().unwrap().to_string();
    ok(&bao(&coffer, Some(&child), &["token", "lookup"]));
    ok(&bao(&coffer, Some("root"), &["token", "revoke", &parent]));
    assert!(
        denied(&bao(&coffer, Some(&child), &["token", "lookup"])),
        "the child outlived its parent"
    );

    let limited = created_token(&coffer, "root", &["-use-limit=2"]);
    let limited = limited["client_token"].as_str().unwrap().to_string();
    let first = ok(&bao(
        &coffer,
        Some(&limited),
        &["token", "lookup", "-format=json"],
    ));
    let first: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(first["data"]["num_uses"], json!(1), "{first}");
    ok(&bao(&coffer, Some(&limited), &["token", "lookup"]));
    assert!(
        denied(&bao(&coffer, Some(&limited), &["token", "lookup"])),
        "a third use worked"
    );

    let periodic = created_token(&coffer, "root", &["-period=2h"]);
    assert_eq!(periodic["lease_duration"], json!(7200));
    let periodic = periodic["client_token"].as_str().unwrap().to_string();
    let renewed = ok(&bao(
        &coffer,
        Some(&periodic),
        &["token", "renew", "-format=json"],
    ));
    let renewed: Value = serde_json::from_str(&renewed).unwrap();
    assert_eq!(renewed["auth"]["lease_duration"], json!(7200));
}

#[test]
fn the_bao_cli_reads_public_pki_paths_and_cannot_write_them_without_a_token() {
    let coffer = Coffer::dev();
    let dir = temp_dir("bao-pki");
    ok(&bao(
        &coffer,
        Some("root"),
        &[
            "write",
            "pki/root/generate/internal",
            "common_name=example.com",
            "ttl=8760h",
            "issuer_name=root-ca",
        ],
    ));
    let ca = ok(&bao(
        &coffer,
        None,
        &["read", "-field=certificate", "pki/cert/ca"],
    ));
    assert!(ca.contains("BEGIN CERTIFICATE"), "{ca}");
    coffer_tests::ec_csr(&dir, "e", "/CN=evil-ca");
    let csr_arg = format!("csr=@{}", dir.join("e.csr").display());
    for token in [None, Some("cvs.bogus")] {
        let signed = bao(
            &coffer,
            token,
            &[
                "write",
                "pki/issuer/root-ca/sign-intermediate",
                &csr_arg,
                "common_name=evil-ca",
            ],
        );
        assert!(
            denied(&signed),
            "token {token:?}: {}",
            String::from_utf8_lossy(&signed.stdout)
        );
        let deleted = bao(&coffer, token, &["delete", "pki/issuer/default"]);
        assert!(
            denied(&deleted),
            "token {token:?}: {}",
            String::from_utf8_lossy(&deleted.stdout)
        );
    }
    ok(&bao(
        &coffer,
        None,
        &["read", "-field=certificate", "pki/cert/ca"],
    ));
}

#[test]
fn hvac_sees_the_token_tree_and_the_public_paths() {
    let coffer = Coffer::dev();
    let script = r#"
import sys, hvac
addr = sys.argv[1]
root = hvac.Client(url=addr, token="root")
root.secrets.pki.generate_root("internal", "example.com", extra_params={"ttl": "8760h"})
root.sys.create_or_update_policy("tree", 'path "auth/token/create" { capabilities = ["update"] }')
assert "auth/token/create" in root.sys.read_policy("tree")["data"]["rules"]
parent = root.auth.token.create(policies=["tree"], ttl="1h")["auth"]["client_token"]
child = hvac.Client(url=addr, token=parent).auth.token.create(ttl="30m")["auth"]["client_token"]
assert hvac.Client(url=addr, token=child).auth.token.lookup_self()["data"]["ttl"] > 0
root.auth.token.revoke(parent)
try:
    hvac.Client(url=addr, token=child).auth.token.lookup_self()
    sys.exit("the child outlived its revoked parent")
except hvac.exceptions.Forbidden:
    pass
anonymous = hvac.Client(url=addr)
assert "BEGIN CERTIFICATE" in anonymous.secrets.pki.read_ca_certificate()
try:
    anonymous.secrets.pki.delete_role("web")
    sys.exit("an anonymous delete went through")
except hvac.exceptions.Forbidden:
    pass
try:
    root.auth.token.create(ttl=1e20)
    sys.exit("an overflowing ttl was accepted")
except hvac.exceptions.InvalidRequest as error:
    assert "ttl" in str(error), error
print("ok")
"#;
    let output = Command::new(venv().join("bin/python"))
        .args(["-c", script, &coffer.addr])
        .output()
        .unwrap();
    assert!(
        output.status.success() && String::from_utf8_lossy(&output.stdout).trim() == "ok",
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_bao_cli_works_with_a_token_that_has_only_its_policy() {
    let coffer = Coffer::dev();
    ok(&bao(
        &coffer,
        Some("root"),
        &["kv", "put", "secret/app", "password=s3cret"],
    ));
    coffer.policy("app", r#"path "secret/app" { capabilities = ["read"] }"#);
    let app = created_token(&coffer, "root", &["-policy=app", "-ttl=1h"]);
    let app = app["client_token"].as_str().unwrap().to_string();
    let password = ok(&bao(
        &coffer,
        Some(&app),
        &["kv", "get", "-field=password", "secret/app"],
    ));
    assert_eq!(password.trim(), "s3cret");
    assert!(denied(&bao(
        &coffer,
        Some(&app),
        &["kv", "put", "secret/app", "password=mine"]
    )));
    assert!(denied(&bao(
        &coffer,
        Some(&app),
        &["kv", "get", "secret/other"]
    )));
    let capabilities = ok(&bao(
        &coffer,
        Some(&app),
        &["token", "capabilities", "secret/app"],
    ));
    assert_eq!(capabilities.trim(), "read");
}

#[test]
fn the_bao_cli_lists_and_tunes_auth_mounts_and_an_operator_seals_with_sudo() {
    let coffer = Coffer::dev();
    let listed = ok(&bao(
        &coffer,
        Some("root"),
        &["auth", "list", "-format=json"],
    ));
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed["token/"]["type"], json!("token"), "{listed}");
    ok(&bao(
        &coffer,
        Some("root"),
        &["auth", "tune", "-max-lease-ttl=1h", "token/"],
    ));
    let tune = ok(&bao(
        &coffer,
        Some("root"),
        &["read", "-format=json", "sys/auth/token/tune"],
    ));
    let tune: Value = serde_json::from_str(&tune).unwrap();
    assert_eq!(tune["data"]["max_lease_ttl"], json!(3600), "{tune}");
    let child = created_token(&coffer, "root", &["-policy=default", "-ttl=2h"]);
    assert_eq!(child["lease_duration"], json!(3600), "{child}");
    let refused = bao(&coffer, Some("root"), &["auth", "enable", "userpass"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("unknown auth method type"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    coffer.policy(
        "operator",
        r#"path "sys/seal" { capabilities = ["update", "sudo"] }
path "sys/auth" { capabilities = ["read"] }"#,
    );
    let operator = created_token(&coffer, "root", &["-policy=operator", "-ttl=1h"]);
    let operator = operator["client_token"].as_str().unwrap().to_string();
    ok(&bao(&coffer, Some(&operator), &["auth", "list"]));
    assert!(denied(&bao(
        &coffer,
        Some(&operator),
        &["auth", "tune", "-max-lease-ttl=2h", "token/"]
    )));
    ok(&bao(&coffer, Some(&operator), &["operator", "seal"]));
    let status = coffer.call("GET", "sys/seal-status", None);
    assert_eq!(status.json["sealed"], json!(true), "{}", status.text);
}
