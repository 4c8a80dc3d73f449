//! Vault wire-format conformance of the real server: envelopes, status codes, auth,
//! listing, mounts, tokens, and bad input that must change nothing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

use coffer_tests::{Coffer, fixtures_config, json, temp_dir};

fn fixtures() -> Coffer {
    let mut coffer = Coffer::with_config(&temp_dir("api"), &fixtures_config());
    coffer.init_and_unseal(1, 1);
    coffer
}

#[test]
fn read_returns_the_full_envelope_and_write_returns_204() {
    let coffer = Coffer::dev();
    let write = coffer.call("PUT", "secret/app", Some(json!({"user": "alice", "n": 3})));
    assert_eq!(write.status, 204, "{}", write.text);
    assert!(write.text.is_empty());
    let read = coffer.call("GET", "secret/app", None);
    assert_eq!(read.status, 200);
    assert_eq!(read.content_type, "application/json");
    for key in [
        "request_id",
        "lease_id",
        "renewable",
        "lease_duration",
        "data",
        "wrap_info",
        "warnings",
        "auth",
        "mount_type",
    ] {
        assert!(
            read.json.get(key).is_some(),
            "envelope lacks {key}: {}",
            read.text
        );
    }
    assert_eq!(read.json["lease_id"], json!(""));
    assert_eq!(read.json["lease_duration"], json!(0));
    assert_eq!(read.data(), &json!({"user": "alice", "n": 3}));
    assert_eq!(read.json["mount_type"], json!("kv"));
}

#[test]
fn auth_is_required_and_bearer_works() {
    let coffer = Coffer::dev();
    let none = coffer.raw("GET", "secret/x", None, None, &[]);
    assert_eq!(none.status, 403);
    assert_eq!(none.errors(), "permission denied");
    let bad = coffer.raw("GET", "sys/mounts", Some("not-a-token"), None, &[]);
    assert_eq!(bad.status, 403);
    assert!(bad.errors().contains("invalid token"));
    coffer.call("PUT", "secret/b", Some(json!({"k": "v"})));
    let bearer = coffer.raw(
        "GET",
        "secret/b",
        None,
        None,
        &[("Authorization", "Bearer root")],
    );
    assert_eq!(bearer.status, 200, "{}", bearer.text);
    let other_scheme = coffer.raw(
        "GET",
        "secret/b",
        None,
        None,
        &[("Authorization", "Basic cm9vdA==")],
    );
    assert_eq!(other_scheme.status, 403);
}

#[test]
fn list_via_verb_and_query_and_empty_list_is_404() {
    let coffer = Coffer::dev();
    assert_eq!(coffer.call("LIST", "secret/", None).status, 404);
    coffer.call("PUT", "secret/a", Some(json!({"k": "v"})));
    coffer.call("PUT", "secret/dir/b", Some(json!({"k": "v"})));
    for (method, path) in [
        ("LIST", "secret/"),
        ("GET", "secret/?list=true"),
        ("GET", "secret?list=True"),
        ("GET", "secret/?list=1"),
    ] {
        let reply = coffer.call(method, path, None);
        assert_eq!(reply.status, 200, "{method} {path}: {}", reply.text);
        assert_eq!(
            reply.data()["keys"],
            json!(["a", "dir/"]),
            "{method} {path}"
        );
    }
}

#[test]
fn unknown_routes_and_operations() {
    let coffer = fixtures();
    let unknown_mount = coffer.call("GET", "nowhere/x", None);
    assert_eq!(unknown_mount.status, 404);
    assert!(
        unknown_mount.errors().contains("no handler for route"),
        "{}",
        unknown_mount.text
    );
    let unknown_path = coffer.call("GET", "hostile/no-such-path", None);
    assert_eq!(unknown_path.status, 404);
    assert_eq!(unknown_path.errors(), "unsupported path");
    // A read the engine answers with no data is a 404 that says so.
    let empty = coffer.call("GET", "hostile/empty", None);
    assert_eq!(empty.status, 404);
    assert_eq!(empty.errors(), "the engine returned no data for this read");
    let wrong_op = coffer.call("DELETE", "hostile/ok", None);
    assert_eq!(wrong_op.status, 405);
    assert_eq!(wrong_op.errors(), "unsupported operation");
    let bad_method = coffer.raw("PATCH", "secret/x", Some(&coffer.token), Some("{}"), &[]);
    assert_eq!(bad_method.status, 405);
    // kv answers a missing key with Vault's bare 404; other engines say what is missing.
    let missing = coffer.call("GET", "secret/missing", None);
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json["errors"], json!([]), "{}", missing.text);
    let outside_api = coffer.raw("GET", "../etc/passwd", Some(&coffer.token), None, &[]);
    assert!(
        outside_api.status == 404 || outside_api.status == 400,
        "{}",
        outside_api.status
    );
}

#[test]
fn bad_input_is_a_4xx_with_a_message_and_changes_nothing() {
    let coffer = fixtures();
    coffer.call("PUT", "secret/keep", Some(json!({"v": "original"})));
    let token = coffer.token.clone();
    let malformed = coffer.raw("PUT", "secret/keep", Some(&token), Some("{\"v\": "), &[]);
    assert_eq!(malformed.status, 400);
    assert!(
        malformed.errors().contains("failed to parse JSON input"),
        "{}",
        malformed.text
    );
    let not_object = coffer.raw("PUT", "secret/keep", Some(&token), Some("[1,2]"), &[]);
    assert_eq!(not_object.status, 400);
    assert!(not_object.errors().contains("JSON object"));
    assert_eq!(
        coffer.call("GET", "secret/keep", None).data()["v"],
        json!("original")
    );

    let wrong_type = coffer.call("PUT", "hostile/typed", Some(json!({"count": "many"})));
    assert_eq!(wrong_type.status, 400);
    assert!(
        wrong_type.errors().contains("\"count\"") && wrong_type.errors().contains("integer"),
        "{}",
        wrong_type.text
    );
    let bad_duration = coffer.call(
        "PUT",
        "hostile/typed",
        Some(json!({"count": 1, "ttl": "forever"})),
    );
    assert_eq!(bad_duration.status, 400);
    assert!(
        bad_duration.errors().contains("invalid duration"),
        "{}",
        bad_duration.text
    );
    let missing = coffer.call("PUT", "hostile/typed", Some(json!({"flag": true})));
    assert_eq!(missing.status, 400);
    assert!(
        missing
            .errors()
            .contains("missing required field \"count\"")
    );
    // Lenient typing: strings for ints/bools/durations, unknown fields ignored.
    let lenient = coffer.call(
        "PUT",
        "hostile/typed",
        Some(json!({"count": "7", "flag": "true", "ttl": "2160h0m0s", "extra": 1})),
    );
    assert_eq!(lenient.status, 200, "{}", lenient.text);
    assert_eq!(
        lenient.data(),
        &json!({"count": 7, "flag": true, "ttl": 7_776_000})
    );
    let seven_days = coffer.call(
        "PUT",
        "hostile/typed",
        Some(json!({"count": 1, "ttl": "7d"})),
    );
    assert_eq!(seven_days.data()["ttl"], json!(604_800));

    let tune = coffer.call(
        "POST",
        "sys/mounts/secret/tune",
        Some(json!({"default_lease_ttl": "banana"})),
    );
    assert_eq!(tune.status, 400);
    let too_small_max = coffer.call(
        "POST",
        "sys/mounts/secret/tune",
        Some(json!({"default_lease_ttl": "2h", "max_lease_ttl": "1h"})),
    );
    assert_eq!(too_small_max.status, 400);
    assert!(
        too_small_max.errors().contains("max lease TTL"),
        "{}",
        too_small_max.text
    );
    assert_eq!(
        coffer.call("GET", "sys/mounts/secret/tune", None).data()["max_lease_ttl"],
        json!(2_764_800)
    );
}

#[test]
fn oversized_body_is_413() {
    let coffer = Coffer::dev();
    let body = format!("{{\"v\": \"{}\"}}", "x".repeat(33 << 20));
    let reply = coffer.raw("PUT", "secret/big", Some("root"), Some(&body), &[]);
    assert_eq!(reply.status, 413, "{}", reply.text);
    assert!(reply.errors().contains("limit"));
    assert_eq!(coffer.call("GET", "secret/big", None).status, 404);
}

#[test]
fn empty_and_null_bodies_are_accepted_on_writes() {
    let coffer = fixtures();
    for body in ["", "null", "{}", "  "] {
        let reply = coffer.raw("PUT", "hostile/typed", Some(&coffer.token), Some(body), &[]);
        // Accepted as "no fields": the engine's own check reports the missing field.
        assert_eq!(reply.status, 400, "body {body:?}: {}", reply.text);
        assert!(
            reply.errors().contains("missing required field"),
            "body {body:?}: {}",
            reply.text
        );
    }
}

#[test]
fn mounts_enable_list_tune_disable() {
    let coffer = Coffer::dev();
    let enable = coffer.call("POST", "sys/mounts/team/kv", Some(json!({"type": "kv", "description": "team secrets", "config": {"default_lease_ttl": "1h", "max_lease_ttl": 7200}})));
    assert_eq!(enable.status, 204, "{}", enable.text);
    let mounts = coffer.call("GET", "sys/mounts", None);
    assert_eq!(mounts.status, 200);
    let mount = &mounts.data()["team/kv/"];
    assert_eq!(mount["type"], json!("kv"));
    assert_eq!(mount["config"]["default_lease_ttl"], json!(3600));
    assert_eq!(mount["config"]["max_lease_ttl"], json!(7200));
    assert!(mount["accessor"].as_str().unwrap().starts_with("kv_"));
    assert_eq!(
        mounts.json["team/kv/"],
        mounts.data()["team/kv/"],
        "sys/ responses copy data to the top level"
    );

    let conflict = coffer.call(
        "POST",
        "sys/mounts/team/kv",
        Some(json!({"type": "database"})),
    );
    assert_eq!(conflict.status, 400);
    assert!(
        conflict
            .errors()
            .contains("path is already in use at team/kv/"),
        "{}",
        conflict.text
    );
    let same_again = coffer.call("POST", "sys/mounts/team/kv", Some(json!({"type": "kv"})));
    assert_eq!(
        same_again.status, 200,
        "re-enabling the same engine is a no-op: {}",
        same_again.text
    );
    assert!(
        same_again.json["warnings"][0]
            .as_str()
            .unwrap()
            .contains("left unchanged")
    );
    assert_eq!(
        coffer.call("GET", "sys/mounts", None).data()["team/kv/"]["config"]["default_lease_ttl"],
        json!(3600)
    );
    let nested = coffer.call(
        "POST",
        "sys/mounts/team/kv/inner",
        Some(json!({"type": "kv"})),
    );
    assert_eq!(nested.status, 400);
    let unknown = coffer.call(
        "POST",
        "sys/mounts/x",
        Some(json!({"type": "no-such-engine"})),
    );
    assert_eq!(unknown.status, 400);
    assert!(unknown.errors().contains("plugin not found"));
    let reserved = coffer.call("POST", "sys/mounts/sys/evil", Some(json!({"type": "kv"})));
    assert_eq!(reserved.status, 400);
    let no_type = coffer.call("POST", "sys/mounts/y", Some(json!({})));
    assert_eq!(no_type.status, 400);

    let tune = coffer.call(
        "POST",
        "sys/mounts/team/kv/tune",
        Some(json!({"max_lease_ttl": "87600h"})),
    );
    assert_eq!(tune.status, 204);
    let tuned = coffer.call("GET", "sys/mounts/team/kv/tune", None);
    assert_eq!(tuned.data()["max_lease_ttl"], json!(87_600 * 3600));
    assert_eq!(tuned.data()["default_lease_ttl"], json!(3600));

    coffer.call("PUT", "team/kv/s", Some(json!({"k": "v"})));
    assert_eq!(
        coffer.call("DELETE", "sys/mounts/team/kv", None).status,
        204
    );
    assert_eq!(coffer.call("GET", "team/kv/s", None).status, 404);
    assert!(
        coffer
            .call("GET", "sys/mounts", None)
            .data()
            .get("team/kv/")
            .is_none()
    );
    // Re-enabling gives a fresh, empty mount: disable deleted its storage.
    coffer.call("POST", "sys/mounts/team/kv", Some(json!({"type": "kv"})));
    assert_eq!(coffer.call("GET", "team/kv/s", None).status, 404);
    assert_eq!(
        coffer
            .call("DELETE", "sys/mounts/never-mounted", None)
            .status,
        204
    );
}

#[test]
fn mounts_are_isolated_from_each_other() {
    let coffer = Coffer::dev();
    coffer.call("POST", "sys/mounts/other", Some(json!({"type": "kv"})));
    coffer.call(
        "PUT",
        "secret/shared-name",
        Some(json!({"owner": "secret"})),
    );
    assert_eq!(coffer.call("GET", "other/shared-name", None).status, 404);
    for target in [
        "/v1/other/../secret/shared-name",
        "/v1/other/%2E%2E/secret/shared-name",
    ] {
        let (status, body) = coffer_tests::raw_get(&coffer.addr, target, &coffer.token);
        assert_eq!(status, 400, "{target}: {body}");
        assert!(body.contains("not allowed"), "{body}");
    }
}

#[test]
fn tokens_create_lookup_renew_revoke() {
    let coffer = Coffer::dev();
    let created = coffer.call("POST", "auth/token/create", Some(json!({"policies": "app,ops", "ttl": "1h", "display_name": "ci", "meta": {"team": "a"}})));
    assert_eq!(created.status, 200, "{}", created.text);
    let auth = &created.json["auth"];
    let token = auth["client_token"].as_str().unwrap().to_string();
    assert_eq!(auth["policies"], json!(["app", "default", "ops"]));
    assert_eq!(auth["lease_duration"], json!(3600));
    assert_eq!(auth["renewable"], json!(true));
    for key in [
        "accessor",
        "token_policies",
        "entity_id",
        "token_type",
        "orphan",
    ] {
        assert!(auth.get(key).is_some(), "auth lacks {key}");
    }
    let lookup = coffer.raw("GET", "auth/token/lookup-self", Some(&token), None, &[]);
    assert_eq!(lookup.status, 200);
    assert_eq!(lookup.data()["display_name"], json!("token-ci"));
    assert_eq!(lookup.data()["meta"], json!({"team": "a"}));
    assert!(lookup.data()["ttl"].as_u64().unwrap() <= 3600);
    let renewed = coffer.raw(
        "PUT",
        "auth/token/renew-self",
        Some(&token),
        Some("{\"increment\": \"2h\"}"),
        &[],
    );
    assert_eq!(renewed.status, 200, "{}", renewed.text);
    assert_eq!(renewed.json["auth"]["lease_duration"], json!(7200));
    let revoke = coffer.call("POST", "auth/token/revoke", Some(json!({"token": token})));
    assert_eq!(revoke.status, 204);
    assert_eq!(
        coffer
            .raw("GET", "auth/token/lookup-self", Some(&token), None, &[])
            .status,
        403
    );
    let bad_ttl = coffer.call("POST", "auth/token/create", Some(json!({"ttl": "soon"})));
    assert_eq!(bad_ttl.status, 400);
}

#[test]
fn seal_makes_everything_but_status_503() {
    let mut coffer = Coffer::with_config(&temp_dir("seal"), &fixtures_config());
    let keys = coffer.init_and_unseal(3, 2);
    assert_eq!(coffer.call("GET", "sys/health", None).status, 200);
    assert_eq!(coffer.call("PUT", "sys/seal", None).status, 204);
    let sealed = coffer.call("GET", "secret/x", None);
    assert_eq!(sealed.status, 503);
    assert_eq!(sealed.errors(), "Vault is sealed");
    assert_eq!(coffer.call("GET", "sys/mounts", None).status, 503);
    let health = coffer.call("GET", "sys/health", None);
    assert_eq!(health.status, 503);
    assert_eq!(health.json["sealed"], json!(true));
    assert_eq!(health.json["performance_standby"], json!(false));
    assert_eq!(
        coffer.call("GET", "sys/health?sealedcode=200", None).status,
        200
    );
    let status = coffer.call("GET", "sys/seal-status", None);
    assert_eq!(status.json["t"], json!(2));
    assert_eq!(status.json["n"], json!(3));
    // A wrong key does not unseal; the right ones do.
    let wrong = coffer.call("PUT", "sys/unseal", Some(json!({"key": "zz-not-a-key"})));
    assert_eq!(wrong.status, 400);
    coffer.unseal(&keys[1..3]);
    assert_eq!(coffer.call("GET", "sys/mounts", None).status, 200);
    let again = coffer.call(
        "PUT",
        "sys/init",
        Some(json!({"secret_shares": 1, "secret_threshold": 1})),
    );
    assert_eq!(again.status, 400);
}

#[test]
fn uninitialized_health_is_501() {
    let coffer = Coffer::with_config(&temp_dir("uninit"), &fixtures_config());
    assert_eq!(coffer.call("GET", "sys/health", None).status, 501);
    assert_eq!(
        coffer.call("GET", "sys/init", None).json["initialized"],
        json!(false)
    );
    assert_eq!(
        coffer.raw("HEAD", "sys/health", None, None, &[]).status,
        501
    );
    assert_eq!(coffer.call("GET", "secret/x", None).status, 503);
}

#[test]
fn list_skips_a_folder_holding_the_highest_code_point_once() {
    let coffer = Coffer::dev();
    // U+10FFFF, percent-encoded: the character a folder skip once used as its upper bound.
    let edge = coffer.call("POST", "secret/a/%F4%8F%BF%BFz", Some(json!({"v": 1})));
    assert_eq!(edge.status, 204, "{}", edge.text);
    let plain = coffer.call("POST", "secret/b", Some(json!({"v": 1})));
    assert_eq!(plain.status, 204, "{}", plain.text);
    let list = coffer.call("LIST", "secret/", None);
    assert_eq!(list.status, 200, "{}", list.text);
    assert_eq!(list.data()["keys"], json!(["a/", "b"]));
    let inside = coffer.call("LIST", "secret/a/", None);
    assert_eq!(inside.data()["keys"], json!(["\u{10FFFF}z"]));
}

/// An engine's not-found names what is missing (`{"errors": ["no role named ..."]}`).
#[test]
fn engine_not_found_says_what_is_missing() {
    let coffer = Coffer::dev();
    for (path, message) in [
        ("pki/roles/none", r#"no role named "none""#),
        ("pki/cert/ca", "no default issuer"),
        ("database/roles/none", r#"no role named "none""#),
        (
            "database/static-roles/none",
            r#"no static role named "none""#,
        ),
    ] {
        let reply = coffer.call("GET", path, None);
        assert_eq!(reply.status, 404, "{path}: {}", reply.text);
        assert!(reply.errors().contains(message), "{path}: {}", reply.text);
    }
}

/// The value of the sample `name{labels}` (labels as written, in order) in a Prometheus
/// text exposition; 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn metrics_count_requests_expiries_and_storage_commits_in_prometheus_format() {
    let dir = temp_dir("metrics");
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let mut coffer = Coffer::with_config(&dir, &fixtures_config());
    coffer.init_and_unseal(1, 1);
    // A token is needed (and a policy); without one, 403.
    assert_eq!(
        coffer
            .raw("GET", "sys/metrics?format=prometheus", None, None, &[])
            .status,
        403
    );
    let no_format = coffer.call("GET", "sys/metrics", None);
    assert_eq!(no_format.status, 400, "{}", no_format.text);
    let scrape = |coffer: &Coffer| {
        let reply = coffer.raw(
            "GET",
            "sys/metrics?format=prometheus",
            Some(&coffer.token),
            None,
            &[],
        );
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert!(
            reply.content_type.starts_with("text/plain"),
            "{}",
            reply.content_type
        );
        reply.text
    };
    let before = scrape(&coffer);
    for i in 0..3 {
        assert_eq!(
            coffer
                .call("PUT", &format!("secret/m{i}"), Some(json!({"v": i})))
                .status,
            204
        );
    }
    assert_eq!(coffer.call("GET", "secret/missing", None).status, 404);
    let lease = coffer.call("GET", "leasing/creds/app?ttl=1s", None);
    assert_eq!(lease.status, 200, "{}", lease.text);
    assert!(coffer_tests::eventually(
        std::time::Duration::from_secs(10),
        || {
            sample(&scrape(&coffer), "coffer_lease_expiries_total")
                > sample(&before, "coffer_lease_expiries_total")
        }
    ));
    let after = scrape(&coffer);
    let writes = "coffer_request_duration_seconds_count{mount=\"secret/\",operation=\"write\",status=\"2xx\"}";
    assert_eq!(
        sample(&after, writes) - sample(&before, writes),
        3.0,
        "{after}"
    );
    let misses = "coffer_request_duration_seconds_count{mount=\"secret/\",operation=\"read\",status=\"4xx\"}";
    assert_eq!(sample(&after, misses), 1.0, "{after}");
    assert!(
        sample(&after, "coffer_storage_commit_duration_seconds_count")
            > sample(&before, "coffer_storage_commit_duration_seconds_count")
    );
    assert!(
        sample(
            &after,
            "coffer_engine_call_duration_seconds_count{mount=\"leasing/\"}"
        ) >= 2.0,
        "{after}"
    );
    assert_eq!(sample(&after, "coffer_ha_active"), 1.0);
    // Gauges counted from storage: the expired lease is gone, a live one counts.
    assert_eq!(
        sample(&after, "coffer_leases_live{mount=\"leasing/\"}"),
        0.0,
        "{after}"
    );
    let held = coffer.call("GET", "leasing/creds/app?ttl=1h", None);
    assert_eq!(held.status, 200, "{}", held.text);
    let now = scrape(&coffer);
    assert_eq!(
        sample(&now, "coffer_leases_live{mount=\"leasing/\"}"),
        1.0,
        "{now}"
    );
    assert!(sample(&now, "coffer_tokens_live") >= 1.0, "{now}");
    assert!(now.contains("# TYPE coffer_sql_pool_wait_seconds histogram"));
    assert_eq!(sample(&after, "coffer_sealed"), 0.0);
    // No label ever carries a path below a mount, a token or a lease id.
    assert!(
        !after.contains("secret/m1")
            && !after.contains("leasing/creds")
            && !after.contains(&coffer.token)
    );
    coffer.stop();

    // With `unauthenticated_metrics_access`, a scraper needs no token.
    let open = fixtures_config().replace(
        "[listener]\naddress = \"{addr}\"",
        "[listener]\naddress = \"{addr}\"\nunauthenticated_metrics_access = true",
    );
    let dir = temp_dir("metrics-open");
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let mut coffer = Coffer::with_config(&dir, &open);
    coffer.init_and_unseal(1, 1);
    let anonymous = coffer.raw("GET", "sys/metrics?format=prometheus", None, None, &[]);
    assert_eq!(anonymous.status, 200, "{}", anonymous.text);
    assert!(
        anonymous
            .text
            .contains("# TYPE coffer_request_duration_seconds histogram")
    );
    coffer.stop();
}
