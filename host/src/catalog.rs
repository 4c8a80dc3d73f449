//! The plugin catalog: which engine components exist, by name, pinned by SHA-256.
//!
//! Plugin files are opened through a cap-std directory handle on the operator's plugin
//! directory, so no catalog entry (`../x`, an absolute path, a symlink out) can reach a
//! file outside it. Built-in engines are catalog entries with a well-known file name and
//! no pin, read from the installation's own built-in directory — never from the
//! operator's plugin directory, which holds only pinned third-party engines. An operator
//! entry with a built-in's name replaces the built-in.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use serde::Deserialize;

use crate::runtime::{Plugin, Runtime, RuntimeError};

/// Largest component file accepted.
pub const MAX_COMPONENT_BYTES: u64 = 64 << 20;

/// Built-in engines: catalog name and component file name in the plugin directory.
pub const BUILTINS: &[(&str, &str)] = &[
    ("kv", "coffer_kv_engine.wasm"),
    ("database", "coffer_engine_database.wasm"),
    ("pki", "coffer_engine_pki.wasm"),
];

/// Built-in auth engines, mounted through `sys/auth`: catalog name and component file name.
pub const AUTH_BUILTINS: &[(&str, &str)] = &[
    ("approle", "coffer_auth_approle.wasm"),
    ("kubernetes", "coffer_auth_kubernetes.wasm"),
];

/// What a catalog entry is mounted as.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginKind {
    /// A secrets engine, enabled with `sys/mounts` (`coffer secrets enable`).
    #[default]
    Secret,
    /// An auth engine, enabled with `sys/auth` under `auth/` (`coffer auth enable`).
    Auth,
}

/// A `[[plugin]]` entry of the config file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Catalog name, used as a mount's `type`.
    pub name: String,
    /// File name inside the plugin directory.
    pub file: String,
    /// Expected hex SHA-256 of the file.
    pub sha256: String,
    /// `secret` (the default) or `auth`.
    #[serde(default, rename = "type")]
    pub kind: PluginKind,
}

/// Catalog failures; each stops the server with a message for the operator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// The plugin directory could not be opened.
    #[error("plugin directory {dir}: {reason}")]
    Directory {
        /// The directory.
        dir: String,
        /// Why.
        reason: String,
    },
    /// A plugin file could not be read through the directory handle.
    #[error("plugin {name}: cannot read {file:?} inside the plugin directory: {reason}")]
    Read {
        /// Catalog name.
        name: String,
        /// File name.
        file: String,
        /// Why.
        reason: String,
    },
    /// The file's hash is not the pinned one.
    #[error(
        "plugin {name}: sha256 mismatch for {file:?}: catalog expects {expected}, file has {actual}; refusing to load it"
    )]
    Sha256Mismatch {
        /// Catalog name.
        name: String,
        /// File name.
        file: String,
        /// Pinned hash.
        expected: String,
        /// Actual hash.
        actual: String,
    },
    /// The component did not compile or is not an engine.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// Loaded, compiled plugins by name.
#[derive(Default)]
pub struct Catalog {
    /// Secret engines, mounted through `sys/mounts`.
    plugins: BTreeMap<String, Arc<Plugin>>,
    /// Auth engines, mounted through `sys/auth`.
    auth_plugins: BTreeMap<String, Arc<Plugin>>,
}

impl Catalog {
    /// Loads the built-ins present in `builtin_dir` and every configured plugin from
    /// `plugin_dir` (each checked against its pin).
    pub fn load(
        runtime: &Runtime,
        builtin_dir: Option<&Path>,
        plugin_dir: Option<&Path>,
        configured: &[PluginConfig],
    ) -> Result<Self, CatalogError> {
        let mut catalog = Self::default();
        let wanted: Vec<(PluginKind, &(&str, &str))> = BUILTINS
            .iter()
            .map(|builtin| (PluginKind::Secret, builtin))
            .chain(
                AUTH_BUILTINS
                    .iter()
                    .map(|builtin| (PluginKind::Auth, builtin)),
            )
            .filter(|(kind, (name, _))| {
                !configured
                    .iter()
                    .any(|p| p.name == *name && p.kind == *kind)
            })
            .collect();
        let mut missing = Vec::new();
        match builtin_dir.map(|path| (path, open_dir(path))) {
            Some((_, Ok(dir))) => {
                for (kind, (name, file)) in wanted {
                    match read(&dir, name, file) {
                        Ok(bytes) => {
                            let plugin = runtime.load(name, &bytes)?;
                            catalog.insert(kind, name, plugin);
                        }
                        Err(_) => missing.push(*name),
                    }
                }
            }
            Some((path, Err(error))) => {
                tracing::warn!(dir = %path.display(), %error, "built-in engine directory unavailable");
            }
            None => missing.extend(wanted.iter().map(|(_, (name, _))| *name)),
        }
        if !missing.is_empty() {
            tracing::warn!(
                dir = %builtin_dir.map(|d| d.display().to_string()).unwrap_or_else(|| "(none)".to_string()),
                engines = %missing.join(", "),
                "built-in engines not installed; mounts of them fail until they are"
            );
        }
        if configured.is_empty() {
            return Ok(catalog);
        }
        let Some(dir_path) = plugin_dir else {
            return Err(CatalogError::Directory {
                dir: "(none)".to_string(),
                reason: "[[plugin]] entries need `plugin_directory` set".to_string(),
            });
        };
        let dir = open_dir(dir_path)?;
        for entry in configured {
            let bytes = read(&dir, &entry.name, &entry.file)?;
            let actual = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
            if !actual.eq_ignore_ascii_case(entry.sha256.trim()) {
                return Err(CatalogError::Sha256Mismatch {
                    name: entry.name.clone(),
                    file: entry.file.clone(),
                    expected: entry.sha256.clone(),
                    actual,
                });
            }
            let plugin = runtime.load(&entry.name, &bytes)?;
            catalog.insert(entry.kind, &entry.name, plugin);
        }
        Ok(catalog)
    }

    fn insert(&mut self, kind: PluginKind, name: &str, plugin: Plugin) {
        let table = match kind {
            PluginKind::Secret => &mut self.plugins,
            PluginKind::Auth => &mut self.auth_plugins,
        };
        table.insert(name.to_string(), Arc::new(plugin));
    }

    /// The plugin named `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Plugin>> {
        self.plugins.get(name).cloned()
    }

    /// The auth engine named `name`: a plugin of the `auth` kind, mountable under
    /// `auth/` through `sys/auth` (the token store is native and not in the catalog).
    pub fn auth_engine(&self, name: &str) -> Option<Arc<Plugin>> {
        self.auth_plugins.get(name).cloned()
    }

    /// Names of the auth engines.
    pub fn auth_names(&self) -> Vec<String> {
        self.auth_plugins.keys().cloned().collect()
    }

    /// Names and hashes of every secrets engine.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.plugins
            .iter()
            .map(|(n, p)| (n.as_str(), p.sha256.as_str()))
    }

    /// Names and hashes of every auth engine.
    pub fn auth_entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.auth_plugins
            .iter()
            .map(|(n, p)| (n.as_str(), p.sha256.as_str()))
    }
}

fn open_dir(path: &Path) -> Result<Dir, CatalogError> {
    Dir::open_ambient_dir(path, ambient_authority()).map_err(|e| CatalogError::Directory {
        dir: path.display().to_string(),
        reason: e.to_string(),
    })
}

fn read(dir: &Dir, name: &str, file: &str) -> Result<Vec<u8>, CatalogError> {
    let error = |reason: String| CatalogError::Read {
        name: name.to_string(),
        file: file.to_string(),
        reason,
    };
    let handle = dir.open(file).map_err(|e| error(e.to_string()))?;
    let mut bytes = Vec::new();
    handle
        .take(MAX_COMPONENT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| error(e.to_string()))?;
    if bytes.len() as u64 > MAX_COMPONENT_BYTES {
        return Err(error(format!("larger than {MAX_COMPONENT_BYTES} bytes")));
    }
    Ok(bytes)
}
