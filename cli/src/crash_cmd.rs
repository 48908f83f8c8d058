//! `verbatim crash-test`: the crash and fault consistency harness.
//!
//! It runs the product as separate processes — `verbatim simulate` (a device capturing),
//! `verbatim upload` (the device's uploader) and `verbatim receive` (the archive) — and kills
//! them with SIGKILL at seeded instants:
//!
//! - `startup`: a device right after it starts (store open, crash evidence, epoch rotation,
//!   policy re-applied);
//! - `capture`: a device mid-capture, after a seeded number of acknowledged events (group
//!   commits in flight);
//! - `upload`: the uploader mid-session (a batch in flight, the archive's acknowledgement
//!   received but not yet applied, records being deleted);
//! - `receiver`: the archive mid-upload (batches being applied and fsynced, answers not sent).
//!
//! Killed processes are restarted (the receiver on the same port, with the same data directory
//! and certificate) and the work goes on. Every `acked <id>` line a device printed is a promise
//! that the event is durable. Each round (`--round` kill cycles, its own archive and device) ends
//! with the check: upload until done, then `verbatim verify` (one stream, contiguous, chain
//! verified, no alerts) and `verbatim export` with the archive key, whose JSON Lines must hold
//! every acknowledged event exactly once. The kill cycles of a round that passes count as
//! passed, those of a round that fails as failed (its directory is kept for inspection).
//!
//! Seeded: the same seed gives the same schedule (kinds, kill thresholds and delays, workload
//! seeds); where an instant lands inside a child still depends on the OS's scheduling.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::output::outln;
use base64::Engine;
use serde::Serialize;
use verbatim_core::Value;
use verbatim_core::synth::{Rng, sample_policy};

const TENANT: &str = "acme-securities";
/// The device's upload window in the final check (per attempt).
const CHECK_UPLOAD_DEADLINE_MS: u64 = 60_000;
/// How long a child may take to reach the point the harness waits for.
const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(clap::Args)]
pub struct CrashTestArgs {
    /// Kill cycles to run. Each starts a child, kills it with SIGKILL at a seeded instant and
    /// goes on; thousands are fine (about a second each).
    #[arg(long, default_value_t = 30)]
    pub iterations: u64,
    /// Seed of the schedule (default: random). Printed, so a run can be repeated.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Also print the report as one JSON object (just before the final line).
    #[arg(long)]
    pub json: bool,
    /// Kill cycles per round. A round has its own archive and device and ends with the full
    /// check (upload, verify, export, compare).
    #[arg(long, default_value_t = 25)]
    pub round: u64,
    /// Working directory (default: a new one under the system temp directory). Removed when
    /// everything passed, unless --keep; kept when anything failed.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the working directory even when everything passed.
    #[arg(long)]
    pub keep: bool,
    /// Start no new round after this many seconds; the report covers the rounds run.
    #[arg(long)]
    pub time_limit_secs: Option<u64>,
    /// Run the receiver on the object store instead of SQLite: a local SeaweedFS (S3 with
    /// Object Lock; the binary named by VERBATIM_WEED, from scripts/install-tools.sh seaweedfs),
    /// one bucket per round.
    #[arg(long)]
    pub object_store: bool,
}

/// The archive in a bucket: the arguments and environment `receive`, `verify` and `export`
/// need to reach it.
#[derive(Clone)]
struct BucketTarget {
    args: Vec<OsString>,
    env: Vec<(&'static str, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Startup,
    Capture,
    Upload,
    Receiver,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Startup => "startup",
            Kind::Capture => "capture",
            Kind::Upload => "upload",
            Kind::Receiver => "receiver",
        }
    }

    /// Weights: capture 35, startup 20, upload 25, receiver 20.
    fn pick(rng: &mut Rng) -> Kind {
        match rng.below(100) {
            0..35 => Kind::Capture,
            35..55 => Kind::Startup,
            55..80 => Kind::Upload,
            _ => Kind::Receiver,
        }
    }
}

/// The harness's findings, also its `--json` contract.
#[derive(Debug, Default, Serialize)]
pub struct CrashReport {
    pub seed: u64,
    pub iterations_requested: u64,
    pub rounds: u64,
    /// Kill cycles run, per kind.
    pub kill_points: BTreeMap<String, u64>,
    /// Of those, the child was still working when SIGKILL came (otherwise it had finished:
    /// the instant landed after its work).
    pub kills_landed: BTreeMap<String, u64>,
    pub receiver_restarts: u64,
    pub device_runs: u64,
    pub upload_sessions: u64,
    /// `acked <id>` lines collected from every device run.
    pub events_acknowledged: u64,
    /// Acknowledged events found in the archive's export.
    pub archived: u64,
    /// Events present more than once in the export (extra copies).
    pub duplicates: u64,
    /// Acknowledged events absent from the export.
    pub missing: u64,
    /// Events the archive holds whose `acked` line was never printed (killed between the
    /// commit and the print): durable, as they should be, and not a failure.
    pub archived_unacknowledged: u64,
    /// Records the archive holds across all rounds (every kind, agent events included).
    pub records_archived: u64,
    pub gaps: u64,
    pub chain_ok: bool,
    pub alerts: u64,
    pub passed: u64,
    pub failed: u64,
    pub failures: Vec<String>,
    pub elapsed_s: f64,
    pub work_dir: String,
    /// `sqlite` or `s3` (SeaweedFS with Object Lock).
    pub backend: String,
}

type HResult<T> = Result<T, String>;

/// A child process whose stdout lines arrive on a channel (read by a thread, so the child
/// never blocks on a full pipe) and whose stderr goes to a log file.
struct Proc {
    child: Child,
    lines: Receiver<String>,
    started: Instant,
}

impl Proc {
    fn spawn(exe: &Path, args: &[OsString], log: &Path) -> HResult<Proc> {
        Proc::spawn_with(exe, args, &[], log)
    }

    fn spawn_with(exe: &Path, args: &[OsString], env: &[(&str, String)], log: &Path) -> HResult<Proc> {
        let err = File::options().create(true).append(true).open(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut child = Command::new(exe)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", exe.display()))?;
        let stdout = child.stdout.take().ok_or("child has no stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Proc { child, lines, started: Instant::now() })
    }

    /// SIGKILL (on Unix) and reap. Returns true when the child was still running.
    fn kill(&mut self) -> bool {
        let running = matches!(self.child.try_wait(), Ok(None));
        let _ = self.child.kill();
        let _ = self.child.wait();
        running
    }

    /// Every line still to come, until the child's stdout closes.
    fn drain(&self) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(CHILD_TIMEOUT) {
            out.push(line);
        }
        out
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn a(s: impl AsRef<std::ffi::OsStr>) -> OsString {
    s.as_ref().to_os_string()
}

/// What a device run left behind.
struct DeviceRun {
    acked: Vec<String>,
    /// The child was still running when it was killed.
    landed: bool,
    ms_to_first_ack: Option<u64>,
}

/// One round's world: an archive (receiver child, data directory, key) and one device.
struct World {
    exe: PathBuf,
    dir: PathBuf,
    port: u16,
    data: PathBuf,
    tokens: PathBuf,
    state: PathBuf,
    policy: PathBuf,
    key: PathBuf,
    /// The archive public key file the receiver accepts epochs for.
    public_key: PathBuf,
    receiver: Option<Proc>,
    acked: Vec<String>,
    restarts: u64,
    device_runs: u64,
    upload_sessions: u64,
    /// Estimates that aim the kill instants (adapted as the run goes).
    first_ack_ms: f64,
    upload_ms: f64,
    log: File,
    /// The archive is in this bucket (`--object-store`) instead of `data`.
    bucket: Option<BucketTarget>,
}

fn free_port() -> HResult<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("find a free port: {e}"))?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

impl World {
    fn new(
        exe: &Path,
        dir: PathBuf,
        key_dir: &Path,
        public: &[u8; 32],
        round: u64,
        bucket: Option<BucketTarget>,
    ) -> HResult<World> {
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let log = File::create(dir.join("cycles.log")).map_err(|e| e.to_string())?;
        let data = dir.join("archive");
        let tokens = dir.join("tokens.jsonl");
        let mut w = World {
            exe: exe.to_path_buf(),
            port: 0,
            data,
            tokens,
            state: dir.join("device"),
            policy: dir.join("policy.json"),
            key: key_dir.join(verbatim_receiver::keys::PRIVATE_KEY_FILE),
            public_key: key_dir.join(verbatim_receiver::keys::PUBLIC_KEY_FILE),
            dir,
            receiver: None,
            acked: Vec::new(),
            restarts: 0,
            device_runs: 0,
            upload_sessions: 0,
            first_ack_ms: 40.0,
            upload_ms: 400.0,
            log,
            bucket,
        };
        // A port is chosen once; a restarted receiver listens on it again (the policy names it).
        let mut last = String::new();
        for _ in 0..5 {
            w.port = free_port()?;
            match w.start_receiver() {
                Ok(()) => {
                    last.clear();
                    break;
                }
                Err(e) => last = e,
            }
        }
        if !last.is_empty() {
            return Err(last);
        }
        let device = format!("crash-device-{round}");
        let token = verbatim_receiver::add_device(&w.tokens, TENANT, &device).map_err(|e| format!("add device: {e}"))?;
        let ca = std::fs::read_to_string(w.data.join("ca.pem")).map_err(|e| format!("receiver CA: {e}"))?;
        let s = |v: &str| Value::String(v.to_string());
        let tree = sample_policy(
            &format!("https://127.0.0.1:{}", w.port),
            public,
            token.expose(),
            &[
                ("tenant_id", s(TENANT)),
                ("device_id", s(&device)),
                ("archive_ca_pem", s(&ca)),
                ("max_batch_kb", Value::Integer(128)),
            ],
        );
        let json = serde_json::to_vec_pretty(&tree).map_err(|e| e.to_string())?;
        std::fs::write(&w.policy, json).map_err(|e| format!("{}: {e}", w.policy.display()))?;
        Ok(w)
    }

    fn note(&mut self, text: &str) {
        let _ = writeln!(self.log, "{text}");
    }

    /// `--data DIR`, or the bucket's `--store ... --s3-endpoint ...`.
    fn store_args(&self) -> Vec<OsString> {
        match &self.bucket {
            Some(b) => b.args.clone(),
            None => vec![a("--data"), a(&self.data)],
        }
    }

    fn store_env(&self) -> Vec<(&'static str, String)> {
        self.bucket.as_ref().map(|b| b.env.clone()).unwrap_or_default()
    }

    fn start_receiver(&mut self) -> HResult<()> {
        let listen = format!("127.0.0.1:{}", self.port);
        let mut args = vec![
            a("receive"),
            a("--listen"),
            a(listen),
            a("--data"),
            a(&self.data),
            a("--tokens"),
            a(&self.tokens),
            a("--archive-key"),
            a(&self.public_key),
            a("--self-signed"),
        ];
        // With the object store, --data still holds the self-signed certificate (the same one
        // after a restart); the records go to the bucket.
        args.extend(self.bucket.as_ref().map(|b| b.args.clone()).unwrap_or_default());
        let p = Proc::spawn_with(&self.exe, &args, &self.store_env(), &self.dir.join("receiver.log"))?;
        let end = Instant::now() + CHILD_TIMEOUT;
        loop {
            match p.lines.recv_timeout(end.saturating_duration_since(Instant::now())) {
                Ok(line) if line.starts_with("listening on ") => break,
                Ok(_) => continue,
                Err(RecvTimeoutError::Timeout) => return Err("receiver did not start listening within 60 s".into()),
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(format!(
                        "receiver exited before listening on port {} (see {})",
                        self.port,
                        self.dir.join("receiver.log").display()
                    ));
                }
            }
        }
        self.receiver = Some(p);
        Ok(())
    }

    fn kill_receiver(&mut self) -> bool {
        self.receiver.take().is_some_and(|mut p| p.kill())
    }

    /// Runs `verbatim simulate`, killing it after `kill_after_acks` acknowledged events or
    /// `kill_after` from its start; with neither it runs to completion.
    fn simulate(
        &mut self,
        seed: u64,
        events: u64,
        kill_after_acks: Option<u64>,
        kill_after: Option<Duration>,
    ) -> HResult<DeviceRun> {
        self.device_runs += 1;
        let args = [
            a("simulate"),
            a("--state"),
            a(&self.state),
            a("--policy"),
            a(&self.policy),
            a("--events"),
            a(events.to_string()),
            a("--seed"),
            a(seed.to_string()),
        ];
        let mut p = Proc::spawn(&self.exe, &args, &self.dir.join("device.log"))?;
        let mut acked = Vec::new();
        let mut first = None;
        let mut take = |line: String, acked: &mut Vec<String>, started: Instant| {
            if let Some(id) = line.strip_prefix("acked ") {
                if acked.is_empty() {
                    first = Some(started.elapsed().as_millis() as u64);
                }
                acked.push(id.to_string());
            }
        };
        let landed;
        match (kill_after_acks, kill_after) {
            (Some(k), _) => {
                let end = Instant::now() + CHILD_TIMEOUT;
                loop {
                    if acked.len() as u64 >= k {
                        break;
                    }
                    match p.lines.recv_timeout(end.saturating_duration_since(Instant::now())) {
                        Ok(line) => take(line, &mut acked, p.started),
                        Err(RecvTimeoutError::Disconnected) => break,
                        Err(RecvTimeoutError::Timeout) => return Err(format!("device stalled: {} events in 60 s", acked.len())),
                    }
                }
                landed = p.kill();
            }
            (None, Some(delay)) => {
                let end = p.started + delay;
                loop {
                    let left = end.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    match p.lines.recv_timeout(left) {
                        Ok(line) => take(line, &mut acked, p.started),
                        Err(RecvTimeoutError::Disconnected) => break,
                        Err(RecvTimeoutError::Timeout) => break,
                    }
                }
                landed = p.kill();
            }
            (None, None) => {
                landed = false;
                if p.wait_exit(CHILD_TIMEOUT * 5).is_none() {
                    return Err("device run did not finish in 300 s".into());
                }
            }
        }
        // Every line printed before the end is a durable event: read them all.
        for line in p.drain() {
            take(line, &mut acked, p.started);
        }
        let status = p.wait_exit(CHILD_TIMEOUT).ok_or("device did not exit")?;
        if !landed && !status.success() {
            return Err(format!("device run exited with {status} on its own (see {})", self.dir.join("device.log").display()));
        }
        self.acked.extend(acked.iter().cloned());
        Ok(DeviceRun { acked, landed, ms_to_first_ack: first })
    }

    fn upload_child(&mut self, deadline_ms: u64) -> HResult<Proc> {
        self.upload_sessions += 1;
        let args = [
            a("upload"),
            a("--state"),
            a(&self.state),
            a("--policy"),
            a(&self.policy),
            a("--deadline-ms"),
            a(deadline_ms.to_string()),
        ];
        Proc::spawn(&self.exe, &args, &self.dir.join("upload.log"))
    }

    /// Waits for an upload child; returns its exit code and report (JSON on stdout).
    fn finish_upload(&self, mut p: Proc, timeout: Duration) -> HResult<(i32, serde_json::Value)> {
        let status = p.wait_exit(timeout).ok_or("upload did not end within its deadline")?;
        let text = p.drain().join("\n");
        let report = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        match status.code() {
            Some(c) => Ok((c, report)),
            None => Err(format!("upload ended by a signal it was not sent: {status}")),
        }
    }

    fn pending(&self) -> HResult<u64> {
        let out = Command::new(&self.exe)
            .args(["inspect", "--state"])
            .arg(&self.state)
            .output()
            .map_err(|e| format!("inspect: {e}"))?;
        if !out.status.success() {
            return Ok(0); // no store yet
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("inspect output: {e}"))?;
        Ok(v["pending_records"].as_u64().unwrap_or(0))
    }

    /// Makes sure the device has something to upload, so upload-side kills land mid-session.
    fn top_up(&mut self, rng: &mut Rng) -> HResult<()> {
        if self.pending()? < 150 {
            let seed = rng.next_u64() % 1_000_000;
            let events = 150 + rng.below(300);
            self.simulate(seed, events, None, None)?;
        }
        Ok(())
    }

    fn inspect(&self) -> HResult<serde_json::Value> {
        let out = Command::new(&self.exe)
            .args(["inspect", "--state"])
            .arg(&self.state)
            .output()
            .map_err(|e| format!("inspect: {e}"))?;
        serde_json::from_slice(&out.stdout).map_err(|e| format!("inspect output: {e}"))
    }

    fn cycle(&mut self, kind: Kind, rng: &mut Rng) -> HResult<bool> {
        match kind {
            Kind::Startup => {
                // Anywhere from before the store opens to the first captures.
                let delay = Duration::from_micros((rng.below(1000) as f64 * self.first_ack_ms * 1.5) as u64);
                let seed = rng.next_u64() % 1_000_000;
                let run = self.simulate(seed, 5000, None, Some(delay))?;
                self.note(&format!("startup kill at {} ms: {} acked", delay.as_millis(), run.acked.len()));
                Ok(run.landed)
            }
            Kind::Capture => {
                let k = 1 + rng.below(150);
                let seed = rng.next_u64() % 1_000_000;
                let run = self.simulate(seed, k + 5000, Some(k), None)?;
                if let Some(ms) = run.ms_to_first_ack {
                    self.first_ack_ms = 0.8 * self.first_ack_ms + 0.2 * ms as f64;
                }
                self.note(&format!("capture kill after {k} acks: {} acked", run.acked.len()));
                Ok(run.landed)
            }
            Kind::Upload => {
                self.top_up(rng)?;
                let delay = Duration::from_micros((rng.below(1000) as f64 * self.upload_ms * 1.2) as u64);
                let mut p = self.upload_child(30_000)?;
                std::thread::sleep(delay.saturating_sub(p.started.elapsed()));
                let landed = p.kill();
                if !landed {
                    // It finished first: aim earlier next time.
                    let took = p.started.elapsed().as_millis() as f64;
                    self.upload_ms = 0.7 * self.upload_ms + 0.3 * took.min(delay.as_millis() as f64);
                    let (code, report) = self.finish_upload(p, CHILD_TIMEOUT)?;
                    if code == 2 {
                        return Err(format!("upload failed on its own: {report}"));
                    }
                } else {
                    let _ = p.drain();
                }
                self.note(&format!("upload kill at {} ms (landed: {landed})", delay.as_millis()));
                Ok(landed)
            }
            Kind::Receiver => {
                self.top_up(rng)?;
                let delay = Duration::from_micros((rng.below(1000) as f64 * self.upload_ms) as u64);
                let mut p = self.upload_child(15_000)?;
                std::thread::sleep(delay.saturating_sub(p.started.elapsed()));
                let upload_running = p.child_running();
                let landed = self.kill_receiver() && upload_running;
                self.restarts += 1;
                self.start_receiver()?;
                let (code, report) = self.finish_upload(p, Duration::from_secs(40))?;
                if code == 2 {
                    return Err(format!("upload failed after the receiver was killed and restarted: {report}"));
                }
                if code == 0 {
                    let took = report["elapsed_ms"].as_f64().unwrap_or(self.upload_ms);
                    if !landed {
                        self.upload_ms = 0.7 * self.upload_ms + 0.3 * took;
                    }
                }
                self.note(&format!("receiver kill at {} ms (mid-upload: {landed}); upload exit {code}", delay.as_millis()));
                Ok(landed)
            }
        }
    }

    /// Upload until done, then verify and export through the CLI and compare with every
    /// acknowledged event.
    fn check(&mut self, report: &mut CrashReport) -> HResult<Vec<String>> {
        let mut problems = Vec::new();
        if self.receiver.is_none() {
            self.start_receiver()?;
        }
        let mut done = false;
        for _ in 0..5 {
            let p = self.upload_child(CHECK_UPLOAD_DEADLINE_MS)?;
            let (code, rep) = self.finish_upload(p, Duration::from_millis(CHECK_UPLOAD_DEADLINE_MS + 30_000))?;
            if code == 0 {
                done = true;
                break;
            }
            if code == 2 {
                problems.push(format!("final upload failed: {rep}"));
                break;
            }
        }
        if !done && problems.is_empty() {
            problems.push("final upload did not complete in 5 sessions".into());
        }
        let device = self.inspect()?;
        let last_seq = device["last_seq"].as_u64().unwrap_or(0);
        let acked_through = device["acked_through"].as_u64().unwrap_or(0);
        if done && (acked_through != last_seq || device["pending_records"].as_u64() != Some(0)) {
            problems.push(format!("device still holds records after a complete upload: {device}"));
        }
        // The receiver stays up while verify and export read (they take no lock).
        let out = Command::new(&self.exe)
            .args(["verify", "--json", "--silent-after-hours", "0"])
            .args(self.store_args())
            .envs(self.store_env())
            .output()
            .map_err(|e| format!("verify: {e}"))?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("verify output: {e}"))?;
        let totals = &v["totals"];
        let streams = v["streams"].as_array().cloned().unwrap_or_default();
        report.gaps += totals["gaps"].as_u64().unwrap_or(0);
        report.alerts += totals["alerts"].as_u64().unwrap_or(0);
        report.records_archived += totals["records"].as_u64().unwrap_or(0);
        if totals["chain_failures"].as_u64() != Some(0) {
            report.chain_ok = false;
        }
        if !out.status.success() || totals["ok"] != serde_json::Value::Bool(true) {
            problems.push(format!("verify: {}", serde_json::to_string(totals).unwrap_or_default()));
        }
        if streams.len() != 1 {
            problems.push(format!("verify: {} streams held, expected 1", streams.len()));
        } else {
            let s = &streams[0];
            if s["chain_verified"] != serde_json::Value::Bool(true) {
                report.chain_ok = false;
                problems.push("verify: chain not verified".into());
            }
            if s["contiguous_through"].as_u64() != Some(last_seq) || s["last_seq"].as_u64() != Some(last_seq) {
                problems.push(format!(
                    "archive holds through {} (contiguous through {}), the device wrote {last_seq}",
                    s["last_seq"], s["contiguous_through"]
                ));
            }
        }
        let export_dir = self.dir.join("export");
        let out = Command::new(&self.exe)
            .args(["export", "--json"])
            .args(self.store_args())
            .envs(self.store_env())
            .arg("--key")
            .arg(&self.key)
            .arg("--out")
            .arg(&export_dir)
            .output()
            .map_err(|e| format!("export: {e}"))?;
        if !out.status.success() {
            problems.push(format!("export failed ({}): {}", out.status, String::from_utf8_lossy(&out.stdout).trim()));
        }
        let exported = verbatim_receiver::source_ids(&export_dir).map_err(|e| format!("reading the export: {e}"))?;
        let mut acked: HashMap<&str, u64> = HashMap::new();
        for id in &self.acked {
            *acked.entry(id.as_str()).or_default() += 1;
        }
        let reprinted = acked.values().filter(|n| **n > 1).count();
        if reprinted > 0 {
            problems.push(format!("{reprinted} event ids were acknowledged by more than one device run"));
        }
        let missing: Vec<&&str> = acked.keys().filter(|id| !exported.contains_key(**id)).collect();
        let duplicates: u64 = exported.values().filter(|n| **n > 1).map(|n| n - 1).sum();
        report.events_acknowledged += acked.len() as u64;
        report.archived += (acked.len() - missing.len()) as u64;
        report.missing += missing.len() as u64;
        report.duplicates += duplicates;
        report.archived_unacknowledged += exported.keys().filter(|id| !acked.contains_key(id.as_str())).count() as u64;
        if !missing.is_empty() {
            let sample: Vec<&str> = missing.iter().take(5).map(|s| **s).collect();
            problems.push(format!("{} acknowledged events missing from the archive, e.g. {sample:?}", missing.len()));
        }
        if duplicates > 0 {
            let sample: Vec<&String> = exported.iter().filter(|(_, n)| **n > 1).map(|(id, _)| id).take(5).collect();
            problems.push(format!("{duplicates} duplicate events in the archive, e.g. {sample:?}"));
        }
        Ok(problems)
    }
}

impl Proc {
    fn child_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("system randomness");
    u64::from_le_bytes(b)
}

pub fn run(args: CrashTestArgs) -> ExitCode {
    if args.iterations == 0 || args.round == 0 {
        eprintln!("error: --iterations and --round must be at least 1");
        return ExitCode::from(2);
    }
    let seed = args.seed.unwrap_or_else(|| random_u64() % 1_000_000_000);
    match harness(&args, seed) {
        Ok(report) => {
            print_report(&report, args.json);
            if report.failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn harness(args: &CrashTestArgs, seed: u64) -> HResult<CrashReport> {
    let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("verbatim-crash-{seed}-{:08x}", random_u64() as u32)),
    };
    if dir.exists() && std::fs::read_dir(&dir).map_err(|e| e.to_string())?.next().is_some() {
        return Err(format!("{} is not empty; give a new --dir", dir.display()));
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    eprintln!("crash-test: seed {seed}, {} kill cycles in rounds of {}, in {}", args.iterations, args.round, dir.display());
    let backend = if args.object_store { " --object-store" } else { "" };
    eprintln!(
        "  repeat with: verbatim crash-test --iterations {} --round {} --seed {seed}{backend}",
        args.iterations, args.round
    );
    let key_dir = dir.join("archive-key");
    let key = verbatim_receiver::keygen(&key_dir).map_err(|e| format!("keygen: {e}"))?;
    let public: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(&key.public_b64)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("archive public key")?;

    // With --object-store: one SeaweedFS for the run (killed when this returns), a bucket
    // with Object Lock per round.
    let weed = if args.object_store {
        eprintln!("  starting SeaweedFS (S3 with Object Lock) on 127.0.0.1");
        Some(verbatim_receiver::seaweed::Seaweed::start().map_err(|e| format!("SeaweedFS: {e}"))?)
    } else {
        None
    };
    let started = Instant::now();
    let mut rng = Rng::new(seed);
    let mut report = CrashReport {
        seed,
        iterations_requested: args.iterations,
        chain_ok: true,
        work_dir: dir.display().to_string(),
        backend: if weed.is_some() { "s3" } else { "sqlite" }.into(),
        ..Default::default()
    };
    let mut done = 0u64;
    let mut round = 0u64;
    while done < args.iterations {
        if args.time_limit_secs.is_some_and(|t| started.elapsed().as_secs() >= t) {
            eprintln!("  time limit reached: stopping after {done} kill cycles");
            break;
        }
        let cycles = args.round.min(args.iterations - done);
        let round_dir = dir.join(format!("round-{round:04}"));
        let mut round_rng = Rng::new(rng.next_u64());
        let bucket = match &weed {
            Some(w) => Some(round_bucket(w, seed, round)?),
            None => None,
        };
        let outcome = run_round(&exe, &round_dir, &key_dir, &public, round, cycles, &mut round_rng, &mut report, bucket);
        report.rounds += 1;
        match outcome {
            Ok(problems) if problems.is_empty() => {
                report.passed += cycles;
                if !args.keep {
                    let _ = std::fs::remove_dir_all(&round_dir);
                }
            }
            Ok(problems) => {
                report.failed += cycles;
                for p in problems {
                    report.failures.push(format!("round {round} ({}): {p}", round_dir.display()));
                }
            }
            Err(e) => {
                report.failed += cycles;
                report.failures.push(format!("round {round} ({}): harness: {e}", round_dir.display()));
            }
        }
        done += cycles;
        eprintln!(
            "  round {round}: {done}/{} kill cycles, {} passed, {} failed, {:.0} s",
            args.iterations,
            report.passed,
            report.failed,
            started.elapsed().as_secs_f64()
        );
        round += 1;
    }
    report.elapsed_s = (started.elapsed().as_secs_f64() * 10.0).round() / 10.0;
    if report.failed == 0 && !args.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(report)
}

/// A new bucket with Object Lock for one round, and how the children reach it.
fn round_bucket(weed: &verbatim_receiver::seaweed::Seaweed, seed: u64, round: u64) -> HResult<BucketTarget> {
    let name = format!("crash-{seed}-{round}");
    weed.create_bucket(&name, true).map_err(|e| format!("create bucket {name}: {e}"))?;
    Ok(BucketTarget {
        args: vec![a("--store"), a(format!("s3://{name}/archive")), a("--s3-endpoint"), a(weed.endpoint().as_str())],
        env: vec![
            ("AWS_ACCESS_KEY_ID", verbatim_receiver::seaweed::ACCESS_KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY", verbatim_receiver::seaweed::SECRET_KEY.to_string()),
            ("AWS_REGION", "us-east-1".to_string()),
        ],
    })
}

#[allow(clippy::too_many_arguments)]
fn run_round(
    exe: &Path,
    dir: &Path,
    key_dir: &Path,
    public: &[u8; 32],
    round: u64,
    cycles: u64,
    rng: &mut Rng,
    report: &mut CrashReport,
    bucket: Option<BucketTarget>,
) -> HResult<Vec<String>> {
    let mut w = World::new(exe, dir.to_path_buf(), key_dir, public, round, bucket)?;
    let mut problems = Vec::new();
    for i in 0..cycles {
        let kind = Kind::pick(rng);
        let t = Instant::now();
        w.note(&format!("cycle {i}: {}", kind.as_str()));
        *report.kill_points.entry(kind.as_str().into()).or_default() += 1;
        match w.cycle(kind, rng) {
            Ok(landed) => {
                w.note(&format!("  {} ms", t.elapsed().as_millis()));
                if landed {
                    *report.kills_landed.entry(kind.as_str().into()).or_default() += 1;
                }
            }
            Err(e) => {
                w.note(&format!("  failed: {e}"));
                problems.push(format!("cycle {i} ({}): {e}", kind.as_str()));
                break;
            }
        }
    }
    let t = Instant::now();
    let checked = w.check(report);
    w.note(&format!("check: {} ms", t.elapsed().as_millis()));
    report.receiver_restarts += w.restarts;
    report.device_runs += w.device_runs;
    report.upload_sessions += w.upload_sessions;
    w.kill_receiver();
    problems.extend(checked?);
    Ok(problems)
}

fn print_report(r: &CrashReport, json: bool) {
    let kinds = |m: &BTreeMap<String, u64>| {
        ["startup", "capture", "upload", "receiver"]
            .iter()
            .map(|k| format!("{k} {}", m.get(*k).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    outln!("Verbatim crash-test report (seed {}, archive store {})", r.seed, r.backend);
    outln!("  kill points                {} ({})", r.kill_points.values().sum::<u64>(), kinds(&r.kill_points));
    outln!("  landed mid-work            {} ({})", r.kills_landed.values().sum::<u64>(), kinds(&r.kills_landed));
    outln!("  rounds checked             {}", r.rounds);
    outln!("  device runs / uploads      {} / {}; receiver restarts {}", r.device_runs, r.upload_sessions, r.receiver_restarts);
    outln!("  events acknowledged        {}", r.events_acknowledged);
    outln!("  archived                   {}", r.archived);
    outln!("  missing                    {}", r.missing);
    outln!("  duplicates                 {}", r.duplicates);
    outln!("  archived, ack not printed  {} (killed between commit and print: durable, as promised)", r.archived_unacknowledged);
    outln!("  records archived           {}", r.records_archived);
    outln!("  gaps / alerts              {} / {}", r.gaps, r.alerts);
    outln!("  chain verified             {}", if r.chain_ok { "yes" } else { "NO" });
    outln!("  elapsed                    {:.1} s", r.elapsed_s);
    for f in &r.failures {
        outln!("  FAILURE: {f}");
    }
    if r.failed > 0 {
        outln!("  kept for inspection: {}", r.work_dir);
    }
    if json {
        outln!("{}", serde_json::to_string(r).unwrap_or_else(|_| "{}".into()));
    }
    outln!("{} passed, {} failed", r.passed, r.failed);
}
