//! Helpers for Verbatim's end-to-end tests: the core's agent against the reference receiver,
//! over real TLS on 127.0.0.1, each test in its own temporary directories with its own port.
//!
//! The pieces, so that each test reads as a story:
//! - [`World`]: a temporary directory, an archive key pair, a receiver (self-signed CA, fault
//!   plan) and a device token; it builds policies trusting that receiver and opens devices.
//! - [`capture_workload`]: captures a synthetic workload and records what was captured
//!   ([`Captured`]), so the export can be compared with it.
//! - [`RecordingPause`]: the uploader's waits, recorded instead of slept (optionally moving a
//!   [`ManualClock`], hanging, or running a hook at the first wait).
//! - [`Exported`]: verify + export with the archive key, and the comparison with [`Captured`]:
//!   every in-scope event exactly once, with equal fields and byte-equal files.
//! - Queue surgery ([`tamper_queue_record`], [`open_queue`]) for the tampering tests.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use verbatim_core::agent::CaptureOutcome;
use verbatim_core::archive::Opener;
use verbatim_core::chain::{self, Link, StreamId};
use verbatim_core::clock::ManualClock;
use verbatim_core::model::Event;
use verbatim_core::policy::Value;
use verbatim_core::record::{AgentEvent, AttachmentHeader, CallRecord, Record, RecordBody};
use verbatim_core::seal::{ArchiveSecretKey, generate_archive_keypair};
use verbatim_core::secret::Secret;
use verbatim_core::synth::{Workload, WorkloadOptions, sample_policy};
use verbatim_core::upload::{NetworkState, Pause, StopReason, UploadOptions, UploadReport};
use verbatim_core::wire::{Batch, CONTENT_TYPE, EpochInfo, WireRecord};
use verbatim_core::{Agent, AgentOptions};
use verbatim_receiver::export::StreamExport;
use verbatim_receiver::{AcceptedKeys, ExportSummary, FaultPlan, Receiver, ReceiverConfig, Report, RunningReceiver};

/// The tenant of `synth::sample_policy`.
pub const TENANT: &str = "acme-securities";
/// The device id every test's policy names (each test has its own receiver).
pub const DEVICE: &str = "dev-e2e";
/// Smallest batch policy allows: workloads of a few dozen events span several batches.
pub const BATCH_KB: u32 = 128;
/// Size of an attachment chunk record (core/src/queue/writer.rs CHUNK_SIZE).
pub const CHUNK: u64 = 64 * 1024;

// ---------------------------------------------------------------------------------------------
// Archive key
// ---------------------------------------------------------------------------------------------

pub struct ArchiveKey {
    pub secret: ArchiveSecretKey,
    pub public: [u8; 32],
}

impl ArchiveKey {
    pub fn generate() -> ArchiveKey {
        let (secret, public) = generate_archive_keypair();
        ArchiveKey { secret, public }
    }

    pub fn secret_copy(&self) -> ArchiveSecretKey {
        ArchiveSecretKey::from_bytes(self.secret.as_bytes()).expect("32-byte key")
    }
}

// ---------------------------------------------------------------------------------------------
// Receiver
// ---------------------------------------------------------------------------------------------

/// A reference receiver with a self-signed CA and a fault plan, that can be stopped and started
/// again on the same address and data directory.
pub struct TestReceiver {
    running: Option<RunningReceiver>,
    pub plan: FaultPlan,
    pub data_dir: PathBuf,
    /// The archive keys it accepts epochs for.
    archive_keys: AcceptedKeys,
    addr: SocketAddr,
    ca_pem: String,
}

impl TestReceiver {
    /// Starts on 127.0.0.1 with a free port, accepting epochs sealed to `archive_keys`.
    pub async fn start(data_dir: &Path, plan: FaultPlan, archive_keys: AcceptedKeys) -> TestReceiver {
        Self::start_at(data_dir, plan, archive_keys, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    async fn start_at(data_dir: &Path, plan: FaultPlan, archive_keys: AcceptedKeys, addr: SocketAddr) -> TestReceiver {
        let running = Self::launch(data_dir, &plan, &archive_keys, addr).await;
        TestReceiver {
            archive_keys,
            addr: running.addr(),
            ca_pem: running.ca_pem().expect("self-signed receiver has a CA").to_string(),
            running: Some(running),
            plan,
            data_dir: data_dir.to_path_buf(),
        }
    }

    async fn launch(data_dir: &Path, plan: &FaultPlan, archive_keys: &AcceptedKeys, addr: SocketAddr) -> RunningReceiver {
        let mut cfg = ReceiverConfig::local_self_signed(data_dir, archive_keys.clone());
        cfg.listen = addr;
        cfg.faults = Some(plan.clone());
        // Requests held by a Delay fault must not hold a test's end for the default 5 s.
        cfg.limits.shutdown_grace = Duration::from_millis(300);
        Receiver::start(cfg).await.expect("receiver starts")
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The private CA (PEM) devices trust.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The server certificate the receiver presents (PEM), from its data directory.
    pub fn server_cert_pem(&self) -> String {
        std::fs::read_to_string(self.data_dir.join(verbatim_receiver::tls::SERVER_CERT_FILE)).expect("server-cert.pem")
    }

    /// The server's private key (PEM), from its data directory.
    pub fn server_key_pem(&self) -> String {
        std::fs::read_to_string(self.data_dir.join(verbatim_receiver::tls::SERVER_KEY_FILE)).expect("server-key.pem")
    }

    pub fn tokens_file(&self) -> PathBuf {
        self.data_dir.join("tokens.jsonl")
    }

    /// Issues a device token for (`tenant`, `device`) in this receiver's token file.
    pub fn issue_token(&self, tenant: &str, device: &str) -> Secret {
        verbatim_receiver::add_device(&self.tokens_file(), tenant, device).expect("token issued")
    }

    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Graceful shutdown: everything acknowledged is on disk when this returns.
    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }

    /// Stops, then starts again on the same address and data directory (same CA, same tokens,
    /// same store).
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start_again().await;
    }

    /// Starts a stopped receiver again on its address and data directory.
    pub async fn start_again(&mut self) {
        assert!(self.running.is_none(), "the receiver is running");
        let running = Self::launch(&self.data_dir, &self.plan, &self.archive_keys, self.addr).await;
        assert_eq!(running.addr(), self.addr, "restarted on the same address");
        assert_eq!(running.ca_pem(), Some(self.ca_pem.as_str()), "the CA is kept across restarts");
        self.running = Some(running);
    }

    /// Stops, then starts again accepting `archive_keys` (the operator added or retired a key).
    pub async fn restart_accepting(&mut self, archive_keys: AcceptedKeys) {
        self.stop().await;
        self.archive_keys = archive_keys;
        self.start_again().await;
    }

    /// An HTTPS client trusting only this receiver's CA, for requests a device would not make.
    pub fn client(&self) -> reqwest::Client {
        let tls = verbatim_receiver::tls::client_config(&self.ca_pem).expect("client TLS config");
        reqwest::Client::builder().tls_backend_preconfigured(tls).build().expect("client")
    }

    /// Posts `batch` with `token`; returns the status and the body.
    pub async fn post_batch(&self, token: &str, batch: &Batch) -> (u16, Json) {
        let resp = self
            .client()
            .post(format!("{}/v1/batches", self.url()))
            .bearer_auth(token)
            .header("content-type", CONTENT_TYPE)
            .body(batch.encode())
            .send()
            .await
            .expect("request sent");
        let status = resp.status().as_u16();
        let body = resp.text().await.expect("answer body");
        (status, serde_json::from_str(&body).unwrap_or_else(|e| panic!("answer is not JSON ({e}): {body}")))
    }
}

// ---------------------------------------------------------------------------------------------
// World
// ---------------------------------------------------------------------------------------------

/// Ends the test process when a test runs far longer than any test of the suite should (a
/// deadlock in a blocking lock cannot be interrupted by an async timeout). Disarmed on drop.
pub struct Watchdog {
    stop: Option<std::sync::mpsc::Sender<()>>,
}

impl Watchdog {
    pub const LIMIT: Duration = Duration::from_secs(120);

    pub fn arm(limit: Duration) -> Watchdog {
        let name = std::thread::current().name().unwrap_or("?").to_string();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                eprintln!("test {name} still running after {limit:?}: deadlock? ending the test process");
                std::process::exit(99);
            }
        });
        Watchdog { stop: Some(tx) }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// One test's world: temporary directories, an archive key, a receiver and a device token.
pub struct World {
    pub dir: TempDir,
    pub key: ArchiveKey,
    pub receiver: TestReceiver,
    /// A token for (TENANT, DEVICE), the identity the policy names.
    pub token: Secret,
    exports: AtomicUsize,
    /// The overrides of the policy last applied by [`World::device_with`], which
    /// [`World::reopen`] applies again as the app does at every start.
    overrides: std::sync::Mutex<Vec<(String, Value)>>,
    _watchdog: Watchdog,
}

impl World {
    pub async fn start() -> World {
        World::with_faults(FaultPlan::new()).await
    }

    pub async fn with_faults(plan: FaultPlan) -> World {
        let watchdog = Watchdog::arm(Watchdog::LIMIT);
        let dir = tempfile::tempdir().expect("temp dir");
        let key = ArchiveKey::generate();
        let receiver =
            TestReceiver::start(&dir.path().join("archive"), plan, AcceptedKeys::from_public_keys([&key.public])).await;
        let token = receiver.issue_token(TENANT, DEVICE);
        World { dir, key, receiver, token, exports: AtomicUsize::new(0), overrides: Default::default(), _watchdog: watchdog }
    }

    pub fn plan(&self) -> &FaultPlan {
        &self.receiver.plan
    }

    pub fn device_dir(&self) -> PathBuf {
        self.dir.path().join("device")
    }

    pub fn files_dir(&self) -> PathBuf {
        self.dir.path().join("files")
    }

    pub fn archive_dir(&self) -> PathBuf {
        self.receiver.data_dir.clone()
    }

    /// The sample policy pointed at this receiver: its URL, its CA, the device token, device id
    /// DEVICE and the smallest batches; `overrides` replace or add keys.
    pub fn policy(&self, overrides: &[(&str, Value)]) -> Value {
        self.policy_with_token(self.token.expose(), overrides)
    }

    pub fn policy_with_token(&self, token: &str, overrides: &[(&str, Value)]) -> Value {
        let mut all: Vec<(&str, Value)> = vec![
            ("device_id", s(DEVICE)),
            ("archive_ca_pem", s(self.receiver.ca_pem())),
            ("max_batch_kb", s(&BATCH_KB.to_string())),
        ];
        all.extend(overrides.iter().cloned());
        sample_policy(&self.receiver.url(), &self.key.public, token, &all)
    }

    /// Opens the device (system clock) and applies [`World::policy`] with `overrides`.
    pub async fn device(&self, overrides: &[(&str, Value)]) -> Agent {
        self.device_with(AgentOptions::default(), overrides).await
    }

    pub async fn device_with(&self, options: AgentOptions, overrides: &[(&str, Value)]) -> Agent {
        let agent = Agent::open(&self.device_dir(), options).expect("agent opens");
        agent.apply_policy(&self.policy(overrides)).await.expect("policy applies");
        *self.overrides.lock().unwrap() = overrides.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        agent
    }

    /// Restarts the app: opens the device's directory again (the policy in force is restored
    /// from it, without the token) and applies the same managed configuration, as the
    /// platform layer does at every start.
    pub async fn reopen(&self) -> Agent {
        let agent = Agent::open(&self.device_dir(), AgentOptions::default()).expect("agent reopens");
        assert!(agent.status().configured, "the stored policy is restored");
        let overrides = self.overrides.lock().unwrap().clone();
        let overrides: Vec<(&str, Value)> = overrides.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        agent.apply_policy(&self.policy(&overrides)).await.expect("policy applies again");
        agent
    }

    /// Captures a synthetic workload of `events` events on `agent`.
    pub async fn capture(&self, agent: &Agent, seed: u64, events: usize) -> Captured {
        capture_workload(agent, &self.files_dir(), seed, events).await
    }

    /// Captures at least 20 events of workload `seed`, and more until the queue needs more
    /// than `batches` batches of [`BATCH_KB`].
    pub async fn capture_batches(&self, agent: &Agent, seed: u64, batches: u64) -> Captured {
        capture_until(agent, &self.files_dir(), seed, 20, batches * BATCH_KB as u64 * 1024).await
    }

    /// The receiver's verification report (no key needed).
    pub fn verify(&self) -> Report {
        verbatim_receiver::verify(&self.archive_dir()).expect("verify runs")
    }

    /// Verification of a single, complete stream: ok, contiguous through `through`.
    pub fn assert_archive_complete(&self, through: u64) -> Report {
        let report = self.verify();
        assert!(report.ok(), "verify reports problems:\n{}", report.to_text());
        assert_eq!(report.streams.len(), 1, "{}", report.to_text());
        let s = &report.streams[0];
        assert_eq!(s.contiguous_through, through, "{}", report.to_text());
        assert_eq!(s.records, through, "every record held once: {}", report.to_text());
        report
    }

    /// Exports everything held with the archive private key into a fresh directory.
    pub fn export(&self) -> Exported {
        let n = self.exports.fetch_add(1, Ordering::SeqCst);
        let out = self.dir.path().join(format!("export-{n}"));
        export_archive(&self.archive_dir(), &self.key, &out)
    }

    /// Posts a batch with this world's device token, as a replaying attacker (or a confused
    /// device) would.
    pub async fn post_batch(&self, batch: &Batch) -> (u16, Json) {
        self.receiver.post_batch(self.token.expose(), batch).await
    }
}

pub fn s(v: &str) -> Value {
    Value::String(v.to_string())
}

// ---------------------------------------------------------------------------------------------
// Capture
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct CapturedEvent {
    pub event: Event,
    pub in_scope: bool,
    pub outcome: CaptureOutcome,
}

/// What the app handed to the agent, and what the agent said about each event.
#[derive(Debug, Clone, Default)]
pub struct Captured {
    pub events: Vec<CapturedEvent>,
}

impl Captured {
    pub fn extend(&mut self, other: Captured) {
        self.events.extend(other.events);
    }

    pub fn in_scope(&self) -> impl Iterator<Item = &CapturedEvent> {
        self.events.iter().filter(|e| e.in_scope)
    }

    pub fn out_of_scope(&self) -> impl Iterator<Item = &CapturedEvent> {
        self.events.iter().filter(|e| !e.in_scope)
    }

    /// In-scope events of one kind (`message`, `edit`, `unsend`, `reaction`, `attachment`, `call`).
    pub fn count(&self, kind: &str) -> usize {
        self.in_scope().filter(|e| e.event.kind() == kind).count()
    }

    /// Calls that came with a recording file.
    pub fn calls_with_recording(&self) -> usize {
        self.in_scope().filter(|e| matches!(&e.event, Event::Call(c) if c.recording_path.is_some())).count()
    }

    /// The first sequence number of each in-scope event, in capture order.
    pub fn event_starts(&self) -> Vec<u64> {
        self.events
            .iter()
            .filter_map(|e| match e.outcome {
                CaptureOutcome::Captured { first_seq, .. } => Some(first_seq),
                CaptureOutcome::OutOfScope => None,
            })
            .collect()
    }

    /// The events stored wholly before sequence `seq` (and every out-of-scope one). Panics when
    /// an event straddles `seq`.
    pub fn before_seq(&self, seq: u64) -> Captured {
        let events = self
            .events
            .iter()
            .filter(|e| match e.outcome {
                CaptureOutcome::Captured { first_seq, last_seq } => {
                    assert!(last_seq < seq || first_seq >= seq, "an event straddles sequence {seq}");
                    last_seq < seq
                }
                CaptureOutcome::OutOfScope => true,
            })
            .cloned()
            .collect();
        Captured { events }
    }

    /// Highest sequence number any capture was given.
    pub fn last_seq(&self) -> u64 {
        self.events
            .iter()
            .filter_map(|e| match e.outcome {
                CaptureOutcome::Captured { last_seq, .. } => Some(last_seq),
                CaptureOutcome::OutOfScope => None,
            })
            .max()
            .unwrap_or(0)
    }
}

/// Captures `events` events of the synthetic workload `seed` (files written under `files`),
/// checking that policy scope decided each as the workload says it should.
pub async fn capture_workload(agent: &Agent, files: &Path, seed: u64, events: usize) -> Captured {
    capture_until(agent, files, seed, events, 0).await
}

/// Captures at least `min_events` events of workload `seed`, and more until the queue holds
/// more than `min_queue_bytes`.
pub async fn capture_until(agent: &Agent, files: &Path, seed: u64, min_events: usize, min_queue_bytes: u64) -> Captured {
    let mut workload = Workload::new(WorkloadOptions::new(seed, files)).expect("workload");
    let mut captured = Captured::default();
    while captured.events.len() < min_events || agent.status().queue_bytes <= min_queue_bytes {
        assert!(captured.events.len() < 5_000, "the workload never filled {min_queue_bytes} bytes");
        let ev = workload.next_event().expect("next event");
        let id = ev.id().to_string();
        let outcome = agent.capture(ev.event.clone()).await.unwrap_or_else(|e| panic!("capture of {id} failed: {e}"));
        match (ev.in_scope, outcome) {
            (true, CaptureOutcome::Captured { .. }) | (false, CaptureOutcome::OutOfScope) => {}
            (in_scope, outcome) => panic!("{id}: in_scope={in_scope} but the agent said {outcome:?}"),
        }
        captured.events.push(CapturedEvent { event: ev.event, in_scope: ev.in_scope, outcome });
    }
    captured
}

// ---------------------------------------------------------------------------------------------
// Upload
// ---------------------------------------------------------------------------------------------

type Hook = Box<dyn FnOnce() + Send>;

/// The uploader's waits, recorded instead of slept. Optionally moves a manual clock by each
/// wait, never returns (to freeze a session at its first wait until the test kills it), or
/// runs a hook at the first wait (to act between two attempts).
pub struct RecordingPause {
    delays: Mutex<Vec<Duration>>,
    clock: Option<ManualClock>,
    hang: bool,
    hook: Mutex<Option<Hook>>,
    paused: tokio::sync::watch::Sender<usize>,
}

impl RecordingPause {
    fn build(clock: Option<ManualClock>, hang: bool, hook: Option<Hook>) -> Arc<RecordingPause> {
        Arc::new(RecordingPause {
            delays: Mutex::new(Vec::new()),
            clock,
            hang,
            hook: Mutex::new(hook),
            paused: tokio::sync::watch::channel(0).0,
        })
    }

    /// Records each wait and returns at once.
    pub fn instant() -> Arc<RecordingPause> {
        Self::build(None, false, None)
    }

    /// Records each wait, advances `clock` by it, and returns at once.
    pub fn advancing(clock: ManualClock) -> Arc<RecordingPause> {
        Self::build(Some(clock), false, None)
    }

    /// Records the wait and never returns: the session stays there until its task is aborted.
    pub fn hanging() -> Arc<RecordingPause> {
        Self::build(None, true, None)
    }

    /// Runs `hook` at the first wait, then returns at once (and at once for later waits).
    pub fn with_hook(hook: impl FnOnce() + Send + 'static) -> Arc<RecordingPause> {
        Self::build(None, false, Some(Box::new(hook)))
    }

    pub fn delays(&self) -> Vec<Duration> {
        self.delays.lock().unwrap().clone()
    }

    /// Resolves once the uploader has asked for at least `n` waits.
    pub async fn wait_paused(&self, n: usize) {
        let mut rx = self.paused.subscribe();
        let _ = rx.wait_for(|v| *v >= n).await;
    }
}

impl Pause for RecordingPause {
    fn pause(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        self.delays.lock().unwrap().push(duration);
        if let Some(clock) = &self.clock {
            clock.advance(duration.as_millis() as i64);
        }
        if let Some(hook) = self.hook.lock().unwrap().take() {
            hook();
        }
        self.paused.send_modify(|n| *n += 1);
        if self.hang { Box::pin(std::future::pending()) } else { Box::pin(std::future::ready(())) }
    }
}

/// Upload options on an unmetered network with `pause`.
pub fn upload_options(deadline: Duration, pause: Arc<RecordingPause>) -> UploadOptions {
    UploadOptions { deadline, network: NetworkState::Unmetered, pause }
}

/// One upload session (30 s deadline, unmetered, waits recorded and skipped).
pub async fn upload_once(agent: &Agent) -> UploadReport {
    agent.upload(upload_options(Duration::from_secs(30), RecordingPause::instant())).await
}

/// Upload sessions until one reports `Done` (at most `sessions`); panics on an error.
pub async fn upload_until_done(agent: &Agent, sessions: usize) -> Vec<UploadReport> {
    let mut reports = Vec::new();
    for _ in 0..sessions {
        let r = upload_once(agent).await;
        assert_ne!(r.stopped, StopReason::Error, "upload failed: {r:?}\nstatus: {:?}", agent.status().upload);
        let done = r.stopped == StopReason::Done;
        reports.push(r);
        if done {
            let status = agent.status();
            assert_eq!(status.queue_records, 0, "Done leaves the queue empty");
            assert_eq!(status.acked_through, status.last_seq);
            return reports;
        }
    }
    panic!("no session finished within {sessions} sessions: {reports:#?}");
}

/// Sums of a session list.
pub fn total_duplicates(reports: &[UploadReport]) -> u64 {
    reports.iter().map(|r| r.duplicates).sum()
}

pub fn total_retries(reports: &[UploadReport]) -> u32 {
    reports.iter().map(|r| r.retries).sum()
}

/// The policy's pin format: base64 of SHA-256 of a SubjectPublicKeyInfo.
pub fn pin_of_spki(spki_der: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(spki_der))
}

/// A pin for a key nobody uses.
pub fn unrelated_pin() -> String {
    use rcgen::PublicKeyData;
    pin_of_spki(&rcgen::KeyPair::generate().expect("key").subject_public_key_info())
}

/// A pin computed from a private key (PEM), independently of the core's certificate parser.
pub fn pin_of_key_pem(key_pem: &str) -> String {
    use rcgen::PublicKeyData;
    pin_of_spki(&rcgen::KeyPair::from_pem(key_pem).expect("key PEM").subject_public_key_info())
}

/// A pin of the first certificate of a PEM text (its SubjectPublicKeyInfo), via the core's parser.
pub fn pin_of_cert_pem(pem: &str) -> String {
    let der = pem_to_der(pem);
    let spki = verbatim_core::upload::tls::spki_sha256(&der).expect("certificate parses");
    base64::engine::general_purpose::STANDARD.encode(spki)
}

fn pem_to_der(pem: &str) -> Vec<u8> {
    let b64: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD.decode(b64.trim()).expect("PEM base64")
}

/// A CA certificate (PEM) that never signed anything the receiver presents.
pub fn unrelated_ca_pem() -> String {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(rcgen::DnType::CommonName, "Some other private CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.self_signed(&key).expect("CA certificate").pem()
}

// ---------------------------------------------------------------------------------------------
// Export and comparison
// ---------------------------------------------------------------------------------------------

pub struct ExportedStream {
    pub info: StreamExport,
    /// `<out>/<tenant>/<device>/<stream>/` (attachments/, eml/).
    pub dir: PathBuf,
    pub lines: Vec<Json>,
    pub text: String,
}

pub struct Exported {
    pub summary: ExportSummary,
    pub out_dir: PathBuf,
    pub streams: Vec<ExportedStream>,
}

pub fn export_archive(archive_dir: &Path, key: &ArchiveKey, out: &Path) -> Exported {
    let summary = verbatim_receiver::export(archive_dir, &key.secret, out).expect("export runs");
    let streams = summary
        .streams
        .iter()
        .map(|info| {
            let jsonl = out.join(&info.jsonl);
            let text = std::fs::read_to_string(&jsonl).unwrap_or_else(|e| panic!("{}: {e}", jsonl.display()));
            let lines = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("export line is not JSON ({e}): {l}")))
                .collect();
            let dir = jsonl.with_extension("");
            ExportedStream { info: info.clone(), dir, lines, text }
        })
        .collect();
    Exported { summary, out_dir: out.to_path_buf(), streams }
}

fn line_type(line: &Json) -> &str {
    line["type"].as_str().unwrap_or("?")
}

fn body_of(line: &Json) -> RecordBody {
    serde_json::from_value(line.clone()).unwrap_or_else(|e| panic!("line does not parse back into a RecordBody ({e}): {line}"))
}

/// What an in-scope event must have become in the archive, keyed by (line type, id).
struct Expected {
    body: RecordBody,
    /// For attachment starts: the source file whose bytes must come back.
    file: Option<PathBuf>,
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).len()
}

fn expected_records(captured: &Captured) -> BTreeMap<(String, String), Expected> {
    let mut out = BTreeMap::new();
    let mut put = |kind: &str, id: &str, body: RecordBody, file: Option<PathBuf>| {
        let prev = out.insert((kind.to_string(), id.to_string()), Expected { body, file });
        assert!(prev.is_none(), "the workload reused the id {id}");
    };
    for e in captured.in_scope() {
        let id = e.event.meta().source_id.clone();
        match &e.event {
            Event::Message(m) => put("message", &id, RecordBody::Message(m.clone()), None),
            Event::Edit(x) => put("edit", &id, RecordBody::Edit(x.clone()), None),
            Event::Unsend(x) => put("unsend", &id, RecordBody::Unsend(x.clone()), None),
            Event::Reaction(x) => put("reaction", &id, RecordBody::Reaction(x.clone()), None),
            Event::Attachment(a) => {
                let header = AttachmentHeader {
                    meta: a.meta.clone(),
                    attachment_id: id.clone(),
                    message_id: a.message_id.clone(),
                    direction: a.direction,
                    sender: a.sender.clone(),
                    file_name: a.file_name.clone(),
                    mime_type: a.mime_type.clone(),
                    size: file_len(&a.path),
                };
                put("attachment_start", &id, RecordBody::AttachmentStart(header), Some(a.path.clone()));
            }
            Event::Call(c) => {
                let recording_id = c.recording_path.as_ref().map(|_| format!("recording:{id}"));
                let call = CallRecord {
                    meta: c.meta.clone(),
                    direction: c.direction,
                    participants: c.participants.clone(),
                    started_ms: c.started_ms,
                    ended_ms: c.ended_ms,
                    outcome: c.outcome,
                    recording_id: recording_id.clone(),
                };
                put("call", &id, RecordBody::Call(call), None);
                if let (Some(path), Some(rid)) = (&c.recording_path, recording_id) {
                    let header = AttachmentHeader {
                        meta: c.meta.clone(),
                        attachment_id: rid.clone(),
                        message_id: None,
                        direction: c.direction,
                        sender: c.participants.first().cloned().unwrap_or_default(),
                        file_name: path.file_name().unwrap().to_string_lossy().into_owned(),
                        mime_type: c.recording_mime_type.clone().unwrap_or_else(|| "application/octet-stream".into()),
                        size: file_len(path),
                    };
                    put("attachment_start", &rid, RecordBody::AttachmentStart(header), Some(path.clone()));
                }
            }
        }
    }
    out
}

/// The (type, id) of a content line, or None for agent events, chunks and ends.
fn content_key(line: &Json) -> Option<(String, String)> {
    let t = line_type(line);
    let id = match t {
        "message" | "edit" | "unsend" | "reaction" | "call" => line["meta"]["source_id"].as_str(),
        "attachment_start" => line["attachment_id"].as_str(),
        "attachment_omitted" => line["header"]["attachment_id"].as_str(),
        _ => return None,
    };
    Some((t.to_string(), id.unwrap_or_else(|| panic!("content line without an id: {line}")).to_string()))
}

impl Exported {
    pub fn lines(&self) -> impl Iterator<Item = &Json> {
        self.streams.iter().flat_map(|s| s.lines.iter())
    }

    pub fn only_stream(&self) -> &ExportedStream {
        assert_eq!(self.streams.len(), 1, "{}", self.summary.to_text());
        &self.streams[0]
    }

    /// Sequence numbers of lines that did not open.
    pub fn unreadable(&self) -> Vec<u64> {
        self.lines().filter(|l| line_type(l) == "unreadable").map(|l| l["seq"].as_u64().unwrap()).collect()
    }

    pub fn max_seq(&self) -> u64 {
        self.lines().filter_map(|l| l["seq"].as_u64()).max().unwrap_or(0)
    }

    /// Every agent event held, in order.
    pub fn agent_events(&self) -> Vec<AgentEvent> {
        self.lines()
            .filter(|l| line_type(l) == "agent")
            .map(|l| match body_of(l) {
                RecordBody::Agent(ev) => ev,
                other => panic!("agent line parsed as {other:?}"),
            })
            .collect()
    }

    /// Names of the agent events held (`started`, `policy_applied`, ...), in order.
    pub fn agent_event_names(&self) -> Vec<String> {
        self.lines().filter(|l| line_type(l) == "agent").map(|l| l["event"].as_str().unwrap_or("?").to_string()).collect()
    }

    /// Each stream's sequence numbers are 1..=n, each once, every record opened.
    pub fn assert_contiguous_and_readable(&self) {
        for s in &self.streams {
            let seqs: Vec<u64> = s.lines.iter().map(|l| l["seq"].as_u64().expect("seq")).collect();
            let want: Vec<u64> = (1..=seqs.len() as u64).collect();
            assert!(seqs == want, "stream {}: sequences are not 1..={} each once", s.info.stream, seqs.len());
        }
        assert!(self.unreadable().is_empty(), "records that do not open: {:?}\n{}", self.unreadable(), self.summary.to_text());
        assert!(self.summary.ok(), "export reports errors:\n{}", self.summary.to_text());
    }

    /// The heart of the suite: everything captured in scope is in the export exactly once with
    /// the fields the app gave, attachments and recordings byte-equal to their source files;
    /// nothing out of scope is anywhere; no content the app did not capture is there.
    pub fn assert_exactly_once(&self, captured: &Captured) {
        self.assert_contiguous_and_readable();
        self.assert_content(captured);
    }

    /// The content part of [`Exported::assert_exactly_once`], for exports that are expected to
    /// hold unreadable records too (those hold no content line).
    pub fn assert_content(&self, captured: &Captured) {
        let expected = expected_records(captured);
        let mut found: BTreeMap<(String, String), Vec<(&ExportedStream, &Json)>> = BTreeMap::new();
        for s in &self.streams {
            for line in &s.lines {
                if let Some(key) = content_key(line) {
                    found.entry(key).or_default().push((s, line));
                }
            }
        }
        for (key, want) in &expected {
            let hits = found.get(key).map(Vec::as_slice).unwrap_or(&[]);
            assert!(hits.len() == 1, "{key:?} is in the export {} times, not once", hits.len());
            let (stream, line) = hits[0];
            let got = body_of(line);
            assert!(got == want.body, "{key:?} differs from what was captured:\n exported {got:?}\n captured {:?}", want.body);
            if let Some(path) = &want.file {
                check_file(stream, &key.1, path);
            }
        }
        let unexpected: Vec<_> = found.keys().filter(|k| !expected.contains_key(*k)).collect();
        assert!(unexpected.is_empty(), "the export holds content that was not captured: {unexpected:?}");
        for e in captured.out_of_scope() {
            let quoted = format!("\"{}\"", e.event.meta().source_id);
            for s in &self.streams {
                assert!(!s.text.contains(&quoted), "out-of-scope event {quoted} reached the archive");
            }
        }
    }
}

/// The attachment `id` was reassembled in `stream` from exactly its chunks, its end record
/// carries the source file's SHA-256, and the exported file is byte-equal to the source.
fn check_file(stream: &ExportedStream, id: &str, source: &Path) {
    let bytes = std::fs::read(source).unwrap_or_else(|e| panic!("{}: {e}", source.display()));
    let sha = hex::encode(Sha256::digest(&bytes));
    let ends: Vec<&Json> =
        stream.lines.iter().filter(|l| line_type(l) == "attachment_end" && l["attachment_id"].as_str() == Some(id)).collect();
    assert_eq!(ends.len(), 1, "attachment {id}: {} end records", ends.len());
    let end = ends[0];
    assert_eq!(end["sha256"].as_str(), Some(sha.as_str()), "attachment {id}: SHA-256 differs from the source file's");
    assert_eq!(end["size"].as_u64(), Some(bytes.len() as u64), "attachment {id}: size");
    assert_eq!(end["sha256_verified"].as_bool(), Some(true), "attachment {id}: export did not verify it");
    let chunks =
        stream.lines.iter().filter(|l| line_type(l) == "attachment_chunk" && l["attachment_id"].as_str() == Some(id)).count()
            as u64;
    assert_eq!(chunks, (bytes.len() as u64).div_ceil(CHUNK), "attachment {id}: chunk records");
    assert_eq!(end["chunks"].as_u64(), Some(chunks), "attachment {id}: chunk count");
    let file = stream.dir.join(end["file"].as_str().unwrap_or_else(|| panic!("attachment {id}: no file")));
    let exported = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    assert!(
        exported == bytes,
        "attachment {id}: exported file differs from the source ({} vs {} bytes)",
        exported.len(),
        bytes.len()
    );
}

// ---------------------------------------------------------------------------------------------
// The device's queue, read and altered behind the agent's back
// ---------------------------------------------------------------------------------------------

fn queue_db(device_dir: &Path) -> Connection {
    let conn = Connection::open(device_dir.join(verbatim_core::queue::DB_FILE)).expect("queue database");
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn
}

/// Sequence numbers held in the device's queue (pending upload), in order.
pub fn queue_seqs(device_dir: &Path) -> Vec<u64> {
    let conn = queue_db(device_dir);
    let mut stmt = conn.prepare("SELECT seq FROM records ORDER BY seq").unwrap();
    stmt.query_map([], |r| r.get::<_, i64>(0)).unwrap().map(|r| r.unwrap() as u64).collect()
}

/// How a queue row is altered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tamper {
    /// One ciphertext bit flipped, nothing else: the stored link no longer matches.
    Naive,
    /// One ciphertext bit flipped, then that link and every later one recomputed (and the
    /// chain head updated), as an attacker who knows the chain rules but not the key would.
    Relinked,
}

/// Alters the ciphertext of queue record `seq` in the device's SQLite file.
pub fn tamper_queue_record(device_dir: &Path, seq: u64, how: Tamper) {
    let mut conn = queue_db(device_dir);
    let tx = conn.transaction().unwrap();
    let mut ct: Vec<u8> = tx
        .query_row("SELECT ciphertext FROM records WHERE seq = ?1", [seq as i64], |r| r.get(0))
        .optional()
        .unwrap()
        .unwrap_or_else(|| panic!("queue record {seq} is not pending"));
    let mid = ct.len() / 2;
    ct[mid] ^= 0x01;
    tx.execute("UPDATE records SET ciphertext = ?1 WHERE seq = ?2", params![ct, seq as i64]).unwrap();
    if how == Tamper::Relinked {
        let before: Option<Vec<u8>> =
            tx.query_row("SELECT link FROM records WHERE seq = ?1", [seq as i64 - 1], |r| r.get(0)).optional().unwrap();
        let mut prev: Link = match before {
            Some(l) => l.try_into().unwrap(),
            None => {
                let (acked, link): (i64, Vec<u8>) = tx
                    .query_row("SELECT acked_through, acked_link FROM chain_state WHERE id = 1", [], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .unwrap();
                assert_eq!(acked as u64 + 1, seq, "record {seq} follows the acknowledged head");
                link.try_into().unwrap()
            }
        };
        let rows: Vec<(i64, i64, Vec<u8>)> = {
            let mut stmt = tx.prepare("SELECT seq, epoch, ciphertext FROM records WHERE seq >= ?1 ORDER BY seq").unwrap();
            stmt.query_map([seq as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(|r| r.unwrap()).collect()
        };
        for (sq, epoch, ct) in rows {
            let link = chain::link(&prev, sq as u64, epoch as u64, &ct);
            tx.execute("UPDATE records SET link = ?1 WHERE seq = ?2", params![&link[..], sq]).unwrap();
            prev = link;
        }
        tx.execute("UPDATE chain_state SET last_link = ?1 WHERE id = 1", params![&prev[..]]).unwrap();
    }
    tx.commit().unwrap();
}

/// Opens every record still in the device's queue with the archive key (what only the archive
/// could do): (seq, the record or why it does not open).
pub fn open_queue(device_dir: &Path, key: &ArchiveKey) -> Vec<(u64, Result<Record, String>)> {
    let conn = queue_db(device_dir);
    let (tenant, device, stream, acked_link): (String, String, String, Vec<u8>) = conn
        .query_row("SELECT tenant, device, stream, acked_link FROM chain_state WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .unwrap();
    let id = StreamId { tenant, device, stream };
    let epochs: HashMap<u64, EpochInfo> = {
        let mut stmt = conn.prepare("SELECT epoch, archive_key_id, encapsulation FROM epochs").unwrap();
        stmt.query_map([], |r| {
            let epoch = r.get::<_, i64>(0)? as u64;
            Ok((epoch, EpochInfo { epoch, archive_key_id: r.get(1)?, encapsulation: r.get(2)? }))
        })
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
    };
    let mut stmt = conn.prepare("SELECT seq, epoch, link, ciphertext FROM records ORDER BY seq").unwrap();
    let rows: Vec<WireRecord> = stmt
        .query_map([], |r| {
            let link: Vec<u8> = r.get(2)?;
            Ok(WireRecord {
                seq: r.get::<_, i64>(0)? as u64,
                epoch: r.get::<_, i64>(1)? as u64,
                link: link.try_into().unwrap(),
                ciphertext: r.get(3)?,
            })
        })
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    let mut opener = Opener::new(key.secret_copy());
    let mut prev: Link = acked_link.try_into().unwrap();
    let mut out = Vec::new();
    for r in rows {
        let opened = match epochs.get(&r.epoch) {
            Some(e) => opener.open(&id, e, &r, &prev).map_err(|e| e.to_string()),
            None => Err(format!("epoch {} not in the queue", r.epoch)),
        };
        prev = r.link;
        out.push((r.seq, opened));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// One fault, start to finish
// ---------------------------------------------------------------------------------------------

/// What [`round_trip_through`] saw.
pub struct RoundTrip {
    pub world: World,
    pub captured: Captured,
    pub reports: Vec<UploadReport>,
    /// Every wait the uploader asked for, across sessions.
    pub pause: Arc<RecordingPause>,
    pub exported: Exported,
    /// The device's last sequence number (everything through it is in the archive).
    pub last_seq: u64,
}

/// Captures a multi-batch workload, queues `faults` at the receiver, uploads (waits recorded,
/// not slept) until a session reports `Done`, then checks the archive: every fault was met,
/// the device's queue is empty, verify is clean, and the export holds every captured event
/// exactly once.
pub async fn round_trip_through(faults: &[verbatim_receiver::Fault], seed: u64) -> RoundTrip {
    let world = World::start().await;
    for f in faults {
        world.plan().push(f.clone());
    }
    let agent = world.device(&[]).await;
    let captured = world.capture_batches(&agent, seed, 4).await;
    let pause = RecordingPause::instant();
    let mut reports = Vec::new();
    for _ in 0..4 {
        let r = agent.upload(upload_options(Duration::from_secs(30), pause.clone())).await;
        assert_ne!(r.stopped, StopReason::Error, "the fault was taken for a refusal: {r:?}");
        let done = r.stopped == StopReason::Done;
        reports.push(r);
        if done {
            break;
        }
    }
    assert_eq!(reports.last().unwrap().stopped, StopReason::Done, "{reports:#?}");
    assert_eq!(world.plan().pending(), 0, "every fault was met");
    let status = agent.status();
    assert_eq!(status.queue_records, 0);
    assert_eq!(status.acked_through, status.last_seq);
    assert!(status.upload.last_error.is_none(), "a success clears the error: {:?}", status.upload);
    agent.close().await.unwrap();
    world.assert_archive_complete(status.last_seq);
    let exported = world.export();
    exported.assert_exactly_once(&captured);
    RoundTrip { world, captured, reports, pause, exported, last_seq: status.last_seq }
}
