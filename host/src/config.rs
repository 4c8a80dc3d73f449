//! The server's TOML config file. See `examples/coffer.toml` for a commented example.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::catalog::PluginConfig;
use crate::core::{MountRequest, MountTune};
use crate::fields;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Directory holding third-party plugin components; `[[plugin]]` entries name files
    /// inside it.
    pub plugin_directory: Option<PathBuf>,
    /// Where the built-in engines are installed (default: `COFFER_BUILTIN_DIR`, else next
    /// to the `coffer` binary). Independent of `plugin_directory`.
    pub builtin_directory: Option<PathBuf>,
    /// Where compiled components are cached (default: `<storage dir>/cache`).
    pub cache_directory: Option<PathBuf>,
    /// Cluster name shown by health endpoints.
    #[serde(default)]
    pub cluster_name: Option<String>,
    /// Where clients (and the other nodes, which forward to it) reach this node, as a
    /// URL (`http://10.0.0.5:8200`); default: the listener's address.
    #[serde(default)]
    pub api_addr: Option<String>,
    /// HTTP listener.
    pub listener: ListenerConfig,
    /// Storage.
    pub storage: StorageConfig,
    /// Lease scheduler tuning.
    #[serde(default)]
    pub leases: LeaseConfig,
    /// Plugin catalog entries.
    #[serde(default, rename = "plugin")]
    pub plugins: Vec<PluginConfig>,
    /// Mounts applied at every unseal, idempotently.
    #[serde(default, rename = "mount")]
    pub mounts: Vec<MountConfig>,
    /// Audit devices enabled at every unseal, idempotently.
    #[serde(default, rename = "audit")]
    pub audit: Vec<AuditConfig>,
}

/// `[listener]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// `host:port`.
    pub address: String,
    /// Serve `sys/metrics` without a token (for a Prometheus scraper; Vault's option of
    /// the same name). Default false.
    #[serde(default)]
    pub unauthenticated_metrics_access: bool,
    /// PEM certificate chain; with `tls_key_file`, serves HTTPS.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key.
    pub tls_key_file: Option<PathBuf>,
    /// Largest request body in bytes (default 32 MiB, as Vault).
    pub max_request_size: Option<usize>,
    /// Most client connections served at once (default 768).
    pub max_connections: Option<usize>,
    /// Time to send request headers, and longest idle keep-alive (default "10s").
    pub http_read_header_timeout: Option<String>,
    /// Time to send a request body (default "30s").
    pub http_read_timeout: Option<String>,
    /// Time to finish a TLS handshake (default "10s").
    pub tls_handshake_timeout: Option<String>,
}

impl ListenerConfig {
    /// The HTTP edge's limits: the defaults, with what this section sets.
    pub fn edge_limits(&self) -> Result<crate::http::EdgeLimits, String> {
        let mut limits = crate::http::EdgeLimits::default();
        let duration =
            |name: &str, value: &Option<String>, default: std::time::Duration| match value
                .as_deref()
            {
                None => Ok(default),
                Some(text) => match fields::parse_duration(text) {
                    Ok(0) => Err(format!("listener {name} must be at least one second")),
                    Ok(secs) => Ok(std::time::Duration::from_secs(secs)),
                    Err(e) => Err(format!("listener {name}: {e}")),
                },
            };
        limits.header_timeout = duration(
            "http_read_header_timeout",
            &self.http_read_header_timeout,
            limits.header_timeout,
        )?;
        limits.body_timeout = duration(
            "http_read_timeout",
            &self.http_read_timeout,
            limits.body_timeout,
        )?;
        limits.tls_handshake_timeout = duration(
            "tls_handshake_timeout",
            &self.tls_handshake_timeout,
            limits.tls_handshake_timeout,
        )?;
        match self.max_request_size {
            Some(0) => return Err("listener max_request_size must be positive".to_string()),
            Some(size) => limits.max_request_size = size,
            None => {}
        }
        match self.max_connections {
            Some(0) => return Err("listener max_connections must be positive".to_string()),
            Some(count) => limits.max_connections = count,
            None => {}
        }
        Ok(limits)
    }
}

/// `[storage]`: the embedded file (`type = "file"`, the default) or PostgreSQL
/// (`type = "postgresql"`), which several nodes can share with HA.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// `file` (default) or `postgresql`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// The embedded database file (`file`).
    pub path: Option<PathBuf>,
    /// libpq URL or `key=value` string (`postgresql`).
    pub connection_url: Option<String>,
    /// Data table (`postgresql`; default `coffer_kv_store`).
    pub table: Option<String>,
    /// HA lock table (`postgresql`; default `coffer_ha_locks`).
    pub ha_table: Option<String>,
    /// Sessions per node (`postgresql`; default 8).
    pub max_connections: Option<usize>,
    /// Several nodes, one active (`postgresql`; default true).
    pub ha_enabled: Option<bool>,
    /// HA lock TTL (default `15s`, as Vault; renewed every third of it).
    pub lock_ttl: Option<String>,
}

/// What `[storage]` asks for, checked.
pub enum StorageChoice {
    /// The embedded file.
    File(PathBuf),
    /// PostgreSQL, with HA and its lock TTL when enabled.
    Postgres(crate::pgstore::PgSettings, Option<std::time::Duration>),
}

impl StorageConfig {
    /// The backend the section describes, or why it is wrong.
    pub fn choice(&self) -> Result<StorageChoice, String> {
        match self.kind.as_deref().unwrap_or("file") {
            "file" | "raft" => self
                .path
                .clone()
                .map(StorageChoice::File)
                .ok_or_else(|| "storage: set path (the embedded database file)".to_string()),
            "postgresql" => {
                let connection_url = self
                    .connection_url
                    .clone()
                    .filter(|u| !u.is_empty())
                    .ok_or_else(|| "storage: postgresql needs connection_url".to_string())?;
                let ttl = match &self.lock_ttl {
                    None => crate::ha::DEFAULT_LOCK_TTL,
                    Some(text) => std::time::Duration::from_secs(
                        crate::fields::parse_duration(text)
                            .map_err(|e| format!("storage: lock_ttl: {e}"))?,
                    ),
                };
                if ttl < crate::ha::MIN_LOCK_TTL {
                    return Err(format!(
                        "storage: lock_ttl must be at least {:?}",
                        crate::ha::MIN_LOCK_TTL
                    ));
                }
                Ok(StorageChoice::Postgres(
                    crate::pgstore::PgSettings {
                        connection_url,
                        table: self
                            .table
                            .clone()
                            .unwrap_or_else(|| crate::pgstore::DEFAULT_TABLE.to_string()),
                        ha_table: self
                            .ha_table
                            .clone()
                            .unwrap_or_else(|| crate::pgstore::DEFAULT_HA_TABLE.to_string()),
                        max_connections: self
                            .max_connections
                            .unwrap_or(crate::pgstore::DEFAULT_MAX_CONNECTIONS),
                    },
                    self.ha_enabled.unwrap_or(true).then_some(ttl),
                ))
            }
            other => Err(format!(
                "storage: unknown type {other:?} (file or postgresql)"
            )),
        }
    }
}

/// `[leases]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseConfig {
    /// First retry delay of a failed revocation (duration string).
    pub revoke_retry_base: Option<String>,
    /// Attempts before a lease becomes irrevocable.
    pub revoke_attempts: Option<u32>,
}

/// `[[mount]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountConfig {
    /// Mount path.
    pub path: String,
    /// Catalog name of the engine.
    pub plugin: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// Default lease TTL (duration string).
    pub default_lease_ttl: Option<String>,
    /// Maximum lease TTL (duration string).
    pub max_lease_ttl: Option<String>,
    /// Wall-clock budget of one engine call (duration string).
    pub engine_call_timeout: Option<String>,
    /// Engine memory cap in bytes.
    pub engine_memory_limit: Option<u64>,
    /// Options.
    #[serde(default)]
    pub options: std::collections::BTreeMap<String, String>,
}

/// `[[audit]]`: an audit device, as `sys/audit/<path>` would enable it. Its salt is made
/// the first time and kept across restarts; its options follow the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Device path (`file`, `file2/`).
    pub path: String,
    /// Device type (`file`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// Options (`file_path`, `mode`, `prefix`, `log_raw`, `hmac_accessor`,
    /// `elide_list_responses`).
    #[serde(default)]
    pub options: std::collections::BTreeMap<String, String>,
}

impl AuditConfig {
    /// The enable request this entry describes.
    pub fn request(&self) -> crate::audit::EnableRequest {
        crate::audit::EnableRequest {
            path: self.path.clone(),
            kind: self.kind.clone(),
            description: self.description.clone(),
            options: self.options.clone(),
            from_api: false,
        }
    }
}

/// A config-file problem, with the file and the reason.
#[derive(Debug, thiserror::Error)]
#[error("config file {path}: {reason}")]
pub struct ConfigError {
    path: String,
    reason: String,
}

impl ServerConfig {
    /// Reads and parses the file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let error = |reason: String| ConfigError {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        let mut config: Self = toml::from_str(&text).map_err(|e| error(e.to_string()))?;
        // Relative paths are relative to the config file.
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(file) = config.storage.path.as_mut() {
            resolve(file);
        }
        config.storage.choice().map_err(error)?;
        if let Some(dir) = config.plugin_directory.as_mut() {
            resolve(dir);
        }
        if let Some(dir) = config.builtin_directory.as_mut() {
            resolve(dir);
        }
        if let Some(dir) = config.cache_directory.as_mut() {
            resolve(dir);
        }
        for mount in &config.mounts {
            mount.request().map_err(error)?;
        }
        config.listener.edge_limits().map_err(error)?;
        Ok(config)
    }
}

impl MountConfig {
    /// The mount request this entry describes.
    pub fn request(&self) -> Result<MountRequest, String> {
        let duration = |name: &str, value: &Option<String>| -> Result<u64, String> {
            value
                .as_deref()
                .map(fields::parse_duration)
                .transpose()
                .map(Option::unwrap_or_default)
                .map_err(|e| format!("mount {}: {name}: {e}", self.path))
        };
        Ok(MountRequest {
            path: self.path.clone(),
            engine: self.plugin.clone(),
            description: self.description.clone(),
            tune: MountTune {
                default_lease_ttl: duration("default_lease_ttl", &self.default_lease_ttl)?,
                max_lease_ttl: duration("max_lease_ttl", &self.max_lease_ttl)?,
                engine_call_timeout_ms: duration("engine_call_timeout", &self.engine_call_timeout)?
                    .saturating_mul(1000),
                engine_memory_bytes: self.engine_memory_limit.unwrap_or(0),
            },
            options: self.options.clone(),
        })
    }
}
