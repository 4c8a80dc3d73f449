//! High availability on PostgreSQL storage, with real processes on one real PostgreSQL:
//! three nodes share the storage; any node serves (standbys forward to the active, or
//! answer 307 when asked not to); `kill -9` of the active under load fails over within the
//! lock TTL with every lease still expiring and dropping its PostgreSQL user; a paused
//! active that wakes after a takeover cannot write (the fence) and steps down; the
//! storage database restarting loses nothing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

use std::io::{Read as _, Write as _};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coffer_tests::tutorial::tutorial_database;
use coffer_tests::{
    Coffer, PG_ROOT_PASSWORD, PG_ROOT_USER, Postgres, Value, eventually, fixtures_config, json,
    run_python, stdout, temp_dir,
};

/// The lock TTL the tests run with (Vault's 15 s would make every failover slow).
const LOCK_TTL: &str = "3s";

/// The storage database's connection string.
fn storage_url(pg: &Postgres) -> String {
    format!(
        "host=127.0.0.1 port={} user={PG_ROOT_USER} password={PG_ROOT_PASSWORD} dbname=coffer_storage",
        pg.port
    )
}

/// A node's config: the fixtures' mounts, storage in PostgreSQL.
fn node_config(pg: &Postgres) -> String {
    fixtures_config().replace(
        "[storage]\npath = \"{dir}/data/coffer.db\"",
        &format!(
            "[storage]\ntype = \"postgresql\"\nconnection_url = \"{}\"\nlock_ttl = \"{LOCK_TTL}\"\nmax_connections = 4",
            storage_url(pg)
        ),
    )
}

/// `sys/leader` of a node.
fn leader(node: &Coffer) -> Value {
    node.raw("GET", "sys/leader", None, None, &[]).json
}

fn is_active(node: &Coffer) -> bool {
    leader(node)["is_self"] == true
}

/// Three (or `count`) nodes on one PostgreSQL: the first initialized and active, the
/// others unsealed standbys pointing at it.
struct Cluster {
    pg: Postgres,
    nodes: Vec<Coffer>,
    keys: Vec<String>,
}

fn cluster(count: usize) -> Cluster {
    let pg = Postgres::start(false);
    pg.admin(
        "postgres",
        "CREATE DATABASE coffer_storage OWNER vault_root",
    );
    let config = node_config(&pg);
    let mut nodes: Vec<Coffer> = (0..count)
        .map(|i| Coffer::with_config(&temp_dir(&format!("ha-node{i}")), &config))
        .collect();
    let keys = nodes[0].init_and_unseal(1, 1);
    assert!(
        eventually(Duration::from_secs(15), || is_active(&nodes[0])),
        "the first node did not become active:\n{}",
        nodes[0].log_text()
    );
    let token = nodes[0].token.clone();
    for node in nodes.iter_mut().skip(1) {
        node.token = token.clone();
        node.unseal(&keys);
    }
    let active = nodes[0].addr.clone();
    for node in nodes.iter().skip(1) {
        assert!(
            eventually(Duration::from_secs(10), || leader(node)["leader_address"]
                == active.as_str()),
            "a standby does not know the active node: {}\n{}",
            leader(node),
            node.log_text()
        );
    }
    Cluster { pg, nodes, keys }
}

/// The raw status line and `Location` of a request sent over a socket (no redirect
/// following).
fn status_and_location(addr: &str, path: &str, token: &str, headers: &str) -> (u16, String) {
    let host = addr.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    write!(
        stream,
        "GET /v1/{path} HTTP/1.1\r\nHost: {host}\r\nX-Vault-Token: {token}\r\n{headers}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let location = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("location: ")
                .or_else(|| l.strip_prefix("Location: "))
        })
        .unwrap_or_default()
        .trim()
        .to_string();
    (status, location)
}

#[test]
fn three_nodes_share_one_postgresql_and_any_node_serves() {
    let cluster = cluster(3);
    let [active, second, third] = &cluster.nodes[..] else {
        panic!("three nodes")
    };
    // sys/leader and health as Vault answers them.
    assert_eq!(leader(active)["ha_enabled"], true);
    assert_eq!(leader(second)["is_self"], false);
    assert_eq!(leader(third)["leader_address"], active.addr.as_str());
    assert_eq!(active.raw("GET", "sys/health", None, None, &[]).status, 200);
    let standby_health = second.raw("GET", "sys/health", None, None, &[]);
    assert_eq!(standby_health.status, 429, "{}", standby_health.text);
    assert_eq!(standby_health.json["standby"], true);
    assert_eq!(
        second
            .raw("GET", "sys/health?standbyok=true", None, None, &[])
            .status,
        200
    );
    assert_eq!(
        second
            .raw("GET", "sys/health?standbycode=473", None, None, &[])
            .status,
        473
    );

    // A write through one standby is read through the other and on the active.
    let written = second.call("PUT", "secret/shared", Some(json!({"v": "from-standby"})));
    assert_eq!(written.status, 204, "{}", written.text);
    for node in [active, third] {
        let read = node.call("GET", "secret/shared", None);
        assert_eq!(read.status, 200, "{}", read.text);
        assert_eq!(read.data()["v"], "from-standby");
    }
    // A lease issued through a standby is the active node's.
    let leased = third.call("GET", "leasing/creds/app?ttl=1h", None);
    assert_eq!(leased.status, 200, "{}", leased.text);
    let lease = leased.json["lease_id"].as_str().unwrap().to_string();
    let looked = active.call("PUT", "sys/leases/lookup", Some(json!({"lease_id": lease})));
    assert_eq!(looked.status, 200, "{}", looked.text);

    // A client that asks not to be forwarded is sent to the active node.
    let (status, location) = status_and_location(
        &second.addr,
        "secret/shared",
        &second.token,
        "X-Vault-No-Request-Forwarding: true\r\n",
    );
    assert_eq!(status, 307);
    assert_eq!(location, format!("{}/v1/secret/shared", active.addr));
    // A chunked body is re-framed, not passed on beside a length; a request already
    // forwarded once is not forwarded again.
    let host = second.addr.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    let body = r#"{"v":"chunked"}"#;
    write!(
        stream,
        "PUT /v1/secret/chunked HTTP/1.1\r\nHost: {host}\r\nX-Vault-Token: {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        second.token,
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
    assert_eq!(
        active.call("GET", "secret/chunked", None).data()["v"],
        "chunked"
    );
    let again = second.raw(
        "GET",
        "secret/shared",
        Some(&second.token),
        None,
        &[("X-Coffer-Forwarded", "1")],
    );
    assert_eq!(again.status, 503, "{}", again.text);

    // Without a token a standby buffers no more than an unauthenticated path's body.
    let big = format!("{{\"v\":\"{}\"}}", "x".repeat(200 << 10));
    let unauthenticated = second.raw("PUT", "secret/big", None, Some(&big), &[]);
    assert_eq!(unauthenticated.status, 413, "{}", unauthenticated.text);
    // A forwarded request has no client address the active can verify: a CIDR-bound
    // login fails closed through a standby (such clients talk to the active).
    assert!(
        active
            .call("POST", "sys/auth/approle", Some(json!({"type": "approle"})))
            .status
            < 300
    );
    let role = active.call(
        "POST",
        "auth/approle/role/bound",
        Some(json!({"secret_id_bound_cidrs": ["127.0.0.1/32"], "token_bound_cidrs": ["127.0.0.1/32"]})),
    );
    assert!(role.status < 300, "{}", role.text);
    let role_id = active
        .call("GET", "auth/approle/role/bound/role-id", None)
        .data()["role_id"]
        .clone();
    let secret_id = active
        .call("POST", "auth/approle/role/bound/secret-id", None)
        .data()["secret_id"]
        .clone();
    let login = json!({"role_id": role_id, "secret_id": secret_id}).to_string();
    let through_standby = second.raw("POST", "auth/approle/login", None, Some(&login), &[]);
    assert!(
        through_standby.status == 400 || through_standby.status == 403,
        "a CIDR-bound login passed through a standby: {}",
        through_standby.text
    );
    let direct = active.raw("POST", "auth/approle/login", None, Some(&login), &[]);
    assert_eq!(direct.status, 200, "{}", direct.text);
    let bound_token = direct.json["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        active
            .raw(
                "GET",
                "auth/token/lookup-self",
                Some(&bound_token),
                None,
                &[]
            )
            .status,
        200
    );
    assert_eq!(
        second
            .raw(
                "GET",
                "auth/token/lookup-self",
                Some(&bound_token),
                None,
                &[]
            )
            .status,
        403,
        "a CIDR-bound token was used through a standby"
    );

    // Without a token, a standby forwards and the active refuses, as it would itself.
    assert_eq!(
        third.raw("GET", "secret/shared", None, None, &[]).status,
        403
    );

    // sys/ha-status lists the three nodes, one active.
    let status = active.call("GET", "sys/ha-status", None);
    assert_eq!(status.status, 200, "{}", status.text);
    let nodes = status.json["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{}", status.text);
    assert_eq!(nodes.iter().filter(|n| n["active_node"] == true).count(), 1);

    // Each node's metrics say its role; the standby answers for itself.
    let metrics = |node: &Coffer| {
        node.raw(
            "GET",
            "sys/metrics?format=prometheus",
            Some(&node.token),
            None,
            &[],
        )
        .text
    };
    let active_metrics = metrics(active);
    assert!(
        active_metrics.contains("coffer_ha_enabled 1"),
        "{active_metrics}"
    );
    assert!(
        active_metrics.contains("coffer_ha_active 1"),
        "{active_metrics}"
    );
    assert!(
        eventually(Duration::from_secs(5), || !metrics(active)
            .contains("coffer_ha_lock_renewals_total 0\n")),
        "no lock renewal counted"
    );
    assert!(metrics(second).contains("coffer_ha_active 0"));

    // The CLI shows the HA mode; hvac works against a standby.
    let cli = second.cli(&["status"]);
    let text = stdout(&cli);
    assert!(text.contains("standby"), "{text}");
    assert!(text.contains(&active.addr), "{text}");
    run_python(
        r#"
import sys, hvac
client = hvac.Client(url=sys.argv[1], token=sys.argv[2])
assert client.is_authenticated()
client.secrets.kv.v1.create_or_update_secret(path="hvac", secret={"v": "through-a-standby"}, mount_point="secret")
read = client.secrets.kv.v1.read_secret(path="hvac", mount_point="secret")
assert read["data"]["v"] == "through-a-standby", read
assert client.sys.read_leader_status()["ha_enabled"] is True
print("ok")
"#,
        &[&third.addr, &third.token],
    );
    assert_eq!(
        active.call("GET", "secret/hvac", None).data()["v"],
        "through-a-standby"
    );

    // Step-down (sudo): another node takes over; the old active forwards to it.
    let stepped = active.call("PUT", "sys/step-down", None);
    assert_eq!(stepped.status, 204, "{}", stepped.text);
    assert!(
        eventually(Duration::from_secs(15), || is_active(second)
            || is_active(third)),
        "nobody took over after a step-down"
    );
    assert!(!is_active(active));
    assert!(
        eventually(Duration::from_secs(5), || active
            .call("GET", "secret/shared", None)
            .status
            == 200),
        "the old active does not forward"
    );
}

/// One client request's outcome under load.
struct Outcome {
    at: Instant,
    ok: bool,
    user: String,
    lease: String,
}

#[test]
fn killing_the_active_under_load_fails_over_and_every_lease_still_expires() {
    let mut cluster = cluster(3);
    let active = &cluster.nodes[0];
    let mounted = active.call(
        "POST",
        "sys/mounts/database",
        Some(json!({"type": "database"})),
    );
    assert!(mounted.status < 300, "{}", mounted.text);
    tutorial_database(active, &cluster.pg);
    let short = active.call(
        "POST",
        "database/roles/grade-api-role",
        Some(json!({"db_name": "grade-api-db", "creation_statements": coffer_tests::tutorial::CREATION, "default_ttl": "20s", "max_ttl": "20s"})),
    );
    assert!(short.status < 300, "{}", short.text);

    // Load: 8 clients asking standbys for credentials (they forward to the active).
    let outcomes = Arc::new(Mutex::new(Vec::<Outcome>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let token = active.token.clone();
    let addrs = [cluster.nodes[1].addr.clone(), cluster.nodes[2].addr.clone()];
    let workers: Vec<_> = (0..8)
        .map(|i| {
            let (outcomes, stop, token) = (outcomes.clone(), stop.clone(), token.clone());
            let addr = addrs[i % 2].clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let reply = ureq::get(&format!("{addr}/v1/database/creds/grade-api-role"))
                        .set("X-Vault-Token", &token)
                        .timeout(Duration::from_secs(30))
                        .call();
                    let at = Instant::now();
                    let outcome = match reply {
                        Ok(response) => {
                            let body: Value = response.into_json().unwrap_or(Value::Null);
                            Outcome {
                                at,
                                ok: true,
                                user: body["data"]["username"].as_str().unwrap_or_default().into(),
                                lease: body["lease_id"].as_str().unwrap_or_default().into(),
                            }
                        }
                        Err(_) => {
                            std::thread::sleep(Duration::from_millis(100));
                            Outcome {
                                at,
                                ok: false,
                                user: String::new(),
                                lease: String::new(),
                            }
                        }
                    };
                    outcomes.lock().unwrap().push(outcome);
                    // Paced: the database engine drops users one at a time (an advisory
                    // lock), so an unpaced run makes more users than it can drop in the
                    // test's time.
                    std::thread::sleep(Duration::from_millis(200));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    let killed = Instant::now();
    cluster.nodes[0].kill();
    let took_over = eventually(Duration::from_secs(30), || {
        is_active(&cluster.nodes[1]) || is_active(&cluster.nodes[2])
    });
    let failover = killed.elapsed();
    assert!(took_over, "no standby took over after kill -9");
    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for worker in workers {
        worker.join().unwrap();
    }
    let outcomes = outcomes.lock().unwrap();
    let ok: Vec<&Outcome> = outcomes.iter().filter(|o| o.ok).collect();
    let before = ok.iter().filter(|o| o.at < killed).count();
    let after = ok.iter().filter(|o| o.at > killed).count();
    let first_after = ok
        .iter()
        .filter(|o| o.at > killed)
        .map(|o| o.at.duration_since(killed))
        .min()
        .unwrap_or_default();
    let errors: Vec<Duration> = outcomes
        .iter()
        .filter(|o| !o.ok)
        .map(|o| o.at.saturating_duration_since(killed))
        .collect();
    println!(
        "failover: a standby was active {:.1} s after kill -9 (lock TTL {LOCK_TTL}); first credential after the kill at {:.1} s; {before} credentials before, {after} after, {} errors",
        failover.as_secs_f64(),
        first_after.as_secs_f64(),
        errors.len()
    );
    assert!(before > 0 && after > 0, "{before} before, {after} after");
    // Clients see errors only inside the failover window: until a standby is active,
    // plus a second for the other standby to learn it (and slack for the polling).
    let window = failover + Duration::from_secs(2);
    assert!(
        errors.iter().all(|e| *e <= window),
        "errors outside the failover window ({window:?}): {errors:?}"
    );
    assert!(outcomes.iter().filter(|o| !o.ok).all(|o| o.at >= killed));

    // Every credential issued, before the crash too, is a lease on the new active that
    // expires on time and drops its user; nothing is left without a lease.
    let new_active = cluster.nodes.iter().skip(1).find(|n| is_active(n)).unwrap();
    for outcome in ok.iter().filter(|o| o.at < killed).take(5) {
        let looked = new_active.call(
            "PUT",
            "sys/leases/lookup",
            Some(json!({"lease_id": outcome.lease})),
        );
        assert_eq!(
            looked.status, 200,
            "a lease from before the crash is lost: {}",
            looked.text
        );
    }
    let users: Vec<String> = ok.iter().map(|o| o.user.clone()).collect();
    assert!(users.iter().all(|u| !u.is_empty()));
    if !eventually(Duration::from_secs(120), || {
        cluster.pg.roles_like("v-") == 0
    }) {
        let left = cluster.pg.admin(
            "postgres",
            "SELECT rolname FROM pg_roles WHERE rolname LIKE 'v-%'",
        );
        let known: Vec<String> = left
            .lines()
            .map(|user| {
                let issued = outcomes.iter().find(|o| o.user == user);
                format!(
                    "{user}: {}",
                    issued.map_or("never answered to a client".to_string(), |o| format!(
                        "lease {} answered {:?} after the kill",
                        o.lease,
                        o.at.checked_duration_since(killed)
                    ))
                )
            })
            .collect();
        panic!(
            "users outlived their leases (or were never leased):\n{}",
            known.join("\n")
        );
    }
}

#[test]
fn a_paused_active_cannot_write_after_a_standby_took_over() {
    let cluster = cluster(2);
    let (old, new) = (&cluster.nodes[0], &cluster.nodes[1]);
    let pid = old.pid().unwrap().to_string();
    let signal = |name: &str| {
        assert!(
            Command::new("kill")
                .args([name, &pid])
                .status()
                .unwrap()
                .success()
        );
    };
    // A token whose policy the old active has compiled and cached.
    old.policy("reader", r#"path "secret/*" { capabilities = ["read"] }"#);
    let reader = old.token_with(&["reader"]);
    assert_eq!(
        old.call("PUT", "secret/fence", Some(json!({"v": "before"})))
            .status,
        204
    );
    assert_eq!(
        old.raw("GET", "secret/fence", Some(&reader), None, &[])
            .status,
        200
    );
    signal("-STOP");
    assert!(
        eventually(Duration::from_secs(20), || is_active(new)),
        "the standby did not take over from a paused active:\n{}",
        new.log_text()
    );
    let write = new.call("PUT", "secret/fence", Some(json!({"v": "new-active"})));
    assert_eq!(write.status, 204, "{}", write.text);
    let revoked = new.call("DELETE", "sys/policies/acl/reader", None);
    assert_eq!(revoked.status, 204, "{}", revoked.text);
    signal("-CONT");
    // Woken, it serves nothing from what it loaded as active: its lock is unconfirmed
    // the moment it runs, so the read is forwarded (and refused) or refused.
    let stale_read = old.raw("GET", "secret/fence", Some(&reader), None, &[]);
    assert_ne!(
        stale_read.status, 200,
        "a paused active served a read with a policy deleted meanwhile: {}",
        stale_read.text
    );
    // The woken node still believes it is active until it next renews; whatever it
    // answers now, nothing it writes itself may land: the fence refuses its commits.
    let stale = old.call("PUT", "secret/fence", Some(json!({"v": "stale-active"})));
    assert!(matches!(stale.status, 500 | 503 | 204), "{}", stale.text);
    assert!(
        eventually(Duration::from_secs(10), || !is_active(old)),
        "the woken node did not step down:\n{}",
        old.log_text()
    );
    assert!(is_active(new), "split brain: the new active stepped down");
    let value = new.call("GET", "secret/fence", None).data()["v"].clone();
    if stale.status != 204 {
        assert_eq!(value, "new-active", "a fenced write landed");
    } else {
        // Answered after it stepped down: forwarded to the new active, which wrote it.
        assert_eq!(value, "stale-active");
    }
    // From now on it forwards.
    let forwarded = old.call("PUT", "secret/fence", Some(json!({"v": "via-standby"})));
    assert_eq!(forwarded.status, 204, "{}", forwarded.text);
    assert_eq!(
        new.call("GET", "secret/fence", None).data()["v"],
        "via-standby"
    );
}

#[test]
fn the_storage_database_restarting_loses_nothing() {
    let cluster = cluster(2);
    let active = &cluster.nodes[0];
    for i in 0..20 {
        let write = active.call("PUT", &format!("secret/before/{i}"), Some(json!({"i": i})));
        assert_eq!(write.status, 204, "{}", write.text);
    }
    cluster.pg.stop();
    let during = active.call("PUT", "secret/during", Some(json!({"v": "x"})));
    assert!(during.status >= 500, "{}", during.text);
    cluster.pg.resume();
    // The nodes reconnect: the same node or the other one serves again, and everything
    // written before is there.
    assert!(
        eventually(Duration::from_secs(30), || cluster.nodes.iter().any(|n| n
            .call("PUT", "secret/after", Some(json!({"v": "y"})))
            .status
            == 204)),
        "no node serves after the storage came back:\n{}",
        active.log_text()
    );
    for node in &cluster.nodes {
        assert!(
            eventually(Duration::from_secs(15), || node
                .call("GET", "secret/before/19", None)
                .status
                == 200),
            "{}",
            node.log_text()
        );
    }
    assert_eq!(cluster.nodes[1].list("secret/before").len(), 20);
    let _ = &cluster.keys;
}

#[test]
fn a_write_is_fenced_by_the_lock_in_its_own_transaction() {
    use coffer_host::backend::Backend as _;
    use coffer_host::pgstore::{PgBackend, PgSettings};
    let pg = Postgres::start(false);
    pg.admin(
        "postgres",
        "CREATE DATABASE coffer_storage OWNER vault_root",
    );
    let settings = PgSettings {
        connection_url: storage_url(&pg),
        table: "coffer_kv_store".into(),
        ha_table: "coffer_ha_locks".into(),
        max_connections: 2,
    };
    // Two nodes open the same storage at once: the schema is created once.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| PgBackend::open(&settings).unwrap());
        let b = s.spawn(|| PgBackend::open(&settings).unwrap());
        (a.join().unwrap(), b.join().unwrap())
    });
    let take = |identity: &str| {
        pg.admin(
            "coffer_storage",
            &format!("INSERT INTO coffer_ha_locks VALUES ('leader', '{identity}', 'http://x', now() + interval '1 hour') ON CONFLICT (ha_key) DO UPDATE SET ha_identity = EXCLUDED.ha_identity, valid_until = EXCLUDED.valid_until"),
        );
    };
    take("node-a");
    a.fence_as_holder("node-a");
    a.put("k", b"from a").unwrap();
    // Node b takes the lock over; node a does not know yet.
    take("node-b");
    let refused = a.put("k", b"stale a");
    assert!(refused.is_err(), "a write of the old holder landed");
    assert!(a.lock_lost());
    let batch = a.write_batch(vec![
        ("k".into(), None),
        ("other".into(), Some(b"x".to_vec())),
    ]);
    assert!(batch.is_err());
    b.fence_as_holder("node-b");
    b.put("k", b"from b").unwrap();
    assert_eq!(
        a.get("k").unwrap().as_deref(),
        Some(&b"from b"[..]),
        "reads still work"
    );
    assert_eq!(
        a.get("other").unwrap(),
        None,
        "no part of a fenced batch landed"
    );
    // An expired lock fences its own holder too (the database's clock decides).
    pg.admin(
        "coffer_storage",
        "UPDATE coffer_ha_locks SET valid_until = now() - interval '1 second' WHERE ha_key = 'leader'",
    );
    assert!(b.put("k", b"expired").is_err());
    // A standby writes nothing; ordered scans with odd keys work.
    a.fence_closed();
    assert!(a.put("z", b"x").is_err());
    take("node-b");
    for key in ["p/a", "p/b", "p/\u{10FFFF}", "p0", "o"] {
        b.put(key, b"v").unwrap();
    }
    assert_eq!(
        b.scan("p/", None, 10).unwrap(),
        vec!["p/a", "p/b", "p/\u{10FFFF}"]
    );
    assert_eq!(b.scan("p/", Some("p/a"), 1).unwrap(), vec!["p/b"]);

    // The active node's read cache: used only while the lock is confirmed, dropped when
    // the role changes. (A change behind Coffer's back stands in for another writer.)
    let behind_the_back = |value: &str| {
        pg.admin(
            "coffer_storage",
            &format!(
                "UPDATE coffer_kv_store SET value = convert_to('{value}', 'UTF8') WHERE key = 'c'"
            ),
        );
    };
    b.fence_as_holder("node-b"); // a new term: the refused write above marked the lock lost
    b.confirm_lock_until(Instant::now() + Duration::from_secs(3600));
    b.put("c", b"1").unwrap();
    behind_the_back("2");
    assert_eq!(
        b.get("c").unwrap().as_deref(),
        Some(&b"1"[..]),
        "a write fills the cache"
    );
    b.confirm_lock_until(Instant::now() - Duration::from_secs(1));
    assert_eq!(
        b.get("c").unwrap().as_deref(),
        Some(&b"2"[..]),
        "an unconfirmed lock reads the database"
    );
    b.confirm_lock_until(Instant::now() + Duration::from_secs(3600));
    assert_eq!(b.get("c").unwrap().as_deref(), Some(&b"1"[..]));
    b.fence_closed();
    assert_eq!(
        b.get("c").unwrap().as_deref(),
        Some(&b"2"[..]),
        "a standby reads the database"
    );
    b.fence_as_holder("node-b");
    assert_eq!(
        b.get("c").unwrap().as_deref(),
        Some(&b"2"[..]),
        "a new term starts empty"
    );
    behind_the_back("3");
    assert_eq!(
        b.get("c").unwrap().as_deref(),
        Some(&b"2"[..]),
        "a read fills the cache"
    );
    assert!(b.delete("c").is_ok());
    assert_eq!(b.get("c").unwrap(), None, "a delete is cached as absent");
}
