//! Archive-side commands: keygen, receive (and `receive add-device`), verify, export.
//! Thin: all logic is in the `verbatim-receiver` crate.
//!
//! Exit codes: 0 success; 1 the check found problems (verify: a gap, a chain failure or an
//! alert; export: records that did not open or attachments that did not match); 2 the
//! command could not run (bad arguments, unreadable files, port in use); 3 (export only) a
//! partial export: some streams could not be exported, every other one was.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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

/// Where the archive is kept: a data directory (`--data`, SQLite, the default) or a bucket
/// with S3 Object Lock (`--store s3://...`).
#[derive(clap::Args, Clone)]
pub struct StoreArgs {
    /// The archive in an S3 bucket with Object Lock, instead of --data: s3://BUCKET[/PREFIX].
    /// Credentials and region come from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    /// AWS_SESSION_TOKEN and AWS_REGION. A bucket without Object Lock is refused.
    #[arg(long, value_name = "s3://BUCKET[/PREFIX]", requires = "s3_endpoint")]
    store: Option<String>,
    /// The S3 endpoint, e.g. https://s3.eu-west-1.amazonaws.com or http://127.0.0.1:8333
    /// (path-style requests).
    #[arg(long, value_name = "URL")]
    s3_endpoint: Option<String>,
    /// Days records stay under COMPLIANCE retention from when they are written (the default,
    /// 2196, is six years).
    #[arg(long, default_value_t = verbatim_receiver::store::s3::Retention::DEFAULT_DAYS)]
    retention_days: u32,
    /// A tenant's own retention period: TENANT=DAYS (repeatable).
    #[arg(long, value_name = "TENANT=DAYS")]
    tenant_retention: Vec<String>,
}

impl StoreArgs {
    /// The object store's configuration when --store is given.
    pub fn object_store(&self) -> Result<Option<verbatim_receiver::store::s3::S3StoreConfig>, String> {
        use verbatim_receiver::store::s3::{Retention, S3Config, S3Location, S3StoreConfig};
        let Some(store) = &self.store else { return Ok(None) };
        let location = match S3Location::parse(store) {
            Some(l) => l.map_err(|e| e.to_string())?,
            None => return Err(format!("--store {store}: expected s3://BUCKET[/PREFIX] (use --data for a directory)")),
        };
        let endpoint = self.s3_endpoint.as_deref().ok_or("--store needs --s3-endpoint URL")?;
        let endpoint = url::Url::parse(endpoint).map_err(|e| format!("--s3-endpoint {endpoint}: {e}"))?;
        if !matches!(endpoint.scheme(), "http" | "https") {
            return Err("--s3-endpoint must be an http:// or https:// URL".into());
        }
        let mut retention = Retention::days(self.retention_days);
        for t in &self.tenant_retention {
            let (tenant, days) = t.split_once('=').ok_or_else(|| format!("--tenant-retention {t}: expected TENANT=DAYS"))?;
            let days: u32 = days.parse().map_err(|_| format!("--tenant-retention {t}: DAYS must be a whole number"))?;
            retention.tenants.insert(tenant.to_string(), days);
        }
        if retention.default_days == 0 || retention.tenants.values().any(|d| *d == 0) {
            return Err("retention periods must be at least 1 day".into());
        }
        Ok(Some(S3StoreConfig { s3: S3Config::from_env(endpoint, location.bucket), prefix: location.prefix, retention }))
    }

    /// --data or --store, exactly one.
    pub fn location(&self, data: Option<&PathBuf>) -> Result<verbatim_receiver::store::StoreLocation, String> {
        use verbatim_receiver::store::StoreLocation;
        match (data, self.object_store()?) {
            (Some(_), Some(_)) => Err("give --data or --store, not both".into()),
            (Some(d), None) => Ok(StoreLocation::Dir(d.clone())),
            (None, Some(s3)) => Ok(StoreLocation::S3(Box::new(s3))),
            (None, None) => Err("give --data DIR (SQLite) or --store s3://BUCKET --s3-endpoint URL".into()),
        }
    }
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Required (to serve). Address to listen on, e.g. 0.0.0.0:8443 or 127.0.0.1:0 (any free port).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Required (to serve) unless --store is given. Data directory: the archive database (and,
    /// with --self-signed, the certificates; with --store, only those).
    #[arg(long)]
    data: Option<PathBuf>,
    #[command(flatten)]
    store: StoreArgs,
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
    let object_store = match a.store.object_store() {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    if object_store.is_some() && a.self_signed && a.data.is_none() {
        return fail("--self-signed with --store needs --data DIR for the certificates");
    }
    let data = match (a.data, &object_store) {
        (Some(d), _) => Some(d),
        // The object store keeps nothing locally; TLS files come from --tls-cert/--tls-key.
        (None, Some(_)) => Some(PathBuf::new()),
        (None, None) => None,
    };
    let (Some(listen), Some(data), Some(tokens)) = (a.listen, data, a.tokens) else {
        return fail("receive needs --listen, --data (or --store), --tokens and --archive-key (or the add-device subcommand)");
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
    config.object_store = object_store;
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
    #[arg(long, required_unless_present = "store")]
    data: Option<PathBuf>,
    #[command(flatten)]
    store: StoreArgs,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Flag devices that sent nothing for this many hours: the policy's heartbeat_hours plus
    /// grace (the default suits the default heartbeat of 24 hours). 0 turns the check off.
    #[arg(long, default_value_t = 36)]
    silent_after_hours: u64,
    /// The key vault: also count, per stream, the records whose keys were erased (they stay
    /// in the chain; they can no longer be opened).
    #[arg(long)]
    vault: Option<PathBuf>,
}

/// The key vault given by `--vault`, if any.
fn open_vault(dir: Option<&Path>) -> verbatim_receiver::Result<Option<verbatim_receiver::vault::Vault>> {
    dir.map(verbatim_receiver::vault::Vault::open).transpose()
}

pub fn verify(args: VerifyArgs) -> ExitCode {
    let options = verbatim_receiver::verify::VerifyOptions {
        silent_after_hours: (args.silent_after_hours > 0).then_some(args.silent_after_hours),
        now_ms: None,
    };
    let location = match args.store.location(args.data.as_ref()) {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    let vault = match open_vault(args.vault.as_deref()) {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    let report = verbatim_receiver::store::open_reader(&location)
        .and_then(|mut r| verbatim_receiver::verify::verify_reader_with_vault(&mut *r, &options, vault.as_ref()));
    match report {
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
    #[arg(long, required_unless_present = "store")]
    data: Option<PathBuf>,
    #[command(flatten)]
    store: StoreArgs,
    /// Archive private keys (`--key FILE`, repeatable for earlier rotations, or `--keyring
    /// DIR`): each epoch opens with the key whose id it names.
    #[command(flatten)]
    keys: crate::vault_cmd::KeyArgs,
    /// The key vault: epochs whose archive key retired open with what it filed, and records
    /// whose keys were erased are reported as erased (even while their archive key exists).
    #[arg(long, required_unless_present_any = ["key", "keyring"])]
    vault: Option<PathBuf>,
    /// Subject access: only the messages, edits, unsends, reactions, calls and attachments in
    /// which this handle (phone number, address) took part, across every device.
    #[arg(long)]
    participant: Option<String>,
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
    use verbatim_receiver::export::{ExportKeys, ExportOptions};
    let secrets = match args.keys.load() {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let location = match args.store.location(args.data.as_ref()) {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    let vault = match open_vault(args.vault.as_deref()) {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    let options = ExportOptions { participant: args.participant.clone() };
    let summary = verbatim_receiver::KeyRing::new(&secrets).and_then(|ring| {
        let keys = ExportKeys { ring, vault: vault.as_ref() };
        let mut reader = verbatim_receiver::store::open_reader(&location)?;
        verbatim_receiver::export::export_with(&mut *reader, &keys, &options, &args.out)
    });
    match summary {
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

#[derive(clap::Subcommand)]
pub enum LegalHoldCommand {
    /// Put a legal hold on everything of a tenant (or one device): held objects cannot be
    /// deleted even after their retention date, until released. Objects written later get it too.
    #[command(
        after_help = "Required: --store, --s3-endpoint, --tenant, --reason.\n\nExit codes: 0 every object held and the audit event written; 2 it could not be (no Object Lock, store unreachable, no reason).\n\nExample: verbatim legal-hold put --store s3://archive --s3-endpoint https://s3.eu-west-1.amazonaws.com --tenant acme --device iphone-0042 --reason 'SEC matter 2026-17'"
    )]
    Put(LegalHoldArgs),
    /// Release it. Retention dates are never changed (nor shortened).
    #[command(
        after_help = "Required: --store, --s3-endpoint, --tenant, --reason.\n\nExit codes: 0 every object released and the audit event written; 2 it could not be.\n\nExample: verbatim legal-hold release --store s3://archive --s3-endpoint https://s3.eu-west-1.amazonaws.com --tenant acme --device iphone-0042 --reason 'SEC matter 2026-17 closed'"
    )]
    Release(LegalHoldArgs),
}

#[derive(clap::Args)]
pub struct LegalHoldArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Required. The tenant.
    #[arg(long)]
    tenant: String,
    /// Only this device of the tenant.
    #[arg(long)]
    device: Option<String>,
    /// Required. Why: the matter or case reference (recorded in the audit event).
    #[arg(long)]
    reason: String,
    /// Who asks for it (recorded in the audit event; default: $USER).
    #[arg(long)]
    by: Option<String>,
    /// Print the audit event as JSON.
    #[arg(long)]
    json: bool,
}

pub fn legal_hold(command: LegalHoldCommand) -> ExitCode {
    let (on, a) = match command {
        LegalHoldCommand::Put(a) => (true, a),
        LegalHoldCommand::Release(a) => (false, a),
    };
    let config = match a.store.object_store() {
        Ok(Some(c)) => c,
        Ok(None) => return fail("legal-hold needs --store s3://BUCKET[/PREFIX] --s3-endpoint URL (a bucket with Object Lock)"),
        Err(e) => return fail(e),
    };
    let by = a.by.clone().or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "unknown".into());
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(format!("start a runtime: {e}")),
    };
    let result = rt.block_on(async {
        let admin = verbatim_receiver::store::s3::S3Admin::open(&config).await?;
        admin.legal_hold(&a.tenant, a.device.as_deref(), on, &a.reason, &by).await
    });
    match result {
        Ok(summary) => {
            if a.json {
                outln!("{}", serde_json::to_string_pretty(&summary).unwrap_or_default());
            } else {
                let whom = match &a.device {
                    Some(d) => format!("device {d} of tenant {}", a.tenant),
                    None => format!("tenant {}", a.tenant),
                };
                let what = if on { "put on" } else { "released from" };
                outln!("legal hold {what} {} object(s) of {whom}", summary.event.objects);
                outln!("audit event: {}", summary.audit_key);
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

#[derive(clap::Args)]
pub struct CopyArchiveArgs {
    /// Required. The embedded archive's data directory (stop its receiver first, or run the
    /// copy again afterwards: a second run copies only what is new).
    #[arg(long)]
    data: PathBuf,
    #[command(flatten)]
    store: StoreArgs,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

/// `verbatim copy-archive`: an embedded SQLite archive into a bucket, then both verified and
/// compared.
pub fn copy_archive(args: CopyArchiveArgs) -> ExitCode {
    let target = match args.store.object_store() {
        Ok(Some(t)) => t,
        Ok(None) => return fail("copy-archive needs --store s3://BUCKET[/PREFIX] --s3-endpoint URL"),
        Err(e) => return fail(e),
    };
    let summary = verbatim_receiver::store::sqlite::SqliteReader::open(&args.data)
        .and_then(|mut source| verbatim_receiver::store::s3::copy_archive(&mut source, &target));
    match summary {
        Ok(s) => {
            if args.json {
                outln!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
            } else {
                outln!(
                    "{} stream(s): {} record(s) copied, {} already in the bucket, {} alert(s) copied",
                    s.streams,
                    s.records_copied,
                    s.records_already_there,
                    s.alerts_copied
                );
                for m in &s.mismatches {
                    outln!("MISMATCH {m}");
                }
                outln!(
                    "{}",
                    if s.ok() { "the bucket verifies the same as the source" } else { "COPY DOES NOT MATCH THE SOURCE" }
                );
            }
            if s.ok() { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
        Err(e) => fail(e),
    }
}
