//! Fault injection: every fault leaves the archive consistent, and a device that resends what
//! was not acknowledged ends with everything stored exactly once.

mod support;

use std::time::Duration;

use support::*;
use verbatim_core::wire::Cursor;
use verbatim_receiver::{Fault, FaultPlan, add_device, verify};

async fn acked(client: &reqwest::Client, url: &str, token: &str) -> u64 {
    let c: Cursor = serde_json::from_str(&cursor(client, url, token, "s-1").await.body).unwrap();
    c.acked_through
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_leaves_nothing_lost_and_nothing_doubled() {
    let dir = tempfile::tempdir().unwrap();
    let plan = FaultPlan::new();
    let mut cfg = config(dir.path());
    cfg.faults = Some(plan.clone());
    let rx = start(cfg).await;
    assert!(rx.faults().is_some());
    let token = add_device(&tokens_path(dir.path()), "acme", "dev-1").unwrap();
    let client = client(rx.ca_pem().unwrap());
    let (url, t) = (rx.url(), token.expose().to_string());
    let mut dev = Device::new(&archive_keys(), "acme", "dev-1", "s-1");
    dev.push_n(12);
    let batch = dev.batch(1, 3);
    let body = || batch.encode();

    // Crash before commit: the connection drops, nothing is acknowledged or kept.
    plan.crash_before_commit();
    assert!(post_raw(&client, &url, Some(&t), verbatim_core::wire::CONTENT_TYPE, body()).await.is_err());
    assert_eq!(acked(&client, &url, &t).await, 0);
    let ack = post(&client, &url, &t, &batch).await.ack();
    assert_eq!((ack.acked_through, ack.stored, ack.duplicates), (3, 3, 0));

    // Committed, then the connection drops: the resend finds duplicates.
    plan.drop_after_commit();
    assert!(post_raw(&client, &url, Some(&t), verbatim_core::wire::CONTENT_TYPE, dev.batch(4, 6).encode()).await.is_err());
    assert_eq!(acked(&client, &url, &t).await, 6);
    let ack = post(&client, &url, &t, &dev.batch(4, 6)).await.ack();
    assert_eq!((ack.acked_through, ack.stored, ack.duplicates), (6, 0, 3));

    // Dropped mid-body: nothing stored.
    plan.drop_connection();
    assert!(post_raw(&client, &url, Some(&t), verbatim_core::wire::CONTENT_TYPE, dev.batch(7, 9).encode()).await.is_err());
    assert_eq!(acked(&client, &url, &t).await, 6);

    // Injected statuses, with and without Retry-After; nothing stored.
    plan.status(503, Some(7)).status(429, Some(2)).status(500, None);
    let r = post(&client, &url, &t, &dev.batch(7, 9)).await;
    assert_eq!((r.status, r.retry_after.as_deref(), r.error().error.as_str()), (503, Some("7"), "unavailable"));
    let r = post(&client, &url, &t, &dev.batch(7, 9)).await;
    assert_eq!((r.status, r.retry_after.as_deref(), r.error().error.as_str()), (429, Some("2"), "rate_limited"));
    let r = post(&client, &url, &t, &dev.batch(7, 9)).await;
    assert_eq!((r.status, r.retry_after.as_deref()), (500, None));
    assert_eq!(acked(&client, &url, &t).await, 6);

    // A 200 that is not JSON: stored, and the resend counts duplicates.
    plan.garbage_body();
    let r = post(&client, &url, &t, &dev.batch(7, 9)).await;
    assert_eq!(r.status, 200);
    assert!(serde_json::from_str::<verbatim_core::wire::BatchAck>(&r.body).is_err());
    let ack = post(&client, &url, &t, &dev.batch(7, 9)).await.ack();
    assert_eq!((ack.acked_through, ack.stored, ack.duplicates), (9, 0, 3));

    // Delay, then a normal answer.
    plan.push(Fault::Delay(Duration::from_millis(200)));
    assert_eq!(post(&client, &url, &t, &dev.batch(10, 12)).await.ack().acked_through, 12);

    assert_eq!(plan.pending(), 0);
    assert_eq!(plan.applied(), 8);
    rx.shutdown().await;
    let report = verify(dir.path()).unwrap();
    assert!(report.ok(), "{}", report.to_text());
    assert_eq!(report.totals.records, 12);
}

#[test]
fn a_background_receiver_serves_callers_without_a_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let bg = verbatim_receiver::Receiver::start_in_background(config(dir.path())).unwrap();
    assert!(bg.ca_pem().unwrap().contains("BEGIN CERTIFICATE"));
    assert!(bg.ca_path().unwrap().exists());
    let token = add_device(&tokens_path(dir.path()), "acme", "dev-1").unwrap();
    let mut dev = Device::new(&archive_keys(), "acme", "dev-1", "s-1");
    dev.push_n(2);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = rt.block_on(async { client(bg.ca_pem().unwrap()) });
    let ack = rt.block_on(post(&client, &bg.url(), token.expose(), &dev.batch(1, 2))).ack();
    assert_eq!(ack.acked_through, 2);
    bg.shutdown();
    assert!(verify(dir.path()).unwrap().ok());
}
