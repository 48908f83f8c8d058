//! The iMessage relay: on the employee's managed Mac, reads Messages' `chat.db` (iMessage, and
//! the iPhone's SMS through Text Message Forwarding), turns rows into events and captures them
//! through the agent like any other source.
//!
//! Position and idempotence come from the source state the agent keeps beside its queue
//! (never text): `pos` (the last row handled, and how many of its events were captured
//! when a kill interrupted it),
//! `e:<guid>` (the edit time and history length captured), `r:<guid>` (its unsend was
//! captured), `a:<guid>` (an attachment not on disk yet). Each mark commits with the capture
//! it describes, so a kill at any instant captures nothing twice and misses nothing:
//! - new rows are those after `pos` (`ROWID` only grows: `message` is `AUTOINCREMENT`, and
//!   SQLite has one writer, so a row committed after a read always has a higher `ROWID`);
//! - rows before `pos` need an event only when edited or retracted, so a pass reads just those
//!   and compares them with `e:`/`r:`;
//! - attachments still missing are looked up again by guid at every pass.

/// `chat.db` fixtures for tests and `verbatim bench` (feature `tools`).
#[cfg(any(test, feature = "tools"))]
pub mod fixture;
mod mapping;
mod schema;
pub mod typedstream;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

pub use mapping::{ATTACHMENTS_PREFIX, Action};
pub use schema::ReadError;

use crate::error::{Error, ErrorKind, Result};
use crate::evidence::Cause;
use crate::sources::Mark;
use crate::{Agent, CaptureOutcome};
use mapping::FoundAttachment;
use schema::{ChatDb, MessageRow};

/// The source's name in the agent's source state.
pub const SOURCE: &str = "imessage";
/// The cause of the could-not-record window while `chat.db` cannot be read.
pub const UNAVAILABLE_CAUSE: Cause = Cause::SourceUnavailable(SOURCE);
/// Rows read per short read transaction.
const PAGE_ROWS: usize = 500;

const POS: &str = "pos";

/// Where the relay reads from.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    pub chat_db: PathBuf,
    /// Stands for `~/Library/Messages/Attachments` (default: that folder in `$HOME`).
    pub attachments_root: Option<PathBuf>,
}

/// What one pass did (counts only, never content).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ScanReport {
    /// New rows read.
    pub rows_read: u64,
    /// Earlier rows read again because they were edited or retracted at some point.
    pub changed_rows_checked: u64,
    pub captured: u64,
    pub out_of_scope: u64,
    pub skipped_rows: u64,
    pub attachments_pending: u64,
    pub attachments_recovered: u64,
    pub edits: u64,
    pub unsends: u64,
    /// Rows the agent refused (invalid), evidenced as uncaptured and passed over.
    pub refused: u64,
}

/// Why a pass stopped: the database could not be read, or the agent refused.
#[derive(Debug)]
pub enum RelayError {
    Source(ReadError),
    Agent(Error),
}

impl std::fmt::Display for RelayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RelayError::Source(e) => e.fmt(f),
            RelayError::Agent(e) => write!(f, "capture: {e}"),
        }
    }
}

impl std::error::Error for RelayError {}

impl From<ReadError> for RelayError {
    fn from(e: ReadError) -> Self {
        RelayError::Source(e)
    }
}
impl From<Error> for RelayError {
    fn from(e: Error) -> Self {
        RelayError::Agent(e)
    }
}

fn direction_of(event: &crate::model::Event) -> crate::model::Direction {
    use crate::model::{Direction, Event};
    match event {
        Event::Message(m) => m.direction,
        Event::Attachment(a) => a.direction,
        Event::Call(c) => c.direction,
        Event::Edit(_) | Event::Unsend(_) | Event::Reaction(_) => Direction::Inbound,
    }
}

fn mark(key: String, value: Option<Vec<u8>>) -> Mark {
    Mark { source: SOURCE, key, value }
}

fn encode_pair(a: i64, b: i64) -> Vec<u8> {
    let mut v = a.to_le_bytes().to_vec();
    v.extend_from_slice(&b.to_le_bytes());
    v
}

fn decode_pair(v: &[u8]) -> Option<(i64, i64)> {
    Some((i64::from_le_bytes(v.get(..8)?.try_into().ok()?), i64::from_le_bytes(v.get(8..16)?.try_into().ok()?)))
}

/// One pass over `chat.db`: new rows, then edits and retractions of earlier ones, then
/// attachments that were missing. Returns after everything it found is durable.
pub async fn scan(agent: &Agent, options: &RelayOptions) -> std::result::Result<ScanReport, RelayError> {
    scan_observed(agent, options, &mut |_| {}).await
}

/// As [`scan`], telling `observe` the source id of each event once it is durable (ids only:
/// Messages' guids, never content).
pub async fn scan_observed(
    agent: &Agent,
    options: &RelayOptions,
    observe: &mut dyn FnMut(&str),
) -> std::result::Result<ScanReport, RelayError> {
    let mut db = ChatDb::open(&options.chat_db)?;
    let state = agent.source_state(SOURCE)?;
    let mut pass =
        Pass { agent, options, report: ScanReport::default(), home: std::env::var_os("HOME").map(PathBuf::from), observe };
    let (mut rowid, mut done) = state.get(POS).and_then(|v| decode_pair(v)).unwrap_or((0, 0));
    // Phase 1: rows after the position (and the rest of the one a kill interrupted).
    let mut from = if done > 0 { rowid } else { rowid + 1 };
    let mut unsaved_position = false;
    loop {
        let rows = db.messages_from(from, PAGE_ROWS)?;
        let Some(last) = rows.last() else { break };
        from = last.rowid + 1;
        for row in rows {
            pass.report.rows_read += 1;
            let skip = if row.rowid == rowid { done as usize } else { 0 };
            let actions = pass.first_sight(&mut db, &row)?;
            let n = actions.len();
            for (i, (action, marks)) in actions.into_iter().enumerate().skip(skip) {
                // `(row, k)`: k events of the row captured, the rest due; `(row, 0)`: row done.
                let next = if i + 1 == n { 0 } else { (i + 1) as i64 };
                let mut marks = marks;
                marks.push(mark(POS.into(), Some(encode_pair(row.rowid, next))));
                pass.perform(action, marks).await?;
                unsaved_position = false;
            }
            rowid = row.rowid;
            done = 0;
            if n <= skip {
                unsaved_position = true;
            }
        }
    }
    if unsaved_position {
        agent.save_marks(vec![mark(POS.into(), Some(encode_pair(rowid, done)))]).await?;
    }
    // Phase 2: earlier rows edited or retracted since they were captured (compared with the
    // state as phase 1 left it).
    let state = agent.source_state(SOURCE)?;
    for row in db.changed_through(rowid)? {
        pass.report.changed_rows_checked += 1;
        pass.changed(&mut db, &row, &state).await?;
    }
    // Phase 3: attachments that were not on disk.
    for (key, _) in state.range("a:".to_string()..).take_while(|(k, _)| k.starts_with("a:")) {
        pass.pending_attachment(&mut db, &key[2..]).await?;
    }
    Ok(pass.report)
}

struct Pass<'a> {
    agent: &'a Agent,
    options: &'a RelayOptions,
    report: ScanReport,
    home: Option<PathBuf>,
    observe: &'a mut dyn FnMut(&str),
}

impl Pass<'_> {
    fn found_attachments(&self, db: &ChatDb, row: &MessageRow) -> std::result::Result<Vec<FoundAttachment>, ReadError> {
        if !row.has_attachments {
            return Ok(Vec::new());
        }
        let root =
            self.options.attachments_root.clone().or_else(|| self.home.as_ref().map(|h| h.join("Library/Messages/Attachments")));
        Ok(db
            .attachments(row.rowid)?
            .into_iter()
            .map(|a| {
                let resolved =
                    a.filename.as_deref().and_then(|f| mapping::resolve_attachment(f, root.as_deref(), self.home.as_deref()));
                let expected = resolved
                    .clone()
                    .or_else(|| a.filename.as_deref().map(PathBuf::from))
                    .unwrap_or_else(|| PathBuf::from(&a.guid));
                let present = resolved.filter(|p| p.is_file());
                FoundAttachment { row: a, present, expected }
            })
            .collect())
    }

    /// The actions for a new row, each with the marks that commit with it.
    fn first_sight(&mut self, db: &mut ChatDb, row: &MessageRow) -> std::result::Result<Vec<(Action, Vec<Mark>)>, ReadError> {
        let chat = match row.chat_id {
            Some(id) => db.chat(id)?,
            None => None,
        };
        let attachments = self.found_attachments(db, row)?;
        let actions = match mapping::first_sight(row, chat.as_ref(), &attachments) {
            Ok(a) => a,
            Err(why) => {
                tracing::debug!(rowid = row.rowid, why, "imessage: row without an event");
                self.report.skipped_rows += 1;
                return Ok(Vec::new());
            }
        };
        let versions =
            if row.date_edited > 0 { mapping::edit_history(row.message_summary_info.as_deref()).len().max(1) as i64 } else { 0 };
        let last = actions.len().saturating_sub(1);
        Ok(actions
            .into_iter()
            .enumerate()
            .map(|(i, action)| {
                let mut marks = Vec::new();
                if let Action::AttachmentMissing { attachment_guid, .. } = &action {
                    marks.push(mark(format!("a:{attachment_guid}"), Some(vec![1])));
                }
                if i == last {
                    // Only once every event of the row is in: what it was when captured.
                    if row.date_retracted > 0 {
                        marks.push(mark(format!("r:{}", row.guid), Some(vec![1])));
                    } else if row.date_edited > 0 {
                        marks.push(mark(format!("e:{}", row.guid), Some(encode_pair(row.date_edited, versions))));
                    }
                }
                (action, marks)
            })
            .collect())
    }

    async fn perform(&mut self, action: Action, marks: Vec<Mark>) -> Result<()> {
        match action {
            Action::Capture(event) => {
                let kind = event.kind();
                let meta = event.meta().clone();
                let id = meta.source_id.clone();
                let direction = direction_of(&event);
                let kept = marks.clone();
                let outcome = match self.agent.capture_marked(event, marks).await {
                    Ok(outcome) => outcome,
                    // A row the agent refuses as invalid (or an attachment it cannot read) would
                    // stop every pass at the same place: it is evidenced, and passed over.
                    Err(e) if e.kind == ErrorKind::InvalidEvent || (e.kind == ErrorKind::File && kind == "attachment") => {
                        tracing::debug!(kind, error = e.kind.as_str(), "imessage: row refused by the agent, evidenced");
                        let pending = kind == "attachment";
                        let reason = if pending { "attachment_omitted: file unreadable" } else { "invalid event" };
                        self.evidence_uncaptured(meta, direction, &format!("{reason}: {}", e.detail), kept, pending).await?;
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                };
                match outcome {
                    CaptureOutcome::Captured { .. } => {
                        (self.observe)(&id);
                        self.report.captured += 1;
                        match kind {
                            "edit" => self.report.edits += 1,
                            "unsend" => self.report.unsends += 1,
                            _ => {}
                        }
                    }
                    CaptureOutcome::OutOfScope => self.report.out_of_scope += 1,
                }
            }
            Action::AttachmentMissing { attachment, attachment_guid } => {
                let outcome = self.agent.capture_attachment_omitted(attachment, "file not downloaded yet", marks).await?;
                match outcome {
                    CaptureOutcome::Captured { .. } => self.report.attachments_pending += 1,
                    CaptureOutcome::OutOfScope => {
                        // Personal: nothing to capture later either.
                        self.agent.save_marks(vec![mark(format!("a:{attachment_guid}"), None)]).await?;
                        self.report.out_of_scope += 1;
                    }
                }
            }
        }
        Ok(())
    }

    /// Records, metadata only, that an event could not be captured, with its marks (the
    /// position moves past it; a pending attachment stays marked to be captured when it
    /// can be). Personal conversations leave no trace at all, not even this report.
    async fn evidence_uncaptured(
        &mut self,
        meta: crate::model::EventMeta,
        direction: crate::model::Direction,
        reason: &str,
        marks: Vec<Mark>,
        pending_attachment: bool,
    ) -> Result<()> {
        let in_scope = self.agent.policy().is_some_and(|p| crate::model::meta_in_scope(&p, &meta));
        if in_scope {
            self.agent.report_uncaptured(&meta, direction, reason).await?;
            if pending_attachment {
                self.report.attachments_pending += 1;
            } else {
                self.report.refused += 1;
            }
            self.agent.save_marks(marks).await
        } else {
            let marks = marks.into_iter().filter(|m| !m.key.starts_with("a:")).collect();
            self.report.out_of_scope += 1;
            self.agent.save_marks(marks).await
        }
    }

    /// An earlier row that was edited or retracted: the events it now needs.
    async fn changed(
        &mut self,
        db: &mut ChatDb,
        row: &MessageRow,
        state: &BTreeMap<String, Vec<u8>>,
    ) -> std::result::Result<(), RelayError> {
        let retracted_key = format!("r:{}", row.guid);
        if state.contains_key(&retracted_key) {
            return Ok(());
        }
        if row.item_type != 0 || mapping::tapback(row.associated_message_type, None).is_some() {
            return Ok(());
        }
        let chat = match row.chat_id {
            Some(id) => db.chat(id)?,
            None => None,
        };
        let Some(p) = mapping::parties(row, chat.as_ref()) else { return Ok(()) };
        if row.date_retracted > 0 {
            let event = mapping::unsend_event(row, &p);
            self.perform(Action::Capture(event), vec![mark(retracted_key, Some(vec![1]))]).await?;
            return Ok(());
        }
        let edited_key = format!("e:{}", row.guid);
        let (seen_date, seen_versions) = state.get(&edited_key).and_then(|v| decode_pair(v)).unwrap_or((0, 1));
        if seen_date == row.date_edited {
            return Ok(());
        }
        let history = mapping::edit_history(row.message_summary_info.as_deref());
        let current = mapping::text_of(row.text.as_deref(), row.attributed_body.as_deref()).ok().flatten();
        let edits = mapping::edits_after(row, &p, &history, seen_versions as usize, current.as_deref());
        let versions = (history.len() as i64).max(seen_versions + 1);
        let n = edits.len();
        if n == 0 {
            self.agent.save_marks(vec![mark(edited_key.clone(), Some(encode_pair(row.date_edited, versions)))]).await?;
        }
        for (i, edit) in edits.into_iter().enumerate() {
            // Each edit moves the mark to the versions captured so far.
            let so_far = if i + 1 == n {
                encode_pair(row.date_edited, versions)
            } else {
                encode_pair(seen_date, seen_versions + i as i64 + 1)
            };
            self.perform(Action::Capture(edit), vec![mark(edited_key.clone(), Some(so_far))]).await?;
        }
        Ok(())
    }

    /// An attachment that was missing: captured once its file is there.
    async fn pending_attachment(&mut self, db: &mut ChatDb, guid: &str) -> std::result::Result<(), RelayError> {
        let key = format!("a:{guid}");
        let Some(message_guid) = db.message_guid_of_attachment(guid)? else {
            // Messages deleted it before it was ever downloaded.
            self.agent.save_marks(vec![mark(key, None)]).await?;
            return Ok(());
        };
        let Some(row) = db.message_by_guid(&message_guid)? else { return Ok(()) };
        let chat = match row.chat_id {
            Some(id) => db.chat(id)?,
            None => None,
        };
        let Some(p) = mapping::parties(&row, chat.as_ref()) else { return Ok(()) };
        let found = self.found_attachments(db, &row)?;
        let Some(FoundAttachment { row: a, present: Some(path), .. }) = found.into_iter().find(|a| a.row.guid == guid) else {
            return Ok(());
        };
        let event = mapping::attachment_event(&p, &row.guid, schema::apple_time_to_unix_ms(row.date), &a, path);
        match self.agent.capture_marked(event, vec![mark(key, None)]).await {
            Ok(CaptureOutcome::Captured { .. }) => {
                (self.observe)(guid);
                self.report.captured += 1;
                self.report.attachments_recovered += 1;
            }
            Ok(CaptureOutcome::OutOfScope) => self.report.out_of_scope += 1,
            // Still unreadable: already evidenced; tried again at the next pass.
            Err(e) if e.kind == ErrorKind::File => {}
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }
}

/// A fingerprint of the files Messages writes: a pass is due when it changes.
fn fingerprint(chat_db: &Path) -> Vec<Option<(SystemTime, u64)>> {
    let mut wal = chat_db.as_os_str().to_owned();
    wal.push("-wal");
    [chat_db.to_path_buf(), PathBuf::from(wal)]
        .iter()
        .map(|p| std::fs::metadata(p).ok().map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len())))
        .collect()
}

/// A notification for every change in the folder of `chat_db` (Messages writes chat.db and its
/// WAL there). Without one (the folder missing, no permission, the OS refusing a watch) the
/// relay still checks at `WatchOptions::poll`; the watcher stops when dropped.
fn watch_files(chat_db: &Path) -> (tokio::sync::mpsc::UnboundedReceiver<()>, Option<notify::RecommendedWatcher>) {
    use notify::Watcher;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let folder = chat_db.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            let _ = tx.send(());
        }
    })
    .and_then(|mut w| w.watch(folder, notify::RecursiveMode::NonRecursive).map(|_| w));
    match watcher {
        Ok(w) => (rx, Some(w)),
        Err(e) => {
            tracing::warn!(error = %e, "imessage: no file-change notification; checking the files at the poll interval");
            (rx, None)
        }
    }
}

/// How the watch loop paces itself.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// The longest wait between two checks of the files (a pass runs when they changed). A
    /// file-change notification from the OS (FSEvents, inotify) ends the wait at once; this
    /// bound keeps the relay working, and stoppable, where notifications do not arrive.
    pub poll: Duration,
    /// A pass runs at least this often even when nothing seems to have changed (missing
    /// attachments that were downloaded, a change the file times did not show).
    pub backstop: Duration,
    /// Upload in-process (the store is the relay's alone while it runs), within this
    /// deadline, at the first pass and then every policy `upload_interval_minutes`; `None`
    /// leaves uploads to `verbatim upload` run while the relay is stopped.
    pub upload_deadline: Option<Duration>,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            poll: Duration::from_secs(1),
            backstop: Duration::from_secs(30),
            upload_deadline: Some(Duration::from_secs(120)),
        }
    }
}

/// What the relay's status file says, for the MDM (a Jamf extension attribute or a
/// compliance script reads it): whether Messages can be read, since when not, and the last
/// pass. No content.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RelayStatus {
    pub source: String,
    pub available: bool,
    /// `source_unavailable:imessage` while unavailable.
    pub cause: Option<String>,
    pub unavailable_since_ms: Option<i64>,
    pub last_pass_ms: i64,
    pub last_pass_captured: u64,
}

/// The status file's name in the agent's data directory.
pub const STATUS_FILE: &str = "imessage-relay-status.json";

/// Writes the status file atomically (a new file renamed over the old one).
pub fn write_status(agent: &Agent, report: Option<&ScanReport>) -> Result<RelayStatus> {
    let since = unavailable_since(agent)?;
    let status = RelayStatus {
        source: SOURCE.into(),
        available: since.is_none(),
        cause: since.map(|_| UNAVAILABLE_CAUSE.to_string()),
        unavailable_since_ms: since,
        last_pass_ms: agent.clock().now_ms(),
        last_pass_captured: report.map_or(0, |r| r.captured),
    };
    let dir = agent.data_dir();
    let tmp = dir.join(format!("{STATUS_FILE}.tmp"));
    let json = serde_json::to_vec_pretty(&status).expect("status serialises");
    std::fs::write(&tmp, json).and_then(|_| std::fs::rename(&tmp, dir.join(STATUS_FILE)))?;
    Ok(status)
}

/// Runs passes until `stop` is set: whenever `chat.db` or its WAL changes, and at the
/// backstop interval. Losing the database opens a could-not-record window, saved in the
/// source state (so a restart keeps its start) and closed, as a `capture_unavailable` agent
/// event, at the first pass that reads it again. `on_pass` sees each pass's outcome.
pub async fn watch(
    agent: &Agent,
    options: &RelayOptions,
    pacing: &WatchOptions,
    stop: &AtomicBool,
    mut on_pass: impl FnMut(&std::result::Result<ScanReport, RelayError>),
) -> Result<()> {
    let (mut changes, _watcher) = watch_files(&options.chat_db);
    let mut last_print = None;
    let mut last_pass: Option<Instant> = None;
    let mut last_upload: Option<Instant> = None;
    while !stop.load(Ordering::Acquire) {
        let print = fingerprint(&options.chat_db);
        let due = last_print.as_ref() != Some(&print) || last_pass.is_none_or(|t| t.elapsed() >= pacing.backstop);
        if due {
            let outcome = scan_evidenced(agent, options, &mut |_| {}).await;
            last_pass = Some(Instant::now());
            write_status(agent, outcome.as_ref().ok())?;
            if let (Some(deadline), Some(policy)) = (pacing.upload_deadline, agent.policy()) {
                let every = Duration::from_secs(u64::from(policy.upload_interval_minutes) * 60);
                if last_upload.is_none_or(|t| t.elapsed() >= every) {
                    let report =
                        agent.upload(crate::upload::UploadOptions::new(deadline, crate::upload::NetworkState::Unmetered)).await;
                    tracing::info!(stopped = ?report.stopped, records = report.records_sent, "imessage relay: upload");
                    last_upload = Some(Instant::now());
                }
            }
            if let Err(RelayError::Agent(e)) = &outcome {
                on_pass(&outcome);
                if matches!(e.kind, ErrorKind::NotConfigured | ErrorKind::Closed) {
                    return Err(e.clone());
                }
            } else {
                on_pass(&outcome);
            }
            last_print = Some(print);
        }
        // Wake at Messages' next write, or at the bound; several writes are one pass.
        let _ = tokio::time::timeout(pacing.poll, changes.recv()).await;
        while changes.try_recv().is_ok() {}
    }
    Ok(())
}

/// One pass, with the could-not-record window kept when the database cannot be read: opened
/// (status and MDM feedback show `source_unavailable:imessage`) when it cannot, closed as a
/// `capture_unavailable` agent event at the first pass that reads it again.
pub async fn scan_evidenced(
    agent: &Agent,
    options: &RelayOptions,
    observe: &mut dyn FnMut(&str),
) -> std::result::Result<ScanReport, RelayError> {
    let outcome = scan_observed(agent, options, observe).await;
    match &outcome {
        Err(RelayError::Source(ReadError::Unavailable(_))) => {
            let detail = "Messages' database could not be read (missing, unreadable, or Full Disk Access revoked)";
            if agent.source_unavailable(SOURCE, detail).await? {
                tracing::warn!(cause = %UNAVAILABLE_CAUSE, "imessage: chat.db cannot be read; capture from Messages is unavailable");
            }
        }
        Ok(_) => {
            agent.source_available(SOURCE).await?;
        }
        _ => {}
    }
    outcome
}

/// Whether capture from Messages is currently unavailable, and since when (Unix ms): for the
/// relay's status file.
pub fn unavailable_since(agent: &Agent) -> Result<Option<i64>> {
    Ok(agent.source_unavailable_since(SOURCE))
}
