//! The iMessage relay against `chat.db` fixtures with Messages' real schema: what each kind
//! of row becomes, idempotence across passes, edits and unsends after capture, attachments
//! that appear later, scope, a writer working in WAL mode meanwhile, and losing the database.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use support::{Setup, open_all};
use verbatim_core::model::Direction;
use verbatim_core::record::{AgentEvent, RecordBody};
use verbatim_core::sources::imessage::fixture::{
    BUSINESS_ID, BUSINESS_NUMBER, CLIENT_A, CLIENT_B, CLIENT_C, ChatDbFixture, PERSONAL_ID, World, expect,
};
use verbatim_core::sources::imessage::{self, RelayError, RelayOptions, SOURCE};
use verbatim_core::{Agent, Channel};

fn setup() -> (Setup, Agent, tempfile::TempDir, World) {
    let s = Setup::new();
    let agent = s.open();
    let problems = tokio_rt().block_on(agent.apply_policy(&s.policy(&[]))).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    let mac = tempfile::tempdir().unwrap();
    let world = World::create(mac.path());
    (s, agent, mac, world)
}

fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn options(world: &World) -> RelayOptions {
    RelayOptions { chat_db: world.db.path.clone(), attachments_root: Some(world.attachments_root.clone()) }
}

fn scan(agent: &Agent, world: &World) -> imessage::ScanReport {
    tokio_rt().block_on(imessage::scan_evidenced(agent, &options(world), &mut |_| {})).unwrap()
}

/// Every captured record (agent events aside), keyed by source id, each exactly once.
fn captured(s: &Setup) -> BTreeMap<String, RecordBody> {
    let mut out = BTreeMap::new();
    for (_, rec) in open_all(s) {
        let id = match &rec.body {
            RecordBody::Message(m) => m.meta.source_id.clone(),
            RecordBody::Edit(e) => e.meta.source_id.clone(),
            RecordBody::Unsend(u) => u.meta.source_id.clone(),
            RecordBody::Reaction(r) => r.meta.source_id.clone(),
            RecordBody::AttachmentStart(h) => h.attachment_id.clone(),
            _ => continue,
        };
        assert!(out.insert(id.clone(), rec.body).is_none(), "{id} captured twice");
    }
    out
}

fn agent_events(s: &Setup) -> Vec<AgentEvent> {
    open_all(s).into_iter().filter_map(|(_, r)| if let RecordBody::Agent(e) = r.body { Some(e) } else { None }).collect()
}

#[test]
fn every_kind_of_row_becomes_its_event_with_parties_and_times() {
    let (s, agent, _mac, world) = setup();
    let report = scan(&agent, &world);
    assert_eq!(report.skipped_rows, 1, "the group rename has no event: {report:?}");
    let got = captured(&s);

    let RecordBody::Message(m1) = &got["M1-QUOTE"] else { panic!() };
    assert_eq!((m1.meta.channel, m1.direction), (Channel::Imessage, Direction::Inbound));
    assert_eq!((m1.sender.as_str(), m1.recipients.clone()), (CLIENT_A, vec![BUSINESS_ID.to_string()]));
    assert_eq!((m1.meta.line.as_str(), m1.meta.source_time_ms), (BUSINESS_ID, World::at(1)));
    assert_eq!(m1.text, "Can you quote 100 ACME?");

    let RecordBody::Message(m2) = &got["M2-REPLY"] else { panic!() };
    assert_eq!(m2.text, "ACME 12.40 / 12.55", "decoded from attributedBody");
    assert_eq!((m2.direction, m2.sender.as_str()), (Direction::Outbound, BUSINESS_ID));
    assert_eq!(m2.recipients, vec![CLIENT_A.to_string()]);
    assert_eq!(m2.reply_to.as_deref(), Some("M1-QUOTE"));

    let RecordBody::Message(m3) = &got["M3-GROUP"] else { panic!() };
    assert_eq!(m3.meta.conversation_id, "iMessage;+;chat777");
    assert_eq!(m3.sender, CLIENT_B);
    assert_eq!(m3.recipients, vec![BUSINESS_ID.to_string(), CLIENT_A.to_string()], "the group's other members");

    let RecordBody::Message(m4) = &got["M4-PHOTO"] else { panic!() };
    assert_eq!(m4.text, "Term sheet attached", "the attachment placeholder is not text");
    assert_eq!(m4.recipients, vec![CLIENT_A.to_string(), CLIENT_B.to_string()]);
    assert_eq!(m4.attachment_ids, vec![expect::PHOTO_ATTACHMENT.to_string()]);
    let RecordBody::AttachmentStart(photo) = &got[expect::PHOTO_ATTACHMENT] else { panic!() };
    assert_eq!((photo.file_name.as_str(), photo.mime_type.as_str(), photo.size), ("term-sheet.png", "image/png", 18));
    assert_eq!(photo.message_id.as_deref(), Some("M4-PHOTO"));

    let RecordBody::Message(m5) = &got["M5-SCAN"] else { panic!() };
    assert_eq!((m5.text.as_str(), m5.attachment_ids.clone()), ("", vec![expect::MISSING_ATTACHMENT.to_string()]));
    assert!(!got.contains_key(expect::MISSING_ATTACHMENT), "not on disk yet");
    let omitted: Vec<_> = open_all(&s)
        .into_iter()
        .filter_map(|(_, r)| match r.body {
            RecordBody::AttachmentOmitted { header, reason } => Some((header.attachment_id, header.message_id, reason)),
            _ => None,
        })
        .collect();
    assert_eq!(
        omitted,
        [(expect::MISSING_ATTACHMENT.to_string(), Some("M5-SCAN".to_string()), "file not downloaded yet".to_string())],
        "recorded as omitted, metadata only"
    );

    let RecordBody::Reaction(like) = &got["M6-LIKE"] else { panic!() };
    assert_eq!(
        (like.target_message_id.as_str(), like.actor.as_str(), like.reaction.as_str(), like.removed),
        ("M2-REPLY", CLIENT_A, "like", false)
    );
    let RecordBody::Reaction(unlike) = &got["M7-UNLIKE"] else { panic!() };
    assert_eq!((unlike.reaction.as_str(), unlike.removed, unlike.meta.source_time_ms), ("like", true, World::at(7)));

    let RecordBody::Message(m8) = &got[expect::EDITED] else { panic!() };
    assert_eq!(m8.text, expect::EDITED_VERSIONS[0], "the first version; the edits follow");
    let edits: Vec<_> = got.values().filter_map(|b| if let RecordBody::Edit(e) = b { Some(e) } else { None }).collect();
    assert_eq!(
        edits.iter().map(|e| (e.new_text.as_str(), e.meta.source_time_ms)).collect::<Vec<_>>(),
        vec![(expect::EDITED_VERSIONS[1], World::at(9)), (expect::EDITED_VERSIONS[2], World::at(10))]
    );
    assert!(edits.iter().all(|e| e.target_message_id == expect::EDITED && e.editor == BUSINESS_ID));

    assert!(!got.contains_key(expect::RETRACTED), "unsent before the relay saw it: no text left");
    let RecordBody::Unsend(u) = &got["M9-UNSENT:unsend"] else { panic!() };
    assert_eq!(
        (u.target_message_id.as_str(), u.actor.as_str(), u.meta.source_time_ms),
        (expect::RETRACTED, BUSINESS_ID, World::at(12))
    );

    let RecordBody::Message(sms) = &got["M10-SMS"] else { panic!() };
    assert_eq!((sms.meta.channel, sms.meta.line.as_str(), sms.sender.as_str()), (Channel::Sms, BUSINESS_NUMBER, CLIENT_C));

    assert!(!got.contains_key(expect::PERSONAL));
    assert!(open_all(&s).iter().all(|(_, r)| !format!("{r:?}").contains(PERSONAL_ID)), "nothing of the personal account stored");
    assert_eq!(report.out_of_scope, 1);
    assert_eq!(
        got.len(),
        7 + 1 + 2 + 2 + 1,
        "messages (with the edited one), the photo, reactions, edits, unsend: {:?}",
        got.keys()
    );
}

#[test]
fn a_second_pass_captures_nothing_and_changes_after_capture_produce_their_events() {
    let (s, agent, _mac, world) = setup();
    scan(&agent, &world);
    let first = captured(&s);
    let again = scan(&agent, &world);
    assert_eq!((again.captured, again.out_of_scope), (0, 0), "{again:?}");
    assert_eq!(captured(&s).len(), first.len());

    // After capture: M1 edited twice, M3 unsent, the personal message edited, the scan downloaded.
    let m1 = world.db.rowid_of("M1-QUOTE").unwrap();
    world.db.edit(m1, "Can you quote 200 ACME?", World::at(20));
    world.db.edit(m1, "Can you quote 300 ACME?", World::at(21));
    world.db.retract(world.db.rowid_of("M3-GROUP").unwrap(), World::at(22));
    world.db.edit(world.db.rowid_of(expect::PERSONAL).unwrap(), "dinner at 9?", World::at(23));
    world.download_missing_attachment();
    let report = scan(&agent, &world);
    assert_eq!((report.edits, report.unsends, report.attachments_recovered), (2, 1, 1), "{report:?}");
    let got = captured(&s);
    let RecordBody::Edit(e1) = &got[&format!("M1-QUOTE:edit:{}", World::at(20))] else { panic!() };
    assert_eq!(
        (e1.new_text.as_str(), e1.target_message_id.as_str(), e1.editor.as_str()),
        ("Can you quote 200 ACME?", "M1-QUOTE", CLIENT_A)
    );
    let RecordBody::Edit(e2) = &got[&format!("M1-QUOTE:edit:{}", World::at(21))] else { panic!() };
    assert_eq!(e2.new_text, "Can you quote 300 ACME?");
    let RecordBody::Unsend(u) = &got["M3-GROUP:unsend"] else { panic!() };
    assert_eq!((u.actor.as_str(), u.meta.source_time_ms), (CLIENT_B, World::at(22)));
    let RecordBody::AttachmentStart(scan_pdf) = &got[expect::MISSING_ATTACHMENT] else { panic!() };
    assert_eq!((scan_pdf.message_id.as_deref(), scan_pdf.file_name.as_str()), (Some("M5-SCAN"), "signed.pdf"));
    assert_eq!(got.len(), first.len() + 4);

    // And once more: nothing.
    let last = scan(&agent, &world);
    assert_eq!((last.captured, last.out_of_scope, last.attachments_recovered), (0, 0, 0), "{last:?}");
    let state = agent.source_state(SOURCE).unwrap();
    assert!(!state.contains_key(&format!("a:{}", expect::MISSING_ATTACHMENT)));
    assert!(state.values().all(|v| !String::from_utf8_lossy(v).contains("ACME")), "no text in the source state");
}

#[test]
fn a_relay_reopened_on_the_same_store_resumes_where_it_was() {
    let (s, agent, _mac, world) = setup();
    scan(&agent, &world);
    tokio_rt().block_on(agent.close()).unwrap();
    drop(agent);
    World::more_messages(&world.db, "LATER", 30);
    let agent = s.open();
    let report = scan(&agent, &world);
    assert_eq!((report.captured, report.rows_read), (30, 30), "only the new rows are read: {report:?}");
    assert_eq!(captured(&s).len(), 13 + 30);
}

#[test]
fn messages_written_while_the_relay_reads_in_wal_mode_are_each_captured_once() {
    let (s, agent, _mac, world) = setup();
    let path = world.db.path.clone();
    let done = Arc::new(AtomicBool::new(false));
    // The writer writes a batch whenever a pass has ended, so the next pass reads while it writes.
    let (pass_ended, wait_pass) = std::sync::mpsc::sync_channel::<()>(1);
    let writer = {
        let done = done.clone();
        std::thread::spawn(move || {
            let db = ChatDbFixture::open(&path);
            for batch in 0..40 {
                World::more_messages(&db, &format!("W{batch}"), 25);
                let _ = wait_pass.recv();
            }
            done.store(true, Ordering::Release);
        })
    };
    let mut passes = 0;
    while !done.load(Ordering::Acquire) {
        scan(&agent, &world);
        passes += 1;
        let _ = pass_ended.try_send(());
    }
    writer.join().unwrap();
    scan(&agent, &world);
    let got = captured(&s);
    let written = got.keys().filter(|k| k.starts_with('W')).count();
    assert_eq!(written, 40 * 25, "every row written meanwhile, once ({passes} passes during the writes)");
    assert!(passes > 1, "the relay ran while the writer wrote");
}

#[test]
fn losing_the_database_is_a_could_not_record_window_closed_when_it_comes_back() {
    let (s, agent, mac, world) = setup();
    let opts = options(&world);
    let moved = mac.path().join("elsewhere.db");
    std::fs::rename(&opts.chat_db, &moved).unwrap();
    let rt = tokio_rt();
    let err = rt.block_on(imessage::scan_evidenced(&agent, &opts, &mut |_| {})).unwrap_err();
    assert!(matches!(err, RelayError::Source(imessage::ReadError::Unavailable(_))), "{err}");
    let since = imessage::unavailable_since(&agent).unwrap().expect("window open");
    let status = imessage::write_status(&agent, None).unwrap();
    assert_eq!(
        (status.available, status.cause.as_deref(), status.unavailable_since_ms),
        (false, Some("source_unavailable:imessage"), Some(since))
    );
    // The agent's own status (and so the MDM feedback, `verbatim.unavailable`) says so.
    assert_eq!(agent.status().unavailable, ["source_unavailable:imessage"]);
    // Still unavailable on the next pass: the same window.
    rt.block_on(imessage::scan_evidenced(&agent, &opts, &mut |_| {})).unwrap_err();
    assert_eq!(imessage::unavailable_since(&agent).unwrap(), Some(since));

    // Not a database at all is unavailable too.
    let garbage = RelayOptions { chat_db: mac.path().join("garbage.db"), attachments_root: None };
    std::fs::write(&garbage.chat_db, b"this is not sqlite, not at all; just bytes").unwrap();
    let err = rt.block_on(imessage::scan_evidenced(&agent, &garbage, &mut |_| {})).unwrap_err();
    assert!(matches!(err, RelayError::Source(imessage::ReadError::Unavailable(_))), "{err}");
    assert_eq!(imessage::unavailable_since(&agent).unwrap(), Some(since));

    std::fs::rename(&moved, &opts.chat_db).unwrap();
    let report = rt.block_on(imessage::scan_evidenced(&agent, &opts, &mut |_| {})).unwrap();
    assert_eq!(report.captured, 13);
    assert_eq!(imessage::unavailable_since(&agent).unwrap(), None);
    assert!(agent.status().unavailable.is_empty());
    let windows: Vec<_> = agent_events(&s)
        .into_iter()
        .filter_map(|e| match e {
            AgentEvent::CaptureUnavailable { cause, start_ms, end_ms, .. } if cause == "source_unavailable:imessage" => {
                Some((start_ms, end_ms))
            }
            _ => None,
        })
        .collect();
    assert_eq!(windows.len(), 1, "one window");
    assert_eq!(windows[0].0, since);
    assert!(windows[0].1 >= since);
}

#[test]
fn the_relay_never_writes_to_chat_db() {
    let (_s, agent, mac, world) = setup();
    let before = std::fs::read(&world.db.path).unwrap();
    let wal = mac.path().join("chat.db-wal");
    let wal_before = std::fs::read(&wal).unwrap();
    scan(&agent, &world);
    assert_eq!(std::fs::read(&world.db.path).unwrap(), before);
    assert_eq!(std::fs::read(&wal).unwrap(), wal_before);
}

#[test]
fn an_unknown_service_or_a_row_without_parties_is_skipped_not_fatal() {
    let (s, agent, _mac, world) = setup();
    world.db.connection().execute("UPDATE message SET service = 'Madrid' WHERE guid = 'M1-QUOTE'", []).unwrap();
    world
        .db
        .connection()
        .execute("UPDATE message SET destination_caller_id = NULL, account = NULL WHERE guid = 'M10-SMS'", [])
        .unwrap();
    // A row the agent refuses (dated two days ahead of the clock) must not stop every pass there.
    let ahead = verbatim_core::sources::imessage::fixture::apple_ns(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64 + 2 * 86_400_000,
    );
    world.db.connection().execute("UPDATE message SET date = ?1 WHERE guid = 'M2-REPLY'", [ahead]).unwrap();
    let report = scan(&agent, &world);
    assert_eq!(report.refused, 1, "{report:?}");
    assert!(agent_events(&s).iter().any(|e| matches!(e, AgentEvent::UncapturedCommunication { source_id, reason, .. }
        if source_id == "M2-REPLY" && reason.starts_with("invalid event"))));
    let got = captured(&s);
    assert!(!got.contains_key("M2-REPLY") && got.contains_key("M10-SMS"));
    assert_eq!(scan(&agent, &world).refused, 0, "passed over once, not at every pass");
    assert!(!got.contains_key("M1-QUOTE"));
    assert!(got.contains_key("M10-SMS"), "own handle from the chat's last_addressed_handle");
    assert_eq!(report.skipped_rows, 2, "{report:?}");
    let _ = (CLIENT_A, Direction::Inbound);
}

#[test]
fn watching_captures_rows_as_they_arrive_and_keeps_the_status_file_until_stopped() {
    let (s, agent, _mac, world) = setup();
    let stop = Arc::new(AtomicBool::new(false));
    let captured_so_far = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let watcher = {
        let (agent, stop, count, opts) = (agent.clone(), stop.clone(), captured_so_far.clone(), options(&world));
        std::thread::spawn(move || {
            let pacing = imessage::WatchOptions {
                poll: std::time::Duration::from_millis(20),
                backstop: std::time::Duration::from_secs(3600),
                upload_deadline: None,
            };
            tokio_rt().block_on(imessage::watch(&agent, &opts, &pacing, &stop, |outcome| {
                if let Ok(r) = outcome {
                    count.fetch_add(r.captured, Ordering::AcqRel);
                }
            }))
        })
    };
    let wait_for = |n: u64| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while captured_so_far.load(Ordering::Acquire) < n {
            assert!(
                std::time::Instant::now() < deadline,
                "the watcher captured {} of {n}",
                captured_so_far.load(Ordering::Acquire)
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    };
    wait_for(13);
    World::more_messages(&world.db, "LIVE", 5);
    wait_for(18);
    let status: imessage::RelayStatus =
        serde_json::from_slice(&std::fs::read(s.dir.path().join(imessage::STATUS_FILE)).unwrap()).unwrap();
    assert!(status.available && status.cause.is_none(), "{status:?}");
    stop.store(true, Ordering::Release);
    watcher.join().unwrap().unwrap();
    assert_eq!(captured(&s).len(), 13 + 5);
}

#[test]
fn a_write_to_chat_db_wakes_the_relay_before_its_poll_bound() {
    // The poll bound and the backstop are an hour: only the OS's file-change notification can
    // bring the new rows in within the test's minute.
    let (s, agent, _mac, world) = setup();
    let stop = Arc::new(AtomicBool::new(false));
    let captured_so_far = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let watcher = {
        let (agent, stop, count, opts) = (agent.clone(), stop.clone(), captured_so_far.clone(), options(&world));
        std::thread::spawn(move || {
            let hour = std::time::Duration::from_secs(3600);
            let pacing = imessage::WatchOptions { poll: hour, backstop: hour, upload_deadline: None };
            tokio_rt().block_on(imessage::watch(&agent, &opts, &pacing, &stop, |outcome| {
                if let Ok(r) = outcome {
                    count.fetch_add(r.captured, Ordering::AcqRel);
                }
            }))
        })
    };
    let wait_for = |n: u64| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while captured_so_far.load(Ordering::Acquire) < n {
            assert!(std::time::Instant::now() < deadline, "{} of {n} captured", captured_so_far.load(Ordering::Acquire));
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    };
    wait_for(13); // the first pass runs at once
    World::more_messages(&world.db, "NOTIFIED", 3);
    wait_for(16);
    // Stopping waits for the loop's next wake-up: a write wakes it.
    stop.store(true, Ordering::Release);
    World::more_messages(&world.db, "AFTER-STOP", 1);
    watcher.join().unwrap().unwrap();
    assert!(captured(&s).len() >= 16);
}
