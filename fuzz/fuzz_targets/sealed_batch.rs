//! Opening on the archive side: arbitrary bytes decoded as a batch and opened with a fixed
//! archive key (the seed corpus holds batches sealed to it): never panics; errors are typed
//! (`Corrupt` or `Crypto`); only an unaltered batch opens, and then every record decodes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use verbatim_core::ErrorKind;
use verbatim_core::archive::Opener;
use verbatim_core::chain;
use verbatim_core::seal::ArchiveSecretKey;
use verbatim_core::wire::Batch;

/// The corpus's archive key (fuzz/corpus/sealed_batch/ is sealed to its public key).
const ARCHIVE_SECRET: [u8; 32] = [7; 32];

fuzz_target!(|data: &[u8]| {
    let Ok(batch) = Batch::decode(data) else { return };
    let mut opener = Opener::new(ArchiveSecretKey::from_bytes(&ARCHIVE_SECRET).unwrap());
    let first = batch.records[0].seq;
    // Open as the continuation of the held chain: from the genesis link for a batch starting at
    // 1; otherwise from the predecessor link the batch cannot prove (it must not open).
    let (prev_seq, prev_link) = if first == 1 { (0, chain::genesis(&batch.stream)) } else { (first - 1, [0u8; 32]) };
    match opener.open_batch(&batch, prev_seq, prev_link) {
        Ok(records) => assert_eq!(records.len(), batch.records.len()),
        Err(e) => assert!(matches!(e.kind, ErrorKind::Corrupt | ErrorKind::Crypto), "untyped: {e}"),
    }
});
