//! The archive's durable store, behind one trait so the server, `verify` and `export` do not
//! care where records live:
//!
//! - [`ArchiveStore`]: what the receiver writes through (batches, the cursor answer);
//! - [`ArchiveReader`]: what `verify` and `export` read through, one stream at a time and one
//!   record at a time, so memory stays bounded whatever the archive's size.
//!
//! Implementations, one module each: [`sqlite`] (the embedded default: one SQLite file in a
//! data directory, one receiver) and [`s3`] (immutable objects under S3 Object Lock, any
//! number of receivers on one bucket).
//!
//! Every implementation applies the same rules to a batch: duplicates must be byte-identical,
//! no gap, every new record chains from the last held, an epoch id always means the same key,
//! new epochs only for accepted archive keys, a bounded number of streams per device; a
//! refusal stores nothing but its alert.

pub mod s3;
pub mod sqlite;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use verbatim_core::chain::{Link, StreamId};
use verbatim_core::wire::{Batch, BatchAck, EpochInfo, WireRecord};

use crate::error::Result;
use crate::keys::AcceptedKeys;

pub use sqlite::SqliteStore;

/// A future a store method returns (trait objects cannot have `async fn`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where the receiver writes. Answers only once the outcome is durable.
pub trait ArchiveStore: Send + Sync {
    /// Applies `batch`; resolves once the outcome is durable (or, in [`Mode::RollBack`],
    /// abandoned as a crash before the commit would).
    fn submit(&self, batch: Batch, mode: Mode) -> BoxFuture<'_, Result<Outcome>>;

    /// Highest contiguous sequence held for `id` and its link (0 and the genesis link when
    /// nothing is held).
    fn cursor(&self, id: StreamId) -> BoxFuture<'_, Result<(u64, Link)>>;

    /// Stops after the batches already submitted; everything acknowledged is durable when
    /// this returns. Blocking.
    fn close(&self);
}

/// What `verify` and `export` read: one consistent view (a snapshot for SQLite; for the
/// object store, every stream as of when it is read, which only ever grows).
pub trait ArchiveReader {
    /// Every stream held, in a stable order.
    fn streams(&mut self) -> Result<Vec<StreamId>>;
    /// The epochs held for a stream (few: one per rotation).
    fn epochs(&mut self, id: &StreamId) -> Result<Vec<EpochInfo>>;
    /// Alerts of a stream, oldest first.
    fn alerts(&mut self, id: &StreamId) -> Result<Vec<Alert>>;
    /// When the newest record of a stream was received (receiver clock, ms).
    fn last_received_ms(&mut self, id: &StreamId) -> Result<Option<i64>>;
    /// The last sequence the store's own index says it holds for a stream, when it keeps one
    /// apart from the records (the object store's head): `verify` reports records missing up
    /// to it as a gap.
    fn held_through(&mut self, _id: &StreamId) -> Result<Option<u64>> {
        Ok(None)
    }
    /// Calls `f` with every record of a stream in sequence order, one at a time. `f` returns
    /// false to stop.
    fn for_each_record(&mut self, id: &StreamId, f: &mut dyn FnMut(WireRecord) -> Result<bool>) -> Result<()>;
}

/// Where an archive is: a data directory (SQLite) or a bucket.
#[derive(Debug, Clone)]
pub enum StoreLocation {
    Dir(PathBuf),
    S3(Box<s3::S3StoreConfig>),
}

/// A reader for `verify` and `export` (blocking; not from inside an async runtime).
pub fn open_reader(location: &StoreLocation) -> Result<Box<dyn ArchiveReader>> {
    Ok(match location {
        StoreLocation::Dir(dir) => Box::new(sqlite::SqliteReader::open(dir)?),
        StoreLocation::S3(config) => Box::new(s3::S3Reader::open(config)?),
    })
}

/// One alert of a stream: the first of its kind as it was recorded, and how often that kind
/// came again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub at_ms: i64,
    pub kind: String,
    pub detail: String,
    /// Occurrences in all, the first included.
    pub count: u64,
    /// When the latest occurrence was recorded and its detail (the first's when `count` is 1).
    pub last_ms: i64,
    pub last_detail: String,
}

/// Streams one device may open unless configured otherwise: a new stream per app install or
/// store recovery, so a real device needs a handful over its life.
pub const DEFAULT_MAX_STREAMS_PER_DEVICE: u64 = 100;

/// What every batch is held to besides continuity.
#[derive(Debug, Clone)]
pub struct StoreRules {
    /// Archive key ids a new epoch may be sealed to.
    pub accepted_keys: AcceptedKeys,
    /// New streams beyond this many for one (tenant, device) are refused.
    pub max_streams_per_device: u64,
}

impl StoreRules {
    pub fn new(accepted_keys: AcceptedKeys) -> StoreRules {
        StoreRules { accepted_keys, max_streams_per_device: DEFAULT_MAX_STREAMS_PER_DEVICE }
    }
}

/// Commit, or (fault injection) roll back as a crash before fsync would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Commit,
    RollBack,
}

/// What became of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Stored(BatchAck),
    /// The batch starts past `expected`; nothing stored.
    Gap {
        expected: u64,
    },
    /// The batch contradicts what is held (or does not chain); nothing stored, alert kept.
    Conflict {
        expected: u64,
        reason: String,
    },
    /// A new epoch is sealed to an archive key this archive does not accept; nothing stored,
    /// alert kept.
    UnknownArchiveKey {
        epoch: u64,
        key_id: String,
    },
    /// The batch would open a new stream for a device that has `limit` already; nothing stored.
    StreamLimit {
        limit: u64,
    },
}

/// Alert kinds, as stored and reported.
pub const ALERT_EQUIVOCATION: &str = "equivocation";
pub const ALERT_EPOCH_CONFLICT: &str = "epoch_conflict";
pub const ALERT_CHAIN_BREAK: &str = "chain_break";
pub const ALERT_GAP: &str = "gap";
pub const ALERT_UNKNOWN_ARCHIVE_KEY: &str = "unknown_archive_key";

/// Why an epoch announcement contradicts the one held, or `None` if it is the same.
pub(crate) fn epoch_difference(
    epoch: u64,
    held_key_id: &str,
    held_enc: &[u8],
    announced: &verbatim_core::wire::EpochInfo,
) -> Option<String> {
    let key_differs = held_key_id != announced.archive_key_id;
    let enc_differs = held_enc != announced.encapsulation.as_slice();
    let what = match (key_differs, enc_differs) {
        (false, false) => return None,
        (true, false) => "a different archive key id (same encapsulation)",
        (false, true) => "a different encapsulation (same archive key id)",
        (true, true) => "a different archive key id and encapsulation",
    };
    Some(format!("epoch {epoch} re-announced with {what}"))
}

/// The `reason` of a refusal for an epoch sealed to an unknown archive key.
pub fn unknown_key_reason(epoch: u64, key_id: &str) -> String {
    format!("epoch {epoch} is sealed to archive key id {key_id}, which this archive does not accept")
}
