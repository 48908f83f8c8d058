//! Reading an export back: which captured events it holds, and how often. An archive team
//! reconciles this against the device's own count (`verbatim demo` and the crash harness do).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Source ids of the captured events in an export directory, each with the number of times
/// it appears: messages, edits, unsends, reactions, calls, attachments and omitted
/// attachments. A call's recording carries the call's id, so it is not counted again. A
/// directory that does not exist holds nothing.
pub fn source_ids(export_dir: &Path) -> Result<BTreeMap<String, u64>> {
    let mut ids = BTreeMap::new();
    if !export_dir.exists() {
        return Ok(ids);
    }
    for file in jsonl_files(export_dir)? {
        let reader = BufReader::new(File::open(&file).map_err(|e| Error::io_path("open", &file, e))?);
        for (n, line) in reader.lines().enumerate() {
            let line = line.map_err(|e| Error::io_path("read", &file, e))?;
            let v: serde_json::Value = serde_json::from_str(&line)
                .map_err(|e| Error::Export(format!("{} line {}: not JSON ({})", file.display(), n + 1, json_error_kind(&e))))?;
            if let Some(id) = captured_source_id(&v) {
                *ids.entry(id.to_string()).or_insert(0) += 1;
            }
        }
    }
    Ok(ids)
}

fn captured_source_id(v: &serde_json::Value) -> Option<&str> {
    let recording = |id: &serde_json::Value| id.as_str().is_some_and(|s| s.starts_with("recording:"));
    match v["type"].as_str() {
        Some("message" | "edit" | "unsend" | "reaction" | "call") => v["meta"]["source_id"].as_str(),
        Some("attachment_start") if !recording(&v["attachment_id"]) => v["meta"]["source_id"].as_str(),
        Some("attachment_omitted") if !recording(&v["header"]["attachment_id"]) => v["header"]["meta"]["source_id"].as_str(),
        _ => None,
    }
}

/// The kind of a JSON error without its text, which may quote the line.
fn json_error_kind(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Io => "read error",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "unexpected data",
        serde_json::error::Category::Eof => "truncated",
    }
}

fn jsonl_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io_path("read directory", dir, e))? {
        let path = entry.map_err(|e| Error::io_path("read directory", dir, e))?.path();
        if path.is_dir() {
            out.extend(jsonl_files(&path)?);
        } else if path.extension().is_some_and(|e| e == "jsonl") {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_captured_events_once_and_recordings_not_again() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("t/d/s");
        std::fs::create_dir_all(&sub).unwrap();
        let lines = [
            r#"{"type":"message","meta":{"source_id":"m1"}}"#,
            r#"{"type":"message","meta":{"source_id":"m1"}}"#,
            r#"{"type":"call","meta":{"source_id":"c1"}}"#,
            r#"{"type":"attachment_start","attachment_id":"recording:c1","meta":{"source_id":"c1"}}"#,
            r#"{"type":"attachment_start","attachment_id":"a1","meta":{"source_id":"a1"}}"#,
            r#"{"type":"attachment_omitted","header":{"attachment_id":"a2","meta":{"source_id":"a2"}}}"#,
            r#"{"type":"agent","event":"heartbeat"}"#,
        ];
        std::fs::write(sub.join("records.jsonl"), lines.join("\n")).unwrap();
        let ids = source_ids(dir.path()).unwrap();
        let expected: BTreeMap<String, u64> =
            [("m1", 2), ("c1", 1), ("a1", 1), ("a2", 1)].into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        assert_eq!(ids, expected);
        assert!(source_ids(&dir.path().join("absent")).unwrap().is_empty());
    }

    #[test]
    fn a_damaged_line_is_named_without_its_content() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.jsonl"), "{\"type\":\"message\"}\n{\"secret-content\n").unwrap();
        let e = source_ids(dir.path()).unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
        assert!(!e.contains("secret-content"), "{e}");
    }
}
