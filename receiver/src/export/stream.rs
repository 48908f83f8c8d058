//! Export of one stream: a state machine fed records in sequence order. Attachments are
//! reassembled chunk by chunk into files (hashing as they go); a call's recording arrives
//! after the call, so the call's message waits for it (or for the end of the stream).
//!
//! Each epoch's key is derived once, with the private key whose id the epoch names: an epoch
//! no key opens is one error for the epoch (with its count of unreadable records), not one
//! per record.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};
use verbatim_core::archive::{EpochOpener, OpenedRecord};
use verbatim_core::chain::{self, Link, StreamId};
use verbatim_core::model::{Direction, Edit, EventMeta, Message, Reaction, Unsend};
use verbatim_core::record::{AgentEvent, AttachmentHeader, CallRecord, Record, RecordBody};
use verbatim_core::seal::EpochKey;
use verbatim_core::seal::conversation::{ConversationOpener, KeyRef, NotOpened};
use verbatim_core::wire::{EpochInfo, WireRecord};

use super::eml::{self, FilePart};
use super::names::{self, PathClaims, atext, file_name};
use super::participant::ParticipantFilter;
use super::{ExportKeys, ExportOptions, StreamExport, write_err};
use crate::error::Result;
use crate::time::{rfc3339, rfc5322};
use crate::vault::FiledEpoch;

/// Attachments being reassembled at once, at most (they normally arrive one after another).
const MAX_OPEN_ATTACHMENTS: usize = 64;

/// One JSON Lines object: sequence, capture time, the record's own fields, and references to
/// the files written for it.
#[derive(Serialize)]
struct Line<'a> {
    seq: u64,
    captured: String,
    #[serde(flatten)]
    body: LineBody<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_bytes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sha256_verified: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    eml: Option<String>,
}

/// The record's own fields in its line. A field whose name the line already uses for
/// something else is renamed, so that no line holds a key twice (most JSON parsers keep the
/// last of two and lose the first): the heartbeat's `captured` counter is `captured_count`.
#[derive(Serialize)]
#[serde(untagged)]
enum LineBody<'a> {
    Record(&'a RecordBody),
    Heartbeat(HeartbeatFields),
}

/// A heartbeat's fields, `captured` renamed (see [`LineBody`]).
#[derive(Serialize)]
struct HeartbeatFields {
    r#type: &'static str,
    event: &'static str,
    interval_hours: u32,
    since_ms: i64,
    captured_count: u64,
    out_of_scope: u64,
    refused: u64,
}

impl<'a> LineBody<'a> {
    fn of(body: &'a RecordBody) -> LineBody<'a> {
        match body {
            // Every field named, none skipped: a field added to the heartbeat fails to compile
            // here rather than going missing from the export.
            &RecordBody::Agent(AgentEvent::Heartbeat { interval_hours, since_ms, captured, out_of_scope, refused }) => {
                LineBody::Heartbeat(HeartbeatFields {
                    r#type: "agent",
                    event: "heartbeat",
                    interval_hours,
                    since_ms,
                    captured_count: captured,
                    out_of_scope,
                    refused,
                })
            }
            other => LineBody::Record(other),
        }
    }
}

/// The line for a record that could not be opened.
#[derive(Serialize)]
struct Unreadable<'a> {
    seq: u64,
    r#type: &'static str,
    error: &'a str,
}

struct Partial {
    header: AttachmentHeader,
    start_seq: u64,
    tmp: PathBuf,
    file: BufWriter<File>,
    hasher: Sha256,
    size: u64,
    next_index: u32,
    in_order: bool,
}

/// The line for a key record: it holds a key, so only its place is shown.
#[derive(Serialize)]
struct KeyRecordLine {
    seq: u64,
    r#type: &'static str,
}

/// The line for a record whose key was erased from the vault.
#[derive(Serialize)]
struct ErasedLine {
    seq: u64,
    r#type: &'static str,
    erasure: i64,
}

/// What one epoch of the stream opens with.
enum EpochState {
    Open(Box<EpochOpener>),
    /// A version 1 epoch whose key a retention run deleted.
    Erased(i64),
    /// No key for it, or it is not held: `problem` is reported once, with `records`.
    Unavailable {
        problem: String,
        records: u64,
    },
}

struct PendingCall {
    seq: u64,
    captured_ms: i64,
    call: CallRecord,
}

/// What became of a call's recording, for its message.
enum Recording<'a> {
    Held { path: &'a Path, header: &'a AttachmentHeader, verified: bool },
    Omitted(&'a str),
    NotHeld,
}

pub struct StreamExporter<'k> {
    id: StreamId,
    filter: Option<ParticipantFilter>,
    att_dir: PathBuf,
    eml_dir: PathBuf,
    jsonl_path: PathBuf,
    jsonl: BufWriter<File>,
    keys: &'k ExportKeys<'k>,
    epochs: HashMap<u64, EpochInfo>,
    epoch_keys: HashMap<u64, EpochState>,
    /// The vault's answer per (epoch, key reference): the erasure that deleted it, if any.
    /// Asked once per key, not at every record.
    erased_keys: HashMap<(u64, KeyRef), Option<i64>>,
    prev: Link,
    prev_seq: u64,
    partial: HashMap<String, Partial>,
    /// Attachment file names given in this stream, each with its attachment id.
    attachment_names: PathClaims,
    calls: HashMap<String, PendingCall>,
    summary: StreamExport,
}

/// Where one stream's export goes, relative to the output directory:
/// `<tenant>/<device>/<stream>.jsonl` and `<tenant>/<device>/<stream>/`, each part a
/// [`file_name`] (no dot in it, so the `.jsonl` file never meets a stream's directory).
pub struct StreamPaths {
    /// `<tenant>/<device>/<stream>`: the stream's directory, and its claim in the output.
    pub dir: String,
    pub jsonl: String,
}

impl StreamPaths {
    pub fn of(id: &StreamId) -> StreamPaths {
        let dir = format!("{}/{}/{}", file_name(&id.tenant), file_name(&id.device), file_name(&id.stream));
        StreamPaths { jsonl: format!("{dir}.jsonl"), dir }
    }
}

/// Why a record did not open, and whether that is its own problem (reported per record) or
/// its epoch's (reported once for the epoch).
struct Unopened {
    error: String,
    per_record: bool,
}

/// Finds the keys of an epoch: the archive private key whose id the epoch names or, without
/// it, what the key vault filed of the epoch. Derived once per epoch.
fn epoch_state(id: &StreamId, info: Option<&EpochInfo>, epoch: u64, keys: &ExportKeys<'_>) -> EpochState {
    let unavailable = |problem: String| EpochState::Unavailable { problem, records: 0 };
    let Some(info) = info else {
        return unavailable(format!("epoch {epoch} is not held"));
    };
    let key_id = super::shown_key_id(&info.archive_key_id);
    if let Some(secret) = keys.ring.get(&info.archive_key_id) {
        return match EpochOpener::with_archive_key(secret, info, id) {
            Ok(opener) => EpochState::Open(Box::new(opener)),
            // The core's detail already names the epoch.
            Err(e) => unavailable(format!("{} (archive key id {key_id})", e.detail)),
        };
    }
    let Some(vault) = keys.vault else {
        return unavailable(format!("epoch {epoch}: no private key for archive key id {key_id}"));
    };
    let from_vault = || -> crate::Result<EpochState> {
        Ok(match vault.epoch_secret(id, epoch)? {
            None => unavailable(format!(
                "epoch {epoch}: no private key for archive key id {key_id}, and the key vault has not filed this epoch"
            )),
            Some(FiledEpoch { sealing: 1, secret: Some(key) }) => {
                EpochState::Open(Box::new(EpochOpener::Single(Box::new(EpochKey::from_exported(epoch, &key)))))
            }
            Some(FiledEpoch { sealing: 1, secret: None }) => {
                match vault.erased_by(id, epoch, &verbatim_core::seal::conversation::EPOCH_KEY_REF)? {
                    Some(erasure) => EpochState::Erased(erasure),
                    None => unavailable(format!("epoch {epoch}: the key vault holds no key for it")),
                }
            }
            Some(FiledEpoch { secret: Some(ref_key), .. }) => {
                let mut opener = ConversationOpener::with_ref_key(epoch, ref_key);
                for filed in vault.content_keys(id, epoch)? {
                    opener.add_key(filed.key_ref, filed.scope, &filed.key);
                }
                EpochState::Open(Box::new(EpochOpener::Conversations(Box::new(opener))))
            }
            Some(FiledEpoch { secret: None, .. }) => {
                unavailable(format!("epoch {epoch}: the key vault holds no reference key for it"))
            }
        })
    };
    from_vault().unwrap_or_else(|e| unavailable(format!("epoch {epoch}: {e}")))
}

/// A record, opened or not.
enum Opening {
    Record(Box<Record>),
    KeyRecord,
    Erased(i64),
}

fn direction(d: Direction) -> &'static str {
    match d {
        Direction::Inbound => "inbound",
        Direction::Outbound => "outbound",
    }
}

impl<'k> StreamExporter<'k> {
    pub fn create(
        out_dir: &Path,
        id: &StreamId,
        paths: &StreamPaths,
        epochs: Vec<EpochInfo>,
        keys: &'k ExportKeys<'k>,
        options: &ExportOptions,
    ) -> Result<Self> {
        let stream_dir = out_dir.join(&paths.dir);
        let att_dir = stream_dir.join("attachments");
        let eml_dir = stream_dir.join("eml");
        for dir in [&att_dir, &eml_dir] {
            crate::fsutil::create_dir(dir)?;
        }
        let jsonl_path = out_dir.join(&paths.jsonl);
        let jsonl = BufWriter::new(File::create(&jsonl_path).map_err(write_err("create", &jsonl_path))?);
        Ok(StreamExporter {
            id: id.clone(),
            filter: options.participant.as_deref().map(ParticipantFilter::new),
            att_dir,
            eml_dir,
            jsonl_path,
            jsonl,
            keys,
            epochs: epochs.into_iter().map(|e| (e.epoch, e)).collect(),
            epoch_keys: HashMap::new(),
            erased_keys: HashMap::new(),
            prev: chain::genesis(id),
            prev_seq: 0,
            partial: HashMap::new(),
            attachment_names: PathClaims::default(),
            calls: HashMap::new(),
            summary: StreamExport::new(id, paths),
        })
    }

    fn error(&mut self, e: String) {
        self.summary.errors.push(e);
    }

    fn write_line(&mut self, line: &impl Serialize) -> Result<()> {
        let mut text = serde_json::to_string(line).map_err(|e| crate::Error::Export(format!("JSON: {e}")))?;
        text.push('\n');
        let path = self.jsonl_path.clone();
        self.jsonl.write_all(text.as_bytes()).map_err(write_err("write", &path))
    }

    /// Opens and exports one held record. Problems with the record go into the summary; only
    /// a failure to write the output is an error.
    pub fn record(&mut self, r: WireRecord) -> Result<()> {
        self.summary.records += 1;
        if r.seq != self.prev_seq.saturating_add(1) {
            self.error(format!("sequences {}..{} are missing", self.prev_seq.saturating_add(1), r.seq.saturating_sub(1)));
        }
        // The seal binds the previous link: the held predecessor's link is the one to use.
        let prev = std::mem::replace(&mut self.prev, r.link);
        self.prev_seq = r.seq;
        match self.open(&r, &prev) {
            Ok(Opening::Record(record)) => self.handle(r.seq, *record),
            Ok(Opening::KeyRecord) => {
                self.summary.key_records += 1;
                if self.filter.is_some() {
                    return Ok(());
                }
                self.write_line(&KeyRecordLine { seq: r.seq, r#type: "key_record" })
            }
            Ok(Opening::Erased(erasure)) => {
                self.summary.erased += 1;
                if !self.summary.erasures.contains(&erasure) {
                    self.summary.erasures.push(erasure);
                }
                if self.filter.is_some() {
                    return Ok(());
                }
                self.write_line(&ErasedLine { seq: r.seq, r#type: "erased", erasure })
            }
            Err(Unopened { error, per_record }) => {
                self.summary.unreadable += 1;
                if per_record {
                    self.error(error.clone());
                }
                self.write_line(&Unreadable { seq: r.seq, r#type: "unreadable", error: &error })
            }
        }
    }

    /// Opens one record. Each error names its context once: the sequence number for a
    /// record's own problem, the epoch for a problem of its whole epoch.
    fn open(&mut self, r: &WireRecord, prev: &Link) -> std::result::Result<Opening, Unopened> {
        let (id, epochs, keys) = (&self.id, &self.epochs, self.keys);
        let state = self.epoch_keys.entry(r.epoch).or_insert_with(|| epoch_state(id, epochs.get(&r.epoch), r.epoch, keys));
        let opener = match state {
            EpochState::Open(opener) => opener,
            EpochState::Erased(erasure) => return Ok(Opening::Erased(*erasure)),
            EpochState::Unavailable { problem, records } => {
                *records += 1;
                return Err(Unopened { error: problem.clone(), per_record: false });
            }
        };
        let per_record = |detail: String| Unopened { error: format!("sequence {}: {detail}", r.seq), per_record: true };
        let (id, erased_keys) = (&self.id, &mut self.erased_keys);
        let mut erased = |key_ref: &KeyRef| -> Option<i64> {
            let vault = keys.vault?;
            *erased_keys.entry((r.epoch, *key_ref)).or_insert_with(|| vault.erased_by(id, r.epoch, key_ref).ok().flatten())
        };
        match opener.open(id, r.seq, prev, &r.ciphertext) {
            // The vault's word wins over an archive key that can still derive an erased key.
            Ok(OpenedRecord::Record { key_ref: Some(key_ref), .. }) if let Some(erasure) = erased(&key_ref) => {
                if let EpochOpener::Conversations(c) = opener.as_mut() {
                    c.withhold_key(&key_ref);
                }
                Ok(Opening::Erased(erasure))
            }
            Ok(OpenedRecord::Record { record, .. }) => Ok(Opening::Record(record)),
            Ok(OpenedRecord::KeyRecord { .. }) | Err(NotOpened::KeyRecordSealed) => Ok(Opening::KeyRecord),
            Err(NotOpened::NoKey(key_ref)) => match erased(&key_ref) {
                Some(erasure) => Ok(Opening::Erased(erasure)),
                None => Err(per_record("no key for this record (the key vault has not filed it)".to_string())),
            },
            // The core's own text repeats the sequence number; this one states it once.
            Err(NotOpened::Damaged(e)) if e.kind == verbatim_core::ErrorKind::Crypto => {
                Err(per_record("record does not open (altered, or another key)".to_string()))
            }
            Err(NotOpened::Damaged(e)) => Err(per_record(e.detail)),
        }
    }

    /// One error per epoch that opened nothing, with how many records it held.
    fn report_unavailable_epochs(&mut self) {
        let mut problems: Vec<(u64, String)> = self
            .epoch_keys
            .iter()
            .filter_map(|(epoch, state)| match state {
                EpochState::Unavailable { problem, records } => {
                    Some((*epoch, format!("{problem} ({records} record{} unreadable)", if *records == 1 { "" } else { "s" })))
                }
                EpochState::Open(_) | EpochState::Erased(_) => None,
            })
            .collect();
        problems.sort();
        for (_, p) in problems {
            self.error(p);
        }
        self.epoch_keys.clear();
    }

    fn eml_rel(seq: u64, kind: &str) -> String {
        format!("eml/{seq:010}-{kind}.eml")
    }

    fn handle(&mut self, seq: u64, record: Record) -> Result<()> {
        if let Some(filter) = &mut self.filter
            && !filter.admits(&record.body)
        {
            self.summary.not_selected += 1;
            return Ok(());
        }
        let captured_ms = record.captured_ms;
        let mut line = Line {
            seq,
            captured: rfc3339(captured_ms),
            body: LineBody::of(&record.body),
            payload_bytes: None,
            file: None,
            sha256_verified: None,
            eml: None,
        };
        match &record.body {
            RecordBody::Message(m) => {
                self.summary.messages += 1;
                line.eml = Some(self.message(seq, captured_ms, m)?);
            }
            RecordBody::Edit(e) => {
                self.summary.edits += 1;
                line.eml = Some(self.edit(seq, captured_ms, e)?);
            }
            RecordBody::Unsend(u) => {
                self.summary.unsends += 1;
                line.eml = Some(self.unsend(seq, captured_ms, u)?);
            }
            RecordBody::Reaction(r) => {
                self.summary.reactions += 1;
                line.eml = Some(self.reaction(seq, captured_ms, r)?);
            }
            RecordBody::Call(c) => {
                self.summary.calls += 1;
                match &c.recording_id {
                    // Its recording follows; the message is written once it is complete.
                    Some(rid) => {
                        self.calls.insert(rid.clone(), PendingCall { seq, captured_ms, call: c.clone() });
                        line.eml = Some(Self::eml_rel(seq, "call"));
                    }
                    None => line.eml = Some(self.call(seq, captured_ms, c, Recording::NotHeld)?),
                }
            }
            RecordBody::AttachmentStart(h) => self.attachment_start(seq, h)?,
            RecordBody::AttachmentChunk { attachment_id, index } => {
                line.payload_bytes = Some(record.payload.len());
                self.attachment_chunk(seq, attachment_id, *index, &record.payload)?;
            }
            RecordBody::AttachmentEnd { attachment_id, size, sha256, chunks } => {
                if let Some((file, verified, eml)) =
                    self.attachment_end(seq, captured_ms, attachment_id, *size, sha256, *chunks)?
                {
                    line.file = Some(file);
                    line.sha256_verified = Some(verified);
                    line.eml = Some(eml);
                }
            }
            RecordBody::AttachmentOmitted { header, reason } => {
                self.summary.attachments_omitted += 1;
                line.eml = Some(self.attachment_omitted(seq, captured_ms, header, reason)?);
            }
            RecordBody::DisclaimerShown { meta, mode, text } => {
                line.eml = Some(self.disclaimer(seq, captured_ms, meta, *mode, text)?);
            }
            RecordBody::Agent(ev) => {
                self.summary.agent_events += 1;
                line.eml = Some(self.agent(seq, captured_ms, ev)?);
            }
            // Opened key records never reach here (see `open`).
            RecordBody::ConversationKey(_) => return Ok(()),
        }
        self.write_line(&line)
    }

    // ---- attachments ----

    fn attachment_start(&mut self, seq: u64, h: &AttachmentHeader) -> Result<()> {
        if let Some(old) = self.partial.remove(&h.attachment_id) {
            self.error(format!("attachment {}: started again at sequence {seq} before it ended", file_name(&h.attachment_id)));
            drop(old.file);
            let _ = std::fs::remove_file(&old.tmp);
        }
        if self.partial.len() >= MAX_OPEN_ATTACHMENTS {
            self.error(format!("sequence {seq}: too many attachments open at once; attachment skipped"));
            return Ok(());
        }
        let name = file_name(&h.attachment_id);
        if self.attachment_names.claim(&name, &h.attachment_id).is_err() {
            self.error(format!("sequence {seq}: attachment {name}: its file name is taken by another attachment; skipped"));
            return Ok(());
        }
        let tmp = self.att_dir.join(format!("{name}.partial"));
        let file = BufWriter::new(File::create(&tmp).map_err(write_err("create", &tmp))?);
        self.partial.insert(
            h.attachment_id.clone(),
            Partial {
                header: h.clone(),
                start_seq: seq,
                tmp,
                file,
                hasher: Sha256::new(),
                size: 0,
                next_index: 0,
                in_order: true,
            },
        );
        Ok(())
    }

    fn attachment_chunk(&mut self, seq: u64, id: &str, index: u32, payload: &[u8]) -> Result<()> {
        let Some(p) = self.partial.get_mut(id) else {
            self.error(format!("sequence {seq}: chunk of attachment {} that has not started", file_name(id)));
            return Ok(());
        };
        if index != p.next_index {
            p.in_order = false;
            let msg = format!("sequence {seq}: attachment {} chunk {index} where {} was due", file_name(id), p.next_index);
            self.error(msg);
            return Ok(());
        }
        p.file.write_all(payload).map_err(write_err("write", &p.tmp))?;
        p.hasher.update(payload);
        p.size += payload.len() as u64;
        p.next_index = p.next_index.saturating_add(1);
        Ok(())
    }

    /// Completes an attachment: checks size, chunk count and SHA-256 against the end record,
    /// moves the file into place, writes its message. Returns (file, verified, eml).
    fn attachment_end(
        &mut self,
        seq: u64,
        captured_ms: i64,
        id: &str,
        size: u64,
        sha256: &str,
        chunks: u32,
    ) -> Result<Option<(String, bool, String)>> {
        let Some(p) = self.partial.remove(id) else {
            self.error(format!("sequence {seq}: end of attachment {} that has not started", file_name(id)));
            return Ok(None);
        };
        let Partial { header, start_seq, tmp, file, hasher, size: got, next_index, in_order } = p;
        file.into_inner().map_err(|e| e.into_error()).and_then(|f| f.sync_all()).map_err(write_err("write", &tmp))?;
        let digest = hex::encode(hasher.finalize());
        let name = file_name(id);
        let verified = in_order && got == size && next_index == chunks && digest.eq_ignore_ascii_case(sha256.trim());
        if !verified {
            self.error(format!(
                "attachment {name}: does not match its end record (SHA-256 {}, {got} of {size} bytes, {next_index} of {chunks} chunks)",
                if digest.eq_ignore_ascii_case(sha256.trim()) { "matches" } else { "differs" }
            ));
        }
        let path = self.att_dir.join(&name);
        std::fs::rename(&tmp, &path).map_err(write_err("rename", &tmp))?;
        self.summary.attachments += 1;
        let eml = match self.calls.remove(id) {
            Some(call) => {
                self.call(call.seq, call.captured_ms, &call.call, Recording::Held { path: &path, header: &header, verified })?
            }
            None => self.attachment(start_seq, captured_ms, &header, &path, &digest, verified)?,
        };
        let _ = seq;
        Ok(Some((format!("attachments/{name}"), verified, eml)))
    }

    /// Ends the stream: incomplete attachments and calls still waiting for a recording. A
    /// failure here leaves the stream failed, with everything counted so far.
    pub fn finish(mut self) -> StreamExport {
        self.report_unavailable_epochs();
        if let Err(e) = self.finish_files() {
            self.summary.failure = Some(e.to_string());
        }
        self.summary
    }

    /// Gives up on the stream after `failure`: what was written stays (the summary says the
    /// stream is incomplete), files still being reassembled are removed.
    pub fn abandon(mut self, failure: &crate::Error) -> StreamExport {
        self.report_unavailable_epochs();
        for (_, p) in self.partial.drain() {
            drop(p.file);
            let _ = std::fs::remove_file(&p.tmp);
        }
        let _ = self.jsonl.flush();
        self.summary.failure = Some(failure.to_string());
        self.summary
    }

    fn finish_files(&mut self) -> Result<()> {
        let partial: Vec<(String, Partial)> = self.partial.drain().collect();
        for (id, p) in partial {
            let name = file_name(&id);
            self.error(format!("attachment {name}: no end record held (incomplete; kept as {name}.incomplete)"));
            let _ = p.file.into_inner().map(|f| f.sync_all());
            let _ = std::fs::rename(&p.tmp, self.att_dir.join(format!("{name}.incomplete")));
        }
        let mut calls: Vec<PendingCall> = self.calls.drain().map(|(_, c)| c).collect();
        calls.sort_by_key(|c| c.seq);
        for c in calls {
            self.call(c.seq, c.captured_ms, &c.call, Recording::NotHeld)?;
        }
        let path = self.jsonl_path.clone();
        self.jsonl.flush().map_err(write_err("write", &path))?;
        self.jsonl.get_ref().sync_all().map_err(write_err("write", &path))
    }

    // ---- messages ----

    /// The X-Verbatim-* headers every exported message carries.
    fn verbatim_headers(
        &self,
        kind: &str,
        seq: u64,
        captured_ms: i64,
        meta: Option<&EventMeta>,
        dir: Option<Direction>,
    ) -> Vec<(&'static str, String)> {
        let mut h = vec![("X-Verbatim-Type", kind.to_string())];
        if let Some(m) = meta {
            h.push(("X-Verbatim-Channel", m.channel.as_str().to_string()));
            h.push(("X-Verbatim-Conversation", eml::unstructured(&m.conversation_id)));
            h.push(("X-Verbatim-Line", eml::unstructured(&m.line)));
            h.push(("X-Verbatim-Source-Id", eml::unstructured(&m.source_id)));
        }
        if let Some(d) = dir {
            h.push(("X-Verbatim-Direction", direction(d).to_string()));
        }
        h.push(("X-Verbatim-Captured", rfc3339(captured_ms)));
        h.push(("X-Verbatim-Seq", seq.to_string()));
        h.push(("X-Verbatim-Tenant", eml::unstructured(&self.id.tenant)));
        h.push(("X-Verbatim-Device", eml::unstructured(&self.id.device)));
        h.push(("X-Verbatim-Stream", eml::unstructured(&self.id.stream)));
        h
    }

    fn write_eml(
        &mut self,
        seq: u64,
        kind: &str,
        mut headers: Vec<(&'static str, String)>,
        extra: Vec<(&'static str, String)>,
        text: &str,
        file: Option<&FilePart<'_>>,
    ) -> Result<String> {
        headers.extend(extra);
        let rel = Self::eml_rel(seq, kind);
        let path = self.eml_dir.join(format!("{seq:010}-{kind}.eml"));
        eml::write(&path, &headers, text, file, seq).map_err(write_err("write", &path))?;
        self.summary.eml_files += 1;
        Ok(rel)
    }

    fn addresses(list: &[String], channel: &str) -> String {
        list.iter().map(|a| names::address(a, channel)).collect::<Vec<_>>().join(",\r\n ")
    }

    fn message(&mut self, seq: u64, captured_ms: i64, m: &Message) -> Result<String> {
        let ch = m.meta.channel.as_str();
        let mut h = vec![("From", names::address(&m.sender, ch))];
        if !m.recipients.is_empty() {
            h.push(("To", Self::addresses(&m.recipients, ch)));
        }
        h.push(("Date", rfc5322(m.meta.source_time_ms)));
        h.push(("Subject", eml::unstructured(&format!("[{ch}] Message from {}", m.sender))));
        h.push(("Message-ID", names::message_id(None, &m.meta.source_id, ch)));
        if let Some(r) = &m.reply_to {
            h.push(("In-Reply-To", names::message_id(None, r, ch)));
            h.push(("References", names::message_id(None, r, ch)));
        }
        if !m.attachment_ids.is_empty() {
            h.push(("X-Verbatim-Attachments", eml::unstructured(&m.attachment_ids.join(", "))));
        }
        let x = self.verbatim_headers("message", seq, captured_ms, Some(&m.meta), Some(m.direction));
        self.write_eml(seq, "message", h, x, &m.text, None)
    }

    fn edit(&mut self, seq: u64, captured_ms: i64, e: &Edit) -> Result<String> {
        let ch = e.meta.channel.as_str();
        let target = names::message_id(None, &e.target_message_id, ch);
        let h = vec![
            ("From", names::address(&e.editor, ch)),
            ("Date", rfc5322(e.meta.source_time_ms)),
            ("Subject", eml::unstructured(&format!("[{ch}] Edit of message {}", e.target_message_id))),
            ("Message-ID", names::message_id(Some("edit"), &e.meta.source_id, ch)),
            ("In-Reply-To", target.clone()),
            ("References", target),
        ];
        let text = format!(
            "{} edited message {} at {}. The original stays archived. New text:\n\n{}",
            e.editor,
            e.target_message_id,
            rfc3339(e.meta.source_time_ms),
            e.new_text
        );
        let x = self.verbatim_headers("edit", seq, captured_ms, Some(&e.meta), None);
        self.write_eml(seq, "edit", h, x, &text, None)
    }

    fn unsend(&mut self, seq: u64, captured_ms: i64, u: &Unsend) -> Result<String> {
        let ch = u.meta.channel.as_str();
        let target = names::message_id(None, &u.target_message_id, ch);
        let h = vec![
            ("From", names::address(&u.actor, ch)),
            ("Date", rfc5322(u.meta.source_time_ms)),
            ("Subject", eml::unstructured(&format!("[{ch}] Message {} unsent", u.target_message_id))),
            ("Message-ID", names::message_id(Some("unsend"), &u.meta.source_id, ch)),
            ("In-Reply-To", target.clone()),
            ("References", target),
        ];
        let text = format!(
            "{} unsent (deleted) message {} at {}. The original stays archived; this message records the deletion.",
            u.actor,
            u.target_message_id,
            rfc3339(u.meta.source_time_ms)
        );
        let x = self.verbatim_headers("unsend", seq, captured_ms, Some(&u.meta), None);
        self.write_eml(seq, "unsend", h, x, &text, None)
    }

    /// The client notice shown or sent in a conversation, as its own message in that conversation.
    fn disclaimer(
        &mut self,
        seq: u64,
        captured_ms: i64,
        meta: &verbatim_core::model::EventMeta,
        mode: verbatim_core::policy::DisclaimerMode,
        notice: &str,
    ) -> Result<String> {
        let ch = meta.channel.as_str();
        let h = vec![
            ("From", names::address(&meta.line, ch)),
            ("Date", rfc5322(meta.source_time_ms)),
            ("Subject", eml::unstructured(&format!("[{ch}] Client notice shown in {}", meta.conversation_id))),
            ("Message-ID", names::message_id(Some("disclaimer"), &meta.source_id, ch)),
        ];
        let text = format!("The client notice was shown ({mode:?}) in this conversation:\n\n{notice}");
        let x = self.verbatim_headers("disclaimer", seq, captured_ms, Some(meta), None);
        self.write_eml(seq, "disclaimer", h, x, &text, None)
    }

    fn reaction(&mut self, seq: u64, captured_ms: i64, r: &Reaction) -> Result<String> {
        let ch = r.meta.channel.as_str();
        let target = names::message_id(None, &r.target_message_id, ch);
        let what = if r.removed { "removed" } else { "added" };
        let h = vec![
            ("From", names::address(&r.actor, ch)),
            ("Date", rfc5322(r.meta.source_time_ms)),
            ("Subject", eml::unstructured(&format!("[{ch}] Reaction {} {what} by {}", r.reaction, r.actor))),
            ("Message-ID", names::message_id(Some("reaction"), &r.meta.source_id, ch)),
            ("In-Reply-To", target.clone()),
            ("References", target),
        ];
        let text = format!(
            "{} {what} the reaction {} on message {} at {}.",
            r.actor,
            r.reaction,
            r.target_message_id,
            rfc3339(r.meta.source_time_ms)
        );
        let x = self.verbatim_headers("reaction", seq, captured_ms, Some(&r.meta), None);
        self.write_eml(seq, "reaction", h, x, &text, None)
    }

    fn call(&mut self, seq: u64, captured_ms: i64, c: &CallRecord, recording: Recording<'_>) -> Result<String> {
        let ch = c.meta.channel.as_str();
        let outcome = serde_json::to_value(c.outcome).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        let duration = c.ended_ms.map(|e| e.saturating_sub(c.started_ms).max(0) / 1000);
        let mut h = Vec::new();
        let others: Vec<String> = c.participants.iter().filter(|p| **p != c.meta.line).cloned().collect();
        match c.direction {
            Direction::Outbound => {
                h.push(("From", names::address(&c.meta.line, ch)));
                if !others.is_empty() {
                    h.push(("To", Self::addresses(&others, ch)));
                }
            }
            Direction::Inbound => {
                let from = others.first().cloned().unwrap_or_else(|| c.meta.line.clone());
                h.push(("From", names::address(&from, ch)));
                h.push(("To", names::address(&c.meta.line, ch)));
            }
        }
        let dur_text = duration.map(|d| format!(", {} min {} s", d / 60, d % 60)).unwrap_or_default();
        h.push(("Date", rfc5322(c.meta.source_time_ms)));
        h.push(("Subject", eml::unstructured(&format!("[{ch}] Call ({outcome}, {}{dur_text})", direction(c.direction)))));
        h.push(("Message-ID", names::message_id(Some("call"), &c.meta.source_id, ch)));
        let mut text = format!(
            "Call {} ({}), outcome: {outcome}.\nParticipants: {}\nStarted: {}\nEnded: {}\n",
            c.meta.source_id,
            direction(c.direction),
            c.participants.join(", "),
            rfc3339(c.started_ms),
            c.ended_ms.map(rfc3339).unwrap_or_else(|| "not reported".into()),
        );
        if let Some(d) = duration {
            text.push_str(&format!("Duration: {d} s\n"));
        }
        let mut file = None;
        match recording {
            Recording::Held { path, header, verified } => {
                text.push_str(&format!(
                    "Recording: attached ({}, {} bytes{}).\n",
                    header.file_name,
                    header.size,
                    if verified { ", SHA-256 verified" } else { ", DOES NOT MATCH its SHA-256" }
                ));
                file = Some(FilePart { path, file_name: &header.file_name, mime_type: &header.mime_type });
            }
            Recording::Omitted(reason) => text.push_str(&format!("Recording: not captured ({reason}).\n")),
            Recording::NotHeld if c.recording_id.is_some() => {
                text.push_str("Recording: announced but not held by the archive.\n")
            }
            Recording::NotHeld => text.push_str("Recording: none.\n"),
        }
        let x = self.verbatim_headers("call", seq, captured_ms, Some(&c.meta), Some(c.direction));
        self.write_eml(seq, "call", h, x, &text, file.as_ref())
    }

    fn attachment(
        &mut self,
        seq: u64,
        captured_ms: i64,
        a: &AttachmentHeader,
        path: &Path,
        sha256: &str,
        verified: bool,
    ) -> Result<String> {
        let ch = a.meta.channel.as_str();
        let mut h = vec![
            ("From", names::address(&a.sender, ch)),
            ("Date", rfc5322(a.meta.source_time_ms)),
            ("Subject", eml::unstructured(&format!("[{ch}] Attachment: {}", a.file_name))),
            ("Message-ID", names::message_id(Some("attachment"), &a.attachment_id, ch)),
        ];
        if let Some(m) = &a.message_id {
            h.push(("In-Reply-To", names::message_id(None, m, ch)));
            h.push(("References", names::message_id(None, m, ch)));
        }
        h.push(("X-Verbatim-Attachment-Id", eml::unstructured(&a.attachment_id)));
        h.push(("X-Verbatim-Attachment-Sha256", atext(sha256)));
        let text = format!(
            "Attachment {} ({}, {} bytes), {} from {}. SHA-256 {sha256}{}.",
            a.file_name,
            a.mime_type,
            a.size,
            direction(a.direction),
            a.sender,
            if verified { ", verified" } else { ", DOES NOT MATCH the device's record" }
        );
        let x = self.verbatim_headers("attachment", seq, captured_ms, Some(&a.meta), Some(a.direction));
        let part = FilePart { path, file_name: &a.file_name, mime_type: &a.mime_type };
        self.write_eml(seq, "attachment", h, x, &text, Some(&part))
    }

    fn attachment_omitted(&mut self, seq: u64, captured_ms: i64, a: &AttachmentHeader, reason: &str) -> Result<String> {
        // A recording that was not captured completes its call's message.
        if let Some(call) = self.calls.remove(&a.attachment_id) {
            return self.call(call.seq, call.captured_ms, &call.call, Recording::Omitted(reason));
        }
        let ch = a.meta.channel.as_str();
        let mut h = vec![
            ("From", names::address(&a.sender, ch)),
            ("Date", rfc5322(a.meta.source_time_ms)),
            ("Subject", eml::unstructured(&format!("[{ch}] Attachment not captured: {}", a.file_name))),
            ("Message-ID", names::message_id(Some("attachment"), &a.attachment_id, ch)),
        ];
        if let Some(m) = &a.message_id {
            h.push(("In-Reply-To", names::message_id(None, m, ch)));
            h.push(("References", names::message_id(None, m, ch)));
        }
        h.push(("X-Verbatim-Attachment-Id", eml::unstructured(&a.attachment_id)));
        let text = format!(
            "Attachment {} ({}, {} bytes), {} from {}, was not captured: {reason}.",
            a.file_name,
            a.mime_type,
            a.size,
            direction(a.direction),
            a.sender
        );
        let x = self.verbatim_headers("attachment_omitted", seq, captured_ms, Some(&a.meta), Some(a.direction));
        self.write_eml(seq, "attachment-omitted", h, x, &text, None)
    }

    fn agent(&mut self, seq: u64, captured_ms: i64, ev: &AgentEvent) -> Result<String> {
        let value = serde_json::to_value(ev).unwrap_or_default();
        let name = value.get("event").and_then(|v| v.as_str()).unwrap_or("unknown").to_string();
        let mut text = format!("The Verbatim agent on device {} reported: {name}.\n\n", self.id.device);
        if let Some(obj) = value.as_object() {
            for (k, v) in obj.iter().filter(|(k, _)| *k != "event") {
                let shown = match v {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Array(a) => a
                        .iter()
                        .map(|x| x.as_str().map(str::to_string).unwrap_or_else(|| x.to_string()))
                        .collect::<Vec<_>>()
                        .join(", "),
                    other => other.to_string(),
                };
                text.push_str(&format!("{k}: {shown}\n"));
            }
        }
        let domain = format!("{}.verbatim.invalid", atext(&self.id.device));
        let h = vec![
            ("From", format!("{} <agent@{domain}>", eml::phrase("Verbatim agent"))),
            ("Date", rfc5322(captured_ms)),
            ("Subject", eml::unstructured(&format!("Verbatim agent event: {name}"))),
            ("Message-ID", format!("<agent.{seq}.{}@{domain}>", atext(&self.id.stream))),
            ("X-Verbatim-Agent-Event", atext(&name)),
        ];
        let x = self.verbatim_headers("agent", seq, captured_ms, None, None);
        self.write_eml(seq, "agent", h, x, &text, None)
    }
}
