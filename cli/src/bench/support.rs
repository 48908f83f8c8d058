//! `verbatim bench`: shared helpers.

#[allow(unused_imports)]
use super::*;

pub(super) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(1)
}

/// 1 KiB of message text (letters and spaces: no JSON escaping, so the record is what it says).
pub(super) fn message_text() -> Arc<str> {
    let mut rng = synth::Rng::new(1024);
    let mut bytes = vec![0u8; TEXT_LEN];
    rng.fill(&mut bytes);
    let alphabet = b"abcdefghijklmnopqrstuvwxyz      ";
    let text: String = bytes.iter().map(|b| alphabet[(*b as usize) % alphabet.len()] as char).collect();
    Arc::from(text)
}

pub(super) fn message(text: &str, source_id: String) -> Event {
    Event::Message(Message {
        meta: EventMeta {
            channel: Channel::Whatsapp,
            line: synth::BUSINESS_HANDLE.into(),
            conversation_id: "conv-bench".into(),
            source_id,
            source_time_ms: now_ms(),
        },
        direction: Direction::Outbound,
        sender: synth::BUSINESS_HANDLE.into(),
        recipients: vec!["+44 20 7946 0018".into()],
        text: text.to_string(),
        attachment_ids: Vec::new(),
        reply_to: None,
    })
}

/// Bytes of the sealed record of one benchmark message (plaintext + the AES-GCM tag).
pub(super) fn ciphertext_len(text: &str) -> usize {
    let Event::Message(m) = message(text, "m-0-0000000".into()) else { unreachable!() };
    Record::new(now_ms(), RecordBody::Message(m)).encode().len() + 16
}

pub(super) fn policy(url: &str, public: &[u8; 32], token: &str, device: &str, batch_kb: u32, ca_pem: Option<&str>) -> Value {
    let s = |v: &str| Value::String(v.to_string());
    let mut overrides = vec![
        ("tenant_id", s(TENANT)),
        ("device_id", s(device)),
        ("max_batch_kb", Value::Integer(batch_kb as i64)),
        // A million 1 KiB events need more than the default 512 MiB.
        ("queue_max_mb", Value::Integer(4096)),
    ];
    if let Some(ca) = ca_pem {
        overrides.push(("archive_ca_pem", s(ca)));
    }
    synth::sample_policy(url, public, token, &overrides)
}

pub(super) fn runtime() -> BenchResult<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().map_err(|e| format!("tokio runtime: {e}"))
}

/// An agent in `dir` under a capture-only policy (the archive is never contacted).
pub(super) fn capture_agent(rt: &tokio::runtime::Runtime, dir: &Path) -> BenchResult<Agent> {
    let (_, public) = verbatim_core::seal::generate_archive_keypair();
    let agent = Agent::open(dir, AgentOptions::default()).map_err(|e| format!("open agent: {e}"))?;
    let p = policy(NO_ARCHIVE, &public, "bench-token-never-sent", "bench-device", 1024, None);
    rt.block_on(agent.apply_policy(&p)).map_err(|e| format!("policy: {e}"))?;
    Ok(agent)
}

/// Captures `events` messages with `in_flight` concurrent tasks (group commits fill up).
pub(super) async fn fill(agent: &Agent, events: u64, in_flight: usize, text: &Arc<str>, tag: &str) -> BenchResult<f64> {
    let started = Instant::now();
    let workers = (in_flight as u64).min(events.max(1));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..workers {
        let n = events / workers + u64::from(w < events % workers);
        let (agent, text, tag) = (agent.clone(), text.clone(), tag.to_string());
        tasks.spawn(async move {
            for i in 0..n {
                match agent.capture(message(&text, format!("{tag}-{w}-{i}"))).await {
                    Ok(CaptureOutcome::Captured { .. }) => {}
                    Ok(other) => return Err(format!("capture: unexpected {other:?}")),
                    Err(e) => return Err(format!("capture: {e}")),
                }
            }
            Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.map_err(|e| format!("capture task: {e}"))??;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Uploads until the queue is empty; returns (records, bytes, batches, seconds).
pub(super) async fn drain(agent: &Agent) -> BenchResult<(u64, u64, u64, f64)> {
    let started = Instant::now();
    let (mut records, mut bytes, mut batches) = (0, 0, 0);
    for _ in 0..100 {
        let r = agent.upload(UploadOptions::new(Duration::from_secs(600), NetworkState::Unmetered)).await;
        records += r.records_sent;
        bytes += r.bytes_sent;
        batches += r.batches;
        match r.stopped {
            StopReason::Done => return Ok((records, bytes, batches, started.elapsed().as_secs_f64())),
            StopReason::Deadline => continue,
            other => return Err(format!("upload stopped: {other:?} {}", r.detail.unwrap_or_default())),
        }
    }
    Err("upload did not finish in 100 sessions".into())
}

pub(super) fn percentile_ms(sorted_ns: &[u64], p: f64) -> f64 {
    if sorted_ns.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted_ns.len() as f64).ceil() as usize;
    sorted_ns[rank.clamp(1, sorted_ns.len()) - 1] as f64 / 1e6
}

pub(super) fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let n = values.len();
    if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 }
}

pub(super) fn fresh_dir(base: &Path, name: &str) -> BenchResult<PathBuf> {
    let d = base.join(name);
    if d.exists() {
        std::fs::remove_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
    Ok(d)
}

pub(super) fn remove(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}

pub(super) fn exe() -> BenchResult<PathBuf> {
    std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))
}

/// Runs a child and returns the last JSON line it printed; kills it (by its id) after `limit`.
pub(super) fn child_json(mut cmd: Command, limit: Duration) -> BenchResult<Json> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("spawn child: {e}"))?;
    let mut stdout = child.stdout.take().ok_or("child stdout")?;
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
        text
    });
    let status = wait_limited(&mut child, limit)?;
    let text = reader.join().unwrap_or_default();
    if !status.success() {
        return Err(format!("child failed ({status})"));
    }
    let line = text.lines().rev().find(|l| l.trim_start().starts_with('{')).ok_or("child printed no JSON")?;
    serde_json::from_str(line).map_err(|e| format!("child JSON: {e}"))
}

/// Waits for our own child; kills it (by its id) when it runs longer than `limit`.
pub(super) fn wait_limited(child: &mut std::process::Child, limit: Duration) -> BenchResult<std::process::ExitStatus> {
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if started.elapsed() < limit => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("child did not finish within {} s (killed)", limit.as_secs()));
            }
            Err(e) => return Err(format!("wait for child: {e}")),
        }
    }
}

pub(super) fn proc_status_kib(pid: Option<u32>, key: &str) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".to_string(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub(super) fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
