// Flexible sync for the typed layer: `db.subscriptions.update { add(query<Task>("done == $0", false),
// name = "open") }` over `Database.updateSubscriptions`, Duration-based waits on the session
// (`session.waitForSynchronization()`), `SyncOptions.flexible(url, token)`, and sync error
// events as a Flow with compensating writes decoded. The untyped API (`SubscriptionChange`,
// `Database.subscriptions()`, `SyncSession.waitForSubscriptions(version, ms)`) stays underneath.

package dev.tandem

import java.nio.ByteBuffer
import kotlin.reflect.KClass
import kotlin.time.Duration
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.flow
import kotlinx.coroutines.withContext

/**
 * The server path of the flexible sync file: every flexible sync session binds it.
 */
const val FLEXIBLE_SYNC_PATH: String = "/flx"

/**
 * Options for a flexible sync session: [path] `/flx`, [SyncOptions.flexible] true. A flexible
 * sync file never resets itself: on a client reset the session stops with an error (open a new
 * file and subscribe again), whatever [clientReset] says.
 */
fun SyncOptions.Companion.flexible(
    url: String,
    token: String,
    caFile: String? = null,
    allowInsecure: Boolean = false,
    clientReset: ClientResetMode = ClientResetMode.MANUAL,
    path: String = FLEXIBLE_SYNC_PATH,
): SyncOptions = SyncOptions(
    url = url,
    path = path,
    token = token,
    caFile = caFile,
    allowInsecure = allowInsecure,
    clientReset = clientReset,
    flexible = true,
)

/**
 * What one subscription downloads: the objects of [className] matching [filter] (`$0`, `$1`...
 * are [args]). Built with `query<T>(filter, args...)` inside [TandemSubscriptions.update].
 */
class SubscriptionQuery<T : Any> internal constructor(
    /** The Tandem class name. */
    val className: String,
    /** The query (Realm's query language, without SORT, DISTINCT or LIMIT). */
    val filter: String,
    /** Its arguments, encoded. */
    val args: List<Value>,
)

/**
 * The subscriptions of a [TandemDatabase] (`db.subscriptions`): what a flexible sync session
 * downloads. Each [update] commits a new version of the set, [SubscriptionSetState.Pending]
 * until a flexible sync session has integrated the server's bootstrap of it (then
 * [SubscriptionSetState.Complete], older sets [SubscriptionSetState.Superseded]); a set the
 * server cannot evaluate becomes [SubscriptionSetState.Error] and the active set stays.
 *
 * ```kotlin
 * db.subscriptions.update {
 *     add(query<Task>("done == $0", false), name = "open")
 *     removeAll<Project>()
 * }
 * session.waitForSynchronization(30.seconds)
 * ```
 *
 * Every read goes to the file (sets are stored in it): two reads may differ. After the database
 * is closed, every use throws [IllegalStateException] ("this TandemDatabase is closed").
 */
class TandemSubscriptions internal constructor(private val db: TandemDatabase) : Iterable<Subscription> {
    /** The latest set (version 0, empty and Complete, until the first [update]). */
    val latest: SubscriptionSet get() = db.raw.subscriptions()

    /** The active set: the newest Complete one (what the file holds now). */
    val active: SubscriptionSet get() = db.raw.activeSubscriptions()

    /** The latest set's version. */
    val version: ULong get() = latest.version

    /** The latest set's state. */
    val state: SubscriptionSetState get() = latest.state

    /** How many subscriptions the latest set has. */
    val size: Int get() = latest.subscriptions.size

    /** The subscription of the latest set called [name], or null. */
    operator fun get(name: String): Subscription? = latest.subscriptions.firstOrNull { it.name == name }

    /** The subscriptions of the latest set, in the order they were added. */
    override fun iterator(): Iterator<Subscription> = latest.subscriptions.iterator()

    /**
     * Runs [block] to collect changes, then commits them as the next version of the set in one
     * call and returns it (`Pending`), or the latest set unchanged if they change nothing.
     * All or nothing: a change that fails (an unknown class, a query that does not compile,
     * SORT/DISTINCT/LIMIT, a link argument) throws [TandemException.InvalidArgument] and
     * nothing is committed; an exception from [block] commits nothing either.
     */
    fun update(block: MutableSubscriptions.() -> Unit): SubscriptionSet {
        db.checkOpen()
        val changes = MutableSubscriptions(db).apply(block).changes
        return db.raw.updateSubscriptions(changes)
    }

    /** [update] on [Dispatchers.IO], for coroutines. */
    suspend fun updateAsync(block: MutableSubscriptions.() -> Unit): SubscriptionSet =
        withContext(Dispatchers.IO) { update(block) }
}

/**
 * The changes of one [TandemSubscriptions.update], applied in order to the latest set.
 */
class MutableSubscriptions internal constructor(private val db: TandemDatabase) {
    internal val changes = mutableListOf<SubscriptionChange>()

    /**
     * The objects of [kclass] matching [filter] (`$0`, `$1`... are [args]: Kotlin values of the
     * supported types, as in [TandemDatabase.query]). Nothing is checked until the update is
     * committed.
     */
    fun <T : Any> query(kclass: KClass<T>, filter: String = "TRUEPREDICATE", vararg args: Any?): SubscriptionQuery<T> {
        val model = db.typedModel(kclass)
        if (model.embedded) throw IllegalArgumentException("${model.className} is @Embedded: subscribe to the objects that hold it")
        return SubscriptionQuery(model.className, filter, args.map(ValueCodec::argument))
    }

    /** [query] with the class as a type argument: `query<Task>("done == $0", false)`. */
    inline fun <reified T : Any> query(filter: String = "TRUEPREDICATE", vararg args: Any?): SubscriptionQuery<T> =
        query(T::class, filter, *args)

    /**
     * Subscribes to [query]. With a [name], replaces the subscription of that name (if any);
     * without one, the same class and query are subscribed once.
     */
    fun add(query: SubscriptionQuery<*>, name: String? = null) {
        changes += SubscriptionChange.Add(name, query.className, query.filter, query.args)
    }

    /**
     * Subscribes to the query of [results] (from [TandemDatabase.query]; a filter with SORT,
     * DISTINCT or LIMIT fails the update).
     */
    fun add(results: TypedResults<*>, name: String? = null) {
        changes += SubscriptionChange.Add(name, results.className, results.filter, results.args)
    }

    /** Subscribes to an untyped class of the database (e.g. one of `extraClasses`). */
    fun add(className: String, filter: String, args: List<Value> = emptyList(), name: String? = null) {
        changes += SubscriptionChange.Add(name, className, filter, args)
    }

    /** Removes the subscription called [name] (nothing if there is none). */
    fun remove(name: String) {
        changes += SubscriptionChange.Remove(name)
    }

    /** Removes every subscription on [kclass]. */
    fun removeAll(kclass: KClass<*>) {
        changes += SubscriptionChange.RemoveClass(db.model(kclass).className)
    }

    /** [removeAll] with the class as a type argument: `removeAll<Task>()`. */
    @JvmName("removeAllOfClass")
    inline fun <reified T : Any> removeAll() = removeAll(T::class)

    /** Removes every subscription on the untyped class [className]. */
    fun removeAll(className: String) {
        changes += SubscriptionChange.RemoveClass(className)
    }

    /** Removes every subscription. */
    fun removeAll() {
        changes += SubscriptionChange.Clear
    }
}

/** Milliseconds for the FFI's waits; null (no limit) for null or an infinite duration. */
private fun Duration?.millis(): ULong? =
    if (this == null || isInfinite()) null else inWholeMilliseconds.coerceAtLeast(0).toULong()

/**
 * Waits until the latest subscription set (when called) is no longer pending: its bootstrap is
 * integrated, the file holds what it matches. Returns it, [SubscriptionSetState.Complete] (or
 * [SubscriptionSetState.Superseded] if a newer set completed first). Realm's
 * `waitForSynchronization`.
 *
 * Throws [TandemException.Sync] when the server refused the set (its state is then
 * [SubscriptionSetState.Error]; the message says "refused by the server") or the session is not
 * flexible, [TandemException.Timeout] after [timeout] (null: no limit),
 * [TandemException.Stopped] when the session stops.
 */
suspend fun SyncSession.waitForSynchronization(timeout: Duration? = null): SubscriptionSet =
    waitForSubscriptions(null, timeout.millis())

/** [waitForSynchronization] for subscription set [version] (e.g. one `update` returned). */
suspend fun SyncSession.waitForSynchronization(version: ULong, timeout: Duration? = null): SubscriptionSet =
    waitForSubscriptions(version, timeout.millis())

/** [waitForSynchronization] for [set] (as returned by `update`). */
suspend fun SyncSession.waitForSynchronization(set: SubscriptionSet, timeout: Duration? = null): SubscriptionSet =
    waitForSubscriptions(set.version, timeout.millis())

/**
 * One error a sync session reported: a server error [code] (e.g. 206 permission denied, 226
 * a subscription set the server could not evaluate, 231 a compensating write), its [message],
 * and whether the session goes on ([willRetry]).
 */
data class SyncErrorEvent(val code: ULong, val message: String, val willRetry: Boolean) {
    /** This error is a compensating write (code 231): the server reverted writes. */
    val isCompensatingWrite: Boolean get() = code == COMPENSATING_WRITE

    /** What was reverted, for a compensating write (null for other errors). */
    val compensatingWrite: CompensatingWrite? by lazy { if (isCompensatingWrite) CompensatingWrite.parse(message) else null }

    companion object {
        /** The server's code of a compensating write. */
        const val COMPENSATING_WRITE: ULong = 231uL

        /** The server's code of a subscription set it could not evaluate (QUERY_ERROR). */
        const val QUERY_ERROR: ULong = 226uL
    }
}

/**
 * A write the server's flexible sync rules forbid, reverted by the server (realm-kotlin's
 * `CompensatingWriteException`). The revert reaches this file as an ordinary download: an
 * object that existed gets the server's copy back, one that was created is erased.
 */
data class CompensatingWrite(
    /** Each object whose writes were reverted. */
    val writes: List<RejectedWrite>,
    /** The server's own message. */
    val reason: String,
    /** The last local version of the upload that was refused, if given. */
    val rejectedClientVersion: Long?,
    /** The server version of the reverting changeset, if given. */
    val serverVersion: Long?,
) {
    companion object {
        /**
         * Decodes the message of a 231 error event (`compensating write: {json}`), or null if it
         * holds no such JSON.
         */
        fun parse(message: String): CompensatingWrite? {
            val start = message.indexOf('{')
            if (start < 0) return null
            val json = try {
                MiniJson(message.substring(start)).value() as? Map<*, *>
            } catch (e: IllegalArgumentException) {
                null
            } ?: return null
            val writes = (json["rejectedUpdates"] as? List<*>).orEmpty().mapNotNull { entry ->
                val m = entry as? Map<*, *> ?: return@mapNotNull null
                RejectedWrite(
                    className = m["table"] as? String ?: return@mapNotNull null,
                    primaryKey = (m["pk"] as? String)?.let(::decodeInlineKey),
                    reason = m["reason"] as? String ?: "",
                )
            }
            return CompensatingWrite(
                writes = writes,
                reason = json["message"] as? String ?: "",
                rejectedClientVersion = (json["rejectedClientVersion"] as? Number)?.toLong(),
                serverVersion = (json["compensatingWriteServerVersion"] as? Number)?.toLong(),
            )
        }

        /**
         * A primary key as `rejectedUpdates[].pk` holds it: base64 of the changeset format's
         * payload type (a Realm varint) and the value. Returns a Long, String, [ObjectId],
         * `UUID` or null (anything it cannot read is returned as the base64 text).
         */
        internal fun decodeInlineKey(pk: String): Any? {
            val bytes = base64(pk) ?: return pk
            val buf = ByteBuffer.wrap(bytes)
            return try {
                when (readVarint(buf)) {
                    0L -> null
                    1L -> readVarint(buf)
                    3L -> {
                        val len = readVarint(buf).toInt()
                        String(ByteArray(len).also { buf.get(it) }, Charsets.UTF_8)
                    }
                    10L -> ObjectId(ByteArray(12).also { buf.get(it) })
                    11L -> ValueCodec.bytesUuid(ByteArray(16).also { buf.get(it) })
                    else -> pk
                }
            } catch (e: java.nio.BufferUnderflowException) {
                pk
            }
        }

        /**
         * Standard base64 (padding optional), or null if [text] is not base64. Written out:
         * `java.util.Base64` is missing below Android API 26 (the AAR's minSdk is 24).
         */
        private fun base64(text: String): ByteArray? {
            val alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
            val body = text.trimEnd('=')
            if (body.length % 4 == 1) return null
            val out = java.io.ByteArrayOutputStream(body.length * 3 / 4)
            var bits = 0
            var count = 0
            for (c in body) {
                val v = alphabet.indexOf(c)
                if (v < 0) return null
                bits = ((bits shl 6) or v) and 0xFFFF
                count += 6
                if (count >= 8) {
                    count -= 8
                    out.write((bits shr count) and 0xFF)
                }
            }
            return out.toByteArray()
        }

        /** Realm's sign-bit varint: 7 bits per non-final byte, then 6 bits and a sign flag. */
        private fun readVarint(buf: ByteBuffer): Long {
            var magnitude = 0L
            var shift = 0
            while (true) {
                val b = buf.get().toInt() and 0xFF
                if (b and 0x80 != 0) {
                    magnitude = magnitude or ((b and 0x7F).toLong() shl shift)
                    shift += 7
                    require(shift < 64) { "varint too long" }
                } else {
                    magnitude = magnitude or ((b and 0x3F).toLong() shl shift)
                    return if (b and 0x40 != 0) -magnitude - 1 else magnitude
                }
            }
        }
    }
}

/**
 * One object a compensating write reverted: its Tandem [className], [primaryKey] (a Long,
 * String, [ObjectId], `UUID` or null, as the typed layer's keys) and the server's [reason].
 */
data class RejectedWrite(val className: String, val primaryKey: Any?, val reason: String)

/**
 * Calls [block] on every error this session reports from now on (on Tandem's notifier thread),
 * until the returned handle is cancelled. Registered when this returns.
 */
fun SyncSession.onError(block: (SyncErrorEvent) -> Unit): ListenerHandle =
    observeErrors(
        object : ErrorListener {
            override fun onError(code: ULong, message: String, willRetry: Boolean) {
                block(SyncErrorEvent(code, message, willRetry))
            }
        },
    )

/**
 * The session's errors as a cold [Flow]: collecting registers an error listener (before the
 * collector's first suspension), cancelling the collection cancels it. Events are buffered
 * without limit.
 *
 * ```kotlin
 * session.errors().filter { it.isCompensatingWrite }.collect { e -> undo(e.compensatingWrite!!.writes) }
 * ```
 */
fun SyncSession.errors(): Flow<SyncErrorEvent> = flow {
    val events = Channel<SyncErrorEvent>(Channel.UNLIMITED)
    val handle = onError { events.trySend(it) }
    try {
        for (event in events) emit(event)
    } finally {
        handle.cancel()
        handle.close()
    }
}

/** A small JSON reader for the server's error bodies: objects, arrays, strings, numbers, literals. */
internal class MiniJson(private val text: String) {
    private var i = 0

    fun value(): Any? {
        val v = read()
        skip()
        require(i == text.length) { "trailing text at $i" }
        return v
    }

    private fun skip() {
        while (i < text.length && text[i].isWhitespace()) i++
    }

    private fun read(): Any? {
        skip()
        require(i < text.length) { "unexpected end" }
        return when (val c = text[i]) {
            '{' -> {
                i++
                val map = LinkedHashMap<String, Any?>()
                skip()
                if (text.getOrNull(i) == '}') {
                    i++
                    return map
                }
                while (true) {
                    skip()
                    val key = string()
                    skip()
                    expect(':')
                    map[key] = read()
                    skip()
                    if (text.getOrNull(i) == ',') i++ else break
                }
                expect('}')
                map
            }
            '[' -> {
                i++
                val list = ArrayList<Any?>()
                skip()
                if (text.getOrNull(i) == ']') {
                    i++
                    return list
                }
                while (true) {
                    list += read()
                    skip()
                    if (text.getOrNull(i) == ',') i++ else break
                }
                expect(']')
                list
            }
            '"' -> string()
            't' -> literal("true", true)
            'f' -> literal("false", false)
            'n' -> literal("null", null)
            else -> {
                require(c == '-' || c.isDigit()) { "unexpected '$c' at $i" }
                val start = i
                while (i < text.length && (text[i].isDigit() || text[i] in "+-.eE")) i++
                val n = text.substring(start, i)
                n.toLongOrNull() ?: n.toDoubleOrNull() ?: throw IllegalArgumentException("bad number $n")
            }
        }
    }

    private fun expect(c: Char) {
        require(text.getOrNull(i) == c) { "expected '$c' at $i" }
        i++
    }

    private fun literal(word: String, v: Any?): Any? {
        require(text.startsWith(word, i)) { "unexpected text at $i" }
        i += word.length
        return v
    }

    private fun string(): String {
        expect('"')
        val out = StringBuilder()
        while (true) {
            require(i < text.length) { "unterminated string" }
            val c = text[i++]
            when (c) {
                '"' -> return out.toString()
                '\\' -> {
                    require(i < text.length) { "unterminated string" }
                    when (val e = text[i++]) {
                        'n' -> out.append('\n')
                        't' -> out.append('\t')
                        'r' -> out.append('\r')
                        'b' -> out.append('\b')
                        'f' -> out.append('\u000C')
                        'u' -> {
                            require(i + 4 <= text.length) { "bad escape" }
                            out.append(text.substring(i, i + 4).toInt(16).toChar())
                            i += 4
                        }
                        else -> out.append(e)
                    }
                }
                else -> out.append(c)
            }
        }
    }
}
