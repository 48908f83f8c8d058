//! The records and enums of the FFI. The core's own types cross as they are (its `uniffi`
//! feature derives them; names the app sees are set there, e.g. `model::Message` is
//! `MessageEvent`): they are re-exported here under those names for this crate's code. Only
//! what has a shape of its own at the FFI is defined here: the policy tree as the platforms hand
//! it over, and the notices pushed to the app's observer.

use std::collections::{BTreeMap, HashMap};

pub use verbatim_core::agent::{CaptureOutcome, Status as AgentStatus, UnenrollReport};
pub use verbatim_core::evidence::Counters as CaptureCounters;
pub use verbatim_core::model::{
    Attachment as AttachmentEvent, Call as CallEvent, CallOutcome, Channel, Direction, Edit as EditEvent, EventMeta,
    Message as MessageEvent, Reaction as ReactionEvent, Unsend as UnsendEvent,
};
use verbatim_core::policy::Value;
pub use verbatim_core::policy::{LogLevel, RequiredNetwork, UploadSchedule};
pub use verbatim_core::upload::{NetworkState, StopReason, UploadReport, UploadStatus as UploadState};

use crate::error::{ErrorKind, PolicyProblem};

// ------------------------------------------------------------------------------------ policy

/// A managed-configuration value: the neutral tree an Android restrictions `Bundle` or an iOS
/// managed configuration dictionary is turned into. Recursive: lists and dictionaries hold
/// values. (Variant names avoid `List`/`Map`/`String`, which the generated Kotlin uses
/// unqualified.) A real number (plist `<real>`, a Kotlin `Double`) is passed as `Real`,
/// unchanged: the core alone decides what it may stand for.
#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum PolicyValue {
    Text { value: String },
    Integer { value: i64 },
    Real { value: f64 },
    Bool { value: bool },
    Items { items: Vec<PolicyValue> },
    Dict { entries: HashMap<String, PolicyValue> },
}

impl From<PolicyValue> for Value {
    fn from(v: PolicyValue) -> Self {
        match v {
            PolicyValue::Text { value } => Value::String(value),
            PolicyValue::Integer { value } => Value::Integer(value),
            PolicyValue::Real { value } => Value::Real(value),
            PolicyValue::Bool { value } => Value::Bool(value),
            PolicyValue::Items { items } => Value::List(items.into_iter().map(Value::from).collect()),
            PolicyValue::Dict { entries } => {
                Value::Dict(entries.into_iter().map(|(k, v)| (k, Value::from(v))).collect::<BTreeMap<_, _>>())
            }
        }
    }
}

// ------------------------------------------------------------------------------------ notices

/// "What changed", pushed to the app's `AgentObserver` so it need not poll `status()`.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum AgentNotice {
    /// A new policy is in force (not sent when the same policy is pushed again).
    PolicyApplied { policy_version: String, fingerprint: String, warnings: Vec<PolicyProblem> },
    /// A pushed policy was refused; the one in force (if any) stays.
    PolicyRejected { problems: Vec<PolicyProblem> },
    /// The queue crossed the policy's alert threshold (uploads are not keeping up).
    QueueAlert { used_bytes: u64, max_bytes: u64 },
    /// The queue is full: capture fails closed until an upload frees space.
    QueueFull { used_bytes: u64, max_bytes: u64 },
    /// Capture is accepted again after the queue was full.
    QueueRecovered { used_bytes: u64, max_bytes: u64 },
    /// Upload stopped on a failure that needs a person or a later retry (credentials, pins,
    /// TLS trust, a conflict).
    UploadFailed { error_kind: ErrorKind, detail: String },
}
