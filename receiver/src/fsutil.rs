//! Small file helpers shared by keys, certificates, tokens and the store: private files are
//! created with mode 0600 and private directories 0700 from the start (never created readable,
//! then narrowed); existing ones are narrowed when a receiver opens them.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Creates `path` (refusing to overwrite) readable by its owner only, writes `bytes`, syncs.
pub fn write_private_new(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| Error::io_path("create", path, e))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| Error::io_path("write", path, e))?;
    sync_parent(path);
    Ok(())
}

/// Creates `path` (refusing to overwrite) with default permissions, writes `bytes`, syncs.
pub fn write_public_new(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = OpenOptions::new().write(true).create_new(true).open(path).map_err(|e| Error::io_path("create", path, e))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| Error::io_path("write", path, e))?;
    sync_parent(path);
    Ok(())
}

/// Makes a new directory entry durable. Best effort: not every platform can open a directory.
pub fn sync_parent(path: &Path) {
    if let Some(parent) = path.parent() {
        let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
        if let Ok(d) = File::open(parent) {
            let _ = d.sync_all();
        }
    }
}

/// Refuses a secret file that others can read (as ssh does), naming the fix.
pub fn check_private_mode(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(|e| Error::io_path("read", path, e))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(Error::Key(format!("{} is readable by others (mode {mode:03o}); run `chmod 600` on it", path.display())));
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Creates `path` and missing parents with the default mode (export output).
pub fn create_dir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|e| Error::io_path("create directory", path, e))
}

/// Creates `path` (and missing parents) readable by its owner only (0700): the receiver's data
/// directory and the archive key directory. An existing directory's mode is left as it is (see
/// [`restrict_dir`]).
pub fn create_private_dir(path: &Path) -> Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(path).map_err(|e| Error::io_path("create directory", path, e))
}

/// Narrows a directory the receiver owns to 0700: the archive's database, lock and
/// certificates are nobody else's business, whatever umask created them.
pub fn restrict_dir(path: &Path) -> Result<()> {
    restrict(path, 0o700)
}

/// Narrows an existing file to 0600 (a missing file is not an error: SQLite creates its
/// `-wal` and `-shm` files later, with the database file's mode).
pub fn restrict_file(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io_path("read", path, e)),
        Ok(_) => restrict(path, 0o600),
    }
}

#[cfg(unix)]
fn restrict(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| Error::io_path("read", path, e))?;
    if meta.permissions().mode() & 0o777 & !mode != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io_path("restrict permissions of", path, e))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn restrict(_path: &Path, _mode: u32) -> Result<()> {
    Ok(())
}

/// Creates `path` empty with mode 0600 if it does not exist, so that a library that creates
/// it otherwise (SQLite: 0644 under the usual umask) finds it already private.
pub fn create_private_file(path: &Path) -> Result<()> {
    let mut opts = OpenOptions::new();
    opts.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path).map(drop).map_err(|e| Error::io_path("create", path, e))
}
