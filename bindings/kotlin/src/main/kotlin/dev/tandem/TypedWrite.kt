// TypedWrite: the receiver of `TandemDatabase.write { }`. Typed operations (add = upsert of a
// whole object, create, delete, set one property) are encoded into the FFI's `WriteOp` list and
// sent in ONE crossing: one transaction, all or nothing (a small batch as the row codec's JSON
// through `BatchPath`; the others, and what the JSON cannot spell, as the `WriteOp`s through
// `Database.write(ops)`: see `JsonBatch`).

package dev.tandem

import kotlin.reflect.KClass
import kotlin.reflect.KProperty1

/**
 * A write batch being built. Nothing is written until the block given to
 * [TandemDatabase.write] returns; then every operation is applied in order in one transaction.
 * If the block throws, nothing is written (the batch is dropped) and the exception propagates.
 *
 * Reads made inside the block (through the database) see the state *before* the batch.
 *
 * Validation happens in two places: the model shapes when an object is encoded here (a
 * [TandemModelException] or [IllegalArgumentException] thrown inside the block), values and
 * references when the batch is applied ([TandemException], e.g. `InvalidArgument` for a
 * decimal beyond decimal128 or a missing object; its message starts `operation <i>: `, or
 * `operation 0: row <i>: ` for a batch of more than 32 `add`s of one model without collections
 * or embedded objects, which crosses as one operation of rows).
 *
 * A [TypedWrite] lives as long as its block: once the block has returned (or thrown), every
 * method that records an operation throws [IllegalStateException] instead of recording into a
 * batch that is never written (a [TypedWrite] kept in a variable and used later).
 */
class TypedWrite internal constructor(private val db: TandemDatabase) {
    internal val ops = mutableListOf<WriteOp>()
    private val written = HashSet<String>()

    /** Set when the block has returned or thrown: nothing can be recorded any more. */
    @Volatile private var finished = false

    /** Ends the batch (called by [TandemDatabase.write] once the block is over). */
    internal fun finish() {
        finished = true
    }

    /** Throws [IllegalStateException] once the block is over. */
    private fun checkActive() {
        check(!finished) {
            "this TypedWrite's write block has already returned: record operations inside the block " +
                "(nothing recorded afterwards would be written)"
        }
    }

    /** The operations recorded so far (the FFI's untyped form). */
    val operations: List<WriteOp> get() = ops.toList()

    /**
     * Writes [obj] whole: creates it, or replaces every property of the stored object with the
     * same primary key (Realm's `copyToRealm(obj, UpdatePolicy.ALL)`). Its lists, sets and
     * dictionaries are replaced (cleared, then filled, in this batch), embedded objects are
     * written field by field, and each linked object is written the same way first (once per
     * batch, unless the batch adds it itself). Returns [obj].
     */
    fun <T : Any> add(obj: T): T {
        checkActive()
        put(topLevel(obj::class), obj, create = false, cascaded = false)
        return obj
    }

    /**
     * Creates [obj]; applying the batch fails with [TandemException.InvalidArgument] if an
     * object with its primary key exists. Linked objects are written as by [add]. Returns [obj].
     */
    fun <T : Any> create(obj: T): T {
        checkActive()
        put(topLevel(obj::class), obj, create = true, cascaded = false)
        return obj
    }

    /** Deletes the stored object with [obj]'s primary key (links to it are removed). */
    fun delete(obj: Any) {
        checkActive()
        val model = topLevel(obj::class)
        ops += WriteOp.Erase(model.className, model.keyOf(obj))
    }

    /**
     * Deletes the object of [kclass] whose primary key is [key] (`Long`/`Int`, `String`,
     * [ObjectId], `UUID` or null). Deleting an object that does not exist does nothing.
     */
    fun delete(kclass: KClass<*>, key: Any?) {
        checkActive()
        val model = topLevel(kclass)
        ops += WriteOp.Erase(model.className, db.keyFor(model, key))
    }

    /** [delete] with the class as a type argument: `delete<Task>(2L)`. */
    @JvmName("deleteByKey")
    inline fun <reified T : Any> delete(key: Any?) = delete(T::class, key)

    /**
     * Writes one property of the stored object of [kclass] with primary key [key]:
     * `set(Task::class, 1L, Task::done, true)`. A collection is replaced; an embedded object is
     * written field by field; a linked object is written as by [add].
     */
    fun <T : Any, V> set(kclass: KClass<T>, key: Any?, property: KProperty1<T, V>, value: V) {
        checkActive()
        val model = topLevel(kclass)
        val field = model.fields.firstOrNull { it.name == property.name }
            ?: throw TandemModelException(model.className, property.name, "not a persisted property")
        if (field === model.primaryKey) throw IllegalArgumentException("${model.className}.${field.name} is the primary key: it cannot be changed")
        writeField(model.className, db.keyFor(model, key), field, value, field.name, emptyList(), ops)
    }

    /** Adds an untyped [WriteOp] to the batch, in order with the typed ones. */
    fun op(op: WriteOp) {
        checkActive()
        ops += op
        untyped = true
    }

    /** Whether [op] was used: the batch then crosses as [WriteOp]s (see [JsonBatch]). */
    internal var untyped = false
        private set

    private fun topLevel(kclass: KClass<*>): Model<*> {
        val model = db.model(kclass)
        if (model.embedded) {
            throw IllegalArgumentException("${model.className} is @Embedded: write it through the object that holds it")
        }
        return model
    }

    /** Writes [obj]; a [cascaded] (linked) object only if this batch has not written it yet. */
    private fun put(model: Model<*>, obj: Any, create: Boolean, cascaded: Boolean) {
        val key = model.keyOf(obj)
        if (!written.add(model.className + "\u0000" + ValueCodec.keyText(key)) && cascaded) return
        val singles = LinkedHashMap<String, Value>()
        val rest = mutableListOf<WriteOp>()
        for (f in model.fields) {
            if (f === model.primaryKey) continue
            val v = f.get(obj)
            if (f.collection == Collection.SINGLE && f.element !is Element.EmbeddedObject) {
                singles[f.name] = encode(f, v) // cascades linked objects into `ops` first
            } else {
                writeField(model.className, key, f, v, f.name, emptyList(), rest)
            }
        }
        ops += if (create) WriteOp.Create(model.className, key, singles) else WriteOp.Upsert(model.className, key, singles)
        ops += rest
    }

    /** One value of [f] (a single value or one element); a linked object is written first. */
    private fun encode(f: Field, v: Any?): Value {
        if (v == null) return Value.Null
        return when (val e = f.element) {
            is Element.Scalar -> e.codec.encode(v)
            is Element.Link -> {
                val target = db.model(e.target)
                put(target, v, create = false, cascaded = true)
                Value.Link(target.className, target.keyOf(v))
            }
            is Element.EmbeddedObject -> throw IllegalStateException("embedded objects are not values")
        }
    }

    /**
     * Writes field [f] = [v] of the object [cls]/[key], at [property] + [path] (the property
     * itself for a top-level field; the holding property and the steps down for a field of an
     * embedded object). Collections are cleared, then filled.
     */
    private fun writeField(cls: String, key: Key, f: Field, v: Any?, property: String, path: List<PathStep>, out: MutableList<WriteOp>) {
        val e = f.element
        when (f.collection) {
            Collection.SINGLE ->
                if (e is Element.EmbeddedObject) {
                    if (v == null) {
                        out += WriteOp.Set(cls, key, property, Value.Null, path)
                    } else {
                        out += WriteOp.CreateEmbedded(cls, key, property, path)
                        writeEmbedded(cls, key, db.model(e.target), v, property, path, out)
                    }
                } else {
                    out += WriteOp.Set(cls, key, property, encode(f, v), path)
                }
            Collection.LIST -> {
                out += WriteOp.ListClear(cls, key, property, path)
                (v as List<*>).forEachIndexed { i, item ->
                    val index = i.toULong()
                    if (e is Element.EmbeddedObject) {
                        out += WriteOp.ListInsertEmbedded(cls, key, property, index, path)
                        writeEmbedded(cls, key, db.model(e.target), item!!, property, path + PathStep.Index(index), out)
                    } else {
                        out += WriteOp.ListInsert(cls, key, property, index, encode(f, item), path)
                    }
                }
            }
            Collection.SET -> {
                out += WriteOp.SetClear(cls, key, property, path)
                for (item in v as Set<*>) out += WriteOp.SetInsert(cls, key, property, encode(f, item), path)
            }
            Collection.DICTIONARY -> {
                out += WriteOp.DictClear(cls, key, property, path)
                for ((entry, item) in v as Map<*, *>) {
                    entry as String
                    if (e is Element.EmbeddedObject && item != null) {
                        val at = path + PathStep.Name(entry)
                        out += WriteOp.CreateEmbedded(cls, key, property, at)
                        writeEmbedded(cls, key, db.model(e.target), item, property, at, out)
                    } else {
                        out += WriteOp.DictSet(cls, key, property, entry, encode(f, item), path)
                    }
                }
            }
        }
    }

    private fun writeEmbedded(cls: String, key: Key, model: Model<*>, obj: Any, property: String, path: List<PathStep>, out: MutableList<WriteOp>) {
        for (f in model.fields) {
            writeField(cls, key, f, f.get(obj), property, path + PathStep.Name(f.name), out)
        }
    }
}
