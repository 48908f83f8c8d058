//! A damaged store: refused at open with a typed error naming the file and the remedy (a torn
//! log tail, which a crash leaves, is not damage); and recovered without losing any intact
//! record or hiding any loss (`queue::recover`).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use support::*;
use verbatim_core::archive::Opener;
use verbatim_core::chain::{self, StreamId};
use verbatim_core::model::*;
use verbatim_core::queue::recover::{self, RecoverOptions, SeqRange};
use verbatim_core::queue::{DB_FILE, SCHEMA_VERSION};
use verbatim_core::record::{AgentEvent, Record, RecordBody};
use verbatim_core::synth::BUSINESS_LINE;
use verbatim_core::{Agent, AgentOptions, CaptureOutcome, ErrorKind};

const PAGE: usize = 4096;

fn message(n: u32) -> Event {
    Event::Message(Message {
        meta: EventMeta {
            channel: Channel::Sms,
            line: BUSINESS_LINE.into(),
            conversation_id: format!("conv-{}", n % 3),
            source_id: format!("m-{n}"),
            source_time_ms: 1_767_225_600_000 + n as i64,
        },
        direction: Direction::Outbound,
        sender: BUSINESS_LINE.into(),
        recipients: vec!["+442079460001".into()],
        text: format!("order {n}: {}", "x".repeat(200)),
        attachment_ids: vec![],
        reply_to: None,
    })
}

/// Captures messages `from..to`; returns (source id, sequence number) of each.
fn capture(agent: &Agent, from: u32, to: u32) -> Vec<(String, u64)> {
    (from..to)
        .map(|n| match verbatim_core::testing::block_on(agent.capture(message(n))).unwrap() {
            CaptureOutcome::Captured { first_seq, .. } => (format!("m-{n}"), first_seq),
            other => panic!("{other:?}"),
        })
        .collect()
}

/// A store holding `n` pending messages, closed cleanly (its log checkpointed into the file).
fn store_with(s: &Setup, n: u32) -> Vec<(String, u64)> {
    let agent = s.open();
    verbatim_core::testing::block_on(agent.apply_policy(&s.policy(&[]))).unwrap();
    let ids = capture(&agent, 0, n);
    verbatim_core::testing::block_on(agent.close()).unwrap();
    ids
}

fn db_path(s: &Setup) -> std::path::PathBuf {
    s.dir.path().join(DB_FILE)
}

fn wal_path(dir: &Path) -> std::path::PathBuf {
    dir.join(format!("{DB_FILE}-wal"))
}

fn open_err(dir: &Path) -> verbatim_core::Error {
    match Agent::open(dir, AgentOptions::default()) {
        Ok(_) => panic!("a damaged store opened"),
        Err(e) => e,
    }
}

fn assert_explains(e: &verbatim_core::Error, file: &str, what: &str) {
    assert_eq!(e.kind, ErrorKind::Corrupt, "{e}");
    assert!(e.detail.contains(file), "names the file {file}: {e}");
    assert!(e.detail.contains(what), "says {what:?}: {e}");
    assert!(e.detail.contains("verbatim recover --state"), "says what to do: {e}");
}

/// Finds the page holding `needle` in the database file.
fn page_holding(db: &Path, needle: &[u8]) -> usize {
    let bytes = std::fs::read(db).unwrap();
    let at = bytes.windows(needle.len()).position(|w| w == needle).expect("bytes present in the file");
    at / PAGE
}

fn overwrite(path: &Path, offset: u64, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(bytes).unwrap();
    f.sync_all().unwrap();
}

fn ciphertext_of(s: &Setup, seq: u64) -> Vec<u8> {
    s.db().query_row("SELECT ciphertext FROM records WHERE seq = ?1", [seq as i64], |r| r.get(0)).unwrap()
}

/// Reads a store's whole pending chain (after `acked`), verified and opened with the archive
/// key: (stream, records in order).
fn read_all(s: &Setup, agent: &Agent) -> (StreamId, Vec<(u64, Record)>) {
    let stream = agent.stream().unwrap();
    let snap = agent.snapshot();
    let (mut seq, mut link) = (snap.acked_through, snap.acked_link);
    let mut opener = Opener::new(s.secret_key());
    let mut out = Vec::new();
    while let Some(batch) = agent.queue().read_batch_after(seq, link, 1 << 20).unwrap() {
        out.extend(opener.open_batch(&batch, seq, link).expect("the chain verifies and every record opens"));
        seq = batch.records.last().unwrap().seq;
        link = batch.records.last().unwrap().link;
    }
    (stream, out)
}

fn message_ids<'a>(records: impl IntoIterator<Item = &'a Record>) -> Vec<String> {
    records
        .into_iter()
        .filter_map(|r| match &r.body {
            RecordBody::Message(m) => Some(m.meta.source_id.clone()),
            _ => None,
        })
        .collect()
}

/// Reassembles the salvage container carried as an attachment in `records`, opens every
/// carried record it can with the archive key, and returns (opened records by old sequence,
/// sequences carried but unopenable).
/// The records a salvage attachment carried: opened (by sequence), unopenable, and how many
/// key records (opened, no content) were among them.
fn open_salvage(s: &Setup, records: &[(u64, Record)], id: &str) -> (BTreeMap<u64, Record>, BTreeSet<u64>, u64) {
    let mut bytes = Vec::new();
    let mut ended = false;
    for (_, r) in records {
        match &r.body {
            RecordBody::AttachmentChunk { attachment_id, .. } if attachment_id == id => bytes.extend_from_slice(&r.payload),
            RecordBody::AttachmentEnd { attachment_id, size, .. } if attachment_id == id => {
                assert_eq!(*size, bytes.len() as u64);
                ended = true;
            }
            _ => {}
        }
    }
    assert!(ended, "the salvage attachment {id} is complete");
    let mut opener = Opener::new(s.secret_key());
    let (mut opened, mut unopenable) = (BTreeMap::new(), BTreeSet::new());
    // Verifies a run from (prev_seq, prev) and opens each record; key records (which carry no
    // content) count as opened, under their sequence number, with no record.
    let mut open_run = |records: &[verbatim_core::wire::WireRecord], prev_seq: u64, prev: [u8; 32]| {
        verbatim_core::chain::verify_run(prev_seq, prev, records).expect("a carried run verifies");
        let mut prev = prev;
        for r in records {
            let batch_epochs = &recover::read_salvage(&bytes).unwrap();
            let epoch = batch_epochs.iter().flat_map(|b| b.batch.epochs.iter()).find(|e| e.epoch == r.epoch).unwrap().clone();
            let stream = batch_epochs[0].batch.stream.clone();
            match opener.open_any(&stream, &epoch, r, &prev).expect("a carried record opens") {
                verbatim_core::archive::OpenedRecord::Record { record, .. } => opened.insert(r.seq, Some(*record)),
                verbatim_core::archive::OpenedRecord::KeyRecord { .. } => opened.insert(r.seq, None),
            };
            prev = r.link;
        }
    };
    for run in recover::read_salvage(&bytes).unwrap() {
        let recs = &run.batch.records;
        match run.prev_link {
            Some(prev) => open_run(recs, run.prev_seq, prev),
            None => {
                // The first record's predecessor is lost: it anchors the rest, which verify.
                unopenable.insert(recs[0].seq);
                if recs.len() > 1 {
                    open_run(&recs[1..], recs[0].seq, recs[0].link);
                }
            }
        }
    }
    let key_records = opened.values().filter(|r| r.is_none()).count() as u64;
    let opened = opened.into_iter().filter_map(|(seq, r)| r.map(|r| (seq, r))).collect::<BTreeMap<_, _>>();
    (opened, unopenable, key_records)
}

fn count(ranges: &[SeqRange]) -> u64 {
    ranges.iter().map(|r| r.last - r.first + 1).sum()
}

fn seqs(ranges: &[SeqRange]) -> BTreeSet<u64> {
    ranges.iter().flat_map(|r| r.first..=r.last).collect()
}

#[test]
fn a_truncated_database_is_refused_with_a_typed_error_naming_the_file_and_the_remedy() {
    let s = Setup::new();
    store_with(&s, 100);
    let db = db_path(&s);
    let len = std::fs::metadata(&db).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&db).unwrap().set_len(len / 2).unwrap();
    let before = std::fs::read(&db).unwrap();
    let e = open_err(s.dir.path());
    assert_explains(&e, "queue.sqlite3", "truncated");
    assert_eq!(std::fs::read(&db).unwrap(), before, "a refused open changes nothing");
    assert!(!wal_path(s.dir.path()).exists());
}

#[test]
fn bytes_overwritten_in_the_middle_of_the_database_are_refused_at_open() {
    let s = Setup::new();
    store_with(&s, 100);
    let db = db_path(&s);
    let pages = std::fs::metadata(&db).unwrap().len() as usize / PAGE;
    overwrite(&db, (pages / 2 * PAGE) as u64, &[0xA5; 512]);
    let e = open_err(s.dir.path());
    assert_explains(&e, "queue.sqlite3", "integrity check failed");
}

/// The files of a running agent's store, copied as they are on disk: what a kill -9 at this
/// instant leaves (every write has reached the OS; nothing was checkpointed or closed).
fn crash_image(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for name in [DB_FILE.to_string(), format!("{DB_FILE}-wal")] {
        std::fs::copy(from.join(&name), to.join(&name)).unwrap();
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().unwrap())
}

#[test]
fn a_torn_log_tail_after_a_kill_opens_and_loses_nothing_acknowledged() {
    let s = Setup::new();
    let agent = s.open();
    verbatim_core::testing::block_on(agent.apply_policy(&s.policy(&[]))).unwrap();
    let ids = capture(&agent, 0, 60);
    let image = tempfile::tempdir().unwrap();
    crash_image(s.dir.path(), image.path());
    drop(agent);
    // The tail a crash mid-transaction leaves: a whole frame of an uncommitted transaction
    // (current salts, no commit mark), then half of another.
    let wal = wal_path(image.path());
    let bytes = std::fs::read(&wal).unwrap();
    let frame = 24 + be32(&bytes[8..12]) as usize;
    assert!(bytes.len() > 32 + 3 * frame, "the captures are in the log");
    let mut torn = bytes[32..32 + frame].to_vec(); // salts of the current log
    torn[4..8].copy_from_slice(&[0; 4]); // not a commit
    for b in &mut torn[24..] {
        *b ^= 0x5A;
    }
    let mut f = std::fs::OpenOptions::new().append(true).open(&wal).unwrap();
    f.write_all(&torn).unwrap();
    f.write_all(&torn[..frame / 2]).unwrap();
    drop(f);

    let agent = Agent::open(image.path(), AgentOptions::default()).expect("a torn tail is normal after a crash");
    let image_setup = Setup { dir: image, files: tempfile::tempdir().unwrap(), secret: s.secret, public: s.public };
    let (_, records) = read_all(&image_setup, &agent);
    let held: BTreeSet<String> = message_ids(records.iter().map(|(_, r)| r)).into_iter().collect();
    for (id, _) in &ids {
        assert!(held.contains(id), "acknowledged {id} lost with the torn tail");
    }
    assert!(records.iter().any(|(_, r)| matches!(r.body, RecordBody::Agent(AgentEvent::Started { after_crash: true, .. }))));
}

#[test]
fn a_log_damaged_in_the_middle_is_refused_instead_of_silently_dropping_commits_then_recovered() {
    let s = Setup::new();
    let agent = s.open();
    verbatim_core::testing::block_on(agent.apply_policy(&s.policy(&[]))).unwrap();
    let ids = capture(&agent, 0, 80); // one commit each: 80 transactions in the log
    let image = tempfile::tempdir().unwrap();
    crash_image(s.dir.path(), image.path());
    drop(agent);
    let wal = wal_path(image.path());
    let bytes = std::fs::read(&wal).unwrap();
    let frame = 24 + be32(&bytes[8..12]) as usize;
    let frames = (bytes.len() - 32) / frame;
    let middle = frames / 2;
    overwrite(&wal, (32 + middle * frame + 24 + 100) as u64, &[0xFF; 64]);

    // What SQLite alone would do: open without a word and lose every later commit.
    let plain = tempfile::tempdir().unwrap();
    crash_image(image.path(), plain.path());
    let raw = rusqlite::Connection::open(plain.path().join(DB_FILE)).unwrap();
    let silently_held: i64 = raw.query_row("SELECT count(*) FROM records", [], |r| r.get(0)).unwrap();
    assert!((silently_held as usize) < ids.len(), "SQLite drops what follows the damaged frame");
    drop(raw);

    let e = open_err(image.path());
    assert_explains(&e, "queue.sqlite3-wal", "silently drop");

    // Recovery keeps what the log still holds before the damage and says that more may be lost.
    let report = recover::recover(image.path()).unwrap();
    assert!(report.rebuilt && report.new_stream, "{report:?}");
    assert!(report.damage[0].contains("write-ahead log"), "{report:?}");
    assert!(report.maybe_lost_after.is_some(), "{report:?}");
    let kept = report.damaged_store.as_ref().unwrap();
    assert_eq!(
        std::fs::read(kept.join(format!("{DB_FILE}-wal"))).unwrap().len(),
        bytes.len(),
        "the damaged log is kept as it was"
    );
    let agent = Agent::open(image.path(), AgentOptions::default()).unwrap();
    let image_setup = Setup { dir: image, files: tempfile::tempdir().unwrap(), secret: s.secret, public: s.public };
    let (_, records) = read_all(&image_setup, &agent);
    let events = recover::recovery_events(records.iter().map(|(_, r)| r));
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["maybe_lost_after"], serde_json::json!(report.maybe_lost_after));
    let id = report.salvage_attachment.clone().unwrap();
    let (opened, _, _) = open_salvage(&image_setup, &records, &id);
    // Rows SQLite kept include agent events and key records (one per conversation and epoch).
    assert!(message_ids(opened.values()).len() as i64 >= silently_held.min(ids.len() as i64) - 10);
}

#[test]
fn recovery_keeps_every_intact_record_in_a_new_stream_and_evidences_the_loss() {
    let s = Setup::new();
    let ids = store_with(&s, 100);
    let by_seq: BTreeMap<u64, String> = ids.iter().map(|(id, seq)| (*seq, id.clone())).collect();
    let (old_stream, old_last) = {
        let db = s.db();
        (stream_of(&db), db.query_row("SELECT last_seq FROM chain_state", [], |r| r.get::<_, i64>(0)).unwrap() as u64)
    };
    // Destroy the page holding message 50 (its b-tree header and cells): the rows on it go.
    let victim = ids[50].1;
    let ct = ciphertext_of(&s, victim);
    let db = db_path(&s);
    let page = page_holding(&db, &ct[..64]);
    overwrite(&db, (page * PAGE) as u64, &[0x00; 200]);
    assert_eq!(open_err(s.dir.path()).kind, ErrorKind::Corrupt);

    let report = recover::recover(s.dir.path()).unwrap();
    assert!(report.rebuilt && report.new_stream, "{report:?}");
    assert_eq!(report.old_stream.as_ref(), Some(&old_stream));
    assert_eq!(report.last_seq, Some(old_last));
    assert!(seqs(&report.lost).contains(&victim), "{report:?}");
    assert!(count(&report.lost) < 40, "only the damaged page's rows are lost: {report:?}");
    let all: BTreeSet<u64> = (1..=old_last).collect();
    let accounted: BTreeSet<u64> = seqs(&report.recovered).union(&seqs(&report.lost)).copied().collect();
    assert_eq!(accounted, all, "every pending record is either kept or reported lost");
    assert_eq!(count(&report.unopenable), report.lost.len() as u64, "the record after each lost range cannot be opened");
    // The damaged files are kept, untouched by the rebuild.
    let aside = report.damaged_store.clone().unwrap();
    assert!(aside.join(DB_FILE).exists());

    // The rebuilt store: a new stream whose first records say what happened, then the carried
    // records; capture goes on after them.
    let agent = s.open();
    let later = capture(&agent, 1000, 1005);
    let (stream, records) = read_all(&s, &agent);
    assert_ne!(stream.stream, old_stream.stream, "a new stream");
    assert_eq!((stream.tenant.as_str(), stream.device.as_str()), (old_stream.tenant.as_str(), old_stream.device.as_str()));
    let events = recover::recovery_events(records.iter().map(|(_, r)| r));
    assert_eq!(events.len(), 1);
    let ev = &events[0];
    assert_eq!(ev["old_stream"]["stream"], old_stream.stream.as_str());
    assert_eq!(ev["lost"], serde_json::to_value(&report.lost).unwrap());
    assert_eq!(ev["recovered"], serde_json::to_value(&report.recovered).unwrap());
    assert_eq!(ev["new_stream"], true);
    let first_event_seq =
        records.iter().find(|(_, r)| matches!(&r.body, RecordBody::Agent(AgentEvent::QueueCorrupt { .. }))).unwrap().0;
    assert!(first_event_seq <= 3, "the recovery event opens the new stream (after its epoch)");

    let (opened, unopenable, key_records) = open_salvage(&s, &records, report.salvage_attachment.as_deref().unwrap());
    assert_eq!(unopenable, seqs(&report.unopenable));
    let lost = seqs(&report.lost);
    for (seq, id) in &by_seq {
        if lost.contains(seq) {
            assert!(!opened.contains_key(seq), "a lost record is not invented");
        } else if !unopenable.contains(seq) {
            let got = message_ids([&opened[seq]]);
            assert_eq!(got, std::slice::from_ref(id), "intact record {seq} is carried byte for byte and opens");
        }
    }
    // Agent events of the old stream (started, policy, epoch) are carried too.
    assert_eq!(opened.len() as u64 + key_records + count(&report.unopenable), count(&report.recovered));
    let new_ids = message_ids(records.iter().map(|(_, r)| r));
    assert_eq!(new_ids, later.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>());
}

#[test]
fn a_record_with_damaged_content_is_lost_alone_and_its_successor_still_opens() {
    let s = Setup::new();
    let ids = store_with(&s, 30);
    let victim = ids[10].1;
    let mut ct = ciphertext_of(&s, victim);
    ct[5] ^= 1;
    s.db().execute("UPDATE records SET ciphertext = ?1 WHERE seq = ?2", rusqlite::params![ct, victim as i64]).unwrap();
    // The store is sound as a database: it opens, and upload stops before the damaged record.
    let agent = s.open();
    let err = {
        let mut after = (0, chain::genesis(&agent.stream().unwrap()));
        loop {
            match agent.queue().read_batch_after(after.0, after.1, 1 << 20) {
                Ok(Some(b)) => after = (b.records.last().unwrap().seq, b.records.last().unwrap().link),
                Ok(None) => panic!("the damaged record was read past"),
                Err(e) => break (after.0, e),
            }
        }
    };
    assert_eq!(err.0, victim - 1, "everything before the damaged record is readable");
    assert_eq!(err.1.kind, ErrorKind::Corrupt);
    drop(agent);

    let report = recover::recover(s.dir.path()).unwrap();
    assert_eq!(report.lost, [SeqRange { first: victim, last: victim }], "{report:?}");
    assert!(report.unopenable.is_empty(), "the damaged record's stored link is genuine: its successor opens: {report:?}");
    let agent = s.open();
    let (_, records) = read_all(&s, &agent);
    let (opened, _, _) = open_salvage(&s, &records, report.salvage_attachment.as_deref().unwrap());
    let carried: BTreeSet<String> = message_ids(opened.values()).into_iter().collect();
    for (id, seq) in &ids {
        assert_eq!(carried.contains(id), *seq != victim, "{id} at {seq}");
    }
}

#[test]
fn recovery_of_a_sound_store_changes_nothing_and_a_forced_rebuild_keeps_the_same_stream() {
    let s = Setup::new();
    let ids = store_with(&s, 20);
    let before = std::fs::read(db_path(&s)).unwrap();
    let report = recover::recover(s.dir.path()).unwrap();
    assert!(!report.rebuilt && report.damage.is_empty(), "{report:?}");
    assert_eq!(std::fs::read(db_path(&s)).unwrap(), before);

    let old = stream_of(&s.db());
    let report = recover::recover_with(s.dir.path(), RecoverOptions { force: true, ..Default::default() }).unwrap();
    assert!(report.rebuilt && !report.new_stream && report.lost.is_empty(), "{report:?}");
    // The new epoch's key record for the agent's events, its rotation and the recovery event.
    assert_eq!(verify_stored_chain(&s.db()).unwrap(), report.last_seq.unwrap() + 3, "the rebuild appended its epoch and event");
    let agent = s.open();
    assert_eq!(agent.stream().unwrap(), old, "the same stream continues");
    let (_, records) = read_all(&s, &agent);
    assert_eq!(message_ids(records.iter().map(|(_, r)| r)), ids.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>());
    let events = recover::recovery_events(records.iter().map(|(_, r)| r));
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["new_stream"], false);
    assert_eq!(events[0]["lost"], serde_json::json!([]));
    let v: u32 = s.db().query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(v, SCHEMA_VERSION);
}

#[test]
fn recovery_refuses_while_an_agent_runs_and_needs_a_store() {
    let s = Setup::new();
    let agent = s.open();
    assert_eq!(recover::recover(s.dir.path()).unwrap_err().kind, ErrorKind::Storage);
    drop(agent);
    let empty = tempfile::tempdir().unwrap();
    assert_eq!(recover::recover(empty.path()).unwrap_err().kind, ErrorKind::Storage);
}
