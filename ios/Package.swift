// swift-tools-version:5.9
//
// Verbatim for iOS: the Rust agent (a static library per platform in an XCFramework, built by
// build-xcframework.sh), its UniFFI Swift bindings (generated, committed) and thin Swift
// wrappers. Every decision is taken in Rust; the Swift here only adapts the platform.
//
// Compiler: the generated bindings use `nonisolated(unsafe)` (SE-0412), so building needs
// Swift 5.10 or newer (Xcode 15.3+); the hand-written wrappers stay Swift 5.9-compatible.
import PackageDescription

let package = Package(
    name: "Verbatim",
    platforms: [.iOS(.v15)],
    products: [
        .library(name: "Verbatim", targets: ["Verbatim"]),
    ],
    targets: [
        // The Rust core: libverbatim_ffi.a for iOS devices (arm64) and the simulator (arm64 +
        // x86_64), with the C header and module map of the C module `VerbatimFFIFFI`.
        // Built by `ios/build-xcframework.sh` on a Mac; not committed. (Named after the C
        // module it provides: a package cannot have two targets called `VerbatimFFI`, and
        // SwiftPM wants a binary target named like its artifact.)
        .binaryTarget(name: "VerbatimFFIFFI", path: "VerbatimFFIFFI.xcframework"),
        // The UniFFI-generated Swift (`import VerbatimFFI`), committed; scripts/test-swift.sh
        // fails when it drifts from the library.
        .target(
            name: "VerbatimFFI",
            dependencies: ["VerbatimFFIFFI"],
            path: "Sources/VerbatimFFI",
            linkerSettings: [
                // What the Rust static library calls into (rustls-platform-verifier and
                // security-framework: the system trust store; core-foundation). Rust static
                // libraries carry no link directives for Xcode's linker.
                .linkedFramework("Security"),
                .linkedFramework("CoreFoundation"),
            ]
        ),
        // The thin wrappers (`import Verbatim`, which re-exports VerbatimFFI), and the
        // package's privacy manifest (what the Rust library, its SQLite and the wrappers use
        // and send: ios/README.md, "Privacy manifest"). A binary target cannot carry
        // resources, so it ships with this target.
        .target(
            name: "Verbatim",
            dependencies: ["VerbatimFFI"],
            path: "Sources/Verbatim",
            resources: [.copy("PrivacyInfo.xcprivacy")]
        ),
        // XCTest against the real library: run on an iOS simulator (ios/README.md).
        .testTarget(
            name: "VerbatimTests",
            dependencies: ["Verbatim"],
            path: "Tests/VerbatimTests"
        ),
    ]
)
