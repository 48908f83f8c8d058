//! `verbatim`: the operator's command line. Device side: simulate, telephony replay (Android's
//! Google Messages archival source without a phone), inspect, upload, unenroll, recover.
//! Archive side: keygen, receive (and receive add-device), verify, export. Admin:
//! policy check/template/reference/export-artifacts. Proof: demo (the whole product end
//! to end on this machine), bench (every performance figure with its baselines), crash-test
//! (kill -9 of device, uploader and receiver).
//!
//! Every command's `--help` ends with the flags it requires, its exit codes and an example
//! (the README's command table repeats the exit codes; `cli/tests/cli_help.rs` checks both).
//! Logging is set up here once for every command ([`logging`]), and stdout is written only
//! through [`output`], so a closed pipe never panics.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod output;

mod archive_cmd;
mod bench;
mod connect_cmd;
mod crash_cmd;
mod demo;
mod device_cmd;
mod logging;
mod mdm_cmd;
mod policy_cmd;
mod recover_cmd;
mod relay_cmd;
mod telephony_cmd;
mod vault_cmd;

#[derive(Parser)]
#[command(
    name = "verbatim",
    version,
    about = "Verbatim compliance capture agent: operator tools",
    after_help = "Every command: exit 0 on success, 1 when its check found problems, 2 when it could not run \
                  (each command's --help says exactly). Logs go to stderr: --log-level or RUST_LOG.\n\n\
                  Example: verbatim policy template > policy.plist"
)]
struct Cli {
    /// Log verbosity on stderr for any command: off, error, warn, info, debug, trace. Overrides
    /// RUST_LOG. Default: warn (receive: info). Never logs captured content, tokens or keys.
    #[arg(long, global = true, value_enum, value_name = "LEVEL")]
    log_level: Option<logging::Level>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole product on this machine: an archive receiver on 127.0.0.1, a simulated
    /// managed device, capture, upload through injected faults, and the archive's verification.
    #[command(
        after_help = "Required: nothing.\n\nExit codes: 0 the report is OK (nothing lost, nothing duplicated, nothing personal taken); 1 the report found a problem; 2 the demo could not run.\n\nExample: verbatim demo --events 500 --keep"
    )]
    Demo(demo::DemoArgs),

    /// Validate and describe managed policies (MDM AppConfig).
    #[command(subcommand, after_help = "Example: verbatim policy check policy.plist")]
    Policy(PolicyCommand),

    /// Run a simulated managed device: capture N synthetic events into a data directory.
    /// The employee's lines are the policy's business_lines (the first phone number for SMS,
    /// iMessage and calls, the first handle for the messaging apps); only a policy without any
    /// makes it use its own. Prints `acked <event-id>` once each event is durable and
    /// `out-of-scope <event-id>` for each event the policy drops, then one summary line on
    /// stderr (captured, out of scope, failed). Safe to kill at any instant and to run again on
    /// the same directory.
    #[command(
        after_help = "Required: --state, --policy, --events.\n\nExit codes: 0 every event was handed over (captured or out of scope); 1 the policy was refused (one line per problem); 2 a capture failed or the command could not run.\n\nExample: verbatim simulate --state device --policy policy.plist --events 200"
    )]
    Simulate(device_cmd::SimulateArgs),

    /// Android's Google Messages archival source without a phone.
    #[command(subcommand)]
    Telephony(TelephonyCommand),

    /// Print a device data directory's queue status as JSON (never content: there is none on disk).
    #[command(
        after_help = "Required: --state.\n\nExit codes: 0 printed; 2 the store could not be read.\n\nExample: verbatim inspect --state device | head -5"
    )]
    Inspect(device_cmd::InspectArgs),

    /// Upload a simulated device's queue to the archive under its applied policy; prints the
    /// report as JSON.
    #[command(
        after_help = "Required: --state, --policy.\n\nExit codes: 0 everything was acknowledged; 1 data remains (deadline, network policy) or the policy was refused; 2 the upload failed (the archive refused it, TLS, no store).\n\nExample: verbatim upload --state device --policy policy.plist"
    )]
    Upload(device_cmd::UploadArgs),

    /// Unenroll a simulated device: flush to the archive, then destroy the local store once
    /// everything is acknowledged (or at once with --force, the MDM's selective wipe).
    #[command(
        after_help = "Required: --state.\n\nExit codes: 0 the store was destroyed; 1 data was kept (not everything acknowledged, no --force) or the policy was refused; 2 the command could not run.\n\nExample: verbatim unenroll --state device --policy policy.plist"
    )]
    Unenroll(device_cmd::UnenrollArgs),

    /// Create an archive key pair; prints the public key and key id for the policy.
    #[command(
        after_help = "Required: --out.\n\nExit codes: 0 the key pair was written; 2 it could not be (the directory already holds keys, no permission).\n\nExample: verbatim keygen --out archive-keys"
    )]
    Keygen(archive_cmd::KeygenArgs),

    /// Serve the upload API (reference archive receiver) over HTTPS.
    #[command(
        after_help = "Required: --listen, --data (or --store with --s3-endpoint: an S3 bucket with Object Lock), --tokens, --archive-key, and either --self-signed or --tls-cert with --tls-key (none of them for the add-device subcommand).\n\nExit codes: 0 stopped by SIGINT or SIGTERM after draining; 2 the receiver could not start (port in use, bad certificate, missing flag).\n\nExample: verbatim receive --listen 127.0.0.1:8443 --data archive --tokens archive/tokens.jsonl --self-signed"
    )]
    Receive(archive_cmd::ReceiveArgs),

    /// Report, per device stream held by a receiver: records, gaps, chain, alerts.
    #[command(
        after_help = "Required: --data, or --store with --s3-endpoint.\n\nExit codes: 0 every stream is complete and verified; 1 a gap, a chain failure, an alert or a silent device; 2 the data could not be read.\n\nExample: verbatim verify --data archive"
    )]
    Verify(archive_cmd::VerifyArgs),

    /// Copy an embedded (SQLite) archive into an S3 bucket with Object Lock, then verify both
    /// and compare them stream by stream.
    #[command(
        after_help = "Required: --data, --store, --s3-endpoint.\n\nExit codes: 0 copied, and the bucket verifies the same as the source; 1 copied, but a stream does not match (listed); 2 the copy could not run (no Object Lock, store unreachable, no archive).\n\nExample: verbatim copy-archive --data archive --store s3://acme-archive --s3-endpoint https://s3.eu-west-1.amazonaws.com"
    )]
    CopyArchive(archive_cmd::CopyArchiveArgs),

    /// Put or release a legal hold on everything of a tenant or device in a bucket archive
    /// (S3 Object Lock legal hold), recorded as an audit event in the bucket.
    #[command(
        subcommand,
        after_help = "Required: put|release, --store, --s3-endpoint, --tenant, --reason.\n\nExit codes: 0 the hold was put or released on every object and the audit event written; 2 it could not be (no Object Lock, store unreachable, no reason).\n\nExample: verbatim legal-hold put --store s3://archive --s3-endpoint https://s3.eu-west-1.amazonaws.com --tenant acme --device iphone-0042 --reason 'SEC matter 2026-17'"
    )]
    LegalHold(archive_cmd::LegalHoldCommand),

    /// Open held records with the archive private key and export JSON Lines and .eml files.
    #[command(
        after_help = "Required: --data (or --store with --s3-endpoint), --out, and --key, --keyring or --vault.\n\nExit codes: 0 everything was opened (or reported erased) and exported; 1 some records did not open or attachments did not match; 2 the command could not run (unreadable key, vault or data); 3 some streams could not be exported (listed).\n\nExample: verbatim export --data archive --key archive-keys/archive-private.key --out export"
    )]
    Export(archive_cmd::ExportArgs),

    /// The key vault that keeps sealed records readable once archive keys retire, and that
    /// erasure and retention delete from (docs/erasure.md).
    #[command(subcommand, after_help = "Example: verbatim vault ingest --vault vault --data archive --keyring archive-keys")]
    Vault(vault_cmd::VaultCommand),

    /// Erase a conversation (or every conversation with a participant) from the key vault:
    /// its records become unreadable once the archive keys that sealed them retire; the chain
    /// still proves the archive complete. Prints the erasure, pending or complete, as JSON.
    #[command(after_help = "Required: --vault, --reason, and --conversation with --device, or --participant.

Exit codes: 0 erased (pending until the keys listed retire, or complete); 1 nothing erased (a legal hold covers it, nothing matched, or only records sealed before conversation keys); 2 could not run.

Example: verbatim erase --vault vault --conversation 42 --device iphone-0042 --reason 'DSR-2026-118: personal conversation captured by mistake'")]
    Erase(vault_cmd::EraseArgs),

    /// Legal holds in the key vault: what they cover is never erased nor aged out.
    #[command(
        subcommand,
        after_help = "Example: verbatim hold add --vault vault --device iphone-0042 --reason 'SEC matter 2026-17'"
    )]
    Hold(vault_cmd::HoldCommand),

    /// Apply the vault's retention period.
    #[command(subcommand, after_help = "Example: verbatim retention apply --vault vault")]
    Retention(vault_cmd::RetentionCommand),

    /// Archive key rotation and retirement.
    #[command(subcommand, after_help = "Example: verbatim keys rotate --keyring archive-keys --vault vault")]
    Keys(vault_cmd::KeysCommand),

    /// Measure capture, upload, memory, cold start, CPU per event and library size, with
    /// baselines (raw SQLite, queue-file) in the same run; one table (docs/performance.md).
    #[command(
        after_help = "Required: nothing.\n\nExit codes: 0 every benchmark ran; 1 a benchmark failed; 2 the command could not run.\n\nExample: verbatim bench --quick"
    )]
    Bench(bench::BenchArgs),

    /// Crash and fault consistency harness: runs simulate, upload and receive as child
    /// processes, kills them with SIGKILL at seeded instants, restarts them, and checks that
    /// every acknowledged event is archived exactly once in one verified chain.
    #[command(
        after_help = "Required: nothing.\n\nExit codes: 0 every acknowledged event was archived exactly once; 1 a check failed; 2 the harness could not run.\n\nExample: verbatim crash-test --iterations 50"
    )]
    CrashTest(crash_cmd::CrashTestArgs),

    /// Rebuild a damaged device store: move the damaged files aside (never deleted), keep
    /// every intact record, and evidence what was lost; prints the report as JSON.
    #[command(
        after_help = "Required: --state.\n\nExit codes: 0 rebuilt (--check: no damage); 1 no damage found, nothing changed (--check: damage found); 2 the command could not run.\n\nExample: verbatim recover --state device"
    )]
    Recover(recover_cmd::RecoverArgs),

    /// Relays that capture what another app stores, on a managed computer.
    #[command(
        subcommand,
        after_help = "Example: verbatim relay imessage --chat-db ~/Library/Messages/chat.db --state relay --policy policy.plist"
    )]
    Relay(RelayCommand),

    /// Server-side connectors that capture through a platform's official archiving channel.
    #[command(
        subcommand,
        after_help = "Example: verbatim connect whatsapp --listen 127.0.0.1:8080 --state connector --policy policy.json --app-secret-file app-secret --verify-token-file verify-token"
    )]
    Connect(connect_cmd::ConnectCommand),
}

#[derive(Subcommand)]
enum RelayCommand {
    /// Capture iMessage (and the iPhone's SMS forwarded to this Mac) from Messages' database,
    /// read-only: every pass captures the new rows, the edits and unsends of earlier ones, and
    /// attachments that finished downloading; safe to kill at any instant and run again.
    /// Watches until SIGINT or SIGTERM (a pass whenever chat.db changes, and every 30 s), uploading
    /// on the policy's schedule; --once scans, prints `captured <id>` per event and the report, and exits.
    #[command(
        after_help = "Required: --chat-db, --state, --policy.\n\nExit codes: 0 the pass ran (--once) or the relay stopped on a signal; 1 the policy was refused; 2 the database could not be read (--once; the could-not-record window is recorded), a capture failed or the store could not be opened.\n\nExample: verbatim relay imessage --chat-db ~/Library/Messages/chat.db --state ~/Library/Application\\ Support/Verbatim --policy policy.plist --once"
    )]
    Imessage(relay_cmd::ImessageArgs),
}

#[derive(Subcommand)]
enum TelephonyCommand {
    /// Apply a sequence of Telephony provider views (one JSON object per line, each the whole
    /// provider at one wake-up, in the provider's column names and units) to a simulated
    /// device, as Google Messages' archival wake-ups would. Prints `captured <kind> <provider
    /// id>` per event (message, attachment, edit, reaction, unsend), then a summary on stderr.
    /// `verbatim upload` and `export` work on the same state as for `simulate`. Safe to kill
    /// at any instant and run again: it resumes after the last view applied, and nothing is
    /// captured twice.
    #[command(
        after_help = "Required: --state, --policy, --snapshots.\n\nExit codes: 0 every view was applied; 1 the policy was refused (one line per problem) or names no business line; 2 a line is not a provider view (the error names the line and field; views before it stay captured, nothing of it is), a part file cannot be read, a capture failed, or the command could not run.\n\nExample: verbatim telephony replay --state device --policy policy.json --snapshots provider.jsonl"
    )]
    Replay(telephony_cmd::ReplayArgs),
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Check a policy file as an MDM would push it: an XML or binary property list (whole, or
    /// the bare <dict> pasted into Intune or Jamf), Intune's Android managed-configuration JSON,
    /// or a JSON dictionary; the format is detected. Every problem is reported, by key.
    #[command(
        after_help = "Required: FILE.\n\nExit codes: 0 valid (summary on stdout); 1 problems (one line per problem on stdout, each naming its key); 2 the file could not be read or is not a property list or JSON.\n\nExample: verbatim policy check policy.plist"
    )]
    Check { file: PathBuf },
    /// Print a complete, valid, commented sample policy as an XML property list.
    #[command(after_help = "Required: nothing.\n\nExit codes: 0.\n\nExample: verbatim policy template > policy.plist")]
    Template,
    /// Print the markdown reference of every policy key (docs/policy-reference.md).
    #[command(
        after_help = "Required: nothing.\n\nExit codes: 0.\n\nExample: verbatim policy reference > docs/policy-reference.md"
    )]
    Reference,
    /// Write the MDM artifacts generated from the policy schema under DIR: the AppConfig
    /// specfile, Intune and Jamf sample configurations (mdm/), and Android's app_restrictions.xml
    /// with its strings (android/src/main/res/). `--out .` at the repository root regenerates
    /// the committed copies.
    #[command(
        after_help = "Required: --out.\n\nExit codes: 0 written; 2 a bad --bundle-id or a file that could not be written.\n\nExample: verbatim policy export-artifacts --out ."
    )]
    ExportArtifacts(mdm_cmd::ExportArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match &cli.command {
        Command::Receive(_) => tracing_subscriber::filter::LevelFilter::INFO,
        _ => tracing_subscriber::filter::LevelFilter::WARN,
    };
    logging::init(cli.log_level, default_level);
    match cli.command {
        Command::Policy(PolicyCommand::Check { file }) => policy_cmd::check(&file),
        Command::Policy(PolicyCommand::Template) => policy_cmd::template(),
        Command::Policy(PolicyCommand::Reference) => policy_cmd::reference(),
        Command::Policy(PolicyCommand::ExportArtifacts(args)) => mdm_cmd::export_artifacts(args),
        Command::Demo(args) => demo::run(args),
        Command::Simulate(args) => device_cmd::simulate(args),
        Command::Telephony(TelephonyCommand::Replay(args)) => telephony_cmd::replay(args),
        Command::Inspect(args) => device_cmd::inspect(args),
        Command::Upload(args) => device_cmd::upload(args),
        Command::Unenroll(args) => device_cmd::unenroll(args),
        Command::Keygen(args) => archive_cmd::keygen(args),
        Command::Receive(args) => archive_cmd::receive(args),
        Command::Verify(args) => archive_cmd::verify(args),
        Command::Export(args) => archive_cmd::export(args),
        Command::LegalHold(command) => archive_cmd::legal_hold(command),
        Command::CopyArchive(args) => archive_cmd::copy_archive(args),
        Command::Bench(args) => bench::run(args),
        Command::CrashTest(args) => crash_cmd::run(args),
        Command::Recover(args) => recover_cmd::run(args),
        Command::Relay(RelayCommand::Imessage(args)) => relay_cmd::imessage(args),
        Command::Connect(command) => connect_cmd::run(command),
        Command::Vault(command) => vault_cmd::vault_command(command),
        Command::Erase(args) => vault_cmd::erase(args),
        Command::Hold(command) => vault_cmd::hold(command),
        Command::Retention(command) => vault_cmd::retention(command),
        Command::Keys(command) => vault_cmd::keys(command),
    }
}
