"""Links to the object whose primary key is None (issue 14).

A class whose primary key is ``Optional`` may have one object with the key None, as in Realm,
and a link to it is a link like any other. The typed layer used to spell it as the row codec's
JSON ``null``, which is "no link": writing one was refused with a ValueError (earlier still it
was written as no link), and one written through the untyped API read back as None. Now the
instance whose key is None is the link and None is no link, in every place a link goes. Each
case runs with an ``Optional[int]`` and an ``Optional[str]`` key.
"""

import dataclasses
from typing import Annotated, Dict, List, Optional, Set

import pytest

import tandem


class IntSlot(tandem.Model):
    id: Annotated[Optional[int], tandem.PrimaryKey]
    name: str = ""


class StrSlot(tandem.Model):
    id: Annotated[Optional[str], tandem.PrimaryKey]
    name: str = ""


class Place(tandem.EmbeddedModel):
    label: str = ""
    int_slot: Optional[IntSlot] = None
    str_slot: Optional[StrSlot] = None


class Shift(tandem.Model):
    id: Annotated[int, tandem.PrimaryKey]
    int_slot: Optional[IntSlot] = None
    str_slot: Optional[StrSlot] = None
    int_slots: List[IntSlot] = dataclasses.field(default_factory=list)
    str_slots: List[StrSlot] = dataclasses.field(default_factory=list)
    int_set: Set[IntSlot] = dataclasses.field(default_factory=set)
    str_set: Set[StrSlot] = dataclasses.field(default_factory=set)
    int_map: Dict[str, Optional[IntSlot]] = dataclasses.field(default_factory=dict)
    str_map: Dict[str, Optional[StrSlot]] = dataclasses.field(default_factory=dict)
    place: Optional[Place] = None


class Required(tandem.Model):
    id: Annotated[int, tandem.PrimaryKey]


class RequiredHolder(tandem.Model):
    id: Annotated[int, tandem.PrimaryKey]
    target: Optional[Required] = None


MODELS = [IntSlot, StrSlot, Place, Shift, Required, RequiredHolder]


@dataclasses.dataclass
class Kind:
    """One key type: its slot class, the Shift fields of its links, a non-null key."""

    cls: type
    single: str
    many: str
    set_: str
    map_: str
    key: object


KINDS = {
    "int": Kind(IntSlot, "int_slot", "int_slots", "int_set", "int_map", 7),
    "str": Kind(StrSlot, "str_slot", "str_slots", "str_set", "str_map", "seven"),
}


@pytest.fixture(params=sorted(KINDS))
def kind(request):
    return KINDS[request.param]


@pytest.fixture
def db(tmp_path, kind):
    """A database holding the kind's object with key None ("nobody") and one with a key."""
    db = tandem.open(tmp_path / "slots.sqlite", MODELS)
    with db.write() as tx:
        tx.add(kind.cls(id=None, name="nobody"))
        tx.add(kind.cls(id=kind.key, name="somebody"))
    return db


def nobody(kind):
    return kind.cls(id=None, name="nobody")


def somebody(kind):
    return kind.cls(id=kind.key, name="somebody")


def test_a_single_link_to_the_null_key_round_trips(db, kind):
    with db.write() as tx:
        tx.add(Shift(id=1, **{kind.single: nobody(kind)}))
    linked = getattr(db.get(Shift, 1), kind.single)
    assert linked == nobody(kind) and linked.id is None


def test_none_assigned_to_a_link_is_still_no_link(db, kind):
    with db.write() as tx:
        tx.add(Shift(id=1, **{kind.single: None}))
        tx.add(Shift(id=2, **{kind.single: somebody(kind)}))
    assert getattr(db.get(Shift, 1), kind.single) is None
    assert getattr(db.get(Shift, 2), kind.single) == somebody(kind)
    # The store holds no link for the first: the untyped API reads it as null, not as a link.
    raw = db.raw.object("Shift", tandem.Key.INT(1))[kind.single]
    assert isinstance(raw.value, tandem.Value.NULL)


def test_a_typed_link_to_the_null_key_is_the_untyped_link(db, kind):
    with db.write() as tx:
        tx.add(Shift(id=1, **{kind.single: nobody(kind)}))
    raw = db.raw.object("Shift", tandem.Key.INT(1))[kind.single].value
    assert isinstance(raw, tandem.Value.LINK)
    assert raw.class_name == kind.cls.__tandem_name__ and isinstance(raw.key, tandem.Key.NULL)


def test_an_untyped_link_to_the_null_key_reads_back_typed(db, kind):
    link = tandem.Value.LINK(kind.cls.__tandem_name__, tandem.Key.NULL())
    with db.raw.write() as tx:
        tx.create("Shift", tandem.Key.INT(1), {kind.single: link})
        tx.list_insert("Shift", tandem.Key.INT(1), kind.many, 0, link)
        tx.set_insert("Shift", tandem.Key.INT(1), kind.set_, link)
        tx.dict_set("Shift", tandem.Key.INT(1), kind.map_, "k", link)
    shift = db.get(Shift, 1)
    assert getattr(shift, kind.single) == nobody(kind)
    assert getattr(shift, kind.many) == [nobody(kind)]
    assert getattr(shift, kind.set_) == {nobody(kind)}
    assert getattr(shift, kind.map_) == {"k": nobody(kind)}
    assert db.objects(Shift)[0] == shift  # the query path reads it the same way


def test_a_list_of_links_holds_the_null_key(db, kind):
    with db.write() as tx:
        tx.add(Shift(id=1, **{kind.many: [somebody(kind), nobody(kind), somebody(kind)]}))
    assert getattr(db.get(Shift, 1), kind.many) == [somebody(kind), nobody(kind), somebody(kind)]
    with db.write() as tx:
        tx.list_insert((Shift, 1), kind.many, 0, nobody(kind))
        tx.list_set((Shift, 1), kind.many, 3, nobody(kind))
    expected = [nobody(kind), somebody(kind), nobody(kind), nobody(kind)]
    assert getattr(db.get(Shift, 1), kind.many) == expected


def test_a_set_of_links_holds_the_null_key(db, kind):
    with db.write() as tx:
        tx.add(Shift(id=1, **{kind.set_: {nobody(kind), somebody(kind)}}))
    assert getattr(db.get(Shift, 1), kind.set_) == {nobody(kind), somebody(kind)}
    with db.write() as tx:
        tx.set_remove((Shift, 1), kind.set_, nobody(kind))
    assert getattr(db.get(Shift, 1), kind.set_) == {somebody(kind)}
    with db.write() as tx:
        tx.set_add((Shift, 1), kind.set_, nobody(kind))
        tx.set_add((Shift, 1), kind.set_, nobody(kind))  # once: a set
    assert getattr(db.get(Shift, 1), kind.set_) == {nobody(kind), somebody(kind)}
    assert len(db.raw.object("Shift", tandem.Key.INT(1))[kind.set_].items) == 2


def test_a_dictionary_of_links_holds_the_null_key_beside_no_link(db, kind):
    with db.write() as tx:
        tx.add(Shift(id=1, **{kind.map_: {"a": nobody(kind), "b": None, "c": somebody(kind)}}))
    assert getattr(db.get(Shift, 1), kind.map_) == {"a": nobody(kind), "b": None, "c": somebody(kind)}
    with db.write() as tx:
        tx.dict_set((Shift, 1), kind.map_, "b", nobody(kind))
        tx.dict_set((Shift, 1), kind.map_, "a", None)
    assert getattr(db.get(Shift, 1), kind.map_) == {"a": None, "b": nobody(kind), "c": somebody(kind)}


def test_set_and_upsert_write_and_clear_the_null_key_link(db, kind):
    with db.write() as tx:
        tx.add(Shift(id=1))
        tx.set((Shift, 1), **{kind.single: nobody(kind)})
    assert getattr(db.get(Shift, 1), kind.single) == nobody(kind)
    with db.write() as tx:
        tx.set((Shift, 1), **{kind.single: None})
    assert getattr(db.get(Shift, 1), kind.single) is None
    with db.write() as tx:
        tx.upsert(Shift, id=1, **{kind.single: nobody(kind), kind.many: [nobody(kind)]})
        tx.add(Shift(id=2, **{kind.single: nobody(kind)}), update=True)
    for key in (1, 2):
        assert getattr(db.get(Shift, key), kind.single) == nobody(kind)
    assert getattr(db.get(Shift, 1), kind.many) == [nobody(kind)]


def test_a_link_to_the_null_key_inside_an_embedded_object(db, kind):
    with db.write() as tx:
        tx.add(Shift(id=1, place=Place(label="x", **{kind.single: nobody(kind)})))
        tx.add(Shift(id=2, place=Place(label="y")))
    assert getattr(db.get(Shift, 1).place, kind.single) == nobody(kind)
    assert getattr(db.get(Shift, 2).place, kind.single) is None


def test_the_null_key_link_as_a_query_argument(db, kind):
    with db.write() as tx:
        tx.add(Shift(id=1, **{kind.single: nobody(kind)}))
        tx.add(Shift(id=2, **{kind.single: None}))
        tx.add(Shift(id=3, **{kind.single: somebody(kind)}))
    found = db.objects(Shift, f"{kind.single} == $0", nobody(kind))
    assert found.keys() == [1]
    assert getattr(found[0], kind.single) == nobody(kind)
    assert db.objects(Shift, f"{kind.single} == $0", None).keys() == [2]
    assert db.objects(Shift, f"{kind.single} == nil").keys() == [2]
    assert db.objects(Shift, f"{kind.single}.name == $0", "nobody").keys() == [1]
    assert db.objects(Shift, f"{kind.single} != $0 SORT(id ASC)", nobody(kind)).keys() == [2, 3]


def test_deleting_the_null_key_object_unlinks_it(db, kind):
    with db.write() as tx:
        tx.add(Shift(id=1, **{kind.single: nobody(kind), kind.many: [nobody(kind), somebody(kind)]}))
    with db.write() as tx:
        tx.delete((kind.cls, None))
    shift = db.get(Shift, 1)
    assert getattr(shift, kind.single) is None
    assert getattr(shift, kind.many) == [somebody(kind)]


def test_a_link_to_the_null_key_of_a_required_key_is_refused(tmp_path):
    db = tandem.open(tmp_path / "required.sqlite", MODELS)
    with pytest.raises(tandem.TandemError.InvalidArgument, match="null key"):
        with db.write() as tx:
            tx.add(RequiredHolder(id=1, target=Required(id=None)))  # type: ignore[arg-type]
    assert db.get(RequiredHolder, 1) is None
