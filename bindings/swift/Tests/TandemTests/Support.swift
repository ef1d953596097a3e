// Test fixtures: a schema, temp directories, HS256 tokens and a real `tandem-server` with TLS.

import Foundation
import XCTest
@testable import Tandem

/// The repository root (this file is bindings/swift/Tests/TandemTests/Support.swift).
let repoRoot = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().deletingLastPathComponent()

let jwtSecret = Array("swift binding tests secret 32b!!".utf8)

func prop(_ name: String, _ type: PropertyType, collection: Tandem.Collection = .single) -> PropertySpec {
    PropertySpec(name: name, propertyType: type, nullable: false, collection: collection, linkTarget: nil)
}

func taskClasses() -> [ClassSpec] {
    [ClassSpec(name: "Task", primaryKey: "_id", properties: [
        prop("_id", .int),
        prop("title", .string),
        prop("done", .bool),
        prop("count", .int),
        prop("tags", .string, collection: .list),
    ])]
}

func tempDir() throws -> URL {
    let dir = FileManager.default.temporaryDirectory
        .appendingPathComponent("tandem-swift-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return dir
}

/// Polls `check` until it holds (listeners run on Tandem's notifier thread).
func eventually(_ seconds: Double = 30, _ check: () -> Bool, file: StaticString = #filePath, line: UInt = #line) {
    let deadline = Date().addingTimeInterval(seconds)
    while !check() {
        if Date() > deadline { XCTFail("timed out", file: file, line: line); return }
        Thread.sleep(forTimeInterval: 0.01)
    }
}

/// Ends the test process if a test runs past `seconds` (an awaited stream that never yields
/// would otherwise hang the suite, and CI, forever). Cancel it in tearDown.
func watchdog(_ seconds: Double = 90, _ name: String) -> DispatchWorkItem {
    let item = DispatchWorkItem {
        FileHandle.standardError.write("watchdog: \(name) still running after \(seconds) s\n".data(using: .utf8)!)
        exit(3)
    }
    DispatchQueue.global().asyncAfter(deadline: .now() + seconds, execute: item)
    return item
}

/// A thread-safe box for what listeners see.
final class Box<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [T] = []
    func append(_ item: T) { lock.lock(); items.append(item); lock.unlock() }
    var all: [T] { lock.lock(); defer { lock.unlock() }; return items }
}

// MARK: - HS256 (Foundation on Linux has no CryptoKit, and swift-crypto is not reachable here)

private func sha256(_ message: [UInt8]) -> [UInt8] {
    let k: [UInt32] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
    ]
    var h: [UInt32] = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]
    var data = message
    let bitLength = UInt64(message.count) * 8
    data.append(0x80)
    while data.count % 64 != 56 { data.append(0) }
    for i in (0..<8).reversed() { data.append(UInt8((bitLength >> (UInt64(i) * 8)) & 0xff)) }
    func rotr(_ x: UInt32, _ n: UInt32) -> UInt32 { (x >> n) | (x << (32 - n)) }
    for chunk in stride(from: 0, to: data.count, by: 64) {
        var w = [UInt32](repeating: 0, count: 64)
        for i in 0..<16 {
            let j = chunk + i * 4
            w[i] = UInt32(data[j]) << 24 | UInt32(data[j + 1]) << 16 | UInt32(data[j + 2]) << 8 | UInt32(data[j + 3])
        }
        for i in 16..<64 {
            let s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3)
            let s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10)
            w[i] = w[i - 16] &+ s0 &+ w[i - 7] &+ s1
        }
        var (a, b, c, d, e, f, g, hh) = (h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7])
        for i in 0..<64 {
            let s1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)
            let ch = (e & f) ^ (~e & g)
            let t1 = hh &+ s1 &+ ch &+ k[i] &+ w[i]
            let s0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)
            let maj = (a & b) ^ (a & c) ^ (b & c)
            let t2 = s0 &+ maj
            (hh, g, f, e, d, c, b, a) = (g, f, e, d &+ t1, c, b, a, t1 &+ t2)
        }
        h[0] = h[0] &+ a; h[1] = h[1] &+ b; h[2] = h[2] &+ c; h[3] = h[3] &+ d
        h[4] = h[4] &+ e; h[5] = h[5] &+ f; h[6] = h[6] &+ g; h[7] = h[7] &+ hh
    }
    return h.flatMap { v in (0..<4).reversed().map { UInt8((v >> (UInt32($0) * 8)) & 0xff) } }
}

func hmacSHA256(key: [UInt8], message: [UInt8]) -> [UInt8] {
    var key = key.count > 64 ? sha256(key) : key
    key += [UInt8](repeating: 0, count: 64 - key.count)
    let inner = sha256(key.map { $0 ^ 0x36 } + message)
    return sha256(key.map { $0 ^ 0x5c } + inner)
}

func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

private func b64url(_ bytes: [UInt8]) -> String {
    Data(bytes).base64EncodedString()
        .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
        .replacingOccurrences(of: "=", with: "")
}

/// An HS256 JWT for these paths, as the server expects (sub, exp, paths). `subject` is the
/// user (`%%user.id` in the server's flexible sync rules).
func makeToken(paths: [String], seconds: Int = 3600, secret: [UInt8] = jwtSecret, subject: String = "swift")
    -> String
{
    let header = b64url(Array(#"{"alg":"HS256","typ":"JWT"}"#.utf8))
    let exp = Int(Date().timeIntervalSince1970) + seconds
    let pathsJSON = paths.map { "\"\($0)\"" }.joined(separator: ",")
    let claims = b64url(Array(#"{"sub":"\#(subject)","exp":\#(exp),"paths":[\#(pathsJSON)]}"#.utf8))
    let signature = b64url(hmacSHA256(key: secret, message: Array("\(header).\(claims)".utf8)))
    return "\(header).\(claims).\(signature)"
}

// MARK: - A real tandem-server

/// Where cargo put the server: $TANDEM_SERVER_BIN, a directory of $LD_LIBRARY_PATH (cargo's
/// target/debug, which also holds libtandem.so), or <repo>/target/debug.
func serverBinary() -> String? {
    let env = ProcessInfo.processInfo.environment
    if let bin = env["TANDEM_SERVER_BIN"], !bin.isEmpty { return bin }
    var dirs = (env["LD_LIBRARY_PATH"] ?? "").split(separator: ":").map(String.init)
    dirs.append(repoRoot.appendingPathComponent("target/debug").path)
    return dirs.map { $0 + "/tandem-server" }.first { FileManager.default.isExecutableFile(atPath: $0) }
}

func which(_ tool: String) -> String? {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
    return path.split(separator: ":").map { "\($0)/\(tool)" }
        .first { FileManager.default.isExecutableFile(atPath: $0) }
}

@discardableResult
func run(_ executable: String, _ args: [String]) throws -> Int32 {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = args
    p.standardOutput = FileHandle.nullDevice
    p.standardError = FileHandle.nullDevice
    try p.run()
    p.waitUntilExit()
    return p.terminationStatus
}

struct SetupError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

final class TestServer {
    let process: Process
    let url: String
    let caFile: String
    /// The server's stderr lines (drained for the server's whole life).
    let log: ServerLog

    /// Starts the server on a free loopback port with a throwaway certificate (openssl);
    /// `extraArgs` are added to its command line (e.g. `--app-id`, `--flx-rules`).
    init(dir: URL, extraArgs: [String] = []) throws {
        guard let binary = serverBinary() else {
            throw SetupError("build the server first: cargo build --features server --bin tandem-server "
                + "(looked in $TANDEM_SERVER_BIN, $LD_LIBRARY_PATH and \(repoRoot.path)/target/debug)")
        }
        guard let openssl = which("openssl") else { throw SetupError("openssl is not installed") }
        let cert = dir.appendingPathComponent("cert.pem").path
        let key = dir.appendingPathComponent("key.pem").path
        let status = try run(openssl, [
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost", "-addext", "basicConstraints=critical,CA:FALSE",
        ])
        guard status == 0 else { throw SetupError("openssl req failed with status \(status)") }
        let secret = dir.appendingPathComponent("secret")
        try Data(jwtSecret).write(to: secret)
        // Port 0 is not offered by the server's CLI: pick one from a random range and retry.
        var lastError = ""
        for _ in 0..<20 {
            let port = Int.random(in: 20000..<60000)
            let p = Process()
            p.executableURL = URL(fileURLWithPath: binary)
            p.arguments = [
                "--listen", "127.0.0.1:\(port)", "--data-dir", dir.appendingPathComponent("data").path,
                "--tls-cert", cert, "--tls-key", key, "--jwt-secret-file", secret.path,
            ] + extraArgs
            let stderr = Pipe()
            p.standardError = stderr
            p.standardOutput = FileHandle.nullDevice
            try p.run()
            // The server logs through `tracing`: its listening line need not be the first, so scan
            // the lines, and keep draining stderr afterwards so a chatty server never blocks on a
            // full pipe.
            let log = ServerLog(stderr.fileHandleForReading)
            let line = log.waitForLine(containing: "tandem-server listening on ", seconds: 20)
            if let line, let addr = line.components(separatedBy: "tandem-server listening on ").last?
                .split(separator: " ").first, let listened = addr.split(separator: ":").last
            {
                process = p
                url = "wss://localhost:\(listened.filter(\.isNumber))/"
                caFile = cert
                self.log = log
                return
            }
            let lines = log.lines
            lastError = lines.suffix(5).joined(separator: "\n")
            p.terminate()
            p.waitUntilExit()
        }
        throw SetupError("tandem-server did not start: \(lastError)")
    }

    func options(path: String = "/todos", token: String? = nil) -> SyncOptions {
        SyncOptions(url: url, path: path, token: token ?? makeToken(paths: [path]), caFile: caFile,
                    allowInsecure: false, clientReset: .recoverOrDiscard)
    }

    /// Flexible sync options for `user`: the server's flexible sync file `/flx` (served when
    /// the server runs with `--app-id`), a token for it whose `sub` is `user`.
    func flexibleOptions(user: String) -> SyncOptions {
        .flexible(url: url, token: makeToken(paths: ["/flx"], subject: user), caFile: caFile)
    }

    func stop() {
        process.terminate()
        process.waitUntilExit()
    }
}

/// Reads a process's stderr line by line on its own thread until end of file, keeping the lines.
final class ServerLog: @unchecked Sendable {
    private let condition = NSCondition()
    private var stored: [String] = []
    private var ended = false

    init(_ handle: FileHandle) {
        Thread.detachNewThread { [self] in
            var pending: [UInt8] = []
            while true {
                let chunk = handle.availableData
                if chunk.isEmpty { break }
                pending += chunk
                while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                    let line = String(decoding: pending[..<newline], as: UTF8.self)
                    pending.removeSubrange(...newline)
                    condition.lock(); stored.append(line); condition.broadcast(); condition.unlock()
                }
            }
            condition.lock(); ended = true; condition.broadcast(); condition.unlock()
        }
    }

    var lines: [String] { condition.lock(); defer { condition.unlock() }; return stored }

    /// The first line containing `text`, waiting up to `seconds`; nil if stderr ends or time is up.
    func waitForLine(containing text: String, seconds: Double) -> String? {
        let deadline = Date().addingTimeInterval(seconds)
        condition.lock()
        defer { condition.unlock() }
        while true {
            if let line = stored.first(where: { $0.contains(text) }) { return line }
            if ended || !condition.wait(until: deadline) { return nil }
        }
    }
}
