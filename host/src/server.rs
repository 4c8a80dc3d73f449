//! `coffer server`: wires storage, runtime, catalog, core, lease scheduler and HTTP into
//! one process, in dev mode (in-memory, auto-unsealed) or from a config file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use base64::Engine as _;

use crate::backend::{Backend, FileBackend, MemoryBackend};
use crate::barrier::Barrier;
use crate::catalog::{BUILTINS, Catalog};
use crate::config::{ServerConfig, StorageChoice};
use crate::core::{Core, CoreOptions, MountRequest};
use crate::fields;
use crate::http::EdgeLimits;
use crate::lease::Scheduler;
use crate::runtime::Runtime;

/// Dev-mode listener.
pub const DEV_ADDRESS: &str = "127.0.0.1:8200";

/// Flags of `coffer server`.
#[derive(Debug, Default)]
pub struct ServerArgs {
    /// `-dev`.
    pub dev: bool,
    /// `-config FILE`.
    pub config: Option<PathBuf>,
    /// `-dev-root-token-id`.
    pub dev_root_token_id: Option<String>,
    /// `-dev-listen-address`.
    pub dev_listen_address: Option<String>,
    /// `-plugin-dir` (dev mode): where the built-in engines are installed.
    pub plugin_dir: Option<PathBuf>,
}

/// Runs the server until SIGINT/SIGTERM.
pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    match (&args.config, args.dev) {
        (Some(path), false) => run_config(path).await,
        (None, true) => run_dev(&args).await,
        _ => anyhow::bail!("use exactly one of -dev or -config FILE"),
    }
}

/// Where the built-in engines (kv, database, pki) are installed: `-plugin-dir` (dev) or
/// the config's `builtin_directory`, else `COFFER_BUILTIN_DIR` (or the older
/// `COFFER_PLUGIN_DIR`), else the components built next to this binary
/// (`target/wasm32-wasip2/<profile>`). Never the operator's `plugin_directory`.
fn builtin_dir(explicit: Option<&PathBuf>) -> Option<PathBuf> {
    if let Some(dir) = explicit {
        return Some(dir.clone());
    }
    for name in ["COFFER_BUILTIN_DIR", "COFFER_PLUGIN_DIR"] {
        if let Some(dir) = std::env::var_os(name) {
            return Some(PathBuf::from(dir));
        }
    }
    let exe = std::env::current_exe().ok()?;
    let profile_dir = exe.parent()?;
    let profile = profile_dir.file_name()?;
    let candidate = profile_dir.parent()?.join("wasm32-wasip2").join(profile);
    candidate.is_dir().then_some(candidate)
}

/// The dev server's compile cache: `COFFER_CACHE_DIR`, else `~/.cache/coffer`; without
/// `HOME` none (never a shared directory such as `/tmp`).
fn cache_dir_for_dev() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("COFFER_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache").join("coffer"))
}

async fn run_dev(args: &ServerArgs) -> anyhow::Result<()> {
    let plugin_dir = builtin_dir(args.plugin_dir.as_ref());
    let runtime = Runtime::new(cache_dir_for_dev())?;
    let catalog = load_catalog(runtime.clone(), plugin_dir.clone(), None, Vec::new()).await?;
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::default());
    let barrier = Arc::new(Barrier::new(backend));
    let core = Core::new(barrier.clone(), runtime, catalog, CoreOptions::default());
    let init = barrier.initialize(1, 1)?;
    let unseal_key = init
        .shares
        .first()
        .map(|s| base64::engine::general_purpose::STANDARD.encode(s.as_slice()))
        .context("init returned no key share")?;
    for share in &init.shares {
        barrier.submit_share(share)?;
    }
    let root = crate::http::create_root_token(&core, args.dev_root_token_id.as_deref())
        .map_err(|e| anyhow::anyhow!("creating the root token: {e:?}"))?;
    core.post_unseal()?;
    let mut mounted = Vec::new();
    for (name, _) in BUILTINS {
        if core.catalog.get(name).is_none() {
            continue;
        }
        let path = if *name == "kv" { "secret" } else { name };
        core.enable(MountRequest {
            path: path.to_string(),
            engine: (*name).to_string(),
            description: format!("{name} engine (dev mode)"),
            ..MountRequest::default()
        })?;
        mounted.push(format!("{path}/ ({name})"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        let token_file = PathBuf::from(home).join(".coffer-token");
        write_private(&token_file, root.as_bytes())
            .with_context(|| format!("writing {}", token_file.display()))?;
    }
    let address = args
        .dev_listen_address
        .clone()
        .unwrap_or_else(|| DEV_ADDRESS.to_string());
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .with_context(|| format!("binding {address}"))?;
    let address = listener.local_addr()?;
    println!(
        "==> Coffer server started in dev mode. Storage is in memory; do not use dev mode in production."
    );
    println!();
    println!("    Api Address: http://{address}");
    println!(
        "    Built-in engines: {}",
        plugin_dir
            .map(|d| d.display().to_string())
            .unwrap_or_else(|| "(none)".to_string())
    );
    println!(
        "    Mounted: {}",
        if mounted.is_empty() {
            "(no engines found; build them with scripts/build-components)".to_string()
        } else {
            mounted.join(", ")
        }
    );
    println!();
    println!("    export COFFER_ADDR='http://{address}'");
    println!();
    println!("Unseal Key: {unseal_key}");
    println!("Root Token: {root}");
    println!();
    serve(core, EdgeLimits::default(), listener, None).await
}

async fn load_catalog(
    runtime: Arc<Runtime>,
    builtin_dir: Option<PathBuf>,
    plugin_dir: Option<PathBuf>,
    plugins: Vec<crate::catalog::PluginConfig>,
) -> anyhow::Result<Catalog> {
    // Compiling components is CPU-heavy; keep it off the async workers.
    let catalog = tokio::task::spawn_blocking(move || {
        Catalog::load(
            &runtime,
            builtin_dir.as_deref(),
            plugin_dir.as_deref(),
            &plugins,
        )
    })
    .await??;
    Ok(catalog)
}

async fn run_config(path: &Path) -> anyhow::Result<()> {
    let config = ServerConfig::load(path)?;
    let tls = match (
        &config.listener.tls_cert_file,
        &config.listener.tls_key_file,
    ) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some(tls_acceptor(cert, key).with_context(|| {
            format!(
                "config file {}: listener TLS ({} / {})",
                path.display(),
                cert.display(),
                key.display()
            )
        })?),
        _ => anyhow::bail!(
            "config file {}: set both tls_cert_file and tls_key_file, or neither",
            path.display()
        ),
    };
    let storage = config.storage.choice().map_err(anyhow::Error::msg)?;
    let cache = config
        .cache_directory
        .clone()
        .or_else(|| std::env::var_os("COFFER_CACHE_DIR").map(PathBuf::from))
        .unwrap_or_else(|| {
            let beside = match &storage {
                StorageChoice::File(file) => file.parent().unwrap_or(Path::new(".")),
                StorageChoice::Postgres(..) => path.parent().unwrap_or(Path::new(".")),
            };
            beside.join("cache")
        });
    let runtime = Runtime::new(Some(cache))?;
    let catalog = load_catalog(
        runtime.clone(),
        builtin_dir(config.builtin_directory.as_ref()),
        config.plugin_directory.clone(),
        config.plugins.clone(),
    )
    .await?;
    let mut ha = None;
    let backend: Arc<dyn Backend> = match &storage {
        StorageChoice::File(file) => Arc::new(FileBackend::open(file)?),
        StorageChoice::Postgres(settings, lock_ttl) => {
            let backend = crate::pgstore::PgBackend::open(settings)?;
            if let Some(ttl) = lock_ttl {
                let api_addr = config
                    .api_addr
                    .clone()
                    .unwrap_or_else(|| format!("http://{}", config.listener.address));
                ha = Some(crate::ha::Ha::new(backend.clone(), api_addr, *ttl));
            }
            backend
        }
    };
    let barrier = Arc::new(Barrier::new(backend));
    let mut options = CoreOptions::default();
    for mount in &config.mounts {
        options
            .config_mounts
            .push(mount.request().map_err(anyhow::Error::msg)?);
    }
    options.config_audit = config.audit.iter().map(|a| a.request()).collect();
    if let Some(base) = &config.leases.revoke_retry_base {
        options.revoke_retry_base =
            Duration::from_secs(fields::parse_duration(base).map_err(anyhow::Error::msg)?);
    }
    if let Some(attempts) = config.leases.revoke_attempts {
        options.revoke_attempts = attempts.max(1);
    }
    if let Some(name) = &config.cluster_name {
        options.cluster_name = name.clone();
    }
    options.unauthenticated_metrics_access = config.listener.unauthenticated_metrics_access;
    let limits = config
        .listener
        .edge_limits()
        .map_err(|reason| anyhow::anyhow!("config file {}: {reason}", path.display()))?;
    let core = Core::new(barrier.clone(), runtime, catalog, options);
    if let Some(ha) = ha {
        let _ = core.ha.set(ha.clone());
        ha.spawn(core.clone());
    }
    let listener = tokio::net::TcpListener::bind(&config.listener.address)
        .await
        .with_context(|| format!("binding {}", config.listener.address))?;
    let status = if barrier.seal_config()?.is_none() {
        "not initialized: run `coffer operator init`"
    } else {
        "sealed: run `coffer operator unseal`"
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!(
        "==> Coffer server started on {scheme}://{} ({status})",
        listener.local_addr()?
    );
    serve(core, limits, listener, tls).await
}

async fn serve(
    core: Arc<Core>,
    limits: EdgeLimits,
    listener: tokio::net::TcpListener,
    tls: Option<openssl::ssl::SslAcceptor>,
) -> anyhow::Result<()> {
    let scheduler = Scheduler::spawn(core.clone());
    let reopener = spawn_audit_reopener(core.clone());
    let shutdown = async {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match terminate.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending::<()>().await } } => {}
        }
        tracing::info!("shutting down");
    };
    raise_open_file_limit(limits.max_connections);
    let edge = Arc::new(crate::http::Edge::new(limits));
    crate::http::serve(core, edge, listener, tls, shutdown).await;
    scheduler.abort();
    if let Some(task) = reopener {
        task.abort();
    }
    Ok(())
}

/// On SIGHUP, audit devices reopen their files (logrotate moves a file away, then sends
/// SIGHUP so that entries go to a new one). `None` if the signal cannot be watched.
fn spawn_audit_reopener(core: Arc<Core>) -> Option<tokio::task::JoinHandle<()>> {
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => signal,
        Err(error) => {
            tracing::warn!(%error, "cannot watch SIGHUP; audit files are not reopened on it");
            return None;
        }
    };
    Some(tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            let core = core.clone();
            // Opening files blocks; keep it off the async workers.
            let _ = tokio::task::spawn_blocking(move || core.audit.reopen()).await;
        }
    }))
}

/// Open files kept for everything but client connections (storage, components, SQL).
const RESERVED_FILES: u64 = 256;

/// Raises the soft open-file limit toward the hard one so that `max_connections` clients
/// do not run the process out of descriptors; a failure only means a lower ceiling.
fn raise_open_file_limit(max_connections: usize) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    let wanted = u64::try_from(max_connections)
        .unwrap_or(u64::MAX)
        .saturating_add(RESERVED_FILES);
    let raised = match limit.maximum {
        Some(hard) => wanted.min(hard),
        None => wanted,
    };
    if limit.current.is_some_and(|soft| soft < raised) {
        limit.current = Some(raised);
        if let Err(error) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!(%error, "could not raise the open-file limit");
        }
    }
}

/// A TLS acceptor from a PEM certificate chain and private key (Mozilla "intermediate").
fn tls_acceptor(cert: &Path, key: &Path) -> anyhow::Result<openssl::ssl::SslAcceptor> {
    let mut builder =
        openssl::ssl::SslAcceptor::mozilla_intermediate_v5(openssl::ssl::SslMethod::tls())?;
    builder.set_certificate_chain_file(cert)?;
    builder.set_private_key_file(key, openssl::ssl::SslFiletype::PEM)?;
    builder.check_private_key()?;
    Ok(builder.build())
}

/// Writes a file readable only by its owner.
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents)
}
