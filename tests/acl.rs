//! ACL policies enforced before any engine runs: a token with only `default` is refused
//! everywhere but its own token paths, a policy for one path grants exactly that path,
//! and the policy API validates what it stores. Driven over HTTP against the dev server.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

use coffer_tests::{Coffer, Reply, Value, json};

/// A token with `policies`, created by root.
fn token(coffer: &Coffer, policies: &[&str]) -> String {
    let reply = coffer.call(
        "POST",
        "auth/token/create",
        Some(json!({ "policies": policies, "ttl": "1h" })),
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_string()
}

fn as_token(coffer: &Coffer, token: &str, method: &str, path: &str, body: Option<Value>) -> Reply {
    let body = body.map(|b| b.to_string());
    coffer.raw(method, path, Some(token), body.as_deref(), &[])
}

/// Every path of every mounted engine's table and the sys/token paths an operator uses,
/// with every method: a `default` token gets 403 on each, and nothing changes.
#[test]
fn a_default_token_is_refused_everywhere_but_its_own_token_paths() {
    let coffer = Coffer::dev();
    assert_eq!(
        coffer
            .call(
                "POST",
                "pki/root/generate/internal",
                Some(json!({"common_name": "example.com", "issuer_name": "root-ca"}))
            )
            .status,
        200
    );
    assert_eq!(
        coffer
            .call("POST", "secret/app", Some(json!({"v": "1"})))
            .status,
        204
    );
    let user = token(&coffer, &["default"]);
    let spec = coffer.call("GET", "sys/internal/specs/openapi", None);
    let paths = spec.json["paths"].as_object().unwrap().clone();
    let mut checked = 0;
    for (template, item) in &paths {
        if template.starts_with("/sys/") || template.starts_with("/auth/") {
            // The native paths: the list below covers them (a default token may use its
            // own token paths, which the walk would take as a hole).
            continue;
        }
        let path: String = template
            .trim_start_matches('/')
            .split('/')
            .map(|segment| {
                if segment.starts_with('{') {
                    "x"
                } else {
                    segment
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        let public = item["x-vault-unauthenticated"] == json!(true);
        for (key, methods) in [
            ("get", &["GET", "LIST"][..]),
            ("post", &["POST", "PUT"][..]),
            ("delete", &["DELETE"][..]),
        ] {
            if item.get(key).is_none() {
                continue;
            }
            for method in methods {
                if public && matches!(*method, "GET" | "LIST") {
                    continue;
                }
                let reply = as_token(
                    &coffer,
                    &user,
                    method,
                    &path,
                    Some(json!({"common_name": "a.example.com", "v": "2"})),
                );
                assert_eq!(reply.status, 403, "{method} {path}: {}", reply.text);
                checked += 1;
            }
        }
    }
    assert!(checked >= 60, "only {checked} requests were checked");
    for (method, path) in [
        ("GET", "sys/mounts"),
        ("POST", "sys/mounts/evil"),
        ("POST", "sys/mounts/secret/tune"),
        ("DELETE", "sys/mounts/secret"),
        ("POST", "sys/leases/revoke-prefix/secret"),
        ("LIST", "sys/policies/acl"),
        ("POST", "sys/policies/acl/evil"),
        ("DELETE", "sys/policies/acl/default"),
        ("POST", "auth/token/create"),
        ("POST", "auth/token/revoke"),
        ("GET", "sys/internal/specs/openapi"),
        ("POST", "sys/seal"),
        ("GET", "no-such-mount/x"),
    ] {
        let reply = as_token(
            &coffer,
            &user,
            method,
            path,
            Some(json!({"type": "kv", "policy": "path \"*\" { capabilities = [\"sudo\"] }"})),
        );
        assert_eq!(reply.status, 403, "{method} {path}: {}", reply.text);
    }
    assert_eq!(
        as_token(&coffer, &user, "GET", "auth/token/lookup-self", None).status,
        200
    );
    let capabilities = as_token(
        &coffer,
        &user,
        "POST",
        "sys/capabilities-self",
        Some(json!({"paths": ["secret/app", "auth/token/lookup-self"]})),
    );
    assert_eq!(capabilities.status, 200, "{}", capabilities.text);
    assert_eq!(capabilities.data()["secret/app"], json!(["deny"]));
    assert_eq!(
        capabilities.data()["auth/token/lookup-self"],
        json!(["read"])
    );
    assert_eq!(
        coffer.call("GET", "secret/app", None).data()["v"],
        json!("1")
    );
    assert_eq!(coffer.list("sys/policies/acl"), vec!["default", "root"]);
    assert_eq!(coffer.call("GET", "sys/mounts/evil", None).status, 404);
}

#[test]
fn a_policy_for_one_path_grants_that_path_and_nothing_else() {
    let coffer = Coffer::dev();
    coffer.call("POST", "secret/app", Some(json!({"v": "1"})));
    coffer.call("POST", "secret/other", Some(json!({"v": "2"})));
    coffer.policy(
        "app-read",
        r#"path "secret/app" { capabilities = ["read"] }"#,
    );
    let reader = token(&coffer, &["app-read"]);
    assert_eq!(
        as_token(&coffer, &reader, "GET", "secret/app", None).status,
        200
    );
    for (method, path) in [
        ("GET", "secret/other"),
        ("POST", "secret/app"),
        ("DELETE", "secret/app"),
        ("LIST", "secret/"),
    ] {
        assert_eq!(
            as_token(&coffer, &reader, method, path, Some(json!({"v": "3"}))).status,
            403,
            "{method} {path}"
        );
    }
    // A change to the policy applies to the next request.
    coffer.policy(
        "app-read",
        r#"path "secret/app" { capabilities = ["deny"] }"#,
    );
    assert_eq!(
        as_token(&coffer, &reader, "GET", "secret/app", None).status,
        403
    );
    // Parameter rules, and a write-only policy on a create+update path.
    coffer.policy(
        "app-write",
        r#"path "secret/app" {
  capabilities = ["update"]
  allowed_parameters = { "v" = ["ok-*"] }
}"#,
    );
    let writer = token(&coffer, &["app-write"]);
    assert_eq!(
        as_token(
            &coffer,
            &writer,
            "POST",
            "secret/app",
            Some(json!({"v": "ok-1"}))
        )
        .status,
        204
    );
    assert_eq!(
        as_token(
            &coffer,
            &writer,
            "POST",
            "secret/app",
            Some(json!({"v": "bad"}))
        )
        .status,
        403
    );
    assert_eq!(
        as_token(
            &coffer,
            &writer,
            "POST",
            "secret/app",
            Some(json!({"v": "ok-2", "x": "1"}))
        )
        .status,
        403
    );
    assert_eq!(
        coffer.call("GET", "secret/app", None).data()["v"],
        json!("ok-1")
    );
}

#[test]
fn the_policy_api_validates_and_protects_default_and_root() {
    let coffer = Coffer::dev();
    let bad = coffer.call(
        "PUT",
        "sys/policies/acl/bad",
        Some(json!({"policy": "path \"x\" { capabilities = [\"fly\"] }"})),
    );
    assert_eq!(bad.status, 400, "{}", bad.text);
    assert!(bad.errors().contains("fly"), "{}", bad.text);
    assert_eq!(coffer.call("GET", "sys/policies/acl/bad", None).status, 404);
    assert_eq!(
        coffer
            .call("DELETE", "sys/policies/acl/default", None)
            .status,
        400
    );
    assert_eq!(
        coffer
            .call(
                "PUT",
                "sys/policies/acl/root",
                Some(json!({"policy": "path \"x\" { capabilities = [\"read\"] }"}))
            )
            .status,
        400
    );
    // JSON policies, and the legacy endpoint hvac uses.
    let json_policy = json!({"path": {"secret/app": {"capabilities": ["read"]}}});
    assert_eq!(
        coffer
            .call(
                "PUT",
                "sys/policy/json-one",
                Some(json!({"policy": json_policy}))
            )
            .status,
        204
    );
    let legacy = coffer.call("GET", "sys/policy/json-one", None);
    assert_eq!(legacy.status, 200, "{}", legacy.text);
    assert!(
        legacy.json["rules"]
            .as_str()
            .unwrap()
            .contains("secret/app")
    );
    let reader = token(&coffer, &["json-one"]);
    assert_eq!(
        as_token(&coffer, &reader, "GET", "secret/app", None).status,
        404,
        "allowed, and absent"
    );
    assert_eq!(
        coffer
            .call("DELETE", "sys/policies/acl/json-one", None)
            .status,
        204
    );
    assert_eq!(
        as_token(&coffer, &reader, "GET", "secret/app", None).status,
        403,
        "a deleted policy still granted"
    );
    // Tuning a mount's sandbox limits needs sudo.
    coffer.policy(
        "tuner",
        r#"path "sys/mounts/secret/tune" { capabilities = ["update"] }"#,
    );
    let tuner = token(&coffer, &["tuner"]);
    assert_eq!(
        as_token(
            &coffer,
            &tuner,
            "POST",
            "sys/mounts/secret/tune",
            Some(json!({"max_lease_ttl": "2h"}))
        )
        .status,
        204
    );
    assert_eq!(
        as_token(
            &coffer,
            &tuner,
            "POST",
            "sys/mounts/secret/tune",
            Some(json!({"engine_memory_limit": 1 << 30}))
        )
        .status,
        403
    );
}

/// Vault's existence check: on a path whose table offers create, update and read, a write
/// to something that is not there needs `create`, a write over something that is needs
/// `update`; a refused write changes nothing.
#[test]
fn create_and_update_are_told_apart_by_an_existence_check() {
    let coffer = Coffer::dev();
    assert_eq!(
        coffer
            .call("POST", "secret/app", Some(json!({"v": "1"})))
            .status,
        204
    );
    coffer.policy(
        "create-only",
        r#"path "secret/*" { capabilities = ["create", "read"] }"#,
    );
    coffer.policy(
        "update-only",
        r#"path "secret/*" { capabilities = ["update", "read"] }"#,
    );
    let creator = token(&coffer, &["create-only"]);
    let updater = token(&coffer, &["update-only"]);
    let write = |token: &str, path: &str, v: &str| {
        as_token(&coffer, token, "POST", path, Some(json!({ "v": v }))).status
    };
    // create: new entries yes, existing ones no.
    assert_eq!(write(&creator, "secret/new", "c"), 204);
    assert_eq!(write(&creator, "secret/app", "c"), 403);
    assert_eq!(write(&creator, "secret/new", "again"), 403);
    // update: existing entries yes, new ones no.
    assert_eq!(write(&updater, "secret/app", "u"), 204);
    assert_eq!(write(&updater, "secret/fresh", "u"), 403);
    assert_eq!(coffer.call("GET", "secret/fresh", None).status, 404);
    assert_eq!(
        coffer.call("GET", "secret/app", None).data()["v"],
        json!("u")
    );
    assert_eq!(
        coffer.call("GET", "secret/new", None).data()["v"],
        json!("c")
    );
    // A token that may do neither is refused the same way whether or not the entry exists.
    let stranger = token(&coffer, &["default"]);
    assert_eq!(write(&stranger, "secret/app", "x"), 403);
    assert_eq!(write(&stranger, "secret/none", "x"), 403);
    // A write the engine would refuse is still the engine's 400 for a permitted caller.
    let empty = as_token(&coffer, &creator, "POST", "secret/empty", Some(json!({})));
    assert_eq!(empty.status, 400, "{}", empty.text);
    assert!(empty.text.contains("no data provided"), "{}", empty.text);
    // Root is unaffected either way.
    assert_eq!(
        coffer
            .call("POST", "secret/app", Some(json!({"v": "r"})))
            .status,
        204
    );
    assert_eq!(
        coffer
            .call("POST", "secret/r", Some(json!({"v": "r"})))
            .status,
        204
    );
}
