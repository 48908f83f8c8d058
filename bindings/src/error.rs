//! The one error type of the FFI: [`VerbatimError`], an exception family in Kotlin
//! (`VerbatimException.NotConfigured`, ...) and a Swift `Error` enum. One variant per
//! [`ErrorKind`], each with a `detail` (never `message`: that clashes with Kotlin's
//! `Throwable.message`); `PolicyRejected` also carries every problem, by key. `kind()` gives the
//! kind of any variant, for code that branches on it.
//!
//! Details come from the core, which guarantees they never hold captured content, tokens or
//! keys; the FFI adds only operation names. A panic's payload is never shown (it could quote a
//! value): it becomes `Internal` with the operation's name.

pub use verbatim_core::error::ErrorKind;
use verbatim_core::error::{Error as CoreError, ErrorKind as CoreKind};
pub use verbatim_core::policy::{Problem as PolicyProblem, ProblemKind};

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
            CoreKind::PolicyRejected => VerbatimError::PolicyRejected { problems: e.problems, detail: e.detail },
            kind => VerbatimError::new(kind, e.detail),
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
