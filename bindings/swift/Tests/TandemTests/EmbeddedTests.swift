// Embedded objects in the typed layer (`TandemEmbeddedObject`): the derived schema, every property
// shape round-tripping through a real database (a single optional object, lists and dictionaries
// of them, embedded objects and collections inside embedded objects), upsert replacing them
// whole, modify writing their differences, queries on the owner class, typed listeners, the
// shapes refused, and sync of embedded objects between two clients through a real tandem-server.

import Foundation
import XCTest
@testable import Tandem

struct Geo: TandemEmbeddedObject, Equatable {
    var lat = 0.0
    var lng = 0.0
    var note: String?
}

struct Address: TandemEmbeddedObject, Equatable {
    var street = ""
    var city = ""
    var zip: Int?
    var tags: [String] = []
    var labels: Set<String> = []
    var scores: [String: Int] = [:]
    var geo: Geo?
    var history: [Geo] = []
}

struct Contact: TandemObject, Equatable {
    var _id: Int
    var name = ""
    var home: Address?
    var previous: [Address] = []
    var byLabel: [String: Address] = [:]
    var maybe: [String: Address?] = [:]
}

/// A second model holding `Address`: the embedded class is registered once.
struct Office: TandemObject, Equatable {
    static let className = "Office"
    var _id: String
    var site: Address?
}

/// A contact with every embedded shape filled in, nested objects and collections included.
func fullContact(_ id: Int = 1) -> Contact {
    Contact(
        _id: id, name: "Ann",
        home: Address(street: "1 Main St", city: "Springfield", zip: 12345, tags: ["home", "old"],
                      labels: ["a", "b"], scores: ["x": 1, "y": 2],
                      geo: Geo(lat: 1.5, lng: -2.25, note: "door"),
                      history: [Geo(lat: 1, lng: 2), Geo(lat: 3, lng: 4, note: "moved")]),
        previous: [Address(street: "2 Elm St", city: "Shelbyville", tags: ["p"]),
                   Address(street: "3 Oak St", city: "Ogdenville", geo: Geo(lat: 9, lng: 9))],
        byLabel: ["work": Address(street: "4 Pine St", city: "Capital City", zip: 1, scores: ["z": 26]),
                  "summer": Address(city: "North Haverbrook", history: [Geo(lat: 5, lng: 6)])],
        maybe: ["set": Address(street: "5 Ash St"), "unset": nil])
}

final class EmbeddedTests: XCTestCase {
    var dir: URL!
    var db: Database!
    var guardTimer: DispatchWorkItem?

    override func setUpWithError() throws {
        guardTimer = watchdog(90, name)
        dir = try tempDir()
        db = try Database.open(path: dir.appendingPathComponent("embedded.sqlite").path,
                               models: [Contact.self, Office.self])
    }

    override func tearDownWithError() throws {
        guardTimer?.cancel()
        try? FileManager.default.removeItem(at: dir)
    }

    func testSchemaHasTheEmbeddedClassesOnceEach() throws {
        let contact = try Contact.classSpec()
        let byName = Dictionary(uniqueKeysWithValues: contact.properties.map { ($0.name, $0) })
        XCTAssertEqual(contact.properties.map(\.name), ["_id", "name", "home", "previous", "byLabel", "maybe"])
        XCTAssertEqual(byName["home"], PropertySpec(name: "home", propertyType: .link, nullable: true,
                                                    collection: .single, linkTarget: "Address"))
        XCTAssertEqual(byName["previous"], PropertySpec(name: "previous", propertyType: .link, nullable: false,
                                                        collection: .list, linkTarget: "Address"))
        XCTAssertEqual(byName["byLabel"], PropertySpec(name: "byLabel", propertyType: .link, nullable: false,
                                                       collection: .dictionary, linkTarget: "Address"))
        XCTAssertEqual(byName["maybe"], PropertySpec(name: "maybe", propertyType: .link, nullable: true,
                                                     collection: .dictionary, linkTarget: "Address"))
        let address = try Address.classSpec()
        XCTAssertEqual(address.name, "Address")
        XCTAssertNil(address.primaryKey, "an embedded class has no primary key")
        XCTAssertEqual(address.properties, [
            PropertySpec(name: "street", propertyType: .string, collection: .single),
            PropertySpec(name: "city", propertyType: .string, collection: .single),
            PropertySpec(name: "zip", propertyType: .int, nullable: true, collection: .single),
            PropertySpec(name: "tags", propertyType: .string, collection: .list),
            PropertySpec(name: "labels", propertyType: .string, collection: .set),
            PropertySpec(name: "scores", propertyType: .int, collection: .dictionary),
            PropertySpec(name: "geo", propertyType: .link, nullable: true, collection: .single, linkTarget: "Geo"),
            PropertySpec(name: "history", propertyType: .link, collection: .list, linkTarget: "Geo"),
        ])
        XCTAssertEqual(try Geo.classSpec(), ClassSpec(name: "Geo", primaryKey: nil, properties: [
            PropertySpec(name: "lat", propertyType: .double, collection: .single),
            PropertySpec(name: "lng", propertyType: .double, collection: .single),
            PropertySpec(name: "note", propertyType: .string, nullable: true, collection: .single),
        ]))
        // Registering the owner adds the embedded classes it reaches, transitively, once each
        // (Geo is reached twice, through `geo` and `history`; Address through two models).
        XCTAssertEqual(try Contact.classSpecs().map(\.name), ["Contact", "Address", "Geo"])
        XCTAssertEqual(try ModelInfo.classSpecs(of: [Contact.self, Office.self]).map(\.name),
                       ["Contact", "Office", "Address", "Geo"])
        XCTAssertEqual(try ModelInfo.classSpecs(of: [Contact.self, Office.self]).first { $0.name == "Address" },
                       address)
        // The database took that schema (setUp opened it with both models); so does a reopen.
        db = nil
        db = try Database.open(path: dir.appendingPathComponent("embedded.sqlite").path,
                               models: [Office.self, Contact.self])
        try db.write { try $0.add(Office(_id: "hq", site: Address(street: "HQ"))) }
        XCTAssertEqual(try db.object(Office.self, key: "hq")?.site?.street, "HQ")
    }

    func testEveryShapeRoundTrips() throws {
        let full = fullContact()
        let empty = Contact(_id: 2)
        try db.write { tx in
            try tx.add(full)
            try tx.add(empty)
        }
        XCTAssertEqual(try db.object(Contact.self, key: 1), full)
        XCTAssertEqual(try db.object(Contact.self, key: 2), empty)
        let all = try db.objects(Contact.self, where: "TRUEPREDICATE SORT(_id ASC)")
        XCTAssertEqual(try all.snapshot(), [full, empty], "the in-place reader decodes embedded objects too")
        XCTAssertEqual(try all.first(), full)
        let read = try XCTUnwrap(try db.object(Contact.self, key: 1))
        XCTAssertEqual(read.home?.geo?.note, "door")
        XCTAssertEqual(read.home?.history.map(\.lat), [1, 3])
        XCTAssertEqual(read.previous.map(\.city), ["Shelbyville", "Ogdenville"])
        XCTAssertEqual(read.byLabel["work"]?.scores, ["z": 26])
        XCTAssertEqual(read.maybe.keys.sorted(), ["set", "unset"])
        XCTAssertEqual(read.maybe["unset"], .some(nil), "a null entry reads back as a null entry")

        // Stored as embedded objects, seen through the untyped API.
        let raw = try XCTUnwrap(try db.object(className: "Contact", key: .int(value: 1)))
        guard case let .embedded(true, home)? = raw["home"] else { return XCTFail("\(String(describing: raw["home"]))") }
        XCTAssertEqual(home["street"], .single(value: .string(value: "1 Main St")))
        XCTAssertEqual(home["tags"], .list(items: [.string(value: "home"), .string(value: "old")]))
        guard case let .embedded(true, geo)? = home["geo"] else { return XCTFail("\(String(describing: home["geo"]))") }
        XCTAssertEqual(geo["lng"], .single(value: .double(value: -2.25)))
        guard case let .embeddedList(previous)? = raw["previous"] else { return XCTFail("\(raw)") }
        XCTAssertEqual(previous.map { $0["street"] }, [.single(value: .string(value: "2 Elm St")),
                                                       .single(value: .string(value: "3 Oak St"))])
        guard case let .embeddedDictionary(byLabel)? = raw["byLabel"] else { return XCTFail("\(raw)") }
        XCTAssertEqual(byLabel.keys.sorted(), ["summer", "work"])
        guard case let .embeddedDictionary(maybe)? = raw["maybe"] else { return XCTFail("\(raw)") }
        XCTAssertEqual(maybe["unset"], .some(nil))
        XCTAssertEqual(try db.object(className: "Contact", key: .int(value: 2))?["home"],
                       .embedded(present: false, fields: [:]))
        // A dictionary holding only null entries reads as one of values: still decoded.
        try db.write { try $0.add(Contact(_id: 3, maybe: ["a": nil, "b": nil])) }
        XCTAssertEqual(try db.object(Contact.self, key: 3)?.maybe, ["a": nil, "b": nil])
    }

    func testUpsertReplacesEmbeddedObjectsWhole() throws {
        var contact = fullContact()
        try db.write { try $0.add(contact) }
        // Every shape changed: fields to nil, shorter and longer collections, a nested object
        // removed, a list element and dictionary entries replaced, gone and added.
        contact.home = Address(street: "9 New St", city: "Springfield", zip: nil, tags: ["new"],
                               labels: ["b", "c"], scores: ["y": 20], geo: nil, history: [Geo(lat: 7, lng: 8)])
        contact.previous = [Address(street: "only one")]
        contact.byLabel = ["work": Address(street: "moved", tags: ["t"]), "winter": Address(city: "Cold")]
        contact.maybe = ["unset": Address(street: "now set"), "set": nil]
        try db.write { try $0.upsert(contact) }
        XCTAssertEqual(try db.object(Contact.self, key: 1), contact)
        let home = try XCTUnwrap(try db.object(Contact.self, key: 1)?.home)
        XCTAssertNil(home.zip, "a nil optional of an embedded object is written as null")
        XCTAssertNil(home.geo, "a nil nested object removes the stored one")
        XCTAssertEqual(home.labels, ["b", "c"])

        // A nil embedded object and empty collections remove what was stored.
        let cleared = Contact(_id: 1, name: "Ann")
        try db.write { try $0.upsert(cleared) }
        XCTAssertEqual(try db.object(Contact.self, key: 1), cleared)
        XCTAssertEqual(try db.object(className: "Contact", key: .int(value: 1))?["home"],
                       .embedded(present: false, fields: [:]))

        // Upsert of a new object creates it; add then upsert in one transaction: the upsert wins.
        var twice = fullContact(5)
        try db.write { tx in
            try tx.upsert(fullContact(4))
            try tx.add(twice)
            twice.home?.geo = Geo(lat: -1, lng: -1)
            twice.home?.tags = []
            twice.previous.removeFirst()
            twice.byLabel["work"]?.zip = 99
            try tx.upsert(twice)
        }
        XCTAssertEqual(try db.object(Contact.self, key: 4), fullContact(4))
        XCTAssertEqual(try db.object(Contact.self, key: 5), twice)
    }

    /// What `add` and `upsert` record: the untyped operations with paths, field by field in name
    /// order (`add` skips nulls and empty collections of the new objects; `upsert` writes every
    /// field, clears every collection, and nulls what is nil).
    func testWritesAreTheUntypedOperationsWithPaths() throws {
        let office = Office(_id: "o", site: Address(street: "s", tags: ["t"], geo: Geo(lat: 1, lng: 2),
                                                    history: [Geo(lat: 3, lng: 4)]))
        let k = Key.string(value: "o")
        func set(_ value: Value, _ path: PathStep...) -> WriteOp {
            .set(className: "Office", key: k, property: "site", value: value, path: path)
        }
        func name(_ n: String) -> PathStep { .name(name: n) }
        try db.write { tx in
            try tx.add(office)
            XCTAssertEqual(tx.pendingOps, [
                .create(className: "Office", key: k, values: [:]),
                .createEmbedded(className: "Office", key: k, property: "site", path: []),
                set(.string(value: ""), name("city")),
                .createEmbedded(className: "Office", key: k, property: "site", path: [name("geo")]),
                set(.double(value: 1), name("geo"), name("lat")),
                set(.double(value: 2), name("geo"), name("lng")),
                .listInsertEmbedded(className: "Office", key: k, property: "site", index: 0, path: [name("history")]),
                set(.double(value: 3), name("history"), .index(index: 0), name("lat")),
                set(.double(value: 4), name("history"), .index(index: 0), name("lng")),
                set(.string(value: "s"), name("street")),
                .listInsert(className: "Office", key: k, property: "site", index: 0, value: .string(value: "t"),
                            path: [name("tags")]),
            ])
        }
        XCTAssertEqual(try db.object(Office.self, key: "o"), office)
        let replacement = Office(_id: "o", site: Address(city: "c", zip: 1))
        try db.write { tx in
            try tx.upsert(replacement)
            XCTAssertEqual(tx.pendingOps, [
                .upsert(className: "Office", key: k, values: [:]),
                .createEmbedded(className: "Office", key: k, property: "site", path: []),
                set(.string(value: "c"), name("city")),
                set(.null, name("geo")),
                .listClear(className: "Office", key: k, property: "site", path: [name("history")]),
                .setClear(className: "Office", key: k, property: "site", path: [name("labels")]),
                .dictClear(className: "Office", key: k, property: "site", path: [name("scores")]),
                set(.string(value: ""), name("street")),
                .listClear(className: "Office", key: k, property: "site", path: [name("tags")]),
                set(.int(value: 1), name("zip")),
            ])
        }
        XCTAssertEqual(try db.object(Office.self, key: "o"), replacement)
        try db.write { tx in
            try tx.upsert(Office(_id: "o", site: nil))
            XCTAssertEqual(tx.pendingOps, [
                .upsert(className: "Office", key: k, values: [:]),
                .set(className: "Office", key: k, property: "site", value: .null, path: []),
            ])
        }
        XCTAssertEqual(try db.object(Office.self, key: "o"), Office(_id: "o", site: nil))
        // modify writes only the field that changed, at its path.
        try db.write { try $0.upsert(office) }
        try db.write { tx in
            try tx.modify(Office.self, key: "o") { $0.site?.geo?.note = "here"; $0.site?.history[0].lng = 5 }
            XCTAssertEqual(tx.pendingOps, [
                set(.string(value: "here"), name("geo"), name("note")),
                set(.double(value: 5), name("history"), .index(index: 0), name("lng")),
            ])
        }
        XCTAssertEqual(try db.object(Office.self, key: "o")?.site?.geo?.note, "here")
        XCTAssertEqual(try db.object(Office.self, key: "o")?.site?.history, [Geo(lat: 3, lng: 5)])
    }

    func testNestedEmbeddedObjectWithAListInside() throws {
        // Geo inside Address inside a list and a dictionary of a Contact: Address.history is a
        // list of embedded objects inside embedded objects, Address.tags a list of values.
        let deep = Contact(_id: 7, previous: [
            Address(street: "a", tags: ["x", "y"], geo: Geo(lat: 1, lng: 1, note: "n"),
                    history: [Geo(lat: 2, lng: 2), Geo(lat: 3, lng: 3, note: "third")]),
        ], byLabel: ["k": Address(history: [Geo(lat: 4, lng: 4)])])
        try db.write { try $0.add(deep) }
        XCTAssertEqual(try db.object(Contact.self, key: 7), deep)
        // The typed write went through paths: the untyped API edits the same places, and the
        // typed read sees the edits.
        try db.write { tx in
            let raw = try tx.raw
            let k = Key.int(value: 7)
            try raw.listInsert(className: "Contact", key: k, property: "previous", index: 2, value: .string(value: "z"),
                               path: [.index(index: 0), .name(name: "tags")])
            try raw.set(className: "Contact", key: k, property: "previous", value: .string(value: "edited"),
                        path: [.index(index: 0), .name(name: "history"), .index(index: 1), .name(name: "note")])
            try raw.listInsertEmbedded(className: "Contact", key: k, property: "byLabel", index: 1,
                                       path: [.name(name: "k"), .name(name: "history")])
        }
        let read = try XCTUnwrap(try db.object(Contact.self, key: 7))
        XCTAssertEqual(read.previous[0].tags, ["x", "y", "z"])
        XCTAssertEqual(read.previous[0].history.map(\.note), [nil, "edited"])
        XCTAssertEqual(read.previous[0].geo, Geo(lat: 1, lng: 1, note: "n"))
        XCTAssertEqual(read.byLabel["k"]?.history, [Geo(lat: 4, lng: 4), Geo()])
    }

    func testModifyWritesTheChangedEmbeddedFields() async throws {
        try db.write { try $0.add(fullContact()) }
        var expected = fullContact()
        var changes = try db.changes(of: Contact.self, key: 1).makeAsyncIterator()
        try db.write { tx in
            XCTAssertTrue(try tx.modify(Contact.self, key: 1) { c in
                c.home?.city = "Capital City"
                c.home?.tags.append("new")
                c.home?.geo?.note = nil
                c.home?.history[1].lat = 30
                c.previous[1].zip = 5
                c.byLabel["work"]?.labels.insert("l")
                c.byLabel["summer"] = nil
                c.byLabel["autumn"] = Address(street: "fall")
                c.maybe["unset"] = Address(city: "filled")
            })
        }
        expected.home?.city = "Capital City"
        expected.home?.tags.append("new")
        expected.home?.geo?.note = nil
        expected.home?.history[1].lat = 30
        expected.previous[1].zip = 5
        expected.byLabel["work"]?.labels.insert("l")
        expected.byLabel["summer"] = nil
        expected.byLabel["autumn"] = Address(street: "fall")
        expected.maybe["unset"] = Address(city: "filled")
        XCTAssertEqual(try db.object(Contact.self, key: 1), expected)
        guard case let .modified(seen, properties)? = try await changes.next() else {
            return XCTFail("expected a modification")
        }
        XCTAssertEqual(seen, expected, "the typed object listener decodes the embedded objects")
        XCTAssertEqual(properties, ["byLabel", "home", "maybe", "previous"])

        // Only an embedded field changes: the change names only its property.
        try db.write { try $0.modify(Contact.self, key: 1) { $0.home?.street = "elsewhere" } }
        guard case let .modified(after, changed)? = try await changes.next() else {
            return XCTFail("expected a modification")
        }
        XCTAssertEqual(after.home?.street, "elsewhere")
        XCTAssertEqual(changed, ["home"])
        // Removing, then adding the object and growing a list.
        try db.write { try $0.modify(Contact.self, key: 1) { $0.home = nil; $0.previous.append(Address(city: "z")) } }
        XCTAssertNil(try db.object(Contact.self, key: 1)?.home)
        try db.write { try $0.modify(Contact.self, key: 1) { $0.home = Address(street: "back", geo: Geo(lat: 1, lng: 2)) } }
        let final = try XCTUnwrap(try db.object(Contact.self, key: 1))
        XCTAssertEqual(final.home, Address(street: "back", geo: Geo(lat: 1, lng: 2)))
        XCTAssertEqual(final.previous.map(\.city), ["Shelbyville", "Ogdenville", "z"])
        // The collection edits take the embedded lists and dictionaries by index and key.
        try db.write { tx in
            try tx.remove(at: 0, in: Contact.self, key: 1, "previous")
            try tx.remove(entry: "work", in: Contact.self, key: 1, "byLabel")
        }
        let edited = try XCTUnwrap(try db.object(Contact.self, key: 1))
        XCTAssertEqual(edited.previous.map(\.city), ["Ogdenville", "z"])
        XCTAssertEqual(edited.byLabel.keys.sorted(), ["autumn"])
    }

    func testQueriesOnTheOwnerClassStillWork() throws {
        try db.write { tx in
            for i in 0..<6 {
                try tx.add(Contact(_id: i, name: i % 2 == 0 ? "even \(i)" : "odd \(i)",
                                   home: i < 3 ? Address(city: "c\(i)") : nil,
                                   previous: Array(repeating: Address(), count: i)))
            }
        }
        let even = try db.objects(Contact.self, where: "name BEGINSWITH $0 SORT(_id DESC)", "even")
        XCTAssertEqual(try even.snapshot().map(\._id), [4, 2, 0])
        XCTAssertEqual(try even.snapshot().map { $0.home?.city }, [nil, "c2", "c0"])
        XCTAssertEqual(try even.count(), 3)
        XCTAssertEqual(try db.objects(Contact.self, where: "_id >= $0 AND _id < $1", 1, 4).count(), 3)
        XCTAssertEqual(try db.objects(Contact.self, where: "_id == $0", 5).first()?.previous.count, 5)
        // Through the embedded object's key path, as Realm queries embedded properties.
        XCTAssertEqual(try db.objects(Contact.self, where: "home.city == $0", "c1").snapshot().map(\._id), [1])
    }

    func testTypedResultsAndListenersSeeEmbeddedData() async throws {
        let results = try db.objects(Contact.self, where: "TRUEPREDICATE SORT(_id ASC)")
        var values = results.values().makeAsyncIterator()
        let initial = try await values.next()
        XCTAssertEqual(initial, [])
        try db.write { try $0.add(fullContact()) }
        let added = try await values.next()
        XCTAssertEqual(added, [fullContact()])
        try db.write { try $0.modify(Contact.self, key: 1) { $0.previous[0].geo = Geo(lat: 42, lng: 0) } }
        let modified = try XCTUnwrapAsync(try await values.next())
        XCTAssertEqual(modified.first?.previous.first?.geo, Geo(lat: 42, lng: 0))

        var changes = results.changes().makeAsyncIterator()
        let start = try XCTUnwrapAsync(try await changes.next())
        XCTAssertTrue(start.initial)
        XCTAssertEqual(start.objects.first?.byLabel["summer"]?.history, [Geo(lat: 5, lng: 6)])
        try db.write { tx in
            try tx.add(Contact(_id: 2, home: Address(street: "second")))
            try tx.modify(Contact.self, key: 1) { $0.maybe["unset"] = Address(zip: 3) }
        }
        let change = try XCTUnwrapAsync(try await changes.next())
        XCTAssertEqual(change.insertions, [1])
        XCTAssertEqual(change.modifications, [0])
        XCTAssertEqual(change.objects.map { $0.home?.street }, ["1 Main St", "second"])
        XCTAssertEqual(change.objects[0].maybe["unset"], .some(Address(zip: 3)))
        let waited = try await results.wait(seconds: 20) { $0.contains { $0.home?.street == "second" } }
        XCTAssertEqual(waited.count, 2)
    }

    func testUnsupportedShapesAndMisuseAreTypedErrors() throws {
        struct Hashed: TandemEmbeddedObject, Hashable { var x = 0 }
        struct SetOfEmbedded: TandemObject { var _id: Int; var all: Set<Hashed> = [] }
        struct Required: TandemObject { var _id: Int; var home: Address }
        struct NullableList: TandemObject { var _id: Int; var homes: [Address?] = [] }
        struct OptionalList: TandemObject { var _id: Int; var homes: [Address]? }
        struct NestedList: TandemObject { var _id: Int; var homes: [[Address]] = [] }
        func unsupported(_ type: any TandemObject.Type, _ property: String, _ text: String,
                         line: UInt = #line) {
            XCTAssertThrowsError(try type.classSpec(), line: line) { error in
                guard case let .unsupportedType(p, t)? = error as? TandemModelError, p == property else {
                    return XCTFail("\(error)", line: line)
                }
                XCTAssertTrue(t.contains(text), t, line: line)
            }
        }
        unsupported(SetOfEmbedded.self, "all", "a set cannot hold embedded objects")
        unsupported(Required.self, "home", "a single embedded object must be optional: Address?")
        unsupported(NullableList.self, "homes", "embedded objects in a list cannot be null")
        unsupported(OptionalList.self, "homes", "a collection cannot be nil")
        unsupported(NestedList.self, "homes", "Array<Array<Address>>")
        // The same errors when the database opens; nothing is created.
        XCTAssertThrowsError(try Database.open(path: dir.appendingPathComponent("set.sqlite").path,
                                               models: [SetOfEmbedded.self])) {
            guard case .unsupportedType(property: "all", _)? = $0 as? TandemModelError else { return XCTFail("\($0)") }
        }

        // An embedded type with a primary key (a TandemObject too): refused as a model and as an
        // embedded type held by a model.
        struct Both: TandemObject, TandemEmbeddedObject { static let className = "Both"; var _id: Int }
        struct HoldsBoth: TandemObject { var _id: Int; var both: Both? }
        let bothError = TandemModelError.invalidPrimaryKey(
            className: "Both",
            message: "an embedded class has no primary key: Both cannot be both a TandemObject and a TandemEmbeddedObject")
        XCTAssertThrowsError(try Database.open(path: dir.appendingPathComponent("both.sqlite").path,
                                               models: [Both.self])) { XCTAssertEqual($0 as? TandemModelError, bothError) }
        XCTAssertThrowsError(try Database.open(path: dir.appendingPathComponent("holds.sqlite").path,
                                               models: [HoldsBoth.self])) { XCTAssertEqual($0 as? TandemModelError, bothError) }
        XCTAssertThrowsError(try HoldsBoth.classSpecs()) { XCTAssertEqual($0 as? TandemModelError, bothError) }

        // The single-value and collection edits refuse an embedded property before recording.
        try db.write { try $0.add(Contact(_id: 1, home: Address(street: "kept"))) }
        XCTAssertThrowsError(try db.write { tx in
            try tx.set(Contact.self, key: 1, "name", to: "lost")
            try tx.set(Contact.self, key: 1, "home", to: Link<Contact>(key: .int(value: 1)))
        }) { error in
            guard case .notWritable(type: "Contact.home", _)? = error as? TandemModelError else { return XCTFail("\(error)") }
        }
        XCTAssertThrowsError(try db.write { try $0.insert(Link<Contact>(key: .int(value: 1)), at: 0, in: Contact.self,
                                                          key: 1, "previous") })
        XCTAssertEqual(try db.object(Contact.self, key: 1), Contact(_id: 1, home: Address(street: "kept")))

        // Stored data that does not fit the model: a null entry in a dictionary of non-optional
        // objects, a value where an object is expected.
        XCTAssertThrowsError(try FieldDecoder.decode(Contact.self, key: .int(value: 1), from: [
            "name": .single(value: .string(value: "")), "home": .embedded(present: false, fields: [:]),
            "previous": .list(items: []), "byLabel": .embeddedDictionary(entries: ["x": nil]),
            "maybe": .dictionary(entries: [:]),
        ])) { error in
            guard case .typeMismatch(property: "byLabel", _, _)? = error as? TandemModelError else { return XCTFail("\(error)") }
        }
        XCTAssertThrowsError(try FieldDecoder.decode(Contact.self, key: .int(value: 1), from: [
            "name": .single(value: .string(value: "")), "home": .single(value: .int(value: 3)),
            "previous": .list(items: []), "byLabel": .dictionary(entries: [:]), "maybe": .dictionary(entries: [:]),
        ])) { error in
            guard case .typeMismatch(property: "home", _, _)? = error as? TandemModelError else { return XCTFail("\(error)") }
        }
        // A failing commit (a duplicate key) loses the embedded writes with the rest.
        XCTAssertThrowsError(try db.write { tx in
            try tx.add(fullContact(2))
            try tx.add(Contact(_id: 1, home: Address(street: "duplicate")))
        }) { XCTAssertTrue($0 is TandemError, "\($0)") }
        XCTAssertNil(try db.object(Contact.self, key: 2))
        XCTAssertEqual(try db.object(Contact.self, key: 1)?.home?.street, "kept")
    }
}

final class EmbeddedSyncTests: XCTestCase {
    var dir: URL!
    var server: TestServer!
    var guardTimer: DispatchWorkItem?

    // The server is started and stopped here, outside the async test (see TypedSyncTests).
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

    func testEmbeddedObjectsSyncBetweenTwoClients() async throws {
        let a = try Database.open(path: dir.appendingPathComponent("a.sqlite").path, models: [Contact.self])
        let b = try Database.open(path: dir.appendingPathComponent("b.sqlite").path, models: [Contact.self])
        let sa = try a.sync(options: server.options(path: "/embedded"), tokenProvider: nil)
        let sb = try b.sync(options: server.options(path: "/embedded"), tokenProvider: nil)
        defer { sa.stop(); sb.stop() }
        try a.write { tx in
            try tx.add(fullContact(1))
            try tx.add(Contact(_id: 2, name: "bare"))
        }
        try await sa.waitForUpload(timeoutMs: 30_000)
        let seen = try await b.objects(Contact.self, where: "TRUEPREDICATE SORT(_id ASC)")
            .wait(seconds: 30) { $0.count == 2 }
        XCTAssertEqual(seen, [fullContact(1), Contact(_id: 2, name: "bare")], "every embedded shape survives sync")
        // b replaces and edits embedded objects; a sees the result.
        var replaced = fullContact(1)
        replaced.home = Address(street: "synced", history: [Geo(lat: 1, lng: 1)])
        replaced.previous = []
        replaced.byLabel["work"]?.tags = ["synced"]
        try b.write { tx in
            try tx.upsert(replaced)
            try tx.modify(Contact.self, key: 2) { $0.maybe = ["k": Address(city: "from b"), "n": nil] }
        }
        let got = try await a.objects(Contact.self, where: "TRUEPREDICATE SORT(_id ASC)")
            .wait(seconds: 30) { $0.first?.home?.street == "synced" && $0.last?.maybe.count == 2 }
        XCTAssertEqual(got.first, replaced)
        XCTAssertEqual(got.last?.maybe, ["k": Address(city: "from b"), "n": nil])
    }
}
