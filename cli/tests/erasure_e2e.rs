//! Erasure by keys, end to end: a device captures a client conversation and a personal one
//! captured by mistake, uploads them to a receiver, the vault files their keys, the archive key
//! rotates and retires, and the personal conversation is erased. Then: the export shows the
//! client conversation intact and the personal one as erased, `verify` still proves the stream
//! complete, and no file of the device store, the archive, the vault, the keyring or the
//! export holds a byte of the erased content. Also: legal holds block erasure and retention,
//! retention makes records unreadable once their period ends, an erasure is pending (never
//! reported done) until its keys retire, a subject-access export selects one participant,
//! and kill -9 at each step of ingest, erase and retire loses nothing and keeps nothing.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use support::{BIN, export_lines, walk};
use verbatim_core::model::{Attachment, Direction, EventMeta, Message};
use verbatim_core::synth::{BUSINESS_LINE, sample_policy};
use verbatim_core::upload::{NetworkState, StopReason, UploadOptions};
use verbatim_core::{Agent, AgentOptions, Channel, Event, Value};
use verbatim_receiver::seaweed::{ACCESS_KEY, SECRET_KEY, Seaweed};
use verbatim_receiver::{AcceptedKeys, Receiver, ReceiverConfig, RunningReceiver, add_device};

const CLIENT_TEXT: &str = "Buy 500 ACME at market, confirm by noon";
const PERSONAL_TEXT: &str = "Dinner at Mum's on Sunday? Bring the kids";
const PERSONAL_FILE: &[u8] = b"PERSONAL-PHOTO-BYTES-7f3a9c2e-do-not-archive";
const CLIENT: &str = "+15550111";
const FRIEND: &str = "+15550999";
const DEVICE: &str = "dev-erasure";

fn verbatim(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    // The object store test's credentials (unused by every other command).
    cmd.env("AWS_ACCESS_KEY_ID", ACCESS_KEY).env("AWS_SECRET_ACCESS_KEY", SECRET_KEY).env("AWS_REGION", "us-east-1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn ok_json(args: &[&str]) -> serde_json::Value {
    let out = verbatim(args, &[]);
    assert!(
        out.status.success(),
        "verbatim {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn message(conversation: &str, id: &str, other: &str, text: &str) -> Event {
    Event::Message(Message {
        meta: EventMeta {
            channel: Channel::Sms,
            line: BUSINESS_LINE.into(),
            conversation_id: conversation.into(),
            source_id: id.into(),
            source_time_ms: 1_780_000_000_000,
        },
        direction: Direction::Inbound,
        sender: other.into(),
        recipients: vec![BUSINESS_LINE.into()],
        text: text.into(),
        attachment_ids: vec![],
        reply_to: None,
    })
}

/// The archive side of the scenario: keyring, vault, receiver.
struct Archive {
    root: PathBuf,
    keyring: PathBuf,
    vault: PathBuf,
    /// The receiver's data directory (the store itself, or only its certificates).
    data: PathBuf,
    /// Where the store is, as commands take it: `--data DIR` or `--store s3://... --s3-endpoint URL`.
    store: Vec<String>,
    object_store: Option<verbatim_receiver::store::s3::S3StoreConfig>,
    keys: Vec<(String, [u8; 32])>,
}

impl Archive {
    fn new(root: &Path, retention_days: Option<u32>) -> Archive {
        let (keyring, vault, data) = (root.join("keyring"), root.join("vault"), root.join("archive"));
        let mut init = vec!["vault", "init", "--vault", s(&vault), "--actor", "dpo@acme"];
        let days = retention_days.map(|d| d.to_string());
        if let Some(d) = &days {
            init.extend(["--retention-days", d]);
        }
        ok_json(&init);
        let mut keys = Vec::new();
        for _ in 0..2 {
            let k = ok_json(&["keys", "rotate", "--keyring", s(&keyring), "--vault", s(&vault)]);
            let public = verbatim_receiver::load_public(Path::new(k["public_key"].as_str().unwrap())).unwrap();
            keys.push((k["key_id"].as_str().unwrap().to_string(), public));
        }
        let store = vec!["--data".to_string(), data.to_str().unwrap().to_string()];
        Archive { root: root.to_path_buf(), keyring, vault, data, store, object_store: None, keys }
    }

    /// The same, archiving into a bucket of `weed` with Object Lock.
    fn on_bucket(root: &Path, weed: &Seaweed) -> Archive {
        let bucket = format!("erasure-{}", std::process::id());
        weed.create_bucket(&bucket, true).unwrap();
        let mut config = weed.store_config(&bucket, 1);
        config.prefix = "archive".into();
        let store = vec!["--store".into(), format!("s3://{bucket}/archive"), "--s3-endpoint".into(), weed.endpoint().to_string()];
        Archive { store, object_store: Some(config), ..Archive::new(root, None) }
    }

    async fn receiver(&self) -> RunningReceiver {
        let accepted = AcceptedKeys::from_public_keys(self.keys.iter().map(|(_, k)| k));
        let mut config = ReceiverConfig::local_self_signed(&self.data, accepted);
        config.object_store = self.object_store.clone();
        Receiver::start(config).await.unwrap()
    }

    fn with_store<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut out = args.to_vec();
        out.extend(self.store.iter().map(String::as_str));
        out
    }

    fn ingest(&self) -> serde_json::Value {
        ok_json(&self.with_store(&["vault", "ingest", "--vault", s(&self.vault), "--keyring", s(&self.keyring)]))
    }

    fn export(&self, name: &str, extra: &[&str]) -> (PathBuf, serde_json::Value) {
        let out = self.root.join(name);
        let mut args = self.with_store(&["export", "--out", s(&out), "--json", "--vault", s(&self.vault)]);
        args.extend(extra);
        let o = verbatim(&args, &[]);
        assert!(
            o.status.code() == Some(0),
            "export: {}\n{}",
            String::from_utf8_lossy(&o.stderr),
            String::from_utf8_lossy(&o.stdout)
        );
        (out.clone(), serde_json::from_slice(&o.stdout).unwrap())
    }

    fn retire(&self, key: usize) -> Output {
        let args = ["keys", "retire", "--keyring", s(&self.keyring), "--vault", s(&self.vault), "--key-id", &self.keys[key].0];
        verbatim(&self.with_store(&args), &[])
    }

    fn verify(&self) -> serde_json::Value {
        let out = verbatim(&self.with_store(&["verify", "--json", "--vault", s(&self.vault)]), &[]);
        assert!(out.status.success(), "verify: {}", String::from_utf8_lossy(&out.stdout));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// A device on the business line, uploading to `rx` sealed to archive key `key`.
struct Device {
    agent: Agent,
    token: String,
}

impl Device {
    async fn with_options(dir: &Path, archive: &Archive, rx: &RunningReceiver, options: AgentOptions) -> Device {
        let token = add_device(&archive.data.join("tokens.jsonl"), "acme-securities", DEVICE).unwrap();
        let agent = Agent::open(&dir.join("device"), options).unwrap();
        let d = Device { agent, token: token.expose().to_string() };
        d.use_key(archive, rx, 0).await;
        d
    }

    async fn use_key(&self, archive: &Archive, rx: &RunningReceiver, key: usize) {
        let text = |v: &str| Value::String(v.to_string());
        let policy = sample_policy(
            &rx.url(),
            &archive.keys[key].1,
            &self.token,
            &[("device_id", text(DEVICE)), ("archive_ca_pem", text(rx.ca_pem().unwrap()))],
        );
        assert!(self.agent.apply_policy(&policy).await.unwrap().is_empty());
    }

    async fn capture(&self, event: Event) {
        self.agent.capture(event).await.unwrap();
    }

    async fn upload(&self) {
        let r = self.agent.upload(UploadOptions::new(Duration::from_secs(60), NetworkState::Unmetered)).await;
        assert_eq!(r.stopped, StopReason::Done, "{r:?}");
    }
}

/// Captures the two conversations under key 0, then moves the device to key 1 and captures
/// one more client message: the stream has moved on, so key 0 can retire once filed.
async fn two_conversations(dir: &Path, archive: &Archive, rx: &RunningReceiver) -> Device {
    two_conversations_sealed(dir, archive, rx, AgentOptions::default()).await
}

async fn two_conversations_sealed(dir: &Path, archive: &Archive, rx: &RunningReceiver, options: AgentOptions) -> Device {
    let device = Device::with_options(dir, archive, rx, options).await;
    device.capture(message("client-42", "c1", CLIENT, CLIENT_TEXT)).await;
    device.capture(message("personal-7", "p1", FRIEND, PERSONAL_TEXT)).await;
    let photo = dir.join("photo.jpg");
    std::fs::write(&photo, PERSONAL_FILE).unwrap();
    device
        .capture(Event::Attachment(Attachment {
            meta: EventMeta {
                channel: Channel::Sms,
                line: BUSINESS_LINE.into(),
                conversation_id: "personal-7".into(),
                source_id: "p2".into(),
                source_time_ms: 1_780_000_000_500,
            },
            message_id: Some("p1".into()),
            direction: Direction::Inbound,
            sender: FRIEND.into(),
            file_name: "photo.jpg".into(),
            mime_type: "image/jpeg".into(),
            path: photo.clone(),
        }))
        .await;
    device.capture(message("client-42", "c2", CLIENT, "Filled at 101.20")).await;
    device.upload().await;
    device.use_key(archive, rx, 1).await;
    device.capture(message("client-42", "c3", CLIENT, "Thanks, settle T+1")).await;
    device.upload().await;
    std::fs::remove_file(photo).unwrap();
    device
}

fn texts(lines: &[serde_json::Value]) -> Vec<String> {
    lines.iter().filter(|l| l["type"] == "message").map(|l| l["text"].as_str().unwrap().to_string()).collect()
}

/// Files under `dirs` holding any of `needles`.
fn files_holding(dirs: &[&Path], needles: &[&[u8]]) -> Vec<String> {
    let mut hits = Vec::new();
    for d in dirs {
        for f in walk(d) {
            let bytes = std::fs::read(&f).unwrap();
            for n in needles {
                if bytes.windows(n.len()).any(|w| w == *n) {
                    hits.push(format!("{} holds {:?}", f.display(), String::from_utf8_lossy(n)));
                }
            }
        }
    }
    hits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_conversation_becomes_unreadable_while_the_chain_still_proves_the_stream_complete() {
    let dir = tempfile::tempdir().unwrap();
    let archive = Archive::new(dir.path(), None);
    let rx = archive.receiver().await;
    let device = two_conversations(dir.path(), &archive, &rx).await;

    // Before anything is erased, the export (with the archive keys) shows both.
    let (_, before) = archive.export("export-before", &["--keyring", s(&archive.keyring)]);
    let lines = export_lines(&dir.path().join("export-before"));
    assert!(texts(&lines).contains(&PERSONAL_TEXT.to_string()));
    assert_eq!(
        lines.iter().filter(|l| l["type"] == "key_record").count() as u64,
        before["streams"][0]["key_records"].as_u64().unwrap()
    );
    assert!(lines.iter().all(|l| l.get("key").is_none()), "no key reaches an export");

    let filed = archive.ingest();
    assert!(filed["stopped"].as_array().unwrap().is_empty(), "{filed}");
    assert!(
        filed["content_keys_filed"].as_u64().unwrap() >= 3,
        "client and personal under key 0, client under key 1, agent: {filed}"
    );

    // Key 0 can retire: every record sealed to it is filed and the device moved to key 1.
    let retired = archive.retire(0);
    assert!(retired.status.success(), "{}", String::from_utf8_lossy(&retired.stderr));
    assert!(!archive.keyring.join(&archive.keys[0].0).join("archive-private.key").exists(), "the private key file is gone");
    // The current key cannot: the device still seals to it.
    let refused = archive.retire(1);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("cannot retire yet"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    let erased = ok_json(&[
        "erase",
        "--vault",
        s(&archive.vault),
        "--conversation",
        "personal-7",
        "--device",
        DEVICE,
        "--reason",
        "DSR-118: personal conversation captured by mistake",
        "--actor",
        "dpo@acme",
    ]);
    assert_eq!(erased["status"]["state"], "complete", "sealed only to a retired key: {erased}");
    assert_eq!(erased["conversations"][0]["conversation_id"], "personal-7");
    let erasure = erased["erasure"].as_i64().unwrap();

    // Export with the vault and every key left: the client conversation intact, the
    // personal one erased, nothing unreadable, every record still counted.
    let (export, summary) = archive.export("export-after", &["--keyring", s(&archive.keyring)]);
    let lines = export_lines(&export);
    assert_eq!(texts(&lines), [CLIENT_TEXT, "Filled at 101.20", "Thanks, settle T+1"]);
    let erased_lines: Vec<_> = lines.iter().filter(|l| l["type"] == "erased").collect();
    assert!(erased_lines.len() >= 4, "the message and the attachment's start, chunk and end: {erased_lines:?}");
    assert!(erased_lines.iter().all(|l| l["erasure"] == erasure));
    let stream = &summary["streams"][0];
    assert_eq!(stream["unreadable"], 0, "{summary}");
    assert_eq!(stream["erased"].as_u64().unwrap(), erased_lines.len() as u64);
    assert_eq!(stream["records"].as_u64().unwrap(), lines.len() as u64, "every record has a line");
    assert_eq!(summary["erasures"][0]["erasure"], erasure);
    assert_eq!(summary["erasures"][0]["reason"], "DSR-118: personal conversation captured by mistake");
    assert_eq!(summary["erasures"][0]["requested_by"], "dpo@acme");

    // verify (keyless) still proves the stream complete.
    let v = verbatim(&["verify", "--data", s(&archive.data), "--json"], &[]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
    // With the vault it also says how many records were erased, and by which erasure.
    let v = verbatim(&["verify", "--data", s(&archive.data), "--json", "--vault", s(&archive.vault)], &[]);
    assert!(v.status.success(), "erased records are not a problem of the chain");
    let report: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(report["streams"][0]["erased"], stream["erased"]);
    assert_eq!(report["streams"][0]["erasures"][0], erasure);
    assert_eq!(report["streams"][0]["chain_verified"], true);

    // The audit log chains and names the erasure, never the content.
    let audit = verbatim(&["vault", "audit", "--vault", s(&archive.vault)], &[]);
    assert!(audit.status.success());
    let audit = String::from_utf8(audit.stdout).unwrap();
    assert!(audit.contains("\"action\":\"erasure\"") && audit.contains("personal-7") && audit.contains("key_retired"));
    assert!(!audit.contains(PERSONAL_TEXT));

    // No byte of the erased content anywhere the product keeps data.
    device.agent.close().await.unwrap();
    rx.shutdown().await;
    let dirs = [dir.path().join("device"), archive.data.clone(), archive.vault.clone(), archive.keyring.clone(), export.clone()];
    let dirs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
    let hits = files_holding(&dirs, &[PERSONAL_TEXT.as_bytes(), PERSONAL_FILE, FRIEND.as_bytes()]);
    assert!(hits.is_empty(), "{hits:?}");
    // ...while the client conversation is there in the export (the scan can find things).
    assert!(!files_holding(&[&export], &[CLIENT_TEXT.as_bytes()]).is_empty());

    // The retired key's file is gone, so no opener (ours, or one written from the docs with
    // HPKE) can derive the epoch keys; and the vault no longer holds the conversation's key.
    let vault = verbatim_receiver::vault::Vault::open(&archive.vault).unwrap();
    let status = ok_json(&["vault", "status", "--vault", s(&archive.vault)]);
    assert_eq!(status["audit_log_chains"], true);
    assert!(status["counts"]["erased_keys"].as_i64().unwrap() >= 1);
    drop(vault);
    let key_only = verbatim(
        &["export", "--data", s(&archive.data), "--out", s(&dir.path().join("x")), "--keyring", s(&archive.keyring), "--json"],
        &[],
    );
    let key_only: serde_json::Value = serde_json::from_slice(&key_only.stdout).unwrap();
    assert!(
        !export_lines(&dir.path().join("x")).iter().any(|l| l["text"] == PERSONAL_TEXT),
        "the remaining archive key cannot open what the retired one sealed: {key_only}"
    );

    // The route around the product, an opener written from docs/record-format.md with HPKE:
    // the retired key's file is gone, and the key left opens nothing sealed to the retired one.
    if python3_runs() {
        let opener = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/interop/open_export.py");
        let retired = archive.keyring.join(&archive.keys[0].0).join("archive-private.key");
        let out =
            Command::new("python3").arg(opener).arg("--data").arg(&archive.data).arg("--key").arg(&retired).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "no key file to open with: {}", String::from_utf8_lossy(&out.stdout));
        let current = archive.keyring.join(&archive.keys[1].0).join("archive-private.key");
        let out =
            Command::new("python3").arg(opener).arg("--data").arg(&archive.data).arg("--key").arg(&current).output().unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if report["decrypt"] == "yes" {
            let stream = &report["streams"][0];
            assert!(!stream["unreadable"].as_array().unwrap().is_empty(), "key 0's records do not open with key 1");
            assert!(stream["chain_verified"] == true, "the chain still verifies without any key");
        }
    }
}

/// Whether python3 can run the docs' opener here (required in CI).
fn python3_runs() -> bool {
    match Command::new("python3").arg("--version").output() {
        Ok(out) if out.status.success() => true,
        _ if std::env::var_os("CI").is_some() => panic!("python3 is required in CI"),
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_is_pending_until_its_keys_retire_and_holds_block_it() {
    let dir = tempfile::tempdir().unwrap();
    let archive = Archive::new(dir.path(), None);
    let rx = archive.receiver().await;
    let _device = two_conversations(dir.path(), &archive, &rx).await;
    archive.ingest();

    // A participant hold covers the personal conversation: erasure refused, nothing changed.
    let hold =
        ok_json(&["hold", "add", "--vault", s(&archive.vault), "--participant", "+1 555 0999", "--reason", "litigation hold"]);
    let refused = verbatim(&["erase", "--vault", s(&archive.vault), "--participant", FRIEND, "--reason", "DSR-2"], &[]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("legal hold"), "{}", String::from_utf8_lossy(&refused.stderr));
    let (_, summary) = archive.export("held", &[]);
    assert_eq!(summary["erased"], 0);
    let id = hold["hold"].as_i64().unwrap().to_string();
    ok_json(&["hold", "release", &id, "--vault", s(&archive.vault), "--reason", "matter closed"]);

    // Erased before key 0 retires: pending, and the export already reports it as erased
    // even with key 0 at hand.
    let erased = ok_json(&["erase", "--vault", s(&archive.vault), "--participant", FRIEND, "--reason", "DSR-2"]);
    assert_eq!(erased["status"]["state"], "pending", "{erased}");
    assert_eq!(erased["status"]["waiting_for_keys"][0], archive.keys[0].0.as_str());
    assert!(erased["status"]["complete_by_ms"].as_i64().is_some());
    let (export, summary) = archive.export("pending", &["--keyring", s(&archive.keyring)]);
    assert!(summary["erased"].as_u64().unwrap() >= 4);
    assert!(files_holding(&[&export], &[PERSONAL_TEXT.as_bytes(), PERSONAL_FILE]).is_empty());
    let status = ok_json(&["vault", "status", "--vault", s(&archive.vault)]);
    assert_eq!(status["erasures"][0]["status"]["state"], "pending");

    // Retiring key 0 completes it.
    assert!(archive.retire(0).status.success());
    let status = ok_json(&["vault", "status", "--vault", s(&archive.vault)]);
    assert_eq!(status["erasures"][0]["status"]["state"], "complete", "{status}");

    // A second request finds nothing left to erase.
    let again = verbatim(&["erase", "--vault", s(&archive.vault), "--participant", FRIEND, "--reason", "DSR-2 again"], &[]);
    assert_eq!(again.status.code(), Some(1));
    rx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_makes_records_unreadable_once_their_period_ends_except_under_a_hold() {
    let dir = tempfile::tempdir().unwrap();
    let archive = Archive::new(dir.path(), Some(30));
    let rx = archive.receiver().await;
    let _device = two_conversations(dir.path(), &archive, &rx).await;
    archive.ingest();
    let vault = s(&archive.vault);
    let now = verbatim_receiver::time::now_ms();
    let later = (now + 31 * 86_400_000).to_string();

    // Within the period nothing goes.
    let dry = ok_json(&["retention", "apply", "--vault", vault, "--as-of-ms", &now.to_string()]);
    assert_eq!(dry["keys"], 0);
    // Past it, a dry run lists everything and changes nothing.
    let dry = ok_json(&["retention", "apply", "--vault", vault, "--as-of-ms", &later]);
    assert!(dry["keys"].as_u64().unwrap() >= 3, "{dry}");
    assert_eq!(archive.export("still", &[]).1["erased"], 0);

    // A hold on the client conversation keeps it; the rest goes.
    ok_json(&[
        "hold",
        "add",
        "--vault",
        vault,
        "--device",
        DEVICE,
        "--conversation",
        "client-42",
        "--reason",
        "regulator inquiry",
    ]);
    let applied = ok_json(&["retention", "apply", "--vault", vault, "--as-of-ms", &later, "--apply"]);
    assert!(applied["erasure"].as_i64().is_some());
    assert!(applied["held"].as_array().unwrap().iter().any(|h| h.as_str().unwrap().contains("client-42")), "{applied}");
    // Without archive keys (as after they retire), only the held conversation still reads.
    let (_, summary) = archive.export("aged", &[]);
    let lines = export_lines(&dir.path().join("aged"));
    assert_eq!(texts(&lines), [CLIENT_TEXT, "Filled at 101.20", "Thanks, settle T+1"]);
    assert!(summary["erased"].as_u64().unwrap() >= 4, "{summary}");
    rx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_access_export_holds_exactly_what_one_participant_took_part_in() {
    let dir = tempfile::tempdir().unwrap();
    let archive = Archive::new(dir.path(), None);
    let rx = archive.receiver().await;
    let _device = two_conversations(dir.path(), &archive, &rx).await;
    let (export, summary) = archive.export("dsar", &["--keyring", s(&archive.keyring), "--participant", "+1 (555) 0999"]);
    let lines = export_lines(&export);
    assert_eq!(texts(&lines), [PERSONAL_TEXT]);
    assert!(
        lines.iter().any(|l| l["type"] == "attachment_end" && l["sha256_verified"] == true),
        "the photo comes with its message"
    );
    assert!(lines.iter().all(|l| l["type"] != "agent" && l["type"] != "key_record"));
    assert!(summary["streams"][0]["not_selected"].as_u64().unwrap() > 0);
    assert!(files_holding(&[&export], &[CLIENT_TEXT.as_bytes()]).is_empty());
    rx.shutdown().await;
}

/// kill -9 (abort) at each crash point of ingest, erase and retire, then the same command
/// again: the outcome is as if the first run had not died, and the audit log chains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_erase_and_retire_survive_a_crash_at_every_step() {
    let dir = tempfile::tempdir().unwrap();
    let archive = Archive::new(dir.path(), None);
    let rx = archive.receiver().await;
    let _device = two_conversations(dir.path(), &archive, &rx).await;
    let vault = s(&archive.vault);
    let ingest = ["vault", "ingest", "--vault", vault, "--data", s(&archive.data), "--keyring", s(&archive.keyring)];

    for point in ["ingest:before-commit", "ingest:after-commit"] {
        let crashed = verbatim(&ingest, &[("VERBATIM_VAULT_CRASH_AT", point)]);
        assert!(!crashed.status.success(), "{point}: the crash point was reached");
    }
    let filed = archive.ingest();
    assert!(filed["stopped"].as_array().unwrap().is_empty(), "{filed}");
    // Everything filed once: a second run files nothing.
    assert_eq!(archive.ingest()["records"], 0);

    let erase = ["erase", "--vault", vault, "--conversation", "personal-7", "--device", DEVICE, "--reason", "DSR-9"];
    let crashed = verbatim(&erase, &[("VERBATIM_VAULT_CRASH_AT", "erase:before-commit")]);
    assert!(!crashed.status.success());
    // The crashed erasure changed nothing: the key is still there, no erasure is listed.
    let status = ok_json(&["vault", "status", "--vault", vault]);
    assert_eq!(status["erasures"].as_array().unwrap().len(), 0);
    assert_eq!(status["counts"]["erased_keys"], 0);
    assert!(texts(&export_lines(&archive.export("mid", &[]).0)).contains(&PERSONAL_TEXT.to_string()));
    assert_eq!(ok_json(&erase)["keys"], 1);

    let key = archive.keyring.join(&archive.keys[0].0).join("archive-private.key");
    let retire = [
        "keys",
        "retire",
        "--keyring",
        s(&archive.keyring),
        "--vault",
        vault,
        "--data",
        s(&archive.data),
        "--key-id",
        &archive.keys[0].0,
    ];
    assert!(!verbatim(&retire, &[("VERBATIM_VAULT_CRASH_AT", "retire:before-destroy")]).status.success());
    assert!(key.exists(), "died before destroying");
    assert!(!verbatim(&retire, &[("VERBATIM_VAULT_CRASH_AT", "retire:after-destroy")]).status.success());
    assert!(!key.exists(), "destroyed, not yet recorded");
    let status = ok_json(&["vault", "status", "--vault", vault]);
    assert_eq!(status["erasures"][0]["status"]["state"], "pending", "not retired until recorded");
    assert!(verbatim(&retire, &[]).status.success(), "the next run finishes the retirement");
    let status = ok_json(&["vault", "status", "--vault", vault]);
    assert_eq!(status["erasures"][0]["status"]["state"], "complete");
    assert_eq!(status["audit_log_chains"], true);

    // Everything not erased still reads from the vault alone.
    let lines = export_lines(&archive.export("final", &[]).0);
    assert_eq!(texts(&lines), [CLIENT_TEXT, "Filled at 101.20", "Thanks, settle T+1"]);
    rx.shutdown().await;
}

/// The same erasure on an archive in a bucket with Object Lock (a local SeaweedFS): the sealed
/// objects cannot be deleted, yet the erased conversation becomes unreadable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_works_on_an_object_store_archive_too() {
    let weed = match verbatim_receiver::seaweed::weed_binary() {
        Ok(_) => Seaweed::start().expect("SeaweedFS starts"),
        Err(e) if std::env::var_os("VERBATIM_REQUIRE_WEED").is_some() || std::env::var_os("CI").is_some() => {
            panic!("this test needs SeaweedFS: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED (no SeaweedFS): {e}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let archive = Archive::on_bucket(dir.path(), &weed);
    let rx = archive.receiver().await;
    let _device = two_conversations(dir.path(), &archive, &rx).await;
    let filed = archive.ingest();
    assert!(filed["stopped"].as_array().unwrap().is_empty(), "{filed}");
    assert!(archive.retire(0).status.success());
    let erased = ok_json(&["erase", "--vault", s(&archive.vault), "--participant", FRIEND, "--reason", "DSR-5"]);
    assert_eq!(erased["status"]["state"], "complete", "{erased}");
    let (export, summary) = archive.export("export", &[]);
    assert_eq!(texts(&export_lines(&export)), [CLIENT_TEXT, "Filled at 101.20", "Thanks, settle T+1"]);
    assert!(summary["erased"].as_u64().unwrap() >= 4, "{summary}");
    assert!(files_holding(&[&export, &archive.vault], &[PERSONAL_TEXT.as_bytes(), PERSONAL_FILE]).is_empty());
    let report = archive.verify();
    assert_eq!(report["streams"][0]["erased"], summary["erased"]);
    assert_eq!(report["totals"]["ok"], true);
    rx.shutdown().await;
    drop(weed);
}

/// A device of before conversation keys (every record under its epoch key) keeps working with
/// the vault: its epochs are filed and read after their archive key retires, an erasure says
/// its conversations cannot be erased, and retention takes a whole epoch once all of it is old.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_sealed_before_conversation_keys_stay_readable_and_are_said_not_erasable() {
    let dir = tempfile::tempdir().unwrap();
    let archive = Archive::new(dir.path(), Some(30));
    let rx = archive.receiver().await;
    let options = AgentOptions { sealing: verbatim_core::seal::Sealing::EpochKey, ..AgentOptions::default() };
    let _device = two_conversations_sealed(dir.path(), &archive, &rx, options).await;
    let filed = archive.ingest();
    assert_eq!(filed["content_keys_filed"], 0, "no conversation keys in version 1: {filed}");
    assert!(archive.retire(0).status.success());

    let out = verbatim(
        &["erase", "--vault", s(&archive.vault), "--conversation", "personal-7", "--device", DEVICE, "--reason", "DSR-7"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "nothing erased");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["not_erasable"][0].as_str().unwrap().contains("personal-7"), "{report}");

    // Read from the vault alone (key 0 is gone): everything, as before.
    let (export, summary) = archive.export("v1", &[]);
    assert!(texts(&export_lines(&export)).contains(&PERSONAL_TEXT.to_string()));
    assert_eq!(summary["erased"], 0);
    assert_eq!(summary["streams"][0]["unreadable"], 0, "{summary}");

    // Retention: each whole epoch past the period goes.
    let later = (verbatim_receiver::time::now_ms() + 31 * 86_400_000).to_string();
    let applied = ok_json(&["retention", "apply", "--vault", s(&archive.vault), "--as-of-ms", &later, "--apply"]);
    assert!(applied["keys"].as_u64().unwrap() >= 2, "both epochs: {applied}");
    let (export, summary) = archive.export("v1-aged", &[]);
    assert!(texts(&export_lines(&export)).is_empty());
    assert_eq!(summary["erased"], summary["records"], "{summary}");
    rx.shutdown().await;
}
