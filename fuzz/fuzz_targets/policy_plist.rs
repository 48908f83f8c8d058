//! A policy file as an XML or binary property list (what `verbatim policy check` and MDM
//! exports hand over), then the policy parser: never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use verbatim_core::policy::{self, file};

fuzz_target!(|data: &[u8]| {
    if let Ok(tree) = file::from_bytes(data) {
        let _ = policy::parse(&tree);
    }
});
