//! A local SeaweedFS (a real S3 server with Object Lock) for tests and `verbatim bench`: one
//! `weed server` process on 127.0.0.1, free ports, a temporary data directory, readiness by
//! polling (bounded), stopped by pid with SIGKILL (it does not exit on SIGTERM).
//!
//! The binary comes from `scripts/install-tools.sh seaweedfs` (built once per machine into the
//! tools cache); [`WEED_ENV`] names it (`eval "$(scripts/install-tools.sh env)"` sets it).

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::store::s3::{Retention, S3Client, S3Config, S3StoreConfig};

/// The variable holding the path of the `weed` binary.
pub const WEED_ENV: &str = "VERBATIM_WEED";
/// Any key pair works: this SeaweedFS has no IAM configured. (Not a secret.)
pub const ACCESS_KEY: &str = "verbatim-test";
pub const SECRET_KEY: &str = "verbatim-test-secret";
const READY_WITHIN: Duration = Duration::from_secs(90);

/// The `weed` binary named by [`WEED_ENV`], or an error saying how to get one.
pub fn weed_binary() -> Result<PathBuf> {
    let path = std::env::var_os(WEED_ENV).map(PathBuf::from).ok_or_else(|| {
        Error::Config(format!(
            "{WEED_ENV} is not set: run scripts/install-tools.sh seaweedfs, then eval \"$(scripts/install-tools.sh env)\""
        ))
    })?;
    if !path.is_file() {
        return Err(Error::Config(format!(
            "{WEED_ENV}={} is not a file: run scripts/install-tools.sh seaweedfs",
            path.display()
        )));
    }
    Ok(path)
}

/// A running `weed server`; killed (SIGKILL) and its directory removed on drop.
pub struct Seaweed {
    child: Option<Child>,
    dir: PathBuf,
    base_port: u16,
    s3_port: u16,
}

/// Ports `base..base+4` and their gRPC twins (+10000, SeaweedFS's convention) all free now,
/// all below Linux's ephemeral range (32768 and up) so that no client socket takes one of
/// them before weed binds it.
fn free_ports() -> Result<u16> {
    let free = |p: u16| TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, p)).is_ok();
    for _ in 0..200 {
        let mut b = [0u8; 2];
        getrandom::fill(&mut b).map_err(|e| Error::Config(format!("random: {e}")))?;
        let base = 12_000 + (u16::from_le_bytes(b) % 10_000);
        if (base..base + 4).all(|p| free(p) && free(p + 10_000)) {
            return Ok(base);
        }
    }
    Err(Error::Config("no free ports for SeaweedFS".into()))
}

impl Seaweed {
    /// Starts `weed server` with the S3 gateway and waits until it creates buckets.
    pub fn start() -> Result<Seaweed> {
        // Another process may take a port between the check and weed binding it: start again
        // on other ports (a few times) when weed does not come up. A failed attempt's
        // directory and sockets go with it (drop).
        let mut last = None;
        for _ in 0..3 {
            let mut name = [0u8; 8];
            getrandom::fill(&mut name).map_err(|e| Error::Config(format!("random: {e}")))?;
            let dir = std::env::temp_dir().join(format!("verbatim-seaweed-{}", hex::encode(name)));
            std::fs::create_dir_all(dir.join("data")).map_err(|e| Error::io_path("create", &dir, e))?;
            let base = free_ports()?;
            let mut me = Seaweed { child: None, dir, base_port: base, s3_port: base + 3 };
            match me.spawn() {
                Ok(()) => return Ok(me),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Config("SeaweedFS did not start".into())))
    }

    /// Starts it again after [`Seaweed::kill`], on the same ports and data.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn()
    }

    fn spawn(&mut self) -> Result<()> {
        let weed = weed_binary()?;
        let base = self.base_port;
        let (master, volume, filer, s3) = (base, base + 1, base + 2, base + 3);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .map_err(|e| Error::io_path("create", &self.log(), e))?;
        let log2 = log.try_clone().map_err(|e| Error::io("log file", e))?;
        let child = Command::new(&weed)
            .arg("server")
            .arg(format!("-dir={}", self.dir.join("data").display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-s3"])
            .arg(format!("-master.port={master}"))
            .arg(format!("-volume.port={volume}"))
            .arg(format!("-filer.port={filer}"))
            .arg(format!("-s3.port={s3}"))
            // Small volumes and many of them: every bucket is a collection with volumes of its own,
            // and tests make many small buckets.
            .args(["-master.volumeSizeLimitMB=32", "-volume.max=1000"])
            .arg(format!("-filer.localSocket={}", self.dir.join("filer.sock").display()))
            .arg(format!("-s3.localSocket={}", self.dir.join("s3.sock").display()))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| Error::io(format!("start {}", weed.display()), e))?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<()> {
        let started = Instant::now();
        let client = S3Client::new(&self.s3_config("ready-probe"))?;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(Error::Config(format!("weed exited during start ({status}); see {}", self.log().display())));
            }
            // Ready when the gateway, the filer and a volume all answer: a bucket is created
            // (or, after a restart, found) and listed.
            let ready = block_on(async {
                let created = match client.create_bucket(false).await {
                    Ok(()) => true,
                    Err(e) => e.to_string().contains("BucketAlready"),
                };
                created && client.list("", None, None, None).await.is_ok()
            })?;
            if ready {
                return Ok(());
            }
            if started.elapsed() > READY_WITHIN {
                return Err(Error::Config(format!(
                    "SeaweedFS not ready within {} s; see {}",
                    READY_WITHIN.as_secs(),
                    self.log().display()
                )));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The server's log file.
    pub fn log(&self) -> PathBuf {
        self.dir.join("weed.log")
    }

    pub fn endpoint(&self) -> url::Url {
        url::Url::parse(&format!("http://127.0.0.1:{}", self.s3_port)).expect("a valid URL")
    }

    /// A client configuration for `bucket` on this server.
    pub fn s3_config(&self, bucket: &str) -> S3Config {
        S3Config {
            endpoint: self.endpoint(),
            bucket: bucket.to_string(),
            region: "us-east-1".into(),
            access_key: Some(ACCESS_KEY.into()),
            secret_key: Some(SECRET_KEY.into()),
            session_token: None,
            timeout: Duration::from_secs(10),
        }
    }

    /// An object store configuration for `bucket` (prefix `archive`, retention `days`).
    pub fn store_config(&self, bucket: &str, days: u32) -> S3StoreConfig {
        S3StoreConfig { s3: self.s3_config(bucket), prefix: "archive".into(), retention: Retention::days(days) }
    }

    /// Creates `bucket`, with Object Lock when `object_lock` (blocking).
    pub fn create_bucket(&self, bucket: &str, object_lock: bool) -> Result<()> {
        let client = S3Client::new(&self.s3_config(bucket))?;
        block_on(client.create_bucket(object_lock))?
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL and wait: the store becomes unreachable at once.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What it leaves on disk: its directory, and the gRPC sockets weed always puts in /tmp
    /// (named by port; no flag moves them). Removed on drop.
    pub fn files(&self) -> Vec<PathBuf> {
        let b = self.base_port + 10_000;
        let mut files = vec![self.dir.clone()];
        for (name, port) in [("master-grpc", b), ("volume-grpc", b + 1), ("filer-grpc", b + 2), ("s3-grpc", b + 3)] {
            files.push(PathBuf::from(format!("/tmp/seaweedfs-{name}-{port}.sock")));
        }
        files
    }
}

/// Removes what [`Seaweed::files`] names.
pub fn remove_files(files: &[PathBuf]) {
    for f in files {
        if f.is_dir() {
            let _ = std::fs::remove_dir_all(f);
        } else {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// Runs `f` to completion on a runtime of its own, on a thread of its own: callable from
/// anywhere, inside an async runtime included (tests).
fn block_on<F: std::future::Future + Send>(f: F) -> Result<F::Output>
where
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::io("start a runtime", e))?;
            Ok(rt.block_on(f))
        })
        .join()
        .map_err(|_| Error::Config("the SeaweedFS helper thread panicked".into()))?
    })
}

impl Drop for Seaweed {
    fn drop(&mut self) {
        self.kill();
        remove_files(&self.files());
    }
}
