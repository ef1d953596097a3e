// Mixed clients on one flexible sync app: a realm-core 14.12 flexible sync client and a Tandem
// flexible sync client (examples/realm_peer, Rust, `--subscribe`), both on the app's flexible
// sync file `/flx` with subscriptions (docs/flexible-sync.md). They exchange MixedClientTest's
// every-type AllTypes objects (its schema, samples, canonical JSON and TandemPeer) and compare
// canonical JSON. Either side subscribes to the AllTypes with `int == 42` (and every
// LinkTarget) while the other sees everything, and gets nothing else.

package dev.tandem.realmcompat

import io.realm.kotlin.internal.interop.sync.CoreSubscriptionSetState
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.Timeout

@Timeout(value = 240, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class FlexibleMixedClientTest : CompatTest() {
    companion object {
        /** The server path of every flexible sync object of an app. */
        const val FLX_PATH = "/flx"

        /** The realm-core client's AllTypes subscription. */
        const val MATCHING = "int == 42"

        /** Links of the AllTypes objects the Tandem client writes. */
        val C = Oid("cccccccccccccccccccccccc")
        val D = Oid("dddddddddddddddddddddddd")
    }

    /** Whether an AllTypes object's fields match [MATCHING] (Samples gives int 42 to variants 2, 5, ...). */
    private fun matches(o: Map<String, Any?>) = o["int"] == 42L

    /** AllTypes `id` of [variant] linking to [C] and [D], checked to match [MATCHING] or not as [matching] says. */
    private fun sample(id: String, variant: Int, matching: Boolean): Map<String, Any?> =
        Samples.allTypes(Oid(id), variant, C, D).also { assertEquals(matching, matches(it), "variant $variant's int is ${it["int"]}") }

    /**
     * A server, a realm-core FLX client (not subscribed yet) and a Tandem flexible sync client on
     * `/flx` subscribed to every LinkTarget and to the AllTypes matching [tandemQuery].
     */
    private fun Resources.pair(tandemQuery: String = "TRUEPREDICATE"): Triple<FlxRealm, CoreObjects, TandemPeer> {
        val server = server()
        val core = flxRealm(app(server, "realm-core").logInAnonymous(), PeerSchema.classes)
        val subscriptions = listOf("${PeerSchema.ALL_TYPES}:$tandemQuery", "${PeerSchema.LINK_TARGET}:TRUEPREDICATE")
        return Triple(core, CoreObjects(core), TandemPeer(server, work.resolve("tandem"), FLX_PATH, subscriptions))
    }

    /** Subscribes to the AllTypes matching [MATCHING] and every LinkTarget, and waits until the set is Complete. */
    private fun FlxRealm.subscribeMatching() {
        val version = subscribe(
            Triple("matching", PeerSchema.ALL_TYPES, MATCHING),
            Triple("targets", PeerSchema.LINK_TARGET, "TRUEPREDICATE"),
        )
        val result = awaitSubscriptions()
        assertEquals(CoreSubscriptionSetState.RLM_SYNC_SUBSCRIPTION_COMPLETE, result.state, "subscription set $version: ${result.error}")
        assertEquals(version, result.version)
    }

    /** Subscribes to every AllTypes and LinkTarget, and waits until the set is Complete. */
    private fun FlxRealm.subscribeAll() {
        subscribe(Triple("all", PeerSchema.ALL_TYPES, "TRUEPREDICATE"), Triple("targets", PeerSchema.LINK_TARGET, "TRUEPREDICATE"))
        val result = awaitSubscriptions()
        assertEquals(CoreSubscriptionSetState.RLM_SYNC_SUBSCRIPTION_COMPLETE, result.state, "subscription set: ${result.error}")
    }

    private fun FlxRealm.assertNoFatalError() =
        assertTrue(errors.none { it.isFatal }, "no fatal sync error: ${errors.map { describe(it) }}")

    /** Asserts realm-core holds exactly [expected] of AllTypes, each reading as its canonical text. */
    private fun FlxRealm.assertAllTypes(objects: CoreObjects, expected: List<Map<String, Any?>>, absent: List<Map<String, Any?>>, what: String) = read {
        for (o in expected) {
            val read = objects.read(Ref(PeerSchema.ALL_TYPES, o["_id"] as Oid))
            assertCanonical(PeerSchema.allTypes, o, Canonical.obj(PeerSchema.allTypes, read), "realm-core reading $what", read)
        }
        for (o in absent) {
            assertNull(objects.find(Ref(PeerSchema.ALL_TYPES, o["_id"] as Oid)), "AllTypes[${(o["_id"] as Oid).hex}] (int ${o["int"]}) is outside $MATCHING")
        }
        assertEquals(expected.size.toLong(), count(PeerSchema.ALL_TYPES), "realm-core's AllTypes")
    }

    @Test
    fun `the realm-core client gets what the Tandem client writes on flx that its subscription matches`() = compat {
        val (core, objects, peer) = pair()

        // Before realm-core subscribes: its bootstrap brings the matching object, not the other.
        val before = listOf(sample("ffffffffffffffffffffff00", 2, matching = true), sample("ffffffffffffffffffffff01", 0, matching = false))
        peer.write(listOf(C, D).map { PeerSchema.linkTarget to Samples.target(it) } + before.map { PeerSchema.allTypes to it })
        core.subscribeMatching()
        core.assertAllTypes(objects, before.filter(::matches), before.filterNot(::matches), "Tandem's AllTypes (bootstrap)")
        core.read {
            for (id in listOf(C, D)) {
                val ref = Ref(PeerSchema.LINK_TARGET, id)
                assertCanonical(PeerSchema.linkTarget, Samples.target(id), Canonical.obj(PeerSchema.linkTarget, objects.read(ref)), "realm-core reading Tandem's LinkTarget")
            }
        }

        // Subscribed: steady-state DOWNLOADs bring the next matching object, not the other.
        val after = listOf(sample("0123456789abcdef01234567", 5, matching = true), sample("0123456789abcdef01234568", 1, matching = false))
        peer.write(after.map { PeerSchema.allTypes to it })
        core.sync()
        core.assertAllTypes(objects, (before + after).filter(::matches), (before + after).filterNot(::matches), "Tandem's AllTypes (steady state)")
        core.assertNoFatalError()
    }

    @Test
    fun `the Tandem client on flx reads what the realm-core client writes within its subscription`() = compat {
        val (core, objects, peer) = pair()
        core.subscribeMatching()

        val (a, b) = Oid("aaaaaaaaaaaaaaaaaaaaaaaa") to Oid("bbbbbbbbbbbbbbbbbbbbbbbb")
        val fromCore = listOf(Oid("64f0c0ffee0000000000beef") to 2, Oid("000000000000000000000001") to 5)
            .map { (id, variant) -> Samples.allTypes(id, variant, a, b).also { assertTrue(matches(it)) } }
        core.write {
            listOf(a, b).forEach { objects.create(PeerSchema.linkTarget, Samples.target(it)) }
            fromCore.forEach { objects.create(PeerSchema.allTypes, it) }
        }
        core.sync()
        // Within its subscription, realm-core keeps what it wrote (after the server's copy of it).
        core.assertAllTypes(objects, fromCore, emptyList(), "its own write")
        for (o in fromCore) {
            assertCanonical(PeerSchema.allTypes, o, peer.read(o["_id"] as Oid), "Tandem (on $FLX_PATH) reading realm-core's AllTypes")
        }
        core.assertNoFatalError()
    }

    @Test
    fun `the Tandem client's subscription brings what realm-core writes that it matches and nothing else`() = compat {
        val (core, objects, peer) = pair(tandemQuery = MATCHING)
        core.subscribeAll()

        val fromCore = listOf(sample("64f0c0ffee0000000000bee1", 2, matching = true), sample("64f0c0ffee0000000000bee2", 0, matching = false))
        core.write {
            listOf(C, D).forEach { objects.create(PeerSchema.linkTarget, Samples.target(it)) }
            fromCore.forEach { objects.create(PeerSchema.allTypes, it) }
        }
        core.sync()
        // The Tandem client's bootstrap and steady state: the matching object, never the other.
        for (o in fromCore) {
            val read = peer.readOrNull(o["_id"] as Oid)
            if (matches(o)) {
                assertCanonical(PeerSchema.allTypes, o, read ?: error("the Tandem client lacks the matching AllTypes"), "Tandem (subscribed to $MATCHING) reading realm-core's AllTypes")
            } else {
                assertNull(read, "AllTypes[${(o["_id"] as Oid).hex}] (int ${o["int"]}) is outside the Tandem client's $MATCHING")
            }
        }

        // realm-core changes the matching object so that it no longer matches: it leaves the
        // Tandem client's view.
        val leaving = fromCore.first(::matches)["_id"] as Oid
        core.write { objects.set(Ref(PeerSchema.ALL_TYPES, leaving), "int", 7L) }
        core.sync()
        assertNull(peer.readOrNull(leaving), "AllTypes[${leaving.hex}] left the Tandem client's view")
        core.assertNoFatalError()
    }
}
