//! The engine runtime: compiles each component once, instantiates it for every call into
//! a fresh `Store`, and bounds each call's time and memory.
//!
//! What it owns: the process-wide wasmtime `Engine`, the `Linker` into which each host
//! capability in [`caps`] links itself, the on-disk cache of compiled artifacts, and turning
//! a guest's trap, timeout or memory exhaustion into a [`RuntimeError`] that fails one
//! request. The generated WIT bindings are private to this module and its capabilities;
//! everything else sees the re-exported types below.
//!
//! What it must never do: let a guest reach anything not linked here. WASI is linked only
//! because Rust's wasip2 std imports it; its context has no preopened directories, no
//! environment, no arguments, and every socket and name lookup denied.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, SemaphorePermit};
use wasmtime::component::{Component, InstancePre, Linker, ResourceTable};
use wasmtime::{
    Config, Enabled, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store,
    Trap, UpdateDeadline,
};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::barrier::{BarrierError, View};

pub mod caps;

/// Generated host bindings for the `coffer:engine/all-capabilities` world (every capability).
#[allow(missing_docs, reason = "generated; documented in wit/")]
mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/engine",
        world: "coffer:engine/all-capabilities",
        // Engine calls run on wasmtime fibers inside the async runtime (no thread hand-off
        // per call). SQL, storage and HTTP await the database, durable commits and remote
        // servers there; the other capabilities are quick and stay synchronous.
        imports: { "coffer:host/sql": async, "coffer:host/storage": async, "coffer:host/http": async },
        exports: { default: async },
        with: {
            "coffer:host/sql.connection": crate::caps::sql::Connection,
            "coffer:host/keys.key": crate::caps::keys::Key,
        },
    });
}

pub use bindings::coffer::engine::types::{
    AuthResponse, BackendSpec, EngineError, FieldKind, FieldValue, LeaseRef, LeaseRequest,
    Operation, PathSpec, Request, Response,
};
use bindings::exports::coffer::engine::{handler, leases, maintenance, schema};

/// How often the epoch advances; the granularity of call deadlines.
const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Default wall-clock budget of one call into an engine (a request, a renew, a revoke).
/// Generous for RSA key generation in a guest, small enough that a stuck guest frees its
/// worker quickly. Overridable per mount.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Default linear-memory cap of one engine instance. Overridable per mount.
pub const DEFAULT_MEMORY_BYTES: usize = 128 << 20;
/// Most table elements a guest may grow to (function tables of a Rust guest are small).
const MAX_TABLE_ELEMENTS: usize = 100_000;
/// Component instances per store: one engine plus the adapters inside it.
const MAX_INSTANCES: usize = 64;
/// Engine calls that may run at once; each holds one slot of the instance pool. Further
/// calls wait for a free slot (they queue; they do not fail).
pub const ENGINE_SLOTS: u32 = 128;
/// Core instances, tables and memories per component slot: a Rust wasip2 component is a
/// main module plus the small shim and fixup modules `wit-component` adds.
const CORE_PER_SLOT: u32 = 4;
/// The largest linear memory a slot can hold (the wasm32 limit); per-mount limits are
/// enforced below it by the store's limiter.
const SLOT_MEMORY_BYTES: usize = 4 << 30;
/// Guest memory kept mapped when a slot is freed and zeroed with `memset` instead of
/// `madvise`: the next call does not page-fault it back in, and no TLB-shootdown IPIs
/// reach the other cores. 2 MiB covers the stack, data and working heap of our engines
/// (measured: pki/issue at c=32 ~10% faster than with 256 KiB or 8 MiB).
const KEEP_RESIDENT_BYTES: usize = 2 << 20;
/// Freed slots kept warm (with their resident memory) beyond those in use.
const WARM_SLOTS: u32 = 32;

/// Per-call limits, from the mount's config.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Wall-clock budget.
    pub call_timeout: Duration,
    /// Linear memory cap in bytes.
    pub memory_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            call_timeout: DEFAULT_CALL_TIMEOUT,
            memory_bytes: DEFAULT_MEMORY_BYTES,
        }
    }
}

/// Why a call into an engine failed (as opposed to the engine returning an error).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The component could not be compiled or is not a Coffer engine.
    #[error("component {name} could not be loaded: {reason}")]
    Load {
        /// Plugin name.
        name: String,
        /// What went wrong.
        reason: String,
    },
    /// The call ran past its deadline and was stopped.
    #[error("engine exceeded its time limit of {0:?} and was stopped")]
    Timeout(Duration),
    /// The guest tried to grow memory past its limit.
    #[error("engine exceeded its memory limit of {0} MiB and was stopped")]
    Memory(usize),
    /// The guest trapped (a panic or a bug in the engine).
    #[error("engine failed: {0}")]
    Trap(String),
    /// wasmtime could not be set up.
    #[error("runtime setup: {0}")]
    Setup(String),
}

/// A compiled engine component, ready to instantiate.
pub struct Plugin {
    /// Catalog name.
    pub name: String,
    /// Hex SHA-256 of the component bytes.
    pub sha256: String,
    pre: InstancePre<CallState>,
    // Where each exported interface's functions are, looked up once at load. A call loads
    // (and type-checks) only the interface it calls: a request needs `handler` alone.
    schema: schema::GuestIndices,
    handler: handler::GuestIndices,
    leases: leases::GuestIndices,
    maintenance: maintenance::GuestIndices,
}

/// What one call may touch.
pub struct CallContext {
    /// Mount path, for logs.
    pub mount: String,
    /// The mount's storage view; `None` for calls that get no storage (describe).
    pub storage: Option<View>,
    /// Time and memory limits.
    pub limits: Limits,
    /// SQL capability, when the mount has one.
    pub sql: Option<crate::caps::sql::SqlState>,
    /// Outbound HTTPS capability, when the mount has one.
    pub http: Option<crate::caps::http::HttpState>,
    /// The API request the call serves; empty for background calls.
    pub request_id: String,
}

/// Store data for one call.
pub struct CallState {
    wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    limiter: MemoryLimiter,
    pub(crate) caps: caps::State,
}

struct MemoryLimiter {
    max_bytes: usize,
    refused: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.refused = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The process-wide component runtime.
pub struct Runtime {
    engine: wasmtime::Engine,
    linker: Linker<CallState>,
    cache_dir: Option<PathBuf>,
    /// One permit per slot of the instance pool: a call waits here for a free slot rather
    /// than failing when every slot is busy.
    slots: Semaphore,
    /// The async runtime that drives engine calls made from plain threads.
    handle: tokio::runtime::Handle,
}

/// One instantiated engine, ready for a single call.
struct Instance<'a> {
    // Dropped before `_slot`: the store's instance returns to the pool first.
    store: Store<CallState>,
    instance: wasmtime::component::Instance,
    limits: Limits,
    _slot: SemaphorePermit<'a>,
}

impl Runtime {
    /// Builds the engine and linker, and starts the epoch ticker. Compiled artifacts are
    /// cached in `cache_dir` when given. Must be called inside a tokio runtime, which then
    /// drives the engine calls made from plain threads.
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Arc<Self>, RuntimeError> {
        let setup = |e: wasmtime::Error| RuntimeError::Setup(e.to_string());
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|e| RuntimeError::Setup(format!("no async runtime: {e}")))?;
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        // Pooling allocator: every call instantiates afresh (isolation), so instantiation is
        // on the hot path. Pre-reserved slots with copy-on-write memory images instead of an
        // mmap/munmap of the whole instance per call: a no-op call costs ~26 µs instead of
        // ~50 µs (measured in-process).
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(ENGINE_SLOTS)
            .total_core_instances(ENGINE_SLOTS * CORE_PER_SLOT)
            .total_memories(ENGINE_SLOTS * CORE_PER_SLOT)
            .total_tables(ENGINE_SLOTS * CORE_PER_SLOT)
            .total_stacks(ENGINE_SLOTS)
            .max_memory_size(SLOT_MEMORY_BYTES)
            .table_elements(MAX_TABLE_ELEMENTS)
            .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
            .table_keep_resident(KEEP_RESIDENT_BYTES)
            .max_unused_warm_slots(WARM_SLOTS)
            .pagemap_scan(Enabled::Auto);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        config.memory_init_cow(true);
        let engine = wasmtime::Engine::new(&config).map_err(setup)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(setup)?;
        caps::add_to_linker(&mut linker).map_err(setup)?;
        // Cached artifacts are native code this process will run: only a directory no
        // one else can write to is trusted with them.
        let cache_dir = cache_dir.filter(|dir| match private_directory(dir) {
            Ok(()) => true,
            Err(reason) => {
                tracing::warn!(dir = %dir.display(), %reason, "not caching compiled components");
                false
            }
        });
        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("coffer-epoch".to_string())
            .spawn(move || {
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(|e| RuntimeError::Setup(e.to_string()))?;
        Ok(Arc::new(Self {
            engine,
            linker,
            cache_dir,
            slots: Semaphore::new(ENGINE_SLOTS as usize),
            handle,
        }))
    }

    /// Compiles (or loads from the cache) a component and checks it is a Coffer engine.
    pub fn load(&self, name: &str, wasm: &[u8]) -> Result<Plugin, RuntimeError> {
        let load = |reason: String| RuntimeError::Load {
            name: name.to_string(),
            reason,
        };
        let sha256 = hex::encode(Sha256::digest(wasm));
        let component = self
            .compile_cached(&sha256, wasm)
            .map_err(|e| load(e.to_string()))?;
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| load(format!("it imports something Coffer does not provide: {e}")))?;
        let missing = |e: wasmtime::Error| {
            load(format!(
                "it does not export the coffer:engine interfaces: {e}"
            ))
        };
        Ok(Plugin {
            name: name.to_string(),
            sha256,
            schema: schema::GuestIndices::new(&instance_pre).map_err(missing)?,
            handler: handler::GuestIndices::new(&instance_pre).map_err(missing)?,
            leases: leases::GuestIndices::new(&instance_pre).map_err(missing)?,
            maintenance: maintenance::GuestIndices::new(&instance_pre).map_err(missing)?,
            pre: instance_pre,
        })
    }

    fn compile_cached(&self, sha256: &str, wasm: &[u8]) -> wasmtime::Result<Component> {
        let Some(dir) = &self.cache_dir else {
            return Component::new(&self.engine, wasm);
        };
        let mut hasher = DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        let path = dir.join(format!("{sha256}-{:016x}.cwasm", hasher.finish()));
        if path.exists() {
            // SAFETY: the file is one this process family wrote with `Component::serialize`
            // into Coffer's own cache directory, named by the source's SHA-256 and this
            // engine's compatibility hash; wasmtime checks the header and rejects a mismatch.
            #[allow(unsafe_code, reason = "loading our own precompiled artifact")]
            let cached = unsafe { Component::deserialize_file(&self.engine, &path) };
            match cached {
                Ok(component) => return Ok(component),
                Err(error) => {
                    tracing::warn!(%error, path = %path.display(), "ignoring unusable compile cache entry")
                }
            }
        }
        let component = Component::new(&self.engine, wasm)?;
        let bytes = component.serialize()?;
        let temporary = path.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&temporary, &bytes).is_ok() {
            let _ = std::fs::rename(&temporary, &path);
        }
        Ok(component)
    }

    /// Runs an engine call to completion from synchronous code: a plain thread, a blocking
    /// thread, or (handing its other tasks off first) an async worker.
    pub fn block_on<F: Future>(&self, call: F) -> F::Output {
        crate::background::blocking(|| self.handle.block_on(call))
    }

    /// Calls `schema.describe`.
    pub async fn describe(
        &self,
        plugin: &Plugin,
        context: CallContext,
    ) -> Result<BackendSpec, RuntimeError> {
        self.call(plugin, context, async |instance, store| {
            // Describe runs once when a mount loads: type-check every export here, so a
            // component built against another WIT fails to mount instead of per request.
            plugin.handler.load(&mut *store, instance)?;
            plugin.leases.load(&mut *store, instance)?;
            plugin.maintenance.load(&mut *store, instance)?;
            let schema = plugin.schema.load(&mut *store, instance)?;
            schema.call_describe(store).await
        })
        .await
    }

    /// Calls `handler.handle`.
    pub async fn handle(
        &self,
        plugin: &Plugin,
        context: CallContext,
        request: &Request,
    ) -> Result<Result<Response, EngineError>, RuntimeError> {
        self.call(plugin, context, async |instance, store| {
            let handler = plugin.handler.load(&mut *store, instance)?;
            handler.call_handle(store, request).await
        })
        .await
    }

    /// Calls `leases.renew`.
    pub async fn renew(
        &self,
        plugin: &Plugin,
        context: CallContext,
        lease: &LeaseRef,
    ) -> Result<Result<(), EngineError>, RuntimeError> {
        self.call(plugin, context, async |instance, store| {
            let leases = plugin.leases.load(&mut *store, instance)?;
            leases.call_renew(store, lease).await
        })
        .await
    }

    /// Calls `leases.revoke`.
    pub async fn revoke(
        &self,
        plugin: &Plugin,
        context: CallContext,
        lease: &LeaseRef,
    ) -> Result<Result<(), EngineError>, RuntimeError> {
        self.call(plugin, context, async |instance, store| {
            let leases = plugin.leases.load(&mut *store, instance)?;
            leases.call_revoke(store, lease).await
        })
        .await
    }

    /// Calls `maintenance.periodic`.
    pub async fn periodic(
        &self,
        plugin: &Plugin,
        context: CallContext,
    ) -> Result<Result<(), EngineError>, RuntimeError> {
        self.call(plugin, context, async |instance, store| {
            let maintenance = plugin.maintenance.load(&mut *store, instance)?;
            maintenance.call_periodic(store).await
        })
        .await
    }

    /// Calls `maintenance.rollback`.
    pub async fn rollback(
        &self,
        plugin: &Plugin,
        context: CallContext,
        kind: &str,
        data: &[u8],
    ) -> Result<Result<(), EngineError>, RuntimeError> {
        self.call(plugin, context, async |instance, store| {
            let maintenance = plugin.maintenance.load(&mut *store, instance)?;
            maintenance.call_rollback(store, kind, data).await
        })
        .await
    }

    /// Instantiates `plugin` and runs `body` against it; a trap, timeout or memory refusal
    /// in either becomes a [`RuntimeError`].
    async fn call<R>(
        &self,
        plugin: &Plugin,
        context: CallContext,
        body: impl AsyncFnOnce(
            &wasmtime::component::Instance,
            &mut Store<CallState>,
        ) -> wasmtime::Result<R>,
    ) -> Result<R, RuntimeError> {
        let mut instance = self.instantiate(plugin, context).await?;
        let outcome = body(&instance.instance, &mut instance.store).await;
        outcome.map_err(|error| {
            classify(
                error,
                instance.store.data().limiter.refused,
                instance.limits,
                &plugin.name,
            )
        })
    }

    /// A fresh instance of `plugin` in its own store, holding a slot of the pool. The
    /// guest runs on a fiber: every epoch tick it yields to the async runtime, so a long
    /// call shares its worker thread, and past its deadline it traps.
    async fn instantiate(
        &self,
        plugin: &Plugin,
        context: CallContext,
    ) -> Result<Instance<'_>, RuntimeError> {
        let limits = context.limits;
        let slot = self
            .slots
            .acquire()
            .await
            .map_err(|e| RuntimeError::Setup(e.to_string()))?;
        let wasi = WasiCtxBuilder::new()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let state = CallState {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                max_bytes: limits.memory_bytes,
                refused: false,
            },
            caps: caps::State::new(
                context.mount,
                context.storage,
                context.sql,
                context.http,
                context.request_id,
            ),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        let deadline = Instant::now() + limits.call_timeout;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                return Ok(UpdateDeadline::Interrupt);
            }
            Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(tokio::task::yield_now()),
            ))
        });
        let instantiated = plugin.pre.instantiate_async(&mut store).await;
        match instantiated {
            Ok(instance) => Ok(Instance {
                store,
                instance,
                limits,
                _slot: slot,
            }),
            Err(error) => Err(classify(
                error,
                store.data().limiter.refused,
                limits,
                &plugin.name,
            )),
        }
    }
}

fn classify(
    error: wasmtime::Error,
    memory_refused: bool,
    limits: Limits,
    name: &str,
) -> RuntimeError {
    if let Some(Trap::Interrupt) = error.downcast_ref::<Trap>() {
        return RuntimeError::Timeout(limits.call_timeout);
    }
    if memory_refused {
        return RuntimeError::Memory(limits.memory_bytes >> 20);
    }
    tracing::warn!(
        plugin = name,
        error = format!("{error:?}"),
        "engine trapped"
    );
    let reason = match error.downcast_ref::<Trap>() {
        Some(trap) => format!("the engine trapped ({trap})"),
        None => error.to_string(),
    };
    RuntimeError::Trap(reason)
}

/// Maps a barrier failure to what a guest may see.
pub(crate) fn barrier_to_host(error: BarrierError) -> bindings::coffer::host::types::HostError {
    use bindings::coffer::host::types::HostError;
    match error {
        BarrierError::Sealed => HostError::Unavailable("storage is sealed".to_string()),
        // The key names the barrier's layout (the mount's id, the engine's own keys): it
        // goes to the server log, never into an error an engine may pass to a client.
        BarrierError::Integrity(key) => {
            tracing::error!(%key, "storage integrity check failed");
            HostError::Internal(
                "a stored entry failed its integrity check (details in the server log)".to_string(),
            )
        }
        other => HostError::Unavailable(other.to_string()),
    }
}

/// Creates `dir` (mode 0700) if needed and checks that it is this user's alone: owned by
/// the process's user and writable by no one else.
fn private_directory(dir: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| e.to_string())?;
    let metadata = std::fs::symlink_metadata(dir).map_err(|e| e.to_string())?;
    if !metadata.is_dir() {
        return Err("it is not a directory".to_string());
    }
    if metadata.uid() != rustix::process::getuid().as_raw() {
        return Err("it belongs to another user".to_string());
    }
    if metadata.mode() & 0o022 != 0 {
        return Err("others can write to it (chmod go-w)".to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_integrity_failure_reaches_the_guest_without_the_storage_key() {
        let key = "logical/5f0e-mount-id/entries/secret-name";
        let message = match barrier_to_host(BarrierError::Integrity(key.to_string())) {
            bindings::coffer::host::types::HostError::Internal(m) => m,
            _ => String::new(),
        };
        assert!(message.contains("integrity"), "{message}");
        assert!(
            !message.contains("5f0e") && !message.contains("secret-name"),
            "{message}"
        );
    }

    #[test]
    fn the_compile_cache_lives_only_in_a_private_directory() -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        let base = std::env::temp_dir().join(format!("coffer-cache-{}", uuid::Uuid::new_v4()));
        let fresh = base.join("a/b");
        private_directory(&fresh)?;
        let mode = std::fs::metadata(&fresh)
            .map_err(|e| e.to_string())?
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        let shared = base.join("shared");
        std::fs::create_dir(&shared).map_err(|e| e.to_string())?;
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777))
            .map_err(|e| e.to_string())?;
        let refused = private_directory(&shared);
        assert!(
            refused
                .as_ref()
                .is_err_and(|r| r.contains("others can write")),
            "{refused:?}"
        );
        let file = base.join("file");
        std::fs::write(&file, b"x").map_err(|e| e.to_string())?;
        assert!(private_directory(&file).is_err());
        std::fs::remove_dir_all(&base).map_err(|e| e.to_string())
    }
}
