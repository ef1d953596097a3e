"""Model classes shared by the typed tests (and checked by mypy --strict), and a use of the
typed database's ``with`` block and ``close()`` for mypy to check."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import uuid
from typing import Annotated, Dict, List, Optional, Set

import tandem


class Address(tandem.EmbeddedModel):
    street: str = ""
    city: Optional[str] = None
    geo: Optional[Geo] = None


class Geo(tandem.EmbeddedModel):
    lat: float = 0.0
    lon: float = 0.0


class Dog(tandem.Model):
    id: Annotated[tandem.ObjectId, tandem.PrimaryKey, tandem.Persisted("_id")]
    name: str = ""
    owner: Optional[Person] = None


class Person(tandem.Model):
    id: Annotated[int, tandem.PrimaryKey]
    name: str = ""
    age: int = 0
    active: bool = False
    photo: bytes = b""
    score: float = 0.0
    born: Optional[datetime.datetime] = None
    balance: decimal.Decimal = decimal.Decimal(0)
    token: uuid.UUID = uuid.UUID(int=0)
    ref: tandem.ObjectId = dataclasses.field(default_factory=lambda: tandem.ObjectId(b"\0" * 12))
    nickname: Optional[str] = None
    dog: Optional[Dog] = None
    address: Optional[Address] = None
    tags: List[str] = dataclasses.field(default_factory=list)
    lucky: Set[int] = dataclasses.field(default_factory=set)
    scores: Dict[str, float] = dataclasses.field(default_factory=dict)
    dogs: List[Dog] = dataclasses.field(default_factory=list)
    homes: List[Address] = dataclasses.field(default_factory=list)
    places: Dict[str, Optional[Address]] = dataclasses.field(default_factory=dict)
    stamps: List[datetime.datetime] = dataclasses.field(default_factory=list)


class Note(tandem.Model, name="Memo"):
    key: Annotated[uuid.UUID, tandem.PrimaryKey]
    text: str = ""


MODELS = [Person, Dog, Address, Geo, Note]


def open_write_and_close(path: str) -> bool:
    """The typed database's ``with`` block, ``close()`` and ``closed``, as mypy sees them."""
    with tandem.open(path, MODELS) as db:
        with db.write() as tx:
            tx.add(Note(key=uuid.UUID(int=7), text="typed"))
            finished: bool = tx.finished
            assert not finished
        note: Optional[Note] = db.get(Note, uuid.UUID(int=7))
        assert note is not None and note.text == "typed"
    db.close()  # a second close does nothing
    return db.closed
