//! The archive's disk fills up (emulated with `Limits::storage_limit_bytes`, SQLite's page cap:
//! the same SQLITE_FULL a full file system gives). Uploads are answered 503 `unavailable` with
//! Retry-After, nothing is acknowledged that is not stored, and what was stored stays intact.
//! When space returns (a restart with a larger cap) the device's next upload completes and the
//! export holds every event the device captured.

mod support;

use std::time::Duration;

use support::*;
use verbatim_core::model::{Channel, Direction, Event, EventMeta, Message};
use verbatim_core::record::{Record, RecordBody};
use verbatim_core::synth::{BUSINESS_LINE, sample_policy};
use verbatim_core::upload::{NetworkState, StopReason, UploadOptions};
use verbatim_core::{Agent, AgentOptions, Value};
use verbatim_receiver::{add_device, export, verify};

const DEVICE: &str = "dev-disk-full";

fn message(n: u32) -> Event {
    Event::Message(Message {
        meta: EventMeta {
            channel: Channel::Sms,
            line: BUSINESS_LINE.into(),
            conversation_id: format!("conv-{}", n % 7),
            source_id: format!("full-{n}"),
            source_time_ms: 1_767_225_600_000 + n as i64,
        },
        direction: Direction::Outbound,
        sender: BUSINESS_LINE.into(),
        recipients: vec!["+442079460001".into()],
        // About 1 KB per event: the archive fills after two or three hundred.
        text: (0..400).map(|i| format!("{:x}", (i * 2_654_435_761u64 + n as u64 * 97) % 255)).collect::<String>(),
        attachment_ids: vec![],
        reply_to: None,
    })
}

fn exported_source_ids(dir: &std::path::Path) -> Vec<String> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            ids.extend(exported_source_ids(&path));
        } else if path.extension().is_some_and(|e| e == "jsonl") {
            for line in std::fs::read_to_string(&path).unwrap().lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                if v["type"] == "message" {
                    ids.push(v["meta"]["source_id"].as_str().unwrap().to_string());
                }
            }
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_archive_answers_503_acknowledges_nothing_unstored_and_recovers_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("archive");
    let archive = archive_keys();

    // A first start without a cap creates the schema; the cap then leaves room for 256 KB
    // (one or two of the device's 128 KB batches; it captures about 700 KB).
    let rx = start(config(&data)).await;
    let addr = rx.addr();
    rx.shutdown().await;
    let base = std::fs::metadata(data.join("archive.db")).unwrap().len();
    let mut capped = config(&data);
    capped.listen = addr;
    capped.limits.storage_limit_bytes = Some(base + 256 * 1024);
    let rx = start(capped).await;

    let token = add_device(&tokens_path(&data), "acme-securities", DEVICE).unwrap();
    let device = dir.path().join("device");
    let agent = Agent::open(&device, AgentOptions::default()).unwrap();
    let s = |v: &str| Value::String(v.to_string());
    let policy = sample_policy(
        &rx.url(),
        &archive.public,
        token.expose(),
        &[
            ("tenant_id", s("acme-securities")),
            ("device_id", s(DEVICE)),
            ("archive_ca_pem", s(rx.ca_pem().unwrap())),
            ("max_batch_kb", Value::Integer(128)),
        ],
    );
    agent.apply_policy(&policy).await.unwrap();
    let captured = 600u32;
    for n in 0..captured {
        agent.capture(message(n)).await.unwrap();
    }
    let written = agent.status().last_seq;

    // The archive fills up part way: what fit is acknowledged, the rest waits on the device.
    let report = agent.upload(UploadOptions::new(Duration::from_secs(3), NetworkState::Unmetered)).await;
    assert_eq!(report.stopped, StopReason::Deadline, "{report:?}");
    assert!(report.retries >= 1, "{report:?}");
    let acked = agent.status().acked_through;
    assert!(
        acked > 0 && acked < written,
        "some batches fit before the disk filled: acked {acked} of {written}: {report:?} {:?} base {base}",
        agent.status().upload
    );
    assert!(agent.status().upload.last_error.as_deref().unwrap_or("").contains("503"), "{:?}", agent.status().upload);
    let held = verify(&data).unwrap();
    assert!(held.ok(), "what was stored is intact: {}", held.to_text());
    assert_eq!(held.streams[0].contiguous_through, acked, "acknowledged exactly what is stored");

    // The answer itself: 503 `unavailable` with Retry-After, and the batch is not stored, also
    // when two devices' batches arrive together (one group commit).
    let client = client(rx.ca_pem().unwrap());
    let batch = agent.read_batch(usize::MAX).unwrap().unwrap();
    let archive2 = archive_keys();
    let token2 = add_device(&tokens_path(&data), "acme-securities", "dev-other").unwrap();
    let mut other = Device::new(&archive2, "acme-securities", "dev-other", "s-other");
    for i in 0..40u32 {
        let mut r = Record::new(1_767_225_600_000, RecordBody::AttachmentChunk { attachment_id: "a".into(), index: i });
        r.payload = vec![i as u8; 8 * 1024];
        other.push(&r);
    }
    let (url, other_batch) = (rx.url(), other.batch(1, 40));
    let (a, b) = tokio::join!(post(&client, &url, token.expose(), &batch), post(&client, &url, token2.expose(), &other_batch));
    for reply in [&a, &b] {
        assert_eq!(reply.status, 503, "{reply:?}");
        assert!(reply.retry_after.as_deref().is_some_and(|v| v.parse::<u64>().is_ok()), "{reply:?}");
        assert_eq!(reply.error().error, "unavailable");
    }
    let held = verify(&data).unwrap();
    assert!(held.ok(), "{}", held.to_text());
    assert_eq!(held.totals.records, acked, "a refused batch left nothing behind");
    let cursor = cursor(&client, &rx.url(), token.expose(), &batch.stream.stream).await;
    assert_eq!(serde_json::from_str::<serde_json::Value>(&cursor.body).unwrap()["acked_through"], acked);
    rx.shutdown().await;

    // Space returns: the same archive, restarted without the cap, takes the rest.
    let mut roomy = config(&data);
    roomy.listen = addr;
    let rx = start(roomy).await;
    let report = agent.upload(UploadOptions::new(Duration::from_secs(30), NetworkState::Unmetered)).await;
    assert_eq!(report.stopped, StopReason::Done, "{report:?}");
    assert_eq!(agent.status().queue_records, 0);
    let last = agent.status().last_seq;
    agent.close().await.unwrap();
    rx.shutdown().await;

    let v = verify(&data).unwrap();
    assert!(v.ok(), "{}", v.to_text());
    assert_eq!(v.streams.len(), 1);
    assert_eq!(v.streams[0].contiguous_through, last);
    let out = dir.path().join("export");
    let summary = export(&data, &archive.secret, &out).unwrap();
    assert!(summary.ok(), "{}", summary.to_text());
    let mut ids = exported_source_ids(&out);
    ids.sort();
    let mut expected: Vec<String> = (0..captured).map(|n| format!("full-{n}")).collect();
    expected.sort();
    assert_eq!(ids, expected, "every captured event exported exactly once");
}
