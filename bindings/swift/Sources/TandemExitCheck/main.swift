// Run by ExitTests (Tests/TandemTests/ExitTests.swift): syncs, awaits, and ends the process at
// once with every kind of call from Tandem's threads into Swift live or in flight; prints `ok`
// last and must exit 0. Not a product of the package: apps depending on it never see it.
//
//     TandemExitCheck URL CA TOKEN DIR exit|return [typed]
//
// Live at the end, as in Python's tests/exit_script.py: results listeners (the store's notifier
// thread), one of them still inside its call (it sleeps); state, progress and error listeners
// (the session's notifier thread); a token provider; a log listener at TRACE (every thread that
// logs); async waits with no timeout left pending on a session whose server never answers, and
// a flexible sync session's wait for a subscription set it never gets. Besides: a blocking wait
// on a thread of its own, inside Rust; and a thread committing without pause, so the notifier
// threads are calling the listeners while the process ends.
//
// `exit` calls `exit(0)`; `return` lets the top-level code return. The untyped API leaves
// Tandem's threads free to call into Swift during `exit` (nothing calls `closeCallbacks`);
// `typed` opens the synced database through the typed API instead, which registers the
// package's atexit handler (`closeCallbacks`), and iterates a typed live results stream.
// A call from Tandem into Swift that arrives once `exit` has begun is written to stderr as
// `late call: ...` (information: it must do no harm); one after `closeCallbacks` returned (typed)
// ends the process with status 3.

import Foundation
import Tandem

let arguments = CommandLine.arguments
guard arguments.count == 6 || arguments.count == 7, ["exit", "return"].contains(arguments[5]) else {
    FileHandle.standardError.write("usage: TandemExitCheck URL CA TOKEN DIR exit|return [typed]\n".data(using: .utf8)!)
    exit(2)
}
let (url, ca, token, directory, ending) = (arguments[1], arguments[2], arguments[3], arguments[4], arguments[5])
let typed = arguments.count == 7 && arguments[6] == "typed"

/// Where the process is in `exit`, as atexit handlers see it (they run last registered first).
final class Exiting: @unchecked Sendable {
    private let lock = NSLock()
    private var begun = false
    private var closed = false
    /// The first atexit handler to run.
    func begin() { lock.lock(); begun = true; lock.unlock() }
    /// The last one, registered before the typed open registers the package's: in the typed
    /// variant `closeCallbacks` has returned by then.
    func end() { lock.lock(); closed = typed; lock.unlock() }
    /// Notes a call from Tandem into Swift (a listener, the log listener, the token provider)
    /// made once `exit` began (write(2): no buffering), and ends the process with status 3 if
    /// it comes after `closeCallbacks` returned, which promises there are none.
    func call(_ what: String) {
        lock.lock(); let (late, broken) = (begun, closed); lock.unlock()
        guard late else { return }
        let line = broken ? "call after closeCallbacks returned: \(what) on thread \(Thread.current.name ?? "?")\n"
            : "late call: \(what) on thread \(Thread.current.name ?? "?")\n"
        line.withCString { _ = write(2, $0, strlen($0)) }
        if broken { _exit(3) }
    }
}
let exiting = Exiting()
atexit { exiting.end() }

final class Quiet: ResultsListener, SyncStateListener, ProgressListener, ErrorListener, LogListener,
    @unchecked Sendable
{
    func onChange(change: ResultsChange) throws { exiting.call("results listener") }
    func onState(state: SyncState) throws { exiting.call("state listener") }
    func onProgress(progress: SyncProgress) throws { exiting.call("progress listener") }
    func onError(code: UInt64, message: String, willRetry: Bool) throws { exiting.call("error listener") }
    func onLog(level: LogLevel, target: String, message: String) throws { exiting.call("log listener") }
}

/// Still inside its call when the process ends.
final class Slow: ResultsListener, @unchecked Sendable {
    func onChange(change: ResultsChange) throws {
        exiting.call("slow results listener")
        usleep(50_000)
    }
}

final class Tokens: TokenProvider, @unchecked Sendable {
    func fetchToken() throws -> String {
        exiting.call("token provider")
        return token
    }
}

/// The typed model of the `Task` class (the `typed` variant).
struct Todo: TandemObject {
    static var className: String { "Task" }
    var _id: Int64
    var title: String
}

func prop(_ name: String, _ type: PropertyType) -> PropertySpec {
    PropertySpec(name: name, propertyType: type, nullable: false, collection: .single, linkTarget: nil)
}

let classes = [ClassSpec(name: "Task", primaryKey: "_id", properties: [prop("_id", .int), prop("title", .string)])]

func options(_ url: String, _ caFile: String?) -> SyncOptions {
    SyncOptions(url: url, path: "/todos", token: "", caFile: caFile, allowInsecure: false,
                clientReset: .recoverOrDiscard)
}

@Sendable func create(_ db: Database, _ key: Int64, _ title: String) throws {
    _ = try db.write(ops: [.create(className: "Task", key: .int(value: key), values: ["title": .string(value: title)])])
}

@Sendable func now() -> Int64 { Int64(Date().timeIntervalSince1970 * 1_000_000_000) }

let quiet = Quiet()
try setLogListener(listener: quiet, level: .trace)
let path = "\(directory)/db.sqlite"
let db = typed ? try Database.open(path: path, models: [Todo.self]) : try Database.open(path: path, classes: classes)
let results = try db.query(className: "Task", filter: "TRUEPREDICATE", args: [])
var handles = [try results.observe(listener: quiet), try results.observe(listener: Slow())]
let session = try db.sync(options: options(url, ca), tokenProvider: Tokens())
handles += [session.observeState(listener: quiet), session.observeProgress(listener: quiet),
            session.observeErrors(listener: quiet)]
if typed {
    let todos = try db.objects(Todo.self)
    Task.detached { for try await _ in todos.values() {} }
}

// Waits that never complete, left pending at the end (as an app's background tasks would
// leave them).
let nowhere = try Database.open(path: "\(directory)/nowhere.sqlite", classes: classes)
let stuck = try nowhere.sync(options: options("wss://localhost:9/", nil), tokenProvider: nil)
try create(nowhere, 1, "never uploaded")
Task.detached { try? await stuck.waitForUpload(timeoutMs: nil) }
Task.detached { try? await stuck.waitForDownload(timeoutMs: nil) }
// The blocking variant on a thread of the app's own, inside Rust at the end.
Thread.detachNewThread { try? stuck.waitForUploadBlocking(timeoutMs: nil) }
// And a flexible sync session's wait for a subscription set the server never bootstraps.
let flexible = try Database.open(path: "\(directory)/flexible.sqlite", classes: classes)
_ = try flexible.updateSubscriptions(changes: [.add(name: nil, className: "Task", query: "TRUEPREDICATE", args: [])])
let stuckFlexible = try flexible.sync(options: .flexible(url: "wss://localhost:9/", token: ""), tokenProvider: nil)
Task.detached { try? await stuckFlexible.waitForSubscriptions() }

try create(db, now(), "x")
try await session.waitForUpload(timeoutMs: 30_000)
try await session.waitForDownload(timeoutMs: 30_000)
// A blocking wait cancelled half-way through its CancelToken.
let cancel = CancelToken()
Thread.detachNewThread { try? stuck.waitForUploadBlocking(timeoutMs: nil, cancel: cancel) }
usleep(10_000)
cancel.cancel()

// Commits without pause until the end: the listeners are being called as the process ends.
let committed = DispatchSemaphore(value: 0)
Thread.detachNewThread {
    var n = 0
    while true {
        try? create(db, now(), "y")
        n += 1
        if n == 10 { committed.signal() }
    }
}
committed.wait()

atexit { exiting.begin() }
print("ok")
fflush(stdout)
// No stop(), no cancel(): the process ends with everything live.
if ending == "exit" {
    exit(0)
}
