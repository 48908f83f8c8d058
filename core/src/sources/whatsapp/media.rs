//! Media bytes from the Graph API: a webhook names a media id; `GET {graph}/{media-id}` with the
//! access token answers a short-lived download URL (with the MIME type, size and SHA-256), and
//! a `GET` of that URL, with the same token, streams the bytes. They go to a file beside the
//! line's store only for as long as capture reads them (the agent seals attachments as it
//! streams them), and are checked against the announced SHA-256 first.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind, Result};
use crate::secret::Secret;

use super::payload::MediaRef;

/// Where media come from: the Graph API's base URL (with its version, e.g.
/// `https://graph.facebook.com/v23.0`) and the access token of the app.
pub struct Graph {
    http: reqwest::Client,
    base: url::Url,
    token: Secret,
}

/// Folder (in a line's data directory) that holds media while they are captured.
pub const INCOMING: &str = "incoming-media";

impl Graph {
    /// `ca_pem`: trust only these CAs (a test stand-in, a TLS-inspecting proxy); default: the
    /// OS trust store.
    pub fn new(base: url::Url, token: Secret, ca_pem: Option<&str>) -> Result<Graph> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match ca_pem {
            Some(pem) => {
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                    let cert = cert.map_err(|e| Error::new(ErrorKind::Tls, format!("Graph CA: {e}")))?;
                    roots.add(cert).map_err(|e| Error::new(ErrorKind::Tls, format!("Graph CA: {e}")))?;
                }
                if roots.is_empty() {
                    return Err(Error::new(ErrorKind::Tls, "the Graph CA file holds no certificate"));
                }
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| Error::new(ErrorKind::Tls, format!("Graph CA: {e}")))?
            }
            None => Arc::new(
                rustls_platform_verifier::Verifier::new(provider.clone())
                    .map_err(|e| Error::new(ErrorKind::Tls, format!("OS trust store: {e}")))?,
            ),
        };
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::new(ErrorKind::Tls, format!("TLS versions: {e}")))?
            .dangerous() // only to install the verifier chosen above, which validates fully
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .https_only(true)
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("verbatim/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::new(ErrorKind::Network, format!("HTTP client: {e}")))?;
        let mut base = base;
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        Ok(Graph { http, base, token })
    }

    /// Fetches `media` into a new file under `dir/incoming-media`, at most `max_bytes`.
    /// The error says what failed (status, size, digest), never the token or the bytes.
    pub async fn fetch(&self, media: &MediaRef, dir: &Path, max_bytes: u64) -> Result<PathBuf> {
        let net = |what: &str, e: reqwest::Error| Error::new(ErrorKind::Network, format!("media {}: {what}: {e}", media.id));
        let url =
            self.base.join(&media.id).map_err(|_| Error::new(ErrorKind::Rejected, "the media id does not make a Graph URL"))?;
        let info = self.http.get(url).bearer_auth(self.token.expose()).send().await.map_err(|e| net("lookup", e))?;
        if !info.status().is_success() {
            return Err(Error::new(ErrorKind::Network, format!("media {}: the Graph API answered {}", media.id, info.status())));
        }
        let info = info.bytes().await.map_err(|e| net("lookup answer", e))?;
        let info: serde_json::Value = serde_json::from_slice(&info)
            .map_err(|_| Error::new(ErrorKind::Rejected, format!("media {}: the Graph API answer is not JSON", media.id)))?;
        let Some(download) = info.get("url").and_then(|u| u.as_str()).and_then(|u| url::Url::parse(u).ok()) else {
            return Err(Error::new(ErrorKind::Rejected, format!("media {}: the Graph API gave no download URL", media.id)));
        };
        if info.get("file_size").and_then(|s| s.as_u64()).is_some_and(|s| s > max_bytes) {
            return Err(Error::new(ErrorKind::Rejected, format!("media {}: larger than max_attachment_mb", media.id)));
        }
        let mut response =
            self.http.get(download).bearer_auth(self.token.expose()).send().await.map_err(|e| net("download", e))?;
        if !response.status().is_success() {
            return Err(Error::new(
                ErrorKind::Network,
                format!("media {}: the download answered {}", media.id, response.status()),
            ));
        }
        let folder = dir.join(INCOMING);
        std::fs::create_dir_all(&folder).map_err(|e| Error::new(ErrorKind::Storage, format!("{}: {e}", folder.display())))?;
        let mut name = [0u8; 16];
        getrandom::fill(&mut name).map_err(|e| Error::new(ErrorKind::Internal, format!("randomness: {e}")))?;
        let path = folder.join(hex::encode(name));
        let result = async {
            let mut file =
                std::fs::File::create(&path).map_err(|e| Error::new(ErrorKind::Storage, format!("{}: {e}", path.display())))?;
            let (mut hasher, mut size) = (Sha256::new(), 0u64);
            while let Some(chunk) = response.chunk().await.map_err(|e| net("download", e))? {
                size += chunk.len() as u64;
                if size > max_bytes {
                    return Err(Error::new(ErrorKind::Rejected, format!("media {}: larger than max_attachment_mb", media.id)));
                }
                hasher.update(&chunk);
                file.write_all(&chunk).map_err(|e| Error::new(ErrorKind::Storage, format!("{}: {e}", path.display())))?;
            }
            let digest = hasher.finalize();
            let announced = info.get("sha256").and_then(|s| s.as_str()).map(str::to_string).or(media.sha256.clone());
            if let Some(want) = announced
                && !digest_matches(&digest, &want)
            {
                return Err(Error::new(ErrorKind::Corrupt, format!("media {}: the bytes do not match their SHA-256", media.id)));
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => Ok(path),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }
}

/// Meta writes a media SHA-256 as hex in the Graph answer and as base64 in webhooks.
fn digest_matches(digest: &[u8], announced: &str) -> bool {
    let announced = announced.trim();
    hex::encode(digest).eq_ignore_ascii_case(announced)
        || base64::engine::general_purpose::STANDARD.encode(digest) == announced
        || base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest) == announced.trim_end_matches('=')
}

/// Removes media files a crash left behind (they were never acknowledged: Meta delivers the
/// webhook again and the media are fetched again).
pub fn clear_incoming(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir.join(INCOMING));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_match_in_hex_or_base64() {
        let d = Sha256::digest(b"bytes");
        assert!(digest_matches(&d, &hex::encode(d)));
        assert!(digest_matches(&d, &hex::encode(d).to_uppercase()));
        assert!(digest_matches(&d, &base64::engine::general_purpose::STANDARD.encode(d)));
        assert!(!digest_matches(&d, &hex::encode(Sha256::digest(b"other"))));
    }
}
