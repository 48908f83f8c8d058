//! The receiver's error type. Like the core's, a detail names what went wrong (a file, a
//! sequence number, a line of the token file) and never carries a token, a key or content.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory operation failed.
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    /// The archive database failed.
    #[error("archive store: {0}")]
    Store(String),
    /// Another receiver holds this data directory.
    #[error("data directory {0} is in use by another receiver")]
    Locked(String),
    /// Certificates or TLS configuration.
    #[error("tls: {0}")]
    Tls(String),
    /// The archive key pair.
    #[error("archive key: {0}")]
    Key(String),
    /// The device token file.
    #[error("device tokens: {0}")]
    Tokens(String),
    /// A configuration value the caller gave.
    #[error("configuration: {0}")]
    Config(String),
    /// The key vault (erasure, retention, legal holds, key retirement).
    #[error("key vault: {0}")]
    Vault(String),
    /// A request the vault's rules forbid (a legal hold, a key not yet safe to retire);
    /// nothing was changed.
    #[error("refused: {0}")]
    Refused(String),
    /// Export could not continue.
    #[error("export: {0}")]
    Export(String),
    /// An error from the core (sealing, opening, record format).
    #[error("{0}")]
    Core(#[from] verbatim_core::Error),
    /// The writer thread stopped (the receiver is shutting down or crashed).
    #[error("the archive store is closed")]
    Closed,
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io { what: what.into(), source }
    }

    pub(crate) fn io_path(action: &str, path: &Path, source: std::io::Error) -> Error {
        Error::Io { what: format!("{action} {}", path.display()), source }
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        // SQLite messages describe statements, never bound values.
        Error::Store(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
