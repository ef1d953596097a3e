// Scenario 3: two realm-core clients edit the same objects while offline (sessions paused) and
// converge to Realm's merge results once both are back: same field (last writer wins), delete
// vs update (delete wins), inserts at one list index (both kept, older first), counters (the
// increments add up). Expected values are Realm's rules (realm-sync.md, merge rules table).

package dev.tandem.realmcompat

import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.Timeout
import org.mongodb.kbson.BsonObjectId

@Timeout(value = 120, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class ConflictTest : CompatTest() {
    @Test
    fun `offline conflicting edits converge to Realm's results on both clients`() = compat {
        val server = server()
        val a = realm(app(server, "a").logInAnonymous(), "shared")
        val b = realm(app(server, "b").logInAnonymous(), "shared")
        val field = BsonObjectId()
        val deleted = BsonObjectId()
        val list = BsonObjectId()
        val counter = BsonObjectId()
        a.write {
            create("Task", field, "title" to "base")
            create("Task", deleted, "title" to "doomed")
            create("Task", list, "title" to "list").also { listInsert(it, "tags", 0, "x") }
            create("Task", counter, "title" to "counter", "count" to 10L)
        }
        a.waitForUpload()
        b.sync()
        b.read { assertEquals(4L, count("Task")) }

        a.pause()
        b.pause()
        // a edits first, b second: b's changes carry the later timestamps.
        a.write {
            set(get("Task", field), "title", "from a")
            set(get("Task", deleted), "title", "a updated the doomed one")
            listInsert(get("Task", list), "tags", 0, "a")
            addInt(get("Task", counter), "count", 5)
        }
        Thread.sleep(50)
        b.write {
            set(get("Task", field), "title", "from b")
            delete(get("Task", deleted))
            listInsert(get("Task", list), "tags", 0, "b")
            addInt(get("Task", counter), "count", 7)
        }

        a.resume()
        a.waitForUpload()
        b.resume()
        b.waitForUpload()
        b.waitForDownload()
        a.sync()
        b.sync()

        for ((name, r) in listOf("a" to a, "b" to b)) {
            r.read {
                assertEquals("from b", value(get("Task", field), "title"), "$name: last writer wins")
                assertNull(find("Task", deleted), "$name: delete wins over a concurrent update")
                assertEquals(listOf("a", "b", "x"), listValues(get("Task", list), "tags"), "$name: both inserts kept, older first")
                assertEquals(22L, value(get("Task", counter), "count"), "$name: 10 + 5 + 7")
                assertEquals(3L, count("Task"), name)
            }
        }
    }

    @Test
    fun `the later writer wins whichever client reaches the server first`() = compat {
        val server = server()
        val a = realm(app(server, "a").logInAnonymous(), "shared2")
        val b = realm(app(server, "b").logInAnonymous(), "shared2")
        val id = BsonObjectId()
        a.write { create("Task", id, "title" to "base", "done" to false) }
        a.waitForUpload()
        b.sync()

        a.pause()
        b.pause()
        a.write { set(get("Task", id), "title", "older, from a") }
        Thread.sleep(50)
        b.write { set(get("Task", id), "title", "newer, from b") }
        // The newer change reaches the server first this time.
        b.resume()
        b.waitForUpload()
        a.resume()
        a.waitForUpload()
        a.waitForDownload()
        b.sync()
        a.sync()
        for (r in listOf(a, b)) r.read { assertEquals("newer, from b", value(get("Task", id), "title")) }
    }
}
