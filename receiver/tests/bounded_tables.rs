//! An authenticated device cannot grow the archive's tables without bound: new streams per
//! device are capped (422 `stream_limit`), and repeated alerts of one kind on one stream are
//! counted beside the first instead of added, without ever losing the first or the latest.
//! Epoch conflicts say precisely what differs.

mod support;

use support::*;
use verbatim_core::wire::EpochInfo;
use verbatim_receiver::{add_device, verify};

fn alert_rows(dir: &std::path::Path) -> i64 {
    let conn = rusqlite::Connection::open(dir.join("archive.db")).unwrap();
    conn.query_row("SELECT count(*) FROM alerts", [], |r| r.get(0)).unwrap()
}

fn stream_rows(dir: &std::path::Path) -> i64 {
    let conn = rusqlite::Connection::open(dir.join("archive.db")).unwrap();
    conn.query_row("SELECT count(*) FROM streams", [], |r| r.get(0)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_streams_per_device_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.limits.max_streams_per_device = 3;
    let rx = start(cfg).await;
    let token = add_device(&tokens_path(dir.path()), "acme", "dev-1").unwrap();
    let other = add_device(&tokens_path(dir.path()), "acme", "dev-2").unwrap();
    let client = client(rx.ca_pem().unwrap());
    let archive = archive_keys();
    let url = rx.url();

    let mut held = Vec::new();
    for i in 0..3 {
        let mut dev = Device::new(&archive, "acme", "dev-1", &format!("s-{i}"));
        dev.push_n(2);
        assert_eq!(post(&client, &url, token.expose(), &dev.batch(1, 1)).await.ack().acked_through, 1);
        held.push(dev);
    }
    // A fourth stream, whatever the batch (stored or a gap), is refused and leaves no row.
    for i in 3..300 {
        let mut dev = Device::new(&archive, "acme", "dev-1", &format!("s-{i}"));
        dev.push_n(2);
        let batch = if i % 2 == 0 { dev.batch(1, 1) } else { dev.batch(2, 2) };
        let r = post(&client, &url, token.expose(), &batch).await;
        assert_eq!((r.status, r.error().error.as_str()), (422, "stream_limit"), "{}", r.body);
        assert!(r.error().reason.contains("3 streams"), "{}", r.body);
        assert_eq!(r.error().expected_seq, None);
    }
    // The device's existing streams carry on; another device is not affected.
    assert_eq!(post(&client, &url, token.expose(), &held[0].batch(1, 2)).await.ack().acked_through, 2);
    let mut dev2 = Device::new(&archive, "acme", "dev-2", "s-9");
    dev2.push_n(1);
    assert_eq!(post(&client, &url, other.expose(), &dev2.batch(1, 1)).await.ack().acked_through, 1);
    rx.shutdown().await;
    assert_eq!(stream_rows(dir.path()), 4);
    assert!(verify(dir.path()).unwrap().ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_alerts_are_counted_and_the_first_and_latest_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let rx = start(config(dir.path())).await;
    let token = add_device(&tokens_path(dir.path()), "acme", "dev-1").unwrap();
    let client = client(rx.ca_pem().unwrap());
    let url = rx.url();
    let mut dev = Device::new(&archive_keys(), "acme", "dev-1", "s-1");
    dev.push_n(400);
    assert_eq!(post(&client, &url, token.expose(), &dev.batch(1, 2)).await.ack().acked_through, 2);

    // The finding: 300 gap batches made 300 alert rows.
    for first in 4..304 {
        let r = post(&client, &url, token.expose(), &dev.batch(first, first)).await;
        assert_eq!((r.status, r.error().error.as_str()), (409, "gap"));
    }
    rx.shutdown().await;
    assert_eq!(alert_rows(dir.path()), 1);
    let report = verify(dir.path()).unwrap();
    let alerts = &report.streams[0].alerts;
    assert_eq!(alerts.len(), 1);
    let gap = &alerts[0];
    assert_eq!((gap.kind.as_str(), gap.count), ("gap", 300));
    assert_eq!(gap.detail, "batch started at sequence 4; archive holds through 2", "the first is kept as it was");
    assert_eq!(gap.last_detail, "batch started at sequence 303; archive holds through 2");
    assert!(gap.last_at >= gap.at);
    assert!(report.to_text().contains("repeated: 300 in all"), "{}", report.to_text());
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["streams"][0]["alerts"][0]["count"], 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epoch_conflicts_say_what_differs_and_none_is_lost_to_deduplication() {
    let dir = tempfile::tempdir().unwrap();
    let rx = start(config(dir.path())).await;
    let token = add_device(&tokens_path(dir.path()), "acme", "dev-1").unwrap();
    let client = client(rx.ca_pem().unwrap());
    let url = rx.url();
    let mut dev = Device::new(&archive_keys(), "acme", "dev-1", "s-1");
    dev.push_n(4);
    assert_eq!(post(&client, &url, token.expose(), &dev.batch(1, 2)).await.ack().acked_through, 2);

    let reannounce = |key_id: Option<&str>, encapsulation: Option<Vec<u8>>| {
        let mut b = dev.batch(3, 4);
        let held = dev.epoch.clone();
        b.epochs = vec![EpochInfo {
            archive_key_id: key_id.map(str::to_string).unwrap_or(held.archive_key_id),
            encapsulation: encapsulation.unwrap_or(held.encapsulation),
            epoch: held.epoch,
        }];
        b
    };
    let cases = [
        (reannounce(Some("another-key"), None), "epoch 1 re-announced with a different archive key id (same encapsulation)"),
        (reannounce(None, Some(vec![0xee; 32])), "epoch 1 re-announced with a different encapsulation (same archive key id)"),
        (
            reannounce(Some("another-key"), Some(vec![0xee; 32])),
            "epoch 1 re-announced with a different archive key id and encapsulation",
        ),
    ];
    for (batch, reason) in &cases {
        let r = post(&client, &url, token.expose(), batch).await;
        assert_eq!((r.status, r.error().error.as_str()), (409, "conflict"));
        assert_eq!(r.error().reason, *reason);
    }
    // The finding: a key-id-only re-announcement, then a real encapsulation conflict whose
    // text was the same, so no alert was stored for it. Now every one is counted.
    rx.shutdown().await;
    let report = verify(dir.path()).unwrap();
    let alerts = &report.streams[0].alerts;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!((alerts[0].kind.as_str(), alerts[0].count), ("epoch_conflict", 3));
    assert_eq!(alerts[0].detail, cases[0].1);
    assert_eq!(alerts[0].last_detail, cases[2].1);
}

#[test]
fn alert_counts_only_grow_and_an_older_database_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    // A database as the first schema left it: two alert rows of one kind.
    {
        let conn = rusqlite::Connection::open(dir.path().join("archive.db")).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE streams (id INTEGER PRIMARY KEY, tenant TEXT NOT NULL, device TEXT NOT NULL, stream TEXT NOT NULL,
                                   created_ms INTEGER NOT NULL, UNIQUE (tenant, device, stream));
             CREATE TABLE epochs (stream_id INTEGER NOT NULL REFERENCES streams(id), epoch INTEGER NOT NULL, key_id TEXT NOT NULL,
                                  encapsulation BLOB NOT NULL, received_ms INTEGER NOT NULL, PRIMARY KEY (stream_id, epoch));
             CREATE TABLE records (stream_id INTEGER NOT NULL REFERENCES streams(id), seq INTEGER NOT NULL, epoch INTEGER NOT NULL,
                                   link BLOB NOT NULL, ciphertext BLOB NOT NULL, received_ms INTEGER NOT NULL, PRIMARY KEY (stream_id, seq));
             CREATE TABLE alerts (id INTEGER PRIMARY KEY, stream_id INTEGER NOT NULL REFERENCES streams(id), at_ms INTEGER NOT NULL,
                                  kind TEXT NOT NULL, detail TEXT NOT NULL);
             CREATE INDEX alerts_by_stream ON alerts (stream_id, id);
             INSERT INTO streams VALUES (1, 'acme', 'dev-1', 's-1', 1);
             INSERT INTO alerts (stream_id, at_ms, kind, detail) VALUES (1, 10, 'gap', 'first'), (1, 20, 'gap', 'second');
             PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    let rules =
        verbatim_receiver::store::StoreRules::new(verbatim_receiver::AcceptedKeys::from_public_keys([&archive_keys().public]));
    let store = verbatim_receiver::store::SqliteStore::open(dir.path(), rules).unwrap();
    // A gap on the migrated stream is counted on its first gap row.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut dev = Device::new(&archive_keys(), "acme", "dev-1", "s-1");
    dev.push_n(5);
    let outcome = rt.block_on(store.submit(dev.batch(5, 5), verbatim_receiver::store::Mode::Commit)).unwrap();
    assert_eq!(outcome, verbatim_receiver::store::Outcome::Gap { expected: 1 });
    store.close();

    let conn = rusqlite::Connection::open(dir.path().join("archive.db")).unwrap();
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(version, 2);
    let alerts = verbatim_receiver::store::sqlite::read::alert_list(&conn, 1).unwrap();
    assert_eq!(alerts.iter().map(|a| (a.detail.as_str(), a.count)).collect::<Vec<_>>(), [("first", 2), ("second", 1)]);
    // The counts are tamper-evident like the rest: they cannot be lowered or deleted.
    assert!(conn.execute("UPDATE alert_repeats SET repeats = 0", []).is_err());
    assert!(conn.execute("UPDATE alert_repeats SET repeats = repeats - 1", []).is_err());
    assert!(conn.execute("DELETE FROM alert_repeats", []).is_err());
    assert!(conn.execute("DELETE FROM alerts", []).is_err());
}
