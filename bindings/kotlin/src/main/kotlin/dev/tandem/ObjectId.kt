// ObjectId: the 12-byte BSON/Realm object id (4-byte big-endian seconds, 5 random bytes, 3-byte
// counter), as an immutable value with hex text; stored as Tandem's OBJECT_ID type.

package dev.tandem

import java.security.SecureRandom
import java.time.Instant
import java.util.concurrent.atomic.AtomicInteger

/**
 * A 12-byte object id. Equality, hashing and ordering are by its bytes (unsigned, big-endian);
 * `toString()` is its 24 lowercase hex digits.
 *
 * ```kotlin
 * val id = ObjectId.generate()            // e.g. 6560f1c2a1b2c3d4e5000001
 * ObjectId("6560f1c2a1b2c3d4e5000001")  // from hex; IllegalArgumentException if not 24 hex digits
 * ObjectId(bytes)                         // from 12 bytes (copied); IllegalArgumentException otherwise
 * ```
 */
class ObjectId private constructor(private val bytes: ByteArray, @Suppress("UNUSED_PARAMETER") owned: Unit) :
    Comparable<ObjectId> {

    /** From exactly 12 bytes (copied). Throws [IllegalArgumentException] for another length. */
    constructor(bytes: ByteArray) : this(checkLength(bytes).copyOf(), Unit)

    /** From 24 hex digits (either case). Throws [IllegalArgumentException] otherwise. */
    constructor(hex: String) : this(parseHex(hex), Unit)

    /** A copy of the 12 bytes. */
    fun toByteArray(): ByteArray = bytes.copyOf()

    /** The 24 lowercase hex digits. */
    fun toHexString(): String = buildString(24) {
        for (b in bytes) {
            append(HEX[(b.toInt() shr 4) and 0xf])
            append(HEX[b.toInt() and 0xf])
        }
    }

    /** The creation time its first 4 bytes hold (whole seconds since the Unix epoch). */
    val timestamp: Instant
        get() = Instant.ofEpochSecond(
            ((bytes[0].toLong() and 0xff) shl 24) or ((bytes[1].toLong() and 0xff) shl 16) or
                ((bytes[2].toLong() and 0xff) shl 8) or (bytes[3].toLong() and 0xff),
        )

    override fun equals(other: Any?): Boolean = other is ObjectId && bytes.contentEquals(other.bytes)

    override fun hashCode(): Int = bytes.contentHashCode()

    override fun compareTo(other: ObjectId): Int {
        for (i in 0 until 12) {
            val c = (bytes[i].toInt() and 0xff).compareTo(other.bytes[i].toInt() and 0xff)
            if (c != 0) return c
        }
        return 0
    }

    override fun toString(): String = toHexString()

    companion object {
        private const val HEX = "0123456789abcdef"
        private val random = SecureRandom()
        private val processUnique = ByteArray(5).also { random.nextBytes(it) }
        private val counter = AtomicInteger(random.nextInt())

        /** A new id: the current time in seconds, a per-process random part, a counter. */
        fun generate(): ObjectId {
            val out = ByteArray(12)
            val seconds = (System.currentTimeMillis() / 1000).toInt()
            for (i in 0 until 4) out[i] = (seconds ushr (24 - 8 * i)).toByte()
            processUnique.copyInto(out, 4)
            val n = counter.getAndIncrement()
            for (i in 0 until 3) out[9 + i] = (n ushr (16 - 8 * i)).toByte()
            return ObjectId(out, Unit)
        }

        private fun checkLength(bytes: ByteArray): ByteArray {
            require(bytes.size == 12) { "an ObjectId is 12 bytes, got ${bytes.size}" }
            return bytes
        }

        private fun parseHex(hex: String): ByteArray {
            require(hex.length == 24) { "an ObjectId is 24 hex digits, got \"$hex\"" }
            return ByteArray(12) { i ->
                val hi = Character.digit(hex[2 * i], 16)
                val lo = Character.digit(hex[2 * i + 1], 16)
                require(hi >= 0 && lo >= 0) { "an ObjectId is 24 hex digits, got \"$hex\"" }
                ((hi shl 4) or lo).toByte()
            }
        }
    }
}
