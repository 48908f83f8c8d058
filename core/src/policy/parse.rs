//! Parsing a [`Value`] tree into a validated [`Policy`], and the policy's fingerprint.
//!
//! Rules every key follows (the per-kind rules are in [`KeyKind`]'s docs):
//! - The root must be a dictionary. Keys are case-sensitive.
//! - Every problem is collected, one per key, in schema order; unknown keys follow as warnings.
//! - A key that is absent, an empty or blank string, or a list with no non-blank item is *not
//!   set*: a required key is then `Missing`, an optional one takes its default. MDM consoles
//!   send empty strings for fields the admin left blank, so this is the only safe reading.
//! - Strings are trimmed. Lists arrive as an array of strings or as one comma-separated string.
//!   Integers arrive as integers, numeric strings, or reals that are whole numbers (`15.0`:
//!   plist `<real>`, JSON `15.0`, a Kotlin `Double`; the platform layers pass reals through
//!   unchanged so this is the one place that decides); booleans as booleans or as the strings
//!   `true`/`false`/`1`/`0` (any case). Nothing else is coerced.
//! - A required key still holding the template's example value is an error (`Placeholder`),
//!   but for `policy_version`, whose example may be real ([`schema::example_is_placeholder`]).
//! - `archive_url` is the archive's base address; the agent appends `v1/...` itself, so a URL
//!   that already ends in the API version is refused, and the parsed URL always ends in `/`
//!   (a path prefix is kept when endpoints are joined to it).
//! - `archive_key_id` is bound to `archive_public_key`: when unset it is the key's id
//!   ([`crate::seal::key_id`]); when set it must equal that id.
//! - Details never contain the value of a secret key; other values are quoted, cut to 64 chars.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use sha2::{Digest, Sha256};

use super::schema::{self, KEYS, KeyKind, KeySpec};
use super::{DisclaimerMode, LogLevel, Policy, UploadNetwork, Value};
use crate::model::{Channel, normalize_handle};
use crate::secret::Secret;

/// What is wrong with a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Enum))]
pub enum ProblemKind {
    /// A required key is absent or empty.
    Missing,
    /// The value has the wrong type (a list where a string belongs, a word where a number does).
    WrongType,
    /// The value has the right type but is not acceptable (bad URL, unknown channel, bad PEM).
    InvalidValue,
    /// A URL that does not use https.
    InsecureUrl,
    /// Base64 that does not decode to the required 32 bytes.
    BadKeyLength,
    /// A number outside the key's range.
    OutOfRange,
    /// A key the schema does not know. Always a warning: it is ignored.
    UnknownKey,
    /// A required key still holds the template's example value: sealing to the example key or
    /// sending the example token is surely a mistake, so the policy is refused.
    Placeholder,
}

impl ProblemKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::Missing => "missing",
            ProblemKind::WrongType => "wrong_type",
            ProblemKind::InvalidValue => "invalid_value",
            ProblemKind::InsecureUrl => "insecure_url",
            ProblemKind::BadKeyLength => "bad_key_length",
            ProblemKind::OutOfRange => "out_of_range",
            ProblemKind::UnknownKey => "unknown_key",
            ProblemKind::Placeholder => "placeholder",
        }
    }
}

/// One problem with one key. `Display` is `<key>: <detail>`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record), uniffi(name = "PolicyProblem"))]
pub struct Problem {
    /// The key (or `(root)` when the tree is not a dictionary).
    pub key: String,
    pub kind: ProblemKind,
    /// What is wrong and what is expected; never a secret's value.
    pub detail: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.detail)
    }
}

/// A policy that passed validation, with any warnings (unknown keys).
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub policy: Policy,
    pub warnings: Vec<Problem>,
}

/// A policy that failed validation: every problem found, plus the warnings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub problems: Vec<Problem>,
    pub warnings: Vec<Problem>,
}

impl fmt::Display for Rejected {
    /// One line per problem (warnings are not included).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Rejected {}

/// Parses and validates a managed configuration tree. See the module docs for the rules.
pub fn parse(tree: &Value) -> Result<Parsed, Rejected> {
    parse_with(tree, Secrets::Required)
}

/// Whether required secret keys must be present: always in a pushed configuration; not in the
/// tree the device kept, which never holds them ([`super::stored`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Secrets {
    Required,
    Absent,
}

pub(super) fn parse_with(tree: &Value, secrets: Secrets) -> Result<Parsed, Rejected> {
    let Value::Dict(map) = tree else {
        let problem = Problem {
            key: "(root)".to_string(),
            kind: ProblemKind::WrongType,
            detail: format!("must be a dictionary of keys, got {}", a_or_an(tree.type_name())),
        };
        return Err(Rejected { problems: vec![problem], warnings: Vec::new() });
    };

    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let mut fields = Fields::default();
    for spec in KEYS {
        let raw = match (secrets, spec.secret) {
            (Secrets::Absent, true) => None,
            _ => map.get(spec.name),
        };
        let optional = secrets == Secrets::Absent && spec.secret;
        match check_key(spec, raw, optional) {
            Ok(checked) => match placeholder_problem(spec, &checked) {
                Some(problem) => problems.push(problem),
                None => {
                    fields.0.insert(spec.name, checked);
                }
            },
            Err(problem) => problems.push(problem),
        }
    }
    if let Some(problem) = key_id_mismatch(&fields) {
        problems.push(problem);
        // Problems are listed in schema order, this one included (the sort is stable).
        problems.sort_by_key(|p| KEYS.iter().position(|k| k.name == p.key));
    }
    warnings.extend(map.keys().filter(|k| schema::spec(k).is_none()).map(|k| unknown_key(k)));

    if !problems.is_empty() {
        return Err(Rejected { problems, warnings });
    }
    match fields.build() {
        Some(policy) => Ok(Parsed { policy, warnings }),
        // Unreachable while the schema and `Policy` agree (a unit test parses every kind);
        // reported rather than panicking, because this runs on the MDM's input.
        None => Err(Rejected {
            problems: vec![Problem {
                key: "(schema)".to_string(),
                kind: ProblemKind::InvalidValue,
                detail: "internal error: schema and policy fields disagree".to_string(),
            }],
            warnings,
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Checking one key
// ---------------------------------------------------------------------------------------------

/// A key's value after checking, before it is moved into its `Policy` field.
#[derive(Debug, Clone, PartialEq)]
enum Checked {
    /// Optional key, not set, no default.
    Unset,
    Text(String),
    Url(url::Url),
    Key([u8; 32]),
    Int(i64),
    Bool(bool),
    Strings(BTreeSet<String>),
    Channels(BTreeSet<Channel>),
    Pins(Vec<[u8; 32]>),
    Word(&'static str),
}

fn problem(spec: &KeySpec, kind: ProblemKind, detail: impl Into<String>) -> Problem {
    Problem { key: spec.name.to_string(), kind, detail: detail.into() }
}

/// Checks one key: not set → missing (unless `optional` says a required key may be absent)
/// or default; set → checked against its kind.
fn check_key(spec: &KeySpec, raw: Option<&Value>, optional: bool) -> Result<Checked, Problem> {
    match raw.filter(|v| !is_unset(spec, v)) {
        Some(value) => check_value(spec, value),
        None if spec.required && !optional => Err(problem(spec, ProblemKind::Missing, "required but missing")),
        None => match spec.default {
            Some(text) => check_value(spec, &Value::String(text.to_string())),
            None => Ok(Checked::Unset),
        },
    }
}

/// Whether a present value counts as not set: a blank string, or a list with no non-blank item.
fn is_unset(spec: &KeySpec, value: &Value) -> bool {
    match value {
        Value::String(s) if spec.kind.is_list() => split_commas(s).next().is_none(),
        Value::String(s) => s.trim().is_empty(),
        Value::List(items) if spec.kind.is_list() => {
            items.iter().all(|item| matches!(item, Value::String(s) if s.trim().is_empty()))
        }
        _ => false,
    }
}

fn check_value(spec: &KeySpec, value: &Value) -> Result<Checked, Problem> {
    match spec.kind {
        KeyKind::String => check_line(spec, value).map(Checked::Text),
        KeyKind::Text => check_text(spec, value).map(Checked::Text),
        KeyKind::Url => check_url(spec, value).map(Checked::Url),
        KeyKind::PublicKey => check_public_key(spec, value).map(Checked::Key),
        KeyKind::Integer { min, max } => check_integer(spec, value, min, max).map(Checked::Int),
        KeyKind::Bool => check_bool(spec, value).map(Checked::Bool),
        KeyKind::StringList => check_handles(spec, value).map(Checked::Strings),
        KeyKind::ChannelList => check_channels(spec, value).map(Checked::Channels),
        KeyKind::Enum(words) => check_word(spec, value, words).map(Checked::Word),
        KeyKind::Pins => check_pins(spec, value).map(Checked::Pins),
        KeyKind::Pem => check_pem(spec, value).map(Checked::Text),
    }
}

fn wrong_type(spec: &KeySpec, value: &Value) -> Problem {
    let detail = format!("must be {}, got {}", spec.kind.describe(), a_or_an(value.type_name()));
    problem(spec, ProblemKind::WrongType, detail)
}

/// `text` → `text`, `whole number` → `a whole number`, `list` → `a list`: a type name as
/// it reads in a sentence.
fn a_or_an(type_name: &str) -> String {
    match type_name {
        "text" | "true/false" => type_name.to_string(),
        _ => format!("a {type_name}"),
    }
}

/// A value for a detail message: quoted and cut to 64 chars, or hidden for a secret key.
fn shown(spec: &KeySpec, text: &str) -> String {
    if spec.secret { "(value hidden)".to_string() } else { quote(text) }
}

/// Quotes `text` (escaping control characters), cut to at most 64 characters.
fn quote(text: &str) -> String {
    const MAX: usize = 64;
    if text.chars().count() <= MAX {
        format!("{text:?}")
    } else {
        let cut: String = text.chars().take(MAX - 3).collect();
        format!("{cut:?}...")
    }
}

/// The trimmed string, or `WrongType` for any other value.
fn string_of<'v>(spec: &KeySpec, value: &'v Value) -> Result<&'v str, Problem> {
    match value {
        Value::String(s) => Ok(s.trim()),
        other => Err(wrong_type(spec, other)),
    }
}

fn check_length(spec: &KeySpec, text: &str, max: usize) -> Result<(), Problem> {
    if text.len() > max {
        let detail = format!("too long ({} bytes, at most {max})", text.len());
        return Err(problem(spec, ProblemKind::InvalidValue, detail));
    }
    Ok(())
}

/// A one-line string: ids, labels and the token end up in headers and records, where a line
/// break or control character could split or forge a field.
fn check_line(spec: &KeySpec, value: &Value) -> Result<String, Problem> {
    let text = string_of(spec, value)?;
    check_length(spec, text, schema::MAX_STRING_BYTES)?;
    if text.chars().any(char::is_control) {
        return Err(problem(spec, ProblemKind::InvalidValue, "must be one line without control characters"));
    }
    if looks_like_mdm_variable(text) {
        let detail = format!(
            "{} looks like an MDM variable that was not substituted; check the variable's name in the MDM",
            shown(spec, text)
        );
        return Err(problem(spec, ProblemKind::InvalidValue, detail));
    }
    Ok(text.to_string())
}

/// `{{deviceid}}` (Intune), `$SERIALNUMBER` (Jamf), `{DeviceUid}` (Workspace ONE): when the MDM
/// does not know a variable it sends the placeholder itself, which must not become an id.
fn looks_like_mdm_variable(text: &str) -> bool {
    let dollar = text
        .strip_prefix('$')
        .is_some_and(|rest| !rest.is_empty() && rest.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'));
    let braces = text.starts_with('{') && text.ends_with('}');
    dollar || braces || text.contains("{{") || text.contains("}}")
}

/// Free text (the disclaimer): line breaks and tabs allowed, other control characters not.
fn check_text(spec: &KeySpec, value: &Value) -> Result<String, Problem> {
    let text = string_of(spec, value)?;
    check_length(spec, text, schema::MAX_STRING_BYTES)?;
    if text.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
        return Err(problem(spec, ProblemKind::InvalidValue, "must not contain control characters"));
    }
    Ok(text.to_string())
}

/// An absolute https URL with a host and no credentials. The URL itself is never quoted back:
/// an admin may have pasted one with a password in it.
fn check_url(spec: &KeySpec, value: &Value) -> Result<url::Url, Problem> {
    let text = string_of(spec, value)?;
    check_length(spec, text, schema::MAX_STRING_BYTES)?;
    let mut url =
        url::Url::parse(text).map_err(|e| problem(spec, ProblemKind::InvalidValue, format!("not a valid URL ({e})")))?;
    if url.scheme() != "https" {
        let detail = format!("must use https, got {}", quote_bare(url.scheme()));
        return Err(problem(spec, ProblemKind::InsecureUrl, detail));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(problem(spec, ProblemKind::InvalidValue, "must name a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        let detail = "must not contain a user name or password; the device authenticates with device_token";
        return Err(problem(spec, ProblemKind::InvalidValue, detail));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(problem(spec, ProblemKind::InvalidValue, "must not contain a query (?...) or fragment (#...)"));
    }
    if names_api_version(&url) {
        let detail = "must be the archive's base address without the API version: remove the trailing \
                      /v1 (or /v1/batches); the agent adds /v1/batches itself";
        return Err(problem(spec, ProblemKind::InvalidValue, detail));
    }
    // A base ends in `/`, so that joining `v1/batches` keeps a path prefix (`/archive/`).
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// Whether the URL's path already ends in the upload API's version (`/v1`, `/v1/`,
/// `/v1/batches`): the most likely mistake, which would send batches to `/v1/v1/batches`.
fn names_api_version(url: &url::Url) -> bool {
    let segments: Vec<&str> = url.path().split('/').filter(|s| !s.is_empty()).collect();
    matches!(segments.as_slice(), [.., "v1"] | [.., "v1", "batches"])
}

/// A short unquoted word (a URL scheme) cut to 64 characters.
fn quote_bare(word: &str) -> String {
    word.chars().take(64).collect()
}

/// Base64 with the standard or URL-safe alphabet, padding optional: admins paste keys from
/// tools that emit either.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let config = GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    GeneralPurpose::new(&alphabet::STANDARD, config)
        .decode(text)
        .or_else(|_| GeneralPurpose::new(&alphabet::URL_SAFE, config).decode(text))
        .ok()
}

/// Decodes base64 that must hold exactly 32 bytes; the error is (kind, detail without the value).
fn decode_32(text: &str, what: &str) -> Result<[u8; 32], (ProblemKind, String)> {
    let bytes = decode_base64(text).ok_or((ProblemKind::InvalidValue, format!("{what} is not valid base64")))?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| (ProblemKind::BadKeyLength, format!("{what} must decode to 32 bytes, got {}", bytes.len())))
}

fn check_public_key(spec: &KeySpec, value: &Value) -> Result<[u8; 32], Problem> {
    let text = string_of(spec, value)?;
    let key = decode_32(text, "the key").map_err(|(kind, detail)| problem(spec, kind, detail))?;
    // The all-zero X25519 key yields an all-zero shared secret: sealing to it protects nothing.
    if key == [0u8; 32] {
        return Err(problem(spec, ProblemKind::InvalidValue, "the key is all zeros"));
    }
    Ok(key)
}

fn check_integer(spec: &KeySpec, value: &Value, min: i64, max: i64) -> Result<i64, Problem> {
    let not_whole = |got: String| {
        let detail = format!("must be a whole number from {min} to {max}, got {got}");
        problem(spec, ProblemKind::WrongType, detail)
    };
    let n = match value {
        Value::Integer(n) => *n,
        Value::Real(r) => whole_number(*r).ok_or_else(|| not_whole(shown(spec, &r.to_string())))?,
        Value::String(s) => s.trim().parse::<i64>().map_err(|_| not_whole(shown(spec, s.trim())))?,
        other => return Err(wrong_type(spec, other)),
    };
    if !(min..=max).contains(&n) {
        let detail = format!("must be from {min} to {max}, got {n}");
        return Err(problem(spec, ProblemKind::OutOfRange, detail));
    }
    Ok(n)
}

/// A real that is a whole number within `i64` (`15.0` → 15); `None` for `15.5`, NaN, infinities.
/// Consoles send `<real>15</real>` or `15.0` for a number field; refusing it would refuse a
/// correct value for its encoding, while a real fraction is refused, never rounded.
fn whole_number(r: f64) -> Option<i64> {
    // 2^63 is exactly representable; every finite whole real below it fits an i64.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    (r.is_finite() && r.fract() == 0.0 && (-LIMIT..LIMIT).contains(&r)).then_some(r as i64)
}

/// Booleans: a real boolean, or exactly the strings `true`, `false`, `1`, `0` (any case), which
/// is what MDM consoles that only know strings send. `yes`/`no`/`on` are refused, not guessed.
fn check_bool(spec: &KeySpec, value: &Value) -> Result<bool, Problem> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => {
                let detail = format!("must be true or false (or \"1\"/\"0\"), got {}", shown(spec, s.trim()));
                Err(problem(spec, ProblemKind::WrongType, detail))
            }
        },
        other => Err(wrong_type(spec, other)),
    }
}

fn check_word(spec: &KeySpec, value: &Value, words: &'static [&'static str]) -> Result<&'static str, Problem> {
    let text = string_of(spec, value)?;
    words.iter().copied().find(|w| w.eq_ignore_ascii_case(text)).ok_or_else(|| {
        let detail = format!("must be one of {}; got {}", words.join(", "), shown(spec, text));
        problem(spec, ProblemKind::InvalidValue, detail)
    })
}

/// Splits a comma-separated string into trimmed, non-empty items.
fn split_commas(text: &str) -> impl Iterator<Item = &str> {
    text.split(',').map(str::trim).filter(|item| !item.is_empty())
}

/// The items of a list key: an array of strings or one comma-separated string, trimmed, blanks
/// dropped.
fn list_items<'v>(spec: &KeySpec, value: &'v Value) -> Result<Vec<&'v str>, Problem> {
    let items: Vec<&str> = match value {
        Value::String(s) => split_commas(s).collect(),
        Value::List(list) => {
            let mut items = Vec::with_capacity(list.len());
            for (i, item) in list.iter().enumerate() {
                match item {
                    Value::String(s) if s.trim().is_empty() => {}
                    Value::String(s) => items.push(s.trim()),
                    other => {
                        let detail = format!("item {} must be text, got {}", i + 1, a_or_an(other.type_name()));
                        return Err(problem(spec, ProblemKind::WrongType, detail));
                    }
                }
            }
            items
        }
        other => {
            let detail = format!(
                "must be {} (an array, or one comma-separated string), got {}",
                spec.kind.describe(),
                a_or_an(other.type_name())
            );
            return Err(problem(spec, ProblemKind::WrongType, detail));
        }
    };
    if items.len() > schema::MAX_LIST_ITEMS {
        let detail = format!("too many items ({}, at most {})", items.len(), schema::MAX_LIST_ITEMS);
        return Err(problem(spec, ProblemKind::InvalidValue, detail));
    }
    Ok(items)
}

/// Business lines, normalised so that they compare equal to event parties however typed.
/// Duplicates (after normalising) are merged.
fn check_handles(spec: &KeySpec, value: &Value) -> Result<BTreeSet<String>, Problem> {
    let items = list_items(spec, value)?;
    if let Some(long) = items.iter().find(|item| item.len() > schema::MAX_STRING_BYTES) {
        let detail = format!("an item is too long ({} bytes, at most {})", long.len(), schema::MAX_STRING_BYTES);
        return Err(problem(spec, ProblemKind::InvalidValue, detail));
    }
    // An unsubstituted `$EMAIL` or `{{mail}}` must not silently become a business line.
    if let Some(var) = items.iter().find(|item| looks_like_mdm_variable(item)) {
        let detail = format!(
            "{} looks like an MDM variable that was not substituted; check the variable's name in the MDM",
            shown(spec, var)
        );
        return Err(problem(spec, ProblemKind::InvalidValue, detail));
    }
    Ok(items.into_iter().map(normalize_handle).filter(|h| !h.is_empty()).collect())
}

fn check_channels(spec: &KeySpec, value: &Value) -> Result<BTreeSet<Channel>, Problem> {
    let items = list_items(spec, value)?;
    let unknown: Vec<String> = items.iter().filter(|i| Channel::parse(i).is_none()).map(|i| shown(spec, i)).collect();
    if !unknown.is_empty() {
        let valid: Vec<&str> = Channel::ALL.iter().map(|c| c.as_str()).collect();
        let noun = if unknown.len() == 1 { "channel" } else { "channels" };
        let detail = format!("unknown {noun} {}; valid: {}", unknown.join(", "), valid.join(", "));
        return Err(problem(spec, ProblemKind::InvalidValue, detail));
    }
    Ok(items.into_iter().filter_map(Channel::parse).collect())
}

/// SPKI pins: every item must be base64 of a SHA-256 (32 bytes). All bad items are named in
/// one problem; its kind is the first bad item's. Sorted and de-duplicated.
fn check_pins(spec: &KeySpec, value: &Value) -> Result<Vec<[u8; 32]>, Problem> {
    let items = list_items(spec, value)?;
    let mut pins = Vec::with_capacity(items.len());
    let mut bad: Vec<(ProblemKind, String)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match decode_32(item, &format!("item {}", i + 1)) {
            Ok(pin) => pins.push(pin),
            Err(e) => bad.push(e),
        }
    }
    if let Some((kind, _)) = bad.first() {
        let details: Vec<&str> = bad.iter().map(|(_, d)| d.as_str()).collect();
        let detail = format!("{} (each pin is the base64 SHA-256 of a SubjectPublicKeyInfo)", details.join("; "));
        return Err(problem(spec, *kind, detail));
    }
    pins.sort_unstable();
    pins.dedup();
    Ok(pins)
}

/// PEM text of one or more CERTIFICATE blocks, each valid base64 of something shaped like DER.
/// Contents are never quoted back: an admin may paste a private key here by mistake.
fn check_pem(spec: &KeySpec, value: &Value) -> Result<String, Problem> {
    let text = string_of(spec, value)?;
    check_length(spec, text, schema::MAX_PEM_BYTES)?;
    pem_certificate_count(text).map_err(|detail| problem(spec, ProblemKind::InvalidValue, detail))?;
    Ok(text.to_string())
}

/// Counts the CERTIFICATE blocks of a PEM text, or says what is wrong with it.
fn pem_certificate_count(text: &str) -> Result<usize, String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut count = 0;
    let mut body: Option<String> = None;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match body.as_mut() {
            None if line == BEGIN => body = Some(String::new()),
            None if line.starts_with("-----BEGIN ") => {
                return Err("must hold only CERTIFICATE blocks (never a private key)".to_string());
            }
            None => return Err("text outside a -----BEGIN CERTIFICATE----- block".to_string()),
            Some(_) if line == END => {
                let der = body.take().and_then(|b| decode_base64(&b)).unwrap_or_default();
                // Every X.509 certificate is a DER SEQUENCE, which starts with 0x30.
                if der.first() != Some(&0x30) {
                    return Err(format!("certificate {} is not valid base64 DER", count + 1));
                }
                count += 1;
            }
            Some(_) if line.starts_with("-----") => {
                return Err(format!("certificate {} has no matching END line", count + 1));
            }
            Some(b) => b.push_str(line),
        }
    }
    if body.is_some() {
        return Err(format!("certificate {} has no matching END line", count + 1));
    }
    if count == 0 {
        return Err("holds no -----BEGIN CERTIFICATE----- block".to_string());
    }
    Ok(count)
}

/// An error when a required key still holds the template's example (the template must be
/// edited before use; the example archive key has no private half, the example token opens
/// nothing).
fn placeholder_problem(spec: &KeySpec, checked: &Checked) -> Option<Problem> {
    if !schema::example_is_placeholder(spec) {
        return None;
    }
    let example = check_value(spec, &Value::String(spec.example.to_string())).ok()?;
    (example == *checked).then(|| {
        let detail = "still holds the template's example value; replace it with the real one";
        problem(spec, ProblemKind::Placeholder, detail)
    })
}

/// `archive_key_id`, when set, must be the id of `archive_public_key` (what `verbatim keygen`
/// printed): a wrong key or a wrong id is caught here rather than by the archive refusing
/// batches sealed to a key it cannot name.
fn key_id_mismatch(fields: &Fields) -> Option<Problem> {
    let (Some(Checked::Key(key)), Some(Checked::Text(id))) = (fields.0.get("archive_public_key"), fields.0.get("archive_key_id"))
    else {
        return None;
    };
    let derived = crate::seal::key_id(key);
    (*id != derived).then(|| Problem {
        key: "archive_key_id".to_string(),
        kind: ProblemKind::InvalidValue,
        detail: format!(
            "does not match archive_public_key, whose key id is {derived} (what `verbatim keygen` printed); \
             fix whichever of the two is wrong, or leave archive_key_id out"
        ),
    })
}

/// The warning for a key the schema does not know, with a suggestion when it looks like a typo.
fn unknown_key(key: &str) -> Problem {
    let shown_key: String = key.chars().take(64).map(|c| if c.is_control() { '?' } else { c }).collect();
    let detail = match closest_key(key) {
        Some(known) => format!("unknown key, ignored; did you mean {known}?"),
        None => "unknown key, ignored".to_string(),
    };
    Problem { key: shown_key, kind: ProblemKind::UnknownKey, detail }
}

/// The schema key within two edits of `key` (ignoring case), if any.
fn closest_key(key: &str) -> Option<&'static str> {
    if key.len() > 64 {
        return None;
    }
    let key = key.to_ascii_lowercase();
    KEYS.iter().map(|k| (edit_distance(&key, k.name), k.name)).filter(|(d, _)| *d <= 2).min().map(|(_, name)| name)
}

/// Levenshtein distance over chars (keys are short; quadratic is fine).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut row = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != *cb);
            row[j + 1] = substitute.min(prev[j + 1] + 1).min(row[j] + 1);
        }
        prev = row;
    }
    prev[b.len()]
}

// ---------------------------------------------------------------------------------------------
// Building the Policy
// ---------------------------------------------------------------------------------------------

/// The checked values by key name, moved one by one into the `Policy`.
#[derive(Default)]
struct Fields(BTreeMap<&'static str, Checked>);

impl Fields {
    fn take(&mut self, name: &str) -> Option<Checked> {
        self.0.remove(name)
    }

    fn text(&mut self, name: &str) -> Option<String> {
        match self.take(name)? {
            Checked::Text(t) => Some(t),
            _ => None,
        }
    }

    fn optional_text(&mut self, name: &str) -> Option<Option<String>> {
        match self.take(name)? {
            Checked::Text(t) => Some(Some(t)),
            Checked::Unset => Some(None),
            _ => None,
        }
    }

    fn url(&mut self, name: &str) -> Option<url::Url> {
        match self.take(name)? {
            Checked::Url(u) => Some(u),
            _ => None,
        }
    }

    fn key(&mut self, name: &str) -> Option<[u8; 32]> {
        match self.take(name)? {
            Checked::Key(k) => Some(k),
            _ => None,
        }
    }

    fn int<T: TryFrom<i64>>(&mut self, name: &str) -> Option<T> {
        match self.take(name)? {
            Checked::Int(n) => T::try_from(n).ok(),
            _ => None,
        }
    }

    fn bool(&mut self, name: &str) -> Option<bool> {
        match self.take(name)? {
            Checked::Bool(b) => Some(b),
            _ => None,
        }
    }

    fn strings(&mut self, name: &str) -> Option<BTreeSet<String>> {
        match self.take(name)? {
            Checked::Strings(s) => Some(s),
            _ => None,
        }
    }

    fn channels(&mut self, name: &str) -> Option<BTreeSet<Channel>> {
        match self.take(name)? {
            Checked::Channels(c) => Some(c),
            _ => None,
        }
    }

    fn pins(&mut self, name: &str) -> Option<Vec<[u8; 32]>> {
        match self.take(name)? {
            Checked::Pins(p) => Some(p),
            Checked::Unset => Some(Vec::new()),
            _ => None,
        }
    }

    fn word(&mut self, name: &str) -> Option<&'static str> {
        match self.take(name)? {
            Checked::Word(w) => Some(w),
            _ => None,
        }
    }

    /// `None` only if the schema and `Policy` disagree (a bug caught by the unit tests).
    fn build(mut self) -> Option<Policy> {
        let upload_network = match self.word("upload_network")? {
            "any" => UploadNetwork::Any,
            "unmetered" => UploadNetwork::Unmetered,
            _ => return None,
        };
        let disclaimer_mode = match self.word("disclaimer_mode")? {
            "off" => DisclaimerMode::Off,
            "first_message" => DisclaimerMode::FirstMessage,
            "daily" => DisclaimerMode::Daily,
            _ => return None,
        };
        let log_level = match self.word("log_level")? {
            "trace" => LogLevel::Trace,
            "debug" => LogLevel::Debug,
            "info" => LogLevel::Info,
            "warn" => LogLevel::Warn,
            "error" => LogLevel::Error,
            "off" => LogLevel::Off,
            _ => return None,
        };
        let archive_public_key = self.key("archive_public_key")?;
        Some(Policy {
            archive_url: self.url("archive_url")?,
            archive_key_id: match self.optional_text("archive_key_id")? {
                Some(id) => id,
                None => crate::seal::key_id(&archive_public_key),
            },
            archive_public_key,
            tenant_id: self.text("tenant_id")?,
            // Absent only in a tree the device kept (parse refuses a configuration without it).
            device_token: Secret::new(self.optional_text("device_token")?.unwrap_or_default()),
            device_id: self.optional_text("device_id")?,
            archive_ca_pem: self.optional_text("archive_ca_pem")?,
            tls_pins: self.pins("tls_pins")?,
            capture_channels: self.channels("capture_channels")?,
            business_lines: self.strings("business_lines")?,
            capture_attachments: self.bool("capture_attachments")?,
            max_attachment_mb: self.int("max_attachment_mb")?,
            capture_call_recordings: self.bool("capture_call_recordings")?,
            upload_network,
            upload_allow_roaming: self.bool("upload_allow_roaming")?,
            upload_interval_minutes: self.int("upload_interval_minutes")?,
            max_batch_kb: self.int("max_batch_kb")?,
            queue_max_mb: self.int("queue_max_mb")?,
            queue_alert_percent: self.int("queue_alert_percent")?,
            pending_alert_hours: self.int("pending_alert_hours")?,
            heartbeat_hours: self.int("heartbeat_hours")?,
            backfill_days: self.int("backfill_days")?,
            organization_name: self.optional_text("organization_name")?,
            fail_closed: self.bool("fail_closed")?,
            disclaimer_text: self.optional_text("disclaimer_text")?,
            disclaimer_mode,
            log_level,
            policy_version: self.text("policy_version")?,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Fingerprint
// ---------------------------------------------------------------------------------------------

/// Domain separation for the fingerprint; bump the version if the encoding ever changes.
const FINGERPRINT_DOMAIN: &[u8] = b"verbatim/policy-fingerprint/v1\0";

/// One field's value in the canonical encoding.
enum Canon<'a> {
    Absent,
    Str(&'a str),
    Bytes(Vec<u8>),
    Int(u64),
    Bool(bool),
    List(Vec<Canon<'a>>),
}

impl Canon<'_> {
    fn encode(&self, out: &mut Sha256) {
        match self {
            Canon::Absent => out.update([0u8]),
            Canon::Str(s) => {
                out.update([1u8]);
                put_len_prefixed(out, s.as_bytes());
            }
            Canon::Bytes(b) => {
                out.update([2u8]);
                put_len_prefixed(out, b);
            }
            Canon::Int(n) => {
                out.update([3u8]);
                out.update(n.to_be_bytes());
            }
            Canon::Bool(b) => out.update([4u8, u8::from(*b)]),
            Canon::List(items) => {
                out.update([5u8]);
                out.update((items.len() as u64).to_be_bytes());
                for item in items {
                    item.encode(out);
                }
            }
        }
    }
}

fn put_len_prefixed(out: &mut Sha256, bytes: &[u8]) {
    out.update((bytes.len() as u64).to_be_bytes());
    out.update(bytes);
}

fn optional(text: &Option<String>) -> Canon<'_> {
    text.as_deref().map_or(Canon::Absent, Canon::Str)
}

impl Policy {
    /// A stable identity of the policy's content, recorded when a policy is applied.
    ///
    /// SHA-256 over `"verbatim/policy-fingerprint/v1\0"` followed by every field in schema
    /// order ([`schema::KEYS`]), each as `u64be(len(name)) || name || value`, where value is one
    /// of: `0x00` absent; `0x01 u64be(len) utf8` string; `0x02 u64be(len) bytes` bytes;
    /// `0x03 u64be(n)` integer; `0x04 0x00|0x01` boolean; `0x05 u64be(count) items...` list.
    /// Strings are the parsed values (URL as normalised by the `url` crate, enums and channels
    /// as their policy words); the public key and pins are raw bytes; lists are in sorted order.
    /// The device token contributes only SHA-256(token) as bytes, so rotating it changes the
    /// fingerprint while the fingerprint reveals nothing usable about it.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(FINGERPRINT_DOMAIN);
        for (name, value) in self.canonical_fields() {
            put_len_prefixed(&mut hasher, name.as_bytes());
            value.encode(&mut hasher);
        }
        hasher.finalize().into()
    }

    /// [`Policy::fingerprint`] as lowercase hex.
    pub fn fingerprint_hex(&self) -> String {
        hex::encode(self.fingerprint())
    }

    /// Every field with its key name, in schema order. The destructuring names every field, so
    /// a field added to `Policy` without being added here does not compile.
    fn canonical_fields(&self) -> Vec<(&'static str, Canon<'_>)> {
        let Policy {
            archive_url,
            archive_public_key,
            archive_key_id,
            tenant_id,
            device_token,
            device_id,
            archive_ca_pem,
            tls_pins,
            capture_channels,
            business_lines,
            capture_attachments,
            max_attachment_mb,
            capture_call_recordings,
            upload_network,
            upload_allow_roaming,
            upload_interval_minutes,
            max_batch_kb,
            queue_max_mb,
            queue_alert_percent,
            pending_alert_hours,
            heartbeat_hours,
            backfill_days,
            organization_name,
            fail_closed,
            disclaimer_text,
            disclaimer_mode,
            log_level,
            policy_version,
        } = self;
        let mut pins = tls_pins.clone();
        pins.sort_unstable();
        let network = match upload_network {
            UploadNetwork::Any => "any",
            UploadNetwork::Unmetered => "unmetered",
        };
        let disclaimer = match disclaimer_mode {
            DisclaimerMode::Off => "off",
            DisclaimerMode::FirstMessage => "first_message",
            DisclaimerMode::Daily => "daily",
        };
        let level = match log_level {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
            LogLevel::Off => "off",
        };
        let mut fields = vec![
            ("archive_url", Canon::Str(archive_url.as_str())),
            ("archive_public_key", Canon::Bytes(archive_public_key.to_vec())),
            ("archive_key_id", Canon::Str(archive_key_id)),
            ("tenant_id", Canon::Str(tenant_id)),
            ("device_token", Canon::Bytes(Sha256::digest(device_token.expose().as_bytes()).to_vec())),
            ("device_id", optional(device_id)),
            ("archive_ca_pem", optional(archive_ca_pem)),
            ("tls_pins", Canon::List(pins.iter().map(|p| Canon::Bytes(p.to_vec())).collect())),
            ("capture_channels", Canon::List(capture_channels.iter().map(|c| Canon::Str(c.as_str())).collect())),
            ("business_lines", Canon::List(business_lines.iter().map(|l| Canon::Str(l)).collect())),
            ("capture_attachments", Canon::Bool(*capture_attachments)),
            ("max_attachment_mb", Canon::Int(u64::from(*max_attachment_mb))),
            ("capture_call_recordings", Canon::Bool(*capture_call_recordings)),
            ("upload_network", Canon::Str(network)),
            ("upload_allow_roaming", Canon::Bool(*upload_allow_roaming)),
            ("upload_interval_minutes", Canon::Int(u64::from(*upload_interval_minutes))),
            ("max_batch_kb", Canon::Int(u64::from(*max_batch_kb))),
            ("queue_max_mb", Canon::Int(u64::from(*queue_max_mb))),
            ("queue_alert_percent", Canon::Int(u64::from(*queue_alert_percent))),
            ("pending_alert_hours", Canon::Int(u64::from(*pending_alert_hours))),
            ("heartbeat_hours", Canon::Int(u64::from(*heartbeat_hours))),
            ("fail_closed", Canon::Bool(*fail_closed)),
            ("disclaimer_text", optional(disclaimer_text)),
            ("disclaimer_mode", Canon::Str(disclaimer)),
            ("log_level", Canon::Str(level)),
            ("policy_version", Canon::Str(policy_version)),
        ];
        // Keys added after the first release enter only when set away from their default, so
        // every policy pushed before them keeps its fingerprint (and no upgrade records a
        // policy change that did not happen).
        if *backfill_days != 0 {
            fields.push(("backfill_days", Canon::Int(u64::from(*backfill_days))));
        }
        if organization_name.is_some() {
            fields.push(("organization_name", optional(organization_name)));
        }
        fields
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key set to its example value.
    fn examples() -> Value {
        Value::dict(KEYS.iter().map(|k| (k.name, Value::from(k.example))))
    }

    #[test]
    fn every_example_and_default_is_valid() {
        for spec in KEYS {
            let example = check_value(spec, &Value::from(spec.example));
            assert!(example.is_ok(), "{}: example rejected: {example:?}", spec.name);
            if let Some(default) = spec.default {
                let checked = check_value(spec, &Value::from(default));
                assert!(checked.is_ok(), "{}: default rejected: {checked:?}", spec.name);
            }
        }
    }

    /// The examples with every required key edited as an admin would (no placeholder left).
    fn edited_examples() -> Value {
        let mut tree = examples();
        if let Value::Dict(map) = &mut tree {
            map.insert("archive_url".into(), Value::from("https://archive.acme.test"));
            map.insert("archive_public_key".into(), Value::from("AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="));
            map.remove("archive_key_id");
            map.insert("tenant_id".into(), Value::from("acme-test"));
            map.insert("device_token".into(), Value::from("tok-test"));
            map.insert("business_lines".into(), Value::from("+1 555 0199"));
            map.insert("policy_version".into(), Value::from("2026-03"));
        }
        tree
    }

    #[test]
    fn edited_examples_are_valid_with_the_derived_key_id() {
        let policy = parse(&edited_examples()).expect("valid").policy;
        assert_eq!(policy.archive_key_id, crate::seal::key_id(&policy.archive_public_key));
        assert_eq!(policy.archive_url.as_str(), "https://archive.acme.test/");
    }

    /// The policy built from every example, past the placeholder check (which refuses it).
    fn example_policy() -> Policy {
        let mut fields = Fields::default();
        for spec in KEYS {
            fields.0.insert(spec.name, check_value(spec, &Value::from(spec.example)).expect("example is valid"));
        }
        assert_eq!(key_id_mismatch(&fields), None, "the example key id is the example key's");
        fields.build().expect("build takes every kind")
    }

    #[test]
    fn examples_build_a_policy_but_are_refused_as_placeholders() {
        // Also proves `Fields::build` takes every kind the schema produces.
        let policy = example_policy();
        assert_eq!(policy.tls_pins.len(), 2);
        assert!(policy.archive_ca_pem.is_some());
        let rejected = parse(&examples()).expect_err("placeholders are errors");
        assert!(rejected.problems.iter().all(|p| p.kind == ProblemKind::Placeholder), "{rejected:?}");
    }

    #[test]
    fn canonical_fields_follow_the_schema() {
        let names: Vec<&str> = example_policy().canonical_fields().into_iter().map(|(n, _)| n).collect();
        let schema: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
        assert_eq!(names, schema);
    }

    #[test]
    fn enum_words_match_the_policy_enums() {
        assert_eq!(schema::UPLOAD_NETWORKS.len(), 2);
        assert_eq!(schema::LOG_LEVELS.len(), 6);
        for (i, word) in schema::LOG_LEVELS.iter().enumerate() {
            let mut tree = edited_examples();
            if let Value::Dict(map) = &mut tree {
                map.insert("log_level".into(), Value::from(*word));
            }
            let level = parse(&tree).expect("valid").policy.log_level;
            assert_eq!(format!("{level:?}").to_ascii_lowercase(), *word, "index {i}");
        }
    }

    #[test]
    fn mdm_variables_are_recognised() {
        for v in ["{{deviceid}}", "$SERIALNUMBER", "{DeviceUid}", "x{{y}}"] {
            assert!(looks_like_mdm_variable(v), "{v}");
        }
        for v in ["C39XK2ABCD12", "$lower", "acme", "a{b}"] {
            assert!(!looks_like_mdm_variable(v), "{v}");
        }
    }

    #[test]
    fn edit_distance_suggests_close_keys() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(closest_key("archive_ur"), Some("archive_url"));
        assert_eq!(closest_key("Archive_URL"), Some("archive_url"));
        assert_eq!(closest_key("retention_days"), None);
    }

    #[test]
    fn quote_cuts_long_values() {
        let long = "x".repeat(200);
        let q = quote(&long);
        assert!(q.chars().count() <= 64 + 5, "{q}");
        assert!(q.ends_with("..."));
    }

    #[test]
    fn pem_rules() {
        let ok = "-----BEGIN CERTIFICATE-----\nMIIBszCC\n-----END CERTIFICATE-----\n";
        assert_eq!(pem_certificate_count(ok), Ok(1));
        assert_eq!(pem_certificate_count(&format!("{ok}{ok}")), Ok(2));
        assert!(pem_certificate_count("hello").is_err());
        // Any other PEM block is refused, a key above all (built here: no key block in the source).
        let key_block = format!("-----BEGIN {label}-----\nMIIB\n-----END {label}-----", label = "PRIVATE KEY");
        assert!(pem_certificate_count(&key_block).is_err());
        assert!(pem_certificate_count("-----BEGIN CERTIFICATE-----\nMIIB").is_err());
        assert!(pem_certificate_count("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----").is_err());
    }
}
