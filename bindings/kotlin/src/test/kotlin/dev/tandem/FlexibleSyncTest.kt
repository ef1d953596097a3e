// Flexible sync from Kotlin against a real tandem-server (TLS, HS256 tokens for `/flx`):
// subscription sets through the typed layer and the untyped API, bootstraps, objects leaving
// and entering a view, named replace/remove, set states, a set the server refuses (QUERY_ERROR
// 226) with the session going on, and a compensating write under `--flx-rules` (231).

package dev.tandem

import java.nio.file.Path
import java.util.concurrent.CopyOnWriteArrayList
import kotlin.time.Duration.Companion.seconds
import kotlinx.coroutines.CoroutineStart
import kotlinx.coroutines.async
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.jupiter.api.AfterEach
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertNotNull
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows
import org.junit.jupiter.api.io.TempDir

@TandemClass("Project")
data class FlxProject(@PrimaryKey val _id: Long, val name: String = "")

@TandemClass("Task")
data class FlxTask(
    @PrimaryKey val _id: Long,
    val title: String = "",
    val count: Long = 0,
    val owner: String = "",
    val project: FlxProject? = null,
)

class FlexibleSyncTest {
    @TempDir
    lateinit var dir: Path
    private var server: TestServer? = null
    private val sessions = mutableListOf<SyncSession>()
    private val wait = 30.seconds

    @AfterEach
    fun stop() {
        sessions.forEach { it.stop() }
        server?.close()
    }

    private fun start(vararg args: String): TestServer = TestServer(dir, args.toList()).also { server = it }

    private fun open(name: String) = TandemDatabase.open(dir.resolve(name).toString(), FlxTask::class)

    private fun TandemDatabase.flexible(server: TestServer, user: String): SyncSession =
        sync(server.flexibleOptions(user)).also { sessions += it }

    /** The ids of the tasks in [db], sorted. */
    private fun ids(db: TandemDatabase): List<Long> = db.query<FlxTask>().map { it._id }.sorted()

    /** A writer subscribed to every Task and Project, holding tasks 1..[n] (count = id). */
    private fun writer(server: TestServer, n: Long): Pair<TandemDatabase, SyncSession> {
        val w = open("writer.sqlite")
        w.subscriptions.update {
            add(query<FlxTask>(), name = "all")
            add(query<FlxProject>(), name = "projects")
        }
        val ws = w.flexible(server, "writer")
        w.write { for (i in 1L..n) add(FlxTask(i, "task $i", count = i, owner = "writer")) }
        runBlocking {
            ws.waitForUpload(30_000uL)
            assertEquals(SubscriptionSetState.Complete, ws.waitForSynchronization(wait).state)
        }
        assertEquals((1L..n).toList(), ids(w))
        return w to ws
    }

    @Test
    fun subscriptionsBootstrapNarrowReplaceAndRemove() {
        val server = start()
        val (w, ws) = writer(server, 10)

        // Before any sync the reader's new set is Pending and the active one is the empty 0.
        val r = open("reader.sqlite")
        assertEquals(0uL, r.subscriptions.version)
        assertEquals(SubscriptionSetState.Complete, r.subscriptions.state)
        val v1 = r.subscriptions.update { add(query<FlxTask>("count > $0", 5L), name = "big") }
        assertEquals(1uL, v1.version)
        assertEquals(SubscriptionSetState.Pending, v1.state)
        assertEquals(SubscriptionSetState.Pending, r.subscriptions.state)
        assertEquals(0uL, r.subscriptions.active.version)
        val big = r.subscriptions["big"]
        assertNotNull(big)
        assertEquals("Task", big!!.className)
        assertEquals("count > 5", big.query)
        assertEquals(emptyList<Long>(), ids(r))

        val rs = r.flexible(server, "reader")
        val done = runBlocking { rs.waitForSynchronization(wait) }
        assertEquals(1uL, done.version)
        assertEquals(SubscriptionSetState.Complete, done.state)
        assertEquals(listOf(6L, 7L, 8L, 9L, 10L), ids(r))
        assertEquals(1uL, r.subscriptions.active.version)
        assertEquals("task 7", r.find<FlxTask>(7L)!!.title)

        // The same name replaces the subscription: a narrower query, objects leave; the older
        // set is superseded.
        val v2 = r.subscriptions.update { add(query<FlxTask>("count > $0", 8L), name = "big") }
        assertEquals(2uL, v2.version)
        assertEquals(listOf("big"), v2.subscriptions.map { it.name })
        assertEquals("count > 8", v2.subscriptions.single().query)
        assertEquals(SubscriptionSetState.Complete, runBlocking { rs.waitForSynchronization(v2, wait) }.state)
        assertEquals(listOf(9L, 10L), ids(r))
        assertEquals(SubscriptionSetState.Superseded, runBlocking { rs.waitForSynchronization(v1.version, wait) }.state)

        // A second named subscription, from a typed query's results: objects enter.
        val v3 = r.subscriptions.update { add(r.query<FlxTask>("_id == $0", 2L), name = "two") }
        assertEquals(listOf("big", "two"), v3.subscriptions.map { it.name })
        runBlocking { rs.waitForSynchronization(v3, wait) }
        assertEquals(listOf(2L, 9L, 10L), ids(r))
        assertEquals(2, r.subscriptions.size)

        // Another client's writes move objects out of the view and into it (whole).
        w.write {
            set(FlxTask::class, 9L, FlxTask::count, 0L)
            set(FlxTask::class, 3L, FlxTask::count, 100L)
        }
        runBlocking {
            ws.waitForUpload(30_000uL)
            rs.waitForDownload(30_000uL)
        }
        assertEquals(listOf(2L, 3L, 10L), ids(r))
        assertEquals(FlxTask(3, "task 3", 100, "writer"), r.find<FlxTask>(3L))

        // Remove by name, then every Task subscription: the view empties.
        val v4 = r.subscriptions.update { remove("two") }
        assertEquals(listOf("big"), v4.subscriptions.map { it.name })
        runBlocking { rs.waitForSynchronization(v4, wait) }
        assertEquals(listOf(3L, 10L), ids(r))
        val v5 = r.subscriptions.update { removeAll<FlxTask>() }
        assertEquals(0, v5.subscriptions.size)
        assertEquals(SubscriptionSetState.Complete, runBlocking { rs.waitForSynchronization(v5, wait) }.state)
        assertEquals(emptyList<Long>(), ids(r))
        assertNull(r.find<FlxTask>(10L))

        // The untyped API underneath: a change list, the generated wait (version, ms).
        val v6 = r.raw.updateSubscriptions(
            listOf(SubscriptionChange.Add(null, "Task", "title == $0", listOf(Value.String("task 4")))),
        )
        assertEquals(6uL, v6.version)
        assertEquals(SubscriptionSetState.Pending, v6.state)
        val v6done = runBlocking { rs.waitForSubscriptions(v6.version, 30_000uL) }
        assertEquals(SubscriptionSetState.Complete, v6done.state)
        assertEquals(listOf(4L), ids(r))
        val active = r.raw.activeSubscriptions()
        assertEquals(6uL, active.version)
        // Arguments are inlined as the server reads them (strings as base64 literals).
        assertEquals(listOf(Subscription(null, "Task", "title == B64\"dGFzayA0\"")), active.subscriptions)

        // The reader's own writes reach the writer.
        r.write { set(FlxTask::class, 4L, FlxTask::title, "edited by the reader") }
        runBlocking {
            rs.waitForUpload(30_000uL)
            ws.waitForDownload(30_000uL)
        }
        assertEquals("edited by the reader", w.find<FlxTask>(4L)!!.title)

        // Changes that change nothing commit nothing.
        val same = r.subscriptions.update { }
        assertEquals(6uL, same.version)
    }

    @Test
    fun invalidSubscriptionsAreRefusedLocallyAndCommitNothing() {
        val db = open("local.sqlite")
        db.subscriptions.update { add(query<FlxTask>("count > $0", 1L), name = "kept") }
        assertEquals(1uL, db.subscriptions.version)
        val sorted = assertThrows<TandemException.InvalidArgument> {
            db.subscriptions.update {
                remove("kept")
                add(query<FlxTask>("count > 1 SORT(count ASC)"))
            }
        }
        assertTrue("SORT" in sorted.detail, sorted.detail)
        assertThrows<TandemException.InvalidArgument> {
            db.subscriptions.update { add(db.query<FlxTask>("TRUEPREDICATE LIMIT(2)")) }
        }
        assertThrows<TandemException.InvalidArgument> {
            db.subscriptions.update { add("Nope", "TRUEPREDICATE") }
        }
        assertThrows<TandemException.InvalidArgument> {
            db.subscriptions.update { add(query<FlxTask>("nope == 1")) }
        }
        assertThrows<IllegalStateException> {
            db.subscriptions.update {
                removeAll()
                throw IllegalStateException("the block failed")
            }
        }
        // Nothing was committed: still version 1 with its one subscription, pending.
        val latest = db.subscriptions.latest
        assertEquals(1uL, latest.version)
        assertEquals(SubscriptionSetState.Pending, latest.state)
        assertEquals(listOf(Subscription("kept", "Task", "count > 1")), latest.subscriptions)
        // A session that is not flexible cannot wait for subscriptions.
        val server = start()
        val session = db.sync(server.options(path = "/todos")).also { sessions += it }
        val e = runBlocking { runCatching { session.waitForSynchronization(5.seconds) }.exceptionOrNull() }
        assertTrue(e is TandemException.Sync, "$e")
    }

    @Test
    fun aSetTheServerCannotEvaluateFailsAndTheSessionGoesOn() {
        val server = start()
        writer(server, 2)
        val r = open("reader.sqlite")
        r.subscriptions.update { add(query<FlxTask>("count == $0", 1L), name = "one") }
        val rs = r.flexible(server, "reader")
        runBlocking {
            // Collecting registers the listener before the collector first suspends.
            val queryError = async(start = CoroutineStart.UNDISPATCHED) {
                withTimeout(wait) { rs.errors().first { it.code == SyncErrorEvent.QUERY_ERROR } }
            }
            rs.waitForSynchronization(wait)
            assertEquals(listOf(1L), ids(r))

            // The local compiler takes a link path; the server does not evaluate one.
            val bad = r.subscriptions.update { add(query<FlxTask>("project.name == $0", "x"), name = "linked") }
            assertEquals(SubscriptionSetState.Pending, bad.state)
            val e = runCatching { rs.waitForSynchronization(bad, wait) }.exceptionOrNull()
            assertTrue(e is TandemException.Sync, "$e")
            val detail = (e as TandemException.Sync).detail
            assertTrue("refused by the server" in detail, detail)
            val state = r.subscriptions.latest.state
            assertTrue(state is SubscriptionSetState.Error, "$state")
            assertTrue("link" in (state as SubscriptionSetState.Error).message, state.message)
            assertEquals(1uL, r.subscriptions.active.version)
            assertEquals(listOf(1L), ids(r))
            val event = queryError.await()
            assertTrue(event.willRetry)
            assertFalse(event.isCompensatingWrite)
            assertNull(event.compensatingWrite)

            // The session goes on: a later set completes.
            val good = r.subscriptions.update {
                remove("linked")
                add(query<FlxTask>("count == $0", 2L), name = "two")
            }
            assertEquals(listOf("one", "two"), good.subscriptions.map { it.name })
            assertEquals(SubscriptionSetState.Complete, rs.waitForSynchronization(good, wait).state)
            assertEquals(listOf(1L, 2L), ids(r))
            assertEquals(SyncState.Connected, rs.state())
        }
    }

    @Test
    fun aForbiddenWriteIsRevertedAsACompensatingWrite() {
        val rules = dir.resolve("rules.json")
        rules.toFile().writeText(
            """{"default":{"read":true,"write":true},
               "classes":{"Task":{"read":true,"write":"owner == %%user.id"}}}""",
        )
        val server = start("--app-id", "kt-flx-app", "--flx-rules", rules.toString())
        val alice = open("alice.sqlite")
        val bob = open("bob.sqlite")
        for (db in listOf(alice, bob)) db.subscriptions.update { add(query<FlxTask>(), name = "all") }
        val sa = alice.flexible(server, "alice")
        val sb = bob.flexible(server, "bob")
        val events = CopyOnWriteArrayList<SyncErrorEvent>()
        val handle = sa.onError { events += it }

        alice.write { add(FlxTask(1, "task 1", owner = "alice")) }
        bob.write { add(FlxTask(2, "task 2", owner = "bob")) }
        runBlocking {
            for (s in listOf(sa, sb)) s.waitForUpload(30_000uL)
            for (s in listOf(sa, sb)) s.waitForSynchronization(wait)
            for (s in listOf(sa, sb)) s.waitForDownload(30_000uL)
        }
        assertEquals(listOf(1L, 2L), ids(alice))
        assertEquals(listOf(1L, 2L), ids(bob))

        // Alice creates a task owned by bob and edits bob's task: both are forbidden by the
        // write rule. Her edit of her own task is allowed.
        alice.write {
            add(FlxTask(3, "alice's task for bob", owner = "bob"))
            set(FlxTask::class, 2L, FlxTask::title, "alice was here")
            set(FlxTask::class, 1L, FlxTask::title, "alice's own edit")
        }
        runBlocking {
            sa.waitForUpload(30_000uL)
            sa.waitForDownload(30_000uL)
        }
        // The server's revert arrives as a download: the created task is erased, the edited
        // one has the server's copy back.
        eventually { ids(alice) == listOf(1L, 2L) && alice.find<FlxTask>(2L)?.title == "task 2" }
        assertEquals("alice's own edit", alice.find<FlxTask>(1L)!!.title)
        eventually {
            synchronized(events) { events.filter { it.isCompensatingWrite }.flatMap { it.compensatingWrite!!.writes } }
                .map { it.className to it.primaryKey }.toSet()
                .containsAll(listOf("Task" to 3L, "Task" to 2L))
        }
        val compensating = synchronized(events) { events.filter { it.isCompensatingWrite } }
        for (e in compensating) {
            assertEquals(231uL, e.code)
            assertTrue(e.willRetry)
            assertTrue("rejectedUpdates" in e.message, e.message)
            val cw = e.compensatingWrite!!
            assertTrue(cw.writes.all { "not allowed" in it.reason }, "$cw")
            assertNotNull(cw.serverVersion)
        }
        handle.cancel()
        handle.close()

        // Bob never keeps alice's forbidden writes; he gets her allowed one.
        runBlocking { sb.waitForDownload(30_000uL) }
        assertEquals(listOf(1L, 2L), ids(bob))
        assertEquals("task 2", bob.find<FlxTask>(2L)!!.title)
        assertEquals("alice's own edit", bob.find<FlxTask>(1L)!!.title)
        assertEquals(SyncState.Connected, sa.state())
    }

    @Test
    fun compensatingWriteKeysDecode() {
        // rejectedUpdates[].pk: base64 of the payload type and value (Realm varints).
        assertEquals(3L, CompensatingWrite.decodeInlineKey("AQM="))      // Int 3
        assertEquals(-65L, CompensatingWrite.decodeInlineKey("AcBA"))    // Int -65
        assertEquals(300L, CompensatingWrite.decodeInlineKey("AawC"))    // Int 300
        assertEquals("ab", CompensatingWrite.decodeInlineKey("AwJhYg==")) // String "ab"
        assertNull(CompensatingWrite.decodeInlineKey("AA=="))            // Null
        val b64 = { bytes: ByteArray -> java.util.Base64.getEncoder().encodeToString(bytes) }
        val uuid = java.util.UUID.randomUUID()
        assertEquals(uuid, CompensatingWrite.decodeInlineKey(b64(byteArrayOf(11) + ValueCodec.uuidBytes(uuid))))
        val oid = ObjectId.generate()
        assertEquals(oid, CompensatingWrite.decodeInlineKey(b64(byteArrayOf(10) + oid.toByteArray())))
        val long = "x".repeat(100) + "é"                                 // a two-byte length varint
        assertEquals(long, CompensatingWrite.decodeInlineKey(b64(byteArrayOf(3, 0xE6.toByte(), 0x00) + long.toByteArray())))
        assertEquals("AQ", CompensatingWrite.decodeInlineKey("AQ"))      // truncated: returned as is
        val cw = CompensatingWrite.parse(
            "compensating write: {\"message\":\"a write to Task was reverted: no\",\"tryAgain\":true," +
                "\"rejectedUpdates\":[{\"table\":\"Task\",\"pk\":\"AQM=\",\"reason\":\"write \\\"denied\\\"\"}]," +
                "\"rejectedClientVersion\":7,\"compensatingWriteServerVersion\":12}",
        )
        assertEquals(
            CompensatingWrite(listOf(RejectedWrite("Task", 3L, "write \"denied\"")), "a write to Task was reverted: no", 7, 12),
            cw,
        )
        assertNull(CompensatingWrite.parse("no json here"))
    }
}
