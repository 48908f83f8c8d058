//! WhatsApp Business app numbers onboarded to the Cloud API ("coexistence") as a capture
//! source. The employee keeps using the WhatsApp Business app; Meta posts a webhook to the
//! firm's endpoint for every message received (`messages`), every message the employee sends
//! from the app or a linked device, with its edits and revokes (`smb_message_echoes`), the
//! history shared at onboarding (`history`), and contact changes (`smb_app_state_sync`).
//!
//! A delivery ([`Webhook::deliver`]):
//! 1. `X-Hub-Signature-256` (HMAC-SHA256 of the raw body under the app secret) is checked in
//!    constant time before anything of the body is read; a bad one is refused and counted.
//! 2. The body is planned ([`payload`]): one item per WhatsApp message, on its business line.
//! 3. Each item on a business line is captured by that line's agent ([`Lines`]) with the mark
//!    `wamid:<wamid>` in the same commit, so a redelivery, a replay or a batch that repeats a
//!    message captures nothing twice. Media bytes are fetched from the Graph API and captured
//!    as an attachment before the message naming them; a failed fetch is recorded as
//!    `attachment_omitted` and retried later ([`Webhook::retry_media`]) under the same id.
//! 4. Only when every item is durable (or was already) does the delivery succeed: the endpoint
//!    answers 200 then, and 5xx otherwise, so Meta delivers again.
//!
//! Status callbacks (sent, delivered, read) and contact syncs change nothing archived. Lines
//! not in the policy's `business_lines` store nothing.

mod media;
pub mod payload;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::agent::{Agent, CaptureOutcome};
use crate::error::{Error, ErrorKind};
use crate::model::{Attachment, Event};
use crate::secret::Secret;
use crate::sources::Mark;
use crate::sources::connector::Lines;

pub use media::{Graph, clear_incoming};
use payload::{Item, MediaRef, Plan};

pub const SOURCE: &str = "whatsapp";
/// Marks of captured messages: `wamid:<wamid>`.
const SEEN: &str = "wamid:";
/// Marks of media recorded as omitted, to fetch again: `retry:<attachment id>` → JSON.
const RETRY: &str = "retry:";

/// Why a delivery was not acknowledged.
#[derive(Debug)]
pub enum Refusal {
    /// `X-Hub-Signature-256` missing or wrong: answered 401, counted, nothing read.
    BadSignature,
    /// Signed, but not a webhook payload (names the field): answered 400.
    Malformed(String),
    /// Some item is not durable (queue full, disk full, a store error): answered 503 so that
    /// Meta delivers again; what was captured stays, and is not captured again then.
    NotDurable(Error),
}

/// What a delivery did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Delivery {
    /// Event ids captured now (`wamid`, `wamid/<media type>` for attachments), in order.
    pub captured: Vec<String>,
    /// Messages captured by an earlier delivery.
    pub duplicates: u64,
    /// Messages on lines outside the policy's scope: nothing stored.
    pub out_of_scope: u64,
    /// Status callbacks, contact syncs and other fields: nothing archived.
    pub ignored: u64,
    /// Media whose bytes could not be fetched: recorded as omitted, to be retried.
    pub media_omitted: u64,
    /// Messages no event could be made of: evidenced as uncaptured communications.
    pub refused: u64,
}

/// The webhook endpoint's logic: everything but HTTP.
pub struct Webhook {
    lines: Arc<Lines>,
    app_secret: Secret,
    verify_token: Secret,
    graph: Option<Graph>,
    bad_signatures: AtomicU64,
    /// `(line, wamid)` being captured by some delivery right now: a concurrent redelivery of
    /// the same message is answered 503 and comes again, instead of racing it.
    in_flight: Mutex<HashSet<(String, String)>>,
}

/// Checks `X-Hub-Signature-256: sha256=<hex>` over `body`, in constant time.
pub fn signature_valid(app_secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    let Some(hex_sig) = header.and_then(|h| h.trim().strip_prefix("sha256=")) else { return false };
    let Ok(expected) = hex::decode(hex_sig) else { return false };
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(app_secret).expect("HMAC takes a key of any length");
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// The `X-Hub-Signature-256` value for `body` (for tests and the benchmark, which sign as Meta).
pub fn sign(app_secret: &[u8], body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(app_secret).expect("HMAC takes a key of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl Webhook {
    pub fn new(lines: Arc<Lines>, app_secret: Secret, verify_token: Secret, graph: Option<Graph>) -> Webhook {
        Webhook {
            lines,
            app_secret,
            verify_token,
            graph,
            bad_signatures: AtomicU64::new(0),
            in_flight: Mutex::new(HashSet::new()),
        }
    }

    pub fn lines(&self) -> &Arc<Lines> {
        &self.lines
    }

    /// Deliveries refused for their signature since start.
    pub fn bad_signatures(&self) -> u64 {
        self.bad_signatures.load(Ordering::Relaxed)
    }

    /// The subscription handshake (`GET ?hub.mode=subscribe&hub.verify_token=..&hub.challenge=..`):
    /// the challenge to echo when the token matches (compared in constant time), else `None`.
    pub fn handshake<'a>(&self, mode: Option<&str>, token: Option<&str>, challenge: Option<&'a str>) -> Option<&'a str> {
        let token = token?;
        let same: bool = token.as_bytes().ct_eq(self.verify_token.expose().as_bytes()).into();
        (mode == Some("subscribe") && same).then_some(challenge?)
    }

    /// Handles one POSTed body with its `X-Hub-Signature-256` header. `on_durable` is called
    /// with each event id once it is durable (before the delivery's answer).
    pub async fn deliver(
        &self,
        body: &[u8],
        signature: Option<&str>,
        on_durable: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Delivery, Refusal> {
        if !signature_valid(self.app_secret.expose().as_bytes(), body, signature) {
            let n = self.bad_signatures.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(refused_so_far = n, "whatsapp: a webhook with a missing or wrong signature was refused");
            return Err(Refusal::BadSignature);
        }
        let planned = payload::plan(body).map_err(|m| Refusal::Malformed(m.0))?;
        let mut delivery = Delivery { ignored: planned.statuses + planned.ignored, ..Delivery::default() };
        for item in planned.items {
            self.item(item, &mut delivery, on_durable).await.map_err(Refusal::NotDurable)?;
        }
        Ok(delivery)
    }

    async fn item(&self, item: Item, delivery: &mut Delivery, on_durable: &mut (dyn FnMut(&str) + Send)) -> Result<(), Error> {
        let Some(agent) = self.lines.agent(&item.line).await? else {
            delivery.out_of_scope += 1;
            return Ok(());
        };
        let claim = (item.line.clone(), item.wamid.clone());
        if !self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).insert(claim.clone()) {
            // Not a full queue: nothing to upload, only to deliver again in a moment.
            return Err(Error::new(ErrorKind::Rejected, "the same message is being captured by another delivery"));
        }
        let result = self.capture_item(&agent, item, delivery, on_durable).await;
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&claim);
        if let Err(e) = &result
            && matches!(e.kind, ErrorKind::QueueFull | ErrorKind::DiskFull)
        {
            tracing::warn!(
                error = e.kind.as_str(),
                "whatsapp: a delivery is not durable; answering 503 so that Meta delivers again"
            );
        }
        result
    }

    async fn capture_item(
        &self,
        agent: &Agent,
        item: Item,
        delivery: &mut Delivery,
        on_durable: &mut (dyn FnMut(&str) + Send),
    ) -> Result<(), Error> {
        let seen = format!("{SEEN}{}", item.wamid);
        if agent.source_value(SOURCE, &seen)?.is_some() {
            delivery.duplicates += 1;
            return Ok(());
        }
        let done = || Mark::set(SOURCE, seen.clone(), b"1".to_vec());
        match item.plan {
            Plan::Event(event) => {
                let id = event.meta().source_id.clone();
                self.capture(agent, event, vec![done()], delivery, &id, on_durable).await
            }
            Plan::Media { media, attachment, message } => {
                let attachment_id = attachment.meta.source_id.clone();
                let part = format!("{SEEN}{attachment_id}");
                if agent.source_value(SOURCE, &part)?.is_none() {
                    self.capture_media(
                        agent,
                        &media,
                        *attachment,
                        vec![Mark::set(SOURCE, part, b"1".to_vec())],
                        delivery,
                        on_durable,
                    )
                    .await?;
                }
                let id = message.meta.source_id.clone();
                self.capture(agent, Event::Message(*message), vec![done()], delivery, &id, on_durable).await
            }
            Plan::Refused { meta, direction, reason } => {
                tracing::warn!(reason, "whatsapp: a message no event could be made of; evidenced");
                agent.report_uncaptured(&meta, direction, &reason).await?;
                agent.save_marks(vec![done()]).await?;
                delivery.refused += 1;
                Ok(())
            }
        }
    }

    async fn capture(
        &self,
        agent: &Agent,
        event: Event,
        marks: Vec<Mark>,
        delivery: &mut Delivery,
        id: &str,
        on_durable: &mut (dyn FnMut(&str) + Send),
    ) -> Result<(), Error> {
        let meta = event.meta().clone();
        let direction = match &event {
            Event::Message(m) => m.direction,
            Event::Attachment(a) => a.direction,
            _ => crate::model::Direction::Inbound,
        };
        match agent.capture_marked(event, marks.clone()).await {
            Ok(CaptureOutcome::Captured { .. }) => {
                on_durable(id);
                delivery.captured.push(id.to_string());
                Ok(())
            }
            Ok(CaptureOutcome::OutOfScope) => {
                delivery.out_of_scope += 1;
                Ok(())
            }
            // A message the agent refuses (a time far ahead, an id too long): evidenced and
            // remembered, so the delivery is acknowledged and not sent again forever.
            Err(e) if e.kind == ErrorKind::InvalidEvent => {
                tracing::warn!(error = %e, "whatsapp: the agent refused a message; evidenced");
                agent.report_uncaptured(&meta, direction, &format!("refused by the agent: {}", e.detail)).await?;
                agent.save_marks(marks).await?;
                delivery.refused += 1;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Fetches and captures a media attachment; a failed fetch records it as omitted, with a
    /// retry mark in the same commit.
    async fn capture_media(
        &self,
        agent: &Agent,
        media: &MediaRef,
        mut attachment: Attachment,
        mut marks: Vec<Mark>,
        delivery: &mut Delivery,
        on_durable: &mut (dyn FnMut(&str) + Send),
    ) -> Result<(), Error> {
        let id = attachment.meta.source_id.clone();
        let max = agent.policy().map(|p| u64::from(p.max_attachment_mb) * 1024 * 1024).unwrap_or(0);
        let fetched = match &self.graph {
            None => Err(Error::new(ErrorKind::NotConfigured, "no Graph API access token was given")),
            Some(graph) => graph.fetch(media, agent.data_dir(), max.max(1)).await,
        };
        match fetched {
            Ok(path) => {
                attachment.path = path.clone();
                let result = self.capture(agent, Event::Attachment(attachment), marks, delivery, &id, on_durable).await;
                let _ = std::fs::remove_file(&path);
                result
            }
            Err(e) => {
                tracing::warn!(error = %e, "whatsapp: media not fetched; recorded as omitted, retried later");
                let retry = RetryEntry { media: media.clone(), attachment: attachment.clone() };
                marks.push(Mark::set(SOURCE, format!("{RETRY}{id}"), serde_json::to_vec(&retry).expect("serialises")));
                let reason = format!("media not fetched yet from the Graph API: {}", e.detail);
                match agent.capture_attachment_omitted(attachment, &reason, marks).await? {
                    CaptureOutcome::Captured { .. } => {
                        on_durable(&id);
                        delivery.media_omitted += 1;
                    }
                    CaptureOutcome::OutOfScope => delivery.out_of_scope += 1,
                }
                Ok(())
            }
        }
    }

    /// Fetches again the media recorded as omitted, on every opened line; each one fetched is
    /// captured under its attachment id with its retry mark forgotten in the same commit.
    /// `on_durable` is called with each attachment id captured. Returns how many were.
    pub async fn retry_media(&self, on_durable: &mut (dyn FnMut(&str) + Send)) -> Result<u64, Error> {
        let mut captured = 0;
        for (_, agent) in self.lines.opened() {
            let keys = agent.source_keys(SOURCE, RETRY, "retry;", 256)?;
            for key in keys {
                let Some(entry) = agent.source_value(SOURCE, &key)? else { continue };
                let Ok(entry) = serde_json::from_slice::<RetryEntry>(&entry) else {
                    agent.save_marks(vec![Mark::forget(SOURCE, key)]).await?;
                    continue;
                };
                let Some(graph) = &self.graph else { return Ok(captured) };
                let max = agent.policy().map(|p| u64::from(p.max_attachment_mb) * 1024 * 1024).unwrap_or(1);
                let Ok(path) = graph.fetch(&entry.media, agent.data_dir(), max.max(1)).await else { continue };
                let attachment = Attachment { path: path.clone(), ..entry.attachment };
                let id = attachment.meta.source_id.clone();
                let result = agent.capture_marked(Event::Attachment(attachment), vec![Mark::forget(SOURCE, key)]).await;
                let _ = std::fs::remove_file(&path);
                if matches!(result?, CaptureOutcome::Captured { .. }) {
                    on_durable(&id);
                    captured += 1;
                }
            }
        }
        Ok(captured)
    }
}

/// A media recorded as omitted, remembered to be fetched again (ids and names, no content).
#[derive(Serialize, serde::Deserialize)]
struct RetryEntry {
    media: MediaRef,
    attachment: Attachment,
}

#[cfg(test)]
mod tests;
