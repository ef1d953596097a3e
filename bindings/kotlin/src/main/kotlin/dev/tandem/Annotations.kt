// Annotations that turn a Kotlin class into a Tandem model class, read at run time with
// kotlin-reflect (no compiler plugin): @TandemClass names the class, @PrimaryKey marks its key,
// @Embedded marks a class stored inside its owner (no key of its own).

package dev.tandem

/**
 * Names the Tandem class (table) of a model; without it the class name is the Kotlin simple
 * name. The name is what queries, links and sync (the server's schema) see.
 *
 * ```kotlin
 * @TandemClass("Task") data class TaskModel(@PrimaryKey val _id: Long, val title: String = "")
 * ```
 */
@Target(AnnotationTarget.CLASS)
@Retention(AnnotationRetention.RUNTIME)
@MustBeDocumented
annotation class TandemClass(val name: String)

/**
 * Gives a property a search index, as Realm's `@Index`: equality and range queries on it look
 * the index up instead of reading every object. For a single `Long`, `Int`, `Boolean`,
 * `String`, `Instant`, [ObjectId] or `java.util.UUID` property; any other is refused when the
 * database opens. Adding or removing it on an existing property changes only the index.
 */
@Target(AnnotationTarget.VALUE_PARAMETER, AnnotationTarget.PROPERTY, AnnotationTarget.FIELD)
@Retention(AnnotationRetention.RUNTIME)
@MustBeDocumented
annotation class Index

/**
 * Marks the primary key of a top-level model: one constructor property of type `Long`, `Int`,
 * `String`, [ObjectId] or `java.util.UUID` (nullable allowed). A model without one, or with two,
 * is refused with a [TandemModelException] naming the class.
 */
@Target(AnnotationTarget.VALUE_PARAMETER, AnnotationTarget.PROPERTY, AnnotationTarget.FIELD)
@Retention(AnnotationRetention.RUNTIME)
@MustBeDocumented
annotation class PrimaryKey

/**
 * Marks a model class as embedded: stored inside the object that holds it (a property typed
 * `Address?`, `List<Address>` or `Map<String, Address?>`), deleted with it, without a primary key.
 * A single embedded property must be nullable (as in Realm).
 */
@Target(AnnotationTarget.CLASS)
@Retention(AnnotationRetention.RUNTIME)
@MustBeDocumented
annotation class Embedded

/**
 * A model class the typed layer cannot map: a missing or doubled [PrimaryKey], an unsupported
 * property type, a constructor parameter that is not a property... [className] and [property]
 * (null when the fault is the class itself) say where; the message says what and why.
 */
class TandemModelException(
    val className: String,
    val property: String?,
    reason: String,
) : IllegalArgumentException(
    if (property == null) "model $className: $reason" else "model $className, property $property: $reason",
)
