// The typed layer: annotated model classes, one-batch writes, typed reads and queries, Flows,
// rollback, and the errors for models it cannot map.

package dev.tandem

import java.math.BigDecimal
import java.nio.file.Path
import java.time.Instant
import java.util.UUID
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.jupiter.api.AfterEach
import org.junit.jupiter.api.Assertions.assertArrayEquals
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertNotEquals
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.BeforeEach
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows
import org.junit.jupiter.api.io.TempDir

@Embedded
data class Geo(val lat: Double = 0.0, val lon: Double = 0.0)

@Embedded
data class Address(
    val street: String = "",
    val city: String? = null,
    val tags: List<String> = emptyList(),
    val geo: Geo? = null,
)

data class Person(@PrimaryKey val _id: String, val name: String = "")

@TandemClass("Task")
data class TypedTask(
    @PrimaryKey val _id: Long,
    val title: String = "",
    val done: Boolean = false,
    val due: Instant? = null,
    val tags: List<String> = emptyList(),
    val owner: Person? = null,
    val address: Address? = null,
)

@TandemClass("Everything")
data class AllTypes(
    @PrimaryKey val _id: ObjectId,
    val i: Int = 0,
    val l: Long = 0,
    val s: String = "",
    val b: Boolean = false,
    val bytes: ByteArray = ByteArray(0),
    val d: Double = 0.0,
    val f: Float = 0f,
    val t: Instant = Instant.EPOCH,
    val dec: BigDecimal = BigDecimal.ZERO,
    val u: UUID = UUID(0, 0),
    val oid: ObjectId = ObjectId(ByteArray(12)),
    val ni: Int? = null,
    val nl: Long? = null,
    val ns: String? = null,
    val nb: Boolean? = null,
    val nbytes: ByteArray? = null,
    val nd: Double? = null,
    val nf: Float? = null,
    val nt: Instant? = null,
    val ndec: BigDecimal? = null,
    val nu: UUID? = null,
    val noid: ObjectId? = null,
    val strings: List<String> = emptyList(),
    val maybeLongs: List<Long?> = emptyList(),
    val uuids: Set<UUID> = emptySet(),
    val scores: Map<String, Double?> = emptyMap(),
    val times: List<Instant> = emptyList(),
    val friends: List<Person> = emptyList(),
    val byRole: Map<String, Person?> = emptyMap(),
    val team: Set<Person> = emptySet(),
    val address: Address? = null,
    val addresses: List<Address> = emptyList(),
    val places: Map<String, Address?> = emptyMap(),
)

// Bad models: each must be refused with a clear message.
data class NoKey(val title: String = "")
data class TwoKeys(@PrimaryKey val a: Long, @PrimaryKey val b: Long)
data class BadType(@PrimaryKey val _id: Long, val where: java.net.URI? = null)
data class NonNullLink(@PrimaryKey val _id: Long, val owner: Person)
data class BadKeyType(@PrimaryKey val _id: Double)

data class Ticket(
    @PrimaryKey val _id: Long,
    @Index val owner: String = "",
    @Index val priority: Long = 0,
    val title: String = "",
)
data class BadIndex(@PrimaryKey val _id: Long, @Index val tags: List<String> = emptyList())

class TypedTest {
    @TempDir
    lateinit var dir: Path
    lateinit var db: TandemDatabase

    @BeforeEach
    fun open() {
        db = TandemDatabase.open(dir.resolve("typed.sqlite").toString(), TypedTask::class, AllTypes::class)
    }

    @AfterEach
    fun close() {
        db.close()
    }

    private fun assertSameAll(expected: AllTypes, actual: AllTypes?) {
        actual!!
        assertArrayEquals(expected.bytes, actual.bytes)
        if (expected.nbytes == null) assertNull(actual.nbytes) else assertArrayEquals(expected.nbytes, actual.nbytes)
        // The byte arrays compared, the rest compares as data.
        assertEquals(expected, actual.copy(bytes = expected.bytes, nbytes = expected.nbytes))
    }

    @Test
    fun everyTypeRoundTrips() {
        val alice = Person("alice", "Alice")
        val bob = Person("bob", "Bob")
        val all = AllTypes(
            _id = ObjectId.generate(),
            i = Int.MIN_VALUE,
            l = Long.MAX_VALUE,
            s = "héllo ✓",
            b = true,
            bytes = byteArrayOf(0, 1, -1, 127, -128),
            d = -1.5e300,
            f = 3.25f,
            t = Instant.parse("2024-03-01T12:34:56.123456789Z"),
            dec = BigDecimal("-123456789012345678901234567890.12"),
            u = UUID.randomUUID(),
            oid = ObjectId("0123456789abcdefABCDEF01"),
            ni = 7, nl = -7, ns = "", nb = false, nbytes = byteArrayOf(9), nd = 0.1, nf = -0.5f,
            nt = Instant.ofEpochSecond(-2, 500_000_000), // before 1970, with nanoseconds
            ndec = BigDecimal("1.20"),
            nu = UUID(0x0123456789abcdefL, -1L),
            noid = ObjectId.generate(),
            strings = listOf("b", "a", "b"),
            maybeLongs = listOf(1L, null, 3L),
            uuids = setOf(UUID(1, 2), UUID(3, 4)),
            scores = mapOf("x" to 1.5, "y" to null),
            times = listOf(Instant.ofEpochSecond(0, 1), Instant.ofEpochSecond(-1, 999_999_999)),
            friends = listOf(bob, alice),
            byRole = mapOf("lead" to alice, "none" to null),
            team = setOf(alice, bob),
            address = Address("Main St", "Paris", listOf("home", "blue"), Geo(48.85, 2.35)),
            addresses = listOf(Address("A"), Address("B", null, listOf("x"), Geo(1.0, 2.0))),
            places = mapOf("work" to Address("Rue 2", geo = Geo(3.0, 4.0)), "gone" to null),
        )
        db.write { add(all) }
        val read = db.find<AllTypes>(all._id)
        assertSameAll(all, read)
        assertEquals(-2, read!!.nt!!.epochSecond)
        assertEquals(500_000_000, read.nt!!.nano)
        assertEquals(123_456_789, read.t.nano)
        // Linked objects were written with their owner, once each.
        assertEquals(alice, db.find<Person>("alice"))
        assertEquals(2, db.query<Person>().count())
        // The same, through a query.
        assertSameAll(all, db.query<AllTypes>().first())
    }

    @Test
    fun indexedPropertiesAreQueriedAndRefusedWhereRealmRefusesThem() {
        val tickets = TandemDatabase.open(dir.resolve("indexed.sqlite").toString(), Ticket::class)
        tickets.write {
            for (i in 0L until 50L) add(Ticket(i, "u${i % 5}", i % 10, "t$i"))
        }
        assertEquals((3L until 50L step 5).toList(), tickets.query<Ticket>("owner == $0", "u3").toList().map { it._id })
        assertEquals(
            listOf(8L, 18L, 28L, 38L, 48L),
            tickets.query<Ticket>("priority >= $0 AND priority < $1", 8L, 9L).toList().map { it._id },
        )
        tickets.close()
        val e = assertThrows<TandemException.Schema> {
            TandemDatabase.open(dir.resolve("bad.sqlite").toString(), BadIndex::class)
        }
        assertTrue(e.message!!.contains("index"), e.message)
    }

    @Test
    fun nullsAndDefaultsRoundTrip() {
        val empty = AllTypes(_id = ObjectId.generate())
        val task = TypedTask(1)
        db.write {
            add(empty)
            add(task)
        }
        assertSameAll(empty, db.find<AllTypes>(empty._id))
        assertEquals(task, db.find<TypedTask>(1L))
        assertNull(db.find<TypedTask>(2L))
    }

    @Test
    fun openingRegistersTheShutdownHookThatClosesCallbacks() {
        // `db` is open: the hook is registered (removing it says so), exactly once.
        assertTrue(Runtime.getRuntime().removeShutdownHook(TandemDatabase.exitHook))
        assertFalse(Runtime.getRuntime().removeShutdownHook(TandemDatabase.exitHook))
        Runtime.getRuntime().addShutdownHook(TandemDatabase.exitHook)
    }

    @Test
    fun decimalsAreExact() {
        val texts = listOf("-123456789012345678901234567890.12", "0.1", "1.20", "-0.5", "1E+10", "0", "9999999999999999999999999999999999E-20")
        db.write {
            texts.forEachIndexed { i, t -> add(AllTypes(_id = ObjectId(ByteArray(12) { i.toByte() }), dec = BigDecimal(t))) }
        }
        texts.forEachIndexed { i, t ->
            val read = db.find<AllTypes>(ObjectId(ByteArray(12) { i.toByte() }))!!.dec
            assertEquals(BigDecimal(t), read, t) // equals: same value and same scale
        }
        // Stored as the exact decimal text.
        val raw = db.raw.`object`("Everything", Key.ObjectId(ByteArray(12)))!!["dec"]
        assertEquals(FieldValue.Single(Value.Decimal("-12345678901234567890123456789012E-2")), raw)
        // Beyond decimal128's 34 digits: refused, nothing written.
        val id = ObjectId.generate()
        assertThrows<TandemException.InvalidArgument> {
            db.write { add(AllTypes(_id = id, dec = BigDecimal("1234567890123456789012345678901234567890"))) }
        }
        assertNull(db.find<AllTypes>(id))
    }

    @Test
    fun linksAndEmbeddedObjects() {
        val ann = Person("ann", "Ann")
        db.write {
            add(TypedTask(1, "walk", owner = ann, address = Address("Elm", tags = listOf("t"), geo = Geo(1.0, 2.0))))
            add(TypedTask(2, "run", owner = ann))
        }
        val one = db.find<TypedTask>(1L)!!
        assertEquals(ann, one.owner)
        assertEquals(Address("Elm", null, listOf("t"), Geo(1.0, 2.0)), one.address)
        assertEquals(ann, db.find<TypedTask>(2L)!!.owner)
        // The link is to the stored Person: renaming it shows through the tasks.
        db.write { add(Person("ann", "Annie")) }
        assertEquals("Annie", db.find<TypedTask>(1L)!!.owner!!.name)
        // Deleting the target clears the link.
        db.write { delete<Person>("ann") }
        assertNull(db.find<TypedTask>(2L)!!.owner)
        // One property, typed.
        db.write { set(TypedTask::class, 2L, TypedTask::address, Address("Oak")) }
        assertEquals(Address("Oak"), db.find<TypedTask>(2L)!!.address)
        db.write { set(TypedTask::class, 2L, TypedTask::title, "sprint") }
        assertEquals("sprint", db.find<TypedTask>(2L)!!.title)
        // The schema comes from the classes, link targets and embedded classes included.
        val schema = TandemDatabase.schema(TypedTask::class).associateBy { it.name }
        assertEquals(setOf("Task", "Person", "Address", "Geo"), schema.keys)
        assertNull(schema["Address"]!!.primaryKey)
        assertEquals(
            PropertySpec("owner", PropertyType.LINK, true, Collection.SINGLE, "Person"),
            schema["Task"]!!.properties.single { it.name == "owner" },
        )
        assertEquals(
            PropertySpec("tags", PropertyType.STRING, false, Collection.LIST, null),
            schema["Task"]!!.properties.single { it.name == "tags" },
        )
    }

    @Test
    fun addThenUpsertReplacesCollections() {
        val id = ObjectId.generate()
        val first = AllTypes(
            _id = id, s = "first", strings = listOf("a", "b", "c"), uuids = setOf(UUID(1, 1), UUID(2, 2)),
            scores = mapOf("x" to 1.0, "y" to 2.0), friends = listOf(Person("p1"), Person("p2")),
            team = setOf(Person("p1")), byRole = mapOf("a" to Person("p2")),
            address = Address("Old", "Lyon", listOf("o1", "o2"), Geo(1.0, 1.0)),
            addresses = listOf(Address("A1"), Address("A2"), Address("A3")),
            places = mapOf("home" to Address("H"), "work" to Address("W")),
        )
        val second = AllTypes(
            _id = id, s = "second", strings = listOf("z"), uuids = setOf(UUID(3, 3)),
            scores = mapOf("y" to 5.0), friends = listOf(Person("p3")),
            team = setOf(Person("p2"), Person("p3")), byRole = mapOf("b" to null),
            address = Address("New", tags = listOf("n")),
            addresses = listOf(Address("B1")),
            places = mapOf("work" to Address("W2")),
        )
        db.write { add(first) }
        assertSameAll(first, db.find<AllTypes>(id))
        db.write { add(second) }
        assertSameAll(second, db.find<AllTypes>(id))
        // An embedded object and every collection back to empty.
        val cleared = AllTypes(_id = id)
        db.write { add(cleared) }
        assertSameAll(cleared, db.find<AllTypes>(id))
        // Add then upsert in one batch: the second wins.
        db.write {
            add(TypedTask(9, "one", tags = listOf("a", "b")))
            add(TypedTask(9, "two", tags = listOf("c")))
        }
        assertEquals(TypedTask(9, "two", tags = listOf("c")), db.find<TypedTask>(9L))
    }

    @Test
    fun deleteByKeyAndByObject() {
        db.write {
            for (i in 1L..4L) add(TypedTask(i, "t$i"))
        }
        db.write {
            delete<TypedTask>(2L)
            delete(TypedTask(3))
            delete(TypedTask::class, 4L)
        }
        assertEquals(listOf(TypedTask(1, "t1")), db.query<TypedTask>().toList())
        // Deleting a missing object does nothing.
        db.write { delete<TypedTask>(42L) }
        assertEquals(1, db.query<TypedTask>().count())
        // Creating an existing object fails the whole batch: nothing of it is written.
        val e = assertThrows<TandemException.InvalidArgument> {
            db.write {
                add(TypedTask(5, "new"))
                create(TypedTask(1, "again"))
            }
        }
        assertTrue(e.message!!.contains("operation "), e.message)
        assertNull(db.find<TypedTask>(5L))
        assertEquals(TypedTask(1, "t1"), db.find<TypedTask>(1L))
        db.write { create(TypedTask(7, "created")) }
        assertEquals("created", db.find<TypedTask>(7L)!!.title)
        db.write { delete<TypedTask>(7L) }
        // An untyped write through `raw`, read typed.
        db.raw.write { tx -> tx.create("Task", Key.Int(6), mapOf("title" to Value.String("raw"))) }
        assertEquals(TypedTask(6, "raw"), db.find<TypedTask>(6L))
    }

    @Test
    fun queriesWithArgs() {
        val noon = Instant.parse("2025-01-01T12:00:00Z")
        val bob = Person("bob")
        db.write {
            add(TypedTask(1, "buy milk", done = false, due = noon.minusSeconds(60)))
            add(TypedTask(2, "buy bread", done = true, due = noon.plusSeconds(60), owner = bob))
            add(TypedTask(3, "milk the cow", done = false, owner = bob))
            add(TypedTask(4, "sleep", done = false))
        }
        val open = db.query<TypedTask>("done == $0 AND title CONTAINS $1 SORT(_id DESC)", false, "milk")
        assertEquals(2, open.count())
        assertEquals(listOf(3L, 1L), open.toList().map { it._id })
        assertEquals(3L, open[0]._id)
        assertEquals(1L, open[1]._id)
        assertEquals(3L, open.first()._id)
        assertEquals(listOf(3L, 1L), open.map { it._id }) // Iterable
        assertThrows<IndexOutOfBoundsException> { open[2] }
        assertEquals(listOf(1L), db.query<TypedTask>("due < $0", noon).map { it._id })
        assertEquals(listOf(2L, 3L), db.query<TypedTask>("owner == $0 SORT(_id ASC)", bob).map { it._id })
        assertEquals(listOf(4L), db.query<TypedTask>("title == $0", "sleep").map { it._id })
        val none = db.query<TypedTask>("title == $0", "nothing")
        assertTrue(none.isEmpty())
        assertNull(none.firstOrNull())
        assertThrows<NoSuchElementException> { none.first() }
        // Live: the same results see a later write.
        db.write { add(TypedTask(5, "milk again")) }
        assertEquals(listOf(5L, 3L, 1L), open.map { it._id })
        assertThrows<TandemException.InvalidArgument> { db.query<TypedTask>("title ==") }
        assertThrows<IllegalArgumentException> { db.query<TypedTask>("title == $0", java.net.URI("x:y")) }
    }

    @Test
    fun asFlowEmitsTheListThenAfterEachChange() = runBlocking {
        val results = db.query<TypedTask>("done == false SORT(_id ASC)")
        val seen = Channel<List<TypedTask>>(Channel.UNLIMITED)
        val job = launch(Dispatchers.Default) { results.asFlow().collect { seen.send(it) } }
        withTimeout(30_000) {
            assertEquals(emptyList<TypedTask>(), seen.receive())
            db.writeAsync { add(TypedTask(1, "a")) }
            var list = seen.receive()
            while (list.size < 1) list = seen.receive()
            assertEquals(listOf(TypedTask(1, "a")), list)
            db.writeAsync { add(TypedTask(1, "a", done = true)) } // leaves the results
            list = seen.receive()
            while (list.isNotEmpty()) list = seen.receive()
            db.writeAsync { add(TypedTask(2, "b")) }
            list = seen.receive()
            while (list.isEmpty()) list = seen.receive()
            assertEquals(listOf(TypedTask(2, "b")), list)
        }
        job.cancel()
    }

    @Test
    fun changesStartWithTheInitialResultsThenIndices() = runBlocking {
        db.write { add(TypedTask(1, "a")); add(TypedTask(2, "b")) }
        val results = db.query<TypedTask>("TRUEPREDICATE SORT(_id ASC)")
        val seen = Channel<TypedResultsChange<TypedTask>>(Channel.UNLIMITED)
        val flow = results.changes()
        val job = launch(Dispatchers.Default) { flow.collect { seen.send(it) } }
        withTimeout(30_000) {
            val initial = seen.receive()
            assertTrue(initial.initial)
            assertEquals(listOf(0, 1), initial.insertions)
            assertEquals(listOf(TypedTask(1, "a"), TypedTask(2, "b")), initial.objects)
            db.writeAsync { delete<TypedTask>(1L); add(TypedTask(3, "c")) }
            val change = seen.receive()
            assertFalse(change.initial)
            assertEquals(listOf(0), change.deletions)
            assertEquals(listOf(1), change.insertions)
            assertEquals(listOf(TypedTask(2, "b"), TypedTask(3, "c")), change.objects)
            // A second collection of the same flow starts from its own initial results.
            val again = flow.first()
            assertTrue(again.initial)
            assertEquals(listOf(TypedTask(2, "b"), TypedTask(3, "c")), again.objects)
        }
        job.cancel()
    }

    @Test
    fun objectFlowEmitsChangesThenNullWhenDeleted() = runBlocking {
        db.write { add(TypedTask(1, "first")) }
        val seen = Channel<TypedTask?>(Channel.UNLIMITED)
        val job = launch(Dispatchers.Default) {
            db.objectFlow<TypedTask>(1L).collect { seen.send(it) }
            seen.close() // completes after the deletion
        }
        withTimeout(30_000) {
            assertEquals(TypedTask(1, "first"), seen.receive())
            db.writeAsync { add(TypedTask(1, "second")) }
            assertEquals(TypedTask(1, "second"), seen.receive())
            db.writeAsync { delete<TypedTask>(1L) }
            assertNull(seen.receive())
            assertNull(seen.receiveCatching().getOrNull(), "the flow completed")
            // A missing object: null, then completion.
            var values = 0
            db.objectFlow<TypedTask>(99L).collect {
                assertNull(it)
                values++
            }
            assertEquals(1, values)
        }
        job.join()
    }

    @Test
    fun anExceptionInTheBlockWritesNothing() {
        db.write { add(TypedTask(1, "kept")) }
        val e = assertThrows<IllegalStateException> {
            db.write {
                add(TypedTask(1, "changed", tags = listOf("x")))
                add(TypedTask(2, "new"))
                delete<TypedTask>(1L)
                throw IllegalStateException("changed my mind")
            }
        }
        assertEquals("changed my mind", e.message)
        assertEquals(TypedTask(1, "kept"), db.find<TypedTask>(1L))
        assertNull(db.find<TypedTask>(2L))
        assertEquals(1, db.query<TypedTask>().count())
        // An empty batch writes nothing and returns null; a real one returns the new version.
        assertNull(db.write { })
        val v1 = db.write { add(TypedTask(3)) }!!
        val v2 = db.write { add(TypedTask(4)) }!!
        assertTrue(v2 > v1)
    }

    @Test
    fun badModelsAreRefusedWithTheirClassAndProperty() {
        val path = dir.resolve("bad.sqlite").toString()
        val noKey = assertThrows<TandemModelException> { TandemDatabase.open(path, NoKey::class) }
        assertEquals("NoKey", noKey.className)
        assertNull(noKey.property)
        assertTrue("no @PrimaryKey" in noKey.message!!, noKey.message)

        val twoKeys = assertThrows<TandemModelException> { TandemDatabase.open(path, TwoKeys::class) }
        assertEquals("b", twoKeys.property)

        val badType = assertThrows<TandemModelException> { TandemDatabase.open(path, BadType::class) }
        assertEquals("BadType", badType.className)
        assertEquals("where", badType.property)
        assertTrue("java.net.URI" in badType.message!!, badType.message)

        val link = assertThrows<TandemModelException> { TandemDatabase.open(path, NonNullLink::class) }
        assertEquals("owner", link.property)
        assertTrue("must be nullable" in link.message!!, link.message)

        val keyType = assertThrows<TandemModelException> { TandemDatabase.open(path, BadKeyType::class) }
        assertTrue("primary key must be" in keyType.message!!, keyType.message)

        // A class the database was not opened with.
        assertThrows<IllegalArgumentException> { db.find<NoKey>(1L) }
        // An embedded class cannot be added on its own.
        assertThrows<IllegalArgumentException> { db.write { add(Address("x")) } }
    }

    @Test
    fun objectIdsAndReopening() = runBlocking {
        val a = ObjectId.generate()
        val b = ObjectId.generate()
        assertNotEquals(a, b)
        assertTrue(a < b)
        assertEquals(a, ObjectId(a.toHexString()))
        assertEquals(a, ObjectId(a.toByteArray()))
        assertEquals(24, a.toString().length)
        assertTrue(Instant.now().epochSecond - a.timestamp.epochSecond in 0..5)
        assertThrows<IllegalArgumentException> { ObjectId("xyz") }
        assertThrows<IllegalArgumentException> { ObjectId(ByteArray(11)) }

        db.writeAsync { add(AllTypes(_id = a, s = "persisted")) }
        db.close()
        db = TandemDatabase.open(dir.resolve("typed.sqlite").toString(), TypedTask::class, AllTypes::class)
        assertEquals("persisted", db.find<AllTypes>(a)!!.s)
        assertFalse(db.query<AllTypes>("s == $0", "other").iterator().hasNext())
    }
}
