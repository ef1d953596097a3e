"""Python benchmark: Tandem beside Python's own sqlite3, and a todo workload beside the CRDT
libraries pycrdt and loro, all measured in the same run on the same machine.

Run: bindings/python/bench/run.sh (builds a release wheel, installs pycrdt and loro).
"""

import os
import sqlite3
import statistics
import tempfile
import time

import tandem

N_BULK = 100_000
N_SMALL = 10_000
N_TODO = 10_000


def classes():
    def prop(name, ptype):
        return tandem.PropertySpec(name=name, property_type=ptype, nullable=False,
                                   collection=tandem.Collection.SINGLE, link_target=None)
    return [tandem.ClassSpec(name="Task", primary_key="_id", properties=[
        prop("_id", tandem.PropertyType.INT),
        prop("title", tandem.PropertyType.STRING),
        prop("done", tandem.PropertyType.BOOL),
    ])]


def timed(fn, repeat=3):
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def fresh_dir():
    return tempfile.mkdtemp(prefix="tandem-pybench-")


def tandem_bulk():
    db = tandem.Database.open(os.path.join(fresh_dir(), "t.sqlite"), classes())
    with db.write() as tx:
        for i in range(N_BULK):
            tx.create("Task", tandem.Key.INT(i), {"title": tandem.Value.STRING(f"task {i}"),
                                                   "done": tandem.Value.BOOL(False)})


def sqlite_connection():
    conn = sqlite3.connect(os.path.join(fresh_dir(), "s.sqlite"), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE task (id INTEGER PRIMARY KEY, title TEXT NOT NULL, done INTEGER NOT NULL)")
    return conn


def sqlite_bulk():
    conn = sqlite_connection()
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO task VALUES (?, ?, 0)", ((i, f"task {i}") for i in range(N_BULK)))
    conn.execute("COMMIT")


def tandem_small():
    db = tandem.Database.open(os.path.join(fresh_dir(), "t.sqlite"), classes())
    for i in range(N_SMALL):
        with db.write() as tx:
            tx.create("Task", tandem.Key.INT(i), {"title": tandem.Value.STRING(f"task {i}")})


def sqlite_small():
    conn = sqlite_connection()
    for i in range(N_SMALL):
        conn.execute("BEGIN")
        conn.execute("INSERT INTO task VALUES (?, ?, 0)", (i, f"task {i}"))
        conn.execute("COMMIT")


def todo_tandem():
    db = tandem.Database.open(os.path.join(fresh_dir(), "t.sqlite"), classes())
    for i in range(N_TODO):
        with db.write() as tx:
            tx.create("Task", tandem.Key.INT(i), {"title": tandem.Value.STRING(f"todo {i}")})
    for i in range(0, N_TODO, 2):
        with db.write() as tx:
            tx.set("Task", tandem.Key.INT(i), "done", tandem.Value.BOOL(True))
    assert db.query("Task", "done == true", []).count() == N_TODO // 2


def todo_pycrdt():
    import pycrdt
    doc = pycrdt.Doc()
    todos = doc.get("todos", type=pycrdt.Map)
    for i in range(N_TODO):
        with doc.transaction():
            todos[str(i)] = pycrdt.Map({"title": f"todo {i}", "done": False})
    for i in range(0, N_TODO, 2):
        with doc.transaction():
            todos[str(i)]["done"] = True
    assert sum(1 for v in todos.values() if v["done"]) == N_TODO // 2


def todo_loro():
    import loro
    doc = loro.LoroDoc()
    todos = doc.get_map("todos")
    for i in range(N_TODO):
        item = todos.insert_container(str(i), loro.LoroMap())
        item.insert("title", f"todo {i}")
        item.insert("done", False)
        doc.commit()
    for i in range(0, N_TODO, 2):
        todos.get(str(i)).container.insert("done", True)
        doc.commit()
    value = todos.get_deep_value()
    assert sum(1 for v in value.values() if v["done"]) == N_TODO // 2


def main():
    rows = []
    t, s = timed(tandem_bulk), timed(sqlite_bulk)
    rows.append((f"{N_BULK:,} objects, one transaction", t, "sqlite3", s))
    t, s = timed(tandem_small), timed(sqlite_small)
    rows.append((f"{N_SMALL:,} one-object transactions", t, "sqlite3", s))
    t = timed(todo_tandem)
    for name, fn in (("pycrdt", todo_pycrdt), ("loro", todo_loro)):
        try:
            rows.append((f"todo: {N_TODO:,} adds + {N_TODO // 2:,} completes + list", t, name, timed(fn)))
        except ImportError:
            rows.append((f"todo workload", t, name + " (not installed)", float("nan")))
    print(f"{'workload':<52} {'tandem':>9} {'baseline':>22} {'ratio':>7}")
    for label, tandem_s, base_name, base_s in rows:
        print(f"{label:<52} {tandem_s:8.3f}s {base_name:>12} {base_s:8.3f}s {tandem_s / base_s:6.2f}x")


if __name__ == "__main__":
    main()
