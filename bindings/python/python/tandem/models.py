"""Typed models: dataclass-style classes whose annotations are the schema.

```python
from typing import Annotated, Optional
import tandem

class Task(tandem.Model):
    id: Annotated[int, tandem.PrimaryKey]
    title: str
    done: bool = False

db = tandem.open("todo.sqlite", [Task])
with db.write() as tx:
    tx.add(Task(id=1, title="buy milk"))
open_tasks = db.objects(Task, "done == false SORT(id ASC)")   # live, typed
```

Types (annotation -> Tandem property): ``int`` -> int, ``bool`` -> bool, ``str`` -> string,
``bytes`` -> binary, ``float`` -> double, ``datetime.datetime`` -> timestamp, ``decimal.Decimal``
-> decimal128, ``uuid.UUID`` -> uuid, :class:`ObjectId` -> object id, another :class:`Model` ->
link (always ``Optional``), an :class:`EmbeddedModel` -> embedded object, ``Optional[X]`` ->
nullable, ``list[X]`` / ``set[X]`` / ``dict[str, X]`` -> list / set / dictionary. The primary key
is the one field annotated ``Annotated[T, tandem.PrimaryKey]`` (``int``, ``str``, ``ObjectId``
or ``uuid.UUID``, optionally ``Optional``). A link is written by assigning the linked instance,
the instance whose primary key is ``None`` included (a class with an ``Optional`` key may have
one such object); assigning ``None`` is no link.

Datetimes: writes take timezone-aware datetimes (any zone; stored as UTC instants); a naive
datetime is a ``TypeError`` (its instant is ambiguous). Reads give aware UTC datetimes;
Tandem keeps nanoseconds, Python has microseconds, so a read truncates (floors) to the
microsecond.

Transactions do not nest: a ``db.write()`` opened while another write is open on the same
file on the same thread is ``TandemError.InvalidArgument``, and a transaction takes nothing
once its block has ended. ``db.close()`` (or ``with tandem.open(...) as db:``) releases the
database.

Speed: a transaction crosses into Rust once, at its end, as one JSON document (the row codec,
``src/ffi/python_batch.rs``); a query result crosses once. Reading an object that links to
others reads each linked object once more (one crossing each).
"""

from __future__ import annotations

import asyncio
import base64
import ctypes
import dataclasses
import datetime as _dt
import decimal
import enum
import json
import math
import operator
import os
import sys
import threading
import time
import types
import typing
import uuid
import weakref
from contextlib import contextmanager
from typing import (
    Any,
    AsyncIterator,
    Callable,
    ClassVar,
    Dict,
    Generic,
    Iterator,
    List,
    Optional,
    Sequence,
    Tuple,
    Type,
    TypeVar,
    Union,
    overload,
)

from . import _lifecycle
from . import tandem as _ffi

if sys.version_info >= (3, 11):
    from typing import dataclass_transform
elif typing.TYPE_CHECKING:
    from typing_extensions import dataclass_transform
else:

    def dataclass_transform(**_: Any) -> Callable[[Any], Any]:
        return lambda cls: cls


__all__ = [
    "Model",
    "EmbeddedModel",
    "PrimaryKey",
    "Indexed",
    "Persisted",
    "ObjectId",
    "open",
    "TypedDatabase",
    "TypedTransaction",
    "LiveResults",
    "TypedResultsChange",
    "TypedObjectChange",
    "SubscriptionState",
    "TypedSubscription",
    "TypedSubscriptionSet",
    "MutableSubscriptionSet",
    "CompensatingWrite",
    "COMPENSATING_WRITE",
    "compensating_writes",
]

M = TypeVar("M", bound="Model")
T = TypeVar("T")

EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


class PrimaryKey:
    """Marks the primary key: ``id: Annotated[int, tandem.PrimaryKey]``."""


class Indexed:
    """Gives a property a search index, as Realm's ``@Index``:
    ``owner: Annotated[str, tandem.Indexed]``. Equality and range queries on it then look the
    index up instead of reading every object. For a single ``int``, ``bool``, ``str``,
    ``datetime``, ``ObjectId`` or ``UUID`` field (any other raises ``tandem.TandemError`` at
    open); adding or removing it on an existing field changes only the index."""


class Persisted:
    """Stores a field under another property name, as Realm's ``@PersistedName``:
    ``id: Annotated[int, tandem.PrimaryKey, tandem.Persisted("_id")]``. Queries, key paths and
    other clients use the stored name; Python code uses the field's."""

    def __init__(self, name: str) -> None:
        self.name = name


class ObjectId:
    """A 12-byte object id (BSON's): 4 bytes of seconds since the epoch, 5 random bytes fixed
    per process, a 3-byte counter. ``ObjectId()`` makes a new one; ``ObjectId("24 hex digits")``
    or ``ObjectId(b"12 bytes")`` wraps an existing one. Immutable, hashable, ordered by bytes."""

    __slots__ = ("_bytes",)
    _random = os.urandom(5)
    _counter = int.from_bytes(os.urandom(3), "big")
    _lock = threading.Lock()

    def __init__(self, value: Union[str, bytes, None] = None) -> None:
        if value is None:
            with ObjectId._lock:
                ObjectId._counter = (ObjectId._counter + 1) & 0xFFFFFF
                counter = ObjectId._counter
            data = (
                int(time.time()).to_bytes(4, "big") + ObjectId._random + counter.to_bytes(3, "big")
            )
        elif isinstance(value, str):
            data = bytes.fromhex(value)
        elif isinstance(value, (bytes, bytearray)):
            data = bytes(value)
        else:
            raise TypeError(f"ObjectId takes a hex string or 12 bytes, not {type(value).__name__}")
        if len(data) != 12:
            raise ValueError(f"an ObjectId is 12 bytes, not {len(data)}")
        self._bytes = data

    @property
    def binary(self) -> bytes:
        """The 12 bytes."""
        return self._bytes

    @property
    def generation_time(self) -> _dt.datetime:
        """When it was made (its first 4 bytes), UTC."""
        return EPOCH + _dt.timedelta(seconds=int.from_bytes(self._bytes[:4], "big"))

    def __str__(self) -> str:
        return self._bytes.hex()

    def __repr__(self) -> str:
        return f"ObjectId('{self._bytes.hex()}')"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectId) and other._bytes == self._bytes

    def __lt__(self, other: "ObjectId") -> bool:
        return self._bytes < other._bytes

    def __hash__(self) -> int:
        return hash(self._bytes)


@dataclass_transform(field_specifiers=(dataclasses.field,))
class Model:
    """Base of top-level model classes. Subclasses become dataclasses; their annotated fields
    are the properties. ``class Task(tandem.Model, name="Todo")`` stores the class as
    ``Todo``."""

    __tandem_name__: ClassVar[str]
    __tandem_embedded__: ClassVar[bool] = False

    def __init_subclass__(cls, *, name: Optional[str] = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("_tandem_base"):
            return
        cls.__tandem_name__ = name or cls.__name__
        dataclasses.dataclass(cls)
        if not cls.__tandem_embedded__:
            # Equal fields compare equal (dataclass); the identity is the primary key, so objects
            # can be set elements and dictionary keys.
            cls.__hash__ = Model._hash_by_key  # type: ignore[assignment]

    def _hash_by_key(self) -> int:
        info = _INFOS.get(type(self))
        return hash((type(self), getattr(self, info.pk) if info else id(self)))


class EmbeddedModel(Model):
    """Base of embedded model classes: objects that live inside one owner (a field, list
    element or dictionary value of it) and have no primary key."""

    _tandem_base: ClassVar[bool] = True
    __tandem_embedded__: ClassVar[bool] = True


# --- property codecs ------------------------------------------------------------------------

Enc = Callable[[Any], Any]


def _enc_bytes(v: Any) -> Any:
    if not isinstance(v, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected bytes, got {type(v).__name__}")
    return base64.b64encode(v).decode("ascii")


def _dec_bytes(v: Any) -> bytes:
    return base64.b64decode(v)


def _spell_floats(v: Any) -> Any:
    """``v`` with every non-finite float replaced by the codec's string for it."""
    if isinstance(v, float):
        if math.isfinite(v):
            return v
        return "NaN" if v != v else ("Infinity" if v > 0 else "-Infinity")
    if isinstance(v, (list, tuple)):
        return [_spell_floats(x) for x in v]
    if isinstance(v, dict):
        return {k: _spell_floats(x) for k, x in v.items()}
    return v


def _dec_float(v: Any) -> float:
    return v if v.__class__ is float else float(v)


def _enc_datetime(v: Any) -> Any:
    if not isinstance(v, _dt.datetime):
        raise TypeError(f"expected datetime, got {type(v).__name__}")
    if v.tzinfo is None or v.tzinfo.utcoffset(v) is None:
        raise TypeError(
            f"naive datetime {v!r}: give a timezone-aware one (e.g. tzinfo=datetime.timezone.utc)"
        )
    d = v - EPOCH
    seconds, nanos = d.days * 86400 + d.seconds, d.microseconds * 1000
    # Realm's Timestamp: the nanoseconds share the sign of the seconds (1969-12-31T23:59:59.5Z
    # is 0 s and -500,000,000 ns, not -1 s and +500,000,000 ns), or a query argument is refused.
    if seconds < 0 and nanos > 0:
        seconds, nanos = seconds + 1, nanos - 1_000_000_000
    return [seconds, nanos]


def _dec_datetime(v: Any) -> _dt.datetime:
    return EPOCH + _dt.timedelta(seconds=v[0], microseconds=v[1] // 1000)


def _enc_decimal(v: Any) -> Any:
    if not isinstance(v, decimal.Decimal):
        raise TypeError(f"expected Decimal, got {type(v).__name__}")
    if not v.is_finite():
        raise ValueError(f"{v} is not a finite decimal")
    return str(v)


def _enc_uuid(v: Any) -> Any:
    if not isinstance(v, uuid.UUID):
        raise TypeError(f"expected UUID, got {type(v).__name__}")
    return v.hex


def _dec_uuid(v: Any) -> uuid.UUID:
    return uuid.UUID(hex=v)


def _enc_object_id(v: Any) -> Any:
    if not isinstance(v, ObjectId):
        raise TypeError(f"expected ObjectId, got {type(v).__name__}")
    return str(v)


# annotation -> (property type, encoder or None, decoder or None)
_SCALARS: Dict[Any, Tuple[Any, Optional[Enc], Optional[Enc]]] = {
    int: (_ffi.PropertyType.INT, None, None),
    bool: (_ffi.PropertyType.BOOL, None, None),
    str: (_ffi.PropertyType.STRING, None, None),
    bytes: (_ffi.PropertyType.BINARY, _enc_bytes, _dec_bytes),
    # Floats pass through json.dumps as they are; non-finite ones are spelled as strings only
    # when a batch has any (see TypedTransaction._batch). Reads convert those strings back.
    float: (_ffi.PropertyType.DOUBLE, None, _dec_float),
    _dt.datetime: (_ffi.PropertyType.TIMESTAMP, _enc_datetime, _dec_datetime),
    decimal.Decimal: (_ffi.PropertyType.DECIMAL, _enc_decimal, decimal.Decimal),
    uuid.UUID: (_ffi.PropertyType.UUID, _enc_uuid, _dec_uuid),
    ObjectId: (_ffi.PropertyType.OBJECT_ID, _enc_object_id, ObjectId),
}

_SINGLE, _LIST, _SET, _DICT = "single", "list", "set", "dict"

# The row codec's spelling of a link to the object whose primary key is null (its ``null`` is
# no link); the codec reads such a link back as ``[null]`` too.
_NULL_KEY_LINK: List[None] = [None]


class _Prop:
    """One property: its spec, and how its values are encoded and decoded."""

    __slots__ = (
        "name", "stored", "ptype", "nullable", "collection", "target", "enc", "dec", "kind", "indexed"
    )

    def __init__(self, name: str) -> None:
        self.name = name  # the Python field
        self.stored = name  # the property in the database (tandem.Persisted)
        self.ptype: Any = None
        self.nullable = False
        self.collection = _SINGLE
        self.target: Optional[Type[Model]] = None
        self.enc: Optional[Enc] = None  # one element
        self.dec: Optional[Enc] = None  # one element (not links / embedded)
        self.kind = "plain"  # plain | link | embedded
        self.indexed = False  # tandem.Indexed

    def spec(self) -> Any:
        collection = {
            _SINGLE: _ffi.Collection.SINGLE,
            _LIST: _ffi.Collection.LIST,
            _SET: _ffi.Collection.SET,
            _DICT: _ffi.Collection.DICTIONARY,
        }[self.collection]
        return _ffi.PropertySpec(
            name=self.stored,
            property_type=self.ptype,
            nullable=self.nullable,
            collection=collection,
            link_target=self.target.__tandem_name__ if self.target is not None else None,
            indexed=self.indexed,
        )

    def encode_element(self, v: Any) -> Any:
        if v is None:
            return None
        if self.kind == "link":
            assert self.target is not None
            if not isinstance(v, self.target):
                raise TypeError(f"expected a {self.target.__name__}, got {type(v).__name__}")
            key = getattr(v, _info(self.target).pk)
            if key is None:
                # The link to the object whose primary key is None: the row codec spells it
                # [null], since its JSON null (a None here) is no link.
                return _NULL_KEY_LINK
            return _info(self.target).encode_key(key)
        if self.kind == "embedded":
            assert self.target is not None
            if not isinstance(v, self.target):
                raise TypeError(f"expected a {self.target.__name__}, got {type(v).__name__}")
            return _info(self.target).encode_dict(v)
        return v if self.enc is None else self.enc(v)

    def encode(self, v: Any) -> Any:
        """The JSON form of a whole property value."""
        try:
            if self.collection == _SINGLE:
                return self.encode_element(v)
            if self.collection == _DICT:
                if not isinstance(v, dict):
                    raise TypeError(f"expected a dict, got {type(v).__name__}")
                return {k: self.encode_element(x) for k, x in v.items()}
            if isinstance(v, (str, bytes, dict)) or not hasattr(v, "__iter__"):
                raise TypeError(f"expected a {self.collection}, got {type(v).__name__}")
            return [self.encode_element(x) for x in v]
        except (TypeError, ValueError) as e:
            raise type(e)(f"{self.name}: {e}") from None


class _ClassInfo:
    """A model class's schema and codecs, derived from its annotations."""

    def __init__(self, cls: Type[Model], props: List[_Prop], pk: Optional[str]) -> None:
        self.cls = cls
        self.name = cls.__tandem_name__
        self.embedded = cls.__tandem_embedded__
        self.props = props
        self.by_name = {p.name: p for p in props}
        self.names = [p.name for p in props]
        self.stored_names = [p.stored for p in props]
        self.python_names = {p.stored: p.name for p in props}
        self.pk_stored = self.by_name[pk].stored if pk else ""
        self.pk = pk or ""
        self.getter = operator.attrgetter(*self.names) if self.names else (lambda o: ())
        # Columns whose values need encoding on write (index, encoder of the whole value).
        self.encoders = [
            (i, p.encode)
            for i, p in enumerate(props)
            if p.enc is not None or p.kind != "plain" or p.collection != _SINGLE
        ]
        # Single floats are decoded inline (only the strings for non-finite values need it).
        self.floats = [
            i for i, p in enumerate(props) if p.dec is _dec_float and p.collection == _SINGLE
        ]
        self.decoders = [
            (i, p.dec, p.collection)
            for i, p in enumerate(props)
            if p.dec is not None and i not in self.floats
        ]
        self.resolvers = [(i, p) for i, p in enumerate(props) if p.kind != "plain"]
        self.sets = [i for i, p in enumerate(props) if p.collection == _SET]
        # The generated __init__ is the fastest way to build an instance (about 4x faster than
        # filling __dict__); it is used when it takes every field positionally and does nothing
        # else. Otherwise reads fill __dict__, as pickle does, without calling __init__.
        fields = dataclasses.fields(typing.cast(Any, cls))
        self.positional = (
            not hasattr(cls, "__post_init__")
            and all(f.init and not getattr(f, "kw_only", False) for f in fields)
            and [f.name for f in fields] == self.names
        )

    def spec(self) -> Any:
        return _ffi.ClassSpec(
            name=self.name,
            primary_key=None if self.embedded else self.pk_stored,
            properties=[p.spec() for p in self.props],
        )

    def encode_key(self, key: Any) -> Any:
        return self.by_name[self.pk].encode(key)

    def encode_row(self, obj: Any) -> Any:
        row: Any = self.getter(obj)
        if len(self.names) == 1:
            row = (row,)
        if self.encoders:
            row = list(row)
            for i, enc in self.encoders:
                row[i] = enc(row[i])
        return row

    def encode_dict(self, obj: Any) -> Dict[str, Any]:
        return {p.stored: p.encode(getattr(obj, p.name)) for p in self.props}

    def decode(self, row: List[Any], reader: "_Reader") -> Any:
        """A model instance from a row (property values in order)."""
        for i in self.floats:
            if row[i].__class__ is str:
                row[i] = float(row[i])
        if self.decoders:
            for i, dec, collection in self.decoders:
                v = row[i]
                if v is None:
                    continue
                if collection == _SINGLE:
                    row[i] = dec(v)
                elif collection == _DICT:
                    row[i] = {k: None if x is None else dec(x) for k, x in v.items()}
                else:
                    row[i] = [None if x is None else dec(x) for x in v]
        for i, p in self.resolvers:
            row[i] = reader.resolve(p, row[i])
        for i in self.sets:
            row[i] = set(row[i])
        if self.positional:
            return self.cls(*row)
        obj = object.__new__(self.cls)
        obj.__dict__.update(zip(self.names, row))
        return obj


_INFOS: Dict[type, _ClassInfo] = {}


def _info(cls: Type[Any]) -> _ClassInfo:
    info = _INFOS.get(cls)
    if info is None:
        raise TypeError(f"{cls!r} is not in the database's models (pass it to tandem.open)")
    return info


def _unwrap_optional(t: Any) -> Tuple[Any, bool]:
    origin = typing.get_origin(t)
    union_type = getattr(types, "UnionType", None)
    if origin is Union or (union_type is not None and origin is union_type):
        args = [a for a in typing.get_args(t) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(t)) == 2:
            return args[0], True
        raise TypeError(f"{t}: only Optional[X] unions are supported")
    return t, False


def _element(prop: _Prop, t: Any, where: str) -> None:
    t, nullable = _unwrap_optional(t)
    prop.nullable = prop.nullable or nullable
    if isinstance(t, type) and issubclass(t, Model) and t not in (Model, EmbeddedModel):
        prop.ptype = _ffi.PropertyType.LINK
        prop.target = t
        prop.kind = "embedded" if t.__tandem_embedded__ else "link"
        if prop.kind == "link" and prop.collection == _SINGLE and not nullable:
            raise TypeError(f"{where}: a link to another object may be absent: use Optional[{t.__name__}]")
        return
    if t not in _SCALARS:
        raise TypeError(f"{where}: {t!r} is not a type Tandem stores")
    prop.ptype, prop.enc, prop.dec = _SCALARS[t]


def _build_info(cls: Type[Model], models: Dict[str, type]) -> _ClassInfo:
    localns = {c.__name__: c for c in models.values()}
    try:
        hints = typing.get_type_hints(cls, localns=localns, include_extras=True)
    except NameError as e:
        raise TypeError(f"{cls.__name__}: {e} (is the class passed to tandem.open?)") from None
    props: List[_Prop] = []
    pk: Optional[str] = None
    for f in dataclasses.fields(typing.cast(Any, cls)):
        where = f"{cls.__name__}.{f.name}"
        t = hints[f.name]
        prop = _Prop(f.name)
        if typing.get_origin(t) is typing.Annotated:
            args = typing.get_args(t)
            t = args[0]
            for a in args[1:]:
                if isinstance(a, Persisted):
                    prop.stored = a.name
            prop.indexed = Indexed in args[1:] or any(isinstance(a, Indexed) for a in args[1:])
            if PrimaryKey in args[1:] or any(isinstance(a, PrimaryKey) for a in args[1:]):
                if cls.__tandem_embedded__:
                    raise TypeError(f"{where}: an embedded class has no primary key")
                if pk is not None:
                    raise TypeError(f"{cls.__name__}: two primary keys ({pk}, {f.name})")
                pk = f.name
        t_inner, nullable = _unwrap_optional(t)
        origin = typing.get_origin(t_inner)
        if origin in (list, List, Sequence):
            prop.collection = _LIST
            (elem,) = typing.get_args(t_inner)
        elif origin in (set, typing.Set, frozenset):
            prop.collection = _SET
            (elem,) = typing.get_args(t_inner)
        elif origin in (dict, Dict):
            prop.collection = _DICT
            ktype, elem = typing.get_args(t_inner)
            if ktype is not str:
                raise TypeError(f"{where}: dictionary keys are str")
        else:
            elem = t
        if prop.collection != _SINGLE and nullable:
            raise TypeError(f"{where}: a collection is never null (it is empty): drop Optional")
        _element(prop, elem, where)
        if prop.collection == _SET and prop.kind == "embedded":
            raise TypeError(f"{where}: a set cannot hold embedded objects")
        if pk == f.name and prop.ptype not in (
            _ffi.PropertyType.INT,
            _ffi.PropertyType.STRING,
            _ffi.PropertyType.OBJECT_ID,
            _ffi.PropertyType.UUID,
        ):
            raise TypeError(f"{where}: a primary key is int, str, ObjectId or UUID")
        props.append(prop)
    if pk is None and not cls.__tandem_embedded__:
        raise TypeError(
            f"{cls.__name__} has no primary key: annotate one field Annotated[T, tandem.PrimaryKey]"
        )
    return _ClassInfo(cls, props, pk)


# --- reading --------------------------------------------------------------------------------


class _Reader:
    """Decodes rows of one read; resolves links once per (class, key)."""

    def __init__(self, db: "TypedDatabase") -> None:
        self.db = db
        self.cache: Dict[Tuple[str, Any], Any] = {}

    def resolve(self, p: _Prop, v: Any) -> Any:
        if v is None:
            return None
        if p.collection == _SINGLE:
            return self.one(p, v)
        if p.collection == _DICT:
            return {k: self.one(p, x) for k, x in v.items()}
        return [self.one(p, x) for x in v]

    def one(self, p: _Prop, v: Any) -> Any:
        if v is None:
            return None
        assert p.target is not None
        info = _info(p.target)
        if p.kind == "embedded":
            return info.decode(v, self)
        # A link is its target's key, or [null] for the object whose key is null.
        key = v[0] if v.__class__ is list else v
        cache_key = (info.name, json.dumps(key))
        if cache_key in self.cache:
            return self.cache[cache_key]
        self.cache[cache_key] = None  # a cycle back to this object reads as None meanwhile
        raw = self.db._codec.object(self.db.raw, info.name, json.dumps(key).encode())
        row = json.loads(raw)
        obj = None if row is None else info.decode(row, self)
        self.cache[cache_key] = obj
        return obj


# --- values for query arguments -------------------------------------------------------------


def to_value(v: Any) -> "_ffi.Value":
    """A Python value as an untyped ``tandem.Value`` (query arguments): ``None``, ``bool``,
    ``int``, ``str``, ``float``, ``bytes`` (``bytearray``, ``memoryview``), an aware
    ``datetime.datetime``, ``decimal.Decimal`` (finite), ``uuid.UUID``, :class:`ObjectId`, or a
    model instance (a link to it). Raises ``TypeError`` for a type no property has (a naive
    datetime and an embedded object included) and ``ValueError`` for a decimal NaN or
    infinity."""
    if v is None:
        return _ffi.Value.NULL()
    if isinstance(v, bool):
        return _ffi.Value.BOOL(v)
    if isinstance(v, int):
        return _ffi.Value.INT(v)
    if isinstance(v, str):
        return _ffi.Value.STRING(v)
    if isinstance(v, float):
        return _ffi.Value.DOUBLE(v)
    if isinstance(v, (bytes, bytearray, memoryview)):
        return _ffi.Value.BINARY(bytes(v))
    if isinstance(v, _dt.datetime):
        s, ns = _enc_datetime(v)
        return _ffi.Value.TIMESTAMP(s, ns)
    if isinstance(v, decimal.Decimal):
        return _ffi.Value.DECIMAL(_enc_decimal(v))
    if isinstance(v, ObjectId):
        return _ffi.Value.OBJECT_ID(v.binary)
    if isinstance(v, uuid.UUID):
        return _ffi.Value.UUID(v.bytes)
    if isinstance(v, Model) and not v.__tandem_embedded__:
        info = _info(type(v))
        return _ffi.Value.LINK(info.name, to_key(getattr(v, info.pk)))
    raise TypeError(f"{type(v).__name__} is not a query argument type")


def to_key(v: Any) -> "_ffi.Key":
    """A Python primary key as an untyped ``tandem.Key``. Raises ``TypeError`` for a type no
    primary key has (a ``bool`` included)."""
    if v is None:
        return _ffi.Key.NULL()
    if isinstance(v, bool):
        raise TypeError("a bool is not a primary key")
    if isinstance(v, int):
        return _ffi.Key.INT(v)
    if isinstance(v, str):
        return _ffi.Key.STRING(v)
    if isinstance(v, ObjectId):
        return _ffi.Key.OBJECT_ID(v.binary)
    if isinstance(v, uuid.UUID):
        return _ffi.Key.UUID(v.bytes)
    raise TypeError(f"{type(v).__name__} is not a primary key type")


def _from_key(k: Any) -> Any:
    if isinstance(k, _ffi.Key.INT) or isinstance(k, _ffi.Key.STRING):
        return k.value
    if isinstance(k, _ffi.Key.OBJECT_ID):
        return ObjectId(k.bytes)
    if isinstance(k, _ffi.Key.UUID):
        return uuid.UUID(bytes=k.bytes)
    return None


# --- the database ---------------------------------------------------------------------------


Target = Union[M, Tuple[Type[M], Any]]


# One encoder for every batch: ``json.dumps`` with options builds a new encoder per call (about
# 2 us of a one-object transaction, ``bindings/python/bench``).
_BATCH_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _refuse(o: Any) -> Any:
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


# ``JSONEncoder.encode`` still builds its C encoder (``_json.make_encoder``) on every call; this
# is that encoder built once, with the same options. It keeps no state between calls when it
# checks no cycles (``markers`` None; a shared markers dict would be shared by threads and keeps
# stale entries after an error), so a value containing itself is a RecursionError here rather
# than a ValueError. ``None`` where the C accelerator is missing (PyPy): then the encoder above.
_c_make_encoder: Any = getattr(json.encoder, "c_make_encoder", None)
_BATCH_C_ENCODER: Any = (
    _c_make_encoder(None, _refuse, json.encoder.encode_basestring, None, ":", ",", False, False, False)
    if _c_make_encoder is not None
    else None
)


def _encode_batch(ops: List[Any]) -> str:
    """``ops`` as compact JSON (non-ASCII as is); ValueError for a NaN or an infinity."""
    if _BATCH_C_ENCODER is not None:
        return "".join(_BATCH_C_ENCODER(ops, 0))
    return _BATCH_ENCODER.encode(ops)


class TypedTransaction:
    """The operations of one write, sent to the database in one crossing when the ``with``
    block ends (see :meth:`TypedDatabase.write`). Values are encoded when the operation is
    made, so later changes to a model instance do not reach this transaction. Once the block
    has ended (committed or rolled back), every method raises ``TandemError.InvalidArgument``
    ("this transaction has ended"): nothing done with it then could reach the database."""

    def __init__(self) -> None:
        self._ops: List[Any] = []
        self._rows: Optional[List[Any]] = None  # rows of the trailing "rows" op
        self._rows_class: Optional[_ClassInfo] = None
        self._finished = False  # its block ended: every method raises

    @property
    def finished(self) -> bool:
        """Whether the ``with`` block of this transaction has ended (it can take no more
        operations)."""
        return self._finished

    def _push(self, op: List[Any]) -> None:
        self._ops.append(op)
        self._rows_class = None

    def _target(self, target: Any) -> Tuple[_ClassInfo, Any]:
        if isinstance(target, tuple):
            cls, key = target
            info = _info(cls)
        else:
            info = _info(type(target))
            key = getattr(target, info.pk)
        if info.embedded:
            raise TypeError(f"{info.name} is embedded: edit it through its owner")
        return info, info.encode_key(key)

    def add(self, obj: Model, update: bool = False) -> None:
        """Adds ``obj`` (all its fields). An object with its primary key existing already is an
        error at commit, unless ``update``: then its fields are overwritten (upsert)."""
        if self._finished:
            raise _lifecycle.finished_error()
        info = _info(type(obj))
        if info.embedded:
            raise TypeError(f"{info.name} is embedded: assign it to a field of its owner")
        if update:
            self._push(["upsert", info.name, dict(zip(info.stored_names, info.encode_row(obj)))])
            return
        row = info.encode_row(obj)
        if self._rows_class is info and self._rows is not None:
            self._rows.append(row)
        else:
            self._rows = [row]
            self._ops.append(["rows", info.name, info.stored_names, self._rows])
            self._rows_class = info

    def add_all(self, objs: Sequence[Model], update: bool = False) -> None:
        """:meth:`add` for each object."""
        if self._finished:
            raise _lifecycle.finished_error()
        for obj in objs:
            self.add(obj, update)

    def create(self, cls: Type[M], **values: Any) -> M:
        """Builds ``cls(**values)``, adds it, and returns it."""
        if self._finished:
            raise _lifecycle.finished_error()
        obj = cls(**values)
        self.add(obj)
        return obj

    def upsert(self, cls: Type[Model], **values: Any) -> None:
        """Creates the object (the primary key is among ``values``) or overwrites only the
        properties given (a collection given replaces the whole collection)."""
        if self._finished:
            raise _lifecycle.finished_error()
        info = _info(cls)
        if info.pk not in values:
            raise TypeError(f"upsert of a {info.name} needs its primary key {info.pk}")
        props = [(self._prop(info, k), v) for k, v in values.items()]
        self._push(["upsert", info.name, {p.stored: p.encode(v) for p, v in props}])

    @staticmethod
    def _prop(info: _ClassInfo, name: str) -> _Prop:
        try:
            return info.by_name[name]
        except KeyError:
            raise AttributeError(f"{info.name} has no property {name}") from None

    def set(self, target: Any, **values: Any) -> None:
        """Writes properties of an existing object: ``tx.set(task, done=True)`` or
        ``tx.set((Task, 1), done=True)``. A collection given replaces the whole collection."""
        if self._finished:
            raise _lifecycle.finished_error()
        info, key = self._target(target)
        collections = {}
        for name, v in values.items():
            prop = self._prop(info, name)
            if prop.collection == _SINGLE:
                self._push(["set", info.name, key, prop.stored, prop.encode(v)])
            else:
                collections[prop.stored] = prop.encode(v)
        if collections:
            collections[info.pk_stored] = key
            self._push(["upsert", info.name, collections])

    def delete(self, target: Any) -> None:
        """Deletes an object (an instance, or ``(cls, key)``)."""
        if self._finished:
            raise _lifecycle.finished_error()
        info, key = self._target(target)
        self._push(["erase", info.name, key])

    def increment(self, target: Any, prop: str, amount: int = 1) -> None:
        """Adds to an int property (a counter: concurrent increments from devices sum up)."""
        if self._finished:
            raise _lifecycle.finished_error()
        info, key = self._target(target)
        self._push(["add", info.name, key, self._prop(info, prop).stored, amount])

    def _edit(self, op: str, target: Any, prop: str, *args: Any, value: Any = ...) -> None:
        if self._finished:
            raise _lifecycle.finished_error()
        info, key = self._target(target)
        p = self._prop(info, prop)
        expected = {"list": _LIST, "set": _SET, "dict": _DICT}[op.split("_")[0]]
        if p.collection != expected:
            raise TypeError(f"{info.name}.{prop} is not a {expected}")
        tail = list(args)
        if value is not ...:
            tail.append(p.encode_element(value))
        self._push([op, info.name, key, p.stored, *tail])

    def list_insert(self, target: Any, prop: str, index: int, value: Any) -> None:
        """Inserts ``value`` at ``index`` (0..len) of a list."""
        self._edit("list_insert", target, prop, index, value=value)

    def list_set(self, target: Any, prop: str, index: int, value: Any) -> None:
        """Replaces the element at ``index`` of a list."""
        self._edit("list_set", target, prop, index, value=value)

    def list_move(self, target: Any, prop: str, from_index: int, to_index: int) -> None:
        """Moves a list element so it ends up at ``to_index``."""
        self._edit("list_move", target, prop, from_index, to_index)

    def list_remove(self, target: Any, prop: str, index: int) -> None:
        """Removes the element at ``index`` of a list."""
        self._edit("list_erase", target, prop, index)

    def list_clear(self, target: Any, prop: str) -> None:
        """Empties a list."""
        self._edit("list_clear", target, prop)

    def set_add(self, target: Any, prop: str, value: Any) -> None:
        """Adds ``value`` to a set."""
        self._edit("set_insert", target, prop, value=value)

    def set_remove(self, target: Any, prop: str, value: Any) -> None:
        """Removes ``value`` from a set."""
        self._edit("set_erase", target, prop, value=value)

    def set_clear(self, target: Any, prop: str) -> None:
        """Empties a set."""
        self._edit("set_clear", target, prop)

    def dict_set(self, target: Any, prop: str, entry: str, value: Any) -> None:
        """Sets one entry of a dictionary."""
        self._edit("dict_set", target, prop, entry, value=value)

    def dict_remove(self, target: Any, prop: str, entry: str) -> None:
        """Removes one entry of a dictionary."""
        self._edit("dict_erase", target, prop, entry)

    def dict_clear(self, target: Any, prop: str) -> None:
        """Empties a dictionary."""
        self._edit("dict_clear", target, prop)

    def _batch(self) -> Optional[bytes]:
        if not self._ops:
            return None
        try:
            text = _encode_batch(self._ops)
        except ValueError:  # a NaN or an infinity: JSON has no spelling for them
            text = _encode_batch(_spell_floats(self._ops))
        return text.encode()


@dataclasses.dataclass
class TypedResultsChange(Generic[M]):
    """How live results changed (indices as in Realm), with the new results. The first change
    a listener gets is ``initial``: the results it starts from, every index an insertion."""

    deletions: List[int]
    """Indices in the old results of objects no longer there."""
    insertions: List[int]
    """Indices in the new results of new objects."""
    modifications: List[int]
    """Indices in the new results of objects that changed."""
    objects: List[M]
    """The results as read when the callback runs, in order (one crossing). A commit that lands
    meanwhile can show here already; the next change reports it."""
    initial: bool = False
    """This is the starting results (Realm's initial notification), not a change."""
    keys: List[Any] = dataclasses.field(default_factory=list)
    """The primary keys of the results just after this change, in order: exactly what the
    indices refer to (``objects`` may be newer)."""


@dataclasses.dataclass
class TypedObjectChange(Generic[M]):
    """How an observed object changed."""

    deleted: bool
    """The object was deleted."""
    changed: List[str]
    """The properties that changed (sorted; empty when deleted)."""
    object: Optional[M]
    """The object as it is now (``None`` when deleted)."""


class _CallbackResults(_ffi.ResultsListener):
    def __init__(self, fn: Callable[[Any], None]) -> None:
        self.fn = fn

    def on_change(self, change: Any) -> None:
        self.fn(change)


class _CallbackObject(_ffi.ObjectListener):
    def __init__(self, fn: Callable[[Any], None]) -> None:
        self.fn = fn

    def on_change(self, change: Any) -> None:
        self.fn(change)


_END = object()
"""Queued by ``_changes`` when the database closes: the iteration ends."""


async def _changes(
    state: _lifecycle.DatabaseState, register: Callable[[Callable[[Any], None]], Any]
) -> AsyncIterator[Any]:
    """Bridges a listener (run on Tandem's notifier thread) into async iteration on the
    running event loop. The listener is cancelled when the iteration ends; the iteration ends
    when the database (``state``) is closed."""
    loop = asyncio.get_running_loop()
    queue: "asyncio.Queue[Any]" = asyncio.Queue()

    def emit(change: Any) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, change)

    def end() -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, _END)
        except RuntimeError:
            pass  # the loop is closed: nobody iterates any more

    token = object()
    state.on_close[token] = end
    try:
        handle = register(emit)
        try:
            while True:
                change = await queue.get()
                if change is _END:
                    return
                yield change
        finally:
            handle.cancel()
    finally:
        state.on_close.pop(token, None)


class LiveResults(Generic[M]):
    """The objects of a class matching a query. Live: every ``len()``, index and iteration
    runs the query again on the current data (one crossing each; an iteration reads all its
    objects in one crossing). :meth:`observe` and :meth:`changes` report changes."""

    def __init__(self, db: "TypedDatabase", cls: Type[M], query: str, args: Sequence[Any]) -> None:
        self._db = db
        self._cls = cls
        self._info = _info(cls)
        self._query = query
        self._args = [to_value(a) for a in args]
        self._raw = db.raw.query(self._info.name, query, self._args)

    def _read(self, offset: int, limit: Optional[int]) -> List[M]:
        self._db._check_open()
        data = self._db._codec.query(self._db.raw, self._info.name, self._query, self._args, offset, limit)
        reader = _Reader(self._db)
        decode = self._info.decode
        return [decode(row, reader) for row in json.loads(data)]

    def snapshot(self) -> List[M]:
        """The objects now, in order, as a list (one crossing)."""
        return self._read(0, None)

    def __iter__(self) -> Iterator[M]:
        return iter(self.snapshot())

    def __len__(self) -> int:
        return int(self._raw.count())

    @overload
    def __getitem__(self, index: int) -> M: ...

    @overload
    def __getitem__(self, index: slice) -> List[M]: ...

    def __getitem__(self, index: Union[int, slice]) -> Union[M, List[M]]:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                return self.snapshot()[index]
            return self._read(start, max(0, stop - start))
        if index < 0:
            index += len(self)
        found = self._read(index, 1) if index >= 0 else []
        if not found:
            raise IndexError("results index out of range")
        return found[0]

    def keys(self) -> List[Any]:
        """The primary keys, in order."""
        return [_from_key(k) for k in self._raw.keys()]

    def observe(
        self, callback: Callable[[TypedResultsChange[M]], None], key_paths: Sequence[str] = ()
    ) -> Any:
        """Calls ``callback`` first with the results the listener starts from (``initial``),
        then after every change, each relative to the one before: no commit between reading
        the results and registering is missed or counted twice. The initial call, and calls for
        changes that land while it runs, are made on the calling thread before this returns;
        the later ones on Tandem's notifier thread. Returns a handle whose
        ``cancel()`` stops it. ``key_paths`` narrows modifications to the properties named
        (``"dog.name"``, ``*``). An exception from the initial call cancels the listener and
        propagates; raises ``TandemError.InvalidArgument`` for a key path that does not
        exist."""
        lock = threading.Lock()
        pending: Optional[List[Any]] = []  # changes that came before the held-back ones ended

        def deliver(change: Any, initial: bool = False) -> None:
            if self._db._state.closed:
                return  # delivered as the database closed: the listener is being cancelled
            callback(
                TypedResultsChange(
                    list(change.deletions),
                    list(change.insertions),
                    list(change.modifications),
                    self.snapshot(),
                    initial,
                    [_from_key(k) for k in change.keys],
                )
            )

        def on_change(change: Any) -> None:
            with lock:  # held back until observe() has delivered what came before it
                if pending is not None:
                    pending.append(change)
                    return
            deliver(change)

        observation = self._raw.observe_with_initial(
            _CallbackResults(on_change), key_paths=list(key_paths)
        )
        try:
            # Callbacks run without the lock held, so the notifier thread (which serves every
            # listener of the database) is never blocked by one: it queues and goes on.
            deliver(observation.initial, initial=True)
            while True:
                with lock:
                    held, pending = pending or [], []
                    if not held:
                        pending = None
                        break
                for change in held:
                    deliver(change)
        except BaseException:
            observation.handle.cancel()
            raise
        return observation.handle

    def changes(self, key_paths: Sequence[str] = ()) -> AsyncIterator[TypedResultsChange[M]]:
        """``async for change in results.changes():`` the starting results (``initial``), then
        each change, on the running loop. The listener is registered when the iteration
        starts (its first ``__anext__``) and cancelled when it ends; the iteration ends when
        the database is closed."""
        return _changes(self._db._state, lambda emit: self.observe(emit, key_paths))

    def __repr__(self) -> str:
        return f"LiveResults({self._cls.__name__}, {self._query!r})"


# --- flexible sync subscriptions -------------------------------------------------------------


class SubscriptionState(enum.Enum):
    """Where a subscription set stands (realm-kotlin's ``SubscriptionSetState``)."""

    PENDING = "pending"
    """Committed; a flexible sync session has not integrated the server's bootstrap of it yet."""
    COMPLETE = "complete"
    """Its bootstrap is integrated: the file holds what it matches. The newest complete set is
    the active one."""
    ERROR = "error"
    """The server could not evaluate it (:attr:`TypedSubscriptionSet.error` says why); the active
    set stays as it was."""
    SUPERSEDED = "superseded"
    """A newer set completed first."""


_STATES = [
    (_ffi.SubscriptionSetState.PENDING, SubscriptionState.PENDING),
    (_ffi.SubscriptionSetState.COMPLETE, SubscriptionState.COMPLETE),
    (_ffi.SubscriptionSetState.ERROR, SubscriptionState.ERROR),
    (_ffi.SubscriptionSetState.SUPERSEDED, SubscriptionState.SUPERSEDED),
]


@dataclasses.dataclass(frozen=True)
class TypedSubscription:
    """One subscription: the objects of a class matching a query."""

    name: Optional[str]
    """Its name (unique within a set), or ``None``."""
    class_name: str
    """The class as stored (``Model`` classes: their ``name=``)."""
    query: str
    """The query as the server evaluates it (arguments inlined)."""
    model: Optional[Type[Model]]
    """The database's model class of that name (``None`` if it has none)."""


class TypedSubscriptionSet:
    """One version of a database's subscriptions as it was read (``db.subscriptions``: the
    latest; ``db.active_subscriptions``: the newest complete one). A snapshot: read
    ``db.subscriptions`` again for news. Iterates over its :class:`TypedSubscription` objects,
    in the order they were added; ``len()``; :meth:`find` by name."""

    def __init__(self, db: "TypedDatabase", raw: Any) -> None:
        self._db = db
        self.raw = raw
        """The untyped ``tandem.SubscriptionSet``."""
        self.version: int = raw.version
        """0 for the empty set a file starts with, then one more per update."""
        self.state: SubscriptionState = next(
            state for variant, state in _STATES if isinstance(raw.state, variant)
        )
        """Where it stands."""
        self.error: Optional[str] = (
            raw.state.message if self.state is SubscriptionState.ERROR else None
        )
        """The server's message when :attr:`state` is ``ERROR``."""
        models = {m.__tandem_name__: m for m in db.models}
        self.subscriptions: List[TypedSubscription] = [
            TypedSubscription(s.name, s.class_name, s.query, models.get(s.class_name))
            for s in raw.subscriptions
        ]

    def __len__(self) -> int:
        return len(self.subscriptions)

    def __iter__(self) -> Iterator[TypedSubscription]:
        return iter(self.subscriptions)

    def find(self, name: str) -> Optional[TypedSubscription]:
        """The subscription called ``name``, or ``None``."""
        return next((s for s in self.subscriptions if s.name == name), None)

    def update(self) -> "typing.ContextManager[MutableSubscriptionSet]":
        """``with db.subscriptions.update() as subs:`` collects changes (``subs.add(Task,
        "done == $0", False, name="open")``, ``subs.remove("open")``, ``subs.remove_all(Task)``)
        and commits them, applied to the database's latest set (whichever version this
        snapshot is), as the next version when the block ends; an exception in the block
        discards them. The new set is ``PENDING`` until a flexible sync session has the
        server's bootstrap of it. A change that fails (``TandemError.InvalidArgument``: an
        unknown class, a query that does not compile, SORT/DISTINCT/LIMIT) commits nothing."""
        return self._db._update_subscriptions()

    async def wait_for_synchronization(
        self, timeout_ms: Optional[int] = None, session: Any = None
    ) -> "TypedSubscriptionSet":
        """Completes when this set is no longer pending, with the set as it is then:
        ``COMPLETE`` (the file holds what it matches) or ``SUPERSEDED`` (a newer set completed
        first). ``session``: the flexible sync session, by default the one ``db.sync()`` started
        last (while it is referenced). Errors: ``TandemError.Sync`` when the server refused the
        set (its state is then ``ERROR``) or the session is not flexible, ``Timeout`` after
        ``timeout_ms`` (``None``: as long as it takes), ``Stopped``. Realm's
        ``waitForSynchronization``; ``session.wait_for_subscriptions`` underneath."""
        raw = await self._db._session(session).wait_for_subscriptions(self.version, timeout_ms)
        return TypedSubscriptionSet(self._db, raw)

    def wait_for_synchronization_blocking(
        self, timeout_ms: Optional[int] = None, session: Any = None
    ) -> "TypedSubscriptionSet":
        """:meth:`wait_for_synchronization`, blocking the calling thread."""
        raw = self._db._session(session).wait_for_subscriptions_blocking(self.version, timeout_ms)
        return TypedSubscriptionSet(self._db, raw)

    def __repr__(self) -> str:
        error = f", error={self.error!r}" if self.error is not None else ""
        subs = ", ".join(
            (f"{s.name}=" if s.name is not None else "") + f"{s.class_name}({s.query!r})"
            for s in self.subscriptions
        )
        return f"TypedSubscriptionSet(version={self.version}, {self.state.name}{error}, [{subs}])"


class MutableSubscriptionSet:
    """The changes of one subscription update (:meth:`TypedSubscriptionSet.update`,
    :meth:`TypedDatabase.update_subscriptions`), applied in order to the latest set when the
    update ends, in one crossing. Each method returns the set, so calls chain."""

    def __init__(self) -> None:
        self.changes: List[Any] = []
        """The untyped ``tandem.SubscriptionChange`` variants so far."""

    @staticmethod
    def _class_name(model: Union[Type[Model], str]) -> str:
        if isinstance(model, str):
            return model
        info = _info(model)
        if info.embedded:
            raise TypeError(f"{info.name} is embedded: subscribe to its owner")
        return info.name

    def add(
        self,
        model: Union[Type[Model], str],
        query: str = "TRUEPREDICATE",
        *args: Any,
        name: Optional[str] = None,
    ) -> "MutableSubscriptionSet":
        """Subscribes to the objects of ``model`` (a model class or a class name) matching
        ``query`` (the query language of :meth:`TypedDatabase.objects` without SORT, DISTINCT
        and LIMIT; ``$0``, ``$1``... are ``args``, Python values). A ``name`` replaces the
        subscription of that name; without one, the same class and query are subscribed
        once."""
        values = [to_value(a) for a in args]
        self.changes.append(
            _ffi.SubscriptionChange.ADD(name=name, class_name=self._class_name(model), query=query, args=values)
        )
        return self

    def remove(self, name: str) -> "MutableSubscriptionSet":
        """Removes the subscription called ``name`` (nothing if there is none)."""
        self.changes.append(_ffi.SubscriptionChange.REMOVE(name=name))
        return self

    def remove_all(self, model: Union[Type[Model], str, None] = None) -> "MutableSubscriptionSet":
        """Removes every subscription on ``model`` (a model class or a class name), or every
        subscription when ``model`` is ``None``."""
        if model is None:
            self.changes.append(_ffi.SubscriptionChange.CLEAR())
        else:
            self.changes.append(_ffi.SubscriptionChange.REMOVE_CLASS(class_name=self._class_name(model)))
        return self


@dataclasses.dataclass(frozen=True)
class CompensatingWrite:
    """One write the server refused and reverted (its flexible sync rules, ``--flx-rules``,
    forbid it to the token's user): realm-kotlin's ``CompensatingWriteInfo``."""

    class_name: str
    """The object's class."""
    primary_key: Any
    """Its primary key (``int``, ``str``, :class:`ObjectId`, ``uuid.UUID`` or ``None``)."""
    reason: str
    """Why, in the server's words."""


COMPENSATING_WRITE = 231
"""The error code of a compensating write (an error listener's ``code``)."""


def _varint(data: bytes, i: int) -> Tuple[int, int]:
    """Realm's sign-bit varint at ``data[i:]``: (value, index after it)."""
    magnitude, shift = 0, 0
    while True:
        b = data[i]
        i += 1
        if b & 0x80:
            magnitude |= (b & 0x7F) << shift
            shift += 7
        else:
            magnitude |= (b & 0x3F) << shift
            return (-magnitude - 1 if b & 0x40 else magnitude), i


def _inline_key(pk: str) -> Any:
    """A ``rejectedUpdates[].pk``: base64 of a payload type and the value (changeset format)."""
    data = base64.b64decode(pk)
    kind, i = _varint(data, 0)
    if kind == 1:  # Int
        return _varint(data, i)[0]
    if kind == 3:  # String: length, bytes
        n, i = _varint(data, i)
        return data[i : i + n].decode()
    if kind == 10:  # ObjectId
        return ObjectId(data[i : i + 12])
    if kind == 11:  # UUID
        return uuid.UUID(bytes=data[i : i + 16])
    return None  # Null


def compensating_writes(code: int, message: str) -> List[CompensatingWrite]:
    """The writes an error event reports as reverted: for code 231 (``COMPENSATING_WRITE``)
    the event's message carries the server's JSON, whose ``rejectedUpdates`` this decodes; an
    empty list for any other event. Use it in an error listener
    (``session.observe_errors``)."""
    if code != COMPENSATING_WRITE or "{" not in message:
        return []
    try:
        body = json.loads(message[message.index("{") :])
    except ValueError:
        return []
    return [
        CompensatingWrite(u.get("table", ""), _inline_key(u["pk"]) if "pk" in u else None,
                          u.get("reason", ""))
        for u in body.get("rejectedUpdates", [])
    ]


def _batch_writer(codec: Any, raw: Any) -> Tuple[Any, Callable[[bytes], int]]:
    """The write path of :meth:`TypedDatabase.write`: ``_ffi.batch_write`` through a
    ``BatchWriter`` binding ``codec`` to ``raw`` (kept alive with the database), one crossing.

    The call goes straight to the generated module's ctypes function when it has the expected
    shape: uniffi's Python wrapper around it (argument checks, a call-status structure built
    from defaults, the lift of the result) cost about 20 us of a one-object transaction's 110
    (``bindings/python/bench``). The same status check and error conversion run after it, so
    errors are the ``TandemError`` the wrapper would raise. If the generated module differs
    (another uniffi version), the wrapper is used."""
    writer = _ffi.BatchWriter(codec, raw)
    writer_id = writer.id()
    try:
        from .tandem import tandem as generated_module

        # Private names of the generated module, which its type stub leaves out.
        generated: Any = generated_module
        status_type: Any = generated._UniffiRustCallStatus
        check: Any = generated._uniffi_check_call_status
        error_converter: Any = generated._UniffiFfiConverterTypeTandemError
        foreign_bytes: Any = generated._UniffiForeignBytes
        # The generated struct's fields are (c_int32 len, POINTER(c_char) data); filling the
        # pointer from `bytes` takes a ctypes.cast (about 3 of the generated lower's 5 us per
        # call, measured with timeit). `_BorrowedBytes` has the same layout with a c_char_p,
        # which takes the `bytes` directly and keeps it alive for the call, and a separate
        # function object of the same symbol is declared with it.
        if [f[0] for f in foreign_bytes._fields_] != ["len", "data"] or ctypes.sizeof(
            foreign_bytes
        ) != ctypes.sizeof(_BorrowedBytes):
            raise AttributeError("unexpected ForeignBytes layout")
        fn: Any = generated._UniffiLib["uniffi_tandem_fn_func_batch_write"]
        fn.argtypes = (ctypes.c_uint64, _BorrowedBytes, ctypes.POINTER(status_type))
        fn.restype = ctypes.c_uint64
        byref = ctypes.byref
    except (ImportError, AttributeError, KeyError):  # pragma: no cover - another generator
        return writer, lambda batch: int(_ffi.batch_write(writer_id, batch))

    def write(batch: bytes) -> int:
        size = len(batch)
        if size > _MAX_BATCH_BYTES:  # ForeignBytes' length is an i32: never let it wrap
            raise ValueError(f"a write batch of {size} bytes is over 2 GiB: split the transaction")
        status = status_type()  # per call: writes may come from several threads
        version = fn(writer_id, _BorrowedBytes(size, batch), byref(status))
        if status.code:
            check(error_converter, status)
        return int(version)

    return writer, write


_MAX_BATCH_BYTES = 2**31 - 1
"""The largest batch one crossing carries (uniffi's ``ForeignBytes`` length is an ``i32``)."""


class _BorrowedBytes(ctypes.Structure):
    """uniffi's ``ForeignBytes`` (a length and a pointer to bytes Rust borrows for the call),
    with the pointer declared ``c_char_p`` so that a ``bytes`` object fills it directly."""

    _fields_ = [("len", ctypes.c_int32), ("data", ctypes.c_char_p)]


class _WriteBlock:
    """The context manager of :meth:`TypedDatabase.write` (a class rather than a generator
    function: ``contextlib.contextmanager`` costs about 3 us per transaction). The transaction
    is open, for nested-write checks (``_lifecycle.begin_write``), from ``__enter__`` until
    its commit or rollback has ended; after that its :class:`TypedTransaction` takes nothing
    more."""

    __slots__ = ("_db", "_tx", "_held", "_key")

    def __init__(self, db: "TypedDatabase") -> None:
        self._db = db
        self._tx = TypedTransaction()
        self._held: Optional[typing.Set[Any]] = None

    def __enter__(self) -> TypedTransaction:
        db = self._db
        if self._tx._finished or self._held is not None:
            raise _lifecycle.finished_error()  # a block object entered a second time
        if db._state.closed:
            raise _lifecycle.closed_error()
        # _lifecycle.begin_write, inlined.
        loop = _running_loop()
        key = db._file_key if loop is None else (db._file_key, _current_task(loop))
        try:
            held: typing.Set[Any] = _lifecycle.local.held
        except AttributeError:
            held = _lifecycle.held()
        if key in held:
            raise _lifecycle.nested_write_error()
        held.add(key)
        self._held, self._key = held, key
        return self._tx

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        tx = self._tx
        tx._finished = True
        try:
            if exc_type is None:
                batch = tx._batch()
                if batch is not None:
                    self._db.version = self._db._write_batch(batch) or None
        finally:
            self._held.discard(self._key)  # type: ignore[union-attr]  # set by __enter__


_running_loop = _lifecycle.running_loop
_current_task = _lifecycle.current_task


def _closed_write(batch: bytes) -> int:
    raise _lifecycle.closed_error()


class TypedDatabase:
    """A database whose schema is model classes (see :func:`open`). ``raw`` is the untyped
    ``tandem.Database`` underneath, for everything else (sync, dynamic classes).

    ``db.close()`` (or ``with tandem.open(...) as db:``) releases it; see :meth:`close`."""

    def __init__(self, raw: Any, models: Sequence[Type[Model]], codec: Any) -> None:
        self.raw = raw
        self.models = list(models)
        self._codec = codec
        self._state = _lifecycle.state_of(raw)
        self._file_key = self._state.file_key
        self._writer, self._write_batch = _batch_writer(codec, raw)
        # Closing the untyped database (db.raw.close()) releases the writer too. Through a
        # weak reference, so that the raw database does not keep this one alive; the entry goes
        # when this one does.
        token = object()
        callbacks = self._state.on_close
        this = weakref.ref(self, lambda _: callbacks.pop(token, None))

        def on_close() -> None:
            db = this()
            if db is not None:
                db._release_writer()

        callbacks[token] = on_close

    def _release_writer(self) -> None:
        self._write_batch = _closed_write
        writer, self._writer = self._writer, None
        if writer is not None:
            _lifecycle.release(writer)  # its Rust side holds the database

    def _check_open(self) -> None:
        if self._state.closed:
            raise _lifecycle.closed_error()

    def close(self) -> None:
        """Closes the database: listeners registered through it (typed or untyped) are
        cancelled, ``async for`` iterations of its changes end, sync sessions it started are
        stopped, and its handles on the Rust database (its own, its writer's, those of its live
        results) are released, so the file is closed once nothing else in the process holds it
        (another ``tandem.open`` of it, an untyped object kept from it). From then on any use
        of it, of its live results or of a write block still open raises
        ``TandemError.InvalidArgument`` ("the database is closed"); closing again does
        nothing. ``with tandem.open(path, models) as db:`` closes it when the block ends.
        Closes :attr:`raw` too (and closing ``raw`` closes this)."""
        self.raw.close()
        self._release_writer()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` (or ``raw.close()``) was called."""
        return self._state.closed

    def __enter__(self) -> "TypedDatabase":
        """``with tandem.open(path, models) as db:`` gives the database ..."""
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        """... and closes it when the block ends (an exception in the block propagates)."""
        self.close()

    def write(self) -> "typing.ContextManager[TypedTransaction]":
        """``with db.write() as tx:`` collects operations and performs them in one transaction
        (one crossing) when the block ends; an exception in the block discards them. Errors
        (a duplicate key, a value that does not fit its property) are ``TandemError`` and
        write nothing.

        Writes do not nest: opening a write while one is open on the same database file on
        the same thread (asyncio: in the same task), through this object or any other handle
        of the file in this process, typed or untyped, raises ``TandemError.InvalidArgument``
        ("a write transaction is already open on this thread: nested writes are not
        supported"), as Realm does; an inner write would otherwise commit on its own even if
        the outer one rolled back. The transaction (``tx``) takes no operation after its block
        has ended (``TandemError.InvalidArgument``, "this transaction has ended")."""
        if self._state.closed:
            raise _lifecycle.closed_error()
        return _WriteBlock(self)

    version: Optional[int] = None
    """The local version of the last commit made through :meth:`write` (``None`` if it changed
    nothing)."""

    def get(self, cls: Type[M], key: Any) -> Optional[M]:
        """The object of ``cls`` with primary key ``key``, or ``None``."""
        self._check_open()
        info = _info(cls)
        if info.embedded:
            raise TypeError(f"{info.name} is embedded: read it through its owner")
        data = self._codec.object(self.raw, info.name, json.dumps(info.encode_key(key)).encode())
        row = json.loads(data)
        return None if row is None else info.decode(row, _Reader(self))

    def objects(self, cls: Type[M], query: str = "TRUEPREDICATE", *args: Any) -> LiveResults[M]:
        """Live results: the objects of ``cls`` matching ``query`` (Realm's query language,
        ``$0``, ``$1``... are ``args``, Python values as :func:`to_value` takes them; e.g.
        ``"done == $0 SORT(title ASC)"``)."""
        self._check_open()
        return LiveResults(self, cls, query, args)

    def observe(
        self,
        target: Any,
        callback: Callable[[TypedObjectChange[Any]], None],
        key_paths: Sequence[str] = (),
    ) -> Any:
        """Calls ``callback`` on Tandem's notifier thread whenever the object (an instance or
        ``(cls, key)``) changes, including through its links; returns a handle with
        ``cancel()``. :meth:`close` cancels it."""
        self._check_open()
        if isinstance(target, tuple):
            cls, key = target
        else:
            cls, key = type(target), getattr(target, _info(type(target)).pk)
        info = _info(cls)

        def on_change(change: Any) -> None:
            if self._state.closed:
                return  # delivered as the database closed: the listener is being cancelled
            if isinstance(change, _ffi.ObjectChange.DELETED):
                callback(TypedObjectChange(True, [], None))
            else:
                changed = [info.python_names.get(n, n) for n in change.properties]
                callback(TypedObjectChange(False, changed, self.get(cls, key)))

        return self.raw.observe_object(
            info.name, to_key(key), _CallbackObject(on_change), key_paths=list(key_paths)
        )

    def changes(self, target: Any, key_paths: Sequence[str] = ()) -> AsyncIterator[TypedObjectChange[Any]]:
        """``async for change in db.changes(task):`` each change of the object; the iteration
        ends when the database is closed."""
        return _changes(self._state, lambda emit: self.observe(target, emit, key_paths))

    def sync(self, options: Any, token_provider: Any = None, error_listener: Any = None) -> Any:
        """Starts syncing (see ``tandem.Database.sync``); returns the ``SyncSession``, whose
        waits are awaitable. Flexible sync: ``tandem.SyncOptions(..., path="/flx",
        flexible=True)``; the session then downloads what :attr:`subscriptions` match. The
        database does not keep the session alive (``stop()`` or dropping it stops syncing);
        :meth:`close` stops it. ``error_listener`` (a ``tandem.ErrorListener``) is told of every
        error of the session from the first; ``session.observe_errors`` later can miss the
        earliest."""
        self._check_open()
        session = self.raw.sync(options, token_provider, error_listener)
        self._last_session = weakref.ref(session)
        return session

    _last_session: Optional["weakref.ReferenceType[Any]"] = None

    def _session(self, session: Any) -> Any:
        if session is None and self._last_session is not None:
            session = self._last_session()
        if session is None:
            raise RuntimeError(
                "no sync session: start one with db.sync(...) and keep it, or pass session="
            )
        return session

    @property
    def subscriptions(self) -> TypedSubscriptionSet:
        """The latest subscription set (flexible sync; version 0, empty and ``COMPLETE``
        until the first update). ``with db.subscriptions.update() as subs:`` changes it."""
        return TypedSubscriptionSet(self, self.raw.subscriptions())

    @property
    def active_subscriptions(self) -> TypedSubscriptionSet:
        """The active subscription set: the newest ``COMPLETE`` one."""
        return TypedSubscriptionSet(self, self.raw.active_subscriptions())

    def update_subscriptions(
        self, edit: Callable[[MutableSubscriptionSet], object]
    ) -> TypedSubscriptionSet:
        """Calls ``edit`` with a :class:`MutableSubscriptionSet` and commits its changes as the
        next set, which it returns (``PENDING``; the latest set unchanged if the changes change
        nothing): ``db.update_subscriptions(lambda subs: subs.add(Task, "done == $0", False,
        name="open"))``. Errors as :meth:`TypedSubscriptionSet.update`."""
        subs = MutableSubscriptionSet()
        edit(subs)
        return self._commit_subscriptions(subs)

    @contextmanager
    def _update_subscriptions(self) -> Iterator[MutableSubscriptionSet]:
        subs = MutableSubscriptionSet()
        yield subs
        self._commit_subscriptions(subs)

    def _commit_subscriptions(self, subs: MutableSubscriptionSet) -> TypedSubscriptionSet:
        return TypedSubscriptionSet(self, self.raw.update_subscriptions(subs.changes))


def schema(models: Sequence[Type[Model]]) -> List[Any]:
    """The ``ClassSpec`` list of these model classes (what :func:`open` passes on)."""
    by_name: Dict[str, type] = {}
    for cls in models:
        if not (isinstance(cls, type) and issubclass(cls, Model)) or cls in (Model, EmbeddedModel):
            raise TypeError(f"{cls!r} is not a tandem.Model subclass")
        by_name[cls.__tandem_name__] = cls
    infos = [_build_info(cls, by_name) for cls in models]
    for info in infos:
        for p in info.props:
            if p.target is not None and p.target not in models:
                raise TypeError(
                    f"{info.cls.__name__}.{p.name} refers to {p.target.__name__}: pass it to "
                    f"tandem.open too"
                )
    for info in infos:
        _INFOS[info.cls] = info
    return [info.spec() for info in infos]


def open(
    path: Union[str, "os.PathLike[str]"],
    models: Sequence[Type[Model]],
    options: Optional[_ffi.OpenOptions] = None,
) -> TypedDatabase:
    """Opens (or creates) the database at ``path`` with these model classes (embedded and
    linked classes included) and, when given, ``options`` (``tandem.OpenOptions``: durability,
    writer timeout, recovery window, ``exclusive_to_process``; the defaults otherwise).
    Errors: ``TypeError`` for an annotation Tandem cannot store or a class without a primary
    key; ``TandemError.Schema`` for a schema the file cannot take; ``TandemError.Timeout`` for
    a file another process holds. ``db.close()``, or ``with tandem.open(path, models) as db:``,
    releases it."""
    specs = schema(models)
    if options is None:
        raw = _ffi.Database.open(os.fspath(path), specs)
    else:
        raw = _ffi.Database.open_with_options(os.fspath(path), specs, options)
    return TypedDatabase(raw, models, _ffi.RowCodec(specs))
