//! Log control for every command, in one place: `--log-level LEVEL` (global), else `RUST_LOG`,
//! else the command's default (`receive` logs requests at `info`, every other command only
//! warnings). Logs go to stderr, without colour. Levels: off, error, warn, info, debug, trace.
//!
//! `RUST_LOG` is read as a level (`debug`), or as a comma-separated list whose last bare level
//! counts (`verbatim=trace` targets are not supported and are ignored with a warning). What
//! is logged never holds captured content, tokens or keys, at any level
//! (`cli/tests/leak_scan.rs` checks every command at `trace`).

use tracing_subscriber::filter::LevelFilter;

/// The level words, as `--log-level` takes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Level {
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl From<Level> for LevelFilter {
    fn from(level: Level) -> Self {
        match level {
            Level::Off => LevelFilter::OFF,
            Level::Error => LevelFilter::ERROR,
            Level::Warn => LevelFilter::WARN,
            Level::Info => LevelFilter::INFO,
            Level::Debug => LevelFilter::DEBUG,
            Level::Trace => LevelFilter::TRACE,
        }
    }
}

/// The level `RUST_LOG` asks for; `Err` with the reason when it cannot be read.
fn from_env(value: &str) -> Result<LevelFilter, String> {
    let bare = value.split(',').map(str::trim).rfind(|part| !part.is_empty() && !part.contains('='));
    match bare {
        Some(word) => word.parse::<LevelFilter>().map_err(|_| format!("RUST_LOG: {word:?} is not a level")),
        None => Err("RUST_LOG: only per-target directives, which are not supported; give a level".to_string()),
    }
}

/// Installs the stderr logger for this process. Call once, before the command runs.
pub fn init(flag: Option<Level>, default: LevelFilter) {
    let level = match (flag, std::env::var("RUST_LOG")) {
        (Some(level), _) => level.into(),
        (None, Ok(value)) if !value.trim().is_empty() => from_env(&value).unwrap_or_else(|reason| {
            eprintln!("warning: {reason}; logging at {default}");
            default
        }),
        _ => default,
    };
    let _ = tracing_subscriber::fmt().with_writer(std::io::stderr).with_ansi(false).with_max_level(level).try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_log_forms() {
        assert_eq!(from_env("debug"), Ok(LevelFilter::DEBUG));
        assert_eq!(from_env("TRACE"), Ok(LevelFilter::TRACE));
        assert_eq!(from_env("hyper=warn, info"), Ok(LevelFilter::INFO));
        assert!(from_env("verbatim=trace").is_err());
        assert!(from_env("loud").is_err());
    }
}
