// The typed layer: Codable models, native values, typed queries, AsyncStreams, errors, and sync
// of typed objects between two clients through a real tandem-server.

import Foundation
import XCTest
@testable import Tandem

struct Person: TandemObject, Equatable {
    var _id: String
    var name: String
}

struct Item: TandemObject, Equatable {
    var _id: ObjectId = .generate()
    var int: Int = 0
    var int64: Int64 = 0
    var int32: Int32 = 0
    var int8: Int8 = 0
    var bool = false
    var string = ""
    var double = 0.0
    var float: Float = 0
    var date = Date(timeIntervalSince1970: 0)
    var uuid = UUID()
    var data = Data()
    var objectId = ObjectId.generate()
    var optInt: Int?
    var optString: String?
    var optDate: Date?
    var optUUID: UUID?
    var list: [String] = []
    var optList: [Int?] = []
    var set: Set<Int> = []
    var dict: [String: Double] = [:]
    var owner: Link<Person>?
    var friends: [Link<Person>] = []
}

struct Todo: TandemObject, Equatable {
    static let className = "Todo"
    var _id: Int
    var title: String
    var done = false
    var tags: [String] = []
}

struct Ticket: TandemObject, Equatable {
    static let indexed: Set<String> = ["owner", "priority"]
    var _id: Int
    var owner = ""
    var priority = 0
}

struct BadIndex: TandemObject {
    static let indexed: Set<String> = ["tags"]
    var _id: Int
    var tags: [String] = []
}

struct MisnamedIndex: TandemObject {
    static let indexed: Set<String> = ["ownr"]
    var _id: Int
    var owner = ""
}

final class TypedTests: XCTestCase {
    var dir: URL!
    var db: Database!
    var guardTimer: DispatchWorkItem?

    override func setUpWithError() throws {
        guardTimer = watchdog(90, name)
        dir = try tempDir()
        db = try Database.open(path: dir.appendingPathComponent("typed.sqlite").path,
                               models: [Person.self, Item.self, Todo.self])
    }

    override func tearDownWithError() throws {
        guardTimer?.cancel()
        try? FileManager.default.removeItem(at: dir)
    }

    func full() -> Item { fullItem() }
}

/// An item with every property set to a value other than its default.
func fullItem() -> Item {
    Item(int: -42, int64: .max, int32: .min, int8: -7, bool: true, string: "héllo ✓",
         double: 3.25, float: -1.5, date: Date(timeIntervalSince1970: 1_700_000_000.123456),
         uuid: UUID(), data: Data([0, 1, 255]), objectId: ObjectId("0123456789abcdef01234567")!,
         optInt: 7, optString: "x", optDate: Date(timeIntervalSince1970: -12.5), optUUID: UUID(),
         list: ["b", "a", "b"], optList: [1, nil, 3], set: [3, 1, 2], dict: ["pi": 3.14, "e": 2.72],
         owner: Link(key: .string(value: "ann")),
         friends: [Link(key: .string(value: "bob")), Link(key: .string(value: "ann"))])
}

extension TypedTests {
    func testSchemaComesFromTheCodableStructure() throws {
        let spec = try Item.classSpec()
        XCTAssertEqual(spec.name, "Item")
        XCTAssertEqual(spec.primaryKey, "_id")
        let byName = Dictionary(uniqueKeysWithValues: spec.properties.map { ($0.name, $0) })
        XCTAssertEqual(spec.properties.count, 23)
        XCTAssertEqual(spec.properties.first?.name, "_id", "declaration order")
        XCTAssertEqual(byName["_id"], PropertySpec(name: "_id", propertyType: .objectId, collection: .single))
        XCTAssertEqual(byName["int8"]?.propertyType, .int)
        XCTAssertEqual(byName["date"]?.propertyType, .timestamp)
        XCTAssertEqual(byName["optInt"], PropertySpec(name: "optInt", propertyType: .int, nullable: true, collection: .single))
        XCTAssertEqual(byName["optList"], PropertySpec(name: "optList", propertyType: .int, nullable: true, collection: .list))
        XCTAssertEqual(byName["set"], PropertySpec(name: "set", propertyType: .int, collection: .set))
        XCTAssertEqual(byName["dict"], PropertySpec(name: "dict", propertyType: .double, collection: .dictionary))
        XCTAssertEqual(byName["owner"], PropertySpec(name: "owner", propertyType: .link, nullable: true,
                                                     collection: .single, linkTarget: "Person"))
        XCTAssertEqual(byName["friends"], PropertySpec(name: "friends", propertyType: .link, collection: .list,
                                                       linkTarget: "Person"))
        XCTAssertEqual(try Todo.classSpec().properties.map(\.propertyType), [.int, .string, .bool, .string])
    }

    func testEveryTypeRoundTrips() throws {
        let people = [Person(_id: "ann", name: "Ann"), Person(_id: "bob", name: "Bob")]
        let empty = Item()
        let filled = full()
        try db.write { tx in
            for p in people { try tx.add(p) }
            try tx.add(empty)
            try tx.add(filled)
        }
        XCTAssertEqual(try db.object(Item.self, key: empty._id), empty)
        XCTAssertEqual(try db.object(Item.self, key: filled._id), filled)
        XCTAssertEqual(try db.object(Person.self, key: "bob"), people[1])
        XCTAssertEqual(Set(try db.objects(Item.self).snapshot().map(\._id)), [empty._id, filled._id])
        let owner = try XCTUnwrap(try db.object(Item.self, key: filled._id)?.owner)
        XCTAssertEqual(try db.object(owner), people[0])
        // Realm nulls a link to a deleted object, and drops it from lists of links.
        try db.write { try $0.delete(Person.self, key: "ann") }
        let after = try XCTUnwrap(try db.object(Item.self, key: filled._id))
        XCTAssertNil(after.owner)
        XCTAssertEqual(after.friends, [Link(key: .string(value: "bob"))])
        XCTAssertNil(try db.object(owner))
    }

    func testUpsertReplacesCollectionsAndWritesNilOptionalsAsNull() throws {
        var item = full()
        try db.write { tx in
            try tx.add(Person(_id: "ann", name: "Ann"))
            try tx.add(Person(_id: "bob", name: "Bob"))
            try tx.add(item)
        }
        item.list = ["z"]
        item.optList = []
        item.set = [2, 9]
        item.dict = ["e": 2.72, "new": 1]
        item.optInt = nil
        item.optString = nil
        item.owner = nil
        item.friends = [Link(key: .string(value: "ann"))]
        item.string = "changed"
        try db.write { try $0.upsert(item) }
        XCTAssertEqual(try db.object(Item.self, key: item._id), item)
        let fresh = Item()
        try db.write { try $0.upsert(fresh) }  // upsert of a new object creates it
        XCTAssertEqual(try db.object(Item.self, key: fresh._id), fresh)
        // add then upsert in one transaction: the upsert's collections replace the add's.
        var twice = Item(list: ["a"], set: [1], dict: ["k": 1])
        try db.write { tx in
            try tx.add(twice)
            twice.list = ["b", "c"]
            twice.set = [2]
            twice.dict = ["j": 2]
            try tx.upsert(twice)
        }
        XCTAssertEqual(try db.object(Item.self, key: twice._id), twice)
    }

    func testModifyAndPropertyAndCollectionEdits() throws {
        try db.write { try $0.add(Todo(_id: 1, title: "milk", tags: ["a"])) }
        try db.write { tx in
            XCTAssertTrue(try tx.modify(Todo.self, key: 1) { $0.title = "oat milk"; $0.tags.append("b") })
            XCTAssertFalse(try tx.modify(Todo.self, key: 99) { $0.title = "none" })
        }
        XCTAssertEqual(try db.object(Todo.self, key: 1), Todo(_id: 1, title: "oat milk", tags: ["a", "b"]))
        try db.write { tx in
            try tx.set(Todo.self, key: 1, "done", to: true)
            try tx.insert("first", at: 0, in: Todo.self, key: 1, "tags")
            try tx.remove(at: 2, in: Todo.self, key: 1, "tags")
        }
        XCTAssertEqual(try db.object(Todo.self, key: 1), Todo(_id: 1, title: "oat milk", done: true, tags: ["first", "a"]))
        let item = Item()
        try db.write { tx in
            try tx.add(item)
            try tx.set("k", to: 1.5, in: Item.self, key: item._id, "dict")
        }
        try db.write { tx in
            try tx.insert(5, intoSet: Item.self, key: item._id, "set")
            try tx.insert(6, intoSet: Item.self, key: item._id, "set")
            try tx.remove(5, fromSet: Item.self, key: item._id, "set")
            try tx.set("j", to: 2.5, in: Item.self, key: item._id, "dict")
            try tx.remove(entry: "k", in: Item.self, key: item._id, "dict")
            try tx.increment(Item.self, key: item._id, "int", by: 3)
        }
        let edited = try XCTUnwrap(try db.object(Item.self, key: item._id))
        XCTAssertEqual(edited.set, [6])
        XCTAssertEqual(edited.dict, ["j": 2.5])
        XCTAssertEqual(edited.int, 3)
        XCTAssertThrowsError(try db.write { tx in
            try tx.insert(5, intoSet: Item.self, key: ObjectId.generate(), "set")
        }, "a set insert into a missing object fails the commit")
    }

    func testTypedListReplaceMoveAndClearingEachCollection() throws {
        try db.write { try $0.add(Todo(_id: 1, title: "t", tags: ["a", "b", "c"])) }
        try db.write { tx in
            try tx.replace(at: 1, with: "B", in: Todo.self, key: 1, "tags")
            try tx.move(from: 0, to: 2, in: Todo.self, key: 1, "tags")
        }
        XCTAssertEqual(try db.object(Todo.self, key: 1)?.tags, ["B", "c", "a"])
        try db.write { try $0.removeAll(in: Todo.self, key: 1, "tags") }
        XCTAssertEqual(try db.object(Todo.self, key: 1)?.tags, [])
        let item = Item(set: [1, 2], dict: ["k": 1.5])
        try db.write { try $0.add(item) }
        try db.write { tx in
            try tx.removeAll(in: Item.self, key: item._id, "set")
            try tx.removeAll(in: Item.self, key: item._id, "dict")
        }
        let cleared = try XCTUnwrap(try db.object(Item.self, key: item._id))
        XCTAssertEqual(cleared.set, [])
        XCTAssertEqual(cleared.dict, [:])
        // Not a collection, a value of the wrong type, a position past the end: refused, and
        // nothing of the transaction is written.
        XCTAssertThrowsError(try db.write { try $0.removeAll(in: Todo.self, key: 1, "title") })
        XCTAssertThrowsError(try db.write { try $0.replace(at: 0, with: 5, in: Todo.self, key: 1, "tags") })
        XCTAssertThrowsError(try db.write { tx in
            try tx.insert("x", at: 0, in: Todo.self, key: 1, "tags")
            try tx.move(from: 0, to: 3, in: Todo.self, key: 1, "tags")
        })
        XCTAssertEqual(try db.object(Todo.self, key: 1)?.tags, [])
    }

    func testTheTypedOpenTakesOpenOptions() throws {
        let file = dir.appendingPathComponent("options.sqlite").path
        var held: Database? = try Database.open(
            path: file, models: [Ticket.self],
            options: OpenOptions(durability: .full, exclusiveToProcess: true))
        try held!.write { try $0.add(Ticket(_id: 1, owner: "u1")) }
        // The options reached the store: the file is open exclusive_to_process here, so opening
        // it shared beside it is refused, naming the setting.
        XCTAssertThrowsError(try Database.open(path: file, models: [Ticket.self])) { error in
            guard case TandemError.InvalidArgument(let message) = error else {
                return XCTFail("got \(error)")
            }
            XCTAssertTrue(message.contains("exclusive_to_process = true"), message)
        }
        XCTAssertEqual(try held!.object(Ticket.self, key: 1)?.owner, "u1")
        held = nil
        // Closed: the defaults open it, and it holds what was written.
        XCTAssertEqual(try Database.open(path: file, models: [Ticket.self]).object(Ticket.self, key: 1)?.owner, "u1")
    }

    func testIndexedPropertiesAreQueriedAndRefusedWhereRealmRefusesThem() throws {
        let tickets = try Database.open(path: dir.appendingPathComponent("indexed.sqlite").path,
                                        models: [Ticket.self])
        try tickets.write { tx in
            for i in 0..<50 { try tx.add(Ticket(_id: i, owner: "u\(i % 5)", priority: i % 10)) }
        }
        XCTAssertEqual(try tickets.objects(Ticket.self, where: "owner == $0", "u3").snapshot().map(\._id),
                       Array(stride(from: 3, to: 50, by: 5)))
        XCTAssertEqual(
            try tickets.objects(Ticket.self, where: "priority >= $0 AND priority < $1", 8, 9).snapshot().map(\._id),
            [8, 18, 28, 38, 48])
        XCTAssertThrowsError(try Database.open(path: dir.appendingPathComponent("bad.sqlite").path,
                                               models: [BadIndex.self])) { error in
            XCTAssertTrue("\(error)".contains("index"), "\(error)")
        }
        XCTAssertThrowsError(try Database.open(path: dir.appendingPathComponent("misnamed.sqlite").path,
                                               models: [MisnamedIndex.self])) { error in
            XCTAssertEqual(error as? TandemModelError,
                           .unknownIndexedProperty(className: "MisnamedIndex", property: "ownr"))
        }
    }

    func testTypedQueriesWithArguments() throws {
        try db.write { tx in
            for i in 0..<10 { try tx.add(Todo(_id: i, title: i % 2 == 0 ? "buy milk \(i)" : "call \(i)", done: i < 4)) }
        }
        let open = try db.objects(Todo.self, where: "done == false AND title CONTAINS $0 SORT(_id DESC)", "milk")
        XCTAssertEqual(try open.snapshot().map(\._id), [8, 6, 4])
        XCTAssertEqual(try open.count(), 3)
        XCTAssertEqual(try open.first()?._id, 8)
        XCTAssertEqual(try db.objects(Todo.self, where: "_id >= $0 AND _id < $1", 2, 5).count(), 3)
        try db.write { try $0.delete(Todo(_id: 8, title: "")) }
        XCTAssertEqual(try open.snapshot().map(\._id), [6, 4], "results are live")
    }

    func testLiveResultsAsAnAsyncStream() async throws {
        let results = try db.objects(Todo.self, where: "done == false SORT(_id ASC)")
        var values = results.values().makeAsyncIterator()
        let initial = try await values.next()
        XCTAssertEqual(initial, [])
        try db.write { try $0.add(Todo(_id: 1, title: "a")) }
        var next = try await values.next()
        XCTAssertEqual(next, [Todo(_id: 1, title: "a")])
        try db.write { tx in
            try tx.add(Todo(_id: 2, title: "b"))
            try tx.set(Todo.self, key: 1, "done", to: true)
        }
        next = try await values.next()
        XCTAssertEqual(next, [Todo(_id: 2, title: "b")])
    }

    func testTypedResultsChangeStream() async throws {
        try db.write { tx in for i in 0..<3 { try tx.add(Todo(_id: i, title: "t\(i)")) } }
        let results = try db.objects(Todo.self, where: "TRUEPREDICATE SORT(_id ASC)")
        var changes = results.changes().makeAsyncIterator()
        let initial = try XCTUnwrapAsync(try await changes.next())
        XCTAssertTrue(initial.initial)
        XCTAssertEqual(initial.insertions, [0, 1, 2])
        XCTAssertEqual(initial.objects.map(\.title), ["t0", "t1", "t2"])
        try db.write { tx in
            try tx.delete(Todo.self, key: 0)
            try tx.add(Todo(_id: 5, title: "t5"))
            try tx.set(Todo.self, key: 2, "title", to: "changed")
        }
        let change = try XCTUnwrapAsync(try await changes.next())
        XCTAssertFalse(change.initial)
        XCTAssertEqual(change.deletions, [0])
        XCTAssertEqual(change.insertions, [2])
        XCTAssertEqual(change.modifications, [1])
        XCTAssertEqual(change.objects.map(\.title), ["t1", "changed", "t5"])
    }

    func testTypedObjectChangeStream() async throws {
        try db.write { try $0.add(Todo(_id: 1, title: "a")) }
        var changes = try db.changes(of: Todo.self, key: 1).makeAsyncIterator()
        try db.write { try $0.modify(Todo.self, key: 1) { $0.title = "b" } }
        guard case let .modified(todo, properties)? = try await changes.next() else {
            return XCTFail("expected a modification")
        }
        XCTAssertEqual(todo, Todo(_id: 1, title: "b"))
        XCTAssertEqual(properties, ["title"])
        try db.write { try $0.delete(Todo.self, key: 1) }
        guard case .deleted? = try await changes.next() else { return XCTFail("expected a deletion") }
    }

    func testAsyncWaitReturnsOrTimesOut() async throws {
        let results = try db.objects(Todo.self)
        let writer = Task.detached { [db] in
            for i in 0..<5 { try db!.write { try $0.add(Todo(_id: i, title: "\(i)")) } }
        }
        let seen = try await results.wait(seconds: 20) { $0.count == 5 }
        XCTAssertEqual(seen.count, 5)
        try await writer.value
        do {
            try await results.wait(seconds: 0.2) { $0.count == 6 }
            XCTFail("must time out")
        } catch let error as TandemModelError {
            guard case .timeout = error else { return XCTFail("\(error)") }
        }
    }

    /// Consecutive adds are gathered into one `createRows` per run of one class: runs of two
    /// classes, an add with a collection, a raw operation and a `modify` in between must keep
    /// their order, and a duplicate key inside a run fails the whole transaction.
    func testGatheredAddsKeepTheirOrderAndAtomicity() throws {
        try db.write { tx in
            for i in 0..<3 { try tx.add(Todo(_id: i, title: "t\(i)")) }
            try tx.add(Person(_id: "p1", name: "Ann"))
            try tx.add(Todo(_id: 3, title: "tagged", tags: ["a", "b"]))
            try tx.add(Todo(_id: 4, title: "t4"))
            // Recorded after the gathered adds: it sees them (the object exists at commit).
            try tx.raw.set(className: "Todo", key: .int(value: 4), property: "title",
                           value: .string(value: "t4 renamed"), path: [])
            try tx.add(Todo(_id: 5, title: "t5", done: true))
            try tx.add(Person(_id: "p2", name: "Bo"))
        }
        let todos = try db.objects(Todo.self, where: "TRUEPREDICATE SORT(_id ASC)").snapshot()
        XCTAssertEqual(todos.map(\.title), ["t0", "t1", "t2", "tagged", "t4 renamed", "t5"])
        XCTAssertEqual(todos[3].tags, ["a", "b"])
        XCTAssertEqual(todos[5].done, true)
        XCTAssertEqual(try db.objects(Person.self, where: "TRUEPREDICATE SORT(_id ASC)").snapshot().map(\.name),
                       ["Ann", "Bo"])
        // Key 7 twice in one run: nothing of the transaction is written.
        XCTAssertThrowsError(try db.write { tx in
            for i in [6, 7, 7, 8] { try tx.add(Todo(_id: i, title: "dup")) }
        }) { error in
            XCTAssertNotNil(error as? TandemError, "\(error)")
            XCTAssertTrue("\(error)".contains("row 2: Todo[7] already exists"), "\(error)")
        }
        XCTAssertEqual(try db.objects(Todo.self).count(), 6)
    }

    func testErrorsAreTypedAndWriteNothing() throws {
        struct Unsigned: TandemObject { var _id: Int; var n: UInt }
        struct Nested: TandemObject { struct Inner: Codable { var x: Int }; var _id: Int; var inner: Inner }
        struct NoKey: TandemObject { var id: Int }
        struct BadKey: TandemObject { var _id: Double }
        struct OptionalList: TandemObject { var _id: Int; var list: [Int]? }
        XCTAssertThrowsError(try Unsigned.classSpec()) {
            XCTAssertEqual($0 as? TandemModelError, .unsupportedType(property: "n", type: "UInt"))
        }
        XCTAssertThrowsError(try Nested.classSpec()) {
            guard case .unsupportedType(property: "inner", _)? = $0 as? TandemModelError else { return XCTFail("\($0)") }
        }
        XCTAssertThrowsError(try NoKey.classSpec()) {
            guard case .invalidPrimaryKey? = $0 as? TandemModelError else { return XCTFail("\($0)") }
        }
        XCTAssertThrowsError(try BadKey.classSpec()) {
            guard case .invalidPrimaryKey? = $0 as? TandemModelError else { return XCTFail("\($0)") }
        }
        XCTAssertThrowsError(try OptionalList.classSpec()) {
            guard case .unsupportedType(property: "list", _)? = $0 as? TandemModelError else { return XCTFail("\($0)") }
        }
        // A value that does not fit the model's type, as read from the database.
        XCTAssertThrowsError(try FieldDecoder.decode(Todo.self, key: .int(value: 1), from: [
            "title": .single(value: .int(value: 5)),
            "done": .single(value: .bool(value: false)), "tags": .list(items: []),
        ])) {
            guard case .typeMismatch(property: "title", _, _)? = $0 as? TandemModelError else { return XCTFail("\($0)") }
        }
        XCTAssertThrowsError(try Int8(tandemValue: .int(value: 300), property: "small")) {
            guard case .typeMismatch(property: "small", _, _)? = $0 as? TandemModelError else { return XCTFail("\($0)") }
        }
        // A typed edit of the wrong type is refused before anything is recorded.
        XCTAssertThrowsError(try db.write { try $0.set(Todo.self, key: 1, "done", to: "yes") }) {
            guard case .typeMismatch(property: "done", _, _)? = $0 as? TandemModelError else { return XCTFail("\($0)") }
        }
        // A duplicate add fails the commit and the whole transaction is lost.
        try db.write { try $0.add(Todo(_id: 1, title: "one")) }
        XCTAssertThrowsError(try db.write { tx in
            try tx.add(Todo(_id: 2, title: "two"))
            try tx.add(Todo(_id: 1, title: "again"))
        }) { XCTAssertTrue($0 is TandemError, "\($0)") }
        XCTAssertNil(try db.object(Todo.self, key: 2))
        XCTAssertEqual(try db.object(Todo.self, key: 1)?.title, "one")
        // Decimal: written and read back exactly (decimal128 as text across the FFI).
        struct Price: TandemObject { var _id: Int; var amount: Decimal }
        XCTAssertEqual(try Price.classSpec().properties.last?.propertyType, .decimal)
        let priced = try Database.open(path: dir.appendingPathComponent("price.sqlite").path, models: [Price.self])
        let amounts = ["9.99", "-123456789012345678901234567890.12", "0", "1E+20", "-0.000001"]
        try priced.write { tx in
            for (i, text) in amounts.enumerated() {
                try tx.add(Price(_id: i, amount: try XCTUnwrap(Decimal(string: text, locale: nil))))
            }
        }
        for (i, text) in amounts.enumerated() {
            XCTAssertEqual(try priced.object(Price.self, key: i)?.amount, Decimal(string: text, locale: nil), text)
        }
        XCTAssertThrowsError(try priced.write { try $0.add(Price(_id: 9, amount: Decimal.nan)) }) {
            guard case .notWritable(type: "Decimal", _)? = $0 as? TandemModelError else { return XCTFail("\($0)") }
        }
        XCTAssertNil(try priced.object(Price.self, key: 9))
        // The same class with another property type is refused on open, as a schema error.
        struct TodoV2: TandemObject { static let className = "Todo"; var _id: Int; var title: Int }
        db = nil
        XCTAssertThrowsError(try Database.open(path: dir.appendingPathComponent("typed.sqlite").path,
                                               models: [TodoV2.self])) {
            guard case .Schema? = $0 as? TandemError else { return XCTFail("\($0)") }
            XCTAssertTrue("\($0)".contains("schema change to Todo.title refused"), "\($0)")
        }
    }

    func testObjectIdTextAndGeneration() throws {
        let id = try XCTUnwrap(ObjectId("65A1B2C3d4e5f60718293a4b"))
        XCTAssertEqual(id.description, "65a1b2c3d4e5f60718293a4b")
        XCTAssertEqual(id.timestamp, Date(timeIntervalSince1970: 0x65A1_B2C3))
        XCTAssertNil(ObjectId("65a1"))
        XCTAssertNil(ObjectId("zza1b2c3d4e5f60718293a4b"))
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        let ids = (0..<1000).map { _ in ObjectId.generate(date: now) }
        XCTAssertEqual(Set(ids).count, 1000)
        XCTAssertEqual(ids[0].timestamp, now)
        XCTAssertEqual(try JSONDecoder().decode(ObjectId.self, from: JSONEncoder().encode(id)), id)
    }
}

/// XCTUnwrap for an optional produced by an `await`.
func XCTUnwrapAsync<T>(_ value: T?, file: StaticString = #filePath, line: UInt = #line) throws -> T {
    try XCTUnwrap(value, file: file, line: line)
}

final class TypedSyncTests: XCTestCase {
    var dir: URL!
    var server: TestServer!
    var guardTimer: DispatchWorkItem?

    // The server is started and stopped here, outside the async test: on Linux,
    // `Process.waitUntilExit()` called from an async test never returns.
    override func setUpWithError() throws {
        guardTimer = watchdog(120, name)
        dir = try tempDir()
        server = try TestServer(dir: dir)
    }

    override func tearDownWithError() throws {
        server?.stop()
        try? FileManager.default.removeItem(at: dir)
        guardTimer?.cancel()
    }

    func testTypedObjectsSyncBetweenTwoClients() async throws {
        let models: [any TandemObject.Type] = [Person.self, Item.self, Todo.self]
        let a = try Database.open(path: dir.appendingPathComponent("a.sqlite").path, models: models)
        let b = try Database.open(path: dir.appendingPathComponent("b.sqlite").path, models: models)
        let sa = try a.sync(options: server.options(path: "/typed", token: makeToken(paths: ["/typed"])), tokenProvider: nil)
        let sb = try b.sync(options: server.options(path: "/typed", token: makeToken(paths: ["/typed"])), tokenProvider: nil)
        defer { sa.stop(); sb.stop() }
        let item = full()
        try a.write { tx in
            try tx.add(Person(_id: "ann", name: "Ann"))
            try tx.add(Person(_id: "bob", name: "Bob"))
            try tx.add(item)
            for i in 0..<5 { try tx.add(Todo(_id: i, title: "from a \(i)")) }
        }
        try await sa.waitForUpload(timeoutMs: 30_000)
        let todos = try await b.objects(Todo.self, where: "TRUEPREDICATE SORT(_id ASC)")
            .wait(seconds: 30) { $0.count == 5 }
        XCTAssertEqual(todos.map(\.title), (0..<5).map { "from a \($0)" })
        try await b.objects(Item.self).wait(seconds: 30) { $0.count == 1 }
        XCTAssertEqual(try b.object(Item.self, key: item._id), item, "every type survives sync")
        // b edits, a sees it.
        try b.write { tx in
            try tx.modify(Todo.self, key: 3) { $0.done = true; $0.tags = ["synced"] }
        }
        let done = try await a.objects(Todo.self, where: "done == true").wait(seconds: 30) { $0.count == 1 }
        XCTAssertEqual(done, [Todo(_id: 3, title: "from a 3", done: true, tags: ["synced"])])
    }

    func full() -> Item { fullItem() }
}
