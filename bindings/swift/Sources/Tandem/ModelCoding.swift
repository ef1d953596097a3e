// Codable <-> Tandem properties: an Encoder that turns a model into `[property: FieldInput]`, a
// Decoder that builds a model from the `[property: FieldValue]` the FFI returns, and a probing
// Decoder that derives the schema by decoding one placeholder model and noting each property's
// Swift type. Only keyed models whose properties are `Persistable` or hold embedded objects
// (EmbeddedObject.swift) are supported; anything else throws a `TandemModelError` naming the
// property.

import Foundation

// MARK: - Encoding

final class FieldEncoder: Encoder {
    var codingPath: [CodingKey] = []
    var userInfo: [CodingUserInfoKey: Any] = [:]
    var fields: [String: FieldInput] = [:]
    /// The first error a container could not throw itself (non-keyed use).
    var failure: Error?
    let typeName: String

    init(typeName: String, capacity: Int = 0) {
        self.typeName = typeName
        fields.reserveCapacity(capacity)
    }

    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        KeyedEncodingContainer(Container<Key>(encoder: self))
    }
    func unkeyedContainer() -> UnkeyedEncodingContainer {
        failure = failure ?? TandemModelError.notAnObject(type: typeName)
        return Rejecting(encoder: self)
    }
    func singleValueContainer() -> SingleValueEncodingContainer {
        failure = failure ?? TandemModelError.notAnObject(type: typeName)
        return Rejecting(encoder: self)
    }

    /// Every property of `object`, as written (nil optionals are left out: the caller fills them).
    static func encode<T: Encodable>(_ object: T, capacity: Int = 0) throws -> [String: FieldInput] {
        let encoder = FieldEncoder(typeName: "\(T.self)", capacity: capacity)
        try object.encode(to: encoder)
        if let failure = encoder.failure { throw failure }
        return encoder.fields
    }

    struct Container<Key: CodingKey>: KeyedEncodingContainerProtocol {
        let encoder: FieldEncoder
        var codingPath: [CodingKey] { [] }

        mutating func put<T: Encodable>(_ value: T, _ key: Key) throws {
            if let p = value as? Persistable {
                encoder.fields[key.stringValue] = try p.tandemField()
            } else if let input = try embeddedInput(value) {
                encoder.fields[key.stringValue] = input
            } else {
                throw TandemModelError.unsupportedType(property: key.stringValue, type: "\(T.self)")
            }
        }
        mutating func encodeNil(forKey key: Key) throws { encoder.fields[key.stringValue] = .single(.null) }
        // The plain types directly (what their `tandemField()` returns), without the dynamic
        // cast to `Persistable` that `put` needs.
        mutating func encode(_ v: Bool, forKey key: Key) throws { encoder.fields[key.stringValue] = .single(.bool(value: v)) }
        mutating func encode(_ v: String, forKey key: Key) throws { encoder.fields[key.stringValue] = .single(.string(value: v)) }
        mutating func encode(_ v: Double, forKey key: Key) throws { encoder.fields[key.stringValue] = .single(.double(value: v)) }
        mutating func encode(_ v: Float, forKey key: Key) throws { encoder.fields[key.stringValue] = .single(.float(value: v)) }
        mutating func encode(_ v: Int, forKey key: Key) throws { encoder.fields[key.stringValue] = .single(.int(value: Int64(v))) }
        mutating func encode(_ v: Int8, forKey key: Key) throws { encoder.fields[key.stringValue] = .single(.int(value: Int64(v))) }
        mutating func encode(_ v: Int16, forKey key: Key) throws { encoder.fields[key.stringValue] = .single(.int(value: Int64(v))) }
        mutating func encode(_ v: Int32, forKey key: Key) throws { encoder.fields[key.stringValue] = .single(.int(value: Int64(v))) }
        mutating func encode(_ v: Int64, forKey key: Key) throws { encoder.fields[key.stringValue] = .single(.int(value: v)) }
        mutating func encode(_ v: UInt, forKey key: Key) throws { try put(v, key) }
        mutating func encode(_ v: UInt8, forKey key: Key) throws { try put(v, key) }
        mutating func encode(_ v: UInt16, forKey key: Key) throws { try put(v, key) }
        mutating func encode(_ v: UInt32, forKey key: Key) throws { try put(v, key) }
        mutating func encode(_ v: UInt64, forKey key: Key) throws { try put(v, key) }
        mutating func encode<T: Encodable>(_ v: T, forKey key: Key) throws { try put(v, key) }

        mutating func nestedContainer<NestedKey: CodingKey>(
            keyedBy keyType: NestedKey.Type, forKey key: Key
        ) -> KeyedEncodingContainer<NestedKey> {
            encoder.failure = encoder.failure
                ?? TandemModelError.unsupportedType(property: key.stringValue, type: "a nested object")
            return KeyedEncodingContainer(Container<NestedKey>(encoder: FieldEncoder(typeName: "")))
        }
        mutating func nestedUnkeyedContainer(forKey key: Key) -> UnkeyedEncodingContainer {
            encoder.failure = encoder.failure
                ?? TandemModelError.unsupportedType(property: key.stringValue, type: "a nested array")
            return Rejecting(encoder: encoder)
        }
        mutating func superEncoder() -> Encoder { encoder.rejected() }
        mutating func superEncoder(forKey key: Key) -> Encoder { encoder.rejected() }
    }

    func rejected() -> Encoder {
        failure = failure ?? TandemModelError.notAnObject(type: typeName)
        return FieldEncoder(typeName: typeName)
    }

    /// The container handed out for non-keyed use: it records nothing (the encoder has failed).
    struct Rejecting: UnkeyedEncodingContainer, SingleValueEncodingContainer {
        let encoder: FieldEncoder
        var codingPath: [CodingKey] { [] }
        var count: Int { 0 }
        mutating func encodeNil() throws {}
        mutating func encode<T: Encodable>(_ value: T) throws {}
        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type)
            -> KeyedEncodingContainer<NestedKey>
        {
            KeyedEncodingContainer(Container<NestedKey>(encoder: FieldEncoder(typeName: "")))
        }
        mutating func nestedUnkeyedContainer() -> UnkeyedEncodingContainer { self }
        mutating func superEncoder() -> Encoder { encoder.rejected() }
    }
}

// MARK: - Decoding

/// Builds a model from the FFI's properties (`probe` mode: from placeholders, noting the schema;
/// placeholder mode: a placeholder instance of an embedded type, noting nothing).
final class FieldDecoder: Decoder {
    var codingPath: [CodingKey] = []
    var userInfo: [CodingUserInfoKey: Any] = [:]
    let fields: [String: FieldValue]
    let typeName: String
    /// Set in probe mode: each property's shape, in declaration order.
    var probed: [(String, PropertyShape)]?
    /// In probe mode: the properties holding embedded objects, by name.
    var probedEmbedded: [String: EmbeddedShape] = [:]
    /// Above 0 in placeholder mode: how many embedded placeholders deep this one is (every
    /// optional is nil, every other property a placeholder).
    let placeholderDepth: Int
    private var nullables: Set<String> = []

    init(fields: [String: FieldValue], typeName: String, probe: Bool = false) {
        self.fields = fields
        self.typeName = typeName
        probed = probe ? [] : nil
        placeholderDepth = 0
    }

    /// A decoder of a placeholder instance of the embedded type `typeName`, `depth` (>= 1) levels
    /// below the probed model.
    init(placeholderOf typeName: String, depth: Int) {
        fields = [:]
        self.typeName = typeName
        probed = nil
        placeholderDepth = depth
    }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        KeyedDecodingContainer(Container<Key>(decoder: self))
    }
    func unkeyedContainer() throws -> UnkeyedDecodingContainer {
        throw TandemModelError.notAnObject(type: typeName)
    }
    func singleValueContainer() throws -> SingleValueDecodingContainer {
        throw TandemModelError.notAnObject(type: typeName)
    }

    static func decode<T: Decodable>(_ type: T.Type, from fields: [String: FieldValue]) throws -> T {
        try T(from: FieldDecoder(fields: fields, typeName: "\(T.self)"))
    }

    /// A model from an object the FFI returned (its properties leave out the primary key).
    static func decode<T: TandemObject>(_ type: T.Type, key: Key, from fields: [String: FieldValue]) throws -> T {
        var fields = fields
        fields[T.primaryKey] = .single(value: keyValue(key))
        return try T(from: FieldDecoder(fields: fields, typeName: "\(T.self)"))
    }

    /// The properties of `type`, derived by decoding one placeholder instance: each one's shape in
    /// declaration order, and the shapes of those holding embedded objects.
    static func probe<T: Decodable>(_ type: T.Type) throws
        -> (properties: [(String, PropertyShape)], embedded: [String: EmbeddedShape])
    {
        let decoder = FieldDecoder(fields: [:], typeName: "\(T.self)", probe: true)
        _ = try T(from: decoder)
        return (decoder.probed ?? [], decoder.probedEmbedded)
    }

    struct Container<Key: CodingKey>: KeyedDecodingContainerProtocol {
        let decoder: FieldDecoder
        var codingPath: [CodingKey] { [] }
        var allKeys: [Key] { decoder.fields.keys.compactMap { Key(stringValue: $0) } }

        func contains(_ key: Key) -> Bool {
            decoder.probed != nil || decoder.placeholderDepth > 0 || decoder.fields[key.stringValue] != nil
        }

        func decodeNil(forKey key: Key) throws -> Bool {
            if decoder.placeholderDepth > 0 { return true }
            if decoder.probed != nil {
                // An optional property asks this first; its type comes with the decode that follows.
                decoder.nullables.insert(key.stringValue)
                return false
            }
            switch decoder.fields[key.stringValue] {
            case nil, .single(.null)?, .embedded(present: false, fields: _)?: return true
            default: return false
            }
        }

        func get<T: Decodable>(_ type: T.Type, _ key: Key) throws -> T {
            let name = key.stringValue
            if decoder.placeholderDepth > 0 {
                if let p = T.self as? Persistable.Type { return p.tandemPlaceholder as! T }
                if let v = try embeddedPlaceholder(T.self, depth: decoder.placeholderDepth) { return v }
                throw TandemModelError.unsupportedType(property: name, type: "\(T.self)")
            }
            guard let p = T.self as? Persistable.Type else {
                if decoder.probed != nil {
                    guard let shape = try embeddedShape(of: T.self, property: name,
                                                        optional: decoder.nullables.contains(name)),
                          let placeholder = try embeddedPlaceholder(T.self, depth: 0)
                    else {
                        throw TandemModelError.unsupportedType(property: name, type: "\(T.self)")
                    }
                    decoder.probed?.append((name, shape.propertyShape))
                    decoder.probedEmbedded[name] = shape
                    return placeholder
                }
                guard holdsEmbedded(T.self) else {
                    throw TandemModelError.unsupportedType(property: name, type: "\(T.self)")
                }
                guard let field = decoder.fields[name] else {
                    throw TandemModelError.typeMismatch(property: name, expected: "\(T.self)", found: "no such property")
                }
                return try readProperty(T.self, from: field, property: name)
            }
            if decoder.probed != nil {
                var shape = p.tandemShape
                if decoder.nullables.contains(name) {
                    guard shape.collection == .single else {
                        throw TandemModelError.unsupportedType(property: name, type: "Optional<\(T.self)>")
                    }
                    shape.nullable = true
                }
                decoder.probed?.append((name, shape))
                return p.tandemPlaceholder as! T
            }
            guard let field = decoder.fields[name] else {
                throw TandemModelError.typeMismatch(property: name, expected: "\(T.self)", found: "no such property")
            }
            return try p.init(tandemField: field, property: name) as! T
        }

        func decode(_ t: Bool.Type, forKey key: Key) throws -> Bool { try get(t, key) }
        func decode(_ t: String.Type, forKey key: Key) throws -> String { try get(t, key) }
        func decode(_ t: Double.Type, forKey key: Key) throws -> Double { try get(t, key) }
        func decode(_ t: Float.Type, forKey key: Key) throws -> Float { try get(t, key) }
        func decode(_ t: Int.Type, forKey key: Key) throws -> Int { try get(t, key) }
        func decode(_ t: Int8.Type, forKey key: Key) throws -> Int8 { try get(t, key) }
        func decode(_ t: Int16.Type, forKey key: Key) throws -> Int16 { try get(t, key) }
        func decode(_ t: Int32.Type, forKey key: Key) throws -> Int32 { try get(t, key) }
        func decode(_ t: Int64.Type, forKey key: Key) throws -> Int64 { try get(t, key) }
        func decode(_ t: UInt.Type, forKey key: Key) throws -> UInt { try get(t, key) }
        func decode(_ t: UInt8.Type, forKey key: Key) throws -> UInt8 { try get(t, key) }
        func decode(_ t: UInt16.Type, forKey key: Key) throws -> UInt16 { try get(t, key) }
        func decode(_ t: UInt32.Type, forKey key: Key) throws -> UInt32 { try get(t, key) }
        func decode(_ t: UInt64.Type, forKey key: Key) throws -> UInt64 { try get(t, key) }
        func decode<T: Decodable>(_ t: T.Type, forKey key: Key) throws -> T { try get(t, key) }

        func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws
            -> KeyedDecodingContainer<NestedKey>
        {
            throw TandemModelError.unsupportedType(property: key.stringValue, type: "a nested object")
        }
        func nestedUnkeyedContainer(forKey key: Key) throws -> UnkeyedDecodingContainer {
            throw TandemModelError.unsupportedType(property: key.stringValue, type: "a nested array")
        }
        func superDecoder() throws -> Decoder { throw TandemModelError.notAnObject(type: decoder.typeName) }
        func superDecoder(forKey key: Key) throws -> Decoder {
            throw TandemModelError.notAnObject(type: decoder.typeName)
        }
    }
}

/// Reads a property of type `T` (a `Persistable` type or one holding embedded objects) from what
/// the FFI returned for it.
func readProperty<T>(_ type: T.Type, from field: FieldValue, property: String) throws -> T {
    if let p = T.self as? Persistable.Type { return try p.init(tandemField: field, property: property) as! T }
    if let v = try readEmbedded(T.self, from: field, property: property) { return v }
    throw TandemModelError.unsupportedType(property: property, type: "\(T.self)")
}

// MARK: - Encoding for add and upsert

/// Encodes a model for `Transaction.add`/`upsert` in one pass, straight into what they record:
/// the single-valued properties as `[String: Value]` (a nil optional, which Codable leaves out,
/// as null), the primary key's value, and the collections and embedded objects (a nil embedded
/// object, which Codable leaves out, is not among them). Properties are matched by position
/// (the order the model's `encode(to:)` writes them, its declaration order, as probed), so no
/// intermediate `[String: FieldInput]` is built and filtered. Anything irregular (a key out of
/// order or twice, a property the schema lacks, a value of another shape than probed, non-keyed
/// use) returns nil and the caller takes the general path (`FieldEncoder`), which records or
/// throws exactly as before. Errors a property's value throws are the ones `FieldEncoder` throws.
final class WriteEncoder: Encoder {
    var codingPath: [CodingKey] = []
    var userInfo: [CodingUserInfoKey: Any] = [:]
    let info: ModelInfo
    var cursor = 0
    /// The single-valued properties' values, by `info.slots` (a property Codable leaves out,
    /// a nil optional, stays null).
    var row: [Value]
    /// The collections and embedded objects, by name.
    var collections: [String: FieldInput] = [:]
    var key = Value.null
    var irregular = false

    init(info: ModelInfo) {
        self.info = info
        row = Array(repeating: .null, count: info.rowProperties.count)
    }

    /// The primary key, the row (values of `info.rowProperties`, in that order) and the
    /// collections and embedded objects of `object`, or nil when it does not encode its properties in declaration
    /// order (a custom `encode(to:)`): then the caller takes the general path.
    static func encode<T: Encodable>(_ object: T, info: ModelInfo)
        throws -> (key: Value, row: [Value], collections: [String: FieldInput])?
    {
        guard info.positional else { return nil }
        let encoder = WriteEncoder(info: info)
        try object.encode(to: encoder)
        if encoder.irregular { return nil }
        return (encoder.key, encoder.row, encoder.collections)
    }

    func put(_ input: FieldInput, _ name: String) {
        let order = info.order
        var i = cursor
        while i < order.count, order[i].name != name { i += 1 }
        guard i < order.count else {
            irregular = true
            return
        }
        cursor = i + 1
        switch (order[i].kind, input) {
        case let (.primaryKey, .single(v)): key = v
        case let (.single, .single(v)): row[info.slots[i]] = v
        case (.collection, .list), (.collection, .set), (.collection, .dictionary),
             (.embedded, .embedded), (.embedded, .embeddedList), (.embedded, .embeddedDictionary):
            collections[name] = input
        default: irregular = true
        }
    }

    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        KeyedEncodingContainer(Container<Key>(encoder: self))
    }
    func unkeyedContainer() -> UnkeyedEncodingContainer {
        irregular = true
        return FieldEncoder(typeName: "").unkeyedContainer()
    }
    func singleValueContainer() -> SingleValueEncodingContainer {
        irregular = true
        return FieldEncoder(typeName: "").singleValueContainer()
    }

    struct Container<Key: CodingKey>: KeyedEncodingContainerProtocol {
        let encoder: WriteEncoder
        var codingPath: [CodingKey] { [] }

        mutating func put<T: Encodable>(_ value: T, _ key: Key) throws {
            if let p = value as? Persistable {
                encoder.put(try p.tandemField(), key.stringValue)
            } else if let input = try embeddedInput(value) {
                encoder.put(input, key.stringValue)
            } else {
                throw TandemModelError.unsupportedType(property: key.stringValue, type: "\(T.self)")
            }
        }
        mutating func encodeNil(forKey key: Key) throws { encoder.put(.single(.null), key.stringValue) }
        mutating func encode(_ v: Bool, forKey key: Key) throws { encoder.put(.single(.bool(value: v)), key.stringValue) }
        mutating func encode(_ v: String, forKey key: Key) throws { encoder.put(.single(.string(value: v)), key.stringValue) }
        mutating func encode(_ v: Double, forKey key: Key) throws { encoder.put(.single(.double(value: v)), key.stringValue) }
        mutating func encode(_ v: Float, forKey key: Key) throws { encoder.put(.single(.float(value: v)), key.stringValue) }
        mutating func encode(_ v: Int, forKey key: Key) throws { encoder.put(.single(.int(value: Int64(v))), key.stringValue) }
        mutating func encode(_ v: Int8, forKey key: Key) throws { encoder.put(.single(.int(value: Int64(v))), key.stringValue) }
        mutating func encode(_ v: Int16, forKey key: Key) throws { encoder.put(.single(.int(value: Int64(v))), key.stringValue) }
        mutating func encode(_ v: Int32, forKey key: Key) throws { encoder.put(.single(.int(value: Int64(v))), key.stringValue) }
        mutating func encode(_ v: Int64, forKey key: Key) throws { encoder.put(.single(.int(value: v)), key.stringValue) }
        mutating func encode(_ v: UInt, forKey key: Key) throws { try put(v, key) }
        mutating func encode(_ v: UInt8, forKey key: Key) throws { try put(v, key) }
        mutating func encode(_ v: UInt16, forKey key: Key) throws { try put(v, key) }
        mutating func encode(_ v: UInt32, forKey key: Key) throws { try put(v, key) }
        mutating func encode(_ v: UInt64, forKey key: Key) throws { try put(v, key) }
        mutating func encode<T: Encodable>(_ v: T, forKey key: Key) throws { try put(v, key) }

        mutating func nestedContainer<NestedKey: CodingKey>(
            keyedBy keyType: NestedKey.Type, forKey key: Key
        ) -> KeyedEncodingContainer<NestedKey> {
            encoder.irregular = true
            return FieldEncoder(typeName: "").container(keyedBy: NestedKey.self)
        }
        mutating func nestedUnkeyedContainer(forKey key: Key) -> UnkeyedEncodingContainer {
            encoder.irregular = true
            return FieldEncoder(typeName: "").unkeyedContainer()
        }
        mutating func superEncoder() -> Encoder {
            encoder.irregular = true
            return FieldEncoder(typeName: "")
        }
        mutating func superEncoder(forKey key: Key) -> Encoder {
            encoder.irregular = true
            return FieldEncoder(typeName: "")
        }
    }
}
