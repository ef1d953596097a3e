// ObjectId: the 12-byte identifier of MongoDB and Realm (4-byte big-endian seconds since the
// Unix epoch, 5 random bytes fixed per process, a 3-byte big-endian counter).

import Foundation

/// A 12-byte object id, as Realm's `ObjectId` (BSON ObjectId layout: seconds since the epoch in
/// the first 4 bytes, big-endian). `description` and `Codable` use its 24 lowercase hex digits.
public struct ObjectId: Hashable, Comparable, Sendable, CustomStringConvertible, Codable {
    /// The 12 bytes.
    public let bytes: Data

    /// An id from exactly 12 bytes; `nil` for any other length.
    public init?(bytes: Data) {
        guard bytes.count == 12 else { return nil }
        self.bytes = bytes
    }

    /// An id from 24 hex digits (either case); `nil` if `hex` is anything else.
    public init?(_ hex: String) {
        let digits = Array(hex.utf8)
        guard digits.count == 24 else { return nil }
        var out = Data(capacity: 12)
        for i in stride(from: 0, to: 24, by: 2) {
            guard let hi = Self.nibble(digits[i]), let lo = Self.nibble(digits[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
        }
        bytes = out
    }

    /// A new id: the current time, this process's random bytes and the next counter value.
    public static func generate(date: Date = Date()) -> ObjectId {
        let seconds = UInt32(truncatingIfNeeded: Int64(date.timeIntervalSince1970.rounded(.down)))
        let count = counter.next()
        var out = Data(capacity: 12)
        out.append(contentsOf: (0..<4).reversed().map { UInt8(truncatingIfNeeded: seconds >> ($0 * 8)) })
        out.append(contentsOf: processBytes)
        out.append(contentsOf: (0..<3).reversed().map { UInt8(truncatingIfNeeded: count >> ($0 * 8)) })
        return ObjectId(bytes: out)!
    }

    /// The time in the first 4 bytes (whole seconds).
    public var timestamp: Date {
        let seconds = bytes.prefix(4).reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        return Date(timeIntervalSince1970: TimeInterval(seconds))
    }

    public var description: String { bytes.map { String(format: "%02x", $0) }.joined() }

    public static func < (a: ObjectId, b: ObjectId) -> Bool { a.bytes.lexicographicallyPrecedes(b.bytes) }

    public init(from decoder: Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let id = ObjectId(text) else {
            throw DecodingError.dataCorrupted(.init(
                codingPath: decoder.codingPath, debugDescription: "not 24 hex digits: \(text)"))
        }
        self = id
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    private static let processBytes: [UInt8] = (0..<5).map { _ in UInt8.random(in: 0...255) }
    private static let counter = Counter(UInt32.random(in: 0..<(1 << 24)))

    private final class Counter: @unchecked Sendable {
        private let lock = NSLock()
        private var value: UInt32
        init(_ start: UInt32) { value = start }
        func next() -> UInt32 {
            lock.lock()
            defer { lock.unlock() }
            value = (value &+ 1) & 0xFF_FFFF
            return value
        }
    }
}
