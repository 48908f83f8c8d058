//! An AES-GCM key never seals two different plaintexts under one nonce (the record's sequence
//! number), on any path: a failure after sealing (disk full, an attachment file that fails to
//! read, an SQLite error, a panic inside a job), a rollback of a whole group, `recover`, a
//! restart, an archive key change.
//!
//! Two views of the same property:
//! - the seal log of the `testing` feature records every use of every epoch key: no (epoch,
//!   sequence) pair and no (key, sequence) pair may appear twice;
//! - the disk, read the way an attacker would: for every committed record, the bytes of any
//!   other ciphertext under the same key and nonce anywhere in the database or its write-ahead
//!   log would XOR with it into plaintext. Every ciphertext found on disk for one (epoch,
//!   sequence) must be the committed one.

mod support;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use support::*;
use verbatim_core::model::*;
use verbatim_core::queue::recover::{RecoverOptions, recover_with};
use verbatim_core::record::{AgentEvent, RecordBody};
use verbatim_core::seal::conversation::{EPOCH_KEY_REF, EpochSecrets, REF_LEN, content_key, key_ref_of};
use verbatim_core::seal::{Sealing, derive_epoch_key, generate_archive_keypair};
use verbatim_core::synth::BUSINESS_LINE;
use verbatim_core::testing::{faults, seal_log};
use verbatim_core::{Agent, AgentOptions, ErrorKind, Value};

const T0: i64 = 1_767_225_600_000;
const ROLLED_BACK: &str = "sealed records were rolled back";

fn meta(n: u32) -> EventMeta {
    EventMeta {
        channel: Channel::Sms,
        line: BUSINESS_LINE.into(),
        conversation_id: "conv-nonce".into(),
        source_id: format!("m-{n}"),
        source_time_ms: T0 + n as i64,
    }
}

fn message(n: u32) -> Event {
    Event::Message(Message {
        meta: meta(n),
        direction: Direction::Outbound,
        sender: BUSINESS_LINE.into(),
        recipients: vec!["+442079460001".into()],
        text: format!("confidential message number {n}"),
        attachment_ids: vec![],
        reply_to: None,
    })
}

fn attachment(n: u32, path: &Path) -> Event {
    Event::Attachment(Attachment {
        meta: meta(n),
        message_id: None,
        direction: Direction::Outbound,
        sender: BUSINESS_LINE.into(),
        file_name: "statement.pdf".into(),
        mime_type: "application/pdf".into(),
        path: path.to_path_buf(),
    })
}

/// A call with its recording: the call record is sealed before the recording is read.
fn call_with_recording(n: u32, recording: &Path) -> Event {
    Event::Call(Call {
        meta: meta(n),
        direction: Direction::Inbound,
        participants: vec!["+442079460001".into(), BUSINESS_LINE.into()],
        started_ms: T0,
        ended_ms: Some(T0 + 60_000),
        outcome: CallOutcome::Answered,
        recording_path: Some(recording.to_path_buf()),
        recording_mime_type: Some("audio/mp4".into()),
    })
}

struct Device {
    setup: Setup,
    policy: Value,
    id: String,
    next: u32,
}

impl Device {
    fn new(id: &str) -> Device {
        let setup = Setup::new();
        let policy = setup.policy(&[("device_id", Value::String(id.into()))]);
        Device { setup, policy, id: id.into(), next: 0 }
    }

    async fn open(&self, storage_limit_bytes: Option<u64>) -> Agent {
        let agent = self.setup.open_with(AgentOptions { storage_limit_bytes, ..Default::default() });
        agent.apply_policy(&self.policy).await.unwrap();
        agent
    }

    async fn capture_messages(&mut self, agent: &Agent, count: u32) {
        for _ in 0..count {
            self.next += 1;
            agent.capture(message(self.next)).await.unwrap();
        }
    }

    /// The reason of the last epoch rotation among the records still queued.
    fn last_rotation_reason(&self) -> Option<String> {
        open_all(&self.setup).into_iter().rev().find_map(|(_, r)| match r.body {
            RecordBody::Agent(AgentEvent::EpochRotated { reason, .. }) => Some(reason),
            _ => None,
        })
    }
}

fn assert_no_nonce_sealed_twice(device: &str) -> usize {
    let seals = seal_log::seals_of_device(device);
    let mut by_epoch = HashSet::new();
    let mut by_key = HashSet::new();
    for s in &seals {
        assert!(by_epoch.insert((s.stream.stream.clone(), s.epoch, s.seq)), "epoch {} sealed sequence {} twice", s.epoch, s.seq);
        assert!(by_key.insert((s.key_instance, s.seq)), "one key sealed sequence {} twice (epoch {})", s.seq, s.epoch);
    }
    seals.len()
}

#[tokio::test]
async fn no_epoch_key_seals_one_sequence_number_twice_on_any_failure_path() {
    seal_log::start();
    let mut d = Device::new("dev-nonce-every-path");
    let agent = d.open(Some(4 * 1024 * 1024)).await;
    d.capture_messages(&agent, 5).await;

    // 1. An attachment whose file fails to read after it was opened: the call record and the
    //    attachment's start record were sealed, then everything is rolled back. (/proc/self/mem
    //    is a regular file whose first page is unmapped: reading it fails with EIO.)
    if cfg!(target_os = "linux") {
        d.next += 1;
        let err = agent.capture(call_with_recording(d.next, Path::new("/proc/self/mem"))).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::File, "{err}");
        d.capture_messages(&agent, 3).await;
        assert_eq!(d.last_rotation_reason().as_deref(), Some(ROLLED_BACK));
    }

    // 2. An SQLite error inside a job, after the record was sealed: a trigger refuses the insert.
    let next_seq = agent.status().last_seq + 1;
    let db = d.setup.db();
    db.execute_batch(&format!(
        "CREATE TRIGGER injected BEFORE INSERT ON records WHEN NEW.seq = {next_seq} BEGIN SELECT RAISE(ABORT, 'injected'); END;"
    ))
    .unwrap();
    d.next += 1;
    let err = agent.capture(message(d.next)).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Storage, "{err}");
    db.execute_batch("DROP TRIGGER injected;").unwrap();
    d.capture_messages(&agent, 3).await;
    assert_eq!(d.last_rotation_reason().as_deref(), Some(ROLLED_BACK));

    // 3. A panic inside a job, right after sealing: the job fails, the writer goes on.
    faults::panic_after_sealing(&d.id, agent.status().last_seq + 1);
    d.next += 1;
    let err = agent.capture(message(d.next)).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Internal, "{err}");
    d.capture_messages(&agent, 3).await;
    assert_eq!(d.last_rotation_reason().as_deref(), Some(ROLLED_BACK));

    // 4. Captures arriving together while one of them fails: the others commit, and the
    //    failed one's sealed record retires its epoch.
    let next_seq = agent.status().last_seq + 2;
    db.execute_batch(&format!(
        "CREATE TRIGGER injected BEFORE INSERT ON records WHEN NEW.seq = {next_seq} BEGIN SELECT RAISE(ABORT, 'injected'); END;"
    ))
    .unwrap();
    let captures: Vec<_> = (1..=8).map(|i| agent.capture(message(d.next + i))).collect();
    let results = futures_join(captures).await;
    d.next += 8;
    assert!(results.iter().any(|r| r.is_err()), "the trigger failed one capture");
    assert!(results.iter().any(|r| r.is_ok()), "the others were kept");
    db.execute_batch("DROP TRIGGER injected;").unwrap();
    d.capture_messages(&agent, 3).await;

    // 5. The disk fills in the middle of an attachment.
    let big = d.setup.files.path().join("big.bin");
    std::fs::write(&big, vec![7u8; 6 * 1024 * 1024]).unwrap();
    d.next += 1;
    let err = agent.capture(attachment(d.next, &big)).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::DiskFull, "{err}");
    agent.acknowledge(agent.status().last_seq).await.unwrap();
    d.capture_messages(&agent, 3).await;
    assert_eq!(d.last_rotation_reason().as_deref(), Some(ROLLED_BACK));

    // 6. A restart, then `recover`, then an archive key change: each starts a fresh epoch.
    agent.close().await.unwrap();
    drop(agent);
    let agent = d.open(None).await;
    d.capture_messages(&agent, 3).await;
    agent.close().await.unwrap();
    drop(agent);
    recover_with(d.setup.dir.path(), RecoverOptions { policy: Some(d.policy.clone()), force: true }).unwrap();
    let agent = d.open(None).await;
    d.capture_messages(&agent, 3).await;
    open_all(&d.setup); // everything queued still verifies and opens
    let (_, new_public) = generate_archive_keypair();
    let rotated = d.setup.policy(&[
        ("device_id", Value::String(d.id.clone())),
        ("archive_public_key", Value::String(b64(&new_public))),
        ("archive_key_id", Value::String(verbatim_core::seal::key_id(&new_public))),
    ]);
    agent.apply_policy(&rotated).await.unwrap();
    d.capture_messages(&agent, 3).await;
    agent.close().await.unwrap();

    let seals = assert_no_nonce_sealed_twice(&d.id);
    assert!(seals > 40, "the log saw the seals ({seals})");
}

#[tokio::test]
async fn a_panic_in_the_queue_writer_fails_one_capture_and_capture_goes_on() {
    seal_log::start();
    let mut d = Device::new("dev-nonce-panic");
    let agent = d.open(None).await;
    d.capture_messages(&agent, 2).await;
    let at = agent.status().last_seq + 1;
    faults::panic_after_sealing(&d.id, at);
    let err = agent.capture(message(100)).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Internal);
    assert!(!err.detail.contains("message number"), "no content in the error: {err}");
    assert_eq!(agent.status().last_seq, at - 1, "nothing of the failed capture was kept");
    d.capture_messages(&agent, 2).await;
    let records = open_all(&d.setup);
    let texts: Vec<String> = records
        .iter()
        .filter_map(|(_, r)| match &r.body {
            RecordBody::Message(m) => Some(m.text.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(texts.len(), 4);
    assert!(!texts.iter().any(|t| t.ends_with(" 100")));
    assert_no_nonce_sealed_twice(&d.id);
}

/// The review's reproduction: with the store capped at 8 MiB, a 12 MiB attachment fails with
/// `DiskFull` after its first chunks were sealed and spilled into the write-ahead log; after an
/// acknowledgement frees space, new records are committed at the same sequence numbers. On
/// disk, each (epoch, sequence) must have one ciphertext only.
#[tokio::test]
async fn on_disk_every_ciphertext_for_one_epoch_and_sequence_is_the_same_after_a_rollback() {
    let mut d = Device::new("dev-nonce-disk");
    let agent = d.open(Some(8 * 1024 * 1024)).await;
    d.capture_messages(&agent, 100).await;
    let big = d.setup.files.path().join("big.bin");
    std::fs::write(&big, vec![0x5au8; 12 * 1024 * 1024]).unwrap();
    d.next += 1;
    let err = agent.capture(attachment(d.next, &big)).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::DiskFull, "{err}");
    agent.acknowledge(agent.status().last_seq).await.unwrap();
    d.capture_messages(&agent, 41).await;

    // Read the files while the agent runs, as an attacker with the phone's disk would.
    let dir = d.setup.dir.path();
    let files: Vec<PathBuf> = ["queue.sqlite3", "queue.sqlite3-wal"].iter().map(|f| dir.join(f)).filter(|p| p.exists()).collect();
    let raw: Vec<Vec<u8>> = files.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let db = d.setup.db();
    let stream = stream_of(&db);
    let epochs = epochs(&db);
    let rows = stored_rows(&db);
    assert!(rows.len() >= 41);

    // Each committed record's plaintext starts with the version byte, a 4-byte header length
    // and `{"captured_ms":1`: any ciphertext under the same key and nonce whose plaintext
    // starts the same way begins, at offset 5, with the keystream XOR that known text.
    const KNOWN: &[u8; 16] = b"{\"captured_ms\":1";
    let secret = d.setup.secret_key();
    let mut patterns: HashMap<[u8; 16], (usize, usize)> = HashMap::new();
    for (i, row) in rows.iter().enumerate() {
        let epoch = epochs.iter().find(|e| e.epoch == row.epoch).unwrap();
        // The key that sealed the record, and where its AES-GCM output starts (after the
        // masked key reference in a conversation-key epoch).
        let (key, at) = match Sealing::of(&epoch.encapsulation).unwrap().0 {
            Sealing::EpochKey => (derive_epoch_key(&secret, &epoch.encapsulation, &stream, row.epoch).unwrap(), 0),
            Sealing::ConversationKeys => {
                let s = EpochSecrets::open(&secret, &epoch.encapsulation, &stream, row.epoch).unwrap();
                let key_ref = key_ref_of(&s.ref_key, row.seq, &row.ciphertext).unwrap();
                let key = if key_ref == EPOCH_KEY_REF { s.epoch_key.clone() } else { content_key(&s.epoch_key, &key_ref) };
                (key, REF_LEN)
            }
        };
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&row.seq.to_be_bytes());
        let cipher = Aes256Gcm::new_from_slice(key.as_slice()).unwrap();
        let keystream = cipher.encrypt(&Nonce::from(nonce), Payload { msg: &[0u8; 21], aad: b"" }).unwrap();
        let mut pattern = [0u8; 16];
        for j in 0..16 {
            pattern[j] = keystream[5 + j] ^ KNOWN[j];
        }
        assert_eq!(&row.ciphertext[at + 5..at + 21], &pattern, "the keystream model matches the committed record {}", row.seq);
        patterns.insert(pattern, (i, at));
    }
    let mut found = vec![0usize; rows.len()];
    let mut other_ciphertexts = Vec::new();
    for (file, bytes) in files.iter().zip(&raw) {
        for at in 5..bytes.len().saturating_sub(16) {
            let window: [u8; 16] = bytes[at..at + 16].try_into().unwrap();
            let Some(&(i, offset)) = patterns.get(&window) else { continue };
            let row = &rows[i];
            let Some(start) = at.checked_sub(5 + offset) else { continue };
            // Compare what is surely contiguous in a page (the start of a cell's payload).
            let n = row.ciphertext.len().min(64).min(bytes.len() - start);
            if bytes[start..start + n] == row.ciphertext[..n] {
                found[i] += 1;
            } else {
                other_ciphertexts.push(format!("{}: epoch {} seq {} at offset {start}", file.display(), row.epoch, row.seq));
            }
        }
    }
    assert!(found.iter().all(|n| *n > 0), "every committed record was found on disk (the scan works)");
    assert!(
        other_ciphertexts.is_empty(),
        "another ciphertext under a committed record's key and nonce is on disk: {other_ciphertexts:?}"
    );
    agent.close().await.unwrap();
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Polls every future to completion concurrently (they reach the writer together).
async fn futures_join<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let handles: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    let mut pending: Vec<_> = handles.into_iter().map(Some).collect();
    let mut results: Vec<Option<F::Output>> = (0..pending.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (i, slot) in pending.iter_mut().enumerate() {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(out) => {
                        results[i] = Some(out);
                        *slot = None;
                    }
                    std::task::Poll::Pending => all = false,
                }
            }
        }
        if all { std::task::Poll::Ready(()) } else { std::task::Poll::Pending }
    })
    .await;
    outputs.extend(results.into_iter().map(|r| r.unwrap()));
    outputs
}
