// The rest of the API through the Swift binding (mirrors bindings/python/tests/test_whole_api.py):
// list move / set / clear, set and dictionary clear (the untyped API: the typed `Transaction`
// has no such calls), writes through a path into collections inside embedded objects, the
// quarantine (filled by a real client reset), open options (each durability, the writer
// timeout), the log listener, and `transact` rejected by the server.

import Foundation
import XCTest
@testable import Tandem
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

private func str(_ text: String) -> Value { .string(value: text) }

/// A `Task`'s title, or nil if there is no such object.
private func taskTitle(_ db: Database, _ key: Int64) throws -> String? {
    guard let object = try db.object(className: "Task", key: .int(value: key)) else { return nil }
    guard case .single(.string(let title))? = object["title"] else { return nil }
    return title
}

/// The message of a `TandemError.InvalidArgument`, or a failure naming what was thrown instead.
private func invalidArgument(_ error: Error, file: StaticString = #filePath, line: UInt = #line) -> String {
    guard case TandemError.InvalidArgument(let message) = error else {
        XCTFail("expected InvalidArgument, got \(error)", file: file, line: line)
        return ""
    }
    return message
}

/// Hands out a token only once `open()` is called, so listeners registered right after
/// `sync()` are in place before the session connects.
final class GatedTokenProvider: TokenProvider, @unchecked Sendable {
    private let condition = NSCondition()
    private var opened = false
    let path: String
    init(path: String = "/todos") { self.path = path }

    func open() {
        condition.lock(); opened = true; condition.broadcast(); condition.unlock()
    }

    func fetchToken() throws -> String {
        let deadline = Date().addingTimeInterval(30)
        condition.lock()
        defer { condition.unlock() }
        while !opened {
            if !condition.wait(until: deadline) { throw CallbackError.Failed(message: "the test never opened the gate") }
        }
        return makeToken(paths: [path])
    }
}

/// Every sync error event: code, message, whether the session retries.
final class SyncErrorEvents: ErrorListener, @unchecked Sendable {
    let seen = Box<(UInt64, String, Bool)>()
    func onError(code: UInt64, message: String, willRetry: Bool) throws { seen.append((code, message, willRetry)) }
}

// MARK: - 1, 2, 3 (empty), 4 (durability), 5: one local database each

final class WholeApiTests: XCTestCase {
    var dir: URL!
    var guardTimer: DispatchWorkItem?

    override func setUpWithError() throws {
        guardTimer = watchdog(60, name)
        dir = try tempDir()
    }

    override func tearDownWithError() throws {
        clearLogListener()
        guardTimer?.cancel()
        try? FileManager.default.removeItem(at: dir)
    }

    private func path(_ name: String) -> String { dir.appendingPathComponent(name).path }

    // MARK: 1. list move / set / clear, set clear, dictionary clear

    func testUntypedListMoveSetClearAndSetAndDictionaryClear() throws {
        let db = try Database.open(path: path("bag.sqlite"), classes: [
            ClassSpec(name: "Bag", primaryKey: "_id", properties: [
                prop("_id", .int), prop("items", .string, collection: .list),
                prop("labels", .string, collection: .set), prop("notes", .string, collection: .dictionary),
            ]),
        ])
        let one = Key.int(value: 1), two = Key.int(value: 2), three = Key.int(value: 3)
        func items(_ key: Key) throws -> FieldValue? { try db.object(className: "Bag", key: key)?["items"] }
        func list(_ values: String...) -> FieldValue { .list(items: values.map(str)) }
        try db.write { tx in
            for key in [one, two, three] {
                try tx.create(className: "Bag", key: key, values: [:])
                for (i, v) in ["a", "b", "c", "d"].enumerated() {
                    try tx.listInsert(className: "Bag", key: key, property: "items", index: UInt32(i), value: str(v))
                }
                try tx.setInsert(className: "Bag", key: key, property: "labels", value: str("red"))
                try tx.setInsert(className: "Bag", key: key, property: "labels", value: str("blue"))
                try tx.dictSet(className: "Bag", key: key, property: "notes", entry: "k1", value: str("v1"))
                try tx.dictSet(className: "Bag", key: key, property: "notes", entry: "k2", value: str("v2"))
            }
        }
        XCTAssertEqual(try items(one), list("a", "b", "c", "d"))
        // The FFI transaction's own calls (`raw`), in one write.
        try db.write { tx in
            let raw = try tx.raw
            try raw.listMove(className: "Bag", key: one, property: "items", from: 0, to: 3)  // [b, c, d, a]
            try raw.listSet(className: "Bag", key: one, property: "items", index: 1, value: str("C"))  // [b, C, d, a]
        }
        XCTAssertEqual(try items(one), list("b", "C", "d", "a"))
        // The WriteOps behind them, as one batch.
        let version = try db.write(ops: [
            .listMove(className: "Bag", key: one, property: "items", from: 3, to: 0),  // [a, b, C, d]
            .listSet(className: "Bag", key: one, property: "items", index: 3, value: str("D")),  // [a, b, C, D]
        ])
        XCTAssertNotNil(version)
        XCTAssertEqual(try items(one), list("a", "b", "C", "D"))
        // Recorded into the typed transaction (`record`) between typed-layer calls.
        try db.write { tx in
            try tx.record(.listMove(className: "Bag", key: three, property: "items", from: 3, to: 1))  // [a, d, b, c]
            try tx.record(.listSet(className: "Bag", key: three, property: "items", index: 0, value: str("A")))
        }
        XCTAssertEqual(try items(three), list("A", "d", "b", "c"))

        // Out of range: InvalidArgument naming the operation and the range; nothing written.
        XCTAssertThrowsError(try db.write(ops: [
            .listSet(className: "Bag", key: one, property: "items", index: 0, value: str("x")),
            .listSet(className: "Bag", key: one, property: "items", index: 4, value: str("x")),
        ])) { error in
            let message = invalidArgument(error)
            XCTAssertTrue(message.hasPrefix("operation 1: ") && message.contains("out of range"), message)
        }
        XCTAssertThrowsError(try db.write { tx in
            try tx.raw.listMove(className: "Bag", key: one, property: "items", from: 9, to: 0)
        }) { error in
            let message = invalidArgument(error)
            XCTAssertTrue(message.contains("out of range"), message)
        }
        XCTAssertThrowsError(try db.write { tx in
            try tx.raw.listClear(className: "Bag", key: one, property: "labels")  // a set is not a list
        }) { error in
            let message = invalidArgument(error)
            XCTAssertTrue(message.contains("not a List"), message)
        }
        XCTAssertEqual(try items(one), list("a", "b", "C", "D"))

        // Clears: `raw` on Bag 1 (then a typed-transaction insert, recorded after them), the
        // WriteOps on Bag 2, `record` on Bag 3.
        try db.write { tx in
            let raw = try tx.raw
            try raw.listClear(className: "Bag", key: one, property: "items")
            try raw.setClear(className: "Bag", key: one, property: "labels")
            try raw.dictClear(className: "Bag", key: one, property: "notes")
            try tx.setInsert(className: "Bag", key: one, property: "labels", value: str("after clear"))
        }
        _ = try db.write(ops: [
            .listClear(className: "Bag", key: two, property: "items"),
            .setClear(className: "Bag", key: two, property: "labels"),
            .dictClear(className: "Bag", key: two, property: "notes"),
        ])
        try db.write { tx in
            try tx.record(.listClear(className: "Bag", key: three, property: "items"))
            try tx.record(.setClear(className: "Bag", key: three, property: "labels"))
            try tx.record(.dictClear(className: "Bag", key: three, property: "notes"))
            try tx.dictSet(className: "Bag", key: three, property: "notes", entry: "new", value: str("n"))
        }
        XCTAssertEqual(try db.object(className: "Bag", key: one),
                       ["items": .list(items: []), "labels": .set(items: [str("after clear")]),
                        "notes": .dictionary(entries: [:])])
        XCTAssertEqual(try db.object(className: "Bag", key: two),
                       ["items": .list(items: []), "labels": .set(items: []), "notes": .dictionary(entries: [:])])
        XCTAssertEqual(try db.object(className: "Bag", key: three),
                       ["items": .list(items: []), "labels": .set(items: []),
                        "notes": .dictionary(entries: ["new": str("n")])])
    }

    // MARK: 2. writes through a path into collections inside embedded objects

    func testWritesThroughAPathReachCollectionsInsideEmbeddedObjects() throws {
        func link(_ name: String, _ collection: Tandem.Collection, nullable: Bool) -> PropertySpec {
            PropertySpec(name: name, propertyType: .link, nullable: nullable, collection: collection,
                         linkTarget: "Address")
        }
        let db = try Database.open(path: path("embedded.sqlite"), classes: [
            ClassSpec(name: "Resident", primaryKey: "_id", properties: [
                prop("_id", .int), link("address", .single, nullable: true), link("homes", .list, nullable: false),
                link("places", .dictionary, nullable: true),
            ]),
            ClassSpec(name: "Address", primaryKey: nil, properties: [
                prop("street", .string), prop("tags", .string, collection: .list),
                prop("labels", .string, collection: .set), prop("scores", .int, collection: .dictionary),
            ]),
        ])
        let k = Key.int(value: 1)
        let tags: [PathStep] = [.name(name: "tags")]
        func address(street: String = "", tags: [String] = [], labels: [String] = [],
                     scores: [String: Int64] = [:]) -> [String: FieldValue]
        {
            ["street": .single(value: str(street)), "tags": .list(items: tags.map(str)),
             "labels": .set(items: labels.map(str)), "scores": .dictionary(entries: scores.mapValues { .int(value: $0) })]
        }
        func resident() throws -> [String: FieldValue]? { try db.object(className: "Resident", key: k) }

        _ = try db.write(ops: [
            .create(className: "Resident", key: k, values: [:]),
            .createEmbedded(className: "Resident", key: k, property: "address"),
            .set(className: "Resident", key: k, property: "address", value: str("Main"), path: [.name(name: "street")]),
        ] + ["a", "b", "c"].enumerated().map { i, v in
            .listInsert(className: "Resident", key: k, property: "address", index: UInt64(i), value: str(v), path: tags)
        } + [
            .listMove(className: "Resident", key: k, property: "address", from: 0, to: 2, path: tags),  // [b, c, a]
            .listSet(className: "Resident", key: k, property: "address", index: 0, value: str("B"), path: tags),  // [B, c, a]
            .listErase(className: "Resident", key: k, property: "address", index: 1, path: tags),  // [B, a]
            .setInsert(className: "Resident", key: k, property: "address", value: str("x"), path: [.name(name: "labels")]),
            .setInsert(className: "Resident", key: k, property: "address", value: str("y"), path: [.name(name: "labels")]),
            .setErase(className: "Resident", key: k, property: "address", value: str("x"), path: [.name(name: "labels")]),
            .dictSet(className: "Resident", key: k, property: "address", entry: "k", value: .int(value: 1),
                     path: [.name(name: "scores")]),
            .listInsertEmbedded(className: "Resident", key: k, property: "homes", index: 0),
            .listInsert(className: "Resident", key: k, property: "homes", index: 0, value: str("h"),
                        path: [.index(index: 0), .name(name: "tags")]),
            .createEmbedded(className: "Resident", key: k, property: "places", path: [.name(name: "home")]),
            .dictSet(className: "Resident", key: k, property: "places", entry: "z", value: .int(value: 5),
                     path: [.name(name: "home"), .name(name: "scores")]),
        ])
        XCTAssertEqual(try resident(), [
            "address": .embedded(present: true,
                                 fields: address(street: "Main", tags: ["B", "a"], labels: ["y"], scores: ["k": 1])),
            "homes": .embeddedList(items: [address(tags: ["h"])]),
            "places": .embeddedDictionary(entries: ["home": address(scores: ["z": 5])]),
        ])

        // The FFI transaction takes the same paths.
        try db.write { tx in
            let raw = try tx.raw
            try raw.listMove(className: "Resident", key: k, property: "address", from: 1, to: 0, path: tags)  // [a, B]
            try raw.listSet(className: "Resident", key: k, property: "address", index: 1, value: str("b"),
                            path: tags)  // [a, b]
            try raw.listClear(className: "Resident", key: k, property: "homes",
                              path: [.index(index: 0), .name(name: "tags")])
            try raw.setClear(className: "Resident", key: k, property: "address", path: [.name(name: "labels")])
            try raw.dictClear(className: "Resident", key: k, property: "places",
                              path: [.name(name: "home"), .name(name: "scores")])
        }
        XCTAssertEqual(try resident(), [
            "address": .embedded(present: true, fields: address(street: "Main", tags: ["a", "b"], scores: ["k": 1])),
            "homes": .embeddedList(items: [address()]),
            "places": .embeddedDictionary(entries: ["home": address()]),
        ])
        _ = try db.write(ops: [
            .listClear(className: "Resident", key: k, property: "address", path: tags),
            .dictClear(className: "Resident", key: k, property: "address", path: [.name(name: "scores")]),
        ])
        XCTAssertEqual(try resident()?["address"], .embedded(present: true, fields: address(street: "Main")))

        // A path that leads nowhere is InvalidArgument naming what is missing; nothing is written.
        XCTAssertThrowsError(try db.write(ops: [
            .listInsert(className: "Resident", key: k, property: "address", index: 0, value: str("lost"), path: tags),
            .listInsert(className: "Resident", key: k, property: "address", index: 0, value: str("x"),
                        path: [.name(name: "nope")]),
        ])) { error in
            let message = invalidArgument(error)
            XCTAssertTrue(message.hasPrefix("operation 1: ") && message.contains("Address.nope"), message)
        }
        XCTAssertThrowsError(try db.write(ops: [
            .listInsert(className: "Resident", key: k, property: "homes", index: 0, value: str("x"),
                        path: [.index(index: 3), .name(name: "tags")]),
        ])) { error in
            let message = invalidArgument(error)
            XCTAssertTrue(message.contains("homes"), message)
        }
        XCTAssertEqual(try resident()?["address"], .embedded(present: true, fields: address(street: "Main")))
    }

    // MARK: 3. the quarantine, empty (a real one: QuarantineTests)

    func testAnEmptyQuarantineReadsEmptyAndClearingAnUnknownIdChangesNothing() throws {
        let db = try Database.open(path: path("q.sqlite"), classes: taskClasses())
        try db.write { try $0.create(className: "Task", key: .int(value: 1), values: ["title": str("kept")]) }
        XCTAssertEqual(try db.quarantine(), [])
        try db.clearQuarantine(id: 12345)  // documented: removes the record with that id; there is none
        try db.clearQuarantine(id: nil)  // all of them: none
        XCTAssertEqual(try db.quarantine(), [])
        XCTAssertEqual(try taskTitle(db, 1), "kept", "clearing the quarantine touches no object")
    }

    // MARK: 4. open options: each durability

    func testOpenOptionsDefaultsAndEachDurabilityWritesAndReadsBack() throws {
        let defaults = OpenOptions(durability: .full)
        XCTAssertEqual(defaults.writerTimeoutMs, 10_000)
        XCTAssertEqual(defaults.recoveryWindow, 1_000)
        let durabilities: [Durability] = [.normal, .full]
        for (i, durability) in durabilities.enumerated() {
            let file = path("\(durability).sqlite")
            var db: Database? = try Database.openWithOptions(
                path: file, classes: taskClasses(),
                options: OpenOptions(durability: durability, writerTimeoutMs: 2_000, recoveryWindow: 5))
            try db!.write { tx in
                try tx.create(className: "Task", key: .int(value: 1), values: ["title": str("\(durability)")])
            }
            _ = try db!.write(ops: [.add(className: "Task", key: .int(value: 1), property: "count", amount: 3)])
            XCTAssertEqual(try taskTitle(db!, 1), "\(durability)")
            db = nil  // closed
            // Reopened with the other durability (a connection setting, not the file's).
            let again = try Database.openWithOptions(path: file, classes: taskClasses(),
                                                     options: OpenOptions(durability: durabilities[1 - i]))
            XCTAssertEqual(try again.object(className: "Task", key: .int(value: 1)), [
                "title": .single(value: str("\(durability)")), "done": .single(value: .bool(value: false)),
                "count": .single(value: .int(value: 3)), "tags": .list(items: []),
            ])
        }
    }

    /// The other process of the next test: this test binary started again with
    /// `TANDEM_EXCLUSIVE_PROBE` set to a file; it opens the file and prints what it saw.
    func testExclusiveProbeChild() throws {
        guard let file = ProcessInfo.processInfo.environment["TANDEM_EXCLUSIVE_PROBE"] else { return }
        do {
            let db = try Database.openWithOptions(path: file, classes: taskClasses(),
                                                  options: OpenOptions(durability: .normal, writerTimeoutMs: 200))
            let titles = try ["1", "2"].map { try taskTitle(db, Int64($0)!) ?? "-" }
            print("PROBE opened: \(titles.joined(separator: ", "))")
        } catch TandemError.Timeout(let message) {
            print("PROBE timeout: \(message)")
        }
    }

    func testAFileOpenExclusiveToProcessIsLockedAgainstOtherProcesses() throws {
        XCTAssertFalse(OpenOptions(durability: .normal).exclusiveToProcess)
        #if !os(Linux)
        throw XCTSkip("the other process re-runs the Linux .xctest executable; not implemented here")
        #else
        let file = path("exclusive.sqlite")
        let executable = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        func probe() throws -> String {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = ["TandemTests.WholeApiTests/testExclusiveProbeChild"]
            process.environment = ProcessInfo.processInfo.environment.merging(
                ["TANDEM_EXCLUSIVE_PROBE": file]) { $1 }
            let pipe = Pipe()
            process.standardOutput = pipe
            process.standardError = FileHandle.nullDevice
            try process.run()
            let out = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            guard let line = out.split(separator: "\n").first(where: { $0.hasPrefix("PROBE ") }) else {
                return "no result: \(out)"
            }
            return String(line.dropFirst("PROBE ".count))
        }
        var db: Database? = try Database.openWithOptions(
            path: file, classes: taskClasses(),
            options: OpenOptions(durability: .normal, exclusiveToProcess: true))
        for key in [1, 2] as [Int64] {
            try db!.write { tx in
                try tx.create(className: "Task", key: .int(value: key), values: ["title": str("mine \(key)")])
            }
        }
        let refused = try probe()
        XCTAssertTrue(refused.hasPrefix("timeout: ") && refused.contains("locked by another process"), refused)
        XCTAssertEqual(try taskTitle(db!, 2), "mine 2", "the holder reads on")
        db = nil  // closed: the lock is gone and both commits are in the file
        XCTAssertEqual(try probe(), "opened: mine 1, mine 2")
        #endif
    }

    // MARK: 5. the log listener

    func testTheLogListenerGetsWarningsAtItsLevelAndNothingOnceCleared() throws {
        // What src/ffi documents as logged without a server: a listener that throws is a warning
        // (target tandem::ffi::database), and the other listeners still run.
        let db = try Database.open(path: path("log.sqlite"), classes: taskClasses())
        let results = try db.query(className: "Task", filter: "TRUEPREDICATE", args: [])
        let delivered = Collect()
        let handles = [try results.observe(listener: ThrowsDescribed()), try results.observe(listener: delivered)]
        defer {
            clearLogListener()
            handles.forEach { $0.cancel() }
        }
        func commit(_ i: Int) {
            XCTAssertNoThrow(try db.write(ops: [.create(className: "Task", key: .int(value: Int64(i)), values: [:])]))
            eventually { delivered.changes.all.count >= i }
            Thread.sleep(forTimeInterval: 0.2)  // both listeners were called (and the warning logged) by now
        }
        func threw(_ logs: LogEvents) -> [(LogLevel, String, String)] {
            logs.events.all.filter { $0.2.contains("a results listener threw") && $0.2.contains(ThrowsDescribed.text) }
        }

        let logs = LogEvents()
        try setLogListener(listener: logs, level: .warn)
        commit(1)
        let warnings = threw(logs)
        XCTAssertEqual(warnings.count, 1, "\(logs.events.all)")
        if let warning = warnings.first {
            let (level, target, message) = warning
            XCTAssertEqual(level, .warn)
            XCTAssertEqual(target, "tandem::ffi::database")
            XCTAssertTrue(message.contains(ThrowsDescribed.text), message)  // the Swift error's description
        }
        // Above the listener's level: not delivered.
        try setLogListener(listener: logs, level: .error)
        commit(2)
        XCTAssertEqual(threw(logs).count, 1, "\(logs.events.all)")
        // Replaced by another listener: the new one gets them, the old one not.
        let other = LogEvents()
        try setLogListener(listener: other, level: .info)
        commit(3)
        XCTAssertEqual(threw(other).map(\.0), [.warn])
        XCTAssertEqual(threw(logs).count, 1)
        // Cleared: nobody gets them.
        clearLogListener()
        commit(4)
        XCTAssertEqual(threw(other).count, 1, "\(other.events.all)")
        XCTAssertEqual(delivered.changes.all.count, 4, "the throwing listener stopped none of the deliveries")
    }
}

final class LogEvents: LogListener, @unchecked Sendable {
    let events = Box<(LogLevel, String, String)>()
    func onLog(level: LogLevel, target: String, message: String) throws { events.append((level, target, message)) }
}

/// A results listener throwing a plain Swift error (not `CallbackError`): its description is logged.
final class ThrowsDescribed: ResultsListener, @unchecked Sendable {
    static let text = "thrown by a test listener"
    struct Failure: Error, CustomStringConvertible { var description: String { ThrowsDescribed.text } }
    func onChange(change: ResultsChange) throws { throw Failure() }
}

// MARK: - 4. the writer timeout, with SQLite's write lock held by another process

/// Set in the child process this test starts: it holds the write lock on that file.
private let holdLockVariable = "TANDEM_SWIFT_TEST_HOLD_WRITE_LOCK"
private let lockHeldMarker = "TANDEM-SWIFT-TEST-WRITE-LOCK-HELD"

private typealias SqliteOpen = @convention(c) (
    UnsafePointer<CChar>?, UnsafeMutablePointer<OpaquePointer?>?, Int32, UnsafePointer<CChar>?) -> Int32
private typealias SqliteExec = @convention(c) (
    OpaquePointer?, UnsafePointer<CChar>?, UnsafeRawPointer?, UnsafeMutableRawPointer?,
    UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32
private typealias SqliteClose = @convention(c) (OpaquePointer?) -> Int32

/// The system's SQLite, loaded at run time (the Swift toolchain on Linux has no SQLite module).
private struct SystemSqlite {
    let open: SqliteOpen, exec: SqliteExec, close: SqliteClose

    static func load() -> SystemSqlite? {
        for name in ["libsqlite3.so.0", "libsqlite3.so", "libsqlite3.dylib"] {
            guard let lib = dlopen(name, RTLD_NOW) else { continue }
            guard let open = dlsym(lib, "sqlite3_open_v2"), let exec = dlsym(lib, "sqlite3_exec"),
                  let close = dlsym(lib, "sqlite3_close") else { continue }
            return SystemSqlite(open: unsafeBitCast(open, to: SqliteOpen.self),
                                exec: unsafeBitCast(exec, to: SqliteExec.self),
                                close: unsafeBitCast(close, to: SqliteClose.self))
        }
        return nil
    }
}

final class WriterTimeoutTests: XCTestCase {
    /// Run twice: by the suite (the parent), and by the parent as a child process of the same
    /// test binary, filtered to this test, with `holdLockVariable` set: the child holds SQLite's
    /// write lock until its stdin ends. The lock must be held by another process: POSIX locks
    /// are per process (and the system's SQLite is not the copy bundled in Tandem), so in this
    /// process it would not conflict.
    func testAWriterWaitingLongerThanTheWriterTimeoutGetsTimeout() throws {
        if let file = ProcessInfo.processInfo.environment[holdLockVariable] {
            return try holdWriteLock(file)
        }
        #if !os(Linux)
        throw XCTSkip("the lock-holding child re-runs the Linux .xctest executable; not implemented here")
        #else
        guard SystemSqlite.load() != nil else {
            throw XCTSkip("no system libsqlite3 to hold the write lock from another process")
        }
        let guardTimer = watchdog(60, name)
        defer { guardTimer.cancel() }
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("busy.sqlite").path
        let db = try Database.openWithOptions(path: file, classes: taskClasses(),
                                              options: OpenOptions(durability: .normal, writerTimeoutMs: 300))
        let child = Process()
        child.executableURL = URL(fileURLWithPath: try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
        child.arguments = ["TandemTests.WriterTimeoutTests/testAWriterWaitingLongerThanTheWriterTimeoutGetsTimeout"]
        child.environment = ProcessInfo.processInfo.environment.merging([holdLockVariable: file]) { $1 }
        let input = Pipe(), output = Pipe()
        child.standardInput = input
        child.standardOutput = output
        child.standardError = output
        try child.run()
        let childLog = ServerLog(output.fileHandleForReading)
        var released = false
        func release() {
            guard !released else { return }
            released = true
            input.fileHandleForWriting.closeFile()  // EOF: the child rolls back and exits
            child.waitUntilExit()
        }
        defer { release() }
        guard childLog.waitForLine(containing: lockHeldMarker, seconds: 30) != nil else {
            return XCTFail("the child never held the lock: \(childLog.lines.suffix(20).joined(separator: "\n"))")
        }
        for attempt in ["batch", "block"] {
            let started = Date()
            XCTAssertThrowsError(try { () throws -> Void in
                if attempt == "batch" {
                    _ = try db.write(ops: [.create(className: "Task", key: .int(value: 1), values: ["title": str("blocked")])])
                } else {
                    try db.write { try $0.create(className: "Task", key: .int(value: 1), values: ["title": str("blocked")]) }
                }
            }()) { error in
                guard case TandemError.Timeout(let message) = error else { return XCTFail("\(attempt): got \(error)") }
                // Another process holds the write lock: the same error as a second writer here.
                XCTAssertTrue(message.contains("another write transaction is still open after 300ms"), message)
            }
            let waited = Date().timeIntervalSince(started)
            // It waited for the other writer, as long as asked, not the 10 s default.
            XCTAssertTrue(waited >= 0.25 && waited < 5, "\(attempt): waited \(waited) s")
        }
        XCTAssertNil(try db.object(className: "Task", key: .int(value: 1)))
        release()
        XCTAssertEqual(child.terminationStatus, 0, childLog.lines.suffix(20).joined(separator: "\n"))
        _ = try db.write(ops: [.create(className: "Task", key: .int(value: 1), values: ["title": str("now")])])
        XCTAssertEqual(try taskTitle(db, 1), "now")
        #endif
    }

    /// The child's part: BEGIN IMMEDIATE through the system's SQLite, say so, wait for EOF on stdin.
    private func holdWriteLock(_ file: String) throws {
        let sqlite = try XCTUnwrap(SystemSqlite.load())
        var conn: OpaquePointer?
        XCTAssertEqual(sqlite.open(file, &conn, 0x2 /* SQLITE_OPEN_READWRITE */, nil), 0)
        defer { _ = sqlite.close(conn) }
        XCTAssertEqual(sqlite.exec(conn, "PRAGMA busy_timeout = 5000", nil, nil, nil), 0)
        let begun = sqlite.exec(conn, "BEGIN IMMEDIATE", nil, nil, nil)
        XCTAssertEqual(begun, 0, "BEGIN IMMEDIATE")
        guard begun == 0 else { return }
        FileHandle.standardOutput.write("\(lockHeldMarker)\n".data(using: .utf8)!)
        _ = FileHandle.standardInput.readDataToEndOfFile()
        XCTAssertEqual(sqlite.exec(conn, "ROLLBACK", nil, nil, nil), 0)
    }
}

// MARK: - 3. a real quarantine, from a client reset

final class QuarantineTests: XCTestCase {
    var dir: URL!
    var servers: [TestServer] = []
    var guardTimer: DispatchWorkItem?

    override func setUpWithError() throws {
        guardTimer = watchdog(90, name)
        dir = try tempDir()
    }

    override func tearDownWithError() throws {
        servers.forEach { $0.stop() }
        try? FileManager.default.removeItem(at: dir)
        guardTimer?.cancel()
    }

    private func startServer(_ name: String) throws -> TestServer {
        let serverDir = dir.appendingPathComponent(name)
        try FileManager.default.createDirectory(at: serverDir, withIntermediateDirectories: true)
        let server = try TestServer(dir: serverDir)
        servers.append(server)
        return server
    }

    private func stopServer(_ server: TestServer) {
        server.stop()
        servers.removeAll { $0 === server }
    }

    /// A file that keeps no recovery window (recoveryWindow 0) syncs tasks 1 and 2, then edits
    /// both offline (two changesets, the second also creating task 3). The server it comes back
    /// to has lost everything (a fresh data directory): a client reset in Recover mode re-creates
    /// task 3 and quarantines the edits of tasks 1 and 2, which no longer exist anywhere.
    /// (Blocking waits: the servers start and stop inside the test, and on Linux
    /// `Process.waitUntilExit()` never returns in an async test.)
    func testAClientResetQuarantinesWhatItCannotRecover() throws {
        let a = try Database.openWithOptions(path: dir.appendingPathComponent("a.sqlite").path,
                                             classes: taskClasses(),
                                             options: OpenOptions(durability: .normal, recoveryWindow: 0))
        let first = try startServer("first")
        var session = try a.sync(options: first.options(), tokenProvider: nil)
        try a.write { tx in
            try tx.create(className: "Task", key: .int(value: 1), values: ["title": str("one")])
            try tx.create(className: "Task", key: .int(value: 2), values: ["title": str("two")])
        }
        try session.waitForUploadBlocking(timeoutMs: 30_000)
        try session.waitForDownloadBlocking(timeoutMs: 30_000)
        session.stop()
        stopServer(first)
        try a.write { try $0.set(className: "Task", key: .int(value: 1), property: "title", value: str("edited offline")) }
        try a.write { tx in
            try tx.set(className: "Task", key: .int(value: 2), property: "title", value: str("edited offline too"))
            try tx.create(className: "Task", key: .int(value: 3), values: ["title": str("created offline")])
        }
        XCTAssertEqual(try a.quarantine(), [])

        let second = try startServer("second")
        var options = second.options(token: "")
        options.clientReset = .recover
        let gate = GatedTokenProvider(), errors = SyncErrorEvents()
        session = try a.sync(options: options, tokenProvider: gate)
        let handle = session.observeErrors(listener: errors)
        defer { handle.cancel(); session.stop() }
        gate.open()
        eventually { ((try? a.quarantine()) ?? []).count == 2 }
        let records = try a.quarantine()
        guard records.count == 2 else { return XCTFail("quarantine: \(records)") }
        let (firstRecord, secondRecord) = (records[0], records[1])
        XCTAssertNotEqual(firstRecord.id, secondRecord.id)
        XCTAssertLessThan(firstRecord.originalVersion, secondRecord.originalVersion, "oldest first")
        XCTAssertEqual(firstRecord.instructions.map(\.index), [0])
        XCTAssertEqual(firstRecord.instructions.map(\.instruction), [#"Update Task[1].title = "edited offline""#])
        XCTAssertEqual(secondRecord.instructions.map(\.index), [0])
        XCTAssertEqual(secondRecord.instructions.map(\.instruction), [#"Update Task[2].title = "edited offline too""#])
        for record in records {
            XCTAssertTrue(record.instructions.first?.reason.contains("does not exist on the server") == true, "\(record)")
        }
        XCTAssertTrue(firstRecord.reason.hasPrefix("1 of 1 instructions not recovered"), firstRecord.reason)
        XCTAssertTrue(secondRecord.reason.hasPrefix("1 of 3 instructions not recovered"), secondRecord.reason)
        // What could be recovered was: task 3 is here, tasks 1 and 2 are gone.
        XCTAssertNil(try taskTitle(a, 1))
        XCTAssertNil(try taskTitle(a, 2))
        XCTAssertEqual(try taskTitle(a, 3), "created offline")
        eventually { errors.seen.all.contains { $0.0 == 0 && $0.1.contains("quarantined") && $0.2 } }
        XCTAssertTrue(errors.seen.all.contains { $0.0 == 208 && $0.1.hasPrefix("client reset:") },
                      "\(errors.seen.all)")

        try a.clearQuarantine(id: firstRecord.id + secondRecord.id + 100)  // unknown: nothing happens
        XCTAssertEqual(try a.quarantine().map(\.id), [firstRecord.id, secondRecord.id])
        try a.clearQuarantine(id: firstRecord.id)
        XCTAssertEqual(try a.quarantine(), [secondRecord])
        try a.clearQuarantine(id: nil)
        XCTAssertEqual(try a.quarantine(), [])

        // The recovered task reached the new server; the quarantined edits did not.
        try session.waitForUploadBlocking(timeoutMs: 30_000)
        let b = try openSyncedBlocking(path: dir.appendingPathComponent("b.sqlite").path, classes: taskClasses(),
                                       options: second.options(), tokenProvider: nil, timeoutMs: 30_000)
        defer { b.session.stop() }
        XCTAssertNil(try taskTitle(b.database, 1))
        XCTAssertEqual(try taskTitle(b.database, 3), "created offline")
    }
}

// MARK: - 6. transact

final class TransactTests: XCTestCase {
    var dir: URL!
    var server: TestServer!
    var guardTimer: DispatchWorkItem?

    // The server is started and stopped here, outside the async test (see TypedSyncTests).
    override func setUpWithError() throws {
        guardTimer = watchdog(90, name)
        dir = try tempDir()
        server = try TestServer(dir: dir)
    }

    override func tearDownWithError() throws {
        server?.stop()
        try? FileManager.default.removeItem(at: dir)
        guardTimer?.cancel()
    }

    private func setTitle(_ key: Int64, _ text: String) -> WriteOp {
        .set(className: "Task", key: .int(value: key), property: "title", value: str(text))
    }

    func testTransactIsRejectedWhenAnotherClientChangedTheObjectFirst() async throws {
        let a = try Database.open(path: dir.appendingPathComponent("a.sqlite").path, classes: taskClasses())
        let b = try Database.open(path: dir.appendingPathComponent("b.sqlite").path, classes: taskClasses())
        let first = try a.sync(options: server.options(), tokenProvider: nil)
        let sb = try b.sync(options: server.options(), tokenProvider: nil)
        defer { sb.stop() }
        try a.write { tx in
            try tx.create(className: "Task", key: .int(value: 1), values: ["title": str("original")])
            try tx.create(className: "Task", key: .int(value: 2), values: ["title": str("two")])
        }
        try await first.waitForUpload(timeoutMs: 30_000)
        try await sb.waitForDownload(timeoutMs: 30_000)
        first.stop()  // a goes offline and does not hear of b's change
        eventually { first.state() == .disconnected }
        _ = try b.write(ops: [setTitle(1, "from b")])
        try await sb.waitForUpload(timeoutMs: 30_000)

        let changes = CollectObject()
        let handle = try a.observeObject(className: "Task", key: .int(value: 1), listener: changes)
        defer { handle.cancel() }
        let gate = GatedTokenProvider()
        let sa = try a.sync(options: server.options(token: ""), tokenProvider: gate)
        defer { sa.stop() }
        async let verdict = sa.transact(ops: [setTitle(1, "from a")], timeoutMs: 30_000)
        // Committed locally at once (before a connects and downloads b's change).
        let deadline = Date().addingTimeInterval(30)
        while try taskTitle(a, 1) != "from a" && Date() < deadline {
            try await Task.sleep(nanoseconds: 10_000_000)
        }
        XCTAssertEqual(try taskTitle(a, 1), "from a", "transact commits locally first")
        gate.open()
        let outcome = try await verdict
        guard case .rejected(let reason) = outcome else { return XCTFail("expected a rejection, got \(outcome)") }
        XCTAssertTrue(reason.contains("Task[1]") && reason.contains("concurrently"), reason)
        XCTAssertEqual(try taskTitle(a, 1), "from b", "rolled back: b's title")
        eventually { changes.seen.all.count >= 2 }  // the write, then its rollback
        XCTAssertTrue(changes.seen.all.allSatisfy { $0 == .modified(properties: ["title"]) }, "\(changes.seen.all)")

        // The session goes on: an unconflicted transaction is accepted and reaches b.
        let accepted = try await sa.transact(ops: [setTitle(2, "checked")], timeoutMs: 30_000)
        guard case .accepted(let serverVersion) = accepted else { return XCTFail("expected acceptance, got \(accepted)") }
        XCTAssertGreaterThan(serverVersion, 0)
        try await sb.waitForDownload(timeoutMs: 30_000)
        XCTAssertEqual(try taskTitle(b, 2), "checked")
        // Nothing to transact: a Sync error (the blocking variant).
        XCTAssertThrowsError(try sa.transactBlocking(ops: [], timeoutMs: 30_000)) { error in
            guard case TandemError.Sync(let message) = error else { return XCTFail("got \(error)") }
            XCTAssertTrue(message.contains("wrote nothing"), message)
        }
    }
}
