//! Threads for work nobody is waiting on: the lease scheduler's expiries and retries,
//! periodic maintenance and write-ahead rollbacks.
//!
//! They run at a lower CPU priority (nice +10) than the threads serving the API, so a
//! storm of expiring leases drains with whatever CPU requests leave over instead of
//! queueing requests behind it. API-initiated work (a `sys/leases/revoke`, an engine
//! request) never runs here.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

/// Threads in the pool: the lease scheduler's worker limit.
pub const THREADS: usize = crate::lease::MAX_REVOKE_WORKERS;
/// How much lower than the API threads' priority background threads run.
const NICE: i32 = 10;

type Job = Box<dyn FnOnce() + Send + 'static>;

tokio::task_local! {
    static BACKGROUND: ();
}

/// Runs `future` as background work: engine calls it makes go to the background pool.
pub async fn scope<F: Future>(future: F) -> F::Output {
    BACKGROUND.scope((), future).await
}

/// Whether the current task is background work.
pub fn active() -> bool {
    BACKGROUND.try_with(|_| ()).is_ok()
}

/// The background work was dropped before it finished (the pool is gone).
#[derive(Debug, thiserror::Error)]
#[error("background work was abandoned")]
pub struct Abandoned;

fn pool() -> &'static Mutex<Sender<Job>> {
    static POOL: OnceLock<Mutex<Sender<Job>>> = OnceLock::new();
    POOL.get_or_init(|| {
        let (sender, receiver) = channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        for index in 0..THREADS {
            let receiver = receiver.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("coffer-bg-{index}"))
                .spawn(move || work(&receiver));
            if let Err(error) = spawned {
                tracing::warn!(%error, "cannot start a background thread");
            }
        }
        Mutex::new(sender)
    })
}

fn work(receiver: &Mutex<Receiver<Job>>) {
    // Per-thread on Linux: only this thread's priority changes.
    if let Err(error) = rustix::process::nice(NICE) {
        tracing::debug!(%error, "background thread keeps normal priority");
    }
    loop {
        let job = receiver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .recv();
        match job {
            // A panicking job loses its result (its caller sees `Abandoned`), not the thread.
            Ok(job) => {
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                    tracing::error!("a background job panicked");
                }
            }
            Err(_) => return,
        }
    }
}

/// Runs blocking `job` on a background thread and waits for its result.
pub async fn run<R: Send + 'static>(
    job: impl FnOnce() -> R + Send + 'static,
) -> Result<R, Abandoned> {
    let (reply, result) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = reply.send(job());
    });
    pool()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .send(job)
        .map_err(|_| Abandoned)?;
    result.await.map_err(|_| Abandoned)
}

/// Runs blocking `work` (waiting for a durable commit, generating an RSA key) without
/// holding an async worker thread: on a multi-thread tokio worker (an engine call's fiber
/// included) the worker's other tasks move to another thread first. Anywhere else (the
/// background pool, plain threads) it just runs.
pub fn blocking<R>(work: impl FnOnce() -> R) -> R {
    let in_runtime = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if in_runtime {
        tokio::task::block_in_place(work)
    } else {
        work()
    }
}

/// Runs blocking `job` (a storage commit, say) on a background thread when the current
/// task is background work, so it never holds an API worker thread; inline otherwise.
pub async fn offload<R: Send + 'static>(
    job: impl FnOnce() -> R + Send + 'static,
) -> Result<R, Abandoned> {
    if active() { run(job).await } else { Ok(job()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nice_of_this_thread() -> i32 {
        rustix::process::getpriority_process(None).unwrap_or(i32::MIN)
    }

    #[tokio::test]
    async fn background_jobs_run_at_lower_priority_and_only_inside_a_scope() {
        let mine = nice_of_this_thread();
        assert!(!active());
        let theirs = run(nice_of_this_thread).await.unwrap_or(i32::MIN);
        assert_eq!(theirs, (mine + NICE).min(19));
        assert_eq!(
            nice_of_this_thread(),
            mine,
            "the caller's priority is untouched"
        );
        assert!(scope(async { active() }).await);
        let results: Vec<usize> = futures_join(
            (0..THREADS * 2)
                .map(|i| run(move || i * 2))
                .collect::<Vec<_>>(),
        )
        .await;
        assert_eq!(results, (0..THREADS * 2).map(|i| i * 2).collect::<Vec<_>>());
    }

    #[tokio::test]
    #[allow(clippy::panic, reason = "the test needs a job that panics")]
    async fn a_panicking_job_is_abandoned_and_the_pool_carries_on() {
        for _ in 0..THREADS + 1 {
            assert!(run(|| panic!("deliberate")).await.is_err());
        }
        let results = futures_join((0..THREADS).map(|i| run(move || i)).collect()).await;
        assert_eq!(results, (0..THREADS).collect::<Vec<_>>());
    }

    async fn futures_join<F: Future<Output = Result<usize, Abandoned>>>(
        futures: Vec<F>,
    ) -> Vec<usize> {
        let mut out = Vec::new();
        for future in futures {
            out.push(future.await.unwrap_or(usize::MAX));
        }
        out
    }
}
