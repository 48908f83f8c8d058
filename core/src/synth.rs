//! A synthetic, deterministic workload of conversation events: what `verbatim simulate`, the
//! demo, the benchmarks and the tests capture. Realistic in shape (several channels and
//! conversations, edits, unsends, reactions, attachments, calls, personal chats that policy
//! must drop), reproducible from a seed.
//!
//! The simulated employee's lines are [`Lines`]: by default this module's own
//! ([`BUSINESS_LINE`], [`BUSINESS_HANDLE`]), or those of the policy being simulated
//! ([`Lines::from_policy`]), so that a policy with real business lines captures something.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::model::{Attachment, Call, CallOutcome, Channel, Direction, Edit, Event, EventMeta, Message, Reaction, Unsend};
use crate::policy::Value;

/// The business line of the simulated employee.
pub const BUSINESS_LINE: &str = "+1 555 0100";
/// A second business handle (for OTT channels).
pub const BUSINESS_HANDLE: &str = "trader.jane@acme";
/// The employee's personal number: everything on it is out of scope.
pub const PERSONAL_LINE: &str = "+1 555 0199";

pub use crate::prng::Rng;

/// The simulated employee's lines: a phone number for SMS, MMS, RCS, iMessage and calls, a
/// handle for the messaging apps, and a personal number outside every business line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lines {
    pub phone: String,
    pub handle: String,
    pub personal: String,
}

/// Where the simulated lines came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinesSource {
    /// The policy's `business_lines`.
    Policy,
    /// This module's own lines: the policy had none the simulator can use.
    Builtin,
}

impl Default for Lines {
    fn default() -> Self {
        Lines { phone: BUSINESS_LINE.into(), handle: BUSINESS_HANDLE.into(), personal: PERSONAL_LINE.into() }
    }
}

impl Lines {
    /// The employee's lines taken from a policy's business lines (already normalised): the
    /// first phone number for phone channels and the first handle for the apps; when the policy
    /// has only one kind, it serves both. With no business line at all, the built-in lines.
    pub fn from_policy(policy: &crate::Policy) -> (Lines, LinesSource) {
        let is_phone = |line: &&String| !line.is_empty() && line.chars().all(|c| c.is_ascii_digit() || c == '+');
        let phone = policy.business_lines.iter().find(is_phone);
        let handle = policy.business_lines.iter().find(|l| !is_phone(l));
        let (phone, handle) = match (phone, handle) {
            (Some(p), Some(h)) => (p.clone(), h.clone()),
            (Some(only), None) | (None, Some(only)) => (only.clone(), only.clone()),
            (None, None) => return (Lines::default(), LinesSource::Builtin),
        };
        // A personal number on none of the business lines, so personal events stay out of scope.
        let personal = ["+1 555 0199", "+1 555 0198", "+44 20 7946 0999"]
            .into_iter()
            .find(|p| !policy.business_lines.contains(&crate::model::normalize_handle(p)))
            .unwrap_or("+1 555 0197")
            .to_string();
        (Lines { phone, handle, personal }, LinesSource::Policy)
    }
}

/// One generated event and what the policy should make of it.
#[derive(Debug, Clone)]
pub struct SynthEvent {
    pub event: Event,
    /// False for events the sample policy must drop (personal line, channel not captured).
    pub in_scope: bool,
}

impl SynthEvent {
    pub fn id(&self) -> &str {
        &self.event.meta().source_id
    }
}

/// Settings of a workload.
#[derive(Debug, Clone)]
pub struct WorkloadOptions {
    pub seed: u64,
    /// Prefix of every source id, so that several runs on one device never reuse an id.
    pub id_prefix: String,
    /// Text added to every message (tests use a unique marker to hunt for plaintext).
    pub body: Option<String>,
    /// Where attachment and recording files are written.
    pub file_dir: PathBuf,
    /// Every n-th attachment is large (`large_attachment_bytes`); 0 never.
    pub large_attachment_every: u64,
    pub large_attachment_bytes: usize,
    /// Base of source timestamps (ms since the Unix epoch).
    pub start_ms: i64,
    /// The simulated employee's lines.
    pub lines: Lines,
}

impl WorkloadOptions {
    pub fn new(seed: u64, file_dir: &Path) -> Self {
        WorkloadOptions {
            seed,
            id_prefix: format!("s{seed}"),
            body: None,
            file_dir: file_dir.to_path_buf(),
            large_attachment_every: 0,
            large_attachment_bytes: 4 * 1024 * 1024,
            start_ms: 1_767_225_600_000, // 2026-01-01T00:00:00Z
            lines: Lines::default(),
        }
    }
}

const CHANNELS: [Channel; 6] =
    [Channel::Sms, Channel::Imessage, Channel::Whatsapp, Channel::Signal, Channel::Telegram, Channel::Rcs];
const COUNTERPARTS: [&str; 5] = ["+44 20 7946 0001", "+44 20 7946 0002", "client.bob@fund", "+1 212 555 0147", "ops.desk@acme"];
const PHRASES: [&str; 6] = [
    "Can you confirm the fill on 10k XYZ at 41.20?",
    "Call me before the open about the rebalance.",
    "Sending the term sheet now, please review.",
    "Order acknowledged, working it.",
    "Let's move this to the recorded line.",
    "Price check on the 2031 bonds?",
];

/// Generates events; remembers sent messages so edits, unsends and reactions refer to them.
pub struct Workload {
    opts: WorkloadOptions,
    rng: Rng,
    n: u64,
    attachments: u64,
    sent: Vec<(Channel, String, String)>, // (channel, conversation, message id)
}

impl Workload {
    pub fn new(opts: WorkloadOptions) -> std::io::Result<Self> {
        std::fs::create_dir_all(&opts.file_dir)?;
        Ok(Workload { rng: Rng::new(opts.seed), opts, n: 0, attachments: 0, sent: Vec::new() })
    }

    fn meta(&mut self, channel: Channel, line: &str, conversation: String, kind: &str) -> EventMeta {
        self.n += 1;
        EventMeta {
            channel,
            line: line.to_string(),
            conversation_id: conversation,
            source_id: format!("{}-{kind}-{}", self.opts.id_prefix, self.n),
            source_time_ms: self.opts.start_ms + self.n as i64 * 1_000,
        }
    }

    fn text(&mut self) -> String {
        let phrase = PHRASES[self.rng.below(PHRASES.len() as u64) as usize];
        match &self.opts.body {
            Some(body) => format!("{phrase} {body}"),
            None => phrase.to_string(),
        }
    }

    fn business_line(&self, channel: Channel) -> String {
        match channel {
            Channel::Sms | Channel::Mms | Channel::Rcs | Channel::Imessage | Channel::Voice => self.opts.lines.phone.clone(),
            _ => self.opts.lines.handle.clone(),
        }
    }

    /// The next event of the mix.
    pub fn next_event(&mut self) -> std::io::Result<SynthEvent> {
        let roll = self.rng.below(100);
        let channel = CHANNELS[self.rng.below(CHANNELS.len() as u64) as usize];
        let line = self.business_line(channel);
        let counterpart = COUNTERPARTS[self.rng.below(COUNTERPARTS.len() as u64) as usize].to_string();
        let conversation = format!("conv-{}-{}", channel, self.rng.below(4));
        let target = (!self.sent.is_empty()).then(|| self.sent[self.rng.below(self.sent.len() as u64) as usize].clone());
        let event = match (roll, target) {
            (0..=4, _) => {
                // A personal chat: must be dropped before anything is stored.
                let personal = self.opts.lines.personal.clone();
                let meta = self.meta(channel, &personal, "conv-personal".into(), "personal");
                let text = self.text();
                return Ok(SynthEvent {
                    event: message(meta, Direction::Outbound, &personal, &counterpart, text),
                    in_scope: false,
                });
            }
            (5..=6, _) => {
                // A channel the sample policy does not capture.
                let handle = self.opts.lines.handle.clone();
                let meta = self.meta(Channel::Wechat, &handle, "conv-wechat".into(), "wechat");
                let text = self.text();
                return Ok(SynthEvent { event: message(meta, Direction::Inbound, &counterpart, &handle, text), in_scope: false });
            }
            (7..=14, Some((ch, conv, id))) => {
                let line = self.business_line(ch);
                let meta = self.meta(ch, &line, conv, "edit");
                let new_text = self.text();
                Event::Edit(Edit { meta, target_message_id: id, editor: line, new_text })
            }
            (15..=18, Some((ch, conv, id))) => {
                let line = self.business_line(ch);
                let meta = self.meta(ch, &line, conv, "unsend");
                Event::Unsend(Unsend { meta, target_message_id: id, actor: line })
            }
            (19..=26, Some((ch, conv, id))) => {
                let line = self.business_line(ch);
                let meta = self.meta(ch, &line, conv, "reaction");
                let removed = self.rng.below(5) == 0;
                Event::Reaction(Reaction { meta, target_message_id: id, actor: counterpart, reaction: "👍".into(), removed })
            }
            (27..=32, _) => self.attachment(channel, &line, conversation, counterpart)?,
            (33..=37, _) => self.call(counterpart)?,
            _ => {
                let meta = self.meta(channel, &line, conversation.clone(), "msg");
                let id = meta.source_id.clone();
                let text = self.text();
                let outbound = self.rng.below(2) == 0;
                let event = if outbound {
                    message(meta, Direction::Outbound, &line, &counterpart, text)
                } else {
                    message(meta, Direction::Inbound, &counterpart, &line, text)
                };
                self.sent.push((channel, conversation, id));
                if self.sent.len() > 64 {
                    self.sent.remove(0);
                }
                event
            }
        };
        Ok(SynthEvent { event, in_scope: true })
    }

    fn file(&mut self, name: &str, size: usize) -> std::io::Result<PathBuf> {
        let path = self.opts.file_dir.join(name);
        let mut f = std::fs::File::create(&path)?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut left = size;
        while left > 0 {
            let n = left.min(buf.len());
            self.rng.fill(&mut buf[..n]);
            f.write_all(&buf[..n])?;
            left -= n;
        }
        f.sync_all()?;
        Ok(path)
    }

    fn attachment(&mut self, channel: Channel, line: &str, conversation: String, counterpart: String) -> std::io::Result<Event> {
        self.attachments += 1;
        let meta = self.meta(channel, line, conversation, "att");
        let large = self.opts.large_attachment_every > 0 && self.attachments.is_multiple_of(self.opts.large_attachment_every);
        let size = if large { self.opts.large_attachment_bytes } else { 1_000 + self.rng.below(150_000) as usize };
        let name = format!("{}.pdf", meta.source_id);
        let path = self.file(&name, size)?;
        let inbound = self.rng.below(2) == 0;
        Ok(Event::Attachment(Attachment {
            message_id: None,
            direction: if inbound { Direction::Inbound } else { Direction::Outbound },
            sender: if inbound { counterpart } else { line.to_string() },
            file_name: name,
            mime_type: "application/pdf".into(),
            path,
            meta,
        }))
    }

    fn call(&mut self, counterpart: String) -> std::io::Result<Event> {
        let phone = self.opts.lines.phone.clone();
        let meta = self.meta(Channel::Voice, &phone, format!("call-{counterpart}"), "call");
        let started_ms = meta.source_time_ms;
        let outcome = [CallOutcome::Answered, CallOutcome::Answered, CallOutcome::Missed, CallOutcome::Voicemail]
            [self.rng.below(4) as usize];
        let (recording_path, ended_ms) = if outcome == CallOutcome::Answered {
            let name = format!("{}.m4a", meta.source_id);
            let size = 20_000 + self.rng.below(60_000) as usize;
            (Some(self.file(&name, size)?), Some(started_ms + 95_000))
        } else {
            (None, None)
        };
        Ok(Event::Call(Call {
            meta,
            direction: Direction::Inbound,
            participants: vec![counterpart, phone],
            started_ms,
            ended_ms,
            outcome,
            recording_mime_type: recording_path.as_ref().map(|_| "audio/mp4".into()),
            recording_path,
        }))
    }
}

fn message(meta: EventMeta, direction: Direction, sender: &str, recipient: &str, text: String) -> Event {
    Event::Message(Message {
        meta,
        direction,
        sender: sender.to_string(),
        recipients: vec![recipient.to_string()],
        text,
        attachment_ids: Vec::new(),
        reply_to: None,
    })
}

/// A complete, valid sample policy tree for the synthetic device, as an MDM would push it.
/// `overrides` replace or add keys.
pub fn sample_policy(archive_url: &str, archive_public_key: &[u8; 32], token: &str, overrides: &[(&str, Value)]) -> Value {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(archive_public_key);
    let s = |v: &str| Value::String(v.to_string());
    let mut map: BTreeMap<String, Value> = [
        ("archive_url", s(archive_url)),
        ("archive_public_key", Value::String(b64)),
        ("archive_key_id", s(&crate::seal::key_id(archive_public_key))),
        ("tenant_id", s("acme-securities")),
        ("device_token", s(token)),
        ("capture_channels", s("sms,mms,rcs,imessage,whatsapp,signal,telegram,voice")),
        ("business_lines", Value::List(vec![s(BUSINESS_LINE), s(BUSINESS_HANDLE)])),
        ("policy_version", s("2026.11-1")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (k, v) in overrides {
        map.insert(k.to_string(), v.clone());
    }
    Value::Dict(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy_with_lines(lines: &str) -> crate::Policy {
        let key = [7u8; 32];
        let tree = sample_policy("https://archive.acme.test", &key, "tok", &[("business_lines", Value::from(lines))]);
        crate::policy::parse(&tree).expect("valid").policy
    }

    #[test]
    fn lines_come_from_the_policy() {
        let (lines, source) = Lines::from_policy(&policy_with_lines("+1 646 555 0142, sam.lee@acme.test"));
        assert_eq!(source, LinesSource::Policy);
        assert_eq!(lines.phone, "+16465550142");
        assert_eq!(lines.handle, "sam.lee@acme.test");
        assert_eq!(lines.personal, "+1 555 0199");
    }

    #[test]
    fn one_kind_of_line_serves_both_and_the_personal_line_avoids_it() {
        let (lines, _) = Lines::from_policy(&policy_with_lines("+1 555 0199"));
        assert_eq!((lines.phone.as_str(), lines.handle.as_str()), ("+15550199", "+15550199"));
        assert_eq!(lines.personal, "+1 555 0198");
    }

    #[test]
    fn events_use_the_given_lines() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = WorkloadOptions::new(3, dir.path());
        let policy = policy_with_lines("+1 646 555 0142, sam.lee@acme.test");
        opts.lines = Lines::from_policy(&policy).0;
        let mut workload = Workload::new(opts).unwrap();
        let mut in_scope = 0;
        for _ in 0..200 {
            let e = workload.next_event().unwrap();
            let line = crate::model::normalize_handle(&e.event.meta().line);
            assert_eq!(policy.business_lines.contains(&line), e.in_scope || e.event.meta().channel == Channel::Wechat);
            in_scope += usize::from(e.in_scope);
        }
        assert!(in_scope > 150, "{in_scope}");
    }
}
