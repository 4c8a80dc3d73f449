//! The AppRole auth engine (`plugins/auth-approle`) end to end: roles, role IDs and secret
//! IDs over HTTP; logins the host mints tokens for and the policies, CIDR bindings and
//! renewal checks those tokens carry; secret IDs counted down under concurrent logins,
//! expired, tidied and destroyed; never stored or shown in clear; and real clients —
//! hvac's `auth.approle.login` and OpenBao's agent rendering PostgreSQL credentials.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use coffer_host::backend::{Backend, FileBackend};
use coffer_host::barrier::Barrier;
use coffer_tests::tutorial::{start_bao_agent, stop_agent, tutorial_database};
use coffer_tests::{
    Coffer, Postgres, Reply, Value, eventually, fixtures_config, json, run_python, temp_dir,
};

/// Vault's words for every refused login credential.
const INVALID: &str = "invalid role or secret ID";

/// A policy that reads `secret/app` and nothing else.
const APP_READ: &str = r#"path "secret/app" { capabilities = ["read"] }"#;

fn enable(coffer: &Coffer) {
    let enabled = coffer.call("POST", "sys/auth/approle", Some(json!({"type": "approle"})));
    assert_eq!(enabled.status, 204, "{}", enabled.text);
}

fn write_role(coffer: &Coffer, name: &str, body: Value) {
    let reply = coffer.call("POST", &format!("auth/approle/role/{name}"), Some(body));
    assert_eq!(reply.status, 204, "role {name}: {}", reply.text);
}

fn role_id(coffer: &Coffer, name: &str) -> String {
    let reply = coffer.call("GET", &format!("auth/approle/role/{name}/role-id"), None);
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.data()["role_id"].as_str().unwrap().to_string()
}

/// Issues a secret ID for role `name`; returns the response's `data`.
fn issue(coffer: &Coffer, name: &str, body: Value) -> Value {
    let reply = coffer.call(
        "POST",
        &format!("auth/approle/role/{name}/secret-id"),
        Some(body),
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.data().clone()
}

fn secret_id(coffer: &Coffer, name: &str) -> String {
    issue(coffer, name, json!({}))["secret_id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A login with no token at all.
fn login(coffer: &Coffer, role_id: &str, secret_id: &str) -> Reply {
    let body = json!({"role_id": role_id, "secret_id": secret_id}).to_string();
    coffer.raw("POST", "auth/approle/login", None, Some(&body), &[])
}

fn client_token(reply: &Reply) -> String {
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_string()
}

fn refused(reply: &Reply, words: &str) {
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert!(reply.errors().contains(words), "{}", reply.text);
    assert!(reply.json["auth"].is_null(), "{}", reply.text);
}

fn lookup_self(coffer: &Coffer, token: &str) -> Reply {
    coffer.raw("GET", "auth/token/lookup-self", Some(token), None, &[])
}

/// A dev server with `approle/` enabled, `secret/app` written and the `app-read` policy.
fn server() -> Coffer {
    let coffer = Coffer::dev();
    enable(&coffer);
    coffer.policy("app-read", APP_READ);
    let written = coffer.call("PUT", "secret/app", Some(json!({"password": "hunter2"})));
    assert_eq!(written.status, 204, "{}", written.text);
    coffer
}

#[test]
fn role_to_login_to_a_token_its_policy_bounds() {
    let coffer = server();
    write_role(
        &coffer,
        "web",
        json!({"token_policies": "app-read", "token_ttl": "20m", "token_max_ttl": "1h"}),
    );
    let role = coffer.call("GET", "auth/approle/role/web", None);
    assert_eq!(role.status, 200, "{}", role.text);
    assert_eq!(role.data()["bind_secret_id"], json!(true));
    assert_eq!(role.data()["token_policies"], json!(["app-read"]));
    assert_eq!(role.data()["token_ttl"], json!(1200));
    assert_eq!(role.data()["secret_id_num_uses"], json!(0));
    assert!(role.data().get("role_id").is_none(), "{}", role.text);
    assert_eq!(coffer.list("auth/approle/role"), vec!["web"]);
    // Role names are case-insensitive, as in Vault.
    let upper = coffer.call("GET", "auth/approle/role/WEB", None);
    assert_eq!(upper.data(), role.data(), "{}", upper.text);
    assert_eq!(
        coffer.call("GET", "auth/approle/role/nobody", None).status,
        404
    );

    let first_role_id = role_id(&coffer, "web");
    let issued = issue(&coffer, "web", json!({"metadata": {"team": "payments"}}));
    assert_eq!(issued["secret_id_num_uses"], json!(0));
    assert_eq!(issued["secret_id_ttl"], json!(0));
    let accessor = issued["secret_id_accessor"].as_str().unwrap();
    assert_eq!(
        coffer.list("auth/approle/role/web/secret-id"),
        vec![accessor]
    );

    let reply = login(
        &coffer,
        &first_role_id,
        issued["secret_id"].as_str().unwrap(),
    );
    let token = client_token(&reply);
    let auth = &reply.json["auth"];
    assert_eq!(auth["policies"], json!(["app-read", "default"]));
    assert_eq!(auth["lease_duration"], json!(1200));
    assert_eq!(
        auth["metadata"],
        json!({"role_name": "web", "team": "payments"})
    );
    assert_eq!(auth["entity_alias"]["name"], json!(first_role_id));

    let looked = lookup_self(&coffer, &token);
    assert_eq!(looked.status, 200, "{}", looked.text);
    assert_eq!(looked.data()["display_name"], json!("approle"));
    assert_eq!(looked.data()["path"], json!("auth/approle/login"));
    assert_eq!(looked.data()["meta"]["role_name"], json!("web"));

    // The token reads what app-read allows, and nothing else.
    let read = coffer.raw("GET", "secret/app", Some(&token), None, &[]);
    assert_eq!(read.status, 200, "{}", read.text);
    assert_eq!(read.data()["password"], json!("hunter2"));
    for (method, path) in [
        ("PUT", "secret/app"),
        ("GET", "secret/other"),
        ("GET", "auth/approle/role/web"),
        ("POST", "auth/approle/role/web/secret-id"),
        ("GET", "sys/mounts"),
    ] {
        let denied = coffer.raw(method, path, Some(&token), Some("{}"), &[]);
        assert_eq!(denied.status, 403, "{method} {path}: {}", denied.text);
    }
    // The role's paths need a token: only login is open.
    let anonymous = coffer.raw("GET", "auth/approle/role/web/role-id", None, None, &[]);
    assert!(
        anonymous.status == 403 || anonymous.status == 401,
        "{}",
        anonymous.text
    );

    // A custom role ID replaces the old one, which stops working; it is unique.
    let custom = coffer.call(
        "POST",
        "auth/approle/role/web/role-id",
        Some(json!({"role_id": "web-custom-id"})),
    );
    assert_eq!(custom.status, 204, "{}", custom.text);
    let fresh = secret_id(&coffer, "web");
    refused(&login(&coffer, &first_role_id, &fresh), INVALID);
    client_token(&login(&coffer, "web-custom-id", &fresh));
    write_role(&coffer, "api", json!({"token_policies": "app-read"}));
    let taken = coffer.call(
        "POST",
        "auth/approle/role/api/role-id",
        Some(json!({"role_id": "web-custom-id"})),
    );
    assert_eq!(taken.status, 400, "{}", taken.text);
    assert!(
        taken.errors().contains("role_id already in use"),
        "{}",
        taken.text
    );
    let taken_at_create = coffer.call(
        "POST",
        "auth/approle/role/db",
        Some(json!({"role_id": "web-custom-id"})),
    );
    assert_eq!(taken_at_create.status, 400, "{}", taken_at_create.text);
    assert_eq!(coffer.call("GET", "auth/approle/role/db", None).status, 404);
    assert_ne!(role_id(&coffer, "api"), "web-custom-id");
    let mut roles = coffer.list("auth/approle/role");
    roles.sort();
    assert_eq!(roles, vec!["api", "web"]);
}

#[test]
fn a_wrong_role_id_and_a_wrong_secret_id_get_the_same_answer() {
    let coffer = server();
    write_role(&coffer, "web", json!({"token_policies": "app-read"}));
    write_role(&coffer, "other", json!({"token_policies": "app-read"}));
    let (role_id, secret) = (role_id(&coffer, "web"), secret_id(&coffer, "web"));
    let others_secret = secret_id(&coffer, "other");

    let wrong_role = login(&coffer, "not-a-role-id", &secret);
    let wrong_secret = login(&coffer, &role_id, "not-a-secret-id");
    let other_roles_secret = login(&coffer, &role_id, &others_secret);
    for reply in [&wrong_role, &wrong_secret, &other_roles_secret] {
        refused(reply, INVALID);
    }
    assert_eq!(wrong_role.json, wrong_secret.json);
    assert_eq!(wrong_secret.json, other_roles_secret.json);

    let no_role = coffer.raw(
        "POST",
        "auth/approle/login",
        None,
        Some(&json!({"secret_id": secret}).to_string()),
        &[],
    );
    refused(&no_role, "missing role_id");
    let no_secret = coffer.raw(
        "POST",
        "auth/approle/login",
        None,
        Some(&json!({"role_id": role_id}).to_string()),
        &[],
    );
    refused(&no_secret, "missing secret_id");
    // None of that spent the real secret ID.
    client_token(&login(&coffer, &role_id, &secret));
}

#[test]
fn a_one_use_secret_id_raced_by_concurrent_logins_gives_exactly_one_token() {
    let coffer = server();
    write_role(
        &coffer,
        "once",
        json!({"token_policies": "app-read", "secret_id_num_uses": 1}),
    );
    let role_id = role_id(&coffer, "once");
    // Two racers is the everyday case; eight make the race window wide enough that an
    // engine reading the count and writing it back unconditionally hands out two tokens
    // within a few rounds (measured: rounds 2 to 8 of 40 with such an engine).
    let rounds = std::iter::repeat_n(2usize, 20).chain(std::iter::repeat_n(8, 30));
    for (round, racers) in rounds.enumerate() {
        let secret = secret_id(&coffer, "once");
        let winners = race_logins(&coffer, &role_id, &secret, racers);
        assert_eq!(
            winners.len(),
            1,
            "round {round}: {racers} racers, {winners:?}"
        );
        assert_eq!(lookup_self(&coffer, &winners[0]).status, 200);
        refused(&login(&coffer, &role_id, &secret), INVALID);
    }
    // The last use removed the secret ID and its accessor.
    assert!(coffer.list("auth/approle/role/once/secret-id").is_empty());
}

#[test]
fn secret_id_num_uses_allows_exactly_that_many_logins() {
    let coffer = server();
    write_role(
        &coffer,
        "thrice",
        json!({"token_policies": "app-read", "secret_id_num_uses": 3}),
    );
    let role_id = role_id(&coffer, "thrice");
    let issued = issue(&coffer, "thrice", json!({}));
    assert_eq!(issued["secret_id_num_uses"], json!(3));
    let secret = issued["secret_id"].as_str().unwrap();
    for left in [2, 1] {
        client_token(&login(&coffer, &role_id, secret));
        let looked = coffer.call(
            "POST",
            "auth/approle/role/thrice/secret-id/lookup",
            Some(json!({"secret_id": secret})),
        );
        assert_eq!(
            looked.data()["secret_id_num_uses"],
            json!(left),
            "{}",
            looked.text
        );
    }
    client_token(&login(&coffer, &role_id, secret));
    refused(&login(&coffer, &role_id, secret), INVALID);

    // Fewer uses than the role's may be asked for; more, or unlimited, may not.
    let two = issue(&coffer, "thrice", json!({"num_uses": 2}));
    assert_eq!(two["secret_id_num_uses"], json!(2));
    let two = two["secret_id"].as_str().unwrap();
    client_token(&login(&coffer, &role_id, two));
    client_token(&login(&coffer, &role_id, two));
    refused(&login(&coffer, &role_id, two), INVALID);
    for uses in [5, 0] {
        let more = coffer.call(
            "POST",
            "auth/approle/role/thrice/secret-id",
            Some(json!({"num_uses": uses})),
        );
        assert_eq!(more.status, 400, "{}", more.text);
        assert!(more.errors().contains("num_uses"), "{}", more.text);
    }

    // Three uses raced by eight logins: exactly three tokens.
    let raced = secret_id(&coffer, "thrice");
    let winners = race_logins(&coffer, &role_id, &raced, 8);
    assert_eq!(winners.len(), 3, "{winners:?}");
    refused(&login(&coffer, &role_id, &raced), INVALID);
}

/// `racers` threads log in with one secret ID at the same moment; the tokens they got.
fn race_logins(coffer: &Coffer, role_id: &str, secret: &str, racers: usize) -> Vec<String> {
    let start = std::sync::Barrier::new(racers);
    let replies: Vec<Reply> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..racers)
            .map(|_| {
                scope.spawn(|| {
                    start.wait();
                    login(coffer, role_id, secret)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut tokens = Vec::new();
    for reply in &replies {
        match reply.status {
            200 => tokens.push(client_token(reply)),
            _ => refused(reply, INVALID),
        }
    }
    tokens
}

#[test]
fn cidr_bindings_refuse_logins_and_tokens_from_elsewhere() {
    let coffer = server();
    // The role's secret_id_bound_cidrs exclude 127.0.0.1: every login is refused.
    write_role(
        &coffer,
        "far",
        json!({"token_policies": "app-read", "secret_id_bound_cidrs": "10.0.0.0/8"}),
    );
    let far = secret_id(&coffer, "far");
    refused(
        &login(&coffer, &role_id(&coffer, "far"), &far),
        "unauthorized by CIDR restrictions on the role",
    );

    // A secret ID's own cidr_list: refused from here without spending a use.
    write_role(
        &coffer,
        "near",
        json!({"token_policies": "app-read", "secret_id_num_uses": 2}),
    );
    let near_id = role_id(&coffer, "near");
    let elsewhere = issue(&coffer, "near", json!({"cidr_list": "10.0.0.0/8"}));
    let elsewhere = elsewhere["secret_id"].as_str().unwrap();
    refused(
        &login(&coffer, &near_id, elsewhere),
        "unauthorized by CIDR restrictions on the secret ID",
    );
    let looked = coffer.call(
        "POST",
        "auth/approle/role/near/secret-id/lookup",
        Some(json!({"secret_id": elsewhere})),
    );
    assert_eq!(
        looked.data()["secret_id_num_uses"],
        json!(2),
        "{}",
        looked.text
    );
    assert_eq!(looked.data()["cidr_list"], json!(["10.0.0.0/8"]));
    let here = issue(&coffer, "near", json!({"cidr_list": "127.0.0.0/8"}));
    client_token(&login(
        &coffer,
        &near_id,
        here["secret_id"].as_str().unwrap(),
    ));

    // token_bound_cidrs excluding 127.0.0.1: the login works, the token does not.
    write_role(
        &coffer,
        "bound",
        json!({"token_policies": "app-read", "token_bound_cidrs": "10.0.0.0/8,127.0.0.0/8"}),
    );
    let bound_id = role_id(&coffer, "bound");
    let usable = client_token(&login(&coffer, &bound_id, &secret_id(&coffer, "bound")));
    assert_eq!(lookup_self(&coffer, &usable).status, 200);
    // A secret ID narrows its tokens' blocks to 10.1.0.0/16: not here.
    let narrowed = issue(
        &coffer,
        "bound",
        json!({"token_bound_cidrs": "10.1.0.0/16"}),
    );
    let unusable = client_token(&login(
        &coffer,
        &bound_id,
        narrowed["secret_id"].as_str().unwrap(),
    ));
    let refused_use = coffer.raw("GET", "secret/app", Some(&unusable), None, &[]);
    assert_eq!(refused_use.status, 403, "{}", refused_use.text);
    assert_eq!(lookup_self(&coffer, &unusable).status, 403);
    write_role(&coffer, "bound", json!({"token_bound_cidrs": "10.0.0.0/8"}));
    let now_elsewhere = client_token(&login(&coffer, &bound_id, &secret_id(&coffer, "bound")));
    assert_eq!(
        coffer
            .raw("GET", "secret/app", Some(&now_elsewhere), None, &[])
            .status,
        403
    );
    // A secret ID may not widen the role's blocks.
    let wider = coffer.call(
        "POST",
        "auth/approle/role/bound/secret-id",
        Some(json!({"token_bound_cidrs": "0.0.0.0/0"})),
    );
    assert_eq!(wider.status, 400, "{}", wider.text);
    let wider = coffer.call(
        "POST",
        "auth/approle/role/far/secret-id",
        Some(json!({"cidr_list": "127.0.0.1"})),
    );
    assert_eq!(wider.status, 400, "{}", wider.text);
    assert!(
        wider.errors().contains("secret_id_bound_cidrs"),
        "{}",
        wider.text
    );
}

#[test]
fn bad_input_is_refused_with_a_reason_and_changes_nothing() {
    let coffer = server();
    for (body, words) in [
        (
            json!({"secret_id_bound_cidrs": "10.0.0.0/33"}),
            "secret_id_bound_cidrs",
        ),
        (
            json!({"token_bound_cidrs": "not-a-cidr"}),
            "token_bound_cidrs",
        ),
        (
            json!({"secret_id_num_uses": -1}),
            "secret_id_num_uses cannot be negative",
        ),
        (
            json!({"token_num_uses": -2}),
            "token_num_uses cannot be negative",
        ),
        (json!({"bind_secret_id": false}), "at least one constraint"),
        (
            json!({"token_ttl": "2h", "token_max_ttl": "1h"}),
            "token_ttl",
        ),
    ] {
        let reply = coffer.call("POST", "auth/approle/role/bad", Some(body.clone()));
        assert_eq!(reply.status, 400, "{body}: {}", reply.text);
        assert!(reply.errors().contains(words), "{body}: {}", reply.text);
        assert_eq!(
            coffer.call("GET", "auth/approle/role/bad", None).status,
            404
        );
    }
    assert!(coffer.list("auth/approle/role").is_empty());

    // An update with a bad field leaves the role as it was.
    write_role(
        &coffer,
        "web",
        json!({"token_policies": "app-read", "secret_id_num_uses": 4, "secret_id_ttl": "1h"}),
    );
    let before = coffer
        .call("GET", "auth/approle/role/web", None)
        .data()
        .clone();
    let reply = coffer.call(
        "POST",
        "auth/approle/role/web",
        Some(json!({"token_policies": "other", "secret_id_bound_cidrs": "10.0.0.0/8,nonsense"})),
    );
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert!(reply.errors().contains("\"nonsense\""), "{}", reply.text);
    assert_eq!(
        coffer.call("GET", "auth/approle/role/web", None).data(),
        &before
    );

    // Secret IDs: unknown roles, and limits beyond the role's, create nothing.
    let unknown = coffer.call(
        "POST",
        "auth/approle/role/nobody/secret-id",
        Some(json!({})),
    );
    assert_eq!(unknown.status, 404, "{}", unknown.text);
    assert!(
        unknown.errors().contains("\"nobody\" does not exist"),
        "{}",
        unknown.text
    );
    for path in ["role-id", "secret-id/lookup", "secret-id-accessor/lookup"] {
        let method = if path == "role-id" { "GET" } else { "POST" };
        let reply = coffer.call(
            method,
            &format!("auth/approle/role/nobody/{path}"),
            Some(json!({"secret_id": "x", "secret_id_accessor": "y"})),
        );
        assert_eq!(reply.status, 404, "{path}: {}", reply.text);
    }
    for (body, words) in [
        (json!({"num_uses": -1}), "num_uses cannot be negative"),
        (
            json!({"ttl": "2h"}),
            "ttl cannot be longer than the role's secret_id_ttl",
        ),
        (json!({"cidr_list": "300.1.1.1"}), "cidr_list"),
        (json!({"metadata": "not json"}), "failed to parse metadata"),
        (json!({"metadata": {"n": 1}}), "failed to parse metadata"),
    ] {
        let reply = coffer.call(
            "POST",
            "auth/approle/role/web/secret-id",
            Some(body.clone()),
        );
        assert_eq!(reply.status, 400, "{body}: {}", reply.text);
        assert!(reply.errors().contains(words), "{body}: {}", reply.text);
    }
    assert!(coffer.list("auth/approle/role/web/secret-id").is_empty());
    let no_bind = coffer.call(
        "POST",
        "auth/approle/role/open",
        Some(json!({"bind_secret_id": false, "secret_id_bound_cidrs": "127.0.0.1/32"})),
    );
    assert_eq!(no_bind.status, 204, "{}", no_bind.text);
    let no_secret_ids = coffer.call("POST", "auth/approle/role/open/secret-id", Some(json!({})));
    assert_eq!(no_secret_ids.status, 400, "{}", no_secret_ids.text);
    assert!(
        no_secret_ids.errors().contains("bind_secret_id"),
        "{}",
        no_secret_ids.text
    );
    // Without bind_secret_id the role ID alone logs in, from the bound block only.
    let open = client_token(&coffer.raw(
        "POST",
        "auth/approle/login",
        None,
        Some(&json!({"role_id": role_id(&coffer, "open")}).to_string()),
        &[],
    ));
    assert_eq!(lookup_self(&coffer, &open).status, 200);
}

#[test]
fn expired_secret_ids_stop_working_and_tidy_removes_them() {
    let coffer = server();
    write_role(&coffer, "web", json!({"token_policies": "app-read"}));
    let role_id = role_id(&coffer, "web");
    let short = issue(&coffer, "web", json!({"ttl": "2s"}));
    assert_eq!(short["secret_id_ttl"], json!(2));
    let untouched = issue(&coffer, "web", json!({"ttl": "2s"}));
    let lasting = issue(&coffer, "web", json!({}));
    let short_secret = short["secret_id"].as_str().unwrap();
    client_token(&login(&coffer, &role_id, short_secret));
    let looked = coffer.call(
        "POST",
        "auth/approle/role/web/secret-id/lookup",
        Some(json!({"secret_id": short_secret})),
    );
    assert_ne!(
        looked.data()["expiration_time"],
        looked.data()["creation_time"]
    );
    assert_eq!(coffer.list("auth/approle/role/web/secret-id").len(), 3);

    std::thread::sleep(Duration::from_millis(2500));
    refused(&login(&coffer, &role_id, short_secret), INVALID);
    // Still listed until tidied (the failed login removed only its own).
    let accessors = coffer.list("auth/approle/role/web/secret-id");
    assert!(
        accessors.contains(
            &untouched["secret_id_accessor"]
                .as_str()
                .unwrap()
                .to_string()
        )
    );
    let tidy = coffer.call("POST", "auth/approle/tidy/secret-id", Some(json!({})));
    assert_eq!(tidy.status, 200, "{}", tidy.text);
    assert_eq!(tidy.data()["secret_ids_removed"], json!(1), "{}", tidy.text);
    assert_eq!(
        coffer.list("auth/approle/role/web/secret-id"),
        vec![lasting["secret_id_accessor"].as_str().unwrap().to_string()]
    );
    let gone = coffer.call(
        "POST",
        "auth/approle/role/web/secret-id-accessor/lookup",
        Some(json!({"secret_id_accessor": untouched["secret_id_accessor"]})),
    );
    assert_eq!(gone.status, 404, "{}", gone.text);
    refused(
        &login(&coffer, &role_id, untouched["secret_id"].as_str().unwrap()),
        INVALID,
    );
    client_token(&login(
        &coffer,
        &role_id,
        lasting["secret_id"].as_str().unwrap(),
    ));
    // A role's secret_id_ttl applies to secret IDs that ask for none.
    write_role(&coffer, "web", json!({"secret_id_ttl": "1s"}));
    let defaulted = issue(&coffer, "web", json!({}));
    assert_eq!(defaulted["secret_id_ttl"], json!(1));
    std::thread::sleep(Duration::from_millis(1500));
    refused(
        &login(&coffer, &role_id, defaulted["secret_id"].as_str().unwrap()),
        INVALID,
    );
}

#[test]
fn accessors_look_up_and_destroy_secret_ids_then_logins_fail() {
    let coffer = server();
    write_role(&coffer, "web", json!({"token_policies": "app-read"}));
    let role_id = role_id(&coffer, "web");
    let issued = issue(
        &coffer,
        "web",
        json!({"metadata": "{\"host\": \"build-7\"}", "num_uses": 5, "cidr_list": "127.0.0.0/8"}),
    );
    let (secret, accessor) = (
        issued["secret_id"].as_str().unwrap(),
        issued["secret_id_accessor"].as_str().unwrap(),
    );
    let looked = coffer.call(
        "POST",
        "auth/approle/role/web/secret-id-accessor/lookup",
        Some(json!({"secret_id_accessor": accessor})),
    );
    assert_eq!(looked.status, 200, "{}", looked.text);
    assert_eq!(looked.data()["metadata"], json!({"host": "build-7"}));
    assert_eq!(looked.data()["secret_id_num_uses"], json!(5));
    assert_eq!(looked.data()["secret_id_accessor"], json!(accessor));
    assert_eq!(looked.data()["cidr_list"], json!(["127.0.0.0/8"]));
    assert_eq!(
        looked.data()["expiration_time"],
        json!("0001-01-01T00:00:00Z")
    );
    assert!(looked.data().get("secret_id").is_none(), "{}", looked.text);
    // Another role cannot reach this accessor.
    write_role(&coffer, "other", json!({"token_policies": "app-read"}));
    let foreign = coffer.call(
        "POST",
        "auth/approle/role/other/secret-id-accessor/destroy",
        Some(json!({"secret_id_accessor": accessor})),
    );
    assert_eq!(foreign.status, 404, "{}", foreign.text);
    client_token(&login(&coffer, &role_id, secret));

    let destroyed = coffer.call(
        "POST",
        "auth/approle/role/web/secret-id-accessor/destroy",
        Some(json!({"secret_id_accessor": accessor})),
    );
    assert_eq!(destroyed.status, 204, "{}", destroyed.text);
    refused(&login(&coffer, &role_id, secret), INVALID);
    let again = coffer.call(
        "POST",
        "auth/approle/role/web/secret-id-accessor/lookup",
        Some(json!({"secret_id_accessor": accessor})),
    );
    assert_eq!(again.status, 404, "{}", again.text);
    assert!(
        again.errors().contains("failed to find accessor entry"),
        "{}",
        again.text
    );

    // By secret ID: lookup, destroy (idempotent), and a lookup of nothing is empty.
    let second = secret_id(&coffer, "web");
    let by_secret = coffer.call(
        "POST",
        "auth/approle/role/web/secret-id/lookup",
        Some(json!({"secret_id": second})),
    );
    assert_eq!(by_secret.status, 200, "{}", by_secret.text);
    for _ in 0..2 {
        let destroyed = coffer.call(
            "POST",
            "auth/approle/role/web/secret-id/destroy",
            Some(json!({"secret_id": second})),
        );
        assert_eq!(destroyed.status, 204, "{}", destroyed.text);
    }
    refused(&login(&coffer, &role_id, &second), INVALID);
    let nothing = coffer.call(
        "POST",
        "auth/approle/role/web/secret-id/lookup",
        Some(json!({"secret_id": second})),
    );
    assert_eq!(nothing.status, 204, "{}", nothing.text);
    assert!(coffer.list("auth/approle/role/web/secret-id").is_empty());

    // A custom secret ID logs in; registering it twice is refused.
    let custom = coffer.call(
        "POST",
        "auth/approle/role/web/custom-secret-id",
        Some(json!({"secret_id": "my-own-secret-id-123"})),
    );
    assert_eq!(custom.status, 200, "{}", custom.text);
    assert_eq!(custom.data()["secret_id"], json!("my-own-secret-id-123"));
    let twice = coffer.call(
        "POST",
        "auth/approle/role/web/custom-secret-id",
        Some(json!({"secret_id": "my-own-secret-id-123"})),
    );
    assert_eq!(twice.status, 400, "{}", twice.text);
    assert!(
        twice.errors().contains("already registered"),
        "{}",
        twice.text
    );
    client_token(&login(&coffer, &role_id, "my-own-secret-id-123"));
}

#[test]
fn secret_ids_are_never_stored_logged_or_shown_after_issue() {
    let dir = temp_dir("approle-storage");
    let mut coffer = Coffer::with_config(&dir, &fixtures_config());
    let keys = coffer.init_and_unseal(1, 1);
    enable(&coffer);
    coffer.policy("app-read", APP_READ);
    write_role(
        &coffer,
        "web",
        json!({"token_policies": "app-read", "secret_id_num_uses": 10}),
    );
    let role_id = role_id(&coffer, "web");
    let custom_secret = "custom-marker-5f1d0c9e";
    let custom = coffer.call(
        "POST",
        "auth/approle/role/web/custom-secret-id",
        Some(json!({"secret_id": custom_secret, "metadata": {"k": "v"}})),
    );
    assert_eq!(custom.status, 200, "{}", custom.text);
    let issued = issue(&coffer, "web", json!({}));
    let generated = issued["secret_id"].as_str().unwrap().to_string();
    let secrets = [custom_secret.to_string(), generated.clone()];

    // Every answer after the issuing one: login, lookups, lists, role reads.
    let mut answers = Vec::new();
    for secret in &secrets {
        let reply = login(&coffer, &role_id, secret);
        client_token(&reply);
        answers.push(reply.text);
        let reply = coffer.call(
            "POST",
            "auth/approle/role/web/secret-id/lookup",
            Some(json!({"secret_id": secret})),
        );
        assert_eq!(reply.status, 200);
        answers.push(reply.text);
    }
    refused(&login(&coffer, &role_id, &format!("{generated}x")), INVALID);
    answers.push(
        coffer
            .call(
                "POST",
                "auth/approle/role/web/secret-id-accessor/lookup",
                Some(json!({"secret_id_accessor": issued["secret_id_accessor"]})),
            )
            .text,
    );
    answers.push(
        coffer
            .call("LIST", "auth/approle/role/web/secret-id", None)
            .text,
    );
    answers.push(coffer.call("GET", "auth/approle/role/web", None).text);
    for answer in &answers {
        for secret in &secrets {
            assert!(!answer.contains(secret.as_str()), "shown again: {answer}");
        }
    }
    let log = coffer.log_text();
    assert!(!log.is_empty(), "the server logged nothing");
    for secret in &secrets {
        assert!(!log.contains(secret.as_str()), "logged: {secret}");
    }

    // Storage, decrypted with the unseal key: neither secret ID appears, as a key or in
    // any value, under any mount; the role ID does not appear as a key either.
    coffer.stop();
    let backend = Arc::new(FileBackend::open(&dir.join("data/coffer.db")).unwrap());
    let barrier = Barrier::new(backend.clone());
    barrier
        .submit_share(&hex::decode(&keys[0]).unwrap())
        .unwrap();
    assert!(!barrier.is_sealed());
    let mut after: Option<String> = None;
    let mut seen = 0;
    loop {
        let batch = backend.scan("", after.as_deref(), 1000).unwrap();
        if batch.is_empty() {
            break;
        }
        for key in &batch {
            for secret in &secrets {
                assert!(
                    !key.contains(secret.as_str()),
                    "a key holds a secret ID: {key}"
                );
            }
            assert!(!key.contains(&role_id), "a key holds the role ID: {key}");
            let Ok(Some(value)) = barrier.get(key) else {
                continue;
            };
            let text = String::from_utf8_lossy(&value);
            for secret in &secrets {
                assert!(
                    !text.contains(secret.as_str()),
                    "stored in clear under {key}"
                );
            }
            seen += 1;
        }
        after = batch.last().cloned();
    }
    assert!(
        seen > 10,
        "only {seen} entries decrypted: not the real storage"
    );
}

#[test]
fn renewal_is_refused_once_the_role_is_deleted_or_its_role_id_changed() {
    let coffer = server();
    write_role(
        &coffer,
        "web",
        json!({"token_policies": "app-read", "token_ttl": "10m"}),
    );
    let role_id = role_id(&coffer, "web");
    let token = client_token(&login(&coffer, &role_id, &secret_id(&coffer, "web")));
    let renew = |token: &str| {
        coffer.raw(
            "POST",
            "auth/token/renew-self",
            Some(token),
            Some(r#"{"increment": "5m"}"#),
            &[],
        )
    };
    let renewed = renew(&token);
    assert_eq!(renewed.status, 200, "{}", renewed.text);
    assert_eq!(renewed.json["auth"]["lease_duration"], json!(300));

    let changed = coffer.call(
        "POST",
        "auth/approle/role/web/role-id",
        Some(json!({"role_id": "replaced-role-id"})),
    );
    assert_eq!(changed.status, 204, "{}", changed.text);
    let refused_renewal = renew(&token);
    assert_eq!(refused_renewal.status, 403, "{}", refused_renewal.text);
    assert!(
        refused_renewal.errors().contains("role ID"),
        "{}",
        refused_renewal.text
    );

    let second = client_token(&login(
        &coffer,
        "replaced-role-id",
        &secret_id(&coffer, "web"),
    ));
    assert_eq!(renew(&second).status, 200);
    let secret_left = secret_id(&coffer, "web");
    let deleted = coffer.call("DELETE", "auth/approle/role/web", None);
    assert_eq!(deleted.status, 204, "{}", deleted.text);
    let refused_renewal = renew(&second);
    assert_eq!(refused_renewal.status, 403, "{}", refused_renewal.text);
    assert!(
        refused_renewal
            .errors()
            .contains("does not exist during renewal"),
        "{}",
        refused_renewal.text
    );
    // The root token renewing it on its behalf is refused the same way.
    let by_root = coffer.call("POST", "auth/token/renew", Some(json!({"token": second})));
    assert_eq!(by_root.status, 403, "{}", by_root.text);
    // The role's secret IDs went with it, and a role re-created under the name does not
    // bring them back.
    refused(&login(&coffer, "replaced-role-id", &secret_left), INVALID);
    write_role(
        &coffer,
        "web",
        json!({"token_policies": "app-read", "role_id": "replaced-role-id"}),
    );
    refused(&login(&coffer, "replaced-role-id", &secret_left), INVALID);
    assert!(coffer.list("auth/approle/role/web/secret-id").is_empty());
}

#[test]
fn disabling_approle_revokes_the_tokens_it_minted() {
    let coffer = server();
    write_role(&coffer, "web", json!({"token_policies": "app-read"}));
    let role_id = role_id(&coffer, "web");
    let secret = secret_id(&coffer, "web");
    let minted: Vec<String> = (0..3)
        .map(|_| client_token(&login(&coffer, &role_id, &secret)))
        .collect();
    let bystander = coffer.token_with(&["app-read"]);
    let disabled = coffer.call("DELETE", "sys/auth/approle", None);
    assert_eq!(disabled.status, 204, "{}", disabled.text);
    for token in &minted {
        assert_eq!(lookup_self(&coffer, token).status, 403);
        assert_eq!(
            coffer
                .raw("GET", "secret/app", Some(token), None, &[])
                .status,
            403
        );
    }
    assert_eq!(lookup_self(&coffer, &bystander).status, 200);
    // Enabled again it starts empty: the old credentials are gone with the old mount.
    enable(&coffer);
    refused(&login(&coffer, &role_id, &secret), INVALID);
    assert!(coffer.list("auth/approle/role").is_empty());
}

#[test]
fn hvac_logs_in_with_approle() {
    let coffer = server();
    let script = r#"
import sys, hvac
admin = hvac.Client(url=sys.argv[1], token="root")
admin.auth.approle.create_or_update_approle("hv", token_policies=["app-read"], secret_id_num_uses=2)
role_id = admin.auth.approle.read_role_id("hv")["data"]["role_id"]
issued = admin.auth.approle.generate_secret_id("hv", metadata={"from": "hvac"})["data"]
assert issued["secret_id_num_uses"] == 2, issued
looked = admin.auth.approle.read_secret_id("hv", issued["secret_id"])["data"]
assert looked["metadata"] == {"from": "hvac"}, looked

client = hvac.Client(url=sys.argv[1])
login = client.auth.approle.login(role_id=role_id, secret_id=issued["secret_id"])
assert login["auth"]["metadata"] == {"role_name": "hv", "from": "hvac"}, login
assert client.is_authenticated()
assert client.secrets.kv.v1.read_secret("app", mount_point="secret")["data"]["password"] == "hunter2"
try:
    client.secrets.kv.v1.create_or_update_secret("app", {"x": "y"}, mount_point="secret")
    raise SystemExit("a write outside the policy worked")
except hvac.exceptions.Forbidden:
    pass
for wrong in ({"role_id": role_id, "secret_id": "nope"}, {"role_id": "nope", "secret_id": issued["secret_id"]}):
    try:
        hvac.Client(url=sys.argv[1]).auth.approle.login(**wrong)
        raise SystemExit("a wrong credential logged in")
    except hvac.exceptions.InvalidRequest as error:
        assert "invalid role or secret ID" in str(error), error
hvac.Client(url=sys.argv[1]).auth.approle.login(role_id=role_id, secret_id=issued["secret_id"])
try:
    hvac.Client(url=sys.argv[1]).auth.approle.login(role_id=role_id, secret_id=issued["secret_id"])
    raise SystemExit("a third login with a two-use secret ID worked")
except hvac.exceptions.InvalidRequest:
    pass
print("ok")
"#;
    run_python(script, &[&coffer.addr]);
}

/// The OpenBao agent's configuration: AppRole auto-auth from files, a token sink, and a
/// template that renders database credentials.
fn agent_config(coffer: &Coffer, dir: &Path) -> String {
    format!(
        r#"
pid_file = "{dir}/agent.pid"
vault {{
  address = "{addr}"
}}
auto_auth {{
  method "approle" {{
    mount_path = "auth/approle"
    config = {{
      role_id_file_path = "{dir}/role-id"
      secret_id_file_path = "{dir}/secret-id"
      remove_secret_id_file_after_reading = false
    }}
  }}
  sink "file" {{
    config = {{
      path = "{dir}/token"
    }}
  }}
}}
template {{
  contents = "{{{{ with secret \"database/creds/grade-api-role\" }}}}{{{{ .Data.username }}}}:{{{{ .Data.password }}}}{{{{ end }}}}"
  destination = "{dir}/creds"
}}
"#,
        dir = dir.display(),
        addr = coffer.addr,
    )
}

#[test]
fn the_openbao_agent_logs_in_with_approle_and_renders_database_credentials() {
    let pg = Postgres::start(false);
    let coffer = server();
    // Dev mode mounts the database engine at database/.
    let mounts = coffer.call("GET", "sys/mounts", None);
    assert_eq!(
        mounts.data()["database/"]["type"],
        json!("database"),
        "{}",
        mounts.text
    );
    tutorial_database(&coffer, &pg);
    coffer.policy(
        "grade-reader",
        r#"path "database/creds/grade-api-role" { capabilities = ["read"] }"#,
    );
    write_role(
        &coffer,
        "grades",
        json!({"token_policies": "grade-reader", "token_ttl": "1h"}),
    );

    // A wrong secret ID first: the agent never gets a token nor renders anything.
    let wrong = temp_dir("agent-wrong");
    std::fs::write(wrong.join("role-id"), role_id(&coffer, "grades")).unwrap();
    std::fs::write(wrong.join("secret-id"), "not-the-secret-id").unwrap();
    let agent = start_bao_agent(&wrong, &agent_config(&coffer, &wrong));
    let complained = eventually(Duration::from_secs(30), || {
        std::fs::read_to_string(wrong.join("agent.log"))
            .unwrap_or_default()
            .contains(INVALID)
    });
    stop_agent(agent);
    let log = std::fs::read_to_string(wrong.join("agent.log")).unwrap_or_default();
    assert!(
        complained,
        "the agent did not report the refused login:\n{log}"
    );
    assert!(!wrong.join("token").exists(), "{log}");
    assert!(!wrong.join("creds").exists(), "{log}");

    let dir = temp_dir("agent");
    std::fs::write(dir.join("role-id"), role_id(&coffer, "grades")).unwrap();
    std::fs::write(dir.join("secret-id"), secret_id(&coffer, "grades")).unwrap();
    let agent = start_bao_agent(&dir, &agent_config(&coffer, &dir));
    let rendered = eventually(Duration::from_secs(60), || {
        std::fs::read_to_string(dir.join("creds")).is_ok_and(|c| c.contains(':'))
    });
    let log = std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default();
    let creds = std::fs::read_to_string(dir.join("creds")).unwrap_or_default();
    let token = std::fs::read_to_string(dir.join("token")).unwrap_or_default();
    stop_agent(agent);
    assert!(rendered, "no credentials rendered:\n{log}");
    assert!(
        dir.join("secret-id").exists(),
        "the agent removed the secret ID file"
    );

    // The credentials log in to PostgreSQL and read the table their role grants.
    let (username, password) = creds.trim().split_once(':').unwrap();
    assert!(
        pg.role_exists(username),
        "{username} is not a PostgreSQL role"
    );
    assert_eq!(
        pg.login(
            username,
            password,
            "SELECT grade FROM grades WHERE student = 'ada'"
        ),
        Ok("1".to_string())
    );
    assert!(pg.login(username, "wrong-password", "SELECT 1").is_err());
    // The agent's token is the AppRole login's, bound by its policy.
    let looked = lookup_self(&coffer, token.trim());
    assert_eq!(looked.status, 200, "{}", looked.text);
    assert_eq!(looked.data()["meta"]["role_name"], json!("grades"));
    assert_eq!(looked.data()["path"], json!("auth/approle/login"));
    assert_eq!(
        coffer
            .raw("GET", "secret/app", Some(token.trim()), None, &[])
            .status,
        403
    );
}

#[test]
fn the_cli_enables_approle_issues_credentials_and_logs_in() {
    let coffer = Coffer::dev();
    coffer.policy("app-read", APP_READ);
    coffer_tests::stdout(&coffer.cli(&["auth", "enable", "approle"]));
    coffer_tests::stdout(&coffer.cli(&[
        "write",
        "auth/approle/role/cli",
        "token_policies=app-read",
        "secret_id_num_uses=1",
    ]));
    let role_id = coffer_tests::stdout(&coffer.cli(&[
        "read",
        "-field=role_id",
        "auth/approle/role/cli/role-id",
    ]));
    let secret = coffer_tests::stdout(&coffer.cli(&[
        "write",
        "-f",
        "-field=secret_id",
        "auth/approle/role/cli/secret-id",
    ]));
    assert!(!secret.is_empty() && !role_id.is_empty());
    let role_arg = format!("role_id={role_id}");
    let secret_arg = format!("secret_id={secret}");
    let login = [
        "login",
        "-method=approle",
        "-no-store",
        "-token-only",
        &role_arg,
        &secret_arg,
    ];
    let token = coffer_tests::stdout(&coffer.cli(&login));
    let looked = lookup_self(&coffer, token.trim());
    assert_eq!(looked.status, 200, "{}", looked.text);
    assert_eq!(looked.data()["meta"]["role_name"], json!("cli"));
    // One use only: the same login again fails, with Vault's words.
    let again = coffer.cli(&login);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains(INVALID),
        "{again:?}"
    );
}

#[test]
fn the_openapi_document_describes_approle() {
    let coffer = server();
    let document = coffer.raw("GET", "sys/internal/specs/openapi", Some("root"), None, &[]);
    assert_eq!(document.status, 200, "{}", document.text);
    let paths = document.json["paths"].as_object().unwrap();
    for path in [
        "/auth/approle/login",
        "/auth/approle/role/{role_name}",
        "/auth/approle/role/{role_name}/role-id",
        "/auth/approle/role/{role_name}/secret-id",
        "/auth/approle/role/{role_name}/secret-id-accessor/destroy",
        "/auth/approle/tidy/secret-id",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} missing: {:?}",
            paths.keys()
        );
    }
    let file = temp_dir("approle-openapi").join("openapi.json");
    std::fs::write(&file, &document.text).unwrap();
    run_python(
        "import json, sys\nfrom openapi_spec_validator import validate\nvalidate(json.load(open(sys.argv[1])))\nprint('ok')",
        &[file.to_str().unwrap()],
    );
}
