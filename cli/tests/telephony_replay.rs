//! `verbatim telephony replay` end to end: provider views → capture → `verbatim upload` to the
//! real receiver over TLS on 127.0.0.1 → export, with every message, edit and deletion where it
//! belongs; bad lines refused by line and field with nothing of them captured; a replay killed
//! and run again captures nothing twice.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::json;
use verbatim_core::Value;
use verbatim_core::synth::sample_policy;

mod support;

use support::{BIN, TestArchive as Archive};
const LINE: &str = "+15555550100";
const PEER: &str = "+15555550111";

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Seconds and milliseconds of "a minute ago".
fn recent() -> (i64, i64) {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64 - 60_000;
    (ms / 1000, ms)
}

/// `verbatim telephony replay` with its three paths.
fn replay_args<'a>(state: &'a Path, policy: &'a Path, snapshots: &'a Path) -> [&'a str; 8] {
    let path = |p: &'a Path| p.to_str().unwrap();
    ["telephony", "replay", "--state", path(state), "--policy", path(policy), "--snapshots", path(snapshots)]
}

fn write_lines(path: &Path, views: &[serde_json::Value]) {
    let lines: Vec<String> = views.iter().map(|v| v.to_string()).collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_views_reach_the_archive_as_messages_edits_and_deletions() {
    let dir = tempfile::tempdir().unwrap();
    let archive = Archive::start(dir.path()).await;
    let policy_file = archive.policy_file(dir.path(), "pixel-1");
    std::fs::write(dir.path().join("photo.jpg"), vec![0xFFu8; 20_000]).unwrap();

    let (s_now, ms_now) = recent();
    let history =
        json!({"sms": [{"_id": 1, "thread_id": 2, "address": PEER, "date": ms_now - 86_400_000, "type": 1, "body": "history"}]});
    let sms_in =
        json!({"_id": 2, "thread_id": 2, "address": PEER, "date": ms_now, "type": 1, "body": "Can we move the call?", "read": 0});
    let rcs = json!({"_id": 23, "thread_id": 3, "date": s_now, "msg_box": 1, "ct_cls": 135, "ct_t": "text/plain",
        "parts": [{"_id": 21, "ct": "text/plain", "text": "Deck attached"}, {"_id": 22, "ct": "image/jpeg", "name": "deck.jpg", "_data": "photo.jpg"}],
        "addr": [{"address": PEER, "type": 137}, {"address": LINE, "type": 151}]});
    let edit = json!({"_id": 24, "thread_id": 3, "date": s_now, "msg_box": 1, "ct_cls": 135, "ct_t": "text/plain",
        "parts": [{"_id": 25, "ct": "text/plain", "text": "Deck attached (v2)"}],
        "addr": [{"address": PEER, "type": 137}, {"address": LINE, "type": 151}]});
    let mut read = sms_in.clone();
    read["read"] = json!(1);
    let views = [
        history.clone(),
        json!({"sms": [history["sms"][0], sms_in], "mms": [rcs]}),
        // A read receipt, then the edit, then the user deletes the SMS.
        json!({"sms": [history["sms"][0], read], "mms": [rcs]}),
        json!({"sms": [history["sms"][0], read], "mms": [rcs, edit]}),
        json!({"sms": [history["sms"][0]], "mms": [rcs, edit]}),
    ];
    let snapshots = dir.path().join("provider.jsonl");
    write_lines(&snapshots, &views);
    let state = dir.path().join("device");
    let args = replay_args(&state, &policy_file, &snapshots);
    let out = run(&args);
    assert!(out.status.success(), "{}", text(&out));
    let printed: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(
        printed,
        [
            // Table by table, each in provider id order.
            "captured message sms:2",
            "captured attachment mms:23/part:22",
            "captured message mms:23",
            "captured edit mms:24",
            "captured unsend sms:2",
        ]
    );
    assert!(text(&out).contains("1 rows of history"), "{}", text(&out));
    // Run again (after a kill, say): it resumes after the last view applied; nothing new.
    let again = run(&args);
    assert!(again.status.success() && again.stdout.is_empty(), "{}", text(&again));
    assert!(text(&again).contains("the first 5 views were applied by an earlier run"), "{}", text(&again));

    let up =
        run(&["upload", "--state", state.to_str().unwrap(), "--policy", policy_file.to_str().unwrap(), "--deadline-ms", "20000"]);
    assert!(up.status.success(), "{}", text(&up));
    let lines = archive.export(dir.path()).await.0;
    let of = |t: &str| lines.iter().filter(|l| l["type"] == t).cloned().collect::<Vec<_>>();
    let messages = of("message");
    assert_eq!(messages.len(), 2, "history is not captured");
    let rcs_msg = messages.iter().find(|m| m["meta"]["source_id"] == "mms:23").unwrap();
    assert_eq!(
        (rcs_msg["meta"]["channel"].as_str(), rcs_msg["sender"].as_str(), rcs_msg["text"].as_str()),
        (Some("rcs"), Some(PEER), Some("Deck attached"))
    );
    let edits = of("edit");
    assert_eq!(
        (edits.len(), edits[0]["target_message_id"].as_str(), edits[0]["new_text"].as_str()),
        (1, Some("mms:23"), Some("Deck attached (v2)"))
    );
    let unsends = of("unsend");
    assert_eq!((unsends.len(), unsends[0]["target_message_id"].as_str()), (1, Some("sms:2")));
    assert_eq!(of("attachment_start").len(), 1);
}

#[test]
fn a_bad_line_is_refused_by_line_and_field_and_changes_nothing_captured() {
    let dir = tempfile::tempdir().unwrap();
    let (public, _) = {
        let (sk, pk) = verbatim_core::seal::generate_archive_keypair();
        (pk, sk)
    };
    let policy =
        sample_policy("https://archive.acme.test", &public, "tok-not-used", &[("business_lines", Value::String(LINE.into()))]);
    let policy_file = dir.path().join("policy.json");
    std::fs::write(&policy_file, serde_json::to_vec(&policy).unwrap()).unwrap();
    let (s_now, ms_now) = recent();
    let good = json!({"sms": [{"_id": 2, "thread_id": 2, "address": PEER, "date": ms_now, "type": 1, "body": "secret words"}]});
    let state = dir.path().join("device");
    let snapshots = dir.path().join("provider.jsonl");
    let replay = || run(&replay_args(&state, &policy_file, &snapshots));
    for (run_index, bad) in [
        (json!({"sms": [{"thread_id": 2, "date": ms_now, "type": 1, "body": "secret words"}]}), "missing field `_id`"),
        (json!({"sms": [{"_id": 5, "thread_id": 2, "date": s_now, "type": 1, "body": "secret words"}]}), "sms _id 5: date must be milliseconds"),
        (json!({"sms": [{"_id": "five", "thread_id": 2, "date": ms_now, "type": 1, "body": "secret words"}]}), "a value of the wrong type"),
        (
            json!({"mms": [{"_id": 9, "thread_id": 3, "date": s_now, "msg_box": 1, "parts": [{"_id": 1, "ct": "image/png", "_data": "missing.png"}], "addr": []}]}),
            "mms _id 9 part _id 1: _data \"missing.png\" cannot be read",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let (bad, needle) = bad;
        write_lines(&snapshots, &[json!({}), good.clone(), bad]);
        let out = replay();
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        // The first run captures line 2; later runs resume at line 3.
        let expected = if run_index == 0 { "captured message sms:2\n" } else { "" };
        assert_eq!(String::from_utf8_lossy(&out.stdout), expected, "run {run_index}");
        assert!(text(&out).contains("line 3: ") && text(&out).contains(needle), "{needle}: {}", text(&out));
        assert!(!text(&out).contains("secret words"), "no content in errors");
    }
    // Line 2 was captured by the first run only; with the bad line gone the replay finishes.
    write_lines(&snapshots, &[json!({}), good]);
    let ok = replay();
    assert!(ok.status.success() && ok.stdout.is_empty(), "already captured: {}", text(&ok));
}

/// This file's policies, on the shared test archive.
impl Archive {
    /// A device policy file whose business line is [`LINE`].
    fn policy_file(&self, dir: &Path, device: &str) -> std::path::PathBuf {
        let token = verbatim_receiver::add_device(&self.data.join("tokens.jsonl"), "acme-telecom", device).unwrap();
        let s = |v: &str| Value::String(v.to_string());
        let policy = sample_policy(
            &self.receiver.url(),
            &self.public,
            token.expose(),
            &[
                ("tenant_id", s("acme-telecom")),
                ("device_id", s(device)),
                ("business_lines", s(LINE)),
                ("archive_ca_pem", s(self.receiver.ca_pem().unwrap())),
            ],
        );
        let path = dir.join("policy.json");
        std::fs::write(&path, serde_json::to_vec(&policy).unwrap()).unwrap();
        path
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_killed_mid_view_and_run_again_captures_every_row_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let archive = Archive::start(dir.path()).await;
    let policy_file = archive.policy_file(dir.path(), "pixel-2");
    let (_, ms_now) = recent();
    // More rows than a pipe holds lines of output: once the test stops reading, the replay
    // blocks on its stdout inside the second view, so the kill lands there whatever the timing.
    const ROWS: i64 = 3000;
    let rows: Vec<serde_json::Value> = (1..=ROWS)
        .map(|i| json!({"_id": i, "thread_id": 1 + i % 7, "address": PEER, "date": ms_now - ROWS + i, "type": 1 + i % 2, "body": format!("row {i}")}))
        .collect();
    let snapshots = dir.path().join("provider.jsonl");
    write_lines(&snapshots, &[json!({}), json!({ "sms": rows })]);
    let state = dir.path().join("device");
    let args = replay_args(&state, &policy_file, &snapshots);

    // Killed (SIGKILL) after its first 60 captures were read: somewhere inside the second view.
    let seen = support::run_and_kill(&args, "captured ", 60).len();
    assert_eq!(seen, 60, "the replay finished before it could be killed");

    let again = run(&args);
    assert!(again.status.success(), "{}", text(&again));
    let finished = std::str::from_utf8(&again.stdout).unwrap().lines().count();
    assert!(finished > 0 && finished <= (ROWS - 60) as usize, "the second run captures what is left: {finished}");

    let up =
        run(&["upload", "--state", state.to_str().unwrap(), "--policy", policy_file.to_str().unwrap(), "--deadline-ms", "30000"]);
    assert!(up.status.success(), "{}", text(&up));
    let lines = archive.export(dir.path()).await.0;
    let mut ids: Vec<String> =
        lines.iter().filter(|l| l["type"] == "message").map(|l| l["meta"]["source_id"].as_str().unwrap().to_string()).collect();
    ids.sort();
    let mut want: Vec<String> = (1..=ROWS).map(|i| format!("sms:{i}")).collect();
    want.sort();
    assert_eq!(ids, want, "every row exactly once");
}
