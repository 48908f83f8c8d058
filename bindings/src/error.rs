//! The one error type of the FFI: [`VerbatimError`], an exception family in Kotlin
//! (`VerbatimException.NotConfigured`, ...) and a Swift `Error` enum. One variant per
//! [`ErrorKind`], each with a `detail` (never `message`: that clashes with Kotlin's
//! `Throwable.message`); `PolicyRejected` also carries every problem, by key. `kind()` gives the
//! kind of any variant, for code that branches on it.
//!
//! Details come from the core, which guarantees they never hold captured content, tokens or
//! keys; the FFI adds only operation names. A panic's payload is never shown (it could quote a
//! value): it becomes `Internal` with the operation's name.

use verbatim_core::error::{Error as CoreError, ErrorKind as CoreKind};
use verbatim_core::policy::{Problem, ProblemKind as CoreProblemKind};

/// What kind of failure, for code that branches on it. Mirrors the core's kinds plus
/// `Callback` (the app's own callback failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum ErrorKind {
    /// No valid policy is in force: capture fails closed.
    NotConfigured,
    /// The policy given was rejected; the one in force (if any) stays.
    PolicyRejected,
    /// An event handed to the agent is malformed.
    InvalidEvent,
    /// The queue reached `queue_max_mb`: capture fails closed, nothing stored is dropped.
    QueueFull,
    /// The device's storage is full.
    DiskFull,
    /// The local store failed.
    Storage,
    /// Stored data failed an integrity check.
    Corrupt,
    /// Sealing or opening failed.
    Crypto,
    /// A file the app pointed to (attachment, recording) could not be read.
    File,
    /// The archive could not be reached.
    Network,
    /// The archive's certificate did not validate.
    Tls,
    /// The archive's certificate did not match the policy's `tls_pins`.
    PinMismatch,
    /// The archive refused the device's credentials.
    Unauthorized,
    /// The archive refused a request as malformed or conflicting.
    Rejected,
    /// The archive holds different data for a sequence number (tampering or equivocation).
    Conflict,
    /// The archive does not accept the archive key the records are sealed to: a configuration
    /// fault (the policy's `archive_public_key`). Every record is kept.
    UnknownArchiveKey,
    /// The agent was closed.
    Closed,
    /// A bug in the agent (including a caught panic).
    Internal,
    /// A callback the app implements (network state, observer) threw or misbehaved.
    Callback,
}

impl From<CoreKind> for ErrorKind {
    fn from(k: CoreKind) -> Self {
        match k {
            CoreKind::NotConfigured => ErrorKind::NotConfigured,
            CoreKind::PolicyRejected => ErrorKind::PolicyRejected,
            CoreKind::InvalidEvent => ErrorKind::InvalidEvent,
            CoreKind::QueueFull => ErrorKind::QueueFull,
            CoreKind::DiskFull => ErrorKind::DiskFull,
            CoreKind::Storage => ErrorKind::Storage,
            CoreKind::Corrupt => ErrorKind::Corrupt,
            CoreKind::Crypto => ErrorKind::Crypto,
            CoreKind::File => ErrorKind::File,
            CoreKind::Network => ErrorKind::Network,
            CoreKind::Tls => ErrorKind::Tls,
            CoreKind::PinMismatch => ErrorKind::PinMismatch,
            CoreKind::Unauthorized => ErrorKind::Unauthorized,
            CoreKind::Rejected => ErrorKind::Rejected,
            CoreKind::Conflict => ErrorKind::Conflict,
            CoreKind::UnknownArchiveKey => ErrorKind::UnknownArchiveKey,
            CoreKind::Closed => ErrorKind::Closed,
            CoreKind::Internal => ErrorKind::Internal,
        }
    }
}

/// What is wrong with one policy key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum ProblemKind {
    /// A required key is absent or empty.
    Missing,
    /// The value has the wrong type.
    WrongType,
    /// The value has the right type but is not acceptable.
    InvalidValue,
    /// A URL that does not use https.
    InsecureUrl,
    /// Base64 that does not decode to the required 32 bytes.
    BadKeyLength,
    /// A number outside the key's range.
    OutOfRange,
    /// A key the schema does not know (a warning: it is ignored).
    UnknownKey,
    /// A required key still holds the template's example value (an error: the policy is refused).
    Placeholder,
}

impl From<CoreProblemKind> for ProblemKind {
    fn from(k: CoreProblemKind) -> Self {
        match k {
            CoreProblemKind::Missing => ProblemKind::Missing,
            CoreProblemKind::WrongType => ProblemKind::WrongType,
            CoreProblemKind::InvalidValue => ProblemKind::InvalidValue,
            CoreProblemKind::InsecureUrl => ProblemKind::InsecureUrl,
            CoreProblemKind::BadKeyLength => ProblemKind::BadKeyLength,
            CoreProblemKind::OutOfRange => ProblemKind::OutOfRange,
            CoreProblemKind::UnknownKey => ProblemKind::UnknownKey,
            CoreProblemKind::Placeholder => ProblemKind::Placeholder,
        }
    }
}

/// One problem with one policy key. `detail` never holds a secret's value.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct PolicyProblem {
    /// The key (`(root)` when the tree is not a dictionary).
    pub key: String,
    pub kind: ProblemKind,
    pub detail: String,
}

impl From<&Problem> for PolicyProblem {
    fn from(p: &Problem) -> Self {
        PolicyProblem { key: p.key.clone(), kind: p.kind.into(), detail: p.detail.clone() }
    }
}

/// The error of every fallible call. One variant per [`ErrorKind`].
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Error)]
pub enum VerbatimError {
    NotConfigured {
        detail: String,
    },
    /// Every problem of the rejected policy, by key, in schema order; the policy in force stays.
    PolicyRejected {
        detail: String,
        problems: Vec<PolicyProblem>,
    },
    InvalidEvent {
        detail: String,
    },
    QueueFull {
        detail: String,
    },
    DiskFull {
        detail: String,
    },
    Storage {
        detail: String,
    },
    Corrupt {
        detail: String,
    },
    Crypto {
        detail: String,
    },
    File {
        detail: String,
    },
    Network {
        detail: String,
    },
    Tls {
        detail: String,
    },
    PinMismatch {
        detail: String,
    },
    Unauthorized {
        detail: String,
    },
    Rejected {
        detail: String,
    },
    Conflict {
        detail: String,
    },
    UnknownArchiveKey {
        detail: String,
    },
    Closed {
        detail: String,
    },
    Internal {
        detail: String,
    },
    Callback {
        detail: String,
    },
}

impl VerbatimError {
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        match kind {
            ErrorKind::NotConfigured => VerbatimError::NotConfigured { detail },
            ErrorKind::PolicyRejected => VerbatimError::PolicyRejected { detail, problems: Vec::new() },
            ErrorKind::InvalidEvent => VerbatimError::InvalidEvent { detail },
            ErrorKind::QueueFull => VerbatimError::QueueFull { detail },
            ErrorKind::DiskFull => VerbatimError::DiskFull { detail },
            ErrorKind::Storage => VerbatimError::Storage { detail },
            ErrorKind::Corrupt => VerbatimError::Corrupt { detail },
            ErrorKind::Crypto => VerbatimError::Crypto { detail },
            ErrorKind::File => VerbatimError::File { detail },
            ErrorKind::Network => VerbatimError::Network { detail },
            ErrorKind::Tls => VerbatimError::Tls { detail },
            ErrorKind::PinMismatch => VerbatimError::PinMismatch { detail },
            ErrorKind::Unauthorized => VerbatimError::Unauthorized { detail },
            ErrorKind::Rejected => VerbatimError::Rejected { detail },
            ErrorKind::Conflict => VerbatimError::Conflict { detail },
            ErrorKind::UnknownArchiveKey => VerbatimError::UnknownArchiveKey { detail },
            ErrorKind::Closed => VerbatimError::Closed { detail },
            ErrorKind::Internal => VerbatimError::Internal { detail },
            ErrorKind::Callback => VerbatimError::Callback { detail },
        }
    }

    pub(crate) fn internal(detail: impl Into<String>) -> Self {
        VerbatimError::Internal { detail: detail.into() }
    }

    pub(crate) fn panicked(operation: &str) -> Self {
        VerbatimError::internal(format!("{operation}: a panic was caught (a bug in the agent; nothing was acknowledged)"))
    }

    pub fn detail(&self) -> &str {
        match self {
            VerbatimError::NotConfigured { detail }
            | VerbatimError::PolicyRejected { detail, .. }
            | VerbatimError::InvalidEvent { detail }
            | VerbatimError::QueueFull { detail }
            | VerbatimError::DiskFull { detail }
            | VerbatimError::Storage { detail }
            | VerbatimError::Corrupt { detail }
            | VerbatimError::Crypto { detail }
            | VerbatimError::File { detail }
            | VerbatimError::Network { detail }
            | VerbatimError::Tls { detail }
            | VerbatimError::PinMismatch { detail }
            | VerbatimError::Unauthorized { detail }
            | VerbatimError::Rejected { detail }
            | VerbatimError::Conflict { detail }
            | VerbatimError::UnknownArchiveKey { detail }
            | VerbatimError::Closed { detail }
            | VerbatimError::Internal { detail }
            | VerbatimError::Callback { detail } => detail,
        }
    }

    pub fn error_kind(&self) -> ErrorKind {
        match self {
            VerbatimError::NotConfigured { .. } => ErrorKind::NotConfigured,
            VerbatimError::PolicyRejected { .. } => ErrorKind::PolicyRejected,
            VerbatimError::InvalidEvent { .. } => ErrorKind::InvalidEvent,
            VerbatimError::QueueFull { .. } => ErrorKind::QueueFull,
            VerbatimError::DiskFull { .. } => ErrorKind::DiskFull,
            VerbatimError::Storage { .. } => ErrorKind::Storage,
            VerbatimError::Corrupt { .. } => ErrorKind::Corrupt,
            VerbatimError::Crypto { .. } => ErrorKind::Crypto,
            VerbatimError::File { .. } => ErrorKind::File,
            VerbatimError::Network { .. } => ErrorKind::Network,
            VerbatimError::Tls { .. } => ErrorKind::Tls,
            VerbatimError::PinMismatch { .. } => ErrorKind::PinMismatch,
            VerbatimError::Unauthorized { .. } => ErrorKind::Unauthorized,
            VerbatimError::Rejected { .. } => ErrorKind::Rejected,
            VerbatimError::Conflict { .. } => ErrorKind::Conflict,
            VerbatimError::UnknownArchiveKey { .. } => ErrorKind::UnknownArchiveKey,
            VerbatimError::Closed { .. } => ErrorKind::Closed,
            VerbatimError::Internal { .. } => ErrorKind::Internal,
            VerbatimError::Callback { .. } => ErrorKind::Callback,
        }
    }
}

#[uniffi::export]
impl VerbatimError {
    /// The kind of this error, whatever the variant.
    pub fn kind(&self) -> ErrorKind {
        self.error_kind()
    }
}

impl std::fmt::Display for VerbatimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.error_kind(), self.detail())
    }
}

impl std::error::Error for VerbatimError {}

impl From<CoreError> for VerbatimError {
    fn from(e: CoreError) -> Self {
        match e.kind {
            CoreKind::PolicyRejected => {
                VerbatimError::PolicyRejected { problems: e.problems.iter().map(PolicyProblem::from).collect(), detail: e.detail }
            }
            kind => VerbatimError::new(kind.into(), e.detail),
        }
    }
}

/// A foreign callback threw something other than a `VerbatimException` (Kotlin) / `VerbatimError`
/// (Swift), or broke the FFI contract. UniFFI hands us this instead of panicking because every
/// callback method returns `Result<_, VerbatimError>`.
impl From<uniffi::UnexpectedUniFFICallbackError> for VerbatimError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        // The reason is the foreign exception's toString(): the app's text, not ours. Keep it
        // short; it is the app's own message about its own callback.
        let mut reason = e.reason;
        if reason.len() > 200 {
            let mut cut = 200;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
            reason.push('…');
        }
        VerbatimError::Callback { detail: format!("the app's callback threw: {reason}") }
    }
}

pub type Result<T, E = VerbatimError> = std::result::Result<T, E>;
