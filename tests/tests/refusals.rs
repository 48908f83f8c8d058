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
    assert_eq!(report.error_kind.as_deref(), Some(kind), "{report:?}");
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
        assert_eq!(r.error_kind.as_deref(), Some("unauthorized"));
    }
    assert_eq!(agent.status().last_seq, after_first, "a repeated refusal does not fill the queue with events");
}
