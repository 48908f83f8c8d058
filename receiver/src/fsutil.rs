//! Small file helpers shared by keys, certificates and tokens: private files are created with
//! mode 0600 from the first byte (never created readable, then narrowed).

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

pub fn create_dir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|e| Error::io_path("create directory", path, e))
}
