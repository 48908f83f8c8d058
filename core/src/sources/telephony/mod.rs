//! The Android Telephony provider as a capture source: Google Messages' archival mode on a
//! fully managed phone. Google Messages only wakes the archival app (the broadcast carries no
//! payload), so at every wake-up the platform layer reads the whole provider (`content://sms`,
//! `content://mms` with its parts and addresses) into a [`ProviderView`], and [`scan`] turns
//! the difference from what it saw before into events:
//! - a new received or sent row → a message (SMS, MMS, or RCS when `ct_cls` is 135), its media
//!   parts → attachments; a shared location is its text part (the maps URL);
//! - an RCS edit, which the provider stores as a *new* row with the same thread, sender and
//!   time as the original and another body → an `Edit` of the original, never a second message;
//! - a tapback row (`<emoji> to "<quoted text>"`) → a `Reaction` when the quoted text is the
//!   body of exactly one remembered message of the thread; otherwise a message with its text;
//! - a captured row gone from the provider → an `Unsend` (evidence; nothing archived is ever
//!   deleted);
//! - status changes (delivered, read), drafts and the outbox, repeated wake-ups and an unchanged
//!   provider → nothing.
//!
//! The first scan takes a baseline of the provider without capturing its history, except the
//! last `backfill_days` days. What was seen is remembered as marks that commit with the
//! capture they belong to ([`crate::sources`]), so a crash between reading and capturing, or a
//! re-scan, captures nothing twice and misses nothing. Event ids are the provider's:
//! `sms:<_id>` and `mms:<_id>` (never reused by the provider), parts `mms:<_id>/part:<_id>`.

mod mapping;
pub mod memory;
pub mod view;

use std::collections::BTreeSet;

use serde::Serialize;

use crate::agent::{Agent, CaptureOutcome};
use crate::error::{Error, ErrorKind, Result};
use crate::model::{Channel, Event, normalize_handle};
use crate::sources::Mark;
use memory::{BASELINE_KEY, Fate, SOURCE, Seen};
pub use view::{Addr, MmsRow, Part, ProviderView, SmsRow};

const DAY_MS: i64 = 24 * 3600 * 1000;

/// How a scan runs.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// The phone's own number: the business line (the policy's first business line).
    pub line: String,
    /// On the first scan, capture the history of the last this many days (0: none).
    pub backfill_days: u32,
    pub now_ms: i64,
}

/// What one scan captured, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ScanReport {
    /// `(kind, provider id)` of every event handed to the agent: `message`, `edit`, `reaction`,
    /// `unsend`, `attachment`.
    pub events: Vec<(&'static str, String)>,
    /// Rows the first scan took as history.
    pub baseline: u64,
    /// Rows the agent dropped as out of the policy's scope.
    pub out_of_scope: u64,
    /// Rows already seen, untouched.
    pub unchanged: u64,
}

impl ScanReport {
    pub fn count(&self, kind: &str) -> usize {
        self.events.iter().filter(|(k, _)| *k == kind).count()
    }
}

/// Scans one view of the provider (see the module documentation). Returns at the first
/// capture that fails (not configured, queue full): what was captured before it is kept and
/// remembered, the rest is offered again at the next scan. Background-only.
pub async fn scan(agent: &Agent, view: &ProviderView, options: &ScanOptions) -> Result<ScanReport> {
    view.check(options.now_ms)?;
    let state = agent.source_state(SOURCE)?;
    let mut seen = memory::rows(&state);
    let parts_done: BTreeSet<String> = state.keys().filter(|k| k.contains("/part:")).cloned().collect();
    let mut report = ScanReport::default();
    let mut scan = Scan { agent, options, line: normalize_handle(&options.line), report: &mut report };

    let rows = view.final_rows();
    if !state.contains_key(BASELINE_KEY) {
        let since = if options.backfill_days == 0 { i64::MAX } else { options.now_ms - options.backfill_days as i64 * DAY_MS };
        let mut marks = Vec::new();
        for row in rows.iter().filter(|r| r.time_ms() < since) {
            let s = scan.remembered(row, Fate::Baseline, None);
            marks.push(s.mark(&row.key()));
            seen.insert(row.key(), s);
        }
        scan.report.baseline = marks.len() as u64;
        marks.push(Mark::set(SOURCE, BASELINE_KEY, options.now_ms.to_string()));
        agent.save_marks(marks).await?;
    }

    for row in &rows {
        let key = row.key();
        if seen.contains_key(&key) {
            scan.report.unchanged += 1;
            continue;
        }
        let s = scan.capture_new(row, &seen, &parts_done).await?;
        seen.insert(key, s);
    }

    // Rows gone from the provider (in any box): a captured message's deletion is evidence.
    let present = view.all_keys();
    for (key, s) in &seen {
        if present.contains(key) {
            continue;
        }
        match s.fate {
            Fate::Captured => scan.capture_unsend(key, s).await?,
            // History, edits and reactions gone: nothing to say; forget them.
            Fate::Baseline | Fate::Edit | Fate::Reaction => agent.save_marks(vec![Mark::forget(SOURCE, key.clone())]).await?,
            Fate::Deleted => {}
        }
    }
    Ok(report)
}

/// One provider row of either table.
#[derive(Debug, Clone, Copy)]
enum Row<'a> {
    Sms(&'a SmsRow),
    Mms(&'a MmsRow),
}

impl Row<'_> {
    fn key(&self) -> String {
        match self {
            Row::Sms(r) => format!("sms:{}", r.id),
            Row::Mms(r) => format!("mms:{}", r.id),
        }
    }

    fn time_ms(&self) -> i64 {
        match self {
            Row::Sms(r) => r.date,
            Row::Mms(r) => r.date * 1000,
        }
    }

    fn thread(&self) -> i64 {
        match self {
            Row::Sms(r) => r.thread_id,
            Row::Mms(r) => r.thread_id,
        }
    }

    fn outbound(&self) -> bool {
        match self {
            Row::Sms(r) => r.outbound(),
            Row::Mms(r) => r.outbound(),
        }
    }

    fn channel(&self) -> Channel {
        match self {
            Row::Sms(_) => Channel::Sms,
            Row::Mms(r) if r.is_rcs() => Channel::Rcs,
            Row::Mms(_) => Channel::Mms,
        }
    }

    fn text(&self) -> String {
        match self {
            Row::Sms(r) => r.body.clone().unwrap_or_default(),
            Row::Mms(r) => r.text(),
        }
    }
}

impl ProviderView {
    /// Received and sent rows of both tables, oldest first.
    fn final_rows(&self) -> Vec<Row<'_>> {
        let mut rows: Vec<Row<'_>> = self.sms.iter().filter(|r| r.is_final()).map(Row::Sms).collect();
        rows.extend(self.mms.iter().filter(|r| r.is_final()).map(Row::Mms));
        rows.sort_by_key(|r| (r.time_ms(), r.key()));
        rows
    }

    /// The provider ids of every row, whatever its box.
    fn all_keys(&self) -> BTreeSet<String> {
        let sms = self.sms.iter().map(|r| format!("sms:{}", r.id));
        sms.chain(self.mms.iter().map(|r| format!("mms:{}", r.id))).collect()
    }

    /// Refuses a view the provider could not have produced, naming the row and the field,
    /// before anything is captured from it.
    pub fn check(&self, now_ms: i64) -> Result<()> {
        let bad = |what: String| Error::new(ErrorKind::InvalidEvent, what);
        // Milliseconds since 2001 are above 1e12; seconds until 2286 stay below 1e10.
        let (ms_floor, s_ceiling) = (978_307_200_000_i64, 10_000_000_000_i64);
        let mut ids = BTreeSet::new();
        for r in &self.sms {
            if r.id <= 0 || !ids.insert(("sms", r.id)) {
                return Err(bad(format!("sms _id {}: not a positive, unique provider id", r.id)));
            }
            if r.date < ms_floor || r.date > now_ms + DAY_MS {
                return Err(bad(format!(
                    "sms _id {}: date must be milliseconds since the Unix epoch (content://sms), not in the future{}",
                    r.id,
                    if r.date > 0 && r.date < s_ceiling { "; this looks like seconds" } else { "" }
                )));
            }
        }
        for r in &self.mms {
            if r.id <= 0 || !ids.insert(("mms", r.id)) {
                return Err(bad(format!("mms _id {}: not a positive, unique provider id", r.id)));
            }
            if r.date <= ms_floor / 1000 || r.date >= s_ceiling || r.date * 1000 > now_ms + DAY_MS {
                return Err(bad(format!(
                    "mms _id {}: date must be seconds since the Unix epoch (content://mms), not in the future{}",
                    r.id,
                    if r.date >= s_ceiling { "; this looks like milliseconds" } else { "" }
                )));
            }
            for p in &r.parts {
                if p.id <= 0 {
                    return Err(bad(format!("mms _id {}: part _id {} is not a positive provider id", r.id, p.id)));
                }
            }
        }
        Ok(())
    }
}

/// One scan's working state.
struct Scan<'a> {
    agent: &'a Agent,
    options: &'a ScanOptions,
    /// The business line, normalised.
    line: String,
    report: &'a mut ScanReport,
}

impl Scan<'_> {
    fn digest(&self, text: &str) -> String {
        hex::encode(self.agent.content_digest(SOURCE, text.as_bytes()))
    }

    /// What to remember of `row`.
    fn remembered(&self, row: &Row<'_>, fate: Fate, refers_to: Option<String>) -> Seen {
        let sender = mapping::sender(row, &self.options.line).map(|s| normalize_handle(&s)).unwrap_or_default();
        Seen {
            fate,
            channel: row.channel(),
            thread: row.thread(),
            time_ms: row.time_ms(),
            outbound: row.outbound(),
            sender: self.digest(&sender),
            body: self.digest(&row.text()),
            refers_to,
        }
    }

    async fn capture(&mut self, kind: &'static str, id: String, event: Event, marks: Vec<Mark>) -> Result<()> {
        match self.agent.capture_marked(event, marks).await? {
            CaptureOutcome::Captured { .. } => self.report.events.push((kind, id)),
            CaptureOutcome::OutOfScope => self.report.out_of_scope += 1,
        }
        Ok(())
    }

    /// A row not seen before: an edit, a reaction, or a message with its attachments.
    async fn capture_new(
        &mut self,
        row: &Row<'_>,
        seen: &std::collections::BTreeMap<String, Seen>,
        parts_done: &BTreeSet<String>,
    ) -> Result<Seen> {
        let key = row.key();
        let plain = self.remembered(row, Fate::Captured, None);
        let (options, business) = (self.options, self.line.clone());
        let m = mapping::Mapping { row, key: &key, line: &options.line, business: &business };

        if let Row::Mms(mms) = row
            && mms.is_rcs()
            && let Some(original) = seen.iter().find(|(_, s)| {
                matches!(s.fate, Fate::Captured | Fate::Baseline)
                    && s.thread == plain.thread
                    && s.time_ms == plain.time_ms
                    && s.sender == plain.sender
                    && s.body != plain.body
            })
        {
            let (original, _) = original;
            let s = Seen { fate: Fate::Edit, refers_to: Some(original.clone()), ..plain };
            let event = m.edit(original)?;
            self.capture("edit", key.clone(), event, vec![s.mark(&key)]).await?;
            return Ok(s);
        }

        if let Some((emoji, quoted)) = mapping::tapback(&row.text()) {
            let quoted = self.digest(quoted);
            let mut targets = seen.iter().filter(|(_, s)| {
                matches!(s.fate, Fate::Captured | Fate::Baseline) && s.thread == plain.thread && s.body == quoted
            });
            if let (Some((target, _)), None) = (targets.next(), targets.next()) {
                let s = Seen { fate: Fate::Reaction, refers_to: Some(target.clone()), ..plain };
                let event = m.reaction(target, emoji)?;
                self.capture("reaction", key.clone(), event, vec![s.mark(&key)]).await?;
                return Ok(s);
            }
        }

        let mut attachment_ids = Vec::new();
        if let Row::Mms(mms) = row {
            for part in mms.media() {
                let part_key = memory::part_key(&key, part.id);
                attachment_ids.push(part_key.clone());
                if parts_done.contains(&part_key) {
                    continue; // captured before a crash cut this row short
                }
                let event = m.attachment(part, &part_key)?;
                self.capture("attachment", part_key.clone(), event, vec![Mark::set(SOURCE, part_key.clone(), b"1".to_vec())])
                    .await?;
            }
        }
        match m.message(attachment_ids)? {
            Some(event) => self.capture("message", key.clone(), event, vec![plain.mark(&key)]).await?,
            // Nothing to archive (an empty body and no media): remembered, not captured.
            None => self.agent.save_marks(vec![plain.mark(&key)]).await?,
        }
        Ok(plain)
    }

    /// A captured row is gone from the provider: its deletion is evidence.
    async fn capture_unsend(&mut self, key: &str, s: &Seen) -> Result<()> {
        let event = mapping::unsend(key, s, &self.options.line, self.options.now_ms);
        let gone = Seen { fate: Fate::Deleted, ..s.clone() };
        self.capture("unsend", key.to_string(), event, vec![gone.mark(key)]).await
    }
}
