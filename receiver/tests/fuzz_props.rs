//! Property tests with generated inputs for the receiver: the batch endpoint over real TLS on
//! 127.0.0.1 (bytes from the wire-batch seed corpus in `fuzz/corpus/wire_batch/`, mutated,
//! and structured batches for the token's own and other devices), and the store's handling of
//! decoded batches compared with a model of what the upload API promises
//! (docs/upload-api.md, "Checks against what is held").
//!
//! Properties: no 5xx and no panic; every answer is one the API documents, with an `ApiError`
//! body whose code matches its status; the status is the one the local decoder and the model
//! predict; refused batches change nothing; what is stored always verifies (no gap, no break).
//! CI runs a few seconds each; `VERBATIM_FUZZ_CASES=N` runs longer (see fuzz/props/common.rs).

#[path = "../../fuzz/props/common.rs"]
mod props;
mod support;

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use support::*;
use verbatim_core::chain::{self, Link, StreamId};
use verbatim_core::wire::{ApiError, Batch, BatchAck, CONTENT_TYPE, EpochInfo, WireRecord};
use verbatim_receiver::store::{Mode, Outcome, SqliteStore, StoreRules};
use verbatim_receiver::{AcceptedKeys, add_device, verify};

fn fail(msg: impl Into<String>) -> TestCaseError {
    TestCaseError::fail(msg.into())
}

// =============================================================================================
// A model of one stream as the archive holds it
// =============================================================================================

#[derive(Debug, Clone, Default)]
struct Held {
    records: BTreeMap<u64, (u64, Link, Vec<u8>)>,
    epochs: BTreeMap<u64, (String, Vec<u8>)>,
}

impl Held {
    fn head(&self, id: &StreamId) -> (u64, Link) {
        self.records.iter().next_back().map(|(s, (_, l, _))| (*s, *l)).unwrap_or((0, chain::genesis(id)))
    }

    /// What the archive must answer to `batch` (decoded, owned by the token), per the API.
    fn expect(&mut self, batch: &Batch) -> Outcome {
        let (held, head) = self.head(&batch.stream);
        let expected = held.saturating_add(1);
        for e in &batch.epochs {
            if let Some((k, enc)) = self.epochs.get(&e.epoch)
                && (*k != e.archive_key_id || *enc != e.encapsulation)
            {
                return Outcome::Conflict { expected, reason: String::new() };
            }
        }
        // An epoch not held yet must be sealed to the archive's key.
        let accepted = archive_keys().key_id;
        if let Some(e) = batch.epochs.iter().find(|e| !self.epochs.contains_key(&e.epoch) && e.archive_key_id != accepted) {
            return Outcome::UnknownArchiveKey { epoch: e.epoch, key_id: e.archive_key_id.clone() };
        }
        let first = batch.records[0].seq;
        if first > expected {
            return Outcome::Gap { expected };
        }
        let mut duplicates = 0;
        for r in batch.records.iter().take_while(|r| r.seq <= held) {
            if self.records.get(&r.seq) != Some(&(r.epoch, r.link, r.ciphertext.clone())) {
                return Outcome::Conflict { expected, reason: String::new() };
            }
            duplicates += 1;
        }
        let new: Vec<&WireRecord> = batch.records.iter().filter(|r| r.seq > held).collect();
        if new.is_empty() {
            return Outcome::Stored(BatchAck { acked_through: held, stored: 0, duplicates });
        }
        let mut prev = head;
        for r in &new {
            if chain::link(&prev, r.seq, r.epoch, &r.ciphertext) != r.link {
                return Outcome::Conflict { expected, reason: String::new() };
            }
            prev = r.link;
        }
        for e in batch.epochs.iter().filter(|e| new.iter().any(|r| r.epoch == e.epoch)) {
            self.epochs.entry(e.epoch).or_insert((e.archive_key_id.clone(), e.encapsulation.clone()));
        }
        for r in &new {
            self.records.insert(r.seq, (r.epoch, r.link, r.ciphertext.clone()));
        }
        Outcome::Stored(BatchAck { acked_through: new.last().unwrap().seq, stored: new.len() as u64, duplicates })
    }
}

fn same_outcome(got: &Outcome, want: &Outcome) -> bool {
    match (got, want) {
        (Outcome::Stored(a), Outcome::Stored(b)) => a == b,
        (Outcome::Gap { expected: a }, Outcome::Gap { expected: b }) => a == b,
        (Outcome::Conflict { expected: a, .. }, Outcome::Conflict { expected: b, .. }) => a == b,
        (Outcome::UnknownArchiveKey { epoch: a, key_id: ka }, Outcome::UnknownArchiveKey { epoch: b, key_id: kb }) => {
            a == b && ka == kb
        }
        _ => false,
    }
}

// =============================================================================================
// Honest devices and what goes wrong with them
// =============================================================================================

/// A device's stream: records 1..=n, chained, epochs rotating every 5 records.
struct Honest {
    id: StreamId,
    records: Vec<WireRecord>,
    epochs: Vec<EpochInfo>,
}

impl Honest {
    fn new(tenant: &str, device: &str, stream: &str, n: u64) -> Honest {
        let id = StreamId { tenant: tenant.into(), device: device.into(), stream: stream.into() };
        let mut prev = chain::genesis(&id);
        let mut epochs = Vec::new();
        let key_id = archive_keys().key_id;
        let records = (1..=n)
            .map(|seq| {
                let epoch = 1 + (seq - 1) / 5;
                if epochs.last().map(|e: &EpochInfo| e.epoch) != Some(epoch) {
                    epochs.push(EpochInfo { epoch, archive_key_id: key_id.clone(), encapsulation: [epoch as u8; 32].to_vec() });
                }
                let ciphertext: Vec<u8> = (0..(seq % 7) * 9 + 16).map(|i| (i * 31 + seq) as u8).collect();
                prev = chain::link(&prev, seq, epoch, &ciphertext);
                WireRecord { seq, epoch, link: prev, ciphertext }
            })
            .collect();
        Honest { id, records, epochs }
    }

    /// The link before record `seq` (the genesis link before 1).
    fn prev(&self, seq: u64) -> Link {
        if seq <= 1 { chain::genesis(&self.id) } else { self.records[(seq - 2) as usize].link }
    }

    fn batch(&self, first: u64, last: u64) -> Batch {
        let records: Vec<WireRecord> = self.records[(first - 1) as usize..last as usize].to_vec();
        let epochs = self.epochs.iter().filter(|e| records.iter().any(|r| r.epoch == e.epoch)).cloned().collect();
        Batch { stream: self.id.clone(), epochs, records }
    }
}

#[derive(Debug, Clone)]
enum Twist {
    None,
    /// Different ciphertext, links recomputed: a consistent rewrite of history.
    Rewrite {
        rec: usize,
    },
    /// Different ciphertext, links kept: does not chain.
    FlipCiphertext {
        rec: usize,
        at: usize,
    },
    FlipLink {
        rec: usize,
        at: usize,
    },
    /// An announced epoch with another encapsulation.
    Reannounce,
    /// An announced epoch sealed to a key the archive does not hold.
    ForeignKey,
    /// Renumber the whole batch to start elsewhere (links recomputed from genesis).
    Renumber(u64),
}

fn twist() -> impl Strategy<Value = Twist> {
    prop_oneof![
        6 => Just(Twist::None),
        1 => any::<usize>().prop_map(|rec| Twist::Rewrite { rec }),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(rec, at)| Twist::FlipCiphertext { rec, at }),
        1 => (any::<usize>(), 0usize..32).prop_map(|(rec, at)| Twist::FlipLink { rec, at }),
        1 => Just(Twist::Reannounce),
        1 => Just(Twist::ForeignKey),
        1 => prop_oneof![Just(u64::MAX - 3), Just(i64::MAX as u64), Just(1u64 << 63), 2u64..40].prop_map(Twist::Renumber),
    ]
}

fn apply_twist(mut b: Batch, t: &Twist, prev_of_first: Link) -> Batch {
    let n = b.records.len();
    match *t {
        Twist::None => {}
        Twist::Rewrite { rec } => {
            // A consistent rewrite from record `i` on: new content, links recomputed from the
            // record before it (the honest link of `first - 1` when `i` is the batch's first).
            let i = rec % n;
            b.records[i].ciphertext.push(0x42);
            let mut p = if i > 0 { b.records[i - 1].link } else { prev_of_first };
            for r in &mut b.records[i..] {
                r.link = chain::link(&p, r.seq, r.epoch, &r.ciphertext);
                p = r.link;
            }
        }
        Twist::FlipCiphertext { rec, at } => {
            let ct = &mut b.records[rec % n].ciphertext;
            let len = ct.len();
            ct[at % len] ^= 0x01;
        }
        Twist::FlipLink { rec, at } => b.records[rec % n].link[at] ^= 0x80,
        Twist::Reannounce => b.epochs[0].encapsulation[0] ^= 0xff,
        Twist::ForeignKey => b.epochs[0].archive_key_id = "attacker-key-id".into(),
        Twist::Renumber(start) => {
            let start = start.min(u64::MAX - n as u64 + 1);
            let mut p = chain::genesis(&b.stream);
            for (k, r) in b.records.iter_mut().enumerate() {
                r.seq = start + k as u64;
                r.link = chain::link(&p, r.seq, r.epoch, &r.ciphertext);
                p = r.link;
            }
        }
    }
    b
}

/// (stream index, first, length, twist)
fn step() -> impl Strategy<Value = (usize, u64, u64, Twist)> {
    (0usize..3, 1u64..40, 1u64..8, twist())
}

// =============================================================================================
// The store against the model
// =============================================================================================

#[test]
fn the_store_answers_every_decoded_batch_as_the_api_promises() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    props::check("store_model", 64, proptest::collection::vec(step(), 1..40), |steps| {
        let dir = tempfile::tempdir().unwrap();
        let rules = StoreRules::new(AcceptedKeys::from_public_keys([&archive_keys().public]));
        let store = SqliteStore::open(dir.path(), rules).map_err(|e| fail(e.to_string()))?;
        let devices: Vec<Honest> = (0..3).map(|i| Honest::new("acme", "dev-1", &format!("s-{i}"), 48)).collect();
        let mut models: Vec<Held> = vec![Held::default(); 3];
        for (k, (s, first, len, t)) in steps.iter().enumerate() {
            let last = (first + len - 1).min(48);
            let batch = apply_twist(devices[*s].batch(*first, last), t, devices[*s].prev(*first));
            // The receiver only ever sees batches its decoder accepted.
            let Ok(batch) = Batch::decode(&batch.encode()) else { continue };
            let want = models[*s].expect(&batch);
            let got = rt.block_on(store.submit(batch, Mode::Commit)).map_err(|e| fail(format!("step {k}: store error {e}")))?;
            prop_assert!(same_outcome(&got, &want), "step {}: got {:?}, the API promises {:?}", k, got, want);
        }
        store.close();
        let report = verify(dir.path()).map_err(|e| fail(e.to_string()))?;
        for s in &report.streams {
            prop_assert!(
                s.chain_verified && s.gaps.is_empty() && s.records_without_epoch == 0,
                "stored data does not verify: {:?}",
                s
            );
        }
        Ok(())
    });
}

// =============================================================================================
// The HTTP endpoint
// =============================================================================================

/// What the endpoint may answer, with the `error` code each status carries.
fn documented(status: u16, error: &str) -> bool {
    matches!(
        (status, error),
        (400, "malformed")
            | (403, "forbidden")
            | (409, "gap")
            | (409, "conflict")
            | (413, "too_large")
            | (415, "malformed")
            | (422, "unknown_archive_key")
    )
}

#[derive(Debug, Clone)]
enum Body {
    Bytes(Vec<u8>),
    Structured { stream: usize, first: u64, len: u64, twist: Twist, other_device: bool },
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        3 => props::mutated_corpus("wire_batch").prop_map(Body::Bytes),
        2 => (0usize..3, 1u64..30, 1u64..8, twist(), proptest::bool::weighted(0.1))
            .prop_map(|(stream, first, len, twist, other_device)| Body::Structured { stream, first, len, twist, other_device }),
    ]
}

#[test]
fn the_batch_endpoint_answers_every_body_as_documented_and_never_5xx() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.limits.max_body_bytes = 64 * 1024;
    let rx = rt.block_on(start(cfg));
    // The corpus batches are for acme/dev-1 (fuzz/corpus/wire_batch/).
    let token = add_device(&tokens_path(dir.path()), "acme", "dev-1").unwrap();
    let client = client(rx.ca_pem().unwrap());
    let url = rx.url();
    let devices: Vec<Honest> = (0..3).map(|i| Honest::new("acme", "dev-1", &format!("h-{i}"), 40)).collect();
    let strangers: Vec<Honest> = (0..3).map(|i| Honest::new("globex", "dev-1", &format!("h-{i}"), 40)).collect();
    // The model follows the real receiver from case to case (proptest wants `Fn`).
    let models: std::cell::RefCell<BTreeMap<StreamId, Held>> = Default::default();
    let statuses: std::cell::RefCell<BTreeMap<u16, usize>> = Default::default();

    props::check("batch_endpoint", 512, body(), |body| {
        let bytes = match &body {
            Body::Bytes(b) => b.clone(),
            Body::Structured { stream, first, len, twist, other_device } => {
                let dev = if *other_device { &strangers[*stream] } else { &devices[*stream] };
                apply_twist(dev.batch(*first, (first + len - 1).min(40)), twist, dev.prev(*first)).encode()
            }
        };
        let reply = rt
            .block_on(post_raw(&client, &url, Some(token.expose()), CONTENT_TYPE, bytes.clone()))
            .map_err(|e| fail(format!("no answer: {e}")))?;
        *statuses.borrow_mut().entry(reply.status).or_default() += 1;
        prop_assert!(reply.status < 500, "{} {}", reply.status, reply.body);
        // The local decoder and the model say what the answer must be.
        let want: (u16, Option<Outcome>) = match Batch::decode(&bytes) {
            _ if bytes.len() > 64 * 1024 => (413, None),
            Err(_) => (400, None),
            Ok(b) if b.stream.tenant != "acme" || b.stream.device != "dev-1" => (403, None),
            Ok(b) => {
                let outcome = models.borrow_mut().entry(b.stream.clone()).or_default().expect(&b);
                let status = match outcome {
                    Outcome::Stored(_) => 200,
                    Outcome::UnknownArchiveKey { .. } => 422,
                    _ => 409,
                };
                (status, Some(outcome))
            }
        };
        prop_assert_eq!(reply.status, want.0, "body: {}", reply.body);
        if reply.status == 200 {
            let ack: BatchAck =
                serde_json::from_str(&reply.body).map_err(|e| fail(format!("200 without a BatchAck ({e}): {}", reply.body)))?;
            prop_assert!(
                matches!(&want.1, Some(Outcome::Stored(a)) if *a == ack),
                "ack {:?}, the API promises {:?}",
                ack,
                want.1
            );
        } else {
            let e: ApiError = serde_json::from_str(&reply.body)
                .map_err(|e| fail(format!("{} without an ApiError ({e}): {}", reply.status, reply.body)))?;
            prop_assert!(documented(reply.status, &e.error), "undocumented answer {} {:?}", reply.status, e);
            prop_assert!(!e.reason.is_empty());
            match &want.1 {
                Some(Outcome::Gap { expected }) => prop_assert_eq!((e.error.as_str(), e.expected_seq), ("gap", Some(*expected))),
                Some(Outcome::Conflict { expected, .. }) => {
                    prop_assert_eq!((e.error.as_str(), e.expected_seq), ("conflict", Some(*expected)))
                }
                Some(Outcome::UnknownArchiveKey { .. }) => {
                    prop_assert_eq!((e.error.as_str(), e.expected_seq), ("unknown_archive_key", None));
                    let v: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
                    prop_assert!(v["archive_key_id"].is_string(), "422 without the key id: {}", reply.body);
                }
                _ => prop_assert_eq!(e.expected_seq, None),
            }
        }
        Ok(())
    });
    eprintln!("batch_endpoint answers by status: {:?}", statuses.borrow());
    rt.block_on(rx.shutdown());
    let report = verify(dir.path()).unwrap();
    for s in &report.streams {
        assert!(s.chain_verified && s.gaps.is_empty() && s.records_without_epoch == 0, "stored data does not verify: {s:?}");
    }
    let held: usize = models.borrow().values().map(|m| m.records.len()).sum();
    assert_eq!(report.totals.records as usize, held, "the archive holds exactly what the model stored");
}
