// PostgreSQL mirror tables (docs/scaling.md, "Mirror tables") with the real realm-core client:
// a device write appears in tandem_mirror."Task", and INSERT, UPDATE and DELETE made with SQL
// reach the device. Needs a PostgreSQL cluster in TANDEM_TEST_POSTGRES (.ci/run sets it; locally
// `export TANDEM_TEST_POSTGRES=$(tests/postgres/start.sh)`); skipped without one.

package dev.tandem.realmcompat

import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assumptions.assumeTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.Timeout
import org.mongodb.kbson.BsonObjectId
import java.util.concurrent.CompletableFuture
import java.util.concurrent.TimeUnit

@Timeout(value = 150, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class PostgresMirrorTest : CompatTest() {
    @Test
    fun `a realm-core client's writes reach the mirror table and SQL writes reach the client`() = compat {
        val db = freshDatabase("mirror")
        val server = server(ServerOptions(extraArgs = listOf("--database", db)))
        val r = realm(app(server, "alice").logInAnonymous(), "p1")

        // Device to table: the object appears as a typed row of partition p1's server path.
        val id = BsonObjectId()
        r.write {
            val t = create("Task", id, "title" to "from realm-core", "done" to true, "count" to 7L)
            listInsert(t, "tags", 0, "t1")
        }
        r.waitForUpload()
        // Partition "p1" is the server path /"p1" (realm-kotlin's partition value, Extended JSON).
        val path = "/\"p1\""
        val row = """SELECT _path, title, count, done, tags FROM tandem_mirror."Task" WHERE _id = '${id.toHexString()}'"""
        awaitSql(db, row, "$path|from realm-core|7|t|[\"t1\"]")

        // Table to device: an INSERT creates an object (columns left out get Realm's defaults)...
        val inserted = BsonObjectId()
        psql(db, """INSERT INTO tandem_mirror."Task" (_path, _id, title, count) VALUES ('$path', '${inserted.toHexString()}', 'from sql', 5)""")
        awaitDevice(r, "the SQL insert") {
            find("Task", inserted)?.let { listOf(value(it, "title"), value(it, "count"), value(it, "done")) } == listOf("from sql", 5L, false)
        }
        // ...an UPDATE changes the device's own object (and only the column it sets)...
        psql(db, """UPDATE tandem_mirror."Task" SET title = 'edited with sql' WHERE _path = '$path' AND _id = '${id.toHexString()}'""")
        awaitDevice(r, "the SQL update") {
            val t = get("Task", id)
            value(t, "title") == "edited with sql" && value(t, "count") == 7L && listValues(t, "tags") == listOf("t1")
        }
        // ...and a DELETE erases the object.
        psql(db, """DELETE FROM tandem_mirror."Task" WHERE _path = '$path' AND _id = '${inserted.toHexString()}'""")
        awaitDevice(r, "the SQL delete") { find("Task", inserted) == null && count("Task") == 1L }

        // Every SQL write was integrated (none waits in the queue or was refused there), and the
        // table holds the one object left as the device has it.
        assertEquals("0", psql(db, "SELECT count(*) FROM tandem_mirror_queue"), psql(db, "SELECT op, error FROM tandem_mirror_queue"))
        assertEquals("edited with sql|7", psql(db, """SELECT title, count FROM tandem_mirror."Task" WHERE _path = '$path'"""))
    }

    /** A fresh database on the test cluster, its URL; skips the test when there is no cluster. */
    private fun freshDatabase(name: String): String {
        val cluster = System.getenv("TANDEM_TEST_POSTGRES")?.takeIf { it.isNotEmpty() }
        if (cluster == null) println("PostgresMirrorTest: skipped, TANDEM_TEST_POSTGRES is not set (tests/postgres/start.sh prints a cluster URL)")
        assumeTrue(cluster != null) { "TANDEM_TEST_POSTGRES is not set" }
        val db = "tandem_compat_${name}_${ProcessHandle.current().pid()}"
        psql(cluster!!, "DROP DATABASE IF EXISTS $db")
        psql(cluster, "CREATE DATABASE $db")
        return cluster.substringBeforeLast('/') + "/" + db
    }

    /** Runs [sql] with psql on [url]; its output unaligned and without headers, trimmed. */
    private fun psql(url: String, sql: String): String {
        val p = ProcessBuilder("psql", url, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql).start()
        val err = CompletableFuture.supplyAsync { p.errorStream.readBytes().decodeToString() }
        val out = p.inputStream.readBytes().decodeToString()
        check(p.waitFor(30, TimeUnit.SECONDS) && p.exitValue() == 0) { "psql failed on: $sql\n$out${err.get()}" }
        return out.trim()
    }

    /** Polls [sql] (at most 30 s) until it prints [expected]. */
    private fun awaitSql(url: String, sql: String, expected: String) {
        val deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30)
        while (true) {
            val got = psql(url, sql)
            if (got == expected) return
            if (System.nanoTime() > deadline) throw AssertionError("$sql printed '$got', not '$expected', within 30 s")
            Thread.sleep(100)
        }
    }

    /**
     * Downloads and reads [r] until [check] holds (at most 30 s): the server integrates a SQL
     * write after its COMMIT, so one download may come before it.
     */
    private fun awaitDevice(r: SyncedRealm, what: String, check: SyncedRealm.Access.() -> Boolean) {
        val deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30)
        while (true) {
            r.waitForDownload()
            if (r.read(check)) return
            if (System.nanoTime() > deadline) throw AssertionError("$what did not reach the realm-core client within 30 s")
            Thread.sleep(100)
        }
    }
}
