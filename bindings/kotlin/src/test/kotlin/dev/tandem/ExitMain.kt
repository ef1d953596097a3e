@file:JvmName("ExitMain")

// Run by ExitTest in a child JVM: syncs, waits, and ends the process at once with every kind of
// call from Tandem's threads into the JVM live or in flight (mirrors
// bindings/python/tests/exit_script.py).
//
//     java -cp ... dev.tandem.ExitMain URL CA TOKEN DIR return|exit
//
// Live at the end: results listeners (the database's notifier thread), one still inside its
// call (it sleeps) and one that throws (the notifier thread then logs a warning through the log
// listener: the library logs little on its own); state, progress and error listeners (the
// session's notifier thread); a token provider; a log listener at TRACE (every thread that
// logs); suspended waits with no timeout on sessions whose server never answers (coroutines on
// Dispatchers.Default, resumed by Tandem's runtime threads through JNA callbacks), one of them a
// flexible sync session's wait for a subscription set it never gets; a blocking wait on a daemon
// thread (inside Rust); and a daemon thread committing without pause, so that the notifier
// thread is calling the listeners as the process ends. Prints `ok` last, then returns from main
// (`return`: the JVM exits once its last non-daemon thread ends) or calls exitProcess(0)
// (`exit`). Nothing is stopped, cancelled or closed.

package dev.tandem

import kotlin.concurrent.thread
import kotlin.system.exitProcess
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeoutOrNull

private object Quiet : ResultsListener, SyncStateListener, ProgressListener, ErrorListener, LogListener {
    override fun onChange(change: ResultsChange) {}
    override fun onState(state: SyncState) {}
    override fun onProgress(progress: SyncProgress) {}
    override fun onError(code: ULong, message: String, willRetry: Boolean) {}
    override fun onLog(level: LogLevel, target: String, message: String) {}
}

/** Still inside its call when the process starts to exit. */
private object Slow : ResultsListener {
    override fun onChange(change: ResultsChange) {
        Thread.sleep(50)
    }
}

/**
 * Throws on every change, which the notifier thread reports as a warning through the log
 * listener (without it, nothing reached the log listener in this program).
 */
private object Throwing : ResultsListener {
    override fun onChange(change: ResultsChange): Unit = throw CallbackException.Failed("a listener that throws")
}

private class Tokens(private val token: String) : TokenProvider {
    override fun fetchToken(): String = token
}

private fun options(url: String, ca: String?, path: String = "/todos", flexible: Boolean = false) = SyncOptions(
    url = url,
    path = path,
    token = "",
    caFile = ca,
    allowInsecure = false,
    clientReset = ClientResetMode.RECOVER_OR_DISCARD,
    flexible = flexible,
)

private fun create(key: Long, title: String) = WriteOp.Create("Task", intKey(key), mapOf("title" to str(title)))

fun main(args: Array<String>) {
    require(args.size == 6 && args[4] in setOf("return", "exit") && args[5] in setOf("attached", "per-call")) {
        "usage: URL CA TOKEN DIR return|exit attached|per-call"
    }
    val (url, ca, token, directory, ending) = args
    // "attached": the library's threads stay attached to the JVM between calls, as once
    // TandemDatabase is used (CallbackThreads), but without its shutdown hook: daemon threads
    // in listeners as the JVM goes away. "per-call": JNA's default, a thread attached per call.
    if (args[5] == "attached") CallbackThreads.apply()
    setLogListener(Quiet, LogLevel.TRACE)
    val db = Database.open("$directory/db.sqlite", taskClasses())
    val results = db.query("Task", "TRUEPREDICATE", emptyList())
    val handles = mutableListOf(results.observe(Quiet), results.observe(Slow), results.observe(Throwing))
    val session = db.sync(options(url, ca), Tokens(token))
    handles += listOf(session.observeState(Quiet), session.observeProgress(Quiet), session.observeErrors(Quiet))

    // Waits that never complete, left suspended at the end (as an app's background scope would
    // leave them).
    val background = CoroutineScope(Dispatchers.Default)
    val nowhere = Database.open("$directory/nowhere.sqlite", taskClasses())
    val stuck = nowhere.sync(options("wss://localhost:9/", null), null)
    nowhere.write(listOf(create(1, "never uploaded")))
    background.launch { stuck.waitForUpload(null) }
    background.launch { stuck.waitForDownload(null) }
    // And a flexible sync session's wait for a subscription set the server never bootstraps.
    val flexible = Database.open("$directory/flexible.sqlite", taskClasses())
    flexible.updateSubscriptions(listOf(SubscriptionChange.Add(null, "Task", "TRUEPREDICATE", emptyList())))
    val stuckFlexible = flexible.sync(options("wss://localhost:9/", null, FLEXIBLE_SYNC_PATH, flexible = true), null)
    background.launch { stuckFlexible.waitForSubscriptions(null, null) }
    // A blocking wait: a JVM thread inside Rust at the end.
    thread(isDaemon = true, name = "blocking-wait") { stuck.waitForDownloadBlocking(null) }

    runBlocking {
        db.write { tx -> tx.create("Task", intKey(System.nanoTime()), mapOf("title" to str("x"))) }
        session.waitForUpload(30_000uL)
        session.waitForDownload(30_000uL)
        // A wait cancelled half-way (the Rust future is dropped).
        withTimeoutOrNull(10) { stuck.waitForUpload(null) }
    }
    // Commits without pause from here on: the notifier thread is calling the listeners (and,
    // through the throwing one, the log listener) as the process ends.
    thread(isDaemon = true, name = "committer") {
        while (true) db.write(listOf(create(System.nanoTime(), "y")))
    }
    println("ok")
    System.out.flush()
    // No stop(), no cancel(), no close(): the process ends with everything live.
    java.lang.ref.Reference.reachabilityFence(listOf(handles, session, stuck, stuckFlexible))
    if (ending == "exit") exitProcess(0)
}
