"""Python benchmark: Tandem beside Python's own sqlite3, and a todo workload beside the CRDT
libraries pycrdt and loro, all measured in the same run on the same machine.

Run: bindings/python/bench/run.sh (builds a release wheel, installs pycrdt and loro).
"""

import argparse
import dataclasses
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from typing import Annotated

import tandem

N_BULK = 100_000
N_SMALL = 10_000
N_TODO = 10_000


class Task(tandem.Model):
    """The typed workload's class: 5 properties."""

    id: Annotated[int, tandem.PrimaryKey]
    title: str
    done: bool
    priority: int
    estimate: float


@dataclasses.dataclass
class TaskRow:
    """What sqlite3 rows are read into (the baseline of the typed read)."""

    id: int
    title: str
    done: bool
    priority: int
    estimate: float


class Todo(tandem.Model):
    id: Annotated[int, tandem.PrimaryKey]
    title: str
    done: bool = False


def classes():
    def prop(name, ptype):
        return tandem.PropertySpec(name=name, property_type=ptype, nullable=False,
                                   collection=tandem.Collection.SINGLE, link_target=None)
    return [tandem.ClassSpec(name="Task", primary_key="_id", properties=[
        prop("_id", tandem.PropertyType.INT),
        prop("title", tandem.PropertyType.STRING),
        prop("done", tandem.PropertyType.BOOL),
    ])]


def timed(fn, repeat):
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def fresh_dir():
    return tempfile.mkdtemp(prefix="tandem-pybench-")


def typed_db():
    return tandem.open(os.path.join(fresh_dir(), "t.sqlite"), [Task])


def task(i):
    return Task(id=i, title=f"task {i}", done=False, priority=i % 5, estimate=i * 0.5)


def tandem_bulk_typed():
    db = typed_db()
    with db.write() as tx:
        for i in range(N_BULK):
            tx.add(task(i))


def tandem_small_typed():
    db = typed_db()
    for i in range(N_SMALL):
        with db.write() as tx:
            tx.add(task(i))


READ_DB = {}


def tandem_read_typed():
    if "t" not in READ_DB:
        db = typed_db()
        with db.write() as tx:
            for i in range(N_BULK):
                tx.add(task(i))
        READ_DB["t"] = db
    tasks = list(READ_DB["t"].objects(Task))
    assert len(tasks) == N_BULK and tasks[-1].title


def sqlite_read():
    if "s" not in READ_DB:
        conn = sqlite_connection()
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO task VALUES (?, ?, ?, ?, ?)", (
            (i, f"task {i}", False, i % 5, i * 0.5) for i in range(N_BULK)))
        conn.execute("COMMIT")
        READ_DB["s"] = conn
    tasks = [TaskRow(*r) for r in READ_DB["s"].execute("SELECT * FROM task").fetchall()]
    assert len(tasks) == N_BULK and tasks[-1].title


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
    conn.execute("CREATE TABLE task (id INTEGER PRIMARY KEY, title TEXT NOT NULL, done INTEGER NOT NULL, "
                 "priority INTEGER NOT NULL, estimate REAL NOT NULL)")
    return conn


def sqlite_bulk():
    conn = sqlite_connection()
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO task VALUES (?, ?, ?, ?, ?)",
                     ((i, f"task {i}", False, i % 5, i * 0.5) for i in range(N_BULK)))
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
        conn.execute("INSERT INTO task VALUES (?, ?, ?, ?, ?)", (i, f"task {i}", False, i % 5, i * 0.5))
        conn.execute("COMMIT")


def todo_tandem():
    db = tandem.open(os.path.join(fresh_dir(), "t.sqlite"), [Todo])
    for i in range(N_TODO):
        with db.write() as tx:
            tx.add(Todo(id=i, title=f"todo {i}"))
    for i in range(0, N_TODO, 2):
        with db.write() as tx:
            tx.set((Todo, i), done=True)
    assert len(db.objects(Todo, "done == true")) == N_TODO // 2


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
    global N_BULK, N_SMALL, N_TODO
    parser = argparse.ArgumentParser(description="Tandem from Python beside sqlite3, pycrdt, loro")
    parser.add_argument("--quick", action="store_true", help="a tenth of the sizes, one sample each")
    parser.add_argument("--untyped", action="store_true",
                        help="also the untyped API's per-call path (slow: about 6 s per sample)")
    opts = parser.parse_args()
    repeat = 3
    if opts.quick:
        N_BULK, N_SMALL, N_TODO, repeat = N_BULK // 10, N_SMALL // 10, N_TODO // 10, 1
    rows = []
    t, s = timed(tandem_bulk_typed, repeat), timed(sqlite_bulk, repeat)
    rows.append((f"{N_BULK:,} objects x 5 properties, one transaction", t, "executemany", s, 5))
    t, s = timed(tandem_small_typed, repeat), timed(sqlite_small, repeat)
    rows.append((f"{N_SMALL:,} one-object transactions", t, "one-row commits", s, 2))
    t, s = timed(tandem_read_typed, repeat), timed(sqlite_read, repeat)
    rows.append((f"iterate {N_BULK:,} typed objects", t, "fetchall+dataclass", s, 5))
    if opts.untyped:
        t = timed(tandem_bulk, repeat)
        rows.append((f"untyped API: {N_BULK:,} creates x 3, one transaction", t, "executemany", s, None))
    t = timed(todo_tandem, repeat)
    for name, fn in (("pycrdt", todo_pycrdt), ("loro", todo_loro)):
        try:
            rows.append((f"todo: {N_TODO:,} adds + {N_TODO // 2:,} completes + count", t, name,
                         timed(fn, repeat), None))
        except ImportError:
            rows.append(("todo workload", t, name + " (not installed)", float("nan"), None))
    print(f"python {sys.version.split()[0]}, sqlite {sqlite3.sqlite_version}, sizes"
          f" {N_BULK:,}/{N_SMALL:,}/{N_TODO:,}, median of {repeat}")
    print(f"{'workload':<48} {'tandem':>9} {'baseline':>30} {'ratio':>7} {'goal':>5}")
    for label, tandem_s, base_name, base_s, goal in rows:
        goal_text = f"{goal}x" if goal else ""
        print(f"{label:<48} {tandem_s:8.3f}s {base_name:>20} {base_s:8.3f}s {tandem_s / base_s:6.2f}x {goal_text:>5}")


if __name__ == "__main__":
    main()
