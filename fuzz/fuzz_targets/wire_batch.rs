//! The receiver's batch decoder on arbitrary bytes: never panics; what decodes is canonical
//! (encodes back to the same bytes) and contiguous.
#![no_main]

use libfuzzer_sys::fuzz_target;
use verbatim_core::wire::Batch;

fuzz_target!(|data: &[u8]| {
    match Batch::decode(data) {
        Ok(b) => {
            assert_eq!(b.encoded_len(), data.len());
            assert!(b.encode() == data, "re-encoding differs");
            assert!(b.records.windows(2).all(|w| w[0].seq.checked_add(1) == Some(w[1].seq)));
        }
        Err(e) => assert!(!e.reason.is_empty()),
    }
});
