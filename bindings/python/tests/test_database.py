"""The local database from Python: schema, writes, queries, listeners, errors."""

import threading

import pytest

import tandem
from conftest import apply_change, eventually, task_classes


def title(db, key):
    obj = db.object("Task", tandem.Key.INT(key))
    return None if obj is None else obj["title"].value.value


def test_write_read_query(db):
    with db.write() as tx:
        for i in range(5):
            tx.create("Task", tandem.Key.INT(i), {"title": tandem.Value.STRING(f"t{i}"),
                                                  "done": tandem.Value.BOOL(i % 2 == 0)})
        tx.list_insert("Task", tandem.Key.INT(0), "tags", 0, tandem.Value.STRING("red"))
    assert title(db, 3) == "t3"
    assert db.object("Task", tandem.Key.INT(0))["tags"] == tandem.FieldValue.LIST([tandem.Value.STRING("red")])
    done = db.query("Task", "done == true SORT(_id DESC)", [])
    assert done.keys() == [tandem.Key.INT(4), tandem.Key.INT(2), tandem.Key.INT(0)]
    assert db.query("Task", "_id > $0", [tandem.Value.INT(2)]).count() == 2


def test_write_is_a_block_or_a_list_as_the_typing_says(tmp_path):
    from untyped_fixture import open_and_write

    db = open_and_write(str(tmp_path / "db.sqlite"), task_classes())
    assert title(db, 1) == "in a block"
    assert title(db, 2) == "as a list"


def test_error_variants_are_caught_as_typed(db):
    from untyped_fixture import refused

    assert "Nope" in refused(db)


def test_an_exception_rolls_the_block_back(db):
    with pytest.raises(RuntimeError):
        with db.write() as tx:
            tx.create("Task", tandem.Key.INT(1), {"title": tandem.Value.STRING("never")})
            raise RuntimeError("changed my mind")
    assert db.object("Task", tandem.Key.INT(1)) is None


def test_bad_input_is_a_typed_error_and_writes_nothing(db):
    with pytest.raises(tandem.TandemError.InvalidArgument) as e:
        with db.write() as tx:
            tx.create("Task", tandem.Key.INT(1), {"title": tandem.Value.STRING("ok")})
            tx.set("Task", tandem.Key.INT(1), "nope", tandem.Value.INT(1))
    assert "nope" in str(e.value)
    assert db.object("Task", tandem.Key.INT(1)) is None
    with pytest.raises(tandem.TandemError.InvalidArgument):
        db.query("Task", "title ==", [])
    with pytest.raises(tandem.TandemError.Schema):
        tandem.Database.open(str(db) + "x", [tandem.ClassSpec(name="X", primary_key="missing", properties=[])])


class Collect(tandem.ResultsListener):
    def __init__(self):
        self.changes = []

    def on_change(self, change):
        self.changes.append(change)


class Throws(tandem.ResultsListener):
    def on_change(self, change):
        raise ValueError("a listener that throws")


def test_results_listener_indices_and_a_throwing_listener(db):
    with db.write() as tx:
        for i in range(3):
            tx.create("Task", tandem.Key.INT(i), {"title": tandem.Value.STRING(f"t{i}")})
    results = db.query("Task", "TRUEPREDICATE SORT(_id ASC)", [])
    bad = results.observe(Throws())
    good = Collect()
    handle = results.observe(good)
    with db.write() as tx:
        tx.erase("Task", tandem.Key.INT(0))
        tx.create("Task", tandem.Key.INT(5), {"title": tandem.Value.STRING("t5")})
        tx.set("Task", tandem.Key.INT(2), "title", tandem.Value.STRING("changed"))
    eventually(lambda: len(good.changes) >= 1)
    change = good.changes[-1]
    assert change.deletions == [0]
    assert change.insertions == [2]
    assert change.modifications == [1]
    handle.cancel()
    bad.cancel()
    with db.write() as tx:
        tx.erase("Task", tandem.Key.INT(5))
    threading.Event().wait(0.3)
    assert len(good.changes) == 1, "no delivery after cancel()"


def test_observe_with_initial_starts_exactly_where_the_first_change_begins(db):
    # A writer commits while the listener registers: the starting results plus every change,
    # applied in order, must give each change's own keys (a commit between the read of the
    # starting results and the registration would break the chain: missed or doubled).
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            with db.write() as tx:
                tx.create("Task", tandem.Key.INT(i), {"title": tandem.Value.STRING("w")})
                if i >= 3:
                    tx.erase("Task", tandem.Key.INT(i - 3))
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        observations = []
        for _ in range(20):
            listener = Collect()
            results = db.query("Task", "TRUEPREDICATE SORT(_id ASC)", [])
            observation = results.observe_with_initial(listener)
            initial = observation.initial
            assert initial.deletions == [] and initial.modifications == []
            assert initial.insertions == list(range(len(initial.keys)))
            observations.append((observation, listener, initial.keys))
        eventually(lambda: all(len(obs[1].changes) >= 2 for obs in observations))
    finally:
        stop.set()
        thread.join()
    for observation, listener, keys in observations:
        observation.handle.cancel()
        for change in list(listener.changes):
            keys = apply_change(keys, change)
            assert keys == change.keys


class WritesBack(tandem.ObjectListener):
    def __init__(self, db):
        self.db = db
        self.seen = []

    def on_change(self, change):
        self.seen.append(change)
        if len(self.seen) == 1:
            with self.db.write() as tx:  # writing from inside the callback must not deadlock
                tx.add("Task", tandem.Key.INT(1), "count", 10)


def test_object_listener_may_write_to_the_database(db):
    with db.write() as tx:
        tx.create("Task", tandem.Key.INT(1), {"title": tandem.Value.STRING("x")})
    listener = WritesBack(db)
    handle = db.observe_object("Task", tandem.Key.INT(1), listener)
    with db.write() as tx:
        tx.set("Task", tandem.Key.INT(1), "title", tandem.Value.STRING("y"))
    eventually(lambda: len(listener.seen) >= 2)
    assert listener.seen[0] == tandem.ObjectChange.MODIFIED(["title"])
    assert listener.seen[1] == tandem.ObjectChange.MODIFIED(["count"])
    assert db.object("Task", tandem.Key.INT(1))["count"].value.value == 10
    handle.cancel()


def person_dog_db(tmp_path):
    def prop(name, ptype, link_target=None):
        return tandem.PropertySpec(name=name, property_type=ptype, nullable=link_target is not None,
                                   collection=tandem.Collection.SINGLE, link_target=link_target)

    classes = [
        tandem.ClassSpec(name="Person", primary_key="_id", properties=[
            prop("_id", tandem.PropertyType.INT), prop("age", tandem.PropertyType.INT),
            prop("dog", tandem.PropertyType.LINK, "Dog")]),
        tandem.ClassSpec(name="Dog", primary_key="_id", properties=[
            prop("_id", tandem.PropertyType.INT), prop("name", tandem.PropertyType.STRING),
            prop("age", tandem.PropertyType.INT)]),
    ]
    db = tandem.Database.open(str(tmp_path / "linked.sqlite"), classes)
    with db.write() as tx:
        tx.create("Dog", tandem.Key.INT(1), {})
        tx.create("Person", tandem.Key.INT(2), {"dog": tandem.Value.LINK("Dog", tandem.Key.INT(1))})
    return db


class ObjectCollect(tandem.ObjectListener):
    def __init__(self):
        self.changes = []

    def on_change(self, change):
        self.changes.append(change)


def test_linked_changes_notify_and_key_paths_narrow_them(tmp_path):
    db = person_dog_db(tmp_path)
    everything, filtered, results = ObjectCollect(), ObjectCollect(), Collect()
    handles = [
        db.observe_object("Person", tandem.Key.INT(2), everything),
        db.observe_object("Person", tandem.Key.INT(2), filtered, key_paths=["dog.name"]),
        db.query("Person", "TRUEPREDICATE", []).observe(results, key_paths=["age"]),
    ]
    with db.write() as tx:  # the dog's age: reached through "dog", not on the filtered paths
        tx.set("Dog", tandem.Key.INT(1), "age", tandem.Value.INT(3))
    eventually(lambda: len(everything.changes) == 1)
    with db.write() as tx:  # the dog's name: on "dog.name"
        tx.set("Dog", tandem.Key.INT(1), "name", tandem.Value.STRING("Rex"))
    eventually(lambda: len(everything.changes) == 2 and filtered.changes)
    with db.write() as tx:  # the person's age: on "age"
        tx.set("Person", tandem.Key.INT(2), "age", tandem.Value.INT(40))
    eventually(lambda: len(everything.changes) == 3 and results.changes)
    assert everything.changes == [tandem.ObjectChange.MODIFIED(["dog"])] * 2 + [
        tandem.ObjectChange.MODIFIED(["age"])]
    assert filtered.changes == [tandem.ObjectChange.MODIFIED(["dog"])]
    assert [c.modifications for c in results.changes] == [[0]]
    with pytest.raises(tandem.TandemError.InvalidArgument):
        db.observe_object("Person", tandem.Key.INT(2), everything, key_paths=["dog.nme"])
    for h in handles:
        h.cancel()


def test_a_transaction_that_could_never_sync_is_refused_at_commit(db):
    # 17 MiB in one string: over the value limit (realm-core's largest string).
    big = "x" * (17 << 20)
    with pytest.raises(tandem.TandemError.TooLarge) as e:
        with db.write() as tx:
            tx.create("Task", tandem.Key.INT(1), {"title": tandem.Value.STRING(big)})
    assert e.value.limit == tandem.SizeLimit.VALUE
    assert e.value.size == 17 << 20 and e.value.max == 16_777_199
    assert "MAX_VALUE_SIZE" in str(e.value)
    # Two strings of 8.5 MiB: each fits, the transaction's changeset does not (15 MiB).
    half = "y" * (17 << 19)
    with pytest.raises(tandem.TandemError.TooLarge) as e:
        with db.write() as tx:
            tx.create("Task", tandem.Key.INT(1), {"title": tandem.Value.STRING(half)})
            tx.create("Task", tandem.Key.INT(2), {"title": tandem.Value.STRING(half)})
    assert e.value.limit == tandem.SizeLimit.CHANGESET
    assert e.value.size > 17 << 20 and e.value.max == 15 << 20
    assert db.object("Task", tandem.Key.INT(1)) is None
    assert db.object("Task", tandem.Key.INT(2)) is None


def test_a_write_op_batch_is_one_transaction(db):
    version = db.write([
        tandem.WriteOp.CREATE(class_name="Task", key=tandem.Key.INT(1),
                              values={"title": tandem.Value.STRING("one")}),
        tandem.WriteOp.UPSERT(class_name="Task", key=tandem.Key.INT(2),
                              values={"title": tandem.Value.STRING("two")}),
        tandem.WriteOp.SET(class_name="Task", key=tandem.Key.INT(1), property="title",
                           value=tandem.Value.STRING("uno")),
    ])
    assert isinstance(version, int)
    assert title(db, 1) == "uno" and title(db, 2) == "two"
    # A failing operation (creating an existing object) discards the whole batch.
    with pytest.raises(tandem.TandemError):
        db.write([
            tandem.WriteOp.SET(class_name="Task", key=tandem.Key.INT(2), property="title",
                               value=tandem.Value.STRING("lost")),
            tandem.WriteOp.CREATE(class_name="Task", key=tandem.Key.INT(1), values={}),
        ])
    assert title(db, 2) == "two"
    # The context-manager form still works beside it.
    with db.write() as tx:
        tx.create("Task", tandem.Key.INT(3), {"title": tandem.Value.STRING("three")})
    assert title(db, 3) == "three"
