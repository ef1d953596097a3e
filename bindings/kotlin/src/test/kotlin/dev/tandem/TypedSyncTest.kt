// Two typed clients syncing through a real tandem-server (partition-based sync, path /todos):
// a model with every Kotlin type the typed layer maps (TypedTest's AllTypes: scalars, nullable
// ones, lists, sets, dictionaries, links, embedded objects) written on A is read back equal on B,
// then changed on A (collections replaced, values nulled) and on B (an object deleted).

package dev.tandem

import java.math.BigDecimal
import java.nio.file.Path
import java.time.Instant
import java.util.UUID
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.AfterEach
import org.junit.jupiter.api.Assertions.assertArrayEquals
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.BeforeEach
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.io.TempDir

class TypedSyncTest {
    @TempDir
    lateinit var dir: Path
    lateinit var server: TestServer
    private val sessions = mutableListOf<SyncSession>()
    private val databases = mutableListOf<TandemDatabase>()

    @BeforeEach
    fun start() {
        server = TestServer(dir)
    }

    @AfterEach
    fun stop() {
        sessions.forEach { it.stop() }
        server.close()
        databases.forEach { it.close() }
    }

    private fun open(name: String) =
        TandemDatabase.open(dir.resolve(name).toString(), AllTypes::class).also { databases += it }

    private fun assertSameAll(expected: AllTypes, actual: AllTypes?) {
        actual!!
        assertArrayEquals(expected.bytes, actual.bytes)
        if (expected.nbytes == null) assertNull(actual.nbytes) else assertArrayEquals(expected.nbytes, actual.nbytes)
        assertEquals(expected, actual.copy(bytes = expected.bytes, nbytes = expected.nbytes))
    }

    @Test
    fun typedClientsExchangeEveryType() {
        val a = open("a.sqlite")
        val b = open("b.sqlite")
        val sa = a.sync(server.options()).also { sessions += it }
        val sb = b.sync(server.options()).also { sessions += it }
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
            nt = Instant.ofEpochSecond(-2, 500_000_000),
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
        // Only nulls and defaults: the other end of each type.
        val empty = AllTypes(_id = ObjectId.generate())
        a.write {
            add(all)
            add(empty)
        }
        runBlocking {
            sa.waitForUpload(30_000uL)
            sb.waitForDownload(30_000uL)
        }
        assertSameAll(all, b.find<AllTypes>(all._id))
        assertSameAll(empty, b.find<AllTypes>(empty._id))
        assertEquals(alice, b.find<Person>("alice"))
        assertEquals(bob, b.find<Person>("bob"))
        assertEquals(2, b.query<AllTypes>().count())
        // Queries on B over synced values, links included.
        assertEquals(listOf(all._id), b.query<AllTypes>("dec == $0 AND u == $1", all.dec, all.u).map { it._id })
        assertEquals(listOf(all._id), b.query<AllTypes>("friends.@count == 2 AND t == $0", all.t).map { it._id })

        // A replaces collections and nulls values; B sees the new state exactly.
        val changed = all.copy(
            s = "changed", ni = null, nbytes = null, ndec = null, noid = null,
            strings = listOf("z"), maybeLongs = listOf(null), uuids = setOf(UUID(5, 6)),
            scores = mapOf("y" to 2.5), friends = listOf(alice), byRole = emptyMap(), team = setOf(bob),
            address = Address("New", tags = listOf("n")), addresses = listOf(Address("C", geo = Geo(7.0, 8.0))),
            places = emptyMap(),
        )
        a.write { add(changed) }
        runBlocking {
            sa.waitForUpload(30_000uL)
            sb.waitForDownload(30_000uL)
        }
        assertSameAll(changed, b.find<AllTypes>(all._id))

        // And back from B: a deleted object, a renamed link target.
        b.write {
            delete<AllTypes>(empty._id)
            add(Person("bob", "Robert"))
        }
        runBlocking {
            sb.waitForUpload(30_000uL)
            sa.waitForDownload(30_000uL)
        }
        assertNull(a.find<AllTypes>(empty._id))
        assertEquals(setOf(Person("bob", "Robert")), a.find<AllTypes>(all._id)!!.team)
        assertSameAll(changed.copy(team = setOf(Person("bob", "Robert"))), a.find<AllTypes>(all._id))
    }
}
