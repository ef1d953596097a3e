// The Kotlin/JVM benchmark (issue 14): Tandem's typed layer beside SQLite through JDBC
// (org.xerial:sqlite-jdbc) and beside realm-core 14.12.0's own local writes and reads, driven
// through realm-kotlin's internal RealmInterop (io.realm.kotlin:cinterop-jvm 2.3.0) the way
// tests/realm-compat drives it. Three figures: N objects created in one transaction, N/10
// one-object transactions, and reading N objects back into model instances. Then, on N objects,
// the latency (p50, p99 of 200 runs) of the store benchmark's queries (a primary-key lookup, a
// primary-key range, scans of an unindexed property) counted by each system, and of a results
// notification from commit to listener (Tandem and realm-core; SQLite has none).
//
// Run with bindings/kotlin/bench/run.sh (--n 10000 for a quick run; --only queries for the
// latencies alone).

package dev.tandem.bench

import dev.tandem.Durability
import dev.tandem.OpenOptions
import dev.tandem.PrimaryKey
import dev.tandem.TandemClass
import dev.tandem.TandemDatabase
import io.realm.kotlin.internal.interop.ClassFlags
import io.realm.kotlin.internal.interop.ClassInfo
import io.realm.kotlin.internal.interop.ClassKey
import io.realm.kotlin.internal.interop.CollectionType
import io.realm.kotlin.internal.interop.LiveRealmT
import io.realm.kotlin.internal.interop.NativePointer
import io.realm.kotlin.internal.interop.PropertyFlags
import io.realm.kotlin.internal.interop.PropertyInfo
import io.realm.kotlin.internal.interop.PropertyKey
import io.realm.kotlin.internal.interop.PropertyType
import io.realm.kotlin.internal.interop.Callback
import io.realm.kotlin.internal.interop.RealmChangesT
import io.realm.kotlin.internal.interop.RealmInterop
import io.realm.kotlin.internal.interop.RealmQuerySingleArgument
import io.realm.kotlin.internal.interop.SchemaMode
import io.realm.kotlin.internal.interop.getterScope
import io.realm.kotlin.internal.interop.inputScope
import java.io.File
import java.nio.file.Files
import java.nio.file.Path
import java.sql.Connection
import java.sql.DriverManager
import java.time.ZonedDateTime
import java.time.format.DateTimeFormatter
import kotlin.system.exitProcess

/** The model of all three: `Task{_id: Long PK, title, done, priority, note}`. */
@TandemClass("Task")
data class Task(
    @PrimaryKey val _id: Long,
    val title: String,
    val done: Boolean,
    val priority: Long,
    val note: String,
)

fun task(i: Long) = Task(i, "task $i", i % 3 == 0L, i % 5, "note for task $i")

/** One system under test, opened on a fresh directory. */
interface Store : AutoCloseable {
    /** Creates tasks 0 until n in one transaction. */
    fun bulk(n: Int)

    /** Creates tasks 0 until n, one transaction each. */
    fun small(n: Int)

    /** Reads every task into [Task] instances. */
    fun readAll(): List<Task>

    fun count(): Long

    /** Runs [query] with [a] and [b] as its arguments and returns how many objects match. */
    fun countWhere(query: Query, a: Long, b: Long): Long

    /**
     * Commit-to-listener latencies in nanoseconds, one per commit: a listener on the objects
     * with `_id >= n`, then [commits] transactions that each create one of them. Null if the
     * system has no change notifications.
     */
    fun notificationLatencies(n: Int, commits: Int): List<Long>?
}

/**
 * The store benchmark's queries (`benches/store.rs`), on this model: `$0` and `$1` are the
 * arguments, in Realm's query language for Tandem and realm-core, in SQL for SQLite.
 */
enum class Query(val label: String, val realm: String, val sql: String) {
    PK_LOOKUP("_id == \$0 (primary key)", "_id == \$0", "_id = ?"),
    PK_RANGE("_id >= \$0 AND _id < \$1 (primary key, 1,000 match)", "_id >= \$0 AND _id < \$1", "_id >= ? AND _id < ?"),
    TITLE_SCAN("title == \$0 (unindexed, 1 match)", "title == \$0", "title = ?"),
    PRIORITY_SCAN("priority >= \$0 AND priority < \$1 (unindexed, a fifth match)", "priority >= \$0 AND priority < \$1", "priority >= ? AND priority < ?"),
}

// ---------------------------------------------------------------------------------------------
// Tandem: the typed layer (db.write { add(...) }: one batch, one crossing; query().toList():
// one crossing through Results.entries()). Default open options: WAL, synchronous=NORMAL.

class TandemStore(dir: Path, fullDurability: Boolean = false) : Store {
    private val db = TandemDatabase.open(
        dir.resolve("tandem.sqlite").toString(),
        listOf(Task::class),
        if (fullDurability || tandemExclusive) {
            OpenOptions(
                durability = if (fullDurability) Durability.FULL else Durability.NORMAL,
                exclusiveToProcess = tandemExclusive,
            )
        } else {
            null
        },
    )

    override fun bulk(n: Int) {
        db.write { for (i in 0 until n) add(task(i.toLong())) }
    }

    override fun small(n: Int) {
        for (i in 0 until n) db.write { add(task(i.toLong())) }
    }

    override fun readAll(): List<Task> = db.query<Task>().toList()

    override fun count(): Long = db.query<Task>().count().toLong()

    override fun countWhere(query: Query, a: Long, b: Long): Long = when (query) {
        Query.TITLE_SCAN -> db.query<Task>(query.realm, "task $a")
        Query.PK_LOOKUP -> db.query<Task>(query.realm, a)
        else -> db.query<Task>(query.realm, a, b)
    }.use { it.count().toLong() }

    override fun notificationLatencies(n: Int, commits: Int): List<Long> {
        val delivered = java.util.concurrent.LinkedBlockingQueue<Long>()
        val results = db.query<Task>("_id >= \$0", n.toLong())
        val handle = results.raw.observe(
            object : dev.tandem.ResultsListener {
                override fun onChange(change: dev.tandem.ResultsChange) {
                    delivered.put(System.nanoTime())
                }
            },
        )
        try {
            return (0 until commits).map { i ->
                delivered.clear()
                db.write { add(task(n.toLong() + i)) }
                val committed = System.nanoTime()
                val at = delivered.poll(60, java.util.concurrent.TimeUnit.SECONDS) ?: error("Tandem: no notification for commit $i")
                at - committed
            }
        } finally {
            handle.cancel()
            handle.close()
            results.close()
        }
    }

    override fun close() = db.close()
}

// ---------------------------------------------------------------------------------------------
// SQLite through JDBC: WAL and synchronous=NORMAL (Tandem's default durability), a prepared
// INSERT (addBatch/executeBatch for the bulk load), rows mapped to Task.

class SqliteStore(dir: Path, fullDurability: Boolean = false) : Store {
    private val conn: Connection = DriverManager.getConnection("jdbc:sqlite:${dir.resolve("sqlite.sqlite")}")

    init {
        conn.createStatement().use { s ->
            s.execute("PRAGMA journal_mode=WAL")
            s.execute(if (fullDurability) "PRAGMA synchronous=FULL" else "PRAGMA synchronous=NORMAL")
            s.execute(
                "CREATE TABLE task (_id INTEGER PRIMARY KEY, title TEXT NOT NULL, done INTEGER NOT NULL, " +
                    "priority INTEGER NOT NULL, note TEXT NOT NULL)",
            )
        }
        conn.autoCommit = false
    }

    private val insert = conn.prepareStatement("INSERT INTO task (_id, title, done, priority, note) VALUES (?, ?, ?, ?, ?)")
    private val select = conn.prepareStatement("SELECT _id, title, done, priority, note FROM task")

    private fun bind(t: Task) {
        insert.setLong(1, t._id)
        insert.setString(2, t.title)
        insert.setBoolean(3, t.done)
        insert.setLong(4, t.priority)
        insert.setString(5, t.note)
    }

    override fun bulk(n: Int) {
        for (i in 0 until n) {
            bind(task(i.toLong()))
            insert.addBatch()
        }
        insert.executeBatch()
        conn.commit()
    }

    override fun small(n: Int) {
        for (i in 0 until n) {
            bind(task(i.toLong()))
            insert.executeUpdate()
            conn.commit()
        }
    }

    override fun readAll(): List<Task> {
        val out = ArrayList<Task>()
        select.executeQuery().use { rs ->
            while (rs.next()) out += Task(rs.getLong(1), rs.getString(2), rs.getBoolean(3), rs.getLong(4), rs.getString(5))
        }
        conn.commit() // ends the read transaction
        return out
    }

    override fun count(): Long = conn.createStatement().use { s ->
        s.executeQuery("SELECT count(*) FROM task").use { it.next(); it.getLong(1) }
    }.also { conn.commit() }

    private val counts = Query.entries.associateWith { q -> conn.prepareStatement("SELECT count(*) FROM task WHERE ${q.sql}") }

    override fun countWhere(query: Query, a: Long, b: Long): Long {
        val st = counts.getValue(query)
        when (query) {
            Query.TITLE_SCAN -> st.setString(1, "task $a")
            Query.PK_LOOKUP -> st.setLong(1, a)
            else -> {
                st.setLong(1, a)
                st.setLong(2, b)
            }
        }
        return st.executeQuery().use { it.next(); it.getLong(1) }.also { conn.commit() }
    }

    override fun notificationLatencies(n: Int, commits: Int): List<Long>? = null

    /** The settings in force, read back from SQLite. */
    fun settings(): String = conn.createStatement().use { s ->
        fun one(q: String) = s.executeQuery(q).use { it.next(); it.getString(1) }
        "sqlite ${one("SELECT sqlite_version()")}, journal_mode=${one("PRAGMA journal_mode")}, synchronous=${one("PRAGMA synchronous")} (1 = NORMAL)"
    }.also { conn.commit() }

    override fun close() {
        insert.close()
        select.close()
        counts.values.forEach { it.close() }
        conn.close()
    }
}

// ---------------------------------------------------------------------------------------------
// realm-core through RealmInterop: a local (non-synced) realm opened as realm-kotlin opens one
// (realm_config_new, path, schema, SchemaMode AUTOMATIC, version 0, realm_open with a generic
// scheduler), written as realm-kotlin's copyToRealm does (realm_object_create_with_primary_key,
// then realm_set_value per property, column keys looked up once), read as iterating
// realm.query<Task>().find() and reading each property does (realm_query_parse + find_all,
// realm_results_get -> realm_get_object -> realm_get_value). Durability: realm-core's default
// (full: commits are synced to disk); RealmInterop exposes no setting for it.

class RealmStore(private val dir: Path, @Suppress("UNUSED_PARAMETER") fullDurability: Boolean = false) : Store {
    private val schema: Pair<ClassInfo, List<PropertyInfo>>
    private val realm: NativePointer<LiveRealmT>
    private val cls: ClassKey
    private val id: PropertyKey
    private val title: PropertyKey
    private val done: PropertyKey
    private val priority: PropertyKey
    private val note: PropertyKey

    init {
        fun prop(name: String, type: PropertyType, pk: Boolean = false) = PropertyInfo(
            name = name,
            type = type,
            collectionType = CollectionType.RLM_COLLECTION_TYPE_NONE,
            linkTarget = "",
            flags = if (pk) PropertyFlags.RLM_PROPERTY_PRIMARY_KEY or PropertyFlags.RLM_PROPERTY_INDEXED else 0,
        )
        val props = listOf(
            prop("_id", PropertyType.RLM_PROPERTY_TYPE_INT, pk = true),
            prop("title", PropertyType.RLM_PROPERTY_TYPE_STRING),
            prop("done", PropertyType.RLM_PROPERTY_TYPE_BOOL),
            prop("priority", PropertyType.RLM_PROPERTY_TYPE_INT),
            prop("note", PropertyType.RLM_PROPERTY_TYPE_STRING),
        )
        schema = ClassInfo(name = "Task", primaryKey = "_id", numProperties = props.size.toLong(), flags = ClassFlags.RLM_CLASS_NORMAL) to props
        val config = config()
        realm = RealmInterop.realm_open(config, RealmInterop.realm_create_scheduler()).first
        config.release()
        cls = RealmInterop.realm_find_class(realm, "Task") ?: error("no class Task")
        id = RealmInterop.realm_get_col_key(realm, cls, "_id")
        title = RealmInterop.realm_get_col_key(realm, cls, "title")
        done = RealmInterop.realm_get_col_key(realm, cls, "done")
        priority = RealmInterop.realm_get_col_key(realm, cls, "priority")
        note = RealmInterop.realm_get_col_key(realm, cls, "note")
    }

    /** The configuration every Realm of this store opens with. */
    private fun config() = RealmInterop.realm_config_new().also { config ->
        RealmInterop.realm_config_set_path(config, dir.resolve("default.realm").toString())
        RealmInterop.realm_config_set_schema(config, RealmInterop.realm_schema_new(listOf(schema)))
        RealmInterop.realm_config_set_schema_mode(config, SchemaMode.RLM_SCHEMA_MODE_AUTOMATIC)
        RealmInterop.realm_config_set_schema_version(config, 0)
    }

    private fun put(t: Task) {
        inputScope {
            val obj = RealmInterop.realm_object_create_with_primary_key(realm, cls, longTransport(t._id))
            RealmInterop.realm_set_value(obj, title, stringTransport(t.title), false)
            RealmInterop.realm_set_value(obj, done, booleanTransport(t.done), false)
            RealmInterop.realm_set_value(obj, priority, longTransport(t.priority), false)
            RealmInterop.realm_set_value(obj, note, stringTransport(t.note), false)
            obj.release()
        }
    }

    private inline fun write(block: () -> Unit) {
        RealmInterop.realm_begin_write(realm)
        try {
            block()
            RealmInterop.realm_commit(realm)
        } catch (e: Throwable) {
            if (RealmInterop.realm_is_in_transaction(realm)) RealmInterop.realm_rollback(realm)
            throw e
        }
    }

    override fun bulk(n: Int) = write { for (i in 0 until n) put(task(i.toLong())) }

    override fun small(n: Int) {
        for (i in 0 until n) write { put(task(i.toLong())) }
    }

    private fun all() = inputScope {
        val query = RealmInterop.realm_query_parse(realm, cls, "TRUEPREDICATE", queryArgsOf(emptyList()))
        RealmInterop.realm_query_find_all(query).also { query.release() }
    }

    override fun readAll(): List<Task> {
        val results = all()
        val n = RealmInterop.realm_results_count(results)
        val out = ArrayList<Task>(n.toInt())
        for (i in 0 until n) {
            out += getterScope {
                val link = with(RealmInterop) { realm_results_get(results, i) }.getLink()
                val obj = RealmInterop.realm_get_object(realm, link)
                val t = with(RealmInterop) {
                    Task(
                        realm_get_value(obj, id).getLong(),
                        realm_get_value(obj, title).getString(),
                        realm_get_value(obj, done).getBoolean(),
                        realm_get_value(obj, priority).getLong(),
                        realm_get_value(obj, note).getString(),
                    )
                }
                obj.release()
                t
            }
        }
        results.release()
        return out
    }

    override fun count(): Long {
        val results = all()
        return RealmInterop.realm_results_count(results).also { results.release() }
    }

    // As realm.query<Task>(filter, args).count() does: parse with the arguments, find_all,
    // count (realm-core's results are lazy: the count runs the query).
    override fun countWhere(query: Query, a: Long, b: Long): Long = inputScope {
        val args = when (query) {
            Query.TITLE_SCAN -> listOf(RealmQuerySingleArgument(stringTransport("task $a")))
            Query.PK_LOOKUP -> listOf(RealmQuerySingleArgument(longTransport(a)))
            else -> listOf(RealmQuerySingleArgument(longTransport(a)), RealmQuerySingleArgument(longTransport(b)))
        }
        val parsed = RealmInterop.realm_query_parse(realm, cls, query.realm, queryArgsOf(args))
        val results = RealmInterop.realm_query_find_all(parsed)
        val n = RealmInterop.realm_results_count(results)
        results.release()
        parsed.release()
        n
    }

    // As realm-kotlin delivers notifications: a second Realm opened on one notifier thread with
    // a scheduler on its dispatcher, the results callback registered there; the writes go
    // through this Realm (another thread) and realm-core's notifier hands the change over.
    @OptIn(kotlinx.coroutines.DelicateCoroutinesApi::class, kotlinx.coroutines.ExperimentalCoroutinesApi::class)
    override fun notificationLatencies(n: Int, commits: Int): List<Long> {
        val notifier = kotlinx.coroutines.newSingleThreadContext("realm-notifier")
        val delivered = java.util.concurrent.LinkedBlockingQueue<Long>()
        try {
            val (live, token) = kotlinx.coroutines.runBlocking(notifier) {
                val config = config()
                val live = RealmInterop.realm_open(config, RealmInterop.realm_create_scheduler(notifier)).first
                config.release()
                val results = inputScope {
                    val parsed = RealmInterop.realm_query_parse(
                        live, cls, "_id >= \$0", queryArgsOf(listOf(RealmQuerySingleArgument(longTransport(n.toLong())))),
                    )
                    RealmInterop.realm_query_find_all(parsed).also { parsed.release() }
                }
                val token = RealmInterop.realm_results_add_notification_callback(
                    results,
                    null,
                    object : Callback<NativePointer<RealmChangesT>> {
                        override fun onChange(change: NativePointer<RealmChangesT>) {
                            delivered.put(System.nanoTime())
                        }
                    },
                )
                live to token
            }
            // The first delivery is the initial one (no change): wait for it.
            delivered.poll(60, java.util.concurrent.TimeUnit.SECONDS) ?: error("realm-core: no initial notification")
            // realm-core may deliver two quick commits as one notification (its notifier
            // coalesces versions), which once left this loop waiting for a commit's own: a commit
            // without one within 10 s is counted and left out of the percentiles, and said.
            var missed = 0
            val out = (0 until commits).mapNotNull { i ->
                delivered.clear()
                write { put(task(n.toLong() + i)) }
                val committed = System.nanoTime()
                val at = delivered.poll(10, java.util.concurrent.TimeUnit.SECONDS)
                if (at == null) missed++
                at?.let { it - committed }
            }
            if (missed > 0) {
                println("realm-core: $missed of $commits commits had no notification of their own within 10 s (left out of its percentiles)")
            }
            kotlinx.coroutines.runBlocking(notifier) {
                token.release()
                RealmInterop.realm_close(live)
                live.release()
            }
            return out
        } finally {
            notifier.close()
        }
    }

    override fun close() {
        RealmInterop.realm_close(realm)
        realm.release()
    }
}

// ---------------------------------------------------------------------------------------------

enum class Engine(val label: String, val open: (Path, Boolean) -> Store) {
    TANDEM("Tandem", ::TandemStore),
    SQLITE("SQLite", ::SqliteStore),
    REALM("realm-core", ::RealmStore),
}

/** [goal]: the issue's bound on Tandem/SQLite (null: none). */
class Workload(val label: String, val goal: Double?, val run: (Engine, Path, Int) -> Double)

fun deleteTree(p: Path) {
    if (!Files.exists(p)) return
    Files.walk(p).sorted(Comparator.reverseOrder()).forEach { Files.delete(it) }
}

/** Opens [system] on a fresh directory, runs [prepare] untimed, then times [timed]; checks [check] untimed. */
fun measure(
    system: Engine,
    root: Path,
    fullDurability: Boolean = false,
    prepare: (Store) -> Unit = {},
    check: (Store) -> Unit,
    timed: (Store) -> Unit,
): Double {
    val dir = Files.createTempDirectory(root, system.name.lowercase())
    try {
        system.open(dir, fullDurability).use { store ->
            prepare(store)
            System.gc()
            val start = System.nanoTime()
            timed(store)
            val seconds = (System.nanoTime() - start) / 1e9
            check(store)
            return seconds
        }
    } finally {
        deleteTree(dir)
    }
}

fun loadAverage(): String = File("/proc/loadavg").readText().split(" ").take(3).joinToString(" ")

fun loadedLibrary(name: String): String =
    File("/proc/self/maps").readLines().map { it.substringAfterLast(' ') }.firstOrNull { it.endsWith("/$name") } ?: "(not mapped)"

/** The file JNA loaded libtandem from (a temp copy if it came out of the jar). */
fun tandemLibrary(): String = com.sun.jna.NativeLibrary.getInstance("tandem").file?.path ?: "(unknown)"

/** `--exclusive`: Tandem opens its files `exclusiveToProcess` (SQLite and realm-core unchanged). */
var tandemExclusive = false

fun main(args: Array<String>) {
    var n = 100_000
    var small: Int? = null
    var fsync: Int? = null
    var rounds = 3
    var root: Path? = null
    var only: String? = null
    var i = 0
    while (i < args.size) {
        when (args[i]) {
            "--n" -> n = args[++i].toInt()
            "--small" -> small = args[++i].toInt()
            "--fsync" -> fsync = args[++i].toInt()
            "--repeat" -> rounds = args[++i].toInt()
            "--dir" -> root = Path.of(args[++i])
            "--exclusive" -> tandemExclusive = true
            "--only" -> only = args[++i].also { require(it == "writes" || it == "queries" || it == "lookups") { "--only writes|queries|lookups" } }
            "-h", "--help" -> {
                println("usage: Bench [--n N (100000)] [--small M (N/10)] [--fsync F (M/10)] [--repeat R (3)] [--dir DIR (a temp dir)] [--only writes|queries|lookups] [--exclusive]")
                exitProcess(0)
            }
            else -> {
                System.err.println("unknown argument ${args[i]}")
                exitProcess(2)
            }
        }
        i++
    }
    val m = small ?: (n / 10)
    val base = root ?: Files.createTempDirectory("tandem-ktbench-")
    Files.createDirectories(base)

    val f = fsync ?: (m / 10)
    fun created(s: Engine, size: Int): (Store) -> Unit = { check(it.count() == size.toLong()) { "${s.label}: count ${it.count()} != $size" } }
    // Each run gets the size to use (the warm-up passes a tenth of it).
    val workloads = listOf(
        Workload("%,d objects, one transaction".format(n), 5.0) { s, dir, size ->
            measure(s, dir, check = created(s, size)) { it.bulk(size) }
        },
        Workload("%,d one-object transactions".format(m), 2.0) { s, dir, size ->
            measure(s, dir, check = created(s, size)) { it.small(size) }
        },
        Workload("%,d one-object transactions, fsync per commit (*)".format(f), null) { s, dir, size ->
            measure(s, dir, fullDurability = true, check = created(s, size)) { it.small(size) }
        },
        Workload("read %,d objects into Task".format(n), 5.0) { s, dir, size ->
            var got: List<Task> = emptyList()
            measure(
                s, dir,
                prepare = { it.bulk(size) },
                check = {
                    check(got.size == size) { "${s.label}: read ${got.size} != $size" }
                    val last = got.maxBy { t -> t._id }
                    check(last == task(size - 1L)) { "${s.label}: read $last" }
                },
            ) { got = it.readAll() }
        },
    )
    val sizes = listOf(n, m, f, n)

    val started = ZonedDateTime.now()
    val loadBefore = loadAverage()
    // Touch every system once so the header can name what is loaded.
    val probe = Files.createTempDirectory(base, "probe")
    val sqliteSettings = SqliteStore(probe).use { it.settings() }
    val tandemLib = TandemStore(probe).use { tandemLibrary() }
    deleteTree(probe)
    val realmVersion = RealmInterop.realm_get_library_version()
    println("Tandem typed layer vs SQLite (sqlite-jdbc) vs realm-core, ${started.format(DateTimeFormatter.ISO_OFFSET_DATE_TIME)}")
    println("JVM ${System.getProperty("java.vm.name")} ${System.getProperty("java.version")}, ${Runtime.getRuntime().availableProcessors()} cores")
    println("SQLite: $sqliteSettings")
    println("realm-core $realmVersion (${loadedLibrary("librealmc.so")})")
    println("Tandem: $tandemLib (WAL, synchronous=NORMAL, ${if (tandemExclusive) "exclusiveToProcess" else "the file shared with other processes (the default)"})")
    println("files under $base; sizes n=%,d, one-object transactions=%,d, fsync'd ones=%,d; warm-up once at a tenth of each size, then median of %d".format(n, m, f, rounds))
    println("load average at start: $loadBefore")

    if (only == "lookups") {
        lookupLoop(base, n)
        if (root == null) deleteTree(base)
        return
    }
    val results = workloads.zip(sizes).filter { only != "queries" }.map { (w, size) ->
        // Warm-up: every system once at a tenth of the size (JIT, page cache), not counted.
        for (s in Engine.entries) w.run(s, base, maxOf(1, size / 10))
        // Measured: the systems interleaved in each round, so load changes hit all three alike.
        val samples = Engine.entries.associateWith { mutableListOf<Double>() }
        repeat(rounds) { for (s in Engine.entries) samples.getValue(s) += w.run(s, base, size) }
        val medians = samples.mapValues { (_, v) -> v.sorted()[v.size / 2] }
        println("  done: ${w.label} ${medians.entries.joinToString { "${it.key.label} %.3f s".format(it.value) }} (samples ${samples.entries.joinToString { e -> e.key.label + " " + e.value.joinToString("/") { "%.3f".format(it) } }})")
        w to medians
    }
    val latencies = if (only == "writes") null else queryLatencies(base, n)
    if (root == null) deleteTree(base)

    println()
    println("| workload | Tandem | SQLite | realm-core | Tandem/SQLite | Tandem/realm |")
    println("|---|---|---|---|---|---|")
    for ((w, med) in results) {
        val t = med.getValue(Engine.TANDEM)
        val s = med.getValue(Engine.SQLITE)
        val r = med.getValue(Engine.REALM)
        println("| ${w.label} | %.3f s | %.3f s | %.3f s | %.2fx | %.2fx |".format(t, s, r, t / s, t / r))
    }
    println()
    println("(*) Tandem Durability.FULL, SQLite synchronous=FULL; realm-core as in every row (its default, full durability)")
    for ((w, med) in results) {
        if (w.goal == null) continue
        val ratio = med.getValue(Engine.TANDEM) / med.getValue(Engine.SQLITE)
        val verdict = if (ratio <= w.goal) "met" else "missed by %.2fx".format(ratio / w.goal)
        println("goal ${w.label}: within %.0fx of SQLite: %.2fx, %s".format(w.goal, ratio, verdict))
    }
    latencies?.let { printLatencies(it, n) }
    println("load average at end: ${loadAverage()}")
}

/**
 * `--only lookups`: Tandem's and realm-core's primary-key lookup (`_id == $0`, counted) in a
 * loop, each system for 5 s after 2 s of warm-up, the mean per lookup printed: the figure to
 * profile the JVM crossing with (`BENCH_JAVA_OPTS=-XX:StartFlightRecording=...`).
 */
fun lookupLoop(base: Path, n: Int) {
    for (e in listOf(Engine.TANDEM, Engine.REALM)) {
        val dir = Files.createTempDirectory(base, "l-" + e.name.lowercase())
        e.open(dir, false).use { store ->
            store.bulk(n)
            var r = 0L
            fun run(seconds: Double): Pair<Long, Long> {
                val start = System.nanoTime()
                val until = start + (seconds * 1e9).toLong()
                var count = 0L
                while (System.nanoTime() < until) {
                    repeat(100) {
                        val got = store.countWhere(Query.PK_LOOKUP, r++ * 7919 % n, 0)
                        check(got == 1L) { "${e.label}: counted $got" }
                    }
                    count += 100
                }
                return count to System.nanoTime() - start
            }
            run(2.0)
            val (count, took) = run(5.0)
            println("${e.label}: %,d lookups, %.2f us each".format(count, took / 1e3 / count))
        }
        deleteTree(dir)
    }
}

/** p50 and p99 of [samples] (nanoseconds), in microseconds. */
fun percentiles(samples: List<Long>): Pair<Double, Double> {
    val sorted = samples.sorted()
    fun at(q: Double) = sorted[((sorted.size - 1) * q).toInt()] / 1e3
    return at(0.5) to at(0.99)
}

class Latencies(val queries: Map<Query, Map<Engine, Pair<Double, Double>>>, val notifications: Map<Engine, Pair<Double, Double>>)

/**
 * Every system on its own fresh directory with [n] tasks (created untimed): the queries, 200
 * runs each after 20 untimed ones, the systems interleaved run by run (arguments as
 * `benches/store.rs` varies them; each count checked); then 200 commit-to-listener latencies
 * per system that has notifications.
 */
fun queryLatencies(base: Path, n: Int): Latencies {
    val dirs = Engine.entries.associateWith { Files.createTempDirectory(base, "q-" + it.name.lowercase()) }
    val stores = Engine.entries.associateWith { it.open(dirs.getValue(it), false) }
    try {
        for ((_, store) in stores) store.bulk(n)
        fun args(q: Query, r: Int): Pair<Long, Long> = when (q) {
            Query.PK_LOOKUP, Query.TITLE_SCAN -> (r.toLong() * 7919 % n) to 0L
            Query.PK_RANGE -> (r.toLong() * 311 % maxOf(1, n - 1000)).let { it to it + 1000 }
            Query.PRIORITY_SCAN -> (r % 4L).let { it to it + 1 }
        }
        fun expected(q: Query, r: Int): Long = when (q) {
            Query.PK_LOOKUP, Query.TITLE_SCAN -> 1
            Query.PK_RANGE -> minOf(1000L, n.toLong())
            Query.PRIORITY_SCAN -> (0 until n).count { it % 5 == (r % 4) }.toLong()
        }
        val queries = Query.entries.associateWith { q ->
            val samples = Engine.entries.associateWith { mutableListOf<Long>() }
            for (r in -20 until 200) {
                val (a, b) = args(q, maxOf(r, 0))
                for (e in Engine.entries) {
                    val start = System.nanoTime()
                    val got = stores.getValue(e).countWhere(q, a, b)
                    val took = System.nanoTime() - start
                    check(got == expected(q, maxOf(r, 0))) { "${e.label}: ${q.label} counted $got" }
                    if (r >= 0) samples.getValue(e) += took
                }
            }
            samples.mapValues { percentiles(it.value) }
        }
        val notifications = Engine.entries.mapNotNull { e ->
            stores.getValue(e).notificationLatencies(n, 200)?.let { e to percentiles(it) }
        }.toMap()
        return Latencies(queries, notifications)
    } finally {
        stores.values.forEach { it.close() }
        dirs.values.forEach { deleteTree(it) }
    }
}

fun printLatencies(l: Latencies, n: Int) {
    println()
    println("Query latency over %,d tasks, microseconds, p50 / p99 of 200 runs (each: the query run and its matches counted):".format(n))
    println("| query | Tandem | SQLite | realm-core | Tandem/realm (p50) |")
    println("|---|---|---|---|---|")
    fun cell(p: Pair<Double, Double>) = "%.1f / %.1f".format(p.first, p.second)
    for ((q, byEngine) in l.queries) {
        val t = byEngine.getValue(Engine.TANDEM)
        val r = byEngine.getValue(Engine.REALM)
        println("| ${q.label} | ${cell(t)} | ${cell(byEngine.getValue(Engine.SQLITE))} | ${cell(r)} | %.2fx |".format(t.first / r.first))
    }
    println()
    println("Notification latency, commit returned -> results listener called, microseconds, p50 / p99 of 200 commits:")
    for ((e, p) in l.notifications) println("  ${e.label}: ${cell(p)}")
}
