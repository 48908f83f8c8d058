//! Records sealed to a key the archive does not hold are never acknowledged: the receiver
//! knows the archive key ids it accepts and refuses an epoch announced with any other one
//! (422 `unknown_archive_key`, nothing stored, one counted alert), so the device keeps them.

mod support;

use support::*;
use verbatim_receiver::{AcceptedKeys, Error, Receiver, add_device, verify};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_epoch_sealed_to_an_unknown_key_is_refused_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let rx = start(config(dir.path())).await;
    let token = add_device(&tokens_path(dir.path()), "acme", "dev-1").unwrap();
    let client = client(rx.ca_pem().unwrap());

    // The finding's case: a key id the archive never issued.
    let mut dev = Device::new(&archive_keys(), "acme", "dev-1", "s-1");
    dev.push_n(3);
    let mut b = dev.batch(1, 3);
    b.epochs[0].archive_key_id = "attacker-key-id".into();
    let r = post(&client, &rx.url(), token.expose(), &b).await;
    assert_eq!(r.status, 422, "{}", r.body);
    let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "error": "unknown_archive_key",
            "reason": "epoch 1 is sealed to archive key id attacker-key-id, which this archive does not accept",
            "archive_key_id": "attacker-key-id",
        })
    );
    // The device's own parser reads it as an ApiError.
    assert_eq!(r.error().error, "unknown_archive_key");
    assert_eq!(cursor(&client, &rx.url(), token.expose(), "s-1").await.status, 200);

    // Another archive's real key: refused the same way; retried, still one alert row.
    let foreign = foreign_archive_keys();
    let mut other = Device::new(&foreign, "acme", "dev-1", "s-2");
    other.push_n(2);
    for _ in 0..3 {
        let r = post(&client, &rx.url(), token.expose(), &other.batch(1, 2)).await;
        assert_eq!((r.status, r.error().error.as_str()), (422, "unknown_archive_key"));
        assert!(r.body.contains(&foreign.key_id), "{}", r.body);
    }

    // Its own key is accepted on the same streams afterwards.
    assert_eq!(post(&client, &rx.url(), token.expose(), &dev.batch(1, 3)).await.ack().acked_through, 3);
    rx.shutdown().await;

    let report = verify(dir.path()).unwrap();
    assert_eq!(report.totals.records, 3, "nothing of a refused epoch is stored");
    let s1 = report.streams.iter().find(|s| s.stream == "s-1").unwrap();
    assert_eq!(s1.alerts.len(), 1);
    assert_eq!((s1.alerts[0].kind.as_str(), s1.alerts[0].count), ("unknown_archive_key", 1));
    let s2 = report.streams.iter().find(|s| s.stream == "s-2").unwrap();
    assert_eq!((s2.records, s2.alerts.len()), (0, 1));
    assert_eq!((s2.alerts[0].kind.as_str(), s2.alerts[0].count), ("unknown_archive_key", 3));
    assert!(s2.alerts[0].detail.contains(&foreign.key_id));
    assert!(!report.ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_accepts_several_keys_and_epochs_already_held_are_not_rechecked() {
    let dir = tempfile::tempdir().unwrap();
    let old = archive_keys();
    let new = foreign_archive_keys();

    // Held under the old key.
    let rx = start(config(dir.path())).await;
    let token = add_device(&tokens_path(dir.path()), "acme", "dev-1").unwrap();
    let client = client(rx.ca_pem().unwrap());
    let mut dev = Device::new(&old, "acme", "dev-1", "s-1");
    dev.push_n(6);
    assert_eq!(post(&client, &rx.url(), token.expose(), &dev.batch(1, 2)).await.ack().acked_through, 2);
    rx.shutdown().await;

    // During the rotation both keys are accepted.
    let mut cfg = config(dir.path());
    cfg.archive_keys = AcceptedKeys::from_public_keys([&old.public, &new.public]);
    let rx = start(cfg).await;
    let client = support::client(rx.ca_pem().unwrap());
    let mut fresh = Device::new(&new, "acme", "dev-1", "s-2");
    fresh.push_n(2);
    assert_eq!(post(&client, &rx.url(), token.expose(), &fresh.batch(1, 2)).await.ack().acked_through, 2);
    assert_eq!(post(&client, &rx.url(), token.expose(), &dev.batch(3, 4)).await.ack().acked_through, 4);
    rx.shutdown().await;

    // The old key retired: its epoch, already held, still takes the stream's later records;
    // a new epoch sealed to it would not be accepted.
    let mut cfg = config(dir.path());
    cfg.archive_keys = AcceptedKeys::from_public_keys([&new.public]);
    let rx = start(cfg).await;
    let client = support::client(rx.ca_pem().unwrap());
    assert_eq!(post(&client, &rx.url(), token.expose(), &dev.batch(5, 6)).await.ack().acked_through, 6);
    let mut late = Device::new(&old, "acme", "dev-1", "s-3");
    late.push_n(1);
    assert_eq!(post(&client, &rx.url(), token.expose(), &late.batch(1, 1)).await.status, 422);
    rx.shutdown().await;
    assert_eq!(verify(dir.path()).unwrap().totals.records, 8);
}

#[tokio::test]
async fn a_receiver_without_an_accepted_key_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.archive_keys = AcceptedKeys::from_public_keys([]);
    assert!(matches!(Receiver::start(cfg).await, Err(Error::Config(_))));
}
