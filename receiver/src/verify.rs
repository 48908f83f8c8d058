//! Completeness and integrity of what the archive holds, per stream, without any key:
//! sequence numbers contiguous from 1, every link recomputed from the genesis link, every
//! record's epoch held, and the alerts the receiver raised. Streams records one at a time, so
//! memory stays bounded however much is held.

use std::collections::HashSet;
use std::path::Path;

use serde::Serialize;
use verbatim_core::chain;

use crate::error::Result;
use crate::store::ArchiveReader;
use crate::store::sqlite::SqliteReader;
use crate::time::rfc3339;

/// Chain breaks listed per stream at most (the count is always exact).
const MAX_LISTED: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeqRange {
    pub first: u64,
    pub last: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlertInfo {
    /// RFC 3339, receiver clock: the first alert of this kind on the stream.
    pub at: String,
    pub kind: String,
    /// The first alert's detail.
    pub detail: String,
    /// How many alerts of this kind the stream raised, the first included.
    pub count: u64,
    /// The latest one (the first when `count` is 1): when, and its detail.
    pub last_at: String,
    pub last_detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamReport {
    pub tenant: String,
    pub device: String,
    pub stream: String,
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// Every sequence from 1 through this one is held.
    pub contiguous_through: u64,
    /// Missing sequence ranges between 1 and `last_seq`.
    pub gaps: Vec<SeqRange>,
    /// Every held link recomputes from the genesis link, with no gap in between.
    pub chain_verified: bool,
    /// How many records' links do not recompute, and the first of them.
    pub chain_break_count: u64,
    pub chain_breaks: Vec<u64>,
    /// Records whose epoch (and so its key) the archive does not hold.
    pub records_without_epoch: u64,
    pub alerts: Vec<AlertInfo>,
    /// When the archive last received a record of this stream (RFC 3339, receiver clock).
    pub last_received: Option<String>,
    #[serde(skip)]
    pub last_received_ms: Option<i64>,
    /// With a key vault: records whose keys were erased (still counted above: the chain
    /// covers them), and the erasures they belong to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub erased: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub erasures: Vec<i64>,
}

impl StreamReport {
    pub fn ok(&self) -> bool {
        self.gaps.is_empty() && self.chain_verified && self.records_without_epoch == 0 && self.alerts.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub streams: u64,
    pub records: u64,
    pub gaps: u64,
    pub chain_failures: u64,
    pub alerts: u64,
    pub ok: bool,
}

/// A device that has sent nothing for longer than its heartbeat interval allows: a working
/// agent sends a heartbeat at least that often, even when nothing is captured, so silence
/// means the phone is off, the app removed, or capture tampered with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SilentDevice {
    pub tenant: String,
    pub device: String,
    pub last_received: String,
    pub silent_hours: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VerifyOptions {
    /// Flag devices whose newest record is older than this (heartbeat interval plus grace).
    pub silent_after_hours: Option<u64>,
    /// The time to judge silence at (ms since the Unix epoch); the receiver clock by default.
    pub now_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub streams: Vec<StreamReport>,
    pub totals: Totals,
    /// Only when `silent_after_hours` was given.
    pub silent_devices: Vec<SilentDevice>,
}

impl Report {
    /// True when every stream is complete, verified and without alerts.
    pub fn ok(&self) -> bool {
        self.totals.ok
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|_| "{}".to_string())
    }

    /// The human report: one line per stream, then one per problem, then the totals.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for s in &self.streams {
            let span = match (s.first_seq, s.last_seq) {
                (Some(a), Some(b)) => format!("seq {a}..{b}"),
                _ => "no records".to_string(),
            };
            let verdict = if s.ok() { "OK" } else { "PROBLEMS" };
            out.push_str(&format!(
                "{verdict}  {}/{}/{}: {} records, {span}, contiguous through {}, chain {}\n",
                s.tenant,
                s.device,
                s.stream,
                s.records,
                s.contiguous_through,
                if s.chain_verified { "verified" } else { "NOT verified" }
            ));
            if let Some(n) = s.erased.filter(|n| *n > 0) {
                let ids: Vec<String> = s.erasures.iter().map(i64::to_string).collect();
                out.push_str(&format!("    {n} record(s) erased (erasure {}): unreadable, still in the chain\n", ids.join(", ")));
            }
            for g in &s.gaps {
                out.push_str(&format!("    gap: sequences {}..{} missing\n", g.first, g.last));
            }
            if s.chain_break_count > 0 {
                let listed: Vec<String> = s.chain_breaks.iter().map(u64::to_string).collect();
                out.push_str(&format!("    chain: {} link(s) do not verify, at {}\n", s.chain_break_count, listed.join(", ")));
            }
            if s.records_without_epoch > 0 {
                out.push_str(&format!("    {} record(s) name an epoch the archive does not hold\n", s.records_without_epoch));
            }
            for a in &s.alerts {
                out.push_str(&format!("    alert {} {}: {}\n", a.at, a.kind, a.detail));
                if a.count > 1 {
                    out.push_str(&format!("      repeated: {} in all, last {}: {}\n", a.count, a.last_at, a.last_detail));
                }
            }
        }
        for d in &self.silent_devices {
            out.push_str(&format!(
                "SILENT  {}/{}: nothing received for {} hours (last {}): longer than its heartbeat allows\n",
                d.tenant, d.device, d.silent_hours, d.last_received
            ));
        }
        let t = &self.totals;
        out.push_str(&format!(
            "{} stream(s), {} record(s); {} gap(s), {} stream(s) failing the chain, {} alert(s): {}\n",
            t.streams,
            t.records,
            t.gaps,
            t.chain_failures,
            t.alerts,
            if t.ok { "complete and verified" } else { "PROBLEMS FOUND" }
        ));
        out
    }
}

/// Verifies every stream held in `data_dir`. Safe while a receiver runs on it (reads one
/// consistent snapshot).
pub fn verify(data_dir: &Path) -> Result<Report> {
    verify_with(data_dir, &VerifyOptions::default())
}

/// [`verify`], and with `silent_after_hours` also the devices silent for longer than that.
pub fn verify_with(data_dir: &Path, options: &VerifyOptions) -> Result<Report> {
    verify_reader(&mut SqliteReader::open(data_dir)?, options)
}

/// [`verify_with`] over any store's reader.
pub fn verify_reader(reader: &mut dyn ArchiveReader, options: &VerifyOptions) -> Result<Report> {
    verify_reader_with_vault(reader, options, None)
}

/// [`verify_reader`], and with the key vault, how many records of each stream were erased.
pub fn verify_reader_with_vault(
    reader: &mut dyn ArchiveReader,
    options: &VerifyOptions,
    vault: Option<&crate::vault::Vault>,
) -> Result<Report> {
    let mut streams = Vec::new();
    for id in reader.streams()? {
        let epochs: HashSet<u64> = reader.epochs(&id)?.into_iter().map(|e| e.epoch).collect();
        let mut s = StreamReport {
            tenant: id.tenant.clone(),
            device: id.device.clone(),
            stream: id.stream.clone(),
            records: 0,
            first_seq: None,
            last_seq: None,
            contiguous_through: 0,
            gaps: Vec::new(),
            chain_verified: false,
            chain_break_count: 0,
            chain_breaks: Vec::new(),
            records_without_epoch: 0,
            alerts: Vec::new(),
            last_received: None,
            last_received_ms: None,
            erased: vault.map(|_| 0),
            erasures: Vec::new(),
        };
        let mut erasures = vault.map(|v| crate::vault::ErasureLookup::new(v, &id));
        let mut prev = chain::genesis(&id);
        let mut expect = 1u64;
        let mut contiguous = true;
        reader.for_each_record(&id, &mut |r| {
            s.records += 1;
            s.first_seq.get_or_insert(r.seq);
            s.last_seq = Some(r.seq);
            if r.seq != expect {
                // Rows are ordered by seq and unique, so r.seq > expect: a hole. The chain cannot
                // be followed across it; carry on from this record's stored link.
                s.gaps.push(SeqRange { first: expect, last: r.seq.saturating_sub(1) });
                contiguous = false;
            } else if chain::link(&prev, r.seq, r.epoch, &r.ciphertext) != r.link {
                s.chain_break_count += 1;
                if s.chain_breaks.len() < MAX_LISTED {
                    s.chain_breaks.push(r.seq);
                }
            }
            if contiguous {
                s.contiguous_through = r.seq;
            }
            if !epochs.contains(&r.epoch) {
                s.records_without_epoch += 1;
            }
            if let Some(lookup) = erasures.as_mut()
                && let Some(erasure) = lookup.erasure_of(&r)?
            {
                *s.erased.get_or_insert(0) += 1;
                if !s.erasures.contains(&erasure) {
                    s.erasures.push(erasure);
                }
            }
            // Following the stored link localises an altered record to itself.
            prev = r.link;
            expect = r.seq.saturating_add(1);
            Ok(true)
        })?;
        // The store's own index may say more is held than could be read (an object hidden
        // behind a delete marker in a bucket): that is missing too.
        if let Some(claimed) = reader.held_through(&id)?
            && claimed >= expect
        {
            s.gaps.push(SeqRange { first: expect, last: claimed });
        }
        s.chain_verified = s.gaps.is_empty() && s.chain_break_count == 0;
        s.last_received_ms = reader.last_received_ms(&id)?;
        s.last_received = s.last_received_ms.map(rfc3339);
        s.alerts = reader
            .alerts(&id)?
            .into_iter()
            .map(|a| AlertInfo {
                at: rfc3339(a.at_ms),
                kind: a.kind,
                detail: a.detail,
                count: a.count,
                last_at: rfc3339(a.last_ms),
                last_detail: a.last_detail,
            })
            .collect();
        streams.push(s);
    }
    let totals = Totals {
        streams: streams.len() as u64,
        records: streams.iter().map(|s| s.records).sum(),
        gaps: streams.iter().map(|s| s.gaps.len() as u64).sum(),
        chain_failures: streams.iter().filter(|s| !s.chain_verified).count() as u64,
        alerts: streams.iter().map(|s| s.alerts.len() as u64).sum(),
        ok: streams.iter().all(StreamReport::ok),
    };
    let silent_devices = match options.silent_after_hours {
        Some(hours) => silent(&streams, hours, options.now_ms.unwrap_or_else(crate::time::now_ms)),
        None => Vec::new(),
    };
    Ok(Report { streams, totals, silent_devices })
}

/// Devices (over all their streams: a reinstall starts a new one) silent for more than `hours`.
fn silent(streams: &[StreamReport], hours: u64, now_ms: i64) -> Vec<SilentDevice> {
    let mut newest: std::collections::BTreeMap<(&str, &str), i64> = std::collections::BTreeMap::new();
    for s in streams {
        if let Some(t) = s.last_received_ms {
            let e = newest.entry((s.tenant.as_str(), s.device.as_str())).or_insert(t);
            *e = (*e).max(t);
        }
    }
    newest
        .into_iter()
        .filter_map(|((tenant, device), t)| {
            let silent_hours = ((now_ms - t).max(0) / 3_600_000) as u64;
            ((now_ms - t) > hours as i64 * 3_600_000).then(|| SilentDevice {
                tenant: tenant.to_string(),
                device: device.to_string(),
                last_received: rfc3339(t),
                silent_hours,
            })
        })
        .collect()
}
