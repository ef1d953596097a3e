// Tandem from Swift beside the system libsqlite3 from Swift, same rows, same durability (WAL,
// synchronous=NORMAL, Tandem's default), measured in one run:
//
//   bulk:    N objects x 5 properties in one transaction
//   small:   N/10 transactions of one object each
//   iterate: reading N objects back as typed Swift values
//
// Usage: TandemBenchmark [--n 100000] [--repeat 1]   (median of the repeats is printed)

import CSQLite
import Foundation
import Tandem

struct Task: TandemObject {
    var _id: Int
    var title: String
    var done: Bool
    var priority: Int
    var score: Double
}

var n = 100_000
var repeats = 1
var args = CommandLine.arguments.dropFirst().makeIterator()
while let arg = args.next() {
    switch arg {
    case "--n": n = Int(args.next() ?? "") ?? n
    case "--repeat": repeats = Int(args.next() ?? "") ?? repeats
    default:
        FileHandle.standardError.write("usage: TandemBenchmark [--n N] [--repeat R]\n".data(using: .utf8)!)
        exit(2)
    }
}
let nSmall = n / 10

func task(_ i: Int) -> Task {
    Task(_id: i, title: "task \(i)", done: i % 3 == 0, priority: i % 5, score: Double(i) * 0.5)
}

/// Every run writes under one temporary directory, removed at the end.
let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("tandem-swiftbench-\(UUID().uuidString)")

func freshPath(_ name: String) -> String {
    let dir = scratch.appendingPathComponent(UUID().uuidString)
    try! FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return dir.appendingPathComponent(name).path
}

/// The median wall time of `repeats` runs of `body` (each gets fresh state from `setup`), seconds.
func measure<S>(_ setup: () throws -> S, _ body: (S) throws -> Void) rethrows -> Double {
    var samples: [Double] = []
    for _ in 0..<repeats {
        let state = try setup()
        let start = DispatchTime.now().uptimeNanoseconds
        try body(state)
        samples.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
    }
    return samples.sorted()[samples.count / 2]
}

// MARK: - Tandem

func tandemDB() throws -> Database { try Database.open(path: freshPath("t.sqlite"), models: [Task.self]) }

func untypedValues(_ t: Task) -> [String: Value] {
    ["title": .string(value: t.title), "done": .bool(value: t.done), "priority": .int(value: Int64(t.priority)),
     "score": .double(value: t.score)]
}

func filledTandem() throws -> Database {
    let db = try tandemDB()
    try db.write { tx in for i in 0..<n { try tx.add(task(i)) } }
    return db
}

// MARK: - SQLite

final class SQLite {
    var db: OpaquePointer?
    init() {
        guard sqlite3_open(freshPath("s.sqlite"), &db) == SQLITE_OK else { fatalError("sqlite3_open") }
        exec("PRAGMA journal_mode=WAL")
        exec("PRAGMA synchronous=NORMAL")
        exec("CREATE TABLE task (id INTEGER PRIMARY KEY, title TEXT NOT NULL, done INTEGER NOT NULL, "
            + "priority INTEGER NOT NULL, score REAL NOT NULL)")
    }
    deinit { sqlite3_close(db) }

    func exec(_ sql: String) {
        guard sqlite3_exec(db, sql, nil, nil, nil) == SQLITE_OK else {
            fatalError("\(sql): \(String(cString: sqlite3_errmsg(db)))")
        }
    }
    func prepare(_ sql: String) -> OpaquePointer? {
        var stmt: OpaquePointer?
        guard sqlite3_prepare_v2(db, sql, -1, &stmt, nil) == SQLITE_OK else { fatalError("prepare \(sql)") }
        return stmt
    }
    func insert(_ stmt: OpaquePointer?, _ t: Task) {
        sqlite3_bind_int64(stmt, 1, Int64(t._id))
        sqlite3_bind_text(stmt, 2, t.title, -1, csqlite_transient())
        sqlite3_bind_int64(stmt, 3, t.done ? 1 : 0)
        sqlite3_bind_int64(stmt, 4, Int64(t.priority))
        sqlite3_bind_double(stmt, 5, t.score)
        guard sqlite3_step(stmt) == SQLITE_DONE else { fatalError(String(cString: sqlite3_errmsg(db))) }
        sqlite3_reset(stmt)
    }
    static let insertSQL = "INSERT INTO task VALUES (?, ?, ?, ?, ?)"
}

func filledSQLite() -> SQLite {
    let s = SQLite()
    let stmt = s.prepare(SQLite.insertSQL)
    s.exec("BEGIN")
    for i in 0..<n { s.insert(stmt, task(i)) }
    s.exec("COMMIT")
    sqlite3_finalize(stmt)
    return s
}

// MARK: - Run

var rows: [(String, Double, Double, Double)] = []  // (what, tandem typed, tandem untyped, sqlite)

let bulk = (
    try measure(tandemDB) { db in try db.write { tx in for i in 0..<n { try tx.add(task(i)) } } },
    try measure(tandemDB) { db in
        try db.write { tx in
            for i in 0..<n { try tx.create(className: "Task", key: .int(value: Int64(i)), values: untypedValues(task(i))) }
        }
    },
    measure(SQLite.init) { s in
        let stmt = s.prepare(SQLite.insertSQL)
        s.exec("BEGIN")
        for i in 0..<n { s.insert(stmt, task(i)) }
        s.exec("COMMIT")
        sqlite3_finalize(stmt)
    })
rows.append(("\(n) objects in one transaction", bulk.0, bulk.1, bulk.2))

let small = (
    try measure(tandemDB) { db in for i in 0..<nSmall { try db.write { try $0.add(task(i)) } } },
    try measure(tandemDB) { db in
        for i in 0..<nSmall {
            try db.write { try $0.create(className: "Task", key: .int(value: Int64(i)), values: untypedValues(task(i))) }
        }
    },
    measure(SQLite.init) { s in
        let stmt = s.prepare(SQLite.insertSQL)
        for i in 0..<nSmall {
            s.exec("BEGIN")
            s.insert(stmt, task(i))
            s.exec("COMMIT")
        }
        sqlite3_finalize(stmt)
    })
rows.append(("\(nSmall) one-object transactions", small.0, small.1, small.2))

let iterate = (
    try measure(filledTandem) { db in
        let all = try db.objects(Task.self).snapshot()
        precondition(all.count == n)
    },
    try measure(filledTandem) { db in
        let all = try db.query(className: "Task", filter: "TRUEPREDICATE", args: []).objects()
        precondition(all.count == n)
    },
    measure(filledSQLite) { s in
        let stmt = s.prepare("SELECT id, title, done, priority, score FROM task")
        var all: [Task] = []
        all.reserveCapacity(n)
        while sqlite3_step(stmt) == SQLITE_ROW {
            all.append(Task(
                _id: Int(sqlite3_column_int64(stmt, 0)),
                title: String(cString: sqlite3_column_text(stmt, 1)),
                done: sqlite3_column_int64(stmt, 2) != 0,
                priority: Int(sqlite3_column_int64(stmt, 3)),
                score: sqlite3_column_double(stmt, 4)))
        }
        sqlite3_finalize(stmt)
        precondition(all.count == n)
    })
rows.append(("iterate \(n) typed objects", iterate.0, iterate.1, iterate.2))

print("Swift benchmark: Tandem beside system SQLite \(String(cString: sqlite3_libversion())) "
    + "(WAL, synchronous=NORMAL), median of \(repeats)")
func pad(_ s: String, _ w: Int) -> String { s.count >= w ? s : s + String(repeating: " ", count: w - s.count) }
func secs(_ t: Double) -> String { String(format: "%8.3f s", t) }
print(pad("workload", 36) + pad("tandem typed", 14) + pad("tandem untyped", 16) + pad("sqlite3", 12) + "typed/sqlite")
for (what, typed, untyped, sqlite) in rows {
    print(pad(what, 36) + pad(secs(typed), 14) + pad(secs(untyped), 16) + pad(secs(sqlite), 12)
        + String(format: "%6.1fx", typed / sqlite))
}
try? FileManager.default.removeItem(at: scratch)
