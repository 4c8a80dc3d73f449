//! Auth engines as the host sees them, driven with a third-party component from the config
//! file (`[[plugin]] type = "auth"`, the hostile fixture): the engine vouches, the host
//! mints; login paths take no token; what an engine may not do (grant root, mint from a
//! secrets mount) is refused; renewals ask the engine; CIDR-bound tokens; disabling the
//! mount revokes its tokens; all of it survives a restart.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

use coffer_tests::{Coffer, Reply, fixtures_config, json, temp_dir};
use serde_json::Value;

fn server() -> (Coffer, Vec<String>) {
    let mut coffer = Coffer::with_config(&temp_dir("auth-engines"), &fixtures_config());
    let keys = coffer.init_and_unseal(1, 1);
    let enabled = coffer.call(
        "POST",
        "sys/auth/fixture",
        Some(json!({"type": "hostile-auth", "config": {"default_lease_ttl": "30m"}})),
    );
    assert_eq!(enabled.status, 204, "{}", enabled.text);
    (coffer, keys)
}

/// A login without any token.
fn login(coffer: &Coffer, body: Value) -> Reply {
    coffer.raw(
        "POST",
        "auth/fixture/login",
        None,
        Some(&body.to_string()),
        &[],
    )
}

fn client_token(reply: &Reply) -> String {
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_string()
}

fn lookup_self(coffer: &Coffer, token: &str) -> Reply {
    coffer.raw("GET", "auth/token/lookup-self", Some(token), None, &[])
}

#[test]
fn a_login_mints_a_token_the_engine_vouched_for() {
    let (coffer, _) = server();
    let reply = login(&coffer, json!({"policies": "app-read"}));
    let token = client_token(&reply);
    let auth = &reply.json["auth"];
    assert_eq!(auth["policies"], json!(["app-read", "default"]));
    assert_eq!(auth["metadata"]["remote"], json!("127.0.0.1"));
    assert_eq!(auth["lease_duration"], json!(600));
    assert_eq!(auth["renewable"], json!(true));
    assert_eq!(auth["orphan"], json!(true));
    assert!(auth["accessor"].as_str().is_some_and(|a| !a.is_empty()));

    let looked = lookup_self(&coffer, &token);
    assert_eq!(looked.status, 200, "{}", looked.text);
    assert_eq!(looked.data()["path"], json!("auth/fixture/login"));
    assert_eq!(looked.data()["display_name"], json!("fixture-fixture"));
    assert_eq!(looked.data()["meta"]["remote"], json!("127.0.0.1"));

    // The token can do what its policies say and nothing else.
    let denied = coffer.raw("GET", "secret/canary", Some(&token), None, &[]);
    assert_eq!(denied.status, 403, "{}", denied.text);
    coffer.call("PUT", "secret/app", Some(json!({"k": "v"})));
    coffer.policy(
        "app-read",
        r#"path "secret/app" { capabilities = ["read"] }"#,
    );
    let allowed = coffer.raw("GET", "secret/app", Some(&token), None, &[]);
    assert_eq!(allowed.status, 200, "{}", allowed.text);
}

#[test]
fn login_paths_take_no_token_and_other_paths_still_need_one() {
    let (coffer, _) = server();
    // A token sent along is ignored, valid or not: the login says who the caller is.
    let with_garbage = coffer.raw(
        "POST",
        "auth/fixture/login",
        Some("not-a-token"),
        Some(&json!({"policies": "a"}).to_string()),
        &[],
    );
    client_token(&with_garbage);
    let root_sent = coffer.call("POST", "auth/fixture/login", Some(json!({"policies": "a"})));
    assert_eq!(
        root_sent.json["auth"]["policies"],
        json!(["a", "default"]),
        "the root token sent along must not shape the login: {}",
        root_sent.text
    );
    // Any other path of the auth engine is an ordinary, authenticated one.
    let anonymous = coffer.raw("GET", "auth/fixture/ok", None, None, &[]);
    assert_eq!(anonymous.status, 403, "{}", anonymous.text);
    let with_root = coffer.call("GET", "auth/fixture/ok", None);
    assert_eq!(with_root.status, 200, "{}", with_root.text);
    // Login bodies have the small limit of unauthenticated requests.
    let huge = json!({"policies": "x".repeat(100 * 1024)});
    let refused = login(&coffer, huge);
    assert_eq!(refused.status, 413, "{}", refused.text);
}

#[test]
fn an_engine_cannot_grant_root_nor_mint_from_a_secrets_mount() {
    let (coffer, _) = server();
    let before = coffer.list("auth/token/accessors").len();
    let root = login(&coffer, json!({"policies": "ROOT"}));
    assert_eq!(root.status, 400, "{}", root.text);
    assert!(root.errors().contains("root policy"), "{}", root.text);
    assert!(root.json["auth"].is_null());
    // The same component mounted as a secrets engine answers a login: refused, no token.
    let forged = coffer.call(
        "POST",
        "hostile/login",
        Some(json!({"policies": "default"})),
    );
    assert_eq!(forged.status, 500, "{}", forged.text);
    assert!(
        forged.errors().contains("only auth engines may"),
        "{}",
        forged.text
    );
    assert!(forged.json["auth"].is_null());
    assert_eq!(coffer.list("auth/token/accessors").len(), before);
}

#[test]
fn renewal_asks_the_engine_first() {
    let (coffer, _) = server();
    let kept = client_token(&login(&coffer, json!({"policies": "a"})));
    let renewed = coffer.raw(
        "POST",
        "auth/token/renew-self",
        Some(&kept),
        Some(r#"{"increment": "20m"}"#),
        &[],
    );
    assert_eq!(renewed.status, 200, "{}", renewed.text);
    assert_eq!(renewed.json["auth"]["lease_duration"], json!(1200));

    let refused = client_token(&login(
        &coffer,
        json!({"policies": "a", "refuse_renewal": true}),
    ));
    for (token, path, body) in [
        (refused.as_str(), "auth/token/renew-self", json!({})),
        (
            coffer.token.as_str(),
            "auth/token/renew",
            json!({"token": refused}),
        ),
    ] {
        let reply = coffer.raw("POST", path, Some(token), Some(&body.to_string()), &[]);
        assert_eq!(reply.status, 403, "{path}: {}", reply.text);
        assert!(
            reply.errors().contains("this login's role is gone"),
            "{path}: {}",
            reply.text
        );
    }
    // Refused, not revoked: the token still works until it expires.
    assert_eq!(lookup_self(&coffer, &refused).status, 200);
    assert!(
        lookup_self(&coffer, &refused).data()["ttl"]
            .as_u64()
            .unwrap()
            <= 600
    );
}

#[test]
fn cidr_bound_tokens_work_only_from_their_blocks() {
    let (coffer, _) = server();
    let elsewhere = client_token(&login(
        &coffer,
        json!({"policies": "a", "bound_cidrs": "10.0.0.0/8"}),
    ));
    let refused = lookup_self(&coffer, &elsewhere);
    assert_eq!(refused.status, 403, "{}", refused.text);
    assert!(
        refused.errors().contains("invalid token"),
        "{}",
        refused.text
    );
    let here = client_token(&login(
        &coffer,
        json!({"policies": "a", "bound_cidrs": "127.0.0.0/8,10.0.0.0/8"}),
    ));
    assert_eq!(lookup_self(&coffer, &here).status, 200);
    // Refused from outside its blocks, a token's uses are not spent there (a thief
    // elsewhere cannot use it up for its owner).
    let counted = login(
        &coffer,
        json!({"policies": "a", "bound_cidrs": "10.0.0.0/8", "num_uses": 2}),
    );
    let accessor = counted.json["auth"]["accessor"]
        .as_str()
        .unwrap()
        .to_string();
    let counted = client_token(&counted);
    for _ in 0..3 {
        assert_eq!(lookup_self(&coffer, &counted).status, 403);
    }
    let looked = coffer.call(
        "POST",
        "auth/token/lookup-accessor",
        Some(json!({"accessor": accessor})),
    );
    assert_eq!(looked.status, 200, "{}", looked.text);
    assert_eq!(looked.data()["num_uses"], json!(2), "{}", looked.text);
    // An engine asking for nonsense blocks is refused as the engine's fault.
    let broken = login(&coffer, json!({"policies": "a", "bound_cidrs": "nowhere"}));
    assert_eq!(broken.status, 500, "{}", broken.text);
    assert!(broken.json["auth"].is_null());
}

#[test]
fn auth_mounts_are_listed_apart_and_survive_a_restart() {
    let (mut coffer, keys) = server();
    let token = client_token(&login(&coffer, json!({"policies": "a"})));
    let auth = coffer.call("GET", "sys/auth", None);
    assert_eq!(auth.data()["fixture/"]["type"], json!("hostile-auth"));
    let mounts = coffer.call("GET", "sys/mounts", None);
    assert!(
        mounts.data().get("auth/fixture/").is_none(),
        "{}",
        mounts.text
    );
    // Tuning reaches the live mount: new logins get the new default.
    let tuned = coffer.call(
        "POST",
        "sys/auth/fixture/tune",
        Some(json!({"default_lease_ttl": "2m", "max_lease_ttl": "5m"})),
    );
    assert_eq!(tuned.status, 204, "{}", tuned.text);
    let capped = login(&coffer, json!({"policies": "a"}));
    assert_eq!(capped.json["auth"]["lease_duration"], json!(300));
    // A periodic token's period is bounded by the mount's max TTL too.
    let periodic = login(&coffer, json!({"policies": "a", "period": "87600h"}));
    assert_eq!(
        periodic.json["auth"]["lease_duration"],
        json!(300),
        "{}",
        periodic.text
    );
    let looked = lookup_self(&coffer, &client_token(&periodic));
    assert_eq!(looked.data()["period"], json!(300), "{}", looked.text);

    coffer.stop();
    coffer.start();
    coffer.unseal(&keys);
    assert_eq!(lookup_self(&coffer, &token).status, 200);
    let again = login(&coffer, json!({"policies": "a"}));
    assert_eq!(
        again.json["auth"]["lease_duration"],
        json!(300),
        "{}",
        again.text
    );
}

#[test]
fn disabling_an_auth_mount_revokes_the_tokens_it_minted() {
    let (coffer, _) = server();
    let minted: Vec<String> = (0..3)
        .map(|_| client_token(&login(&coffer, json!({"policies": "a"}))))
        .collect();
    let bystander = coffer.token_with(&["a"]);
    // Not an operator's to do without sudo on sys/auth.
    let denied = coffer.raw("DELETE", "sys/auth/fixture", Some(&bystander), None, &[]);
    assert_eq!(denied.status, 403, "{}", denied.text);

    let disabled = coffer.call("DELETE", "sys/auth/fixture", None);
    assert_eq!(disabled.status, 204, "{}", disabled.text);
    for token in &minted {
        assert_eq!(lookup_self(&coffer, token).status, 403);
    }
    assert_eq!(lookup_self(&coffer, &bystander).status, 200);
    let gone = login(&coffer, json!({"policies": "a"}));
    assert_eq!(gone.status, 403, "{}", gone.text);
    // Enabled again, it starts empty and works.
    let enabled = coffer.call(
        "POST",
        "sys/auth/fixture",
        Some(json!({"type": "hostile-auth"})),
    );
    assert_eq!(enabled.status, 204, "{}", enabled.text);
    client_token(&login(&coffer, json!({"policies": "a"})));
}

#[test]
fn the_cli_logs_in_through_an_auth_method() {
    let (coffer, _) = server();
    let output = coffer.cli(&[
        "login",
        "-method=hostile-auth",
        "-path=fixture",
        "-token-only",
        "policies=a",
    ]);
    assert!(output.status.success(), "{output:?}");
    let token = coffer_tests::stdout(&output).trim().to_string();
    assert_eq!(lookup_self(&coffer, &token).status, 200);
    let wrong = coffer.cli(&["login", "-method=hostile-auth", "-path=nowhere", "a=b"]);
    assert!(!wrong.status.success());
}

#[test]
fn a_login_is_audited_with_its_token_hashed() {
    let (coffer, _) = server();
    let log = coffer.dir().join("audit.log");
    let enabled = coffer.call(
        "PUT",
        "sys/audit/file",
        Some(json!({"type": "file", "options": {"file_path": log.to_str().unwrap()}})),
    );
    assert_eq!(enabled.status, 204, "{}", enabled.text);
    let reply = login(&coffer, json!({"policies": "a"}));
    let token = client_token(&reply);
    let accessor = reply.json["auth"]["accessor"].as_str().unwrap().to_string();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains(&token),
        "the login's token is in the audit log"
    );
    assert!(
        !text.contains(&accessor),
        "the login's accessor is in the audit log"
    );
    let hashed = coffer.call("POST", "sys/audit-hash/file", Some(json!({"input": token})));
    let hash = hashed.data()["hash"].as_str().unwrap().to_string();
    let response = text
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .find(|entry| {
            entry["type"] == json!("response")
                && entry["request"]["path"] == json!("auth/fixture/login")
        })
        .expect("no response entry for the login");
    assert_eq!(response["response"]["auth"]["client_token"], json!(hash));
}

#[test]
fn revoke_prefix_on_an_auth_path_revokes_the_logins_tokens() {
    let (coffer, _) = server();
    let other = coffer.call(
        "POST",
        "sys/auth/other",
        Some(json!({"type": "hostile-auth"})),
    );
    assert_eq!(other.status, 204, "{}", other.text);
    let mine: Vec<String> = (0..3)
        .map(|_| client_token(&login(&coffer, json!({"policies": "a"}))))
        .collect();
    let bystander = client_token(&coffer.raw(
        "POST",
        "auth/other/login",
        None,
        Some(&json!({"policies": "a"}).to_string()),
        &[],
    ));
    let revoked = coffer.call("PUT", "sys/leases/revoke-prefix/auth/fixture/login", None);
    assert_eq!(revoked.status, 204, "{}", revoked.text);
    for token in &mine {
        assert_eq!(lookup_self(&coffer, token).status, 403);
    }
    assert_eq!(lookup_self(&coffer, &bystander).status, 200);
    // The mount's prefix, through the CLI, as an operator responding to an incident.
    let again = client_token(&login(&coffer, json!({"policies": "a"})));
    let output = coffer.cli(&["lease", "revoke", "-prefix", "auth/fixture/"]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(lookup_self(&coffer, &again).status, 403);
    assert_eq!(lookup_self(&coffer, &bystander).status, 200);
}
