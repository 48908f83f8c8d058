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
//! 8. telephony: the Google Messages archival source's re-scan of an unchanged provider
//!    against a plain read of the same rows, and its peak RSS at 100,000 and 1,000,000 rows.
//! 9. imessage: the Mac relay's first scan of a 1,000,000-message `chat.db`, its re-scan when
//!    nothing changed against a plain SQLite read of the same rows, and its peak RSS.
//! 10. whatsapp: the coexistence connector's webhook ingest under a burst of 10,000 signed
//!     webhooks (throughput, p50/p99 acknowledgement latency) against direct capture.
//! 11. erasure: capture sealed with conversation keys against the single epoch key, the key
//!     vault's ingest against an export of the same archive, one erasure's latency.
//!
//! `--quick` runs all of it with tiny sizes (CI: does every benchmark still run?) and exits
//! non-zero only when a benchmark fails to run, never because a goal is missed.

mod capture;
mod cold_start;
mod erasure;
mod imessage;
mod instructions;
mod memory;
mod object_store;
mod plan;
mod report;
mod size;
mod support;
mod telephony;
mod upload;
mod whatsapp;

use capture::*;
use cold_start::*;
use erasure::*;
use imessage::*;
use instructions::*;
use memory::*;
use object_store::*;
use plan::*;
use report::*;
use size::*;
use support::*;
use telephony::*;
use upload::*;
use whatsapp::*;

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
    /// Run only these benchmarks: capture, upload, objectstore, memory, cold, cpu, size, telephony,
    /// imessage, whatsapp, erasure (comma-separated).
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
    /// Messages in the large chat.db of the iMessage relay benchmark (default 1,000,000; 2,000 with --quick).
    #[arg(long)]
    imessage_messages: Option<u64>,
    /// Webhooks in the WhatsApp connector's burst (default 10,000; 500 with --quick).
    #[arg(long)]
    whatsapp_messages: Option<u64>,
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
    /// Runs the iMessage relay's first scan and re-scans over a chat.db; prints figures as JSON.
    #[command(hide = true)]
    ImessageChild(ImessageChildArgs),
    /// Scans a Telephony provider stand-in of N rows; prints times and peak RSS as JSON.
    #[command(hide = true)]
    TelephonyChild {
        #[arg(long)]
        rows: u64,
        #[arg(long)]
        rounds: usize,
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
        Some(ChildCommand::ImessageChild(a)) => child_exit(imessage_child(a)),
        Some(ChildCommand::TelephonyChild { rows, rounds, dir }) => child_exit(telephony_child(rows, rounds, &dir)),
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
