//! A bounded pool of pre-generated RSA keys.
//!
//! RSA key generation is the whole cost of issuing an RSA certificate (~85 ms per
//! RSA-2048 key with AWS-LC here, against microseconds for everything else). One
//! background thread keeps a few keys of each size that has been asked for ready, so a
//! request after a quiet period does not wait for one, and a steady stream of requests gets
//! an otherwise idle core's help.
//!
//! What it guarantees: a key is handed out once and then forgotten (never reused); keys
//! live only in this process's memory, never in storage; a size nobody has asked for costs
//! nothing (the pool fills a size only after its first request); the pool is bounded.

use std::collections::{HashMap, HashSet};
use std::sync::{Condvar, Mutex, OnceLock, PoisonError};

use openssl::pkey::{PKey, Private};

/// Keys kept ready per size: enough to absorb a burst, small enough to refill in seconds.
fn target(bits: u32) -> usize {
    match bits {
        2048 => 32,
        3072 => 8,
        _ => 4,
    }
}

/// The sizes the pool may hold.
const SIZES: [u32; 3] = [2048, 3072, 4096];

#[derive(Default)]
struct State {
    ready: HashMap<u32, Vec<PKey<Private>>>,
    wanted: HashSet<u32>,
    filler_started: bool,
}

/// The pool; one per process (see [`pool`]).
pub struct RsaPool {
    state: Mutex<State>,
    wanted: Condvar,
}

impl RsaPool {
    fn new() -> Self {
        Self {
            state: Mutex::new(State::default()),
            wanted: Condvar::new(),
        }
    }

    /// A pre-generated key of `bits`, if one is ready; either way the pool will keep this
    /// size filled from now on.
    pub fn take(&'static self, bits: u32) -> Option<PKey<Private>> {
        if !SIZES.contains(&bits) {
            return None;
        }
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.wanted.insert(bits);
        if !state.filler_started {
            let spawned = std::thread::Builder::new()
                .name("coffer-rsa-pool".to_string())
                .spawn(move || self.fill());
            state.filler_started = spawned.is_ok();
        }
        let key = state.ready.get_mut(&bits).and_then(Vec::pop);
        drop(state);
        self.wanted.notify_one();
        key
    }

    /// How many keys of `bits` are ready.
    pub fn ready(&self, bits: u32) -> usize {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.ready.get(&bits).map_or(0, Vec::len)
    }

    /// The filler: generates one key at a time for the smallest wanted size below target,
    /// and sleeps while every wanted size is full.
    fn fill(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            let short = SIZES.into_iter().find(|bits| {
                state.wanted.contains(bits)
                    && state.ready.get(bits).map_or(0, Vec::len) < target(*bits)
            });
            let Some(bits) = short else {
                state = self
                    .wanted
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            };
            drop(state);
            let key = super::keys::generate_rsa(bits);
            state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            match key {
                Ok(key) => state.ready.entry(bits).or_default().push(key),
                Err(error) => {
                    tracing::warn!(%error, bits, "RSA key pool could not generate a key");
                    drop(state);
                    std::thread::sleep(std::time::Duration::from_secs(1));
                    state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                }
            }
        }
    }
}

/// The process-wide pool.
pub fn pool() -> &'static RsaPool {
    static POOL: OnceLock<RsaPool> = OnceLock::new();
    POOL.get_or_init(RsaPool::new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn fills_only_what_was_asked_for_and_never_hands_out_a_key_twice() {
        let pool: &'static RsaPool = Box::leak(Box::new(RsaPool::new()));
        assert!(
            pool.take(1024).is_none(),
            "unsupported sizes are not pooled"
        );
        assert!(pool.take(2048).is_none(), "the pool starts empty");
        let deadline = Instant::now() + Duration::from_secs(120);
        while pool.ready(2048) < 3 {
            assert!(Instant::now() < deadline, "the pool did not fill");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            pool.ready(3072),
            0,
            "a size nobody asked for is not generated"
        );
        let mut moduli = HashSet::new();
        for _ in 0..3 {
            let key = pool.take(2048).and_then(|k| k.rsa().ok());
            let modulus = key.map(|k| k.n().to_vec()).unwrap_or_default();
            assert_eq!(modulus.len(), 256);
            assert!(moduli.insert(modulus), "a key was handed out twice");
        }
        assert!(pool.ready(2048) <= target(2048));
    }
}
