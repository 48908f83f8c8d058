//! World.

#[allow(unused_imports)]
use super::*;

/// Ends the test process when a test runs far longer than any test of the suite should (a
/// deadlock in a blocking lock cannot be interrupted by an async timeout). Disarmed on drop.
pub struct Watchdog {
    stop: Option<std::sync::mpsc::Sender<()>>,
}

impl Watchdog {
    pub const LIMIT: Duration = Duration::from_secs(120);

    pub fn arm(limit: Duration) -> Watchdog {
        let name = std::thread::current().name().unwrap_or("?").to_string();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                eprintln!("test {name} still running after {limit:?}: deadlock? ending the test process");
                std::process::exit(99);
            }
        });
        Watchdog { stop: Some(tx) }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// One test's world: temporary directories, an archive key, a receiver and a device token.
pub struct World {
    pub dir: TempDir,
    pub key: ArchiveKey,
    pub receiver: TestReceiver,
    /// A token for (TENANT, DEVICE), the identity the policy names.
    pub token: Secret,
    exports: AtomicUsize,
    /// The overrides of the policy last applied by [`World::device_with`], which
    /// [`World::reopen`] applies again as the app does at every start.
    overrides: std::sync::Mutex<Vec<(String, Value)>>,
    _watchdog: Watchdog,
}

impl World {
    pub async fn start() -> World {
        World::with_faults(FaultPlan::new()).await
    }

    pub async fn with_faults(plan: FaultPlan) -> World {
        let watchdog = Watchdog::arm(Watchdog::LIMIT);
        let dir = tempfile::tempdir().expect("temp dir");
        let key = ArchiveKey::generate();
        let receiver =
            TestReceiver::start(&dir.path().join("archive"), plan, AcceptedKeys::from_public_keys([&key.public])).await;
        let token = receiver.issue_token(TENANT, DEVICE);
        World { dir, key, receiver, token, exports: AtomicUsize::new(0), overrides: Default::default(), _watchdog: watchdog }
    }

    pub fn plan(&self) -> &FaultPlan {
        &self.receiver.plan
    }

    pub fn device_dir(&self) -> PathBuf {
        self.dir.path().join("device")
    }

    pub fn files_dir(&self) -> PathBuf {
        self.dir.path().join("files")
    }

    pub fn archive_dir(&self) -> PathBuf {
        self.receiver.data_dir.clone()
    }

    /// The sample policy pointed at this receiver: its URL, its CA, the device token, device id
    /// DEVICE and the smallest batches; `overrides` replace or add keys.
    pub fn policy(&self, overrides: &[(&str, Value)]) -> Value {
        self.policy_with_token(self.token.expose(), overrides)
    }

    pub fn policy_with_token(&self, token: &str, overrides: &[(&str, Value)]) -> Value {
        let mut all: Vec<(&str, Value)> = vec![
            ("device_id", s(DEVICE)),
            ("archive_ca_pem", s(self.receiver.ca_pem())),
            ("max_batch_kb", s(&BATCH_KB.to_string())),
        ];
        all.extend(overrides.iter().cloned());
        sample_policy(&self.receiver.url(), &self.key.public, token, &all)
    }

    /// Opens the device (system clock) and applies [`World::policy`] with `overrides`.
    pub async fn device(&self, overrides: &[(&str, Value)]) -> Agent {
        self.device_with(AgentOptions::default(), overrides).await
    }

    pub async fn device_with(&self, options: AgentOptions, overrides: &[(&str, Value)]) -> Agent {
        let agent = Agent::open(&self.device_dir(), options).expect("agent opens");
        agent.apply_policy(&self.policy(overrides)).await.expect("policy applies");
        *self.overrides.lock().unwrap() = overrides.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        agent
    }

    /// Restarts the app: opens the device's directory again (the policy in force is restored
    /// from it, without the token) and applies the same managed configuration, as the
    /// platform layer does at every start.
    pub async fn reopen(&self) -> Agent {
        let agent = Agent::open(&self.device_dir(), AgentOptions::default()).expect("agent reopens");
        assert!(agent.status().configured, "the stored policy is restored");
        let overrides = self.overrides.lock().unwrap().clone();
        let overrides: Vec<(&str, Value)> = overrides.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        agent.apply_policy(&self.policy(&overrides)).await.expect("policy applies again");
        agent
    }

    /// Captures a synthetic workload of `events` events on `agent`.
    pub async fn capture(&self, agent: &Agent, seed: u64, events: usize) -> Captured {
        capture_workload(agent, &self.files_dir(), seed, events).await
    }

    /// Captures at least 20 events of workload `seed`, and more until the queue needs more
    /// than `batches` batches of [`BATCH_KB`].
    pub async fn capture_batches(&self, agent: &Agent, seed: u64, batches: u64) -> Captured {
        capture_until(agent, &self.files_dir(), seed, 20, batches * BATCH_KB as u64 * 1024).await
    }

    /// The receiver's verification report (no key needed).
    pub fn verify(&self) -> Report {
        verbatim_receiver::verify(&self.archive_dir()).expect("verify runs")
    }

    /// Verification of a single, complete stream: ok, contiguous through `through`.
    pub fn assert_archive_complete(&self, through: u64) -> Report {
        let report = self.verify();
        assert!(report.ok(), "verify reports problems:\n{}", report.to_text());
        assert_eq!(report.streams.len(), 1, "{}", report.to_text());
        let s = &report.streams[0];
        assert_eq!(s.contiguous_through, through, "{}", report.to_text());
        assert_eq!(s.records, through, "every record held once: {}", report.to_text());
        report
    }

    /// Exports everything held with the archive private key into a fresh directory.
    pub fn export(&self) -> Exported {
        let n = self.exports.fetch_add(1, Ordering::SeqCst);
        let out = self.dir.path().join(format!("export-{n}"));
        export_archive(&self.archive_dir(), &self.key, &out)
    }

    /// Posts a batch with this world's device token, as a replaying attacker (or a confused
    /// device) would.
    pub async fn post_batch(&self, batch: &Batch) -> (u16, Json) {
        self.receiver.post_batch(self.token.expose(), batch).await
    }
}

pub fn s(v: &str) -> Value {
    Value::String(v.to_string())
}
