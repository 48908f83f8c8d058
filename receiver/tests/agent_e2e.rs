//! The core's own agent and uploader against this receiver: capture a synthetic workload,
//! upload through injected faults, then verify and export. Catches any drift between the
//! protocol as the device speaks it and as the receiver implements it.

mod support;

use std::time::Duration;

use support::*;
use verbatim_core::synth::{Workload, WorkloadOptions, sample_policy};
use verbatim_core::upload::{NetworkState, StopReason, UploadOptions};
use verbatim_core::{Agent, AgentOptions, CaptureOutcome, Event, Value};
use verbatim_receiver::{FaultPlan, add_device, export, verify};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_core_agent_uploads_through_faults_and_everything_exports() {
    let dir = tempfile::tempdir().unwrap();
    let plan = FaultPlan::new();
    let mut cfg = config(&dir.path().join("archive"));
    cfg.faults = Some(plan.clone());
    let rx = start(cfg).await;
    let archive = archive_keys();
    let token = add_device(&tokens_path(&dir.path().join("archive")), "acme-securities", "dev-e2e").unwrap();

    let agent = Agent::open(&dir.path().join("device"), AgentOptions::default()).unwrap();
    let s = |v: &str| Value::String(v.to_string());
    let policy = sample_policy(
        &rx.url(),
        &archive.public,
        token.expose(),
        &[("device_id", s("dev-e2e")), ("archive_ca_pem", s(rx.ca_pem().unwrap())), ("max_batch_kb", s("128"))],
    );
    agent.apply_policy(&policy).await.unwrap();

    std::fs::create_dir_all(dir.path().join("files")).unwrap();
    let mut workload = Workload::new(WorkloadOptions::new(11, &dir.path().join("files"))).unwrap();
    let mut messages = 0;
    for _ in 0..60 {
        let ev = workload.next_event().unwrap();
        let is_message = matches!(ev.event, Event::Message(_));
        if let CaptureOutcome::Captured { .. } = agent.capture(ev.event).await.unwrap() {
            messages += u64::from(is_message);
        }
    }

    plan.crash_before_commit().drop_after_commit().status(503, Some(0)).garbage_body().drop_connection();
    let mut report = None;
    for _ in 0..5 {
        let r = agent.upload(UploadOptions::new(Duration::from_secs(60), NetworkState::Unmetered)).await;
        let done = r.stopped == StopReason::Done;
        report = Some(r);
        if done {
            break;
        }
    }
    let report = report.unwrap();
    assert_eq!(report.stopped, StopReason::Done, "{report:?}");
    assert_eq!(plan.pending(), 0, "every fault was met");
    assert_eq!(agent.snapshot().pending_count, 0);
    let acked = agent.snapshot().acked_through;
    agent.close().await.unwrap();
    rx.shutdown().await;

    let v = verify(&dir.path().join("archive")).unwrap();
    assert!(v.ok(), "{}", v.to_text());
    assert_eq!(v.streams[0].contiguous_through, acked);
    let summary = export(&dir.path().join("archive"), &archive.secret, &dir.path().join("out")).unwrap();
    assert!(summary.ok(), "{}", summary.to_text());
    assert_eq!(summary.records, acked);
    assert_eq!(summary.messages, messages);
}
