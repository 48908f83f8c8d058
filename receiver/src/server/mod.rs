//! The receiver process: an accept loop we control (TLS handshake timeout, connection cap,
//! graceful shutdown, fault-injected connection drops) serving the axum routes of [`api`]
//! over HTTP/1.1 on rustls. Authentication ([`auth`]) comes before a request slot is taken.

mod api;
mod auth;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tower_service::Service as _;

use crate::error::{Error, Result};
use crate::faults::FaultPlan;
use crate::keys::AcceptedKeys;
use crate::store::s3::{S3Store, S3StoreConfig};
use crate::store::{ArchiveStore, SqliteStore, StoreRules};
use crate::tls::{self, TlsSource};
use crate::tokens::TokenStore;
use api::{AppState, ConnKill, Peer};

/// Bounds that keep memory and slots bounded whatever clients do.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest batch body accepted (413 beyond). Default 17 MiB: a 16 MiB batch plus framing.
    pub max_body_bytes: usize,
    /// Authenticated requests handled at once; more get 503 + Retry-After. Peak memory is
    /// about twice `max_body_bytes` per request (the body, then the decoded batch).
    pub max_concurrent_requests: usize,
    /// Argon2 token verifications at once (each 19 MiB and tens of milliseconds of one core),
    /// a budget of their own: only a known token id not verified yet needs one.
    pub max_concurrent_verifications: usize,
    /// How long a request waits for a verification slot before 503 + Retry-After.
    pub verification_wait: Duration,
    /// Streams one device (tenant, device) may open; a batch for one more gets 422
    /// `stream_limit`.
    pub max_streams_per_device: u64,
    /// Open connections; more are closed on accept.
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    /// Time to receive a request's headers; also how long an idle keep-alive connection lives.
    pub header_timeout: Duration,
    /// Time to receive a whole request body.
    pub body_timeout: Duration,
    /// `Retry-After` sent with 503 when over `max_concurrent_requests`.
    pub retry_after_secs: u64,
    /// How long shutdown waits for requests in flight before dropping them.
    pub shutdown_grace: Duration,
    /// Caps the archive database's size (SQLite `max_page_count` on the writer connection):
    /// past it, writes fail with SQLITE_FULL exactly as on a full disk, and uploads get 503
    /// `unavailable` with Retry-After, nothing acknowledged. For disk-full tests; `None` (no
    /// cap) in production.
    pub storage_limit_bytes: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 17 * 1024 * 1024,
            max_concurrent_requests: 16,
            max_concurrent_verifications: 1,
            verification_wait: Duration::from_secs(2),
            max_streams_per_device: crate::store::DEFAULT_MAX_STREAMS_PER_DEVICE,
            max_connections: 1024,
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            retry_after_secs: 1,
            shutdown_grace: Duration::from_secs(5),
            storage_limit_bytes: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    /// Where to listen; port 0 picks a free port (see [`RunningReceiver::addr`]).
    pub listen: SocketAddr,
    /// Holds the database (unless `object_store` is set), and with [`TlsSource::SelfSigned`]
    /// the CA and server certificate.
    pub data_dir: PathBuf,
    /// Store records in an S3 bucket with Object Lock instead of the SQLite database in
    /// `data_dir`; any number of receivers may share one bucket.
    pub object_store: Option<S3StoreConfig>,
    /// The device token file (see [`crate::tokens`]).
    pub tokens_file: PathBuf,
    /// The archive key ids epochs may be sealed to (see [`AcceptedKeys`]).
    pub archive_keys: AcceptedKeys,
    pub tls: TlsSource,
    pub limits: Limits,
    /// Fault injection; `None` (the default) in production.
    pub faults: Option<FaultPlan>,
}

impl ReceiverConfig {
    pub fn new(
        listen: SocketAddr,
        data_dir: impl Into<PathBuf>,
        tokens_file: impl Into<PathBuf>,
        archive_keys: AcceptedKeys,
        tls: TlsSource,
    ) -> Self {
        ReceiverConfig {
            listen,
            data_dir: data_dir.into(),
            object_store: None,
            tokens_file: tokens_file.into(),
            archive_keys,
            tls,
            limits: Limits::default(),
            faults: None,
        }
    }

    /// Self-signed TLS on 127.0.0.1 with a free port, tokens in `<data_dir>/tokens.jsonl`:
    /// what tests and the demo use.
    pub fn local_self_signed(data_dir: impl Into<PathBuf>, archive_keys: AcceptedKeys) -> Self {
        let data_dir = data_dir.into();
        let tokens = data_dir.join("tokens.jsonl");
        ReceiverConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), data_dir, tokens, archive_keys, TlsSource::SelfSigned)
    }
}

/// Starts receivers.
pub struct Receiver;

/// Shutdown signal levels sent to the accept loop and connections.
const RUNNING: u8 = 0;
const GRACEFUL: u8 = 1;
const ABORT: u8 = 2;

impl Receiver {
    /// Opens the store, loads tokens and TLS, binds and starts serving on the current tokio
    /// runtime (multi-threaded). Returns once the socket is listening.
    pub async fn start(config: ReceiverConfig) -> Result<RunningReceiver> {
        let l = &config.limits;
        if l.max_concurrent_requests == 0 || l.max_connections == 0 || l.max_concurrent_verifications == 0 {
            return Err(Error::Config(
                "max_concurrent_requests, max_concurrent_verifications and max_connections must be at least 1".into(),
            ));
        }
        if config.archive_keys.is_empty() {
            return Err(Error::Config("at least one archive key must be accepted".into()));
        }
        if config.object_store.is_none() || matches!(config.tls, TlsSource::SelfSigned) {
            crate::fsutil::create_private_dir(&config.data_dir)?;
        }
        let (server_config, self_signed) = match &config.tls {
            TlsSource::SelfSigned => {
                let ss = tls::ensure_self_signed(&config.data_dir)?;
                (tls::server_config(&ss.cert_path, &ss.key_path)?, Some(ss))
            }
            TlsSource::Files { cert, key } => (tls::server_config(cert, key)?, None),
        };
        let tokens = Arc::new(TokenStore::open(&config.tokens_file)?);
        let data_dir = config.data_dir.clone();
        let storage_limit = config.limits.storage_limit_bytes;
        let rules = StoreRules {
            accepted_keys: config.archive_keys.clone(),
            max_streams_per_device: config.limits.max_streams_per_device,
        };
        let store: Arc<dyn ArchiveStore> = match &config.object_store {
            Some(s3) => Arc::new(S3Store::open(s3, rules).await?),
            None => Arc::new(
                tokio::task::spawn_blocking(move || SqliteStore::open_with_limit(&data_dir, rules, storage_limit))
                    .await
                    .map_err(|_| Error::Closed)??,
            ),
        };
        let listener =
            TcpListener::bind(config.listen).await.map_err(|e| Error::io(format!("listen on {}", config.listen), e))?;
        let addr = listener.local_addr().map_err(|e| Error::io("read the listening address", e))?;

        let state = Arc::new(AppState {
            store: store.clone(),
            auth: auth::AuthGate::new(tokens, config.limits.max_concurrent_verifications, config.limits.verification_wait),
            permits: Arc::new(Semaphore::new(config.limits.max_concurrent_requests)),
            limits: config.limits.clone(),
            faults: config.faults.clone(),
        });
        let (shutdown_tx, shutdown_rx) = watch::channel(RUNNING);
        let slots = Arc::new(Semaphore::new(config.limits.max_connections));
        let accept = AcceptLoop {
            listener,
            acceptor: TlsAcceptor::from(server_config),
            router: api::router(state),
            limits: config.limits.clone(),
            slots: slots.clone(),
            shutdown: shutdown_rx,
        };
        let accept_task = tokio::spawn(accept.run());
        tracing::info!(%addr, "receiver listening");
        Ok(RunningReceiver {
            addr,
            data_dir: config.data_dir,
            self_signed,
            faults: config.faults,
            shutdown_tx,
            accept_task,
            slots,
            max_connections: config.limits.max_connections,
            grace: config.limits.shutdown_grace,
            store,
        })
    }

    /// Starts a receiver on its own thread and runtime, for callers without one (the demo).
    pub fn start_in_background(config: ReceiverConfig) -> Result<BackgroundReceiver> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("verbatim-receiver".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(Error::io("start a runtime", e)));
                        return;
                    }
                };
                rt.block_on(async move {
                    match Receiver::start(config).await {
                        Ok(running) => {
                            let info =
                                (running.addr, running.ca_pem().map(str::to_string), running.ca_path().map(Path::to_path_buf));
                            let _ = ready_tx.send(Ok(info));
                            let _ = stop_rx.await;
                            running.shutdown().await;
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                });
            })
            .map_err(|e| Error::io("start the receiver thread", e))?;
        let (addr, ca_pem, ca_path) = ready_rx.recv().map_err(|_| Error::Closed)??;
        Ok(BackgroundReceiver { addr, ca_pem, ca_path, stop: Some(stop_tx), thread: Some(thread) })
    }
}

/// Runs a receiver until Ctrl-C or SIGTERM, then shuts it down gracefully (blocking; builds
/// its own runtime). `on_ready` is called once it listens: the `receive` command prints the
/// address and the CA path there.
pub fn run_until_signal(config: ReceiverConfig, on_ready: impl FnOnce(&RunningReceiver)) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| Error::io("start a runtime", e))?;
    rt.block_on(async move {
        let running = Receiver::start(config).await?;
        on_ready(&running);
        shutdown_signal().await;
        tracing::info!("shutdown requested");
        running.shutdown().await;
        Ok(())
    })
}

/// Resolves on Ctrl-C (SIGINT) or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A receiver serving on the caller's runtime.
pub struct RunningReceiver {
    addr: SocketAddr,
    data_dir: PathBuf,
    self_signed: Option<tls::SelfSigned>,
    faults: Option<FaultPlan>,
    shutdown_tx: watch::Sender<u8>,
    accept_task: tokio::task::JoinHandle<()>,
    slots: Arc<Semaphore>,
    max_connections: usize,
    grace: Duration,
    store: Arc<dyn ArchiveStore>,
}

impl RunningReceiver {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:<port>` (the base URL a policy's `archive_url` names).
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// With `--self-signed`: the CA certificate (PEM) devices must trust.
    pub fn ca_pem(&self) -> Option<&str> {
        self.self_signed.as_ref().map(|s| s.ca_pem.as_str())
    }

    pub fn ca_path(&self) -> Option<&Path> {
        self.self_signed.as_ref().map(|s| s.ca_path.as_path())
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The fault plan installed at start, if any.
    pub fn faults(&self) -> Option<&FaultPlan> {
        self.faults.as_ref()
    }

    /// Stops accepting, lets requests in flight finish (up to `shutdown_grace`, then drops
    /// them), and closes the store. Everything acknowledged is on disk when this returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown_tx.send(GRACEFUL);
        let _ = self.accept_task.await;
        let all = u32::try_from(self.max_connections).unwrap_or(u32::MAX);
        if tokio::time::timeout(self.grace, self.slots.acquire_many(all)).await.is_err() {
            let _ = self.shutdown_tx.send(ABORT);
            let _ = tokio::time::timeout(Duration::from_secs(2), self.slots.acquire_many(all)).await;
        }
        let store = self.store;
        let _ = tokio::task::spawn_blocking(move || store.close()).await;
        tracing::info!("receiver stopped");
    }
}

/// A receiver on its own thread (see [`Receiver::start_in_background`]).
pub struct BackgroundReceiver {
    addr: SocketAddr,
    ca_pem: Option<String>,
    ca_path: Option<PathBuf>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BackgroundReceiver {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    pub fn ca_path(&self) -> Option<&Path> {
        self.ca_path.as_deref()
    }

    /// Stops the receiver and waits for it (blocking).
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for BackgroundReceiver {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

struct AcceptLoop {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    router: axum::Router,
    limits: Limits,
    slots: Arc<Semaphore>,
    shutdown: watch::Receiver<u8>,
}

impl AcceptLoop {
    async fn run(mut self) {
        loop {
            let accepted = tokio::select! {
                _ = self.shutdown.changed() => break,
                a = self.listener.accept() => a,
            };
            let tcp = match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                tracing::warn!("connection refused: over the connection limit");
                continue;
            };
            let _ = tcp.set_nodelay(true);
            tokio::spawn(serve_connection(
                tcp,
                self.acceptor.clone(),
                self.router.clone(),
                self.limits.clone(),
                self.shutdown.clone(),
                slot,
            ));
        }
    }
}

async fn serve_connection(
    tcp: TcpStream,
    acceptor: TlsAcceptor,
    router: axum::Router,
    limits: Limits,
    mut shutdown: watch::Receiver<u8>,
    _slot: OwnedSemaphorePermit,
) {
    let peer = tcp.peer_addr().ok();
    let tls = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        _ => return, // failed or stalled handshake: nothing to answer
    };
    let kill = Arc::new(Notify::new());
    let ctx = ConnKill(kill.clone());
    let peer = Peer(peer);
    let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ctx.clone());
        req.extensions_mut().insert(peer);
        let mut router = router.clone();
        async move { router.call(req).await }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(conn);
    loop {
        tokio::select! {
            _ = conn.as_mut() => break,
            _ = kill.notified() => break, // dropping `conn` closes the socket unanswered
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() >= ABORT {
                    break;
                }
                if *shutdown.borrow() == GRACEFUL {
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}
