//! The HTTPS client side of the upload API (docs/upload-api.md): one request, one typed answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};
use crate::policy::Policy;
use crate::wire::{ApiError, BatchAck, CONTENT_TYPE, Cursor};

/// What the archive answered, as the uploader must act on it.
#[derive(Debug)]
pub enum Answer<T> {
    Ok(T),
    /// 409 gap: the archive expects this sequence number next.
    Gap {
        expected_seq: u64,
    },
    /// Worth another try later: 429, 5xx, timeouts, dropped connections, unreadable answers.
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// 413: the archive takes smaller batches.
    TooLarge,
    /// Needs a person: credentials, tenant, conflicting data, malformed request, TLS trust.
    Permanent(Error),
}

pub struct Client {
    http: reqwest::Client,
    base: url::Url,
    token: crate::secret::Secret,
    pin_mismatch: Arc<AtomicBool>,
}

impl Client {
    pub fn new(policy: &Policy) -> Result<Client> {
        let (tls, pin_mismatch) = super::tls::client_config(policy)?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .https_only(true)
            .connect_timeout(Duration::from_secs(15))
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("verbatim/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::new(ErrorKind::Network, format!("HTTP client: {e}")))?;
        let mut base = policy.archive_url.clone();
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        Ok(Client { http, base, token: policy.device_token.clone(), pin_mismatch })
    }

    fn url(&self, path: &str) -> Result<url::Url> {
        self.base.join(path).map_err(|e| Error::new(ErrorKind::Internal, format!("archive URL: {e}")))
    }

    /// Sends an encoded batch ([`crate::wire::Batch::encode`]).
    pub async fn post_batch(&self, body: Vec<u8>, timeout: Duration) -> Answer<BatchAck> {
        let url = match self.url("v1/batches") {
            Ok(u) => u,
            Err(e) => return Answer::Permanent(e),
        };
        let request = self
            .http
            .post(url)
            .bearer_auth(self.token.expose())
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .timeout(timeout)
            .body(body);
        self.answer(request).await
    }

    pub async fn cursor(&self, stream: &str, timeout: Duration) -> Answer<Cursor> {
        let url = match self.url(&format!("v1/streams/{stream}/cursor")) {
            Ok(u) => u,
            Err(e) => return Answer::Permanent(e),
        };
        self.answer(self.http.get(url).bearer_auth(self.token.expose()).timeout(timeout)).await
    }

    async fn answer<T: serde::de::DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> Answer<T> {
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return self.transport_failure(e),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s.min(3600)));
        let body = match response.bytes().await {
            Ok(b) => b,
            Err(e) => return Answer::Retry { reason: format!("answer cut off: {}", describe(&e)), retry_after },
        };
        if status == 200 {
            return match serde_json::from_slice::<T>(&body) {
                Ok(v) => Answer::Ok(v),
                Err(_) => Answer::Retry { reason: "unreadable answer from the archive".into(), retry_after },
            };
        }
        let api: Option<ApiError> = serde_json::from_slice(&body).ok();
        let reason = api.as_ref().map(|a| format!("{}: {}", a.error, a.reason)).unwrap_or_else(|| format!("HTTP {status}"));
        match status {
            409 if api.as_ref().is_some_and(|a| a.error == "gap") => match api.and_then(|a| a.expected_seq) {
                Some(expected_seq) => Answer::Gap { expected_seq },
                None => Answer::Permanent(Error::new(ErrorKind::Rejected, format!("archive: {reason}, without expected_seq"))),
            },
            409 => Answer::Permanent(Error::new(ErrorKind::Conflict, format!("archive refused the batch: {reason}"))),
            422 if api.as_ref().is_some_and(|a| a.error == "unknown_archive_key") => {
                // Echoed by the archive: shown only as a plain short id.
                let id: String = api
                    .and_then(|a| a.archive_key_id)
                    .unwrap_or_default()
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                    .take(64)
                    .collect();
                Answer::Permanent(Error::new(
                    ErrorKind::UnknownArchiveKey,
                    format!(
                        "the archive does not accept archive key id {id}: the records are sealed to a key it does not hold \
                         (check archive_public_key in the managed configuration); every record is kept"
                    ),
                ))
            }
            401 | 403 => Answer::Permanent(Error::new(
                ErrorKind::Unauthorized,
                format!("archive refused the credentials ({status}): {reason}"),
            )),
            413 => Answer::TooLarge,
            400..=499 if status != 408 && status != 429 => {
                Answer::Permanent(Error::new(ErrorKind::Rejected, format!("archive refused the request ({status}): {reason}")))
            }
            _ => Answer::Retry { reason: format!("archive answered {status} ({reason})"), retry_after },
        }
    }

    fn transport_failure<T>(&self, e: reqwest::Error) -> Answer<T> {
        if self.pin_mismatch.swap(false, Ordering::SeqCst) {
            return Answer::Permanent(Error::new(
                ErrorKind::PinMismatch,
                format!(
                    "the archive's certificate does not match the policy's tls_pins ({})",
                    self.base.host_str().unwrap_or("?")
                ),
            ));
        }
        let text = describe(&e);
        if text.contains("certificate") || text.contains("UnknownIssuer") || text.contains("invalid peer") {
            return Answer::Permanent(Error::new(ErrorKind::Tls, format!("the archive's certificate is not trusted: {text}")));
        }
        Answer::Retry { reason: format!("connection failed: {text}"), retry_after: None }
    }
}

/// The error and its causes on one line (reqwest's Display alone hides the cause). URLs carry
/// no secrets here: the token goes in a header, never in the URL.
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
