//! The WeCom (WeChat Work) chat archive (会话内容存档) as a capture source. The enterprise enables
//! archiving for chosen employees, their chats with colleagues and with external WeChat users
//! included; Tencent's Finance SDK ([`sdk`]) hands the records out in `seq` order, at most 1,000
//! per call. Each record names the version of the enterprise's RSA key its random key was
//! encrypted to (`publickey_ver`); the connector opens that key with the private key of the
//! version ([`Keys`]), and the SDK decrypts the message with it.
//!
//! A pass ([`Archive::pass`]) pulls from the last committed position to the end:
//! - each record is captured by the agent of its employee (the sender when archived, else the
//!   first archived recipient; [`Lines`]: one store and device stream per user id), with the mark
//!   `seq` = its sequence number in the same commit, so a crash between pull and commit pulls it
//!   again and a committed one is never captured twice (the position is the highest `seq` any
//!   line's store holds);
//! - text, images, files, voice, video (fetched by `sdkfileid`, streamed in as attachments; a
//!   failed fetch is recorded as `attachment_omitted`), recalls (`action: recall`) as unsends,
//!   group chats by `roomid`; other message types keep their JSON as the message text;
//! - a record whose key version has no private key stops the pass there, never skipped: every
//!   business line opens the could-not-record window `source_unavailable:wecom` until a pass
//!   gets past it (the admin adds the key), which closes it;
//! - messages of users not in `business_lines` store nothing.

pub mod sdk;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use base64::Engine;
use rsa::PrivateKey;
use serde::Serialize;
use serde_json::Value as Json;

use crate::agent::{Agent, CaptureOutcome};
use crate::error::{Error, ErrorKind, Result};
use crate::model::{Attachment, Channel, Direction, Event, EventMeta, Message, Unsend};
use crate::sources::Mark;
use crate::sources::connector::Lines;

pub use sdk::Sdk;

pub const SOURCE: &str = "wecom";
/// The mark of the last record committed to a line's store.
const POSITION: &str = "seq";
/// Records per `GetChatData` call: the SDK's maximum.
pub const PAGE: u32 = 1000;
/// Folder (in a line's data directory) that holds media while they are captured.
const INCOMING: &str = "incoming-media";

/// The enterprise's RSA private keys, by `publickey_ver`.
#[derive(Default)]
pub struct Keys {
    by_version: BTreeMap<u32, PrivateKey>,
}

impl Keys {
    /// Keys from PEM texts (PKCS#1 `RSA PRIVATE KEY` or PKCS#8 `PRIVATE KEY`), by version. The
    /// error names the version, never the key.
    pub fn from_pems(pems: impl IntoIterator<Item = (u32, String)>) -> Result<Keys> {
        use rsa::pkcs1::DecodeRsaPrivateKey;
        use rsa::pkcs8::DecodePrivateKey;
        let mut by_version = BTreeMap::new();
        for (version, pem) in pems {
            let key = PrivateKey::from_pkcs1_pem(&pem).or_else(|_| PrivateKey::from_pkcs8_pem(&pem)).map_err(|_| {
                Error::new(ErrorKind::Rejected, format!("WeCom key version {version}: not an RSA private key in PEM"))
            })?;
            by_version.insert(version, key);
        }
        Ok(Keys { by_version })
    }

    pub fn versions(&self) -> Vec<u32> {
        self.by_version.keys().copied().collect()
    }

    /// Opens a record's `encrypt_random_key` (base64 of RSA PKCS#1 v1.5) with the key of `version`.
    /// `None` when there is no key of that version.
    fn open(&self, version: u32, encrypted_b64: &str) -> Option<Result<String>> {
        let key = self.by_version.get(&version)?;
        let opened = (|| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encrypted_b64.trim())
                .map_err(|_| Error::new(ErrorKind::Rejected, "encrypt_random_key is not base64"))?;
            // PKCS#1 v1.5 with implicit rejection: a wrong key gives a wrong random key, which
            // the SDK then refuses (DecryptData checks it), never a padding oracle.
            let plain = key
                .pkcs1v15_decrypt(&bytes)
                .map_err(|_| Error::new(ErrorKind::Crypto, format!("the random key did not open with key version {version}")))?;
            String::from_utf8(plain).map_err(|_| {
                Error::new(ErrorKind::Crypto, format!("the random key opened with key version {version} is not text"))
            })
        })();
        Some(opened)
    }
}

/// What a pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PassReport {
    /// Event ids captured (msgid; `msgid/<type>` for media), in order.
    pub captured: Vec<String>,
    /// Records of users outside `business_lines`, and agent events (`switch`): nothing stored.
    pub not_business: u64,
    /// `GetChatData` calls made.
    pub pages: u64,
    /// The position after the pass: the last record handled.
    pub position: u64,
    /// The pass stopped at a record whose key version has no private key.
    pub missing_key_version: Option<u32>,
    /// Media recorded as omitted (the fetch failed).
    pub media_omitted: u64,
}

/// The connector: the SDK and the lines.
pub struct Archive {
    lines: Arc<Lines>,
    sdk: Sdk,
}

impl Archive {
    pub fn new(lines: Arc<Lines>, sdk: Sdk) -> Archive {
        Archive { lines, sdk }
    }

    pub fn lines(&self) -> &Arc<Lines> {
        &self.lines
    }

    /// The last committed position: the highest `seq` any line's store holds.
    pub async fn position(&self) -> Result<u64> {
        self.lines.open_existing().await?;
        let mut position = 0;
        for (_, agent) in self.lines.opened() {
            if let Some(v) = agent.source_value(SOURCE, POSITION)? {
                position = position.max(std::str::from_utf8(&v).ok().and_then(|t| t.parse().ok()).unwrap_or(0));
            }
        }
        Ok(position)
    }

    /// Pulls and captures every record after the last committed one. `on_durable` is called
    /// with each event id once durable. Stops at the first record that cannot be captured (an
    /// SDK error, a full queue): nothing after it is captured before it. Also stops, between two
    /// records, once `stop` is raised (a shutdown): the next pass goes on from there.
    pub async fn pass(&self, keys: &Keys, stop: &AtomicBool, on_durable: &mut (dyn FnMut(&str) + Send)) -> Result<PassReport> {
        let mut report = PassReport { position: self.position().await?, ..PassReport::default() };
        while !stop.load(Ordering::Acquire) {
            let page = self.sdk.chat_data(report.position, PAGE)?;
            report.pages += 1;
            let page: Json = serde_json::from_slice(&page)
                .map_err(|_| Error::new(ErrorKind::Rejected, "WeCom SDK GetChatData: the answer is not JSON"))?;
            if page["errcode"].as_i64().unwrap_or(0) != 0 {
                return Err(Error::new(
                    ErrorKind::Network,
                    format!("WeCom GetChatData: errcode {}", page["errcode"].as_i64().unwrap_or(-1)),
                ));
            }
            let records = page["chatdata"].as_array().cloned().unwrap_or_default();
            let mut progressed = false;
            for record in &records {
                let seq = record["seq"].as_u64().unwrap_or(0);
                if seq <= report.position {
                    continue;
                }
                if stop.load(Ordering::Acquire) {
                    return Ok(report);
                }
                let version = record["publickey_ver"].as_u64().unwrap_or(0) as u32;
                let Some(random_key) = keys.open(version, record["encrypt_random_key"].as_str().unwrap_or_default()) else {
                    self.missing_key(version, seq).await?;
                    report.missing_key_version = Some(version);
                    return Ok(report);
                };
                let plain = self.sdk.decrypt(&random_key?, record["encrypt_chat_msg"].as_str().unwrap_or_default())?;
                let message: Json = serde_json::from_slice(&plain)
                    .map_err(|_| Error::new(ErrorKind::Rejected, format!("WeCom record seq {seq}: the message is not JSON")))?;
                self.record(seq, &message, &mut report, on_durable).await?;
                report.position = seq;
                progressed = true;
            }
            if records.len() < PAGE as usize || !progressed {
                break;
            }
        }
        for (_, agent) in self.lines.opened() {
            agent.source_available(SOURCE).await?;
        }
        Ok(report)
    }

    /// A record's key version has no private key: every business line evidences that it cannot
    /// record from here on, until a pass gets past this record.
    async fn missing_key(&self, version: u32, seq: u64) -> Result<()> {
        tracing::warn!(version, seq, "wecom: no private key for this key version; capture stops here until it is given");
        let detail = format!("no private key for publickey_ver {version} (record seq {seq}); add it to --private-keys");
        let lines: Vec<String> = self.lines.policy().business_lines.iter().cloned().collect();
        for line in lines {
            if let Some(agent) = self.lines.agent(&line).await? {
                agent.source_unavailable(SOURCE, &detail).await?;
            }
        }
        Ok(())
    }

    /// One decrypted record.
    async fn record(&self, seq: u64, m: &Json, report: &mut PassReport, on_durable: &mut (dyn FnMut(&str) + Send)) -> Result<()> {
        let text = |v: &Json, k: &str| v.get(k).and_then(Json::as_str).unwrap_or_default().to_string();
        let (msgid, action, from) = (text(m, "msgid"), text(m, "action"), text(m, "from"));
        let tolist: Vec<String> =
            m["tolist"].as_array().map(|a| a.iter().filter_map(|t| t.as_str().map(str::to_string)).collect()).unwrap_or_default();
        // The employee whose line it is: the sender if archived, else the first archived recipient.
        let line = std::iter::once(&from).chain(&tolist).find(|u| self.lines.is_business(u)).cloned();
        let (Some(line), false) = (line, action == "switch" || msgid.is_empty()) else {
            report.not_business += 1;
            return Ok(());
        };
        let Some(agent) = self.lines.agent(&line).await? else { return Ok(()) };
        let direction = if from == line { Direction::Outbound } else { Direction::Inbound };
        let roomid = text(m, "roomid");
        let conversation = if !roomid.is_empty() {
            format!("room:{roomid}")
        } else {
            let other = if from == line { tolist.first().cloned().unwrap_or_default() } else { from.clone() };
            format!("wecom:{other}")
        };
        let time_ms = m["msgtime"].as_i64().unwrap_or(0);
        let meta = EventMeta {
            channel: Channel::Wechat,
            line: line.clone(),
            conversation_id: conversation,
            source_id: msgid.clone(),
            source_time_ms: time_ms,
        };
        let position = Mark::set(SOURCE, POSITION, seq.to_string());
        let msgtype = text(m, "msgtype");
        if action == "recall" {
            let target = m["revoke"]["pre_msgid"].as_str().unwrap_or_default().to_string();
            let event = Event::Unsend(Unsend { meta, target_message_id: target, actor: from });
            return self.capture(&agent, event, vec![position], report, on_durable).await;
        }
        let recipients = if tolist.is_empty() { vec![line.clone()] } else { tolist.clone() };
        let mut message = Message {
            meta,
            direction,
            sender: from.clone(),
            recipients,
            text: String::new(),
            attachment_ids: Vec::new(),
            reply_to: None,
        };
        match msgtype.as_str() {
            "text" => message.text = text(&m["text"], "content"),
            "image" | "file" | "voice" | "video" if m[&msgtype]["sdkfileid"].is_string() => {
                let o = &m[&msgtype];
                let attachment_id = format!("{msgid}/{msgtype}");
                let file_name = match msgtype.as_str() {
                    "file" => text(o, "filename"),
                    "image" => format!("{msgid}.jpg"),
                    "voice" => format!("{msgid}.amr"),
                    _ => format!("{msgid}.mp4"),
                };
                let mime = match msgtype.as_str() {
                    "image" => "image/jpeg",
                    "voice" => "audio/amr",
                    "video" => "video/mp4",
                    _ => "application/octet-stream",
                };
                let attachment = Attachment {
                    meta: EventMeta { source_id: attachment_id.clone(), ..message.meta.clone() },
                    message_id: Some(msgid.clone()),
                    direction,
                    sender: from.clone(),
                    file_name: if file_name.is_empty() { attachment_id.clone() } else { file_name },
                    mime_type: mime.into(),
                    path: format!("wecom-media:{}", text(o, "sdkfileid")).into(),
                };
                let seen = format!("media:{attachment_id}");
                if agent.source_value(SOURCE, &seen)?.is_none() {
                    self.capture_media(
                        &agent,
                        &text(o, "sdkfileid"),
                        attachment,
                        Mark::set(SOURCE, seen, b"1".to_vec()),
                        report,
                        on_durable,
                    )
                    .await?;
                }
                message.attachment_ids.push(attachment_id);
            }
            other => {
                let body = m.get(other).cloned().unwrap_or(Json::Null);
                message.text = if body.is_null() { format!("[{other}]") } else { format!("[{other}] {body}") };
            }
        }
        if message.text.is_empty() && message.attachment_ids.is_empty() {
            message.text = format!("[{msgtype}]");
        }
        self.capture(&agent, Event::Message(message), vec![position], report, on_durable).await
    }

    async fn capture(
        &self,
        agent: &Agent,
        event: Event,
        marks: Vec<Mark>,
        report: &mut PassReport,
        on_durable: &mut (dyn FnMut(&str) + Send),
    ) -> Result<()> {
        let id = event.meta().source_id.clone();
        match agent.capture_marked(event, marks).await? {
            CaptureOutcome::Captured { .. } => {
                on_durable(&id);
                report.captured.push(id);
            }
            CaptureOutcome::OutOfScope => report.not_business += 1,
        }
        Ok(())
    }

    /// Fetches a media file through the SDK and captures it; a failed fetch is recorded as
    /// omitted (metadata only), with the same mark.
    async fn capture_media(
        &self,
        agent: &Agent,
        sdkfileid: &str,
        mut attachment: Attachment,
        mark: Mark,
        report: &mut PassReport,
        on_durable: &mut (dyn FnMut(&str) + Send),
    ) -> Result<()> {
        let folder = agent.data_dir().join(INCOMING);
        std::fs::create_dir_all(&folder).map_err(|e| Error::new(ErrorKind::Storage, format!("{}: {e}", folder.display())))?;
        let path = folder.join(&hex::encode(agent.content_digest(SOURCE, attachment.meta.source_id.as_bytes()))[..32]);
        let max = agent.policy().map(|p| u64::from(p.max_attachment_mb) * 1024 * 1024).unwrap_or(0);
        let fetched = (|| {
            let mut file =
                std::fs::File::create(&path).map_err(|e| Error::new(ErrorKind::Storage, format!("{}: {e}", path.display())))?;
            let mut size = 0u64;
            self.sdk.media(sdkfileid, |chunk| {
                size += chunk.len() as u64;
                if size > max {
                    return Err(Error::new(ErrorKind::Rejected, "the media file is larger than max_attachment_mb"));
                }
                file.write_all(chunk).map_err(|e| Error::new(ErrorKind::Storage, format!("{}: {e}", path.display())))
            })
        })();
        let id = attachment.meta.source_id.clone();
        let result = match fetched {
            Ok(()) => {
                attachment.path = path.clone();
                self.capture(agent, Event::Attachment(attachment), vec![mark], report, on_durable).await
            }
            Err(e) => {
                tracing::warn!(error = %e, "wecom: media not fetched; recorded as omitted");
                let reason = format!("media not fetched from the WeCom archive: {}", e.detail);
                if let CaptureOutcome::Captured { .. } = agent.capture_attachment_omitted(attachment, &reason, vec![mark]).await?
                {
                    on_durable(&id);
                    report.media_omitted += 1;
                }
                Ok(())
            }
        };
        let _ = std::fs::remove_file(&path);
        result
    }
}

/// Removes media files a crash left behind (their records were not committed: the next pass
/// pulls them again).
pub fn clear_incoming(agent: &Agent) {
    let _ = std::fs::remove_dir_all(agent.data_dir().join(INCOMING));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_open_random_keys_of_their_version_only_and_never_name_the_key() {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        let key = <PrivateKey as rsa::Generate>::generate();
        let pem = key.to_pkcs1_pem(rsa::pkcs8::LineEnding::LF).unwrap().to_string();
        let keys = Keys::from_pems([(2, pem)]).unwrap();
        assert_eq!(keys.versions(), [2]);
        let wrapped = key.to_public_key().pkcs1v15_encrypt(b"random-key-0123456789").unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(wrapped);
        assert_eq!(keys.open(2, &b64).unwrap().unwrap(), "random-key-0123456789");
        assert!(keys.open(1, &b64).is_none(), "no key of version 1");
        assert!(keys.open(2, "not base64!").unwrap().is_err());
        // A damaged key file, its PEM label built at run time: no key block lives in the sources.
        let bad =
            Keys::from_pems([(3, format!("-----BEGIN {label}-----\nAAAA\n-----END {label}-----\n", label = "RSA PRIVATE KEY"))]);
        let e = bad.err().unwrap();
        assert!(e.detail.contains("version 3") && !e.detail.contains("AAAA"), "{e}");
    }
}
