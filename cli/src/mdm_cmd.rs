//! `verbatim policy export-artifacts --out DIR`: writes the MDM artifacts generated from the
//! policy schema (AppConfig specfile, Intune and Jamf samples, Android managed-configuration
//! resources) to their committed places under DIR (the repository root, to regenerate them).
//! The generators are in `verbatim_core::policy::artifacts`; this only writes files.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::output::outln;
use verbatim_core::policy::artifacts::{self, PLACEHOLDER_BUNDLE_ID};

/// Exit code for a bad argument or a file that could not be written.
const EXIT_FAILED: u8 = 2;

#[derive(clap::Args)]
pub struct ExportArgs {
    /// Root directory to write under (the repository root to regenerate the committed copies).
    #[arg(long)]
    out: PathBuf,
    /// The iOS bundle identifier of the app embedding Verbatim, written into the AppConfig
    /// specfile. Letters and digits in dot-separated parts (the AppConfig schema allows no
    /// hyphens or underscores).
    #[arg(long, default_value = PLACEHOLDER_BUNDLE_ID)]
    bundle_id: String,
}

/// Writes every artifact; prints one line per file: `created`, `updated` or `unchanged`.
pub fn export_artifacts(args: ExportArgs) -> ExitCode {
    if !artifacts::is_valid_bundle_id(&args.bundle_id) {
        eprintln!(
            "error: --bundle-id {:?} is not a bundle identifier the AppConfig schema accepts \
             (letters and digits in at least two dot-separated parts, e.g. com.example.app)",
            args.bundle_id
        );
        return ExitCode::from(EXIT_FAILED);
    }
    for artifact in artifacts::artifacts(&args.bundle_id) {
        let path = args.out.join(artifact.path);
        match write_if_changed(&path, &artifact.contents) {
            Ok(outcome) => outln!("{outcome} {}", path.display()),
            Err(e) => {
                eprintln!("error: {}: {e}", path.display());
                return ExitCode::from(EXIT_FAILED);
            }
        }
    }
    ExitCode::SUCCESS
}

/// Writes `contents` to `path` (creating parent directories) unless it already holds exactly
/// that; says which happened.
fn write_if_changed(path: &Path, contents: &str) -> std::io::Result<&'static str> {
    let existing = match std::fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    if existing.as_deref() == Some(contents.as_bytes()) {
        return Ok("unchanged");
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, contents)?;
    Ok(if existing.is_some() { "updated" } else { "created" })
}
