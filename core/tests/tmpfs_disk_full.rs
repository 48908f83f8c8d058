//! A real full disk on the device: the agent's store on a 2 MB tmpfs (not SQLite's page cap,
//! which `evidence.rs` uses). The file system itself answers ENOSPC: capture fails clearly
//! (`DiskFull`), everything stored stays intact and readable, and once space returns capture
//! works again and the outage is evidenced. Needs permission to mount (root or CAP_SYS_ADMIN);
//! where that is refused the test says so and passes without running.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;
use verbatim_core::archive::Opener;
use verbatim_core::chain;
use verbatim_core::model::*;
use verbatim_core::record::{AgentEvent, RecordBody};
use verbatim_core::synth::BUSINESS_LINE;
use verbatim_core::{Agent, AgentOptions, ErrorKind};

/// A tmpfs mounted for the test; unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(at).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "verbatim-test"])
            .arg(at)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(&self.0).status().is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

fn attachment(n: u32, file: &Path) -> Event {
    Event::Attachment(Attachment {
        meta: EventMeta {
            channel: Channel::Sms,
            line: BUSINESS_LINE.into(),
            conversation_id: "conv-disk".into(),
            source_id: format!("att-{n}"),
            source_time_ms: 1_767_225_600_000 + n as i64,
        },
        message_id: None,
        direction: Direction::Outbound,
        sender: BUSINESS_LINE.into(),
        file_name: "scan.bin".into(),
        mime_type: "application/octet-stream".into(),
        path: file.to_path_buf(),
    })
}

/// Every pending record, chain-verified and opened with the archive key.
fn open_everything(agent: &Agent, s: &Setup) -> Vec<verbatim_core::record::Record> {
    let snap = agent.snapshot();
    let (mut seq, mut link) = (snap.acked_through, snap.acked_link);
    if seq == 0 {
        link = chain::genesis(&agent.stream().unwrap());
    }
    let mut opener = Opener::new(s.secret_key());
    let mut out = Vec::new();
    while let Some(batch) = agent.queue().read_batch_after(seq, link, 1 << 20).unwrap() {
        out.extend(opener.open_batch(&batch, seq, link).expect("chain verifies, every record opens").into_iter().map(|(_, r)| r));
        seq = batch.records.last().unwrap().seq;
        link = batch.records.last().unwrap().link;
    }
    out
}

#[tokio::test]
async fn a_real_2mb_file_system_fills_capture_fails_clearly_nothing_is_damaged_and_it_recovers() {
    let s = Setup::new();
    let mount_at = s.files.path().join("phone-storage");
    let fs = match Tmpfs::mount(&mount_at, "2m") {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!("SKIPPED: cannot mount a 2 MB tmpfs here (needs root or CAP_SYS_ADMIN): {why}");
            return;
        }
    };
    // Other apps hold some space; deleting their files later is "space returns".
    let ballast = mount_at.join("other-app-cache.bin");
    std::fs::write(&ballast, vec![7u8; 500 * 1024]).unwrap();
    let more_ballast = mount_at.join("other-app-media.bin");
    std::fs::write(&more_ballast, vec![8u8; 600 * 1024]).unwrap();
    let file = s.files.path().join("scan.bin");
    std::fs::write(&file, (0..120 * 1024u32).map(|i| (i * 7919 % 251) as u8).collect::<Vec<_>>()).unwrap();

    let store = mount_at.join("agent");
    let agent = Agent::open(&store, AgentOptions::default()).unwrap();
    agent.apply_policy(&s.policy(&[])).await.unwrap();
    let mut stored = 0u32;
    let err = loop {
        match agent.capture(attachment(stored, &file)).await {
            Ok(_) => stored += 1,
            Err(e) => break e,
        }
        assert!(stored < 20, "a 2 MB file system cannot take 20 attachments of 120 KB");
    };
    assert_eq!(err.kind, ErrorKind::DiskFull, "the file system's ENOSPC is reported as a full disk: {err}");
    assert!(err.detail.contains("full"), "{err}");
    assert!(stored >= 1, "some attachments fit");
    assert_eq!(agent.status().unavailable, ["disk_full"]);
    // A second try fails the same way, and nothing stored was damaged.
    assert_eq!(agent.capture(attachment(100, &file)).await.unwrap_err().kind, ErrorKind::DiskFull);
    let records = open_everything(&agent, &s);
    let ends = records.iter().filter(|r| matches!(r.body, RecordBody::AttachmentEnd { .. })).count();
    assert_eq!(ends, stored as usize, "every acknowledged attachment is intact");

    // Space returns: capture works again, and the outage is evidenced in the chain.
    std::fs::remove_file(&ballast).unwrap();
    agent.capture(attachment(200, &file)).await.expect("capture resumes once space returns");
    assert!(agent.status().unavailable.is_empty());
    let records = open_everything(&agent, &s);
    let windows: Vec<(String, u64)> = records
        .iter()
        .filter_map(|r| match &r.body {
            RecordBody::Agent(AgentEvent::CaptureUnavailable { cause, refused, .. }) if cause != "not_configured" => {
                Some((cause.clone(), *refused))
            }
            _ => None,
        })
        .collect();
    assert_eq!(windows, [("disk_full".to_string(), 2)]);
    agent.close().await.unwrap();
    drop(agent);

    // Reopening needs room for SQLite to checkpoint its log into the database file (a second
    // copy of the log's pages). On a disk this full the checkpoint takes what is free and
    // fails, and the open fails clearly (DiskFull), losing nothing; once more space returns
    // the store opens with everything in it.
    let agent = match Agent::open(&store, AgentOptions::default()) {
        Ok(agent) => agent,
        Err(e) => {
            eprintln!("reopened on the nearly full disk: {e} (as expected); freeing more space");
            assert_eq!(e.kind, ErrorKind::DiskFull, "{e}");
            std::fs::remove_file(&more_ballast).unwrap();
            Agent::open(&store, AgentOptions::default()).expect("the store opens once space returns")
        }
    };
    assert_eq!(
        open_everything(&agent, &s).iter().filter(|r| matches!(r.body, RecordBody::AttachmentEnd { .. })).count(),
        stored as usize + 1
    );
    agent.close().await.unwrap();
    drop(agent);
    drop(fs);
}
