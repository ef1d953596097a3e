// Two Kotlin clients syncing through a real tandem-server, TLS and a real token
// (mirrors bindings/python/tests/test_sync.py).

package dev.tandem

import java.nio.file.Path
import java.util.concurrent.CopyOnWriteArrayList
import java.util.concurrent.atomic.AtomicInteger
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.AfterEach
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertNotNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.BeforeEach
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows
import org.junit.jupiter.api.io.TempDir

class SyncTest {
    @TempDir
    lateinit var dir: Path
    lateinit var server: TestServer

    @BeforeEach
    fun start() {
        server = TestServer(dir)
    }

    @AfterEach
    fun stop() {
        server.close()
    }

    private fun open(name: String) = Database.open(dir.resolve(name).toString(), taskClasses())

    @Test
    fun twoClientsSyncAndWait() {
        val a = open("a.sqlite")
        val b = open("b.sqlite")
        val sa = a.sync(server.options(), null)
        val sb = b.sync(server.options(), null)
        a.write { tx ->
            for (i in 0L until 20L) tx.create("Task", intKey(i), mapOf("title" to str("from a $i")))
        }
        runBlocking {
            sa.waitForUpload(30_000uL)
            sb.waitForDownload(30_000uL)
        }
        // No polling: the waits are the guarantee.
        assertEquals(20uL, b.query("Task", "TRUEPREDICATE", emptyList()).count())
        assertEquals(SyncState.Connected, sa.state())
        sa.stop()
        sb.stop()
    }

    @Test
    fun openSyncedDownloadsTheState() {
        val a = open("a.sqlite")
        val sa = a.sync(server.options(), null)
        a.write { tx -> tx.create("Task", intKey(7), mapOf("title" to str("seven"))) }
        val synced = runBlocking {
            sa.waitForUpload(30_000uL)
            openSynced(dir.resolve("b.sqlite").toString(), taskClasses(), server.options(), null, 30_000uL)
        }
        assertNotNull(synced.database.`object`("Task", intKey(7)))
        synced.session.stop()
        sa.stop()
    }

    class Tokens : TokenProvider {
        val calls = AtomicInteger()
        override fun fetchToken(): String {
            calls.incrementAndGet()
            return makeToken(listOf("/todos"))
        }
    }

    class HeldToken(private val token: String) : TokenProvider {
        val release = java.util.concurrent.CountDownLatch(1)
        override fun fetchToken(): String {
            release.await(30, java.util.concurrent.TimeUnit.SECONDS)
            return token
        }
    }

    class Errors : ErrorListener {
        val seen: MutableList<Pair<ULong, Boolean>> = CopyOnWriteArrayList()
        override fun onError(code: ULong, message: String, willRetry: Boolean) {
            seen.add(code to willRetry)
        }
    }

    @Test
    fun tokenProviderAndErrorEvents() {
        val a = open("a.sqlite")
        val tokens = Tokens()
        val session = a.sync(server.options(token = ""), tokens)
        eventually { session.state() == SyncState.Connected }
        assertTrue(tokens.calls.get() >= 1)
        session.stop()
        val b = open("b.sqlite")
        val errors = Errors()
        // The session fetches its first token before it connects; holding that fetch until the
        // error listener is registered keeps the refusal from coming before the listener (a
        // listener only hears later events).
        val held = HeldToken(makeToken(listOf("/elsewhere")))
        val bad = b.sync(server.options(token = ""), held)
        val handle = bad.observeErrors(errors)
        held.release.countDown()
        eventually { bad.state() is SyncState.Error }
        eventually { (206uL to false) in errors.seen }
        handle.cancel()
        bad.stop()
    }

    /** Fails its first call, then hands out tokens. */
    class FailingOnce : TokenProvider {
        val calls = AtomicInteger()
        override fun fetchToken(): String {
            if (calls.incrementAndGet() == 1) throw CallbackException.Failed("auth backend down")
            return makeToken(listOf("/todos"))
        }
    }

    class Messages : ErrorListener {
        val seen: MutableList<Triple<ULong, String, Boolean>> = CopyOnWriteArrayList()
        override fun onError(code: ULong, message: String, willRetry: Boolean) {
            seen.add(Triple(code, message, willRetry))
        }
    }

    @Test
    fun theErrorListenerGivenAtTheStartHearsTheFirstError() {
        // The session's first event is the provider's failure, before any connection: a
        // listener added with observeErrors after sync() returns can miss it, this one cannot.
        val a = open("a.sqlite")
        val errors = Messages()
        val session = a.sync(server.options(token = ""), FailingOnce(), errors)
        eventually { session.state() == SyncState.Connected }
        eventually { errors.seen.isNotEmpty() } // delivered on the notifier thread
        session.stop()
        val (code, message, willRetry) = errors.seen.first()
        assertEquals(0uL, code)
        assertTrue(willRetry)
        assertTrue("auth backend down" in message, message)
    }

    @Test
    fun timeoutsAndBadOptionsAreTypedErrors() {
        val a = open("a.sqlite")
        assertThrows<TandemException.Sync> {
            a.sync(
                SyncOptions(url = "http://nowhere", path = "/x", token = "t", caFile = null, allowInsecure = false,
                    clientReset = ClientResetMode.MANUAL),
                null,
            )
        }
        val opts = SyncOptions(url = "wss://localhost:9/", path = "/x", token = makeToken(listOf("/x")),
            caFile = null, allowInsecure = false, clientReset = ClientResetMode.MANUAL)
        val session = a.sync(opts, null)
        a.write { tx -> tx.create("Task", intKey(1), mapOf("title" to str("x"))) }
        assertThrows<TandemException.Timeout> { runBlocking { session.waitForUpload(200uL) } }
        session.stop()
    }
}
