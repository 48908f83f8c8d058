//! Compliance evidence: heartbeats, could-not-record windows with cause and interval, the
//! host app's report of uncaptured communications, the client-notice schedule, stale pending
//! data, and unenroll's refusal to destroy what the archive does not hold.

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::*;
use verbatim_core::clock::ManualClock;
use verbatim_core::model::*;
use verbatim_core::policy::Value;
use verbatim_core::record::{AgentEvent, RecordBody};
use verbatim_core::synth::BUSINESS_LINE;
use verbatim_core::upload::{NetworkState, UploadOptions};
use verbatim_core::{Agent, AgentOptions, CaptureOutcome, ErrorKind};

const T0: i64 = 1_767_225_600_000;
const HOUR: i64 = 3600 * 1000;

fn meta(n: u32, channel: Channel) -> EventMeta {
    EventMeta {
        channel,
        line: BUSINESS_LINE.into(),
        conversation_id: format!("conv-{channel}"),
        source_id: format!("m-{n}"),
        source_time_ms: T0 + n as i64,
    }
}

fn message(n: u32, channel: Channel) -> Event {
    Event::Message(Message {
        meta: meta(n, channel),
        direction: Direction::Outbound,
        sender: BUSINESS_LINE.into(),
        recipients: vec!["+442079460001".into()],
        text: "hello".into(),
        attachment_ids: vec![],
        reply_to: None,
    })
}

fn clocked(s: &Setup, clock: &ManualClock) -> Agent {
    s.open_with(AgentOptions { clock: Arc::new(clock.clone()), ..Default::default() })
}

fn story(s: &Setup) -> Vec<AgentEvent> {
    open_all(s)
        .into_iter()
        .filter_map(|(_, r)| match r.body {
            RecordBody::Agent(e) => Some(e),
            _ => None,
        })
        .collect()
}

fn unavailable(s: &Setup) -> Vec<(String, i64, i64, u64)> {
    story(s)
        .into_iter()
        .filter_map(|e| match e {
            AgentEvent::CaptureUnavailable { cause, start_ms, end_ms, refused, .. } => Some((cause, start_ms, end_ms, refused)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn heartbeats_come_at_the_interval_with_the_counters_since_the_last() {
    let s = Setup::new();
    let clock = ManualClock::new(T0);
    let agent = clocked(&s, &clock);
    agent.apply_policy(&s.policy(&[("heartbeat_hours", Value::Integer(2))])).await.unwrap();
    for n in 0..3 {
        agent.capture(message(n, Channel::Sms)).await.unwrap();
    }
    assert_eq!(agent.capture(message(9, Channel::Wechat)).await.unwrap(), CaptureOutcome::OutOfScope);
    clock.advance(HOUR);
    agent.tick().await.unwrap();
    clock.advance(HOUR + HOUR / 2);
    agent.tick().await.unwrap();
    // Nothing captured for the next interval: a heartbeat still comes, with zero counts.
    clock.advance(2 * HOUR);
    agent.tick().await.unwrap();
    agent.tick().await.unwrap();
    let beats: Vec<_> = story(&s)
        .into_iter()
        .filter_map(|e| match e {
            AgentEvent::Heartbeat { interval_hours, since_ms, captured, out_of_scope, refused } => {
                Some((interval_hours, since_ms, captured, out_of_scope, refused))
            }
            _ => None,
        })
        .collect();
    assert_eq!(beats, [(2, T0, 3, 1, 0), (2, T0 + 2 * HOUR + HOUR / 2, 0, 0, 0)]);
    assert_eq!(agent.status().last_heartbeat_ms, T0 + 4 * HOUR + HOUR / 2);

    // The schedule survives a restart.
    agent.close().await.unwrap();
    drop(agent);
    clock.advance(HOUR);
    let agent = clocked(&s, &clock);
    agent.tick().await.unwrap();
    assert_eq!(story(&s).iter().filter(|e| matches!(e, AgentEvent::Heartbeat { .. })).count(), 2, "not due yet");
    clock.advance(HOUR);
    agent.capture(message(20, Channel::Sms)).await.unwrap(); // capture is an opportunity too
    assert_eq!(story(&s).iter().filter(|e| matches!(e, AgentEvent::Heartbeat { .. })).count(), 3);
}

#[tokio::test]
async fn not_configured_is_evidenced_with_its_interval_and_refusals() {
    let s = Setup::new();
    let clock = ManualClock::new(T0);
    let agent = clocked(&s, &clock);
    assert_eq!(agent.status().unavailable, ["not_configured"]);
    for n in 0..2 {
        assert_eq!(agent.capture(message(n, Channel::Sms)).await.unwrap_err().kind, ErrorKind::NotConfigured);
    }
    clock.advance(10 * 60 * 1000);
    agent.apply_policy(&s.policy(&[])).await.unwrap();
    assert!(agent.status().unavailable.is_empty());
    assert_eq!(unavailable(&s), [("not_configured".to_string(), T0, T0 + 600_000, 2)]);
}

#[tokio::test]
async fn a_full_queue_is_evidenced_from_first_refusal_to_recovery() {
    let s = Setup::new();
    let clock = ManualClock::new(T0);
    let agent = clocked(&s, &clock);
    agent.apply_policy(&s.policy(&[("queue_max_mb", Value::Integer(16))])).await.unwrap();
    let file = s.files.path().join("6mb.bin");
    std::fs::write(&file, vec![1u8; 6 * 1024 * 1024]).unwrap();
    let attach = |n: u32| {
        Event::Attachment(Attachment {
            meta: meta(n, Channel::Sms),
            message_id: None,
            direction: Direction::Outbound,
            sender: BUSINESS_LINE.into(),
            file_name: "6mb.bin".into(),
            mime_type: "application/octet-stream".into(),
            path: file.clone(),
        })
    };
    agent.capture(attach(1)).await.unwrap();
    agent.capture(attach(2)).await.unwrap();
    clock.advance(1000);
    let full_at = clock.now();
    assert_eq!(agent.capture(attach(3)).await.unwrap_err().kind, ErrorKind::QueueFull);
    assert_eq!(agent.capture(attach(4)).await.unwrap_err().kind, ErrorKind::QueueFull);
    assert_eq!(agent.status().unavailable, ["queue_full"]);
    clock.advance(HOUR);
    agent.acknowledge(agent.status().last_seq).await.unwrap();
    agent.capture(message(5, Channel::Sms)).await.unwrap();
    assert!(agent.status().unavailable.is_empty());
    assert_eq!(unavailable(&s), [("queue_full".to_string(), full_at, full_at + HOUR, 2)]);
}

#[tokio::test]
async fn a_full_disk_fails_capture_clearly_keeps_everything_and_recovers() {
    // The disk is emulated by capping the store (SQLite's max_page_count): SQLite then fails
    // writes with SQLITE_FULL, the same error a full file system gives it.
    let s = Setup::new();
    let clock = ManualClock::new(T0);
    let agent = s.open_with(AgentOptions {
        clock: Arc::new(clock.clone()),
        storage_limit_bytes: Some(3 * 1024 * 1024),
        ..AgentOptions::default()
    });
    agent.apply_policy(&s.policy(&[])).await.unwrap();
    let file = s.files.path().join("1mb.bin");
    std::fs::write(&file, vec![2u8; 1024 * 1024]).unwrap();
    let attach = |n: u32| {
        Event::Attachment(Attachment {
            meta: meta(n, Channel::Sms),
            message_id: None,
            direction: Direction::Outbound,
            sender: BUSINESS_LINE.into(),
            file_name: "1mb.bin".into(),
            mime_type: "application/octet-stream".into(),
            path: file.clone(),
        })
    };
    let mut stored = 0;
    let err = loop {
        match agent.capture(attach(stored)).await {
            Ok(_) => stored += 1,
            Err(e) => break e,
        }
        assert!(stored < 10);
    };
    assert_eq!(err.kind, ErrorKind::DiskFull, "{err}");
    assert!(err.detail.contains("full"), "{err}");
    assert!(stored >= 1);
    assert_eq!(agent.status().unavailable, ["disk_full"]);
    // Nothing stored was damaged: the chain verifies and every stored attachment opens.
    let ends = open_all(&s).iter().filter(|(_, r)| matches!(r.body, RecordBody::AttachmentEnd { .. })).count();
    assert_eq!(ends, stored as usize);
    // Space returns (the archive acknowledged, records deleted): capture works again and the
    // outage is evidenced.
    clock.advance(HOUR);
    agent.acknowledge(agent.status().last_seq).await.unwrap();
    agent.capture(message(50, Channel::Sms)).await.unwrap();
    let windows = unavailable(&s);
    assert_eq!(windows.len(), 1, "{windows:?}");
    assert_eq!(windows[0].0, "disk_full");
    assert!(windows[0].2 - windows[0].1 >= HOUR);
}

#[tokio::test]
async fn a_channel_switched_off_by_policy_is_evidenced_until_switched_on() {
    let s = Setup::new();
    let clock = ManualClock::new(T0);
    let agent = clocked(&s, &clock);
    agent.apply_policy(&s.policy(&[])).await.unwrap();
    clock.advance(1000);
    agent
        .apply_policy(&s.policy(&[("capture_channels", Value::String("sms,mms,imessage,signal,telegram,rcs,voice".into()))]))
        .await
        .unwrap();
    assert_eq!(agent.status().unavailable, ["channel_disabled:whatsapp"]);
    assert_eq!(agent.capture(message(1, Channel::Whatsapp)).await.unwrap(), CaptureOutcome::OutOfScope);
    clock.advance(HOUR);
    agent.apply_policy(&s.policy(&[])).await.unwrap();
    let channel_windows: Vec<_> = unavailable(&s).into_iter().filter(|w| w.0 != "not_configured").collect();
    assert_eq!(channel_windows, [("channel_disabled:whatsapp".to_string(), T0 + 1000, T0 + 1000 + HOUR, 1)]);
}

#[tokio::test]
async fn the_app_can_report_a_communication_it_let_through_uncaptured() {
    let s = Setup::new();
    let agent = s.open();
    agent.apply_policy(&s.policy(&[("fail_closed", Value::Bool(false))])).await.unwrap();
    agent.report_uncaptured(&meta(1, Channel::Sms), Direction::Outbound, "capture unavailable: queue full").await.unwrap();
    let err = agent.report_uncaptured(&meta(1, Channel::Sms), Direction::Outbound, " ").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidEvent);
    let reports: Vec<_> = story(&s)
        .into_iter()
        .filter_map(|e| match e {
            AgentEvent::UncapturedCommunication { source_id, reason, fail_closed, .. } => Some((source_id, reason, fail_closed)),
            _ => None,
        })
        .collect();
    assert_eq!(reports, [("m-1".to_string(), "capture unavailable: queue full".to_string(), false)]);
}

#[tokio::test]
async fn the_client_notice_follows_its_mode_and_each_showing_is_captured() {
    let s = Setup::new();
    let clock = ManualClock::new(T0);
    let agent = clocked(&s, &clock);
    let notice = ("disclaimer_text", Value::String("This conversation is recorded.".into()));
    agent.apply_policy(&s.policy(std::slice::from_ref(&notice))).await.unwrap();
    assert_eq!(agent.disclaimer_due(Channel::Sms, "conv-sms"), None, "mode off by default");

    agent.apply_policy(&s.policy(&[notice.clone(), ("disclaimer_mode", Value::String("first_message".into()))])).await.unwrap();
    assert_eq!(agent.disclaimer_due(Channel::Sms, "conv-sms").as_deref(), Some("This conversation is recorded."));
    agent.disclaimer_shown(meta(1, Channel::Sms)).await.unwrap();
    assert_eq!(agent.disclaimer_due(Channel::Sms, "conv-sms"), None);
    assert!(agent.disclaimer_due(Channel::Whatsapp, "conv-whatsapp").is_some(), "per conversation");
    clock.advance(48 * HOUR);
    assert_eq!(agent.disclaimer_due(Channel::Sms, "conv-sms"), None, "first message only");

    agent.apply_policy(&s.policy(&[notice, ("disclaimer_mode", Value::String("daily".into()))])).await.unwrap();
    assert_eq!(agent.disclaimer_due(Channel::Sms, "conv-sms").as_deref(), Some("This conversation is recorded."), "a new day");
    agent.disclaimer_shown(meta(2, Channel::Sms)).await.unwrap();
    assert_eq!(agent.disclaimer_due(Channel::Sms, "conv-sms"), None);
    clock.advance(24 * HOUR);
    assert!(agent.disclaimer_due(Channel::Sms, "conv-sms").is_some());

    let shown: Vec<_> = open_all(&s)
        .into_iter()
        .filter_map(|(_, r)| match r.body {
            RecordBody::DisclaimerShown { meta, text, .. } => Some((meta.conversation_id, text)),
            _ => None,
        })
        .collect();
    assert_eq!(shown.len(), 2);
    assert!(shown.iter().all(|(c, t)| c == "conv-sms" && t == "This conversation is recorded."));
    // No conversation id at rest in the schedule.
    assert!(all_files(s.dir.path()).iter().all(|(_, b)| !contains(b, b"conv-sms")));
}

#[tokio::test]
async fn pending_data_older_than_policy_allows_raises_an_alert_not_a_deletion() {
    let s = Setup::new();
    let clock = ManualClock::new(T0);
    let agent = clocked(&s, &clock);
    agent.apply_policy(&s.policy(&[("pending_alert_hours", Value::Integer(1))])).await.unwrap();
    agent.capture(message(1, Channel::Sms)).await.unwrap();
    clock.advance(2 * HOUR);
    agent.tick().await.unwrap();
    agent.tick().await.unwrap();
    assert!(agent.status().pending_stale);
    let stale: Vec<_> = story(&s).into_iter().filter(|e| matches!(e, AgentEvent::PendingStale { hours: 1, .. })).collect();
    assert_eq!(stale.len(), 1, "once per crossing");
    assert!(agent.status().queue_records > 0, "nothing deleted for age");
    agent.acknowledge(agent.status().last_seq).await.unwrap();
    agent.tick().await.unwrap();
    assert!(!agent.status().pending_stale);
}

#[tokio::test]
async fn unenroll_keeps_what_the_archive_does_not_hold_unless_forced() {
    let s = Setup::new();
    let agent = s.open();
    // Nothing listens there: nothing can be acknowledged.
    let tree = verbatim_core::synth::sample_policy("https://127.0.0.1:9", &s.public, TOKEN, &[]);
    agent.apply_policy(&tree).await.unwrap();
    agent.capture(message(1, Channel::Sms)).await.unwrap();
    let report = agent.unenroll(UploadOptions::new(Duration::from_millis(500), NetworkState::Unmetered), false).await.unwrap();
    assert!(!report.shredded && report.unsent_records > 0);
    assert!(s.dir.path().join(verbatim_core::queue::DB_FILE).exists(), "data kept");
    assert!(agent.status().capture_enabled, "still capturing");
    let story_now = story(&s);
    assert!(story_now.iter().any(|e| matches!(e, AgentEvent::Unenrolling { forced: false, .. })));

    // The MDM's selective wipe: only with the explicit flag.
    let report = agent.unenroll(UploadOptions::new(Duration::from_millis(100), NetworkState::Offline), true).await.unwrap();
    assert!(report.shredded && report.forced && report.unsent_records > 0);
    for name in verbatim_core::queue::STORE_FILES {
        assert!(!s.dir.path().join(name).exists(), "{name} left behind");
    }
    assert_eq!(agent.capture(message(2, Channel::Sms)).await.unwrap_err().kind, ErrorKind::Closed);
}

#[tokio::test]
async fn a_withdrawn_policy_fails_capture_closed_until_a_policy_returns_across_restarts() {
    let s = Setup::new();
    let clock = ManualClock::new(T0);
    let agent = clocked(&s, &clock);
    assert!(!agent.withdraw_policy().await.unwrap(), "nothing to withdraw before a policy");
    agent.apply_policy(&s.policy(&[])).await.unwrap();
    agent.capture(message(1, Channel::Sms)).await.unwrap();
    let queued = agent.status().queue_records;

    clock.advance(1000);
    assert!(agent.withdraw_policy().await.unwrap());
    assert!(!agent.withdraw_policy().await.unwrap(), "a second withdrawal records nothing");
    let status = agent.status();
    assert!(!status.configured && !status.capture_enabled);
    assert_eq!(status.unavailable, ["policy_withdrawn"]);
    assert!(status.not_configured_reason.unwrap().contains("removed the managed configuration"));
    assert_eq!(status.queue_records, queued + 1, "nothing queued was dropped; the event was added");
    assert!(agent.read_batch(1 << 20).unwrap().is_some(), "the queue still reads for upload");
    assert_eq!(agent.capture(message(2, Channel::Sms)).await.unwrap_err().kind, ErrorKind::NotConfigured);
    assert_eq!(agent.disclaimer_due(Channel::Sms, "conv-sms"), None);

    // A restart keeps capture stopped: the stored policy alone does not resume it.
    agent.close().await.unwrap();
    drop(agent);
    let agent = clocked(&s, &clock);
    assert_eq!(agent.status().unavailable, ["policy_withdrawn"]);
    assert_eq!(agent.capture(message(3, Channel::Sms)).await.unwrap_err().kind, ErrorKind::NotConfigured);

    // The configuration comes back (the same one): capture resumes and the interval, with both
    // refusals, is evidenced.
    clock.advance(HOUR);
    agent.apply_policy(&s.policy(&[])).await.unwrap();
    assert!(agent.status().capture_enabled);
    agent.capture(message(4, Channel::Sms)).await.unwrap();
    let withdrawals: Vec<u64> = story(&s)
        .into_iter()
        .filter_map(|e| match e {
            AgentEvent::PolicyWithdrawn { pending_records, .. } => Some(pending_records),
            _ => None,
        })
        .collect();
    assert_eq!(withdrawals, [queued]);
    let windows: Vec<_> = unavailable(&s).into_iter().filter(|w| w.0 == "policy_withdrawn").collect();
    assert_eq!(windows, [("policy_withdrawn".to_string(), T0 + 1000, T0 + 1000 + HOUR, 2)]);
}
