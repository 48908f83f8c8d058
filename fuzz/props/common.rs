//! Shared by the property tests with generated inputs (`core/tests/fuzz_props.rs`,
//! `receiver/tests/fuzz_props.rs`, included with `#[path]`): the fixed-seed runner, the seed
//! corpus under `fuzz/corpus/<target>/` (the same files the cargo-fuzz targets start from),
//! and byte-level mutations of corpus entries.
//!
//! Environment:
//! - `VERBATIM_FUZZ_CASES=N`: cases per property (default: each property's own, a few
//!   seconds in CI). `VERBATIM_FUZZ_CASES=1000000` runs for a long time.
//! - `VERBATIM_FUZZ_SEED=S`: the seed (default fixed, so CI runs are reproducible).
//! - `VERBATIM_FUZZ_WRITE_CORPUS=1`: (re)write the generated seed corpus files.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};

/// Default seed: fixed, so a CI failure reproduces.
pub const DEFAULT_SEED: u64 = 0x5645_5242_4154_494d; // "VERBATIM"

pub fn cases(default: u32) -> u32 {
    std::env::var("VERBATIM_FUZZ_CASES").ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

pub fn seed() -> u64 {
    std::env::var("VERBATIM_FUZZ_SEED").ok().and_then(|v| v.trim().parse().ok()).unwrap_or(DEFAULT_SEED)
}

/// A runner with a fixed seed, no persistence files, and `cases(default)` cases.
pub fn runner(default_cases: u32) -> TestRunner {
    let config = Config {
        cases: cases(default_cases),
        rng_seed: RngSeed::Fixed(seed()),
        failure_persistence: None,
        max_shrink_iters: 2048,
        ..Config::default()
    };
    TestRunner::new(config)
}

/// Runs `test` over `strategy`; panics with the minimal failing input (shrunk) and the seed.
pub fn check<S: Strategy>(name: &str, default_cases: u32, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let mut runner = runner(default_cases);
    let started = std::time::Instant::now();
    let result = runner.run(&strategy, test);
    eprintln!("{name}: {} cases, seed {}, {:.1} s", cases(default_cases), seed(), started.elapsed().as_secs_f64());
    if let Err(e) = result {
        panic!("{name} failed (seed {}; rerun with VERBATIM_FUZZ_SEED={}): {e}", seed(), seed());
    }
}

pub fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus")
}

/// Every file of `fuzz/corpus/<target>/`, sorted by name.
pub fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_root().join(target);
    let mut out: Vec<(String, Vec<u8>)> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_file())
            .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
            .collect(),
        Err(_) => Vec::new(),
    };
    out.sort();
    out
}

/// Writes `bytes` as `fuzz/corpus/<target>/<name>` when `VERBATIM_FUZZ_WRITE_CORPUS=1`.
pub fn maybe_write_corpus(target: &str, name: &str, bytes: &[u8]) {
    if std::env::var("VERBATIM_FUZZ_WRITE_CORPUS").as_deref() == Ok("1") {
        let dir = corpus_root().join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// The seed corpus of `target`, which must not be empty (it is kept in the repository).
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    let c = corpus(target);
    assert!(!c.is_empty(), "no seed corpus in fuzz/corpus/{target}/ (VERBATIM_FUZZ_WRITE_CORPUS=1 writes it)");
    c.into_iter().map(|(_, b)| b).collect()
}

/// One byte-level change, positions taken modulo the input's length.
#[derive(Debug, Clone)]
pub enum Mutation {
    FlipBit {
        at: usize,
        bit: u8,
    },
    SetByte {
        at: usize,
        value: u8,
    },
    /// Big-endian integer fields are where decoders overflow: set 2, 4 or 8 bytes at once.
    SetWord {
        at: usize,
        width: u8,
        value: u64,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    Delete {
        at: usize,
        len: usize,
    },
    Truncate {
        at: usize,
    },
    Duplicate {
        at: usize,
        len: usize,
    },
}

pub fn mutation() -> BoxedStrategy<Mutation> {
    let interesting = prop_oneof![
        Just(0u64),
        Just(1u64),
        Just(0xFFu64),
        Just(0xFFFFu64),
        Just(0x7FFF_FFFFu64),
        Just(0xFFFF_FFFFu64),
        Just(i64::MAX as u64),
        Just(u64::MAX),
        Just(u64::MAX - 1),
        any::<u64>(),
    ];
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, value)| Mutation::SetByte { at, value }),
        (any::<usize>(), prop_oneof![Just(2u8), Just(4u8), Just(8u8)], interesting)
            .prop_map(|(at, width, value)| Mutation::SetWord { at, width, value }),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..16)).prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1usize..64).prop_map(|(at, len)| Mutation::Delete { at, len }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), 1usize..64).prop_map(|(at, len)| Mutation::Duplicate { at, len }),
    ]
    .boxed()
}

pub fn apply(input: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut b = input.to_vec();
    for m in mutations {
        let n = b.len();
        match m {
            Mutation::FlipBit { at, bit } if n > 0 => b[at % n] ^= 1 << bit,
            Mutation::SetByte { at, value } if n > 0 => b[at % n] = *value,
            Mutation::SetWord { at, width, value } if n >= *width as usize => {
                let w = *width as usize;
                let at = at % (n - w + 1);
                let bytes = value.to_be_bytes();
                b[at..at + w].copy_from_slice(&bytes[8 - w..]);
            }
            Mutation::Insert { at, bytes } => {
                let at = at % (n + 1);
                b.splice(at..at, bytes.iter().copied());
            }
            Mutation::Delete { at, len } if n > 0 => {
                let at = at % n;
                let end = (at + len).min(n);
                b.drain(at..end);
            }
            Mutation::Truncate { at } => b.truncate(at % (n + 1)),
            Mutation::Duplicate { at, len } if n > 0 => {
                let at = at % n;
                let end = (at + len).min(n);
                let chunk: Vec<u8> = b[at..end].to_vec();
                b.splice(end..end, chunk);
            }
            _ => {}
        }
    }
    b
}

/// Inputs for a byte-level target: a corpus entry with 0 to 8 mutations (most cases), or
/// arbitrary bytes.
pub fn mutated_corpus(target: &str) -> BoxedStrategy<Vec<u8>> {
    let seeds = seeds(target);
    let from_corpus = (proptest::sample::select(seeds), proptest::collection::vec(mutation(), 0..8))
        .prop_map(|(seed, muts)| apply(&seed, &muts));
    prop_oneof![
        6 => from_corpus,
        1 => proptest::collection::vec(any::<u8>(), 0..512),
    ]
    .boxed()
}

/// Text for identifiers and content: ASCII, any Unicode (control characters included), or
/// the empty string; sometimes long.
pub fn text() -> BoxedStrategy<String> {
    prop_oneof![
        4 => "[a-zA-Z0-9 _.:+@/-]{0,24}",
        2 => any::<String>(),
        1 => Just(String::new()),
        1 => "[\\x00-\\x1f\\x7f-\\u{9f}]{1,4}",
        1 => (1usize..3000).prop_map(|n| "é".repeat(n)),
    ]
    .boxed()
}
