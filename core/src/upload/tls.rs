//! TLS for upload: rustls with the ring provider. Trust is the OS store by default (through
//! rustls-platform-verifier, so enterprise CAs installed by the MDM work), or only the policy's
//! `archive_ca_pem`. The policy's `tls_pins` (SHA-256 of the certificate's SubjectPublicKeyInfo)
//! are checked on top of normal validation, never instead of it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind, Result};
use crate::policy::Policy;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client TLS configuration for `policy`, and a flag raised when a pin did not match
/// (so the uploader can tell a pin mismatch from other TLS failures).
pub fn client_config(policy: &Policy) -> Result<(rustls::ClientConfig, Arc<AtomicBool>)> {
    let provider = provider();
    // Pins may also name one of the policy's own CAs (the certificate admins distribute); such a
    // pin holds when the chain validates up to that CA alone.
    let mut pinned_roots: Vec<Arc<dyn ServerCertVerifier>> = Vec::new();
    let inner: Arc<dyn ServerCertVerifier> = match &policy.archive_ca_pem {
        Some(pem) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| Error::new(ErrorKind::Tls, format!("archive_ca_pem: {e}")))?;
                if spki_sha256(cert.as_ref()).is_some_and(|h| policy.tls_pins.contains(&h)) {
                    pinned_roots.push(only_root(cert.clone(), &provider)?);
                }
                roots.add(cert).map_err(|e| Error::new(ErrorKind::Tls, format!("archive_ca_pem: {e}")))?;
            }
            if roots.is_empty() {
                return Err(Error::new(ErrorKind::Tls, "archive_ca_pem holds no certificate"));
            }
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| Error::new(ErrorKind::Tls, format!("archive_ca_pem: {e}")))?
        }
        None => Arc::new(
            rustls_platform_verifier::Verifier::new(provider.clone())
                .map_err(|e| Error::new(ErrorKind::Tls, format!("OS trust store: {e}")))?,
        ),
    };
    let mismatch = Arc::new(AtomicBool::new(false));
    let verifier: Arc<dyn ServerCertVerifier> = if policy.tls_pins.is_empty() {
        inner
    } else {
        Arc::new(PinnedVerifier { inner, pins: policy.tls_pins.clone(), pinned_roots, mismatch: mismatch.clone() })
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::new(ErrorKind::Tls, format!("TLS versions: {e}")))?
        .dangerous() // only to install a verifier that validates fully and then also checks pins
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok((config, mismatch))
}

/// A verifier that trusts exactly one CA.
fn only_root(cert: CertificateDer<'static>, provider: &Arc<CryptoProvider>) -> Result<Arc<dyn ServerCertVerifier>> {
    let mut roots = RootCertStore::empty();
    roots.add(cert).map_err(|e| Error::new(ErrorKind::Tls, format!("archive_ca_pem: {e}")))?;
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| Error::new(ErrorKind::Tls, format!("archive_ca_pem: {e}")))?;
    Ok(verifier)
}

#[derive(Debug)]
struct PinnedVerifier {
    inner: Arc<dyn ServerCertVerifier>,
    pins: Vec<[u8; 32]>,
    /// One verifier per pinned CA of `archive_ca_pem`.
    pinned_roots: Vec<Arc<dyn ServerCertVerifier>>,
    mismatch: Arc<AtomicBool>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
        // A pin may name the server's key or any CA key in the presented chain.
        let chain = std::iter::once(end_entity).chain(intermediates.iter());
        let pinned = chain.filter_map(|c| spki_sha256(c.as_ref())).any(|h| self.pins.contains(&h))
            || self.pinned_roots.iter().any(|v| v.verify_server_cert(end_entity, intermediates, server_name, ocsp, now).is_ok());
        if pinned {
            Ok(verified)
        } else {
            self.mismatch.store(true, Ordering::SeqCst);
            Err(rustls::Error::General("certificate does not match tls_pins".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// One DER element at the start of some input.
struct DerElement<'a> {
    tag: u8,
    /// The whole element: header and content.
    whole: &'a [u8],
    content: &'a [u8],
    /// The input after this element.
    rest: &'a [u8],
}

fn der_element(input: &[u8]) -> Option<DerElement<'_>> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    let header = input.len() - rest.len();
    Some(DerElement { tag, whole: &input[..header + len], content: &rest[..len], rest: &rest[len..] })
}

/// SHA-256 of a certificate's SubjectPublicKeyInfo (the standard "SPKI pin"), or None when the
/// certificate is not the X.509 shape we expect.
pub fn spki_sha256(cert_der: &[u8]) -> Option<[u8; 32]> {
    const SEQUENCE: u8 = 0x30;
    let cert = der_element(cert_der)?;
    if cert.tag != SEQUENCE {
        return None;
    }
    let tbs = der_element(cert.content)?;
    if tbs.tag != SEQUENCE {
        return None;
    }
    let mut rest = tbs.content;
    // Optional explicit [0] version.
    if rest.first() == Some(&0xa0) {
        rest = der_element(rest)?.rest;
    }
    // serialNumber, signature, issuer, validity, subject: skip five elements.
    for _ in 0..5 {
        rest = der_element(rest)?.rest;
    }
    let spki = der_element(rest)?;
    if spki.tag != SEQUENCE {
        return None;
    }
    Some(Sha256::digest(spki.whole).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_certificates_give_no_pin() {
        assert_eq!(spki_sha256(&[]), None);
        assert_eq!(spki_sha256(&[0x30, 0x82, 0xff]), None);
        assert_eq!(spki_sha256(&[0x02, 0x01, 0x00]), None);
    }
}
