// TandemDatabase: the typed entry point. Opens a database whose schema comes from annotated
// Kotlin model classes, writes them in one-crossing batches, reads them back as instances (links
// resolved), and exposes Flows of objects and query results. The untyped API stays at `raw`.

package dev.tandem

import kotlin.reflect.KClass
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.flow
import kotlinx.coroutines.flow.flowOn
import kotlinx.coroutines.withContext

/**
 * A database opened with model classes.
 *
 * ```kotlin
 * val db = TandemDatabase.open("todo.sqlite", Task::class, Person::class)
 * db.write { add(Task(1, "buy milk")) }
 * val open = db.query<Task>("done == false SORT(_id ASC)")
 * ```
 *
 * Thread-safe as the underlying [Database] is. [close] frees the native handle now (it is
 * otherwise freed at garbage collection); after it every use of the database, and of the
 * [TypedResults], [TandemSubscriptions] and flows it made, throws [IllegalStateException]
 * ("this TandemDatabase is closed").
 *
 * Writes do not nest: [write] or [writeAsync] called from inside a write block of the same
 * database on the same thread throws [IllegalStateException] (see [write]).
 */
class TandemDatabase private constructor(
    private val database: Database,
    models: List<Model<*>>,
) : AutoCloseable {
    /**
     * The untyped API underneath: listeners, `sync`, `transact`, quarantine, raw writes. Close
     * the [TandemDatabase], not this: the typed write path holds the native database of its
     * own and keeps it open until [close]. Reading it after [close] throws
     * [IllegalStateException].
     */
    val raw: Database
        get() {
            checkOpen()
            return database
        }

    private val models: Map<KClass<*>, Model<*>> = models.associateBy { it.kclass }
    private val modelSpecs: List<ClassSpec> = models.map { it.spec }
    private val primaryKeys: Map<String, String> =
        models.mapNotNull { m -> m.primaryKey?.let { m.className to it.name } }.toMap()

    /** The one-crossing write and read path, made on first use and released by [close]. */
    @Volatile private var batchPath: BatchPath? = null

    @Volatile private var closed = false

    /** Throws [IllegalStateException] if [close] was called. */
    internal fun checkOpen() {
        check(!closed) { CLOSED }
    }

    internal fun batchPath(): BatchPath = batchPath ?: synchronized(this) {
        checkOpen()
        batchPath ?: BatchPath(database, modelSpecs).also { batchPath = it }
    }

    companion object {
        /** The message of the [IllegalStateException] every use after [close] throws. */
        internal const val CLOSED = "this TandemDatabase is closed"

        /**
         * The JVM shutdown hook that runs [closeCallbacks] (2 s at most), registered when this
         * class is first used: from then on no library thread calls into Kotlin (a listener, the
         * log listener, a token provider) while the runtime goes away, and calls already in
         * Kotlin are waited for. An app using only the untyped [Database] registers its own.
         */
        internal val exitHook: Thread =
            Thread({ closeCallbacks(2_000uL) }, "tandem-close-callbacks").also {
                Runtime.getRuntime().addShutdownHook(it)
            }

        init {
            CallbackThreads.apply()
        }

        /**
         * Opens (or creates) the database file at [path] with the schema of [classes] and of every
         * model class they reach (link targets, embedded classes).
         *
         * Throws [TandemModelException] for a class the typed layer cannot map (naming the class
         * and property), [TandemException.Schema] for a schema the file refuses (e.g. a
         * destructive change), [TandemException.Store] for an unusable file.
         */
        fun open(path: String, vararg classes: KClass<*>): TandemDatabase = open(path, classes.toList())

        /**
         * As [open], with [options] (durability, writer timeout...; null: the defaults) and
         * [extraClasses]: untyped classes to add to the schema, reachable through [raw].
         */
        fun open(
            path: String,
            classes: List<KClass<*>>,
            options: OpenOptions? = null,
            extraClasses: List<ClassSpec> = emptyList(),
        ): TandemDatabase {
            val models = Models.closure(classes)
            val specs = models.map { it.spec } + extraClasses
            val raw = if (options == null) Database.open(path, specs) else Database.openWithOptions(path, specs, options)
            return TandemDatabase(raw, models)
        }

        /**
         * Wraps a database already open (e.g. `openSynced(...).database`, opened with
         * [schema] of the same classes) for typed use.
         */
        fun wrap(raw: Database, vararg classes: KClass<*>): TandemDatabase =
            TandemDatabase(raw, Models.closure(classes.toList()))

        /** The schema ([ClassSpec] list) of [classes] and the model classes they reach. */
        fun schema(vararg classes: KClass<*>): List<ClassSpec> = Models.closure(classes.toList()).map { it.spec }
    }

    internal fun model(kclass: KClass<*>): Model<*> = models[kclass]
        ?: throw IllegalArgumentException(
            "${kclass.qualifiedName} is not a model class of this database (pass it to TandemDatabase.open)",
        )

    @Suppress("UNCHECKED_CAST")
    internal fun <T : Any> typedModel(kclass: KClass<T>): Model<T> = model(kclass) as Model<T>

    /**
     * [key] as the FFI's [Key] for an object of [model]. Throws [IllegalArgumentException] for a
     * key that cannot be one of [model]'s: of another type than its primary key (naming the
     * expected type; a `Long` or an `Int` for either), or null for a key that is not nullable.
     */
    internal fun keyFor(model: Model<*>, key: Any?): Key {
        val pk = model.primaryKey ?: throw IllegalArgumentException("${model.className} is @Embedded: it has no key")
        val k = ValueCodec.key(key)
        if (k is Key.Null) {
            if (!pk.nullable) throw IllegalArgumentException("${model.className}.${pk.name} is not nullable: a null key finds nothing")
            return k
        }
        val codec = (pk.element as Element.Scalar).codec
        val fits = when (k) {
            is Key.Int -> codec.type == PropertyType.INT
            is Key.String -> codec.type == PropertyType.STRING
            is Key.ObjectId -> codec.type == PropertyType.OBJECT_ID
            is Key.Uuid -> codec.type == PropertyType.UUID
            is Key.Null -> true
        }
        if (!fits) {
            val shown = if (key is String) "\"$key\"" else key.toString()
            throw IllegalArgumentException(
                "wrong key type for ${model.className}: its primary key ${pk.name} is ${codec.kotlinName}" +
                    "${if (pk.nullable) "?" else ""}, got ${key!!::class.simpleName} $shown",
            )
        }
        return k
    }

    /**
     * Runs [block] to build a batch, then applies it in one transaction (one FFI crossing):
     * all or nothing. Returns the new local version, or null if nothing changed (or nothing was
     * recorded). If [block] throws, nothing is written and the exception propagates; if applying
     * fails, nothing is written and a [TandemException] says which operation failed.
     *
     * ```kotlin
     * db.write { add(Task(1, "buy milk")); delete<Task>(2L) }
     * ```
     *
     * Writes do not nest, as in Realm: a write of this database started inside [block] on the
     * same thread ([write], [writeAsync], or `raw.write { }` of the untyped API) throws
     * [IllegalStateException] ("a write transaction is already open on this thread: nested
     * writes are not supported"), so nothing of the inner one is written; if the exception
     * leaves [block], nothing of the outer one either. The [TypedWrite] is only usable inside
     * [block]: recording on it afterwards throws [IllegalStateException]. After [close] this
     * throws [IllegalStateException].
     */
    fun write(block: TypedWrite.() -> Unit): ULong? {
        checkOpen()
        val batch = TypedWrite(this)
        try {
            OpenWrites.inside(database) { batch.block() }
        } finally {
            batch.finish()
        }
        if (batch.ops.isEmpty()) return null
        if (!batch.untyped) {
            val json = if (batch.ops.size <= JsonBatch.MAX_OPS) {
                JsonBatch.encode(batch.ops) { primaryKeys.getValue(it) }
            } else {
                // Many adds of one plain model: one operation of rows (the store's bulk path).
                JsonBatch.encodeRows(batch.ops) { primaryKeys.getValue(it) }
            }
            if (json != null) return batchPath().write(json)
        }
        return raw.write(batch.ops)
    }

    /**
     * [write] on [Dispatchers.IO], for coroutines: `db.writeAsync { add(task) }`. [block] is not
     * `suspend`: it runs whole on one IO thread. Called inside a write block of this database on
     * the same thread (e.g. through `runBlocking`), it throws [IllegalStateException] before
     * leaving the thread, as [write] does.
     */
    suspend fun writeAsync(block: TypedWrite.() -> Unit): ULong? {
        checkOpen()
        OpenWrites.checkNone(database)
        return withContext(Dispatchers.IO) { write(block) }
    }

    /**
     * The object of [kclass] with primary key [key] (`Long`/`Int`, `String`, [ObjectId], `UUID`,
     * or null for a nullable key), or null. Links are resolved (one read per linked object).
     * A key of another type than [kclass]'s primary key (e.g. a `String` for a `Long` key)
     * throws [IllegalArgumentException] naming the expected type.
     */
    fun <T : Any> find(kclass: KClass<T>, key: Any?): T? {
        checkOpen()
        val model = typedModel(kclass)
        return LinkResolver(this).read(model, keyFor(model, key))
    }

    /** [find] with the class as a type argument: `db.find<Task>(1L)`. */
    inline fun <reified T : Any> find(key: Any?): T? = find(T::class, key)

    /**
     * The live results of [filter] (Realm's query language, e.g. `"done == false SORT(_id ASC)"`;
     * `$0`, `$1`... are [args]: scalars of the supported types, model objects (links), or
     * [Value]s). A filter that does not parse throws [TandemException.InvalidArgument] here.
     */
    fun <T : Any> query(kclass: KClass<T>, filter: String = "TRUEPREDICATE", vararg args: Any?): TypedResults<T> {
        checkOpen()
        val model = typedModel(kclass)
        if (model.embedded) throw IllegalArgumentException("${model.className} is @Embedded: query the objects that hold it")
        val encoded = args.map(ValueCodec::argument)
        // Compiled now, in one crossing, so a bad filter throws here; the untyped results are
        // made only when something needs them (TypedResults.raw).
        batchPath().checkQuery(model.className, filter, encoded)
        return TypedResults(this, model, filter, encoded)
    }

    /** [query] with the class as a type argument: `db.query<Task>("done == $0", false)`. */
    inline fun <reified T : Any> query(filter: String = "TRUEPREDICATE", vararg args: Any?): TypedResults<T> =
        query(T::class, filter, *args)

    /**
     * A cold [Flow] of one object: it emits the object as it is when collection starts, then
     * again after each change to it (or to an object it links to, up to four levels deep); when
     * the object is deleted, or if it does not exist, it emits null and completes. Reads run on
     * [Dispatchers.IO]; cancelling the collection cancels the listener.
     */
    fun <T : Any> objectFlow(kclass: KClass<T>, key: Any?): Flow<T?> {
        checkOpen()
        val model = typedModel(kclass)
        val k = keyFor(model, key)
        return flow {
            val changes = Channel<ObjectChange>(Channel.UNLIMITED)
            val handle = try {
                raw.observeObject(
                    model.className, k,
                    object : ObjectListener {
                        override fun onChange(change: ObjectChange) {
                            changes.trySend(change)
                        }
                    },
                )
            } catch (e: TandemException.InvalidArgument) {
                null // no such object
            }
            try {
                var current = LinkResolver(this@TandemDatabase).read(model, k)
                emit(current)
                if (handle == null || current == null) return@flow
                for (change in changes) {
                    current = if (change is ObjectChange.Deleted) null else LinkResolver(this@TandemDatabase).read(model, k)
                    emit(current)
                    if (current == null) return@flow
                }
            } finally {
                handle?.cancel()
                handle?.close()
            }
        }.flowOn(Dispatchers.IO)
    }

    /** [objectFlow] with the class as a type argument: `db.objectFlow<Task>(1L)`. */
    inline fun <reified T : Any> objectFlow(key: Any?): Flow<T?> = objectFlow(T::class, key)

    /**
     * The flexible sync subscriptions stored in this file: `db.subscriptions.update { add(query<Task>()) }`,
     * `latest`, `active` (see [TandemSubscriptions]).
     */
    val subscriptions: TandemSubscriptions = TandemSubscriptions(this)

    /**
     * Starts syncing (see [Database.sync]); the session's waits are `suspend` functions. For
     * flexible sync pass `SyncOptions.flexible(url, token)` and wait for each subscription set
     * with `session.waitForSynchronization()`. [errorListener] is told of every error of the
     * session from the first (Realm's `SyncConfiguration.errorHandler`); a listener added later
     * with `session.observeErrors` can miss the earliest.
     */
    fun sync(
        options: SyncOptions,
        tokenProvider: TokenProvider? = null,
        errorListener: ErrorListener? = null,
    ): SyncSession = raw.sync(options, tokenProvider, errorListener)

    /**
     * Frees the native database now. Closing twice does nothing; any other use afterwards throws
     * [IllegalStateException] ("this TandemDatabase is closed").
     */
    override fun close() {
        synchronized(this) {
            closed = true
            batchPath?.close()
            batchPath = null
        }
        database.close()
    }
}

/**
 * Reads objects with their links resolved, one read per distinct linked object. A link that
 * leads back to an object still being read (a cycle) reads as null: immutable instances
 * cannot hold cycles.
 */
internal class LinkResolver(private val db: TandemDatabase) : LinkReader {
    private val done = HashMap<String, Any?>()
    private val reading = HashSet<String>()

    override fun read(target: KClass<*>, key: Key): Any? = read(db.model(target), key)

    /** The object of [model] with [key] from its row of `Results.rows(model.names)`. */
    @Suppress("UNCHECKED_CAST")
    fun <T : Any> readRow(model: Model<T>, key: Key, values: List<FieldValue>): T? {
        val id = model.className + "\u0000" + ValueCodec.keyText(key)
        if (id in done) return done[id] as T?
        if (!reading.add(id)) return null
        try {
            val obj = model.decodeRow(values, this)
            done[id] = obj
            return obj
        } finally {
            reading.remove(id)
        }
    }

    /** The object of [model] with [key], or null; [fields] if already read. */
    @Suppress("UNCHECKED_CAST")
    fun <T : Any> read(model: Model<T>, key: Key, fields: Map<String, FieldValue>? = null): T? {
        val id = model.className + "\u0000" + ValueCodec.keyText(key)
        if (id in done) return done[id] as T?
        if (!reading.add(id)) return null
        try {
            val values = fields ?: db.batchPath().objectFields(model.className, key)
            val obj = values?.let { model.decode(it, this, key) }
            done[id] = obj
            return obj
        } finally {
            reading.remove(id)
        }
    }
}
