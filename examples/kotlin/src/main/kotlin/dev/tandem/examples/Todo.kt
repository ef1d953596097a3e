// A small todo app on Tandem: add, complete, list, and watch live updates from other devices.
// The Kotlin twin of examples/python/todo.py and examples/todo.rs (same commands, same output).
//
//   java -Djna.library.path=DIR -cp ... dev.tandem.examples.TodoKt --db alice.sqlite \
//       --url wss://localhost:7800/ --token "$(tandem-server --jwt-secret-file secret --issue-token /todos)" \
//       --ca cert.pem add "buy milk"
//   ... list | done ID | watch
//
// Each command opens the database, syncs with the server, waits until the change is uploaded (or
// the server's news is downloaded), prints, and exits; `watch` keeps printing changes.

package dev.tandem.examples

import dev.tandem.ClientResetMode
import dev.tandem.PrimaryKey
import dev.tandem.SyncOptions
import dev.tandem.TandemDatabase
import kotlin.system.exitProcess
import kotlinx.coroutines.flow.collectIndexed
import kotlinx.coroutines.runBlocking

const val USAGE = "usage: todo --db FILE --url wss://... --token JWT [--ca CERT] [--path /todos] " +
    "add TITLE | done ID | list | watch"

/** The todo class every example shares: `_id` int primary key, `title`, `done`. */
data class Todo(@PrimaryKey val _id: Long, val title: String = "", val done: Boolean = false)

fun show(todos: List<Todo>) {
    for (todo in todos) println("[${if (todo.done) "x" else " "}] ${todo._id}: ${todo.title}")
    System.out.flush()
}

fun main(argv: Array<String>) {
    val flags = mutableMapOf<String, String>()
    val positional = mutableListOf<String>()
    var i = 0
    while (i < argv.size) {
        val a = argv[i]
        if (a.startsWith("--")) {
            if (i + 1 >= argv.size) usage()
            flags[a] = argv[i + 1]
            i += 2
        } else {
            positional += a
            i += 1
        }
    }
    val path = flags["--db"] ?: usage()
    val url = flags["--url"] ?: usage()
    val token = flags["--token"] ?: usage()
    val command = positional.firstOrNull() ?: usage()
    if (command !in setOf("add", "done", "list", "watch")) usage()
    if (command in setOf("add", "done") && positional.size < 2) usage()

    val db = TandemDatabase.open(path, Todo::class)
    val session = db.sync(
        SyncOptions(
            url = url,
            path = flags["--path"] ?: "/todos",
            token = token,
            caFile = flags["--ca"],
            allowInsecure = false,
            clientReset = ClientResetMode.RECOVER_OR_DISCARD,
        ),
    )
    runBlocking { session.waitForDownload(30_000uL) }
    val todos = db.query<Todo>("TRUEPREDICATE SORT(_id ASC)")
    when (command) {
        // The time in milliseconds is unique enough per device; equal keys would be one object.
        "add" -> db.write { add(Todo(System.currentTimeMillis(), positional[1])) }
        "done" -> {
            val id = positional[1].toLongOrNull() ?: usage()
            db.write { set(Todo::class, id, Todo::done, true) }
        }
        "watch" -> runBlocking {
            // The current list first, then the new list after every change.
            var before = emptyMap<Long, Todo>()
            todos.asFlow().collectIndexed { index, list ->
                val now = list.associateBy { it._id }
                if (index > 0) {
                    val added = now.keys.count { it !in before }
                    val gone = before.keys.count { it !in now }
                    val modified = now.count { (id, todo) -> before[id]?.let { it != todo } ?: false }
                    println("-- changed: $added new, $gone gone, $modified modified")
                }
                show(list)
                before = now
            }
        }
    }
    runBlocking { session.waitForUpload(30_000uL) }
    show(todos.toList())
    session.stop()
    exitProcess(0)
}

fun usage(): Nothing {
    System.err.println(USAGE)
    exitProcess(2)
}
