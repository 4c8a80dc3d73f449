//! `coffer-bench`: Coffer vs OpenBao vs in-process limits, in one run.
//!
//! ```text
//! bench/run            # full run: release build, Coffer and OpenBao 2.7.2, every scenario
//! bench/run --smoke    # CI: Coffer only, tiny counts, whatever build is present
//! ```
//! Prints a table and writes `bench/results.json`. Nothing here asserts a time: these are
//! measurements for BENCHMARKS.md, not tests.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "benchmark driver: failing loudly is right"
)]

mod limits;
mod load;

use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coffer_tests::{
    Coffer, PG_ROOT_PASSWORD, PG_ROOT_USER, Postgres, fixtures_config, free_port, json, temp_dir,
};
use load::{BodyFn, Stats, Target};
use serde_json::Value;

const CREATION: &str = "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'; GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO \"{{name}}\";";

/// How much work each scenario does.
struct Scale {
    concurrency: Vec<usize>,
    issue_ec: usize,
    issue_rsa: usize,
    sign_ec: usize,
    db_creds: usize,
    overhead: usize,
    leases_live: usize,
    leases_storm: usize,
    token_leases: usize,
    logins: usize,
    crl_revocations: usize,
    limit_budget: Duration,
}

impl Scale {
    fn full() -> Self {
        let env = |name: &str, default: usize| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        Self {
            concurrency: std::env::var("BENCH_CONCURRENCY")
                .ok()
                .map(|v| v.split(',').filter_map(|c| c.trim().parse().ok()).collect())
                .unwrap_or_else(|| vec![1, 4, 32]),
            issue_ec: env("BENCH_ISSUE_EC", 3000),
            issue_rsa: env("BENCH_ISSUE_RSA", 200),
            sign_ec: env("BENCH_SIGN_EC", 3000),
            db_creds: env("BENCH_DB_CREDS", 400),
            overhead: env("BENCH_OVERHEAD", 25000),
            leases_live: env("BENCH_LEASES_LIVE", 100_000),
            leases_storm: env("BENCH_LEASES_STORM", 20_000),
            token_leases: env("BENCH_TOKEN_LEASES", 100_000),
            logins: env("BENCH_LOGINS", 5000),
            crl_revocations: env("BENCH_CRL_REVOCATIONS", 20_000),
            limit_budget: Duration::from_secs(3),
        }
    }

    fn smoke() -> Self {
        Self {
            concurrency: vec![1, 4],
            issue_ec: 20,
            issue_rsa: 2,
            sign_ec: 20,
            db_creds: 10,
            overhead: 50,
            leases_live: 200,
            leases_storm: 100,
            token_leases: 200,
            logins: 50,
            crl_revocations: 2100,
            limit_budget: Duration::from_millis(200),
        }
    }
}

/// One table row.
struct Row {
    scenario: String,
    server: String,
    concurrency: usize,
    stats: Stats,
    limit: Option<f64>,
    note: String,
}

fn blocking(target: &Target, method: &str, path: &str, body: Value) -> Value {
    let url = format!("{}/v1/{path}", target.addr);
    let response = ureq::request(method, &url)
        .set("X-Vault-Token", &target.token)
        .timeout(Duration::from_secs(120))
        .send_string(&body.to_string());
    match response {
        Ok(response) => response.into_json().unwrap_or(Value::Null),
        Err(ureq::Error::Status(code, response)) => panic!(
            "{} {method} {path}: {code} {}",
            target.name,
            response.into_string().unwrap_or_default()
        ),
        Err(error) => panic!("{} {method} {path}: {error}", target.name),
    }
}

/// Mounts `kind` at `path`, retrying while the server is still settling: OpenBao can
/// answer `sys/mounts` before a new mount sticks (seen once as "no mount entry found" on
/// the tune right after). A mount that already exists counts as done.
fn mount(target: &Target, path: &str, kind: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let outcome = ureq::request("POST", &format!("{}/v1/sys/mounts/{path}", target.addr))
            .set("X-Vault-Token", &target.token)
            .send_string(&json!({"type": kind}).to_string());
        let error = match outcome {
            Ok(_) => return,
            Err(ureq::Error::Status(code, response)) => {
                let text = response.into_string().unwrap_or_default();
                if text.contains("existing mount") || text.contains("already in use") {
                    return;
                }
                format!("{code} {text}")
            }
            Err(error) => error.to_string(),
        };
        assert!(
            Instant::now() < deadline,
            "{} could not mount {path}: {error}",
            target.name
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Enables AppRole at `auth/approle` with a role `bench` (1 h tokens, unlimited secret-ID
/// uses) and returns its role ID and a secret ID.
fn approle(target: &Target) -> (String, String) {
    let enabled = ureq::request("POST", &format!("{}/v1/sys/auth/approle", target.addr))
        .set("X-Vault-Token", &target.token)
        .send_string(&json!({"type": "approle"}).to_string());
    if let Err(ureq::Error::Status(code, response)) = enabled {
        let text = response.into_string().unwrap_or_default();
        assert!(
            text.contains("already in use"),
            "{} could not enable approle: {code} {text}",
            target.name
        );
    }
    blocking(
        target,
        "POST",
        "auth/approle/role/bench",
        json!({"token_ttl": "1h", "token_policies": ["default"], "secret_id_num_uses": 0}),
    );
    let role_id =
        blocking(target, "GET", "auth/approle/role/bench/role-id", json!({}))["data"]["role_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
    let secret_id = blocking(
        target,
        "POST",
        "auth/approle/role/bench/secret-id",
        json!({}),
    )["data"]["secret_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (role_id, secret_id)
}

/// Same mounts on both servers, over the same Vault API.
fn configure(target: &Target, pg: &Postgres) -> String {
    mount(target, "pki", "pki");
    mount(target, "database", "database");
    blocking(
        target,
        "POST",
        "sys/mounts/pki/tune",
        json!({"max_lease_ttl": "87600h"}),
    );
    let root = blocking(
        target,
        "POST",
        "pki/root/generate/internal",
        json!({"common_name": "bench-root", "key_type": "ec", "ttl": "8760h"}),
    );
    let root_serial = root["data"]["serial_number"]
        .as_str()
        .unwrap_or_default()
        .replace(':', "-");
    blocking(
        target,
        "POST",
        "pki/roles/ec",
        json!({"allowed_domains": "bench.local", "allow_subdomains": true, "key_type": "ec", "key_bits": 256, "max_ttl": "72h"}),
    );
    blocking(
        target,
        "POST",
        "pki/roles/rsa",
        json!({"allowed_domains": "bench.local", "allow_subdomains": true, "key_type": "rsa", "key_bits": 2048, "max_ttl": "72h"}),
    );
    blocking(
        target,
        "POST",
        "database/config/bench",
        json!({
            "plugin_name": "postgresql-database-plugin", "allowed_roles": "*",
            "connection_url": pg.connection_url("disable"), "username": PG_ROOT_USER, "password": PG_ROOT_PASSWORD,
            "password_authentication": password_authentication(),
        }),
    );
    blocking(
        target,
        "POST",
        "database/roles/bench",
        json!({"db_name": "bench", "creation_statements": [CREATION], "default_ttl": "1h", "max_ttl": "24h"}),
    );
    root_serial
}

/// The OpenBao peer: raft storage on disk, loopback, one unseal key.
struct Bao {
    bin: String,
    dir: std::path::PathBuf,
    addr: String,
    child: Option<Child>,
    unseal_key: String,
}

/// A panicking run (a failed setup call) must not leave OpenBao running.
impl Drop for Bao {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Bao {
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("bao.log"))
            .unwrap();
        let child = Command::new(&self.bin)
            .args(["server", "-config"])
            .arg(self.dir.join("bao.hcl"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start bao");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while ureq::get(&format!("{}/v1/sys/seal-status", self.addr))
            .call()
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "OpenBao did not start; see {}",
                self.dir.join("bao.log").display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn unseal_and_wait(&self, token: &str) {
        ureq::put(&format!("{}/v1/sys/unseal", self.addr))
            .send_string(&json!({"key": self.unseal_key}).to_string())
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(600);
        // sys/mounts answers only once this node is active (lookup-self answers earlier).
        while ureq::get(&format!("{}/v1/sys/mounts", self.addr))
            .set("X-Vault-Token", token)
            .call()
            .is_err()
        {
            assert!(Instant::now() < deadline, "OpenBao did not become active");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }
}

fn start_openbao(bin: &str) -> (Bao, Target) {
    let dir = temp_dir("bao");
    let port = free_port();
    let config = format!(
        "storage \"raft\" {{\n  path = \"{0}/raft\"\n  node_id = \"bench\"\n}}\nlistener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n  tls_disable = true\n}}\napi_addr = \"http://127.0.0.1:{port}\"\ncluster_addr = \"http://127.0.0.1:{1}\"\ndisable_mlock = true\n",
        dir.display(),
        free_port()
    );
    std::fs::create_dir_all(dir.join("raft")).unwrap();
    std::fs::write(dir.join("bao.hcl"), config).unwrap();
    let mut bao = Bao {
        bin: bin.to_string(),
        dir,
        addr: format!("http://127.0.0.1:{port}"),
        child: None,
        unseal_key: String::new(),
    };
    bao.spawn();
    let init: Value = ureq::put(&format!("{}/v1/sys/init", bao.addr))
        .send_string(&json!({"secret_shares": 1, "secret_threshold": 1}).to_string())
        .unwrap()
        .into_json()
        .unwrap();
    bao.unseal_key = init["keys"][0].as_str().unwrap().to_string();
    let token = init["root_token"].as_str().unwrap().to_string();
    bao.unseal_and_wait(&token);
    let target = Target {
        name: "openbao".to_string(),
        addr: bao.addr.clone(),
        token,
        pid: bao.pid(),
    };
    (bao, target)
}

fn body(f: impl Fn(usize) -> (String, String) + Send + Sync + 'static) -> BodyFn {
    Arc::new(f)
}

fn fixed(path: &str, value: Value) -> BodyFn {
    let (path, text) = (path.to_string(), value.to_string());
    body(move |_| (path.clone(), text.clone()))
}

/// How both servers send database passwords (`BENCH_PASSWORD_AUTH`): `password`, or
/// `scram-sha-256` for SCRAM verifiers computed by the server instead of PostgreSQL.
fn password_authentication() -> String {
    std::env::var("BENCH_PASSWORD_AUTH").unwrap_or_else(|_| "password".to_string())
}

/// Alternating rounds of the engine-overhead scenario.
const OVERHEAD_ROUNDS: usize = 5;

/// The median of `values` and their range as text ("lo to hi").
fn median_and_range(values: &mut [f64]) -> (f64, String) {
    values.sort_by(f64::total_cmp);
    let median = values.get(values.len() / 2).copied().unwrap_or(f64::NAN);
    let (low, high) = (
        values.first().copied().unwrap_or(f64::NAN),
        values.last().copied().unwrap_or(f64::NAN),
    );
    (median, format!("{low:.0} to {high:.0}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let smoke = args.iter().any(|a| a == "--smoke");
    let scale = if smoke { Scale::smoke() } else { Scale::full() };
    let out = args
        .iter()
        .rposition(|a| a == "--out")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| "bench/results.json".to_string());
    let bao_bin = if smoke {
        None
    } else {
        std::env::var("BAO_BIN").ok().filter(|b| !b.is_empty())
    };
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    println!(
        "machine: {cores} cores, {cpu}; mode: {}",
        if smoke { "smoke" } else { "full" }
    );

    let pg = Postgres::start(false);
    let tables: Vec<String> = (1..=10)
        .map(|i| format!("CREATE TABLE t{i} (id int, v text)"))
        .collect();
    pg.admin("gradedb", &tables.join("; "));
    pg.admin(
        "gradedb",
        &format!("GRANT ALL ON ALL TABLES IN SCHEMA public TO {PG_ROOT_USER} WITH GRANT OPTION"),
    );

    let mut coffer = Coffer::with_config(
        &temp_dir("bench"),
        &fixtures_config().replace("revoke_attempts = 3", "revoke_attempts = 6"),
    );
    let unseal_keys = coffer.init_and_unseal(1, 1);
    let mut coffer_target = Target {
        name: "coffer".to_string(),
        addr: coffer.addr.clone(),
        token: coffer.token.clone(),
        pid: coffer.pid().unwrap_or(0),
    };
    let root_serial = configure(&coffer_target, &pg);
    let mut targets = vec![coffer_target.clone()];
    let mut bao = None;
    if let Some(bin) = &bao_bin {
        let (child, target) = start_openbao(bin);
        configure(&target, &pg);
        targets.push(target);
        bao = Some(child);
    }

    let mut rows: Vec<Row> = Vec::new();
    // BENCH_ONLY=pki-issue-ec,engine-overhead runs only the scenarios named (by prefix).
    let only: Option<Vec<String>> = std::env::var("BENCH_ONLY")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
    let want = |name: &str| {
        only.as_ref()
            .is_none_or(|o| o.iter().any(|p| name.starts_with(p.as_str())))
    };
    let budget = scale.limit_budget;
    let limit_ec = limits::ec_issue(budget)?;
    let limit_rsa = limits::rsa_keygen(budget)?;
    let limit_sign = limits::ecdsa_sign(budget)?;
    let dsn = format!(
        "host=127.0.0.1 port={} user={PG_ROOT_USER} password={PG_ROOT_PASSWORD} dbname=gradedb",
        pg.port
    );
    let raw_password = match password_authentication().as_str() {
        "scram-sha-256" => {
            coffer_host::caps::sql::scram_sha256_verifier(b"Raw-password-123", b"raw-limit-salt16")
        }
        _ => "Raw-password-123".to_string(),
    };
    let (limit_create, limit_revoke) =
        limits::sql(&dsn, scale.db_creds.min(300), &raw_password).await?;
    println!(
        "limits (one core): ec issue {limit_ec:.0}/s, rsa keygen {limit_rsa:.1}/s, ecdsa sign {limit_sign:.0}/s, sql create {limit_create:.0}/s, sql revoke {limit_revoke:.0}/s"
    );

    for &c in scale.concurrency.iter().filter(|_| want("pki-issue-ec")) {
        for target in &targets {
            let stats = load::run(
                target,
                "POST",
                c,
                scale.issue_ec,
                false,
                fixed(
                    "pki/issue/ec",
                    json!({"common_name": "x.bench.local", "ttl": "1h"}),
                ),
            )
            .await;
            rows.push(Row {
                scenario: "pki-issue-ec".into(),
                server: target.name.clone(),
                concurrency: c,
                stats,
                limit: Some(limit_ec * cores as f64),
                note: "limit: keygen+build+sign in-process, all cores".into(),
            });
        }
    }
    for &c in scale
        .concurrency
        .iter()
        .filter(|c| **c <= 4 && want("pki-issue-rsa"))
    {
        for target in &targets {
            let stats = load::run(
                target,
                "POST",
                c,
                scale.issue_rsa,
                false,
                fixed(
                    "pki/issue/rsa",
                    json!({"common_name": "x.bench.local", "ttl": "1h"}),
                ),
            )
            .await;
            rows.push(Row {
                scenario: "pki-issue-rsa".into(),
                server: target.name.clone(),
                concurrency: c,
                stats,
                limit: Some(limit_rsa * c.min(cores) as f64),
                note: "limit: RSA-2048 keygen on min(c, cores)".into(),
            });
        }
    }
    if want("pki-issue-rsa") && !smoke {
        // Coffer refills its RSA key pool in the background after a burst (~5 s of one
        // core); let that finish so it does not run during the next scenario.
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    let csr = limits::ec_csr()?;
    for &c in scale.concurrency.iter().filter(|_| want("pki-sign-ec")) {
        for target in &targets {
            let stats = load::run(
                target,
                "POST",
                c,
                scale.sign_ec,
                false,
                fixed(
                    "pki/sign/ec",
                    json!({"common_name": "sign.bench.local", "csr": csr, "ttl": "1h"}),
                ),
            )
            .await;
            rows.push(Row {
                scenario: "pki-sign-ec".into(),
                server: target.name.clone(),
                concurrency: c,
                stats,
                limit: Some(limit_sign * cores as f64),
                note: "limit: ECDSA P-256 signatures, all cores".into(),
            });
        }
    }
    for &c in scale.concurrency.iter().filter(|_| want("db-")) {
        for target in &targets {
            let created = load::run(
                target,
                "GET",
                c,
                scale.db_creds,
                true,
                fixed("database/creds/bench", Value::Null),
            )
            .await;
            let leases = Arc::new(created.lease_ids.clone());
            let revoked = load::run(
                target,
                "PUT",
                c,
                leases.len(),
                false,
                body(move |i| {
                    (
                        "sys/leases/revoke".to_string(),
                        json!({"lease_id": leases[i]}).to_string(),
                    )
                }),
            )
            .await;
            rows.push(Row {
                scenario: "db-creds".into(),
                server: target.name.clone(),
                concurrency: c,
                stats: created,
                limit: Some(limit_create),
                note: "limit: same SQL, one persistent connection".into(),
            });
            rows.push(Row {
                scenario: "db-revoke".into(),
                server: target.name.clone(),
                concurrency: c,
                stats: revoked,
                limit: Some(limit_revoke),
                note: "limit: same SQL, one persistent connection".into(),
            });
        }
    }
    if want("engine-overhead") {
        // Sequential requests, in alternating rounds (engine, native, authenticated native),
        // so drift in CPU frequency or cache state hits all three alike; the overhead is the
        // median of the per-round differences of mean latency.
        let sequential = |path: &'static str, count: usize| {
            load::run(
                &coffer_target,
                "GET",
                1,
                count,
                false,
                fixed(path, Value::Null),
            )
        };
        let per_round = (scale.overhead / OVERHEAD_ROUNDS).max(1);
        let (mut over_native, mut over_authenticated) = (Vec::new(), Vec::new());
        // The same differences in server CPU per request: latency at c=1 also carries
        // wake-ups and cache misses, CPU time is what the engine call itself costs.
        let (mut cpu_over_native, mut cpu_over_authenticated) = (Vec::new(), Vec::new());
        let mut engine_rounds = Vec::new();
        for _ in 0..OVERHEAD_ROUNDS {
            let engine = sequential("hostile/ok", per_round).await;
            let native = sequential("sys/health", per_round).await;
            // An authenticated native handler: the token lookup every engine request pays.
            let authenticated = sequential("auth/token/lookup-self", per_round).await;
            over_native.push((engine.mean_ms - native.mean_ms) * 1000.0);
            over_authenticated.push((engine.mean_ms - authenticated.mean_ms) * 1000.0);
            cpu_over_native.push(engine.server_cpu_us - native.server_cpu_us);
            cpu_over_authenticated.push(engine.server_cpu_us - authenticated.server_cpu_us);
            engine_rounds.push(engine);
        }
        let (native_us, native_range) = median_and_range(&mut over_native);
        let (authenticated_us, authenticated_range) = median_and_range(&mut over_authenticated);
        let (cpu_native_us, _) = median_and_range(&mut cpu_over_native);
        let (cpu_authenticated_us, _) = median_and_range(&mut cpu_over_authenticated);
        engine_rounds.sort_by(|a, b| a.mean_ms.total_cmp(&b.mean_ms));
        let engine = engine_rounds.swap_remove(engine_rounds.len() / 2);
        rows.push(Row {
            scenario: "engine-overhead".into(),
            server: "coffer".into(),
            concurrency: 1,
            stats: engine,
            limit: None,
            note: format!(
                "median over {OVERHEAD_ROUNDS} alternating rounds: {native_us:.0} µs/request above native sys/health (rounds {native_range}); {authenticated_us:.0} µs above authenticated native auth/token/lookup-self (rounds {authenticated_range}); server CPU per request {cpu_native_us:.0} / {cpu_authenticated_us:.0} µs above those two"
            ),
        });
    }

    if want("acl-check") {
        rows.extend(acl_check(&coffer_target, &scale).await);
    }

    if want("audit-") {
        rows.extend(audit_overhead(&coffer_target, &scale, &pg).await);
    }

    if want("ha-") {
        let embedded = rows
            .iter()
            .map(|r| {
                (
                    r.scenario.clone(),
                    r.server.clone(),
                    r.concurrency,
                    r.stats.throughput,
                )
            })
            .collect::<Vec<_>>();
        rows.extend(ha_storage(&pg, &scale, &embedded).await);
    }

    if want("lease-") {
        // lease-scale: live leases, RSS per lease, restart to first request, expiry storm.
        // Warm up first at the same concurrency, so the marginal RSS per lease is measured,
        // not the instance pool's slots becoming resident.
        let _ = load::run(
            &coffer_target,
            "GET",
            32,
            2000.min(scale.leases_live),
            false,
            fixed("leasing/creds/warmup?ttl=86400", Value::Null),
        )
        .await;
        let rss_before = load::rss(coffer_target.pid);
        let live = load::run(
            &coffer_target,
            "GET",
            32,
            scale.leases_live,
            false,
            fixed("leasing/creds/scale?ttl=86400", Value::Null),
        )
        .await;
        let rss_after = load::rss(coffer_target.pid);
        let per_lease =
            rss_after.saturating_sub(rss_before) as f64 / scale.leases_live.max(1) as f64;
        rows.push(Row {
            scenario: "lease-create".into(),
            server: "coffer".into(),
            concurrency: 32,
            stats: live,
            limit: None,
            note: format!(
                "{} live leases; RSS grew {:.0} B/lease",
                scale.leases_live, per_lease
            ),
        });
        coffer.stop();
        let restart = Instant::now();
        coffer.start();
        coffer.unseal(&unseal_keys);
        let first = ureq::get(&format!("{}/v1/secret/none", coffer.addr))
            .set("X-Vault-Token", &coffer.token)
            .call();
        let restart_s = restart.elapsed().as_secs_f64();
        let first_ok = matches!(first, Ok(_) | Err(ureq::Error::Status(404, _)));
        coffer_target.pid = coffer.pid().unwrap_or(0);
        if let Some(first) = targets.first_mut() {
            first.pid = coffer_target.pid;
        }
        let restart_stats = Stats {
            seconds: restart_s,
            ok: usize::from(first_ok),
            ..Stats::default()
        };
        rows.push(Row {
            scenario: "lease-restart".into(),
            server: "coffer".into(),
            concurrency: 1,
            stats: restart_stats,
            limit: None,
            note: format!(
                "{restart_s:.2} s from process start to first served request with {} leases",
                scale.leases_live
            ),
        });
        let api_revoke_rate = rows
            .iter()
            .filter(|r| r.scenario == "db-revoke" && r.server == "coffer")
            .map(|r| r.stats.throughput)
            .fold(0.0, f64::max);
        let storm_ttl = 20u64.max((scale.leases_storm / 500) as u64 + 5);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        let expire_at = now + storm_ttl;
        let storm = load::run(
            &coffer_target,
            "GET",
            32,
            scale.leases_storm,
            false,
            body(move |_| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                (
                    format!(
                        "leasing/creds/storm?ttl={}",
                        expire_at.saturating_sub(now).max(1)
                    ),
                    String::new(),
                )
            }),
        )
        .await;
        while std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
            < expire_at
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let drain_started = Instant::now();
        let mut during = Stats::default();
        let mut p99s: Vec<f64> = Vec::new();
        loop {
            let batch = load::run(
                &coffer_target,
                "GET",
                4,
                400,
                false,
                fixed("sys/health", Value::Null),
            )
            .await;
            p99s.push(batch.p99_ms);
            during.ok += batch.ok;
            during.errors += batch.errors;
            let remaining = ureq::request(
                "LIST",
                &format!("{}/v1/sys/leases/lookup/leasing/creds/storm/", coffer.addr),
            )
            .set("X-Vault-Token", &coffer.token)
            .call();
            if matches!(remaining, Err(ureq::Error::Status(404, _)))
                || drain_started.elapsed() > Duration::from_secs(600)
            {
                break;
            }
        }
        let drain = drain_started.elapsed().as_secs_f64();
        during.seconds = drain;
        during.throughput = scale.leases_storm as f64 / drain.max(1e-9);
        during.p99_ms = p99s.iter().copied().fold(0.0, f64::max);
        let _ = storm;
        rows.push(Row { scenario: "lease-expiry-storm".into(), server: "coffer".into(), concurrency: 4, stats: during, limit: Some(api_revoke_rate), note: format!("{} leases expiring in one second drained in {drain:.1} s; req/s = leases revoked per second; p99 = worst batch p99 of unrelated sys/health during the drain; limit = API revoke rate (db-revoke)", scale.leases_storm) });
    }

    // Token leases on both servers: the one cheap kind of lease OpenBao has (each token with
    // a TTL is tracked by its expiration manager), for the lease-scale contrast.
    if want("token-") {
        for target in targets.clone() {
            let create = |n: usize| {
                load::run(
                    &target,
                    "POST",
                    32,
                    n,
                    false,
                    fixed("auth/token/create", json!({"ttl": "24h"})),
                )
            };
            let _ = create(2000.min(scale.token_leases)).await;
            let before = load::rss(target.pid);
            let created = create(scale.token_leases).await;
            let per_token = load::rss(target.pid).saturating_sub(before) as f64
                / scale.token_leases.max(1) as f64;
            rows.push(Row {
                scenario: "token-lease-create".into(),
                server: target.name.clone(),
                concurrency: 32,
                stats: created,
                limit: None,
                note: format!(
                    "{} tokens with a 24 h TTL; RSS grew {per_token:.0} B/token",
                    scale.token_leases
                ),
            });
            let restart = Instant::now();
            let pid = if target.name == "coffer" {
                coffer.stop();
                coffer.start();
                coffer.unseal(&unseal_keys);
                coffer.pid().unwrap_or(0)
            } else if let Some(bao) = bao.as_mut() {
                bao.stop();
                bao.spawn();
                bao.unseal_and_wait(&target.token);
                bao.pid()
            } else {
                0
            };
            let served = ureq::get(&format!("{}/v1/auth/token/lookup-self", target.addr))
                .set("X-Vault-Token", &target.token)
                .call()
                .is_ok();
            let restart_s = restart.elapsed().as_secs_f64();
            for t in targets.iter_mut().filter(|t| t.name == target.name) {
                t.pid = pid;
            }
            if target.name == "coffer" {
                coffer_target.pid = pid;
            }
            rows.push(Row {
                scenario: "token-lease-restart".into(),
                server: target.name.clone(),
                concurrency: 1,
                stats: Stats {
                    seconds: restart_s,
                    ok: usize::from(served),
                    ..Stats::default()
                },
                limit: None,
                note: format!(
                    "{restart_s:.2} s from process start to the first authenticated request served, with the tokens (and every earlier lease) stored"
                ),
            });
        }
    }

    // Workload logins (a cert-manager fleet logging in for every certificate): AppRole on
    // both servers, same role, same secret ID, each login a new token with a TTL.
    if want("login-") {
        for target in &targets {
            let (role_id, secret_id) = approle(target);
            let body = json!({"role_id": role_id, "secret_id": secret_id});
            let login = |n: usize| {
                load::run(
                    target,
                    "POST",
                    32,
                    n,
                    false,
                    fixed("auth/approle/login", body.clone()),
                )
            };
            let _ = login(500.min(scale.logins)).await;
            let before = load::rss(target.pid);
            let stats = login(scale.logins).await;
            let per_token =
                load::rss(target.pid).saturating_sub(before) as f64 / scale.logins.max(1) as f64;
            rows.push(Row {
                scenario: "login-approle".into(),
                server: target.name.clone(),
                concurrency: 32,
                stats,
                limit: None,
                note: format!(
                    "{} AppRole logins, each minting a 1 h token; RSS grew {per_token:.0} B/token",
                    scale.logins
                ),
            });
        }
    }

    if want("crl-") {
        // crl-growth: the cost of the first vs the last 1,000 revocations, then a CRL fetch.
        let issued = load::run(
            &coffer_target,
            "POST",
            32,
            scale.crl_revocations,
            false,
            fixed(
                "pki/issue/ec",
                json!({"common_name": "crl.bench.local", "ttl": "24h"}),
            ),
        )
        .await;
        let serials: Vec<String> = list_serials(&coffer_target)
            .into_iter()
            .filter(|s| *s != root_serial)
            .collect();
        let window = 1000.min(serials.len() / 2).max(1);
        let serials = Arc::new(serials);
        let first_window = load::run(&coffer_target, "POST", 1, window, false, {
            let s = serials.clone();
            body(move |i| {
                (
                    "pki/revoke".to_string(),
                    json!({"serial_number": s[i]}).to_string(),
                )
            })
        })
        .await;
        let middle = serials.len().saturating_sub(window);
        let _ = load::run(
            &coffer_target,
            "POST",
            8,
            middle.saturating_sub(window),
            false,
            {
                let s = serials.clone();
                body(move |i| {
                    (
                        "pki/revoke".to_string(),
                        json!({"serial_number": s[window + i]}).to_string(),
                    )
                })
            },
        )
        .await;
        let last_window = load::run(&coffer_target, "POST", 1, window, false, {
            let s = serials.clone();
            body(move |i| {
                (
                    "pki/revoke".to_string(),
                    json!({"serial_number": s[middle + i]}).to_string(),
                )
            })
        })
        .await;
        let fetch_started = Instant::now();
        let crl = ureq::get(&format!("{}/v1/pki/crl", coffer.addr))
            .call()
            .map(|r| r.into_string().map(|t| t.len()).unwrap_or(0))
            .unwrap_or(0);
        let fetch = fetch_started.elapsed().as_secs_f64();
        let ratio = last_window.mean_ms / first_window.mean_ms.max(1e-9);
        let _ = issued;
        rows.push(Row {
            scenario: "crl-revoke-first-1k".into(),
            server: "coffer".into(),
            concurrency: 1,
            stats: first_window,
            limit: None,
            note: format!("{} revocations in total", serials.len()),
        });
        rows.push(Row {
            scenario: "crl-revoke-last-1k".into(),
            server: "coffer".into(),
            concurrency: 1,
            stats: last_window,
            limit: None,
            note: format!("last/first = {ratio:.2}; CRL fetch {fetch:.2} s ({crl} bytes)"),
        });
    }

    print_table(&rows, &targets);
    write_json(&out, &rows, cores, &cpu, smoke)?;
    if let Some(mut bao) = bao {
        bao.stop();
    }
    if rows
        .iter()
        .any(|r| r.stats.ok == 0 && !r.scenario.ends_with("-restart"))
    {
        anyhow::bail!("a scenario completed no request");
    }
    Ok(())
}

fn list_serials(target: &Target) -> Vec<String> {
    let value: Value = ureq::request("LIST", &format!("{}/v1/pki/certs", target.addr))
        .set("X-Vault-Token", &target.token)
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    value["data"]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k.as_str().map(str::to_string))
        .collect()
}

fn print_table(rows: &[Row], targets: &[Target]) {
    println!(
        "\n| scenario | server | c | ok | err | req/s | p50 ms | p99 ms | server CPU µs/req | client CPU | vs OpenBao | vs limit | note |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        let peer = rows.iter().find(|r| {
            r.scenario == row.scenario && r.concurrency == row.concurrency && r.server == "openbao"
        });
        let vs_peer = match (row.server.as_str(), peer) {
            ("coffer", Some(p)) if p.stats.throughput > 0.0 => {
                format!("{:.2}×", row.stats.throughput / p.stats.throughput)
            }
            _ => "–".to_string(),
        };
        let vs_limit = row
            .limit
            .filter(|l| *l > 0.0)
            .map(|l| format!("{:.2}×", row.stats.throughput / l))
            .unwrap_or_else(|| "–".to_string());
        println!(
            "| {} | {} | {} | {} | {} | {:.1} | {:.2} | {:.2} | {:.0} | {:.0}% | {} | {} | {} |",
            row.scenario,
            row.server,
            row.concurrency,
            row.stats.ok,
            row.stats.errors,
            row.stats.throughput,
            row.stats.p50_ms,
            row.stats.p99_ms,
            row.stats.server_cpu_us,
            row.stats.client_cpu * 100.0,
            vs_peer,
            vs_limit,
            row.note
        );
        if let Some(error) = &row.stats.first_error {
            println!("|   | first error: {} |", error.replace('|', "/"));
        }
    }
    for target in targets {
        println!(
            "peak RSS {}: {:.1} MiB",
            target.name,
            load::peak_rss(target.pid) as f64 / (1 << 20) as f64
        );
    }
}

fn write_json(out: &str, rows: &[Row], cores: usize, cpu: &str, smoke: bool) -> anyhow::Result<()> {
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| json!({
            "scenario": r.scenario, "server": r.server, "concurrency": r.concurrency, "ok": r.stats.ok, "errors": r.stats.errors,
            "throughput": r.stats.throughput, "p50_ms": r.stats.p50_ms, "p99_ms": r.stats.p99_ms, "mean_ms": r.stats.mean_ms,
            "client_cpu": r.stats.client_cpu, "server_cpu_us_per_request": r.stats.server_cpu_us, "limit": r.limit, "note": r.note, "first_error": r.stats.first_error,
        }))
        .collect();
    let report = json!({ "cores": cores, "cpu": cpu, "mode": if smoke { "smoke" } else { "full" }, "rows": rows });
    if let Some(parent) = std::path::Path::new(out).parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(out, serde_json::to_string_pretty(&report)?)?;
    println!("wrote {out}");
    Ok(())
}

/// Policies in the ACL scenario, and `path` blocks in each (the issue's 20 × 50).
const ACL_POLICIES: usize = 20;
const ACL_PATHS_PER_POLICY: usize = 50;

/// Policy `index` of the ACL scenario: exact paths, `*` prefixes, `+` segments, a deny
/// and parameter rules, spread over several mounts like a platform team's policies.
fn acl_policy(index: usize) -> String {
    let mut text = String::new();
    for path in 0..ACL_PATHS_PER_POLICY {
        let block = match path % 5 {
            0 => format!(
                "path \"secret/team{index}/app{path}\" {{ capabilities = [\"read\", \"list\"] }}\n"
            ),
            1 => format!(
                "path \"kv{index}/data/svc{path}/*\" {{ capabilities = [\"create\", \"update\", \"read\"] }}\n"
            ),
            2 => format!(
                "path \"database/creds/+/role{index}-{path}\" {{ capabilities = [\"read\"] }}\n"
            ),
            3 => format!(
                "path \"pki{index}/issue/web{path}\" {{\n  capabilities = [\"update\"]\n  allowed_parameters = {{ \"common_name\" = [\"*.svc{path}.example.com\"], \"ttl\" = [] }}\n}}\n"
            ),
            _ => format!(
                "path \"secret/team{index}/app{path}/private\" {{ capabilities = [\"deny\"] }}\n"
            ),
        };
        text.push_str(&block);
    }
    text
}

/// The cost of the ACL check. In process: compile 20 policies of 50 paths once, then
/// decide requests that hit exact, glob, `+` and deny rules and miss; p50/p99 per check.
/// Over HTTP: `auth/token/lookup-self` (a native handler) with a token holding those 20
/// policies plus `default`, against one holding only `default`, in alternating rounds at
/// c=1; the p50 difference is what the bigger policy set costs a request.
async fn acl_check(target: &Target, scale: &Scale) -> Vec<Row> {
    use coffer_host::acl::{Acl, AclRequest, Operation, Policy};
    let texts: Vec<String> = (0..ACL_POLICIES).map(acl_policy).collect();
    let compile_started = Instant::now();
    let policies: Vec<Policy> = texts
        .iter()
        .enumerate()
        .map(|(i, text)| Policy::parse(&format!("p{i}"), text).expect("bench policy parses"))
        .collect();
    let acl = Acl::new(&policies);
    let compile_ms = compile_started.elapsed().as_secs_f64() * 1000.0;
    let mut requests: Vec<(String, Operation)> = Vec::new();
    for i in 0..ACL_POLICIES {
        for p in (0..ACL_PATHS_PER_POLICY).step_by(7) {
            requests.push((format!("secret/team{i}/app{p}"), Operation::Read));
            requests.push((format!("kv{i}/data/svc{p}/deep/key"), Operation::Update));
            requests.push((format!("database/creds/blue/role{i}-{p}"), Operation::Read));
            requests.push((format!("secret/team{i}/app{p}/private"), Operation::Read));
            requests.push((format!("nowhere/{i}/{p}"), Operation::Read));
        }
    }
    let rounds = if scale.overhead >= 1000 { 200 } else { 5 };
    let mut samples = Vec::with_capacity(requests.len() * rounds);
    let mut allowed = 0usize;
    for _ in 0..rounds {
        for (path, operation) in &requests {
            let started = Instant::now();
            let outcome = acl.allowed(&AclRequest::new(path, *operation));
            samples.push(started.elapsed().as_nanos() as f64);
            allowed += usize::from(outcome.is_ok());
        }
    }
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];
    let (p50_ns, p99_ns) = (at(0.5), at(0.99));
    let in_process = Stats {
        ok: samples.len(),
        throughput: 1e9 / (samples.iter().sum::<f64>() / samples.len() as f64),
        p50_ms: p50_ns / 1e6,
        p99_ms: p99_ns / 1e6,
        mean_ms: samples.iter().sum::<f64>() / samples.len() as f64 / 1e6,
        ..Stats::default()
    };
    let mut rows = vec![Row {
        scenario: "acl-check".into(),
        server: "coffer".into(),
        concurrency: 1,
        stats: in_process,
        limit: None,
        note: format!(
            "in process: {ACL_POLICIES} policies x {ACL_PATHS_PER_POLICY} paths, {} decisions ({allowed} allowed): p50 {:.2} µs, p99 {:.2} µs per check (target p50 <= 5 µs: {}); first compile of the set {compile_ms:.2} ms",
            samples.len(),
            p50_ns / 1000.0,
            p99_ns / 1000.0,
            if p50_ns <= 5000.0 { "met" } else { "MISSED" }
        ),
    }];

    // Over HTTP, against the native handler.
    let mut names = vec!["default".to_string()];
    for (i, text) in texts.iter().enumerate() {
        let name = format!("bench-acl-{i}");
        blocking(
            target,
            "PUT",
            &format!("sys/policies/acl/{name}"),
            json!({ "policy": text }),
        );
        names.push(name);
    }
    let token_with = |policies: &[String]| -> Target {
        let created = blocking(
            target,
            "POST",
            "auth/token/create",
            json!({ "policies": policies, "ttl": "2h" }),
        );
        Target {
            token: created["auth"]["client_token"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            ..target.clone()
        }
    };
    let many = token_with(&names);
    let few = token_with(&["default".to_string()]);
    let per_round = (scale.overhead / OVERHEAD_ROUNDS).max(1);
    let (mut differences, mut many_rounds) = (Vec::new(), Vec::new());
    for _ in 0..OVERHEAD_ROUNDS {
        let with_many = load::run(
            &many,
            "GET",
            1,
            per_round,
            false,
            fixed("auth/token/lookup-self", Value::Null),
        )
        .await;
        let with_few = load::run(
            &few,
            "GET",
            1,
            per_round,
            false,
            fixed("auth/token/lookup-self", Value::Null),
        )
        .await;
        differences.push((with_many.p50_ms - with_few.p50_ms) * 1000.0);
        many_rounds.push(with_many);
    }
    let (difference_us, range) = median_and_range(&mut differences);
    many_rounds.sort_by(|a, b| a.p50_ms.total_cmp(&b.p50_ms));
    let median_round = many_rounds.swap_remove(many_rounds.len() / 2);
    rows.push(Row {
        scenario: "acl-check".into(),
        server: "coffer".into(),
        concurrency: 1,
        stats: median_round,
        limit: None,
        note: format!(
            "HTTP auth/token/lookup-self with {ACL_POLICIES} policies + default vs default alone: p50 {difference_us:+.1} µs per request (median of {OVERHEAD_ROUNDS} alternating rounds: {range})"
        ),
    });
    rows
}

/// The two loads the audit and HA rows repeat: EC certificates and database credentials.
fn issue_and_creds(scale: &Scale) -> [(&'static str, &'static str, usize, BodyFn); 2] {
    [
        (
            "pki-issue-ec",
            "POST",
            scale.issue_ec,
            fixed(
                "pki/issue/ec",
                json!({"common_name": "x.bench.local", "ttl": "1h"}),
            ),
        ),
        (
            "db-creds",
            "GET",
            scale.db_creds,
            fixed("database/creds/bench", Value::Null),
        ),
    ]
}

/// Revokes the bench role's credentials and waits until PostgreSQL has dropped them, so
/// the next measurement starts from the same database.
fn drop_bench_users(target: &Target, pg: &Postgres) {
    blocking(
        target,
        "PUT",
        "sys/leases/revoke-prefix/database/creds/bench",
        Value::Null,
    );
    wait_for_no_users(pg);
}

/// Waits (up to 5 minutes) until no credential user is left in PostgreSQL: drops running
/// beside a measurement would slow its CREATE ROLEs.
fn wait_for_no_users(pg: &Postgres) {
    let started = Instant::now();
    while pg.roles_like("v-") > 0 && started.elapsed() < Duration::from_secs(300) {
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Rounds of `audit-*`: each runs the load without and with the device.
const AUDIT_ROUNDS: usize = 3;

/// `audit-pki-issue-ec` and `audit-db-creds`: the same load with one file device enabled
/// and without it, in alternating rounds on the same server, so drift hits both alike.
/// The row's stats are the median round with the device; its "limit" is the median
/// throughput without it, so "vs limit" is the throughput kept with auditing on.
async fn audit_overhead(target: &Target, scale: &Scale, pg: &Postgres) -> Vec<Row> {
    let dir = temp_dir("bench-audit");
    let log = dir.join("audit.log");
    let concurrency = scale
        .concurrency
        .iter()
        .copied()
        .filter(|c| *c <= 8)
        .max()
        .unwrap_or(1);
    let mut rows = Vec::new();
    for (name, method, count, request) in issue_and_creds(scale) {
        let scenario = format!("audit-{name}");
        let (mut without, mut with, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..AUDIT_ROUNDS {
            // Alternating which goes first, and every run starting from the same database
            // (the users of the previous run dropped), so neither side inherits the
            // other's leftovers.
            let mut measured = [None, None];
            for audited in [round % 2 == 1, round % 2 == 0] {
                if audited {
                    blocking(
                        target,
                        "PUT",
                        "sys/audit/bench",
                        json!({"type": "file", "options": {"file_path": log.display().to_string()}}),
                    );
                }
                let stats =
                    load::run(target, method, concurrency, count, false, request.clone()).await;
                if audited {
                    blocking(target, "DELETE", "sys/audit/bench", Value::Null);
                }
                if scenario == "audit-db-creds" {
                    drop_bench_users(target, pg);
                }
                measured[usize::from(audited)] = Some(stats);
            }
            let [Some(off), Some(on)] = measured else {
                continue;
            };
            if off.throughput > 0.0 {
                ratios.push(on.throughput / off.throughput);
            }
            without.push(off.throughput);
            with.push(on);
        }
        let (baseline, _) = median_and_range(&mut without);
        let (ratio, _) = median_and_range(&mut ratios);
        let range = format!(
            "{:.2} to {:.2}",
            ratios.first().copied().unwrap_or(f64::NAN),
            ratios.last().copied().unwrap_or(f64::NAN)
        );
        with.sort_by(|a, b| a.throughput.total_cmp(&b.throughput));
        let log_bytes = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        rows.push(Row {
            scenario,
            server: "coffer".into(),
            concurrency,
            stats: with.swap_remove(with.len() / 2),
            limit: Some(baseline),
            note: format!(
                "limit: the same load without an audit device, {AUDIT_ROUNDS} alternating rounds; with/without {ratio:.2} (rounds {range}); file device, one write(2) per entry, no fsync; log {:.1} MiB",
                log_bytes as f64 / f64::from(1u32 << 20)
            ),
        });
        let _ = std::fs::remove_file(&log);
    }
    rows
}

/// `ha-*`: the same pki-issue-ec and db-creds load on a node whose storage is PostgreSQL
/// (HA on, Vault's 15 s lock TTL), beside the embedded store's rows (and OpenBao's, on
/// raft) of this run at the same concurrency; then the failover time: a second node, the
/// first one killed (SIGKILL), until the second is active.
async fn ha_storage(
    pg: &Postgres,
    scale: &Scale,
    embedded: &[(String, String, usize, f64)],
) -> Vec<Row> {
    pg.admin(
        "postgres",
        "CREATE DATABASE coffer_bench_storage OWNER vault_root",
    );
    let config = fixtures_config().replace(
        "[storage]\npath = \"{dir}/data/coffer.db\"",
        &format!(
            "[storage]\ntype = \"postgresql\"\nconnection_url = \"host=127.0.0.1 port={} user={PG_ROOT_USER} password={PG_ROOT_PASSWORD} dbname=coffer_bench_storage\"",
            pg.port
        ),
    );
    let is_active = |addr: &str| {
        ureq::get(&format!("{addr}/v1/sys/leader"))
            .call()
            .ok()
            .and_then(|r| r.into_json::<Value>().ok())
            .is_some_and(|v| v["is_self"] == true)
    };
    let wait_active = |addr: &str, limit: Duration| {
        let started = Instant::now();
        while !is_active(addr) {
            assert!(started.elapsed() < limit, "{addr} did not become active");
            std::thread::sleep(Duration::from_millis(20));
        }
        started.elapsed()
    };
    let mut first = Coffer::with_config(&temp_dir("bench-ha-a"), &config);
    let keys = first.init_and_unseal(1, 1);
    wait_active(&first.addr, Duration::from_secs(60));
    let target = Target {
        name: "coffer".to_string(),
        addr: first.addr.clone(),
        token: first.token.clone(),
        pid: first.pid().unwrap_or(0),
    };
    configure(&target, pg);
    wait_for_no_users(pg);
    let concurrency = scale
        .concurrency
        .iter()
        .copied()
        .filter(|c| *c <= 8)
        .max()
        .unwrap_or(1);
    let peer = |scenario: &str, server: &str| {
        embedded
            .iter()
            .find(|(s, v, c, _)| s == scenario && v == server && *c == concurrency)
            .map(|(_, _, _, t)| *t)
    };
    let mut rows = Vec::new();
    for (scenario, method, count, request) in issue_and_creds(scale) {
        let stats = load::run(&target, method, concurrency, count, false, request).await;
        let bao = peer(scenario, "openbao")
            .map(|t| {
                format!(
                    "; OpenBao (raft) {t:.0}/s, this {:.2}×",
                    stats.throughput / t
                )
            })
            .unwrap_or_default();
        rows.push(Row {
            scenario: format!("ha-pg-{scenario}"),
            server: "coffer".into(),
            concurrency,
            limit: peer(scenario, "coffer"),
            note: format!("limit: the embedded store's {scenario} row at c={concurrency}; storage in PostgreSQL, HA on, one node{bao}"),
            stats,
        });
    }
    drop_bench_users(&target, pg);

    // Failover: a standby, then the active killed.
    let mut second = Coffer::with_config(&temp_dir("bench-ha-b"), &config);
    second.token = first.token.clone();
    second.unseal(&keys);
    let standby_ready = Instant::now();
    while ureq::get(&format!("{}/v1/sys/leader", second.addr))
        .call()
        .ok()
        .and_then(|r| r.into_json::<Value>().ok())
        .is_none_or(|v| v["leader_address"] != first.addr.as_str())
    {
        assert!(
            standby_ready.elapsed() < Duration::from_secs(30),
            "the standby never saw the active"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    first.kill();
    let failover = wait_active(&second.addr, Duration::from_secs(120));
    rows.push(Row {
        scenario: "ha-failover".into(),
        server: "coffer".into(),
        concurrency: 1,
        stats: Stats {
            seconds: failover.as_secs_f64(),
            ok: 1,
            ..Stats::default()
        },
        limit: None,
        note: format!(
            "kill -9 of the active to the standby serving as active: {:.1} s (lock TTL 15 s, Vault's default; a lower lock_ttl shortens it)",
            failover.as_secs_f64()
        ),
    });
    second.stop();
    rows
}
