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
//!
//! Memory stays bounded whatever the provider holds: the platform hands rows over in pages,
//! in ascending `_id` per table ([`Scanner`]), and the scan walks the remembered rows beside
//! them one bitmap of 1,024 `_id`s at a time, so an unchanged provider costs a read of the
//! provider, one small row of memory per 1,024 of its rows, and a bit test per row.

mod mapping;
pub mod memory;
mod seen;
pub mod view;

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::Serialize;

use crate::agent::{Agent, CaptureOutcome};
use crate::error::{Error, ErrorKind, Result};
use crate::model::{Channel, Event, normalize_handle};
use crate::sources::Mark;
use memory::{AMBIGUOUS, BASELINE_KEY, BASELINE_STARTED_KEY, Fate, SOURCE, Seen, Table};
pub use view::{Addr, MmsRow, Part, ProviderView, SmsRow};

const DAY_MS: i64 = 24 * 3600 * 1000;
/// More bitmap keys than any provider has buckets (10^12 ids).
const ALL_BUCKETS: usize = 1 << 30;
/// Marks with no capture of their own (history, forgotten rows) saved together up to this many.
const MARK_BATCH: usize = 4096;
/// Rows per page when a whole view is scanned at once.
const VIEW_PAGE: usize = 512;

/// How a scan runs.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// The phone's own number: the business line (the policy's first business line).
    pub line: String,
    /// On the first scan, capture the history of the last this many days (0: none).
    pub backfill_days: u32,
    pub now_ms: i64,
}

/// One event a scan handed to the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct ScannedEvent {
    /// `message`, `edit`, `reaction`, `unsend` or `attachment`.
    pub kind: String,
    /// Its event id (`sms:<_id>`, `mms:<_id>`, `mms:<_id>/part:<_id>`, ...).
    pub id: String,
}

impl ScanOptions {
    /// The options the agent's policy and clock give: the policy's first business line is the
    /// phone's own number, its `backfill_days` the first scan's history. Refused (capture fails
    /// closed) without a policy in force for capture or without a business line.
    pub fn from_policy(agent: &Agent) -> Result<ScanOptions> {
        let Some(policy) = agent.capture_policy() else {
            return Err(Error::new(ErrorKind::NotConfigured, "telephony scan: no policy is in force for capture"));
        };
        let Some(line) = policy.business_lines.iter().next().cloned() else {
            return Err(Error::new(
                ErrorKind::NotConfigured,
                "telephony scan: the policy names no business line (the phone's own number)",
            ));
        };
        Ok(ScanOptions { line, backfill_days: policy.backfill_days, now_ms: agent.clock().now_ms() })
    }
}

/// What one scan captured, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct ScanReport {
    /// Every event handed to the agent, in order.
    pub events: Vec<ScannedEvent>,
    /// Rows the first scan took as history.
    pub baseline: u64,
    /// Rows the agent dropped as out of the policy's scope.
    pub out_of_scope: u64,
    /// Rows already seen, untouched.
    pub unchanged: u64,
}

impl ScanReport {
    pub fn count(&self, kind: &str) -> usize {
        self.events.iter().filter(|e| e.kind == kind).count()
    }
}

/// Scans a whole view of the provider: checks it (nothing is captured from a view the provider
/// could not have produced), then hands its rows to a [`Scanner`] in pages. Background-only.
pub async fn scan(agent: &Agent, view: &ProviderView, options: &ScanOptions) -> Result<ScanReport> {
    scan_with(agent, view, options, |_| {}).await
}

/// [`scan`], calling `after_page` with the report so far after each page (to show progress as
/// it is made).
pub async fn scan_with(
    agent: &Agent,
    view: &ProviderView,
    options: &ScanOptions,
    mut after_page: impl FnMut(&ScanReport),
) -> Result<ScanReport> {
    view.check(options.now_ms)?;
    let mut sms: Vec<&SmsRow> = view.sms.iter().collect();
    sms.sort_by_key(|r| r.id);
    let mut mms: Vec<&MmsRow> = view.mms.iter().collect();
    mms.sort_by_key(|r| r.id);
    let mut scanner = Scanner::begin(agent, options.clone()).await?;
    for page in sms.chunks(VIEW_PAGE) {
        scanner.sms(page.iter().copied()).await?;
        after_page(&scanner.report);
    }
    for page in mms.chunks(VIEW_PAGE) {
        scanner.mms(page.iter().copied()).await?;
        after_page(&scanner.report);
    }
    scanner.finish().await
}

/// One scan of the provider, fed in pages: every row of `content://sms` in ascending `_id`
/// through [`Scanner::sms`], every row of `content://mms` (with its parts and addresses) in
/// ascending `_id` through [`Scanner::mms`], then [`Scanner::finish`]. Rows missing from the
/// pages are taken as deleted, so a scan must see the whole provider. Stops at the first
/// capture that fails (not configured, queue full): what was captured before it is kept and
/// remembered, the rest is offered again at the next scan. Background-only.
pub struct Scanner {
    agent: Agent,
    options: ScanOptions,
    /// The business line, normalised.
    business: String,
    first_run: bool,
    /// Rows dated before this are history (on the first scan only).
    history_before: i64,
    walks: [Walk; 2],
    /// The bitmaps of seen rows as they stand now (loaded when first needed), by table and
    /// bucket; each change goes out as a mark with the change to its row.
    bits: HashMap<(Table, i64), seen::Bits>,
    /// Marks with no capture of their own, saved in batches.
    pending: BTreeMap<String, Option<Vec<u8>>>,
    report: ScanReport,
}

/// The remembered rows of one table, walked bucket by bucket beside the provider's rows.
struct Walk {
    table: Table,
    /// Remembered buckets not reached yet, ascending.
    ahead: VecDeque<i64>,
    /// The bucket being walked: what it remembered when the walk entered it, and the ids
    /// the provider has shown in it.
    here: Option<(i64, seen::Bits, seen::Bits)>,
    last_id: i64,
}

impl Walk {
    fn new(table: Table, ahead: VecDeque<i64>) -> Walk {
        Walk { table, ahead, here: None, last_id: 0 }
    }
}

impl Scanner {
    /// Starts a scan with `agent` (a handle on the same agent: clones share it).
    pub async fn begin(agent: &Agent, options: ScanOptions) -> Result<Scanner> {
        let first_run = agent.source_value(SOURCE, BASELINE_KEY)?.is_none();
        let mut history_before = i64::MIN;
        if first_run {
            // The first scan's start, kept so that a first scan cut short and run again draws
            // the line between history and new messages at the same instant.
            let started = match agent.source_value(SOURCE, BASELINE_STARTED_KEY)? {
                Some(v) => std::str::from_utf8(&v).ok().and_then(|t| t.parse().ok()).unwrap_or(options.now_ms),
                None => {
                    agent.save_marks(vec![Mark::set(SOURCE, BASELINE_STARTED_KEY, options.now_ms.to_string())]).await?;
                    options.now_ms
                }
            };
            history_before = started - i64::from(options.backfill_days) * DAY_MS;
        }
        let remembered_buckets = |table: Table| -> Result<VecDeque<i64>> {
            let (after, before) = seen::range(table);
            let keys = agent.source_keys(SOURCE, &after, &before, ALL_BUCKETS)?;
            Ok(keys.iter().filter_map(|k| seen::bucket_of_key(k)).collect())
        };
        Ok(Scanner {
            agent: agent.clone(),
            business: normalize_handle(&options.line),
            options,
            first_run,
            history_before,
            walks: [
                Walk::new(Table::Sms, remembered_buckets(Table::Sms)?),
                Walk::new(Table::Mms, remembered_buckets(Table::Mms)?),
            ],
            bits: HashMap::new(),
            pending: BTreeMap::new(),
            report: ScanReport::default(),
        })
    }

    /// The next page of `content://sms`, in ascending `_id` after the previous page's.
    pub async fn sms<'r>(&mut self, rows: impl IntoIterator<Item = &'r SmsRow>) -> Result<()> {
        for row in rows {
            let checked = view::check_sms(row, self.options.now_ms);
            self.walk(Table::Sms, row.id, Row::Sms(row), checked).await?;
        }
        self.flush().await
    }

    /// The next page of `content://mms`, in ascending `_id` after the previous page's.
    pub async fn mms<'r>(&mut self, rows: impl IntoIterator<Item = &'r MmsRow>) -> Result<()> {
        for row in rows {
            let checked = view::check_mms(row, self.options.now_ms);
            self.walk(Table::Mms, row.id, Row::Mms(row), checked).await?;
        }
        self.flush().await
    }

    /// Of these `content://mms` ids, the ones this scan has not seen before: only their media
    /// parts can be captured, so the platform streams the bytes of those parts alone (never
    /// again the whole provider's media at every wake-up). Asked before handing their page over.
    pub fn unseen_mms(&self, ids: &[i64]) -> Result<Vec<i64>> {
        let mut unseen = Vec::new();
        for &id in ids {
            if !self.bits_now(Table::Mms, seen::bucket_of(id))?.has(id) {
                unseen.push(id);
            }
        }
        Ok(unseen)
    }

    /// Every page was handed over: remembered rows not seen in them were deleted.
    pub async fn finish(mut self) -> Result<ScanReport> {
        for t in [0, 1] {
            self.enter(t, None).await?;
        }
        if self.first_run {
            self.pending.insert(BASELINE_KEY.into(), Some(self.options.now_ms.to_string().into_bytes()));
        }
        self.flush().await?;
        Ok(self.report)
    }

    fn walk_index(table: Table) -> usize {
        match table {
            Table::Sms => 0,
            Table::Mms => 1,
        }
    }

    /// A bucket's bitmap as it stands now: as this scan changed it, else as stored (or about
    /// to be, with the pending marks); empty if none.
    fn bits_now(&self, table: Table, bucket: i64) -> Result<seen::Bits> {
        if let Some(bits) = self.bits.get(&(table, bucket)) {
            return Ok(bits.clone());
        }
        Ok(self.lookup(&seen::key(table, bucket))?.and_then(|v| seen::Bits::parse(&v)).unwrap_or_else(seen::Bits::empty))
    }

    /// Sets or clears row `id`'s bit and returns the mark that saves its bitmap, to go in the
    /// same commit as the change to the row's own entry.
    fn seen_mark(&mut self, table: Table, id: i64, on: bool) -> Result<Mark> {
        let bucket = seen::bucket_of(id);
        let mut bits = self.bits_now(table, bucket)?;
        bits.set(id, on);
        let mark = Mark::set(SOURCE, seen::key(table, bucket), bits.bytes().to_vec());
        self.bits.insert((table, bucket), bits);
        Ok(mark)
    }

    /// Moves walk `t` to `bucket` (or past every bucket, for `None`): the remembered rows of
    /// the buckets it leaves that the provider did not show are gone.
    async fn enter(&mut self, t: usize, bucket: Option<i64>) -> Result<()> {
        let table = self.walks[t].table;
        if let Some((here, remembered, shown)) = self.walks[t].here.take() {
            for id in remembered.ids(here).into_iter().filter(|id| !shown.has(*id)) {
                self.gone(table, id).await?;
            }
        }
        while let Some(&next) = self.walks[t].ahead.front() {
            if bucket.is_some_and(|b| next >= b) {
                break;
            }
            self.walks[t].ahead.pop_front();
            for id in self.bits_now(table, next)?.ids(next) {
                self.gone(table, id).await?;
            }
        }
        if let Some(b) = bucket {
            if self.walks[t].ahead.front() == Some(&b) {
                self.walks[t].ahead.pop_front();
            }
            let remembered = self.bits_now(table, b)?;
            self.walks[t].here = Some((b, remembered, seen::Bits::empty()));
        }
        Ok(())
    }

    /// One provider row against the walk. The common case, a row already seen, is decided
    /// without entering the (large) asynchronous path at all.
    /// `checked` says whether the row is one the provider could have written; a row that is
    /// not is evidenced and passed over like any row the agent refuses (whole views are
    /// checked before their first page, so a replay refuses them instead).
    async fn walk(&mut self, table: Table, id: i64, row: Row<'_>, checked: Result<()>) -> Result<()> {
        let t = Self::walk_index(table);
        if id <= self.walks[t].last_id {
            return Err(Error::new(
                ErrorKind::InvalidEvent,
                format!(
                    "{} _id {id}: rows must come in ascending _id, and this one follows _id {}",
                    table.name(),
                    self.walks[t].last_id
                ),
            ));
        }
        self.walks[t].last_id = id;
        let bucket = seen::bucket_of(id);
        if self.walks[t].here.as_ref().map(|h| h.0) != Some(bucket) {
            self.enter(t, Some(bucket)).await?;
        }
        if let Some((_, remembered, shown)) = &mut self.walks[t].here
            && remembered.has(id)
        {
            shown.set(id, true);
            self.report.unchanged += 1;
            return Ok(());
        }
        match checked {
            Ok(()) => self.new_row(table, id, row).await,
            Err(e) => self.refuse(&row, table, id, &e).await,
        }
    }

    /// A row the walk has not seen: history on the first scan, else captured.
    async fn new_row(&mut self, table: Table, id: i64, row: Row<'_>) -> Result<()> {
        let key = table.key(id);
        if !row.is_final() || self.lookup(&memory::gone_key(table, id))?.is_some() {
            return Ok(()); // a draft; or a deleted row the provider shows again
        }
        if row.time_ms() < self.history_before {
            let s = self.remembered(&row, Fate::Baseline, None);
            for mark in self.index_marks(&row, &key, &s)? {
                self.pending.insert(mark.key, mark.value);
            }
            self.pending.insert(key.clone(), s.mark(&key).value);
            let bit = self.seen_mark(table, id, true)?;
            self.pending.insert(bit.key, bit.value);
            self.report.baseline += 1;
            if self.pending.len() >= MARK_BATCH {
                self.flush().await?;
            }
            return Ok(());
        }
        match self.capture_new(&row, table, id, &key).await {
            Err(e) if e.kind == ErrorKind::InvalidEvent => self.refuse(&row, table, id, &e).await,
            other => other,
        }
    }

    /// A row the agent refuses (empty or out-of-range provider fields): recorded, metadata only,
    /// as an `uncaptured_communication` when it is business, and remembered as refused so the
    /// scans after it go on. A personal row leaves no trace.
    async fn refuse(&mut self, row: &Row<'_>, table: Table, id: i64, e: &Error) -> Result<()> {
        self.flush().await?;
        let key = table.key(id);
        let meta = crate::model::EventMeta {
            channel: row.channel(),
            line: self.options.line.clone(),
            conversation_id: format!("thread:{}", row.thread()),
            source_id: table.event_id(id),
            source_time_ms: if row.time_ms() > 0 { row.time_ms() } else { self.options.now_ms },
        };
        let direction = if row.outbound() { crate::model::Direction::Outbound } else { crate::model::Direction::Inbound };
        let business = self.agent.policy().is_some_and(|p| crate::model::meta_in_scope(&p, &meta));
        tracing::warn!(table = table.name(), id, business, "telephony: a provider row was refused; evidenced and passed over");
        if business {
            self.agent.report_uncaptured(&meta, direction, &format!("refused by the agent: {}", e.detail)).await?;
        }
        let s = self.remembered(row, Fate::Refused, None);
        let marks = vec![s.mark(&key), self.seen_mark(table, id, true)?];
        self.agent.save_marks(marks).await
    }

    /// A value as saved, or as about to be saved with the pending marks.
    fn lookup(&self, key: &str) -> Result<Option<Vec<u8>>> {
        match self.pending.get(key) {
            Some(v) => Ok(v.clone()),
            None => self.agent.source_value(SOURCE, key),
        }
    }

    async fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let marks =
            std::mem::take(&mut self.pending).into_iter().map(|(key, value)| Mark { source: SOURCE, key, value }).collect();
        self.agent.save_marks(marks).await
    }

    /// The fingerprint of `text` (see [`memory::Fingerprint`]).
    fn digest(&self, text: &str) -> memory::Fingerprint {
        let d = self.agent.content_digest(SOURCE, text.as_bytes());
        d[..16].try_into().expect("a digest has 32 bytes")
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

    /// The index entries of a message row: where an edit finds it (RCS rows), and where a
    /// reaction finds it by its body (`*` once two messages of the thread share it).
    fn index_marks(&self, row: &Row<'_>, key: &str, s: &Seen) -> Result<Vec<Mark>> {
        let mut marks = Vec::new();
        if matches!(row, Row::Mms(m) if m.is_rcs()) {
            let at = memory::at_key(s.thread, s.time_ms, &s.sender);
            if self.lookup(&at)?.is_none() {
                marks.push(Mark::set(SOURCE, at, key.as_bytes().to_vec()));
            }
        }
        let body = memory::body_key(s.thread, &s.body);
        let value = match self.lookup(&body)? {
            None => key.as_bytes().to_vec(),
            Some(v) if v == key.as_bytes() => return Ok(marks),
            Some(_) => AMBIGUOUS.to_vec(),
        };
        marks.push(Mark::set(SOURCE, body, value));
        Ok(marks)
    }

    async fn capture(&mut self, kind: &'static str, id: String, event: Event, marks: Vec<Mark>) -> Result<()> {
        match self.agent.capture_marked(event, marks).await? {
            CaptureOutcome::Captured { .. } => self.report.events.push(ScannedEvent { kind: kind.into(), id }),
            CaptureOutcome::OutOfScope => self.report.out_of_scope += 1,
        }
        Ok(())
    }

    /// A row not seen before: an edit, a reaction, or a message with its attachments.
    async fn capture_new(&mut self, row: &Row<'_>, table: Table, id: i64, key: &str) -> Result<()> {
        // History and forgotten rows first: a capture's commit carries bitmaps that count them.
        self.flush().await?;
        let event_id = Table::event_id_of_key(key);
        let plain = self.remembered(row, Fate::Captured, None);
        let (line, business) = (self.options.line.clone(), self.business.clone());
        let m = mapping::Mapping { row, event_id: &event_id, line: &line, business: &business };

        if let Row::Mms(mms) = row
            && mms.is_rcs()
            && let Some(original) = self.lookup(&memory::at_key(plain.thread, plain.time_ms, &plain.sender))?
        {
            let original = String::from_utf8_lossy(&original).into_owned();
            let differs = self.lookup(&original)?.and_then(|v| Seen::parse(&v)).is_some_and(|o| o.body != plain.body);
            if differs {
                let target = Table::event_id_of_key(&original);
                let s = Seen { fate: Fate::Edit, refers_to: Some(target.clone()), ..plain };
                let event = m.edit(&target)?;
                let marks = vec![s.mark(key), self.seen_mark(table, id, true)?];
                return self.capture("edit", event_id.clone(), event, marks).await;
            }
        }

        if let Some((emoji, quoted)) = mapping::tapback(&row.text()) {
            let target = self.lookup(&memory::body_key(plain.thread, &self.digest(quoted)))?;
            if let Some(target) = target.filter(|t| t != AMBIGUOUS) {
                let target = Table::event_id_of_key(&String::from_utf8_lossy(&target));
                let s = Seen { fate: Fate::Reaction, refers_to: Some(target.clone()), ..plain };
                let event = m.reaction(&target, emoji)?;
                let marks = vec![s.mark(key), self.seen_mark(table, id, true)?];
                return self.capture("reaction", event_id.clone(), event, marks).await;
            }
        }

        let mut attachment_ids = Vec::new();
        if let Row::Mms(mms) = row {
            for part in mms.media() {
                let part_event_id = format!("{event_id}/part:{}", part.id);
                attachment_ids.push(part_event_id.clone());
                let part_key = memory::part_key(mms.id, part.id);
                if self.lookup(&part_key)?.is_some() {
                    continue; // captured before a crash cut this row short
                }
                let event = m.attachment(part, &part_event_id)?;
                self.capture("attachment", part_event_id, event, vec![Mark::set(SOURCE, part_key, b"1".to_vec())]).await?;
            }
        }
        let mut marks = vec![plain.mark(key), self.seen_mark(table, id, true)?];
        marks.extend(self.index_marks(row, key, &plain)?);
        match m.message(attachment_ids)? {
            Some(event) => self.capture("message", event_id.clone(), event, marks).await,
            // Nothing to archive (an empty body and no media): remembered, not captured.
            None => self.agent.save_marks(marks).await,
        }
    }

    /// A remembered row is gone from the provider. A captured message's deletion is evidence;
    /// anything else is just forgotten.
    async fn gone(&mut self, table: Table, id: i64) -> Result<()> {
        let key = &table.key(id);
        let seen = self.lookup(key)?.and_then(|v| Seen::parse(&v));
        match seen {
            Some(s) if s.fate == Fate::Captured => {
                self.flush().await?;
                let event_id = Table::event_id_of_key(key);
                let event = mapping::unsend(&event_id, &s, &self.options.line, self.options.now_ms);
                let marks = vec![
                    Mark::forget(SOURCE, key),
                    Mark::set(SOURCE, memory::gone_key(table, id), b"1".to_vec()),
                    self.seen_mark(table, id, false)?,
                ];
                self.capture("unsend", event_id, event, marks).await
            }
            _ => {
                self.pending.insert(key.to_string(), None);
                let bit = self.seen_mark(table, id, false)?;
                self.pending.insert(bit.key, bit.value);
                if self.pending.len() >= MARK_BATCH {
                    self.flush().await?;
                }
                Ok(())
            }
        }
    }
}

/// One provider row of either table.
#[derive(Debug, Clone, Copy)]
enum Row<'a> {
    Sms(&'a SmsRow),
    Mms(&'a MmsRow),
}

impl Row<'_> {
    fn is_final(&self) -> bool {
        match self {
            Row::Sms(r) => r.is_final(),
            Row::Mms(r) => r.is_final(),
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
