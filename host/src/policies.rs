//! The ACL policy store: named policies in the barrier (`sys/policy/<name>`), checked by
//! parsing before they are stored, and compiled ACLs cached per set of policy names.
//!
//! `default` is created with Vault's text when missing, may be edited, and cannot be
//! deleted; `root` is never stored and cannot be written. A token naming a policy that no
//! longer exists gets nothing from it. Every write or delete drops the whole ACL cache (a
//! later HA standby can do the same on a change notice).
//!
//! What it must never do: hand out an ACL compiled from policy text older than the last
//! write it acknowledged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::acl::{Acl, AclError, DEFAULT_POLICY, Policy};
use crate::barrier::{Barrier, BarrierError};

const PREFIX: &str = "sys/policy/";
/// Policies one server keeps; each is at most [`crate::acl::MAX_POLICY_BYTES`].
pub const MAX_POLICIES: usize = 10_000;
/// Compiled ACLs kept; past this the cache starts over (sets of policies repeat a lot).
const MAX_CACHED_ACLS: usize = 1024;

/// Policy store failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// Storage failed.
    #[error(transparent)]
    Barrier(#[from] BarrierError),
    /// The request is wrong (400).
    #[error("{0}")]
    Invalid(String),
}

impl From<AclError> for PolicyError {
    fn from(error: AclError) -> Self {
        Self::Invalid(format!("failed to parse policy: {error}"))
    }
}

/// Stored policies and the ACLs compiled from them.
pub struct PolicyStore {
    barrier: Arc<Barrier>,
    acls: Mutex<AclCache>,
}

fn key(name: &str) -> String {
    format!("{PREFIX}{name}")
}

/// A policy name as Vault keeps it: trimmed and lowercased.
pub fn normalize(name: &str) -> String {
    name.trim().to_lowercase()
}

impl PolicyStore {
    /// A store over `barrier`.
    pub fn new(barrier: Arc<Barrier>) -> Self {
        Self {
            barrier,
            acls: Mutex::new(AclCache::default()),
        }
    }

    /// Writes the `default` policy if it is missing (at unseal).
    pub fn ensure_default(&self) -> Result<(), PolicyError> {
        if self.barrier.get(&key("default"))?.is_none() {
            self.barrier
                .put(&key("default"), DEFAULT_POLICY.as_bytes())?;
        }
        Ok(())
    }

    /// The text of policy `name`, if stored.
    pub fn text(&self, name: &str) -> Result<Option<String>, PolicyError> {
        let name = normalize(name);
        if name == "root" {
            return Ok(Some(String::new()));
        }
        Ok(self
            .barrier
            .get(&key(&name))?
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// Parses and stores policy `name` (HCL or JSON).
    pub fn put(&self, name: &str, text: &str) -> Result<(), PolicyError> {
        let name = normalize(name);
        if name == "root" {
            return Err(PolicyError::Invalid(
                "cannot update the root policy".to_string(),
            ));
        }
        Policy::parse(&name, text)?;
        if self.barrier.get(&key(&name))?.is_none() && self.list()?.len() >= MAX_POLICIES {
            return Err(PolicyError::Invalid(format!(
                "at most {MAX_POLICIES} policies may be stored; delete one first"
            )));
        }
        self.barrier.put(&key(&name), text.as_bytes())?;
        self.forget();
        Ok(())
    }

    /// Deletes policy `name` (deleting a missing one succeeds).
    pub fn delete(&self, name: &str) -> Result<(), PolicyError> {
        let name = normalize(name);
        if name == "root" || name == "default" {
            return Err(PolicyError::Invalid(format!(
                "cannot delete the {name} policy"
            )));
        }
        self.barrier.delete(&key(&name))?;
        self.forget();
        Ok(())
    }

    /// Stored policy names, sorted.
    pub fn list(&self) -> Result<Vec<String>, PolicyError> {
        Ok(self
            .barrier
            .scan(PREFIX, None, MAX_POLICIES)?
            .iter()
            .filter_map(|k| k.get(PREFIX.len()..))
            .map(str::to_string)
            .collect())
    }

    /// The ACL of a token with `names`: root's when they include `root`, else the merge of
    /// every named policy that exists.
    pub fn acl(&self, names: &[String]) -> Result<Arc<Acl>, PolicyError> {
        if names.iter().any(|n| n == "root") {
            return Ok(Arc::new(Acl::root()));
        }
        let generation = match self.acls.lock() {
            Ok(cache) => match cache.compiled.get(names) {
                Some(acl) => return Ok(acl.clone()),
                None => cache.generation,
            },
            Err(_) => u64::MAX,
        };
        let mut policies = Vec::with_capacity(names.len());
        for name in names {
            if let Some(text) = self.text(name)? {
                // A stored policy always parsed when written; one that no longer does
                // (written by another version) grants nothing rather than failing requests.
                match Policy::parse(name, &text) {
                    Ok(policy) => policies.push(policy),
                    Err(error) => {
                        tracing::warn!(policy = %name, %error, "stored policy does not parse; ignored")
                    }
                }
            }
        }
        let acl = Arc::new(Acl::new(&policies));
        if let Ok(mut cache) = self.acls.lock() {
            // Compiled from texts read before a change that has since dropped the cache:
            // served to this caller (it asked before the change finished) but not kept.
            if cache.generation == generation {
                if cache.compiled.len() >= MAX_CACHED_ACLS {
                    cache.compiled.clear();
                }
                cache.compiled.insert(names.to_vec(), acl.clone());
            }
        }
        Ok(acl)
    }

    /// Drops every compiled ACL (after a policy change, and at seal; an HA standby calls
    /// it on a change notice). An ACL being compiled from texts read before this call is
    /// not cached when it finishes.
    pub fn forget(&self) {
        if let Ok(mut cache) = self.acls.lock() {
            cache.compiled.clear();
            cache.generation = cache.generation.wrapping_add(1);
        }
    }
}

/// Compiled ACLs by policy-name set, and how many times the cache was dropped.
#[derive(Default)]
struct AclCache {
    compiled: HashMap<Vec<String>, Arc<Acl>>,
    generation: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::{AclRequest, Operation};
    use crate::backend::MemoryBackend;

    fn store() -> Result<PolicyStore, BarrierError> {
        let barrier = Arc::new(Barrier::new(Arc::new(MemoryBackend::default())));
        let init = barrier.initialize(1, 1)?;
        barrier.submit_share(init.shares.first().ok_or(BarrierError::NotInitialized)?)?;
        Ok(PolicyStore::new(barrier))
    }

    /// An ACL compiled from texts read just before a write must not be cached after it:
    /// while another thread compiles ACLs nonstop, every write is seen by the next check.
    #[test]
    fn a_compile_racing_a_write_does_not_cache_the_old_text()
    -> Result<(), Box<dyn std::error::Error>> {
        let store = Arc::new(store()?);
        let names = vec!["p".to_string()];
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (store, names, stop) = (store.clone(), names.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = store.acl(&names);
                }
            })
        };
        let mut stale = 0;
        for round in 0..2000 {
            store.put(
                "p",
                &format!(r#"path "v{round}" {{ capabilities = ["read"] }}"#),
            )?;
            let path = format!("v{round}");
            let request = AclRequest::new(&path, Operation::Read);
            if store.acl(&names)?.allowed(&request).is_err() {
                stale += 1;
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        reader.join().map_err(|_| "reader panicked")?;
        assert_eq!(stale, 0, "checks after a write saw the previous policy");
        Ok(())
    }

    #[test]
    fn a_policy_change_reaches_the_next_acl() -> Result<(), Box<dyn std::error::Error>> {
        let store = store()?;
        let names = vec!["app".to_string()];
        let read = AclRequest::new("secret/app", Operation::Read);
        assert!(
            store.acl(&names)?.allowed(&read).is_err(),
            "a missing policy grants"
        );
        store.put("App", r#"path "secret/app" { capabilities = ["read"] }"#)?;
        assert!(store.acl(&names)?.allowed(&read).is_ok());
        store.put("app", r#"path "secret/app" { capabilities = ["deny"] }"#)?;
        assert!(
            store.acl(&names)?.allowed(&read).is_err(),
            "a stale ACL was served"
        );
        store.delete("app")?;
        assert!(store.acl(&names)?.allowed(&read).is_err());
        Ok(())
    }

    #[test]
    fn default_and_root_are_protected_and_bad_text_is_refused()
    -> Result<(), Box<dyn std::error::Error>> {
        let store = store()?;
        store.ensure_default()?;
        assert_eq!(store.list()?, vec!["default".to_string()]);
        assert!(store.delete("default").is_err());
        assert!(store.delete("root").is_err());
        assert!(
            store
                .put("root", r#"path "x" { capabilities = ["read"] }"#)
                .is_err()
        );
        assert!(
            store
                .put("bad", r#"path "x" { capabilities = ["fly"] }"#)
                .is_err()
        );
        assert!(store.text("bad")?.is_none(), "an invalid policy was stored");
        let root = store.acl(&["root".to_string()])?;
        assert!(
            root.allowed(&AclRequest::new("sys/seal", Operation::Update))
                .is_ok()
        );
        Ok(())
    }
}
