//! A closed-loop HTTP load generator: `concurrency` workers on kept-alive connections send
//! until `total` requests are done; latencies are recorded per request.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// One server under test.
#[derive(Clone, Debug)]
pub struct Target {
    /// `coffer` or `openbao`.
    pub name: String,
    /// `http://127.0.0.1:port`.
    pub addr: String,
    /// Root token.
    pub token: String,
    /// Server process id (for RSS).
    pub pid: u32,
}

/// Result of one load run.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Requests that returned 2xx.
    pub ok: usize,
    /// Requests that failed.
    pub errors: usize,
    /// Wall time.
    pub seconds: f64,
    /// Successful requests per second.
    pub throughput: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Mean latency, ms.
    pub mean_ms: f64,
    /// Load generator CPU time as a share of one core over the run (shows whether the
    /// client was the bottleneck).
    pub client_cpu: f64,
    /// Server CPU time (user + system, all threads) per completed request, µs: what one
    /// request costs the server, whether or not it was saturated.
    pub server_cpu_us: f64,
    /// First error message seen, if any.
    pub first_error: Option<String>,
    /// `lease_id`s from the responses, when collected.
    pub lease_ids: Vec<String>,
}

fn process_cpu_seconds() -> f64 {
    cpu_seconds("self")
}

/// CPU time (user + system) a process has used, seconds; 0 when it cannot be read.
fn cpu_seconds(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|text| {
            let fields: Vec<&str> = text.rsplit(") ").next()?.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        })
        .unwrap_or(0.0)
}

/// A request body producer: called with the request's index.
pub type BodyFn = Arc<dyn Fn(usize) -> (String, String) + Send + Sync>;

/// Runs `total` requests at `concurrency`. `make(i)` returns (path, body) for request `i`.
pub async fn run(
    target: &Target,
    method: &str,
    concurrency: usize,
    total: usize,
    collect_leases: bool,
    make: BodyFn,
) -> Stats {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(concurrency.max(1))
        .build_http();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let cpu_before = process_cpu_seconds();
    let server_pid = target.pid.to_string();
    let server_before = cpu_seconds(&server_pid);
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (client, next, make, target, method) = (
            client.clone(),
            next.clone(),
            make.clone(),
            target.clone(),
            method.to_string(),
        );
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let (mut errors, mut first_error, mut leases) = (0usize, None, Vec::new());
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= total {
                    break;
                }
                let (path, body) = make(index);
                let request = Request::builder()
                    .method(
                        hyper::Method::from_bytes(method.as_bytes()).unwrap_or(hyper::Method::GET),
                    )
                    .uri(format!("{}/v1/{path}", target.addr))
                    .header("X-Vault-Token", &target.token)
                    .body(Full::new(Bytes::from(body)));
                let Ok(request) = request else {
                    errors += 1;
                    continue;
                };
                let sent = Instant::now();
                let outcome = async {
                    let response = client.request(request).await.map_err(|e| e.to_string())?;
                    let status = response.status();
                    let bytes = response
                        .into_body()
                        .collect()
                        .await
                        .map_err(|e| e.to_string())?
                        .to_bytes();
                    Ok::<_, String>((status, bytes))
                }
                .await;
                let elapsed = sent.elapsed();
                match outcome {
                    Ok((status, bytes)) if status.is_success() => {
                        latencies.push(elapsed);
                        if collect_leases
                            && let Ok(value) = serde_json::from_slice::<Value>(&bytes)
                            && let Some(id) = value
                                .get("lease_id")
                                .and_then(Value::as_str)
                                .filter(|id| !id.is_empty())
                        {
                            leases.push(id.to_string());
                        }
                    }
                    Ok((status, bytes)) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| {
                            format!(
                                "{status}: {}",
                                String::from_utf8_lossy(&bytes)
                                    .chars()
                                    .take(200)
                                    .collect::<String>()
                            )
                        });
                    }
                    Err(error) => {
                        errors += 1;
                        first_error.get_or_insert(error);
                    }
                }
            }
            (latencies, errors, first_error, leases)
        }));
    }
    let mut latencies: Vec<Duration> = Vec::new();
    let mut stats = Stats::default();
    for worker in workers {
        if let Ok((mut l, e, f, leases)) = worker.await {
            latencies.append(&mut l);
            stats.errors += e;
            if stats.first_error.is_none() {
                stats.first_error = f;
            }
            stats.lease_ids.extend(leases);
        }
    }
    stats.seconds = started.elapsed().as_secs_f64();
    stats.client_cpu = (process_cpu_seconds() - cpu_before) / stats.seconds.max(1e-9);
    latencies.sort();
    stats.ok = latencies.len();
    stats.server_cpu_us =
        (cpu_seconds(&server_pid) - server_before) * 1e6 / (stats.ok + stats.errors).max(1) as f64;
    stats.throughput = stats.ok as f64 / stats.seconds.max(1e-9);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let pick = |q: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .map(ms)
            .unwrap_or(0.0)
    };
    stats.p50_ms = pick(0.5);
    stats.p99_ms = pick(0.99);
    stats.mean_ms = if latencies.is_empty() {
        0.0
    } else {
        latencies.iter().map(|d| ms(*d)).sum::<f64>() / latencies.len() as f64
    };
    stats
}

/// Peak resident set size of a process, bytes (VmHWM).
pub fn peak_rss(pid: u32) -> u64 {
    read_status_kb(pid, "VmHWM:") * 1024
}

/// Current resident set size of a process, bytes (VmRSS).
pub fn rss(pid: u32) -> u64 {
    read_status_kb(pid, "VmRSS:") * 1024
}

fn read_status_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
