// A real tandem-server process for the realm-core compatibility tests: a free loopback port, a
// data directory per test, plain http/ws or TLS with the test CA that run.sh makes, and the App
// Services flags (--app-id and friends). Restartable on the same port and data directory.

package dev.tandem.realmcompat

import java.io.File
import java.net.InetSocketAddress
import java.net.ServerSocket
import java.net.Socket
import java.nio.file.Files
import java.nio.file.Path
import java.nio.file.StandardCopyOption
import java.util.Base64
import java.util.concurrent.CompletableFuture
import java.util.concurrent.TimeUnit
import javax.crypto.Mac
import javax.crypto.spec.SecretKeySpec
import kotlin.io.path.createDirectories
import kotlin.io.path.exists
import kotlin.io.path.writeBytes
import kotlin.io.path.writeText

/** The test CA and the server certificate it signed (made by run.sh with openssl). */
object TestTls {
    /** PEM of the CA that signed [cert]; the clients trust only this. */
    val ca: Path get() = pathProperty("realm.compat.ca")

    /** The server's certificate chain (CN and SAN `localhost`). */
    val cert: Path get() = pathProperty("realm.compat.cert")

    /** The server certificate's private key. */
    val key: Path get() = pathProperty("realm.compat.key")

    private fun pathProperty(name: String): Path {
        val value = System.getProperty(name)?.takeIf { it.isNotEmpty() }
            ?: error("set -D$name (tests/realm-compat/run.sh makes the test CA and passes it)")
        return Path.of(value).also { check(it.exists()) { "$name: $it does not exist" } }
    }
}

/** HS256 JWTs, for `custom-token` logins (the fixture gives the server the same secret). */
object Jwt {
    private fun b64(data: ByteArray): String = Base64.getUrlEncoder().withoutPadding().encodeToString(data)

    /** A compact JWS `header.payload.signature`; [claimsJson] is the payload JSON object. */
    fun hs256(secret: ByteArray, claimsJson: String): String {
        val header = b64("""{"alg":"HS256","typ":"JWT"}""".toByteArray())
        val payload = b64(claimsJson.toByteArray())
        val mac = Mac.getInstance("HmacSHA256")
        mac.init(SecretKeySpec(secret, "HmacSHA256"))
        return "$header.$payload.${b64(mac.doFinal("$header.$payload".toByteArray()))}"
    }

    /** An HS256 token with `sub`, `iat` and `exp` (now + [seconds]). */
    fun subject(secret: ByteArray, sub: String, seconds: Long = 3600, extra: String = ""): String {
        val now = System.currentTimeMillis() / 1000
        val more = if (extra.isEmpty()) "" else ",$extra"
        return hs256(secret, """{"sub":"$sub","iat":$now,"exp":${now + seconds}$more}""")
    }
}

/**
 * How to start tandem-server. [extraArgs] are appended verbatim (e.g. `--auth-providers`,
 * `--access-token-lifetime 10`, `--sync-permissions user-id`).
 */
data class ServerOptions(
    val appId: String = "tandem-compat",
    val tls: Boolean = false,
    /** Pass `--custom-token-secret-file` (the provider list itself goes in [extraArgs]). */
    val customTokens: Boolean = false,
    /**
     * Flexible sync rules (the JSON of `src/server/realm/rules.rs`): written to
     * `<server dir>/flx-rules.json` and passed as `--flx-rules`; null: no rules file (every
     * object readable and writable).
     */
    val flxRules: String? = null,
    val extraArgs: List<String> = emptyList(),
)

/**
 * One tandem-server process in [dir] (`dir/data` is its data directory, `dir/server-N.log` the
 * log of its N-th start). The port is chosen once and kept across [restart]s.
 */
class TandemServer(val dir: Path, val options: ServerOptions = ServerOptions()) : AutoCloseable {
    /** The secret file given to `--jwt-secret-file` (signs the server's own tokens). */
    val jwtSecret: ByteArray = "realm-compat server secret, 32 bytes".toByteArray()

    /** The secret file given to `--custom-token-secret-file` (verifies `custom-token` logins). */
    val customTokenSecret: ByteArray = "realm-compat custom-token secret!".toByteArray()

    val port: Int = freePort()
    val dataDir: Path = dir.resolve("data")
    val appId: String get() = options.appId

    /** The App's base URL as an SDK would configure it. */
    val baseUrl: String get() = if (options.tls) "https://localhost:$port" else "http://127.0.0.1:$port"

    private var process: Process? = null
    private var starts = 0
    private var secretFile: Path = writeSecret("jwt-secret", jwtSecret)
    private val customSecretFile: Path = writeSecret("custom-token-secret", customTokenSecret)

    /** The `--flx-rules` file, when [ServerOptions.flxRules] is given. */
    val flxRulesFile: Path? = options.flxRules?.let { rules -> dir.resolve("flx-rules.json").also { it.writeText(rules) } }

    init {
        dataDir.createDirectories()
    }

    private fun writeSecret(name: String, secret: ByteArray): Path =
        dir.createDirectories().resolve(name).also { it.writeBytes(secret) }

    /** Replaces the `--jwt-secret-file` content used by the next [start] (tokens signed with the old one stop verifying). */
    fun rotateJwtSecret(secret: ByteArray) {
        secretFile = writeSecret("jwt-secret-${starts + 1}", secret)
    }

    /** The full command line of the next start. */
    fun command(): List<String> {
        val args = mutableListOf(
            serverBinary(), "--listen", "127.0.0.1:$port", "--data-dir", dataDir.toString(),
            "--app-id", options.appId, "--jwt-secret-file", secretFile.toString(),
        )
        if (options.tls) {
            args += listOf("--tls-cert", TestTls.cert.toString(), "--tls-key", TestTls.key.toString())
        } else {
            args += "--insecure-ws"
        }
        if (options.customTokens) {
            args += listOf("--custom-token-secret-file", customSecretFile.toString())
        }
        flxRulesFile?.let { args += listOf("--flx-rules", it.toString()) }
        args += options.extraArgs
        return args
    }

    /** Starts the process and waits (at most 20 s) until it accepts TCP connections. */
    fun start(): TandemServer {
        check(process?.isAlive != true) { "tandem-server is already running" }
        starts += 1
        val log = dir.resolve("server-$starts.log").toFile()
        val p = ProcessBuilder(command()).redirectErrorStream(true).redirectOutput(log).start()
        process = p
        val deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20)
        while (true) {
            if (!p.isAlive) error("tandem-server exited with ${p.exitValue()}: ${tail(log)}")
            if (accepts()) return this
            if (System.nanoTime() > deadline) error("tandem-server did not listen on $port within 20 s: ${tail(log)}")
            Thread.sleep(50)
        }
    }

    /** Kills the process at once (SIGKILL), as a crash would. */
    fun kill() {
        process?.let {
            it.destroyForcibly()
            it.waitFor(10, TimeUnit.SECONDS)
        }
        process = null
    }

    /** Stops the process (SIGTERM, then SIGKILL after 10 s). */
    fun stop() {
        process?.let {
            it.destroy()
            if (!it.waitFor(10, TimeUnit.SECONDS)) it.destroyForcibly().waitFor(10, TimeUnit.SECONDS)
        }
        process = null
    }

    /** Kills and starts again on the same port and data directory. */
    fun restart(): TandemServer {
        kill()
        return start()
    }

    /** Creates a server API key with the admin command (`tandem-server api-key create`) and returns the key. */
    fun createApiKey(name: String): String {
        val p = ProcessBuilder(
            serverBinary(), "api-key", "create", "--name", name, "--data-dir", dataDir.toString(), "--app-id", appId,
        ).redirectErrorStream(true).start()
        val out = p.inputStream.readBytes().decodeToString()
        check(p.waitFor(20, TimeUnit.SECONDS) && p.exitValue() == 0) { "api-key create failed: $out" }
        return Regex("\\b[0-9a-f]{64}\\b").find(out)?.value ?: error("no key in: $out")
    }

    /**
     * Runs `tandem-server admin <args> --data-dir <data dir>` (e.g. `state /flx`) and returns its
     * standard output; fails with its output if it exits non-zero.
     */
    fun admin(vararg args: String): String {
        val p = ProcessBuilder(listOf(serverBinary(), "admin") + args + listOf("--data-dir", dataDir.toString())).start()
        val err = CompletableFuture.supplyAsync { p.errorStream.readBytes().decodeToString() }
        val out = p.inputStream.readBytes().decodeToString()
        check(p.waitFor(20, TimeUnit.SECONDS) && p.exitValue() == 0) { "admin ${args.joinToString(" ")} failed: $out${err.get()}" }
        return out
    }

    /** Whether the process is running. */
    val isAlive: Boolean get() = process?.isAlive == true

    /** Copies the data directory (the server must be stopped or killed for a consistent copy). */
    fun copyDataDir(to: Path) {
        check(!isAlive) { "stop the server before copying its data directory" }
        copyTree(dataDir, to)
    }

    /** Replaces the data directory with [from] (the server must be stopped). */
    fun restoreDataDir(from: Path) {
        check(!isAlive) { "stop the server before restoring its data directory" }
        dataDir.toFile().deleteRecursively()
        copyTree(from, dataDir)
    }

    /** The log of every start so far, concatenated (for assertion messages). */
    fun logs(): String = (1..starts).joinToString("\n") { n ->
        val f = dir.resolve("server-$n.log").toFile()
        if (f.exists()) f.readText() else ""
    }

    private fun accepts(): Boolean = try {
        Socket().use { it.connect(InetSocketAddress("127.0.0.1", port), 200) }
        true
    } catch (_: Exception) {
        false
    }

    override fun close() = kill()

    companion object {
        /** The binary run.sh passes as `-Dtandem.server.bin`. */
        fun serverBinary(): String {
            val binary = System.getProperty("tandem.server.bin")
                ?: error("set -Dtandem.server.bin (tests/realm-compat/run.sh builds and passes it)")
            check(File(binary).canExecute()) { "build the server first: cargo build --features server ($binary missing)" }
            return binary
        }

        fun freePort(): Int = ServerSocket().use {
            it.bind(InetSocketAddress("127.0.0.1", 0))
            it.localPort
        }

        private fun tail(log: File): String =
            if (log.exists()) log.readLines().takeLast(20).joinToString("\n") else "(no log)"

        private fun copyTree(from: Path, to: Path) {
            Files.walk(from).use { paths ->
                paths.forEach { src ->
                    val dst = to.resolve(from.relativize(src).toString())
                    if (Files.isDirectory(src)) dst.createDirectories() else Files.copy(src, dst, StandardCopyOption.REPLACE_EXISTING)
                }
            }
        }
    }
}
