// Transaction: what `Database.write { }` hands its block. Typed writes of `TandemObject` models
// (add, upsert, modify, delete, property and collection edits) beside the untyped calls of the
// FFI's `WriteTransaction` (same names and labels, forwarded), all recorded into one transaction.

import Foundation

extension Database {
    /// Opens (or creates) the database at `path` with the classes of these model types and of the
    /// embedded types they hold (`TandemEmbeddedObject`, found through their properties, each
    /// once), plus any untyped `classes`, and with `options` when given (durability, writer
    /// timeout, recovery window, `exclusiveToProcess`; the defaults otherwise). Throws
    /// `TandemModelError` for a model whose schema cannot be derived, `TandemError.Schema` for a
    /// schema the database refuses and `TandemError.Timeout` for a file another process holds.
    ///
    ///     let db = try Database.open(path: "todo.sqlite", models: [Task.self, Person.self])
    public static func open(
        path: String, models: [any TandemObject.Type], classes: [ClassSpec] = [], options: OpenOptions? = nil
    ) throws -> Database {
        _ = closeCallbacksAtExit
        let specs = try ModelInfo.classSpecs(of: models) + classes
        if let options {
            return try Database.openWithOptions(path: path, classes: specs, options: options)
        }
        return try Database.open(path: path, classes: specs)
    }

    /// Runs `body` in a write transaction: committed when `body` returns (the new version is
    /// returned), rolled back if it throws (the error is rethrown). A failing commit writes
    /// nothing and throws `TandemError`.
    ///
    ///     try db.write { try $0.add(Task(title: "milk")) }
    ///
    /// Writes do not nest, as in Realm: `write` called on this database inside `body`, on the
    /// same thread, throws `TandemModelError.nestedWrite` ("a write transaction is already open
    /// on this thread: nested writes are not supported") and records nothing; if that error
    /// leaves `body`, the outer write rolls back too. (A nested write would otherwise commit on
    /// its own, whatever became of the outer one.) The check is per `Database` object and per
    /// thread: `body` is synchronous, so it runs on one thread from start to end; a write from
    /// another thread is a separate transaction, and the one-crossing `write(ops:)` and
    /// `writeTransaction()` are not checked. The `Transaction` is only usable inside `body`:
    /// afterwards its methods throw `TandemModelError.transactionEnded`.
    @discardableResult
    public func write(_ body: (Transaction) throws -> Void) throws -> UInt64? {
        let writes = OpenWrites.onThisThread
        if writes.contains(self) { throw TandemModelError.nestedWrite }
        let tx = Transaction(db: self, raw: writeTransaction())
        do {
            try writes.running(self) { try body(tx) }
            tx.end()
            try tx.flush()
        } catch {
            tx.end()
            tx.transaction.rollback()
            throw error
        }
        return try tx.transaction.commit()
    }
}

/// The databases whose `write` block is running on one thread (kept in its `threadDictionary`):
/// what refuses a nested `Database.write`. A thread-local is exact because a `write` block is a
/// synchronous closure: it cannot suspend, so it starts and ends on one thread, and nothing
/// else runs on that thread meanwhile except what the block calls.
final class OpenWrites {
    private static let key = "dev.tandem.openWrites"

    /// The running blocks' databases, innermost last (writes to different databases may nest).
    private var databases: [ObjectIdentifier] = []

    /// The calling thread's.
    static var onThisThread: OpenWrites {
        let dictionary = Thread.current.threadDictionary
        if let writes = dictionary[key] as? OpenWrites { return writes }
        let writes = OpenWrites()
        dictionary[key] = writes
        return writes
    }

    /// Whether a `write` block of `db` is running on this thread.
    func contains(_ db: Database) -> Bool { databases.contains(ObjectIdentifier(db)) }

    /// Runs `body` marked as a `write` block of `db`.
    func running<R>(_ db: Database, _ body: () throws -> R) rethrows -> R {
        databases.append(ObjectIdentifier(db))
        defer { databases.removeLast() }  // blocks end in reverse order of their start
        return try body()
    }
}

/// Registers, once (on the first typed `Database.open`), an `atexit` handler that runs
/// `closeCallbacks` (2 s at most): from then on no library thread calls into Swift (a listener,
/// the log listener, a token provider) while the process exits, and calls already in Swift are
/// waited for. An app using only the untyped API calls `closeCallbacks` itself.
let closeCallbacksAtExit: Void = {
    atexit { _ = closeCallbacks(timeoutMs: 2_000) }
}()

/// A write transaction being recorded (see `Database.write`). Nothing reaches the database until
/// the block returns; then everything is applied at once or, on any error, nothing. Operations
/// are collected as one `[WriteOp]` in Swift and cross into Rust in one call when the block
/// returns (or when `raw` is first used), then the commit is one more: a transaction of any
/// size costs two FFI crossings, not one per operation. Consecutive `add`s of one model type
/// without collections are gathered into one `WriteOp.createRows` (the values row after row,
/// no map or property names per object).
///
/// `upsert` replaces each collection (clear, then insert) and each embedded object (every field
/// written: a nil optional as null, its collections replaced; a nil embedded object removes the
/// stored one; a list or dictionary of embedded objects cleared, then filled). Embedded objects
/// are written through the FFI's paths (`createEmbedded`, `listInsertEmbedded`, `set` and the
/// collection operations with `path`). `modify` reads the committed object,
/// not this transaction's earlier edits, and writes only what changed (a changed list as index
/// erases and inserts computed from that read, a set or dictionary as its differences, an
/// embedded object field by field), so `modify` of an object already written in the same
/// transaction throws `TandemModelError.notWritable` instead of guessing.
///
/// A `Transaction` lives as long as its block: once the block has returned (or thrown), every
/// method that records an operation, and `raw`, throws `TandemModelError.transactionEnded`
/// instead of recording into a transaction that is never committed.
public final class Transaction {
    /// The FFI transaction the recorded operations go to.
    let transaction: WriteTransaction
    /// Operations recorded here and not yet handed to `transaction`, in order.
    private var ops: [WriteOp] = []
    /// The `add`s after the last of `ops`, when they are of one model type (`rowsInfo`) and
    /// have no collections: gathered here, then recorded as one `WriteOp.createRows`.
    private var rowsInfo: ModelInfo?
    private var rowsKeys: [Key] = []
    private var rowsValues: [Value] = []
    /// The untyped transaction underneath. Reading it first hands it every operation recorded
    /// so far, so operations recorded on it directly come after them, in the order written.
    public var raw: WriteTransaction {
        get throws {
            try checkActive()
            try flush()
            return transaction
        }
    }
    /// The database it writes to.
    public let db: Database
    /// Objects this transaction has written: (class, key), in the order written. Only `modify`
    /// asks about them, so they are hashed into `touchedSet` when it does, not on every write.
    private var touched: [ObjectRef] = []
    private var touchedSet: Set<ObjectRef> = []
    private var touchedHashed = 0

    private func touch(_ ref: ObjectRef) { touched.append(ref) }

    private func isTouched(_ ref: ObjectRef) -> Bool {
        while touchedHashed < touched.count {
            touchedSet.insert(touched[touchedHashed])
            touchedHashed += 1
        }
        return touchedSet.contains(ref)
    }

    struct ObjectRef: Hashable {
        let className: String
        let key: Key
    }

    init(db: Database, raw: WriteTransaction) {
        self.db = db
        self.transaction = raw
    }

    /// Set when the block has returned or thrown: nothing can be recorded any more.
    private var ended = false

    /// Ends the block's use of this transaction (`Database.write` then flushes and commits it).
    func end() { ended = true }

    /// Throws `TandemModelError.transactionEnded` once the block is over.
    private func checkActive() throws {
        if ended { throw TandemModelError.transactionEnded }
    }

    /// Hands the recorded operations to the FFI transaction in one crossing.
    func flush() throws {
        closeRows()
        guard !ops.isEmpty else { return }
        let batch = ops
        ops.removeAll(keepingCapacity: true)
        try transaction.recordAll(ops: batch)
    }

    /// Records one operation (applied, in order, when the transaction commits). Throws
    /// `TandemModelError.transactionEnded` after the block.
    public func record(_ op: WriteOp) throws {
        try checkActive()
        append(op)
    }

    /// Records one operation (the typed methods' path: they check `checkActive` first).
    private func append(_ op: WriteOp) {
        closeRows()
        ops.append(op)
    }

    /// The operations recorded so far and not yet handed to the FFI transaction, in order (the
    /// gathered `add`s closed into their `createRows` first).
    var pendingOps: [WriteOp] {
        closeRows()
        return ops
    }

    /// Records the gathered `add`s (if any) as one `createRows`, so what follows comes after.
    private func closeRows() {
        guard let info = rowsInfo else { return }
        ops.append(.createRows(className: info.spec.name, properties: info.rowProperties, keys: rowsKeys,
                               values: rowsValues))
        rowsInfo = nil
        rowsKeys.removeAll()
        rowsValues.removeAll()
    }

    /// Gathers the creation of the object with `key` and `row` (the values of
    /// `info.rowProperties`) of the model type `info` describes.
    private func addRow(_ info: ModelInfo, _ key: Key, _ row: [Value]) {
        if rowsInfo !== info {
            closeRows()
            rowsInfo = info
        }
        rowsKeys.append(key)
        rowsValues.append(contentsOf: row)
    }

    // MARK: Typed objects

    /// Creates `object` (its primary key must be new: a duplicate fails the commit), with its
    /// collections and embedded objects.
    public func add<T: TandemObject>(_ object: T) throws {
        try checkActive()
        let info = try ModelInfo.of(T.self)
        let className = info.spec.name  // T.className, derived once (it formats the type's name)
        if let (keyValue, row, collections) = try WriteEncoder.encode(object, info: info) {
            let key = try Tandem.key(of: keyValue, className: className)
            if collections.values.allSatisfy(\.isEmpty) {  // nothing for replaceCollections
                addRow(info, key, row)
            } else {
                rec.create(className: className, key: key, values: Self.named(row, info))
                try replaceCollections(className, key, old: nil, new: collections)
            }
            touch(ObjectRef(className: className, key: key))
            return
        }
        let (_, key, fields) = try Self.encode(object)
        rec.create(className: className, key: key, values: Self.singles(fields, info, T.primaryKey))
        try replaceCollections(className, key, old: nil, new: fields)
        touch(ObjectRef(className: className, key: key))
    }

    /// Creates `object`, or overwrites every property of the existing object with its key (its
    /// collections and embedded objects replaced whole).
    public func upsert<T: TandemObject>(_ object: T) throws {
        try checkActive()
        let info = try ModelInfo.of(T.self)
        let className = info.spec.name
        if let (keyValue, row, collections) = try WriteEncoder.encode(object, info: info) {
            let key = try Tandem.key(of: keyValue, className: className)
            rec.upsert(className: className, key: key, values: Self.named(row, info))
            try replaceCollections(className, key, old: nil, new: Self.withEmbedded(collections, info), clear: true)
            touch(ObjectRef(className: className, key: key))
            return
        }
        let (_, key, fields) = try Self.encode(object)
        rec.upsert(className: className, key: key, values: Self.singles(fields, info, T.primaryKey))
        try replaceCollections(className, key, old: nil, new: Self.withEmbedded(fields, info), clear: true)
        touch(ObjectRef(className: className, key: key))
    }

    /// Reads the committed object with `key`, lets `body` change it, and writes the properties
    /// that changed. Returns `false` (writing nothing) if there is no such object.
    @discardableResult
    public func modify<T: TandemObject>(_ type: T.Type, key: some PersistableScalar, _ body: (inout T) throws -> Void)
        throws -> Bool
    {
        try checkActive()
        let key = try Self.key(key, T.self)
        guard let old = try db.object(className: T.className, key: key) else { return false }
        if isTouched(ObjectRef(className: T.className, key: key)) {
            throw TandemModelError.notWritable(
                type: T.className, reason: "modify after another write of the same object in this transaction")
        }
        var object = try FieldDecoder.decode(T.self, key: key, from: old)
        // The embedded objects as read, encoded as the changed ones will be (so equal objects
        // compare equal): taken before `body` runs, since a model may be a class.
        let info = try ModelInfo.of(T.self)
        let before = info.embedded.isEmpty ? [:] : try FieldEncoder.encode(object)
        try body(&object)
        let (_, newKey, fields) = try Self.encode(object)
        guard newKey == key else {
            throw TandemModelError.invalidPrimaryKey(className: T.className, message: "modify cannot change the key")
        }
        for (name, value) in Self.singles(fields, info, T.primaryKey)
        where Self.asInput(old[name]) != .single(value) {
            rec.set(className: T.className, key: key, property: name, value: value)
        }
        try replaceCollections(T.className, key, old: old, new: fields)
        for (name, shape) in info.embedded.sorted(by: { $0.key < $1.key }) {
            writeChanges(T.className, key, name, [], old: before[name] ?? shape.empty, new: fields[name] ?? shape.empty)
        }
        touch(ObjectRef(className: T.className, key: key))
        return true
    }

    /// Deletes `object` (by its primary key); deleting a missing object fails the commit.
    public func delete<T: TandemObject>(_ object: T) throws {
        try checkActive()
        rec.erase(className: T.className, key: try object.primaryKeyValue())
    }

    /// Deletes the object of `type` with `key`.
    public func delete<T: TandemObject>(_ type: T.Type, key: some PersistableScalar) throws {
        try checkActive()
        rec.erase(className: T.className, key: try Self.key(key, T.self))
    }

    // MARK: Typed property and collection edits (property names are the models' coding keys)

    /// Sets one property (not a collection) of the object of `type` with `key`.
    public func set<T: TandemObject, V: PersistableScalar>(
        _ type: T.Type, key: some PersistableScalar, _ property: String, to value: V
    ) throws {
        try checkActive()
        try Self.check(T.self, property, V.self, .single)
        rec.set(className: T.className, key: try Self.key(key, T.self), property: property,
                    value: try value.tandemValue())
    }

    /// Adds `amount` to an integer property (merges with concurrent increments, Realm's `add`).
    public func increment<T: TandemObject>(_ type: T.Type, key: some PersistableScalar, _ property: String,
                                           by amount: Int64) throws
    {
        try checkActive()
        try Self.check(T.self, property, Int64.self, .single)
        rec.add(className: T.className, key: try Self.key(key, T.self), property: property, amount: amount)
    }

    /// Inserts `value` at `index` (0...count) of a list property.
    public func insert<T: TandemObject, V: PersistableScalar>(
        _ value: V, at index: Int, in type: T.Type, key: some PersistableScalar, _ property: String
    ) throws {
        try checkActive()
        let index = try Self.index(index)
        try edit(T.self, key, property, value, .list) {
            rec.listInsert(className: T.className, key: $0, property: property, index: index, value: $1)
        }
    }

    /// Removes the element at `index` of a list property.
    public func remove<T: TandemObject>(at index: Int, in type: T.Type, key: some PersistableScalar,
                                        _ property: String) throws
    {
        try checkActive()
        guard let shape = try ModelInfo.of(T.self).shapes[property], shape.collection == .list else {
            throw TandemModelError.unsupportedType(property: property, type: "not a list of \(T.className)")
        }
        let key = try Self.key(key, T.self)
        rec.listErase(className: T.className, key: key, property: property, index: try Self.index(index))
        touch(ObjectRef(className: T.className, key: key))
    }

    /// Replaces the element at `index` of a list property with `value` (Realm's list set).
    public func replace<T: TandemObject, V: PersistableScalar>(
        at index: Int, with value: V, in type: T.Type, key: some PersistableScalar, _ property: String
    ) throws {
        try checkActive()
        let index = try Self.index(index)
        try edit(T.self, key, property, value, .list) {
            rec.listSet(className: T.className, key: $0, property: property, index: index, value: $1)
        }
    }

    /// Moves the element at `from` of a list property so that it ends up at `to` (Realm's
    /// list move; both positions are in the list as it is before the move).
    public func move<T: TandemObject>(from: Int, to: Int, in type: T.Type, key: some PersistableScalar,
                                      _ property: String) throws
    {
        try checkActive()
        guard let shape = try ModelInfo.of(T.self).shapes[property], shape.collection == .list else {
            throw TandemModelError.unsupportedType(property: property, type: "not a list of \(T.className)")
        }
        let key = try Self.key(key, T.self)
        rec.listMove(className: T.className, key: key, property: property, from: try Self.index(from),
                     to: try Self.index(to))
        touch(ObjectRef(className: T.className, key: key))
    }

    /// Empties a list, set or dictionary property.
    public func removeAll<T: TandemObject>(in type: T.Type, key: some PersistableScalar, _ property: String) throws {
        try checkActive()
        let key = try Self.key(key, T.self)
        switch try ModelInfo.of(T.self).shapes[property]?.collection {
        case .list?: rec.listClear(className: T.className, key: key, property: property)
        case .set?: rec.setClear(className: T.className, key: key, property: property)
        case .dictionary?: rec.dictClear(className: T.className, key: key, property: property)
        default:
            throw TandemModelError.unsupportedType(property: property, type: "not a collection of \(T.className)")
        }
        touch(ObjectRef(className: T.className, key: key))
    }

    /// Adds `value` to a set property (no effect if present).
    public func insert<T: TandemObject, V: PersistableScalar>(
        _ value: V, intoSet type: T.Type, key: some PersistableScalar, _ property: String
    ) throws {
        try checkActive()
        try edit(T.self, key, property, value, .set) {
            rec.setInsert(className: T.className, key: $0, property: property, value: $1)
        }
    }

    /// Removes `value` from a set property.
    public func remove<T: TandemObject, V: PersistableScalar>(
        _ value: V, fromSet type: T.Type, key: some PersistableScalar, _ property: String
    ) throws {
        try checkActive()
        try edit(T.self, key, property, value, .set) {
            rec.setErase(className: T.className, key: $0, property: property, value: $1)
        }
    }

    /// Sets `entry` of a dictionary property to `value`.
    public func set<T: TandemObject, V: PersistableScalar>(
        _ entry: String, to value: V, in type: T.Type, key: some PersistableScalar, _ property: String
    ) throws {
        try checkActive()
        try edit(T.self, key, property, value, .dictionary) {
            rec.dictSet(className: T.className, key: $0, property: property, entry: entry, value: $1)
        }
    }

    /// Checks `value` against the collection `property` of `T`, then records `op` with the key
    /// and the value as the FFI takes them.
    private func edit<T: TandemObject, V: PersistableScalar>(
        _ type: T.Type, _ key: some PersistableScalar, _ property: String, _ value: V, _ collection: Collection,
        _ op: (Key, Value) throws -> Void
    ) throws {
        try Self.check(T.self, property, V.self, collection)
        let key = try Self.key(key, T.self)
        try op(key, try value.tandemValue())
        touch(ObjectRef(className: T.className, key: key))
    }

    /// Removes `entry` from a dictionary property.
    public func remove<T: TandemObject>(entry: String, in type: T.Type, key: some PersistableScalar,
                                        _ property: String) throws
    {
        try checkActive()
        guard let shape = try ModelInfo.of(T.self).shapes[property], shape.collection == .dictionary else {
            throw TandemModelError.unsupportedType(property: property, type: "not a dictionary of \(T.className)")
        }
        let key = try Self.key(key, T.self)
        rec.dictErase(className: T.className, key: key, property: property, entry: entry)
        touch(ObjectRef(className: T.className, key: key))
    }

    // MARK: Untyped (the FFI's WriteTransaction calls, forwarded)

    public func create(className: String, key: Key, values: [String: Value]) throws {
        try checkActive()
        rec.create(className: className, key: key, values: values)
    }
    public func upsert(className: String, key: Key, values: [String: Value]) throws {
        try checkActive()
        rec.upsert(className: className, key: key, values: values)
    }
    public func set(className: String, key: Key, property: String, value: Value) throws {
        try checkActive()
        rec.set(className: className, key: key, property: property, value: value)
    }
    public func erase(className: String, key: Key) throws {
        try checkActive()
        rec.erase(className: className, key: key)
    }
    public func add(className: String, key: Key, property: String, amount: Int64) throws {
        try checkActive()
        rec.add(className: className, key: key, property: property, amount: amount)
    }
    public func listInsert(className: String, key: Key, property: String, index: UInt32, value: Value) throws {
        try checkActive()
        touch(ObjectRef(className: className, key: key))
        rec.listInsert(className: className, key: key, property: property, index: index, value: value)
    }
    public func listErase(className: String, key: Key, property: String, index: UInt32) throws {
        try checkActive()
        touch(ObjectRef(className: className, key: key))
        rec.listErase(className: className, key: key, property: property, index: index)
    }
    public func setInsert(className: String, key: Key, property: String, value: Value) throws {
        try checkActive()
        touch(ObjectRef(className: className, key: key))
        rec.setInsert(className: className, key: key, property: property, value: value)
    }
    public func setErase(className: String, key: Key, property: String, value: Value) throws {
        try checkActive()
        touch(ObjectRef(className: className, key: key))
        rec.setErase(className: className, key: key, property: property, value: value)
    }
    public func dictSet(className: String, key: Key, property: String, entry: String, value: Value) throws {
        try checkActive()
        touch(ObjectRef(className: className, key: key))
        rec.dictSet(className: className, key: key, property: property, entry: entry, value: value)
    }
    public func dictErase(className: String, key: Key, property: String, entry: String) throws {
        try checkActive()
        touch(ObjectRef(className: className, key: key))
        rec.dictErase(className: className, key: key, property: property, entry: entry)
    }

    // MARK: Recording (one `WriteOp` each, named as the FFI's `WriteTransaction` methods)

    private var rec: Recorder { Recorder(tx: self) }

    struct Recorder {
        let tx: Transaction
        func create(className: String, key: Key, values: [String: Value]) {
            tx.append(.create(className: className, key: key, values: values))
        }
        func upsert(className: String, key: Key, values: [String: Value]) {
            tx.append(.upsert(className: className, key: key, values: values))
        }
        func set(className: String, key: Key, property: String, value: Value, path: [PathStep] = []) {
            tx.append(.set(className: className, key: key, property: property, value: value, path: path))
        }
        func erase(className: String, key: Key) {
            tx.append(.erase(className: className, key: key))
        }
        func add(className: String, key: Key, property: String, amount: Int64) {
            tx.append(.add(className: className, key: key, property: property, amount: amount))
        }
        func createEmbedded(className: String, key: Key, property: String, path: [PathStep] = []) {
            tx.append(.createEmbedded(className: className, key: key, property: property, path: path))
        }
        func listInsert(className: String, key: Key, property: String, index: UInt32, value: Value,
                        path: [PathStep] = []) {
            tx.append(.listInsert(className: className, key: key, property: property, index: UInt64(index),
                                  value: value, path: path))
        }
        func listInsertEmbedded(className: String, key: Key, property: String, index: UInt32, path: [PathStep] = []) {
            tx.append(.listInsertEmbedded(className: className, key: key, property: property, index: UInt64(index),
                                          path: path))
        }
        func listErase(className: String, key: Key, property: String, index: UInt32, path: [PathStep] = []) {
            tx.append(.listErase(className: className, key: key, property: property, index: UInt64(index), path: path))
        }
        func listSet(className: String, key: Key, property: String, index: UInt32, value: Value) {
            tx.append(.listSet(className: className, key: key, property: property, index: UInt64(index), value: value))
        }
        func listMove(className: String, key: Key, property: String, from: UInt32, to: UInt32) {
            tx.append(.listMove(className: className, key: key, property: property, from: UInt64(from), to: UInt64(to)))
        }
        func setInsert(className: String, key: Key, property: String, value: Value, path: [PathStep] = []) {
            tx.append(.setInsert(className: className, key: key, property: property, value: value, path: path))
        }
        func setErase(className: String, key: Key, property: String, value: Value, path: [PathStep] = []) {
            tx.append(.setErase(className: className, key: key, property: property, value: value, path: path))
        }
        func dictSet(className: String, key: Key, property: String, entry: String, value: Value,
                     path: [PathStep] = []) {
            tx.append(.dictSet(className: className, key: key, property: property, entry: entry, value: value,
                               path: path))
        }
        func dictErase(className: String, key: Key, property: String, entry: String, path: [PathStep] = []) {
            tx.append(.dictErase(className: className, key: key, property: property, entry: entry, path: path))
        }
        func listClear(className: String, key: Key, property: String, path: [PathStep] = []) {
            tx.append(.listClear(className: className, key: key, property: property, path: path))
        }
        func setClear(className: String, key: Key, property: String, path: [PathStep] = []) {
            tx.append(.setClear(className: className, key: key, property: property, path: path))
        }
        func dictClear(className: String, key: Key, property: String, path: [PathStep] = []) {
            tx.append(.dictClear(className: className, key: key, property: property, path: path))
        }
    }

    // MARK: Helpers

    static func encode<T: TandemObject>(_ object: T) throws -> (ModelInfo, Key, [String: FieldInput]) {
        let info = try ModelInfo.of(T.self)
        let fields = try FieldEncoder.encode(object, capacity: info.spec.properties.count)
        var keyValue = Value.null
        if case let .single(v)? = fields[T.primaryKey] { keyValue = v }
        return (info, try Tandem.key(of: keyValue, className: info.spec.name), fields)
    }

    static func key<T: TandemObject>(_ value: some PersistableScalar, _ type: T.Type) throws -> Key {
        try Tandem.key(of: try value.tandemValue(), className: T.className)
    }

    /// A `WriteEncoder` row as values by name.
    static func named(_ row: [Value], _ info: ModelInfo) -> [String: Value] {
        Dictionary(uniqueKeysWithValues: zip(info.rowProperties, row))
    }

    /// The single-valued properties to write, without the primary key; a nil optional (which
    /// Codable leaves out) is written as null.
    static func singles(_ fields: [String: FieldInput], _ info: ModelInfo, _ primaryKey: String) -> [String: Value] {
        var out = [String: Value](minimumCapacity: info.singles.count)
        for name in info.singles where name != primaryKey {
            if case let .single(v)? = fields[name] { out[name] = v } else { out[name] = .null }
        }
        return out
    }

    /// `fields` with every embedded-object property of `info` it leaves out (a nil optional,
    /// which Codable does not encode) as none: what `upsert` writes.
    static func withEmbedded(_ fields: [String: FieldInput], _ info: ModelInfo) -> [String: FieldInput] {
        var out = fields
        for (name, shape) in info.embedded where out[name] == nil { out[name] = shape.empty }
        return out
    }

    static func index(_ index: Int) throws -> UInt32 {
        guard let i = UInt32(exactly: index) else {
            throw TandemError.InvalidArgument(message: "index \(index) is out of range")
        }
        return i
    }

    static func check<T: TandemObject, V: PersistableScalar>(
        _ type: T.Type, _ property: String, _ value: V.Type, _ collection: Collection
    ) throws {
        let info = try ModelInfo.of(T.self)
        guard let shape = info.shapes[property] else {
            throw TandemModelError.unsupportedType(property: property, type: "not a property of \(T.className)")
        }
        guard info.embedded[property] == nil else {
            throw TandemModelError.notWritable(
                type: "\(T.className).\(property)",
                reason: "it holds embedded objects: write them with add, upsert or modify")
        }
        guard shape.collection == collection, shape.type == V.tandemType,
              shape.nullable || !V.tandemNullable
        else {
            throw TandemModelError.typeMismatch(property: property, expected: "\(shape)", found: "\(V.self)")
        }
    }

    /// What a read property would write (nil for embedded objects: `modify` compares their
    /// encoded form instead).
    static func asInput(_ field: FieldValue?) -> FieldInput? {
        switch field {
        case let .single(v)?: return .single(v)
        case let .list(items)?: return .list(items)
        case let .set(items)?: return .set(items)
        case let .dictionary(entries)?: return .dictionary(entries)
        default: return nil
        }
    }

    /// Writes the collections and embedded objects of `new` to a new object (`old` nil), an
    /// existing one (`clear`: each replaced whole), or one `modify` read as `old` (each collection
    /// turned from `old`'s into `new`'s; `modify` writes the embedded objects itself).
    private func replaceCollections(_ className: String, _ key: Key, old: [String: FieldValue]?,
                                    new: [String: FieldInput], clear: Bool = false) throws
    {
        for (property, input) in new {
            switch input {
            case .single:
                continue
            case .embedded, .embeddedList, .embeddedDictionary:
                if old == nil { writeWhole(className, key, property, [], input, fresh: !clear) }
            case .list, .set, .dictionary:
                if clear {
                    writeWhole(className, key, property, [], input, fresh: false)
                } else {
                    writeChanges(className, key, property, [], old: Self.asInput(old?[property]), new: input)
                }
            }
        }
    }

    /// Writes `input` whole at `property` + `path` of the object (`path` empty: the property
    /// itself; else the steps down to a field of an embedded object, the last one naming it).
    /// `fresh`: nothing is stored there yet (a new object, list element or dictionary entry), so
    /// nothing is cleared and nulls are not written; otherwise each collection is cleared first
    /// and every field of an embedded object written (`createEmbedded` keeps an existing object).
    private func writeWhole(_ className: String, _ key: Key, _ property: String, _ path: [PathStep],
                            _ input: FieldInput, fresh: Bool)
    {
        switch input {
        case let .single(value):
            if !fresh || value != .null {
                rec.set(className: className, key: key, property: property, value: value, path: path)
            }
        case let .list(items):
            if !fresh { rec.listClear(className: className, key: key, property: property, path: path) }
            for (i, item) in items.enumerated() {
                rec.listInsert(className: className, key: key, property: property, index: UInt32(i), value: item,
                               path: path)
            }
        case let .set(items):
            if !fresh { rec.setClear(className: className, key: key, property: property, path: path) }
            for item in items {
                rec.setInsert(className: className, key: key, property: property, value: item, path: path)
            }
        case let .dictionary(entries):
            if !fresh { rec.dictClear(className: className, key: key, property: property, path: path) }
            for (entry, value) in entries.sorted(by: { $0.key < $1.key }) {
                rec.dictSet(className: className, key: key, property: property, entry: entry, value: value, path: path)
            }
        case .embedded(nil):
            if !fresh { rec.set(className: className, key: key, property: property, value: .null, path: path) }
        case let .embedded(fields?):
            rec.createEmbedded(className: className, key: key, property: property, path: path)
            writeFields(className, key, property, path, fields, fresh: fresh)
        case let .embeddedList(items):
            if !fresh { rec.listClear(className: className, key: key, property: property, path: path) }
            for (i, fields) in items.enumerated() {
                rec.listInsertEmbedded(className: className, key: key, property: property, index: UInt32(i),
                                       path: path)
                writeFields(className, key, property, path + [.index(index: UInt64(i))], fields, fresh: true)
            }
        case let .embeddedDictionary(entries):
            if !fresh { rec.dictClear(className: className, key: key, property: property, path: path) }
            for (entry, fields) in entries.sorted(by: { $0.key < $1.key }) {
                writeEntry(className, key, property, path, entry, fields)
            }
        }
    }

    /// Writes every field of the embedded object at `property` + `at`, in name order.
    private func writeFields(_ className: String, _ key: Key, _ property: String, _ at: [PathStep],
                             _ fields: [String: FieldInput], fresh: Bool)
    {
        for (name, input) in fields.sorted(by: { $0.key < $1.key }) {
            writeWhole(className, key, property, at + [.name(name: name)], input, fresh: fresh)
        }
    }

    /// Writes entry `entry` of the dictionary of embedded objects at `property` + `path`, where
    /// there is no object yet: a new object (`fields`) or null.
    private func writeEntry(_ className: String, _ key: Key, _ property: String, _ path: [PathStep],
                            _ entry: String, _ fields: [String: FieldInput]?)
    {
        if let fields {
            let at = path + [.name(name: entry)]
            rec.createEmbedded(className: className, key: key, property: property, path: at)
            writeFields(className, key, property, at, fields, fresh: true)
        } else {
            rec.dictSet(className: className, key: key, property: property, entry: entry, value: .null, path: path)
        }
    }

    /// Writes what differs between `old` (what is stored at `property` + `path`, as read and
    /// encoded; nil: nothing known, an empty collection) and `new`: a changed value, a list's
    /// index erases and inserts, a set's or dictionary's differences, an embedded object field by
    /// field (a list of embedded objects element by element when its length is unchanged,
    /// otherwise whole), a dictionary of embedded objects entry by entry.
    private func writeChanges(_ className: String, _ key: Key, _ property: String, _ path: [PathStep],
                              old: FieldInput?, new: FieldInput)
    {
        if old == new { return }
        switch (old, new) {
        case let (.embedded(before?)?, .embedded(after?)):
            writeFieldChanges(className, key, property, path, old: before, new: after)
        case (.embedded(nil)?, .embedded(_?)):
            writeWhole(className, key, property, path, new, fresh: true)
        case let (.embeddedList(before)?, .embeddedList(after)) where before.count == after.count:
            for i in after.indices {
                writeFieldChanges(className, key, property, path + [.index(index: UInt64(i))],
                                  old: before[i], new: after[i])
            }
        case let (.embeddedDictionary(before)?, .embeddedDictionary(after)):
            for entry in before.keys.sorted() where after[entry] == nil {
                rec.dictErase(className: className, key: key, property: property, entry: entry, path: path)
            }
            for (entry, fields) in after.sorted(by: { $0.key < $1.key }) {
                switch (before[entry], fields) {
                case let (stored??, fields?):
                    writeFieldChanges(className, key, property, path + [.name(name: entry)], old: stored, new: fields)
                case (nil?, nil):
                    continue
                case (_??, nil):
                    rec.dictSet(className: className, key: key, property: property, entry: entry, value: .null,
                                path: path)
                default:  // absent or null before: a new object (or a null entry)
                    writeEntry(className, key, property, path, entry, fields)
                }
            }
        case (_, .single(let value)):
            rec.set(className: className, key: key, property: property, value: value, path: path)
        case let (_, .list(items)):
            if case let .list(oldItems)? = old {
                for i in oldItems.indices.reversed() {
                    rec.listErase(className: className, key: key, property: property, index: UInt32(i), path: path)
                }
            } else if old != nil {
                rec.listClear(className: className, key: key, property: property, path: path)
            }
            for (i, item) in items.enumerated() {
                rec.listInsert(className: className, key: key, property: property, index: UInt32(i), value: item,
                               path: path)
            }
        case let (_, .set(items)):
            var oldItems: [Value] = []
            if case let .set(o)? = old { oldItems = o }
            for item in oldItems where !items.contains(item) {
                rec.setErase(className: className, key: key, property: property, value: item, path: path)
            }
            for item in items where !oldItems.contains(item) {
                rec.setInsert(className: className, key: key, property: property, value: item, path: path)
            }
        case let (_, .dictionary(entries)):
            var oldEntries: [String: Value] = [:]
            if case let .dictionary(o)? = old { oldEntries = o }
            for entry in oldEntries.keys.sorted() where entries[entry] == nil {
                rec.dictErase(className: className, key: key, property: property, entry: entry, path: path)
            }
            for (entry, value) in entries.sorted(by: { $0.key < $1.key }) where oldEntries[entry] != value {
                rec.dictSet(className: className, key: key, property: property, entry: entry, value: value, path: path)
            }
        default:
            writeWhole(className, key, property, path, new, fresh: false)
        }
    }

    /// `writeChanges` for each field of the embedded object at `property` + `at`.
    private func writeFieldChanges(_ className: String, _ key: Key, _ property: String, _ at: [PathStep],
                                   old: [String: FieldInput], new: [String: FieldInput])
    {
        for (name, input) in new.sorted(by: { $0.key < $1.key }) {
            writeChanges(className, key, property, at + [.name(name: name)], old: old[name], new: input)
        }
    }
}
