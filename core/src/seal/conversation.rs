//! Sealing with conversation keys (sealing version 2): what makes a conversation erasable on
//! storage that can never be rewritten.
//!
//! An epoch's HPKE setup exports two secrets instead of one: the **epoch key** and the
//! **reference key**, which hides which key sealed each record. Every record but key records
//! is sealed under a **content key**, one per conversation and epoch (and one for the agent's
//! own events): `content_key = HMAC-SHA256(epoch_key, "verbatim/content-key/v2" || key_ref)`
//! for a random 16-byte `key_ref` the device draws. A key record, sealed under the epoch key
//! itself earlier in the same chain, says which conversation a `key_ref` stands for (never the
//! key). The archive files content keys in its key vault, indexed by conversation; once the
//! archive private key retires, no one can derive an epoch key again and the vault is the only
//! way to read a record: deleting a conversation's vault entries erases it, while the chain
//! (which covers every ciphertext) still proves the stream complete. Deriving content keys
//! (rather than drawing them) means a lost key record costs only the conversation's label, not
//! its records, while the archive key exists.
//!
//! A sealed record is `masked_ref (16 bytes) || AES-256-GCM(content key, nonce(seq), plaintext,
//! aad)`, where `masked_ref = key_ref XOR HMAC-SHA256(ref_key, "verbatim/key-ref/v2" ||
//! u64be(seq))[..16]`. The all-zero reference names the epoch key. Masking keeps a holder of
//! the WORM store from seeing which records share a conversation.
//!
//! Nonces: each key seals only strictly increasing sequence numbers of one stream, and every
//! key (epoch or content) belongs to one epoch, so no key meets a nonce twice; an epoch whose
//! sealed records were rolled back is retired whole, content keys included (see
//! `queue::writer`).

use std::collections::HashMap;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, AeadInOut, KeyInit, Payload};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::{ArchiveSecretKey, KEY_LEN, hpke_export_from, hpke_export_to, hpke_info_labeled, nonce};
use crate::chain::{self, Link, StreamId};
use crate::error::{Error, ErrorKind, Result};
use crate::model::Channel;
use crate::record::{Record, RecordBody};

/// The first byte of a version-2 encapsulation (the 32 HPKE bytes follow).
pub const SEALING_TAG: u8 = 0x02;
/// Length of a key reference and of its mask.
pub const REF_LEN: usize = 16;
/// Names a key within one epoch of one stream; all zeros is the epoch key.
pub type KeyRef = [u8; REF_LEN];
/// The reference of the epoch key (key records).
pub const EPOCH_KEY_REF: KeyRef = [0; REF_LEN];

const INFO_LABEL: &[u8] = b"verbatim/epoch/v2";
const EPOCH_KEY_LABEL: &[u8] = b"verbatim/epoch-key/v2";
const REF_KEY_LABEL: &[u8] = b"verbatim/ref-key/v2";
const MASK_LABEL: &[u8] = b"verbatim/key-ref/v2";
const AAD_LABEL: &[u8] = b"verbatim/record/v2";
const CONTENT_KEY_LABEL: &[u8] = b"verbatim/content-key/v2";

/// The content key of `key_ref` in the epoch whose epoch key is `epoch_key`.
pub fn content_key(epoch_key: &[u8; 32], key_ref: &KeyRef) -> Zeroizing<[u8; 32]> {
    let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(epoch_key).expect("HMAC takes a key of any length");
    mac.update(CONTENT_KEY_LABEL);
    mac.update(key_ref);
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&mac.finalize().into_bytes());
    out
}

/// A conversation as keys are scoped: the messaging app's conversation id on one channel.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConversationRef {
    pub channel: Channel,
    pub conversation_id: String,
}

/// What a content key covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyScope {
    /// The agent's own events (no captured content).
    Agent,
    Conversation(ConversationRef),
}

impl KeyScope {
    /// The scope of a record, when the record says it (attachment chunks and ends do not:
    /// their scope is their attachment's).
    pub fn of(body: &RecordBody) -> Option<KeyScope> {
        let conversation = KeyScope::of_meta;
        Some(match body {
            RecordBody::Message(m) => conversation(&m.meta),
            RecordBody::Edit(e) => conversation(&e.meta),
            RecordBody::Unsend(u) => conversation(&u.meta),
            RecordBody::Reaction(r) => conversation(&r.meta),
            RecordBody::Call(c) => conversation(&c.meta),
            RecordBody::AttachmentStart(h) => conversation(&h.meta),
            RecordBody::AttachmentOmitted { header, .. } => conversation(&header.meta),
            RecordBody::DisclaimerShown { meta, .. } => conversation(meta),
            // A communication let through uncaptured is about its conversation: erasing the
            // conversation erases that trace too.
            RecordBody::Agent(crate::record::AgentEvent::UncapturedCommunication { channel, conversation_id, .. }) => {
                KeyScope::Conversation(ConversationRef { channel: *channel, conversation_id: conversation_id.clone() })
            }
            RecordBody::Agent(_) => KeyScope::Agent,
            RecordBody::AttachmentChunk { .. } | RecordBody::AttachmentEnd { .. } | RecordBody::ConversationKey(_) => {
                return None;
            }
        })
    }

    /// The scope of the conversation an event's `meta` names.
    pub fn of_meta(meta: &crate::model::EventMeta) -> KeyScope {
        KeyScope::Conversation(ConversationRef { channel: meta.channel, conversation_id: meta.conversation_id.clone() })
    }

    pub fn conversation(&self) -> Option<&ConversationRef> {
        match self {
            KeyScope::Agent => None,
            KeyScope::Conversation(c) => Some(c),
        }
    }
}

/// The body of a key record: which conversation a content key reference stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// 32 hex digits.
    pub key_ref: String,
    /// The conversation it covers; `null` for the agent's own events.
    pub conversation: Option<ConversationRef>,
}

impl KeyRecord {
    pub fn scope(&self) -> KeyScope {
        self.conversation.clone().map_or(KeyScope::Agent, KeyScope::Conversation)
    }

    /// The reference, checked.
    pub fn key_ref(&self) -> Result<KeyRef> {
        hex::decode(&self.key_ref)
            .ok()
            .and_then(|b| b.try_into().ok())
            .filter(|r| *r != EPOCH_KEY_REF)
            .ok_or_else(|| Error::new(ErrorKind::Corrupt, "key record: key_ref is not 32 hex digits naming a content key"))
    }
}

/// The two secrets of a version-2 epoch.
pub struct EpochSecrets {
    pub epoch_key: Zeroizing<[u8; 32]>,
    pub ref_key: Zeroizing<[u8; 32]>,
}

impl EpochSecrets {
    /// A fresh epoch towards `archive_public`: its secrets and its 33-byte encapsulation.
    pub fn create(archive_public: &[u8; KEY_LEN], stream: &StreamId, epoch: u64) -> Result<(EpochSecrets, Vec<u8>)> {
        let info = hpke_info_labeled(INFO_LABEL, stream, epoch);
        let (enc, mut keys) = hpke_export_to(archive_public, &info, &[EPOCH_KEY_LABEL, REF_KEY_LABEL])?;
        let mut encapsulation = Vec::with_capacity(1 + KEY_LEN);
        encapsulation.push(SEALING_TAG);
        encapsulation.extend_from_slice(&enc);
        let ref_key = keys.pop().expect("two exports");
        let epoch_key = keys.pop().expect("two exports");
        Ok((EpochSecrets { epoch_key, ref_key }, encapsulation))
    }

    /// The archive's side: `encapsulation` is the announced one (with its leading tag).
    pub fn open(archive_secret: &ArchiveSecretKey, encapsulation: &[u8], stream: &StreamId, epoch: u64) -> Result<EpochSecrets> {
        let enc = match encapsulation {
            [SEALING_TAG, rest @ ..] if rest.len() == KEY_LEN => rest,
            _ => return Err(Error::new(ErrorKind::Crypto, format!("epoch {epoch}: not a conversation-key encapsulation"))),
        };
        let info = hpke_info_labeled(INFO_LABEL, stream, epoch);
        let mut keys = hpke_export_from(archive_secret, enc, &info, epoch, &[EPOCH_KEY_LABEL, REF_KEY_LABEL])?;
        let ref_key = keys.pop().expect("two exports");
        let epoch_key = keys.pop().expect("two exports");
        Ok(EpochSecrets { epoch_key, ref_key })
    }
}

/// The reference key as a keyed HMAC, cloned for each record (keying it once per epoch spares
/// two SHA-256 blocks per record).
fn mask_mac(ref_key: &[u8; 32]) -> Hmac<Sha256> {
    <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(ref_key).expect("HMAC takes a key of any length")
}

fn mask(keyed: &Hmac<Sha256>, seq: u64) -> KeyRef {
    let mut mac = keyed.clone();
    mac.update(MASK_LABEL);
    mac.update(&seq.to_be_bytes());
    let out = mac.finalize().into_bytes();
    let mut m = [0u8; REF_LEN];
    m.copy_from_slice(&out[..REF_LEN]);
    m
}

fn xor(a: &KeyRef, b: &KeyRef) -> KeyRef {
    std::array::from_fn(|i| a[i] ^ b[i])
}

fn associated_data(stream: &StreamId, seq: u64, epoch: u64, prev: &Link, key_ref: &KeyRef) -> Vec<u8> {
    super::record_aad(AAD_LABEL, stream, seq, epoch, prev, key_ref)
}

fn cipher(key: &[u8; 32]) -> Aes256Gcm {
    Aes256Gcm::new_from_slice(key).expect("32-byte key is valid for AES-256")
}

/// The key reference a sealed record names, given its epoch's reference key.
pub fn key_ref_of(ref_key: &[u8; 32], seq: u64, ciphertext: &[u8]) -> Result<KeyRef> {
    unmask(&mask_mac(ref_key), seq, ciphertext)
}

fn unmask(keyed: &Hmac<Sha256>, seq: u64, ciphertext: &[u8]) -> Result<KeyRef> {
    let masked: KeyRef = ciphertext
        .get(..REF_LEN)
        .and_then(|m| m.try_into().ok())
        .ok_or_else(|| Error::new(ErrorKind::Corrupt, format!("sequence {seq}: record shorter than its key reference")))?;
    Ok(xor(&masked, &mask(keyed, seq)))
}

/// One record sealed by [`ConversationSealer::seal`], with its place in the chain.
#[derive(Debug)]
pub struct Sealed {
    pub seq: u64,
    pub ciphertext: Vec<u8>,
    pub link: Link,
    /// A key record: it holds no captured content and is not what the caller asked to seal.
    pub key_record: bool,
}

/// The device side of a version-2 epoch: in memory only; dropping it drops every key.
pub struct ConversationSealer {
    epoch: u64,
    epoch_key: Zeroizing<[u8; 32]>,
    epoch_cipher: Aes256Gcm,
    mask_mac: Hmac<Sha256>,
    keys: HashMap<KeyScope, (KeyRef, Aes256Gcm)>,
    /// The highest sequence number any key of this epoch sealed (0: none).
    sealed_through: u64,
    /// Distinguishes key instances in the seal log of the `testing` feature.
    #[cfg(feature = "testing")]
    instance: u64,
}

impl std::fmt::Debug for ConversationSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConversationSealer {{ epoch: {}, keys: {}, [redacted] }}", self.epoch, self.keys.len())
    }
}

impl ConversationSealer {
    /// A new epoch: the sealer and the encapsulation to store and announce.
    pub fn create(archive_public: &[u8; KEY_LEN], stream: &StreamId, epoch: u64) -> Result<(ConversationSealer, Vec<u8>)> {
        let (secrets, encapsulation) = EpochSecrets::create(archive_public, stream, epoch)?;
        let sealer = ConversationSealer {
            epoch,
            epoch_cipher: cipher(&secrets.epoch_key),
            epoch_key: secrets.epoch_key,
            mask_mac: mask_mac(&secrets.ref_key),
            keys: HashMap::new(),
            sealed_through: 0,
            #[cfg(feature = "testing")]
            instance: crate::testing::seal_log::next_instance(),
        };
        Ok((sealer, encapsulation))
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn sealed_through(&self) -> u64 {
        self.sealed_through
    }

    /// Content keys created in this epoch.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Seals `plaintext` (a record of `scope`) as the record after (`prev_seq`, `prev`). When
    /// `scope` has no key yet in this epoch, a key record announcing a new one comes first:
    /// one or two records, in order, each chained to the one before.
    pub fn seal(
        &mut self,
        stream: &StreamId,
        prev_seq: u64,
        prev: &Link,
        scope: &KeyScope,
        captured_ms: i64,
        plaintext: &[u8],
    ) -> Result<Vec<Sealed>> {
        let mut out = Vec::with_capacity(2);
        let (mut seq, mut prev) = (next_seq(prev_seq)?, *prev);
        if !self.keys.contains_key(scope) {
            let mut key_ref = EPOCH_KEY_REF;
            while key_ref == EPOCH_KEY_REF {
                getrandom::fill(&mut key_ref).map_err(|e| Error::new(ErrorKind::Crypto, format!("no randomness: {e}")))?;
            }
            let key = content_key(&self.epoch_key, &key_ref);
            self.keys.insert(scope.clone(), (key_ref, cipher(&key)));
            let record = KeyRecord { key_ref: hex::encode(key_ref), conversation: scope.conversation().cloned() };
            let body = Record::new(captured_ms, RecordBody::ConversationKey(record)).encode();
            let ciphertext = self.seal_one(stream, seq, &prev, None, &body)?;
            let link = chain::link(&prev, seq, self.epoch, &ciphertext);
            out.push(Sealed { seq, ciphertext, link, key_record: true });
            (seq, prev) = (next_seq(seq)?, link);
        }
        let ciphertext = self.seal_one(stream, seq, &prev, Some(scope), plaintext)?;
        let link = chain::link(&prev, seq, self.epoch, &ciphertext);
        out.push(Sealed { seq, ciphertext, link, key_record: false });
        Ok(out)
    }

    /// Seals one record under `scope`'s content key, or the epoch key for `None`.
    fn seal_one(
        &mut self,
        stream: &StreamId,
        seq: u64,
        prev: &Link,
        scope: Option<&KeyScope>,
        plaintext: &[u8],
    ) -> Result<Vec<u8>> {
        if seq <= self.sealed_through {
            return Err(Error::new(
                ErrorKind::Internal,
                format!(
                    "refusing to seal sequence {seq} under epoch {}: its keys already sealed through {}",
                    self.epoch, self.sealed_through
                ),
            ));
        }
        let (key_ref, cipher) = match scope {
            None => (&EPOCH_KEY_REF, &self.epoch_cipher),
            Some(scope) => {
                let (r, c) = self.keys.get(scope).ok_or_else(|| Error::new(ErrorKind::Internal, "no content key"))?;
                (r, c)
            }
        };
        let aad = associated_data(stream, seq, self.epoch, prev, key_ref);
        // masked reference || ciphertext || tag, encrypted in place: one buffer per record.
        let mut out = Vec::with_capacity(REF_LEN + plaintext.len() + 16);
        out.extend_from_slice(&xor(key_ref, &mask(&self.mask_mac, seq)));
        out.extend_from_slice(plaintext);
        let tag = cipher
            .encrypt_inout_detached(&nonce(seq), &aad, (&mut out[REF_LEN..]).into())
            .map_err(|_| Error::new(ErrorKind::Crypto, format!("sealing sequence {seq} failed")))?;
        out.extend_from_slice(&tag);
        #[cfg(feature = "testing")]
        let instance = self.instance ^ u64::from_le_bytes(key_ref[..8].try_into().expect("8 bytes"));
        // The nonce counts as used once the cipher ran, whatever happens to the record.
        self.sealed_through = seq;
        #[cfg(feature = "testing")]
        crate::testing::seal_log::record(stream, self.epoch, instance, seq);
        Ok(out)
    }
}

fn next_seq(seq: u64) -> Result<u64> {
    seq.checked_add(1)
        .filter(|s| *s <= i64::MAX as u64)
        .ok_or_else(|| Error::new(ErrorKind::Corrupt, "queue head: the last sequence number is out of range"))
}

/// What a version-2 record opened to.
pub enum Opened {
    /// A key record (its conversation filed in the opener).
    KeyRecord { key_ref: KeyRef, scope: KeyScope },
    /// `scope` is `None` when no key record for its reference was met (lost, or not read).
    Content { key_ref: KeyRef, scope: Option<KeyScope>, plaintext: Zeroizing<Vec<u8>> },
}

/// Why a version-2 record did not open.
#[derive(Debug)]
pub enum NotOpened {
    /// No key for the reference it names: the epoch key is not held (the archive key retired)
    /// and the vault has no key for it (erased, or never filed).
    NoKey(KeyRef),
    /// A key record, and the epoch key is not held: the vault has what it announced.
    KeyRecordSealed,
    /// The record is damaged, altered or out of place.
    Damaged(Error),
}

/// The archive side of a version-2 epoch: opens records with the epoch's secrets (from the
/// archive private key) or with what a key vault kept of it (reference key and content keys,
/// never the epoch key).
pub struct ConversationOpener {
    epoch: u64,
    epoch_key: Option<Zeroizing<[u8; 32]>>,
    mask_mac: Hmac<Sha256>,
    /// Content keys given (from a vault) or derived so far.
    keys: HashMap<KeyRef, (Zeroizing<[u8; 32]>, Aes256Gcm)>,
    /// Conversations of references, from key records (or a vault).
    scopes: HashMap<KeyRef, KeyScope>,
    /// References whose keys must not be used (erased), even where derivable.
    withheld: std::collections::HashSet<KeyRef>,
}

impl ConversationOpener {
    pub fn with_secrets(epoch: u64, secrets: &EpochSecrets) -> ConversationOpener {
        ConversationOpener {
            epoch,
            epoch_key: Some(secrets.epoch_key.clone()),
            mask_mac: mask_mac(&secrets.ref_key),
            keys: HashMap::new(),
            scopes: HashMap::new(),
            withheld: Default::default(),
        }
    }

    /// Without the epoch key: key records stay sealed, content opens with the keys given.
    pub fn with_ref_key(epoch: u64, ref_key: Zeroizing<[u8; 32]>) -> ConversationOpener {
        ConversationOpener {
            epoch,
            epoch_key: None,
            mask_mac: mask_mac(&ref_key),
            keys: HashMap::new(),
            scopes: HashMap::new(),
            withheld: Default::default(),
        }
    }

    /// Files a content key (from a vault).
    pub fn add_key(&mut self, key_ref: KeyRef, scope: KeyScope, key: &[u8; 32]) {
        self.keys.insert(key_ref, (Zeroizing::new(*key), cipher(key)));
        self.scopes.insert(key_ref, scope);
    }

    /// A content key this opener holds or can derive, for filing in a vault.
    pub fn export_key(&mut self, key_ref: &KeyRef) -> Option<Zeroizing<[u8; 32]>> {
        self.key(key_ref).map(|(k, _)| k.clone())
    }

    /// Never uses this reference's key again (its conversation was erased).
    pub fn withhold_key(&mut self, key_ref: &KeyRef) {
        self.keys.remove(key_ref);
        self.withheld.insert(*key_ref);
    }

    fn key(&mut self, key_ref: &KeyRef) -> Option<&(Zeroizing<[u8; 32]>, Aes256Gcm)> {
        if self.withheld.contains(key_ref) || *key_ref == EPOCH_KEY_REF {
            return None;
        }
        if !self.keys.contains_key(key_ref) {
            let derived = content_key(self.epoch_key.as_ref()?, key_ref);
            let c = cipher(&derived);
            self.keys.insert(*key_ref, (derived, c));
        }
        self.keys.get(key_ref)
    }

    pub fn key_ref(&self, seq: u64, ciphertext: &[u8]) -> Result<KeyRef> {
        unmask(&self.mask_mac, seq, ciphertext)
    }

    /// Opens record `seq` whose predecessor's link is `prev`.
    pub fn open(
        &mut self,
        stream: &StreamId,
        seq: u64,
        prev: &Link,
        ciphertext: &[u8],
    ) -> std::result::Result<Opened, NotOpened> {
        let key_ref = self.key_ref(seq, ciphertext).map_err(NotOpened::Damaged)?;
        let aad = associated_data(stream, seq, self.epoch, prev, &key_ref);
        let body = &ciphertext[REF_LEN..];
        let damaged = || {
            NotOpened::Damaged(Error::new(
                ErrorKind::Crypto,
                format!("sequence {seq}: record does not open (altered, or another key)"),
            ))
        };
        if key_ref == EPOCH_KEY_REF {
            let epoch_key = self.epoch_key.as_ref().ok_or(NotOpened::KeyRecordSealed)?;
            let plaintext =
                Zeroizing::new(cipher(epoch_key).decrypt(&nonce(seq), Payload { msg: body, aad: &aad }).map_err(|_| damaged())?);
            let record = Record::decode(&plaintext).map_err(NotOpened::Damaged)?;
            let RecordBody::ConversationKey(k) = record.body else {
                return Err(NotOpened::Damaged(Error::new(
                    ErrorKind::Corrupt,
                    format!("sequence {seq}: sealed under the epoch key but not a key record"),
                )));
            };
            let content_ref = k.key_ref().map_err(NotOpened::Damaged)?;
            let scope = k.scope();
            self.scopes.insert(content_ref, scope.clone());
            return Ok(Opened::KeyRecord { key_ref: content_ref, scope });
        }
        let (_, cipher) = self.key(&key_ref).ok_or(NotOpened::NoKey(key_ref))?;
        let plaintext = Zeroizing::new(cipher.decrypt(&nonce(seq), Payload { msg: body, aad: &aad }).map_err(|_| damaged())?);
        Ok(Opened::Content { key_ref, scope: self.scopes.get(&key_ref).cloned(), plaintext })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Direction, EventMeta, Message};
    use crate::seal::generate_archive_keypair;

    fn stream() -> StreamId {
        StreamId { tenant: "acme".into(), device: "dev-1".into(), stream: "s1".into() }
    }

    fn message(conversation: &str, text: &str) -> Record {
        Record::new(
            1,
            RecordBody::Message(Message {
                meta: EventMeta {
                    channel: Channel::Sms,
                    line: "+15550100".into(),
                    conversation_id: conversation.into(),
                    source_id: format!("m-{text}"),
                    source_time_ms: 1,
                },
                direction: Direction::Inbound,
                sender: "+15550111".into(),
                recipients: vec!["+15550100".into()],
                text: text.into(),
                attachment_ids: vec![],
                reply_to: None,
            }),
        )
    }

    /// Seals records in order, returning (seq, link, ciphertext) of everything sealed.
    fn seal_all(sealer: &mut ConversationSealer, records: &[Record]) -> Vec<Sealed> {
        let mut out: Vec<Sealed> = Vec::new();
        for r in records {
            let (seq, link) = out.last().map_or((0, chain::genesis(&stream())), |s| (s.seq, s.link));
            let scope = KeyScope::of(&r.body).unwrap();
            out.extend(sealer.seal(&stream(), seq, &link, &scope, r.captured_ms, &r.encode()).unwrap());
        }
        out
    }

    #[test]
    fn each_conversation_gets_its_own_key_announced_before_its_first_record() {
        let (sk, pk) = generate_archive_keypair();
        let (mut sealer, enc) = ConversationSealer::create(&pk, &stream(), 3).unwrap();
        assert_eq!(enc.len(), 33);
        assert_eq!(crate::seal::Sealing::of(&enc).unwrap().0, crate::seal::Sealing::ConversationKeys);
        let sealed = seal_all(&mut sealer, &[message("c1", "hello"), message("c2", "private"), message("c1", "again")]);
        // key(c1), c1, key(c2), c2, c1
        assert_eq!(sealed.iter().map(|s| s.key_record).collect::<Vec<_>>(), [true, false, true, false, false]);
        assert_eq!(sealed.iter().map(|s| s.seq).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
        assert_eq!(sealer.key_count(), 2);
        for s in &sealed {
            assert!(!s.ciphertext.windows(7).any(|w| w == b"private"));
        }

        let secrets = EpochSecrets::open(&sk, &enc, &stream(), 3).unwrap();
        let mut opener = ConversationOpener::with_secrets(3, &secrets);
        let mut prev = chain::genesis(&stream());
        let mut texts = Vec::new();
        let mut refs = Vec::new();
        for s in &sealed {
            assert_eq!(chain::link(&prev, s.seq, 3, &s.ciphertext), s.link);
            match opener.open(&stream(), s.seq, &prev, &s.ciphertext) {
                Ok(Opened::KeyRecord { key_ref, .. }) => refs.push(key_ref),
                Ok(Opened::Content { plaintext, key_ref, .. }) => {
                    let RecordBody::Message(m) = Record::decode(&plaintext).unwrap().body else { panic!() };
                    texts.push((key_ref, m.text));
                }
                Err(e) => panic!("{e:?}"),
            }
            prev = s.link;
        }
        assert_eq!(texts, [(refs[0], "hello".into()), (refs[1], "private".into()), (refs[0], "again".into())]);

        // Without the epoch key and without c2's key (erased): c1 opens, c2 and the key
        // records do not.
        let mut vault_side = ConversationOpener::with_ref_key(3, secrets.ref_key.clone());
        let c1 = KeyScope::Conversation(ConversationRef { channel: Channel::Sms, conversation_id: "c1".into() });
        let mut ingest = ConversationOpener::with_secrets(3, &secrets);
        let Ok(Opened::KeyRecord { key_ref, scope }) =
            ingest.open(&stream(), 1, &chain::genesis(&stream()), &sealed[0].ciphertext)
        else {
            panic!("record 1 is c1's key record")
        };
        assert_eq!((key_ref, &scope), (refs[0], &c1));
        let key = opener.export_key(&refs[0]).unwrap();
        vault_side.add_key(refs[0], c1, &key);
        let mut prev = chain::genesis(&stream());
        let mut outcomes = Vec::new();
        for s in &sealed {
            outcomes.push(match vault_side.open(&stream(), s.seq, &prev, &s.ciphertext) {
                Ok(_) => "open",
                Err(NotOpened::NoKey(_)) => "no key",
                Err(NotOpened::KeyRecordSealed) => "key record",
                Err(NotOpened::Damaged(_)) => "damaged",
            });
            prev = s.link;
        }
        assert_eq!(outcomes, ["key record", "open", "key record", "no key", "open"]);
    }

    #[test]
    fn references_are_masked_per_record_and_a_moved_record_does_not_open() {
        let (sk, pk) = generate_archive_keypair();
        let (mut sealer, enc) = ConversationSealer::create(&pk, &stream(), 1).unwrap();
        let sealed = seal_all(&mut sealer, &[message("c1", "a"), message("c1", "b"), message("c1", "c")]);
        // Records 2, 3 share a key, yet their stored references differ.
        assert_ne!(sealed[1].ciphertext[..REF_LEN], sealed[2].ciphertext[..REF_LEN]);
        let secrets = EpochSecrets::open(&sk, &enc, &stream(), 1).unwrap();
        let mut opener = ConversationOpener::with_secrets(1, &secrets);
        assert!(opener.open(&stream(), 1, &chain::genesis(&stream()), &sealed[0].ciphertext).is_ok());
        // Record 3 in record 2's place.
        assert!(matches!(
            opener.open(&stream(), 2, &sealed[0].link, &sealed[2].ciphertext),
            Err(NotOpened::NoKey(_)) | Err(NotOpened::Damaged(_))
        ));
        assert!(opener.open(&stream(), 2, &sealed[0].link, &sealed[1].ciphertext).is_ok());
        // Another epoch number or stream: the encapsulation does not give the same secrets.
        let other = EpochSecrets::open(&sk, &enc, &stream(), 2).unwrap();
        let mut wrong = ConversationOpener::with_secrets(2, &other);
        assert!(wrong.open(&stream(), 1, &chain::genesis(&stream()), &sealed[0].ciphertext).is_err());
    }

    #[test]
    fn a_sealer_refuses_to_reuse_a_sequence_number() {
        let (_, pk) = generate_archive_keypair();
        let (mut sealer, _) = ConversationSealer::create(&pk, &stream(), 1).unwrap();
        let r = message("c1", "a");
        let scope = KeyScope::of(&r.body).unwrap();
        let g = chain::genesis(&stream());
        sealer.seal(&stream(), 4, &g, &scope, 1, &r.encode()).unwrap();
        assert_eq!(sealer.sealed_through(), 6);
        let err = sealer.seal(&stream(), 5, &g, &scope, 1, &r.encode()).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Internal);
        let other = KeyScope::Conversation(ConversationRef { channel: Channel::Sms, conversation_id: "c2".into() });
        assert!(sealer.seal(&stream(), 2, &g, &other, 1, &r.encode()).is_err(), "a new key's record is refused too");
    }

    #[test]
    fn key_records_carry_no_key_and_refuse_a_bad_reference() {
        let k = KeyRecord { key_ref: "00".repeat(16), conversation: None };
        assert!(k.key_ref().is_err(), "the all-zero reference is the epoch key's");
        let k = KeyRecord { key_ref: "01".repeat(15), conversation: None };
        assert!(k.key_ref().is_err());
        let k = KeyRecord { key_ref: "01".repeat(16), conversation: None };
        assert_eq!(k.key_ref().unwrap(), [1; 16]);
        let json = String::from_utf8(Record::new(1, RecordBody::ConversationKey(k)).encode()[5..].to_vec()).unwrap();
        assert_eq!(
            json,
            r#"{"captured_ms":1,"body":{"type":"conversation_key","key_ref":"01010101010101010101010101010101","conversation":null}}"#
        );
    }

    #[test]
    fn a_lost_key_record_costs_only_the_label_while_the_epoch_key_exists() {
        let (sk, pk) = generate_archive_keypair();
        let (mut sealer, enc) = ConversationSealer::create(&pk, &stream(), 1).unwrap();
        let sealed = seal_all(&mut sealer, &[message("c1", "a"), message("c1", "b")]);
        let secrets = EpochSecrets::open(&sk, &enc, &stream(), 1).unwrap();
        let mut opener = ConversationOpener::with_secrets(1, &secrets);
        // Start after the key record, as a salvage run that lost it would.
        match opener.open(&stream(), 2, &sealed[0].link, &sealed[1].ciphertext) {
            Ok(Opened::Content { scope: None, .. }) => {}
            _ => panic!("opens, without its conversation's label"),
        }
        // A withheld (erased) reference never opens again, derivable or not.
        let key_ref = opener.key_ref(2, &sealed[1].ciphertext).unwrap();
        opener.withhold_key(&key_ref);
        assert!(matches!(opener.open(&stream(), 2, &sealed[0].link, &sealed[1].ciphertext), Err(NotOpened::NoKey(_))));
    }
}
