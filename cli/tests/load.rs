//! Many devices at once: 200 real agents (each its own store in its own directory, its own
//! token and stream) against one `verbatim receive` process on 127.0.0.1. Every device first
//! makes contact (its start-up records go up; the archive checks its token once with Argon2id,
//! then caches it), then all capture and upload at the same instant. The archive keeps every
//! record (200 streams, each contiguous with a verified chain), the upload path stays within
//! bounded memory (the receiver's peak RSS, from /proc/<pid>/status VmHWM), and the test prints
//! its throughput.
//!
//! Scale it: VERBATIM_LOAD_DEVICES (default 200), VERBATIM_LOAD_EVENTS per device (default 60),
//! VERBATIM_LOAD_TEXT_BYTES per message (default 2000); VERBATIM_LOAD_RECEIVER_BIN runs another
//! `verbatim` build as the receiver (a release build, for figures). `-- --nocapture` shows the
//! figures (docs/reliability.md).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use verbatim_core::model::*;
use verbatim_core::synth::{BUSINESS_LINE, sample_policy};
use verbatim_core::upload::{NetworkState, StopReason, UploadOptions};
use verbatim_core::{Agent, AgentOptions, Value};

const BIN: &str = env!("CARGO_BIN_EXE_verbatim");
const TENANT: &str = "acme-securities";
const MB: u64 = 1024;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The receiver child; killed if the test fails.
struct ReceiverProc(Child);

impl Drop for ReceiverProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A field of /proc/<pid>/status, in kB.
fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn open_files_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX)
}

fn message(device: u64, n: u64, text: &str) -> Event {
    Event::Message(Message {
        meta: EventMeta {
            channel: Channel::Whatsapp,
            line: BUSINESS_LINE.into(),
            conversation_id: format!("conv-{}", n % 5),
            source_id: format!("d{device}-m{n}"),
            source_time_ms: 1_767_225_600_000 + n as i64,
        },
        direction: Direction::Outbound,
        sender: BUSINESS_LINE.into(),
        recipients: vec!["+442079460001".into()],
        text: text.to_string(),
        attachment_ids: vec![],
        reply_to: None,
    })
}

/// Figures of one run (kB for memory).
#[derive(Debug)]
struct Figures {
    first_contact_secs: f64,
    /// Receiver peak RSS over start-up and every device's first contact.
    first_contact_peak_kb: u64,
    /// Receiver RSS when the concurrent uploads began, and its peak during them.
    upload_start_kb: u64,
    upload_peak_kb: u64,
    upload_secs: f64,
    records: u64,
    bytes: u64,
    retries: u64,
}

/// Runs `devices` agents; first contact `wave` devices at a time, then everything at once.
fn run(devices: u64, events: u64, text_bytes: usize, wave: usize) -> Figures {
    // Each agent holds about eight descriptors (store, log, index, reader, lock, socket).
    assert!(
        open_files_limit() >= devices * 10 + 256,
        "this test needs `ulimit -n` of at least {} for {devices} agents in one process",
        devices * 10 + 256
    );
    let dir = tempfile::tempdir().unwrap();
    let key = verbatim_receiver::keygen(&dir.path().join("key")).unwrap();
    let public: [u8; 32] = base64::engine::general_purpose::STANDARD.decode(&key.public_b64).unwrap().try_into().unwrap();
    let data = dir.path().join("archive");
    let tokens = dir.path().join("tokens.jsonl");
    let tokens_out: Vec<String> = (0..devices)
        .map(|d| verbatim_receiver::add_device(&tokens, TENANT, &format!("load-{d:04}")).unwrap().expose().to_string())
        .collect();

    // The archive, as its own process: its memory is its own.
    let receiver_bin = std::env::var("VERBATIM_LOAD_RECEIVER_BIN").unwrap_or_else(|_| BIN.to_string());
    let mut child = Command::new(&receiver_bin)
        .args(["receive", "--listen", "127.0.0.1:0", "--self-signed", "--data"])
        .arg(&data)
        .arg("--tokens")
        .arg(&tokens)
        .arg("--archive-key")
        .arg(&key.public_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let receiver = ReceiverProc(child);
    let pid = receiver.0.id();
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines.next().expect("receiver output").unwrap();
        if let Some(u) = line.strip_prefix("listening on ") {
            break u.to_string();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    let ca = std::fs::read_to_string(data.join("ca.pem")).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
    let s = |v: &str| Value::String(v.to_string());
    let session = || UploadOptions::new(Duration::from_secs(120), NetworkState::Unmetered);

    // First contact: each device starts (store, policy) and uploads its start-up records.
    let started = Instant::now();
    let agents: Vec<Agent> = rt.block_on(async {
        let mut out = Vec::new();
        for group in (0..devices).collect::<Vec<_>>().chunks(wave) {
            let mut tasks = Vec::new();
            for &d in group {
                let device_dir = dir.path().join(format!("device-{d:04}"));
                let policy = sample_policy(
                    &url,
                    &public,
                    &tokens_out[d as usize],
                    &[
                        ("tenant_id", s(TENANT)),
                        ("device_id", s(&format!("load-{d:04}"))),
                        ("archive_ca_pem", s(&ca)),
                        ("max_batch_kb", Value::Integer(256)),
                    ],
                );
                tasks.push(tokio::spawn(async move {
                    let agent = tokio::task::spawn_blocking(move || Agent::open(&device_dir, AgentOptions::default()).unwrap())
                        .await
                        .unwrap();
                    agent.apply_policy(&policy).await.unwrap();
                    for _ in 0..5 {
                        if agent.upload(session()).await.stopped == StopReason::Done {
                            break;
                        }
                    }
                    assert_eq!(agent.status().queue_records, 0);
                    agent
                }));
            }
            for t in tasks {
                out.push(t.await.unwrap());
            }
        }
        out
    });
    let first_contact_secs = started.elapsed().as_secs_f64();
    let first_contact_peak_kb = status_kb(pid, "VmHWM:");

    // Everything at once: capture, then every device uploads at the same instant. The peak is
    // reset first (writing 5 to clear_refs), so it counts this phase alone.
    assert!(std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok(), "cannot reset the receiver's peak RSS");
    let upload_start_kb = status_kb(pid, "VmRSS:");
    let text: Arc<str> = "x".repeat(text_bytes).into();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for (d, agent) in agents.iter().enumerate() {
            let (agent, text) = (agent.clone(), text.clone());
            tasks.push(tokio::spawn(async move {
                for n in 0..events {
                    agent.capture(message(d as u64, n, &text)).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    let written: Vec<(String, u64)> = agents.iter().map(|a| (a.stream().unwrap().device, a.status().last_seq)).collect();
    let upload_started = Instant::now();
    let reports = rt.block_on(async {
        let tasks: Vec<_> = agents
            .iter()
            .map(|agent| {
                let agent = agent.clone();
                tokio::spawn(async move {
                    let (mut records, mut bytes, mut retries) = (0u64, 0u64, 0u64);
                    for _ in 0..5 {
                        let r = agent.upload(session()).await;
                        records += r.records_sent;
                        bytes += r.bytes_sent;
                        retries += r.retries as u64;
                        match r.stopped {
                            StopReason::Done => return (records, bytes, retries),
                            StopReason::Deadline => continue,
                            _ => panic!("upload failed: {r:?}"),
                        }
                    }
                    panic!("upload did not complete in 5 sessions");
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    let upload_secs = upload_started.elapsed().as_secs_f64();
    let upload_peak_kb = status_kb(pid, "VmHWM:");
    for agent in &agents {
        assert_eq!(agent.status().queue_records, 0);
        rt.block_on(agent.close()).unwrap();
    }
    drop(rt);

    // The archive holds every record: one contiguous, verified stream per device, through the
    // last record each device wrote.
    let v = verbatim_receiver::verify(&data).unwrap();
    assert!(v.ok(), "{}", v.to_text());
    assert_eq!(v.streams.len() as u64, devices);
    let mut held: Vec<(String, u64)> = v.streams.iter().map(|s| (s.device.clone(), s.contiguous_through)).collect();
    held.sort();
    let mut written = written;
    written.sort();
    assert_eq!(held, written, "every stream is held complete, through the last record its device wrote");
    drop(receiver);
    Figures {
        first_contact_secs,
        first_contact_peak_kb,
        upload_start_kb,
        upload_peak_kb,
        upload_secs,
        records: reports.iter().map(|r| r.0).sum(),
        bytes: reports.iter().map(|r| r.1).sum(),
        retries: reports.iter().map(|r| r.2).sum(),
    }
}

#[test]
fn two_hundred_devices_upload_at_once_and_the_archive_keeps_every_record_in_bounded_memory() {
    let devices = env_or("VERBATIM_LOAD_DEVICES", 200);
    let events = env_or("VERBATIM_LOAD_EVENTS", 60);
    let text_bytes = env_or("VERBATIM_LOAD_TEXT_BYTES", 2000) as usize;
    let f = run(devices, events, text_bytes, 8);
    assert!(f.records >= devices * events, "{f:?}");
    let mb = f.bytes as f64 / 1e6;
    println!(
        "load: {devices} devices x {events} events of {text_bytes} bytes, uploading at once: {} records, {mb:.1} MB in {:.1} s = \
         {:.0} records/s, {:.1} MB/s ({} retries after 503 busy); receiver RSS {:.0} MB at the start of the uploads, peak {:.0} MB \
         during them (+{:.0} MB); first contact of all devices (8 at a time) {:.1} s, receiver peak {:.0} MB",
        f.records,
        f.upload_secs,
        f.records as f64 / f.upload_secs,
        mb / f.upload_secs,
        f.retries,
        f.upload_start_kb as f64 / 1024.0,
        f.upload_peak_kb as f64 / 1024.0,
        f.upload_peak_kb.saturating_sub(f.upload_start_kb) as f64 / 1024.0,
        f.first_contact_secs,
        f.first_contact_peak_kb as f64 / 1024.0,
    );
    // The upload path is bounded: at most 16 requests are handled at once (503 beyond), each
    // holding one batch (256 KB here) and its decoded form; the store streams. 128 MB over the
    // level the uploads started from is several times what that needs.
    let grew = f.upload_peak_kb.saturating_sub(f.upload_start_kb);
    assert!(grew < 128 * MB, "receiver RSS grew by {grew} kB during the uploads: {f:?}");
}

/// Known bug (docs/reliability.md): the receiver's RSS grows with every device it
/// authenticates for the first time. Argon2id allocates 19 MiB per verification
/// (receiver/src/tokens.rs `authenticate`); once the first such block is freed, glibc raises its
/// mmap threshold and later blocks come from the malloc arenas, which keep them: about 7-15 MB
/// per device (200 devices at once: 3.0 GB; 8 at a time: 1.5-2 GB). A receiver restarted under
/// thousands of devices runs out of memory. Confirmed: with
/// `GLIBC_TUNABLES=glibc.malloc.mmap_threshold=4194304` this test passes. Fix: verify with a
/// bounded pool of reused Argon2 memory blocks (`hash_password_into_with_memory`) behind a
/// semaphore, then un-ignore this test.
#[test]
fn first_contact_of_two_hundred_devices_stays_within_bounded_memory() {
    let f = run(200, 1, 100, 200);
    assert!(
        f.first_contact_peak_kb < 512 * MB,
        "receiver peak RSS {} MB over first contact: {f:?}",
        f.first_contact_peak_kb / 1024
    );
}
