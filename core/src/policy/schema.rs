//! The policy schema: one table, [`KEYS`], describing every managed-configuration key.
//!
//! Everything else reads this table: the parser (types, ranges, defaults, which keys are
//! required or secret), the CLI's `policy template` and `policy reference`, and the redacting
//! `Debug` of [`super::Value`]. Adding a key means adding a row here and a field to
//! [`super::Policy`]; the tests check the two stay in step.

use crate::model::Channel;

/// The largest string accepted for a plain key (ids, tokens, URLs, disclaimer text), in bytes.
/// Generous for real values (long JWT tokens fit), small enough to refuse pasted files.
pub const MAX_STRING_BYTES: usize = 4096;
/// The largest PEM text accepted for `archive_ca_pem` (a CA chain of a few certificates).
pub const MAX_PEM_BYTES: usize = 64 * 1024;
/// The most items accepted in one list key.
pub const MAX_LIST_ITEMS: usize = 1000;

/// What a key holds and how its value is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// One line of text: no control characters, at most [`MAX_STRING_BYTES`].
    String,
    /// Free text that may span lines, at most [`MAX_STRING_BYTES`].
    Text,
    /// An absolute `https://` URL without user name or password.
    Url,
    /// A base64 X25519 public key (32 bytes, standard or URL-safe alphabet, padding optional).
    PublicKey,
    /// A whole number in `min..=max`; an MDM may send it as a numeric string.
    Integer { min: i64, max: i64 },
    /// `true`/`false`; an MDM may send `"true"`, `"false"`, `"1"` or `"0"` as a string.
    Bool,
    /// A list of strings (an array, or one comma-separated string).
    StringList,
    /// A list of channel names from [`Channel::ALL`] (an array, or one
    /// comma-separated string).
    ChannelList,
    /// One of a fixed set of words (case-insensitive).
    Enum(&'static [&'static str]),
    /// A list of base64 SHA-256 hashes of a certificate's SubjectPublicKeyInfo (32 bytes each).
    Pins,
    /// PEM text holding one or more `CERTIFICATE` blocks, at most [`MAX_PEM_BYTES`].
    Pem,
}

impl KeyKind {
    /// A short description of the type for admins, used in error messages ("must be ...") and
    /// the reference. Written in words, never in code notation (`5..=1440`).
    pub fn describe(&self) -> String {
        match self {
            KeyKind::String => "one line of text".to_string(),
            KeyKind::Text => "text (may span lines)".to_string(),
            KeyKind::Url => "an https URL".to_string(),
            KeyKind::PublicKey => "a base64 X25519 public key (32 bytes)".to_string(),
            KeyKind::Integer { min, max } => format!("a whole number from {min} to {max}"),
            KeyKind::Bool => "true or false".to_string(),
            KeyKind::StringList => "a list of text items".to_string(),
            KeyKind::ChannelList => {
                let names: Vec<&str> = Channel::ALL.iter().map(|c| c.as_str()).collect();
                format!("a list of channels ({})", names.join(", "))
            }
            KeyKind::Enum(words) => format!("one of: {}", words.join(", ")),
            KeyKind::Pins => "a list of base64 SPKI SHA-256 pins (32 bytes each)".to_string(),
            KeyKind::Pem => "PEM certificate(s)".to_string(),
        }
    }

    /// Whether the value is a list (array, or comma-separated string).
    pub fn is_list(&self) -> bool {
        matches!(self, KeyKind::StringList | KeyKind::ChannelList | KeyKind::Pins)
    }
}

/// One managed-configuration key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySpec {
    /// The key as the MDM sends it (AppConfig key, Android restriction key). Case-sensitive.
    pub name: &'static str,
    pub kind: KeyKind,
    /// The value used when the key is absent, written as an admin would type it (lists
    /// comma-separated). `None`: no default (the key is required, or unset means "off").
    pub default: Option<&'static str>,
    /// Absent or empty means the policy is rejected.
    pub required: bool,
    /// The value is a credential: never shown in errors, `Debug` output or the CLI.
    pub secret: bool,
    pub description: &'static str,
    /// A syntactically valid example, as an admin would type it; the template uses it for
    /// required keys. Placeholder only: never a real credential.
    pub example: &'static str,
}

/// Whether a value equal to the key's example is surely a placeholder left from the template,
/// which the parser refuses: the example archive, key, tenant, token and lines are never a
/// firm's own. `policy_version`'s example (a date-like version) may well be a real one.
pub fn example_is_placeholder(spec: &KeySpec) -> bool {
    spec.required && spec.name != "policy_version"
}

/// Every channel name, comma-separated: the default for `capture_channels`. A unit test checks
/// it matches [`Channel::ALL`].
pub const ALL_CHANNELS: &str = "sms,mms,rcs,imessage,whatsapp,wechat,signal,telegram,line,voice";

/// Allowed words for `upload_network`, in the order of [`super::UploadNetwork`].
pub const UPLOAD_NETWORKS: &[&str] = &["any", "unmetered"];
/// Allowed words for `log_level`, in the order of [`super::LogLevel`].
pub const LOG_LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];
/// Values of `disclaimer_mode`.
pub const DISCLAIMER_MODES: &[&str] = &["off", "first_message", "daily"];

/// The schema: every key, in the order problems are reported and the template lists them.
pub static KEYS: &[KeySpec] = &[
    KeySpec {
        name: "archive_url",
        kind: KeyKind::Url,
        default: None,
        required: true,
        secret: false,
        description: "Base HTTPS address of the firm's archive receiver, without the API version: the agent uploads to <archive_url>/v1/batches. A path prefix is allowed (https://example.com/archive).",
        example: "https://archive.example.com",
    },
    KeySpec {
        name: "archive_public_key",
        kind: KeyKind::PublicKey,
        default: None,
        required: true,
        secret: false,
        description: "The archive's X25519 public key (base64, 32 bytes). Everything captured is sealed to it; only the archive's private key opens it.",
        example: "fwFYPPMFK03On3M8gpe3y+a91eU9NU4fVdlp+cLj2R0=",
    },
    KeySpec {
        name: "archive_key_id",
        kind: KeyKind::String,
        default: None,
        required: false,
        secret: false,
        description: "Identifier of the archive key pair, recorded with each sealed epoch so the archive picks the right private key. Unset: derived from archive_public_key (hex of the first 8 bytes of its SHA-256, what `verbatim keygen` prints). When set it must equal that id, which catches a wrong key or a wrong id.",
        example: "df114df6b76b4b38",
    },
    KeySpec {
        name: "tenant_id",
        kind: KeyKind::String,
        default: None,
        required: true,
        secret: false,
        description: "The firm's tenant identifier at the archive.",
        example: "acme",
    },
    KeySpec {
        name: "device_token",
        kind: KeyKind::String,
        default: None,
        required: true,
        secret: true,
        description: "Credential the device presents to the archive when uploading.",
        example: "REPLACE-WITH-DEVICE-TOKEN",
    },
    KeySpec {
        name: "device_id",
        kind: KeyKind::String,
        default: None,
        required: false,
        secret: false,
        description: "Device identifier, usually an MDM variable. When unset the agent generates one once and keeps it.",
        example: "C39XK2ABCD12",
    },
    KeySpec {
        name: "archive_ca_pem",
        kind: KeyKind::Pem,
        default: None,
        required: false,
        secret: false,
        description: "When set, only this CA certificate (PEM) is trusted for the archive instead of the system's trust store.",
        example: "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n",
    },
    KeySpec {
        name: "tls_pins",
        kind: KeyKind::Pins,
        default: None,
        required: false,
        secret: false,
        description: "SHA-256 pins of the archive certificate's public key (base64), checked on top of normal certificate validation. Unset: no pinning.",
        example: "twQIshIbsc7cMk3QKcvSK2SPvt+NJlmMIBIaCID5Sv0=,+CkgGhFFMLBpH6qejQYfMLzQvLrubRDxXtNkz8YMyME=",
    },
    KeySpec {
        name: "capture_channels",
        kind: KeyKind::ChannelList,
        default: Some(ALL_CHANNELS),
        required: false,
        secret: false,
        description: "Channels captured on business lines. All of them by default, so nothing business is missed; what is captured is narrowed by business_lines.",
        example: "sms,imessage,whatsapp",
    },
    KeySpec {
        name: "business_lines",
        kind: KeyKind::StringList,
        default: None,
        required: true,
        secret: false,
        description: "The employee's business numbers and handles; only conversations on these lines are captured. Phone numbers are compared by digits, handles ignoring case.",
        example: "+1 212 555 0100,jane.doe@acme.example",
    },
    KeySpec {
        name: "capture_attachments",
        kind: KeyKind::Bool,
        default: Some("true"),
        required: false,
        secret: false,
        description: "Capture files sent or received in business conversations.",
        example: "true",
    },
    KeySpec {
        name: "max_attachment_mb",
        kind: KeyKind::Integer { min: 1, max: 2048 },
        default: Some("100"),
        required: false,
        secret: false,
        description: "Largest attachment captured, in MiB; larger ones are recorded as skipped.",
        example: "100",
    },
    KeySpec {
        name: "capture_call_recordings",
        kind: KeyKind::Bool,
        default: Some("true"),
        required: false,
        secret: false,
        description: "Capture call recordings the app provides (call metadata is always captured).",
        example: "true",
    },
    KeySpec {
        name: "upload_network",
        kind: KeyKind::Enum(UPLOAD_NETWORKS),
        default: Some("any"),
        required: false,
        secret: false,
        description: "Networks upload may use: any, or unmetered only (Wi-Fi, Ethernet).",
        example: "any",
    },
    KeySpec {
        name: "upload_allow_roaming",
        kind: KeyKind::Bool,
        default: Some("false"),
        required: false,
        secret: false,
        description: "Allow upload while roaming on a cellular network.",
        example: "false",
    },
    KeySpec {
        name: "upload_interval_minutes",
        kind: KeyKind::Integer { min: 5, max: 1440 },
        default: Some("15"),
        required: false,
        secret: false,
        description: "How often background upload is requested, in minutes (the OS may run it later).",
        example: "15",
    },
    KeySpec {
        name: "max_batch_kb",
        kind: KeyKind::Integer { min: 128, max: 16384 },
        default: Some("1024"),
        required: false,
        secret: false,
        description: "Largest upload batch, in KiB.",
        example: "1024",
    },
    KeySpec {
        name: "queue_max_mb",
        kind: KeyKind::Integer { min: 16, max: 16384 },
        default: Some("512"),
        required: false,
        secret: false,
        description: "Most local storage the sealed queue may use, in MiB. When full, capture fails closed; nothing stored is dropped.",
        example: "512",
    },
    KeySpec {
        name: "queue_alert_percent",
        kind: KeyKind::Integer { min: 1, max: 99 },
        default: Some("80"),
        required: false,
        secret: false,
        description: "Queue fill level, in percent of queue_max_mb, at which the agent reports an alert.",
        example: "80",
    },
    KeySpec {
        name: "pending_alert_hours",
        kind: KeyKind::Integer { min: 1, max: 720 },
        default: Some("72"),
        required: false,
        secret: false,
        description: "Records still waiting for upload after this many hours raise an alert (agent event, status, MDM feedback). They are never deleted for age: only the archive's acknowledgement deletes.",
        example: "72",
    },
    KeySpec {
        name: "heartbeat_hours",
        kind: KeyKind::Integer { min: 1, max: 168 },
        default: Some("24"),
        required: false,
        secret: false,
        description: "Interval of the agent's heartbeat event, recorded even when nothing is captured, with the counters since the last one. The archive flags devices silent for longer.",
        example: "24",
    },
    KeySpec {
        name: "fail_closed",
        kind: KeyKind::Bool,
        default: Some("true"),
        required: false,
        secret: false,
        description: "When capture cannot be guaranteed (not configured, queue full), block sending business messages.",
        example: "true",
    },
    KeySpec {
        name: "disclaimer_text",
        kind: KeyKind::Text,
        default: None,
        required: false,
        secret: false,
        description: "Notice shown to the employee that business conversations are recorded. Unset: the app's built-in notice.",
        example: "Business conversations on this line are recorded for regulatory purposes.",
    },
    KeySpec {
        name: "disclaimer_mode",
        kind: KeyKind::Enum(DISCLAIMER_MODES),
        default: Some("off"),
        required: false,
        secret: false,
        description: "When the app must show or send disclaimer_text: off, first_message (once per conversation) or daily (once per conversation per UTC day). Each showing is captured in the conversation.",
        example: "first_message",
    },
    KeySpec {
        name: "log_level",
        kind: KeyKind::Enum(LOG_LEVELS),
        default: Some("info"),
        required: false,
        secret: false,
        description: "Agent log verbosity. Logs never contain captured content or credentials.",
        example: "info",
    },
    KeySpec {
        name: "policy_version",
        kind: KeyKind::String,
        default: None,
        required: true,
        secret: false,
        description: "The admin's label for this policy revision, reported back through MDM feedback and recorded when applied.",
        example: "2026-01",
    },
    KeySpec {
        name: "backfill_days",
        kind: KeyKind::Integer { min: 0, max: 90 },
        default: Some("0"),
        required: false,
        secret: false,
        description: "Android, Google Messages archival: the first scan after enrolment also captures the phone's SMS, MMS and RCS history of the last this many days. 0: only what arrives from enrolment on.",
        example: "7",
    },
    KeySpec {
        name: "organization_name",
        kind: KeyKind::Text,
        default: None,
        required: false,
        secret: false,
        description: "The firm's name, in the notice Android shows while the phone's own messages are archived (Google Messages archival). Unset: the notice names no firm.",
        example: "Acme Capital",
    },
];

/// The schema row for `name`, if it is a known key.
pub fn spec(name: &str) -> Option<&'static KeySpec> {
    KEYS.iter().find(|k| k.name == name)
}

/// Whether `name` is a key whose value is a credential.
pub fn is_secret(name: &str) -> bool {
    spec(name).is_some_and(|k| k.secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_are_unique_snake_case() {
        for (i, k) in KEYS.iter().enumerate() {
            assert!(k.name.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{}", k.name);
            assert!(KEYS[..i].iter().all(|o| o.name != k.name), "duplicate {}", k.name);
        }
    }

    #[test]
    fn required_keys_have_no_default() {
        for k in KEYS {
            assert!(!(k.required && k.default.is_some()), "{} is required and has a default", k.name);
        }
    }

    #[test]
    fn all_channels_default_lists_every_channel() {
        let names: Vec<&str> = Channel::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(ALL_CHANNELS, names.join(","));
    }

    #[test]
    fn only_the_token_is_secret() {
        let secret: Vec<&str> = KEYS.iter().filter(|k| k.secret).map(|k| k.name).collect();
        assert_eq!(secret, ["device_token"]);
        assert!(is_secret("device_token"));
        assert!(!is_secret("archive_url"));
        assert!(!is_secret("no_such_key"));
    }

    #[test]
    fn descriptions_are_safe_in_xml_comments() {
        // The template puts descriptions in `<!-- -->`, where `--` is not allowed.
        for k in KEYS {
            assert!(!k.description.contains("--"), "{}", k.name);
            assert!(!k.description.is_empty(), "{}", k.name);
        }
    }
}
