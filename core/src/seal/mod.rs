//! Sealing: each epoch gets a fresh data key, created with HPKE (RFC 9180, base mode,
//! X25519 + HKDF-SHA256 + AES-256-GCM) to the archive's public key. The key lives in memory
//! only; just the HPKE encapsulation is stored. Records are sealed with AES-256-GCM under the
//! epoch key; the nonce is the record's sequence number, and the associated data binds tenant,
//! device, stream, sequence number, epoch and the previous chain link.
//!
//! **A key never seals two plaintexts under one nonce.** Every epoch has its own random key,
//! and an [`EpochKey`] seals only strictly increasing sequence numbers: asked for a sequence
//! number at or below one it already sealed, it refuses. That matters because a sealed record
//! can be rolled back after it reached the disk (a failed transaction's pages may already be in
//! the write-ahead log): re-sealing its sequence number with other content under the same key
//! would let anyone holding both ciphertexts XOR them into the plaintexts. The queue writer
//! therefore retires an epoch whenever sealed records are rolled back, and this refusal makes
//! any path that forgot to do so fail loudly instead of leaking.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use zeroize::{Zeroize, Zeroizing};

use crate::chain::{Link, StreamId};
use crate::error::{Error, ErrorKind, Result};

pub mod conversation;

type Kem = hpke::kem::X25519HkdfSha256;
type Kdf = hpke::kdf::HkdfSha256;
type HpkeAead = hpke::aead::AesGcm256;

/// Length of an X25519 key and of an encapsulation.
pub const KEY_LEN: usize = 32;

/// The archive's private key. Only the archive side ever holds one.
pub struct ArchiveSecretKey(Zeroizing<[u8; KEY_LEN]>);

impl ArchiveSecretKey {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let arr: [u8; KEY_LEN] = bytes.try_into().map_err(|_| {
            Error::new(ErrorKind::Crypto, format!("archive private key must be {KEY_LEN} bytes, got {}", bytes.len()))
        })?;
        Ok(ArchiveSecretKey(Zeroizing::new(arr)))
    }

    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl std::fmt::Debug for ArchiveSecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ArchiveSecretKey([redacted])")
    }
}

/// Generates an archive key pair: (private, public).
pub fn generate_archive_keypair() -> (ArchiveSecretKey, [u8; KEY_LEN]) {
    let (sk, pk) = Kem::gen_keypair();
    let mut sk_bytes: [u8; KEY_LEN] = sk.to_bytes().into();
    let secret = ArchiveSecretKey(Zeroizing::new(sk_bytes));
    sk_bytes.zeroize();
    (secret, pk.to_bytes().into())
}

/// The public key belonging to a private key.
pub fn public_key_of(secret: &ArchiveSecretKey) -> Result<[u8; KEY_LEN]> {
    let sk = <Kem as hpke::Kem>::PrivateKey::from_bytes(secret.as_bytes())
        .map_err(|_| Error::new(ErrorKind::Crypto, "archive private key is not a valid X25519 key"))?;
    Ok(<Kem as hpke::Kem>::sk_to_pk(&sk).to_bytes().into())
}

/// A short, stable identifier for an archive public key (hex of its SHA-256, first 8 bytes).
pub fn key_id(public: &[u8; KEY_LEN]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(public)[..8])
}

fn hpke_info(stream: &StreamId, epoch: u64) -> Vec<u8> {
    hpke_info_labeled(b"verbatim/epoch/v1", stream, epoch)
}

/// The HPKE `info` of an epoch: the label names the sealing version, so an epoch's keys are
/// bound to how its records are sealed.
pub(crate) fn hpke_info_labeled(label: &[u8], stream: &StreamId, epoch: u64) -> Vec<u8> {
    let mut info = Vec::with_capacity(64);
    info.extend_from_slice(label);
    for part in [&stream.tenant, &stream.device, &stream.stream] {
        info.extend_from_slice(&(part.len() as u32).to_be_bytes());
        info.extend_from_slice(part.as_bytes());
    }
    info.extend_from_slice(&epoch.to_be_bytes());
    info
}

const EXPORT_LABEL: &[u8] = b"verbatim/epoch-key/v1";

/// How an epoch's records are sealed, as its encapsulation says: 32 bytes for the original
/// scheme (every record under the epoch key), `0x02 ||` 32 bytes for conversation keys
/// ([`conversation`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sealing {
    EpochKey,
    ConversationKeys,
}

impl Sealing {
    /// The sealing an announced encapsulation stands for, and the HPKE encapsulation itself.
    pub fn of(encapsulation: &[u8]) -> Result<(Sealing, &[u8])> {
        match encapsulation {
            e if e.len() == KEY_LEN => Ok((Sealing::EpochKey, e)),
            [conversation::SEALING_TAG, rest @ ..] if rest.len() == KEY_LEN => Ok((Sealing::ConversationKeys, rest)),
            e => Err(Error::new(
                ErrorKind::Crypto,
                format!("encapsulation of {} bytes is neither 32 (epoch key) nor 0x02 and 32 (conversation keys)", e.len()),
            )),
        }
    }
}

/// Secrets exported from one HPKE context, in the order of their labels.
pub(crate) type Exported = Vec<Zeroizing<[u8; 32]>>;

/// One X25519 HPKE setup towards the archive: the encapsulation and the exported secrets, one
/// per label.
pub(crate) fn hpke_export_to(archive_public: &[u8; KEY_LEN], info: &[u8], labels: &[&[u8]]) -> Result<(Vec<u8>, Exported)> {
    let pk = <Kem as hpke::Kem>::PublicKey::from_bytes(archive_public)
        .map_err(|_| Error::new(ErrorKind::Crypto, "archive_public_key is not a valid X25519 public key"))?;
    let (encapped, ctx) = hpke::setup_sender::<HpkeAead, Kdf, Kem>(&OpModeS::Base, &pk, info)
        .map_err(|e| Error::new(ErrorKind::Crypto, format!("HPKE setup failed: {e}")))?;
    let mut out = Vec::with_capacity(labels.len());
    for label in labels {
        let mut key = Zeroizing::new([0u8; 32]);
        ctx.export(label, key.as_mut_slice()).map_err(|e| Error::new(ErrorKind::Crypto, format!("HPKE export failed: {e}")))?;
        out.push(key);
    }
    Ok((encapped.to_bytes().to_vec(), out))
}

/// The archive's side of [`hpke_export_to`].
pub(crate) fn hpke_export_from(
    archive_secret: &ArchiveSecretKey,
    encapsulation: &[u8],
    info: &[u8],
    epoch: u64,
    labels: &[&[u8]],
) -> Result<Vec<Zeroizing<[u8; 32]>>> {
    let sk = <Kem as hpke::Kem>::PrivateKey::from_bytes(archive_secret.as_bytes())
        .map_err(|_| Error::new(ErrorKind::Crypto, "archive private key is not a valid X25519 key"))?;
    let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(encapsulation)
        .map_err(|_| Error::new(ErrorKind::Crypto, format!("epoch {epoch}: malformed encapsulation")))?;
    let ctx = hpke::setup_receiver::<HpkeAead, Kdf, Kem>(&OpModeR::Base, &sk, &enc, info)
        .map_err(|_| Error::new(ErrorKind::Crypto, format!("epoch {epoch}: encapsulation does not open with this key")))?;
    let mut out = Vec::with_capacity(labels.len());
    for label in labels {
        let mut key = Zeroizing::new([0u8; 32]);
        ctx.export(label, key.as_mut_slice()).map_err(|e| Error::new(ErrorKind::Crypto, format!("HPKE export failed: {e}")))?;
        out.push(key);
    }
    Ok(out)
}

/// An epoch's data key, in memory only. Dropping it zeroizes the key.
pub struct EpochKey {
    epoch: u64,
    cipher: Aes256Gcm,
    /// The highest sequence number this key sealed (0: none). Sealing only moves it up.
    sealed_through: u64,
    /// Distinguishes key instances in the seal log of the `testing` feature.
    #[cfg(feature = "testing")]
    instance: u64,
}

impl std::fmt::Debug for EpochKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EpochKey {{ epoch: {}, key: [redacted] }}", self.epoch)
    }
}

impl EpochKey {
    /// An epoch key from its raw bytes (as [`derive_epoch_key`] gives them, or a key vault keeps them).
    pub fn from_exported(epoch: u64, key: &Zeroizing<[u8; 32]>) -> Self {
        let cipher = Aes256Gcm::new_from_slice(key.as_slice()).expect("32-byte key is valid for AES-256");
        EpochKey {
            epoch,
            cipher,
            sealed_through: 0,
            #[cfg(feature = "testing")]
            instance: crate::testing::seal_log::next_instance(),
        }
    }

    /// Creates a new epoch key for `stream` sealed to `archive_public`; returns the key and
    /// the HPKE encapsulation, which is all that is ever stored.
    pub fn create(archive_public: &[u8; KEY_LEN], stream: &StreamId, epoch: u64) -> Result<(EpochKey, Vec<u8>)> {
        let (encapsulation, keys) = hpke_export_to(archive_public, &hpke_info(stream, epoch), &[EXPORT_LABEL])?;
        Ok((EpochKey::from_exported(epoch, &keys[0]), encapsulation))
    }

    /// Recovers an epoch key from its encapsulation with the archive's private key.
    pub fn open(archive_secret: &ArchiveSecretKey, encapsulation: &[u8], stream: &StreamId, epoch: u64) -> Result<EpochKey> {
        let key = derive_epoch_key(archive_secret, encapsulation, stream, epoch)?;
        Ok(EpochKey::from_exported(epoch, &key))
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The highest sequence number this key sealed (0: none).
    pub fn sealed_through(&self) -> u64 {
        self.sealed_through
    }

    /// Seals `plaintext` as record `seq`. Refuses a `seq` at or below one this key already
    /// sealed (see the module docs): its nonce was used, whether or not that record was kept.
    pub fn seal(&mut self, stream: &StreamId, seq: u64, prev: &Link, plaintext: &[u8]) -> Result<Vec<u8>> {
        if seq <= self.sealed_through {
            return Err(Error::new(
                ErrorKind::Internal,
                format!(
                    "refusing to seal sequence {seq} under epoch {}: its key already sealed through {}",
                    self.epoch, self.sealed_through
                ),
            ));
        }
        let aad = associated_data(stream, seq, self.epoch, prev);
        let sealed = self
            .cipher
            .encrypt(&nonce(seq), Payload { msg: plaintext, aad: &aad })
            .map_err(|_| Error::new(ErrorKind::Crypto, format!("sealing sequence {seq} failed")))?;
        // The nonce counts as used once the cipher ran, whatever happens to the record.
        self.sealed_through = seq;
        #[cfg(feature = "testing")]
        crate::testing::seal_log::record(stream, self.epoch, self.instance, seq);
        Ok(sealed)
    }

    pub fn open_record(&self, stream: &StreamId, seq: u64, prev: &Link, ciphertext: &[u8]) -> Result<Vec<u8>> {
        let aad = associated_data(stream, seq, self.epoch, prev);
        self.cipher
            .decrypt(&nonce(seq), Payload { msg: ciphertext, aad: &aad })
            .map_err(|_| Error::new(ErrorKind::Crypto, format!("sequence {seq}: record does not open (altered, or another key)")))
    }
}

/// The raw epoch data key, as only the archive (holding the private key) can derive it.
/// Exposed for the archive side and for tests that prove the key never reaches the disk.
pub fn derive_epoch_key(
    archive_secret: &ArchiveSecretKey,
    encapsulation: &[u8],
    stream: &StreamId,
    epoch: u64,
) -> Result<Zeroizing<[u8; 32]>> {
    let mut keys = hpke_export_from(archive_secret, encapsulation, &hpke_info(stream, epoch), epoch, &[EXPORT_LABEL])?;
    Ok(keys.remove(0))
}

pub(crate) fn nonce(seq: u64) -> Nonce<aes_gcm::aes::cipher::consts::U12> {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&seq.to_be_bytes());
    n.into()
}

fn associated_data(stream: &StreamId, seq: u64, epoch: u64, prev: &Link) -> Vec<u8> {
    record_aad(b"verbatim/record/v1", stream, seq, epoch, prev, &[])
}

/// The associated data of a record: `label`, the stream, the sequence number, the epoch, the
/// predecessor's link, then `extra` (version 2: the key reference).
pub(crate) fn record_aad(label: &[u8], stream: &StreamId, seq: u64, epoch: u64, prev: &Link, extra: &[u8]) -> Vec<u8> {
    let mut ad = Vec::with_capacity(96 + extra.len() + stream.tenant.len() + stream.device.len() + stream.stream.len());
    ad.extend_from_slice(label);
    for part in [&stream.tenant, &stream.device, &stream.stream] {
        ad.extend_from_slice(&(part.len() as u32).to_be_bytes());
        ad.extend_from_slice(part.as_bytes());
    }
    ad.extend_from_slice(&seq.to_be_bytes());
    ad.extend_from_slice(&epoch.to_be_bytes());
    ad.extend_from_slice(prev);
    ad.extend_from_slice(extra);
    ad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> StreamId {
        StreamId { tenant: "acme".into(), device: "dev-1".into(), stream: "s1".into() }
    }

    #[test]
    fn a_sealed_record_opens_only_with_the_archive_key_and_its_own_binding() {
        let (sk, pk) = generate_archive_keypair();
        assert_eq!(public_key_of(&sk).unwrap(), pk);
        let (mut key, enc) = EpochKey::create(&pk, &stream(), 7).unwrap();
        let prev = [9u8; 32];
        let ct = key.seal(&stream(), 42, &prev, b"hello archive").unwrap();
        assert!(!ct.windows(5).any(|w| w == b"hello"));

        let opened = EpochKey::open(&sk, &enc, &stream(), 7).unwrap();
        assert_eq!(opened.open_record(&stream(), 42, &prev, &ct).unwrap(), b"hello archive");

        // Any change of binding fails: sequence, previous link, stream, epoch.
        assert!(opened.open_record(&stream(), 43, &prev, &ct).is_err());
        assert!(opened.open_record(&stream(), 42, &[8u8; 32], &ct).is_err());
        let other = StreamId { device: "dev-2".into(), ..stream() };
        assert!(opened.open_record(&other, 42, &prev, &ct).is_err());
        assert!(EpochKey::open(&sk, &enc, &stream(), 8).unwrap().open_record(&stream(), 42, &prev, &ct).is_err());

        // Another archive key cannot open it.
        let (sk2, _) = generate_archive_keypair();
        assert!(EpochKey::open(&sk2, &enc, &stream(), 7).unwrap().open_record(&stream(), 42, &prev, &ct).is_err());
    }

    #[test]
    fn each_epoch_gets_a_fresh_key() {
        let (_, pk) = generate_archive_keypair();
        let (mut k1, e1) = EpochKey::create(&pk, &stream(), 1).unwrap();
        let (mut k2, e2) = EpochKey::create(&pk, &stream(), 1).unwrap();
        assert_ne!(e1, e2);
        let prev = [0u8; 32];
        assert_ne!(k1.seal(&stream(), 1, &prev, b"x").unwrap(), k2.seal(&stream(), 1, &prev, b"x").unwrap());
    }

    #[test]
    fn a_key_refuses_to_seal_a_sequence_number_at_or_below_one_it_sealed() {
        let (_, pk) = generate_archive_keypair();
        let (mut key, _) = EpochKey::create(&pk, &stream(), 1).unwrap();
        let prev = [0u8; 32];
        key.seal(&stream(), 5, &prev, b"first").unwrap();
        for seq in [5, 4, 1] {
            let err = key.seal(&stream(), seq, &prev, b"other content").unwrap_err();
            assert_eq!(err.kind, ErrorKind::Internal);
            assert_eq!(err.detail, format!("refusing to seal sequence {seq} under epoch 1: its key already sealed through 5"));
        }
        assert_eq!(key.sealed_through(), 5);
        key.seal(&stream(), 6, &prev, b"next").unwrap();
        assert_eq!(key.sealed_through(), 6);
    }

    #[test]
    fn debug_output_hides_keys() {
        let (sk, pk) = generate_archive_keypair();
        let (k, _) = EpochKey::create(&pk, &stream(), 1).unwrap();
        assert_eq!(format!("{sk:?}"), "ArchiveSecretKey([redacted])");
        assert_eq!(format!("{k:?}"), "EpochKey { epoch: 1, key: [redacted] }");
    }
}
