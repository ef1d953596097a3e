// Two Swift clients syncing through a real tandem-server with TLS and an HS256 token
// (mirrors bindings/python/tests/test_sync.py).

import Foundation
import XCTest
@testable import Tandem

final class Tokens: TokenProvider, @unchecked Sendable {
    let calls = Box<Int>()
    func fetchToken() throws -> String {
        calls.append(1)
        return makeToken(paths: ["/todos"])
    }
}

final class Errors: ErrorListener, @unchecked Sendable {
    let seen = Box<(UInt64, Bool)>()
    func onError(code: UInt64, message: String, willRetry: Bool) throws { seen.append((code, willRetry)) }
}

final class States: SyncStateListener, @unchecked Sendable {
    let seen = Box<SyncState>()
    func onState(state: SyncState) throws { seen.append(state) }
}

final class Progresses: ProgressListener, @unchecked Sendable {
    let seen = Box<SyncProgress>()
    func onProgress(progress: SyncProgress) throws { seen.append(progress) }
}

final class SyncTests: XCTestCase {
    var dir: URL!
    var server: TestServer!

    override func setUpWithError() throws {
        dir = try tempDir()
        server = try TestServer(dir: dir)
    }

    override func tearDownWithError() throws {
        server?.stop()
        try? FileManager.default.removeItem(at: dir)
    }

    private func open(_ name: String) throws -> Database {
        try Database.open(path: dir.appendingPathComponent(name).path, classes: taskClasses())
    }

    func testTwoClientsSyncAndWait() async throws {
        let a = try open("a.sqlite")
        let b = try open("b.sqlite")
        let sa = try a.sync(options: server.options(), tokenProvider: nil)
        let sb = try b.sync(options: server.options(), tokenProvider: nil)
        let states = States()
        let progress = Progresses()
        let stateHandle = sa.observeState(listener: states)
        let progressHandle = sa.observeProgress(listener: progress)
        try a.write { tx in
            for i in 0..<20 {
                try tx.create(className: "Task", key: .int(value: Int64(i)), values: ["title": .string(value: "from a \(i)")])
            }
        }
        try await sa.waitForUpload(timeoutMs: 30_000)
        try await sb.waitForDownload(timeoutMs: 30_000)
        // No polling: the waits are the guarantee.
        XCTAssertEqual(try b.query(className: "Task", filter: "TRUEPREDICATE", args: []).count(), 20)
        XCTAssertEqual(sa.state(), .connected)
        XCTAssertEqual(sa.progress().uploadTransferred, sa.progress().uploadTransferable)
        eventually { progress.seen.all.contains { $0.uploadTransferred > 0 } }
        sa.stop()
        eventually { states.seen.all.contains(.disconnected) || states.seen.all.contains { if case .error = $0 { return true } else { return false } } }
        stateHandle.cancel()
        progressHandle.cancel()
        sb.stop()
    }

    func testOpenSyncedDownloadsTheState() async throws {
        let a = try open("a.sqlite")
        let sa = try a.sync(options: server.options(), tokenProvider: nil)
        try a.write { tx in
            try tx.create(className: "Task", key: .int(value: 7), values: ["title": .string(value: "seven")])
        }
        try await sa.waitForUpload(timeoutMs: 30_000)
        let synced = try await openSynced(
            path: dir.appendingPathComponent("b.sqlite").path, classes: taskClasses(),
            options: server.options(), tokenProvider: nil, timeoutMs: 30_000)
        XCTAssertNotNil(try synced.database.object(className: "Task", key: .int(value: 7)))
        synced.session.stop()
        sa.stop()
    }

    func testTokenProviderAndErrorEvents() throws {
        let a = try open("a.sqlite")
        let tokens = Tokens()
        let session = try a.sync(options: server.options(token: ""), tokenProvider: tokens)
        eventually { session.state() == .connected }
        XCTAssertGreaterThanOrEqual(tokens.calls.all.count, 1)
        session.stop()
        let b = try open("b.sqlite")
        let errors = Errors()
        let bad = try b.sync(options: server.options(token: makeToken(paths: ["/elsewhere"])), tokenProvider: nil)
        let handle = bad.observeErrors(listener: errors)
        eventually { if case .error = bad.state() { return true } else { return false } }
        eventually { errors.seen.all.contains { $0.0 == 206 && !$0.1 } }
        handle.cancel()
    }

    /// The session's first event is the provider's failure, before any connection: a listener
    /// added with observeErrors after sync() returns can miss it, this one cannot.
    func testTheErrorListenerGivenAtTheStartHearsTheFirstError() throws {
        let a = try open("a.sqlite")
        let errors = Messages()
        let session = try a.sync(options: server.options(token: ""), tokenProvider: FailingOnce(), errorListener: errors)
        eventually { session.state() == .connected }
        eventually { !errors.seen.all.isEmpty }  // delivered on the notifier thread
        session.stop()
        let first = try XCTUnwrap(errors.seen.all.first)
        XCTAssertEqual(first.0, 0)
        XCTAssertTrue(first.2)
        XCTAssertTrue(first.1.contains("auth backend down"), first.1)
    }
}

/// Fails its first call, then hands out tokens.
final class FailingOnce: TokenProvider, @unchecked Sendable {
    let calls = Box<Int>()
    func fetchToken() throws -> String {
        calls.append(1)
        if calls.all.count == 1 { throw CallbackError.Failed(message: "auth backend down") }
        return makeToken(paths: ["/todos"])
    }
}

final class Messages: ErrorListener, @unchecked Sendable {
    let seen = Box<(UInt64, String, Bool)>()
    func onError(code: UInt64, message: String, willRetry: Bool) throws { seen.append((code, message, willRetry)) }
}

final class SyncErrorTests: XCTestCase {
    func testTimeoutsAndBadOptionsAreTypedErrors() async throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let a = try Database.open(path: dir.appendingPathComponent("a.sqlite").path, classes: taskClasses())
        XCTAssertThrowsError(try a.sync(options: SyncOptions(
            url: "http://nowhere", path: "/x", token: "t", caFile: nil, allowInsecure: false,
            clientReset: .manual), tokenProvider: nil)) { error in
            guard case TandemError.Sync = error else { return XCTFail("got \(error)") }
        }
        let session = try a.sync(options: SyncOptions(
            url: "wss://localhost:9/", path: "/x", token: makeToken(paths: ["/x"]), caFile: nil,
            allowInsecure: false, clientReset: .manual), tokenProvider: nil)
        try a.write { tx in
            try tx.create(className: "Task", key: .int(value: 1), values: ["title": .string(value: "x")])
        }
        do {
            try await session.waitForUpload(timeoutMs: 200)
            XCTFail("expected a timeout")
        } catch TandemError.Timeout {
        }
        session.stop()
    }
}
