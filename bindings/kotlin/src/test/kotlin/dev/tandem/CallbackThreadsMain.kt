// CallbackThreadsMain: run in a child JVM by CallbackThreadsTest, so that TandemDatabase is the
// first use of the library in it (as in an app), which is when CallbackThreads takes effect.
// Prints "ok", or what was wrong.

package dev.tandem

import java.util.concurrent.LinkedBlockingQueue
import java.util.concurrent.TimeUnit

fun main(args: Array<String>) {
    val db = TandemDatabase.open(args[0], TypedTask::class)
    val threads = LinkedBlockingQueue<Thread>()
    val results = db.query<TypedTask>("_id >= \$0", 0L)
    val handle = results.raw.observe(
        object : ResultsListener {
            override fun onChange(change: ResultsChange) {
                threads.put(Thread.currentThread())
            }
        },
    )
    val seen = (1L..3L).map { id ->
        threads.clear()
        db.write { add(TypedTask(_id = id, title = "task $id")) }
        threads.poll(30, TimeUnit.SECONDS) ?: error("no notification for task $id")
    }
    handle.cancel()
    handle.close()
    results.close()
    db.close()
    // Closing the database ends its notifier thread, and JNA then detaches it: its Java
    // thread ends too.
    seen[0].join(10_000)
    val one = seen.all { it === seen[0] }
    println(
        if (one && seen[0].name == "tandem-callback" && seen[0].isDaemon && !seen[0].isAlive) {
            "ok"
        } else {
            "threads ${seen.map { "${it.name} (daemon ${it.isDaemon}, alive ${it.isAlive}, id ${it.id})" }}"
        },
    )
}
