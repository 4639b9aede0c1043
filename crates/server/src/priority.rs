//! Serving first: storage work runs at a lower CPU priority than the async workers.
//!
//! Online reads are answered from memory on the async workers, in microseconds. Storage work
//! (appends and their commits, DuckDB's checkpoints, scans, training joins) runs on the
//! blocking pool and on the backends' own threads, and can keep a core busy for seconds. On a
//! machine with few cores, a full-speed ingest then makes reads wait for a core. So every
//! thread that does storage work lowers its own priority (`nice` +10, Linux) before its first
//! job: when both want a core, the scheduler gives the reads most of it; when reads are idle,
//! storage has all of it. The backends' threads (DuckDB's workers, the Parquet and Delta
//! maintenance threads) are started by the store's opening, on a lowered thread, and inherit
//! its priority.

use std::cell::Cell;

/// The `nice` increment of storage threads: a weight of about a tenth of a default thread's.
const STORAGE_NICENESS: i32 = 10;

thread_local! {
    static LOWERED: Cell<bool> = const { Cell::new(false) };
}

/// Runs `work` on the blocking pool, at the storage priority.
pub(crate) fn spawn_storage_work<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> tokio::task::JoinHandle<T> {
    tokio::task::spawn_blocking(move || {
        lower_this_thread();
        work()
    })
}

/// Lowers the calling thread's priority to the storage priority, once per thread (it cannot be
/// raised again without privileges, and need not be: the blocking pool only does storage
/// work). Where this is not possible, storage work runs at the default priority.
fn lower_this_thread() {
    if LOWERED.get() {
        return;
    }
    LOWERED.set(true);
    lower();
}

/// On Linux `setpriority(PRIO_PROCESS, 0, ..)` sets the calling thread's niceness only.
#[cfg(target_os = "linux")]
fn lower() {
    let current = rustix::process::getpriority_process(None).unwrap_or(0);
    if let Err(e) = rustix::process::setpriority_process(None, current + STORAGE_NICENESS) {
        tracing::debug!(error = %e, "storage thread left at the default CPU priority");
    }
}

/// Elsewhere the same call would lower the whole process, reads included.
#[cfg(not(target_os = "linux"))]
fn lower() {}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn storage_work_runs_below_the_async_workers() {
        let reader = rustix::process::getpriority_process(None).unwrap();
        let (first, second) = (
            spawn_storage_work(|| rustix::process::getpriority_process(None).unwrap())
                .await
                .unwrap(),
            spawn_storage_work(|| rustix::process::getpriority_process(None).unwrap())
                .await
                .unwrap(),
        );
        assert_eq!(first, (reader + STORAGE_NICENESS).min(19));
        assert_eq!(second, first, "lowered once per thread");
        assert_eq!(rustix::process::getpriority_process(None).unwrap(), reader);
    }
}
