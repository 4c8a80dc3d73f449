//! The shared lease scheduler, end to end through a real WASM engine (the `leasing`
//! fixture, whose "credentials" live in its own storage): ids, lookup, list, renew math,
//! expiry within a second, revoke, segment-based revoke-prefix, retry with backoff,
//! irrevocable leases and revoke-force, token revocation, and restarts.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

use std::time::Duration;

use coffer_tests::{Coffer, Value, eventually, fixtures_config, json, temp_dir};

fn server() -> (Coffer, Vec<String>) {
    let mut coffer = Coffer::with_config(&temp_dir("leases"), &fixtures_config());
    let keys = coffer.init_and_unseal(1, 1);
    (coffer, keys)
}

fn issue(coffer: &Coffer, role: &str, query: &str) -> (String, String) {
    let reply = coffer.call("GET", &format!("leasing/creds/{role}{query}"), None);
    assert_eq!(reply.status, 200, "{}", reply.text);
    (
        reply.json["lease_id"].as_str().unwrap().to_string(),
        reply.data()["username"].as_str().unwrap().to_string(),
    )
}

#[test]
fn leased_response_lookup_and_list() {
    let (coffer, _) = server();
    let reply = coffer.call("GET", "leasing/creds/app?ttl=90", None);
    let lease_id = reply.json["lease_id"].as_str().unwrap();
    let suffix = lease_id
        .strip_prefix("leasing/creds/app/")
        .expect("lease id is <path>/<random>");
    assert_eq!(suffix.len(), 24);
    assert!(suffix.chars().all(|c| c.is_ascii_alphanumeric()));
    assert_eq!(reply.json["renewable"], json!(true));
    assert_eq!(reply.json["lease_duration"], json!(90));
    let lookup = coffer.call(
        "PUT",
        "sys/leases/lookup",
        Some(json!({"lease_id": lease_id})),
    );
    assert_eq!(lookup.status, 200, "{}", lookup.text);
    assert_eq!(lookup.data()["id"], json!(lease_id));
    assert!(lookup.data()["ttl"].as_u64().unwrap() <= 90);
    assert!(
        lookup.data()["expire_time"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert_eq!(coffer.list("sys/leases/lookup/leasing/"), vec!["creds/"]);
    assert_eq!(
        coffer.list("sys/leases/lookup/leasing/creds/app/"),
        vec![suffix.to_string()]
    );
    assert_eq!(
        coffer
            .call("LIST", "sys/leases/lookup/nothing/", None)
            .status,
        404
    );
    let missing = coffer.call(
        "PUT",
        "sys/leases/lookup",
        Some(json!({"lease_id": "leasing/creds/app/nope"})),
    );
    assert_eq!(missing.status, 400);
    assert_eq!(missing.errors(), "invalid lease");
    // Mount tuning caps the TTL (max 2h here) with Vault's warning.
    let capped = coffer.call("GET", "leasing/creds/app?ttl=10h", None);
    assert_eq!(capped.json["lease_duration"], json!(7200));
    assert!(
        capped.json["warnings"][0]
            .as_str()
            .unwrap()
            .contains("exceeded the effective max_ttl"),
        "{}",
        capped.text
    );
    // No TTL asked: the mount default (1h).
    assert_eq!(
        coffer.call("GET", "leasing/creds/app", None).json["lease_duration"],
        json!(3600)
    );
}

#[test]
fn expired_leases_are_revoked_within_a_second() {
    let (coffer, _) = server();
    let (lease, user) = issue(&coffer, "short", "?ttl=2");
    assert_eq!(coffer.list("leasing/issued/"), vec![user.clone()]);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        coffer.list("leasing/issued/"),
        vec![user.clone()],
        "revoked too early"
    );
    assert!(
        eventually(Duration::from_millis(1800), || coffer
            .list("leasing/revoked/")
            == vec![user.clone()]),
        "not revoked within a second of expiry"
    );
    assert!(coffer.list("leasing/issued/").is_empty());
    assert_eq!(
        coffer
            .call("PUT", "sys/leases/lookup", Some(json!({"lease_id": lease})))
            .status,
        400
    );
}

#[test]
fn renew_counts_from_now_and_is_capped_at_max_ttl() {
    let (coffer, _) = server();
    let (lease, user) = issue(&coffer, "renewing", "?ttl=10&max_ttl=30");
    let renewed = coffer.call(
        "PUT",
        "sys/leases/renew",
        Some(json!({"lease_id": lease, "increment": "20s"})),
    );
    assert_eq!(renewed.status, 200, "{}", renewed.text);
    assert_eq!(renewed.json["lease_id"], json!(lease));
    assert_eq!(renewed.json["renewable"], json!(true));
    assert_eq!(renewed.json["lease_duration"], json!(20));
    assert_eq!(
        coffer.list("leasing/renewed/"),
        vec![user],
        "the engine's renew hook ran"
    );
    let capped = coffer.call(
        "PUT",
        "sys/leases/renew",
        Some(json!({"lease_id": lease, "increment": 3600})),
    );
    assert_eq!(capped.status, 200);
    let duration = capped.json["lease_duration"].as_u64().unwrap();
    assert!(
        (28..=30).contains(&duration),
        "capped at issue + max_ttl, got {duration}"
    );
    assert!(
        capped.json["warnings"][0]
            .as_str()
            .unwrap()
            .contains("exceeded the effective max_ttl")
    );
    // hvac sends increment null; the URL form works too.
    let by_url = coffer.call(
        "PUT",
        &format!("sys/leases/renew/{lease}"),
        Some(json!({"increment": null})),
    );
    assert_eq!(by_url.status, 200, "{}", by_url.text);

    assert_eq!(
        coffer
            .call("PUT", "sys/leases/revoke", Some(json!({"lease_id": lease})))
            .status,
        204
    );
    let after = coffer.call("PUT", "sys/leases/renew", Some(json!({"lease_id": lease})));
    assert_eq!(after.status, 400);
    assert_eq!(after.errors(), "lease not found");
    assert_eq!(
        coffer
            .call("PUT", "sys/leases/renew", Some(json!({})))
            .errors(),
        "lease_id must be specified"
    );
    // Revoking an unknown lease succeeds (idempotent).
    assert_eq!(
        coffer
            .call("PUT", "sys/leases/revoke", Some(json!({"lease_id": lease})))
            .status,
        204
    );
}

#[test]
fn revoke_prefix_takes_whole_segments_only() {
    let (coffer, _) = server();
    let (_, app1) = issue(&coffer, "app", "");
    let (_, app2) = issue(&coffer, "app", "");
    let (apps_lease, apps) = issue(&coffer, "apps", "");
    assert_eq!(
        coffer
            .call("PUT", "sys/leases/revoke-prefix/leasing/creds/ap", None)
            .status,
        204
    );
    assert_eq!(
        coffer.list("leasing/revoked/"),
        Vec::<String>::new(),
        "a partial segment matched"
    );
    assert_eq!(
        coffer
            .call("PUT", "sys/leases/revoke-prefix/leasing/creds/app", None)
            .status,
        204
    );
    let mut revoked = coffer.list("leasing/revoked/");
    revoked.sort();
    let mut expected = vec![app1, app2];
    expected.sort();
    assert_eq!(revoked, expected);
    assert_eq!(coffer.list("leasing/issued/"), vec![apps]);
    assert_eq!(
        coffer
            .call(
                "PUT",
                "sys/leases/lookup",
                Some(json!({"lease_id": apps_lease}))
            )
            .status,
        200
    );
}

#[test]
fn failed_revocations_retry_then_succeed() {
    let (coffer, _) = server();
    coffer.call("PUT", "leasing/control", Some(json!({"fail_revoke": true})));
    let (lease, user) = issue(&coffer, "flaky", "?ttl=1");
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(coffer.list("leasing/issued/"), vec![user.clone()]);
    let lookup = coffer.call("PUT", "sys/leases/lookup", Some(json!({"lease_id": lease})));
    assert_eq!(
        lookup.status, 200,
        "a failed revocation must keep the lease: {}",
        lookup.text
    );
    let manual = coffer.call("PUT", "sys/leases/revoke", Some(json!({"lease_id": lease})));
    assert_eq!(manual.status, 400);
    assert!(
        manual.errors().contains("target system unavailable"),
        "{}",
        manual.text
    );
    coffer.call(
        "PUT",
        "leasing/control",
        Some(json!({"fail_revoke": false})),
    );
    assert!(
        eventually(Duration::from_secs(15), || coffer.list("leasing/revoked/")
            == vec![user.clone()]),
        "the retry never revoked it:\n{}",
        coffer.log_text()
    );
}

#[test]
fn exhausted_retries_make_a_lease_irrevocable_until_forced() {
    let (coffer, _) = server();
    coffer.call("PUT", "leasing/control", Some(json!({"fail_revoke": true})));
    let (lease, user) = issue(&coffer, "doomed", "?ttl=1");
    let listed = |coffer: &Coffer| -> Vec<Value> {
        coffer
            .call("GET", "sys/leases?type=irrevocable", None)
            .data()["leases"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    assert!(
        eventually(Duration::from_secs(20), || !listed(&coffer).is_empty()),
        "never marked irrevocable"
    );
    let entry = &listed(&coffer)[0];
    assert_eq!(entry["lease_id"], json!(lease));
    assert!(
        entry["error"]
            .as_str()
            .unwrap()
            .contains("target system unavailable")
    );
    assert_eq!(
        coffer
            .call("PUT", &format!("sys/leases/revoke-force/{lease}"), None)
            .status,
        204
    );
    assert!(listed(&coffer).is_empty());
    assert_eq!(
        coffer
            .call("PUT", "sys/leases/lookup", Some(json!({"lease_id": lease})))
            .status,
        400
    );
    assert_eq!(
        coffer.list("leasing/issued/"),
        vec![user],
        "force deletes the entry without the engine"
    );
}

#[test]
fn revoking_a_token_revokes_its_leases() {
    let (coffer, _) = server();
    let child = coffer.call("POST", "auth/token/create", Some(json!({"ttl": "1h"})));
    let token = child.json["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_string();
    let reply = coffer.raw("GET", "leasing/creds/owned", Some(&token), None, &[]);
    assert_eq!(reply.status, 200);
    let user = reply.data()["username"].as_str().unwrap().to_string();
    let (_, root_user) = issue(&coffer, "rootowned", "");
    assert_eq!(
        coffer
            .call("POST", "auth/token/revoke", Some(json!({"token": token})))
            .status,
        204
    );
    assert_eq!(coffer.list("leasing/revoked/"), vec![user]);
    assert_eq!(coffer.list("leasing/issued/"), vec![root_user]);
}

/// A child token with `ttl` and the user of a lease created with it.
fn token_with_lease(coffer: &Coffer, ttl: &str) -> (String, String) {
    let child = coffer.call("POST", "auth/token/create", Some(json!({ "ttl": ttl })));
    assert_eq!(child.status, 200, "{}", child.text);
    let token = child.json["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_string();
    let reply = coffer.raw("GET", "leasing/creds/tokenbound", Some(&token), None, &[]);
    assert_eq!(reply.status, 200, "{}", reply.text);
    let user = reply.data()["username"].as_str().unwrap().to_string();
    (token, user)
}

#[test]
fn expiring_tokens_take_their_leases_with_them() {
    let (coffer, _) = server();
    let (token, user) = token_with_lease(&coffer, "2s");
    assert!(
        eventually(Duration::from_secs(5), || coffer.list("leasing/revoked/")
            == vec![user.clone()]),
        "the token's lease outlived the token"
    );
    assert_eq!(
        coffer
            .raw("GET", "auth/token/lookup-self", Some(&token), None, &[])
            .status,
        403
    );
}

#[test]
fn a_renewed_token_keeps_its_leases_until_its_new_expiry() {
    let (coffer, _) = server();
    let (token, user) = token_with_lease(&coffer, "2s");
    let renewed = coffer.raw(
        "PUT",
        "auth/token/renew-self",
        Some(&token),
        Some(&json!({"increment": "6s"}).to_string()),
        &[],
    );
    assert_eq!(renewed.status, 200, "{}", renewed.text);
    // Past the original expiry: the token and its lease are still there.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        coffer
            .raw("GET", "auth/token/lookup-self", Some(&token), None, &[])
            .status,
        200
    );
    assert!(
        coffer.list("leasing/revoked/").is_empty(),
        "revoked at the old expiry"
    );
    // At the new expiry the scheduler takes both.
    assert!(
        eventually(Duration::from_secs(6), || coffer.list("leasing/revoked/")
            == vec![user.clone()]),
        "the renewed token's lease outlived the token"
    );
}

#[test]
fn leases_survive_restart_and_expired_ones_are_revoked_after_start() {
    let (mut coffer, unseal_keys) = server();
    let (_, short) = issue(&coffer, "short", "?ttl=1");
    let (_, soon) = issue(&coffer, "soon", "?ttl=8");
    let (long_lease, long) = issue(&coffer, "long", "?ttl=3600");
    coffer.stop();
    std::thread::sleep(Duration::from_secs(2));
    coffer.start();
    coffer.unseal(&unseal_keys);
    assert!(
        eventually(Duration::from_secs(3), || coffer.list("leasing/revoked/")
            == vec![short.clone()]),
        "a lease that expired while the server was down was not revoked after start"
    );
    let mut issued = coffer.list("leasing/issued/");
    issued.sort();
    let mut expected = vec![long.clone(), soon.clone()];
    expected.sort();
    assert_eq!(issued, expected);
    assert!(
        eventually(Duration::from_secs(8), || coffer.list("leasing/issued/")
            == vec![long.clone()]),
        "a live lease did not revoke on time after the restart"
    );
    assert_eq!(
        coffer
            .call(
                "PUT",
                "sys/leases/lookup",
                Some(json!({"lease_id": long_lease}))
            )
            .status,
        200
    );
}

#[test]
fn a_crash_loses_no_lease() {
    let (mut coffer, unseal_keys) = server();
    let (lease, user) = issue(&coffer, "crash", "?ttl=3");
    coffer.kill();
    coffer.start();
    coffer.unseal(&unseal_keys);
    assert_eq!(
        coffer
            .call("PUT", "sys/leases/lookup", Some(json!({"lease_id": lease})))
            .status,
        200
    );
    assert!(eventually(Duration::from_secs(6), || coffer
        .list("leasing/revoked/")
        == vec![user.clone()]));
}

#[test]
fn disable_fails_and_keeps_the_mount_when_a_lease_cannot_be_revoked() {
    let (coffer, _) = server();
    let (lease, user) = issue(&coffer, "app", "");
    let failing = coffer.call(
        "POST",
        "leasing/control",
        Some(json!({"fail_revoke": true})),
    );
    assert_eq!(failing.status, 204, "{}", failing.text);
    let refused = coffer.call("DELETE", "sys/mounts/leasing", None);
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert!(
        refused.errors().contains("cannot disable leasing/")
            && refused.errors().contains("target system unavailable"),
        "{}",
        refused.text
    );
    // Still mounted, still serving, the lease still there.
    assert_eq!(coffer.call("GET", "sys/mounts/leasing", None).status, 200);
    assert_eq!(coffer.list("leasing/issued/"), vec![user.clone()]);
    let lookup = coffer.call("PUT", "sys/leases/lookup", Some(json!({"lease_id": lease})));
    assert_eq!(lookup.status, 200, "{}", lookup.text);
    let (second, _) = issue(&coffer, "app", "");
    // Once the target is back, the disable goes through and takes every lease with it.
    coffer.call(
        "POST",
        "leasing/control",
        Some(json!({"fail_revoke": false})),
    );
    let disabled = coffer.call("DELETE", "sys/mounts/leasing", None);
    assert_eq!(disabled.status, 204, "{}", disabled.text);
    for id in [lease, second] {
        let gone = coffer.call("PUT", "sys/leases/lookup", Some(json!({"lease_id": id})));
        assert_eq!(gone.status, 400, "{}", gone.text);
    }
    assert!(coffer.list("sys/leases/lookup/leasing/").is_empty());
    let unrouted = coffer.call("GET", "leasing/issued/", None);
    assert_eq!(unrouted.status, 404);
}

#[test]
fn disable_fences_the_mount_then_waits_for_requests_already_running() {
    let (coffer, _) = server();
    let (started, finished) = std::thread::scope(|scope| {
        // Runs until the hostile mount's 1 s call timeout stops it.
        let running = scope.spawn(|| {
            let reply = coffer.call("GET", "hostile/loop", None);
            (reply, std::time::Instant::now())
        });
        std::thread::sleep(Duration::from_millis(400));
        let disabling = scope.spawn(|| {
            let reply = coffer.call("DELETE", "sys/mounts/hostile", None);
            (reply, std::time::Instant::now())
        });
        std::thread::sleep(Duration::from_millis(250));
        let fenced = coffer.call("GET", "hostile/ok", None);
        assert_eq!(fenced.status, 404, "{}", fenced.text);
        assert!(
            fenced.errors().contains("no handler for route")
                && fenced.errors().contains("is being disabled"),
            "{}",
            fenced.text
        );
        (running.join().unwrap(), disabling.join().unwrap())
    });
    let ((call, call_done), (disable, disable_done)) = (started, finished);
    assert_eq!(disable.status, 204, "{}", disable.text);
    assert_eq!(call.status, 500, "{}", call.text);
    assert!(
        call.errors().contains("time limit"),
        "the running call ends as it would have anyway: {}",
        call.text
    );
    // (Slack for the two client threads reading their replies; without the drain the
    // disable returned half a second before the running call.)
    assert!(
        disable_done + Duration::from_millis(100) >= call_done,
        "the disable returned while a request on the mount was still running"
    );
    assert_eq!(coffer.call("GET", "sys/mounts/hostile", None).status, 404);
}
