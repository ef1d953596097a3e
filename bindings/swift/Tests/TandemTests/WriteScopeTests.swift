// Where a write may happen: `Database.write` does not nest (typed or untyped), other databases
// and other threads write on their own, and a `Transaction` cannot be used after its block.

import Foundation
import XCTest
@testable import Tandem

private struct Abandon: Error {}

private let nestedMessage = "a write transaction is already open on this thread: nested writes are not supported"
private let endedMessage = "this Transaction's write block has already returned: record operations inside the block "
    + "(nothing recorded afterwards would be written)"

final class WriteScopeTests: XCTestCase {
    var dir: URL!
    var db: Database!

    override func setUpWithError() throws {
        dir = try tempDir()
        db = try Database.open(path: dir.appendingPathComponent("scope.sqlite").path, models: [Todo.self])
    }

    override func tearDownWithError() throws {
        db = nil
        try? FileManager.default.removeItem(at: dir)
    }

    private func ids(_ db: Database? = nil) throws -> [Int] {
        try (db ?? self.db).objects(Todo.self, where: "TRUEPREDICATE SORT(_id ASC)").snapshot().map(\._id)
    }

    private func assertNested(_ error: Error, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(error as? TandemModelError, .nestedWrite, "\(error)", file: file, line: line)
        XCTAssertEqual("\(error)", nestedMessage, file: file, line: line)
    }

    func testANestedWriteIsRefusedAndTheOuterOneRollsBack() throws {
        // The new-user trial: the inner write committed on its own, the outer one rolled back.
        XCTAssertThrowsError(try db.write { tx in
            try tx.add(Todo(_id: 12, title: "a"))
            try self.db.write { try $0.add(Todo(_id: 13, title: "b")) }
            throw Abandon()
        }) { assertNested($0) }
        XCTAssertEqual(try ids(), [])

        // Caught inside the block, the refusal leaves the outer write as it was: it commits alone.
        var refused: Error?
        let version = try db.write { tx in
            try tx.add(Todo(_id: 12, title: "outer"))
            do { try self.db.write { try $0.add(Todo(_id: 13, title: "inner")) } } catch { refused = error }
        }
        XCTAssertNotNil(version)
        assertNested(try XCTUnwrap(refused))
        XCTAssertEqual(try ids(), [12])
        XCTAssertEqual(try db.object(Todo.self, key: 12)?.title, "outer")

        // Nothing is left marked on this thread: writes go on.
        try db.write { try $0.add(Todo(_id: 14, title: "after")) }
        XCTAssertEqual(try ids(), [12, 14])
    }

    func testTheUntypedWriteDoesNotNestEither() throws {
        let raw = try Database.open(path: dir.appendingPathComponent("raw.sqlite").path, classes: taskClasses())
        func title(_ key: Int64) throws -> FieldValue? {
            try raw.object(className: "Task", key: .int(value: key))?["title"]
        }
        XCTAssertThrowsError(try raw.write { tx in
            try tx.create(className: "Task", key: .int(value: 1), values: ["title": .string(value: "outer")])
            try raw.write { try $0.create(className: "Task", key: .int(value: 2), values: [:]) }
        }) { assertNested($0) }
        XCTAssertNil(try title(1))
        XCTAssertNil(try title(2))

        try raw.write { tx in
            try tx.create(className: "Task", key: .int(value: 3), values: ["title": .string(value: "three")])
        }
        XCTAssertEqual(try title(3), .single(value: .string(value: "three")))
    }

    func testWritesOfAnotherDatabaseOrFromAnotherThreadAreNotNested() throws {
        let other = try Database.open(path: dir.appendingPathComponent("other.sqlite").path, models: [Todo.self])
        // Another database inside a write: its own transaction, committed when its block ends.
        XCTAssertThrowsError(try db.write { tx in
            try tx.add(Todo(_id: 1, title: "outer"))
            try other.write { try $0.add(Todo(_id: 2, title: "other")) }
            // Inside other's block, db is still the open write of this thread.
            try other.write { _ in try self.db.write { try $0.add(Todo(_id: 3, title: "no")) } }
        }) { assertNested($0) }
        XCTAssertEqual(try ids(), [])
        XCTAssertEqual(try ids(other), [2])

        // Another thread's write is a separate, concurrent transaction: allowed, and independent
        // of the outer one (which rolls back here).
        XCTAssertThrowsError(try db.write { tx in
            try tx.add(Todo(_id: 4, title: "outer"))
            let done = DispatchSemaphore(value: 0)
            let failures = Box<String>()
            let database = self.db!
            let thread = Thread {
                do {
                    try database.write { try $0.add(Todo(_id: 5, title: "thread")) }
                } catch {
                    failures.append("\(error)")
                }
                done.signal()
            }
            thread.start()
            done.wait()
            XCTAssertEqual(failures.all, [])
            throw Abandon()
        }) { XCTAssertTrue($0 is Abandon, "\($0)") }
        XCTAssertEqual(try ids(), [5])
    }

    func testWritesFromConcurrentTasksAreNotNested() async throws {
        // Tasks share the cooperative pool's threads; a write block cannot suspend, so a thread
        // runs one block at a time and no task's write is taken for another's.
        let db = self.db!
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<40 {
                group.addTask {
                    try db.write { try $0.add(Todo(_id: i, title: "t\(i)")) }
                    await Task.yield()  // may resume on another thread
                    try db.write { try $0.add(Todo(_id: 100 + i, title: "u\(i)")) }
                }
            }
            try await group.waitForAll()
        }
        XCTAssertEqual(try ids(), Array(0..<40) + Array(100..<140))
    }

    func testATransactionUsedAfterItsBlockThrowsInsteadOfLosingTheOperation() throws {
        var kept: Transaction?
        try db.write { tx in
            kept = tx
            try tx.add(Todo(_id: 1, title: "inside"))
        }
        let tx = try XCTUnwrap(kept)
        func ended(_ what: String, _ use: () throws -> Void, line: UInt = #line) {
            XCTAssertThrowsError(try use(), what, line: line) { error in
                XCTAssertEqual(error as? TandemModelError, .transactionEnded, "\(what): \(error)", line: line)
                XCTAssertEqual("\(error)", endedMessage, what, line: line)
            }
        }
        ended("add") { try tx.add(Todo(_id: 2, title: "late")) }
        ended("upsert") { try tx.upsert(Todo(_id: 1, title: "late")) }
        ended("modify") { try tx.modify(Todo.self, key: 1) { $0.title = "late" } }
        ended("delete") { try tx.delete(Todo.self, key: 1) }
        ended("delete object") { try tx.delete(Todo(_id: 1, title: "inside")) }
        ended("set") { try tx.set(Todo.self, key: 1, "title", to: "late") }
        ended("insert") { try tx.insert("tag", at: 0, in: Todo.self, key: 1, "tags") }
        ended("removeAll") { try tx.removeAll(in: Todo.self, key: 1, "tags") }
        ended("untyped upsert") {
            try tx.upsert(className: "Todo", key: .int(value: 3), values: ["title": .string(value: "late")])
        }
        ended("untyped erase") { try tx.erase(className: "Todo", key: .int(value: 1)) }
        ended("record") { try tx.record(.erase(className: "Todo", key: .int(value: 1))) }
        ended("raw") { _ = try tx.raw }

        // The same after a block that threw (nothing written).
        XCTAssertThrowsError(try db.write { tx in
            kept = tx
            throw Abandon()
        })
        ended("add after a throw") { try kept!.add(Todo(_id: 4, title: "late")) }

        XCTAssertEqual(try ids(), [1])
        XCTAssertEqual(try db.object(Todo.self, key: 1)?.title, "inside")
    }

    func testTheRawTransactionKeptFromABlockIsRefusedByTheFFI() throws {
        var kept: WriteTransaction?
        try db.write { tx in
            kept = try tx.raw
            try tx.add(Todo(_id: 1, title: "inside"))
        }
        XCTAssertThrowsError(
            try kept!.upsert(className: "Todo", key: .int(value: 2), values: ["title": .string(value: "late")])
        ) { error in
            guard case let .InvalidArgument(message)? = error as? TandemError else { return XCTFail("\(error)") }
            XCTAssertEqual(message, "this transaction was already committed or rolled back")
        }
        XCTAssertEqual(try ids(), [1])
    }
}
