// Model: what kotlin-reflect reads once per model class (cached) — the Tandem class name, the
// primary key, each constructor property's shape (scalar, link or embedded; single, list, set or
// dictionary) — giving the schema (`ClassSpec`) and the decoding of read objects into instances.
// Encoding for writes is in TypedWrite.kt.

package dev.tandem

import java.util.concurrent.ConcurrentHashMap
import kotlin.reflect.KClass
import kotlin.reflect.KFunction
import kotlin.reflect.KParameter
import kotlin.reflect.KProperty1
import kotlin.reflect.KType
import kotlin.reflect.full.findAnnotation
import kotlin.reflect.full.hasAnnotation
import kotlin.reflect.full.memberProperties
import kotlin.reflect.full.primaryConstructor
import kotlin.reflect.jvm.isAccessible
import kotlin.reflect.jvm.javaConstructor
import kotlin.reflect.jvm.javaField

/** What one property holds, element-wise. */
internal sealed interface Element {
    /** A scalar stored as [codec] says. */
    class Scalar(val codec: ScalarCodec) : Element

    /** A link to a top-level model object (stored as its class name and key). */
    class Link(val target: KClass<*>) : Element

    /** An embedded object of an @[Embedded] model class. */
    class EmbeddedObject(val target: KClass<*>) : Element
}

/** One persisted property: a primary-constructor parameter and the property it sets. */
internal class Field(
    val name: String,
    val param: KParameter,
    private val property: KProperty1<Any, *>,
    val collection: Collection,
    /** Whether the value (single) or each element/entry value (collections) may be null. */
    val nullable: Boolean,
    val element: Element,
) {
    /** Marked [Index]. */
    var indexed: Boolean = false
    fun get(obj: Any): Any? = property.get(obj)
}

/** Resolves a link while decoding: the target object, or null if it is gone. */
internal fun interface LinkReader {
    fun read(target: KClass<*>, key: Key): Any?
}

/** The reflected shape of one model class. Build with [Models.of]. */
internal class Model<T : Any>(val kclass: KClass<T>) {
    val className: String = Models.className(kclass)
    val embedded: Boolean = kclass.hasAnnotation<Embedded>()
    private val constructor: KFunction<T>
    val fields: List<Field>
    val primaryKey: Field?

    init {
        fun fail(property: String?, reason: String): Nothing = throw TandemModelException(className, property, reason)
        if (kclass.isAbstract || kclass.isSealed || kclass.java.isInterface) fail(null, "a model must be a concrete class")
        constructor = kclass.primaryConstructor ?: fail(null, "a model needs a primary constructor (a data class)")
        constructor.isAccessible = true
        val properties = kclass.memberProperties.associateBy { it.name }
        val built = mutableListOf<Field>()
        var key: Field? = null
        for (param in constructor.parameters) {
            val name = param.name ?: fail(null, "a constructor parameter has no name")
            @Suppress("UNCHECKED_CAST")
            val property = properties[name] as KProperty1<Any, *>?
                ?: fail(name, "constructor parameter `$name` is not a property (declare it `val $name`)")
            property.isAccessible = true
            val field = shape(name, param, property, param.type)
            field.indexed = param.hasAnnotation<Index>() || property.hasAnnotation<Index>() ||
                property.javaField?.isAnnotationPresent(Index::class.java) == true
            val isKey = param.hasAnnotation<PrimaryKey>() || property.hasAnnotation<PrimaryKey>() ||
                property.javaField?.isAnnotationPresent(PrimaryKey::class.java) == true
            if (isKey) {
                if (embedded) fail(name, "an @Embedded class has no primary key")
                if (key != null) fail(name, "a second @PrimaryKey (the first is ${key.name})")
                val element = field.element
                if (field.collection != Collection.SINGLE || element !is Element.Scalar ||
                    ValueCodec.keyTypes.none { ValueCodec.scalarFor(it) === element.codec }
                ) {
                    fail(name, "a primary key must be Long, Int, String, ObjectId or UUID (nullable allowed), not ${param.type}")
                }
                key = field
            }
            built += field
        }
        if (!embedded && key == null) {
            fail(null, "no @PrimaryKey property (mark one constructor property, e.g. `@PrimaryKey val _id: Long`, or annotate the class @Embedded)")
        }
        fields = built
        primaryKey = key
    }

    private fun shape(name: String, param: KParameter, property: KProperty1<Any, *>, type: KType): Field {
        fun fail(reason: String): Nothing = throw TandemModelException(className, name, reason)
        val classifier = type.classifier as? KClass<*> ?: fail("type $type is not a class")
        val collection = when (classifier) {
            List::class -> Collection.LIST
            Set::class -> Collection.SET
            Map::class -> Collection.DICTIONARY
            else -> Collection.SINGLE
        }
        if (collection == Collection.SINGLE) {
            val element = element(classifier) ?: fail(unsupported(type))
            if (element !is Element.Scalar && !type.isMarkedNullable) {
                fail("a single ${if (element is Element.Link) "link" else "embedded object"} must be nullable (${classifier.simpleName}?), as in Realm")
            }
            return Field(name, param, property, collection, type.isMarkedNullable, element)
        }
        if (type.isMarkedNullable) fail("a collection cannot be null (use an empty one): $type")
        if (collection == Collection.DICTIONARY && type.arguments.getOrNull(0)?.type?.classifier != String::class) {
            fail("a dictionary's keys must be String: $type")
        }
        val elementType = type.arguments.last().type ?: fail("a star-projected collection has no element type: $type")
        val elementClass = elementType.classifier as? KClass<*> ?: fail("element type $elementType is not a class")
        if (elementClass == List::class || elementClass == Set::class || elementClass == Map::class) {
            fail("nested collections are not supported: $type")
        }
        val element = element(elementClass) ?: fail(unsupported(elementType))
        if (element is Element.Link && collection != Collection.DICTIONARY && elementType.isMarkedNullable) {
            fail("links in a list or set cannot be null: $type")
        }
        if (element is Element.EmbeddedObject && collection == Collection.SET) fail("a set cannot hold embedded objects")
        if (element is Element.EmbeddedObject && collection == Collection.LIST && elementType.isMarkedNullable) {
            fail("embedded objects in a list cannot be null: $type")
        }
        return Field(name, param, property, collection, elementType.isMarkedNullable, element)
    }

    private fun unsupported(type: KType) =
        "type $type is not supported (use Long, Int, String, Boolean, ByteArray, Double, Float, Instant, " +
            "BigDecimal, UUID, ObjectId, a model class with a @PrimaryKey (a link), an @Embedded class, " +
            "or a List, Set or Map<String, _> of one of these)"

    private fun element(k: KClass<*>): Element? {
        ValueCodec.scalarFor(k)?.let { return Element.Scalar(it) }
        if (k.hasAnnotation<Embedded>()) return Element.EmbeddedObject(k)
        if (Models.isTopLevelModel(k)) return Element.Link(k)
        return null
    }

    /** The schema of this class. */
    val spec: ClassSpec by lazy {
        ClassSpec(
            name = className,
            primaryKey = primaryKey?.name,
            properties = fields.map { f ->
                when (val e = f.element) {
                    is Element.Scalar -> PropertySpec(f.name, e.codec.type, f.nullable, f.collection, null, f.indexed)
                    is Element.Link ->
                        PropertySpec(f.name, PropertyType.LINK, f.nullable, f.collection, Models.className(e.target), f.indexed)
                    is Element.EmbeddedObject ->
                        PropertySpec(f.name, PropertyType.LINK, f.nullable, f.collection, Models.className(e.target), f.indexed)
                }
            },
        )
    }

    /** The FFI key of [obj] (a top-level model instance). */
    fun keyOf(obj: Any): Key = ValueCodec.key(primaryKey!!.get(obj))

    /**
     * An instance from a read object's fields; links are resolved through [links]. The FFI's
     * object maps leave the primary key out: it is taken from [key] (null for embedded objects).
     */
    /** The property names in constructor order: what [decodeRow] expects `Results.rows` to be asked for. */
    val names: List<String> by lazy { fields.map { it.name } }

    private val javaConstructor: java.lang.reflect.Constructor<T> by lazy {
        constructor.javaConstructor?.also { it.isAccessible = true }
            ?: throw TandemModelException(className, null, "the primary constructor has no Java constructor")
    }

    /**
     * An instance from one row of `Results.rows(names)`: [values] holds every property, in
     * constructor order, so the constructor is called directly, without kotlin-reflect's
     * `callBy` (which builds a map of parameters per object). Errors as [decode].
     */
    fun decodeRow(values: List<FieldValue>, links: LinkReader): T {
        check(values.size == fields.size) { "reading $className: ${values.size} values for ${fields.size} properties" }
        val args = arrayOfNulls<Any?>(fields.size)
        for (i in fields.indices) {
            val f = fields[i]
            args[i] = try {
                decodeField(f, values[i], links)
            } catch (e: TandemModelException) {
                throw e
            } catch (e: RuntimeException) {
                throw IllegalStateException("reading $className.${f.name}: ${e.message}", e)
            }
        }
        return try {
            javaConstructor.newInstance(*args)
        } catch (e: java.lang.reflect.InvocationTargetException) {
            throw e.cause ?: e
        }
    }

    fun decode(values: Map<String, FieldValue>, links: LinkReader, key: Key? = null): T {
        val args = HashMap<KParameter, Any?>()
        for (f in fields) {
            val fv = values[f.name] ?: if (f === primaryKey && key != null) FieldValue.Single(keyValue(key)) else null
            if (fv == null) {
                if (f.param.isOptional) continue
                throw IllegalStateException("reading $className: property ${f.name} is not in the stored object")
            }
            args[f.param] = try {
                decodeField(f, fv, links)
            } catch (e: TandemModelException) {
                throw e
            } catch (e: RuntimeException) {
                throw IllegalStateException("reading $className.${f.name}: ${e.message}", e)
            }
        }
        return constructor.callBy(args)
    }

    private fun keyValue(key: Key): Value = when (key) {
        is Key.Null -> Value.Null
        is Key.Int -> Value.Int(key.value)
        is Key.String -> Value.String(key.value)
        is Key.ObjectId -> Value.ObjectId(key.bytes)
        is Key.Uuid -> Value.Uuid(key.bytes)
    }

    private fun decodeField(f: Field, fv: FieldValue, links: LinkReader): Any? {
        val e = f.element
        fun one(v: Value): Any? = when {
            v is Value.Null -> null
            e is Element.Scalar -> e.codec.decode(v)
            e is Element.Link -> links.read(e.target, (v as? Value.Link ?: error("expected a link, read $v")).key)
            else -> error("expected an embedded object, read $v")
        }
        fun embedded(fields: Map<String, FieldValue>?): Any? =
            fields?.let { Models.of((e as Element.EmbeddedObject).target).decode(it, links) }
        return when (f.collection) {
            Collection.SINGLE -> when (fv) {
                is FieldValue.Single -> one(fv.value)
                is FieldValue.Embedded -> if (fv.present) embedded(fv.fields) else null
                else -> error("expected a single value, read $fv")
            }
            Collection.LIST, Collection.SET -> {
                val items: List<Any?> = when (fv) {
                    is FieldValue.ListValue -> fv.items.map(::one)
                    is FieldValue.SetValue -> fv.items.map(::one)
                    is FieldValue.EmbeddedList -> fv.items.map(::embedded)
                    else -> error("expected a list or set, read $fv")
                }
                // A link to a deleted object reads as nothing (links in lists are never null).
                val kept = if (e is Element.Link) items.filterNotNull() else items
                if (f.collection == Collection.SET) kept.toCollection(LinkedHashSet()) else kept
            }
            Collection.DICTIONARY -> when (fv) {
                is FieldValue.Dictionary -> fv.entries.mapValues { one(it.value) }
                is FieldValue.EmbeddedDictionary -> fv.entries.mapValues { embedded(it.value) }
                else -> error("expected a dictionary, read $fv")
            }
        }
    }
}

/** The cache of reflected models (one [Model] per class, built on first use, thread-safe). */
internal object Models {
    private val cache = ConcurrentHashMap<KClass<*>, Model<*>>()

    @Suppress("UNCHECKED_CAST")
    fun <T : Any> of(kclass: KClass<T>): Model<T> =
        cache[kclass] as Model<T>? ?: Model(kclass).also { cache.putIfAbsent(kclass, it) }

    /** The Tandem class name: @[TandemClass]'s, else the simple name. */
    fun className(kclass: KClass<*>): String =
        kclass.findAnnotation<TandemClass>()?.name ?: kclass.simpleName
            ?: throw TandemModelException(kclass.toString(), null, "an anonymous class cannot be a model")

    /** Whether [kclass] declares a @[PrimaryKey] (so a property of that type is a link). */
    fun isTopLevelModel(kclass: KClass<*>): Boolean {
        if (kclass.java.isPrimitive || kclass.java.isArray || kclass.java.name.startsWith("java.") ||
            kclass.java.name.startsWith("kotlin.")
        ) {
            return false
        }
        if (kclass.hasAnnotation<TandemClass>()) return true
        val params = kclass.primaryConstructor?.parameters ?: return false
        if (params.any { it.hasAnnotation<PrimaryKey>() }) return true
        return kclass.memberProperties.any { p ->
            p.hasAnnotation<PrimaryKey>() || p.javaField?.isAnnotationPresent(PrimaryKey::class.java) == true
        }
    }

    /**
     * The models of [roots] and of every model class they reach through links and embedded
     * properties, each once. Two classes with one Tandem name are refused.
     */
    fun closure(roots: kotlin.collections.Collection<KClass<*>>): List<Model<*>> {
        val seen = LinkedHashMap<KClass<*>, Model<*>>()
        val queue = ArrayDeque(roots)
        while (queue.isNotEmpty()) {
            val k = queue.removeFirst()
            if (k in seen) continue
            val model = of(k)
            seen[k] = model
            for (f in model.fields) {
                when (val e = f.element) {
                    is Element.Link -> queue.addLast(e.target)
                    is Element.EmbeddedObject -> queue.addLast(e.target)
                    is Element.Scalar -> {}
                }
            }
        }
        seen.values.groupBy { it.className }.forEach { (name, models) ->
            if (models.size > 1) {
                throw TandemModelException(name, null, "two model classes share this name: ${models.map { it.kclass.qualifiedName }}")
            }
        }
        return seen.values.toList()
    }
}
