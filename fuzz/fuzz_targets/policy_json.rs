//! A policy file as JSON bytes, then the policy parser on whatever tree it holds: never panics;
//! a valid policy round-trips through the JSON the agent stores.
#![no_main]

use libfuzzer_sys::fuzz_target;
use verbatim_core::policy::{self, Value, file};

fuzz_target!(|data: &[u8]| {
    let Ok(tree) = file::from_json_bytes(data) else { return };
    if let Ok(parsed) = policy::parse(&tree) {
        let json = serde_json::to_vec(&tree).expect("a tree serialises");
        let back: Value = serde_json::from_slice(&json).expect("the stored tree loads");
        assert_eq!(back, tree);
        let again = policy::parse(&back).expect("still valid").policy;
        assert_eq!(again.fingerprint(), parsed.policy.fingerprint());
    }
});
