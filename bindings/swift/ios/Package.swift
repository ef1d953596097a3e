// swift-tools-version:5.9
// Tandem for iOS apps: the Swift sources over TandemFFI.xcframework (static libtandem.a for
// device and simulator, built by ../build-xcframework.sh, which also copies the Swift sources
// into ios/Sources/Tandem). Needs macOS and Xcode; see ../README.md.
import PackageDescription

let package = Package(
    name: "Tandem",
    platforms: [.iOS(.v15), .macOS(.v12)],
    products: [
        .library(name: "Tandem", targets: ["Tandem"]),
    ],
    targets: [
        // Module `TandemFFI` (the uniffi header and module map) with the static library.
        .binaryTarget(name: "TandemFFI", path: "TandemFFI.xcframework"),
        .target(
            name: "Tandem",
            dependencies: ["TandemFFI"],
            path: "Sources/Tandem",
            // SQLite is bundled in libtandem.a (rusqlite "bundled"); Security is linked for the
            // TLS root lookup. Unverified: no machine here has Xcode.
            linkerSettings: [.linkedFramework("Security")]
        ),
    ]
)
