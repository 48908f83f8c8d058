//! The one tokio runtime behind every async export, created on first use.
//!
//! Why our own runtime, and not UniFFI's `async_runtime = "tokio"`: that attribute only enters
//! a runtime context while the foreign executor polls (and needs a runtime somewhere anyway);
//! the uploader's reqwest client and timers, the blocking open and the queue reads need a
//! runtime that outlives any one call. So every async export spawns its work here and awaits
//! the `JoinHandle`, which any executor can poll (Kotlin coroutines, Swift tasks): the foreign
//! side never blocks, and a panic in the task comes back as a `JoinError` we turn into
//! `VerbatimError::Internal`.
//!
//! Sized for a phone: 2 worker threads (network and writer hand-offs; the durable work happens
//! on the core's own writer thread), at most 4 blocking threads (open, queue reads), 512 KiB
//! stacks, timers and the I/O driver only.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::OnceLock;

use tokio::runtime::{Builder, Runtime};

use crate::error::{Result, VerbatimError};

const WORKER_THREADS: usize = 2;
const MAX_BLOCKING_THREADS: usize = 4;
const THREAD_STACK_BYTES: usize = 512 * 1024;

static RUNTIME: OnceLock<std::result::Result<Runtime, String>> = OnceLock::new();

pub(crate) fn runtime() -> Result<&'static Runtime> {
    RUNTIME
        .get_or_init(|| {
            Builder::new_multi_thread()
                .worker_threads(WORKER_THREADS)
                .max_blocking_threads(MAX_BLOCKING_THREADS)
                .thread_stack_size(THREAD_STACK_BYTES)
                .thread_name("verbatim")
                .enable_time()
                .enable_io()
                .build()
                .map_err(|e| format!("cannot start the agent's runtime: {e}"))
        })
        .as_ref()
        .map_err(|e| VerbatimError::internal(e.clone()))
}

/// Cancels the spawned task when the caller's future is dropped (a cancelled coroutine).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What happens to the work when the caller stops waiting (its coroutine or task is cancelled).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnCancel {
    /// Finish anyway (capture, policy, close): the writer completes what it started, so an event
    /// is either durable or not; the caller only loses the answer.
    Finish,
    /// Stop (upload): safe at any await point, nothing is deleted before the archive acknowledged.
    Abort,
}

/// Runs `work` on the agent runtime and waits for it without blocking the caller's thread.
/// A panic inside `work` becomes `VerbatimError::Internal` naming `operation`.
pub(crate) async fn spawn<T, F>(operation: &'static str, on_cancel: OnCancel, work: F) -> Result<T>
where
    F: Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let handle = runtime()?.spawn(work);
    let _guard = (on_cancel == OnCancel::Abort).then(|| AbortOnDrop(handle.abort_handle()));
    match handle.await {
        Ok(result) => result,
        Err(e) if e.is_panic() => {
            tracing::error!(operation, "panic caught");
            Err(VerbatimError::panicked(operation))
        }
        Err(_) => Err(VerbatimError::internal(format!("{operation}: cancelled"))),
    }
}

/// Runs blocking `work` on the runtime's blocking pool (never on a worker, never on the
/// caller's thread).
pub(crate) async fn spawn_blocking<T, F>(operation: &'static str, work: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    match runtime()?.spawn_blocking(work).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => {
            tracing::error!(operation, "panic caught");
            Err(VerbatimError::panicked(operation))
        }
        Err(_) => Err(VerbatimError::internal(format!("{operation}: cancelled"))),
    }
}

/// Runs a synchronous export, turning a panic into `VerbatimError::Internal` (UniFFI would catch
/// it too, but as an untyped `InternalException`).
pub(crate) fn guard<T>(operation: &'static str, work: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(AssertUnwindSafe(work)) {
        Ok(result) => result,
        Err(_) => {
            tracing::error!(operation, "panic caught");
            Err(VerbatimError::panicked(operation))
        }
    }
}
