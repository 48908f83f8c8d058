//! Moving an archive into a bucket: every stream of a source archive (the embedded SQLite
//! one) copied into the object store through the same checked, conditional writes receivers
//! use, its alerts too, and then both verified and compared stream by stream.
//!
//! Safe to run again after an interruption: what is already in the bucket is a duplicate and
//! is skipped. Records keep when they were first received (for silent-device detection);
//! their retention counts from the copy (never shorter than asked).

use std::collections::BTreeSet;

use serde::Serialize;
use verbatim_core::chain::StreamId;
use verbatim_core::wire::{Batch, WireRecord};

use super::client::{Put, PutOptions};
use super::layout::{AlertObject, Repeats};
use super::{Inner, S3Client, S3Reader, S3StoreConfig, require_object_lock, writer};
use crate::error::{Error, Result};
use crate::keys::AcceptedKeys;
use crate::store::{ArchiveReader, Mode, Outcome, StoreRules};
use crate::verify::{StreamReport, VerifyOptions, verify_reader};

/// Records per batch object written by a copy.
const COPY_RECORDS: usize = 1000;
/// Bytes of ciphertext per batch object written by a copy.
const COPY_BYTES: usize = 8 << 20;

#[derive(Debug, Clone, Default, Serialize)]
pub struct CopySummary {
    pub streams: u64,
    pub records_copied: u64,
    /// Records the bucket already held (an earlier, interrupted copy).
    pub records_already_there: u64,
    pub alerts_copied: u64,
    /// Streams whose copy does not match the source after verification (none: a true copy).
    pub mismatches: Vec<String>,
}

impl CopySummary {
    pub fn ok(&self) -> bool {
        self.mismatches.is_empty()
    }
}

/// Copies everything `source` holds into the bucket of `target`, then verifies both and
/// compares them. Blocking (runs its own runtime).
pub fn copy_archive(source: &mut dyn ArchiveReader, target: &S3StoreConfig) -> Result<CopySummary> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| Error::io("start a runtime", e))?;
    let client = S3Client::new(&target.s3)?;
    rt.block_on(require_object_lock(&client))?;
    let streams = source.streams()?;
    // Whatever key the source accepted, the copy accepts: it moves records, it does not judge them.
    let mut key_ids = BTreeSet::new();
    for id in &streams {
        key_ids.extend(source.epochs(id)?.into_iter().map(|e| e.archive_key_id));
    }
    let rules = StoreRules {
        accepted_keys: AcceptedKeys::from_key_ids(key_ids.iter().map(String::as_str)),
        max_streams_per_device: u64::MAX,
    };
    let inner = Inner::new(client, target, rules);
    let mut summary = CopySummary { streams: streams.len() as u64, ..CopySummary::default() };
    for id in &streams {
        if let Err(e) = copy_stream(&rt, &inner, source, id, &mut summary) {
            summary.mismatches.push(format!("{}: copy stopped: {e}", shown(id)));
        }
    }

    // Both sides verified the same way, and compared.
    let options = VerifyOptions::default();
    let before = verify_reader(source, &options)?;
    drop(rt);
    let after = verify_reader(&mut S3Reader::open(target)?, &options)?;
    for s in &before.streams {
        let copied = after.streams.iter().find(|a| (&a.tenant, &a.device, &a.stream) == (&s.tenant, &s.device, &s.stream));
        match copied {
            None => summary.mismatches.push(format!("{}/{}/{}: not in the bucket", s.tenant, s.device, s.stream)),
            Some(a) if fingerprint(a) != fingerprint(s) => summary.mismatches.push(format!(
                "{}/{}/{}: the bucket holds {} records through {} (chain {}), the source {} through {} (chain {})",
                s.tenant,
                s.device,
                s.stream,
                a.records,
                a.contiguous_through,
                a.chain_verified,
                s.records,
                s.contiguous_through,
                s.chain_verified
            )),
            Some(_) => {}
        }
    }
    Ok(summary)
}

/// What must be equal between a stream and its copy.
#[derive(PartialEq, Eq)]
struct Fingerprint {
    records: u64,
    span: (Option<u64>, Option<u64>),
    contiguous_through: u64,
    chain_verified: bool,
    alerts: Vec<(String, u64)>,
}

fn fingerprint(s: &StreamReport) -> Fingerprint {
    Fingerprint {
        records: s.records,
        span: (s.first_seq, s.last_seq),
        contiguous_through: s.contiguous_through,
        chain_verified: s.chain_verified,
        alerts: s.alerts.iter().map(|a| (a.kind.clone(), a.count)).collect(),
    }
}

fn shown(id: &StreamId) -> String {
    format!("{}/{}/{}", id.tenant, id.device, id.stream)
}

fn copy_stream(
    rt: &tokio::runtime::Runtime,
    inner: &Inner,
    source: &mut dyn ArchiveReader,
    id: &StreamId,
    summary: &mut CopySummary,
) -> Result<()> {
    let epochs = source.epochs(id)?;
    let received = source.last_received_ms(id)?;
    let mut chunk: Vec<WireRecord> = Vec::new();
    let mut bytes = 0usize;
    let mut flush = |chunk: &mut Vec<WireRecord>| -> Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        let batch = Batch { stream: id.clone(), epochs: epochs.clone(), records: std::mem::take(chunk) };
        match rt.block_on(writer::submit(inner, batch, Mode::Commit, received))? {
            Outcome::Stored(ack) => {
                summary.records_copied += ack.stored;
                summary.records_already_there += ack.duplicates;
                Ok(())
            }
            other => Err(Error::Store(format!("the bucket refused a batch: {other:?}"))),
        }
    };
    source.for_each_record(id, &mut |r| {
        bytes += r.ciphertext.len();
        chunk.push(r);
        if chunk.len() >= COPY_RECORDS || bytes >= COPY_BYTES {
            flush(&mut chunk)?;
            bytes = 0;
        }
        Ok(true)
    })?;
    flush(&mut chunk)?;

    for alert in source.alerts(id)? {
        let first = AlertObject { at_ms: alert.at_ms, kind: alert.kind.clone(), detail: alert.detail.clone() };
        let options = PutOptions {
            if_none_match: true,
            retain_until: Some(inner.retention.until(&id.tenant, crate::time::now_ms())),
            ..PutOptions::default()
        };
        let body = serde_json::to_vec(&first).unwrap_or_default();
        if let Put::Written { .. } = rt.block_on(inner.client.put(&inner.layout.alert(id, &alert.kind), body, &options))? {
            summary.alerts_copied += 1;
            if alert.count > 1 {
                let repeats = Repeats { repeats: alert.count - 1, last_ms: alert.last_ms, last_detail: alert.last_detail };
                let options = PutOptions { if_none_match: true, ..PutOptions::default() };
                let body = serde_json::to_vec(&repeats).unwrap_or_default();
                rt.block_on(inner.client.put(&inner.layout.repeats(id, &alert.kind), body, &options))?;
            }
        }
    }
    Ok(())
}
