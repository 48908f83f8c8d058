//! Integration tests for managed policy parsing: every rule of `policy::parse`, secrecy of the
//! device token, and the fingerprint.

use std::collections::{BTreeMap, BTreeSet};

use verbatim_core::model::Channel;
use verbatim_core::policy::schema::{KEYS, KeyKind};
use verbatim_core::policy::{self, LogLevel, Parsed, Problem, ProblemKind, Rejected, UploadNetwork, Value};

/// A unique marker: if it shows up in any output, the token leaked.
const TOKEN: &str = "tok-SECRET-marker-42";
const ARCHIVE_KEY: &str = "HZZbBeJO45qQYQIpVz+fRAL7YzkKt7LJwK6Sfj1r54Q=";
const PIN_A: &str = "oS0x6oykwyrWvvaGjBLnC4l1zg4aTYaCK6JUSYDKR6E=";
/// URL-safe alphabet, no padding: accepted too.
const PIN_B: &str = "cZQcwvFVSNgOsMzbaZrsI1P2p9IDW4hfQJQhUpYRRek";
/// Valid base64 of 31 bytes.
const SHORT_KEY: &str = "x2n1jg+8pzF740icilZBOC04xe/742vjqSjw1NcqnA==";

/// The required keys only, with values that are not the template's examples.
fn base() -> BTreeMap<String, Value> {
    let mut m = BTreeMap::new();
    m.insert("archive_url".into(), Value::from("https://archive.acme-capital.test"));
    m.insert("archive_public_key".into(), Value::from(ARCHIVE_KEY));
    m.insert("tenant_id".into(), Value::from("acme-capital"));
    m.insert("device_token".into(), Value::from(TOKEN));
    m.insert("business_lines".into(), Value::List(vec!["+44 20 7946 0000".into(), "Jane@Acme.test".into()]));
    m.insert("policy_version".into(), Value::from("2026-11"));
    m
}

fn tree(m: BTreeMap<String, Value>) -> Value {
    Value::Dict(m)
}

fn with(key: &str, value: impl Into<Value>) -> Value {
    let mut m = base();
    m.insert(key.to_string(), value.into());
    tree(m)
}

fn without(key: &str) -> Value {
    let mut m = base();
    m.remove(key);
    tree(m)
}

fn ok(t: &Value) -> Parsed {
    match policy::parse(t) {
        Ok(parsed) => parsed,
        Err(rejected) => panic!("expected valid, got:\n{rejected}"),
    }
}

fn rejected(t: &Value) -> Rejected {
    match policy::parse(t) {
        Ok(parsed) => panic!("expected rejection, got {parsed:?}"),
        Err(rejected) => rejected,
    }
}

/// The single problem of a tree that has exactly one.
fn only_problem(t: &Value) -> Problem {
    let r = rejected(t);
    assert_eq!(r.problems.len(), 1, "{r}");
    r.problems.into_iter().next().unwrap()
}

fn assert_problem(t: &Value, key: &str, kind: ProblemKind) -> Problem {
    let p = only_problem(t);
    assert_eq!((p.key.as_str(), p.kind), (key, kind), "{p}");
    p
}

// ---------------------------------------------------------------------------------------------
// Valid policies and defaults
// ---------------------------------------------------------------------------------------------

#[test]
fn minimal_policy_gets_documented_defaults() {
    let parsed = ok(&tree(base()));
    assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
    let p = parsed.policy;
    assert_eq!(p.archive_url.as_str(), "https://archive.acme-capital.test/");
    assert_eq!(p.archive_key_id, "cd4ce61c4062039a");
    assert_eq!(p.tenant_id, "acme-capital");
    assert_eq!(p.device_token.expose(), TOKEN);
    assert_eq!(p.device_id, None);
    assert_eq!(p.archive_ca_pem, None);
    assert!(p.tls_pins.is_empty());
    assert_eq!(p.capture_channels, Channel::ALL.into_iter().collect::<BTreeSet<_>>());
    assert_eq!(p.business_lines, BTreeSet::from(["+442079460000".to_string(), "jane@acme.test".to_string()]));
    assert!(p.capture_attachments);
    assert_eq!(p.max_attachment_mb, 100);
    assert!(p.capture_call_recordings);
    assert_eq!(p.upload_network, UploadNetwork::Any);
    assert!(!p.upload_allow_roaming);
    assert_eq!(p.upload_interval_minutes, 15);
    assert_eq!(p.max_batch_kb, 1024);
    assert_eq!(p.queue_max_mb, 512);
    assert_eq!(p.queue_alert_percent, 80);
    assert!(p.fail_closed);
    assert_eq!(p.disclaimer_text, None);
    assert_eq!(p.log_level, LogLevel::Info);
    assert_eq!(p.policy_version, "2026-11");
}

#[test]
fn every_key_set_explicitly() {
    let mut m = base();
    let pem = "-----BEGIN CERTIFICATE-----\r\nMIIBszCCAVmgAwIBAgIU\r\n-----END CERTIFICATE-----\r\n";
    m.insert("device_id".into(), "C39XK2ABCD12".into());
    m.insert("archive_ca_pem".into(), pem.into());
    m.insert("tls_pins".into(), Value::List(vec![PIN_A.into(), PIN_B.into()]));
    m.insert("capture_channels".into(), "SMS, whatsapp ,voice".into());
    m.insert("capture_attachments".into(), false.into());
    m.insert("max_attachment_mb".into(), 2048.into());
    m.insert("capture_call_recordings".into(), "0".into());
    m.insert("upload_network".into(), "Unmetered".into());
    m.insert("upload_allow_roaming".into(), "TRUE".into());
    m.insert("upload_interval_minutes".into(), " 60 ".into());
    m.insert("max_batch_kb".into(), 128.into());
    m.insert("queue_max_mb".into(), 16384.into());
    m.insert("queue_alert_percent".into(), 99.into());
    m.insert("fail_closed".into(), false.into());
    m.insert("disclaimer_text".into(), "Recorded.\nFor regulatory purposes.".into());
    m.insert("log_level".into(), "warn".into());
    let p = ok(&tree(m)).policy;
    assert_eq!(p.device_id.as_deref(), Some("C39XK2ABCD12"));
    assert_eq!(p.archive_ca_pem.as_deref(), Some(pem.trim()));
    assert_eq!(p.tls_pins.len(), 2);
    assert_eq!(p.capture_channels, BTreeSet::from([Channel::Sms, Channel::Whatsapp, Channel::Voice]));
    assert!(!p.capture_attachments);
    assert_eq!(p.max_attachment_mb, 2048);
    assert!(!p.capture_call_recordings);
    assert_eq!(p.upload_network, UploadNetwork::Unmetered);
    assert!(p.upload_allow_roaming);
    assert_eq!(p.upload_interval_minutes, 60);
    assert_eq!(p.max_batch_kb, 128);
    assert_eq!(p.queue_max_mb, 16384);
    assert_eq!(p.queue_alert_percent, 99);
    assert!(!p.fail_closed);
    assert_eq!(p.disclaimer_text.as_deref(), Some("Recorded.\nFor regulatory purposes."));
    assert_eq!(p.log_level, LogLevel::Warn);
}

#[test]
fn blank_optional_values_take_the_default() {
    // MDM consoles send "" for fields the admin left empty.
    let mut m = base();
    for key in ["capture_channels", "max_batch_kb", "fail_closed", "log_level", "device_id", "tls_pins"] {
        m.insert(key.into(), "  ".into());
    }
    m.insert("disclaimer_text".into(), "".into());
    m.insert("archive_ca_pem".into(), "\n".into());
    let p = ok(&tree(m)).policy;
    assert_eq!(p.capture_channels.len(), Channel::ALL.len());
    assert_eq!(p.max_batch_kb, 1024);
    assert!(p.fail_closed);
    assert_eq!(p.log_level, LogLevel::Info);
    assert_eq!(p.device_id, None);
    assert!(p.tls_pins.is_empty());
    assert_eq!(p.disclaimer_text, None);
}

#[test]
fn strings_are_trimmed() {
    let p = ok(&with("tenant_id", "  acme-capital \n")).policy;
    assert_eq!(p.tenant_id, "acme-capital");
    let p = ok(&with("archive_url", " https://archive.acme-capital.test ")).policy;
    assert_eq!(p.archive_url.host_str(), Some("archive.acme-capital.test"));
}

// ---------------------------------------------------------------------------------------------
// Missing keys
// ---------------------------------------------------------------------------------------------

#[test]
fn every_required_key_missing_is_named_in_schema_order() {
    let r = rejected(&Value::dict::<String, _>([]));
    let required: Vec<&str> = KEYS.iter().filter(|k| k.required).map(|k| k.name).collect();
    assert_eq!(required, ["archive_url", "archive_public_key", "tenant_id", "device_token", "business_lines", "policy_version"]);
    let named: Vec<&str> = r.problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(named, required);
    assert!(r.problems.iter().all(|p| p.kind == ProblemKind::Missing));
    assert_eq!(r.problems[0].to_string(), "archive_url: required but missing");
}

#[test]
fn each_required_key_missing_alone() {
    for spec in KEYS.iter().filter(|k| k.required) {
        assert_problem(&without(spec.name), spec.name, ProblemKind::Missing);
    }
}

#[test]
fn empty_values_of_required_keys_count_as_missing() {
    for spec in KEYS.iter().filter(|k| k.required) {
        assert_problem(&with(spec.name, ""), spec.name, ProblemKind::Missing);
        assert_problem(&with(spec.name, "   "), spec.name, ProblemKind::Missing);
    }
    assert_problem(&with("business_lines", Value::List(vec![])), "business_lines", ProblemKind::Missing);
    assert_problem(&with("business_lines", Value::List(vec!["".into(), " ".into()])), "business_lines", ProblemKind::Missing);
    assert_problem(&with("business_lines", " , ,"), "business_lines", ProblemKind::Missing);
}

// ---------------------------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------------------------

#[test]
fn root_must_be_a_dictionary() {
    for t in [Value::from("x"), Value::from(1), Value::List(vec![])] {
        let p = only_problem(&t);
        assert_eq!(p.key, "(root)");
        assert_eq!(p.kind, ProblemKind::WrongType);
    }
}

/// For every key kind, values of each wrong type.
#[test]
fn wrong_types_for_each_kind() {
    let dict = || Value::dict([("a", Value::from("b"))]);
    let cases: Vec<(&str, Value)> = vec![
        // String
        ("tenant_id", Value::from(5)),
        ("tenant_id", Value::from(true)),
        ("tenant_id", Value::List(vec!["a".into()])),
        ("tenant_id", dict()),
        // Text
        ("disclaimer_text", Value::from(1)),
        ("disclaimer_text", Value::List(vec!["a".into()])),
        // Url
        ("archive_url", Value::from(true)),
        ("archive_url", Value::List(vec!["https://a.test".into()])),
        // PublicKey
        ("archive_public_key", Value::from(7)),
        ("archive_public_key", dict()),
        // Integer
        ("max_batch_kb", Value::from(true)),
        ("max_batch_kb", Value::from("lots")),
        ("max_batch_kb", Value::from("1.5")),
        ("max_batch_kb", Value::List(vec![1.into()])),
        // Bool
        ("fail_closed", Value::from(1)),
        ("fail_closed", Value::from("yes")),
        ("fail_closed", Value::from("on")),
        ("fail_closed", Value::List(vec![true.into()])),
        // StringList
        ("business_lines", Value::from(12125550100)),
        ("business_lines", dict()),
        ("business_lines", Value::List(vec!["+1 212".into(), 5.into()])),
        // ChannelList
        ("capture_channels", Value::from(true)),
        ("capture_channels", Value::List(vec![Value::List(vec![])])),
        // Enum
        ("log_level", Value::from(3)),
        ("upload_network", Value::List(vec!["any".into()])),
        // Pins
        ("tls_pins", Value::from(false)),
        ("tls_pins", Value::List(vec![PIN_A.into(), 1.into()])),
        // Pem
        ("archive_ca_pem", Value::from(1)),
        ("archive_ca_pem", Value::List(vec!["-----BEGIN CERTIFICATE-----".into()])),
    ];
    // Every kind in the schema is covered.
    let covered: BTreeSet<String> = cases.iter().map(|(k, _)| kind_name(k)).collect();
    let all: BTreeSet<String> = KEYS.iter().map(|k| kind_name(k.name)).collect();
    assert_eq!(covered, all);

    for (key, value) in cases {
        let shown = format!("{value:?}");
        let p = assert_problem(&with(key, value), key, ProblemKind::WrongType);
        assert!(p.detail.starts_with("must be") || p.detail.starts_with("item"), "{key} {shown}: {p}");
    }
}

fn kind_name(key: &str) -> String {
    let kind = KEYS.iter().find(|k| k.name == key).unwrap().kind;
    match kind {
        KeyKind::Integer { .. } => "Integer".into(),
        KeyKind::Enum(_) => "Enum".into(),
        other => format!("{other:?}"),
    }
}

#[test]
fn wrong_type_details_name_both_types() {
    let p = assert_problem(&with("tenant_id", 5), "tenant_id", ProblemKind::WrongType);
    assert_eq!(p.to_string(), "tenant_id: must be one line of text, got a whole number");
    let p = assert_problem(&with("device_token", 42), "device_token", ProblemKind::WrongType);
    assert_eq!(p.to_string(), "device_token: must be one line of text, got a whole number");
    let p = assert_problem(
        &with("business_lines", Value::List(vec!["a".into(), 5.into()])),
        "business_lines",
        ProblemKind::WrongType,
    );
    assert_eq!(p.to_string(), "business_lines: item 2 must be text, got a whole number");
}

// ---------------------------------------------------------------------------------------------
// Coercions MDM consoles need
// ---------------------------------------------------------------------------------------------

#[test]
fn lists_as_array_or_comma_string_are_equal() {
    let from_array = ok(&with("capture_channels", Value::List(vec!["sms".into(), " imessage ".into(), "".into()]))).policy;
    let from_string = ok(&with("capture_channels", "sms,imessage,")).policy;
    assert_eq!(from_array.capture_channels, from_string.capture_channels);
    assert_eq!(from_array.capture_channels, BTreeSet::from([Channel::Sms, Channel::Imessage]));

    let from_array = ok(&with("tls_pins", Value::List(vec![PIN_A.into(), PIN_B.into()]))).policy;
    let from_string = ok(&with("tls_pins", format!(" {PIN_B} , {PIN_A} "))).policy;
    assert_eq!(from_array.tls_pins, from_string.tls_pins);

    let from_string = ok(&with("business_lines", "+44 20 7946 0000, jane@acme.test")).policy;
    assert_eq!(from_string.business_lines, ok(&tree(base())).policy.business_lines);
}

#[test]
fn business_lines_are_normalised_and_duplicates_merged() {
    let lines = Value::List(vec!["+1 (212) 555-0100".into(), "+12125550100".into(), " Jane.Doe@Acme.test ".into()]);
    let p = ok(&with("business_lines", lines)).policy;
    assert_eq!(p.business_lines, BTreeSet::from(["+12125550100".to_string(), "jane.doe@acme.test".to_string()]));
}

#[test]
fn integers_may_arrive_as_strings() {
    assert_eq!(ok(&with("max_batch_kb", "2048")).policy.max_batch_kb, 2048);
    assert_eq!(ok(&with("max_batch_kb", " +256 ")).policy.max_batch_kb, 256);
    assert_eq!(ok(&with("queue_alert_percent", 50)).policy.queue_alert_percent, 50);
    let p = assert_problem(&with("max_batch_kb", "2k"), "max_batch_kb", ProblemKind::WrongType);
    assert_eq!(p.to_string(), "max_batch_kb: must be a whole number from 128 to 16384, got \"2k\"");
}

#[test]
fn booleans_accept_exactly_true_false_1_0() {
    for (text, expected) in
        [("true", true), ("TRUE", true), (" True ", true), ("1", true), ("false", false), ("False", false), ("0", false)]
    {
        assert_eq!(ok(&with("upload_allow_roaming", text)).policy.upload_allow_roaming, expected, "{text:?}");
    }
    assert!(ok(&with("upload_allow_roaming", true)).policy.upload_allow_roaming);
    for text in ["yes", "no", "on", "off", "2", "t", "-1"] {
        assert_problem(&with("upload_allow_roaming", text), "upload_allow_roaming", ProblemKind::WrongType);
    }
    // A real integer is not a boolean, even 0 or 1.
    for n in [0, 1] {
        assert_problem(&with("upload_allow_roaming", n), "upload_allow_roaming", ProblemKind::WrongType);
    }
}

#[test]
fn enums_ignore_case_and_list_the_choices() {
    assert_eq!(ok(&with("log_level", "DEBUG")).policy.log_level, LogLevel::Debug);
    let p = assert_problem(&with("upload_network", "wifi"), "upload_network", ProblemKind::InvalidValue);
    assert_eq!(p.to_string(), "upload_network: must be one of any, unmetered; got \"wifi\"");
}

// ---------------------------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------------------------

#[test]
fn http_url_is_insecure() {
    let p = assert_problem(&with("archive_url", "http://archive.acme-capital.test/v1"), "archive_url", ProblemKind::InsecureUrl);
    assert_eq!(p.to_string(), "archive_url: must use https, got http");
    assert_problem(&with("archive_url", "ftp://archive.acme-capital.test/"), "archive_url", ProblemKind::InsecureUrl);
}

#[test]
fn unusable_urls_are_invalid() {
    for bad in ["archive.acme-capital.test/v1", "https://", "https://[::1", "not a url"] {
        assert_problem(&with("archive_url", bad), "archive_url", ProblemKind::InvalidValue);
    }
    // Credentials in the URL are refused and never echoed.
    let p = assert_problem(
        &with("archive_url", "https://admin:hunter2@archive.acme-capital.test/"),
        "archive_url",
        ProblemKind::InvalidValue,
    );
    assert!(!p.detail.contains("hunter2"), "{p}");
}

#[test]
fn public_key_must_be_32_bytes_of_base64() {
    let p = assert_problem(&with("archive_public_key", "not base64!"), "archive_public_key", ProblemKind::InvalidValue);
    assert_eq!(p.to_string(), "archive_public_key: the key is not valid base64");
    let p = assert_problem(&with("archive_public_key", SHORT_KEY), "archive_public_key", ProblemKind::BadKeyLength);
    assert_eq!(p.to_string(), "archive_public_key: the key must decode to 32 bytes, got 31");
    assert_problem(&with("archive_public_key", "AAAA"), "archive_public_key", ProblemKind::BadKeyLength);
    let zeros = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    assert_problem(&with("archive_public_key", zeros), "archive_public_key", ProblemKind::InvalidValue);
    // URL-safe alphabet and missing padding are accepted.
    let p = ok(&with("archive_public_key", PIN_B)).policy;
    assert_eq!(p.archive_public_key, ok(&with("tls_pins", PIN_B)).policy.tls_pins[0]);
}

#[test]
fn bad_pins_name_the_item() {
    let p = assert_problem(&with("tls_pins", format!("{PIN_A},{SHORT_KEY}")), "tls_pins", ProblemKind::BadKeyLength);
    assert!(p.detail.starts_with("item 2 must decode to 32 bytes, got 31"), "{p}");
    let p =
        assert_problem(&with("tls_pins", Value::List(vec!["%%%".into(), PIN_A.into()])), "tls_pins", ProblemKind::InvalidValue);
    assert!(p.detail.starts_with("item 1 is not valid base64"), "{p}");
    // Both bad items named in one problem.
    let p = only_problem(&with("tls_pins", format!("%%%,{PIN_A},AAAA")));
    assert!(p.detail.contains("item 1") && p.detail.contains("item 3") && !p.detail.contains("item 2"), "{p}");
}

#[test]
fn pins_are_sorted_and_deduplicated() {
    let p = ok(&with("tls_pins", format!("{PIN_B},{PIN_A},{PIN_B}"))).policy;
    assert_eq!(p.tls_pins.len(), 2);
    assert!(p.tls_pins[0] < p.tls_pins[1]);
}

#[test]
fn unknown_channels_are_named_with_the_valid_ones() {
    let p =
        assert_problem(&with("capture_channels", "sms,carrier-pigeon,telegram"), "capture_channels", ProblemKind::InvalidValue);
    assert_eq!(
        p.to_string(),
        "capture_channels: unknown channel \"carrier-pigeon\"; valid: sms, mms, rcs, imessage, whatsapp, wechat, signal, telegram, line, voice"
    );
    let p = only_problem(&with("capture_channels", Value::List(vec!["fax".into(), "telex".into()])));
    assert!(p.detail.starts_with("unknown channels \"fax\", \"telex\";"), "{p}");
}

#[test]
fn out_of_range_integers() {
    for spec in KEYS {
        let KeyKind::Integer { min, max } = spec.kind else { continue };
        for bad in [min - 1, max + 1, i64::MIN, i64::MAX] {
            let p = assert_problem(&with(spec.name, bad), spec.name, ProblemKind::OutOfRange);
            assert_eq!(p.detail, format!("must be from {min} to {max}, got {bad}"));
        }
        assert_problem(&with(spec.name, (max + 1).to_string()), spec.name, ProblemKind::OutOfRange);
        ok(&with(spec.name, min));
        ok(&with(spec.name, max));
    }
}

#[test]
fn one_line_strings_refuse_control_characters() {
    assert_problem(&with("tenant_id", "acme\nevil: header"), "tenant_id", ProblemKind::InvalidValue);
    assert_problem(&with("policy_version", "v\u{7}1"), "policy_version", ProblemKind::InvalidValue);
    assert_problem(&with("disclaimer_text", "ok\u{0}"), "disclaimer_text", ProblemKind::InvalidValue);
}

#[test]
fn overlong_values_are_refused() {
    assert_problem(&with("tenant_id", "a".repeat(5000)), "tenant_id", ProblemKind::InvalidValue);
    let many: Vec<Value> = (0..1001).map(|i| Value::from(format!("+1555{i:07}"))).collect();
    assert_problem(&with("business_lines", Value::List(many)), "business_lines", ProblemKind::InvalidValue);
}

#[test]
fn unsubstituted_mdm_variables_are_refused() {
    let p = assert_problem(&with("device_id", "{{deviceid}}"), "device_id", ProblemKind::InvalidValue);
    assert!(p.detail.contains("MDM variable"), "{p}");
    assert_problem(&with("device_id", "$SERIALNUMBER"), "device_id", ProblemKind::InvalidValue);
}

#[test]
fn pem_must_hold_certificates_only() {
    let p = assert_problem(&with("archive_ca_pem", "just some text"), "archive_ca_pem", ProblemKind::InvalidValue);
    assert!(p.detail.contains("BEGIN CERTIFICATE"), "{p}");
    // A key's PEM block by mistake (built here: no key block in the source).
    let private =
        format!("-----BEGIN {label}-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END {label}-----", label = "PRIVATE KEY");
    let p = assert_problem(&with("archive_ca_pem", private.as_str()), "archive_ca_pem", ProblemKind::InvalidValue);
    assert!(!p.detail.contains("MIIEvQ"), "{p}");
}

// ---------------------------------------------------------------------------------------------
// Collecting problems and warnings
// ---------------------------------------------------------------------------------------------

#[test]
fn all_problems_are_reported_at_once_in_schema_order() {
    let mut m = base();
    m.insert("archive_url".into(), "http://archive.acme-capital.test".into());
    m.insert("archive_public_key".into(), SHORT_KEY.into());
    m.remove("tenant_id");
    m.insert("max_batch_kb".into(), 1.into());
    m.insert("log_level".into(), "loud".into());
    m.insert("colour".into(), "blue".into());
    let r = rejected(&tree(m));
    let got: Vec<(&str, ProblemKind)> = r.problems.iter().map(|p| (p.key.as_str(), p.kind)).collect();
    assert_eq!(
        got,
        [
            ("archive_url", ProblemKind::InsecureUrl),
            ("archive_public_key", ProblemKind::BadKeyLength),
            ("tenant_id", ProblemKind::Missing),
            ("max_batch_kb", ProblemKind::OutOfRange),
            ("log_level", ProblemKind::InvalidValue),
        ]
    );
    // Display: one line per problem, each starting with its key.
    let text = r.to_string();
    assert_eq!(text.lines().count(), 5);
    for (line, p) in text.lines().zip(&r.problems) {
        assert!(line.starts_with(&format!("{}: ", p.key)), "{line}");
    }
    // Unknown keys are warnings even when the policy is rejected.
    assert_eq!(r.warnings.len(), 1);
    assert_eq!(r.warnings[0].kind, ProblemKind::UnknownKey);
}

#[test]
fn unknown_keys_are_warnings_with_suggestions() {
    let mut m = base();
    m.insert("retention_days".into(), 24.into());
    m.insert("captur_channels".into(), "sms".into());
    let parsed = ok(&tree(m));
    let warnings: Vec<String> = parsed.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(
        warnings,
        ["captur_channels: unknown key, ignored; did you mean capture_channels?", "retention_days: unknown key, ignored"]
    );
    assert!(parsed.warnings.iter().all(|w| w.kind == ProblemKind::UnknownKey));
    // The misspelt key did not count: the default applies.
    assert_eq!(parsed.policy.capture_channels.len(), Channel::ALL.len());
}

#[test]
fn unknown_key_names_are_cut_and_made_printable() {
    let long_key = format!("x\n{}", "y".repeat(500));
    let parsed = ok(&with(&long_key, 1));
    let w = &parsed.warnings[0];
    assert!(w.key.chars().count() <= 64 && !w.key.contains('\n'), "{w}");
}

#[test]
fn template_examples_are_refused_as_placeholders() {
    let mut m = base();
    for key in ["archive_public_key", "device_token"] {
        let spec = KEYS.iter().find(|k| k.name == key).unwrap();
        m.insert(key.into(), spec.example.into());
    }
    let r = rejected(&tree(m));
    let flagged: Vec<(&str, ProblemKind)> = r.problems.iter().map(|w| (w.key.as_str(), w.kind)).collect();
    assert_eq!(flagged, [("archive_public_key", ProblemKind::Placeholder), ("device_token", ProblemKind::Placeholder)]);
    assert_eq!(r.problems[1].to_string(), "device_token: still holds the template's example value; replace it with the real one");
}

// ---------------------------------------------------------------------------------------------
// archive_url and archive_key_id
// ---------------------------------------------------------------------------------------------

#[test]
fn archive_url_naming_the_api_version_is_refused() {
    for url in ["https://a.test/v1", "https://a.test/v1/", "https://a.test/archive/v1", "https://a.test/v1/batches"] {
        let p = assert_problem(&with("archive_url", url), "archive_url", ProblemKind::InvalidValue);
        assert_eq!(
            p.to_string(),
            "archive_url: must be the archive's base address without the API version: remove the trailing /v1 \
             (or /v1/batches); the agent adds /v1/batches itself",
            "{url}"
        );
    }
    assert_problem(&with("archive_url", "https://a.test/?x=1"), "archive_url", ProblemKind::InvalidValue);
}

#[test]
fn archive_url_is_a_base_that_keeps_its_path_prefix() {
    for (given, parsed) in [
        ("https://a.test", "https://a.test/"),
        ("https://a.test:8443/", "https://a.test:8443/"),
        ("https://a.test/archive", "https://a.test/archive/"),
        ("https://a.test/v1x", "https://a.test/v1x/"),
    ] {
        let url = ok(&with("archive_url", given)).policy.archive_url;
        assert_eq!(url.as_str(), parsed);
        // What the uploader does with it.
        assert_eq!(url.join("v1/batches").unwrap().path(), format!("{}v1/batches", url.path()));
    }
}

#[test]
fn archive_key_id_defaults_to_the_keys_id_and_must_match_it() {
    let derived = verbatim_core::seal::key_id(&ok(&tree(base())).policy.archive_public_key);
    assert_eq!(derived, "cd4ce61c4062039a");
    assert_eq!(ok(&tree(base())).policy.archive_key_id, derived);
    assert_eq!(ok(&with("archive_key_id", derived.as_str())).policy.archive_key_id, derived);
    let p = assert_problem(&with("archive_key_id", "archive-2026-01"), "archive_key_id", ProblemKind::InvalidValue);
    assert_eq!(
        p.to_string(),
        "archive_key_id: does not match archive_public_key, whose key id is cd4ce61c4062039a (what `verbatim keygen` \
         printed); fix whichever of the two is wrong, or leave archive_key_id out"
    );
    // A wrong public key with the right id is caught the same way.
    let mut m = base();
    m.insert("archive_key_id".into(), derived.as_str().into());
    m.insert("archive_public_key".into(), PIN_A.into());
    assert_eq!(only_problem(&tree(m)).key, "archive_key_id");
}

#[test]
fn reals_are_whole_numbers_or_refused_by_key() {
    assert_eq!(ok(&with("max_batch_kb", 2048.0)).policy.max_batch_kb, 2048);
    let p = assert_problem(&with("max_batch_kb", 2048.5), "max_batch_kb", ProblemKind::WrongType);
    assert_eq!(p.to_string(), "max_batch_kb: must be a whole number from 128 to 16384, got \"2048.5\"");
    assert_problem(&with("max_batch_kb", f64::NAN), "max_batch_kb", ProblemKind::WrongType);
    assert_problem(&with("max_batch_kb", 1e300), "max_batch_kb", ProblemKind::WrongType);
    let p = assert_problem(&with("max_batch_kb", 1e6), "max_batch_kb", ProblemKind::OutOfRange);
    assert_eq!(p.to_string(), "max_batch_kb: must be from 128 to 16384, got 1000000");
    let p = assert_problem(&with("tenant_id", 1.0), "tenant_id", ProblemKind::WrongType);
    assert_eq!(p.to_string(), "tenant_id: must be one line of text, got a number with a fraction");
}

// ---------------------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------------------

/// Trees where the token (only ever under a credential key) is wrong in every way a value can
/// be wrong, or fine, in policies that are otherwise valid or otherwise rejected.
fn token_trees() -> Vec<Value> {
    let tokens: Vec<Value> = vec![
        TOKEN.into(),
        Value::List(vec![TOKEN.into()]),
        Value::dict([("v", Value::from(TOKEN))]),
        format!("{TOKEN}\n").into(),
        format!("line1\n{TOKEN}").into(),
        format!("{TOKEN}\u{7}").into(),
        format!("{{{{{TOKEN}}}}}").into(),
        format!("{{{TOKEN}}}").into(),
        format!("${TOKEN}").into(),
        TOKEN.repeat(500).into(),
    ];
    let mut trees = Vec::new();
    for token in tokens {
        for otherwise_rejected in [false, true] {
            let mut m = base();
            m.insert("device_token".into(), token.clone());
            if otherwise_rejected {
                m.insert("archive_url".into(), "http://x.test".into());
                m.remove("tenant_id");
            }
            trees.push(tree(m.clone()));
            // Misspelt, so an unknown key (and device_token missing).
            let value = m.remove("device_token").unwrap();
            m.insert("Device_Token".into(), value);
            trees.push(tree(m));
        }
    }
    trees
}

#[test]
fn the_token_never_appears_in_any_output() {
    let trees = token_trees();
    assert_eq!(trees.len(), 40);
    for t in trees {
        let mut outputs = vec![format!("{t:?}"), format!("{t:#?}")];
        match policy::parse(&t) {
            Ok(parsed) => {
                outputs.push(format!("{parsed:?}"));
                outputs.push(format!("{:#?}", parsed.policy));
                outputs.extend(parsed.warnings.iter().map(|w| format!("{w} {w:?}")));
            }
            Err(r) => {
                outputs.push(format!("{r}"));
                outputs.push(format!("{r:?}"));
                outputs.extend(r.problems.iter().chain(&r.warnings).map(|p| format!("{p} {p:?} {}", p.detail)));
            }
        }
        for out in outputs {
            assert!(!out.contains("SECRET-marker"), "leaked: {out}");
        }
    }
}

#[test]
fn token_problems_never_show_the_value() {
    let p = assert_problem(&with("device_token", format!("{{{{{TOKEN}}}}}")), "device_token", ProblemKind::InvalidValue);
    assert_eq!(
        p.detail,
        "(value hidden) looks like an MDM variable that was not substituted; check the variable's name in the MDM"
    );
    let p = assert_problem(&with("device_token", format!("{TOKEN}\u{7}")), "device_token", ProblemKind::InvalidValue);
    assert!(!p.detail.contains("SECRET"));
}

#[test]
fn value_debug_redacts_the_token() {
    let shown = format!("{:?}", tree(base()));
    assert!(!shown.contains(TOKEN), "{shown}");
    assert!(shown.contains("\"device_token\": [redacted]"), "{shown}");
    assert!(shown.contains("acme-capital"), "{shown}");
}

#[test]
fn value_round_trips_through_json() {
    let t = with("tls_pins", Value::List(vec![PIN_A.into()]));
    let json = serde_json::to_string(&t).unwrap();
    let back: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(back, t);
    assert_eq!(ok(&back).policy, ok(&t).policy);
}

// ---------------------------------------------------------------------------------------------
// Fingerprint
// ---------------------------------------------------------------------------------------------

/// For every key, a valid value different from what `base()` yields (explicitly or by default).
fn changed_value(key: &str) -> Value {
    match key {
        "archive_url" => "https://archive2.acme-capital.test".into(),
        "archive_public_key" => PIN_A.into(),
        "tenant_id" => "acme-capital-eu".into(),
        "device_token" => "tok-rotated".into(),
        "device_id" => "C39XK2ABCD12".into(),
        "archive_ca_pem" => "-----BEGIN CERTIFICATE-----\nMIIBszCC\n-----END CERTIFICATE-----".into(),
        "tls_pins" => PIN_A.into(),
        "capture_channels" => "sms".into(),
        "business_lines" => "+44 20 7946 0000".into(),
        "capture_attachments" => false.into(),
        "max_attachment_mb" => 99.into(),
        "capture_call_recordings" => false.into(),
        "upload_network" => "unmetered".into(),
        "upload_allow_roaming" => true.into(),
        "upload_interval_minutes" => 16.into(),
        "max_batch_kb" => 1025.into(),
        "queue_max_mb" => 513.into(),
        "queue_alert_percent" => 81.into(),
        "pending_alert_hours" => 48.into(),
        "heartbeat_hours" => 12.into(),
        "fail_closed" => false.into(),
        "disclaimer_text" => "Recorded.".into(),
        "disclaimer_mode" => "daily".into(),
        "log_level" => "debug".into(),
        "policy_version" => "2026-12".into(),
        "backfill_days" => 3.into(),
        "organization_name" => "Acme Capital".into(),
        other => panic!("no changed value for {other}: add one"),
    }
}

#[test]
fn fingerprint_changes_when_any_field_changes() {
    let original = ok(&tree(base())).policy.fingerprint();
    let mut seen = BTreeSet::from([original]);
    // archive_key_id cannot change alone: it is bound to archive_public_key, whose change
    // (which changes the derived id too) is covered.
    for spec in KEYS.iter().filter(|k| k.name != "archive_key_id") {
        let changed = ok(&with(spec.name, changed_value(spec.name))).policy;
        let fp = changed.fingerprint();
        assert_ne!(fp, original, "{} did not change the fingerprint", spec.name);
        assert!(seen.insert(fp), "{} collided with another change", spec.name);
    }
}

#[test]
fn fingerprint_is_equal_for_equal_policies() {
    let a = ok(&tree(base())).policy;
    // The same policy written differently: comma string, strings for numbers, explicit defaults.
    let mut m = base();
    m.insert("business_lines".into(), "jane@acme.test, +44 (20) 7946-0000".into());
    m.insert("max_batch_kb".into(), "1024".into());
    m.insert("fail_closed".into(), "1".into());
    m.insert("capture_channels".into(), "voice,sms,mms,rcs,imessage,whatsapp,wechat,signal,telegram,line".into());
    let b = ok(&tree(m)).policy;
    assert_eq!(a, b);
    assert_eq!(a.fingerprint(), b.fingerprint());
    assert_eq!(a.fingerprint_hex().len(), 64);
    assert_eq!(a.fingerprint(), a.clone().fingerprint());
}

#[test]
fn fingerprint_depends_on_the_token_without_containing_it() {
    let a = ok(&tree(base())).policy;
    let b = ok(&with("device_token", "tok-SECRET-marker-43")).policy;
    assert_ne!(a.fingerprint(), b.fingerprint());
    assert!(!a.fingerprint_hex().contains("SECRET"));
}

#[test]
fn fingerprint_order_of_pins_does_not_matter() {
    let mut a = ok(&with("tls_pins", format!("{PIN_A},{PIN_B}"))).policy;
    let fp = a.fingerprint();
    a.tls_pins.reverse();
    assert_eq!(a.fingerprint(), fp);
}

// ---------------------------------------------------------------------------------------------
// Files (property lists and JSON as an admin writes them)
// ---------------------------------------------------------------------------------------------

#[cfg(feature = "policy-files")]
mod files {
    use super::*;
    use verbatim_core::policy::file::{self, FileError, FormatError};

    fn temp_file(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("core-policy-tests");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn json_file_loads_and_parses() {
        let json = serde_json::to_vec_pretty(&tree(base())).unwrap();
        let path = temp_file("policy.json", &json);
        let value = file::load(&path).unwrap();
        assert_eq!(ok(&value).policy, ok(&tree(base())).policy);
    }

    #[test]
    fn xml_plist_with_strings_for_everything_parses() {
        // Some consoles only emit <string>: numbers, booleans and lists as text.
        let xml = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0"><dict>
<key>archive_url</key><string>https://archive.acme-capital.test</string>
<key>archive_public_key</key><string>{ARCHIVE_KEY}</string>
<key>archive_key_id</key><string>cd4ce61c4062039a</string>
<key>tenant_id</key><string>acme-capital</string>
<key>device_token</key><string>{TOKEN}</string>
<key>business_lines</key><string>+44 20 7946 0000,jane@acme.test</string>
<key>max_batch_kb</key><string>1024</string>
<key>fail_closed</key><string>true</string>
<key>policy_version</key><string>2026-11</string>
</dict></plist>"#
        );
        let path = temp_file("strings.plist", xml.as_bytes());
        let value = file::load(&path).unwrap();
        assert_eq!(ok(&value).policy, ok(&tree(base())).policy);
    }

    #[test]
    fn file_errors_name_the_file() {
        let missing = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("no-such-policy.plist");
        let e = file::load(&missing).unwrap_err();
        assert!(matches!(e, FileError::Read { .. }));
        assert!(e.to_string().starts_with(&missing.display().to_string()), "{e}");

        let path = temp_file("garbage.txt", b"archive_url = https://x");
        let e = file::load(&path).unwrap_err();
        assert!(matches!(e, FileError::Format { source: FormatError::UnknownFormat, .. }));
        assert!(e.to_string().contains("garbage.txt"), "{e}");

        let path = temp_file("bad.json", format!("{{\"device_token\": \"{TOKEN}\",").as_bytes());
        let e = file::load(&path).unwrap_err();
        assert!(matches!(e, FileError::Format { source: FormatError::Json(_), .. }));
        assert!(!e.to_string().contains("SECRET"), "{e}");
    }

    #[test]
    fn reals_nulls_and_dates_are_problems_reported_with_all_the_others() {
        // One whole real (accepted), one fractional real, a date in a required key, and a bad
        // URL: every problem at once, none hiding another.
        let xml = format!(
            r#"<plist version="1.0"><dict>
<key>archive_url</key><string>http://archive.acme-capital.test</string>
<key>archive_public_key</key><string>{ARCHIVE_KEY}</string>
<key>tenant_id</key><date>2026-01-01T00:00:00Z</date>
<key>device_token</key><string>{TOKEN}</string>
<key>business_lines</key><string>+44 20 7946 0000</string>
<key>upload_interval_minutes</key><real>15.0</real>
<key>max_batch_kb</key><real>1024.5</real>
<key>policy_version</key><string>2026-11</string>
</dict></plist>"#
        );
        let loaded = file::read_bytes(xml.as_bytes()).unwrap();
        assert_eq!(loaded.left_out, vec!["tenant_id".to_string()]);
        let rejected = verbatim_core::policy::parse(&loaded.tree).unwrap_err();
        let shown: Vec<String> = rejected.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            vec![
                "archive_url: must use https, got http".to_string(),
                "tenant_id: required but missing".to_string(),
                "max_batch_kb: must be a whole number from 128 to 16384, got \"1024.5\"".to_string(),
            ]
        );
        let json = format!(
            r#"{{"archive_url": "https://a.test", "archive_public_key": "{ARCHIVE_KEY}", "tenant_id": "t",
            "device_token": "{TOKEN}", "business_lines": ["+1 555 0100", null], "upload_interval_minutes": 15.0,
            "device_id": null, "policy_version": "1"}}"#
        );
        let policy = ok(&file::from_bytes(json.as_bytes()).unwrap()).policy;
        assert_eq!(policy.upload_interval_minutes, 15);
        assert_eq!(policy.device_id, None);
    }
}

#[test]
fn unsubstituted_mdm_variables_in_business_lines_are_refused() {
    for var in ["$EMAIL", "{{mail}}", "{UserEmailAddress}"] {
        let mut tree = valid_tree_for_variables();
        if let Value::Dict(map) = &mut tree {
            map.insert("business_lines".into(), Value::String(format!("+1 555 0100, {var}")));
        }
        let rejected = verbatim_core::policy::parse(&tree).unwrap_err();
        assert_eq!(rejected.problems.len(), 1, "{var}: {rejected}");
        assert_eq!(rejected.problems[0].key, "business_lines");
        assert!(rejected.problems[0].detail.contains("MDM variable"), "{}", rejected.problems[0].detail);
    }
}

fn valid_tree_for_variables() -> Value {
    let (_, pk) = verbatim_core::seal::generate_archive_keypair();
    verbatim_core::synth::sample_policy("https://archive.acme-securities.test", &pk, "tok-x", &[])
}

#[test]
fn keys_added_later_leave_the_fingerprint_of_earlier_policies_unchanged() {
    // Fingerprint of this policy as computed before backfill_days and organization_name
    // existed: a pushed policy that does not set them must not look changed after an upgrade.
    let t = Value::dict([
        ("archive_url", Value::from("https://archive.acme.test")),
        ("archive_public_key", Value::from("AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=")),
        ("tenant_id", Value::from("acme-test")),
        ("device_token", Value::from("tok-test")),
        ("business_lines", Value::from("+15550199")),
        ("policy_version", Value::from("2026-01")),
    ]);
    let before = ok(&t).policy.fingerprint_hex();
    assert!(before.starts_with("9c38e8f8fbbc381d"), "{before}");
    let mut with_defaults = t.clone();
    if let Value::Dict(m) = &mut with_defaults {
        m.insert("backfill_days".into(), Value::Integer(0));
    }
    assert_eq!(ok(&with_defaults).policy.fingerprint_hex(), before, "a default value is not a change");
}
