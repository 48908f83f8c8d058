//! An opened record's plaintext on arbitrary bytes: never panics; errors are `Corrupt`; what
//! decodes round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use verbatim_core::ErrorKind;
use verbatim_core::record::Record;

fuzz_target!(|data: &[u8]| {
    match Record::decode(data) {
        Ok(r) => assert_eq!(Record::decode(&r.encode()).expect("re-encoded record decodes"), r),
        Err(e) => assert_eq!(e.kind, ErrorKind::Corrupt),
    }
});
