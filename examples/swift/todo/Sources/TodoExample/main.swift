// A small todo app on Tandem: add, complete, list, and watch live updates from other devices.
// The Swift twin of examples/python/todo.py and examples/todo.rs (same commands, same output).
//
//   TodoExample --db alice.sqlite --url wss://localhost:7800/ \
//       --token "$(tandem-server --jwt-secret-file secret --issue-token /todos)" --ca cert.pem add "buy milk"
//   TodoExample ... list | done ID | watch
//
// Each command opens the database, syncs with the server, waits until the change is uploaded (or
// the server's news is downloaded), prints, and exits; `watch` keeps printing changes.

import Foundation
import Tandem

let usage = "usage: todo --db FILE --url wss://... --token JWT [--ca CERT] [--path /todos] add TITLE | done ID | list | watch"

func fail(_ message: String = usage) -> Never {
    FileHandle.standardError.write((message + "\n").data(using: .utf8)!)
    exit(2)
}

func classes() -> [ClassSpec] {
    func prop(_ name: String, _ type: PropertyType) -> PropertySpec {
        PropertySpec(name: name, propertyType: type, nullable: false, collection: .single, linkTarget: nil)
    }
    return [ClassSpec(name: "Todo", primaryKey: "_id", properties: [
        prop("_id", .int),
        prop("title", .string),
        prop("done", .bool),
    ])]
}

func show(_ db: Database) throws {
    for key in try db.query(className: "Todo", filter: "TRUEPREDICATE SORT(_id ASC)", args: []).keys() {
        guard let todo = try db.object(className: "Todo", key: key) else { continue }
        var done = false
        if case .single(value: .bool(value: let b))? = todo["done"] { done = b }
        var title = ""
        if case .single(value: .string(value: let s))? = todo["title"] { title = s }
        let id: String
        switch key {
        case .int(value: let i): id = String(i)
        case .string(value: let s): id = s
        default: id = "\(key)"
        }
        print("[\(done ? "x" : " ")] \(id): \(title)")
    }
    fflush(stdout)
}

final class Printer: ResultsListener, @unchecked Sendable {
    let db: Database
    init(_ db: Database) { self.db = db }
    func onChange(change: ResultsChange) throws {
        print("-- changed: \(change.insertions.count) new, \(change.deletions.count) gone, "
            + "\(change.modifications.count) modified")
        try show(db)
    }
}

var flags: [String: String] = [:]
var positional: [String] = []
var argv = Array(CommandLine.arguments.dropFirst())
var i = 0
while i < argv.count {
    if argv[i].hasPrefix("--") {
        guard i + 1 < argv.count else { fail() }
        flags[argv[i]] = argv[i + 1]
        i += 2
    } else {
        positional.append(argv[i])
        i += 1
    }
}
guard let path = flags["--db"], let url = flags["--url"], let token = flags["--token"],
      let command = positional.first, ["add", "done", "list", "watch"].contains(command) else { fail() }
if ["add", "done"].contains(command) && positional.count < 2 { fail() }

do {
    let db = try Database.open(path: path, classes: classes())
    let session = try db.sync(options: SyncOptions(
        url: url, path: flags["--path"] ?? "/todos", token: token, caFile: flags["--ca"],
        allowInsecure: false, clientReset: .recoverOrDiscard), tokenProvider: nil)
    try await session.waitForDownload(timeoutMs: 30_000)
    switch command {
    case "add":
        // Unique enough per device; equal keys would merge.
        let id = Int64(Date().timeIntervalSince1970 * 1000)
        try db.write { tx in
            try tx.create(className: "Todo", key: .int(value: id),
                          values: ["title": .string(value: positional[1]), "done": .bool(value: false)])
        }
    case "done":
        guard let id = Int64(positional[1]) else { fail() }
        try db.write { tx in
            try tx.set(className: "Todo", key: .int(value: id), property: "done", value: .bool(value: true))
        }
    default:
        break
    }
    if command == "watch" {
        try show(db)
        let handle = try db.query(className: "Todo", filter: "TRUEPREDICATE SORT(_id ASC)", args: [])
            .observe(listener: Printer(db))
        while true { sleep(1) }
        handle.cancel()
    }
    try await session.waitForUpload(timeoutMs: 30_000)
    try show(db)
    session.stop()
} catch {
    fail("todo: \(error)")
}
