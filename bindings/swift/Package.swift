// swift-tools-version:5.9
// The Swift package for Tandem on Linux and macOS hosts: the uniffi-generated `Tandem.swift`
// (committed; `test.sh` checks it matches the library) over the `tandem` cdylib built by cargo.
//
// The library is looked for in, in order: $TANDEM_LIB_DIR, each directory of $LD_LIBRARY_PATH,
// and ../../target/debug (cargo's default). At run time LD_LIBRARY_PATH must point to it
// (on Linux the test binary also carries those directories as its rpath).
// For iOS apps use ios/Package.swift (an XCFramework built by build-xcframework.sh).
import Foundation
import PackageDescription

let packageDir = Context.packageDirectory
var libDirs: [String] = []
if let dir = Context.environment["TANDEM_LIB_DIR"], !dir.isEmpty { libDirs.append(dir) }
for dir in (Context.environment["LD_LIBRARY_PATH"] ?? "").split(separator: ":") where !dir.isEmpty {
    libDirs.append(String(dir))
}
libDirs.append(packageDir + "/../../target/debug")
// -L to link; on Linux also an rpath, so the test binary finds the library without
// LD_LIBRARY_PATH when it is where it was at link time.
#if os(Linux)
let searchFlags = libDirs.flatMap { ["-L", $0, "-Xlinker", "-rpath", "-Xlinker", $0] }
#else
let searchFlags = libDirs.flatMap { ["-L", $0] }
#endif

let package = Package(
    name: "Tandem",
    platforms: [.macOS(.v12), .iOS(.v15)],
    products: [
        .library(name: "Tandem", targets: ["Tandem"]),
    ],
    targets: [
        // The C header and module map uniffi generates (TandemFFI.h, module.modulemap).
        .target(name: "TandemFFI", path: "Sources/TandemFFI"),
        .target(
            name: "Tandem",
            dependencies: ["TandemFFI"],
            path: "Sources/Tandem",
            linkerSettings: [.linkedLibrary("tandem"), .unsafeFlags(searchFlags)]
        ),
        // Run by ExitTests: ends the process with Tandem's threads calling into Swift. Not in
        // `products`, so apps depending on this package do not see it.
        .executableTarget(
            name: "TandemExitCheck",
            dependencies: ["Tandem"],
            path: "Sources/TandemExitCheck",
            linkerSettings: [.unsafeFlags(searchFlags)]
        ),
        .testTarget(
            name: "TandemTests",
            dependencies: ["Tandem"],
            path: "Tests/TandemTests",
            linkerSettings: [.unsafeFlags(searchFlags)]
        ),
    ]
)
