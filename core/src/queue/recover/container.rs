//! The salvage container: the intact records of a stream that cannot continue, byte for byte,
//! in runs that each continue the old chain (see the module docs of `recover`).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use super::detect::be32;
use super::salvage::{Anchor, Salvage};
use super::{SALVAGE_BATCH_BYTES, SALVAGE_MAGIC};
use crate::chain::Link;
use crate::chain::StreamId;
use crate::error::{Error, ErrorKind, Result};
use crate::wire::Batch;
use crate::wire::{EpochInfo, WireRecord};

/// A salvage container writer: entries of (anchor, batch), batches of at most 4 MB.
pub(super) struct SalvageWriter {
    pub(super) out: BufWriter<File>,
    pub(super) bytes: u64,
}

impl SalvageWriter {
    pub(super) fn entry(&mut self, prev_seq: u64, prev_link: Option<Link>, batch: &Batch) -> Result<()> {
        let header = serde_json::json!({ "prev_seq": prev_seq, "prev_link": prev_link.map(hex::encode) }).to_string();
        let body = batch.encode();
        for part in [&(header.len() as u32).to_be_bytes()[..], header.as_bytes(), &(body.len() as u32).to_be_bytes()[..], &body] {
            self.out.write_all(part)?;
            self.bytes += part.len() as u64;
        }
        Ok(())
    }
}

/// One run of carried records: a batch that continues the old chain at (`prev_seq`,
/// `prev_link`); `prev_link` is `None` when the predecessor was lost (its first record cannot
/// be opened, the rest verify from it).
#[derive(Debug, Clone)]
pub struct SalvageRun {
    pub prev_seq: u64,
    pub prev_link: Option<Link>,
    pub batch: Batch,
}

/// Decodes a salvage container (the attachment a recovered store's new stream carries).
pub fn read_salvage(bytes: &[u8]) -> Result<Vec<SalvageRun>> {
    let bad = |why: String| Error::new(ErrorKind::Corrupt, format!("salvage container: {why}"));
    let mut rest = bytes.strip_prefix(SALVAGE_MAGIC).ok_or_else(|| bad("not a salvage container".into()))?;
    let take = |rest: &mut &[u8]| -> Result<Vec<u8>> {
        if rest.len() < 4 {
            return Err(bad("truncated".into()));
        }
        let n = be32(&rest[..4]) as usize;
        if rest.len() < 4 + n {
            return Err(bad("truncated".into()));
        }
        let part = rest[4..4 + n].to_vec();
        *rest = &rest[4 + n..];
        Ok(part)
    };
    let mut out = Vec::new();
    while !rest.is_empty() {
        let header: serde_json::Value =
            serde_json::from_slice(&take(&mut rest)?).map_err(|e| bad(format!("entry header: {e}")))?;
        let batch = Batch::decode(&take(&mut rest)?).map_err(|e| bad(e.to_string()))?;
        let prev_link = match header["prev_link"].as_str() {
            Some(h) => Some(hex::decode(h).ok().and_then(|b| b.try_into().ok()).ok_or_else(|| bad("entry link".into()))?),
            None => None,
        };
        let prev_seq = header["prev_seq"].as_u64().ok_or_else(|| bad("entry sequence".into()))?;
        out.push(SalvageRun { prev_seq, prev_link, batch });
    }
    Ok(out)
}

/// Writes every kept record of `s`, byte for byte, into a container at `path` (owner-only,
/// synced), in runs that each continue the old stream's chain; returns its size in bytes.
pub(super) fn write_container(path: &Path, old: &StreamId, s: &Salvage) -> Result<u64> {
    let file = crate::queue::private_files::file(path)?;
    file.set_len(0)?; // as File::create would: a container is always written whole
    let mut w = SalvageWriter { out: BufWriter::new(file), bytes: 0 };
    w.out.write_all(SALVAGE_MAGIC)?;
    w.bytes += SALVAGE_MAGIC.len() as u64;
    let epochs_for = |records: &[WireRecord]| -> Vec<EpochInfo> {
        let mut out: Vec<EpochInfo> = Vec::new();
        for r in records {
            if !out.iter().any(|e| e.epoch == r.epoch)
                && let Some((e, _, _)) = s.epochs.iter().find(|(e, _, _)| e.epoch == r.epoch)
            {
                out.push(e.clone());
            }
        }
        out
    };
    let mut run: Vec<WireRecord> = Vec::new();
    let mut run_anchor: (u64, Option<Link>) = (0, None);
    let mut size = 0usize;
    let flush = |run: &mut Vec<WireRecord>, anchor: (u64, Option<Link>), w: &mut SalvageWriter| -> Result<()> {
        if !run.is_empty() {
            let batch = Batch { stream: old.clone(), epochs: epochs_for(run), records: std::mem::take(run) };
            w.entry(anchor.0, anchor.1, &batch)?;
        }
        Ok(())
    };
    for (r, a) in &s.kept {
        let continues =
            run.last().is_some_and(|l| l.seq + 1 == r.seq) && matches!(a, Anchor::Verified(_)) && size < SALVAGE_BATCH_BYTES;
        if !continues {
            flush(&mut run, run_anchor, &mut w)?;
            size = 0;
            run_anchor = (
                r.seq - 1,
                match a {
                    Anchor::Verified(l) => Some(*l),
                    Anchor::Unanchored => None,
                },
            );
        }
        size += r.ciphertext.len() + 52;
        run.push(WireRecord { seq: r.seq, epoch: r.epoch, link: r.link, ciphertext: r.ciphertext.clone() });
    }
    flush(&mut run, run_anchor, &mut w)?;
    w.out.flush()?;
    w.out.get_ref().sync_all()?;
    Ok(w.bytes)
}
