//! High availability on the `postgresql` storage backend: several nodes, one active.
//!
//! What it owns: this node's identity and role, the HA lock row (`leader` in the HA table,
//! whose expiry is the database's `now()` plus the lock TTL, never a node's clock), and the
//! transitions between roles:
//! - **standby → active** when this node, unsealed, takes the lock (it was free or
//!   expired). Its writes are fenced from then on ([`PgBackend::fence_as_holder`]); it
//!   drops whatever it held and loads the mount table, policies, audit devices and auth
//!   mounts fresh (`Core::post_unseal`); only then does it serve, run the lease scheduler,
//!   write-ahead rollback and periodic work.
//! - **active → standby** when a renewal finds the lock taken, a fenced write was refused
//!   (a paused node waking up), renewals failed for a whole TTL, the node is sealed, or
//!   `sys/step-down`. It stops writing at once, drops its loaded state, and (unless it
//!   lost the lock) deletes the lock row so another node takes over without waiting.
//!
//! A standby serves only the seal, health and HA endpoints itself; `http` forwards
//! everything else to the active node's `api_addr` from the lock row.
//!
//! What it must never do: let two nodes commit as active (the fence in `pgstore` makes a
//! write prove the lock in its own transaction), or serve from state loaded before it
//! became active.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use crate::backend::BackendError;
use crate::core::Core;
use crate::pgstore::{LEADER_KEY, NODE_KEY_PREFIX, PgBackend};

/// Vault's lock TTL.
pub const DEFAULT_LOCK_TTL: Duration = Duration::from_secs(15);
/// Shortest lock TTL a config may ask for.
pub const MIN_LOCK_TTL: Duration = Duration::from_secs(2);
/// After a step-down, how long this node leaves the lock to the others.
const STEP_DOWN_HOLD_OFF: Duration = Duration::from_secs(10);

/// The active node, as the lock row names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leader {
    /// Its node identity.
    pub identity: String,
    /// Where clients reach it (`api_addr`).
    pub address: String,
}

/// A node that said it is alive within the last lock TTL (`sys/ha-status`).
#[derive(Clone, Debug)]
pub struct Node {
    /// Its identity.
    pub identity: String,
    /// Its `api_addr`.
    pub address: String,
    /// Unix seconds of its last heartbeat, by the database's clock.
    pub last_echo: i64,
}

/// This node's HA state.
pub struct Ha {
    backend: Arc<PgBackend>,
    identity: String,
    api_addr: String,
    lock_ttl: Duration,
    active: AtomicBool,
    /// Unix milliseconds when this node last became active (0: never).
    active_since_ms: AtomicU64,
    leader: RwLock<Option<Leader>>,
    hold_off_until: Mutex<Option<Instant>>,
    last_renewal: Mutex<Option<Instant>>,
    /// Successful lock renewals and acquisitions (for metrics).
    pub lock_renewals: AtomicU64,
    /// Times this node became active.
    pub takeovers: AtomicU64,
}

impl Ha {
    /// HA for a node reachable at `api_addr`, sharing `backend` with the other nodes.
    pub fn new(backend: Arc<PgBackend>, api_addr: String, lock_ttl: Duration) -> Arc<Self> {
        Arc::new(Self {
            backend,
            identity: uuid::Uuid::new_v4().to_string(),
            api_addr,
            lock_ttl: lock_ttl.max(MIN_LOCK_TTL),
            active: AtomicBool::new(false),
            active_since_ms: AtomicU64::new(0),
            leader: RwLock::new(None),
            hold_off_until: Mutex::new(None),
            last_renewal: Mutex::new(None),
            lock_renewals: AtomicU64::new(0),
            takeovers: AtomicU64::new(0),
        })
    }

    /// Whether this node is the active one: it took the lock, and a renewal within two
    /// thirds of the TTL (by this node's clock) confirmed it still holds it. A node that
    /// was paused past its lock stops serving the moment it runs again, before its next
    /// tick learns who took over: it forwards instead, and its scheduler waits.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::SeqCst) && self.backend.lock_confirmed()
    }

    /// Records that the lock was held as of `started` (a renewal or acquisition begun then
    /// succeeded): the node, and its read cache, count on it for two thirds of the TTL.
    fn confirm(&self, started: Instant) {
        self.backend
            .confirm_lock_until(started + self.lock_ttl * 2 / 3);
    }

    /// This node's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// This node's `api_addr`.
    pub fn api_addr(&self) -> &str {
        &self.api_addr
    }

    /// Unix milliseconds since this node became active (0 if it is not).
    pub fn active_since_ms(&self) -> u64 {
        if self.is_active() {
            self.active_since_ms.load(Ordering::SeqCst)
        } else {
            0
        }
    }

    /// The active node as last read from the lock row (at most one tick old).
    pub fn leader(&self) -> Option<Leader> {
        self.leader
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The active node, read from the lock row now (and remembered) when none is known:
    /// a node that just stepped down learns its successor before its next tick.
    pub async fn find_leader(self: &Arc<Self>) -> Option<Leader> {
        if let Some(leader) = self.leader().filter(|l| l.identity != self.identity) {
            return Some(leader);
        }
        let ha = self.clone();
        let found = tokio::task::spawn_blocking(move || ha.read_leader())
            .await
            .ok()?
            .ok()
            .flatten()
            .filter(|l| l.identity != self.identity)?;
        *self.leader.write().unwrap_or_else(PoisonError::into_inner) = Some(found.clone());
        Some(found)
    }

    /// Starts the loop that takes, renews and gives up the lock.
    pub fn spawn(self: &Arc<Self>, core: Arc<Core>) -> tokio::task::JoinHandle<()> {
        let ha = self.clone();
        let tick = (self.lock_ttl / 3).min(Duration::from_secs(1));
        tokio::spawn(async move {
            loop {
                let (ha_now, core_now) = (ha.clone(), core.clone());
                if let Err(error) =
                    tokio::task::spawn_blocking(move || ha_now.tick(&core_now)).await
                {
                    tracing::error!(%error, "the HA loop failed a tick");
                }
                tokio::time::sleep(tick).await;
            }
        })
    }

    /// One pass: keep or take the lock, or give it up; then heartbeat and read the leader.
    fn tick(&self, core: &Arc<Core>) {
        let holding = self.active.load(Ordering::SeqCst);
        if core.barrier.is_sealed() {
            if holding {
                self.step_down(core, "sealed", true);
            }
            return;
        }
        if holding {
            self.keep_lock(core);
        } else {
            if self.backend.fence_open() {
                // Unsealed and not (yet) active: a standby writes nothing.
                self.backend.fence_closed();
            }
            // The few token-checked paths a standby answers itself (sys/metrics) compile
            // policies from storage no more than a tick old.
            core.policies.forget();
            let held_off = self
                .hold_off_until
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_some_and(|until| Instant::now() < until);
            if !held_off {
                let started = Instant::now();
                match self.try_acquire() {
                    Ok(true) => {
                        self.confirm(started);
                        self.become_active(core);
                    }
                    Ok(false) => {}
                    Err(error) => tracing::warn!(%error, "cannot reach the HA lock"),
                }
            }
        }
        if let Err(error) = self.heartbeat() {
            tracing::debug!(%error, "HA heartbeat failed");
        }
        match self.read_leader() {
            Ok(leader) => {
                *self.leader.write().unwrap_or_else(PoisonError::into_inner) = leader;
            }
            Err(error) => tracing::debug!(%error, "cannot read the HA leader"),
        }
    }

    /// Renews the lock; steps down if it is gone, a fenced write was refused, or no
    /// renewal succeeded for a whole TTL.
    fn keep_lock(&self, core: &Arc<Core>) {
        if self.backend.lock_lost() {
            self.step_down(core, "a write found the lock taken by another node", false);
            return;
        }
        let started = Instant::now();
        match self.renew() {
            Ok(true) => {
                self.confirm(started);
                *self
                    .last_renewal
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
                self.lock_renewals.fetch_add(1, Ordering::Relaxed);
            }
            Ok(false) => self.step_down(core, "the lock was taken by another node", false),
            Err(error) => {
                let stale = self
                    .last_renewal
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .is_none_or(|at| at.elapsed() >= self.lock_ttl);
                tracing::warn!(%error, "cannot renew the HA lock");
                if stale {
                    self.step_down(core, "the lock could not be renewed for a whole TTL", false);
                }
            }
        }
    }

    /// Takes the lock if it is free or expired (by the database's clock).
    fn try_acquire(&self) -> Result<bool, BackendError> {
        let statement = format!(
            "INSERT INTO {ha} (ha_key, ha_identity, ha_value, valid_until)
             VALUES ($1, $2, $3, now() + make_interval(secs => $4))
             ON CONFLICT (ha_key) DO UPDATE
               SET ha_identity = EXCLUDED.ha_identity, ha_value = EXCLUDED.ha_value,
                   valid_until = EXCLUDED.valid_until
               WHERE {ha}.valid_until < now() OR {ha}.ha_identity = EXCLUDED.ha_identity
             RETURNING ha_identity",
            ha = self.backend.ha_table()
        );
        let (identity, address, ttl) = (
            self.identity.clone(),
            self.api_addr.clone(),
            self.lock_ttl.as_secs_f64(),
        );
        self.backend.run(move |client, runtime| {
            runtime
                .block_on(client.query_opt(&statement, &[&LEADER_KEY, &identity, &address, &ttl]))
                .map(|row| row.is_some())
                .map_err(|e| BackendError::Storage(format!("HA lock: {e}")))
        })
    }

    /// Extends the lock if this node still holds it.
    fn renew(&self) -> Result<bool, BackendError> {
        let statement = format!(
            "UPDATE {} SET valid_until = now() + make_interval(secs => $3)
             WHERE ha_key = $1 AND ha_identity = $2 AND valid_until > now()",
            self.backend.ha_table()
        );
        let (identity, ttl) = (self.identity.clone(), self.lock_ttl.as_secs_f64());
        self.backend.run(move |client, runtime| {
            runtime
                .block_on(client.execute(&statement, &[&LEADER_KEY, &identity, &ttl]))
                .map(|rows| rows == 1)
                .map_err(|e| BackendError::Storage(format!("HA lock: {e}")))
        })
    }

    /// Deletes the lock row if this node holds it.
    fn release(&self) -> Result<(), BackendError> {
        let statement = format!(
            "DELETE FROM {} WHERE ha_key = $1 AND ha_identity = $2",
            self.backend.ha_table()
        );
        let identity = self.identity.clone();
        self.backend.run(move |client, runtime| {
            runtime
                .block_on(client.execute(&statement, &[&LEADER_KEY, &identity]))
                .map(|_| ())
                .map_err(|e| BackendError::Storage(format!("HA lock: {e}")))
        })
    }

    /// Says this node is alive, for `sys/ha-status`.
    fn heartbeat(&self) -> Result<(), BackendError> {
        let statement = format!(
            "INSERT INTO {ha} (ha_key, ha_identity, ha_value, valid_until)
             VALUES ($1, $2, $3, now() + make_interval(secs => $4))
             ON CONFLICT (ha_key) DO UPDATE
               SET ha_value = EXCLUDED.ha_value, valid_until = EXCLUDED.valid_until",
            ha = self.backend.ha_table()
        );
        let (key, identity, address, ttl) = (
            format!("{NODE_KEY_PREFIX}{}", self.identity),
            self.identity.clone(),
            self.api_addr.clone(),
            self.lock_ttl.as_secs_f64(),
        );
        self.backend.run(move |client, runtime| {
            runtime
                .block_on(client.execute(&statement, &[&key, &identity, &address, &ttl]))
                .map(|_| ())
                .map_err(|e| BackendError::Storage(format!("HA heartbeat: {e}")))
        })
    }

    /// The unexpired lock row.
    fn read_leader(&self) -> Result<Option<Leader>, BackendError> {
        let statement = format!(
            "SELECT ha_identity, ha_value FROM {} WHERE ha_key = $1 AND valid_until > now()",
            self.backend.ha_table()
        );
        self.backend.run(move |client, runtime| {
            runtime
                .block_on(client.query_opt(&statement, &[&LEADER_KEY]))
                .map(|row| {
                    row.map(|row| Leader {
                        identity: row.get(0),
                        address: row.get(1),
                    })
                })
                .map_err(|e| BackendError::Storage(format!("HA lock: {e}")))
        })
    }

    /// The nodes that said they are alive within the last TTL.
    pub fn nodes(&self) -> Result<Vec<Node>, BackendError> {
        let statement = format!(
            "SELECT ha_identity, ha_value,
                    floor(extract(epoch FROM valid_until - make_interval(secs => $2)))::bigint
             FROM {} WHERE starts_with(ha_key, $1) AND valid_until > now() ORDER BY ha_key",
            self.backend.ha_table()
        );
        let ttl = self.lock_ttl.as_secs_f64();
        self.backend.run(move |client, runtime| {
            runtime
                .block_on(client.query(&statement, &[&NODE_KEY_PREFIX, &ttl]))
                .map(|rows| {
                    rows.iter()
                        .map(|row| Node {
                            identity: row.get(0),
                            address: row.get(1),
                            last_echo: row.get(2),
                        })
                        .collect()
                })
                .map_err(|e| BackendError::Storage(format!("HA nodes: {e}")))
        })
    }

    /// Becomes the active node: fenced writes, state loaded fresh.
    fn become_active(&self, core: &Arc<Core>) {
        self.backend.fence_as_holder(&self.identity);
        core.drop_loaded_state();
        if let Err(error) = core.post_unseal() {
            tracing::error!(%error, "took the HA lock but could not load; stepping down");
            self.step_down(core, "loading failed", true);
            return;
        }
        *self
            .last_renewal
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        self.active_since_ms
            .store(crate::lease::now_ms(), Ordering::SeqCst);
        self.active.store(true, Ordering::SeqCst);
        self.takeovers.fetch_add(1, Ordering::Relaxed);
        *self.leader.write().unwrap_or_else(PoisonError::into_inner) = Some(Leader {
            identity: self.identity.clone(),
            address: self.api_addr.clone(),
        });
        tracing::info!(identity = %self.identity, "this node is now the active node");
    }

    /// Becomes a standby: no more writes, loaded state dropped, the lock given back when
    /// this node still holds it (`release`).
    fn step_down(&self, core: &Core, why: &str, release: bool) {
        self.active.store(false, Ordering::SeqCst);
        self.backend.fence_closed();
        core.drop_loaded_state();
        if release && let Err(error) = self.release() {
            tracing::warn!(%error, "could not release the HA lock; it expires on its own");
        }
        *self.leader.write().unwrap_or_else(PoisonError::into_inner) = None;
        tracing::warn!(identity = %self.identity, reason = why, "this node stepped down to standby");
    }

    /// `sys/step-down`: gives up the lock and leaves it to the others for a while.
    pub fn step_down_now(&self, core: &Core) {
        *self
            .hold_off_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now() + STEP_DOWN_HOLD_OFF);
        if self.active.load(Ordering::SeqCst) {
            self.step_down(core, "sys/step-down", true);
        }
    }
}
