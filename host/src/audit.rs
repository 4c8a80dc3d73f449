//! Audit devices (Vault's `audit` package): the device table, the `file` device, and the
//! JSON lines written for every request and response.
//!
//! What it owns: the table of enabled devices (persisted in the barrier at `core/audit`),
//! each device's HMAC salt (at `core/audit-salt/<uuid>`, never shown), the open log files,
//! and the formatting of Vault's request and response entries, with every string of the
//! request and response data, every token and (per `hmac_accessor`) every accessor
//! replaced by `hmac-sha256:<hex>` of the device's salt.
//!
//! The pipeline decides *when* to log (request entry after the ACL and before the backend,
//! response entry after); this module decides *whether it was logged*: with at least one
//! device enabled, [`Broker::log_request`] fails unless some device wrote the entry, and
//! the pipeline then refuses the request before any backend runs.
//!
//! What it must never do: write a secret in clear without `log_raw`, put a salt in any
//! reply or log line, or report an entry as logged that no device wrote. Entries are
//! written with one `write` each to a file opened for appending and not fsynced (as
//! Vault): a failed write (full disk, I/O error, a file that cannot be reopened) is seen,
//! a power loss after a successful write can still lose the tail of the file.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

use crate::barrier::{Barrier, BarrierError};
use crate::caps::sql::{SqlStep, Transcript};
use crate::logical::{ApiError, Call, Op, Reply};
use crate::tokens::TokenEntry;

/// Where the audit device table lives in the barrier.
const AUDIT_TABLE_KEY: &str = "core/audit";
/// Where each device's HMAC salt lives, by device uuid.
const SALT_PREFIX: &str = "core/audit-salt/";
/// Most audit devices (the table is one storage entry; Vault sets no limit, an operator
/// needs a handful).
pub const MAX_AUDIT_DEVICES: usize = 64;
/// Random bytes in a device's salt (the HMAC-SHA256 key; a full block of entropy).
const SALT_BYTES: usize = 32;
/// Longest `prefix` option: it is written before every line.
const MAX_PREFIX_BYTES: usize = 1024;
/// The only device type.
pub const FILE_TYPE: &str = "file";

/// Audit failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The operator asked for something invalid (400).
    #[error("{0}")]
    Invalid(String),
    /// Storage failed or is sealed.
    #[error(transparent)]
    Barrier(#[from] BarrierError),
    /// No enabled device could write the entry (500; the request must not proceed).
    #[error("no audit device could write the entry")]
    NotLogged,
}

impl From<AuditError> for ApiError {
    fn from(error: AuditError) -> Self {
        match error {
            AuditError::Invalid(message) => ApiError::bad(message),
            AuditError::Barrier(e) => ApiError::from(e),
            // Vault's text: the caller learns only that the request was refused.
            AuditError::NotLogged => ApiError::internal("internal error"),
        }
    }
}

/// A device, as persisted (and as `sys/audit` lists it; the salt is stored apart).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeviceEntry {
    /// Path with a trailing `/`.
    pub path: String,
    /// Device type (`file`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Operator's description.
    pub description: String,
    /// The device's options, as given.
    pub options: BTreeMap<String, String>,
    /// Names the device's salt.
    pub uuid: String,
    /// Unix seconds.
    pub created: u64,
}

/// What is needed to enable a device (from `sys/audit/<path>` or an `[[audit]]` entry).
#[derive(Clone, Debug, Default)]
pub struct EnableRequest {
    /// Path (slashes optional).
    pub path: String,
    /// Device type.
    pub kind: String,
    /// Description.
    pub description: String,
    /// Options (`file_path`, `mode`, `prefix`, `log_raw`, `hmac_accessor`,
    /// `elide_list_responses`, `format`).
    pub options: BTreeMap<String, String>,
    /// Asked for over the API (`sys/audit/<path>`), not by the config file: `prefix` is
    /// refused (Vault's CVE-2025-6000: a chosen prefix on every line of a file the server
    /// can write is a script or an `authorized_keys`).
    pub from_api: bool,
}

/// Where a file device writes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    /// A file, opened for appending (created with the device's mode).
    File(PathBuf),
    /// The server's standard output.
    Stdout,
    /// Nowhere (every write succeeds).
    Discard,
}

/// A file device's parsed options.
#[derive(Clone, Debug)]
struct FileOptions {
    target: Target,
    /// Permission bits of the file; 0 leaves an existing file's mode alone.
    mode: u32,
    prefix: String,
    log_raw: bool,
    hmac_accessor: bool,
    elide_list_responses: bool,
}

impl FileOptions {
    /// Parses Vault's options of the `file` device; an unknown option is refused (a
    /// misspelt `log-raw` must not silently log in clear or not at all).
    fn parse(options: &BTreeMap<String, String>, from_api: bool) -> Result<Self, AuditError> {
        let invalid = |m: String| AuditError::Invalid(m);
        let flag = |name: &str, default: bool| -> Result<bool, AuditError> {
            match options.get(name) {
                None => Ok(default),
                Some(text) => crate::fields::parse_bool(text)
                    .ok_or_else(|| invalid(format!("unable to parse '{name}': {text:?}"))),
            }
        };
        for key in options.keys() {
            if !matches!(
                key.as_str(),
                "file_path"
                    | "path"
                    | "mode"
                    | "prefix"
                    | "log_raw"
                    | "hmac_accessor"
                    | "elide_list_responses"
                    | "format"
            ) {
                return Err(invalid(format!(
                    "unknown option {key:?} of the file device"
                )));
            }
        }
        if options.get("format").is_some_and(|f| f != "json") {
            return Err(invalid("format must be json".to_string()));
        }
        // `path` is the option's old name in Vault.
        let file_path = options
            .get("file_path")
            .or_else(|| options.get("path"))
            .filter(|p| !p.is_empty())
            .ok_or_else(|| invalid("file_path is required".to_string()))?;
        let target = match file_path.as_str() {
            "stdout" => Target::Stdout,
            "discard" => Target::Discard,
            path if path.starts_with('/') => Target::File(PathBuf::from(path)),
            path => {
                return Err(invalid(format!(
                    "file_path must be an absolute path, stdout or discard, not {path:?}"
                )));
            }
        };
        let mode = match options.get("mode") {
            None => 0o600,
            Some(text) => u32::from_str_radix(text, 8)
                .ok()
                .filter(|m| *m <= 0o777)
                .ok_or_else(|| invalid(format!("unable to parse 'mode': {text:?}")))?,
        };
        if mode & 0o111 != 0 {
            return Err(invalid(format!(
                "mode {mode:o} would make the audit log executable; use read/write bits only (0600, 0640)"
            )));
        }
        let prefix = options.get("prefix").cloned().unwrap_or_default();
        if from_api && !prefix.is_empty() {
            return Err(invalid(
                "prefix can only be set in the config file's [[audit]] entry: over the API it would let a caller write chosen text into any file the server can write".to_string(),
            ));
        }
        if prefix.len() > MAX_PREFIX_BYTES || prefix.contains('\n') {
            return Err(invalid(format!(
                "prefix must be one line of at most {MAX_PREFIX_BYTES} bytes"
            )));
        }
        Ok(Self {
            target,
            mode,
            prefix,
            log_raw: flag("log_raw", false)?,
            hmac_accessor: flag("hmac_accessor", true)?,
            elide_list_responses: flag("elide_list_responses", false)?,
        })
    }
}

/// An enabled device: its entry, options, salt and open file.
struct Device {
    entry: DeviceEntry,
    options: FileOptions,
    /// The HMAC key made from the device's salt (which lives only in the barrier).
    key: aws_lc_rs::hmac::Key,
    /// The open file of a [`Target::File`]; `None` until opened, and again after a write
    /// failed or a reopen did not succeed (the next write tries to open it).
    file: Mutex<Option<std::fs::File>>,
}

impl Device {
    /// `hmac-sha256:<hex>` of `value` with this device's salt (Vault's
    /// `salt.GetIdentifiedHMAC`).
    fn hmac(&self, value: &str) -> String {
        let tag = aws_lc_rs::hmac::sign(&self.key, value.as_bytes());
        format!("hmac-sha256:{}", hex::encode(tag.as_ref()))
    }

    /// A token, hashed unless the device logs raw.
    fn token(&self, token: &str) -> String {
        if self.options.log_raw || token.is_empty() {
            token.to_string()
        } else {
            self.hmac(token)
        }
    }

    /// An accessor, hashed unless the device logs raw or `hmac_accessor=false`.
    fn accessor(&self, accessor: &str) -> String {
        if self.options.log_raw || !self.options.hmac_accessor || accessor.is_empty() {
            accessor.to_string()
        } else {
            self.hmac(accessor)
        }
    }

    /// Request or response data: every string, at any depth, hashed (Vault's
    /// `HashStructure`); keys, numbers and booleans stay.
    fn data(&self, value: &Value) -> Value {
        if self.options.log_raw {
            return value.clone();
        }
        match value {
            Value::String(text) => Value::String(self.hmac(text)),
            Value::Array(items) => Value::Array(items.iter().map(|v| self.data(v)).collect()),
            Value::Object(map) => {
                Value::Object(map.iter().map(|(k, v)| (k.clone(), self.data(v))).collect())
            }
            other => other.clone(),
        }
    }

    /// A data object with every string hashed ([`Device::data`]) except the values of the
    /// top-level keys in `clear`, which the path table declared not sensitive.
    fn data_except(&self, value: &Value, clear: &[String]) -> Value {
        match value {
            Value::Object(map) if !self.options.log_raw && !clear.is_empty() => Value::Object(
                map.iter()
                    .map(|(k, v)| {
                        let shown = if clear.iter().any(|c| c == k) {
                            v.clone()
                        } else {
                            self.data(v)
                        };
                        (k.clone(), shown)
                    })
                    .collect(),
            ),
            other => self.data(other),
        }
    }

    /// Opens (creating with the device's mode) the file of a [`Target::File`].
    fn open(&self) -> std::io::Result<Option<std::fs::File>> {
        let Target::File(path) = &self.options.target else {
            return Ok(None);
        };
        open_log(path, self.options.mode).map(Some)
    }

    /// Writes one line (prefix, entry, newline) with one write; a failure drops the file,
    /// so the next entry reopens it (and succeeds once the fault is fixed).
    fn write_line(&self, entry: &Value) -> std::io::Result<()> {
        let mut line = self.options.prefix.clone().into_bytes();
        serde_json::to_writer(&mut line, entry)?;
        line.push(b'\n');
        match &self.options.target {
            Target::Discard => Ok(()),
            Target::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(&line)?;
                out.flush()
            }
            Target::File(_) => {
                let mut guard = self
                    .file
                    .lock()
                    .map_err(|_| std::io::Error::other("audit file lock poisoned"))?;
                if guard.is_none() {
                    *guard = self.open()?;
                }
                let Some(file) = guard.as_mut() else {
                    return Err(std::io::Error::other("audit file is not open"));
                };
                let written = file.write_all(&line);
                if written.is_err() {
                    *guard = None;
                }
                written
            }
        }
    }

    /// Closes and reopens the file (after logrotate moved it: SIGHUP).
    fn reopen(&self) {
        let Ok(mut guard) = self.file.lock() else {
            return;
        };
        *guard = None;
        match self.open() {
            Ok(file) => *guard = file,
            Err(error) => {
                tracing::error!(device = %self.entry.path, %error,
                    "audit device could not reopen its file; requests are refused until it can")
            }
        }
    }
}

/// Opens an audit log for appending. A file this creates gets `mode` (0600 for 0); an
/// existing file keeps its own: enabling a device never changes the permissions of a file
/// that was there (it could be any file the server can write).
fn open_log(path: &std::path::Path, mode: u32) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let mode = if mode == 0 { 0o600 } else { mode };
    match std::fs::OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(mode)
        .open(path)
    {
        Ok(file) => {
            // The umask may have taken bits off; the operator's mode is what was asked.
            file.set_permissions(std::fs::Permissions::from_mode(mode))?;
            Ok(file)
        }
        // An existing name (a file, or a symlink, whose target may still be created):
        // opened as it is, its mode untouched.
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .mode(mode)
                .open(path)
        }
        Err(error) => Err(error),
    }
}

/// A lease revoked without a request of its own, for [`Broker::log_revocation`].
pub struct Revocation<'a> {
    /// The lease id.
    pub lease_id: &'a str,
    /// Its mount's path.
    pub mount: &'a str,
    /// `expiry`, `retry` or `token-revoked`.
    pub reason: &'a str,
    /// The engine's error, if the revocation failed (it is retried).
    pub error: Option<&'a str>,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Whether the scheduler gave up on timely retries.
    pub irrevocable: bool,
    /// What the engine ran in the database for it.
    pub notes: &'a Notes,
}

/// A write-ahead entry rolled back (a side effect whose request never finished: a crash,
/// a cancelled call, a mount being disabled), for [`Broker::log_rollback`].
pub struct Rollback<'a> {
    /// Its mount's path.
    pub mount: &'a str,
    /// The engine's name for the side effect.
    pub kind: &'a str,
    /// The id of the request whose call wrote the entry (empty for older entries).
    pub request_id: &'a str,
    /// When the entry was written, unix milliseconds.
    pub created_ms: u64,
    /// The engine's error, if the rollback failed (it is retried).
    pub error: Option<&'a str>,
    /// What the engine ran in the database to undo it.
    pub notes: &'a Notes,
}

/// Most bytes of facts an engine may state for one response.
pub const MAX_FACTS_BYTES: usize = 16 << 10;

/// What a call adds to its audit entry beyond its reply: the SQL its engine ran (from
/// the `sql` capability's [`Transcript`]s) and the facts the engine stated in clear
/// (`response.audit-facts`). Gathered on the task that serves the call, see [`collect`].
#[derive(Debug, Default)]
pub struct Notes {
    /// The request id of the call, when it is an API request.
    pub request_id: String,
    sql: Vec<SqlStep>,
    /// Database calls made past the transcript bound, not recorded.
    sql_unrecorded: usize,
    facts: Map<String, Value>,
}

impl Notes {
    /// The `sql` value of an entry (`None` when no database call was made).
    fn sql_value(&self) -> Option<Value> {
        if self.sql.is_empty() && self.sql_unrecorded == 0 {
            return None;
        }
        let mut steps = json!(self.sql);
        if self.sql_unrecorded > 0
            && let Some(list) = steps.as_array_mut()
        {
            list.push(json!({ "unrecorded_calls": self.sql_unrecorded }));
        }
        Some(steps)
    }

    /// Adds `sql` and `facts` to an entry's object.
    fn add_to(&self, object: &mut Map<String, Value>) {
        if let Some(sql) = self.sql_value() {
            object.insert("sql".into(), sql);
        }
        if !self.facts.is_empty() {
            object.insert("facts".into(), Value::Object(self.facts.clone()));
        }
    }
}

tokio::task_local! {
    static NOTES: Arc<Mutex<Notes>>;
}

/// Runs `call` with fresh [`Notes`] for `request_id`, and returns them with its output:
/// every transcript and fact noted on this task meanwhile ([`note_sql`], [`note_facts`])
/// lands in them, and none in an enclosing call's.
pub async fn collect<F: Future>(request_id: &str, call: F) -> (F::Output, Notes) {
    let notes = Arc::new(Mutex::new(Notes {
        request_id: request_id.to_string(),
        ..Notes::default()
    }));
    let output = NOTES.scope(notes.clone(), call).await;
    let notes = notes
        .lock()
        .map(|mut n| std::mem::take(&mut *n))
        .unwrap_or_default();
    (output, notes)
}

/// Moves what `transcript` recorded into the current call's notes (dropped when the task
/// collects none: nothing is audited).
pub fn note_sql(transcript: &Transcript) {
    let (steps, unrecorded) = transcript.take();
    if steps.is_empty() && unrecorded == 0 {
        return;
    }
    let _ = NOTES.try_with(|notes| {
        if let Ok(mut notes) = notes.lock() {
            notes.sql.extend(steps);
            notes.sql_unrecorded = notes.sql_unrecorded.saturating_add(unrecorded);
        }
    });
}

/// Adds an engine's facts (a JSON object) to the current call's notes.
pub fn note_facts(facts: Map<String, Value>) {
    let _ = NOTES.try_with(|notes| {
        if let Ok(mut notes) = notes.lock() {
            notes.facts.extend(facts);
        }
    });
}

/// The id of the API request this task serves, if it is one.
pub fn current_request_id() -> Option<String> {
    NOTES
        .try_with(|notes| notes.lock().map(|n| n.request_id.clone()).ok())
        .ok()
        .flatten()
        .filter(|id| !id.is_empty())
}

/// Where a request was routed, for the entry's `mount_*` fields.
#[derive(Clone, Debug, Default)]
pub struct MountInfo {
    /// `mount_point` (`secret/`, `auth/userpass/`, `sys/`).
    pub point: String,
    /// `mount_type` (the engine's catalog name, `system`, `token`).
    pub kind: String,
    /// `mount_accessor`.
    pub accessor: String,
    /// Request fields the path table declares not sensitive (logged in clear).
    pub clear_request: Vec<String>,
    /// Response `data` keys the path table declares not sensitive (logged in clear).
    pub clear_response: Vec<String>,
}

/// One request as the audit entries describe it, taken before the backend runs.
pub struct Record {
    /// The request id (also the reply's `request_id`).
    pub id: String,
    operation: &'static str,
    path: String,
    data: Map<String, Value>,
    remote_address: Option<String>,
    mount: MountInfo,
    caller: Option<(String, TokenEntry)>,
    list: bool,
}

impl Record {
    /// What the entries of `call` (routed to `mount`) say about the request.
    pub fn new(call: &Call, mount: MountInfo) -> Self {
        let operation = match call.op {
            Op::Read | Op::Head => "read",
            Op::List => "list",
            Op::Delete => "delete",
            Op::Write if call.creates => "create",
            Op::Write => "update",
        };
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            operation,
            path: call.path.clone(),
            data: call.input.clone(),
            remote_address: call.remote.map(|ip| ip.to_string()),
            mount,
            caller: call.caller.clone(),
            list: call.op == Op::List,
        }
    }
}

/// The response half of an entry, taken from the backend's reply or error.
pub struct Response {
    data: Option<Value>,
    auth: Option<Value>,
    lease_id: String,
    warnings: Vec<String>,
    error: Option<String>,
    notes: Notes,
}

impl Response {
    /// What the response entry of `outcome` says, with what the call noted.
    pub fn of(outcome: &Result<Reply, ApiError>, notes: Notes) -> Self {
        let mut response = Self {
            data: None,
            auth: None,
            lease_id: String::new(),
            warnings: Vec::new(),
            error: None,
            notes,
        };
        match outcome {
            Ok(Reply::Envelope(envelope)) => {
                response.data = envelope.data.clone();
                response.auth = envelope.auth.clone();
                response.lease_id = envelope.lease_id.clone();
                response.warnings = envelope.warnings.clone();
            }
            Ok(Reply::Empty(_)) => {}
            Ok(Reply::Bare(_, value)) => response.data = Some(value.clone()),
            Ok(Reply::Raw(content_type, body)) => {
                response.data = Some(json!({
                    "http_content_type": content_type,
                    "http_raw_body": String::from_utf8_lossy(body),
                }));
            }
            Err(error) => response.error = Some(error.errors.join("; ")),
        }
        response
    }
}

/// The devices a request's entry was written to, which its response entry goes to.
pub struct Snapshot(Vec<Arc<Device>>);

impl Snapshot {
    /// Writes the response entry to every device of the snapshot; `Err` unless at least
    /// one wrote it (or there is none).
    pub fn log_response(&self, record: &Record, response: &Response) -> Result<(), AuditError> {
        self.log_all(|device| {
            let mut entry = json!({
                "time": now_rfc3339_nano(),
                "type": "response",
                "auth": auth_block(device, record),
                "request": request_block(device, record),
                "response": response_block(device, record, response),
            });
            if let (Some(error), Some(object)) = (&response.error, entry.as_object_mut()) {
                object.insert("error".to_string(), json!(error));
            }
            entry
        })
    }

    fn log_all(&self, entry: impl Fn(&Device) -> Value) -> Result<(), AuditError> {
        if self.0.is_empty() {
            return Ok(());
        }
        let mut written = 0usize;
        for device in &self.0 {
            match device.write_line(&entry(device)) {
                Ok(()) => written += 1,
                Err(error) => {
                    tracing::error!(device = %device.entry.path, %error, "audit device failed to write an entry")
                }
            }
        }
        if written == 0 {
            return Err(AuditError::NotLogged);
        }
        Ok(())
    }
}

/// The enabled devices. Empty while sealed.
pub struct Broker {
    barrier: Arc<Barrier>,
    devices: RwLock<BTreeMap<String, Arc<Device>>>,
    /// Serializes table changes (enable, disable, load) so each persists what it read.
    changes: Mutex<()>,
}

impl Broker {
    /// A broker with no devices, storing its table in `barrier`.
    pub fn new(barrier: Arc<Barrier>) -> Self {
        Self {
            barrier,
            devices: RwLock::new(BTreeMap::new()),
            changes: Mutex::new(()),
        }
    }

    /// Whether any device is enabled (then every request must be logged).
    pub fn is_active(&self) -> bool {
        self.devices.read().map(|d| !d.is_empty()).unwrap_or(true)
    }

    /// The enabled devices' entries, by path.
    pub fn list(&self) -> Vec<DeviceEntry> {
        self.snapshot().iter().map(|d| d.entry.clone()).collect()
    }

    /// Writes the request entry to every device; `Err` unless at least one wrote it (or
    /// none is enabled). `error` is set for a request refused before any backend ran.
    /// The devices that were asked are returned: the response entry goes to them, so a
    /// call that disables a device still gets its response entry there.
    pub fn log_request(
        &self,
        record: &Record,
        error: Option<&str>,
    ) -> Result<Snapshot, AuditError> {
        let devices = Snapshot(self.snapshot());
        devices.log_all(|device| {
            let mut entry = json!({
                "time": now_rfc3339_nano(),
                "type": "request",
                "auth": auth_block(device, record),
                "request": request_block(device, record),
            });
            if let (Some(error), Some(object)) = (error, entry.as_object_mut()) {
                object.insert("error".to_string(), json!(error));
            }
            entry
        })?;
        Ok(devices)
    }

    /// Writes the entry of a lease revoked without a request of its own (its expiry, a
    /// retry, its token's revocation): Coffer's `lease-revocation` type, which Vault's log
    /// lacks. Lease ids and mounts are not secrets (Vault logs lease ids in clear); the
    /// error is the engine's message, which never holds one. A revocation is never held
    /// back for its entry: a device that cannot write it is reported in the server log.
    pub fn log_revocation(&self, revocation: &Revocation<'_>) {
        let devices = Snapshot(self.snapshot());
        let outcome = devices.log_all(|_| {
            let mut entry = json!({
                "time": now_rfc3339_nano(),
                "type": "lease-revocation",
                "lease": {
                    "id": revocation.lease_id,
                    "mount_point": revocation.mount,
                    "reason": revocation.reason,
                    "outcome": if revocation.error.is_some() { "failed" } else { "revoked" },
                    "attempts": revocation.attempts,
                    "irrevocable": revocation.irrevocable,
                },
            });
            if let Some(lease) = entry.get_mut("lease").and_then(Value::as_object_mut) {
                revocation.notes.add_to(lease);
            }
            if let (Some(error), Some(object)) = (revocation.error, entry.as_object_mut()) {
                object.insert("error".to_string(), json!(error));
            }
            entry
        });
        if let Err(error) = outcome {
            tracing::error!(lease = %revocation.lease_id, %error, "the revocation of a lease could not be audited");
        }
    }

    /// Writes the entry of a write-ahead rollback: Coffer's `rollback` type, naming the
    /// request whose side effect was undone (its request entry is in the log; its
    /// response entry never was) and the SQL that undid it. Never held back for its entry.
    pub fn log_rollback(&self, rollback: &Rollback<'_>) {
        let devices = Snapshot(self.snapshot());
        let outcome = devices.log_all(|_| {
            let mut block = Map::new();
            block.insert("mount_point".into(), json!(rollback.mount));
            block.insert("kind".into(), json!(rollback.kind));
            block.insert("request_id".into(), json!(rollback.request_id));
            block.insert(
                "written".into(),
                json!(crate::fields::rfc3339(rollback.created_ms / 1000)),
            );
            block.insert(
                "outcome".into(),
                json!(if rollback.error.is_some() {
                    "failed"
                } else {
                    "rolled-back"
                }),
            );
            rollback.notes.add_to(&mut block);
            let mut entry = json!({
                "time": now_rfc3339_nano(),
                "type": "rollback",
                "rollback": omit_empty(block),
            });
            if let (Some(error), Some(object)) = (rollback.error, entry.as_object_mut()) {
                object.insert("error".to_string(), json!(error));
            }
            entry
        });
        if let Err(error) = outcome {
            tracing::error!(mount = %rollback.mount, %error, "a rollback could not be audited");
        }
    }

    /// `sys/audit-hash/<path>`: `input` as the device at `path` would log it.
    pub fn hash(&self, path: &str, input: &str) -> Result<String, AuditError> {
        let path = normalize(path)?;
        let devices = self.read()?;
        let device = devices
            .get(&path)
            .ok_or_else(|| AuditError::Invalid("unknown audit backend".to_string()))?;
        Ok(device.hmac(input))
    }

    /// Enables a device: checks its options, opens its file once (Vault's sanity check),
    /// makes its salt, and persists both.
    pub fn enable(&self, request: EnableRequest) -> Result<(), AuditError> {
        let _change = self.lock_changes()?;
        let path = normalize(&request.path)?;
        if request.kind != FILE_TYPE {
            return Err(AuditError::Invalid(format!(
                "unknown backend type: {:?} (Coffer has the file device)",
                request.kind
            )));
        }
        let options = FileOptions::parse(&request.options, request.from_api)?;
        let mut table = self.read()?.clone();
        if let Some(existing) = table
            .keys()
            .find(|existing| existing.starts_with(&path) || path.starts_with(existing.as_str()))
        {
            return Err(AuditError::Invalid(format!(
                "path already in use at {existing}"
            )));
        }
        if table.len() >= MAX_AUDIT_DEVICES {
            return Err(AuditError::Invalid(format!(
                "at most {MAX_AUDIT_DEVICES} audit devices can be enabled"
            )));
        }
        let entry = DeviceEntry {
            path: path.clone(),
            kind: request.kind,
            description: request.description,
            options: request.options,
            uuid: uuid::Uuid::new_v4().to_string(),
            created: crate::tokens::unix_now(),
        };
        let mut salt = Zeroizing::new(vec![0u8; SALT_BYTES]);
        aws_lc_rs::rand::fill(&mut salt)
            .map_err(|_| AuditError::Invalid("the system random source failed".to_string()))?;
        let device = Device {
            file: Mutex::new(None),
            entry,
            options,
            key: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &salt),
        };
        let file = device.open().map_err(|error| {
            AuditError::Invalid(format!(
                "sanity check failed; unable to open {:?} for writing: {error}",
                device
                    .entry
                    .options
                    .get("file_path")
                    .cloned()
                    .unwrap_or_default()
            ))
        })?;
        if let Ok(mut guard) = device.file.lock() {
            *guard = file;
        }
        self.barrier.put(
            &format!("{SALT_PREFIX}{}", device.entry.uuid),
            Zeroizing::new(hex::encode(salt.as_slice())).as_bytes(),
        )?;
        table.insert(path, Arc::new(device));
        self.persist(&table)?;
        *self.write()? = table;
        Ok(())
    }

    /// Disables the device at `path` (nothing if there is none) and deletes its salt.
    pub fn disable(&self, path: &str) -> Result<(), AuditError> {
        let _change = self.lock_changes()?;
        let path = normalize(path)?;
        let mut table = self.read()?.clone();
        let Some(device) = table.remove(&path) else {
            return Ok(());
        };
        self.persist(&table)?;
        *self.write()? = table;
        self.barrier
            .delete(&format!("{SALT_PREFIX}{}", device.entry.uuid))?;
        Ok(())
    }

    /// Loads the table after an unseal, then enables the config file's devices that are
    /// not there (a device at a configured path keeps its salt; its options follow the
    /// file). A device whose file cannot be opened stays enabled and refuses requests
    /// until it can be (failing closed), which the server log says.
    pub fn load(&self, configured: &[EnableRequest]) -> Result<(), AuditError> {
        {
            let _change = self.lock_changes()?;
            let entries: Vec<DeviceEntry> = match self.barrier.get(AUDIT_TABLE_KEY)? {
                Some(bytes) => serde_json::from_slice(&bytes)
                    .map_err(|e| AuditError::Invalid(format!("corrupt audit device table: {e}")))?,
                None => Vec::new(),
            };
            let mut table = BTreeMap::new();
            for entry in entries {
                let device = self.restore(entry)?;
                table.insert(device.entry.path.clone(), Arc::new(device));
            }
            let mut changed = false;
            for request in configured {
                let path = normalize(&request.path)?;
                let Some(existing) = table.get(&path) else {
                    continue;
                };
                if existing.entry.options != request.options
                    || existing.entry.description != request.description
                {
                    let mut entry = existing.entry.clone();
                    entry.options = request.options.clone();
                    entry.description = request.description.clone();
                    let device = self.restore(entry)?;
                    table.insert(path, Arc::new(device));
                    changed = true;
                }
            }
            if changed {
                self.persist(&table)?;
            }
            *self.write()? = table;
        }
        for request in configured {
            let path = normalize(&request.path)?;
            if self.read()?.contains_key(&path) {
                continue;
            }
            self.enable(request.clone())?;
        }
        Ok(())
    }

    /// A persisted device with its salt; its file is opened now if it can be.
    fn restore(&self, entry: DeviceEntry) -> Result<Device, AuditError> {
        let options = FileOptions::parse(&entry.options, false)?;
        let salt = self
            .barrier
            .get(&format!("{SALT_PREFIX}{}", entry.uuid))?
            .and_then(|hex_salt| hex::decode(hex_salt).ok())
            .map(Zeroizing::new)
            .ok_or_else(|| {
                AuditError::Invalid(format!(
                    "the salt of audit device {} is missing",
                    entry.path
                ))
            })?;
        let device = Device {
            file: Mutex::new(None),
            entry,
            options,
            key: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &salt),
        };
        device.reopen();
        Ok(device)
    }

    /// Forgets every device (at seal): nothing is logged while sealed.
    pub fn clear(&self) {
        if let Ok(mut devices) = self.devices.write() {
            devices.clear();
        }
    }

    /// Reopens every device's file (SIGHUP, after logrotate).
    pub fn reopen(&self) {
        for device in self.snapshot() {
            device.reopen();
        }
        tracing::info!("audit devices reopened their files");
    }

    fn persist(&self, table: &BTreeMap<String, Arc<Device>>) -> Result<(), AuditError> {
        let entries: Vec<&DeviceEntry> = table.values().map(|d| &d.entry).collect();
        let bytes = serde_json::to_vec(&entries)
            .map_err(|e| AuditError::Invalid(format!("cannot encode the audit table: {e}")))?;
        Ok(self.barrier.put(AUDIT_TABLE_KEY, &bytes)?)
    }

    fn snapshot(&self) -> Vec<Arc<Device>> {
        self.devices
            .read()
            .map(|d| d.values().cloned().collect())
            .unwrap_or_default()
    }

    fn read(
        &self,
    ) -> Result<std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Device>>>, AuditError> {
        self.devices
            .read()
            .map_err(|_| AuditError::Invalid("audit table lock poisoned".to_string()))
    }

    fn write(
        &self,
    ) -> Result<std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<Device>>>, AuditError> {
        self.devices
            .write()
            .map_err(|_| AuditError::Invalid("audit table lock poisoned".to_string()))
    }

    fn lock_changes(&self) -> Result<std::sync::MutexGuard<'_, ()>, AuditError> {
        self.changes
            .lock()
            .map_err(|_| AuditError::Invalid("audit table lock poisoned".to_string()))
    }
}

/// A device path: no leading slash, one trailing slash.
fn normalize(path: &str) -> Result<String, AuditError> {
    crate::core::normalize_path(path).map_err(|e| AuditError::Invalid(e.to_string()))
}

/// Now, as Vault's `time.RFC3339Nano` in UTC (to the microsecond).
fn now_rfc3339_nano() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = crate::fields::rfc3339(now.as_secs());
    format!(
        "{}.{:06}Z",
        seconds.trim_end_matches('Z'),
        now.subsec_micros()
    )
}

/// Drops empty strings and empty maps (Go's `omitempty`).
fn omit_empty(mut object: Map<String, Value>) -> Value {
    object.retain(|_, value| match value {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Object(m) => !m.is_empty(),
        _ => true,
    });
    Value::Object(object)
}

/// The entry's `auth`: the caller's token (Vault's `AuditAuth`).
fn auth_block(device: &Device, record: &Record) -> Value {
    let Some((token, entry)) = &record.caller else {
        return json!({ "token_type": "default" });
    };
    let now = crate::tokens::unix_now();
    let mut auth = Map::new();
    auth.insert("client_token".into(), json!(device.token(token)));
    auth.insert("accessor".into(), json!(device.accessor(&entry.accessor)));
    auth.insert("display_name".into(), json!(entry.display_name));
    auth.insert("policies".into(), json!(entry.policies));
    auth.insert("token_policies".into(), json!(entry.policies));
    auth.insert("metadata".into(), json!(entry.meta));
    auth.insert("entity_id".into(), json!(""));
    auth.insert("token_type".into(), json!("service"));
    auth.insert("token_ttl".into(), json!(entry.ttl(now)));
    auth.insert(
        "token_issue_time".into(),
        json!(crate::fields::rfc3339(entry.creation_time)),
    );
    if entry.num_uses > 0 {
        auth.insert("remaining_uses".into(), json!(entry.num_uses));
    }
    omit_empty(auth)
}

/// The entry's `request` (Vault's `AuditRequest`).
fn request_block(device: &Device, record: &Record) -> Value {
    let mut request = Map::new();
    request.insert("id".into(), json!(record.id));
    request.insert("operation".into(), json!(record.operation));
    request.insert("mount_point".into(), json!(record.mount.point));
    request.insert("mount_type".into(), json!(record.mount.kind));
    request.insert("mount_accessor".into(), json!(record.mount.accessor));
    if let Some((token, entry)) = &record.caller {
        request.insert("client_token".into(), json!(device.token(token)));
        request.insert(
            "client_token_accessor".into(),
            json!(device.accessor(&entry.accessor)),
        );
    }
    request.insert("namespace".into(), json!({ "id": "root" }));
    request.insert("path".into(), json!(record.path));
    request.insert(
        "data".into(),
        device.data_except(
            &Value::Object(record.data.clone()),
            &record.mount.clear_request,
        ),
    );
    request.insert("remote_address".into(), json!(record.remote_address));
    omit_empty(request)
}

/// The entry's `response` (Vault's `AuditResponse`).
fn response_block(device: &Device, record: &Record, response: &Response) -> Value {
    let mut block = Map::new();
    block.insert("mount_point".into(), json!(record.mount.point));
    block.insert("mount_type".into(), json!(record.mount.kind));
    block.insert("mount_accessor".into(), json!(record.mount.accessor));
    if let Some(auth) = &response.auth {
        block.insert("auth".into(), response_auth(device, auth));
    }
    if !response.lease_id.is_empty() {
        block.insert("secret".into(), json!({ "lease_id": response.lease_id }));
    }
    if let Some(data) = &response.data {
        let shown = if record.list && device.options.elide_list_responses {
            let mut elided = data.clone();
            elide_list(&mut elided);
            device.data_except(&elided, &record.mount.clear_response)
        } else {
            device.data_except(data, &record.mount.clear_response)
        };
        block.insert("data".into(), shown);
    }
    if !response.warnings.is_empty() {
        block.insert("warnings".into(), json!(response.warnings));
    }
    response.notes.add_to(&mut block);
    omit_empty(block)
}

/// A minted token's `auth` block as the response entry shows it: token and accessor
/// hashed, the rest (policies, metadata, TTL) in clear as in Vault.
fn response_auth(device: &Device, auth: &Value) -> Value {
    let text = |key: &str| auth.get(key).and_then(Value::as_str).unwrap_or_default();
    let mut block = Map::new();
    block.insert(
        "client_token".into(),
        json!(device.token(text("client_token"))),
    );
    block.insert("accessor".into(), json!(device.accessor(text("accessor"))));
    for key in [
        "display_name",
        "policies",
        "token_policies",
        "metadata",
        "entity_id",
        "token_type",
        "num_uses",
    ] {
        if let Some(value) = auth.get(key) {
            block.insert(key.into(), value.clone());
        }
    }
    if let Some(ttl) = auth.get("lease_duration") {
        block.insert("token_ttl".into(), ttl.clone());
    }
    omit_empty(block)
}

/// Vault's `elide_list_responses`: a list's `keys` and `key_info` become their counts.
fn elide_list(data: &mut Value) {
    let Some(object) = data.as_object_mut() else {
        return;
    };
    if let Some(keys) = object.get_mut("keys")
        && let Some(count) = keys.as_array().map(Vec::len)
    {
        *keys = json!(count);
    }
    if let Some(info) = object.get_mut("key_info")
        && let Some(count) = info.as_object().map(Map::len)
    {
        *info = json!(count);
    }
}

#[cfg(test)]
#[allow(
    clippy::panic,
    clippy::indexing_slicing,
    reason = "unit tests on fixed values: a panic is the failure report"
)]
mod tests {
    use super::*;

    fn device(options: &[(&str, &str)]) -> Device {
        let options: BTreeMap<String, String> = options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Device {
            entry: DeviceEntry {
                path: "file/".into(),
                kind: FILE_TYPE.into(),
                description: String::new(),
                options: options.clone(),
                uuid: "u".into(),
                created: 0,
            },
            options: FileOptions::parse(&options, false).unwrap_or_else(|e| panic!("{e}")),
            key: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, b"salt"),
            file: Mutex::new(None),
        }
    }

    #[test]
    fn hmac_is_hmac_sha256_of_the_salt() {
        // HMAC-SHA256(key="salt", "foo"), as `openssl dgst -sha256 -hmac salt` prints it.
        let d = device(&[("file_path", "discard")]);
        assert_eq!(
            d.hmac("foo"),
            "hmac-sha256:6a9534d88e984dfcea835f190147b72b3f647fdcc2409e5b8be8b331ec7fe8a5"
        );
        assert_eq!(d.hmac("foo").len(), "hmac-sha256:".len() + 64);
        assert_ne!(d.hmac("foo"), d.hmac("bar"));
    }

    #[test]
    fn data_strings_are_hashed_at_any_depth_but_not_numbers_or_keys() {
        let d = device(&[("file_path", "discard")]);
        let hashed = d.data(&json!({"password": "p", "nested": {"list": ["a", 1, true]}}));
        assert_eq!(hashed["password"], json!(d.hmac("p")));
        assert_eq!(hashed["nested"]["list"][0], json!(d.hmac("a")));
        assert_eq!(hashed["nested"]["list"][1], json!(1));
        assert_eq!(hashed["nested"]["list"][2], json!(true));
        let raw = device(&[("file_path", "discard"), ("log_raw", "true")]);
        assert_eq!(raw.data(&json!({"password": "p"}))["password"], json!("p"));
    }

    #[test]
    fn accessors_follow_hmac_accessor_and_tokens_are_always_hashed() {
        let d = device(&[("file_path", "discard"), ("hmac_accessor", "false")]);
        assert_eq!(d.accessor("acc"), "acc");
        assert_eq!(d.token("tok"), d.hmac("tok"));
        let d = device(&[("file_path", "discard")]);
        assert_eq!(d.accessor("acc"), d.hmac("acc"));
    }

    #[test]
    fn options_are_parsed_and_unknown_ones_refused() {
        let parse_from = |pairs: &[(&str, &str)], from_api: bool| {
            FileOptions::parse(
                &pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                from_api,
            )
        };
        let parse = |pairs: &[(&str, &str)]| parse_from(pairs, false);
        assert!(parse(&[]).is_err(), "file_path is required");
        // No executable logs; a prefix only from the config file.
        assert!(parse(&[("file_path", "/x"), ("mode", "0755")]).is_err());
        assert!(parse(&[("file_path", "/x"), ("mode", "0601")]).is_err());
        assert!(parse_from(&[("file_path", "/x"), ("prefix", "p")], true).is_err());
        assert!(parse_from(&[("file_path", "/x"), ("prefix", "p")], false).is_ok());
        assert!(parse(&[("file_path", "relative.log")]).is_err());
        assert!(parse(&[("file_path", "/x"), ("log-raw", "true")]).is_err());
        assert!(parse(&[("file_path", "/x"), ("mode", "999")]).is_err());
        assert!(parse(&[("file_path", "/x"), ("format", "jsonx")]).is_err());
        let options =
            parse(&[("file_path", "/x"), ("mode", "0640")]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(options.mode, 0o640);
        assert!(options.hmac_accessor && !options.log_raw);
        assert_eq!(
            parse(&[("file_path", "stdout")]).map(|o| o.target).ok(),
            Some(Target::Stdout)
        );
    }

    #[test]
    fn only_keys_the_path_table_declares_clear_are_shown_in_clear() {
        let d = device(&[("file_path", "discard")]);
        let clear = vec!["username".to_string()];
        let shown = d.data_except(
            &json!({"username": "v-app", "password": "p", "nested": {"username": "x"}}),
            &clear,
        );
        assert_eq!(shown["username"], "v-app");
        assert_eq!(shown["password"], json!(d.hmac("p")));
        assert_eq!(
            shown["nested"]["username"],
            json!(d.hmac("x")),
            "only top-level keys"
        );
    }

    #[tokio::test]
    async fn notes_are_collected_per_call_and_dropped_outside_one() {
        note_facts(Map::from_iter([("lost".to_string(), json!(1))]));
        let ((), notes) = collect("req-1", async {
            assert_eq!(current_request_id().as_deref(), Some("req-1"));
            note_facts(Map::from_iter([(
                "certificate".to_string(),
                json!({"serial_number": "01"}),
            )]));
            let ((), inner) = collect("", async {
                assert_eq!(current_request_id(), None);
                note_facts(Map::from_iter([("inner".to_string(), json!(true))]));
            })
            .await;
            assert!(inner.facts.contains_key("inner"));
        })
        .await;
        assert_eq!(notes.request_id, "req-1");
        assert_eq!(notes.facts.len(), 1, "{notes:?}");
        let mut entry = Map::new();
        notes.add_to(&mut entry);
        assert_eq!(entry["facts"]["certificate"]["serial_number"], "01");
        assert!(!entry.contains_key("sql"));
    }

    #[test]
    fn list_responses_are_elided_to_counts() {
        let mut data = json!({"keys": ["a", "b"], "key_info": {"a": {}, "b": {}}});
        elide_list(&mut data);
        assert_eq!(data, json!({"keys": 2, "key_info": 2}));
    }
}
