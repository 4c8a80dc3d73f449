//! Hostile components fail one request each; the host and other mounts carry on.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

use std::time::{Duration, Instant};

use coffer_tests::{
    Coffer, PG_ROOT_PASSWORD, PG_ROOT_USER, Postgres, eventually, fixtures_config, json, temp_dir,
};

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
    // The panic's message and source line reach the server log (the SDK's panic hook),
    // not the client.
    assert!(
        !reply.text.contains("deliberate trap"),
        "the panic message reached the client: {}",
        reply.text
    );
    assert!(
        eventually(Duration::from_secs(5), || {
            let log = coffer.log_text();
            log.contains("engine panicked at")
                && log.contains("deliberate trap")
                && log.contains("src/lib.rs:")
        }),
        "no panic report in the server log:\n{}",
        coffer.log_text()
    );
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

// ---------------------------------------------------------------------------------------
// The `sql` capability against a hostile guest: each attack fails its own call, and the
// server, the mount and the database carry on.

/// A sandbox server whose hostile mount has `timeout` per call, and a PostgreSQL.
fn sql_server(timeout: &str) -> (Coffer, Postgres) {
    let pg = Postgres::start(false);
    let config = fixtures_config().replace(
        "engine_call_timeout = \"1s\"",
        &format!("engine_call_timeout = \"{timeout}\""),
    );
    let mut coffer = Coffer::with_config(&temp_dir("sandbox-sql"), &config);
    coffer.init_and_unseal(1, 1);
    coffer.call("PUT", "secret/canary", Some(json!({"alive": true})));
    (coffer, pg)
}

/// The root user's key=value DSN for `pg`, with `extra` parameters.
fn root_dsn(pg: &Postgres, extra: &str) -> String {
    format!(
        "host=127.0.0.1 port={} user={PG_ROOT_USER} password={PG_ROOT_PASSWORD} dbname=gradedb sslmode=disable{extra}",
        pg.port
    )
}

/// Grants the hostile mount `pg`'s endpoint the way an operator does: a config write.
fn grant_hostile(coffer: &Coffer, pg: &Postgres) {
    let granted = coffer.call(
        "POST",
        "hostile/config",
        Some(json!({"connection_url": root_dsn(pg, "")})),
    );
    assert_eq!(granted.status, 204, "{}", granted.text);
}

/// `hostile/sql` with these query parameters.
fn hostile_sql(coffer: &Coffer, params: &[(&str, &str)]) -> coffer_tests::Reply {
    let query: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{k}={}", percent(v)))
        .collect();
    coffer.call("GET", &format!("hostile/sql?{}", query.join("&")), None)
}

fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Sessions PostgreSQL has open for the root user.
fn root_sessions(pg: &Postgres) -> usize {
    pg.admin(
        "postgres",
        &format!("SELECT count(*) FROM pg_stat_activity WHERE usename = '{PG_ROOT_USER}'"),
    )
    .parse()
    .unwrap()
}

/// Peak resident memory of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_guest_cannot_dial_around_its_sql_grant() {
    let (coffer, pg) = sql_server("1s");
    grant_hostile(&coffer, &pg);
    let granted = hostile_sql(&coffer, &[("dsn", &root_dsn(&pg, ""))]);
    assert_eq!(
        granted.status, 200,
        "the granted endpoint works: {}",
        granted.text
    );
    // `hostaddr` picks the address actually dialed, whatever `host` says.
    let hostaddr = hostile_sql(&coffer, &[("dsn", &root_dsn(&pg, " hostaddr=127.0.0.2"))]);
    assert_eq!(hostaddr.status, 403, "{}", hostaddr.text);
    assert!(
        hostaddr.errors().contains("127.0.0.2") && hostaddr.errors().contains("not configured"),
        "{}",
        hostaddr.text
    );
    // A CA file the operator did not name is a host file the guest may not make us read.
    let root_cert = hostile_sql(
        &coffer,
        &[("dsn", &root_dsn(&pg, " sslrootcert=/etc/shadow"))],
    );
    assert_eq!(root_cert.status, 403, "{}", root_cert.text);
    assert!(
        root_cert.errors().contains("sslrootcert"),
        "{}",
        root_cert.text
    );
    assert!(
        !root_cert.text.contains(PG_ROOT_PASSWORD) && !coffer.log_text().contains(PG_ROOT_PASSWORD),
        "a password reached an error or the log"
    );
    assert_still_serving(&coffer);
}

#[test]
fn oversized_query_results_fail_while_reading() {
    let (coffer, pg) = sql_server("10s");
    grant_hostile(&coffer, &pg);
    let pid = coffer.pid().unwrap();
    let before = peak_rss_kib(pid);
    // Two million rows of 100 bytes: ~200 MB if buffered before the row limit applied.
    let rows = hostile_sql(
        &coffer,
        &[
            ("dsn", &root_dsn(&pg, "")),
            (
                "query",
                "SELECT repeat('x', 100) FROM generate_series(1, 2000000)",
            ),
        ],
    );
    assert_eq!(rows.status, 400, "{}", rows.text);
    assert!(
        rows.errors().contains("more than 10000 rows"),
        "{}",
        rows.text
    );
    // 200 rows of 1 MiB: within the row limit, past the byte limit.
    let bytes = hostile_sql(
        &coffer,
        &[
            ("dsn", &root_dsn(&pg, "")),
            (
                "query",
                "SELECT repeat('x', 1048576) FROM generate_series(1, 200)",
            ),
        ],
    );
    assert_eq!(bytes.status, 400, "{}", bytes.text);
    assert!(
        bytes.errors().contains("more than 16777216 bytes"),
        "{}",
        bytes.text
    );
    let grown_mib = peak_rss_kib(pid).saturating_sub(before) / 1024;
    assert!(
        grown_mib < 100,
        "the server's peak memory grew by {grown_mib} MiB while refusing the results"
    );
    // The aborted statements' sessions were closed, not pooled half-read.
    assert!(
        coffer_tests::eventually(Duration::from_secs(10), || root_sessions(&pg) <= 1),
        "{} root sessions left",
        root_sessions(&pg)
    );
    let fine = hostile_sql(
        &coffer,
        &[("dsn", &root_dsn(&pg, "")), ("query", "SELECT 1")],
    );
    assert_eq!(fine.data()["rows"], json!(1), "{}", fine.text);
    assert_still_serving(&coffer);
}

#[test]
fn time_in_sql_counts_toward_the_call_deadline() {
    let (coffer, pg) = sql_server("1s");
    grant_hostile(&coffer, &pg);
    let started = Instant::now();
    let reply = hostile_sql(
        &coffer,
        &[
            ("dsn", &root_dsn(&pg, "")),
            ("query", "SELECT pg_sleep(20)"),
        ],
    );
    let elapsed = started.elapsed();
    assert_ne!(reply.status, 200, "{}", reply.text);
    assert!(reply.text.contains("time limit"), "{}", reply.text);
    assert!(
        elapsed < Duration::from_secs(4),
        "a 1s call spent {elapsed:?} in the database"
    );
    assert!(
        coffer_tests::eventually(Duration::from_secs(10), || {
            pg.admin(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE 'SELECT pg_sleep(20)%'"
        ) == "0"
        }),
        "the abandoned statement still runs"
    );
    assert_still_serving(&coffer);
}

#[test]
fn distinct_dsns_from_one_guest_share_the_mount_connection_budget() {
    let (coffer, pg) = sql_server("8s");
    grant_hostile(&coffer, &pg);
    let reply = hostile_sql(&coffer, &[("dsn", &root_dsn(&pg, "")), ("hold", "40")]);
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.data()["opened"], json!(32), "{}", reply.text);
    assert!(
        reply.data()["error"]
            .as_str()
            .unwrap()
            .contains("32 database connections"),
        "{}",
        reply.text
    );
    assert!(
        coffer_tests::eventually(Duration::from_secs(10), || root_sessions(&pg) <= 1),
        "{} root sessions left after the call",
        root_sessions(&pg)
    );
    assert_still_serving(&coffer);
}

#[test]
fn sql_grants_follow_accepted_configs_only() {
    let (coffer, pg) = sql_server("5s");
    let dsn = root_dsn(&pg, "");
    let connect = |coffer: &Coffer| hostile_sql(coffer, &[("dsn", &dsn)]).status;
    // Refused by the engine: the endpoint was dialable during the write, and not after.
    let refused = coffer.call(
        "POST",
        "hostile/config",
        Some(json!({"connection_url": dsn, "verify": true, "fail": true})),
    );
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert!(
        refused.errors().contains("config refused"),
        "{}",
        refused.text
    );
    assert_eq!(connect(&coffer), 403, "a refused config left a grant");
    // Accepted (and verified during the write): granted.
    let accepted = coffer.call(
        "POST",
        "hostile/config",
        Some(json!({"connection_url": dsn, "verify": true})),
    );
    assert_eq!(accepted.status, 204, "{}", accepted.text);
    assert_eq!(connect(&coffer), 200);
    // Rewritten to another endpoint: the old one is no longer granted.
    let rewritten = coffer.call(
        "POST",
        "hostile/config",
        Some(json!({"connection_url": "host=127.0.0.1 port=1 dbname=x"})),
    );
    assert_eq!(rewritten.status, 204, "{}", rewritten.text);
    assert_eq!(
        connect(&coffer),
        403,
        "a rewritten config kept its old grant"
    );
    // Written back, then deleted: withdrawn.
    grant_hostile(&coffer, &pg);
    assert_eq!(connect(&coffer), 200);
    assert_eq!(coffer.call("DELETE", "hostile/config", None).status, 204);
    assert_eq!(connect(&coffer), 403, "a deleted config kept its grant");
    assert_still_serving(&coffer);
}
