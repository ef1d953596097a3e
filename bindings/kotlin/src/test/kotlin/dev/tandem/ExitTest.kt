// JVM exit with Tandem's threads calling into the JVM or with calls in flight (mirrors
// bindings/python/tests/test_exit.py): ExitMain runs in a child JVM TANDEM_EXIT_RUNS times
// (default 10), alternately returning from main and calling exitProcess(0), two runs in four
// with the library's threads kept attached to the JVM (CallbackThreads) and the others with
// JNA's per-call attach, against a real tandem-server; every run must exit 0 within
// TIMEOUT_SECONDS having printed exactly "ok".
// A run that hangs is killed and fails the test (no further runs are started).
//
// ExitMain uses the untyped API, so no shutdown hook calls closeCallbacks (the typed
// TandemDatabase registers one, as Python's atexit hook does): Tandem's threads go on
// calling listeners and the log listener while the shutdown hooks run, and a call that arrives
// once DestroyJavaVM is done is refused by the JVM (JNA writes "JNA: Can't attach native thread
// to VM for callback: -1" to stderr and returns without calling the listener). That message came
// in about 2% of the `return` runs of a version of ExitMain without its committing thread, always
// after "ok" and with exit status 0, so stderr is only reported, not checked.

package dev.tandem

import java.io.File
import java.nio.file.Path
import java.util.concurrent.TimeUnit
import org.junit.jupiter.api.AfterEach
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.BeforeEach
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.io.TempDir

class ExitTest {
    @TempDir
    lateinit var dir: Path
    lateinit var server: TestServer

    @BeforeEach
    fun start() {
        server = TestServer(dir)
    }

    @AfterEach
    fun stop() {
        server.close()
    }

    @Test
    fun exitWithListenersWaitsAndLogCallsInFlight() {
        val runs = System.getenv("TANDEM_EXIT_RUNS")?.toInt() ?: 10
        val failures = mutableListOf<String>()
        var started = 0
        for (run in 0 until runs) {
            started++
            val ending = if (run % 2 == 0) "return" else "exit"
            val threads = if (run % 4 < 2) "per-call" else "attached"
            val runDir = dir.resolve("run$run").toFile().apply { mkdirs() }
            val stdout = File(runDir, "stdout")
            val stderr = File(runDir, "stderr")
            val process = ProcessBuilder(
                childJvm("dev.tandem.ExitMain", server.url, server.ca, makeToken(listOf("/todos")), runDir.path, ending, threads),
            ).redirectOutput(stdout).redirectError(stderr).start()
            val exited = process.waitFor(TIMEOUT_SECONDS, TimeUnit.SECONDS)
            if (!exited) {
                process.destroyForcibly()
                process.waitFor(10, TimeUnit.SECONDS)
            }
            val out = stdout.readText()
            if (!exited || process.exitValue() != 0 || out != "ok\n") {
                val status = if (exited) "exit ${process.exitValue()}" else "still running after $TIMEOUT_SECONDS s (killed)"
                failures += "run $run ($ending, $threads): $status, stdout ${out.quoted()}, stderr ${stderr.readText().takeLast(800).quoted()}"
            }
            if (!exited) break
        }
        assertTrue(failures.isEmpty()) {
            val hung = if (started < runs) " (the last one hung: no more were started)" else ""
            "${failures.size} of $started runs failed$hung:\n" + failures.joinToString("\n")
        }
    }

    private fun String.quoted() = "\"" + replace("\\", "\\\\").replace("\n", "\\n").replace("\"", "\\\"") + "\""

    companion object {
        const val TIMEOUT_SECONDS = 60L
    }
}
