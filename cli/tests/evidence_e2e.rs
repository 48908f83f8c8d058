//! Compliance evidence end to end against the real receiver over TLS on 127.0.0.1: outages,
//! heartbeats and unenroll reach the archive; verify flags a silent device; the operator
//! commands `verbatim upload` and `verbatim unenroll` work on a simulated device.

use std::process::Command;
use std::time::Duration;

use base64::Engine;
use verbatim_core::synth::sample_policy;
use verbatim_core::upload::{NetworkState, StopReason, UploadOptions};
use verbatim_core::{Agent, AgentOptions, Value};
use verbatim_receiver::verify::{VerifyOptions, verify_with};
use verbatim_receiver::{AcceptedKeys, Receiver, ReceiverConfig, RunningReceiver};

mod support;

use support::{BIN, walk};

struct Archive {
    dir: tempfile::TempDir,
    receiver: RunningReceiver,
    public: [u8; 32],
    secret: verbatim_core::seal::ArchiveSecretKey,
}

async fn archive() -> Archive {
    let dir = tempfile::tempdir().unwrap();
    let key = verbatim_receiver::keygen(&dir.path().join("key")).unwrap();
    let secret = verbatim_receiver::load_secret(&key.private_path).unwrap();
    let public: [u8; 32] = base64::engine::general_purpose::STANDARD.decode(&key.public_b64).unwrap().try_into().unwrap();
    let receiver =
        Receiver::start(ReceiverConfig::local_self_signed(dir.path().join("data"), AcceptedKeys::from_public_keys([&public])))
            .await
            .unwrap();
    Archive { dir, receiver, public, secret }
}

impl Archive {
    fn policy(&self, device: &str) -> Value {
        let token =
            verbatim_receiver::add_device(&self.dir.path().join("data").join("tokens.jsonl"), "acme-securities", device).unwrap();
        let s = |v: &str| Value::String(v.to_string());
        sample_policy(
            &self.receiver.url(),
            &self.public,
            token.expose(),
            &[
                ("tenant_id", s("acme-securities")),
                ("device_id", s(device)),
                ("archive_ca_pem", s(self.receiver.ca_pem().unwrap())),
            ],
        )
    }

    /// Every agent event exported, as (event name, JSON line).
    fn exported_agent_events(&self) -> Vec<serde_json::Value> {
        let out = self.dir.path().join("export");
        let summary = verbatim_receiver::export(&self.dir.path().join("data"), &self.secret, &out).unwrap();
        assert!(summary.ok(), "{}", summary.to_text());
        let mut events = Vec::new();
        for file in walk(&out) {
            if file.extension().is_some_and(|e| e == "jsonl") {
                for line in std::fs::read_to_string(&file).unwrap().lines() {
                    let v: serde_json::Value = serde_json::from_str(line).unwrap();
                    if v["type"] == "agent" {
                        events.push(v);
                    }
                }
            }
        }
        events
    }
}

fn message(n: u32) -> verbatim_core::Event {
    use verbatim_core::model::*;
    Event::Message(Message {
        meta: EventMeta {
            channel: Channel::Sms,
            line: verbatim_core::synth::BUSINESS_LINE.into(),
            conversation_id: "c".into(),
            source_id: format!("m{n}"),
            source_time_ms: 1_767_225_600_000,
        },
        direction: Direction::Outbound,
        sender: verbatim_core::synth::BUSINESS_LINE.into(),
        recipients: vec!["+442079460001".into()],
        text: "hi".into(),
        attachment_ids: vec![],
        reply_to: None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outages_heartbeats_and_unenroll_reach_the_archive_then_the_store_is_shredded() {
    let a = archive().await;
    let device = tempfile::tempdir().unwrap();
    let agent = Agent::open(device.path(), AgentOptions::default()).unwrap();
    // Not configured at first: a refused capture, then the policy arrives.
    assert!(agent.capture(message(0)).await.is_err());
    agent.apply_policy(&a.policy("dev-evidence")).await.unwrap();
    for n in 1..=5 {
        agent.capture(message(n)).await.unwrap();
    }
    let last = agent.status().last_seq;
    let report = agent.unenroll(UploadOptions::new(Duration::from_secs(20), NetworkState::Unmetered), false).await.unwrap();
    assert!(report.shredded && !report.forced && report.unsent_records == 0, "{report:?}");
    assert_eq!(report.upload.as_ref().unwrap().stopped, StopReason::Done);
    for name in verbatim_core::queue::STORE_FILES {
        assert!(!device.path().join(name).exists(), "{name} left after unenroll");
    }
    let v = verbatim_receiver::verify(&a.dir.path().join("data")).unwrap();
    assert!(v.ok(), "{}", v.to_text());
    assert!(v.streams[0].contiguous_through > last, "the final unenroll event was archived too");

    let events = a.exported_agent_events();
    let names: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert!(names.contains(&"capture_unavailable"), "{names:?}");
    let outage = events.iter().find(|e| e["event"] == "capture_unavailable").unwrap();
    assert_eq!(outage["cause"], "not_configured");
    assert_eq!(outage["refused"], 1);
    assert_eq!(names.last(), Some(&"unenrolling"));

    // A device silent for longer than its heartbeat interval allows is flagged; now, it is not.
    let data = a.dir.path().join("data");
    let now = verify_with(&data, &VerifyOptions { silent_after_hours: Some(36), now_ms: None }).unwrap();
    assert!(now.silent_devices.is_empty());
    let later = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64 + 48 * 3_600_000;
    let then = verify_with(&data, &VerifyOptions { silent_after_hours: Some(36), now_ms: Some(later) }).unwrap();
    assert_eq!(then.silent_devices.len(), 1);
    assert_eq!(then.silent_devices[0].device, "dev-evidence");
    assert!(then.silent_devices[0].silent_hours >= 47);
    a.receiver.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_upload_and_unenroll_a_simulated_device() {
    let a = archive().await;
    let work = tempfile::tempdir().unwrap();
    let policy = work.path().join("policy.json");
    std::fs::write(&policy, serde_json::to_vec(&a.policy("dev-cli")).unwrap()).unwrap();
    let state = work.path().join("device");
    let run = |args: &[&str]| Command::new(BIN).args(args).output().unwrap();
    let state_s = state.to_str().unwrap();
    let sim = run(&["simulate", "--state", state_s, "--policy", policy.to_str().unwrap(), "--events", "40", "--seed", "3"]);
    assert!(sim.status.success(), "{}", String::from_utf8_lossy(&sim.stderr));

    let policy_s = policy.to_str().unwrap();
    let offline = run(&["upload", "--state", state_s, "--policy", policy_s, "--network", "offline"]);
    assert_eq!(offline.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&offline.stdout).unwrap();
    assert_eq!(report["stopped"], "offline");

    let up = run(&["upload", "--state", state_s, "--policy", policy_s, "--deadline-ms", "20000"]);
    assert!(up.status.success(), "{}{}", String::from_utf8_lossy(&up.stdout), String::from_utf8_lossy(&up.stderr));
    let report: serde_json::Value = serde_json::from_slice(&up.stdout).unwrap();
    assert_eq!(report["stopped"], "done");
    assert!(report["records_sent"].as_u64().unwrap() > 30);

    let un = run(&["unenroll", "--state", state_s, "--policy", policy_s]);
    assert!(un.status.success(), "{}{}", String::from_utf8_lossy(&un.stdout), String::from_utf8_lossy(&un.stderr));
    let report: serde_json::Value = serde_json::from_slice(&un.stdout).unwrap();
    assert_eq!(report["shredded"], true);
    assert!(!state.join(verbatim_core::queue::DB_FILE).exists());
    let again = run(&["upload", "--state", state_s, "--policy", policy_s]);
    assert_eq!(again.status.code(), Some(2), "nothing left to upload from");
    a.receiver.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawn_policy_stops_capture_while_the_queue_still_reaches_the_archive() {
    let a = archive().await;
    let device = tempfile::tempdir().unwrap();
    let agent = Agent::open(device.path(), AgentOptions::default()).unwrap();
    agent.apply_policy(&a.policy("dev-withdrawn")).await.unwrap();
    for n in 1..=4 {
        agent.capture(message(n)).await.unwrap();
    }
    // The MDM removes the configuration with four captures (and the agent's events) queued.
    let queued = agent.status().queue_records;
    assert!(agent.withdraw_policy().await.unwrap());
    assert_eq!(agent.capture(message(5)).await.unwrap_err().kind, verbatim_core::ErrorKind::NotConfigured);
    let report = agent.upload(UploadOptions::new(Duration::from_secs(20), NetworkState::Unmetered)).await;
    assert_eq!(report.stopped, StopReason::Done, "{report:?}");
    assert_eq!(agent.status().queue_records, 0, "everything queued was acknowledged");
    let v = verbatim_receiver::verify(&a.dir.path().join("data")).unwrap();
    assert!(v.ok(), "{}", v.to_text());
    let events = a.exported_agent_events();
    let withdrawn = events.iter().find(|e| e["event"] == "policy_withdrawn").expect("policy_withdrawn archived");
    assert_eq!(withdrawn["pending_records"], queued);
    let messages = walk(&a.dir.path().join("export"))
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "jsonl"))
        .flat_map(|f| std::fs::read_to_string(f).unwrap().lines().map(str::to_owned).collect::<Vec<_>>())
        .filter(|l| l.contains("\"type\":\"message\""))
        .count();
    assert_eq!(messages, 4);
    a.receiver.shutdown().await;
}
