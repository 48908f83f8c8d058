//! The upload API over real TLS on 127.0.0.1: acknowledgement, idempotency, continuity,
//! equivocation, authentication, limits, restart.

mod support;

use std::time::Duration;

use support::*;
use verbatim_core::chain;
use verbatim_core::wire::{Batch, CONTENT_TYPE, Cursor, EpochInfo};
use verbatim_receiver::{FaultPlan, add_device, verify};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_acknowledged_and_resends_are_no_ops() {
    let dir = tempfile::tempdir().unwrap();
    let rx = start(config(dir.path())).await;
    let token = add_device(&tokens_path(dir.path()), "acme", "dev-1").unwrap();
    let client = client(rx.ca_pem().unwrap());
    let archive = archive_keys();
    let mut dev = Device::new(&archive, "acme", "dev-1", "s-1");
    dev.push_n(8);

    // A stream not yet held: 0 and the genesis link.
    let c: Cursor = serde_json::from_str(&cursor(&client, &rx.url(), token.expose(), "s-1").await.body).unwrap();
    assert_eq!((c.acked_through, c.last_link), (0, hex::encode(chain::genesis(&dev.stream))));

    let ack = post(&client, &rx.url(), token.expose(), &dev.batch(1, 5)).await.ack();
    assert_eq!((ack.acked_through, ack.stored, ack.duplicates), (5, 5, 0));
    let ack = post(&client, &rx.url(), token.expose(), &dev.batch(1, 5)).await.ack();
    assert_eq!((ack.acked_through, ack.stored, ack.duplicates), (5, 0, 5));
    // Overlapping: 4 and 5 are duplicates, 6..8 new.
    let ack = post(&client, &rx.url(), token.expose(), &dev.batch(4, 8)).await.ack();
    assert_eq!((ack.acked_through, ack.stored, ack.duplicates), (8, 3, 2));

    let c: Cursor = serde_json::from_str(&cursor(&client, &rx.url(), token.expose(), "s-1").await.body).unwrap();
    assert_eq!((c.tenant.as_str(), c.device.as_str(), c.stream.as_str()), ("acme", "dev-1", "s-1"));
    assert_eq!((c.acked_through, c.last_link), (8, hex::encode(dev.records[7].link)));

    let health = client.get(format!("{}/healthz", rx.url())).send().await.unwrap();
    assert_eq!(health.text().await.unwrap(), "ok");
    let nope = client.get(format!("{}/debug/vars", rx.url())).send().await.unwrap();
    assert_eq!(nope.status(), 404);
    rx.shutdown().await;

    let report = verify(dir.path()).unwrap();
    assert!(report.ok(), "{}", report.to_text());
    assert_eq!((report.streams[0].records, report.streams[0].contiguous_through), (8, 8));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_content_for_a_held_sequence_is_a_conflict_and_an_alert() {
    let dir = tempfile::tempdir().unwrap();
    let rx = start(config(dir.path())).await;
    let token = add_device(&tokens_path(dir.path()), "acme", "dev-1").unwrap();
    let client = client(rx.ca_pem().unwrap());
    let archive = archive_keys();
    let mut dev = Device::new(&archive, "acme", "dev-1", "s-1");
    dev.push_n(4);
    post(&client, &rx.url(), token.expose(), &dev.batch(1, 4)).await.ack();

    // An equivocating device (or a man in the middle) rewrites history from seq 3 on with
    // a perfectly valid chain of its own.
    let mut other = dev.batch(3, 4);
    other.records[0].ciphertext[0] ^= 1;
    other.records[0].link = chain::link(&dev.records[1].link, 3, 1, &other.records[0].ciphertext);
    other.records[1].link = chain::link(&other.records[0].link, 4, 1, &other.records[1].ciphertext);
    let r = post(&client, &rx.url(), token.expose(), &other).await;
    assert_eq!(r.status, 409);
    let e = r.error();
    assert_eq!((e.error.as_str(), e.expected_seq), ("conflict", Some(5)));
    assert!(e.reason.contains("sequence 3"), "{}", e.reason);

    // A new record that does not chain from the held head.
    dev.push_n(1);
    let mut bad = dev.batch(5, 5);
    bad.records[0].link[0] ^= 1;
    let e = post(&client, &rx.url(), token.expose(), &bad).await.error();
    assert_eq!((e.error.as_str(), e.expected_seq), ("conflict", Some(5)));

    // The same epoch announced with another encapsulation.
    let mut reannounced = dev.batch(5, 5);
    reannounced.epochs = vec![EpochInfo { encapsulation: vec![9; 32], ..dev.epoch.clone() }];
    let e = post(&client, &rx.url(), token.expose(), &reannounced).await.error();
    assert_eq!(e.error, "conflict");
    assert!(e.reason.contains("epoch 1"), "{}", e.reason);

    // The honest batch still goes through.
    assert_eq!(post(&client, &rx.url(), token.expose(), &dev.batch(5, 5)).await.ack().acked_through, 5);
    rx.shutdown().await;

    let report = verify(dir.path()).unwrap();
    assert!(!report.ok());
    let s = &report.streams[0];
    assert!(s.chain_verified && s.gaps.is_empty(), "held data stays intact");
    let kinds: Vec<&str> = s.alerts.iter().map(|a| a.kind.as_str()).collect();
    assert_eq!(kinds, ["equivocation", "chain_break", "epoch_conflict"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_is_refused_with_the_expected_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let rx = start(config(dir.path())).await;
    let token = add_device(&tokens_path(dir.path()), "acme", "dev-1").unwrap();
    let client = client(rx.ca_pem().unwrap());
    let mut dev = Device::new(&archive_keys(), "acme", "dev-1", "s-1");
    dev.push_n(6);
    let r = post(&client, &rx.url(), token.expose(), &dev.batch(2, 3)).await;
    assert_eq!(r.status, 409);
    assert_eq!((r.error().error.as_str(), r.error().expected_seq), ("gap", Some(1)));
    post(&client, &rx.url(), token.expose(), &dev.batch(1, 3)).await.ack();
    let e = post(&client, &rx.url(), token.expose(), &dev.batch(5, 6)).await.error();
    assert_eq!((e.error.as_str(), e.expected_seq), ("gap", Some(4)));
    assert_eq!(post(&client, &rx.url(), token.expose(), &dev.batch(4, 6)).await.ack().acked_through, 6);
    rx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_and_authorisation() {
    let dir = tempfile::tempdir().unwrap();
    let rx = start(config(dir.path())).await;
    let tokens = tokens_path(dir.path());
    let t1 = add_device(&tokens, "acme", "dev-1").unwrap();
    let t2 = add_device(&tokens, "acme", "dev-2").unwrap();
    let t3 = add_device(&tokens, "globex", "dev-1").unwrap();
    let client = client(rx.ca_pem().unwrap());
    let mut dev = Device::new(&archive_keys(), "acme", "dev-1", "s-1");
    dev.push_n(1);
    let body = dev.batch(1, 1).encode();
    let url = rx.url();

    let mut wrong = t1.expose().to_string();
    wrong.replace_range(wrong.len() - 4.., "AAAA");
    let unknown_id = format!("vbt1.{}.{}", "0".repeat(32), t1.expose().rsplit('.').next().unwrap());
    let mut answers = Vec::new();
    for token in [None, Some(""), Some("garbage"), Some(wrong.as_str()), Some(unknown_id.as_str())] {
        let r = post_raw(&client, &url, token, CONTENT_TYPE, body.clone()).await.unwrap();
        assert_eq!(r.status, 401);
        answers.push(r.body);
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "one answer for every bad token: {answers:?}");
    // Basic or another scheme is not a bearer token.
    let r = client
        .post(format!("{url}/v1/batches"))
        .basic_auth("acme", Some("x"))
        .header("content-type", CONTENT_TYPE)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(cursor(&client, &url, &wrong, "s-1").await.status, 401);

    // Valid tokens of another device, or another tenant: 403.
    for t in [&t2, &t3] {
        let r = post(&client, &url, t.expose(), &dev.batch(1, 1)).await;
        assert_eq!((r.status, r.error().error.as_str()), (403, "forbidden"));
    }
    // The cursor answers for the token's own device only, whatever the stream name.
    let c: Cursor = serde_json::from_str(&cursor(&client, &url, t3.expose(), "s-1").await.body).unwrap();
    assert_eq!((c.tenant.as_str(), c.device.as_str()), ("globex", "dev-1"));
    assert_eq!(post(&client, &url, t1.expose(), &dev.batch(1, 1)).await.ack().acked_through, 1);
    rx.shutdown().await;

    // The token file holds hashes, never a token or its secret.
    let text = std::fs::read_to_string(&tokens).unwrap();
    for t in [&t1, &t2, &t3] {
        assert!(!text.contains(t.expose()));
        assert!(!text.contains(t.expose().rsplit('.').next().unwrap()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_wrong_type_and_oversize_bodies_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.limits.max_body_bytes = 64 * 1024;
    let rx = start(cfg).await;
    let token = add_device(&tokens_path(dir.path()), "acme", "dev-1").unwrap();
    let client = client(rx.ca_pem().unwrap());
    let url = rx.url();

    let r = post_raw(&client, &url, Some(token.expose()), CONTENT_TYPE, b"NOPE and more".to_vec()).await.unwrap();
    assert_eq!(r.status, 400);
    let e = r.error();
    assert_eq!(e.error, "malformed");
    assert!(e.reason.contains("bad magic"), "{}", e.reason);

    let mut dev = Device::new(&archive_keys(), "acme", "dev-1", "s-1");
    dev.push_n(2);
    let mut truncated = dev.batch(1, 2).encode();
    truncated.truncate(truncated.len() - 3);
    let e = post_raw(&client, &url, Some(token.expose()), CONTENT_TYPE, truncated).await.unwrap().error();
    assert!(e.reason.contains("truncated"), "{}", e.reason);

    let r = post_raw(&client, &url, Some(token.expose()), "application/json", dev.batch(1, 2).encode()).await.unwrap();
    assert_eq!((r.status, r.error().error.as_str()), (415, "malformed"));

    let r = post_raw(&client, &url, Some(token.expose()), CONTENT_TYPE, vec![0u8; 100 * 1024]).await.unwrap();
    assert_eq!((r.status, r.error().error.as_str()), (413, "too_large"));

    // The connection and the receiver are still fine.
    assert_eq!(post(&client, &url, token.expose(), &dev.batch(1, 2)).await.ack().acked_through, 2);
    rx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_concurrency_limit_answers_503_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.limits.max_concurrent_requests = 1;
    // The first request holds the only slot far longer than the test needs; shutdown then
    // cuts it off, so nothing depends on how fast this machine is.
    cfg.limits.shutdown_grace = Duration::ZERO;
    let plan = FaultPlan::new();
    plan.delay(Duration::from_secs(120));
    cfg.faults = Some(plan.clone());
    let rx = start(cfg).await;
    let token = add_device(&tokens_path(dir.path()), "acme", "dev-1").unwrap();
    let client = client(rx.ca_pem().unwrap());
    let mut dev = Device::new(&archive_keys(), "acme", "dev-1", "s-1");
    dev.push_n(2);

    let (c, url, t, b) = (client.clone(), rx.url(), token.expose().to_string(), dev.batch(1, 2));
    let slow = tokio::spawn(async move { post_raw(&c, &url, Some(&t), CONTENT_TYPE, b.encode()).await });
    plan.wait_applied(1).await; // the first request holds the only slot
    let r = post(&client, &rx.url(), token.expose(), &dev.batch(1, 2)).await;
    assert_eq!((r.status, r.error().error.as_str(), r.retry_after.as_deref()), (503, "unavailable", Some("1")));
    // The cursor shares the request slots.
    assert_eq!(cursor(&client, &rx.url(), token.expose(), "s-1").await.status, 503);
    rx.shutdown().await;
    assert!(slow.await.unwrap().is_err(), "the held request was cut off unanswered at shutdown");
    assert_eq!(verify(dir.path()).unwrap().totals.records, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_records_tokens_and_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let rx = start(config(dir.path())).await;
    let token = add_device(&tokens_path(dir.path()), "acme", "dev-1").unwrap();
    let ca = rx.ca_pem().unwrap().to_string();
    let client = client(&ca);
    let mut dev = Device::new(&archive_keys(), "acme", "dev-1", "s-1");
    dev.push_n(6);
    post(&client, &rx.url(), token.expose(), &dev.batch(1, 3)).await.ack();
    // A second receiver cannot take the same data directory.
    assert!(matches!(verbatim_receiver::Receiver::start(config(dir.path())).await, Err(verbatim_receiver::Error::Locked(_))));
    rx.shutdown().await;

    let rx = start(config(dir.path())).await;
    assert_eq!(rx.ca_pem().unwrap(), ca, "devices keep trusting the same CA");
    let client = support::client(&ca);
    let c: Cursor = serde_json::from_str(&cursor(&client, &rx.url(), token.expose(), "s-1").await.body).unwrap();
    assert_eq!(c.acked_through, 3);
    let ack = post(&client, &rx.url(), token.expose(), &dev.batch(2, 6)).await.ack();
    assert_eq!((ack.acked_through, ack.stored, ack.duplicates), (6, 3, 2));
    rx.shutdown().await;
    assert!(verify(dir.path()).unwrap().ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_devices_at_once_all_complete() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    // One device token, 200 installs (streams): the load is in the requests, not in Argon2.
    cfg.limits.max_streams_per_device = 200;
    let rx = start(cfg).await;
    let token = add_device(&tokens_path(dir.path()), "acme", "fleet").unwrap();
    let client = client(rx.ca_pem().unwrap());
    let archive = archive_keys();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let mut dev = Device::new(&archive, "acme", "fleet", &format!("install-{i}"));
        dev.push_n(12);
        let (client, url, token) = (client.clone(), rx.url(), token.expose().to_string());
        tasks.push(tokio::spawn(async move {
            let mut refused = 0;
            for first in [1u64, 5, 9] {
                loop {
                    let r = post(&client, &url, &token, &dev.batch(first, first + 3)).await;
                    if r.status == 503 {
                        refused += 1;
                        assert!(r.retry_after.is_some());
                        tokio::time::sleep(Duration::from_millis(20)).await; // a device's back-off
                        continue;
                    }
                    assert_eq!(r.ack().acked_through, first + 3);
                    break;
                }
            }
            refused
        }));
    }
    let mut refused = 0;
    for t in tasks {
        refused += t.await.unwrap();
    }
    eprintln!("503 answers under load: {refused}");
    rx.shutdown().await;
    let report = verify(dir.path()).unwrap();
    assert!(report.ok());
    assert_eq!((report.totals.streams, report.totals.records), (200, 2400));
}

#[test]
fn a_batch_for_an_unknown_stream_id_shape_is_refused_by_the_decoder() {
    // Sanity: the receiver relies on the core decoder for structure; an empty stream id
    // cannot even be encoded into an accepted batch.
    let mut dev = Device::new(&archive_keys(), "acme", "dev-1", "s");
    dev.push_n(1);
    let mut b: Batch = dev.batch(1, 1);
    b.stream.stream = String::new();
    assert!(Batch::decode(&b.encode()).is_err());
}
