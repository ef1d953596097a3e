// Scenario 7: flexible sync (protocol com.mongodb.realm-query-sync#14). Two realm-core clients
// with FLX realms of `Task{_id, owner, title, done}`: B subscribes to everything and writes, A
// subscribes to a part; bootstraps, a changed subscription, objects moving out of and back into
// a view, a query the server refuses (QUERY_ERROR, the session goes on), a reconnect that
// resumes without a new bootstrap, and steady-state writes.
//
// Needs flexible sync in tandem-server: a server that refuses the FLX offer fails every test at
// the first awaitSubscriptions, naming the fatal sync error core reported.

package dev.tandem.realmcompat

import io.realm.kotlin.internal.interop.PropertyType
import io.realm.kotlin.internal.interop.sync.CoreConnectionState
import io.realm.kotlin.internal.interop.sync.CoreSubscriptionSetState
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.Timeout
import org.mongodb.kbson.BsonObjectId

@Timeout(value = 120, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class FlexibleSyncTest : CompatTest() {
    companion object {
        /** `Task{_id: ObjectId PK, owner: String, title: String, done: Bool}`. */
        val FLX_TASK: ClassDef = ClassDef(
            "Task",
            listOf(
                Prop("_id", PropertyType.RLM_PROPERTY_TYPE_OBJECT_ID, primaryKey = true),
                Prop("owner", PropertyType.RLM_PROPERTY_TYPE_STRING),
                Prop("title", PropertyType.RLM_PROPERTY_TYPE_STRING),
                Prop("done", PropertyType.RLM_PROPERTY_TYPE_BOOL),
            ),
        )

        val COMPLETE = CoreSubscriptionSetState.RLM_SYNC_SUBSCRIPTION_COMPLETE
        val ERROR = CoreSubscriptionSetState.RLM_SYNC_SUBSCRIPTION_ERROR

        const val ALICE = "owner == 'alice'"
        const val BOB = "owner == 'bob'"
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

    /** Subscribes and waits for Complete, failing with core's error string otherwise; returns the set's version. */
    private fun FlxRealm.subscribeComplete(vararg subs: Triple<String, String, String>): Long {
        val version = subscribe(*subs)
        val result = awaitSubscriptions()
        assertEquals(COMPLETE, result.state, "subscription set $version: ${result.error}")
        assertEquals(version, result.version)
        return version
    }

    private fun FlxRealm.assertNoFatalError() =
        assertTrue(errors.none { it.isFatal }, "no fatal sync error: ${errors.map { describe(it) }}")

    /** Client B, subscribed to every Task. */
    private fun Resources.writer(server: TandemServer): FlxRealm {
        val b = flxRealm(app(server, "b").logInAnonymous(), listOf(FLX_TASK))
        b.subscribeComplete(Triple("all", "Task", "TRUEPREDICATE"))
        return b
    }

    /** B creates alice's a1..a3 and bob's b1..b2 (done false) and uploads them; returns title -> _id. */
    private fun FlxRealm.seed(): Map<String, BsonObjectId> {
        val ids = listOf("alice" to "a1", "alice" to "a2", "alice" to "a3", "bob" to "b1", "bob" to "b2")
            .associate { (owner, title) -> title to (owner to BsonObjectId()) }
        write {
            ids.forEach { (title, v) -> create("Task", v.second, "owner" to v.first, "title" to title, "done" to false) }
        }
        waitForUpload()
        return ids.mapValues { it.value.second }
    }

    @Test
    fun subscribeAndBootstrap() = compat {
        val server = server()
        val b = writer(server)
        val ids = b.seed()
        assertEquals(5, b.tasks().size)

        val a = flxRealm(app(server, "a").logInAnonymous(), listOf(FLX_TASK))
        assertEquals(0L, a.latestVersion, "core makes an empty set 0 when it opens an FLX realm")
        a.read { assertEquals(0L, count("Task")) }
        val version = a.subscribeComplete(Triple("mine", "Task", ALICE))
        assertEquals(1L, version, "the first committed set is version 1")
        assertEquals(version, a.activeVersion)
        // Core stores (and sends) its own serialisation: double quotes, and a trailing space
        // where the empty sort/distinct/limit part would go.
        assertEquals(listOf(Subscription("mine", "Task", "owner == \"alice\" ")), a.subscriptions())

        val tasks = a.tasks()
        assertEquals(setOf("a1", "a2", "a3"), tasks.values.map { it.title }.toSet())
        assertEquals(setOf(ids["a1"], ids["a2"], ids["a3"]), tasks.keys)
        assertTrue(tasks.values.all { it.owner == "alice" && !it.done }, tasks.toString())

        // Core sent the set as QUERY version 1: a JSON object of class name to its queries,
        // each in parentheses (several are joined with OR).
        val log = coreLog()
        val query = """Sending: QUERY(query_version=1, query_size=32, query="{"Task":"(owner == \"alice\" )"}""""
        assertTrue(log.contains(query), "A's QUERY")
        // B's bootstrap came before A opened; this one is A's.
        assertTrue(log.substringAfter(query).contains("from pending bootstrap for query version 1"), "A integrated a bootstrap for version 1")
        a.assertNoFatalError()
        b.assertNoFatalError()
    }

    @Test
    fun changedSubscriptionErasesAndCreates() = compat {
        val server = server()
        val b = writer(server)
        val ids = b.seed()

        val a = flxRealm(app(server, "a").logInAnonymous(), listOf(FLX_TASK))
        a.subscribeComplete(Triple("mine", "Task", ALICE))
        assertEquals(setOf("a1", "a2", "a3"), a.titles())

        // The same named subscription, a new query: a new set version.
        val version = a.subscribeComplete(Triple("mine", "Task", BOB))
        assertEquals(2L, version)
        assertEquals(version, a.activeVersion)
        assertEquals(listOf(Subscription("mine", "Task", "owner == \"bob\" ")), a.subscriptions())
        val tasks = a.tasks()
        assertEquals(setOf("b1", "b2"), tasks.values.map { it.title }.toSet())
        assertEquals(setOf(ids["b1"], ids["b2"]), tasks.keys)
        a.read {
            listOf("a1", "a2", "a3").forEach { assertNull(find("Task", ids.getValue(it)), "alice's $it left A's file") }
            assertEquals(2L, count("Task"))
        }
        a.assertNoFatalError()
    }

    @Test
    fun anotherClientsWriteMovesAnObjectOutAndBackIn() = compat {
        val server = server()
        val b = writer(server)
        val ids = b.seed()
        val moved = ids.getValue("b1")

        val a = flxRealm(app(server, "a").logInAnonymous(), listOf(FLX_TASK))
        a.subscribeComplete(Triple("open", "Task", "done == false"))
        assertEquals(ids.values.toSet(), a.tasks().keys)

        // Out of A's view: B marks b1 done.
        b.write { set(get("Task", moved), "done", true) }
        b.waitForUpload()
        a.waitForDownload()
        a.read {
            assertNull(find("Task", moved), "b1 (done) left A's view")
            assertEquals(4L, count("Task"))
        }

        // And back in: B marks it not done again; A gets the whole object.
        b.write { set(get("Task", moved), "done", false) }
        b.waitForUpload()
        a.waitForDownload()
        assertEquals(TaskRow("bob", "b1", false), a.tasks()[moved], "b1 is back with its fields")
        assertEquals(5, a.tasks().size)
        assertEquals(CoreSubscriptionSetState.RLM_SYNC_SUBSCRIPTION_COMPLETE, a.subscriptionState())
        a.assertNoFatalError()
        b.assertNoFatalError()
    }

    @Test
    fun unevaluableQueryGetsAnErrorAndTheSessionGoesOn() = compat {
        val server = server()
        val b = writer(server)
        b.seed()

        val a = flxRealm(app(server, "a").logInAnonymous(), listOf(FLX_TASK))
        // DISTINCT (like SORT and LIMIT) is kept by core in the query it sends, and refused by
        // flexible sync servers.
        val bad = a.subscribe(Triple("bad", "Task", "$ALICE DISTINCT(title)"))
        val query = a.subscriptions().single().query
        assertTrue(query.contains("DISTINCT(title)"), "core keeps the DISTINCT clause: $query")
        val refused = a.awaitSubscriptions()
        assertEquals(ERROR, refused.state, "the server refuses $query")
        assertEquals(bad, refused.version)
        assertFalse(refused.error.isNullOrBlank(), "core has the server's message for the refused set")
        assertEquals(0L, a.activeVersion, "no set was ever complete")
        a.read { assertEquals(0L, count("Task")) }
        a.assertNoFatalError()

        // The session goes on: a valid set completes and downloads.
        val good = a.updateSubscriptions {
            assertTrue(remove("bad"))
            assertTrue(add("mine", "Task", ALICE))
        }
        assertEquals(bad + 1, good)
        val result = a.awaitSubscriptions()
        assertEquals(COMPLETE, result.state, result.error)
        assertEquals(good, a.activeVersion)
        assertEquals(setOf("a1", "a2", "a3"), a.titles())

        // And keeps receiving B's writes.
        val later = BsonObjectId()
        b.write { create("Task", later, "owner" to "alice", "title" to "a4", "done" to false) }
        b.waitForUpload()
        a.waitForDownload()
        assertEquals(TaskRow("alice", "a4", false), a.tasks()[later])
        assertEquals(CoreConnectionState.RLM_SYNC_CONNECTION_STATE_CONNECTED, a.connectionState)
        assertTrue(coreLog().contains("Received QUERY_ERROR"), "the refusal came as a QUERY_ERROR (not a session ERROR)")
        a.assertNoFatalError()
    }

    @Test
    fun reconnectResumesWithoutANewBootstrap() = compat {
        val server = server()
        val b = writer(server)
        b.seed()

        val user = app(server, "a").logInAnonymous()
        var a = flxRealm(user, listOf(FLX_TASK))
        val version = a.subscribeComplete(Triple("mine", "Task", ALICE))
        assertEquals(setOf("a1", "a2", "a3"), a.titles())
        close(a)

        // While A is closed, B adds an alice task.
        val later = BsonObjectId()
        b.write { create("Task", later, "owner" to "alice", "title" to "a4", "done" to false) }
        b.waitForUpload()

        val before = coreLog().length
        a = flxRealm(user, listOf(FLX_TASK))
        // The stored set is still the latest and Complete: no new version, nothing to wait for.
        assertEquals(version, a.latestVersion)
        assertEquals(version, a.activeVersion)
        assertEquals(COMPLETE, a.subscriptionState())
        assertEquals(setOf("a1", "a2", "a3"), a.titles(), "the file kept the bootstrap")

        a.waitForDownload()
        assertEquals(TaskRow("alice", "a4", false), a.tasks()[later], "B's write came by steady-state download")
        assertEquals(4, a.tasks().size)

        val after = coreLog().substring(before)
        assertTrue(Regex("Sending: IDENT\\([^\\n]*query_version=$version,").containsMatchIn(after), "the reopened session named set $version in its IDENT")
        for (bootstrap in listOf("from pending bootstrap", "Created new pending bootstrap object", "Begin processing pending FLX bootstrap")) {
            assertFalse(after.contains(bootstrap), "no bootstrap after the reopen (\"$bootstrap\")")
        }
        assertFalse(after.contains("Sending: QUERY("), "no new query after the reopen")
        assertTrue(after.contains("batch_state=SteadyState"), "a steady-state DOWNLOAD after the reopen")
        a.assertNoFatalError()
    }

    @Test
    fun writesByOneClientReachAnotherInSteadyState() = compat {
        val server = server()
        val a = flxRealm(app(server, "a").logInAnonymous(), listOf(FLX_TASK))
        val b = flxRealm(app(server, "b").logInAnonymous(), listOf(FLX_TASK))
        a.subscribeComplete(Triple("mine", "Task", ALICE))
        b.subscribeComplete(Triple("mine", "Task", ALICE))

        val id = BsonObjectId()
        b.write { create("Task", id, "owner" to "alice", "title" to "write the spec", "done" to false) }
        b.waitForUpload()
        a.waitForDownload()
        assertEquals(TaskRow("alice", "write the spec", false), a.tasks()[id])

        b.write {
            val t = get("Task", id)
            set(t, "title", "spec written")
            set(t, "done", true)
        }
        b.waitForUpload()
        a.waitForDownload()
        assertEquals(TaskRow("alice", "spec written", true), a.tasks()[id])

        b.write { delete(get("Task", id)) }
        b.waitForUpload()
        a.waitForDownload()
        a.read {
            assertNull(find("Task", id), "the deleted task is gone from A")
            assertEquals(0L, count("Task"))
        }
        assertEquals(0L, b.read { count("Task") }, "and from B")
        a.assertNoFatalError()
        b.assertNoFatalError()
    }
}
