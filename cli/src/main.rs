//! `verbatim`: the operator's command line. Device side: simulate, inspect, upload, unenroll.
//! Archive side: keygen, receive, verify, export. Admin: policy check/template/reference.
//! And `demo`, which runs the whole product end to end on this machine.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod archive_cmd;
mod bench;
mod crash_cmd;
mod demo;
mod device_cmd;
mod mdm_cmd;
mod policy_cmd;
mod recover_cmd;

#[derive(Parser)]
#[command(name = "verbatim", version, about = "Verbatim compliance capture agent: operator tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole product on this machine: an archive receiver on 127.0.0.1, a simulated
    /// managed device, capture, upload through injected faults, and the archive's verification.
    Demo(demo::DemoArgs),

    /// Validate and describe managed policies (MDM AppConfig).
    #[command(subcommand)]
    Policy(PolicyCommand),

    /// Run a simulated managed device: capture N synthetic events into a data directory.
    /// Prints `acked <event-id>` once each event is durable. Safe to kill at any instant
    /// and to run again on the same directory.
    Simulate(device_cmd::SimulateArgs),

    /// Print a device data directory's queue status as JSON (never content: there is none on disk).
    Inspect(device_cmd::InspectArgs),

    /// Upload a simulated device's queue to the archive under its applied policy; prints the
    /// report as JSON.
    Upload(device_cmd::UploadArgs),

    /// Unenroll a simulated device: flush to the archive, then destroy the local store once
    /// everything is acknowledged (or at once with --force, the MDM's selective wipe).
    Unenroll(device_cmd::UnenrollArgs),

    /// Create an archive key pair; prints the public key and key id for the policy.
    Keygen(archive_cmd::KeygenArgs),

    /// Serve the upload API (reference archive receiver) over HTTPS.
    Receive(archive_cmd::ReceiveArgs),

    /// Report, per device stream held by a receiver: records, gaps, chain, alerts.
    Verify(archive_cmd::VerifyArgs),

    /// Open held records with the archive private key and export JSON Lines and .eml files.
    Export(archive_cmd::ExportArgs),

    /// Measure capture, upload, memory, cold start, CPU per event and library size, with
    /// baselines (raw SQLite, queue-file) in the same run; one table (docs/performance.md).
    Bench(bench::BenchArgs),

    /// Crash and fault consistency harness: runs simulate, upload and receive as child
    /// processes, kills them with SIGKILL at seeded instants, restarts them, and checks that
    /// every acknowledged event is archived exactly once in one verified chain.
    CrashTest(crash_cmd::CrashTestArgs),

    /// Rebuild a damaged device store: move the damaged files aside (never deleted), keep
    /// every intact record, and evidence what was lost; prints the report as JSON.
    Recover(recover_cmd::RecoverArgs),
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Check a policy file (XML property list or JSON dictionary) as an MDM would push it.
    /// Exit 0 with a one-line summary when valid; exit 1 with one line per problem.
    Check { file: PathBuf },
    /// Print a complete, valid, commented sample policy as an XML property list.
    Template,
    /// Print the markdown reference of every policy key (docs/policy-reference.md).
    Reference,
    /// Write the MDM artifacts generated from the policy schema under DIR: the AppConfig
    /// specfile, Intune and Jamf sample configurations (mdm/), and Android's app_restrictions.xml
    /// with its strings (android/src/main/res/). `--out .` at the repository root regenerates
    /// the committed copies.
    ExportArtifacts(mdm_cmd::ExportArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Policy(PolicyCommand::Check { file }) => policy_cmd::check(&file),
        Command::Policy(PolicyCommand::Template) => policy_cmd::template(),
        Command::Policy(PolicyCommand::Reference) => policy_cmd::reference(),
        Command::Policy(PolicyCommand::ExportArtifacts(args)) => mdm_cmd::export_artifacts(args),
        Command::Demo(args) => demo::run(args),
        Command::Simulate(args) => device_cmd::simulate(args),
        Command::Inspect(args) => device_cmd::inspect(args),
        Command::Upload(args) => device_cmd::upload(args),
        Command::Unenroll(args) => device_cmd::unenroll(args),
        Command::Keygen(args) => archive_cmd::keygen(args),
        Command::Receive(args) => archive_cmd::receive(args),
        Command::Verify(args) => archive_cmd::verify(args),
        Command::Export(args) => archive_cmd::export(args),
        Command::Bench(args) => bench::run(args),
        Command::CrashTest(args) => crash_cmd::run(args),
        Command::Recover(args) => recover_cmd::run(args),
    }
}
