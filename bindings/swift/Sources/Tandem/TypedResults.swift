// Typed reads: `db.object(Task.self, key:)`, `db.objects(Task.self, where:)` (live query results
// as `TypedResults<Task>`), and `AsyncStream`s of typed results and typed object changes.

import Foundation

extension Database {
    /// The object of `type` with `key`, or `nil`.
    public func object<T: TandemObject>(_ type: T.Type, key: some PersistableScalar) throws -> T? {
        try object(T.self, keyValue: try Transaction.key(key, T.self))
    }

    /// The target of `link`, or `nil` if it no longer exists.
    public func object<T: TandemObject>(_ link: Link<T>) throws -> T? {
        try object(T.self, keyValue: link.key)
    }

    /// The objects of `type` matching `filter` (Realm's query language, e.g.
    /// `"done == false SORT(title ASC)"`; `$0`, `$1`... are `args`). A bad filter throws
    /// `TandemError.InvalidArgument` here, not later.
    ///
    ///     let open = try db.objects(Task.self, where: "done == false AND title CONTAINS $0", "milk")
    public func objects<T: TandemObject>(_ type: T.Type, where filter: String = "TRUEPREDICATE",
                                         _ args: any PersistableScalar...) throws -> TypedResults<T>
    {
        _ = try ModelInfo.of(T.self)
        let values = try args.map { try $0.tandemValue() }
        return TypedResults(try query(className: T.className, filter: filter, args: values), db: self)
    }

    /// The changes of one object as an async sequence of `TypedObjectChange` (the object as read
    /// when the change is delivered). Ending the iteration cancels the listener; an object that
    /// cannot be read as `T` ends it with that error.
    public func changes<T: TandemObject>(of type: T.Type, key: some PersistableScalar, keyPaths: [String] = [])
        throws -> AsyncThrowingStream<TypedObjectChange<T>, Error>
    {
        let key = try Transaction.key(key, T.self)
        let untyped = try changes(className: T.className, key: key, keyPaths: keyPaths)
        return AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    for await change in untyped {
                        switch change {
                        case .deleted:
                            continuation.yield(.deleted)
                        case let .modified(properties):
                            // Read after the change: nil only if it was deleted since, and then a
                            // `.deleted` follows.
                            if let object = try self.object(T.self, keyValue: key) {
                                continuation.yield(.modified(object, properties: properties))
                            }
                        }
                    }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    func object<T: TandemObject>(_ type: T.Type, keyValue key: Key) throws -> T? {
        try object(className: T.className, key: key).map { try FieldDecoder.decode(T.self, key: key, from: $0) }
    }
}

/// A change to one observed object.
public enum TypedObjectChange<T: TandemObject> {
    /// It changed: the object now, and the names of the properties that changed (sorted; a
    /// change through a link names the link property).
    case modified(T, properties: [String])
    /// It was deleted.
    case deleted
}

/// A change to live query results: Realm-style indices and the typed objects after it.
public struct TypedResultsChange<T: TandemObject> {
    /// The results after the change, in order (read when the change is delivered).
    public let objects: [T]
    /// Indices in the old results of objects no longer there.
    public let deletions: [Int]
    /// Indices in the new results of objects new there.
    public let insertions: [Int]
    /// Indices in the new results of objects whose content changed.
    public let modifications: [Int]
    /// This is the results the stream starts from (Realm's initial notification), every index
    /// an insertion, not a change.
    public let initial: Bool
}

/// Live typed results of a query: each read sees the current database.
public final class TypedResults<T: TandemObject>: @unchecked Sendable {
    /// The untyped results underneath.
    public let raw: Results
    let db: Database

    init(_ raw: Results, db: Database) {
        self.raw = raw
        self.db = db
    }

    /// How many objects match now.
    public func count() throws -> Int { Int(try raw.count()) }

    /// The matching objects now, in order: one crossing (`Results.rows(properties:)`, each
    /// object's key and values read in one read transaction), decoded straight from the returned
    /// buffer (`EntryReader`: the same objects or errors as decoding `raw.entries()`, without
    /// lifting each object into Swift values first).
    public func snapshot() throws -> [T] {
        try EntryReader.decode(T.self, raw)
    }

    /// The first matching object now, if any.
    public func first() throws -> T? {
        guard let key = try raw.keys().first else { return nil }
        return try db.object(T.self, keyValue: key)
    }

    /// The starting results (`initial`), then each change, as `TypedResultsChange`s (see
    /// `Results.changes`: applied in order, the indices never miss or double a commit;
    /// `objects` are read when the change is delivered). Ending the iteration cancels the
    /// listener; objects that cannot be read as `T` end it with that error.
    public func changes(keyPaths: [String] = []) -> AsyncThrowingStream<TypedResultsChange<T>, Error> {
        let untyped = raw.changes(keyPaths: keyPaths)
        return AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    var initial = true
                    for await change in untyped {
                        continuation.yield(TypedResultsChange(
                            objects: try self.snapshot(), deletions: change.deletions.map { Int($0) },
                            insertions: change.insertions.map { Int($0) },
                            modifications: change.modifications.map { Int($0) }, initial: initial))
                        initial = false
                    }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    /// The results now, then again after every change: live results as an async sequence.
    /// Objects that cannot be read as `T` end it with that error.
    ///
    ///     for try await tasks in try db.objects(Task.self, where: "done == false").values() { ... }
    public func values(keyPaths: [String] = []) -> AsyncThrowingStream<[T], Error> {
        let changes = changes(keyPaths: keyPaths)
        return AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    // The first change is the starting results.
                    for try await change in changes { continuation.yield(change.objects) }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    /// Waits until `predicate` holds for the results (checked now and after each change) and
    /// returns them; throws `TandemModelError.timeout` after `seconds`.
    ///
    ///     try await db.objects(Task.self).wait(seconds: 10) { $0.count == 20 }
    @discardableResult
    public func wait(seconds: Double, until predicate: @escaping @Sendable ([T]) -> Bool) async throws -> [T] {
        try await withThrowingTaskGroup(of: [T]?.self) { group in
            group.addTask {
                for try await objects in self.values() where predicate(objects) { return objects }
                return nil
            }
            group.addTask {
                try await Task.sleep(nanoseconds: UInt64(seconds * 1e9))
                return nil
            }
            let first = try await group.next() ?? nil
            group.cancelAll()
            guard let objects = first else {
                throw TandemModelError.timeout("\(T.className) results did not match within \(seconds) s")
            }
            return objects
        }
    }
}
