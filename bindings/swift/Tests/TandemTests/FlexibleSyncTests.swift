// Flexible sync through a real tandem-server (`--app-id`, so it serves `/flx`): subscriptions
// bootstrapping what they match, narrowing, named replace and remove, set states, a query the
// server refuses, and (with `--flx-rules`) a compensating write.
// (Mirrors tests/sync_flexible.rs with the typed Swift API.)

import Foundation
import XCTest
@testable import Tandem

struct Team: TandemObject, Equatable {
    var _id: Int
    var name: String
}

struct Chore: TandemObject, Equatable {
    var _id: Int
    var title: String
    var count: Int
    var done = false
    var owner = ""
    var team: Link<Team>? = nil
}

/// The first event of `stream` that `predicate` accepts, or nil after `seconds`.
func firstEvent(_ stream: AsyncStream<SyncErrorEvent>, seconds: Double,
                where predicate: @escaping @Sendable (SyncErrorEvent) -> Bool) async -> SyncErrorEvent?
{
    await withTaskGroup(of: SyncErrorEvent?.self) { group in
        group.addTask {
            for await event in stream where predicate(event) { return event }
            return nil
        }
        group.addTask {
            try? await Task.sleep(nanoseconds: UInt64(seconds * 1e9))
            return nil
        }
        let first = await group.next() ?? nil
        group.cancelAll()
        return first
    }
}

/// A fixture for one flexible sync test: a temp directory and a server with an app (and rules).
class FlexibleSyncFixture: XCTestCase {
    var dir: URL!
    var server: TestServer!
    var guardTimer: DispatchWorkItem?

    /// The server's extra arguments (the app id; subclasses add rules).
    func serverArgs(dir: URL) throws -> [String] { ["--app-id", "swift-flx-test"] }

    // The server is started and stopped here, outside the async test: on Linux,
    // `Process.waitUntilExit()` called from an async test never returns.
    override func setUpWithError() throws {
        guardTimer = watchdog(150, name)
        dir = try tempDir()
        server = try TestServer(dir: dir, extraArgs: try serverArgs(dir: dir))
    }

    override func tearDownWithError() throws {
        server?.stop()
        try? FileManager.default.removeItem(at: dir)
        guardTimer?.cancel()
    }

    func open(_ name: String) throws -> Database {
        try Database.open(path: dir.appendingPathComponent(name).path, models: [Chore.self, Team.self])
    }

    /// A session of `user` on `/flx`.
    func sync(_ db: Database, _ user: String) throws -> SyncSession {
        try db.sync(options: server.flexibleOptions(user: user), tokenProvider: nil)
    }

    /// The ids of the chores `db` holds, in order.
    func ids(_ db: Database) throws -> [Int] {
        try db.objects(Chore.self, where: "TRUEPREDICATE SORT(_id ASC)").snapshot().map(\._id)
    }

    /// A client subscribed to every Chore and Team, its session started.
    func writer(_ user: String = "writer") throws -> (Database, SyncSession) {
        let db = try open("\(user)-writer.sqlite")
        try db.updateSubscriptions { subs in
            try subs.add(Chore.self, name: "all")
            try subs.add(Team.self, name: "teams")
        }
        return (db, try sync(db, user))
    }
}

final class FlexibleSyncTests: FlexibleSyncFixture {
    func testSubscriptionsBootstrapNarrowReplaceAndRemove() async throws {
        let (w, ws) = try writer()
        defer { ws.stop() }
        try w.write { tx in
            for i in 1...10 { try tx.add(Chore(_id: i, title: "chore \(i)", count: i, done: i % 2 == 0)) }
        }
        try await ws.waitForUpload(timeoutMs: 30_000)
        let everything = try await ws.waitForSubscriptions(seconds: 30)
        XCTAssertEqual(everything.state, .complete)
        XCTAssertEqual(everything.subscriptions, [
            Subscription(name: "all", className: "Chore", query: "TRUEPREDICATE"),
            Subscription(name: "teams", className: "Team", query: "TRUEPREDICATE"),
        ])

        // A fresh file: version 0, empty and complete. The first update is pending until a
        // session has its bootstrap; nothing is downloaded before.
        let r = try open("reader.sqlite")
        let initial = try r.subscriptions()
        XCTAssertEqual(initial.version, 0)
        XCTAssertEqual(initial.state, .complete)
        XCTAssertEqual(initial.subscriptions, [])
        let v1 = try r.updateSubscriptions { try $0.add(Chore.self, where: "count > $0", 5, name: "big") }
        XCTAssertEqual(v1.version, 1)
        XCTAssertEqual(v1.state, .pending)
        XCTAssertEqual(v1.subscription(named: "big"), Subscription(name: "big", className: "Chore", query: "count > 5"))
        XCTAssertEqual(try r.subscriptions().state, .pending)
        XCTAssertEqual(try r.activeSubscriptions().version, 0)
        XCTAssertEqual(try ids(r), [])

        let rs = try sync(r, "reader")
        defer { rs.stop() }
        let done1 = try await rs.waitForSubscriptions(v1, seconds: 30)
        XCTAssertEqual(done1.version, 1)
        XCTAssertEqual(done1.state, .complete)
        XCTAssertEqual(try ids(r), [6, 7, 8, 9, 10], "exactly the matching objects")
        XCTAssertEqual(try r.object(Chore.self, key: 7), Chore(_id: 7, title: "chore 7", count: 7))
        XCTAssertEqual(try r.activeSubscriptions().version, 1)
        XCTAssertEqual(try r.subscriptions().state, .complete)

        // The same name replaces the subscription: a narrower query, objects leave; the older
        // set is superseded.
        let v2 = try r.updateSubscriptions { try $0.add(Chore.self, where: "count > $0", 8, name: "big") }
        XCTAssertEqual(v2.version, 2)
        XCTAssertEqual(v2.subscriptions, [Subscription(name: "big", className: "Chore", query: "count > 8")])
        try await rs.waitForSubscriptions(v2, seconds: 30)
        XCTAssertEqual(try ids(r), [9, 10])
        let old = try await rs.waitForSubscriptions(v1, seconds: 30)
        XCTAssertEqual(old.version, 1)
        XCTAssertEqual(old.state, .superseded)
        XCTAssertEqual(try r.activeSubscriptions().version, 2)

        // Another named one and an unnamed one (Bool and Int arguments): objects enter.
        let v3 = try r.updateSubscriptions { subs in
            try subs.add(Chore.self, where: "_id == $0", 2, name: "two")
            try subs.add(Chore.self, where: "done == $0 AND count < $1", true, 5)
        }
        XCTAssertEqual(v3.subscriptions(of: Chore.self).map(\.name), ["big", "two", nil])
        XCTAssertEqual(v3.subscriptions.last?.query, "done == true AND count < 5")
        try await rs.waitForSubscriptions(v3, seconds: 30)
        XCTAssertEqual(try ids(r), [2, 4, 9, 10])

        // Removing by name: 2 stays (the unnamed query still matches it), 9 and 10 leave.
        let v4 = try r.updateSubscriptions { subs in
            subs.remove(named: "two")
            subs.remove(named: "big")
            subs.remove(named: "no such subscription")
        }
        XCTAssertEqual(v4.subscriptions.map(\.name), [nil])
        XCTAssertNil(v4.subscription(named: "big"))
        try await rs.waitForSubscriptions(v4, seconds: 30)
        XCTAssertEqual(try ids(r), [2, 4])

        // Another client's writes move objects out of the view and into it (whole).
        try w.write { tx in
            try tx.modify(Chore.self, key: 4) { $0.done = false }
            try tx.modify(Chore.self, key: 3) { $0.done = true }
        }
        try await ws.waitForUpload(timeoutMs: 30_000)
        let moved = try await r.objects(Chore.self, where: "TRUEPREDICATE SORT(_id ASC)")
            .wait(seconds: 30) { $0.map(\._id) == [2, 3] }
        XCTAssertEqual(moved.last, Chore(_id: 3, title: "chore 3", count: 3, done: true))

        // removeAll(Type): every chore leaves; a Team subscription is added in the same set.
        let v5 = try r.updateSubscriptions { subs in
            subs.removeAll(Chore.self)
            try subs.add(Team.self, name: "teams")
        }
        XCTAssertEqual(v5.subscriptions, [Subscription(name: "teams", className: "Team", query: "TRUEPREDICATE")])
        try await rs.waitForSubscriptions(v5, seconds: 30)
        XCTAssertEqual(try ids(r), [])
        let v6 = try r.updateSubscriptions { $0.removeAll() }
        XCTAssertEqual(v6.version, 6)
        XCTAssertEqual(v6.subscriptions, [])
        let done6 = try await rs.waitForSubscriptions(v6, seconds: 30)
        XCTAssertEqual(done6.state, .complete)

        // The untyped API underneath.
        let v7 = try r.updateSubscriptions(changes: [
            .add(name: "raw", className: "Chore", query: "count == $0", args: [.int(value: 7)]),
        ])
        let done7 = try await rs.waitForSubscriptions(version: v7.version, timeoutMs: 30_000)
        XCTAssertEqual(done7.state, .complete)
        XCTAssertEqual(done7.subscriptions, [Subscription(name: "raw", className: "Chore", query: "count == 7")])
        XCTAssertEqual(try ids(r), [7])

        // The reader's own writes reach the writer.
        try r.write { try $0.modify(Chore.self, key: 7) { $0.title = "edited by the reader" } }
        try await rs.waitForUpload(timeoutMs: 30_000)
        try await w.objects(Chore.self, where: "title == $0", "edited by the reader").wait(seconds: 30) { $0.count == 1 }

        // Refused locally: nothing is committed.
        XCTAssertThrowsError(try r.updateSubscriptions { try $0.add(Chore.self, where: "count > 1 SORT(count ASC)") }) {
            guard case TandemError.InvalidArgument = $0 else { return XCTFail("got \($0)") }
        }
        XCTAssertThrowsError(try r.updateSubscriptions { $0.add(className: "Nope") }) {
            guard case TandemError.InvalidArgument = $0 else { return XCTFail("got \($0)") }
        }
        XCTAssertThrowsError(try r.updateSubscriptions { subs in
            subs.removeAll()
            try subs.add(Chore.self, where: "nope == $0", 1)
        }) {
            guard case TandemError.InvalidArgument = $0 else { return XCTFail("got \($0)") }
        }
        struct Stop: Error {}
        XCTAssertThrowsError(try r.updateSubscriptions { subs in
            subs.removeAll()
            throw Stop()
        }) { XCTAssertTrue($0 is Stop) }
        let latest = try r.subscriptions()
        XCTAssertEqual(latest.version, v7.version, "nothing was committed")
        XCTAssertEqual(latest.subscriptions.map(\.name), ["raw"])
    }

    func testALinkPathIsRefusedByTheServerAndTheSessionGoesOn() async throws {
        let (w, ws) = try writer()
        defer { ws.stop() }
        try w.write { tx in
            try tx.add(Team(_id: 1, name: "x"))
            try tx.add(Chore(_id: 1, title: "one", count: 1, team: Link(key: .int(value: 1))))
            try tx.add(Chore(_id: 2, title: "two", count: 2))
        }
        try await ws.waitForUpload(timeoutMs: 30_000)

        let r = try open("reader.sqlite")
        let one = try r.updateSubscriptions { try $0.add(Chore.self, where: "count == $0", 1, name: "one") }
        let rs = try sync(r, "reader")
        defer { rs.stop() }
        let errors = rs.errors()
        try await rs.waitForSubscriptions(seconds: 30)
        XCTAssertEqual(try ids(r), [1])

        // The local compiler takes a link path; the server does not evaluate one.
        let bad = try r.updateSubscriptions { try $0.add(Chore.self, where: "team.name == $0", "x", name: "linked") }
        XCTAssertEqual(bad.state, .pending)
        XCTAssertEqual(bad.subscription(named: "linked")?.query, #"team.name == B64"eA==""#)
        do {
            try await rs.waitForSubscriptions(bad, seconds: 30)
            XCTFail("expected the server to refuse the set")
        } catch let TandemError.Sync(message) {
            XCTAssertTrue(message.contains("refused by the server"), message)
            XCTAssertTrue(message.contains("subscription set \(bad.version)"), message)
        }
        let refused = try r.subscriptions()
        XCTAssertEqual(refused.version, bad.version)
        let reason = try XCTUnwrap(refused.errorMessage, "state \(refused.state)")
        XCTAssertTrue(reason.contains("link"), reason)
        XCTAssertEqual(try r.activeSubscriptions().version, one.version, "the active set stays")
        XCTAssertEqual(try ids(r), [1])
        let event = await firstEvent(errors, seconds: 30) { $0.code == 226 }
        XCTAssertEqual(event?.willRetry, true)
        XCTAssertNotNil(event, "a QUERY_ERROR event")
        XCTAssertNil(event?.compensatingWrite)

        // The session goes on: a later valid set completes, and steady state flows.
        let good = try r.updateSubscriptions { subs in
            subs.removeAll()
            try subs.add(Chore.self, where: "count == $0", 2, name: "two")
        }
        let done = try await rs.waitForSubscriptions(good, seconds: 30)
        XCTAssertEqual(done.state, .complete)
        XCTAssertEqual(try ids(r), [2])
        XCTAssertEqual(try r.activeSubscriptions().version, good.version)
        try w.write { try $0.modify(Chore.self, key: 2) { $0.title = "two, edited" } }
        try await r.objects(Chore.self, where: "title == $0", "two, edited").wait(seconds: 30) { $0.count == 1 }
    }
}

/// Compensating writes: the server's rules let each user write only the chores they own.
final class FlexibleSyncRulesTests: FlexibleSyncFixture {
    override func serverArgs(dir: URL) throws -> [String] {
        let rules = dir.appendingPathComponent("rules.json")
        try Data(#"""
            {"default": {"read": true, "write": true},
             "classes": {"Chore": {"read": true, "write": "owner == %%user.id"}}}
            """#.utf8).write(to: rules)
        return try super.serverArgs(dir: dir) + ["--flx-rules", rules.path]
    }

    func testAForbiddenWriteIsRevertedAndReportedAsACompensatingWrite() async throws {
        let alice = try open("alice.sqlite")
        let bob = try open("bob.sqlite")
        for db in [alice, bob] {
            try db.updateSubscriptions { try $0.add(Chore.self, name: "all") }
        }
        let sa = try sync(alice, "alice")
        let sb = try sync(bob, "bob")
        defer { sa.stop(); sb.stop() }
        let errors = sa.errors()
        try alice.write { try $0.add(Chore(_id: 1, title: "alice's", count: 1, owner: "alice")) }
        try bob.write { try $0.add(Chore(_id: 2, title: "bob's", count: 2, owner: "bob")) }
        try await sa.waitForUpload(timeoutMs: 30_000)
        try await sb.waitForUpload(timeoutMs: 30_000)
        try await sa.waitForSubscriptions(seconds: 30)
        try await sb.waitForSubscriptions(seconds: 30)
        let all = "TRUEPREDICATE SORT(_id ASC)"
        try await alice.objects(Chore.self, where: all).wait(seconds: 30) { $0.map(\._id) == [1, 2] }
        try await bob.objects(Chore.self, where: all).wait(seconds: 30) { $0.map(\._id) == [1, 2] }

        // Alice creates a chore owned by bob and edits bob's chore (both forbidden), and edits
        // her own (allowed), in one transaction.
        try alice.write { tx in
            try tx.add(Chore(_id: 3, title: "forged", count: 3, owner: "bob"))
            try tx.modify(Chore.self, key: 2) { $0.title = "alice was here" }
            try tx.modify(Chore.self, key: 1) { $0.title = "alice's own edit" }
        }
        XCTAssertEqual(try ids(alice), [1, 2, 3], "the write is local at first")

        let event = await firstEvent(errors, seconds: 30) { $0.code == 231 }
        let reported = try XCTUnwrap(event, "a compensating write event")
        XCTAssertTrue(reported.willRetry)
        XCTAssertTrue(reported.message.contains("rejectedUpdates"), reported.message)
        let write = try XCTUnwrap(reported.compensatingWrite, reported.message)
        XCTAssertTrue(write.rejects(Chore.self, key: 3), "\(write)")
        XCTAssertTrue(write.rejects(Chore.self, key: 2), "\(write)")
        XCTAssertFalse(write.rejects(Chore.self, key: 1), "\(write)")
        XCTAssertEqual(write.rejected.count, 2)
        XCTAssertEqual(Set(write.rejected.map(\.className)), ["Chore"])
        XCTAssertTrue(write.rejected.allSatisfy { !$0.reason.isEmpty }, "\(write)")
        XCTAssertNotNil(write.serverVersion)

        // Reverted on alice's file: the created chore is erased, bob's gets its earlier copy
        // back; her own edit stands.
        let reverted = try await alice.objects(Chore.self, where: all)
            .wait(seconds: 30) { $0.map(\._id) == [1, 2] && $0[1].title == "bob's" }
        XCTAssertEqual(reverted, [
            Chore(_id: 1, title: "alice's own edit", count: 1, owner: "alice"),
            Chore(_id: 2, title: "bob's", count: 2, owner: "bob"),
        ])

        // Bob ends with alice's allowed edit and none of the refused ones.
        let atBob = try await bob.objects(Chore.self, where: all).wait(seconds: 30) {
            $0.map(\._id) == [1, 2] && $0[0].title == "alice's own edit" && $0[1].title == "bob's"
        }
        XCTAssertEqual(atBob, reverted)
        try await sb.waitForDownload(timeoutMs: 30_000)
        XCTAssertEqual(try bob.objects(Chore.self, where: all).snapshot(), reverted)
    }
}

/// Flexible sync without a server: a non-flexible session's wait, reading a compensating write
/// from its error event.
final class FlexibleSyncLocalTests: XCTestCase {
    func testWaitingOnANonFlexibleSessionIsASyncError() async throws {
        // No server needed: the session's options say it is not flexible (nothing listens on
        // port 9; the session keeps retrying until it is stopped).
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let db = try Database.open(path: dir.appendingPathComponent("plain.sqlite").path, models: [Chore.self, Team.self])
        let plain = SyncOptions(url: "wss://localhost:9/", path: "/x", token: makeToken(paths: ["/x"]), caFile: nil,
                                allowInsecure: false, clientReset: .manual)
        XCTAssertFalse(plain.flexible)
        let flexible = SyncOptions.flexible(url: "wss://localhost:9/", token: "t")
        XCTAssertTrue(flexible.flexible)
        XCTAssertEqual(flexible.path, "/flx")
        let session = try db.sync(options: plain, tokenProvider: nil)
        defer { session.stop() }
        do {
            try await session.waitForSubscriptions(seconds: 5)
            XCTFail("expected TandemError.Sync")
        } catch let TandemError.Sync(message) {
            XCTAssertTrue(message.contains("flexible"), message)
        }
    }

    func testCompensatingWriteParsing() {
        // The message a session reports for code 231 (the server's JSON after a prefix); keys:
        // int 3 (payload type 1, then 3), string "bob" (type 3, length 3, bytes), int -65,
        // ObjectId (type 10, 12 bytes), UUID (type 11, 16 bytes), null (type 0); then a pk that
        // is not base64, one with a byte left over, and none.
        let json = #"""
            compensating write: {"message":"writes to 3 objects were reverted","action":"Warning",
            "tryAgain":true,"rejectedUpdates":[{"table":"Chore","pk":"AQM=","reason":"write not allowed"},
            {"table":"Person","pk":"AwNib2I=","reason":"r2"},{"table":"Chore","pk":"AcBA","reason":"r3"},
            {"table":"Bad","pk":"!!","reason":"r4"},
            {"table":"O","pk":"CgECAwQFBgcICQoLDA==","reason":"r5"},{"table":"U","pk":"CxAREhMUFRYXGBkaGxwdHh8=","reason":"r6"},
            {"table":"N","pk":"AA==","reason":"r7"},{"table":"Long","pk":"AQMA","reason":"r8"},{"table":"NoKey","reason":"r9"}],
            "rejectedClientVersion":7,"compensatingWriteServerVersion":12}
            """#
        let write = CompensatingWrite(code: 231, message: json)
        XCTAssertEqual(write?.message, "writes to 3 objects were reverted")
        XCTAssertEqual(write?.rejected, [
            .init(className: "Chore", key: .int(value: 3), reason: "write not allowed"),
            .init(className: "Person", key: .string(value: "bob"), reason: "r2"),
            .init(className: "Chore", key: .int(value: -65), reason: "r3"),
            .init(className: "Bad", key: nil, reason: "r4"),
            .init(className: "O", key: .objectId(bytes: Data(1...12)), reason: "r5"),
            .init(className: "U", key: .uuid(bytes: Data(16...31)), reason: "r6"),
            .init(className: "N", key: .null, reason: "r7"),
            .init(className: "Long", key: nil, reason: "r8"),
            .init(className: "NoKey", key: nil, reason: "r9"),
        ])
        XCTAssertEqual(write?.rejectedClientVersion, 7)
        XCTAssertEqual(write?.serverVersion, 12)
        XCTAssertEqual(write?.rejects(Chore.self, key: 3), true)
        XCTAssertEqual(write?.rejects(Chore.self, key: 4), false)
        XCTAssertNil(CompensatingWrite(code: 226, message: json))
        XCTAssertNil(CompensatingWrite(code: 231, message: "no JSON here"))
        XCTAssertNil(SyncErrorEvent(code: 0, message: json, willRetry: true).compensatingWrite)
    }
}
