//! A newcomer's first hour, kept honest: the whole path a new user follows from a clone and the
//! README, run from a temporary copy of the repository with no sibling folders.
//!
//! template → edit the required keys → `policy check` → `keygen` → `receive --self-signed` →
//! `add-device` → `simulate` (with the policy's own business lines) → `upload` (archive_url in
//! the samples' base form) → `verify` → `export`; events are captured, archived and exported.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// The firm's own values, as a newcomer would type them over the template's examples.
const TENANT: &str = "acme-capital";
const DEVICE: &str = "iphone-0042";
const LINES: [&str; 2] = ["+44 20 7946 0100", "sam.lee@acme-capital.test"];

/// Copies the repository's files (not its build output, tools or git data) to `to`.
fn copy_repository(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if matches!(name.as_ref(), "target" | ".git" | ".tools") {
            continue;
        }
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
            copy_repository(&entry.path(), &dest);
        } else if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

struct Newcomer {
    repo: PathBuf,
}

impl Newcomer {
    fn run(&self, args: &[&str]) -> Output {
        let out = Command::new(env!("CARGO_BIN_EXE_verbatim")).args(args).current_dir(&self.repo).output().unwrap();
        let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!all.contains("panicked"), "{args:?} panicked:\n{all}");
        out
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?} exited {:?}:\n{}{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Stops the receiver when the test ends, however it ends.
struct Receiver(Child);

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Replaces `<string>example</string>` (the template's value) with the newcomer's.
fn set(template: &mut String, example: &str, value: &str) {
    let from = format!("<string>{example}</string>");
    assert!(template.contains(&from), "the template has no {from}");
    *template = template.replacen(&from, &format!("<string>{value}</string>"), 1);
}

fn field<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines().find_map(|l| l.strip_prefix(prefix)).unwrap_or_else(|| panic!("no {prefix:?} in:\n{text}")).trim()
}

#[test]
fn the_newcomer_path_from_a_bare_copy_captures_archives_and_exports() {
    let tmp = tempfile::tempdir().unwrap();
    // No sibling folders: the copy sits alone in its own directory.
    let repo = tmp.path().join("alone").join("verbatim");
    std::fs::create_dir_all(&repo).unwrap();
    copy_repository(Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap(), &repo);
    assert!(repo.join("README.md").is_file() && repo.join("supply-chain/advisory-db/SNAPSHOT").is_file());
    assert_eq!(std::fs::read_dir(repo.parent().unwrap()).unwrap().count(), 1);
    let me = Newcomer { repo: repo.clone() };
    // Nothing in the project reaches for a folder beside the clone (the advisory snapshot, the
    // design notes): everything the tests need is inside. The needle is built, not written, so
    // that this file does not match itself.
    let sibling = format!("..{}{}", '/', "shared");
    let mut stack = vec![repo.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(text) = std::fs::read_to_string(&path) {
                assert!(!text.contains(&sibling), "{} refers to a folder beside the clone", path.display());
            }
        }
    }

    // The template, and the archive's key pair.
    let mut policy = me.ok(&["policy", "template"]);
    let keys = me.ok(&["keygen", "--out", "archive-keys"]);
    let public_key = field(&keys, "archive_public_key:").to_string();

    // The receiver, on a free port of 127.0.0.1, with its own CA.
    std::fs::create_dir_all(repo.join("archive")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_verbatim"))
        .args(["receive", "--listen", "127.0.0.1:0", "--data", "archive", "--tokens", "archive/tokens.jsonl", "--self-signed"])
        .args(["--archive-key", "archive-keys/archive-public.key"])
        .current_dir(&repo)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let _receiver = Receiver(child);
    let listening = lines.next().expect("the receiver says where it listens").unwrap();
    let url = listening.strip_prefix("listening on ").unwrap_or_else(|| panic!("{listening}")).trim_end_matches('/').to_string();
    let ca_line = lines.next().expect("the receiver names its CA").unwrap();
    let ca_path = field(&ca_line, "CA certificate:").split(" (").next().unwrap().to_string();
    let ca_pem = std::fs::read_to_string(repo.join(&ca_path).canonicalize().unwrap_or_else(|_| PathBuf::from(&ca_path))).unwrap();

    let token = me.ok(&["receive", "add-device", "--tokens", "archive/tokens.jsonl", "--tenant", TENANT, "--device", DEVICE]);
    let token = token.trim();

    // Edit the required keys, as the template's comments say; archive_url in the samples' form
    // (the base address: the agent adds /v1/batches).
    set(&mut policy, "https://archive.example.com", &url);
    set(&mut policy, "fwFYPPMFK03On3M8gpe3y+a91eU9NU4fVdlp+cLj2R0=", &public_key);
    set(&mut policy, "acme", TENANT);
    set(&mut policy, "REPLACE-WITH-DEVICE-TOKEN", token);
    set(&mut policy, "+1 212 555 0100", LINES[0]);
    set(&mut policy, "jane.doe@acme.example", LINES[1]);
    set(&mut policy, "2026-01", "2026-02");
    let extra = format!(
        "    <key>device_id</key>\n    <string>{DEVICE}</string>\n    <key>archive_ca_pem</key>\n    <string>{ca_pem}</string>\n</dict>"
    );
    policy = policy.replacen("</dict>", &extra, 1);
    std::fs::write(repo.join("policy.plist"), &policy).unwrap();

    let checked = me.ok(&["policy", "check", "policy.plist"]);
    assert!(checked.starts_with("valid: policy_version 2026-02, tenant acme-capital"), "{checked}");
    assert!(checked.contains("2 business lines"), "{checked}");

    // The simulated device uses the policy's lines: most events are captured.
    let out = me.run(&["simulate", "--state", "device", "--policy", "policy.plist", "--events", "200", "--seed", "7"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let acked: Vec<String> =
        String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.strip_prefix("acked ").map(str::to_string)).collect();
    assert!(acked.len() > 150, "only {} of 200 captured", acked.len());
    let summary = String::from_utf8_lossy(&out.stderr);
    let last = summary.lines().last().unwrap_or_default();
    assert!(last.starts_with(&format!("simulate: {} captured, ", acked.len())), "{summary}");
    assert!(last.contains("0 failed") && last.contains("from the policy's business_lines"), "{last}");

    me.ok(&["upload", "--state", "device", "--policy", "policy.plist"]);
    let verified = me.ok(&["verify", "--data", "archive"]);
    assert!(!verified.is_empty());
    me.ok(&["export", "--data", "archive", "--key", "archive-keys/archive-private.key", "--out", "export"]);

    let exported = verbatim_receiver::source_ids(&repo.join("export")).unwrap();
    for id in &acked {
        assert_eq!(exported.get(id), Some(&1), "{id} not exported exactly once");
    }
}
