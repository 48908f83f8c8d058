//! Reading a policy file as an MDM admin would push it. Only for tools (the CLI); on a phone
//! the platform hands the tree over directly. The format is told by the content, never the
//! file name:
//! - an XML property list, whole or just the `<dict>` pasted into Intune's "Enter XML data"
//!   (iOS/iPadOS) or Jamf Pro's App Configuration, or a binary property list;
//! - Intune's Android "Enter JSON data" managed configuration: an object with a
//!   `managedProperty` array of `{"key": ..., "valueString" | "valueInteger" | "valueBool" |
//!   "valueStringArray" | "valueBundle" | "valueBundleArray": ...}` entries;
//! - a plain JSON dictionary of keys.
//!
//! Values are converted as the platform layers convert them (iOS `PolicyTree.swift`, Android
//! `PolicyTree.kt`), so a file checked here is read as the phone reads it:
//! - a real (`<real>15</real>`, JSON `15.0`) stays a real: the parser decides (a whole number is
//!   accepted where an integer belongs, anything else is refused by key);
//! - JSON `null` is an absent key (what a console sends for a blank field);
//! - an integer beyond the signed 64-bit range becomes its text, refused by key;
//! - a plist `<date>`, `<data>` or UID is left out, its key path reported in
//!   [`Loaded::left_out`] (never its value), so the key reads as not set.
//!
//! Only malformed files are errors here; every problem with a value is the parser's, reported
//! with all the others.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use super::Value;

/// The largest policy file read. Real policies are a few KiB; the limit keeps a wrong path
/// (a disk image, a log) from being read whole.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Why bytes are not a policy tree.
#[derive(Debug)]
pub enum FormatError {
    /// Neither a property list (`<`, `bplist`) nor a JSON object (`{`).
    UnknownFormat,
    /// The property list is malformed; the detail is the `plist` crate's (kind and offset only).
    Plist(String),
    /// The JSON is malformed; the detail is `serde_json`'s (kind, line and column only).
    Json(String),
    /// An Intune managed-configuration object whose entries are not `{"key", "value..."}`;
    /// the detail names the entry.
    Intune(String),
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormatError::UnknownFormat => f.write_str("not a property list or JSON object (expected `<?xml`, `bplist` or `{`)"),
            FormatError::Plist(detail) => write!(f, "malformed property list: {detail}"),
            FormatError::Json(detail) => write!(f, "malformed JSON: {detail}"),
            FormatError::Intune(detail) => write!(f, "Intune managed configuration: {detail}"),
        }
    }
}

impl std::error::Error for FormatError {}

/// Why a policy file could not be loaded. `Display` names the file and what failed.
#[derive(Debug)]
pub enum FileError {
    Read { path: PathBuf, source: std::io::Error },
    TooLarge { path: PathBuf, bytes: u64 },
    Format { path: PathBuf, source: FormatError },
}

impl FileError {
    pub fn path(&self) -> &Path {
        match self {
            FileError::Read { path, .. } | FileError::TooLarge { path, .. } | FileError::Format { path, .. } => path,
        }
    }
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileError::Read { path, source } => write!(f, "{}: cannot read: {source}", path.display()),
            FileError::TooLarge { path, bytes } => {
                write!(f, "{}: too large for a policy ({bytes} bytes, at most {MAX_FILE_BYTES})", path.display())
            }
            FileError::Format { path, source } => write!(f, "{}: {source}", path.display()),
        }
    }
}

impl std::error::Error for FileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FileError::Read { source, .. } => Some(source),
            FileError::Format { source, .. } => Some(source),
            FileError::TooLarge { .. } => None,
        }
    }
}

/// Which of the accepted formats a file was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// An XML or binary property list (whole, or a bare `<dict>`).
    PropertyList,
    /// Intune's Android managed configuration JSON (`managedProperty` entries).
    IntuneManagedProperties,
    /// A JSON dictionary of keys.
    Json,
}

impl Format {
    pub fn describe(self) -> &'static str {
        match self {
            Format::PropertyList => "property list",
            Format::IntuneManagedProperties => "Intune Android managed configuration (JSON)",
            Format::Json => "JSON dictionary",
        }
    }
}

/// A policy file read into a tree.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub tree: Value,
    pub format: Format,
    /// Key paths (`archive_url`, `tls_pins[2]`) whose values were left out because no key takes
    /// their type (a plist date, data or UID).
    pub left_out: Vec<String>,
}

/// Reads a policy file, choosing the format by its content (not its extension).
pub fn load(path: &Path) -> Result<Value, FileError> {
    read(path).map(|loaded| loaded.tree)
}

/// As [`load`], also saying which format it was and what was left out.
pub fn read(path: &Path) -> Result<Loaded, FileError> {
    let read_error = |source| FileError::Read { path: path.to_path_buf(), source };
    let size = std::fs::metadata(path).map_err(read_error)?.len();
    if size > MAX_FILE_BYTES {
        return Err(FileError::TooLarge { path: path.to_path_buf(), bytes: size });
    }
    let bytes = std::fs::read(path).map_err(read_error)?;
    read_bytes(&bytes).map_err(|source| FileError::Format { path: path.to_path_buf(), source })
}

/// Parses policy bytes, choosing by content: `bplist` or `<` (after an optional UTF-8 byte
/// order mark and blanks) is a property list, `{` is JSON (Intune's managed properties when it
/// holds a `managedProperty` array, else a dictionary of keys).
pub fn from_bytes(bytes: &[u8]) -> Result<Value, FormatError> {
    read_bytes(bytes).map(|loaded| loaded.tree)
}

/// As [`from_bytes`], also saying which format it was and what was left out.
pub fn read_bytes(bytes: &[u8]) -> Result<Loaded, FormatError> {
    let text = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes).trim_ascii_start();
    let mut left_out = Vec::new();
    let (tree, format) = if text.starts_with(b"bplist") {
        let plist = plist::Value::from_reader(Cursor::new(text)).map_err(|e| FormatError::Plist(e.to_string()))?;
        (convert_plist(&plist, "(root)", &mut left_out), Format::PropertyList)
    } else if text.starts_with(b"<") {
        let plist = plist::Value::from_reader_xml(text).map_err(|e| FormatError::Plist(e.to_string()))?;
        (convert_plist(&plist, "(root)", &mut left_out), Format::PropertyList)
    } else if text.starts_with(b"{") {
        let json: serde_json::Value = serde_json::from_slice(text).map_err(|e| FormatError::Json(e.to_string()))?;
        match json.get("managedProperty") {
            Some(entries) => (intune_entries(entries, "(root)")?, Format::IntuneManagedProperties),
            None => (convert_json(&json), Format::Json),
        }
    } else {
        return Err(FormatError::UnknownFormat);
    };
    Ok(Loaded { tree, format, left_out })
}

/// Parses an XML or binary property list (the `plist` crate tells them apart).
pub fn from_plist_bytes(bytes: &[u8]) -> Result<Value, FormatError> {
    let plist = plist::Value::from_reader(Cursor::new(bytes)).map_err(|e| FormatError::Plist(e.to_string()))?;
    Ok(convert_plist(&plist, "(root)", &mut Vec::new()))
}

/// Parses a JSON document (either JSON form).
pub fn from_json_bytes(bytes: &[u8]) -> Result<Value, FormatError> {
    let text = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes).trim_ascii_start();
    if !text.starts_with(b"{") {
        let json: serde_json::Value = serde_json::from_slice(text).map_err(|e| FormatError::Json(e.to_string()))?;
        return Ok(convert_json(&json));
    }
    read_bytes(text).map(|loaded| loaded.tree)
}

/// The path of a child for messages: `key` at the top level, `parent.key` below it.
fn child_path(parent: &str, key: &str) -> String {
    let key: String = key.chars().take(64).map(|c| if c.is_control() { '?' } else { c }).collect();
    if parent == "(root)" { key } else { format!("{parent}.{key}") }
}

/// A plist value as a tree value; `None` (and its path in `left_out`) for a type no key takes.
fn plist_value(value: &plist::Value, key: &str, left_out: &mut Vec<String>) -> Option<Value> {
    Some(match value {
        plist::Value::String(s) => Value::String(s.clone()),
        plist::Value::Boolean(b) => Value::Bool(*b),
        plist::Value::Integer(n) => match n.as_signed() {
            Some(i) => Value::Integer(i),
            // Beyond i64: its text, which the parser refuses by key (as iOS passes it).
            None => Value::String(n.to_string()),
        },
        plist::Value::Real(r) => Value::Real(*r),
        plist::Value::Array(items) => Value::List(
            items.iter().enumerate().filter_map(|(i, item)| plist_value(item, &format!("{key}[{}]", i + 1), left_out)).collect(),
        ),
        plist::Value::Dictionary(dict) => Value::Dict(
            dict.iter()
                .filter_map(|(k, v)| Some((k.clone(), plist_value(v, &child_path(key, k), left_out)?)))
                .collect::<BTreeMap<_, _>>(),
        ),
        // Date, data, UID, and any future variant of the non-exhaustive `plist::Value`.
        _ => {
            left_out.push(key.to_string());
            return None;
        }
    })
}

fn convert_plist(value: &plist::Value, key: &str, left_out: &mut Vec<String>) -> Value {
    plist_value(value, key, left_out).unwrap_or_else(|| Value::Dict(BTreeMap::new()))
}

/// A JSON value as a tree value; `None` for `null` (an absent key).
fn json_value(value: &serde_json::Value) -> Option<Value> {
    Some(match value {
        serde_json::Value::Null => return None,
        serde_json::Value::String(s) => Value::String(s.clone()),
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) if !n.is_f64() => Value::Integer(i),
            (_, Some(r)) if n.is_f64() => Value::Real(r),
            // A whole number beyond i64: its text, refused by key.
            _ => Value::String(n.to_string()),
        },
        serde_json::Value::Array(items) => Value::List(items.iter().filter_map(json_value).collect()),
        serde_json::Value::Object(map) => {
            Value::Dict(map.iter().filter_map(|(k, v)| Some((k.clone(), json_value(v)?))).collect::<BTreeMap<_, _>>())
        }
    })
}

fn convert_json(value: &serde_json::Value) -> Value {
    json_value(value).unwrap_or_else(|| Value::Dict(BTreeMap::new()))
}

/// Intune's `managedProperty` array as a dictionary: each entry's `key` maps to its one
/// `value...` field (a bundle's own `managedProperty` array becomes a nested dictionary).
fn intune_entries(entries: &serde_json::Value, at: &str) -> Result<Value, FormatError> {
    let serde_json::Value::Array(entries) = entries else {
        return Err(FormatError::Intune(format!("{at}: managedProperty must be an array")));
    };
    let mut out = BTreeMap::new();
    for (i, entry) in entries.iter().enumerate() {
        let Some(key) = entry.get("key").and_then(serde_json::Value::as_str) else {
            return Err(FormatError::Intune(format!("{at}: entry {} has no \"key\" string", i + 1)));
        };
        let path = child_path(at, key);
        let Some(object) = entry.as_object() else { continue };
        let values: Vec<(&String, &serde_json::Value)> = object.iter().filter(|(k, _)| k.starts_with("value")).collect();
        let value = match values.as_slice() {
            [] => None,
            [(field, value)] => intune_value(field, value, &path)?,
            _ => return Err(FormatError::Intune(format!("{path}: more than one value field"))),
        };
        if let Some(value) = value {
            out.insert(key.to_string(), value);
        }
    }
    Ok(Value::Dict(out))
}

fn intune_value(field: &str, value: &serde_json::Value, path: &str) -> Result<Option<Value>, FormatError> {
    match field {
        "valueBundle" => match value.get("managedProperty") {
            Some(entries) => intune_entries(entries, path).map(Some),
            None => Ok(json_value(value)),
        },
        "valueBundleArray" => {
            let serde_json::Value::Array(bundles) = value else {
                return Err(FormatError::Intune(format!("{path}: valueBundleArray must be an array")));
            };
            let mut items = Vec::with_capacity(bundles.len());
            for (i, bundle) in bundles.iter().enumerate() {
                let item_path = format!("{path}[{}]", i + 1);
                match bundle.get("managedProperty") {
                    Some(entries) => items.push(intune_entries(entries, &item_path)?),
                    None => items.extend(json_value(bundle)),
                }
            }
            Ok(Some(Value::List(items)))
        }
        // valueString, valueInteger, valueBool, valueStringArray: the JSON value as it is, so
        // a wrong type is the parser's to name.
        _ => Ok(json_value(value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_plist() {
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
  <!-- a comment -->
  <key>s</key><string>x</string>
  <key>n</key><integer>42</integer>
  <key>b</key><true/>
  <key>l</key><array><string>a</string><string>b</string></array>
</dict>
</plist>"#;
        let v = from_bytes(xml).unwrap();
        let expected = Value::dict([
            ("s", Value::from("x")),
            ("n", Value::from(42)),
            ("b", Value::from(true)),
            ("l", Value::List(vec!["a".into(), "b".into()])),
        ]);
        assert_eq!(v, expected);
    }

    #[test]
    fn binary_plist() {
        let mut dict = plist::Dictionary::new();
        dict.insert("n".into(), plist::Value::Integer(7.into()));
        dict.insert("s".into(), plist::Value::String("x".into()));
        let mut bytes = Vec::new();
        plist::Value::Dictionary(dict).to_writer_binary(&mut bytes).unwrap();
        let v = from_bytes(&bytes).unwrap();
        assert_eq!(v, Value::dict([("n", Value::from(7)), ("s", Value::from("x"))]));
    }

    #[test]
    fn json_with_bom() {
        let v = from_bytes(b"\xEF\xBB\xBF  {\"a\": [1, \"b\"]}").unwrap();
        assert_eq!(v, Value::dict([("a", Value::List(vec![1.into(), "b".into()]))]));
    }

    #[test]
    fn reals_pass_through_nulls_are_absent_dates_are_left_out() {
        let v = from_bytes(br#"{"max_batch_kb": 1.5, "n": 15.0, "tls_pins": ["a", null], "gone": null}"#).unwrap();
        let expected = Value::dict([
            ("max_batch_kb", Value::Real(1.5)),
            ("n", Value::Real(15.0)),
            ("tls_pins", Value::List(vec!["a".into()])),
        ]);
        assert_eq!(v, expected);
        let xml = b"<plist version=\"1.0\"><dict><key>x</key><real>15</real>\
                    <key>d</key><date>2026-01-01T00:00:00Z</date><key>k</key><integer>18446744073709551615</integer></dict></plist>";
        let loaded = read_bytes(xml).unwrap();
        assert_eq!(loaded.tree, Value::dict([("x", Value::Real(15.0)), ("k", Value::from("18446744073709551615"))]));
        assert_eq!(loaded.left_out, vec!["d".to_string()]);
        assert_eq!(loaded.format, Format::PropertyList);
    }

    /// A realistic "Enter JSON data" configuration as Intune shows it for an Android app.
    #[test]
    fn intune_android_managed_properties() {
        let json = br#"{
  "kind": "androidenterprise#managedConfiguration",
  "productId": "app:com.acme.messaging",
  "managedProperty": [
    {"key": "archive_url", "valueString": "https://archive.acme.example"},
    {"key": "upload_interval_minutes", "valueInteger": 15},
    {"key": "capture_attachments", "valueBool": true},
    {"key": "business_lines", "valueStringArray": ["+1 212 555 0100", "jane@acme.example"]},
    {"key": "device_id"},
    {"key": "extra", "valueBundle": {"managedProperty": [{"key": "a", "valueString": "b"}]}},
    {"key": "many", "valueBundleArray": [{"managedProperty": [{"key": "c", "valueInteger": 1}]}]}
  ]
}"#;
        let loaded = read_bytes(json).unwrap();
        assert_eq!(loaded.format, Format::IntuneManagedProperties);
        let expected = Value::dict([
            ("archive_url", Value::from("https://archive.acme.example")),
            ("upload_interval_minutes", Value::from(15)),
            ("capture_attachments", Value::from(true)),
            ("business_lines", Value::List(vec!["+1 212 555 0100".into(), "jane@acme.example".into()])),
            ("extra", Value::dict([("a", Value::from("b"))])),
            ("many", Value::List(vec![Value::dict([("c", Value::from(1))])])),
        ]);
        assert_eq!(loaded.tree, expected);
        assert_eq!(read_bytes(br#"{"a": 1}"#).unwrap().format, Format::Json);
        let e = read_bytes(br#"{"managedProperty": [{"valueString": "x"}]}"#).unwrap_err();
        assert_eq!(e.to_string(), "Intune managed configuration: (root): entry 1 has no \"key\" string");
    }

    /// The bare `<dict>` Intune (iOS "Enter XML data") and Jamf Pro take, without a prolog.
    #[test]
    fn bare_dict_as_pasted_into_intune_or_jamf() {
        let xml = b"<!-- comment -->\n<dict>\n  <key>archive_url</key>\n  <string>https://a.example</string>\n  <key>n</key><integer>3</integer>\n</dict>\n";
        let loaded = read_bytes(xml).unwrap();
        assert_eq!(loaded.format, Format::PropertyList);
        assert_eq!(loaded.tree, Value::dict([("archive_url", Value::from("https://a.example")), ("n", Value::from(3))]));
    }

    #[test]
    fn garbage_is_unknown_format() {
        assert!(matches!(from_bytes(b"archive_url=https://x"), Err(FormatError::UnknownFormat)));
        assert!(matches!(from_bytes(b"{ not json"), Err(FormatError::Json(_))));
        assert!(matches!(from_bytes(b"<plist><dict>"), Err(FormatError::Plist(_))));
    }
}
