// Test fixtures: the schema, and a real `tandem-server` with TLS and HS256 tokens
// (mirrors bindings/python/tests/conftest.py).

package dev.tandem

import java.io.File
import java.net.InetSocketAddress
import java.net.ServerSocket
import java.nio.file.Path
import java.util.Base64
import java.util.concurrent.TimeUnit
import javax.crypto.Mac
import javax.crypto.spec.SecretKeySpec

val SECRET = "kotlin binding tests secret 32b!".toByteArray()

/**
 * The command line of a child JVM running [mainClass] with [args]: this JVM's java and class
 * path, and its JNA and uniffi settings (`jna.library.path` from the pom; not the two
 * properties JNA sets itself once loaded).
 */
fun childJvm(mainClass: String, vararg args: String): List<String> {
    val java = File(System.getProperty("java.home"), "bin/java").path
    val properties = System.getProperties().stringPropertyNames()
        .filter { it.startsWith("jna.") || it.startsWith("uniffi.") }
        .filter { it != "jna.loaded" && it != "jna.platform.library.path" }
        .sorted()
        .map { "-D$it=${System.getProperty(it)}" }
    return listOf(java, *properties.toTypedArray(), "-cp", System.getProperty("java.class.path"), mainClass, *args)
}

fun taskClasses(): List<ClassSpec> {
    fun prop(name: String, type: PropertyType, collection: Collection = Collection.SINGLE) =
        PropertySpec(name = name, propertyType = type, nullable = false, collection = collection, linkTarget = null)
    return listOf(
        ClassSpec(
            name = "Task",
            primaryKey = "_id",
            properties = listOf(
                prop("_id", PropertyType.INT),
                prop("title", PropertyType.STRING),
                prop("done", PropertyType.BOOL),
                prop("count", PropertyType.INT),
                prop("tags", PropertyType.STRING, Collection.LIST),
            ),
        ),
    )
}

fun intKey(i: Long): Key = Key.Int(i)

fun str(s: String): Value = Value.String(s)

private fun b64(data: ByteArray): String = Base64.getUrlEncoder().withoutPadding().encodeToString(data)

/** An HS256 JWT for these server paths, for user [sub] (`%%user.id` in flexible sync rules). */
fun makeToken(paths: List<String>, seconds: Long = 3600, secret: ByteArray = SECRET, sub: String = "kt"): String {
    val header = b64("""{"alg":"HS256","typ":"JWT"}""".toByteArray())
    val exp = System.currentTimeMillis() / 1000 + seconds
    val pathsJson = paths.joinToString(",") { "\"$it\"" }
    val claims = b64("""{"sub":"$sub","exp":$exp,"paths":[$pathsJson]}""".toByteArray())
    val mac = Mac.getInstance("HmacSHA256")
    mac.init(SecretKeySpec(secret, "HmacSHA256"))
    val signature = b64(mac.doFinal("$header.$claims".toByteArray()))
    return "$header.$claims.$signature"
}

/**
 * A real tandem-server on a free loopback port, TLS with a throwaway certificate; [extraArgs]
 * are added to its command line (e.g. `--app-id`, `--flx-rules`). Given the [port] and [dir] of
 * a server that was closed, it starts again there with the same certificate (and the data left
 * in `dir/data`): a restart the clients reconnect to.
 */
class TestServer(dir: Path, extraArgs: List<String> = emptyList(), port: Int? = null) : AutoCloseable {
    val url: String
    val ca: String
    val port: Int
    private val process: Process

    init {
        val binary = System.getProperty("tandem.server.bin")
            ?: error("set the system property tandem.server.bin (mvn -Dtandem.server.bin=...)")
        check(File(binary).canExecute()) { "build the server first: cargo build --features server ($binary missing)" }
        val cert = dir.resolve("cert.pem").toString()
        val key = dir.resolve("key.pem").toString()
        if (!File(cert).exists()) generateCertificate(cert, key)
        val secret = dir.resolve("secret").toFile()
        secret.writeBytes(SECRET)
        this.port = port ?: ServerSocket().use {
            it.bind(InetSocketAddress("127.0.0.1", 0))
            it.localPort
        }
        process = ProcessBuilder(
            binary, "--listen", "127.0.0.1:${this.port}", "--data-dir", dir.resolve("data").toString(),
            "--tls-cert", cert, "--tls-key", key, "--jwt-secret-file", secret.toString(),
            *extraArgs.toTypedArray(),
        ).redirectOutput(ProcessBuilder.Redirect.DISCARD).start()
        val stderr = process.errorStream.bufferedReader()
        // The server logs a few lines (e.g. its file descriptor limit) before "listening".
        val seen = mutableListOf<String>()
        while (true) {
            val line = stderr.readLine() ?: error("tandem-server did not start: ${seen.joinToString("\n")}")
            seen += line
            if ("listening" in line) break
            check(seen.size < 50) { "tandem-server did not start: ${seen.joinToString("\n")}" }
        }
        // Keep draining its log so that it never blocks on a full pipe.
        // (The pipe closes when the server is stopped.)
        Thread {
            try {
                stderr.useLines { lines -> lines.forEach { _ -> } }
            } catch (_: java.io.IOException) {
            }
        }.apply { isDaemon = true }.start()
        url = "wss://localhost:${this.port}/"
        ca = cert
    }

    private fun generateCertificate(cert: String, key: String) {
        val openssl = ProcessBuilder(
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost", "-addext", "basicConstraints=critical,CA:FALSE",
        ).redirectErrorStream(true).start()
        val opensslOut = openssl.inputStream.readBytes().decodeToString()
        check(openssl.waitFor() == 0) { "openssl failed: $opensslOut" }
    }

    fun options(path: String = "/todos", token: String? = null) = SyncOptions(
        url = url,
        path = path,
        token = token ?: makeToken(listOf(path)),
        caFile = ca,
        allowInsecure = false,
        clientReset = ClientResetMode.RECOVER_OR_DISCARD,
    )

    /** Flexible sync options (path `/flx`) with a token for user [user]. */
    fun flexibleOptions(user: String = "kt") = SyncOptions.flexible(
        url = url,
        token = makeToken(listOf(FLEXIBLE_SYNC_PATH), sub = user),
        caFile = ca,
    )

    override fun close() {
        process.destroyForcibly()
        process.waitFor(10, TimeUnit.SECONDS)
    }
}

/** Polls [check] until it holds, failing after [seconds]. */
fun eventually(seconds: Long = 30, check: () -> Boolean) {
    val deadline = System.nanoTime() + seconds * 1_000_000_000
    while (!check()) {
        if (System.nanoTime() > deadline) throw AssertionError("timed out")
        Thread.sleep(10)
    }
}
