//! Managed policy: the MDM's configuration, parsed from a neutral key/value tree into a typed,
//! validated [`Policy`]. One schema ([`schema::KEYS`]) is the single source of truth for every
//! key: the parser, the CLI's template, the README reference and the MDM artifacts all read it.

#[cfg(feature = "tools")]
pub mod artifacts;
#[cfg(feature = "policy-files")]
pub mod file;
mod parse;
pub mod schema;
pub mod stored;
mod value;

pub use parse::{Parsed, Problem, ProblemKind, Rejected, parse};
pub use value::Value;

use std::collections::BTreeSet;

use crate::model::Channel;
use crate::secret::Secret;

/// Which networks upload may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UploadNetwork {
    /// Any network, metered or not.
    Any,
    /// Only unmetered networks (Wi-Fi, Ethernet).
    Unmetered,
}

/// Log verbosity; records below the policy's level are dropped in Rust before they reach
/// any platform sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Enum))]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Off,
}

/// When the client notice (`disclaimer_text`) is due in a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisclaimerMode {
    Off,
    /// Once per conversation.
    FirstMessage,
    /// Once per conversation per UTC day.
    Daily,
}

/// A validated managed policy. Built only by [`parse`].
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub archive_url: url::Url,
    /// X25519 public key of the archive (32 bytes).
    pub archive_public_key: [u8; 32],
    pub archive_key_id: String,
    pub tenant_id: String,
    /// Empty only in a policy restored from the store at start, before the platform layer
    /// applied the managed configuration again: the token is never stored ([`stored`]), and
    /// upload waits for it. A pushed configuration without one is refused.
    pub device_token: Secret,
    /// Set by the MDM (a device variable); when absent the agent generates one once and keeps it.
    pub device_id: Option<String>,
    /// When set, only this CA (PEM) is trusted for the archive, not the OS store.
    pub archive_ca_pem: Option<String>,
    /// SPKI SHA-256 pins checked on top of normal certificate validation.
    pub tls_pins: Vec<[u8; 32]>,
    pub capture_channels: BTreeSet<Channel>,
    /// The employee's business numbers and handles, normalised with [`crate::model::normalize_handle`].
    pub business_lines: BTreeSet<String>,
    pub capture_attachments: bool,
    pub max_attachment_mb: u32,
    pub capture_call_recordings: bool,
    pub upload_network: UploadNetwork,
    pub upload_allow_roaming: bool,
    pub upload_interval_minutes: u32,
    pub max_batch_kb: u32,
    pub queue_max_mb: u32,
    pub queue_alert_percent: u8,
    pub pending_alert_hours: u32,
    pub heartbeat_hours: u32,
    /// Android, Google Messages archival: days of history the first scan captures.
    pub backfill_days: u32,
    /// The firm's name for the archiving notice on Android.
    pub organization_name: Option<String>,
    pub fail_closed: bool,
    pub disclaimer_text: Option<String>,
    pub disclaimer_mode: DisclaimerMode,
    pub log_level: LogLevel,
    pub policy_version: String,
}

/// Which network the platform scheduler must wait for before running an upload, per policy:
/// Android `JobInfo.NETWORK_TYPE_UNMETERED` / `_NOT_ROAMING` / `_ANY`; iOS
/// `BGProcessingTaskRequest.requiresNetworkConnectivity` plus a check of `NWPath.isExpensive`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Enum))]
#[serde(rename_all = "snake_case")]
pub enum RequiredNetwork {
    Unmetered,
    NotRoaming,
    Any,
}

/// What the platform's upload scheduler needs from the policy in force.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct UploadSchedule {
    pub required_network: RequiredNetwork,
    pub interval_minutes: u32,
}

impl Policy {
    /// When and on which network the platform should schedule uploads.
    pub fn upload_schedule(&self) -> UploadSchedule {
        let required_network = match (self.upload_network, self.upload_allow_roaming) {
            (UploadNetwork::Unmetered, _) => RequiredNetwork::Unmetered,
            (UploadNetwork::Any, false) => RequiredNetwork::NotRoaming,
            (UploadNetwork::Any, true) => RequiredNetwork::Any,
        };
        UploadSchedule { required_network, interval_minutes: self.upload_interval_minutes }
    }
}
