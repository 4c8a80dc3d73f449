//! Harness for end-to-end tests: starts the real `coffer` binary on a free loopback port
//! (dev mode, or from a config file) and drives it over HTTP and through its CLI.
//!
//! Binaries come from `COFFER_BIN` / `COFFER_PLUGIN_DIR`, or the workspace's
//! `target/debug` and `target/wasm32-wasip2/debug` (built by `scripts/build-components`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test harness: failing loudly is the point"
)]

pub mod tutorial;

/// The fake kube-apiserver and service-account JWTs of the Kubernetes auth tests.
pub mod kube;

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use serde_json::{Value, json};

/// A command's stdout (trailing whitespace trimmed), failing the test if it failed.
pub fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "command failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .trim_end()
        .to_string()
}

/// Root token used by dev-mode servers.
pub const DEV_TOKEN: &str = "root";
/// How long a server may take to answer its first request (first run compiles components).
const STARTUP_DEADLINE: Duration = Duration::from_secs(120);

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The coffer binary.
pub fn binary() -> PathBuf {
    std::env::var_os("COFFER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/debug/coffer"))
}

/// Directory holding the built components.
pub fn plugin_dir() -> PathBuf {
    std::env::var_os("COFFER_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/wasm32-wasip2/debug"))
}

/// A shared compile cache, so each test server does not recompile every component.
pub fn cache_dir() -> PathBuf {
    workspace().join("target/coffer-test-cache")
}

/// A fresh temporary directory.
pub fn temp_dir(label: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("coffer-{label}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

/// An HTTP reply.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Body parsed as JSON, if it was JSON.
    pub json: Value,
    /// Raw body text.
    pub text: String,
    /// Content-Type header.
    pub content_type: String,
}

impl Reply {
    /// `data` of an envelope.
    pub fn data(&self) -> &Value {
        &self.json["data"]
    }
    /// The `errors` array joined.
    pub fn errors(&self) -> String {
        self.json["errors"]
            .as_array()
            .map(|e| {
                e.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default()
    }
}

/// A running coffer server.
pub struct Coffer {
    child: Option<Child>,
    /// `http://127.0.0.1:port`.
    pub addr: String,
    /// HOME for the server and CLI (token file lives here).
    pub home: PathBuf,
    /// Token used by `call`.
    pub token: String,
    log: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// A directory this value created and removes when dropped (dev mode's HOME).
    owned_dir: Option<PathBuf>,
}

impl Coffer {
    /// A dev-mode server with root token `root`.
    pub fn dev() -> Self {
        let home = temp_dir("home");
        let port = free_port();
        let args = vec![
            "server".to_string(),
            "-dev".to_string(),
            format!("-dev-root-token-id={DEV_TOKEN}"),
            format!("-dev-listen-address=127.0.0.1:{port}"),
        ];
        let mut coffer = Self::spawn(home.clone(), port, args);
        coffer.token = DEV_TOKEN.to_string();
        coffer.owned_dir = Some(home);
        coffer
    }

    /// A server from a config file whose `[listener] address` is filled in; not
    /// initialized. `config` may use `{addr}`, `{dir}` and `{plugins}` placeholders.
    pub fn with_config(dir: &Path, config: &str) -> Self {
        let port = free_port();
        let text = config
            .replace("{addr}", &format!("127.0.0.1:{port}"))
            .replace("{dir}", &dir.display().to_string())
            .replace("{plugins}", &plugin_dir().display().to_string());
        let path = dir.join("coffer.toml");
        std::fs::write(&path, text).unwrap();
        Self::spawn(
            dir.to_path_buf(),
            port,
            vec![
                "server".to_string(),
                "-config".to_string(),
                path.display().to_string(),
            ],
        )
    }

    /// Starts the binary and waits until it answers.
    fn spawn(home: PathBuf, port: u16, args: Vec<String>) -> Self {
        let log = home.join(format!("server-{}.log", uuid::Uuid::new_v4().simple()));
        let mut coffer = Self {
            child: None,
            addr: format!("http://127.0.0.1:{port}"),
            home,
            token: String::new(),
            log,
            args,
            env: Vec::new(),
            owned_dir: None,
        };
        coffer.start();
        coffer
    }

    /// (Re)starts the process with the same arguments.
    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(binary())
            .args(&self.args)
            .env("HOME", &self.home)
            .env("COFFER_PLUGIN_DIR", plugin_dir())
            .env("COFFER_CACHE_DIR", cache_dir())
            .env(
                "COFFER_LOG",
                std::env::var("COFFER_LOG")
                    .unwrap_or_else(|_| "info,coffer_host=debug".to_string()),
            )
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "coffer exited with {status} during start-up:\n{}",
                    self.log_text()
                );
            }
            if ureq::get(&format!("{}/v1/sys/health", self.addr))
                .timeout(Duration::from_secs(2))
                .call()
                .is_ok()
                || matches!(
                    ureq::get(&format!("{}/v1/sys/health", self.addr)).call(),
                    Err(ureq::Error::Status(..))
                )
            {
                return;
            }
            assert!(
                started.elapsed() < STARTUP_DEADLINE,
                "coffer did not answer in time:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What the server logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the server gracefully (SIGTERM) and waits.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server with SIGKILL (a crash).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `operator init` with `shares`/`threshold`, unseal, and use the root token.
    pub fn init_and_unseal(&mut self, shares: u8, threshold: u8) -> Vec<String> {
        let init = self.call(
            "PUT",
            "sys/init",
            Some(json!({"secret_shares": shares, "secret_threshold": threshold})),
        );
        assert_eq!(init.status, 200, "init: {}", init.text);
        let keys: Vec<String> = init.json["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap().to_string())
            .collect();
        self.token = init.json["root_token"].as_str().unwrap().to_string();
        self.unseal(&keys[..usize::from(threshold)]);
        keys
    }

    /// Submits unseal keys until unsealed.
    pub fn unseal(&self, keys: &[String]) {
        for key in keys {
            let reply = self.call("PUT", "sys/unseal", Some(json!({ "key": key })));
            assert_eq!(reply.status, 200, "unseal: {}", reply.text);
        }
        let status = self.call("GET", "sys/seal-status", None);
        assert_eq!(
            status.json["sealed"],
            json!(false),
            "still sealed: {}",
            status.text
        );
    }

    /// A request with this server's token and a JSON body.
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        let body = body.map(|b| b.to_string());
        self.raw(method, path, Some(&self.token), body.as_deref(), &[])
    }

    /// Writes ACL policy `name` (HCL), failing the test if the server refuses it.
    pub fn policy(&self, name: &str, hcl: &str) {
        let reply = self.call(
            "PUT",
            &format!("sys/policies/acl/{name}"),
            Some(json!({ "policy": hcl })),
        );
        assert_eq!(reply.status, 204, "policy {name}: {}", reply.text);
    }

    /// The names a `LIST` of `path` returns (none for a 404), failing on anything else.
    pub fn list(&self, path: &str) -> Vec<String> {
        let reply = self.call("LIST", path, None);
        match reply.status {
            404 => Vec::new(),
            200 => reply.data()["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k.as_str().unwrap().to_string())
                .collect(),
            other => panic!("LIST {path}: {other} {}", reply.text),
        }
    }

    /// A request with full control over token, body text and extra headers.
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let url = format!("{}/v1/{}", self.addr, path);
        let mut request = ureq::request(method, &url).timeout(Duration::from_secs(60));
        if let Some(token) = token.filter(|t| !t.is_empty()) {
            request = request.set("X-Vault-Token", token);
        }
        for (name, value) in headers {
            request = request.set(name, value);
        }
        let result = match body {
            Some(body) => request.send_string(body),
            None => request.call(),
        };
        let response = match result {
            Ok(response) => response,
            Err(ureq::Error::Status(_, response)) => response,
            Err(error) => panic!("{method} {url}: {error}"),
        };
        let status = response.status();
        let content_type = response
            .header("content-type")
            .unwrap_or_default()
            .to_string();
        let mut bytes = Vec::new();
        response
            .into_reader()
            .take(64 << 20)
            .read_to_end(&mut bytes)
            .unwrap();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            json,
            text,
            content_type,
        }
    }

    /// Runs the CLI against this server.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_with_stdin(args, None)
    }

    /// Runs the CLI with data on stdin.
    pub fn cli_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write;
        let mut child = Command::new(binary())
            .args(args)
            .env("HOME", &self.home)
            .env("COFFER_ADDR", &self.addr)
            .env("COFFER_TOKEN", &self.token)
            .env_remove("VAULT_ADDR")
            .env_remove("VAULT_TOKEN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    }

    /// The storage directory of a config-mode server (its HOME).
    pub fn dir(&self) -> &Path {
        &self.home
    }
}

impl Drop for Coffer {
    fn drop(&mut self) {
        self.kill();
        // Kept after a failure, for its server log.
        if let Some(dir) = self.owned_dir.take().filter(|_| !std::thread::panicking()) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Polls `check` until it returns true or `timeout` passes; returns whether it succeeded.
pub fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A config file mounting the test fixtures next to the built-in kv engine.
pub fn fixtures_config() -> String {
    let plugins = plugin_dir();
    let hostile = sha256_file(&plugins.join("coffer_fixture_hostile.wasm"));
    let leasing = sha256_file(&plugins.join("coffer_example_leasing.wasm"));
    format!(
        r#"
plugin_directory = "{{plugins}}"

[listener]
address = "{{addr}}"

[storage]
path = "{{dir}}/data/coffer.db"

[leases]
revoke_retry_base = "1s"
revoke_attempts = 3

[[plugin]]
name = "hostile"
file = "coffer_fixture_hostile.wasm"
sha256 = "{hostile}"

[[plugin]]
name = "hostile-auth"
type = "auth"
file = "coffer_fixture_hostile.wasm"
sha256 = "{hostile}"

[[plugin]]
name = "leasing"
file = "coffer_example_leasing.wasm"
sha256 = "{leasing}"

[[mount]]
path = "secret"
plugin = "kv"

[[mount]]
path = "hostile"
plugin = "hostile"
engine_call_timeout = "1s"
engine_memory_limit = 33554432

[[mount]]
path = "leasing"
plugin = "leasing"
default_lease_ttl = "1h"
max_lease_ttl = "2h"
"#
    )
}

/// Sends `GET <target>` over a raw socket, bypassing any client-side URL normalization;
/// returns the status code and body.
pub fn raw_get(addr: &str, target: &str, token: &str) -> (u16, String) {
    use std::io::Write;
    let host = addr.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    write!(stream, "GET {target} HTTP/1.1\r\nHost: {host}\r\nX-Vault-Token: {token}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A throwaway PostgreSQL cluster for one test, from the installed server binaries.
///
/// Admin statements go over its Unix socket as the `postgres` superuser (trust); Coffer
/// and the credentials it mints use TCP on 127.0.0.1 with SCRAM passwords. With TLS, the
/// cluster refuses non-TLS TCP connections (`hostnossl ... reject`).
pub struct Postgres {
    dir: PathBuf,
    bin: PathBuf,
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// Whether TCP connections must use TLS.
    pub tls: bool,
}

/// The root user the tutorial configures.
pub const PG_ROOT_USER: &str = "vault_root";
/// Its initial password.
pub const PG_ROOT_PASSWORD: &str = "vault-root-password";

fn pg_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("COFFER_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path().join("bin"))
                .filter(|p| p.join("initdb").exists())
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions.pop().expect(
        "PostgreSQL server binaries not found under /usr/lib/postgresql (set COFFER_PG_BIN)",
    )
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A command run as the `postgres` user when we are root (the server refuses root).
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn run_ok(mut command: Command, what: &str) -> String {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).to_string()
}

impl Postgres {
    /// Starts a cluster with database `gradedb`, two tables, and the tutorial's root user.
    pub fn start(tls: bool) -> Self {
        let bin = pg_bin_dir();
        let dir = temp_dir("pg");
        if is_root() {
            run_ok(
                {
                    let mut c = Command::new("chown");
                    c.args(["-R", "postgres:postgres"]).arg(&dir);
                    c
                },
                "chown",
            );
        }
        let data = dir.join("data");
        run_ok(
            {
                let mut c = as_postgres(&bin.join("initdb"));
                c.arg("-D").arg(&data).args([
                    "-U",
                    "postgres",
                    "-E",
                    "UTF8",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                ]);
                c
            },
            "initdb",
        );
        let port = free_port();
        let mut conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\nmax_connections = 200\nfsync = off\nlog_min_messages = warning\n",
            dir.display()
        );
        if tls {
            let key = dir.join("server.key");
            let cert = dir.join("server.crt");
            run_ok(
                {
                    let mut c = Command::new("openssl");
                    c.args([
                        "req",
                        "-x509",
                        "-newkey",
                        "rsa:2048",
                        "-nodes",
                        "-days",
                        "2",
                        "-subj",
                        "/CN=localhost",
                        "-addext",
                        "subjectAltName=IP:127.0.0.1,DNS:localhost",
                        "-keyout",
                    ])
                    .arg(&key)
                    .arg("-out")
                    .arg(&cert);
                    c
                },
                "openssl req",
            );
            if is_root() {
                run_ok(
                    {
                        let mut c = Command::new("chown");
                        c.arg("postgres:postgres").arg(&key).arg(&cert);
                        c
                    },
                    "chown key",
                );
            }
            run_ok(
                {
                    let mut c = Command::new("chmod");
                    c.arg("600").arg(&key);
                    c
                },
                "chmod key",
            );
            conf.push_str(&format!(
                "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
                cert.display(),
                key.display()
            ));
            let hba = "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\nhostnossl all all 127.0.0.1/32 reject\n";
            std::fs::write(data.join("pg_hba.conf"), hba).unwrap();
        }
        let mut existing = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        existing.push_str(&conf);
        std::fs::write(data.join("postgresql.conf"), existing).unwrap();
        let postgres = Self {
            dir,
            bin,
            port,
            tls,
        };
        postgres.pg_ctl("start");
        postgres.admin(
            "postgres",
            &format!(
                "CREATE ROLE {PG_ROOT_USER} WITH LOGIN CREATEROLE PASSWORD '{PG_ROOT_PASSWORD}'"
            ),
        );
        postgres.admin("postgres", "CREATE DATABASE gradedb");
        postgres.admin("gradedb", &format!(
            "CREATE TABLE grades (student text, grade int); INSERT INTO grades VALUES ('ada', 1); \
             CREATE TABLE courses (name text); CREATE SEQUENCE ids; \
             GRANT ALL ON ALL TABLES IN SCHEMA public TO {PG_ROOT_USER} WITH GRANT OPTION; \
             GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {PG_ROOT_USER} WITH GRANT OPTION;"
        ));
        postgres
    }

    fn pg_ctl(&self, action: &str) {
        let mut command = as_postgres(&self.bin.join("pg_ctl"));
        command
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("pg.log"))
            .args(["-w", "-t", "60", "-m", "fast", action]);
        run_ok(command, &format!("pg_ctl {action}"));
    }

    /// Stops the server (an outage).
    pub fn stop(&self) {
        self.pg_ctl("stop");
    }

    /// Starts it again.
    pub fn resume(&self) {
        self.pg_ctl("start");
    }

    /// Runs SQL as the superuser over the Unix socket; returns unaligned output.
    pub fn admin(&self, database: &str, sql: &str) -> String {
        let mut command = as_postgres(&self.bin.join("psql"));
        command
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                database,
                "-c",
                sql,
            ]);
        run_ok(command, &format!("psql {sql}")).trim().to_string()
    }

    /// Whether a role exists.
    pub fn role_exists(&self, name: &str) -> bool {
        self.admin(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_roles WHERE rolname = '{}'",
                name.replace('\'', "''")
            ),
        ) == "1"
    }

    /// How many roles whose names start with `prefix` exist.
    pub fn roles_like(&self, prefix: &str) -> usize {
        self.admin(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_roles WHERE rolname LIKE '{}%'",
                prefix.replace('\'', "''")
            ),
        )
        .parse()
        .unwrap_or(0)
    }

    /// Logs in over TCP as `user` and runs `sql`; the output or the error text.
    pub fn login(&self, user: &str, password: &str, sql: &str) -> Result<String, String> {
        let sslmode = if self.tls { "require" } else { "disable" };
        let output = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .arg(format!(
                "host=127.0.0.1 port={} user={user} dbname=gradedb sslmode={sslmode}",
                self.port
            ))
            .args(["-c", sql])
            .env("PGPASSWORD", password)
            .env("PGCONNECT_TIMEOUT", "5")
            .output()
            .unwrap();
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).to_string())
        }
    }

    /// Opens a session as `user` that stays connected (running `pg_sleep`) until the child
    /// is killed or the server ends it.
    pub fn hold_session(&self, user: &str, password: &str) -> std::process::Child {
        let sslmode = if self.tls { "require" } else { "disable" };
        let child = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t"])
            .arg(format!(
                "host=127.0.0.1 port={} user={user} dbname=gradedb sslmode={sslmode}",
                self.port
            ))
            .args(["-c", "SELECT pg_sleep(60)"])
            .env("PGPASSWORD", password)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.admin(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = '{}'",
                user.replace('\'', "''")
            ),
        ) == "0"
        {
            assert!(
                Instant::now() < deadline,
                "the session of {user} never started"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        child
    }

    /// The tutorial's connection URL for this cluster (`{{username}}` templates kept).
    pub fn connection_url(&self, sslmode: &str) -> String {
        format!(
            "postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{}/gradedb?sslmode={sslmode}",
            self.port
        )
    }

    /// Path of the server certificate (TLS clusters).
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.crt")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let mut command = as_postgres(&self.bin.join("pg_ctl"));
        command
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "stop"]);
        let _ = command.output();
        // Each cluster is ~50 MB; kept after a failure, for its log.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Coffer {
    /// Sets an environment variable for the next `start`.
    pub fn set_env(&mut self, name: &str, value: &str) {
        self.env.retain(|(n, _)| n != name);
        self.env.push((name.to_string(), value.to_string()));
    }

    /// Restarts the server with the failpoint that kills it between an engine's side
    /// effect and the lease for it, unseals it with `keys`, reads `path` (which must kill
    /// it), and leaves it stopped with the failpoint cleared. The caller checks what the
    /// crash left behind.
    pub fn crash_before_the_lease(&mut self, keys: &[String], path: &str) {
        self.stop();
        self.set_env("COFFER_FAILPOINT_CRASH_BEFORE_LEASE", path);
        self.start();
        self.unseal(keys);
        assert!(
            self.try_call("GET", path).is_none(),
            "the failpoint should have killed the server"
        );
        self.kill();
        self.set_env("COFFER_FAILPOINT_CRASH_BEFORE_LEASE", "");
    }

    /// A GET that returns `None` if the server dropped the connection (e.g. it crashed).
    pub fn try_call(&self, method: &str, path: &str) -> Option<Reply> {
        let url = format!("{}/v1/{}", self.addr, path);
        match ureq::request(method, &url)
            .set("X-Vault-Token", &self.token)
            .timeout(Duration::from_secs(30))
            .call()
        {
            Ok(_) | Err(ureq::Error::Status(..)) => Some(self.call(method, path, None)),
            Err(_) => None,
        }
    }
}

/// A loopback port that accepts TCP connections and never answers: a database host that
/// hangs instead of refusing, so every connect waits out its timeout. Listens until dropped.
pub struct BlackHole {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BlackHole {
    /// Listens on 127.0.0.1:`port` (retrying while a server that just stopped frees it).
    pub fn listen(port: u16) -> Self {
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", port)) {
                Ok(listener) => break listener,
                Err(error) if Instant::now() < deadline => {
                    let _ = error;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(error) => panic!("cannot listen on port {port}: {error}"),
            }
        };
        listener.set_nonblocking(true).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !stopping.load(std::sync::atomic::Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => held.push(stream),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Writes a new P-256 key (`<name>.key`) and a CSR for `subject` (`<name>.csr`) into `dir`
/// with openssl; returns the CSR's PEM.
pub fn ec_csr(dir: &Path, name: &str, subject: &str) -> String {
    let (key, csr) = (format!("{name}.key"), format!("{name}.csr"));
    let output = Command::new("openssl")
        .current_dir(dir)
        .args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-subj",
            subject,
            "-out",
            &csr,
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "openssl req: {output:?}");
    std::fs::read_to_string(dir.join(csr)).unwrap()
}

/// A policy for tokens that make children and take leases from the test engines.
pub const TREE_POLICY: &str = r#"
path "auth/token/create" { capabilities = ["update"] }
path "leasing/creds/*" { capabilities = ["read"] }
path "secret/*" { capabilities = ["create", "read", "update", "delete", "list"] }
"#;

/// What a platform team's operator policy grants (no root token): enable and tune
/// engines, run the database and PKI engines' operator paths (PKI's root paths need
/// sudo), and manage leases (revoke-prefix and LIST lookup are sudo paths).
pub const OPERATOR_POLICY: &str = r#"
path "sys/mounts" { capabilities = ["read"] }
path "sys/mounts/*" { capabilities = ["create", "read", "update", "delete"] }
path "sys/internal/ui/mounts/*" { capabilities = ["read"] }
path "database/*" { capabilities = ["create", "read", "update", "delete", "list"] }
path "pki/*" { capabilities = ["create", "read", "update", "delete", "list", "sudo"] }
path "pki_int/*" { capabilities = ["create", "read", "update", "delete", "list", "sudo"] }
path "sys/leases/*" { capabilities = ["create", "read", "update", "delete", "list", "sudo"] }
"#;

impl Coffer {
    /// Writes [`OPERATOR_POLICY`] as `operator`, and makes this server's `call` and `cli`
    /// use a new token with only that policy (and `default`) from now on.
    pub fn become_operator(&mut self) {
        self.policy("operator", OPERATOR_POLICY);
        let reply = self.call(
            "POST",
            "auth/token/create",
            Some(json!({ "policies": ["operator"], "ttl": "2h" })),
        );
        assert_eq!(reply.status, 200, "{}", reply.text);
        self.token = reply.json["auth"]["client_token"]
            .as_str()
            .unwrap()
            .to_string();
    }
}

/// Runs `script` with the clients venv's Python (hvac, openapi-spec-validator) and `args`
/// as `sys.argv[1:]`, failing the test unless it exits 0 having printed `ok`.
pub fn run_python(script: &str, args: &[&str]) {
    let output = Command::new(clients_venv().join("bin/python"))
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success() && String::from_utf8_lossy(&output.stdout).trim() == "ok",
        "the Python client script failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The Python venv with the real clients (`bao`, hvac, openapi-spec-validator) that
/// `scripts/test` creates: `COFFER_CLIENTS_VENV`, else `target/clients-venv`.
pub fn clients_venv() -> PathBuf {
    let venv = std::env::var_os("COFFER_CLIENTS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/clients-venv"));
    assert!(
        venv.join("bin/bao").exists() && venv.join("bin/python").exists(),
        "the client venv is missing at {}: run ./scripts/test, which creates it",
        venv.display()
    );
    venv
}

impl Coffer {
    /// A new token with `policies` (and `default`), made by this server's token, for 1h.
    pub fn token_with(&self, policies: &[&str]) -> String {
        let reply = self.call(
            "POST",
            "auth/token/create",
            Some(json!({ "policies": policies, "ttl": "1h" })),
        );
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.json["auth"]["client_token"]
            .as_str()
            .unwrap()
            .to_string()
    }
}
