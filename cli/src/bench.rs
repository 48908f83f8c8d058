//! `verbatim bench`: every performance figure that matters on a phone, with baselines measured in
//! the same process and run, in one table (and `--json`). See docs/performance.md for the method
//! and what each figure means to the person holding the phone.
//!
//! 1. capture: 1 KiB text messages, sealed, chained and durable, from 1, 4 and 16 concurrent
//!    capturer threads (`Agent::capture_blocking`), against raw SQLite (same row shape, WAL,
//!    `synchronous=FULL`, same group commit) and the `queue-file` crate (Tape) with `add_n` of
//!    the same groups and its syncs on. The three stores stay open and take turns in short
//!    slices (alternating order), so the load of a shared machine falls on all three alike;
//!    rates and ratios are pooled over all slices.
//! 2. capture latency: p50, p99, p99.9 of every capture timed in (1).
//! 3. upload: 100,000 queued events to the real receiver over TLS on loopback, end to end.
//! 4. memory: peak RSS (VmHWM) of a child process that captures then uploads 10,000 and
//!    1,000,000 events, to a receiver running in another child process.
//! 5. cold start: `Agent::open` + `status()` in a fresh process over a 1,000,000-event queue.
//! 6. cost per event: instructions per captured event under callgrind, top functions named.
//! 7. size: the stripped host cdylib of the bindings, with a per-crate breakdown.
//!
//! `--quick` runs all of it with tiny sizes (CI: does every benchmark still run?) and exits
//! non-zero only when a benchmark fails to run, never because a goal is missed.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, mpsc};
use std::time::{Duration, Instant};

use crate::output::outln;
use base64::Engine;
use serde_json::{Value as Json, json};
use verbatim_core::model::{Channel, Direction, Event, EventMeta, Message};
use verbatim_core::record::{Record, RecordBody};
use verbatim_core::upload::{NetworkState, StopReason, UploadOptions};
use verbatim_core::{Agent, AgentOptions, CaptureOutcome, Value, synth};

const TENANT: &str = "acme-securities";
/// Bytes of text in every benchmark message.
const TEXT_LEN: usize = 1024;
/// Captures in flight when a benchmark only needs a full queue (fills group commits).
const FILL_IN_FLIGHT: usize = 256;
/// Captures in flight in the memory child (as many as a busy app would have, and then some).
const MEMORY_IN_FLIGHT: usize = 64;
/// Never contacted: the capture-only benchmarks need a valid policy, not an archive.
const NO_ARCHIVE: &str = "https://127.0.0.1:9/";

type BenchResult<T> = Result<T, String>;

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    child: Option<ChildCommand>,
    /// Tiny sizes: checks that every benchmark still runs (CI), in well under a minute.
    #[arg(long)]
    quick: bool,
    /// Also print every figure as one JSON object on the last line.
    #[arg(long)]
    json: bool,
    /// Run only these benchmarks: capture, upload, memory, cold, cpu, size (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    only: Vec<String>,
    /// Working directory (default: a new one under the system temp directory, removed at the end).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// max_batch_kb of the device policy in the upload and memory benchmarks.
    #[arg(long, default_value_t = 1024)]
    batch_kb: u32,
    /// Events queued before the upload benchmark (default 100,000; 2,000 with --quick).
    #[arg(long)]
    upload_events: Option<u64>,
    /// Events of the large memory run (default 1,000,000; 20,000 with --quick).
    #[arg(long)]
    memory_events: Option<u64>,
    /// Seconds of each capture slice (default 0.15; 0.2 with --quick).
    #[arg(long)]
    capture_secs: Option<f64>,
    /// Slices per system in the capture comparison (default 40; 2 with --quick).
    #[arg(long)]
    rounds: Option<usize>,
    /// An unstripped build of this same binary, so callgrind can name functions
    /// (scripts/bench.sh builds target/symbols/verbatim). Default: this binary.
    #[arg(long)]
    symbols_exe: Option<PathBuf>,
    /// The bindings' host library to size. Default: libverbatim_ffi.so next to this binary.
    #[arg(long)]
    ffi_lib: Option<PathBuf>,
    /// An unstripped build of that library, for the per-crate breakdown (scripts/bench.sh
    /// builds target/symbols/libverbatim_ffi.so).
    #[arg(long)]
    ffi_lib_unstripped: Option<PathBuf>,
}

#[derive(clap::Subcommand)]
#[allow(clippy::enum_variant_names)] // the names are the hidden subcommands: capture-child, ...
enum ChildCommand {
    /// Captures N events in a fresh store from one or more threads (run under callgrind).
    #[command(hide = true)]
    CaptureChild {
        #[arg(long)]
        events: u64,
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 1)]
        capturers: usize,
    },
    /// Captures then uploads N events; prints its peak RSS as JSON.
    #[command(hide = true)]
    MemoryChild(MemoryChildArgs),
    /// Opens an agent over an existing store and reads its status; prints the time as JSON.
    #[command(hide = true)]
    ColdChild {
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(clap::Args)]
struct MemoryChildArgs {
    #[arg(long)]
    events: u64,
    #[arg(long)]
    dir: PathBuf,
    #[arg(long)]
    url: String,
    /// The receiver's CA certificate (PEM file).
    #[arg(long)]
    ca: PathBuf,
    /// The archive public key, base64.
    #[arg(long)]
    public_key: String,
    #[arg(long)]
    device: String,
    #[arg(long, default_value_t = 1024)]
    batch_kb: u32,
    // The device token comes in the VERBATIM_BENCH_TOKEN environment variable, not argv.
}

pub fn run(args: BenchArgs) -> ExitCode {
    match args.child {
        Some(ChildCommand::CaptureChild { events, dir, capturers }) => child_exit(capture_child(events, &dir, capturers)),
        Some(ChildCommand::MemoryChild(a)) => child_exit(memory_child(a)),
        Some(ChildCommand::ColdChild { dir }) => child_exit(cold_child(&dir)),
        None => suite(args),
    }
}

fn child_exit(r: BenchResult<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sizes

struct Plan {
    quick: bool,
    capture_secs: f64,
    rounds: usize,
    capturers: Vec<usize>,
    upload_events: u64,
    memory_small: u64,
    memory_large: u64,
    cold_events: u64,
    cold_runs: usize,
    cpu_events: u64,
}

impl Plan {
    fn new(args: &BenchArgs) -> Plan {
        let q = args.quick;
        Plan {
            quick: q,
            capture_secs: args.capture_secs.unwrap_or(if q { 0.2 } else { 0.15 }),
            rounds: args.rounds.unwrap_or(if q { 2 } else { 40 }).max(1),
            capturers: vec![1, 4, 16],
            upload_events: args.upload_events.unwrap_or(if q { 2_000 } else { 100_000 }),
            memory_small: if q { 2_000 } else { 10_000 },
            memory_large: args.memory_events.unwrap_or(if q { 20_000 } else { 1_000_000 }),
            cold_events: if q { 50_000 } else { 1_000_000 },
            cold_runs: if q { 3 } else { 7 },
            cpu_events: if q { 200 } else { 2_000 },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Shared helpers

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(1)
}

/// 1 KiB of message text (letters and spaces: no JSON escaping, so the record is what it says).
fn message_text() -> Arc<str> {
    let mut rng = synth::Rng::new(1024);
    let mut bytes = vec![0u8; TEXT_LEN];
    rng.fill(&mut bytes);
    let alphabet = b"abcdefghijklmnopqrstuvwxyz      ";
    let text: String = bytes.iter().map(|b| alphabet[(*b as usize) % alphabet.len()] as char).collect();
    Arc::from(text)
}

fn message(text: &str, source_id: String) -> Event {
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
fn ciphertext_len(text: &str) -> usize {
    let Event::Message(m) = message(text, "m-0-0000000".into()) else { unreachable!() };
    Record::new(now_ms(), RecordBody::Message(m)).encode().len() + 16
}

fn policy(url: &str, public: &[u8; 32], token: &str, device: &str, batch_kb: u32, ca_pem: Option<&str>) -> Value {
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

fn runtime() -> BenchResult<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().map_err(|e| format!("tokio runtime: {e}"))
}

/// An agent in `dir` under a capture-only policy (the archive is never contacted).
fn capture_agent(rt: &tokio::runtime::Runtime, dir: &Path) -> BenchResult<Agent> {
    let (_, public) = verbatim_core::seal::generate_archive_keypair();
    let agent = Agent::open(dir, AgentOptions::default()).map_err(|e| format!("open agent: {e}"))?;
    let p = policy(NO_ARCHIVE, &public, "bench-token-never-sent", "bench-device", 1024, None);
    rt.block_on(agent.apply_policy(&p)).map_err(|e| format!("policy: {e}"))?;
    Ok(agent)
}

/// Captures `events` messages with `in_flight` concurrent tasks (group commits fill up).
async fn fill(agent: &Agent, events: u64, in_flight: usize, text: &Arc<str>, tag: &str) -> BenchResult<f64> {
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
async fn drain(agent: &Agent) -> BenchResult<(u64, u64, u64, f64)> {
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

fn percentile_ms(sorted_ns: &[u64], p: f64) -> f64 {
    if sorted_ns.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted_ns.len() as f64).ceil() as usize;
    sorted_ns[rank.clamp(1, sorted_ns.len()) - 1] as f64 / 1e6
}

fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let n = values.len();
    if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 }
}

fn fresh_dir(base: &Path, name: &str) -> BenchResult<PathBuf> {
    let d = base.join(name);
    if d.exists() {
        std::fs::remove_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
    Ok(d)
}

fn remove(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}

fn exe() -> BenchResult<PathBuf> {
    std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))
}

/// Runs a child and returns the last JSON line it printed; kills it (by its id) after `limit`.
fn child_json(mut cmd: Command, limit: Duration) -> BenchResult<Json> {
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
fn wait_limited(child: &mut std::process::Child, limit: Duration) -> BenchResult<std::process::ExitStatus> {
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

fn proc_status_kib(pid: Option<u32>, key: &str) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".to_string(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

// ---------------------------------------------------------------------------------------------
// The table

struct Row {
    bench: String,
    figure: String,
    baseline: String,
    goal: String,
    met: Option<bool>,
}

impl Row {
    fn new(bench: impl Into<String>, figure: impl Into<String>) -> Row {
        Row { bench: bench.into(), figure: figure.into(), baseline: String::new(), goal: String::new(), met: None }
    }
    fn baseline(mut self, b: impl Into<String>) -> Row {
        self.baseline = b.into();
        self
    }
    fn goal(mut self, g: impl Into<String>, met: bool) -> Row {
        self.goal = g.into();
        self.met = Some(met);
        self
    }
}

struct Report {
    rows: Vec<Row>,
    json: serde_json::Map<String, Json>,
    failures: Vec<String>,
}

fn suite(args: BenchArgs) -> ExitCode {
    let plan = Plan::new(&args);
    let wanted = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o.trim() == name);
    for o in &args.only {
        if !["capture", "upload", "memory", "cold", "cpu", "size"].contains(&o.trim()) {
            eprintln!("error: unknown benchmark {o:?} (capture, upload, memory, cold, cpu, size)");
            return ExitCode::from(2);
        }
    }
    let (base, temporary) = match &args.dir {
        Some(d) => (d.clone(), false),
        None => {
            let mut b = [0u8; 4];
            let _ = getrandom::fill(&mut b);
            (std::env::temp_dir().join(format!("verbatim-bench-{:08x}", u32::from_le_bytes(b))), true)
        }
    };
    if let Err(e) = std::fs::create_dir_all(&base) {
        eprintln!("error: {}: {e}", base.display());
        return ExitCode::from(2);
    }
    let started = Instant::now();
    let mut report = Report { rows: Vec::new(), json: serde_json::Map::new(), failures: Vec::new() };
    report.json.insert("machine".into(), machine());
    report.json.insert("quick".into(), json!(plan.quick));
    eprintln!("verbatim bench{} in {}", if plan.quick { " --quick" } else { "" }, base.display());

    type Bench<'a> = (&'a str, Box<dyn Fn(&mut Report) -> BenchResult<()> + 'a>);
    let benches: Vec<Bench> = vec![
        ("capture", Box::new(|r: &mut Report| bench_capture(r, &plan, &base))),
        ("upload", Box::new(|r: &mut Report| bench_upload(r, &plan, &base, args.batch_kb))),
        ("memory", Box::new(|r: &mut Report| bench_memory(r, &plan, &base, args.batch_kb))),
        ("cold", Box::new(|r: &mut Report| bench_cold(r, &plan, &base))),
        ("cpu", Box::new(|r: &mut Report| bench_cpu(r, &plan, &base, args.symbols_exe.as_deref()))),
        ("size", Box::new(|r: &mut Report| bench_size(r, args.ffi_lib.as_deref(), args.ffi_lib_unstripped.as_deref()))),
    ];
    for (name, bench) in benches {
        if !wanted(name) {
            continue;
        }
        let t = Instant::now();
        eprintln!("[{name}] ...");
        let done = Arc::new(AtomicBool::new(false));
        watchdog(name.to_string(), if plan.quick { 300 } else { 7200 }, done.clone());
        if let Err(e) = bench(&mut report) {
            eprintln!("[{name}] FAILED: {e}");
            report.rows.push(Row::new(name, format!("FAILED: {e}")));
            report.failures.push(format!("{name}: {e}"));
        }
        done.store(true, Ordering::SeqCst);
        eprintln!("[{name}] {:.1} s", t.elapsed().as_secs_f64());
    }
    let total = started.elapsed().as_secs_f64();
    report.json.insert("total_secs".into(), json!(round(total, 1)));
    report.json.insert("failures".into(), json!(report.failures));
    print_table(&report, &plan, total);
    if args.json {
        outln!("{}", Json::Object(report.json.clone()));
    }
    if temporary {
        remove(&base);
    }
    if report.failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) }
}

/// A benchmark that hangs (a deadlock in the code measured) must fail the run, not stall CI.
fn watchdog(name: String, secs: u64, done: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if done.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!("[{name}] FAILED: did not finish within {secs} s (hung?)");
        std::process::exit(1);
    });
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

fn machine() -> Json {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model =
        cpuinfo.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).unwrap_or("?").trim().to_string();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let load =
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" ");
    json!({ "cores": cores, "cpu": model, "load_average_at_start": load, "os": std::env::consts::OS, "arch": std::env::consts::ARCH })
}

fn print_table(report: &Report, plan: &Plan, total: f64) {
    let m = report.json.get("machine").cloned().unwrap_or(Json::Null);
    outln!();
    outln!(
        "Verbatim benchmarks{} ({} cores, {}, load {} at start; {:.0} s)",
        if plan.quick { " --quick (tiny sizes: checks that everything runs, figures are not meaningful)" } else { "" },
        m["cores"],
        m["cpu"].as_str().unwrap_or("?"),
        m["load_average_at_start"].as_str().unwrap_or("?"),
        total
    );
    let header = ["benchmark", "figure", "baseline (same run) and ratio", "goal", "met"];
    let cells: Vec<[String; 5]> = report
        .rows
        .iter()
        .map(|r| {
            let met = match r.met {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "",
            };
            [r.bench.clone(), r.figure.clone(), r.baseline.clone(), r.goal.clone(), met.to_string()]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for c in &cells {
        for (i, v) in c.iter().enumerate() {
            widths[i] = widths[i].max(v.chars().count());
        }
    }
    let line = |c: &[String]| {
        let mut s = String::from("|");
        for (i, v) in c.iter().enumerate() {
            s.push(' ');
            s.push_str(v);
            s.push_str(&" ".repeat(widths[i] - v.chars().count()));
            s.push_str(" |");
        }
        s
    };
    outln!("{}", line(&header.map(String::from)));
    outln!("|{}", widths.iter().map(|w| format!("{}|", "-".repeat(w + 2))).collect::<String>());
    for c in &cells {
        outln!("{}", line(c));
    }
    if !report.failures.is_empty() {
        outln!("{} benchmark(s) failed to run: {}", report.failures.len(), report.failures.join("; "));
    }
}

// ---------------------------------------------------------------------------------------------
// 1 and 2: capture throughput and latency, against raw SQLite and queue-file

/// One measurement: events completed, seconds, each capture's latency, average group size.
struct Run {
    events: u64,
    secs: f64,
    latencies_ns: Vec<u64>,
    avg_group: f64,
}

impl Run {
    fn rate(&self) -> f64 {
        self.events as f64 / self.secs.max(1e-9)
    }
}

/// Runs `capturers` threads calling `one` until `duration` has passed; times every call.
fn drive(
    capturers: usize,
    duration: Duration,
    one: impl Fn(usize, u64) -> BenchResult<()> + Sync,
) -> BenchResult<(u64, f64, Vec<u64>)> {
    let barrier = Barrier::new(capturers + 1);
    let failed = AtomicBool::new(false);
    let one = &one;
    let (barrier, failed) = (&barrier, &failed);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..capturers)
            .map(|t| {
                s.spawn(move || -> BenchResult<(Vec<u64>, Instant)> {
                    let mut lat = Vec::with_capacity(65536);
                    barrier.wait();
                    let deadline = Instant::now() + duration;
                    let mut i = 0u64;
                    while Instant::now() < deadline && !failed.load(Ordering::Relaxed) {
                        let t0 = Instant::now();
                        if let Err(e) = one(t, i) {
                            failed.store(true, Ordering::Relaxed);
                            return Err(e);
                        }
                        lat.push(t0.elapsed().as_nanos() as u64);
                        i += 1;
                    }
                    Ok((lat, Instant::now()))
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let mut all = Vec::new();
        let mut end = start;
        for h in handles {
            let (lat, finished) = h.join().map_err(|_| "capturer thread panicked".to_string())??;
            all.extend(lat);
            end = end.max(finished);
        }
        Ok((all.len() as u64, (end - start).as_secs_f64(), all))
    })
}

/// Our agent, open for the whole comparison at one capturer count.
struct Ours<'a> {
    rt: &'a tokio::runtime::Runtime,
    agent: Agent,
    text: Arc<str>,
}

impl Ours<'_> {
    fn slice(&self, capturers: usize, duration: Duration, round: usize) -> BenchResult<Run> {
        let before = verbatim_core::queue::commit_stats();
        let (events, secs, latencies_ns) = drive(capturers, duration, |t, i| {
            match self.agent.capture_blocking(message(&self.text, format!("m-{round}-{t}-{i:07}"))) {
                Ok(CaptureOutcome::Captured { .. }) => Ok(()),
                Ok(other) => Err(format!("capture: unexpected {other:?}")),
                Err(e) => Err(format!("capture: {e}")),
            }
        })?;
        let after = verbatim_core::queue::commit_stats();
        let groups = (after.transactions - before.transactions).max(1);
        Ok(Run { events, secs, latencies_ns, avg_group: (after.jobs - before.jobs) as f64 / groups as f64 })
    }

    fn close(self) -> BenchResult<()> {
        self.rt.block_on(self.agent.close()).map_err(|e| format!("close: {e}"))
    }
}

/// A row handed to a baseline's single writer, and where to say it is durable.
struct Request {
    row: Vec<u8>,
    captured_ms: i64,
    done: mpsc::SyncSender<()>,
}

/// A baseline store behind the same shape as our writer: one thread takes whatever requests are
/// waiting (up to 256, our MAX_GROUP), commits them with `commit`, then answers each.
struct Baseline {
    tx: Option<mpsc::Sender<Request>>,
    writer: Option<std::thread::JoinHandle<BenchResult<()>>>,
    groups: Arc<std::sync::atomic::AtomicU64>,
    rows: Arc<std::sync::atomic::AtomicU64>,
    template: Vec<u8>,
}

impl Baseline {
    fn start(row_len: usize, mut commit: impl FnMut(&[Request]) -> BenchResult<()> + Send + 'static) -> Baseline {
        let mut template = vec![0u8; row_len];
        synth::Rng::new(7).fill(&mut template);
        let (tx, rx) = mpsc::channel::<Request>();
        let groups = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let rows = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (g, r) = (groups.clone(), rows.clone());
        let writer = std::thread::spawn(move || -> BenchResult<()> {
            while let Ok(first) = rx.recv() {
                let mut group = vec![first];
                while group.len() < 256 {
                    match rx.try_recv() {
                        Ok(req) => group.push(req),
                        Err(_) => break,
                    }
                }
                commit(&group)?;
                g.fetch_add(1, Ordering::Relaxed);
                r.fetch_add(group.len() as u64, Ordering::Relaxed);
                for req in group {
                    let _ = req.done.send(());
                }
            }
            Ok(())
        });
        Baseline { tx: Some(tx), writer: Some(writer), groups, rows, template }
    }

    /// `capturers` threads each submit one row and wait until it is durable, for `duration`.
    fn slice(&self, capturers: usize, duration: Duration) -> BenchResult<Run> {
        let tx = self.tx.as_ref().ok_or("baseline closed")?;
        let waiters: Vec<(mpsc::SyncSender<()>, std::sync::Mutex<mpsc::Receiver<()>>)> =
            (0..capturers).map(|_| mpsc::sync_channel(1)).map(|(a, b)| (a, std::sync::Mutex::new(b))).collect();
        let (g0, r0) = (self.groups.load(Ordering::Relaxed), self.rows.load(Ordering::Relaxed));
        let (events, secs, latencies_ns) = drive(capturers, duration, |t, _| {
            let (done, wait) = &waiters[t];
            let request = Request { row: self.template.clone(), captured_ms: now_ms(), done: done.clone() };
            tx.send(request).map_err(|_| "baseline writer stopped")?;
            wait.lock().map_err(|_| "lock")?.recv().map_err(|_| "baseline writer stopped".to_string())
        })?;
        let groups = (self.groups.load(Ordering::Relaxed) - g0).max(1);
        let rows = self.rows.load(Ordering::Relaxed) - r0;
        Ok(Run { events, secs, latencies_ns, avg_group: rows as f64 / groups as f64 })
    }

    fn close(mut self) -> BenchResult<()> {
        drop(self.tx.take());
        match self.writer.take().map(|w| w.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err("baseline writer panicked".into()),
            None => Ok(()),
        }
    }
}

/// Raw SQLite: the same table shape as our `records`, WAL, synchronous=FULL, one transaction
/// per group. No sealing, no chain, no head row, no savepoints: just the durable inserts.
fn raw_sqlite(dir: &Path, ct_len: usize) -> BenchResult<Baseline> {
    let mut conn = rusqlite::Connection::open(dir.join("raw.sqlite3")).map_err(|e| e.to_string())?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(|e| e.to_string())?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(format!("raw SQLite: journal mode {mode}"));
    }
    conn.pragma_update(None, "synchronous", "FULL").map_err(|e| e.to_string())?;
    conn.execute_batch(
        "CREATE TABLE records (seq INTEGER PRIMARY KEY, epoch INTEGER NOT NULL, captured_ms INTEGER NOT NULL,
                               link BLOB NOT NULL, ciphertext BLOB NOT NULL)",
    )
    .map_err(|e| e.to_string())?;
    let mut seq = 0i64;
    Ok(Baseline::start(ct_len + 32, move |group| {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(|e| e.to_string())?;
        {
            let mut insert = tx
                .prepare_cached("INSERT INTO records (seq, epoch, captured_ms, link, ciphertext) VALUES (?1, ?2, ?3, ?4, ?5)")
                .map_err(|e| e.to_string())?;
            for r in group {
                seq += 1;
                let (link, ct) = r.row.split_at(32);
                insert.execute(rusqlite::params![seq, 1i64, r.captured_ms, link, ct]).map_err(|e| e.to_string())?;
            }
        }
        tx.commit().map_err(|e| e.to_string())
    }))
}

/// queue-file (Square's Tape): `add_n` of each group, syncs on (its default).
fn tape(dir: &Path, ct_len: usize) -> BenchResult<Baseline> {
    let mut qf = queue_file::QueueFile::open(dir.join("tape.qf")).map_err(|e| format!("queue-file: {e}"))?;
    qf.set_sync_writes(true);
    // The same bytes as a row of ours: seq, epoch, captured_ms, link and the ciphertext.
    Ok(Baseline::start(24 + 32 + ct_len, move |group| {
        qf.add_n(group.iter().map(|r| r.row.as_slice())).map_err(|e| format!("queue-file: {e}"))
    }))
}

/// Pooled over slices: events per second of all of them together.
fn pooled_rate(runs: &[Run]) -> f64 {
    runs.iter().map(|r| r.events).sum::<u64>() as f64 / runs.iter().map(|r| r.secs).sum::<f64>().max(1e-9)
}

fn pooled_group(runs: &[Run]) -> f64 {
    let events: f64 = runs.iter().map(|r| r.events as f64).sum();
    events / runs.iter().map(|r| r.events as f64 / r.avg_group.max(1e-9)).sum::<f64>().max(1e-9)
}

fn sorted_latencies(runs: &[Run]) -> Vec<u64> {
    let mut lat: Vec<u64> = runs.iter().flat_map(|r| r.latencies_ns.iter().copied()).collect();
    lat.sort_unstable();
    lat
}

fn bench_capture(report: &mut Report, plan: &Plan, base: &Path) -> BenchResult<()> {
    let rt = runtime()?;
    let text = message_text();
    let ct_len = ciphertext_len(&text);
    let slice = Duration::from_secs_f64(plan.capture_secs);
    let mut json_rows = Vec::new();
    let mut latency_rows = Vec::new();
    for &n in &plan.capturers {
        // The three stores stay open; they take turns in short slices, in alternating order, so
        // that the machine's drifting load (others share its two cores and its disk) falls on
        // all three alike. Rates are pooled over all slices.
        let dir = fresh_dir(base, &format!("capture-{n}"))?;
        let ours = Ours { rt: &rt, agent: capture_agent(&rt, &dir.join("ours"))?, text: text.clone() };
        std::fs::create_dir_all(dir.join("sqlite")).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(dir.join("tape")).map_err(|e| e.to_string())?;
        let sqlite = raw_sqlite(&dir.join("sqlite"), ct_len)?;
        let queue_file = tape(&dir.join("tape"), ct_len)?;
        let (mut o, mut s, mut q) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..plan.rounds {
            let order: [u8; 3] = if round % 2 == 0 { [0, 1, 2] } else { [2, 1, 0] };
            for system in order {
                match system {
                    0 => o.push(ours.slice(n, slice, round)?),
                    1 => s.push(sqlite.slice(n, slice)?),
                    _ => q.push(queue_file.slice(n, slice)?),
                }
            }
        }
        ours.close()?;
        sqlite.close()?;
        queue_file.close()?;
        remove(&dir);
        let (rate, srate, qrate) = (pooled_rate(&o), pooled_rate(&s), pooled_rate(&q));
        let (vs_sqlite, vs_tape) = (rate / srate, rate / qrate);
        let per_round = |other: &[Run]| o.iter().zip(other).map(|(a, b)| round(a.rate() / b.rate(), 3)).collect::<Vec<_>>();
        let (group, sgroup, qgroup) = (pooled_group(&o), pooled_group(&s), pooled_group(&q));
        let (lat, slat, qlat) = (sorted_latencies(&o), sorted_latencies(&s), sorted_latencies(&q));
        let (p50, p99, p999) = (percentile_ms(&lat, 50.0), percentile_ms(&lat, 99.0), percentile_ms(&lat, 99.9));
        eprintln!(
            "  {n:>2} capturers: ours {rate:>6.0}/s (group {group:.1})  SQLite {srate:>6.0}/s (group {sgroup:.1})  queue-file {qrate:>6.0}/s (group {qgroup:.1})"
        );
        let plural = if n == 1 { "" } else { "s" };
        report.rows.push(
            Row::new(format!("capture 1 KiB, {n} capturer{plural}"), format!("{rate:.0} events/s (avg group {group:.1})"))
                .baseline(format!(
                    "SQLite {srate:.0}/s (group {sgroup:.1}): {vs_sqlite:.2}x; queue-file {qrate:.0}/s: {vs_tape:.2}x"
                ))
                .goal(">= 0.5x SQLite, >= 1.0x queue-file", vs_sqlite >= 0.5 && vs_tape >= 1.0),
        );
        latency_rows.push(
            Row::new(
                format!("capture latency, {n} capturer{plural}"),
                format!("p50 {p50:.2} ms, p99 {p99:.2} ms, p99.9 {p999:.2} ms"),
            )
            .baseline(format!(
                "SQLite p50 {:.2}, p99 {:.2} ms; queue-file p50 {:.2}, p99 {:.2} ms",
                percentile_ms(&slat, 50.0),
                percentile_ms(&slat, 99.0),
                percentile_ms(&qlat, 50.0),
                percentile_ms(&qlat, 99.0)
            ))
            .goal("p99 < 2 ms", p99 < 2.0),
        );
        let lat_json = |l: &[u64]| {
            json!({ "p50": round(percentile_ms(l, 50.0), 3), "p99": round(percentile_ms(l, 99.0), 3),
                    "p99_9": round(percentile_ms(l, 99.9), 3), "samples": l.len() })
        };
        json_rows.push(json!({
            "capturers": n,
            "events_per_s": round(rate, 0),
            "avg_group": round(group, 2),
            "sqlite_events_per_s": round(srate, 0),
            "sqlite_avg_group": round(sgroup, 2),
            "queue_file_events_per_s": round(qrate, 0),
            "queue_file_avg_group": round(qgroup, 2),
            "ratio_vs_sqlite": round(vs_sqlite, 3),
            "ratio_vs_queue_file": round(vs_tape, 3),
            "slices_ratio_vs_sqlite": per_round(&s),
            "slices_ratio_vs_queue_file": per_round(&q),
            "latency_ms": lat_json(&lat),
            "sqlite_latency_ms": lat_json(&slat),
            "queue_file_latency_ms": lat_json(&qlat),
        }));
    }
    report.rows.extend(latency_rows);
    report.json.insert(
        "capture".into(),
        json!({ "ciphertext_bytes": ct_len, "seconds_per_slice": plan.capture_secs, "slices": plan.rounds, "by_capturers": json_rows }),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 3: upload to the real receiver over TLS

fn bench_upload(report: &mut Report, plan: &Plan, base: &Path, batch_kb: u32) -> BenchResult<()> {
    let dir = fresh_dir(base, "upload")?;
    let rt = runtime()?;
    let text = message_text();
    let (_, public) = verbatim_core::seal::generate_archive_keypair();
    let archive_dir = dir.join("archive");
    let config = verbatim_receiver::ReceiverConfig::local_self_signed(&archive_dir);
    let tokens = config.tokens_file.clone();
    // The receiver runs on its own thread and runtime, as a separate server would.
    let receiver = verbatim_receiver::Receiver::start_in_background(config).map_err(|e| format!("receiver: {e}"))?;
    let token = verbatim_receiver::add_device(&tokens, TENANT, "bench-upload").map_err(|e| format!("add device: {e}"))?;
    let ca = receiver.ca_pem().ok_or("receiver has no CA")?.to_string();
    let p = policy(&receiver.url(), &public, token.expose(), "bench-upload", batch_kb, Some(&ca));
    let agent = Agent::open(&dir.join("device"), AgentOptions::default()).map_err(|e| format!("open agent: {e}"))?;
    let result = rt.block_on(async {
        agent.apply_policy(&p).await.map_err(|e| format!("policy: {e}"))?;
        let fill_secs = fill(&agent, plan.upload_events, FILL_IN_FLIGHT, &text, "u").await?;
        let queued = agent.snapshot().pending_count;
        let (records, bytes, batches, secs) = drain(&agent).await?;
        agent.close().await.map_err(|e| format!("close: {e}"))?;
        Ok::<_, String>((fill_secs, queued, records, bytes, batches, secs))
    });
    receiver.shutdown();
    let (fill_secs, queued, records, bytes, batches, secs) = result?;
    let verified = verbatim_receiver::verify(&archive_dir).map_err(|e| format!("verify: {e}"))?;
    if !verified.totals.ok || verified.totals.records < queued {
        return Err(format!("the archive holds {} of {queued} records (ok: {})", verified.totals.records, verified.totals.ok));
    }
    remove(&dir);
    let rate = records as f64 / secs;
    let mbps = bytes as f64 / 1e6 / secs;
    report.rows.push(
        Row::new(
            format!("upload {} queued events (TLS, loopback, receiver fsync)", plan.upload_events),
            format!("{rate:.0} events/s, {mbps:.1} MB/s ({batches} batches of <= {batch_kb} KiB)"),
        )
        .baseline(format!("archive verified: {} records, chain intact", verified.totals.records))
        .goal(">= 50,000 events/s", rate >= 50_000.0),
    );
    report.rows.push(Row::new(
        format!("fill: {} captures, {FILL_IN_FLIGHT} in flight", plan.upload_events),
        format!("{:.0} events/s (sealed, chained, durable; large groups)", plan.upload_events as f64 / fill_secs),
    ));
    report.json.insert(
        "upload".into(),
        json!({
            "events": plan.upload_events, "records_sent": records, "bytes_sent": bytes, "batches": batches,
            "max_batch_kb": batch_kb, "seconds": round(secs, 3), "events_per_s": round(rate, 0), "mb_per_s": round(mbps, 2),
            "fill_events_per_s": round(plan.upload_events as f64 / fill_secs, 0),
        }),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 4: memory, in child processes, with the receiver in another

struct ReceiverChild {
    child: std::process::Child,
    url: String,
    ca: PathBuf,
    tokens: PathBuf,
}

impl ReceiverChild {
    fn start(dir: &Path) -> BenchResult<ReceiverChild> {
        let tokens = dir.join("tokens.jsonl");
        let mut child = Command::new(exe()?)
            .args(["receive", "--listen", "127.0.0.1:0", "--self-signed", "--data"])
            .arg(dir)
            .arg("--tokens")
            .arg(&tokens)
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

    fn peak_kib(&self) -> Option<u64> {
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

fn bench_memory(report: &mut Report, plan: &Plan, base: &Path, batch_kb: u32) -> BenchResult<()> {
    let dir = fresh_dir(base, "memory")?;
    let receiver = ReceiverChild::start(&dir.join("archive"))?;
    let (_, public) = verbatim_core::seal::generate_archive_keypair();
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

fn memory_child(a: MemoryChildArgs) -> BenchResult<()> {
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

// ---------------------------------------------------------------------------------------------
// 5: cold start over a big queue

fn bench_cold(report: &mut Report, plan: &Plan, base: &Path) -> BenchResult<()> {
    let dir = fresh_dir(base, "cold")?;
    let store = dir.join("device");
    let rt = runtime()?;
    let text = message_text();
    let agent = capture_agent(&rt, &store)?;
    let fill_secs = rt.block_on(fill(&agent, plan.cold_events, FILL_IN_FLIGHT, &text, "c"))?;
    rt.block_on(agent.close()).map_err(|e| format!("close: {e}"))?;
    drop(agent);
    let db_bytes = std::fs::metadata(store.join(verbatim_core::queue::DB_FILE)).map(|m| m.len()).unwrap_or(0);
    let mut in_process = Vec::new();
    let mut whole = Vec::new();
    for _ in 0..plan.cold_runs {
        let mut cmd = Command::new(exe()?);
        cmd.args(["bench", "cold-child", "--dir"]).arg(&store);
        let t = Instant::now();
        let out = child_json(cmd, Duration::from_secs(60))?;
        whole.push(t.elapsed().as_secs_f64() * 1e3);
        if out["queue_records"].as_u64().unwrap_or(0) < plan.cold_events {
            return Err(format!("cold start saw {} records, expected {}", out["queue_records"], plan.cold_events));
        }
        in_process.push(out["open_status_ms"].as_f64().unwrap_or(f64::NAN));
    }
    remove(&dir);
    let runs = in_process.clone();
    let med = median(&mut in_process);
    let med_whole = median(&mut whole);
    report.rows.push(
        Row::new(
            format!("cold start, {} events queued", plan.cold_events),
            format!("{med:.1} ms open + status (median of {}; whole process {med_whole:.0} ms)", plan.cold_runs),
        )
        .baseline(format!("store {:.0} MB, built at {:.0} events/s", db_bytes as f64 / 1e6, plan.cold_events as f64 / fill_secs))
        .goal("< 50 ms", med < 50.0),
    );
    report.json.insert(
        "cold_start".into(),
        json!({ "events": plan.cold_events, "db_bytes": db_bytes, "open_status_ms_median": round(med, 2), "runs_ms": runs,
                "whole_process_ms_median": round(med_whole, 1) }),
    );
    Ok(())
}

fn cold_child(dir: &Path) -> BenchResult<()> {
    let started = Instant::now();
    let agent = Agent::open(dir, AgentOptions::default()).map_err(|e| format!("open agent: {e}"))?;
    let status = agent.status();
    let ms = started.elapsed().as_secs_f64() * 1e3;
    if !status.configured {
        return Err("the store's policy was not restored".into());
    }
    outln!("{}", json!({ "open_status_ms": round(ms, 3), "queue_records": status.queue_records }));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 6: instructions per captured event (callgrind)

fn capture_child(events: u64, dir: &Path, capturers: usize) -> BenchResult<()> {
    let rt = runtime()?;
    let text = message_text();
    let agent = capture_agent(&rt, dir)?;
    let capturers = capturers.max(1) as u64;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..capturers)
            .map(|t| {
                let (agent, text) = (&agent, &text);
                s.spawn(move || -> BenchResult<()> {
                    let n = events / capturers + u64::from(t < events % capturers);
                    for i in 0..n {
                        agent.capture_blocking(message(text, format!("m-{t}-{i:07}"))).map_err(|e| format!("capture: {e}"))?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| h.join().map_err(|_| "capturer panicked".to_string())?)
    })?;
    rt.block_on(agent.close()).map_err(|e| format!("close: {e}"))?;
    outln!("{}", json!({ "captured": events }));
    Ok(())
}

fn callgrind_total(file: &Path) -> BenchResult<u64> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    text.lines()
        .find_map(|l| l.strip_prefix("totals:").or_else(|| l.strip_prefix("summary:")))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("{}: no totals", file.display()))
}

/// Frames that are only plumbing (thread start, runtime, main): never the "top cost".
fn plumbing(name: &str) -> bool {
    const SKIP: &[&str] = &[
        "???",
        "0x",
        "_start",
        "__libc_start",
        "start_thread",
        "clone",
        "main",
        "std::rt::",
        "std::sys::",
        "core::ops::function",
        "std::thread::",
        "__rust_begin_short_backtrace",
        "std::panicking",
        "std::panic",
        "verbatim::main",
        "verbatim::bench::",
        "<alloc::boxed::Box<F,A> as core::ops::function",
        "tokio::runtime",
        "_dl_",
        "verbatim_core::block_on",
        "core::panic",
        "std::sys_common",
        "verbatim::",
        // The writer's own scaffolding: the work it does is named below it.
        "verbatim_core::queue::writer::Writer::",
        "verbatim_core::queue::writer::Core::append",
        "verbatim_core::queue::writer::Core::perform",
        "verbatim_core::queue::writer::Core::capture",
        "verbatim_core::agent::Agent::capture",
        "verbatim_core::agent::build_job",
        "verbatim_core::queue::writer::Pending::new",
        "verbatim_core::block_on",
        "cipher::stream::core_api",
    ];
    SKIP.iter().any(|s| name.starts_with(s))
}

/// Instructions per function (inclusive or self) from `callgrind_annotate`, keyed by full name.
fn callgrind_functions(file: &Path, inclusive: bool) -> BenchResult<Vec<(String, u64)>> {
    let out = Command::new("callgrind_annotate")
        .arg(format!("--inclusive={}", if inclusive { "yes" } else { "no" }))
        .arg("--threshold=100")
        .arg(file)
        .output()
        .map_err(|e| format!("callgrind_annotate: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut functions = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let Some(first) = line.split_whitespace().next() else { continue };
        let Ok(ir) = first.replace(',', "").parse::<u64>() else { continue };
        // "1,234 (12.3%)  file:function [object]" (newer) or "1,234  file:function [object]".
        let rest = line[first.len()..].trim_start();
        let rest = if rest.starts_with('(') { rest.split_once(')').map(|(_, r)| r.trim_start()).unwrap_or(rest) } else { rest };
        if rest.starts_with("PROGRAM TOTALS") || rest.is_empty() {
            continue;
        }
        let func = rest.split_once(':').map(|(_, f)| f).unwrap_or(rest);
        let func = func.rsplit_once(" [").map(|(f, _)| f).unwrap_or(func).trim();
        if !func.is_empty() {
            functions.push((func.to_string(), ir));
        }
    }
    Ok(functions)
}

/// The top functions per captured event: the run with events minus the run without (so that
/// process start, the key exchange and the policy do not count), plumbing left out.
/// Returns (instructions per event, percent of the per-event total, name).
fn callgrind_top(with: &Path, without: &Path, events: u64, inclusive: bool, n: usize) -> BenchResult<Vec<(u64, f64, String)>> {
    let setup: BTreeMap<String, u64> = callgrind_functions(without, inclusive)?.into_iter().collect();
    let per_event_total = callgrind_total(with)?.saturating_sub(callgrind_total(without)?) as f64 / events.max(1) as f64;
    let mut costs: Vec<(u64, String)> = callgrind_functions(with, inclusive)?
        .into_iter()
        .map(|(f, ir)| (ir.saturating_sub(setup.get(&f).copied().unwrap_or(0)) / events.max(1), f))
        .collect();
    costs.sort_by_key(|(ir, _)| std::cmp::Reverse(*ir));
    let mut top: Vec<(u64, f64, String)> = Vec::new();
    for (ir, func) in costs {
        if plumbing(func.trim_start_matches('<')) {
            continue;
        }
        let name = shorten(&func);
        // Generic helpers (indexing, conversions) only ever run inside the functions listed.
        const HELPERS: &[&str] = &["hybrid_array::", "core::", "alloc::", "usize as ", "T as ", "u8 as ", "[T] as "];
        if inclusive && HELPERS.iter().any(|h| name.starts_with(h)) {
            continue;
        }
        // A wrapper costs the same as the one function it calls: keep the first of the two.
        let same_work = top.last().is_some_and(|(last, _, _)| last.abs_diff(ir) as f64 <= 0.02 * per_event_total);
        if top.iter().any(|(_, _, n)| *n == name) || (inclusive && same_work) {
            continue;
        }
        top.push((ir, 100.0 * ir as f64 / per_event_total.max(1.0), name));
        if top.len() == n {
            break;
        }
    }
    Ok(top)
}

/// Drops generic parameters and hashes from a demangled name, for the table.
fn shorten(name: &str) -> String {
    let mut out = String::new();
    let mut depth = 0;
    for c in name.chars() {
        match c {
            '<' if !out.is_empty() => depth += 1,
            '>' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    let out = out.trim_start_matches('<').to_string();
    match out.rfind("::h") {
        Some(i) if out[i + 3..].chars().all(|c| c.is_ascii_hexdigit()) => out[..i].to_string(),
        _ => out,
    }
}

fn bench_cpu(report: &mut Report, plan: &Plan, base: &Path, symbols_exe: Option<&Path>) -> BenchResult<()> {
    if Command::new("valgrind").arg("--version").output().is_err() {
        return Err("valgrind is not installed (scripts/bench.sh installs it: apt-get install -y valgrind)".into());
    }
    let dir = fresh_dir(base, "cpu")?;
    let binary = match symbols_exe {
        Some(p) => p.to_path_buf(),
        None => exe()?,
    };
    let run = |events: u64, name: &str| -> BenchResult<PathBuf> {
        let out = dir.join(format!("callgrind.{name}.out"));
        let store = fresh_dir(&dir, &format!("store-{name}"))?;
        let mut child = Command::new("valgrind")
            .args(["--tool=callgrind", "--quiet"])
            .arg(format!("--callgrind-out-file={}", out.display()))
            .arg(&binary)
            .args(["bench", "capture-child", "--events", &events.to_string(), "--dir"])
            .arg(&store)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("valgrind: {e}"))?;
        let status = wait_limited(&mut child, Duration::from_secs(600))?;
        if !status.success() {
            return Err(format!("callgrind run of {events} events failed ({status})"));
        }
        Ok(out)
    };
    let with = run(plan.cpu_events, "events")?;
    let without = run(0, "setup")?;
    let per_event = (callgrind_total(&with)?.saturating_sub(callgrind_total(&without)?)) as f64 / plan.cpu_events as f64;
    let inclusive = callgrind_top(&with, &without, plan.cpu_events, true, 5).unwrap_or_default();
    let exclusive = callgrind_top(&with, &without, plan.cpu_events, false, 5).unwrap_or_default();
    let named = symbols_exe.is_some();
    let keep = dir.with_file_name("callgrind.events.out");
    let _ = std::fs::copy(&with, &keep);
    remove(&dir);
    let list = |top: &[(u64, f64, String)]| top.iter().map(|(_, p, f)| format!("{f} {p:.0}%")).collect::<Vec<_>>().join("; ");
    report.rows.push(
        Row::new(
            format!("CPU per captured event (callgrind, 1 capturer, {} events)", plan.cpu_events),
            format!("{:.0} k instructions/event", per_event / 1e3),
        )
        .baseline(if named {
            format!("top inclusive: {}", list(&inclusive))
        } else {
            "functions unnamed: pass --symbols-exe (scripts/bench.sh does)".into()
        }),
    );
    if named {
        report.rows.push(Row::new("CPU: top self cost", list(&exclusive)));
    }
    report.json.insert(
        "cpu".into(),
        json!({
            "events": plan.cpu_events,
            "instructions_per_event": round(per_event, 0),
            "top_inclusive": inclusive.iter().map(|(ir, p, f)| json!({ "function": f, "instructions_per_event": ir, "percent": round(*p, 1) })).collect::<Vec<_>>(),
            "top_self": exclusive.iter().map(|(ir, p, f)| json!({ "function": f, "instructions_per_event": ir, "percent": round(*p, 1) })).collect::<Vec<_>>(),
            "profile": keep.display().to_string(),
        }),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 7: size of the bindings' host library

fn bench_size(report: &mut Report, lib: Option<&Path>, unstripped: Option<&Path>) -> BenchResult<()> {
    let lib = match lib {
        Some(p) => p.to_path_buf(),
        None => exe()?.with_file_name("libverbatim_ffi.so"),
    };
    let Ok(meta) = std::fs::metadata(&lib) else {
        report.rows.push(Row::new(
            "size: bindings host cdylib",
            format!("skipped: {} not built (cargo build -p verbatim-ffi --release)", lib.display()),
        ));
        return Ok(());
    };
    // The release profile strips; strip again to be sure of what is measured.
    let stripped = std::env::temp_dir().join(format!("verbatim-bench-ffi-{}.so", std::process::id()));
    let size = match Command::new("strip").arg("-o").arg(&stripped).arg(&lib).status() {
        Ok(s) if s.success() => std::fs::metadata(&stripped).map(|m| m.len()).unwrap_or(meta.len()),
        _ => meta.len(),
    };
    let _ = std::fs::remove_file(&stripped);
    let breakdown = unstripped.map(crate_breakdown).transpose()?.unwrap_or_default();
    let shown: Vec<String> =
        breakdown.iter().take(8).map(|(c, b, p)| format!("{c} {:.0} KiB ({p:.0}%)", *b as f64 / 1024.0)).collect();
    report.rows.push(
        Row::new("size: bindings host cdylib, stripped", format!("{:.2} MiB", size as f64 / 1048576.0))
            .baseline(if shown.is_empty() {
                "breakdown: pass --ffi-lib-unstripped (scripts/bench.sh does)".into()
            } else {
                format!("largest: {}", shown.join(", "))
            })
            .goal("< 6 MiB", size < 6 * 1024 * 1024),
    );
    report.json.insert(
        "size".into(),
        json!({
            "library": lib.display().to_string(),
            "stripped_bytes": size,
            "by_crate": breakdown.iter().map(|(c, b, p)| json!({ "crate": c, "bytes": b, "percent": round(*p, 1) })).collect::<Vec<_>>(),
        }),
    );
    Ok(())
}

/// Symbol bytes per crate (from `nm` on an unstripped build): (crate, bytes, percent of symbols).
/// Inlined code counts for the crate it was inlined into; C and assembly symbols are grouped by
/// their library's prefix.
fn crate_breakdown(lib: &Path) -> BenchResult<Vec<(String, u64, f64)>> {
    let out = Command::new("nm")
        .args(["--print-size", "--size-sort", "--demangle", "--defined-only"])
        .arg(lib)
        .output()
        .map_err(|e| format!("nm: {e}"))?;
    if !out.status.success() {
        return Err(format!("nm {} failed", lib.display()));
    }
    let mut by: BTreeMap<String, u64> = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut parts = line.splitn(4, ' ');
        let (_, Some(size), Some(_), Some(name)) = (parts.next(), parts.next(), parts.next(), parts.next()) else { continue };
        let Ok(size) = u64::from_str_radix(size, 16) else { continue };
        *by.entry(crate_of(name)).or_default() += size;
    }
    let total: u64 = by.values().sum();
    let mut v: Vec<(String, u64, f64)> = by.into_iter().map(|(c, b)| (c, b, 100.0 * b as f64 / total.max(1) as f64)).collect();
    v.sort_by_key(|e| std::cmp::Reverse(e.1));
    Ok(v)
}

fn crate_of(symbol: &str) -> String {
    let s = symbol.trim_start_matches(['<', '&', '*', ' ']).trim_start_matches("mut ").trim_start_matches("dyn ");
    if !s.contains("::") {
        // Not Rust: ring's C and assembly (prefixed, or its bignum kernels), the UniFFI exports,
        // and otherwise the bundled SQLite, most of whose functions are static and unprefixed.
        let lower = s.to_ascii_lowercase();
        return if lower.starts_with("ring_core")
            || lower.starts_with("ecp_nistz")
            || lower.contains("mul4x")
            || lower.contains("mulx4x")
            || lower.starts_with("bn_")
            || lower.contains("gfp_")
        {
            "ring (C/asm)".into()
        } else if lower.starts_with("uniffi") || lower.starts_with("ffi_") {
            "verbatim_ffi (exports)".into()
        } else if lower.starts_with("rust_") || lower.starts_with("__rust") || lower.starts_with('_') {
            "std".into()
        } else {
            "sqlite3 (C)".into()
        };
    }
    let head = s.split("::").next().unwrap_or(s);
    let head: String = head.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
    let generic = head.is_empty()
        || head.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        || [
            "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64", "i128", "isize", "str", "bool", "char", "f32",
            "f64",
        ]
        .contains(&head.as_str());
    match (generic, s.split_once(" as ")) {
        // `<T as some_crate::Trait>::f`: the trait's crate.
        (true, Some((_, rest))) => crate_of(rest),
        (true, None) => "core".into(),
        (false, _) => head,
    }
}
