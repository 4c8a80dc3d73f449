//! Host capabilities granted to engine components: `coffer:host/storage` and
//! `coffer:host/log` here, `coffer:host/sql` in [`sql`], `coffer:host/keys` in [`keys`]
//! (with its key encodings in [`der`] and pre-generated RSA keys in [`rsa_pool`]), and
//! `coffer:host/http` in [`http`].
//!
//! Each capability's per-call state lives in [`State`]; nothing is ambient. Storage is the
//! mount's barrier [`View`] and nothing else: a guest cannot name a key outside it, cannot
//! write the reserved `wal/` and `_keys/` prefixes directly, and every key and value is
//! bounded. A call with no storage granted (such as `describe`) is refused every access.

pub mod der;
pub mod http;
pub mod keys;
pub mod rsa_pool;
pub mod sql;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use wasmtime::component::{HasSelf, Linker};

use crate::barrier::View;
use crate::runtime::CallState;
use crate::runtime::barrier_to_host;
use crate::runtime::bindings::coffer::host::log::{self, Level};
use crate::runtime::bindings::coffer::host::storage;
use crate::runtime::bindings::coffer::host::types::{self, HostError};

/// Longest storage key a guest may use, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Largest value a guest may store in one key (keeps entries well below page and CRL
/// pathologies seen elsewhere; engines shard larger data).
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// Most changes in one `storage.write-all`.
pub const MAX_BATCH_CHANGES: usize = 256;
/// Most value bytes in one `storage.write-all`.
pub const MAX_BATCH_BYTES: usize = 16 << 20;
/// Log bytes one call may emit; the rest is dropped with a note.
pub const MAX_LOG_BYTES_PER_CALL: usize = 64 * 1024;
/// Longest single log line.
const MAX_LOG_LINE: usize = 4096;
/// Storage prefixes the host reserves inside every mount's view.
const RESERVED_PREFIXES: [&str; 2] = ["wal/", "_keys/"];
/// Where write-ahead entries live inside a mount's view.
pub const WAL_PREFIX: &str = "wal/";

/// Refuses a config that would grant a mount its `max + 1`-th endpoint config under
/// `prefix` (a rewrite of the config at `path` is always allowed): the bound shared by the
/// `sql` and `http` grants. `what` names the configs in the refusal.
pub(crate) fn check_grant_room(
    barrier: &crate::barrier::Barrier,
    prefix: &str,
    path: &str,
    max: usize,
    what: &str,
) -> Result<(), String> {
    let existing = barrier
        .scan(prefix, None, max + 1)
        .map_err(|e| e.to_string())?;
    let key = format!("{prefix}{path}");
    if existing.len() >= max && !existing.contains(&key) {
        return Err(format!(
            "a mount may hold at most {max} {what}; delete one first"
        ));
    }
    Ok(())
}

/// The view-relative key of write-ahead entry `id`, if `id` is one the host issues (a UUID).
pub fn wal_key(id: &str) -> Option<String> {
    uuid::Uuid::parse_str(id)
        .is_ok()
        .then(|| format!("{WAL_PREFIX}{id}"))
}

/// A write-ahead entry as stored in the mount's view.
#[derive(Serialize, Deserialize)]
pub struct WalEntry {
    /// The engine's name for the kind of side effect.
    pub kind: String,
    /// Engine data, base64.
    pub data: String,
    /// Unix seconds when it was written.
    pub created: u64,
    /// Unix milliseconds when it was written (0 in entries from older versions).
    #[serde(default)]
    pub created_ms: u64,
    /// The API request whose call wrote it (empty for background calls and older entries).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub request_id: String,
}

/// Per-call capability state.
pub struct State {
    mount: String,
    storage: Option<View>,
    pub(crate) sql: Option<sql::SqlState>,
    pub(crate) http: Option<http::HttpState>,
    log_bytes: usize,
    /// The API request this call serves (empty for background calls), kept with each
    /// write-ahead entry so its rollback's audit entry names the request.
    request_id: String,
}

impl State {
    /// State for one call into the engine mounted at `mount`.
    pub fn new(
        mount: String,
        storage: Option<View>,
        sql: Option<sql::SqlState>,
        http: Option<http::HttpState>,
        request_id: String,
    ) -> Self {
        Self {
            mount,
            storage,
            sql,
            http,
            log_bytes: 0,
            request_id,
        }
    }

    /// The mount path this call serves.
    pub fn mount(&self) -> &str {
        &self.mount
    }

    /// The mount's storage view, if this call has one.
    pub fn storage_view(&self) -> Option<&View> {
        self.storage.as_ref()
    }

    fn view(&self) -> Result<&View, HostError> {
        self.storage
            .as_ref()
            .ok_or_else(|| HostError::Denied("storage is not available in this call".to_string()))
    }
}

fn check_value(value: &[u8]) -> Result<(), HostError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(HostError::Invalid(format!(
            "value is {} bytes; the limit is {MAX_VALUE_BYTES}",
            value.len()
        )));
    }
    Ok(())
}

fn check_key(key: &str, allow_empty: bool) -> Result<(), HostError> {
    if key.len() > MAX_KEY_BYTES {
        return Err(HostError::Invalid(format!(
            "storage key is {} bytes; the limit is {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    if !allow_empty && key.is_empty() {
        return Err(HostError::Invalid("storage key is empty".to_string()));
    }
    if key
        .split('/')
        .any(|segment| segment == ".." || segment == ".")
        || key.starts_with('/')
    {
        // The message never repeats the key: an engine may pass it on to a client, who
        // should not learn the engine's storage layout from it.
        return Err(HostError::Invalid(
            "storage key is not a clean relative path (no leading /, no . or .. segments)"
                .to_string(),
        ));
    }
    if key.chars().any(char::is_control) {
        return Err(HostError::Invalid(
            "storage key contains control characters".to_string(),
        ));
    }
    if RESERVED_PREFIXES.iter().any(|p| key.starts_with(p)) {
        return Err(HostError::Denied(format!(
            "storage key is in a reserved prefix ({})",
            RESERVED_PREFIXES.join(", ")
        )));
    }
    Ok(())
}

/// The bounds of one `write-all` or `compare-and-write`: change count, each key and value,
/// and the values' total size.
fn check_changes(changes: &[storage::Change]) -> Result<(), HostError> {
    if changes.len() > MAX_BATCH_CHANGES {
        return Err(HostError::Invalid(format!(
            "{} changes in one write; the limit is {MAX_BATCH_CHANGES}",
            changes.len()
        )));
    }
    let mut total = 0usize;
    for change in changes {
        check_key(&change.key, false)?;
        if let Some(value) = &change.value {
            check_value(value)?;
            total = total.saturating_add(value.len());
        }
    }
    if total > MAX_BATCH_BYTES {
        return Err(HostError::Invalid(format!(
            "{total} bytes of values in one write; the limit is {MAX_BATCH_BYTES}"
        )));
    }
    Ok(())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Links every capability into the runtime's linker, each from its own module: the shared
/// types, storage and log here, then [`sql::add_to_linker`], [`keys::add_to_linker`] and
/// [`http::add_to_linker`].
/// What a given call may actually reach is decided per call by its [`State`].
pub(crate) fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    types::add_to_linker::<CallState, HasSelf<CallState>>(linker, |s| s)?;
    crate::runtime::bindings::coffer::engine::types::add_to_linker::<CallState, HasSelf<CallState>>(
        linker,
        |s| s,
    )?;
    storage::add_to_linker::<CallState, HasSelf<CallState>>(linker, |s| s)?;
    log::add_to_linker::<CallState, HasSelf<CallState>>(linker, |s| s)?;
    sql::add_to_linker(linker)?;
    keys::add_to_linker(linker)?;
    http::add_to_linker(linker)
}

impl types::Host for CallState {}
impl crate::runtime::bindings::coffer::engine::types::Host for CallState {}

impl storage::Host for CallState {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, HostError> {
        check_key(&key, false)?;
        self.caps.view()?.get(&key).map_err(barrier_to_host)
    }

    async fn put(&mut self, key: String, value: Vec<u8>) -> Result<(), HostError> {
        check_key(&key, false)?;
        check_value(&value)?;
        self.caps
            .view()?
            .put_async(&key, &value)
            .await
            .map_err(barrier_to_host)
    }

    async fn delete(&mut self, key: String) -> Result<(), HostError> {
        check_key(&key, false)?;
        self.caps
            .view()?
            .delete_async(&key)
            .await
            .map_err(barrier_to_host)
    }

    async fn write_all(&mut self, changes: Vec<storage::Change>) -> Result<(), HostError> {
        check_changes(&changes)?;
        let writes: Vec<(&str, Option<&[u8]>)> = changes
            .iter()
            .map(|change| (change.key.as_str(), change.value.as_deref()))
            .collect();
        self.caps
            .view()?
            .write_all_async(&writes)
            .await
            .map_err(barrier_to_host)
    }

    async fn compare_and_write(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        changes: Vec<storage::Change>,
    ) -> Result<bool, HostError> {
        check_key(&key, false)?;
        check_changes(&changes)?;
        let writes: Vec<(&str, Option<&[u8]>)> = changes
            .iter()
            .map(|change| (change.key.as_str(), change.value.as_deref()))
            .collect();
        self.caps
            .view()?
            .write_all_if_async(&key, expected.as_deref(), &writes)
            .await
            .map_err(barrier_to_host)
    }

    async fn list(&mut self, prefix: String) -> Result<Vec<String>, HostError> {
        check_key(&prefix, true)?;
        self.caps.view()?.list(&prefix).map_err(barrier_to_host)
    }

    async fn put_wal(&mut self, kind: String, data: Vec<u8>) -> Result<String, HostError> {
        if data.len() > MAX_VALUE_BYTES || kind.len() > MAX_KEY_BYTES {
            return Err(HostError::Invalid(
                "write-ahead entry too large".to_string(),
            ));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let entry = WalEntry {
            kind,
            data: base64::engine::general_purpose::STANDARD.encode(&data),
            created: unix_now(),
            created_ms: now_ms(),
            request_id: self.caps.request_id.clone(),
        };
        let bytes = serde_json::to_vec(&entry).map_err(|e| HostError::Internal(e.to_string()))?;
        self.caps
            .view()?
            .put_async(&format!("{WAL_PREFIX}{id}"), &bytes)
            .await
            .map_err(barrier_to_host)?;
        Ok(id)
    }

    async fn delete_wal(&mut self, id: String) -> Result<(), HostError> {
        let Some(key) = wal_key(&id) else {
            return Err(HostError::Invalid(format!(
                "{id:?} is not a write-ahead entry id"
            )));
        };
        self.caps
            .view()?
            .delete_async(&key)
            .await
            .map_err(barrier_to_host)
    }
}

impl log::Host for CallState {
    fn log(&mut self, level: Level, message: String) {
        let state = &mut self.caps;
        if state.log_bytes >= MAX_LOG_BYTES_PER_CALL {
            return;
        }
        state.log_bytes = state.log_bytes.saturating_add(message.len());
        let mut line: String = message.chars().take(MAX_LOG_LINE).collect();
        if state.log_bytes >= MAX_LOG_BYTES_PER_CALL {
            line.push_str(" [further engine log output in this call dropped]");
        }
        let mount = state.mount.as_str();
        match level {
            Level::Trace => tracing::trace!(mount, "{line}"),
            Level::Debug => tracing::debug!(mount, "{line}"),
            Level::Info => tracing::info!(mount, "{line}"),
            Level::Warn => tracing::warn!(mount, "{line}"),
            Level::Error => tracing::error!(mount, "{line}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_outside_the_view_or_reserved_are_refused() {
        for bad in [
            "../other",
            "a/../../b",
            "/abs",
            "wal/x",
            "_keys/ca",
            "",
            "a\nb",
        ] {
            assert!(check_key(bad, false).is_err(), "{bad:?} should be refused");
        }
        assert!(check_key(&"k".repeat(MAX_KEY_BYTES + 1), false).is_err());
        assert!(check_key("entries/a.b/c", false).is_ok());
        assert!(check_key("", true).is_ok());
    }
}
