//! Export and comparison.

#[allow(unused_imports)]
use super::*;

pub struct ExportedStream {
    pub info: StreamExport,
    /// `<out>/<tenant>/<device>/<stream>/` (attachments/, eml/).
    pub dir: PathBuf,
    pub lines: Vec<Json>,
    pub text: String,
}

pub struct Exported {
    pub summary: ExportSummary,
    pub out_dir: PathBuf,
    pub streams: Vec<ExportedStream>,
}

pub fn export_archive(archive_dir: &Path, key: &ArchiveKey, out: &Path) -> Exported {
    let summary = verbatim_receiver::export(archive_dir, &key.secret, out).expect("export runs");
    let streams = summary
        .streams
        .iter()
        .map(|info| {
            let jsonl = out.join(&info.jsonl);
            let text = std::fs::read_to_string(&jsonl).unwrap_or_else(|e| panic!("{}: {e}", jsonl.display()));
            let lines = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("export line is not JSON ({e}): {l}")))
                .collect();
            let dir = jsonl.with_extension("");
            ExportedStream { info: info.clone(), dir, lines, text }
        })
        .collect();
    Exported { summary, out_dir: out.to_path_buf(), streams }
}

pub(crate) fn line_type(line: &Json) -> &str {
    line["type"].as_str().unwrap_or("?")
}

pub(crate) fn body_of(line: &Json) -> RecordBody {
    serde_json::from_value(line.clone()).unwrap_or_else(|e| panic!("line does not parse back into a RecordBody ({e}): {line}"))
}

/// What an in-scope event must have become in the archive, keyed by (line type, id).
pub(crate) struct Expected {
    body: RecordBody,
    /// For attachment starts: the source file whose bytes must come back.
    file: Option<PathBuf>,
}

pub(crate) fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).len()
}

pub(crate) fn expected_records(captured: &Captured) -> BTreeMap<(String, String), Expected> {
    let mut out = BTreeMap::new();
    let mut put = |kind: &str, id: &str, body: RecordBody, file: Option<PathBuf>| {
        let prev = out.insert((kind.to_string(), id.to_string()), Expected { body, file });
        assert!(prev.is_none(), "the workload reused the id {id}");
    };
    for e in captured.in_scope() {
        let id = e.event.meta().source_id.clone();
        match &e.event {
            Event::Message(m) => put("message", &id, RecordBody::Message(m.clone()), None),
            Event::Edit(x) => put("edit", &id, RecordBody::Edit(x.clone()), None),
            Event::Unsend(x) => put("unsend", &id, RecordBody::Unsend(x.clone()), None),
            Event::Reaction(x) => put("reaction", &id, RecordBody::Reaction(x.clone()), None),
            Event::Attachment(a) => {
                let header = AttachmentHeader {
                    meta: a.meta.clone(),
                    attachment_id: id.clone(),
                    message_id: a.message_id.clone(),
                    direction: a.direction,
                    sender: a.sender.clone(),
                    file_name: a.file_name.clone(),
                    mime_type: a.mime_type.clone(),
                    size: file_len(&a.path),
                };
                put("attachment_start", &id, RecordBody::AttachmentStart(header), Some(a.path.clone()));
            }
            Event::Call(c) => {
                let recording_id = c.recording_path.as_ref().map(|_| format!("recording:{id}"));
                let call = CallRecord {
                    meta: c.meta.clone(),
                    direction: c.direction,
                    participants: c.participants.clone(),
                    started_ms: c.started_ms,
                    ended_ms: c.ended_ms,
                    outcome: c.outcome,
                    recording_id: recording_id.clone(),
                };
                put("call", &id, RecordBody::Call(call), None);
                if let (Some(path), Some(rid)) = (&c.recording_path, recording_id) {
                    let header = AttachmentHeader {
                        meta: c.meta.clone(),
                        attachment_id: rid.clone(),
                        message_id: None,
                        direction: c.direction,
                        sender: c.participants.first().cloned().unwrap_or_default(),
                        file_name: path.file_name().unwrap().to_string_lossy().into_owned(),
                        mime_type: c.recording_mime_type.clone().unwrap_or_else(|| "application/octet-stream".into()),
                        size: file_len(path),
                    };
                    put("attachment_start", &rid, RecordBody::AttachmentStart(header), Some(path.clone()));
                }
            }
        }
    }
    out
}

/// The (type, id) of a content line, or None for agent events, chunks and ends.
pub(crate) fn content_key(line: &Json) -> Option<(String, String)> {
    let t = line_type(line);
    let id = match t {
        "message" | "edit" | "unsend" | "reaction" | "call" => line["meta"]["source_id"].as_str(),
        "attachment_start" => line["attachment_id"].as_str(),
        "attachment_omitted" => line["header"]["attachment_id"].as_str(),
        _ => return None,
    };
    Some((t.to_string(), id.unwrap_or_else(|| panic!("content line without an id: {line}")).to_string()))
}

impl Exported {
    pub fn lines(&self) -> impl Iterator<Item = &Json> {
        self.streams.iter().flat_map(|s| s.lines.iter())
    }

    pub fn only_stream(&self) -> &ExportedStream {
        assert_eq!(self.streams.len(), 1, "{}", self.summary.to_text());
        &self.streams[0]
    }

    /// Sequence numbers of lines that did not open.
    pub fn unreadable(&self) -> Vec<u64> {
        self.lines().filter(|l| line_type(l) == "unreadable").map(|l| l["seq"].as_u64().unwrap()).collect()
    }

    pub fn max_seq(&self) -> u64 {
        self.lines().filter_map(|l| l["seq"].as_u64()).max().unwrap_or(0)
    }

    /// Every agent event held, in order.
    pub fn agent_events(&self) -> Vec<AgentEvent> {
        self.lines()
            .filter(|l| line_type(l) == "agent")
            .map(|l| match body_of(l) {
                RecordBody::Agent(ev) => ev,
                other => panic!("agent line parsed as {other:?}"),
            })
            .collect()
    }

    /// Names of the agent events held (`started`, `policy_applied`, ...), in order.
    pub fn agent_event_names(&self) -> Vec<String> {
        self.lines().filter(|l| line_type(l) == "agent").map(|l| l["event"].as_str().unwrap_or("?").to_string()).collect()
    }

    /// Each stream's sequence numbers are 1..=n, each once, every record opened.
    pub fn assert_contiguous_and_readable(&self) {
        for s in &self.streams {
            let seqs: Vec<u64> = s.lines.iter().map(|l| l["seq"].as_u64().expect("seq")).collect();
            let want: Vec<u64> = (1..=seqs.len() as u64).collect();
            assert!(seqs == want, "stream {}: sequences are not 1..={} each once", s.info.stream, seqs.len());
        }
        assert!(self.unreadable().is_empty(), "records that do not open: {:?}\n{}", self.unreadable(), self.summary.to_text());
        assert!(self.summary.ok(), "export reports errors:\n{}", self.summary.to_text());
    }

    /// The heart of the suite: everything captured in scope is in the export exactly once with
    /// the fields the app gave, attachments and recordings byte-equal to their source files;
    /// nothing out of scope is anywhere; no content the app did not capture is there.
    pub fn assert_exactly_once(&self, captured: &Captured) {
        self.assert_contiguous_and_readable();
        self.assert_content(captured);
    }

    /// The content part of [`Exported::assert_exactly_once`], for exports that are expected to
    /// hold unreadable records too (those hold no content line).
    pub fn assert_content(&self, captured: &Captured) {
        let expected = expected_records(captured);
        let mut found: BTreeMap<(String, String), Vec<(&ExportedStream, &Json)>> = BTreeMap::new();
        for s in &self.streams {
            for line in &s.lines {
                if let Some(key) = content_key(line) {
                    found.entry(key).or_default().push((s, line));
                }
            }
        }
        for (key, want) in &expected {
            let hits = found.get(key).map(Vec::as_slice).unwrap_or(&[]);
            assert!(hits.len() == 1, "{key:?} is in the export {} times, not once", hits.len());
            let (stream, line) = hits[0];
            let got = body_of(line);
            assert!(got == want.body, "{key:?} differs from what was captured:\n exported {got:?}\n captured {:?}", want.body);
            if let Some(path) = &want.file {
                check_file(stream, &key.1, path);
            }
        }
        let unexpected: Vec<_> = found.keys().filter(|k| !expected.contains_key(*k)).collect();
        assert!(unexpected.is_empty(), "the export holds content that was not captured: {unexpected:?}");
        for e in captured.out_of_scope() {
            let quoted = format!("\"{}\"", e.event.meta().source_id);
            for s in &self.streams {
                assert!(!s.text.contains(&quoted), "out-of-scope event {quoted} reached the archive");
            }
        }
    }
}

/// The attachment `id` was reassembled in `stream` from exactly its chunks, its end record
/// carries the source file's SHA-256, and the exported file is byte-equal to the source.
pub(crate) fn check_file(stream: &ExportedStream, id: &str, source: &Path) {
    let bytes = std::fs::read(source).unwrap_or_else(|e| panic!("{}: {e}", source.display()));
    let sha = hex::encode(Sha256::digest(&bytes));
    let ends: Vec<&Json> =
        stream.lines.iter().filter(|l| line_type(l) == "attachment_end" && l["attachment_id"].as_str() == Some(id)).collect();
    assert_eq!(ends.len(), 1, "attachment {id}: {} end records", ends.len());
    let end = ends[0];
    assert_eq!(end["sha256"].as_str(), Some(sha.as_str()), "attachment {id}: SHA-256 differs from the source file's");
    assert_eq!(end["size"].as_u64(), Some(bytes.len() as u64), "attachment {id}: size");
    assert_eq!(end["sha256_verified"].as_bool(), Some(true), "attachment {id}: export did not verify it");
    let chunks =
        stream.lines.iter().filter(|l| line_type(l) == "attachment_chunk" && l["attachment_id"].as_str() == Some(id)).count()
            as u64;
    assert_eq!(chunks, (bytes.len() as u64).div_ceil(CHUNK), "attachment {id}: chunk records");
    assert_eq!(end["chunks"].as_u64(), Some(chunks), "attachment {id}: chunk count");
    let file = stream.dir.join(end["file"].as_str().unwrap_or_else(|| panic!("attachment {id}: no file")));
    let exported = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    assert!(
        exported == bytes,
        "attachment {id}: exported file differs from the source ({} vs {} bytes)",
        exported.len(),
        bytes.len()
    );
}
