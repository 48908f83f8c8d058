//! The few S3 requests the object store needs, signed by `rusty-s3` (SigV4 presigned URLs
//! whose signature covers the extra headers we send) and sent with `reqwest`:
//! conditional PUTs (`If-None-Match: *`, `If-Match`), Object Lock headers on PUT, GET,
//! ListObjectsV2, legal hold, and the bucket's Object Lock configuration.
//!
//! Errors never carry credentials: a signed URL holds a signature, so no URL is ever put in a
//! message, only the object key's role and the HTTP status.

use std::time::Duration;

use reqwest::StatusCode;
use rusty_s3::actions::{ListObjectsV2, S3Action};
use rusty_s3::{Bucket, Credentials, UrlStyle};

use crate::error::{Error, Result};

/// How long a signed request stays valid: it is sent at once, so this only has to cover
/// clock skew and a slow request.
const SIGNED_FOR: Duration = Duration::from_secs(300);

/// Object Lock retention mode. Only COMPLIANCE is written (nobody, not even the root
/// account, can shorten it); GOVERNANCE is read back when a bucket holds it.
pub const COMPLIANCE: &str = "COMPLIANCE";

/// Where the bucket is and who we are.
#[derive(Clone)]
pub struct S3Config {
    /// e.g. `http://127.0.0.1:8333` or `https://s3.eu-west-1.amazonaws.com`.
    pub endpoint: url::Url,
    pub bucket: String,
    pub region: String,
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    pub session_token: Option<String>,
    /// Per request, connection included.
    pub timeout: Duration,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys.
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint.as_str())
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl S3Config {
    /// Credentials and region from the standard variables: `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION` (or `AWS_DEFAULT_REGION`;
    /// `us-east-1` when neither is set).
    pub fn from_env(endpoint: url::Url, bucket: impl Into<String>) -> S3Config {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        S3Config {
            endpoint,
            bucket: bucket.into(),
            region: var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION")).unwrap_or_else(|| "us-east-1".into()),
            access_key: var("AWS_ACCESS_KEY_ID"),
            secret_key: var("AWS_SECRET_ACCESS_KEY"),
            session_token: var("AWS_SESSION_TOKEN"),
            timeout: Duration::from_secs(30),
        }
    }
}

/// Object Lock settings for one PUT.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    /// `If-None-Match: *`: only if no object has this key.
    pub if_none_match: bool,
    /// `If-Match: ETAG`: only if the object's current ETag is this one.
    pub if_match: Option<String>,
    /// COMPLIANCE retention until this RFC 3339 instant.
    pub retain_until: Option<String>,
    /// Legal hold ON at write time.
    pub legal_hold: bool,
}

/// What a conditional PUT did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Put {
    Written {
        etag: Option<String>,
    },
    /// The condition failed (412, or 409 when a conditional write raced another).
    PreconditionFailed,
}

/// An object read back.
#[derive(Debug, Clone)]
pub struct Object {
    pub body: Vec<u8>,
    pub etag: Option<String>,
}

/// One page of a listing.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub keys: Vec<String>,
    /// The size of each of `keys`, in bytes.
    pub sizes: Vec<u64>,
    pub prefixes: Vec<String>,
    pub next: Option<String>,
}

pub struct S3Client {
    bucket: Bucket,
    credentials: Option<Credentials>,
    http: reqwest::Client,
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Store(format!("object store unreachable ({what}): {e}"))
}

fn refused(what: &str, status: StatusCode, body: &str) -> Error {
    // S3 error bodies are XML with a Code element; keep only that, never the echoed request.
    let code = body.split("<Code>").nth(1).and_then(|s| s.split("</Code>").next()).unwrap_or("");
    let code: String = code.chars().filter(|c| c.is_ascii_alphanumeric()).take(64).collect();
    Error::Store(format!("object store refused {what}: HTTP {status} {code}"))
}

impl S3Client {
    pub fn new(config: &S3Config) -> Result<S3Client> {
        let bucket = Bucket::new(config.endpoint.clone(), UrlStyle::Path, config.bucket.clone(), config.region.clone())
            .map_err(|e| Error::Config(format!("object store endpoint or bucket name: {e}")))?;
        let credentials = match (&config.access_key, &config.secret_key) {
            (Some(k), Some(s)) => Some(match &config.session_token {
                Some(t) => Credentials::new_with_token(k.clone(), s.clone(), t.clone()),
                None => Credentials::new(k.clone(), s.clone()),
            }),
            (None, None) => None,
            _ => return Err(Error::Config("set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither".into())),
        };
        let tls = tls_config()?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("verbatim-receiver/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Config(format!("object store HTTP client: {e}")))?;
        Ok(S3Client { bucket, credentials, http })
    }

    pub fn bucket_name(&self) -> &str {
        self.bucket.name()
    }

    fn creds(&self) -> Option<&Credentials> {
        self.credentials.as_ref()
    }

    async fn send(&self, what: &str, req: reqwest::RequestBuilder) -> Result<(StatusCode, reqwest::header::HeaderMap, Vec<u8>)> {
        let resp = req.send().await.map_err(|e| unavailable(what, without_url(e)))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(|e| unavailable(what, without_url(e)))?.to_vec();
        if status.is_server_error() {
            // 500/503 from the store: retryable, the same as unreachable to our callers.
            return Err(unavailable(what, format!("HTTP {status}")));
        }
        Ok((status, headers, body))
    }

    /// PUT `key` with `options`. Object Lock headers and conditions are signed.
    pub async fn put(&self, key: &str, body: Vec<u8>, options: &PutOptions) -> Result<Put> {
        let mut action = self.bucket.put_object(self.creds(), key);
        let mut headers: Vec<(&str, String)> = Vec::new();
        if options.if_none_match {
            headers.push(("if-none-match", "*".into()));
        }
        if let Some(etag) = &options.if_match {
            headers.push(("if-match", etag.clone()));
        }
        if let Some(until) = &options.retain_until {
            headers.push(("x-amz-object-lock-mode", COMPLIANCE.into()));
            headers.push(("x-amz-object-lock-retain-until-date", until.clone()));
        }
        if options.legal_hold {
            headers.push(("x-amz-object-lock-legal-hold", "ON".into()));
        }
        if options.retain_until.is_some() || options.legal_hold {
            // Object Lock PUTs must carry an integrity checksum (Content-MD5 on every S3).
            headers.push(("content-md5", md5_base64(&body)));
        }
        for (k, v) in &headers {
            action.headers_mut().insert(*k, v.clone());
        }
        let url = action.sign(SIGNED_FOR);
        let mut req = self.http.put(url).body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let (status, headers, body) = self.send("write", req).await?;
        match status {
            s if s.is_success() => Ok(Put::Written { etag: etag_of(&headers) }),
            StatusCode::PRECONDITION_FAILED | StatusCode::CONFLICT => Ok(Put::PreconditionFailed),
            s => Err(refused("a write", s, &String::from_utf8_lossy(&body))),
        }
    }

    /// GET `key`; `None` when there is no such object.
    pub async fn get(&self, key: &str) -> Result<Option<Object>> {
        let url = self.bucket.get_object(self.creds(), key).sign(SIGNED_FOR);
        let (status, headers, body) = self.send("read", self.http.get(url)).await?;
        match status {
            s if s.is_success() => Ok(Some(Object { body, etag: etag_of(&headers) })),
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(refused("a read", s, &String::from_utf8_lossy(&body))),
        }
    }

    /// GET one version of `key`; `None` when there is no such version.
    pub async fn get_version(&self, key: &str, version: &str) -> Result<Option<Object>> {
        let mut action = self.bucket.get_object(self.creds(), key);
        action.query_mut().insert("versionId", version.to_string());
        let url = action.sign(SIGNED_FOR);
        let (status, headers, body) = self.send("read", self.http.get(url)).await?;
        match status {
            s if s.is_success() => Ok(Some(Object { body, etag: etag_of(&headers) })),
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(refused("a read", s, &String::from_utf8_lossy(&body))),
        }
    }

    /// One page of keys under `prefix` (after `start_after`, or from a continuation token),
    /// grouped at `delimiter` when given.
    pub async fn list(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        start_after: Option<&str>,
        continuation: Option<&str>,
    ) -> Result<Listing> {
        let mut action = ListObjectsV2::new(&self.bucket, self.creds());
        action.with_prefix(prefix);
        if let Some(d) = delimiter {
            action.with_delimiter(d);
        }
        if let Some(s) = start_after {
            action.with_start_after(s);
        }
        if let Some(c) = continuation {
            action.with_continuation_token(c);
        }
        let url = action.sign(SIGNED_FOR);
        let (status, _, body) = self.send("list", self.http.get(url)).await?;
        let text = String::from_utf8_lossy(&body);
        if !status.is_success() {
            return Err(refused("a listing", status, &text));
        }
        let parsed = ListObjectsV2::parse_response(&text)
            .map_err(|e| Error::Store(format!("object store listing is not valid ListObjectsV2 XML: {e}")))?;
        Ok(Listing {
            sizes: parsed.contents.iter().map(|c| c.size.unwrap_or(0)).collect(),
            keys: parsed.contents.into_iter().map(|c| c.key).collect(),
            prefixes: parsed.common_prefixes.into_iter().map(|p| p.prefix).collect(),
            next: parsed.next_continuation_token,
        })
    }

    /// Every key under `prefix`, in key order (all pages).
    pub async fn list_all(&self, prefix: &str, start_after: Option<&str>) -> Result<Vec<String>> {
        let mut keys = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let page = self.list(prefix, None, start_after, next.as_deref()).await?;
            keys.extend(page.keys);
            match page.next {
                Some(n) => next = Some(n),
                None => return Ok(keys),
            }
        }
    }

    /// How many objects there are under `prefix`, and their bytes (all pages).
    pub async fn usage(&self, prefix: &str) -> Result<(u64, u64)> {
        let (mut objects, mut bytes) = (0u64, 0u64);
        let mut next: Option<String> = None;
        loop {
            let page = self.list(prefix, None, None, next.as_deref()).await?;
            objects += page.keys.len() as u64;
            bytes += page.sizes.iter().sum::<u64>();
            match page.next {
                Some(n) => next = Some(n),
                None => return Ok((objects, bytes)),
            }
        }
    }

    /// Every common prefix under `prefix` at `/` (all pages).
    pub async fn list_prefixes(&self, prefix: &str) -> Result<Vec<String>> {
        let mut prefixes = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let page = self.list(prefix, Some("/"), None, next.as_deref()).await?;
            prefixes.extend(page.prefixes);
            match page.next {
                Some(n) => next = Some(n),
                None => return Ok(prefixes),
            }
        }
    }

    /// Whether the bucket has Object Lock enabled (`GET ?object-lock`).
    pub async fn object_lock_enabled(&self) -> Result<bool> {
        let mut action = self.bucket.get_object(self.creds(), "");
        action.query_mut().insert("object-lock", "");
        let url = action.sign(SIGNED_FOR);
        let (status, _, body) = self.send("the bucket's Object Lock configuration", self.http.get(url)).await?;
        let text = String::from_utf8_lossy(&body);
        match status {
            s if s.is_success() => Ok(text.contains("<ObjectLockEnabled>Enabled</ObjectLockEnabled>")),
            StatusCode::NOT_FOUND if text.contains("NoSuchBucket") => {
                Err(Error::Config(format!("bucket {} does not exist", self.bucket.name())))
            }
            StatusCode::NOT_FOUND => Ok(false), // ObjectLockConfigurationNotFoundError
            s => Err(refused("reading the bucket's Object Lock configuration", s, &text)),
        }
    }

    /// Creates the bucket, with Object Lock when asked (tests, `verbatim` setup helpers).
    pub async fn create_bucket(&self, object_lock: bool) -> Result<()> {
        let mut action = self.bucket.create_bucket(
            self.credentials
                .as_ref()
                .ok_or_else(|| Error::Config("creating a bucket needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".into()))?,
        );
        if object_lock {
            action.headers_mut().insert("x-amz-bucket-object-lock-enabled", "true");
        }
        let body = action.body();
        let url = action.sign(SIGNED_FOR);
        let mut req = self.http.put(url).body(body);
        if object_lock {
            req = req.header("x-amz-bucket-object-lock-enabled", "true");
        }
        let (status, _, body) = self.send("create the bucket", req).await?;
        if status.is_success() { Ok(()) } else { Err(refused("creating the bucket", status, &String::from_utf8_lossy(&body))) }
    }

    /// Puts (`on`) or releases a legal hold on `key`.
    pub async fn put_legal_hold(&self, key: &str, on: bool) -> Result<()> {
        let body = format!(
            "<LegalHold xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Status>{}</Status></LegalHold>",
            if on { "ON" } else { "OFF" }
        )
        .into_bytes();
        let md5 = md5_base64(&body);
        let mut action = self.bucket.put_object(self.creds(), key);
        action.query_mut().insert("legal-hold", "");
        action.headers_mut().insert("content-md5", md5.clone());
        let url = action.sign(SIGNED_FOR);
        let (status, _, resp) = self.send("legal hold", self.http.put(url).header("content-md5", md5).body(body)).await?;
        if status.is_success() { Ok(()) } else { Err(refused("the legal hold", status, &String::from_utf8_lossy(&resp))) }
    }

    /// The legal hold status of `key` (`ON`/`OFF`), `None` when the object has none.
    pub async fn legal_hold(&self, key: &str) -> Result<Option<String>> {
        let mut action = self.bucket.get_object(self.creds(), key);
        action.query_mut().insert("legal-hold", "");
        let url = action.sign(SIGNED_FOR);
        let (status, _, body) = self.send("legal hold", self.http.get(url)).await?;
        let text = String::from_utf8_lossy(&body);
        match status {
            s if s.is_success() => Ok(xml_value(&text, "Status")),
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(refused("reading the legal hold", s, &text)),
        }
    }

    /// The retention of `key`: (mode, retain-until), `None` when it has none.
    pub async fn retention(&self, key: &str) -> Result<Option<(String, String)>> {
        let mut action = self.bucket.get_object(self.creds(), key);
        action.query_mut().insert("retention", "");
        let url = action.sign(SIGNED_FOR);
        let (status, _, body) = self.send("retention", self.http.get(url)).await?;
        let text = String::from_utf8_lossy(&body);
        match status {
            s if s.is_success() => Ok(xml_value(&text, "Mode").zip(xml_value(&text, "RetainUntilDate"))),
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(refused("reading the retention", s, &text)),
        }
    }

    /// DELETE `key` (a version when given): the HTTP status. Used by tests to prove the lock.
    pub async fn delete(&self, key: &str, version: Option<&str>) -> Result<StatusCode> {
        let mut action = self.bucket.delete_object(self.creds(), key);
        if let Some(v) = version {
            action.query_mut().insert("versionId", v.to_string());
        }
        let url = action.sign(SIGNED_FOR);
        let resp = self.http.delete(url).send().await.map_err(|e| unavailable("delete", without_url(e)))?;
        Ok(resp.status())
    }

    /// The version id of the current version of `key` (HEAD), if the bucket versions it.
    pub async fn version_id(&self, key: &str) -> Result<Option<String>> {
        let url = self.bucket.head_object(self.creds(), key).sign(SIGNED_FOR);
        let (status, headers, _) = self.send("head", self.http.head(url)).await?;
        if !status.is_success() {
            return Ok(None);
        }
        Ok(headers.get("x-amz-version-id").and_then(|v| v.to_str().ok()).map(str::to_string))
    }
}

fn etag_of(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers.get(reqwest::header::ETAG).and_then(|v| v.to_str().ok()).map(str::to_string)
}

fn xml_value(text: &str, element: &str) -> Option<String> {
    let open = format!("<{element}>");
    let close = format!("</{element}>");
    let rest = text.split(&open).nth(1)?;
    Some(rest.split(&close).next()?.trim().to_string())
}

fn md5_base64(body: &[u8]) -> String {
    use base64::Engine as _;
    use md5::Digest as _;
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(body))
}

/// A reqwest error without the URL (a signed URL carries a signature).
fn without_url(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "response body failed"
    } else {
        "request failed"
    };
    let source = std::error::Error::source(&e).map(|s| format!(": {s}")).unwrap_or_default();
    // The source of a connect error names the socket address, never the URL's query.
    format!("{kind}{source}")
}

/// HTTPS to the store: the platform's trust store on the ring provider.
fn tls_config() -> Result<rustls::ClientConfig> {
    use rustls_platform_verifier::BuilderVerifierExt as _;
    rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(format!("object store TLS: {e}")))?
        .with_platform_verifier()
        .map_err(|e| Error::Tls(format!("object store TLS trust store: {e}")))
        .map(|b| b.with_no_client_auth())
}
