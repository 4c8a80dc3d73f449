//! The token tree, as Vault has it: children die with their parents (and take their leases
//! along), never outlive them, and every lifetime knob is bounded or enforced. Driven over
//! HTTP against the real binary with the `leasing` fixture, whose leases are visible in
//! its own storage (`issued/`, `revoked/`).
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
    // A non-root token cannot leave the tree.
    for (path, body) in [
        ("auth/token/create-orphan", json!({})),
        ("auth/token/create", json!({"no_parent": true})),
        ("auth/token/create", json!({"period": "1h"})),
    ] {
        let reply = coffer.raw("POST", path, Some(&parent), Some(&body.to_string()), &[]);
        assert_eq!(reply.status, 403, "{path} {body}: {}", reply.text);
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
