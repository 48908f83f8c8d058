//! The key vault's commands: `vault init|ingest|status|audit`, `erase`, `hold`, `retention
//! apply`, `keys rotate|check|retire`. Only wiring: the rules live in
//! `verbatim_receiver::vault` (docs/erasure.md).

use std::path::PathBuf;
use std::process::ExitCode;

use verbatim_core::seal::ArchiveSecretKey;
use verbatim_receiver::vault::erase::{self, Selector};
use verbatim_receiver::vault::holds::{self, HoldScope};
use verbatim_receiver::vault::{self, Settings, Vault, ingest, retire};

use crate::archive_cmd::StoreArgs;
use crate::output::outln;

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(2)
}

fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| "{}".into())
}

#[derive(clap::Args)]
pub struct VaultDir {
    /// The key vault's directory (`verbatim vault init`).
    #[arg(long)]
    vault: PathBuf,
    /// Who acts, for the audit log (default: $USER).
    #[arg(long)]
    actor: Option<String>,
}

impl VaultDir {
    fn open(&self) -> Result<Vault, verbatim_receiver::Error> {
        Vault::open(&self.vault)
    }

    fn actor(&self) -> String {
        vault::actor_or_default(self.actor.as_deref())
    }
}

/// Archive private keys: a keyring directory and/or key files.
#[derive(clap::Args)]
pub struct KeyArgs {
    /// A keyring directory (`verbatim keys rotate`, or a `verbatim keygen` directory): every
    /// private key in it.
    #[arg(long)]
    keyring: Option<PathBuf>,
    /// An archive private key file; repeatable.
    #[arg(long)]
    key: Vec<PathBuf>,
}

impl KeyArgs {
    pub fn load(&self) -> Result<Vec<ArchiveSecretKey>, verbatim_receiver::Error> {
        let mut out = match &self.keyring {
            Some(dir) => retire::load_keyring(dir)?,
            None => Vec::new(),
        };
        for k in &self.key {
            out.push(verbatim_receiver::load_secret(k)?);
        }
        Ok(out)
    }
}

#[derive(clap::Subcommand)]
pub enum VaultCommand {
    /// Create a key vault: its database and its wrapping key (mode 0600).
    #[command(
        after_help = "Required: --vault.\n\nExit codes: 0 created; 2 it could not be (a vault is already there, a bad setting).\n\nExample: verbatim vault init --vault vault --retention-days 2557"
    )]
    Init(InitArgs),
    /// File in the vault the keys of everything the archive holds (with the archive private
    /// keys), from where the last run stopped; prints the report as JSON.
    #[command(
        after_help = "Required: --vault, --data (or --store with --s3-endpoint), --keyring or --key.\n\nExit codes: 0 every stream filed to its end; 1 a stream stopped (a private key missing, a broken chain; listed); 2 could not run.\n\nExample: verbatim vault ingest --vault vault --data archive --keyring archive-keys"
    )]
    Ingest(IngestArgs),
    /// The vault's settings, erasures (pending or complete) and legal holds, as JSON.
    #[command(
        after_help = "Required: --vault.\n\nExit codes: 0 printed, and the audit log chains; 1 the audit log does not chain; 2 could not run.\n\nExample: verbatim vault status --vault vault"
    )]
    Status(VaultDir),
    /// Print the audit log, one JSON object per line, after checking its hash chain.
    #[command(
        after_help = "Required: --vault.\n\nExit codes: 0 printed and the log chains; 1 an entry was altered or removed; 2 could not run.\n\nExample: verbatim vault audit --vault vault"
    )]
    Audit(VaultDir),
}

#[derive(clap::Args)]
pub struct InitArgs {
    #[command(flatten)]
    dir: VaultDir,
    /// Days between archive key rotations.
    #[arg(long, default_value_t = 30)]
    rotation_days: u32,
    /// Days devices get after a rotation to upload what they sealed to the old key.
    #[arg(long, default_value_t = 7)]
    grace_days: u32,
    /// Days records are kept before `verbatim retention apply` makes them unreadable (default:
    /// no retention period).
    #[arg(long)]
    retention_days: Option<u32>,
}

#[derive(clap::Args)]
pub struct IngestArgs {
    #[command(flatten)]
    dir: VaultDir,
    /// The receiver's data directory.
    #[arg(long, required_unless_present = "store")]
    data: Option<PathBuf>,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    keys: KeyArgs,
}

pub fn vault_command(command: VaultCommand) -> ExitCode {
    match command {
        VaultCommand::Init(args) => {
            let settings =
                Settings { rotation_days: args.rotation_days, grace_days: args.grace_days, retention_days: args.retention_days };
            match Vault::create(&args.dir.vault, settings, &args.dir.actor()) {
                Ok(_) => {
                    outln!(
                        "{}",
                        json(&serde_json::json!({
                            "vault": args.dir.vault, "settings": settings,
                            "worst_case_erasure_days": settings.worst_case_erasure_days(),
                        }))
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        VaultCommand::Ingest(args) => {
            let run = || -> Result<ingest::IngestReport, verbatim_receiver::Error> {
                let keys = verbatim_receiver::KeyRing::new(&args.keys.load()?)?;
                let location = args.store.location(args.data.as_ref()).map_err(verbatim_receiver::Error::Config)?;
                let mut reader = verbatim_receiver::store::open_reader(&location)?;
                let mut vault = args.dir.open()?;
                ingest::ingest(&mut vault, &mut *reader, &keys, &args.dir.actor())
            };
            match run() {
                Ok(report) => {
                    outln!("{}", json(&report));
                    if report.stopped.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) }
                }
                Err(e) => fail(e),
            }
        }
        VaultCommand::Status(dir) => {
            let run = || -> Result<(serde_json::Value, bool), verbatim_receiver::Error> {
                let v = dir.open()?;
                let settings = v.settings()?;
                let audit_ok = vault::audit::entries(v.conn_for_reports()).is_ok();
                let status = serde_json::json!({
                    "settings": settings,
                    "worst_case_erasure_days": settings.worst_case_erasure_days(),
                    "counts": v.counts()?,
                    "erasures": erase::list(&v)?,
                    "holds": holds::list(&v)?,
                    "retired_keys": v.retired_keys()?,
                    "audit_log_chains": audit_ok,
                });
                Ok((status, audit_ok))
            };
            match run() {
                Ok((status, ok)) => {
                    outln!("{}", json(&status));
                    if ok { ExitCode::SUCCESS } else { ExitCode::from(1) }
                }
                Err(e) => fail(e),
            }
        }
        VaultCommand::Audit(dir) => match dir.open().and_then(|v| vault::audit::entries(v.conn_for_reports())) {
            Ok(entries) => {
                for e in entries {
                    outln!("{}", serde_json::to_string(&e).unwrap_or_default());
                }
                ExitCode::SUCCESS
            }
            Err(verbatim_receiver::Error::Vault(e)) if e.contains("does not chain") => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
            Err(e) => fail(e),
        },
    }
}

#[derive(clap::Args)]
pub struct EraseArgs {
    #[command(flatten)]
    dir: VaultDir,
    /// The conversation id (as exported: `meta.conversation_id`); needs --device.
    #[arg(long, requires = "device", conflicts_with = "participant")]
    conversation: Option<String>,
    /// The device the conversation is on.
    #[arg(long)]
    device: Option<String>,
    /// Erase every conversation in which this handle (phone number, address) took part.
    #[arg(long, required_unless_present = "conversation")]
    participant: Option<String>,
    /// Why (kept in the audit log): the request's reference, the legal ground.
    #[arg(long)]
    reason: String,
}

pub fn erase(args: EraseArgs) -> ExitCode {
    let selector = match (&args.conversation, &args.device, &args.participant) {
        (Some(c), Some(d), None) => Selector::Conversation { device: d.clone(), conversation_id: c.clone() },
        (None, _, Some(p)) => Selector::Participant { handle: p.clone() },
        _ => return fail("give --conversation ID --device DEVICE, or --participant HANDLE"),
    };
    let run = || -> Result<erase::ErasureReport, verbatim_receiver::Error> {
        let mut v = args.dir.open()?;
        erase::erase(&mut v, &selector, &args.reason, &args.dir.actor(), verbatim_receiver::time::now_ms())
    };
    match run() {
        Ok(report) => {
            outln!("{}", json(&report));
            if report.erasure.is_some() { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
        Err(verbatim_receiver::Error::Refused(why)) => {
            eprintln!("refused: {why}");
            ExitCode::from(1)
        }
        Err(e) => fail(e),
    }
}

#[derive(clap::Subcommand)]
pub enum HoldCommand {
    /// Place a legal hold: no erasure or retention run deletes the keys it covers.
    #[command(
        after_help = "Required: --vault, --reason, and --device, --conversation with --device, or --participant.\n\nExit codes: 0 placed (its id printed); 2 it could not be (no reason, no vault).\n\nExample: verbatim hold add --vault vault --participant +15550100111 --reason 'SEC matter 2026-17'"
    )]
    Add(HoldAddArgs),
    /// Release a legal hold in force (it stays listed, released).
    #[command(
        after_help = "Required: --vault, ID, --reason.\n\nExit codes: 0 released; 2 it could not be (no such hold in force, no reason).\n\nExample: verbatim hold release 3 --vault vault --reason 'matter closed'"
    )]
    Release(HoldReleaseArgs),
    /// Every legal hold, in force or released, as JSON.
    #[command(
        after_help = "Required: --vault.\n\nExit codes: 0 printed; 2 could not run.\n\nExample: verbatim hold list --vault vault"
    )]
    List(VaultDir),
}

#[derive(clap::Args)]
pub struct HoldAddArgs {
    #[command(flatten)]
    dir: VaultDir,
    /// Hold everything of this device (or, with --conversation, that conversation on it).
    #[arg(long, required_unless_present = "participant")]
    device: Option<String>,
    #[arg(long, requires = "device")]
    conversation: Option<String>,
    /// Hold every conversation in which this handle took part.
    #[arg(long, conflicts_with = "device")]
    participant: Option<String>,
    #[arg(long)]
    reason: String,
}

#[derive(clap::Args)]
pub struct HoldReleaseArgs {
    #[command(flatten)]
    dir: VaultDir,
    id: i64,
    #[arg(long)]
    reason: String,
}

pub fn hold(command: HoldCommand) -> ExitCode {
    match command {
        HoldCommand::Add(args) => {
            let scope = match (args.device, args.conversation, args.participant) {
                (Some(device), Some(conversation_id), None) => HoldScope::Conversation { device, conversation_id },
                (Some(device), None, None) => HoldScope::Device { device },
                (None, None, Some(handle)) => HoldScope::Participant { handle },
                _ => return fail("give --device, --conversation ID --device DEVICE, or --participant HANDLE"),
            };
            match args.dir.open().and_then(|mut v| holds::place(&mut v, scope, &args.reason, &args.dir.actor())) {
                Ok(id) => {
                    outln!("{}", json(&serde_json::json!({ "hold": id })));
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        HoldCommand::Release(args) => {
            match args.dir.open().and_then(|mut v| holds::release(&mut v, args.id, &args.reason, &args.dir.actor())) {
                Ok(()) => {
                    outln!("{}", json(&serde_json::json!({ "released": args.id })));
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        HoldCommand::List(dir) => match dir.open().and_then(|v| holds::list(&v)) {
            Ok(list) => {
                outln!("{}", json(&list));
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
    }
}

#[derive(clap::Subcommand)]
pub enum RetentionCommand {
    /// Make unreadable every record past the vault's retention period (its keys deleted),
    /// except what a legal hold covers. Dry run unless --apply: prints what would go.
    #[command(
        after_help = "Required: --vault.\n\nExit codes: 0 done (or, dry run, listed); 2 could not run (no retention period set).\n\nExample: verbatim retention apply --vault vault --apply"
    )]
    Apply(RetentionArgs),
}

#[derive(clap::Args)]
pub struct RetentionArgs {
    #[command(flatten)]
    dir: VaultDir,
    /// Delete the keys (without it, nothing changes).
    #[arg(long)]
    apply: bool,
    /// Judge ages as of this instant (ms since the epoch) instead of now: to rehearse a run.
    #[arg(long, hide = true)]
    as_of_ms: Option<i64>,
}

pub fn retention(command: RetentionCommand) -> ExitCode {
    let RetentionCommand::Apply(args) = command;
    let now = args.as_of_ms.unwrap_or_else(verbatim_receiver::time::now_ms);
    match args.dir.open().and_then(|mut v| erase::retention(&mut v, args.apply, &args.dir.actor(), now)) {
        Ok(report) => {
            outln!("{}", json(&report));
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

#[derive(clap::Subcommand)]
pub enum KeysCommand {
    /// Add a new archive key pair to the keyring; prints its public key (the policy's next
    /// archive_public_key) and key id.
    #[command(
        after_help = "Required: --keyring, --vault.\n\nExit codes: 0 created; 2 could not be.\n\nExample: verbatim keys rotate --keyring archive-keys --vault vault"
    )]
    Rotate(RotateArgs),
    /// Say whether an archive key can retire, and what blocks it.
    #[command(
        after_help = "Required: --vault, --key-id, --data (or --store with --s3-endpoint).\n\nExit codes: 0 it can retire; 1 something blocks it (listed); 2 could not run.\n\nExample: verbatim keys check --vault vault --data archive --key-id 3f9c0a51d2e47b68"
    )]
    Check(RetireArgs),
    /// Destroy an archive private key once every record sealed to it is filed in the vault
    /// and every device moved on to a newer key; refuses otherwise, changing nothing.
    #[command(
        after_help = "Required: --keyring, --vault, --key-id, --data (or --store with --s3-endpoint).\n\nExit codes: 0 retired (the private key file destroyed); 1 refused (what blocks it is listed); 2 could not run.\n\nExample: verbatim keys retire --keyring archive-keys --vault vault --data archive --key-id 3f9c0a51d2e47b68"
    )]
    Retire(RetireArgs),
}

#[derive(clap::Args)]
pub struct RotateArgs {
    #[command(flatten)]
    dir: VaultDir,
    #[arg(long)]
    keyring: PathBuf,
}

#[derive(clap::Args)]
pub struct RetireArgs {
    #[command(flatten)]
    dir: VaultDir,
    /// The keyring holding the key (retire only).
    #[arg(long)]
    keyring: Option<PathBuf>,
    #[arg(long)]
    key_id: String,
    #[arg(long, required_unless_present = "store")]
    data: Option<PathBuf>,
    #[command(flatten)]
    store: StoreArgs,
}

pub fn keys(command: KeysCommand) -> ExitCode {
    match command {
        KeysCommand::Rotate(args) => {
            match args.dir.open().and_then(|mut v| retire::rotate(&args.keyring, &mut v, &args.dir.actor())) {
                Ok(info) => {
                    outln!(
                        "{}",
                        json(&serde_json::json!({
                            "archive_public_key": info.public_b64, "key_id": info.key_id,
                            "private_key": info.private_path, "public_key": info.public_path,
                        }))
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        KeysCommand::Check(args) => {
            let run = || -> Result<retire::RetireCheck, verbatim_receiver::Error> {
                let location = args.store.location(args.data.as_ref()).map_err(verbatim_receiver::Error::Config)?;
                let mut reader = verbatim_receiver::store::open_reader(&location)?;
                retire::check(&args.dir.open()?, &mut *reader, &args.key_id)
            };
            match run() {
                Ok(check) => {
                    outln!("{}", json(&check));
                    if check.blocking.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) }
                }
                Err(e) => fail(e),
            }
        }
        KeysCommand::Retire(args) => {
            let Some(keyring) = &args.keyring else { return fail("--keyring DIR is required to retire a key") };
            let run = || -> Result<retire::RetireReport, verbatim_receiver::Error> {
                let location = args.store.location(args.data.as_ref()).map_err(verbatim_receiver::Error::Config)?;
                let mut reader = verbatim_receiver::store::open_reader(&location)?;
                retire::retire(&mut args.dir.open()?, &mut *reader, keyring, &args.key_id, &args.dir.actor())
            };
            match run() {
                Ok(report) => {
                    outln!("{}", json(&report));
                    ExitCode::SUCCESS
                }
                Err(verbatim_receiver::Error::Refused(why)) => {
                    eprintln!("refused: {why}");
                    ExitCode::from(1)
                }
                Err(e) => fail(e),
            }
        }
    }
}
