//! The command line behaves like a good Unix tool: every command's help says what it requires,
//! its exit codes and an example; the README documents the exit codes of every command; no
//! command panics when its stdout is a closed pipe; every command takes the same log control.

use std::process::{Command, Output, Stdio};

/// Every command and subcommand, as typed.
const COMMANDS: &[&[&str]] = &[
    &["demo"],
    &["policy", "check"],
    &["policy", "template"],
    &["policy", "reference"],
    &["policy", "export-artifacts"],
    &["simulate"],
    &["telephony", "replay"],
    &["inspect"],
    &["upload"],
    &["unenroll"],
    &["keygen"],
    &["receive"],
    &["receive", "add-device"],
    &["verify"],
    &["export"],
    &["copy-archive"],
    &["legal-hold", "put"],
    &["legal-hold", "release"],
    &["bench"],
    &["crash-test"],
    &["recover"],
    &["relay", "imessage"],
    &["connect", "whatsapp"],
    &["connect", "wecom"],
    &["vault", "init"],
    &["vault", "ingest"],
    &["vault", "status"],
    &["vault", "audit"],
    &["erase"],
    &["hold", "add"],
    &["hold", "release"],
    &["hold", "list"],
    &["retention", "apply"],
    &["keys", "rotate"],
    &["keys", "check"],
    &["keys", "retire"],
];

fn verbatim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_verbatim")).args(args).output().unwrap()
}

#[test]
fn every_commands_help_says_what_is_required_the_exit_codes_and_an_example() {
    for command in COMMANDS {
        let mut args = command.to_vec();
        args.push("--help");
        let out = verbatim(&args);
        assert!(out.status.success(), "{args:?}");
        let help = String::from_utf8_lossy(&out.stdout);
        for section in ["Required: ", "Exit codes: 0", "Example: verbatim "] {
            assert!(help.contains(section), "{command:?} --help lacks {section:?}:\n{help}");
        }
        assert!(help.contains("--log-level <LEVEL>"), "{command:?} --help lacks the global --log-level");
    }
}

#[test]
fn receive_help_marks_its_required_flags() {
    let help = String::from_utf8_lossy(&verbatim(&["receive", "--help"]).stdout).into_owned();
    for flag in ["--listen", "--data", "--tokens"] {
        let line = help.lines().skip_while(|l| !l.trim_start().starts_with(flag)).nth(1).unwrap_or_default();
        assert!(line.trim_start().starts_with("Required"), "{flag}: {line}");
    }
}

#[test]
fn the_readme_documents_every_commands_exit_codes() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let section = readme.split("## Exit codes").nth(1).expect("README has an Exit codes section");
    let section = section.split("\n## ").next().unwrap();
    for command in COMMANDS {
        let name = format!("`verbatim {}`", command.join(" "));
        let row = section.lines().find(|l| l.starts_with(&format!("| {name}"))).unwrap_or_else(|| panic!("no row for {name}"));
        assert!(row.contains("0 "), "{row}");
    }
}

/// stdout is a pipe whose reader is already gone: every write fails with EPIPE.
fn with_closed_stdout(args: &[&str], dir: &std::path::Path) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    Command::new(env!("CARGO_BIN_EXE_verbatim"))
        .args(args)
        .current_dir(dir)
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

#[test]
fn no_command_panics_on_a_closed_stdout() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // A device store to inspect (simulate needs only a policy, no archive).
    let key = [5u8; 32];
    let tree = verbatim_core::synth::sample_policy("https://127.0.0.1:9", &key, "tok-pipe", &[]);
    std::fs::write(dir.join("policy.json"), serde_json::to_string(&tree).unwrap()).unwrap();
    for args in [
        &["simulate", "--state", "device", "--policy", "policy.json", "--events", "20"][..],
        &["inspect", "--state", "device"],
        &["policy", "template"],
        &["policy", "reference"],
        &["policy", "check", "policy.json"],
        &["keygen", "--out", "keys"],
        &["verify", "--data", "no-archive"],
        &["--help"],
        &["inspect", "--help"],
    ] {
        let out = with_closed_stdout(args, dir);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?} panicked:\n{stderr}");
        assert_ne!(out.status.code(), Some(101), "{args:?}: {stderr}");
    }
    // The work was still done: the simulated device captured, the keys were written.
    assert!(dir.join("device").is_dir() && dir.join("keys/archive-public.key").is_file());
}

#[test]
fn every_command_takes_log_level_and_rust_log() {
    let tmp = tempfile::tempdir().unwrap();
    let policy = tmp.path().join("p.json");
    std::fs::write(&policy, "{}").unwrap();
    let p = policy.to_str().unwrap();
    // A bad level is refused by the flag parser, on any command.
    let out = verbatim(&["policy", "check", p, "--log-level", "loud"]);
    assert_eq!(out.status.code(), Some(2));
    // RUST_LOG that cannot be read is said, not silently ignored.
    let out = Command::new(env!("CARGO_BIN_EXE_verbatim")).args(["policy", "check", p]).env("RUST_LOG", "loud").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning: RUST_LOG: \"loud\" is not a level"));
}
