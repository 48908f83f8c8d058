//! Leak scan: the whole product runs as child processes with every log on (`RUST_LOG=trace`),
//! then every byte it left behind is searched for what must never be there:
//! - captured text (the synthetic workload's phrases, a marked `--body`), attachment bytes;
//! - the device token (its secret part) and the archive private key, and every epoch key
//!   (derived here with the private key from the encapsulations the archive holds), each raw,
//!   in hex and in base64;
//! - panic messages.
//!
//! Where: every log line and error (stdout, stderr) of every command (the demo, and each
//! command of the operator's path: keygen, receive, add-device, policy check, simulate,
//! inspect, upload, verify, export, recover, unenroll), every file on the device side (the
//! queue database, its WAL and shared memory, the lock), and every file of the archive's data
//! directory, before export. The export itself is the one place plaintext belongs: it is
//! checked to hold the phrases, which proves the scan would see them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use verbatim_core::archive::{EpochOpener, OpenedRecord};
use verbatim_core::chain::StreamId;
use verbatim_core::seal::conversation::EpochSecrets;
use verbatim_core::seal::{ArchiveSecretKey, Sealing, derive_epoch_key};

const BIN: &str = env!("CARGO_BIN_EXE_verbatim");

/// The synthetic workload's message phrases (`core/src/synth.rs`, `PHRASES`; private there).
/// The export check below proves they are what the demo captures.
const PHRASES: [&str; 6] = [
    "Can you confirm the fill on 10k XYZ at 41.20?",
    "Call me before the open about the rebalance.",
    "Sending the term sheet now, please review.",
    "Order acknowledged, working it.",
    "Let's move this to the recorded line.",
    "Price check on the 2031 bonds?",
];

/// Something that must not be found, in the forms it could be written in.
struct Needle {
    what: String,
    forms: Vec<Vec<u8>>,
}

fn text_needle(what: &str, text: &str) -> Needle {
    Needle { what: what.to_string(), forms: vec![text.as_bytes().to_vec()] }
}

fn key_needle(what: &str, raw: &[u8]) -> Needle {
    let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
    let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    Needle {
        what: what.to_string(),
        forms: vec![
            raw.to_vec(),
            hex.clone().into_bytes(),
            hex.to_uppercase().into_bytes(),
            b64.trim_end_matches('=').as_bytes().to_vec(),
            b64url.into_bytes(),
        ],
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Every (place, needle) found in `files` and `logs`.
fn scan(files: &[PathBuf], logs: &[(&str, &[u8])], needles: &[Needle]) -> Vec<String> {
    let mut found = Vec::new();
    let mut places: Vec<(String, Vec<u8>)> = files.iter().map(|f| (f.display().to_string(), std::fs::read(f).unwrap())).collect();
    places.extend(logs.iter().map(|(n, b)| (n.to_string(), b.to_vec())));
    for (place, bytes) in &places {
        for n in needles {
            for form in &n.forms {
                if let Some(at) = find(bytes, form) {
                    found.push(format!("{} found in {place} at byte {at}", n.what));
                    break;
                }
            }
        }
    }
    found
}

/// Runs the binary with `RUST_LOG=trace`; fails the test after `limit`.
fn run(args: &[&str], limit: Duration) -> (Vec<u8>, Vec<u8>) {
    let mut child = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "trace")
        .env("RUST_BACKTRACE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Drain both pipes on threads so a chatty trace log cannot block the child.
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut out_pipe, &mut v).unwrap();
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut err_pipe, &mut v).unwrap();
        v
    });
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let err = err_t.join().unwrap();
            let tail = String::from_utf8_lossy(&err[err.len().saturating_sub(3000)..]).to_string();
            panic!("`verbatim {}` did not finish within {limit:?}; stderr ends:\n{tail}", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (out, err) = (out_t.join().unwrap(), err_t.join().unwrap());
    assert!(status.success(), "`verbatim {}` failed ({status}):\n{}", args.join(" "), String::from_utf8_lossy(&err));
    (out, err)
}

/// The device token as the archive issued it: `vbt1.<token id>.<secret>`. The archive's token
/// file holds only the id; the full token is looked for wherever it might have been written.
fn token_id(archive_dir: &Path) -> String {
    let text = std::fs::read_to_string(archive_dir.join("tokens.jsonl")).unwrap();
    let line: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    line["token_id"].as_str().unwrap().to_string()
}

#[test]
fn the_demo_under_trace_logging_leaves_no_content_token_or_key_in_logs_or_stores() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let (out, err) =
        run(&["demo", "--dir", dir.to_str().unwrap(), "--events", "300", "--large-attachment-mb", "2"], Duration::from_secs(240));
    let stderr = String::from_utf8_lossy(&err).to_string();
    assert!(
        stderr.contains(" TRACE ") && stderr.contains(" DEBUG ") && stderr.contains(" INFO "),
        "the demo did not log at trace level: RUST_LOG must install a stderr subscriber (cli/src/demo.rs)"
    );
    assert!(String::from_utf8_lossy(&out).contains("OK: nothing lost"), "{}", String::from_utf8_lossy(&out));
    let (device_dir, archive_dir, export_dir) = (dir.join("device"), dir.join("archive"), dir.join("export"));

    // Positive control: the export (plaintext by design) holds the phrases and attachment bytes,
    // so a scan that finds none of them elsewhere is looking at the right things.
    let export_files = files_under(&export_dir);
    let export_text: Vec<u8> = export_files.iter().flat_map(|f| std::fs::read(f).unwrap()).collect();
    let exported_phrases = PHRASES.iter().filter(|p| find(&export_text, p.as_bytes()).is_some()).count();
    assert!(exported_phrases >= 3, "the export holds {exported_phrases} of the workload's phrases: the phrase list is stale");
    let attachment = std::fs::read(dir.join("phone-files").join("quarterly-deck.pdf")).unwrap();
    let samples: Vec<&[u8]> =
        [0usize, 65_500, 1_000_000, attachment.len() - 64].iter().map(|&at| &attachment[at..at + 48]).collect();
    assert!(samples.iter().all(|s| find(&export_text, s).is_some()), "the export holds the attachment");

    // What must not leak: content, the token, the archive private key, every epoch key.
    let mut needles: Vec<Needle> = PHRASES.iter().map(|p| text_needle(&format!("captured text {p:?}"), p)).collect();
    needles.extend(samples.iter().enumerate().map(|(i, s)| key_needle(&format!("attachment bytes (sample {i})"), s)));
    let key_b64 = std::fs::read_to_string(dir.join("archive-key").join("archive-private.key")).unwrap();
    let key = base64::engine::general_purpose::STANDARD.decode(key_b64.trim()).unwrap();
    needles.push(key_needle("the archive private key", &key));
    let secret = ArchiveSecretKey::from_bytes(&key).unwrap();
    let conn = verbatim_receiver::store::sqlite::read::open_read_only(&archive_dir).unwrap();
    let mut epoch_keys = 0;
    for (sid, stream) in verbatim_receiver::store::sqlite::read::streams(&conn).unwrap() {
        let mut openers = std::collections::HashMap::new();
        for e in verbatim_receiver::store::sqlite::read::epochs(&conn, sid).unwrap() {
            match Sealing::of(&e.encapsulation).unwrap().0 {
                Sealing::EpochKey => {
                    let k = derive_epoch_key(&secret, &e.encapsulation, &StreamId { ..stream.clone() }, e.epoch).unwrap();
                    needles.push(key_needle(&format!("the key of epoch {}", e.epoch), &k[..]));
                }
                Sealing::ConversationKeys => {
                    let s = EpochSecrets::open(&secret, &e.encapsulation, &stream, e.epoch).unwrap();
                    needles.push(key_needle(&format!("the key of epoch {}", e.epoch), &s.epoch_key[..]));
                    needles.push(key_needle(&format!("the reference key of epoch {}", e.epoch), &s.ref_key[..]));
                }
            }
            openers.insert(e.epoch, EpochOpener::with_archive_key(&secret, &e, &stream).unwrap());
            epoch_keys += 1;
        }
        // Every content key its key records announce.
        let mut prev = verbatim_core::chain::genesis(&stream);
        verbatim_receiver::store::sqlite::read::for_each_record(&conn, sid, |r| {
            let opener = openers.get_mut(&r.epoch).unwrap();
            if let Ok(OpenedRecord::KeyRecord { key_ref, .. }) = opener.open(&stream, r.seq, &prev, &r.ciphertext)
                && let EpochOpener::Conversations(c) = opener
            {
                let k = c.export_key(&key_ref).unwrap();
                needles.push(key_needle(&format!("a content key of epoch {}", r.epoch), &k[..]));
            }
            prev = r.link;
            Ok(true)
        })
        .unwrap();
    }
    drop(conn);
    assert!(epoch_keys >= 1, "the archive holds the demo's epochs");
    let id = token_id(&archive_dir);
    needles.push(text_needle("the device token (prefix and id)", &format!("vbt1.{id}")));

    let device_files = files_under(&device_dir);
    let archive_files = files_under(&archive_dir);
    assert!(device_files.iter().any(|f| f.ends_with("queue.sqlite3")), "{device_files:?}");
    assert!(archive_files.iter().any(|f| f.ends_with("archive.db")), "{archive_files:?}");

    // The token never reaches the device's store (the policy is kept without it): its prefix
    // and id, which precede its secret part, are looked for everywhere.
    let logs: [(&str, &[u8]); 2] = [("stdout", &out), ("stderr", &err)];
    let mut found = scan(&archive_files, &logs, &needles);
    found.extend(scan(&device_files, &[], &needles));
    assert!(found.is_empty(), "leaks:\n{}", found.join("\n"));
    assert!(!stderr.contains("panicked"), "a panic message in the logs");
    eprintln!(
        "leak scan: {} log bytes, {} device files, {} archive files, {} epoch keys",
        out.len() + err.len(),
        device_files.len(),
        archive_files.len(),
        epoch_keys,
    );
}

/// A policy file with a marked token, for `simulate`.
fn marked_policy(dir: &Path, token: &str) -> PathBuf {
    let (_, public) = verbatim_core::seal::generate_archive_keypair();
    let tree = verbatim_core::synth::sample_policy("https://archive.acme-securities.test", &public, token, &[]);
    let path = dir.join("policy.json");
    std::fs::write(&path, serde_json::to_vec(&tree).unwrap()).unwrap();
    path
}

const BODY_MARKER: &str = "LEAKSCAN-body-4f1c9e2a";
const TOKEN_SECRET: &str = "LEAKSCAN-token-secret-0123456789abcdefghijk";

#[test]
fn a_simulated_device_keeps_no_plaintext_on_disk_and_prints_none() {
    let tmp = tempfile::tempdir().unwrap();
    let token = format!("vbt1.00112233445566778899aabbccddeeff.{TOKEN_SECRET}");
    let policy = marked_policy(tmp.path(), &token);
    let state = tmp.path().join("device");
    let (out, err) = run(
        &[
            "simulate",
            "--state",
            state.to_str().unwrap(),
            "--policy",
            policy.to_str().unwrap(),
            "--events",
            "200",
            "--seed",
            "7",
            "--body",
            BODY_MARKER,
        ],
        Duration::from_secs(120),
    );
    assert!(String::from_utf8_lossy(&out).lines().filter(|l| l.starts_with("acked ")).count() > 100);
    let files = files_under(&state);
    let needles = vec![
        text_needle("the marked message body", BODY_MARKER),
        text_needle("a workload phrase", PHRASES[0]),
        text_needle("a workload phrase", PHRASES[3]),
    ];
    let logs: [(&str, &[u8]); 2] = [("stdout", &out), ("stderr", &err)];
    let found = scan(&files, &logs, &needles);
    assert!(found.is_empty(), "leaks:\n{}", found.join("\n"));
    // The token: never printed. (On disk: see the known bug below.)
    let found = scan(&[], &logs, &[text_needle("the device token", TOKEN_SECRET)]);
    assert!(found.is_empty(), "leaks:\n{}", found.join("\n"));
    // `inspect` shows the queue's state, never content or credentials.
    let (out, err) = run(&["inspect", "--state", state.to_str().unwrap()], Duration::from_secs(30));
    let found = scan(
        &[],
        &[("inspect stdout", &out), ("inspect stderr", &err)],
        &[text_needle("the body", BODY_MARKER), text_needle("the token", TOKEN_SECRET)],
    );
    assert!(found.is_empty(), "leaks:\n{}", found.join("\n"));
}

#[test]
fn the_device_token_is_never_stored_on_the_device() {
    let tmp = tempfile::tempdir().unwrap();
    let token = format!("vbt1.00112233445566778899aabbccddeeff.{TOKEN_SECRET}");
    let policy = marked_policy(tmp.path(), &token);
    let state = tmp.path().join("device");
    run(
        &["simulate", "--state", state.to_str().unwrap(), "--policy", policy.to_str().unwrap(), "--events", "5", "--seed", "7"],
        Duration::from_secs(60),
    );
    let files = files_under(&state);
    assert!(files.iter().any(|f| f.ends_with("queue.sqlite3")), "{files:?}");
    // Positive control: the policy's other values are kept, so the scan reads the right bytes.
    let kept = scan(&files, &[], &[text_needle("the archive URL", "archive.acme-securities.test")]);
    assert!(!kept.is_empty(), "the stored policy holds the archive URL");
    let found = scan(&files, &[], &[text_needle("the device token's secret", TOKEN_SECRET)]);
    assert!(found.is_empty(), "{}", found.join("\n"));
}

/// Every command of the operator's path, each at trace level (RUST_LOG for some, the global
/// `--log-level` flag for others: the same control everywhere), prints no captured content, no
/// token and no key in its output or logs.
#[test]
fn every_command_under_trace_logging_prints_no_content_token_or_key() {
    use std::io::BufRead as _;
    let tmp = tempfile::tempdir().unwrap();
    let p = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();
    let mut logs: Vec<(String, Vec<u8>, Vec<u8>)> = Vec::new();
    fn record(logs: &mut Vec<(String, Vec<u8>, Vec<u8>)>, name: &str, (out, err): (Vec<u8>, Vec<u8>)) {
        logs.push((name.to_string(), out, err));
    }
    let limit = Duration::from_secs(120);

    record(&mut logs, "keygen", run(&["keygen", "--out", &p("keys")], limit));
    std::fs::create_dir_all(p("archive")).unwrap();
    let mut receiver = Command::new(BIN)
        .args(["receive", "--listen", "127.0.0.1:0", "--data", &p("archive"), "--tokens", &p("archive/tokens.jsonl")])
        .args(["--archive-key", &p("keys/archive-public.key")])
        .arg("--self-signed")
        .args(["--log-level", "trace"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut receiver_err = receiver.stderr.take().unwrap();
    let receiver_log = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut receiver_err, &mut v);
        v
    });
    let mut lines = std::io::BufReader::new(receiver.stdout.take().unwrap()).lines();
    let url = lines.next().unwrap().unwrap().strip_prefix("listening on ").unwrap().to_string();
    let ca_line = lines.next().unwrap().unwrap();
    let ca_path = ca_line.strip_prefix("CA certificate: ").unwrap().split(" (").next().unwrap().to_string();
    let (token, err) = run(
        &["receive", "add-device", "--tokens", &p("archive/tokens.jsonl"), "--tenant", "acme-securities", "--device", "d1"],
        limit,
    );
    logs.push(("add-device".into(), Vec::new(), err));
    let token = String::from_utf8(token).unwrap().trim().to_string();
    let secret_part = token.rsplit('.').next().unwrap().to_string();

    let public = std::fs::read_to_string(p("keys/archive-public.key")).unwrap();
    let public: [u8; 32] = base64::engine::general_purpose::STANDARD.decode(public.trim()).unwrap().try_into().unwrap();
    let ca = std::fs::read_to_string(&ca_path).unwrap();
    let s = |v: &str| verbatim_core::Value::String(v.to_string());
    let tree = verbatim_core::synth::sample_policy(
        &url,
        &public,
        &token,
        &[("tenant_id", s("acme-securities")), ("device_id", s("d1")), ("archive_ca_pem", s(&ca))],
    );
    std::fs::write(p("policy.json"), serde_json::to_vec(&tree).unwrap()).unwrap();

    let state = p("device");
    record(&mut logs, "policy check", run(&["policy", "check", &p("policy.json"), "--log-level", "trace"], limit));
    record(
        &mut logs,
        "simulate",
        run(&["simulate", "--state", &state, "--policy", &p("policy.json"), "--events", "150", "--body", BODY_MARKER], limit),
    );
    record(&mut logs, "inspect", run(&["inspect", "--state", &state, "--log-level", "trace"], limit));
    record(&mut logs, "upload", run(&["upload", "--state", &state, "--policy", &p("policy.json")], limit));
    record(&mut logs, "verify", run(&["verify", "--data", &p("archive"), "--log-level", "trace"], limit));
    record(
        &mut logs,
        "export",
        run(&["export", "--data", &p("archive"), "--key", &p("keys/archive-private.key"), "--out", &p("export")], limit),
    );
    record(&mut logs, "recover --check", run(&["recover", "--state", &state, "--check"], limit));
    record(
        &mut logs,
        "unenroll",
        run(&["unenroll", "--state", &state, "--policy", &p("policy.json"), "--log-level", "trace"], limit),
    );
    let _ = receiver.kill();
    let _ = receiver.wait();
    logs.push(("receive".into(), Vec::new(), receiver_log.join().unwrap()));

    // Positive control: the export holds the marked body, so the needles are the right ones.
    let export: Vec<u8> = files_under(Path::new(&p("export"))).iter().flat_map(|f| std::fs::read(f).unwrap()).collect();
    assert!(find(&export, BODY_MARKER.as_bytes()).is_some(), "the export holds the marked body");

    let key_b64 = std::fs::read_to_string(p("keys/archive-private.key")).unwrap();
    let key = base64::engine::general_purpose::STANDARD.decode(key_b64.trim()).unwrap();
    let mut needles = vec![text_needle("the marked message body", BODY_MARKER), text_needle("the token's secret", &secret_part)];
    needles.extend(PHRASES.iter().map(|ph| text_needle(&format!("captured text {ph:?}"), ph)));
    needles.push(key_needle("the archive private key", &key));
    let mut found = Vec::new();
    let mut traced = Vec::new();
    for (name, out, err) in &logs {
        // keygen prints the public key and add-device the token, on stdout, by design.
        let stdout_needles: Vec<&Needle> =
            needles.iter().filter(|n| !(name == "add-device" && n.what.contains("token"))).collect();
        let owned: Vec<Needle> = stdout_needles.iter().map(|n| Needle { what: n.what.clone(), forms: n.forms.clone() }).collect();
        found.extend(scan(&[], &[(&format!("{name} stdout"), out)], &owned));
        found.extend(scan(&[], &[(&format!("{name} stderr"), err)], &needles));
        let text = String::from_utf8_lossy(err);
        assert!(!text.contains("panicked"), "{name} panicked:\n{text}");
        if text.contains(" TRACE ") || text.contains(" DEBUG ") || text.contains(" INFO ") {
            traced.push(name.clone());
        }
    }
    assert!(found.is_empty(), "leaks:\n{}", found.join("\n"));
    // The logger is installed for the commands that log: at least the receiver's requests and
    // the device's upload show up.
    assert!(traced.iter().any(|n| n == "receive") && traced.iter().any(|n| n == "upload"), "logged: {traced:?}");
    // The core's own decisions are in the trace (sizes, sequence numbers, outcomes): the scan
    // above read them too.
    let all_stderr: String = logs.iter().map(|(_, _, err)| String::from_utf8_lossy(err).into_owned()).collect();
    for event in ["policy: applied", "capture: durable", "queue: group committed", "queue: epoch opened", "upload: session ended"]
    {
        assert!(all_stderr.contains(event), "the core logs {event:?} at trace");
    }
}
