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

/// A todo item: the schema comes from this Codable struct.
struct Todo: TandemObject {
    var _id: Int64
    var title: String
    var done = false
}

func show(_ db: Database) throws {
    for todo in try db.objects(Todo.self, where: "TRUEPREDICATE SORT(_id ASC)").snapshot() {
        print("[\(todo.done ? "x" : " ")] \(todo._id): \(todo.title)")
    }
    fflush(stdout)
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
    let db = try Database.open(path: path, models: [Todo.self])
    let session = try db.sync(options: SyncOptions(
        url: url, path: flags["--path"] ?? "/todos", token: token, caFile: flags["--ca"],
        allowInsecure: false, clientReset: .recoverOrDiscard), tokenProvider: nil)
    try await session.waitForDownload(timeoutMs: 30_000)
    switch command {
    case "add":
        // Unique enough per device; equal keys would merge.
        let id = Int64(Date().timeIntervalSince1970 * 1000)
        try db.write { try $0.add(Todo(_id: id, title: positional[1])) }
    case "done":
        guard let id = Int64(positional[1]) else { fail() }
        try db.write { try $0.modify(Todo.self, key: id) { $0.done = true } }
    default:
        break
    }
    if command == "watch" {
        // First the todos as they are, then each change.
        for try await change in try db.objects(Todo.self, where: "TRUEPREDICATE SORT(_id ASC)").changes() {
            if !change.initial {
                print("-- changed: \(change.insertions.count) new, \(change.deletions.count) gone, "
                    + "\(change.modifications.count) modified")
            }
            try show(db)
        }
    }
    try await session.waitForUpload(timeoutMs: 30_000)
    try show(db)
    session.stop()
} catch {
    fail("todo: \(error)")
}
