//! The app's log sink (logcat, os_log) behind a tiny `tracing` subscriber written here.
//!
//! - Filtering happens in Rust, before anything is formatted or crosses the FFI: a record below
//!   the level of the policy in force (`log_level`, default `info`) costs one comparison of a
//!   cached maximum level at the call site, nothing more.
//! - Only records whose target starts with `verbatim` (this crate and verbatim-core) are
//!   forwarded. Those crates log metadata only (kinds, sequence numbers, counts, key names, policy
//!   versions): never captured content, never tokens or keys. Third-party crates (reqwest, hyper,
//!   rustls) are not audited for that and never reach the sink.
//! - Spans are ignored (no allocation per span).
//! - A sink that throws or panics loses that record, nothing else; a sink that logs through the
//!   agent again (re-entrancy) has the nested records dropped.
//! - Process-wide: one sink and one level per process (the level follows the most recently
//!   applied policy of any agent; apps have one agent).

use std::cell::Cell;
use std::fmt::Write as _;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};

use crate::error::VerbatimError;
use crate::types::LogLevel;

/// Receives the agent's log records at or above the policy's `log_level`. Called on the agent's
/// threads: return quickly (hand the record to logcat / os_log, nothing slower).
#[uniffi::export(with_foreign)]
pub trait LogSink: Send + Sync {
    /// `target` is the Rust module (`verbatim_ffi::agent`, ...); `message` is preformatted
    /// metadata, `key=value` fields appended.
    fn log(&self, level: LogLevel, target: String, message: String) -> Result<(), VerbatimError>;
}

static SINK: RwLock<Option<Arc<dyn LogSink>>> = RwLock::new(None);
static HAS_SINK: AtomicBool = AtomicBool::new(false);
/// The policy's level as `LogLevel as u8`. Default: `Info` (the schema's default).
static LEVEL: AtomicU8 = AtomicU8::new(LogLevel::Info as u8);
static INSTALLED: OnceLock<bool> = OnceLock::new();

thread_local! {
    static IN_SINK: Cell<bool> = const { Cell::new(false) };
}

fn level_from_u8(v: u8) -> LogLevel {
    match v {
        0 => LogLevel::Trace,
        1 => LogLevel::Debug,
        2 => LogLevel::Info,
        3 => LogLevel::Warn,
        4 => LogLevel::Error,
        _ => LogLevel::Off,
    }
}

fn filter_of(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::Trace => LevelFilter::TRACE,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Off => LevelFilter::OFF,
    }
}

fn current_filter() -> LevelFilter {
    if !HAS_SINK.load(Ordering::Acquire) {
        return LevelFilter::OFF;
    }
    filter_of(level_from_u8(LEVEL.load(Ordering::Acquire)))
}

fn ours(target: &str) -> bool {
    target.starts_with("verbatim")
}

fn install() -> bool {
    *INSTALLED.get_or_init(|| tracing::subscriber::set_global_default(SinkSubscriber).is_ok())
}

/// Sets (or with `None` removes) the process's log sink. Records at or above the level of the
/// policy in force reach it; before any policy, `info` and above.
#[uniffi::export]
pub fn set_log_sink(sink: Option<Arc<dyn LogSink>>) {
    let installed = install();
    let has = sink.is_some();
    *SINK.write().unwrap_or_else(|p| p.into_inner()) = sink;
    HAS_SINK.store(has && installed, Ordering::Release);
    tracing::callsite::rebuild_interest_cache();
}

/// Follows the policy in force (called when a policy is applied or restored).
pub(crate) fn set_level(level: LogLevel) {
    if LEVEL.swap(level as u8, Ordering::AcqRel) != level as u8 {
        tracing::callsite::rebuild_interest_cache();
    }
}

struct SinkSubscriber;

/// Formats an event's fields: the `message` first, then ` key=value` for the others.
#[derive(Default)]
struct Text {
    message: String,
    fields: String,
}

impl Visit for Text {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={}", field.name(), value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={:?}", field.name(), value);
        }
    }
}

fn to_level(level: &Level) -> LogLevel {
    match *level {
        Level::TRACE => LogLevel::Trace,
        Level::DEBUG => LogLevel::Debug,
        Level::INFO => LogLevel::Info,
        Level::WARN => LogLevel::Warn,
        _ => LogLevel::Error,
    }
}

impl Subscriber for SinkSubscriber {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if meta.is_span() || !ours(meta.target()) {
            Interest::never()
        } else {
            // The level moves with the policy: ask `enabled` each time (after the cheap global
            // max-level check, which `max_level_hint` keeps exact).
            Interest::sometimes()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        meta.is_event() && ours(meta.target()) && *meta.level() <= current_filter()
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(current_filter())
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        if IN_SINK.with(|f| f.replace(true)) {
            return; // a record emitted while the sink runs: dropped, never recursive
        }
        let sink = SINK.read().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(sink) = sink {
            let meta = event.metadata();
            let mut text = Text::default();
            event.record(&mut text);
            text.message.push_str(&text.fields);
            let level = to_level(meta.level());
            let target = meta.target().to_string();
            // A Kotlin exception arrives as Err (VerbatimError::Callback); a panic on our side of
            // the call is caught. Either way only this record is lost.
            let _ = std::panic::catch_unwind(AssertUnwindSafe(|| sink.log(level, target, text.message)));
        }
        IN_SINK.with(|f| f.set(false));
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}
