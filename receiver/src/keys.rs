//! The archive key pair: generated once by `verbatim keygen`. The public key goes into the
//! device policy (`archive_public_key`); the private key stays with the archive and opens
//! records at export. The private key file is base64 text, mode 0600, never overwritten.
//!
//! The receiver itself needs only the public keys, to know which key ids it accepts
//! ([`AcceptedKeys`]): an epoch sealed to any other key could never be opened, so it is refused
//! before the device deletes anything.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use verbatim_core::seal::{self, ArchiveSecretKey};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::fsutil;

pub const PRIVATE_KEY_FILE: &str = "archive-private.key";
pub const PUBLIC_KEY_FILE: &str = "archive-public.key";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// Standard base64 of the X25519 public key: the policy's `archive_public_key`.
    pub public_b64: String,
    /// The key id devices report in `policy_applied` and epoch announcements.
    pub key_id: String,
    pub private_path: PathBuf,
    pub public_path: PathBuf,
}

/// Generates a key pair into `dir` (created if missing). Refuses to overwrite either file:
/// losing an archive private key makes every record sealed to it unreadable.
pub fn keygen(dir: &Path) -> Result<KeyInfo> {
    fsutil::create_private_dir(dir)?;
    let private_path = dir.join(PRIVATE_KEY_FILE);
    let public_path = dir.join(PUBLIC_KEY_FILE);
    for p in [&private_path, &public_path] {
        if p.exists() {
            return Err(Error::Key(format!("{} already exists; refusing to overwrite an archive key", p.display())));
        }
    }
    let (secret, public) = seal::generate_archive_keypair();
    let secret_b64 = Zeroizing::new(format!("{}\n", STANDARD.encode(secret.as_bytes())));
    fsutil::write_private_new(&private_path, secret_b64.as_bytes())?;
    let public_b64 = STANDARD.encode(public);
    fsutil::write_public_new(&public_path, format!("{public_b64}\n").as_bytes())?;
    Ok(KeyInfo { public_b64, key_id: seal::key_id(&public), private_path, public_path })
}

/// Reads a private key file written by [`keygen`] (base64 text; raw 32 bytes also accepted).
/// Refuses a file readable by group or others.
pub fn load_secret(path: &Path) -> Result<ArchiveSecretKey> {
    fsutil::check_private_mode(path)?;
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| Error::io_path("read", path, e))?);
    if bytes.len() == seal::KEY_LEN {
        return Ok(ArchiveSecretKey::from_bytes(&bytes)?);
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| Error::Key(format!("{} is not a key file", path.display())))?;
    let raw = Zeroizing::new(
        STANDARD.decode(text.trim()).map_err(|_| Error::Key(format!("{} is not base64 of a 32-byte key", path.display())))?,
    );
    let secret =
        ArchiveSecretKey::from_bytes(&raw).map_err(|_| Error::Key(format!("{} does not hold a 32-byte key", path.display())))?;
    // A key that is not a valid X25519 scalar would only fail later, at export.
    seal::public_key_of(&secret)?;
    Ok(secret)
}

/// Key id of the public key belonging to `secret`.
pub fn key_id_of(secret: &ArchiveSecretKey) -> Result<String> {
    Ok(seal::key_id(&seal::public_key_of(secret)?))
}

/// Reads a public key file written by [`keygen`]: one line of standard base64 of 32 bytes.
pub fn load_public(path: &Path) -> Result<[u8; seal::KEY_LEN]> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io_path("read", path, e))?;
    STANDARD
        .decode(text.trim())
        .ok()
        .and_then(|b| <[u8; seal::KEY_LEN]>::try_from(b).ok())
        .ok_or_else(|| Error::Key(format!("{} is not a public key file (one line of base64 of a 32-byte key)", path.display())))
}

/// The archive key ids a receiver stores epochs for (`verbatim receive --archive-key`, one or
/// more: several during a key rotation). An epoch announced with any other key id is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedKeys {
    ids: BTreeSet<String>,
}

impl AcceptedKeys {
    /// The key ids of these public keys (`seal::key_id`, the id devices announce).
    pub fn from_public_keys<'a>(keys: impl IntoIterator<Item = &'a [u8; seal::KEY_LEN]>) -> AcceptedKeys {
        AcceptedKeys { ids: keys.into_iter().map(seal::key_id).collect() }
    }

    /// Key ids as epochs name them, for tools that hold ids but not keys (writing a store that
    /// an older receiver filled, before ids were checked).
    pub fn from_key_ids<'a>(ids: impl IntoIterator<Item = &'a str>) -> AcceptedKeys {
        AcceptedKeys { ids: ids.into_iter().map(str::to_string).collect() }
    }

    /// Reads key files: a file named `archive-private.key` (as [`keygen`] names it) is read as a
    /// private key and its public key derived; any other file as a public key file. Both hold
    /// one base64 line, so the name is what tells them apart. Refuses an empty list.
    pub fn load(files: &[PathBuf]) -> Result<AcceptedKeys> {
        if files.is_empty() {
            return Err(Error::Config(
                "at least one archive key is needed (--archive-key FILE: archive-public.key from `verbatim keygen`)".into(),
            ));
        }
        let mut publics = Vec::with_capacity(files.len());
        for f in files {
            let is_private = f.file_name().is_some_and(|n| n == PRIVATE_KEY_FILE);
            publics.push(if is_private { seal::public_key_of(&load_secret(f)?)? } else { load_public(f)? });
        }
        Ok(AcceptedKeys::from_public_keys(&publics))
    }

    pub fn contains(&self, key_id: &str) -> bool {
        self.ids.contains(key_id)
    }

    /// The accepted key ids, sorted.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.ids.iter().map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_writes_a_private_file_only_the_owner_reads_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let info = keygen(dir.path()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&info.private_path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let secret = load_secret(&info.private_path).unwrap();
        assert_eq!(STANDARD.encode(seal::public_key_of(&secret).unwrap()), info.public_b64);
        assert_eq!(key_id_of(&secret).unwrap(), info.key_id);
        assert!(matches!(keygen(dir.path()), Err(Error::Key(_))));
    }

    #[cfg(unix)]
    #[test]
    fn a_key_readable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let info = keygen(dir.path()).unwrap();
        std::fs::set_permissions(&info.private_path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_secret(&info.private_path).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
    }

    #[test]
    fn accepted_keys_come_from_public_or_private_key_files() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let ka = keygen(a.path()).unwrap();
        let kb = keygen(b.path()).unwrap();
        let accepted = AcceptedKeys::load(&[ka.public_path.clone(), kb.private_path.clone()]).unwrap();
        let mut want = vec![ka.key_id.clone(), kb.key_id.clone()];
        want.sort();
        assert_eq!(accepted.ids().collect::<Vec<_>>(), want);
        assert!(accepted.contains(&ka.key_id) && accepted.contains(&kb.key_id));
        assert!(!accepted.contains("attacker-key-id"));

        assert!(matches!(AcceptedKeys::load(&[]), Err(Error::Config(_))));
        let bad = a.path().join("not-a-key");
        std::fs::write(&bad, "hello\n").unwrap();
        let e = AcceptedKeys::load(&[bad]).unwrap_err();
        assert!(e.to_string().contains("not a public key file"), "{e}");
        assert!(AcceptedKeys::load(&[a.path().join("missing.key")]).is_err());
    }
}
