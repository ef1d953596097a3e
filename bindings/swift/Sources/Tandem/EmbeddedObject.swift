// Embedded objects in the typed layer (Realm's `EmbeddedObject`): what a `TandemEmbeddedObject`
// type is to the schema (`EmbeddedInfo`, derived from its Codable structure as a model's is), and
// the property types that hold such objects, with how each is read and written:
//
//   E?               -> a single embedded object (nil: none)     (Realm requires it optional)
//   [E]              -> a list of embedded objects (never nil elements)
//   [String: E]      -> a dictionary of embedded objects
//   [String: E?]     -> the same, whose entries may be null
//
// Refused when the schema is derived, with `TandemModelError.unsupportedType` naming the
// property: a non-optional single `E`, `Set<E>` (Realm has no sets of embedded objects), `[E?]`,
// `[E]?` and anything nesting collections. A type that is both a `TandemObject` and a
// `TandemEmbeddedObject` is refused with `invalidPrimaryKey` (an embedded class has none).
//
// Writes (Transaction.swift) turn an embedded value into `FieldInput.embedded...`: every property
// of the object by name (a nil optional as null, so an upsert replaces the whole object), then
// into the FFI's operations with paths (`createEmbedded`, `set`/`listInsert`/... with `path`,
// `listInsertEmbedded`). Reads decode the FFI's `FieldValue.embedded...` back into the structs.

import Foundation

/// What an embedded-object property holds: objects of `type`, one (`E?`), a list (`[E]`) or a
/// dictionary (`[String: E]`, `[String: E?]`).
struct EmbeddedShape {
    let type: any TandemEmbeddedObject.Type
    /// `.single`, `.list` or `.dictionary`.
    let collection: Collection
    /// The object (single) or a dictionary's entries may be nil.
    let nullable: Bool

    /// Its schema shape: a link to the embedded class.
    var propertyShape: PropertyShape {
        PropertyShape(type: .link, nullable: nullable, collection: collection, linkTarget: type.className)
    }

    /// What the property writes when the model leaves it out (Codable leaves out a nil optional).
    var empty: FieldInput {
        switch collection {
        case .list: return .embeddedList([])
        case .dictionary: return .embeddedDictionary([:])
        default: return .embedded(nil)
        }
    }
}

/// What the typed layer knows of one embedded type (derived once, then cached).
final class EmbeddedInfo {
    /// Its class: no primary key.
    let spec: ClassSpec
    /// Every property in declaration order, with what it writes when the object leaves it out
    /// (null, an empty collection, no embedded object).
    let properties: [(name: String, empty: FieldInput)]
    /// Its embedded-object properties, by name.
    let embedded: [String: EmbeddedShape]

    init(spec: ClassSpec, properties: [(name: String, empty: FieldInput)], embedded: [String: EmbeddedShape]) {
        self.spec = spec
        self.properties = properties
        self.embedded = embedded
    }

    private static let lock = NSLock()
    nonisolated(unsafe) private static var cache: [ObjectIdentifier: EmbeddedInfo] = [:]

    static func of<E: TandemEmbeddedObject>(_ type: E.Type) throws -> EmbeddedInfo {
        lock.lock()
        if let info = cache[ObjectIdentifier(type)] {
            lock.unlock()
            return info
        }
        lock.unlock()
        if E.self is any TandemObject.Type {
            throw TandemModelError.invalidPrimaryKey(
                className: E.className,
                message: "an embedded class has no primary key: \(E.self) cannot be both a TandemObject and a TandemEmbeddedObject")
        }
        let probe = try FieldDecoder.probe(E.self)
        var properties: [(name: String, empty: FieldInput)] = []
        var seen: Set<String> = []
        for (name, shape) in probe.properties where seen.insert(name).inserted {
            properties.append((name, probe.embedded[name]?.empty ?? Self.empty(shape)))
        }
        let info = EmbeddedInfo(
            spec: ClassSpec(name: E.className, primaryKey: nil, properties: probe.properties.map { name, shape in
                PropertySpec(name: name, propertyType: shape.type, nullable: shape.nullable,
                             collection: shape.collection, linkTarget: shape.linkTarget)
            }),
            properties: properties, embedded: probe.embedded)
        lock.lock()
        cache[ObjectIdentifier(type)] = info
        lock.unlock()
        return info
    }

    /// What a property of `shape` (not embedded) writes when the object leaves it out.
    private static func empty(_ shape: PropertyShape) -> FieldInput {
        switch shape.collection {
        case .list: return .list([])
        case .set: return .set([])
        case .dictionary: return .dictionary([:])
        case .single: return .single(.null)
        }
    }

    /// Every property of `object` by name, as written (what it leaves out filled in with
    /// `properties`' empties; a name its `encode(to:)` writes that the class lacks is dropped).
    static func encode<E: TandemEmbeddedObject>(_ object: E) throws -> [String: FieldInput] {
        let info = try of(E.self)
        let fields = try FieldEncoder.encode(object, capacity: info.properties.count)
        var out = [String: FieldInput](minimumCapacity: info.properties.count)
        for (name, empty) in info.properties { out[name] = fields[name] ?? empty }
        return out
    }

    /// An object from the properties the FFI returned for it.
    static func decode<E: TandemEmbeddedObject>(_ type: E.Type, from fields: [String: FieldValue]) throws -> E {
        try E(from: FieldDecoder(fields: fields, typeName: "\(E.self)"))
    }

    /// The classes of the embedded types `roots` hold, and of those they hold in turn, each once,
    /// in the order first reached.
    static func closure(_ roots: [any TandemEmbeddedObject.Type]) throws -> [ClassSpec] {
        var specs: [ClassSpec] = []
        var seen: Set<ObjectIdentifier> = []
        var queue = roots
        var next = 0
        while next < queue.count {
            let type = queue[next]
            next += 1
            guard seen.insert(ObjectIdentifier(type)).inserted else { continue }
            let info = try of(type)
            specs.append(info.spec)
            queue += info.embedded.sorted { $0.key < $1.key }.map(\.value.type)
        }
        return specs
    }
}

// MARK: - The property types holding embedded objects

/// A property type holding embedded objects other than a bare `E`: `E?`, `[E]`, `[String: E]`.
protocol EmbeddedCoding {
    /// Its schema shape.
    static var embeddedShape: EmbeddedShape { get }
    /// A placeholder value (nil, empty), used to derive a schema.
    static var embeddedPlaceholder: Self { get }
    /// Reads it from what the FFI returned for `property`.
    init(embeddedField: FieldValue, property: String) throws
    /// What it writes.
    func embeddedInput() throws -> FieldInput
}

/// `E?`: a single embedded object or nil (also the entries of `[String: E?]`).
protocol OptionalEmbedded: EmbeddedCoding {}

/// `[String: E?]` (the requirements of `EmbeddedCoding`, in a protocol of their own: `Dictionary`
/// already conforms to `EmbeddedCoding` for `[String: E]`).
protocol NullableEntriesEmbeddedCoding {
    static var embeddedShape: EmbeddedShape { get }
    static var embeddedPlaceholder: Self { get }
    init(embeddedField: FieldValue, property: String) throws
    func embeddedInput() throws -> FieldInput
}

/// A collection of embedded objects Tandem does not store, and why.
protocol UnsupportedEmbeddedCollection {
    static var embeddedProblem: String { get }
}

private func embeddedMismatch<T>(_ type: T.Type, _ field: FieldValue, _ property: String) -> TandemModelError {
    .typeMismatch(property: property, expected: "\(type)", found: "\(field)")
}

extension Optional: EmbeddedCoding, OptionalEmbedded where Wrapped: TandemEmbeddedObject {
    static var embeddedShape: EmbeddedShape { EmbeddedShape(type: Wrapped.self, collection: .single, nullable: true) }
    static var embeddedPlaceholder: Wrapped? { nil }
    init(embeddedField field: FieldValue, property: String) throws {
        switch field {
        case let .embedded(present, fields):
            self = present ? try EmbeddedInfo.decode(Wrapped.self, from: fields) : nil
        case .single(.null):
            self = nil
        default:
            throw embeddedMismatch(Self.self, field, property)
        }
    }
    func embeddedInput() throws -> FieldInput { .embedded(try map { try EmbeddedInfo.encode($0) }) }
}

extension Array: EmbeddedCoding where Element: TandemEmbeddedObject {
    static var embeddedShape: EmbeddedShape { EmbeddedShape(type: Element.self, collection: .list, nullable: false) }
    static var embeddedPlaceholder: [Element] { [] }
    init(embeddedField field: FieldValue, property: String) throws {
        switch field {
        case let .embeddedList(items):
            self = try items.map { try EmbeddedInfo.decode(Element.self, from: $0) }
        case .list(items: []):  // an empty list reads as a list of values
            self = []
        default:
            throw embeddedMismatch(Self.self, field, property)
        }
    }
    func embeddedInput() throws -> FieldInput { .embeddedList(try map { try EmbeddedInfo.encode($0) }) }
}

extension Dictionary: EmbeddedCoding where Key == String, Value: TandemEmbeddedObject {
    static var embeddedShape: EmbeddedShape { EmbeddedShape(type: Value.self, collection: .dictionary, nullable: false) }
    static var embeddedPlaceholder: [String: Value] { [:] }
    init(embeddedField field: FieldValue, property: String) throws {
        switch field {
        case let .embeddedDictionary(entries):
            self = try entries.mapValues { fields in
                guard let fields else { throw embeddedMismatch(Self.self, field, property) }
                return try EmbeddedInfo.decode(Value.self, from: fields)
            }
        case let .dictionary(entries) where entries.isEmpty:  // an empty one reads as values
            self = [:]
        default:
            throw embeddedMismatch(Self.self, field, property)
        }
    }
    func embeddedInput() throws -> FieldInput {
        .embeddedDictionary(try mapValues { Optional(try EmbeddedInfo.encode($0)) })
    }
}

extension Dictionary: NullableEntriesEmbeddedCoding where Key == String, Value: OptionalEmbedded {
    static var embeddedShape: EmbeddedShape {
        EmbeddedShape(type: Value.embeddedShape.type, collection: .dictionary, nullable: true)
    }
    static var embeddedPlaceholder: [String: Value] { [:] }
    init(embeddedField field: FieldValue, property: String) throws {
        switch field {
        case let .embeddedDictionary(entries):
            self = try entries.mapValues { fields in
                try Value(embeddedField: fields.map { .embedded(present: true, fields: $0) } ?? .single(value: .null),
                          property: property)
            }
        case let .dictionary(entries) where entries.values.allSatisfy({ $0 == .null }):
            // Empty, or only null entries: nothing in it says it holds embedded objects.
            self = try entries.mapValues { _ in try Value(embeddedField: .single(value: .null), property: property) }
        default:
            throw embeddedMismatch(Self.self, field, property)
        }
    }
    func embeddedInput() throws -> FieldInput {
        .embeddedDictionary(try mapValues { value in
            guard case let .embedded(fields) = try value.embeddedInput() else { return nil }
            return fields
        })
    }
}

extension Set: UnsupportedEmbeddedCollection where Element: TandemEmbeddedObject {
    static var embeddedProblem: String { "a set cannot hold embedded objects (use [\(Element.self)])" }
}

extension Array: UnsupportedEmbeddedCollection where Element: OptionalEmbedded {
    static var embeddedProblem: String {
        "embedded objects in a list cannot be null (use [\(Element.embeddedShape.type)])"
    }
}

// MARK: - What the coders call

/// The shape of a property of type `type` holding embedded objects, or nil when it holds none.
/// `optional`: it was asked for through `decodeIfPresent` (an optional property). Throws
/// `unsupportedType` for the shapes Tandem does not store.
func embeddedShape(of type: Any.Type, property: String, optional: Bool) throws -> EmbeddedShape? {
    var shape: EmbeddedShape
    if let e = type as? any TandemEmbeddedObject.Type {
        guard optional else {
            throw TandemModelError.unsupportedType(
                property: property, type: "\(type) (a single embedded object must be optional: \(type)?)")
        }
        shape = EmbeddedShape(type: e, collection: .single, nullable: true)
    } else if let c = type as? any EmbeddedCoding.Type {
        shape = c.embeddedShape
    } else if let c = type as? any NullableEntriesEmbeddedCoding.Type {
        shape = c.embeddedShape
    } else if let u = type as? any UnsupportedEmbeddedCollection.Type {
        throw TandemModelError.unsupportedType(property: property, type: "\(type) (\(u.embeddedProblem))")
    } else {
        return nil
    }
    if optional && shape.collection != .single {
        throw TandemModelError.unsupportedType(
            property: property, type: "Optional<\(type)> (a collection cannot be nil: use an empty one)")
    }
    return shape
}

/// Whether `type` is one of the property types holding embedded objects that Tandem stores.
func holdsEmbedded(_ type: Any.Type) -> Bool {
    type is any TandemEmbeddedObject.Type || type is any EmbeddedCoding.Type
        || type is any NullableEntriesEmbeddedCoding.Type
}

/// A placeholder of a type holding embedded objects (nil, empty; a bare `E` decoded from
/// placeholders, `depth` levels down), or nil when `type` holds none.
func embeddedPlaceholder<T>(_ type: T.Type, depth: Int) throws -> T? {
    // (`as!`: the value is of `type`, which may itself be an Optional.)
    if let e = type as? any TandemEmbeddedObject.Type { return (try placeholderObject(e, depth: depth) as! T) }
    if let c = type as? any EmbeddedCoding.Type { return (c.embeddedPlaceholder as! T) }
    if let c = type as? any NullableEntriesEmbeddedCoding.Type { return (c.embeddedPlaceholder as! T) }
    return nil
}

private func placeholderObject<E: TandemEmbeddedObject>(_ type: E.Type, depth: Int) throws -> E {
    guard depth < 32 else {
        throw TandemModelError.unsupportedType(property: "\(E.self)", type: "an embedded type that holds itself, not optionally")
    }
    return try E(from: FieldDecoder(placeholderOf: "\(E.self)", depth: depth + 1))
}

/// Reads a property of a type holding embedded objects from what the FFI returned, or nil when
/// `type` holds none.
func readEmbedded<T>(_ type: T.Type, from field: FieldValue, property: String) throws -> T? {
    if let e = type as? any TandemEmbeddedObject.Type {
        return (try readObject(e, from: field, property: property) as! T)
    }
    if let c = type as? any EmbeddedCoding.Type {
        return (try c.init(embeddedField: field, property: property) as! T)
    }
    if let c = type as? any NullableEntriesEmbeddedCoding.Type {
        return (try c.init(embeddedField: field, property: property) as! T)
    }
    return nil
}

private func readObject<E: TandemEmbeddedObject>(_ type: E.Type, from field: FieldValue, property: String) throws -> E {
    guard case let .embedded(true, fields) = field else {
        throw TandemModelError.typeMismatch(property: property, expected: "\(E.self)", found: "\(field)")
    }
    return try EmbeddedInfo.decode(E.self, from: fields)
}

/// What a value holding embedded objects writes, or nil when `value` holds none.
func embeddedInput(_ value: Any) throws -> FieldInput? {
    if let e = value as? any TandemEmbeddedObject { return .embedded(try EmbeddedInfo.encode(e)) }
    if let c = value as? any EmbeddedCoding { return try c.embeddedInput() }
    if let c = value as? any NullableEntriesEmbeddedCoding { return try c.embeddedInput() }
    return nil
}
