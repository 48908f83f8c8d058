//! Device-side commands: a simulated managed device (`simulate`), and a read-only look at a
//! device's store (`inspect`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::output::outln;
use verbatim_core::synth::{Lines, LinesSource, Workload, WorkloadOptions};
use verbatim_core::{Agent, AgentOptions, CaptureOutcome};

#[derive(clap::Args)]
pub struct SimulateArgs {
    /// The device's data directory (created if missing).
    #[arg(long)]
    pub state: PathBuf,
    /// Policy file (XML property list or JSON), as the MDM would push it.
    #[arg(long)]
    pub policy: PathBuf,
    /// How many synthetic events to hand to the agent.
    #[arg(long)]
    pub events: u64,
    /// Seed of the synthetic workload (default: random).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Text added to every message body.
    #[arg(long)]
    pub body: Option<String>,
    /// Where the simulated app keeps attachment files (default: `<state>.files`).
    #[arg(long)]
    pub files: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct InspectArgs {
    /// The device's data directory.
    #[arg(long)]
    pub state: PathBuf,
}

fn fail(what: &str, e: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {what}: {e}");
    ExitCode::from(2)
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("system randomness");
    u64::from_le_bytes(b)
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}

/// Opens the agent in `state` and applies the policy file, reporting problems by key.
pub fn open_configured(state: &Path, policy: &Path) -> Result<Agent, ExitCode> {
    open_with_policy(state, policy).map(|(agent, _)| agent)
}

/// As [`open_configured`], also returning the applied policy.
pub(crate) fn open_with_policy(state: &Path, policy: &Path) -> Result<(Agent, verbatim_core::Policy), ExitCode> {
    let tree = verbatim_core::policy::file::load(policy).map_err(|e| fail("policy", e))?;
    let agent = Agent::open(state, AgentOptions::default()).map_err(|e| fail("open", e))?;
    match runtime().block_on(agent.apply_policy(&tree)) {
        Ok(_) => {}
        Err(e) => {
            eprintln!("error: {e}");
            return Err(ExitCode::from(1));
        }
    }
    // Applied above, so it parses; parsed again only to read its lines.
    match verbatim_core::policy::parse(&tree) {
        Ok(parsed) => Ok((agent, parsed.policy)),
        Err(rejected) => {
            eprintln!("error: {rejected}");
            Err(ExitCode::from(1))
        }
    }
}

/// What a simulation did with its events; printed as the last line on stderr.
#[derive(Default)]
struct Tally {
    captured: u64,
    out_of_scope: u64,
    failed: u64,
}

impl Tally {
    fn summary(&self, lines: &Lines, source: LinesSource) -> String {
        let from = match source {
            LinesSource::Policy => "the policy's business_lines",
            LinesSource::Builtin => "built-in lines (the policy has no business line)",
        };
        format!(
            "simulate: {} captured, {} out of scope, {} failed; employee lines {} and {} from {from}",
            self.captured, self.out_of_scope, self.failed, lines.phone, lines.handle
        )
    }
}

pub fn simulate(args: SimulateArgs) -> ExitCode {
    let (agent, policy) = match open_with_policy(&args.state, &args.policy) {
        Ok(opened) => opened,
        Err(code) => return code,
    };
    let (lines, source) = Lines::from_policy(&policy);
    let seed = args.seed.unwrap_or_else(random_u64);
    let files = args.files.unwrap_or_else(|| {
        let mut p = args.state.clone().into_os_string();
        p.push(".files");
        PathBuf::from(p)
    });
    // A fresh id prefix per run, so reruns on one directory never reuse an event id.
    let run = random_u64() & 0xffff_ffff;
    let mut opts = WorkloadOptions::new(seed, &files);
    opts.id_prefix = format!("s{seed}-r{run:08x}");
    opts.body = args.body;
    opts.lines = lines.clone();
    let mut workload = match Workload::new(opts) {
        Ok(w) => w,
        Err(e) => return fail("attachment directory", e),
    };
    let rt = runtime();
    let mut tally = Tally::default();
    let mut code = ExitCode::SUCCESS;
    for _ in 0..args.events {
        let synth = match workload.next_event() {
            Ok(e) => e,
            Err(e) => {
                code = fail("workload", e);
                break;
            }
        };
        let id = synth.id().to_string();
        match rt.block_on(agent.capture(synth.event)) {
            Ok(CaptureOutcome::Captured { .. }) => {
                // Flushed at once: a harness that kills this process trusts every line it read.
                outln!("acked {id}");
                tally.captured += 1;
            }
            Ok(CaptureOutcome::OutOfScope) => {
                outln!("out-of-scope {id}");
                tally.out_of_scope += 1;
            }
            Err(e) => {
                tally.failed += 1;
                code = fail(&format!("capture of {id}"), e);
                break;
            }
        }
    }
    eprintln!("{}", tally.summary(&lines, source));
    match rt.block_on(agent.close()) {
        Ok(()) => code,
        Err(e) => fail("close", e),
    }
}

pub fn inspect(args: InspectArgs) -> ExitCode {
    match verbatim_core::queue::inspect(&args.state) {
        Ok(i) => {
            outln!("{}", serde_json::to_string_pretty(&i).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => fail("inspect", e),
    }
}

#[derive(clap::Args)]
pub struct UploadArgs {
    /// The device's data directory.
    #[arg(long)]
    pub state: PathBuf,
    /// The policy file, applied first as the app applies its managed configuration at every
    /// start: the device token it holds is never stored on the device.
    #[arg(long)]
    pub policy: PathBuf,
    /// Time granted to the upload, as the OS would grant background work.
    #[arg(long, default_value_t = 30_000)]
    pub deadline_ms: u64,
    /// The network the simulated phone is on.
    #[arg(long, value_enum, default_value_t = Network::Unmetered)]
    pub network: Network,
}

#[derive(clap::Args)]
pub struct UnenrollArgs {
    /// The device's data directory.
    #[arg(long)]
    pub state: PathBuf,
    /// The policy file, for the device token of the final upload. Without it nothing can be
    /// sent, and only `--force` destroys the store.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Destroy the store even if the archive has not acknowledged everything (selective wipe).
    #[arg(long)]
    pub force: bool,
    #[arg(long, default_value_t = 30_000)]
    pub deadline_ms: u64,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Network {
    Offline,
    Unmetered,
    Metered,
    Roaming,
}

impl From<Network> for verbatim_core::upload::NetworkState {
    fn from(n: Network) -> Self {
        use verbatim_core::upload::NetworkState as S;
        match n {
            Network::Offline => S::Offline,
            Network::Unmetered => S::Unmetered,
            Network::Metered => S::Metered,
            Network::Roaming => S::Roaming,
        }
    }
}

/// Opens an existing store (never creates one) and applies the policy file when given.
fn open_existing(state: &Path, policy: Option<&Path>) -> Result<Agent, ExitCode> {
    if !state.join(verbatim_core::queue::DB_FILE).exists() {
        return Err(fail("open", format!("no agent store in {}", state.display())));
    }
    match policy {
        Some(policy) => open_configured(state, policy),
        None => Agent::open(state, AgentOptions::default()).map_err(|e| fail("open", e)),
    }
}

/// Uploads a simulated device's queue under the policy file; prints the report as JSON.
/// Exit 0 when everything was acknowledged, 1 when data remains, 2 on error.
pub fn upload(args: UploadArgs) -> ExitCode {
    let agent = match open_existing(&args.state, Some(&args.policy)) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let rt = runtime();
    let options =
        verbatim_core::upload::UploadOptions::new(std::time::Duration::from_millis(args.deadline_ms), args.network.into());
    let report = rt.block_on(agent.upload(options));
    outln!("{}", serde_json::to_string_pretty(&report).expect("serialisable"));
    let _ = rt.block_on(agent.close());
    match report.stopped {
        verbatim_core::upload::StopReason::Done => ExitCode::SUCCESS,
        verbatim_core::upload::StopReason::Error => ExitCode::from(2),
        _ => ExitCode::from(1),
    }
}

/// Flushes the queue to the archive, then destroys the store once everything is acknowledged
/// (or at once with --force). Prints the report as JSON; exit 1 when the data was kept.
pub fn unenroll(args: UnenrollArgs) -> ExitCode {
    let agent = match open_existing(&args.state, args.policy.as_deref()) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let rt = runtime();
    let options = verbatim_core::upload::UploadOptions::new(
        std::time::Duration::from_millis(args.deadline_ms),
        verbatim_core::upload::NetworkState::Unmetered,
    );
    match rt.block_on(agent.unenroll(options, args.force)) {
        Ok(report) => {
            outln!("{}", serde_json::to_string_pretty(&report).expect("serialisable"));
            if report.shredded { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
        Err(e) => fail("unenroll", e),
    }
}
