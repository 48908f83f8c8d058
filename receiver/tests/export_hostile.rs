//! Export against what a hostile or broken device can send: ids chosen to collide on disk,
//! epochs sealed to a key the archive does not have, records that do not open, fields whose
//! names clash with the export's own. Data goes straight into the store (the receiver's
//! upload path is tested elsewhere); export reads it back as it would in production.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use support::*;
use verbatim_core::chain::{self, Link, StreamId};
use verbatim_core::model::{Channel, Direction, EventMeta};
use verbatim_core::record::{AgentEvent, Record, RecordBody};
use verbatim_core::seal::{self, EpochKey};
use verbatim_core::wire::{Batch, EpochInfo, WireRecord};
use verbatim_receiver::AcceptedKeys;
use verbatim_receiver::store::{Mode, Outcome, SqliteStore, StoreRules};
use verbatim_receiver::{export, export_with_keys};

/// A device stream sealed and chained as the agent does, with any number of epochs, each to
/// the archive key chosen for it.
struct Sealer {
    id: StreamId,
    prev: Link,
    epoch: u64,
    key: Option<EpochKey>,
    epochs: Vec<EpochInfo>,
    records: Vec<WireRecord>,
}

impl Sealer {
    fn new(tenant: &str, device: &str, stream: &str) -> Sealer {
        let id = StreamId { tenant: tenant.into(), device: device.into(), stream: stream.into() };
        Sealer { prev: chain::genesis(&id), id, epoch: 0, key: None, epochs: Vec::new(), records: Vec::new() }
    }

    /// Starts a new epoch sealed to `archive`.
    fn rotate(&mut self, archive: &Archive) -> &mut Self {
        self.epoch += 1;
        let (key, encapsulation) = EpochKey::create(&archive.public, &self.id, self.epoch).unwrap();
        self.epochs.push(EpochInfo { epoch: self.epoch, archive_key_id: archive.key_id.clone(), encapsulation });
        self.key = Some(key);
        self
    }

    /// Seals and chains `record`; `damage` flips a ciphertext byte before the link is taken,
    /// as an alteration the chain cannot show and only the seal can.
    fn push_with(&mut self, record: &Record, damage: bool) -> &mut Self {
        let seq = self.records.len() as u64 + 1;
        let key = self.key.as_mut().expect("an epoch");
        let mut ciphertext = key.seal(&self.id, seq, &self.prev, &record.encode()).unwrap();
        if damage {
            ciphertext[0] ^= 1;
        }
        let link = chain::link(&self.prev, seq, self.epoch, &ciphertext);
        self.prev = link;
        self.records.push(WireRecord { seq, epoch: self.epoch, link, ciphertext });
        self
    }

    fn push(&mut self, record: &Record) -> &mut Self {
        self.push_with(record, false)
    }

    fn push_n(&mut self, n: usize) -> &mut Self {
        for _ in 0..n {
            let i = self.records.len();
            self.push(&agent_record(i));
        }
        self
    }

    fn batch(&self) -> Batch {
        Batch { stream: self.id.clone(), epochs: self.epochs.clone(), records: self.records.clone() }
    }
}

fn agent_record(i: usize) -> Record {
    Record::new(1_700_000_000_000 + i as i64, RecordBody::Agent(AgentEvent::QueueCorrupt { detail: format!("test {i}") }))
}

/// Stores every stream's records in `data` as the receiver would after accepting them.
fn store(data: &Path, streams: &[&Sealer]) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // Written as a receiver of before the key-id check could have: every id the epochs name.
    let ids: Vec<&str> = streams.iter().flat_map(|s| s.epochs.iter().map(|e| e.archive_key_id.as_str())).collect();
    let rules = StoreRules::new(AcceptedKeys::from_key_ids(ids));
    let store = SqliteStore::open(data, rules).unwrap();
    for s in streams {
        let outcome = rt.block_on(store.submit(s.batch(), Mode::Commit)).unwrap();
        assert!(matches!(outcome, Outcome::Stored(_)), "{:?}: {outcome:?}", s.id);
    }
    store.close();
}

fn lines(out: &Path, jsonl: &str) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(out.join(jsonl)).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn stream_export<'a>(summary: &'a verbatim_receiver::ExportSummary, stream: &str) -> &'a verbatim_receiver::export::StreamExport {
    summary.streams.iter().find(|s| s.stream == stream).unwrap_or_else(|| panic!("no stream {stream}"))
}

// ---- paths -----------------------------------------------------------------------------------

#[test]
fn streams_named_x_and_x_jsonl_export_side_by_side_and_another_device_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let archive = archive_keys();
    let mut x = Sealer::new("acme", "dev-attacker", "x");
    x.rotate(&archive).push_n(1);
    let mut x_jsonl = Sealer::new("acme", "dev-attacker", "x.jsonl");
    x_jsonl.rotate(&archive).push_n(1);
    let mut other = Sealer::new("acme", "dev-honest", "s-1");
    other.rotate(&archive).push_n(94);
    let data = dir.path().join("data");
    store(&data, &[&x, &x_jsonl, &other]);

    let out = dir.path().join("out");
    let summary = export(&data, &archive.secret, &out).unwrap();
    assert!(summary.ok() && summary.complete(), "{}", summary.to_text());
    assert_eq!(summary.records, 96);
    assert_eq!(lines(&out, &stream_export(&summary, "s-1").jsonl).len(), 94, "every event of the other device");
    for s in ["x", "x.jsonl"] {
        let l = lines(&out, &stream_export(&summary, s).jsonl);
        assert_eq!(l.len(), 1, "{s}");
        assert_eq!(l[0]["detail"], "test 0");
    }
    assert_ne!(stream_export(&summary, "x").jsonl, stream_export(&summary, "x.jsonl").jsonl);
}

#[test]
fn hostile_ids_get_distinct_paths_inside_the_output_directory() {
    let dir = tempfile::tempdir().unwrap();
    let archive = archive_keys();
    let hostile = [
        "..",
        ".",
        "...",
        "a/b",
        "a_b",
        "a\\b",
        "../../../../tmp/escape",
        "/abs",
        "x",
        "x.jsonl",
        "X.JSONL",
        "X",
        "A",
        "a",
        "con",
        "attachments",
        "eml",
        "café",
        "CAFÉ",
        "cafe\u{301}",
        "\u{202e}gpj.exe",
        "~root",
        "-rf",
    ];
    let long_a = "a".repeat(256);
    let long_b = format!("{}b", "a".repeat(255));
    let mut sealers = Vec::new();
    for (i, id) in hostile.iter().copied().chain([long_a.as_str(), long_b.as_str()]).enumerate() {
        // Each hostile id as a stream, and (for some) as a tenant and a device too.
        let mut s = Sealer::new("acme", "dev-1", id);
        s.rotate(&archive).push_n(1 + i % 3);
        sealers.push(s);
        if i % 4 == 0 {
            let mut t = Sealer::new(id, id, "s");
            t.rotate(&archive).push_n(1);
            sealers.push(t);
        }
    }
    let data = dir.path().join("data");
    store(&data, &sealers.iter().collect::<Vec<_>>());

    let out = dir.path().join("out");
    let summary = export(&data, &archive.secret, &out).unwrap();
    assert!(summary.ok() && summary.complete(), "{}", summary.to_text());
    assert_eq!(summary.streams.len(), sealers.len());
    let exported: BTreeSet<StreamId> = summary
        .streams
        .iter()
        .map(|s| StreamId { tenant: s.tenant.clone(), device: s.device.clone(), stream: s.stream.clone() })
        .collect();
    assert_eq!(exported, sealers.iter().map(|s| s.id.clone()).collect::<BTreeSet<_>>());
    let mut seen = BTreeSet::new();
    for s in &summary.streams {
        assert!(seen.insert(s.jsonl.to_lowercase()), "{} shared", s.jsonl);
        let dir_of_stream = s.jsonl.trim_end_matches(".jsonl").to_lowercase();
        assert!(seen.insert(dir_of_stream.clone()), "{dir_of_stream} shared");
        // Written where the summary says, inside the output directory.
        let path = out.join(&s.jsonl).canonicalize().unwrap();
        assert!(path.starts_with(out.canonicalize().unwrap()), "{}", path.display());
        let wanted = sealers.iter().find(|x| (&x.id.tenant, &x.id.device, &x.id.stream) == (&s.tenant, &s.device, &s.stream));
        let wanted = wanted.unwrap().records.len();
        assert_eq!(lines(&out, &s.jsonl).len(), wanted, "{}", s.jsonl);
    }
    assert!(!dir.path().join("tmp").exists() && !Path::new("/tmp/escape").exists());
}

#[test]
fn a_stream_that_cannot_be_written_fails_alone_and_the_rest_is_exported() {
    let dir = tempfile::tempdir().unwrap();
    let archive = archive_keys();
    let mut blocked = Sealer::new("acme", "dev-1", "blocked");
    blocked.rotate(&archive).push_n(3);
    let mut other = Sealer::new("acme", "dev-2", "s-1");
    other.rotate(&archive).push_n(94);
    let data = dir.path().join("data");
    store(&data, &[&blocked, &other]);

    // Something in the output directory where the stream's directory belongs.
    let out = dir.path().join("out");
    std::fs::create_dir_all(out.join("acme/dev-1")).unwrap();
    std::fs::write(out.join("acme/dev-1/blocked"), b"not a directory").unwrap();
    let summary = export(&data, &archive.secret, &out).unwrap();
    assert!(!summary.complete() && !summary.ok());
    assert_eq!(summary.failed_streams, 1);
    let failed = stream_export(&summary, "blocked");
    assert!(failed.failure.as_deref().unwrap().contains("acme/dev-1/blocked"), "{:?}", failed.failure);
    let fine = stream_export(&summary, "s-1");
    assert_eq!((fine.records, fine.failure.as_deref()), (94, None));
    assert_eq!(lines(&out, &fine.jsonl).len(), 94);
    let text = summary.to_text();
    assert!(text.contains("FAILED") && text.contains("export INCOMPLETE: 1 stream(s) failed:\n    acme/dev-1/blocked"), "{text}");
}

// ---- keys ------------------------------------------------------------------------------------

#[test]
fn an_epoch_without_its_private_key_is_reported_once_and_everything_else_exported() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (archive_keys(), foreign_archive_keys());
    let mut s = Sealer::new("acme", "dev-1", "s-1");
    s.rotate(&old).push_n(5);
    s.rotate(&new).push_n(358);
    s.rotate(&old).push_n(2);
    let data = dir.path().join("data");
    store(&data, &[&s]);

    // Only the old key: the new key's epoch is one error, its records counted unreadable.
    let out = dir.path().join("out");
    let summary = export(&data, &old.secret, &out).unwrap();
    let st = &summary.streams[0];
    assert_eq!(st.errors, [format!("epoch 2: no private key for archive key id {} (358 records unreadable)", new.key_id)]);
    assert_eq!((st.records, st.unreadable, summary.unreadable, summary.errors), (365, 358, 358, 1));
    let l = lines(&out, &st.jsonl);
    assert_eq!(l.iter().filter(|l| l["type"] == "agent").count(), 7, "both epochs of the old key");
    assert_eq!(l[5]["type"], "unreadable");
    assert_eq!(l[5]["error"], format!("epoch 2: no private key for archive key id {}", new.key_id));
    assert!(summary.complete());

    // Both keys (a rotation): everything opens.
    let summary = export_with_keys(&data, &[new.secret, old.secret], &dir.path().join("out2")).unwrap();
    assert!(summary.ok(), "{}", summary.to_text());
    assert_eq!((summary.records, summary.agent_events, summary.unreadable), (365, 365, 0));
}

#[test]
fn an_unreadable_record_states_its_sequence_once() {
    let dir = tempfile::tempdir().unwrap();
    let archive = archive_keys();
    let mut s = Sealer::new("acme", "dev-1", "s-1");
    s.rotate(&archive).push(&agent_record(0)).push_with(&agent_record(1), true).push(&agent_record(2));
    let data = dir.path().join("data");
    store(&data, &[&s]);
    let out = dir.path().join("out");
    let summary = export(&data, &archive.secret, &out).unwrap();
    let st = &summary.streams[0];
    assert_eq!(st.errors, ["sequence 2: record does not open (altered, or another key)"]);
    assert_eq!(st.unreadable, 1);
    let l = lines(&out, &st.jsonl);
    assert_eq!(
        l[1],
        serde_json::json!({"seq": 2, "type": "unreadable", "error": "sequence 2: record does not open (altered, or another key)"})
    );
    assert_eq!((l[0]["type"].as_str(), l[2]["type"].as_str()), (Some("agent"), Some("agent")));

    // A device that names no key the archive has gets the same treatment as a wrong key.
    let mut stranger = Sealer::new("acme", "dev-2", "s-2");
    stranger.rotate(&archive).push_n(2);
    stranger.epochs[0].archive_key_id = "not-a-key-id".into();
    let data2 = dir.path().join("data2");
    store(&data2, &[&stranger]);
    let summary = export(&data2, &archive.secret, &dir.path().join("out2")).unwrap();
    assert_eq!(summary.streams[0].errors, ["epoch 1: no private key for archive key id not-a-key-id (2 records unreadable)"]);
}

// ---- JSON Lines: no key twice ----------------------------------------------------------------

/// A JSON value parsed by a parser that refuses an object holding a key twice.
struct Strict;

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Strict, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Strict;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON without duplicate keys")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Strict, E> {
        Ok(Strict)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Strict, E> {
        Ok(Strict)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Strict, E> {
        Ok(Strict)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Strict, E> {
        Ok(Strict)
    }
    fn visit_str<E>(self, _: &str) -> Result<Strict, E> {
        Ok(Strict)
    }
    fn visit_unit<E>(self) -> Result<Strict, E> {
        Ok(Strict)
    }
    fn visit_none<E>(self) -> Result<Strict, E> {
        Ok(Strict)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Strict, D::Error> {
        serde::Deserialize::deserialize(d)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        while seq.next_element::<Strict>()?.is_some() {}
        Ok(Strict)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
        let mut keys = BTreeSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !keys.insert(key.clone()) {
                return Err(serde::de::Error::custom(format!("duplicate key `{key}`")));
            }
            map.next_value::<Strict>()?;
        }
        Ok(Strict)
    }
}

fn strict_parse(line: &str) -> Result<(), String> {
    serde_json::from_str::<Strict>(line).map(|_| ()).map_err(|e| e.to_string())
}

/// One of every agent event. The match names every variant, so a new one fails to compile
/// here until it is added to this test.
fn every_agent_event() -> Vec<AgentEvent> {
    let all = vec![
        AgentEvent::Started { agent_version: "1".into(), after_crash: true },
        AgentEvent::PolicyApplied { policy_version: "7".into(), fingerprint: "ab".into(), archive_key_id: "k".into() },
        AgentEvent::PolicyRejected { problems: vec!["archive_url: missing".into()] },
        AgentEvent::PolicyWithdrawn { policy_version: "7".into(), fingerprint: "ab".into(), pending_records: 4 },
        AgentEvent::CaptureChannels { enabled: vec![Channel::Sms], disabled: vec![Channel::Wechat] },
        AgentEvent::EpochRotated { epoch: 2, reason: "restart".into(), archive_key_id: "k".into() },
        AgentEvent::QueueAlert { used_bytes: 80, max_bytes: 100, percent: 80 },
        AgentEvent::QueueFull { used_bytes: 100, max_bytes: 100 },
        AgentEvent::ClockJumped { expected_ms: 1, observed_ms: 2, delta_ms: 1 },
        AgentEvent::UploadRefused { reason: "forbidden".into() },
        AgentEvent::TlsPinMismatch { host: "archive.example".into() },
        AgentEvent::QueueCorrupt { detail: "row 3".into() },
        AgentEvent::Heartbeat { interval_hours: 24, since_ms: 5, captured: 1234, out_of_scope: 7, refused: 1 },
        AgentEvent::CaptureUnavailable { cause: "not_configured".into(), detail: "d".into(), start_ms: 1, end_ms: 2, refused: 3 },
        AgentEvent::UncapturedCommunication {
            channel: Channel::Sms,
            conversation_id: "c".into(),
            source_id: "u-1".into(),
            source_time_ms: 1,
            direction: Direction::Outbound,
            reason: "not_configured".into(),
            fail_closed: false,
        },
        AgentEvent::PendingStale { oldest_pending_ms: 1, hours: 48 },
        AgentEvent::Unenrolling { forced: false, pending_records: 0 },
    ];
    for ev in &all {
        match ev {
            AgentEvent::Started { .. }
            | AgentEvent::PolicyApplied { .. }
            | AgentEvent::PolicyRejected { .. }
            | AgentEvent::PolicyWithdrawn { .. }
            | AgentEvent::CaptureChannels { .. }
            | AgentEvent::EpochRotated { .. }
            | AgentEvent::QueueAlert { .. }
            | AgentEvent::QueueFull { .. }
            | AgentEvent::ClockJumped { .. }
            | AgentEvent::UploadRefused { .. }
            | AgentEvent::TlsPinMismatch { .. }
            | AgentEvent::QueueCorrupt { .. }
            | AgentEvent::Heartbeat { .. }
            | AgentEvent::CaptureUnavailable { .. }
            | AgentEvent::UncapturedCommunication { .. }
            | AgentEvent::PendingStale { .. }
            | AgentEvent::Unenrolling { .. } => {}
        }
    }
    all
}

#[test]
fn the_strict_parser_refuses_a_key_twice() {
    assert!(strict_parse(r#"{"a":1,"b":{"c":[{"d":1}]}}"#).is_ok());
    let e = strict_parse(r#"{"seq":1,"captured":"2025","type":"agent","captured":5}"#).unwrap_err();
    assert!(e.contains("duplicate key `captured`"), "{e}");
    assert!(strict_parse(r#"{"a":{"b":1,"b":2}}"#).is_err());
}

#[test]
fn no_line_of_a_rich_export_holds_a_key_twice() {
    let dir = tempfile::tempdir().unwrap();
    let archive = archive_keys();
    let mut s = Sealer::new("acme", "dev-1", "s-1");
    s.rotate(&archive);
    let t = 1_751_364_000_000;
    let mut records = every_kind();
    records.push(Record::new(
        t,
        RecordBody::DisclaimerShown {
            meta: EventMeta {
                channel: Channel::Sms,
                line: "+1".into(),
                conversation_id: "c".into(),
                source_id: "d-1".into(),
                source_time_ms: t,
            },
            mode: verbatim_core::policy::DisclaimerMode::FirstMessage,
            text: "This conversation is recorded.".into(),
        },
    ));
    records.extend(every_agent_event().into_iter().map(|ev| Record::new(t, RecordBody::Agent(ev))));
    for r in &records {
        s.push(r);
    }
    s.push_with(&agent_record(0), true); // an unreadable line too
    let data = dir.path().join("data");
    store(&data, &[&s]);
    let out = dir.path().join("out");
    let summary = export(&data, &archive.secret, &out).unwrap();
    assert_eq!(summary.unreadable, 1);
    let text = std::fs::read_to_string(out.join(&summary.streams[0].jsonl)).unwrap();
    let mut kinds = BTreeSet::new();
    for (n, line) in text.lines().enumerate() {
        strict_parse(line).unwrap_or_else(|e| panic!("line {}: {e}: {line}", n + 1));
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        kinds.insert(format!("{}/{}", v["type"].as_str().unwrap(), v["event"].as_str().unwrap_or("")));
    }
    assert_eq!(text.lines().count(), records.len() + 1);
    assert_eq!(kinds.iter().filter(|k| k.starts_with("agent/")).count(), every_agent_event().len(), "{kinds:?}");
    for k in ["message/", "edit/", "unsend/", "reaction/", "call/", "attachment_start/", "attachment_chunk/", "attachment_end/"] {
        assert!(kinds.contains(k), "{k} missing from {kinds:?}");
    }
    for k in ["attachment_omitted/", "disclaimer_shown/", "unreadable/"] {
        assert!(kinds.contains(k), "{k} missing from {kinds:?}");
    }

    // The heartbeat keeps both numbers: the capture time and its counter, renamed.
    let heartbeat: serde_json::Value =
        text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()).find(|v| v["event"] == "heartbeat").unwrap();
    assert_eq!(heartbeat["captured"], verbatim_receiver::time::rfc3339(t));
    assert_eq!(heartbeat["captured_count"], 1234);
    assert_eq!((heartbeat["out_of_scope"].as_u64(), heartbeat["refused"].as_u64()), (Some(7), Some(1)));
}

// ---- .eml: hostile handles, subjects and file names ------------------------------------------

const HOSTILE_HANDLES: &[&str] = &[
    "Zoë\r\nBcc: evil@example.com",
    "line\nbreak",
    "cr\ronly",
    "\"quoted\" <fake@example.com>, other@example.com",
    "tab\there",
    "nul\0byte",
    "c1\u{85}next-line",
    "sep\u{2028}arator",
    "\u{202e}moc.elpmaxe@lla",
    "=?UTF-8?B?Cg==?=",
    "back\\slash",
    "",
    "日本語の名前",
    "very long name ",
];

const HOSTILE_FILE_NAMES: &[&str] = &[
    "../../etc/passwd",
    "..\\..\\boot.ini",
    "a\r\nContent-Type: text/html.pdf",
    "\u{202e}fdp.exe",
    "..",
    "résumé.pdf",
    "q\"uote.txt",
];

/// A stream whose messages, reactions, calls and attachments carry hostile handles, subjects
/// and file names.
fn hostile_stream(archive: &Archive) -> (Sealer, Vec<Record>) {
    let mut s = Sealer::new("acme", "dev-1", "s-1");
    s.rotate(archive);
    let t = 1_751_364_000_000;
    let meta = |source_id: String, conversation: &str| EventMeta {
        channel: Channel::Whatsapp,
        line: "+15550100\r\nX-Injected: 1".into(),
        conversation_id: conversation.into(),
        source_id,
        source_time_ms: t,
    };
    let mut records = Vec::new();
    for (i, h) in HOSTILE_HANDLES.iter().enumerate() {
        let long;
        let h = if h.starts_with("very long") {
            long = h.repeat(40);
            long.as_str()
        } else {
            h
        };
        records.push(Record::new(
            t,
            RecordBody::Message(verbatim_core::model::Message {
                meta: meta(format!("m-{i}\r\n"), h),
                direction: Direction::Inbound,
                sender: h.into(),
                recipients: vec![h.into(), "+15550100".into()],
                text: format!("hello {h}"),
                attachment_ids: vec![h.into()],
                reply_to: Some(h.into()),
            }),
        ));
        records.push(Record::new(
            t,
            RecordBody::Reaction(verbatim_core::model::Reaction {
                meta: meta(format!("r-{i}"), "c"),
                target_message_id: h.into(),
                actor: h.into(),
                reaction: h.into(),
                removed: false,
            }),
        ));
    }
    for (i, name) in HOSTILE_FILE_NAMES.iter().enumerate() {
        let header = verbatim_core::record::AttachmentHeader {
            meta: meta(format!("a-{i}"), "c"),
            attachment_id: format!("a-{i}"),
            message_id: Some("m-0".into()),
            direction: Direction::Inbound,
            sender: HOSTILE_HANDLES[i % HOSTILE_HANDLES.len()].into(),
            file_name: name.to_string(),
            mime_type: "text/plain\r\nX-Evil: 1".into(),
            size: 5,
        };
        records.extend(attachment_records(header, b"hello", 2, t));
    }
    for r in &records {
        s.push(r);
    }
    (s, records)
}

fn eml_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(eml_files(&p));
        } else if p.extension().is_some_and(|x| x == "eml") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Decodes RFC 2047 `B` words (all export writes) in a header value.
fn decode_words(value: &str) -> String {
    use base64::Engine as _;
    let mut out = String::new();
    for token in value.split([' ', '\t']) {
        match token.strip_prefix("=?UTF-8?B?").and_then(|w| w.split_once("?=")) {
            Some((b64, rest)) => {
                let bytes = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
                out.push_str(&String::from_utf8(bytes).unwrap());
                out.push_str(rest);
            }
            None => out.push_str(token),
        }
        out.push(' ');
    }
    out
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

fn export_hostile() -> (tempfile::TempDir, std::path::PathBuf, Vec<Record>, verbatim_receiver::ExportSummary) {
    let dir = tempfile::tempdir().unwrap();
    let archive = archive_keys();
    let (s, records) = hostile_stream(&archive);
    let data = dir.path().join("data");
    store(&data, &[&s]);
    let out = dir.path().join("out");
    let summary = export(&data, &archive.secret, &out).unwrap();
    assert!(summary.ok(), "{}", summary.to_text());
    (dir, out, records, summary)
}

#[test]
fn decoded_headers_of_hostile_messages_hold_no_control_character() {
    let (_dir, out, _, summary) = export_hostile();
    let files = eml_files(&out);
    assert_eq!(files.len() as u64, summary.eml_files);
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        assert!(text.is_ascii() && !text.replace("\r\n", "").contains(['\r', '\n']), "{}", f.display());
        // Every header of the message and of its parts, unfolded and decoded.
        for block in text.split("\r\n\r\n").filter(|b| b.contains(": ")) {
            for field in block.replace("\r\n ", " ").split("\r\n") {
                let Some((name, value)) = field.split_once(": ") else { continue };
                let decoded = decode_words(value);
                let decoded = match decoded.split_once("''") {
                    Some((_, enc)) if name.starts_with("Content-") => percent_decode(enc),
                    _ => decoded,
                };
                assert!(
                    !decoded.chars().any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202e}')),
                    "{}: {name}: {decoded:?}",
                    f.display()
                );
            }
        }
    }
}

#[test]
fn content_disposition_offers_a_base_name_and_the_json_lines_keep_the_original() {
    let (_dir, out, _, summary) = export_hostile();
    let st = &summary.streams[0];
    let stream_dir = out.join(st.jsonl.trim_end_matches(".jsonl"));
    let l = lines(&out, &st.jsonl);
    let mut dispositions = HashMap::new();
    for end in l.iter().filter(|l| l["type"] == "attachment_end") {
        let text = std::fs::read_to_string(stream_dir.join(end["eml"].as_str().unwrap())).unwrap();
        let cd = text.lines().find(|l| l.starts_with("Content-Disposition:")).unwrap().to_string();
        dispositions.insert(end["attachment_id"].as_str().unwrap().to_string(), cd);
    }
    assert_eq!(dispositions["a-0"], "Content-Disposition: attachment; filename=\"passwd\"");
    assert_eq!(dispositions["a-1"], "Content-Disposition: attachment; filename=\"boot.ini\"");
    assert_eq!(dispositions["a-2"], "Content-Disposition: attachment; filename=\"html.pdf\"");
    assert_eq!(dispositions["a-4"], "Content-Disposition: attachment; filename=\"attachment\"");
    assert!(dispositions.values().all(|cd| !cd.contains("..") && !cd.contains("%2F") && !cd.contains('/')), "{dispositions:?}");
    let starts: Vec<&str> =
        l.iter().filter(|l| l["type"] == "attachment_start").map(|l| l["file_name"].as_str().unwrap()).collect();
    assert_eq!(starts, HOSTILE_FILE_NAMES, "the JSON Lines keep the names as captured");
}

/// Python's own `email` package, policies `default` and `strict`, reads every message and
/// every address, subject and file name in it without an error and without a line break or
/// control character in any decoded header.
#[test]
fn python_email_parses_every_hostile_message() {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    if std::process::Command::new(&python).arg("--version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "python3 is needed in CI for this test");
        eprintln!("skipped: {python} is not available");
        return;
    }
    let (_dir, out, _, summary) = export_hostile();
    let script = r#"
import sys, email, email.policy, pathlib
bad = lambda s: any(ord(c) < 32 or 0x7f <= ord(c) < 0xa0 or c in '\u2028\u2029\u202e' for c in s)
files = sorted(pathlib.Path(sys.argv[1]).rglob('*.eml'))
for f in files:
    for name, policy in (('default', email.policy.default), ('strict', email.policy.strict)):
        msg = email.message_from_bytes(f.read_bytes(), policy=policy)
        assert not msg.defects, (str(f), name, msg.defects)
        for part in msg.walk():
            assert not part.defects, (str(f), name, part.defects)
            for key, header in part.items():
                value = str(header)
                assert not bad(value), (str(f), name, key, value)
                if key in ('From', 'To'):
                    for a in header.addresses:
                        assert not bad(a.display_name) and not bad(a.addr_spec), (str(f), key, a)
            fn = part.get_filename()
            if fn is not None:
                assert not bad(fn) and '/' not in fn and '\\' not in fn and fn not in ('.', '..'), (str(f), fn)
        body = msg.get_body(preferencelist=('plain',))
        assert body is not None and body.get_content() is not None, str(f)
print(len(files))
"#;
    let run = std::process::Command::new(&python).arg("-c").arg(script).arg(&out).output().unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "python email refused an export:\n{}{}", stdout, String::from_utf8_lossy(&run.stderr));
    assert_eq!(stdout.trim(), summary.eml_files.to_string());
}

#[test]
fn archive_key_ids_come_from_the_public_key() {
    // The id export looks for is the one keygen prints and devices name in each epoch.
    let a = archive_keys();
    assert_eq!(verbatim_receiver::keys::key_id_of(&a.secret).unwrap(), seal::key_id(&a.public));
}
