//! A per-static-role lock in the mount's storage, so rotations (manual, periodic, the first
//! one of a new role) and writes of a static role's record happen one at a time.
//!
//! Why storage: each call runs in a fresh instance, several calls run at once, and the
//! host's storage offers plain `get`/`put`/`delete`/`list` (no compare-and-swap). A session
//! lock in PostgreSQL would outlive a trapped call in the host's connection pool.
//!
//! The algorithm is Lamport's bakery, which needs only registers that are read and written
//! atomically (every storage call is; `list` reads one snapshot). Each contender writes its
//! own entry `lock/static-role/<role>/<random id>`: first `choosing`, then a ticket number
//! one above every number it saw, and then waits until every other entry it lists is done
//! choosing and holds no smaller `(number, id)`. A contender that arrives later lists the
//! earlier one's number before taking its own, so it always draws a larger one and waits.
//! Releasing deletes the entry. An entry older than [`STALE_AFTER_SECS`] belongs to a call
//! that died (a crash or trap) and is ignored and removed.
//!
//! This module must never hold the lock past the call that took it: every path out of
//! [`with_lock`] deletes the entry.

use std::time::{Duration, Instant};

use coffer_sdk::{EngineError, storage};
use serde::{Deserialize, Serialize};

/// Where the entries live (not under `static-role/`, which lists the roles).
const FOLDER: &str = "lock/static-role";
/// How long a contender waits for the lock: rotations take tens of milliseconds, and this
/// stays well inside the default 10 s engine call timeout.
const MAX_WAIT: Duration = Duration::from_secs(5);
/// Pause between looks at a contender ahead in line.
const POLL: Duration = Duration::from_millis(20);
/// Age after which an entry's call is presumed dead. Longer than any call should run (the
/// default engine call timeout is 10 s); a mount configured with calls longer than this
/// loses the guarantee.
pub const STALE_AFTER_SECS: u64 = 300;
/// Random bytes in a contender's id.
const ID_BYTES: usize = 16;

/// One contender's entry.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Ticket {
    /// Still drawing its number.
    pub choosing: bool,
    /// Its place in line (0 while choosing).
    pub number: u64,
    /// Unix seconds when the contender arrived.
    pub since: u64,
}

impl Ticket {
    /// Whether the entry belongs to a call that must be dead by now.
    pub fn is_stale(&self, now: u64) -> bool {
        now > self.since.saturating_add(STALE_AFTER_SECS)
    }

    /// Whether this entry (with id `id`) must go before the contender holding `mine`.
    pub fn is_ahead_of(&self, id: &str, mine: (u64, &str), now: u64) -> bool {
        !self.is_stale(now) && (self.choosing || (self.number, id) < mine)
    }
}

/// Runs `body` holding `role`'s lock; the lock is released whatever `body` returns.
pub fn with_lock<T>(
    role: &str,
    id_bytes: impl FnOnce(usize) -> Result<Vec<u8>, EngineError>,
    body: impl FnOnce() -> Result<T, EngineError>,
) -> Result<T, EngineError> {
    let folder = format!("{FOLDER}/{role}/");
    let id = crate::template::base62_from(&id_bytes(ID_BYTES)?);
    let key = format!("{folder}{id}");
    let since = coffer_sdk::time::unix_now()?;
    let taken = storage::put_json(
        &key,
        &Ticket {
            choosing: true,
            number: 0,
            since,
        },
    )
    .and_then(|()| wait_for_turn(role, &folder, &id, since));
    let outcome = taken.and_then(|()| body());
    if let Err(error) = storage::delete(&key) {
        coffer_sdk::log::warn(&format!(
            "static role {role}: could not release its rotation lock ({}); it lapses after {STALE_AFTER_SECS} s",
            crate::describe_error(&error)
        ));
    }
    outcome
}

/// Draws a number, then waits until every contender ahead of it is done.
fn wait_for_turn(role: &str, folder: &str, id: &str, since: u64) -> Result<(), EngineError> {
    let number = 1 + others(folder, id)?
        .iter()
        .map(|(_, ticket)| ticket.number)
        .max()
        .unwrap_or(0);
    storage::put_json(
        &format!("{folder}{id}"),
        &Ticket {
            choosing: false,
            number,
            since,
        },
    )?;
    let deadline = Instant::now() + MAX_WAIT;
    for (other, _) in others(folder, id)? {
        let key = format!("{folder}{other}");
        loop {
            let now = coffer_sdk::time::unix_now()?;
            if !storage::get_json::<Ticket>(&key)?
                .is_some_and(|ticket| ticket.is_ahead_of(&other, (number, id), now))
            {
                break;
            }
            if Instant::now() >= deadline {
                return Err(EngineError::Upstream(format!(
                    "another rotation of static role {role} is still running after {} s; try again",
                    MAX_WAIT.as_secs()
                )));
            }
            std::thread::sleep(POLL);
        }
    }
    Ok(())
}

/// The other live entries in `folder`; stale ones are removed on the way.
fn others(folder: &str, id: &str) -> Result<Vec<(String, Ticket)>, EngineError> {
    let now = coffer_sdk::time::unix_now()?;
    let mut live = Vec::new();
    for name in storage::list(folder)? {
        if name == id || name.ends_with('/') {
            continue;
        }
        let key = format!("{folder}{name}");
        match storage::get_json::<Ticket>(&key)? {
            Some(ticket) if ticket.is_stale(now) => storage::delete(&key)?,
            Some(ticket) => live.push((name, ticket)),
            None => {}
        }
    }
    Ok(live)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_contender_waits_for_choosers_and_smaller_tickets_but_not_for_the_dead() {
        let now = 1_000;
        let ticket = |choosing, number| Ticket {
            choosing,
            number,
            since: now,
        };
        assert!(ticket(true, 0).is_ahead_of("b", (1, "a"), now));
        assert!(
            ticket(false, 1).is_ahead_of("a", (1, "b"), now),
            "ties go by id"
        );
        assert!(!ticket(false, 1).is_ahead_of("b", (1, "a"), now));
        assert!(!ticket(false, 2).is_ahead_of("a", (1, "b"), now));
        let dead = now + STALE_AFTER_SECS + 1;
        assert!(!ticket(true, 0).is_ahead_of("b", (1, "a"), dead));
        assert!(ticket(true, 0).is_ahead_of("b", (1, "a"), now + STALE_AFTER_SECS));
    }
}
