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
