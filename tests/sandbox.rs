//! Hostile components fail one request each; the host and other mounts carry on.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

use std::time::{Duration, Instant};

use coffer_tests::{Coffer, fixtures_config, json, temp_dir};

fn server() -> Coffer {
    let mut coffer = Coffer::with_config(&temp_dir("sandbox"), &fixtures_config());
    coffer.init_and_unseal(1, 1);
    coffer.call("PUT", "secret/canary", Some(json!({"alive": true})));
    coffer
}

fn assert_still_serving(coffer: &Coffer) {
    let ok = coffer.call("GET", "hostile/ok", None);
    assert_eq!(
        ok.status, 200,
        "the hostile mount itself recovers: {}",
        ok.text
    );
    assert_eq!(
        coffer.call("GET", "secret/canary", None).data()["alive"],
        json!(true)
    );
}

#[test]
fn trapping_guest_fails_one_request() {
    let coffer = server();
    let reply = coffer.call("GET", "hostile/trap", None);
    assert_eq!(reply.status, 500);
    assert!(reply.errors().contains("trapped"), "{}", reply.text);
    assert_eq!(reply.content_type, "application/json");
    assert_still_serving(&coffer);
}

#[test]
fn looping_guest_is_stopped_at_its_deadline() {
    let coffer = server();
    let started = Instant::now();
    let reply = coffer.call("GET", "hostile/loop", None);
    let elapsed = started.elapsed();
    assert_eq!(reply.status, 500);
    assert!(reply.errors().contains("time limit"), "{}", reply.text);
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(10),
        "took {elapsed:?}"
    );
    assert_still_serving(&coffer);
}

#[test]
fn a_response_releasing_too_many_write_ahead_entries_fails_alone() {
    let coffer = server();
    let reply = coffer.call("GET", "hostile/flood", None);
    assert_eq!(reply.status, 500, "{}", reply.text);
    assert!(
        reply
            .errors()
            .contains("released 257 write-ahead entries in one response; the limit is 256"),
        "{}",
        reply.text
    );
    assert_still_serving(&coffer);
}

#[test]
fn a_guest_batch_write_is_all_or_nothing_and_bounded() {
    let coffer = server();
    let stored = |coffer: &Coffer| {
        let reply = coffer.call("GET", "hostile/batch", None);
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.json["data"]["stored"].as_u64()
    };
    // One refused change refuses the whole commit: nothing of it is stored.
    let forged = coffer.call(
        "POST",
        "hostile/batch",
        Some(json!({"count": 5, "bad": true})),
    );
    assert_eq!(forged.status, 403, "{}", forged.text);
    assert!(forged.text.contains("reserved"), "{}", forged.text);
    assert_eq!(stored(&coffer), Some(0));
    // Past the bound: refused with the limit named, nothing stored.
    let flood = coffer.call("POST", "hostile/batch", Some(json!({"count": 257})));
    assert_eq!(flood.status, 400, "{}", flood.text);
    assert!(flood.text.contains("the limit is 256"), "{}", flood.text);
    assert_eq!(stored(&coffer), Some(0));
    // Within the bound every change lands.
    let fine = coffer.call("POST", "hostile/batch", Some(json!({"count": 256})));
    assert_eq!(fine.status, 204, "{}", fine.text);
    assert_eq!(stored(&coffer), Some(256));
    assert_still_serving(&coffer);
}

#[test]
fn memory_hog_is_stopped_at_its_limit() {
    let coffer = server();
    let reply = coffer.call("GET", "hostile/grow", None);
    assert_eq!(reply.status, 500);
    assert!(
        reply.errors().contains("memory limit of 32 MiB"),
        "{}",
        reply.text
    );
    assert_still_serving(&coffer);
}

#[test]
fn concurrent_hostile_requests_do_not_block_healthy_ones() {
    let coffer = server();
    // More looping guests than the server has async worker threads (one per core): each
    // yields its thread every epoch tick, so healthy engine calls still run.
    let looping = 2 * std::thread::available_parallelism().map_or(2, usize::from) + 2;
    std::thread::scope(|scope| {
        let loops: Vec<_> = (0..looping)
            .map(|_| scope.spawn(|| coffer.call("GET", "hostile/loop", None).status))
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        for _ in 0..5 {
            let started = Instant::now();
            assert_eq!(coffer.call("GET", "secret/canary", None).status, 200);
            assert_eq!(coffer.call("GET", "hostile/ok", None).status, 200);
            assert!(
                started.elapsed() < Duration::from_millis(500),
                "healthy requests waited {:?} behind {looping} looping guests",
                started.elapsed()
            );
        }
        for handle in loops {
            assert_eq!(handle.join().unwrap(), 500);
        }
    });
}

#[test]
fn guests_get_no_filesystem_and_no_environment() {
    let coffer = server();
    let file = coffer.call("GET", "hostile/file", None);
    assert_eq!(file.status, 200, "{}", file.text);
    assert!(
        file.data().get("leaked").is_none(),
        "guest read a host file: {}",
        file.text
    );
    assert!(file.data()["denied"].is_string());
    let env = coffer.call("GET", "hostile/env", None);
    assert_eq!(
        env.data()["vars"],
        json!([]),
        "guest saw environment variables"
    );
}

/// Starts a server from `config` (a fixtures config template) and returns its stderr,
/// failing the test if it did not refuse to start.
fn refused_start(label: &str, config: &str) -> String {
    let dir = temp_dir(label);
    let text = config
        .replace("{addr}", "127.0.0.1:1")
        .replace("{dir}", &dir.display().to_string())
        .replace(
            "{plugins}",
            &coffer_tests::plugin_dir().display().to_string(),
        );
    let path = dir.join("coffer.toml");
    std::fs::write(&path, text).unwrap();
    let output = std::process::Command::new(coffer_tests::binary())
        .args(["server", "-config", path.to_str().unwrap()])
        .env("COFFER_CACHE_DIR", coffer_tests::cache_dir())
        .output()
        .unwrap();
    assert!(
        !output.status.success(),
        "the server started with a bad catalog"
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_plugin_whose_hash_does_not_match_is_refused() {
    let stderr = refused_start(
        "catalog",
        &fixtures_config().replacen("sha256 = \"", "sha256 = \"00", 1),
    );
    assert!(
        stderr.contains("sha256 mismatch") && stderr.contains("hostile"),
        "{stderr}"
    );
}

#[test]
fn a_catalog_entry_cannot_escape_the_plugin_directory() {
    let config = fixtures_config().replace(
        "file = \"coffer_fixture_hostile.wasm\"",
        "file = \"../../../../../../etc/passwd\"",
    );
    let stderr = refused_start("escape", &config);
    assert!(
        stderr.contains("cannot read") && stderr.contains("inside the plugin directory"),
        "{stderr}"
    );
}
