// The typed layer's one-crossing write path (BatchPath, JsonBatch): which batches take it, that
// every value it encodes reads back the same as through `Database.write(ops)`, its errors, and
// batches larger than its per-thread buffer.

package dev.tandem

import java.math.BigDecimal
import java.nio.file.Path
import java.time.Instant
import java.util.UUID
import org.junit.jupiter.api.AfterEach
import org.junit.jupiter.api.Assertions.assertArrayEquals
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertNotNull
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.BeforeEach
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows
import org.junit.jupiter.api.io.TempDir

/** Every value type the JSON batch spells, with no embedded object (those take the other path). */
data class Flat(
    @PrimaryKey val _id: Long,
    val s: String = "",
    val b: Boolean = false,
    val bytes: ByteArray = ByteArray(0),
    val d: Double = 0.0,
    val f: Float = 0f,
    val t: Instant = Instant.EPOCH,
    val dec: BigDecimal = BigDecimal.ZERO,
    val u: UUID = UUID(0, 0),
    val oid: ObjectId = ObjectId(ByteArray(12)),
    val ns: String? = null,
    val nd: Double? = null,
    val owner: Person? = null,
    val strings: List<String> = emptyList(),
    val maybeLongs: List<Long?> = emptyList(),
    val floats: Set<Double> = emptySet(),
    val scores: Map<String, Double?> = emptyMap(),
    val friends: List<Person> = emptyList(),
    val byRole: Map<String, Person?> = emptyMap(),
    val floats32: List<Float> = emptyList(),
)

/** A nullable primary key, and a link to such an object (the codec cannot spell that link). */
data class MaybeKeyed(@PrimaryKey val _id: Long?, val n: Long = 0)

data class Holder(@PrimaryKey val _id: Long, val target: MaybeKeyed? = null)

data class ByName(@PrimaryKey val name: String, val n: Long = 0)

data class ById(@PrimaryKey val _id: UUID, val oid: ObjectId? = null)

class BatchPathTest {
    @TempDir
    lateinit var dir: Path
    lateinit var db: TandemDatabase

    @BeforeEach
    fun open() {
        db = TandemDatabase.open(dir.resolve("batch.sqlite").toString(), Flat::class, ByName::class, ById::class, TypedTask::class, Holder::class)
    }

    @AfterEach
    fun close() {
        db.close()
    }

    /** The JSON of what [block] records, or null if it would cross as `WriteOp`s. */
    private fun json(block: TypedWrite.() -> Unit): String? {
        val w = TypedWrite(db)
        w.block()
        if (w.untyped) return null
        val pks = mapOf(
            "Flat" to "_id", "Person" to "_id", "ByName" to "name", "ById" to "_id", "Task" to "_id",
            "Holder" to "_id", "MaybeKeyed" to "_id",
        )
        return JsonBatch.encode(w.ops) { pks.getValue(it) }?.toString(Charsets.UTF_8)
    }

    private fun assertSameFlat(expected: Flat, actual: Flat?) {
        actual!!
        assertArrayEquals(expected.bytes, actual.bytes)
        assertEquals(expected, actual.copy(bytes = expected.bytes))
    }

    @Test
    fun whichBatchesTakeTheJsonPath() {
        assertEquals(
            """[["upsert","ByName",{"name":"a\"b\\c\n\u0001é","n":3}],["erase","ByName","x"]]""",
            json { add(ByName("a\"b\\c\n\u0001é", 3)); delete<ByName>("x") },
        )
        assertEquals(
            """[["create","ById",{"_id":"000000000000000100000000000000ff","oid":"0123456789abcdefabcdef01"}]]""",
            json { create(ById(UUID(1, 255), ObjectId("0123456789abcdefABCDEF01"))) },
        )
        // A flat object with collections: its upsert, then each collection cleared and filled.
        assertEquals(
            """[["upsert","Task",{"_id":1,"title":"t","done":true,"due":null,"owner":null}],""" +
                """["list_clear","Task",1,"tags"],["list_insert","Task",1,"tags",0,"x"],["set","Task",1,"address",null]]""",
            json { add(TypedTask(1, "t", done = true, tags = listOf("x"))) },
        )
        // An embedded object, or an untyped operation, sends the batch as WriteOps.
        assertNull(json { add(TypedTask(1, address = Address("Main St"))) })
        assertNull(json { add(ByName("a")); op(WriteOp.Erase("ByName", Key.String("b"))) })
        // A link to an object whose key is null ("null" would mean no link), and a string that
        // is not valid UTF-16, also take the WriteOp path.
        assertNull(json { add(Holder(1, MaybeKeyed(null))) })
        assertNotNull(json { add(Holder(1, MaybeKeyed(5))) })
        assertNull(json { add(ByName("lone \uD800 surrogate")) })
        // A float crosses widened to the double it equals.
        assertEquals("""[["upsert","ByName",{"name":"f","n":1}]]""", json { add(ByName("f", 1)) })
        assertTrue(json { add(Flat(1, f = 0.1f)) }!!.contains(""""f":0.10000000149011612"""))
    }

    @Test
    fun whatTheJsonCannotSpellIsWrittenAsBefore() {
        // The link to the null-keyed object goes through Database.write(ops): the same result
        // as a batch sent that way on purpose (an untyped no-op added), and the link reads back.
        db.write { add(Holder(1, MaybeKeyed(null, 7))) }
        db.write { add(Holder(2, MaybeKeyed(null, 7))); op(WriteOp.Erase("Holder", Key.Int(-1))) }
        assertEquals(db.find<Holder>(2L)!!.copy(_id = 1), db.find<Holder>(1L))
        assertEquals(MaybeKeyed(null, 7), db.find<Holder>(1L)!!.target)
        assertEquals(7L, db.find<MaybeKeyed>(null)!!.n)
        // A lone surrogate is refused before anything crosses, as the generated code does.
        assertThrows<Exception> { db.write { add(ByName("ok")); add(ByName("lone \uD800")) } }
        assertNull(db.find<ByName>("ok"))
    }

    @Test
    fun everyFlatValueReadsBackAsThroughWriteOps() {
        // Floats whose shortest text would be rounded twice (to double, then float) must still
        // read back bit for bit: a sample of finite bit patterns.
        val rng = java.util.Random(11)
        val floats32 = generateSequence { java.lang.Float.intBitsToFloat(rng.nextInt()) }
            .filter { it.isFinite() }.take(2000).toList() + listOf(Float.MIN_VALUE, -Float.MAX_VALUE, 1.0E-45f)
        val alice = Person("alice", "Alice")
        val bob = Person("bob", "Bob \"the\" builder\t\u0000")
        fun flat(id: Long) = Flat(
            _id = id,
            s = "quote \" backslash \\ slash / controls \u0000\u001f\b\u000c\n\r\t emoji \uD83D\uDE00 é ✓",
            b = true,
            bytes = byteArrayOf(0, 1, -1, 127, -128, 62, 63),
            d = Double.MIN_VALUE,
            f = Float.MAX_VALUE,
            t = Instant.ofEpochSecond(-2, 500_000_000),
            dec = BigDecimal("-123456789012345678901234567890.12"),
            u = UUID(0x0123456789abcdefL, -1L),
            oid = ObjectId("ffffffffffffffffffffffff"),
            ns = "",
            nd = 0.1,
            owner = alice,
            strings = listOf("", "\\", "\"", "b", "b"),
            maybeLongs = listOf(Long.MIN_VALUE, null, Long.MAX_VALUE),
            floats = setOf(Double.POSITIVE_INFINITY, Double.NEGATIVE_INFINITY, 1e300, -1.5e-300),
            scores = mapOf("x" to 1.5, "y" to null, "quote\"key" to Double.NaN, "" to 0.0),
            friends = listOf(bob, alice, bob),
            byRole = mapOf("lead" to alice, "none" to null),
            floats32 = floats32,
        )
        assertNotNull(json { add(flat(1)) })
        db.write { add(flat(1)) }
        // The same object through Database.write(ops): an untyped no-op sends the batch that way.
        db.write { add(flat(2)); op(WriteOp.Erase("Flat", Key.Int(-1))) }
        assertSameFlat(flat(1), db.find<Flat>(1L))
        assertSameFlat(flat(2), db.find<Flat>(2L))
        assertEquals(floats32.map { it.toRawBits() }, db.find<Flat>(1L)!!.floats32.map { it.toRawBits() })
        assertEquals(bob, db.find<Person>("bob"))
        // Float edge values: NaN and the infinities cross as the codec's strings.
        val read = db.find<Flat>(1L)!!
        assertTrue(read.scores.getValue("quote\"key")!!.isNaN())
        assertTrue(Double.NEGATIVE_INFINITY in read.floats)
        db.write { add(Flat(3, f = Float.NaN, d = Double.NEGATIVE_INFINITY, nd = null)) }
        val three = db.find<Flat>(3L)!!
        assertTrue(three.f.isNaN())
        assertEquals(Double.NEGATIVE_INFINITY, three.d)
        assertNull(three.nd)
        // Keys of every kind, and a property set alone.
        db.write {
            add(ByName("ünï \"cödé\"", 1))
            add(ById(UUID(-1, 0)))
            set(Flat::class, 3L, Flat::s, "set \\ alone")
        }
        assertEquals(1L, db.find<ByName>("ünï \"cödé\"")!!.n)
        assertNotNull(db.find<ById>(UUID(-1, 0)))
        assertEquals("set \\ alone", db.find<Flat>(3L)!!.s)
    }

    @Test
    fun errorsNameTheOperationAndWriteNothing() {
        db.write { add(ByName("a", 1)) }
        val e = assertThrows<TandemException.InvalidArgument> {
            db.write {
                add(ByName("b", 2))
                create(ByName("a", 3))
            }
        }
        assertTrue(e.message!!.contains("operation 1: "), e.message)
        assertNull(db.find<ByName>("b"))
        assertEquals(1L, db.find<ByName>("a")!!.n)
        // A decimal beyond decimal128 is refused by the codec, also naming the operation.
        val big = assertThrows<TandemException.InvalidArgument> {
            db.write { add(Flat(9, dec = BigDecimal("1e99999"))) }
        }
        assertTrue(big.message!!.contains("operation 0: "), big.message)
        assertNull(db.find<Flat>(9L))
        // The path keeps working after an error (its call status was replaced).
        db.write { add(ByName("c", 4)) }
        assertEquals(4L, db.find<ByName>("c")!!.n)
    }

    @Test
    fun manyAddsOfOnePlainModelCrossAsOneOperationOfRows() {
        val adds = (0 until 40L).map { ByName("row $it", it) }
        // The JSON is one `upsert_rows` operation (the store's bulk path).
        val ops = TypedWrite(db).apply { adds.forEach { add(it) } }.ops
        val rows = JsonBatch.encodeRows(ops) { "name" }!!.toString(Charsets.UTF_8)
        assertTrue(rows.startsWith("[[\"upsert_rows\",\"ByName\",[\"name\",\"n\"],[[\"row 0\",0],"), rows)
        db.write { adds.forEach { add(it) } }
        assertEquals(40L, db.query<ByName>().count().toLong())
        // Adding again writes the new values (an upsert per object).
        db.write { adds.forEach { add(it.copy(n = it.n + 100)) } }
        assertEquals(40L, db.query<ByName>().count().toLong())
        assertEquals(139L, db.find<ByName>("row 39")!!.n)
        // Creates cross as `rows`; an existing key fails the whole batch, naming its row.
        val e = assertThrows<TandemException.InvalidArgument> {
            db.write { (0 until 40L).forEach { create(ByName(if (it == 7L) "row 3" else "new $it", it)) } }
        }
        assertTrue(e.message!!.contains("operation 0: row 7: "), e.message)
        assertNull(db.find<ByName>("new 0"))
        // A batch that mixes in another operation crosses as WriteOps, as before.
        assertNull(JsonBatch.encodeRows(ops + WriteOp.Erase("ByName", Key.String("row 1"))) { "name" })
    }

    @Test
    fun largeBatchesAndManyThreads() {
        // A batch of more than JsonBatch.MAX_OPS operations (it crosses as WriteOps).
        val n = 2_000L
        val version = db.write { for (i in 0 until n) add(ByName("name $i".repeat(10), i)) }
        assertNotNull(version)
        assertEquals(n, db.query<ByName>().count().toLong())
        // Over the per-thread buffer (16 KiB) in few operations: native memory of its own.
        val long = "ü".repeat(20_000)
        assertTrue(json { add(ByName(long, 1)); add(ByName("after", 2)) }!!.toByteArray().size > 16 * 1024)
        db.write { add(ByName(long, 1)); add(ByName("after", 2)) }
        assertEquals(1L, db.find<ByName>(long)!!.n)
        // Four threads writing at once, each through its own buffer and status.
        val threads = (0 until 4).map { t ->
            Thread {
                for (i in 0 until 50L) db.write { add(ByName("t$t-$i", i)) }
            }
        }
        threads.forEach { it.start() }
        threads.forEach { it.join() }
        assertEquals(n + 202, db.query<ByName>().count().toLong())
        assertEquals(49L, db.find<ByName>("t3-49")!!.n)
        // After close, writing fails clearly and the path is not made again.
        db.close()
        assertThrows<IllegalStateException> { db.write { add(ByName("late")) } }
        db = TandemDatabase.open(dir.resolve("batch.sqlite").toString(), Flat::class, ByName::class, ById::class, TypedTask::class)
        assertNull(db.find<ByName>("late"))
    }

    /**
     * count, toList, first, get and find cross once each (`batch_count`, `batch_rows`,
     * `batch_object`) and agree with the untyped results, for queries with arguments of several
     * types (multi-byte text, whose encoded size is below its bound), past the per-thread buffer,
     * matching none, one or many.
     */
    @Test
    fun readsOfOneCrossingAgreeWithTheUntypedResults() {
        val names = (0 until 40).map { "n$it-" + "é€😀".repeat(it % 4) }
        db.write { for ((i, name) in names.withIndex()) add(ByName(name, i.toLong())) }
        val long = "ü".repeat(10_000) // the request is over the 16 KiB buffer
        db.write { add(ByName(long, 99)) }
        val queries: List<Pair<String, Array<Any?>>> = listOf(
            "TRUEPREDICATE SORT(n DESC)" to arrayOf(),
            "n >= \$0 AND n < \$1 SORT(name ASC)" to arrayOf(5L, 17L),
            "name == \$0" to arrayOf(names[7]),
            "name == \$0" to arrayOf(long),
            "name BEGINSWITH \$0" to arrayOf("nope"),
        )
        for ((filter, args) in queries) {
            val results = db.query<ByName>(filter, *args)
            val list = results.toList()
            // The untyped results, made on first use, say the same.
            val keys = results.raw.keys().map { (it as Key.String).value }
            assertEquals(keys, list.map { it.name }, filter)
            assertEquals(keys.size, results.count(), filter)
            assertEquals(list.firstOrNull(), results.firstOrNull(), filter)
            for ((i, expected) in list.withIndex()) {
                assertEquals(expected, results[i], filter)
                assertEquals(expected, db.find<ByName>(expected.name), filter)
            }
            val past = assertThrows<IndexOutOfBoundsException> { results[list.size] }
            assertEquals("index ${list.size}, ${list.size} results", past.message)
            assertThrows<IndexOutOfBoundsException> { results[-1] }
            if (list.isEmpty()) assertThrows<NoSuchElementException> { results.first() }
            results.close()
        }
        assertEquals(99L, db.find<ByName>(long)!!.n)
        assertNull(db.find<ByName>("missing"))
        // A filter that does not compile is refused when the results are made.
        assertThrows<TandemException.InvalidArgument> { db.query<ByName>("nosuch == 1") }
        assertThrows<TandemException.InvalidArgument> { db.query<ByName>("n == \$0") }
        // After close every read says so, and close of the results still works.
        val kept = db.query<ByName>("n < 3")
        assertEquals(3, kept.count())
        db.close()
        val closed = assertThrows<IllegalStateException> { kept.count() }
        assertEquals(TandemDatabase.CLOSED, closed.message)
        assertThrows<IllegalStateException> { kept.toList() }
        assertThrows<IllegalStateException> { kept.firstOrNull() }
        kept.close()
        db = TandemDatabase.open(dir.resolve("batch.sqlite").toString(), Flat::class, ByName::class, ById::class, TypedTask::class)
    }
}
