//! Link flags for the shared library (`libverbatim_ffi.so`).
//!
//! 16 KB pages: Google Play requires the LOAD segments of an app's native libraries to be
//! aligned for 16 KB memory pages (Android 15+ devices may use them). Set here, on the cdylib
//! link only, so every Android build gets it whatever RUSTFLAGS or cargo-ndk set. The host
//! Linux build gets the same flag, so the Kotlin tests (PackagingTest) can check the ELF program
//! headers of a library linked exactly like the Android ones.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os == "android" || os == "linux" {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,max-page-size=16384");
    }
}
