//! Test support shared by the CLI's integration tests: driving the `verbatim` binary.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_verbatim");

/// Runs `verbatim ARGS` until it has printed `kill_after` lines starting with `prefix` (each
/// printed once what it names is durable), then kills it with SIGKILL. Returns what followed
/// the prefix on those lines. Reading stops there, so a command with more to print blocks on
/// its full pipe: the kill lands mid-run whatever the timing.
pub fn run_and_kill<S: AsRef<OsStr>>(args: &[S], prefix: &str, kill_after: usize) -> Vec<String> {
    let mut command = Command::new(BIN);
    command.args(args);
    run_and_kill_command(command, prefix, kill_after)
}

/// [`run_and_kill`] for a command already set up (its arguments, its environment).
pub fn run_and_kill_command(mut command: Command, prefix: &str, kill_after: usize) -> Vec<String> {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut printed = Vec::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while printed.len() < kill_after {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(rest) = line.strip_prefix(prefix) {
                    printed.push(rest.to_string());
                }
            }
            _ => break,
        }
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    printed
}

/// Every file under `dir`, recursively.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}

/// A reference receiver on 127.0.0.1 with an archive key of its own: where the end-to-end tests
/// of capture sources upload.
pub struct TestArchive {
    pub data: PathBuf,
    pub receiver: verbatim_receiver::RunningReceiver,
    pub public: [u8; 32],
    pub secret: verbatim_core::seal::ArchiveSecretKey,
}

impl TestArchive {
    pub async fn start(dir: &Path) -> TestArchive {
        use base64::Engine as _;
        let key = verbatim_receiver::keygen(&dir.join("key")).unwrap();
        let secret = verbatim_receiver::load_secret(&key.private_path).unwrap();
        let public: [u8; 32] = base64::engine::general_purpose::STANDARD.decode(&key.public_b64).unwrap().try_into().unwrap();
        let data = dir.join("data");
        let accepted = verbatim_receiver::AcceptedKeys::from_public_keys([&public]);
        let config = verbatim_receiver::ReceiverConfig::local_self_signed(data.clone(), accepted);
        let receiver = verbatim_receiver::Receiver::start(config).await.unwrap();
        TestArchive { data, receiver, public, secret }
    }

    /// Stops the receiver and exports everything: every JSON line (each with `_file`, its
    /// stream's file) and the export's directory.
    pub async fn export(self, dir: &Path) -> (Vec<serde_json::Value>, PathBuf) {
        self.receiver.shutdown().await;
        let out_dir = dir.join("export");
        let summary = verbatim_receiver::export(&self.data, &self.secret, &out_dir).unwrap();
        assert!(summary.ok(), "{}", summary.to_text());
        (export_lines(&out_dir), out_dir)
    }
}

/// Every JSON line of every stream of an export, each with `_file`: its stream's file.
pub fn export_lines(out_dir: &Path) -> Vec<serde_json::Value> {
    let mut lines = Vec::new();
    for entry in walk(out_dir) {
        if entry.extension().is_some_and(|e| e == "jsonl") {
            for l in std::fs::read_to_string(&entry).unwrap().lines() {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["_file"] = serde_json::json!(entry.to_str().unwrap());
                lines.push(v);
            }
        }
    }
    lines
}

/// The source ids of the exported lines of `kind` (an omitted attachment's from its header),
/// sorted.
pub fn source_ids(lines: &[serde_json::Value], kind: &str) -> Vec<String> {
    let mut ids: Vec<String> = lines
        .iter()
        .filter(|l| l["type"] == kind)
        .map(|l| l["meta"]["source_id"].as_str().or(l["header"]["meta"]["source_id"].as_str()).unwrap().to_string())
        .collect();
    ids.sort();
    ids
}
