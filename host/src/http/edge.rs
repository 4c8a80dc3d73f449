//! The HTTP edge: what a client can make the server hold before it has proven anything.
//!
//! Connections are capped and cut when their headers, body or TLS handshake are slow or
//! when they sit idle; a request that needs a token and has no valid one is refused before
//! its body is read; bodies that are read are bounded per request and, together with the
//! JSON parsed from them, by one memory budget for all requests in flight.
//!
//! What it must never do: buffer or parse a body for a caller it is about to refuse, or let
//! any client's bytes grow the server's memory without a bound.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Largest request body by default (Vault's `max_request_size` default, 32 MiB).
pub const DEFAULT_MAX_REQUEST_SIZE: usize = 32 << 20;
/// Largest body read on a path served without a token (`sys/init`, `sys/unseal`, a CA
/// read): the biggest legitimate one, an init request, is a few hundred bytes.
pub const MAX_PUBLIC_BODY: usize = 64 << 10;
/// Concurrent connections by default; beyond it new connections wait in the kernel's
/// backlog until one closes. Well under the usual 1,024 open-file limit per process.
pub const DEFAULT_MAX_CONNECTIONS: usize = 768;
/// Time to send a request's headers, which is also the longest a kept-alive connection
/// may sit idle (hyper times both with one clock). Vault's `http_read_header_timeout`.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time to send a whole request body (Vault's `http_read_timeout`).
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Time to finish a TLS handshake.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The memory all in-flight bodies and their parsed JSON may hold at once, as a number of
/// maximal requests: enough for honest bursts, a bound for a flood.
const BUDGET_IN_REQUESTS: usize = 8;
/// What one parsed JSON value is charged on top of its body bytes: a `serde_json::Value`
/// is 32 bytes, and vectors' spare capacity and map nodes roughly double that.
const PARSED_BYTES_PER_VALUE: usize = 64;
/// Bodies up to this size are not charged to the budget, so small requests are never
/// turned away while large ones fill it; all of them together stay bounded by the
/// connection cap (768 × (4 KiB + the JSON of 4 KiB) ≈ 100 MiB at the defaults).
pub const UNCHARGED_BODY: usize = 4 << 10;
/// Pause after a failed `accept` (EMFILE, ENFILE, ENOMEM) so the loop does not spin.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The edge's limits, from `[listener]` or the defaults above.
#[derive(Clone, Debug)]
pub struct EdgeLimits {
    /// Largest request body, in bytes.
    pub max_request_size: usize,
    /// Most connections served at once.
    pub max_connections: usize,
    /// Header read and keep-alive idle timeout.
    pub header_timeout: Duration,
    /// Whole-body read timeout.
    pub body_timeout: Duration,
    /// TLS handshake timeout.
    pub tls_handshake_timeout: Duration,
}

impl Default for EdgeLimits {
    fn default() -> Self {
        Self {
            max_request_size: DEFAULT_MAX_REQUEST_SIZE,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            tls_handshake_timeout: DEFAULT_TLS_HANDSHAKE_TIMEOUT,
        }
    }
}

/// The limits with their shared counters.
pub struct Edge {
    /// The configured limits.
    pub limits: EdgeLimits,
    connections: Arc<Semaphore>,
    budget: Arc<Semaphore>,
    budget_bytes: usize,
}

/// Why the edge refused to take more of a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// This one request is larger than any request may be (413).
    TooLarge(String),
    /// The server holds as much request memory as it may right now (503).
    Busy,
}

/// Memory charged to the in-flight budget; handed back when dropped. Bodies of at most
/// [`UNCHARGED_BODY`] bytes are never charged.
#[derive(Default)]
pub struct Charge(Vec<OwnedSemaphorePermit>);

impl Edge {
    /// Counters for `limits`.
    pub fn new(limits: EdgeLimits) -> Self {
        let budget_bytes = limits
            .max_request_size
            .max(MAX_PUBLIC_BODY)
            .saturating_mul(BUDGET_IN_REQUESTS)
            .min(Semaphore::MAX_PERMITS);
        Self {
            connections: Arc::new(Semaphore::new(
                limits.max_connections.clamp(1, Semaphore::MAX_PERMITS),
            )),
            budget: Arc::new(Semaphore::new(budget_bytes)),
            budget_bytes,
            limits,
        }
    }

    /// Waits for a free connection slot; the connection holds it until it closes.
    pub async fn connection_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.connections.clone().acquire_owned().await.ok()
    }

    /// Charges `bytes` more to `charge`, or says why not (nothing is charged then).
    pub fn charge(&self, charge: &mut Charge, bytes: usize) -> Result<(), Refusal> {
        if bytes == 0 {
            return Ok(());
        }
        let held: usize = charge.0.iter().map(OwnedSemaphorePermit::num_permits).sum();
        if held.saturating_add(bytes) > self.budget_bytes {
            return Err(Refusal::TooLarge(format!(
                "the request needs more than the server's {} bytes of request memory",
                self.budget_bytes
            )));
        }
        let Ok(bytes) = u32::try_from(bytes) else {
            return Err(Refusal::Busy);
        };
        match self.budget.clone().try_acquire_many_owned(bytes) {
            Ok(permit) => {
                charge.0.push(permit);
                Ok(())
            }
            Err(_) => Err(Refusal::Busy),
        }
    }

    /// Charges a body buffer growing from `before` to `after` bytes (the part beyond
    /// [`UNCHARGED_BODY`]).
    pub fn charge_body(
        &self,
        charge: &mut Charge,
        before: usize,
        after: usize,
    ) -> Result<(), Refusal> {
        let charged_before = before.max(UNCHARGED_BODY);
        self.charge(charge, after.saturating_sub(charged_before))
    }

    /// Charges the memory that parsing `body` as JSON will take.
    pub fn charge_parse(&self, charge: &mut Charge, body: &[u8]) -> Result<(), Refusal> {
        if body.len() <= UNCHARGED_BODY {
            return Ok(());
        }
        let values = json_values(body);
        self.charge(charge, values.saturating_mul(PARSED_BYTES_PER_VALUE))
    }
}

/// An upper bound on the number of values (and object keys) parsing `body` as JSON makes:
/// one per separator or opening bracket outside strings, plus one.
pub fn json_values(body: &[u8]) -> usize {
    let (mut count, mut in_string, mut escaped) = (1usize, false, false);
    for &byte in body {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b',' | b':' | b'[' | b'{' => count = count.saturating_add(1),
            _ => {}
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_values_bound_what_serde_builds() {
        assert_eq!(json_values(b"{}"), 2);
        // Separators inside strings (escaped quotes too) are not counted.
        assert_eq!(json_values(br#"{"a,b:[":"x\",{"}"#), 3);
        let array = format!("[{}0]", "0,".repeat(1000));
        assert!(json_values(array.as_bytes()) >= 1001);
    }

    #[test]
    fn the_budget_refuses_oversized_and_concurrent_excess() {
        let edge = Edge::new(EdgeLimits {
            max_request_size: MAX_PUBLIC_BODY,
            ..EdgeLimits::default()
        });
        let total = MAX_PUBLIC_BODY * BUDGET_IN_REQUESTS;
        let mut too_big = Charge::default();
        assert!(matches!(
            edge.charge(&mut too_big, total + 1),
            Err(Refusal::TooLarge(_))
        ));
        let mut first = Charge::default();
        assert_eq!(edge.charge(&mut first, total - 10), Ok(()));
        let mut second = Charge::default();
        assert_eq!(edge.charge(&mut second, 11), Err(Refusal::Busy));
        drop(first);
        assert_eq!(edge.charge(&mut second, 11), Ok(()));
    }
}
