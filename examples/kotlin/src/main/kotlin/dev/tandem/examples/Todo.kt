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

import dev.tandem.ClassSpec
import dev.tandem.ClientResetMode
import dev.tandem.Collection
import dev.tandem.Database
import dev.tandem.FieldValue
import dev.tandem.Key
import dev.tandem.PropertySpec
import dev.tandem.PropertyType
import dev.tandem.ResultsChange
import dev.tandem.ResultsListener
import dev.tandem.SyncOptions
import dev.tandem.Value
import dev.tandem.write
import kotlin.system.exitProcess
import kotlinx.coroutines.runBlocking

const val USAGE = "usage: todo --db FILE --url wss://... --token JWT [--ca CERT] [--path /todos] " +
    "add TITLE | done ID | list | watch"

fun classes(): List<ClassSpec> {
    fun prop(name: String, type: PropertyType) =
        PropertySpec(name = name, propertyType = type, nullable = false, collection = Collection.SINGLE, linkTarget = null)
    return listOf(
        ClassSpec(
            name = "Todo",
            primaryKey = "_id",
            properties = listOf(
                prop("_id", PropertyType.INT),
                prop("title", PropertyType.STRING),
                prop("done", PropertyType.BOOL),
            ),
        ),
    )
}

fun show(db: Database) {
    for (key in db.query("Todo", "TRUEPREDICATE SORT(_id ASC)", emptyList()).keys()) {
        val todo = db.`object`("Todo", key) ?: continue
        val done = ((todo["done"] as? FieldValue.Single)?.value as? Value.Bool)?.value ?: false
        val title = ((todo["title"] as? FieldValue.Single)?.value as? Value.String)?.value ?: ""
        val id = when (key) {
            is Key.Int -> key.value.toString()
            is Key.String -> key.value
            else -> key.toString()
        }
        println("[${if (done) "x" else " "}] $id: $title")
    }
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

    val db = Database.open(path, classes())
    val session = db.sync(
        SyncOptions(
            url = url,
            path = flags["--path"] ?: "/todos",
            token = token,
            caFile = flags["--ca"],
            allowInsecure = false,
            clientReset = ClientResetMode.RECOVER_OR_DISCARD,
        ),
        null,
    )
    runBlocking { session.waitForDownload(30_000uL) }
    when (command) {
        "add" -> {
            val id = System.currentTimeMillis() // unique enough per device; equal keys would merge
            db.write { tx ->
                tx.create("Todo", Key.Int(id), mapOf("title" to Value.String(positional[1]), "done" to Value.Bool(false)))
            }
        }
        "done" -> {
            val id = positional[1].toLongOrNull() ?: usage()
            db.write { tx -> tx.set("Todo", Key.Int(id), "done", Value.Bool(true)) }
        }
    }
    if (command == "watch") {
        show(db)
        val handle = db.query("Todo", "TRUEPREDICATE SORT(_id ASC)", emptyList()).observe(
            object : ResultsListener {
                override fun onChange(change: ResultsChange) {
                    println(
                        "-- changed: ${change.insertions.size} new, ${change.deletions.size} gone, " +
                            "${change.modifications.size} modified",
                    )
                    show(db)
                }
            },
        )
        Runtime.getRuntime().addShutdownHook(Thread { handle.cancel() })
        while (true) Thread.sleep(1000)
    }
    runBlocking { session.waitForUpload(30_000uL) }
    show(db)
    session.stop()
    exitProcess(0)
}

fun usage(): Nothing {
    System.err.println(USAGE)
    exitProcess(2)
}
