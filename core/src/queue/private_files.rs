//! The store's files are nobody else's business: ciphertext, ids, sizes and times. The data
//! directory (and every directory the store makes in it) is 0700, the database and the lock
//! file 0600; SQLite gives its `-wal` and `-shm` files the database file's mode. Modes are set
//! when a file is made and tightened again at every open, for stores made before this rule.

use std::path::Path;

use crate::error::Result;

/// Creates `dir` (and missing parents) readable by the owner only, or tightens it.
pub(crate) fn dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)?;
    set_mode(dir, 0o700)
}

/// Makes `path` an owner-only file, creating it empty when it does not exist yet (so that
/// SQLite opens a file that was never readable by others, even for an instant); returns it
/// open for writing.
pub(crate) fn file(path: &Path) -> Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).truncate(false).write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options.open(path)?;
    set_mode(path, 0o600)?;
    Ok(file)
}

/// Tightens `path` to owner-only if it exists (the database's `-wal` and `-shm` files).
pub(crate) fn tighten_if_present(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => set_mode(path, 0o600),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> Result<()> {
    Ok(())
}
