//! Upload.

#[allow(unused_imports)]
use super::*;

pub(crate) type Hook = Box<dyn FnOnce() + Send>;

/// The uploader's waits, recorded instead of slept. Optionally moves a manual clock by each
/// wait, never returns (to freeze a session at its first wait until the test kills it), or
/// runs a hook at the first wait (to act between two attempts).
pub struct RecordingPause {
    delays: Mutex<Vec<Duration>>,
    clock: Option<ManualClock>,
    hang: bool,
    hook: Mutex<Option<Hook>>,
    paused: tokio::sync::watch::Sender<usize>,
}

impl RecordingPause {
    fn build(clock: Option<ManualClock>, hang: bool, hook: Option<Hook>) -> Arc<RecordingPause> {
        Arc::new(RecordingPause {
            delays: Mutex::new(Vec::new()),
            clock,
            hang,
            hook: Mutex::new(hook),
            paused: tokio::sync::watch::channel(0).0,
        })
    }

    /// Records each wait and returns at once.
    pub fn instant() -> Arc<RecordingPause> {
        Self::build(None, false, None)
    }

    /// Records each wait, advances `clock` by it, and returns at once.
    pub fn advancing(clock: ManualClock) -> Arc<RecordingPause> {
        Self::build(Some(clock), false, None)
    }

    /// Records the wait and never returns: the session stays there until its task is aborted.
    pub fn hanging() -> Arc<RecordingPause> {
        Self::build(None, true, None)
    }

    /// Runs `hook` at the first wait, then returns at once (and at once for later waits).
    pub fn with_hook(hook: impl FnOnce() + Send + 'static) -> Arc<RecordingPause> {
        Self::build(None, false, Some(Box::new(hook)))
    }

    pub fn delays(&self) -> Vec<Duration> {
        self.delays.lock().unwrap().clone()
    }

    /// Resolves once the uploader has asked for at least `n` waits.
    pub async fn wait_paused(&self, n: usize) {
        let mut rx = self.paused.subscribe();
        let _ = rx.wait_for(|v| *v >= n).await;
    }
}

impl Pause for RecordingPause {
    fn pause(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        self.delays.lock().unwrap().push(duration);
        if let Some(clock) = &self.clock {
            clock.advance(duration.as_millis() as i64);
        }
        if let Some(hook) = self.hook.lock().unwrap().take() {
            hook();
        }
        self.paused.send_modify(|n| *n += 1);
        if self.hang { Box::pin(std::future::pending()) } else { Box::pin(std::future::ready(())) }
    }
}

/// Upload options on an unmetered network with `pause`.
pub fn upload_options(deadline: Duration, pause: Arc<RecordingPause>) -> UploadOptions {
    UploadOptions { deadline, network: NetworkState::Unmetered, pause }
}

/// One upload session (30 s deadline, unmetered, waits recorded and skipped).
pub async fn upload_once(agent: &Agent) -> UploadReport {
    agent.upload(upload_options(Duration::from_secs(30), RecordingPause::instant())).await
}

/// Upload sessions until one reports `Done` (at most `sessions`); panics on an error.
pub async fn upload_until_done(agent: &Agent, sessions: usize) -> Vec<UploadReport> {
    let mut reports = Vec::new();
    for _ in 0..sessions {
        let r = upload_once(agent).await;
        assert_ne!(r.stopped, StopReason::Error, "upload failed: {r:?}\nstatus: {:?}", agent.status().upload);
        let done = r.stopped == StopReason::Done;
        reports.push(r);
        if done {
            let status = agent.status();
            assert_eq!(status.queue_records, 0, "Done leaves the queue empty");
            assert_eq!(status.acked_through, status.last_seq);
            return reports;
        }
    }
    panic!("no session finished within {sessions} sessions: {reports:#?}");
}

/// Sums of a session list.
pub fn total_duplicates(reports: &[UploadReport]) -> u64 {
    reports.iter().map(|r| r.duplicates).sum()
}

pub fn total_retries(reports: &[UploadReport]) -> u32 {
    reports.iter().map(|r| r.retries).sum()
}

/// The policy's pin format: base64 of SHA-256 of a SubjectPublicKeyInfo.
pub fn pin_of_spki(spki_der: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(spki_der))
}

/// A pin for a key nobody uses.
pub fn unrelated_pin() -> String {
    use rcgen::PublicKeyData;
    pin_of_spki(&rcgen::KeyPair::generate().expect("key").subject_public_key_info())
}

/// A pin computed from a private key (PEM), independently of the core's certificate parser.
pub fn pin_of_key_pem(key_pem: &str) -> String {
    use rcgen::PublicKeyData;
    pin_of_spki(&rcgen::KeyPair::from_pem(key_pem).expect("key PEM").subject_public_key_info())
}

/// A pin of the first certificate of a PEM text (its SubjectPublicKeyInfo), via the core's parser.
pub fn pin_of_cert_pem(pem: &str) -> String {
    let der = pem_to_der(pem);
    let spki = verbatim_core::upload::tls::spki_sha256(&der).expect("certificate parses");
    base64::engine::general_purpose::STANDARD.encode(spki)
}

pub(crate) fn pem_to_der(pem: &str) -> Vec<u8> {
    let b64: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD.decode(b64.trim()).expect("PEM base64")
}

/// A CA certificate (PEM) that never signed anything the receiver presents.
pub fn unrelated_ca_pem() -> String {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(rcgen::DnType::CommonName, "Some other private CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.self_signed(&key).expect("CA certificate").pem()
}
