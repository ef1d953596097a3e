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
 */
fun Database.write(block: (WriteTransaction) -> Unit): ULong? =
    writeTransaction().use { tx ->
        try {
            block(tx)
        } catch (e: Throwable) {
            tx.rollback()
            throw e
        }
        tx.commit()
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
