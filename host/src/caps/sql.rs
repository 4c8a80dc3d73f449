//! `coffer:host/sql`: PostgreSQL connections for engines, to operator-granted endpoints only.
//!
//! Grants: an operator's authenticated request that carries a `sql-dsn` field records each
//! host:port of it under `sys/grants/<mount-uuid>/sql/` before the engine runs ([`grant`]).
//! A guest's `connect` is checked against that list before any socket is opened; Unix
//! sockets are never reachable.
//!
//! Pools live in the host ([`SqlPools`]), keyed by mount and DSN, so connections survive the
//! per-call instance; each pool is bounded, every connect and statement has a timeout, and
//! every statement is logged at debug with its string literals redacted.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use postgres_openssl::MakeTlsConnector;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::types::{ToSql, Type};
use wasmtime::component::Resource;

use crate::barrier::{Barrier, BarrierError};
use crate::runtime::CallState;
use crate::runtime::bindings::coffer::host::sql::{self, SqlValue};
use crate::runtime::bindings::coffer::host::types::HostError;

/// Connections one pool may hold open, whatever the engine asks for.
pub const MAX_POOL_CONNECTIONS: u32 = 16;
/// Pool size when the engine asks for 0 (Vault's default `max_open_connections`).
const DEFAULT_POOL_CONNECTIONS: u32 = 4;
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a caller waits for a free pooled connection.
const POOL_WAIT: Duration = Duration::from_secs(10);
/// Server-side and client-side limit on one statement.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Rows one query may return to a guest.
pub const MAX_ROWS: usize = 10_000;
/// Statements one transaction may carry.
const MAX_STATEMENTS: usize = 1_000;
/// Longest DSN accepted.
const MAX_DSN_BYTES: usize = 4096;
/// Endpoints one mount may be granted.
const MAX_GRANTS: usize = 256;

/// A TCP endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TlsMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// A DSN taken apart: what tokio-postgres parses, plus the TLS settings it does not.
struct ParsedDsn {
    config: tokio_postgres::Config,
    endpoints: Vec<Endpoint>,
    mode: TlsMode,
    root_cert: Option<String>,
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

fn parse_dsn(dsn: &str) -> Result<ParsedDsn, String> {
    if dsn.len() > MAX_DSN_BYTES {
        return Err(format!(
            "connection string is longer than {MAX_DSN_BYTES} bytes"
        ));
    }
    let (rest, mode) = take_param(dsn, "sslmode");
    let (rest, root_cert) = take_param(&rest, "sslrootcert");
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
    let mut config = tokio_postgres::Config::from_str(&rest)
        .map_err(|e| format!("invalid connection string: {e}"))?;
    config.ssl_mode(match mode {
        TlsMode::Disable => SslMode::Disable,
        TlsMode::Prefer => SslMode::Prefer,
        _ => SslMode::Require,
    });
    config.connect_timeout(CONNECT_TIMEOUT);
    let ports = config.get_ports().to_vec();
    let mut endpoints = Vec::new();
    for (index, host) in config.get_hosts().iter().enumerate() {
        let host = match host {
            Host::Tcp(name) => name.clone(),
            Host::Unix(path) => {
                return Err(format!(
                    "Unix socket {} is not allowed; use host:port over TCP",
                    path.display()
                ));
            }
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
    Ok(ParsedDsn {
        config,
        endpoints,
        mode,
        root_cert,
    })
}

/// The endpoints an operator-written DSN template names (placeholders allowed).
pub fn endpoints_of_template(dsn: &str) -> Result<Vec<Endpoint>, String> {
    let concrete = dsn
        .replace("{{username}}", "user")
        .replace("{{password}}", "password");
    parse_dsn(&concrete).map(|parsed| parsed.endpoints)
}

fn grant_prefix(mount_uuid: &str) -> String {
    format!("sys/grants/{mount_uuid}/sql/")
}

/// Records the endpoints of an operator-supplied DSN as allowed for a mount.
pub fn grant(barrier: &Barrier, mount_uuid: &str, dsn: &str) -> Result<Vec<Endpoint>, String> {
    let endpoints = endpoints_of_template(dsn)?;
    let existing = barrier
        .scan(&grant_prefix(mount_uuid), None, MAX_GRANTS + 1)
        .map_err(|e| e.to_string())?;
    if existing.len() + endpoints.len() > MAX_GRANTS {
        return Err(format!(
            "a mount may be granted at most {MAX_GRANTS} SQL endpoints"
        ));
    }
    for endpoint in &endpoints {
        barrier
            .put(&format!("{}{endpoint}", grant_prefix(mount_uuid)), b"")
            .map_err(|e| e.to_string())?;
    }
    Ok(endpoints)
}

/// The endpoints granted to a mount.
pub fn granted(barrier: &Barrier, mount_uuid: &str) -> Result<Vec<Endpoint>, BarrierError> {
    let prefix = grant_prefix(mount_uuid);
    Ok(barrier
        .scan(&prefix, None, MAX_GRANTS)?
        .iter()
        .filter_map(|key| {
            let (host, port) = key.get(prefix.len()..)?.rsplit_once(':')?;
            Some(Endpoint {
                host: host.to_string(),
                port: port.parse().ok()?,
            })
        })
        .collect())
}

/// Deletes a mount's grants (on disable).
pub fn revoke_grants(barrier: &Barrier, mount_uuid: &str) -> Result<(), BarrierError> {
    for key in barrier.scan(&grant_prefix(mount_uuid), None, MAX_GRANTS * 2)? {
        barrier.delete(&key)?;
    }
    Ok(())
}

struct Pool {
    idle: Mutex<Vec<tokio_postgres::Client>>,
    permits: Arc<Semaphore>,
}

/// Process-wide connection pools, keyed by mount and DSN.
#[derive(Default)]
pub struct SqlPools {
    pools: Mutex<HashMap<(String, String), Arc<Pool>>>,
}

impl SqlPools {
    fn pool(&self, mount: &str, dsn: &str, size: u32) -> Result<Arc<Pool>, HostError> {
        let mut pools = self
            .pools
            .lock()
            .map_err(|_| HostError::Internal("pool lock poisoned".to_string()))?;
        Ok(pools
            .entry((mount.to_string(), dsn.to_string()))
            .or_insert_with(|| {
                Arc::new(Pool {
                    idle: Mutex::new(Vec::new()),
                    permits: Arc::new(Semaphore::new(size as usize)),
                })
            })
            .clone())
    }

    /// Drops every pool of a mount (on disable or `reset`).
    pub fn forget_mount(&self, mount: &str) {
        if let Ok(mut pools) = self.pools.lock() {
            pools.retain(|(m, _), _| m != mount);
        }
    }
}

/// Per-call SQL state: where this mount's grants are kept, and where to run async I/O.
pub struct SqlState {
    pools: Arc<SqlPools>,
    barrier: Arc<Barrier>,
    mount_uuid: String,
    runtime: tokio::runtime::Handle,
}

impl SqlState {
    /// State for one call of the mount `mount_uuid`. Its granted endpoints are read when
    /// the guest connects, so calls that use no SQL pay nothing for them.
    pub fn new(
        pools: Arc<SqlPools>,
        barrier: Arc<Barrier>,
        mount_uuid: String,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        Self {
            pools,
            barrier,
            mount_uuid,
            runtime,
        }
    }
}

/// A pooled connection held by a guest.
pub struct Connection {
    client: Option<tokio_postgres::Client>,
    pool: Arc<Pool>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(client) = self.client.take().filter(|c| !c.is_closed())
            && let Ok(mut idle) = self.pool.idle.lock()
        {
            idle.push(client);
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

/// Replaces every single-quoted literal with `'***'` so passwords never reach a log.
pub fn redact(statement: &str) -> String {
    let mut out = String::with_capacity(statement.len());
    let mut in_literal = false;
    for c in statement.chars() {
        if c == '\'' {
            if !in_literal {
                out.push_str("'***");
            }
            in_literal = !in_literal;
            if !in_literal {
                out.push('\'');
            }
        } else if !in_literal {
            out.push(c);
        }
    }
    out
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

    async fn with_client<R>(
        &mut self,
        connection: &Resource<Connection>,
        statement_for_log: &str,
        body: impl AsyncFnOnce(&mut tokio_postgres::Client) -> Result<R, HostError>,
    ) -> Result<R, HostError> {
        let mount = self.caps.mount().to_string();
        tracing::debug!(mount, statement = %redact(statement_for_log), "sql");
        let entry = self
            .table
            .get_mut(connection)
            .map_err(|e| HostError::Invalid(format!("bad connection handle: {e}")))?;
        let client = entry
            .client
            .as_mut()
            .ok_or_else(|| HostError::Unavailable("connection is gone".to_string()))?;
        tokio::time::timeout(STATEMENT_TIMEOUT, body(client))
            .await
            .map_err(|_| {
                HostError::Unavailable(format!("statement timed out after {STATEMENT_TIMEOUT:?}"))
            })?
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
        let allowed =
            granted(&state.barrier, &state.mount_uuid).map_err(crate::runtime::barrier_to_host)?;
        if let Some(refused) = parsed.endpoints.iter().find(|e| !allowed.contains(e)) {
            tracing::warn!(mount = %state.mount_uuid, endpoint = %refused, "sql connect refused: endpoint not granted");
            return Err(HostError::Denied(format!(
                "endpoint {refused} is not configured for this mount; an operator must write a connection_url naming it"
            )));
        }
        let size = match max_connections {
            0 => DEFAULT_POOL_CONNECTIONS,
            n => n.min(MAX_POOL_CONNECTIONS),
        };
        let pool = state.pools.pool(&state.mount_uuid, &dsn, size)?;
        let spawner = state.runtime.clone();
        let permit = tokio::time::timeout(POOL_WAIT, pool.permits.clone().acquire_owned())
            .await
            .map_err(|_| HostError::Unavailable(format!("all {size} pooled connections are busy")))?
            .map_err(|_| HostError::Internal("pool closed".to_string()))?;
        let reused = pool.idle.lock().ok().and_then(|mut idle| {
            while let Some(client) = idle.pop() {
                if !client.is_closed() {
                    return Some(client);
                }
            }
            None
        });
        let client = match reused {
            Some(client) => client,
            None => {
                let connector = tls_connector(parsed.mode, parsed.root_cert.as_deref())
                    .map_err(HostError::Invalid)?;
                let config = parsed.config.clone();
                async move {
                    let (client, connection) =
                        tokio::time::timeout(CONNECT_TIMEOUT, config.connect(connector))
                            .await
                            .map_err(|_| {
                                HostError::Unavailable(format!(
                                    "connecting timed out after {CONNECT_TIMEOUT:?}"
                                ))
                            })?
                            .map_err(|e| match e.as_db_error() {
                                Some(db) => HostError::Denied(format!(
                                    "database refused the connection: {}",
                                    db.message()
                                )),
                                None => HostError::Unavailable(format!("cannot connect: {e}")),
                            })?;
                    spawner.spawn(async move {
                        if let Err(error) = connection.await {
                            tracing::debug!(%error, "sql connection closed");
                        }
                    });
                    client
                        .batch_execute(&format!(
                            "SET statement_timeout = {}",
                            STATEMENT_TIMEOUT.as_millis()
                        ))
                        .await
                        .map_err(db_error)?;
                    Ok::<_, HostError>(client)
                }
                .await?
            }
        };
        let connection = Connection {
            client: Some(client),
            pool,
            _permit: permit,
        };
        self.table
            .push(connection)
            .map_err(|e| HostError::Internal(format!("resource table: {e}")))
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
        self.with_client(&connection, &statement, async |client| {
            let refs = refs(&boxed);
            client
                .execute(statement.as_str(), &refs)
                .await
                .map_err(db_error)
        })
        .await
    }

    async fn query(
        &mut self,
        connection: Resource<Connection>,
        statement: String,
        values: Vec<SqlValue>,
    ) -> Result<Vec<Vec<SqlValue>>, HostError> {
        let boxed = params(&values);
        self.with_client(&connection, &statement, async |client| {
            let refs = refs(&boxed);
            let rows = client
                .query(statement.as_str(), &refs)
                .await
                .map_err(db_error)?;
            if rows.len() > MAX_ROWS {
                return Err(HostError::Invalid(format!(
                    "query returned more than {MAX_ROWS} rows"
                )));
            }
            rows.iter()
                .map(|row| (0..row.len()).map(|i| column(row, i)).collect())
                .collect()
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
        let summary = statements
            .iter()
            .map(|(s, _)| s.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        self.with_client(&connection, &summary, async |client| {
            if statements.iter().all(|(_, values)| values.is_empty()) {
                // One round trip: PostgreSQL runs a multi-statement simple query as a single
                // implicit transaction (all or nothing). No explicit BEGIN, so a failure
                // cannot leave this pooled connection inside an aborted transaction block.
                let text = statements
                    .iter()
                    .map(|(s, _)| s.as_str())
                    .collect::<Vec<_>>()
                    .join(";\n");
                return client.batch_execute(&text).await.map_err(db_error);
            }
            let transaction = client.transaction().await.map_err(db_error)?;
            for (statement, values) in &statements {
                let boxed = params(values);
                let refs = refs(&boxed);
                transaction
                    .execute(statement.as_str(), &refs)
                    .await
                    .map_err(db_error)?;
            }
            transaction.commit().await.map_err(db_error)
        })
        .await
    }

    async fn batch(
        &mut self,
        connection: Resource<Connection>,
        statements: String,
    ) -> Result<(), HostError> {
        self.with_client(&connection, &statements, async |client| {
            client.batch_execute(&statements).await.map_err(db_error)
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
}
