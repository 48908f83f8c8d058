//! Receiver.

#[allow(unused_imports)]
use super::*;

/// A reference receiver with a self-signed CA and a fault plan, that can be stopped and started
/// again on the same address and data directory.
pub struct TestReceiver {
    running: Option<RunningReceiver>,
    pub plan: FaultPlan,
    pub data_dir: PathBuf,
    /// The archive keys it accepts epochs for.
    archive_keys: AcceptedKeys,
    addr: SocketAddr,
    ca_pem: String,
}

impl TestReceiver {
    /// Starts on 127.0.0.1 with a free port, accepting epochs sealed to `archive_keys`.
    pub async fn start(data_dir: &Path, plan: FaultPlan, archive_keys: AcceptedKeys) -> TestReceiver {
        Self::start_at(data_dir, plan, archive_keys, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    async fn start_at(data_dir: &Path, plan: FaultPlan, archive_keys: AcceptedKeys, addr: SocketAddr) -> TestReceiver {
        let running = Self::launch(data_dir, &plan, &archive_keys, addr).await;
        TestReceiver {
            archive_keys,
            addr: running.addr(),
            ca_pem: running.ca_pem().expect("self-signed receiver has a CA").to_string(),
            running: Some(running),
            plan,
            data_dir: data_dir.to_path_buf(),
        }
    }

    async fn launch(data_dir: &Path, plan: &FaultPlan, archive_keys: &AcceptedKeys, addr: SocketAddr) -> RunningReceiver {
        let mut cfg = ReceiverConfig::local_self_signed(data_dir, archive_keys.clone());
        cfg.listen = addr;
        cfg.faults = Some(plan.clone());
        // Requests held by a Delay fault must not hold a test's end for the default 5 s.
        cfg.limits.shutdown_grace = Duration::from_millis(300);
        Receiver::start(cfg).await.expect("receiver starts")
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The private CA (PEM) devices trust.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The server certificate the receiver presents (PEM), from its data directory.
    pub fn server_cert_pem(&self) -> String {
        std::fs::read_to_string(self.data_dir.join(verbatim_receiver::tls::SERVER_CERT_FILE)).expect("server-cert.pem")
    }

    /// The server's private key (PEM), from its data directory.
    pub fn server_key_pem(&self) -> String {
        std::fs::read_to_string(self.data_dir.join(verbatim_receiver::tls::SERVER_KEY_FILE)).expect("server-key.pem")
    }

    pub fn tokens_file(&self) -> PathBuf {
        self.data_dir.join("tokens.jsonl")
    }

    /// Issues a device token for (`tenant`, `device`) in this receiver's token file.
    pub fn issue_token(&self, tenant: &str, device: &str) -> Secret {
        verbatim_receiver::add_device(&self.tokens_file(), tenant, device).expect("token issued")
    }

    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Graceful shutdown: everything acknowledged is on disk when this returns.
    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }

    /// Stops, then starts again on the same address and data directory (same CA, same tokens,
    /// same store).
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start_again().await;
    }

    /// Starts a stopped receiver again on its address and data directory.
    pub async fn start_again(&mut self) {
        assert!(self.running.is_none(), "the receiver is running");
        let running = Self::launch(&self.data_dir, &self.plan, &self.archive_keys, self.addr).await;
        assert_eq!(running.addr(), self.addr, "restarted on the same address");
        assert_eq!(running.ca_pem(), Some(self.ca_pem.as_str()), "the CA is kept across restarts");
        self.running = Some(running);
    }

    /// Stops, then starts again accepting `archive_keys` (the operator added or retired a key).
    pub async fn restart_accepting(&mut self, archive_keys: AcceptedKeys) {
        self.stop().await;
        self.archive_keys = archive_keys;
        self.start_again().await;
    }

    /// An HTTPS client trusting only this receiver's CA, for requests a device would not make.
    pub fn client(&self) -> reqwest::Client {
        let tls = verbatim_receiver::tls::client_config(&self.ca_pem).expect("client TLS config");
        reqwest::Client::builder().tls_backend_preconfigured(tls).build().expect("client")
    }

    /// Posts `batch` with `token`; returns the status and the body.
    pub async fn post_batch(&self, token: &str, batch: &Batch) -> (u16, Json) {
        let resp = self
            .client()
            .post(format!("{}/v1/batches", self.url()))
            .bearer_auth(token)
            .header("content-type", CONTENT_TYPE)
            .body(batch.encode())
            .send()
            .await
            .expect("request sent");
        let status = resp.status().as_u16();
        let body = resp.text().await.expect("answer body");
        (status, serde_json::from_str(&body).unwrap_or_else(|e| panic!("answer is not JSON ({e}): {body}")))
    }
}
