// CallbackThreadsTest: the library's threads stay attached to the JVM between calls into Kotlin.

package dev.tandem

import com.sun.jna.Callback
import java.nio.file.Path
import java.util.concurrent.TimeUnit
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.io.TempDir

class CallbackThreadsTest {
    @TempDir
    lateinit var dir: Path

    /**
     * Every callback object the generated bindings declare (the nested objects of each
     * `uniffiCallbackInterface...` holder in `tandem.kt`) is in [CallbackThreads.callbacks].
     */
    @Test
    fun everyGeneratedCallbackIsKeptAttached() {
        val source = Path.of("src/main/kotlin/dev/tandem/tandem.kt").toFile().readText()
        val holders = Regex("""internal object (uniffiCallbackInterface\w+) \{""")
            .findAll(source)
            .map { it.groupValues[1] }
            .toList()
        assertTrue(holders.size >= 7, "$holders")
        val generated = holders.flatMap { holder ->
            Class.forName("dev.tandem.$holder").declaredClasses
                .filter { Callback::class.java.isAssignableFrom(it) }
                .map { it.getField("INSTANCE").get(null) as Callback }
        }
        assertTrue(generated.size >= 3 * holders.size, "$generated")
        val listed = CallbackThreads.callbacks.toSet()
        assertEquals(generated.size, listed.size)
        generated.forEach { assertTrue(it in listed, "not kept attached: ${it.javaClass.name}") }
    }

    /**
     * A results listener is called on the database's notifier thread: the same Java thread each
     * time (JNA's default attaches a new one for every call), a daemon named `tandem-callback`.
     * In a child JVM whose first use of the library is [TandemDatabase] (`CallbackThreadsMain`).
     */
    @Test
    fun aListenerIsCalledOnOneAttachedThread() {
        val out = dir.resolve("stdout").toFile()
        val err = dir.resolve("stderr").toFile()
        val process = ProcessBuilder(
            childJvm("dev.tandem.CallbackThreadsMainKt", dir.resolve("threads.sqlite").toString()),
        ).redirectOutput(out).redirectError(err).start()
        val exited = process.waitFor(120, TimeUnit.SECONDS)
        if (!exited) process.destroyForcibly()
        assertTrue(exited, "the child JVM is still running after 120 s")
        assertEquals("ok\n", out.readText(), "stderr: ${err.readText().takeLast(800)}")
        assertEquals(0, process.exitValue())
    }
}
