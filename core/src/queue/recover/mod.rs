//! Damaged stores: detecting damage before the queue opens, and rebuilding a store from what
//! can still be read without losing any intact record or hiding any loss.
//!
//! **Detection** ([`check`], run by every open). Three checks, before anything writes:
//! - the write-ahead log is scanned frame by frame (SQLite's own format: salts and cumulative
//!   checksums). A torn tail — frames of a transaction that never committed, what a kill or a
//!   power cut leaves — is normal, and SQLite drops it. But when a frame in the middle is
//!   damaged, SQLite silently stops reading there and every transaction committed after it
//!   vanishes, acknowledged captures included. Committed frames of the current log found
//!   *after* a damaged one are that signature: the open is refused as [`ErrorKind::Corrupt`].
//!   (Rule: two or more commits after the damage. A single one could be the last transaction
//!   of a power cut, torn before its sync returned, so never acknowledged.)
//! - the database file's header and size (a truncated file), when the log does not hold the
//!   missing pages;
//! - `PRAGMA quick_check`: SQLite's structural check of every page, for stores up to
//!   [`FULL_CHECK_MAX_BYTES`] (milliseconds for the few megabytes a queue usually holds);
//!   bigger stores get the pages opening reads checked, so that a large queue still opens in
//!   milliseconds (its records are checked anyway as they are read for upload).
//!
//! Every refusal names the damaged file and says what to do. Record contents are checked as
//! they are read for upload (each chain link against its predecessor): a damaged record is
//! reported as a `QueueCorrupt` agent event and never sent or skipped.
//!
//! **Recovery** ([`recover`], `verbatim recover --state DIR`). The damaged files are moved
//! aside into `damaged-<ms>/` (never deleted), and a new store is built from a scratch copy:
//! every record whose row SQLite can still return is read one sequence number at a time
//! (a damaged page costs the rows on it, not the scan), and checked against the chain. Epochs,
//! the policy, the device id and the evidence state are copied.
//!
//! - Nothing lost (every pending record readable and verified, the head intact): the store is
//!   rebuilt with the *same* stream, records and links unchanged, and continues; an agent
//!   event (`QueueCorrupt`, detail `{"kind":"queue_recovered",...}`) records the rebuild.
//! - Records lost: the rebuilt store starts a **new stream**. The old one cannot continue:
//!   the archive refuses a gap (409, and it must — a gap is how it proves completeness), and
//!   reusing the lost sequence numbers for new content would fork the chain. Nothing is
//!   re-sealed (the device cannot read what it sealed): the new stream's first records are
//!   the recovery event, naming the old stream and the sequence ranges carried, lost, and
//!   carried but unopenable, followed by the intact records themselves — their original
//!   ciphertexts, links and epoch encapsulations, byte for byte — in one attachment, a
//!   *salvage container* ([`read_salvage`]). The archive verifies them against their own
//!   chain and opens them with its key. The archive sees the old stream end where its
//!   uploads ended, and the new stream say exactly why and what became of the rest.
//!
//! A record whose predecessor is lost cannot be opened (its seal binds the predecessor's
//! link); it is carried anyway (its successors verify against it) and listed as unopenable.
//!
//! Files: `detect.rs` (the checks every open runs), `salvage.rs` (reading what a damaged store
//! still holds), `container.rs` (the salvage container format), `rebuild.rs` (the new store).

mod container;
mod detect;
mod rebuild;
mod salvage;

use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::DB_FILE;
use crate::chain::StreamId;
use crate::error::{Error, ErrorKind, Result};
use crate::record::{AgentEvent, Record, RecordBody};

pub use container::{SalvageRun, read_salvage};
pub(crate) use detect::preflight;
pub use detect::{FULL_CHECK_MAX_BYTES, check};

/// First bytes of a salvage container.
pub const SALVAGE_MAGIC: &[u8] = b"verbatim-salvage/v1\n";
/// MIME type of the salvage container attachment.
pub const SALVAGE_MIME: &str = "application/vnd.verbatim.salvage.v1";
/// Conversation id the salvage container is filed under in the new stream.
pub const RECOVERY_CONVERSATION: &str = "verbatim-recovery";
/// Bytes of records per batch inside a salvage container.
const SALVAGE_BATCH_BYTES: usize = 4 * 1024 * 1024;

fn wal_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push("-wal");
    PathBuf::from(p)
}

fn shm_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push("-shm");
    PathBuf::from(p)
}

// ---------------------------------------------------------------------------------------------
// Recovery
// ---------------------------------------------------------------------------------------------

/// An inclusive range of sequence numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SeqRange {
    pub first: u64,
    pub last: u64,
}

fn ranges(seqs: &[u64]) -> Vec<SeqRange> {
    let mut out: Vec<SeqRange> = Vec::new();
    for &s in seqs {
        match out.last_mut() {
            Some(r) if r.last + 1 == s => r.last = s,
            _ => out.push(SeqRange { first: s, last: s }),
        }
    }
    out
}

/// What [`recover`] found and did.
#[derive(Debug, Clone, Serialize)]
pub struct RecoveryReport {
    /// The store was moved aside and rebuilt (false: no damage found, nothing changed).
    pub rebuilt: bool,
    /// Where the damaged files are kept (never deleted).
    pub damaged_store: Option<PathBuf>,
    /// The damage found (the log scan, SQLite's integrity check, unreadable rows).
    pub damage: Vec<String>,
    /// The stream the damaged store wrote (when its head was readable).
    pub old_stream: Option<StreamId>,
    /// True when the rebuilt store starts a new stream (records were lost); false when the
    /// same stream continues.
    pub new_stream: bool,
    pub acked_through: Option<u64>,
    /// The last sequence number the damaged store recorded in its head.
    pub last_seq: Option<u64>,
    /// Pending records kept: in the same stream, or carried in the salvage container.
    pub recovered: Vec<SeqRange>,
    /// Of those, records the archive cannot open (the predecessor whose link their seal binds
    /// is lost); carried so that what follows them verifies.
    pub unopenable: Vec<SeqRange>,
    /// Records lost: unreadable, missing, failing the chain, or of an epoch that is lost.
    pub lost: Vec<SeqRange>,
    /// Records after this sequence number may have been written and lost without a trace (the
    /// head or the log was damaged).
    pub maybe_lost_after: Option<u64>,
    /// Attachment id of the salvage container in the new stream.
    pub salvage_attachment: Option<String>,
    pub salvage_bytes: u64,
    pub epochs_recovered: u64,
    pub policy_recovered: bool,
    pub deferred_events_recovered: u64,
}

/// Options for [`recover_with`].
#[derive(Default)]
pub struct RecoverOptions {
    /// The policy tree to use when the damaged store's own is unreadable (or to replace it).
    pub policy: Option<crate::policy::Value>,
    /// Rebuild even when no damage is found.
    pub force: bool,
}

/// Recovers the store in `dir` (see the module documentation). No agent may have it open.
pub fn recover(dir: &Path) -> Result<RecoveryReport> {
    recover_with(dir, RecoverOptions::default())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// [`recover`] with options.
pub fn recover_with(dir: &Path, options: RecoverOptions) -> Result<RecoveryReport> {
    let db = dir.join(DB_FILE);
    if !db.exists() {
        return Err(Error::new(ErrorKind::Storage, format!("no agent store in {}", dir.display())));
    }
    let lock = crate::queue::lock_dir(dir)?;
    let now = now_ms();
    let aside = dir.join(format!("damaged-{now}"));
    let scratch = dir.join(format!(".recover-scratch-{now}"));
    crate::queue::private_files::dir(&scratch)?;
    let result = (|| {
        // Read from a copy: SQLite would otherwise replay (and then delete) the damaged log.
        let wal_scan = detect::scan_wal(&wal_path(&db))?;
        for (from, name) in [(db.clone(), DB_FILE.to_string()), (wal_path(&db), format!("{DB_FILE}-wal"))] {
            if from.exists() {
                fs::copy(&from, scratch.join(name))?;
            }
        }
        let mut salvage = salvage::read_salvage_from(&scratch.join(DB_FILE));
        if let Some(d) = &wal_scan.damage {
            salvage.damage.insert(0, format!("write-ahead log: {d}"));
            salvage.maybe_lost_after =
                Some(salvage.kept.last().map(|(r, _)| r.seq).unwrap_or(salvage.first_seq.saturating_sub(1)));
        }
        rebuild::build(&db, &aside, lock, salvage, &options, now)
    })();
    let _ = fs::remove_dir_all(&scratch);
    result
}

/// The recovery events in a list of opened records (for tests and tools): the details of
/// every `QueueCorrupt` event of kind `queue_recovered`, parsed.
pub fn recovery_events<'a>(records: impl IntoIterator<Item = &'a Record>) -> Vec<serde_json::Value> {
    records
        .into_iter()
        .filter_map(|r| match &r.body {
            RecordBody::Agent(AgentEvent::QueueCorrupt { detail }) => serde_json::from_str::<serde_json::Value>(detail).ok(),
            _ => None,
        })
        .filter(|v| v["kind"] == "queue_recovered")
        .collect()
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use rusqlite::Connection;

    use super::detect::{probe_open_path, wal_checksum};
    use super::*;
    use crate::{Agent, AgentOptions};

    fn store(n: u32) -> (tempfile::TempDir, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let (_, public) = crate::seal::generate_archive_keypair();
        let agent = Agent::open(dir.path(), AgentOptions::default()).unwrap();
        let tree = crate::synth::sample_policy("https://archive.acme-securities.test", &public, "tok", &[]);
        crate::block_on::block_on(agent.apply_policy(&tree)).unwrap();
        let mut w = crate::synth::Workload::new(crate::synth::WorkloadOptions::new(3, &dir.path().join("files"))).unwrap();
        for _ in 0..n {
            let _ = crate::block_on::block_on(agent.capture(w.next_event().unwrap().event));
        }
        let last: Vec<u8> = {
            let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
            conn.query_row("SELECT ciphertext FROM records ORDER BY seq DESC LIMIT 1", [], |r| r.get(0)).unwrap()
        };
        crate::block_on::block_on(agent.close()).unwrap();
        (dir, last)
    }

    #[test]
    fn the_open_path_probe_finds_damage_on_the_pages_opening_reads() {
        let (dir, last) = store(40);
        let db = dir.path().join(DB_FILE);
        assert!(probe_open_path(&db).unwrap().is_empty());
        let bytes = fs::read(&db).unwrap();
        let page = bytes.windows(32).position(|w| w == &last[last.len() - 32..]).unwrap() / 4096;
        let mut f = fs::OpenOptions::new().write(true).open(&db).unwrap();
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start((page * 4096) as u64)).unwrap();
        f.write_all(&[0u8; 128]).unwrap();
        drop(f);
        assert_eq!(probe_open_path(&db).unwrap_err().kind, ErrorKind::Corrupt);
        assert_eq!(check(dir.path()).unwrap_err().kind, ErrorKind::Corrupt);
    }

    #[test]
    fn wal_checksums_follow_sqlite() {
        // Two words: s0 = 0 + x0 + 0, s1 = 0 + x1 + s0 (big-endian words).
        assert_eq!(wal_checksum(true, &[0, 0, 0, 1, 0, 0, 0, 2], 0, 0), (1, 3));
        assert_eq!(wal_checksum(false, &[1, 0, 0, 0, 2, 0, 0, 0], 0, 0), (1, 3));
        assert_eq!(
            ranges(&[1, 2, 3, 7, 9, 10]),
            [SeqRange { first: 1, last: 3 }, SeqRange { first: 7, last: 7 }, SeqRange { first: 9, last: 10 }]
        );
    }
}
