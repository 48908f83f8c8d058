// swift-tools-version:5.9
//
// Verbatim for iOS, for apps that add this repository as a Swift package
// (File > Add Package Dependencies..., or `.package(url: ..., from: "X.Y.Z")`). The Rust agent
// comes as a prebuilt XCFramework, downloaded from `verbatimFFIURL` and verified against
// `verbatimFFIChecksum` (the SHA-256 of the zip); the Swift is compiled from ios/ here.
//
// Both constants are written by scripts/release-ios.sh, never by hand: it builds the
// XCFramework on a Mac, zips it, computes the checksum and rewrites them; the release is the
// commit that carries them, tagged, with the zip uploaded at that URL. Until a first release
// they hold a placeholder and this manifest cannot be resolved: develop against
// ios/Package.swift instead (the same targets, the XCFramework from a local `path:`).
//
// Why at the repository root: SwiftPM only finds a manifest there, and one repository keeps
// the Swift wrappers, the generated bindings and the Rust they were generated from at the
// same tag (ios/README.md, "Distribution").
import PackageDescription

// release-ios: begin (rewritten by scripts/release-ios.sh)
let verbatimFFIURL = "https://example.invalid/verbatim/unreleased/VerbatimFFIFFI.xcframework.zip"
let verbatimFFIChecksum = "0000000000000000000000000000000000000000000000000000000000000000"
// release-ios: end

let package = Package(
    name: "Verbatim",
    platforms: [.iOS(.v15)],
    products: [
        .library(name: "Verbatim", targets: ["Verbatim"]),
    ],
    targets: [
        // The Rust core (see ios/Package.swift), prebuilt.
        .binaryTarget(name: "VerbatimFFIFFI", url: verbatimFFIURL, checksum: verbatimFFIChecksum),
        .target(
            name: "VerbatimFFI",
            dependencies: ["VerbatimFFIFFI"],
            path: "ios/Sources/VerbatimFFI",
            linkerSettings: [
                .linkedFramework("Security"),
                .linkedFramework("CoreFoundation"),
            ]
        ),
        .target(
            name: "Verbatim",
            dependencies: ["VerbatimFFI"],
            path: "ios/Sources/Verbatim",
            resources: [.copy("PrivacyInfo.xcprivacy")]
        ),
        .testTarget(
            name: "VerbatimTests",
            dependencies: ["Verbatim"],
            path: "ios/Tests/VerbatimTests"
        ),
    ]
)
