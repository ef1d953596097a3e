// EntryReader (TypedResults.snapshot's in-place decoding) against the generated lifting of
// `Results.entries()`: the same entries for every kind of value, the same models, the same errors.

import Foundation
import XCTest
@testable import Tandem

final class EntryReaderTests: XCTestCase {
    var dir: URL!
    var guardTimer: DispatchWorkItem?

    override func setUpWithError() throws {
        guardTimer = watchdog(90, name)
        dir = try tempDir()
    }

    override func tearDownWithError() throws {
        guardTimer?.cancel()
        try? FileManager.default.removeItem(at: dir)
    }

    /// Every entry as `WireReader` lifts it from the buffer.
    func readerEntries(_ raw: Results) throws -> [ObjectEntry] {
        try EntryReader.withEntriesBuffer(raw) { reader in
            let n = try reader.count()
            var out: [ObjectEntry] = []
            for _ in 0..<n { out.append(ObjectEntry(key: try reader.key(), fields: try reader.fieldMap())) }
            return out
        }
    }

    func testTheReaderLiftsWhatTheGeneratedCodeLifts() throws {
        // Every Value case, the collections, and the three kinds of embedded property.
        let address = ClassSpec(name: "Address", primaryKey: nil, properties: [
            PropertySpec(name: "street", propertyType: .string, nullable: true, collection: .single),
            PropertySpec(name: "zips", propertyType: .int, collection: .list),
        ])
        let db = try Database.open(path: dir.appendingPathComponent("wire.sqlite").path,
                                   models: [Person.self, Item.self],
                                   classes: [address, ClassSpec(name: "Holder", primaryKey: "_id", properties: [
                                       PropertySpec(name: "_id", propertyType: .string, collection: .single),
                                       PropertySpec(name: "dec", propertyType: .decimal, nullable: true, collection: .single),
                                       PropertySpec(name: "home", propertyType: .link, nullable: true,
                                                    collection: .single, linkTarget: "Address"),
                                       PropertySpec(name: "homes", propertyType: .link, collection: .list,
                                                    linkTarget: "Address"),
                                       PropertySpec(name: "byName", propertyType: .link, nullable: true,
                                                    collection: .dictionary, linkTarget: "Address"),
                                   ])])
        try db.write { tx in
            try tx.add(Person(_id: "ann", name: "Ann"))
            try tx.add(Person(_id: "bob", name: "Bob"))  // fullItem() links to both
            try tx.add(Item())
            try tx.add(fullItem())
            try tx.create(className: "Holder", key: .string(value: "h1"),
                          values: ["dec": .decimal(value: "12345E-2")])
            try tx.create(className: "Holder", key: .string(value: "h2"), values: ["dec": .null])
            let raw = try tx.raw
            try raw.createEmbedded(className: "Holder", key: .string(value: "h1"), property: "home")
            try raw.listInsertEmbedded(className: "Holder", key: .string(value: "h1"), property: "homes", index: 0)
            try raw.createEmbedded(className: "Holder", key: .string(value: "h1"), property: "byName",
                                   path: [.name(name: "work")])
            try raw.set(className: "Holder", key: .string(value: "h1"), property: "home",
                        value: .string(value: "Main St"), path: [.name(name: "street")])
        }
        for className in ["Item", "Person", "Holder"] {
            let raw = try db.query(className: className, filter: "TRUEPREDICATE", args: [])
            let generated = try raw.entries()
            XCTAssertFalse(generated.isEmpty)
            XCTAssertEqual(try readerEntries(raw), generated, className)
        }
        let holder = try db.query(className: "Holder", filter: "_id == 'h1'", args: []).entries()
        guard case .embedded(present: true, _)? = holder.first?.fields["home"] else {
            return XCTFail("\(holder)")
        }
        // The typed models: the same as decoding the generated entries.
        let raw = try db.objects(Item.self).raw
        let expected = try raw.entries().map { try FieldDecoder.decode(Item.self, key: $0.key, from: $0.fields) }
        XCTAssertEqual(try db.objects(Item.self).snapshot(), expected)
        XCTAssertEqual(expected.count, 2)
        XCTAssertEqual(Set(try db.objects(Person.self).snapshot().map(\.name)), ["Ann", "Bob"])
    }

    func testModelsDecodedInPlace() throws {
        struct Row: TandemObject, Equatable {
            var _id: Int
            var title: String
            var small: Int8
            var done: Bool
            var score: Double
            var ratio: Float
            var when: Date
            var maybe: Int?
            var note: String?
            var tags: [String]
        }
        // A custom init(from:) that asks out of declaration order (and encodes in another).
        struct Custom: TandemObject, Equatable {
            var _id: String
            var a: Int
            var b: String
            enum CodingKeys: String, CodingKey { case _id, a, b, absent }
            init(_id: String, a: Int, b: String) { (self._id, self.a, self.b) = (_id, a, b) }
            init(from decoder: Decoder) throws {
                let c = try decoder.container(keyedBy: CodingKeys.self)
                b = try c.decode(String.self, forKey: .b)
                _id = try c.decode(String.self, forKey: ._id)
                a = try c.decode(Int.self, forKey: .a)
                // Probed as a nullable property (the probe sees a placeholder), never written.
                _ = try c.decodeIfPresent(Int.self, forKey: .absent)
            }
            func encode(to encoder: Encoder) throws {
                var c = encoder.container(keyedBy: CodingKeys.self)
                try c.encode(_id, forKey: ._id)
                try c.encode(a, forKey: .a)
                try c.encode(b, forKey: .b)
            }
        }
        let db = try Database.open(path: dir.appendingPathComponent("rows.sqlite").path, models: [Row.self, Custom.self])
        func row(_ i: Int) -> Row {
            let maybe: Int? = i % 3 == 0 ? nil : i
            let note: String? = i % 4 == 0 ? nil : "n\(i)"
            let tags: [String] = (0..<(i % 3)).map { "t\($0)" }
            let when = Date(timeIntervalSince1970: Double(i) * 1000.25)
            return Row(_id: i, title: "row \(i) ✓", small: Int8(i - 25), done: i % 2 == 0, score: Double(i) / 3,
                       ratio: Float(i) / 7, when: when, maybe: maybe, note: note, tags: tags)
        }
        var rows: [Row] = []
        for i in 0..<50 { rows.append(row(i)) }
        try db.write { tx in
            for row in rows { try tx.add(row) }
            try tx.add(Custom(_id: "x", a: 7, b: "bee"))
        }
        XCTAssertEqual(try db.objects(Row.self, where: "TRUEPREDICATE SORT(_id ASC)").snapshot(), rows)
        XCTAssertEqual(try db.objects(Row.self, where: "done == true SORT(_id DESC)").snapshot(),
                       Array(rows.filter { $0.done }.reversed()))
        XCTAssertEqual(try db.objects(Row.self, where: "_id < 0").snapshot(), [])
        XCTAssertEqual(try db.objects(Custom.self).snapshot(), [Custom(_id: "x", a: 7, b: "bee")])
        // Straight from `Results.rows`, not through snapshot()'s fallback to `entries()`.
        func inPlace<T: TandemObject>(_ type: T.Type, _ filter: String) throws -> [T] {
            let plan = try DecodePlan.of(T.self)
            let raw = try db.query(className: T.className, filter: filter, args: [])
            return try EntryReader.withRowsBuffer(raw, plan) { try EntryReader.decode(T.self, plan: plan, &$0) }
        }
        XCTAssertEqual(try inPlace(Row.self, "TRUEPREDICATE SORT(_id ASC)"), rows)
        XCTAssertEqual(try inPlace(Custom.self, "TRUEPREDICATE"), [Custom(_id: "x", a: 7, b: "bee")])
    }

    func testMismatchesThrowAsFieldDecoderDoes() throws {
        // Read an untyped class through models that do not fit it: the same errors either way.
        let db = try Database.open(path: dir.appendingPathComponent("mismatch.sqlite").path, classes: taskClasses())
        try db.write { tx in
            try tx.create(className: "Task", key: .int(value: 1),
                          values: ["title": .string(value: "t"), "done": .bool(value: true), "count": .int(value: 300)])
        }
        struct Task: TandemObject { var _id: Int; var title: String; var done: Bool; var count: Int8; var tags: [String] }
        struct Task2: TandemObject {
            static let className = "Task"
            var _id: String; var title: String; var done: Bool; var count: Int; var tags: [String]
        }
        struct Task3: TandemObject {
            static let className = "Task"
            var _id: Int; var title: Int; var done: Bool; var count: Int; var tags: [String]
        }
        struct Task4: TandemObject {
            static let className = "Task"
            var _id: Int; var title: String; var done: Bool; var count: Int; var tags: [String]; var extra: Double
        }
        func same<T: TandemObject>(_ type: T.Type, file: StaticString = #filePath, line: UInt = #line) throws {
            let raw = try db.query(className: "Task", filter: "TRUEPREDICATE", args: [])
            var old: TandemModelError?
            do { _ = try raw.entries().map { try FieldDecoder.decode(T.self, key: $0.key, from: $0.fields) } }
            catch { old = error as? TandemModelError }
            var new: TandemModelError?
            do { _ = try TypedResults<T>(raw, db: db).snapshot() } catch { new = error as? TandemModelError }
            XCTAssertNotNil(old, file: file, line: line)
            XCTAssertEqual(old, new, file: file, line: line)
        }
        try same(Task.self)   // 300 does not fit Int8
        try same(Task2.self)  // an int key read as String
        try same(Task3.self)  // a string read as Int
        try same(Task4.self)  // no such property
    }
}
