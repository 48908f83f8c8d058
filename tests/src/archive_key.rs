//! Archive key.

#[allow(unused_imports)]
use super::*;

pub struct ArchiveKey {
    pub secret: ArchiveSecretKey,
    pub public: [u8; 32],
}

impl ArchiveKey {
    pub fn generate() -> ArchiveKey {
        let (secret, public) = generate_archive_keypair();
        ArchiveKey { secret, public }
    }

    pub fn secret_copy(&self) -> ArchiveSecretKey {
        ArchiveSecretKey::from_bytes(self.secret.as_bytes()).expect("32-byte key")
    }
}
