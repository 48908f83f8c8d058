//! Two `verbatim receive --store s3://...` processes on one bucket of a real S3 server with
//! Object Lock (a local SeaweedFS), several devices uploading through both at random, one
//! receiver killed with SIGKILL while batches are in flight and restarted: every acknowledged
//! record is archived exactly once and `verbatim verify --store` is clean.
//!
//! Needs VERBATIM_WEED (scripts/install-tools.sh seaweedfs): skipped with a note without it,
//! failed when VERBATIM_REQUIRE_WEED or CI is set.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use verbatim_core::chain::{self, Link, StreamId};
use verbatim_core::record::{AgentEvent, Record, RecordBody};
use verbatim_core::seal::EpochKey;
use verbatim_core::wire::{Batch, BatchAck, CONTENT_TYPE, EpochInfo, WireRecord};
use verbatim_receiver::seaweed::{ACCESS_KEY, SECRET_KEY, Seaweed};

const BIN: &str = env!("CARGO_BIN_EXE_verbatim");
const RECORDS: u64 = 60;
const DEVICES: usize = 4;

fn weed_available() -> bool {
    match verbatim_receiver::seaweed::weed_binary() {
        Ok(_) => true,
        Err(e) if std::env::var_os("VERBATIM_REQUIRE_WEED").is_some() || std::env::var_os("CI").is_some() => {
            panic!("this test needs SeaweedFS: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED (no SeaweedFS): {e}");
            false
        }
    }
}

/// A device's sealed, chained records.
fn device_records(public: &[u8; 32], key_id: &str, device: &str) -> (StreamId, EpochInfo, Vec<WireRecord>) {
    let stream = StreamId { tenant: "acme".into(), device: device.into(), stream: "s-1".into() };
    let (mut key, encapsulation) = EpochKey::create(public, &stream, 1).unwrap();
    let epoch = EpochInfo { epoch: 1, archive_key_id: key_id.into(), encapsulation };
    let mut prev: Link = chain::genesis(&stream);
    let mut records = Vec::new();
    for seq in 1..=RECORDS {
        let body = RecordBody::Agent(AgentEvent::QueueCorrupt { detail: format!("{device} event {seq}") });
        let plaintext = Record::new(1_700_000_000_000 + seq as i64, body).encode();
        let ciphertext = key.seal(&stream, seq, &prev, &plaintext).unwrap();
        let link = chain::link(&prev, seq, 1, &ciphertext);
        prev = link;
        records.push(WireRecord { seq, epoch: 1, link, ciphertext });
    }
    (stream, epoch, records)
}

struct ReceiverProc {
    child: Child,
    url: String,
    client: reqwest::Client,
}

fn spawn_receiver(port: u16, data: &Path, tokens: &Path, public_key: &Path, endpoint: &str, bucket: &str) -> ReceiverProc {
    let mut child = Command::new(BIN)
        .args(["receive", "--listen", &format!("127.0.0.1:{port}"), "--self-signed", "--data"])
        .arg(data)
        .arg("--tokens")
        .arg(tokens)
        .arg("--archive-key")
        .arg(public_key)
        .args(["--store", &format!("s3://{bucket}/archive"), "--s3-endpoint", endpoint, "--retention-days", "1"])
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_REGION", "us-east-1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = loop {
        let line = lines.next().expect("receiver exited before listening").unwrap();
        if let Some(u) = line.strip_prefix("listening on ") {
            break u.to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let ca = std::fs::read_to_string(data.join("ca.pem")).unwrap();
    let tls = verbatim_receiver::tls::client_config(&ca).unwrap();
    let client = reqwest::Client::builder().tls_backend_preconfigured(tls).timeout(Duration::from_secs(20)).build().unwrap();
    ReceiverProc { child, url, client }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn two_receivers_on_one_bucket_one_killed_mid_batch_every_acked_record_exactly_once() {
    if !weed_available() {
        return;
    }
    let weed = Seaweed::start().unwrap();
    let bucket = "two-receivers";
    weed.create_bucket(bucket, true).unwrap();
    let endpoint = weed.endpoint().to_string();
    let dir = tempfile::tempdir().unwrap();
    let key = verbatim_receiver::keygen(&dir.path().join("key")).unwrap();
    let public: [u8; 32] = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.decode(&key.public_b64).unwrap().try_into().unwrap()
    };
    let tokens = dir.path().join("tokens.jsonl");
    let mut devices = Vec::new();
    for d in 0..DEVICES {
        let name = format!("dev-{d}");
        let token = verbatim_receiver::add_device(&tokens, "acme", &name).unwrap();
        devices.push((device_records(&public, &key.key_id, &name), token.expose().to_string()));
    }
    let (port_a, port_b) = (free_port(), free_port());
    let data_a: PathBuf = dir.path().join("a");
    let data_b: PathBuf = dir.path().join("b");
    let mut a = spawn_receiver(port_a, &data_a, &tokens, &key.public_path, &endpoint, bucket);
    let b = spawn_receiver(port_b, &data_b, &tokens, &key.public_path, &endpoint, bucket);
    let targets = Arc::new(std::sync::Mutex::new(vec![(a.url.clone(), a.client.clone()), (b.url.clone(), b.client.clone())]));

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let acks = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (d, ((stream, epoch, records), token)) in devices.into_iter().enumerate() {
        let (targets, acks, failures) = (targets.clone(), acks.clone(), failures.clone());
        tasks.push(rt.spawn(async move {
            let mut rng = verbatim_core::synth::Rng::new(d as u64 + 1);
            let mut acked = 0u64;
            // The highest sequence ever sent: a batch stored by a receiver killed before it
            // answered is acknowledged by the next answer, whatever that batch held.
            let mut sent_through = 0u64;
            let deadline = Instant::now() + Duration::from_secs(120);
            while acked < RECORDS {
                assert!(Instant::now() < deadline, "device {d} could not upload everything in time");
                let last = (acked + 1 + rng.below(8)).min(RECORDS);
                let batch = Batch {
                    stream: stream.clone(),
                    epochs: vec![epoch.clone()],
                    records: records[acked as usize..last as usize].to_vec(),
                };
                let (url, client) = targets.lock().unwrap()[rng.below(2) as usize].clone();
                sent_through = sent_through.max(last);
                let sent = client
                    .post(format!("{url}/v1/batches"))
                    .bearer_auth(&token)
                    .header("content-type", CONTENT_TYPE)
                    .body(batch.encode())
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == 200 => {
                        let ack: BatchAck = r.json().await.unwrap();
                        // Never acknowledged past what was ever sent, never backwards.
                        assert!(ack.acked_through >= acked && ack.acked_through <= sent_through, "{ack:?}");
                        acked = ack.acked_through;
                        acks.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => {
                        let status = r.status().as_u16();
                        assert!(status == 503, "unexpected answer {status}: {}", r.text().await.unwrap_or_default());
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                    // The receiver was killed with the request in flight: retry (elsewhere, maybe).
                    Err(_) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            acked
        }));
    }

    // Kill receiver A with SIGKILL once uploads are under way, then restart it on its port.
    let started = Instant::now();
    while acks.load(Ordering::Relaxed) < 8 {
        assert!(started.elapsed() < Duration::from_secs(60), "uploads did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let killed_at = acks.load(Ordering::Relaxed);
    a = spawn_receiver(port_a, &data_a, &tokens, &key.public_path, &endpoint, bucket);
    targets.lock().unwrap()[0] = (a.url.clone(), a.client.clone());

    for t in tasks {
        assert_eq!(rt.block_on(t).unwrap(), RECORDS);
    }
    eprintln!(
        "acks {} (kill after {killed_at}), failed attempts {}",
        acks.load(Ordering::Relaxed),
        failures.load(Ordering::Relaxed)
    );

    // verify through the CLI, while both receivers still run.
    let out = Command::new(BIN)
        .args([
            "verify",
            "--json",
            "--silent-after-hours",
            "0",
            "--store",
            &format!("s3://{bucket}/archive"),
            "--s3-endpoint",
            &endpoint,
        ])
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("verify output ({e}): {} {}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    });
    assert!(out.status.success(), "{report}");
    assert_eq!(report["totals"]["ok"], true, "{report}");
    assert_eq!(report["totals"]["streams"], DEVICES as u64);
    assert_eq!(report["totals"]["records"], DEVICES as u64 * RECORDS, "each record exactly once: {report}");
    for s in report["streams"].as_array().unwrap() {
        assert_eq!((s["contiguous_through"].as_u64(), s["last_seq"].as_u64()), (Some(RECORDS), Some(RECORDS)), "{s}");
    }

    // export through the CLI: every record opens.
    let export = dir.path().join("export");
    let out = Command::new(BIN)
        .args(["export", "--json", "--store", &format!("s3://{bucket}/archive"), "--s3-endpoint", &endpoint, "--key"])
        .arg(&key.private_path)
        .arg("--out")
        .arg(&export)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["agent_events"], DEVICES as u64 * RECORDS, "{summary}");
    assert_eq!(summary["unreadable"], 0);

    // A legal hold on one device through the CLI: every one of its objects, recorded.
    let out = Command::new(BIN)
        .args(["legal-hold", "put", "--json", "--store", &format!("s3://{bucket}/archive"), "--s3-endpoint", &endpoint])
        .args(["--tenant", "acme", "--device", "dev-0", "--reason", "matter 17", "--by", "test"])
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let hold: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(hold["event"]["action"], "legal_hold_put");
    assert!(hold["event"]["objects"].as_u64().unwrap() >= 1, "{hold}");
    let _ = a.child.kill();
    let mut b = b;
    let _ = b.child.kill();
}
