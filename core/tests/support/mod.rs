//! Test support: an agent with a fresh archive key, and an archive-side reader that verifies
//! the queue's chain with its own code (independent of `verbatim_core::chain`).
#![allow(dead_code)]

use std::path::Path;

use rusqlite::Connection;
use sha2::{Digest, Sha256};
use verbatim_core::archive::Opener;
use verbatim_core::chain::StreamId;
use verbatim_core::policy::Value;
use verbatim_core::record::Record;
use verbatim_core::seal::{ArchiveSecretKey, generate_archive_keypair};
use verbatim_core::wire::{EpochInfo, WireRecord};
use verbatim_core::{Agent, AgentOptions};

pub const TOKEN: &str = "tok-SECRET-marker-42";

pub struct Setup {
    pub dir: tempfile::TempDir,
    pub files: tempfile::TempDir,
    pub secret: [u8; 32],
    pub public: [u8; 32],
}

impl Setup {
    pub fn new() -> Setup {
        let (sk, pk) = generate_archive_keypair();
        Setup { dir: tempfile::tempdir().unwrap(), files: tempfile::tempdir().unwrap(), secret: *sk.as_bytes(), public: pk }
    }

    pub fn policy(&self, overrides: &[(&str, Value)]) -> Value {
        verbatim_core::synth::sample_policy("https://archive.acme-securities.test", &self.public, TOKEN, overrides)
    }

    pub fn open(&self) -> Agent {
        Agent::open(self.dir.path(), AgentOptions::default()).unwrap()
    }

    pub fn open_with(&self, options: AgentOptions) -> Agent {
        Agent::open(self.dir.path(), options).unwrap()
    }

    pub fn secret_key(&self) -> ArchiveSecretKey {
        ArchiveSecretKey::from_bytes(&self.secret).unwrap()
    }

    pub fn db(&self) -> Connection {
        Connection::open(self.dir.path().join(verbatim_core::queue::DB_FILE)).unwrap()
    }
}

/// A stored row, read straight from SQLite.
#[derive(Debug, Clone)]
pub struct StoredRow {
    pub seq: u64,
    pub epoch: u64,
    pub link: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

pub fn stored_rows(db: &Connection) -> Vec<StoredRow> {
    let mut stmt = db.prepare("SELECT seq, epoch, link, ciphertext FROM records ORDER BY seq").unwrap();
    stmt.query_map([], |r| {
        Ok(StoredRow {
            seq: r.get::<_, i64>(0)? as u64,
            epoch: r.get::<_, i64>(1)? as u64,
            link: r.get(2)?,
            ciphertext: r.get(3)?,
        })
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

pub fn stream_of(db: &Connection) -> StreamId {
    db.query_row("SELECT tenant, device, stream FROM chain_state", [], |r| {
        Ok(StreamId { tenant: r.get(0)?, device: r.get(1)?, stream: r.get(2)? })
    })
    .unwrap()
}

pub fn acked_head(db: &Connection) -> (u64, Vec<u8>) {
    db.query_row("SELECT acked_through, acked_link FROM chain_state", [], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))
        .unwrap()
}

pub fn epochs(db: &Connection) -> Vec<EpochInfo> {
    let mut stmt = db.prepare("SELECT epoch, archive_key_id, encapsulation FROM epochs ORDER BY epoch").unwrap();
    stmt.query_map([], |r| {
        Ok(EpochInfo { epoch: r.get::<_, i64>(0)? as u64, archive_key_id: r.get(1)?, encapsulation: r.get(2)? })
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn lp(h: &mut Sha256, s: &str) {
    h.update((s.len() as u64).to_be_bytes());
    h.update(s.as_bytes());
}

/// The chain rules, written again from the design (not calling the crate's chain module).
pub fn independent_genesis(s: &StreamId) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"verbatim/chain/v1/genesis");
    lp(&mut h, &s.tenant);
    lp(&mut h, &s.device);
    lp(&mut h, &s.stream);
    h.finalize().into()
}

pub fn independent_link(prev: &[u8], seq: u64, epoch: u64, ct: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"verbatim/chain/v1/link");
    h.update(prev);
    h.update(seq.to_be_bytes());
    h.update(epoch.to_be_bytes());
    h.update((ct.len() as u64).to_be_bytes());
    h.update(ct);
    h.finalize().into()
}

/// Verifies the stored rows: contiguous after the acknowledged head, each link recomputed.
pub fn verify_stored_chain(db: &Connection) -> Result<u64, String> {
    let (mut seq, mut link) = acked_head(db);
    if seq == 0 {
        link = independent_genesis(&stream_of(db)).to_vec();
    }
    for row in stored_rows(db) {
        if row.seq != seq + 1 {
            return Err(format!("gap: expected {}, found {}", seq + 1, row.seq));
        }
        let computed = independent_link(&link, row.seq, row.epoch, &row.ciphertext);
        if computed.as_slice() != row.link.as_slice() {
            return Err(format!("bad link at {}", row.seq));
        }
        seq = row.seq;
        link = row.link;
    }
    Ok(seq)
}

/// Opens every pending record with the archive key, in order: what was captured and the
/// agent's events (key records, which hold no content, are left out).
pub fn open_all(setup: &Setup) -> Vec<(u64, Record)> {
    let db = setup.db();
    verify_stored_chain(&db).expect("stored chain verifies");
    let stream = stream_of(&db);
    let epochs = epochs(&db);
    let (acked, acked_link) = acked_head(&db);
    let mut prev: [u8; 32] = if acked == 0 { independent_genesis(&stream) } else { acked_link.try_into().unwrap() };
    let mut opener = Opener::new(setup.secret_key());
    stored_rows(&db)
        .into_iter()
        .filter_map(|row| {
            let epoch = epochs.iter().find(|e| e.epoch == row.epoch).expect("epoch stored");
            let wire = WireRecord {
                seq: row.seq,
                epoch: row.epoch,
                link: row.link.clone().try_into().unwrap(),
                ciphertext: row.ciphertext,
            };
            let opened = opener.open_any(&stream, epoch, &wire, &prev).expect("record opens");
            prev = wire.link;
            match opened {
                verbatim_core::archive::OpenedRecord::Record { record, .. } => Some((row.seq, *record)),
                verbatim_core::archive::OpenedRecord::KeyRecord { .. } => None,
            }
        })
        .collect()
}

/// Every file under `dir`, with its bytes.
pub fn all_files(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(all_files(&path));
        } else {
            out.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    out
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
