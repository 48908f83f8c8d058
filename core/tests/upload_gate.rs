//! Upload obeys network policy before it touches the network, and pins are computed the
//! standard way (SHA-256 of the certificate's SubjectPublicKeyInfo).

mod support;

use std::time::Duration;

use sha2::{Digest, Sha256};
use support::*;
use verbatim_core::model::*;
use verbatim_core::policy::Value;
use verbatim_core::upload::{NetworkState, StopReason, UploadOptions};

async fn one_message(agent: &verbatim_core::Agent) {
    let e = Event::Message(Message {
        meta: EventMeta {
            channel: Channel::Sms,
            line: verbatim_core::synth::BUSINESS_LINE.into(),
            conversation_id: "c".into(),
            source_id: "m1".into(),
            source_time_ms: 1_767_225_600_000,
        },
        direction: Direction::Outbound,
        sender: verbatim_core::synth::BUSINESS_LINE.into(),
        recipients: vec!["+442079460001".into()],
        text: "hi".into(),
        attachment_ids: vec![],
        reply_to: None,
    });
    agent.capture(e).await.unwrap();
}

#[tokio::test]
async fn offline_metered_and_roaming_block_upload_as_policy_says() {
    let s = Setup::new();
    let agent = s.open();
    // An address nothing listens on: if the gate failed, the report would say Error, not these.
    let tree = verbatim_core::synth::sample_policy(
        "https://127.0.0.1:9",
        &s.public,
        TOKEN,
        &[("upload_network", Value::String("unmetered".into()))],
    );
    agent.apply_policy(&tree).await.unwrap();
    one_message(&agent).await;
    let pending = agent.status().queue_records;

    let cases = [
        (NetworkState::Offline, StopReason::Offline),
        (NetworkState::Metered, StopReason::NotAllowed),
        (NetworkState::Roaming, StopReason::NotAllowed),
    ];
    for (network, expected) in cases {
        let report = agent.upload(UploadOptions::new(Duration::from_secs(5), network)).await;
        assert_eq!(report.stopped, expected, "{network:?}: {report:?}");
        assert_eq!(report.records_sent, 0);
        assert!(report.elapsed_ms < 1000);
    }
    assert_eq!(agent.status().queue_records, pending);
    assert!(agent.status().upload.last_attempt_ms.is_none(), "no attempt was made");

    // Roaming is refused even on an "any network" policy unless roaming is allowed.
    let tree = verbatim_core::synth::sample_policy(
        "https://127.0.0.1:9",
        &s.public,
        TOKEN,
        &[("upload_network", Value::String("any".into()))],
    );
    agent.apply_policy(&tree).await.unwrap();
    let report = agent.upload(UploadOptions::new(Duration::from_secs(5), NetworkState::Roaming)).await;
    assert_eq!(report.stopped, StopReason::NotAllowed);
    assert!(report.detail.unwrap().contains("upload_allow_roaming"));
}

#[tokio::test]
async fn an_unreachable_archive_ends_the_session_before_its_deadline() {
    let s = Setup::new();
    let agent = s.open();
    let tree = verbatim_core::synth::sample_policy("https://127.0.0.1:9", &s.public, TOKEN, &[]);
    agent.apply_policy(&tree).await.unwrap();
    one_message(&agent).await;
    let started = std::time::Instant::now();
    let report = agent.upload(UploadOptions::new(Duration::from_millis(1500), NetworkState::Unmetered)).await;
    assert!(started.elapsed() < Duration::from_millis(1500), "returned after the deadline: {report:?}");
    assert_eq!(report.stopped, StopReason::Deadline, "{report:?}");
    assert!(report.retries >= 1);
    let status = agent.status();
    assert!(status.upload.last_error.unwrap().contains("connection failed"));
    assert!(status.upload.next_retry_ms.is_some());
    assert_eq!(status.acked_through, 0, "nothing deleted");
}

#[test]
fn pins_are_sha256_of_the_subject_public_key_info() {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap().self_signed(&key).unwrap();
    use rcgen::PublicKeyData;
    let expected: [u8; 32] = Sha256::digest(key.subject_public_key_info()).into();
    assert_eq!(verbatim_core::upload::tls::spki_sha256(cert.der()), Some(expected));
}

#[tokio::test]
async fn after_a_restart_capture_works_at_once_and_upload_waits_for_the_token_never_stored() {
    let s = Setup::new();
    let agent = s.open();
    // Nothing listens here: the refusal below must come before any connection attempt.
    let tree = verbatim_core::synth::sample_policy("https://127.0.0.1:9", &s.public, TOKEN, &[]);
    agent.apply_policy(&tree).await.unwrap();
    one_message(&agent).await;
    agent.close().await.unwrap();
    drop(agent);
    let stored = all_files(s.dir.path());
    assert!(!stored.iter().any(|(_, bytes)| contains(bytes, TOKEN.as_bytes())), "the token is on disk");

    // Restarted: the kept policy is in force for capture, without the token.
    let agent = s.open();
    assert!(agent.status().configured);
    let applied_before = policy_applied_count(&s);
    let e = Event::Message(Message {
        meta: EventMeta {
            channel: Channel::Sms,
            line: verbatim_core::synth::BUSINESS_LINE.into(),
            conversation_id: "c".into(),
            source_id: "m2".into(),
            source_time_ms: 1_767_225_600_000,
        },
        direction: Direction::Inbound,
        sender: "+442079460001".into(),
        recipients: vec![verbatim_core::synth::BUSINESS_LINE.into()],
        text: "after the restart".into(),
        attachment_ids: vec![],
        reply_to: None,
    });
    agent.capture(e).await.unwrap();
    let report = agent.upload(UploadOptions::new(Duration::from_secs(5), NetworkState::Unmetered)).await;
    assert_eq!(report.stopped, StopReason::Error, "{report:?}");
    assert_eq!(report.error_kind.map(|k| k.as_str()), Some("not_configured"), "{report:?}");
    let detail = report.detail.unwrap_or_default();
    assert!(detail.contains("apply the managed configuration"), "{detail}");
    assert!(agent.status().upload.last_attempt_ms.is_none(), "no connection was attempted");

    // The platform layer applies the same configuration: recognised as unchanged (no new
    // PolicyApplied in the chain), and upload proceeds to the network (nothing listens here,
    // so it stops on a network error, past the token check).
    agent.apply_policy(&tree).await.unwrap();
    assert_eq!(policy_applied_count(&s), applied_before, "the same configuration is not applied anew");
    let report = agent.upload(UploadOptions::new(Duration::from_secs(2), NetworkState::Unmetered)).await;
    assert_ne!(report.error_kind.map(|k| k.as_str()), Some("not_configured"), "{report:?}");
    assert!(agent.status().upload.last_attempt_ms.is_some(), "upload went to the network");
    agent.close().await.unwrap();
}

fn policy_applied_count(s: &Setup) -> usize {
    open_all(s)
        .iter()
        .filter(|(_, r)| {
            matches!(&r.body, verbatim_core::record::RecordBody::Agent(verbatim_core::record::AgentEvent::PolicyApplied { .. }))
        })
        .count()
}

/// `status().upload_due_ms`, which the iOS foreground upload waits for: none without a policy,
/// at once when records wait, 30 s after the last session (here one the network refused), at
/// once again after that; the withdrawn policy still uploads what is queued.
#[tokio::test]
async fn the_app_may_upload_on_its_own_within_policy() {
    let s = Setup::new();
    let clock = verbatim_core::clock::ManualClock::new(1_767_225_600_000);
    let agent = s.open_with(verbatim_core::AgentOptions { clock: std::sync::Arc::new(clock.clone()), ..Default::default() });
    assert_eq!(agent.status().upload_due_ms, None, "no policy: nowhere to upload to");

    let tree = verbatim_core::synth::sample_policy("https://127.0.0.1:9", &s.public, TOKEN, &[]);
    agent.apply_policy(&tree).await.unwrap();
    one_message(&agent).await;
    assert!(agent.status().queue_records > 0);
    assert_eq!(agent.status().upload_due_ms, Some(clock.now()), "records wait: at once");

    let report = agent.upload(UploadOptions::new(Duration::from_secs(5), NetworkState::Offline)).await;
    assert_eq!(report.stopped, StopReason::Offline);
    let spacing = verbatim_core::upload::APP_UPLOAD_SPACING.as_millis() as i64;
    assert_eq!(agent.status().upload_due_ms, Some(clock.now() + spacing), "spaced after the last session");
    clock.advance(spacing);
    assert_eq!(agent.status().upload_due_ms, Some(clock.now()));

    assert!(agent.withdraw_policy().await.unwrap());
    assert!(!agent.status().configured);
    assert_eq!(agent.status().upload_due_ms, Some(clock.now()), "the queue keeps uploading after a withdrawal");
}
