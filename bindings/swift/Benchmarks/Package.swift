// swift-tools-version:5.9
// The Swift benchmark: Tandem's typed and untyped API beside the system libsqlite3 called from
// Swift, in one run (not part of `swift test`). Build and run with bindings/swift/bench.sh.
//
// libtandem.so is found as ../Package.swift finds it ($TANDEM_LIB_DIR, $LD_LIBRARY_PATH, or
// ../../../target/debug); SQLite is the system's libsqlite3.so.0 (no -dev headers needed:
// Sources/CSQLite declares the calls used).
import Foundation
import PackageDescription

var libDirs: [String] = []
if let dir = Context.environment["TANDEM_LIB_DIR"], !dir.isEmpty { libDirs.append(dir) }
for dir in (Context.environment["LD_LIBRARY_PATH"] ?? "").split(separator: ":") where !dir.isEmpty {
    libDirs.append(String(dir))
}
libDirs.append(Context.packageDirectory + "/../../../target/release")
#if os(Linux)
let searchFlags = libDirs.flatMap { ["-L", $0, "-Xlinker", "-rpath", "-Xlinker", $0] }
let sqliteFlags = ["-Xlinker", "-l:libsqlite3.so.0"]
#else
let searchFlags = libDirs.flatMap { ["-L", $0] }
let sqliteFlags = ["-lsqlite3"]
#endif

let package = Package(
    name: "TandemBenchmarks",
    platforms: [.macOS(.v12)],
    dependencies: [.package(name: "Tandem", path: "..")],
    targets: [
        .target(name: "CSQLite", path: "Sources/CSQLite"),
        .executableTarget(
            name: "TandemBenchmark",
            dependencies: [.product(name: "Tandem", package: "Tandem"), "CSQLite"],
            path: "Sources/TandemBenchmark",
            linkerSettings: [.unsafeFlags(searchFlags + sqliteFlags)]
        ),
    ]
)
