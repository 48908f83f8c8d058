//! The hash chain over a device stream. Each link covers the previous link, the sequence
//! number, the epoch and the ciphertext, so the archive can prove that it holds every record,
//! in order, unaltered. The device, the receiver and tests all use these functions.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub type Link = [u8; 32];

/// Who a record stream belongs to. `stream` is random per install, so a reinstalled app starts
/// a new, separately verifiable stream instead of colliding with its former self.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StreamId {
    pub tenant: String,
    pub device: String,
    pub stream: String,
}

fn put_str(h: &mut Sha256, s: &str) {
    h.update((s.len() as u64).to_be_bytes());
    h.update(s.as_bytes());
}

/// The link before sequence number 1 of a stream.
pub fn genesis(id: &StreamId) -> Link {
    let mut h = Sha256::new();
    h.update(b"verbatim/chain/v1/genesis");
    put_str(&mut h, &id.tenant);
    put_str(&mut h, &id.device);
    put_str(&mut h, &id.stream);
    h.finalize().into()
}

/// The link of record `seq`, given the link of record `seq - 1` (or the genesis link).
pub fn link(prev: &Link, seq: u64, epoch: u64, ciphertext: &[u8]) -> Link {
    let mut h = Sha256::new();
    h.update(b"verbatim/chain/v1/link");
    h.update(prev);
    h.update(seq.to_be_bytes());
    h.update(epoch.to_be_bytes());
    h.update((ciphertext.len() as u64).to_be_bytes());
    h.update(ciphertext);
    h.finalize().into()
}

/// Why a run of records does not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainBreak {
    /// Sequence numbers are not contiguous: `expected` was due, `found` came.
    Gap { expected: u64, found: u64 },
    /// The stored link of `seq` is not the hash of its predecessor and content.
    BadLink { seq: u64 },
}

impl std::fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainBreak::Gap { expected, found } => write!(f, "sequence gap: expected {expected}, found {found}"),
            ChainBreak::BadLink { seq } => write!(f, "chain link of sequence {seq} does not verify"),
        }
    }
}

/// A chained record as stored or sent: enough to verify the chain without any key.
pub trait ChainedRecord {
    fn seq(&self) -> u64;
    fn epoch(&self) -> u64;
    fn ciphertext(&self) -> &[u8];
    fn link(&self) -> &Link;
}

/// Verifies that `records` continue the chain after (`prev_seq`, `prev_link`).
/// Returns the new head (last sequence number and link).
pub fn verify_run<'a, R: ChainedRecord + 'a>(
    prev_seq: u64,
    prev_link: Link,
    records: impl IntoIterator<Item = &'a R>,
) -> Result<(u64, Link), ChainBreak> {
    let (mut seq, mut head) = (prev_seq, prev_link);
    for r in records {
        // A stream never reaches u64::MAX records; a head claiming it is damaged, not a panic.
        let Some(expected) = seq.checked_add(1) else {
            return Err(ChainBreak::Gap { expected: u64::MAX, found: r.seq() });
        };
        if r.seq() != expected {
            return Err(ChainBreak::Gap { expected, found: r.seq() });
        }
        let computed = link(&head, r.seq(), r.epoch(), r.ciphertext());
        if &computed != r.link() {
            return Err(ChainBreak::BadLink { seq: r.seq() });
        }
        seq = expected;
        head = computed;
    }
    Ok((seq, head))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct R(u64, u64, Vec<u8>, Link);
    impl ChainedRecord for R {
        fn seq(&self) -> u64 {
            self.0
        }
        fn epoch(&self) -> u64 {
            self.1
        }
        fn ciphertext(&self) -> &[u8] {
            &self.2
        }
        fn link(&self) -> &Link {
            &self.3
        }
    }

    fn id() -> StreamId {
        StreamId { tenant: "t".into(), device: "d".into(), stream: "s".into() }
    }

    fn build(n: u64) -> Vec<R> {
        let mut prev = genesis(&id());
        (1..=n)
            .map(|seq| {
                let ct = vec![seq as u8; 10];
                let l = link(&prev, seq, 1, &ct);
                prev = l;
                R(seq, 1, ct, l)
            })
            .collect()
    }

    #[test]
    fn a_built_chain_verifies() {
        let rs = build(5);
        assert_eq!(verify_run(0, genesis(&id()), &rs).unwrap().0, 5);
    }

    #[test]
    fn modified_deleted_and_reordered_records_are_detected() {
        let mut rs = build(5);
        rs[2].2[0] ^= 1;
        assert_eq!(verify_run(0, genesis(&id()), &rs), Err(ChainBreak::BadLink { seq: 3 }));

        let mut rs = build(5);
        rs.remove(1);
        assert_eq!(verify_run(0, genesis(&id()), &rs), Err(ChainBreak::Gap { expected: 2, found: 3 }));

        let mut rs = build(5);
        rs.swap(1, 2);
        assert!(verify_run(0, genesis(&id()), &rs).is_err());
    }

    #[test]
    fn genesis_depends_on_every_part_of_the_stream_id() {
        let base = genesis(&id());
        for other in [
            StreamId { tenant: "t2".into(), ..id() },
            StreamId { device: "d2".into(), ..id() },
            StreamId { stream: "s2".into(), ..id() },
            // Length prefixes keep "ab"+"c" apart from "a"+"bc".
            StreamId { tenant: "td".into(), device: "".into(), ..id() },
        ] {
            assert_ne!(genesis(&other), base);
        }
    }
}
