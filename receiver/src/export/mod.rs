//! Export: opens every held record with the archive private key and writes, per stream,
//! JSON Lines (one object per record), reassembled attachment files, and one RFC 5322
//! message per conversation event (docs/export-formats.md). Streams records one at a time:
//! memory stays bounded by one record and one attachment chunk.

mod eml;
mod names;
mod source_ids;
mod stream;

pub use source_ids::source_ids;

use std::path::Path;

use serde::Serialize;
use verbatim_core::seal::ArchiveSecretKey;

use crate::error::{Error, Result};
use crate::store::read;

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
    /// Records that did not open, attachments that did not reassemble or whose SHA-256 did
    /// not match, files that could not be written. Never content.
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExportSummary {
    pub streams: Vec<StreamExport>,
    pub records: u64,
    pub messages: u64,
    pub attachments: u64,
    pub agent_events: u64,
    pub eml_files: u64,
    pub errors: u64,
}

impl ExportSummary {
    pub fn ok(&self) -> bool {
        self.errors == 0
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|_| "{}".to_string())
    }

    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for s in &self.streams {
            out.push_str(&format!(
                "{}/{}/{}: {} records, {} messages, {} edits, {} unsends, {} reactions, {} calls, {} attachments ({} omitted), {} agent events, {} .eml -> {}\n",
                s.tenant, s.device, s.stream, s.records, s.messages, s.edits, s.unsends, s.reactions, s.calls,
                s.attachments, s.attachments_omitted, s.agent_events, s.eml_files, s.jsonl
            ));
            for e in &s.errors {
                out.push_str(&format!("    error: {e}\n"));
            }
        }
        out.push_str(&format!(
            "{} stream(s): {} records, {} messages, {} attachments, {} agent events, {} .eml files; {} error(s)\n",
            self.streams.len(),
            self.records,
            self.messages,
            self.attachments,
            self.agent_events,
            self.eml_files,
            self.errors
        ));
        out
    }
}

/// Exports everything held in `data_dir` into `out_dir` (created if missing; files of an
/// earlier export are overwritten). Per-record problems are listed in the summary and the
/// export goes on; only a failure to read the store or write the output stops it.
pub fn export(data_dir: &Path, secret: &ArchiveSecretKey, out_dir: &Path) -> Result<ExportSummary> {
    crate::fsutil::create_dir(out_dir)?;
    let mut conn = read::open_read_only(data_dir)?;
    let tx = conn.transaction()?; // one consistent snapshot
    let mut summary = ExportSummary::default();
    for (sid, id) in read::streams(&tx)? {
        let epochs = read::epochs(&tx, sid)?;
        let key = ArchiveSecretKey::from_bytes(secret.as_bytes())?;
        let mut exporter = stream::StreamExporter::create(out_dir, &id, epochs, key)?;
        read::for_each_record(&tx, sid, |r| {
            exporter.record(r)?;
            Ok(true)
        })?;
        let s = exporter.finish()?;
        summary.records += s.records;
        summary.messages += s.messages;
        summary.attachments += s.attachments;
        summary.agent_events += s.agent_events;
        summary.eml_files += s.eml_files;
        summary.errors += s.errors.len() as u64;
        summary.streams.push(s);
    }
    Ok(summary)
}

pub(crate) fn write_err(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let what = format!("{what} {}", path.display());
    move |e| Error::Io { what, source: e }
}
