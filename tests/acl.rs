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

use coffer_tests::{Coffer, Reply, Value, fixtures_config, json, temp_dir};

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
    let user = coffer.token_with(&["default"]);
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
    let reader = coffer.token_with(&["app-read"]);
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
    let writer = coffer.token_with(&["app-write"]);
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
    let reader = coffer.token_with(&["json-one"]);
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
    let tuner = coffer.token_with(&["tuner"]);
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
    let creator = coffer.token_with(&["create-only"]);
    let updater = coffer.token_with(&["update-only"]);
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
    let stranger = coffer.token_with(&["default"]);
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
/// A server with the test fixtures (the `leasing` engine makes leases), initialized and
/// unsealed; its unseal keys.
fn leasing_server(label: &str) -> (Coffer, Vec<String>) {
    let mut coffer = Coffer::with_config(&temp_dir(label), &fixtures_config());
    let keys = coffer.init_and_unseal(1, 1);
    (coffer, keys)
}

/// A lease of the `leasing` engine created with `token`.
fn lease_for(coffer: &Coffer, token: &str) -> String {
    let reply = as_token(coffer, token, "GET", "leasing/creds/app", None);
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json["lease_id"].as_str().unwrap().to_string()
}

const LEASE_READER: &str = r#"path "leasing/creds/*" { capabilities = ["read"] }"#;

/// What a refused request must not have changed.
fn sys_state(coffer: &Coffer, lease: &str) -> Value {
    json!({
        "mounts": coffer.call("GET", "sys/mounts", None).data().clone(),
        "auth": coffer.call("GET", "sys/auth", None).data().clone(),
        "policies": coffer.list("sys/policies/acl"),
        "lease": coffer.call("PUT", "sys/leases/lookup", Some(json!({"lease_id": lease}))).status,
        "sealed": coffer.call("GET", "sys/seal-status", None).json["sealed"].clone(),
    })
}

/// Every `sys/` path and method Coffer serves (each arm of `system::system`): a token
/// with only `default` gets 403 on all but what `default` grants, and nothing changes.
#[test]
fn a_default_token_is_refused_on_every_sys_path_default_does_not_grant() {
    let (coffer, _) = leasing_server("acl-sys-matrix");
    let others = lease_for(&coffer, &coffer.token);
    let user = coffer.token_with(&["default"]);
    let before = sys_state(&coffer, &others);
    let lease_body = json!({"lease_id": others});
    let refused: Vec<(&str, String, Option<Value>)> = vec![
        ("POST", "sys/seal".into(), None),
        ("GET", "sys/mounts".into(), None),
        ("GET", "sys/mounts/secret".into(), None),
        (
            "POST",
            "sys/mounts/evil".into(),
            Some(json!({"type": "kv"})),
        ),
        ("DELETE", "sys/mounts/secret".into(), None),
        ("GET", "sys/mounts/secret/tune".into(), None),
        (
            "POST",
            "sys/mounts/secret/tune".into(),
            Some(json!({"max_lease_ttl": "1h"})),
        ),
        ("GET", "sys/auth".into(), None),
        ("GET", "sys/auth/token".into(), None),
        (
            "POST",
            "sys/auth/evil".into(),
            Some(json!({"type": "userpass"})),
        ),
        ("DELETE", "sys/auth/token".into(), None),
        ("GET", "sys/auth/token/tune".into(), None),
        ("GET", "sys/mounts/auth/token/tune".into(), None),
        (
            "POST",
            "sys/mounts/auth/token/tune".into(),
            Some(json!({"max_lease_ttl": "1h"})),
        ),
        (
            "POST",
            "sys/auth/token/tune".into(),
            Some(json!({"max_lease_ttl": "1h"})),
        ),
        ("GET", "sys/policy".into(), None),
        ("LIST", "sys/policy".into(), None),
        ("LIST", "sys/policies/acl".into(), None),
        ("GET", "sys/policies/acl".into(), None),
        ("GET", "sys/policy/default".into(), None),
        (
            "PUT",
            "sys/policy/evil".into(),
            Some(json!({"policy": "path \"*\" { capabilities = [\"sudo\"] }"})),
        ),
        ("DELETE", "sys/policy/default".into(), None),
        ("GET", "sys/policies/acl/default".into(), None),
        (
            "PUT",
            "sys/policies/acl/evil".into(),
            Some(json!({"policy": "path \"*\" { capabilities = [\"sudo\"] }"})),
        ),
        ("DELETE", "sys/policies/acl/default".into(), None),
        (
            "POST",
            "sys/capabilities".into(),
            Some(json!({"token": "root", "paths": ["sys"]})),
        ),
        ("GET", "sys/internal/specs/openapi".into(), None),
        ("GET", "sys/plugins/catalog".into(), None),
        ("GET", "sys/leases?type=irrevocable".into(), None),
        ("LIST", "sys/leases/lookup/".into(), None),
        ("LIST", "sys/leases/lookup/leasing/creds/app/".into(), None),
        ("PUT", "sys/leases/lookup".into(), Some(lease_body.clone())),
        ("PUT", "sys/leases/renew".into(), Some(lease_body.clone())),
        ("PUT", format!("sys/leases/renew/{others}"), None),
        ("PUT", "sys/leases/revoke".into(), Some(lease_body.clone())),
        ("PUT", format!("sys/leases/revoke/{others}"), None),
        ("PUT", "sys/renew".into(), Some(lease_body.clone())),
        ("PUT", format!("sys/renew/{others}"), None),
        ("PUT", "sys/revoke".into(), Some(lease_body.clone())),
        ("PUT", format!("sys/revoke/{others}"), None),
        ("PUT", "sys/leases/revoke-prefix/leasing".into(), None),
        ("PUT", "sys/leases/revoke-force/leasing".into(), None),
        ("PUT", "sys/revoke-prefix/leasing".into(), None),
        ("PUT", "sys/revoke-force/leasing".into(), None),
        ("GET", "sys/audit".into(), None),
        (
            "PUT",
            "sys/audit/evil".into(),
            Some(json!({"type": "file", "options": {"file_path": "discard"}})),
        ),
        ("DELETE", "sys/audit/evil".into(), None),
        (
            "POST",
            "sys/audit-hash/evil".into(),
            Some(json!({"input": "x"})),
        ),
        ("GET", "sys/metrics?format=prometheus".into(), None),
        ("GET", "sys/ha-status".into(), None),
        ("PUT", "sys/step-down".into(), None),
        ("GET", "sys/no-such-path".into(), None),
    ];
    for (method, path, body) in &refused {
        let reply = as_token(&coffer, &user, method, path, body.clone());
        assert_eq!(reply.status, 403, "{method} {path}: {}", reply.text);
    }
    // Every one of those paths, and the ones `default` grants, with every method.
    let granted_pairs = [
        ("POST", "sys/capabilities-self"),
        ("PUT", "sys/capabilities-self"),
        ("GET", "sys/internal/ui/resultant-acl"),
        ("GET", "sys/internal/ui/mounts/secret"),
    ];
    let mut paths: Vec<String> = refused.iter().map(|(_, path, _)| path.clone()).collect();
    paths.extend(granted_pairs.iter().map(|(_, path)| (*path).to_string()));
    paths.sort();
    paths.dedup();
    let every_body = json!({
        "lease_id": others,
        "type": "kv",
        "policy": "path \"*\" { capabilities = [\"sudo\"] }",
        "token": "root",
        "paths": ["sys/seal"],
        "max_lease_ttl": "1h",
    });
    let mut checked = 0;
    for path in &paths {
        for method in ["GET", "LIST", "POST", "PUT", "DELETE"] {
            if granted_pairs.contains(&(method, path.as_str())) {
                continue;
            }
            let reply = as_token(&coffer, &user, method, path, Some(every_body.clone()));
            assert_eq!(reply.status, 403, "{method} {path}: {}", reply.text);
            checked += 1;
        }
    }
    assert!(checked >= 190, "only {checked} requests were checked");
    // What `default` grants, and the unauthenticated endpoints, behave as in Vault.
    let granted: Vec<(&str, &str, Option<Value>, u16)> = vec![
        (
            "POST",
            "sys/capabilities-self",
            Some(json!({"paths": ["sys/seal"]})),
            200,
        ),
        ("GET", "sys/internal/ui/resultant-acl", None, 200),
        ("GET", "sys/internal/ui/mounts/secret", None, 200),
        ("GET", "sys/health", None, 200),
        ("GET", "sys/seal-status", None, 200),
        ("GET", "sys/init", None, 200),
        ("PUT", "sys/unseal", Some(json!({})), 400),
    ];
    for (method, path, body, status) in granted {
        let reply = as_token(&coffer, &user, method, path, body);
        assert_eq!(reply.status, status, "{method} {path}: {}", reply.text);
    }
    assert_eq!(sys_state(&coffer, &others), before);
}

#[test]
fn sys_auth_lists_refuses_unknown_types_and_needs_sudo_for_writes() {
    let (coffer, _) = leasing_server("acl-sys-auth");
    let list = coffer.call("GET", "sys/auth", None);
    assert_eq!(list.status, 200, "{}", list.text);
    for token_mount in [&list.data()["token/"], &list.json["token/"]] {
        assert_eq!(token_mount["type"], json!("token"), "{}", list.text);
        assert!(
            token_mount["accessor"]
                .as_str()
                .unwrap()
                .starts_with("auth_token_")
        );
        assert!(token_mount["config"]["max_lease_ttl"].is_u64());
        assert!(token_mount["uuid"].is_string());
    }
    let unknown = coffer.call(
        "POST",
        "sys/auth/userpass",
        Some(json!({"type": "userpass"})),
    );
    assert_eq!(unknown.status, 400, "{}", unknown.text);
    assert!(
        unknown
            .errors()
            .contains(r#"unknown auth method type "userpass""#),
        "{}",
        unknown.text
    );
    let taken = coffer.call("POST", "sys/auth/token", Some(json!({"type": "userpass"})));
    assert_eq!(taken.status, 400, "{}", taken.text);
    assert!(taken.errors().contains("already in use"), "{}", taken.text);
    for path in ["sys/auth/token", "sys/auth/token2"] {
        let singleton = coffer.call("POST", path, Some(json!({"type": "token"})));
        assert_eq!(singleton.status, 400, "{}", singleton.text);
        assert!(
            singleton.errors().contains("cannot be instantiated"),
            "{}",
            singleton.text
        );
    }
    let disable = coffer.call("DELETE", "sys/auth/token", None);
    assert_eq!(disable.status, 400, "{}", disable.text);
    assert_eq!(coffer.call("GET", "sys/auth", None).data(), list.data());

    coffer.policy(
        "auth-admin",
        r#"path "sys/auth" { capabilities = ["read"] }
path "sys/auth/*" { capabilities = ["create", "read", "update", "delete", "sudo"] }"#,
    );
    coffer.policy(
        "auth-nosudo",
        r#"path "sys/auth" { capabilities = ["read"] }
path "sys/auth/*" { capabilities = ["create", "read", "update", "delete"] }"#,
    );
    let admin = coffer.token_with(&["auth-admin"]);
    let nosudo = coffer.token_with(&["auth-nosudo"]);
    for who in [&admin, &nosudo] {
        assert_eq!(as_token(&coffer, who, "GET", "sys/auth", None).status, 200);
    }
    let writes: [(&str, &str, Option<Value>, u16); 5] = [
        (
            "POST",
            "sys/auth/userpass",
            Some(json!({"type": "userpass"})),
            400,
        ),
        ("DELETE", "sys/auth/token", None, 400),
        ("GET", "sys/auth/token/tune", None, 200),
        (
            "POST",
            "sys/auth/token/tune",
            Some(json!({"description": "tokens"})),
            204,
        ),
        ("GET", "sys/auth/token", None, 200),
    ];
    for (method, path, body, status) in writes {
        let refused = as_token(&coffer, &nosudo, method, path, body.clone());
        assert_eq!(
            refused.status, 403,
            "no sudo: {method} {path}: {}",
            refused.text
        );
        let reply = as_token(&coffer, &admin, method, path, body);
        assert_eq!(
            reply.status, status,
            "sudo: {method} {path}: {}",
            reply.text
        );
    }
    assert_eq!(
        coffer.call("GET", "sys/auth", None).data()["token/"]["description"],
        json!("tokens")
    );
}

/// The token store's tune bounds the tokens created afterwards, and survives a restart.
#[test]
fn tuning_auth_token_bounds_new_tokens_across_restart() {
    let (mut coffer, keys) = leasing_server("acl-token-tune");
    let tuned = coffer.call(
        "POST",
        "sys/auth/token/tune",
        Some(json!({"default_lease_ttl": "30m", "max_lease_ttl": "1h"})),
    );
    assert_eq!(tuned.status, 204, "{}", tuned.text);
    coffer.stop();
    coffer.start();
    coffer.unseal(&keys);
    let tune = coffer.call("GET", "sys/auth/token/tune", None);
    assert_eq!(tune.data()["max_lease_ttl"], json!(3600), "{}", tune.text);
    assert_eq!(
        tune.data()["default_lease_ttl"],
        json!(1800),
        "{}",
        tune.text
    );
    let long = coffer.call(
        "POST",
        "auth/token/create",
        Some(json!({"policies": ["default"], "ttl": "2h"})),
    );
    assert_eq!(long.status, 200, "{}", long.text);
    assert_eq!(
        long.json["auth"]["lease_duration"],
        json!(3600),
        "{}",
        long.text
    );
    let plain = coffer.call(
        "POST",
        "auth/token/create",
        Some(json!({"policies": ["default"]})),
    );
    assert_eq!(
        plain.json["auth"]["lease_duration"],
        json!(1800),
        "{}",
        plain.text
    );
    // Renewal stays within the tuned max, measured from creation.
    let short = coffer.call(
        "POST",
        "auth/token/create",
        Some(json!({"policies": ["default"], "ttl": "10m"})),
    );
    let short = short.json["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_string();
    let renewed = coffer.call(
        "POST",
        "auth/token/renew",
        Some(json!({"token": short, "increment": "2h"})),
    );
    assert_eq!(renewed.status, 200, "{}", renewed.text);
    let granted = renewed.json["auth"]["lease_duration"].as_u64().unwrap();
    assert!((3590..=3600).contains(&granted), "{}", renewed.text);
}

/// Sealing is a sudo path: an operator token with sudo on `sys/seal` seals, one without
/// cannot.
#[test]
fn a_sudo_operator_token_seals_and_one_without_sudo_cannot() {
    let (coffer, keys) = leasing_server("acl-seal");
    coffer.policy(
        "sealer-nosudo",
        r#"path "sys/seal" { capabilities = ["update"] }"#,
    );
    coffer.policy(
        "sealer",
        r#"path "sys/seal" { capabilities = ["update", "sudo"] }"#,
    );
    let nosudo = coffer.token_with(&["sealer-nosudo"]);
    let sealer = coffer.token_with(&["sealer"]);
    assert_eq!(
        as_token(&coffer, &nosudo, "PUT", "sys/seal", None).status,
        403
    );
    assert_eq!(
        coffer.call("GET", "sys/seal-status", None).json["sealed"],
        json!(false)
    );
    assert_eq!(
        as_token(&coffer, &sealer, "PUT", "sys/seal", None).status,
        204
    );
    assert_eq!(
        coffer.call("GET", "sys/seal-status", None).json["sealed"],
        json!(true)
    );
    coffer.unseal(&keys);
    assert_eq!(coffer.call("GET", "sys/mounts", None).status, 200);
}

/// Lease listing, the irrevocable list, revoke-prefix and revoke-orphan are sudo paths,
/// not root-only.
#[test]
fn lease_listing_revoke_prefix_and_revoke_orphan_need_sudo_not_root() {
    let (coffer, _) = leasing_server("acl-lease-sudo");
    let lease = lease_for(&coffer, &coffer.token);
    coffer.policy(
        "lease-ops",
        r#"path "sys/leases/lookup/*" { capabilities = ["list", "sudo"] }
path "sys/leases" { capabilities = ["read", "sudo"] }
path "sys/leases/revoke-prefix/*" { capabilities = ["update", "sudo"] }
path "auth/token/revoke-orphan" { capabilities = ["update", "sudo"] }"#,
    );
    coffer.policy(
        "lease-ops-nosudo",
        r#"path "sys/leases/lookup/*" { capabilities = ["list"] }
path "sys/leases" { capabilities = ["read"] }
path "sys/leases/revoke-prefix/*" { capabilities = ["update"] }
path "auth/token/revoke-orphan" { capabilities = ["update"] }"#,
    );
    let ops = coffer.token_with(&["lease-ops"]);
    let nosudo = coffer.token_with(&["lease-ops-nosudo"]);
    let victim = coffer.token_with(&["default"]);
    let orphan_body = json!({ "token": victim });
    for (method, path, body) in [
        ("LIST", "sys/leases/lookup/leasing/creds/app/", None),
        ("GET", "sys/leases?type=irrevocable", None),
        (
            "POST",
            "auth/token/revoke-orphan",
            Some(orphan_body.clone()),
        ),
        ("PUT", "sys/leases/revoke-prefix/leasing/", None),
    ] {
        let reply = as_token(&coffer, &nosudo, method, path, body);
        assert_eq!(
            reply.status, 403,
            "no sudo: {method} {path}: {}",
            reply.text
        );
    }
    let listed = as_token(
        &coffer,
        &ops,
        "LIST",
        "sys/leases/lookup/leasing/creds/app/",
        None,
    );
    assert_eq!(listed.status, 200, "{}", listed.text);
    let irrevocable = as_token(&coffer, &ops, "GET", "sys/leases?type=irrevocable", None);
    assert_eq!(irrevocable.status, 200, "{}", irrevocable.text);
    let orphaned = as_token(
        &coffer,
        &ops,
        "POST",
        "auth/token/revoke-orphan",
        Some(orphan_body),
    );
    assert_eq!(orphaned.status, 204, "{}", orphaned.text);
    let revoked = as_token(
        &coffer,
        &ops,
        "PUT",
        "sys/leases/revoke-prefix/leasing/",
        None,
    );
    assert_eq!(revoked.status, 204, "{}", revoked.text);
    assert_eq!(
        coffer
            .call(
                "PUT",
                "sys/leases/lookup",
                Some(json!({ "lease_id": lease }))
            )
            .status,
        400,
        "the prefix revoke took the lease"
    );
}

/// A lease belongs to the token that created it: its owner renews, looks up and revokes
/// it with `default`; another `default` token gets 403 (as for an unknown id); a policy on
/// `sys/leases/revoke/<mount>/*` lets an operator revoke others' leases.
#[test]
fn leases_belong_to_the_token_that_created_them() {
    let (coffer, _) = leasing_server("acl-lease-owner");
    coffer.policy("lease-reader", LEASE_READER);
    coffer.policy(
        "leasing-revoker",
        r#"path "sys/leases/revoke/leasing/creds/*" { capabilities = ["update"] }"#,
    );
    let owner = coffer.token_with(&["lease-reader"]);
    let other = coffer.token_with(&["lease-reader"]);
    let revoker = coffer.token_with(&["leasing-revoker"]);
    let lease = lease_for(&coffer, &owner);
    let body = json!({ "lease_id": lease });

    for (method, path, body) in [
        ("PUT", "sys/leases/lookup".to_string(), Some(body.clone())),
        ("PUT", "sys/leases/renew".to_string(), Some(body.clone())),
        ("PUT", format!("sys/leases/renew/{lease}"), None),
        ("PUT", "sys/renew".to_string(), Some(body.clone())),
        ("PUT", format!("sys/renew/{lease}"), None),
        ("PUT", "sys/leases/revoke".to_string(), Some(body.clone())),
        ("PUT", format!("sys/revoke/{lease}"), None),
        (
            "PUT",
            "sys/leases/revoke".to_string(),
            Some(json!({"lease_id": "leasing/creds/app/nope"})),
        ),
        (
            "PUT",
            "sys/leases/renew".to_string(),
            Some(json!({"lease_id": "leasing/creds/app/nope"})),
        ),
    ] {
        let reply = as_token(&coffer, &other, method, &path, body);
        assert_eq!(
            reply.status, 403,
            "not the owner: {method} {path}: {}",
            reply.text
        );
    }
    let lookup = as_token(
        &coffer,
        &owner,
        "PUT",
        "sys/leases/lookup",
        Some(body.clone()),
    );
    assert_eq!(lookup.status, 200, "{}", lookup.text);
    assert_eq!(lookup.data()["id"], json!(lease));
    for path in ["sys/leases/renew", "sys/renew"] {
        let renew = as_token(&coffer, &owner, "PUT", path, Some(body.clone()));
        assert_eq!(renew.status, 200, "{path}: {}", renew.text);
        assert_eq!(renew.json["lease_id"], json!(lease));
    }
    let renew_url = as_token(
        &coffer,
        &owner,
        "PUT",
        &format!("sys/leases/renew/{lease}"),
        None,
    );
    assert_eq!(renew_url.status, 200, "{}", renew_url.text);
    // The owner revokes its own lease through the old URL form.
    let second = lease_for(&coffer, &owner);
    let revoked = as_token(
        &coffer,
        &owner,
        "PUT",
        &format!("sys/revoke/{second}"),
        None,
    );
    assert_eq!(revoked.status, 204, "{}", revoked.text);
    // An operator whose policy covers the lease-qualified path revokes another's lease.
    let by_operator = as_token(
        &coffer,
        &revoker,
        "PUT",
        "sys/leases/revoke",
        Some(body.clone()),
    );
    assert_eq!(by_operator.status, 204, "{}", by_operator.text);
    for gone in [&lease, &second] {
        assert_eq!(
            coffer
                .call(
                    "PUT",
                    "sys/leases/lookup",
                    Some(json!({ "lease_id": gone }))
                )
                .status,
            400
        );
    }
    // The operator's grant is for revoking, not renewing.
    let third = lease_for(&coffer, &owner);
    let renew = as_token(
        &coffer,
        &revoker,
        "PUT",
        "sys/leases/renew",
        Some(json!({"lease_id": third})),
    );
    assert_eq!(renew.status, 403, "{}", renew.text);
}

#[test]
fn resultant_acl_reports_the_callers_compiled_policies() {
    let coffer = Coffer::dev();
    coffer.policy(
        "mixed",
        r#"path "secret/app" { capabilities = ["read", "update"] }
path "secret/team/*" {
  capabilities = ["list"]
  allowed_parameters = { "v" = ["ok-*"] }
}
path "secret/+/x" { capabilities = ["deny"] }"#,
    );
    let user = coffer.token_with(&["mixed"]);
    let reply = as_token(&coffer, &user, "GET", "sys/internal/ui/resultant-acl", None);
    assert_eq!(reply.status, 200, "{}", reply.text);
    let data = reply.data();
    assert_eq!(data["root"], json!(false));
    assert_eq!(
        data["exact_paths"]["secret/app"]["capabilities"],
        json!(["read", "update"])
    );
    assert_eq!(
        data["exact_paths"]["sys/internal/ui/resultant-acl"]["capabilities"],
        json!(["read"])
    );
    assert_eq!(
        data["exact_paths"]["secret/+/x"]["capabilities"],
        json!(["deny"])
    );
    assert_eq!(
        data["glob_paths"]["secret/team/"]["capabilities"],
        json!(["list"])
    );
    assert_eq!(
        data["glob_paths"]["secret/team/"]["allowed_parameters"],
        json!({"v": ["ok-*"]})
    );
    assert_eq!(
        data["glob_paths"]["cubbyhole/"]["capabilities"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    let root = coffer.call("GET", "sys/internal/ui/resultant-acl", None);
    assert_eq!(root.data()["root"], json!(true), "{}", root.text);
}
