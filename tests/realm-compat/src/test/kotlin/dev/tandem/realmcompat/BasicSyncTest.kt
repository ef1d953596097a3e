// Scenario 1: anonymous login, a PBS realm, a write that a second realm-core client receives;
// the same over https/wss with the test CA.

package dev.tandem.realmcompat

import io.realm.kotlin.internal.interop.sync.AuthProvider
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertNotEquals
import org.junit.jupiter.api.Assertions.assertThrows
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.Timeout
import org.mongodb.kbson.BsonObjectId

@Timeout(value = 90, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class BasicSyncTest : CompatTest() {
    /** Two anonymous clients on partition "p1" exchange a write both ways; returns their Apps. */
    private fun Resources.exchange(server: TandemServer, open: OpenOptions = OpenOptions()): List<RealmApp> {
        val apps = listOf(app(server, "alice"), app(server, "bob"))
        val (alice, bob) = apps.map { it.logInAnonymous() }
        assertTrue(alice.isLoggedIn)
        assertEquals(listOf(AuthProvider.RLM_AUTH_PROVIDER_ANONYMOUS), alice.providers)
        assertNotEquals(alice.id, bob.id, "two anonymous logins on two devices are two users")

        val a = realm(alice, "p1", options = open)
        val b = realm(bob, "p1", options = open)
        val id = BsonObjectId()
        a.write {
            val t = create("Task", id, "title" to "hello from realm-core", "done" to true, "count" to 42L)
            listInsert(t, "tags", 0, "t1")
        }
        a.waitForUpload()
        b.sync()
        b.read {
            val t = get("Task", id)
            assertEquals("hello from realm-core", value(t, "title"))
            assertEquals(true, value(t, "done"))
            assertEquals(42L, value(t, "count"))
            assertEquals(listOf("t1"), listValues(t, "tags"))
            assertEquals(1L, count("Task"))
        }

        // And back: bob edits, alice sees it.
        b.write { set(get("Task", id), "title", "edited by bob") }
        b.waitForUpload()
        a.sync()
        a.read { assertEquals("edited by bob", value(get("Task", id), "title")) }
        assertTrue(alice.isLoggedIn && bob.isLoggedIn)

        // Core's log: the sync URL it derived from the location answer, and the negotiated version.
        val ws = if (server.options.tls) "wss://localhost" else "ws://127.0.0.1"
        val log = coreLog()
        assertTrue(log.contains("Connecting to '$ws:${server.port}/api/client/v2.0/app/${server.appId}/realm-sync'"), "core connected to the sync route")
        assertTrue(log.contains("Negotiated protocol version: 14"), "protocol 14 negotiated")
        return apps
    }

    @Test
    fun `anonymous users exchange a write over ws`() = compat {
        val apps = exchange(server())
        apps.flatMap { it.transport.requests }.forEach { assertTrue(it.substringAfter(' ').startsWith("http://127.0.0.1:"), it) }
    }

    @Test
    fun `anonymous users exchange a write over https and wss trusting only the test CA`() = compat {
        val server = server(ServerOptions(tls = true))
        // The App side trusts only the test CA (java.net.http); core's socket trusts it through
        // realm_sync_config_set_ssl_trust_certificate_path. The listener speaks only TLS.
        val apps = exchange(server, OpenOptions(trustCa = TestTls.ca))
        val requests = apps.flatMap { it.transport.requests }
        assertTrue(requests.size >= 6, "location, login and profile for each client: $requests")
        requests.forEach { assertTrue(it.substringAfter(' ').startsWith("https://localhost:${server.port}/"), it) }
    }

    @Test
    fun `without the test CA core's bundled roots refuse the server, without a crash or a logout`() = compat {
        val server = server(ServerOptions(tls = true))
        val user = app(server, "alice").logInAnonymous()
        val r = realm(user, "p1") // no trust path: core's 155 bundled roots (realm-wire-compat.md 2.7)
        r.write { create("Task", BsonObjectId(), "title" to "stays local") }
        val failed = assertThrows(AssertionError::class.java) { r.waitForUpload(5) }
        assertTrue(failed.message!!.contains("did not complete"), failed.message)
        val log = coreLog()
        assertTrue(log.contains("TLS handshake failed: OpenSSL error: certificate verify failed"), "core's reason")
        assertTrue(user.isLoggedIn, "a TLS failure is not an auth failure")
        assertTrue(r.errors.none { it.isFatal }, r.errors.map { describe(it) }.toString())
        r.read { assertEquals(1L, count("Task")) }
    }
}
