//! The token tree, as Vault has it: children die with their parents (and take their leases
//! along), never outlive them, and every lifetime knob is bounded or enforced. Driven over
//! HTTP against the real binary with the `leasing` fixture, whose leases are visible in
//! its own storage (`issued/`, `revoked/`). Accessors and token roles are attacked (no
//! token, a `default` token, malformed writes) and used as Vault users use them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

use std::time::Duration;

use coffer_tests::{Coffer, Reply, Value, eventually, fixtures_config, json, temp_dir};

/// A server with the `tree` policy (make children, take leasing leases).
fn server() -> Coffer {
    let mut coffer = Coffer::with_config(&temp_dir("tokens"), &fixtures_config());
    coffer.init_and_unseal(1, 1);
    coffer.policy("tree", coffer_tests::TREE_POLICY);
    coffer
}

/// `auth/token/create` with `body`, made with `token`.
fn create(coffer: &Coffer, token: &str, body: Value) -> Reply {
    coffer.raw(
        "POST",
        "auth/token/create",
        Some(token),
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

/// A lease made with `token`; returns the username it created.
fn lease_with(coffer: &Coffer, token: &str, role: &str) -> String {
    let reply = coffer.raw(
        "GET",
        &format!("leasing/creds/{role}"),
        Some(token),
        None,
        &[],
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.data()["username"].as_str().unwrap().to_string()
}

#[test]
fn a_child_dies_with_its_parent_and_its_leases_go_too() {
    let coffer = server();
    let root = coffer.token.clone();
    let parent = client_token(&create(
        &coffer,
        &root,
        json!({"ttl": "60s", "explicit_max_ttl": "60s", "policies": ["tree"]}),
    ));
    // The repro: a child asking for a hundred years, of a parent that can live a minute.
    let child_reply = create(
        &coffer,
        &parent,
        json!({"ttl": "876000h", "explicit_max_ttl": "876000h"}),
    );
    let child = client_token(&child_reply);
    let child_ttl = child_reply.json["auth"]["lease_duration"].as_u64().unwrap();
    assert!(
        child_ttl <= 60,
        "a child outlives its parent: ttl {child_ttl}"
    );
    assert!(
        child_reply.json["warnings"].to_string().contains("parent"),
        "the cap is not explained: {}",
        child_reply.text
    );
    let grandchild = client_token(&create(&coffer, &child, json!({"ttl": "30s"})));
    let child_user = lease_with(&coffer, &child, "child");
    let grandchild_user = lease_with(&coffer, &grandchild, "grandchild");
    let bystander = client_token(&create(&coffer, &root, json!({"ttl": "60s"})));
    let bystander_user = lease_with(&coffer, &bystander, "bystander");

    let revoke = coffer.call("POST", "auth/token/revoke", Some(json!({"token": parent})));
    assert_eq!(revoke.status, 204, "{}", revoke.text);
    for gone in [&parent, &child, &grandchild] {
        assert_eq!(lookup_self(&coffer, gone).status, 403);
    }
    let mut revoked = coffer.list("leasing/revoked/");
    revoked.sort();
    let mut expected = vec![child_user, grandchild_user];
    expected.sort();
    assert_eq!(revoked, expected);
    assert_eq!(lookup_self(&coffer, &bystander).status, 200);
    assert_eq!(coffer.list("leasing/issued/"), vec![bystander_user]);
}

#[test]
fn a_parent_that_expires_takes_its_children_along() {
    let coffer = server();
    let parent = client_token(&create(&coffer, &coffer.token, json!({"ttl": "2s"})));
    let child = client_token(&create(&coffer, &parent, json!({"ttl": "1h"})));
    let user = lease_with(&coffer, &child, "expiring");
    assert!(
        eventually(Duration::from_secs(6), || lookup_self(&coffer, &child)
            .status
            == 403),
        "the child outlived its expired parent"
    );
    assert!(
        eventually(Duration::from_secs(5), || coffer.list("leasing/revoked/")
            == vec![user.clone()]),
        "the child's lease outlived it"
    );
}

#[test]
fn revoke_orphan_keeps_the_children_and_only_root_makes_orphans() {
    let coffer = server();
    let parent = client_token(&create(
        &coffer,
        &coffer.token,
        json!({"ttl": "1h", "policies": ["tree"]}),
    ));
    let child = client_token(&create(&coffer, &parent, json!({"ttl": "30m"})));
    // A token without sudo cannot leave the tree: create-orphan is refused by the ACL
    // (403), `no_parent`, `period` and `id` by the token store (Vault's 400).
    for (path, body, status) in [
        ("auth/token/create-orphan", json!({}), 403),
        ("auth/token/create", json!({"no_parent": true}), 400),
        ("auth/token/create", json!({"period": "1h"}), 400),
        ("auth/token/create", json!({"id": "chosen-id"}), 400),
        (
            "auth/token/create",
            json!({"policies": ["operator-only"]}),
            400,
        ),
    ] {
        let reply = coffer.raw("POST", path, Some(&parent), Some(&body.to_string()), &[]);
        assert_eq!(reply.status, status, "{path} {body}: {}", reply.text);
    }
    let orphaned = coffer.raw(
        "POST",
        "auth/token/revoke-orphan",
        Some(&parent),
        Some(&json!({"token": parent}).to_string()),
        &[],
    );
    assert_eq!(
        orphaned.status, 403,
        "revoke-orphan needs root: {}",
        orphaned.text
    );
    let orphaned = coffer.call(
        "POST",
        "auth/token/revoke-orphan",
        Some(json!({"token": parent})),
    );
    assert_eq!(orphaned.status, 204, "{}", orphaned.text);
    assert_eq!(lookup_self(&coffer, &parent).status, 403);
    let kept = lookup_self(&coffer, &child);
    assert_eq!(kept.status, 200, "{}", kept.text);
    assert_eq!(kept.data()["orphan"], json!(true));
}

#[test]
fn durations_that_overflow_are_a_400_and_the_server_lives_on() {
    let coffer = server();
    for ttl in [
        json!(1e20),
        json!("1e20"),
        json!(u64::MAX),
        json!("99999999999999h"),
    ] {
        let reply = create(&coffer, &coffer.token, json!({ "ttl": ttl }));
        assert_eq!(reply.status, 400, "ttl {ttl}: {}", reply.text);
        assert!(reply.errors().contains("ttl"), "{}", reply.text);
    }
    let renew = coffer.call(
        "PUT",
        "sys/leases/renew",
        Some(json!({"lease_id": "leasing/creds/x/y", "increment": 1e20})),
    );
    assert_eq!(renew.status, 400, "{}", renew.text);
    let tune = coffer.call(
        "POST",
        "sys/mounts/leasing/tune",
        Some(json!({"max_lease_ttl": 1e300})),
    );
    assert_eq!(tune.status, 400, "{}", tune.text);
    assert_eq!(coffer.call("GET", "sys/health", None).status, 200);
    // Half a second is a second, not "no TTL": even a root token expires.
    let brief = create(&coffer, &coffer.token, json!({"ttl": "0.5s"}));
    assert_eq!(
        brief.json["auth"]["lease_duration"],
        json!(1),
        "{}",
        brief.text
    );
    let brief = client_token(&brief);
    assert!(
        eventually(Duration::from_secs(4), || lookup_self(&coffer, &brief)
            .status
            == 403),
        "a half-second token never expired"
    );
    // Huge but valid requests are capped to the system max, with a warning.
    let capped = create(&coffer, &coffer.token, json!({"ttl": "876000h"}));
    client_token(&capped);
    assert_eq!(capped.json["auth"]["lease_duration"], json!(768 * 3600));
    assert!(capped.json["warnings"].to_string().contains("capped"));
}

#[test]
fn num_uses_is_enforced_and_the_last_use_revokes() {
    let coffer = server();
    let limited_reply = create(&coffer, &coffer.token, json!({"ttl": "1h", "num_uses": 2}));
    let limited = client_token(&limited_reply);
    assert_eq!(limited_reply.json["auth"]["num_uses"], json!(2));
    let first = lookup_self(&coffer, &limited);
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.data()["num_uses"], json!(1));
    let user = lease_with(&coffer, &limited, "limited");
    assert_eq!(
        lookup_self(&coffer, &limited).status,
        403,
        "a third use worked"
    );
    // The lease made with the last use went with the token.
    assert!(
        eventually(Duration::from_secs(3), || coffer.list("leasing/revoked/")
            == vec![user.clone()]),
        "the used-up token's lease survived"
    );
    let negative = create(&coffer, &coffer.token, json!({"num_uses": -1}));
    assert_eq!(negative.status, 400, "{}", negative.text);
    // A use-limited token cannot make unlimited children (Vault's rule).
    let parent = client_token(&create(
        &coffer,
        &coffer.token,
        json!({"num_uses": 5, "policies": ["tree"]}),
    ));
    let child = create(&coffer, &parent, json!({}));
    assert_eq!(child.status, 400, "{}", child.text);
    assert!(child.errors().contains("restricted use"), "{}", child.text);
}

/// Sends a request's head now and its body later, on a raw socket.
struct HalfSent(std::net::TcpStream);

impl HalfSent {
    fn start(coffer: &Coffer, method: &str, path: &str, token: &str, body_len: usize) -> Self {
        use std::io::Write;
        let host = coffer.addr.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(host).unwrap();
        write!(
            stream,
            "{method} /v1/{path} HTTP/1.1\r\nHost: {host}\r\nX-Vault-Token: {token}\r\nContent-Type: application/json\r\nContent-Length: {body_len}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        Self(stream)
    }

    /// Sends the body and returns the response's status code.
    fn finish(mut self, body: &str) -> (u16, String) {
        use std::io::{Read, Write};
        self.0.write_all(body.as_bytes()).unwrap();
        let mut response = String::new();
        self.0.read_to_string(&mut response).unwrap();
        let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
        (status, response)
    }
}

#[test]
fn a_request_whose_token_is_revoked_midway_makes_nothing_that_outlives_it() {
    let coffer = server();
    let parent = client_token(&create(
        &coffer,
        &coffer.token,
        json!({"ttl": "1h", "policies": ["tree"]}),
    ));
    let body = "{}";
    let child = HalfSent::start(&coffer, "POST", "auth/token/create", &parent, body.len());
    let lease = HalfSent::start(&coffer, "GET", "leasing/creds/midway", &parent, body.len());
    std::thread::sleep(Duration::from_millis(300));
    let revoke = coffer.call("POST", "auth/token/revoke", Some(json!({"token": parent})));
    assert_eq!(revoke.status, 204, "{}", revoke.text);
    let (status, text) = child.finish(body);
    assert_eq!(status, 403, "a child of a revoked parent was made: {text}");
    let (status, text) = lease.finish(body);
    assert_eq!(status, 403, "a lease of a revoked token was kept: {text}");
    // The credential the engine made is revoked at once, not at its TTL.
    assert!(
        eventually(Duration::from_secs(3), || coffer
            .list("leasing/issued/")
            .is_empty()
            && coffer.list("leasing/revoked/").len() == 1),
        "the revoked token's credential survived: issued {:?}",
        coffer.list("leasing/issued/")
    );
}

#[test]
fn concurrent_requests_never_get_more_uses_than_granted() {
    let coffer = server();
    let limited = client_token(&create(&coffer, &coffer.token, json!({"num_uses": 3})));
    let successes = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..12)
            .map(|_| scope.spawn(|| lookup_self(&coffer, &limited).status == 200))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|ok| *ok)
            .count()
    });
    assert_eq!(successes, 3);
}

#[test]
fn periodic_tokens_renew_to_their_period_without_a_max() {
    let coffer = server();
    let reply = create(&coffer, &coffer.token, json!({"period": "2h", "ttl": "5m"}));
    let periodic = client_token(&reply);
    assert_eq!(reply.json["auth"]["lease_duration"], json!(7200));
    let renewed = coffer.raw(
        "PUT",
        "auth/token/renew-self",
        Some(&periodic),
        Some(&json!({"increment": "10s"}).to_string()),
        &[],
    );
    assert_eq!(renewed.status, 200, "{}", renewed.text);
    assert_eq!(renewed.json["auth"]["lease_duration"], json!(7200));
    assert_eq!(
        lookup_self(&coffer, &periodic).data()["period"],
        json!(7200)
    );
}

// ---------------------------------------------------------------------------------------
// Accessors and token roles.

/// A POST of `body` to `path` with `token` (none: no token at all).
fn post(coffer: &Coffer, token: Option<&str>, path: &str, body: Value) -> Reply {
    coffer.raw("POST", path, token, Some(&body.to_string()), &[])
}

fn accessor_of(reply: &Reply) -> String {
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json["auth"]["accessor"].as_str().unwrap().to_string()
}

/// `LIST path` with `token`.
fn list_with(coffer: &Coffer, token: Option<&str>, path: &str) -> Reply {
    coffer.raw("LIST", path, token, None, &[])
}

fn keys(reply: &Reply) -> Vec<String> {
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.data()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect()
}

/// What a token that manages others by accessor is granted (Vault's docs give the
/// accessor list `sudo`, as it is one of the token store's root paths).
const ACCESSOR_POLICY: &str = r#"
path "auth/token/lookup-accessor" { capabilities = ["update"] }
path "auth/token/renew-accessor" { capabilities = ["update"] }
path "auth/token/revoke-accessor" { capabilities = ["update"] }
path "auth/token/accessors" { capabilities = ["list", "sudo"] }
path "sys/capabilities-accessor" { capabilities = ["update"] }
path "auth/token/roles/*" { capabilities = ["create", "read", "update", "delete"] }
path "auth/token/roles" { capabilities = ["list"] }
"#;

/// Every accessor and role endpoint, as (method, path, body).
fn accessor_and_role_calls(accessor: &str) -> Vec<(&'static str, &'static str, Option<Value>)> {
    let by_accessor = json!({ "accessor": accessor });
    vec![
        ("LIST", "auth/token/accessors", None),
        (
            "POST",
            "auth/token/lookup-accessor",
            Some(by_accessor.clone()),
        ),
        (
            "POST",
            "auth/token/renew-accessor",
            Some(by_accessor.clone()),
        ),
        (
            "POST",
            "auth/token/revoke-accessor",
            Some(by_accessor.clone()),
        ),
        (
            "POST",
            "sys/capabilities-accessor",
            Some(json!({ "accessor": accessor, "paths": ["secret/x"] })),
        ),
        ("LIST", "auth/token/roles", None),
        ("GET", "auth/token/roles/ops", None),
        (
            "POST",
            "auth/token/roles/ops",
            Some(json!({ "allowed_policies": ["tree"] })),
        ),
        ("DELETE", "auth/token/roles/ops", None),
        ("POST", "auth/token/create/ops", Some(json!({}))),
    ]
}

#[test]
fn accessor_and_role_endpoints_refuse_callers_without_a_policy_for_them() {
    let coffer = server();
    coffer.policy("accessors", ACCESSOR_POLICY);
    coffer.policy(
        "nosudo",
        r#"path "auth/token/accessors" { capabilities = ["list"] }"#,
    );
    let role = coffer.call(
        "POST",
        "auth/token/roles/ops",
        Some(json!({"allowed_policies": ["tree"]})),
    );
    assert_eq!(role.status, 204, "{}", role.text);
    let victim_reply = create(&coffer, &coffer.token, json!({"ttl": "1h"}));
    let victim = client_token(&victim_reply);
    let accessor = accessor_of(&victim_reply);
    let plain = client_token(&create(
        &coffer,
        &coffer.token,
        json!({"ttl": "1h", "policies": ["default"]}),
    ));
    let nosudo = client_token(&create(
        &coffer,
        &coffer.token,
        json!({"ttl": "1h", "policies": ["nosudo"]}),
    ));
    for (method, path, body) in accessor_and_role_calls(&accessor) {
        let body = body.map(|b| b.to_string());
        for (who, token) in [
            ("no token", None),
            ("a default token", Some(plain.as_str())),
        ] {
            let reply = coffer.raw(method, path, token, body.as_deref(), &[]);
            assert_eq!(reply.status, 403, "{who}: {method} {path}: {}", reply.text);
        }
    }
    // The accessor list is a sudo path: `list` alone is not enough.
    assert_eq!(
        list_with(&coffer, Some(&nosudo), "auth/token/accessors").status,
        403
    );
    // Nothing the refused calls asked for happened.
    assert_eq!(lookup_self(&coffer, &victim).status, 200);
    let kept = coffer.call("GET", "auth/token/roles/ops", None);
    assert_eq!(kept.status, 200, "{}", kept.text);
    assert_eq!(kept.data()["allowed_policies"], json!(["tree"]));
}

#[test]
fn accessors_are_listed_looked_up_renewed_and_revoked_without_showing_the_token() {
    let coffer = server();
    coffer.policy("accessors", ACCESSOR_POLICY);
    let admin = client_token(&create(
        &coffer,
        &coffer.token,
        json!({"ttl": "1h", "policies": ["accessors"]}),
    ));
    let target_reply = create(
        &coffer,
        &coffer.token,
        json!({"ttl": "10m", "explicit_max_ttl": "20m", "policies": ["tree"]}),
    );
    let target = client_token(&target_reply);
    let accessor = accessor_of(&target_reply);

    let listed = keys(&list_with(&coffer, Some(&admin), "auth/token/accessors"));
    assert!(listed.contains(&accessor), "{listed:?}");
    assert!(listed.iter().all(|k| k != &target));

    let looked = post(
        &coffer,
        Some(&admin),
        "auth/token/lookup-accessor",
        json!({ "accessor": accessor }),
    );
    assert_eq!(looked.status, 200, "{}", looked.text);
    assert_eq!(looked.data()["id"], json!(""));
    assert_eq!(looked.data()["accessor"], json!(accessor));
    assert_eq!(looked.data()["policies"], json!(["default", "tree"]));
    assert!(
        !looked.text.contains(&target),
        "the token leaked: {}",
        looked.text
    );

    let renewed = post(
        &coffer,
        Some(&admin),
        "auth/token/renew-accessor",
        json!({ "accessor": accessor, "increment": "1h" }),
    );
    assert_eq!(renewed.status, 200, "{}", renewed.text);
    assert_eq!(renewed.json["auth"]["client_token"], json!(""));
    assert!(!renewed.text.contains(&target), "{}", renewed.text);
    // The explicit max caps the renewal.
    let ttl = renewed.json["auth"]["lease_duration"].as_u64().unwrap();
    assert!(ttl > 600 && ttl <= 1200, "renewed to {ttl}");

    let capabilities = post(
        &coffer,
        Some(&admin),
        "sys/capabilities-accessor",
        json!({ "accessor": accessor, "paths": ["secret/x", "sys/seal"] }),
    );
    assert_eq!(capabilities.status, 200, "{}", capabilities.text);
    assert_eq!(
        capabilities.data()["secret/x"],
        json!(["create", "delete", "list", "read", "update"])
    );
    assert_eq!(capabilities.data()["sys/seal"], json!(["deny"]));

    for bad in [
        json!({}),
        json!({"accessor": ""}),
        json!({"accessor": ["x"]}),
    ] {
        for path in [
            "auth/token/lookup-accessor",
            "auth/token/renew-accessor",
            "auth/token/revoke-accessor",
            "sys/capabilities-accessor",
        ] {
            let reply = post(&coffer, Some(&admin), path, bad.clone());
            assert_eq!(reply.status, 400, "{path} {bad}: {}", reply.text);
            assert!(reply.errors().contains("accessor"), "{}", reply.text);
        }
    }
    let unknown = post(
        &coffer,
        Some(&admin),
        "auth/token/lookup-accessor",
        json!({"accessor": "nope"}),
    );
    assert_eq!(unknown.status, 400, "{}", unknown.text);
    assert!(unknown.errors().contains("invalid accessor"));

    let revoked = post(
        &coffer,
        Some(&admin),
        "auth/token/revoke-accessor",
        json!({ "accessor": accessor }),
    );
    assert_eq!(revoked.status, 204, "{}", revoked.text);
    assert_eq!(lookup_self(&coffer, &target).status, 403);
    let listed = keys(&list_with(&coffer, Some(&admin), "auth/token/accessors"));
    assert!(!listed.contains(&accessor), "a revoked accessor is listed");
    let again = post(
        &coffer,
        Some(&admin),
        "auth/token/revoke-accessor",
        json!({ "accessor": accessor }),
    );
    assert_eq!(again.status, 200, "{}", again.text);
    assert!(again.text.contains("No token found"), "{}", again.text);
    let gone = post(
        &coffer,
        Some(&admin),
        "auth/token/lookup-accessor",
        json!({ "accessor": accessor }),
    );
    assert_eq!(gone.status, 400, "{}", gone.text);
}

#[test]
fn revoke_accessor_takes_the_children_and_their_leases() {
    let coffer = server();
    let parent_reply = create(
        &coffer,
        &coffer.token,
        json!({"ttl": "1h", "policies": ["tree"]}),
    );
    let parent = client_token(&parent_reply);
    let child = client_token(&create(&coffer, &parent, json!({"ttl": "30m"})));
    let user = lease_with(&coffer, &child, "by-accessor");
    let revoke = coffer.call(
        "POST",
        "auth/token/revoke-accessor",
        Some(json!({ "accessor": accessor_of(&parent_reply) })),
    );
    assert_eq!(revoke.status, 204, "{}", revoke.text);
    assert_eq!(lookup_self(&coffer, &parent).status, 403);
    assert_eq!(
        lookup_self(&coffer, &child).status,
        403,
        "the child survived"
    );
    assert_eq!(coffer.list("leasing/revoked/"), vec![user]);
}

/// A policy that may make tokens from any role, and plain children (of its own policies).
const CREATOR_POLICY: &str = r#"
path "auth/token/create/*" { capabilities = ["update"] }
path "auth/token/create" { capabilities = ["update"] }
"#;

fn role(coffer: &Coffer, name: &str, body: Value) {
    let reply = coffer.call("POST", &format!("auth/token/roles/{name}"), Some(body));
    assert!(
        reply.status == 204 || reply.status == 200,
        "role {name}: {}",
        reply.text
    );
}

/// A token made by `token` from role `name` with `body`.
fn from_role(coffer: &Coffer, token: &str, name: &str, body: Value) -> Reply {
    post(
        coffer,
        Some(token),
        &format!("auth/token/create/{name}"),
        body,
    )
}

#[test]
fn a_role_decides_the_policies_of_its_tokens_as_vault_does() {
    let coffer = server();
    coffer.policy("creator", CREATOR_POLICY);
    coffer.policy("a", r#"path "secret/a" { capabilities = ["read"] }"#);
    coffer.policy("b", r#"path "secret/b" { capabilities = ["read"] }"#);
    role(&coffer, "only-a", json!({"allowed_policies": "a"}));
    role(
        &coffer,
        "not-b",
        json!({"disallowed_policies": ["b"], "disallowed_policies_glob": ["adm*"]}),
    );
    role(&coffer, "glob", json!({"allowed_policies_glob": ["a*"]}));
    let creator = client_token(&create(
        &coffer,
        &coffer.token,
        json!({"ttl": "1h", "policies": ["creator"]}),
    ));

    // The role is the authorization: `a` is not the creator's, yet the role grants it.
    let made = from_role(&coffer, &creator, "only-a", json!({}));
    let token = client_token(&made);
    assert_eq!(made.json["auth"]["policies"], json!(["a", "default"]));
    let looked = lookup_self(&coffer, &token);
    assert_eq!(looked.data()["role"], json!("only-a"));
    assert_eq!(looked.data()["path"], json!("auth/token/create/only-a"));
    assert_eq!(looked.data()["orphan"], json!(false));
    // Without the role, the creator cannot hand out `a`.
    let plain = create(&coffer, &creator, json!({"policies": ["a"]}));
    assert_eq!(plain.status, 400, "{}", plain.text);

    let outside = from_role(&coffer, &creator, "only-a", json!({"policies": ["b"]}));
    assert_eq!(outside.status, 400, "{}", outside.text);
    assert!(
        outside.errors().contains("allowed policies"),
        "{}",
        outside.text
    );
    let root_asked = from_role(&coffer, &creator, "only-a", json!({"policies": ["root"]}));
    assert_eq!(root_asked.status, 400, "{}", root_asked.text);
    let no_default = from_role(
        &coffer,
        &creator,
        "only-a",
        json!({"policies": ["a"], "no_default_policy": true}),
    );
    assert_eq!(
        no_default.json["auth"]["policies"],
        json!(["a"]),
        "{}",
        no_default.text
    );

    for refused in [json!(["b"]), json!(["admin"]), json!("a,b")] {
        let reply = from_role(&coffer, &creator, "not-b", json!({ "policies": refused }));
        assert_eq!(reply.status, 400, "{refused}: {}", reply.text);
        assert!(reply.errors().contains("disallowed"), "{}", reply.text);
    }
    // Only disallowed set: with no policies asked, the parent's are used.
    let inherited = from_role(&coffer, &creator, "not-b", json!({}));
    assert_eq!(
        inherited.json["auth"]["policies"],
        json!(["creator", "default"]),
        "{}",
        inherited.text
    );
    let globbed = from_role(&coffer, &creator, "glob", json!({"policies": ["a"]}));
    client_token(&globbed);
    let unglobbed = from_role(&coffer, &creator, "glob", json!({"policies": ["b"]}));
    assert_eq!(unglobbed.status, 400, "{}", unglobbed.text);

    // A token without the policy cannot use a role; an unknown role is a 400.
    let plain_token = client_token(&create(
        &coffer,
        &coffer.token,
        json!({"ttl": "1h", "policies": ["default"]}),
    ));
    assert_eq!(
        from_role(&coffer, &plain_token, "only-a", json!({})).status,
        403
    );
    let unknown = from_role(&coffer, &creator, "nope", json!({}));
    assert_eq!(unknown.status, 400, "{}", unknown.text);
    assert!(
        unknown.errors().contains("unknown role"),
        "{}",
        unknown.text
    );

    assert_eq!(coffer.list("auth/token/roles"), ["glob", "not-b", "only-a"]);
    let read = coffer.call("GET", "auth/token/roles/only-a", None);
    assert_eq!(read.status, 200, "{}", read.text);
    for (field, value) in [
        ("name", json!("only-a")),
        ("allowed_policies", json!(["a"])),
        ("renewable", json!(true)),
        ("orphan", json!(false)),
        ("token_type", json!("default-service")),
        ("token_period", json!(0)),
    ] {
        assert_eq!(read.data()[field], value, "{field}: {}", read.text);
    }
    let deleted = coffer.call("DELETE", "auth/token/roles/only-a", None);
    assert_eq!(deleted.status, 204, "{}", deleted.text);
    assert_eq!(
        coffer.call("GET", "auth/token/roles/only-a", None).status,
        404
    );
    assert_eq!(
        from_role(&coffer, &creator, "only-a", json!({})).status,
        400
    );
}

#[test]
fn orphan_periodic_and_capped_roles_shape_their_tokens() {
    let coffer = server();
    coffer.policy("creator", CREATOR_POLICY);
    role(
        &coffer,
        "orphans",
        json!({"orphan": true, "allowed_policies": ["a"]}),
    );
    role(
        &coffer,
        "periodic",
        json!({"token_period": "1h", "allowed_policies": ["a"]}),
    );
    role(
        &coffer,
        "capped",
        json!({"token_explicit_max_ttl": "20m", "allowed_policies": ["a"], "path_suffix": "v2"}),
    );
    role(
        &coffer,
        "fixed",
        json!({"renewable": false, "token_num_uses": 3, "allowed_policies": ["a"], "token_type": "service"}),
    );
    let creator = client_token(&create(
        &coffer,
        &coffer.token,
        json!({"ttl": "1h", "policies": ["creator"]}),
    ));

    // An orphan role makes orphans for a caller without sudo; its parent's end is not theirs.
    let orphan_reply = from_role(&coffer, &creator, "orphans", json!({"ttl": "2h"}));
    let orphan = client_token(&orphan_reply);
    assert_eq!(orphan_reply.json["auth"]["orphan"], json!(true));
    let child = client_token(&from_role(&coffer, &creator, "capped", json!({})));
    let revoke = coffer.call("POST", "auth/token/revoke", Some(json!({"token": creator})));
    assert_eq!(revoke.status, 204, "{}", revoke.text);
    assert_eq!(lookup_self(&coffer, &orphan).status, 200, "the orphan died");
    assert_eq!(
        lookup_self(&coffer, &child).status,
        403,
        "a role's child outlived its parent"
    );
    // `no_parent` needs root, but is ignored with a role (as Vault ignores it).
    let creator = client_token(&create(
        &coffer,
        &coffer.token,
        json!({"ttl": "1h", "policies": ["creator"]}),
    ));
    let with_no_parent = from_role(&coffer, &creator, "capped", json!({"no_parent": true}));
    assert_eq!(
        with_no_parent.json["auth"]["orphan"],
        json!(false),
        "{}",
        with_no_parent.text
    );
    // Asking for a period beyond the role's still needs root or sudo (Vault's 400).
    let asked_period = from_role(&coffer, &creator, "capped", json!({"period": "1h"}));
    assert_eq!(asked_period.status, 400, "{}", asked_period.text);
    assert!(
        asked_period.errors().contains("sudo"),
        "{}",
        asked_period.text
    );

    // A periodic role: the TTL is the period, and renewals go back to it.
    let periodic_reply = from_role(&coffer, &creator, "periodic", json!({"ttl": "5m"}));
    let periodic = client_token(&periodic_reply);
    assert_eq!(periodic_reply.json["auth"]["lease_duration"], json!(3600));
    assert_eq!(
        lookup_self(&coffer, &periodic).data()["period"],
        json!(3600)
    );
    let renewed = coffer.raw(
        "PUT",
        "auth/token/renew-self",
        Some(&periodic),
        Some(&json!({"increment": "10s"}).to_string()),
        &[],
    );
    assert_eq!(renewed.status, 200, "{}", renewed.text);
    assert_eq!(renewed.json["auth"]["lease_duration"], json!(3600));

    // The role's explicit max caps the TTL and every renewal; the suffix is in the path.
    let capped_reply = from_role(&coffer, &creator, "capped", json!({"ttl": "10m"}));
    let capped = client_token(&capped_reply);
    let looked = lookup_self(&coffer, &capped);
    assert_eq!(looked.data()["explicit_max_ttl"], json!(1200));
    assert_eq!(looked.data()["path"], json!("auth/token/create/capped/v2"));
    assert_eq!(looked.data()["role"], json!("capped"));
    let renewed = coffer.raw(
        "PUT",
        "auth/token/renew-self",
        Some(&capped),
        Some(&json!({"increment": "24h"}).to_string()),
        &[],
    );
    assert_eq!(renewed.status, 200, "{}", renewed.text);
    let ttl = renewed.json["auth"]["lease_duration"].as_u64().unwrap();
    assert!(ttl <= 1200, "renewed past the role's explicit max: {ttl}");

    // Not renewable, three uses at most (a request for more gets the role's).
    let fixed_reply = from_role(&coffer, &creator, "fixed", json!({"num_uses": 10}));
    let fixed = client_token(&fixed_reply);
    assert_eq!(fixed_reply.json["auth"]["renewable"], json!(false));
    assert_eq!(fixed_reply.json["auth"]["num_uses"], json!(3));
    let renew = coffer.raw(
        "PUT",
        "auth/token/renew-self",
        Some(&fixed),
        Some("{}"),
        &[],
    );
    assert_eq!(renew.status, 400, "{}", renew.text);
}

#[test]
fn malformed_role_writes_are_a_400_and_store_nothing() {
    let coffer = server();
    let long = "r".repeat(200);
    let cases = [
        ("ops", json!({"token_type": "batch"}), "token_type"),
        ("ops", json!({"token_type": "weird"}), "token_type"),
        ("ops", json!({"token_type": 7}), "token_type"),
        ("ops", json!({"token_type": null}), "token_type"),
        ("ops", json!({"orphan": "perhaps"}), "orphan"),
        ("ops", json!({"renewable": [true]}), "renewable"),
        ("ops", json!({"token_period": "forever"}), "token_period"),
        ("ops", json!({"period": 1e20}), "period"),
        ("ops", json!({"token_num_uses": -1}), "token_num_uses"),
        ("ops", json!({"token_num_uses": "many"}), "token_num_uses"),
        (
            "ops",
            json!({"allowed_policies": {"a": 1}}),
            "allowed_policies",
        ),
        (
            "ops",
            json!({"disallowed_policies": [[1]]}),
            "disallowed_policies",
        ),
        (
            "ops",
            json!({"allowed_policies": ["x".repeat(300)]}),
            "allowed_policies",
        ),
        ("ops", json!({"path_suffix": "../../x"}), "path_suffix"),
        ("ops", json!({"path_suffix": "a b"}), "path_suffix"),
        (
            "ops",
            json!({"token_bound_cidrs": ["10.0.0.0/8"]}),
            "token_bound_cidrs",
        ),
        (long.as_str(), json!({}), "role name"),
        ("-dash", json!({}), "role name"),
        ("a%2Fb", json!({}), "role name"),
    ];
    for (name, body, mentions) in &cases {
        let reply = coffer.call(
            "POST",
            &format!("auth/token/roles/{name}"),
            Some(body.clone()),
        );
        assert_eq!(reply.status, 400, "{name} {body}: {}", reply.text);
        assert!(
            reply.errors().contains(mentions),
            "{name} {body}: the message does not name {mentions}: {}",
            reply.text
        );
    }
    assert!(
        coffer.list("auth/token/roles").is_empty(),
        "a refused role was stored"
    );
    for method in ["GET", "DELETE"] {
        let reply = coffer.call(method, &format!("auth/token/roles/{long}"), None);
        assert_eq!(reply.status, 400, "{method}: {}", reply.text);
        // Past the HTTP edge's URI limit, the edge refuses it first.
        let huge = coffer.call(
            method,
            &format!("auth/token/roles/{}", "r".repeat(100_000)),
            None,
        );
        assert!(
            matches!(huge.status, 400 | 414),
            "{method}: {}",
            huge.status
        );
    }
    let create_huge = coffer.call(
        "POST",
        &format!("auth/token/create/{long}"),
        Some(json!({})),
    );
    assert_eq!(create_huge.status, 400, "{}", create_huge.text);

    // A bad update leaves the stored role as it was.
    role(
        &coffer,
        "ops",
        json!({"allowed_policies": ["a"], "token_period": "1h"}),
    );
    let bad = coffer.call(
        "POST",
        "auth/token/roles/ops",
        Some(json!({"allowed_policies": ["b"], "token_type": "batch"})),
    );
    assert_eq!(bad.status, 400, "{}", bad.text);
    let read = coffer.call("GET", "auth/token/roles/ops", None);
    assert_eq!(read.data()["allowed_policies"], json!(["a"]));
    // An update keeps what it does not mention; unknown fields are reported, not kept.
    let update = coffer.call(
        "POST",
        "auth/token/roles/ops",
        Some(json!({"orphan": true, "colour": "blue"})),
    );
    assert_eq!(update.status, 200, "{}", update.text);
    assert!(update.text.contains("colour"), "{}", update.text);
    let read = coffer.call("GET", "auth/token/roles/ops", None);
    assert_eq!(read.data()["allowed_policies"], json!(["a"]));
    assert_eq!(read.data()["token_period"], json!(3600));
    assert_eq!(read.data()["orphan"], json!(true));
    assert!(read.data().get("colour").is_none());
}

#[test]
fn a_new_role_needs_create_and_an_existing_one_update() {
    let coffer = server();
    coffer.policy(
        "create-only",
        r#"path "auth/token/roles/*" { capabilities = ["create"] }"#,
    );
    coffer.policy(
        "update-only",
        r#"path "auth/token/roles/*" { capabilities = ["update"] }"#,
    );
    let token = |policy: &str| {
        client_token(&create(
            &coffer,
            &coffer.token,
            json!({"ttl": "1h", "policies": [policy]}),
        ))
    };
    let (creator, updater) = (token("create-only"), token("update-only"));
    let write = |token: &str, body: Value| post(&coffer, Some(token), "auth/token/roles/ops", body);
    assert_eq!(write(&updater, json!({"orphan": true})).status, 403);
    assert_eq!(coffer.call("GET", "auth/token/roles/ops", None).status, 404);
    let made = write(&creator, json!({"allowed_policies": ["a"]}));
    assert_eq!(made.status, 204, "{}", made.text);
    assert_eq!(write(&creator, json!({"orphan": true})).status, 403);
    let updated = write(&updater, json!({"orphan": true}));
    assert_eq!(updated.status, 204, "{}", updated.text);
    let read = coffer.call("GET", "auth/token/roles/ops", None);
    assert_eq!(read.data()["orphan"], json!(true));
    assert_eq!(read.data()["allowed_policies"], json!(["a"]));
}

#[test]
fn roles_survive_a_restart_and_unsupported_role_fields_are_refused() {
    let mut coffer = Coffer::with_config(&temp_dir("roles-restart"), &fixtures_config());
    let keys = coffer.init_and_unseal(1, 1);
    role(
        &coffer,
        "kept",
        json!({"allowed_policies": ["a"], "token_period": "30m"}),
    );
    coffer.stop();
    coffer.start();
    coffer.unseal(&keys);
    let read = coffer.call("GET", "auth/token/roles/kept", None);
    assert_eq!(read.status, 200, "{}", read.text);
    assert_eq!(read.data()["token_period"], json!(1800));
    let made = from_role(&coffer, &coffer.token, "kept", json!({}));
    client_token(&made);
    assert_eq!(made.json["auth"]["lease_duration"], json!(1800));
    // Identity is not there yet: an entity alias is refused, not ignored.
    let aliased = from_role(
        &coffer,
        &coffer.token,
        "kept",
        json!({"entity_alias": "bob"}),
    );
    assert_eq!(aliased.status, 400, "{}", aliased.text);
    assert!(
        aliased.errors().contains("entity_alias"),
        "{}",
        aliased.text
    );
    let aliases = coffer.call(
        "POST",
        "auth/token/roles/kept",
        Some(json!({"allowed_entity_aliases": ["bob"]})),
    );
    assert_eq!(aliases.status, 400, "{}", aliases.text);
}

/// What Vault lets `sudo` on `auth/token/create` do without a root token: policies outside
/// the caller's, `no_parent`, `period`, a chosen `id`; the same token without `sudo`
/// gets a 400 for each and nothing is made.
#[test]
fn sudo_on_the_create_path_stands_in_for_root() {
    let coffer = server();
    coffer.policy(
        "token-admin",
        r#"path "auth/token/create" { capabilities = ["update", "sudo"] }"#,
    );
    coffer.policy(
        "token-maker",
        r#"path "auth/token/create" { capabilities = ["update"] }"#,
    );
    coffer.policy(
        "elsewhere",
        r#"path "secret/*" { capabilities = ["read"] }"#,
    );
    let admin = client_token(&create(
        &coffer,
        &coffer.token,
        json!({"ttl": "1h", "policies": ["token-admin"]}),
    ));
    let maker = client_token(&create(
        &coffer,
        &coffer.token,
        json!({"ttl": "1h", "policies": ["token-maker"]}),
    ));
    for body in [
        json!({"policies": ["elsewhere"], "ttl": "10m"}),
        json!({"no_parent": true, "ttl": "10m"}),
        json!({"period": "10m"}),
        json!({"id": "admin-chosen-id", "ttl": "10m"}),
    ] {
        let refused = create(&coffer, &maker, body.clone());
        assert_eq!(refused.status, 400, "{body}: {}", refused.text);
        let made = create(&coffer, &admin, body.clone());
        assert_eq!(made.status, 200, "{body}: {}", made.text);
    }
    let chosen = lookup_self(&coffer, "admin-chosen-id");
    assert_eq!(chosen.status, 200, "{}", chosen.text);
    // The orphan survives its maker's revocation.
    let orphan = client_token(&create(
        &coffer,
        &admin,
        json!({"no_parent": true, "ttl": "10m"}),
    ));
    assert_eq!(
        coffer
            .call("POST", "auth/token/revoke", Some(json!({"token": admin})))
            .status,
        204
    );
    assert_eq!(lookup_self(&coffer, &orphan).status, 200);
}
