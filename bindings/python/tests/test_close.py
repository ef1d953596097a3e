"""Closing a database, typed or untyped: ``close()``, ``with ... as db:``, what it releases and
what it refuses afterwards.

Found by a new user's trial: neither ``TypedDatabase`` nor ``db.raw`` had ``close()`` or was a
context manager. The generated ``Database`` has no close; the package's, in Python, releases
the handles on the Rust database (as their garbage collection would), so once nothing else holds
the file SQLite closes it, and with the last connection it removes the ``-wal`` and ``-shm``
files: their absence is how these tests see that the file was really released.
"""

import asyncio
import os
import threading
import time
from typing import Annotated

import pytest

import tandem
from conftest import eventually, make_token, task_classes

CLOSED = "the database is closed"


class Task(tandem.Model):
    id: Annotated[int, tandem.PrimaryKey]
    title: str = ""


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "tasks.sqlite")


def side_files(path):
    return sorted(f for f in (path + "-wal", path + "-shm") if os.path.exists(f))


def unreachable_sync_options():
    return tandem.SyncOptions(url="wss://localhost:9/", path="/x", token=make_token(["/x"]),
                              ca_file=None, allow_insecure=False,
                              client_reset=tandem.ClientResetMode.MANUAL)


class ObjectChanges(tandem.ObjectListener):
    def __init__(self):
        self.seen = []

    def on_change(self, change):
        self.seen.append(change)


class ResultsChanges(tandem.ResultsListener):
    def __init__(self):
        self.seen = []

    def on_change(self, change):
        self.seen.append(change)


def test_close_releases_the_file_and_keeps_what_was_written(path):
    db = tandem.open(path, [Task])
    with db.write() as tx:
        tx.add(Task(id=1, title="kept"))
    # Objects made through the database do not keep it open either.
    results = db.objects(Task)
    assert len(results) == 1
    raw_results = db.raw.query("Task", "TRUEPREDICATE", [])
    pending = db.raw.write_transaction()
    assert side_files(path) == [path + "-shm", path + "-wal"]
    assert not db.closed and not db.raw.closed
    db.close()
    assert db.closed and db.raw.closed
    assert side_files(path) == []  # the last connection closed
    db.close()  # a second close does nothing
    db.raw.close()
    assert db.closed
    with pytest.raises(tandem.TandemError.InvalidArgument, match=CLOSED):
        len(results)
    with pytest.raises(tandem.TandemError.InvalidArgument, match=CLOSED):
        raw_results.count()
    with pytest.raises(tandem.TandemError.InvalidArgument, match=CLOSED):
        pending.commit()
    again = tandem.open(path, [Task])
    assert again.get(Task, 1) == Task(id=1, title="kept")
    again.close()


# Counts the file's Task rows from another process (the sqlite3 module's own SQLite), or says
# why not.
COUNT_ELSEWHERE = """
import sqlite3, sys
try:
    print(sqlite3.connect(sys.argv[1], timeout=0.2).execute('SELECT count(*) FROM "t:Task"').fetchone()[0])
except sqlite3.Error as e:
    print("error:", e)
"""


def test_the_typed_open_takes_open_options(path):
    import subprocess
    import sys

    def count_elsewhere():
        return subprocess.run([sys.executable, "-c", COUNT_ELSEWHERE, path], text=True,
                              capture_output=True, check=True).stdout.strip()

    options = tandem.OpenOptions(durability=tandem.Durability.FULL, exclusive_to_process=True)
    with tandem.open(path, [Task], options) as db:
        with db.write() as tx:
            tx.add(Task(id=1, title="mine"))
        assert count_elsewhere() == "error: database is locked"
        assert db.get(Task, 1) == Task(id=1, title="mine")
    assert count_elsewhere() == "1"
    # Without options: the defaults, a file other processes may read while it is open.
    with tandem.open(path, [Task]) as db:
        assert count_elsewhere() == "1"


def test_both_databases_are_context_managers(path):
    with tandem.open(path, [Task]) as db:
        assert isinstance(db, tandem.TypedDatabase)
        with db.write() as tx:
            tx.add(Task(id=1, title="in a block"))
    assert db.closed and side_files(path) == []
    with pytest.raises(RuntimeError, match="fails"):
        with tandem.open(path, [Task]) as db:
            with db.write() as tx:
                tx.add(Task(id=2))
            raise RuntimeError("the block fails")
    assert db.closed and side_files(path) == []
    with tandem.Database.open(path, tandem.schema([Task])) as raw:
        assert isinstance(raw, tandem.Database)
        assert [k.value for k in raw.query("Task", "TRUEPREDICATE SORT(id ASC)", []).keys()] == [1, 2]
    assert raw.closed and side_files(path) == []
    options = tandem.OpenOptions(durability=tandem.Durability.FULL)
    with tandem.Database.open_with_options(path, tandem.schema([Task]), options) as raw:
        raw.write([tandem.WriteOp.CREATE(class_name="Task", key=tandem.Key.INT(3), values={})])
    assert raw.closed and side_files(path) == []
    with tandem.open(path, [Task]) as db:
        assert db.objects(Task, "TRUEPREDICATE SORT(id ASC)").keys() == [1, 2, 3]


def test_every_use_after_close_raises_a_clear_error(path):
    db = tandem.open(path, [Task])
    with db.write() as tx:
        tx.add(Task(id=1))
    results = db.objects(Task)
    raw = db.raw
    raw_results = raw.query("Task", "TRUEPREDICATE", [])
    db.close()

    async def iterate(changes):
        async for _ in changes:
            pass

    uses = {
        "get": lambda: db.get(Task, 1),
        "objects": lambda: db.objects(Task),
        "write": lambda: db.write(),
        "observe": lambda: db.observe((Task, 1), lambda change: None),
        "changes": lambda: asyncio.run(iterate(db.changes((Task, 1)))),
        "sync": lambda: db.sync(unreachable_sync_options()),
        "subscriptions": lambda: db.subscriptions,
        "active_subscriptions": lambda: db.active_subscriptions,
        "update_subscriptions": lambda: db.update_subscriptions(lambda s: s.add(Task)),
        "results len": lambda: len(results),
        "results list": lambda: list(results),
        "results index": lambda: results[0],
        "results keys": lambda: results.keys(),
        "results observe": lambda: results.observe(lambda change: None),
        "results changes": lambda: asyncio.run(iterate(results.changes())),
        "raw query": lambda: raw.query("Task", "TRUEPREDICATE", []),
        "raw object": lambda: raw.object("Task", tandem.Key.INT(1)),
        "raw write ops": lambda: raw.write([]),
        "raw write block": lambda: raw.write().__enter__(),
        "raw write_transaction": lambda: raw.write_transaction(),
        "raw observe_object": lambda: raw.observe_object("Task", tandem.Key.INT(1), ObjectChanges()),
        "raw sync": lambda: raw.sync(unreachable_sync_options(), None),
        "raw subscriptions": lambda: raw.subscriptions(),
        "raw quarantine": lambda: raw.quarantine(),
        "raw results count": lambda: raw_results.count(),
        "raw results entries": lambda: raw_results.entries(),
        "raw results observe": lambda: raw_results.observe(ResultsChanges()),
    }
    for name, use in uses.items():
        with pytest.raises(tandem.TandemError.InvalidArgument, match=CLOSED):
            use()
            pytest.fail(f"{name} did not raise")


def test_a_write_block_open_when_the_database_closes_writes_nothing(path):
    db = tandem.open(path, [Task])
    with pytest.raises(tandem.TandemError.InvalidArgument, match=CLOSED):
        with db.write() as tx:
            tx.add(Task(id=1))
            db.close()
    raw = tandem.Database.open(path, tandem.schema([Task]))
    with pytest.raises(tandem.TandemError.InvalidArgument, match=CLOSED):
        with raw.write() as utx:
            utx.create("Task", tandem.Key.INT(2), {})
            raw.close()
    # An exception in the block is the one that propagates (the rollback has nothing to undo).
    raw = tandem.Database.open(path, tandem.schema([Task]))
    with pytest.raises(KeyError):
        with raw.write() as utx:
            utx.create("Task", tandem.Key.INT(3), {})
            raw.close()
            raise KeyError("mine")
    with tandem.open(path, [Task]) as again:
        assert again.objects(Task).keys() == []
        with again.write() as tx:  # nothing is left open
            tx.add(Task(id=4))
        assert again.objects(Task).keys() == [4]


def test_close_stops_listeners_and_ends_async_iteration(path):
    db = tandem.open(path, [Task])
    with db.write() as tx:
        tx.add(Task(id=1, title="first"))
    seen_results, seen_object = [], []
    handles = [  # kept: dropping a handle cancels its listener
        db.objects(Task).observe(lambda change: seen_results.append(change.keys)),
        db.observe((Task, 1), lambda change: seen_object.append(change.object.title)),
    ]
    raw_changes = ObjectChanges()
    raw_handle = db.raw.observe_object("Task", tandem.Key.INT(1), raw_changes)

    other = tandem.open(path, [Task])
    control = []
    handles.append(other.observe((Task, 1), lambda change: control.append(change.object.title)))

    with db.write() as tx:
        tx.set((Task, 1), title="second")
    eventually(lambda: seen_object == ["second"] and len(raw_changes.seen) == 1
               and seen_results[-1] == [1])
    results_calls = len(seen_results)

    iterated = []
    closer = threading.Thread(target=db.close)  # from another thread, as the loop waits

    async def iterate_until_closed():
        changes = db.objects(Task).changes()
        async for change in changes:  # ends when the database closes
            iterated.append(change.keys)
            if change.initial:
                closer.start()
        return "ended"

    assert asyncio.run(asyncio.wait_for(iterate_until_closed(), 10)) == "ended"
    assert iterated == [[1]]
    assert db.closed
    closer.join()
    eventually(lambda: control == ["second"])

    with other.write() as tx:
        tx.set((Task, 1), title="third")
    eventually(lambda: control == ["second", "third"])
    time.sleep(0.3)  # time for a listener that was not cancelled to be called
    assert seen_object == ["second"]
    assert len(raw_changes.seen) == 1
    assert len(seen_results) == results_calls
    raw_handle.cancel()  # cancelling a cancelled handle is harmless
    for handle in handles:
        handle.cancel()
    other.close()


def test_closing_the_untyped_database_closes_the_typed_one(path):
    db = tandem.open(path, [Task])
    with db.write() as tx:
        tx.add(Task(id=1))
    db.raw.close()
    assert db.closed
    with pytest.raises(tandem.TandemError.InvalidArgument, match=CLOSED):
        db.write()
    assert side_files(path) == []  # the typed writer's hold was released too
    db.close()


def test_close_stops_the_sync_sessions_it_started(path):
    db = tandem.open(path, [Task])
    session = db.sync(unreachable_sync_options())
    errors = []
    session.observe_errors(_Errors(errors))
    db.close()
    for use in (session.state, session.progress, session.stop,
                lambda: session.wait_for_upload_blocking(100)):
        with pytest.raises(tandem.TandemError.InvalidArgument, match=CLOSED):
            use()
    with pytest.raises(tandem.TandemError.InvalidArgument, match=CLOSED):
        asyncio.run(session.wait_for_upload(100))
    # The stopped session lets go of the file too.
    eventually(lambda: side_files(path) == [], seconds=10)


class _Errors(tandem.ErrorListener):
    def __init__(self, seen):
        self.seen = seen

    def on_error(self, code, message, will_retry):
        self.seen.append(code)


def test_closing_one_handle_leaves_the_others_open(path):
    first = tandem.open(path, [Task])
    second = tandem.open(path, [Task])
    raw = tandem.Database.open(path, tandem.schema([Task]))
    first.close()
    with second.write() as tx:
        tx.add(Task(id=1, title="still open"))
    assert raw.object("Task", tandem.Key.INT(1))["title"].value.value == "still open"
    second.close()
    assert raw.query("Task", "TRUEPREDICATE", []).count() == 1
    assert side_files(path) != []  # raw still holds the file
    raw.close()
    assert side_files(path) == []


def test_the_database_a_listener_closes_stops_cleanly(path):
    db = tandem.open(path, [Task])
    with db.write() as tx:
        tx.add(Task(id=1))
    closed = threading.Event()

    def close_from_the_notifier(change):
        if not change.initial:
            db.close()
            closed.set()

    handle = db.objects(Task).observe(close_from_the_notifier)
    other = tandem.open(path, [Task])
    with db.write() as tx:
        tx.add(Task(id=2))
    assert closed.wait(10)
    assert db.closed
    with other.write() as tx:
        tx.add(Task(id=3))
    assert other.objects(Task).keys() == [1, 2, 3]
    handle.cancel()
    other.close()


def test_the_fixtures_mypy_checks_close_what_they_open(tmp_path):
    from models_fixture import open_write_and_close
    from untyped_fixture import write_and_close

    typed = str(tmp_path / "typed.sqlite")
    assert open_write_and_close(typed) is True
    assert side_files(typed) == []
    untyped = str(tmp_path / "untyped.sqlite")
    assert write_and_close(untyped, task_classes()) is True
    assert side_files(untyped) == []
    with tandem.Database.open(untyped, task_classes()) as raw:
        titles = {k.value: raw.object("Task", k)["title"].value.value
                  for k in raw.query("Task", "TRUEPREDICATE", []).keys()}
    assert titles == {20: "in a block", 21: "as a list"}
