// Flexible sync, typed: `db.updateSubscriptions { subs in ... }` edits the subscription set with
// models and Swift values (as `db.objects(_:where:)` takes them), `session.waitForSubscriptions()`
// waits for the server's bootstrap of it, `SyncOptions.flexible(url:token:)` configures a flexible
// sync session, and `session.errors()` with `CompensatingWrite` reports the writes the server's
// rules reverted. The generated calls underneath (`Database.subscriptions()`,
// `activeSubscriptions()`, `updateSubscriptions(changes:)`,
// `SyncSession.waitForSubscriptions(version:timeoutMs:)`) stay available.
//
//     let session = try db.sync(options: .flexible(url: url, token: token), tokenProvider: nil)
//     try db.updateSubscriptions { subs in
//         try subs.add(Task.self, where: "done == $0 AND owner == $1", false, me, name: "open")
//     }
//     try await session.waitForSubscriptions()   // the matching tasks are in the file now

import Foundation

extension Database {
    /// Edits the latest subscription set: `body` records changes on a `SubscriptionsUpdate`,
    /// then they are committed at once as the next version, `.pending` until a flexible sync
    /// session has integrated the server's bootstrap of it (`SyncSession.waitForSubscriptions`).
    /// Returns the new set (the latest set unchanged if the changes change nothing).
    ///
    /// A query is compiled against the local schema when the changes are committed: an unknown
    /// class or property, a syntax error, `SORT`/`DISTINCT`/`LIMIT` or a link argument throws
    /// `TandemError.InvalidArgument` and nothing is committed. If `body` throws, nothing is
    /// committed either.
    ///
    ///     try db.updateSubscriptions { subs in
    ///         try subs.add(Task.self, where: "done == $0", false, name: "open")
    ///         subs.remove(named: "old")
    ///         subs.removeAll(Person.self)
    ///     }
    @discardableResult
    public func updateSubscriptions(_ body: (SubscriptionsUpdate) throws -> Void) throws -> SubscriptionSet {
        let update = SubscriptionsUpdate()
        try body(update)
        return try updateSubscriptions(changes: update.changes)
    }
}

/// The changes of one `Database.updateSubscriptions { }` block, applied in order to the latest
/// set when the block returns.
public final class SubscriptionsUpdate {
    /// The changes recorded so far, in order.
    public private(set) var changes: [SubscriptionChange] = []

    init() {}

    /// Subscribes to the objects of `type` matching `filter` (the query language of
    /// `db.objects(_:where:)`, without `SORT`/`DISTINCT`/`LIMIT`; `$0`, `$1`... are `args`,
    /// Swift values as a model's properties take them). A `name` replaces the subscription of
    /// that name; without one, the same class and query are subscribed once.
    ///
    ///     try subs.add(Task.self, where: "priority > $0 AND owner == $1", 3, "ann", name: "urgent")
    public func add<T: TandemObject>(_ type: T.Type, where filter: String = "TRUEPREDICATE",
                                     _ args: any PersistableScalar..., name: String? = nil) throws
    {
        _ = try ModelInfo.of(T.self)
        let values = try args.map { try $0.tandemValue() }
        changes.append(.add(name: name, className: T.className, query: filter, args: values))
    }

    /// Subscribes to the objects of the class called `className` (untyped: FFI values as args).
    public func add(className: String, where filter: String = "TRUEPREDICATE", args: [Value] = [],
                    name: String? = nil)
    {
        changes.append(.add(name: name, className: className, query: filter, args: args))
    }

    /// Removes the subscription called `name` (nothing if there is none).
    public func remove(named name: String) {
        changes.append(.remove(name: name))
    }

    /// Removes every subscription on `type`'s class.
    public func removeAll<T: TandemObject>(_ type: T.Type) {
        changes.append(.removeClass(className: T.className))
    }

    /// Removes every subscription on the class called `className`.
    public func removeAll(className: String) {
        changes.append(.removeClass(className: className))
    }

    /// Removes every subscription.
    public func removeAll() {
        changes.append(.clear)
    }

    /// Records any change of the FFI.
    public func record(_ change: SubscriptionChange) {
        changes.append(change)
    }
}

extension SubscriptionSet {
    /// The subscription called `name`, if the set has one.
    public func subscription(named name: String) -> Subscription? {
        subscriptions.first { $0.name == name }
    }

    /// The subscriptions on `type`'s class, in the order they were added.
    public func subscriptions<T: TandemObject>(of type: T.Type) -> [Subscription] {
        subscriptions.filter { $0.className == T.className }
    }

    /// The server's message when the set is `.error` (the server could not evaluate it), else nil.
    public var errorMessage: String? {
        if case let .error(message) = state { return message }
        return nil
    }
}

extension SyncSession {
    /// Waits until `set` (nil: the latest set now) is no longer pending and returns it,
    /// `.complete` (its objects are in the file) or `.superseded` (a newer set completed first).
    /// Throws `TandemError.Sync` when the server refused the set (its state is then `.error`,
    /// the active set is unchanged and the session goes on) or the session is not flexible,
    /// `TandemError.Timeout` after `seconds`, `TandemError.Stopped` when the session stops.
    ///
    ///     let set = try db.updateSubscriptions { try $0.add(Task.self, name: "all") }
    ///     try await session.waitForSubscriptions(set, seconds: 30)
    @discardableResult
    public func waitForSubscriptions(_ set: SubscriptionSet? = nil, seconds: Double? = nil) async throws
        -> SubscriptionSet
    {
        try await waitForSubscriptions(version: set?.version, timeoutMs: seconds.map { UInt64(max(0, $0) * 1000) })
    }

    /// The session's errors as an async sequence (an `ErrorListener` underneath; ending the
    /// iteration cancels it). Only errors after the call are delivered.
    ///
    ///     for await error in session.errors() {
    ///         if let write = error.compensatingWrite { print(write.rejected) }
    ///     }
    public func errors() -> AsyncStream<SyncErrorEvent> {
        AsyncStream { continuation in
            let handle = observeErrors(listener: StreamingErrorListener(continuation))
            continuation.onTermination = { _ in handle.cancel() }
        }
    }
}

extension SyncOptions {
    /// Options for a flexible sync session: `path` is the server's flexible sync file (`/flx`)
    /// and `flexible` is set. The token must allow that path; its `sub` is the user the
    /// server's `--flx-rules` know as `%%user.id`. Flexible sync does no client reset (a server
    /// error calling for one stops the session), so `clientReset` is `.manual`.
    ///
    ///     let session = try db.sync(options: .flexible(url: "wss://sync.example.com/", token: token),
    ///                               tokenProvider: nil)
    public static func flexible(url: String, token: String, path: String = "/flx", caFile: String? = nil,
                                allowInsecure: Bool = false, connectTimeoutMs: UInt64 = 10_000,
                                handshakeTimeoutMs: UInt64 = 10_000) -> SyncOptions
    {
        SyncOptions(url: url, path: path, token: token, caFile: caFile, allowInsecure: allowInsecure,
                    clientReset: .manual, connectTimeoutMs: connectTimeoutMs,
                    handshakeTimeoutMs: handshakeTimeoutMs, flexible: true)
    }
}

/// One error of a sync session (what an `ErrorListener` is told).
public struct SyncErrorEvent: Equatable, Sendable {
    /// The server's error code (231: a compensating write; 226: a subscription set the server
    /// cannot evaluate), or 0 for a local or network error.
    public let code: UInt64
    /// What happened (for a server's JSON error, its JSON).
    public let message: String
    /// Whether sync goes on by itself.
    public let willRetry: Bool

    public init(code: UInt64, message: String, willRetry: Bool) {
        self.code = code
        self.message = message
        self.willRetry = willRetry
    }

    /// What the server reverted, when this is a compensating write (code 231).
    public var compensatingWrite: CompensatingWrite? { CompensatingWrite(code: code, message: message) }
}

/// A compensating write: the server's flexible sync rules (`--flx-rules`) refused writes of this
/// session, and the server reverted them (a created object is erased, a changed one gets its
/// earlier copy back). The revert arrives as an ordinary download, so results and object
/// listeners see the rejected write disappear; the session goes on. Read from the error event
/// (code 231) whose message holds the server's JSON.
public struct CompensatingWrite: Equatable, Sendable {
    /// One reverted object.
    public struct RejectedWrite: Equatable, Sendable {
        /// Its class.
        public let className: String
        /// Its primary key (nil if the server sent none or it cannot be read).
        public let key: Key?
        /// Why the server refused it.
        public let reason: String
    }

    /// The server's summary (e.g. "a write to Task was reverted: ...").
    public let message: String
    /// The reverted objects.
    public let rejected: [RejectedWrite]
    /// The client version of the refused upload, if the server said.
    public let rejectedClientVersion: UInt64?
    /// The server version of the changeset that reverts it, if the server said.
    public let serverVersion: UInt64?

    /// Reads a compensating write from an error event: nil unless `code` is 231 and `message`
    /// holds the server's JSON (`rejectedUpdates`: `table`, `pk`, `reason`).
    public init?(code: UInt64, message: String) {
        guard code == 231, let start = message.firstIndex(of: "{"),
              let json = try? JSONSerialization.jsonObject(with: Data(message[start...].utf8)),
              let body = json as? [String: Any]
        else { return nil }
        self.message = body["message"] as? String ?? ""
        rejected = (body["rejectedUpdates"] as? [[String: Any]] ?? []).map { update in
            RejectedWrite(className: update["table"] as? String ?? "",
                          key: (update["pk"] as? String).flatMap(CompensatingWrite.key(base64:)),
                          reason: update["reason"] as? String ?? "")
        }
        rejectedClientVersion = (body["rejectedClientVersion"] as? NSNumber)?.uint64Value
        serverVersion = (body["compensatingWriteServerVersion"] as? NSNumber)?.uint64Value
    }

    /// Whether the object of `type` with `key` is among the rejected ones.
    public func rejects<T: TandemObject>(_ type: T.Type, key: some PersistableScalar) -> Bool {
        guard let key = try? Transaction.key(key, T.self) else { return false }
        return rejected.contains { $0.className == T.className && $0.key == key }
    }

    /// A primary key as `rejectedUpdates[].pk` carries it: base64 of the changeset format's
    /// payload type (a varint), then the value (a varint integer; a string's length and bytes;
    /// an ObjectId's 12 or a UUID's 16 bytes).
    static func key(base64: String) -> Key? {
        guard let data = Data(base64Encoded: base64) else { return nil }
        var reader = VarintReader(bytes: [UInt8](data))
        guard let type = reader.int() else { return nil }
        let key: Key
        switch type {
        case 0: key = .null
        case 1:
            guard let v = reader.int() else { return nil }
            key = .int(value: v)
        case 3:
            guard let n = reader.int(), n >= 0, let bytes = reader.take(Int(n)),
                  let s = String(bytes: bytes, encoding: .utf8) else { return nil }
            key = .string(value: s)
        case 10:
            guard let bytes = reader.take(12) else { return nil }
            key = .objectId(bytes: Data(bytes))
        case 11:
            guard let bytes = reader.take(16) else { return nil }
            key = .uuid(bytes: Data(bytes))
        default: return nil
        }
        return reader.atEnd ? key : nil
    }
}

/// Realm's sign-bit varints (src/changeset/varint.rs): 7 bits per byte with 0x80 set, then a
/// final byte of 6 bits with 0x40 for a negative value (written as -(v + 1)).
private struct VarintReader {
    let bytes: [UInt8]
    var at = 0

    var atEnd: Bool { at == bytes.count }

    mutating func int() -> Int64? {
        var magnitude: UInt64 = 0
        var shift: UInt64 = 0
        while at < bytes.count {
            let byte = bytes[at]
            at += 1
            if byte & 0x80 != 0 {
                guard shift <= 56 else { return nil }
                magnitude |= UInt64(byte & 0x7F) << shift
                shift += 7
            } else {
                let bits = UInt64(byte & 0x3F)
                guard shift <= 63, (bits << shift) >> shift == bits else { return nil }
                magnitude |= bits << shift
                guard magnitude <= UInt64(Int64.max) else { return nil }
                return byte & 0x40 != 0 ? -Int64(magnitude) - 1 : Int64(magnitude)
            }
        }
        return nil
    }

    mutating func take(_ n: Int) -> [UInt8]? {
        guard n <= bytes.count - at else { return nil }
        defer { at += n }
        return Array(bytes[at..<at + n])
    }
}

/// Forwards a session's errors to an `AsyncStream` continuation.
private final class StreamingErrorListener: ErrorListener, @unchecked Sendable {
    let continuation: AsyncStream<SyncErrorEvent>.Continuation
    init(_ continuation: AsyncStream<SyncErrorEvent>.Continuation) { self.continuation = continuation }
    func onError(code: UInt64, message: String, willRetry: Bool) throws {
        continuation.yield(SyncErrorEvent(code: code, message: message, willRetry: willRetry))
    }
}
