// The local database from Kotlin: schema, writes, queries, listeners, errors
// (mirrors bindings/python/tests/test_database.py).

package dev.tandem

import java.nio.file.Path
import java.util.concurrent.CopyOnWriteArrayList
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.async
import kotlinx.coroutines.delay
import kotlinx.coroutines.flow.take
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.jupiter.api.AfterEach
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.BeforeEach
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows
import org.junit.jupiter.api.io.TempDir

class DatabaseTest {
    @TempDir
    lateinit var dir: Path
    lateinit var db: Database

    @BeforeEach
    fun open() {
        db = Database.open(dir.resolve("db.sqlite").toString(), taskClasses())
    }

    @AfterEach
    fun close() {
        db.close()
    }

    private fun title(key: Long): String? {
        val obj = db.`object`("Task", intKey(key)) ?: return null
        return ((obj["title"] as FieldValue.Single).value as Value.String).value
    }

    @Test
    fun writeReadQuery() {
        db.write { tx ->
            for (i in 0L until 5L) {
                tx.create("Task", intKey(i), mapOf("title" to str("t$i"), "done" to Value.Bool(i % 2 == 0L)))
            }
            tx.listInsert("Task", intKey(0), "tags", 0u, str("red"))
        }
        assertEquals("t3", title(3))
        assertEquals(FieldValue.ListValue(listOf(str("red"))), db.`object`("Task", intKey(0))!!["tags"])
        val done = db.query("Task", "done == true SORT(_id DESC)", emptyList())
        assertEquals(listOf(intKey(4), intKey(2), intKey(0)), done.keys())
        assertEquals(2uL, db.query("Task", "_id > $0", listOf(Value.Int(2))).count())
    }

    @Test
    fun anExceptionRollsTheBlockBack() {
        val e = assertThrows<IllegalStateException> {
            db.write { tx ->
                tx.create("Task", intKey(1), mapOf("title" to str("never")))
                throw IllegalStateException("changed my mind")
            }
        }
        assertEquals("changed my mind", e.message)
        assertNull(db.`object`("Task", intKey(1)))
    }

    @Test
    fun badInputIsATypedErrorAndWritesNothing() {
        val e = assertThrows<TandemException.InvalidArgument> {
            db.write { tx ->
                tx.create("Task", intKey(1), mapOf("title" to str("ok")))
                tx.set("Task", intKey(1), "nope", Value.Int(1))
            }
        }
        assertTrue("nope" in e.message.toString(), e.message)
        assertNull(db.`object`("Task", intKey(1)))
        assertThrows<TandemException.InvalidArgument> { db.query("Task", "title ==", emptyList()) }
        assertThrows<TandemException.Schema> {
            Database.open(dir.resolve("x.sqlite").toString(), listOf(ClassSpec("X", "missing", emptyList())))
        }
        // Every typed error is a TandemException.
        assertThrows<TandemException> { db.query("Nope", "TRUEPREDICATE", emptyList()) }
    }

    class Collect : ResultsListener {
        val changes: MutableList<ResultsChange> = CopyOnWriteArrayList()
        override fun onChange(change: ResultsChange) {
            changes.add(change)
        }
    }

    class Throws : ResultsListener {
        override fun onChange(change: ResultsChange): Unit = throw IllegalArgumentException("a listener that throws")
    }

    @Test
    fun resultsListenerIndicesAndAThrowingListener() {
        db.write { tx ->
            for (i in 0L until 3L) tx.create("Task", intKey(i), mapOf("title" to str("t$i")))
        }
        val results = db.query("Task", "TRUEPREDICATE SORT(_id ASC)", emptyList())
        val bad = results.observe(Throws())
        val good = Collect()
        val handle = results.observe(good)
        db.write { tx ->
            tx.erase("Task", intKey(0))
            tx.create("Task", intKey(5), mapOf("title" to str("t5")))
            tx.set("Task", intKey(2), "title", str("changed"))
        }
        eventually { good.changes.size >= 1 }
        val change = good.changes.last()
        assertEquals(listOf(0uL), change.deletions)
        assertEquals(listOf(2uL), change.insertions)
        assertEquals(listOf(1uL), change.modifications)
        assertEquals(listOf(intKey(1), intKey(2), intKey(5)), change.keys)
        handle.cancel()
        bad.cancel()
        db.write { tx -> tx.erase("Task", intKey(5)) }
        Thread.sleep(300)
        assertEquals(1, good.changes.size, "no delivery after cancel()")
    }

    class WritesBack(private val db: Database) : ObjectListener {
        val seen: MutableList<ObjectChange> = CopyOnWriteArrayList()
        override fun onChange(change: ObjectChange) {
            seen.add(change)
            if (seen.size == 1) {
                // Writing from inside the callback must not deadlock.
                db.write { tx -> tx.add("Task", intKey(1), "count", 10) }
            }
        }
    }

    @Test
    fun objectListenerMayWriteToTheDatabase() {
        db.write { tx -> tx.create("Task", intKey(1), mapOf("title" to str("x"))) }
        val listener = WritesBack(db)
        val handle = db.observeObject("Task", intKey(1), listener)
        db.write { tx -> tx.set("Task", intKey(1), "title", str("y")) }
        eventually { listener.seen.size >= 2 }
        assertEquals(ObjectChange.Modified(listOf("title")), listener.seen[0])
        assertEquals(ObjectChange.Modified(listOf("count")), listener.seen[1])
        assertEquals(FieldValue.Single(Value.Int(10)), db.`object`("Task", intKey(1))!!["count"])
        handle.cancel()
    }

    @Test
    fun resultsChangesAsAFlow() = runBlocking {
        db.write { tx -> tx.create("Task", intKey(0), mapOf("title" to str("before"))) }
        val results = db.query("Task", "TRUEPREDICATE SORT(_id ASC)", emptyList())
        val two = async(Dispatchers.Default) { withTimeout(30_000) { results.changes().take(2).toList() } }
        // The listener registers when collection starts; write until it has seen a change.
        var i = 1L
        while (!two.isCompleted) {
            db.write { tx -> tx.create("Task", intKey(i++), mapOf("title" to str("f"))) }
            delay(50)
        }
        val (initial, change) = two.await()
        assertEquals(initial.keys.indices.map { it.toULong() }, initial.insertions, initial.toString())
        assertTrue(intKey(0) in initial.keys, initial.toString())
        assertTrue(change.insertions.isNotEmpty(), change.toString())
        assertTrue(change.insertions.all { it < change.keys.size.toULong() }, change.toString())
    }

    /** Realm's indices applied to a list of keys: deletions from the old, insertions from the new. */
    private fun apply(keys: List<Key>, change: ResultsChange): List<Key> {
        val gone = change.deletions.map { it.toInt() }.toSet()
        val kept = keys.filterIndexed { index, _ -> index !in gone }.toMutableList()
        for (index in change.insertions.map { it.toInt() }.sorted()) kept.add(index, change.keys[index])
        return kept
    }

    @Test
    fun changesStartExactlyWhereTheFirstChangeBegins() = runBlocking {
        // A writer commits during the registrations: the starting results plus every change,
        // applied in order, must give each change's own keys (a commit between reading the
        // starting results and registering would break the chain).
        val stop = java.util.concurrent.atomic.AtomicBoolean(false)
        val writer = Thread {
            var i = 0L
            while (!stop.get()) {
                db.write { tx ->
                    tx.create("Task", intKey(i), mapOf("title" to str("w")))
                    if (i >= 3) tx.erase("Task", intKey(i - 3))
                }
                i++
            }
        }
        writer.start()
        try {
            repeat(10) {
                val results = db.query("Task", "TRUEPREDICATE SORT(_id ASC)", emptyList())
                val seen = withTimeout(30_000) { results.changes().take(4).toList() }
                var keys = seen[0].keys
                assertEquals(keys.indices.map { it.toULong() }, seen[0].insertions)
                for (change in seen.drop(1)) {
                    keys = apply(keys, change)
                    assertEquals(change.keys, keys)
                }
            }
        } finally {
            stop.set(true)
            writer.join()
        }
    }

    class ObjectCollect : ObjectListener {
        val seen: MutableList<ObjectChange> = CopyOnWriteArrayList()
        override fun onChange(change: ObjectChange) {
            seen.add(change)
        }
    }

    @Test
    fun linkedChangesNotifyAndKeyPathsNarrowThem() {
        fun prop(name: String, type: PropertyType, target: String? = null) = PropertySpec(
            name = name, propertyType = type, nullable = target != null,
            collection = Collection.SINGLE, linkTarget = target,
        )
        val linked = Database.open(
            dir.resolve("linked.sqlite").toString(),
            listOf(
                ClassSpec("Person", "_id", listOf(prop("_id", PropertyType.INT), prop("nick", PropertyType.STRING), prop("dog", PropertyType.LINK, "Dog"))),
                ClassSpec("Dog", "_id", listOf(prop("_id", PropertyType.INT), prop("name", PropertyType.STRING), prop("age", PropertyType.INT))),
            ),
        )
        linked.write { tx ->
            tx.create("Dog", intKey(1), emptyMap())
            tx.create("Person", intKey(2), mapOf("dog" to Value.Link("Dog", intKey(1))))
        }
        val all = ObjectCollect()
        val filtered = ObjectCollect()
        val handles = listOf(
            linked.observeObject("Person", intKey(2), all),
            linked.observeObject("Person", intKey(2), filtered, listOf("nick", "dog.name")),
        )
        linked.write { tx -> tx.set("Dog", intKey(1), "age", Value.Int(3)) } // off the key paths
        eventually { all.seen.size >= 1 }
        linked.write { tx -> tx.set("Person", intKey(2), "nick", str("P")) }
        eventually { all.seen.size >= 2 }
        linked.write { tx -> tx.set("Dog", intKey(1), "name", str("Rex")) }
        eventually { all.seen.size >= 3 && filtered.seen.size >= 2 }
        val dog = ObjectChange.Modified(listOf("dog"))
        val nick = ObjectChange.Modified(listOf("nick"))
        assertEquals(listOf(dog, nick, dog), all.seen.toList())
        assertEquals(listOf(nick, dog), filtered.seen.toList())
        assertThrows<TandemException.InvalidArgument> {
            linked.observeObject("Person", intKey(2), all, listOf("dog.nme"))
        }
        handles.forEach { it.cancel() }
        linked.close()
    }
}
