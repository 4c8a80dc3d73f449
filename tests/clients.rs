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

use std::process::{Command, Output};

use coffer_tests::{Coffer, Value, clients_venv, json, run_python, temp_dir};

/// Runs a Python script that uses hvac against `coffer` (its address is `sys.argv[1]`);
/// the script must print `ok` and exit 0.
fn run_hvac(coffer: &Coffer, script: &str) {
    run_python(script, &[&coffer.addr]);
}

/// `bao <args>` against `coffer` with `token` (none: no token at all).
fn bao(coffer: &Coffer, token: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(clients_venv().join("bin/bao"));
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
    run_hvac(&coffer, script);
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

/// hvac's policy and capability calls: a policy written in HCL (legacy `sys/policy`) and
/// one written as JSON (`sys/policies/acl`, hvac serializes a dict) both decide a token's
/// requests; capabilities for self and for another token; `default` cannot be deleted.
#[test]
fn hvac_writes_policies_in_hcl_and_json_and_checks_capabilities() {
    let coffer = Coffer::dev();
    let script = r#"
import sys, hvac
addr = sys.argv[1]
root = hvac.Client(url=addr, token="root")
root.secrets.kv.v1.create_or_update_secret("app", {"v": "1"}, mount_point="secret")
root.secrets.kv.v1.create_or_update_secret("other", {"v": "2"}, mount_point="secret")
root.sys.create_or_update_policy("reader", 'path "secret/app" {\n  capabilities = ["read", "list"]\n}\n')
root.sys.create_or_update_acl_policy("writer", {"path": {"secret/app": {"capabilities": ["update"], "allowed_parameters": {"v": ["ok-*"]}}}})
assert '"secret/app"' in root.sys.read_acl_policy("writer")["data"]["policy"]
assert "reader" in root.sys.read_policy("reader")["data"]["name"]
names = root.sys.list_acl_policies()["data"]["keys"]
assert {"reader", "writer", "default", "root"} <= set(names), names
reader = root.auth.token.create(policies=["reader"], ttl="1h")["auth"]["client_token"]
writer = root.auth.token.create(policies=["writer"], ttl="1h")["auth"]["client_token"]
r = hvac.Client(url=addr, token=reader)
w = hvac.Client(url=addr, token=writer)
assert r.secrets.kv.v1.read_secret("app", mount_point="secret")["data"]["v"] == "1"
for attempt in (lambda: r.secrets.kv.v1.read_secret("other", mount_point="secret"),
                lambda: r.secrets.kv.v1.create_or_update_secret("app", {"v": "x"}, method="PUT", mount_point="secret"),
                lambda: w.secrets.kv.v1.create_or_update_secret("app", {"v": "bad"}, method="PUT", mount_point="secret"),
                lambda: w.secrets.kv.v1.read_secret("app", mount_point="secret")):
    try:
        attempt()
        sys.exit("a request beyond the policy went through")
    except hvac.exceptions.Forbidden:
        pass
w.secrets.kv.v1.create_or_update_secret("app", {"v": "ok-2"}, method="PUT", mount_point="secret")
assert root.secrets.kv.v1.read_secret("app", mount_point="secret")["data"]["v"] == "ok-2"
own = r.sys.get_capabilities(["secret/app", "secret/other"])
assert sorted(own["secret/app"]) == ["list", "read"], own
assert own["secret/other"] == ["deny"], own
theirs = root.sys.get_capabilities(["secret/app"], token=writer)
assert theirs["secret/app"] == ["update"], theirs
try:
    root.sys.delete_acl_policy("default")
    sys.exit("default was deleted")
except hvac.exceptions.InvalidRequest:
    pass
root.sys.delete_acl_policy("writer")
try:
    w.secrets.kv.v1.create_or_update_secret("app", {"v": "ok-3"}, method="PUT", mount_point="secret")
    sys.exit("a deleted policy still granted")
except hvac.exceptions.Forbidden:
    pass
print("ok")
"#;
    run_hvac(&coffer, script);
}

#[test]
fn hvac_uses_token_roles_and_accessors() {
    let coffer = Coffer::dev();
    let script = r#"
import sys, hvac
addr = sys.argv[1]
root = hvac.Client(url=addr, token="root")
root.sys.create_or_update_policy("creator", 'path "auth/token/create/*" { capabilities = ["update"] }')
root.auth.token.create_or_update_role("app", allowed_policies=["app"], token_period="1h")
assert "app" in root.auth.token.list_roles()["data"]["keys"]
assert root.auth.token.read_role("app")["data"]["token_period"] == 3600
creator = root.auth.token.create(policies=["creator"], ttl="1h")["auth"]["client_token"]
made = hvac.Client(url=addr, token=creator).auth.token.create(role_name="app")["auth"]
assert made["policies"] == ["app", "default"], made
assert made["lease_duration"] == 3600, made
try:
    hvac.Client(url=addr, token=creator).auth.token.create(role_name="app", policies=["root"])
    sys.exit("a role handed out root")
except hvac.exceptions.InvalidRequest:
    pass
accessor = made["accessor"]
assert accessor in root.auth.token.list_accessors()["data"]["keys"]
looked = root.auth.token.lookup_accessor(accessor)["data"]
assert looked["id"] == "" and looked["role"] == "app", looked
assert root.auth.token.renew_accessor(accessor)["auth"]["client_token"] == ""
root.auth.token.revoke_accessor(accessor)
assert accessor not in root.auth.token.list_accessors()["data"]["keys"]
try:
    hvac.Client(url=addr, token=made["client_token"]).auth.token.lookup_self()
    sys.exit("a token revoked by accessor still works")
except hvac.exceptions.Forbidden:
    pass
try:
    hvac.Client(url=addr, token=creator).auth.token.list_accessors()
    sys.exit("a token without sudo listed accessors")
except hvac.exceptions.Forbidden:
    pass
root.auth.token.delete_role("app")
try:
    root.auth.token.read_role("app")
    sys.exit("a deleted role is still there")
except hvac.exceptions.InvalidPath:
    pass
print("ok")
"#;
    run_hvac(&coffer, script);
}

#[test]
fn the_bao_cli_creates_from_a_role_and_works_by_accessor() {
    let coffer = Coffer::dev();
    ok(&bao(
        &coffer,
        Some("root"),
        &[
            "write",
            "auth/token/roles/app",
            "allowed_policies=app",
            "orphan=true",
        ],
    ));
    let made = created_token(&coffer, "root", &["-role=app"]);
    assert_eq!(made["policies"], json!(["app", "default"]), "{made}");
    assert_eq!(made["orphan"], json!(true), "{made}");
    let accessor = made["accessor"].as_str().unwrap();
    let token = made["client_token"].as_str().unwrap();
    let listed = ok(&bao(
        &coffer,
        Some("root"),
        &["list", "auth/token/accessors"],
    ));
    assert!(listed.contains(accessor), "{listed}");
    let looked = ok(&bao(
        &coffer,
        Some("root"),
        &["token", "lookup", "-format=json", "-accessor", accessor],
    ));
    let looked: Value = serde_json::from_str(&looked).unwrap();
    assert_eq!(looked["data"]["id"], json!(""), "{looked}");
    assert_eq!(looked["data"]["role"], json!("app"), "{looked}");
    ok(&bao(
        &coffer,
        Some("root"),
        &["token", "revoke", "-accessor", accessor],
    ));
    assert!(
        denied(&bao(&coffer, Some(token), &["token", "lookup"])),
        "a token revoked by accessor still works"
    );
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

/// `bao path-help` (`GET ...?help=1`) reads Coffer's help for engine and native paths,
/// and gets a permission error without a token.
#[test]
fn the_bao_cli_reads_path_help() {
    let coffer = Coffer::dev();
    let issue = ok(&bao(&coffer, Some("root"), &["path-help", "pki/issue/web"]));
    assert!(issue.contains("common_name"), "{issue}");
    let root = ok(&bao(&coffer, Some("root"), &["path-help", "pki"]));
    assert!(root.contains("## PATHS"), "{root}");
    let create = ok(&bao(
        &coffer,
        Some("root"),
        &["path-help", "auth/token/create"],
    ));
    assert!(create.contains("ttl"), "{create}");
    assert!(denied(&bao(&coffer, None, &["path-help", "secret/app"])));
}
