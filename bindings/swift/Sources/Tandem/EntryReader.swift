// Typed reads of query results without the generic lifting: `TypedResults.snapshot()` calls the
// FFI's `Results.rows(properties:)` itself, with the model's property names, and decodes each
// model straight from the returned buffer.
//
// The generated code lifts every object into Swift values first (for `entries()`, a
// `[String: FieldValue]` dictionary per object, one heap box per `FieldValue`, each integer read
// through `Data` subscripts); decoding models from those took about 60% of a typed read of
// 100,000 objects (perf). Here the buffer is read in place: a row holds the model's properties
// in declaration order, so each value's position is noted while skipping over it (no names
// compared, no `String` made), and the model's `init(from:)` reads them by position through
// `EntryDecoder`, plain values (integers, Bool, String, Double, Float, Date...) straight from the
// bytes. Anything else (collections, links, embedded objects, mismatched values) is lifted into the
// same `FieldValue` the generated code would produce and decoded exactly as `FieldDecoder` does, so
// the models, values and errors are the same as decoding `entries()`.
//
// The buffer layouts are uniffi's (big-endian, `i32` lengths and enum tags from 1) for the
// interface in Tandem.swift: `Vec<ObjectRow>`, `ObjectRow { key: Key, values: Vec<FieldValue> }`
// (and `Vec<ObjectEntry>` for `withEntriesBuffer`). `EntryReaderTests` checks this reader against
// the generated lifting for every kind of value, so a change of those types shows up there.

import Foundation

#if canImport(TandemFFI)
import TandemFFI
#endif

/// A malformed buffer from the FFI (a binding out of step with the library), or a Rust panic.
struct EntryReaderError: Error, CustomStringConvertible {
    let description: String
}

/// Reads uniffi's serialization in place. Every read checks the bounds.
struct WireReader {
    let base: UnsafeRawPointer
    let end: Int
    var pos = 0

    init(base: UnsafeRawPointer, count: Int) {
        self.base = base
        end = count
    }

    @inline(__always) func need(_ n: Int) throws {
        guard n >= 0, end - pos >= n else { throw EntryReaderError(description: "entries: buffer overflow") }
    }
    @inline(__always) mutating func i8() throws -> Int8 {
        try need(1)
        defer { pos += 1 }
        return base.load(fromByteOffset: pos, as: Int8.self)
    }
    @inline(__always) mutating func i32() throws -> Int32 {
        try need(4)
        defer { pos += 4 }
        return Int32(bigEndian: base.loadUnaligned(fromByteOffset: pos, as: Int32.self))
    }
    @inline(__always) mutating func i64() throws -> Int64 {
        try need(8)
        defer { pos += 8 }
        return Int64(bigEndian: base.loadUnaligned(fromByteOffset: pos, as: Int64.self))
    }
    @inline(__always) mutating func count() throws -> Int {
        let n = Int(try i32())
        guard n >= 0 else { throw EntryReaderError(description: "entries: negative length") }
        return n
    }
    /// The next `i32`-length-prefixed bytes, skipped; returns where they start and their length.
    @inline(__always) mutating func bytes() throws -> (Int, Int) {
        let n = try count()
        try need(n)
        defer { pos += n }
        return (pos, n)
    }
    mutating func string() throws -> String {
        let (start, n) = try bytes()
        return String(decoding: UnsafeRawBufferPointer(start: base + start, count: n), as: UTF8.self)
    }
    mutating func data() throws -> Data {
        let (start, n) = try bytes()
        return Data(bytes: base + start, count: n)
    }
    mutating func bool() throws -> Bool { try i8() != 0 }
    mutating func float() throws -> Float { Float(bitPattern: UInt32(bitPattern: try i32())) }
    mutating func double() throws -> Double { Double(bitPattern: UInt64(bitPattern: try i64())) }

    // MARK: Lifting (as the generated FfiConverters do)

    mutating func key() throws -> Key {
        switch try i32() {
        case 1: return .null
        case 2: return .int(value: try i64())
        case 3: return .string(value: try string())
        case 4: return .objectId(bytes: try data())
        case 5: return .uuid(bytes: try data())
        default: throw EntryReaderError(description: "entries: unexpected Key case")
        }
    }

    mutating func value() throws -> Value {
        switch try i32() {
        case 1: return .null
        case 2: return .int(value: try i64())
        case 3: return .bool(value: try bool())
        case 4: return .string(value: try string())
        case 5: return .binary(value: try data())
        case 6: return .timestamp(seconds: try i64(), nanoseconds: try i32())
        case 7: return .float(value: try float())
        case 8: return .double(value: try double())
        case 9: return .objectId(bytes: try data())
        case 10: return .uuid(bytes: try data())
        case 11: return .decimal(value: try string())
        case 12: return .link(className: try string(), key: try key())
        default: throw EntryReaderError(description: "entries: unexpected Value case")
        }
    }

    mutating func values() throws -> [Value] {
        let n = try count()
        var out: [Value] = []
        out.reserveCapacity(n)
        for _ in 0..<n { out.append(try value()) }
        return out
    }

    mutating func valueMap() throws -> [String: Value] {
        let n = try count()
        var out: [String: Value] = [:]
        out.reserveCapacity(n)
        for _ in 0..<n {
            let k = try string()
            out[k] = try value()
        }
        return out
    }

    mutating func fieldValue() throws -> FieldValue {
        switch try i32() {
        case 1: return .single(value: try value())
        case 2: return .list(items: try values())
        case 3: return .set(items: try values())
        case 4: return .dictionary(entries: try valueMap())
        case 5: return .embedded(present: try bool(), fields: try fieldMap())
        case 6:
            let n = try count()
            var items: [[String: FieldValue]] = []
            items.reserveCapacity(n)
            for _ in 0..<n { items.append(try fieldMap()) }
            return .embeddedList(items: items)
        case 7:
            let n = try count()
            var entries: [String: [String: FieldValue]?] = [:]
            entries.reserveCapacity(n)
            for _ in 0..<n {
                let k = try string()
                switch try i8() {
                case 0: entries[k] = .some(nil)
                case 1: entries[k] = .some(try fieldMap())
                default: throw EntryReaderError(description: "entries: unexpected optional tag")
                }
            }
            return .embeddedDictionary(entries: entries)
        default: throw EntryReaderError(description: "entries: unexpected FieldValue case")
        }
    }

    mutating func fieldMap() throws -> [String: FieldValue] {
        let n = try count()
        var out: [String: FieldValue] = [:]
        out.reserveCapacity(n)
        for _ in 0..<n {
            let k = try string()
            out[k] = try fieldValue()
        }
        return out
    }

    // MARK: Skipping (to find where each field starts)

    mutating func skipKey() throws {
        switch try i32() {
        case 1: return
        case 2: try need(8); pos += 8
        case 3, 4, 5: _ = try bytes()
        default: throw EntryReaderError(description: "entries: unexpected Key case")
        }
    }

    mutating func skipValue() throws {
        switch try i32() {
        case 1: return
        case 2, 8: try need(8); pos += 8
        case 3: try need(1); pos += 1
        case 7: try need(4); pos += 4
        case 6: try need(12); pos += 12
        case 4, 5, 9, 10, 11: _ = try bytes()
        case 12: _ = try bytes(); try skipKey()
        default: throw EntryReaderError(description: "entries: unexpected Value case")
        }
    }

    mutating func skipFieldValue() throws {
        switch try i32() {
        case 1: try skipValue()
        case 2, 3: for _ in 0..<(try count()) { try skipValue() }
        case 4: for _ in 0..<(try count()) { _ = try bytes(); try skipValue() }
        case 5: try need(1); pos += 1; try skipFieldMap()
        case 6: for _ in 0..<(try count()) { try skipFieldMap() }
        case 7:
            for _ in 0..<(try count()) {
                _ = try bytes()
                switch try i8() {
                case 0: break
                case 1: try skipFieldMap()
                default: throw EntryReaderError(description: "entries: unexpected optional tag")
                }
            }
        default: throw EntryReaderError(description: "entries: unexpected FieldValue case")
        }
    }

    mutating func skipFieldMap() throws {
        for _ in 0..<(try count()) {
            _ = try bytes()
            try skipFieldValue()
        }
    }
}

// MARK: - Calling the FFI

enum EntryReader {
    /// The query's objects decoded as `T`s: the same objects, in the same order, or the same
    /// error as decoding `raw.entries()` with `FieldDecoder`. Read through `Results.rows()`,
    /// which gives each object's values in the plan's order (no names, no map per object).
    static func decode<T: TandemObject>(_ type: T.Type, _ raw: Results) throws -> [T] {
        let plan = try DecodePlan.of(T.self)
        do {
            return try withRowsBuffer(raw, plan) { reader in try decode(T.self, plan: plan, &reader) }
        } catch TandemError.InvalidArgument {
            // A model property the stored class does not have (`rows` refuses the name): the
            // generic path reports it as `FieldDecoder` does, naming the property.
            return try raw.entries().map { try FieldDecoder.decode(T.self, key: $0.key, from: $0.fields) }
        }
    }

    /// Calls `uniffi_tandem_fn_method_results_entries` as the generated `entries()` does and
    /// hands `body` the returned buffer (freed afterwards).
    static func withEntriesBuffer<R>(_ raw: Results, _ body: (inout WireReader) throws -> R) throws -> R {
        try withBuffer("entries", body) { status in
            uniffi_tandem_fn_method_results_entries(raw.uniffiCloneHandle(), &status)
        }
    }

    /// Calls `uniffi_tandem_fn_method_results_rows` with the plan's property names as the
    /// generated `rows(properties:)` does and hands `body` the returned buffer.
    static func withRowsBuffer<R>(_ raw: Results, _ plan: DecodePlan, _ body: (inout WireReader) throws -> R) throws -> R {
        try withBuffer("rows", body) { status in
            let names = plan.loweredNames.withUnsafeBufferPointer { bytes in
                ffi_tandem_rustbuffer_from_bytes(ForeignBytes(len: Int32(bytes.count), data: bytes.baseAddress), &status)
            }
            guard status.code == 0 else { return RustBuffer(capacity: 0, len: 0, data: nil) }
            return uniffi_tandem_fn_method_results_rows(raw.uniffiCloneHandle(), names, &status)
        }
    }

    private static func withBuffer<R>(_ what: String, _ body: (inout WireReader) throws -> R,
                                      _ call: (inout RustCallStatus) -> RustBuffer) throws -> R {
        uniffiEnsureTandemInitialized()
        var status = RustCallStatus(code: 0, errorBuf: RustBuffer(capacity: 0, len: 0, data: nil))
        let buffer = call(&status)
        switch status.code {
        case 0: break
        case 1: throw try FfiConverterTypeTandemError_lift(status.errorBuf)
        default:
            var message = "Rust panic"
            if status.errorBuf.len > 0, let data = status.errorBuf.data {
                message = String(decoding: UnsafeBufferPointer(start: data, count: Int(status.errorBuf.len)),
                                 as: UTF8.self)
            }
            free(status.errorBuf)
            throw EntryReaderError(description: message)
        }
        defer { free(buffer) }
        guard let data = buffer.data else {
            throw EntryReaderError(description: "\(what): empty buffer")
        }
        var reader = WireReader(base: UnsafeRawPointer(data), count: Int(buffer.len))
        let result = try body(&reader)
        guard reader.pos == reader.end else {
            throw EntryReaderError(description: "\(what): the buffer still has data after the objects")
        }
        return result
    }

    private static func free(_ buffer: RustBuffer) {
        var status = RustCallStatus(code: 0, errorBuf: RustBuffer(capacity: 0, len: 0, data: nil))
        ffi_tandem_rustbuffer_free(buffer, &status)
    }

    static func decode<T: TandemObject>(_ type: T.Type, plan: DecodePlan, _ reader: inout WireReader) throws -> [T] {
        let n = try reader.count()
        var out: [T] = []
        out.reserveCapacity(n)
        let decoder = EntryDecoder(plan: plan, base: reader.base, typeName: "\(T.self)")
        for _ in 0..<n {
            try decoder.locate(&reader)
            out.append(try T(from: decoder))
        }
        return out
    }
}

/// What decoding a model type needs, derived once from its probed properties: the property
/// names in declaration order (the order a synthesized `init(from:)` asks for them) as Strings
/// and as UTF-8 bytes.
struct DecodePlan {
    let names: [String]
    /// `names` as uniffi lowers a `Vec<String>` (big-endian `i32` count, then each name's
    /// `i32` length and UTF-8 bytes): the argument of `Results.rows`.
    let loweredNames: [UInt8]
    /// Where the primary key is among `names` (read from the row's key).
    let keyIndex: Int

    private static let lock = NSLock()
    nonisolated(unsafe) private static var cache: [ObjectIdentifier: DecodePlan] = [:]

    static func of<T: TandemObject>(_ type: T.Type) throws -> DecodePlan {
        lock.lock()
        if let plan = cache[ObjectIdentifier(type)] {
            lock.unlock()
            return plan
        }
        lock.unlock()
        let names = try ModelInfo.of(T.self).spec.properties.map(\.name)
        var lowered: [UInt8] = []
        func i32(_ v: Int) {
            withUnsafeBytes(of: UInt32(truncatingIfNeeded: v).bigEndian) { lowered.append(contentsOf: $0) }
        }
        i32(names.count)
        for name in names {
            i32(name.utf8.count)
            lowered.append(contentsOf: name.utf8)
        }
        let plan = DecodePlan(names: names, loweredNames: lowered,
                              keyIndex: names.firstIndex(of: T.primaryKey) ?? -1)
        lock.lock()
        cache[ObjectIdentifier(type)] = plan
        lock.unlock()
        return plan
    }
}

// MARK: - Decoding

/// Decodes one object of an entries buffer at a time (`locate`, then `T(from:)`), by position.
final class EntryDecoder: Decoder {
    var codingPath: [CodingKey] = []
    var userInfo: [CodingUserInfoKey: Any] = [:]
    let plan: DecodePlan
    let base: UnsafeRawPointer
    let typeName: String
    /// For each property of `plan`, where its `FieldValue` starts in the buffer (-1: absent).
    var offsets: [Int]
    /// Where this object's `Key` starts.
    var keyOffset = 0
    /// Where its values start and end.
    var fieldsOffset = 0
    var fieldsEnd = 0
    /// The property the next `decode` most likely asks for (declaration order).
    var cursor = 0

    init(plan: DecodePlan, base: UnsafeRawPointer, typeName: String) {
        self.plan = plan
        self.base = base
        self.typeName = typeName
        offsets = Array(repeating: -1, count: plan.names.count)
    }

    /// Reads past the next row, noting where its key and each property's value start (a row
    /// holds the plan's properties in order).
    func locate(_ reader: inout WireReader) throws {
        keyOffset = reader.pos
        try reader.skipKey()
        fieldsOffset = reader.pos
        cursor = 0
        let n = try reader.count()
        guard n == offsets.count else {
            throw EntryReaderError(description: "rows: \(n) values for \(offsets.count) properties")
        }
        for i in 0..<n {
            offsets[i] = reader.pos
            try reader.skipFieldValue()
        }
        fieldsEnd = reader.pos
    }

    /// Where the property `name` is.
    enum Location {
        case field(Int)  // a FieldValue at this offset
        case key  // the primary key
        case missing
    }

    func locate(_ name: String) -> Location {
        var index = -1
        if cursor < plan.names.count, plan.names[cursor] == name {
            index = cursor
        } else if let i = plan.names.firstIndex(of: name) {
            index = i
        }
        if index >= 0 {
            cursor = index + 1
            if index == plan.keyIndex { return .key }
            let offset = offsets[index]
            return offset >= 0 ? .field(offset) : .missing
        }
        // Not a probed property (a custom `init(from:)` asking for a name its `encode(to:)` does
        // not write): rows hold only the probed ones.
        return .missing
    }

    /// The `FieldValue` at `location`, as `FieldDecoder` sees it (the key as a single value).
    func fieldValue(_ location: Location) throws -> FieldValue? {
        switch location {
        case let .field(offset):
            var reader = WireReader(base: base, count: fieldsEnd)
            reader.pos = offset
            return try reader.fieldValue()
        case .key:
            var reader = WireReader(base: base, count: fieldsOffset)
            reader.pos = keyOffset
            return .single(value: keyValue(try reader.key()))
        case .missing:
            return nil
        }
    }

    /// The single `Value` at `location` when it is one of `tag` (uniffi's `Value` case number),
    /// with a reader positioned on its payload; nil otherwise (the caller then takes the general
    /// path, which produces the same value or error as `FieldDecoder`).
    @inline(__always) func payload(_ location: Location, valueTag: Int32, keyTag: Int32) -> WireReader? {
        switch location {
        case let .field(offset):
            var reader = WireReader(base: base, count: fieldsEnd)
            reader.pos = offset
            guard (try? reader.i32()) == 1, (try? reader.i32()) == valueTag else { return nil }
            return reader
        case .key:
            var reader = WireReader(base: base, count: fieldsOffset)
            reader.pos = keyOffset
            guard keyTag != 0, (try? reader.i32()) == keyTag else { return nil }
            return reader
        case .missing:
            return nil
        }
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

    struct Container<Key: CodingKey>: KeyedDecodingContainerProtocol {
        let decoder: EntryDecoder
        var codingPath: [CodingKey] { [] }

        var allKeys: [Key] {
            decoder.plan.names.compactMap { Key(stringValue: $0) }
        }

        func contains(_ key: Key) -> Bool {
            let saved = decoder.cursor
            defer { decoder.cursor = saved }
            if case .missing = decoder.locate(key.stringValue) { return false }
            return true
        }

        func decodeNil(forKey key: Key) throws -> Bool {
            let saved = decoder.cursor
            defer { decoder.cursor = saved }
            switch decoder.locate(key.stringValue) {
            case .missing: return true
            case let .field(offset):
                var reader = WireReader(base: decoder.base, count: decoder.fieldsEnd)
                reader.pos = offset
                switch try? reader.i32() {
                case 1?: return (try? reader.i32()) == 1  // a single null
                case 5?: return (try? reader.bool()) == false  // no embedded object
                default: return false
                }
            case .key:
                var reader = WireReader(base: decoder.base, count: decoder.fieldsOffset)
                reader.pos = decoder.keyOffset
                return (try? reader.i32()) == 1
            }
        }

        /// The general path: as `FieldDecoder.Container.get` (embedded objects included: their
        /// `FieldValue` is lifted, then decoded by `FieldDecoder`).
        func get<T: Decodable>(_ type: T.Type, _ key: Key, _ location: EntryDecoder.Location) throws -> T {
            let name = key.stringValue
            guard let field = try decoder.fieldValue(location) else {
                guard T.self is Persistable.Type || holdsEmbedded(T.self) else {
                    throw TandemModelError.unsupportedType(property: name, type: "\(T.self)")
                }
                throw TandemModelError.typeMismatch(property: name, expected: "\(T.self)", found: "no such property")
            }
            return try readProperty(T.self, from: field, property: name)
        }

        func get<T: Decodable>(_ type: T.Type, _ key: Key) throws -> T {
            try get(type, key, decoder.locate(key.stringValue))
        }

        /// An integer property: read in place when it is a single int that fits.
        @inline(__always) func integer<T: PersistableInteger & Decodable>(_ type: T.Type, _ key: Key) throws -> T {
            let location = decoder.locate(key.stringValue)
            if var r = decoder.payload(location, valueTag: 2, keyTag: 2), let v = try? r.i64(),
               let exact = T(exactly: v)
            {
                return exact
            }
            return try get(type, key, location)
        }

        func decode(_ t: Bool.Type, forKey key: Key) throws -> Bool {
            let location = decoder.locate(key.stringValue)
            if var r = decoder.payload(location, valueTag: 3, keyTag: 0), let v = try? r.bool() { return v }
            return try get(t, key, location)
        }
        func decode(_ t: String.Type, forKey key: Key) throws -> String {
            let location = decoder.locate(key.stringValue)
            if var r = decoder.payload(location, valueTag: 4, keyTag: 3), let v = try? r.string() { return v }
            return try get(t, key, location)
        }
        func decode(_ t: Double.Type, forKey key: Key) throws -> Double {
            let location = decoder.locate(key.stringValue)
            if var r = decoder.payload(location, valueTag: 8, keyTag: 0), let v = try? r.double() { return v }
            return try get(t, key, location)
        }
        func decode(_ t: Float.Type, forKey key: Key) throws -> Float {
            let location = decoder.locate(key.stringValue)
            if var r = decoder.payload(location, valueTag: 7, keyTag: 0), let v = try? r.float() { return v }
            return try get(t, key, location)
        }
        func decode(_ t: Int.Type, forKey key: Key) throws -> Int { try integer(t, key) }
        func decode(_ t: Int8.Type, forKey key: Key) throws -> Int8 { try integer(t, key) }
        func decode(_ t: Int16.Type, forKey key: Key) throws -> Int16 { try integer(t, key) }
        func decode(_ t: Int32.Type, forKey key: Key) throws -> Int32 { try integer(t, key) }
        func decode(_ t: Int64.Type, forKey key: Key) throws -> Int64 { try integer(t, key) }
        func decode(_ t: UInt.Type, forKey key: Key) throws -> UInt { try get(t, key) }
        func decode(_ t: UInt8.Type, forKey key: Key) throws -> UInt8 { try get(t, key) }
        func decode(_ t: UInt16.Type, forKey key: Key) throws -> UInt16 { try get(t, key) }
        func decode(_ t: UInt32.Type, forKey key: Key) throws -> UInt32 { try get(t, key) }
        func decode(_ t: UInt64.Type, forKey key: Key) throws -> UInt64 { try get(t, key) }

        func decode<T: Decodable>(_ t: T.Type, forKey key: Key) throws -> T {
            let location = decoder.locate(key.stringValue)
            // Foundation's value types read as their `Value`, without the `FieldValue` box
            // (the same `init(tandemValue:)` their `init(tandemField:)` calls).
            if T.self == Date.self, var r = decoder.payload(location, valueTag: 6, keyTag: 0),
               let s = try? r.i64(), let n = try? r.i32()
            {
                return try Date(tandemValue: .timestamp(seconds: s, nanoseconds: n), property: key.stringValue) as! T
            }
            return try get(t, key, location)
        }

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
