"""Collections inside embedded objects through the typed layer: written by `add`, `upsert` and
`set` (the row codec fills a new embedded object's lists, sets and dictionaries through paths)
and read back equal, nested embedded objects included."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Dict, List, Optional, Set

import pytest

import tandem


class Stop(tandem.EmbeddedModel):
    name: str = ""
    tags: List[str] = dataclasses.field(default_factory=list)


class Route(tandem.EmbeddedModel):
    label: str = ""
    stops: List[Stop] = dataclasses.field(default_factory=list)
    days: Set[int] = dataclasses.field(default_factory=set)
    fares: Dict[str, float] = dataclasses.field(default_factory=dict)
    named: Dict[str, Optional[Stop]] = dataclasses.field(default_factory=dict)
    notes: List[str] = dataclasses.field(default_factory=list)


class Line(tandem.Model):
    id: Annotated[int, tandem.PrimaryKey]
    main: Optional[Route] = None
    spares: List[Route] = dataclasses.field(default_factory=list)
    by_name: Dict[str, Optional[Route]] = dataclasses.field(default_factory=dict)


MODELS = [Line, Route, Stop]


@pytest.fixture
def db(tmp_path):
    return tandem.open(tmp_path / "routes.sqlite", MODELS)


def route(label: str) -> Route:
    return Route(
        label=label,
        stops=[Stop("a", ["x", "y"]), Stop("b", [])],
        days={1, 3, 5},
        fares={"adult": 2.5, "child": 1.25},
        named={"first": Stop("a", ["z"]), "none": None},
        notes=["n1", "n2", "n1"],
    )


def test_collections_inside_embedded_objects_round_trip(db):
    line = Line(1, main=route("main"), spares=[route("s1"), route("s2")], by_name={"r": route("r")})
    with db.write() as tx:
        tx.add(line)
    got = db.get(Line, 1)
    assert got == line
    assert got.main is not None
    assert got.main.stops[0].tags == ["x", "y"]
    assert got.main.days == {1, 3, 5}
    assert got.main.named["first"] == Stop("a", ["z"]) and got.main.named["none"] is None
    assert got.spares[1].fares == {"adult": 2.5, "child": 1.25}
    assert got.by_name["r"].notes == ["n1", "n2", "n1"]


def test_replacing_an_embedded_object_replaces_its_collections(db):
    with db.write() as tx:
        tx.add(Line(1, main=route("old")))
    new = Route(label="new", stops=[Stop("c", ["only"])], days={7})
    with db.write() as tx:
        tx.set((Line, 1), main=new)
    got = db.get(Line, 1)
    assert got.main == new
    assert got.main.fares == {} and got.main.notes == []
    # An upsert of the whole object replaces the list of embedded routes too.
    with db.write() as tx:
        tx.upsert(Line, id=1, main=None, spares=[Route(label="s", days={2})])
    got = db.get(Line, 1)
    assert got.main is None
    assert got.spares == [Route(label="s", days={2})]


def test_a_bad_element_inside_an_embedded_collection_writes_nothing(db):
    bad = Route(label="bad", days={1}, notes=["ok", 5])  # type: ignore[list-item]
    with pytest.raises((TypeError, tandem.TandemError)):
        with db.write() as tx:
            tx.add(Line(2, main=bad))
    assert db.get(Line, 2) is None
