//! What a sealed record contains once opened: the plaintext format shared by the device (which
//! seals it) and the archive (which opens and exports it).
//!
//! Encoding: one version byte (1), a u32 big-endian header length, the header as JSON, then the
//! raw payload bytes (only attachment chunks have any). Raw bytes avoid base64's third more
//! size and its cost on the phone.

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::model::{CallOutcome, Channel, Direction, Edit, EventMeta, Message, Reaction, Unsend};
use crate::policy::DisclaimerMode;

/// The plaintext of one record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// When the agent captured it (UTC ms, device wall clock).
    pub captured_ms: i64,
    pub body: RecordBody,
    /// Raw bytes of an attachment chunk; empty otherwise.
    #[serde(skip)]
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RecordBody {
    Message(Message),
    Edit(Edit),
    Unsend(Unsend),
    Reaction(Reaction),
    Call(CallRecord),
    /// An attachment begins; `AttachmentChunk`s and one `AttachmentEnd` follow in the same commit.
    AttachmentStart(AttachmentHeader),
    AttachmentChunk {
        attachment_id: String,
        index: u32,
    },
    AttachmentEnd {
        attachment_id: String,
        size: u64,
        sha256: String,
        chunks: u32,
    },
    /// An attachment that was not captured in full, and why (too large, disabled by policy,
    /// unreadable file). Its metadata is still archived.
    AttachmentOmitted {
        header: AttachmentHeader,
        reason: String,
    },
    /// The client notice (policy `disclaimer_text`) was shown or sent in this conversation.
    DisclaimerShown {
        meta: EventMeta,
        mode: DisclaimerMode,
        text: String,
    },
    Agent(AgentEvent),
    /// A content key of a conversation-key epoch (sealing version 2), sealed under the epoch
    /// key: see [`crate::seal::conversation`]. Never written by a capture, never exported.
    ConversationKey(crate::seal::conversation::KeyRecord),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentHeader {
    pub meta: EventMeta,
    /// Unique within the stream; the app's id, or `recording:<call id>` for call recordings.
    pub attachment_id: String,
    pub message_id: Option<String>,
    pub direction: Direction,
    pub sender: String,
    pub file_name: String,
    pub mime_type: String,
    /// Size of the file when capture began.
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    pub meta: EventMeta,
    pub direction: Direction,
    pub participants: Vec<String>,
    pub started_ms: i64,
    pub ended_ms: Option<i64>,
    pub outcome: CallOutcome,
    /// Attachment id of the recording captured with this call, if any.
    pub recording_id: Option<String>,
}

/// Agent events: the agent's own story, in the same chain as what it captured, so the archive
/// sees when and why capture changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AgentEvent {
    /// The agent opened its store. `after_crash` when the previous run did not close cleanly.
    Started {
        agent_version: String,
        after_crash: bool,
    },
    PolicyApplied {
        policy_version: String,
        fingerprint: String,
        archive_key_id: String,
    },
    /// A pushed policy was refused; the one in force stays. Problems name keys only.
    PolicyRejected {
        problems: Vec<String>,
    },
    /// The MDM removed the managed configuration: capture stops (fails closed) until a
    /// configuration is pushed again; the `pending_records` already queued still go to the
    /// archive under the withdrawn policy's archive settings.
    PolicyWithdrawn {
        policy_version: String,
        fingerprint: String,
        pending_records: u64,
    },
    /// Capture per channel changed with a policy.
    CaptureChannels {
        enabled: Vec<Channel>,
        disabled: Vec<Channel>,
    },
    EpochRotated {
        epoch: u64,
        reason: String,
        archive_key_id: String,
    },
    QueueAlert {
        used_bytes: u64,
        max_bytes: u64,
        percent: u8,
    },
    QueueFull {
        used_bytes: u64,
        max_bytes: u64,
    },
    /// The wall clock moved by `delta_ms` more than the monotonic clock allows.
    ClockJumped {
        expected_ms: i64,
        observed_ms: i64,
        delta_ms: i64,
    },
    /// The archive refused upload for a reason that needs a person (credentials, pins).
    UploadRefused {
        reason: String,
    },
    /// The archive's certificate did not match the policy's pins.
    TlsPinMismatch {
        host: String,
    },
    /// A stored record failed its integrity check; it is held back, never sent or skipped.
    QueueCorrupt {
        detail: String,
    },
    /// The agent is alive: recorded every `heartbeat_hours` even when nothing is captured, with
    /// what happened since the previous heartbeat (`since_ms`).
    Heartbeat {
        interval_hours: u32,
        since_ms: i64,
        captured: u64,
        out_of_scope: u64,
        refused: u64,
    },
    /// Capture was unavailable from `start_ms` to `end_ms` for `cause` (`not_configured`,
    /// `policy_withdrawn`, `queue_full`, `disk_full`, `channel_disabled:<channel>`); `refused` counts the events
    /// refused (or, for a disabled channel, dropped) meanwhile.
    CaptureUnavailable {
        cause: String,
        detail: String,
        start_ms: i64,
        end_ms: i64,
        refused: u64,
    },
    /// The app let a communication through while capture was unavailable and reports it, so it
    /// is evidenced rather than silent. Metadata only.
    UncapturedCommunication {
        channel: Channel,
        conversation_id: String,
        source_id: String,
        source_time_ms: i64,
        direction: Direction,
        reason: String,
        fail_closed: bool,
    },
    /// Records have waited for upload longer than `pending_alert_hours`.
    PendingStale {
        oldest_pending_ms: i64,
        hours: u32,
    },
    /// Unenroll began; `forced` when the store will be destroyed even if not all is acknowledged.
    Unenrolling {
        forced: bool,
        pending_records: u64,
    },
}

const VERSION: u8 = 1;

impl Record {
    pub fn new(captured_ms: i64, body: RecordBody) -> Self {
        Record { captured_ms, body, payload: Vec::new() }
    }

    pub fn encode(&self) -> Vec<u8> {
        let header = serde_json::to_vec(self).expect("record header serialises");
        let mut out = Vec::with_capacity(5 + header.len() + self.payload.len());
        out.push(VERSION);
        out.extend_from_slice(&(header.len() as u32).to_be_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&self.payload);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Record> {
        let bad = |why: &str| Error::new(ErrorKind::Corrupt, format!("record plaintext: {why}"));
        let (&version, rest) = bytes.split_first().ok_or_else(|| bad("empty"))?;
        if version != VERSION {
            return Err(bad(&format!("unknown version {version}")));
        }
        if rest.len() < 4 {
            return Err(bad("truncated header length"));
        }
        let len = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        let rest = &rest[4..];
        if rest.len() < len {
            return Err(bad("truncated header"));
        }
        // Only the error's category and position: serde_json's message can quote a value it
        // found where another type was due, and values here are captured content.
        let mut record: Record = serde_json::from_slice(&rest[..len]).map_err(|e| {
            bad(&format!("header does not parse ({:?} error at line {}, column {})", e.classify(), e.line(), e.column()))
        })?;
        record.payload = rest[len..].to_vec();
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_with_payload() {
        let mut r = Record::new(5, RecordBody::AttachmentChunk { attachment_id: "a1".into(), index: 3 });
        r.payload = vec![0, 1, 2, 255];
        assert_eq!(Record::decode(&r.encode()).unwrap(), r);
        let r = Record::new(6, RecordBody::Agent(AgentEvent::Started { agent_version: "1".into(), after_crash: true }));
        assert_eq!(Record::decode(&r.encode()).unwrap(), r);
    }

    #[test]
    fn malformed_plaintext_is_a_typed_error() {
        for bad in [&b""[..], &[2u8][..], &[1u8, 0, 0][..], &[1u8, 0, 0, 0, 9, b'{'][..], &[1u8, 0, 0, 0, 1, b'{'][..]] {
            assert_eq!(Record::decode(bad).unwrap_err().kind, ErrorKind::Corrupt);
        }
    }
}
