// Where a write may happen: writes do not nest (typed, untyped, async), a write scope cannot be
// used after its block, a closed database refuses every use with its own message, and a key of
// the wrong type is refused instead of finding nothing.

package dev.tandem

import java.nio.file.Path
import java.util.UUID
import kotlin.concurrent.thread
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withContext
import org.junit.jupiter.api.AfterEach
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertNotNull
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.BeforeEach
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows
import org.junit.jupiter.api.io.TempDir

private const val NESTED = "a write transaction is already open on this thread: nested writes are not supported"
private const val CLOSED = "this TandemDatabase is closed"

class WriteScopeTest {
    @TempDir
    lateinit var dir: Path
    lateinit var db: TandemDatabase

    @BeforeEach
    fun open() {
        db = TandemDatabase.open(dir.resolve("scope.sqlite").toString(), TypedTask::class, AllTypes::class)
    }

    @AfterEach
    fun close() {
        db.close()
    }

    private fun ids(): List<Long> = db.query<TypedTask>("TRUEPREDICATE SORT(_id ASC)").toList().map { it._id }

    @Test
    fun aNestedTypedWriteIsRefusedAndTheOuterOneRollsBack() {
        // The new-user trial: the inner write committed on its own, the outer one rolled back.
        val e = assertThrows<IllegalStateException> {
            db.write {
                add(TypedTask(12))
                db.write { add(TypedTask(13)) }
                error("x")
            }
        }
        assertEquals(NESTED, e.message)
        assertEquals(emptyList<Long>(), ids())

        // Caught inside the block, the refusal leaves the outer write as it was: it commits alone.
        var refused: Throwable? = null
        val version = db.write {
            add(TypedTask(12, "outer"))
            refused = runCatching { db.write { add(TypedTask(13)) } }.exceptionOrNull()
        }
        assertNotNull(version)
        assertEquals(NESTED, (refused as IllegalStateException).message)
        assertEquals(listOf(12L), ids())
        assertEquals("outer", db.find<TypedTask>(12L)!!.title)

        // Nothing is left marked on this thread: writes go on.
        db.write { add(TypedTask(14)) }
        assertEquals(listOf(12L, 14L), ids())
    }

    @Test
    fun nestedAsyncWritesAreRefusedWhicheverThreadTheyRunOn() {
        // writeAsync called inside a write block (through runBlocking, on the block's thread):
        // refused before it moves to the IO dispatcher.
        val e = assertThrows<IllegalStateException> {
            db.write {
                add(TypedTask(1))
                runBlocking { db.writeAsync { add(TypedTask(2)) } }
            }
        }
        assertEquals(NESTED, e.message)
        assertEquals(emptyList<Long>(), ids())

        // A write inside a writeAsync block: refused on the IO thread the block runs on.
        val inner = assertThrows<IllegalStateException> {
            runBlocking {
                db.writeAsync {
                    add(TypedTask(3))
                    db.write { add(TypedTask(4)) }
                }
            }
        }
        assertEquals(NESTED, inner.message)
        val innerAsync = assertThrows<IllegalStateException> {
            runBlocking {
                db.writeAsync {
                    add(TypedTask(5))
                    runBlocking { db.writeAsync { add(TypedTask(6)) } }
                }
            }
        }
        assertEquals(NESTED, innerAsync.message)
        assertEquals(emptyList<Long>(), ids())

        // Consecutive async writes (the coroutine resuming on other IO threads) are not nested.
        runBlocking {
            for (i in 10L until 20L) {
                db.writeAsync { add(TypedTask(i)) }
                withContext(Dispatchers.IO) { db.write { add(TypedTask(i + 100)) } }
            }
        }
        assertEquals((10L until 20L).toList() + (110L until 120L).toList(), ids())
    }

    @Test
    fun theUntypedWriteBlockDoesNotNestWithItselfOrTheTypedOne() {
        val raw = db.raw
        fun taskOp(id: Long) = WriteOp.Upsert("Task", Key.Int(id), mapOf("title" to Value.String("raw")))

        val e1 = assertThrows<IllegalStateException> {
            raw.write { tx ->
                tx.record(taskOp(1))
                raw.write { it.record(taskOp(2)) }
            }
        }
        assertEquals(NESTED, e1.message)
        val e2 = assertThrows<IllegalStateException> {
            raw.write { tx ->
                tx.record(taskOp(3))
                db.write { add(TypedTask(4)) }
            }
        }
        assertEquals(NESTED, e2.message)
        val e3 = assertThrows<IllegalStateException> {
            db.write {
                add(TypedTask(5))
                raw.write { it.record(taskOp(6)) }
            }
        }
        assertEquals(NESTED, e3.message)
        assertEquals(emptyList<Long>(), ids())

        // The untyped block still commits, and rolls back on an exception.
        assertNotNull(raw.write { it.record(taskOp(7)) })
        assertThrows<ArithmeticException> {
            raw.write { tx ->
                tx.record(taskOp(8))
                throw ArithmeticException("no")
            }
        }
        assertEquals(listOf(7L), ids())
        assertEquals("raw", db.find<TypedTask>(7L)!!.title)
    }

    @Test
    fun writesOfAnotherDatabaseOrFromAnotherThreadAreNotNested() {
        val other = TandemDatabase.open(dir.resolve("other.sqlite").toString(), TypedTask::class)
        try {
            // Another database inside a write: its own transaction, committed when its block ends.
            val e = assertThrows<IllegalStateException> {
                db.write {
                    add(TypedTask(1))
                    other.write { add(TypedTask(2)) }
                    // Inside other's block, db is still the open write of this thread.
                    other.write { db.write { add(TypedTask(3)) } }
                }
            }
            assertEquals(NESTED, e.message)
            assertEquals(emptyList<Long>(), ids())
            assertEquals(listOf(2L), other.query<TypedTask>().toList().map { it._id })

            // Another thread's write is a separate, concurrent transaction: allowed, and it does
            // not depend on the outer one (which rolls back here).
            assertThrows<IllegalArgumentException> {
                db.write {
                    add(TypedTask(4))
                    var failure: Throwable? = null
                    thread { failure = runCatching { db.write { add(TypedTask(5)) } }.exceptionOrNull() }.join()
                    assertNull(failure)
                    throw IllegalArgumentException("roll back")
                }
            }
            assertEquals(listOf(5L), ids())
        } finally {
            other.close()
        }
    }

    @Test
    fun aTypedWriteUsedAfterItsBlockThrowsInsteadOfLosingTheOperation() {
        var kept: TypedWrite? = null
        db.write {
            kept = this
            add(TypedTask(1, "inside"))
        }
        val leaked = kept!!
        val message = "this TypedWrite's write block has already returned: record operations inside the block " +
            "(nothing recorded afterwards would be written)"
        assertEquals(message, assertThrows<IllegalStateException> { leaked.add(TypedTask(2)) }.message)
        assertEquals(message, assertThrows<IllegalStateException> { leaked.create(TypedTask(3)) }.message)
        assertEquals(message, assertThrows<IllegalStateException> { leaked.delete(TypedTask(1)) }.message)
        assertEquals(message, assertThrows<IllegalStateException> { leaked.delete<TypedTask>(1L) }.message)
        assertEquals(message, assertThrows<IllegalStateException> { leaked.set(TypedTask::class, 1L, TypedTask::title, "late") }.message)
        assertEquals(message, assertThrows<IllegalStateException> { leaked.op(WriteOp.Erase("Task", Key.Int(1))) }.message)
        // What was recorded inside stays readable; nothing recorded afterwards.
        assertEquals(1, leaked.operations.count { it is WriteOp.Upsert })

        // The same after a block that threw (nothing written) and after an async write.
        assertThrows<IllegalStateException> {
            db.write {
                kept = this
                error("abandon")
            }
        }
        assertEquals(message, assertThrows<IllegalStateException> { kept!!.add(TypedTask(4)) }.message)
        runBlocking { db.writeAsync { kept = this } }
        assertEquals(message, assertThrows<IllegalStateException> { kept!!.add(TypedTask(5)) }.message)

        assertEquals(listOf(1L), ids())
        assertEquals("inside", db.find<TypedTask>(1L)!!.title)
    }

    @Test
    fun anUntypedTransactionUsedAfterItsBlockThrows() {
        var kept: WriteTransaction? = null
        db.raw.write { tx ->
            kept = tx
            tx.upsert("Task", Key.Int(1), mapOf("title" to Value.String("inside")))
        }
        // The block's transaction is committed and closed: a call on it is refused, not recorded.
        val e = assertThrows<IllegalStateException> {
            kept!!.upsert("Task", Key.Int(2), mapOf("title" to Value.String("late")))
        }
        assertEquals("WriteTransaction object has already been destroyed", e.message)
        assertEquals(listOf(1L), ids())
    }

    @Test
    fun everyUseAfterCloseSaysTheDatabaseIsClosed() {
        db.write { add(TypedTask(1, "one")) }
        val results = db.query<TypedTask>()
        val subscriptions = db.subscriptions
        assertEquals(1, results.count())
        db.close()

        fun closed(what: String, use: () -> Any?) {
            val e = assertThrows<IllegalStateException>(what) { use() }
            assertEquals(CLOSED, e.message, what)
        }
        closed("find") { db.find<TypedTask>(1L) }
        closed("query") { db.query<TypedTask>() }
        closed("objectFlow") { db.objectFlow<TypedTask>(1L) }
        closed("write") { db.write { add(TypedTask(2)) } }
        closed("write of nothing") { db.write { } }
        closed("writeAsync") { runBlocking { db.writeAsync { add(TypedTask(2)) } } }
        closed("raw") { db.raw }
        closed("sync") { db.sync(SyncOptions(url = "wss://localhost:1/", path = "/p", token = "t", clientReset = ClientResetMode.MANUAL)) }
        closed("subscriptions.latest") { subscriptions.latest }
        closed("subscriptions.active") { db.subscriptions.active }
        closed("subscriptions.update") { subscriptions.update { add(query<TypedTask>()) } }
        closed("count") { results.count() }
        closed("isEmpty") { results.isEmpty() }
        closed("toList") { results.toList() }
        closed("get") { results[0] }
        closed("first") { results.first() }
        closed("firstOrNull") { results.firstOrNull() }
        closed("iterator") { results.iterator() }
        closed("asFlow") { runBlocking { results.asFlow().first() } }
        closed("changes") { runBlocking { results.changes().first() } }
        // Closing again, and closing the results, are still fine.
        db.close()
        results.close()
    }

    @Test
    fun aFlowMadeBeforeCloseFailsWhenCollectedAfterIt() {
        db.write { add(TypedTask(1)) }
        val flow = db.objectFlow<TypedTask>(1L)
        db.close()
        val e = assertThrows<IllegalStateException> { runBlocking { flow.first() } }
        assertEquals(CLOSED, e.message)
    }

    @Test
    fun aKeyOfTheWrongTypeIsRefusedNamingTheExpectedType() {
        val oid = ObjectId.generate()
        db.write {
            add(TypedTask(12, "twelve", owner = Person("ann")))
            add(AllTypes(_id = oid))
        }
        val e = assertThrows<IllegalArgumentException> { db.find<TypedTask>("x") }
        assertEquals("wrong key type for Task: its primary key _id is Long, got String \"x\"", e.message)
        assertEquals(
            "wrong key type for Person: its primary key _id is String, got Long 1",
            assertThrows<IllegalArgumentException> { db.find<Person>(1L) }.message,
        )
        val uuid = UUID(1, 2)
        assertEquals(
            "wrong key type for Everything: its primary key _id is ObjectId, got UUID $uuid",
            assertThrows<IllegalArgumentException> { db.find<AllTypes>(uuid) }.message,
        )
        assertEquals(
            "wrong key type for Task: its primary key _id is Long, got String \"12\"",
            assertThrows<IllegalArgumentException> { db.objectFlow<TypedTask>("12") }.message,
        )
        // In a write the same refusal throws inside the block: nothing is written.
        val inWrite = assertThrows<IllegalArgumentException> {
            db.write {
                add(TypedTask(13))
                delete<TypedTask>("12")
            }
        }
        assertEquals("wrong key type for Task: its primary key _id is Long, got String \"12\"", inWrite.message)
        assertThrows<IllegalArgumentException> { db.write { set(TypedTask::class, "12", TypedTask::done, true) } }
        assertEquals(listOf(12L), ids())

        // Keys of the right type (an Int for a Long key too) still find, and a missing one is null.
        assertEquals("twelve", db.find<TypedTask>(12L)!!.title)
        assertEquals("twelve", db.find<TypedTask>(12)!!.title)
        assertEquals("ann", db.find<Person>("ann")!!._id)
        assertEquals(oid, db.find<AllTypes>(oid)!!._id)
        assertNull(db.find<TypedTask>(99L))
        assertNull(db.find<Person>("nobody"))
    }
}
