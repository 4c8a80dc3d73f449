//! The `postgresql` storage backend: Coffer's ordered key-value store in one PostgreSQL
//! table, so several Coffer nodes can share it (high availability, see [`crate::ha`]).
//!
//! What it owns: a few sessions to the storage database (each on a thread of its own, with
//! a one-thread runtime), the schema (created on first start under an advisory lock, so
//! several nodes starting at once do not race), and the **write fence**: once this node
//! has been the active node, every write runs in a transaction that first takes a share
//! lock on the HA lock row and checks that this node still holds it, unexpired by the
//! database's clock (`now()`). A node that lost the lock, even one that does not know it
//! yet (paused, partitioned), cannot commit: its writes fail and it steps down. A node
//! taking the lock over waits for such a write to finish, so no write of the old holder
//! lands after the takeover.
//!
//! It never sees plaintext: values arrive encrypted by the barrier, keys are storage paths.
//! The database's own durability (WAL, `synchronous_commit`) and its group commit under
//! concurrent sessions are what make a write durable; each write is one transaction.

use std::ops::Bound;
use std::str::FromStr as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use tokio_postgres::Client;

use crate::backend::{Backend, BackendError, Changes};

/// The HA lock row's key in the HA table.
pub const LEADER_KEY: &str = "leader";
/// Prefix of the rows by which each node says it is alive (for `sys/ha-status`).
pub const NODE_KEY_PREFIX: &str = "node/";
/// Default name of the data table.
pub const DEFAULT_TABLE: &str = "coffer_kv_store";
/// Default name of the HA lock table.
pub const DEFAULT_HA_TABLE: &str = "coffer_ha_locks";
/// Default sessions per node.
pub const DEFAULT_MAX_CONNECTIONS: usize = 8;
/// Most sessions per node.
const MAX_CONNECTIONS: usize = 64;
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one storage statement may take before the call fails.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// What a write must prove before it commits.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Fence {
    /// No HA, or this node has not been active yet (init before the first unseal).
    Open,
    /// This node believes it is active: the lock row must name it, unexpired.
    Holder(String),
    /// This node is a standby (or stepped down): it writes nothing.
    Closed,
}

/// The backend's settings (`[storage]` with `type = "postgresql"`).
#[derive(Clone, Debug)]
pub struct PgSettings {
    /// libpq URL or `key=value` connection string.
    pub connection_url: String,
    /// Data table name.
    pub table: String,
    /// HA lock table name.
    pub ha_table: String,
    /// Sessions to keep open.
    pub max_connections: usize,
}

type Job = Box<dyn FnOnce(&mut Session) + Send>;

/// One session, owned by its thread.
struct Session {
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
    url: String,
}

impl Session {
    /// The client, connecting first if there is none or the last one closed.
    fn client(&mut self) -> Result<&Client, BackendError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = None;
            let config = tokio_postgres::Config::from_str(&self.url)
                .map_err(|_| storage("the storage connection_url cannot be parsed"))?;
            let client = self.runtime.block_on(async {
                tokio::time::timeout(CONNECT_TIMEOUT, connect(config))
                    .await
                    .map_err(|_| storage("connecting to the storage database timed out"))?
            })?;
            self.client = Some(client);
        }
        self.client
            .as_ref()
            .ok_or_else(|| storage("no storage session"))
    }
}

/// Connects with TLS unless `sslmode=disable`; the connection task runs on the session's
/// runtime (which only runs inside its `block_on`, where every use happens).
async fn connect(config: tokio_postgres::Config) -> Result<Client, BackendError> {
    let failed = |e: tokio_postgres::Error| {
        storage(&format!(
            "cannot connect to the storage database: {}",
            db_message(&e)
        ))
    };
    if config.get_ssl_mode() == tokio_postgres::config::SslMode::Disable {
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(failed)?;
        tokio::spawn(connection);
        return Ok(client);
    }
    let builder = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls())
        .map_err(|e| storage(&format!("TLS setup: {e}")))?;
    let tls = postgres_openssl::MakeTlsConnector::new(builder.build());
    let (client, connection) = config.connect(tls).await.map_err(failed)?;
    tokio::spawn(connection);
    Ok(client)
}

fn storage(message: &str) -> BackendError {
    BackendError::Storage(message.to_string())
}

/// The server's message and SQLSTATE of a database error; never the statement's values.
fn db_message(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None if error.is_closed() => "the storage connection closed".to_string(),
        None => error.to_string(),
    }
}

/// Most entries the active node's read cache keeps (past it, it starts over).
const MAX_CACHED_ENTRIES: usize = 100_000;
/// Most value bytes the read cache keeps.
const MAX_CACHED_BYTES: usize = 64 << 20;

/// The active node's read cache: what this node wrote or read, valid only while it holds
/// the lock (it alone writes then, behind the fence). Emptied whenever the fence changes.
/// A read fills it only if no write of any key completed while the read was in flight,
/// and never for a key with a write in flight, so a slow read cannot put back a value a
/// write has just replaced; a failed write (whose outcome may be unknown) leaves its keys
/// out, so the next read asks the database.
#[derive(Default)]
struct ReadCache {
    entries: std::collections::HashMap<String, Option<Vec<u8>>>,
    bytes: usize,
    /// Writes in flight, by key.
    writing: std::collections::HashMap<String, usize>,
    /// Writes completed (successfully or not) since the cache was last emptied.
    completed: u64,
}

impl ReadCache {
    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
        self.completed = self.completed.wrapping_add(1);
    }

    fn insert(&mut self, key: String, value: Option<Vec<u8>>) {
        let size = key.len() + value.as_ref().map_or(0, Vec::len);
        if self.entries.len() >= MAX_CACHED_ENTRIES || self.bytes + size > MAX_CACHED_BYTES {
            self.entries.clear();
            self.bytes = 0;
        }
        self.bytes += size;
        if let Some(old) = self.entries.insert(key.clone(), value) {
            self.bytes = self
                .bytes
                .saturating_sub(key.len() + old.as_ref().map_or(0, Vec::len));
        }
    }

    fn remove(&mut self, key: &str) {
        if let Some(old) = self.entries.remove(key) {
            self.bytes = self
                .bytes
                .saturating_sub(key.len() + old.as_ref().map_or(0, Vec::len));
        }
    }
}

/// Ordered storage in PostgreSQL, shared by the nodes of one cluster.
pub struct PgBackend {
    cache: Mutex<ReadCache>,
    /// Until when (this node's monotonic clock) the lock is known held: the HA loop moves
    /// it on with each renewal. Past it the cache is not used, so a node that was paused
    /// past its lock serves no cached read before it learns it lost the lock.
    confirmed_until: Mutex<Option<std::time::Instant>>,
    jobs: Mutex<Option<Sender<Job>>>,
    table: String,
    ha_table: String,
    fence: RwLock<Fence>,
    /// Set when a fenced write found the lock gone: the HA loop steps down at once.
    lost: AtomicBool,
}

impl PgBackend {
    /// Connects (once, to check the settings and create the schema) and starts the
    /// sessions' threads.
    pub fn open(settings: &PgSettings) -> Result<Arc<Self>, BackendError> {
        for name in [&settings.table, &settings.ha_table] {
            if !valid_identifier(name) {
                return Err(storage(&format!(
                    "storage table name {name:?} must be a lower-case SQL identifier (a-z, 0-9, _; at most 63 bytes)"
                )));
            }
        }
        let count = settings.max_connections.clamp(1, MAX_CONNECTIONS);
        let (sender, receiver) = channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        for index in 0..count {
            let receiver = receiver.clone();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| storage(&format!("storage runtime: {e}")))?;
            let mut session = Session {
                runtime,
                client: None,
                url: settings.connection_url.clone(),
            };
            std::thread::Builder::new()
                .name(format!("coffer-pg-{index}"))
                .spawn(move || work(&receiver, &mut session))
                .map_err(|e| storage(&format!("storage thread: {e}")))?;
        }
        let backend = Arc::new(Self {
            cache: Mutex::new(ReadCache::default()),
            confirmed_until: Mutex::new(None),
            jobs: Mutex::new(Some(sender)),
            table: settings.table.clone(),
            ha_table: settings.ha_table.clone(),
            fence: RwLock::new(Fence::Open),
            lost: AtomicBool::new(false),
        });
        backend.create_schema()?;
        Ok(backend)
    }

    /// The HA table's name.
    pub fn ha_table(&self) -> &str {
        &self.ha_table
    }

    /// Creates the tables if they are missing, under a transaction-level advisory lock so
    /// that nodes starting together take turns.
    fn create_schema(&self) -> Result<(), BackendError> {
        let statements = format!(
            "BEGIN;
             SELECT pg_advisory_xact_lock(7300155231);
             CREATE TABLE IF NOT EXISTS {table} (
                 key TEXT COLLATE \"C\" PRIMARY KEY,
                 value BYTEA NOT NULL);
             CREATE TABLE IF NOT EXISTS {ha} (
                 ha_key TEXT COLLATE \"C\" PRIMARY KEY,
                 ha_identity TEXT NOT NULL,
                 ha_value TEXT NOT NULL,
                 valid_until TIMESTAMPTZ NOT NULL);
             COMMIT;",
            table = self.table,
            ha = self.ha_table,
        );
        self.run(move |client, runtime| {
            runtime
                .block_on(client.batch_execute(&statements))
                .map_err(|e| storage(&format!("creating the storage schema: {}", db_message(&e))))
        })
    }

    /// Runs `job` on a session and waits for it. A job that failed because its session
    /// closed (the database restarted) runs once more on a fresh session: every job here
    /// is idempotent (reads, upserts, deletes, a fenced batch of them).
    pub fn run<R: Send + 'static>(
        &self,
        job: impl Fn(&Client, &tokio::runtime::Runtime) -> Result<R, BackendError>
        + Send
        + Sync
        + 'static,
    ) -> Result<R, BackendError> {
        let (done, wait): (SyncSender<Result<R, BackendError>>, Receiver<_>) = sync_channel(1);
        let boxed: Job = Box::new(move |session: &mut Session| {
            let mut outcome = session
                .client()
                .map(|_| ())
                .and_then(|()| attempt(session, &job));
            if outcome.is_err() && session.client.as_ref().is_some_and(Client::is_closed) {
                outcome = session
                    .client()
                    .map(|_| ())
                    .and_then(|()| attempt(session, &job));
            }
            let _ = done.send(outcome);
        });
        let sent = self
            .jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|jobs| jobs.send(boxed).is_ok())
            .unwrap_or(false);
        if !sent {
            return Err(storage("the storage sessions are gone"));
        }
        wait.recv()
            .unwrap_or_else(|_| Err(storage("a storage session stopped")))
    }

    /// From now on, writes must prove that `identity` holds the HA lock.
    pub fn fence_as_holder(&self, identity: &str) {
        self.lost.store(false, Ordering::SeqCst);
        *self.fence.write().unwrap_or_else(PoisonError::into_inner) =
            Fence::Holder(identity.to_string());
        self.lock_cache().clear();
    }

    /// From now on, this node writes nothing (a standby).
    pub fn fence_closed(&self) {
        *self.fence.write().unwrap_or_else(PoisonError::into_inner) = Fence::Closed;
        self.lock_cache().clear();
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, ReadCache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The lock is known held until `until` (a renewal or acquisition that started before
    /// it succeeded; the HA loop passes its start plus half the TTL).
    pub fn confirm_lock_until(&self, until: std::time::Instant) {
        *self
            .confirmed_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(until);
    }

    /// Whether the lock was confirmed recently enough to count on it now.
    pub fn lock_confirmed(&self) -> bool {
        self.confirmed_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|until| std::time::Instant::now() < until)
    }

    /// Whether reads may use the cache: only while this node holds the lock, as recently
    /// confirmed.
    fn caching(&self) -> bool {
        matches!(
            *self.fence.read().unwrap_or_else(PoisonError::into_inner),
            Fence::Holder(_)
        ) && !self.lost.load(Ordering::SeqCst)
            && self.lock_confirmed()
    }

    fn fetch(&self, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        let (statement, key) = (
            format!("SELECT value FROM {} WHERE key = $1", self.table),
            key.to_string(),
        );
        self.run(move |client, runtime| {
            runtime
                .block_on(client.query_opt(&statement, &[&key]))
                .map(|row| row.map(|row| row.get::<_, Vec<u8>>(0)))
                .map_err(|e| storage(&format!("storage read: {}", db_message(&e))))
        })
    }

    /// Whether writes are still open (no node role decided yet).
    pub fn fence_open(&self) -> bool {
        *self.fence.read().unwrap_or_else(PoisonError::into_inner) == Fence::Open
    }

    /// Whether a fenced write found the lock gone since the last [`Self::fence_as_holder`].
    pub fn lock_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Applies `changes` in one transaction, behind the fence.
    fn write(&self, changes: Changes) -> Result<(), BackendError> {
        let fence = self
            .fence
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let holder = match fence {
            Fence::Open => None,
            Fence::Holder(identity) => Some(identity),
            Fence::Closed => {
                return Err(storage(
                    "this node is a standby: it does not write to storage",
                ));
            }
        };
        let (table, ha) = (self.table.clone(), self.ha_table.clone());
        {
            let mut cache = self.lock_cache();
            for (key, _) in &changes {
                *cache.writing.entry(key.clone()).or_default() += 1;
                cache.remove(key);
            }
        }
        let changes = Arc::new(changes);
        let job_changes = changes.clone();
        let started = std::time::Instant::now();
        let outcome = self.run(move |client, runtime| {
            runtime.block_on(async {
                tokio::time::timeout(
                    STATEMENT_TIMEOUT,
                    fenced_write(client, &table, &ha, holder.as_deref(), &job_changes),
                )
                .await
                .map_err(|_| storage("a storage write timed out"))?
            })
        });
        crate::metrics::global().storage_commit(started.elapsed());
        {
            let mut cache = self.lock_cache();
            cache.completed = cache.completed.wrapping_add(1);
            for (key, value) in changes.iter() {
                let alone = match cache.writing.get_mut(key) {
                    Some(count) if *count > 1 => {
                        *count -= 1;
                        false
                    }
                    _ => {
                        cache.writing.remove(key);
                        true
                    }
                };
                // Only a committed write no other write of the key overlapped is known.
                if outcome.is_ok() && alone && self.caching() {
                    cache.insert(key.clone(), value.clone());
                }
            }
        }
        if let Err(BackendError::Storage(message)) = &outcome
            && message == FENCED
        {
            self.lost.store(true, Ordering::SeqCst);
        }
        outcome
    }
}

/// The error of a write refused by the fence.
const FENCED: &str = "this node no longer holds the HA lock: the write was refused";

/// One transaction: the fence check (a share lock on the lock row, which a takeover's
/// update waits for), then every change.
async fn fenced_write(
    client: &Client,
    table: &str,
    ha: &str,
    holder: Option<&str>,
    changes: &Changes,
) -> Result<(), BackendError> {
    let failed = |e: tokio_postgres::Error| storage(&format!("storage write: {}", db_message(&e)));
    client.batch_execute("BEGIN").await.map_err(failed)?;
    let outcome = async {
        if let Some(holder) = holder {
            let held = client
                .query_opt(
                    &format!(
                        "SELECT 1 FROM {ha} WHERE ha_key = $1 AND ha_identity = $2 AND valid_until > now() FOR SHARE"
                    ),
                    &[&LEADER_KEY, &holder],
                )
                .await
                .map_err(failed)?;
            if held.is_none() {
                return Err(storage(FENCED));
            }
        }
        let upsert = format!(
            "INSERT INTO {table} (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
        );
        let delete = format!("DELETE FROM {table} WHERE key = $1");
        for (key, value) in changes.iter() {
            match value {
                Some(value) => client.execute(&upsert, &[key, value]).await,
                None => client.execute(&delete, &[key]).await,
            }
            .map_err(failed)?;
        }
        Ok(())
    }
    .await;
    match outcome {
        Ok(()) => client.batch_execute("COMMIT").await.map_err(failed),
        Err(error) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(error)
        }
    }
}

/// The first string above every string that starts with `prefix` (in code point order,
/// which is PostgreSQL's `"C"` collation and Rust's `str` order), or `None` if there is
/// none (an empty prefix, or one of U+10FFFF only).
fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = u32::from(last) + 1;
        if (0xD800..=0xDFFF).contains(&next) {
            next = 0xE000;
        }
        if let Some(next) = char::from_u32(next) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// A name safe to splice into SQL as an identifier.
fn valid_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn work(receiver: &Mutex<Receiver<Job>>, session: &mut Session) {
    loop {
        let job = receiver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .recv();
        match job {
            Ok(job) => job(session),
            Err(_) => return,
        }
    }
}

fn attempt<R>(
    session: &mut Session,
    job: &(impl Fn(&Client, &tokio::runtime::Runtime) -> Result<R, BackendError> + ?Sized),
) -> Result<R, BackendError> {
    session.client()?;
    match &session.client {
        Some(client) => job(client, &session.runtime),
        None => Err(storage("no storage session")),
    }
}

impl Drop for PgBackend {
    fn drop(&mut self) {
        // Closing the channel ends the session threads once they finish their job.
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }
}

impl Backend for PgBackend {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        if !self.caching() {
            return self.fetch(key);
        }
        let before = {
            let cache = self.lock_cache();
            if let Some(value) = cache.entries.get(key) {
                return Ok(value.clone());
            }
            cache.completed
        };
        let value = self.fetch(key)?;
        let mut cache = self.lock_cache();
        if cache.completed == before && !cache.writing.contains_key(key) && self.caching() {
            cache.insert(key.to_string(), value.clone());
        }
        Ok(value)
    }

    fn put(&self, key: &str, value: &[u8]) -> Result<(), BackendError> {
        self.write(vec![(key.to_string(), Some(value.to_vec()))])
    }

    fn delete(&self, key: &str) -> Result<(), BackendError> {
        self.write(vec![(key.to_string(), None)])
    }

    fn write_batch(&self, changes: Changes) -> Result<(), BackendError> {
        self.write(changes)
    }

    fn scan_from(
        &self,
        prefix: &str,
        start: Bound<&str>,
        limit: usize,
    ) -> Result<Vec<String>, BackendError> {
        let (low, low_op) = match start {
            Bound::Included(key) if key >= prefix => (key.to_string(), ">="),
            Bound::Excluded(key) if key >= prefix => (key.to_string(), ">"),
            _ => (prefix.to_string(), ">="),
        };
        let high = prefix_end(prefix);
        let statement = format!(
            "SELECT key FROM {table} WHERE key {low_op} $1 AND ($2::text IS NULL OR key < $2) AND starts_with(key, $3) ORDER BY key LIMIT $4",
            table = self.table
        );
        let (prefix, limit) = (prefix.to_string(), i64::try_from(limit).unwrap_or(i64::MAX));
        self.run(move |client, runtime| {
            runtime
                .block_on(client.query(&statement, &[&low, &high, &prefix, &limit]))
                .map(|rows| rows.iter().map(|row| row.get::<_, String>(0)).collect())
                .map_err(|e| storage(&format!("storage scan: {}", db_message(&e))))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_at_its_successor_in_code_point_order() {
        assert_eq!(prefix_end("a/"), Some("a0".to_string()));
        assert_eq!(prefix_end(""), None);
        assert_eq!(prefix_end("\u{10FFFF}"), None);
        assert_eq!(prefix_end("a\u{10FFFF}"), Some("b".to_string()));
        assert_eq!(prefix_end("\u{D7FF}"), Some("\u{E000}".to_string()));
        for key in ["a/", "a/b", "a/\u{10FFFF}", "a/\u{10FFFF}zz"] {
            assert!(key.starts_with("a/") && key < prefix_end("a/").unwrap_or_default().as_str());
        }
        assert!("a0" >= prefix_end("a/").unwrap_or_default().as_str());
    }

    #[test]
    fn only_plain_identifiers_name_tables() {
        assert!(valid_identifier("coffer_kv_store"));
        assert!(!valid_identifier("Coffer"));
        assert!(!valid_identifier("kv; DROP TABLE x"));
        assert!(!valid_identifier("1kv"));
        assert!(!valid_identifier(&"a".repeat(64)));
    }
}
