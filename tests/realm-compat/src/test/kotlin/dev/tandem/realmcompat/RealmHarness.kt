// Drives the real realm-core 14.12.0 client (librealmc.so from io.realm.kotlin:cinterop-jvm
// 2.3.0) through realm-kotlin's internal RealmInterop, in the call sequence realm-kotlin 2.3.0's
// AppConfigurationImpl.createNativeApp, AppImpl.login and SyncConfigurationImpl use
// (realm-client-spike.md section 2). The HTTP side is a java.net.http transport; the sync socket
// is core's own (realm-kotlin's default, no platform networking).
//
// Every wait has a timeout; every realm, session and App is closed in the order core needs
// (session and tokens released before realm_close). A Realm is confined to the thread that opened
// it: open, use and close it on one thread (CompatTest.compat runs a whole test on one).

package dev.tandem.realmcompat

import io.realm.kotlin.internal.interop.AppCallback
import io.realm.kotlin.internal.interop.ClassFlags
import io.realm.kotlin.internal.interop.ClassInfo
import io.realm.kotlin.internal.interop.ClassKey
import io.realm.kotlin.internal.interop.CollectionType
import io.realm.kotlin.internal.interop.CoreError
import io.realm.kotlin.internal.interop.CoreLogLevel
import io.realm.kotlin.internal.interop.ErrorCode
import io.realm.kotlin.internal.interop.FrozenRealmT
import io.realm.kotlin.internal.interop.Link
import io.realm.kotlin.internal.interop.LiveRealmT
import io.realm.kotlin.internal.interop.LogCallback
import io.realm.kotlin.internal.interop.LongPointerWrapper
import io.realm.kotlin.internal.interop.RealmMutableSubscriptionSetT
import io.realm.kotlin.internal.interop.RealmSubscriptionSetT
import io.realm.kotlin.internal.interop.sync.CoreSubscriptionSetState
import io.realm.kotlin.internal.interop.MemTrackingAllocator
import io.realm.kotlin.internal.interop.NativePointer
import io.realm.kotlin.internal.interop.PropertyFlags
import io.realm.kotlin.internal.interop.PropertyInfo
import io.realm.kotlin.internal.interop.PropertyKey
import io.realm.kotlin.internal.interop.PropertyType
import io.realm.kotlin.internal.interop.RealmAppT
import io.realm.kotlin.internal.interop.RealmInterop
import io.realm.kotlin.internal.interop.RealmListT
import io.realm.kotlin.internal.interop.RealmMapT
import io.realm.kotlin.internal.interop.RealmObjectInterop
import io.realm.kotlin.internal.interop.RealmObjectT
import io.realm.kotlin.internal.interop.RealmSetT
import io.realm.kotlin.internal.interop.RealmSyncConfigT
import io.realm.kotlin.internal.interop.RealmSyncSessionT
import io.realm.kotlin.internal.interop.RealmUserT
import io.realm.kotlin.internal.interop.RealmValue
import io.realm.kotlin.internal.interop.SchemaMode
import io.realm.kotlin.internal.interop.SyncAfterClientResetHandler
import io.realm.kotlin.internal.interop.SyncBeforeClientResetHandler
import io.realm.kotlin.internal.interop.SyncConnectionParams
import io.realm.kotlin.internal.interop.SyncErrorCallback
import io.realm.kotlin.internal.interop.SyncSessionTransferCompletionCallback
import io.realm.kotlin.internal.interop.Timestamp
import io.realm.kotlin.internal.interop.ValueType
import io.realm.kotlin.internal.interop.getterScope
import io.realm.kotlin.internal.interop.inputScope
import io.realm.kotlin.internal.interop.realmc
import io.realm.kotlin.internal.interop.sync.AppError
import io.realm.kotlin.internal.interop.sync.AuthProvider
import io.realm.kotlin.internal.interop.sync.CoreConnectionState
import io.realm.kotlin.internal.interop.sync.CoreUserState
import io.realm.kotlin.internal.interop.sync.MetadataMode
import io.realm.kotlin.internal.interop.sync.NetworkTransport
import io.realm.kotlin.internal.interop.sync.Response
import io.realm.kotlin.internal.interop.sync.ResponseCallback
import io.realm.kotlin.internal.interop.sync.SyncError
import io.realm.kotlin.internal.interop.sync.SyncSessionResyncMode
import org.mongodb.kbson.BsonObjectId
import java.io.BufferedWriter
import java.net.URI
import java.net.http.HttpClient
import java.net.http.HttpRequest
import java.net.http.HttpResponse
import java.nio.ByteBuffer
import java.nio.file.Files
import java.nio.file.Path
import java.security.KeyStore
import java.security.cert.CertificateFactory
import java.time.Duration
import java.time.Instant
import java.util.UUID
import java.util.concurrent.CompletableFuture
import java.util.concurrent.ExecutorService
import java.util.concurrent.Executors
import java.util.concurrent.LinkedBlockingQueue
import java.util.concurrent.TimeUnit
import java.util.concurrent.TimeoutException
import javax.net.ssl.SSLContext
import javax.net.ssl.TrustManagerFactory
import kotlin.io.path.createDirectories

/** The realm-core version this suite proves compatibility with (the `.so` says so at load). */
const val EXPECTED_CORE_VERSION = "14.12.0"

// ---------------------------------------------------------------------------------------------
// Logging: core's log goes to one file per test, capped so a log storm cannot fill the disk.

/**
 * Routes realm-core's log (all threads) to the current test's file. Core logs through one
 * global callback, so one sink is active at a time (tests run one after another).
 */
object RealmLog {
    /** At most this many lines per file; the rest is counted, not written (the FLX endless-loop trap logs 270k lines/s). */
    const val MAX_LINES = 200_000

    @Volatile private var sink: Sink? = null

    init {
        val level = when (System.getProperty("realm.compat.loglevel", "debug").lowercase()) {
            "trace" -> CoreLogLevel.RLM_LOG_LEVEL_TRACE
            "detail" -> CoreLogLevel.RLM_LOG_LEVEL_DETAIL
            "info" -> CoreLogLevel.RLM_LOG_LEVEL_INFO
            else -> CoreLogLevel.RLM_LOG_LEVEL_DEBUG
        }
        RealmInterop.realm_set_log_callback(object : LogCallback {
            override fun log(logLevel: Short, categoryValue: String, message: String?) {
                sink?.write(logLevel, categoryValue, message ?: "")
            }
        })
        RealmInterop.realm_set_log_level(level)
    }

    /** Sends the log to [file] until the returned handle is closed. */
    fun to(file: Path): AutoCloseable {
        file.parent.createDirectories()
        val s = Sink(Files.newBufferedWriter(file))
        sink = s
        return AutoCloseable {
            if (sink === s) sink = null
            s.close()
        }
    }

    /** Writes out what the current sink buffered (before reading the file mid-test). */
    fun flush() {
        sink?.flush()
    }

    private class Sink(private val out: BufferedWriter) {
        private var lines = 0L
        private var dropped = 0L

        @Synchronized
        fun write(level: Short, category: String, message: String) {
            if (lines >= MAX_LINES) {
                dropped += 1
                return
            }
            lines += 1
            out.write("${System.currentTimeMillis()} [$level] $category: $message\n")
        }

        @Synchronized
        fun flush() = out.flush()

        @Synchronized
        fun close() {
            if (dropped > 0) out.write("... $dropped more lines dropped (cap $MAX_LINES)\n")
            out.close()
        }
    }
}

/** Loads librealmc.so (from -Djava.library.path) and starts the log routing; returns the core version. */
fun realmCoreVersion(): String {
    RealmLog // initializes the log callback once
    return RealmInterop.realm_get_library_version()
}

// ---------------------------------------------------------------------------------------------
// HTTP transport (the App Services side), java.net.http instead of realm-kotlin's Ktor.

/**
 * realm-core's NetworkTransport on java.net.http: HTTP/1.1, no redirects followed (core handles
 * 301/308 itself), trusting only [trustCa] when given (plus nothing else) for https.
 * Core passes the method in lower case; answers go back through [ResponseCallback] on the
 * client's executor thread (a JVM thread, as the JNI completion needs). A transport failure is
 * reported as custom code 1000, as realm-kotlin's Ktor transport does.
 */
class JavaHttpTransport(trustCa: Path?) : NetworkTransport {
    override val authorizationHeaderName: String? = "Authorization"
    override val customHeaders: Map<String, String> = emptyMap()

    /** Every request sent, "METHOD url", for assertions about what core called. */
    val requests: MutableList<String> = java.util.Collections.synchronizedList(mutableListOf())

    private val executor: ExecutorService = Executors.newFixedThreadPool(2) { r ->
        Thread(r, "realm-compat-http").apply { isDaemon = true }
    }
    private val client: HttpClient = HttpClient.newBuilder()
        .version(HttpClient.Version.HTTP_1_1)
        .followRedirects(HttpClient.Redirect.NEVER)
        .connectTimeout(Duration.ofSeconds(10))
        .executor(executor)
        .apply { if (trustCa != null) sslContext(sslContextTrusting(trustCa)) }
        .build()

    override fun sendRequest(
        method: String,
        url: String,
        headers: Map<String, String>,
        body: String,
        callback: ResponseCallback,
    ) {
        requests += "${method.uppercase()} $url"
        val request = try {
            val builder = HttpRequest.newBuilder(URI(url)).timeout(Duration.ofSeconds(30))
            for ((name, value) in headers) {
                if (name.equals("Content-Length", true) || name.equals("Host", true)) continue
                builder.header(name, value)
            }
            val publisher = if (body.isEmpty()) HttpRequest.BodyPublishers.noBody() else HttpRequest.BodyPublishers.ofString(body)
            builder.method(method.uppercase(), publisher).build()
        } catch (e: Exception) {
            executor.execute { callback.response(Response(0, CUSTOM_CODE_TRANSPORT_FAILURE, emptyMap(), e.toString())) }
            return
        }
        client.sendAsync(request, HttpResponse.BodyHandlers.ofString()).whenComplete { response, error ->
            if (error != null) {
                callback.response(Response(0, CUSTOM_CODE_TRANSPORT_FAILURE, emptyMap(), error.toString()))
            } else {
                val responseHeaders = response.headers().map().mapValues { (_, values) -> values.joinToString(", ") }
                callback.response(Response(response.statusCode(), 0, responseHeaders, response.body()))
            }
        }
    }

    override fun close() {
        executor.shutdownNow()
    }

    companion object {
        /** realm-kotlin reports I/O failures to core with this custom status code. */
        const val CUSTOM_CODE_TRANSPORT_FAILURE = 1000

        /** An SSLContext that trusts exactly the CA certificate(s) in [caPem]. */
        fun sslContextTrusting(caPem: Path): SSLContext {
            val store = KeyStore.getInstance(KeyStore.getDefaultType()).apply { load(null, null) }
            Files.newInputStream(caPem).use { input ->
                CertificateFactory.getInstance("X.509").generateCertificates(input).forEachIndexed { i, cert ->
                    store.setCertificateEntry("ca$i", cert)
                }
            }
            val tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm()).apply { init(store) }
            return SSLContext.getInstance("TLS").apply { init(null, tmf.trustManagers, null) }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// App and users.

/** An App Services call that failed, as core reported it. */
class AppException(val error: AppError) :
    Exception("${error.code}(${error.code.nativeValue}) http=${error.httpStatusCode}: ${error.message}")

/** Waits for [future] at most [seconds], naming [what] on timeout. */
fun <T> CompletableFuture<T>.await(what: String, seconds: Long = 30): T = try {
    get(seconds, TimeUnit.SECONDS)
} catch (e: TimeoutException) {
    throw AssertionError("$what did not complete within $seconds s", e)
} catch (e: java.util.concurrent.ExecutionException) {
    throw e.cause ?: e
}

private fun <T> appCallback(future: CompletableFuture<T>) = object : AppCallback<T> {
    override fun onSuccess(result: T) {
        future.complete(result)
    }

    override fun onError(error: AppError) {
        future.completeExceptionally(AppException(error))
    }
}

/**
 * One realm-core App (its own user metadata and sync client) for [appId] at [baseUrl], with its
 * files under [baseDir]. Two instances with different [baseDir]s are two independent clients.
 */
class RealmApp(
    val appId: String,
    val baseUrl: String,
    val baseDir: Path,
    trustCa: Path? = null,
) : AutoCloseable {
    val transport = JavaHttpTransport(trustCa)
    val pointer: NativePointer<RealmAppT>

    init {
        realmCoreVersion()
        baseDir.createDirectories()
        val config = RealmInterop.realm_app_config_new(
            appId = appId,
            networkTransport = RealmInterop.realm_network_transport_new(transport),
            baseUrl = baseUrl,
            connectionParams = SyncConnectionParams(
                sdkVersion = "2.3.0",
                bundleId = "dev.tandem.realmcompat",
                platformVersion = System.getProperty("os.version"),
                device = "realm-compat",
                deviceVersion = "1",
                framework = SyncConnectionParams.Runtime.JVM,
                frameworkVersion = System.getProperty("java.version"),
            ),
        )
        RealmInterop.realm_app_config_set_base_file_path(config, baseDir.toString())
        RealmInterop.realm_app_config_set_metadata_mode(config, MetadataMode.RLM_SYNC_CLIENT_METADATA_MODE_PLAINTEXT)
        val sync = RealmInterop.realm_app_config_get_sync_client_config(config)
        RealmInterop.realm_sync_client_config_set_default_binding_thread_observer(sync, appId)
        RealmInterop.realm_sync_client_config_set_user_agent_binding_info(sync, "RealmKotlin/2.3.0")
        RealmInterop.realm_sync_client_config_set_user_agent_application_info(sync, "tandem-realm-compat/0.1")
        RealmInterop.realm_sync_client_config_set_multiplex_sessions(sync, false)
        RealmInterop.realm_sync_client_config_set_connect_timeout(sync, 15_000uL)
        pointer = RealmInterop.realm_app_get(config, baseDir.toString())
    }

    /** Logs in with [credentials] (a realm_app_credentials_new_* pointer); the login includes core's profile call. */
    fun logIn(credentials: NativePointer<io.realm.kotlin.internal.interop.RealmCredentialsT>): RealmUser {
        val f = CompletableFuture<NativePointer<RealmUserT>>()
        RealmInterop.realm_app_log_in_with_credentials(pointer, credentials, appCallback(f))
        return RealmUser(this, f.await("login"))
    }

    fun logInAnonymous(reuse: Boolean = true) = logIn(RealmInterop.realm_app_credentials_new_anonymous(reuse))

    fun logInEmail(email: String, password: String) =
        logIn(RealmInterop.realm_app_credentials_new_email_password(email, password))

    /** `custom-token` login with an external JWT. */
    fun logInJwt(token: String) = logIn(RealmInterop.realm_app_credentials_new_jwt(token))

    fun logInApiKey(key: String) = logIn(RealmInterop.realm_app_credentials_new_api_key(key))

    /** `local-userpass` registration (route `.../local-userpass/register`). */
    fun registerEmail(email: String, password: String) {
        val f = CompletableFuture<Unit>()
        RealmInterop.realm_app_email_password_provider_client_register_email(pointer, email, password, appCallback(f))
        f.await("register")
    }

    /** Makes the sync client reconnect now instead of after its backoff. */
    fun reconnect() = RealmInterop.realm_app_sync_client_reconnect(pointer)

    override fun close() {
        pointer.release()
        transport.close()
    }
}

/** A logged-in (or formerly logged-in) user of [app]. */
class RealmUser(val app: RealmApp, val pointer: NativePointer<RealmUserT>) {
    val id: String get() = RealmInterop.realm_user_get_identity(pointer)
    val accessToken: String get() = RealmInterop.realm_user_get_access_token(pointer)
    val refreshToken: String get() = RealmInterop.realm_user_get_refresh_token(pointer)
    val state: CoreUserState get() = RealmInterop.realm_user_get_state(pointer)
    val isLoggedIn: Boolean get() = RealmInterop.realm_user_is_logged_in(pointer)

    /** The identities' providers from the profile (`anon-user` is RLM_AUTH_PROVIDER_ANONYMOUS). */
    val providers: List<AuthProvider> get() = RealmInterop.realm_user_get_all_identities(pointer).map { it.provider }

    /** The profile's `data` as core stores it (a JSON document string). */
    val profile: String get() = RealmInterop.realm_user_get_profile(pointer)

    /** The access token's `exp` claim (Unix seconds), decoded the way core reads it. */
    val accessTokenExp: Long get() = jwtClaim(accessToken, "exp")?.toLong() ?: error("no exp in access token")

    /** Logs out through the App (route `DELETE /auth/session`). */
    fun logOut() {
        val f = CompletableFuture<Unit>()
        RealmInterop.realm_app_log_out(app.pointer, pointer, appCallback(f))
        f.await("logout")
    }
}

/** A top-level numeric claim of a JWT's payload, or null (no JSON parser needed for numbers). */
fun jwtClaim(token: String, name: String): String? {
    val payload = String(java.util.Base64.getUrlDecoder().decode(token.split(".")[1]))
    return Regex("\"${Regex.escape(name)}\"\\s*:\\s*(-?[0-9]+)").find(payload)?.groupValues?.get(1)
}

// ---------------------------------------------------------------------------------------------
// Schema.

/** One property of a [ClassDef] (Realm's property types and collection kinds). */
data class Prop(
    val name: String,
    val type: PropertyType,
    val collection: CollectionType = CollectionType.RLM_COLLECTION_TYPE_NONE,
    val nullable: Boolean = false,
    val linkTarget: String = "",
    val primaryKey: Boolean = false,
) {
    fun info(): PropertyInfo {
        var flags = 0
        if (nullable) flags = flags or PropertyFlags.RLM_PROPERTY_NULLABLE
        if (primaryKey) flags = flags or PropertyFlags.RLM_PROPERTY_PRIMARY_KEY or PropertyFlags.RLM_PROPERTY_INDEXED
        return PropertyInfo(name = name, type = type, collectionType = collection, linkTarget = linkTarget, flags = flags)
    }
}

/**
 * One class of a Realm schema; synced top-level classes need an `_id` primary key.
 * [asymmetric] is realm-kotlin's `AsymmetricRealmObject` (`RLM_CLASS_ASYMMETRIC`): flexible
 * sync only, insert-only, uploaded and never downloaded.
 */
data class ClassDef(val name: String, val props: List<Prop>, val embedded: Boolean = false, val asymmetric: Boolean = false) {
    init {
        require(!(embedded && asymmetric)) { "class $name cannot be both embedded and asymmetric" }
    }

    val primaryKey: String get() = props.firstOrNull { it.primaryKey }?.name ?: ""

    fun info(): Pair<ClassInfo, List<PropertyInfo>> = ClassInfo(
        name = name,
        primaryKey = primaryKey,
        numProperties = props.size.toLong(),
        flags = when {
            embedded -> ClassFlags.RLM_CLASS_EMBEDDED
            asymmetric -> ClassFlags.RLM_CLASS_ASYMMETRIC
            else -> ClassFlags.RLM_CLASS_NORMAL
        },
    ) to props.map { it.info() }
}

/** `Task{_id: ObjectId PK, title: String, done: Bool, count: Int, tags: List<String>}`, the suite's default schema. */
val TASK: ClassDef = ClassDef(
    "Task",
    listOf(
        Prop("_id", PropertyType.RLM_PROPERTY_TYPE_OBJECT_ID, primaryKey = true),
        Prop("title", PropertyType.RLM_PROPERTY_TYPE_STRING),
        Prop("done", PropertyType.RLM_PROPERTY_TYPE_BOOL),
        Prop("count", PropertyType.RLM_PROPERTY_TYPE_INT),
        Prop("tags", PropertyType.RLM_PROPERTY_TYPE_STRING, CollectionType.RLM_COLLECTION_TYPE_LIST),
    ),
)

/** A PBS partition value as realm-kotlin sends it: the canonical Extended JSON of a string. */
fun partitionOf(value: String): String = "\"" + value.replace("\\", "\\\\").replace("\"", "\\\"") + "\""

// ---------------------------------------------------------------------------------------------
// Values: Kotlin values <-> realm_value_t.

/** A Decimal128 as its two IEEE 754-2008 BID words. */
data class Decimal128Bits(val low: Long, val high: Long)

/**
 * Converts a Kotlin value to a realm_value_t: null, Long/Int, Boolean, String, ByteArray,
 * Float, Double, Instant (timestamp), BsonObjectId, UUID, Decimal128Bits, or a [RealmObj] (link).
 */
fun MemTrackingAllocator.transport(value: Any?): RealmValue = when (value) {
    null -> nullTransport()
    is Long -> longTransport(value)
    is Int -> longTransport(value.toLong())
    is Boolean -> booleanTransport(value)
    is String -> stringTransport(value)
    is ByteArray -> byteArrayTransport(value)
    is Float -> floatTransport(value)
    is Double -> doubleTransport(value)
    is Instant -> timestampTransport(object : Timestamp {
        override val seconds: Long = value.epochSecond
        override val nanoSeconds: Int = value.nano
    })
    is BsonObjectId -> objectIdTransport(value.toByteArray())
    is UUID -> uuidTransport(ByteBuffer.allocate(16).putLong(value.mostSignificantBits).putLong(value.leastSignificantBits).array())
    is Decimal128Bits -> decimal128Transport(ulongArrayOf(value.low.toULong(), value.high.toULong()))
    is RealmObj -> realmObjectTransport(object : RealmObjectInterop {
        override val objectPointer: NativePointer<RealmObjectT> = value.pointer
    })
    else -> throw IllegalArgumentException("no Realm value for ${value::class}")
}

/** Converts a realm_value_t to the Kotlin value [transport] accepts ([Link] for links). */
fun RealmValue.toKotlin(): Any? = when (getType()) {
    ValueType.RLM_TYPE_NULL -> null
    ValueType.RLM_TYPE_INT -> getLong()
    ValueType.RLM_TYPE_BOOL -> getBoolean()
    ValueType.RLM_TYPE_STRING -> getString()
    ValueType.RLM_TYPE_BINARY -> getByteArray()
    ValueType.RLM_TYPE_TIMESTAMP -> getTimestamp().let { Instant.ofEpochSecond(it.seconds, it.nanoSeconds.toLong()) }
    ValueType.RLM_TYPE_FLOAT -> getFloat()
    ValueType.RLM_TYPE_DOUBLE -> getDouble()
    ValueType.RLM_TYPE_DECIMAL128 -> getDecimal128Array().let { Decimal128Bits(it[0].toLong(), it[1].toLong()) }
    ValueType.RLM_TYPE_OBJECT_ID -> BsonObjectId(getObjectIdBytes())
    ValueType.RLM_TYPE_UUID -> ByteBuffer.wrap(getUUIDBytes()).let { UUID(it.long, it.long) }
    ValueType.RLM_TYPE_LINK -> getLink()
    else -> throw IllegalStateException("unsupported value type ${getType()}")
}

/** A live object of a [SyncedRealm]. */
class RealmObj(val realm: SyncedRealm, val className: String, val pointer: NativePointer<RealmObjectT>)

// ---------------------------------------------------------------------------------------------
// Synced realms.

/**
 * One object of a compensating write as core reported it (`realm_sync_error_compensating_write_info_t`):
 * the server's [reason], the class ([objectName]) and the [primaryKey] (converted with
 * [toKotlin] inside the error callback: core's value lives only as long as the callback).
 */
data class CompensatingWrite(val reason: String, val objectName: String, val primaryKey: Any?)

/** A sync error that carried compensating writes ([writes] in core's order), with the error itself. */
class CompensatingWriteError(val error: SyncError, val writes: List<CompensatingWrite>)

/** What the client reset handlers saw. */
data class ResetEvent(val phase: String, val didRecover: Boolean? = null)

/** Options for [SyncedRealm.open]. */
data class OpenOptions(
    /**
     * `realm_sync_config_set_ssl_trust_certificate_path`: the CA to trust for wss (null: core's
     * bundled roots). The file must exist: core's sync thread aborts the process otherwise.
     */
    val trustCa: Path? = null,
    /** Client reset mode; realm-kotlin's default strategy is recover-or-discard. */
    val resyncMode: SyncSessionResyncMode = SyncSessionResyncMode.RLM_SYNC_SESSION_RESYNC_MODE_RECOVER_OR_DISCARD,
)

/**
 * A synced realm opened by realm-core: [open] creates a partition-based one, its config made
 * like realm-kotlin's SyncConfigurationImpl (schema mode ADDITIVE_DISCOVERED, partition as EJSON,
 * error handler, client reset handlers), then realm_open with a generic scheduler.
 * [FlxRealm] is the flexible sync variant: the same, but for the sync config.
 */
open class SyncedRealm protected constructor(
    val user: RealmUser,
    val path: Path,
    opened: Opened,
) : AutoCloseable {
    val realm: NativePointer<LiveRealmT> = opened.realm
    val errors: LinkedBlockingQueue<SyncError> = opened.errors
    val resets: LinkedBlockingQueue<ResetEvent> = opened.resets

    /**
     * The sync errors that came with compensating writes (`RLM_ERR_SYNC_COMPENSATING_WRITE`),
     * with their objects; each is in [errors] too.
     */
    val compensatingWrites: LinkedBlockingQueue<CompensatingWriteError> = opened.compensatingWrites
    private val session: NativePointer<RealmSyncSessionT> = RealmInterop.realm_sync_session_get(realm)
    private val connectionStates = LinkedBlockingQueue<CoreConnectionState>()
    private val connectionToken = RealmInterop.realm_sync_session_register_connection_state_change_callback(session) { _, new ->
        connectionStates.add(new)
    }
    private var closed = false

    /** What [openNative] made: the live realm and the queues its sync config's callbacks fill. */
    class Opened(
        val realm: NativePointer<LiveRealmT>,
        val errors: LinkedBlockingQueue<SyncError>,
        val resets: LinkedBlockingQueue<ResetEvent>,
        val compensatingWrites: LinkedBlockingQueue<CompensatingWriteError>,
    )

    companion object {
        /** Opens the partition-based realm of [partition] (EJSON, see [partitionOf]) at [path]. */
        fun open(
            user: RealmUser,
            partition: String,
            schema: List<ClassDef>,
            path: Path,
            options: OpenOptions = OpenOptions(),
        ): SyncedRealm = SyncedRealm(
            user,
            path,
            openNative(schema, path, options) { RealmInterop.realm_sync_config_new(user.pointer, partition) },
        )

        /**
         * Opens a synced realm at [path] whose sync config [newSyncConfig] makes
         * (realm_sync_config_new or realm_flx_sync_config_new); everything else is the same for
         * both sync modes, as in realm-kotlin's SyncConfigurationImpl.
         */
        internal fun openNative(
            schema: List<ClassDef>,
            path: Path,
            options: OpenOptions,
            newSyncConfig: () -> NativePointer<RealmSyncConfigT>,
        ): Opened {
            path.parent.createDirectories()
            val errors = LinkedBlockingQueue<SyncError>()
            val resets = LinkedBlockingQueue<ResetEvent>()
            val compensating = LinkedBlockingQueue<CompensatingWriteError>()
            val config = RealmInterop.realm_config_new()
            RealmInterop.realm_config_set_path(config, path.toString())
            RealmInterop.realm_config_set_schema(config, RealmInterop.realm_schema_new(schema.map { it.info() }))
            RealmInterop.realm_config_set_schema_mode(config, SchemaMode.RLM_SCHEMA_MODE_ADDITIVE_DISCOVERED)
            RealmInterop.realm_config_set_schema_version(config, 0)
            val sync = newSyncConfig()
            options.trustCa?.let { realmc.realm_sync_config_set_ssl_trust_certificate_path(with(RealmInterop) { sync.cptr() }, it.toString()) }
            RealmInterop.realm_sync_config_set_error_handler(sync, SyncErrorCallback { _, error ->
                // The compensating writes' primary keys point into core's error struct, which
                // is freed when this callback returns: convert them here (realm-kotlin does too).
                val writes = error.compensatingWrites.map { CompensatingWrite(it.reason, it.objectName, it.primaryKey.toKotlin()) }
                if (writes.isNotEmpty() || error.errorCode.errorCode == ErrorCode.RLM_ERR_SYNC_COMPENSATING_WRITE) {
                    compensating.add(CompensatingWriteError(error, writes))
                }
                errors.add(error)
            })
            RealmInterop.realm_sync_config_set_resync_mode(sync, options.resyncMode)
            RealmInterop.realm_sync_config_set_before_client_reset_handler(sync, object : SyncBeforeClientResetHandler {
                override fun onBeforeReset(realmBefore: NativePointer<FrozenRealmT>) {
                    resets.add(ResetEvent("before"))
                }
            })
            RealmInterop.realm_sync_config_set_after_client_reset_handler(sync, object : SyncAfterClientResetHandler {
                override fun onAfterReset(
                    realmBefore: NativePointer<FrozenRealmT>,
                    realmAfter: NativePointer<LiveRealmT>,
                    didRecover: Boolean,
                ) {
                    // As realm-kotlin does: the after-realm is handed over writable and committed.
                    RealmInterop.realm_begin_write(realmAfter)
                    RealmInterop.realm_commit(realmAfter)
                    resets.add(ResetEvent("after", didRecover))
                }
            })
            RealmInterop.realm_config_set_sync_config(config, sync)
            val realm = RealmInterop.realm_open(config, RealmInterop.realm_create_scheduler()).first
            return Opened(realm, errors, resets, compensating)
        }
    }

    /** Runs [block] in a write transaction and commits it (rolls back if it throws). */
    fun <T> write(block: Access.() -> T): T {
        RealmInterop.realm_begin_write(realm)
        try {
            val result = Access().block()
            RealmInterop.realm_commit(realm)
            return result
        } catch (e: Throwable) {
            if (RealmInterop.realm_is_in_transaction(realm)) RealmInterop.realm_rollback(realm)
            throw e
        }
    }

    /** Reads the newest local version (realm_refresh first: the generic scheduler does not auto-refresh). */
    fun <T> read(block: Access.() -> T): T {
        RealmInterop.realm_refresh(realm)
        return Access().block()
    }

    /** Waits until everything committed locally was acknowledged by the server. */
    fun waitForUpload(seconds: Long = 30) = transfer("upload", seconds) { s, cb ->
        RealmInterop.realm_sync_session_wait_for_upload_completion(s, cb)
    }

    /** Waits until the client has everything the server had when asked (MARK round trip). */
    fun waitForDownload(seconds: Long = 30) = transfer("download", seconds) { s, cb ->
        RealmInterop.realm_sync_session_wait_for_download_completion(s, cb)
    }

    /** Upload then download, then refresh: the usual "sync now". */
    fun sync(seconds: Long = 30) {
        waitForUpload(seconds)
        waitForDownload(seconds)
        RealmInterop.realm_refresh(realm)
    }

    private fun transfer(
        what: String,
        seconds: Long,
        call: (NativePointer<RealmSyncSessionT>, SyncSessionTransferCompletionCallback) -> Unit,
    ) {
        val f = CompletableFuture<CoreError?>()
        call(session, object : SyncSessionTransferCompletionCallback {
            override fun invoke(error: CoreError?) {
                f.complete(error)
            }
        })
        val error = f.await("wait for $what completion ($path)", seconds)
        if (error != null) throw AssertionError("wait for $what failed: ${error.errorCode} ${error.message}")
    }

    /** Stops syncing (core keeps the session paused until [resume]). */
    fun pause() = RealmInterop.realm_sync_session_pause(session)

    fun resume() = RealmInterop.realm_sync_session_resume(session)

    val connectionState: CoreConnectionState get() = RealmInterop.realm_sync_connection_state(session)

    /** Waits until the connection reaches [state] (at most [seconds]). */
    fun awaitConnectionState(state: CoreConnectionState, seconds: Long = 30) {
        val deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(seconds)
        while (connectionState != state) {
            if (System.nanoTime() > deadline) throw AssertionError("connection did not become $state in $seconds s (is $connectionState)")
            connectionStates.poll(100, TimeUnit.MILLISECONDS)
        }
    }

    /** The first sync error matching [predicate] within [seconds] (errors that do not match are kept). */
    fun awaitError(seconds: Long = 30, predicate: (SyncError) -> Boolean = { true }): SyncError {
        val deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(seconds)
        val skipped = mutableListOf<SyncError>()
        try {
            while (true) {
                val left = deadline - System.nanoTime()
                if (left <= 0) throw AssertionError("no matching sync error in $seconds s; saw ${skipped.map { describe(it) }}")
                val e = errors.poll(left, TimeUnit.NANOSECONDS) ?: continue
                if (predicate(e)) return e
                skipped += e
            }
        } finally {
            errors.addAll(skipped)
        }
    }

    /** The next compensating write error within [seconds] (it is also in [errors]; [awaitError] may see it too). */
    fun awaitCompensatingWrite(seconds: Long = 30): CompensatingWriteError =
        compensatingWrites.poll(seconds, TimeUnit.SECONDS)
            ?: throw AssertionError("no compensating write error in $seconds s; sync errors: ${errors.map { describe(it) }}")

    /** The client reset event of [phase] within [seconds]. */
    fun awaitReset(phase: String, seconds: Long = 30): ResetEvent {
        val deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(seconds)
        while (true) {
            val left = deadline - System.nanoTime()
            if (left <= 0) throw AssertionError("no client reset '$phase' in $seconds s; sync errors: ${errors.map { describe(it) }}")
            val e = resets.poll(left, TimeUnit.NANOSECONDS) ?: continue
            if (e.phase == phase) return e
        }
    }

    /** Releases the session and its token before realm_close (otherwise the session never deactivates). */
    override fun close() {
        if (closed) return
        closed = true
        connectionToken.release()
        session.release()
        RealmInterop.realm_close(realm)
        realm.release()
    }

    /** Object access inside [read] and [write]. */
    inner class Access {
        private fun classKey(name: String): ClassKey =
            RealmInterop.realm_find_class(realm, name) ?: throw IllegalArgumentException("no class $name in ${path.fileName}")

        private fun prop(obj: RealmObj, name: String): PropertyKey =
            RealmInterop.realm_get_col_key(realm, classKey(obj.className), name)

        /** Creates an object with primary key [pk] and sets [fields]. */
        fun create(className: String, pk: Any, vararg fields: Pair<String, Any?>): RealmObj {
            val ptr = inputScope {
                RealmInterop.realm_object_create_with_primary_key(realm, classKey(className), transport(pk))
            }
            return RealmObj(this@SyncedRealm, className, ptr).also { obj -> fields.forEach { (k, v) -> set(obj, k, v) } }
        }

        /** The object with primary key [pk], or null. */
        fun find(className: String, pk: Any): RealmObj? = inputScope {
            RealmInterop.realm_object_find_with_primary_key(realm, classKey(className), transport(pk))
        }?.let { RealmObj(this@SyncedRealm, className, it) }

        /** The object [pk] or a failed assertion. */
        fun get(className: String, pk: Any): RealmObj = find(className, pk) ?: throw AssertionError("no $className with _id $pk in ${path.fileName}")

        fun set(obj: RealmObj, name: String, value: Any?) = inputScope {
            RealmInterop.realm_set_value(obj.pointer, prop(obj, name), transport(value), false)
        }

        fun value(obj: RealmObj, name: String): Any? = getterScope {
            with(RealmInterop) { realm_get_value(obj.pointer, prop(obj, name)) }.toKotlin()
        }

        /** Realm's counter increment (an AddInteger instruction). */
        fun addInt(obj: RealmObj, name: String, delta: Long) = RealmInterop.realm_object_add_int(obj.pointer, prop(obj, name), delta)

        fun delete(obj: RealmObj) = RealmInterop.realm_object_delete(obj.pointer)

        /** The object a [Link] points to. */
        fun resolve(className: String, link: Link): RealmObj = RealmObj(this@SyncedRealm, className, RealmInterop.realm_get_object(realm, link))

        /** Creates the embedded object of property [name] and returns it. */
        fun setEmbedded(obj: RealmObj, name: String, className: String): RealmObj =
            RealmObj(this@SyncedRealm, className, RealmInterop.realm_set_embedded(obj.pointer, prop(obj, name)))

        fun list(obj: RealmObj, name: String): NativePointer<RealmListT> = RealmInterop.realm_get_list(obj.pointer, prop(obj, name))

        fun listValues(obj: RealmObj, name: String): List<Any?> {
            val list = list(obj, name)
            return (0 until RealmInterop.realm_list_size(list)).map { i ->
                getterScope { with(RealmInterop) { realm_list_get(list, i) }.toKotlin() }
            }
        }

        fun listInsert(obj: RealmObj, name: String, index: Long, value: Any?) = inputScope {
            RealmInterop.realm_list_add(list(obj, name), index, transport(value))
        }

        fun listErase(obj: RealmObj, name: String, index: Long) = RealmInterop.realm_list_erase(list(obj, name), index)

        fun set(obj: RealmObj, name: String): NativePointer<RealmSetT> = RealmInterop.realm_get_set(obj.pointer, prop(obj, name))

        fun setValues(obj: RealmObj, name: String): List<Any?> {
            val set = set(obj, name)
            return (0 until RealmInterop.realm_set_size(set)).map { i ->
                getterScope { with(RealmInterop) { realm_set_get(set, i) }.toKotlin() }
            }
        }

        fun setInsert(obj: RealmObj, name: String, value: Any?): Boolean = inputScope {
            RealmInterop.realm_set_insert(set(obj, name), transport(value))
        }

        fun dictionary(obj: RealmObj, name: String): NativePointer<RealmMapT> = RealmInterop.realm_get_dictionary(obj.pointer, prop(obj, name))

        fun dictionaryValues(obj: RealmObj, name: String): Map<String, Any?> {
            val map = dictionary(obj, name)
            return (0 until RealmInterop.realm_dictionary_size(map).toInt()).associate { i ->
                getterScope {
                    val (k, v) = with(RealmInterop) { realm_dictionary_get(map, i) }
                    k.getString() to v.toKotlin()
                }
            }
        }

        fun dictionaryPut(obj: RealmObj, name: String, key: String, value: Any?) {
            val map = dictionary(obj, name)
            inputScope { with(RealmInterop) { realm_dictionary_insert(map, transport(key), transport(value)) } }
        }

        /**
         * Number of objects in [className]'s table (`realm_get_num_objects`, no query: core
         * refuses queries on asymmetric classes' tables).
         */
        fun size(className: String): Long {
            val out = LongArray(1)
            check(realmc.realm_get_num_objects(with(RealmInterop) { realm.cptr() }, classKey(className).key, out)) { "realm_get_num_objects($className) failed" }
            return out[0]
        }

        /** Number of objects of [className]. */
        fun count(className: String): Long = inputScope {
            val query = RealmInterop.realm_query_parse(realm, classKey(className), "TRUEPREDICATE", queryArgsOf(emptyList()))
            RealmInterop.realm_query_count(query)
        }

        /** The primary keys of all objects of [className]. */
        fun primaryKeys(className: String): List<Any?> {
            val results = inputScope {
                RealmInterop.realm_query_find_all(
                    RealmInterop.realm_query_parse(realm, classKey(className), "TRUEPREDICATE", queryArgsOf(emptyList())),
                )
            }
            return (0 until RealmInterop.realm_results_count(results)).map { i ->
                val link = getterScope { with(RealmInterop) { realm_results_get(results, i) }.getLink() }
                value(resolve(className, link), "_id")
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Flexible sync realms.

/** One subscription as core stores it; [query] is core's serialisation of the RQL, the text it sends to the server. */
data class Subscription(val name: String?, val className: String, val query: String)

/** A subscription set's version and state as [FlxRealm.awaitSubscriptions] found it ([error] only in state ERROR). */
data class SubscriptionResult(val version: Long, val state: CoreSubscriptionSetState, val error: String?)

/**
 * A flexible sync realm (protocol `com.mongodb.realm-query-sync`): a [SyncedRealm] (write, read,
 * waits, pause/resume, errors) opened with `realm_flx_sync_config_new(user)` instead of a
 * partition, plus its subscriptions, updated the way realm-kotlin's SubscriptionSetImpl.update
 * does (make the latest set mutable, insert_or_assign/erase, commit, release the mutable set).
 * A commit makes a new set version; core sends it to the server in a QUERY message and the set
 * goes Pending, then Bootstrapping, AwaitingMark and Complete, or Error if the server refuses it.
 */
class FlxRealm private constructor(user: RealmUser, path: Path, opened: Opened) : SyncedRealm(user, path, opened) {
    companion object {
        fun open(user: RealmUser, schema: List<ClassDef>, path: Path, options: OpenOptions = OpenOptions()): FlxRealm =
            FlxRealm(user, path, openNative(schema, path, options) { RealmInterop.realm_flx_sync_config_new(user.pointer) })
    }

    /** The changes of one [updateSubscriptions] (a mutable copy of the latest set). */
    inner class SubscriptionUpdate internal constructor(private val set: NativePointer<RealmMutableSubscriptionSetT>) {
        /**
         * Adds subscription [name] (or replaces its query): [query] in RQL on [className], parsed
         * with realm_query_parse (sort/distinct/limit clauses are kept: core adds the query's
         * ordering). Returns whether it was new.
         */
        fun add(name: String, className: String, query: String): Boolean = inputScope {
            val classKey = RealmInterop.realm_find_class(realm, className) ?: throw IllegalArgumentException("no class $className in ${path.fileName}")
            val parsed = RealmInterop.realm_query_parse(realm, classKey, query, queryArgsOf(emptyList()))
            try {
                val (sub, inserted) = RealmInterop.realm_sync_subscriptionset_insert_or_assign(set, parsed, name)
                sub.release()
                inserted
            } finally {
                parsed.release()
            }
        }

        /** Removes subscription [name]; returns whether there was one. */
        fun remove(name: String): Boolean = RealmInterop.realm_sync_subscriptionset_erase_by_name(set, name)

        /** Removes every subscription; returns whether there was any. */
        fun removeAll(): Boolean = RealmInterop.realm_sync_subscriptionset_clear(set)
    }

    /** Applies [block] to a mutable copy of the latest subscription set and commits it; returns the new set's version. */
    fun updateSubscriptions(block: SubscriptionUpdate.() -> Unit): Long {
        // realm-core 14.12 race (FINDINGS.md): a commit made while the sync thread writes to the
        // subscription store (just after the server's IDENT) can throw RLM_ERR_BAD_VERSION
        // "Unable to lock version N" (N a database version) after the set was committed, when
        // core reopens it. The set is there then: its version is the latest one.
        val before = latestVersion
        try {
            return updateSubscriptionsOnce(block)
        } catch (e: Exception) {
            if (e.message?.contains("Unable to lock version") != true) throw e
            RealmInterop.realm_refresh(realm)
            val after = latestVersion
            if (after <= before) throw e
            return after
        }
    }

    private fun updateSubscriptionsOnce(block: SubscriptionUpdate.() -> Unit): Long {
        val latest = RealmInterop.realm_sync_get_latest_subscriptionset(realm)
        try {
            val mutable = RealmInterop.realm_sync_make_subscriptionset_mutable(latest)
            try {
                SubscriptionUpdate(mutable).block()
                val committed = RealmInterop.realm_sync_subscriptionset_commit(mutable)
                try {
                    return RealmInterop.realm_sync_subscriptionset_version(committed)
                } finally {
                    committed.release()
                }
            } finally {
                // As realm-kotlin does: the mutable set holds a write transaction on the file until released.
                mutable.release()
            }
        } finally {
            latest.release()
        }
    }

    /** Adds (or replaces) the named subscriptions `(name, className, query)` in one new set; returns its version. */
    fun subscribe(vararg subs: Triple<String, String, String>): Long = updateSubscriptions {
        subs.forEach { (name, className, query) -> add(name, className, query) }
    }

    private fun <T> latest(block: (NativePointer<RealmSubscriptionSetT>) -> T): T {
        val set = RealmInterop.realm_sync_get_latest_subscriptionset(realm)
        try {
            return block(set)
        } finally {
            set.release()
        }
    }

    /** The version of the latest (newest committed) subscription set; 0 is the empty set core makes at open. */
    val latestVersion: Long get() = latest { RealmInterop.realm_sync_subscriptionset_version(it) }

    /**
     * The version of the active set: the newest one that reached Complete (the one core names in
     * its IDENT on a reconnect). RealmInterop has no wrapper; the SWIG function has.
     */
    val activeVersion: Long
        get() {
            val set = LongPointerWrapper<RealmSubscriptionSetT>(realmc.realm_sync_get_active_subscription_set(with(RealmInterop) { realm.cptr() }), true)
            try {
                return RealmInterop.realm_sync_subscriptionset_version(set)
            } finally {
                set.release()
            }
        }

    /** The state of the latest subscription set, as stored now. */
    fun subscriptionState(): CoreSubscriptionSetState = latest { RealmInterop.realm_sync_subscriptionset_state(it) }

    /** The subscriptions of the latest set, in core's order, with core's serialised queries. */
    fun subscriptions(): List<Subscription> = latest { set ->
        (0 until RealmInterop.realm_sync_subscriptionset_size(set)).map { i ->
            val sub = RealmInterop.realm_sync_subscription_at(set, i)
            try {
                Subscription(
                    RealmInterop.realm_sync_subscription_name(sub),
                    RealmInterop.realm_sync_subscription_object_class_name(sub),
                    RealmInterop.realm_sync_subscription_query_string(sub),
                )
            } finally {
                sub.release()
            }
        }
    }

    /**
     * Waits until the latest subscription set is Complete or Error and returns its version, state
     * and (for Error) core's error string; then refreshes the realm so reads see the bootstrap.
     * Polls (realm_sync_subscriptionset_refresh every 20 ms) on this thread rather than using
     * realm_sync_on_subscriptionset_state_change_async, so no callback crosses threads. Fails at
     * once if the session reports a fatal sync error (it would never complete), and after
     * [seconds] naming the state it was stuck in.
     */
    fun awaitSubscriptions(seconds: Long = 30): SubscriptionResult {
        val set = RealmInterop.realm_sync_get_latest_subscriptionset(realm)
        try {
            val deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(seconds)
            val version = RealmInterop.realm_sync_subscriptionset_version(set)
            while (true) {
                RealmInterop.realm_sync_subscriptionset_refresh(set)
                val state = RealmInterop.realm_sync_subscriptionset_state(set)
                when (state) {
                    CoreSubscriptionSetState.RLM_SYNC_SUBSCRIPTION_COMPLETE -> {
                        RealmInterop.realm_refresh(realm)
                        return SubscriptionResult(version, state, null)
                    }
                    CoreSubscriptionSetState.RLM_SYNC_SUBSCRIPTION_ERROR ->
                        return SubscriptionResult(version, state, RealmInterop.realm_sync_subscriptionset_error_str(set))
                    CoreSubscriptionSetState.RLM_SYNC_SUBSCRIPTION_SUPERSEDED ->
                        throw AssertionError("subscription set $version was superseded while waiting for it ($path)")
                    else -> {}
                }
                errors.firstOrNull { it.isFatal }?.let {
                    throw AssertionError("subscription set $version is $state and the session stopped with a fatal sync error: ${describe(it)}")
                }
                if (System.nanoTime() > deadline) {
                    throw AssertionError(
                        "subscription set $version still $state after $seconds s (connection $connectionState); " +
                            "sync errors: ${errors.map { describe(it) }}",
                    )
                }
                Thread.sleep(20)
            }
        } finally {
            set.release()
        }
    }
}

/** One line describing a sync error for assertion messages. */
fun describe(e: SyncError): String =
    "${e.errorCode.errorCode}(${e.errorCode.errorCodeNativeValue}) fatal=${e.isFatal} reset=${e.isClientResetRequested}: ${e.errorCode.message}" +
        if (e.compensatingWrites.isEmpty()) "" else " (${e.compensatingWrites.size} compensating writes)"
