//! `verbatim recover --state DIR`: rebuild a damaged device store without losing any intact
//! record (see `verbatim_core::queue::recover`). The damaged files are moved aside into
//! `DIR/damaged-<ms>/`, never deleted. Prints the report as JSON.
//!
//! Exit codes: 0 rebuilt (or `--check`: no damage); 1 no damage found, nothing changed (or
//! `--check`: damage found); 2 the command could not run.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::output::outln;
use verbatim_core::queue::recover::{self, RecoverOptions};

#[derive(clap::Args)]
pub struct RecoverArgs {
    /// The device's data directory. No agent may be running on it.
    #[arg(long)]
    pub state: PathBuf,
    /// Policy file to use when the damaged store's own policy cannot be read.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Rebuild even when no damage is found.
    #[arg(long)]
    pub force: bool,
    /// Only check the store for damage (its log, its header, every page); change nothing.
    #[arg(long, conflicts_with_all = ["policy", "force"])]
    pub check: bool,
}

pub fn run(args: RecoverArgs) -> ExitCode {
    if args.check {
        return match recover::check(&args.state) {
            Ok(()) => {
                outln!("no damage found in {}", args.state.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                outln!("{e}");
                ExitCode::from(1)
            }
        };
    }
    let policy = match &args.policy {
        Some(file) => match verbatim_core::policy::file::load(file) {
            Ok(tree) => Some(tree),
            Err(e) => {
                eprintln!("error: policy: {e}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    match recover::recover_with(&args.state, RecoverOptions { policy, force: args.force }) {
        Ok(report) => {
            outln!("{}", serde_json::to_string_pretty(&report).expect("serialisable"));
            if report.rebuilt {
                eprintln!(
                    "store rebuilt: {} records kept, {} lost{}; the damaged files are kept in {}",
                    report.recovered.iter().map(|r| r.last - r.first + 1).sum::<u64>(),
                    report.lost.iter().map(|r| r.last - r.first + 1).sum::<u64>(),
                    if report.new_stream { ", a new stream begins with the recovery event" } else { "" },
                    report.damaged_store.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
                );
                ExitCode::SUCCESS
            } else {
                eprintln!("no damage found; nothing changed (--force rebuilds anyway)");
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("error: recover: {e}");
            ExitCode::from(2)
        }
    }
}
