//! `verbatim connect whatsapp`: the server-side connectors. Only wiring: secrets read from
//! owner-only files, the HTTP endpoint (axum over hyper, as the receiver uses), signals, and
//! the upload schedule; what is captured and how lives in `verbatim_core::sources`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use tokio::sync::Notify;
use verbatim_core::secret::Secret;
use verbatim_core::sources::connector::Lines;
use verbatim_core::sources::wecom::{self, Keys};
use verbatim_core::sources::whatsapp::{self, Graph, Refusal, Webhook};
use verbatim_core::upload::{NetworkState, UploadOptions, UploadReport};

use crate::output::outln;

/// Largest webhook body accepted (history chunks are the largest Meta sends).
const MAX_BODY: usize = 16 * 1024 * 1024;
/// Time each line's upload gets on a scheduled pass, and at shutdown.
const UPLOAD_DEADLINE: Duration = Duration::from_secs(60);

#[derive(clap::Subcommand)]
pub enum ConnectCommand {
    /// WhatsApp Business app numbers onboarded to the Cloud API (coexistence): serves the
    /// webhook Meta posts every message, echo, edit, revoke and history chunk to, checks each
    /// signature, captures into one sealed device stream per business number, and answers 200
    /// only once the delivery is durable (5xx otherwise, so Meta delivers again). Prints
    /// `listening <addr>`, then `durable <id>` per event; uploads on the policy's interval and
    /// at SIGINT/SIGTERM, then exits.
    #[command(
        after_help = "Required: --listen, --state, --policy, --app-secret-file, --verify-token-file.\n\nExit codes: 0 stopped by SIGINT or SIGTERM after a last upload; 1 the policy was refused (one line per problem) or names no business line; 2 the connector could not start (a secret file readable by others or empty, the address in use, a store that cannot be opened).\n\nExample: verbatim connect whatsapp --listen 10.0.0.5:8080 --state /var/lib/verbatim/whatsapp --policy policy.json --app-secret-file /etc/verbatim/app-secret --verify-token-file /etc/verbatim/verify-token --access-token-file /etc/verbatim/graph-token --device-tokens /etc/verbatim/tokens"
    )]
    Whatsapp(WhatsappArgs),

    /// The WeCom (WeChat Work) chat archive: loads Tencent's Finance SDK from --sdk, pulls the
    /// archived records in seq order from the last committed one (1,000 per call), opens each
    /// with the private key of its publickey_ver, and captures into one sealed device stream per
    /// archived user id. Prints `captured <id>` per event once durable. A record whose key
    /// version has no key stops the pass there (evidenced as could-not-record, never skipped).
    /// Without --once, pulls every --poll-secs until SIGINT/SIGTERM, uploading on the policy's
    /// interval and at the end.
    #[command(
        after_help = "Required: --state, --policy, --sdk, --corp-id, --secret-file, --private-keys.\n\nExit codes: 0 the pass ran to the end (--once) or the connector stopped on a signal; 1 the policy was refused or names no business line, or (--once) a record's key version has no private key (the could-not-record window is open); 2 the connector could not run (the SDK could not be loaded or refused the corp id and secret, a secret or key file readable by others, a store that cannot be opened, an SDK error during the pass).\n\nExample: verbatim connect wecom --state /var/lib/verbatim/wecom --policy policy.json --sdk /opt/wecom/libWeWorkFinanceSdk_C.so --corp-id ww0123456789abcdef --secret-file /etc/verbatim/wecom-secret --private-keys /etc/verbatim/wecom-keys --once"
    )]
    Wecom(WecomArgs),
}

pub fn run(command: ConnectCommand) -> ExitCode {
    match command {
        ConnectCommand::Whatsapp(args) => whatsapp(args),
        ConnectCommand::Wecom(args) => wecom(args),
    }
}

#[derive(clap::Args)]
pub struct WecomArgs {
    /// The connector's data directory: one store (one device stream) per archived user id.
    #[arg(long)]
    pub state: PathBuf,
    /// Policy file (XML property list or JSON): business_lines are the WeCom user ids to capture;
    /// each uploads as device `<device_id>-<user id>`.
    #[arg(long)]
    pub policy: PathBuf,
    /// Tencent's Finance SDK shared library (libWeWorkFinanceSdk_C.so), loaded at run time.
    #[arg(long)]
    pub sdk: PathBuf,
    /// The enterprise's corp id.
    #[arg(long)]
    pub corp_id: String,
    /// File holding the chat archive's secret; must be mode 0600.
    #[arg(long)]
    pub secret_file: PathBuf,
    /// Directory of the enterprise's RSA private keys, one PEM file per key version named
    /// `<publickey_ver>.pem`, each mode 0600; read again at every pass.
    #[arg(long)]
    pub private_keys: PathBuf,
    /// Directory of device tokens, one file per user id named as the id, each mode 0600.
    #[arg(long)]
    pub device_tokens: Option<PathBuf>,
    /// One pass to the end of the archive, an upload, the pass's report as JSON, then exit.
    #[arg(long)]
    pub once: bool,
    /// Seconds between two passes.
    #[arg(long, default_value_t = 60)]
    pub poll_secs: u64,
    /// Seconds the SDK may take per call.
    #[arg(long, default_value_t = 30)]
    pub sdk_timeout_secs: u32,
}

/// The private keys in `dir`, `<version>.pem` each, owner-only.
fn wecom_keys(dir: &Path) -> Result<Keys, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("--private-keys {}: {e}", dir.display()))?;
    let mut pems = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let version = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".pem")).and_then(|v| v.parse().ok());
        if let Some(version) = version {
            pems.push((version, read_secret(&path, "private key")?.expose().to_string()));
        }
    }
    Keys::from_pems(pems).map_err(|e| e.to_string())
}

pub fn wecom(args: WecomArgs) -> ExitCode {
    let tree = match verbatim_core::policy::file::load(&args.policy) {
        Ok(t) => t,
        Err(e) => return usage(format!("policy: {e}")),
    };
    let secret = match read_secret(&args.secret_file, "archive secret") {
        Ok(s) => s,
        Err(e) => return usage(e),
    };
    if let Err(e) = wecom_keys(&args.private_keys) {
        return usage(e);
    }
    let lines = match open_lines(wecom::SOURCE, &args.state, tree, args.device_tokens.as_deref()) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let sdk = match wecom::Sdk::open(&args.sdk, &args.corp_id, secret.expose(), args.sdk_timeout_secs) {
        Ok(s) => s,
        Err(e) => return usage(e),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return usage(format!("runtime: {e}")),
    };
    let archive = wecom::Archive::new(lines.clone(), sdk);
    let code = rt.block_on(async {
        if let Err(e) = lines.open_existing().await {
            return usage(format!("opening the stores under {}: {e}", args.state.display()));
        }
        for (_, agent) in lines.opened() {
            wecom::clear_incoming(&agent);
        }
        // Raised by SIGINT/SIGTERM: a pass stops between two records (what it committed stays).
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::new(Notify::new());
        if !args.once {
            let (flag, stopped) = (stop.clone(), stopped.clone());
            tokio::spawn(async move {
                wait_for_signal().await;
                flag.store(true, Ordering::Release);
                stopped.notify_one();
            });
        }
        let pass = || async {
            let keys =
                wecom_keys(&args.private_keys).map_err(|e| verbatim_core::Error::new(verbatim_core::ErrorKind::Rejected, e))?;
            archive.pass(&keys, &stop, &mut |id| outln!("captured {id}")).await
        };
        if args.once {
            let outcome = pass().await;
            for (device, report) in upload_all(&lines).await {
                eprintln!("connect: {device}: {} records uploaded; {:?}", report.records_sent, report.stopped);
            }
            return match outcome {
                Ok(report) => {
                    outln!("{}", serde_json::to_string(&report).expect("report serialises"));
                    if let Some(v) = report.missing_key_version {
                        eprintln!(
                            "error: connect wecom: no private key for publickey_ver {v}: capture stops there until it is added"
                        );
                        ExitCode::from(1)
                    } else {
                        ExitCode::SUCCESS
                    }
                }
                Err(e) => usage(format!("connect wecom: {e}")),
            };
        }
        let every = Duration::from_secs(u64::from(lines.policy().upload_interval_minutes) * 60);
        let mut last_upload: Option<std::time::Instant> = None;
        loop {
            match pass().await {
                Ok(report) if report.missing_key_version.is_some() => {
                    eprintln!("warning: connect wecom: a record's key version has no private key; waiting for it")
                }
                Ok(_) => {}
                Err(e) => eprintln!("warning: connect wecom: {e}"),
            }
            if last_upload.is_none_or(|t| t.elapsed() >= every) {
                upload_all(&lines).await;
                last_upload = Some(std::time::Instant::now());
            }
            tokio::select! {
                _ = stopped.notified() => break,
                _ = tokio::time::sleep(Duration::from_secs(args.poll_secs.max(1))) => {}
            }
        }
        upload_all(&lines).await;
        ExitCode::SUCCESS
    });
    rt.block_on(lines.close());
    code
}

#[derive(clap::Args)]
pub struct WhatsappArgs {
    /// Address to serve the webhook on (`/webhook`), plain HTTP behind the firm's HTTPS load
    /// balancer; `127.0.0.1:0` picks a free port. Prints `listening <addr>` once bound.
    #[arg(long)]
    pub listen: SocketAddr,
    /// The connector's data directory: one store (one device stream) per business number,
    /// in `DIR/<number>`.
    #[arg(long)]
    pub state: PathBuf,
    /// Policy file (XML property list or JSON): business_lines are the WhatsApp Business
    /// numbers to capture; each number uploads as device `<device_id>-<number>`.
    #[arg(long)]
    pub policy: PathBuf,
    /// File holding the Meta app secret (signs every webhook); must be mode 0600.
    #[arg(long)]
    pub app_secret_file: PathBuf,
    /// File holding the verify token of the subscription handshake; must be mode 0600.
    #[arg(long)]
    pub verify_token_file: PathBuf,
    /// Graph API base URL with its version, for media bytes.
    #[arg(long, default_value = "https://graph.facebook.com/v23.0")]
    pub graph_url: url::Url,
    /// File holding the Graph API access token (a system user's); must be mode 0600. Without
    /// it media are recorded as omitted.
    #[arg(long)]
    pub access_token_file: Option<PathBuf>,
    /// PEM file of the CAs to trust for the Graph API instead of the OS store (a TLS proxy).
    #[arg(long)]
    pub graph_ca: Option<PathBuf>,
    /// Directory of device tokens, one file per business number named as the number (e.g.
    /// `+15550783881`), each mode 0600. A number without one captures but does not upload.
    #[arg(long)]
    pub device_tokens: Option<PathBuf>,
    /// Seconds between two attempts to fetch media recorded as omitted.
    #[arg(long, default_value_t = 300)]
    pub media_retry_secs: u64,
}

/// Reads a secret from a file readable by its owner only; the error names the file, never
/// its content.
fn read_secret(path: &Path, what: &str) -> Result<Secret, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{what} {}: {e}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "{what} {}: readable by others (mode {mode:o}); make it owner-only: chmod 600 {}",
                path.display(),
                path.display()
            ));
        }
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{what} {}: {e}", path.display()))?;
    let value = text.trim();
    if value.is_empty() {
        return Err(format!("{what} {}: the file is empty", path.display()));
    }
    Ok(Secret::new(value))
}

/// Device tokens for the policy's business lines found in `dir`.
fn device_tokens(dir: Option<&Path>, lines: &[String]) -> Result<BTreeMap<String, Secret>, String> {
    let mut tokens = BTreeMap::new();
    let Some(dir) = dir else { return Ok(tokens) };
    for line in lines {
        let path = dir.join(line);
        if path.exists() {
            tokens.insert(line.clone(), read_secret(&path, "device token")?);
        } else {
            eprintln!("warning: no device token {} for {line}: it captures but does not upload", path.display());
        }
    }
    Ok(tokens)
}

/// The business lines of the policy, each with its device token, ready to open on first use.
/// Exit 1 for a refused policy or line store, 2 for unreadable token files.
fn open_lines(
    source: &'static str,
    state: &Path,
    tree: verbatim_core::Value,
    tokens_dir: Option<&Path>,
) -> Result<Arc<Lines>, ExitCode> {
    let business: Vec<String> = match verbatim_core::policy::parse(&tree) {
        Ok(parsed) => parsed.policy.business_lines.iter().cloned().collect(),
        Err(rejected) => {
            eprintln!("error: {rejected}");
            return Err(ExitCode::from(1));
        }
    };
    let tokens = device_tokens(tokens_dir, &business).map_err(usage)?;
    match Lines::new(source, state, tree, tokens) {
        Ok(l) => Ok(Arc::new(l)),
        Err(e) => {
            eprintln!("error: {e}");
            Err(ExitCode::from(1))
        }
    }
}

fn usage(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(2)
}

/// The state the HTTP handlers share.
pub(crate) struct App {
    webhook: Webhook,
    /// Raised when a capture met a full queue: upload now rather than at the next interval.
    upload_now: Notify,
    /// Raised at shutdown: the background task stops after what it is doing.
    stop: Notify,
    /// Print `durable <id>` per event (the command does; the benchmark does not).
    print_durable: bool,
}

impl App {
    pub(crate) fn new(webhook: Webhook, print_durable: bool) -> Arc<App> {
        Arc::new(App { webhook, upload_now: Notify::new(), stop: Notify::new(), print_durable })
    }
}

/// The endpoint: `GET /webhook` (handshake), `POST /webhook` (notifications).
pub(crate) fn router(app: Arc<App>) -> Router {
    Router::new().route("/webhook", get(handshake).post(notification)).layer(DefaultBodyLimit::max(MAX_BODY)).with_state(app)
}

pub fn whatsapp(args: WhatsappArgs) -> ExitCode {
    let tree = match verbatim_core::policy::file::load(&args.policy) {
        Ok(t) => t,
        Err(e) => return usage(format!("policy: {e}")),
    };
    let app_secret = match read_secret(&args.app_secret_file, "app secret") {
        Ok(s) => s,
        Err(e) => return usage(e),
    };
    let verify_token = match read_secret(&args.verify_token_file, "verify token") {
        Ok(s) => s,
        Err(e) => return usage(e),
    };
    let graph = match &args.access_token_file {
        None => {
            eprintln!("warning: no --access-token-file: media are recorded as omitted until it is given");
            None
        }
        Some(file) => {
            let token = match read_secret(file, "access token") {
                Ok(s) => s,
                Err(e) => return usage(e),
            };
            let ca = match args.graph_ca.as_ref().map(std::fs::read_to_string).transpose() {
                Ok(ca) => ca,
                Err(e) => return usage(format!("--graph-ca: {e}")),
            };
            match Graph::new(args.graph_url.clone(), token, ca.as_deref()) {
                Ok(g) => Some(g),
                Err(e) => return usage(format!("Graph API: {e}")),
            }
        }
    };
    let lines = match open_lines(whatsapp::SOURCE, &args.state, tree, args.device_tokens.as_deref()) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return usage(format!("runtime: {e}")),
    };
    let app = App::new(Webhook::new(lines.clone(), app_secret, verify_token, graph), true);
    let code = rt.block_on(serve(app.clone(), &args));
    eprintln!("connect whatsapp: stopped; {} webhooks refused for their signature", app.webhook.bad_signatures());
    code
}

async fn serve(app: Arc<App>, args: &WhatsappArgs) -> ExitCode {
    let lines = app.webhook.lines().clone();
    if let Err(e) = lines.open_existing().await {
        return usage(format!("opening the stores under {}: {e}", args.state.display()));
    }
    for (_, agent) in lines.opened() {
        whatsapp::clear_incoming(agent.data_dir());
    }
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => return usage(format!("cannot listen on {}: {e}", args.listen)),
    };
    let local = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    outln!("listening {local}");
    let router = router(app.clone());

    let background = tokio::spawn(background(app.clone(), Duration::from_secs(args.media_retry_secs.max(1))));
    let served = axum::serve(listener, router).with_graceful_shutdown(wait_for_signal()).await;
    // The background task finishes what it is doing (an upload session must end on its own:
    // one dropped mid-way would leave the next waiting for it), then stops.
    app.stop.notify_one();
    let _ = background.await;
    // Whatever is queued goes now, before the process ends.
    for (device, report) in upload_all(&lines).await {
        eprintln!(
            "connect: {device}: {} records uploaded; {:?}{}",
            report.records_sent,
            report.stopped,
            if report.more_pending { ", records still queued" } else { "" }
        );
    }
    lines.close().await;
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => usage(format!("serving: {e}")),
    }
}

/// GET /webhook: Meta's subscription handshake.
async fn handshake(State(app): State<Arc<App>>, RawQuery(query): RawQuery) -> (StatusCode, String) {
    let params: BTreeMap<String, String> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned().collect();
    let get = |k: &str| params.get(k).map(String::as_str);
    match app.webhook.handshake(get("hub.mode"), get("hub.verify_token"), get("hub.challenge")) {
        Some(challenge) => (StatusCode::OK, challenge.to_string()),
        None => (StatusCode::FORBIDDEN, "verify token mismatch\n".into()),
    }
}

/// POST /webhook: a notification, acknowledged (200) only once all it holds is durable.
async fn notification(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> (StatusCode, &'static str) {
    let signature = headers.get("x-hub-signature-256").and_then(|v| v.to_str().ok());
    let print = app.print_durable;
    let mut on_durable = |id: &str| {
        if print {
            outln!("durable {id}")
        }
    };
    match app.webhook.deliver(&body, signature, &mut on_durable).await {
        Ok(_) => (StatusCode::OK, "ok\n"),
        Err(Refusal::BadSignature) => (StatusCode::UNAUTHORIZED, "bad signature\n"),
        Err(Refusal::Malformed(why)) => {
            tracing::warn!(why, "whatsapp: a signed body that is not a webhook payload");
            (StatusCode::BAD_REQUEST, "not a WhatsApp webhook payload\n")
        }
        Err(Refusal::NotDurable(e)) => {
            if e.kind == verbatim_core::ErrorKind::QueueFull {
                app.upload_now.notify_one();
            }
            (StatusCode::SERVICE_UNAVAILABLE, "not durable yet; deliver again\n")
        }
    }
}

/// Uploads on the policy's interval (at once when a capture met a full queue) and fetches
/// omitted media again.
async fn background(app: Arc<App>, media_retry: Duration) {
    let lines = app.webhook.lines().clone();
    let every = Duration::from_secs(u64::from(lines.policy().upload_interval_minutes) * 60);
    let mut upload_tick = tokio::time::interval(every);
    let mut retry_tick = tokio::time::interval(media_retry);
    loop {
        tokio::select! {
            _ = app.stop.notified() => return,
            _ = upload_tick.tick() => drop(upload_all(&lines).await),
            _ = app.upload_now.notified() => drop(upload_all(&lines).await),
            _ = retry_tick.tick() => {
                match app.webhook.retry_media(&mut |id| outln!("durable {id}")).await {
                    Ok(n) if n > 0 => tracing::info!(captured = n, "whatsapp: omitted media fetched"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "whatsapp: media retry"),
                }
            }
        }
    }
}

/// One upload pass of every opened line that has a device token of its own: each line's
/// device id with its report.
async fn upload_all(lines: &Lines) -> Vec<(String, UploadReport)> {
    let mut reports = Vec::new();
    for (line, agent) in lines.opened() {
        if !lines.has_token(&line) || agent.snapshot().pending_count == 0 {
            continue;
        }
        let report = agent.upload(UploadOptions::new(UPLOAD_DEADLINE, NetworkState::Unmetered)).await;
        tracing::info!(device = lines.device_id(&line), stopped = ?report.stopped, records = report.records_sent, "connect: upload");
        reports.push((lines.device_id(&line), report));
    }
    reports
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
