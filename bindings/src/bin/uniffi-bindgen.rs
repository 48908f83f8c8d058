//! The workspace's bindings generator, version-locked to the `uniffi` the library uses
//! (a mismatched uniffi-bindgen produces bindings that fail their contract check at load).
//!
//! cargo run -p verbatim-ffi --features cli --bin uniffi-bindgen -- \
//!     generate --library target/debug/libverbatim_ffi.so --language kotlin --out-dir OUT

fn main() {
    uniffi::uniffi_bindgen_main()
}
