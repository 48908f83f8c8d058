//! The agent end to end on one device: policy in force, capture of every event type, sealing,
//! the chain, durability across restarts, group commit, the queue cap.

mod support;

use std::sync::Arc;

use sha2::{Digest, Sha256};
use support::*;
use verbatim_core::clock::ManualClock;
use verbatim_core::model::*;
use verbatim_core::policy::Value;
use verbatim_core::record::{AgentEvent, RecordBody};
use verbatim_core::synth::{self, BUSINESS_LINE};
use verbatim_core::{AgentOptions, CaptureOutcome, ErrorKind};

fn meta(kind: &str, n: u32) -> EventMeta {
    EventMeta {
        channel: Channel::Sms,
        line: BUSINESS_LINE.into(),
        conversation_id: "conv-1".into(),
        source_id: format!("{kind}-{n}"),
        source_time_ms: 1_767_225_600_000 + n as i64,
    }
}

fn message(n: u32, text: &str) -> Event {
    Event::Message(Message {
        meta: meta("msg", n),
        direction: Direction::Outbound,
        sender: "+1-555-0100".into(),
        recipients: vec!["+44 20 7946 0001".into()],
        text: text.into(),
        attachment_ids: vec![],
        reply_to: None,
    })
}

fn agent_events(records: &[(u64, verbatim_core::record::Record)]) -> Vec<AgentEvent> {
    records
        .iter()
        .filter_map(|(_, r)| match &r.body {
            RecordBody::Agent(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn every_event_type_round_trips_through_the_seal() {
    let s = Setup::new();
    let agent = s.open();
    agent.apply_policy(&s.policy(&[])).await.unwrap();

    let file = s.files.path().join("deck.pdf");
    let mut content = vec![0u8; 300_000];
    synth::Rng::new(7).fill(&mut content);
    std::fs::write(&file, &content).unwrap();
    let recording = s.files.path().join("call.m4a");
    std::fs::write(&recording, b"fake audio bytes").unwrap();

    let events = vec![
        message(1, "hello"),
        Event::Edit(Edit {
            meta: meta("edit", 2),
            target_message_id: "msg-1".into(),
            editor: BUSINESS_LINE.into(),
            new_text: "hello!".into(),
        }),
        Event::Unsend(Unsend { meta: meta("unsend", 3), target_message_id: "msg-1".into(), actor: BUSINESS_LINE.into() }),
        Event::Reaction(Reaction {
            meta: meta("react", 4),
            target_message_id: "msg-1".into(),
            actor: "+442079460001".into(),
            reaction: "👍".into(),
            removed: false,
        }),
        Event::Attachment(Attachment {
            meta: meta("att", 5),
            message_id: Some("msg-1".into()),
            direction: Direction::Outbound,
            sender: BUSINESS_LINE.into(),
            file_name: "deck.pdf".into(),
            mime_type: "application/pdf".into(),
            path: file.clone(),
        }),
        Event::Call(Call {
            meta: EventMeta { channel: Channel::Voice, ..meta("call", 6) },
            direction: Direction::Inbound,
            participants: vec!["+442079460001".into(), BUSINESS_LINE.into()],
            started_ms: 1_767_225_600_006,
            ended_ms: Some(1_767_225_700_000),
            outcome: CallOutcome::Answered,
            recording_path: Some(recording.clone()),
            recording_mime_type: Some("audio/mp4".into()),
        }),
    ];
    for e in &events {
        assert!(matches!(agent.capture(e.clone()).await.unwrap(), CaptureOutcome::Captured { .. }));
    }
    let records = open_all(&s);
    let bodies: Vec<&RecordBody> = records.iter().map(|(_, r)| &r.body).filter(|b| !matches!(b, RecordBody::Agent(_))).collect();

    let Event::Message(m) = &events[0] else { unreachable!() };
    assert_eq!(bodies[0], &RecordBody::Message(m.clone()));
    let Event::Edit(e) = &events[1] else { unreachable!() };
    assert_eq!(bodies[1], &RecordBody::Edit(e.clone()));
    let Event::Unsend(u) = &events[2] else { unreachable!() };
    assert_eq!(bodies[2], &RecordBody::Unsend(u.clone()));
    let Event::Reaction(r) = &events[3] else { unreachable!() };
    assert_eq!(bodies[3], &RecordBody::Reaction(r.clone()));

    // The attachment: start, chunk by chunk, end with the file's SHA-256.
    let RecordBody::AttachmentStart(h) = bodies[4] else { panic!("expected attachment start, got {:?}", bodies[4]) };
    assert_eq!((h.attachment_id.as_str(), h.size, h.file_name.as_str()), ("att-5", 300_000, "deck.pdf"));
    let mut rebuilt = Vec::new();
    let mut index = 0;
    let mut i = 5;
    while let RecordBody::AttachmentChunk { index: n, .. } = bodies[i] {
        assert_eq!(*n, index);
        let chunk = &records.iter().filter(|(_, r)| !matches!(r.body, RecordBody::Agent(_))).nth(i).unwrap().1.payload;
        rebuilt.extend_from_slice(chunk);
        index += 1;
        i += 1;
    }
    assert_eq!(index, 5, "300 000 bytes in 64 KiB chunks");
    assert_eq!(rebuilt, content);
    let RecordBody::AttachmentEnd { size, sha256, chunks, .. } = bodies[i] else { panic!("expected end") };
    assert_eq!((*size, *chunks), (300_000, 5));
    assert_eq!(sha256, &hex::encode(Sha256::digest(&content)));

    // The call, then its recording in the same commit.
    let RecordBody::Call(c) = bodies[i + 1] else { panic!("expected call") };
    assert_eq!(c.recording_id.as_deref(), Some("recording:call-6"));
    let RecordBody::AttachmentStart(rh) = bodies[i + 2] else { panic!("expected recording") };
    assert_eq!(rh.attachment_id, "recording:call-6");
    let RecordBody::AttachmentEnd { sha256, .. } = bodies[i + 4] else { panic!("expected recording end") };
    assert_eq!(sha256, &hex::encode(Sha256::digest(b"fake audio bytes")));

    // The agent's own story is in the same chain.
    let story = agent_events(&records);
    // The first record of an epoch says why the epoch began; then the agent's start.
    assert!(matches!(story[0], AgentEvent::EpochRotated { epoch: 1, .. }));
    assert!(matches!(story[1], AgentEvent::Started { after_crash: false, .. }));
    assert!(story.iter().any(|e| matches!(e, AgentEvent::PolicyApplied { policy_version, .. } if policy_version == "2026.11-1")));
    assert!(story.iter().any(|e| matches!(e, AgentEvent::EpochRotated { epoch: 1, .. })));
}

#[tokio::test]
async fn oversized_and_disabled_attachments_are_archived_as_metadata_with_the_reason() {
    let s = Setup::new();
    let agent = s.open();
    agent
        .apply_policy(&s.policy(&[("max_attachment_mb", Value::Integer(1)), ("capture_call_recordings", Value::Bool(false))]))
        .await
        .unwrap();
    let big = s.files.path().join("big.bin");
    std::fs::write(&big, vec![1u8; 1024 * 1024 + 1]).unwrap();
    agent
        .capture(Event::Attachment(Attachment {
            meta: meta("att", 1),
            message_id: None,
            direction: Direction::Inbound,
            sender: "+442079460001".into(),
            file_name: "big.bin".into(),
            mime_type: "application/octet-stream".into(),
            path: big.clone(),
        }))
        .await
        .unwrap();
    agent
        .capture(Event::Call(Call {
            meta: EventMeta { channel: Channel::Voice, ..meta("call", 2) },
            direction: Direction::Outbound,
            participants: vec![BUSINESS_LINE.into()],
            started_ms: 1_767_225_600_000,
            ended_ms: None,
            outcome: CallOutcome::Answered,
            recording_path: Some(big),
            recording_mime_type: None,
        }))
        .await
        .unwrap();
    let reasons: Vec<String> = open_all(&s)
        .into_iter()
        .filter_map(|(_, r)| match r.body {
            RecordBody::AttachmentOmitted { reason, .. } => Some(reason),
            RecordBody::AttachmentChunk { .. } => panic!("no content may be captured"),
            _ => None,
        })
        .collect();
    assert_eq!(reasons.len(), 2);
    assert!(reasons[0].contains("max_attachment_mb"), "{reasons:?}");
    assert!(reasons[1].contains("disabled by policy"), "{reasons:?}");

    // A file that cannot be read is the app's error, typed, and stores nothing.
    let before = agent.status().last_seq;
    let err = agent
        .capture(Event::Attachment(Attachment {
            meta: meta("att", 3),
            message_id: None,
            direction: Direction::Inbound,
            sender: "x".into(),
            file_name: "gone.bin".into(),
            mime_type: "application/octet-stream".into(),
            path: s.files.path().join("gone.bin"),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::File);
    assert_eq!(agent.status().last_seq, before);
}

#[tokio::test]
async fn nothing_captured_is_readable_on_disk_and_epoch_keys_never_reach_it() {
    let s = Setup::new();
    let marker = "PLAINTEXT-MARKER-7f3a9c";
    let agent = s.open();
    agent.apply_policy(&s.policy(&[])).await.unwrap();
    let mut w = synth::Workload::new(synth::WorkloadOptions {
        body: Some(marker.into()),
        ..synth::WorkloadOptions::new(1, s.files.path())
    })
    .unwrap();
    for _ in 0..300 {
        let e = w.next_event().unwrap();
        agent.capture(e.event).await.unwrap();
    }
    // Restart once, so that there are two epochs, and scan with the WAL still live.
    drop(agent);
    let agent = s.open();
    agent.capture(message(9_999, &format!("after restart {marker}"))).await.unwrap();

    let db = s.db();
    let stream = stream_of(&db);
    // Every epoch-level secret: the epoch key, and in a conversation-key epoch its reference key.
    let keys: Vec<_> = epochs(&db)
        .iter()
        .flat_map(|e| {
            let secrets =
                verbatim_core::seal::conversation::EpochSecrets::open(&s.secret_key(), &e.encapsulation, &stream, e.epoch)
                    .unwrap();
            [secrets.epoch_key, secrets.ref_key]
        })
        .collect();
    assert!(keys.len() >= 4, "a restart starts a new epoch");
    let files = all_files(s.dir.path());
    assert!(files.iter().any(|(p, _)| p.to_string_lossy().ends_with("-wal")), "the WAL is scanned too");
    for (path, bytes) in &files {
        assert!(!contains(bytes, marker.as_bytes()), "captured text found in {}", path.display());
        assert!(!contains(bytes, b"Can you confirm the fill"), "captured text found in {}", path.display());
        for k in &keys {
            assert!(!contains(bytes, &k[..]), "an epoch key found in {}", path.display());
        }
    }
    // The round trip proves the marker really was captured.
    assert!(open_all(&s).iter().any(|(_, r)| matches!(&r.body, RecordBody::Message(m) if m.text.contains(marker))));
    agent.close().await.unwrap();
}

#[tokio::test]
async fn the_chain_detects_modified_deleted_and_reordered_rows() {
    let s = Setup::new();
    let agent = s.open();
    agent.apply_policy(&s.policy(&[])).await.unwrap();
    for n in 0..20 {
        agent.capture(message(n, "m")).await.unwrap();
    }
    let batch = agent.read_batch(usize::MAX).unwrap().unwrap();
    assert_eq!(batch.records.len() as u64, agent.status().last_seq);
    agent.close().await.unwrap();
    drop(agent);
    assert!(verify_stored_chain(&s.db()).is_ok());

    // Modified: one byte of one ciphertext.
    let db = s.db();
    let mut ct: Vec<u8> = db.query_row("SELECT ciphertext FROM records WHERE seq = 10", [], |r| r.get(0)).unwrap();
    ct[3] ^= 0x01;
    db.execute("UPDATE records SET ciphertext = ?1 WHERE seq = 10", [ct]).unwrap();
    assert_eq!(verify_stored_chain(&db), Err("bad link at 10".into()));
    let agent = s.open();
    // Records before the damage still go out; the damaged one never does.
    let intact = agent.read_batch(usize::MAX).unwrap().unwrap();
    assert_eq!(intact.records.last().unwrap().seq, 9);
    agent.acknowledge(9).await.unwrap();
    let err = agent.read_batch(usize::MAX).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Corrupt);
    assert!(err.detail.contains("record 10"), "{err}");
    drop(agent);

    // Deleted.
    let s2 = Setup::new();
    let agent = s2.open();
    agent.apply_policy(&s2.policy(&[])).await.unwrap();
    for n in 0..5 {
        agent.capture(message(n, "m")).await.unwrap();
    }
    drop(agent);
    s2.db().execute("DELETE FROM records WHERE seq = 4", []).unwrap();
    assert!(verify_stored_chain(&s2.db()).unwrap_err().starts_with("gap"));
    let agent = s2.open();
    assert_eq!(agent.read_batch(usize::MAX).unwrap().unwrap().records.last().unwrap().seq, 3);
    agent.acknowledge(3).await.unwrap();
    let err = agent.read_batch(usize::MAX).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Corrupt);
    assert!(err.detail.contains("record 4"), "{err}");
    drop(agent);

    // Reordered: swap the contents of two rows.
    let s3 = Setup::new();
    let agent = s3.open();
    agent.apply_policy(&s3.policy(&[])).await.unwrap();
    for n in 0..5 {
        agent.capture(message(n, "m")).await.unwrap();
    }
    drop(agent);
    let db = s3.db();
    db.execute_batch(
        "UPDATE records SET seq = -1 WHERE seq = 5; UPDATE records SET seq = 5 WHERE seq = 6; UPDATE records SET seq = 6 WHERE seq = -1;",
    )
    .unwrap();
    assert!(verify_stored_chain(&db).is_err());
    let agent = s3.open();
    assert_eq!(agent.read_batch(usize::MAX).unwrap().unwrap().records.last().unwrap().seq, 4);
    agent.acknowledge(4).await.unwrap();
    assert_eq!(agent.read_batch(usize::MAX).unwrap_err().kind, ErrorKind::Corrupt);
}

#[test]
fn concurrent_captures_are_group_committed_into_one_contiguous_sequence() {
    let s = Setup::new();
    let agent = s.open();
    verbatim_core::testing::block_on(agent.apply_policy(&s.policy(&[]))).unwrap();
    let first = agent.status().last_seq;
    let threads = 16;
    let per_thread = 50;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let agent = agent.clone();
            std::thread::spawn(move || {
                (0..per_thread)
                    .map(|i| match agent.capture_blocking(message(t * 1000 + i, "group")).unwrap() {
                        CaptureOutcome::Captured { first_seq, last_seq } => {
                            assert_eq!(first_seq, last_seq);
                            first_seq
                        }
                        o => panic!("{o:?}"),
                    })
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    let mut seqs: Vec<u64> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    seqs.sort();
    seqs.dedup();
    assert_eq!(seqs.len(), (threads * per_thread) as usize, "every acknowledged capture has its own sequence number");
    let ids: Vec<String> = open_all(&s)
        .into_iter()
        .filter_map(|(_, r)| match r.body {
            RecordBody::Message(m) => Some(m.meta.source_id),
            _ => None,
        })
        .collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(ids.len(), unique.len(), "each event stored exactly once");
    assert_eq!(ids.len(), (threads * per_thread) as usize);
    // Besides the captures, one key record per conversation (and one for the agent's events).
    let after_first = |seq: u64| seq > first;
    let key_records = stored_rows(&s.db()).iter().filter(|r| after_first(r.seq)).count()
        - open_all(&s).iter().filter(|(seq, _)| after_first(*seq)).count();
    assert_eq!(agent.status().last_seq, first + (threads * per_thread) as u64 + key_records as u64);
    assert_eq!(verify_stored_chain(&s.db()).unwrap(), agent.status().last_seq);
}

#[tokio::test]
async fn a_rejected_policy_never_replaces_the_one_in_force() {
    let s = Setup::new();
    let agent = s.open();
    agent.apply_policy(&s.policy(&[])).await.unwrap();
    let bad = s.policy(&[
        ("archive_url", Value::String("http://archive.example.com".into())),
        ("policy_version", Value::String("v-bad".into())),
    ]);
    let err = agent.apply_policy(&bad).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::PolicyRejected);
    assert!(err.detail.contains("archive_url"), "{err}");
    assert!(!err.to_string().contains(TOKEN));
    let status = agent.status();
    assert!(status.configured);
    assert_eq!(status.policy_version.as_deref(), Some("2026.11-1"));
    assert!(matches!(agent.capture(message(1, "still captured")).await.unwrap(), CaptureOutcome::Captured { .. }));
    let story = agent_events(&open_all(&s));
    assert!(
        story.iter().any(
            |e| matches!(e, AgentEvent::PolicyRejected { problems } if problems.iter().any(|p| p.starts_with("archive_url")))
        )
    );
    // The same policy again is not a new audit event; a changed one is.
    agent.apply_policy(&s.policy(&[])).await.unwrap();
    agent.apply_policy(&s.policy(&[("capture_channels", Value::String("sms".into()))])).await.unwrap();
    let story = agent_events(&open_all(&s));
    assert_eq!(story.iter().filter(|e| matches!(e, AgentEvent::PolicyApplied { .. })).count(), 2);
    assert!(
        story.iter().any(|e| matches!(e, AgentEvent::CaptureChannels { disabled, .. } if disabled.contains(&Channel::Whatsapp)))
    );
}

#[tokio::test]
async fn without_a_policy_capture_fails_closed_and_early_evidence_joins_the_chain_later() {
    let s = Setup::new();
    let agent = s.open();
    let err = agent.capture(message(1, "x")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotConfigured);
    assert!(!agent.status().configured);
    assert_eq!(agent.status().counters.refused_not_configured, 1);
    assert_eq!(
        agent.apply_policy(&Value::dict([("tenant_id", Value::Integer(3))])).await.unwrap_err().kind,
        ErrorKind::PolicyRejected
    );
    assert!(agent.status().not_configured_reason.unwrap().contains("rejected"));
    assert_eq!(agent.status().last_seq, 0, "nothing sealed without an archive key");

    agent.apply_policy(&s.policy(&[])).await.unwrap();
    let story = agent_events(&open_all(&s));
    assert!(matches!(story[0], AgentEvent::EpochRotated { .. }) || matches!(story[0], AgentEvent::Started { .. }));
    let started = story.iter().position(|e| matches!(e, AgentEvent::Started { .. })).unwrap();
    let rejected = story.iter().position(|e| matches!(e, AgentEvent::PolicyRejected { .. })).unwrap();
    let applied = story.iter().position(|e| matches!(e, AgentEvent::PolicyApplied { .. })).unwrap();
    assert!(started < rejected && rejected < applied, "evidence keeps its order: {story:?}");
}

#[tokio::test]
async fn out_of_scope_events_leave_only_a_counter() {
    let s = Setup::new();
    let agent = s.open();
    agent.apply_policy(&s.policy(&[])).await.unwrap();
    let before = agent.status().last_seq;
    let mut personal = message(1, "dinner tonight?");
    if let Event::Message(m) = &mut personal {
        m.meta.line = synth::PERSONAL_LINE.into();
        m.sender = synth::PERSONAL_LINE.into();
    }
    assert_eq!(agent.capture(personal).await.unwrap(), CaptureOutcome::OutOfScope);
    let mut wechat = message(2, "x");
    if let Event::Message(m) = &mut wechat {
        m.meta.channel = Channel::Wechat;
    }
    assert_eq!(agent.capture(wechat).await.unwrap(), CaptureOutcome::OutOfScope);
    assert_eq!(agent.status().last_seq, before);
    assert_eq!(agent.status().counters.out_of_scope, 2);
    assert!(all_files(s.dir.path()).iter().all(|(_, b)| !contains(b, b"dinner tonight")));
}

#[tokio::test]
async fn invalid_events_are_refused_with_the_field_named_and_nothing_stored() {
    let s = Setup::new();
    let agent = s.open();
    agent.apply_policy(&s.policy(&[])).await.unwrap();
    let before = agent.status().last_seq;
    type Spoil = Box<dyn Fn(&mut Message)>;
    let cases: Vec<(Spoil, &str)> = vec![
        (Box::new(|m| m.meta.source_id = " ".into()), "source_id is empty"),
        (Box::new(|m| m.meta.conversation_id.clear()), "conversation_id is empty"),
        (Box::new(|m| m.recipients.clear()), "recipients is empty"),
        (Box::new(|m| m.text.clear()), "neither text nor attachments"),
        (Box::new(|m| m.sender = "+442079460009".into()), "no business party"),
        (Box::new(|m| m.meta.source_time_ms = i64::MAX / 2), "ahead of the device clock"),
        (Box::new(|m| m.meta.source_time_ms = -5), "positive Unix time"),
        (Box::new(|m| m.meta.source_id = "x".repeat(5000)), "longer than"),
    ];
    for (mutate, expected) in cases {
        let Event::Message(mut m) = message(1, "secret words") else { unreachable!() };
        mutate(&mut m);
        let err = agent.capture(Event::Message(m)).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidEvent);
        assert!(err.detail.contains(expected), "{err} should say {expected}");
        assert!(!err.detail.contains("secret words") && !err.detail.contains("7946"));
    }
    assert_eq!(agent.status().last_seq, before);
    assert_eq!(agent.status().counters.invalid, 8);
}

#[tokio::test]
async fn a_restart_continues_the_chain_in_a_new_epoch_and_records_the_crash() {
    let s = Setup::new();
    let agent = s.open();
    agent.apply_policy(&s.policy(&[])).await.unwrap();
    agent.capture(message(1, "before")).await.unwrap();
    let epoch_before = agent.status().epoch.unwrap();
    // Leave the store as a killed process leaves it: its running mark still set. (Real kill -9
    // of a child process is tested with the `verbatim` binary.)
    drop(agent);
    s.db().execute("UPDATE meta SET value = '1' WHERE key = 'running'", []).unwrap();
    let agent = s.open();
    assert!(agent.status().configured, "the stored policy is re-applied");
    agent.capture(message(2, "after")).await.unwrap();
    assert!(agent.status().epoch.unwrap() > epoch_before);
    let records = open_all(&s);
    let story = agent_events(&records);
    assert!(story.iter().any(|e| matches!(e, AgentEvent::Started { after_crash: true, .. })), "{story:?}");
    let texts: Vec<_> = records
        .iter()
        .filter_map(|(_, r)| match &r.body {
            RecordBody::Message(m) => Some(m.text.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(texts, ["before", "after"]);

    // A clean close is not reported as a crash.
    agent.close().await.unwrap();
    drop(agent);
    let agent = s.open();
    let story = agent_events(&open_all(&s));
    assert!(
        matches!(story.last().unwrap(), AgentEvent::Started { after_crash: false, .. })
            || story.iter().rev().take(2).any(|e| matches!(e, AgentEvent::Started { after_crash: false, .. }))
    );
    drop(agent);
}

#[tokio::test]
async fn clock_jumps_are_recorded_and_order_stays_by_sequence() {
    let s = Setup::new();
    let clock = ManualClock::new(1_767_225_600_000 + 1000);
    let agent = s.open_with(AgentOptions { clock: Arc::new(clock.clone()), ..Default::default() });
    agent.apply_policy(&s.policy(&[])).await.unwrap();
    agent.capture(message(1, "a")).await.unwrap();
    clock.advance(5_000);
    agent.capture(message(2, "b")).await.unwrap();
    clock.jump_wall(-2 * 3600 * 1000);
    agent.capture(message(3, "c")).await.unwrap();
    clock.jump_wall(3 * 3600 * 1000);
    agent.capture(message(4, "d")).await.unwrap();
    let records = open_all(&s);
    let jumps: Vec<i64> = agent_events(&records)
        .into_iter()
        .filter_map(|e| match e {
            AgentEvent::ClockJumped { delta_ms, .. } => Some(delta_ms),
            _ => None,
        })
        .collect();
    assert_eq!(jumps, [-2 * 3600 * 1000, 3 * 3600 * 1000]);
    let texts: Vec<_> = records
        .iter()
        .filter_map(|(_, r)| match &r.body {
            RecordBody::Message(m) => Some(m.text.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(texts, ["a", "b", "c", "d"], "sequence order, whatever the clock said");
}

#[tokio::test]
async fn the_queue_cap_alerts_then_fails_closed_without_losing_anything() {
    let s = Setup::new();
    let agent = s.open();
    agent
        .apply_policy(&s.policy(&[("queue_max_mb", Value::Integer(16)), ("queue_alert_percent", Value::Integer(50))]))
        .await
        .unwrap();
    let file = s.files.path().join("4mb.bin");
    std::fs::write(&file, vec![3u8; 4 * 1024 * 1024]).unwrap();
    let attach = |n| {
        Event::Attachment(Attachment {
            meta: meta("att", n),
            message_id: None,
            direction: Direction::Outbound,
            sender: BUSINESS_LINE.into(),
            file_name: "4mb.bin".into(),
            mime_type: "application/octet-stream".into(),
            path: file.clone(),
        })
    };
    let mut captured = 0;
    let err = loop {
        match agent.capture(attach(captured)).await {
            Ok(_) => captured += 1,
            Err(e) => break e,
        }
        assert!(captured < 10);
    };
    assert_eq!(err.kind, ErrorKind::QueueFull);
    assert!(err.detail.contains("queue full"), "{err}");
    assert_eq!(captured, 3, "three 4 MiB files fit in 16 MiB, a fourth does not");
    let status = agent.status();
    assert!(status.queue_alert && status.queue_full && !status.capture_enabled);
    assert_eq!(status.counters.refused_queue_full, 1);
    // Still full: a second refusal does not record a second event.
    assert_eq!(agent.capture(attach(99)).await.unwrap_err().kind, ErrorKind::QueueFull);

    let records = open_all(&s);
    let story = agent_events(&records);
    assert_eq!(story.iter().filter(|e| matches!(e, AgentEvent::QueueAlert { percent: 50, .. })).count(), 1);
    assert_eq!(story.iter().filter(|e| matches!(e, AgentEvent::QueueFull { .. })).count(), 1);
    let ends = records.iter().filter(|(_, r)| matches!(r.body, RecordBody::AttachmentEnd { .. })).count();
    assert_eq!(ends, 3, "everything stored stays");

    // Acknowledging frees space and capture resumes.
    let last = agent.status().last_seq;
    agent.acknowledge(last).await.unwrap();
    assert_eq!(agent.status().queue_records, 0);
    assert!(!agent.status().queue_full);
    assert!(matches!(agent.capture(attach(100)).await.unwrap(), CaptureOutcome::Captured { .. }));
}

#[tokio::test]
async fn acknowledgement_deletes_exactly_through_the_acknowledged_sequence() {
    let s = Setup::new();
    let agent = s.open();
    agent.apply_policy(&s.policy(&[])).await.unwrap();
    for n in 0..10 {
        agent.capture(message(n, "m")).await.unwrap();
    }
    let last = agent.status().last_seq;
    agent.acknowledge(last - 3).await.unwrap();
    let status = agent.status();
    assert_eq!((status.acked_through, status.queue_records), (last - 3, 3));
    let batch = agent.read_batch(usize::MAX).unwrap().unwrap();
    assert_eq!(batch.records.first().unwrap().seq, last - 2);
    // Acknowledging the past again is a no-op; the future is refused.
    agent.acknowledge(2).await.unwrap();
    assert_eq!(agent.acknowledge(last + 1).await.unwrap_err().kind, ErrorKind::Rejected);
    assert_eq!(agent.status().queue_records, 3);
    drop(agent);
    assert_eq!(verify_stored_chain(&s.db()).unwrap(), last);
}

#[tokio::test]
async fn an_identity_change_waits_until_the_queue_is_empty() {
    let s = Setup::new();
    let agent = s.open();
    agent.apply_policy(&s.policy(&[("device_id", Value::String("dev-A".into()))])).await.unwrap();
    agent.capture(message(1, "m")).await.unwrap();
    let err = agent.apply_policy(&s.policy(&[("device_id", Value::String("dev-B".into()))])).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::PolicyRejected);
    assert_eq!(agent.status().device_id.as_deref(), Some("dev-A"));
    agent.acknowledge(agent.status().last_seq).await.unwrap();
    agent.apply_policy(&s.policy(&[("device_id", Value::String("dev-B".into()))])).await.unwrap();
    let status = agent.status();
    assert_eq!(status.device_id.as_deref(), Some("dev-B"));
    assert!(status.last_seq > 0 && status.acked_through == 0, "a new stream starts from 1");
}

#[tokio::test]
async fn a_new_archive_key_starts_a_new_epoch_sealed_to_it() {
    let s = Setup::new();
    let agent = s.open();
    agent.apply_policy(&s.policy(&[])).await.unwrap();
    let e1 = agent.status().epoch.unwrap();
    let (sk2, pk2) = verbatim_core::seal::generate_archive_keypair();
    let tree = verbatim_core::synth::sample_policy("https://archive.acme-securities.test", &pk2, TOKEN, &[]);
    agent.apply_policy(&tree).await.unwrap();
    agent.capture(message(1, "to the new archive")).await.unwrap();
    let e2 = agent.status().epoch.unwrap();
    assert!(e2 > e1);

    let db = s.db();
    let stream = stream_of(&db);
    let eps = epochs(&db);
    assert_eq!(eps.last().unwrap().archive_key_id, verbatim_core::seal::key_id(&pk2));
    // Each epoch opens with its own archive key only.
    let mut old = verbatim_core::archive::Opener::new(s.secret_key());
    let mut new = verbatim_core::archive::Opener::new(sk2);
    let mut prev = independent_genesis(&stream);
    let mut story = Vec::new();
    for row in stored_rows(&db) {
        let e = eps.iter().find(|e| e.epoch == row.epoch).unwrap();
        let wire = verbatim_core::wire::WireRecord {
            seq: row.seq,
            epoch: row.epoch,
            link: row.link.clone().try_into().unwrap(),
            ciphertext: row.ciphertext,
        };
        let (right, wrong) = if row.epoch == e2 { (&mut new, &mut old) } else { (&mut old, &mut new) };
        assert!(wrong.open_any(&stream, e, &wire, &prev).is_err());
        if let verbatim_core::archive::OpenedRecord::Record { record, .. } = right.open_any(&stream, e, &wire, &prev).unwrap() {
            story.push(record.body);
        }
        prev = wire.link;
    }
    assert!(
        story
            .iter()
            .any(|b| matches!(b, RecordBody::Agent(AgentEvent::EpochRotated { reason, .. }) if reason == "archive key changed"))
    );
    assert!(story.iter().any(|b| matches!(b, RecordBody::Message(m) if m.text == "to the new archive")));
}

#[tokio::test]
async fn a_second_agent_on_the_same_directory_is_refused() {
    let s = Setup::new();
    let agent = s.open();
    let err = verbatim_core::Agent::open(s.dir.path(), verbatim_core::AgentOptions::default()).err().unwrap();
    assert_eq!(err.kind, ErrorKind::Storage);
    assert!(err.detail.contains("another agent"), "{err}");
    drop(agent);
    s.open();
}

#[tokio::test]
async fn the_wal_file_shrinks_back_after_a_large_attachment() {
    let s = Setup::new();
    let agent = s.open();
    agent.apply_policy(&s.policy(&[("max_attachment_mb", Value::Integer(20))])).await.unwrap();
    let big = s.files.path().join("deck.pdf");
    std::fs::write(&big, vec![7u8; 12 * 1024 * 1024]).unwrap();
    agent
        .capture(Event::Attachment(Attachment {
            meta: meta("deck", 1),
            message_id: None,
            direction: Direction::Inbound,
            sender: "+442079460001".into(),
            file_name: "deck.pdf".into(),
            mime_type: "application/pdf".into(),
            path: big,
        }))
        .await
        .unwrap();
    let wal = s.dir.path().join(format!("{}-wal", verbatim_core::queue::DB_FILE));
    let after_attachment = std::fs::metadata(&wal).unwrap().len();
    assert!(after_attachment > 12 * 1024 * 1024, "the attachment went through the WAL: {after_attachment}");
    // The commit checkpointed it; the next transaction restarts the WAL and cuts the file back.
    agent.capture(message(2, "after the deck")).await.unwrap();
    let after_next = std::fs::metadata(&wal).unwrap().len();
    assert!(after_next <= verbatim_core::queue::WAL_SIZE_LIMIT as u64, "WAL still {after_next} bytes");
    agent.close().await.unwrap();
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

#[cfg(unix)]
#[tokio::test]
async fn the_store_is_readable_by_its_owner_only_and_older_stores_are_tightened() {
    use std::os::unix::fs::PermissionsExt;
    let s = Setup::new();
    let dir = s.dir.path().join("agent-data");
    let agent = verbatim_core::Agent::open(&dir, Default::default()).unwrap();
    agent.apply_policy(&s.policy(&[])).await.unwrap();
    agent.capture(message(1, "hello")).await.unwrap();
    let files = ["queue.sqlite3", "queue.sqlite3-wal", "queue.sqlite3-shm", "agent.lock"];
    assert_eq!(mode(&dir), 0o700, "data directory");
    for f in files {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    agent.close().await.unwrap();
    drop(agent);

    // A store made before the rule (0755 / 0644) is tightened when it opens.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for f in ["queue.sqlite3", "agent.lock"] {
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let agent = verbatim_core::Agent::open(&dir, Default::default()).unwrap();
    agent.apply_policy(&s.policy(&[])).await.unwrap();
    agent.capture(message(2, "again")).await.unwrap();
    assert_eq!(mode(&dir), 0o700, "data directory");
    for f in files {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    agent.close().await.unwrap();
}
