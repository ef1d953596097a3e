// BatchPath: the typed layer's paths of one plain crossing. A small batch of typed operations
// (at most JsonBatch.MAX_OPS) is encoded as the row codec's JSON write batch
// (src/ffi/python_batch.rs documents the format) and handed to `batch_write` as a borrowed
// direct buffer; reads (`count`, `rows`, an object by key, a query's check) write their
// arguments in uniffi's own serialization into the same buffer (src/ffi/batch_read.rs). The
// call's status structure is reused per thread. The generated calls allocate JNA structures
// (native memory tracked in JNA's map and cleaner) for every crossing they make: four for
// `Database.write(ops)` (handle clone, list buffer, call, returned buffer), which measured 40
// to 80 us for an empty batch against 14 us here, and eight for a query counted and released
// (bindings/kotlin/README.md, "Benchmark").

package dev.tandem

import com.sun.jna.Memory
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.CharBuffer
import java.nio.charset.CharacterCodingException
import java.nio.charset.CodingErrorAction
import java.util.Base64
import java.util.concurrent.locks.ReentrantReadWriteLock

/**
 * Encodes [WriteOp]s as the row codec's JSON write batch: one JSON operation per [WriteOp], in
 * order, so `operation <i>` in an error names the same operation either way.
 *
 * Only operations the codec spells are encoded: everything but embedded objects (the
 * `CreateEmbedded` and `ListInsertEmbedded` variants and any operation with a path),
 * `CreateRows`, links to an object whose primary key is null (the codec reads `null` as "no link"), and strings that
 * are not valid UTF-16 (a lone surrogate, which the generated code refuses and `String`'s
 * encoder would replace with `?`). [encode] returns null for a batch holding anything else;
 * the caller then sends the [WriteOp]s as they are. The values must already match their
 * properties' types (the typed layer guarantees it): the codec reads a value by its property's
 * type, so an untyped batch is never encoded here.
 */
internal object JsonBatch {
    /**
     * Batches of more operations cross as [WriteOp]s: the JSON saves a fixed cost per call
     * (the JNA structures, 40 to 80 us), while per operation the generated lowering is the
     * cheaper of the two (100,000 objects in one batch: 1.29 to 1.94 s as `WriteOp`s, 1.50 to
     * 1.98 s as JSON, alternated three times in one JVM on 2026-12-02), so the break-even is a
     * few dozen.
     */
    const val MAX_OPS = 32

    private val b64: Base64.Encoder = Base64.getEncoder()
    private val hex = "0123456789abcdef".toCharArray()

    /**
     * The UTF-8 JSON of [ops], or null if one of them has no JSON form. [primaryKey] gives the
     * primary key property of a class (the codec's `create` and `upsert` carry the key among the
     * values).
     */
    fun encode(ops: List<WriteOp>, primaryKey: (String) -> String): ByteArray? {
        val out = StringBuilder(64 + 96 * ops.size)
        out.append('[')
        for ((i, op) in ops.withIndex()) {
            if (i > 0) out.append(',')
            if (!op(out, op, primaryKey)) return null
        }
        out.append(']')
        return utf8(out)
    }

    /**
     * A batch of any size made only of whole-object writes of one class with the same
     * properties (every operation a [WriteOp.Upsert], as `add` of a model without collections or
     * embedded objects records, or every one a [WriteOp.Create]) as ONE row-codec operation,
     * `upsert_rows` (or `rows`): the store writes the rows with one prepared statement
     * (`WriteTransaction::upsert_rows`). Null for any other batch, which then crosses as
     * [WriteOp]s (or through [encode] when small). An error names `operation 0: row <i>: `,
     * where `<i>` is the position of the failing operation.
     */
    fun encodeRows(ops: List<WriteOp>, primaryKey: (String) -> String): ByteArray? {
        val first = ops.firstOrNull() ?: return null
        val upsert = first is WriteOp.Upsert
        val (cls, names) = when (first) {
            is WriteOp.Upsert -> first.className to first.values.keys
            is WriteOp.Create -> first.className to first.values.keys
            else -> return null
        }
        // In name order, as the codec takes a `create`'s object (so the same instructions).
        val props = names.sorted()
        val out = StringBuilder(64 + 64 * ops.size)
        out.append(if (upsert) "[[\"upsert_rows\"," else "[[\"rows\",")
        string(out, cls)
        out.append(",[")
        string(out, primaryKey(cls))
        for (p in props) {
            out.append(',')
            string(out, p)
        }
        out.append("],[")
        for ((i, op) in ops.withIndex()) {
            val (key, values) = when {
                upsert && op is WriteOp.Upsert && op.className == cls -> op.key to op.values
                !upsert && op is WriteOp.Create && op.className == cls -> op.key to op.values
                else -> return null
            }
            if (values.size != props.size) return null
            if (i > 0) out.append(',')
            out.append('[')
            key(out, key)
            for (p in props) {
                val v = values[p] ?: return null
                out.append(',')
                if (!value(out, v)) return null
            }
            out.append(']')
        }
        out.append("]]]")
        return utf8(out)
    }

    /** [out] as UTF-8, or null if it holds a lone surrogate (not valid UTF-16). */
    private fun utf8(out: StringBuilder): ByteArray? =
        try {
            val bytes = Charsets.UTF_8.newEncoder()
                .onMalformedInput(CodingErrorAction.REPORT)
                .onUnmappableCharacter(CodingErrorAction.REPORT)
                .encode(CharBuffer.wrap(out))
            ByteArray(bytes.remaining()).also { bytes.get(it) }
        } catch (_: CharacterCodingException) {
            null
        }

    private fun op(out: StringBuilder, op: WriteOp, primaryKey: (String) -> String): Boolean {
        when (op) {
            is WriteOp.Create -> if (!put(out, "create", op.className, primaryKey(op.className), op.key, op.values)) return false
            is WriteOp.Upsert -> if (!put(out, "upsert", op.className, primaryKey(op.className), op.key, op.values)) return false
            is WriteOp.Erase -> head(out, "erase", op.className, op.key)
            is WriteOp.Set -> if (op.path.isNotEmpty()) return false else {
                target(out, "set", op.className, op.key, op.property); out.append(','); if (!value(out, op.value)) return false
            }
            is WriteOp.Add -> if (op.path.isNotEmpty()) return false else {
                target(out, "add", op.className, op.key, op.property); out.append(',').append(op.amount)
            }
            is WriteOp.ListInsert -> if (op.path.isNotEmpty()) return false else {
                target(out, "list_insert", op.className, op.key, op.property)
                out.append(',').append(op.index.toString()).append(','); if (!value(out, op.value)) return false
            }
            is WriteOp.ListSet -> if (op.path.isNotEmpty()) return false else {
                target(out, "list_set", op.className, op.key, op.property)
                out.append(',').append(op.index.toString()).append(','); if (!value(out, op.value)) return false
            }
            is WriteOp.ListMove -> if (op.path.isNotEmpty()) return false else {
                target(out, "list_move", op.className, op.key, op.property)
                out.append(',').append(op.from.toString()).append(',').append(op.to.toString())
            }
            is WriteOp.ListErase -> if (op.path.isNotEmpty()) return false else {
                target(out, "list_erase", op.className, op.key, op.property)
                out.append(',').append(op.index.toString())
            }
            is WriteOp.ListClear -> if (op.path.isNotEmpty()) return false else
                target(out, "list_clear", op.className, op.key, op.property)
            is WriteOp.SetInsert -> if (op.path.isNotEmpty()) return false else {
                target(out, "set_insert", op.className, op.key, op.property); out.append(','); if (!value(out, op.value)) return false
            }
            is WriteOp.SetErase -> if (op.path.isNotEmpty()) return false else {
                target(out, "set_erase", op.className, op.key, op.property); out.append(','); if (!value(out, op.value)) return false
            }
            is WriteOp.SetClear -> if (op.path.isNotEmpty()) return false else
                target(out, "set_clear", op.className, op.key, op.property)
            is WriteOp.DictSet -> if (op.path.isNotEmpty()) return false else {
                target(out, "dict_set", op.className, op.key, op.property)
                out.append(','); string(out, op.entry); out.append(','); if (!value(out, op.value)) return false
            }
            is WriteOp.DictErase -> if (op.path.isNotEmpty()) return false else {
                target(out, "dict_erase", op.className, op.key, op.property)
                out.append(','); string(out, op.entry)
            }
            is WriteOp.DictClear -> if (op.path.isNotEmpty()) return false else
                target(out, "dict_clear", op.className, op.key, op.property)
            // CreateRows, UpsertRows: the codec's `rows` puts the key among the values; the typed
            // layer never records them, so they cross as they are.
            is WriteOp.CreateEmbedded, is WriteOp.ListInsertEmbedded, is WriteOp.CreateRows,
            is WriteOp.UpsertRows -> return false
        }
        out.append(']')
        return true
    }

    /** `["create"|"upsert", class, {pk: key, prop: value, ...}` (the caller closes it); false if a value has no JSON form. */
    private fun put(out: StringBuilder, name: String, cls: String, pk: String, key: Key, values: Map<String, Value>): Boolean {
        out.append("[\"").append(name).append("\",")
        string(out, cls)
        out.append(",{")
        string(out, pk)
        out.append(':')
        key(out, key)
        for ((prop, v) in values) {
            out.append(',')
            string(out, prop)
            out.append(':')
            if (!value(out, v)) return false
        }
        out.append('}')
        return true
    }

    /** `[name, class, key` (the caller closes it). */
    private fun head(out: StringBuilder, name: String, cls: String, key: Key) {
        out.append("[\"").append(name).append("\",")
        string(out, cls)
        out.append(',')
        key(out, key)
    }

    /** `[name, class, key, prop` (the caller closes it). */
    private fun target(out: StringBuilder, name: String, cls: String, key: Key, prop: String) {
        head(out, name, cls, key)
        out.append(',')
        string(out, prop)
    }

    private fun key(out: StringBuilder, key: Key) {
        when (key) {
            is Key.Null -> out.append("null")
            is Key.Int -> out.append(key.value)
            is Key.String -> string(out, key.value)
            is Key.ObjectId -> hexString(out, key.bytes)
            is Key.Uuid -> hexString(out, key.bytes)
        }
    }

    /** Appends [v]; false for a value the codec cannot spell (a link to a null key). */
    private fun value(out: StringBuilder, v: Value): Boolean {
        when (v) {
            is Value.Null -> out.append("null")
            is Value.Int -> out.append(v.value)
            is Value.Bool -> out.append(v.value)
            is Value.String -> string(out, v.value)
            is Value.Binary -> out.append('"').append(b64.encodeToString(v.value)).append('"')
            is Value.Timestamp -> out.append('[').append(v.seconds).append(',').append(v.nanoseconds).append(']')
            // Widened: Double.toString reads back as the same double, which narrows back to
            // this float exactly (Float.toString's shorter text would be rounded twice).
            is Value.Float -> double(out, v.value.toDouble())
            is Value.Double -> double(out, v.value)
            is Value.ObjectId -> hexString(out, v.bytes)
            is Value.Uuid -> hexString(out, v.bytes)
            is Value.Decimal -> string(out, v.value)
            is Value.Link -> if (v.key is Key.Null) return false else key(out, v.key)
        }
        return true
    }

    /** A number, or the codec's strings for NaN and the infinities. */
    private fun double(out: StringBuilder, d: Double) {
        when {
            d.isNaN() -> out.append("\"NaN\"")
            d.isInfinite() -> out.append(if (d > 0) "\"Infinity\"" else "\"-Infinity\"")
            else -> out.append(d)
        }
    }

    private fun hexString(out: StringBuilder, bytes: ByteArray) {
        out.append('"')
        for (b in bytes) out.append(hex[(b.toInt() shr 4) and 15]).append(hex[b.toInt() and 15])
        out.append('"')
    }

    /** A JSON string (RFC 8259): quote, backslash and the controls below U+0020 escaped. */
    internal fun string(out: StringBuilder, s: String) {
        out.append('"')
        var start = 0
        for (i in s.indices) {
            val c = s[i]
            if (c != '"' && c != '\\' && c >= ' ') continue
            out.append(s, start, i)
            when (c) {
                '"' -> out.append("\\\"")
                '\\' -> out.append("\\\\")
                '\n' -> out.append("\\n")
                '\r' -> out.append("\\r")
                '\t' -> out.append("\\t")
                else -> out.append("\\u00").append(hex[c.code shr 4]).append(hex[c.code and 15])
            }
            start = i + 1
        }
        out.append(s, start, s.length).append('"')
    }
}

/**
 * The codec and [BatchWriter] of one [TandemDatabase]. [close] releases the writer (the native
 * side holds the database while it lives) after waiting for writes in progress; a write after
 * it throws [IllegalStateException], as a call on a closed [Database] does.
 */
internal class BatchPath(db: Database, classes: List<ClassSpec>) : AutoCloseable {
    private val codec = RowCodec(classes)
    private val writer = BatchWriter(codec, db)
    private val id: Long = writer.id().toLong()

    /** Writes hold it shared; [close] holds it alone. */
    private val lifecycle = ReentrantReadWriteLock()
    private var closed = false

    /**
     * Writes the JSON batch [json] in one transaction: the new local version, or null if nothing
     * changed. Throws [TandemException] as `Database.write` does (an operation's error names it).
     */
    fun write(json: ByteArray): ULong? {
        val shared = lifecycle.readLock()
        shared.lock()
        try {
            check(!closed) { "this TandemDatabase is closed" }
            return call(json)
        } finally {
            shared.unlock()
        }
    }

    private fun call(json: ByteArray): ULong? {
        val version = crossing(json.size, { it.put(json) }) { bytes, status ->
            UniffiLib.uniffi_tandem_fn_func_batch_write(id, bytes, status)
        }
        return if (version == 0L) null else version.toULong()
    }

    /**
     * Compiles [filter] on [className] with [args] without running it (`batch_check_query`):
     * throws [TandemException] as `Database.query` does for a query that would not run.
     */
    fun checkQuery(className: String, filter: String, args: List<Value>) {
        read(queryRequest(className, filter, args)) { bytes, status ->
            UniffiLib.uniffi_tandem_fn_func_batch_check_query(id, bytes, status)
        }
    }

    /** How many objects of [className] match [filter] with [args] now (`batch_count`). */
    fun count(className: String, filter: String, args: List<Value>): ULong =
        read(queryRequest(className, filter, args)) { bytes, status ->
            UniffiLib.uniffi_tandem_fn_func_batch_count(id, bytes, status)
        }.toULong()

    /**
     * The matching objects by position, in order, with the values of [properties], from
     * [offset] (0-based), at most [limit] of them (null: all) (`batch_rows`, as `Results.rows`).
     */
    fun rows(
        className: String,
        filter: String,
        args: List<Value>,
        properties: List<String>,
        offset: ULong = 0uL,
        limit: ULong? = null,
    ): List<ObjectRow> {
        val query = queryRequest(className, filter, args)
        val size = query.size + FfiConverterSequenceString.allocationSize(properties).toInt() +
            FfiConverterULong.allocationSize(offset).toInt() + FfiConverterOptionalULong.allocationSize(limit).toInt()
        val request = Request(size) {
            query.fill(it)
            FfiConverterSequenceString.write(properties, it)
            FfiConverterULong.write(offset, it)
            FfiConverterOptionalULong.write(limit, it)
        }
        val buffer = read(request) { bytes, status -> UniffiLib.uniffi_tandem_fn_func_batch_rows(id, bytes, status) }
        return lift(FfiConverterSequenceTypeObjectRow, buffer)
    }

    /** The object of [className] with [key], property by property, or null (`batch_object`). */
    fun objectFields(className: String, key: Key): Map<String, FieldValue>? {
        val request = Request(
            (FfiConverterString.allocationSize(className) + FfiConverterTypeKey.allocationSize(key)).toInt(),
        ) {
            FfiConverterString.write(className, it)
            FfiConverterTypeKey.write(key, it)
        }
        val buffer = read(request) { bytes, status -> UniffiLib.uniffi_tandem_fn_func_batch_object(id, bytes, status) }
        return lift(FfiConverterOptionalMapStringTypeFieldValue, buffer)
    }

    /** A bound on a request's size in bytes and the code that writes it (uniffi's serialization). */
    private class Request(val size: Int, val fill: (ByteBuffer) -> Unit)

    private fun queryRequest(className: String, filter: String, args: List<Value>) = Request(
        (FfiConverterString.allocationSize(className) + FfiConverterString.allocationSize(filter) +
            FfiConverterSequenceTypeValue.allocationSize(args)).toInt(),
    ) {
        FfiConverterString.write(className, it)
        FfiConverterString.write(filter, it)
        FfiConverterSequenceTypeValue.write(args, it)
    }

    /** [crossing] for a read: refused once [close] has begun. */
    private inline fun <R> read(request: Request, native: (ForeignBytes.ByValue, UniffiRustCallStatus) -> R): R {
        val shared = lifecycle.readLock()
        shared.lock()
        try {
            check(!closed) { "this TandemDatabase is closed" }
            return crossing(request.size, request.fill, native)
        } finally {
            shared.unlock()
        }
    }

    /**
     * [converter]'s value of the result [buffer], which is then freed with this thread's call
     * status (the generated lift makes a new status for the free).
     */
    private fun <T> lift(converter: FfiConverterRustBuffer<T>, buffer: RustBuffer.ByValue): T {
        try {
            val bytes = buffer.asByteBuffer()!!
            val value = converter.read(bytes)
            check(!bytes.hasRemaining()) { "batch read: bytes left after the result" }
            return value
        } finally {
            val kept = scratch.get()
            val status = if (kept.busy) UniffiRustCallStatus() else kept.status
            UniffiLib.ffi_tandem_rustbuffer_free(buffer, status)
            if (status.code != UNIFFI_CALL_SUCCESS && status === kept.status) kept.status = UniffiRustCallStatus()
        }
    }

    /**
     * Calls [native] with the request [fill] writes, at most [size] bytes (into this thread's
     * kept buffer, or native memory of its own when larger), and this thread's call status;
     * throws the call's error as the generated code does.
     */
    private inline fun <R> crossing(size: Int, fill: (ByteBuffer) -> Unit, native: (ForeignBytes.ByValue, UniffiRustCallStatus) -> R): R {
        // A call made from a callback inside another call on this thread (a log listener)
        // gets structures of its own.
        val kept = scratch.get()
        val s = if (kept.busy) Scratch(0) else kept
        s.busy = true
        val own = if (size > s.capacity) Memory(size.toLong()) else null
        try {
            // fill writes at most [size] bytes (a string's allocation size is a bound): the
            // request is what it wrote.
            val buffer = if (own == null) s.buffer.clear() as ByteBuffer else own.getByteBuffer(0, size.toLong()).order(ByteOrder.BIG_ENDIAN)
            buffer.limit(size)
            fill(buffer)
            s.bytes.data = own ?: s.address
            s.bytes.len = buffer.position()
            val status = s.status
            val result = native(s.bytes, status)
            if (status.code != UNIFFI_CALL_SUCCESS) {
                // The status now holds an error buffer: lifting it frees it; the next call
                // starts from a fresh status.
                s.status = UniffiRustCallStatus()
                when (status.code) {
                    UNIFFI_CALL_ERROR -> throw TandemException.ErrorHandler.lift(status.error_buf)
                    else -> throw InternalException(
                        if (status.error_buf.len > 0) FfiConverterString.lift(status.error_buf) else "Rust panic",
                    )
                }
            }
            return result
        } finally {
            own?.close()
            s.busy = false
        }
    }

    override fun close() {
        val alone = lifecycle.writeLock()
        alone.lock()
        try {
            if (closed) return
            closed = true
            writer.close()
            codec.close()
        } finally {
            alone.unlock()
        }
    }

    /** One thread's call structures: a borrowed byte range, the call status, and a buffer. */
    private class Scratch(val capacity: Int) {
        val buffer: ByteBuffer = ByteBuffer.allocateDirect(capacity).order(ByteOrder.BIG_ENDIAN)
        val address: com.sun.jna.Pointer? =
            if (capacity > 0) com.sun.jna.Native.getDirectBufferPointer(buffer) else null
        val bytes = ForeignBytes.ByValue()
        var status = UniffiRustCallStatus()
        var busy = false
    }

    private companion object {
        /** Batches up to this size (bytes) are copied into the thread's kept buffer. */
        const val KEPT_BYTES = 16 * 1024

        /** Per thread, shared by every database. */
        val scratch: ThreadLocal<Scratch> = ThreadLocal.withInitial { Scratch(KEPT_BYTES) }
    }
}
