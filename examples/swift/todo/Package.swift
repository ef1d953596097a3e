// swift-tools-version:5.9
// The todo example on the Swift binding: an executable over ../../../bindings/swift (a path
// dependency, so the binding's package stays as it is). The library `libtandem.so` is found as that
// package finds it: $TANDEM_LIB_DIR, the directories of $LD_LIBRARY_PATH, or ../../../target/debug.
// (It lives in examples/swift/todo, not examples/swift: SwiftPM names a path dependency after its
// directory, and a root package also called `swift` would clash with bindings/swift.)
//
//   LD_LIBRARY_PATH=/dir/with/libtandem ../shared/tools/with-swift swift build --package-path examples/swift/todo
//   LD_LIBRARY_PATH=... ../shared/tools/with-swift examples/swift/todo/.build/debug/TodoExample --db ... list
import Foundation
import PackageDescription

let packageDir = Context.packageDirectory
var libDirs: [String] = []
if let dir = Context.environment["TANDEM_LIB_DIR"], !dir.isEmpty { libDirs.append(dir) }
for dir in (Context.environment["LD_LIBRARY_PATH"] ?? "").split(separator: ":") where !dir.isEmpty {
    libDirs.append(String(dir))
}
libDirs.append(packageDir + "/../../../target/debug")
#if os(Linux)
let searchFlags = libDirs.flatMap { ["-L", $0, "-Xlinker", "-rpath", "-Xlinker", $0] }
#else
let searchFlags = libDirs.flatMap { ["-L", $0] }
#endif

let package = Package(
    name: "TandemExamples",
    platforms: [.macOS(.v12)],
    dependencies: [
        .package(name: "Tandem", path: "../../../bindings/swift"),
    ],
    targets: [
        .executableTarget(
            name: "TodoExample",
            dependencies: [.product(name: "Tandem", package: "Tandem")],
            path: "Sources/TodoExample",
            linkerSettings: [.unsafeFlags(searchFlags)]
        ),
    ]
)
