//! Damage on the device, end to end through the real uploader and receiver:
//! - a record whose content is damaged is never sent or skipped: upload stops before it, the
//!   archive holds exactly what precedes it, and a `QueueCorrupt` agent event is recorded;
//! - `verbatim recover` rebuilds the store (damaged files kept aside); the next upload
//!   completes; the archive verifies (old stream ends where its uploads ended, the new stream
//!   is complete) and its export holds every intact record exactly once — the carried ones in
//!   the salvage container, opened with the archive key — while the recovery event names the
//!   old stream and the sequence ranges lost.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use verbatim_core::archive::Opener;
use verbatim_core::model::*;
use verbatim_core::queue::DB_FILE;
use verbatim_core::queue::recover::{self, SeqRange};
use verbatim_core::record::RecordBody;
use verbatim_core::synth::{BUSINESS_LINE, sample_policy};
use verbatim_core::upload::{NetworkState, StopReason, UploadOptions};
use verbatim_core::{Agent, AgentOptions, CaptureOutcome, ErrorKind, Value};
use verbatim_receiver::{AcceptedKeys, Receiver, ReceiverConfig, RunningReceiver};

mod support;

use support::{BIN, walk};
const TENANT: &str = "acme-securities";

struct World {
    dir: tempfile::TempDir,
    receiver: RunningReceiver,
    public: [u8; 32],
    secret: verbatim_core::seal::ArchiveSecretKey,
}

impl World {
    async fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let key = verbatim_receiver::keygen(&dir.path().join("key")).unwrap();
        let secret = verbatim_receiver::load_secret(&key.private_path).unwrap();
        let public: [u8; 32] = base64::engine::general_purpose::STANDARD.decode(&key.public_b64).unwrap().try_into().unwrap();
        let receiver = Receiver::start(ReceiverConfig::local_self_signed(
            dir.path().join("data"),
            AcceptedKeys::from_public_keys([&public]),
        ))
        .await
        .unwrap();
        World { dir, receiver, public, secret }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn policy(&self, device: &str) -> Value {
        let token = verbatim_receiver::add_device(&self.data().join("tokens.jsonl"), TENANT, device).unwrap();
        let s = |v: &str| Value::String(v.to_string());
        sample_policy(
            &self.receiver.url(),
            &self.public,
            token.expose(),
            &[("tenant_id", s(TENANT)), ("device_id", s(device)), ("archive_ca_pem", s(self.receiver.ca_pem().unwrap()))],
        )
    }

    /// Exports everything; returns every JSON line by stream id, and the export directory.
    fn export(&self) -> (BTreeMap<String, Vec<serde_json::Value>>, PathBuf) {
        let out = self.dir.path().join("export");
        let summary = verbatim_receiver::export(&self.data(), &self.secret, &out).unwrap();
        assert!(summary.ok(), "{}", summary.to_text());
        let mut lines: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
        for file in walk(&out) {
            if file.extension().is_some_and(|e| e == "jsonl") {
                let stream = file.file_stem().unwrap().to_string_lossy().into_owned();
                for line in std::fs::read_to_string(&file).unwrap().lines() {
                    lines.entry(stream.clone()).or_default().push(serde_json::from_str(line).unwrap());
                }
            }
        }
        (lines, out)
    }
}

fn message(n: u32) -> Event {
    Event::Message(Message {
        meta: EventMeta {
            channel: Channel::Sms,
            line: BUSINESS_LINE.into(),
            conversation_id: format!("conv-{}", n % 4),
            source_id: format!("m-{n}"),
            source_time_ms: 1_767_225_600_000 + n as i64,
        },
        direction: Direction::Outbound,
        sender: BUSINESS_LINE.into(),
        recipients: vec!["+442079460001".into()],
        text: format!("order {n}: {}", "y".repeat(300)),
        attachment_ids: vec![],
        reply_to: None,
    })
}

async fn capture(agent: &Agent, range: std::ops::Range<u32>) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for n in range {
        match agent.capture(message(n)).await.unwrap() {
            CaptureOutcome::Captured { first_seq, .. } => out.push((format!("m-{n}"), first_seq)),
            o => panic!("{o:?}"),
        }
    }
    out
}

fn upload_options() -> UploadOptions {
    UploadOptions::new(Duration::from_secs(30), NetworkState::Unmetered)
}

fn seqs(ranges: &[SeqRange]) -> BTreeSet<u64> {
    ranges.iter().flat_map(|r| r.first..=r.last).collect()
}

fn recover_cli(state: &Path) -> recover::RecoveryReport {
    let out = Command::new(BIN).args(["recover", "--state"]).arg(state).output().unwrap();
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ranges = |k: &str| {
        serde_json::from_value::<Vec<(u64, u64)>>(serde_json::Value::Array(
            v[k].as_array().unwrap().iter().map(|r| serde_json::json!([r["first"], r["last"]])).collect(),
        ))
        .unwrap()
        .into_iter()
        .map(|(first, last)| SeqRange { first, last })
        .collect::<Vec<_>>()
    };
    recover::RecoveryReport {
        rebuilt: v["rebuilt"].as_bool().unwrap(),
        damaged_store: v["damaged_store"].as_str().map(PathBuf::from),
        damage: serde_json::from_value(v["damage"].clone()).unwrap(),
        old_stream: serde_json::from_value(v["old_stream"].clone()).unwrap(),
        new_stream: v["new_stream"].as_bool().unwrap(),
        acked_through: v["acked_through"].as_u64(),
        last_seq: v["last_seq"].as_u64(),
        recovered: ranges("recovered"),
        unopenable: ranges("unopenable"),
        lost: ranges("lost"),
        maybe_lost_after: v["maybe_lost_after"].as_u64(),
        salvage_attachment: v["salvage_attachment"].as_str().map(str::to_string),
        salvage_bytes: v["salvage_bytes"].as_u64().unwrap(),
        epochs_recovered: v["epochs_recovered"].as_u64().unwrap(),
        policy_recovered: v["policy_recovered"].as_bool().unwrap(),
        deferred_events_recovered: v["deferred_events_recovered"].as_u64().unwrap(),
    }
}

/// Opens the salvage container exported as an attachment: message ids by old sequence number.
fn salvaged_messages(w: &World, export_dir: &Path, attachment_id: &str) -> BTreeMap<u64, String> {
    let file = walk(export_dir)
        .into_iter()
        .find(|p| {
            p.parent().is_some_and(|d| d.ends_with("attachments")) && p.file_name().unwrap().to_string_lossy() == attachment_id
        })
        .expect("the salvage container is exported as an attachment");
    let bytes = std::fs::read(file).unwrap();
    let mut opener = Opener::new(verbatim_core::seal::ArchiveSecretKey::from_bytes(w.secret.as_bytes()).unwrap());
    let mut out = BTreeMap::new();
    for run in recover::read_salvage(&bytes).unwrap() {
        let (batch, prev_seq, prev_link) = match run.prev_link {
            Some(l) => (run.batch.clone(), run.prev_seq, l),
            None => {
                let first = run.batch.records[0].clone();
                (
                    verbatim_core::wire::Batch { records: run.batch.records[1..].to_vec(), ..run.batch.clone() },
                    first.seq,
                    first.link,
                )
            }
        };
        if batch.records.is_empty() {
            continue;
        }
        for (seq, rec) in opener.open_batch(&batch, prev_seq, prev_link).expect("carried records verify and open") {
            if let RecordBody::Message(m) = rec.body {
                out.insert(seq, m.meta.source_id);
            }
        }
    }
    out
}

fn message_ids(lines: &[serde_json::Value]) -> Vec<String> {
    lines.iter().filter(|l| l["type"] == "message").map(|l| l["meta"]["source_id"].as_str().unwrap().to_string()).collect()
}

fn overwrite(path: &Path, offset: u64, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_queue_with_100_pending_records_is_recovered_uploaded_and_every_intact_record_exported() {
    let w = World::new().await;
    let state = w.dir.path().join("device");
    let agent = Agent::open(&state, AgentOptions::default()).unwrap();
    agent.apply_policy(&w.policy("dev-recover")).await.unwrap();
    let uploaded = capture(&agent, 0..30).await;
    assert_eq!(agent.upload(upload_options()).await.stopped, StopReason::Done);
    let pending = capture(&agent, 100..200).await; // 100 pending records
    let old_stream = agent.stream().unwrap();
    let by_seq: BTreeMap<u64, String> = pending.iter().map(|(id, s)| (*s, id.clone())).collect();
    agent.close().await.unwrap();
    drop(agent);

    // Damage the middle of the pending records: the page holding message 150 is overwritten.
    let db = state.join(DB_FILE);
    let conn = rusqlite::Connection::open(&db).unwrap();
    let victim = pending[50].1;
    let ct: Vec<u8> = conn.query_row("SELECT ciphertext FROM records WHERE seq = ?1", [victim as i64], |r| r.get(0)).unwrap();
    drop(conn);
    let bytes = std::fs::read(&db).unwrap();
    let page = bytes.windows(64).position(|x| x == &ct[..64]).unwrap() / 4096;
    overwrite(&db, (page * 4096) as u64, &[0u8; 256]);

    // The agent refuses the damaged store with a typed error that says what to do.
    let err = Agent::open(&state, AgentOptions::default()).err().expect("refused");
    assert_eq!(err.kind, ErrorKind::Corrupt);
    assert!(err.detail.contains("verbatim recover"), "{err}");
    let check = Command::new(BIN).args(["recover", "--check", "--state"]).arg(&state).output().unwrap();
    assert_eq!(check.status.code(), Some(1), "recover --check reports the damage");

    let report = recover_cli(&state);
    assert!(report.rebuilt && report.new_stream, "{report:?}");
    assert!(report.damaged_store.as_ref().unwrap().join(DB_FILE).exists(), "the damaged store is kept");
    let lost = seqs(&report.lost);
    let unopenable = seqs(&report.unopenable);
    assert!(lost.contains(&victim) && lost.len() < 40, "{report:?}");

    // The rebuilt store uploads like any other (once the app applies its configuration).
    let agent = Agent::open(&state, AgentOptions::default()).unwrap();
    agent.apply_policy(&w.policy("dev-recover")).await.unwrap();
    let after = capture(&agent, 500..505).await;
    let r = agent.upload(upload_options()).await;
    assert_eq!(r.stopped, StopReason::Done, "{r:?}");
    let new_stream = agent.stream().unwrap();
    agent.close().await.unwrap();

    let v = verbatim_receiver::verify(&w.data()).unwrap();
    assert!(v.ok(), "{}", v.to_text());
    assert_eq!(v.streams.len(), 2, "the old stream, ended where its uploads ended, and the new one");
    let (lines, export_dir) = w.export();
    let old_lines = &lines[&old_stream.stream];
    let new_lines = &lines[&new_stream.stream];
    assert_eq!(message_ids(old_lines), uploaded.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>());
    assert_eq!(message_ids(new_lines), after.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>());
    // The loss is evidenced in the archive, in the new stream's first records.
    let event =
        new_lines.iter().find(|l| l["type"] == "agent" && l["event"] == "queue_corrupt").expect("the recovery event is archived");
    let detail: serde_json::Value = serde_json::from_str(event["detail"].as_str().unwrap()).unwrap();
    assert_eq!(detail["kind"], "queue_recovered");
    assert_eq!(detail["old_stream"]["stream"], old_stream.stream.as_str());
    assert_eq!(detail["lost"], serde_json::to_value(&report.lost).unwrap());
    assert!(event["seq"].as_u64().unwrap() <= 3, "{event}");
    // Every intact pending record is archived exactly once, inside the salvage container.
    let carried = salvaged_messages(&w, &export_dir, report.salvage_attachment.as_deref().unwrap());
    let mut archived_once = 0;
    for (seq, id) in &by_seq {
        if lost.contains(seq) || unopenable.contains(seq) {
            assert!(!carried.contains_key(seq));
        } else {
            assert_eq!(carried.get(seq), Some(id), "intact record {seq} archived");
            archived_once += 1;
        }
    }
    assert_eq!(archived_once + lost.len() + unopenable.len(), 100);
    let mut all = message_ids(old_lines);
    all.extend(message_ids(new_lines));
    all.extend(carried.values().cloned());
    assert_eq!(all.iter().collect::<BTreeSet<_>>().len(), all.len(), "nothing archived twice");
    w.receiver.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_with_damaged_content_is_never_sent_nor_skipped_and_recovery_completes_the_upload() {
    let w = World::new().await;
    let state = w.dir.path().join("device");
    let agent = Agent::open(&state, AgentOptions::default()).unwrap();
    agent.apply_policy(&w.policy("dev-rowdamage")).await.unwrap();
    let ids = capture(&agent, 0..40).await;
    agent.close().await.unwrap();
    drop(agent);
    let victim = ids[20].1;
    let conn = rusqlite::Connection::open(state.join(DB_FILE)).unwrap();
    let mut ct: Vec<u8> = conn.query_row("SELECT ciphertext FROM records WHERE seq = ?1", [victim as i64], |r| r.get(0)).unwrap();
    ct[7] ^= 0x10;
    conn.execute("UPDATE records SET ciphertext = ?1 WHERE seq = ?2", rusqlite::params![ct, victim as i64]).unwrap();
    drop(conn);

    // The store is sound as a database, so it opens; upload sends everything before the
    // damaged record, then stops with a typed error and records the corruption.
    let agent = Agent::open(&state, AgentOptions::default()).unwrap();
    agent.apply_policy(&w.policy("dev-rowdamage")).await.unwrap();
    let r = agent.upload(upload_options()).await;
    assert_eq!(r.stopped, StopReason::Error, "{r:?}");
    assert_eq!(r.error_kind.map(|k| k.as_str()), Some("corrupt"), "{r:?}");
    assert_eq!(agent.status().acked_through, victim - 1);
    let v = verbatim_receiver::verify(&w.data()).unwrap();
    assert!(v.ok());
    assert_eq!(v.streams[0].last_seq, Some(victim - 1), "the damaged record and what follows were not sent");
    let again = agent.upload(upload_options()).await;
    assert_eq!(again.stopped, StopReason::Error, "never skipped: {again:?}");
    assert_eq!(verbatim_receiver::verify(&w.data()).unwrap().streams[0].last_seq, Some(victim - 1));
    assert!(r.detail.as_deref().unwrap_or("").contains("will not be sent"), "{r:?}");
    agent.close().await.unwrap();
    drop(agent);

    let report = recover_cli(&state);
    assert_eq!(report.lost, [SeqRange { first: victim, last: victim }], "{report:?}");
    let agent = Agent::open(&state, AgentOptions::default()).unwrap();
    agent.apply_policy(&w.policy("dev-rowdamage")).await.unwrap();
    let r = agent.upload(upload_options()).await;
    assert_eq!(r.stopped, StopReason::Done, "{r:?}");
    agent.close().await.unwrap();
    let v = verbatim_receiver::verify(&w.data()).unwrap();
    assert!(v.ok(), "{}", v.to_text());
    let (lines, export_dir) = w.export();
    let carried = salvaged_messages(&w, &export_dir, report.salvage_attachment.as_deref().unwrap());
    let mut archived: Vec<String> = lines.values().flat_map(|l| message_ids(l)).collect();
    archived.extend(carried.values().cloned());
    archived.sort();
    let mut expected: Vec<String> = ids.iter().filter(|(_, s)| *s != victim).map(|(id, _)| id.clone()).collect();
    expected.sort();
    assert_eq!(archived, expected, "everything but the damaged record, exactly once");
    w.receiver.shutdown().await;
}
