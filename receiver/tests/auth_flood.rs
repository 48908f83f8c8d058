//! An unauthenticated flood must not take capacity from authenticated devices
//! (docs/reliability.md, "Unauthenticated flood"). `ATTACKERS` clients, each on its own
//! connection, send batches with random bearer tokens as fast as the receiver answers them,
//! while one real device runs `SESSIONS` upload sessions (a cursor query, then `BATCHES`
//! batches), each with the deadline a phone's background window gives it. Every session must
//! complete within its deadline; the figures (sessions within the deadline, request latency
//! p50/p99, what the attackers got) are printed with `-- --nocapture`.
//!
//! The flood is bounded in time and count, on loopback only: the device on 127.0.0.1, each
//! attacker from its own loopback address (127.0.1.x), as a flood from many hosts would come.
//! The device starts once the flood is in its steady state (every attacker answered, and
//! `WARM_UP_ANSWERS_PER_CLIENT` answers per client in all). Scale it: VERBATIM_FLOOD_CLIENTS
//! (default 32, at most 250), VERBATIM_FLOOD_SESSIONS (default 5).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::*;
use verbatim_core::wire::{CONTENT_TYPE, Cursor};
use verbatim_receiver::{Receiver, add_device, verify};

/// A phone's upload window (the finding: 3 of 5 sessions missed it under the flood).
const DEADLINE: Duration = Duration::from_secs(5);
const BATCHES: u64 = 4;
const RECORDS_PER_BATCH: u64 = 25;
/// The flood stops after this long or this many requests per client, whichever comes first.
const FLOOD_MAX: Duration = Duration::from_secs(60);
const FLOOD_MAX_REQUESTS: u64 = 50_000;
const WARM_UP_ANSWERS_PER_CLIENT: u64 = 4;
/// Between two sessions, as between two background wake-ups of a phone: the flood goes on.
const SESSION_GAP: Duration = Duration::from_secs(2);

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A well-formed token nobody issued.
fn random_token() -> String {
    let mut id = [0u8; 16];
    let mut secret = [0u8; 32];
    getrandom::fill(&mut id).unwrap();
    getrandom::fill(&mut secret).unwrap();
    use base64::Engine as _;
    format!("vbt1.{}.{}", hex::encode(id), base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret))
}

#[derive(Default)]
struct AttackerAnswers {
    unauthorized: AtomicU64,
    rate_limited: AtomicU64,
    unavailable: AtomicU64,
    other: AtomicU64,
    failed: AtomicU64,
}

impl AttackerAnswers {
    fn total(&self) -> u64 {
        [&self.unauthorized, &self.rate_limited, &self.unavailable, &self.other, &self.failed]
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }
}

/// One request of the device, retried on 503/429 after `Retry-After` while the deadline
/// allows (as the core's uploader does). Returns the answer's status and body, and how long
/// the request took including its retries.
async fn device_request(make: impl Fn() -> reqwest::RequestBuilder, deadline: Instant) -> (u16, String, Duration) {
    let started = Instant::now();
    loop {
        let resp = make().send().await.unwrap();
        let status = resp.status().as_u16();
        let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let body = resp.text().await.unwrap();
        if matches!(status, 429 | 503) {
            let wait = Duration::from_secs(retry_after.unwrap_or(1));
            if Instant::now() + wait < deadline {
                tokio::time::sleep(wait).await;
                continue;
            }
        }
        return (status, body, started.elapsed());
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

#[test]
fn an_unauthenticated_flood_does_not_starve_a_real_device() {
    let attackers = env_or("VERBATIM_FLOOD_CLIENTS", 32).clamp(1, 250) as usize;
    let sessions = env_or("VERBATIM_FLOOD_SESSIONS", 5);
    let dir = tempfile::tempdir().unwrap();
    // The receiver on its own thread and runtime, as a separate server would be.
    let rx = Receiver::start_in_background(config(dir.path())).unwrap();
    let token = add_device(&tokens_path(dir.path()), "acme", "dev-1").unwrap();
    let ca = rx.ca_pem().unwrap().to_string();
    let url = rx.url();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    let mut dev = Device::new(&archive_keys(), "acme", "dev-1", "s-1");
    dev.push_n((sessions * BATCHES * RECORDS_PER_BATCH) as usize);
    let garbage_batch = dev.batch(1, 1).encode();

    let answers = Arc::new(AttackerAnswers::default());
    let stop = Arc::new(AtomicBool::new(false));
    let (results, latencies) = rt.block_on(async {
        // The flood: every client answered at least once before the device starts.
        let (first_tx, mut first_rx) = tokio::sync::mpsc::channel::<()>(attackers);
        let warmed = Arc::new(tokio::sync::Notify::new());
        let flood_started = Instant::now();
        let mut flood = Vec::new();
        for i in 0..attackers {
            let source = std::net::IpAddr::from([127, 0, 1, 1 + i as u8]);
            let client = reqwest::Client::builder()
                .tls_backend_preconfigured(verbatim_receiver::tls::client_config(&ca).unwrap())
                .local_address(source)
                .build()
                .unwrap();
            let (url, body, answers, stop, first, warmed) =
                (url.clone(), garbage_batch.clone(), answers.clone(), stop.clone(), first_tx.clone(), warmed.clone());
            flood.push(tokio::spawn(async move {
                let started = Instant::now();
                let mut sent = 0u64;
                while !stop.load(Ordering::Relaxed) && started.elapsed() < FLOOD_MAX && sent < FLOOD_MAX_REQUESTS {
                    sent += 1;
                    let r = client
                        .post(format!("{url}/v1/batches"))
                        .header("content-type", CONTENT_TYPE)
                        .bearer_auth(random_token())
                        .body(body.clone())
                        .send()
                        .await;
                    let counter = match r.as_ref().map(|r| r.status().as_u16()) {
                        Ok(401) => &answers.unauthorized,
                        Ok(429) => &answers.rate_limited,
                        Ok(503) => &answers.unavailable,
                        Ok(_) => &answers.other,
                        Err(_) => &answers.failed,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    if answers.total() == attackers as u64 * WARM_UP_ANSWERS_PER_CLIENT {
                        warmed.notify_one();
                    }
                    if let Ok(r) = r {
                        let _ = r.bytes().await;
                    }
                    if sent == 1 {
                        let _ = first.send(()).await;
                    }
                }
            }));
        }
        drop(first_tx);
        for _ in 0..attackers {
            first_rx.recv().await.expect("every attacker got a first answer");
        }
        warmed.notified().await;
        let warm_up = flood_started.elapsed();
        let answers_before = answers.total();
        let device_started = Instant::now();

        // The device: sessions one after another, each with its deadline.
        let device = client(&ca);
        let mut results = Vec::new();
        let mut latencies = Vec::new();
        for s in 0..sessions {
            if s > 0 {
                tokio::time::sleep(SESSION_GAP).await;
            }
            let started = Instant::now();
            let deadline = started + DEADLINE;
            let session = async {
                let (status, body, took) =
                    device_request(|| device.get(format!("{url}/v1/streams/s-1/cursor")).bearer_auth(token.expose()), deadline)
                        .await;
                latencies.push(took);
                if status != 200 {
                    return Err(format!("cursor answered {status}: {body}"));
                }
                let cursor: Cursor = serde_json::from_str(&body).unwrap();
                assert_eq!(cursor.acked_through, s * BATCHES * RECORDS_PER_BATCH);
                for b in 0..BATCHES {
                    let first = cursor.acked_through + b * RECORDS_PER_BATCH + 1;
                    let batch = dev.batch(first, first + RECORDS_PER_BATCH - 1).encode();
                    let (status, body, took) = device_request(
                        || {
                            device
                                .post(format!("{url}/v1/batches"))
                                .header("content-type", CONTENT_TYPE)
                                .bearer_auth(token.expose())
                                .body(batch.clone())
                        },
                        deadline,
                    )
                    .await;
                    latencies.push(took);
                    if status != 200 {
                        return Err(format!("batch answered {status}: {body}"));
                    }
                }
                Ok(())
            };
            let outcome = match tokio::time::timeout(DEADLINE, session).await {
                Ok(r) => r,
                Err(_) => Err("deadline passed".to_string()),
            };
            results.push((outcome, started.elapsed()));
        }
        let during = (answers.total() - answers_before, device_started.elapsed());
        stop.store(true, Ordering::Relaxed);
        for t in flood {
            t.await.unwrap();
        }
        eprintln!(
            "flood: steady after {} ms; {} attacker answers while the device ran ({:.0}/s)",
            warm_up.as_millis(),
            during.0,
            during.0 as f64 / during.1.as_secs_f64()
        );
        (results, latencies)
    });
    rx.shutdown();

    let within = results.iter().filter(|(r, _)| r.is_ok()).count();
    let mut sorted = latencies.clone();
    sorted.sort();
    let sessions_ms: Vec<u128> = results.iter().map(|(_, d)| d.as_millis()).collect();
    eprintln!(
        "flood: {attackers} clients with random tokens, {} answers (401: {}, 429: {}, 503: {}, other: {}, failed: {}); \
         device: {within} of {sessions} sessions within {} s (session ms {sessions_ms:?}), {} requests, latency p50 {} ms, p99 {} ms",
        answers.total(),
        answers.unauthorized.load(Ordering::Relaxed),
        answers.rate_limited.load(Ordering::Relaxed),
        answers.unavailable.load(Ordering::Relaxed),
        answers.other.load(Ordering::Relaxed),
        answers.failed.load(Ordering::Relaxed),
        DEADLINE.as_secs(),
        sorted.len(),
        percentile(&sorted, 0.50).as_millis(),
        percentile(&sorted, 0.99).as_millis(),
    );
    assert_eq!(within as u64, sessions, "sessions within their deadline: {results:?}");
    let report = verify(dir.path()).unwrap();
    assert!(report.ok());
    assert_eq!(report.totals.records, sessions * BATCHES * RECORDS_PER_BATCH);
}
