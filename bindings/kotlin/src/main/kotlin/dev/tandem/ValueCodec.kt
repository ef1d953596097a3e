// ValueCodec: Kotlin values <-> the FFI's `Value`/`Key`, one codec per supported Kotlin type
// (Long, Int, String, Boolean, ByteArray, Double, Float, Instant, BigDecimal, UUID, ObjectId).
// Collections, links and embedded objects are built on these in Model.kt.

package dev.tandem

import java.math.BigDecimal
import java.math.BigInteger
import java.nio.ByteBuffer
import java.time.Instant
import java.util.UUID
import kotlin.reflect.KClass

/**
 * How one Kotlin scalar type is stored: its Tandem [type], and the conversions to and from the
 * FFI's [Value] (never [Value.Null]: nulls are handled by the caller).
 */
internal class ScalarCodec(
    val type: PropertyType,
    val kotlinName: String,
    val encode: (Any) -> Value,
    val decode: (Value) -> Any,
)

internal object ValueCodec {
    private fun mismatch(expected: String, got: Value): Nothing =
        throw IllegalStateException("expected a stored $expected, read $got")

    private val long = ScalarCodec(PropertyType.INT, "Long", { Value.Int(it as Long) }) {
        (it as? Value.Int ?: mismatch("int", it)).value
    }
    private val int = ScalarCodec(PropertyType.INT, "Int", { Value.Int((it as Int).toLong()) }) {
        val v = (it as? Value.Int ?: mismatch("int", it)).value
        if (v < Int.MIN_VALUE || v > Int.MAX_VALUE) {
            throw ArithmeticException("stored integer $v does not fit a Kotlin Int (declare the property Long)")
        }
        v.toInt()
    }
    private val string = ScalarCodec(PropertyType.STRING, "String", { Value.String(it as String) }) {
        (it as? Value.String ?: mismatch("string", it)).value
    }
    private val bool = ScalarCodec(PropertyType.BOOL, "Boolean", { Value.Bool(it as Boolean) }) {
        (it as? Value.Bool ?: mismatch("bool", it)).value
    }
    private val binary = ScalarCodec(PropertyType.BINARY, "ByteArray", { Value.Binary((it as ByteArray).copyOf()) }) {
        (it as? Value.Binary ?: mismatch("binary", it)).value
    }
    private val double = ScalarCodec(PropertyType.DOUBLE, "Double", { Value.Double(it as Double) }) {
        (it as? Value.Double ?: mismatch("double", it)).value
    }
    private val float = ScalarCodec(PropertyType.FLOAT, "Float", { Value.Float(it as Float) }) {
        (it as? Value.Float ?: mismatch("float", it)).value
    }
    private val instant = ScalarCodec(PropertyType.TIMESTAMP, "Instant", { instantToValue(it as Instant) }) {
        val t = it as? Value.Timestamp ?: mismatch("timestamp", it)
        Instant.ofEpochSecond(t.seconds, t.nanoseconds.toLong())
    }
    private val decimal = ScalarCodec(PropertyType.DECIMAL, "BigDecimal", { decimalToValue(it as BigDecimal) }) {
        BigDecimal((it as? Value.Decimal ?: mismatch("decimal128", it)).value)
    }
    private val uuid = ScalarCodec(PropertyType.UUID, "UUID", { Value.Uuid(uuidBytes(it as UUID)) }) {
        bytesUuid((it as? Value.Uuid ?: mismatch("uuid", it)).bytes)
    }
    private val objectId = ScalarCodec(PropertyType.OBJECT_ID, "ObjectId", { Value.ObjectId((it as ObjectId).toByteArray()) }) {
        ObjectId((it as? Value.ObjectId ?: mismatch("object id", it)).bytes)
    }

    private val byClass: Map<KClass<*>, ScalarCodec> = mapOf(
        Long::class to long, Int::class to int, String::class to string, Boolean::class to bool,
        ByteArray::class to binary, Double::class to double, Float::class to float,
        Instant::class to instant, BigDecimal::class to decimal, UUID::class to uuid,
        ObjectId::class to objectId,
    )

    /** The codec of a Kotlin scalar type, or null if it is not one Tandem stores. */
    fun scalarFor(kclass: KClass<*>): ScalarCodec? = byClass[kclass]

    /** Types allowed as primary keys. */
    val keyTypes: Set<KClass<*>> = setOf(Long::class, Int::class, String::class, ObjectId::class, UUID::class)

    /**
     * A Kotlin value as a query argument: null, a scalar of a supported type, a model instance
     * (a link to it) or an FFI [Value] as is.
     */
    fun argument(value: Any?): Value = when (value) {
        null -> Value.Null
        is Value -> value
        else -> byClass[value::class]?.encode?.invoke(value)
            ?: if (Models.isTopLevelModel(value::class)) {
                val model = Models.of(value::class)
                Value.Link(model.className, model.keyOf(value))
            } else {
                throw IllegalArgumentException(
                    "a query argument of type ${value::class.qualifiedName} has no Tandem type " +
                        "(use Long, Int, String, Boolean, ByteArray, Double, Float, Instant, " +
                        "BigDecimal, UUID, ObjectId, a model object or a dev.tandem.Value)",
                )
            }
    }

    /** A primary key value as the FFI's [Key]. */
    fun key(value: Any?): Key = when (value) {
        null -> Key.Null
        is Long -> Key.Int(value)
        is Int -> Key.Int(value.toLong())
        is String -> Key.String(value)
        is ObjectId -> Key.ObjectId(value.toByteArray())
        is UUID -> Key.Uuid(uuidBytes(value))
        is Key -> value
        else -> throw IllegalArgumentException(
            "a primary key of type ${value::class.qualifiedName}: use Long, Int, String, ObjectId or UUID",
        )
    }

    /**
     * Seconds and nanoseconds with the same sign, as Tandem's timestamps are (an [Instant] keeps
     * its nanoseconds positive: -1.5 s is -2 s + 0.5e9 ns, stored as -1 s - 0.5e9 ns).
     */
    fun instantToValue(t: Instant): Value.Timestamp =
        if (t.epochSecond < 0 && t.nano > 0) {
            Value.Timestamp(t.epochSecond + 1, t.nano - 1_000_000_000)
        } else {
            Value.Timestamp(t.epochSecond, t.nano)
        }

    /**
     * A decimal as Tandem's exact text `coefficientEexponent` (`-12E-1` for -1.2): no rounding,
     * scale kept. Beyond decimal128 (a coefficient over 113 bits, exponent out of range) the
     * write fails with [TandemException.InvalidArgument].
     */
    fun decimalToValue(d: BigDecimal): Value.Decimal {
        val unscaled: BigInteger = d.unscaledValue()
        return Value.Decimal("${unscaled}E${-d.scale()}")
    }

    fun uuidBytes(u: UUID): ByteArray =
        ByteBuffer.allocate(16).putLong(u.mostSignificantBits).putLong(u.leastSignificantBits).array()

    fun bytesUuid(b: ByteArray): UUID {
        require(b.size == 16) { "a UUID is 16 bytes, read ${b.size}" }
        val buf = ByteBuffer.wrap(b)
        return UUID(buf.long, buf.long)
    }

    /** A [Key] as text, for identity maps (keys holding byte arrays have identity equality). */
    fun keyText(key: Key): String = when (key) {
        is Key.Null -> "null"
        is Key.Int -> "i${key.value}"
        is Key.String -> "s${key.value}"
        is Key.ObjectId -> "o${ObjectId(key.bytes)}"
        is Key.Uuid -> "u${bytesUuid(key.bytes)}"
    }
}
