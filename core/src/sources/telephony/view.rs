//! One wake-up's view of the Android Telephony provider, in the provider's own column names and
//! units (`content://sms`: `date` in milliseconds; `content://mms`: `date` in seconds; parts
//! and `addr` rows per MMS/RCS row). The platform layer (or `verbatim telephony replay`) fills
//! it; columns the source does not use are ignored when parsing.

use std::path::PathBuf;

use serde::Deserialize;

use crate::error::{Error, ErrorKind, Result};

/// `addr.type` of the sender (From), the recipients (To) and copies (Cc).
pub const ADDR_FROM: i64 = 137;
pub const ADDR_TO: i64 = 151;
pub const ADDR_CC: i64 = 130;
/// `ct_cls` of RCS rows in `content://mms` (NULL on real MMS).
pub const CT_CLS_RCS: i64 = 135;
/// Row `ct_t` of a shared location (its content is a text part holding a maps URL).
pub const CT_LOCATION: &str = "application/vnd.gsma.rcspushlocation+xml";

/// The whole provider at one wake-up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ProviderView {
    #[serde(default)]
    pub sms: Vec<SmsRow>,
    #[serde(default)]
    pub mms: Vec<MmsRow>,
}

/// A row of `content://sms` (SMS, and RCS messages that fell back to SMS).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct SmsRow {
    #[serde(rename = "_id")]
    pub id: i64,
    pub thread_id: i64,
    /// The peer.
    pub address: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub date: i64,
    /// 1 received, 2 sent; 3 draft, 4 outbox, 5 failed, 6 queued are not (yet) communications.
    #[serde(rename = "type")]
    pub kind: i64,
    pub body: Option<String>,
}

/// A row of `content://mms`: a real MMS, or an RCS message (`ct_cls` 135).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct MmsRow {
    #[serde(rename = "_id")]
    pub id: i64,
    pub thread_id: i64,
    /// Seconds since the Unix epoch.
    pub date: i64,
    /// 1 received, 2 sent; other boxes (drafts, outbox, failed) are not (yet) communications.
    pub msg_box: i64,
    pub ct_cls: Option<i64>,
    pub ct_t: Option<String>,
    #[serde(default)]
    pub parts: Vec<Part>,
    #[serde(default)]
    pub addr: Vec<Addr>,
}

/// A row of `content://mms/part`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record), uniffi(name = "MmsPart"))]
pub struct Part {
    #[serde(rename = "_id")]
    pub id: i64,
    /// Content type: `text/plain`, `image/jpeg`, `application/smil`, ...
    pub ct: String,
    /// Inline text of a text part.
    pub text: Option<String>,
    pub name: Option<String>,
    #[serde(rename = "fn")]
    pub file_name: Option<String>,
    /// Set on media parts: their bytes are read separately (`content://mms/part/<_id>`).
    #[serde(rename = "_data")]
    pub data: Option<String>,
    /// Where the platform put the part's bytes for the agent to stream (set by the caller, not
    /// a provider column).
    #[serde(skip)]
    pub file: Option<PathBuf>,
}

/// A row of `content://mms/<id>/addr`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record), uniffi(name = "MmsAddr"))]
pub struct Addr {
    pub address: String,
    #[serde(rename = "type")]
    pub kind: i64,
}

impl SmsRow {
    /// Received or sent: a communication. Drafts, the outbox and failed sends are not yet.
    pub fn is_final(&self) -> bool {
        matches!(self.kind, 1 | 2)
    }

    pub fn outbound(&self) -> bool {
        self.kind == 2
    }
}

impl MmsRow {
    pub fn is_final(&self) -> bool {
        matches!(self.msg_box, 1 | 2)
    }

    pub fn outbound(&self) -> bool {
        self.msg_box == 2
    }

    pub fn is_rcs(&self) -> bool {
        self.ct_cls == Some(CT_CLS_RCS)
    }

    /// The text parts joined, in part order (a shared location's maps URL is one of them).
    pub fn text(&self) -> String {
        let mut parts: Vec<&Part> = self.parts.iter().filter(|p| p.is_text()).collect();
        parts.sort_by_key(|p| p.id);
        parts.iter().filter_map(|p| p.text.as_deref()).collect::<Vec<_>>().join("\n")
    }

    /// Parts whose bytes are the message's media (images, video, voice notes, vCards).
    pub fn media(&self) -> impl Iterator<Item = &Part> {
        self.parts.iter().filter(|p| p.is_media())
    }

    /// The authoritative sender (`addr` type 137), if the row names one.
    pub fn from(&self) -> Option<&str> {
        self.addr.iter().find(|a| a.kind == ADDR_FROM).map(|a| a.address.as_str())
    }

    /// Recipients (`addr` types 151 and 130), in provider order.
    pub fn to(&self) -> Vec<&str> {
        self.addr.iter().filter(|a| a.kind == ADDR_TO || a.kind == ADDR_CC).map(|a| a.address.as_str()).collect()
    }
}

impl Part {
    pub fn is_text(&self) -> bool {
        self.ct.eq_ignore_ascii_case("text/plain") && self.data.is_none()
    }

    /// Media: any part with bytes of its own, except the SMIL layout of a real MMS.
    pub fn is_media(&self) -> bool {
        !self.is_text() && !self.ct.eq_ignore_ascii_case("application/smil") && self.data.is_some()
    }
}

const DAY_MS: i64 = 24 * 3600 * 1000;
/// Milliseconds since 2001 are above this; seconds until 2286 stay below [`SECONDS_CEILING`].
const MS_FLOOR: i64 = 978_307_200_000;
const SECONDS_CEILING: i64 = 10_000_000_000;

fn bad(what: String) -> Error {
    Error::new(ErrorKind::InvalidEvent, what)
}

/// Refuses an SMS row the provider could not have written, naming the row and the field
/// (never a value: it could be a message's text).
pub fn check_sms(r: &SmsRow, now_ms: i64) -> Result<()> {
    if r.id <= 0 {
        return Err(bad(format!("sms _id {}: not a positive provider id", r.id)));
    }
    if r.date < MS_FLOOR || r.date > now_ms + DAY_MS {
        let hint = if r.date > 0 && r.date < SECONDS_CEILING { "; this looks like seconds" } else { "" };
        return Err(bad(format!(
            "sms _id {}: date must be milliseconds since the Unix epoch (content://sms), not in the future{hint}",
            r.id
        )));
    }
    Ok(())
}

/// Refuses an MMS/RCS row the provider could not have written, naming the row and the field.
pub fn check_mms(r: &MmsRow, now_ms: i64) -> Result<()> {
    if r.id <= 0 {
        return Err(bad(format!("mms _id {}: not a positive provider id", r.id)));
    }
    if r.date <= MS_FLOOR / 1000 || r.date >= SECONDS_CEILING || r.date * 1000 > now_ms + DAY_MS {
        let hint = if r.date >= SECONDS_CEILING { "; this looks like milliseconds" } else { "" };
        return Err(bad(format!(
            "mms _id {}: date must be seconds since the Unix epoch (content://mms), not in the future{hint}",
            r.id
        )));
    }
    if let Some(p) = r.parts.iter().find(|p| p.id <= 0) {
        return Err(bad(format!("mms _id {}: part _id {} is not a positive provider id", r.id, p.id)));
    }
    Ok(())
}

impl ProviderView {
    /// Refuses a view the provider could not have produced (bad units, ids not unique), by
    /// row and field, before anything is captured from it.
    pub fn check(&self, now_ms: i64) -> Result<()> {
        let mut ids = std::collections::BTreeSet::new();
        for r in &self.sms {
            check_sms(r, now_ms)?;
            if !ids.insert(("sms", r.id)) {
                return Err(bad(format!("sms _id {}: not a unique provider id", r.id)));
            }
        }
        for r in &self.mms {
            check_mms(r, now_ms)?;
            if !ids.insert(("mms", r.id)) {
                return Err(bad(format!("mms _id {}: not a unique provider id", r.id)));
            }
        }
        Ok(())
    }
}
