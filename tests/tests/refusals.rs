//! Refusals are refused AND reported: the session stops with a typed error kind, the status
//! says why, and the agent records the refusal in its own chain, so the archive learns of it
//! once the device can upload again.

use std::time::Duration;

use verbatim_core::record::{AgentEvent, RecordBody};
use verbatim_core::upload::StopReason;
use verbatim_core::{Agent, Value};
use verbatim_tests::*;

/// One session that must stop with `kind`, holding on to everything captured.
async fn refused_with(agent: &Agent, kind: &str) -> String {
    let pending = agent.status().queue_records;
    let report = upload_once(agent).await;
    assert_eq!(report.stopped, StopReason::Error, "{report:?}");
    assert_eq!(report.error_kind.map(|k| k.as_str()), Some(kind), "{report:?}");
    assert_eq!(report.records_sent, 0);
    assert_eq!(report.retries, 0, "retrying cannot help: {report:?}");
    let status = agent.status();
    let error = status.upload.last_error.clone().unwrap_or_else(|| panic!("status.upload.last_error is not set: {status:?}"));
    assert!(error.starts_with(kind), "last_error names the kind: {error}");
    assert!(status.queue_records > pending, "the refusal itself was recorded in the queue");
    assert_eq!(status.acked_through, 0, "nothing deleted");
    error
}

/// The archive holds no stream at all.
fn archive_is_empty(world: &World) {
    let report = world.verify();
    assert!(report.streams.is_empty(), "something was stored: {}", report.to_text());
}

fn upload_refusals(exported: &Exported) -> Vec<String> {
    exported
        .agent_events()
        .into_iter()
        .filter_map(|e| match e {
            AgentEvent::UploadRefused { reason } => Some(reason),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_is_refused_and_the_refusal_reaches_the_archive_later() {
    let world = World::start().await;
    // A well-formed token this receiver never issued (another receiver's, or a revoked one).
    let stranger = tempfile::tempdir().unwrap();
    let wrong = verbatim_receiver::add_device(&stranger.path().join("tokens.jsonl"), TENANT, DEVICE).unwrap();
    let agent = Agent::open(&world.device_dir(), Default::default()).unwrap();
    agent.apply_policy(&world.policy_with_token(wrong.expose(), &[])).await.unwrap();
    let mut captured = world.capture(&agent, 41, 20).await;

    let error = refused_with(&agent, "unauthorized").await;
    assert!(error.contains("401"), "{error}");
    assert!(!error.contains(wrong.expose()), "the token never shows in an error");
    archive_is_empty(&world);

    // The MDM pushes the right token: the same stream uploads, refusal included.
    agent.apply_policy(&world.policy(&[])).await.unwrap();
    captured.extend(world.capture(&agent, 42, 5).await);
    upload_until_done(&agent, 2).await;
    let last_seq = agent.status().last_seq;
    agent.close().await.unwrap();
    world.assert_archive_complete(last_seq);
    let exported = world.export();
    exported.assert_exactly_once(&captured);
    let refusals = upload_refusals(&exported);
    assert_eq!(refusals.len(), 1, "recorded once: {refusals:?}");
    assert!(refusals[0].starts_with("unauthorized") && refusals[0].contains("401"), "{refusals:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_of_another_tenants_device_is_refused() {
    let world = World::start().await;
    let others = world.receiver.issue_token("other-firm", "dev-theirs");
    let agent = Agent::open(&world.device_dir(), Default::default()).unwrap();
    agent.apply_policy(&world.policy_with_token(others.expose(), &[])).await.unwrap();
    let captured = world.capture(&agent, 43, 20).await;

    let error = refused_with(&agent, "unauthorized").await;
    assert!(error.contains("403"), "{error}");
    archive_is_empty(&world);

    agent.apply_policy(&world.policy(&[])).await.unwrap();
    upload_until_done(&agent, 2).await;
    let last_seq = agent.status().last_seq;
    agent.close().await.unwrap();
    world.assert_archive_complete(last_seq);
    let exported = world.export();
    exported.assert_exactly_once(&captured);
    let refusals = upload_refusals(&exported);
    assert!(refusals.len() == 1 && refusals[0].contains("403"), "{refusals:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_of_another_device_of_the_same_tenant_is_refused() {
    let world = World::start().await;
    let colleague = world.receiver.issue_token(TENANT, "dev-colleague");
    let agent = Agent::open(&world.device_dir(), Default::default()).unwrap();
    agent.apply_policy(&world.policy_with_token(colleague.expose(), &[])).await.unwrap();
    world.capture(&agent, 44, 10).await;
    let error = refused_with(&agent, "unauthorized").await;
    assert!(error.contains("403"), "{error}");
    archive_is_empty(&world);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_certificate_from_another_ca_is_refused_as_tls() {
    let world = World::start().await;
    let agent = world.device(&[("archive_ca_pem", s(&unrelated_ca_pem()))]).await;
    let captured = world.capture(&agent, 45, 20).await;
    let error = refused_with(&agent, "tls").await;
    assert!(error.contains("not trusted"), "{error}");
    archive_is_empty(&world);

    // Trusting the right CA again, everything (and the refusal) goes through.
    agent.apply_policy(&world.policy(&[])).await.unwrap();
    upload_until_done(&agent, 2).await;
    agent.close().await.unwrap();
    let exported = world.export();
    exported.assert_exactly_once(&captured);
    let refusals = upload_refusals(&exported);
    assert!(refusals.len() == 1 && refusals[0].starts_with("tls"), "{refusals:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pin_mismatch_is_refused_and_reported_as_such() {
    let world = World::start().await;
    let pins = Value::List(vec![s(&unrelated_pin())]);
    let agent = world.device(&[("tls_pins", pins)]).await;
    world.capture(&agent, 46, 20).await;
    let error = refused_with(&agent, "pin_mismatch").await;
    assert!(error.contains("tls_pins"), "{error}");
    archive_is_empty(&world);

    // The evidence is in the device's queue, sealed to the archive: only the archive can read it.
    agent.close().await.unwrap();
    let events: Vec<AgentEvent> = open_queue(&world.device_dir(), &world.key)
        .into_iter()
        .map(|(seq, r)| r.unwrap_or_else(|e| panic!("queue record {seq} does not open: {e}")))
        .filter_map(|r| match r.body {
            RecordBody::Agent(e) => Some(e),
            _ => None,
        })
        .collect();
    let mismatches: Vec<_> = events.iter().filter(|e| matches!(e, AgentEvent::TlsPinMismatch { .. })).collect();
    assert_eq!(mismatches.len(), 1, "{events:?}");
    assert!(matches!(mismatches[0], AgentEvent::TlsPinMismatch { host } if host == "127.0.0.1"), "{mismatches:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pin_of_the_servers_own_key_lets_upload_through() {
    let world = World::start().await;
    // Computed from the server's private key, independently of the core's certificate parser,
    // and checked against the certificate the receiver presents.
    let pin = pin_of_key_pem(&world.receiver.server_key_pem());
    assert_eq!(pin, pin_of_cert_pem(&world.receiver.server_cert_pem()));
    // A wrong pin next to the right one does no harm (pin sets allow key rotation).
    let pins = Value::List(vec![s(&unrelated_pin()), s(&pin)]);
    let agent = world.device(&[("tls_pins", pins)]).await;
    let captured = world.capture(&agent, 47, 20).await;
    let reports = upload_until_done(&agent, 1).await;
    assert_eq!(reports[0].retries, 0);
    agent.close().await.unwrap();
    world.export().assert_exactly_once(&captured);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pin_of_the_archive_ca_lets_upload_through() {
    let world = World::start().await;
    let pin = pin_of_cert_pem(world.receiver.ca_pem());
    let agent = world.device(&[("tls_pins", Value::List(vec![s(&pin)]))]).await;
    let captured = world.capture(&agent, 48, 20).await;
    let report = upload_once(&agent).await;
    assert_eq!(report.stopped, StopReason::Done, "pinning the CA the policy trusts must work: {report:?}");
    agent.close().await.unwrap();
    world.export().assert_exactly_once(&captured);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_is_recorded_once_however_often_it_repeats() {
    let world = World::start().await;
    let others = world.receiver.issue_token("other-firm", "dev-theirs");
    let agent = Agent::open(&world.device_dir(), Default::default()).unwrap();
    agent.apply_policy(&world.policy_with_token(others.expose(), &[])).await.unwrap();
    world.capture(&agent, 49, 5).await;
    refused_with(&agent, "unauthorized").await;
    let after_first = agent.status().last_seq;
    for _ in 0..3 {
        let r = agent.upload(upload_options(Duration::from_secs(5), RecordingPause::instant())).await;
        assert_eq!(r.error_kind.map(|k| k.as_str()), Some("unauthorized"));
    }
    assert_eq!(agent.status().last_seq, after_first, "a repeated refusal does not fill the queue with events");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_sealed_to_a_key_the_archive_does_not_accept_are_kept_reported_and_not_asked_again_in_a_loop() {
    use std::sync::Arc;

    use verbatim_core::clock::{Clock, ManualClock, SystemClock};
    use verbatim_core::seal::key_id;
    use verbatim_core::upload::ARCHIVE_KEY_REFUSAL_WAIT;
    use verbatim_core::{AgentOptions, ErrorKind};
    use verbatim_receiver::AcceptedKeys;

    let mut world = World::start().await;
    // The MDM pushed a policy with a key the archive does not hold (an old or a staging key).
    let wrong = ArchiveKey::generate();
    let wrong_b64 = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(wrong.public)
    };
    let clock = ManualClock::new(SystemClock::default().now_ms());
    let agent = Agent::open(&world.device_dir(), AgentOptions { clock: Arc::new(clock.clone()), ..Default::default() }).unwrap();
    let policy = world.policy(&[("archive_public_key", s(&wrong_b64)), ("archive_key_id", s(&key_id(&wrong.public)))]);
    agent.apply_policy(&policy).await.unwrap();
    let captured = world.capture(&agent, 45, 20).await;

    let error = refused_with(&agent, ErrorKind::UnknownArchiveKey.as_str()).await;
    assert!(error.contains(&key_id(&wrong.public)), "names the refused key id: {error}");
    assert!(agent.status().upload.archive_key_refused, "status shows it");
    // The archive stored no record, and keeps an alert naming the key id.
    let report = world.verify();
    assert_eq!(report.totals.records, 0, "{}", report.to_text());
    let alert_kinds = |r: &verbatim_receiver::verify::Report| -> Vec<String> {
        r.streams.iter().flat_map(|s| s.alerts.iter().map(|a| a.kind.clone())).collect()
    };
    assert_eq!(alert_kinds(&report), ["unknown_archive_key"], "{}", report.to_text());

    // The next background window does not ask again: with the archive unreachable, a session
    // that asked would have met a connection failure; this one stops at once with the refusal.
    world.receiver.stop().await;
    let again = upload_once(&agent).await;
    assert_eq!(again.error_kind.map(|k| k.as_str()), Some("unknown_archive_key"), "{again:?}");
    assert_eq!((again.records_sent, again.retries), (0, 0), "{again:?}");
    assert_eq!(agent.status().acked_through, 0, "every record is kept");

    // The archive operator adds the key the records were sealed to; after the wait the device
    // asks again and everything is archived, the refusal included.
    world.receiver.restart_accepting(AcceptedKeys::from_public_keys([&world.key.public, &wrong.public])).await;
    clock.advance(ARCHIVE_KEY_REFUSAL_WAIT.as_millis() as i64 + 1000);
    upload_until_done(&agent, 2).await;
    assert!(!agent.status().upload.archive_key_refused, "cleared once the archive accepts");
    let last_seq = agent.status().last_seq;
    agent.close().await.unwrap();
    let report = world.verify();
    let stream = &report.streams[0];
    assert_eq!((stream.records, stream.contiguous_through), (last_seq, last_seq), "{}", report.to_text());
    assert!(stream.chain_verified && stream.gaps.is_empty(), "{}", report.to_text());
    assert_eq!(alert_kinds(&report), ["unknown_archive_key"], "the refusal stays on record: {}", report.to_text());
    let exported = export_archive(&world.archive_dir(), &wrong, &world.dir.path().join("export-wrong-key"));
    exported.assert_exactly_once(&captured);
    let refusals = upload_refusals(&exported);
    assert_eq!(refusals.len(), 1, "recorded once: {refusals:?}");
    assert!(refusals[0].starts_with("unknown_archive_key"), "{refusals:?}");
}
