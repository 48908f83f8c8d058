//! verbatim-ffi: the UniFFI surface of the Verbatim agent for Kotlin (Android) and Swift (iOS).
//!
//! One object, [`Agent`], over `verbatim_core::Agent`; the core's own records and enums, which
//! cross as they are (its `uniffi` feature derives them: a second UniFFI component in this
//! library, generated as `com.verbatim.ffi.core` in Kotlin and into the same Swift module), plus
//! the few types whose FFI shape differs ([`types`]); one error family, [`VerbatimError`];
//! three traits the app implements ([`NetworkStateProvider`], [`AgentObserver`], [`LogSink`]).
//! No decision is taken here: scope, validation, sealing, queueing and upload policy are all
//! the core's.
//!
//! Threading: every call that touches disk or network is `async` (Kotlin `suspend`, Swift
//! `async`) and runs on the agent's own small tokio runtime ([`runtime`]); `status()` is the
//! one synchronous call, because it reads memory only. Nothing panics across the boundary: async
//! work runs in tokio tasks (a panic becomes a `JoinError`), synchronous exports run under
//! `catch_unwind`, and calls into foreign code are guarded both ways (a foreign exception
//! arrives as `Err(VerbatimError::Callback)`, a panic on our side of the call is caught).
//! Either way the app gets `VerbatimException.Internal` / `.Callback`, never a crash.

uniffi::setup_scaffolding!();

mod agent;
#[cfg(target_os = "android")]
mod android;
mod error;
mod feedback;
mod logging;
mod runtime;
mod telephony;
#[cfg(feature = "test-hooks")]
mod test_hooks;
#[cfg(test)]
mod tests;
mod types;

pub use agent::{Agent, AgentObserver, NetworkStateProvider, PolicyCheck, agent_version, check_policy};
pub use error::{ErrorKind, PolicyProblem, ProblemKind, VerbatimError};
pub use feedback::{FeedbackItem, FeedbackSeverity};
pub use logging::{LogSink, set_log_sink};
pub use telephony::TelephonyScan;
pub use types::*;
