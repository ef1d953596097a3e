// TypedResults: live query results of a model class. Each read re-runs the query (the FFI's
// `Results` is live); `asFlow()` emits the current list, then the new list after each change.

package dev.tandem

import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.flow
import kotlinx.coroutines.flow.flowOn

/**
 * The objects of one model class matching a query, in the query's order. Live: every call
 * reads the current state (so two calls may differ if writes happened in between). Links are
 * resolved when objects are read (once per distinct linked object per call).
 *
 * ```kotlin
 * val open = db.query<Task>("done == false SORT(_id ASC)")
 * open.count(); open.toList(); open[0]; open.first()
 * scope.launch { open.asFlow().collect { tasks -> render(tasks) } }
 * ```
 *
 * After the database is closed ([TandemDatabase.close]) every read, and the collection of its
 * flows, throws [IllegalStateException] ("this TandemDatabase is closed"); [close] still works.
 */
class TypedResults<T : Any> internal constructor(
    private val db: TandemDatabase,
    private val model: Model<T>,
    /** The query, kept for subscriptions (`add(results)` in `db.subscriptions.update { }`). */
    internal val filter: String,
    internal val args: List<Value>,
) : Iterable<T>, AutoCloseable {
    internal val className: String get() = model.className

    private val rawResults = lazy { db.raw.query(model.className, filter, args) }

    @Volatile private var closed = false

    /**
     * The untyped results underneath (keys, raw objects, `observe` with key paths), made on
     * first use: [count], [toList], [first] and the other reads cross once each without them
     * (`BatchPath`). After [close] it throws [IllegalStateException].
     */
    val raw: Results
        get() {
            check(!closed) { "these TypedResults are closed" }
            return rawResults.value
        }

    /** How many objects match now. */
    fun count(): Int {
        db.checkOpen()
        return db.batchPath().count(model.className, filter, args).toInt()
    }

    /** Whether none match now. */
    fun isEmpty(): Boolean = count() == 0

    /**
     * The matching objects now, in order: one crossing (`batch_rows`, each object's key and
     * values by position, read in one read transaction), then one per distinct linked object.
     */
    fun toList(): List<T> {
        db.checkOpen()
        val resolver = LinkResolver(db)
        return db.batchPath().rows(model.className, filter, args, model.names)
            .mapNotNull { resolver.readRow(model, it.key, it.values) }
    }

    /** The object at [index] now (0-based); [IndexOutOfBoundsException] beyond [count]. */
    operator fun get(index: Int): T {
        db.checkOpen()
        if (index >= 0) at(index)?.let { return it }
        // The count is read again for the message (a write may have landed in between).
        val now = runCatching { count().toString() }.getOrDefault("fewer")
        throw IndexOutOfBoundsException("index $index, $now results")
    }

    /** The first object; [NoSuchElementException] if none match. */
    fun first(): T = firstOrNull() ?: throw NoSuchElementException("no ${model.className} matches")

    /** The first object, or null if none match. */
    fun firstOrNull(): T? {
        db.checkOpen()
        return at(0)
    }

    /** The object at [index] (>= 0) now, or null past the end: one crossing, one row. */
    private fun at(index: Int): T? {
        val row = db.batchPath().rows(model.className, filter, args, model.names, index.toULong(), 1uL)
            .firstOrNull() ?: return null
        return LinkResolver(db).readRow(model, row.key, row.values)
    }

    override fun iterator(): Iterator<T> = toList().iterator()

    /**
     * A cold [Flow] of the results: the current list when collection starts, then the new list
     * after each change (insertions, deletions, modifications of the objects or of what they
     * link to). Changes arriving faster than the collector are coalesced (the latest list is
     * never skipped). Reads run on [Dispatchers.IO]; cancelling the collection cancels the
     * listener.
     */
    fun asFlow(): Flow<List<T>> = flow {
        db.checkOpen()
        val signals = Channel<Unit>(Channel.CONFLATED)
        // Listen first, then read: a change in between is re-read, never missed.
        val handle = raw.observe(
            object : ResultsListener {
                override fun onChange(change: ResultsChange) {
                    signals.trySend(Unit)
                }
            },
        )
        try {
            emit(toList())
            for (signal in signals) emit(toList())
        } finally {
            handle.cancel()
            handle.close()
        }
    }.flowOn(Dispatchers.IO)

    /**
     * A cold [Flow] of [TypedResultsChange]s: first the results collection starts from
     * ([TypedResultsChange.initial], every index an insertion), then each change with Realm's
     * indices, relative to the one before (see [Results.changes]: applied in order they never
     * miss or double a commit). [TypedResultsChange.objects] are read when the change is
     * emitted, on [Dispatchers.IO]. [keyPaths] narrows modifications as in [Results.changes].
     */
    fun changes(keyPaths: List<String> = emptyList()): Flow<TypedResultsChange<T>> = flow {
        db.checkOpen()
        var initial = true // per collection: each one starts with its own initial results
        raw.changes(keyPaths).collect { change ->
            emit(
                TypedResultsChange(
                    objects = toList(),
                    deletions = change.deletions.map { it.toInt() },
                    insertions = change.insertions.map { it.toInt() },
                    modifications = change.modifications.map { it.toInt() },
                    initial = initial,
                ),
            )
            initial = false
        }
    }.flowOn(Dispatchers.IO)

    /** Frees the native results now, if they were made; [raw] is refused afterwards. */
    override fun close() {
        closed = true
        if (rawResults.isInitialized()) rawResults.value.close()
    }
}

/** A change to live typed results: Realm-style indices and the objects after it. */
data class TypedResultsChange<T : Any>(
    /** The results when the change was emitted, in order. */
    val objects: List<T>,
    /** Indices in the old results of objects no longer there. */
    val deletions: List<Int>,
    /** Indices in the new results of objects new there. */
    val insertions: List<Int>,
    /** Indices in the new results of objects whose content changed. */
    val modifications: List<Int>,
    /** This is the results the flow starts from (Realm's initial notification), not a change. */
    val initial: Boolean,
)
