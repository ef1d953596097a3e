// Model types: a `Codable` struct (or class) conforming to `TandemObject` is a Tandem class. Its
// schema comes from its Codable structure (each property's Swift type, see PersistableValue.swift),
// derived once per type by decoding a placeholder instance; its primary key is the property named
// by `primaryKey` (Realm's `_id` by default).
//
//     struct Task: TandemObject {
//         var _id: ObjectId = .generate()
//         var title: String
//         var done = false
//         var tags: [String] = []
//         var owner: Link<Person>? = nil
//     }
//
// A link is a `Link<Target>` value (the target's key), resolved with `db.object(link)`: reads stay
// one object deep, so cycles cannot recurse.
//
// An embedded object (Realm's `EmbeddedObject`) is a `Codable` struct conforming to
// `TandemEmbeddedObject`: a class without a primary key whose objects live inside their owner,
// written and read with it (EmbeddedObject.swift). A model holds them as `E?`, `[E]`,
// `[String: E]` or `[String: E?]`; an embedded type may hold embedded objects and collections in
// turn. `Database.open(path:models:)` adds the embedded classes the models reach to the schema.
//
//     struct Address: TandemEmbeddedObject {
//         var street = ""
//         var city = ""
//         var tags: [String] = []
//     }
//     struct Contact: TandemObject {
//         var _id: Int
//         var home: Address?
//         var previous: [Address] = []
//         var byLabel: [String: Address] = [:]
//     }

import Foundation

/// A model type stored as a Tandem class.
public protocol TandemObject: Codable {
    /// The class name in the schema (and on the wire): the Swift type's name by default.
    static var className: String { get }
    /// The name of the primary key property (its coding key): `_id` by default. Its type must be
    /// `Int`/`Int64` (or a smaller integer), `String`, `ObjectId`, `UUID`, or an optional of one.
    static var primaryKey: String { get }
    /// The properties (coding keys) with a search index, as Realm's `@Persisted(indexed: true)`:
    /// equality and range queries on them look the index up instead of reading every object.
    /// Each must be a single integer, `Bool`, `String`, `Date`, `ObjectId` or `UUID` property;
    /// any other is refused when the database opens. None by default.
    static var indexed: Set<String> { get }
}

extension TandemObject {
    public static var className: String { String(describing: Self.self) }
    public static var primaryKey: String { "_id" }
    public static var indexed: Set<String> { [] }

    /// This class's schema, derived from the Codable structure. Throws `TandemModelError` when a
    /// property's type has no Tandem mapping or the primary key is missing or not a key type.
    public static func classSpec() throws -> ClassSpec { try ModelInfo.of(Self.self).spec }

    /// This class's schema followed by those of the embedded classes it holds (and those they
    /// hold, each once): what `Database.open(path:models:)` registers for it.
    public static func classSpecs() throws -> [ClassSpec] { try ModelInfo.classSpecs(of: [Self.self]) }

    /// This object's primary key as the FFI takes it.
    public func primaryKeyValue() throws -> Key {
        let info = try ModelInfo.of(Self.self)
        let fields = try FieldEncoder.encode(self)
        guard case let .single(value)? = fields[Self.primaryKey] else {
            if info.keyNullable { return .null }
            throw TandemModelError.invalidPrimaryKey(className: Self.className, message: "no primary key value")
        }
        return try key(of: value, className: Self.className)
    }
}

/// A model type stored as an embedded class (Realm's `EmbeddedObject`): no primary key, each
/// object lives inside the one object that holds it (a property `E?`, a list `[E]`, a dictionary
/// `[String: E]` or `[String: E?]` of a `TandemObject` or of another embedded type), is written
/// with it (`Transaction.add`, `upsert`, `modify`), read with it, and deleted with it. Its schema
/// comes from its Codable structure as a `TandemObject`'s does, and may hold any property type a
/// model may (embedded objects and collections included). A type cannot be both a `TandemObject`
/// and a `TandemEmbeddedObject` (an embedded class has no primary key).
///
///     struct Address: TandemEmbeddedObject { var street = ""; var tags: [String] = [] }
///     struct Contact: TandemObject { var _id: Int; var home: Address?; var others: [Address] = [] }
public protocol TandemEmbeddedObject: Codable {
    /// The class name in the schema (and on the wire): the Swift type's name by default.
    static var className: String { get }
}

extension TandemEmbeddedObject {
    /// The Swift type's name.
    public static var className: String { String(describing: Self.self) }

    /// This embedded class's schema (`primaryKey` nil), derived from the Codable structure.
    /// Throws `TandemModelError` when a property's type has no Tandem mapping.
    public static func classSpec() throws -> ClassSpec { try EmbeddedInfo.of(Self.self).spec }
}

/// The key of `value` (`Value.int` to `Key.int`, ...), or `invalidPrimaryKey`.
func key(of value: Value, className: String) throws -> Key {
    switch value {
    case .null: return .null
    case let .int(v): return .int(value: v)
    case let .string(v): return .string(value: v)
    case let .objectId(bytes): return .objectId(bytes: bytes)
    case let .uuid(bytes): return .uuid(bytes: bytes)
    default:
        throw TandemModelError.invalidPrimaryKey(className: className, message: "\(value) cannot be a key")
    }
}

/// The value of a primary key property holding `key`.
func keyValue(_ key: Key) -> Value {
    switch key {
    case .null: return .null
    case let .int(v): return .int(value: v)
    case let .string(v): return .string(value: v)
    case let .objectId(bytes): return .objectId(bytes: bytes)
    case let .uuid(bytes): return .uuid(bytes: bytes)
    }
}

/// A link to an object of `Target`: the target's primary key. Resolve it with
/// `Database.object(_:)`; a link to a deleted object reads back as `nil` (Realm nulls it).
public struct Link<Target: TandemObject>: Hashable, Codable, PersistableScalar {
    /// The target's primary key.
    public var key: Key

    public init(key: Key) { self.key = key }
    /// A link to `target` (its primary key).
    public init(_ target: Target) throws { key = try target.primaryKeyValue() }

    public static var tandemType: PropertyType { .link }
    public static var tandemLinkTarget: String? { Target.className }
    public static var tandemPlaceholder: Link<Target> { Link(key: .null) }
    public func tandemValue() throws -> Value { .link(className: Target.className, key: key) }
    public init(tandemValue: Value, property: String) throws {
        guard case let .link(className, key) = tandemValue, className == Target.className else {
            throw mismatch(Link<Target>.self, tandemValue, property)
        }
        self.key = key
    }

    // Codable outside Tandem (e.g. JSON): {"int": 1}, {"string": "a"}, {"objectId": hex},
    // {"uuid": "..."} or {} for the null key. Tandem's own coders use the link value above.
    private enum CodingKeys: String, CodingKey { case int, string, objectId, uuid }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        if let v = try c.decodeIfPresent(Int64.self, forKey: .int) {
            key = .int(value: v)
        } else if let v = try c.decodeIfPresent(String.self, forKey: .string) {
            key = .string(value: v)
        } else if let v = try c.decodeIfPresent(ObjectId.self, forKey: .objectId) {
            key = .objectId(bytes: v.bytes)
        } else if let v = try c.decodeIfPresent(UUID.self, forKey: .uuid) {
            key = .uuid(bytes: withUnsafeBytes(of: v.uuid) { Data($0) })
        } else {
            key = .null
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        switch key {
        case .null: break
        case let .int(v): try c.encode(v, forKey: .int)
        case let .string(v): try c.encode(v, forKey: .string)
        case let .objectId(bytes): try c.encode(ObjectId(bytes: bytes), forKey: .objectId)
        case let .uuid(bytes): try c.encode(UUID(tandemValue: .uuid(bytes: bytes), property: "key"), forKey: .uuid)
        }
    }
}

/// What the typed layer knows of one model type (derived once, then cached). A class: every
/// typed write asks for it, and handing out a reference costs one retain, not one per array.
final class ModelInfo {
    let spec: ClassSpec
    /// Each property's shape, by name.
    let shapes: [String: PropertyShape]
    /// The properties holding embedded objects, by name (not in `singles` nor `rowProperties`:
    /// they are written with paths after the object is created).
    let embedded: [String: EmbeddedShape]
    /// The single-valued (not collection, not embedded) properties, in declaration order
    /// (`shapes` filtered, as an array: writes go through it for every object).
    let singles: [String]
    /// Every property in declaration order with what it is, for `WriteEncoder`; `positional`
    /// is false when a name repeats (a custom `init(from:)`), and then it is not used.
    let order: [(name: String, kind: PropertyKind)]
    let positional: Bool
    let keyNullable: Bool
    /// The single-valued properties but the primary key, in declaration order: the columns of
    /// a `WriteEncoder` row (and of `WriteOp.createRows`).
    let rowProperties: [String]
    /// For each entry of `order`, its column in `rowProperties`, or -1.
    let slots: [Int]

    enum PropertyKind { case primaryKey, single, collection, embedded }

    init(spec: ClassSpec, shapes: [String: PropertyShape], embedded: [String: EmbeddedShape], singles: [String],
         order: [(name: String, kind: PropertyKind)], positional: Bool, keyNullable: Bool,
         rowProperties: [String], slots: [Int]) {
        self.spec = spec
        self.shapes = shapes
        self.embedded = embedded
        self.singles = singles
        self.order = order
        self.positional = positional
        self.keyNullable = keyNullable
        self.rowProperties = rowProperties
        self.slots = slots
    }

    private static let lock = NSLock()
    nonisolated(unsafe) private static var cache: [ObjectIdentifier: ModelInfo] = [:]

    static func of<T: TandemObject>(_ type: T.Type) throws -> ModelInfo {
        lock.lock()
        if let info = cache[ObjectIdentifier(type)] {
            lock.unlock()
            return info
        }
        lock.unlock()
        if T.self is any TandemEmbeddedObject.Type {
            throw TandemModelError.invalidPrimaryKey(
                className: T.className,
                message: "an embedded class has no primary key: \(T.self) cannot be both a TandemObject and a TandemEmbeddedObject")
        }
        let (probed, embedded) = try FieldDecoder.probe(type)
        guard let keyShape = probed.first(where: { $0.0 == T.primaryKey })?.1 else {
            throw TandemModelError.invalidPrimaryKey(
                className: T.className, message: "no property \(T.primaryKey) (set `static var primaryKey`)")
        }
        guard keyShape.collection == .single, embedded[T.primaryKey] == nil,
              [.int, .string, .objectId, .uuid].contains(keyShape.type)
        else {
            throw TandemModelError.invalidPrimaryKey(
                className: T.className, message: "\(T.primaryKey) must be an integer, String, ObjectId or UUID")
        }
        for name in T.indexed.sorted() where !probed.contains(where: { $0.0 == name }) {
            throw TandemModelError.unknownIndexedProperty(className: T.className, property: name)
        }
        let properties = probed.map { name, shape in
            PropertySpec(name: name, propertyType: shape.type, nullable: shape.nullable,
                         collection: shape.collection, linkTarget: shape.linkTarget,
                         indexed: T.indexed.contains(name))
        }
        let shapes = Dictionary(probed, uniquingKeysWith: { a, _ in a })
        var singles: [String] = []
        for (name, _) in probed
        where shapes[name]?.collection == .single && embedded[name] == nil && !singles.contains(name) {
            singles.append(name)
        }
        let order: [(name: String, kind: PropertyKind)] = probed.map { name, shape in
            (name, name == T.primaryKey ? .primaryKey : embedded[name] != nil ? .embedded
                : shape.collection == .single ? .single : .collection)
        }
        var rowProperties: [String] = []
        let slots = order.map { entry -> Int in
            guard entry.kind == .single else { return -1 }
            rowProperties.append(entry.name)
            return rowProperties.count - 1
        }
        let info = ModelInfo(
            spec: ClassSpec(name: T.className, primaryKey: T.primaryKey, properties: properties),
            shapes: shapes, embedded: embedded, singles: singles, order: order,
            positional: shapes.count == probed.count, keyNullable: keyShape.nullable,
            rowProperties: rowProperties, slots: slots)
        lock.lock()
        cache[ObjectIdentifier(type)] = info
        lock.unlock()
        return info
    }

    /// The classes of `models`, in order, then those of the embedded types they hold (and those
    /// hold in turn), each once.
    static func classSpecs(of models: [any TandemObject.Type]) throws -> [ClassSpec] {
        var specs: [ClassSpec] = []
        var roots: [any TandemEmbeddedObject.Type] = []
        for model in models {
            let info = try of(model)
            specs.append(info.spec)
            roots += info.embedded.sorted { $0.key < $1.key }.map(\.value.type)
        }
        return specs + (try EmbeddedInfo.closure(roots))
    }
}
