"""Every property type is a query argument (``$0``...) of the typed API, as a Python value.

Found by a new user's trial: ``db.objects(Person, "balance > $0", Decimal("100"))`` raised
``TypeError: Decimal is not a query argument type``.
"""

import datetime
import uuid
from decimal import Decimal

import pytest

import tandem
from models_fixture import MODELS, Address, Dog, Note, Person

UTC = datetime.timezone.utc
REX = Dog(id=tandem.ObjectId(b"rex-rex-rex!"), name="Rex")
FIDO = Dog(id=tandem.ObjectId(b"fido-fido-fi"), name="Fido")
TOKENS = [uuid.UUID(int=1), uuid.UUID(int=2), uuid.UUID(int=3)]
REFS = [tandem.ObjectId(bytes([i]) * 12) for i in (1, 2, 3)]
BORN = [datetime.datetime(1815, 12, 10, tzinfo=UTC),
        datetime.datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC),
        None]
PEOPLE = [
    Person(id=1, name="Ada", age=36, active=True, photo=b"\x00\x01", score=-2.5,
           born=BORN[0], balance=Decimal("100"), token=TOKENS[0], ref=REFS[0],
           nickname="Countess", dog=REX),
    Person(id=2, name="Grace", age=85, active=False, photo=b"", score=0.1,
           born=BORN[1], balance=Decimal("100.5"), token=TOKENS[1], ref=REFS[1],
           nickname=None, dog=FIDO),
    Person(id=3, name="Alan", age=41, active=True, photo=b"\xff" * 3, score=1e300,
           born=BORN[2], balance=Decimal("-1E+3"), token=TOKENS[2], ref=REFS[2],
           nickname=None, dog=None),
]


@pytest.fixture
def db(tmp_path):
    db = tandem.open(tmp_path / "people.sqlite", MODELS)
    with db.write() as tx:
        tx.add_all([REX, FIDO, *PEOPLE])
        tx.add(Note(key=TOKENS[0], text="a note"))
    return db


CASES = [
    # (query, arguments, the keys it finds)
    ("balance > $0", [Decimal("100")], [2]),  # the trial's case
    ("balance >= $0", [Decimal("100")], [1, 2]),
    ("balance == $0", [Decimal("100.00")], [1]),  # numerically equal, another exponent
    ("balance == $0", [Decimal("1E+2")], [1]),
    ("balance < $0", [Decimal("-999.999")], [3]),
    ("balance BETWEEN {$0, $1}", [Decimal("0"), Decimal("100.5")], [1, 2]),
    ("born == $0", [BORN[0]], [1]),
    ("born == $0", [BORN[1].astimezone(datetime.timezone(datetime.timedelta(hours=5)))], [2]),
    ("born < $0", [datetime.datetime(1970, 1, 1, tzinfo=UTC)], [1, 2]),
    ("born == $0", [None], [3]),
    ("token == $0", [TOKENS[1]], [2]),
    ("token != $0", [TOKENS[1]], [1, 3]),
    ("ref == $0", [REFS[2]], [3]),
    ("photo == $0", [b"\x00\x01"], [1]),
    ("photo == $0", [bytearray(b"\xff\xff\xff")], [3]),
    ("photo == $0", [memoryview(b"")], [2]),
    ("score < $0", [0.0], [1]),
    ("score > $0", [1e299], [3]),
    ("active == $0", [True], [1, 3]),
    ("active == $0", [False], [2]),
    ("age >= $0 AND age < $1", [40, 86], [2, 3]),
    ("name == $0", ["Grace"], [2]),
    ("name BEGINSWITH $0", ["A"], [1, 3]),
    ("nickname == $0", [None], [2, 3]),
    ("nickname == $0", ["Countess"], [1]),
    ("dog == $0", [REX], [1]),  # a model instance: the link to it
    ("dog == $0", [FIDO], [2]),
    ("dog == $0", [None], [3]),  # no link
]


@pytest.mark.parametrize("query,args,expected", CASES,
                         ids=[f"{q} {type(a[0]).__name__}" for q, a, _ in CASES])
def test_each_property_type_is_a_query_argument(db, query, args, expected):
    results = db.objects(Person, query + " SORT(id ASC)", *args)
    assert results.keys() == expected
    assert [p.id for p in results] == expected


def test_decimal_arguments_as_values_and_in_subscriptions(db):
    assert tandem.to_value(Decimal("100")) == tandem.Value.DECIMAL("100")
    assert tandem.to_value(Decimal("-1.50")) == tandem.Value.DECIMAL("-1.50")
    assert tandem.to_value(Decimal("1E+2")) == tandem.Value.DECIMAL("1E+2")
    # The untyped API takes the same value.
    raw = db.raw.query("Person", "balance > $0", [tandem.to_value(Decimal("100"))])
    assert [k.value for k in raw.keys()] == [2]
    # Live: a change shows in the results already made.
    rich = db.objects(Person, "balance > $0", Decimal("100"))
    with db.write() as tx:
        tx.set((Person, 3), balance=Decimal("100.01"))
    assert sorted(rich.keys()) == [2, 3]
    # A subscription inlines the argument exactly.
    subs = db.update_subscriptions(
        lambda s: s.add(Person, "balance > $0", Decimal("100.5"), name="rich"))
    assert [s.query for s in subs] == ["balance > 1005E-1"]


def test_other_key_types_as_arguments(db):
    assert db.objects(Note, "key == $0", TOKENS[0]).keys() == [TOKENS[0]]
    assert db.objects(Dog, "_id == $0", REX.id).keys() == [REX.id]
    assert set(db.objects(Dog, "owner == $0", None).keys()) == {REX.id, FIDO.id}
    assert db.objects(Dog, "name == $0", "Fido").keys() == [FIDO.id]


def test_what_no_property_holds_is_refused_before_anything_is_sent(db):
    with pytest.raises(ValueError, match="finite"):
        db.objects(Person, "balance > $0", Decimal("NaN"))
    with pytest.raises(ValueError, match="finite"):
        tandem.to_value(Decimal("-Infinity"))
    with pytest.raises(TypeError, match="naive"):
        db.objects(Person, "born < $0", datetime.datetime(2000, 1, 1))
    with pytest.raises(TypeError, match="not a query argument type"):
        db.objects(Person, "address == $0", Address(street="x"))  # embedded: no identity
    with pytest.raises(TypeError, match="not a query argument type"):
        db.objects(Person, "age == $0", datetime.date(2000, 1, 1))
    with pytest.raises(TypeError, match="not a query argument type"):
        db.objects(Person, "age == $0", object())
