//! The agent's health as MDM feedback entries (Android keyed app states, iOS managed app
//! feedback): the `verbatim.*` keys, their messages and severities, decided here once for both
//! platforms from a status snapshot. Metadata only.

use crate::types::AgentStatus;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum FeedbackSeverity {
    Info,
    /// Needs the admin's attention (Android keyed app state `SEVERITY_ERROR`).
    Error,
}

/// One entry for the MDM feedback channel (Android keyed app states, iOS managed app feedback):
/// the same keys on both platforms. Metadata only.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FeedbackItem {
    pub key: String,
    pub severity: FeedbackSeverity,
    /// For a person, one line.
    pub message: String,
    /// For a program (a number, `true`/`false`, an id).
    pub data: String,
}

fn item(key: &str, severity: FeedbackSeverity, message: String, data: String) -> FeedbackItem {
    FeedbackItem { key: key.to_string(), severity, message, data }
}

/// The agent's health as MDM feedback entries, derived from a status snapshot: the
/// `verbatim.*` keys, meanings and severities documented in docs/mdm-admin.md ("What the agent
/// reports back"), the same on Android (keyed app states) and iOS (managed app feedback).
pub(crate) fn feedback_items(s: &AgentStatus, now_ms: i64) -> Vec<FeedbackItem> {
    use FeedbackSeverity::{Error, Info};
    let rfc3339 = verbatim_core::clock::rfc3339_utc;
    let mut items = Vec::new();
    let mut push = |key: &str, severity, message: String, data: String| {
        items.push(item(&format!("verbatim.{key}"), severity, message, data))
    };
    let configured_severity = if s.configured { Info } else { Error };
    let configured_message = if s.configured { "configured".to_string() } else { "not configured: capture refused".to_string() };
    push("configured", configured_severity, configured_message, s.configured.to_string());
    if let Some(reason) = &s.not_configured_reason {
        push("not_configured_reason", Info, reason.clone(), reason.clone());
    }
    if let Some(device) = &s.device_id {
        push("device_id", Info, format!("device {device}"), device.clone());
    }
    if let Some(version) = &s.policy_version {
        push("policy_version", Info, format!("policy {version}"), version.clone());
    }
    if let Some(fingerprint) = &s.policy_fingerprint {
        let short: String = fingerprint.chars().take(16).collect();
        push("policy_fingerprint", Info, format!("policy fingerprint {short}"), short);
    }
    let capture_severity = if !s.capture_enabled && s.configured { Error } else { Info };
    let capture_message = if s.capture_enabled {
        "capture enabled".to_string()
    } else if s.queue_full {
        "capture refused: the queue is full".to_string()
    } else {
        "capture refused".to_string()
    };
    push("capture_enabled", capture_severity, capture_message, s.capture_enabled.to_string());
    push("queue_records", Info, format!("{} records waiting for upload", s.queue_records), s.queue_records.to_string());
    let percent = s.queue_bytes.saturating_mul(100).checked_div(s.queue_max_bytes).unwrap_or(0).min(100);
    let queue_severity = if s.queue_full || s.queue_alert { Error } else { Info };
    push("queue_percent", queue_severity, format!("queue {percent}% full"), percent.to_string());
    let hours = s.oldest_pending_age_ms.map(|ms| (ms / 3_600_000).to_string()).unwrap_or_default();
    let stale_severity = if s.pending_stale { Error } else { Info };
    push("oldest_pending_hours", stale_severity, format!("oldest record waiting {hours} h"), hours);
    if !s.unavailable.is_empty() {
        let causes = s.unavailable.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
        push("unavailable", Error, format!("capture unavailable: {causes}"), causes);
    }
    if let Some(t) = s.upload.last_success_ms {
        push("last_upload_success", Info, format!("last upload acknowledged at {}", rfc3339(t)), rfc3339(t));
    }
    if s.upload.archive_key_refused {
        push(
            "archive_key_refused",
            Error,
            "the archive refuses the archive key in the policy: correct archive_public_key; every record is kept".into(),
            "true".into(),
        );
    }
    match &s.upload.last_error {
        Some(error) => push("last_error", Error, format!("last upload failed: {error}"), error.clone()),
        None => push("last_error", Info, "no upload error".into(), String::new()),
    }
    let version = env!("CARGO_PKG_VERSION");
    push("agent_version", Info, format!("Verbatim agent {version}"), version.into());
    push("updated_at", Info, format!("feedback written at {}", rfc3339(now_ms)), rfc3339(now_ms));
    items
}
