// Scenario 8: flexible sync permissions (tandem-server's `--flx-rules`, src/server/realm/rules.rs)
// and asymmetric classes, against realm-core clients of `Task{_id, owner, title, done}` whose
// users are anonymous users: per-user read filters (steady state and bootstrap), writes the
// rules forbid reverted as compensating writes (JSON_ERROR 231, realm-wire-compat.md 4.7) and
// reported to the sync error handler with the rejected objects, and an asymmetric class whose
// objects are uploaded and never downloaded (4.10).

package dev.tandem.realmcompat

import io.realm.kotlin.internal.interop.ErrorCode
import io.realm.kotlin.internal.interop.PropertyType
import io.realm.kotlin.internal.interop.sync.CoreSubscriptionSetState
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertThrows
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.Timeout
import org.mongodb.kbson.BsonObjectId

@Timeout(value = 120, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class FlexibleSyncRulesTest : CompatTest() {
    companion object {
        val FLX_TASK: ClassDef = FlexibleSyncTest.FLX_TASK

        /** `Measurement{_id: ObjectId PK, value: Double}`, asymmetric (realm-kotlin's AsymmetricRealmObject). */
        val MEASUREMENT: ClassDef = ClassDef(
            "Measurement",
            listOf(
                Prop("_id", PropertyType.RLM_PROPERTY_TYPE_OBJECT_ID, primaryKey = true),
                Prop("value", PropertyType.RLM_PROPERTY_TYPE_DOUBLE),
            ),
            asymmetric = true,
        )

        /**
         * A user reads and writes their own tasks and the "shared" ones. The write rule lets
         * anyone write a shared task (a shared board): a user may create one, and edit the other
         * users' shared tasks; with `owner == %%user.id` alone nobody could create one. A task
         * owned by another user can be neither written nor read, and a task may not be given
         * away (the object after the write must match the write rule too). Measurement (the
         * asymmetric class) may be read and written by everyone, so that only its asymmetry
         * keeps it from being downloaded; other classes nothing.
         */
        val RULES = """
            {
              "default": { "read": false, "write": false },
              "classes": {
                "Task": {
                  "read": "owner == %%user.id OR owner == \"shared\"",
                  "write": "owner == %%user.id OR owner == \"shared\""
                },
                "Measurement": { "read": true, "write": true }
              }
            }
        """.trimIndent()

        val COMPLETE = CoreSubscriptionSetState.RLM_SYNC_SUBSCRIPTION_COMPLETE
        val ALL = Triple("all", "Task", "TRUEPREDICATE")
    }

    /** One Task's fields as a client reads them. */
    data class TaskRow(val owner: String, val title: String, val done: Boolean)

    /** Every Task of this client's file, by _id. */
    private fun FlxRealm.tasks(): Map<BsonObjectId, TaskRow> = read {
        primaryKeys("Task").associate { pk ->
            val t = get("Task", pk!!)
            pk as BsonObjectId to TaskRow(value(t, "owner") as String, value(t, "title") as String, value(t, "done") as Boolean)
        }
    }

    private fun FlxRealm.titles(): Set<String> = tasks().values.map { it.title }.toSet()

    /** Subscribes and waits for Complete, failing with core's error string otherwise. */
    private fun FlxRealm.subscribeComplete(vararg subs: Triple<String, String, String>): Long {
        val version = subscribe(*subs)
        val result = awaitSubscriptions()
        assertEquals(COMPLETE, result.state, "subscription set $version: ${result.error}")
        return version
    }

    private fun FlxRealm.assertNoErrors() = assertTrue(errors.isEmpty(), "no sync error: ${errors.map { describe(it) }}")

    /** Creates a Task and returns its _id. */
    private fun FlxRealm.createTask(owner: String, title: String): BsonObjectId {
        val id = BsonObjectId()
        write { create("Task", id, "owner" to owner, "title" to title, "done" to false) }
        return id
    }

    /** A server with [RULES] and an anonymous user of its own App (client) [name]. */
    private fun Resources.rulesServer(): TandemServer = server(ServerOptions(flxRules = RULES))

    private fun Resources.user(server: TandemServer, name: String): RealmUser = app(server, name).logInAnonymous()

    @Test
    fun twoUsersWithDifferentRulesSeeDifferentObjects() = compat {
        val server = rulesServer()
        val userA = user(server, "a")
        val userB = user(server, "b")
        assertFalse(userA.id == userB.id, "two anonymous users")
        val a = flxRealm(userA, listOf(FLX_TASK))
        val b = flxRealm(userB, listOf(FLX_TASK))
        // Both subscribe to every Task: the read rule alone decides what each gets.
        a.subscribeComplete(ALL)
        b.subscribeComplete(ALL)

        val a1 = a.createTask(userA.id, "a1")
        val a2 = a.createTask(userA.id, "a2")
        val s1 = a.createTask("shared", "s1")
        a.waitForUpload()
        val b1 = b.createTask(userB.id, "b1")
        val s2 = b.createTask("shared", "s2")
        b.waitForUpload()
        a.sync()
        b.sync()

        assertEquals(
            mapOf(
                a1 to TaskRow(userA.id, "a1", false),
                a2 to TaskRow(userA.id, "a2", false),
                s1 to TaskRow("shared", "s1", false),
                s2 to TaskRow("shared", "s2", false),
            ),
            a.tasks(),
            "A: its own tasks and the shared ones, not B's",
        )
        assertEquals(
            mapOf(
                b1 to TaskRow(userB.id, "b1", false),
                s1 to TaskRow("shared", "s1", false),
                s2 to TaskRow("shared", "s2", false),
            ),
            b.tasks(),
            "B: its own tasks and the shared ones, not A's",
        )

        // A shared task is writable by both: B's edit of A's shared task reaches A, unreverted.
        b.write { set(get("Task", s1), "done", true) }
        b.waitForUpload()
        a.waitForDownload()
        assertEquals(TaskRow("shared", "s1", true), a.tasks()[s1])
        b.waitForDownload()
        assertEquals(TaskRow("shared", "s1", true), b.tasks()[s1], "B's edit stands")

        // A bootstrap is filtered too: a fresh file of user A, and a third user C who owns nothing.
        val fresh = flxRealm(userA, listOf(FLX_TASK), file = "fresh")
        fresh.subscribeComplete(ALL)
        assertEquals(a.tasks(), fresh.tasks(), "a fresh file of A bootstraps A's view")
        val c = flxRealm(user(server, "c"), listOf(FLX_TASK))
        c.subscribeComplete(ALL)
        assertEquals(setOf("s1", "s2"), c.titles(), "C sees only the shared tasks")

        for (r in listOf(a, b, fresh, c)) r.assertNoErrors()
    }

    @Test
    fun aForbiddenWriteIsRevertedAsACompensatingWrite() = compat {
        val server = rulesServer()
        val userA = user(server, "a")
        val userB = user(server, "b")
        val a = flxRealm(userA, listOf(FLX_TASK))
        val b = flxRealm(userB, listOf(FLX_TASK))
        a.subscribeComplete(ALL)
        b.subscribeComplete(ALL)

        // An allowed write first: A's own task stays.
        val mine = a.createTask(userA.id, "mine")
        a.sync()
        a.assertNoErrors()

        // 1. A creates a task owned by B: the write rule refuses it (neither A's nor shared).
        val forbidden = a.createTask(userB.id, "for B")
        a.waitForUpload()
        val created = a.awaitCompensatingWrite()
        assertEquals(ErrorCode.RLM_ERR_SYNC_COMPENSATING_WRITE, created.error.errorCode.errorCode, describe(created.error))
        assertFalse(created.error.isFatal, "a compensating write is not fatal")
        assertEquals(listOf("Task" to forbidden), created.writes.map { it.objectName to it.primaryKey }, "the rejected object")
        assertTrue(created.writes.single().reason.isNotBlank(), "the server's reason")
        a.waitForDownload()
        a.read {
            assertNull(find("Task", forbidden), "the created task was erased on A")
            assertEquals(1L, count("Task"))
        }
        assertEquals(TaskRow(userA.id, "mine", false), a.tasks()[mine])

        // 2. A gives its own task to B: reverted, A keeps it with its owner.
        a.write {
            val t = get("Task", mine)
            set(t, "owner", userB.id)
            set(t, "title", "given away")
        }
        a.waitForUpload()
        val given = a.awaitCompensatingWrite()
        assertEquals(ErrorCode.RLM_ERR_SYNC_COMPENSATING_WRITE, given.error.errorCode.errorCode, describe(given.error))
        assertEquals(listOf("Task" to mine), given.writes.map { it.objectName to it.primaryKey })
        a.waitForDownload()
        assertEquals(mapOf(mine to TaskRow(userA.id, "mine", false)), a.tasks(), "A's task is back as it was")

        // On the server: the created task is gone and A's task is A's, unchanged.
        val state = server.admin("state", "/flx")
        assertFalse(state.contains(forbidden.toHexString()), "the created task is not on the server: $state")
        assertTrue(state.contains(mine.toHexString()) && state.contains("\"owner\": \"${userA.id}\""), state)
        assertFalse(state.contains(userB.id) || state.contains("given away"), "nothing of the reverted writes: $state")

        // B never got either object (nor was either ever in its view).
        b.sync()
        b.read {
            assertNull(find("Task", forbidden), "B never got the task A created for it")
            assertNull(find("Task", mine), "B never got A's task")
            assertEquals(0L, count("Task"))
        }
        b.assertNoErrors()
        // The session went on after each: both errors are non-fatal, and nothing else was reported.
        assertTrue(a.errors.all { it.errorCode.errorCode == ErrorCode.RLM_ERR_SYNC_COMPENSATING_WRITE && !it.isFatal }, a.errors.map { describe(it) }.toString())
        assertEquals(2, a.errors.size, a.errors.map { describe(it) }.toString())
        assertTrue(Regex("error_code=231, is_fatal=false, error_action=Warning").containsMatchIn(coreLog()), "core received JSON_ERROR 231 with action Warning")
        // The allowed write after the reverts still goes through.
        a.write { set(get("Task", mine), "done", true) }
        a.sync()
        assertEquals(TaskRow(userA.id, "mine", true), a.tasks()[mine])
        assertEquals(2, a.errors.size, "no new error: ${a.errors.map { describe(it) }}")
    }

    @Test
    fun asymmetricObjectsAreUploadedAndNeverDownloaded() = compat {
        val server = rulesServer()
        val schema = listOf(FLX_TASK, MEASUREMENT)
        val a = flxRealm(user(server, "a"), schema)
        val values = listOf(20.5, 21.25, -3.0)
        val ids = values.map { BsonObjectId() }
        // No subscription needed (nor possible) for an asymmetric class: core allows inserts only.
        a.write {
            ids.zip(values).forEach { (id, v) -> create("Measurement", id, "value" to v) }
            assertEquals(3L, size("Measurement"), "inside the write the objects exist")
        }
        // Core erases them from the table when the write commits; the changeset keeps them.
        a.read { assertEquals(0L, size("Measurement"), "after the commit A's table is empty") }
        a.waitForUpload()

        // On the server: the three objects are in /flx's state.
        val state = server.admin("state", "/flx")
        val objects = state.substringAfter("\"objects\"").substringAfter("\"Measurement\": [", "").substringBefore("\n    ]")
        val stored = Regex("\"objectId\": \"([0-9a-f]{24})\"").findAll(objects).map { it.groupValues[1] }.toSet()
        assertEquals(ids.map { it.toHexString() }.toSet(), stored, "the server's Measurement objects: $state")
        for (v in values) assertTrue(objects.contains("\"double\": $v"), "value $v on the server: $objects")

        // B subscribes to every Task and gets no Measurement.
        val b = flxRealm(user(server, "b"), schema)
        b.subscribeComplete(ALL)
        b.sync()
        b.read { assertEquals(0L, size("Measurement"), "B has no Measurement objects") }
        // Nor could B ask for them: core refuses any query on an asymmetric class, so a
        // subscription to one fails in realm_query_parse, before the set is changed.
        val subscribed = b.subscriptions()
        val refused = assertThrows(IllegalStateException::class.java) { b.subscribe(Triple("m", "Measurement", "TRUEPREDICATE")) }
        assertTrue(refused.message!!.contains("Query on ephemeral objects not allowed"), refused.message)
        assertEquals(subscribed, b.subscriptions(), "B's set is unchanged")
        assertEquals(1L, b.latestVersion)
        // And A got none back.
        a.sync()
        a.read { assertEquals(0L, size("Measurement"), "A has no Measurement objects") }

        a.assertNoErrors()
        b.assertNoErrors()
    }
}
