// The rest of the untyped API underneath the typed layer (docs/ffi.md), through Kotlin: list
// move/set/clear, set and dictionary clear, writes through paths into collections inside
// embedded objects, open options (durability, writer timeout, recovery window), a destructive
// schema change, the log listener, the sync state and progress listeners, `transact` (accepted,
// rejected and rolled back, its rules), and the quarantine: empty, after a client reset (a
// server that lost its data, restarted on the same port), and after a rejected transaction.

package dev.tandem

import java.io.File
import java.nio.ByteBuffer
import java.nio.file.Files
import java.nio.file.Path
import java.util.UUID
import java.util.concurrent.CopyOnWriteArrayList
import java.util.concurrent.TimeUnit
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.async
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.jupiter.api.AfterEach
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Assumptions.assumeTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows
import org.junit.jupiter.api.io.TempDir

// One class, `Versioned`, in four versions: the first as the file was created, then a changed
// type, a changed nullability (both destructive), and an added property (not destructive).
@TandemClass("Versioned")
data class VersionOne(@PrimaryKey val _id: Long, val n: Long = 0)

@TandemClass("Versioned")
data class VersionRetyped(@PrimaryKey val _id: Long, val n: String = "")

@TandemClass("Versioned")
data class VersionNullable(@PrimaryKey val _id: Long, val n: Long? = null)

@TandemClass("Versioned")
data class VersionAdded(@PrimaryKey val _id: Long, val n: Long = 0, val extra: String = "")

class WholeApiTest {
    @TempDir
    lateinit var dir: Path
    private var server: TestServer? = null
    private val sessions = mutableListOf<SyncSession>()
    private val closeables = mutableListOf<AutoCloseable>()

    @AfterEach
    fun cleanUp() {
        sessions.forEach { it.stop() }
        server?.close()
        closeables.asReversed().forEach { it.close() }
    }

    private fun path(name: String) = dir.resolve(name).toString()

    private fun typed(name: String = "typed.sqlite") =
        TandemDatabase.open(path(name), AllTypes::class).also { closeables += it }

    private fun untyped(name: String) = Database.open(path(name), taskClasses()).also { closeables += it }

    private fun startServer(): TestServer = TestServer(dir.resolve("server").also { Files.createDirectories(it) }).also { server = it }

    private fun SyncSession.kept(): SyncSession = also { sessions += it }

    private fun uuid(u: UUID): Value =
        Value.Uuid(ByteBuffer.allocate(16).putLong(u.mostSignificantBits).putLong(u.leastSignificantBits).array())

    /** [expected] and [actual] hold the same values (their byte arrays compared by content). */
    private fun assertSameValues(expected: AllTypes, actual: AllTypes?) {
        actual!!
        assertTrue(expected.bytes.contentEquals(actual.bytes))
        assertTrue((expected.nbytes == null && actual.nbytes == null) || expected.nbytes!!.contentEquals(actual.nbytes))
        assertEquals(expected, actual.copy(bytes = expected.bytes, nbytes = expected.nbytes))
    }

    private fun tags(db: Database, key: Long): List<String> {
        val field = db.`object`("Task", intKey(key))!!["tags"] as FieldValue.ListValue
        return field.items.map { (it as Value.String).value }
    }

    private fun title(db: Database, key: Long): String? {
        val obj = db.`object`("Task", intKey(key)) ?: return null
        return ((obj["title"] as FieldValue.Single).value as Value.String).value
    }

    // 1. List move, set and clear; set clear; dictionary clear.

    @Test
    fun listMoveSetClearAndSetAndDictionaryClear() {
        val db = typed()
        val id = ObjectId.generate()
        val key = Key.ObjectId(id.toByteArray())
        val start = AllTypes(
            _id = id, s = "kept",
            strings = listOf("a", "b", "c", "d"),
            uuids = setOf(UUID(1, 1), UUID(2, 2)),
            scores = mapOf("x" to 1.0, "y" to null),
        )
        db.write { add(start) }

        // Through the recording transaction's methods: a move to the end, then a replacement.
        db.raw.write { tx -> tx.listMove("Everything", key, "strings", 0u, 3u) }
        assertEquals(listOf("b", "c", "d", "a"), db.find<AllTypes>(id)!!.strings)
        db.raw.write { tx -> tx.listSet("Everything", key, "strings", 1u, str("C")) }
        assertEquals(listOf("b", "C", "d", "a"), db.find<AllTypes>(id)!!.strings)
        // A move towards the front, through the one-crossing WriteOp list.
        db.raw.write(listOf(WriteOp.ListMove("Everything", key, "strings", 3uL, 0uL)))
        assertEquals(listOf("a", "b", "C", "d"), db.find<AllTypes>(id)!!.strings)
        // A set and a dictionary keep their contents until cleared; adding to the set works.
        db.raw.write { tx -> tx.setInsert("Everything", key, "uuids", uuid(UUID(3, 3))) }
        assertEquals(setOf(UUID(1, 1), UUID(2, 2), UUID(3, 3)), db.find<AllTypes>(id)!!.uuids)

        // The three clears in one typed batch (the untyped operations through `op`).
        db.write {
            op(WriteOp.ListClear("Everything", key, "strings"))
            op(WriteOp.SetClear("Everything", key, "uuids"))
            op(WriteOp.DictClear("Everything", key, "scores"))
        }
        assertSameValues(start.copy(strings = emptyList(), uuids = emptySet(), scores = emptyMap()), db.find<AllTypes>(id))

        // The recording transaction's clears, on refilled collections.
        db.write { add(start) }
        db.raw.write { tx ->
            tx.listClear("Everything", key, "strings")
            tx.setClear("Everything", key, "uuids")
            tx.dictClear("Everything", key, "scores")
        }
        val cleared = db.find<AllTypes>(id)!!
        assertEquals(emptyList<String>(), cleared.strings)
        assertEquals(emptySet<UUID>(), cleared.uuids)
        assertEquals(emptyMap<String, Double?>(), cleared.scores)
        assertEquals("kept", cleared.s)

        // Positions out of range: InvalidArgument naming the failing operation, nothing written.
        db.write { add(start) }
        val move = assertThrows<TandemException.InvalidArgument> {
            db.raw.write(listOf(
                WriteOp.ListClear("Everything", key, "strings"),
                WriteOp.ListMove("Everything", key, "strings", 0uL, 1uL),
            ))
        }
        assertTrue(move.detail.startsWith("operation 1: "), move.detail)
        val set = assertThrows<TandemException.InvalidArgument> {
            db.raw.write { tx -> tx.listSet("Everything", key, "strings", 4u, str("e")) }
        }
        assertTrue(set.detail.startsWith("operation 0: "), set.detail)
        val wrongType = assertThrows<TandemException.InvalidArgument> {
            db.raw.write { tx -> tx.setInsert("Everything", key, "uuids", str("not a uuid")) }
        }
        assertTrue(wrongType.detail.startsWith("operation 0: ") && "not a uuid" in wrongType.detail, wrongType.detail)
        val notADictionary = assertThrows<TandemException.InvalidArgument> {
            db.raw.write { tx -> tx.dictClear("Everything", key, "strings") }
        }
        assertTrue(notADictionary.detail.startsWith("operation 0: ") && "not a Dictionary" in notADictionary.detail, notADictionary.detail)
        assertEquals(start.strings, db.find<AllTypes>(id)!!.strings)
    }

    // 2. Writes through a path into collections inside embedded objects.

    @Test
    fun writesThroughPathsIntoCollectionsInsideEmbeddedObjects() {
        val db = typed()
        val id = ObjectId.generate()
        val key = Key.ObjectId(id.toByteArray())
        db.write {
            add(AllTypes(
                _id = id,
                address = Address("Main", tags = listOf("a")),
                addresses = listOf(Address("A1", tags = listOf("x", "y")), Address("A2")),
                places = mapOf("home" to Address("H", tags = listOf("h1", "h2"))),
            ))
        }
        fun tagsAt(vararg steps: PathStep) = listOf(*steps, PathStep.Name("tags"))
        db.raw.write(listOf(
            // address.tags: [a] -> [a, b]
            WriteOp.ListInsert("Everything", key, "address", 1uL, str("b"), tagsAt()),
            // addresses[0].tags: [x, y] -> [y, x] -> [Y, x]
            WriteOp.ListMove("Everything", key, "addresses", 0uL, 1uL, tagsAt(PathStep.Index(0uL))),
            WriteOp.ListSet("Everything", key, "addresses", 0uL, str("Y"), tagsAt(PathStep.Index(0uL))),
            // places["home"].tags: cleared
            WriteOp.ListClear("Everything", key, "places", tagsAt(PathStep.Name("home"))),
            // addresses[1].street, then a new embedded object in the list and one of its fields
            WriteOp.Set("Everything", key, "addresses", str("A2b"), listOf(PathStep.Index(1uL), PathStep.Name("street"))),
            WriteOp.ListInsertEmbedded("Everything", key, "addresses", 2uL),
            WriteOp.ListInsert("Everything", key, "addresses", 0uL, str("z"), tagsAt(PathStep.Index(2uL))),
            // address.geo created, then one of its fields (two levels down)
            WriteOp.CreateEmbedded("Everything", key, "address", listOf(PathStep.Name("geo"))),
            WriteOp.Set("Everything", key, "address", Value.Double(5.5), listOf(PathStep.Name("geo"), PathStep.Name("lat"))),
        ))
        val read = db.find<AllTypes>(id)!!
        assertEquals(Address("Main", tags = listOf("a", "b"), geo = Geo(5.5, 0.0)), read.address)
        assertEquals(
            listOf(Address("A1", tags = listOf("Y", "x")), Address("A2b"), Address("", tags = listOf("z"))),
            read.addresses,
        )
        assertEquals(mapOf("home" to Address("H")), read.places)

        // The same through the recording transaction's `path` arguments.
        db.raw.write { tx ->
            tx.listClear("Everything", key, "address", listOf(PathStep.Name("tags")))
            tx.listInsert("Everything", key, "addresses", 0u, str("w"), tagsAt(PathStep.Index(1uL)))
        }
        val again = db.find<AllTypes>(id)!!
        assertEquals(emptyList<String>(), again.address!!.tags)
        assertEquals(listOf("w"), again.addresses[1].tags)

        // A path to an element that is not there, or through a property that is not embedded:
        // InvalidArgument naming the operation, and nothing of the batch is written.
        val missing = assertThrows<TandemException.InvalidArgument> {
            db.raw.write(listOf(
                WriteOp.ListClear("Everything", key, "addresses", tagsAt(PathStep.Index(0uL))),
                WriteOp.ListInsert("Everything", key, "addresses", 0uL, str("q"), tagsAt(PathStep.Index(9uL))),
            ))
        }
        assertTrue(missing.detail.startsWith("operation 1: "), missing.detail)
        val notEmbedded = assertThrows<TandemException.InvalidArgument> {
            db.raw.write(listOf(WriteOp.ListClear("Everything", key, "strings", listOf(PathStep.Name("tags")))))
        }
        assertTrue(notEmbedded.detail.startsWith("operation 0: "), notEmbedded.detail)
        assertSameValues(again, db.find<AllTypes>(id))
    }

    // 3. Quarantine: on a database nothing was quarantined in, after a client reset, and (below,
    // with transact) after a rejected transaction.

    @Test
    fun anUntouchedQuarantineReadsEmptyAndClearingItIsANoOp() {
        val db = untyped("q.sqlite")
        db.write { tx -> tx.create("Task", intKey(1), mapOf("title" to str("x"))) }
        assertEquals(emptyList<QuarantinedChangeset>(), db.quarantine())
        db.clearQuarantine(null) // all of them: none
        db.clearQuarantine(42uL) // an id that does not exist: nothing to remove, no error
        assertEquals(emptyList<QuarantinedChangeset>(), db.quarantine())
        assertEquals("x", title(db, 1))
    }

    /**
     * A (opened with [recoveryWindow]) syncs task 1 through a server, which then loses its data
     * while A edits task 1 and creates task 2 offline; the server comes back on the same port
     * (error 208: a client reset, Recover mode). Returns A once the reset is done, and what a
     * new client then downloads.
     */
    private fun resetAfterTheServerLostItsData(name: String, recoveryWindow: ULong): Pair<Database, List<Key>> {
        val serverDir = dir.resolve("server-$name").also { Files.createDirectories(it) }
        val first = TestServer(serverDir).also { server = it }
        val a = Database.openWithOptions(path("$name-a.sqlite"), taskClasses(),
            OpenOptions(durability = Durability.NORMAL, recoveryWindow = recoveryWindow))
        closeables += a
        val options = first.options().copy(clientReset = ClientResetMode.RECOVER)
        val before = a.sync(options, null).kept()
        a.write { tx -> tx.create("Task", intKey(1), mapOf("title" to str("synced"))) }
        runBlocking { before.waitForUpload(30_000uL) }
        before.stop()
        eventually { before.state() == SyncState.Disconnected }
        first.close()
        a.write { tx ->
            tx.set("Task", intKey(1), "title", str("edited offline"))
            tx.create("Task", intKey(2), mapOf("title" to str("offline")))
        }
        serverDir.resolve("data").toFile().deleteRecursively()
        val second = TestServer(serverDir, port = first.port).also { server = it }
        // The first token fetch is held until the error listener is registered.
        val held = SyncTest.HeldToken(makeToken(listOf("/todos")))
        val after = a.sync(options.copy(token = ""), held).kept()
        val errors = SyncTest.Errors()
        val handle = after.observeErrors(errors)
        held.release.countDown()
        eventually { (208uL to true) in errors.seen }
        runBlocking {
            after.waitForUpload(30_000uL)
            after.waitForDownload(30_000uL)
        }
        handle.cancel()
        assertEquals(SyncState.Connected, after.state())
        assertEquals("offline", title(a, 2))
        val b = untyped("$name-b.sqlite")
        val sb = b.sync(second.options(), null).kept()
        runBlocking { sb.waitForDownload(30_000uL) }
        val keys = b.query("Task", "TRUEPREDICATE SORT(_id ASC)", emptyList()).keys()
        sessions.forEach { it.stop() }
        second.close()
        server = null
        return a to keys
    }

    @Test
    fun aClientResetRecoversOrQuarantinesPerTheRecoveryWindow() {
        // The default window keeps the acknowledged creation of task 1, which the server lost:
        // the reset recovers it with the offline edit, and nothing is quarantined.
        val (kept, keptOnServer) = resetAfterTheServerLostItsData("window", 1000uL)
        assertEquals("edited offline", title(kept, 1))
        assertEquals(emptyList<QuarantinedChangeset>(), kept.quarantine())
        assertEquals(listOf(intKey(1), intKey(2)), keptOnServer)

        // Without a window only the unacknowledged changes are recovered: task 1 is gone, and its
        // edit is quarantined with the instruction and why.
        val (a, onServer) = resetAfterTheServerLostItsData("nowindow", 0uL)
        assertNull(title(a, 1))
        assertEquals(listOf(intKey(2)), onServer)
        val quarantined = a.quarantine()
        assertEquals(1, quarantined.size, quarantined.toString())
        val instruction = quarantined.single().instructions.single()
        assertEquals(0uL, instruction.index)
        assertEquals("Update Task[1].title = \"edited offline\"", instruction.instruction)
        assertEquals("Task[1] does not exist on the server (it was deleted there)", instruction.reason)
        assertTrue("1 of 3 instructions not recovered" in quarantined.single().reason, quarantined.single().reason)
        a.clearQuarantine(quarantined.single().id)
        assertEquals(emptyList<QuarantinedChangeset>(), a.quarantine())
    }

    // 4. Open options.

    @Test
    fun everyDurabilityOpensWritesAndReadsBack() {
        val written = mutableListOf<Durability>()
        for ((i, durability) in Durability.values().withIndex()) {
            val name = "durability-$durability.sqlite"
            val options = OpenOptions(durability = durability, writerTimeoutMs = 2_000uL, recoveryWindow = 10uL)
            val db = TandemDatabase.open(path(name), listOf(AllTypes::class), options)
            val obj = AllTypes(_id = ObjectId(ByteArray(12) { i.toByte() }), s = "written with $durability",
                strings = listOf("a", durability.name), bytes = byteArrayOf(1, i.toByte()))
            assertTrue(db.write { add(obj) }!! > 0uL)
            assertSameValues(obj, db.find<AllTypes>(obj._id))
            db.close()
            // Reopened with the other durability, then with the defaults: the object is there.
            val other = Durability.values().first { it != durability }
            for (reopen in listOf(OpenOptions(durability = other), null)) {
                val again = TandemDatabase.open(path(name), listOf(AllTypes::class), reopen)
                assertSameValues(obj, again.find<AllTypes>(obj._id))
                again.close()
            }
            written += durability
        }
        assertEquals(listOf(Durability.NORMAL, Durability.FULL), written)
    }

    @Test
    fun aWriterBlockedBeyondItsTimeoutGetsTheTimeoutVariant() {
        // Another process (the sqlite3 shell) holds the file's write lock, as another app or a
        // second connection would; the library cannot be made to hold it from Kotlin.
        val sqlite3 = System.getenv("PATH").orEmpty().split(File.pathSeparator)
            .map { File(it, "sqlite3") }.firstOrNull { it.canExecute() }
        assumeTrue(sqlite3 != null, "needs the sqlite3 shell on PATH")
        val db = Database.openWithOptions(path("locked.sqlite"), taskClasses(),
            OpenOptions(durability = Durability.NORMAL, writerTimeoutMs = 300uL))
        closeables += db
        db.write { tx -> tx.create("Task", intKey(1), mapOf("title" to str("before"))) }
        val flag = dir.resolve("locked.flag").toFile()
        val holder = ProcessBuilder(sqlite3!!.path, path("locked.sqlite"))
            .redirectErrorStream(true).redirectOutput(ProcessBuilder.Redirect.DISCARD).start()
        try {
            holder.outputStream.write("BEGIN IMMEDIATE;\n.shell touch '${flag.path}'\n".toByteArray())
            holder.outputStream.flush()
            eventually(10) { flag.exists() }
            val started = System.nanoTime()
            val e = assertThrows<TandemException.Timeout> {
                db.write { tx -> tx.set("Task", intKey(1), "title", str("blocked")) }
            }
            val waitedMs = (System.nanoTime() - started) / 1_000_000
            assertTrue(waitedMs in 250..5_000, "waited $waitedMs ms for a 300 ms timeout")
            // Another process holds the write lock: the same error as a second writer here.
            assertTrue("another write transaction is still open after 300ms" in e.detail, e.detail)
            assertEquals("before", title(db, 1), "nothing written")
        } finally {
            holder.outputStream.close() // end of input: the shell rolls back and exits
            assertTrue(holder.waitFor(10, TimeUnit.SECONDS))
        }
        db.write { tx -> tx.set("Task", intKey(1), "title", str("after")) }
        assertEquals("after", title(db, 1))
    }

    @Test
    fun aFileOpenExclusiveToProcessIsLockedAgainstOtherProcesses() {
        assertFalse(OpenOptions(durability = Durability.NORMAL).exclusiveToProcess)
        // Another process (the sqlite3 shell) counts the file's Task rows, or says why not.
        val sqlite3 = System.getenv("PATH").orEmpty().split(File.pathSeparator)
            .map { File(it, "sqlite3") }.firstOrNull { it.canExecute() }
        assumeTrue(sqlite3 != null, "needs the sqlite3 shell on PATH")
        val file = path("exclusive.sqlite")
        fun countElsewhere(): String {
            val shell = ProcessBuilder(sqlite3!!.path, "-cmd", ".timeout 200", file,
                "SELECT count(*) FROM \"t:Task\";").redirectErrorStream(true).start()
            val out = shell.inputStream.bufferedReader().readText().trim()
            assertTrue(shell.waitFor(10, TimeUnit.SECONDS))
            return out
        }
        val db = Database.openWithOptions(file, taskClasses(),
            OpenOptions(durability = Durability.NORMAL, exclusiveToProcess = true))
        db.write { tx -> tx.create("Task", intKey(1), mapOf("title" to str("mine"))) }
        db.write { tx -> tx.create("Task", intKey(2), mapOf("title" to str("mine too"))) }
        val refused = countElsewhere()
        assertTrue("database is locked" in refused, refused)
        assertEquals("mine too", title(db, 2), "the holder reads on")
        db.close()
        // Closed: the lock is gone and both commits are in the file.
        assertEquals("2", countElsewhere())
    }

    // 5. A destructive schema change on reopen.

    @Test
    fun aDestructiveSchemaChangeOnReopenIsTheSchemaVariant() {
        val file = path("versioned.sqlite")
        TandemDatabase.open(file, VersionOne::class).use { db -> db.write { add(VersionOne(1, 41)) } }
        val retyped = assertThrows<TandemException.Schema> { TandemDatabase.open(file, VersionRetyped::class) }
        assertTrue("Versioned.n" in retyped.detail, retyped.detail)
        val nullable = assertThrows<TandemException.Schema> { TandemDatabase.open(file, VersionNullable::class) }
        assertTrue("Versioned.n" in nullable.detail, nullable.detail)
        // The same through the untyped open.
        val untypedRetyped = TandemDatabase.schema(VersionRetyped::class)
        assertThrows<TandemException.Schema> { Database.open(file, untypedRetyped) }
        // The refusals left the file as it was; an added property is not destructive.
        TandemDatabase.open(file, VersionOne::class).use { db -> assertEquals(VersionOne(1, 41), db.find<VersionOne>(1L)) }
        TandemDatabase.open(file, VersionAdded::class).use { db ->
            assertEquals(VersionAdded(1, 41, ""), db.find<VersionAdded>(1L))
            db.write { add(VersionAdded(2, 2, "new")) }
            assertEquals("new", db.find<VersionAdded>(2L)!!.extra)
        }
    }

    // 6. The log listener.

    class LogCollect : LogListener {
        val seen: MutableList<Triple<LogLevel, String, String>> = CopyOnWriteArrayList()
        override fun onLog(level: LogLevel, target: String, message: String) {
            seen.add(Triple(level, target, message))
        }
    }

    class CountingThrows : ResultsListener {
        val calls = java.util.concurrent.atomic.AtomicInteger()
        override fun onChange(change: ResultsChange) {
            throw IllegalArgumentException("listener failure number ${calls.incrementAndGet()}")
        }
    }

    @Test
    fun theLogListenerReceivesTheLibrarysWarnings() {
        val db = untyped("log.sqlite")
        val logs = LogCollect()
        setLogListener(logs, LogLevel.WARN)
        try {
            val throwing = CountingThrows()
            val handle = db.query("Task", "TRUEPREDICATE", emptyList()).observe(throwing)
            db.write { tx -> tx.create("Task", intKey(1), mapOf("title" to str("x"))) }
            eventually { logs.seen.any { "listener failure number 1" in it.third } }
            val (level, target, message) = logs.seen.first { "listener failure number 1" in it.third }
            assertEquals(LogLevel.WARN, level)
            assertTrue(target.startsWith("tandem::"), target)
            assertTrue("threw" in message && "the other listeners still run" in message, message)
            assertTrue(logs.seen.all { it.first <= LogLevel.WARN }, logs.seen.toString())

            // After clearLogListener nothing more arrives.
            clearLogListener()
            db.write { tx -> tx.create("Task", intKey(2), mapOf("title" to str("y"))) }
            eventually { throwing.calls.get() >= 2 }
            Thread.sleep(300)
            assertFalse(logs.seen.any { "listener failure number 2" in it.third }, logs.seen.toString())
            handle.cancel()
        } finally {
            clearLogListener()
        }
    }

    // 7. Sync state and progress listeners.

    class StateCollect : SyncStateListener {
        val seen: MutableList<SyncState> = CopyOnWriteArrayList()
        override fun onState(state: SyncState) {
            seen.add(state)
        }
    }

    class ProgressCollect : ProgressListener {
        val seen: MutableList<SyncProgress> = CopyOnWriteArrayList()
        override fun onProgress(progress: SyncProgress) {
            seen.add(progress)
        }
    }

    @Test
    fun syncStateAndProgressListenersFireWithPlausibleValues() {
        val server = startServer()
        val a = untyped("a.sqlite")
        val b = untyped("b.sqlite")
        val title = "x".repeat(100)
        // Each session's first token fetch is held until its listeners are registered (a
        // listener hears only later events).
        val heldA = SyncTest.HeldToken(makeToken(listOf("/todos")))
        val sa = a.sync(server.options(token = ""), heldA).kept()
        val statesA = StateCollect()
        val progressA = ProgressCollect()
        val handles = mutableListOf(sa.observeState(statesA), sa.observeProgress(progressA))
        a.write { tx -> for (i in 0L until 20L) tx.create("Task", intKey(i), mapOf("title" to str(title))) }
        heldA.release.countDown()
        runBlocking { sa.waitForUpload(30_000uL) }
        eventually { SyncState.Connected in statesA.seen }
        // Uploaded: the changeset bytes of 20 titles of 100 characters, all acknowledged.
        eventually { progressA.seen.any { it.uploadTransferred >= 2_000uL && it.uploadTransferred == it.uploadTransferable } }
        val upload = progressA.seen.toList()
        assertTrue(upload.all { it.uploadTransferred <= it.uploadTransferable && it.downloadTransferred <= it.downloadTransferable }, upload.toString())
        assertEquals(upload.map { it.uploadTransferred }.sorted(), upload.map { it.uploadTransferred }, "never decreases")
        val now = sa.progress()
        assertEquals(now.uploadTransferable, now.uploadTransferred)
        assertTrue(now.uploadTransferred >= upload.maxOf { it.uploadTransferred })

        val heldB = SyncTest.HeldToken(makeToken(listOf("/todos")))
        val sb = b.sync(server.options(token = ""), heldB).kept()
        val statesB = StateCollect()
        val progressB = ProgressCollect()
        handles += listOf(sb.observeState(statesB), sb.observeProgress(progressB))
        heldB.release.countDown()
        runBlocking { sb.waitForDownload(30_000uL) }
        assertEquals(20uL, b.query("Task", "TRUEPREDICATE", emptyList()).count())
        eventually { progressB.seen.any { it.downloadTransferred >= 2_000uL } }
        assertTrue(progressB.seen.toList().all { it.downloadTransferred <= it.downloadTransferable }, progressB.seen.toString())
        eventually { SyncState.Connected in statesB.seen }
        assertEquals(SyncState.Connected, sb.state())

        // Stopping: the state listener hears Disconnected, and no state was an error.
        sa.stop()
        eventually { statesA.seen.lastOrNull() == SyncState.Disconnected }
        assertEquals(SyncState.Disconnected, sa.state())
        val allStates = statesA.seen.toList() + statesB.seen.toList()
        assertTrue(allStates.none { it is SyncState.Error }, allStates.toString())
        handles.forEach { it.cancel() }
    }

    // 8. transact.

    @Test
    fun transactIsAcceptedByTheServerAndKeepsItsRules() {
        val server = startServer()
        val a = untyped("a.sqlite")
        val b = untyped("b.sqlite")
        val sa = a.sync(server.options(), null).kept()
        val sb = b.sync(server.options(), null).kept()
        a.write { tx -> tx.create("Task", intKey(1), mapOf("title" to str("before"))) }
        runBlocking { sa.waitForUpload(30_000uL) }

        val outcome = runBlocking {
            sa.transact(listOf(WriteOp.Set("Task", intKey(1), "title", str("transacted"))), 30_000uL)
        }
        assertTrue(outcome is TransactOutcome.Accepted, outcome.toString())
        assertTrue((outcome as TransactOutcome.Accepted).serverVersion > 0uL, outcome.toString())
        assertEquals("transacted", title(a, 1))
        runBlocking { sb.waitForDownload(30_000uL) }
        assertEquals("transacted", title(b, 1))

        // The blocking twin, adding to the counter.
        val blocking = sa.transactBlocking(listOf(WriteOp.Add("Task", intKey(1), "count", 5)), 30_000uL, null)
        assertTrue(blocking is TransactOutcome.Accepted, blocking.toString())
        assertTrue((blocking as TransactOutcome.Accepted).serverVersion > outcome.serverVersion, blocking.toString())

        // An empty transaction is refused; a failing operation fails the call with its own
        // variant, naming it, and writes nothing.
        val empty = assertThrows<TandemException.Sync> { runBlocking { sa.transact(emptyList(), 5_000uL) } }
        assertTrue("wrote nothing" in empty.detail, empty.detail)
        val bad = assertThrows<TandemException.InvalidArgument> {
            runBlocking {
                sa.transact(listOf(
                    WriteOp.Set("Task", intKey(1), "title", str("never")),
                    WriteOp.Set("Task", intKey(1), "nope", str("x")),
                ), 5_000uL)
            }
        }
        assertTrue("operation 1" in bad.detail && "nope" in bad.detail, bad.detail)
        assertEquals("transacted", title(a, 1))
        assertEquals(FieldValue.Single(Value.Int(5)), a.`object`("Task", intKey(1))!!["count"])
    }

    @Test
    fun aRejectedTransactRollsBackAndQuarantinesTheEditsThatNoLongerApply() {
        val server = startServer()
        val a = untyped("a.sqlite")
        val b = untyped("b.sqlite")
        val sb = b.sync(server.options(), null).kept()
        val first = a.sync(server.options(), null).kept()
        a.write { tx ->
            tx.create("Task", intKey(1), mapOf("title" to str("original")))
            tx.listInsert("Task", intKey(1), "tags", 0u, str("x"))
        }
        runBlocking {
            first.waitForUpload(30_000uL)
            sb.waitForDownload(30_000uL)
        }
        // a goes offline; b changes task 1 meanwhile.
        first.stop()
        eventually { first.state() == SyncState.Disconnected }
        b.write { tx -> tx.listInsert("Task", intKey(1), "tags", 0u, str("b")) }
        runBlocking { sb.waitForUpload(30_000uL) }
        assertEquals(listOf("b", "x"), tags(b, 1))

        // a syncs again, its connection held back until its writes are in: a transaction on task
        // 1 (which b changed concurrently), then ordinary writes behind it: two replacements of
        // the element the transaction inserted, and an insert of its own.
        val held = SyncTest.HeldToken(makeToken(listOf("/todos")))
        val sa = a.sync(server.options(token = ""), held).kept()
        val outcome = runBlocking {
            val verdict = async(Dispatchers.IO) {
                sa.transact(listOf(WriteOp.ListInsert("Task", intKey(1), "tags", 1uL, str("t"))), 60_000uL)
            }
            // Committed locally at once; the verdict waits for the server.
            eventually(10) { tags(a, 1) == listOf("x", "t") }
            assertFalse(verdict.isCompleted)
            a.write { tx -> tx.listSet("Task", intKey(1), "tags", 1u, str("t2")) }
            a.write { tx -> tx.listSet("Task", intKey(1), "tags", 1u, str("t3")) }
            a.write { tx -> tx.listInsert("Task", intKey(1), "tags", 2u, str("l")) }
            assertEquals(listOf("x", "t3", "l"), tags(a, 1))
            held.release.countDown()
            withTimeout(60_000) { verdict.await() }
        }
        assertTrue(outcome is TransactOutcome.Rejected, outcome.toString())
        assertTrue("Task[1]" in (outcome as TransactOutcome.Rejected).reason, outcome.reason)

        // Rolled back before the verdict returned: the replacements of its element went to the
        // quarantine, one record per local changeset, each naming its instruction and why.
        val quarantined = a.quarantine()
        assertEquals(2, quarantined.size, quarantined.toString())
        for (record in quarantined) {
            assertEquals(1, record.instructions.size, record.toString())
            val instruction = record.instructions.single()
            assertEquals("it changes a list element the rolled-back transaction inserted", instruction.reason)
            assertTrue("Task[1].tags" in instruction.instruction, instruction.instruction)
            assertTrue(record.reason.isNotEmpty(), record.toString())
        }
        assertTrue("\"t2\"" in quarantined[0].instructions[0].instruction, quarantined.toString())
        assertTrue("\"t3\"" in quarantined[1].instructions[0].instruction, quarantined.toString())
        assertTrue(quarantined[0].originalVersion < quarantined[1].originalVersion, quarantined.toString())

        // b's tag stays, a's own insert is merged beside it, the transaction's tag is gone.
        runBlocking {
            sa.waitForUpload(30_000uL)
            sa.waitForDownload(30_000uL)
            sb.waitForDownload(30_000uL)
        }
        assertEquals(listOf("b", "x", "l"), tags(a, 1))
        assertEquals(listOf("b", "x", "l"), tags(b, 1))

        // Clearing one record by id leaves the other; null clears the rest.
        a.clearQuarantine(quarantined[0].id)
        assertEquals(listOf(quarantined[1]), a.quarantine())
        a.clearQuarantine(null)
        assertEquals(emptyList<QuarantinedChangeset>(), a.quarantine())
    }
}
