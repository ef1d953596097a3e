"""Writes do not nest, and a transaction takes nothing once its block has ended.

Found by a new user's trial: a ``with db.write()`` inside another on the same thread committed
on its own while the outer one rolled back, and ``tx.add()`` after the block was silently lost.
"""

import asyncio
import dataclasses
import os
import threading
from typing import Annotated, List

import pytest

import tandem
from conftest import make_token, task_classes

NESTED = "a write transaction is already open on this thread: nested writes are not supported"
ENDED = "this transaction has ended"


class Task(tandem.Model):
    id: Annotated[int, tandem.PrimaryKey]
    title: str = ""
    count: int = 0
    tags: List[str] = dataclasses.field(default_factory=list)
    labels: set[str] = dataclasses.field(default_factory=set)
    notes: dict[str, str] = dataclasses.field(default_factory=dict)


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "tasks.sqlite")


@pytest.fixture
def db(path):
    return tandem.open(path, [Task])


def keys(db):
    return db.objects(Task, "TRUEPREDICATE SORT(id ASC)").keys()


def untyped_keys(raw):
    return [k.value for k in raw.query("Task", "TRUEPREDICATE SORT(id ASC)", []).keys()]


def untyped_classes():
    """`Task` as the untyped API declares it (the same schema as the model class)."""
    return tandem.schema([Task])


def create_op(key):
    return tandem.WriteOp.CREATE(class_name="Task", key=tandem.Key.INT(key),
                                 values={"title": tandem.Value.STRING("untyped")})


# --- 1. nested writes are refused ------------------------------------------------------------


def test_the_trial_case_a_nested_write_is_refused_and_the_outer_one_rolls_back(db):
    with pytest.raises(tandem.TandemError.InvalidArgument, match=NESTED) as e:
        with db.write() as tx:
            tx.add(Task(id=61))
            with db.write() as tx2:
                tx2.add(Task(id=62))
            raise RuntimeError("outer fails")
    assert e.value.message.startswith(NESTED)
    assert db.get(Task, 61) is None
    assert db.get(Task, 62) is None
    assert keys(db) == []


def test_an_outer_write_that_catches_the_refusal_commits_only_its_own_changes(db):
    with db.write() as tx:
        tx.add(Task(id=1, title="outer"))
        with pytest.raises(tandem.TandemError.InvalidArgument, match=NESTED):
            with db.write() as inner:
                inner.add(Task(id=2))
        tx.add(Task(id=3, title="outer too"))
    assert keys(db) == [1, 3]
    assert db.get(Task, 1).title == "outer"


def test_after_a_refusal_a_rollback_or_a_failed_commit_the_next_write_opens(db):
    with pytest.raises(tandem.TandemError.InvalidArgument, match=NESTED):
        with db.write():
            with db.write():
                pass
    with pytest.raises(ValueError):
        with db.write() as tx:
            tx.add(Task(id=1))
            raise ValueError("rolled back")
    with db.write() as tx:
        tx.add(Task(id=1, title="first"))
    with pytest.raises(tandem.TandemError.InvalidArgument):  # a duplicate key fails the commit
        with db.write() as tx:
            tx.add(Task(id=1))
    with db.write() as tx:
        tx.add(Task(id=2, title="second"))
    assert keys(db) == [1, 2]
    assert db.get(Task, 1).title == "first"


def test_every_handle_on_the_same_file_counts_typed_or_untyped(path, tmp_path):
    db = tandem.open(path, [Task])
    same = tandem.open(path, [Task])  # another handle on the file
    os.symlink(path, str(tmp_path / "link.sqlite"))
    linked = tandem.open(str(tmp_path / "link.sqlite"), [Task])  # another spelling of it
    raw = tandem.Database.open(path, untyped_classes())
    raw_options = tandem.Database.open_with_options(
        os.path.join(os.path.dirname(path), ".", "tasks.sqlite"), untyped_classes(),
        tandem.OpenOptions(durability=tandem.Durability.NORMAL))

    inner_writes = [
        lambda: same.write().__enter__(),
        lambda: linked.write().__enter__(),
        lambda: db.raw.write().__enter__(),
        lambda: raw.write().__enter__(),
        lambda: raw_options.write().__enter__(),
        lambda: raw.write([create_op(9)]),
        lambda: db.raw.write([create_op(9)]),
        lambda: raw.write_transaction(),
    ]
    for inner in inner_writes:
        with pytest.raises(tandem.TandemError.InvalidArgument, match=NESTED):
            with db.write() as tx:
                tx.add(Task(id=1))
                inner()
    # The other way round: an untyped block open, a typed write inside it.
    for inner in [lambda: db.write().__enter__(), lambda: linked.write().__enter__(),
                  lambda: raw.write([create_op(9)])]:
        with pytest.raises(tandem.TandemError.InvalidArgument, match=NESTED):
            with raw.write() as utx:
                utx.create("Task", tandem.Key.INT(2), {"title": tandem.Value.STRING("x")})
                inner()
    assert keys(db) == [] and untyped_keys(raw) == []
    # Each handle writes on its own once nothing is open.
    with same.write() as tx:
        tx.add(Task(id=1))
    raw.write([create_op(2)])
    with raw_options.write() as utx:
        utx.create("Task", tandem.Key.INT(3), {"title": tandem.Value.STRING("x")})
    assert keys(db) == [1, 2, 3]


def test_the_untyped_write_block_does_not_nest_either(tmp_path):
    raw = tandem.Database.open(str(tmp_path / "raw.sqlite"), task_classes())
    with pytest.raises(RuntimeError, match="outer fails"):
        with raw.write() as tx:
            tx.create("Task", tandem.Key.INT(61), {"title": tandem.Value.STRING("outer")})
            with pytest.raises(tandem.TandemError.InvalidArgument, match=NESTED):
                with raw.write() as tx2:
                    tx2.create("Task", tandem.Key.INT(62), {"title": tandem.Value.STRING("inner")})
            with pytest.raises(tandem.TandemError.InvalidArgument, match=NESTED):
                raw.write([tandem.WriteOp.CREATE(class_name="Task", key=tandem.Key.INT(63),
                                                 values={})])
            raise RuntimeError("outer fails")
    assert raw.object("Task", tandem.Key.INT(61)) is None
    assert raw.object("Task", tandem.Key.INT(62)) is None
    assert raw.object("Task", tandem.Key.INT(63)) is None
    with raw.write() as tx:
        tx.create("Task", tandem.Key.INT(1), {"title": tandem.Value.STRING("after")})
    assert raw.object("Task", tandem.Key.INT(1))["title"].value.value == "after"


def test_writes_to_another_file_or_from_another_thread_are_not_nested(db, tmp_path):
    other = tandem.open(tmp_path / "other.sqlite", [Task])
    errors = []

    def from_a_thread():
        try:
            with db.write() as tx:
                tx.add(Task(id=2, title="thread"))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    with db.write() as tx:
        tx.add(Task(id=1, title="outer"))
        with other.write() as tx_other:
            tx_other.add(Task(id=10))
        thread = threading.Thread(target=from_a_thread)
        thread.start()
        thread.join()
    assert errors == []
    assert keys(db) == [1, 2]
    assert keys(other) == [10]


def test_asyncio_tasks_each_have_their_own_write_but_one_task_cannot_nest(db, tmp_path):
    async def both():
        first_open, second_open = asyncio.Event(), asyncio.Event()

        async def writer(key, mine, theirs):
            with db.write() as tx:
                tx.add(Task(id=key))
                mine.set()
                await theirs.wait()  # both blocks are open at once, on one thread

        await asyncio.gather(writer(1, first_open, second_open),
                             writer(2, second_open, first_open))

        async def nested():
            with db.write() as tx:
                tx.add(Task(id=3))
                await asyncio.sleep(0)
                with db.write() as tx2:
                    tx2.add(Task(id=4))

        with pytest.raises(tandem.TandemError.InvalidArgument, match=NESTED):
            await nested()

    asyncio.run(both())
    assert keys(db) == [1, 2]


def test_transact_inside_a_write_block_is_refused(db):
    options = tandem.SyncOptions(url="wss://localhost:9/", path="/x", token=make_token(["/x"]),
                                 ca_file=None, allow_insecure=False,
                                 client_reset=tandem.ClientResetMode.MANUAL)
    session = db.sync(options)
    ops = [create_op(5)]

    async def in_a_block():
        with db.write() as tx:
            tx.add(Task(id=1))
            await session.transact(ops, 1000)

    with pytest.raises(tandem.TandemError.InvalidArgument, match=NESTED):
        asyncio.run(in_a_block())
    with pytest.raises(tandem.TandemError.InvalidArgument, match=NESTED):
        with db.write() as tx:
            tx.add(Task(id=1))
            session.transact_blocking(ops, 1000)
    session.stop()
    assert keys(db) == []


# --- 2. a finished transaction takes nothing ------------------------------------------------


T1 = (Task, 1)
USES = {
    "add": lambda tx: tx.add(Task(id=2)),
    "add update": lambda tx: tx.add(Task(id=2), update=True),
    "add_all": lambda tx: tx.add_all([Task(id=2), Task(id=3)]),
    "create": lambda tx: tx.create(Task, id=2),
    "upsert": lambda tx: tx.upsert(Task, id=1, title="late"),
    "set": lambda tx: tx.set(T1, title="late"),
    "delete": lambda tx: tx.delete(T1),
    "increment": lambda tx: tx.increment(T1, "count", 5),
    "list_insert": lambda tx: tx.list_insert(T1, "tags", 0, "late"),
    "list_set": lambda tx: tx.list_set(T1, "tags", 0, "late"),
    "list_move": lambda tx: tx.list_move(T1, "tags", 0, 1),
    "list_remove": lambda tx: tx.list_remove(T1, "tags", 0),
    "list_clear": lambda tx: tx.list_clear(T1, "tags"),
    "set_add": lambda tx: tx.set_add(T1, "labels", "late"),
    "set_remove": lambda tx: tx.set_remove(T1, "labels", "a"),
    "set_clear": lambda tx: tx.set_clear(T1, "labels"),
    "dict_set": lambda tx: tx.dict_set(T1, "notes", "k", "late"),
    "dict_remove": lambda tx: tx.dict_remove(T1, "notes", "k"),
    "dict_clear": lambda tx: tx.dict_clear(T1, "notes"),
}
ORIGINAL = Task(id=1, title="kept", count=1, tags=["a", "b"], labels={"a"}, notes={"k": "v"})


@pytest.mark.parametrize("use", sorted(USES))
@pytest.mark.parametrize("ending", ["committed", "rolled back", "failed"])
def test_every_use_of_a_finished_transaction_raises(db, use, ending):
    with db.write() as setup:
        setup.add(ORIGINAL)
    if ending == "committed":
        with db.write() as tx:
            tx.increment(T1, "count", 1)
        expected_count = 2
    elif ending == "rolled back":
        with pytest.raises(KeyError):
            with db.write() as tx:
                tx.increment(T1, "count", 1)
                raise KeyError("rolled back")
        expected_count = 1
    else:
        with pytest.raises(tandem.TandemError.InvalidArgument, match="already"):
            with db.write() as tx:
                tx.increment(T1, "count", 1)
                tx.add(Task(id=1))  # a duplicate key: the commit fails
        expected_count = 1
    assert tx.finished
    with pytest.raises(tandem.TandemError.InvalidArgument, match=ENDED):
        USES[use](tx)
    assert keys(db) == [1]
    assert db.get(Task, 1) == dataclasses.replace(ORIGINAL, count=expected_count)
    # The database takes writes as before.
    with db.write() as tx2:
        tx2.set(T1, title="new")
    assert db.get(Task, 1).title == "new"


def test_a_block_object_is_entered_once_and_its_transaction_is_open_inside_it(db):
    block = db.write()
    with block as tx:
        assert not tx.finished
        tx.add(Task(id=1))
    assert tx.finished
    with pytest.raises(tandem.TandemError.InvalidArgument, match=ENDED):
        with block:
            pass
    assert keys(db) == [1]


def test_an_untyped_transaction_after_its_block_raises_too(tmp_path):
    raw = tandem.Database.open(str(tmp_path / "raw.sqlite"), task_classes())
    with raw.write() as tx:
        tx.create("Task", tandem.Key.INT(1), {"title": tandem.Value.STRING("in")})
    with pytest.raises(tandem.TandemError.InvalidArgument, match="already committed or rolled back"):
        tx.create("Task", tandem.Key.INT(2), {"title": tandem.Value.STRING("late")})
    with pytest.raises(tandem.TandemError.InvalidArgument, match="already committed or rolled back"):
        tx.commit()
    with pytest.raises(ZeroDivisionError):
        with raw.write() as tx:
            tx.create("Task", tandem.Key.INT(3), {"title": tandem.Value.STRING("rolled back")})
            1 / 0
    with pytest.raises(tandem.TandemError.InvalidArgument, match="already committed or rolled back"):
        tx.set("Task", tandem.Key.INT(1), "title", tandem.Value.STRING("late"))
    assert [k.value for k in raw.query("Task", "TRUEPREDICATE", []).keys()] == [1]
    assert raw.object("Task", tandem.Key.INT(1))["title"].value.value == "in"
