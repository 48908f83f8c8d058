//! The object store backend against a real S3 server with Object Lock (SeaweedFS, started on
//! 127.0.0.1 by these tests): exactly-once with receivers racing on one bucket, objects that
//! cannot be deleted, retention as configured, a bucket without Object Lock refused, the store
//! going away mid-upload.
//!
//! Needs `VERBATIM_WEED` (scripts/install-tools.sh seaweedfs; `scripts/test-all.sh` sets it).
//! Without it these tests are skipped with a note, unless `VERBATIM_REQUIRE_WEED` or `CI` is
//! set: then they fail.

mod support;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use support::*;
use verbatim_core::wire::{Batch, Cursor};
use verbatim_receiver::seaweed::{Seaweed, weed_binary};
use verbatim_receiver::store::s3::{
    COMPLIANCE, MARKER_TTL, Put, PutOptions, S3Admin, S3Client, S3Reader, S3Store, S3StoreConfig,
};
use verbatim_receiver::store::{ALERT_EQUIVOCATION, ArchiveStore, Mode, Outcome, StoreRules};
use verbatim_receiver::verify::{VerifyOptions, verify_reader};
use verbatim_receiver::{AcceptedKeys, add_device};

/// The SeaweedFS these tests share (each test uses buckets of its own). Killed at exit.
fn shared() -> Option<&'static Mutex<Seaweed>> {
    static WEED: OnceLock<Option<Mutex<Seaweed>>> = OnceLock::new();
    static PID: OnceLock<(u32, Vec<std::path::PathBuf>)> = OnceLock::new();
    extern "C" fn kill_at_exit() {
        if let Some((pid, files)) = PID.get() {
            // SIGKILL: weed ignores SIGTERM. Statics are never dropped, so clean up here.
            unsafe { libc::kill(*pid as libc::pid_t, libc::SIGKILL) };
            verbatim_receiver::seaweed::remove_files(files);
        }
    }
    WEED.get_or_init(|| {
        if !weed_available() {
            return None;
        }
        let weed = Seaweed::start().expect("SeaweedFS starts");
        if let Some(pid) = weed.pid() {
            let _ = PID.set((pid, weed.files()));
            unsafe { libc::atexit(kill_at_exit) };
        }
        Some(Mutex::new(weed))
    })
    .as_ref()
}

fn weed_available() -> bool {
    match weed_binary() {
        Ok(_) => true,
        Err(e) if std::env::var_os("VERBATIM_REQUIRE_WEED").is_some() || std::env::var_os("CI").is_some() => {
            panic!("the object store tests need SeaweedFS: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED (no SeaweedFS): {e}");
            false
        }
    }
}

fn bucket_name(what: &str) -> String {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b).unwrap();
    format!("{what}-{}", hex::encode(b))
}

/// A new bucket with Object Lock on the shared server, and the store configuration for it.
fn locked_bucket(weed: &Seaweed, days: u32) -> S3StoreConfig {
    let bucket = bucket_name("vb");
    weed.create_bucket(&bucket, true).unwrap();
    weed.store_config(&bucket, days)
}

fn rules() -> StoreRules {
    StoreRules::new(AcceptedKeys::from_public_keys([&archive_keys().public]))
}

/// Verify through the bucket (blocking: the reader runs its own runtime).
async fn verify_bucket(config: &S3StoreConfig) -> verbatim_receiver::Report {
    let config = config.clone();
    tokio::task::spawn_blocking(move || {
        let mut reader = S3Reader::open(&config).unwrap();
        verify_reader(&mut reader, &VerifyOptions::default()).unwrap()
    })
    .await
    .unwrap()
}

fn stored(o: &Outcome) -> (u64, u64, u64) {
    match o {
        Outcome::Stored(a) => (a.acked_through, a.stored, a.duplicates),
        other => panic!("expected Stored, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_receivers_racing_on_one_stream_store_each_record_exactly_once() {
    let Some(weed) = shared() else { return };
    let config = locked_bucket(&weed.lock().unwrap(), 1);
    let a = Arc::new(S3Store::open(&config, rules()).await.unwrap());
    let b = Arc::new(S3Store::open(&config, rules()).await.unwrap());
    let archive = archive_keys();
    let mut dev = Device::new(&archive, "acme", "dev-1", "s-1");
    dev.push_n(40);

    // The same batch through both at once, round after round: each record stored once, the
    // other receiver answers as for a resend.
    let mut through = 0;
    for (first, last) in [(1, 5), (6, 6), (7, 12)] {
        let (ra, rb) =
            tokio::join!(a.submit(dev.batch(first, last), Mode::Commit), b.submit(dev.batch(first, last), Mode::Commit));
        let (ra, rb) = (stored(&ra.unwrap()), stored(&rb.unwrap()));
        assert_eq!((ra.0, rb.0), (last, last));
        assert_eq!(ra.1 + rb.1, last - first + 1, "stored once between them: {ra:?} {rb:?}");
        through = last;
    }
    // Overlapping runs racing: 13..20 and 13..30. Whoever wins, the other stores the rest or
    // nothing, never twice.
    let (ra, rb) = tokio::join!(a.submit(dev.batch(13, 20), Mode::Commit), b.submit(dev.batch(13, 30), Mode::Commit));
    let (ra, rb) = (stored(&ra.unwrap()), stored(&rb.unwrap()));
    assert_eq!(rb.0, 30);
    assert_eq!(ra.1 + rb.1, 30 - through, "{ra:?} {rb:?}");

    // Conflicting batches for the same sequences (a forked device): exactly one is stored,
    // the other is refused as a conflict with an alert, nothing of it stored.
    let mut honest = dev.fork(&archive);
    honest.records.truncate(30);
    honest.prev = dev.records[29].link;
    let mut fork = honest.fork(&archive);
    honest.push_n(1);
    fork.push(&verbatim_core::record::Record::new(
        1,
        verbatim_core::record::RecordBody::Agent(verbatim_core::record::AgentEvent::QueueCorrupt { detail: "the fork".into() }),
    ));
    let (ra, rb) = tokio::join!(a.submit(honest.batch(31, 31), Mode::Commit), b.submit(fork.batch(31, 31), Mode::Commit));
    let outcomes = [ra.unwrap(), rb.unwrap()];
    let wins = outcomes.iter().filter(|o| matches!(o, Outcome::Stored(ack) if ack.stored == 1)).count();
    let conflicts = outcomes.iter().filter(|o| matches!(o, Outcome::Conflict { .. })).count();
    assert_eq!((wins, conflicts), (1, 1), "{outcomes:?}");

    // A new stream raced into existence by both: one head, every record once.
    let mut other = Device::new(&archive, "acme", "dev-2", "s-9");
    other.push_n(3);
    let (ra, rb) = tokio::join!(a.submit(other.batch(1, 3), Mode::Commit), b.submit(other.batch(1, 3), Mode::Commit));
    assert_eq!(stored(&ra.unwrap()).1 + stored(&rb.unwrap()).1, 3);

    // Both cursors agree; the bucket verifies: every record once, the chain intact, the one
    // alert the fork raised.
    let ca = a.cursor(dev.stream.clone()).await.unwrap();
    let cb = b.cursor(dev.stream.clone()).await.unwrap();
    assert_eq!(ca, cb);
    assert_eq!(ca.0, 31);
    let report = verify_bucket(&config).await;
    assert_eq!(report.streams.len(), 2, "{}", report.to_text());
    let s = report.streams.iter().find(|s| s.device == "dev-1").unwrap();
    assert_eq!((s.records, s.contiguous_through, s.chain_verified), (31, 31, true), "{}", report.to_text());
    assert!(s.gaps.is_empty());
    assert_eq!(s.alerts.iter().map(|a| a.kind.as_str()).collect::<Vec<_>>(), [ALERT_EQUIVOCATION]);
    let s2 = report.streams.iter().find(|s| s.device == "dev-2").unwrap();
    assert!(s2.ok() && s2.records == 3, "{}", report.to_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_match_the_sqlite_store_and_a_roll_back_writes_nothing() {
    let Some(weed) = shared() else { return };
    let config = locked_bucket(&weed.lock().unwrap(), 1);
    let store = S3Store::open(&config, rules()).await.unwrap();
    let archive = archive_keys();
    let mut dev = Device::new(&archive, "acme", "dev-1", "s-1");
    dev.push_n(10);

    // A crash before the commit: the check runs, nothing is written.
    assert_eq!(stored(&store.submit(dev.batch(1, 4), Mode::RollBack).await.unwrap()), (4, 4, 0));
    assert_eq!(store.cursor(dev.stream.clone()).await.unwrap().0, 0);
    assert_eq!(stored(&store.submit(dev.batch(1, 4), Mode::Commit).await.unwrap()), (4, 4, 0));
    // A gap: nothing stored, the expected sequence named.
    assert_eq!(store.submit(dev.batch(6, 8), Mode::Commit).await.unwrap(), Outcome::Gap { expected: 5 });
    // An older duplicate (not in the last object) is compared byte for byte.
    assert_eq!(stored(&store.submit(dev.batch(5, 10), Mode::Commit).await.unwrap()), (10, 6, 0));
    assert_eq!(stored(&store.submit(dev.batch(2, 7), Mode::Commit).await.unwrap()), (10, 0, 6));
    // An epoch sealed to a key this archive does not accept.
    let foreign = foreign_archive_keys();
    let mut stranger = Device::new(&foreign, "acme", "dev-1", "s-2");
    stranger.push_n(1);
    assert!(matches!(
        store.submit(stranger.batch(1, 1), Mode::Commit).await.unwrap(),
        Outcome::UnknownArchiveKey { epoch: 1, .. }
    ));
    // The stream limit per device.
    let mut limited = rules();
    limited.max_streams_per_device = 2;
    let small = S3Store::open(&config, limited).await.unwrap();
    let mut third = Device::new(&archive, "acme", "dev-1", "s-3");
    third.push_n(1);
    assert_eq!(small.submit(third.batch(1, 1), Mode::Commit).await.unwrap(), Outcome::StreamLimit { limit: 2 });

    let report = verify_bucket(&config).await;
    let s = report.streams.iter().find(|s| s.stream == "s-1").unwrap();
    assert_eq!((s.records, s.contiguous_through, s.chain_verified), (10, 10, true));
    let kinds: Vec<&str> = s.alerts.iter().map(|a| a.kind.as_str()).collect();
    assert_eq!(kinds, ["gap"], "{}", report.to_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn written_objects_cannot_be_deleted_or_replaced_and_carry_the_configured_retention() {
    let Some(weed) = shared() else { return };
    let config = locked_bucket(&weed.lock().unwrap(), 3);
    let store = S3Store::open(&config, rules()).await.unwrap();
    let archive = archive_keys();
    let mut dev = Device::new(&archive, "acme", "dev-1", "s-1");
    dev.push_n(5);
    let before = verbatim_receiver::time::now_ms();
    stored(&store.submit(dev.batch(1, 5), Mode::Commit).await.unwrap());
    let after = verbatim_receiver::time::now_ms();

    let client = S3Client::new(&config.s3).unwrap();
    let keys = client.list_all("archive/", None).await.unwrap();
    let batch_keys: Vec<&String> = keys.iter().filter(|k| k.contains("/b/")).collect();
    assert_eq!(batch_keys.len(), 1, "{keys:?}");
    let key = batch_keys[0].as_str();
    let original = client.get(key).await.unwrap().unwrap().body;

    // COMPLIANCE, until 3 days after it was written.
    let (mode, until) = client.retention(key).await.unwrap().expect("the object has a retention");
    assert_eq!(mode, COMPLIANCE);
    let until_ms = parse_rfc3339_ms(&until);
    let day = 86_400_000;
    assert!(until_ms >= before + 3 * day - 1_000 && until_ms <= after + 3 * day + 1_000, "{until}");

    // Deleting the version: refused.
    let version = client.version_id(key).await.unwrap().expect("Object Lock buckets are versioned");
    let status = client.delete(key, Some(&version)).await.unwrap();
    assert_eq!(status.as_u16(), 403, "deleting a locked version must be refused");
    // Replacing it under the receivers' own condition: refused.
    let put = client.put(key, b"forged".to_vec(), &PutOptions { if_none_match: true, ..PutOptions::default() }).await;
    assert_eq!(put.unwrap(), Put::PreconditionFailed);

    // S3 lets whoever may write put a new version over it, or a delete marker: neither touches
    // the locked version, and verify sees what was done.
    let forged = client.put(key, b"forged".to_vec(), &PutOptions::default()).await;
    if forged.is_ok() {
        let report = verify_bucket(&config).await;
        assert!(!report.ok(), "a forged version must fail verification");
    }
    let _ = client.delete(key, None).await;
    let report = verify_bucket(&config).await;
    assert!(!report.ok(), "a hidden batch must fail verification");
    assert_eq!(report.streams[0].gaps.len(), 1, "{}", report.to_text());
    assert_eq!(client.delete(key, Some(&version)).await.unwrap().as_u16(), 403);
    let kept = client.get_version(key, &version).await.unwrap().expect("the locked version is still there");
    assert_eq!(kept.body, original);
}

fn parse_rfc3339_ms(s: &str) -> i64 {
    // 2026-12-09T07:20:01Z or with fractional seconds.
    let (date, time) = s.trim_end_matches('Z').split_once('T').unwrap();
    let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
    let ms: i64 = format!("{frac:0<3}")[..3].parse().unwrap();
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m) = if d[1] <= 2 { (d[0] - 1, d[1] + 9) } else { (d[0], d[1] - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 24 + t[0]) * 60 + t[1]) * 60_000 + t[2] * 1000 + ms
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_without_object_lock_is_refused_with_a_clear_error() {
    let Some(weed) = shared() else { return };
    let (config, dir) = {
        let weed = weed.lock().unwrap();
        let bucket = bucket_name("plain");
        weed.create_bucket(&bucket, false).unwrap();
        (weed.store_config(&bucket, 1), tempfile::tempdir().unwrap())
    };
    let err = S3Store::open(&config, rules()).await.err().expect("refused").to_string();
    assert!(err.contains("does not have Object Lock enabled"), "{err}");
    let mut rx = config_for(dir.path());
    rx.object_store = Some(config.clone());
    let err = verbatim_receiver::Receiver::start(rx).await.err().expect("refused").to_string();
    assert!(err.contains("Object Lock"), "{err}");
    let reader = tokio::task::spawn_blocking(move || S3Reader::open(&config).err().map(|e| e.to_string())).await.unwrap();
    assert!(reader.unwrap().contains("Object Lock"));
}

fn config_for(dir: &std::path::Path) -> verbatim_receiver::ReceiverConfig {
    support::config(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn devices_uploading_through_two_receivers_at_random_land_exactly_once() {
    let Some(weed) = shared() else { return };
    let config = locked_bucket(&weed.lock().unwrap(), 1);
    let dir = tempfile::tempdir().unwrap();
    // Two receivers, one token file (each reads it), one bucket.
    let start = |sub: &str| {
        let mut c = support::config(&dir.path().join(sub));
        c.tokens_file = tokens_path(dir.path());
        c.object_store = Some(config.clone());
        c
    };
    let rx_a = support::start(start("a")).await;
    let rx_b = support::start(start("b")).await;
    let archive = archive_keys();
    let mut devices = Vec::new();
    for d in 0..3 {
        let name = format!("dev-{d}");
        let token = add_device(&tokens_path(dir.path()), "acme", &name).unwrap();
        let mut dev = Device::new(&archive, "acme", &name, "s-1");
        dev.push_n(30);
        devices.push((dev, token));
    }
    let ca_a = client(rx_a.ca_pem().unwrap());
    let ca_b = client(rx_b.ca_pem().unwrap());
    let urls = [(rx_a.url(), &ca_a), (rx_b.url(), &ca_b)];
    let mut rng = verbatim_core::synth::Rng::new(7);
    let mut tasks = Vec::new();
    for (dev, token) in &devices {
        // Each device: batches of 1..6 records, each sent through a receiver picked at random,
        // a third of them sent again through the other (a retry after a lost answer).
        let mut plan = Vec::new();
        let mut next = 1u64;
        while next <= 30 {
            let last = (next + rng.below(6)).min(30);
            let via = rng.below(2) as usize;
            plan.push((dev.batch(next, last), via, rng.below(3) == 0));
            next = last + 1;
        }
        let token = token.expose().to_string();
        let urls: Vec<(String, reqwest::Client)> = urls.iter().map(|(u, c)| (u.clone(), (*c).clone())).collect();
        tasks.push(tokio::spawn(async move {
            let mut acked = 0;
            for (batch, via, again) in plan {
                let ack = post(&urls[via].1, &urls[via].0, &token, &batch).await.ack();
                acked = ack.acked_through;
                if again {
                    let ack2 = post(&urls[1 - via].1, &urls[1 - via].0, &token, &batch).await.ack();
                    assert_eq!((ack2.stored, ack2.acked_through), (0, acked));
                }
            }
            acked
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 30);
    }
    // The cursor answer through either receiver.
    let (dev, token) = &devices[0];
    let c: Cursor = serde_json::from_str(&cursor(&ca_b, &rx_b.url(), token.expose(), "s-1").await.body).unwrap();
    assert_eq!((c.acked_through, c.last_link), (30, hex::encode(dev.records[29].link)));
    rx_a.shutdown().await;
    rx_b.shutdown().await;

    let report = verify_bucket(&config).await;
    assert!(report.ok(), "{}", report.to_text());
    assert_eq!((report.totals.streams, report.totals.records), (3, 90));
    // Silent-device detection reads the bucket's received times too.
    let later = verbatim_receiver::time::now_ms() + 48 * 3_600_000;
    let cfg = config.clone();
    let silent = tokio::task::spawn_blocking(move || {
        let mut reader = S3Reader::open(&cfg).unwrap();
        verify_reader(&mut reader, &VerifyOptions { silent_after_hours: Some(36), now_ms: Some(later) }).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(silent.silent_devices.len(), 3);

    // Export from the bucket: every record opens.
    let out = tempfile::tempdir().unwrap();
    let cfg = config.clone();
    let out_path = out.path().to_path_buf();
    let summary = tokio::task::spawn_blocking(move || {
        let mut reader = S3Reader::open(&cfg).unwrap();
        verbatim_receiver::export::export_reader(&mut reader, &[archive_keys().secret], &out_path).unwrap()
    })
    .await
    .unwrap();
    assert!(summary.ok(), "{}", summary.to_text());
    assert_eq!((summary.records, summary.agent_events), (90, 90));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_going_away_mid_upload_gives_503_and_acknowledges_nothing_unstored() {
    if !weed_available() {
        return;
    }
    // A server of its own: this test kills it.
    let mut weed = tokio::task::spawn_blocking(|| Seaweed::start().unwrap()).await.unwrap();
    let config = locked_bucket(&weed, 1);
    let dir = tempfile::tempdir().unwrap();
    let mut c = support::config(dir.path());
    c.object_store = Some(config.clone());
    let rx = support::start(c).await;
    let token = add_device(&tokens_path(dir.path()), "acme", "dev-1").unwrap();
    let http = client(rx.ca_pem().unwrap());
    let archive = archive_keys();
    let mut dev = Device::new(&archive, "acme", "dev-1", "s-1");
    dev.push_n(10);
    assert_eq!(post(&http, &rx.url(), token.expose(), &dev.batch(1, 4)).await.ack().acked_through, 4);

    let weed = tokio::task::spawn_blocking(move || {
        weed.kill();
        weed
    })
    .await
    .unwrap();
    let r = post(&http, &rx.url(), token.expose(), &dev.batch(5, 10)).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.retry_after.is_some(), "503 carries Retry-After");
    assert_eq!(r.error().error, "unavailable");
    assert_eq!(cursor(&http, &rx.url(), token.expose(), "s-1").await.status, 503);

    // Back again: the retry is stored, and the archive holds exactly what was acknowledged.
    let mut weed = tokio::task::spawn_blocking(move || {
        let mut weed = weed;
        weed.restart().unwrap();
        weed
    })
    .await
    .unwrap();
    let mut ack = None;
    for _ in 0..50 {
        let r = post(&http, &rx.url(), token.expose(), &dev.batch(5, 10)).await;
        if r.status == 200 {
            ack = Some(r.ack());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(ack.expect("stored once the store is back").acked_through, 10);
    rx.shutdown().await;
    let report = verify_bucket(&config).await;
    assert!(report.ok(), "{}", report.to_text());
    assert_eq!(report.totals.records, 10);
    tokio::task::spawn_blocking(move || weed.kill()).await.unwrap();
}

/// Batches are whole objects: never one per record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_one_object() {
    let Some(weed) = shared() else { return };
    let config = locked_bucket(&weed.lock().unwrap(), 1);
    let store = S3Store::open(&config, rules()).await.unwrap();
    let archive = archive_keys();
    let mut dev = Device::new(&archive, "acme", "dev-1", "s-1");
    dev.push_n(100);
    let batch: Batch = dev.batch(1, 100);
    stored(&store.submit(batch, Mode::Commit).await.unwrap());
    let client = S3Client::new(&config.s3).unwrap();
    let keys = client.list_all("archive/", None).await.unwrap();
    assert_eq!(keys.iter().filter(|k| k.contains("/b/")).count(), 1, "{keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legal_hold_covers_a_devices_objects_present_and_future_and_is_audited() {
    let Some(weed) = shared() else { return };
    let config = locked_bucket(&weed.lock().unwrap(), 1);
    let store = S3Store::open(&config, rules()).await.unwrap();
    let archive = archive_keys();
    let mut held_dev = Device::new(&archive, "acme", "dev-held", "s-1");
    let mut other = Device::new(&archive, "acme", "dev-other", "s-1");
    held_dev.push_n(6);
    other.push_n(3);
    stored(&store.submit(held_dev.batch(1, 3), Mode::Commit).await.unwrap());
    stored(&store.submit(other.batch(1, 3), Mode::Commit).await.unwrap());
    // An alert object of the held device too (a gap).
    assert!(matches!(store.submit(held_dev.batch(5, 5), Mode::Commit).await.unwrap(), Outcome::Gap { .. }));

    let admin = S3Admin::open(&config).await.unwrap();
    let refused = admin.legal_hold("acme", Some("dev-held"), true, "  ", "test").await;
    assert!(refused.unwrap_err().to_string().contains("reason"));
    let put = admin.legal_hold("acme", Some("dev-held"), true, "SEC matter 2026-17", "compliance@acme").await.unwrap();
    assert_eq!(put.event.objects, 2, "one batch object and one alert object");
    // Written after the hold (this store's marker cache is older than the hold: wait it out).
    tokio::time::sleep(MARKER_TTL).await;
    stored(&store.submit(held_dev.batch(4, 6), Mode::Commit).await.unwrap());

    let client = S3Client::new(&config.s3).unwrap();
    let keys = client.list_all("archive/v1/t/", None).await.unwrap();
    let layout = verbatim_receiver::store::s3::Layout::new("archive");
    let held_prefix = layout.device("acme", "dev-held");
    let mut retention_before = Vec::new();
    for key in keys.iter().filter(|k| verbatim_receiver::store::s3::Layout::is_locked(k)) {
        let hold = client.legal_hold(key).await.unwrap();
        let expected = if key.starts_with(&held_prefix) { Some("ON") } else { None };
        assert_eq!(hold.as_deref().filter(|h| *h == "ON"), expected, "{key}");
        if key.starts_with(&held_prefix) {
            retention_before.push((key.clone(), client.retention(key).await.unwrap()));
            // Held: not deletable, whatever its retention.
            let version = client.version_id(key).await.unwrap().unwrap();
            assert_eq!(client.delete(key, Some(&version)).await.unwrap().as_u16(), 403);
        }
    }
    assert_eq!(retention_before.len(), 3, "two batch objects and the alert");

    // Released: the hold is off, the retention exactly as it was (never shortened).
    let released =
        admin.legal_hold("acme", Some("dev-held"), false, "SEC matter 2026-17 closed", "compliance@acme").await.unwrap();
    assert_eq!(released.event.objects, 3);
    for (key, retention) in &retention_before {
        assert_eq!(client.legal_hold(key).await.unwrap().as_deref(), Some("OFF"), "{key}");
        assert_eq!(&client.retention(key).await.unwrap(), retention, "{key}");
    }
    // The audit trail: both events, in order, locked like the records.
    let events = admin.audit_events().await.unwrap();
    let actions: Vec<(&str, Option<&str>, u64)> =
        events.iter().map(|e| (e.action.as_str(), e.device.as_deref(), e.objects)).collect();
    assert_eq!(actions, [("legal_hold_put", Some("dev-held"), 2), ("legal_hold_released", Some("dev-held"), 3)]);
    let (mode, _) = client.retention(&put.audit_key).await.unwrap().unwrap();
    assert_eq!(mode, COMPLIANCE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_archive_copies_into_a_bucket_and_verifies_the_same() {
    let Some(weed) = shared() else { return };
    let config = locked_bucket(&weed.lock().unwrap(), 1);
    // An embedded archive: two streams, 1,500 records over both (more than one copy batch),
    // and an alert.
    let dir = tempfile::tempdir().unwrap();
    let archive = archive_keys();
    let sqlite = verbatim_receiver::store::SqliteStore::open(dir.path(), rules()).unwrap();
    let mut a = Device::new(&archive, "acme", "dev-1", "s-1");
    let mut b = Device::new(&archive, "acme", "dev-2", "s-1");
    a.push_n(1_200);
    b.push_n(302);
    for first in (1..=1_200).step_by(200) {
        assert!(matches!(sqlite.submit(a.batch(first, first + 199), Mode::Commit).await.unwrap(), Outcome::Stored(_)));
    }
    sqlite.submit(b.batch(1, 300), Mode::Commit).await.unwrap();
    assert!(matches!(sqlite.submit(b.batch(302, 302), Mode::Commit).await.unwrap(), Outcome::Gap { .. }));
    sqlite.close();

    let (data, target) = (dir.path().to_path_buf(), config.clone());
    let copy = move || {
        let mut source = verbatim_receiver::store::sqlite::SqliteReader::open(&data).unwrap();
        verbatim_receiver::store::s3::copy_archive(&mut source, &target).unwrap()
    };
    let first = tokio::task::spawn_blocking(copy.clone()).await.unwrap();
    assert!(first.ok(), "{first:?}");
    assert_eq!((first.streams, first.records_copied, first.records_already_there, first.alerts_copied), (2, 1_500, 0, 1));
    // Again (an interrupted copy resumed): nothing new, still the same.
    let again = tokio::task::spawn_blocking(copy).await.unwrap();
    assert!(again.ok(), "{again:?}");
    assert_eq!((again.records_copied, again.records_already_there, again.alerts_copied), (0, 1_500, 0));

    let source = verbatim_receiver::verify::verify_with(dir.path(), &VerifyOptions::default()).unwrap();
    let copied = verify_bucket(&config).await;
    assert_eq!(copied.totals.records, 1_500);
    for (s, c) in source.streams.iter().zip(&copied.streams) {
        assert_eq!((&s.device, s.records, s.contiguous_through), (&c.device, c.records, c.contiguous_through));
        // When records were first received survives the copy (silent-device detection).
        assert_eq!(s.last_received_ms, c.last_received_ms);
        assert_eq!(s.alerts.len(), c.alerts.len());
    }
}

/// verify and export read the bucket while receivers keep writing to it: every view is a
/// consistent, contiguous prefix of each stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verify_and_export_read_consistently_while_receivers_ingest() {
    let Some(weed) = shared() else { return };
    let config = locked_bucket(&weed.lock().unwrap(), 1);
    let store = Arc::new(S3Store::open(&config, rules()).await.unwrap());
    let archive = archive_keys();
    let mut dev = Device::new(&archive, "acme", "dev-1", "s-1");
    dev.push_n(200);
    stored(&store.submit(dev.batch(1, 5), Mode::Commit).await.unwrap());
    let writer = {
        let (store, dev) = (store.clone(), dev.fork(&archive));
        tokio::spawn(async move {
            for first in (6..=200).step_by(5) {
                stored(&store.submit(dev.batch(first, first + 4), Mode::Commit).await.unwrap());
            }
        })
    };
    let mut seen = Vec::new();
    while !writer.is_finished() {
        let report = verify_bucket(&config).await;
        assert!(report.ok(), "{}", report.to_text());
        let s = &report.streams[0];
        assert_eq!(s.contiguous_through, s.records);
        seen.push(s.records);
        let (cfg, out) = (config.clone(), tempfile::tempdir().unwrap());
        let summary = tokio::task::spawn_blocking(move || {
            let mut reader = S3Reader::open(&cfg).unwrap();
            verbatim_receiver::export::export_reader(&mut reader, &[archive_keys().secret], out.path()).unwrap()
        })
        .await
        .unwrap();
        assert!(summary.ok() && summary.records >= s.records, "{}", summary.to_text());
    }
    writer.await.unwrap();
    assert!(!seen.is_empty(), "verify ran while the writer wrote");
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert_eq!(verify_bucket(&config).await.totals.records, 200);
}

/// The two conditions the exactly-once design rests on, checked on the store itself:
/// `If-None-Match: *` creates once, `If-Match` replaces only the version read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_honours_both_conditional_writes() {
    let Some(weed) = shared() else { return };
    let config = locked_bucket(&weed.lock().unwrap(), 1);
    let client = S3Client::new(&config.s3).unwrap();
    let create = PutOptions { if_none_match: true, ..PutOptions::default() };
    let Put::Written { etag: Some(first) } = client.put("cas", b"1".to_vec(), &create).await.unwrap() else {
        panic!("created, with an ETag")
    };
    assert_eq!(client.put("cas", b"2".to_vec(), &create).await.unwrap(), Put::PreconditionFailed);
    let swap = |etag: &str| PutOptions { if_match: Some(etag.to_string()), ..PutOptions::default() };
    let Put::Written { etag: Some(second) } = client.put("cas", b"2".to_vec(), &swap(&first)).await.unwrap() else {
        panic!("swapped, with an ETag")
    };
    // The ETag read before that swap is stale now: refused, the value unchanged.
    assert_eq!(client.put("cas", b"3".to_vec(), &swap(&first)).await.unwrap(), Put::PreconditionFailed);
    assert_eq!(client.get("cas").await.unwrap().unwrap().body, b"2");
    assert!(matches!(client.put("cas", b"3".to_vec(), &swap(&second)).await.unwrap(), Put::Written { .. }));
}
