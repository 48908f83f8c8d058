//! The records and enums that cross the FFI, mirroring the core's model, and their conversions.
//! Only conversions live here; what the MDM feedback says is decided in `feedback.rs`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use verbatim_core::agent::{CaptureOutcome as CoreOutcome, Status as CoreStatus};
use verbatim_core::model as core_model;
use verbatim_core::policy::{LogLevel as CoreLogLevel, Policy, UploadNetwork, Value};
use verbatim_core::upload::{NetworkState as CoreNetwork, StopReason as CoreStop, UploadReport as CoreReport};

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

/// Log verbosity, as the policy's `log_level` sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, uniffi::Enum)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Off,
}

impl From<CoreLogLevel> for LogLevel {
    fn from(l: CoreLogLevel) -> Self {
        match l {
            CoreLogLevel::Trace => LogLevel::Trace,
            CoreLogLevel::Debug => LogLevel::Debug,
            CoreLogLevel::Info => LogLevel::Info,
            CoreLogLevel::Warn => LogLevel::Warn,
            CoreLogLevel::Error => LogLevel::Error,
            CoreLogLevel::Off => LogLevel::Off,
        }
    }
}

/// Which network the platform scheduler must wait for before running an upload, per policy:
/// Android `JobInfo.NETWORK_TYPE_UNMETERED` / `_NOT_ROAMING` / `_ANY`; iOS
/// `BGProcessingTaskRequest.requiresNetworkConnectivity` plus a check of `NWPath.isExpensive`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum RequiredNetwork {
    Unmetered,
    NotRoaming,
    Any,
}

/// What the platform's upload scheduler needs from the policy in force.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct UploadSchedule {
    pub required_network: RequiredNetwork,
    pub interval_minutes: u32,
}

pub(crate) fn schedule_for(p: &Policy) -> UploadSchedule {
    let required_network = match (p.upload_network, p.upload_allow_roaming) {
        (UploadNetwork::Unmetered, _) => RequiredNetwork::Unmetered,
        (UploadNetwork::Any, false) => RequiredNetwork::NotRoaming,
        (UploadNetwork::Any, true) => RequiredNetwork::Any,
    };
    UploadSchedule { required_network, interval_minutes: p.upload_interval_minutes }
}

// ------------------------------------------------------------------------------------ events

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum Channel {
    Sms,
    Mms,
    Rcs,
    Imessage,
    Whatsapp,
    Wechat,
    Signal,
    Telegram,
    Line,
    Voice,
}

impl From<Channel> for core_model::Channel {
    fn from(c: Channel) -> Self {
        match c {
            Channel::Sms => core_model::Channel::Sms,
            Channel::Mms => core_model::Channel::Mms,
            Channel::Rcs => core_model::Channel::Rcs,
            Channel::Imessage => core_model::Channel::Imessage,
            Channel::Whatsapp => core_model::Channel::Whatsapp,
            Channel::Wechat => core_model::Channel::Wechat,
            Channel::Signal => core_model::Channel::Signal,
            Channel::Telegram => core_model::Channel::Telegram,
            Channel::Line => core_model::Channel::Line,
            Channel::Voice => core_model::Channel::Voice,
        }
    }
}

impl From<core_model::Channel> for Channel {
    fn from(c: core_model::Channel) -> Self {
        match c {
            core_model::Channel::Sms => Channel::Sms,
            core_model::Channel::Mms => Channel::Mms,
            core_model::Channel::Rcs => Channel::Rcs,
            core_model::Channel::Imessage => Channel::Imessage,
            core_model::Channel::Whatsapp => Channel::Whatsapp,
            core_model::Channel::Wechat => Channel::Wechat,
            core_model::Channel::Signal => Channel::Signal,
            core_model::Channel::Telegram => Channel::Telegram,
            core_model::Channel::Line => Channel::Line,
            core_model::Channel::Voice => Channel::Voice,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum Direction {
    Inbound,
    Outbound,
}

impl From<Direction> for core_model::Direction {
    fn from(d: Direction) -> Self {
        match d {
            Direction::Inbound => core_model::Direction::Inbound,
            Direction::Outbound => core_model::Direction::Outbound,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum CallOutcome {
    Answered,
    Missed,
    Declined,
    Failed,
    Voicemail,
}

impl From<CallOutcome> for core_model::CallOutcome {
    fn from(o: CallOutcome) -> Self {
        match o {
            CallOutcome::Answered => core_model::CallOutcome::Answered,
            CallOutcome::Missed => core_model::CallOutcome::Missed,
            CallOutcome::Declined => core_model::CallOutcome::Declined,
            CallOutcome::Failed => core_model::CallOutcome::Failed,
            CallOutcome::Voicemail => core_model::CallOutcome::Voicemail,
        }
    }
}

/// What every event carries.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct EventMeta {
    pub channel: Channel,
    /// The employee's own number or handle the event happened on; only the policy's
    /// `business_lines` are captured.
    pub line: String,
    pub conversation_id: String,
    /// The messaging app's own id for this event.
    pub source_id: String,
    /// When the event happened, per the source (ms since the Unix epoch, UTC).
    pub source_time_ms: i64,
}

impl From<EventMeta> for core_model::EventMeta {
    fn from(m: EventMeta) -> Self {
        core_model::EventMeta {
            channel: m.channel.into(),
            line: m.line,
            conversation_id: m.conversation_id,
            source_id: m.source_id,
            source_time_ms: m.source_time_ms,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct MessageEvent {
    pub meta: EventMeta,
    pub direction: Direction,
    pub sender: String,
    pub recipients: Vec<String>,
    pub text: String,
    /// `source_id`s of attachments captured separately with `captureAttachment`.
    pub attachment_ids: Vec<String>,
    pub reply_to: Option<String>,
}

/// A message was edited; only the new text is kept.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct EditEvent {
    pub meta: EventMeta,
    pub target_message_id: String,
    pub editor: String,
    pub new_text: String,
}

/// A message was unsent or deleted: captured as an event, never as a deletion.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct UnsendEvent {
    pub meta: EventMeta,
    pub target_message_id: String,
    pub actor: String,
}

#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ReactionEvent {
    pub meta: EventMeta,
    pub target_message_id: String,
    pub actor: String,
    pub reaction: String,
    /// True when the reaction was taken back.
    pub removed: bool,
}

/// A file sent or received; the agent streams it from `path` (an absolute file path the app
/// can read) in bounded chunks, sealing as it goes.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct AttachmentEvent {
    pub meta: EventMeta,
    pub message_id: Option<String>,
    pub direction: Direction,
    pub sender: String,
    pub file_name: String,
    pub mime_type: String,
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct CallEvent {
    pub meta: EventMeta,
    pub direction: Direction,
    pub participants: Vec<String>,
    pub started_ms: i64,
    pub ended_ms: Option<i64>,
    pub outcome: CallOutcome,
    /// A recording file to capture with the call, if any.
    pub recording_path: Option<String>,
    pub recording_mime_type: Option<String>,
}

impl From<MessageEvent> for core_model::Event {
    fn from(m: MessageEvent) -> Self {
        core_model::Event::Message(core_model::Message {
            meta: m.meta.into(),
            direction: m.direction.into(),
            sender: m.sender,
            recipients: m.recipients,
            text: m.text,
            attachment_ids: m.attachment_ids,
            reply_to: m.reply_to,
        })
    }
}

impl From<EditEvent> for core_model::Event {
    fn from(e: EditEvent) -> Self {
        core_model::Event::Edit(core_model::Edit {
            meta: e.meta.into(),
            target_message_id: e.target_message_id,
            editor: e.editor,
            new_text: e.new_text,
        })
    }
}

impl From<UnsendEvent> for core_model::Event {
    fn from(u: UnsendEvent) -> Self {
        core_model::Event::Unsend(core_model::Unsend {
            meta: u.meta.into(),
            target_message_id: u.target_message_id,
            actor: u.actor,
        })
    }
}

impl From<ReactionEvent> for core_model::Event {
    fn from(r: ReactionEvent) -> Self {
        core_model::Event::Reaction(core_model::Reaction {
            meta: r.meta.into(),
            target_message_id: r.target_message_id,
            actor: r.actor,
            reaction: r.reaction,
            removed: r.removed,
        })
    }
}

impl From<AttachmentEvent> for core_model::Event {
    fn from(a: AttachmentEvent) -> Self {
        core_model::Event::Attachment(core_model::Attachment {
            meta: a.meta.into(),
            message_id: a.message_id,
            direction: a.direction.into(),
            sender: a.sender,
            file_name: a.file_name,
            mime_type: a.mime_type,
            path: PathBuf::from(a.path),
        })
    }
}

impl From<CallEvent> for core_model::Event {
    fn from(c: CallEvent) -> Self {
        core_model::Event::Call(core_model::Call {
            meta: c.meta.into(),
            direction: c.direction.into(),
            participants: c.participants,
            started_ms: c.started_ms,
            ended_ms: c.ended_ms,
            outcome: c.outcome.into(),
            recording_path: c.recording_path.map(PathBuf::from),
            recording_mime_type: c.recording_mime_type,
        })
    }
}

/// What became of a captured event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum CaptureOutcome {
    /// Durable in the queue, sealed, under these sequence numbers.
    Captured { first_seq: u64, last_seq: u64 },
    /// Not business per policy: dropped before anything was written.
    OutOfScope,
}

impl From<CoreOutcome> for CaptureOutcome {
    fn from(o: CoreOutcome) -> Self {
        match o {
            CoreOutcome::Captured { first_seq, last_seq } => CaptureOutcome::Captured { first_seq, last_seq },
            CoreOutcome::OutOfScope => CaptureOutcome::OutOfScope,
        }
    }
}

// ------------------------------------------------------------------------------------ upload

/// The network the platform reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum NetworkState {
    Offline,
    /// Wi-Fi or Ethernet, not metered.
    Unmetered,
    /// Cellular (or metered Wi-Fi) at home.
    Metered,
    /// Cellular while roaming.
    Roaming,
}

impl From<NetworkState> for CoreNetwork {
    fn from(n: NetworkState) -> Self {
        match n {
            NetworkState::Offline => CoreNetwork::Offline,
            NetworkState::Unmetered => CoreNetwork::Unmetered,
            NetworkState::Metered => CoreNetwork::Metered,
            NetworkState::Roaming => CoreNetwork::Roaming,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum StopReason {
    /// Everything queued was acknowledged.
    Done,
    /// The deadline came; the rest waits for the next window.
    Deadline,
    /// No network.
    Offline,
    /// Policy forbids this network (metered, roaming).
    NotAllowed,
    /// A failure that needs attention (see `error_kind`, `detail`).
    Error,
    /// `cancel_upload` was called (the OS took the background window back); the rest waits
    /// for the next window.
    Cancelled,
    /// Another upload of this agent is running; this call did nothing (not an error).
    AlreadyRunning,
}

impl From<CoreStop> for StopReason {
    fn from(s: CoreStop) -> Self {
        match s {
            CoreStop::Done => StopReason::Done,
            CoreStop::Deadline => StopReason::Deadline,
            CoreStop::Offline => StopReason::Offline,
            CoreStop::NotAllowed => StopReason::NotAllowed,
            CoreStop::Error => StopReason::Error,
            CoreStop::Cancelled => StopReason::Cancelled,
            CoreStop::AlreadyRunning => StopReason::AlreadyRunning,
        }
    }
}

/// How an upload session ended. Upload never throws for network or archive trouble: that is a
/// report (`stopped`), because the platform job must reschedule either way.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct UploadReport {
    pub stopped: StopReason,
    /// Why it stopped, in words (no secrets, no content).
    pub detail: Option<String>,
    pub error_kind: Option<ErrorKind>,
    pub records_sent: u64,
    pub bytes_sent: u64,
    pub batches: u64,
    /// Records the archive already held (resent after an interruption).
    pub duplicates: u64,
    pub retries: u32,
    pub acked_through: u64,
    pub elapsed_ms: u64,
    /// Records are still queued after this session.
    pub more_pending: bool,
    /// The platform job should run again soon rather than at the next regular interval: the
    /// deadline cut a session short with records still queued. (Offline, not-allowed networks
    /// and failures that need a person wait for the regular schedule.)
    pub retry_soon: bool,
}

/// What unenroll did.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct UnenrollReport {
    /// The local store was destroyed.
    pub shredded: bool,
    /// It was destroyed although records were not acknowledged (`force`).
    pub forced: bool,
    /// Records the archive had not acknowledged when unenroll ended.
    pub unsent_records: u64,
    pub upload: Option<UploadReport>,
}

impl UploadReport {
    pub(crate) fn from_core(r: CoreReport, more_pending: bool) -> Self {
        UploadReport {
            stopped: r.stopped.into(),
            detail: r.detail,
            error_kind: r.error_kind.map(ErrorKind::from),
            records_sent: r.records_sent,
            bytes_sent: r.bytes_sent,
            batches: r.batches,
            duplicates: r.duplicates,
            retries: r.retries,
            acked_through: r.acked_through,
            elapsed_ms: r.elapsed_ms,
            more_pending,
            retry_soon: more_pending && r.stopped == CoreStop::Deadline,
        }
    }
}

// ------------------------------------------------------------------------------------ status

#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct CaptureCounters {
    pub captured: u64,
    pub out_of_scope: u64,
    pub invalid: u64,
    pub refused_not_configured: u64,
    pub refused_queue_full: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct UploadState {
    pub last_attempt_ms: Option<i64>,
    pub last_success_ms: Option<i64>,
    pub last_error: Option<String>,
    pub next_retry_ms: Option<i64>,
    /// The archive refused the archive key the queued records are sealed to: uploads wait,
    /// every record is kept, the admin must correct the policy (or the archive add the key).
    pub archive_key_refused: bool,
}

/// Everything about the agent, read from memory (safe on the main thread).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct AgentStatus {
    pub configured: bool,
    /// Why capture is refused when not configured.
    pub not_configured_reason: Option<String>,
    /// Captures are accepted right now (configured, queue not full, agent open).
    pub capture_enabled: bool,
    /// Policy `fail_closed`: when `capture_enabled` is false the app must block sending
    /// business messages. True when no policy is in force (fail closed by default).
    pub fail_closed: bool,
    /// Policy `disclaimer_text`: the notice to show; None means the app's built-in notice.
    pub disclaimer_text: Option<String>,
    pub channels: Vec<Channel>,
    pub tenant_id: Option<String>,
    pub device_id: Option<String>,
    pub stream_id: Option<String>,
    pub policy_version: Option<String>,
    pub policy_fingerprint: Option<String>,
    /// The policy's log level (the default, `Info`, before any policy).
    pub log_level: LogLevel,
    /// What the platform's upload scheduler should wait for; None without a policy.
    pub upload_schedule: Option<UploadSchedule>,
    pub queue_records: u64,
    pub queue_bytes: u64,
    pub queue_max_bytes: u64,
    pub queue_alert: bool,
    pub queue_full: bool,
    /// Pending records are older than the policy's `pending_alert_hours`.
    pub pending_stale: bool,
    /// Causes for which capture is unavailable now (`not_configured`, `queue_full`,
    /// `disk_full`, `channel_disabled:<channel>`).
    pub unavailable: Vec<String>,
    pub last_heartbeat_ms: i64,
    pub oldest_pending_ms: Option<i64>,
    pub oldest_pending_age_ms: Option<i64>,
    pub last_seq: u64,
    pub acked_through: u64,
    pub epoch: Option<u64>,
    pub counters: CaptureCounters,
    pub upload: UploadState,
    /// When the app may start an upload on its own, soon after a capture while it is in the
    /// foreground (wall-clock ms): never before the back-off of a passing failure or the
    /// archive-key refusal wait, 30 s after the last session, a whole upload interval after a
    /// session that ended in an error under the same policy. None: it should not (no policy,
    /// nothing queued). The OS's background windows are not affected.
    pub upload_due_ms: Option<i64>,
}

impl AgentStatus {
    pub(crate) fn from_core(s: CoreStatus, policy: Option<&Policy>) -> Self {
        AgentStatus {
            configured: s.configured,
            not_configured_reason: s.not_configured_reason,
            capture_enabled: s.capture_enabled,
            fail_closed: policy.is_none_or(|p| p.fail_closed),
            disclaimer_text: policy.and_then(|p| p.disclaimer_text.clone()),
            channels: s.channels.into_iter().map(Channel::from).collect(),
            tenant_id: s.tenant_id,
            device_id: s.device_id,
            stream_id: s.stream_id,
            policy_version: s.policy_version,
            policy_fingerprint: s.policy_fingerprint,
            log_level: policy.map_or(LogLevel::Info, |p| p.log_level.into()),
            upload_schedule: policy.map(schedule_for),
            queue_records: s.queue_records,
            queue_bytes: s.queue_bytes,
            queue_max_bytes: s.queue_max_bytes,
            queue_alert: s.queue_alert,
            queue_full: s.queue_full,
            pending_stale: s.pending_stale,
            unavailable: s.unavailable.iter().map(ToString::to_string).collect(),
            last_heartbeat_ms: s.last_heartbeat_ms,
            oldest_pending_ms: s.oldest_pending_ms,
            oldest_pending_age_ms: s.oldest_pending_age_ms,
            last_seq: s.last_seq,
            acked_through: s.acked_through,
            epoch: s.epoch,
            counters: CaptureCounters {
                captured: s.counters.captured,
                out_of_scope: s.counters.out_of_scope,
                invalid: s.counters.invalid,
                refused_not_configured: s.counters.refused_not_configured,
                refused_queue_full: s.counters.refused_queue_full,
            },
            upload: UploadState {
                last_attempt_ms: s.upload.last_attempt_ms,
                last_success_ms: s.upload.last_success_ms,
                last_error: s.upload.last_error,
                next_retry_ms: s.upload.next_retry_ms,
                archive_key_refused: s.upload.archive_key_refused,
            },
            upload_due_ms: s.upload_due_ms,
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
