@file:JvmName("TandemExtensions")

// A thin idiomatic Kotlin layer over the generated uniffi bindings (`tandem.kt`, same package).
//
// - `db.write { tx -> ... }` commits when the block returns and rolls back if it throws;
// - `results.changes()` and `db.objectChanges(...)` are cold `Flow`s whose collection registers
//   a listener and whose cancellation cancels it;
// - the sync waits and `openSynced` are already `suspend` functions (uniffi async exports).

package dev.tandem

import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.channels.awaitClose
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.buffer
import kotlinx.coroutines.flow.callbackFlow

/**
 * Runs [block] in a write transaction: committed when it returns, rolled back (nothing written)
 * if it throws, the exception propagating. Returns the new local version, or `null` if nothing
 * changed. A commit failure throws the typed [TandemException] and writes nothing.
 *
 * Writes do not nest: calling this (or [TandemDatabase.write] on a [TandemDatabase] over this
 * database) from inside [block] throws [IllegalStateException] ("a write transaction is already
 * open on this thread: nested writes are not supported"), as Realm refuses a write inside a
 * write, and the outer transaction rolls back if the exception propagates. (An inner write would
 * otherwise commit on its own, whatever became of the outer one.) The check is per [Database]
 * object and per thread; the generated one-crossing `write(ops)` and `writeTransaction()` are not
 * checked. The transaction is closed when this returns: using a [WriteTransaction] kept from
 * [block] afterwards throws [IllegalStateException].
 */
fun Database.write(block: (WriteTransaction) -> Unit): ULong? {
    OpenWrites.checkNone(this)
    return writeTransaction().use { tx ->
        try {
            OpenWrites.inside(this) { block(tx) }
        } catch (e: Throwable) {
            tx.rollback()
            throw e
        }
        tx.commit()
    }
}

/**
 * The databases ([Database] objects) whose write block is running on each thread: what refuses
 * a nested write ([Database.write], [TandemDatabase.write], [TandemDatabase.writeAsync]).
 *
 * A thread-local is exact here because every write block is a plain (non-`suspend`) function:
 * it runs from start to end on the thread that entered it and cannot suspend and resume
 * elsewhere, so "this thread is inside a write block of this database" holds exactly while the
 * block runs. [TandemDatabase.writeAsync] checks on the caller's thread before it moves to
 * [kotlinx.coroutines.Dispatchers.IO] (so `runBlocking { db.writeAsync { } }` inside a block is
 * refused), then marks the IO thread for the block it runs there. A write started on another
 * thread (e.g. `runBlocking(Dispatchers.IO) { db.write { } }` inside a block) is a separate,
 * concurrent transaction and is not refused.
 */
internal object OpenWrites {
    const val NESTED = "a write transaction is already open on this thread: nested writes are not supported"

    /** Per thread: the databases with a write block running, innermost last (a few at most). */
    val open: ThreadLocal<ArrayList<Database>> = ThreadLocal.withInitial { ArrayList(2) }

    /** Throws [IllegalStateException] if a write block of [db] is running on this thread. */
    fun checkNone(db: Database) {
        val writes = open.get()
        for (i in writes.indices) check(writes[i] !== db) { NESTED }
    }

    /** Runs [block] marked as a write block of [db] on this thread (refused if one already is). */
    inline fun <R> inside(db: Database, block: () -> R): R {
        checkNone(db)
        val writes = open.get()
        writes.add(db)
        try {
            return block()
        } finally {
            writes.removeAt(writes.lastIndex) // blocks end in reverse order of their start
        }
    }
}

/**
 * The results as a cold [Flow] of changes: collecting registers a [ResultsListener] with
 * [Results.observeWithInitial] and emits first the results it starts from (every index an
 * insertion, Realm's initial notification), then each change relative to the one before, so
 * that applying them in order never misses or doubles a commit. Cancelling the collection
 * cancels the listener. Changes are buffered without limit (dropping one would make the
 * indices of the next wrong); the listener never blocks the database's notifier thread.
 * Changes to linked objects count up to four levels deep; [keyPaths] (e.g. `listOf("dog.name")`)
 * narrows modifications to the paths named, at any depth.
 */
fun Results.changes(keyPaths: List<String> = emptyList()): Flow<ResultsChange> =
    callbackFlow {
        val lock = Any()
        // Changes the notifier delivers before the initial results are sent wait here.
        var pending: MutableList<ResultsChange>? = mutableListOf()
        val observation = observeWithInitial(
            object : ResultsListener {
                override fun onChange(change: ResultsChange) {
                    synchronized(lock) {
                        val queue = pending
                        if (queue != null) queue.add(change) else trySend(change)
                    }
                }
            },
            keyPaths,
        )
        synchronized(lock) {
            trySend(observation.initial)
            pending?.forEach { trySend(it) }
            pending = null
        }
        awaitClose {
            observation.handle.cancel()
            observation.handle.close()
        }
    }.buffer(Channel.UNLIMITED)

/**
 * The changes of one object as a cold [Flow]; cancelling the collection cancels the listener.
 * A change reached through a link (up to four levels deep) names the link property;
 * [keyPaths] narrows what is reported to the paths named, at any depth.
 */
fun Database.objectChanges(
    className: String,
    key: Key,
    keyPaths: List<String> = emptyList(),
): Flow<ObjectChange> =
    callbackFlow {
        val handle = observeObject(
            className,
            key,
            object : ObjectListener {
                override fun onChange(change: ObjectChange) {
                    trySend(change)
                }
            },
            keyPaths,
        )
        awaitClose {
            handle.cancel()
            handle.close()
        }
    }.buffer(Channel.UNLIMITED)
