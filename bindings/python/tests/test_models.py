"""The typed API: every type round-trips, writes, live results, typed listeners, errors."""

import asyncio
import dataclasses
import datetime
import decimal
import math
import random
import struct
import sys
import threading
import time
import uuid
from typing import Annotated, Any, List

import pytest

import tandem
from conftest import apply_change, eventually
from models_fixture import MODELS, Address, Dog, Geo, Note, Person

UTC = datetime.timezone.utc


@pytest.fixture
def tdb(tmp_path):
    return tandem.open(tmp_path / "typed.sqlite", MODELS)


def full_person():
    rex = Dog(id=tandem.ObjectId(), name="Rex")
    return rex, Person(
        id=1,
        name="Ada ✓",
        age=-(2**63),
        active=True,
        photo=bytes(range(256)),
        score=-2.5e-300,
        born=datetime.datetime(1815, 12, 10, 8, 30, 1, 123456, tzinfo=UTC),
        balance=decimal.Decimal("-123456789012345678901234567890.12"),
        token=uuid.uuid4(),
        ref=tandem.ObjectId(),
        nickname=None,
        dog=rex,
        address=Address(street="1 Main St", city=None, geo=Geo(lat=51.5, lon=-0.12)),
        tags=["b", "a", "b"],
        lucky={7, 3, 2**62},
        scores={"math": 1.5, "inf": math.inf, "neg": -math.inf},
        dogs=[rex, rex],
        homes=[Address(street="x"), Address(street="y", geo=Geo(lat=1, lon=2))],
        places={"home": Address(street="z"), "none": None},
        stamps=[datetime.datetime(2030, 1, 1, tzinfo=UTC), datetime.datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC)],
    )


def test_every_type_round_trips(tdb):
    rex, ada = full_person()
    with tdb.write() as tx:
        tx.add(rex)
        tx.add(ada)
    got = tdb.get(Person, 1)
    assert got == ada
    assert got is not ada
    assert got.born.tzinfo == UTC
    assert got.dog == rex and got.dogs == [rex, rex]
    assert got.dog.owner is None
    # Dog.id is stored as "_id" (tandem.Persisted): queries and the untyped API use that name.
    assert tdb.objects(Dog, "_id == $0", rex.id).keys() == [rex.id]
    assert tdb.raw.object("Dog", tandem.Key.OBJECT_ID(rex.id.binary))["name"] == (
        tandem.FieldValue.SINGLE(tandem.Value.STRING("Rex")))
    # Floats that JSON cannot spell, and a decimal kept exactly.
    assert tdb.get(Person, 1).balance.as_tuple() == ada.balance.as_tuple()
    with tdb.write() as tx:
        tx.set(ada, score=math.nan)
    assert math.isnan(tdb.get(Person, 1).score)


def test_doubles_read_back_bit_for_bit(tdb):
    # The batch crosses as JSON: each double as Python's shortest repr, parsed in Rust. Without
    # serde_json's float_roundtrip, -1.5e-300 came back one unit in the last place off.
    rng = random.Random(7)
    doubles = [-1.5e-300, 5e-324, sys.float_info.max, sys.float_info.min, 0.1]
    while len(doubles) < 2000:
        d = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
        if math.isfinite(d):
            doubles.append(d)
    _, ada = full_person()
    ada.scores = {str(i): d for i, d in enumerate(doubles)}
    ada.score = doubles[0]
    with tdb.write() as tx:
        tx.add(ada.dog)
        tx.add(ada)
    got = tdb.get(Person, 1)
    assert got.score == -1.5e-300
    bits = lambda d: struct.pack("<d", d)  # noqa: E731
    assert [bits(got.scores[str(i)]) for i in range(len(doubles))] == [bits(d) for d in doubles]


def test_datetimes_are_utc_instants_and_naive_ones_are_refused(tdb):
    plus2 = datetime.timezone(datetime.timedelta(hours=2))
    local = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=plus2)
    with tdb.write() as tx:
        tx.create(Person, id=1, born=local)
    born = tdb.get(Person, 1).born
    assert born == local and born.tzinfo == UTC and born.hour == 10
    with pytest.raises(TypeError, match="naive"):
        with tdb.write() as tx:
            tx.create(Person, id=2, born=datetime.datetime(2024, 5, 1))
    assert tdb.get(Person, 2) is None


def test_other_key_types_and_class_names(tdb):
    key = uuid.uuid4()
    with tdb.write() as tx:
        tx.add(Note(key=key, text="hello"))
    assert tdb.get(Note, key) == Note(key=key, text="hello")
    assert tdb.raw.query("Memo", "TRUEPREDICATE", []).count() == 1  # stored under name="Memo"
    assert tdb.objects(Note).keys() == [key]


def test_partial_writes_and_collection_edits(tdb):
    rex, ada = full_person()
    with tdb.write() as tx:
        tx.add(rex)
        tx.create(Person, id=2, name="Bob", tags=["x"], lucky={1}, scores={"a": 1.0})
    with tdb.write() as tx:
        tx.set((Person, 2), age=40, nickname="B", tags=["p", "q", "r"])
        tx.increment((Person, 2), "age", 2)
        tx.list_insert((Person, 2), "tags", 0, "first")
        tx.list_set((Person, 2), "tags", 1, "P")
        tx.list_move((Person, 2), "tags", 0, 3)
        tx.list_remove((Person, 2), "tags", 1)
        tx.set_add((Person, 2), "lucky", 5)
        tx.set_remove((Person, 2), "lucky", 1)
        tx.dict_set((Person, 2), "scores", "b", 2.5)
        tx.dict_remove((Person, 2), "scores", "a")
        tx.list_insert((Person, 2), "dogs", 0, rex)
        tx.list_insert((Person, 2), "homes", 0, Address(street="s"))
        tx.list_insert((Person, 2), "homes", 0, Address(street="before s", geo=Geo(lat=5, lon=6)))
        tx.dict_set((Person, 2), "places", "p", Address(street="t", geo=Geo(lat=3, lon=4)))
        tx.set((Person, 2), address=Address(street="a", city="c"))
    bob = tdb.get(Person, 2)
    assert bob.age == 42 and bob.nickname == "B"
    assert bob.tags == ["P", "r", "first"]  # [first,P,q,r] -> move 0->3 -> [P,q,r,first] -> erase 1
    assert bob.lucky == {5}
    assert bob.scores == {"b": 2.5}
    assert bob.dogs == [rex]
    assert bob.homes == [Address(street="before s", geo=Geo(lat=5, lon=6)), Address(street="s")]
    assert bob.places == {"p": Address(street="t", geo=Geo(lat=3, lon=4))}
    assert bob.address == Address(street="a", city="c")
    with tdb.write() as tx:
        tx.set((Person, 2), address=Address(street="new"))  # replaces: city does not survive
        tx.list_clear((Person, 2), "tags")
        tx.set_clear((Person, 2), "lucky")
        tx.dict_clear((Person, 2), "scores")
        tx.upsert(Person, id=2, name="Robert")  # only name changes
        tx.upsert(Person, id=3, name="new via upsert")
        tx.add(Person(id=4, name="four"), update=True)
        tx.add(Person(id=4, name="four again"), update=True)
    bob = tdb.get(Person, 2)
    assert bob.address == Address(street="new") and bob.tags == [] and bob.lucky == set()
    assert bob.scores == {} and bob.name == "Robert" and bob.age == 42
    assert tdb.get(Person, 3).name == "new via upsert"
    assert tdb.get(Person, 4).name == "four again"
    with tdb.write() as tx:
        tx.delete(bob)
        tx.delete((Person, 3))
    assert tdb.get(Person, 2) is None and tdb.get(Person, 3) is None


def test_live_results_are_iterable_indexable_and_current(tdb):
    with tdb.write() as tx:
        for i in range(10):
            tx.add(Person(id=i, name=f"p{i}", age=i))
    adults = tdb.objects(Person, "age >= $0 SORT(age DESC)", 5)
    assert len(adults) == 5
    assert [p.id for p in adults] == [9, 8, 7, 6, 5]
    assert adults[0].name == "p9" and adults[-1].id == 5
    assert [p.id for p in adults[1:3]] == [8, 7]
    assert [p.id for p in adults[::2]] == [9, 7, 5]
    assert isinstance(adults[0], Person)
    with pytest.raises(IndexError):
        adults[5]
    with tdb.write() as tx:
        tx.set((Person, 1), age=50)
        tx.delete((Person, 9))
    assert len(adults) == 5  # live: 1 came in, 9 went out
    assert adults.keys() == [1, 8, 7, 6, 5]
    assert adults.snapshot()[0].age == 50


def test_typed_results_and_object_listeners(tdb):
    with tdb.write() as tx:
        tx.add(Person(id=1, name="a"))
    results = tdb.objects(Person, "TRUEPREDICATE SORT(id ASC)")
    seen: List[Any] = []
    objects: List[Any] = []
    h1 = results.observe(seen.append)
    assert seen == [tandem.TypedResultsChange([], [0], [], [Person(id=1, name="a")], True, [1])]
    h2 = tdb.observe((Person, 1), objects.append)
    with tdb.write() as tx:
        tx.add(Person(id=2, name="b"))
        tx.set((Person, 1), name="A")
    eventually(lambda: len(seen) >= 2 and objects)
    change = seen[1]
    assert not change.initial
    assert isinstance(change, tandem.TypedResultsChange)
    assert change.insertions == [1] and change.modifications == [0] and change.deletions == []
    assert change.objects == [Person(id=1, name="A"), Person(id=2, name="b")]
    assert objects[0].changed == ["name"] and objects[0].object == Person(id=1, name="A")
    with tdb.write() as tx:
        tx.delete((Person, 1))
    eventually(lambda: any(c.deleted for c in objects))
    assert objects[-1] == tandem.TypedObjectChange(True, [], None)
    h1.cancel()
    h2.cancel()


def test_typed_observe_starts_exactly_where_the_first_change_begins(tdb):
    # A writer commits while typed listeners register: the initial keys plus every change,
    # applied in order, give each change's own keys (the held-back path of observe()).
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            with tdb.write() as tx:
                tx.add(Person(id=i, name="w"))
                if i >= 3:
                    tx.delete((Person, i - 3))
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        listeners = []
        for _ in range(20):
            seen: List[Any] = []

            def record(change: Any, seen: List[Any] = seen) -> None:
                seen.append(change)
                if change.initial:
                    time.sleep(0.02)  # commits land meanwhile: they are held back, then delivered

            handle = tdb.objects(Person, "TRUEPREDICATE SORT(id ASC)").observe(record)
            listeners.append((handle, seen))
        eventually(lambda: all(len(seen) >= 3 for _, seen in listeners))
    finally:
        stop.set()
        thread.join()
    for handle, seen in listeners:
        handle.cancel()
        first, rest = seen[0], list(seen[1:])
        assert first.initial and first.insertions == list(range(len(first.keys)))
        keys = first.keys
        for change in rest:
            assert not change.initial
            keys = apply_change(keys, change)
            assert keys == change.keys


def test_async_iteration_of_changes(tdb):
    async def main():
        results = tdb.objects(Person)
        changes = results.changes()

        def writer():
            with tdb.write() as tx:
                tx.add(Person(id=7, name="async"))

        # The listener is registered on the first __anext__, which gives the starting results.
        initial = await asyncio.wait_for(changes.__anext__(), 10)
        threading.Thread(target=writer).start()
        change = await asyncio.wait_for(changes.__anext__(), 10)
        await changes.aclose()
        return initial, change

    initial, change = asyncio.run(main())
    assert initial.initial and initial.insertions == [] and initial.objects == []
    assert not change.initial
    assert change.insertions == [0] and change.objects == [Person(id=7, name="async")]


def test_wrong_types_are_refused_and_write_nothing(tdb):
    with pytest.raises(tandem.TandemError.InvalidArgument, match="Person.age"):
        with tdb.write() as tx:
            tx.add(Person(id=1))
            tx.add(Person(id=2, age="old"))  # type: ignore[arg-type]
    assert len(tdb.objects(Person)) == 0
    with pytest.raises(TypeError, match="photo"):
        with tdb.write() as tx:
            tx.add(Person(id=1, photo="not bytes"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="dog"):
        with tdb.write() as tx:
            tx.add(Person(id=1, dog=Person(id=3)))  # type: ignore[arg-type]
    with pytest.raises(tandem.TandemError.InvalidArgument, match="active"):
        with tdb.write() as tx:
            tx.set((Person, 1), active=1)  # an int is not a bool
    with pytest.raises(AttributeError, match="no property nope"):
        with tdb.write() as tx:
            tx.set((Person, 1), nope=1)


def test_duplicates_and_exceptions_write_nothing(tdb):
    with tdb.write() as tx:
        tx.add(Person(id=1, name="first"))
    with pytest.raises(tandem.TandemError.InvalidArgument, match="already exists"):
        with tdb.write() as tx:
            tx.add(Person(id=2))
            tx.add(Person(id=1, name="again"))
    with pytest.raises(RuntimeError):
        with tdb.write() as tx:
            tx.add(Person(id=3))
            raise RuntimeError("changed my mind")
    assert [p.id for p in tdb.objects(Person)] == [1]
    assert tdb.get(Person, 1).name == "first"


def test_batch_writer_errors_and_threads(tdb):
    # The one-crossing write path: an unknown (or released) writer id is a clear error...
    with pytest.raises(tandem.TandemError.InvalidArgument, match="batch writer 0 is closed"):
        tandem.batch_write(0, b"[]")
    # ...errors through it keep their variant, and the next write works (no stale status)...
    with pytest.raises(tandem.TandemError.InvalidArgument, match="malformed write batch"):
        tdb._write_batch(b"not json")
    with tdb.write() as tx:
        tx.add(Person(id=1, name="after the error"))
    assert tdb.version is not None
    # ...and writes from several threads at once each get their own call status.
    errors: List[BaseException] = []

    def writer(base: int) -> None:
        try:
            for i in range(50):
                with tdb.write() as tx:
                    tx.add(Person(id=base + i))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(1000 * (t + 1),)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(tdb.objects(Person)) == 1 + 4 * 50
    # A batch longer than uniffi's i32 length can carry is refused before crossing (the limit
    # lowered here: a real one would take 2 GiB), and nothing is written.
    before = tdb.version
    models = sys.modules["tandem.models"]
    limit = models._MAX_BATCH_BYTES
    models._MAX_BATCH_BYTES = 16
    try:
        with pytest.raises(ValueError, match="over 2 GiB"):
            with tdb.write() as tx:
                tx.add(Person(id=99999, name="too long for the lowered limit"))
    finally:
        models._MAX_BATCH_BYTES = limit
    assert tdb.get(Person, 99999) is None and tdb.version == before


def test_schema_errors(tmp_path):
    class NoKey(tandem.Model):
        title: str = ""

    with pytest.raises(TypeError, match="no primary key"):
        tandem.open(tmp_path / "a.sqlite", [NoKey])

    class BadType(tandem.Model):
        id: Annotated[int, tandem.PrimaryKey]
        c: complex = 0j

    with pytest.raises(TypeError, match="BadType.c"):
        tandem.open(tmp_path / "b.sqlite", [BadType])

    class RequiredLink(tandem.Model):
        id: Annotated[int, tandem.PrimaryKey]
        dog: Dog = None  # type: ignore[assignment]

    with pytest.raises(TypeError, match="Optional"):
        tandem.open(tmp_path / "c.sqlite", [RequiredLink, Dog, Person, Address, Geo])

    with pytest.raises(TypeError, match="pass it to tandem.open"):
        tandem.open(tmp_path / "d.sqlite", [Dog])  # Dog links to Person
    db = tandem.open(tmp_path / "e.sqlite", [Note])

    class Unknown(tandem.Model):
        id: Annotated[int, tandem.PrimaryKey]

    with pytest.raises(TypeError, match="not in the database's models"):
        db.get(Unknown, 1)
    with pytest.raises(tandem.TandemError.InvalidArgument, match="no class Nope"):
        db._codec.write(db.raw, b'[["create","Nope",{}]]')
    with pytest.raises(TypeError, match="needs its primary key"):
        with db.write() as tx:
            tx.upsert(Note, text="no key")


def test_the_untyped_api_sees_typed_writes(tdb):
    with tdb.write() as tx:
        tx.add(Person(id=1, name="typed", tags=["t"]))
    raw = tdb.raw.object("Person", tandem.Key.INT(1))
    assert raw["name"] == tandem.FieldValue.SINGLE(tandem.Value.STRING("typed"))
    assert raw["tags"] == tandem.FieldValue.LIST([tandem.Value.STRING("t")])
    with tdb.raw.write() as tx:
        tx.set("Person", tandem.Key.INT(1), "age", tandem.Value.INT(5))
    assert tdb.get(Person, 1).age == 5


def test_object_ids():
    a, b = tandem.ObjectId(), tandem.ObjectId()
    assert a != b and len(a.binary) == 12 and a < b
    assert tandem.ObjectId(str(a)) == a and hash(tandem.ObjectId(a.binary)) == hash(a)
    assert abs((a.generation_time - datetime.datetime.now(UTC)).total_seconds()) < 5
    with pytest.raises(ValueError):
        tandem.ObjectId(b"short")


def test_models_are_hashable_by_key():
    assert hash(Person(id=1)) == hash(Person(id=1, name="x")) != hash(Person(id=2))
    assert len({Dog(id=tandem.ObjectId(b"a" * 12)), Dog(id=tandem.ObjectId(b"a" * 12))}) == 1


class Ticket(tandem.Model):
    id: Annotated[int, tandem.PrimaryKey]
    owner: Annotated[str, tandem.Indexed] = ""
    priority: Annotated[int, tandem.Indexed] = 0
    title: str = ""


def test_indexed_fields_get_search_indexes_and_queries_agree(tmp_path):
    import sqlite3

    path = tmp_path / "indexed.sqlite"
    db = tandem.open(path, [Ticket])
    with db.write() as tx:
        for i in range(50):
            tx.add(Ticket(id=i, owner=f"u{i % 5}", priority=i % 10, title=f"t{i}"))
    with sqlite3.connect(path) as conn:
        names = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'x:%' ORDER BY name")]
    assert names == ["x:Ticket:owner", "x:Ticket:priority"]
    assert db.objects(Ticket, "owner == $0", "u3").keys() == list(range(3, 50, 5))
    assert db.objects(Ticket, "priority >= $0 AND priority < $1", 8, 9).keys() == [8, 18, 28, 38, 48]

    class Bad(tandem.Model):
        id: Annotated[int, tandem.PrimaryKey]
        tags: Annotated[List[str], tandem.Indexed] = dataclasses.field(default_factory=list)

    with pytest.raises(tandem.TandemError, match="index"):
        tandem.open(tmp_path / "bad.sqlite", [Bad])


def test_a_datetime_before_1970_with_a_fraction_is_a_query_argument(tmp_path):
    # Found by a new user's trial: the argument went out as -1 s and +500,000,000 ns, which
    # Realm's Timestamp refuses (the nanoseconds share the sign of the seconds).
    class Ev(tandem.Model):
        id: Annotated[int, tandem.PrimaryKey]
        at: Annotated[datetime.datetime, tandem.Indexed] = datetime.datetime(2000, 1, 1, tzinfo=UTC)

    db = tandem.open(tmp_path / "ev.sqlite", [Ev])
    times = [
        datetime.datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC),
        datetime.datetime(1969, 12, 31, 23, 59, 58, 1, tzinfo=UTC),
        datetime.datetime(1815, 12, 10, 8, 30, 1, 123456, tzinfo=UTC),
        datetime.datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
    ]
    with db.write() as tx:
        for i, t in enumerate(times):
            tx.add(Ev(id=i, at=t))
    for i, t in enumerate(times):
        assert db.get(Ev, i).at == t
        assert db.objects(Ev, "at == $0", t).keys() == [i]
    assert db.objects(Ev, "at < $0", times[0]).keys() == [1, 2]
