//! The lease scheduler, shared by every engine.
//!
//! Storage layout in the barrier:
//! - `sys/expire/id/<lease-id>`: the lease entry (engine internal data included, encrypted).
//! - `sys/expire/due/<due-ms:016>/<lease-id>`: the expiry index. Keys sort by due time, so
//!   the scheduler reads only the next batch of due keys; it never loads the lease set.
//! - `sys/expire/token/<accessor>/<lease-id>`: leases owned by a token.
//! - `sys/expire/irrevocable/<lease-id>`: leases whose revocation ran out of attempts.
//!
//! Token expiry rides on the same index with ids `auth/token/<accessor>`.
//!
//! What it must never do: drop a lease silently. A failed revocation is retried with
//! exponential backoff; after the attempt budget the lease is marked irrevocable, listed,
//! and still retried on a slow timer until it succeeds or an operator forces it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::barrier::BarrierError;
use crate::core::{Core, Mount};
use crate::fields::go_duration;
use crate::runtime::{EngineError, LeaseRef, LeaseRequest, RuntimeError};
use crate::tokens::{TokenEntry, random_base62, unix_now};

/// Revocation attempts before a lease is marked irrevocable (Vault's number).
pub const MAX_REVOKE_ATTEMPTS: u32 = 6;
/// Delay before the first retry of a failed revocation; doubles per attempt.
pub const REVOKE_RETRY_BASE: Duration = Duration::from_secs(10);
/// Longest backoff between two attempts.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(3600);
/// How often an irrevocable lease is retried.
pub const IRREVOCABLE_RETRY: Duration = Duration::from_secs(600);
/// Concurrent revocations; bounds engine and target load during expiry storms.
pub const MAX_REVOKE_WORKERS: usize = 16;
/// Concurrent revocations of one mount's leases: a quarter of the workers, so a mount
/// whose target hangs (each attempt waiting out a connect timeout) leaves the rest to
/// every other mount.
const MAX_REVOKES_PER_MOUNT: usize = MAX_REVOKE_WORKERS / 4;
/// Due keys one scheduler pass reads at most, past those it must skip (in flight, or of
/// a mount at its revocation limit) to reach other mounts' due leases.
const MAX_DUE_SCAN: usize = 4 * DUE_BATCH;
/// How often the scheduler looks for due leases: well under the one-second promise.
const SCHEDULER_TICK: Duration = Duration::from_millis(200);
/// Due keys read per tick.
const DUE_BATCH: usize = 1024;
/// Leases revoked per prefix-revoke page.
const PREFIX_BATCH: usize = 256;
/// Random characters in a lease id's last segment.
const LEASE_RANDOM_CHARS: usize = 24;

/// Where lease entries live, by lease id (also read by the metrics' live-lease gauges).
pub(crate) const ID_PREFIX: &str = "sys/expire/id/";
const DUE_PREFIX: &str = "sys/expire/due/";
const TOKEN_PREFIX: &str = "sys/expire/token/";
/// Where irrevocable leases are marked (also read by the metrics).
pub(crate) const IRREVOCABLE_PREFIX: &str = "sys/expire/irrevocable/";
/// Id prefix of token-expiry entries in the due index.
const TOKEN_EXPIRY_PREFIX: &str = "auth/token/";
/// How often write-ahead entries are swept for rollback.
const WAL_SWEEP_INTERVAL: Duration = Duration::from_secs(5);
/// A write-ahead entry written by this process is rolled back only after this age (the
/// request that wrote it may still be running). Entries older than the process start
/// are rolled back at once: nothing can still be working on them.
pub const WAL_MIN_AGE: Duration = Duration::from_secs(60);
/// Write-ahead entries handled per mount per sweep.
const WAL_BATCH: usize = 256;
/// Maintenance chores running at once: half the background threads, so expiries always
/// find threads free however many mounts' targets hang.
const MAX_MAINTENANCE_WORKERS: usize = crate::background::THREADS / 2;
/// A rollback sweep of one mount starts no new rollback after this long (each may wait
/// out a 10 s connect timeout); the rest wait for the next sweep.
const MAINTENANCE_BUDGET: Duration = Duration::from_secs(30);

/// A stored lease.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LeaseEntry {
    /// `<mount><path>/<random>`.
    pub id: String,
    /// Mount path of the owning engine.
    pub mount: String,
    /// Engine secret type.
    pub secret_type: String,
    /// Engine internal data (JSON text).
    pub internal_data: String,
    /// Unix seconds.
    pub issue_time: u64,
    /// Unix seconds of the last renewal.
    pub last_renewal: Option<u64>,
    /// Expiry, unix milliseconds.
    pub expire_ms: u64,
    /// Effective maximum TTL from issue time, seconds.
    pub max_ttl: u64,
    /// Whether renew may extend it.
    pub renewable: bool,
    /// Owning token.
    pub token_accessor: Option<String>,
    /// Failed revocation attempts so far.
    pub revoke_attempts: u32,
    /// Whether attempts ran out.
    pub irrevocable: bool,
    /// Last revocation error (no secrets: engine messages only).
    pub last_error: Option<String>,
    /// The due time this entry is indexed under, unix milliseconds.
    pub due_ms: u64,
}

impl LeaseEntry {
    fn lease_ref(&self, ttl: u64) -> LeaseRef {
        LeaseRef {
            id: self.id.clone(),
            secret_type: self.secret_type.clone(),
            internal_data: self.internal_data.clone(),
            issue_time: self.issue_time,
            ttl,
        }
    }

    /// Seconds until expiry, rounded to the nearest second (so a fresh lease reports
    /// exactly the TTL it was granted).
    pub fn ttl(&self) -> u64 {
        self.expire_ms.saturating_sub(now_ms()).saturating_add(500) / 1000
    }
}

/// Lease failures, each with the message Vault clients expect.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// 400 with this message.
    #[error("{0}")]
    Invalid(String),
    /// The engine or its target failed (message has no secrets).
    #[error("{0}")]
    Engine(String),
    /// Storage failed.
    #[error(transparent)]
    Barrier(#[from] BarrierError),
    /// The token that made the request was revoked before its lease was stored (403).
    #[error("the token was revoked during the request; its new credential is being revoked")]
    OwnerRevoked,
}

impl From<crate::tokens::TokenError> for LeaseError {
    fn from(error: crate::tokens::TokenError) -> Self {
        match error {
            crate::tokens::TokenError::Barrier(e) => Self::Barrier(e),
            crate::tokens::TokenError::Invalid(m) => Self::Invalid(m),
            crate::tokens::TokenError::ParentRevoked => Self::OwnerRevoked,
        }
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn due_key(due_ms: u64, id: &str) -> String {
    format!("{DUE_PREFIX}{due_ms:016}/{id}")
}

fn encode(entry: &LeaseEntry) -> Result<Vec<u8>, LeaseError> {
    serde_json::to_vec(entry).map_err(|e| LeaseError::Invalid(e.to_string()))
}

fn load(core: &Core, id: &str) -> Result<Option<LeaseEntry>, LeaseError> {
    match core.barrier.get(&format!("{ID_PREFIX}{id}"))? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|_| LeaseError::Invalid(format!("corrupt lease entry {id}"))),
    }
}

/// Writes the entry and moves its due-index key to `entry.due_ms`, in one commit.
fn store(core: &Core, entry: &LeaseEntry, previous_due: Option<u64>) -> Result<(), LeaseError> {
    store_with(core, entry, previous_due, &[])
}

/// [`store`], with `extra` writes in the same commit.
fn store_with(
    core: &Core,
    entry: &LeaseEntry,
    previous_due: Option<u64>,
    extra: &[(&str, Option<&[u8]>)],
) -> Result<(), LeaseError> {
    let (id_key, due) = (
        format!("{ID_PREFIX}{}", entry.id),
        due_key(entry.due_ms, &entry.id),
    );
    let encoded = encode(entry)?;
    let stale_due = previous_due
        .filter(|p| *p != entry.due_ms)
        .map(|previous| due_key(previous, &entry.id));
    let mut writes = vec![
        (id_key.as_str(), Some(encoded.as_slice())),
        (&due, Some(&[])),
    ];
    if let Some(stale) = &stale_due {
        writes.push((stale, None));
    }
    writes.extend_from_slice(extra);
    core.barrier.write_all(&writes)?;
    Ok(())
}

/// Deletes the entry and every index key naming it, in one commit.
fn remove(core: &Core, entry: &LeaseEntry) -> Result<(), LeaseError> {
    let mut keys = vec![
        due_key(entry.due_ms, &entry.id),
        format!("{IRREVOCABLE_PREFIX}{}", entry.id),
        format!("{ID_PREFIX}{}", entry.id),
    ];
    if let Some(accessor) = &entry.token_accessor {
        keys.push(format!("{TOKEN_PREFIX}{accessor}/{}", entry.id));
    }
    let writes: Vec<(&str, Option<&[u8]>)> = keys.iter().map(|k| (k.as_str(), None)).collect();
    core.barrier.write_all(&writes)?;
    Ok(())
}

/// Registers a lease for a response; returns the entry and any capping warning. The
/// entry, its index keys and the deletion of `release` (the write-ahead entries the lease
/// now stands for, as barrier keys) are one commit: a crash leaves either the lease or
/// the write-ahead entries that roll its side effect back, never both or neither.
pub fn create(
    core: &Core,
    mount: &Mount,
    request_path: &str,
    request: &LeaseRequest,
    token: Option<&TokenEntry>,
    release: &[String],
) -> Result<(LeaseEntry, Vec<String>), LeaseError> {
    let (mount_default, mount_max) = mount.ttls();
    let max = if request.max_ttl > 0 {
        request.max_ttl.min(mount_max)
    } else {
        mount_max
    };
    let wanted = if request.ttl > 0 {
        request.ttl
    } else {
        mount_default
    };
    let mut warnings = Vec::new();
    let ttl = if wanted > max {
        warnings.push(format!(
            "TTL of \"{}\" exceeded the effective max_ttl of \"{}\"; TTL value is capped accordingly",
            go_duration(wanted),
            go_duration(max)
        ));
        max
    } else {
        wanted
    };
    let now = now_ms();
    let expire_ms = now.saturating_add(ttl.saturating_mul(1000));
    let entry = LeaseEntry {
        id: format!(
            "{}/{}",
            request_path.trim_end_matches('/'),
            random_base62(LEASE_RANDOM_CHARS)
        ),
        mount: mount.entry.path.clone(),
        secret_type: request.secret_type.clone(),
        internal_data: request.internal_data.clone(),
        issue_time: now / 1000,
        last_renewal: None,
        expire_ms,
        max_ttl: max,
        renewable: request.renewable,
        token_accessor: token
            .filter(|t| !t.is_root() || t.expire_time.is_some())
            .map(|t| t.accessor.clone()),
        revoke_attempts: 0,
        irrevocable: false,
        last_error: None,
        due_ms: expire_ms,
    };
    let token_key = entry
        .token_accessor
        .as_ref()
        .map(|accessor| format!("{TOKEN_PREFIX}{accessor}/{}", entry.id));
    let mut extra: Vec<(&str, Option<&[u8]>)> =
        release.iter().map(|key| (key.as_str(), None)).collect();
    if let Some(token_key) = &token_key {
        extra.push((token_key, Some(&[])));
    }
    store_with(core, &entry, None, &extra)?;
    // Stored first, checked after: a revocation removes the token and then lists its
    // leases, so either it lists this one, or this check sees the owner gone. Then the
    // credential is revoked by the scheduler at once and the caller is refused.
    if let Some(accessor) = &entry.token_accessor
        && !core.tokens.present(accessor)?
    {
        expedite(core, &entry.id)?;
        return Err(LeaseError::OwnerRevoked);
    }
    Ok((entry, warnings))
}

/// Looks a lease up.
pub fn lookup(core: &Core, id: &str) -> Result<Option<LeaseEntry>, LeaseError> {
    load(core, id)
}

/// One level of lease ids below `prefix` (suffixes and folders).
pub fn list(core: &Core, prefix: &str) -> Result<Vec<String>, LeaseError> {
    let prefix = if prefix.is_empty() || prefix.ends_with('/') {
        prefix.to_string()
    } else {
        format!("{prefix}/")
    };
    Ok(core.barrier.list(&format!("{ID_PREFIX}{prefix}"))?)
}

/// Renews a lease: `increment` seconds from now (or the engine's TTL when 0), capped at
/// issue time + max TTL, after the engine's renew hook succeeds.
pub async fn renew(
    core: &Arc<Core>,
    id: &str,
    increment: u64,
) -> Result<(LeaseEntry, Vec<String>), LeaseError> {
    let mut entry =
        load(core, id)?.ok_or_else(|| LeaseError::Invalid("lease not found".to_string()))?;
    let now = now_ms();
    if entry.expire_ms <= now {
        return Err(LeaseError::Invalid("lease expired".to_string()));
    }
    if !entry.renewable {
        return Err(LeaseError::Invalid("lease is not renewable".to_string()));
    }
    let limit_ms = entry
        .issue_time
        .saturating_mul(1000)
        .saturating_add(entry.max_ttl.saturating_mul(1000));
    if limit_ms <= now {
        return Err(LeaseError::Invalid(
            "past the max TTL, cannot renew".to_string(),
        ));
    }
    let mount = core
        .mount_at(&entry.mount)
        .ok_or_else(|| LeaseError::Engine(format!("mount {} no longer exists", entry.mount)))?;
    if mount.fenced() {
        return Err(LeaseError::Invalid(format!(
            "mount {} is being disabled",
            entry.mount
        )));
    }
    let (mount_default, _) = mount.ttls();
    let wanted = if increment > 0 {
        increment
    } else {
        mount_default.min(entry.max_ttl)
    };
    let remaining_to_max = (limit_ms - now) / 1000;
    let mut warnings = Vec::new();
    let ttl = if wanted > remaining_to_max {
        warnings.push(format!(
            "TTL of \"{}\" exceeded the effective max_ttl of \"{}\"; TTL value is capped accordingly",
            go_duration(wanted),
            go_duration(remaining_to_max)
        ));
        remaining_to_max
    } else {
        wanted
    };
    let lease_ref = entry.lease_ref(ttl);
    call_engine(core, &mount, async move |runtime, plugin, context| {
        runtime.renew(plugin, context, &lease_ref).await
    })
    .await?;
    let previous_due = entry.due_ms;
    entry.expire_ms = now.saturating_add(ttl.saturating_mul(1000));
    entry.due_ms = entry.expire_ms;
    entry.last_renewal = Some(now / 1000);
    store(core, &entry, Some(previous_due))?;
    Ok((entry, warnings))
}

pub(crate) async fn call_engine(
    core: &Arc<Core>,
    mount: &Arc<Mount>,
    call: impl AsyncFnOnce(
        &crate::runtime::Runtime,
        &crate::runtime::Plugin,
        crate::runtime::CallContext,
    ) -> Result<Result<(), EngineError>, RuntimeError>
    + Send
    + 'static,
) -> Result<(), LeaseError> {
    let engine = mount
        .engine
        .as_ref()
        .map_err(|reason| LeaseError::Engine(reason.clone()))?;
    let plugin = engine.plugin.clone();
    let runtime = core.runtime.clone();
    let context = core.context(mount);
    let transcript = context.sql.as_ref().map(|sql| sql.transcript());
    let started = std::time::Instant::now();
    let outcome = if crate::background::active() {
        // On a niced background thread, which drives the call itself.
        crate::background::run(move || runtime.block_on(call(&runtime, &plugin, context)))
            .await
            .map_err(|e| LeaseError::Engine(format!("engine call aborted: {e}")))?
    } else {
        call(&runtime, &plugin, context).await
    };
    crate::metrics::global().engine_call(&mount.entry.path, started.elapsed());
    if let Some(transcript) = &transcript {
        crate::audit::note_sql(transcript);
    }
    match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(LeaseError::Engine(engine_message(&error))),
        Err(error) => Err(LeaseError::Engine(error.to_string())),
    }
}

/// A person-readable message for an engine error.
pub fn engine_message(error: &EngineError) -> String {
    match error {
        EngineError::InvalidRequest(m)
        | EngineError::PermissionDenied(m)
        | EngineError::Upstream(m)
        | EngineError::Internal(m) => m.clone(),
        EngineError::NotFound(m) if m.is_empty() => "not found".to_string(),
        EngineError::NotFound(m) => m.clone(),
        EngineError::Unsupported => "unsupported operation".to_string(),
    }
}

/// Revokes one lease now. On engine failure the lease is kept and scheduled for retry;
/// with `force` the entry is deleted anyway. Unknown ids succeed.
pub async fn revoke(core: &Arc<Core>, id: &str, force: bool) -> Result<(), LeaseError> {
    let Some(entry) = load(core, id)? else {
        return Ok(());
    };
    revoke_entry(core, entry, force, Origin::Api).await
}

/// Revokes one lease because the token that owns it was revoked (audited as such).
async fn revoke_for_token(core: &Arc<Core>, id: &str) -> Result<(), LeaseError> {
    let Some(entry) = load(core, id)? else {
        return Ok(());
    };
    revoke_entry(core, entry, false, Origin::Token).await
}

/// Who asked for a revocation: only the scheduler's own attempts count toward the retry
/// budget; a failed API revocation hands the lease to the scheduler for a prompt retry.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// A revoke request (audited as the request it is).
    Api,
    /// The revocation of the token that owns the lease.
    Token,
    /// The scheduler: the lease's expiry, a retry, or a token revocation it was handed.
    Scheduler,
}

impl Origin {
    /// Why the lease is revoked, as its audit entry says; `None` for an API request,
    /// whose own audit entries say it.
    fn audit_reason(self, entry: &LeaseEntry) -> Option<&'static str> {
        match self {
            Self::Api => None,
            Self::Token => Some("token-revoked"),
            Self::Scheduler if entry.revoke_attempts > 0 => Some("retry"),
            // Brought forward from its expiry: its token was revoked.
            Self::Scheduler if now_ms() < entry.expire_ms => Some("token-revoked"),
            Self::Scheduler => Some("expiry"),
        }
    }
}

async fn revoke_entry(
    core: &Arc<Core>,
    mut entry: LeaseEntry,
    force: bool,
    origin: Origin,
) -> Result<(), LeaseError> {
    let reason = origin.audit_reason(&entry);
    let revocation = async {
        match core.mount_at(&entry.mount) {
            Some(mount) => {
                let lease_ref = entry.lease_ref(0);
                call_engine(core, &mount, async move |runtime, plugin, context| {
                    runtime.revoke(plugin, context, &lease_ref).await
                })
                .await
            }
            None => Err(LeaseError::Engine(format!(
                "mount {} no longer exists",
                entry.mount
            ))),
        }
    };
    // An API revocation's SQL goes into its request's response entry; any other's into
    // the lease-revocation entry written here.
    let (outcome, notes) = match reason {
        Some(_) => crate::audit::collect("", revocation).await,
        None => (revocation.await, crate::audit::Notes::default()),
    };
    let audit = |entry: &LeaseEntry, error: Option<&str>| {
        if let Some(reason) = reason {
            core.audit.log_revocation(&crate::audit::Revocation {
                lease_id: &entry.id,
                mount: &entry.mount,
                reason,
                error,
                attempts: entry.revoke_attempts,
                irrevocable: entry.irrevocable,
                notes: &notes,
            });
        }
    };
    let metrics = crate::metrics::global();
    match outcome {
        Ok(()) => {
            offloaded_remove(core, entry.clone()).await?;
            audit(&entry, None);
            if reason.is_some() {
                metrics
                    .lease_expiries
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(())
        }
        Err(error) if force => {
            tracing::warn!(lease = %entry.id, %error, "revoke-force: engine failed, deleting the lease entry anyway");
            offloaded_remove(core, entry).await
        }
        Err(error) => {
            metrics
                .revocation_failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if origin == Origin::Scheduler {
                schedule_retry(core, &mut entry, &error.to_string())?;
                audit(&entry, Some(&error.to_string()));
            } else {
                audit(&entry, Some(&error.to_string()));
                let base =
                    u64::try_from(core.options.revoke_retry_base.as_millis()).unwrap_or(u64::MAX);
                let retry_at = now_ms().saturating_add(base);
                if retry_at < entry.due_ms {
                    let previous = entry.due_ms;
                    entry.due_ms = retry_at;
                    entry.last_error = Some(error.to_string());
                    store(core, &entry, Some(previous))?;
                }
            }
            Err(LeaseError::Engine(format!(
                "failed to revoke lease {}: {error}",
                entry.id
            )))
        }
    }
}

/// Removes a revoked lease's entries; the storage commit runs off the API workers when
/// this is background work.
async fn offloaded_remove(core: &Arc<Core>, entry: LeaseEntry) -> Result<(), LeaseError> {
    let core = core.clone();
    crate::background::offload(move || remove(&core, &entry))
        .await
        .map_err(|e| LeaseError::Engine(e.to_string()))?
}

fn schedule_retry(core: &Core, entry: &mut LeaseEntry, error: &str) -> Result<(), LeaseError> {
    entry.revoke_attempts = entry.revoke_attempts.saturating_add(1);
    entry.last_error = Some(error.to_string());
    let delay = if entry.revoke_attempts >= core.options.revoke_attempts {
        if !entry.irrevocable {
            tracing::error!(lease = %entry.id, attempts = entry.revoke_attempts, %error, "lease is now irrevocable; retrying on a slow timer");
            crate::metrics::global()
                .irrevocable
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        entry.irrevocable = true;
        core.barrier
            .put(&format!("{IRREVOCABLE_PREFIX}{}", entry.id), b"")?;
        IRREVOCABLE_RETRY
    } else {
        let factor = 2u32.saturating_pow(entry.revoke_attempts.saturating_sub(1));
        core.options
            .revoke_retry_base
            .saturating_mul(factor)
            .min(MAX_RETRY_DELAY)
    };
    tracing::warn!(lease = %entry.id, attempts = entry.revoke_attempts, retry_in = ?delay, %error, "lease revocation failed");
    let previous = entry.due_ms;
    entry.due_ms = now_ms().saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
    store(core, entry, Some(previous))
}

/// Revokes every lease whose id is `prefix` or lies under it by whole path segments.
/// Returns how many leases were removed. With `force`, engine failures are ignored.
pub async fn revoke_prefix(
    core: &Arc<Core>,
    prefix: &str,
    force: bool,
) -> Result<usize, LeaseError> {
    let prefix = prefix.trim_start_matches('/');
    if prefix.is_empty() {
        return Err(LeaseError::Invalid("a prefix is required".to_string()));
    }
    if let Some(entry) = load(core, prefix)? {
        revoke_entry(core, entry, force, Origin::Api).await?;
        return Ok(1);
    }
    let folder = if prefix.ends_with('/') {
        prefix.to_string()
    } else {
        format!("{prefix}/")
    };
    let scan_prefix = format!("{ID_PREFIX}{folder}");
    let mut revoked = 0usize;
    let mut failures = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let keys = core
            .barrier
            .scan(&scan_prefix, after.as_deref(), PREFIX_BATCH)?;
        let Some(last) = keys.last().cloned() else {
            break;
        };
        after = Some(last);
        for key in keys {
            let id = key.get(ID_PREFIX.len()..).unwrap_or_default();
            match revoke(core, id, force).await {
                Ok(()) => revoked += 1,
                Err(error) => failures.push(error.to_string()),
            }
        }
    }
    if let Some(first) = failures.first() {
        return Err(LeaseError::Engine(format!(
            "{} of {} leases failed to revoke and will be retried; first error: {first}",
            failures.len(),
            failures.len() + revoked
        )));
    }
    Ok(revoked)
}

/// Revokes every lease owned by a token (on token revocation or expiry).
pub async fn revoke_token_leases(
    core: &Arc<Core>,
    accessor: &str,
    leases: Leases,
) -> Result<(), LeaseError> {
    let prefix = format!("{TOKEN_PREFIX}{accessor}/");
    loop {
        let keys = core.barrier.scan(&prefix, None, PREFIX_BATCH)?;
        if keys.is_empty() {
            return Ok(());
        }
        let mut progressed = false;
        for key in keys {
            let id = key.get(prefix.len()..).unwrap_or_default().to_string();
            if leases == Leases::Scheduled {
                expedite(core, &id)?;
            }
            core.barrier.delete(&key)?;
            progressed = true;
            // A failure leaves the lease scheduled for retry; the token is gone either way.
            if leases == Leases::Now
                && let Err(error) = revoke_for_token(core, &id).await
            {
                tracing::warn!(lease = %id, %error, "revoking a token's lease failed; it will be retried");
            }
        }
        if !progressed {
            return Ok(());
        }
    }
}

/// The due-index key of a token's expiry at `expire_unix` (seconds).
pub fn token_expiry_key(accessor: &str, expire_unix: u64) -> String {
    due_key(
        expire_unix.saturating_mul(1000),
        &format!("{TOKEN_EXPIRY_PREFIX}{accessor}"),
    )
}

/// Irrevocable leases, at most `limit`.
pub fn irrevocable(core: &Core, limit: usize) -> Result<Vec<LeaseEntry>, LeaseError> {
    let keys = core.barrier.scan(IRREVOCABLE_PREFIX, None, limit)?;
    let mut entries = Vec::new();
    for key in keys {
        if let Some(entry) = load(
            core,
            key.get(IRREVOCABLE_PREFIX.len()..).unwrap_or_default(),
        )? {
            entries.push(entry);
        }
    }
    Ok(entries)
}

/// The background scheduler: revokes leases (and expires tokens) as they come due, and
/// starts each mount's maintenance (write-ahead rollback, `periodic`) as tasks of its own.
pub struct Scheduler {
    in_flight: Mutex<InFlight>,
    workers: Arc<Semaphore>,
    maintenance: Arc<Maintenance>,
}

impl Scheduler {
    /// Starts the scheduler loop on the current tokio runtime.
    pub fn spawn(core: Arc<Core>) -> tokio::task::JoinHandle<()> {
        let scheduler = Arc::new(Self {
            in_flight: Mutex::new(InFlight::default()),
            workers: Arc::new(Semaphore::new(MAX_REVOKE_WORKERS)),
            maintenance: Arc::new(Maintenance {
                running: Mutex::new(HashSet::new()),
                slots: Arc::new(Semaphore::new(MAX_MAINTENANCE_WORKERS)),
                resuming_tokens: Arc::default(),
            }),
        });
        let started = now_ms();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SCHEDULER_TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_sweep: Option<std::time::Instant> = None;
            loop {
                tick.tick().await;
                if core.barrier.is_sealed() || !core.is_active() {
                    // A standby leaves leases, rollbacks and periodic work to the active.
                    last_sweep = None;
                    continue;
                }
                // Keep passing while batches come back full of due entries.
                loop {
                    match scheduler.clone().dispatch_due(&core).await {
                        Ok(true) => continue,
                        Ok(false) => break,
                        Err(error) => {
                            tracing::warn!(%error, "lease scheduler pass failed");
                            break;
                        }
                    }
                }
                if last_sweep.is_none_or(|at| at.elapsed() >= WAL_SWEEP_INTERVAL) {
                    last_sweep = Some(std::time::Instant::now());
                    // Never awaited here: a mount whose target hangs must not hold up expiry.
                    // On an HA node, what was written before it became active is the previous
                    // active's: no request here can still be working on it.
                    let since = core
                        .ha
                        .get()
                        .map_or(started, |ha| ha.active_since_ms().max(started));
                    scheduler.maintenance.start(&core, since);
                }
            }
        })
    }

    /// Hands every due entry of the next batches to the worker pool, waiting for free
    /// workers rather than for the next tick, so a storm drains at the workers' pace; a
    /// mount at [`MAX_REVOKES_PER_MOUNT`] is passed over. Returns whether the pass read
    /// [`MAX_DUE_SCAN`] due keys and dispatched some (more may be waiting).
    async fn dispatch_due(self: Arc<Self>, core: &Arc<Core>) -> Result<bool, LeaseError> {
        let now = now_ms();
        let (mut after, mut scanned, mut dispatched) = (None::<String>, 0usize, false);
        while scanned < MAX_DUE_SCAN {
            let keys = core.barrier.scan(DUE_PREFIX, after.as_deref(), DUE_BATCH)?;
            let full = keys.len() == DUE_BATCH;
            scanned += keys.len();
            after = keys.last().cloned();
            for key in keys {
                let Some((due, id)) = key
                    .get(DUE_PREFIX.len()..)
                    .and_then(|rest| rest.split_once('/'))
                else {
                    continue;
                };
                let Ok(due) = due.parse::<u64>() else {
                    continue;
                };
                if due > now {
                    return Ok(false);
                }
                // Token expiries and leases of a mount that is gone share one group.
                let group = core.mount_path_of(id).unwrap_or_default();
                let admitted = self
                    .in_flight
                    .lock()
                    .map(|in_flight| in_flight.admits(id, &group))
                    .unwrap_or(false);
                if !admitted {
                    continue;
                }
                let Ok(permit) = self.workers.clone().acquire_owned().await else {
                    return Ok(false);
                };
                let id = id.to_string();
                if let Ok(mut in_flight) = self.in_flight.lock() {
                    in_flight.start(&id, &group);
                }
                dispatched = true;
                let (scheduler, core, key) = (self.clone(), core.clone(), key.clone());
                tokio::spawn(crate::background::scope(async move {
                    if let Err(error) = expire(&core, &id, due, &key).await {
                        tracing::warn!(lease = %id, %error, "expiry failed");
                    }
                    if let Ok(mut in_flight) = scheduler.in_flight.lock() {
                        in_flight.finish(&id, &group);
                    }
                    drop(permit);
                }));
            }
            if !full {
                return Ok(false);
            }
        }
        Ok(dispatched)
    }
}

/// Expiries being worked on: by id, and how many per mount.
#[derive(Default)]
struct InFlight {
    ids: HashSet<String>,
    per_mount: std::collections::HashMap<String, usize>,
}

impl InFlight {
    /// Whether `id` (of the mount at `group`) may start now.
    fn admits(&self, id: &str, group: &str) -> bool {
        !self.ids.contains(id)
            && (group.is_empty()
                || self.per_mount.get(group).copied().unwrap_or(0) < MAX_REVOKES_PER_MOUNT)
    }

    fn start(&mut self, id: &str, group: &str) {
        self.ids.insert(id.to_string());
        *self.per_mount.entry(group.to_string()).or_default() += 1;
    }

    fn finish(&mut self, id: &str, group: &str) {
        self.ids.remove(id);
        if let Some(count) = self.per_mount.get_mut(group) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.per_mount.remove(group);
            }
        }
    }
}

/// A mount's maintenance chores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Chore {
    /// Roll back write-ahead entries whose side effect never got a lease.
    Rollback,
    /// The engine's `maintenance.periodic` (static-role rotation, tidy).
    Periodic,
}

/// Maintenance in flight: at most one of each chore per mount, each as its own task, and
/// at most [`MAX_MAINTENANCE_WORKERS`] at once, so neither a slow mount nor many of them
/// hold up expiry or each other.
struct Maintenance {
    /// (mount uuid, chore) of every chore running or waiting for a slot.
    running: Mutex<HashSet<(String, Chore)>>,
    slots: Arc<Semaphore>,
    /// Whether a pass finishing unfinished token revocations is running (one at a time).
    resuming_tokens: Arc<std::sync::atomic::AtomicBool>,
}

impl Maintenance {
    /// Starts every chore of every mount that is not already running one.
    fn start(self: &Arc<Self>, core: &Arc<Core>, process_start: u64) {
        let idle = self
            .resuming_tokens
            .compare_exchange(
                false,
                true,
                std::sync::atomic::Ordering::AcqRel,
                std::sync::atomic::Ordering::Acquire,
            )
            .is_ok();
        if idle {
            let (core, flag) = (core.clone(), self.resuming_tokens.clone());
            tokio::spawn(crate::background::scope(async move {
                resume_token_revocations(&core).await;
                flag.store(false, std::sync::atomic::Ordering::Release);
            }));
        }
        for mount in core.mounts() {
            if mount.engine.is_err() || mount.fenced() {
                continue;
            }
            for chore in [Chore::Rollback, Chore::Periodic] {
                let key = (mount.entry.uuid.clone(), chore);
                let fresh = self
                    .running
                    .lock()
                    .map(|mut running| running.insert(key.clone()))
                    .unwrap_or(false);
                if !fresh {
                    continue;
                }
                // Held weakly while waiting for a slot, so a disable need not wait for it.
                let (maintenance, core, mount) =
                    (self.clone(), core.clone(), Arc::downgrade(&mount));
                tokio::spawn(crate::background::scope(async move {
                    if let Ok(_slot) = maintenance.slots.clone().acquire_owned().await
                        && let Some(mount) = mount.upgrade().filter(|m| !m.fenced())
                    {
                        match chore {
                            Chore::Rollback => sweep_wal(&core, &mount, process_start).await,
                            Chore::Periodic => run_periodic(&core, &mount).await,
                        }
                    }
                    if let Ok(mut running) = maintenance.running.lock() {
                        running.remove(&key);
                    }
                }));
            }
        }
    }
}

/// Calls `mount`'s `maintenance.periodic`.
async fn run_periodic(core: &Arc<Core>, mount: &Arc<Mount>) {
    let outcome = call_engine(core, mount, async move |runtime, plugin, context| {
        runtime.periodic(plugin, context).await
    })
    .await;
    if let Err(error) = outcome {
        tracing::warn!(mount = %mount.entry.path, %error, "periodic failed");
    }
}

/// Which write-ahead entries a rollback pass takes.
#[derive(Clone, Copy)]
enum Due {
    /// Those no request can still be working on (see [`WAL_MIN_AGE`]); the process start
    /// is in unix milliseconds.
    Stale { process_start: u64 },
    /// Every one: the mount is fenced and no request is running on it.
    All,
}

/// Rolls back one batch of `mount`'s stale write-ahead entries; failures are logged and
/// retried on the next sweep. Stops early once past [`MAINTENANCE_BUDGET`] or when the
/// mount is fenced (its disable rolls back what is left).
async fn sweep_wal(core: &Arc<Core>, mount: &Arc<Mount>, process_start: u64) {
    let started = std::time::Instant::now();
    let keys = match mount.view.scan(crate::caps::WAL_PREFIX, None, WAL_BATCH) {
        Ok(keys) => keys,
        Err(error) => {
            tracing::warn!(mount = %mount.entry.path, %error, "cannot scan write-ahead entries");
            return;
        }
    };
    for key in keys {
        if started.elapsed() >= MAINTENANCE_BUDGET || mount.fenced() {
            return;
        }
        if let Err(error) = roll_back_entry(core, mount, &key, Due::Stale { process_start }).await {
            tracing::warn!(mount = %mount.entry.path, %error, "rollback failed; will retry");
        }
    }
}

/// Rolls back every write-ahead entry of `mount`, which must be fenced and drained (a
/// mount being disabled). Stops at the first failure.
pub async fn roll_back_all(core: &Arc<Core>, mount: &Arc<Mount>) -> Result<(), LeaseError> {
    let mut after: Option<String> = None;
    loop {
        let keys = mount
            .view
            .scan(crate::caps::WAL_PREFIX, after.as_deref(), WAL_BATCH)?;
        let Some(last) = keys.last().cloned() else {
            return Ok(());
        };
        for key in keys {
            roll_back_entry(core, mount, &key, Due::All)
                .await
                .map_err(|error| {
                    LeaseError::Engine(format!("failed to roll back {key}: {error}"))
                })?;
        }
        after = Some(last);
    }
}

/// Rolls back the side effect of write-ahead entry `key` (view-relative) if it is `due`,
/// then deletes the entry. An entry that cannot be read or decoded is left alone.
async fn roll_back_entry(
    core: &Arc<Core>,
    mount: &Arc<Mount>,
    key: &str,
    due: Due,
) -> Result<(), LeaseError> {
    let Some(bytes) = mount.view.get(key)? else {
        return Ok(());
    };
    let Ok(entry) = serde_json::from_slice::<crate::caps::WalEntry>(&bytes) else {
        return Ok(());
    };
    if let Due::Stale { process_start } = due {
        let created = if entry.created_ms > 0 {
            entry.created_ms
        } else {
            entry.created.saturating_mul(1000)
        };
        let min_age = u64::try_from(WAL_MIN_AGE.as_millis()).unwrap_or(u64::MAX);
        let stale = created < process_start || now_ms().saturating_sub(created) >= min_age;
        if !stale {
            return Ok(());
        }
    }
    let Ok(data) = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &entry.data)
    else {
        return Ok(());
    };
    let kind = entry.kind.clone();
    let (outcome, notes) = crate::audit::collect(
        "",
        call_engine(core, mount, async move |runtime, plugin, context| {
            runtime.rollback(plugin, context, &kind, &data).await
        }),
    )
    .await;
    let error = outcome.as_ref().err().map(ToString::to_string);
    core.audit.log_rollback(&crate::audit::Rollback {
        mount: &mount.entry.path,
        kind: &entry.kind,
        request_id: &entry.request_id,
        created_ms: entry.created_ms.max(entry.created.saturating_mul(1000)),
        error: error.as_deref(),
        notes: &notes,
    });
    outcome?;
    crate::metrics::global()
        .rollbacks
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(mount = %mount.entry.path, kind = %entry.kind, "rolled back an unfinished side effect");
    let (view, key) = (mount.view.clone(), key.to_string());
    crate::background::offload(move || view.delete(&key))
        .await
        .map_err(|e| LeaseError::Engine(e.to_string()))??;
    Ok(())
}

async fn expire(core: &Arc<Core>, id: &str, due: u64, key: &str) -> Result<(), LeaseError> {
    if let Some(accessor) = id.strip_prefix(TOKEN_EXPIRY_PREFIX) {
        core.barrier.delete(key)?;
        return expire_token(core, accessor).await;
    }
    match load(core, id)? {
        // A stale index key (renewed or already revoked): drop it.
        Some(entry) if entry.due_ms != due => offloaded_delete(core, key).await,
        None => offloaded_delete(core, key).await,
        Some(entry) => {
            tracing::debug!(lease = %id, "lease due; revoking");
            match revoke_entry(core, entry, false, Origin::Scheduler).await {
                Ok(()) => Ok(()),
                Err(LeaseError::Engine(_)) => Ok(()), // already rescheduled
                Err(other) => Err(other),
            }
        }
    }
}

async fn offloaded_delete(core: &Arc<Core>, key: &str) -> Result<(), LeaseError> {
    let (core, key) = (core.clone(), key.to_string());
    crate::background::offload(move || core.barrier.delete(&key))
        .await
        .map_err(|e| LeaseError::Engine(e.to_string()))??;
    Ok(())
}

async fn expire_token(core: &Arc<Core>, accessor: &str) -> Result<(), LeaseError> {
    if let Some((_, entry)) = core.tokens.by_accessor(accessor)?
        && entry.expire_time.is_some_and(|e| e > unix_now())
    {
        return Ok(()); // renewed since; its new expiry is indexed separately
    }
    revoke_token_tree(core, accessor, Leases::Scheduled).await
}

/// How the leases of revoked tokens are taken back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leases {
    /// Now, before returning (an API revoke, whose caller expects them gone).
    Now,
    /// Made due at once and left to the scheduler, which revokes them within its
    /// per-mount bounds (expiry and crash recovery: one hung database must not hold the
    /// scheduler's workers).
    Scheduled,
}

/// Revokes the token with `accessor` and every token below it: their entries first (so
/// none of them works any more), then each one's leases, then each one's marker.
pub async fn revoke_token_tree(
    core: &Arc<Core>,
    accessor: &str,
    leases: Leases,
) -> Result<(), LeaseError> {
    let removed = core.tokens.remove_tree(accessor, token_expiry_key)?;
    finish_token_revocations(core, &removed, leases).await
}

/// Revokes every token an auth mount's logins minted (with their children; their leases
/// are handed to the scheduler), as disabling the mount requires.
pub async fn revoke_mount_tokens(core: &Arc<Core>, mount_accessor: &str) -> Result<(), LeaseError> {
    loop {
        let accessors = core.tokens.minted_by(mount_accessor, None, PREFIX_BATCH)?;
        if accessors.is_empty() {
            return Ok(());
        }
        for accessor in accessors {
            revoke_token_tree(core, &accessor, Leases::Scheduled).await?;
            // Gone with the token when it was still there; a leftover index entry of a
            // token removed before is cleared here.
            core.tokens.forget_minted(mount_accessor, &accessor)?;
        }
    }
}

/// Revokes the tokens auth engines' logins minted whose login path is under `prefix`
/// (`auth/approle/`, `auth/approle/login`): what Vault's revoke-prefix does to the token
/// leases it keeps at `auth/<mount>/login/...`. Returns how many were revoked.
pub async fn revoke_login_tokens(core: &Arc<Core>, prefix: &str) -> Result<usize, LeaseError> {
    let stem = prefix.trim_matches('/');
    let under = |path: &str| path == stem || path.starts_with(&format!("{stem}/"));
    let mut revoked = 0;
    for mount in core.mounts().into_iter().filter(|mount| mount.is_auth()) {
        let root = mount.entry.path.trim_end_matches('/');
        if !(under(root) || stem.starts_with(&format!("{root}/")) || stem == root) {
            continue;
        }
        let mut after: Option<String> = None;
        loop {
            let accessors =
                core.tokens
                    .minted_by(&mount.entry.accessor, after.as_deref(), PREFIX_BATCH)?;
            let Some(last) = accessors.last().cloned() else {
                break;
            };
            after = Some(last);
            for accessor in accessors {
                let matches = core
                    .tokens
                    .by_accessor(&accessor)?
                    .is_some_and(|(_, entry)| under(&entry.path));
                if matches {
                    revoke_token_tree(core, &accessor, Leases::Scheduled).await?;
                    revoked += 1;
                }
            }
        }
    }
    Ok(revoked)
}

/// Revokes the leases of tokens already removed, clearing each one's marker after.
pub async fn finish_token_revocations(
    core: &Arc<Core>,
    accessors: &[String],
    leases: Leases,
) -> Result<(), LeaseError> {
    for accessor in accessors {
        revoke_token_leases(core, accessor, leases).await?;
        core.tokens.finish_revocation(accessor)?;
    }
    Ok(())
}

/// Makes lease `id` due now, so the scheduler revokes it.
fn expedite(core: &Core, id: &str) -> Result<(), LeaseError> {
    if let Some(mut entry) = load(core, id)? {
        let (previous, now) = (entry.due_ms, now_ms());
        if previous > now {
            entry.due_ms = now;
            store_with(core, &entry, Some(previous), &[])?;
        }
    }
    Ok(())
}

/// Token revocations resumed per scheduler sweep (after a crash, or a failed pass).
const REVOCATIONS_PER_SWEEP: usize = 64;

/// Finishes token revocations a crash (or a failed pass) left behind: the rest of each
/// subtree, then the leases.
async fn resume_token_revocations(core: &Arc<Core>) {
    let pending = match core.tokens.pending_revocations(REVOCATIONS_PER_SWEEP) {
        Ok(pending) => pending,
        Err(error) => {
            tracing::warn!(%error, "cannot list unfinished token revocations");
            return;
        }
    };
    for accessor in pending {
        if let Err(error) = revoke_token_tree(core, &accessor, Leases::Scheduled).await {
            tracing::warn!(%error, "finishing a token revocation failed; will retry");
        }
    }
}
