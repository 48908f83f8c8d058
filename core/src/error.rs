//! One flat error type for the whole core: a kind a program can branch on and a detail a person
//! can read. Details name what was wrong (a key, a field, a sequence number) and never carry
//! captured content, tokens or keys.

use std::fmt;

/// What kind of failure, for code that branches on it (the FFI's exception family has one
/// variant per kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Enum))]
pub enum ErrorKind {
    /// No valid policy is in force: capture fails closed.
    NotConfigured,
    /// The policy given was rejected; the one in force (if any) stays.
    PolicyRejected,
    /// An event handed to the agent is malformed (empty id, no parties, time far in the future).
    InvalidEvent,
    /// The queue reached `queue_max_mb`: capture fails closed, nothing stored is dropped.
    QueueFull,
    /// The device's storage is full.
    DiskFull,
    /// The local store failed (SQLite, file system).
    Storage,
    /// Stored data failed an integrity check (chain, seal, row format).
    Corrupt,
    /// Sealing or opening failed.
    Crypto,
    /// A file the app pointed to (attachment, recording) could not be read.
    File,
    /// The archive could not be reached or the connection failed.
    Network,
    /// The archive's certificate did not validate.
    Tls,
    /// The archive's certificate did not match the policy's `tls_pins`.
    PinMismatch,
    /// The archive refused the device's credentials (401/403).
    Unauthorized,
    /// The archive refused a request (a malformed one, a record too large for it, an answer
    /// that contradicts the protocol), or the agent refused an argument that is out of range.
    Rejected,
    /// The archive reported it held different data for a sequence (tampering or equivocation).
    Conflict,
    /// The archive does not accept the archive key the records are sealed to (a wrong
    /// `archive_public_key` in the policy, or a key the archive does not hold): a configuration
    /// fault. Every record is kept; uploads wait until the archive accepts the key.
    UnknownArchiveKey,
    /// The agent was closed.
    Closed,
    /// A bug: an invariant of ours did not hold (including a caught panic).
    Internal,
    /// Code the host app supplies (a callback over the FFI: network state, observer) threw or
    /// misbehaved.
    Callback,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotConfigured => "not_configured",
            ErrorKind::PolicyRejected => "policy_rejected",
            ErrorKind::InvalidEvent => "invalid_event",
            ErrorKind::QueueFull => "queue_full",
            ErrorKind::DiskFull => "disk_full",
            ErrorKind::Storage => "storage",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::Crypto => "crypto",
            ErrorKind::File => "file",
            ErrorKind::Network => "network",
            ErrorKind::Tls => "tls",
            ErrorKind::PinMismatch => "pin_mismatch",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Rejected => "rejected",
            ErrorKind::Conflict => "conflict",
            ErrorKind::UnknownArchiveKey => "unknown_archive_key",
            ErrorKind::Closed => "closed",
            ErrorKind::Internal => "internal",
            ErrorKind::Callback => "callback",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub detail: String,
    /// With `PolicyRejected`: every problem, by key, in schema order (empty otherwise), so no
    /// caller has to parse `detail` to learn which keys were wrong.
    pub problems: Vec<crate::policy::Problem>,
}

impl Error {
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Error { kind, detail: detail.into(), problems: Vec::new() }
    }

    /// A rejected policy: `PolicyRejected` with its problems (the detail lists them).
    pub fn policy_rejected(problems: Vec<crate::policy::Problem>) -> Self {
        let detail = problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n");
        Error { kind: ErrorKind::PolicyRejected, detail, problems }
    }
}

/// The kind's name (`ErrorKind::as_str`), as reports and status serialise it.
impl serde::Serialize for ErrorKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.detail)
    }
}

impl std::error::Error for Error {}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ffi::ErrorCode;
        // SQLite errors describe the statement, never bound values, so the text is safe to keep.
        let kind = match e.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => ErrorKind::DiskFull,
            Some(ErrorCode::DatabaseCorrupt) | Some(ErrorCode::NotADatabase) => ErrorKind::Corrupt,
            _ => ErrorKind::Storage,
        };
        Error::new(kind, format!("local store: {e}"))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        let kind = if e.kind() == std::io::ErrorKind::StorageFull { ErrorKind::DiskFull } else { ErrorKind::Storage };
        Error::new(kind, format!("file system: {e}"))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
