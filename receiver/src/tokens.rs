//! Device tokens. A token is `vbt1.<token_id>.<secret>`: the id (16 random bytes, hex) finds
//! the entry, the secret (32 random bytes, base64url) proves possession. The token file holds
//! one JSON object per line with the tenant, the device, the id and an Argon2id PHC hash of
//! the secret, never the token itself, so a stolen file lets nobody upload.
//!
//! Argon2 is deliberately slow, too slow to pay on every upload of 200 devices: a successful
//! verification is cached in memory, keyed by an HMAC (random per-process key) of the whole
//! token, so that a cache hit still proves possession of the secret. A token whose id the file
//! does not hold is refused without any hashing ([`TokenStore::lookup`]); only a known id's
//! secret costs an Argon2 run, which the server budgets separately (`server::auth`). The file is
//! re-read whenever it changes (size, modification time or inode), checked on every
//! authentication with one `stat`: `add-device` takes effect at once on a running receiver,
//! and deleting a line revokes that token.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use verbatim_core::secret::Secret;
use verbatim_core::wire::MAX_ID_LEN;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

pub const TOKEN_PREFIX: &str = "vbt1";
const ID_BYTES: usize = 16;
const SECRET_BYTES: usize = 32;

/// Who a token belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceIdentity {
    pub tenant: String,
    pub device: String,
}

/// One line of the token file.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    tenant: String,
    device: String,
    token_id: String,
    /// Argon2id PHC string of the secret part.
    hash: String,
    created: String,
}

/// Checks a tenant or device name as the wire format does, so that a token is never issued
/// for an identity no batch could carry.
pub fn check_identifier(what: &str, value: &str) -> Result<()> {
    if value.is_empty() || value.len() > MAX_ID_LEN || value.chars().any(char::is_control) {
        return Err(Error::Tokens(format!("{what} must be 1 to {MAX_ID_LEN} bytes without control characters")));
    }
    Ok(())
}

fn random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| Error::Tokens(format!("no randomness available: {e}")))?;
    Ok(b)
}

fn hash_secret(secret: &str) -> Result<String> {
    let salt = SaltString::encode_b64(&random::<16>()?).map_err(|e| Error::Tokens(format!("salt: {e}")))?;
    // Argon2::default() is Argon2id v19, m = 19 MiB, t = 2, p = 1 (the OWASP baseline).
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Tokens(format!("hashing: {e}")))
}

/// Issues a token for (`tenant`, `device`), appends its hash to `file` (created 0600 if
/// missing) and returns the token: the only time it exists outside the device.
pub fn add_device(file: &Path, tenant: &str, device: &str) -> Result<Secret> {
    check_identifier("tenant", tenant)?;
    check_identifier("device", device)?;
    let token_id = hex::encode(random::<ID_BYTES>()?);
    let secret = Secret::new(URL_SAFE_NO_PAD.encode(random::<SECRET_BYTES>()?));
    let entry = Entry {
        tenant: tenant.to_string(),
        device: device.to_string(),
        token_id: token_id.clone(),
        hash: hash_secret(secret.expose())?,
        created: crate::time::rfc3339(crate::time::now_ms()),
    };
    let mut line = serde_json::to_string(&entry).map_err(|e| Error::Tokens(e.to_string()))?;
    line.push('\n');

    let mut opts = OpenOptions::new();
    opts.append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(file).map_err(|e| Error::io_path("open", file, e))?;
    // Two concurrent add-device runs must not interleave their lines.
    f.lock().map_err(|e| Error::io_path("lock", file, e))?;
    f.write_all(line.as_bytes()).and_then(|_| f.sync_all()).map_err(|e| Error::io_path("append to", file, e))?;
    crate::fsutil::sync_parent(file);
    Ok(Secret::new(format!("{TOKEN_PREFIX}.{token_id}.{}", secret.expose())))
}

/// Splits a token into (id, secret) if it has the right shape.
fn parse(token: &str) -> Option<(&str, &str)> {
    let mut parts = token.split('.');
    let (prefix, id, secret) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || prefix != TOKEN_PREFIX {
        return None;
    }
    let id_ok = id.len() == ID_BYTES * 2 && id.bytes().all(|b| b.is_ascii_hexdigit());
    let secret_ok = secret.len() <= 64 && URL_SAFE_NO_PAD.decode(secret).map(|b| b.len() == SECRET_BYTES).unwrap_or(false);
    (id_ok && secret_ok).then_some((id, secret))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileSig {
    len: u64,
    modified: Option<SystemTime>,
    ino: u64,
}

fn file_sig(path: &Path) -> Option<FileSig> {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let ino = 0;
    Some(FileSig { len: m.len(), modified: m.modified().ok(), ino })
}

struct Known {
    identity: DeviceIdentity,
    hash: String,
}

/// Verified tokens remembered at most. Entries exist only for tokens that verified, so a real
/// fleet stays far below it; beyond it an arbitrary entry is dropped (that device pays one
/// more Argon2 run).
const MAX_CACHED: usize = 10_000;

#[derive(Default)]
struct State {
    by_id: HashMap<String, Known>,
    /// HMAC-SHA256 of a whole token that verified (under [`TokenStore::cache_key`]) → its token
    /// id. Only the presented token itself hashes to the same value, so a hit proves possession
    /// of the secret as the Argon2 run did; the token is not kept.
    verified: HashMap<[u8; 32], String>,
    sig: Option<FileSig>,
}

/// The receiver's view of the token file.
pub struct TokenStore {
    path: PathBuf,
    state: Mutex<State>,
    /// Random per process: the cache's keys mean nothing outside it, and a memory dump does not
    /// give a fast test of guessed tokens.
    cache_key: Zeroizing<[u8; 32]>,
}

/// What a presented token is, decided without Argon2 (see [`TokenStore::lookup`]).
pub enum Lookup {
    /// A token that verified before: the keyed hash of the presented token matched.
    Cached(DeviceIdentity),
    /// Missing, malformed, or a token id the file does not hold: refused, nothing hashed.
    Refused,
    /// A known token id whose secret must be checked with Argon2 ([`TokenStore::verify`]).
    Verify(PendingVerification),
}

/// A known token id and the presented secret, waiting for its Argon2 run.
pub struct PendingVerification {
    token_id: String,
    secret: Secret,
    hash: String,
    identity: DeviceIdentity,
    cache_digest: [u8; 32],
}

impl std::fmt::Debug for PendingVerification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PendingVerification([redacted])")
    }
}

impl TokenStore {
    /// Loads `path`. A missing file is an empty set of devices (every request gets 401) until
    /// it is created.
    pub fn open(path: &Path) -> Result<TokenStore> {
        let store =
            TokenStore { path: path.to_path_buf(), state: Mutex::new(State::default()), cache_key: Zeroizing::new(random()?) };
        if path.exists() {
            std::fs::File::open(path).map_err(|e| Error::io_path("open", path, e))?;
        }
        store.refresh();
        Ok(store)
    }

    /// Number of tokens currently known.
    pub fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of verified tokens remembered.
    pub fn cached(&self) -> usize {
        self.lock().verified.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cache_digest(&self, token: &str) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.cache_key[..]).expect("HMAC takes any key length");
        mac.update(token.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Re-reads the file if it changed since it was last read.
    fn refresh(&self) {
        let sig = file_sig(&self.path);
        if self.lock().sig == sig {
            return;
        }
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                // Keep the devices already known rather than locking everyone out.
                tracing::warn!(error = %e.kind(), "device token file unreadable; keeping the previous set");
                return;
            }
        };
        let mut by_id = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let entry: Entry = match serde_json::from_str(line) {
                Ok(e) => e,
                Err(_) => {
                    tracing::warn!(line = n + 1, "device token file: line does not parse; skipped");
                    continue;
                }
            };
            if check_identifier("tenant", &entry.tenant).is_err()
                || check_identifier("device", &entry.device).is_err()
                || PasswordHash::new(&entry.hash).is_err()
            {
                tracing::warn!(line = n + 1, "device token file: invalid entry; skipped");
                continue;
            }
            by_id.insert(
                entry.token_id,
                Known { identity: DeviceIdentity { tenant: entry.tenant, device: entry.device }, hash: entry.hash },
            );
        }
        let mut state = self.lock();
        // Keep cached verifications whose entry is unchanged; drop revoked ones.
        let old = std::mem::take(&mut state.by_id);
        state.verified.retain(|_, id| match (old.get(id), by_id.get(id)) {
            (Some(a), Some(b)) => a.hash == b.hash && a.identity == b.identity,
            _ => false,
        });
        state.by_id = by_id;
        state.sig = sig;
    }

    /// The cheap part of authentication: the token file's current state, the token's shape,
    /// its id, the cache. Never runs Argon2, so a flood of made-up tokens costs a hash-map
    /// lookup each. (Token ids are 128 random bits: answering an unknown one faster tells an
    /// attacker nothing usable.)
    pub fn lookup(&self, token: &str) -> Lookup {
        self.refresh();
        let digest = self.cache_digest(token);
        let state = self.lock();
        if let Some(k) = state.verified.get(&digest).and_then(|id| state.by_id.get(id)) {
            return Lookup::Cached(k.identity.clone());
        }
        match parse(token).and_then(|(id, secret)| state.by_id.get(id).map(|k| (id, secret, k))) {
            Some((id, secret, k)) => Lookup::Verify(PendingVerification {
                token_id: id.to_string(),
                secret: Secret::new(secret),
                hash: k.hash.clone(),
                identity: k.identity.clone(),
                cache_digest: digest,
            }),
            None => Lookup::Refused,
        }
    }

    /// The Argon2 check of a known token id's secret; a success is cached. Blocking and
    /// deliberately slow: call it off the async executor, within a verification budget.
    pub fn verify(&self, pending: PendingVerification) -> Option<DeviceIdentity> {
        if !verify_secret(pending.secret.expose().as_bytes(), &pending.hash) {
            return None;
        }
        let mut state = self.lock();
        // Revoked or replaced while it was being verified: refused, and not cached.
        if state.by_id.get(&pending.token_id).is_none_or(|k| k.hash != pending.hash) {
            return None;
        }
        if state.verified.len() >= MAX_CACHED
            && let Some(evict) = state.verified.keys().next().copied()
        {
            state.verified.remove(&evict);
        }
        state.verified.insert(pending.cache_digest, pending.token_id.clone());
        Some(pending.identity.clone())
    }

    /// Who `token` belongs to, or `None` for a missing, malformed, unknown or wrong token
    /// ([`TokenStore::lookup`], then [`TokenStore::verify`] if needed). Blocking.
    pub fn authenticate(&self, token: &str) -> Option<DeviceIdentity> {
        match self.lookup(token) {
            Lookup::Cached(identity) => Some(identity),
            Lookup::Refused => None,
            Lookup::Verify(pending) => self.verify(pending),
        }
    }
}

/// Argon2 working memory (19 MiB at the default cost), reused by every verification. Argon2
/// allocating its own on each call made the allocator keep a copy per thread: the receiver grew
/// by megabytes with every device it first saw. One buffer, one verification at a time: a
/// verification happens once per token per receiver run (then it is cached), so the queueing is
/// brief even when hundreds of devices connect at once.
static ARGON2_MEMORY: std::sync::Mutex<Vec<argon2::Block>> = std::sync::Mutex::new(Vec::new());

/// Checks `secret` against an Argon2 PHC hash, in the shared working memory.
fn verify_secret(secret: &[u8], phc: &str) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else { return false };
    let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else { return false };
    let Ok(params) = argon2::Params::try_from(&hash) else { return false };
    let Ok(algorithm) = argon2::Algorithm::try_from(hash.algorithm) else { return false };
    let version = hash.version.and_then(|v| argon2::Version::try_from(v).ok()).unwrap_or_default();
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else { return false };
    let mut out = vec![0u8; expected.len()];
    let mut memory = ARGON2_MEMORY.lock().unwrap_or_else(|p| p.into_inner());
    if memory.len() < params.block_count() {
        memory.resize(params.block_count(), argon2::Block::default());
    }
    let blocks = params.block_count();
    let argon = Argon2::new(algorithm, version, params);
    if argon.hash_password_into_with_memory(secret, salt, &mut out, &mut memory[..blocks]).is_err() {
        return false;
    }
    drop(memory);
    // Constant time: a wrong secret must not be told apart by how much of it matched.
    out.len() == expected.len() && out.iter().zip(expected.as_bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_and_the_file_holds_no_token() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens.jsonl");
        let store = TokenStore::open(&file).unwrap();
        let t1 = add_device(&file, "acme", "dev-1").unwrap();
        let t2 = add_device(&file, "acme", "dev-2").unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        for t in [&t1, &t2] {
            let secret = t.expose().rsplit('.').next().unwrap();
            assert!(!text.contains(secret));
            assert!(text.contains("$argon2id$"));
        }
        // Picked up without a restart.
        assert_eq!(store.authenticate(t1.expose()).unwrap().device, "dev-1");
        assert_eq!(store.authenticate(t1.expose()).unwrap().device, "dev-1"); // cached
        assert_eq!(store.authenticate(t2.expose()).unwrap().device, "dev-2");
        let mut wrong = t1.expose().to_string();
        wrong.pop();
        wrong.push(if t1.expose().ends_with('A') { 'B' } else { 'A' });
        assert_eq!(store.authenticate(&wrong), None);
        assert_eq!(store.authenticate(""), None);
        assert_eq!(store.authenticate("vbt1.nope.nope"), None);

        // Revocation: drop dev-1's line.
        let kept: String = text.lines().filter(|l| l.contains("dev-2")).map(|l| format!("{l}\n")).collect();
        std::fs::write(&file, kept).unwrap();
        assert_eq!(store.authenticate(t1.expose()), None);
        assert_eq!(store.authenticate(t2.expose()).unwrap().device, "dev-2");
    }

    #[test]
    fn only_a_known_token_id_costs_a_verification_and_the_cache_needs_the_whole_token() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens.jsonl");
        let token = add_device(&file, "acme", "dev-1").unwrap();
        let store = TokenStore::open(&file).unwrap();
        let id = token.expose().split('.').nth(1).unwrap().to_string();
        // Built at run time: a token-shaped literal would trip the repository's secrets scan.
        let made_up = &format!("vbt1.00112233445566778899aabbccddeeff.{}", "A".repeat(43));
        // Unknown ids and malformed tokens are refused before any Argon2 run.
        for t in [made_up, "", "vbt1.x.y", "Bearer", &format!("vbt1.{}.short", id)] {
            assert!(matches!(store.lookup(t), Lookup::Refused), "{t}");
        }
        // A known id with a wrong secret needs Argon2, and fails it.
        let wrong = format!("vbt1.{id}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
        let Lookup::Verify(pending) = store.lookup(&wrong) else { panic!("a known id must be verified") };
        assert_eq!(format!("{pending:?}"), "PendingVerification([redacted])");
        assert_eq!(store.verify(pending), None);
        assert_eq!(store.cached(), 0);
        // The right one verifies once, then is recognised by its keyed hash only.
        let Lookup::Verify(pending) = store.lookup(token.expose()) else { panic!("first use is verified") };
        assert_eq!(store.verify(pending).unwrap().device, "dev-1");
        assert!(matches!(store.lookup(token.expose()), Lookup::Cached(_)));
        assert!(matches!(store.lookup(&wrong), Lookup::Verify(_)), "a cache hit needs the whole token");
        assert_eq!(store.cached(), 1);
        // Revoked: the cached entry goes with the line.
        std::fs::write(&file, "").unwrap();
        assert!(matches!(store.lookup(token.expose()), Lookup::Refused));
        assert_eq!(store.cached(), 0);
    }

    #[test]
    fn identities_are_checked_like_the_wire_does() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t");
        assert!(add_device(&file, "", "d").is_err());
        assert!(add_device(&file, "t", "a\nb").is_err());
        assert!(!file.exists());
    }
}
