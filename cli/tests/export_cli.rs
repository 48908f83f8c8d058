//! `verbatim export` as an operator runs it: several private keys (key rotation), the exit
//! status of a complete, a reported and a partial export.

use std::path::Path;
use std::process::Command;

use verbatim_core::chain::{self, StreamId};
use verbatim_core::record::{AgentEvent, Record, RecordBody};
use verbatim_core::seal::EpochKey;
use verbatim_core::wire::{Batch, EpochInfo, WireRecord};
use verbatim_receiver::AcceptedKeys;
use verbatim_receiver::store::{Mode, Outcome, SqliteStore, StoreRules};

const BIN: &str = env!("CARGO_BIN_EXE_verbatim");

/// An archive key pair: public key, key id, private key file.
type Key = ([u8; 32], String, std::path::PathBuf);

/// A key pair made by `verbatim_receiver::keygen` (as `verbatim keygen` does) in `dir`.
fn key(dir: &Path) -> Key {
    use base64::Engine as _;
    let info = verbatim_receiver::keygen(dir).unwrap();
    let public = base64::engine::general_purpose::STANDARD.decode(&info.public_b64).unwrap().try_into().unwrap();
    (public, info.key_id, info.private_path)
}

/// A batch of `counts.len()` epochs, epoch `e` holding `counts[e].1` records sealed to
/// `counts[e].0` (a public key and its id).
fn stream(device: &str, name: &str, counts: &[(&Key, usize)]) -> Batch {
    let id = StreamId { tenant: "acme".into(), device: device.into(), stream: name.into() };
    let mut prev = chain::genesis(&id);
    let (mut epochs, mut records) = (Vec::new(), Vec::new());
    for (e, ((public, key_id, _), n)) in counts.iter().enumerate() {
        let epoch = e as u64 + 1;
        let (mut key, encapsulation) = EpochKey::create(public, &id, epoch).unwrap();
        epochs.push(EpochInfo { epoch, archive_key_id: key_id.clone(), encapsulation });
        for _ in 0..*n {
            let seq = records.len() as u64 + 1;
            let record =
                Record::new(1_700_000_000_000, RecordBody::Agent(AgentEvent::QueueCorrupt { detail: format!("r{seq}") }));
            let ciphertext = key.seal(&id, seq, &prev, &record.encode()).unwrap();
            let link = chain::link(&prev, seq, epoch, &ciphertext);
            records.push(WireRecord { seq, epoch, link, ciphertext });
            prev = link;
        }
    }
    Batch { stream: id, epochs, records }
}

fn store(data: &Path, batches: Vec<Batch>) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let ids: Vec<&str> = batches.iter().flat_map(|b| b.epochs.iter().map(|e| e.archive_key_id.as_str())).collect();
    let store = SqliteStore::open(data, StoreRules::new(AcceptedKeys::from_key_ids(ids))).unwrap();
    for b in batches {
        assert!(matches!(rt.block_on(store.submit(b, Mode::Commit)).unwrap(), Outcome::Stored(_)));
    }
    store.close();
}

fn export(data: &Path, keys: &[&Path], out: &Path) -> (Option<i32>, String) {
    let mut cmd = Command::new(BIN);
    cmd.arg("export").arg("--data").arg(data).arg("--out").arg(out);
    for k in keys {
        cmd.arg("--key").arg(k);
    }
    let o = cmd.output().unwrap();
    (o.status.code(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

#[test]
fn export_takes_several_keys_and_says_by_its_status_how_complete_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let old = key(&dir.path().join("old"));
    let new = key(&dir.path().join("new"));
    let data = dir.path().join("data");
    store(&data, vec![stream("dev-1", "s-1", &[(&old, 4), (&new, 358)]), stream("dev-2", "s-2", &[(&new, 94)])]);

    // Every key: everything opens.
    let (code, text) = export(&data, &[&old.2, &new.2], &dir.path().join("all"));
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("456 records") && text.contains("0 unreadable, 0 erased; 0 error(s)"), "{text}");

    // The old key only: each epoch of the new one is one error, the rest is exported.
    let (code, text) = export(&data, &[&old.2], &dir.path().join("old-only"));
    assert_eq!(code, Some(1), "{text}");
    let missing = format!("no private key for archive key id {}", new.1);
    assert_eq!(text.matches(&missing).count(), 2, "once per epoch, not per record:\n{text}");
    assert!(text.contains("(358 records unreadable)") && text.contains("(94 records unreadable)"), "{text}");
    assert!(text.contains("452 unreadable, 0 erased; 2 error(s)"), "{text}");

    // A stream that cannot be written: the others are exported, the status says partial.
    let out = dir.path().join("partial");
    std::fs::create_dir_all(out.join("acme/dev-1")).unwrap();
    std::fs::write(out.join("acme/dev-1/s-1"), b"in the way").unwrap();
    let (code, text) = export(&data, &[&old.2, &new.2], &out);
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("export INCOMPLETE: 1 stream(s) failed:\n    acme/dev-1/s-1"), "{text}");
    assert_eq!(std::fs::read_to_string(out.join("acme/dev-2/s-2.jsonl")).unwrap().lines().count(), 94);

    // A key file that is missing: the export does not run.
    let (code, text) = export(&data, &[&old.2, &dir.path().join("absent.key")], &dir.path().join("none"));
    assert_eq!(code, Some(2), "{text}");
    let (code, _) = export(&data, &[], &dir.path().join("none"));
    assert_eq!(code, Some(2), "--key is required");
}
