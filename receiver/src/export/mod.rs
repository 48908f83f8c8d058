//! Export: opens every held record with the archive private keys and writes, per stream,
//! JSON Lines (one object per record), reassembled attachment files, and one RFC 5322
//! message per conversation event (docs/export-formats.md). Streams records one at a time:
//! memory stays bounded by one record and one attachment chunk.
//!
//! Streams are exported independently: one stream that cannot be written (or read) is
//! reported as failed and every other stream is still exported.

mod eml;
mod names;
mod participant;
mod source_ids;
mod stream;

pub use source_ids::source_ids;

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;
use verbatim_core::chain::StreamId;
use verbatim_core::seal::ArchiveSecretKey;

use crate::error::{Error, Result};
use crate::store::ArchiveReader;
use crate::store::sqlite::SqliteReader;

/// What one stream's export produced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StreamExport {
    pub tenant: String,
    pub device: String,
    pub stream: String,
    /// Relative to the output directory.
    pub jsonl: String,
    pub records: u64,
    pub messages: u64,
    pub edits: u64,
    pub unsends: u64,
    pub reactions: u64,
    pub calls: u64,
    /// Attachments reassembled (call recordings included).
    pub attachments: u64,
    pub attachments_omitted: u64,
    pub agent_events: u64,
    pub eml_files: u64,
    /// Records that did not open (each still has an `unreadable` line).
    pub unreadable: u64,
    /// Records whose keys were erased from the key vault (each has an `erased` line naming
    /// the erasure); still counted in the chain.
    pub erased: u64,
    /// The erasures (vault ids) those records belong to.
    pub erasures: Vec<i64>,
    /// Key records of conversation-key epochs (each has a `key_record` line; keys are never
    /// exported).
    pub key_records: u64,
    /// Records left out by a participant filter (`export --participant`).
    pub not_selected: u64,
    /// Records that did not open (one line per record whose own seal failed, one per epoch
    /// that no key opens), attachments that did not reassemble or whose SHA-256 did not
    /// match. Never content.
    pub errors: Vec<String>,
    /// Why this stream's export stopped before its end (its output is incomplete); `None`
    /// when it was exported in full.
    pub failure: Option<String>,
}

impl StreamExport {
    fn new(id: &StreamId, paths: &stream::StreamPaths) -> StreamExport {
        StreamExport {
            tenant: id.tenant.clone(),
            device: id.device.clone(),
            stream: id.stream.clone(),
            jsonl: paths.jsonl.clone(),
            ..StreamExport::default()
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExportSummary {
    pub streams: Vec<StreamExport>,
    pub records: u64,
    pub messages: u64,
    pub attachments: u64,
    pub agent_events: u64,
    pub eml_files: u64,
    pub unreadable: u64,
    pub erased: u64,
    /// The erasures met, as the vault's audit tells them.
    pub erasures: Vec<crate::vault::erase::ErasureEntry>,
    pub errors: u64,
    /// Streams whose export stopped before their end (see [`StreamExport::failure`]).
    pub failed_streams: u64,
}

impl ExportSummary {
    /// Everything exported, nothing to report.
    pub fn ok(&self) -> bool {
        self.errors == 0 && self.failed_streams == 0
    }

    /// Every stream was exported to its end (records may still have been reported).
    pub fn complete(&self) -> bool {
        self.failed_streams == 0
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|_| "{}".to_string())
    }

    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for s in &self.streams {
            // Ids come from devices: nothing in them may steer the terminal or reorder the line.
            let (tenant, device, stream) =
                (eml::header_safe(&s.tenant), eml::header_safe(&s.device), eml::header_safe(&s.stream));
            out.push_str(&format!(
                "{}/{}/{}: {} records, {} messages, {} edits, {} unsends, {} reactions, {} calls, {} attachments ({} omitted), {} agent events, {} .eml, {} unreadable, {} erased -> {}\n",
                tenant, device, stream, s.records, s.messages, s.edits, s.unsends, s.reactions, s.calls,
                s.attachments, s.attachments_omitted, s.agent_events, s.eml_files, s.unreadable, s.erased, s.jsonl
            ));
            for e in &s.errors {
                out.push_str(&format!("    error: {e}\n"));
            }
            if let Some(f) = &s.failure {
                out.push_str(&format!("    FAILED: {f} (this stream's export is incomplete)\n"));
            }
        }
        out.push_str(&format!(
            "{} stream(s): {} records, {} messages, {} attachments, {} agent events, {} .eml files, {} unreadable, {} erased; {} error(s)\n",
            self.streams.len(),
            self.records,
            self.messages,
            self.attachments,
            self.agent_events,
            self.eml_files,
            self.unreadable,
            self.erased,
            self.errors
        ));
        for e in &self.erasures {
            out.push_str(&format!(
                "    erasure {} ({}, {}, audit entry {}): {}\n",
                e.erasure,
                e.kind,
                crate::time::rfc3339(e.at_ms),
                e.audit_seq,
                e.status.state
            ));
        }
        if !self.complete() {
            out.push_str(&format!("export INCOMPLETE: {} stream(s) failed:\n", self.failed_streams));
            for s in self.streams.iter().filter(|s| s.failure.is_some()) {
                let (tenant, device, stream) =
                    (eml::header_safe(&s.tenant), eml::header_safe(&s.device), eml::header_safe(&s.stream));
                out.push_str(&format!("    {tenant}/{device}/{stream}\n"));
            }
        }
        out
    }

    fn add(&mut self, s: StreamExport) {
        self.records += s.records;
        self.messages += s.messages;
        self.attachments += s.attachments;
        self.agent_events += s.agent_events;
        self.eml_files += s.eml_files;
        self.unreadable += s.unreadable;
        self.erased += s.erased;
        self.errors += s.errors.len() as u64;
        self.failed_streams += u64::from(s.failure.is_some());
        self.streams.push(s);
    }
}

/// The archive private keys an export may use, by key id (the id devices name in each epoch:
/// `verbatim_core::seal::key_id` of the public key). Several keys serve key rotation.
pub struct KeyRing {
    keys: HashMap<String, ArchiveSecretKey>,
}

impl KeyRing {
    pub fn new(secrets: &[ArchiveSecretKey]) -> Result<KeyRing> {
        let mut keys = HashMap::new();
        for secret in secrets {
            keys.insert(crate::keys::key_id_of(secret)?, ArchiveSecretKey::from_bytes(secret.as_bytes())?);
        }
        Ok(KeyRing { keys })
    }

    pub(crate) fn get(&self, key_id: &str) -> Option<&ArchiveSecretKey> {
        self.keys.get(key_id)
    }
}

/// A device-supplied archive key id, fit for a report: as is when it looks like a key id,
/// else shortened and with anything but printable ASCII escaped.
fn shown_key_id(raw: &str) -> String {
    let plain = raw.len() <= 64 && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if plain {
        return raw.to_string();
    }
    let mut shown: String = raw.chars().take(64).flat_map(char::escape_default).collect();
    if raw.chars().count() > 64 {
        shown.push_str("...");
    }
    format!("\"{shown}\"")
}

/// Exports everything held in `data_dir` into `out_dir` with one archive private key; see
/// [`export_with_keys`].
pub fn export(data_dir: &Path, secret: &ArchiveSecretKey, out_dir: &Path) -> Result<ExportSummary> {
    export_with_keys(data_dir, std::slice::from_ref(secret), out_dir)
}

/// Exports everything held in `data_dir` into `out_dir` (created if missing; files of an
/// earlier export are overwritten), opening each epoch with the key of `secrets` whose id it
/// names. Per-record problems are listed in the summary and the export goes on; a stream
/// that cannot be read or written is listed as failed and the other streams are exported.
/// Only failing to open the store, list its streams or create `out_dir` stops it.
pub fn export_with_keys(data_dir: &Path, secrets: &[ArchiveSecretKey], out_dir: &Path) -> Result<ExportSummary> {
    let mut reader = SqliteReader::open(data_dir)?; // one consistent snapshot
    export_reader(&mut reader, secrets, out_dir)
}

/// [`export_with_keys`] over any store's reader.
pub fn export_reader(reader: &mut dyn ArchiveReader, secrets: &[ArchiveSecretKey], out_dir: &Path) -> Result<ExportSummary> {
    let keys = ExportKeys { ring: KeyRing::new(secrets)?, vault: None };
    export_with(reader, &keys, &ExportOptions::default(), out_dir)
}

/// Where an export finds keys: archive private keys, the key vault, or both. With the vault,
/// records whose keys were erased are reported as erased even while the archive key that
/// sealed them still exists.
pub struct ExportKeys<'v> {
    pub ring: KeyRing,
    pub vault: Option<&'v crate::vault::Vault>,
}

/// What an export selects.
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// Only the messages, edits, unsends, reactions, calls and attachments in which this
    /// handle took part (a subject access request); agent events and the rest are left out.
    pub participant: Option<String>,
}

/// Exports what `reader` holds with `keys`, as `options` select.
pub fn export_with(
    reader: &mut dyn ArchiveReader,
    keys: &ExportKeys<'_>,
    options: &ExportOptions,
    out_dir: &Path,
) -> Result<ExportSummary> {
    crate::fsutil::create_dir(out_dir)?;
    let mut summary = ExportSummary::default();
    let mut claims = names::PathClaims::default();
    for id in reader.streams()? {
        summary.add(export_stream(reader, &id, out_dir, keys, options, &mut claims));
    }
    if let Some(vault) = keys.vault {
        let met: std::collections::BTreeSet<i64> = summary.streams.iter().flat_map(|s| s.erasures.iter().copied()).collect();
        summary.erasures = crate::vault::erase::list(vault)?.into_iter().filter(|e| met.contains(&e.erasure)).collect();
    }
    Ok(summary)
}

/// One stream's export; whatever stops it is the stream's failure, never the export's.
fn export_stream(
    reader: &mut dyn ArchiveReader,
    id: &StreamId,
    out_dir: &Path,
    keys: &ExportKeys<'_>,
    options: &ExportOptions,
    claims: &mut names::PathClaims,
) -> StreamExport {
    let paths = stream::StreamPaths::of(id);
    let failed = |why: String| StreamExport { failure: Some(why), ..StreamExport::new(id, &paths) };
    // Distinct ids get distinct paths unless SHA-256 collides; should someone find such a
    // pair, the second stream is refused rather than allowed to overwrite the first.
    let owner = serde_json::to_string(id).unwrap_or_default();
    if claims.claim(&paths.dir, &owner).is_err() {
        return failed(format!("export path {} is already taken by another stream", paths.dir));
    }
    let epochs = match reader.epochs(id) {
        Ok(e) => e,
        Err(e) => return failed(e.to_string()),
    };
    let mut exporter = match stream::StreamExporter::create(out_dir, id, &paths, epochs, keys, options) {
        Ok(x) => x,
        Err(e) => return failed(e.to_string()),
    };
    let read = reader.for_each_record(id, &mut |r| {
        exporter.record(r)?;
        Ok(true)
    });
    match read {
        Ok(()) => exporter.finish(),
        Err(e) => exporter.abandon(&e),
    }
}

pub(crate) fn write_err(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let what = format!("{what} {}", path.display());
    move |e| Error::Io { what, source: e }
}
