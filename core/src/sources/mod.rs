//! Capture sources beyond the host app: each reads what a platform store holds (the Android
//! Telephony provider, Messages' database on a Mac) and turns what changed since its last look
//! into the same typed events the app hands the agent, or, server-side, what a platform's official
//! archiving channel delivers (WhatsApp Business coexistence webhooks, the WeCom chat archive;
//! one store per business line through `connector`). One module per source; the platform code
//! that feeds it stays thin.
//!
//! What they share lives here: a source's memory of what it has seen. A source must capture
//! nothing twice and miss nothing across restarts, re-scans and a kill -9 at any instant. So
//! what it remembers (provider row ids, guids, edit times, keyed hashes of content, never the
//! content itself) is written as [`Mark`]s in the same transaction as the records captured
//! from it ([`crate::Agent::capture_marked`]): after a crash either both are stored or
//! neither is, and the next scan sees exactly what is left to capture.
//!
//! The state lives in the device store (table `source_state`), which holds sealed records
//! only; fingerprints of content are keyed hashes ([`crate::Agent::content_digest`]) under a
//! random per-store key, so equal texts on two devices do not hash alike. (The key sits in
//! the same store: against someone holding the file, a keyed hash of a short text is as
//! guessable as a plain one. It keeps fingerprints from being compared across devices or
//! with precomputed tables; the content itself is never written.)

#[cfg(feature = "connectors")]
pub mod connector;
#[cfg(feature = "imessage")]
pub mod imessage;
pub mod telephony;
#[cfg(feature = "connectors")]
pub mod wecom;
#[cfg(feature = "connectors")]
pub mod whatsapp;

use std::collections::BTreeMap;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// One change to a source's memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    /// The source's name (`telephony`, `imessage`): each source sees only its own keys.
    pub source: &'static str,
    pub key: String,
    /// The new value; `None` forgets the key.
    pub value: Option<Vec<u8>>,
}

impl Mark {
    pub fn set(source: &'static str, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Mark {
        Mark { source, key: key.into(), value: Some(value.into()) }
    }

    pub fn forget(source: &'static str, key: impl Into<String>) -> Mark {
        Mark { source, key: key.into(), value: None }
    }
}

/// Everything a source saved: key → value.
pub type SourceState = BTreeMap<String, Vec<u8>>;

/// HMAC-SHA256 of `bytes` under the store's digest key, domain-separated by source.
pub(crate) fn digest(store_key: &[u8; 32], source: &str, bytes: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(store_key).expect("HMAC takes a key of any length");
    mac.update(source.as_bytes());
    mac.update(&[0]);
    mac.update(bytes);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_depend_on_the_store_key_the_source_and_the_bytes() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let d = digest(&a, "telephony", b"hello");
        assert_eq!(d, digest(&a, "telephony", b"hello"));
        assert_ne!(d, digest(&b, "telephony", b"hello"), "another store");
        assert_ne!(d, digest(&a, "imessage", b"hello"), "another source");
        assert_ne!(d, digest(&a, "telephony", b"hellO"));
        // The separator keeps (source, bytes) pairs apart: "ab" + "c" is not "a" + "bc".
        assert_ne!(digest(&a, "ab", b"c"), digest(&a, "a", b"bc"));
    }
}
