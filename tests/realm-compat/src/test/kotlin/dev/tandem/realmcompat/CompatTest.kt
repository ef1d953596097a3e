// Base of the realm-core compatibility tests: a work directory and a realm-core log file per
// test, and `compat { }`, which runs a test body on one thread (a Realm is thread-confined) and
// closes everything the body registered, in reverse order, on that same thread.

package dev.tandem.realmcompat

import org.junit.jupiter.api.AfterEach
import org.junit.jupiter.api.BeforeEach
import org.junit.jupiter.api.TestInfo
import java.nio.file.Path
import kotlin.io.path.createDirectories

/** What a test opened; closed in reverse order of registration. */
class Resources : AutoCloseable {
    private val items = ArrayDeque<AutoCloseable>()

    /** Registers [item] for closing and returns it. */
    fun <T : AutoCloseable> use(item: T): T = item.also { items.addLast(it) }

    /** Closes and forgets [item] now (e.g. a realm reopened later in the test). */
    fun close(item: AutoCloseable) {
        items.remove(item)
        item.close()
    }

    override fun close() {
        var first: Throwable? = null
        while (items.isNotEmpty()) {
            try {
                items.removeLast().close()
            } catch (e: Throwable) {
                if (first == null) first = e else first.addSuppressed(e)
            }
        }
        first?.let { throw it }
    }
}

abstract class CompatTest {
    /** This test's directory: server data, client files, logs. */
    lateinit var work: Path
    private var log: AutoCloseable? = null

    @BeforeEach
    fun setUpWork(info: TestInfo) {
        val root = Path.of(System.getProperty("realm.compat.work", "target/realm-work"))
        val name = "${info.testClass.get().simpleName}/${info.testMethod.get().name}"
        work = root.resolve(name).toAbsolutePath()
        work.toFile().deleteRecursively()
        work.createDirectories()
        log = RealmLog.to(work.resolve("realm-core.log"))
    }

    @AfterEach
    fun tearDownWork() {
        log?.close()
        log = null
    }

    /** realm-core's log of this test so far. */
    fun coreLog(): String {
        RealmLog.flush()
        return work.resolve("realm-core.log").toFile().readText()
    }

    /** Runs [body] with a [Resources] that is closed when it returns or throws. */
    fun compat(body: Resources.() -> Unit) = Resources().use { it.body() }

    /** A server in `work/<name>` with [options], started and registered. */
    fun Resources.server(options: ServerOptions = ServerOptions(), name: String = "server"): TandemServer =
        use(TandemServer(work.resolve(name), options)).start()

    /** A realm-core App (an independent client) for [server], its files in `work/<name>`. */
    fun Resources.app(server: TandemServer, name: String): RealmApp =
        use(RealmApp(server.appId, server.baseUrl, work.resolve(name), if (server.options.tls) TestTls.ca else null))

    /** Opens [partition] for [user] at `work/<client>/<file>.realm`. */
    fun Resources.realm(
        user: RealmUser,
        partition: String,
        file: String = "default",
        schema: List<ClassDef> = listOf(TASK),
        options: OpenOptions = OpenOptions(),
    ): SyncedRealm = use(SyncedRealm.open(user, partitionOf(partition), schema, user.app.baseDir.resolve("$file.realm"), options))

    /** Opens a flexible sync realm for [user] at `work/<client>/<file>.realm` (no subscriptions yet). */
    fun Resources.flxRealm(
        user: RealmUser,
        schema: List<ClassDef>,
        file: String = "default",
        options: OpenOptions = OpenOptions(),
    ): FlxRealm = use(FlxRealm.open(user, schema, user.app.baseDir.resolve("$file.realm"), options))
}
