//! `coffer:host/sql`: PostgreSQL connections for engines, to operator-granted endpoints only.
//!
//! Grants: each connection config an operator writes (a request carrying a `sql-dsn`
//! field, at the config's path) grants the addresses its DSN dials and the `sslrootcert`
//! it names. During that one request they are dialable ([`stage`], so `verify_connection`
//! works); they last, under `sys/grants/<mount-uuid>/sql-config/<path>`, only once the
//! engine accepted the config ([`settle`]). Rewriting the config replaces its grant,
//! deleting it withdraws it. A guest's `connect` is checked against the mount's grants
//! before any socket is opened: every dialed address (`hostaddr` when given, else
//! `host`), and any `sslrootcert`. Unix sockets are never reachable.
//!
//! Pools live in the host ([`SqlPools`]), keyed by mount and connection identity (user,
//! addresses, database, TLS settings; not the password), so connections survive the
//! per-call instance. A DSN whose text changed (a rotated password, new pool settings)
//! replaces its pool; a config write or delete, mount disable and seal close the mount's
//! pools. Every pool, and every mount's pools together, are bounded; idle connections
//! expire. Every connect and statement is bounded by a timeout and by the call's own
//! deadline, and every statement is logged at debug with its string literals redacted.
//! This module must never put a DSN or password into an error or a log line.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use postgres_openssl::MakeTlsConnector;
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::types::{ToSql, Type};
use wasmtime::component::Resource;

use crate::barrier::{Barrier, BarrierError};
use crate::runtime::bindings::coffer::host::sql::{self, SqlValue};
use crate::runtime::bindings::coffer::host::types::HostError;
use crate::runtime::{CallContext, CallState};

/// Connections one pool may hold open, whatever the engine asks for.
pub const MAX_POOL_CONNECTIONS: u32 = 16;
/// Pool size when the engine asks for 0 (Vault's default `max_open_connections`).
const DEFAULT_POOL_CONNECTIONS: u32 = 4;
/// Connections all pools of one mount may hold open together, so distinct DSNs from one
/// guest cannot take the database's `max_connections` (PostgreSQL's default is 100).
pub const MAX_MOUNT_CONNECTIONS: usize = 32;
/// Pools one mount may keep; a pool costs memory even with no connection open.
const MAX_MOUNT_POOLS: usize = 16;
/// Longest a pooled connection lives, and its lifetime when the engine sets none, so a
/// changed password or `pg_hba.conf` takes effect on every session (pgxpool's default).
const MAX_CONNECTION_LIFETIME: Duration = Duration::from_secs(3600);
/// How long a connection may sit idle before it is closed, so a quiet mount gives its
/// sessions back to the database.
const MAX_IDLE_TIME: Duration = Duration::from_secs(300);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a caller waits for a free pooled connection.
const POOL_WAIT: Duration = Duration::from_secs(10);
/// How long a caller waits for room in its mount's connection budget: other calls give
/// connections back within a statement or two, and a guest holding them all never does.
const MOUNT_BUDGET_WAIT: Duration = Duration::from_secs(2);
/// Server-side and client-side limit on one statement.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Rows one query may return to a guest.
pub const MAX_ROWS: usize = 10_000;
/// Bytes of values one query may return to a guest; they are copied into its memory.
pub const MAX_RESULT_BYTES: usize = 16 << 20;
/// Statements one transaction may carry.
const MAX_STATEMENTS: usize = 1_000;
/// Longest DSN accepted.
const MAX_DSN_BYTES: usize = 4096;
/// Connection configs (each with its grant) one mount may hold.
const MAX_GRANTS: usize = 256;
/// Hosts one DSN may name (libpq tries them in order).
const MAX_DSN_HOSTS: usize = 8;
/// Most database calls one engine call's transcript keeps (the rest are counted).
const MAX_TRANSCRIPT_CALLS: usize = 64;
/// Longest statement a transcript keeps (after redaction), in bytes.
const MAX_TRANSCRIPT_STATEMENT: usize = 4096;

/// One database call an engine made, as the audit log shows it: which connection, what
/// kind of call, the statements with every literal's contents replaced by `***`
/// ([`redact`]; a password rendered into a statement never appears), and whether it
/// succeeded, with the SQLSTATE of a failure (never the server's message, which can
/// quote the statement's text).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SqlStep {
    /// `user@host:port/database` of the connection (no password).
    pub connection: String,
    /// `execute`, `query`, `transaction` or `batch`.
    pub call: &'static str,
    /// The statements, redacted.
    pub statements: Vec<String>,
    /// `ok` or `failed`.
    pub outcome: &'static str,
    /// The SQLSTATE of a failure the database reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sqlstate: Option<String>,
}

/// The database calls of one engine call, in order: shared between the call's SQL state
/// (which records) and whoever made the call (which audits them afterwards).
#[derive(Clone, Default)]
pub struct Transcript(Arc<Mutex<(Vec<SqlStep>, usize)>>);

impl Transcript {
    fn record(&self, step: SqlStep) {
        if let Ok(mut steps) = self.0.lock() {
            if steps.0.len() < MAX_TRANSCRIPT_CALLS {
                steps.0.push(step);
            } else {
                steps.1 = steps.1.saturating_add(1);
            }
        }
    }

    /// The calls recorded so far (emptying the transcript), and how many more were made
    /// past [`MAX_TRANSCRIPT_CALLS`].
    pub fn take(&self) -> (Vec<SqlStep>, usize) {
        self.0
            .lock()
            .map(|mut steps| std::mem::take(&mut *steps))
            .unwrap_or_default()
    }
}

/// `statement` redacted and cut to [`MAX_TRANSCRIPT_STATEMENT`] bytes.
fn transcript_text(statement: &str) -> String {
    let mut text = redact(statement);
    if text.len() > MAX_TRANSCRIPT_STATEMENT {
        let mut end = MAX_TRANSCRIPT_STATEMENT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text
}

/// The SQLSTATE a failure's message ends with (`... (SQLSTATE 42P01)`), if any.
fn sqlstate_of(error: &HostError) -> Option<String> {
    let message = match error {
        HostError::Invalid(m)
        | HostError::Denied(m)
        | HostError::Unavailable(m)
        | HostError::Internal(m) => m,
        HostError::NotFound => return None,
    };
    let code = message.rsplit_once("(SQLSTATE ")?.1.strip_suffix(')')?;
    (code.len() == 5 && code.chars().all(|c| c.is_ascii_alphanumeric())).then(|| code.to_string())
}

/// A TCP endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    /// Host name or IP.
    pub host: String,
    /// Port.
    pub port: u16,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum TlsMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// Pool settings a DSN may carry, in pgxpool's style: `pool_max_conns`,
/// `pool_max_idle_conns`, `pool_max_conn_lifetime` (seconds). The host strips them before
/// the DSN reaches tokio-postgres and caps each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PoolOptions {
    max_open: Option<u32>,
    max_idle: Option<u32>,
    lifetime: Option<Duration>,
}

/// A DSN taken apart: what tokio-postgres parses, plus the TLS and pool settings it does
/// not.
struct ParsedDsn {
    config: tokio_postgres::Config,
    /// The addresses actually dialed: each `hostaddr` if given, else each `host`.
    endpoints: Vec<Endpoint>,
    mode: TlsMode,
    root_cert: Option<String>,
    pool: PoolOptions,
}

impl ParsedDsn {
    /// `user@host:port/database`: which connection a transcript step used.
    fn target(&self) -> String {
        let endpoints: Vec<String> = self.endpoints.iter().map(Endpoint::to_string).collect();
        format!(
            "{}@{}/{}",
            self.config.get_user().unwrap_or_default(),
            endpoints.join(","),
            self.config.get_dbname().unwrap_or_default(),
        )
    }

    /// Who and where a connection is, without its password: the pool key.
    fn identity(&self) -> String {
        let endpoints: Vec<String> = self.endpoints.iter().map(Endpoint::to_string).collect();
        format!(
            "{}@{}/{}?{:?}&{:?}",
            self.config.get_user().unwrap_or_default(),
            endpoints.join(","),
            self.config.get_dbname().unwrap_or_default(),
            self.mode,
            self.root_cert
        )
    }
}

fn take_param(dsn: &str, name: &str) -> (String, Option<String>) {
    // URL form: ?a=b&name=v ; key=value form: name=v separated by spaces.
    let is_url = dsn.starts_with("postgres://") || dsn.starts_with("postgresql://");
    if is_url {
        if let Some((base, query)) = dsn.split_once('?') {
            let mut value = None;
            let kept: Vec<&str> = query
                .split('&')
                .filter(|pair| match pair.split_once('=') {
                    Some((k, v)) if k == name => {
                        value = Some(v.to_string());
                        false
                    }
                    _ => true,
                })
                .collect();
            let rebuilt = if kept.is_empty() {
                base.to_string()
            } else {
                format!("{base}?{}", kept.join("&"))
            };
            return (rebuilt, value);
        }
        return (dsn.to_string(), None);
    }
    let mut value = None;
    let kept: Vec<&str> = dsn
        .split_whitespace()
        .filter(|pair| match pair.split_once('=') {
            Some((k, v)) if k.trim() == name => {
                value = Some(v.trim_matches('\'').to_string());
                false
            }
            _ => true,
        })
        .collect();
    (kept.join(" "), value)
}

fn pool_number(name: &str, value: Option<String>) -> Result<Option<u64>, String> {
    value
        .map(|v| {
            v.trim_end_matches('s')
                .parse::<u64>()
                .map_err(|_| format!("{name} must be a whole number"))
        })
        .transpose()
}

fn parse_dsn(dsn: &str) -> Result<ParsedDsn, String> {
    if dsn.len() > MAX_DSN_BYTES {
        return Err(format!(
            "connection string is longer than {MAX_DSN_BYTES} bytes"
        ));
    }
    let (rest, mode) = take_param(dsn, "sslmode");
    let (rest, root_cert) = take_param(&rest, "sslrootcert");
    let (rest, max_open) = take_param(&rest, "pool_max_conns");
    let (rest, max_idle) = take_param(&rest, "pool_max_idle_conns");
    let (rest, lifetime) = take_param(&rest, "pool_max_conn_lifetime");
    let to_u32 = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
    let pool = PoolOptions {
        max_open: pool_number("pool_max_conns", max_open)?.map(to_u32),
        max_idle: pool_number("pool_max_idle_conns", max_idle)?.map(to_u32),
        lifetime: pool_number("pool_max_conn_lifetime", lifetime)?.map(Duration::from_secs),
    };
    let mode = match mode.as_deref() {
        None | Some("prefer") => TlsMode::Prefer,
        Some("disable") => TlsMode::Disable,
        Some("require") => TlsMode::Require,
        Some("verify-ca") => TlsMode::VerifyCa,
        Some("verify-full") => TlsMode::VerifyFull,
        Some(other) => {
            return Err(format!(
                "unsupported sslmode {other:?} (use disable, prefer, require, verify-ca or verify-full)"
            ));
        }
    };
    // tokio-postgres's message may quote a character of the DSN (of a password, say).
    let mut config = tokio_postgres::Config::from_str(&rest).map_err(|_| {
        "invalid connection string: check its parameter names and values (the parser's detail is withheld, it may quote the password)".to_string()
    })?;
    config.ssl_mode(match mode {
        TlsMode::Disable => SslMode::Disable,
        TlsMode::Prefer => SslMode::Prefer,
        _ => SslMode::Require,
    });
    config.connect_timeout(CONNECT_TIMEOUT);
    let endpoints = dialed_endpoints(&config)?;
    Ok(ParsedDsn {
        config,
        endpoints,
        mode,
        root_cert,
        pool,
    })
}

/// The addresses tokio-postgres will dial for `config`: `hostaddr` wins over `host`.
fn dialed_endpoints(config: &tokio_postgres::Config) -> Result<Vec<Endpoint>, String> {
    let hosts = config.get_hosts();
    let addresses = config.get_hostaddrs();
    let ports = config.get_ports();
    let count = hosts.len().max(addresses.len());
    if count > MAX_DSN_HOSTS {
        return Err(format!(
            "the connection string names {count} hosts; at most {MAX_DSN_HOSTS} are allowed"
        ));
    }
    let mut endpoints = Vec::with_capacity(count);
    for index in 0..count {
        let host = match (addresses.get(index), hosts.get(index)) {
            (Some(address), _) => address.to_string(),
            (None, Some(Host::Tcp(name))) => name.clone(),
            (None, Some(Host::Unix(path))) => {
                return Err(format!(
                    "Unix socket {} is not allowed; use host:port over TCP",
                    path.display()
                ));
            }
            (None, None) => continue,
        };
        let port = ports
            .get(index)
            .or_else(|| ports.first())
            .copied()
            .unwrap_or(5432);
        endpoints.push(Endpoint { host, port });
    }
    if endpoints.is_empty() {
        return Err("the connection string names no host; give host:port (TCP)".to_string());
    }
    Ok(endpoints)
}

/// What one connection config grants its mount: the addresses its DSN dials and the CA
/// file it names.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    endpoints: Vec<Endpoint>,
    root_certs: Vec<String>,
}

impl Grant {
    fn of_dsn(dsn: &str) -> Result<Self, String> {
        let concrete = dsn
            .replace("{{username}}", "user")
            .replace("{{password}}", "password");
        let parsed = parse_dsn(&concrete)?;
        Ok(Self {
            endpoints: parsed.endpoints,
            root_certs: parsed.root_cert.into_iter().collect(),
        })
    }

    fn extend(&mut self, other: &Grant) {
        self.endpoints.extend(other.endpoints.iter().cloned());
        self.root_certs.extend(other.root_certs.iter().cloned());
    }

    /// Why `parsed` may not be dialed under this grant, if it may not.
    fn refusal(&self, parsed: &ParsedDsn) -> Option<String> {
        if let Some(refused) = parsed
            .endpoints
            .iter()
            .find(|e| !self.endpoints.contains(e))
        {
            return Some(format!(
                "endpoint {refused} is not configured for this mount; an operator must write a connection_url naming it"
            ));
        }
        match &parsed.root_cert {
            Some(path) if !self.root_certs.contains(path) => Some(
                "this sslrootcert is not configured for this mount; an operator must write a connection_url naming it"
                    .to_string(),
            ),
            _ => None,
        }
    }
}

/// The endpoints an operator-written DSN template names (placeholders allowed).
pub fn endpoints_of_template(dsn: &str) -> Result<Vec<Endpoint>, String> {
    Grant::of_dsn(dsn).map(|grant| grant.endpoints)
}

fn grants_prefix(mount_uuid: &str) -> String {
    format!("sys/grants/{mount_uuid}/")
}

fn config_grants_prefix(mount_uuid: &str) -> String {
    format!("sys/grants/{mount_uuid}/sql-config/")
}

/// Per-endpoint grants written before grants followed configs; honoured until the
/// mount's next accepted config write replaces them.
fn legacy_grants_prefix(mount_uuid: &str) -> String {
    format!("sys/grants/{mount_uuid}/sql/")
}

/// A connection config's grant, staged by an operator's request: dialable during that
/// request only, lasting once [`settle`]d.
#[derive(Debug)]
pub struct StagedGrant {
    grant: Grant,
}

/// Stages the grant of the DSN an authenticated operator request writes to the
/// connection config at `path`. Refused when the DSN is malformed, or when the mount holds
/// [`MAX_GRANTS`] other configs.
pub fn stage(
    barrier: &Barrier,
    mount_uuid: &str,
    path: &str,
    dsn: &str,
) -> Result<StagedGrant, String> {
    let grant = Grant::of_dsn(dsn)?;
    super::check_grant_room(
        barrier,
        &config_grants_prefix(mount_uuid),
        path,
        MAX_GRANTS,
        "connection configs",
    )?;
    Ok(StagedGrant { grant })
}

/// Lets the call in `context` dial what `staged` grants (and nothing lasting).
pub fn allow_for_this_call(context: &mut CallContext, staged: Option<&StagedGrant>) {
    if let (Some(sql), Some(staged)) = (context.sql.as_mut(), staged) {
        sql.this_call.extend(&staged.grant);
    }
}

/// After the engine accepted a write or delete of the connection config at `path`:
/// records the staged grant (replacing the config's previous one), or withdraws the
/// config's grant when `deleted`, and closes the mount's pools either way so no session
/// outlives the config it was opened with.
pub fn settle(
    barrier: &Barrier,
    pools: &SqlPools,
    mount_uuid: &str,
    path: &str,
    deleted: bool,
    staged: Option<StagedGrant>,
) -> Result<(), BarrierError> {
    let key = format!("{}{path}", config_grants_prefix(mount_uuid));
    pools.close_mount(mount_uuid);
    if deleted {
        return barrier.delete(&key);
    }
    let Some(staged) = staged else {
        return Ok(());
    };
    let value = serde_json::to_vec(&staged.grant)
        .map_err(|e| BarrierError::Invalid(format!("grant encoding: {e}")))?;
    // One commit: the config's grant, and the end of any per-endpoint grants it replaces.
    let legacy = barrier.scan(&legacy_grants_prefix(mount_uuid), None, MAX_GRANTS * 2)?;
    let mut writes: Vec<(&str, Option<&[u8]>)> = vec![(key.as_str(), Some(value.as_slice()))];
    writes.extend(legacy.iter().map(|key| (key.as_str(), None)));
    barrier.write_all(&writes)
}

/// What the mount's stored connection configs grant it.
pub fn granted(barrier: &Barrier, mount_uuid: &str) -> Result<Grant, BarrierError> {
    let mut total = Grant::default();
    for key in barrier.scan(&config_grants_prefix(mount_uuid), None, MAX_GRANTS)? {
        let Some(bytes) = barrier.get(&key)? else {
            continue;
        };
        match serde_json::from_slice::<Grant>(&bytes) {
            Ok(grant) => total.extend(&grant),
            Err(error) => tracing::warn!(%key, %error, "unreadable SQL grant ignored"),
        }
    }
    let legacy = legacy_grants_prefix(mount_uuid);
    for key in barrier.scan(&legacy, None, MAX_GRANTS)? {
        if let Some((host, port)) = key.get(legacy.len()..).and_then(|k| k.rsplit_once(':'))
            && let Ok(port) = port.parse()
        {
            total.endpoints.push(Endpoint {
                host: host.to_string(),
                port,
            });
        }
    }
    Ok(total)
}

/// Deletes a mount's grants (on disable).
pub fn revoke_grants(barrier: &Barrier, mount_uuid: &str) -> Result<(), BarrierError> {
    for key in barrier.scan(&grants_prefix(mount_uuid), None, MAX_GRANTS * 4)? {
        barrier.delete(&key)?;
    }
    Ok(())
}

/// An open session with what ends it: its connection task, its age, and its place in the
/// mount's connection budget.
struct Pooled {
    client: tokio_postgres::Client,
    task: tokio::task::AbortHandle,
    tls: MakeTlsConnector,
    runtime: tokio::runtime::Handle,
    opened: Instant,
    idle_since: Instant,
    _mount_slot: OwnedSemaphorePermit,
}

impl Pooled {
    /// Ends the session now, whatever it is doing (a statement still streaming rows, a
    /// timed-out query): the running statement is cancelled, and the socket closed.
    fn kill(self) {
        let token = self.client.cancel_token();
        let tls = self.tls;
        self.runtime.spawn(async move {
            if let Err(error) = token.cancel_query(tls).await {
                tracing::debug!(%error, "sql cancel request failed");
            }
        });
        self.task.abort();
    }
}

/// Connections to one identity, opened with one DSN text.
struct Pool {
    /// SHA-256 of the DSN text (password and pool settings included) its sessions used.
    fingerprint: [u8; 32],
    size: u32,
    max_idle: usize,
    lifetime: Duration,
    idle: Mutex<Vec<Pooled>>,
    permits: Arc<Semaphore>,
    closed: AtomicBool,
    /// Whether a [`reap`] task watches this pool's idle sessions.
    reaper: AtomicBool,
}

impl Pool {
    fn new(fingerprint: [u8; 32], options: PoolOptions, requested: u32) -> Self {
        let size = match options.max_open.unwrap_or(requested) {
            0 => DEFAULT_POOL_CONNECTIONS,
            n => n.min(MAX_POOL_CONNECTIONS),
        };
        let max_idle = options.max_idle.map_or(size, |n| n.min(size));
        let lifetime = match options.lifetime {
            None => MAX_CONNECTION_LIFETIME,
            Some(d) if d.is_zero() => MAX_CONNECTION_LIFETIME,
            Some(d) => d.min(MAX_CONNECTION_LIFETIME),
        };
        Self {
            fingerprint,
            size,
            max_idle: usize::try_from(max_idle).unwrap_or(usize::MAX),
            lifetime,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(size as usize)),
            closed: AtomicBool::new(false),
            reaper: AtomicBool::new(false),
        }
    }

    fn expired(&self, pooled: &Pooled, now: Instant) -> bool {
        now >= self.expiry(pooled) || pooled.client.is_closed()
    }

    /// When an idle session must be closed: idle too long, or at the end of its life.
    fn expiry(&self, pooled: &Pooled) -> Instant {
        (pooled.idle_since + MAX_IDLE_TIME).min(pooled.opened + self.lifetime)
    }

    /// How long until the first idle session expires; `None` when none is idle, and then
    /// the reaper stands down (under the idle lock, so a session pooled meanwhile starts
    /// a new one).
    fn next_expiry(&self) -> Option<Duration> {
        let idle = self.idle.lock().ok()?;
        let next = idle.iter().map(|pooled| self.expiry(pooled)).min();
        if next.is_none() {
            self.reaper.store(false, Ordering::SeqCst);
        }
        next.map(|at| at.saturating_duration_since(Instant::now()))
    }

    /// A live idle session, closing the expired ones met on the way.
    fn reuse(&self) -> Option<Pooled> {
        let now = Instant::now();
        let mut idle = self.idle.lock().ok()?;
        while let Some(pooled) = idle.pop() {
            if !self.expired(&pooled, now) {
                return Some(pooled);
            }
        }
        None
    }

    /// Closes the idle sessions past their idle time or lifetime.
    fn prune(&self) {
        let now = Instant::now();
        if let Ok(mut idle) = self.idle.lock() {
            idle.retain(|pooled| !self.expired(pooled, now));
        }
    }

    /// Closes every idle session; sessions in use are closed when they come back.
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }

    fn is_unused(&self) -> bool {
        self.permits.available_permits() == self.size as usize
    }
}

/// One mount's pools and the budget of connections they share.
struct MountPools {
    slots: Arc<Semaphore>,
    pools: HashMap<String, Arc<Pool>>,
}

impl Default for MountPools {
    fn default() -> Self {
        Self {
            slots: Arc::new(Semaphore::new(MAX_MOUNT_CONNECTIONS)),
            pools: HashMap::new(),
        }
    }
}

/// Process-wide connection pools, by mount and connection identity.
#[derive(Default)]
pub struct SqlPools {
    mounts: Mutex<HashMap<String, MountPools>>,
}

impl SqlPools {
    /// The pool for `parsed` in `mount`, replacing one opened with another DSN text, and
    /// the mount's connection budget.
    fn pool(
        &self,
        mount: &str,
        dsn: &str,
        parsed: &ParsedDsn,
        requested: u32,
    ) -> Result<(Arc<Pool>, Arc<Semaphore>), HostError> {
        use sha2::Digest as _;
        let fingerprint: [u8; 32] = sha2::Sha256::digest(dsn.as_bytes()).into();
        let identity = parsed.identity();
        let mut mounts = self
            .mounts
            .lock()
            .map_err(|_| HostError::Internal("pool lock poisoned".to_string()))?;
        let pools = mounts.entry(mount.to_string()).or_default();
        if let Some(pool) = pools.pools.get(&identity) {
            if pool.fingerprint == fingerprint {
                return Ok((pool.clone(), pools.slots.clone()));
            }
            pool.close();
            pools.pools.remove(&identity);
        }
        if pools.pools.len() >= MAX_MOUNT_POOLS {
            pools.pools.retain(|_, pool| {
                let keep = !pool.is_unused();
                if !keep {
                    pool.close();
                }
                keep
            });
        }
        if pools.pools.len() >= MAX_MOUNT_POOLS {
            return Err(HostError::Unavailable(format!(
                "this mount already uses {MAX_MOUNT_POOLS} distinct connections; retry when one is released"
            )));
        }
        let pool = Arc::new(Pool::new(fingerprint, parsed.pool, requested));
        pools.pools.insert(identity, pool.clone());
        Ok((pool, pools.slots.clone()))
    }

    /// Closes the idle sessions of `mount`'s pools other than `keep`, to free its budget.
    fn close_idle_except(&self, mount: &str, keep: &Arc<Pool>) {
        if let Ok(mounts) = self.mounts.lock()
            && let Some(pools) = mounts.get(mount)
        {
            for pool in pools.pools.values() {
                if !Arc::ptr_eq(pool, keep)
                    && let Ok(mut idle) = pool.idle.lock()
                {
                    idle.clear();
                }
            }
        }
    }

    /// Closes every pool of a mount (a config write or delete). Its connection budget
    /// stays, so sessions still in use keep counting against it until they come back.
    fn close_mount(&self, mount: &str) {
        if let Ok(mut mounts) = self.mounts.lock()
            && let Some(pools) = mounts.get_mut(mount)
        {
            for (_, pool) in pools.pools.drain() {
                pool.close();
            }
        }
    }

    /// Closes every pool of a mount and forgets it (disable).
    pub fn forget_mount(&self, mount: &str) {
        if let Ok(mut mounts) = self.mounts.lock()
            && let Some(pools) = mounts.remove(mount)
        {
            for pool in pools.pools.values() {
                pool.close();
            }
        }
    }

    /// Closes every pool (seal): a sealed server keeps no database session open.
    pub fn close_all(&self) {
        if let Ok(mut mounts) = self.mounts.lock() {
            for pools in mounts.values() {
                for pool in pools.pools.values() {
                    pool.close();
                }
            }
            mounts.clear();
        }
    }
}

/// Per-call SQL state: where this mount's grants are kept, what this call alone may dial,
/// when the call must be over, and where to run async I/O.
pub struct SqlState {
    pools: Arc<SqlPools>,
    barrier: Arc<Barrier>,
    mount_uuid: String,
    runtime: tokio::runtime::Handle,
    this_call: Grant,
    deadline: Instant,
    transcript: Transcript,
}

impl SqlState {
    /// Where this call's database calls are recorded.
    pub fn transcript(&self) -> Transcript {
        self.transcript.clone()
    }

    /// State for one call of the mount `mount_uuid`, which must be over within
    /// `call_timeout`. Its granted endpoints are read when the guest connects, so calls
    /// that use no SQL pay nothing for them.
    pub fn new(
        pools: Arc<SqlPools>,
        barrier: Arc<Barrier>,
        mount_uuid: String,
        runtime: tokio::runtime::Handle,
        call_timeout: Duration,
    ) -> Self {
        Self {
            pools,
            barrier,
            mount_uuid,
            runtime,
            this_call: Grant::default(),
            deadline: Instant::now() + call_timeout,
            transcript: Transcript::default(),
        }
    }

    /// `bound`, shortened to what is left of the call; an error once nothing is left.
    fn time_left(&self, bound: Duration) -> Result<Duration, HostError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HostError::Unavailable(
                "the call's time limit was reached during a database call".to_string(),
            ));
        }
        Ok(bound.min(left))
    }
}

/// A pooled connection held by a guest.
pub struct Connection {
    pooled: Option<Pooled>,
    pool: Arc<Pool>,
    /// `user@host:port/database`, for the transcript.
    target: String,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Connection {
    fn drop(&mut self) {
        let Some(mut pooled) = self.pooled.take() else {
            return;
        };
        let now = Instant::now();
        pooled.idle_since = now;
        if self.pool.closed.load(Ordering::SeqCst) || self.pool.expired(&pooled, now) {
            return;
        }
        let Ok(mut idle) = self.pool.idle.lock() else {
            return;
        };
        if idle.len() >= self.pool.max_idle {
            return;
        }
        let runtime = pooled.runtime.clone();
        idle.push(pooled);
        // Set under the idle lock, which the reaper also holds when it stands down.
        let start_reaper = !self.pool.reaper.swap(true, Ordering::SeqCst);
        drop(idle);
        if start_reaper {
            runtime.spawn(reap(Arc::downgrade(&self.pool)));
        }
    }
}

/// Closes a pool's idle sessions as they expire, even if the mount is never called again;
/// one per pool while it has idle sessions.
async fn reap(pool: Weak<Pool>) {
    while let Some(wait) = pool.upgrade().and_then(|pool| pool.next_expiry()) {
        tokio::time::sleep(wait).await;
        match pool.upgrade() {
            Some(pool) => pool.prune(),
            None => break,
        }
    }
}

fn tls_connector(mode: TlsMode, root_cert: Option<&str>) -> Result<MakeTlsConnector, String> {
    let mut builder = SslConnector::builder(SslMethod::tls()).map_err(|e| e.to_string())?;
    match mode {
        TlsMode::Disable | TlsMode::Prefer | TlsMode::Require => {
            builder.set_verify(SslVerifyMode::NONE)
        }
        TlsMode::VerifyCa | TlsMode::VerifyFull => {
            if let Some(path) = root_cert {
                builder
                    .set_ca_file(path)
                    .map_err(|e| format!("sslrootcert {path}: {e}"))?;
            }
            builder.set_verify(SslVerifyMode::PEER);
        }
    }
    let mut connector = MakeTlsConnector::new(builder.build());
    if mode != TlsMode::VerifyFull {
        connector.set_callback(|config, _| {
            config.set_verify_hostname(false);
            Ok(())
        });
    }
    Ok(connector)
}

/// Replaces the contents of every string literal with `***`, so passwords rendered into a
/// statement never reach a log. Follows PostgreSQL's lexer (with its default
/// `standard_conforming_strings = on`): `'...'` with `''` (also `U&'...'`, `B'...'`,
/// `X'...'`), `E'...'` with backslash escapes, and `$tag$...$tag$` with any tag.
/// Quoted identifiers and comments are copied as they are, so a quote inside them cannot
/// shift where a literal starts. An unterminated literal is hidden to the end.
pub fn redact(statement: &str) -> String {
    let chars: Vec<char> = statement.chars().collect();
    let at = |i: usize| chars.get(i).copied();
    let is_word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$');
    let mut out = String::with_capacity(statement.len());
    let mut i = 0;
    while let Some(c) = at(i) {
        match c {
            '\'' => {
                // `E'` / `e'` as a token of its own opens an escape string.
                let escapes = matches!(i.checked_sub(1).and_then(at), Some('E' | 'e'))
                    && !is_word(i.checked_sub(2).and_then(at));
                out.push_str("'***");
                i += 1;
                loop {
                    match at(i) {
                        None => return out,
                        Some('\\') if escapes => i += 2,
                        Some('\'') if at(i + 1) == Some('\'') => i += 2,
                        Some('\'') => break,
                        Some(_) => i += 1,
                    }
                }
                out.push('\'');
                i += 1;
            }
            '$' if !is_word(i.checked_sub(1).and_then(at)) => {
                let Some(tag) = dollar_tag(&chars, i) else {
                    out.push(c);
                    i += 1;
                    continue;
                };
                out.push_str(&tag);
                out.push_str("***");
                let body = i + tag.chars().count();
                match find(&chars, body, &tag) {
                    Some(end) => {
                        out.push_str(&tag);
                        i = end + tag.chars().count();
                    }
                    None => return out,
                }
            }
            '"' => {
                // A quoted identifier, copied whole (`""` is an embedded quote).
                out.push(c);
                i += 1;
                loop {
                    match at(i) {
                        None => break,
                        Some('"') if at(i + 1) == Some('"') => {
                            out.push_str("\"\"");
                            i += 2;
                        }
                        Some('"') => {
                            out.push('"');
                            i += 1;
                            break;
                        }
                        Some(c) => {
                            out.push(c);
                            i += 1;
                        }
                    }
                }
            }
            '-' if at(i + 1) == Some('-') => {
                while let Some(c) = at(i) {
                    out.push(c);
                    i += 1;
                    if c == '\n' {
                        break;
                    }
                }
            }
            '/' if at(i + 1) == Some('*') => {
                // Block comments nest in PostgreSQL.
                let mut depth = 0usize;
                while let Some(c) = at(i) {
                    if c == '/' && at(i + 1) == Some('*') {
                        depth += 1;
                        out.push_str("/*");
                        i += 2;
                    } else if c == '*' && at(i + 1) == Some('/') {
                        depth = depth.saturating_sub(1);
                        out.push_str("*/");
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        out.push(c);
                        i += 1;
                    }
                }
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// The dollar-quote opener (`$$` or `$tag$`) starting at `start`, if there is one there.
/// A tag is an identifier without `$`; `$1` is a parameter, not a tag.
fn dollar_tag(chars: &[char], start: usize) -> Option<String> {
    let mut tag = String::from("$");
    let mut i = start + 1;
    loop {
        let c = chars.get(i).copied()?;
        if c == '$' {
            tag.push('$');
            return Some(tag);
        }
        let allowed = if i == start + 1 {
            c.is_alphabetic() || c == '_'
        } else {
            c.is_alphanumeric() || c == '_'
        };
        if !allowed {
            return None;
        }
        tag.push(c);
        i += 1;
    }
}

/// Where `needle` next occurs in `chars` at or after `from`.
fn find(chars: &[char], from: usize, needle: &str) -> Option<usize> {
    let needle: Vec<char> = needle.chars().collect();
    (from..chars.len()).find(|&i| chars.get(i..i + needle.len()) == Some(needle.as_slice()))
}

fn db_error(error: tokio_postgres::Error) -> HostError {
    // The server's message (e.g. "role ... does not exist") and SQLSTATE; never parameters.
    match error.as_db_error() {
        Some(db) => HostError::Invalid(format!("{} (SQLSTATE {})", db.message(), db.code().code())),
        None if error.is_closed() => {
            HostError::Unavailable("the database connection is closed".to_string())
        }
        None => HostError::Unavailable(format!("database error: {error}")),
    }
}

fn params(values: &[SqlValue]) -> Vec<Box<dyn ToSql + Sync + Send>> {
    values
        .iter()
        .map(|value| -> Box<dyn ToSql + Sync + Send> {
            match value {
                SqlValue::Null => Box::new(Option::<String>::None),
                SqlValue::Boolean(b) => Box::new(*b),
                SqlValue::Int64(i) => Box::new(*i),
                SqlValue::Float(f) => Box::new(*f),
                SqlValue::Text(t) => Box::new(t.clone()),
                SqlValue::Bytes(b) => Box::new(b.clone()),
            }
        })
        .collect()
}

/// Borrowed views of boxed parameters, as tokio-postgres takes them.
fn refs(boxed: &[Box<dyn ToSql + Sync + Send>]) -> Vec<&(dyn ToSql + Sync)> {
    boxed
        .iter()
        .map(|b| b.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

fn column(row: &tokio_postgres::Row, index: usize) -> Result<SqlValue, HostError> {
    let column_type = row
        .columns()
        .get(index)
        .map(|c| c.type_().clone())
        .unwrap_or(Type::TEXT);
    let unsupported = |e: tokio_postgres::Error| HostError::Invalid(format!("column {index}: {e}"));
    Ok(match column_type {
        Type::BOOL => row
            .try_get::<_, Option<bool>>(index)
            .map_err(unsupported)?
            .map_or(SqlValue::Null, SqlValue::Boolean),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(index)
            .map_err(unsupported)?
            .map_or(SqlValue::Null, |v| SqlValue::Int64(v.into())),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(index)
            .map_err(unsupported)?
            .map_or(SqlValue::Null, |v| SqlValue::Int64(v.into())),
        Type::INT8 => row
            .try_get::<_, Option<i64>>(index)
            .map_err(unsupported)?
            .map_or(SqlValue::Null, SqlValue::Int64),
        Type::FLOAT4 => row
            .try_get::<_, Option<f32>>(index)
            .map_err(unsupported)?
            .map_or(SqlValue::Null, |v| SqlValue::Float(v.into())),
        Type::FLOAT8 => row
            .try_get::<_, Option<f64>>(index)
            .map_err(unsupported)?
            .map_or(SqlValue::Null, SqlValue::Float),
        Type::BYTEA => row
            .try_get::<_, Option<Vec<u8>>>(index)
            .map_err(unsupported)?
            .map_or(SqlValue::Null, SqlValue::Bytes),
        Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR | Type::UNKNOWN => row
            .try_get::<_, Option<String>>(index)
            .map_err(unsupported)?
            .map_or(SqlValue::Null, SqlValue::Text),
        other => {
            return Err(HostError::Invalid(format!(
                "column {index} has type {other}; cast it to text in the query"
            )));
        }
    })
}

impl CallState {
    fn sql_state(&self) -> Result<&SqlState, HostError> {
        self.caps
            .sql
            .as_ref()
            .ok_or_else(|| HostError::Denied("this mount has no SQL capability".to_string()))
    }

    /// Runs `body` on the connection's client, bounded by the statement timeout and the
    /// call's deadline. A statement that timed out or overflowed a bound is still running
    /// on the server, so its session is closed rather than pooled.
    async fn with_client<R>(
        &mut self,
        connection: &Resource<Connection>,
        call: &'static str,
        statements: &[&str],
        body: impl AsyncFnOnce(&mut tokio_postgres::Client) -> Result<R, Failure>,
    ) -> Result<R, HostError> {
        let mount = self.caps.mount().to_string();
        let redacted: Vec<String> = statements.iter().map(|s| transcript_text(s)).collect();
        tracing::debug!(mount, statement = %redacted.join("; "), "sql");
        let transcript = self.sql_state()?.transcript();
        let target = self
            .table
            .get(connection)
            .map(|c| c.target.clone())
            .unwrap_or_default();
        let outcome = self.run_on_client(connection, body).await;
        transcript.record(SqlStep {
            connection: target,
            call,
            statements: redacted,
            outcome: if outcome.is_ok() { "ok" } else { "failed" },
            sqlstate: outcome.as_ref().err().and_then(sqlstate_of),
        });
        outcome
    }

    async fn run_on_client<R>(
        &mut self,
        connection: &Resource<Connection>,
        body: impl AsyncFnOnce(&mut tokio_postgres::Client) -> Result<R, Failure>,
    ) -> Result<R, HostError> {
        let limit = self.sql_state()?.time_left(STATEMENT_TIMEOUT)?;
        let entry = self
            .table
            .get_mut(connection)
            .map_err(|e| HostError::Invalid(format!("bad connection handle: {e}")))?;
        let pooled = entry
            .pooled
            .as_mut()
            .ok_or_else(|| HostError::Unavailable("connection is gone".to_string()))?;
        let outcome = match tokio::time::timeout(limit, body(&mut pooled.client)).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(Failure::Statement(error))) => return Err(error),
            Ok(Err(Failure::Bound(error))) => error,
            Err(_) if limit < STATEMENT_TIMEOUT => HostError::Unavailable(
                "the call's time limit was reached during a database call".to_string(),
            ),
            Err(_) => {
                HostError::Unavailable(format!("statement timed out after {STATEMENT_TIMEOUT:?}"))
            }
        };
        if let Some(pooled) = entry.pooled.take() {
            pooled.kill();
        }
        Err(outcome)
    }
}

/// Why a statement failed: the database refused it (the session stays usable), or the
/// host stopped reading past a bound (the session is closed).
enum Failure {
    Statement(HostError),
    Bound(HostError),
}

impl From<HostError> for Failure {
    fn from(error: HostError) -> Self {
        Self::Statement(error)
    }
}

fn statement_error(error: tokio_postgres::Error) -> Failure {
    Failure::Statement(db_error(error))
}

/// Bytes a value takes in a guest's memory, roughly.
fn value_bytes(value: &SqlValue) -> usize {
    match value {
        SqlValue::Text(text) => text.len(),
        SqlValue::Bytes(bytes) => bytes.len(),
        _ => 8,
    }
}

/// PostgreSQL's default `scram_iterations`.
const SCRAM_ITERATIONS: std::num::NonZeroU32 = match std::num::NonZeroU32::new(4096) {
    Some(n) => n,
    None => std::num::NonZeroU32::MIN,
};
/// Longest password `scram-sha256-verifier` accepts (PostgreSQL's own limit is 1000).
const MAX_SCRAM_PASSWORD: usize = 1024;

/// The SCRAM-SHA-256 verifier PostgreSQL stores for `password` with `salt`:
/// `SCRAM-SHA-256$4096:<salt>$<StoredKey>:<ServerKey>` (RFC 5802 section 3, RFC 7677).
/// Public for the benchmark's raw-SQL baseline, which sends the same statements.
pub fn scram_sha256_verifier(password: &[u8], salt: &[u8]) -> String {
    use aws_lc_rs::{digest, hmac, pbkdf2};
    use base64::Engine as _;
    let mut salted = zeroize::Zeroizing::new([0u8; 32]);
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        SCRAM_ITERATIONS,
        salt,
        password,
        salted.as_mut_slice(),
    );
    let key = hmac::Key::new(hmac::HMAC_SHA256, salted.as_slice());
    let client_key = hmac::sign(&key, b"Client Key");
    let stored_key = digest::digest(&digest::SHA256, client_key.as_ref());
    let server_key = hmac::sign(&key, b"Server Key");
    let b64 = base64::engine::general_purpose::STANDARD;
    format!(
        "SCRAM-SHA-256${SCRAM_ITERATIONS}:{}${}:{}",
        b64.encode(salt),
        b64.encode(stored_key.as_ref()),
        b64.encode(server_key.as_ref())
    )
}

/// A verifier for `password` with a fresh random salt; `invalid` past the length limit.
fn new_scram_verifier(password: &str) -> Result<String, HostError> {
    if password.len() > MAX_SCRAM_PASSWORD {
        return Err(HostError::Invalid(format!(
            "password is {} bytes; at most {MAX_SCRAM_PASSWORD} are accepted",
            password.len()
        )));
    }
    let mut salt = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt)
        .map_err(|_| HostError::Internal("no randomness for the salt".to_string()))?;
    Ok(scram_sha256_verifier(password.as_bytes(), &salt))
}

/// Links `coffer:host/sql`: what this module implements for every call, reachable only
/// as far as the call's state grants.
pub(crate) fn add_to_linker(
    linker: &mut wasmtime::component::Linker<CallState>,
) -> wasmtime::Result<()> {
    sql::add_to_linker::<CallState, wasmtime::component::HasSelf<CallState>>(linker, |s| s)
}

impl sql::Host for CallState {
    async fn scram_sha256_verifier(&mut self, password: String) -> Result<String, HostError> {
        let password = zeroize::Zeroizing::new(password);
        new_scram_verifier(&password)
    }

    async fn connect(
        &mut self,
        dsn: String,
        max_connections: u32,
    ) -> Result<Resource<Connection>, HostError> {
        let state = self.sql_state()?;
        let parsed = parse_dsn(&dsn).map_err(HostError::Invalid)?;
        let mut allowed =
            granted(&state.barrier, &state.mount_uuid).map_err(crate::runtime::barrier_to_host)?;
        allowed.extend(&state.this_call);
        if let Some(refusal) = allowed.refusal(&parsed) {
            tracing::warn!(mount = %state.mount_uuid, endpoints = ?parsed.endpoints, "sql connect refused: not granted");
            return Err(HostError::Denied(refusal));
        }
        let (pool, slots) = state
            .pools
            .pool(&state.mount_uuid, &dsn, &parsed, max_connections)?;
        let busy = || {
            HostError::Unavailable(format!(
                "all {} pooled connections are busy; retry, or raise max_open_connections",
                pool.size
            ))
        };
        let waited = Instant::now();
        let permit = tokio::time::timeout(
            state.time_left(POOL_WAIT)?,
            pool.permits.clone().acquire_owned(),
        )
        .await
        .map_err(|_| busy())?
        .map_err(|_| HostError::Internal("pool closed".to_string()))?;
        crate::metrics::global().pool_wait(self.caps.mount(), waited.elapsed());
        let pooled = match pool.reuse() {
            Some(pooled) => pooled,
            None => {
                let slot = match slots.clone().try_acquire_owned() {
                    Ok(slot) => slot,
                    Err(_) => {
                        state.pools.close_idle_except(&state.mount_uuid, &pool);
                        tokio::time::timeout(
                            state.time_left(MOUNT_BUDGET_WAIT)?,
                            slots.acquire_owned(),
                        )
                            .await
                            .map_err(|_| {
                                HostError::Unavailable(format!(
                                    "this mount already holds {MAX_MOUNT_CONNECTIONS} database connections; retry when one is released"
                                ))
                            })?
                            .map_err(|_| HostError::Internal("pool closed".to_string()))?
                    }
                };
                open_session(
                    &parsed,
                    state.time_left(CONNECT_TIMEOUT)?,
                    &state.runtime,
                    slot,
                )
                .await?
            }
        };
        let connection = Connection {
            pooled: Some(pooled),
            pool,
            target: parsed.target(),
            _permit: permit,
        };
        self.table
            .push(connection)
            .map_err(|e| HostError::Internal(format!("resource table: {e}")))
    }
}

/// Opens a new session for `parsed` within `limit`, counted against the mount's budget
/// through `slot`.
async fn open_session(
    parsed: &ParsedDsn,
    limit: Duration,
    runtime: &tokio::runtime::Handle,
    slot: OwnedSemaphorePermit,
) -> Result<Pooled, HostError> {
    let connector =
        tls_connector(parsed.mode, parsed.root_cert.as_deref()).map_err(HostError::Invalid)?;
    let (client, connection) =
        tokio::time::timeout(limit, parsed.config.connect(connector.clone()))
            .await
            .map_err(|_| HostError::Unavailable(format!("connecting timed out after {limit:?}")))?
            .map_err(|e| match e.as_db_error() {
                Some(db) => {
                    HostError::Denied(format!("database refused the connection: {}", db.message()))
                }
                None => HostError::Unavailable(format!("cannot connect: {e}")),
            })?;
    let task = runtime
        .spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "sql connection closed");
            }
        })
        .abort_handle();
    let now = Instant::now();
    let pooled = Pooled {
        client,
        task,
        tls: connector,
        runtime: runtime.clone(),
        opened: now,
        idle_since: now,
        _mount_slot: slot,
    };
    let set_timeout = format!("SET statement_timeout = {}", STATEMENT_TIMEOUT.as_millis());
    match tokio::time::timeout(limit, pooled.client.batch_execute(&set_timeout)).await {
        Ok(Ok(())) => Ok(pooled),
        Ok(Err(error)) => {
            pooled.kill();
            Err(db_error(error))
        }
        Err(_) => {
            pooled.kill();
            Err(HostError::Unavailable(format!(
                "connecting timed out after {limit:?}"
            )))
        }
    }
}

impl sql::HostConnection for CallState {
    async fn execute(
        &mut self,
        connection: Resource<Connection>,
        statement: String,
        values: Vec<SqlValue>,
    ) -> Result<u64, HostError> {
        let boxed = params(&values);
        self.with_client(&connection, "execute", &[&statement], async |client| {
            let refs = refs(&boxed);
            client
                .execute(statement.as_str(), &refs)
                .await
                .map_err(statement_error)
        })
        .await
    }

    /// Rows are read one at a time and counted against [`MAX_ROWS`] and
    /// [`MAX_RESULT_BYTES`] as they arrive; tokio-postgres buffers one network message
    /// ahead, so the host holds at most one result's bound plus a row at any time.
    async fn query(
        &mut self,
        connection: Resource<Connection>,
        statement: String,
        values: Vec<SqlValue>,
    ) -> Result<Vec<Vec<SqlValue>>, HostError> {
        let boxed = params(&values);
        self.with_client(&connection, "query", &[&statement], async |client| {
            let refs = refs(&boxed);
            let stream = client
                .query_raw(statement.as_str(), refs)
                .await
                .map_err(statement_error)?;
            let mut stream = std::pin::pin!(stream);
            let mut rows = Vec::new();
            let mut bytes = 0usize;
            while let Some(row) = stream.next().await {
                let row = row.map_err(statement_error)?;
                if rows.len() >= MAX_ROWS {
                    return Err(Failure::Bound(HostError::Invalid(format!(
                        "query returned more than {MAX_ROWS} rows; add a LIMIT or narrow the query"
                    ))));
                }
                let values = (0..row.len())
                    .map(|i| column(&row, i))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(Failure::Bound)?;
                bytes = values
                    .iter()
                    .map(value_bytes)
                    .fold(bytes, usize::saturating_add);
                if bytes > MAX_RESULT_BYTES {
                    return Err(Failure::Bound(HostError::Invalid(format!(
                        "query returned more than {MAX_RESULT_BYTES} bytes; narrow the query"
                    ))));
                }
                rows.push(values);
            }
            Ok(rows)
        })
        .await
    }

    async fn transaction(
        &mut self,
        connection: Resource<Connection>,
        statements: Vec<(String, Vec<SqlValue>)>,
    ) -> Result<(), HostError> {
        if statements.len() > MAX_STATEMENTS {
            return Err(HostError::Invalid(format!(
                "at most {MAX_STATEMENTS} statements per transaction"
            )));
        }
        let texts: Vec<&str> = statements.iter().map(|(s, _)| s.as_str()).collect();
        self.with_client(&connection, "transaction", &texts, async |client| {
            if statements.iter().all(|(_, values)| values.is_empty()) {
                // One round trip: PostgreSQL runs a multi-statement simple query as a single
                // implicit transaction (all or nothing). No explicit BEGIN, so a failure
                // cannot leave this pooled connection inside an aborted transaction block.
                let text = statements
                    .iter()
                    .map(|(s, _)| s.as_str())
                    .collect::<Vec<_>>()
                    .join(";\n");
                return client.batch_execute(&text).await.map_err(statement_error);
            }
            let transaction = client.transaction().await.map_err(statement_error)?;
            for (statement, values) in &statements {
                let boxed = params(values);
                let refs = refs(&boxed);
                transaction
                    .execute(statement.as_str(), &refs)
                    .await
                    .map_err(statement_error)?;
            }
            transaction.commit().await.map_err(statement_error)
        })
        .await
    }

    async fn batch(
        &mut self,
        connection: Resource<Connection>,
        statements: String,
    ) -> Result<(), HostError> {
        self.with_client(&connection, "batch", &[&statements], async |client| {
            client
                .batch_execute(&statements)
                .await
                .map_err(statement_error)
        })
        .await
    }

    async fn drop(&mut self, connection: Resource<Connection>) -> wasmtime::Result<()> {
        self.table.delete(connection)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsn_endpoints_and_refusals() {
        let url = "postgresql://{{username}}:{{password}}@127.0.0.1:5432/gradedb?sslmode=require";
        assert_eq!(
            endpoints_of_template(url),
            Ok(vec![Endpoint {
                host: "127.0.0.1".into(),
                port: 5432
            }])
        );
        let kv = "host=db.internal port=6543 user={{username}} password={{password}} dbname=x sslmode=verify-full";
        assert_eq!(
            endpoints_of_template(kv),
            Ok(vec![Endpoint {
                host: "db.internal".into(),
                port: 6543
            }])
        );
        assert!(
            endpoints_of_template("host=/var/run/postgresql dbname=x").is_err(),
            "Unix sockets are refused"
        );
        assert!(endpoints_of_template("postgresql://h/db?sslmode=sometimes").is_err());
        assert!(
            endpoints_of_template("dbname=x").is_err(),
            "a DSN must name a TCP host"
        );
    }

    fn parsed(dsn: &str) -> Result<ParsedDsn, String> {
        parse_dsn(dsn).map_err(|error| format!("{dsn}: {error}"))
    }

    #[test]
    fn a_grant_refuses_every_address_and_ca_file_it_does_not_name() -> Result<(), String> {
        let grant = Grant::of_dsn(
            "postgresql://{{username}}:{{password}}@127.0.0.1:5432/db?sslmode=verify-ca&sslrootcert=/etc/coffer/ca.pem",
        )?;
        let refused = |dsn: &str| parsed(dsn).map(|p| grant.refusal(&p));
        assert_eq!(
            refused("host=127.0.0.1 port=5432 user=u dbname=db sslrootcert=/etc/coffer/ca.pem")?,
            None
        );
        assert_eq!(refused("postgresql://u:p@127.0.0.1:5432/other")?, None);
        for (dsn, why) in [
            ("host=127.0.0.1 port=5433 user=u", "127.0.0.1:5433"),
            (
                "host=127.0.0.1 hostaddr=127.0.0.2 port=5432 user=u",
                "127.0.0.2:5432",
            ),
            ("hostaddr=10.0.0.1 port=5432 user=u", "10.0.0.1:5432"),
            (
                "postgresql://u@127.0.0.1:5432/db?hostaddr=127.0.0.2",
                "127.0.0.2:5432",
            ),
            ("host=127.0.0.1,10.0.0.9 port=5432 user=u", "10.0.0.9:5432"),
            (
                "host=127.0.0.1 port=5432 sslrootcert=/etc/shadow",
                "sslrootcert",
            ),
            (
                "postgresql://u@127.0.0.1:5432/db?sslrootcert=/root/.ssh/id_rsa",
                "sslrootcert",
            ),
        ] {
            let refusal = refused(dsn)?;
            assert!(
                refusal.as_deref().is_some_and(|r| r.contains(why)),
                "{dsn}: {refusal:?}"
            );
        }
        let by_address = Grant::of_dsn("host=db.internal hostaddr=10.1.2.3 port=6432 dbname=x")?;
        assert_eq!(
            by_address.refusal(&parsed("host=db.internal hostaddr=10.1.2.3 port=6432")?),
            None,
            "a hostaddr the operator wrote is granted"
        );
        assert!(
            by_address
                .refusal(&parsed("host=db.internal port=6432")?)
                .is_some(),
            "the host name alone resolves elsewhere"
        );
        Ok(())
    }

    #[test]
    fn dsn_errors_never_echo_the_dsn() {
        let secret = "hunter2";
        for dsn in [
            format!("host=h password={secret} bogus_option=1"),
            format!("host=h password={secret} pool_max_conns=many"),
            format!("host=h,h,h,h,h,h,h,h,h port=1 password={secret}"),
        ] {
            let error = parse_dsn(&dsn).err().unwrap_or_default();
            assert!(!error.is_empty(), "{dsn} was accepted");
            assert!(!error.contains(secret), "{error}");
        }
    }

    fn unsealed_barrier() -> Result<Barrier, BarrierError> {
        let barrier = Barrier::new(Arc::new(crate::backend::MemoryBackend::default()));
        let init = barrier.initialize(1, 1)?;
        barrier.submit_share(init.shares.first().ok_or(BarrierError::NotInitialized)?)?;
        Ok(barrier)
    }

    fn endpoint(host: &str, port: u16) -> Endpoint {
        Endpoint {
            host: host.to_string(),
            port,
        }
    }

    #[test]
    fn grants_follow_accepted_configs_and_junk_cannot_fill_them() -> Result<(), BarrierError> {
        let barrier = unsealed_barrier()?;
        let pools = SqlPools::default();
        let stage =
            |path: &str, dsn: &str| stage(&barrier, "m", path, dsn).map_err(BarrierError::Invalid);
        // Staged but never accepted: nothing lasts, however many.
        for port in 1..=300 {
            stage(
                &format!("config/junk{port}"),
                &format!("host=10.0.0.1 port={port}"),
            )?;
        }
        assert_eq!(granted(&barrier, "m")?, Grant::default());
        // Accepted: granted; rewritten: replaced; deleted: withdrawn.
        let first = stage("config/db", "host=10.0.0.1 port=5432")?;
        settle(&barrier, &pools, "m", "config/db", false, Some(first))?;
        assert_eq!(
            granted(&barrier, "m")?.endpoints,
            vec![endpoint("10.0.0.1", 5432)]
        );
        let moved = stage("config/db", "host=10.0.0.2 port=5432")?;
        settle(&barrier, &pools, "m", "config/db", false, Some(moved))?;
        assert_eq!(
            granted(&barrier, "m")?.endpoints,
            vec![endpoint("10.0.0.2", 5432)]
        );
        settle(&barrier, &pools, "m", "config/db", true, None)?;
        assert_eq!(granted(&barrier, "m")?, Grant::default());
        assert_eq!(granted(&barrier, "other-mount")?, Grant::default());
        // The bound counts accepted configs; rewriting one at the bound is still allowed.
        for i in 0..MAX_GRANTS {
            let path = format!("config/c{i}");
            let staged = stage(&path, "host=10.0.0.1 port=5432")?;
            settle(&barrier, &pools, "m", &path, false, Some(staged))?;
        }
        let full = stage("config/one-more", "host=10.0.0.1 port=5432");
        assert!(
            matches!(&full, Err(BarrierError::Invalid(m)) if m.contains("delete one first")),
            "{full:?}"
        );
        assert!(stage("config/c0", "host=10.0.0.3 port=5432").is_ok());
        Ok(())
    }

    #[test]
    fn grants_from_older_versions_last_until_the_next_accepted_write() -> Result<(), BarrierError> {
        let barrier = unsealed_barrier()?;
        let pools = SqlPools::default();
        barrier.put("sys/grants/m/sql/10.9.9.9:5432", b"")?;
        assert_eq!(
            granted(&barrier, "m")?.endpoints,
            vec![endpoint("10.9.9.9", 5432)]
        );
        let staged = stage(&barrier, "m", "config/db", "host=10.0.0.1 port=5432")
            .map_err(BarrierError::Invalid)?;
        settle(&barrier, &pools, "m", "config/db", false, Some(staged))?;
        assert_eq!(
            granted(&barrier, "m")?.endpoints,
            vec![endpoint("10.0.0.1", 5432)]
        );
        revoke_grants(&barrier, "m")?;
        assert_eq!(granted(&barrier, "m")?, Grant::default());
        Ok(())
    }

    #[test]
    fn pool_settings_are_read_from_the_dsn_and_capped() -> Result<(), String> {
        let dsn = "postgresql://u:p@h:1/d?pool_max_conns=100&pool_max_idle_conns=50&pool_max_conn_lifetime=99999";
        let options = parsed(dsn)?.pool;
        assert_eq!(
            options,
            PoolOptions {
                max_open: Some(100),
                max_idle: Some(50),
                lifetime: Some(Duration::from_secs(99_999))
            }
        );
        let pool = Pool::new([0; 32], options, 1);
        assert_eq!(pool.size, MAX_POOL_CONNECTIONS);
        assert_eq!(pool.max_idle, MAX_POOL_CONNECTIONS as usize);
        assert_eq!(pool.lifetime, MAX_CONNECTION_LIFETIME);
        let kv = parsed(
            "host=h port=1 user=u pool_max_conns=2 pool_max_idle_conns=0 pool_max_conn_lifetime=30s",
        )?;
        let pool = Pool::new([0; 32], kv.pool, 9);
        assert_eq!((pool.size, pool.max_idle), (2, 0));
        assert_eq!(pool.lifetime, Duration::from_secs(30));
        let unset = Pool::new([0; 32], parsed("host=h")?.pool, 0);
        assert_eq!(unset.size, DEFAULT_POOL_CONNECTIONS);
        assert_eq!(unset.lifetime, MAX_CONNECTION_LIFETIME);
        Ok(())
    }

    #[test]
    fn pools_are_keyed_by_identity_and_replaced_when_the_dsn_text_changes() -> Result<(), String> {
        let pools = SqlPools::default();
        let open = |dsn: &str| {
            pools
                .pool("m", dsn, &parsed(dsn)?, 4)
                .map(|(pool, _)| pool)
                .map_err(|e| format!("{e:?}"))
        };
        let first = open("host=h port=1 user=root password=old dbname=d")?;
        let same = open("host=h port=1 user=root password=old dbname=d")?;
        assert!(Arc::ptr_eq(&first, &same));
        let rotated = open("host=h port=1 user=root password=new dbname=d")?;
        assert!(!Arc::ptr_eq(&first, &rotated));
        assert!(
            first.closed.load(Ordering::SeqCst),
            "the old password's pool is closed"
        );
        for i in 0..MAX_MOUNT_POOLS * 2 {
            open(&format!("host=h port=1 user=u{i} dbname=d"))?;
        }
        let count = pools
            .mounts
            .lock()
            .map(|m| m.get("m").map_or(0, |p| p.pools.len()))
            .unwrap_or(0);
        assert!(count <= MAX_MOUNT_POOLS, "{count} pools");
        pools.close_all();
        assert!(
            rotated.closed.load(Ordering::SeqCst),
            "seal closes every pool"
        );
        Ok(())
    }

    #[test]
    fn scram_verifier_matches_an_independent_openssl_computation()
    -> Result<(), openssl::error::ErrorStack> {
        use openssl::hash::MessageDigest;
        let (password, salt) = (b"pencil", b"0123456789abcdef");
        let verifier = scram_sha256_verifier(password, salt);
        // RFC 5802: SaltedPassword = Hi(password, salt, i); ClientKey = HMAC(SaltedPassword,
        // "Client Key"); StoredKey = H(ClientKey); ServerKey = HMAC(SaltedPassword, "Server Key").
        let mut salted = [0u8; 32];
        openssl::pkcs5::pbkdf2_hmac(password, salt, 4096, MessageDigest::sha256(), &mut salted)?;
        let key = openssl::pkey::PKey::hmac(&salted)?;
        let hmac = |message: &[u8]| {
            openssl::sign::Signer::new(MessageDigest::sha256(), &key)?.sign_oneshot_to_vec(message)
        };
        let stored = openssl::sha::sha256(&hmac(b"Client Key")?);
        let b64 = |bytes: &[u8]| openssl::base64::encode_block(bytes);
        assert_eq!(
            verifier,
            format!(
                "SCRAM-SHA-256$4096:{}${}:{}",
                b64(salt),
                b64(&stored),
                b64(&hmac(b"Server Key")?)
            )
        );
        assert_ne!(
            scram_sha256_verifier(b"pencil2", salt),
            verifier,
            "another password, another verifier"
        );
        Ok(())
    }

    #[test]
    fn scram_verifiers_get_fresh_salts_and_refuse_overlong_passwords() -> Result<(), HostError> {
        let first = new_scram_verifier("pencil")?;
        let second = new_scram_verifier("pencil")?;
        assert!(first.starts_with("SCRAM-SHA-256$4096:"), "{first}");
        assert_ne!(first, second, "each verifier has its own salt");
        assert!(new_scram_verifier(&"x".repeat(MAX_SCRAM_PASSWORD)).is_ok());
        let refused = new_scram_verifier(&"x".repeat(MAX_SCRAM_PASSWORD + 1));
        assert!(
            matches!(&refused, Err(HostError::Invalid(m)) if m.contains("at most 1024")),
            "{refused:?}"
        );
        Ok(())
    }

    #[test]
    fn redaction_hides_literals() {
        assert_eq!(
            redact("CREATE ROLE \"v-x\" WITH LOGIN PASSWORD 'hunter2' VALID UNTIL '2026-01-01'"),
            "CREATE ROLE \"v-x\" WITH LOGIN PASSWORD '***' VALID UNTIL '***'"
        );
    }

    #[test]
    fn redaction_hides_every_literal_form() {
        let cases = [
            ("PASSWORD 'it''s hunter2'", "PASSWORD '***'"),
            ("PASSWORD E'hunter2'", "PASSWORD E'***'"),
            ("PASSWORD e'it\\'s hunter2' x", "PASSWORD e'***' x"),
            ("PASSWORD E'a\\\\' , 'hunter2'", "PASSWORD E'***' , '***'"),
            ("PASSWORD $$hunter2$$ x", "PASSWORD $$***$$ x"),
            (
                "PASSWORD $pw$hunter2$$still'$pw$ x",
                "PASSWORD $pw$***$pw$ x",
            ),
            (
                "PASSWORD $a$ one $b$ hunter2 $b$ two $a$ x",
                "PASSWORD $a$***$a$ x",
            ),
            (
                "PASSWORD U&'hunter2' UESCAPE '!'",
                "PASSWORD U&'***' UESCAPE '***'",
            ),
            ("SELECT $1, a$b$c FROM t", "SELECT $1, a$b$c FROM t"),
        ];
        for (statement, redacted) in cases {
            assert_eq!(redact(statement), redacted, "{statement}");
        }
    }

    #[test]
    fn redaction_does_not_let_quotes_elsewhere_shift_a_literal() {
        // A plain `'...'` has no backslash escapes (standard_conforming_strings = on).
        assert_eq!(
            redact("PASSWORD 'x\\' , 'hunter2'"),
            "PASSWORD '***' , '***'"
        );
        // `SOME'..'` is not an escape string: only a standalone `E` is.
        assert_eq!(redact("NONE'a\\' 'hunter2'"), "NONE'***' '***'");
        assert_eq!(
            redact("ALTER ROLE \"it's\" PASSWORD 'hunter2'"),
            "ALTER ROLE \"it's\" PASSWORD '***'"
        );
        assert_eq!(
            redact("-- it's\nALTER ROLE x PASSWORD 'hunter2' /* it's /* nested' */ */ x"),
            "-- it's\nALTER ROLE x PASSWORD '***' /* it's /* nested' */ */ x"
        );
    }

    #[test]
    fn redaction_hides_unterminated_literals_to_the_end() {
        for (statement, redacted) in [
            ("PASSWORD 'hunter2", "PASSWORD '***"),
            ("PASSWORD E'hunter2\\'", "PASSWORD E'***"),
            ("PASSWORD $$hunter2$", "PASSWORD $$***"),
            ("PASSWORD $a$hunter2$b$", "PASSWORD $a$***"),
            ("PASSWORD 'it''", "PASSWORD '***"),
        ] {
            assert_eq!(redact(statement), redacted, "{statement}");
            assert!(!redact(statement).contains("hunter2"));
        }
    }

    fn step(statement: &str) -> SqlStep {
        SqlStep {
            connection: "u@h:5432/d".to_string(),
            call: "execute",
            statements: vec![transcript_text(statement)],
            outcome: "ok",
            sqlstate: None,
        }
    }

    #[test]
    fn a_transcript_keeps_redacted_bounded_statements_and_counts_the_rest() {
        let transcript = Transcript::default();
        transcript.record(step("CREATE ROLE \"v\" PASSWORD 'hunter2'"));
        let long = format!(
            "SELECT '{}', {}",
            "x".repeat(10),
            "é".repeat(MAX_TRANSCRIPT_STATEMENT)
        );
        transcript.record(step(&long));
        for _ in 0..MAX_TRANSCRIPT_CALLS {
            transcript.record(step("SELECT 1"));
        }
        let (steps, unrecorded) = transcript.take();
        assert_eq!(steps.len(), MAX_TRANSCRIPT_CALLS);
        assert_eq!(unrecorded, 2);
        assert_eq!(
            steps.first().map(|s| s.statements.clone()),
            Some(vec!["CREATE ROLE \"v\" PASSWORD '***'".to_string()])
        );
        let cut = steps
            .get(1)
            .and_then(|s| s.statements.first())
            .cloned()
            .unwrap_or_default();
        assert!(cut.starts_with("SELECT '***', é"), "{cut}");
        assert!(cut.ends_with("...") && cut.len() <= MAX_TRANSCRIPT_STATEMENT + 3);
        assert_eq!(transcript.take(), (Vec::new(), 0), "take empties it");
    }

    #[test]
    fn only_a_well_formed_sqlstate_is_taken_from_a_failure() {
        let of = |m: &str| sqlstate_of(&HostError::Invalid(m.to_string()));
        assert_eq!(
            of("relation \"t\" does not exist (SQLSTATE 42P01)").as_deref(),
            Some("42P01")
        );
        assert_eq!(of("no code here"), None);
        assert_eq!(of("(SQLSTATE hunter2-secret)"), None);
        assert_eq!(sqlstate_of(&HostError::NotFound), None);
    }
}
