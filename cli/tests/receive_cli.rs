//! `verbatim receive` takes the archive keys it accepts: without one it does not start, a file
//! that is no key is named, and a running receiver prints the key ids it accepts.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_verbatim");

/// The receiver child; killed (by its own id) when the test ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn receive(dir: &std::path::Path, extra: &[&std::ffi::OsStr]) -> Command {
    let mut c = Command::new(BIN);
    c.args(["receive", "--listen", "127.0.0.1:0", "--self-signed", "--data"])
        .arg(dir.join("data"))
        .arg("--tokens")
        .arg(dir.join("tokens.jsonl"))
        .args(extra);
    c
}

#[test]
fn receive_needs_an_archive_key_and_names_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = receive(dir.path(), &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--archive-key"), "{err}");
    assert!(!dir.path().join("data").exists(), "nothing created without a key");

    let bogus = dir.path().join("not-a-key.txt");
    std::fs::write(&bogus, "hello\n").unwrap();
    let out = receive(dir.path(), &["--archive-key".as_ref(), bogus.as_os_str()]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not-a-key.txt") && err.contains("not a public key file"), "{err}");
}

#[test]
fn receive_accepts_several_keys_and_prints_their_ids() {
    let dir = tempfile::tempdir().unwrap();
    let a = verbatim_receiver::keygen(&dir.path().join("key-a")).unwrap();
    let b = verbatim_receiver::keygen(&dir.path().join("key-b")).unwrap();
    let mut child = receive(
        dir.path(),
        &["--archive-key".as_ref(), a.public_path.as_os_str(), "--archive-key".as_ref(), b.private_path.as_os_str()],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let _running = Running(child);
    let line = BufReader::new(stdout)
        .lines()
        .map(Result::unwrap)
        .find(|l| l.starts_with("accepting archive key id(s): "))
        .expect("the receiver names the keys it accepts");
    let mut want = [a.key_id.as_str(), b.key_id.as_str()];
    want.sort();
    assert_eq!(line, format!("accepting archive key id(s): {}", want.join(", ")));
    // The private key works, with a warning to keep it off the receiving host.
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    assert!(first.starts_with("warning: an archive private key was given"), "{first}");
}
