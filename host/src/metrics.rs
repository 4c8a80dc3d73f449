//! `sys/metrics`: what an operator needs to run Coffer, in Prometheus' text format (or
//! JSON): requests and their latency per mount and operation, engine call time, lease
//! expiries, failed revocations, irrevocable leases, rollbacks, storage commit latency,
//! the HA role and lock renewals, and whether the node is sealed.
//!
//! Counters live in memory, per node, from process start (as Vault's). Labels are only
//! mount paths (bounded by the mount table), operations and status classes: never a
//! request path below a mount, a token or a lease id.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::core::Core;

/// Upper bounds of the latency histograms, seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// A latency histogram.
#[derive(Clone, Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        for (bound, count) in BUCKETS.iter().zip(self.counts.iter_mut()) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }

    fn write(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, count) in BUCKETS.iter().zip(self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

/// This process's counters.
pub fn global() -> &'static Metrics {
    static METRICS: std::sync::OnceLock<Metrics> = std::sync::OnceLock::new();
    METRICS.get_or_init(Metrics::default)
}

/// Most series per labelled metric; past it, new mounts are counted as `mount="other"`
/// (mounts come and go; a node's memory must not grow with every one ever made).
const MAX_SERIES: usize = 4096;

/// The series key for `mount` in a map of `len` series: itself, or `other` once full.
fn bounded(mount: &str, present: bool, len: usize) -> String {
    if present || len < MAX_SERIES {
        mount.to_string()
    } else {
        "other".to_string()
    }
}

/// The node's counters.
#[derive(Default)]
pub struct Metrics {
    /// By (mount, operation, status class).
    requests: Mutex<BTreeMap<(String, &'static str, &'static str), Histogram>>,
    /// Engine calls by mount.
    engine_calls: Mutex<BTreeMap<String, Histogram>>,
    storage_commits: Mutex<Histogram>,
    /// Waits for a pooled SQL connection, by mount.
    pool_waits: Mutex<BTreeMap<String, Histogram>>,
    /// Leases revoked by the scheduler at their expiry (or their token's revocation).
    pub lease_expiries: AtomicU64,
    /// Revocations that failed and were scheduled again.
    pub revocation_failures: AtomicU64,
    /// Leases given up on (irrevocable).
    pub irrevocable: AtomicU64,
    /// Write-ahead entries rolled back.
    pub rollbacks: AtomicU64,
    /// Tokens minted (created or by a login).
    pub tokens_created: AtomicU64,
}

/// `"2xx"`, `"4xx"`, `"5xx"` of a status code.
fn class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// A label value, escaped as Prometheus wants.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// Counts one API request.
    pub fn request(&self, mount: &str, operation: &'static str, status: u16, elapsed: Duration) {
        if let Ok(mut requests) = self.requests.lock() {
            let key = (mount.to_string(), operation, class(status));
            let key = if requests.contains_key(&key) || requests.len() < MAX_SERIES {
                key
            } else {
                ("other".to_string(), operation, class(status))
            };
            requests.entry(key).or_default().observe(elapsed);
        }
    }

    /// Times one engine call of `mount`.
    pub fn engine_call(&self, mount: &str, elapsed: Duration) {
        if let Ok(mut calls) = self.engine_calls.lock() {
            let key = bounded(mount, calls.contains_key(mount), calls.len());
            calls.entry(key).or_default().observe(elapsed);
        }
    }

    /// Times one wait of `mount`'s engine for a pooled SQL connection.
    pub fn pool_wait(&self, mount: &str, elapsed: Duration) {
        if let Ok(mut waits) = self.pool_waits.lock() {
            let key = bounded(mount, waits.contains_key(mount), waits.len());
            waits.entry(key).or_default().observe(elapsed);
        }
    }

    /// Times one storage commit.
    pub fn storage_commit(&self, elapsed: Duration) {
        if let Ok(mut commits) = self.storage_commits.lock() {
            commits.observe(elapsed);
        }
    }

    /// Everything, in Prometheus' text exposition format.
    pub fn prometheus(&self, core: &Core) -> String {
        let mut out = String::new();
        let header = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
        };
        header(
            &mut out,
            "coffer_request_duration_seconds",
            "histogram",
            "API requests by mount, operation and status class, and their latency.",
        );
        if let Ok(requests) = self.requests.lock() {
            for ((mount, operation, status), histogram) in requests.iter() {
                let labels = format!(
                    "mount=\"{}\",operation=\"{operation}\",status=\"{status}\"",
                    label(mount)
                );
                histogram.write(&mut out, "coffer_request_duration_seconds", &labels);
            }
        }
        header(
            &mut out,
            "coffer_engine_call_duration_seconds",
            "histogram",
            "Engine (WebAssembly) calls by mount, including their waits for pooled connections.",
        );
        if let Ok(calls) = self.engine_calls.lock() {
            for (mount, histogram) in calls.iter() {
                histogram.write(
                    &mut out,
                    "coffer_engine_call_duration_seconds",
                    &format!("mount=\"{}\"", label(mount)),
                );
            }
        }
        header(
            &mut out,
            "coffer_sql_pool_wait_seconds",
            "histogram",
            "Waits of engines for a pooled database connection, by mount.",
        );
        if let Ok(waits) = self.pool_waits.lock() {
            for (mount, histogram) in waits.iter() {
                let labels = format!("mount=\"{}\"", label(mount));
                histogram.write(&mut out, "coffer_sql_pool_wait_seconds", &labels);
            }
        }
        header(
            &mut out,
            "coffer_storage_commit_duration_seconds",
            "histogram",
            "Storage writes (one durable commit each).",
        );
        if let Ok(commits) = self.storage_commits.lock() {
            commits.write(&mut out, "coffer_storage_commit_duration_seconds", "");
        }
        for (name, help, value) in [
            (
                "coffer_lease_expiries_total",
                "Leases revoked by the scheduler (expiry, token revoked).",
                &self.lease_expiries,
            ),
            (
                "coffer_lease_revocation_failures_total",
                "Revocations that failed and were retried.",
                &self.revocation_failures,
            ),
            (
                "coffer_leases_irrevocable_total",
                "Leases given up on after their retries.",
                &self.irrevocable,
            ),
            (
                "coffer_rollbacks_total",
                "Write-ahead entries rolled back.",
                &self.rollbacks,
            ),
            (
                "coffer_tokens_created_total",
                "Tokens minted by this node.",
                &self.tokens_created,
            ),
        ] {
            header(&mut out, name, "counter", help);
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
        let gauges: [(&str, &str, u64); 4] = [
            (
                "coffer_sealed",
                "1 while this node is sealed.",
                u64::from(core.barrier.is_sealed()),
            ),
            (
                "coffer_ha_enabled",
                "1 when storage is shared by several nodes.",
                u64::from(core.ha.get().is_some()),
            ),
            (
                "coffer_ha_active",
                "1 on the node that serves (always 1 without HA).",
                u64::from(core.is_active()),
            ),
            (
                "coffer_mounts",
                "Mounted engines (secrets and auth).",
                u64::try_from(core.mounts().len()).unwrap_or(u64::MAX),
            ),
        ];
        for (name, help, value) in gauges {
            header(&mut out, name, "gauge", help);
            let _ = writeln!(out, "{name} {value}");
        }
        if core.is_active() && !core.barrier.is_sealed() {
            // Counted from storage at each scrape (bounded), so they are right after a
            // restart or a takeover too.
            header(
                &mut out,
                "coffer_leases_live",
                "gauge",
                "Leases held, by mount.",
            );
            for mount in core.mounts() {
                let prefix = format!("{}{}", crate::lease::ID_PREFIX, mount.entry.path);
                let _ = writeln!(
                    out,
                    "coffer_leases_live{{mount=\"{}\"}} {}",
                    label(&mount.entry.path),
                    count_keys(core, &prefix)
                );
            }
            header(
                &mut out,
                "coffer_leases_irrevocable",
                "gauge",
                "Leases given up on and still held.",
            );
            let _ = writeln!(
                out,
                "coffer_leases_irrevocable {}",
                count_keys(core, crate::lease::IRREVOCABLE_PREFIX)
            );
            header(
                &mut out,
                "coffer_tokens_live",
                "gauge",
                "Live tokens (by accessor).",
            );
            let _ = writeln!(
                out,
                "coffer_tokens_live {}",
                count_keys(core, crate::tokens::ACCESSOR_PREFIX)
            );
        }
        if let Some(ha) = core.ha.get() {
            header(
                &mut out,
                "coffer_ha_lock_renewals_total",
                "counter",
                "HA lock renewals by this node.",
            );
            let _ = writeln!(
                out,
                "coffer_ha_lock_renewals_total {}",
                ha.lock_renewals.load(Ordering::Relaxed)
            );
            header(
                &mut out,
                "coffer_ha_takeovers_total",
                "counter",
                "Times this node became the active node.",
            );
            let _ = writeln!(
                out,
                "coffer_ha_takeovers_total {}",
                ha.takeovers.load(Ordering::Relaxed)
            );
        }
        out
    }
}

/// Most keys one gauge counts per scrape; past it the gauge says this many.
const MAX_COUNTED: usize = 1_000_000;
/// Keys read per page while counting.
const COUNT_PAGE: usize = 4096;

/// Keys under `prefix`, counted in pages, up to [`MAX_COUNTED`].
fn count_keys(core: &Core, prefix: &str) -> usize {
    let mut after: Option<String> = None;
    let mut count = 0usize;
    while count < MAX_COUNTED {
        let Ok(keys) = core.barrier.scan(prefix, after.as_deref(), COUNT_PAGE) else {
            break;
        };
        count += keys.len();
        match keys.last() {
            Some(last) if keys.len() == COUNT_PAGE => after = Some(last.clone()),
            _ => break,
        }
    }
    count.min(MAX_COUNTED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_is_cumulative_with_sum_and_count() {
        let mut histogram = Histogram::default();
        histogram.observe(Duration::from_millis(3));
        histogram.observe(Duration::from_millis(30));
        let mut out = String::new();
        histogram.write(&mut out, "x", "mount=\"a/\"");
        assert!(
            out.contains("x_bucket{mount=\"a/\",le=\"0.0025\"} 0"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{mount=\"a/\",le=\"0.005\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{mount=\"a/\",le=\"0.05\"} 2"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{mount=\"a/\",le=\"+Inf\"} 2"),
            "{out}"
        );
        assert!(out.contains("x_count{mount=\"a/\"} 2"), "{out}");
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(class(204), "2xx");
        assert_eq!(class(429), "4xx");
        assert_eq!(class(503), "5xx");
    }

    #[test]
    fn series_stop_growing_at_their_bound() {
        let metrics = Metrics::default();
        for i in 0..MAX_SERIES + 10 {
            metrics.engine_call(&format!("m{i}/"), Duration::from_millis(1));
            metrics.request(&format!("m{i}/"), "read", 200, Duration::from_millis(1));
        }
        let calls = metrics.engine_calls.lock().map(|c| c.len()).unwrap_or(0);
        let requests = metrics.requests.lock().map(|r| r.len()).unwrap_or(0);
        assert_eq!(calls, MAX_SERIES + 1, "the bound plus `other`");
        assert_eq!(requests, MAX_SERIES + 1);
        metrics.engine_call("m0/", Duration::from_millis(1));
        assert_eq!(
            metrics
                .engine_calls
                .lock()
                .map(|c| c.get("m0/").map_or(0, |h| h.count))
                .unwrap_or(0),
            2,
            "known series keep counting"
        );
    }
}
