//! `verbatim demo`: the whole product on this machine, in seconds. An archive (key pair,
//! receiver over TLS on 127.0.0.1 with a self-signed CA), a managed device (policy trusting and
//! pinning that CA), a realistic mixed workload captured concurrently, uploads through injected
//! faults and a device restart, then the archive's own verification and export, compared with
//! what the device captured.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::output::outln;
use base64::Engine;
use serde::Serialize;
use verbatim_core::synth::{self, SynthEvent, Workload, WorkloadOptions};
use verbatim_core::upload::{NetworkState, StopReason, UploadOptions, UploadReport};
use verbatim_core::{Agent, AgentOptions, CaptureOutcome, Value};
use verbatim_receiver::{AcceptedKeys, FaultPlan, Receiver, ReceiverConfig};

const TENANT: &str = "acme-securities";
const DEVICE: &str = "demo-iphone-01";

#[derive(clap::Args)]
pub struct DemoArgs {
    /// How many synthetic conversation events the device captures.
    #[arg(long, default_value_t = 2000)]
    pub events: u64,
    /// Print the report as one JSON object on the last line.
    #[arg(long)]
    pub json: bool,
    /// Working directory (kept, so the export can be read). Default: a new one under the
    /// system temp directory, removed at the end unless --keep (or the run failed).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the default working directory (archive, device store, export) after a successful run.
    #[arg(long)]
    pub keep: bool,
    /// Size of the one large attachment, in MiB (streamed in 64 KiB chunks).
    #[arg(long, default_value_t = 24)]
    pub large_attachment_mb: usize,
}

/// The report; the field names are the JSON contract of `--json`.
#[derive(Debug, Serialize)]
pub struct DemoReport {
    /// Events handed to the agent: the workload's `--events` plus the large attachments.
    pub handed_over: u64,
    /// Of those, the one large attachment (0 with `--large-attachment-mb 0`).
    pub large_attachments: u64,
    pub captured: u64,
    pub archived: u64,
    pub out_of_scope: u64,
    pub missing: u64,
    pub duplicates: u64,
    pub leaked_out_of_scope: u64,
    pub gaps: u64,
    pub chain_verified: bool,
    pub alerts: u64,
    pub records: u64,
    pub agent_events: u64,
    pub attachments: u64,
    pub attachments_verified: bool,
    pub faults_injected: usize,
    pub faults_met: usize,
    pub upload_sessions: usize,
    pub device_restarts: u32,
    pub capture_events_per_s: f64,
    pub upload_records_per_s: f64,
    pub upload_mb_per_s: f64,
    pub export_dir: String,
    /// The working directory, and whether it is kept after the run.
    pub work_dir: String,
    pub kept: bool,
    pub ok: bool,
}

/// Progress goes to stderr, so `--json` keeps stdout clean for the report.
fn progress(text: &str) {
    eprintln!("  {text}");
}

pub fn run(args: DemoArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: tokio runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let dir = match work_dir(&args) {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(demo(&args, &dir)) {
        Ok(report) => {
            // The default directory holds ~200 MB (archive, device store, export): removed
            // unless asked for, or needed to look into a failure.
            let ok = report.ok;
            let kept = args.dir.is_some() || args.keep || !ok;
            if !kept && let Err(e) = std::fs::remove_dir_all(&dir) {
                eprintln!("warning: could not remove {}: {e}", dir.display());
            }
            print_report(&DemoReport { kept, ..report }, args.json);
            if kept {
                eprintln!("kept: {} (archive/, device/, export/)", dir.display());
            }
            if ok { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("kept for inspection: {}", dir.display());
            ExitCode::from(2)
        }
    }
}

type DemoResult<T> = Result<T, String>;

fn work_dir(args: &DemoArgs) -> DemoResult<PathBuf> {
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => {
            let mut b = [0u8; 4];
            getrandom::fill(&mut b).map_err(|e| e.to_string())?;
            std::env::temp_dir().join(format!("verbatim-demo-{}", hex(&b)))
        }
    };
    if dir.exists() && std::fs::read_dir(&dir).map_err(|e| e.to_string())?.next().is_some() {
        return Err(format!("{} is not empty; give a new --dir", dir.display()));
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn demo(args: &DemoArgs, dir: &Path) -> DemoResult<DemoReport> {
    eprintln!("Verbatim demo in {}", dir.display());

    // The archive: a key pair, and the receiver on loopback with a self-signed CA.
    eprintln!("[1/6] archive: key pair and receiver");
    let key = verbatim_receiver::keygen(&dir.join("archive-key")).map_err(|e| format!("keygen: {e}"))?;
    let secret = verbatim_receiver::load_secret(&key.private_path).map_err(|e| format!("archive key: {e}"))?;
    let public: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(&key.public_b64)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("archive public key")?;
    let faults = FaultPlan::new();
    let archive_dir = dir.join("archive");
    let mut config = ReceiverConfig::local_self_signed(&archive_dir, AcceptedKeys::from_public_keys([&public]));
    config.faults = Some(faults.clone());
    let tokens_file = config.tokens_file.clone();
    let receiver = Receiver::start(config).await.map_err(|e| format!("receiver: {e}"))?;
    let ca_pem = receiver.ca_pem().ok_or("receiver has no CA")?.to_string();
    progress(&format!("receiver listening on {} (key id {})", receiver.url(), key.key_id));

    // The MDM's side: a device token, and the managed policy trusting and pinning the CA.
    eprintln!("[2/6] MDM: device token and managed policy");
    let token = verbatim_receiver::add_device(&tokens_file, TENANT, DEVICE).map_err(|e| format!("add device: {e}"))?;
    let pin = server_pin(&archive_dir.join("server-cert.pem"))?;
    let s = |v: &str| Value::String(v.to_string());
    let policy = synth::sample_policy(
        &receiver.url(),
        &public,
        token.expose(),
        &[
            ("tenant_id", s(TENANT)),
            ("device_id", s(DEVICE)),
            ("archive_ca_pem", s(&ca_pem)),
            ("tls_pins", s(&pin)),
            ("max_batch_kb", Value::Integer(512)),
        ],
    );
    let device_dir = dir.join("device");
    let agent = Agent::open(&device_dir, AgentOptions::default()).map_err(|e| format!("device: {e}"))?;
    agent.apply_policy(&policy).await.map_err(|e| format!("policy: {e}"))?;
    progress("policy applied: 8 channels, 2 business lines, trusting only the archive CA, server key pinned");

    // Capture: a mixed workload from four concurrent capturers.
    let large_attachments = u64::from(args.large_attachment_mb > 0);
    let handed_over = args.events + large_attachments;
    eprintln!(
        "[3/6] device: capturing {handed_over} events ({} from the workload{})",
        args.events,
        if large_attachments > 0 { format!(" + 1 large attachment of {} MiB", args.large_attachment_mb) } else { String::new() }
    );
    let (captured_ids, out_of_scope_ids, capture_secs) = capture(&agent, dir, args).await?;
    let captured = captured_ids.len() as u64;
    let capture_rate = captured as f64 / capture_secs.max(1e-9);
    progress(&format!(
        "{captured} captured, {} dropped as out of scope, in {:.2} s ({:.0} events/s); queue {} records, {:.1} MB sealed",
        out_of_scope_ids.len(),
        capture_secs,
        capture_rate,
        agent.status().queue_records,
        agent.status().queue_bytes as f64 / 1e6
    ));

    // Upload through faults, with a device restart in the middle.
    eprintln!("[4/6] upload through injected faults");
    // Before the restart: a dropped connection, then an answer slower than the first window, so
    // that window always ends with the first batch unacknowledged and the restart happens
    // mid-upload however fast the machine is. After it, each fault but the last makes the
    // device resend the same batch, so all are met while the queue still holds records: a
    // crash before the archive's commit, an overloaded archive, a server error, a garbled
    // answer, a connection lost after the commit (so the device must resend), rate limiting,
    // and a slow answer.
    faults.drop_connection().delay(FIRST_WINDOW * 2);
    let mut injected = faults.pending();
    let after_restart = || {
        faults
            .crash_before_commit()
            .status(503, Some(1))
            .status(500, None)
            .garbage_body()
            .drop_after_commit()
            .status(429, Some(1))
            .delay(Duration::from_millis(1500));
        faults.pending()
    };
    let (sessions, restarts, sent_bytes, sent_records, upload_secs, later) =
        upload(agent, &device_dir, &policy, after_restart).await?;
    injected += later;
    let faults_met = faults.applied();
    receiver.shutdown().await;

    // The archive's side: verify the chain and continuity, open and export everything.
    eprintln!("[5/6] archive: verify and export");
    let verified = verbatim_receiver::verify(&archive_dir).map_err(|e| format!("verify: {e}"))?;
    let export_dir = dir.join("export");
    let summary = verbatim_receiver::export(&archive_dir, &secret, &export_dir).map_err(|e| format!("export: {e}"))?;
    progress(&format!(
        "{} records held, chain verified: {}, export errors: {}",
        verified.totals.records, verified.totals.ok, summary.errors
    ));

    eprintln!("[6/6] compare what the device captured with what the archive holds");
    let exported = verbatim_receiver::source_ids(&export_dir).map_err(|e| format!("reading the export: {e}"))?;
    let missing = captured_ids.iter().filter(|id| !exported.contains_key(*id)).count() as u64;
    let duplicates = exported.values().filter(|n| **n > 1).map(|n| n - 1).sum::<u64>();
    let leaked = out_of_scope_ids.iter().filter(|id| exported.contains_key(*id)).count() as u64;
    let archived = captured_ids.iter().filter(|id| exported.contains_key(*id)).count() as u64;
    let stream = verified.streams.first();
    let report = DemoReport {
        handed_over,
        large_attachments,
        captured,
        archived,
        out_of_scope: out_of_scope_ids.len() as u64,
        missing,
        duplicates,
        leaked_out_of_scope: leaked,
        gaps: verified.totals.gaps,
        chain_verified: stream.is_some_and(|s| s.chain_verified) && verified.totals.chain_failures == 0,
        alerts: verified.totals.alerts,
        records: summary.records,
        agent_events: summary.agent_events,
        attachments: summary.attachments,
        attachments_verified: summary.errors == 0,
        faults_injected: injected,
        faults_met,
        upload_sessions: sessions,
        device_restarts: restarts,
        capture_events_per_s: round1(capture_rate),
        upload_records_per_s: round1(sent_records as f64 / upload_secs.max(1e-9)),
        upload_mb_per_s: round1(sent_bytes as f64 / 1e6 / upload_secs.max(1e-9)),
        export_dir: export_dir.display().to_string(),
        work_dir: dir.display().to_string(),
        kept: true,
        ok: false,
    };
    let ok = report.missing == 0
        && report.duplicates == 0
        && report.leaked_out_of_scope == 0
        && report.gaps == 0
        && report.chain_verified
        && report.alerts == 0
        && report.attachments_verified
        && report.archived == report.captured
        // The demo shows uploading through every fault and a restart; a run that met fewer
        // did not show what it claims.
        && report.faults_met == report.faults_injected
        && report.device_restarts == 1;
    Ok(DemoReport { ok, ..report })
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The archive server certificate's SPKI pin, base64, as an admin would put it in `tls_pins`.
fn server_pin(cert_path: &Path) -> DemoResult<String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let pem = std::fs::read(cert_path).map_err(|e| format!("{}: {e}", cert_path.display()))?;
    let der = CertificateDer::from_pem_slice(&pem).map_err(|e| format!("server certificate: {e}"))?;
    let pin = verbatim_core::upload::tls::spki_sha256(der.as_ref()).ok_or("server certificate has no SPKI")?;
    Ok(base64::engine::general_purpose::STANDARD.encode(pin))
}

/// Captures the workload from four concurrent tasks. Returns the ids captured, the ids the
/// policy dropped, and the seconds it took.
async fn capture(agent: &Agent, dir: &Path, args: &DemoArgs) -> DemoResult<(BTreeSet<String>, BTreeSet<String>, f64)> {
    let mut opts = WorkloadOptions::new(2026, &dir.join("phone-files"));
    opts.large_attachment_every = 0;
    let mut workload = Workload::new(opts).map_err(|e| format!("workload: {e}"))?;
    let mut events: Vec<SynthEvent> = Vec::with_capacity(args.events as usize);
    for _ in 0..args.events {
        events.push(workload.next_event().map_err(|e| format!("workload: {e}"))?);
    }
    // One large attachment, streamed in bounded chunks whatever its size.
    if args.large_attachment_mb > 0 {
        events.push(large_attachment(dir, args.large_attachment_mb)?);
    }
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let per_task = events.len().div_ceil(4).max(1);
    let mut chunks: Vec<Vec<SynthEvent>> = Vec::new();
    while !events.is_empty() {
        let rest = events.split_off(per_task.min(events.len()));
        chunks.push(std::mem::replace(&mut events, rest));
    }
    for chunk in chunks {
        let agent = agent.clone();
        tasks.spawn(async move {
            let mut captured = Vec::new();
            let mut dropped = Vec::new();
            for e in chunk {
                let id = e.id().to_string();
                match agent.capture(e.event).await {
                    Ok(CaptureOutcome::Captured { .. }) => captured.push(id),
                    Ok(CaptureOutcome::OutOfScope) => dropped.push(id),
                    Err(err) => return Err(format!("capture of {id}: {err}")),
                }
            }
            Ok((captured, dropped))
        });
    }
    let (mut captured, mut dropped) = (BTreeSet::new(), BTreeSet::new());
    while let Some(r) = tasks.join_next().await {
        let (c, d) = r.map_err(|e| e.to_string())??;
        captured.extend(c);
        dropped.extend(d);
    }
    Ok((captured, dropped, started.elapsed().as_secs_f64()))
}

fn large_attachment(dir: &Path, mb: usize) -> DemoResult<SynthEvent> {
    use verbatim_core::model::{Attachment, Channel, Direction, Event, EventMeta};
    let path = dir.join("phone-files").join("quarterly-deck.pdf");
    let mut rng = synth::Rng::new(7);
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).map_err(|e| e.to_string())?);
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..mb {
        rng.fill(&mut buf);
        std::io::Write::write_all(&mut f, &buf).map_err(|e| e.to_string())?;
    }
    std::io::Write::flush(&mut f).map_err(|e| e.to_string())?;
    Ok(SynthEvent {
        event: Event::Attachment(Attachment {
            meta: EventMeta {
                channel: Channel::Whatsapp,
                line: synth::BUSINESS_HANDLE.into(),
                conversation_id: "conv-deal-room".into(),
                source_id: "large-attachment-1".into(),
                source_time_ms: 1_767_225_600_000,
            },
            message_id: None,
            direction: Direction::Outbound,
            sender: synth::BUSINESS_HANDLE.into(),
            file_name: "quarterly-deck.pdf".into(),
            mime_type: "application/pdf".into(),
            path,
        }),
        in_scope: true,
    })
}

/// How long the first upload window lasts (as iOS might grant a background task).
const FIRST_WINDOW: Duration = Duration::from_millis(1600);

/// Uploads until the queue is empty: a first session under a short deadline (as iOS would
/// grant), a device restart, more faults, then sessions until done. Returns (sessions,
/// restarts, bytes, records, seconds, faults added after the restart).
async fn upload(
    mut agent: Agent,
    device_dir: &Path,
    policy: &Value,
    after_restart: impl FnOnce() -> usize,
) -> DemoResult<(usize, u32, u64, u64, f64, usize)> {
    let started = Instant::now();
    let (mut sessions, mut restarts, mut bytes, mut records) = (0usize, 0u32, 0u64, 0u64);
    let log = |r: &UploadReport, sessions: usize| {
        progress(&format!(
            "session {sessions}: {:?}, {} records in {} batches, {} retries, {} duplicates, acked through {}{}",
            r.stopped,
            r.records_sent,
            r.batches,
            r.retries,
            r.duplicates,
            r.acked_through,
            r.detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default()
        ));
    };
    // A short first window, then the phone restarts the app mid-upload.
    let first = agent.upload(UploadOptions::new(FIRST_WINDOW, NetworkState::Unmetered)).await;
    sessions += 1;
    bytes += first.bytes_sent;
    records += first.records_sent;
    log(&first, sessions);
    if first.stopped != StopReason::Done {
        agent.close().await.map_err(|e| format!("close: {e}"))?;
        drop(agent);
        agent = Agent::open(device_dir, AgentOptions::default()).map_err(|e| format!("reopen: {e}"))?;
        agent.apply_policy(policy).await.map_err(|e| format!("policy: {e}"))?;
        restarts += 1;
        progress("device restarted mid-upload (queue reopened, new epoch)");
    }
    let later_faults = after_restart();
    loop {
        let r = agent.upload(UploadOptions::new(Duration::from_secs(30), NetworkState::Unmetered)).await;
        sessions += 1;
        bytes += r.bytes_sent;
        records += r.records_sent;
        log(&r, sessions);
        match r.stopped {
            StopReason::Done => break,
            StopReason::Deadline if sessions < 10 => continue,
            _ => return Err(format!("upload stopped: {:?} {}", r.stopped, r.detail.unwrap_or_default())),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    agent.close().await.map_err(|e| format!("close: {e}"))?;
    Ok((sessions, restarts, bytes, records, secs, later_faults))
}

/// The report on stdout; `--json` adds it as one JSON object on the last line.
fn print_report(r: &DemoReport, json: bool) {
    let yes = |b: bool| if b { "yes" } else { "NO" };
    let large = if r.large_attachments > 0 {
        format!(" ({} from the workload + {} large attachment)", r.handed_over - r.large_attachments, r.large_attachments)
    } else {
        String::new()
    };
    outln!();
    outln!("Verbatim demo report");
    outln!("  events handed to the agent {}{large}", r.handed_over);
    outln!("  captured (in scope)        {} (business lines on captured channels)", r.captured);
    outln!(
        "  dropped as out of scope    {} (personal line or uncaptured channel; leaked to the archive: {})",
        r.out_of_scope,
        r.leaked_out_of_scope
    );
    outln!("  archived                   {} of the {} captured", r.archived, r.captured);
    outln!("  missing                    {}", r.missing);
    outln!("  duplicates                 {}", r.duplicates);
    outln!("  gaps                       {}", r.gaps);
    outln!("  chain verified             {}", yes(r.chain_verified));
    outln!("  alerts                     {}", r.alerts);
    outln!("  attachments verified       {} ({} files, SHA-256 checked)", yes(r.attachments_verified), r.attachments);
    outln!(
        "  agent events archived      {} (the device's audit trail in the same chain: starts, epochs, policy, channels, capture windows)",
        r.agent_events
    );
    outln!(
        "  faults injected / met      {} / {} (each one injected by the archive was met by the device); device restarts {}; upload sessions {}",
        r.faults_injected,
        r.faults_met,
        r.device_restarts,
        r.upload_sessions
    );
    outln!("  capture throughput         {:.0} events/s (sealed, chained, durable)", r.capture_events_per_s);
    outln!(
        "  upload throughput          {:.0} records/s, {:.1} MB/s (through the faults)",
        r.upload_records_per_s,
        r.upload_mb_per_s
    );
    if r.kept {
        outln!("  export                     {}", r.export_dir);
    } else {
        outln!("  export                     removed with {} (--keep or --dir keeps it)", r.work_dir);
    }
    outln!(
        "  result                     {}",
        if r.ok { "OK: nothing lost, nothing duplicated, nothing personal taken" } else { "FAILED" }
    );
    if json {
        outln!("{}", serde_json::to_string(r).unwrap_or_default());
    }
}
