//! TLS for the receiver: rustls with the ring provider only (aws-lc-rs needs cmake and a long
//! C build). Certificates come from PEM files, or `--self-signed` makes a private CA and a
//! server certificate for 127.0.0.1 / ::1 / localhost once, in the data directory, and reuses
//! them after a restart so that devices trusting `ca.pem` keep trusting the receiver.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Error, Result};
use crate::fsutil;

pub const CA_FILE: &str = "ca.pem";
pub const SERVER_CERT_FILE: &str = "server-cert.pem";
pub const SERVER_KEY_FILE: &str = "server-key.pem";

/// Where the server's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// A private CA and server certificate kept in the data directory (made on first start).
    SelfSigned,
    /// A PEM certificate chain and its PEM private key.
    Files { cert: PathBuf, key: PathBuf },
}

/// The self-signed material in a data directory.
#[derive(Debug, Clone)]
pub struct SelfSigned {
    pub ca_path: PathBuf,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// The CA certificate, PEM: what a policy's `archive_ca_pem` holds.
    pub ca_pem: String,
}

/// The ring provider, the only one this crate uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_err(what: &str) -> impl FnOnce(rcgen::Error) -> Error + '_ {
    move |e| Error::Tls(format!("{what}: {e}"))
}

/// Returns the self-signed CA and server certificate in `data_dir`, making them if absent.
pub fn ensure_self_signed(data_dir: &Path) -> Result<SelfSigned> {
    fsutil::create_private_dir(data_dir)?;
    let ca_path = data_dir.join(CA_FILE);
    let cert_path = data_dir.join(SERVER_CERT_FILE);
    let key_path = data_dir.join(SERVER_KEY_FILE);
    let present = [&ca_path, &cert_path, &key_path].iter().filter(|p| p.exists()).count();
    if present == 0 {
        generate(&ca_path, &cert_path, &key_path)?;
    } else if present != 3 {
        return Err(Error::Tls(format!(
            "{} holds only some of {CA_FILE}, {SERVER_CERT_FILE}, {SERVER_KEY_FILE}; remove them to make new ones \
             (devices must then trust the new {CA_FILE})",
            data_dir.display()
        )));
    }
    let ca_pem = std::fs::read_to_string(&ca_path).map_err(|e| Error::io_path("read", &ca_path, e))?;
    Ok(SelfSigned { ca_path, cert_path, key_path, ca_pem })
}

fn generate(ca_path: &Path, cert_path: &Path, key_path: &Path) -> Result<()> {
    let ca_key = KeyPair::generate().map_err(tls_err("CA key"))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(tls_err("CA"))?;
    ca_params.distinguished_name.push(DnType::CommonName, "Verbatim receiver private CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(tls_err("CA certificate"))?;
    // The CA's private key is never written: nothing else will ever be signed with it.
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().map_err(tls_err("server key"))?;
    let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()])
        .map_err(tls_err("server certificate"))?;
    params.distinguished_name.push(DnType::CommonName, "localhost");
    params.is_ca = IsCa::NoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&server_key, &issuer).map_err(tls_err("server certificate"))?;

    // Key first: a crash part-way leaves an incomplete set, which the next start names.
    fsutil::write_private_new(key_path, server_key.serialize_pem().as_bytes())?;
    fsutil::write_public_new(cert_path, cert.pem().as_bytes())?;
    fsutil::write_public_new(ca_path, ca_cert.pem().as_bytes())?;
    Ok(())
}

/// A server configuration from PEM files (HTTP/1.1 over TLS 1.2 or 1.3).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| Error::Tls(format!("{}: {e}", cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Tls(format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(Error::Tls(format!("{} holds no certificate", cert.display())));
    }
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| Error::Tls(format!("{}: no usable private key ({e})", key.display())))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::Tls(format!("certificate and key do not fit: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client configuration trusting only the CA(s) in `ca_pem`, with the ring provider: what a
/// test (or the demo's device) needs to talk to a self-signed receiver.
pub fn client_config(ca_pem: &str) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| Error::Tls(format!("CA PEM: {e}")))?;
        roots.add(cert).map_err(|e| Error::Tls(format!("CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(Error::Tls("CA PEM holds no certificate".into()));
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
