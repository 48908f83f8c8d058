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
        "archive_url": "https://archive.acme-capital.test/v1",
        "archive_public_key": ARCHIVE_KEY,
        "archive_key_id": "ak-7",
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
    <string>https://archive.acme-capital.test/v1</string>
    <key>archive_public_key</key>
    <string>HZZbBeJO45qQYQIpVz+fRAL7YzkKt7LJwK6Sfj1r54Q=</string>
    <key>archive_key_id</key>
    <string>ak-7</string>
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
            "valid: policy_version 2026-11, tenant acme-capital, archive https://archive.acme-capital.test/v1, \
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
    json["archive_url"] = "http://archive.acme-capital.test/v1".into();
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
    assert!(text.lines().any(|l| l == "device_token: must be a string, got list"), "{text}");
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
        ("real.plist", "<plist version=\"1.0\"><dict><key>max_batch_kb</key><real>1.5</real></dict></plist>".to_string()),
    ] {
        let path = temp_file(name, &contents);
        let out = check(&path);
        assert_eq!(out.status.code(), Some(2), "{name}");
        assert!(stderr(&out).contains(name), "{name}: {}", stderr(&out));
        assert_eq!(stdout(&out), "", "{name}");
    }
}

#[test]
fn template_passes_check() {
    let out = verbatim(&["policy", "template"]);
    assert_eq!(out.status.code(), Some(0));
    let template = stdout(&out);
    assert!(template.contains("<key>device_token</key>"), "{template}");
    assert!(template.contains("REPLACE-WITH-DEVICE-TOKEN"), "{template}");
    // Every key appears, set or described.
    for key in ["archive_url", "archive_ca_pem", "tls_pins", "disclaimer_text", "log_level", "policy_version"] {
        assert!(template.contains(key), "{key} missing from template");
    }

    let path = temp_file("template.plist", &template);
    let out = check(&path);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(stdout(&out).lines().count(), 1);
    // The only warnings are the placeholders an admin must replace.
    let warnings = stderr(&out);
    assert!(warnings.lines().all(|l| l.starts_with("warning: ") && l.contains("template's example value")), "{warnings}");
    assert!(warnings.contains("warning: device_token:"), "{warnings}");
    assert!(warnings.contains("warning: archive_public_key:"), "{warnings}");
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
    assert!(generated.contains("| `device_token` | string | yes | (none) | yes |"), "{generated}");
}
