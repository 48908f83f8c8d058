//! Archive-side commands: keygen, receive (and `receive add-device`), verify, export.
//! Thin: all logic is in the `verbatim-receiver` crate.
//!
//! Exit codes: 0 success; 1 the check found problems (verify: a gap, a chain failure or an
//! alert; export: records that did not open or attachments that did not match); 2 the
//! command could not run (bad arguments, unreadable files, port in use); 3 (export only) a
//! partial export: some streams could not be exported, every other one was.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::output::{out, outln};
use verbatim_receiver::{AcceptedKeys, ReceiverConfig, TlsSource};

#[derive(clap::Args)]
pub struct KeygenArgs {
    /// Directory for archive-private.key (mode 0600) and archive-public.key. Never overwritten.
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ReceiveArgs {
    #[command(subcommand)]
    command: Option<ReceiveCommand>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(clap::Subcommand)]
enum ReceiveCommand {
    /// Issue a device token: appends its Argon2id hash to the token file and prints the token
    /// once on stdout (put it in that device's policy as `device_token`). A running receiver
    /// picks it up at once; deleting the line revokes it.
    #[command(
        after_help = "Required: --tokens, --tenant, --device.\n\nExit codes: 0 the token was issued (on stdout); 2 it could not be (unreadable token file, a bad name).\n\nExample: verbatim receive add-device --tokens archive/tokens.jsonl --tenant acme --device iphone-0042"
    )]
    AddDevice(AddDeviceArgs),
}

#[derive(clap::Args)]
struct AddDeviceArgs {
    /// Required. The token file (JSON lines of hashes; created 0600 if missing).
    #[arg(long)]
    tokens: PathBuf,
    /// Required. The tenant, as the device's policy names it in tenant_id.
    #[arg(long)]
    tenant: String,
    /// Required. The device, as its policy names it in device_id.
    #[arg(long)]
    device: String,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Required (to serve). Address to listen on, e.g. 0.0.0.0:8443 or 127.0.0.1:0 (any free port).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Required (to serve). Data directory: the archive database (and, with --self-signed, the
    /// certificates).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Required (to serve). Device token file (see `verbatim receive add-device`).
    #[arg(long)]
    tokens: Option<PathBuf>,
    /// An archive key epochs may be sealed to: archive-public.key from `verbatim keygen` (or
    /// archive-private.key, whose public key is derived; better kept off this host). Required;
    /// repeat it to accept several keys during a rotation. An epoch sealed to any other key is
    /// refused with 422 unknown_archive_key and nothing of it is stored.
    #[arg(long = "archive-key", value_name = "FILE")]
    archive_keys: Vec<PathBuf>,
    /// Streams one device may open (one per app install or store recovery); a batch for one
    /// more gets 422 stream_limit.
    #[arg(long, default_value_t = verbatim_receiver::store::DEFAULT_MAX_STREAMS_PER_DEVICE)]
    max_streams_per_device: u64,
    /// PEM certificate chain served to devices (required with --tls-key, unless --self-signed).
    #[arg(long, requires = "tls_key", conflicts_with = "self_signed")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Make (once) and use a private CA and a certificate for 127.0.0.1/localhost; devices
    /// trust <data>/ca.pem through the policy's archive_ca_pem. For tests and demos. Either this
    /// or --tls-cert with --tls-key is required.
    #[arg(long)]
    self_signed: bool,
    /// Largest batch body accepted, in MiB (413 beyond).
    #[arg(long, default_value_t = 17)]
    max_body_mib: usize,
    /// Requests handled at once; more get 503 with Retry-After.
    #[arg(long, default_value_t = 16)]
    max_concurrent: usize,
    /// Seconds a client has to send its headers, and then its body.
    #[arg(long, default_value_t = 30)]
    read_timeout_secs: u64,
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(2)
}

pub fn keygen(args: KeygenArgs) -> ExitCode {
    match verbatim_receiver::keygen(&args.out) {
        Ok(info) => {
            outln!("archive_public_key: {}", info.public_b64);
            outln!("archive_key_id: {}", info.key_id);
            outln!("public key file: {}", info.public_path.display());
            outln!("private key file: {}", info.private_path.display());
            eprintln!(
                "Keep the private key offline and backed up: it alone opens what devices seal, and losing it loses the archive."
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

pub fn receive(args: ReceiveArgs) -> ExitCode {
    match args.command {
        Some(ReceiveCommand::AddDevice(a)) => add_device(a),
        None => serve(args.serve),
    }
}

fn add_device(a: AddDeviceArgs) -> ExitCode {
    match verbatim_receiver::add_device(&a.tokens, &a.tenant, &a.device) {
        Ok(token) => {
            // The token alone on stdout, for scripts; the explanation on stderr.
            outln!("{}", token.expose());
            eprintln!(
                "device token for {}/{} issued (shown once; only its hash is in {}). Set it as the device's policy device_token.",
                a.tenant,
                a.device,
                a.tokens.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn serve(a: ServeArgs) -> ExitCode {
    let (Some(listen), Some(data), Some(tokens)) = (a.listen, a.data, a.tokens) else {
        return fail("receive needs --listen, --data, --tokens and --archive-key (or the add-device subcommand)");
    };
    if a.archive_keys.is_empty() {
        return fail("receive needs --archive-key FILE (archive-public.key from `verbatim keygen`; repeat it for several keys)");
    }
    if a.archive_keys.iter().any(|f| f.file_name().is_some_and(|n| n == verbatim_receiver::keys::PRIVATE_KEY_FILE)) {
        eprintln!(
            "warning: an archive private key was given to receive; only its public key is used. Give archive-public.key and keep the private key off this host."
        );
    }
    let archive_keys = match AcceptedKeys::load(&a.archive_keys) {
        Ok(k) => k,
        Err(e) => return fail(e),
    };
    let tls = match (a.tls_cert, a.tls_key, a.self_signed) {
        (Some(cert), Some(key), false) => TlsSource::Files { cert, key },
        (None, None, true) => TlsSource::SelfSigned,
        _ => return fail("give either --tls-cert and --tls-key, or --self-signed"),
    };
    if a.max_concurrent == 0 || a.max_body_mib == 0 || a.read_timeout_secs == 0 || a.max_streams_per_device == 0 {
        return fail("--max-concurrent, --max-body-mib, --read-timeout-secs and --max-streams-per-device must be at least 1");
    }
    let key_ids: Vec<String> = archive_keys.ids().map(str::to_string).collect();
    let mut config = ReceiverConfig::new(listen, data, tokens, archive_keys, tls);
    config.limits.max_streams_per_device = a.max_streams_per_device;
    config.limits.max_body_bytes = a.max_body_mib.saturating_mul(1024 * 1024);
    config.limits.max_concurrent_requests = a.max_concurrent;
    config.limits.header_timeout = Duration::from_secs(a.read_timeout_secs);
    config.limits.body_timeout = Duration::from_secs(a.read_timeout_secs);

    // Logs (set up in main, `info` by default here) go to stderr: status codes, sizes,
    // sequence numbers; never tokens or content.
    let result = verbatim_receiver::server::run_until_signal(config, |running| {
        outln!("listening on {}", running.url());
        if let Some(ca) = running.ca_path() {
            outln!("CA certificate: {} (devices trust it through the policy's archive_ca_pem)", ca.display());
        }
        outln!("accepting archive key id(s): {}", key_ids.join(", "));
        use std::io::Write;
        let _ = std::io::stdout().flush();
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// The receiver's data directory (may be in use by a running receiver).
    #[arg(long)]
    data: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Flag devices that sent nothing for this many hours: the policy's heartbeat_hours plus
    /// grace (the default suits the default heartbeat of 24 hours). 0 turns the check off.
    #[arg(long, default_value_t = 36)]
    silent_after_hours: u64,
}

pub fn verify(args: VerifyArgs) -> ExitCode {
    let options = verbatim_receiver::verify::VerifyOptions {
        silent_after_hours: (args.silent_after_hours > 0).then_some(args.silent_after_hours),
        now_ms: None,
    };
    match verbatim_receiver::verify::verify_with(&args.data, &options) {
        Ok(report) => {
            if args.json {
                outln!("{}", report.to_json());
            } else {
                out!("{}", report.to_text());
            }
            // Silence is reported and fails the check: a compliance officer must look at it.
            if report.ok() && report.silent_devices.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
        Err(e) => fail(e),
    }
}

#[derive(clap::Args)]
#[command(after_help = "Exit status:
  0  everything exported, no error
  1  everything exported; the summary lists errors (records that did not open, attachments
     that did not match their SHA-256)
  2  could not run (key file missing or readable by others, no database, output not writable)
  3  partial export: the streams listed as FAILED could not be exported; every other stream was")]
pub struct ExportArgs {
    /// The receiver's data directory.
    #[arg(long)]
    data: PathBuf,
    /// An archive private key file (from `verbatim keygen`). Repeat it for the keys of
    /// earlier rotations: each epoch opens with the key whose id it names.
    #[arg(long, required = true)]
    key: Vec<PathBuf>,
    /// Output directory (created if missing; an earlier export's files are overwritten).
    #[arg(long)]
    out: PathBuf,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

/// Exit status of `verbatim export` for a partial export (see [`ExportArgs`]).
pub const EXIT_PARTIAL_EXPORT: u8 = 3;

pub fn export(args: ExportArgs) -> ExitCode {
    let mut secrets = Vec::with_capacity(args.key.len());
    for path in &args.key {
        match verbatim_receiver::load_secret(path) {
            Ok(s) => secrets.push(s),
            Err(e) => return fail(e),
        }
    }
    match verbatim_receiver::export_with_keys(&args.data, &secrets, &args.out) {
        Ok(summary) => {
            if args.json {
                outln!("{}", summary.to_json());
            } else {
                out!("{}", summary.to_text());
            }
            if !summary.complete() {
                ExitCode::from(EXIT_PARTIAL_EXPORT)
            } else if summary.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => fail(e),
    }
}
