//! The core: seal state, the mount table, tokens and leases, independent of HTTP.
//!
//! What it owns: which engine serves which path prefix (persisted in the barrier at
//! `core/mounts`, each mount's storage under `logical/<uuid>/`), the validated and
//! compiled path table of every mounted engine, and the system TTL defaults.
//!
//! What it must never do: let one mount's engine see another's storage, keep serving
//! requests from state that only exists while unsealed after a seal, or delete a mount
//! while something it created (a lease, a write-ahead entry) could still be in flight.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::barrier::{Barrier, BarrierError, View};
use crate::caps::sql::{SqlPools, SqlState};
use crate::catalog::Catalog;
use crate::runtime::{BackendSpec, CallContext, Limits, Plugin, Runtime, RuntimeError};
use crate::tokens::{SYSTEM_MAX_TTL, TokenStore};

/// Where the mount table lives in the barrier.
const MOUNT_TABLE_KEY: &str = "core/mounts";
/// Where the auth mount table (`sys/auth`) lives in the barrier.
const AUTH_TABLE_KEY: &str = "core/auth";
/// The token store's path in the auth table; it is always mounted and cannot be moved.
pub const TOKEN_AUTH_PATH: &str = "token/";
/// Most mounts (the table is one storage entry).
pub const MAX_MOUNTS: usize = 1024;
/// Most paths in one engine's path table.
const MAX_PATHS: usize = 1024;
/// Most fields in one path.
const MAX_FIELDS: usize = 512;
/// Longest path pattern.
const MAX_PATTERN_BYTES: usize = 4096;
/// Most response keys one path may declare not sensitive (`audit-clear-response`).
const MAX_CLEAR_RESPONSE_KEYS: usize = 32;
/// Longest mount path.
const MAX_MOUNT_PATH: usize = 256;
/// Paths no engine may be mounted at or under.
const RESERVED_MOUNTS: [&str; 4] = ["sys/", "auth/", "cubbyhole/", "identity/"];
/// How long a disable waits, beyond the mount's engine call timeout, for requests already
/// routed to the fenced mount to finish (a call may also wait out a 10 s database connect).
const DRAIN_GRACE: Duration = Duration::from_secs(30);
/// How often a disable checks whether the fenced mount's requests have finished.
const DRAIN_POLL: Duration = Duration::from_millis(10);
/// Keys of a disabled mount deleted per commit; the first commit also removes the mount
/// from the table, so a mount of up to this many keys disappears in one commit.
const DISABLE_BATCH: usize = 4096;

/// Core failures, each with a message for the API caller.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// The caller asked for something invalid (400).
    #[error("{0}")]
    Invalid(String),
    /// Storage failed or is sealed.
    #[error(transparent)]
    Barrier(#[from] BarrierError),
    /// An engine failed to load or describe itself.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// A lease or write-ahead entry of a mount being disabled could not be cleaned up;
    /// the mount stays.
    #[error(transparent)]
    Lease(#[from] crate::lease::LeaseError),
}

/// Per-mount tuning. Zero means "system default" for every field.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MountTune {
    /// Default lease TTL in seconds.
    pub default_lease_ttl: u64,
    /// Maximum lease TTL in seconds.
    pub max_lease_ttl: u64,
    /// Coffer: wall-clock budget of one engine call, in milliseconds.
    #[serde(default)]
    pub engine_call_timeout_ms: u64,
    /// Coffer: linear-memory cap of the engine, in bytes.
    #[serde(default)]
    pub engine_memory_bytes: u64,
}

/// A mount, as persisted.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MountEntry {
    /// Path with a trailing `/`.
    pub path: String,
    /// Catalog name of the engine.
    pub engine: String,
    /// Operator's description.
    pub description: String,
    /// Identifies the mount's storage view.
    pub uuid: String,
    /// Public handle, `<type>_<8 hex>`.
    pub accessor: String,
    /// Tuning.
    pub tune: MountTune,
    /// Free-form options.
    pub options: BTreeMap<String, String>,
    /// Unix seconds.
    pub created: u64,
}

/// What is needed to enable a mount.
#[derive(Clone, Debug, Default)]
pub struct MountRequest {
    /// Path (slashes optional).
    pub path: String,
    /// Catalog name.
    pub engine: String,
    /// Description.
    pub description: String,
    /// Tuning.
    pub tune: MountTune,
    /// Options.
    pub options: BTreeMap<String, String>,
}

/// One compiled path of an engine's table.
pub struct CompiledPath {
    /// Anchored regex.
    pub regex: Regex,
    /// Index into the spec's paths.
    pub index: u32,
}

/// A loaded engine: its compiled plugin and validated self-description.
pub struct LoadedEngine {
    /// Compiled component.
    pub plugin: Arc<Plugin>,
    /// What `describe` returned.
    pub spec: BackendSpec,
    /// Compiled patterns, in table order.
    pub paths: Vec<CompiledPath>,
    /// Compiled unauthenticated-path patterns.
    pub unauthenticated: Vec<String>,
}

impl LoadedEngine {
    /// Whether reads of `rest` (below the mount) are among the engine's declared
    /// unauthenticated paths.
    pub fn is_public(&self, rest: &str) -> bool {
        self.unauthenticated.iter().any(|p| public_match(p, rest))
    }
}

/// Vault's matching of an engine's unauthenticated paths: segments compare exactly, `+`
/// stands for any one segment, and a `*` (only ever the last character) makes the rest a
/// prefix match. A trailing `/` on the path (a LIST) is ignored.
pub fn public_match(pattern: &str, path: &str) -> bool {
    let path = path.strip_suffix('/').unwrap_or(path);
    let (stem, prefix) = match pattern.strip_suffix('*') {
        Some(stem) => (stem, true),
        None => (pattern, false),
    };
    let wanted: Vec<&str> = stem.split('/').collect();
    // The last piece holds the rest of the path, slashes included.
    let given: Vec<&str> = path.splitn(wanted.len(), '/').collect();
    if given.len() != wanted.len() {
        return false;
    }
    let last = wanted.len().saturating_sub(1);
    wanted
        .iter()
        .zip(&given)
        .enumerate()
        .all(|(index, (want, segment))| match (index == last, *want) {
            (true, "+") if prefix => !segment.is_empty() && !segment.starts_with('/'),
            (true, want) if prefix => segment.starts_with(want),
            (true, "+") => !segment.is_empty() && !segment.contains('/'),
            (false, "+") => !segment.is_empty(),
            (_, want) => *segment == want,
        })
}

/// A live mount.
pub struct Mount {
    /// Persisted entry.
    pub entry: MountEntry,
    /// The engine, or why it could not be loaded (requests then fail with that reason).
    pub engine: Result<LoadedEngine, String>,
    /// The mount's storage view.
    pub view: View,
    /// Whether it still takes new requests; shared by every copy (tuning makes copies).
    fence: Arc<Fence>,
}

/// Closes a mount to new requests while it is being disabled, and tells when the requests
/// it already took have finished: each holds its copy of the [`Mount`] until it is done,
/// so the mount is drained once no copy has holders but the table and the disable.
#[derive(Default)]
struct Fence {
    closed: std::sync::atomic::AtomicBool,
    /// Every copy of the mount (a tune replaces the table's copy; requests keep theirs).
    copies: Mutex<Vec<Weak<Mount>>>,
}

impl Fence {
    /// Closes the fence; fails if it already was (another disable is running).
    fn close(&self, path: &str) -> Result<(), CoreError> {
        let already = self.closed.swap(true, std::sync::atomic::Ordering::SeqCst);
        if already {
            return Err(CoreError::Invalid(format!(
                "{path} is already being disabled"
            )));
        }
        Ok(())
    }

    fn reopen(&self) {
        self.closed
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }

    fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn register(&self, copy: &Arc<Mount>) {
        if let Ok(mut copies) = self.copies.lock() {
            copies.retain(|weak| weak.strong_count() > 0);
            copies.push(Arc::downgrade(copy));
        }
    }

    /// Holders of any copy of the mount.
    fn holders(&self) -> usize {
        self.copies
            .lock()
            .map(|copies| copies.iter().map(Weak::strong_count).sum())
            .unwrap_or(usize::MAX)
    }
}

impl Mount {
    /// Whether the mount is being disabled: it takes no new requests, and maintenance
    /// leaves it alone; only its disable still revokes and rolls back.
    pub fn fenced(&self) -> bool {
        self.fence.is_closed()
    }

    /// Whether this is an auth engine's mount (under `auth/`): its unauthenticated paths
    /// are login paths, served without a token for any operation, and its answers may
    /// carry an `auth` response the host mints a token for.
    pub fn is_auth(&self) -> bool {
        self.entry.path.starts_with(AUTH_MOUNT_PREFIX)
    }

    /// Whether a request with `op` on `rest` (below the mount) is served without a token:
    /// a read of one of the engine's unauthenticated paths, or any operation on an auth
    /// engine's login paths.
    pub fn is_public(&self, rest: &str, read: bool) -> bool {
        (read || self.is_auth())
            && self
                .engine
                .as_ref()
                .is_ok_and(|loaded| loaded.is_public(rest))
    }

    /// The engine type reported in envelopes and `sys/mounts`.
    pub fn engine_type(&self) -> &str {
        &self.entry.engine
    }

    /// Effective (default, max) lease TTL in seconds.
    pub fn ttls(&self) -> (u64, u64) {
        effective_ttls(&self.entry.tune)
    }

    /// Per-call limits.
    pub fn limits(&self) -> Limits {
        let mut limits = Limits::default();
        if self.entry.tune.engine_call_timeout_ms > 0 {
            limits.call_timeout = Duration::from_millis(self.entry.tune.engine_call_timeout_ms);
        }
        if self.entry.tune.engine_memory_bytes > 0 {
            limits.memory_bytes =
                usize::try_from(self.entry.tune.engine_memory_bytes).unwrap_or(usize::MAX);
        }
        limits
    }
}

/// Options fixed at process start.
#[derive(Clone, Debug)]
pub struct CoreOptions {
    /// Mounts from the config file, applied after every unseal.
    pub config_mounts: Vec<MountRequest>,
    /// Audit devices from the config file (`[[audit]]`), enabled after every unseal.
    pub config_audit: Vec<crate::audit::EnableRequest>,
    /// First delay before retrying a failed revocation.
    pub revoke_retry_base: Duration,
    /// Attempts before a lease becomes irrevocable.
    pub revoke_attempts: u32,
    /// Cluster name for health output.
    pub cluster_name: String,
    /// `sys/metrics` without a token (Vault's `unauthenticated_metrics_access`).
    pub unauthenticated_metrics_access: bool,
}

impl Default for CoreOptions {
    fn default() -> Self {
        Self {
            config_mounts: Vec::new(),
            config_audit: Vec::new(),
            revoke_retry_base: crate::lease::REVOKE_RETRY_BASE,
            revoke_attempts: crate::lease::MAX_REVOKE_ATTEMPTS,
            cluster_name: "coffer".to_string(),
            unauthenticated_metrics_access: false,
        }
    }
}

/// The process's secrets core.
pub struct Core {
    /// Encrypted storage.
    pub barrier: Arc<Barrier>,
    /// Component runtime.
    pub runtime: Arc<Runtime>,
    /// Plugin catalog.
    pub catalog: Catalog,
    /// Tokens.
    pub tokens: TokenStore,
    /// ACL policies.
    pub policies: crate::policies::PolicyStore,
    /// Start-up options.
    pub options: CoreOptions,
    /// Cluster id for health output.
    pub cluster_id: String,
    /// Host-side SQL connection pools of every mount.
    pub sql_pools: Arc<SqlPools>,
    /// The enabled audit devices (empty while sealed).
    pub audit: crate::audit::Broker,
    /// High availability, when storage is shared (`postgresql`); unset on a single node.
    pub ha: std::sync::OnceLock<Arc<crate::ha::Ha>>,
    mounts: RwLock<BTreeMap<String, Arc<Mount>>>,
    /// The auth mount table, by path below `auth/` (`token/` always).
    auth: RwLock<BTreeMap<String, MountEntry>>,
}

impl Core {
    /// Builds a sealed core.
    pub fn new(
        barrier: Arc<Barrier>,
        runtime: Arc<Runtime>,
        catalog: Catalog,
        options: CoreOptions,
    ) -> Arc<Self> {
        Arc::new(Self {
            audit: crate::audit::Broker::new(barrier.clone()),
            tokens: TokenStore::new(barrier.clone()),
            policies: crate::policies::PolicyStore::new(barrier.clone()),
            barrier,
            runtime,
            catalog,
            options,
            cluster_id: uuid::Uuid::new_v4().to_string(),
            sql_pools: Arc::new(SqlPools::default()),
            ha: std::sync::OnceLock::new(),
            mounts: RwLock::new(BTreeMap::new()),
            auth: RwLock::new(BTreeMap::new()),
        })
    }

    /// Loads the mount table and applies config-file mounts. Call after each unseal.
    pub fn post_unseal(&self) -> Result<(), CoreError> {
        self.policies
            .ensure_default()
            .map_err(|e| CoreError::Invalid(format!("cannot create the default policy: {e}")))?;
        // Audit devices first, so that requests served once the mounts are back are logged.
        self.audit
            .load(&self.options.config_audit)
            .map_err(|e| CoreError::Invalid(format!("cannot load the audit devices: {e}")))?;
        let entries: Vec<MountEntry> = match self.barrier.get(MOUNT_TABLE_KEY)? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| CoreError::Invalid(format!("corrupt mount table: {e}")))?,
            None => Vec::new(),
        };
        let mut mounts = BTreeMap::new();
        for entry in entries {
            let mount = self.load_mount(entry);
            if let Err(reason) = &mount.engine {
                tracing::error!(mount = %mount.entry.path, %reason, "mount could not be loaded");
            }
            mounts.insert(mount.entry.path.clone(), publish(mount));
        }
        *self.write_mounts()? = mounts;
        self.load_auth_table()?;
        for entry in self.auth_mounts() {
            if entry.path == TOKEN_AUTH_PATH {
                continue;
            }
            let mount = self.load_mount(live_auth_entry(&entry));
            if let Err(reason) = &mount.engine {
                tracing::error!(mount = %mount.entry.path, %reason, "auth mount could not be loaded");
            }
            self.write_mounts()?
                .insert(mount.entry.path.clone(), publish(mount));
        }
        for request in self.options.config_mounts.clone() {
            let path = normalize_mount_path(&request.path)?;
            match self.mount_at(&path) {
                Some(existing) if existing.entry.engine == request.engine => {
                    self.tune(
                        &path,
                        Some(request.tune.clone()),
                        Some(request.description.clone()),
                    )?;
                }
                Some(existing) => {
                    tracing::error!(mount = %path, configured = %request.engine, existing = %existing.entry.engine,
                        "config file mount conflicts with an existing mount of another type; left unchanged");
                }
                None => {
                    self.enable(request)?;
                }
            }
        }
        Ok(())
    }

    /// What one call into `mount`'s engine may touch: its storage view, its limits, and
    /// the SQL and HTTPS endpoints its operator granted.
    pub fn context(&self, mount: &Mount) -> CallContext {
        let sql = tokio::runtime::Handle::try_current().ok().map(|runtime| {
            SqlState::new(
                self.sql_pools.clone(),
                self.barrier.clone(),
                mount.entry.uuid.clone(),
                runtime,
                mount.limits().call_timeout,
            )
        });
        let http = crate::caps::http::HttpState::new(
            self.barrier.clone(),
            mount.entry.uuid.clone(),
            mount.limits().call_timeout,
        );
        CallContext {
            mount: mount.entry.path.clone(),
            storage: Some(mount.view.clone()),
            limits: mount.limits(),
            sql,
            http: Some(http),
            request_id: crate::audit::current_request_id().unwrap_or_default(),
        }
    }

    /// Drops unsealed state.
    pub fn seal(&self) {
        self.drop_loaded_state();
        // A sealed server holds no key material: parsed CA keys go with the barrier key.
        crate::caps::keys::forget_parsed_keys();
        self.barrier.seal();
    }

    /// Forgets everything loaded from storage (mounts, auth mounts, audit devices,
    /// compiled policies, SQL pools): at seal, and when an HA node changes role, so that a
    /// node that becomes active trusts nothing it loaded before.
    pub fn drop_loaded_state(&self) {
        if let Ok(mut mounts) = self.mounts.write() {
            mounts.clear();
        }
        if let Ok(mut auth) = self.auth.write() {
            auth.clear();
        }
        self.audit.clear();
        self.sql_pools.close_all();
        self.policies.forget();
    }

    /// Whether this node serves requests and runs background work itself: always on a
    /// single node; on an HA cluster, only the active node.
    pub fn is_active(&self) -> bool {
        self.ha.get().is_none_or(|ha| ha.is_active())
    }

    /// Whether this node is an unsealed HA standby (it forwards requests to the active).
    pub fn is_standby(&self) -> bool {
        !self.barrier.is_sealed() && !self.is_active()
    }

    fn write_mounts(
        &self,
    ) -> Result<std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<Mount>>>, CoreError> {
        self.mounts
            .write()
            .map_err(|_| CoreError::Invalid("mount table lock poisoned".to_string()))
    }

    fn load_mount(&self, entry: MountEntry) -> Mount {
        let view = View::new(self.barrier.clone(), format!("logical/{}/", entry.uuid));
        let plugin = if entry.path.starts_with(AUTH_MOUNT_PREFIX) {
            self.catalog.auth_engine(&entry.engine)
        } else {
            self.catalog.get(&entry.engine)
        };
        let engine = match plugin {
            None => Err(format!(
                "engine {:?} is not in the plugin catalog",
                entry.engine
            )),
            Some(plugin) => {
                let context = CallContext {
                    mount: entry.path.clone(),
                    storage: None,
                    limits: Limits::default(),
                    sql: None,
                    http: None,
                    request_id: String::new(),
                };
                self.runtime
                    .block_on(self.runtime.describe(&plugin, context))
                    .map_err(|e| e.to_string())
                    .and_then(|spec| compile_spec(plugin, spec))
            }
        };
        Mount {
            entry,
            engine,
            view,
            fence: Arc::default(),
        }
    }

    /// Every live engine mount, secrets and auth engines alike, by path.
    pub fn mounts(&self) -> Vec<Arc<Mount>> {
        self.mounts
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The secrets engines' mounts (`sys/mounts`), by path.
    pub fn secret_mounts(&self) -> Vec<Arc<Mount>> {
        let mut mounts = self.mounts();
        mounts.retain(|mount| !mount.is_auth());
        mounts
    }

    /// The mount at exactly `path` (with trailing slash).
    pub fn mount_at(&self, path: &str) -> Option<Arc<Mount>> {
        self.mounts.read().ok()?.get(path).cloned()
    }

    /// The path of the mount that lease id `id` (`<mount path><rest>`) belongs to, fenced
    /// or not. Mount paths never nest, so only the greatest path not after `id` can be a
    /// prefix of it.
    pub fn mount_path_of(&self, id: &str) -> Option<String> {
        let mounts = self.mounts.read().ok()?;
        mounts
            .range::<str, _>((std::ops::Bound::Unbounded, std::ops::Bound::Included(id)))
            .next_back()
            .map(|(path, _)| path)
            .filter(|path| id.starts_with(path.as_str()))
            .cloned()
    }

    /// The mount serving `logical_path` (longest prefix) and the path below it. A mount
    /// being disabled serves nothing.
    pub fn route(&self, logical_path: &str) -> Option<(Arc<Mount>, String)> {
        let mounts = self.mounts.read().ok()?;
        let with_slash = format!("{logical_path}/");
        mounts
            .iter()
            .filter(|(prefix, mount)| {
                (logical_path.starts_with(prefix.as_str()) || with_slash == **prefix)
                    && !mount.fenced()
            })
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(prefix, mount)| {
                let rest = logical_path.get(prefix.len()..).unwrap_or_default();
                (mount.clone(), rest.to_string())
            })
    }

    /// Enables a mount. Enabling the same engine at a path where it is already mounted
    /// changes nothing and returns `Ok(false)`; another engine there is a conflict.
    pub fn enable(&self, request: MountRequest) -> Result<bool, CoreError> {
        let path = normalize_mount_path(&request.path)?;
        if self
            .mount_at(&path)
            .is_some_and(|m| m.entry.engine == request.engine)
        {
            return Ok(false);
        }
        if self.catalog.get(&request.engine).is_none() {
            return Err(CoreError::Invalid(format!(
                "plugin not found in the catalog: {}",
                request.engine
            )));
        }
        validate_tune(&request.tune)?;
        let entry = MountEntry {
            accessor: format!(
                "{}_{}",
                request.engine,
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
            path: path.clone(),
            engine: request.engine,
            description: request.description,
            uuid: uuid::Uuid::new_v4().to_string(),
            tune: request.tune,
            options: request.options,
            created: crate::tokens::unix_now(),
        };
        // Describe outside the lock; it runs guest code.
        let mount = self.load_mount(entry);
        if let Err(reason) = &mount.engine {
            return Err(CoreError::Invalid(format!("cannot mount {path}: {reason}")));
        }
        let mut mounts = self.write_mounts()?;
        if let Some(conflict) = mounts
            .keys()
            .find(|existing| existing.starts_with(&path) || path.starts_with(existing.as_str()))
        {
            return Err(CoreError::Invalid(format!(
                "path is already in use at {conflict}"
            )));
        }
        if mounts.len() >= MAX_MOUNTS {
            return Err(CoreError::Invalid(format!(
                "at most {MAX_MOUNTS} mounts are allowed"
            )));
        }
        mounts.insert(path, publish(mount));
        self.persist(&mounts)?;
        Ok(true)
    }

    /// Disables the mount at `path`; returns whether there was one. In order: fence it
    /// (new requests are not routed to it), wait for the requests it already took, revoke
    /// its leases, roll back its write-ahead entries, then remove it from the table together
    /// with its storage. If a revocation or rollback fails, the mount stays and serves
    /// again (as Vault keeps a mount whose leases could not be revoked).
    pub async fn disable(self: &Arc<Self>, path: &str) -> Result<bool, CoreError> {
        let path = normalize_mount_path(path)?;
        self.disable_live(path).await
    }

    /// [`Core::disable`] of the live mount at the normalized `path` (an auth engine's is
    /// under `auth/`).
    async fn disable_live(self: &Arc<Self>, path: String) -> Result<bool, CoreError> {
        let mount = {
            // Under the table's lock, so no request is between routing and holding it.
            let mounts = self.write_mounts()?;
            let Some(mount) = mounts.get(&path).cloned() else {
                return Ok(false);
            };
            mount.fence.close(&path)?;
            mount
        };
        let retired = self.retire(&mount).await;
        if let Err(error) = &retired {
            mount.fence.reopen();
            tracing::warn!(mount = %path, %error, "disable failed; the mount stays");
        }
        retired.map(|()| true)
    }

    /// Everything [`Core::disable`] does after fencing `mount`.
    async fn retire(self: &Arc<Self>, mount: &Arc<Mount>) -> Result<(), CoreError> {
        self.drain(mount).await?;
        crate::lease::revoke_prefix(self, &mount.entry.path, false).await?;
        crate::lease::roll_back_all(self, mount).await?;
        self.erase(mount)?;
        // The mount is gone from here on; what is left of it is unreachable, and a failure
        // to delete it must not report the disable as failed.
        if let Err(error) = self.erase_leftovers(mount) {
            tracing::warn!(mount = %mount.entry.path, %error, "cannot delete what is left of a disabled mount's storage");
        }
        self.sql_pools.forget_mount(&mount.entry.uuid);
        Ok(())
    }

    /// Waits until the only holders of the fenced `mount` are the table and the caller:
    /// every request routed to it before the fence has finished, its lease stored.
    async fn drain(&self, mount: &Arc<Mount>) -> Result<(), CoreError> {
        let patience = mount.limits().call_timeout.saturating_add(DRAIN_GRACE);
        let deadline = std::time::Instant::now() + patience;
        while mount.fence.holders() > 2 {
            if std::time::Instant::now() >= deadline {
                return Err(CoreError::Invalid(format!(
                    "requests to {} were still running after {patience:?}; try again",
                    mount.entry.path
                )));
            }
            tokio::time::sleep(DRAIN_POLL).await;
        }
        Ok(())
    }

    /// Removes `mount` from the table in one commit with its first [`DISABLE_BATCH`]
    /// storage keys (all of them, for most mounts).
    fn erase(&self, mount: &Mount) -> Result<(), CoreError> {
        let first = mount.view.scan("", None, DISABLE_BATCH)?;
        {
            let mut mounts = self.write_mounts()?;
            let mut remaining = mounts.clone();
            remaining.remove(&mount.entry.path);
            let table = encode_table(&remaining)?;
            let keys: Vec<String> = first.iter().map(|key| mount.view.full(key)).collect();
            let mut writes: Vec<(&str, Option<&[u8]>)> = vec![(MOUNT_TABLE_KEY, Some(&table))];
            writes.extend(keys.iter().map(|key| (key.as_str(), None)));
            self.barrier.write_all(&writes)?;
            *mounts = remaining;
        }
        Ok(())
    }

    /// Deletes the storage keys of an erased mount that its erasing commit did not take,
    /// in commits of [`DISABLE_BATCH`], and its SQL and HTTPS grants.
    fn erase_leftovers(&self, mount: &Mount) -> Result<(), CoreError> {
        crate::caps::http::revoke_grants(&self.barrier, &mount.entry.uuid)?;
        crate::caps::sql::revoke_grants(&self.barrier, &mount.entry.uuid)?;
        loop {
            let keys = mount.view.scan("", None, DISABLE_BATCH)?;
            if keys.is_empty() {
                return Ok(());
            }
            let keys: Vec<String> = keys.iter().map(|key| mount.view.full(key)).collect();
            let writes: Vec<(&str, Option<&[u8]>)> =
                keys.iter().map(|key| (key.as_str(), None)).collect();
            self.barrier.write_all(&writes)?;
        }
    }

    /// Updates a mount's tuning and/or description.
    pub fn tune(
        &self,
        path: &str,
        tune: Option<MountTune>,
        description: Option<String>,
    ) -> Result<(), CoreError> {
        let path = normalize_mount_path(path)?;
        self.tune_live(path, tune, description)
    }

    /// [`Core::tune`] of the live mount at the normalized `path`.
    fn tune_live(
        &self,
        path: String,
        tune: Option<MountTune>,
        description: Option<String>,
    ) -> Result<(), CoreError> {
        let mut mounts = self.write_mounts()?;
        let current = mounts
            .get(&path)
            .ok_or_else(|| CoreError::Invalid(format!("no mount at {path}")))?;
        let mut entry = current.entry.clone();
        if let Some(tune) = tune {
            validate_tune(&tune)?;
            entry.tune = tune;
        }
        if let Some(description) = description {
            entry.description = description;
        }
        let engine = match &current.engine {
            Ok(loaded) => Ok(LoadedEngine {
                plugin: loaded.plugin.clone(),
                spec: loaded.spec.clone(),
                paths: loaded
                    .paths
                    .iter()
                    .map(|p| CompiledPath {
                        regex: p.regex.clone(),
                        index: p.index,
                    })
                    .collect(),
                unauthenticated: loaded.unauthenticated.clone(),
            }),
            Err(reason) => Err(reason.clone()),
        };
        let mount = Mount {
            entry,
            engine,
            view: current.view.clone(),
            fence: current.fence.clone(),
        };
        mounts.insert(path, publish(mount));
        self.persist(&mounts)
    }

    fn persist(&self, mounts: &BTreeMap<String, Arc<Mount>>) -> Result<(), CoreError> {
        Ok(self.barrier.put(MOUNT_TABLE_KEY, &encode_table(mounts)?)?)
    }
}

/// The auth mount table (`sys/auth`): where auth methods are mounted below `auth/`.
///
/// The token store is always at `token/` (its entry is created at the first unseal and
/// persisted, so its accessor and tuning survive restarts); its TTL tuning bounds the
/// tokens `auth/token/create` makes. Other entries are auth engines from the plugin
/// catalog ([`Catalog::auth_engine`]); each also has a live [`Mount`] in the router at
/// `auth/<path>` (not persisted in the mount table), so the pipeline routes, fences and
/// retires it exactly like a secrets engine.
impl Core {
    fn read_auth(
        &self,
    ) -> Result<std::sync::RwLockReadGuard<'_, BTreeMap<String, MountEntry>>, CoreError> {
        self.auth
            .read()
            .map_err(|_| CoreError::Invalid("auth table lock poisoned".to_string()))
    }

    fn write_auth(
        &self,
    ) -> Result<std::sync::RwLockWriteGuard<'_, BTreeMap<String, MountEntry>>, CoreError> {
        self.auth
            .write()
            .map_err(|_| CoreError::Invalid("auth table lock poisoned".to_string()))
    }

    /// Loads the auth table, adding (and persisting) the token store's entry if missing.
    fn load_auth_table(&self) -> Result<(), CoreError> {
        let entries: Vec<MountEntry> = match self.barrier.get(AUTH_TABLE_KEY)? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| CoreError::Invalid(format!("corrupt auth table: {e}")))?,
            None => Vec::new(),
        };
        let mut table: BTreeMap<String, MountEntry> = entries
            .into_iter()
            .map(|entry| (entry.path.clone(), entry))
            .collect();
        let missing_token = !table.contains_key(TOKEN_AUTH_PATH);
        if missing_token {
            let entry = new_entry(
                TOKEN_AUTH_PATH.to_string(),
                "token".to_string(),
                "token based credentials".to_string(),
                MountTune::default(),
                BTreeMap::new(),
                "auth_token",
            );
            table.insert(TOKEN_AUTH_PATH.to_string(), entry);
            self.persist_auth(&table)?;
        }
        *self.write_auth()? = table;
        Ok(())
    }

    fn persist_auth(&self, table: &BTreeMap<String, MountEntry>) -> Result<(), CoreError> {
        let entries: Vec<&MountEntry> = table.values().collect();
        let bytes = serde_json::to_vec(&entries)
            .map_err(|e| CoreError::Invalid(format!("cannot encode auth table: {e}")))?;
        Ok(self.barrier.put(AUTH_TABLE_KEY, &bytes)?)
    }

    /// Every auth mount, by path.
    pub fn auth_mounts(&self) -> Vec<MountEntry> {
        self.read_auth()
            .map(|table| table.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The auth mount at exactly `path` (below `auth/`, with trailing slash).
    pub fn auth_mount_at(&self, path: &str) -> Option<MountEntry> {
        self.read_auth().ok()?.get(path).cloned()
    }

    /// Enables an auth method at `auth/<request.path>`. Only auth engines of the plugin
    /// catalog can be enabled; `token/` is the token store's.
    pub fn enable_auth(&self, request: MountRequest) -> Result<(), CoreError> {
        let path = normalize_path(&request.path)?;
        let mut table = self.write_auth()?;
        if let Some(conflict) = table
            .keys()
            .find(|existing| existing.starts_with(&path) || path.starts_with(existing.as_str()))
        {
            return Err(CoreError::Invalid(format!(
                "path is already in use at auth/{conflict}"
            )));
        }
        if self.catalog.auth_engine(&request.engine).is_none() {
            let known = self.catalog.auth_names();
            let hint = if known.is_empty() {
                "no auth engines are in the plugin catalog yet; the token store (auth/token/) is always enabled".to_string()
            } else {
                format!("the plugin catalog's auth engines: {}", known.join(", "))
            };
            return Err(CoreError::Invalid(format!(
                "unknown auth method type {:?}: {hint}",
                request.engine
            )));
        }
        validate_tune(&request.tune)?;
        if table.len() >= MAX_MOUNTS {
            return Err(CoreError::Invalid(format!(
                "at most {MAX_MOUNTS} auth mounts are allowed"
            )));
        }
        let entry = new_entry(
            path.clone(),
            request.engine.clone(),
            request.description,
            request.tune,
            request.options,
            &format!("auth_{}", request.engine),
        );
        // Describe before anything is stored: a component that is not an engine fails here.
        let mount = self.load_mount(live_auth_entry(&entry));
        if let Err(reason) = &mount.engine {
            return Err(CoreError::Invalid(format!(
                "cannot enable auth/{path}: {reason}"
            )));
        }
        let mut updated = table.clone();
        updated.insert(path, entry);
        self.persist_auth(&updated)?;
        *table = updated;
        self.write_mounts()?
            .insert(mount.entry.path.clone(), publish(mount));
        Ok(())
    }

    /// Disables the auth method at `path`; returns whether there was one. The token store
    /// cannot be disabled. Its engine's mount is retired like a secrets engine's (fenced,
    /// drained, write-ahead entries rolled back, storage erased); then, as in Vault, every
    /// token its logins minted is revoked with its children and leases.
    pub async fn disable_auth(self: &Arc<Self>, path: &str) -> Result<bool, CoreError> {
        let path = normalize_path(path)?;
        if path == TOKEN_AUTH_PATH {
            return Err(CoreError::Invalid(
                "token credential backend cannot be disabled".to_string(),
            ));
        }
        let Some(entry) = self.auth_mount_at(&path) else {
            return Ok(false);
        };
        // Fenced and retired first, so no login mints a token after the sweep below; a
        // failed sweep leaves the table entry, and disabling again finishes it.
        self.disable_live(format!("{AUTH_MOUNT_PREFIX}{path}"))
            .await?;
        crate::lease::revoke_mount_tokens(self, &entry.accessor).await?;
        let mut table = self.write_auth()?;
        if !table.contains_key(&path) {
            return Ok(false);
        }
        let mut updated = table.clone();
        updated.remove(&path);
        self.persist_auth(&updated)?;
        *table = updated;
        Ok(true)
    }

    /// Updates an auth mount's tuning and/or description.
    pub fn tune_auth(
        &self,
        path: &str,
        tune: Option<MountTune>,
        description: Option<String>,
    ) -> Result<(), CoreError> {
        let path = normalize_path(path)?;
        let mut table = self.write_auth()?;
        let mut entry = table
            .get(&path)
            .cloned()
            .ok_or_else(|| CoreError::Invalid(format!("no auth mount at auth/{path}")))?;
        if let Some(tune) = tune {
            validate_tune(&tune)?;
            entry.tune = tune;
        }
        if let Some(description) = description {
            entry.description = description;
        }
        let (tune, description) = (entry.tune.clone(), entry.description.clone());
        let mut updated = table.clone();
        updated.insert(path.clone(), entry);
        self.persist_auth(&updated)?;
        *table = updated;
        if path != TOKEN_AUTH_PATH {
            self.tune_live(
                format!("{AUTH_MOUNT_PREFIX}{path}"),
                Some(tune),
                Some(description),
            )?;
        }
        Ok(())
    }

    /// The (default, max) TTL of tokens the token store creates: its `auth/token/` tuning,
    /// else the system's.
    pub fn token_ttls(&self) -> (u64, u64) {
        self.auth_mount_at(TOKEN_AUTH_PATH)
            .map_or((SYSTEM_MAX_TTL, SYSTEM_MAX_TTL), |entry| {
                effective_ttls(&entry.tune)
            })
    }
}

/// Where auth engines' live mounts sit in the router: `auth/<path>`.
pub const AUTH_MOUNT_PREFIX: &str = "auth/";

/// The live mount's entry for an auth-table entry: the same, at `auth/<path>`.
fn live_auth_entry(entry: &MountEntry) -> MountEntry {
    MountEntry {
        path: format!("{AUTH_MOUNT_PREFIX}{}", entry.path),
        ..entry.clone()
    }
}

/// A new mount-table entry with fresh uuid and accessor (`<accessor_kind>_<8 hex>`).
fn new_entry(
    path: String,
    engine: String,
    description: String,
    tune: MountTune,
    options: BTreeMap<String, String>,
    accessor_kind: &str,
) -> MountEntry {
    MountEntry {
        accessor: format!(
            "{accessor_kind}_{}",
            uuid::Uuid::new_v4()
                .simple()
                .to_string()
                .get(..8)
                .unwrap_or_default()
        ),
        path,
        engine,
        description,
        uuid: uuid::Uuid::new_v4().to_string(),
        tune,
        options,
        created: crate::tokens::unix_now(),
    }
}

/// Effective (default, max) lease TTL in seconds of a tuning: zero means the system's.
pub fn effective_ttls(tune: &MountTune) -> (u64, u64) {
    let max = if tune.max_lease_ttl > 0 {
        tune.max_lease_ttl
    } else {
        SYSTEM_MAX_TTL
    };
    let default = if tune.default_lease_ttl > 0 {
        tune.default_lease_ttl
    } else {
        SYSTEM_MAX_TTL
    };
    (default.min(max), max)
}

/// A mount made live: shared, and known to its fence (see [`Fence::holders`]).
fn publish(mount: Mount) -> Arc<Mount> {
    let mount = Arc::new(mount);
    mount.fence.register(&mount);
    mount
}

/// The persisted form of the mount table.
fn encode_table(mounts: &BTreeMap<String, Arc<Mount>>) -> Result<Vec<u8>, CoreError> {
    // Auth engines' live mounts are persisted in the auth table, not here.
    let entries: Vec<&MountEntry> = mounts
        .values()
        .map(|m| &m.entry)
        .filter(|entry| !entry.path.starts_with(AUTH_MOUNT_PREFIX))
        .collect();
    serde_json::to_vec(&entries)
        .map_err(|e| CoreError::Invalid(format!("cannot encode mount table: {e}")))
}

fn validate_tune(tune: &MountTune) -> Result<(), CoreError> {
    let max = if tune.max_lease_ttl > 0 {
        tune.max_lease_ttl
    } else {
        SYSTEM_MAX_TTL
    };
    if tune.default_lease_ttl > max {
        return Err(CoreError::Invalid(format!(
            "backend max lease TTL of {max} would be less than backend default lease TTL of {}",
            tune.default_lease_ttl
        )));
    }
    Ok(())
}

/// Validates and compiles an engine's self-description.
fn compile_spec(plugin: Arc<Plugin>, spec: BackendSpec) -> Result<LoadedEngine, String> {
    if spec.paths.len() > MAX_PATHS {
        return Err(format!(
            "engine declares {} paths; the limit is {MAX_PATHS}",
            spec.paths.len()
        ));
    }
    let mut paths = Vec::with_capacity(spec.paths.len());
    for (index, path) in spec.paths.iter().enumerate() {
        if path.pattern.len() > MAX_PATTERN_BYTES || path.fields.len() > MAX_FIELDS {
            return Err(format!(
                "path {:?} exceeds the pattern or field limits",
                path.pattern
            ));
        }
        let regex = Regex::new(&format!("^(?:{})$", path.pattern))
            .map_err(|e| format!("path pattern {:?} is invalid: {e}", path.pattern))?;
        for capture in regex.capture_names().flatten() {
            if !path.fields.iter().any(|f| f.name == capture) {
                return Err(format!(
                    "path pattern {:?} captures {capture:?}, which is not a declared field",
                    path.pattern
                ));
            }
        }
        if path.operations.is_empty() {
            return Err(format!("path {:?} declares no operations", path.pattern));
        }
        if path.audit_clear_response.len() > MAX_CLEAR_RESPONSE_KEYS
            || path
                .audit_clear_response
                .iter()
                .any(|k| k.len() > MAX_PATTERN_BYTES)
        {
            return Err(format!(
                "path {:?} declares more than {MAX_CLEAR_RESPONSE_KEYS} audit-clear response keys, or an overlong one",
                path.pattern
            ));
        }
        paths.push(CompiledPath {
            regex,
            index: u32::try_from(index).map_err(|e| e.to_string())?,
        });
    }
    for pattern in &spec.unauthenticated {
        let misplaced_star = pattern.find('*').is_some_and(|at| at + 1 != pattern.len());
        if pattern.is_empty() || pattern.len() > MAX_PATTERN_BYTES || misplaced_star {
            return Err(format!(
                "unauthenticated path {pattern:?} is invalid: use segments, `+` for one segment, and `*` only as the last character"
            ));
        }
    }
    Ok(LoadedEngine {
        plugin,
        unauthenticated: spec.unauthenticated.clone(),
        spec,
        paths,
    })
}

/// `"/a/b"` → `"a/b/"`, refusing empty, reserved, and odd paths.
pub fn normalize_mount_path(path: &str) -> Result<String, CoreError> {
    let normalized = normalize_path(path)?;
    if let Some(reserved) = RESERVED_MOUNTS.iter().find(|r| normalized.starts_with(*r)) {
        return Err(CoreError::Invalid(format!(
            "cannot mount under reserved path {reserved:?}"
        )));
    }
    Ok(normalized)
}

/// `"/a/b"` → `"a/b/"`, refusing empty and odd paths (an auth mount's path, below `auth/`).
pub fn normalize_path(path: &str) -> Result<String, CoreError> {
    let trimmed = path.trim_matches('/');
    let invalid = |why: &str| CoreError::Invalid(format!("invalid mount path {path:?}: {why}"));
    if trimmed.is_empty() {
        return Err(invalid("it is empty"));
    }
    if trimmed.len() > MAX_MOUNT_PATH {
        return Err(invalid("it is too long"));
    }
    for segment in trimmed.split('/') {
        let clean = !segment.is_empty()
            && segment != "."
            && segment != ".."
            && segment
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !clean {
            return Err(invalid(
                "use letters, digits, '-', '_' and '.' between slashes",
            ));
        }
    }
    Ok(format!("{trimmed}/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_are_normalized_and_reserved_ones_refused() {
        assert_eq!(
            normalize_mount_path("/pki_int/").ok().as_deref(),
            Some("pki_int/")
        );
        assert_eq!(
            normalize_mount_path("team/a").ok().as_deref(),
            Some("team/a/")
        );
        for bad in [
            "",
            "/",
            "sys",
            "auth/x",
            "a//b",
            "a/../b",
            "has space",
            "a/./b",
        ] {
            assert!(
                normalize_mount_path(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
    }
}
