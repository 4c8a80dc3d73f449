//! Physical storage backends: an ordered map of string keys to opaque bytes.
//!
//! This layer owns durability and nothing else. It never sees plaintext: every value that
//! reaches a backend has already been encrypted by the [`crate::barrier`], except the seal
//! configuration (share counts) and the encrypted keyring itself.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::pin::Pin;
use std::sync::RwLock;

use redb::{Database, TableDefinition};

/// redb's page cache. Its default (1 GiB) would let resident memory grow with the data
/// set — millions of leases — instead of staying bounded; hot pages fit in far less.
pub const STORAGE_CACHE_BYTES: usize = 64 << 20;

/// The one redb table Coffer uses.
const ENTRIES: TableDefinition<&str, &[u8]> = TableDefinition::new("entries");

/// A failure of the storage medium.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The embedded database reported an error.
    #[error("storage backend: {0}")]
    Storage(String),
}

impl BackendError {
    fn from_display(error: impl std::fmt::Display) -> Self {
        Self::Storage(error.to_string())
    }
}

/// Keys with their new values (`Some` stores, `None` removes), applied in one commit.
pub type Changes = Vec<(String, Option<Vec<u8>>)>;

/// Resolves once a write is durable.
pub type Durable = Pin<Box<dyn Future<Output = Result<(), BackendError>> + Send>>;

/// An ordered key-value store.
pub trait Backend: Send + Sync {
    /// The value at `key`.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BackendError>;
    /// Stores `value` at `key`, durably.
    fn put(&self, key: &str, value: &[u8]) -> Result<(), BackendError>;
    /// Removes `key`; removing a missing key succeeds.
    fn delete(&self, key: &str) -> Result<(), BackendError>;
    /// [`Backend::write_batch`] without blocking the calling thread while the changes are
    /// flushed: for async callers. The default writes inline.
    fn write_batch_async(&self, changes: Changes) -> Durable {
        Box::pin(std::future::ready(self.write_batch(changes)))
    }
    /// Applies every change (`Some` stores, `None` removes) at once: after a crash either
    /// all of them are there or none is. One durable commit.
    fn write_batch(&self, changes: Changes) -> Result<(), BackendError>;
    /// Up to `limit` keys that start with `prefix` and sort strictly after `after` (or from
    /// the start of the prefix), in order.
    fn scan(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, BackendError> {
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.scan_from(prefix, start, limit)
    }
    /// Up to `limit` keys that start with `prefix` and lie at or after `start` (a start
    /// below the prefix, or `Unbounded`, means the start of the prefix), in order.
    fn scan_from(
        &self,
        prefix: &str,
        start: Bound<&str>,
        limit: usize,
    ) -> Result<Vec<String>, BackendError>;
}

/// `start`, raised to the first key of `prefix` when it lies below it.
fn clamp_start<'a>(prefix: &'a str, start: Bound<&'a str>) -> Bound<&'a str> {
    match start {
        Bound::Included(key) | Bound::Excluded(key) if key >= prefix => start,
        _ => Bound::Included(prefix),
    }
}

/// Volatile storage for dev mode and tests.
#[derive(Default)]
pub struct MemoryBackend {
    entries: RwLock<BTreeMap<String, Vec<u8>>>,
}

impl Backend for MemoryBackend {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        let entries = self.entries.read().map_err(BackendError::from_display)?;
        Ok(entries.get(key).cloned())
    }

    fn put(&self, key: &str, value: &[u8]) -> Result<(), BackendError> {
        let mut entries = self.entries.write().map_err(BackendError::from_display)?;
        entries.insert(key.to_string(), value.to_vec());
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<(), BackendError> {
        let mut entries = self.entries.write().map_err(BackendError::from_display)?;
        entries.remove(key);
        Ok(())
    }

    fn write_batch(&self, changes: Changes) -> Result<(), BackendError> {
        let mut entries = self.entries.write().map_err(BackendError::from_display)?;
        for (key, value) in changes {
            match value {
                Some(value) => entries.insert(key, value),
                None => entries.remove(&key),
            };
        }
        Ok(())
    }

    fn scan_from(
        &self,
        prefix: &str,
        start: Bound<&str>,
        limit: usize,
    ) -> Result<Vec<String>, BackendError> {
        let entries = self.entries.read().map_err(BackendError::from_display)?;
        let start = clamp_start(prefix, start).map(str::to_string);
        Ok(entries
            .range((start, Bound::Unbounded))
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(prefix))
            .take(limit)
            .cloned()
            .collect())
    }
}

/// Most writes folded into one commit.
const MAX_GROUP_WRITES: usize = 512;

enum Change {
    Put(String, Vec<u8>),
    Delete(String),
}

impl Change {
    fn new(key: String, value: Option<Vec<u8>>) -> Self {
        match value {
            Some(value) => Self::Put(key, value),
            None => Self::Delete(key),
        }
    }
}

struct PendingWrite {
    /// Applied together, in the same transaction.
    changes: Vec<Change>,
    /// Told the commit's outcome (wakes a blocked thread or an awaiting task).
    done: Box<dyn FnOnce(Result<(), String>) + Send>,
}

/// Crash-safe on-disk storage in one redb file.
///
/// Writes are group-committed: each `put` or `delete` queues its change and blocks until
/// the transaction containing it has committed (fsync'd), so an acknowledged write
/// survives a crash; a committer thread folds every change queued while the previous
/// commit was syncing into the next transaction, so concurrent writers share one fsync
/// instead of queueing for one each.
pub struct FileBackend {
    database: std::sync::Arc<Database>,
    writes: std::sync::Mutex<Option<std::sync::mpsc::Sender<PendingWrite>>>,
    committer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for FileBackend {
    fn drop(&mut self) {
        // Closing the queue ends the committer after the writes already queued.
        if let Ok(mut writes) = self.writes.lock() {
            writes.take();
        }
        if let Some(committer) = self.committer.take() {
            let _ = committer.join();
        }
    }
}

impl FileBackend {
    /// Opens (or creates) the database file at `path` and starts its committer thread.
    pub fn open(path: &Path) -> Result<Self, BackendError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(BackendError::from_display)?;
        }
        let database = redb::Builder::new()
            .set_cache_size(STORAGE_CACHE_BYTES)
            .create(path)
            .map_err(BackendError::from_display)?;
        let txn = database.begin_write().map_err(BackendError::from_display)?;
        txn.open_table(ENTRIES)
            .map_err(BackendError::from_display)?;
        txn.commit().map_err(BackendError::from_display)?;
        let database = std::sync::Arc::new(database);
        let (sender, receiver) = std::sync::mpsc::channel::<PendingWrite>();
        let committer = database.clone();
        let committer = std::thread::Builder::new()
            .name("coffer-commit".to_string())
            .spawn(move || commit_loop(&committer, &receiver))
            .map_err(BackendError::from_display)?;
        Ok(Self {
            database,
            writes: std::sync::Mutex::new(Some(sender)),
            committer: Some(committer),
        })
    }

    fn write(&self, changes: Vec<Change>) -> Result<(), BackendError> {
        let started = std::time::Instant::now();
        let outcome = self.write_waiting(changes);
        crate::metrics::global().storage_commit(started.elapsed());
        outcome
    }

    fn write_waiting(&self, changes: Vec<Change>) -> Result<(), BackendError> {
        let (done, wait) = std::sync::mpsc::sync_channel(1);
        self.enqueue(
            changes,
            Box::new(move |outcome| {
                let _ = done.send(outcome);
            }),
        )?;
        let outcome = crate::background::blocking(|| wait.recv());
        outcome
            .map_err(|_| BackendError::Storage("the storage committer stopped".to_string()))?
            .map_err(BackendError::Storage)
    }

    fn enqueue(
        &self,
        changes: Vec<Change>,
        done: Box<dyn FnOnce(Result<(), String>) + Send>,
    ) -> Result<(), BackendError> {
        self.writes
            .lock()
            .map_err(BackendError::from_display)?
            .as_ref()
            .ok_or_else(|| BackendError::Storage("storage is closing".to_string()))?
            .send(PendingWrite { changes, done })
            .map_err(|_| BackendError::Storage("the storage committer stopped".to_string()))
    }
}

fn commit_loop(database: &Database, receiver: &std::sync::mpsc::Receiver<PendingWrite>) {
    while let Ok(first) = receiver.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_GROUP_WRITES {
            match receiver.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let outcome = apply(database, &batch).map_err(|e| e.to_string());
        for write in batch {
            (write.done)(outcome.clone());
        }
    }
}

fn apply(database: &Database, batch: &[PendingWrite]) -> Result<(), BackendError> {
    let txn = database.begin_write().map_err(BackendError::from_display)?;
    {
        let mut table = txn
            .open_table(ENTRIES)
            .map_err(BackendError::from_display)?;
        for change in batch.iter().flat_map(|write| &write.changes) {
            match change {
                Change::Put(key, value) => {
                    table
                        .insert(key.as_str(), value.as_slice())
                        .map_err(BackendError::from_display)?;
                }
                Change::Delete(key) => {
                    table
                        .remove(key.as_str())
                        .map_err(BackendError::from_display)?;
                }
            }
        }
    }
    txn.commit().map_err(BackendError::from_display)
}

impl Backend for FileBackend {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        let txn = self
            .database
            .begin_read()
            .map_err(BackendError::from_display)?;
        let table = txn
            .open_table(ENTRIES)
            .map_err(BackendError::from_display)?;
        let value = table.get(key).map_err(BackendError::from_display)?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    fn put(&self, key: &str, value: &[u8]) -> Result<(), BackendError> {
        self.write(vec![Change::Put(key.to_string(), value.to_vec())])
    }

    fn delete(&self, key: &str) -> Result<(), BackendError> {
        self.write(vec![Change::Delete(key.to_string())])
    }

    fn write_batch(&self, changes: Changes) -> Result<(), BackendError> {
        self.write(
            changes
                .into_iter()
                .map(|(key, value)| Change::new(key, value))
                .collect(),
        )
    }

    fn write_batch_async(&self, changes: Changes) -> Durable {
        let changes = changes
            .into_iter()
            .map(|(key, value)| Change::new(key, value))
            .collect();
        let (done, wait) = tokio::sync::oneshot::channel();
        let queued = self.enqueue(
            changes,
            Box::new(move |outcome| {
                let _ = done.send(outcome);
            }),
        );
        Box::pin(async move {
            queued?;
            wait.await
                .map_err(|_| BackendError::Storage("the storage committer stopped".to_string()))?
                .map_err(BackendError::Storage)
        })
    }

    fn scan_from(
        &self,
        prefix: &str,
        start: Bound<&str>,
        limit: usize,
    ) -> Result<Vec<String>, BackendError> {
        let txn = self
            .database
            .begin_read()
            .map_err(BackendError::from_display)?;
        let table = txn
            .open_table(ENTRIES)
            .map_err(BackendError::from_display)?;
        let start = clamp_start(prefix, start);
        let range = table
            .range::<&str>((start, Bound::Unbounded))
            .map_err(BackendError::from_display)?;
        let mut keys = Vec::new();
        for item in range {
            let (key, _) = item.map_err(BackendError::from_display)?;
            let key = key.value();
            if !key.starts_with(prefix) || keys.len() >= limit {
                break;
            }
            keys.push(key.to_string());
        }
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise(backend: &dyn Backend) -> Result<(), BackendError> {
        backend.put("a/1", b"one")?;
        backend.put("a/2", b"two")?;
        backend.put("a/sub/3", b"three")?;
        backend.put("b/1", b"other")?;
        assert_eq!(backend.get("a/1")?.as_deref(), Some(&b"one"[..]));
        assert_eq!(backend.scan("a/", None, 10)?, vec!["a/1", "a/2", "a/sub/3"]);
        assert_eq!(backend.scan("a/", Some("a/1"), 1)?, vec!["a/2"]);
        assert_eq!(
            backend.scan_from("a/", Bound::Included("a/2"), 10)?,
            vec!["a/2", "a/sub/3"]
        );
        assert_eq!(
            backend.scan_from("a/", Bound::Included("a/sub0"), 10)?,
            Vec::<String>::new()
        );
        assert_eq!(
            backend.scan_from("a/", Bound::Excluded("0"), 1)?,
            vec!["a/1"]
        );
        backend.delete("a/1")?;
        assert_eq!(backend.get("a/1")?, None);
        backend.delete("never-there")?;
        backend.write_batch(vec![
            ("c/1".to_string(), Some(b"batched".to_vec())),
            ("a/2".to_string(), None),
            ("c/2".to_string(), Some(Vec::new())),
        ])?;
        assert_eq!(backend.scan("c/", None, 10)?, vec!["c/1", "c/2"]);
        assert_eq!(backend.get("c/1")?.as_deref(), Some(&b"batched"[..]));
        assert_eq!(backend.get("a/2")?, None);
        Ok(())
    }

    #[test]
    fn memory_backend_orders_and_scans() -> Result<(), BackendError> {
        exercise(&MemoryBackend::default())
    }

    #[test]
    fn concurrent_writers_are_all_committed() -> Result<(), Box<dyn std::error::Error>> {
        let dir = std::env::temp_dir().join(format!("coffer-group-{}", uuid::Uuid::new_v4()));
        let backend = std::sync::Arc::new(FileBackend::open(&dir.join("coffer.db"))?);
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let backend = backend.clone();
                std::thread::spawn(move || -> Result<(), BackendError> {
                    for i in 0..50 {
                        backend.put(&format!("k/{t}/{i:03}"), b"v")?;
                    }
                    Ok(())
                })
            })
            .collect();
        for handle in handles {
            handle.join().map_err(|_| "writer panicked")??;
        }
        drop(backend);
        let reopened = FileBackend::open(&dir.join("coffer.db"))?;
        assert_eq!(reopened.scan("k/", None, 1000)?.len(), 400);
        std::fs::remove_dir_all(dir)?;
        Ok(())
    }

    #[test]
    fn file_backend_orders_scans_and_persists() -> Result<(), Box<dyn std::error::Error>> {
        let dir = std::env::temp_dir().join(format!("coffer-backend-{}", uuid::Uuid::new_v4()));
        let path = dir.join("coffer.db");
        exercise(&FileBackend::open(&path)?)?;
        let reopened = FileBackend::open(&path)?;
        assert_eq!(reopened.get("b/1")?.as_deref(), Some(&b"other"[..]));
        assert_eq!(reopened.get("c/1")?.as_deref(), Some(&b"batched"[..]));
        assert_eq!(reopened.get("a/2")?, None);
        std::fs::remove_dir_all(dir)?;
        Ok(())
    }
}
