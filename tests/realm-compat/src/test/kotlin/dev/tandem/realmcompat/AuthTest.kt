// Scenario 2: email/password registration and login, custom-token (external JWT) login, and a
// 10-second access token refreshed by realm-core mid-session while writes keep flowing.

package dev.tandem.realmcompat

import io.realm.kotlin.internal.interop.ErrorCode
import io.realm.kotlin.internal.interop.sync.AuthProvider
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertNotEquals
import org.junit.jupiter.api.Assertions.assertThrows
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.Timeout
import org.mongodb.kbson.BsonObjectId

@Timeout(value = 120, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class AuthTest : CompatTest() {
    private val allProviders = listOf("--auth-providers", "anon-user,local-userpass,custom-token,api-key")

    @Test
    fun `email and password register, log in and sync`() = compat {
        val server = server(ServerOptions(extraArgs = allProviders, customTokens = true))
        val first = app(server, "device1")
        first.registerEmail("ada@example.com", "correct horse 1")
        val ada = first.logInEmail("ada@example.com", "correct horse 1")
        assertTrue(ada.isLoggedIn)
        assertEquals(listOf(AuthProvider.RLM_AUTH_PROVIDER_EMAIL_PASSWORD), ada.providers)

        // Registering the same address again, and a wrong password, are typed App errors.
        val again = assertThrows(AppException::class.java) { first.registerEmail("ada@example.com", "other password") }
        assertEquals(ErrorCode.RLM_ERR_ACCOUNT_NAME_IN_USE, again.error.code, again.message)
        val wrong = assertThrows(AppException::class.java) { app(server, "device3").logInEmail("ada@example.com", "wrong password") }
        assertEquals(ErrorCode.RLM_ERR_INVALID_PASSWORD, wrong.error.code, wrong.message)

        // The same account on a second device is the same user and sees the same partition.
        val ada2 = app(server, "device2").logInEmail("ada@example.com", "correct horse 1")
        assertEquals(ada.id, ada2.id)
        val a = realm(ada, "ada-notes")
        val b = realm(ada2, "ada-notes")
        val id = BsonObjectId()
        a.write { create("Task", id, "title" to "written as ada") }
        a.waitForUpload()
        b.sync()
        b.read { assertEquals("written as ada", value(get("Task", id), "title")) }
    }

    @Test
    fun `custom-token login with an external HS256 JWT`() = compat {
        val server = server(ServerOptions(extraArgs = allProviders, customTokens = true))
        val app = app(server, "device1")
        val token = Jwt.subject(server.customTokenSecret, "ext-user-7", extra = "\"name\":\"Ext Seven\"")
        val user = app.logInJwt(token)
        assertTrue(user.isLoggedIn)
        assertEquals(listOf(AuthProvider.RLM_AUTH_PROVIDER_CUSTOM), user.providers)
        assertTrue(user.profile.contains("Ext Seven"), "the token's name claim is the profile's name: ${user.profile}")

        // The same subject from another device is the same user; another subject is not.
        val same = app(server, "device2").logInJwt(Jwt.subject(server.customTokenSecret, "ext-user-7"))
        assertEquals(user.id, same.id)
        val other = app(server, "device3").logInJwt(Jwt.subject(server.customTokenSecret, "ext-user-8"))
        assertNotEquals(user.id, other.id)

        // A token signed with another key, or expired, is refused with an App error, not a crash.
        val forged = assertThrows(AppException::class.java) {
            app(server, "device4").logInJwt(Jwt.subject("not the configured secret at all!".toByteArray(), "ext-user-7"))
        }
        assertEquals(401, forged.error.httpStatusCode, forged.message)
        assertEquals(ErrorCode.RLM_ERR_AUTH_ERROR, forged.error.code, forged.message)
        val expired = assertThrows(AppException::class.java) {
            app(server, "device5").logInJwt(Jwt.subject(server.customTokenSecret, "ext-user-7", seconds = -120))
        }
        assertEquals(401, expired.error.httpStatusCode, expired.message)
        val malformed = assertThrows(AppException::class.java) { app(server, "device6").logInJwt("not-a-jwt") }
        assertEquals(ErrorCode.RLM_ERR_AUTH_ERROR, malformed.error.code, malformed.message)

        val r = realm(user, "ext-shared")
        r.write { create("Task", BsonObjectId(), "title" to "custom token user") }
        r.waitForUpload()
    }

    @Test
    fun `api-key login with a key from the admin command`() = compat {
        val server = server(ServerOptions(extraArgs = allProviders, customTokens = true))
        val key = server.createApiKey("build-bot")
        val bot = app(server, "bot").logInApiKey(key)
        assertTrue(bot.isLoggedIn)
        assertEquals(listOf(AuthProvider.RLM_AUTH_PROVIDER_API_KEY), bot.providers)
        assertEquals(bot.id, app(server, "bot2").logInApiKey(key).id, "one key is one user")
        val wrong = assertThrows(AppException::class.java) { app(server, "bot3").logInApiKey("0".repeat(64)) }
        assertEquals(401, wrong.error.httpStatusCode, wrong.message)
        val r = realm(bot, "bot-partition")
        r.write { create("Task", BsonObjectId(), "title" to "from the bot") }
        r.waitForUpload()
    }

    @Test
    fun `a 10-second access token is refreshed mid-session while writes keep flowing`() = compat {
        val server = server(ServerOptions(extraArgs = listOf("--access-token-lifetime", "10")))
        val writer = app(server, "writer").logInAnonymous()
        val reader = app(server, "reader").logInAnonymous()
        val firstToken = writer.accessToken
        val firstExp = writer.accessTokenExp
        assertTrue(firstExp - System.currentTimeMillis() / 1000 <= 11, "the server issued a 10 s token (exp $firstExp)")

        val w = realm(writer, "ticker")
        val r = realm(reader, "ticker")
        val started = System.nanoTime()
        val ids = mutableListOf<BsonObjectId>()
        // One write every 2 s for 26 s: the token expires at least twice on the way.
        while (System.nanoTime() - started < 26_000_000_000L) {
            val id = BsonObjectId()
            ids += id
            w.write { create("Task", id, "title" to "tick ${ids.size}", "count" to ids.size.toLong()) }
            w.waitForUpload(20)
            Thread.sleep(2_000)
        }
        r.sync(20)
        r.read {
            assertEquals(ids.size.toLong(), count("Task"))
            ids.forEachIndexed { i, id -> assertEquals("tick ${i + 1}", value(get("Task", id), "title")) }
        }
        assertTrue(ids.size >= 12, "writes kept flowing: ${ids.size}")
        assertTrue(writer.isLoggedIn, "the writer was never logged out")
        assertNotEquals(firstToken, writer.accessToken, "core refreshed the access token")
        assertTrue(writer.accessTokenExp > firstExp + 10, "the current token is a later one")
        assertTrue(w.errors.none { it.isFatal }, "no fatal sync error: ${w.errors.map { describe(it) }}")
    }
}
