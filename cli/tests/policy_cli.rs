//! Runs the built `verbatim` binary: `policy check`, `policy template`, `policy reference`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A unique marker: if it shows up in any output, the token leaked.
const TOKEN: &str = "tok-SECRET-marker-42";
const ARCHIVE_KEY: &str = "HZZbBeJO45qQYQIpVz+fRAL7YzkKt7LJwK6Sfj1r54Q=";

fn verbatim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_verbatim")).args(args).output().expect("run verbatim")
}

fn check(path: &Path) -> Output {
    let out = verbatim(&["policy", "check", path.to_str().expect("utf-8 path")]);
    assert_no_token(&out);
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_no_token(out: &Output) {
    let all = format!("{}{}", stdout(out), stderr(out));
    assert!(!all.contains("SECRET-marker"), "token leaked:\n{all}");
}

fn temp_file(name: &str, contents: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("policy-cli");
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write temp file");
    path
}

fn valid_json() -> serde_json::Value {
    serde_json::json!({
        "archive_url": "https://archive.acme-capital.test",
        "archive_public_key": ARCHIVE_KEY,
        "archive_key_id": "cd4ce61c4062039a",
        "tenant_id": "acme-capital",
        "device_token": TOKEN,
        "business_lines": ["+44 20 7946 0000", "jane@acme.test"],
        "capture_channels": "sms,imessage,whatsapp",
        "max_batch_kb": "2048",
        "policy_version": "2026-11"
    })
}

const VALID_PLIST: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
    <key>archive_url</key>
    <string>https://archive.acme-capital.test</string>
    <key>archive_public_key</key>
    <string>HZZbBeJO45qQYQIpVz+fRAL7YzkKt7LJwK6Sfj1r54Q=</string>
    <key>archive_key_id</key>
    <string>cd4ce61c4062039a</string>
    <key>tenant_id</key>
    <string>acme-capital</string>
    <key>device_token</key>
    <string>tok-SECRET-marker-42</string>
    <key>business_lines</key>
    <array>
        <string>+44 20 7946 0000</string>
    </array>
    <key>capture_channels</key>
    <array>
        <string>sms</string>
    </array>
    <key>upload_allow_roaming</key>
    <true/>
    <key>max_attachment_mb</key>
    <integer>50</integer>
    <key>policy_version</key>
    <string>2026-11</string>
</dict>
</plist>
"#;

#[test]
fn valid_json_prints_one_summary_line() {
    let path = temp_file("valid.json", &valid_json().to_string());
    let out = check(&path);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.starts_with(
            "valid: policy_version 2026-11, tenant acme-capital, archive https://archive.acme-capital.test/, \
             3 channels, 2 business lines, fingerprint "
        ),
        "{text}"
    );
    assert_eq!(stderr(&out), "");
}

#[test]
fn valid_xml_plist_prints_one_summary_line() {
    let path = temp_file("valid.plist", VALID_PLIST);
    let out = check(&path);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("1 channel, 1 business line,"), "{text}");
    assert_eq!(stderr(&out), "");
}

#[test]
fn unknown_keys_are_warnings_on_stderr() {
    let mut json = valid_json();
    json["retention_days"] = serde_json::json!(24);
    let path = temp_file("unknown-key.json", &json.to_string());
    let out = check(&path);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out).lines().count(), 1);
    assert_eq!(stderr(&out), "warning: retention_days: unknown key, ignored\n");
}

#[test]
fn invalid_policy_prints_one_line_per_problem() {
    let mut json = valid_json();
    json["archive_url"] = "http://archive.acme-capital.test".into();
    json["archive_public_key"] = "AAAA".into();
    json["device_token"] = serde_json::json!([TOKEN]);
    json["capture_channels"] = "sms,pager".into();
    json["upload_interval_minutes"] = serde_json::json!(1);
    json["fail_closed"] = "maybe".into();
    json.as_object_mut().unwrap().remove("tenant_id");
    let path = temp_file("invalid.json", &json.to_string());
    let out = check(&path);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let keys: Vec<&str> = text.lines().map(|l| l.split(':').next().unwrap_or_default()).collect();
    assert_eq!(
        keys,
        [
            "archive_url",
            "archive_public_key",
            "tenant_id",
            "device_token",
            "capture_channels",
            "upload_interval_minutes",
            "fail_closed"
        ],
        "{text}"
    );
    assert!(text.lines().any(|l| l == "archive_url: must use https, got http"), "{text}");
    assert!(text.lines().any(|l| l == "device_token: must be one line of text, got a list"), "{text}");
    // Written for admins: no code notation, no "a integer".
    assert!(!text.contains("..=") && !text.contains(" a integer"), "{text}");
    assert!(text.lines().any(|l| l == "upload_interval_minutes: must be from 5 to 1440, got 1"), "{text}");
}

#[test]
fn token_problems_never_echo_the_token() {
    for token in [
        serde_json::json!(format!("{{{{{TOKEN}}}}}")),
        serde_json::json!(format!("{TOKEN}\u{7}")),
        serde_json::json!({ "v": TOKEN }),
        serde_json::json!(TOKEN.repeat(300)),
    ] {
        let mut json = valid_json();
        json["device_token"] = token;
        let path = temp_file("bad-token.json", &json.to_string());
        let out = check(&path);
        assert_eq!(out.status.code(), Some(1));
        assert!(stdout(&out).starts_with("device_token: "), "{}", stdout(&out));
    }
}

#[test]
fn unreadable_files_exit_2_naming_the_file() {
    let missing = Path::new(env!("CARGO_TARGET_TMPDIR")).join("policy-cli-no-such-file.plist");
    let out = check(&missing);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("policy-cli-no-such-file.plist"), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");

    for (name, contents) in [
        ("garbage.txt", "archive_url=https://x".to_string()),
        ("truncated.json", format!("{{\"device_token\": \"{TOKEN}\"")),
        ("broken.plist", "<plist><dict><key>a</key>".to_string()),
    ] {
        let path = temp_file(name, &contents);
        let out = check(&path);
        assert_eq!(out.status.code(), Some(2), "{name}");
        assert!(stderr(&out).contains(name), "{name}: {}", stderr(&out));
        assert_eq!(stdout(&out), "", "{name}");
    }
}

#[test]
fn a_key_id_that_is_not_the_public_keys_names_the_right_one() {
    let mut json = valid_json();
    json["archive_key_id"] = "archive-2026-01".into();
    json["tenant_id"] = serde_json::json!(7);
    let out = check(&temp_file("key-id.json", &json.to_string()));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stdout(&out),
        "archive_key_id: does not match archive_public_key, whose key id is cd4ce61c4062039a (what `verbatim keygen` \
         printed); fix whichever of the two is wrong, or leave archive_key_id out\n\
         tenant_id: must be one line of text, got a whole number\n"
    );
}

#[test]
fn unedited_template_is_refused_for_its_placeholders() {
    let out = verbatim(&["policy", "template"]);
    assert_eq!(out.status.code(), Some(0));
    let template = stdout(&out);
    assert!(template.contains("<key>device_token</key>"), "{template}");
    assert!(template.contains("REPLACE-WITH-DEVICE-TOKEN"), "{template}");
    // Every key appears, set or described.
    for key in ["archive_url", "archive_key_id", "archive_ca_pem", "tls_pins", "disclaimer_text", "log_level", "policy_version"] {
        assert!(template.contains(key), "{key} missing from template");
    }

    let path = temp_file("template.plist", &template);
    let out = check(&path);
    assert_eq!(out.status.code(), Some(1), "{}{}", stdout(&out), stderr(&out));
    let problems = stdout(&out);
    let keys: Vec<&str> = problems.lines().map(|l| l.split(':').next().unwrap_or_default()).collect();
    assert_eq!(keys, ["archive_url", "archive_public_key", "tenant_id", "device_token", "business_lines"], "{problems}");
    assert!(problems.lines().all(|l| l.ends_with("still holds the template's example value; replace it with the real one")));
    assert_eq!(stderr(&out), "");
}

/// A file with reals, a null and a date: every problem at once (exit 1), not one format error.
#[test]
fn reals_nulls_and_dates_are_read_as_every_platform_reads_them() {
    let plist = VALID_PLIST
        .replace("<integer>50</integer>", "<real>50.0</real>")
        .replace(
            "<key>policy_version</key>",
            "<key>max_batch_kb</key><real>1.5</real><key>disclaimer_text</key><date>2026-01-01T00:00:00Z</date>\
             <key>policy_version</key>",
        )
        .replace("<string>https://archive.acme-capital.test</string>", "<string>https://archive.acme-capital.test/v1</string>");
    let path = temp_file("reals.plist", &plist);
    let out = check(&path);
    assert_eq!(out.status.code(), Some(1), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(
        stdout(&out),
        "archive_url: must be the archive's base address without the API version: remove the trailing /v1 (or /v1/batches); \
         the agent adds /v1/batches itself\nmax_batch_kb: must be a whole number from 128 to 16384, got \"1.5\"\n"
    );
    assert_eq!(stderr(&out), "warning: disclaimer_text: a date or data value, which no key takes; read as not set\n");

    let mut json = valid_json();
    json["max_batch_kb"] = serde_json::json!(2048.0);
    json["device_id"] = serde_json::Value::Null;
    let path = temp_file("reals.json", &json.to_string());
    let out = check(&path);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
}

/// The formats docs/mdm-admin.md tells admins to use, each detected from its content.
#[test]
fn every_console_format_in_the_admin_guide_is_read() {
    // Intune, Android, "Enter JSON data".
    let intune_android = serde_json::json!({
        "kind": "androidenterprise#managedConfiguration",
        "productId": "app:com.acme.messaging",
        "managedProperty": [
            {"key": "archive_url", "valueString": "https://archive.acme-capital.test"},
            {"key": "archive_public_key", "valueString": ARCHIVE_KEY},
            {"key": "tenant_id", "valueString": "acme-capital"},
            {"key": "device_token", "valueString": TOKEN},
            {"key": "device_id", "valueString": "8f0c7a5e-2b1d-4c3e-9a7f-1e2d3c4b5a69"},
            {"key": "business_lines", "valueString": "+44 20 7946 0000,jane@acme.test"},
            {"key": "capture_channels", "valueStringArray": ["sms", "rcs", "whatsapp"]},
            {"key": "upload_interval_minutes", "valueInteger": 30},
            {"key": "capture_attachments", "valueBool": true},
            {"key": "policy_version", "valueString": "2026-11"}
        ]
    });
    // Intune iOS ("Enter XML data") and Jamf Pro: the bare dict pasted into the console.
    let bare_dict = VALID_PLIST
        .split_once("<plist version=\"1.0\">")
        .and_then(|(_, rest)| rest.rsplit_once("</plist>"))
        .map(|(dict, _)| dict.to_string())
        .unwrap();
    for (name, contents, summary) in [
        ("intune-android.json", intune_android.to_string(), "3 channels, 2 business lines"),
        ("intune-ios-dict.xml", bare_dict, "1 channel, 1 business line"),
        ("jamf.plist", VALID_PLIST.to_string(), "1 channel, 1 business line"),
        ("plain.json", valid_json().to_string(), "3 channels, 2 business lines"),
    ] {
        let out = check(&temp_file(name, &contents));
        assert_eq!(out.status.code(), Some(0), "{name}: {}{}", stdout(&out), stderr(&out));
        assert!(stdout(&out).contains(summary), "{name}: {}", stdout(&out));
    }
}

#[test]
fn committed_reference_is_up_to_date() {
    let out = verbatim(&["policy", "reference"]);
    assert_eq!(out.status.code(), Some(0));
    let generated = stdout(&out);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/policy-reference.md");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/policy-reference.md is out of date with the schema; regenerate it with:\n  \
         cargo run -p verbatim-cli -- policy reference > docs/policy-reference.md"
    );
    assert!(generated.contains("| `device_token` | one line of text | yes | (none) | yes |"), "{generated}");
}
