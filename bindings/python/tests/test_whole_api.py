"""The rest of the API through the Python binding: collection edits of the untyped API, writes
through a path into embedded objects, the quarantine (filled by a real client reset), open
options (durability, writer timeout), destructive schema changes, the log listener, sync state
and progress listeners, and `transact` rejected by the server.

uniffi's records print as `OpenOptions()` under `repr` (their fields are not dataclass fields);
the assertion messages below use `str`, which shows the fields.
"""

import asyncio
import dataclasses
import gc
import subprocess
import sys
import threading
import time
from typing import Annotated, Any, Dict, List, Optional

import pytest

import tandem
from conftest import eventually, make_token, options, run_server, task_classes

P = tandem.PropertyType
C = tandem.Collection
W = tandem.WriteOp
S = tandem.Value.STRING
NAME = tandem.PathStep.NAME
INDEX = tandem.PathStep.INDEX


def prop(name: str, ptype: Any, collection: Any = C.SINGLE, nullable: bool = False,
         target: Optional[str] = None) -> Any:
    return tandem.PropertySpec(name=name, property_type=ptype, collection=collection,
                               nullable=nullable, link_target=target)


def plain(field: Any) -> Any:
    """A `FieldValue` as plain Python: values, lists, dicts; an embedded object as a dict."""
    if isinstance(field, tandem.FieldValue.SINGLE):
        return getattr(field.value, "value", None)
    if isinstance(field, (tandem.FieldValue.LIST, tandem.FieldValue.SET)):
        return [getattr(v, "value", None) for v in field.items]
    if isinstance(field, tandem.FieldValue.DICTIONARY):
        return {k: getattr(v, "value", None) for k, v in field.entries.items()}
    if isinstance(field, tandem.FieldValue.EMBEDDED):
        return {k: plain(v) for k, v in field.fields.items()} if field.present else None
    if isinstance(field, tandem.FieldValue.EMBEDDED_LIST):
        return [{k: plain(v) for k, v in item.items()} for item in field.items]
    if isinstance(field, tandem.FieldValue.EMBEDDED_DICTIONARY):
        return {k: None if item is None else {n: plain(v) for n, v in item.items()}
                for k, item in field.entries.items()}
    raise AssertionError(f"unexpected field {field}")


def read(db: Any, class_name: str, key: int) -> Any:
    """The object as a dict of plain values, or None."""
    obj = db.object(class_name, tandem.Key.INT(key))
    return None if obj is None else {name: plain(field) for name, field in obj.items()}


class GatedTokens(tandem.TokenProvider):
    """Hands out a token only once `open` is set, so listeners registered right after
    `sync()` are in place before the session connects."""

    def __init__(self, path: str = "/todos") -> None:
        self.open = threading.Event()
        self.path = path

    def fetch_token(self) -> str:
        assert self.open.wait(30), "the test never opened the gate"
        return make_token([self.path])


class Errors(tandem.ErrorListener):
    def __init__(self) -> None:
        self.seen: List[tuple] = []

    def on_error(self, code: int, message: str, will_retry: bool) -> None:
        self.seen.append((code, message, will_retry))


# --- 1. list move / set / clear, set clear, dictionary clear (untyped API) ---------------------

BAG = [tandem.ClassSpec(name="Bag", primary_key="_id", properties=[
    prop("_id", P.INT), prop("items", P.STRING, C.LIST), prop("labels", P.STRING, C.SET),
    prop("notes", P.STRING, C.DICTIONARY)])]


def test_untyped_list_move_set_clear_and_set_and_dictionary_clear(tmp_path):
    # The typed layer's list_set / list_move / *_clear are in test_models.py; these are the
    # untyped WriteTransaction methods and the WriteOp variants behind them.
    db = tandem.Database.open(str(tmp_path / "bag.sqlite"), BAG)
    one, two = tandem.Key.INT(1), tandem.Key.INT(2)
    with db.write() as tx:
        for key in (one, two):
            tx.create("Bag", key, {})
            for i, v in enumerate("abcd"):
                tx.list_insert("Bag", key, "items", i, S(v))
            tx.set_insert("Bag", key, "labels", S("red"))
            tx.set_insert("Bag", key, "labels", S("blue"))
            tx.dict_set("Bag", key, "notes", "k1", S("v1"))
            tx.dict_set("Bag", key, "notes", "k2", S("v2"))
    with db.write() as tx:
        tx.list_move("Bag", one, "items", 0, 3)        # [b, c, d, a]
        tx.list_set("Bag", one, "items", 1, S("C"))    # [b, C, d, a]
    assert read(db, "Bag", 1)["items"] == ["b", "C", "d", "a"]
    version = db.write([
        W.LIST_MOVE(class_name="Bag", key=one, property="items", _from=3, to=0),   # [a, b, C, d]
        W.LIST_SET(class_name="Bag", key=one, property="items", index=3, value=S("D")),
    ])
    assert isinstance(version, int)
    assert read(db, "Bag", 1)["items"] == ["a", "b", "C", "D"]

    # Out of range: InvalidArgument naming the operation and the range; nothing written.
    with pytest.raises(tandem.TandemError.InvalidArgument) as e:
        db.write([W.LIST_SET(class_name="Bag", key=one, property="items", index=0, value=S("x")),
                  W.LIST_SET(class_name="Bag", key=one, property="items", index=4, value=S("x"))])
    assert e.value.message.startswith("operation 1: ") and "out of range" in e.value.message
    with pytest.raises(tandem.TandemError.InvalidArgument) as e:
        with db.write() as tx:
            tx.list_move("Bag", one, "items", 9, 0)
    assert "out of range" in e.value.message
    with pytest.raises(tandem.TandemError.InvalidArgument) as e:
        with db.write() as tx:
            tx.list_clear("Bag", one, "labels")  # a set is not a list
    assert read(db, "Bag", 1)["items"] == ["a", "b", "C", "D"]

    # Clears: the recording transaction's methods on Bag 1, the WriteOps on Bag 2.
    with db.write() as tx:
        tx.list_clear("Bag", one, "items")
        tx.set_clear("Bag", one, "labels")
        tx.dict_clear("Bag", one, "notes")
        tx.set_insert("Bag", one, "labels", S("after clear"))  # the set still takes values
    db.write([W.LIST_CLEAR(class_name="Bag", key=two, property="items"),
              W.SET_CLEAR(class_name="Bag", key=two, property="labels"),
              W.DICT_CLEAR(class_name="Bag", key=two, property="notes")])
    assert read(db, "Bag", 1) == {"items": [], "labels": ["after clear"], "notes": {}}
    assert read(db, "Bag", 2) == {"items": [], "labels": [], "notes": {}}
    cleared = db.object("Bag", two)
    assert cleared is not None
    assert isinstance(cleared["labels"], tandem.FieldValue.SET)
    assert isinstance(cleared["notes"], tandem.FieldValue.DICTIONARY)


# --- 2. writes through a path into collections inside embedded objects -------------------------

EMBEDDED = [
    tandem.ClassSpec(name="Person", primary_key="_id", properties=[
        prop("_id", P.INT),
        prop("address", P.LINK, nullable=True, target="Address"),
        prop("homes", P.LINK, C.LIST, target="Address"),
        prop("places", P.LINK, C.DICTIONARY, nullable=True, target="Address")]),
    tandem.ClassSpec(name="Address", primary_key=None, properties=[
        prop("street", P.STRING), prop("tags", P.STRING, C.LIST),
        prop("labels", P.STRING, C.SET), prop("scores", P.INT, C.DICTIONARY)]),
]


def test_writes_through_a_path_reach_collections_inside_embedded_objects(tmp_path):
    db = tandem.Database.open(str(tmp_path / "embedded.sqlite"), EMBEDDED)
    k = tandem.Key.INT(1)

    def op(kind: Any, prop_name: str, path: List[Any], **kw: Any) -> Any:
        return kind(class_name="Person", key=k, property=prop_name, path=path, **kw)

    tags = [NAME("tags")]
    db.write([
        W.CREATE(class_name="Person", key=k, values={}),
        op(W.CREATE_EMBEDDED, "address", []),
        op(W.SET, "address", [NAME("street")], value=S("Main")),
        *[op(W.LIST_INSERT, "address", tags, index=i, value=S(v)) for i, v in enumerate("abc")],
        op(W.LIST_MOVE, "address", tags, _from=0, to=2),                  # [b, c, a]
        op(W.LIST_SET, "address", tags, index=0, value=S("B")),           # [B, c, a]
        op(W.LIST_ERASE, "address", tags, index=1),                       # [B, a]
        op(W.SET_INSERT, "address", [NAME("labels")], value=S("x")),
        op(W.SET_INSERT, "address", [NAME("labels")], value=S("y")),
        op(W.SET_ERASE, "address", [NAME("labels")], value=S("x")),
        op(W.DICT_SET, "address", [NAME("scores")], entry="k", value=tandem.Value.INT(1)),
        op(W.LIST_INSERT_EMBEDDED, "homes", [], index=0),
        op(W.LIST_INSERT, "homes", [INDEX(0), NAME("tags")], index=0, value=S("h")),
        op(W.CREATE_EMBEDDED, "places", [NAME("home")]),
        op(W.DICT_SET, "places", [NAME("home"), NAME("scores")], entry="z",
           value=tandem.Value.INT(5)),
    ])
    empty_address = {"street": "", "tags": [], "labels": [], "scores": {}}
    assert read(db, "Person", 1) == {
        "address": {"street": "Main", "tags": ["B", "a"], "labels": ["y"], "scores": {"k": 1}},
        "homes": [{**empty_address, "tags": ["h"]}],
        "places": {"home": {**empty_address, "scores": {"z": 5}}},
    }
    # The recording transaction takes the same paths (keyword `path`).
    with db.write() as tx:
        tx.list_move("Person", k, "address", 1, 0, path=tags)            # [a, B]
        tx.list_set("Person", k, "address", 1, S("b"), path=tags)         # [a, b]
        tx.list_clear("Person", k, "homes", path=[INDEX(0), NAME("tags")])
        tx.set_clear("Person", k, "address", path=[NAME("labels")])
        tx.dict_clear("Person", k, "places", path=[NAME("home"), NAME("scores")])
    after = read(db, "Person", 1)
    assert after["address"]["tags"] == ["a", "b"]
    assert after["address"]["labels"] == [] and after["address"]["scores"] == {"k": 1}
    assert after["homes"] == [empty_address] and after["places"] == {"home": empty_address}
    db.write([op(W.LIST_CLEAR, "address", tags), op(W.DICT_CLEAR, "address", [NAME("scores")])])
    assert read(db, "Person", 1)["address"] == {**empty_address, "street": "Main"}

    # A path that leads nowhere is InvalidArgument naming what is missing; nothing is written.
    with pytest.raises(tandem.TandemError.InvalidArgument) as e:
        db.write([op(W.LIST_INSERT, "address", tags, index=0, value=S("lost")),
                  op(W.LIST_INSERT, "address", [NAME("nope")], index=0, value=S("x"))])
    assert e.value.message.startswith("operation 1: ") and "Address.nope" in e.value.message
    with pytest.raises(tandem.TandemError.InvalidArgument) as e:
        db.write([op(W.LIST_INSERT, "homes", [INDEX(3), NAME("tags")], index=0, value=S("x"))])
    assert "homes" in e.value.message
    assert read(db, "Person", 1)["address"]["tags"] == []


class Inner(tandem.EmbeddedModel):
    tags: List[str] = dataclasses.field(default_factory=list)


class Box(tandem.Model):
    id: Annotated[int, tandem.PrimaryKey]
    inner: Optional[Inner] = None


def test_typed_layer_edits_no_element_inside_embedded_objects_and_reads_path_writes(tmp_path):
    # The typed layer has no `path`: a collection edit names a property of the object itself
    # (an embedded object's collection is replaced whole, with the embedded object). Element
    # edits inside embedded objects are the untyped API's (db.raw), and the typed layer reads
    # what they wrote.
    db = tandem.open(tmp_path / "typed.sqlite", [Box, Inner])
    with db.write() as tx:
        tx.add(Box(id=2))
    with pytest.raises(TypeError, match="Box.inner is not a list"):
        with db.write() as tx:
            tx.list_insert((Box, 2), "inner", 0, "a")
    with pytest.raises(AttributeError, match="Box has no property inner.tags"):
        with db.write() as tx:
            tx.list_insert((Box, 2), "inner.tags", 0, "a")
    assert db.get(Box, 2) == Box(id=2, inner=None)
    k = tandem.Key.INT(2)
    db.raw.write([
        W.CREATE_EMBEDDED(class_name="Box", key=k, property="inner"),
        W.LIST_INSERT(class_name="Box", key=k, property="inner", index=0, value=S("y"),
                      path=[NAME("tags")]),
        W.LIST_INSERT(class_name="Box", key=k, property="inner", index=0, value=S("z"),
                      path=[NAME("tags")]),
    ])
    assert db.get(Box, 2) == Box(id=2, inner=Inner(tags=["z", "y"]))
    db.raw.write([W.LIST_MOVE(class_name="Box", key=k, property="inner", _from=0, to=1,
                              path=[NAME("tags")])])
    assert db.get(Box, 2) == Box(id=2, inner=Inner(tags=["y", "z"]))


# --- 3. the quarantine ------------------------------------------------------------------------


def test_an_empty_quarantine_reads_empty_and_clearing_an_unknown_id_changes_nothing(tmp_path):
    db = tandem.Database.open(str(tmp_path / "q.sqlite"), task_classes())
    assert db.quarantine() == []
    db.clear_quarantine(12345)  # documented: removes the record with that id; there is none
    db.clear_quarantine(None)
    assert db.quarantine() == []


def test_a_client_reset_quarantines_what_it_cannot_recover(tmp_path):
    # A file that keeps no recovery window (recovery_window=0) syncs tasks 1 and 2, then edits
    # both offline (two changesets, the second also creating task 3). The server it comes back
    # to has lost everything (a fresh data directory): a client reset in Recover mode re-creates
    # task 3 and quarantines the edits of tasks 1 and 2, which no longer exist anywhere.
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    a = tandem.Database.open_with_options(
        str(tmp_path / "a.sqlite"), task_classes(),
        tandem.OpenOptions(durability=tandem.Durability.NORMAL, recovery_window=0))
    key = tandem.Key.INT

    def title(db: Any, i: int) -> Optional[str]:
        obj = read(db, "Task", i)
        return None if obj is None else obj["title"]

    with run_server(tmp_path / "first") as first:
        session = a.sync(options(first), None)
        with a.write() as tx:
            tx.create("Task", key(1), {"title": S("one")})
            tx.create("Task", key(2), {"title": S("two")})
        asyncio.run(session.wait_for_upload(30_000))
        asyncio.run(session.wait_for_download(30_000))
        session.stop()
    with a.write() as tx:
        tx.set("Task", key(1), "title", S("edited offline"))
    with a.write() as tx:
        tx.set("Task", key(2), "title", S("edited offline too"))
        tx.create("Task", key(3), {"title": S("created offline")})
    assert a.quarantine() == []
    with run_server(tmp_path / "second") as second:
        gate, errors = GatedTokens(), Errors()
        session = a.sync(tandem.SyncOptions(
            url=second["url"], path="/todos", token="", ca_file=second["ca"],
            client_reset=tandem.ClientResetMode.RECOVER), gate)
        handle = session.observe_errors(errors)
        gate.open.set()
        eventually(lambda: len(a.quarantine()) == 2)
        first_record, second_record = a.quarantine()
        assert first_record.id != second_record.id
        assert first_record.original_version < second_record.original_version
        assert [(i.index, i.instruction) for i in first_record.instructions] == [
            (0, 'Update Task[1].title = "edited offline"')]
        assert [(i.index, i.instruction) for i in second_record.instructions] == [
            (0, 'Update Task[2].title = "edited offline too"')]
        for record in (first_record, second_record):
            assert "does not exist on the server" in record.instructions[0].reason, str(record)
        assert first_record.reason.startswith("1 of 1 instructions not recovered"), str(first_record)
        assert second_record.reason.startswith("1 of 3 instructions not recovered"), str(second_record)
        # What could be recovered was: task 3 is here, tasks 1 and 2 are gone.
        assert (title(a, 1), title(a, 2), title(a, 3)) == (None, None, "created offline")
        eventually(lambda: any(code == 0 and "quarantined" in message and retry
                               for code, message, retry in errors.seen))
        assert any(code == 208 and message.startswith("client reset:")
                   for code, message, _ in errors.seen), errors.seen

        a.clear_quarantine(second_record.id + first_record.id + 100)  # unknown: nothing happens
        assert [q.id for q in a.quarantine()] == [first_record.id, second_record.id]
        a.clear_quarantine(first_record.id)
        assert [q.id for q in a.quarantine()] == [second_record.id]
        a.clear_quarantine(None)
        assert a.quarantine() == []

        # The recovered task reached the new server; the quarantined edits did not.
        asyncio.run(session.wait_for_upload(30_000))
        b = asyncio.run(tandem.open_synced(str(tmp_path / "b.sqlite"), task_classes(),
                                           options(second), None, 30_000))
        assert (title(b.database, 1), title(b.database, 3)) == (None, "created offline")
        handle.cancel()
        b.session.stop()
        session.stop()


# --- 4. open options --------------------------------------------------------------------------


def test_open_options_defaults_and_each_durability_writes_and_reads_back(tmp_path):
    defaults = tandem.OpenOptions(durability=tandem.Durability.FULL)
    assert (defaults.writer_timeout_ms, defaults.recovery_window) == (10_000, 1_000)
    durabilities = list(tandem.Durability)
    assert durabilities == [tandem.Durability.NORMAL, tandem.Durability.FULL]
    for durability in durabilities:
        path = str(tmp_path / f"{durability.name}.sqlite")
        db = tandem.Database.open_with_options(
            path, task_classes(),
            tandem.OpenOptions(durability=durability, writer_timeout_ms=2_000, recovery_window=5))
        with db.write() as tx:
            tx.create("Task", tandem.Key.INT(1), {"title": S(durability.name)})
        db.write([W.ADD(class_name="Task", key=tandem.Key.INT(1), property="count", amount=3)])
        assert read(db, "Task", 1)["title"] == durability.name
        del db
        gc.collect()
        # Reopened with the other durability (it is a connection setting, not the file's).
        other = durabilities[1 - durabilities.index(durability)]
        again = tandem.Database.open_with_options(path, task_classes(),
                                                  tandem.OpenOptions(durability=other))
        assert read(again, "Task", 1) == {"title": durability.name, "done": False, "count": 3,
                                          "tags": []}


# Reads a file's objects from another process (the sqlite3 module's own SQLite): prints the
# table's row count, or the error.
READ_ELSEWHERE = """
import sqlite3, sys
try:
    con = sqlite3.connect(sys.argv[1], timeout=0.2)
    print(con.execute('SELECT count(*) FROM "t:Task"').fetchone()[0])
except sqlite3.Error as e:
    print("error:", e)
"""


def read_elsewhere(path: str) -> str:
    return subprocess.run([sys.executable, "-c", READ_ELSEWHERE, path], text=True,
                          capture_output=True, check=True).stdout.strip()


def test_a_file_open_exclusive_to_process_is_locked_against_other_processes(tmp_path):
    assert tandem.OpenOptions(durability=tandem.Durability.NORMAL).exclusive_to_process is False
    shared_path = str(tmp_path / "shared.sqlite")
    shared = tandem.Database.open(shared_path, task_classes())
    shared.write([W.CREATE(class_name="Task", key=tandem.Key.INT(1), values={"title": S("a")})])
    assert read_elsewhere(shared_path) == "1"

    path = str(tmp_path / "exclusive.sqlite")
    db = tandem.Database.open_with_options(
        path, task_classes(),
        tandem.OpenOptions(durability=tandem.Durability.NORMAL, exclusive_to_process=True))
    with db.write() as tx:
        tx.create("Task", tandem.Key.INT(1), {"title": S("mine")})
        tx.create("Task", tandem.Key.INT(2), {"title": S("mine too")})
    assert read_elsewhere(path) == "error: database is locked"
    # The holder goes on as before.
    db.write([W.CREATE(class_name="Task", key=tandem.Key.INT(3), values={"title": S("more")})])
    assert read(db, "Task", 3)["title"] == "more"
    del tx, db  # the last references: the database closes
    gc.collect()
    # Closed: the lock is gone and every commit is in the file.
    assert read_elsewhere(path) == "3"


# Holds SQLite's write lock on a file from another process until its stdin says otherwise (in
# this process the lock would not conflict: POSIX locks are per process, and the sqlite3
# module's SQLite is not Tandem's).
HOLD_WRITE_LOCK = """
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=0)
con.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
con.execute("ROLLBACK")
"""


def test_a_writer_waiting_longer_than_the_writer_timeout_gets_timeout(tmp_path):
    path = str(tmp_path / "busy.sqlite")
    db = tandem.Database.open_with_options(
        path, task_classes(),
        tandem.OpenOptions(durability=tandem.Durability.NORMAL, writer_timeout_ms=300))
    holder = subprocess.Popen([sys.executable, "-c", HOLD_WRITE_LOCK, path], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline() == "locked\n"
        for attempt in ("batch", "block"):
            started = time.monotonic()
            with pytest.raises(tandem.TandemError.Timeout) as e:
                if attempt == "batch":
                    db.write([W.CREATE(class_name="Task", key=tandem.Key.INT(1),
                                       values={"title": S("blocked")})])
                else:
                    with db.write() as tx:
                        tx.create("Task", tandem.Key.INT(1), {"title": S("blocked")})
            waited = time.monotonic() - started
            # Another process holds the write lock: the same error as a second writer here.
            assert "another write transaction is still open after 300ms" in e.value.message, \
                e.value.message
            # It waited for the other writer, and as long as asked, not the 10 s default.
            assert 0.25 <= waited < 5, f"{attempt}: waited {waited:.2f} s"
        assert db.object("Task", tandem.Key.INT(1)) is None
    finally:
        if holder.stdin is not None:
            holder.stdin.close()  # EOF: the holder rolls back and exits
        holder.wait(timeout=10)
    db.write([W.CREATE(class_name="Task", key=tandem.Key.INT(1), values={"title": S("now")})])
    assert read(db, "Task", 1)["title"] == "now"


# --- 5. destructive schema changes ------------------------------------------------------------


def changed_task(name: str, **changes: Any) -> List[Any]:
    classes = task_classes()
    (spec,) = [p for p in classes[0].properties if p.name == name]
    for attribute, value in changes.items():
        setattr(spec, attribute, value)
    return classes


def test_a_destructive_schema_change_at_open_is_a_schema_error(tmp_path):
    path = str(tmp_path / "schema.sqlite")
    db = tandem.Database.open(path, task_classes())
    db.write([W.CREATE(class_name="Task", key=tandem.Key.INT(1),
                       values={"title": S("kept"), "count": tandem.Value.INT(7)})])
    del db
    gc.collect()
    destructive: Dict[str, Dict[str, Any]] = {
        "count": {"property_type": P.STRING},      # another type
        "done": {"nullable": True},                # another nullability
        "tags": {"collection": C.SET},             # another collection kind
        "_id": {"property_type": P.STRING},        # another primary key type
    }
    for name, changes in destructive.items():
        with pytest.raises(tandem.TandemError.Schema) as e:
            tandem.Database.open(path, changed_task(name, **changes))
        assert f"schema change to Task.{name} refused" in e.value.message, e.value.message
    # A property the schema omits is not destructive: it stays in the file, with its values.
    without_count = task_classes()
    without_count[0].properties = [p for p in without_count[0].properties if p.name != "count"]
    partial = tandem.Database.open(path, without_count)
    assert read(partial, "Task", 1)["title"] == "kept"
    del partial
    gc.collect()
    again = tandem.Database.open(path, task_classes())
    assert read(again, "Task", 1)["count"] == 7


class CounterV1(tandem.Model, name="Counter"):
    id: Annotated[int, tandem.PrimaryKey]
    value: int = 0


class CounterV2(tandem.Model, name="Counter"):
    id: Annotated[int, tandem.PrimaryKey]
    value: Optional[str] = None


def test_a_typed_model_changing_a_property_type_is_a_schema_error(tmp_path):
    db = tandem.open(tmp_path / "counter.sqlite", [CounterV1])
    with db.write() as tx:
        tx.add(CounterV1(id=1, value=3))
    with pytest.raises(tandem.TandemError.Schema, match="Counter.value"):
        tandem.open(tmp_path / "counter.sqlite", [CounterV2])
    assert tandem.open(tmp_path / "counter.sqlite", [CounterV1]).get(CounterV1, 1) == CounterV1(
        id=1, value=3)


# --- 6. the log listener ----------------------------------------------------------------------


class Logs(tandem.LogListener):
    def __init__(self) -> None:
        self.events: List[tuple] = []

    def on_log(self, level: Any, target: str, message: str) -> None:
        self.events.append((level, target, message))


class Throws(tandem.ResultsListener):
    def on_change(self, change: Any) -> None:
        raise ValueError("thrown by a test listener")


class Collect(tandem.ResultsListener):
    def __init__(self) -> None:
        self.changes: List[Any] = []

    def on_change(self, change: Any) -> None:
        self.changes.append(change)


def test_the_log_listener_gets_warnings_at_its_level_and_nothing_once_cleared(tmp_path, capfd):
    # What src/ffi documents as logged without a server: a listener that throws is a warning
    # (target tandem::ffi::database), and the other listeners still run.
    db = tandem.Database.open(str(tmp_path / "log.sqlite"), task_classes())
    results = db.query("Task", "TRUEPREDICATE", [])
    handles = [results.observe(Throws())]
    delivered = Collect()
    handles.append(results.observe(delivered))

    def commit(i: int) -> None:
        db.write([W.CREATE(class_name="Task", key=tandem.Key.INT(i), values={})])
        eventually(lambda: len(delivered.changes) >= i)
        time.sleep(0.2)  # the notifier has called both listeners (and logged) by now

    logs = Logs()
    try:
        tandem.set_log_listener(logs, tandem.LogLevel.WARN)
        commit(1)
        warnings = [e for e in logs.events if "a results listener threw" in e[2]]
        assert len(warnings) == 1, logs.events
        level, target, message = warnings[0]
        assert level == tandem.LogLevel.WARN
        assert target == "tandem::ffi::database"
        assert "thrown by a test listener" in message
        # Above the listener's level: not delivered.
        tandem.set_log_listener(logs, tandem.LogLevel.ERROR)
        commit(2)
        assert len([e for e in logs.events if "threw" in e[2]]) == 1, logs.events
        # Replaced by another listener: the new one gets them, the old one not.
        other = Logs()
        tandem.set_log_listener(other, tandem.LogLevel.INFO)
        commit(3)
        assert [e[0] for e in other.events if "threw" in e[2]] == [tandem.LogLevel.WARN]
        assert len([e for e in logs.events if "threw" in e[2]]) == 1
        # Cleared: nobody gets them, and the warning goes to stderr as with no listener at all.
        capfd.readouterr()
        tandem.clear_log_listener()
        commit(4)
        assert len([e for e in other.events if "threw" in e[2]]) == 1, other.events
        assert "thrown by a test listener" in capfd.readouterr().err
    finally:
        tandem.clear_log_listener()
        for handle in handles:
            handle.cancel()


# --- 7. sync state and progress listeners -----------------------------------------------------


class States(tandem.SyncStateListener):
    def __init__(self) -> None:
        self.seen: List[Any] = []

    def on_state(self, state: Any) -> None:
        self.seen.append(state)


class Progress(tandem.ProgressListener):
    def __init__(self) -> None:
        self.seen: List[Any] = []

    def on_progress(self, progress: Any) -> None:
        self.seen.append(progress)


def plausible(p: Any) -> bool:
    return (0 <= p.upload_transferred <= p.upload_transferable
            and 0 <= p.download_transferred <= p.download_transferable)


def test_state_and_progress_listeners_follow_a_sync(server, tmp_path):
    a = tandem.Database.open(str(tmp_path / "a.sqlite"), task_classes())
    gate = GatedTokens()
    session = a.sync(options(server, token=""), gate)
    states, progress = States(), Progress()
    handles = [session.observe_state(states), session.observe_progress(progress)]
    gate.open.set()
    eventually(lambda: tandem.SyncState.CONNECTED() in states.seen)
    with a.write() as tx:
        for i in range(20):
            tx.create("Task", tandem.Key.INT(i), {"title": S(f"task {i}")})
    asyncio.run(session.wait_for_upload(30_000))
    eventually(lambda: progress.seen and progress.seen[-1] == session.progress())
    assert all(plausible(p) for p in progress.seen), [str(p) for p in progress.seen]
    assert any(p.upload_transferred < p.upload_transferable for p in progress.seen), \
        "some upload was pending: " + str([str(p) for p in progress.seen])
    done = progress.seen[-1]
    assert done.upload_transferred == done.upload_transferable > 0, str(done)

    b = tandem.Database.open(str(tmp_path / "b.sqlite"), task_classes())
    gate_b = GatedTokens()
    session_b = b.sync(options(server, token=""), gate_b)
    progress_b = Progress()
    handles.append(session_b.observe_progress(progress_b))
    gate_b.open.set()
    asyncio.run(session_b.wait_for_download(30_000))
    assert b.query("Task", "TRUEPREDICATE", []).count() == 20
    eventually(lambda: progress_b.seen and progress_b.seen[-1] == session_b.progress())
    assert all(plausible(p) for p in progress_b.seen), [str(p) for p in progress_b.seen]
    downloaded = progress_b.seen[-1]
    assert downloaded.download_transferred == downloaded.download_transferable > 0, str(downloaded)

    session.stop()
    eventually(lambda: states.seen and states.seen[-1] == tandem.SyncState.DISCONNECTED())
    seen = [s for s in states.seen if s != tandem.SyncState.CONNECTING()]
    assert seen == [tandem.SyncState.CONNECTED(), tandem.SyncState.DISCONNECTED()], \
        [str(s) for s in states.seen]
    assert session.state() == tandem.SyncState.DISCONNECTED()
    for handle in handles:
        handle.cancel()
    session_b.stop()


# --- 8. transact ------------------------------------------------------------------------------


class ObjectChanges(tandem.ObjectListener):
    def __init__(self) -> None:
        self.seen: List[Any] = []

    def on_change(self, change: Any) -> None:
        self.seen.append(change)


def test_transact_is_rejected_when_another_client_changed_the_object_first(server, tmp_path):
    def set_title(i: int, text: str) -> Any:
        return W.SET(class_name="Task", key=tandem.Key.INT(i), property="title", value=S(text))

    def title(db: Any, i: int) -> Any:
        return read(db, "Task", i)["title"]

    a = tandem.Database.open(str(tmp_path / "a.sqlite"), task_classes())
    b = tandem.Database.open(str(tmp_path / "b.sqlite"), task_classes())
    session_a, session_b = a.sync(options(server), None), b.sync(options(server), None)
    with a.write() as tx:
        tx.create("Task", tandem.Key.INT(1), {"title": S("original")})
        tx.create("Task", tandem.Key.INT(2), {"title": S("two")})
    asyncio.run(session_a.wait_for_upload(30_000))
    asyncio.run(session_b.wait_for_download(30_000))
    session_a.stop()  # a goes offline and does not hear of b's change
    eventually(lambda: session_a.state() == tandem.SyncState.DISCONNECTED())
    b.write([set_title(1, "from b")])
    asyncio.run(session_b.wait_for_upload(30_000))

    changes = ObjectChanges()
    handle = a.observe_object("Task", tandem.Key.INT(1), changes)
    gate = GatedTokens()
    session_a = a.sync(options(server, token=""), gate)

    async def transact_offline_first() -> Any:
        verdict = asyncio.ensure_future(session_a.transact([set_title(1, "from a")], 30_000))
        # Committed locally at once (before a connects and downloads b's change).
        while title(a, 1) != "from a":
            await asyncio.sleep(0.01)
        gate.open.set()
        return await verdict

    outcome = asyncio.run(transact_offline_first())
    assert isinstance(outcome, tandem.TransactOutcome.REJECTED), str(outcome)
    assert "Task[1]" in outcome.reason and "concurrently" in outcome.reason, outcome.reason
    assert title(a, 1) == "from b"  # rolled back: b's title, never "from a" again
    eventually(lambda: len(changes.seen) >= 2)  # the write, then its rollback
    assert all(c == tandem.ObjectChange.MODIFIED(["title"]) for c in changes.seen), \
        [str(c) for c in changes.seen]

    # The session goes on: an unconflicted transaction is accepted and reaches b.
    outcome = asyncio.run(session_a.transact([set_title(2, "checked")], 30_000))
    assert isinstance(outcome, tandem.TransactOutcome.ACCEPTED) and outcome.server_version > 0
    asyncio.run(session_b.wait_for_download(30_000))
    assert title(b, 2) == "checked"
    with pytest.raises(tandem.TandemError.Sync, match="wrote nothing"):
        asyncio.run(session_a.transact([], 30_000))
    handle.cancel()
    session_a.stop()
    session_b.stop()
