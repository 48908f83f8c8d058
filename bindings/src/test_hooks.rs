//! Test-only exports (cargo feature `test-hooks`; the Kotlin JVM tests build with it, releases
//! never do). They prove that a panic anywhere behind the boundary reaches the app as a typed
//! error and never crashes the process.

use crate::error::Result;
use crate::runtime::{self, OnCancel};
use crate::types::LogLevel;

/// A payload that must never reach the app: error details name the operation, not the panic.
const PANIC_PAYLOAD: &str = "deliberate test panic: PANIC-PAYLOAD-MUST-NOT-LEAK";

/// Panics inside a guarded synchronous export: `VerbatimException.Internal`.
#[uniffi::export]
pub fn debug_panic() -> Result<()> {
    runtime::guard("debug_panic", || panic!("{PANIC_PAYLOAD}"))
}

/// Panics inside an async export's task: `VerbatimException.Internal`.
#[uniffi::export]
pub async fn debug_panic_async() -> Result<()> {
    runtime::spawn("debug_panic_async", OnCancel::Finish, async {
        if PANIC_PAYLOAD.is_empty() {
            return Ok(());
        }
        panic!("{PANIC_PAYLOAD}")
    })
    .await
}

/// Panics without our guard: what UniFFI 0.32's scaffolding does on its own (it catches the
/// panic and the Kotlin side throws its generic `InternalException`; the JVM survives).
#[uniffi::export]
pub fn debug_panic_unguarded() {
    panic!("{PANIC_PAYLOAD}")
}

/// Emits one record at `level` through the agent's log path (target `verbatim_ffi::test_hooks`).
#[uniffi::export]
pub fn debug_log(level: LogLevel, text: String) {
    match level {
        LogLevel::Trace => tracing::trace!(text = text.as_str(), "debug_log"),
        LogLevel::Debug => tracing::debug!(text = text.as_str(), "debug_log"),
        LogLevel::Info => tracing::info!(text = text.as_str(), "debug_log"),
        LogLevel::Warn => tracing::warn!(text = text.as_str(), "debug_log"),
        LogLevel::Error | LogLevel::Off => tracing::error!(text = text.as_str(), "debug_log"),
    }
}
