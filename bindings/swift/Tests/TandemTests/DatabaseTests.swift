// The local database from Swift: schema, writes, queries, listeners, errors
// (mirrors bindings/python/tests/test_database.py).

import Foundation
import XCTest
@testable import Tandem

private struct ChangedMyMind: Error {}
struct ListenerFailed: Error {}

private func title(_ db: Database, _ key: Int64) throws -> String? {
    guard let object = try db.object(className: "Task", key: .int(value: key)) else { return nil }
    guard case .single(.string(let title))? = object["title"] else { return nil }
    return title
}

final class DatabaseTests: XCTestCase {
    var dir: URL!
    var db: Database!

    override func setUpWithError() throws {
        dir = try tempDir()
        db = try Database.open(path: dir.appendingPathComponent("db.sqlite").path, classes: taskClasses())
    }

    override func tearDownWithError() throws {
        db = nil
        try? FileManager.default.removeItem(at: dir)
    }

    func testHmacMatchesRfc4231() {
        // RFC 4231 test case 2.
        let mac = hmacSHA256(key: Array("Jefe".utf8), message: Array("what do ya want for nothing?".utf8))
        XCTAssertEqual(hex(mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    }

    func testWriteReadQuery() throws {
        try db.write { tx in
            for i in 0..<5 {
                try tx.create(className: "Task", key: .int(value: Int64(i)), values: [
                    "title": .string(value: "t\(i)"), "done": .bool(value: i % 2 == 0),
                ])
            }
            try tx.listInsert(className: "Task", key: .int(value: 0), property: "tags", index: 0,
                              value: .string(value: "red"))
        }
        XCTAssertEqual(try title(db, 3), "t3")
        let first = try XCTUnwrap(try db.object(className: "Task", key: .int(value: 0)))
        XCTAssertEqual(first["tags"], .list(items: [.string(value: "red")]))
        let done = try db.query(className: "Task", filter: "done == true SORT(_id DESC)", args: [])
        XCTAssertEqual(try done.keys(), [.int(value: 4), .int(value: 2), .int(value: 0)])
        XCTAssertEqual(try db.query(className: "Task", filter: "_id > $0", args: [.int(value: 2)]).count(), 2)
        XCTAssertEqual(try done.objects().count, 3)
    }

    func testAnErrorInWriteRollsTheBlockBack() throws {
        XCTAssertThrowsError(try db.write { tx in
            try tx.create(className: "Task", key: .int(value: 1), values: ["title": .string(value: "never")])
            throw ChangedMyMind()
        }) { error in XCTAssertTrue(error is ChangedMyMind) }
        XCTAssertNil(try db.object(className: "Task", key: .int(value: 1)))
    }

    func testBadInputIsATypedErrorAndWritesNothing() throws {
        XCTAssertThrowsError(try db.write { tx in
            try tx.create(className: "Task", key: .int(value: 1), values: ["title": .string(value: "ok")])
            try tx.set(className: "Task", key: .int(value: 1), property: "nope", value: .int(value: 1))
        }) { error in
            guard case TandemError.InvalidArgument(let message) = error else {
                return XCTFail("expected InvalidArgument, got \(error)")
            }
            XCTAssertTrue(message.contains("nope"), message)
        }
        XCTAssertNil(try db.object(className: "Task", key: .int(value: 1)))
        XCTAssertThrowsError(try db.query(className: "Task", filter: "title ==", args: [])) { error in
            guard case TandemError.InvalidArgument = error else { return XCTFail("got \(error)") }
        }
        XCTAssertThrowsError(try db.object(className: "Task", key: .objectId(bytes: Data([1, 2, 3])))) { error in
            guard case TandemError.InvalidArgument = error else { return XCTFail("got \(error)") }
        }
        XCTAssertThrowsError(try Database.open(
            path: dir.appendingPathComponent("x.sqlite").path,
            classes: [ClassSpec(name: "X", primaryKey: "missing", properties: [])]
        )) { error in
            guard case TandemError.Schema = error else { return XCTFail("got \(error)") }
        }
    }

    func testResultsListenerIndicesAndAThrowingListener() throws {
        try db.write { tx in
            for i in 0..<3 {
                try tx.create(className: "Task", key: .int(value: Int64(i)), values: ["title": .string(value: "t\(i)")])
            }
        }
        let results = try db.query(className: "Task", filter: "TRUEPREDICATE SORT(_id ASC)", args: [])
        let bad = try results.observe(listener: Throws())
        let good = Collect()
        let handle = try results.observe(listener: good)
        try db.write { tx in
            try tx.erase(className: "Task", key: .int(value: 0))
            try tx.create(className: "Task", key: .int(value: 5), values: ["title": .string(value: "t5")])
            try tx.set(className: "Task", key: .int(value: 2), property: "title", value: .string(value: "changed"))
        }
        eventually { good.changes.all.count >= 1 }
        let change = try XCTUnwrap(good.changes.all.last)
        XCTAssertEqual(change.deletions, [0])
        XCTAssertEqual(change.insertions, [2])
        XCTAssertEqual(change.modifications, [1])
        XCTAssertEqual(change.keys, [.int(value: 1), .int(value: 2), .int(value: 5)])
        handle.cancel()
        bad.cancel()
        try db.write { tx in try tx.erase(className: "Task", key: .int(value: 5)) }
        Thread.sleep(forTimeInterval: 0.3)
        XCTAssertEqual(good.changes.all.count, 1, "no delivery after cancel()")
    }

    func testResultsChangesAsAnAsyncStream() async throws {
        let results = try db.query(className: "Task", filter: "TRUEPREDICATE SORT(_id ASC)", args: [])
        let stream = results.changes()
        try db.write { tx in
            try tx.create(className: "Task", key: .int(value: 1), values: ["title": .string(value: "a")])
        }
        var iterator = stream.makeAsyncIterator()
        // `changes()` registered before the write: it starts from no results.
        let initial = await iterator.next()
        XCTAssertEqual(initial?.keys, [])
        XCTAssertEqual(initial?.insertions, [])
        let change = await iterator.next()
        XCTAssertEqual(change?.insertions, [0])
        XCTAssertEqual(change?.keys, [.int(value: 1)])
    }

    /// The starting results plus every change, applied in order, give each change's own keys,
    /// while a writer commits during the registrations (a commit between reading the starting
    /// results and registering would break the chain).
    func testChangesStartExactlyWhereTheFirstChangeBegins() async throws {
        let stop = Box<Bool>()
        let stopped = DispatchSemaphore(value: 0)
        let writer = Thread { [db] in
            var i: Int64 = 0
            while stop.all.isEmpty {
                try? db!.write { tx in
                    try tx.create(className: "Task", key: .int(value: i), values: ["title": .string(value: "w")])
                    if i >= 3 { try tx.erase(className: "Task", key: .int(value: i - 3)) }
                }
                i += 1
            }
            stopped.signal()
        }
        writer.start()
        defer {
            stop.append(true)
            stopped.wait()
        }
        for _ in 0..<10 {
            let results = try db.query(className: "Task", filter: "TRUEPREDICATE SORT(_id ASC)", args: [])
            var iterator = results.changes().makeAsyncIterator()
            let first = await iterator.next()
            let initial = try XCTUnwrap(first)
            XCTAssertEqual(initial.insertions, (0..<UInt64(initial.keys.count)).map { $0 })
            XCTAssertEqual(initial.deletions, [])
            var keys = initial.keys
            for _ in 0..<3 {
                let next = await iterator.next()
                let change = try XCTUnwrap(next)
                let gone = Set(change.deletions)
                keys = keys.enumerated().filter { !gone.contains(UInt64($0.offset)) }.map(\.element)
                for i in change.insertions.sorted() { keys.insert(change.keys[Int(i)], at: Int(i)) }
                XCTAssertEqual(keys, change.keys)
            }
        }
    }

    func testObjectListenerMayWriteToTheDatabase() throws {
        try db.write { tx in
            try tx.create(className: "Task", key: .int(value: 1), values: ["title": .string(value: "x")])
        }
        let listener = WritesBack(db)
        let handle = try db.observeObject(className: "Task", key: .int(value: 1), listener: listener)
        try db.write { tx in
            try tx.set(className: "Task", key: .int(value: 1), property: "title", value: .string(value: "y"))
        }
        eventually { listener.seen.all.count >= 2 }
        XCTAssertEqual(listener.seen.all.first, .modified(properties: ["title"]))
        XCTAssertEqual(listener.seen.all.dropFirst().first, .modified(properties: ["count"]))
        let object = try XCTUnwrap(try db.object(className: "Task", key: .int(value: 1)))
        XCTAssertEqual(object["count"], .single(value: .int(value: 10)))
        handle.cancel()
    }
}

final class CollectObject: ObjectListener, @unchecked Sendable {
    let seen = Box<ObjectChange>()
    func onChange(change: ObjectChange) throws { seen.append(change) }
}

extension DatabaseTests {
    func testLinkedChangesNotifyAndKeyPathsNarrowThem() throws {
        func prop(_ name: String, _ type: PropertyType, _ target: String? = nil) -> PropertySpec {
            PropertySpec(name: name, propertyType: type, nullable: target != nil, collection: .single,
                         linkTarget: target)
        }
        let linked = try Database.open(path: dir.appendingPathComponent("linked.sqlite").path, classes: [
            ClassSpec(name: "Person", primaryKey: "_id",
                      properties: [prop("_id", .int), prop("nick", .string), prop("dog", .link, "Dog")]),
            ClassSpec(name: "Dog", primaryKey: "_id",
                      properties: [prop("_id", .int), prop("name", .string), prop("age", .int)]),
        ])
        try linked.write { tx in
            try tx.create(className: "Dog", key: .int(value: 1), values: [:])
            try tx.create(className: "Person", key: .int(value: 2),
                          values: ["dog": .link(className: "Dog", key: .int(value: 1))])
        }
        let all = CollectObject()
        let filtered = CollectObject()
        let handles = [
            try linked.observeObject(className: "Person", key: .int(value: 2), listener: all),
            try linked.observeObject(className: "Person", key: .int(value: 2), listener: filtered,
                                     keyPaths: ["nick", "dog.name"]),
        ]
        try linked.write { tx in  // off the key paths
            try tx.set(className: "Dog", key: .int(value: 1), property: "age", value: .int(value: 3))
        }
        eventually { all.seen.all.count >= 1 }
        try linked.write { tx in
            try tx.set(className: "Person", key: .int(value: 2), property: "nick", value: .string(value: "P"))
        }
        eventually { all.seen.all.count >= 2 }
        try linked.write { tx in
            try tx.set(className: "Dog", key: .int(value: 1), property: "name", value: .string(value: "Rex"))
        }
        eventually { all.seen.all.count >= 3 && filtered.seen.all.count >= 2 }
        let dog = ObjectChange.modified(properties: ["dog"])
        let nick = ObjectChange.modified(properties: ["nick"])
        XCTAssertEqual(all.seen.all, [dog, nick, dog])
        XCTAssertEqual(filtered.seen.all, [nick, dog])
        XCTAssertThrowsError(try linked.observeObject(
            className: "Person", key: .int(value: 2), listener: all, keyPaths: ["dog.nme"]))
        handles.forEach { $0.cancel() }
    }
}

final class Collect: ResultsListener, @unchecked Sendable {
    let changes = Box<ResultsChange>()
    func onChange(change: ResultsChange) throws { changes.append(change) }
}

final class Throws: ResultsListener, @unchecked Sendable {
    func onChange(change: ResultsChange) throws {
        throw ListenerFailed()  // any Swift error: logged by Tandem, other listeners still run
    }
}

/// Writes to the database from its own callback: must not deadlock.
final class WritesBack: ObjectListener, @unchecked Sendable {
    let db: Database
    let seen = Box<ObjectChange>()
    init(_ db: Database) { self.db = db }
    func onChange(change: ObjectChange) throws {
        seen.append(change)
        if seen.all.count == 1 {
            try db.write { tx in
                try tx.add(className: "Task", key: .int(value: 1), property: "count", amount: 10)
            }
        }
    }
}
