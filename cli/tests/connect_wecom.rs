//! `verbatim connect wecom` end to end against a stand-in of Tencent's Finance SDK: a shared
//! library built here from `wecom_sdk_standin.c` (the SDK's documented C functions over records
//! this test writes), with random keys RSA-wrapped (PKCS#1 v1.5) to real key pairs of
//! `publickey_ver` 1 and 2. Paging (1,000 a call), key rotation, recall, media by `sdkfileid`,
//! group and external chats, a missing key version (a could-not-record window, never a skip),
//! and a crash between pull and commit; then upload to the real receiver and export.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine;
use rsa::pkcs1::EncodeRsaPrivateKey;
use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};
use verbatim_core::Value;
use verbatim_core::synth::sample_policy;

mod support;

use support::{BIN, TestArchive as Archive, source_ids, walk};

const ZHANG: &str = "zhangsan";
const LI: &str = "lisi";
const PERSONAL: &str = "wangwu";
const EXTERNAL: &str = "wmEXT0001";
const CORP: &str = "ww0123456789abcdef";
const TENANT: &str = "acme-wecom";
const DEVICE: &str = "wecom-gw";

fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64 - 3_600_000
}

/// The archive as the SDK stand-in serves it: records, keys, media.
struct Wecom {
    dir: PathBuf,
    sdk: PathBuf,
    keys: BTreeMap<u32, rsa::PrivateKey>,
    /// (seq, msgid, version, message JSON)
    records: Vec<(u64, String, u32, Json)>,
}

impl Wecom {
    fn new(dir: &Path) -> Wecom {
        let data = dir.join("wecom");
        std::fs::create_dir_all(data.join("media")).unwrap();
        std::fs::write(data.join("corp_id"), CORP).unwrap();
        std::fs::write(data.join("secret"), secret()).unwrap();
        // Built for each test from the C source, with the machine's C compiler.
        let sdk = dir.join("libWeWorkFinanceSdk_C.so");
        let source = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/wecom_sdk_standin.c");
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let out = Command::new(&cc).args(["-shared", "-fPIC", "-O1", "-o"]).arg(&sdk).arg(source).output().unwrap();
        assert!(out.status.success(), "{cc}: {}", String::from_utf8_lossy(&out.stderr));
        let keys = [1, 2].into_iter().map(|v| (v, <rsa::PrivateKey as rsa::Generate>::generate())).collect();
        Wecom { dir: data, sdk, keys, records: Vec::new() }
    }

    fn add(&mut self, version: u32, mut message: Json) -> String {
        let seq = self.records.len() as u64 + 1;
        let msgid = format!("msg{seq:05}_{version}");
        message["msgid"] = json!(msgid);
        if message.get("msgtime").is_none() {
            message["msgtime"] = json!(now_ms() + seq as i64);
        }
        self.records.push((seq, msgid.clone(), version, message));
        msgid
    }

    fn text(&mut self, version: u32, from: &str, to: &[&str], words: &str) -> String {
        self.add(
            version,
            json!({"action": "send", "from": from, "tolist": to, "roomid": "", "msgtype": "text", "text": {"content": words}}),
        )
    }

    fn media(&mut self, kind: &str, fileid: &str, bytes: &[u8], extra: Json) -> String {
        std::fs::write(self.dir.join("media").join(fileid), bytes).unwrap();
        let mut object = json!({"sdkfileid": fileid, "md5sum": "0", "filesize": bytes.len()});
        object.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let mut message = json!({"action": "send", "from": EXTERNAL, "tolist": [ZHANG], "roomid": "", "msgtype": kind});
        message[kind] = object;
        self.add(1, message)
    }

    /// Writes chatdata.tsv: each record's random key wrapped to its version's public key (the
    /// key of a version not in `keys` is a throwaway one: its private key is nowhere).
    fn publish(&self) {
        let mut tsv = String::new();
        for (seq, msgid, version, message) in &self.records {
            let mut random = [0u8; 16];
            getrandom::fill(&mut random).unwrap();
            let random = hex::encode(random);
            let public = match self.keys.get(version) {
                Some(k) => k.to_public_key(),
                None => <rsa::PrivateKey as rsa::Generate>::generate().to_public_key(),
            };
            let wrapped = base64::engine::general_purpose::STANDARD.encode(public.pkcs1v15_encrypt(random.as_bytes()).unwrap());
            let plain = [b"WCM1".to_vec(), message.to_string().into_bytes()].concat();
            let sealed: Vec<u8> = plain.iter().zip(random.as_bytes().iter().cycle()).map(|(p, k)| p ^ k).collect();
            tsv.push_str(&format!("{seq}\t{msgid}\t{version}\t{wrapped}\t{}\n", hex::encode(sealed)));
        }
        std::fs::write(self.dir.join("chatdata.tsv"), tsv).unwrap();
    }

    /// Writes the private keys of `versions` where the connector reads them.
    fn give_keys(&self, keys_dir: &Path, versions: &[u32]) {
        std::fs::create_dir_all(keys_dir).unwrap();
        for v in versions {
            let pem = self.keys[v].to_pkcs1_pem(rsa::pkcs8::LineEnding::LF).unwrap();
            write_private(&keys_dir.join(format!("{v}.pem")), &pem);
        }
    }

    /// `GetChatData` calls the connector made: (seq, limit).
    fn calls(&self) -> Vec<(u64, u32)> {
        std::fs::read_to_string(self.dir.join("calls.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let mut p = l.split(' ');
                (p.next().unwrap().parse().unwrap(), p.next().unwrap().parse().unwrap())
            })
            .collect()
    }
}

fn secret() -> String {
    format!("archive-secret-{}", std::process::id())
}

fn connect_args(dir: &Path, wecom: &Wecom, policy: &Path) -> Vec<String> {
    write_private(&dir.join("wecom-secret"), &secret());
    let p = |x: &Path| x.to_str().unwrap().to_string();
    vec![
        "connect".into(),
        "wecom".into(),
        "--state".into(),
        p(&dir.join("state")),
        "--policy".into(),
        p(policy),
        "--sdk".into(),
        p(&wecom.sdk),
        "--corp-id".into(),
        CORP.into(),
        "--secret-file".into(),
        p(&dir.join("wecom-secret")),
        "--private-keys".into(),
        p(&dir.join("keys")),
        "--device-tokens".into(),
        p(&dir.join("tokens")),
        "--once".into(),
    ]
}

fn run(args: &[String], wecom: &Wecom) -> Output {
    Command::new(BIN).args(args).env("WECOM_STANDIN_DIR", &wecom.dir).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn captured(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stdout).lines().filter_map(|l| l.strip_prefix("captured ")).map(str::to_string).collect()
}

/// This file's policies, on the shared test archive.
impl Archive {
    /// The connector's policy (archived users `lines`), a device token per user in `dir/tokens`.
    fn policy_file(&self, dir: &Path, lines: &[&str]) -> PathBuf {
        std::fs::create_dir_all(dir.join("tokens")).unwrap();
        for line in lines {
            let token =
                verbatim_receiver::add_device(&self.data.join("tokens.jsonl"), TENANT, &format!("{DEVICE}-{line}")).unwrap();
            write_private(&dir.join("tokens").join(line), token.expose());
        }
        let s = |v: &str| Value::String(v.to_string());
        let policy = sample_policy(
            &self.receiver.url(),
            &self.public,
            "token-of-no-device",
            &[
                ("tenant_id", s(TENANT)),
                ("device_id", s(DEVICE)),
                ("capture_channels", s("wechat")),
                ("business_lines", Value::List(lines.iter().map(|l| s(l)).collect())),
                ("archive_ca_pem", s(self.receiver.ca_pem().unwrap())),
            ],
        );
        let path = dir.join("policy.json");
        std::fs::write(&path, serde_json::to_vec(&policy).unwrap()).unwrap();
        path
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_rotated_keys_recalls_media_and_groups_reach_the_archive_once() {
    let dir = tempfile::tempdir().unwrap();
    let archive = Archive::start(dir.path()).await;
    let policy = archive.policy_file(dir.path(), &[ZHANG, LI]);
    let mut w = Wecom::new(dir.path());
    let mut want = Vec::new();
    // 1,200 records under key version 1, then the enterprise rotates to version 2.
    for i in 0..1200 {
        want.push(w.text(
            1,
            if i % 2 == 0 { ZHANG } else { EXTERNAL },
            &[if i % 2 == 0 { EXTERNAL } else { ZHANG }],
            &format!("quote {i}"),
        ));
    }
    let image: Vec<u8> = (0..150_000u32).map(|i| (i % 251) as u8).collect();
    let doc: Vec<u8> = (0..70_000u32).map(|i| (i % 13) as u8).collect();
    let voice = vec![7u8; 3000];
    let video: Vec<u8> = (0..200_000u32).map(|i| (i % 97) as u8).collect();
    let media_ids = [
        w.media("image", "fid-image", &image, json!({})),
        w.media("file", "fid-file", &doc, json!({"filename": "term-sheet.pdf", "fileext": "pdf"})),
        w.media("voice", "fid-voice", &voice, json!({"voice_size": 3000, "play_length": 2})),
        w.media("video", "fid-video", &video, json!({"play_length": 9})),
    ];
    want.extend(media_ids.iter().cloned());
    // A file the archive no longer has (the SDK answers 10005): recorded as omitted.
    let lost = w.add(1, json!({"action": "send", "from": EXTERNAL, "tolist": [ZHANG], "roomid": "", "msgtype": "image", "image": {"sdkfileid": "fid-gone", "md5sum": "0", "filesize": 10}}));
    want.push(lost.clone());
    for i in 0..900 {
        want.push(w.text(2, LI, &[ZHANG], &format!("rotated {i}")));
    }
    let group = w.add(2, json!({"action": "send", "from": EXTERNAL, "tolist": [LI, PERSONAL], "roomid": "wrROOM01", "msgtype": "text", "text": {"content": "group hello"}}));
    want.push(group.clone());
    let regret = w.text(2, ZHANG, &[EXTERNAL], "wrong price");
    want.push(regret.clone());
    let recall = w.add(2, json!({"action": "recall", "from": ZHANG, "tolist": [EXTERNAL], "roomid": "", "msgtype": "revoke", "revoke": {"pre_msgid": regret}}));
    let card = w.add(2, json!({"action": "send", "from": EXTERNAL, "tolist": [ZHANG], "roomid": "", "msgtype": "card", "card": {"corpname": "Acme", "userid": "u1"}}));
    want.push(card.clone());
    // Not archived users: nothing of them stored. An agent event (switch): nothing either.
    w.text(2, PERSONAL, &[EXTERNAL], "dinner?");
    w.add(2, json!({"action": "switch", "time": now_ms(), "user": ZHANG}));
    w.publish();
    w.give_keys(&dir.path().join("keys"), &[1, 2]);

    // Logging everything: still no content, secret or key in what it writes.
    let mut args = connect_args(dir.path(), &w, &policy);
    args.extend(["--log-level".to_string(), "trace".to_string()]);
    let out = run(&args, &w);
    assert!(out.status.success(), "{}", text(&out));
    let pem = w.keys[&1].to_pkcs1_pem(rsa::pkcs8::LineEnding::LF).unwrap().to_string();
    let key_line = pem.lines().nth(1).unwrap().to_string();
    for needle in ["quote 1", "rotated 1", "group hello", "term-sheet", &secret(), &key_line] {
        assert!(!text(&out).contains(needle), "{needle:?} in the connector's output");
    }
    let mut got = captured(&out);
    let media_parts: Vec<String> =
        ["image", "file", "voice", "video"].iter().zip(&media_ids).map(|(k, id)| format!("{id}/{k}")).collect();
    let mut expected: Vec<String> =
        want.iter().cloned().chain(media_parts.iter().cloned()).chain([recall.clone(), format!("{lost}/image")]).collect();
    got.sort();
    expected.sort();
    assert_eq!(got, expected);
    // Paged by the SDK's maximum, from the last position each time.
    let calls = w.calls();
    assert!(calls.iter().all(|(_, limit)| *limit == 1000), "{calls:?}");
    assert_eq!(calls.iter().map(|c| c.0).take(3).collect::<Vec<_>>(), [0, 1000, 2000]);
    // Again: the archive has nothing new; nothing is captured twice.
    let again = run(&args, &w);
    assert!(again.status.success() && captured(&again).is_empty(), "{}", text(&again));
    assert!(!text(&again).contains(&secret()) && !text(&out).contains("quote 1"), "no secret or content in the output");

    let (lines, out_dir) = archive.export(dir.path()).await;
    let mut messages = source_ids(&lines, "message");
    let mut want_messages = want.clone();
    want_messages.sort();
    messages.dedup();
    assert_eq!(messages, want_messages);
    assert_eq!(source_ids(&lines, "message").len(), want.len(), "each once");
    assert_eq!(source_ids(&lines, "unsend"), std::slice::from_ref(&recall));
    assert_eq!(source_ids(&lines, "attachment_omitted"), [format!("{lost}/image")]);
    let of = |id: &str| lines.iter().find(|l| l["meta"]["source_id"] == id).unwrap().clone();
    assert_eq!(of(&recall)["target_message_id"], json!(regret));
    assert_eq!(of(&group)["meta"]["conversation_id"], "room:wrROOM01");
    assert_eq!(of(&group)["meta"]["line"], LI);
    assert!(of(&card)["text"].as_str().unwrap().starts_with("[card] "));
    assert_eq!(of(&want[0])["direction"], "outbound");
    assert_eq!(of(&want[1])["direction"], "inbound");
    assert_eq!(of(&want[1])["meta"]["conversation_id"], format!("wecom:{EXTERNAL}"));
    assert_eq!(of(&media_ids[1])["attachment_ids"][0], format!("{}/file", media_ids[1]));
    let exported: Vec<String> = walk(&out_dir)
        .into_iter()
        .filter(|p| p.parent().is_some_and(|d| d.ends_with("attachments")))
        .map(|p| hex::encode(Sha256::digest(std::fs::read(&p).unwrap())))
        .collect();
    for bytes in [&image, &doc, &voice, &video] {
        assert!(exported.contains(&hex::encode(Sha256::digest(bytes))), "a media file is missing from the export");
    }
    // One stream per archived user.
    let file_of = |id: &str| of(id)["_file"].as_str().unwrap().to_string();
    assert!(file_of(&group).contains(&format!("{DEVICE}-{LI}")) && file_of(&want[0]).contains(&format!("{DEVICE}-{ZHANG}")));
    assert!(!dir.path().join("state").join(PERSONAL).exists());
}

/// A policy archiving [`ZHANG`]'s WeChat to an archive never reached (the test only captures),
/// and an empty device token folder.
fn offline_policy(dir: &Path) -> PathBuf {
    let (_, public) = verbatim_core::seal::generate_archive_keypair();
    let policy = sample_policy(
        "https://archive.acme.test",
        &public,
        "tok",
        &[("capture_channels", Value::String("wechat".into())), ("business_lines", Value::String(ZHANG.into()))],
    );
    let policy_file = dir.join("policy.json");
    std::fs::write(&policy_file, serde_json::to_vec(&policy).unwrap()).unwrap();
    std::fs::create_dir_all(dir.join("tokens")).unwrap();
    policy_file
}

#[test]
fn a_key_version_without_its_key_is_a_could_not_record_window_never_a_skip() {
    let dir = tempfile::tempdir().unwrap();
    let policy_file = offline_policy(dir.path());
    let mut w = Wecom::new(dir.path());
    let before: Vec<String> = (0..5).map(|i| w.text(1, ZHANG, &[EXTERNAL], &format!("v1 {i}"))).collect();
    let after: Vec<String> = (0..5).map(|i| w.text(2, EXTERNAL, &[ZHANG], &format!("v2 {i}"))).collect();
    w.publish();
    w.give_keys(&dir.path().join("keys"), &[1]); // version 2's key not given yet
    let args = connect_args(dir.path(), &w, &policy_file);
    // The line's evidence state, as the agent (and MDM feedback) reports it.
    let unavailable = || {
        let agent = verbatim_core::Agent::open(&dir.path().join("state").join(ZHANG), Default::default()).unwrap();
        let causes: Vec<String> = agent.status().unavailable.iter().map(|c| c.to_string()).collect();
        causes.join(",")
    };

    let out = run(&args, &w);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(captured(&out), before, "everything before the record, nothing after it");
    assert!(text(&out).contains("no private key for publickey_ver 2"), "{}", text(&out));
    assert!(unavailable().contains("source_unavailable:wecom"), "{}", unavailable());
    // Run again without the key: still stopped there, nothing skipped.
    let still = run(&args, &w);
    assert_eq!((still.status.code(), captured(&still).len()), (Some(1), 0), "{}", text(&still));

    // The admin adds the key: the pass goes on from the record it stopped at; the window closes.
    w.give_keys(&dir.path().join("keys"), &[2]);
    let out = run(&args, &w);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(captured(&out), after);
    assert!(!unavailable().contains("wecom"), "{}", unavailable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_pull_and_commit_captures_every_record_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let archive = Archive::start(dir.path()).await;
    let policy = archive.policy_file(dir.path(), &[ZHANG]);
    let mut w = Wecom::new(dir.path());
    // More records than a pipe holds lines of output: once the test stops reading, the
    // connector blocks on its stdout mid-page, so the kill lands between a pull and its commits.
    const N: usize = 3000;
    let want: Vec<String> = (0..N).map(|i| w.text(1 + (i >= 1500) as u32, ZHANG, &[EXTERNAL], &format!("m{i}"))).collect();
    w.publish();
    w.give_keys(&dir.path().join("keys"), &[1, 2]);
    let args = connect_args(dir.path(), &w, &policy);
    let mut cmd = Command::new(BIN);
    cmd.args(&args).env("WECOM_STANDIN_DIR", &w.dir);
    let first = support::run_and_kill_command(cmd, "captured ", 60);
    assert_eq!(first.len(), 60, "the pass finished before it could be killed");
    let out = run(&args, &w);
    assert!(out.status.success(), "{}", text(&out));
    let second = captured(&out);
    assert!(!second.is_empty() && second.len() <= N - 60, "the second run captures what is left: {}", second.len());
    let (lines, _) = archive.export(dir.path()).await;
    let mut want = want;
    want.sort();
    assert_eq!(source_ids(&lines, "message"), want, "every record exactly once");
}

#[test]
fn a_missing_sdk_or_a_refused_secret_stops_before_anything_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let (_, public) = verbatim_core::seal::generate_archive_keypair();
    let policy = sample_policy("https://archive.acme.test", &public, "tok", &[("business_lines", Value::String(ZHANG.into()))]);
    let policy_file = dir.path().join("policy.json");
    std::fs::write(&policy_file, serde_json::to_vec(&policy).unwrap()).unwrap();
    std::fs::create_dir_all(dir.path().join("tokens")).unwrap();
    let w = Wecom::new(dir.path());
    w.publish();
    w.give_keys(&dir.path().join("keys"), &[1]);
    let mut args = connect_args(dir.path(), &w, &policy_file);

    // No SDK where --sdk points: named, exit 2.
    let sdk_at = args.iter().position(|a| a == "--sdk").unwrap() + 1;
    let real_sdk = std::mem::replace(&mut args[sdk_at], dir.path().join("nowhere.so").to_str().unwrap().to_string());
    let out = run(&args, &w);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("nowhere.so"), "{}", text(&out));

    // The SDK refuses the secret (Init): exit 2, the secret never printed.
    args[sdk_at] = real_sdk;
    write_private(&dir.path().join("wrong-secret"), "not-the-archive-secret");
    let secret_at = args.iter().position(|a| a == "--secret-file").unwrap() + 1;
    args[secret_at] = dir.path().join("wrong-secret").to_str().unwrap().to_string();
    let out = run(&args, &w);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("Init: error 10001"), "{}", text(&out));
    assert!(!text(&out).contains("not-the-archive-secret"), "{}", text(&out));
    assert!(!dir.path().join("state").join(ZHANG).exists(), "nothing opened");
}

#[test]
fn sigterm_stops_a_watching_connector_between_two_records_and_the_next_run_goes_on() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let policy_file = offline_policy(dir.path());
    let mut w = Wecom::new(dir.path());
    let all: Vec<String> = (0..3000).map(|i| w.text(1, ZHANG, &[EXTERNAL], &format!("m{i}"))).collect();
    w.publish();
    w.give_keys(&dir.path().join("keys"), &[1]);
    let once = connect_args(dir.path(), &w, &policy_file);
    let mut watch: Vec<String> = once.iter().filter(|a| *a != "--once").cloned().collect();
    watch.extend(["--poll-secs".to_string(), "3600".to_string()]);

    let mut child = Command::new(BIN)
        .args(&watch)
        .env("WECOM_STANDIN_DIR", &w.dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut first = Vec::new();
    while first.len() < 20 {
        let line = rx.recv_timeout(std::time::Duration::from_secs(60)).expect("the connector captures");
        if let Some(id) = line.strip_prefix("captured ") {
            first.push(id.to_string());
        }
    }
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    // It stops between two records, well before the 3,000 are done or the hour's poll is up.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "SIGTERM did not stop the connector");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    reader.join().unwrap();
    first.extend(rx.try_iter().filter_map(|l| l.strip_prefix("captured ").map(str::to_string)));
    assert!(first.len() < all.len(), "stopped before the end: {}", first.len());

    let out = run(&once, &w);
    assert!(out.status.success(), "{}", text(&out));
    let mut both: Vec<String> = first.into_iter().chain(captured(&out)).collect();
    both.sort();
    let mut all = all;
    all.sort();
    assert_eq!(both, all, "every record once across the two runs");
}
