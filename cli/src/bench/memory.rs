//! `verbatim bench`: 4: memory, in child processes, with the receiver in another.

#[allow(unused_imports)]
use super::*;

pub(super) struct ReceiverChild {
    pub(super) child: std::process::Child,
    pub(super) url: String,
    pub(super) ca: PathBuf,
    pub(super) tokens: PathBuf,
}

impl ReceiverChild {
    /// A receiver in `dir` accepting epochs sealed to `public`.
    pub(super) fn start(dir: &Path, public: &[u8; 32]) -> BenchResult<ReceiverChild> {
        let tokens = dir.join("tokens.jsonl");
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let key_file = dir.join(verbatim_receiver::keys::PUBLIC_KEY_FILE);
        let key_line = format!("{}\n", base64::engine::general_purpose::STANDARD.encode(public));
        std::fs::write(&key_file, key_line).map_err(|e| format!("{}: {e}", key_file.display()))?;
        let mut child = Command::new(exe()?)
            .args(["receive", "--listen", "127.0.0.1:0", "--self-signed", "--data"])
            .arg(dir)
            .arg("--tokens")
            .arg(&tokens)
            .arg("--archive-key")
            .arg(&key_file)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn receiver: {e}"))?;
        let stdout = child.stdout.take().ok_or("receiver stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let (mut url, mut ca) = (None, None);
        while url.is_none() || ca.is_none() {
            let Some(Ok(line)) = lines.next() else {
                let _ = child.kill();
                let _ = child.wait();
                return Err("the receiver exited before listening".into());
            };
            if let Some(u) = line.strip_prefix("listening on ") {
                url = Some(u.trim().to_string());
            } else if let Some(rest) = line.strip_prefix("CA certificate: ") {
                ca = rest.split(" (").next().map(PathBuf::from);
            }
        }
        // Keep draining its stdout so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(ReceiverChild { child, url: url.unwrap_or_default(), ca: ca.unwrap_or_default(), tokens })
    }

    pub(super) fn peak_kib(&self) -> Option<u64> {
        proc_status_kib(Some(self.child.id()), "VmHWM:")
    }
}

impl Drop for ReceiverChild {
    fn drop(&mut self) {
        // Our own child, by its id.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(super) fn bench_memory(report: &mut Report, plan: &Plan, base: &Path, batch_kb: u32) -> BenchResult<()> {
    let dir = fresh_dir(base, "memory")?;
    let (_, public) = verbatim_core::seal::generate_archive_keypair();
    let receiver = ReceiverChild::start(&dir.join("archive"), &public)?;
    let public_b64 = base64::engine::general_purpose::STANDARD.encode(public);
    let mut results = Vec::new();
    for (label, events) in [("small", plan.memory_small), ("large", plan.memory_large)] {
        let device = format!("bench-memory-{label}");
        let token = verbatim_receiver::add_device(&receiver.tokens, TENANT, &device).map_err(|e| format!("add device: {e}"))?;
        let device_dir = dir.join(&device);
        let mut cmd = Command::new(exe()?);
        cmd.args(["bench", "memory-child", "--events", &events.to_string(), "--url", &receiver.url, "--public-key", &public_b64])
            .args(["--device", &device, "--batch-kb", &batch_kb.to_string()])
            .arg("--ca")
            .arg(&receiver.ca)
            .arg("--dir")
            .arg(&device_dir)
            .env("VERBATIM_BENCH_TOKEN", token.expose());
        let out = child_json(cmd, Duration::from_secs(if plan.quick { 120 } else { 1800 }))?;
        remove(&device_dir);
        eprintln!("  {events} events: {out}");
        results.push((events, out));
    }
    let receiver_peak = receiver.peak_kib();
    drop(receiver);
    remove(&dir);
    let kib = |o: &Json| o["vmhwm_kib"].as_u64().unwrap_or(0);
    let (small, large) = (&results[0], &results[1]);
    let growth = kib(&large.1) as f64 / kib(&small.1).max(1) as f64 - 1.0;
    let flat = growth <= 0.10;
    let below = mib(kib(&large.1)) < 64.0;
    for (events, out) in &results {
        if out["uploaded"].as_u64().unwrap_or(0) < *events {
            return Err(format!("memory child uploaded {} of {events}", out["uploaded"]));
        }
    }
    report.rows.push(
        Row::new(
            format!("peak RSS, capture + upload {} events", large.0),
            format!(
                "{:.1} MiB ({:+.1}% vs {} events: {:.1} MiB)",
                mib(kib(&large.1)),
                growth * 100.0,
                small.0,
                mib(kib(&small.1))
            ),
        )
        .baseline(format!("receiver (other process) peak {:.1} MiB", mib(receiver_peak.unwrap_or(0))))
        .goal("flat (<= +10%) and < 64 MiB", flat && below),
    );
    report.json.insert(
        "memory".into(),
        json!({
            "small": { "events": small.0, "result": small.1 },
            "large": { "events": large.0, "result": large.1 },
            "growth": round(growth, 4),
            "receiver_vmhwm_kib": receiver_peak,
        }),
    );
    Ok(())
}

pub(super) fn memory_child(a: MemoryChildArgs) -> BenchResult<()> {
    let token = std::env::var("VERBATIM_BENCH_TOKEN").map_err(|_| "VERBATIM_BENCH_TOKEN is not set")?;
    let ca = std::fs::read_to_string(&a.ca).map_err(|e| format!("{}: {e}", a.ca.display()))?;
    let public: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(a.public_key.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("--public-key is not a base64 32-byte key")?;
    let rt = runtime()?;
    let text = message_text();
    let agent = Agent::open(&a.dir, AgentOptions::default()).map_err(|e| format!("open agent: {e}"))?;
    let p = policy(&a.url, &public, &token, &a.device, a.batch_kb, Some(&ca));
    // RSS sampled every 10 ms, to tell where the peak happens (capture or upload).
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let mut samples: Vec<(f64, u64)> = Vec::new();
            let t0 = Instant::now();
            while sampling.load(Ordering::Relaxed) {
                if let Some(kib) = proc_status_kib(None, "VmRSS:") {
                    samples.push((t0.elapsed().as_secs_f64(), kib));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            samples
        })
    };
    let started = Instant::now();
    let (capture_secs, after_capture_kib, uploaded, upload_secs) = rt.block_on(async {
        agent.apply_policy(&p).await.map_err(|e| format!("policy: {e}"))?;
        let capture_secs = fill(&agent, a.events, MEMORY_IN_FLIGHT, &text, "mem").await?;
        let after_capture = proc_status_kib(None, "VmHWM:");
        let (records, _, _, upload_secs) = drain(&agent).await?;
        agent.close().await.map_err(|e| format!("close: {e}"))?;
        Ok::<_, String>((capture_secs, after_capture, records, upload_secs))
    })?;
    drop(agent);
    drop(rt);
    sampling.store(false, Ordering::Relaxed);
    let samples = sampler.join().unwrap_or_default();
    let capture_end = started.elapsed().as_secs_f64() - upload_secs;
    let peak_in = |from: f64, to: f64| samples.iter().filter(|(t, _)| *t >= from && *t < to).map(|(_, k)| *k).max();
    let peak_at = samples.iter().max_by_key(|(_, k)| *k).map(|(t, _)| round(*t - capture_end, 2));
    let out = json!({
        "sampled_peak_capture_kib": peak_in(0.0, capture_end),
        "sampled_peak_upload_kib": peak_in(capture_end, f64::MAX),
        "sampled_peak_secs_after_upload_start": peak_at,
        "events": a.events,
        "uploaded": uploaded,
        "capture_secs": round(capture_secs, 2),
        "upload_secs": round(upload_secs, 2),
        "vmhwm_after_capture_kib": after_capture_kib,
        "vmhwm_kib": proc_status_kib(None, "VmHWM:"),
        "vmrss_kib": proc_status_kib(None, "VmRSS:"),
        "rss_anon_kib": proc_status_kib(None, "RssAnon:"),
        "rss_file_kib": proc_status_kib(None, "RssFile:"),
        "rss_shmem_kib": proc_status_kib(None, "RssShmem:"),
    });
    outln!("{out}");
    Ok(())
}
