// Swift-native property types and how each maps to Tandem's values (`Value`, `FieldValue`) and
// schema (`PropertySpec`). A model property may be any `Persistable` type:
//
//   Int, Int64, Int32, Int16, Int8  -> int          Bool    -> bool      String -> string
//   Double -> double   Float -> float               Date    -> timestamp (ns precision)
//   Data   -> binary   UUID  -> uuid                ObjectId -> objectId
//   Decimal -> decimal128 (exact text)                Link<T>  -> link to T
//   T?  (T one of the above) -> the same, nullable
//   [T], Set<T>, [String: T] -> list, set, dictionary of T (T may be optional)
//
// and, for a `TandemEmbeddedObject` type E (EmbeddedObject.swift; not `Persistable`, recognised
// by the coders): E? -> embedded object, [E] -> list of them, [String: E] / [String: E?] ->
// dictionary of them.

import Foundation

/// Errors of the typed layer and of `Database.write` (the untyped calls below them throw
/// `TandemError`).
public enum TandemModelError: Error, Equatable, CustomStringConvertible {
    /// A property's Swift type has no Tandem mapping (e.g. a nested struct or `[[Int]]`).
    case unsupportedType(property: String, type: String)
    /// A value read from the database does not fit the model's property type.
    case typeMismatch(property: String, expected: String, found: String)
    /// The model's primary key property is missing or of a type that cannot be a key.
    case invalidPrimaryKey(className: String, message: String)
    /// `static var indexed` names a property the model does not have.
    case unknownIndexedProperty(className: String, property: String)
    /// The value can be read but not yet written through this build's FFI.
    case notWritable(type: String, reason: String)
    /// The model does not encode as keyed properties (a custom `encode(to:)` did something else).
    case notAnObject(type: String)
    /// An async wait did not see what it waited for in time (nothing is lost).
    case timeout(String)
    /// `Database.write` was called inside a `write` block of the same database on the same
    /// thread: writes do not nest (Realm refuses them too). Nothing of the inner write is
    /// recorded; thrown out of the outer block, it rolls the outer write back too.
    case nestedWrite
    /// A `Transaction` was used after its `write` block returned (or threw): what it would
    /// record could never be written, so it refuses instead.
    case transactionEnded

    public var description: String {
        switch self {
        case let .unsupportedType(property, type):
            return "property \(property): \(type) is not a Tandem type (see PersistableValue.swift)"
        case let .typeMismatch(property, expected, found):
            return "property \(property): expected \(expected), found \(found)"
        case let .invalidPrimaryKey(className, message):
            return "class \(className): \(message)"
        case let .unknownIndexedProperty(className, property):
            return "class \(className): `indexed` names \(property), which is not one of its properties"
        case let .notWritable(type, reason):
            return "\(type) cannot be written: \(reason)"
        case let .notAnObject(type):
            return "\(type) does not encode as keyed properties"
        case let .timeout(what):
            return "timed out: \(what)"
        case .nestedWrite:
            return "a write transaction is already open on this thread: nested writes are not supported"
        case .transactionEnded:
            return "this Transaction's write block has already returned: record operations inside the block "
                + "(nothing recorded afterwards would be written)"
        }
    }
}

/// The schema shape of one property, derived from its Swift type.
public struct PropertyShape: Equatable, Sendable {
    /// Its Tandem type (`.link` for links and embedded objects).
    public var type: PropertyType
    /// Whether it (a single value) or its elements (a collection) may be null.
    public var nullable: Bool
    /// Single value, list, set or dictionary.
    public var collection: Collection
    /// The class a link or embedded-object property holds.
    public var linkTarget: String?
}

/// What a property writes: one value, a whole collection, or embedded objects (each as every
/// property of it, by name).
public indirect enum FieldInput: Equatable {
    /// One value (`.null` for a nil optional).
    case single(Value)
    /// A list's elements, in order.
    case list([Value])
    /// A set's elements.
    case set([Value])
    /// A dictionary's entries.
    case dictionary([String: Value])
    /// A single embedded object's properties (every one of its class), or nil for none.
    case embedded([String: FieldInput]?)
    /// A list of embedded objects, each as its properties.
    case embeddedList([[String: FieldInput]])
    /// A dictionary of embedded objects (nil: a null entry).
    case embeddedDictionary([String: [String: FieldInput]?])

    /// Nothing to write into a new object: an empty collection or no embedded object (a single
    /// value is never empty).
    var isEmpty: Bool {
        switch self {
        case .single: return false
        case let .list(items), let .set(items): return items.isEmpty
        case let .dictionary(entries): return entries.isEmpty
        case let .embedded(fields): return fields == nil
        case let .embeddedList(items): return items.isEmpty
        case let .embeddedDictionary(entries): return entries.isEmpty
        }
    }
}

/// A type that can be one property of a model: a `PersistableScalar`, or a collection of them.
public protocol Persistable {
    /// Its schema shape.
    static var tandemShape: PropertyShape { get }
    /// A placeholder value (used once per model type to derive its schema).
    static var tandemPlaceholder: Self { get }
    /// What it writes. Throws `TandemModelError.notWritable` for read-only types.
    func tandemField() throws -> FieldInput
    /// Reads it back from what the database returned for `property`.
    init(tandemField: FieldValue, property: String) throws
}

/// A single value: a property on its own, or an element of a list, set or dictionary.
public protocol PersistableScalar: Persistable {
    /// Its Tandem type.
    static var tandemType: PropertyType { get }
    /// Whether it may be null (`Optional` says yes).
    static var tandemNullable: Bool { get }
    /// The class a link points to (`Link` only).
    static var tandemLinkTarget: String? { get }
    /// Its value as the FFI takes it.
    func tandemValue() throws -> Value
    /// Reads it from a value the FFI returned (for `property`, named in errors).
    init(tandemValue: Value, property: String) throws
}

extension PersistableScalar {
    public static var tandemNullable: Bool { false }
    public static var tandemLinkTarget: String? { nil }
    public static var tandemShape: PropertyShape {
        PropertyShape(type: tandemType, nullable: tandemNullable, collection: .single,
                      linkTarget: tandemLinkTarget)
    }
    public func tandemField() throws -> FieldInput { .single(try tandemValue()) }
    public init(tandemField: FieldValue, property: String) throws {
        guard case let .single(value) = tandemField else {
            throw TandemModelError.typeMismatch(property: property, expected: "\(Self.self)",
                                                found: "\(tandemField)")
        }
        try self.init(tandemValue: value, property: property)
    }
}

func mismatch<T>(_ type: T.Type, _ value: Value, _ property: String) -> TandemModelError {
    .typeMismatch(property: property, expected: "\(type)", found: "\(value)")
}

// MARK: - Integers

/// The fixed-width integers: stored as 64-bit ints; reading a value out of range is an error.
public protocol PersistableInteger: PersistableScalar, FixedWidthInteger {}

extension PersistableInteger {
    public static var tandemType: PropertyType { .int }
    public static var tandemPlaceholder: Self { 0 }
    public func tandemValue() throws -> Value { .int(value: Int64(self)) }
    public init(tandemValue: Value, property: String) throws {
        guard case let .int(v) = tandemValue, let exact = Self(exactly: v) else {
            throw mismatch(Self.self, tandemValue, property)
        }
        self = exact
    }
}

extension Int: PersistableInteger {}
extension Int64: PersistableInteger {}
extension Int32: PersistableInteger {}
extension Int16: PersistableInteger {}
extension Int8: PersistableInteger {}

// MARK: - Other scalars

extension Bool: PersistableScalar {
    public static var tandemType: PropertyType { .bool }
    public static var tandemPlaceholder: Bool { false }
    public func tandemValue() throws -> Value { .bool(value: self) }
    public init(tandemValue: Value, property: String) throws {
        guard case let .bool(v) = tandemValue else { throw mismatch(Bool.self, tandemValue, property) }
        self = v
    }
}

extension String: PersistableScalar {
    public static var tandemType: PropertyType { .string }
    public static var tandemPlaceholder: String { "" }
    public func tandemValue() throws -> Value { .string(value: self) }
    public init(tandemValue: Value, property: String) throws {
        guard case let .string(v) = tandemValue else { throw mismatch(String.self, tandemValue, property) }
        self = v
    }
}

extension Double: PersistableScalar {
    public static var tandemType: PropertyType { .double }
    public static var tandemPlaceholder: Double { 0 }
    public func tandemValue() throws -> Value { .double(value: self) }
    public init(tandemValue: Value, property: String) throws {
        guard case let .double(v) = tandemValue else { throw mismatch(Double.self, tandemValue, property) }
        self = v
    }
}

extension Float: PersistableScalar {
    public static var tandemType: PropertyType { .float }
    public static var tandemPlaceholder: Float { 0 }
    public func tandemValue() throws -> Value { .float(value: self) }
    public init(tandemValue: Value, property: String) throws {
        guard case let .float(v) = tandemValue else { throw mismatch(Float.self, tandemValue, property) }
        self = v
    }
}

extension Data: PersistableScalar {
    public static var tandemType: PropertyType { .binary }
    public static var tandemPlaceholder: Data { Data() }
    public func tandemValue() throws -> Value { .binary(value: self) }
    public init(tandemValue: Value, property: String) throws {
        guard case let .binary(v) = tandemValue else { throw mismatch(Data.self, tandemValue, property) }
        self = v
    }
}

/// A `Date` is a timestamp of whole seconds since the Unix epoch and nanoseconds of the same sign
/// (Realm's Timestamp). `Date` holds a `Double`, so a date round-trips exactly when its
/// nanoseconds are all it carries below the second (any date within a few centuries of 1970).
extension Date: PersistableScalar {
    public static var tandemType: PropertyType { .timestamp }
    public static var tandemPlaceholder: Date { Date(timeIntervalSince1970: 0) }
    public func tandemValue() throws -> Value {
        let t = timeIntervalSince1970
        guard t.isFinite, abs(t) < 9.2e18 else {
            throw TandemModelError.notWritable(type: "Date", reason: "\(t) s is outside a timestamp's range")
        }
        var seconds = Int64(t.rounded(.towardZero))
        var nanos = Int64(((t - Double(seconds)) * 1e9).rounded())
        if nanos >= 1_000_000_000 { seconds += 1; nanos -= 1_000_000_000 }
        if nanos <= -1_000_000_000 { seconds -= 1; nanos += 1_000_000_000 }
        return .timestamp(seconds: seconds, nanoseconds: Int32(nanos))
    }
    public init(tandemValue: Value, property: String) throws {
        guard case let .timestamp(s, n) = tandemValue else { throw mismatch(Date.self, tandemValue, property) }
        self = Date(timeIntervalSince1970: Double(s) + Double(n) / 1e9)
    }
}

extension UUID: PersistableScalar {
    public static var tandemType: PropertyType { .uuid }
    public static var tandemPlaceholder: UUID { UUID(uuid: (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)) }
    public func tandemValue() throws -> Value { .uuid(bytes: withUnsafeBytes(of: uuid) { Data($0) }) }
    public init(tandemValue: Value, property: String) throws {
        guard case let .uuid(bytes) = tandemValue, bytes.count == 16 else {
            throw mismatch(UUID.self, tandemValue, property)
        }
        var raw: uuid_t = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        withUnsafeMutableBytes(of: &raw) { $0.copyBytes(from: bytes) }
        self = UUID(uuid: raw)
    }
}

extension ObjectId: PersistableScalar {
    public static var tandemType: PropertyType { .objectId }
    public static var tandemPlaceholder: ObjectId { ObjectId(bytes: Data(count: 12))! }
    public func tandemValue() throws -> Value { .objectId(bytes: bytes) }
    public init(tandemValue: Value, property: String) throws {
        guard case let .objectId(bytes) = tandemValue, let id = ObjectId(bytes: bytes) else {
            throw mismatch(ObjectId.self, tandemValue, property)
        }
        self = id
    }
}

/// A `Decimal` is a decimal128 property. It crosses the FFI as exact text (`Value.decimal`):
/// written as `Decimal.description` (always a `.` decimal point), read back with
/// `Decimal(string:locale: nil)` (the FFI returns `coefficientEexponent`, e.g. `12345E-2`).
/// Foundation's `Decimal` holds 38 digits, decimal128 34: a value with more significant digits
/// than decimal128 holds fails the write with `TandemError.InvalidArgument`.
extension Decimal: PersistableScalar {
    public static var tandemType: PropertyType { .decimal }
    public static var tandemPlaceholder: Decimal { 0 }
    public func tandemValue() throws -> Value {
        guard isFinite else {
            throw TandemModelError.notWritable(type: "Decimal", reason: "\(self) is not a finite decimal")
        }
        return .decimal(value: description)
    }
    public init(tandemValue: Value, property: String) throws {
        guard case let .decimal(text) = tandemValue, let d = Decimal(string: text, locale: nil) else {
            throw mismatch(Decimal.self, tandemValue, property)
        }
        self = d
    }
}

/// A nullable value: `nil` is null.
extension Optional: Persistable where Wrapped: PersistableScalar {}
extension Optional: PersistableScalar where Wrapped: PersistableScalar {
    public static var tandemType: PropertyType { Wrapped.tandemType }
    public static var tandemNullable: Bool { true }
    public static var tandemLinkTarget: String? { Wrapped.tandemLinkTarget }
    public static var tandemPlaceholder: Wrapped? { nil }
    public func tandemValue() throws -> Value { try self?.tandemValue() ?? .null }
    public init(tandemValue: Value, property: String) throws {
        self = tandemValue == .null ? nil : try Wrapped(tandemValue: tandemValue, property: property)
    }
}

// MARK: - Collections

extension Array: Persistable where Element: PersistableScalar {
    public static var tandemShape: PropertyShape {
        PropertyShape(type: Element.tandemType, nullable: Element.tandemNullable, collection: .list,
                      linkTarget: Element.tandemLinkTarget)
    }
    public static var tandemPlaceholder: [Element] { [] }
    public func tandemField() throws -> FieldInput { .list(try map { try $0.tandemValue() }) }
    public init(tandemField: FieldValue, property: String) throws {
        guard case let .list(items) = tandemField else {
            throw TandemModelError.typeMismatch(property: property, expected: "a list", found: "\(tandemField)")
        }
        self = try items.map { try Element(tandemValue: $0, property: property) }
    }
}

extension Set: Persistable where Element: PersistableScalar {
    public static var tandemShape: PropertyShape {
        PropertyShape(type: Element.tandemType, nullable: Element.tandemNullable, collection: .set,
                      linkTarget: Element.tandemLinkTarget)
    }
    public static var tandemPlaceholder: Set<Element> { [] }
    public func tandemField() throws -> FieldInput { .set(try map { try $0.tandemValue() }) }
    public init(tandemField: FieldValue, property: String) throws {
        guard case let .set(items) = tandemField else {
            throw TandemModelError.typeMismatch(property: property, expected: "a set", found: "\(tandemField)")
        }
        self = Set(try items.map { try Element(tandemValue: $0, property: property) })
    }
}

extension Dictionary: Persistable where Key == String, Value: PersistableScalar {
    public static var tandemShape: PropertyShape {
        PropertyShape(type: Value.tandemType, nullable: Value.tandemNullable, collection: .dictionary,
                      linkTarget: Value.tandemLinkTarget)
    }
    public static var tandemPlaceholder: [String: Value] { [:] }
    public func tandemField() throws -> FieldInput {
        .dictionary(try mapValues { try $0.tandemValue() })
    }
    public init(tandemField: FieldValue, property: String) throws {
        guard case let .dictionary(entries) = tandemField else {
            throw TandemModelError.typeMismatch(property: property, expected: "a dictionary",
                                                found: "\(tandemField)")
        }
        self = try entries.mapValues { try Value(tandemValue: $0, property: property) }
    }
}
