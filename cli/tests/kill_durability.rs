//! Durability across `kill -9`: every event `verbatim simulate` acknowledged (its `acked` line)
//! before being killed is in the queue after a restart, exactly once, in one verified chain,
//! and every restart starts a new epoch and records that the previous run crashed.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::path::Path;

use verbatim_core::archive::Opener;
use verbatim_core::chain;
use verbatim_core::record::{AgentEvent, RecordBody};
use verbatim_core::seal::generate_archive_keypair;
use verbatim_core::synth::{Rng, sample_policy};
use verbatim_core::{Agent, AgentOptions};

mod support;

fn write_policy(dir: &Path, public: &[u8; 32]) -> std::path::PathBuf {
    let tree = sample_policy("https://archive.acme-securities.test", public, "tok-test", &[]);
    let path = dir.join("policy.json");
    std::fs::write(&path, serde_json::to_vec(&tree).unwrap()).unwrap();
    path
}

#[test]
fn acknowledged_captures_survive_kill_9_at_many_points() {
    let (secret, public) = generate_archive_keypair();
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("device");
    let policy = write_policy(tmp.path(), &public);
    let mut rng = Rng::new(20261121);
    let mut acked: Vec<String> = Vec::new();
    let kill_points = 12;
    let mut runs_that_worked = 0;
    for i in 0..kill_points {
        // Kill points spread from "right after start" to a few hundred events in.
        let kill_after = rng.below(if i % 3 == 0 { 3 } else { 120 }) as usize;
        let seed = (1000 + i).to_string();
        let args = [OsStr::new("simulate"), OsStr::new("--state"), state.as_os_str(), OsStr::new("--policy"), policy.as_os_str()];
        let args: Vec<&OsStr> = args.into_iter().chain(["--events", "100000", "--seed", &seed].map(OsStr::new)).collect();
        let run = support::run_and_kill(&args, "acked ", kill_after);
        runs_that_worked += usize::from(!run.is_empty());
        acked.extend(run);
    }
    assert!(acked.len() > 100, "the kill points should cover real work, got {}", acked.len());

    // Restart as the app would, then read everything back with the archive key.
    let agent = Agent::open(&state, AgentOptions::default()).unwrap();
    let stream = agent.stream().unwrap();
    let mut opener = Opener::new(secret);
    let (mut seq, mut link) = (0, chain::genesis(&stream));
    let mut ids = Vec::new();
    let mut crashes = 0;
    let mut epochs = HashSet::new();
    while let Some(batch) = agent.queue().read_batch_after(seq, link, 1 << 20).unwrap() {
        for (s, record) in opener.open_batch(&batch, seq, link).expect("chain verifies and every record opens") {
            match record.body {
                RecordBody::Message(m) => ids.push(m.meta.source_id),
                RecordBody::Edit(e) => ids.push(e.meta.source_id),
                RecordBody::Unsend(u) => ids.push(u.meta.source_id),
                RecordBody::Reaction(r) => ids.push(r.meta.source_id),
                RecordBody::Call(c) => ids.push(c.meta.source_id),
                // A call's recording carries the call's id; the call itself is counted.
                RecordBody::AttachmentStart(h) if !h.attachment_id.starts_with("recording:") => ids.push(h.meta.source_id),
                RecordBody::AttachmentOmitted { header, .. } if !header.attachment_id.starts_with("recording:") => {
                    ids.push(header.meta.source_id)
                }
                RecordBody::Agent(AgentEvent::Started { after_crash: true, .. }) => crashes += 1,
                _ => {}
            }
            // open_batch verified the chain is contiguous; it returns what was captured, not
            // the key records between.
            assert!(s > seq, "in order");
            seq = s;
        }
        seq = batch.records.last().unwrap().seq;
        link = batch.records.last().unwrap().link;
        epochs.extend(batch.records.iter().map(|r| r.epoch));
    }
    assert_eq!(seq, agent.status().last_seq);
    let held: HashSet<&String> = ids.iter().collect();
    assert_eq!(held.len(), ids.len(), "no event stored twice");
    for id in &acked {
        assert!(held.contains(id), "acknowledged event {id} lost after kill -9");
    }
    // A run killed before it opened its store left nothing to report; every other one is recorded.
    assert!(
        crashes >= runs_that_worked && crashes <= kill_points as usize,
        "each killed run is recorded at the next start: {crashes} crashes for {runs_that_worked} working runs"
    );
    assert!(epochs.len() > runs_that_worked, "every start opens a new epoch: {} epochs", epochs.len());
}
