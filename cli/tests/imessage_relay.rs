//! `verbatim relay imessage` as a process: killed with SIGKILL mid-scan and run again, it
//! captures every row exactly once; end to end, relay -> upload -> receiver -> export holds
//! every message, reaction, edit and unsend with its participants and times.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use base64::Engine;
use verbatim_core::archive::Opener;
use verbatim_core::chain;
use verbatim_core::record::RecordBody;
use verbatim_core::seal::generate_archive_keypair;
use verbatim_core::sources::imessage::fixture::{
    BUSINESS_ID, BUSINESS_NUMBER, CLIENT_A, CLIENT_B, CLIENT_C, PERSONAL_ID, World, expect,
};
use verbatim_core::synth::sample_policy;
use verbatim_core::{Agent, AgentOptions, Value};
use verbatim_receiver::{AcceptedKeys, Receiver, ReceiverConfig};

mod support;

use support::{BIN, walk};

fn relay_args(world: &World, state: &Path, policy: &Path) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = ["relay", "imessage", "--once", "--chat-db"].iter().map(Into::into).collect();
    args.push(world.db.path.clone().into());
    args.push("--attachments-root".into());
    args.push(world.attachments_root.clone().into());
    args.push("--state".into());
    args.push(state.into());
    args.push("--policy".into());
    args.push(policy.into());
    args
}

#[test]
fn killed_mid_scan_and_run_again_the_relay_captures_every_row_exactly_once() {
    let (secret, public) = generate_archive_keypair();
    let tmp = tempfile::tempdir().unwrap();
    let world = World::create(tmp.path());
    World::more_messages(&world.db, "BULK", 1500);
    let state = tmp.path().join("relay");
    let policy = tmp.path().join("policy.json");
    let tree = sample_policy("https://archive.acme-securities.test", &public, "tok-test", &[]);
    std::fs::write(&policy, serde_json::to_vec(&tree).unwrap()).unwrap();
    let args = relay_args(&world, &state, &policy);

    let mut acked = Vec::new();
    for kill_after in [0, 1, 5, 13, 14, 90, 400, 401, 900] {
        acked.extend(support::run_and_kill(&args, "captured ", kill_after));
    }
    let last = Command::new(BIN).args(&args).output().unwrap();
    assert!(last.status.success(), "{}", String::from_utf8_lossy(&last.stderr));

    let agent = Agent::open(&state, AgentOptions::default()).unwrap();
    let stream = agent.stream().unwrap();
    let mut opener = Opener::new(secret);
    let (mut seq, mut link) = (0, chain::genesis(&stream));
    let mut ids = Vec::new();
    while let Some(batch) = agent.queue().read_batch_after(seq, link, 1 << 20).unwrap() {
        for (s, record) in opener.open_batch(&batch, seq, link).expect("chain verifies and every record opens") {
            match record.body {
                RecordBody::Message(m) => ids.push(m.meta.source_id),
                RecordBody::Edit(e) => ids.push(e.meta.source_id),
                RecordBody::Unsend(u) => ids.push(u.meta.source_id),
                RecordBody::Reaction(r) => ids.push(r.meta.source_id),
                RecordBody::AttachmentStart(h) => ids.push(h.meta.source_id),
                _ => {}
            }
            seq = s;
        }
        link = batch.records.last().unwrap().link;
    }
    let held: HashSet<&String> = ids.iter().collect();
    assert_eq!(held.len(), ids.len(), "no row captured twice");
    assert_eq!(ids.len(), 13 + 1500, "every row captured");
    assert!(acked.len() > 900, "the kill points covered real work: {}", acked.len());
    for id in &acked {
        assert!(held.contains(id), "{id} was printed as captured, then lost");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_upload_receive_export_holds_every_message_reaction_edit_and_unsend() {
    let archive = tempfile::tempdir().unwrap();
    let key = verbatim_receiver::keygen(&archive.path().join("key")).unwrap();
    let secret = verbatim_receiver::load_secret(&key.private_path).unwrap();
    let public: [u8; 32] = base64::engine::general_purpose::STANDARD.decode(&key.public_b64).unwrap().try_into().unwrap();
    let data = archive.path().join("data");
    let receiver = Receiver::start(ReceiverConfig::local_self_signed(data.clone(), AcceptedKeys::from_public_keys([&public])))
        .await
        .unwrap();
    let token = verbatim_receiver::add_device(&data.join("tokens.jsonl"), "acme-securities", "mac-relay-1").unwrap();
    let s = |v: &str| Value::String(v.to_string());
    let tree = sample_policy(
        &receiver.url(),
        &public,
        token.expose(),
        &[("device_id", s("mac-relay-1")), ("archive_ca_pem", s(receiver.ca_pem().unwrap()))],
    );
    let mac = tempfile::tempdir().unwrap();
    let policy = mac.path().join("policy.json");
    std::fs::write(&policy, serde_json::to_vec(&tree).unwrap()).unwrap();
    let world = World::create(mac.path());
    let state = mac.path().join("relay");
    let args = relay_args(&world, &state, &policy);
    let run = |args: Vec<std::ffi::OsString>| async move {
        tokio::task::spawn_blocking(move || Command::new(BIN).args(&args).output().unwrap()).await.unwrap()
    };

    assert!(run(args.clone()).await.status.success());
    // After capture: an edit, an unsend, the missing attachment downloaded.
    let m1 = world.db.rowid_of("M1-QUOTE").unwrap();
    world.db.edit(m1, "Can you quote 200 ACME?", World::at(20));
    world.db.retract(world.db.rowid_of("M3-GROUP").unwrap(), World::at(22));
    world.download_missing_attachment();
    let second = run(args.clone()).await;
    assert!(second.status.success(), "{}", String::from_utf8_lossy(&second.stderr));
    let mut upload: Vec<std::ffi::OsString> = vec!["upload".into(), "--state".into(), state.clone().into()];
    upload.extend(["--policy".into(), policy.clone().into()]);
    let up = run(upload).await;
    assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stdout));

    let out = archive.path().join("export");
    let summary = verbatim_receiver::export(&data, &secret, &out).unwrap();
    assert!(summary.ok(), "{}", summary.to_text());
    let mut by_id: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for file in walk(&out).into_iter().filter(|f| f.extension().is_some_and(|e| e == "jsonl")) {
        for line in std::fs::read_to_string(&file).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            if let Some(id) = v["meta"]["source_id"].as_str().or(v["header"]["meta"]["source_id"].as_str()) {
                // An attachment not downloaded at the first pass is recorded as omitted, then
                // captured under the same id once it appears.
                let id = if v["type"] == "attachment_omitted" { format!("{id}#omitted") } else { id.to_string() };
                assert!(by_id.insert(id.clone(), v.clone()).is_none(), "{id} exported twice");
            }
            assert!(!line.contains(PERSONAL_ID) && !line.contains("dinner"), "nothing personal archived");
        }
    }
    let get = |id: &str| by_id.get(id).unwrap_or_else(|| panic!("{id} not exported: {:?}", by_id.keys()));
    let time = |v: &serde_json::Value| v["meta"]["source_time_ms"].as_i64().unwrap();
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
    };

    let m1 = get("M1-QUOTE");
    assert_eq!((m1["type"].as_str(), m1["sender"].as_str(), time(m1)), (Some("message"), Some(CLIENT_A), World::at(1)));
    assert_eq!(strings(&m1["recipients"]), vec![BUSINESS_ID]);
    assert_eq!(m1["text"], "Can you quote 100 ACME?");
    let group = get("M3-GROUP");
    assert_eq!(
        (group["sender"].as_str(), strings(&group["recipients"])),
        (Some(CLIENT_B), vec![BUSINESS_ID.to_string(), CLIENT_A.to_string()])
    );
    let photo = get("M4-PHOTO");
    assert_eq!(strings(&photo["recipients"]), vec![CLIENT_A, CLIENT_B]);
    assert_eq!(get("M2-REPLY")["reply_to"], "M1-QUOTE");
    let sms = get("M10-SMS");
    assert_eq!(
        (sms["meta"]["channel"].as_str(), sms["meta"]["line"].as_str(), sms["sender"].as_str()),
        (Some("sms"), Some(BUSINESS_NUMBER), Some(CLIENT_C))
    );

    let like = get("M6-LIKE");
    assert_eq!(
        (like["type"].as_str(), like["reaction"].as_str(), like["removed"].as_bool(), like["actor"].as_str()),
        (Some("reaction"), Some("like"), Some(false), Some(CLIENT_A))
    );
    assert_eq!((like["target_message_id"].as_str(), time(like)), (Some("M2-REPLY"), World::at(6)));
    assert_eq!(get("M7-UNLIKE")["removed"], true);

    assert_eq!(get(expect::EDITED)["text"], expect::EDITED_VERSIONS[0]);
    for (minute, text) in [(9, expect::EDITED_VERSIONS[1]), (10, expect::EDITED_VERSIONS[2])] {
        let e = get(&format!("{}:edit:{}", expect::EDITED, World::at(minute)));
        assert_eq!(
            (e["type"].as_str(), e["new_text"].as_str(), e["editor"].as_str(), time(e)),
            (Some("edit"), Some(text), Some(BUSINESS_ID), World::at(minute))
        );
    }
    let later_edit = get(&format!("M1-QUOTE:edit:{}", World::at(20)));
    assert_eq!(
        (later_edit["new_text"].as_str(), later_edit["editor"].as_str()),
        (Some("Can you quote 200 ACME?"), Some(CLIENT_A))
    );

    let unsent_before = get("M9-UNSENT:unsend");
    assert_eq!(
        (unsent_before["type"].as_str(), unsent_before["actor"].as_str(), time(unsent_before)),
        (Some("unsend"), Some(BUSINESS_ID), World::at(12))
    );
    let unsent_after = get("M3-GROUP:unsend");
    assert_eq!(
        (unsent_after["target_message_id"].as_str(), unsent_after["actor"].as_str(), time(unsent_after)),
        (Some("M3-GROUP"), Some(CLIENT_B), World::at(22))
    );
    assert!(by_id.contains_key(expect::PHOTO_ATTACHMENT) && by_id.contains_key(expect::MISSING_ATTACHMENT), "{:?}", by_id.keys());
    let omitted = get(&format!("{}#omitted", expect::MISSING_ATTACHMENT));
    assert_eq!(omitted["reason"], "file not downloaded yet", "{omitted}");
    receiver.shutdown().await;
}

/// At trace level, the relay's output and everything it stores hold no captured text and
/// nothing of the personal account; its source state keeps positions and times only.
#[test]
fn the_relay_logs_and_stores_no_captured_text() {
    let (_, public) = generate_archive_keypair();
    let tmp = tempfile::tempdir().unwrap();
    let world = World::create(tmp.path());
    world.db.edit(world.db.rowid_of("M1-QUOTE").unwrap(), "Can you quote 200 ACME?", World::at(20));
    let state = tmp.path().join("relay");
    let policy = tmp.path().join("policy.json");
    let tree = sample_policy("https://archive.acme-securities.test", &public, "tok-test", &[]);
    std::fs::write(&policy, serde_json::to_vec(&tree).unwrap()).unwrap();
    let mut args = relay_args(&world, &state, &policy);
    args.extend(["--log-level".into(), "trace".into()]);
    let out = Command::new(BIN).args(&args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("capture: durable"), "trace logging was on");
    let mut haystacks = vec![("stdout".to_string(), out.stdout.clone()), ("stderr".to_string(), out.stderr.clone())];
    for file in walk(&state) {
        haystacks.push((file.display().to_string(), std::fs::read(&file).unwrap()));
    }
    let needles = [
        "quote 100 ACME",
        "quote 200 ACME",
        "12.40 / 12.55",
        "Term sheet attached",
        "Buy 100",
        "dinner",
        "wrong chat",
        PERSONAL_ID,
        "PNG fixture",
    ];
    // Positive control: Messages' own files hold every needle, so the scan would see them.
    let mut source = std::fs::read(&world.db.path).unwrap();
    source.extend(std::fs::read(tmp.path().join("chat.db-wal")).unwrap_or_default());
    source.extend(std::fs::read(world.attachments_root.join("ab/01/ATT-PHOTO/term-sheet.png")).unwrap());
    for needle in needles {
        assert!(source.windows(needle.len()).any(|w| w == needle.as_bytes()), "{needle:?} is not in the fixture");
    }
    for (name, bytes) in &haystacks {
        for needle in needles {
            assert!(!bytes.windows(needle.len()).any(|w| w == needle.as_bytes()), "{needle:?} found in {name}");
        }
    }
}

/// Watching (no --once): the relay captures, writes its status file for the MDM, and stops
/// cleanly (exit 0) on SIGTERM, as launchd stops it.
#[test]
fn watching_relay_writes_its_status_and_stops_on_sigterm() {
    let (_, public) = generate_archive_keypair();
    let tmp = tempfile::tempdir().unwrap();
    let world = World::create(tmp.path());
    let state = tmp.path().join("relay");
    let policy = tmp.path().join("policy.json");
    let tree = sample_policy("https://archive.acme-securities.test", &public, "tok-test", &[]);
    std::fs::write(&policy, serde_json::to_vec(&tree).unwrap()).unwrap();
    let args: Vec<std::ffi::OsString> = relay_args(&world, &state, &policy)
        .into_iter()
        .filter(|a| a != "--once")
        .chain(["--no-upload".into(), "--poll-ms".into(), "20".into()])
        .collect();
    let mut child = Command::new(BIN).args(&args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    // The first pass prints its report as one JSON line.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["captured"], 13);
    let status: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("imessage-relay-status.json")).unwrap()).unwrap();
    assert_eq!(status["available"], true);
    let term = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(term.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "the relay did not stop on SIGTERM");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
}
